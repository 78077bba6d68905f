"""What a migration is: a name, an ``up`` and a ``down`` coroutine function, and a checksum.

The checksum hashes the syntax tree of the module that defines ``up``, so comments,
docstrings and formatting do not count and behaviour changes do. The tree is written out
by our own walk (not ``ast.dump``, whose text changes between Python versions) and empty
fields are skipped, so the same code gives the same checksum on Python 3.10 to 3.13.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

MigrationFn = Callable[["AsyncConnection"], Awaitable[None]]

NAME_PATTERN = re.compile(r"m(\d{8})_(\d{6})_([a-z0-9_]+)")
NAME_FORMAT = "m{YYYYMMDD}_{NNNNNN}_{slug}, slug in [a-z0-9_]"


@dataclass(frozen=True)
class Migration:
    """One step of the schema's history. ``down=None`` marks it irreversible."""

    name: str
    up: MigrationFn
    down: MigrationFn | None
    transactional: bool = True

    @classmethod
    def from_module(cls, module: ModuleType, *, transactional: bool | None = None) -> Migration:
        """Build a migration from a module with ``up`` and ``down`` (``down = None`` allowed).

        The name is the module's own; ``transactional`` defaults to the module's
        ``TRANSACTIONAL`` attribute, else True.
        """
        if transactional is None:
            transactional = bool(getattr(module, "TRANSACTIONAL", True))
        return cls(
            name=module.__name__.rpartition(".")[2],
            up=getattr(module, "up", None),  # type: ignore[arg-type]  # validated by the registry
            down=getattr(module, "down", None),
            transactional=transactional,
        )

    @cached_property
    def checksum(self) -> str:
        return checksum_of(self.up, self.down)


@dataclass(frozen=True)
class Statement:
    """One SQL statement a migration executed, as the journal keeps it."""

    sql: str
    params: object  # a JSON value: the driver's parameters, None when there were none
    duration_ms: float


def checksum_of(up: Callable[..., Any], down: Callable[..., Any] | None) -> str:
    """Checksum of the module defining ``up`` (its whole syntax tree), else of the functions."""
    module = sys.modules.get(getattr(up, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if module is not None and path and path.endswith(".py"):
        known = _loaded.get(module.__name__)
        if known is None or known[0] is not module:  # a module imported anew is read anew
            known = _loaded[module.__name__] = (module, _file_checksum(path))
        return known[1]
    sources = []
    for fn in (up, down):
        try:
            sources.append(inspect.getsource(fn) if fn is not None else "None")
        except (OSError, TypeError):
            # No source to read (built at run time): the code object is all there is.
            code = getattr(fn, "__code__", None)
            sources.append(repr((code.co_code, code.co_consts, code.co_names)) if code else "?")
    return _tree_checksum("\n".join(_dedent(s) for s in sources))


class _ChecksumCache:
    """Checksums by file, keyed by (mtime, size), in memory and in one small JSON file per
    folder (``__pycache__/rung-checksums.json``), so a no-op run stats each migration
    instead of reading and parsing it. A file changed in the last two seconds is never
    trusted to the cache: an edit of the same size within one tick of the file system's
    clock would otherwise keep the old checksum (git's "racily clean" rule)."""

    FILE = "rung-checksums.json"
    RACY_NS = 2_000_000_000

    def __init__(self) -> None:
        self._folders: dict[str, dict[str, list[Any]]] = {}
        self._dirty: set[str] = set()

    def checksum(self, path: str) -> str:
        folder, name = os.path.split(path)
        stat = os.stat(path)
        entries = self._entries(folder)
        entry = entries.get(name)
        if entry and entry[0] == stat.st_mtime_ns and entry[1] == stat.st_size:
            return str(entry[2])
        with open(path, encoding="utf-8") as f:
            value = _tree_checksum(f.read())
        if time.time_ns() - stat.st_mtime_ns > self.RACY_NS:
            entries[name] = [stat.st_mtime_ns, stat.st_size, value]
            self._dirty.add(folder)
        return value

    def _entries(self, folder: str) -> dict[str, list[Any]]:
        entries = self._folders.get(folder)
        if entries is None:
            try:
                with open(os.path.join(folder, "__pycache__", self.FILE), encoding="utf-8") as f:
                    loaded = json.load(f)
                entries = loaded["files"] if loaded.get("format") == 1 else {}
            except (OSError, ValueError, KeyError, AttributeError):
                entries = {}
            self._folders[folder] = entries
        return entries

    def save(self) -> None:
        """Write the folders that changed; quietly skipped where the folder is read-only."""
        for folder in self._dirty:
            target = os.path.join(folder, "__pycache__", self.FILE)
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                temporary = f"{target}.{os.getpid()}.tmp"
                with open(temporary, "w", encoding="utf-8") as f:
                    json.dump({"format": 1, "files": self._folders[folder]}, f)
                os.replace(temporary, target)
            except OSError:
                pass
        self._dirty.clear()


_cache = _ChecksumCache()
# The checksum of each module as it was loaded: the code that runs is the loaded code, so
# later calls in the same process (an app's repeated upgrade) touch no file at all.
_loaded: dict[str, tuple[ModuleType, str]] = {}


def _file_checksum(path: str) -> str:
    return _cache.checksum(path)


def prime_checksums(migrations: Sequence[Migration]) -> None:
    """Compute every checksum now and keep the cache for the next process."""
    for m in migrations:
        _ = m.checksum
    _cache.save()


def _dedent(source: str) -> str:
    lines = source.splitlines()
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return "\n".join(x[indent:] for x in lines)


def _tree_checksum(source: str) -> str:
    tree = ast.parse(source)
    digest = hashlib.sha256()
    _feed(tree, digest)
    return digest.hexdigest()


def _feed(node: object, digest: Any) -> None:
    if isinstance(node, ast.AST):
        digest.update(type(node).__name__.encode())
        digest.update(b"(")
        body: Any = getattr(node, "body", None)
        for name in node._fields:
            value: Any = getattr(node, name, None)
            if name == "values" and isinstance(node, ast.JoinedStr):
                value = _joined_values(node.values)
            if value is None or value == []:
                continue  # fields newer Pythons added (type_params, ...) are empty in old code
            if name == "body" and value is body and _is_docstring_holder(node):
                value = _without_docstring(value)
            if name == "kind" and isinstance(node, ast.Constant):
                continue  # the u"" prefix marker carries no behaviour
            digest.update(name.encode() + b"=")
            _feed(value, digest)
            digest.update(b",")
        digest.update(b")")
    elif isinstance(node, list):
        digest.update(b"[")
        for item in node:
            _feed(item, digest)
            digest.update(b",")
        digest.update(b"]")
    else:
        # !a (ascii), not !r: repr() leaves characters it finds printable unescaped, and
        # which ones are printable depends on the Unicode version of the running Python.
        digest.update(f"{type(node).__name__}:{node!a}".encode())


def _joined_values(values: list[ast.expr]) -> list[ast.expr]:
    """An f-string's parts with empty text dropped and adjacent text merged: Python 3.12
    adds ``Constant('')`` around replacement fields in format specs (``f"{x:{w}}"``),
    which 3.10, 3.11 and 3.13 do not."""
    parts: list[ast.expr] = []
    for part in values:
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            if not part.value:
                continue
            last = parts[-1] if parts else None
            if isinstance(last, ast.Constant) and isinstance(last.value, str):
                parts[-1] = ast.Constant(last.value + part.value)
                continue
        parts.append(part)
    return parts


def _is_docstring_holder(node: ast.AST) -> bool:
    return isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))


def _without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    first = body[0] if body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return body[1:] or [ast.Pass()]
    return body
