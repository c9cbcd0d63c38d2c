"""bench/patroni.py's rounds: one scenario (a Patroni switchover or a SIGKILL of
the leader's postmaster) under one client, and what its log says; the read
throughput of target="standby" against the primary; the borrow cost with
Patroni discovery on and off.
"""

from __future__ import annotations

import bisect
import collections
import json
import threading
import time
import urllib.request

from patroni_clients import (NotAvailable, noodle_features, patroni_manager, static_manager,
                             wait_manager_ready, wait_until)


# ---------------------------------------------------------------------------
# the cluster
# ---------------------------------------------------------------------------

def patch_config(cl, body):
    """PATCH /config on the leader's REST API (Patroni's dynamic configuration)."""
    leader = cl.leader()
    req = urllib.request.Request(leader.api_url + "/config", data=json.dumps(body).encode(), method="PATCH",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def sync_standby(cl):
    for x in (cl.cluster_view() or {}).get("members", []):
        if "sync" in (x.get("role") or ""):
            return cl.member(x["name"])
    return None


def set_synchronous(cl, on, timeout=60):
    """Patroni's synchronous_mode on (one sync standby: every acknowledged commit is on
    two members) or off; waits until Patroni names a sync standby (or none)."""
    patch_config(cl, {"synchronous_mode": bool(on)})
    wait_until(lambda: (sync_standby(cl) is not None) == bool(on), timeout,
               "Patroni to %s a synchronous standby" % ("name" if on else "drop"), step=0.1)


def settle(cl, args):
    """Every member streaming again (and a sync standby named, in synchronous mode)."""
    cl.wait_healthy(timeout=90)
    if args.synchronous:
        wait_until(lambda: sync_standby(cl) is not None, 60, "a synchronous standby", step=0.1)


# ---------------------------------------------------------------------------
# one scenario under one client
# ---------------------------------------------------------------------------

def provoke(cl, scenario, args):
    """Do the scenario; returns the member that leads after it."""
    if scenario == "switchover":
        cand = sync_standby(cl) if args.synchronous else None   # Patroni refuses others in sync mode
        return cl.switchover(cand)
    if scenario == "kill":
        old = cl.kill_leader_postgres()
        return cl.wait_new_leader(old)
    if scenario == "stall":
        # a replica that stops replaying (SIGSTOP of its startup process) for 3 lag
        # limits: still streaming and "healthy" to Patroni's /replica check, but stale;
        # not the synchronous standby (Patroni might pick another one meanwhile)
        leader = cl.leader()
        sync = sync_standby(cl)
        victim = next(m for m in cl.members if m is not leader and m is not sync)
        cl.stall_replay(victim)
        try:
            time.sleep(3 * args.lag_seconds)   # the stall is the scenario: its length is the point
        finally:
            cl.resume_replay(victim)
        return leader
    raise ValueError(scenario)


def run_scenario(cl, make_client, scenario, run_id, args, say):
    """One round: the client runs, the scenario happens, the client runs on until the
    cluster is whole again plus --settle seconds; then its log is analysed and the
    acknowledged writes are looked for on the new leader."""
    from patroni_clients import SteadyClient
    settle(cl, args)
    impl = make_client()
    client = None
    try:
        client = SteadyClient(impl, run_id, args.interval)
        client.start()
        t_start = time.monotonic()
        wait_until(lambda: client.ok_count(t_start, "w") >= 20 and client.ok_count(t_start, "r") >= 20, 30,
                   "the client to run")
        t_ev = time.monotonic()
        leader = provoke(cl, scenario, args)
        t_leader = time.monotonic()
        settle(cl, args)
        # on until a write and a read succeeded after the cluster was whole, then --settle more
        t_whole = time.monotonic()
        wait_until(lambda: client.ok_count(t_whole, "w") >= 1 and client.ok_count(t_whole, "r") >= 1, 60,
                   "a successful write and read after the %s" % scenario)
        time.sleep(args.settle)
        client.stop()
        log = list(client.log)
        present = {int(r[0]) for r in leader.sql("SELECT seq FROM bench_ha WHERE run = '%s'" % run_id,
                                                 timeout=30)}
        out = analyse(log, t_ev, present, args)
        if scenario != "stall":
            out["patroni_s"] = t_leader - t_ev
        out["new_leader"] = leader.name
        return out
    finally:
        if client is not None and client.is_alive():
            client.stop()
        impl.close()


def analyse(log, t_ev, present, args):
    """The figures of one round from the client's log (see bench/README.md)."""
    window = [r for r in log if r[2] > t_ev]        # requests that ended after the event began
    errs = [r for r in window if r[5] is not None]
    out = {
        "requests": len(window),
        "failed": len(errs),
        "failed_writes": sum(1 for r in errs if r[0] == "w"),
        "failed_reads": sum(1 for r in errs if r[0] == "r"),
        "errors": dict(collections.Counter(r[5].split(":")[0] for r in errs)),
        "error_sample": [r[5] for r in errs[:3]],
        "longest_ms": 1e3 * max((r[2] - r[1] for r in window), default=0.0),
    }
    # client-visible outage, per kind: from the start of the first failed request to
    # the end of the first success of the same kind that started after the last failure
    outage = 0.0
    for kind in ("w", "r"):
        ke = [r for r in errs if r[0] == kind]
        if not ke:
            continue
        last = ke[-1][1]
        ok = next((r for r in window if r[0] == kind and r[5] is None and r[1] > last), None)
        end = ok[2] if ok else window[-1][2]
        outage = max(outage, end - ke[0][1])
    out["outage_ms"] = 1e3 * outage
    # the longest time without a successful write (from the last one before the event)
    oks = [r[2] for r in log if r[0] == "w" and r[5] is None]
    k = bisect.bisect_left(oks, t_ev)
    pts = oks[max(0, k - 1):]
    out["write_gap_ms"] = 1e3 * max((b - a for a, b in zip(pts, pts[1:])), default=0.0)
    # writes lost: acknowledged here, absent on the new leader
    acked = [r[4] for r in log if r[0] == "w" and r[5] is None]
    out["writes_acked"] = len(acked)
    out["writes_lost"] = sum(1 for s in acked if s not in present)
    # reads beyond the lag limit (whole run): a read that did not see a write
    # acknowledged more than --lag-seconds before the read began
    acks = [(r[2], r[4]) for r in log if r[0] == "w" and r[5] is None]
    ack_t = [a[0] for a in acks]
    stale = 0
    worst = 0.0
    reads_by_port = collections.Counter()
    for r in log:
        if r[0] != "r" or r[5] is not None:
            continue
        reads_by_port[r[3]] += 1
        j = bisect.bisect_right(ack_t, r[1] - args.lag_seconds)
        if j and r[4] < acks[j - 1][1]:
            stale += 1
        # how old the newest write this read missed was (0 when it saw all acknowledged before it)
        j2 = bisect.bisect_right(ack_t, r[1])
        missed = next((acks[i] for i in range(j2) if acks[i][1] > r[4]), None)
        if missed:
            worst = max(worst, r[1] - missed[0])
    out["reads"] = sum(reads_by_port.values())
    out["stale_reads"] = stale
    out["max_read_staleness_ms"] = 1e3 * worst
    out["reads_by_port"] = {str(k): v for k, v in reads_by_port.items()}
    return out


# ---------------------------------------------------------------------------
# read throughput: target="standby" over the replicas against the primary alone
# ---------------------------------------------------------------------------

def read_throughput(cl, args, say):
    feats = noodle_features()
    if not (feats["from_patroni"] and feats["target"]):
        raise NotAvailable("from_patroni or get_connection(target=) is not available in this build")
    settle(cl, args)
    m = patroni_manager(cl, args)
    rounds = {"primary": [], "standby": []}
    try:
        m.start_monitoring()
        wait_manager_ready(m, len(cl.members))
        q = "SELECT sum(i) FROM generate_series(1, %d) i" % args.tp_rows
        for k in range(args.rounds):
            order = ("primary", "standby") if k % 2 == 0 else ("standby", "primary")
            for target in order:
                n, ports = _tp_once(m, target, q, args.tp_threads, args.tp_seconds)
                rounds[target].append({"qps": n / args.tp_seconds, "by_port": ports})
                say("read throughput round %d, target=%s: %.0f q/s %s" % (k + 1, target, n / args.tp_seconds,
                                                                         ports))
    finally:
        m.shutdown()
    return rounds


def _tp_once(m, target, q, threads, seconds):
    """Queries done by `threads` threads borrowing per query for `seconds`, and the
    borrows each endpoint served meanwhile (the manager's reads + writes counters)."""
    counts = [0] * threads
    go = threading.Event()
    stop = threading.Event()
    errors = []

    def served():
        return {k: (v.get("reads") or 0) + (v.get("writes") or 0) for k, v in m.get_status()["endpoints"].items()}

    def work(i):
        go.wait()
        try:
            while not stop.is_set():
                with m.get_connection(timeout=10, target=target) as c:
                    c.execute_query(q)
                counts[i] += 1
        except Exception as e:
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    before = served()
    go.set()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join(30)
    if errors:
        raise errors[0]
    after = served()
    return sum(counts), {k: after[k] - before.get(k, 0) for k in after}


# ---------------------------------------------------------------------------
# the added cost of routing: borrow + return with Patroni discovery on and off
# ---------------------------------------------------------------------------

def borrow_cost(cl, args, say):
    feats = noodle_features()
    if not feats["from_patroni"]:
        raise NotAvailable("from_patroni is not available in this build")
    settle(cl, args)
    cases = [("static endpoints, primary", static_manager, "primary"),
             ("from_patroni, primary", patroni_manager, "primary")]
    if feats["target"]:
        cases.append(("from_patroni, standby", patroni_manager, "standby"))
    managers = {}
    res = {c[0]: [] for c in cases}
    try:
        for label, make, _ in cases:
            if make not in managers:
                m = make(cl, args)
                m.start_monitoring()
                wait_manager_ready(m, len(cl.members))
                managers[make] = m
        for k in range(args.rounds):
            for label, make, target in (cases if k % 2 == 0 else cases[::-1]):
                m = managers[make]
                kw = {"target": target} if feats["target"] else {}
                for _ in range(200):            # warm: every connection made
                    with m.get_connection(**kw):
                        pass
                t0 = time.perf_counter()
                for _ in range(args.borrow_ops):
                    with m.get_connection(**kw):
                        pass
                us = (time.perf_counter() - t0) / args.borrow_ops * 1e6
                res[label].append(us)
            say("borrow cost round %d: %s" % (k + 1, ", ".join("%s %.2f us" % (lb, res[lb][-1]) for lb in res)))
    finally:
        for m in managers.values():
            m.shutdown()
    return res

