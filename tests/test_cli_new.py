"""``rung init`` and ``rung new`` (in this process, as a new one would run them): the template
layout, never overwriting, and new migrations registered in lib.py files of many shapes (or
the lines to add printed)."""

from __future__ import annotations

import re
import textwrap
from datetime import date
from pathlib import Path

import pytest

from cli_support import cli, script

REPOSITORY = Path(__file__).resolve().parent.parent
TODAY = date.today().strftime("%Y%m%d")
NEW = f"m{TODAY}_000001_add_things"


def test_init_writes_the_template_layout(tmp_path: Path) -> None:
    result = cli("init", cwd=tmp_path)
    assert result.code == 0, result.text
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert made == [
        "pyproject.toml",
        "scripts/init_db.py",
        "server/__init__.py",
        "server/migration/__init__.py",
        "server/migration/src/__init__.py",
        "server/migration/src/lib.py",
        "server/migration/src/runner.py",
    ]
    assert "created server/migration/src/lib.py" in result.out
    # The repository carries the same layout as its working example.
    for same in ("server/migration/src/runner.py", "scripts/init_db.py"):
        assert (tmp_path / same).read_text() == (REPOSITORY / same).read_text(), same
    assert "return ()" in (tmp_path / "server/migration/src/lib.py").read_text()
    pyproject = (tmp_path / "pyproject.toml").read_text()
    assert 'migrator = "server.migration.src.lib:Migrator"' in pyproject

    check = cli("check", cwd=tmp_path)
    assert check.code == 0 and "0 migrations" in check.out
    again = cli("init", cwd=tmp_path)
    assert again.code == 1 and "never overwrites" in again.err


def test_init_extends_a_pyproject_and_keeps_existing_files(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "app"\n')
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "app.py").write_text("APP = 1\n")
    result = cli("init", cwd=tmp_path)
    assert result.code == 0 and "extended pyproject.toml" in result.out
    assert pyproject.read_text().startswith('[project]\nname = "app"\n\n[tool.rung]\n')
    assert not (tmp_path / "server/__init__.py").exists()  # not ours: left a namespace package
    assert (tmp_path / "server/app.py").read_text() == "APP = 1\n"

    other = tmp_path / "other"
    (other / "server/migration/src").mkdir(parents=True)
    (other / "server/migration/src/lib.py").write_text("# mine\n")
    (other / "pyproject.toml").write_text("[tool.rung]\nurl = 'sqlite:///x.db'\n")
    refused = cli("init", str(other), cwd=tmp_path)
    assert refused.code == 1 and "lib.py already exists" in refused.err
    assert (other / "server/migration/src/lib.py").read_text() == "# mine\n"
    assert sorted(p.name for p in other.rglob("*") if p.is_file()) == ["lib.py", "pyproject.toml"]

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "pyproject.toml").write_text("[tool.rung]\nurl = 'sqlite:///x.db'\n")
    result = cli("init", str(kept), cwd=tmp_path)
    assert result.code == 0 and "kept pyproject.toml" in result.out
    assert (kept / "pyproject.toml").read_text() == "[tool.rung]\nurl = 'sqlite:///x.db'\n"


def test_init_project_works_end_to_end(tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).code == 0
    new = cli("new", "create notes", cwd=tmp_path / "server")  # from a subfolder too
    assert new.code == 0, new.text
    path = tmp_path / new.out.splitlines()[0]
    body = path.read_text()
    assert 'raise NotImplementedError("write up() in' in body
    path.write_text(
        body.replace(
            '    # e.g. await conn.execute(text("ALTER TABLE todos ADD COLUMN priority INTEGER"))\n'
            f'    raise NotImplementedError("write up() in {path.stem}.py")',
            '    await conn.execute(text("CREATE TABLE notes (id INTEGER)"))',
        )
    )
    boot = script(Path("scripts/init_db.py"), cwd=tmp_path)
    assert boot.code == 0 and f"applied {path.stem}" in boot.out, boot.text
    status = cli("status", "--json", cwd=tmp_path)
    assert status.json()["counts"] == {"applied": 1}
    assert (tmp_path / "app.db").exists()  # [tool.rung] url: ./app.db next to pyproject.toml
    # From another folder: the same database, already up to date.
    again = script(tmp_path / "scripts/init_db.py", cwd=tmp_path / "server")
    assert again.code == 0 and again.out == "database is up to date\n", again.text
    assert not (tmp_path / "server/app.db").exists()


def test_new_names_and_numbers(tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).code == 0
    src = tmp_path / "server/migration/src"
    cases = {
        "Add Priority-Column!": "add_priority_column",
        "AddPriorityColumn": "add_priority_column",
        "Café crème": "cafe_creme",
        "drop_x.py": "drop_x",
        "  spaced   out ": "spaced_out",
    }
    for number, (given, slug) in enumerate(cases.items(), start=1):
        result = cli("new", given, cwd=tmp_path)
        expected = f"server/migration/src/m{TODAY}_{number:06d}_{slug}.py"
        assert result.code == 0 and result.out.splitlines()[0] == expected, result.text
        assert "registered at the end of server/migration/src/lib.py" in result.out
    lib = (src / "lib.py").read_text()
    assert lib.count(f"from server.migration.src import m{TODAY}_") == len(cases)
    check = cli("check", cwd=tmp_path)
    assert check.code == 0 and "5 migrations" in check.out, check.text


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", ".hidden", "", "   ", "---", "x" * 300])
def test_new_refuses_bad_names(tmp_path: Path, name: str) -> None:
    assert cli("init", cwd=tmp_path).code == 0
    lib = (tmp_path / "server/migration/src/lib.py").read_text()
    result = cli("new", name, cwd=tmp_path)
    assert result.code == 2 and result.err.startswith("rung: error: ")
    assert "Traceback" not in result.err
    assert not list((tmp_path / "server").rglob("m*.py"))
    assert (tmp_path / "server/migration/src/lib.py").read_text() == lib


def test_new_without_a_registry(tmp_path: Path) -> None:
    result = cli("new", "x", cwd=tmp_path)
    assert result.code == 1 and "run 'rung init' first" in result.err


# Shapes of lib.py: (source, migrator attribute, lib.py expected after `rung new add_things`).
SHAPES = {
    "multi-line, trailing comma": (
        """\
        from rung import Migration

        from server.migration.src import m20260101_000001_a


        class Migrator:
            @staticmethod
            def migrations() -> tuple[Migration, ...]:
                return (
                    Migration.from_module(m20260101_000001_a),
                )
        """,
        f"""\
        from rung import Migration

        from server.migration.src import m20260101_000001_a
        from server.migration.src import {NEW}


        class Migrator:
            @staticmethod
            def migrations() -> tuple[Migration, ...]:
                return (
                    Migration.from_module(m20260101_000001_a),
                    Migration.from_module({NEW}),
                )
        """,
    ),
    "no trailing comma, a comment": (
        """\
        from rung import Migration

        from server.migration.src import m20260101_000001_a  # the first
        from server.migration.src import m20260101_000002_b


        class Migrator:
            @staticmethod
            def migrations():
                return (
                    Migration.from_module(m20260101_000001_a),
                    Migration.from_module(m20260101_000002_b)  # tables
                )
        """,
        f"""\
        from rung import Migration

        from server.migration.src import m20260101_000001_a  # the first
        from server.migration.src import m20260101_000002_b
        from server.migration.src import {NEW}


        class Migrator:
            @staticmethod
            def migrations():
                return (
                    Migration.from_module(m20260101_000001_a),
                    Migration.from_module(m20260101_000002_b),  # tables
                    Migration.from_module({NEW})
                )
        """,
    ),
    "one line, grows past the width": (
        """\
        from rung import Migration

        from server.migration.src import m20260101_000001_a


        class Migrator:
            @staticmethod
            def migrations() -> tuple[Migration, ...]:
                return (Migration.from_module(m20260101_000001_a),)
        """,
        f"""\
        from rung import Migration

        from server.migration.src import m20260101_000001_a
        from server.migration.src import {NEW}


        class Migrator:
            @staticmethod
            def migrations() -> tuple[Migration, ...]:
                return (
                    Migration.from_module(m20260101_000001_a),
                    Migration.from_module({NEW}),
                )
        """,
    ),
    "explicit Migration(...), bracketed relative import": (
        """\
        from rung import Migration

        from . import (
            m20260101_000001_a,
        )


        class Migrator:
            @staticmethod
            def migrations() -> tuple[Migration, ...]:
                return (
                    Migration(name="m20260101_000001_a",
                              up=m20260101_000001_a.up,
                              down=m20260101_000001_a.down),
                )
        """,
        f"""\
        from rung import Migration

        from . import (
            m20260101_000001_a,
            {NEW},
        )


        class Migrator:
            @staticmethod
            def migrations() -> tuple[Migration, ...]:
                return (
                    Migration(name="m20260101_000001_a",
                              up=m20260101_000001_a.up,
                              down=m20260101_000001_a.down),
                    Migration(name="{NEW}",
                              up={NEW}.up,
                              down={NEW}.down),
                )
        """,
    ),
    "a module-level list, several names per import": (
        """\
        import rung
        from server.migration.src import m20260101_000001_a, m20260101_000002_b

        MIGRATIONS = [
            rung.Migration.from_module(m20260101_000001_a),
            rung.Migration.from_module(m20260101_000002_b, transactional=False),
        ]
        """,
        f"""\
        import rung
        from server.migration.src import (
            m20260101_000001_a,
            m20260101_000002_b,
            {NEW},
        )

        MIGRATIONS = [
            rung.Migration.from_module(m20260101_000001_a),
            rung.Migration.from_module(m20260101_000002_b, transactional=False),
            rung.Migration.from_module({NEW}),
        ]
        """,
    ),
}


def _project(tmp_path: Path, lib: str, migrator: str) -> Path:
    assert cli("init", cwd=tmp_path).code == 0
    src = tmp_path / "server/migration/src"
    (src / "lib.py").write_text(textwrap.dedent(lib))
    for name in set(re.findall(r"m20260101_\d{6}_[ab]", lib)):
        (src / f"{name}.py").write_text("async def up(conn):\n    pass\n\n\ndown = None\n")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("lib:Migrator", f"lib:{migrator}"))
    return src


@pytest.mark.parametrize("shape", SHAPES)
def test_new_registers_in_lib_of_many_shapes(tmp_path: Path, shape: str) -> None:
    before, after = SHAPES[shape]
    migrator = "MIGRATIONS" if "MIGRATIONS" in before else "Migrator"
    src = _project(tmp_path, before, migrator)
    result = cli("new", "add things", cwd=tmp_path)
    assert result.code == 0 and "registered at the end" in result.out, result.text
    assert (src / "lib.py").read_text() == textwrap.dedent(after)
    if "from . import" not in before:  # a relative import needs the package: checked below
        check = cli("check", cwd=tmp_path)
        assert "is not registered" not in check.out and "does not exist" not in check.out


def test_new_keeps_crlf_and_tabs(tmp_path: Path) -> None:
    lib = (
        "from rung import Migration\r\n"
        "from server.migration.src import m20260101_000001_a\r\n"
        "\r\n"
        "class Migrator:\r\n"
        "\tdef migrations(self):\r\n"
        "\t\treturn (\r\n"
        "\t\t\tMigration.from_module(m20260101_000001_a),\r\n"
        "\t\t)\r\n"
    )
    src = _project(tmp_path, "", "Migrator")
    (src / "lib.py").write_bytes(lib.encode())
    assert cli("new", "add_things", cwd=tmp_path).code == 0
    edited = (src / "lib.py").read_bytes().decode()
    assert f"from server.migration.src import {NEW}\r\n" in edited
    assert f"\t\t\tMigration.from_module({NEW}),\r\n\t\t)\r\n" in edited
    assert "\n" not in edited.replace("\r\n", "")


@pytest.mark.parametrize(
    "lib",
    [
        "from rung import Migration\nfrom x import mods\n\nclass Migrator:\n"
        "    @staticmethod\n    def migrations():\n"
        "        return tuple(Migration.from_module(m) for m in mods)\n",
        "from rung import Migration\nfrom server.migration.src import m20260101_000001_a\n\n"
        "class Migrator:\n    @staticmethod\n    def migrations():\n"
        "        if True:\n            return ()\n"
        "        return (Migration.from_module(m20260101_000001_a),)\n",
        "from rung import Migration\nfrom server.migration.src import m20260101_000001_a as a\n\n"
        "class Migrator:\n    @staticmethod\n    def migrations():\n"
        "        return (Migration.from_module(a),)\n",
        "this is not python (\n",
    ],
    ids=["computed", "two returns", "aliased import", "syntax error"],
)
def test_new_prints_the_lines_when_lib_is_not_safe_to_edit(tmp_path: Path, lib: str) -> None:
    src = _project(tmp_path, "", "Migrator")
    (src / "lib.py").write_text(lib)
    result = cli("new", "add_things", cwd=tmp_path)
    assert result.code == 0 and (src / f"{NEW}.py").exists()
    assert "was not edited" in result.err and "add these lines yourself" in result.err
    assert f"from server.migration.src import {NEW}" in result.out
    assert f"Migration.from_module({NEW})," in result.out
    assert (src / "lib.py").read_text() == lib
