"""Reaching the database: a URL as users write it, the engine, connecting (and waiting for a
server that is still starting), and the one masker that keeps passwords out of any text.

``create_engine`` is public: an application builds its engine exactly as the ``rung``
command does (driverless URLs such as ``postgres://`` mapped to rung's async drivers, a
connect timeout, a transaction pooler's settings), so the two never disagree.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from rung import config
from rung.dialects import BACKENDS, backend_named, dialect_named
from rung.errors import ConfigError, DatabaseUnreachable, RungError, UsageError, clip
from rung.passwords import mask, password_of

logger = logging.getLogger("rung")
CONNECT_TIMEOUT = 10.0  # seconds; a host that does not answer fails after this
_SCHEME = re.compile(r"[A-Za-z][\w.-]*(\+[\w.-]+)?")
_SCHEMES = {scheme: full for b in BACKENDS for scheme, full in b.schemes.items()}


def parse_url(text: str, *, root: Path | None = None) -> sa.URL:
    """``text`` as a URL rung can use: a driverless scheme gets rung's async driver
    (``postgres://`` -> ``postgresql+asyncpg://``), and with ``root`` a relative file path
    is made absolute against it. Refuses what cannot work, naming the fix."""
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ConfigError(
            f"database URL {mask(text, text)!r} does not start with a scheme such as "
            "postgresql://; write it as postgresql://user@host/db, mysql://user@host/db or "
            "sqlite:///app.db"
        )
    text = f"{_SCHEMES.get(scheme.lower(), scheme)}://{rest}"
    shown = mask(text, text)
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError):
        raise ConfigError(
            f"database URL {shown!r} is not a valid URL; write it as "
            "dialect://user:password@host:port/database (escape special characters in the "
            "password as %XX)"
        ) from None
    given = password_of(text)
    if given is not None and url.password != unquote(given):
        raise ConfigError(
            f"the password in database URL {shown!r} has an '@' in it; write it as %40 "
            "(and escape other special characters as %XX)"
        )
    backend = backend_named(url.get_backend_name())
    if backend is None:
        raise ConfigError(
            f"database URL {shown!r} names {url.get_backend_name()!r}; rung works with "
            "SQLite, PostgreSQL, MySQL and MariaDB: sqlite:///, postgresql://, mysql://, "
            "mariadb://"
        )
    driver = url.get_driver_name()
    if driver in backend.sync_drivers:
        raise ConfigError(
            f"database URL {shown!r} names a driver that is not async; use "
            "postgresql+asyncpg://, mysql+asyncmy:// or sqlite+aiosqlite:// (or drop the "
            "driver: postgresql://...)"
        )
    if backend.file_based and root is not None and url.database:
        path = url.database
        if path != ":memory:" and not path.startswith("file:") and not Path(path).is_absolute():
            url = url.set(database=str((root / path).resolve()))
    return url


def check_driver(url: sa.URL) -> None:
    """Refuse a URL whose async driver is not installed, naming what to install."""
    backend = backend_named(url.get_backend_name())
    driver = backend.drivers.get(url.get_driver_name()) if backend else None
    if driver is not None and importlib.util.find_spec(driver.module) is None:
        raise ConfigError(
            f"the {url.get_driver_name()} driver that {url.get_backend_name()} URLs need is "
            f"not installed; install it with: pip install '{driver.install}'"
        )


def create_engine(
    url: str | sa.URL | None = None,
    *,
    root: str | Path | None = None,
    pooler: bool | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    **options: Any,
) -> AsyncEngine:
    """An ``AsyncEngine`` as rung's command line makes it. Without ``url``, for the database
    the command would use from ``root`` (default: the current folder): ``DATABASE_URL``,
    else ``[tool.rung] url`` in the nearest pyproject.toml, else app.db beside it. A
    driverless URL gets rung's async driver (``postgres://`` works), every connection
    attempt is bounded by ``connect_timeout``, and ``pooler=True`` (or ``?pgbouncer=true``
    in a PostgreSQL URL, or ``pooler = "transaction"`` in [tool.rung]) turns off what a
    transaction pooler such as PgBouncer breaks. ``options`` go to SQLAlchemy's
    ``create_async_engine``. Nothing is connected yet."""
    if url is None:
        cfg = config.load({}, os.environ, Path(root or Path.cwd()).resolve())
        url = parse_url(cfg.url, root=cfg.url_root)
        pooler = cfg.pooler if pooler is None else pooler
    parsed = url if isinstance(url, sa.URL) else parse_url(url)
    check_driver(parsed)
    shown = parsed.render_as_string(hide_password=True)
    backend = backend_named(parsed.get_backend_name())
    driver = backend.drivers.get(parsed.get_driver_name()) if backend else None
    try:
        dialect = dialect_named(parsed.get_backend_name())
        parsed, connect_args = dialect.connect_args(parsed, pooler=bool(pooler))
        timeout_arg = driver.timeout_arg if driver else None
        if timeout_arg and timeout_arg not in parsed.query and timeout_arg not in connect_args:
            connect_args[timeout_arg] = connect_timeout
        connect_args.update(options.pop("connect_args", {}))
        return create_async_engine(parsed, connect_args=connect_args, **options)
    except sa.exc.NoSuchModuleError:
        raise ConfigError(
            f"database URL {shown!r} names a database or driver SQLAlchemy does not know; "
            "use postgresql://, mysql://, mariadb:// or sqlite:///"
        ) from None
    except sa.exc.InvalidRequestError:
        raise ConfigError(
            f"database URL {shown!r} names a driver that is not async; use "
            "postgresql+asyncpg://, mysql+asyncmy:// or sqlite+aiosqlite://"
        ) from None
    except ImportError as exc:
        raise ConfigError(
            f"the driver for {shown!r} is not installed ({exc.name}); pip install it, or use "
            "rung's: pip install 'rung[postgres]' or 'rung[mysql]'"
        ) from None
    except (sa.exc.ArgumentError, ValueError, TypeError) as exc:
        raise ConfigError(f"database URL {shown!r} cannot be used ({exc}); fix the URL") from None


def check_engine(engine: object) -> AsyncEngine:
    """The public API's engine argument, or a ``UsageError`` naming the mistake."""
    if isinstance(engine, AsyncEngine):
        return engine
    if isinstance(engine, sa.Engine):
        raise UsageError(
            "rung needs an AsyncEngine, and this is a synchronous Engine; create it with "
            "sqlalchemy.ext.asyncio.create_async_engine(...) or rung.create_engine(url)"
        )
    raise UsageError(
        f"rung needs an AsyncEngine, not {type(engine).__name__}; create one with "
        "rung.create_engine(url)"
    )


def shown(engine: AsyncEngine) -> str:
    return engine.url.render_as_string(hide_password=True)


@asynccontextmanager
async def connect(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection, or an error saying why there is none."""
    try:
        conn = await engine.connect()
    except Exception as exc:
        raise connect_error(engine, exc) from None
    try:
        yield conn
    finally:
        try:
            await conn.close()
        except Exception as exc:  # a dead connection's close never hides what came first
            logger.debug("closing the connection failed (%s)", exc)


async def reach(engine: AsyncEngine, wait: float, on_wait: Callable[[str], None]) -> None:
    """Connect once, or keep trying for ``wait`` seconds while the failure is one that
    waiting can fix (refused, reset, no answer, the server starting up); else raise
    ``DatabaseUnreachable``. A wrong password or a missing database fails at once. No
    attempt outlasts the connect timeout (or what is left of ``wait``). ``on_wait`` is told
    why, each time the reason changes."""
    deadline = time.monotonic() + wait
    delay, last = 0.2, ""
    while True:
        left = deadline - time.monotonic()
        limit = max(min(left, CONNECT_TIMEOUT), 1.0) if wait else CONNECT_TIMEOUT
        permanent: str | None = None
        try:
            await asyncio.wait_for(_attempt(engine), limit + 0.5)
            return
        except asyncio.TimeoutError:
            problem = f"no answer within {limit:g} s"
        except Exception as exc:
            error = connect_error(engine, exc)
            if not isinstance(error, DatabaseUnreachable):
                raise error from None
            problem = _reason(exc)
            permanent = _permanent(engine, exc)
        if permanent is not None:
            raise _unreachable(engine, permanent, permanent=permanent)
        if time.monotonic() + delay > deadline:
            raise _unreachable(engine, problem, waited=wait)
        if problem != last:
            on_wait(f"waiting for {shown(engine)} ({problem})")
            last = problem
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def _attempt(engine: AsyncEngine) -> None:
    async with engine.connect():
        pass


def connect_error(engine: AsyncEngine, exc: Exception) -> RungError:
    """What a failed connection attempt means, as the error to raise."""
    dialect = dialect_named(engine.dialect.name)
    if dialect.pooler_error(exc):
        return pooler_error(engine, exc)
    if isinstance(exc, TypeError) and "pgbouncer" in str(exc):  # SQLAlchemy passed it on
        return ConfigError(
            f"the engine for {shown(engine)} was made by SQLAlchemy, which hands "
            "?pgbouncer=true to the driver; make it with rung.create_engine(url)"
        )
    if not isinstance(exc, (sa.exc.DBAPIError, OSError, asyncio.TimeoutError)):
        raise exc
    return _unreachable(engine, _reason(exc), permanent=_permanent(engine, exc))


def pooler_error(engine: AsyncEngine, exc: BaseException) -> ConfigError:
    first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
    return ConfigError(
        f"{shown(engine)} is reached through a transaction pooler (PgBouncer), which breaks "
        f"named prepared statements ({first}); add ?pgbouncer=true to the URL, or set "
        'pooler = "transaction" in [tool.rung] (in Python, make the engine with '
        "rung.create_engine(url, pooler=True))"
    )


def _permanent(engine: AsyncEngine, exc: BaseException) -> str | None:
    return dialect_named(engine.dialect.name).permanent_error(exc)


def _unreachable(
    engine: AsyncEngine, problem: str, *, permanent: str | None = None, waited: float = 0.0
) -> DatabaseUnreachable:
    where = shown(engine)
    if permanent is not None:
        return DatabaseUnreachable(
            mask(
                f"cannot connect to {where} ({problem}); waiting will not help: check the "
                "user, password and database name in the URL",
                str(engine.url),
            )
        )
    within = f" within {waited:g} s" if waited else ""
    hint = "or wait longer with --wait SECONDS" if waited else "or wait for it with --wait SECONDS"
    return DatabaseUnreachable(
        mask(
            f"cannot connect to {where}{within} ({problem}); check the URL and that the "
            f"server is running, {hint}",
            str(engine.url),
        )
    )


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    if "Timeout" in type(cause).__name__ and not text:  # asyncio's has no message
        text = [f"no answer within {CONNECT_TIMEOUT:g} s"]
    return clip(f"{type(cause).__name__}: {text[0]}" if text else type(cause).__name__, 300)
