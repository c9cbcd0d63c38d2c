"""One SQLAlchemy driver's measurements, in its own process, driven by bench/sqla.py.

    python sqla_worker.py URL

URL is a SQLAlchemy URL (postgresql+noodlecore://..., postgresql+psycopg://...,
postgresql+psycopg2://...).  The worker makes its engine, prints
{"ready": true, ...} and then answers one JSON command per stdin line with one
JSON line on stdout, so that the driver can interleave the repetitions of all
drivers round by round:

    {"op": "core_get", "n": N}        N x (engine.connect(), Core select by primary
                                      key, one row): {"us": per op}
    {"op": "orm_get", "n": N}         N x (new Session, session.get by primary key):
                                      {"us": per op}
    {"op": "orm_bulk", "rows": R}     one Session: add_all(R new objects) + commit,
                                      the ORM's insertmanyvalues with RETURNING of the
                                      keys: {"rows_per_s": ...}
    {"op": "executemany", "rows": R}  engine.raw_connection(): a bare DB-API cursor's
                                      executemany of R two-column rows + commit:
                                      {"rows_per_s": ...}
    {"op": "quit"}

The first command of each kind runs a warm-up first.  The rows the bulk
scenarios insert are deleted after the timing, outside it.
"""

from __future__ import annotations

import json
import sys
import time


def main():
    url = sys.argv[1]
    from sqlalchemy import Column, Float, Integer, String, bindparam, create_engine, delete, select, text
    from sqlalchemy.orm import Session, declarative_base

    Base = declarative_base()

    class Item(Base):
        __tablename__ = "sqla_items"
        id = Column(Integer, primary_key=True)
        name = Column(String(50))
        value = Column(Float)

    kind = url.split("://", 1)[0]
    if kind.endswith("+noodlecore"):
        engine = create_engine(url)           # the native pool does the pooling
    else:
        engine = create_engine(url, pool_size=8, max_overflow=0)
    table = Item.__table__
    stmt = select(table).where(table.c.id == bindparam("k"))
    nkeys = 10000
    warmed = set()

    def core_get(n):
        t0 = time.perf_counter()
        for i in range(n):
            with engine.connect() as c:
                c.execute(stmt, {"k": i % nkeys + 1}).one()
        return (time.perf_counter() - t0) / n * 1e6

    def orm_get(n):
        t0 = time.perf_counter()
        for i in range(n):
            with Session(engine) as s:
                s.get(Item, i % nkeys + 1)
        return (time.perf_counter() - t0) / n * 1e6

    def cleanup():
        with engine.begin() as c:
            c.execute(delete(table).where(table.c.id > nkeys))
            c.execute(text("DELETE FROM sqla_bulk"))

    def orm_bulk(rows):
        objs = [Item(name="bulk %d" % i, value=i * 0.5) for i in range(rows)]
        t0 = time.perf_counter()
        with Session(engine, expire_on_commit=False) as s:
            s.add_all(objs)
            s.commit()
        dt = time.perf_counter() - t0
        if any(o.id is None for o in objs):
            raise RuntimeError("orm_bulk: keys not returned")
        cleanup()
        return rows / dt

    def executemany(rows):
        data = [("row %d" % i, i * 0.25) for i in range(rows)]
        t0 = time.perf_counter()
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.executemany("INSERT INTO sqla_bulk (name, value) VALUES (%s, %s)", data)
            raw.commit()
            cur.close()
        finally:
            raw.close()
        dt = time.perf_counter() - t0
        with engine.connect() as c:
            got = c.execute(text("SELECT count(*) FROM sqla_bulk")).scalar()
        if got != rows:
            raise RuntimeError("executemany: %d rows in the table, %d sent" % (got, rows))
        cleanup()
        return rows / dt

    ops = {"core_get": (core_get, "n", "us"), "orm_get": (orm_get, "n", "us"),
           "orm_bulk": (orm_bulk, "rows", "rows_per_s"), "executemany": (executemany, "rows", "rows_per_s")}
    import sqlalchemy
    print(json.dumps({"ready": True, "url": kind, "sqlalchemy": sqlalchemy.__version__,
                      "driver": engine.dialect.driver}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            fn, arg, unit = ops[cmd["op"]]
            if cmd["op"] not in warmed:
                fn(min(cmd[arg], 500))
                warmed.add(cmd["op"])
            out = {unit: fn(cmd[arg])}
        except Exception as e:  # reported to the driver, which stops the run
            out = {"error": "%s: %s: %s" % (cmd["op"], type(e).__name__, e)}
        print(json.dumps(out), flush=True)
    engine.dispose()


if __name__ == "__main__":
    main()
