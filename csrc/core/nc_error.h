/* nc_error.h - the error record the C core fills in, and the tables that
 * say what an error is: its code's meaning, its PEP 249 class, whether it is
 * a connection failure, whether the statement could have had an effect.
 *
 * The core never raises anything: every fallible call takes an nc_error * and
 * returns -1 (or NULL) after filling it.  The binding turns the record into
 * the Python exception these tables name (errors.py defines the classes and
 * reads every table from here; nothing is written down twice).  Codes are the
 * 4-digit codes of the API contract; one code, one meaning.
 */
#ifndef NC_ERROR_H
#define NC_ERROR_H

#include <stdarg.h>
#include <stddef.h>

enum nc_code {
    NC_OK = 0,
    /* pool range 2001-2099 */
    NC_E_POOL = 2001,               /* generic pool error */
    NC_E_POOL_CLOSED = 2002,        /* pool is shut down */
    NC_E_POOL_TIMEOUT = 2003,       /* no connection within the acquire timeout */
    NC_E_CONNECTION = 2004,         /* connection failed / lost while in use */
    NC_E_QUERY = 2005,              /* the server (or SQLite) rejected a statement */
    NC_E_WAIT_TIMEOUT = 2006,       /* shutdown: borrowed connections not returned in time */
    NC_E_NEW_INVALID = 2008,        /* new connection failed validation */
    NC_E_NEW_FAILED = 2009,         /* failed to create a new connection */
    NC_E_REPLACE_INVALID = 2010,    /* replacement connection failed validation */
    NC_E_REPLACE_FAILED = 2011,     /* failed to create a replacement connection */
    NC_E_QUERY_TIMEOUT = 2012,      /* statement deadline passed, statement cancelled */
    NC_E_CONFIG = 2013,             /* invalid option / DSN */
    NC_E_PARAMS = 2014,             /* placeholder / parameter mismatch */
    NC_E_PARAM_TYPE = 2015,         /* a parameter of a type we cannot send */
    NC_E_RELEASED = 2016,           /* PooledConnection used after it went back */
    NC_E_TXN_STATE = 2017,          /* begin() inside a transaction, and the like */
    NC_E_DECODE = 2018,             /* a value from the server could not be decoded */
    NC_E_ENV = 2019,                /* bad NOODLE_DB_* environment value */
    NC_E_BACKEND = 2020,            /* a Python backend raised or broke the protocol */
    NC_E_NOT_SUPPORTED = 2021,      /* feature not supported by this backend */
    NC_E_IN_USE = 2022,             /* PooledConnection used by two threads at once */
    NC_E_INTERRUPTED = 2023,        /* a wait ended by its thread's stop check (Ctrl-C, nc_stop.h) */
    NC_E_DBAPI_CLOSED = 2024,       /* a DB-API connection or cursor used after close() */
    NC_E_DBAPI_NO_RESULT = 2025,    /* DB-API fetch without a result set (no execute, or no rows returned) */
    NC_E_STREAMING = 2026,          /* a statement while a streamed result is still being read */
    NC_E_INTERNAL = 2099,           /* out of memory, thread creation failed, ... */
    /* manager range 3001-3099: raised by the Python DatabaseManager; the
     * table (nc_error.c) names the operation of each.  3039 is also the
     * binding's, for a failover connection (nc_outcome_unknown). */
    NC_E_OUTCOME_UNKNOWN = 3039,    /* connection lost after a statement whose outcome cannot be known */
    /* failover range 4010-4099 */
    NC_E_FO_START = 4010,           /* start monitoring failed */
    NC_E_FO_STOP = 4011,            /* stop monitoring failed */
    NC_E_FO_MANUAL = 4012,          /* manual failover failed */
    NC_E_FO_RECOVERY = 4013,        /* manual recovery failed */
    NC_E_FO_SHUTDOWN = 4014,        /* shutdown failed */
    NC_E_FO_NO_ENDPOINT = 4015,     /* no usable endpoint */
    NC_E_FO_UNKNOWN_ENDPOINT = 4016, /* trigger_failover(target=) names no endpoint */
    NC_E_FO_NO_STANDBY = 4017,      /* target="standby": no standby within the lag limits */
    NC_E_FO_BAD_TARGET = 4018,      /* a target name that is not primary/standby/prefer-standby/any */
    NC_E_FO_SPLIT_DSN = 4019,       /* a multi-host connection string that cannot be split into endpoints */
    NC_E_FO_CAPACITY = 4020,        /* an endpoint joined but the route has no room left for it */
    /* Patroni (nc_patroni.c) 4025-4029 */
    NC_E_PATRONI_UNREACHABLE = 4025, /* no Patroni REST API answered GET /cluster */
    NC_E_PATRONI_ANSWER = 4026,     /* a Patroni API answered something we cannot read */
    NC_E_PATRONI_URL = 4027,        /* a Patroni URL we cannot use */
    NC_E_PATRONI_NO_MEMBER = 4028   /* Patroni lists no member with a host and port */
};

/* The exception class of an error.  The names (nc_class_name) are the class
 * names of noodlecore.database.errors; the binding raises exactly these. */
enum nc_class {
    NC_C_ERROR = 0,
    NC_C_INTERFACE,
    NC_C_DATABASE,
    NC_C_DATA,
    NC_C_OPERATIONAL,
    NC_C_INTEGRITY,
    NC_C_INTERNAL,
    NC_C_PROGRAMMING,
    NC_C_NOT_SUPPORTED,
    NC_C_POOL,                  /* ConnectionPoolError */
    NC_C_POOL_TIMEOUT,
    NC_C_POOL_CLOSED,
    NC_C_CONFIGURATION,
    NC_C_QUERY_TIMEOUT,
    NC_C_OUTCOME_UNKNOWN,       /* OutcomeUnknownError (3039) */
    NC_C_COUNT
};

/* The class an error has when neither its SQLSTATE nor its code decides
 * (SQLite result codes, a server error without a SQLSTATE). */
enum nc_kind {
    NC_K_NONE = 0,
    NC_K_INTERFACE,
    NC_K_OPERATIONAL,
    NC_K_PROGRAMMING,
    NC_K_INTEGRITY,
    NC_K_DATA,
    NC_K_NOT_SUPPORTED,
    NC_K_INTERNAL
};

#define NC_ERRMSG_MAX 768

/* Whether the failed statement reached the server (for safe retries). */
enum nc_sent { NC_SENT_UNKNOWN = 0, NC_SENT_NO = 1, NC_SENT_YES = 2 };

/* What an error says about the endpoint it happened on. */
enum nc_failure {
    NC_FAIL_NONE = 0,
    NC_FAIL_LOST = 1,           /* the connection was lost or could not be made */
    NC_FAIL_READ_ONLY = 2,      /* the server refused a write: it is read-only now */
    NC_FAIL_NO_ENDPOINT = 3     /* no endpoint is usable at all (failover) */
};

typedef struct nc_error {
    int code;                   /* enum nc_code, 0 when no error */
    int sent;                   /* enum nc_sent */
    int kind;                   /* enum nc_kind hint for the class */
    char sqlstate[6];           /* "" when not a server error */
    char message[NC_ERRMSG_MAX];
} nc_error;

void nc_error_clear(nc_error *err);
/* Fill err; printf-style message.  err may be NULL (then nothing happens).
 * A message cut at NC_ERRMSG_MAX never ends in half a UTF-8 character. */
void nc_error_set(nc_error *err, int code, int kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void nc_error_vset(nc_error *err, int code, int kind, const char *fmt, va_list ap);
/* Prefix the existing message with "<prefix>: " (used to name an endpoint). */
void nc_error_prefix(nc_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* After a truncating snprintf of UTF-8 text: drop a split last character,
 * so the binding can always decode messages strictly. */
void nc_utf8_fix_tail(char *s);
/* Replace, in place, every byte that does not start a valid UTF-8 character
 * (overlong forms, surrogates, beyond U+10FFFF, stray continuation bytes) by
 * '?'.  For text that may hold %XX-decoded bytes: libpq decodes them in a URI,
 * so a valid connection string can give a user, host or option name that is
 * not UTF-8, and the binding must be able to decode every message and display
 * (found by csrc/fuzz/fuzz_dsn). */
void nc_utf8_clean(char *s);
/* snprintf for text (messages, reasons, server strings): what does not fit
 * is cut on a UTF-8 character boundary, never inside a character.  The one
 * way the core copies text into a fixed buffer.  Returns snprintf's value. */
int nc_text_set(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int nc_text_vset(char *dst, size_t cap, const char *fmt, va_list ap);

/* ---- the tables ---------------------------------------------------------- */

typedef struct nc_code_info {
    int code;
    const char *text;           /* the contract's short description */
    int cls;                    /* enum nc_class of the code, -1: decided by SQLSTATE / kind */
    const char *op;             /* manager codes: the operation ("insert"), else NULL */
    int op_failed;              /* manager codes: 0 "no connection", 1 "<op> failed" */
} nc_code_info;

/* Every code, in ascending order; *n gets the count. */
const nc_code_info *nc_code_table(int *n);
/* The entry of code, or NULL. */
const nc_code_info *nc_code_lookup(int code);
/* The contract's short description of a code ("pool is shut down"), or NULL. */
const char *nc_error_describe(int code);

/* "InterfaceError" ... for enum nc_class; NULL out of range. */
const char *nc_class_name(int cls);
/* The code a class stands for when raised without one (PoolTimeoutError: 2003). */
int nc_class_default_code(int cls);
/* The class of a SQLSTATE by its first two characters (23 integrity, 42
 * programming, 25 internal ...); NC_C_OPERATIONAL for an unknown class,
 * -1 for no SQLSTATE. */
int nc_sqlstate_class(const char *sqlstate);
/* The class of an error: the SQLSTATE's for a server error (codes 2004,
 * 2005), else the code's, else the kind hint's, else DatabaseError. */
int nc_error_class(int code, int kind, const char *sqlstate);

/* Whether an error is a failure of the connection or endpoint rather than of
 * the SQL (enum nc_failure): lost (2004, a failed or invalid new connection,
 * SQLSTATE class 08, 57P01-57P03), read-only (25006), no endpoint (4015). */
int nc_error_failure(int code, const char *sqlstate);
/* 1 when the statement certainly had no effect: it never reached the
 * server, or the server refused it as read-only before running it. */
int nc_error_not_applied(const nc_error *err);

/* What a statement may leave behind once it ran (nc_sql_effect reads it
 * from the text; a caller that knows better, such as DatabaseManager's
 * idempotent=, says so itself). */
enum nc_effect {
    NC_EFFECT_NONE = 0,         /* nothing that outlives the session: a plain read */
    NC_EFFECT_WRITE = 1,        /* may change data (anything not known to be a plain read) */
    NC_EFFECT_COMMIT = 2        /* ends a transaction by committing it (COMMIT, END, PREPARE
                                 * TRANSACTION, COMMIT PREPARED) */
};

/* 1 when a statement that failed this way has an unknown outcome: it may or
 * may not have been applied, and must not be run again by itself (error 3039).
 *   failure      the error is a connection failure (nc_error_failure != NONE)
 *   not_applied  the statement certainly had no effect (nc_error_not_applied)
 *   effect       enum nc_effect of the statement
 *   in_txn       the session was inside an explicit transaction when the
 *                statement was sent
 * The rule: only a connection failure after the statement may have run; a
 * COMMIT-like statement always (the server may have committed just before
 * the connection went); inside an explicit transaction any other statement
 * is known to be rolled back with the session; outside one, a write (it
 * committed on its own, or not).  A plain read never: running it again is
 * harmless. */
int nc_outcome_unknown(int failure, int not_applied, int effect, int in_txn);

#endif
