"""Throwaway PostgreSQL clusters for testing code against real failovers.

noodlecore's own tests, its benchmarks and ``noodlecore-db demo --postgres``
run on this; so can yours.  It starts real PostgreSQL servers (a primary,
streaming standbys) in /dev/shm, breaks them the way production breaks them,
and removes everything afterwards.  Standard library only; it needs the
PostgreSQL server binaries (found through $NOODLE_PG_BIN, ``pg_config``, or
/usr/lib/postgresql/<version>/bin).  As root the servers run as the
``postgres`` user (PostgreSQL refuses to run as root).

A failover test::

    from noodlecore.testing import PgCluster

    with PgCluster() as cluster:                 # stops and removes everything on exit
        primary = cluster.primary("a")           # ~0.2 s after the first (initdb) one
        standby = cluster.standby(primary, "b")  # pg_basebackup, streaming
        primary.sql("CREATE TABLE t (n int)")
        app = MyApp([primary.dsn(), standby.dsn()])   # your code, e.g. a libpq multi-host DSN
        app.write(1)
        standby.wait_replayed(primary)           # asynchronous replication: wait before a crash
        primary.crash()                          # SIGKILL of the postmaster and every backend
        standby.promote()                        # returns once it accepts writes
        app.write(2)                             # your code should now reach b
        cluster.rewind_as_standby(primary, standby)   # a rejoins as b's standby (pg_rewind)

In pytest, make one PgCluster per session (initdb runs once, every node is a
copy of that template) and a PgFactory per test, which destroys the nodes and
proxies the test made::

    @pytest.fixture(scope="session")
    def pg_cluster():
        sweep_stale()                  # servers left by killed runs
        with PgCluster() as cluster:
            yield cluster

    @pytest.fixture
    def pg_factory(pg_cluster):
        factory = PgFactory(pg_cluster)
        yield factory
        factory.close()

What a node can do (PgNode): ``crash()`` (SIGKILL, returns the moment),
``stop(mode)``, ``start()``, ``restart()``, ``freeze()``/``thaw()`` (SIGSTOP:
the server accepts TCP connections in the kernel but never answers),
``promote()``, ``terminate_all_clients()``, ``enable_tls(cert, key)`` (with
certificates from ``TestCA``, made with the openssl command, valid or expired),
``add_password_user(user, password)`` (scram-sha-256 over TCP), ``sql()``/``scalar()`` (through
psql, not through the code under test), ``wait_replayed()``,
``wait_standby()``, ``configure(**settings)``; ``dsn()``, ``kv_dsn()``.
Network faults without root tools: ``TcpProxy`` (or ``factory.proxy(node)``)
between your code and a node adds delay, blackholes (a partition), rejects,
resets every connection, leaves them half-open (the server's side gone, the
client's silent), trickles the server's bytes (slow drip) or redirects new ones.  Errors: PgHarnessError (with
the server log's tail), SqlError and SqlTimeout from the psql helpers.

Pgbouncer (Debian's binary) in front of a node, transaction pooling by default:
``factory.pgbouncer(node)`` (a started ``PgBouncer``: ``dsn()``, ``restart()``,
``admin("SHOW SERVERS")``).

Modules: ``processes`` (binaries, running as postgres, /proc, ports), ``psql``,
``node`` (PgNode), ``cluster`` (PgCluster, PgFactory, sweep_stale), ``proxy``
(TcpProxy), ``tls`` (TestCA), ``pgbouncer`` (PgBouncer).
"""

from .cluster import BASE_SETTINGS, ROOT_PREFIX, PgCluster, PgFactory, sweep_stale
from .node import PgNode
from .processes import PgHarnessError, check_binaries, find_bindir, free_port
from .pgbouncer import PgBouncer, find_pgbouncer
from .proxy import TcpProxy
from .psql import SqlError, SqlTimeout, popen_psql, run_psql
from .tls import TestCA

__all__ = [
    "PgCluster", "PgFactory", "PgNode", "PgBouncer", "find_pgbouncer", "TcpProxy", "TestCA", "PgHarnessError", "SqlError", "SqlTimeout",
    "run_psql", "popen_psql", "sweep_stale", "check_binaries", "find_bindir", "free_port",
    "BASE_SETTINGS", "ROOT_PREFIX",
]
