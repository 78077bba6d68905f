"""Checksums: what counts (behaviour) and what does not (comments, formatting), pinned to
golden values that Python 3.10, 3.11, 3.12 and 3.13 must all reproduce."""

from __future__ import annotations

import glob
import importlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType

import pytest

import rung.migration
from rung.migration import Migration, _tree_checksum, checksum_of

BASE = """\
from sqlalchemy import text

TRANSACTIONAL = True


async def up(conn):
    await conn.execute(text("CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT)"))
    await conn.execute(text("INSERT INTO todos VALUES (:id, :t)"), {"id": 1, "t": "x"})
    limit = 10 * 2


async def down(conn):
    await conn.execute(text("DROP TABLE todos"))
"""

SAME = {
    "comments": """\
# A migration.
from sqlalchemy import text  # the one import

TRANSACTIONAL = True  # default anyway


async def up(conn):
    # create it
    await conn.execute(text("CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT)"))
    await conn.execute(text("INSERT INTO todos VALUES (:id, :t)"), {"id": 1, "t": "x"})
    limit = 10 * 2  # enough


async def down(conn):
    await conn.execute(text("DROP TABLE todos"))  # and drop it
""",
    "docstrings": '''\
"""Create the todos table."""
from sqlalchemy import text

TRANSACTIONAL = True


async def up(conn):
    """Create it, with one row."""
    await conn.execute(text("CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT)"))
    await conn.execute(text("INSERT INTO todos VALUES (:id, :t)"), {"id": 1, "t": "x"})
    limit = 10 * 2


async def down(conn):
    \'\'\'Drop it.\'\'\'
    await conn.execute(text("DROP TABLE todos"))
''',
    "blank lines": """\
from sqlalchemy import text
TRANSACTIONAL = True
async def up(conn):

    await conn.execute(text("CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT)"))


    await conn.execute(text("INSERT INTO todos VALUES (:id, :t)"), {"id": 1, "t": "x"})
    limit = 10 * 2
async def down(conn):
    await conn.execute(text("DROP TABLE todos"))
""",
    "quotes, line breaks, trailing commas, parentheses": """\
from sqlalchemy import (
    text,
)

TRANSACTIONAL = (True)


async def up(
    conn,
):
    await conn.execute(
        text(
            'CREATE TABLE todos '
            "(id INTEGER PRIMARY KEY, title TEXT)"
        ),
    )
    await conn.execute(text(\'\'\'INSERT INTO todos VALUES (:id, :t)\'\'\'), {
        'id': 1,
        't': 'x',
    })
    limit = (10
             * 2)


async def down(conn): await conn.execute(text("DROP TABLE todos"))
""",
    "indentation and semicolons": """\
from sqlalchemy import text
TRANSACTIONAL = True
async def up(conn):
  await conn.execute(text("CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT)"))
  await conn.execute(text("INSERT INTO todos VALUES (:id, :t)"), {"id": 1, "t": "x"}); limit = 10*2
async def down(conn):
        await conn.execute(text("DROP TABLE todos"))
""",
}

CHANGED = {
    "SQL string": ("DROP TABLE todos", "DROP TABLE IF EXISTS todos"),
    "column type": ("title TEXT", "title VARCHAR(200)"),
    "number": ("10 * 2", "10 * 3"),
    "parameter value": ('"id": 1', '"id": 2'),
    "operator": ("10 * 2", "10 + 2"),
    "name": ("limit = 10", "limits = 10"),
    "constant flag": ("TRANSACTIONAL = True", "TRANSACTIONAL = False"),
    "added statement": ("    limit = 10 * 2\n", "    limit = 10 * 2\n    print(limit)\n"),
    "awaited or not": ('    await conn.execute(text("DROP', '    conn.execute(text("DROP'),
    "irreversible": (
        'async def down(conn):\n    await conn.execute(text("DROP TABLE todos"))\n',
        "down = None\n",
    ),
}


def test_base_sample_is_valid_python() -> None:
    compile(BASE, "base", "exec")
    for old, _ in CHANGED.values():
        assert BASE.count(old) == 1, old


@pytest.mark.parametrize("variant", list(SAME))
def test_same_behaviour_same_checksum(variant: str) -> None:
    assert _tree_checksum(SAME[variant]) == _tree_checksum(BASE)


@pytest.mark.parametrize("change", list(CHANGED))
def test_behaviour_change_changes_checksum(change: str) -> None:
    old, new = CHANGED[change]
    assert _tree_checksum(BASE.replace(old, new)) != _tree_checksum(BASE)


def test_statement_order_counts() -> None:
    a = "async def up(conn):\n    await f(1)\n    await f(2)\n"
    b = "async def up(conn):\n    await f(2)\n    await f(1)\n"
    assert _tree_checksum(a) != _tree_checksum(b)


def test_a_string_statement_that_is_not_first_is_code() -> None:
    a = "async def up(conn):\n    await f()\n"
    b = 'async def up(conn):\n    await f()\n    "not a docstring"\n'
    assert _tree_checksum(a) != _tree_checksum(b)


def test_checksum_is_sha256_hex() -> None:
    value = _tree_checksum(BASE)
    assert len(value) == 64
    assert int(value, 16) >= 0


def test_syntax_error_is_not_hidden() -> None:
    with pytest.raises(SyntaxError):
        _tree_checksum("async def up(conn)\n    pass\n")


# --------------------------------------------------------------------------- modules


class Package:
    """Migration modules written to a fresh importable package."""

    def __init__(self, root: Path) -> None:
        self.name = f"ck_{uuid.uuid4().hex[:10]}"
        self.folder = root / self.name
        self.folder.mkdir()
        (self.folder / "__init__.py").write_text("")

    def module(self, stem: str, source: str) -> ModuleType:
        (self.folder / f"{stem}.py").write_text(source)
        full = f"{self.name}.{stem}"
        sys.modules.pop(full, None)
        importlib.invalidate_caches()
        return importlib.import_module(full)


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Package:
    monkeypatch.syspath_prepend(str(tmp_path))
    return Package(tmp_path)


NAME = "m20260408_000001_create_todos_table"


def test_from_module_takes_name_and_functions(package: Package) -> None:
    module = package.module(NAME, BASE)
    m = Migration.from_module(module)
    assert m.name == NAME
    assert m.up is module.up
    assert m.down is module.down
    assert m.transactional is True
    assert m.checksum == _tree_checksum(BASE)
    assert m.checksum == checksum_of(module.up, None)  # the module's, whatever down is


def test_from_module_reads_transactional(package: Package) -> None:
    off = package.module(NAME, BASE.replace("TRANSACTIONAL = True", "TRANSACTIONAL = False"))
    assert Migration.from_module(off).transactional is False
    assert Migration.from_module(off, transactional=True).transactional is True
    absent = package.module("m20260408_000002_x", BASE.replace("TRANSACTIONAL = True\n", ""))
    assert Migration.from_module(absent).transactional is True
    assert Migration.from_module(absent, transactional=False).transactional is False


def test_from_module_irreversible(package: Package) -> None:
    old, new = CHANGED["irreversible"]
    m = Migration.from_module(package.module(NAME, BASE.replace(old, new)))
    assert m.down is None


def test_editing_the_file_changes_the_checksum(package: Package) -> None:
    before = Migration.from_module(package.module(NAME, BASE)).checksum
    path = package.folder / f"{NAME}.py"
    stat = path.stat()
    edited = BASE.replace("10 * 2", "10 * 3")  # same size
    after_module = package.module(NAME, edited)
    # The same size and modification time: only the content tells the versions apart.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    after = Migration.from_module(after_module).checksum
    assert after != before
    assert after == _tree_checksum(edited)
    comment_only = Migration.from_module(package.module(NAME, "# note\n" + edited)).checksum
    assert comment_only == after


def test_a_loaded_module_is_read_once_per_process(
    package: Package, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app calling upgrade again (a registry building new Migration objects each time)
    touches no migration file: the code that runs is the module as it was loaded."""
    module = package.module(NAME, BASE)
    first = Migration.from_module(module).checksum
    touched: list[str] = []
    real_stat, real_open = os.stat, open

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        touched.append(str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    def opened(path: object, *args: object, **kwargs: object) -> object:
        touched.append(str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr("builtins.open", opened)
    assert Migration.from_module(module).checksum == first
    assert touched == []
    monkeypatch.undo()
    reloaded = package.module(NAME, BASE.replace("10 * 2", "10 * 3"))  # imported anew
    assert Migration.from_module(reloaded).checksum != first


def test_functions_without_a_source_file_are_checksummed_by_their_code() -> None:
    def generated(body: str) -> dict[str, object]:
        namespace: dict[str, object] = {"__name__": f"generated_{uuid.uuid4().hex}"}
        exec(compile(f"async def up(conn):\n    {body}\n", "<generated>", "exec"), namespace)
        return namespace

    one, same, other = generated("return 1"), generated("return 1"), generated("return 2")
    assert checksum_of(one["up"], None) == checksum_of(same["up"], None)  # type: ignore[arg-type]
    assert checksum_of(one["up"], None) != checksum_of(other["up"], None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- golden values

# Syntax that ast represents differently across Python versions, so the golden values
# guard the walk in rung.migration._feed:
# - f-strings: 3.12 parses them anew (PEG, PEP 701) and adds empty Constant('') parts
#   around replacement fields in format specs;
# - non-ASCII text: which characters repr() leaves unescaped follows the Unicode version
#   (U+2FFC became printable in Unicode 15.1, i.e. Python 3.13);
# - match, decorators, annotations, async with/for: fields added over the versions
#   (type_params in 3.12, ...), which must not count while empty.
SAMPLES = {
    "fstrings": """\
async def up(conn):
    width, name = 10, "todos"
    await conn.execute(text(f"CREATE TABLE {name} (id INT)"))
    await conn.execute(text(f"-- {name!r:>{width}} {width=} {'nested'} {f'{name}'} done"))
    x = f"{name}" f"plain" "more {braces}" f"{{literal}}"
    y = f"{width:02d}{width:{width}.{width}}{name:{{width}}}"
    z = f"{name = !s:^{width}}" + f"" + f"{name:}"
""",
    "match": """\
async def up(conn):
    match conn.dialect.name:
        case "postgresql" | "sqlite":
            await conn.execute(text("SELECT 1"))
        case [a, *rest] if a:
            pass
        case {"k": v, **kw}:
            pass
        case Point(x=0, y=_) as p:
            pass
        case None | True | 1.5 | -2 | 3j:
            pass
        case _:
            raise ValueError("no")
""",
    "decorated, typed, async with": '''\
from __future__ import annotations
import functools
from typing import Any


def logged(fn: Any) -> Any:
    @functools.wraps(fn)
    async def inner(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)
    return inner


class Helper:
    """Not part of the checksum."""
    limit: int = 3
    names: list[str]

    @staticmethod
    def make(a: int, /, b: str = "x", *, c: float | None = None, **kw: Any) -> dict[str, int]:
        return {b: a}


@logged
async def up(conn: AsyncConnection) -> None:
    async with conn.begin_nested() as tx, other() as o:
        async for row in rows(conn):
            await conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": row[0]})
    async with (lock(conn) as held, other()):
        pass
    lam = lambda a, *b, c=1, **d: (a, b, c, d)
    data = [i ** 2 for i in range(3) if i % 2] + [*range(2)]
    s = {k: v async for k, v in gen()}
    if (n := len(data)) > 1:
        pass
    try:
        pass
    except (KeyError, ValueError) as exc:
        raise RuntimeError from exc
    finally:
        del lam
    global G
    assert data, "empty"
    return None

down = None
''',
    "text": '''\
"""Module docstring."""
from sqlalchemy import text
TRANSACTIONAL = False

async def up(conn):
    """Create the index."""
    await conn.execute(text("CREATE INDEX CONCURRENTLY ix ON t (a)"))
    await conn.execute(text("COMMENT ON TABLE t IS '\u2ffc \u00e9 \U0001f600 \\\\x'"))
    await conn.execute(text(b"\\x00\\xff".decode("latin-1")))

async def down(conn):
    await conn.execute(text(u"DROP INDEX ix"))
''',
}

GOLDEN = {
    "fstrings": "1496e3a311f6d2013a38d3ca4449c9d15faa209e500b81d0f12a156bdd830150",
    "match": "4dc3e59f0ba992cb5a721f63da9d53e379c18f782ad50b1e6b91a81dd483f212",
    "decorated, typed, async with": (
        "3eea6ff38f2c206f084cf76745c923475c9ca97c6e741373fc74f41f9d3b1188"
    ),
    "text": "ac057c40c7b37b5e395aeb49bb8049129ae923f9c12c111b18b797cd3843cea3",
}


def test_golden_checksums() -> None:
    assert {name: _tree_checksum(source) for name, source in SAMPLES.items()} == GOLDEN


PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("rung_migration_probe", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
assert "sqlalchemy" not in sys.modules, "rung.migration imported sqlalchemy"
samples = json.load(sys.stdin)
print(json.dumps({name: module._tree_checksum(source) for name, source in samples.items()}))
"""


def interpreter(version: str) -> str | None:
    found = sorted(glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python3"))
    return found[-1] if found else None


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12", "3.13"])
def test_every_python_agrees_on_the_golden_checksums(version: str) -> None:
    python = interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} under /root/.pyenv/versions")
    result = subprocess.run(
        [python, "-I", "-c", PROBE, rung.migration.__file__],
        input=json.dumps(SAMPLES),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == GOLDEN


def test_checksum_cache_survives_processes_and_notices_edits(tmp_path: Path) -> None:
    """A no-op run should stat migrations, not read them: checksums of files older than two
    seconds are kept in __pycache__/rung-checksums.json; a changed file is read again."""
    source = tmp_path / "m20260101_000001_cached.py"
    source.write_text("async def up(conn):\n    x = 1\n")
    old = time.time() - 60
    os.utime(source, (old, old))
    cache = rung.migration._ChecksumCache()
    first = cache.checksum(str(source))
    cache.save()
    stored = json.loads((tmp_path / "__pycache__" / "rung-checksums.json").read_text())
    assert stored["files"][source.name][2] == first
    # A new process (a new cache) takes it from the file without parsing.
    reader = rung.migration._ChecksumCache()
    original = rung.migration._tree_checksum
    rung.migration._tree_checksum = lambda text: pytest.fail("parsed despite the cache")  # type: ignore[assignment]
    try:
        assert reader.checksum(str(source)) == first
    finally:
        rung.migration._tree_checksum = original
    # An edit of the same size is noticed, however quick: fresh files are never cached.
    source.write_text("async def up(conn):\n    x = 2\n")
    assert reader.checksum(str(source)) != first
    source.write_text("async def up(conn):\n    x = 1\n")
    assert reader.checksum(str(source)) == first
