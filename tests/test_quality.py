"""The code stays as the house rules say: checked before the suite runs, a tidy API."""

from __future__ import annotations

import importlib
import pkgutil
import types
from pathlib import Path

import rung

ROOT = Path(__file__).resolve().parent.parent


def test_ci_checks_style_types_and_layers_before_the_tests() -> None:
    """ruff, mypy (strict) and the layers contract run in CI (and in pre-commit), before
    the suite, rather than inside it: the suite stays fast, and a check that fails is
    named by CI itself."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    checks = [".venv/bin/ruff check .", ".venv/bin/ruff format --check .", ".venv/bin/mypy"]
    checks.append(".venv/bin/lint-imports")
    assert all(c in ci for c in checks)
    assert max(ci.index(c) for c in checks) < len(ci) - 1
    hooks = (ROOT / ".pre-commit-config.yaml").read_text()
    assert all(tool in hooks for tool in ("ruff check", "ruff format", "mypy", "lint-imports"))


def test_public_api_is_short_sorted_and_real() -> None:
    assert rung.__all__ == sorted(rung.__all__)
    assert len(rung.__all__) <= 18
    for name in rung.__all__:
        assert getattr(rung, name) is not None, name


def test_no_submodule_hides_a_public_name() -> None:
    """Importing ``rung.x`` sets ``rung.x`` to the module: no module may share a public
    function's name (``rung.verify`` must stay the function after ``rung.verifying`` loads)."""
    for found in pkgutil.walk_packages(rung.__path__, "rung."):
        if not found.name.endswith("__main__"):
            importlib.import_module(found.name)
    for name in rung.__all__:
        value = getattr(rung, name)
        assert not isinstance(value, types.ModuleType) or name == "errors", name
    assert callable(rung.verify) and callable(rung.drift)


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- test-command -->", 1)[1].split("```")[1]
    command = block.removeprefix("sh").strip()
    assert "pytest" in command
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == command
