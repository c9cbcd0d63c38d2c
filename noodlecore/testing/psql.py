"""SQL through the psql binary, for setting up and inspecting servers.

Owns: running one query with psql (rows as lists of strings), starting a psql in
the background (a long statement to be killed or cut off), and the errors a
query raises.  psql, not noodlecore, so that a harness check never depends on
the code under test.  /usr/bin/psql is a Perl wrapper (~45 ms a call): the
binary next to the server's is called directly.
"""

from __future__ import annotations

import os
import subprocess

from .processes import PgHarnessError, clean_env, default_bindir

__all__ = ["SqlError", "SqlTimeout", "run_psql", "popen_psql", "HARNESS_APPNAME"]

FIELD_SEP = "\x1f"
RECORD_SEP = "\x1e"
HARNESS_APPNAME = "noodlecore_testing"


class SqlError(PgHarnessError):
    """psql failed: `query`, its `returncode` and `stderr` (the server's message) are kept."""

    def __init__(self, msg, query=None, returncode=None, stderr=""):
        super().__init__(msg)
        self.query = query
        self.returncode = returncode
        self.stderr = stderr


class SqlTimeout(SqlError, TimeoutError):
    """The whole psql call took longer than its timeout (psql was killed)."""


def _psql_cmd(host, port, query, dbname, user, bindir, header=False):
    # header: -t (tuples only) off, the row-count footer off
    shape = ["-P", "footer=off"] if header else ["-t"]
    return [os.path.join(bindir or default_bindir(), "psql"), "-X", "-A"] + shape + ["-q",
            "-F", FIELD_SEP, "-R", RECORD_SEP, "-v", "ON_ERROR_STOP=1", "-h", str(host), "-p", str(port),
            "-U", user, "-d", dbname, "-c", query]


def run_psql(host, port, query, timeout=10, connect_timeout=None, dbname="postgres",
             user="postgres", label=None, bindir=None, header=False):
    """Run one query with the psql binary against host:port (host may be a socket dir).

    Returns rows as lists of strings (NULL -> '').  Raises SqlTimeout when the whole call
    exceeds `timeout` (psql is killed), SqlError on any psql failure (with its stderr).
    connect_timeout defaults to max(2, timeout) (libpq's minimum is 2 s).  header=True: the
    first row is the column names.
    """
    label = label or "%s:%s" % (host, port)
    ct = connect_timeout if connect_timeout is not None else max(2, int(timeout + 0.999))
    env = clean_env(PGAPPNAME=HARNESS_APPNAME, PGCONNECT_TIMEOUT=str(ct))
    try:
        r = subprocess.run(_psql_cmd(host, port, query, dbname, user, bindir, header), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise SqlTimeout("[%s] psql timed out after %ss: %s" % (label, timeout, query),
                         query) from None
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip()
        raise SqlError("[%s] psql failed (rc=%s): %s\nquery: %s" % (label, r.returncode, err, query),
                       query, r.returncode, err)
    out = r.stdout.decode()
    if out.endswith("\n"):
        out = out[:-1]
    if not out:
        return []
    return [rec.split(FIELD_SEP) for rec in out.split(RECORD_SEP)]


def popen_psql(host, port, query, connect_timeout=5, dbname="postgres", user="postgres",
               appname=HARNESS_APPNAME + "_bg", bindir=None):
    """Start psql in the background (e.g. a long pg_sleep to be killed/reset); caller waits/kills."""
    env = clean_env(PGAPPNAME=appname, PGCONNECT_TIMEOUT=str(connect_timeout))
    return subprocess.Popen(_psql_cmd(host, port, query, dbname, user, bindir), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
