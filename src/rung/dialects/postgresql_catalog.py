"""The pg_catalog queries behind PostgreSQL's schema reader and ``rung fresh``: one query
per kind of object for the whole database, so a read costs the same dozen round trips
however many tables there are.

Which schemas: every schema the connection may use (``USAGE``) except PostgreSQL's own
(pg_catalog, information_schema, pg_toast, temporary ones) and those an extension created.
Objects an extension owns, and objects PostgreSQL made as part of another (a range type's
constructors, a table's row type, an array type), are not the schema's own and are left
out. A name is qualified by its schema when that is not ``current_schema()``.
"""

from __future__ import annotations

from collections.abc import Callable


def _own(catalog: str, oid: str, deptypes: str = "'e', 'i'") -> str:
    """Not a member of an extension ('e'), nor made as part of another object ('i')."""
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = '{catalog}'::regclass "
        f"AND x.objid = {oid} AND x.deptype IN ({deptypes}))"
    )


_EXTENSION = "'e'"  # an identity column's sequence is made as part of it, and still read


def _ns(only: str = "") -> str:
    """The schemas read, with their names as they prefix an object's name ('' for the
    default); and the relations read: tables, partitioned tables, views, materialized
    views (with ``only``, those of the ids in parameter $1)."""
    return (
        "WITH ns AS (SELECT n.oid, n.nspname, CASE WHEN n.nspname = current_schema() THEN '' "
        "ELSE n.nspname || '.' END AS prefix FROM pg_namespace n "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
        "AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%' "
        "AND (n.nspname = current_schema() OR has_schema_privilege(n.oid, 'USAGE')) "
        f"AND {_own('pg_namespace', 'n.oid')}), "
        "rel AS (SELECT c.oid FROM pg_class c JOIN ns ON ns.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p', 'v', 'm') AND {_own('pg_class', 'c.oid')}{only}) "
    )


_NS = _ns()
_ONLY = " AND c.oid = ANY($1::oid[])"


def _every_and_only(query: Callable[[str], str]) -> tuple[str, str]:
    """``query`` over every relation read, and over those of the ids in $1 (for verify's
    fingerprints, which read again only what changed)."""
    return query(_NS), query(_ns(_ONLY))


def _qualified(alias: str) -> str:
    """The name of relation ``alias`` (a pg_class row), prefixed outside the default schema."""
    return (
        f"(SELECT CASE WHEN q.nspname = current_schema() THEN {alias}.relname "
        f"ELSE q.nspname || '.' || {alias}.relname END "
        f"FROM pg_namespace q WHERE q.oid = {alias}.relnamespace)"
    )


def _names(array: str, relation: str) -> str:
    """The column names of attribute-number array ``array`` of ``relation``, in order."""
    return (
        f"ARRAY(SELECT a.attname FROM unnest({array}) WITH ORDINALITY k(n, i) "
        f"JOIN pg_attribute a ON a.attrelid = {relation} AND a.attnum = k.n ORDER BY k.i)"
    )


def _description(oid: str, sub: str = "0") -> str:
    """A LEFT JOIN of pg_description ``d`` on a relation's (or its column's) comment."""
    return (
        f"LEFT JOIN pg_description d ON d.objoid = {oid} "
        f"AND d.classoid = 'pg_class'::regclass AND d.objsubid = {sub} "
    )


# Whether PostgreSQL itself defines type ``t`` (then the reader upper-cases it, as SQLAlchemy
# writes types) or a user or an extension does; ``el`` is the element type of an array.
_BUILTIN = "coalesce(el.typnamespace, t.typnamespace) = 'pg_catalog'::regnamespace"
_ELEMENT = "LEFT JOIN pg_type el ON el.oid = t.typelem AND t.typcategory = 'A' "

SCHEMAS = _NS + "SELECT nspname FROM ns WHERE prefix <> '' ORDER BY nspname"


def _relations(ns: str) -> str:
    return (
        ns + "SELECT c.oid, ns.prefix || c.relname, c.relkind::text, c.relpersistence::text, "
        "c.relrowsecurity, c.relforcerowsecurity, c.reloptions, c.relreplident::text, "
        "CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END, "
        "CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END, "
        f"ARRAY(SELECT {_qualified('pc')} FROM pg_inherits i JOIN pg_class pc "
        "ON pc.oid = i.inhparent WHERE i.inhrelid = c.oid ORDER BY i.inhseqno), "
        "d.description, CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END "
        "FROM rel JOIN pg_class c ON c.oid = rel.oid JOIN ns ON ns.oid = c.relnamespace "
        f"{_description('c.oid')}"
    )


RELATIONS, RELATIONS_OF = _every_and_only(_relations)


def _columns(ns: str) -> str:
    return (
        ns + "SELECT a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), "
        f"{_BUILTIN}, a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attidentity::text, "
        "a.attgenerated::text, CASE WHEN a.attcollation <> t.typcollation THEN co.collname END, "
        "d.description FROM rel JOIN pg_class c ON c.oid = rel.oid "
        "JOIN pg_attribute a ON a.attrelid = c.oid JOIN pg_type t ON t.oid = a.atttypid "
        f"{_ELEMENT}"
        "LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum "
        "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
        f"{_description('a.attrelid', 'a.attnum')}"
        "WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')"
    )


COLUMNS, COLUMNS_OF = _every_and_only(_columns)


# Table constraints and domain constraints (NOT NULL is a column's or domain's flag). A
# constraint's columns come as attribute numbers, named by the reader from COLUMNS; only
# the text the reader uses is deparsed.
def _constraints(ns: str) -> str:
    return (
        ns + "SELECT con.conrelid, con.contypid, con.conname, con.contype::text, "
        "CASE WHEN con.contype IN ('c', 'u', 'x') THEN pg_get_constraintdef(con.oid, true) END, "
        "con.conkey, CASE WHEN rn.nspname = current_schema() THEN rc.relname "
        "ELSE rn.nspname || '.' || rc.relname END, "
        f"CASE WHEN con.contype = 'f' THEN {_names('con.confkey', 'con.confrelid')} END, "
        "con.confdeltype::text, con.confupdtype::text, con.confmatchtype::text, "
        "con.condeferrable, con.condeferred, con.convalidated "
        "FROM pg_constraint con JOIN ns ON ns.oid = con.connamespace "
        "LEFT JOIN rel ON rel.oid = con.conrelid "
        "LEFT JOIN pg_class rc ON rc.oid = con.confrelid "
        "LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace "
        "WHERE con.contype IN ('p', 'u', 'f', 'c', 'x') "
        "AND (rel.oid IS NOT NULL OR con.contypid <> 0)"
    )


CONSTRAINTS, CONSTRAINTS_OF = _every_and_only(_constraints)


# Indexes, except those behind a PRIMARY KEY, UNIQUE or EXCLUDE constraint.
def _indexes(ns: str) -> str:
    return (
        ns + "SELECT i.indrelid, ns.prefix || ic.relname, i.indisunique, am.amname, "
        "pg_get_indexdef(i.indexrelid, 0, true), pg_get_expr(i.indpred, i.indrelid, true) "
        "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
        "JOIN ns ON ns.oid = ic.relnamespace JOIN pg_am am ON am.oid = ic.relam "
        "WHERE i.indrelid IN (SELECT oid FROM rel) AND NOT EXISTS (SELECT 1 FROM pg_constraint k "
        "WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid "
        "AND k.contype IN ('p', 'u', 'x'))"
    )


INDEXES, INDEXES_OF = _every_and_only(_indexes)


def _triggers(ns: str) -> str:
    return (
        ns + "SELECT t.tgrelid, t.tgname, pg_get_triggerdef(t.oid, true), t.tgenabled::text "
        "FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgrelid IN (SELECT oid FROM rel)"
    )


TRIGGERS, TRIGGERS_OF = _every_and_only(_triggers)


def _policies(ns: str) -> str:
    return (
        ns + "SELECT p.polrelid, p.polname, p.polpermissive, p.polcmd::text, "
        "ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r) END "
        "FROM unnest(p.polroles) r ORDER BY 1), "
        "pg_get_expr(p.polqual, p.polrelid, true), pg_get_expr(p.polwithcheck, p.polrelid, true) "
        "FROM pg_policy p WHERE p.polrelid IN (SELECT oid FROM rel)"
    )


POLICIES, POLICIES_OF = _every_and_only(_policies)

# Functions, procedures and aggregates; an aggregate's definition is its parts.
ROUTINES = (
    _NS + "SELECT p.prokind::text, ns.prefix || p.proname || '(' || "
    "pg_get_function_identity_arguments(p.oid) || ')', "
    "CASE WHEN p.prokind = 'a' THEN concat_ws(', ', "
    "'SFUNC = ' || g.aggtransfn::regproc, 'STYPE = ' || format_type(g.aggtranstype, NULL), "
    "'FINALFUNC = ' || nullif(g.aggfinalfn::oid, 0)::regproc, 'INITCOND = ' || g.agginitval, "
    "'RETURNS ' || format_type(p.prorettype, NULL)) "
    "ELSE pg_get_functiondef(p.oid) END "
    "FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace "
    "LEFT JOIN pg_aggregate g ON g.aggfnoid = p.oid "
    f"WHERE {_own('pg_proc', 'p.oid')}"
)

# Enums, domains, composite types and ranges made by CREATE TYPE / CREATE DOMAIN.
TYPES = (
    _NS + "SELECT t.oid, t.typtype::text, ns.prefix || t.typname, "
    "format_type(t.typbasetype, t.typtypmod), "
    "coalesce(bel.typnamespace, bt.typnamespace) = 'pg_catalog'::regnamespace, "
    "t.typnotnull, t.typdefault, "
    "CASE WHEN t.typcollation <> bt.typcollation THEN co.collname END, "
    "ARRAY(SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid "
    "ORDER BY e.enumsortorder), "
    "(SELECT string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), "
    "', ' ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = t.typrelid "
    "AND a.attnum > 0 AND NOT a.attisdropped), "
    "(SELECT concat_ws(', ', 'SUBTYPE = ' || format_type(r.rngsubtype, NULL), "
    "'SUBTYPE_OPCLASS = ' || oc.opcname, 'COLLATION = ' || rco.collname, "
    "'CANONICAL = ' || nullif(r.rngcanonical::oid, 0)::regproc, "
    "'SUBTYPE_DIFF = ' || nullif(r.rngsubdiff::oid, 0)::regproc) FROM pg_range r "
    "JOIN pg_opclass oc ON oc.oid = r.rngsubopc "
    "LEFT JOIN pg_collation rco ON rco.oid = r.rngcollation WHERE r.rngtypid = t.oid) "
    "FROM pg_type t JOIN ns ON ns.oid = t.typnamespace "
    "LEFT JOIN pg_type bt ON bt.oid = t.typbasetype "
    "LEFT JOIN pg_type bel ON bel.oid = bt.typelem AND bt.typcategory = 'A' "
    "LEFT JOIN pg_collation co ON co.oid = t.typcollation "
    "WHERE (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND "
    "(SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')) "
    f"AND {_own('pg_type', 't.oid')}"
)


def _sequences(ns: str, only: str = "") -> str:
    return (
        ns + "SELECT c.oid, ns.prefix || c.relname, format_type(s.seqtypid, NULL), s.seqstart, "
        "s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle, "
        f"(SELECT {_qualified('tc')} || '.' || a.attname FROM pg_depend d "
        "JOIN pg_class tc ON tc.oid = d.refobjid "
        "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
        "AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1) "
        "FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid "
        f"JOIN ns ON ns.oid = c.relnamespace WHERE {_own('pg_class', 'c.oid', _EXTENSION)}{only}"
    )


SEQUENCES = _sequences(_NS)
SEQUENCES_OF = _sequences(_NS, _ONLY)

EXTENSIONS = "SELECT extname FROM pg_extension"

# ("char" columns are cast to text: asyncpg returns that type as bytes.)

# What ``rung fresh`` drops, in this order: the other schemas (with all they hold), then the
# default schema's relations, routines and types, then extensions. Names come quoted.
DROPS = (
    _NS + "SELECT kind, target FROM ("
    "SELECT 0 AS rank, 'SCHEMA' AS kind, quote_ident(nspname) AS target FROM ns "
    "WHERE prefix <> '' "
    "UNION ALL SELECT CASE c.relkind WHEN 'v' THEN 1 WHEN 'm' THEN 2 WHEN 'S' THEN 4 "
    "ELSE 3 END, CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' "
    "WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, "
    "quote_ident(c.relname) FROM pg_class c "
    "WHERE c.relnamespace = current_schema()::regnamespace "
    "AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND NOT c.relispartition "
    f"AND {_own('pg_class', 'c.oid')} "
    "UNION ALL SELECT 5, CASE p.prokind WHEN 'a' THEN 'AGGREGATE' WHEN 'p' THEN 'PROCEDURE' "
    "ELSE 'FUNCTION' END, "
    "p.oid::regprocedure::text FROM pg_proc p "
    f"WHERE p.pronamespace = current_schema()::regnamespace AND {_own('pg_proc', 'p.oid')} "
    "UNION ALL SELECT 6, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, "
    "t.oid::regtype::text FROM pg_type t "
    "WHERE t.typnamespace = current_schema()::regnamespace "
    "AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND "
    "(SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')) "
    f"AND {_own('pg_type', 't.oid')} "
    "UNION ALL SELECT 7, 'EXTENSION', quote_ident(e.extname) FROM pg_extension e "
    "WHERE e.extnamespace <> 'pg_catalog'::regnamespace"
    ") o ORDER BY rank, target"
)
