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

pytestmark = [pytest.mark.once, pytest.mark.patroni]


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
    assert [f["after"] for f in fos[:2]] == ["switchover", "kill"], fos
    assert fos[0]["to_endpoint"] != fos[1]["to_endpoint"]
    whats = [e["what"] for e in out["timeline"]]
    assert whats.index("switchover") < whats.index("kill") < whats.index("rejoin")
    # synchronous mode: every acknowledged insert is on the new leader (an insert retried
    # when the workers stopped may be there without its acknowledgement)
    r = out["result"]
    assert r["acknowledged_inserts"] > 0
    assert r["acknowledged_inserts"] <= r["orders"] <= r["acknowledged_inserts"] + out["retried"]
    # reads went to standbys: the readers' borrows, and the members that served them
    assert r["reads_on_standbys"] > 0 and r["failed_reads"] == 0
    assert sum(s["reads"] for s in out["served"].values()) >= r["reads_on_standbys"]
    roles = sorted(m["role"] for m in out["patroni_members"])
    assert roles.count("leader") == 1 and len(roles) == 3
    assert out["status"]["endpoints"][fos[1]["to_endpoint"]]["role"] == "primary"
    # nothing left behind: the cluster's directory and its processes
    dirs = glob.glob("/dev/shm/ncpg-%d-*" % proc.pid)
    assert dirs == []
    assert _pids_under("/dev/shm/ncpg-%d-" % proc.pid) == []
