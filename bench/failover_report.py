"""bench/failover.py's report: the targets, the cells (median, min–max over
the rounds), the Markdown table with its verdicts, the notes on what was
measured, and the per-round samples.
"""

from __future__ import annotations

import collections
import statistics

from benchlib import fmt_load

# the report's targets
TARGET_SWITCH_MS, AIM_SWITCH_MS = 100.0, 20.0
TARGET_RECOVERY_MS = 200.0
TARGET_PROBE_US = 1000.0
TARGET_RSS_MB, AIM_RSS_MB = 10.0, 5.0


def values(runs, *path):
    out = []
    for r in runs:
        v = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if v is not None:
            out.append(v)
    return out


def med(xs):
    return statistics.median(xs) if xs else None


def cell(xs, fmt="%.1f", unit=""):
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return (fmt % xs[0]) + unit
    return "%s%s (%s–%s)" % (fmt % med(xs), unit, fmt % min(xs), fmt % max(xs))


def verdict(value, limit, aim=None):
    if value is None:
        return "n/a"
    if value >= limit:
        return "NOT MET"
    if aim is not None:
        return "MET (aim %s)" % ("met" if value < aim else "not met")
    return "MET"


COLUMNS = [
    ("noodle", "noodlecore (defaults)"),
    ("noodle_r1", "noodlecore, `pool_options={'retry_attempts': 1}`"),
    ("psycopg_default", "psycopg_pool, default `check=None`"),
    ("psycopg_check", "psycopg_pool, `check=ConnectionPool.check_connection`"),
]


def render(meta, res, args):
    probe, rss = res["probe"], res["rss"]
    L = ["# noodlecore failover benchmark", ""]
    L.append("- Date: %s" % meta["date"])
    L.append("- Machine: %s, %d cores, %s; Python %s; PostgreSQL %s, primary + async hot standby "
             "on the same host (TCP 127.0.0.1, fsync off, data in /dev/shm); load average %s at the "
             "start, %s at the end"
             % (meta["cpu"], meta["cores"], meta["kernel"], meta["python"], meta["postgres"],
                fmt_load(meta["load_start"]), fmt_load(meta["load_end"])))
    L.append("- noodlecore %s (git %s%s, %s); %s"
             % (meta["noodlecore_version"] or "?", meta["git"]["commit"],
                " + uncommitted changes" if meta["git"]["dirty_sources"] else "",
                "wheel of the work tree in bench/.venv" if args.noodle_from == "wheel" else "in-place build",
                "; ".join(v for k, v in meta["peer_versions"].items() if k in
                          ("psycopg", "psycopg-binary", "psycopg-pool") and v)))
    L.append("- %d rounds; cells are `median (min–max)` over them. Steady client: one thread, "
             "`SELECT inet_server_port()` and `INSERT ... RETURNING inet_server_port()` alternately, "
             "a %g ms pause after each request. noodlecore manager: %s."
             % (args.runs, args.interval * 1e3, meta["noodle_config"]))
    L.append("")
    cols = [c for c in COLUMNS if res.get(c[0])]
    L.append("| measurement | " + " | ".join(c[1] for c in cols) + " | target | result |")
    L.append("|---|" + "---:|" * len(cols) + "---|---|")

    def row(label, path, fmt="%.1f", only=None, target="", judge=None, extra=None):
        cells, verdicts = [], []
        for key, name in cols:
            if extra is not None:
                xs = extra.get(key)
            elif only is not None and key not in only:
                xs = None
            else:
                xs = values(res[key], *path)
            if xs is None:
                cells.append("n/a")
                continue
            if not xs and path and path[-1] in ("client_first_error_ms",):
                cells.append("no failure")
                continue
            cells.append(cell(xs, fmt))
            if judge and key.startswith("noodle") and xs:
                v = judge(med(xs))
                over = sum(1 for x in xs if judge(x) == "NOT MET")
                if over and v != "NOT MET":
                    v += ", but %d of %d rounds over the target" % (over, len(xs))
                verdicts.append("%s: %s" % ("defaults" if key == "noodle" else "retry_attempts=1", v))
        L.append("| %s | %s | %s | %s |" % (label, " | ".join(cells), target, "; ".join(verdicts)))

    NOODLE = ("noodle", "noodle_r1")
    row("**Detection**, ms: SIGKILL of the primary → the manager's first decision (event timestamp)",
        ("crash", "detection_ms"), only=NOODLE)
    row("client's first failed request after the SIGKILL, ms (when it ended)",
        ("client_first_error_ms",), extra={
            k: (values(res[k], "crash", "client_first_error_ms") if k.startswith("noodle")
                else values(res[k], "client_first_error_ms")) for k, _ in cols})
    row("promotion of the standby, ms (`promote()`: signal, then psql polls `pg_is_in_recovery()` "
        "every 10 ms; started right after the crash; **not** part of the switch time)", (), extra={
            k: (values(res[k], "crash", "promote_ms") if k.startswith("noodle")
                else values(res[k], "promote_ms")) for k, _ in cols})
    row("`promote()` returned → the manager's failover decision, ms (the next probe of the standby; "
        "negative: a probe saw it writable before `promote()` noticed)",
        ("crash", "promoted_to_decision_ms"), only=NOODLE)
    row("**Switch**, ms: failover decision → end of the first successful query on the new primary",
        ("crash", "switch_ms"), only=NOODLE,
        target="< %g ms (aim < %g)" % (TARGET_SWITCH_MS, AIM_SWITCH_MS),
        judge=lambda v: verdict(v, TARGET_SWITCH_MS, AIM_SWITCH_MS))
    row("of which inside the manager (event `duration`: verification probe + switch), ms",
        ("crash", "switch_in_manager_ms"), fmt="%.2f", only=NOODLE)
    row("client-visible outage, ms: SIGKILL → first successful query on the new primary "
        "(**includes** the promotion)", (), extra={
            k: (values(res[k], "crash", "outage_ms") if k.startswith("noodle")
                else values(res[k], "outage_ms")) for k, _ in cols})
    row("**failed requests** across one crash-and-promote (exceptions the client saw)", (), fmt="%g", extra={
        k: (values(res[k], "crash", "failed") if k.startswith("noodle") else values(res[k], "failed"))
        for k, _ in cols})
    row("longest single request in that window, ms", (), extra={
        k: (values(res[k], "crash", "longest_ms") if k.startswith("noodle") else values(res[k], "longest_ms"))
        for k, _ in cols})
    row("**Recovery**, ms: failback decision → end of the first successful query on the preferred "
        "endpoint (after a planned switchover back: `stop('fast')` of the current primary, `promote()` "
        "of the preferred)", ("failback", "recovery_ms"), only=NOODLE,
        target="< %g ms" % TARGET_RECOVERY_MS, judge=lambda v: verdict(v, TARGET_RECOVERY_MS))
    row("switchover outage, ms: `stop` of the current primary → first successful query on the "
        "preferred (includes stop and promotion)", ("failback", "outage_ms"), only=NOODLE)
    row("failed requests during the switchover back", ("failback", "failed"), fmt="%g", only=NOODLE)
    pus = [r["us_per_probe"] for r in probe["rounds"]]
    row("**Probe cost**, µs of process CPU per probe ((CPU with monitoring on − off) / probes; 2 "
        "endpoints, health_check_interval=%g s)" % probe["interval"], (), fmt="%.0f",
        extra={"noodle": pus}, target="< 1 ms CPU",
        judge=lambda v: verdict(v, TARGET_PROBE_US))
    row("of which the monitor's own threads (their schedstat), µs per probe", (), fmt="%.0f",
        extra={"noodle": [r["monitor_threads_us_per_probe"] for r in probe["rounds"]]})
    L.append("| … split: probe threads / decision thread, µs per probe | %s / %s |%s |  |" % (
        cell([r["probe_threads_us_per_probe"] for r in probe["rounds"]], "%.0f"),
        cell([r["decision_thread_us_per_probe"] for r in probe["rounds"]], "%.0f"),
        " n/a |" * (len(cols) - 1)))
    memcol = {"noodle": "noodlecore", "psycopg_default": "psycopg_pool"}
    row("**Resident memory**, MB: RSS after opening %d pooled connections to one server − before"
        % args.conns, (), fmt="%.2f",
        extra={k: values(rss.get(v, []), "delta_mb") for k, v in memcol.items() if rss.get(v)},
        target="~%g MB (aim < %g)" % (TARGET_RSS_MB, AIM_RSS_MB),
        judge=lambda v: verdict(v, TARGET_RSS_MB + 1e-9, AIM_RSS_MB))
    row("per connection, KB (that delta / %d)" % args.conns, (), fmt="%.0f",
        extra={k: values(rss.get(v, []), "per_conn_kb") for k, v in memcol.items() if rss.get(v)})
    row("per connection once warm, KB ((RSS with %d − with %d) / %d)" % (2 * args.conns, args.conns, args.conns),
        (), fmt="%.1f",
        extra={k: values(rss.get(v, []), "warm_kb") for k, v in memcol.items() if rss.get(v)})
    L.append("")
    L.append("Verdicts are on the medians (target or aim missed in single rounds is said so).")
    L.append("")
    L += notes(res, args)
    L.append("")
    L.append("<details><summary>per-round samples</summary>")
    L.append("")
    L.append("```")
    for key, name in cols:
        for i, r in enumerate(res[key]):
            if "crash" in r:
                L.append("%s round %d crash:    %s" % (key, i + 1, compact(r["crash"])))
                L.append("%s round %d failback: %s" % (key, i + 1, compact(r["failback"])))
            else:
                L.append("%s round %d: %s" % (key, i + 1, compact(r)))
    for i, r in enumerate(probe["rounds"]):
        L.append("probe round %d: %s" % (i + 1, compact(r)))
    L.append("probes expected from the interval %.0f, counted on the servers (xact_commit) %s"
             % (probe["probes_expected"], probe["probes_counted"]))
    for impl, runs in rss.items():
        for i, r in enumerate(runs):
            L.append("memory %s round %d: %s" % (impl, i + 1, compact(r)))
    L.append("```")
    L.append("")
    L.append("</details>")
    return "\n".join(L) + "\n"


def compact(d):
    parts = []
    for k, v in d.items():
        if isinstance(v, float):
            v = "%.2f" % v
        parts.append("%s=%s" % (k, v))
    return ", ".join(parts)


def kinds_text(runs, *path):
    k = collections.Counter()
    for r in runs:
        v = r
        for p in path:
            v = v[p]
        k.update(v)
    return ", ".join("%s ×%d" % kv for kv in k.most_common()) or "none"


def notes(res, args):
    nr = res["noodle"]
    probe = res["probe"]
    L = ["What was measured:", ""]
    L.append("- All times are `time.monotonic()` in the benchmark process. The crash instant is the "
             "first `SIGKILL` that `node.crash()` sends (it first SIGSTOPs the postmaster and lists "
             "its children). The manager's event timestamps (wall clock, taken when it starts carrying "
             "a decision out) are converted with the wall − monotonic offset read just before.")
    kinds = collections.Counter(r["crash"]["detection_event"] for r in nr + res.get("noodle_r1", []))
    L.append("- **Detection** is the first event the manager records after the crash (%s). Right "
             "after the crash the standby is still read-only, so the first decision is `no_target` "
             "(state `unavailable`: `get_connection()` fails at once with 4015); the `failover` "
             "follows when a probe sees the promoted standby writable. Detection is passive or by "
             "probe, whichever comes first: the client's next request (within %g ms) on the dead "
             "connection, or a probe (every %g s)."
             % (", ".join("%s ×%d" % kv for kv in kinds.items()), args.interval * 1e3, args.hc_interval))
    L.append("- **Switch** starts at the `failover` event (the decision) and ends when the first "
             "request answered by the new primary's port returns. It leaves out the promotion, which "
             "the script starts right after the crash and which is reported on its own row; the "
             "client-visible outage (SIGKILL → first success) includes everything. The client's "
             "%g ms pause limits the resolution." % (args.interval * 1e3))
    L.append("- **Recovery**: after the failover the crashed node is pg_rewound as a standby of the "
             "new primary; then a planned switchover back: `stop('fast')` of the current primary, "
             "`promote()` of the preferred one. The manager goes `unavailable` (nothing writable), "
             "then records a `failback` when a probe sees the preferred endpoint writable; recovery "
             "runs from that decision to the first successful query on it. A failback while the "
             "current endpoint stays writable cannot be staged on a real pair: two writable "
             "endpoints are a split brain, which the manager refuses (by design). `hold_down=0` "
             "lets the switchover follow the failover within a second; with the default 5 s the "
             "manager would ignore the failing current endpoint until 5 s after the last switch.")
    for key, label in (("noodle", "defaults"), ("noodle_r1", "retry_attempts=1")):
        runs = res.get(key) or []
        for phase, what in (("crash", "failover"), ("failback", "failback")):
            stuck = [r[phase] for r in runs if r[phase]["first_ok_started_before_decision"]]
            if stuck:
                L.append("- noodlecore (%s), %s: in %d of %d rounds the request that first succeeded "
                         "on the new endpoint had started **before** the %s decision (the request in "
                         "flight at the decision took %s ms)."
                         % (label, phase, len(stuck), len(runs), what,
                            cell([s["in_flight_at_decision_ms"] for s in stuck])))
    if any(r[ph]["first_ok_started_before_decision"] for r in nr for ph in ("crash", "failback")):
        L.append("  That request was inside `get_connection()`: the borrow found the pooled idle "
                 "connection dead (the zero-timeout liveness poll; it is skipped within 5 ms of the "
                 "previous one, so with a 5 ms client pause the dead connection is sometimes found by "
                 "the query instead, which fails with 2004 and reports at once) and reconnected to the "
                 "failed endpoint with the pool's `retry_attempts=3` and backoff from "
                 "`retry_backoff=0.05 s`, about 150 ms. The manager's switch does not cut that backoff "
                 "short, and the borrow reports to the manager and moves to the new endpoint only "
                 "after its last attempt. With `retry_attempts=1` the borrow gives up at once: one more "
                 "failed request, and the next request goes to the new endpoint.")
    L.append("- Failed requests by exception, crash-and-promote: noodlecore (defaults) %s; noodlecore "
             "(retry_attempts=1) %s; psycopg_pool default %s; psycopg_pool check_connection %s. "
             "Switchover back: noodlecore (defaults) %s; (retry_attempts=1) %s."
             % (kinds_text(nr, "crash", "failed_kinds"), kinds_text(res.get("noodle_r1", []), "crash", "failed_kinds"),
                kinds_text(res.get("psycopg_default", []), "failed_kinds"),
                kinds_text(res.get("psycopg_check", []), "failed_kinds"),
                kinds_text(nr, "failback", "failed_kinds"),
                kinds_text(res.get("noodle_r1", []), "failback", "failed_kinds")))
    if res.get("psycopg_default"):
        L.append("- psycopg_pool: `ConnectionPool(conninfo, kwargs={'autocommit': True})`, its other "
                 "options default (min_size=4, timeout=30 s), on `host=127.0.0.1,127.0.0.1 "
                 "port=P1,P2 user=postgres dbname=postgres target_session_attrs=read-write`. It has no "
                 "monitor, hence no detection, decision or recovery rows. With the default "
                 "`check=None` a pooled connection is handed out unchecked, so every connection open "
                 "at the crash fails one request. A broken connection is replaced by the pool's "
                 "reconnect task; its first attempt, right after the crash, finds no writable host "
                 "(the standby is being promoted) and the next comes after its backoff (1 s ± 10 %, "
                 "then 2 s, 4 s...), while requests wait in `getconn()`. `check_connection` runs an "
                 "empty query on every borrow and drops dead connections, but psycopg_pool 3.3 sleeps "
                 "with the same backoff (0, then about 1 s, 2 s, 4 s) between two failed checks in one "
                 "`getconn()`, and takes pooled connections oldest first: one request walks through "
                 "the dead ones at those intervals even once fresh connections are waiting behind them. "
                 "The default's outage depends on a race: when the reconnect attempt made right after "
                 "the first failure comes after the promotion has completed, service is back within "
                 "tens of ms; when it comes before, it waits for the next attempt, about 1 s later.")
    L.append("- **Probe cost**: one manager on both servers; %d rounds of %.1f s with monitoring off, "
             "then %.1f s on (after a warm-up that opened the probe connections). Probes per round "
             "are taken from the interval (2 endpoints × on-time / %g s); the servers' `xact_commit` "
             "counted %s probe transactions in all against %.0f expected. Server-side CPU is not "
             "included. The monitor-thread row sums `/proc/self/task/*/schedstat` of the threads "
             "`start_monitoring()` started (one probe thread per endpoint, and the decision thread, "
             "which wakes after every probe)."
             % (args.runs, probe["seconds_per_round"], probe["seconds_per_round"], probe["interval"],
                probe["probes_counted"] if probe["probes_counted"] is not None else "?",
                probe["probes_expected"]))
    L.append("- **Memory**: a fresh process per measurement; VmRSS (after `gc.collect()`) once the pool "
             "exists with no connection, then with %d connections borrowed at once (each ran "
             "`SELECT 1`), then with %d. noodlecore: `DatabaseConnectionPool` (what the manager keeps "
             "per endpoint); psycopg_pool: `ConnectionPool(min_size=1, max_size=%d)`, opened after "
             "the first reading (its worker threads are in the delta). Most of the delta is the "
             "first connection (libpq/TLS/resolver initialisation, ~0.8 MB for both); the warm row "
             "is the cost of one more connection. The servers' memory (a backend process per "
             "connection) is not included." % (args.conns, 2 * args.conns, 2 * args.conns))
    return L
