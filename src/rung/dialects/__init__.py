"""Backends, in one table: what rung knows of each database, looked up by SQLAlchemy's name.

``BACKENDS`` holds the facts the command line needs before SQLAlchemy is imported: URL
schemes, the async drivers and what installs them. ``dialect_named`` imports a backend's
module, where all of its SQL lives, on first use. To add a backend, see ``base.Dialect``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing for rung --help
if TYPE_CHECKING:
    from rung.dialects.base import Dialect


@dataclass(frozen=True)
class Driver:
    module: str  # what it imports
    install: str  # what to pip install
    timeout_arg: str | None  # its connect-timeout argument


@dataclass(frozen=True)
class Backend:
    name: str  # rung's name for it, and its module: rung.dialects.<name>
    aliases: tuple[str, ...]  # SQLAlchemy dialect names that are this backend
    schemes: dict[str, str]  # a driverless URL scheme -> the scheme with rung's async driver
    drivers: dict[str, Driver]  # async drivers known to work
    sync_drivers: tuple[str, ...] = ()  # refused by name: rung is async
    file_based: bool = False  # the URL's database part is a file path
    title: str = field(default="", compare=False)


BACKENDS = (
    Backend(
        "sqlite",
        ("sqlite",),
        {"sqlite": "sqlite+aiosqlite"},
        {"aiosqlite": Driver("aiosqlite", "aiosqlite", None)},
        ("pysqlite",),
        file_based=True,
        title="SQLite",
    ),
    Backend(
        "postgresql",
        ("postgresql",),
        {"postgres": "postgresql+asyncpg", "postgresql": "postgresql+asyncpg"},
        {
            "asyncpg": Driver("asyncpg", "rung[postgres]", "timeout"),
            "psycopg": Driver("psycopg", "psycopg[binary]", "connect_timeout"),
        },
        ("psycopg2", "pg8000"),
        title="PostgreSQL",
    ),
    Backend(
        "mysql",
        ("mysql", "mariadb"),
        {"mysql": "mysql+asyncmy", "mariadb": "mariadb+asyncmy"},
        {
            "asyncmy": Driver("asyncmy", "rung[mysql]", "connect_timeout"),
            "aiomysql": Driver("aiomysql", "aiomysql", "connect_timeout"),
        },
        ("pymysql", "mysqldb", "mysqlconnector"),
        title="MySQL/MariaDB",
    ),
)
_BY_ALIAS = {alias: b for b in BACKENDS for alias in b.aliases}


def backend_named(name: str) -> Backend | None:
    """The backend of SQLAlchemy dialect ``name``, None when rung has none."""
    return _BY_ALIAS.get(name)


def dialect_named(name: str) -> Dialect:
    """A dialect object for SQLAlchemy dialect ``name`` (stateless: one per call is fine)."""
    from rung.errors import ConfigError

    backend = _BY_ALIAS.get(name)
    if backend is None:
        known = ", ".join(sorted(_BY_ALIAS))
        raise ConfigError(f"rung does not support the {name!r} database; use {known}")
    module = importlib.import_module(f"rung.dialects.{backend.name}")
    dialect: Dialect = module.DIALECT
    return dialect


__all__ = ["BACKENDS", "Backend", "Driver", "backend_named", "dialect_named"]
