"""Real databases for every test: a SQLite file, PostgreSQL and MariaDB, each test its own.

``db_url`` is parametrised over the three backends and yields the URL of a database created
for that one test and dropped after it. Locally, a server that is not reachable skips its
tests with the reason; under CI (``CI=true``) it fails them: a database test never skips.

``migrations`` writes real migration modules into a fresh package and imports them, so
checksums, ``Migration.from_module`` and edits behave exactly as in a user's project.

``project`` (on ``db_url``) and ``sqlite_project`` (on a SQLite file) are copies of a
``rung init`` project, ``cli_support.Project``, for the ``rung`` command run against them.

``galera`` (from ``servers/galera.py``) is a 3-node Galera cluster, started once per run by
the first test that asks for it; such tests are marked ``xdist_group("galera")``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cli_support import Project
from rung import Migration
from rung.dialects import dialect_named

# Servers the suite starts itself, each a session fixture started on first use.
pytest_plugins = (
    "servers.galera",
    "servers.pgbouncer",
    "servers.readonly_mariadb",
    "servers.standby",
)

POSTGRES_URL = os.environ.get(
    "RUNG_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("RUNG_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")
SERVERS = {"postgresql": POSTGRES_URL, "mariadb": MYSQL_URL}
BACKENDS = ["sqlite", "postgresql", "mariadb"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_reachable: dict[str, str | None] = {}


def server_problem(backend: str) -> str | None:
    """None when the backend's server answers, else why not (cached per process)."""
    if backend == "sqlite":
        return None
    if backend not in _reachable:
        _reachable[backend] = asyncio.run(_probe(SERVERS[backend]))
    return _reachable[backend]


async def _probe(url: str) -> str | None:
    engine = create_async_engine(url, connect_args=_connect_timeout(url))
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return None
    except Exception as exc:
        return f"{sa.make_url(url).render_as_string(hide_password=True)}: {exc}"
    finally:
        await engine.dispose()


def _connect_timeout(url: str) -> dict[str, float]:
    return {"timeout": 5} if url.startswith("postgresql") else {"connect_timeout": 5}


def require(backend: str) -> None:
    problem = server_problem(backend)
    if problem is None:
        return
    if IN_CI:
        pytest.fail(
            f"{backend} is not reachable under CI, where database tests never skip: {problem}"
        )
    pytest.skip(f"{backend} not reachable: {problem}")


def fresh_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    name = f"rung_t_{uuid.uuid4().hex[:12]}"
    return sa.make_url(SERVERS[backend]).set(database=name).render_as_string(hide_password=False)


async def create_database(url: str) -> None:
    parsed = sa.make_url(url)
    await dialect_named(parsed.get_backend_name()).create_database(parsed)


async def drop_database(url: str) -> None:
    parsed = sa.make_url(url)
    await dialect_named(parsed.get_backend_name()).drop_database(parsed)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own for this test, on each backend; dropped afterwards."""
    url = fresh_url(backend, tmp_path)
    asyncio.run(create_database(url))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(db_url)
    try:
        yield eng
    finally:
        await eng.dispose()


class MigrationPackage:
    """A package of real migration modules on disk, importable, editable."""

    def __init__(self, root: Path) -> None:
        self.name = f"migs_{uuid.uuid4().hex[:10]}"
        self.folder = root / self.name
        self.folder.mkdir()
        (self.folder / "__init__.py").write_text("")
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        self.names: list[str] = []

    def add(
        self, slug: str, up: str, down: str | None = "pass", *, transactional: bool = True
    ) -> str:
        """Write migration ``slug``: bodies of up and down (down=None: irreversible)."""
        name = f"m20260101_{len(self.names) + 1:06d}_{slug}"
        self.write(name, up, down, transactional=transactional)
        self.names.append(name)
        return name

    def write(
        self, name: str, up: str, down: str | None = "pass", *, transactional: bool = True
    ) -> None:
        lines = ["from sqlalchemy import text", f"TRANSACTIONAL = {transactional}", ""]
        lines += [
            "async def up(conn):",
            textwrap.indent(textwrap.dedent(up).strip() or "pass", "    "),
        ]
        if down is None:
            lines += ["", "down = None"]
        else:
            lines += [
                "",
                "async def down(conn):",
                textwrap.indent(textwrap.dedent(down).strip() or "pass", "    "),
            ]
        path = self.folder / f"{name}.py"
        path.write_text("\n".join(lines) + "\n")
        sys.modules.pop(f"{self.name}.{name}", None)
        importlib.invalidate_caches()

    def registry(self, names: list[str] | None = None) -> list[Migration]:
        return [
            Migration.from_module(importlib.import_module(f"{self.name}.{n}"))
            for n in (self.names if names is None else names)
        ]


@pytest.fixture
def migrations(tmp_path: Path) -> MigrationPackage:
    return MigrationPackage(tmp_path)


@pytest.fixture
def project(db_url: str, tmp_path: Path) -> Project:
    """A ``rung init`` project (``cli_support``) on this test's database, on each backend."""
    return Project.create(tmp_path, db_url)


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Project:
    """A ``rung init`` project on SQLite, for what rung decides and prints alike on every
    database (the planner's tests cover each)."""
    return Project.create(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")


def sql(statement: str) -> str:
    """Body of a migration that executes one SQL statement."""
    return f"await conn.execute(text({statement!r}))"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep ``--dist loadgroup`` grouping on pytest 9.2: pytest-xdist 3.8 marks a test's
    group by renaming ``item._nodeid``, which pytest 9.2 no longer reads (pytest-xdist
    issue 1386), so ``xdist_group`` was silently ignored and each worker that drew a Galera
    test started a cluster of its own. The same rename, through the node's structured id;
    it does nothing where xdist's own rename took effect."""
    if not getattr(config.option, "loadgroup", False):  # set on xdist workers only
        return
    for item in items:
        groups = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        suffix = "@" + "_".join(sorted(groups))
        if groups and not item.nodeid.endswith(suffix):
            from _pytest.nodeid import NodeId  # pytest >= 9.2, where the rename is lost

            item._id = NodeId.parse(item.nodeid + suffix)


def within(seconds: float) -> float:
    """An upper bound for something configured to take ``seconds``, generous enough for a
    loaded machine: it tells "bounded by that setting" from "not bounded", not fast from slow."""
    return 3 * seconds + 10
