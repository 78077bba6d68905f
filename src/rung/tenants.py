"""A fleet's tenants: what ``--fleet SPEC`` (or ``[tool.rung.fleet]``) names, expanded into
one ``Tenant`` per database or PostgreSQL schema, and the engine that reaches each one.

SPEC is a file of URLs (one a line, ``#`` starts a comment), a glob of SQLite files
(``data/tenants/*.db``), or ``schemas:PATTERN``: every PostgreSQL schema matching the
fnmatch-style PATTERN in the configured database. A schema tenant's engine puts that schema
first on the ``search_path`` and rung's own tables in it (SQLAlchemy's
``schema_translate_map``), so each schema has its own history and lock. Every engine tells
a migration its tenant in ``conn.info["rung_tenant"]``.
"""

from __future__ import annotations

import fnmatch
import glob
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from rung.connection import connect, create_engine, parse_url
from rung.dialects import dialect_named
from rung.errors import ConfigError
from rung.history import FORMAT_VERSION, History

SCHEMAS = "schemas:"
FLEET_KEYS = ("urls", "files", "schemas", "jobs")  # [tool.rung.fleet]
_GLOB = frozenset("*?[")
_SCHEMA_NAMES = sa.text(
    "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
    "AND nspname <> 'information_schema' ORDER BY nspname"
)


@dataclass(frozen=True)
class Tenant:
    """One database, or one schema of a PostgreSQL database. ``name`` is what rung shows and
    what a migration reads in ``conn.info["rung_tenant"]``: the schema's name, the SQLite
    file's path, or the URL with its password masked."""

    name: str
    url: str
    schema: str | None = None


async def find(
    spec: str | None,
    *,
    cwd: Path,
    url: str,
    section: Mapping[str, Any],
    root: Path,
) -> list[Tenant]:
    """The tenants ``spec`` names (None or "": those of ``[tool.rung.fleet]``, ``section``,
    relative paths there anchored at ``root``); ``url`` is the database of ``schemas:``."""
    if not spec:
        return await _from_section(section, url=url, root=root)
    if spec.startswith(SCHEMAS):
        return await schemas(url, spec.removeprefix(SCHEMAS), f"--fleet {spec}")
    path = cwd / spec
    if not _GLOB & set(spec) and path.is_file():
        return from_file(path)
    if _GLOB & set(spec):
        return files(cwd, spec, f"--fleet {spec}")
    raise ConfigError(
        f"--fleet {spec}: no such file; give a file of URLs, a glob of SQLite files in quotes "
        "('data/tenants/*.db'), or schemas:PATTERN"
    )


def from_file(path: Path) -> list[Tenant]:
    """One tenant per URL line; a relative SQLite path is anchored at the file's folder."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the fleet file {path} ({exc}); fix the path") from None
    urls = [line.split("#", 1)[0].strip() for line in lines]
    return _of_urls([u for u in urls if u], path.parent.resolve(), f"the fleet file {path}")


def files(root: Path, pattern: str, what: str) -> list[Tenant]:
    """One SQLite tenant per file matching ``pattern`` (relative to ``root``), sorted."""
    found = sorted(glob.glob(str(root / pattern), recursive=True))
    found = [f for f in found if Path(f).is_file()]
    if not found:
        raise ConfigError(
            f"{what} matches no file in {root}; check the pattern (quote it, so that the "
            "shell does not expand it)"
        )
    return [Tenant(_relative(f, root), _sqlite(f)) for f in found]


async def schemas(url: str, pattern: str, what: str) -> list[Tenant]:
    """One tenant per schema of ``url``'s PostgreSQL database whose name matches ``pattern``."""
    if not pattern.strip():
        raise ConfigError(f"{what} has no pattern; write it as schemas:tenant_*")
    parsed = parse_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(
            f"{what} needs a PostgreSQL database URL, and the URL names "
            f"{parsed.get_backend_name()}; set --url or DATABASE_URL to the database holding "
            "the schemas"
        )
    _asyncpg(parsed)
    engine = create_engine(parsed)
    try:
        async with connect(engine) as conn:  # an unreachable server is named as such
            names = list((await conn.execute(_SCHEMA_NAMES)).scalars())
    finally:
        await engine.dispose()
    matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if not matched:
        raise ConfigError(
            f"{what} matches no schema of {parsed.render_as_string(hide_password=True)} "
            f"(it has {len(names)}); check the pattern (fnmatch-style: tenant_*)"
        )
    base = parsed.render_as_string(hide_password=False)
    return [Tenant(name, base, name) for name in matched]


def engine_for(tenant: Tenant, *, pooler: bool = False) -> AsyncEngine:
    """The engine of ``tenant``: its schema first on the search_path and rung's tables in
    it; its name in ``conn.info["rung_tenant"]``."""
    url = parse_url(tenant.url)
    if tenant.schema is None:
        engine = create_engine(url, pooler=pooler)
    else:
        _asyncpg(url)
        quoted = '"' + tenant.schema.replace('"', '""') + '"'
        settings = {"server_settings": {"search_path": f"{quoted}, public"}}
        engine = create_engine(url, pooler=pooler, connect_args=settings).execution_options(
            schema_translate_map={None: tenant.schema}
        )

    @event.listens_for(engine.sync_engine, "connect")
    def _name(dbapi_connection: Any, record: Any) -> None:
        record.info["rung_tenant"] = tenant.name

    return engine


async def own_history(engine: AsyncEngine, tenant: Tenant, table: str, *, make: bool) -> bool:
    """Whether a schema tenant has rung's tables in its own schema; with ``make``, create
    those missing first. Rung finds its tables by visibility on the search_path, where
    ``public``'s (a database migrated by rung in ``public``) would otherwise stand in for
    a tenant's that do not exist yet."""
    assert tenant.schema is not None
    history = History(table, dialect_named(engine.dialect.name))
    quote = engine.dialect.identifier_preparer.quote
    tables = [history.table, history.meta, history.lock]
    names = {t.name: f"{quote(tenant.schema)}.{quote(t.name)}" for t in tables}
    async with engine.connect() as conn:
        for attempt in range(2):
            found = {
                name
                for name, qualified in names.items()
                if await conn.scalar(sa.text("SELECT to_regclass(:n)"), {"n": qualified})
            }
            await conn.rollback()
            if not make or len(found) == len(tables):
                return history.name in found
            try:  # schema_translate_map puts them in the tenant's schema
                async with conn.begin():
                    missing = [t for t in tables if t.name not in found]
                    await conn.run_sync(_create, missing)
                    if history.name not in found:  # a format marker, as rung's first run writes
                        await history.set_meta(conn, "format", str(FORMAT_VERSION))
            except sa.exc.DBAPIError:  # another run made them at the same moment
                if attempt:
                    raise
    return True


def _asyncpg(url: sa.URL) -> None:
    if url.get_driver_name() != "asyncpg":
        raise ConfigError(
            f"a fleet of schemas sets the search_path through asyncpg, and the URL names "
            f"{url.get_driver_name()}; write it as postgresql:// or postgresql+asyncpg://"
        )


def _create(conn: sa.Connection, tables: list[sa.Table]) -> None:
    for table in tables:
        table.create(conn, checkfirst=False)  # checkfirst would see public's


async def _from_section(section: Mapping[str, Any], *, url: str, root: Path) -> list[Tenant]:
    where = "[tool.rung.fleet]"
    unknown = sorted(set(section) - set(FLEET_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {where}; its keys: {', '.join(FLEET_KEYS)}"
        )
    given = [k for k in ("urls", "files", "schemas") if k in section]
    if len(given) != 1:
        raise ConfigError(
            f"--fleet without a value reads {where}, which needs exactly one of urls, files "
            f"and schemas{' (it has ' + ', '.join(given) + ')' if given else ''}; set one, or "
            "give --fleet a file of URLs, a glob or schemas:PATTERN"
        )
    key, value = given[0], section[given[0]]
    if key == "urls":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"urls in {where} must be a list of URLs")
        return _of_urls([v.strip() for v in value if v.strip()], root, f"urls in {where}")
    if not isinstance(value, str):
        raise ConfigError(f"{key} in {where} must be a string, not {value!r}")
    if key == "files":
        return files(root, value, f"files = {value!r} in {where}")
    return await schemas(url, value, f"schemas = {value!r} in {where}")


def _of_urls(urls: list[str], root: Path, what: str) -> list[Tenant]:
    if not urls:
        raise ConfigError(f"{what} lists no URL; write one database URL a line")
    tenants: dict[str, Tenant] = {}
    for text in urls:
        url = parse_url(text, root=root)
        full = url.render_as_string(hide_password=False)
        tenants.setdefault(full, Tenant(url.render_as_string(hide_password=True), full))
    return list(tenants.values())


def _sqlite(path: str) -> str:
    return f"sqlite+aiosqlite:///{Path(path).resolve()}"


def _relative(path: str, root: Path) -> str:
    return str(Path(path).relative_to(root)) if Path(path).is_relative_to(root) else path
