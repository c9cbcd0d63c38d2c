"""bench/patroni.py's report: per scenario a table of the figures (median and
min–max over the rounds) with one column per client, the targets, the read
throughput and the borrow cost, and the notes on what was measured.
"""

from __future__ import annotations

from benchlib import fmt_load
from failover_report import cell, med, values

CLIENTS = [("noodle", "noodlecore (from_patroni, failover_wait)"),
           ("multihost", "psycopg_pool, multi-host DSN"),
           ("haproxy", "psycopg_pool, HAProxy /primary")]

ROWS = [
    ("failed requests", "failed", "%d", ""),
    ("  of them writes", "failed_writes", "%d", ""),
    ("client-visible outage: first failure to first success", "outage_ms", "%.0f", " ms"),
    ("longest time without a successful write (failing or waiting)", "write_gap_ms", "%.0f", " ms"),
    ("longest request", "longest_ms", "%.0f", " ms"),
    ("writes lost (acknowledged, not on the new leader)", "writes_lost", "%d", ""),
    ("reads beyond the lag limit", "stale_reads", "%d", ""),
    ("oldest missed write in a read", "max_read_staleness_ms", "%.0f", " ms"),
    ("requests in the window", "requests", "%d", ""),
    ("Patroni: event to new leader writable", "patroni_s", "%.2f", " s"),
]


def render(meta, res, args):
    L = []
    L.append("# noodlecore against the usual answers on a Patroni cluster\n")
    L.append("Host: %s, %d cores, %s; Python %s; PostgreSQL %s; Patroni %s; etcd %s; %s; libpq (psycopg) %s."
             % (meta["cpu"], meta["cores"], meta["kernel"], meta["python"], meta["postgres"], meta["patroni"],
                meta["etcd"], meta["haproxy"], meta["libpq"]))
    L.append("Commit %s%s; %s; load average %s at the start, %s at the end.\n"
             % (meta["git"]["commit"], " (sources modified)" if meta["git"]["dirty_sources"] else "",
                ", ".join(v for v in meta["peer_versions"].values() if v), fmt_load(meta["load_start"]),
                fmt_load(meta.get("load_end"))))
    L.append("3 members, synchronous_mode %s; %d round(s); the steady client alternates a write and a read "
             "with %g ms of pause; lag limit %g s; noodlecore: %s.\n"
             % ("on" if args.synchronous else "off", args.rounds, args.interval * 1e3, args.lag_seconds,
                meta["noodle_config"]))
    if meta.get("not_available"):
        L.append("**Not available in this build:** %s\n" % "; ".join(meta["not_available"]))
    for scen, title in (("switchover", "Patroni switchover (POST /switchover)"),
                        ("kill", "SIGKILL of the leader's postmaster"),
                        ("stall", "A replica's replay stalled for %g s (SIGSTOP of its startup process)"
                         % (3 * args.lag_seconds))):
        L.append("## %s\n" % title)
        cols = [(k, h) for k, h in CLIENTS if res["scenarios"].get(scen, {}).get(k)]
        if not cols:
            L.append("not run\n")
            continue
        L.append("| | " + " | ".join(h for _, h in cols) + " |")
        L.append("|---" * (len(cols) + 1) + "|")
        for label, key, fmt, unit in ROWS:
            L.append("| %s | %s |" % (label, " | ".join(cell(values(res["scenarios"][scen][k], key), fmt, unit)
                                                         for k, _ in cols)))
        L.append("")
        for k, h in cols:
            errs = {}
            for r in res["scenarios"][scen][k]:
                for e, n in r["errors"].items():
                    errs[e] = errs.get(e, 0) + n
            if errs:
                L.append("- %s, errors over all rounds: %s" % (h, ", ".join("%s x%d" % kv for kv in
                                                                              sorted(errs.items()))))
        L.append("")
    L.append("## Targets\n")
    L.append("| target | value | verdict |")
    L.append("|---|---|---|")
    sw = res["scenarios"].get("switchover", {}).get("noodle")
    if sw:
        f = med(values(sw, "failed"))
        L.append("| zero failed requests across a switchover (noodlecore) | %s | %s |"
                 % (cell(values(sw, "failed"), "%d"), "MET" if f == 0 else "NOT MET"))
    kl = res["scenarios"].get("kill", {})
    if kl.get("noodle"):
        # judged on the time without a successful write: a peer that makes its
        # requests wait instead of failing has no "first failure", but its users wait
        mine = med(values(kl["noodle"], "write_gap_ms"))
        peers = [med(values(kl[k], "write_gap_ms")) for k in ("multihost", "haproxy") if kl.get(k)]
        peers = [p for p in peers if p is not None]
        if peers:
            best = min(peers)
            ok = mine * 5 <= best if best > 0 else mine == 0
            L.append("| outage across a kill at least 5x shorter than the best peer (time without a successful write) "
                     "| %.0f ms against %.0f ms | %s |"
                     % (mine, best, "MET" if ok else "NOT MET"))
    for scen in ("switchover", "kill", "stall"):
        for k, h in CLIENTS:
            runs = res["scenarios"].get(scen, {}).get(k)
            if runs:
                lost = sum(values(runs, "writes_lost"))
                stale = sum(values(runs, "stale_reads"))
                L.append("| %s, %s: writes lost 0, reads beyond the lag limit 0 | %d, %d | %s |"
                         % (scen, h, lost, stale, "MET" if lost == 0 and stale == 0 else "NOT MET"))
    L.append("")
    tp = res.get("throughput")
    L.append("## Read throughput: target=\"standby\" (two replicas) against \"primary\"\n")
    if isinstance(tp, dict):
        p, s = values(tp["primary"], "qps"), values(tp["standby"], "qps")
        L.append("%d threads borrowing per query, `SELECT sum(i) FROM generate_series(1, %d) i`, %g s a round.\n"
                 % (args.tp_threads, args.tp_rows, args.tp_seconds))
        L.append("| target | queries/s | served by (borrows per member, last round) |")
        L.append("|---|---|---|")
        L.append("| primary | %s | %s |" % (cell(p, "%.0f"), tp["primary"][-1]["by_port"]))
        L.append("| standby | %s | %s |" % (cell(s, "%.0f"), tp["standby"][-1]["by_port"]))
        if p and s:
            L.append("\nstandby / primary: %.2fx (medians). All members share the host's %d cores."
                     % (med(s) / med(p), meta["cores"]))
    else:
        L.append("not measured: %s" % tp)
    L.append("")
    bc = res.get("borrow")
    L.append("## Borrow + return, Patroni discovery on and off\n")
    if isinstance(bc, dict):
        L.append("`with manager.get_connection(): pass`, %d a round, monitoring on.\n" % args.borrow_ops)
        L.append("| manager | µs per borrow + return |")
        L.append("|---|---|")
        for label, xs in bc.items():
            L.append("| %s | %s |" % (label, cell(xs, "%.2f")))
    else:
        L.append("not measured: %s" % bc)
    L.append("")
    L.append("## What was measured\n")
    L.append("- Each round runs each scenario once per client, one client at a time, on the same cluster; "
             "the cluster is whole again (every member streaming%s) before each." %
             (", a synchronous standby named" if args.synchronous else ""))
    L.append("- The window starts when the switchover is asked for (or the postmaster is killed) and ends "
             "%g s after the client's first successful write and read once the cluster is whole again." % args.settle)
    L.append("- Outage: from the start of the first failed request to the end of the first request of the same "
             "kind (write or read) that succeeded after the last failed one; 0 when nothing failed. A request "
             "that waits (noodlecore's failover_wait) is not a failure: see the longest request and the "
             "longest time without a successful write.")
    L.append("- Writes lost: acknowledged INSERTs of the round not found on the new leader once the cluster is "
             "whole again. Reads beyond the lag limit: reads that did not see a write acknowledged more than "
             "%g s before the read began (the lag limit in time; the writes are too small for the bytes limit "
             "to matter)." % args.lag_seconds)
    L.append("- Patroni's own change of leader (about 1 s after a kill, 1.5-2 s for a switchover) bounds every "
             "client's time without a successful write from below: against a peer already near that floor the "
             "5x target cannot be met by any client.")
    L.append("- The stall: a replica other than the leader and the synchronous standby stops replaying for "
             "3 lag limits while it goes on receiving WAL; Patroni's `/replica` check and libpq's "
             "prefer-standby still take it, noodlecore measures its lag from the WAL positions it probes.")
    L.append("- HAProxy runs Patroni's template settings (check inter 3s, fall 3, rise 2, "
             "on-marked-down shutdown-sessions); the peers borrow with `check=ConnectionPool.check_connection`.")
    L.append("")
    return "\n".join(L) + "\n"
