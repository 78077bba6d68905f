"""``rung init`` and ``rung new``: the template layout, and new migrations registered in lib.py.

Every file is created with mode ``"x"``, so nothing that exists is ever overwritten. ``new``
edits lib.py only where it understands the file's shape: it finds the registry's tuple and
the migration imports with ``ast``, inserts text at those positions (the rest of the file
keeps its exact formatting), and checks the result parses to one more migration. Any other
shape gets the new file and the exact lines to add by hand, never a guess. Standard library
only: ``rung new`` runs without SQLAlchemy.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import sys
import unicodedata
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from rung.config import read_section
from rung.errors import ScaffoldError, UsageError

MAX_SLUG = 64
MAX_LINE = 88  # lib.py lines grown past this are laid out one entry per line

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
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere

from rung import config  # noqa: E402
from rung.errors import RungError  # noqa: E402
from server.migration.src.runner import upgrade  # noqa: E402


async def main() -> int:
    try:
        engine = config.create_engine(config.load({}, os.environ, ROOT))
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


def new(root: Path, migrator: str, name: str, today: date | None = None) -> Created:
    """Create the migration module ``m{date}_{seq}_{slug}.py`` next to the registry and
    register it at the end of the registry in lib.py, or say what to add."""
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
    day = (today or date.today()).strftime("%Y%m%d")
    full = f"m{day}_{_next_sequence(lib.parent, source, day):06d}_{slug}"
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


# -- editing lib.py -------------------------------------------------------------------------


class Unsafe(Exception):
    """lib.py has a shape ``register`` does not edit; the message says which."""


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str


class _Source:
    """The text of a module with ``ast`` positions (lines, UTF-8 columns) turned into offsets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self.starts = [0]
        for line in text.split("\n"):
            self.starts.append(self.starts[-1] + len(line) + 1)

    def offset(self, line: int, column: int) -> int:
        start = self.starts[line - 1]
        raw = self.text[start : self.starts[line]].encode("utf-8")
        return start + len(raw[:column].decode("utf-8", "replace"))

    def span(self, node: ast.expr | ast.stmt | ast.alias) -> tuple[int, int]:
        assert node.end_lineno is not None and node.end_col_offset is not None
        return (
            self.offset(node.lineno, node.col_offset),
            self.offset(node.end_lineno, node.end_col_offset),
        )

    def indent_at(self, offset: int) -> str:
        """The whitespace before ``offset`` on its line ("" if code precedes it)."""
        line_start = self.text.rfind("\n", 0, offset) + 1
        before = self.text[line_start:offset]
        return before if not before.strip() else ""

    def line_indent(self, offset: int) -> str:
        """The whitespace the line holding ``offset`` starts with."""
        line_start = self.text.rfind("\n", 0, offset) + 1
        line = self.text[line_start : self.line_end(offset)]
        return line[: len(line) - len(line.lstrip(" \t"))]

    def starts_line(self, offset: int) -> bool:
        line_start = self.text.rfind("\n", 0, offset) + 1
        return not self.text[line_start:offset].strip()

    def line_end(self, offset: int) -> int:
        """The offset just after the newline ending the line that holds ``offset``."""
        end = self.text.find("\n", offset)
        return len(self.text) if end < 0 else end + 1


def register(source: str, attr: str, import_line: str, name: str) -> str:
    """``source`` (lib.py) with migration module ``name`` imported and appended to the
    registry ``attr``; raises ``Unsafe`` for shapes it does not handle."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise Unsafe(f"lib.py does not parse ({exc.msg}, line {exc.lineno})") from None
    src = _Source(source)
    sequence = _registry_sequence(tree, attr)
    entries = [_entry_module(e) for e in sequence.elts]
    imports = _migration_imports(tree, {m for m in entries if m})
    if any(m is None for m in entries):
        raise Unsafe(
            f"the entries of {attr} are not all Migration.from_module(module) or "
            "Migration(name=..., up=module.up, down=module.down)"
        )
    edits = _append(src, sequence, _new_entry(src, tree, sequence, name))
    edits += _add_import(src, tree, imports, import_line, name, entries[-1] if entries else None)
    text = source
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        text = text[: edit.start] + edit.text + text[edit.end :]
    _check(text, attr, len(entries) + 1, name)
    return text


def _registry_sequence(tree: ast.Module, attr: str) -> ast.Tuple | ast.List:
    """The literal tuple or list ``migrations()`` of class ``attr`` returns, or that the
    module-level name ``attr`` is assigned."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == attr:
            methods = [
                n
                for n in node.body
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "migrations"
            ]
            returns = [r for m in methods for r in ast.walk(m) if isinstance(r, ast.Return)]
            if len(returns) != 1:
                raise Unsafe(f"{attr}.migrations() does not have exactly one return statement")
            value = returns[0].value
            break
        if isinstance(node, ast.Assign) and _binds(node.targets, attr):
            value = node.value
            break
        if isinstance(node, ast.AnnAssign) and _binds([node.target], attr):
            value = node.value
            break
    else:
        raise Unsafe(f"lib.py has no class or assignment named {attr}")
    if not isinstance(value, (ast.Tuple, ast.List)):
        raise Unsafe(f"{attr} does not return or hold a literal tuple or list")
    return value


def _binds(targets: list[ast.expr], attr: str) -> bool:
    return any(isinstance(t, ast.Name) and t.id == attr for t in targets)


def _entry_module(node: ast.expr) -> str | None:
    """The module an entry refers to, if it has one of the two shapes rung writes."""
    if not isinstance(node, ast.Call):
        return None
    if isinstance(node.func, ast.Attribute) and node.func.attr == "from_module":
        if len(node.args) == 1 and isinstance(node.args[0], ast.Name):
            return node.args[0].id
        return None
    keywords = {k.arg: k.value for k in node.keywords}
    up = keywords.get("up")
    if not node.args and isinstance(up, ast.Attribute) and isinstance(up.value, ast.Name):
        return up.value.id
    return None


def _is_plain(node: ast.expr, module: str) -> bool:
    """An entry with nothing but the module's name, up and down: safe to copy for another."""
    assert isinstance(node, ast.Call)
    if node.args:
        return not node.keywords
    keywords = {k.arg: k.value for k in node.keywords}
    name = keywords.get("name")
    return (
        set(keywords) == {"name", "up", "down"}
        and isinstance(name, ast.Constant)
        and name.value == module
        and isinstance(keywords["down"], ast.Attribute)
        and isinstance(keywords["down"].value, ast.Name)
        and keywords["down"].value.id == module
    )


def _new_entry(src: _Source, tree: ast.Module, sequence: ast.Tuple | ast.List, name: str) -> str:
    """The entry for ``name``, in the style of the registry's last plain entry."""
    for node in reversed(sequence.elts):
        module = _entry_module(node)
        if module and _is_plain(node, module):
            start, end = src.span(node)
            return re.sub(rf"\b{re.escape(module)}\b", name, src.text[start:end])
    if sequence.elts:
        last = sequence.elts[-1]
        assert isinstance(last, ast.Call)
        start, end = src.span(last.func)
        callee = src.text[start:end]
        if callee.endswith(".from_module"):
            return f"{callee}({name})"
        return f'{callee}(name="{name}", up={name}.up, down={name}.down)'
    return f"{_migration_class(tree)}.from_module({name})"


def _migration_class(tree: ast.Module) -> str:
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module in ("rung", "rung.migration"):
            for alias in node.names:
                if alias.name == "Migration":
                    return alias.asname or "Migration"
        if isinstance(node, ast.Import) and any(
            a.name == "rung" and not a.asname for a in node.names
        ):
            return "rung.Migration"
    raise Unsafe("lib.py does not import Migration from rung")


def _append(src: _Source, sequence: ast.Tuple | ast.List, entry: str) -> list[_Edit]:
    """Edits adding ``entry`` after the sequence's last element, keeping its layout."""
    start, end = src.span(sequence)
    text, nl = src.text, src.newline
    if text[start] not in "([" or text[end - 1] not in ")]":
        raise Unsafe("the registry's tuple has no brackets")
    close = end - 1
    if sequence.elts:
        return _append_item(src, [src.span(e) for e in sequence.elts], start, close, entry)
    inner = text[start + 1 : close]
    if inner.strip() and not inner.strip().startswith("#"):
        raise Unsafe("the registry's empty tuple holds something unexpected")
    indent = src.line_indent(start)
    unit = "\t" if indent.startswith("\t") else "    "
    if "\n" not in inner:
        return [_Edit(start + 1, close, f"{nl}{indent}{unit}{entry},{nl}{indent}")]
    close_line = text.rfind("\n", 0, close) + 1
    closing_indent = text[close_line:close]
    if closing_indent.strip():
        raise Unsafe("the registry's empty tuple is laid out in an unexpected way")
    return [_Edit(close_line, close_line, f"{closing_indent}{unit}{entry},{nl}")]


def _append_item(
    src: _Source, items: list[tuple[int, int]], opening: int | None, close: int | None, entry: str
) -> list[_Edit]:
    """Edits adding ``entry`` after the last of ``items`` (offsets) in brackets at
    ``opening`` and ``close`` (None: no brackets, as in ``from x import a, b``)."""
    text, nl = src.text, src.newline
    last_start, last_end = items[-1]
    tail = text[last_end : last_end if close is None else close]
    first_line, _, later = tail.partition("\n")
    code = first_line.split("#", 1)[0]
    if code.strip() not in ("", ",") or "," in later.split("#", 1)[0]:
        raise Unsafe("the last entry is followed by something unexpected")
    comma = "," in code
    trailing = "," if comma else ""
    if src.starts_line(last_start):  # one entry per line
        indent = src.indent_at(last_start)
        if "\n" not in tail:  # the bracket hugs the last entry
            at = last_end + len(first_line) if comma else last_end
            return [_Edit(at, at, f"{'' if comma else ','}{nl}{indent}{entry}{trailing}")]
        edits = [] if comma else [_Edit(last_end, last_end, ",")]
        at = src.line_end(last_end)
        return [*edits, _Edit(at, at, f"{indent}{entry}{trailing}{nl}")]
    # All on one line: (a, b) -> (a, b, new) while it fits, else one entry per line.
    line = text[text.rfind("\n", 0, last_end) + 1 : src.line_end(last_end)].rstrip("\r\n")
    if len(line) + len(entry) + 2 <= MAX_LINE:
        if comma and len(items) > 1:
            at = last_end + code.index(",") + 1
            return [_Edit(at, at, f" {entry},")]
        return [_Edit(last_end, last_end + len(code.rstrip()), f", {entry}")]
    indent = src.line_indent(items[0][0])
    unit = "\t" if indent.startswith("\t") else "    "
    body = "".join(f"{nl}{indent}{unit}{text[a:b]}," for a, b in items)
    body += f"{nl}{indent}{unit}{entry},{nl}{indent}"
    if opening is None or close is None:
        return [_Edit(items[0][0], last_end, f"({body})")]
    return [_Edit(opening + 1, close, body)]


def _migration_imports(tree: ast.Module, modules: set[str]) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that bind the registered migration modules."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound = {a.asname or a.name.partition(".")[0] for a in node.names}
            if bound & modules:
                found.append(node)
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def _add_import(
    src: _Source,
    tree: ast.Module,
    imports: list[ast.Import | ast.ImportFrom],
    import_line: str,
    name: str,
    last_module: str | None,
) -> list[_Edit]:
    nl = src.newline
    if not imports:
        if last_module is not None:
            raise Unsafe(f"cannot find where lib.py imports {last_module}")
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        if not top:
            raise Unsafe("lib.py has no imports to put the migration's import after")
        at = src.line_end(src.span(top[-1])[1])
        return [_Edit(at, at, f"{nl}{import_line}{nl}")]
    statement = imports[-1]
    if len(statement.names) > 1 or src.text[src.span(statement)[1] - 1] == ")":
        return _append_alias(src, statement, name)
    alias = statement.names[0]
    bound = alias.asname or alias.name.rpartition(".")[2]
    if bound != alias.name.rpartition(".")[2]:
        raise Unsafe("lib.py imports migration modules under other names")
    start, end = src.span(statement)
    copied = re.sub(rf"\b{re.escape(bound)}\b", name, src.text[start:end])
    at = src.line_end(end)
    return [_Edit(at, at, f"{src.indent_at(start)}{copied}{nl}")]


def _append_alias(src: _Source, statement: ast.Import | ast.ImportFrom, name: str) -> list[_Edit]:
    """``from pkg import a, b`` (with or without brackets): add ``name`` after the last name."""
    if not isinstance(statement, ast.ImportFrom):
        raise Unsafe("lib.py imports several migration modules in one plain import")
    if any(a.asname for a in statement.names):
        raise Unsafe("lib.py imports migration modules under other names")
    items = [src.span(a) for a in statement.names]
    _, end = src.span(statement)
    if src.text[end - 1] != ")":
        return _append_item(src, items, None, None, name)
    opening = src.text.rfind("(", 0, items[0][0])
    return _append_item(src, items, opening, end - 1, name)


def _check(text: str, attr: str, count: int, name: str) -> None:
    """The edited lib.py must parse, register ``count`` entries, the last being ``name``,
    and import it."""
    try:
        tree = ast.parse(text)
        sequence = _registry_sequence(tree, attr)
    except (SyntaxError, Unsafe):
        raise Unsafe("the edited lib.py would not parse") from None
    if len(sequence.elts) != count or _entry_module(sequence.elts[-1]) != name:
        raise Unsafe("the edited lib.py would not register the migration last")
    if not _migration_imports(tree, {name}):
        raise Unsafe("the edited lib.py would not import the migration")
