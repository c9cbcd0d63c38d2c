/* nc_sqlite.h - the SQLite backend: one sqlite3 handle per pooled
 * connection, with a per-statement deadline enforced by a busy handler (a
 * locked database) and a progress handler (a long statement). */
#ifndef NC_SQLITE_H
#define NC_SQLITE_H

#include <sqlite3.h>
#include "nc_backend.h"

typedef struct nc_sqlite_conn {
    sqlite3 *db;
    double deadline;        /* absolute, for the statement being run */
    double busy_deadline;   /* absolute, for waiting on a locked database */
    int timed_out;          /* the progress or busy handler gave up */
    int interrupted;        /* ... because the thread's stop check said stop */
    int broken;
    int session_dirty;      /* a PRAGMA, ATTACH or temp table (nc_sql_changes_session): SQLite
                             * cannot reset them, so the connection is closed on return */
} nc_sqlite_conn;

extern const nc_backend_ops nc_sqlite_ops;

/* url is "sqlite:///relative.db", "sqlite:////abs/path.db" or
 * "sqlite:///:memory:" (one in-memory database shared by the pool's
 * connections).  NULL with err (NC_E_CONFIG) on a bad URL. */
void *nc_sqlite_ctx_new(const char *url, nc_error *err);
const char *nc_sqlite_ctx_display(void *ctx);

/* Set the deadlines for what runs next on c: deadline bounds the statement
 * (progress handler), busy_deadline the wait for a lock (busy handler). */
void nc_sqlite_begin(nc_sqlite_conn *c, double deadline, double busy_deadline);

/* Fill err from a failed SQLite call (rc) on c: NC_E_QUERY_TIMEOUT when the
 * deadline made it give up, NC_E_INTERRUPTED when the thread's stop check
 * did (nc_stop.h), else NC_E_QUERY with a kind for the code. */
void nc_sqlite_error(nc_sqlite_conn *c, int rc, nc_error *err);

/* Run parameterless SQL (BEGIN, COMMIT, ...).  0 ok, -1 err. */
int nc_sqlite_command(nc_sqlite_conn *c, const char *sql, double deadline, nc_error *err);
/* The same with a lock waited for only until busy_deadline (BEGIN, COMMIT
 * and ROLLBACK from the binding, which follow busy_timeout as statements do). */
int nc_sqlite_command_busy(nc_sqlite_conn *c, const char *sql, double deadline, double busy_deadline,
                           nc_error *err);

#endif
