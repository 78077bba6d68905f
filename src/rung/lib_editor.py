"""``rung new``'s edit of lib.py: one more migration at the end of the registry.

It finds the registry's tuple (or list) and the migration imports with ``ast``, inserts
text at those positions so that the rest of the file keeps its exact formatting (one import
per line or names in brackets, ``Migration.from_module(m)`` or ``Migration(name=...)``,
trailing commas, tabs, ``\r\n``), and checks that the result parses to one more migration.
A shape it does not understand raises ``Unsafe``, never a guess. Standard library only.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

MAX_LINE = 88  # lib.py lines grown past this are laid out one entry per line


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
