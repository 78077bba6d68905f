"""Configuration: command-line flags > environment > ``[tool.rung]`` in pyproject.toml > defaults.

Precedence and the checks of each value's form, nothing more: what a URL means is
``rung.connection``'s business. The project root (the folder holding pyproject.toml) is
where a relative file path written in pyproject.toml (or the default ``app.db``) is
anchored, and what goes on ``sys.path`` so the migrator imports. Standard library only:
``rung --help`` and ``rung new`` read their configuration without SQLAlchemy.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rung.errors import ConfigError
from rung.passwords import mask

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

DEFAULT_URL = "sqlite+aiosqlite:///./app.db"
DEFAULT_MIGRATOR = "server.migration.src.lib:Migrator"
DEFAULT_TABLE = "rung_migrations"  # history.DEFAULT_TABLE, not imported: it needs SQLAlchemy
DEFAULT_LOCK_TIMEOUT = 60.0
DEFAULT_LOCK_LEASE = 30.0
POOLERS = ("none", "transaction")

# setting: environment variable
ENVIRONMENT = {
    "url": "DATABASE_URL",
    "migrator": "RUNG_MIGRATOR",
    "table": "RUNG_TABLE",
    "lock_timeout": "RUNG_LOCK_TIMEOUT",
    "lock_lease": "RUNG_LOCK_LEASE",
    "pooler": "RUNG_POOLER",
    "scratch_url": "RUNG_SCRATCH_URL",
}
PYPROJECT_KEYS = (
    "url",
    "migrator",
    "table",
    "lock_timeout",
    "lock_lease",
    "per_migration",
    "pooler",
    "scratch_url",
    "exclude",
    "numbering",
    "fleet",  # a table of its own, read by rung.tenants
)
NUMBERINGS = ("sequence", "time")  # how 'rung new' numbers a migration within its day


@dataclass(frozen=True)
class Config:
    root: Path
    url: str = DEFAULT_URL
    migrator: str = DEFAULT_MIGRATOR
    table: str = DEFAULT_TABLE
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    lock_lease: float = DEFAULT_LOCK_LEASE
    per_migration: bool = False
    pooler: bool = False  # a transaction pooler (PgBouncer) sits between rung and the server
    scratch_url: str | None = None
    exclude: tuple[str, ...] = ()
    numbering: str = "sequence"
    wait: float = 0.0
    url_root: Path | None = None  # where a relative file path in the URL is anchored
    sources: Mapping[str, str] = field(default_factory=dict)  # setting: where it came from
    warnings: tuple[str, ...] = ()

    @property
    def shown_url(self) -> str:
        return mask(self.url, self.url)


def load(flags: Mapping[str, Any], environ: Mapping[str, str], cwd: Path) -> Config:
    """The configuration for a run from ``cwd``; ``flags`` holds only the options given."""
    root = find_root(cwd)
    pyproject = root / "pyproject.toml"
    section = read_section(pyproject)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in (*PYPROJECT_KEYS, "wait"):
        if key in flags:
            values[key], sources[key] = flags[key], f"--{key.replace('_', '-')}"
        elif key in ENVIRONMENT and environ.get(ENVIRONMENT[key]):
            values[key], sources[key] = environ[ENVIRONMENT[key]], ENVIRONMENT[key]
        elif key in section and key != "wait":
            values[key], sources[key] = section[key], f"[tool.rung] {key} in {pyproject}"
    unknown = sorted(set(section) - set(PYPROJECT_KEYS))
    warnings = tuple(
        f"unknown key {key!r} in [tool.rung] of {pyproject} is ignored; "
        f"known keys: {', '.join(PYPROJECT_KEYS)}"
        for key in unknown
    )
    from_file = "url" not in sources or sources["url"].startswith("[tool.rung]")
    return Config(
        root=root,
        url=_text(values, sources, "url", DEFAULT_URL),
        migrator=_text(values, sources, "migrator", DEFAULT_MIGRATOR),
        table=_text(values, sources, "table", DEFAULT_TABLE),
        lock_timeout=_seconds(values, sources, "lock_timeout", DEFAULT_LOCK_TIMEOUT),
        lock_lease=_seconds(values, sources, "lock_lease", DEFAULT_LOCK_LEASE, least=1.0),
        per_migration=_flag(values, sources, "per_migration"),
        pooler=_choice(values, sources, "pooler", POOLERS) == "transaction",
        scratch_url=values.get("scratch_url") or None,
        exclude=_patterns(values, sources, "exclude"),
        numbering=_choice(values, sources, "numbering", NUMBERINGS),
        wait=_seconds(values, sources, "wait", 0.0),
        url_root=root if from_file else None,
        sources=sources,
        warnings=warnings,
    )


def find_root(cwd: Path) -> Path:
    """The nearest folder from ``cwd`` upwards holding a pyproject.toml, else ``cwd``."""
    for folder in (cwd, *cwd.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return cwd


def read_section(pyproject: Path) -> dict[str, Any]:
    """``[tool.rung]`` of ``pyproject`` ({} when there is no file or no section)."""
    try:
        with pyproject.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject} is not valid TOML ({exc}); fix the file") from None
    section = data.get("tool", {}).get("rung", {})
    if not isinstance(section, dict):
        raise ConfigError(f"[tool.rung] in {pyproject} must be a table; fix the file")
    return section


def add_to_path(root: Path) -> None:
    """Make the project's packages importable, as if run with PYTHONPATH=root."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def _text(values: dict[str, Any], sources: dict[str, str], key: str, default: str) -> str:
    value = values.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} from {sources.get(key, 'defaults')} must be a non-empty string")
    return value.strip()


def _seconds(
    values: Mapping[str, Any],
    sources: Mapping[str, str],
    key: str,
    default: float,
    *,
    least: float = 0.0,
) -> float:
    value = values.get(key, default)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not least <= seconds < 1e9 or isinstance(value, bool):
        raise ConfigError(
            f"{key} from {sources.get(key, 'defaults')} must be a number of seconds"
            f"{f' (at least {least:g})' if least else ''}, not {value!r}"
        )
    return seconds


def _flag(values: dict[str, Any], sources: dict[str, str], key: str) -> bool:
    value = values.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} from {sources[key]} must be true or false, not {value!r}")
    return value


def _choice(
    values: dict[str, Any], sources: dict[str, str], key: str, choices: tuple[str, ...]
) -> str:
    value = values.get(key, choices[0])
    if value not in choices:
        raise ConfigError(
            f"{key} from {sources[key]} must be one of {', '.join(choices)}, not {value!r}"
        )
    return str(value)


def _patterns(values: dict[str, Any], sources: dict[str, str], key: str) -> tuple[str, ...]:
    value = values.get(key, ())
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} from {sources[key]} must be a list of strings, not {value!r}")
    return tuple(value)
