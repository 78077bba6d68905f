"""A 3-node MariaDB Galera cluster on loopback, started once per test session by the
``galera`` fixture (lazily: only when a test asks for it), stopped by the pids it started,
with a database of its own for each test.

Every file of the cluster lives in one temporary folder (datadirs, sockets, pid files, the
configuration); every port is a free loopback port, so the machine's own MariaDB (3306,
/var/lib/mysql, /run/mysqld) and other test sessions are never touched.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from servers.process import Started, free_port

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "/usr/bin/mariadb-install-db"
PROVIDER = "/usr/lib/galera/libgalera_smm.so"
NEEDED = (  # path, and the Debian package that installs it
    (MARIADBD, "mariadb-server"),
    (INSTALL_DB, "mariadb-server"),
    (PROVIDER, "galera-4"),
    ("rsync", "rsync"),  # run by the SST script
)
NODES = 3
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Bounds, generous for a loaded 2-core machine; the whole cluster starts in about 20 s.
INSTALL_TIMEOUT = 120.0  # mariadb-install-db
NODE_TIMEOUT = 180.0  # one node from its start to Synced (an rsync SST included)
DATABASE_TIMEOUT = 60.0  # a CREATE DATABASE seen on every node
STOP_TIMEOUT = 60.0  # SIGTERM to exit, before SIGKILL
ATTEMPTS = 2  # a free port can be taken by someone else before the node binds it


@dataclass(frozen=True)
class Ports:
    sql: int
    gcomm: int  # group communication (gmcast.listen_addr)
    ist: int  # incremental state transfer (ist.recv_addr)
    sst: int  # the rsync daemon of a full state transfer (wsrep_sst_receive_address)

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port())


def url(port: int, database: str = "") -> str:
    return f"mysql+asyncmy://root@127.0.0.1:{port}/{database}"


class Node:
    """One mariadbd of the cluster: its folder, configuration file and process."""

    def __init__(self, root: Path, index: int, ports: Ports, cluster: Sequence[Ports]) -> None:
        self.name, self.ports = f"galera-node{index + 1}", ports
        self.folder = root / f"node{index + 1}"
        self.data = self.folder / "data"
        self.data.mkdir(parents=True)
        (self.folder / "tmp").mkdir()
        self.config = self.folder / "my.cnf"
        self.config.write_text(self._config(root.name, cluster))
        self.process: Started | None = None

    def _config(self, cluster_name: str, cluster: Sequence[Ports]) -> str:
        members = ",".join(f"127.0.0.1:{p.gcomm}" for p in cluster)
        provider_options = ";".join(
            [
                f"gmcast.listen_addr=tcp://127.0.0.1:{self.ports.gcomm}",
                f"ist.recv_addr=127.0.0.1:{self.ports.ist}",
                "gcache.size=32M",
                # A node starved of CPU for a few seconds must not be evicted (defaults 5 s
                # and 15 s): other test processes share these two cores.
                "evs.suspect_timeout=PT30S",
                "evs.inactive_timeout=PT60S",
                "evs.install_timeout=PT60S",
            ]
        )
        return f"""[mysqld]
user={_user()}
datadir={self.data}
tmpdir={self.folder / "tmp"}
socket={self.folder / "mysqld.sock"}
pid-file={self.folder / "mysqld.pid"}
port={self.ports.sql}
bind-address=127.0.0.1
skip-name-resolve
innodb_buffer_pool_size=32M
innodb_log_file_size=16M
# Each commit is on three nodes before it returns; an fsync per commit on a disk that other
# test processes share would only slow every migration down.
innodb_flush_log_at_trx_commit=2
performance_schema=OFF
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
wsrep_on=ON
wsrep_provider={PROVIDER}
wsrep_cluster_name={cluster_name}
wsrep_cluster_address=gcomm://{members}
wsrep_node_name={self.name}
wsrep_node_address=127.0.0.1:{self.ports.gcomm}
wsrep_provider_options="{provider_options}"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:{self.ports.sst}
"""

    def start(self, *, new_cluster: bool) -> None:
        # --defaults-file first: neither mariadbd nor the SST script it runs may read the
        # machine's /etc/mysql configuration.
        argv = [MARIADBD, f"--defaults-file={self.config}"]
        if new_cluster:
            argv.append("--wsrep-new-cluster")
        self.process = Started(self.name, argv, self.folder / "mariadbd.log")

    def alive(self) -> None:
        if self.process is not None and self.process.proc.poll() is not None:
            code = self.process.proc.returncode
            raise RuntimeError(f"{self.name} exited ({code}): {self.process.tail()}")

    def tail(self) -> str:
        return self.process.tail() if self.process is not None else "(not started)"


def _account() -> pwd.struct_passwd:
    """The account the nodes run as: the tests' own, or, when the tests run as root, the
    ``mysql`` system account (made by the mariadb-server package). Not root: the joiner's
    rsync daemon (the SST) would then drop to ``nobody`` for its modules and could not
    write into the datadir (Permission denied, seen), and mariadbd itself refuses root
    unless told ``user=root``."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam("mysql")
    except KeyError:
        raise RuntimeError(
            "running as root, and there is no 'mysql' account to run the nodes as"
        ) from None


def _user() -> str:
    return _account().pw_name


class Cluster:
    """Three nodes in a temporary folder: ``start`` bootstraps node 1 and joins the
    others through an rsync SST; ``stop`` ends exactly those three processes."""

    def __init__(self) -> None:
        missing = [
            f"{path} ({package})"
            for path, package in NEEDED
            if not Path(path).is_file() and shutil.which(path) is None
        ]
        if missing:
            raise RuntimeError(f"missing {', '.join(missing)}; install those Debian packages")
        account = _account()
        self.root = Path(tempfile.mkdtemp(prefix="rung_galera_"))
        self.nodes: list[Node] = []
        try:
            ports = [Ports.free() for _ in range(NODES)]
            self.nodes = [Node(self.root, i, p, ports) for i, p in enumerate(ports)]
            for path in [self.root, *self.root.rglob("*")]:
                os.chown(path, account.pw_uid, account.pw_gid)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(url(n.ports.sql) for n in self.nodes)

    def start(self) -> None:
        """Start the three nodes; if that fails in any way, stop what was started."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        first, *joiners = self.nodes
        # Joiners start with an empty datadir: the SST copies node 1's, system tables too.
        install = subprocess.run(
            [
                INSTALL_DB,
                "--no-defaults",
                f"--datadir={first.data}",
                f"--user={_user()}",
                "--auth-root-authentication-method=normal",  # root@127.0.0.1, no password
                "--skip-test-db",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
            ],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
        if install.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {install.stdout}{install.stderr}")
        first.start(new_cluster=True)
        asyncio.run(self._synced([first], size=1))
        for node in joiners:  # both at once: the second waits for a donor if it must
            node.start(new_cluster=False)
        asyncio.run(self._synced(self.nodes, size=NODES))

    async def _synced(self, nodes: Sequence[Node], size: int) -> None:
        """Wait until each of ``nodes`` is ready and Synced in a cluster of ``size``."""
        deadline = time.monotonic() + NODE_TIMEOUT
        pending = list(nodes)
        while pending:
            for node in list(pending):
                node.alive()
                if await _status(node.ports.sql) == (str(size), "ON", "Synced"):
                    pending.remove(node)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(
                    f"{', '.join(n.name for n in pending)} not Synced in a cluster of {size} "
                    f"within {NODE_TIMEOUT:g} s: {pending[0].tail()}"
                )
            if pending:
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        # One at a time, newest first: nodes leaving together wait out the group's
        # timeouts (20 s seen), a node leaving a live group goes at once.
        for node in reversed(self.nodes):
            if node.process is not None:
                node.process.stop(STOP_TIMEOUT)
        shutil.rmtree(self.root, ignore_errors=True)


async def _status(port: int) -> tuple[str, str, str] | None:
    """(wsrep_cluster_size, wsrep_ready, wsrep_local_state_comment), or None while the node
    does not answer yet."""
    engine = create_async_engine(url(port), connect_args={"connect_timeout": 5})
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.text("SHOW GLOBAL STATUS LIKE 'wsrep_%'"))
            found = {str(name): str(value) for name, value in result}
    except (sa.exc.DBAPIError, OSError):
        return None
    finally:
        await engine.dispose()
    return (
        str(found.get("wsrep_cluster_size")),
        str(found.get("wsrep_ready")),
        str(found.get("wsrep_local_state_comment")),
    )


@dataclass(frozen=True)
class Galera:
    """What a test gets: each node's URL (no database), and databases of its own."""

    urls: tuple[str, ...]

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(sa.make_url(u).port or 0 for u in self.urls)

    @contextmanager
    def database(self) -> Iterator[tuple[str, ...]]:
        """A new database, made on node 1 (TOI replicates it); yields its URL on each node
        once every node shows it. Afterwards, sessions still in it (a killed client's) are
        ended on every node and it is dropped."""
        name = f"rung_g_{uuid.uuid4().hex[:12]}"
        asyncio.run(_create(self.ports, name))
        try:
            yield tuple(url(port, name) for port in self.ports)
        finally:
            asyncio.run(_drop(self.ports, name))


@asynccontextmanager
async def _admin(port: int) -> AsyncIterator[AsyncConnection]:
    engine = create_async_engine(url(port), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            # Bounded: a session left behind must not hold a DDL statement for a year.
            await conn.execute(sa.text("SET SESSION lock_wait_timeout = 60"))
            yield conn
    finally:
        await engine.dispose()


async def _drop(ports: Sequence[int], name: str) -> None:
    for port in ports:
        async with _admin(port) as conn:
            left = await conn.scalars(
                sa.text(
                    "SELECT ID FROM information_schema.PROCESSLIST "
                    "WHERE DB = :n AND ID <> CONNECTION_ID()"
                ),
                {"n": name},
            )
            for session in left.all():
                with suppress(sa.exc.DBAPIError):  # it may have ended meanwhile
                    await conn.execute(sa.text(f"KILL {int(session)}"))
    async with _admin(ports[0]) as conn:
        await conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))


async def _create(ports: Sequence[int], name: str) -> None:
    async with _admin(ports[0]) as conn:
        await conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    deadline = time.monotonic() + DATABASE_TIMEOUT
    query = sa.text("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n")
    for port in ports:
        engine = create_async_engine(url(port))
        try:
            async with engine.connect() as conn:
                while not await conn.scalar(query, {"n": name}):
                    await conn.rollback()
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"database {name} not on port {port} in time")
                    await asyncio.sleep(0.05)
        finally:
            await engine.dispose()


@pytest.fixture(scope="session")
def galera() -> Iterator[Galera]:
    """The cluster, started at the first test that asks for it and stopped at the end of
    the session. Mark such tests ``@pytest.mark.xdist_group("galera")`` so that one xdist
    worker runs them all and the cluster starts once. Locally a cluster that cannot start
    skips them, with the reason; under CI it fails them."""
    cluster, problems, began = None, [], time.monotonic()
    for _ in range(ATTEMPTS):
        try:
            cluster = Cluster()
            cluster.start()
            break
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            problems.append(str(exc))  # start() stopped what it had started
            cluster = None
    if cluster is None:
        reason = f"the Galera cluster did not start: {' / '.join(dict.fromkeys(problems))}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    print(f"galera: 3 nodes Synced in {time.monotonic() - began:.1f} s")  # shown with -s
    try:
        yield Galera(cluster.urls)
    finally:
        cluster.stop()
