"""Backends, looked up by SQLAlchemy's dialect name. See ``base.Dialect`` to add one."""

from __future__ import annotations

from rung.dialects.base import Dialect, lock_id
from rung.dialects.mysql import MySQL
from rung.dialects.postgresql import PostgreSQL
from rung.dialects.sqlite import SQLite
from rung.errors import ConfigError

DIALECTS: dict[str, type[Dialect]] = {
    "postgresql": PostgreSQL,
    "mysql": MySQL,
    "mariadb": MySQL,
    "sqlite": SQLite,
}


def dialect_named(name: str) -> Dialect:
    """A fresh dialect object for one run (the SQLite one remembers its connection's settings)."""
    try:
        return DIALECTS[name]()
    except KeyError:
        raise ConfigError(
            f"rung does not support the {name!r} database; use sqlite, postgresql, mysql or mariadb"
        ) from None


__all__ = ["DIALECTS", "Dialect", "dialect_named", "lock_id"]
