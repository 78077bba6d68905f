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
import os
import re
import sys
from collections.abc import Awaitable, Callable
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


def checksum_of(up: Callable[..., Any], down: Callable[..., Any] | None) -> str:
    """Checksum of the module defining ``up`` (its whole syntax tree), else of the functions."""
    module = sys.modules.get(getattr(up, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if path and path.endswith(".py"):
        return _file_checksum(path)
    sources = []
    for fn in (up, down):
        try:
            sources.append(inspect.getsource(fn) if fn is not None else "None")
        except (OSError, TypeError):
            # No source to read (built at run time): the code object is all there is.
            code = getattr(fn, "__code__", None)
            sources.append(repr((code.co_code, code.co_consts, code.co_names)) if code else "?")
    return _tree_checksum("\n".join(_dedent(s) for s in sources))


_file_cache: dict[tuple[str, int, int], str] = {}


def _file_checksum(path: str) -> str:
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    cached = _file_cache.get(key)
    if cached is None:
        with open(path, encoding="utf-8") as f:
            cached = _file_cache[key] = _tree_checksum(f.read())
    return cached


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
        body = getattr(node, "body", None)
        for name in node._fields:
            value = getattr(node, name, None)
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
        digest.update(f"{type(node).__name__}:{node!r}".encode())


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
