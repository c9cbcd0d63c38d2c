"""SQLAlchemy's dialect compliance suite (sqlalchemy.testing.suite), run in a
child pytest against a real PostgreSQL started by noodlecore.testing and a real
SQLite file.

The control is `postgresql+psycopg` with SQLAlchemy's own requirements class
(tests/sqla_suite/sqla_default_requirements.py, vendored from its sdist): it
shows the harness sets the database up the way the suite expects.  Counts are
read from the child's junit file; failures and errors must be zero and the
passed count must reach the floor below, because a class switched off by a
class-level requirement disappears at collection without being counted as
skipped (so "0 failed" alone proves little).

Marked `once`: only the pytest-python3 stage of tests/run.sh installs
tests/requirements-sqla.txt and runs it; the other stages deselect it.
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

pytestmark = pytest.mark.once

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE_DIR = os.path.join(HERE, "sqla_suite")

# Measured with this harness (README, "SQLAlchemy"); the floor is the passed
# count, which is what can silently shrink.
CONTROL_PG_PASSED = 1883
NOODLE_PG_PASSED = 1883
NOODLE_SQLITE_PASSED = 1597

SETUP_CFG = """\
[tool:pytest]
addopts = --tb=short -p no:cacheprovider
python_files = test_*.py
markers =
    backend: tests that should run on all backends
    sparse_backend: tests that should run on multiple backends, not every one
    sparse_driver_backend: tests that should run on one driver per backend
    mypy: mypy integration tests

[sqla_testing]
requirement_cls = {requirements}
profile_file = profiles.txt

[db]
default = {url}
"""


def start_suite(workdir, url, requirements, env=None):
    """Start the suite against url with the given requirements class
    ("module:Class" of tests/sqla_suite) in a child pytest; returns what
    finish_suite takes."""
    os.makedirs(workdir, exist_ok=True)
    cfg = os.path.join(workdir, "setup.cfg")
    with open(cfg, "w") as f:
        f.write(SETUP_CFG.format(requirements=requirements, url=url))
    xml = os.path.join(workdir, "junit.xml")
    log = os.path.join(workdir, "pytest.log")
    # -c/--rootdir: SQLAlchemy reads setup.cfg from the rootdir; --confcutdir
    # keeps tests/conftest.py (our fixtures) out of the child.
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-c", cfg, "--rootdir", workdir,
           "--confcutdir", SUITE_DIR, "--junitxml", xml, "--dburi", url,
           os.path.join(SUITE_DIR, "test_suite.py")]
    out = open(log, "w")
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env)
    return proc, out, xml, log


def finish_suite(started, timeout=900):
    """Wait for a started run; (passed, failed, skipped, log_path)."""
    proc, out, xml, log = started
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
    return junit_counts(xml) + (log,)


def junit_counts(path):
    root = ET.parse(path).getroot()
    p = f = s = 0
    for suite in root.iter("testsuite"):
        t = int(suite.get("tests", 0))
        fl = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        sk = int(suite.get("skipped", 0))
        p += t - fl - sk
        f += fl
        s += sk
    return p, f, s


def failures_of(log):
    with open(log) as f:
        lines = f.read().splitlines()
    bad = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return "\n".join(bad[:40] + lines[-5:])


def suite_database(pg, name):
    """A fresh database as the suite expects it (reference: UTF8 from template0,
    two extra schemas, hstore and citext, the english text search config)."""
    pg.sql('drop database if exists "%s" with (force)' % name)
    pg.sql("create database \"%s\" encoding 'UTF8' template template0" % name)
    pg.sql("alter database \"%s\" set default_text_search_config = 'pg_catalog.english'" % name)
    pg.sql("create schema test_schema; create schema test_schema_2; "
           "create extension hstore; create extension citext", dbname=name)
    return "%s@%s:%d/%s" % (pg.user, pg.host, pg.port, name)


def test_readme_states_the_floors():
    """The README's table says what this file asserts (passed / failed)."""
    readme = open(os.path.join(HERE, "..", "README.md")).read()
    for url, passed in (("postgresql+psycopg", CONTROL_PG_PASSED),
                        ("postgresql+noodlecore", NOODLE_PG_PASSED),
                        ("sqlite+noodlecore", NOODLE_SQLITE_PASSED)):
        row = [line for line in readme.splitlines() if line.startswith("| `%s`" % url)]
        assert len(row) == 1, url
        assert "| {:,} / 0 /".format(passed) in row[0], row[0]


@pytest.fixture(scope="module")
def suite_results(pg, tmp_path_factory):
    """The three runs at once (the control and our two dialects: they share
    nothing but the server, and together take about half the time they take
    one after the other); {name: (passed, failed, skipped, log)}."""
    # The control runs none of our C code: without PYTHONMALLOC=debug's
    # checks (the stage sets them for our extension), it takes less of the
    # test command's time.
    control_env = {k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"}
    control = suite_database(pg, "sqla_control")
    ours = suite_database(pg, "sqla_noodle")
    sqlite_dir = tmp_path_factory.mktemp("sqla_sqlite")
    runs = {}
    try:
        runs["control"] = start_suite(str(tmp_path_factory.mktemp("sqla_control")), "postgresql+psycopg://" + control,
                                      "sqla_default_requirements:DefaultRequirements", env=control_env)
        runs["postgresql"] = start_suite(str(tmp_path_factory.mktemp("sqla_noodle")), "postgresql+noodlecore://" + ours,
                                         "noodle_requirements:NoodleRequirements")
        runs["sqlite"] = start_suite(str(sqlite_dir), "sqlite+noodlecore:///%s" % (sqlite_dir / "suite.db"),
                                     "noodle_requirements:NoodleRequirements")
        results = {name: finish_suite(started) for name, started in runs.items()}
    finally:
        for proc, out, _, _ in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
        pg.sql('drop database if exists "sqla_control" with (force)')
        pg.sql('drop database if exists "sqla_noodle" with (force)')
    return results


def test_control_psycopg(suite_results):
    """The control: postgresql+psycopg with SQLAlchemy's own requirements."""
    p, f, s, log = suite_results["control"]
    print("SQLA-SUITE postgresql+psycopg (control): %d passed / %d failed / %d skipped" % (p, f, s))
    assert f == 0, failures_of(log)
    assert p >= CONTROL_PG_PASSED, "only %d passed (log: %s)" % (p, log)


def test_noodlecore_postgresql(suite_results):
    p, f, s, log = suite_results["postgresql"]
    print("SQLA-SUITE postgresql+noodlecore: %d passed / %d failed / %d skipped" % (p, f, s))
    assert f == 0, failures_of(log)
    assert p >= NOODLE_PG_PASSED, "only %d passed (log: %s)" % (p, log)


def test_noodlecore_sqlite(suite_results):
    p, f, s, log = suite_results["sqlite"]
    print("SQLA-SUITE sqlite+noodlecore: %d passed / %d failed / %d skipped" % (p, f, s))
    assert f == 0, failures_of(log)
    assert p >= NOODLE_SQLITE_PASSED, "only %d passed (log: %s)" % (p, log)
