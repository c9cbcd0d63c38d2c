"""``noodlecore-db demo --patroni``: the demo on a real Patroni cluster.

Owns the demo's script on Patroni: a throwaway cluster of 3 members
(noodlecore.testing.patroni: etcd and Patroni under tini, on 127.0.0.1) in
synchronous mode, a DatabaseFailoverManager made from the members' REST URLs
(``from_patroni``) with ``failover_wait``, writers on the primary and readers
with ``target="standby"``, then a Patroni switchover and a SIGKILL of the new
leader's postmaster, and the report (rows kept against acknowledged inserts,
reads and writes each member served, Patroni's view at the end).  Everything
is removed at the end, also on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request
from typing import Any, Dict, List, Optional

from ...testing import PgHarnessError
from ..failover_manager import DatabaseFailoverManager, FailoverConfig
from .output import EXIT_FAIL, EXIT_OK, Style, fmt_ms, is_tty, print_error, print_json, render_table
from .workload import (CREATE_SQL, SELECT_SQL, TABLE, Display, Workload, event_dict, event_text, final_lines,
                       manager_progress, print_problems, sleep_until, sum_stats, wait_until)

MEMBER_DSN = "user=postgres dbname=postgres"


class Readers:
    """Threads reading on standbys (target="standby"), each read with its own borrow;
    a failed read is counted, never retried, and the reader pauses 0.25 s after it."""

    def __init__(self, mgr: DatabaseFailoverManager, threads: int):
        self.mgr = mgr
        self.stop_event = threading.Event()
        self.ok = [0] * threads
        self.failed = [0] * threads
        self.errors: List[str] = []
        self.threads = [threading.Thread(target=self._run, args=(k,), name=f"demo-reader-{k}", daemon=True)
                        for k in range(threads)]

    def _run(self, k: int) -> None:
        while not self.stop_event.is_set():
            try:
                with self.mgr.get_connection(timeout=5, target="standby") as conn:
                    conn.execute_query(SELECT_SQL, {"w": k})
                self.ok[k] += 1
            except Exception as exc:        # counted and shown
                self.failed[k] += 1
                if len(self.errors) < 10:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self.stop_event.wait(0.25)   # the monitor's probes see a member go within that

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(15)


def _synchronous_mode(cluster: Any) -> None:
    """Patroni's synchronous_mode on (PATCH /config), so that an acknowledged commit is on
    two members and survives the kill; waits until Patroni names a sync standby."""
    leader = cluster.leader()
    req = urllib.request.Request(leader.api_url + "/config", data=json.dumps({"synchronous_mode": True}).encode(),
                                 method="PATCH", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10):
        pass
    if not wait_until(lambda: _sync_standby(cluster) is not None, 60, step=0.1):
        raise PgHarnessError("Patroni named no synchronous standby within 60 s")


def _sync_standby(cluster: Any) -> Optional[Any]:
    for x in (cluster.cluster_view() or {}).get("members", []):
        if "sync" in (x.get("role") or ""):
            return cluster.member(x["name"])
    return None


def run_patroni_demo(args: argparse.Namespace, style: Style) -> int:
    from ...testing.patroni import PatroniCluster
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    s = float(args.seconds)
    t_setup = time.monotonic()
    try:
        cluster = PatroniCluster(n=3)
    except PgHarnessError as exc:
        print_error(f"demo --patroni: {exc}")
        return EXIT_FAIL
    mgr = None
    display = None
    work = readers = None
    try:
        say(style(f"noodlecore demo --patroni: {args.threads} writer threads and 2 readers on standbys, a pool "
                  f"of {args.pool_size} connections per member, at least {s:g} s of load", "bold"))
        say(f"  starting etcd and 3 Patroni members (each under tini) in {cluster.root}")
        cluster.start()
        _synchronous_mode(cluster)
        leader = cluster.leader()
        version = leader.sql("SHOW server_version")[0][0].split()[0]
        leader.sql(CREATE_SQL)
        cluster.wait_healthy(timeout=60)
        setup = time.monotonic() - t_setup
        say(f"  ready in {setup:.1f} s: PostgreSQL {version}; leader {leader.name}, synchronous standby "
            f"{_sync_standby(cluster).name}; REST APIs {', '.join(cluster.api_urls)}; nothing here is simulated")
        cfg = FailoverConfig(health_check_interval=0.1, health_check_timeout=1.0, failover_timeout=5,
                             hold_down=0.0, recovery_check_interval=1.0, failover_wait=10.0,
                             pool_max_connections=args.pool_size, pool_timeout=10,
                             pool_options={"connect_timeout": 1, "retry_attempts": 1})
        mgr = DatabaseFailoverManager.from_patroni(cluster.api_urls, dsn=MEMBER_DSN, config=cfg)
        mgr.start_monitoring()
        if not wait_until(lambda: sorted(e["role"] for e in mgr.get_status()["endpoints"].values())
                          == ["primary", "standby", "standby"], 15):
            raise PgHarnessError(f"the monitor did not see one primary and two standbys: "
                                 f"{mgr.get_status()['endpoints']}")
        say("  the manager, from Patroni's /cluster: " + ", ".join(
            f"{e.id} ({e.metadata['patroni']['role']})" for e in mgr.endpoints))
        work = Workload(mgr.get_connection, args.threads)
        readers = Readers(mgr, 2)
        display = Display(live=is_tty() and not args.json, quiet=args.json, style=style, progress=lambda: "")
        refs: Dict[str, Optional[float]] = {"switchover": None, "kill": None}
        events: List[dict] = []

        def on_event(ev: Any) -> None:
            ref_name = "kill" if refs["kill"] else "switchover"
            d = event_dict(ev, display, refs[ref_name], ref_name)
            events.append(d)
            what = "the kill" if ref_name == "kill" else "the switchover was asked for"
            when = f"{fmt_ms(d['seconds_after'])} after {what}" if d["seconds_after"] is not None else ""
            display.note(d["kind"], event_text(ev, when, style), wall=ev.timestamp.timestamp(),
                         event_id=ev.event_id)

        mgr.add_listener(on_event)
        display.start()
        t0 = time.monotonic()
        display.progress = manager_progress(mgr, work, t0, style)
        display.note("load", f"{args.threads} writers (1 INSERT in 4, else a SELECT) on the primary, 2 readers "
                     "with target=\"standby\"")
        work.start()
        readers.start()
        sleep_until(t0 + max(1.0, 0.25 * s))

        # 1. a planned switchover to the synchronous standby (Patroni's REST API)
        cand = _sync_standby(cluster)
        refs["switchover"] = time.time()
        display.note("switchover", f"Patroni switchover {leader.name} -> {cand.name} (POST /switchover)",
                     wall=refs["switchover"], colour="yellow")
        t = time.monotonic()
        new = cluster.switchover(cand)
        display.note("leader", f"{new.name} is Patroni's leader and takes writes "
                     f"({fmt_ms(time.monotonic() - t)} after the request)", colour="cyan")
        cluster.wait_healthy(timeout=60)
        if not wait_until(lambda: _sync_standby(cluster) is not None, 60, step=0.1):
            raise PgHarnessError("no synchronous standby after the switchover")
        sleep_until(time.monotonic() + max(0.5, 0.15 * s))

        # 2. SIGKILL of the leader's postmaster: Patroni promotes the synchronous standby
        old = cluster.leader()
        refs["kill"] = time.time()
        display.note("kill", f"KILL: SIGKILL to {old.name}'s postmaster (pid {old.postmaster_pid()}); Patroni "
                     "itself goes on", wall=refs["kill"], colour="red", simulated=False)
        t = time.monotonic()
        cluster.kill_leader_postgres()
        new = cluster.wait_new_leader(old, timeout=60)
        display.note("leader", f"{new.name} is Patroni's leader and takes writes "
                     f"({fmt_ms(time.monotonic() - t)} after the kill)", colour="cyan")
        cluster.wait_healthy(timeout=90)
        display.note("rejoin", f"{old.name} streams again as a replica (Patroni restarted it)", colour="cyan")
        sleep_until(max(t0 + s, time.monotonic() + 0.5))
        work.stop()
        readers.stop()
        elapsed = time.monotonic() - t0
        mgr.get_events()
        time.sleep(0.05)
        display.close()
        status = mgr.get_status()
        per = {e.id: mgr.get_pool(e.id).get_stats() for e in mgr.endpoints}
        orders, total = new.sql(f"SELECT count(*), coalesce(sum(amount), 0)::float8 FROM {TABLE} "
                                f"WHERE id >= {work.base} AND id < {work.base + 2 ** 31}")[0]
        view = mgr.patroni_cluster()
    except PgHarnessError as exc:
        if display is not None:
            display.close()
        print_error(f"demo --patroni: {exc}")
        return EXIT_FAIL
    finally:
        for w in (work, readers):
            if w is not None:
                w.stop()
        if display is not None:
            display.close()
        if mgr is not None:
            mgr.shutdown()
        cluster.close()
    stats = sum_stats(list(per.values()))
    per_d = {k: v.to_dict() for k, v in per.items()}
    acked = work.total("inserts")
    reads_ok, reads_failed = sum(readers.ok), sum(readers.failed)
    served = {eid: {"role": e["role"], "reads": e["reads"], "writes": e["writes"], "lag_bytes": e["lag_bytes"]}
              for eid, e in status["endpoints"].items()}
    failovers = [e for e in events if e["kind"] in ("failover", "resumed") and e["success"]]
    problems = []
    if work.total("failures"):
        problems.append(f"{work.total('failures')} operation(s) failed after 10 s of retries")
    if work.crashed:
        problems.append(f"a worker thread died: {work.crashed[0]!r}")
    if int(orders) < acked:
        problems.append(f"{acked - int(orders)} acknowledged insert(s) are not on the new leader")
    for step in ("switchover", "kill"):
        if not any(e["after"] == step for e in failovers):
            problems.append(f"the manager did not switch to a new primary after the {step}")
    leader_now = next((m["name"] for m in view["members"] if m["role"] == "leader"), None)
    if status["current_endpoint"] != leader_now:
        problems.append(f"the manager writes to {status['current_endpoint']}, Patroni's leader is {leader_now}")
    if not reads_ok:
        problems.append("no read was served by a standby")
    members = [{"name": m["name"], "role": m["role"], "state": m["state"], "timeline": m["timeline"],
                "lag_bytes": m.get("routing_lag")} for m in view["members"]]
    result = {"orders": int(orders), "total": round(float(total), 2), "acknowledged_inserts": acked,
              "reads_on_standbys": reads_ok, "failed_reads": reads_failed}
    if args.json:
        print_json({
            "mode": "patroni", "simulated": False, "server_version": version,
            "events": events, "failovers": failovers, "timeline": display.timeline, "stats": stats,
            "endpoints": per_d, "served": served, "result": result, "failures": work.total("failures"),
            "retried": work.total("retried"), "errors_seen": work.last_errors, "read_errors": readers.errors,
            "threads": args.threads, "pool_size": args.pool_size, "seconds": elapsed, "setup_seconds": setup,
            "status": status, "patroni_members": members, "problems": problems,
        })
    else:
        print(render_table([{"orders": result["orders"], "total": result["total"], "acknowledged inserts": acked,
                             "reads on standbys": reads_ok, "failed reads": reads_failed}], style))
        print(render_table([{"member": k, **v} for k, v in served.items()], style))
        print(render_table(members, style))
        for line in final_lines(stats, per_d, elapsed, work, style):
            print(line)
        if readers.errors:
            print(style("  read errors: " + "; ".join(readers.errors[:3]), "dim"))
        print_problems(problems, work, style)
    return EXIT_FAIL if problems else EXIT_OK
