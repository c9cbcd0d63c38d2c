"""The ``noodlecore-db`` command: its argument parser and ``main``.

Owns: the parser of every subcommand (demo, query, status, watch, bench), the
``query`` command (one statement, small enough to live here), and ``main``:
logging set up for the library's loggers, SIGTERM/SIGHUP turned into an
exception so that cleanups run, and errors turned into exit statuses (see the
package docstring).  Each other command lives in its own module.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any, Optional

from ..connection_pool import DatabaseConnectionPool
from ..errors import ConfigurationError, Error
from .bench import cmd_bench
from .demo import cmd_demo
from .output import (EXIT_FAIL, EXIT_OK, EXIT_USAGE, PROG, Style, UsageError, print_error, print_json,
                     render_table, setup_logging)
from .status import cmd_status, cmd_watch


class _Terminated(BaseException):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def cmd_query(args: argparse.Namespace) -> int:
    params = {}
    for p in args.param or []:
        if "=" not in p:
            raise UsageError(f"--param {p!r} is not name=value")
        k, v = p.split("=", 1)
        params[k] = v
    if args.timeout <= 0:
        raise UsageError("--timeout must be above 0")
    with DatabaseConnectionPool(args.dsn, max_connections=1, retry_attempts=1,
                                timeout=args.timeout, connect_timeout=args.timeout) as pool:
        with pool.get_connection() as conn:
            result = conn.execute_query(args.sql, params if params else None, timeout=args.timeout)
    if args.json:
        print_json(result)
    elif isinstance(result, list):
        print(render_table(result, Style.for_stdout()))
    else:
        print(f"{result} row(s) affected")
    return EXIT_OK


# ---------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------

def _wrap(text: str, width: int = 79) -> str:
    """Fill the prose paragraphs of a help text; keep indented or option lines as written."""
    import textwrap
    out = []
    for para in text.split("\n\n"):
        if any(line.startswith((" ", "-")) for line in para.splitlines()):
            out.append(para)
        else:
            out.append("\n".join(textwrap.fill(line, width) for line in para.splitlines()))
    return "\n\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable JSON on stdout only")
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error", "critical"],
                        help="show the library's log records at this level and above on stderr "
                             "(default: warning; error for demo, which narrates the events itself)")
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(prog=PROG, formatter_class=fmt,
                                 description=_wrap("noodlecore database pool tools: a demo of pooling and "
                                             "failover, one-off queries, endpoint status, the bench."),
                                 epilog=_wrap("exit status: 0 ok, 1 database/server failure (e.g. an endpoint "
                                        "down), 2 bad usage or input, 130 interrupted.\n"
                                        f"`{PROG} COMMAND --help` describes a command."))
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", parents=[common], formatter_class=fmt,
                       help="pooling under load, an outage, failover and failback (no server needed)",
                       description=_wrap("Worker threads run INSERTs and SELECTs through pools while the preferred "
                                   "endpoint has an outage; the native monitor fails over and back, and the "
                                   "events are shown with their timings, then the final stats.\n\n"
                                   "default      two embedded SQLite files; the outage is SIMULATED "
                                   "(a flag)\n"
                                   "--postgres   a throwaway PostgreSQL primary and streaming standby in "
                                   "/dev/shm:\n"
                                   "             a real SIGKILL of the primary, pg_ctl promote, the old "
                                   "primary\n"
                                   "             rejoining and a switchover back; everything removed at "
                                   "the end\n"
                                   "--patroni    a throwaway Patroni cluster of 3 members (etcd, Patroni "
                                   "under tini):\n"
                                   "             a manager made from Patroni's REST API, reads on "
                                   "standbys,\n"
                                   "             a Patroni switchover and a SIGKILL of the leader's "
                                   "postmaster\n"
                                   "--db DSN     a single pool on DSN, no outage"))
    d.add_argument("--postgres", action="store_true",
                   help="real servers (needs the PostgreSQL server binaries; as root they run as postgres)")
    d.add_argument("--patroni", action="store_true",
                   help="a real Patroni cluster (needs PostgreSQL, etcd, tini and Patroni: $NOODLE_PATRONI_BIN or "
                        "patroni on the PATH)")
    d.add_argument("--db", metavar="DSN", help="run the workload on one pool to DSN instead (no failover)")
    d.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    d.add_argument("--pool-size", type=int, default=4, help="connections per endpoint (default 4)")
    d.add_argument("--seconds", type=float, default=6.0, help="seconds of load (default 6)")
    d.set_defaults(func=cmd_demo)

    q = sub.add_parser("query", parents=[common], help="run one statement and print the rows",
                       description=_wrap("Run one statement and print the rows as a table (or JSON)."))
    q.add_argument("dsn", help="postgresql://..., key=value, or sqlite:///path")
    q.add_argument("sql")
    q.add_argument("--param", action="append", metavar="NAME=VALUE", help="a %%(name)s parameter (repeatable)")
    q.add_argument("--timeout", type=float, default=10.0, help="connect and statement deadline (default 10 s)")
    q.set_defaults(func=cmd_query)

    ep_help = ("an endpoint as ID=DSN (repeatable), e.g. primary=postgresql://db1/app; a bare DSN is named "
               "ep1, ep2, ...")
    st = sub.add_parser("status", parents=[common], formatter_class=fmt,
                        help="probe endpoints once: up/down, role, latency, replication lag",
                        description=_wrap("One probe per endpoint (in parallel): up or down, role (primary, "
                                    "standby; embedded for SQLite), latency of a SELECT 1, and replication "
                                    "lag: for a standby the WAL received but not replayed and the age of "
                                    "the last replayed transaction; for a primary the largest lag in "
                                    "pg_stat_replication.\nExit status 1 when any endpoint is down."))
    st.add_argument("--endpoint", action="append", metavar="ID=DSN", help=ep_help)
    st.add_argument("--timeout", type=float, default=3.0, help="deadline of each probe (default 3 s)")
    st.add_argument("--patroni", metavar="URL[,URL...]",
                    help="also the members Patroni's REST API lists (GET /cluster, the next URL when one "
                         "does not answer), leader first, beside Patroni's role, state and lag")
    st.add_argument("--dsn", default="", help="with --patroni: user, database and options for the members "
                                               "(their host and port come from Patroni)")
    st.set_defaults(func=cmd_status)

    w = sub.add_parser("watch", parents=[common], help="the status, refreshed",
                       description=_wrap("Probe the endpoints every --interval seconds: a live screen on a "
                                   "terminal, one line per endpoint and round otherwise, JSON Lines with "
                                   "--json. Exit status: that of the last round."))
    w.add_argument("--endpoint", action="append", metavar="ID=DSN", help=ep_help)
    w.add_argument("--interval", type=float, default=2.0, help="seconds between rounds (default 2)")
    w.add_argument("--count", type=int, help="stop after N rounds (default: until Ctrl-C)")
    w.add_argument("--timeout", type=float, default=3.0, help="deadline of each probe (default 3 s)")
    w.set_defaults(func=cmd_watch)

    b = sub.add_parser("bench", parents=[common], formatter_class=fmt, help="the pool benchmark",
                       description=_wrap("In a source checkout: bench/run.py (noodlecore against psycopg_pool, "
                                   "SQLAlchemy, psycopg2 and raw libpq on a throwaway PostgreSQL; about 2 "
                                   "minutes).\nOtherwise, or with --builtin / --dsn: a built-in micro-bench "
                                   "of borrow/return, borrow+SELECT 1, and SELECT 1 from several threads, "
                                   "against --dsn or a temporary SQLite file.\nThe output says which ran."))
    b.add_argument("--builtin", action="store_true", help="the built-in micro-bench even in a checkout")
    b.add_argument("--dsn", help="micro-bench against this DSN (implies --builtin)")
    b.add_argument("--seconds", type=float, default=3.0, help="micro-bench duration (default 3 s)")
    b.add_argument("--threads", type=int, default=4, help="threads of the concurrent case (default 4)")
    b.add_argument("--quick", action="store_true", help="bench/run.py --quick (a ~15 s smoke run)")
    b.add_argument("--dry-run", action="store_true", help="say what would run, run nothing")
    b.add_argument("bench_args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                   help="more arguments for bench/run.py")
    b.set_defaults(func=cmd_bench)
    return ap


def _on_signal(signum: int, frame: Any) -> None:
    raise _Terminated(signum)


def main(argv: Optional[list] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level or ("error" if args.command == "demo" else "warning"))
    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            old[sig] = signal.signal(sig, _on_signal)   # so that cleanups (servers, temp dirs) run
        except (ValueError, OSError):   # not the main thread
            pass
    try:
        return args.func(args)
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"{PROG} {args.command}: error: {exc}\n")
    except ConfigurationError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    except Error as exc:
        print_error(str(exc))
        return EXIT_FAIL
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except _Terminated as exc:
        print_error(f"terminated by signal {exc.signum}")
        return 128 + exc.signum
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_FAIL
    finally:
        for sig, h in old.items():
            try:
                signal.signal(sig, h)
            except (ValueError, OSError):
                pass
    return EXIT_OK

