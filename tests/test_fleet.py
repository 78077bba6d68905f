"""Fleets (issue 14) on real databases: SQLite files, schemas of one PostgreSQL database,
MariaDB databases; a tenant broken on purpose, a tenant locked by another run, Ctrl-C
mid-fleet, and resuming. The ``rung`` command runs in this process (``cli_support``), but
for Ctrl-C, which needs a process of its own."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import rung
from cli_support import RUNG, Project, clean_environment, cli
from conftest import MYSQL_URL, create_database, drop_database, fresh_url, require
from rung.dialects import dialect_named
from rung.history import History
from rung.lock import Lease
from rung.tenants import Tenant, engine_for, own_history

# Records which tenant it ran for; fails for a tenant whose name has "broken" in it.
RECORD = """
await conn.execute(text("CREATE TABLE seen (tenant VARCHAR(200))"))
await conn.execute(text("INSERT INTO seen VALUES (:t)"), {"t": conn.info.get("rung_tenant")})
"""
BREAK = """
await conn.execute(text("CREATE TABLE later (id INTEGER)"))
if "broken" in conn.info.get("rung_tenant", ""):
    raise RuntimeError("this tenant is broken")
"""


def fleet_project(tmp_path: Path, url: str = "sqlite+aiosqlite:///unused.db") -> Project:
    project = Project.create(tmp_path, url)
    project.add("record", RECORD, "await conn.execute(text('DROP TABLE seen'))")
    project.add("break_some", BREAK, "await conn.execute(text('DROP TABLE later'))")
    return project


def by_tenant(result_json: Any) -> dict[str, dict[str, Any]]:
    return {t["tenant"]: t for t in result_json["tenants"]}


def shown(url: str) -> str:
    """A tenant's name: its URL with the driver named and the password masked."""
    return sa.make_url(url).render_as_string(hide_password=True)


def tables(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = rung.create_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_sqlite_fleet_goes_on_past_a_broken_tenant_and_resumes(tmp_path: Path) -> None:
    project = fleet_project(tmp_path)
    folder = project.root / "tenants"
    folder.mkdir()
    names = ["a.db", "b_broken.db", "c.db", "d.db"]
    for name in names:
        (folder / name).touch()

    first = project.rung("up", "--fleet", "tenants/*.db", "--jobs", "2", "--json")
    assert first.code == 1, first.text
    found = by_tenant(first.json())
    assert set(found) == {f"tenants/{n}" for n in names}
    broken = found["tenants/b_broken.db"]
    assert broken["outcome"] == "failed"
    assert "this tenant is broken" in str(broken["error"])
    assert broken["error_type"] == "MigrationFailed"
    assert first.json()["counts"] == {"done": 3, "failed": 1, "cancelled": 0, "not started": 0}
    assert tables(f"sqlite:///{folder / 'b_broken.db'}") == {
        "rung_migrations_lock"
    }  # all or nothing
    assert tables(f"sqlite:///{folder / 'a.db'}") >= {"seen", "later"}

    (folder / "b_broken.db").rename(folder / "b_mended.db")
    again = project.rung("up", "--fleet", "tenants/*.db")
    assert again.code == 0, again.text
    assert "ok          tenants/b_mended.db: 2 migrations applied" in again.out
    assert "ok          tenants/a.db: nothing applied" in again.out  # only pending work ran

    status = project.rung("status", "--fleet", "tenants/*.db", "--json")
    assert status.code == 0, status.text
    assert status.json()["groups"] == [{"newest": project.names[-1], "tenants": 4}]

    down = project.rung("down", "--fleet", "tenants/*.db", "--all", "--json")
    assert down.code == 0, down.text
    reverted = {t: [m["name"] for m in r["migrations"]] for t, r in by_tenant(down.json()).items()}
    assert reverted == {t: project.names[::-1] for t in found if "broken" not in t} | {
        "tenants/b_mended.db": project.names[::-1]
    }
    own = {"rung_migrations", "rung_migrations_meta", "rung_migrations_lock"}
    assert tables(f"sqlite:///{folder / 'c.db'}") == own  # only rung's own tables are left


def test_fail_fast_starts_no_tenant_after_a_failure(tmp_path: Path) -> None:
    project = fleet_project(tmp_path)
    (project.root / "tenants").mkdir()
    for name in ("a.db", "b_broken.db", "c.db", "d.db"):
        (project.root / "tenants" / name).touch()
    result = project.rung("up", "--fleet", "tenants/*.db", "--jobs", "1", "--fail-fast")
    assert result.code == 1, result.text
    assert "fleet of 4 tenants: 1 done, 1 failed, 2 not started" in result.out
    assert tables(f"sqlite:///{project.root / 'tenants' / 'c.db'}") == set()


def test_a_fleet_never_shows_a_password_and_names_the_unreachable(tmp_path: Path) -> None:
    project = fleet_project(tmp_path)
    (project.root / "tenants.txt").write_text(
        "# one a line\n"
        "sqlite:///one.db\n"
        "postgresql://app:s3cr%40tpw@127.0.0.1:1/nowhere   # nothing listens on port 1\n"
    )
    result = project.rung("up", "--fleet", "tenants.txt")
    assert result.code == 1, result.text
    assert "s3cr" not in result.text
    assert "failed      postgresql+asyncpg://app:***@127.0.0.1:1/nowhere" in result.out
    assert "fleet of 2 tenants: 1 done, 1 failed" in result.out
    assert tables(f"sqlite:///{project.root / 'one.db'}") >= {"seen", "later"}


def test_the_fleet_in_pyproject_and_its_mistakes(tmp_path: Path) -> None:
    project = fleet_project(tmp_path)
    (project.root / "tenants").mkdir()
    (project.root / "tenants" / "a.db").touch()
    pyproject = project.root / "pyproject.toml"
    setup = pyproject.read_text()
    pyproject.write_text(setup + '\n[tool.rung.fleet]\nfiles = "tenants/*.db"\njobs = 2\n')
    env = clean_environment(DATABASE_URL=project.url)
    result = cli("up", "--fleet", cwd=project.src, env=env)  # paths from the project root
    assert result.code == 0, result.text
    assert "ok          tenants/a.db: 2 migrations applied" in result.out
    pyproject.write_text(setup + '\n[tool.rung.fleet]\nfiles = "tenants/*.db"\njobs = 0\n')
    result = project.rung("up", "--fleet")
    assert result.code == 2
    assert "jobs in [tool.rung.fleet] must be a whole number, 1 or more, not 0" in result.err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("empty.txt", "the fleet file"),
        ("nothing/*.db", "matches no file"),
        ("schemas:", "has no pattern; write it as schemas:tenant_*"),
        ("missing.txt", "no such file"),
    ],
)
def test_bad_fleets_are_one_line_naming_the_fix(tmp_path: Path, spec: str, message: str) -> None:
    project = fleet_project(tmp_path)
    (project.root / "empty.txt").write_text("# no tenant yet\n\n")
    result = project.rung("up", "--fleet", spec)
    assert result.code == 2
    assert message in result.err and result.err.count("\n") <= 2, result.err


def test_jobs_must_be_one_or_more(tmp_path: Path) -> None:
    project = fleet_project(tmp_path)
    result = project.rung("up", "--fleet", "x/*.db", "--jobs", "0")
    assert result.code == 2
    assert "--jobs: must be a whole number, 1 or more, not '0'" in result.err


async def test_the_api_yields_each_tenant_as_it_finishes(tmp_path: Path) -> None:
    from conftest import MigrationPackage

    package = MigrationPackage(tmp_path)
    package.add("one", "await conn.execute(text('CREATE TABLE one (id INTEGER)'))")
    urls = [f"sqlite:///{tmp_path / f't{i}.db'}" for i in range(3)]
    results = [r async for r in rung.upgrade_fleet(urls, package.registry(), jobs=2)]
    assert sorted(r.tenant.url.rsplit("/", 1)[1] for r in results if r.ok) == [
        "t0.db",
        "t1.db",
        "t2.db",
    ]
    assert all([e.name for e in r.value or []] == package.names for r in results)


@pytest.fixture
def postgres_database(tmp_path: Path) -> Iterator[str]:
    require("postgresql")
    url = fresh_url("postgresql", tmp_path)
    asyncio.run(create_database(url))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


async def test_postgresql_schemas_each_with_its_history_and_lock(
    postgres_database: str, tmp_path: Path
) -> None:
    url = postgres_database
    schemas = ["tenant_a", "tenant_b", "tenant_c"]
    engine = rung.create_engine(url)
    async with engine.begin() as conn:
        for schema in [*schemas, "shared"]:
            await conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    await engine.dispose()
    project = fleet_project(tmp_path, url)
    alone = await asyncio.to_thread(project.rung, "up")  # public has rung's tables too
    assert alone.code == 0, alone.text

    # tenant_b is locked by another run: the fleet waits for it, gives up, goes on
    locked = Tenant("tenant_b", url, "tenant_b")
    holder = engine_for(locked)
    history = History("rung_migrations", dialect_named("postgresql"))
    await own_history(holder, locked, history.name, make=True)  # as a fleet run makes them
    async with Lease(holder, history, timeout=5):
        busy = await asyncio.to_thread(
            project.rung, "up", "--fleet", "schemas:tenant_*", "--lock-timeout", "1", "--json"
        )
    await holder.dispose()
    assert busy.code == 1, busy.text
    found = by_tenant(busy.json())
    assert found["tenant_b"]["error_type"] == "LockTimeout"
    assert found["tenant_a"]["outcome"] == found["tenant_c"]["outcome"] == "done"

    done = await asyncio.to_thread(project.rung, "up", "--fleet", "schemas:tenant_*")
    assert done.code == 0, done.text
    assert "ok          tenant_b: 2 migrations applied" in done.out
    engine = rung.create_engine(url)
    async with engine.connect() as conn:
        for schema in schemas:
            seen = await conn.execute(sa.text(f"SELECT tenant FROM {schema}.seen"))
            assert seen.scalars().all() == [schema]
            applied = await conn.execute(sa.text(f"SELECT count(*) FROM {schema}.rung_migrations"))
            assert applied.scalar() == 2
        public = await conn.execute(sa.text("SELECT tenant FROM public.seen"))
        assert public.scalars().all() == [None]  # the run without a fleet, only
    await engine.dispose()

    status = await asyncio.to_thread(project.rung, "status", "--fleet", "schemas:tenant_*")
    assert status.code == 0, status.text
    assert f"      3  {project.names[-1]} (up to date)" in status.out


@pytest.fixture
def mariadb_databases(tmp_path: Path) -> Iterator[list[str]]:
    require("mariadb")
    urls = [fresh_url("mariadb", tmp_path) for _ in range(3)]
    urls[1] = urls[1].replace("rung_t_", "rung_t_broken_")
    for url in urls:
        asyncio.run(create_database(url))
    try:
        yield urls
    finally:
        for url in urls:
            asyncio.run(drop_database(url))


def test_mariadb_databases_with_one_failing_part_way(
    mariadb_databases: list[str], tmp_path: Path
) -> None:
    project = fleet_project(tmp_path, MYSQL_URL)
    (project.root / "tenants.txt").write_text("\n".join(mariadb_databases) + "\n")
    result = project.rung("up", "--fleet", "tenants.txt", "--json")
    assert result.code == 1, result.text
    outcomes = {
        name.rsplit("/", 1)[1]: t["outcome"] for name, t in by_tenant(result.json()).items()
    }
    assert sorted(outcomes.values()) == ["done", "done", "failed"]
    assert next(n for n, o in outcomes.items() if o == "failed").startswith("rung_t_broken_")
    # MariaDB committed the first migration, and the DDL of the second, of the broken one
    assert {"seen", "later"} <= tables(mariadb_databases[1])

    status = project.rung("status", "--fleet", "tenants.txt")
    assert status.code == 0, status.text
    assert f"      2  {project.names[-1]} (up to date)" in status.out
    assert f"      1  {project.names[0]} (1 pending)" in status.out
    assert f"needs attention: {shown(mariadb_databases[1])}: {project.names[1]} failed" in (
        status.out
    )
    again = project.rung("up", "--fleet", "tenants.txt", "--json")  # refused until repaired
    assert again.code == 1, again.text
    refused = by_tenant(again.json())[shown(mariadb_databases[1])]
    assert refused["error_type"] == "NeedsRepair" and "rung repair" in refused["error"]


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_starts_no_new_tenant_and_a_second_cancels_the_running(
    tmp_path: Path, presses: int
) -> None:
    project = Project.create(tmp_path, "sqlite+aiosqlite:///unused.db")
    # The first two tenants are quick; those that start when they finish are still
    # running, however loaded the machine, when Ctrl-C comes.
    quick = 'conn.info["rung_tenant"] < "tenants/t2"'
    slow = f"import asyncio\nawait asyncio.sleep(0.2 if {quick} else 2)\n"
    project.add("slow", slow + RECORD)
    folder = project.root / "tenants"
    folder.mkdir()
    for i in range(8):
        (folder / f"t{i}.db").touch()
    proc = subprocess.Popen(
        [*RUNG, "up", "--fleet", "tenants/*.db", "--jobs", "2"],
        cwd=project.root,
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # a tenant finished: stop the fleet now
    assert first.startswith("ok "), first
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    # Not communicate(): it reads the pipe itself, and would lose what readline buffered.
    rest = proc.stdout.read()
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.wait(timeout=60)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == 130, first + rest + err
    lines = (first + rest).splitlines()
    outcomes = {line[12:].split(":")[0]: line[:11].strip() for line in lines if line[11:12] == " "}
    assert len(outcomes) == 8 and "interrupted" in err, first + rest + err
    running = [t for t, o in outcomes.items() if o == ("ok" if presses == 1 else "cancelled")]
    assert len(running) >= 1 and outcomes[first[12:].split(":")[0]] == "ok", lines
    errors = {line[12:].split(":")[0]: line for line in lines if line.startswith("cancelled")}
    for name, outcome in outcomes.items():
        seen = "seen" in tables(f"sqlite:///{project.root / name}")
        if outcome == "cancelled":  # it says what the database kept
            held = "it holds nothing applied now" not in errors[name]
            assert seen == held and "cancelled while it ran" in errors[name], errors[name]
        else:
            assert seen == (outcome == "ok"), (name, outcome)

    unapplied = [n for n in outcomes if "seen" not in tables(f"sqlite:///{project.root / n}")]
    again = project.rung("up", "--fleet", "tenants/*.db", "--jobs", "8")
    assert again.code == 0, again.text
    assert again.out.count("1 migration applied") == len(unapplied) >= 1


def test_a_terminal_gets_one_live_line_with_counts_and_rate(tmp_path: Path) -> None:
    from cli_support import run_on_terminal

    project = fleet_project(tmp_path)
    (project.root / "tenants").mkdir()
    for name in ("a.db", "b.db", "c_broken.db"):
        (project.root / "tenants" / name).touch()
    result = run_on_terminal(
        [*RUNG, "up", "--fleet", "tenants/*.db"], project.root, clean_environment()
    )
    assert result.code == 1, result.out
    assert "\r\x1b[Kdone 2  failed 1  running 0  pending 0  " in result.out
    assert "/s" in result.out and "failed      tenants/c_broken.db" in result.out
    assert "ok          tenants/a.db" not in result.out  # no line per tenant on a terminal
    assert "fleet of 3 tenants: 2 done, 1 failed in " in result.out


def test_drift_names_the_tenant_changed_by_hand_and_verify_runs_once(tmp_path: Path) -> None:
    project = fleet_project(tmp_path)
    (project.root / "tenants").mkdir()
    for name in ("a.db", "b.db"):
        (project.root / "tenants" / name).touch()
    assert project.rung("up", "--fleet", "tenants/*.db").code == 0
    from cli_support import execute

    execute(f"sqlite:///{project.root / 'tenants' / 'b.db'}", "ALTER TABLE seen ADD temp INTEGER")
    result = project.rung("drift", "--fleet", "tenants/*.db", "--json")
    assert result.code == 1, result.text
    found = by_tenant(result.json())
    assert found["tenants/a.db"]["drift"] is False
    assert found["tenants/b.db"]["drift"] is True
    assert any("temp" in d for d in found["tenants/b.db"]["differences"])

    verify = project.rung("verify", "--fleet", "tenants/*.db")
    assert verify.code == 2
    assert "run it once, with --url set to one tenant's database" in verify.err


def test_a_warning_during_a_fleet_names_its_tenant(tmp_path: Path) -> None:
    project = fleet_project(tmp_path)
    (project.root / "tenants").mkdir()
    for name in ("a.db", "b.db"):
        (project.root / "tenants" / name).touch()
    assert project.rung("up", "--fleet", "tenants/*.db").code == 0
    project.register(project.names[:1])  # an older release: the newest is unknown to it
    result = project.rung("up", "--fleet", "tenants/*.db")
    assert result.code == 0, result.text
    for tenant in ("tenants/a.db", "tenants/b.db"):
        assert f"rung: warning: {tenant}: " in result.err, result.err
