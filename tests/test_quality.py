"""The code stays as the house rules say: typed (mypy strict), linted (ruff), a tidy API."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import rung

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_mypy_strict() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff() -> None:
    check = run(sys.executable, "-m", "ruff", "check", ".")
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


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
