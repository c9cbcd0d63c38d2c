"""Shared pytest fixtures for noodlecore's tests.

Fixtures are grouped by topic under banner comments; add new groups as their
own section below instead of mixing them into an existing one.
"""

import os
import re
import sys
import warnings

import pytest

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

# SQLAlchemy's compliance suite runs in a child pytest of its own
# (tests/test_sqla_suite.py), never collected with ours.
collect_ignore = ["sqla_suite"]


# ===========================================================================
# PostgreSQL harness fixtures (noodlecore.testing, shipped in the package)
#
#   pg_cluster  session   PgCluster: sweeps stale servers of killed runs, owns the
#                         /dev/shm root + template, stops and removes all at the end
#   pg          session   one shared primary PgNode.  Tests that break it (crash,
#                         freeze, stop, ...) must restore it; a guard repairs it
#                         after each test and warns if it had to.
#   pg_factory  function  PgFactory: .primary() .standby() .rewind_as_standby()
#                         .proxy(); destroys what it made when the test ends.
#
# Missing PostgreSQL binaries are an error, never a skip.
# ===========================================================================

from noodlecore.testing import PgCluster, PgFactory, check_binaries, sweep_stale  # noqa: E402

_PG_SHARED = {"pg": None}


@pytest.fixture(scope="session")
def pg_cluster():
    check_binaries()          # raises PgHarnessError: fail loudly, never skip
    sweep_stale()
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def pg(pg_cluster):
    node = pg_cluster.primary("pg")
    _PG_SHARED["pg"] = node
    try:
        yield node
    finally:
        _PG_SHARED["pg"] = None


@pytest.fixture(autouse=True)
def _pg_shared_guard(request):
    yield
    node = _PG_SHARED["pg"]
    if node is None or "pg" not in request.fixturenames:
        return
    fixed = node.repair()
    if fixed:
        warnings.warn("%s left the shared `pg` node broken (%s); repaired"
                      % (request.node.nodeid, ", ".join(fixed)), pytest.PytestWarning)


@pytest.fixture
def pg_factory(pg_cluster):
    factory = PgFactory(pg_cluster)
    try:
        yield factory
    finally:
        factory.close()

# ===========================================================================
# (end of PostgreSQL harness fixtures)
# ===========================================================================


# ===========================================================================
# PostgreSQL pool fixtures (test_pg_pool_*.py): every pool gets its own
# application_name, so that pg_stat_activity can tell its sessions apart.
#
#   app         function  the test's application_name (nct_<test name>)
#   make_pool   function  make_pool(**options) -> a pool on the shared `pg`
#   proxied     function  proxied(**options) -> (pool, TcpProxy): a pool through a fresh
#                         fault proxy to `pg` (test_fault_matrix_net, test_short_deadlines)
#   table       function  a fresh table named after the test
# ===========================================================================

from noodlecore.database import DatabaseConnectionPool  # noqa: E402


def app_name(request):
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)
    return ("nct_" + name)[:60]


@pytest.fixture
def app(request):
    return app_name(request)


@pytest.fixture
def make_pool(pg, app):
    """make_pool(**options) -> a pool on the shared server, shut down at the end."""
    pools = []

    def make(node=None, dsn=None, **options):
        node = node or pg
        pool = DatabaseConnectionPool(dsn or node.dsn(application_name=app), **options)
        pools.append(pool)
        return pool

    yield make
    for p in pools:
        p.shutdown(timeout=0)


@pytest.fixture
def proxied(pg, pg_factory, make_pool, app):
    """proxied(**options) -> (pool through a fresh proxy to the shared server, proxy)."""
    made = []

    def make(**options):
        px = pg_factory.proxy(pg)
        pool = make_pool(dsn="postgresql://postgres@127.0.0.1:%d/postgres?application_name=%s" % (px.port, app),
                         **options)
        made.append(px)
        return pool, px

    yield make
    for px in made:
        px.clear()     # lift the fault: held cancels and statements drain before the pool shuts down


@pytest.fixture
def table(pg, app):
    """A fresh table (id serial, v int unique, note text) named after the test."""
    name = "t_" + app
    pg.sql("drop table if exists %s; create table %s (id serial primary key, v int unique, note text)"
           % (name, name))
    yield name
    pg.sql("drop table if exists %s" % name)


# ===========================================================================
# DB-API (test_dbapi*.py)
#
#   fresh_dbapi_pools  function  the pools noodlecore.dbapi.connect() made during
#                                the test are shut down at its end
# ===========================================================================

@pytest.fixture
def fresh_dbapi_pools():
    from noodlecore import dbapi
    before = set(dbapi._pools)
    yield
    with dbapi._pools_lock:
        made = [dbapi._pools.pop(k) for k in list(dbapi._pools) if k not in before]
    for pool in made:
        pool.shutdown(timeout=0)


# ===========================================================================
# DatabaseManager without a server (test_database_manager_*.py)
#
#   clean_env   function  no NOODLE_DB_* variables, cwd in tmp_path; returns monkeypatch
# ===========================================================================

ENV_VARS = ["NOODLE_DB_HOST", "NOODLE_DB_PORT", "NOODLE_DB_NAME", "NOODLE_DB_USER", "NOODLE_DB_PASSWORD",
            "NOODLE_DB_SSL", "NOODLE_DB_MAX_CONNECTIONS", "NOODLE_DB_TIMEOUT", "NOODLE_DB_RETRY_ATTEMPTS"]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for v in ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


# ===========================================================================
# Fault-matrix figures (tests/figures.py): printed at the end of the run
# ===========================================================================

def pytest_terminal_summary(terminalreporter):
    from figures import FIGURES
    if not FIGURES:
        return
    terminalreporter.section("fault matrix figures")
    for row, text in FIGURES:
        terminalreporter.write_line("FAULT-MATRIX %s: %s" % (row, text))


# ===========================================================================
# Patroni cluster (tests/test_patroni.py; marked `once`, run in ONE pytest
# stage only: tests/run.sh deselects it in the others)
#
#   patroni   module  a 3-member PatroniCluster (etcd + Patroni, noodlecore.testing.patroni);
#                     after each test that uses it, it waits until the cluster is
#                     healthy again (leader writable, every replica streaming)
#
# A missing Patroni, etcd or tini is an error, never a skip.
# ===========================================================================

@pytest.fixture(scope="module")
def patroni_cluster_module():
    from noodlecore.testing.patroni import PatroniCluster
    sweep_stale()
    cluster = PatroniCluster(n=3)
    try:
        cluster.start(timeout=120)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def patroni(patroni_cluster_module):
    patroni_cluster_module.wait_healthy(timeout=90)
    yield patroni_cluster_module
    patroni_cluster_module.resume_api()
    for m in patroni_cluster_module.members:
        patroni_cluster_module.resume_replay(m)

# ===========================================================================
# (end of Patroni cluster)
# ===========================================================================


# ===========================================================================
# Modules marked `once` as a whole (`pytestmark = pytest.mark.once`) are not
# even imported when the run deselects them (-m "not once": tests/run.sh's
# second and ASan stages), so that one may import what only the
# pytest-python3 venv has (SQLAlchemy: tests/requirements-sqla.txt).
# ===========================================================================

def pytest_ignore_collect(collection_path, config):
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if not (config.option.markexpr or "").strip().startswith("not once"):
        return None
    try:
        text = collection_path.read_text()
    except OSError:
        return None
    return True if "\npytestmark = pytest.mark.once\n" in text else None
