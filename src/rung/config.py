"""Configuration: command-line flags > environment > ``[tool.rung]`` in pyproject.toml > defaults.

Also what it takes to use the result: the project root (the folder holding pyproject.toml)
goes on ``sys.path`` so the migrator imports; the driverless URLs platforms hand out
(``postgres://``, ``mysql://``, ...) are mapped to rung's async drivers; the engine gets a
connect timeout, so an unreachable host fails fast, and can wait for a database that is
still starting. SQLAlchemy is imported only where the engine is made: ``rung --help`` and
``rung new`` read their configuration without it.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from rung.errors import ConfigError, DatabaseUnreachable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

DEFAULT_URL = "sqlite+aiosqlite:///./app.db"
DEFAULT_MIGRATOR = "server.migration.src.lib:Migrator"
DEFAULT_TABLE = "rung_migrations"  # history.DEFAULT_TABLE, not imported: it needs SQLAlchemy
DEFAULT_LOCK_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0  # seconds; a host that does not answer fails after this

# setting: environment variable
ENVIRONMENT = {
    "url": "DATABASE_URL",
    "migrator": "RUNG_MIGRATOR",
    "table": "RUNG_TABLE",
    "lock_timeout": "RUNG_LOCK_TIMEOUT",
    "scratch_url": "RUNG_SCRATCH_URL",
}
PYPROJECT_KEYS = (
    "url",
    "migrator",
    "table",
    "lock_timeout",
    "per_migration",
    "scratch_url",
    "exclude",
)

# What a driverless URL means: the async driver rung installs for that database.
SCHEMES = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
    "sqlite": "sqlite+aiosqlite",
}
# driver: (module it imports, what to pip install, its connect-timeout argument)
DRIVERS = {
    "asyncpg": ("asyncpg", "rung[postgres]", "timeout"),
    "asyncmy": ("asyncmy", "rung[mysql]", "connect_timeout"),
    "aiomysql": ("aiomysql", "aiomysql", "connect_timeout"),
    "aiosqlite": ("aiosqlite", "aiosqlite", None),
    "psycopg": ("psycopg", "psycopg[binary]", "connect_timeout"),
}
BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")  # what rung's dialects cover
SYNC_DRIVERS = {"psycopg2", "pg8000", "pymysql", "mysqldb", "mysqlconnector", "pysqlite"}
# libpq's query options, as platforms write them into PostgreSQL URLs, in asyncpg's terms.
LIBPQ_OPTIONS = {"sslmode": ("ssl", str), "connect_timeout": ("timeout", float)}


@dataclass(frozen=True)
class Config:
    root: Path
    url: str = DEFAULT_URL
    migrator: str = DEFAULT_MIGRATOR
    table: str = DEFAULT_TABLE
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    per_migration: bool = False
    scratch_url: str | None = None
    exclude: tuple[str, ...] = ()
    wait: float = 0.0
    sources: Mapping[str, str] = field(default_factory=dict)  # setting: where it came from
    warnings: tuple[str, ...] = ()

    @property
    def shown_url(self) -> str:
        return hide_password(self.url)

    @property
    def run_options(self) -> dict[str, Any]:
        """The keyword arguments every runner call that writes takes."""
        return {"table": self.table, "lock_timeout": self.lock_timeout}


def load(flags: Mapping[str, Any], environ: Mapping[str, str], cwd: Path) -> Config:
    """The configuration for a run from ``cwd``; ``flags`` holds only the options given."""
    root = find_root(cwd)
    pyproject = root / "pyproject.toml"
    section = read_section(pyproject)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in PYPROJECT_KEYS:
        if key in flags:
            values[key], sources[key] = flags[key], f"--{key.replace('_', '-')}"
        elif key in ENVIRONMENT and environ.get(ENVIRONMENT[key]):
            values[key], sources[key] = environ[ENVIRONMENT[key]], ENVIRONMENT[key]
        elif key in section:
            values[key], sources[key] = section[key], f"[tool.rung] {key} in {pyproject}"
    unknown = sorted(set(section) - set(PYPROJECT_KEYS))
    warnings = tuple(
        f"unknown key {key!r} in [tool.rung] of {pyproject} is ignored; "
        f"known keys: {', '.join(PYPROJECT_KEYS)}"
        for key in unknown
    )
    url = _text(values, sources, "url", DEFAULT_URL)
    if sources.get("url", "").startswith("[tool.rung]") or "url" not in sources:
        url = _anchored(url, root)  # a relative SQLite path in a file means: next to the file
    return Config(
        root=root,
        url=normalize_url(url),
        migrator=_text(values, sources, "migrator", DEFAULT_MIGRATOR),
        table=_text(values, sources, "table", DEFAULT_TABLE),
        lock_timeout=_seconds(values, sources, "lock_timeout", DEFAULT_LOCK_TIMEOUT),
        per_migration=_flag(values, sources, "per_migration"),
        scratch_url=normalize_url(values["scratch_url"]) if values.get("scratch_url") else None,
        exclude=_patterns(values, sources, "exclude"),
        wait=_seconds(flags, {"wait": "--wait"}, "wait", 0.0),
        sources=sources,
        warnings=warnings,
    )


def find_root(cwd: Path) -> Path:
    """The nearest folder from ``cwd`` upwards holding a pyproject.toml, else ``cwd``."""
    for folder in (cwd, *cwd.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return cwd


def read_section(pyproject: Path) -> dict[str, Any]:
    """``[tool.rung]`` of ``pyproject`` ({} when there is no file or no section)."""
    try:
        with pyproject.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject} is not valid TOML ({exc}); fix the file") from None
    section = data.get("tool", {}).get("rung", {})
    if not isinstance(section, dict):
        raise ConfigError(f"[tool.rung] in {pyproject} must be a table; fix the file")
    return section


def add_to_path(root: Path) -> None:
    """Make the project's packages importable, as if run with PYTHONPATH=root."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def _text(values: dict[str, Any], sources: dict[str, str], key: str, default: str) -> str:
    value = values.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} from {sources.get(key, 'defaults')} must be a non-empty string")
    return value.strip()


def _seconds(
    values: Mapping[str, Any], sources: Mapping[str, str], key: str, default: float
) -> float:
    value = values.get(key, default)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 <= seconds < 1e9 or isinstance(value, bool):
        raise ConfigError(
            f"{key} from {sources.get(key, 'defaults')} must be a number of seconds, not {value!r}"
        )
    return seconds


def _flag(values: dict[str, Any], sources: dict[str, str], key: str) -> bool:
    value = values.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} from {sources[key]} must be true or false, not {value!r}")
    return value


def _patterns(values: dict[str, Any], sources: dict[str, str], key: str) -> tuple[str, ...]:
    value = values.get(key, ())
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} from {sources[key]} must be a list of strings, not {value!r}")
    return tuple(value)


# A SQLite URL: its scheme, its file path, its query.
_SQLITE_URL = re.compile(r"(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?", re.DOTALL)


def _anchored(url: str, root: Path) -> str:
    """A relative SQLite file path made absolute against ``root``."""
    match = _SQLITE_URL.fullmatch(url)
    if match is None or match[2] in ("", ":memory:") or Path(match[2]).is_absolute():
        return url
    return f"{match[1]}{(root / match[2]).resolve()}{match[3] or ''}"


# -- URLs -----------------------------------------------------------------------------------


def hide_password(url: str) -> str:
    """``url`` with its password (if any, also as ``?password=``) replaced by ``***``. In a
    malformed URL (``postgres:user:pw@host``, ``postgresql//user:pw@host``) everything
    between its scheme and the last ``@`` is hidden: a password is never shown."""
    masked, found = re.subn(
        r"^([\w+.-]+://[^:/?#@]*):.*@", r"\1:***@", url, count=1, flags=re.DOTALL
    )
    if not found and not re.match(r"^[\w+.-]+://", url) and ":" in url.rpartition("@")[0]:
        masked = re.sub(r"^([A-Za-z][\w+.-]*[:/]*).*@", r"\1***@", url, count=1, flags=re.DOTALL)
    return _QUERY_PASSWORD.sub(r"\1***", masked)


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s,;]*", re.IGNORECASE)


def password_of(url: str) -> str | None:
    match = re.match(r"^[\w+.-]+://[^:/?#@]*:(.*)@", url, re.DOTALL)
    return match[1] if match else None


def normalize_url(url: str) -> str:
    """Map a driverless URL to rung's async driver (``postgres://`` -> ``postgresql+asyncpg://``)."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][\w.-]*(\+[\w.-]+)?", scheme):
        raise ConfigError(
            f"database URL {hide_password(url)!r} does not start with a scheme such as "
            "postgresql://; write it as postgresql://user@host/db, mysql://user@host/db or "
            "sqlite:///app.db"
        )
    return f"{SCHEMES.get(scheme.lower(), scheme)}://{rest}"


def check_driver(url: str) -> None:
    """Refuse a URL whose async driver is not installed, naming what to install."""
    database, _, driver = url.partition("://")[0].partition("+")
    if driver in DRIVERS:
        module, install, _ = DRIVERS[driver]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"the {driver} driver that {database} URLs need is not installed; "
                f"install it with: pip install '{install}'"
            )


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases, memory and ``file:`` URIs."""
    match = _SQLITE_URL.fullmatch(url)
    path = match[2] if match else ""
    return None if path in ("", ":memory:") or path.startswith("file:") else Path(path)


def missing_file(url: str) -> str | None:
    """The path of a SQLite URL's file when it is not there but could be (connecting would
    create it); None otherwise, also when its folder is missing (connecting fails)."""
    path = _sqlite_file(url)
    return str(path) if path and not path.exists() and path.parent.is_dir() else None


def check_folder(url: str) -> None:
    """A SQLite file's folder must exist: SQLite creates files, not folders (and aiosqlite
    fails there noisily, from its worker thread)."""
    path = _sqlite_file(url)
    if path and not path.parent.is_dir():
        raise DatabaseUnreachable(
            f"the folder of SQLite database {path} does not exist; check the URL, or create "
            "the folder"
        )


def check_exists(url: str) -> None:
    """For commands that read or revert: a SQLite file that is not there is an error, not
    an empty database to create."""
    path = _sqlite_file(url)
    if path and not path.exists():
        raise DatabaseUnreachable(
            f"SQLite database file {path} does not exist; check the URL (rung up creates it)"
        )


# -- the engine -----------------------------------------------------------------------------


def create_engine(config: Config) -> AsyncEngine:
    """An engine for the configured URL, with a connect timeout; nothing is connected yet."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    shown = config.shown_url
    check_driver(config.url)
    try:
        url = sa.make_url(config.url)
        given = password_of(config.url)
        if given is not None and url.password != unquote(given):
            raise ConfigError(
                f"the password in database URL {shown!r} has an '@' in it; write it as %40 "
                "(and escape other special characters as %XX)"
            )
        if url.get_backend_name() not in BACKENDS:
            raise ConfigError(
                f"database URL {shown!r} names {url.get_backend_name()!r}; rung works with "
                "SQLite, PostgreSQL, MySQL and MariaDB: sqlite:///, postgresql://, mysql://, "
                "mariadb://"
            )
        if url.get_driver_name() in SYNC_DRIVERS:
            raise sa.exc.InvalidRequestError("not async")
        driver = DRIVERS.get(url.get_driver_name())
        timeout_arg = driver[2] if driver else None
        connect_args: dict[str, Any] = {}
        if url.get_driver_name() == "asyncpg":
            for option, (argument, kind) in LIBPQ_OPTIONS.items():
                if option in url.query:
                    connect_args[argument] = kind(url.query[option])
            url = url.difference_update_query(LIBPQ_OPTIONS)
        if timeout_arg and timeout_arg not in url.query and timeout_arg not in connect_args:
            connect_args[timeout_arg] = CONNECT_TIMEOUT
        return create_async_engine(url, connect_args=connect_args)
    except sa.exc.NoSuchModuleError:
        raise ConfigError(
            f"database URL {shown!r} names a database or driver SQLAlchemy does not know; "
            "use postgresql://, mysql://, mariadb:// or sqlite:///"
        ) from None
    except sa.exc.InvalidRequestError:
        raise ConfigError(
            f"database URL {shown!r} names a driver that is not async; use "
            "postgresql+asyncpg://, mysql+asyncmy:// or sqlite+aiosqlite:// (or drop the "
            "driver: postgresql://...)"
        ) from None
    except ImportError as exc:
        raise ConfigError(
            f"the driver for {shown!r} is not installed ({exc.name}); pip install it, or use "
            "rung's: pip install 'rung[postgres]' or 'rung[mysql]'"
        ) from None
    except (sa.exc.ArgumentError, ValueError, TypeError):
        raise ConfigError(
            f"database URL {shown!r} is not a valid URL; write it as "
            "dialect://user:password@host:port/database (escape special characters in the "
            "password as %XX)"
        ) from None


async def reach(engine: AsyncEngine, url: str, wait: float, on_wait: Callable[[str], None]) -> None:
    """Connect once, or keep trying for ``wait`` seconds; else raise ``DatabaseUnreachable``.
    No attempt outlasts the connect timeout (or what is left of ``wait``): a server that
    accepts the connection and never answers fails like one that does not exist. A refused
    login is not retried: waiting does not fix a password.

    ``on_wait`` is told why, each time the reason changes."""
    import asyncio

    deadline = time.monotonic() + wait
    delay, last = 0.2, ""
    while True:
        left = deadline - time.monotonic()
        limit = max(min(left, CONNECT_TIMEOUT), 1.0) if wait else CONNECT_TIMEOUT
        try:
            problem = await asyncio.wait_for(_try(engine, url), limit + 0.5)
        except asyncio.TimeoutError:
            problem = f"no answer within {limit:g} s"
        if problem is None:
            return
        if _LOGIN_REFUSED.search(problem):
            raise DatabaseUnreachable(
                f"{hide_password(url)} refused the login ({problem}); check the user name "
                "and password in the URL"
            )
        if time.monotonic() + delay > deadline:
            how_long = f" within {wait:g} s" if wait else ""
            hint = (
                "or wait longer with --wait SECONDS"
                if wait
                else "or wait for it with --wait SECONDS"
            )
            raise DatabaseUnreachable(
                f"cannot connect to {hide_password(url)}{how_long} ({problem}); check the URL "
                f"and that the server is running, {hint}"
            )
        if problem != last:
            on_wait(f"waiting for {hide_password(url)} ({problem})")
            last = problem
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


# What PostgreSQL and MySQL/MariaDB say when the user or password is wrong.
_LOGIN_REFUSED = re.compile(
    r"password authentication failed|InvalidPasswordError|InvalidAuthorizationSpecification"
    r"|Access denied for user"
)


async def _try(engine: AsyncEngine, url: str) -> str | None:
    try:
        async with engine.connect():
            return None
    except Exception as exc:  # whatever stops a connection means: not reachable (yet)
        cause = getattr(exc, "orig", None) or exc
        text = str(cause).strip().splitlines()
        if "Timeout" in type(cause).__name__ and not text:  # asyncio's has no message
            text = [f"no answer within {CONNECT_TIMEOUT:g} s"]
        reason = f"{type(cause).__name__}: {text[0]}" if text else type(cause).__name__
        return mask(reason, url)[:300]


def mask(text: str, url: str) -> str:
    """``text`` with ``url``'s password hidden wherever it appears."""
    password = password_of(url)
    if password is None and (given := re.search(r"[?&]password=([^&\s]*)", url, re.I)):
        password = given[1]
    if password and len(password) >= 3:
        for form in {password, unquote(password)}:
            text = text.replace(form, "***")
    text = re.sub(r"([\w+.-]+://[^:/?#@\s]*):[^@\s]*@", r"\1:***@", text)
    return _QUERY_PASSWORD.sub(r"\1***", text)
