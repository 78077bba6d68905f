"""The registry: collecting migrations, validating them, loading the migrator, linting files."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from rung.errors import ConfigError, RegistryError
from rung.migration import NAME_FORMAT, Migration
from rung.registry import lint_folder, load_migrator, migrations_of, validate

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


async def _up(conn: AsyncConnection) -> None:
    return None


async def _down(conn: AsyncConnection) -> None:
    return None


def _sync(conn: AsyncConnection) -> None:
    return None


A = "m20260101_000001_create_todos"
B = "m20260102_000001_add_index"
C = "m20260103_000001_drop_column"


def mig(name: str, up: object = _up, down: object = _down) -> Migration:
    """A migration; ``up`` and ``down`` may be anything, to build broken registries."""
    return Migration(name, cast(Any, up), cast(Any, down))


def problem(registry: object) -> RegistryError:
    with pytest.raises(RegistryError) as err:
        migrations_of(registry)  # type: ignore[arg-type]  # wrong on purpose
    assert err.value.exit_code == 1
    return err.value


# --------------------------------------------------------------------------- collecting


class Migrator:
    @staticmethod
    def migrations() -> tuple[Migration, ...]:
        return (mig(A), mig(B))


def test_a_class_with_migrations() -> None:
    assert migrations_of(Migrator) == (mig(A), mig(B))
    assert migrations_of(Migrator()) == (mig(A), mig(B))


def test_a_plain_list_or_tuple() -> None:
    assert migrations_of([mig(A), mig(B, down=None)]) == (mig(A), mig(B, down=None))
    assert migrations_of((mig(A),)) == (mig(A),)
    assert migrations_of([]) == ()


def test_irreversible_migration_is_valid() -> None:
    assert validate([mig(A, down=None)]) == []


def test_registry_that_is_neither_a_class_nor_a_sequence() -> None:
    err = problem(42)
    assert str(err) == (
        "registry 42 has no migrations() method and is not a sequence; "
        "give a class with a static migrations() returning a tuple of Migration"
    )
    assert err.problems == (str(err),)
    assert problem("m20260101_000001_a").message.startswith("registry 'm20260101_000001_a' has")


@pytest.mark.parametrize(
    "returned",
    [None, 3, {mig(A)}, {A: mig(A)}, "m20260101_000001_a", iter([mig(A)])],
    ids=["None", "int", "set", "dict", "str", "iterator"],
)
def test_migrations_returning_a_non_sequence(returned: object) -> None:
    class Bad:
        @staticmethod
        def migrations() -> object:
            return returned

    err = problem(Bad)
    assert str(err) == (
        f"migrations() of {Bad!r} returned {type(returned).__name__}, not a sequence; "
        "return a tuple of Migration"
    )


# --------------------------------------------------------------------------- validating


@pytest.mark.parametrize(
    "name",
    [
        "create_todos",
        "m2026010_000001_x",  # seven digits of date
        "m20260101_00001_x",  # five digits of number
        "m20260101_000001_",  # no slug
        "m20260101_000001_Create",  # upper case
        "m20260101_000001_add-index",  # dash
        "20260101_000001_x",  # no m
        " m20260101_000001_x",
    ],
)
def test_bad_names(name: str) -> None:
    err = problem([mig(name)])
    assert str(err) == f"migration name {name!r} is not {NAME_FORMAT}; rename the module"
    assert NAME_FORMAT == "m{YYYYMMDD}_{NNNNNN}_{slug}, slug in [a-z0-9_]"


@pytest.mark.parametrize(
    "name", ["m20260230_000001_x", "m20261301_000001_x", "m00000101_000001_x", "m20250229_000001_x"]
)
def test_names_whose_date_is_not_a_real_date(name: str) -> None:
    err = problem([mig(name)])
    assert str(err) == (
        f"migration name {name!r} has no real date in it; use today's date, YYYYMMDD"
    )


def test_leap_day_is_a_real_date() -> None:
    assert validate([mig("m20240229_000001_leap")]) == []


def test_empty_name() -> None:
    err = problem([mig(A), mig("")])
    assert str(err) == f"registry entry 2 has an empty name; name it {NAME_FORMAT}"


def test_duplicate() -> None:
    err = problem([mig(A), mig(B), mig(A)])
    assert str(err) == (
        f"migration {A} is registered twice; remove the duplicate from the registry"
    )


def test_up_missing() -> None:
    err = problem([mig(A, up=None)])
    assert str(err) == f"migration {A} has no up; define async def up(conn)"


@pytest.mark.parametrize("attr", ["up", "down"])
def test_sync_function(attr: str) -> None:
    err = problem([mig(A, **{attr: _sync})])
    assert str(err) == (
        f"{attr} of migration {A} is a plain function; define it as async def {attr}(conn)"
    )


@pytest.mark.parametrize("attr", ["up", "down"])
def test_not_callable(attr: str) -> None:
    err = problem([mig(A, **{attr: "CREATE TABLE t (a INT)"})])
    assert str(err) == (
        f"{attr} of migration {A} is not callable (str); define it as async def {attr}(conn)"
    )


def test_entry_that_is_not_a_migration() -> None:
    err = problem([mig(A), _up])
    assert str(err) == (
        "registry entry 2 is function, not a Migration; wrap it: Migration.from_module(module)"
    )


def test_every_problem_is_reported_at_once() -> None:
    registry = [mig(A), "oops", mig("m20261332_000001_x"), mig(A, up=_sync), mig(B, down=3)]
    expected = (
        "registry entry 2 is str, not a Migration; wrap it: Migration.from_module(module)",
        "migration name 'm20261332_000001_x' has no real date in it; use today's date, YYYYMMDD",
        f"migration {A} is registered twice; remove the duplicate from the registry",
        f"up of migration {A} is a plain function; define it as async def up(conn)",
        f"down of migration {B} is not callable (int); define it as async def down(conn)",
    )
    assert tuple(validate(registry)) == expected
    err = problem(registry)
    assert err.problems == expected
    assert str(err) == expected[0] + " (and 4 more)"


# --------------------------------------------------------------------------- loading


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable, uniquely named, empty package."""
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / f"reg_{uuid.uuid4().hex[:10]}"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    return folder


def test_load_migrator(package: Path) -> None:
    (package / "lib.py").write_text("class Migrator:\n    pass\n")
    loaded = load_migrator(f"{package.name}.lib:Migrator")
    assert loaded is sys.modules[f"{package.name}.lib"].Migrator


@pytest.mark.parametrize("spec", ["server.migration.src.lib", "pkg.lib:", ":Migrator", ""])
def test_load_migrator_bad_spec(spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_migrator(spec)
    assert err.value.exit_code == 2
    assert str(err.value) == (
        f"migrator {spec!r} is not of the form 'package.module:Attribute'; "
        "set --migrator, RUNG_MIGRATOR or [tool.rung] migrator"
    )


def test_load_migrator_module_that_fails_to_import(package: Path) -> None:
    """Found but broken (its code, or a migration's, raises): a problem in the code, exit 1;
    only a migrator that cannot be found is a configuration error."""
    (package / "lib.py").write_text("raise RuntimeError('no database configured')\n")
    module = f"{package.name}.lib"
    with pytest.raises(RegistryError) as err:
        load_migrator(f"{module}:Migrator")
    assert err.value.exit_code == 1
    assert str(err.value) == (
        f"migrator module {module!r} was found but raised while importing (RuntimeError: no "
        "database configured); fix that code (run with -v for the traceback)"
    )
    assert isinstance(err.value.__cause__, RuntimeError)
    (package / "lib.py").write_text("from . import m20260101_000001_broken\n")
    (package / "m20260101_000001_broken.py").write_text("async def up(conn)\n")
    sys.modules.pop(module, None)
    with pytest.raises(RegistryError, match=r"SyntaxError: .*m20260101_000001_broken\.py"):
        load_migrator(f"{module}:Migrator")
    (package / "lib.py").write_text("import no_such_dependency\n")
    sys.modules.pop(module, None)
    with pytest.raises(RegistryError, match="No module named 'no_such_dependency'"):
        load_migrator(f"{module}:Migrator")


def test_load_migrator_module_that_does_not_exist(package: Path) -> None:
    module = f"{package.name}.nowhere"
    with pytest.raises(ConfigError) as err:
        load_migrator(f"{module}:Migrator")
    assert err.value.exit_code == 2
    assert str(err.value).startswith(
        f"migrator module {module!r} does not import (ModuleNotFoundError: "
    )


def test_load_migrator_missing_attribute(package: Path) -> None:
    (package / "lib.py").write_text("class Other:\n    pass\n")
    module = f"{package.name}.lib"
    with pytest.raises(ConfigError) as err:
        load_migrator(f"{module}:Migrator")
    assert err.value.exit_code == 2
    assert str(err.value) == (
        f"module {module!r} has no attribute 'Migrator'; "
        "point --migrator at the class holding migrations()"
    )


# --------------------------------------------------------------------------- linting


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_text("")


def test_lint_clean_folder(tmp_path: Path) -> None:
    touch(tmp_path, f"{A}.py", f"{B}.py", "__init__.py", "lib.py", "runner.py", "m_notes.py")
    assert lint_folder([mig(A), mig(B)], tmp_path) == []


def test_lint_unregistered_files_in_name_order(tmp_path: Path) -> None:
    extra = [f"m202602{day:02d}_000001_extra" for day in (9, 3, 7, 1, 5, 8, 2)]
    touch(tmp_path, f"{A}.py", *(f"{name}.py" for name in extra))
    assert lint_folder([mig(A)], tmp_path) == [
        f"file {name}.py is not registered; add it to migrations() in lib.py or delete it"
        for name in sorted(extra)
    ]


def test_lint_registered_without_file(tmp_path: Path) -> None:
    touch(tmp_path, f"{A}.py")
    assert lint_folder([mig(A), mig(B)], tmp_path) == [
        f"migration {B} is registered but {tmp_path / B}.py does not exist; "
        "restore the file or remove the migration from migrations() in lib.py"
    ]


def test_lint_order_disagreeing_with_dates(tmp_path: Path) -> None:
    touch(tmp_path, f"{A}.py", f"{B}.py", f"{C}.py")
    assert lint_folder([mig(A), mig(C), mig(B)], tmp_path) == [
        f"migration {B} is registered after {C} but its name sorts before it; "
        "keep the registry in the order of the names' dates"
    ]


def test_lint_reports_all_kinds_together(tmp_path: Path) -> None:
    touch(tmp_path, f"{B}.py", f"{C}.py")
    problems = lint_folder([mig(B), mig(A)], tmp_path)
    assert problems == [
        f"file {C}.py is not registered; add it to migrations() in lib.py or delete it",
        f"migration {A} is registered but {tmp_path / A}.py does not exist; "
        "restore the file or remove the migration from migrations() in lib.py",
        f"migration {A} is registered after {B} but its name sorts before it; "
        "keep the registry in the order of the names' dates",
    ]
