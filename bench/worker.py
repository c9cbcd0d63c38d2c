"""One implementation's measurements, in its own process, driven by bench/run.py.

    python worker.py IMPL DSN [--threads T] [--table NAME]

IMPL is one of: noodlecore, psycopg_pool, sqlalchemy, psycopg2.  The worker
opens its pool, prints {"ready": true, ...} and then answers one JSON command
per stdin line with one JSON line on stdout, so that the driver can interleave
the repetitions of all implementations (background load then hits them
alike):

    {"op": "a", "n": N}   N x borrow + return: {"us": per op}
    {"op": "b", "n": N}   N x borrow + SELECT 1 + return: {"us": per op}
    {"op": "c", "duration": S, "warmup": W}   8 threads: {"qps": ...}
    {"op": "d"}           fetch the table as tuples: {"s": seconds, "rows": n}
    {"op": EXTRA, ...}    an implementation's extra loop (listed in "ready" with
                          the scenario it belongs to)
    {"op": "quit"}

The first command of each kind runs a warm-up first.

Every pool gets max 8 (``--threads``) connections, all opened before timing.
The peers run in autocommit mode so that, like noodlecore, "borrow + SELECT 1
+ return" is one round trip (their defaults would add BEGIN and COMMIT or
ROLLBACK round trips and measure that instead of the pool).  Each loop is
written out per implementation (no per-op helper call) so that no
implementation pays for the harness.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
import threading
import time

SELECT1 = "SELECT 1"


# ---------------------------------------------------------------------------
# implementations: each returns a dict of callables
#   borrow(n)            n x borrow + return
#   select1(n)           n x borrow + SELECT 1 (rows fetched) + return
#   thread_body(i, counts, stop)   borrow + SELECT 1 + return until stop[0]
#   fetch(sql)           borrow once; returns (seconds, nrows) for execute + fetch-all as tuples
#   close()
#   extras               {name: (scenario "a"|"b"|"d", loop like borrow/select1/fetch)}
# ---------------------------------------------------------------------------

def impl_noodlecore(dsn, maxconn):
    import noodlecore
    from noodlecore.database import DatabaseConnectionPool

    def filled(**options):
        p = DatabaseConnectionPool(dsn, max_connections=maxconn, row_format="tuple", **options)
        held = [p.acquire() for _ in range(maxconn)]     # open all connections up front
        for c in held:
            c.release()
        return p

    pool = filled()
    # for the extras: the same pool without the borrow-time liveness check (a
    # zero-timeout poll() on the socket), to show what that check costs
    pool_nv = filled(validate_connections=False)
    get = pool.get_connection

    def borrow(n):
        for _ in range(n):
            with get():
                pass

    def borrow_acquire(n):
        acquire = pool.acquire
        for _ in range(n):
            acquire().release()

    def borrow_nv(n):
        get_nv = pool_nv.get_connection
        for _ in range(n):
            with get_nv():
                pass

    def select1_nv(n):
        get_nv = pool_nv.get_connection
        for _ in range(n):
            with get_nv() as c:
                c.execute_query(SELECT1)

    def select1_one_borrow(n):
        with get() as c:
            q = c.execute_query
            for _ in range(n):
                q(SELECT1)

    def select1(n):
        for _ in range(n):
            with get() as c:
                c.execute_query(SELECT1)

    def thread_body(i, counts, stop):
        while not stop[0]:
            with get() as c:
                c.execute_query(SELECT1)
            counts[i] += 1

    def fetch(sql):
        with get() as c:
            t0 = time.perf_counter()
            rows = c.execute_query(sql)
            t = time.perf_counter() - t0
        assert type(rows[0]) is tuple, type(rows[0])
        return t, len(rows)

    def fetch_dict(sql):
        with get() as c:
            t0 = time.perf_counter()
            rows = c.execute_query(sql, row_format="dict")
            t = time.perf_counter() - t0
        return t, len(rows)

    def close():
        pool_nv.shutdown()
        pool.shutdown()

    return dict(borrow=borrow, select1=select1, thread_body=thread_body, fetch=fetch,
                close=close,
                extras={"acquire_release": ("a", borrow_acquire),
                        "validate_off": ("a", borrow_nv),
                        "select1_validate_off": ("b", select1_nv),
                        "select1_one_borrow": ("b", select1_one_borrow),
                        "fetch_dict_rows": ("d", fetch_dict)},
                # a baseline build from before noodlecore.__version__ has only the metadata
                version=getattr(noodlecore, "__version__", None) or _dist_version("noodlecore"),
                module_file=noodlecore.__file__)


def impl_psycopg_pool(dsn, maxconn):
    import psycopg
    import psycopg_pool

    pool = psycopg_pool.ConnectionPool(dsn, min_size=maxconn, max_size=maxconn,
                                       kwargs={"autocommit": True}, open=True)
    pool.wait(timeout=30)
    get = pool.connection

    def borrow(n):
        for _ in range(n):
            with get():
                pass

    def select1(n):
        for _ in range(n):
            with get() as c:
                c.execute(SELECT1).fetchall()

    def thread_body(i, counts, stop):
        while not stop[0]:
            with get() as c:
                c.execute(SELECT1).fetchall()
            counts[i] += 1

    def fetch(sql):
        with get() as c:
            cur = c.cursor()
            t0 = time.perf_counter()
            cur.execute(sql)
            rows = cur.fetchall()
            t = time.perf_counter() - t0
            cur.close()
        assert type(rows[0]) is tuple
        return t, len(rows)

    return dict(borrow=borrow, select1=select1, thread_body=thread_body, fetch=fetch,
                close=pool.close,
                version="psycopg %s, psycopg_pool %s (impl %s)" % (
                    psycopg.__version__, psycopg_pool.__version__, psycopg.pq.__impl__))


def impl_sqlalchemy(dsn, maxconn):
    import psycopg2
    import sqlalchemy

    url = dsn.replace("postgresql://", "postgresql+psycopg2://", 1)
    engine = sqlalchemy.create_engine(url, pool_size=maxconn, max_overflow=0,
                                      isolation_level="AUTOCOMMIT")
    held = [engine.connect() for _ in range(maxconn)]
    for c in held:
        c.close()
    assert engine.pool.checkedin() == maxconn, engine.pool.status()
    connect = engine.connect

    def borrow(n):
        for _ in range(n):
            with connect():
                pass

    def borrow_raw(n):
        raw = engine.raw_connection
        for _ in range(n):
            raw().close()

    def select1(n):
        for _ in range(n):
            with connect() as c:
                c.exec_driver_sql(SELECT1).fetchall()

    def thread_body(i, counts, stop):
        while not stop[0]:
            with connect() as c:
                c.exec_driver_sql(SELECT1).fetchall()
            counts[i] += 1

    def fetch(sql):
        with connect() as c:
            t0 = time.perf_counter()
            rows = c.exec_driver_sql(sql).fetchall()
            t = time.perf_counter() - t0
        return t, len(rows)

    return dict(borrow=borrow, select1=select1, thread_body=thread_body, fetch=fetch,
                close=engine.dispose,
                extras={"raw_connection": ("a", borrow_raw)},
                version="SQLAlchemy %s (%s, QueuePool), psycopg2 %s" % (
                    sqlalchemy.__version__, engine.dialect.driver, psycopg2.__version__.split()[0]))


def impl_psycopg2(dsn, maxconn):
    import psycopg2
    import psycopg2.pool

    pool = psycopg2.pool.ThreadedConnectionPool(maxconn, maxconn, dsn)
    held = [pool.getconn() for _ in range(maxconn)]
    for c in held:
        c.autocommit = True
    for c in held:
        pool.putconn(c)
    getconn, putconn = pool.getconn, pool.putconn

    def borrow(n):
        for _ in range(n):
            putconn(getconn())

    def select1(n):
        for _ in range(n):
            c = getconn()
            with c.cursor() as cur:
                cur.execute(SELECT1)
                cur.fetchall()
            putconn(c)

    def thread_body(i, counts, stop):
        while not stop[0]:
            c = getconn()
            with c.cursor() as cur:
                cur.execute(SELECT1)
                cur.fetchall()
            putconn(c)
            counts[i] += 1

    def fetch(sql):
        c = getconn()
        try:
            with c.cursor() as cur:
                t0 = time.perf_counter()
                cur.execute(sql)
                rows = cur.fetchall()
                t = time.perf_counter() - t0
        finally:
            putconn(c)
        assert type(rows[0]) is tuple
        return t, len(rows)

    return dict(borrow=borrow, select1=select1, thread_body=thread_body, fetch=fetch,
                close=pool.closeall, version="psycopg2 %s" % psycopg2.__version__.split()[0])


IMPLS = {
    "noodlecore": impl_noodlecore,
    "psycopg_pool": impl_psycopg_pool,
    "sqlalchemy": impl_sqlalchemy,
    "psycopg2": impl_psycopg2,
}


def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


# ---------------------------------------------------------------------------
# serving the driver: one JSON command per stdin line, one JSON answer per stdout line
# ---------------------------------------------------------------------------

def one_rep_us(loop, n, warm):
    if warm:
        loop(max(100, n // 10))
    gc.collect()
    t0 = time.perf_counter()
    loop(n)
    return (time.perf_counter() - t0) / n * 1e6


def threaded_qps(body, threads, duration, warmup):
    counts = [0] * threads
    stop = [False]
    errors = []

    def run(i):
        try:
            body(i, counts, stop)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
            stop[0] = True

    ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    time.sleep(warmup)
    c0, t0 = sum(counts), time.perf_counter()
    time.sleep(duration)
    c1, t1 = sum(counts), time.perf_counter()
    per_thread = list(counts)
    stop[0] = True
    for t in ts:
        t.join(30)
    if errors:
        raise RuntimeError("thread failed: %s" % errors[0])
    return {"qps": (c1 - c0) / (t1 - t0), "ops": c1 - c0, "seconds": t1 - t0,
            "threads": threads, "per_thread_total_ops": per_thread}


def one_fetch(fetch, sql, warm):
    if warm:
        fetch(sql)
    gc.collect()
    t, nrows = fetch(sql)
    return {"s": t, "rows": nrows}


def serve(impl_name, dsn, maxconn, table):
    impl = IMPLS[impl_name](dsn, maxconn)
    loops = {"a": ("per_op", impl["borrow"]), "b": ("per_op", impl["select1"]),
             "c": ("threads", impl["thread_body"]), "d": ("fetch", impl["fetch"])}
    for name, (scen, fn) in impl.get("extras", {}).items():
        loops[name] = ({"a": "per_op", "b": "per_op", "d": "fetch"}[scen], fn)
    sql = "SELECT * FROM %s" % table
    warmed = set()
    out = sys.stdout
    out.write(json.dumps({"ready": True, "impl": impl_name, "version": impl.get("version"),
                          "module_file": impl.get("module_file"),
                          "extras": {k: v[0] for k, v in impl.get("extras", {}).items()}}) + "\n")
    out.flush()
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "quit":
                break
            kind, fn = loops[op]
            warm = op not in warmed
            warmed.add(op)
            if kind == "per_op":
                res = {"us": one_rep_us(fn, cmd["n"], warm)}
            elif kind == "threads":
                res = threaded_qps(fn, cmd.get("threads", maxconn), cmd["duration"], cmd["warmup"])
            else:
                res = one_fetch(fn, sql, warm)
            out.write(json.dumps(res) + "\n")
            out.flush()
    finally:
        impl["close"]()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("impl", choices=sorted(IMPLS))
    ap.add_argument("dsn")
    ap.add_argument("--threads", type=int, default=8, help="pool max connections")
    ap.add_argument("--table", default="bench_rows")
    a = ap.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        serve(a.impl, a.dsn, a.threads, a.table)
    except (KeyboardInterrupt, BrokenPipeError):
        sys.exit(130)       # the driver was interrupted too; it reports


if __name__ == "__main__":
    main()
