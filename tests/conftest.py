"""Shared pytest fixtures for noodlecore's tests.

Fixtures are grouped by topic under banner comments; add new groups as their
own section below instead of mixing them into an existing one.
"""

import os
import sys
import warnings

import pytest

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)


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
