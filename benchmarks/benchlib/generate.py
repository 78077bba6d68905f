"""Generators: the ladder-N workload in each tool's native project format.

Everything goes under ``benchmarks/.work/projects/<tool>/n<N>/`` (gitignored). A project is
written once and reused while its ``.complete`` marker matches ``GENERATOR_VERSION`` and N;
its modules are byte-compiled right away, so no timed run pays for compiling them.
"""

from __future__ import annotations

import compileall
import shutil
from collections.abc import Callable
from pathlib import Path

from benchlib.workload import SHAPE, down_statements, rung_name, short_id, up_statements

GENERATOR_VERSION = "4"
RUNG_PACKAGE = "ladder"


def _complete(root: Path, n: int) -> bool:
    marker = root / ".complete"
    return marker.exists() and marker.read_text() == f"{GENERATOR_VERSION} {n}"


def _fresh(root: Path) -> Path:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    return root


def _finish(root: Path, n: int) -> None:
    compileall.compile_dir(str(root), quiet=1, workers=1)
    (root / ".complete").write_text(f"{GENERATOR_VERSION} {n}")


def ensure(kind: str, n: int, work: Path) -> Path:
    """The project directory of ``kind`` for ladder-``n``, generated if missing or stale."""
    root = work / "projects" / kind / (f"n{n}" if SHAPE == "ladder" else f"n{n}-{SHAPE}")
    if not _complete(root, n):
        GENERATORS[kind](_fresh(root), n)
        _finish(root, n)
    return root


# --- rung: one module per migration and a lib.py registry, as in the template layout --------

RUNG_MODULE = '''"""Ladder migration {i}: create t_{i} (generated)."""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def up(conn: AsyncConnection) -> None:
{up}


async def down(conn: AsyncConnection) -> None:
{down}
'''


def _awaits(statements: tuple[str, ...]) -> str:
    return "\n".join(f'    await conn.execute(text("{s}"))' for s in statements)


def generate_rung(root: Path, n: int) -> None:
    package = root / RUNG_PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    names = [rung_name(i) for i in range(1, n + 1)]
    for i, name in enumerate(names, start=1):
        source = RUNG_MODULE.format(
            i=i, up=_awaits(up_statements(i)), down=_awaits(down_statements(i))
        )
        (package / f"{name}.py").write_text(source)
    (root / "pyproject.toml").write_text(f'[tool.rung]\nmigrator = "{RUNG_PACKAGE}.lib:Migrator"\n')
    imports = "".join(f"    {name},\n" for name in names)
    entries = "".join(f"            Migration.from_module({name}),\n" for name in names)
    (package / "lib.py").write_text(
        f'"""The registry of ladder-{n} (generated): tuple order is application order."""\n\n'
        "from rung import Migration\n\n"
        f"from {RUNG_PACKAGE} import (\n{imports})\n\n\n"
        "class Migrator:\n"
        "    @staticmethod\n"
        "    def migrations() -> tuple[Migration, ...]:\n"
        f"        return (\n{entries}        )\n"
    )


# --- Alembic: a linear chain of revision files, a sync and an async env.py ------------------

ALEMBIC_REVISION = '''"""create t_{i} (generated)

Revision ID: {rev}
Revises: {down_rev}
"""

from alembic import op

revision = "{rev}"
down_revision = {down_rev_literal}
branch_labels = None
depends_on = None


def upgrade() -> None:
{up}


def downgrade() -> None:
{down}
'''

ALEMBIC_ENV_SYNC = '''"""Alembic environment, sync (the shape of Alembic's "generic" template)."""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
'''

ALEMBIC_ENV_ASYNC = '''"""Alembic environment, async (the shape of Alembic's "async" template)."""

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    connectable = async_engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    async with connectable.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await connectable.dispose()


asyncio.run(run_async_migrations())
'''

# The logging set-up of Alembic's default alembic.ini: what a user's project pays.
ALEMBIC_INI = """[alembic]
script_location = {script_location}
{version_locations}sqlalchemy.url = {url}

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"""


def _op_calls(statements: tuple[str, ...]) -> str:
    return "\n".join(f'    op.execute("{s}")' for s in statements)


def generate_alembic(root: Path, n: int) -> None:
    (root / "env.py").write_text(ALEMBIC_ENV_SYNC)
    versions = root / "versions"
    versions.mkdir()
    for i in range(1, n + 1):
        rev, down_rev = f"r{short_id(i)}", (f"r{short_id(i - 1)}" if i > 1 else None)
        (versions / f"{rev}_create_t_{i}.py").write_text(
            ALEMBIC_REVISION.format(
                i=i,
                rev=rev,
                down_rev=down_rev or "<base>",
                down_rev_literal=f'"{down_rev}"' if down_rev else "None",
                up=_op_calls(up_statements(i)),
                down=_op_calls(down_statements(i)),
            )
        )


def generate_alembic_async(root: Path, n: int) -> None:
    """Only env.py: the revisions are the sync project's (``version_locations``)."""
    (root / "env.py").write_text(ALEMBIC_ENV_ASYNC)


def alembic_ini(project: Path, url: str, versions: Path | None = None) -> str:
    extra = f"version_locations = {versions}\n" if versions else ""
    return ALEMBIC_INI.format(script_location=project, version_locations=extra, url=url)


# --- yoyo: one SQL file per migration, with its .rollback.sql -------------------------------


def generate_yoyo(root: Path, n: int) -> None:
    for i in range(1, n + 1):
        stem = f"m{short_id(i)}_create_t_{i}"
        (root / f"{stem}.sql").write_text(
            f"-- create t_{i} (generated)\n" + "".join(f"{s};\n" for s in up_statements(i))
        )
        (root / f"{stem}.rollback.sql").write_text("".join(f"{s};\n" for s in down_statements(i)))


GENERATORS: dict[str, Callable[[Path, int], None]] = {
    "rung": generate_rung,
    "alembic": generate_alembic,
    "alembic-async": generate_alembic_async,
    "yoyo": generate_yoyo,
}
