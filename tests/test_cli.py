"""The noodlecore-db command through subprocesses: exit codes, --json output,
bad input, the demo on SQLite (simulated outage) and on real PostgreSQL
servers, status and watch against the session's server, the bench."""

import glob
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import subprocess_env

# The command line and the harness are Python over code the other tests cover:
# they run in the pytest-python3 stage only (tests/run.sh).
pytestmark = pytest.mark.once


def cli():
    script = pathlib.Path(sys.executable).parent / "noodlecore-db"
    return [str(script)] if script.exists() else [sys.executable, "-m", "noodlecore.database"]


def env(**extra):
    e = subprocess_env(**extra)
    e.pop("NO_COLOR", None)
    return e


def run(*args, timeout=60, cwd=None, **extra_env):
    return subprocess.run(cli() + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env(**extra_env))


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------
# usage, help, bad input
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", [[], ["demo"], ["query"], ["status"], ["watch"], ["bench"]])
def test_help_everywhere(command):
    proc = run(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: noodlecore-db")
    assert "--json" in proc.stdout or not command


def test_python_dash_m_is_the_same_command():
    # cwd "/": "python -m" puts the working directory first on sys.path, and
    # the source tree there must not shadow the noodlecore under test.
    proc = subprocess.run([sys.executable, "-m", "noodlecore.database", "--help"], capture_output=True,
                          text=True, timeout=60, env=env(), cwd="/")
    assert proc.returncode == 0 and "demo" in proc.stdout and "status" in proc.stdout


def test_unknown_or_missing_command_is_usage_error():
    proc = run("frobnicate")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    assert run().returncode == 2
    assert run("status", "--no-such-option").returncode == 2


@pytest.mark.parametrize("args", [
    ["query", "sqlite:///:memory:", "SELECT 1", "--param", "novalue"],
    ["query", "sqlite:///:memory:", "SELECT 1", "--timeout", "0"],
    ["status"],
    ["status", "--endpoint", "just-a-name"],
    ["status", "--endpoint", "a=sqlite:///:memory:", "--endpoint", "a=sqlite:///:memory:"],
    ["status", "--endpoint", "a=sqlite:///:memory:", "--timeout", "-1"],
    ["watch", "--endpoint", "a=sqlite:///:memory:", "--count", "0"],
    ["watch", "--endpoint", "a=sqlite:///:memory:", "--interval", "0"],
    ["demo", "--seconds", "0"],
    ["demo", "--threads", "0"],
    ["demo", "--postgres", "--db", "sqlite:///x.db"],
    ["bench", "--builtin", "--seconds", "0"],
    ["bench", "--builtin", "--quick"],
])
def test_bad_input_exits_2_with_a_message(args, tmp_path):
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "noodlecore-db" in proc.stderr and "error" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("command", [["query", "mysql://nope", "SELECT 1"],
                                     ["status", "--endpoint", "db=mysql://nope"],
                                     ["query", "sqlite:/nope.db", "SELECT 1"]])
def test_bad_dsn_names_the_error_code(command):
    proc = run(*command)
    assert proc.returncode == 2
    assert "[2013]" in proc.stderr and "noodlecore-db:" in proc.stderr


def test_query_unreachable_server_exits_1_with_code():
    proc = run("query", f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres", "SELECT 1",
               "--timeout", "2")
    assert proc.returncode == 1
    assert "[20" in proc.stderr and "refused" in proc.stderr.lower()


def test_query_sqlite_table_json_and_errors(tmp_path):
    db = f"sqlite:///{tmp_path / 'q.db'}"
    assert run("query", db, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)").returncode == 0
    ins = run("query", db, "INSERT INTO t (name) VALUES (%(n)s)", "--param", "n=Ada")
    assert ins.returncode == 0 and "1 row(s) affected" in ins.stdout
    table = run("query", db, "SELECT id, name FROM t")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["id", "name"] and "Ada" in table.stdout
    assert "\x1b[" not in table.stdout          # no colour when stdout is not a terminal
    js = run("query", db, "SELECT id, name FROM t", "--json")
    assert json.loads(js.stdout) == [{"id": 1, "name": "Ada"}]
    bad = run("query", db, "SELEC nonsense")
    assert bad.returncode == 1 and "noodlecore-db: [20" in bad.stderr


def test_log_level_shows_library_records_with_structured_fields(tmp_path):
    proc = run("query", f"sqlite:///{tmp_path / 'l.db'}", "SELECT 1 AS x", "--log-level", "debug")
    assert proc.returncode == 0
    assert "DEBUG noodlecore.database.pool: pool created" in proc.stderr
    assert "backend='sqlite'" in proc.stderr
    quiet = run("query", f"sqlite:///{tmp_path / 'l.db'}", "SELECT 1 AS x")
    assert quiet.stderr == ""


# ---------------------------------------------------------------------------
# demo on SQLite: simulated outage, real failover and failback decisions
# ---------------------------------------------------------------------------

def test_demo_json_shows_simulated_outage_failover_and_recovery(tmp_path):
    t0 = time.monotonic()
    proc = run("demo", "--seconds", "1.5", "--json", cwd=tmp_path)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "sqlite" and out["simulated"] is True
    assert out["outage"]["simulated"] is True and out["outage"]["endpoint"] == "a"
    assert "simulated" in out["outage"]["how"] or "flag" in out["outage"]["how"]
    assert 0 < out["outage"]["start"] < out["outage"]["end"]

    fo, fb = out["failover"], out["recovery"]
    assert (fo["kind"], fo["from_endpoint"], fo["to_endpoint"], fo["success"]) == ("failover", "a", "b", True)
    assert fo["metadata"]["triggered_by"] == "monitor"
    assert 0 <= fo["seconds_after"] < 5 and fo["after"] == "outage_start"
    assert isinstance(fo["duration"], float) and fo["duration"] >= 0
    assert (fb["kind"], fb["from_endpoint"], fb["to_endpoint"], fb["success"]) == ("failback", "b", "a", True)
    assert fb["after"] == "outage_end" and fb["seconds_after"] >= 0.2   # recovery_check_interval
    assert fo["at"] < fb["at"]
    kinds = [e["what"] for e in out["timeline"]]
    assert kinds.index("outage_start") < kinds.index("failover") < kinds.index("outage_end") \
        < kinds.index("failback")
    assert all(e["simulated"] for e in out["timeline"] if e["what"].startswith("outage"))

    assert out["failures"] == 0 and out["problems"] == []
    assert out["stats"]["error_count"] == 0 and out["stats"]["query_count"] > 100
    assert out["endpoints"]["a"]["query_count"] > 0 and out["endpoints"]["b"]["query_count"] > 0
    assert out["result"]["orders"] == sum(v["orders"] for v in out["result_by_endpoint"].values()) > 0
    assert out["result_by_endpoint"]["b"]["orders"] > 0      # writes went to b during the outage
    assert out["status"]["current_endpoint"] == "a"
    assert out["status"]["statistics"]["successful_failovers"] == 1
    assert took < 30
    assert list(tmp_path.iterdir()) == []       # nothing left in the working directory


def test_demo_plain_output_says_simulated_without_colour_or_live_line(tmp_path):
    proc = run("demo", "--seconds", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "SIMULATED" in out and "FAILOVER a -> b" in out and "FAILBACK b -> a" in out
    assert "after the outage began" in out and "switch took" in out
    assert "queries:" in out and "errors: 0" in out
    assert "\x1b[" not in out and "\r" not in out


def test_demo_on_a_terminal_has_a_live_progress_line_and_colour(tmp_path):
    import pty
    master, slave = pty.openpty()
    e = env(TERM="xterm")
    proc = subprocess.Popen(cli() + ["demo", "--seconds", "1"], stdin=slave, stdout=slave,
                            stderr=subprocess.PIPE, env=e, cwd=tmp_path)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:         # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(60) == 0, proc.stderr.read()
    proc.stderr.close()
    out = b"".join(chunks).decode(errors="replace")
    assert "\r\x1b[K" in out                    # the progress line is redrawn in place
    assert "\x1b[1;33mFAILOVER" in out           # colour
    assert "queries" in out and "SIMULATED" in out


def test_demo_single_pool_with_db(tmp_path):
    db = tmp_path / "mine.db"
    proc = run("demo", "--db", f"sqlite:///{db}", "--seconds", "0.5", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "single" and out["failures"] == 0 and out["result"]["orders"] > 0
    tables = run("query", f"sqlite:///{db}", "SELECT name FROM sqlite_master WHERE type = 'table'", "--json")
    assert json.loads(tables.stdout) == []       # the demo's table was removed again


# ---------------------------------------------------------------------------
# demo --postgres: a throwaway primary and standby, a real crash
# ---------------------------------------------------------------------------

def _demo_dirs(pid):
    return glob.glob(f"/dev/shm/noodlecore-demo-{pid}-*") + glob.glob(f"/tmp/noodlecore-demo-{pid}-*")


def _processes_in(prefix):
    found = []
    for n in os.listdir("/proc"):
        if n.isdigit():
            try:
                if os.readlink(f"/proc/{n}/cwd").startswith(prefix):
                    found.append(int(n))
            except OSError:
                pass
    return found


def test_demo_postgres_real_crash_promotion_and_failback(tmp_path):
    proc = subprocess.Popen(cli() + ["demo", "--postgres", "--seconds", "2", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    out = json.loads(stdout)
    assert out["mode"] == "postgres" and out["simulated"] is False and out["outage"]["simulated"] is False
    assert "SIGKILL" in out["outage"]["how"] and "pg_ctl promote" in out["outage"]["how"]
    fo, fb = out["failover"], out["recovery"]
    assert (fo["from_endpoint"], fo["to_endpoint"], fo["success"]) == ("a", "b", True)
    assert fo["after"] == "crash" and 0 <= fo["seconds_after"] < 20
    assert (fb["to_endpoint"], fb["success"]) == ("a", True)
    assert fb["after"] == "switchover"
    whats = [e["what"] for e in out["timeline"]]
    assert "crash" in whats and "promoted" in whats and "rejoin" in whats and "switchover" in whats
    assert out["failures"] == 0 and out["problems"] == []
    assert out["result"]["orders"] > 0
    # every acknowledged insert made before the crash may be lost only by asynchronous replication
    # (an insert retried when the workers stopped may be in the table without its acknowledgement)
    assert out["result"]["orders"] <= out["result"]["acknowledged_inserts"] + out["retried"]
    assert out["result"]["rows_on_standby_b"] == out["result"]["orders"]
    roles = {p["id"]: (p["state"], p["role"]) for p in out["final_probe"]}
    assert roles == {"a": ("up", "primary"), "b": ("up", "standby")}
    assert out["status"]["current_endpoint"] == "a"
    # nothing left behind
    assert _demo_dirs(proc.pid) == []


def test_demo_postgres_cleans_up_when_terminated(tmp_path):
    proc = subprocess.Popen(cli() + ["demo", "--postgres", "--seconds", "30"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=tmp_path)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "workers start" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
        dirs = _demo_dirs(proc.pid)
        assert len(dirs) == 1 and _processes_in(dirs[0])    # servers running in there
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "terminated" in stderr
    assert _demo_dirs(proc.pid) == [] and _processes_in(dirs[0]) == []


# ---------------------------------------------------------------------------
# status and watch
# ---------------------------------------------------------------------------

def test_status_of_the_primary(pg):
    proc = run("status", "--endpoint", f"main={pg.dsn()}", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["all_up"] is True
    [ep] = out["endpoints"]
    assert (ep["id"], ep["state"], ep["up"], ep["role"], ep["writable"]) == ("main", "up", True, "primary", True)
    assert ep["backend"] == "postgresql" and ep["version"].startswith("15")
    assert 0 < ep["latency_ms"] < 3000 and ep["connect_ms"] > 0
    assert "standbys" in ep["replication"]
    human = run("status", "--endpoint", f"main={pg.dsn()}")
    assert human.returncode == 0
    header, sep, row = human.stdout.splitlines()[:3]
    assert header.split()[:4] == ["endpoint", "state", "role", "latency"]
    assert row.split()[:3] == ["main", "up", "primary"]
    # a bare DSN is accepted and named ep1; a key=value DSN is not mistaken for ID=DSN
    bare = json.loads(run("status", "--endpoint", pg.kv_dsn(), "--json").stdout)
    assert bare["endpoints"][0]["id"] == "ep1" and bare["endpoints"][0]["up"] is True


def test_status_with_an_unreachable_endpoint_is_down_and_non_zero(pg):
    gone = f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres"
    proc = run("status", "--endpoint", f"main={pg.dsn()}", "--endpoint", f"gone={gone}", "--timeout", "2",
               "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["all_up"] is False
    by_id = {e["id"]: e for e in out["endpoints"]}
    assert by_id["main"]["state"] == "up"
    assert by_id["gone"]["state"] == "down" and by_id["gone"]["up"] is False
    assert isinstance(by_id["gone"]["error_code"], int) and by_id["gone"]["error"]
    human = run("status", "--endpoint", f"gone={gone}", "--timeout", "2")
    assert human.returncode == 1 and "down" in human.stdout and "1 of 1 endpoint(s) down: gone" in human.stderr


def test_status_password_never_shown(pg):
    proc = run("status", "--endpoint", f"x=postgresql://postgres:s3cret@127.0.0.1:{closed_port()}/postgres",
               "--timeout", "1", "--json")
    assert proc.returncode == 1
    assert "s3cret" not in proc.stdout and "s3cret" not in proc.stderr


def test_status_sqlite_and_a_missing_file_is_not_created(tmp_path):
    db = tmp_path / "here.db"
    run("query", f"sqlite:///{db}", "CREATE TABLE t (x INTEGER)")
    missing = tmp_path / "missing.db"
    proc = run("status", "--endpoint", f"here=sqlite:///{db}", "--endpoint", f"missing=sqlite:///{missing}",
               "--json")
    assert proc.returncode == 1
    by_id = {e["id"]: e for e in json.loads(proc.stdout)["endpoints"]}
    assert (by_id["here"]["state"], by_id["here"]["role"]) == ("up", "embedded")
    assert by_id["missing"]["state"] == "down" and "no such database file" in by_id["missing"]["error"]
    assert not missing.exists()


def test_status_of_a_standby_shows_replication(pg_factory):
    p = pg_factory.primary("clip")
    s = pg_factory.standby(p, name="clis")
    p.sql("CREATE TABLE t AS SELECT 1 AS x")
    s.wait_replayed(p)
    proc = run("status", "--endpoint", f"p={p.dsn()}", "--endpoint", f"s={s.dsn()}", "--json")
    assert proc.returncode == 0, proc.stderr
    by_id = {e["id"]: e for e in json.loads(proc.stdout)["endpoints"]}
    assert by_id["p"]["role"] == "primary" and by_id["s"]["role"] == "standby"
    assert by_id["s"]["writable"] is False
    rep = by_id["s"]["replication"]
    assert rep["receiver"] == "streaming" and rep["lag_bytes"] == 0
    assert rep["lag_seconds"] is not None and rep["lag_seconds"] >= 0
    assert rep["upstream"].endswith(f":{p.port}")
    [st] = by_id["p"]["replication"]["standbys"]
    assert st["application_name"] == "clis" and st["state"] == "streaming"
    assert by_id["p"]["replication"]["lag_bytes"] is not None


def test_watch_json_lines_and_plain_lines(pg):
    t0 = time.monotonic()
    proc = run("watch", "--endpoint", f"main={pg.dsn()}", "--count", "3", "--interval", "0.2", "--json")
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [d["round"] for d in docs] == [1, 2, 3]
    assert all(d["endpoints"][0]["role"] == "primary" and d["endpoints"][0]["latency_ms"] > 0 for d in docs)
    assert time.monotonic() - t0 >= 0.4
    plain = run("watch", "--endpoint", f"main={pg.dsn()}", "--count", "2", "--interval", "0.1")
    assert plain.returncode == 0
    lines = plain.stdout.splitlines()
    assert len(lines) == 2 and "round=1" in lines[0] and "round=2" in lines[1]
    assert all("endpoint=main state=up role=primary latency=" in line for line in lines)
    assert "\x1b[" not in plain.stdout


def test_watch_exit_status_is_the_last_rounds(pg):
    gone = f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres"
    proc = run("watch", "--endpoint", f"main={pg.dsn()}", "--endpoint", f"gone={gone}", "--count", "1",
               "--timeout", "1")
    assert proc.returncode == 1 and "endpoint=gone state=down" in proc.stdout


# ---------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------

def test_bench_builtin_micro_bench_json(tmp_path):
    proc = run("bench", "--builtin", "--seconds", "0.3", "--threads", "2", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ran"] == "builtin" and out["backend"] == "sqlite"
    assert set(out["cases"]) == {"borrow_return", "borrow_select1_return", "select1_2_threads"}
    assert all(c["ops"] > 0 and c["ops_per_second"] > 0 for c in out["cases"].values())
    human = run("bench", "--builtin", "--seconds", "0.2", cwd=tmp_path)
    assert human.returncode == 0 and "built-in micro-bench" in human.stdout


def test_bench_builtin_against_a_dsn(pg):
    proc = run("bench", "--dsn", pg.dsn(), "--seconds", "0.3", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ran"] == "builtin" and out["backend"] == "postgresql"
    assert out["cases"]["borrow_select1_return"]["ops"] > 0


def test_bench_says_what_it_would_run():
    import noodlecore
    proc = run("bench", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    checkout = pathlib.Path(noodlecore.__file__).resolve().parent.parent
    if (checkout / "bench" / "run.py").is_file() and (checkout / "csrc").is_dir():
        assert out["ran"] == "bench/run.py" and out["command"][-1].endswith("bench/run.py")
    else:           # installed: no checkout next to the package
        assert out["ran"] == "builtin"
    forced = json.loads(run("bench", "--dry-run", "--builtin", "--json").stdout)
    assert forced["ran"] == "builtin"


# ---------------------------------------------------------------------------
# in-process: endpoint parsing, missing PostgreSQL binaries
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    ("primary=postgresql://db1/app", ("primary", "postgresql://db1/app")),
    ("s1=host=db2 port=5433 dbname=app", ("s1", "host=db2 port=5433 dbname=app")),
    ("host=db2 port=5433", ("ep3", "host=db2 port=5433")),
    ("postgresql://u@h/db?application_name=x", ("ep3", "postgresql://u@h/db?application_name=x")),
    ("local=sqlite:///app.db", ("local", "sqlite:///app.db")),
])
def test_parse_endpoint(spec, expected):
    from noodlecore.database.cli.status import parse_endpoint
    assert parse_endpoint(spec, 3) == expected


def test_demo_postgres_without_server_binaries_says_so(monkeypatch, capsys):
    import logging
    from noodlecore.database.cli.main import main
    from noodlecore.testing import processes
    monkeypatch.setattr(processes, "REQUIRED", ("no-such-postgres-binary",))
    lg = logging.getLogger("noodlecore")
    saved = (lg.handlers[:], lg.level, lg.propagate)
    try:
        rc = main(["demo", "--postgres", "--seconds", "1"])
    finally:
        lg.handlers[:], lg.level, lg.propagate = saved
    err = capsys.readouterr().err
    assert rc == 1
    assert "PostgreSQL server binaries" in err and "NOODLE_PG_BIN" in err and "/usr/lib/postgresql" in err
