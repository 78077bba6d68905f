"""``rung init`` and ``rung new``: the template layout, and new migration modules.

Every file is created with mode ``"x"``, so nothing that exists is ever overwritten. ``new``
registers the module in lib.py through ``rung.lib_editor``, which edits only a shape it
understands; any other shape gets the new file and the exact lines to add by hand, never a
guess. Standard library only: ``rung new`` runs without SQLAlchemy.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from rung.config import read_section
from rung.errors import ScaffoldError, UsageError
from rung.lib_editor import Unsafe, register

MAX_SLUG = 64

INIT_PY = '''\
"""The application's migrations: one module each, registered in order in ``lib.py``."""
'''

LIB_PY = '''\
"""The registry: the order of the tuple is the order in which migrations are applied.

``rung new NAME`` creates a migration module and adds it at the end of the tuple.
"""

from rung import Migration


class Migrator:
    @staticmethod
    def migrations() -> tuple[Migration, ...]:
        return ()
'''

RUNNER_PY = '''\
"""Thin wrappers the application calls, e.g. from a FastAPI lifespan: ``await upgrade(engine)``."""

from sqlalchemy.ext.asyncio import AsyncEngine

import rung
from server.migration.src.lib import Migrator


async def upgrade(engine: AsyncEngine) -> list[rung.Executed]:
    """Apply every pending migration (one transaction where the database allows it)."""
    return await rung.upgrade(engine, Migrator)


async def downgrade(engine: AsyncEngine, steps: int = 1) -> list[rung.Executed]:
    """Revert the newest ``steps`` applied migrations."""
    return await rung.downgrade(engine, Migrator, steps=steps)
'''

INIT_DB_PY = '''\
"""Bootstrap the configured database: apply every pending migration and say what ran.

The database is DATABASE_URL, else ``[tool.rung] url`` in pyproject.toml, else embedded
SQLite in app.db next to pyproject.toml; driverless URLs (postgres://...) work as in rung.
"""

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere

import rung  # noqa: E402
from rung.errors import RungError  # noqa: E402
from server.migration.src.runner import upgrade  # noqa: E402


async def main() -> int:
    try:
        engine = rung.create_engine(root=ROOT)  # the database rung's command line would use
    except RungError as exc:
        print(f"init_db: error: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        applied = await upgrade(engine)
    except RungError as exc:
        print(f"init_db: error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        await engine.dispose()
    for migration in applied:
        print(f"applied {migration.name} ({migration.duration_ms:.0f} ms)")
    print(f"{len(applied)} migration(s) applied" if applied else "database is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
'''

TOOL_RUNG = """\
[tool.rung]
# DATABASE_URL or --url override the url; keep passwords out of this file.
url = "sqlite+aiosqlite:///./app.db"
migrator = "server.migration.src.lib:Migrator"
"""

MIGRATION_PY = '''\
"""{title}."""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def up(conn: AsyncConnection) -> None:
    # e.g. await conn.execute(text("ALTER TABLE todos ADD COLUMN priority INTEGER"))
    raise NotImplementedError("write up() in {name}.py")


async def down(conn: AsyncConnection) -> None:
    # e.g. await conn.execute(text("ALTER TABLE todos DROP COLUMN priority"))
    raise NotImplementedError("write down() in {name}.py")
'''

TEMPLATE = {
    "server/migration/src/__init__.py": INIT_PY,
    "server/migration/src/lib.py": LIB_PY,
    "server/migration/src/runner.py": RUNNER_PY,
    "scripts/init_db.py": INIT_DB_PY,
}


# -- rung init ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Initialised:
    created: list[Path]
    pyproject: str  # "created", "extended" or "kept" (it had a [tool.rung] section)


def init(root: Path) -> Initialised:
    """Write the template layout under ``root``; refuse before writing anything if a file of
    it exists, or if pyproject.toml is not valid TOML. Package markers are added only to
    folders this creates."""
    if root.exists() and not root.is_dir():
        raise ScaffoldError(f"{root} is a file, not a folder; give rung init a project folder")
    read_section(root / "pyproject.toml")  # refuses a file that is not valid TOML
    existing = [root / rel for rel in TEMPLATE if (root / rel).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ScaffoldError(
            f"{existing[0]} already exists{more}; rung init never overwrites files: move "
            "them away, or add migrations to the project with 'rung new NAME'"
        )
    created: list[Path] = []
    for folder in ("server", "server/migration"):
        if not (root / folder).exists():
            created.append(_create(root / folder / "__init__.py", ""))
    for rel, text in TEMPLATE.items():
        created.append(_create(root / rel, text))
    return Initialised(created, _tool_section(root / "pyproject.toml"))


def _tool_section(pyproject: Path) -> str:
    if not pyproject.exists():
        _create(pyproject, TOOL_RUNG)
        return "created"
    text = pyproject.read_text(encoding="utf-8")
    if re.search(r"^\s*\[\s*tool\s*\.\s*rung\s*\]", text, re.MULTILINE):
        return "kept"
    with pyproject.open("a", encoding="utf-8") as f:
        f.write(("\n" if text.endswith("\n") else "\n\n") + TOOL_RUNG if text else TOOL_RUNG)
    return "extended"


def _create(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8", newline="") as f:
            f.write(text)
    except FileExistsError:
        raise ScaffoldError(f"{path} already exists; rung never overwrites files") from None
    return path


# -- rung new -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    path: Path  # the new migration module
    lib: Path
    registered: bool  # lib.py was edited
    lines_to_add: tuple[str, str]  # the import and the registry entry, for doing it by hand
    reason: str = ""  # why lib.py was not edited


def slug_of(name: str) -> str:
    """``name`` as a migration slug, ``[a-z0-9_]``; refuses paths and empty or long names."""
    if re.search(r"[/\\\x00]|\.\.|^\.", name):
        raise UsageError(
            f"migration name {name!r} looks like a path; give a plain name such as "
            "add_priority_to_todos (the file goes next to lib.py)"
        )
    name = name.removesuffix(".py")
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)  # CamelCase -> camel_case
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    if not slug:
        raise UsageError(
            f"migration name {name!r} has no letters or digits; name what it does, e.g. "
            "rung new add_priority_to_todos"
        )
    if len(slug) > MAX_SLUG:
        raise UsageError(
            f"migration name is {len(slug)} characters long; keep it to {MAX_SLUG} or fewer "
            "(say what it does in the module's docstring)"
        )
    return slug


def module_file(root: Path, module: str) -> Path | None:
    """Where ``module`` would be imported from (root first, then sys.path), without importing."""
    relative = Path(*module.split("."))
    for base in (root, *(Path(p) for p in sys.path if p)):
        for candidate in (base / f"{relative}.py", base / relative / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def new(
    root: Path,
    migrator: str,
    name: str,
    today: date | None = None,
    *,
    numbering: str = "sequence",
    now: datetime | None = None,
) -> Created:
    """Create the migration module ``m{date}_{number}_{slug}.py`` next to the registry and
    register it at the end of the registry in lib.py, or say what to add.

    ``numbering="sequence"``: the date is today's and the number the next one free that
    day (000001, 000002, ...). ``numbering="time"``: date and number are the UTC date and
    time of day (``m20261125_183012_...``), so that migrations made on two branches do
    not collide unless made in the same second; still above any number taken that day."""
    slug = slug_of(name)
    module, _, attr = migrator.partition(":")
    lib = module_file(root, module)
    if lib is None or not attr:
        raise ScaffoldError(
            f"cannot find the module of migrator {migrator!r} under {root}; run 'rung init' "
            "first, or point --migrator (or [tool.rung] migrator) at your registry"
        )
    package = module if lib.name == "__init__.py" else module.rpartition(".")[0]
    with lib.open(encoding="utf-8", newline="") as f:
        source = f.read()  # as it is: \r\n stays \r\n
    if numbering == "time":
        moment = now or datetime.now(timezone.utc)
        day = moment.strftime("%Y%m%d")
        number = max(int(moment.strftime("%H%M%S")), _next_sequence(lib.parent, source, day))
    else:
        day = (today or date.today()).strftime("%Y%m%d")
        number = _next_sequence(lib.parent, source, day)
    full = f"m{day}_{number:06d}_{slug}"
    path = _create(lib.parent / f"{full}.py", MIGRATION_PY.format(title=_title(slug), name=full))
    import_line = f"from {package} import {full}" if package else f"import {full}"
    lines = (import_line, f"Migration.from_module({full}),")
    try:
        edited = register(source, attr, import_line, full)
    except Unsafe as exc:
        return Created(path, lib, False, lines, str(exc))
    _replace(lib, edited)
    return Created(path, lib, True, lines)


def _next_sequence(folder: Path, lib_source: str, day: str) -> int:
    pattern = re.compile(rf"m{day}_(\d{{6}})_[a-z0-9_]+")
    taken = [int(m[1]) for m in pattern.finditer(lib_source)]
    taken += [int(m[1]) for p in folder.glob(f"m{day}_*.py") if (m := pattern.fullmatch(p.stem))]
    return max(taken, default=0) + 1


def _title(slug: str) -> str:
    return slug.replace("_", " ").capitalize()


def _replace(path: Path, text: str) -> None:
    """Write ``text`` over ``path`` in one step: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.rung-{os.getpid()}.tmp")
    with temporary.open("x", encoding="utf-8", newline="") as f:
        f.write(text)
    shutil.copymode(path, temporary)
    os.replace(temporary, path)
