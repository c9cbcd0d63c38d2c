/* nc_error.h - the error record the C core fills in, and the table of codes.
 *
 * The core never raises anything: every fallible call takes an nc_error * and
 * returns -1 (or NULL) after filling it.  The binding layer turns the record
 * into the Python exception class that noodlecore.database.errors maps the
 * code (and, for server errors, the SQLSTATE) to.  Codes are the 4-digit codes
 * of the API contract; one code, one meaning.
 */
#ifndef NC_ERROR_H
#define NC_ERROR_H

#include <stdarg.h>

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
    NC_E_INTERNAL = 2099,           /* out of memory, thread creation failed, ... */
    /* failover range 4010-4099 */
    NC_E_FO_START = 4010,           /* start monitoring failed */
    NC_E_FO_MANUAL = 4012,          /* manual failover failed */
    NC_E_FO_RECOVERY = 4013,        /* manual recovery failed */
    NC_E_FO_NO_ENDPOINT = 4015,     /* no usable endpoint */
    NC_E_FO_UNKNOWN_ENDPOINT = 4016 /* trigger_failover(target=) names no endpoint */
};

/* Which PEP 249 class a core error belongs to when no SQLSTATE decides it. */
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

typedef struct nc_error {
    int code;                   /* enum nc_code, 0 when no error */
    int sent;                   /* enum nc_sent */
    int kind;                   /* enum nc_kind hint for the binding layer */
    char sqlstate[6];           /* "" when not a server error */
    char message[NC_ERRMSG_MAX];
} nc_error;

void nc_error_clear(nc_error *err);
/* Fill err; printf-style message.  err may be NULL (then nothing happens). */
void nc_error_set(nc_error *err, int code, int kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void nc_error_vset(nc_error *err, int code, int kind, const char *fmt, va_list ap);
/* Prefix the existing message with "<prefix>: " (used to name an endpoint). */
void nc_error_prefix(nc_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The contract's short description of a code ("pool is shut down"), or NULL. */
const char *nc_error_describe(int code);
/* After a truncating snprintf of UTF-8 text: drop a split last character,
 * so the binding can always decode messages strictly. */
void nc_utf8_fix_tail(char *s);
/* The PEP 249 kind a SQLSTATE implies (class 23 integrity, 42 programming ...). */
int nc_kind_for_sqlstate(const char *sqlstate);

#endif
