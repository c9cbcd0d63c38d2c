"""bench/run.py's report: the medians per scenario and implementation, the
targets and their verdicts, the extra rows, and the Markdown text.
"""

from __future__ import annotations

import statistics

from benchlib import fmt_load

COLUMNS = [
    ("noodlecore", "noodlecore"),
    ("psycopg_pool", "psycopg_pool"),
    ("sqlalchemy", "SQLAlchemy QueuePool"),
    ("psycopg2", "psycopg2 ThreadedConnectionPool"),
    ("raw_libpq", "raw libpq (C)"),
    ("pgbench", "pgbench -S"),
]


def med(samples, scen, label, scale=1.0):
    v = samples[scen].get(label)
    return statistics.median(v) * scale if v else None


def cell_values(results):
    """{scenario: {column: median}} in report units (us, us, qps, ms)."""
    s = results["samples"]
    out = {"a": {}, "b": {}, "c": {}, "d": {}}
    for col, _ in COLUMNS + [("baseline", None)]:
        out["a"][col] = med(s, "a", col)
        out["b"][col] = med(s, "b", col)
        out["c"][col] = med(s, "c", col)
        out["d"][col] = med(s, "d", col, 1e3)
    return out


def fmt(v, kind):
    if v is None:
        return "n/a"
    if kind == "s":
        return "%.1f ms" % (v * 1e3)
    if kind == "us":
        return "%.2f" % v if v < 100 else "%.0f" % v
    if kind == "qps":
        return "{:,.0f}".format(v)
    if kind == "ms":
        return "%.1f" % v
    return str(v)


def paired(samples, scen, a, b):
    """Median over rounds of a/b measured in the same round (None if missing)."""
    xa, xb = samples[scen].get(a), samples[scen].get(b)
    if not xa or not xb or len(xa) != len(xb):
        return None
    return statistics.median(x / y for x, y in zip(xa, xb))


def evaluate(vals, samples):
    """The targets: list of (label, measured text, verdict, ratio)."""
    def ratio(a, b):
        return a / b if (a is not None and b) else None

    rows = []
    n, p = vals["a"].get("noodlecore"), vals["a"].get("psycopg_pool")
    r = ratio(p, n)
    rows.append(("(a) noodlecore borrow+return at least 10x faster than psycopg_pool",
                 "psycopg_pool / noodlecore = %.1fx" % r if r else "n/a",
                 None if r is None else r >= 10, r))
    n, raw = vals["b"].get("noodlecore"), vals["b"].get("raw_libpq")
    r = ratio(n, raw)
    pr = paired(samples, "b", "noodlecore", "raw_libpq")
    xn, xr = samples["b"].get("noodlecore"), samples["b"].get("raw_libpq")
    mr = min(xn) / min(xr) if (xn and xr) else None
    rows.append(("(b) noodlecore borrow+SELECT 1+return within 15% of raw libpq PQexec",
                 ("noodlecore / raw libpq = %.3f (%+.1f%%) [median of per-round ratios %.3f; "
                  "best round / best round %.3f]" % (r, (r - 1) * 100, pr, mr)) if (r and pr) else "n/a",
                 None if r is None else r <= 1.15, r))
    n, p, pgb = vals["c"].get("noodlecore"), vals["c"].get("psycopg_pool"), vals["c"].get("pgbench")
    r1, r2 = ratio(n, p), ratio(n, pgb)
    ok = None if (r1 is None or r2 is None) else (r1 > 1.0 and r2 >= 0.70)
    rows.append(("(c) noodlecore qps above psycopg_pool and at least 70% of pgbench -S (same clients)",
                 "noodlecore / psycopg_pool = %s; noodlecore / pgbench = %s" % (
                     "%.2fx" % r1 if r1 else "n/a", "%.1f%%" % (r2 * 100) if r2 else "n/a"),
                 ok, {"vs_psycopg_pool": r1, "vs_pgbench": r2}))
    n, p = vals["d"].get("noodlecore"), vals["d"].get("psycopg_pool")
    r = ratio(n, p)
    rows.append(("(d) noodlecore 100k-row fetch no slower than psycopg 3",
                 "noodlecore / psycopg 3 = %.2f" % r if r else "n/a",
                 None if r is None else r <= 1.0, r))
    return rows


def render(meta, results, vals, targets, args):
    L = []
    L.append("# noodlecore pool benchmark")
    L.append("")
    L.append("- Date: %s" % meta["date"])
    L.append("- Machine: %s, %d cores; Python %s; PostgreSQL %s on the same host (TCP 127.0.0.1, "
             "fsync off, data in /dev/shm); libpq %s; load average %s at the start, %s at the end"
             % (meta["cpu"], meta["cores"], meta["python"], meta["postgres"], meta["libpq"],
                fmt_load(results["load"].get("start")), fmt_load(results["load"].get("end"))))
    L.append("- noodlecore %s (git %s%s, sources %s, %s); %s"
             % (meta.get("noodlecore_version") or "?", meta["git"]["commit"],
                " + uncommitted changes" if meta["git"]["dirty_sources"] else "",
                meta.get("noodle_sources") or "?",
                "installed from a wheel" if args.noodle_from == "wheel" else "in-place build",
                "; ".join(v for k, v in meta["peer_versions"].items() if k != "noodlecore" and v)))
    L.append("")
    heads = [c[1] for c in COLUMNS]
    L.append("| scenario | " + " | ".join(heads) + " |")
    L.append("|---|" + "---:|" * len(heads))
    labels = {
        "a": ("(a) borrow + return, µs/op (median of %d x %d ops)" % (args.reps, args.ops), "us"),
        "b": ("(b) borrow + `SELECT 1` + return, µs/op (median of %d x %d ops)" % (args.reps_b, args.ops_b),
              "us"),
        "c": ("(c) `SELECT 1` queries/s, %d threads on %d connections (median of %d x %g s)" % (
            args.threads, args.threads, args.c_rounds, args.duration), "qps"),
        "d": ("(d) fetch %s rows (int4, text, float8) as tuples, ms (median of %d)" % (
            "{:,}".format(args.rows), args.fetch_reps), "ms"),
    }
    for s in "abcd":
        label, kind = labels[s]
        L.append("| %s | " % label + " | ".join(fmt(vals[s].get(c[0]), kind) for c in COLUMNS) + " |")
    L.append("")
    L.append("| target | measured | result |")
    L.append("|---|---|---|")
    for label, measured, ok, _ in targets:
        L.append("| %s | %s | %s |" % (label, measured,
                                       "n/a" if ok is None else ("MET" if ok else "NOT MET")))
    L.append("")
    L.append("Notes:")
    L.append("- Each Python implementation runs in its own process with its pool (max %d) filled before "
             "timing; the repetitions of all implementations are interleaved round by round (order "
             "rotated) so that background load on the shared host hits them alike.  The peers run in "
             "autocommit (one round trip per `SELECT 1`, like noodlecore); noodlecore runs with its "
             "default options and `row_format=\"tuple\"`." % args.threads)
    L.append("- (a)/(b): noodlecore `with pool.get_connection() as c` (+ `c.execute_query`); psycopg_pool "
             "`with pool.connection() as c` (+ `c.execute(...).fetchall()`); SQLAlchemy `with "
             "engine.connect() as c` (+ `c.exec_driver_sql(...).fetchall()`, psycopg2 driver); psycopg2 "
             "`getconn()`/`putconn()` (+ cursor execute/fetchall).  raw libpq: `PQexec(\"SELECT 1\")` "
             "in a loop on one connection, no pool.")
    pgcmd = results["pgbench"][0]["command"] if results.get("pgbench") else "skipped"
    L.append("- (c): the (b) loop in %d threads for %g s after %g s of warm-up; raw libpq: %d pthreads, "
             "one connection each; pgbench: `%s` (its select-only script: a primary-key lookup in "
             "pgbench_accounts, scale 1; tps without connection time)."
             % (args.threads, args.duration, args.warmup, args.threads, pgcmd))
    L.append("- (d): `SELECT * FROM bench_rows` execute + fetch all, timed after the borrow; raw libpq: "
             "`PQexec` until the PGresult is complete (no conversion to values).")
    base = baseline_lines(results, vals, meta.get("baseline"))
    if base:
        L.append("")
        L += base
    ex = extras_lines(results)
    if ex:
        L.append("")
        L.append("Extra measurements (medians, same rounds):")
        L += ex
    return "\n".join(L) + "\n"


EXTRAS = [
    ("a", "noodlecore.acquire_release", 1, "noodlecore `pool.acquire()` / `.release()` (no with-block), µs/op"),
    ("a", "noodlecore.validate_off", 1, "noodlecore borrow + return with `validate_connections=False` "
     "(no zero-timeout `poll()` liveness check on borrow), µs/op"),
    ("a", "sqlalchemy.raw_connection", 1, "SQLAlchemy `engine.raw_connection().close()` (QueuePool "
     "checkout/checkin without the Connection facade), µs/op"),
    ("b", "noodlecore.select1_validate_off", 1, "noodlecore borrow + `SELECT 1` + return with "
     "`validate_connections=False`, µs/op"),
    ("b", "noodlecore.select1_one_borrow", 1, "noodlecore `SELECT 1` only (one borrow for the whole "
     "loop: the query path without the pool), µs/op"),
    ("b", "raw_libpq.select1params", 1, "raw libpq `PQexecParams(\"SELECT 1\")` (extended protocol), µs/op"),
    ("d", "noodlecore.fetch_dict_rows", 1e3, "noodlecore 100k-row fetch with `row_format=\"dict\"`, ms"),
    ("d", "raw_libpq.with_convert", 1e3, "raw libpq 100k-row fetch plus walking every value "
     "(strtol/strtod), ms"),
]


def baseline_lines(results, vals, rev):
    """noodlecore of the working tree against the same code at the baseline
    commit, measured in the same rounds (per-round ratios: the host's drift
    cancels out)."""
    s = results["samples"]
    if not s["a"].get("baseline"):
        return []
    kinds = {"a": ("borrow + return, µs/op", "us", False), "b": ("borrow + `SELECT 1` + return, µs/op", "us", False),
             "c": ("`SELECT 1` queries/s, 8 threads", "qps", True), "d": ("fetch 100k rows, ms", "ms", False)}
    out = ["noodlecore now against noodlecore at %s (the baseline), interleaved in the same rounds:" % (rev or "?")[:12],
           "",
           "| scenario | now | baseline | now / baseline (median of per-round ratios) | better is |",
           "|---|---:|---:|---:|---|"]
    for scen in "abcd":
        label, kind, higher = kinds[scen]
        r = paired(s, scen, "noodlecore", "baseline")
        out.append("| (%s) %s | %s | %s | %s | %s |" % (
            scen, label, fmt(vals[scen].get("noodlecore"), kind), fmt(vals[scen].get("baseline"), kind),
            "%.3f" % r if r else "n/a", "higher" if higher else "lower"))
    return out


def extras_lines(results):
    s = results["samples"]
    out = []
    for scen, label, scale, text in EXTRAS:
        v = med(s, scen, label, scale)
        if v is None:
            continue
        ref = label.split(".")[0]
        extra = ""
        if scen == "b" and s["b"].get("raw_libpq") and ref == "noodlecore":
            extra = " (%.2fx raw libpq, per-round median)" % paired(s, "b", label, "raw_libpq")
        out.append("- %s: %.2f%s" % (text, v, extra))
    return out
