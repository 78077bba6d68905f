"""RESULTS.md: the measured cells as Markdown tables, with the targets rung is held to."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from benchlib.measure import Cell, Results

TOOL_ORDER = ("rung", "rung-api", "alembic", "alembic-async", "yoyo", "raw-sa")
SCENARIO_ORDER = ("apply", "rollback", "noop", "status", "verify", "drift", "help")
DB_ORDER = ("sqlite", "postgresql", "mariadb")
# scenario: the most rung may cost, as a multiple of the floor (the targets)
TARGETS = {"apply": 1.15, "rollback": 1.15, "noop": 1.3, "status": 1.3, "help": 1.5}
BIG_TARGET = 1.5
BIG_N = 10_000
SCENARIO_TITLES = {
    "apply": "apply all N (empty database)",
    "rollback": "roll back all N",
    "noop": "no-op `up` (all applied)",
    "status": "`status` (all applied)",
    "verify": "`verify`",
    "drift": "`drift --replay`",
    "help": "`--help` cold start",
}


ANALYSIS = Path(__file__).resolve().parent.parent / "analysis.md"


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _cell_text(c: Cell) -> str:
    return f"**{c.ratio:.2f}x** ({_ms(c.tool_ms)})"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _target(c: Cell) -> float | None:
    if c.n >= BIG_N and c.scenario in ("noop", "status"):
        return BIG_TARGET
    return TARGETS.get(c.scenario)


def _rung_cells(results: Results) -> list[Cell]:
    """rung's own cells: the CLI where it was measured, else the API process."""
    cli = {(c.db, c.scenario, c.n) for c in results.cells.values() if c.tool == "rung"}
    return [
        c
        for c in results.cells.values()
        if c.tool == "rung" or (c.tool == "rung-api" and (c.db, c.scenario, c.n) not in cli)
    ]


def _beyond(c: Cell, sa: Cell | None) -> str:
    return f"{c.ratio / sa.ratio:.2f}x" if sa is not None else "—"


def _order(c: Cell) -> tuple[int, int, int]:
    db = DB_ORDER.index(c.db) if c.db in DB_ORDER else -1
    return db, SCENARIO_ORDER.index(c.scenario), c.n


def render(results: Results) -> str:
    meta = results.meta
    out: list[str] = ["# rung benchmark results", ""]
    out.append(
        "Regenerate with `python benchmarks/run.py` (about 30 minutes on this machine); "
        "the method is in [README.md](README.md). Runs that produced these numbers:"
    )
    out.append("")
    out += [f"- {r['date']}: `{r['command']}`" for r in meta.get("runs", [])]
    m = meta.get("machine", {})
    out += [
        "",
        f"Machine: {m.get('cores')} cores ({m.get('cpu')}), {m.get('system')}, "
        f"Python {m.get('python')}; shared with other work, hence pairs and medians.",
        "",
    ]
    if meta.get("rung_revision"):
        out += [f"rung measured as: {meta['rung_revision']}.", ""]
    servers = meta.get("servers", {})
    if servers:
        out.append("Databases: " + "; ".join(f"{k}: {v}" for k, v in servers.items()) + ".")
    versions = meta.get("versions", {})
    if versions:
        out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".")
    out.append("")

    rung = sorted(_rung_cells(results), key=_order)
    out += [
        "## rung against its targets",
        "",
        "Ratio = median over pairs of (rung's time / the floor's time in the run right "
        "after it). The floor is one Python process sending the same statements through "
        'the bare async driver (asyncpg, asyncmy, aiosqlite). "vs raw-sa" divides rung\'s '
        "ratio by raw-sa's (the floor's statements through SQLAlchemy's async engine, "
        "measured in its own pairs): what rung costs beyond SQLAlchemy itself.",
        "",
    ]
    raw_sa = {(c.db, c.scenario, c.n): c for c in results.cells.values() if c.tool == "raw-sa"}
    rows = []
    for c in rung:
        target = _target(c)
        if target is None:
            continue
        verdict = "met" if c.ratio <= target else "**missed**"
        n = "—" if c.scenario == "help" else f"{c.n:,}"
        rows.append(
            [
                c.db,
                SCENARIO_TITLES[c.scenario],
                n,
                c.tool,
                f"{c.ratio:.2f}x",
                f"≤ {target}x",
                verdict,
                _ms(c.tool_ms),
                _ms(c.reference_ms),
                _beyond(c, raw_sa.get((c.db, c.scenario, c.n))),
            ]
        )
    header = ["database", "scenario", "N", "as", "ratio", "target", "", "rung", "floor"]
    out += _table([*header, "vs raw-sa"], rows)
    out.append("")
    if ANALYSIS.exists():  # written by a person, from profiles: what the misses are made of
        out += [ANALYSIS.read_text().rstrip(), ""]

    for db in DB_ORDER:
        nets = ("verify", "drift")
        cells = [c for c in results.cells.values() if c.db == db and c.scenario not in nets]
        if not cells:
            continue
        tools = [t for t in TOOL_ORDER if any(c.tool == t for c in cells)]
        out += [
            f"## {db}: every tool against the floor",
            "",
            "Each entry: median ratio to the floor, then the tool's median time. "
            "`raw-sa` is the floor's statements sent through SQLAlchemy's async engine.",
            "",
        ]
        rows = []
        keys = sorted(
            {(c.scenario, c.n) for c in cells}, key=lambda k: (SCENARIO_ORDER.index(k[0]), k[1])
        )
        for scenario, n in keys:
            row_cells = {c.tool: c for c in cells if (c.scenario, c.n) == (scenario, n)}
            floor = min(row_cells.values(), key=lambda c: len(c.reference_s))
            row = [SCENARIO_TITLES[scenario], f"{n:,}", _ms(floor.reference_ms)]
            for t in tools:
                c = row_cells.get(t)
                row.append(_cell_text(c) if c else "—")
            pairs = sorted({len(c.tool_s) for c in row_cells.values()})
            row.append("/".join(str(p) for p in pairs))
            rows.append(row)
        out += _table(["scenario", "N", "floor", *tools, "pairs"], rows)
        notes = sorted({c.note for c in cells if c.note})
        out += [""] + [f"- {note}" for note in notes] + ([""] if notes else [])

    helps = [c for c in results.cells.values() if c.scenario == "help"]
    if helps:
        out += [
            "## `--help` cold start",
            "",
            'Against `python -c "import argparse"` (the floor of any argparse CLI).',
            "",
        ]
        rows = [
            [c.tool, f"**{c.ratio:.2f}x**", _ms(c.tool_ms), _ms(c.reference_ms), str(len(c.tool_s))]
            for c in sorted(helps, key=lambda c: TOOL_ORDER.index(c.tool))
        ]
        out += [*_table(["tool", "ratio", "tool", "floor", "pairs"], rows), ""]

    if results.inprocess:
        out += [
            "## In-process no-op `upgrade` (API, engine already connected)",
            "",
            "`rung.upgrade(engine, Migrator)` with every migration applied, median of "
            "repeated calls after a first one, next to one `SELECT * FROM rung_migrations` "
            "on the same engine. Counted during one steady call: statements SQLAlchemy "
            "executed, transaction events, requests written to the database socket, and "
            "files opened or stat-ed (the first call, which computes the checksums, in "
            "brackets).",
            "",
        ]
        rows = []
        for db in DB_ORDER:
            r = results.inprocess.get(db)
            if not r:
                continue
            counts, first = r["counts"], r["first_counts"]
            tx = sum(v for k, v in counts.items() if k.startswith("transaction"))
            files = (
                f"{counts.get('open (migration files)', 0)} opens, "
                f"{counts.get('stat (migration files)', 0)} stats "
                f"[{first.get('open (migration files)', 0)} opens, "
                f"{first.get('stat (migration files)', 0)} stats]"
            )
            rows.append(
                [
                    db,
                    f"{r['n']:,}",
                    _ms(r["upgrade_ms"]),
                    _ms(r["first_upgrade_ms"]),
                    _ms(r["select_with_checkout_ms"]),
                    f"{r['upgrade_ms'] / r['select_with_checkout_ms']:.1f}x",
                    str(counts.get("statements", 0)),
                    str(tx),
                    str(counts.get("socket writes", "—")),
                    files,
                ]
            )
        out += _table(
            [
                "database",
                "applied",
                "no-op upgrade",
                "first call",
                "SELECT",
                "ratio",
                "statements",
                "tx events",
                "socket writes",
                "migration files",
            ],
            rows,
        )
        out.append("")
        for db in DB_ORDER:
            r = results.inprocess.get(db)
            if r:
                out.append(
                    f"- {db}, one steady no-op upgrade: "
                    + " → ".join(f"`{s[:60]}`" for s in r["statements"])
                )
        out.append("")

    big = [c for c in rung if c.n >= BIG_N]
    if big:
        out += [
            "## Growth from 1,000 to 10,000 migrations (rung)",
            "",
            "Time at 10,000 over time at 1,000 (linear growth of the whole process would "
            "be at most 10x; a fixed start-up cost makes it less).",
            "",
        ]
        rows = []
        for c in sorted(big, key=_order):
            small = next(
                (
                    s
                    for s in rung
                    if (s.db, s.scenario, s.tool) == (c.db, c.scenario, c.tool) and s.n == 1000
                ),
                None,
            )
            if small:
                rows.append(
                    [
                        c.db,
                        SCENARIO_TITLES[c.scenario],
                        c.tool,
                        _ms(small.tool_ms),
                        _ms(c.tool_ms),
                        f"{c.tool_ms / small.tool_ms:.1f}x",
                        f"{(c.tool_ms - small.tool_ms) / 9000:.2f} ms",
                    ]
                )
        header = ["database", "scenario", "as", "1,000", "10,000", "growth", "per extra migration"]
        out += [*_table(header, rows), ""]

    for net, title in (("verify", "`rung verify`"), ("drift", "`rung drift --replay`")):
        found = [c for c in results.cells.values() if c.scenario == net]
        out += [f"## {title} against a plain `rung up`", ""]
        if found:
            rows = [
                [c.db, f"{c.n:,}", f"{c.ratio:.2f}x", _ms(c.tool_ms), _ms(c.reference_ms)]
                for c in sorted(found, key=_order)
            ]
            out += _table(["database", "N", f"{net} / up", net, "up"], rows)
        else:
            out.append(f"Not measured in this run: `--scenario {net}`.")
        out.append("")

    if results.skipped:
        out += ["## Not measured", ""]
        out += [f"- `{k}`: {v}" for k, v in sorted(results.skipped.items())]
        out.append("")
    return "\n".join(out)
