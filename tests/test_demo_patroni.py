"""``noodlecore-db demo --patroni`` on a real Patroni cluster (etcd + 3 Patroni
members, started by the demo itself through noodlecore.testing.patroni): a
switchover and a kill of the leader's postmaster under load, reads on standbys,
no acknowledged insert lost (synchronous mode), everything removed afterwards.

Marked `once` and `patroni`: tests/run.sh runs it in the pytest-python3 stage
only (where NOODLE_PATRONI_BIN names the Patroni it built).  A missing Patroni,
etcd or tini fails the test, never skips it.
"""

import glob
import json
import os
import pathlib
import subprocess
import sys

import pytest

from helpers import subprocess_env

pytestmark = pytest.mark.once


def cli():
    script = pathlib.Path(sys.executable).parent / "noodlecore-db"
    return [str(script)] if script.exists() else [sys.executable, "-m", "noodlecore.database"]


def _pids_under(root):
    """Processes whose cwd is inside root (the harness starts every process there)."""
    found = []
    for p in glob.glob("/proc/[0-9]*"):
        try:
            if os.readlink(p + "/cwd").startswith(root):
                found.append(int(p.rsplit("/", 1)[1]))
        except OSError:
            pass
    return found


def test_demo_patroni_switchover_kill_and_reads_on_standbys(tmp_path):
    env = subprocess_env()
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(cli() + ["demo", "--patroni", "--seconds", "1", "--threads", "4", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:] + stdout[-3000:]
    out = json.loads(stdout)
    assert out["mode"] == "patroni" and out["simulated"] is False
    assert out["problems"] == [] and out["failures"] == 0
    # the manager followed both changes of leader: the switchover, then the kill
    fos = out["failovers"]
    after_switchover = [f for f in fos if f["after"] == "switchover"]
    after_kill = [f for f in fos if f["after"] == "kill"]
    assert after_switchover and after_kill, fos
    assert after_switchover[-1]["to_endpoint"] != after_kill[-1]["to_endpoint"]
    leader = [m["name"] for m in out["patroni_members"] if m["role"] == "leader"]
    assert leader == [after_kill[-1]["to_endpoint"]] == [out["status"]["current_endpoint"]]
    whats = [e["what"] for e in out["timeline"]]
    assert whats.index("switchover") < whats.index("kill") < whats.index("rejoin")
    # synchronous mode: every acknowledged insert is on the new leader (an insert retried
    # when the workers stopped may be there without its acknowledgement)
    r = out["result"]
    assert r["acknowledged_inserts"] > 0
    assert r["acknowledged_inserts"] <= r["orders"] <= r["acknowledged_inserts"] + out["retried"]
    # reads went to standbys: the readers' borrows, and the members that served them.  A read
    # fails only when the standby it runs on goes away under it (Patroni restarts a demoted
    # leader, and the killed one), until the monitor's probes (every 0.1 s) see it: a couple
    # per reader (2, each pausing 0.25 s after a failure) per restart (3 at most); a routing
    # that kept sending reads to a member that is down would fail dozens
    assert r["reads_on_standbys"] > 0
    assert r["failed_reads"] <= 12, out["read_errors"]
    assert all("[2004] connection lost" in e for e in out["read_errors"]), out["read_errors"]
    assert sum(s["reads"] for s in out["served"].values()) >= r["reads_on_standbys"]
    roles = sorted(m["role"] for m in out["patroni_members"])
    assert roles.count("leader") == 1 and len(roles) == 3
    assert out["status"]["endpoints"][leader[0]]["role"] == "primary"
    # nothing left behind: the cluster's directory and its processes
    dirs = glob.glob("/dev/shm/ncpg-%d-*" % proc.pid)
    assert dirs == []
    assert _pids_under("/dev/shm/ncpg-%d-" % proc.pid) == []
