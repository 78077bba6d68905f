"""The ``information_schema`` queries behind the MySQL/MariaDB schema reader and ``rung
fresh``: one query per kind of object for the whole database (the current one), so a read
costs the same dozen round trips however many tables there are.
"""

from __future__ import annotations

import sqlalchemy as sa

_HERE = "TABLE_SCHEMA = DATABASE()"
TABLES = sa.text(
    "SELECT TABLE_NAME, TABLE_TYPE, ENGINE, TABLE_COLLATION, CREATE_OPTIONS, TABLE_COMMENT, "
    "(SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
    f"WHERE SCHEMA_NAME = DATABASE()) FROM information_schema.TABLES WHERE {_HERE}"
)
COLUMNS = sa.text(
    "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, "
    "GENERATION_EXPRESSION, COLLATION_NAME, COLUMN_COMMENT "
    f"FROM information_schema.COLUMNS WHERE {_HERE}"
)
INDEXES = sa.text(
    "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART, COLLATION, INDEX_TYPE, "
    f"INDEX_COMMENT FROM information_schema.STATISTICS WHERE {_HERE} "
    "ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX"
)
# Two queries, joined here: in a join, MariaDB filters the second information_schema table
# only after opening the tables of every database on the server.
FOREIGN_KEYS = sa.text(
    "SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, "
    "REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
    f"WHERE {_HERE} AND REFERENCED_TABLE_NAME IS NOT NULL ORDER BY ORDINAL_POSITION"
)
ACTIONS = sa.text(
    "SELECT TABLE_NAME, CONSTRAINT_NAME, DELETE_RULE, UPDATE_RULE "
    "FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()"
)
# MariaDB names checks per table and says which; MySQL 8 names them per schema.
CHECKS_MARIADB = sa.text(
    "SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
    "WHERE CONSTRAINT_SCHEMA = DATABASE()"
)
CHECKS_MYSQL = sa.text(
    "SELECT t.TABLE_NAME, c.CONSTRAINT_NAME, c.CHECK_CLAUSE "
    "FROM information_schema.CHECK_CONSTRAINTS c JOIN information_schema.TABLE_CONSTRAINTS t "
    "ON t.CONSTRAINT_SCHEMA = c.CONSTRAINT_SCHEMA AND t.CONSTRAINT_NAME = c.CONSTRAINT_NAME "
    "AND t.CONSTRAINT_TYPE = 'CHECK' "
    "WHERE c.CONSTRAINT_SCHEMA = DATABASE() AND t.TABLE_SCHEMA = DATABASE()"
)
VIEWS = sa.text(
    "SELECT TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, SECURITY_TYPE "
    f"FROM information_schema.VIEWS WHERE {_HERE}"
)
TRIGGERS = sa.text(
    "SELECT EVENT_OBJECT_TABLE, TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION, "
    "ACTION_ORIENTATION, ACTION_ORDER, ACTION_STATEMENT FROM information_schema.TRIGGERS "
    "WHERE EVENT_OBJECT_SCHEMA = DATABASE()"  # MariaDB looks up by this one, not every database
)
ROUTINES = sa.text(
    "SELECT ROUTINE_TYPE, ROUTINE_NAME, DTD_IDENTIFIER, IS_DETERMINISTIC, SQL_DATA_ACCESS, "
    "SECURITY_TYPE, ROUTINE_COMMENT, ROUTINE_DEFINITION FROM information_schema.ROUTINES "
    "WHERE ROUTINE_SCHEMA = DATABASE()"
)
PARAMETERS = sa.text(
    "SELECT ROUTINE_TYPE, SPECIFIC_NAME, PARAMETER_MODE, PARAMETER_NAME, DTD_IDENTIFIER "
    "FROM information_schema.PARAMETERS WHERE SPECIFIC_SCHEMA = DATABASE() "
    "AND ORDINAL_POSITION > 0 ORDER BY ORDINAL_POSITION"
)
# A MariaDB sequence is a one-row table: one UNION ALL reads them all (not the next value).
SEQUENCE = (
    "SELECT {name}, start_value, increment, minimum_value, maximum_value, cache_size, "
    "cycle_option FROM {table}"
)
# What ``rung fresh`` drops; a table's triggers go with it.
DROPS = sa.text(
    "SELECT IF(TABLE_TYPE = 'VIEW', 'VIEW', IF(TABLE_TYPE = 'SEQUENCE', 'SEQUENCE', 'TABLE')), "
    f"TABLE_NAME FROM information_schema.TABLES WHERE {_HERE} "
    "UNION ALL SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES "
    "WHERE ROUTINE_SCHEMA = DATABASE() "
    "UNION ALL SELECT 'EVENT', EVENT_NAME FROM information_schema.EVENTS "
    "WHERE EVENT_SCHEMA = DATABASE()"
)
