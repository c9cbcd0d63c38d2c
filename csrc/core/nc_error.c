/* nc_error.c - filling error records, and the tables of what errors are
 * (see nc_error.h).  These tables are the only copy: the binding exports
 * them to Python (errors.py builds ERROR_CODES and picks classes from them). */
#include "nc_error.h"

#include <stdio.h>
#include <string.h>

void nc_error_clear(nc_error *err)
{
    if (!err)
        return;
    err->code = 0;
    err->sent = NC_SENT_UNKNOWN;
    err->kind = NC_K_NONE;
    err->sqlstate[0] = '\0';
    err->message[0] = '\0';
}

void nc_error_vset(nc_error *err, int code, int kind, const char *fmt, va_list ap)
{
    if (!err)
        return;
    err->code = code;
    err->sent = NC_SENT_UNKNOWN;
    err->kind = kind;
    err->sqlstate[0] = '\0';
    nc_text_vset(err->message, sizeof err->message, fmt, ap);
}

int nc_text_vset(char *dst, size_t cap, const char *fmt, va_list ap)
{
    if (cap == 0)
        return 0;
    int n = vsnprintf(dst, cap, fmt, ap);
    if (n < 0)
        dst[0] = '\0';
    else if ((size_t)n >= cap)
        nc_utf8_fix_tail(dst);   /* a server message cut mid-character */
    return n;
}

int nc_text_set(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = nc_text_vset(dst, cap, fmt, ap);
    va_end(ap);
    return n;
}

void nc_error_set(nc_error *err, int code, int kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    nc_error_vset(err, code, kind, fmt, ap);
    va_end(ap);
}

void nc_error_prefix(nc_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[256], old[NC_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    nc_text_vset(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    /* Truncation is fine here: a long message loses its tail. */
    size_t n = strlen(prefix);
    if (n > sizeof err->message - 3)
        n = sizeof err->message - 3;
    memcpy(err->message, prefix, n);
    memcpy(err->message + n, ": ", 2);
    size_t room = sizeof err->message - n - 3;
    size_t m = strlen(old);
    if (m > room)
        m = room;
    memcpy(err->message + n + 2, old, m);
    err->message[n + 2 + m] = '\0';
    nc_utf8_fix_tail(err->message);
}

void nc_utf8_fix_tail(char *s)
{
    size_t len = strlen(s), p = len, back = 0;
    while (p > 0 && back < 4 && (((unsigned char)s[p - 1]) & 0xC0) == 0x80) {
        p--;
        back++;
    }
    if (p == 0)
        return;
    unsigned c = (unsigned char)s[p - 1];
    size_t need;
    if (c >= 0xF0)
        need = 4;
    else if (c >= 0xE0)
        need = 3;
    else if (c >= 0xC0)
        need = 2;
    else
        return;
    if (len - (p - 1) < need)
        s[p - 1] = '\0';
}

/* ---- codes ------------------------------------------------------------------ */

/* A manager operation's two codes: "no connection", then "<op> failed". */
#define MGR_OP(c, op) \
    {(c), "manager: " op ": no connection", -1, op, 0}, {(c) + 1, "manager: " op " failed", -1, op, 1}

static const nc_code_info codes[] = {
    /* pool: the contract's, then this implementation's in the same range */
    {NC_E_POOL, "pool error", NC_C_POOL, NULL, 0},
    {NC_E_POOL_CLOSED, "pool is shut down", NC_C_POOL_CLOSED, NULL, 0},
    {NC_E_POOL_TIMEOUT, "no connection available within the timeout", NC_C_POOL_TIMEOUT, NULL, 0},
    {NC_E_CONNECTION, "connection failed", NC_C_OPERATIONAL, NULL, 0},
    {NC_E_QUERY, "query failed", -1, NULL, 0},
    {NC_E_WAIT_TIMEOUT, "connection wait timeout", NC_C_POOL, NULL, 0},
    {NC_E_NEW_INVALID, "new connection failed validation", NC_C_POOL, NULL, 0},
    {NC_E_NEW_FAILED, "failed to create a new connection", NC_C_POOL, NULL, 0},
    {NC_E_REPLACE_INVALID, "replacement connection failed validation", NC_C_POOL, NULL, 0},
    {NC_E_REPLACE_FAILED, "failed to create a replacement connection", NC_C_POOL, NULL, 0},
    {NC_E_QUERY_TIMEOUT, "statement timeout: the statement was cancelled", NC_C_QUERY_TIMEOUT, NULL, 0},
    {NC_E_CONFIG, "invalid configuration", NC_C_CONFIGURATION, NULL, 0},
    {NC_E_PARAMS, "query parameters do not match the placeholders", NC_C_PROGRAMMING, NULL, 0},
    {NC_E_PARAM_TYPE, "unsupported parameter type", NC_C_PROGRAMMING, NULL, 0},
    {NC_E_RELEASED, "connection used after it was returned to the pool", NC_C_INTERFACE, NULL, 0},
    {NC_E_TXN_STATE, "invalid transaction state", NC_C_PROGRAMMING, NULL, 0},
    {NC_E_DECODE, "a value from the database could not be decoded", NC_C_DATA, NULL, 0},
    {NC_E_ENV, "invalid environment variable value", NC_C_CONFIGURATION, NULL, 0},
    {NC_E_BACKEND, "backend object failed or broke the backend protocol", NC_C_INTERFACE, NULL, 0},
    {NC_E_NOT_SUPPORTED, "not supported by this backend", NC_C_NOT_SUPPORTED, NULL, 0},
    {NC_E_IN_USE, "connection in use by another thread", NC_C_INTERFACE, NULL, 0},
    {NC_E_INTERRUPTED, "wait interrupted (Ctrl-C)", NC_C_OPERATIONAL, NULL, 0},
    {NC_E_DBAPI_CLOSED, "DB-API connection or cursor used after close()", NC_C_INTERFACE, NULL, 0},
    {NC_E_DBAPI_NO_RESULT, "no result set to fetch from (no execute yet, or the statement returned no rows)",
     NC_C_PROGRAMMING, NULL, 0},
    {NC_E_STREAMING, "connection busy streaming a result", NC_C_INTERFACE, NULL, 0},
    {NC_E_INTERNAL, "internal error", NC_C_INTERNAL, NULL, 0},
    /* manager: the Python DatabaseManager raises these, keeping the class of
     * the error that caused them (hence no class here) */
    {3001, "manager: connect failed", -1, "connect", 1},
    {3002, "manager: disconnect failed", -1, "disconnect", 1},
    {3003, "manager: no connection", -1, "query", 0},
    {3004, "manager: query timeout", -1, NULL, 0},
    {3005, "manager: query failed", -1, "query", 1},
    MGR_OP(3006, "execute_batch"),
    MGR_OP(3008, "transaction"),
    MGR_OP(3010, "insert"),
    MGR_OP(3012, "update"),
    MGR_OP(3014, "delete"),
    MGR_OP(3016, "select"),
    MGR_OP(3018, "table_exists"),
    MGR_OP(3020, "create_table"),
    MGR_OP(3022, "drop_table"),
    MGR_OP(3024, "get_table_schema"),
    MGR_OP(3026, "backup"),
    MGR_OP(3028, "restore"),
    MGR_OP(3030, "optimize"),
    MGR_OP(3032, "stats"),
    MGR_OP(3034, "health_check"),
    {3036, "manager: close failed", -1, "close", 1},
    {3037, "failover is not enabled (trigger_failover)", -1, "trigger_failover", 1},
    {3038, "failover is not enabled (trigger_recovery)", -1, "trigger_recovery", 1},
    {NC_E_OUTCOME_UNKNOWN, "outcome of the statement is unknown (connection lost after it was sent)",
     NC_C_OUTCOME_UNKNOWN, NULL, 0},
    /* failover */
    {NC_E_FO_START, "failover: start monitoring failed", NC_C_POOL, NULL, 0},
    {NC_E_FO_STOP, "failover: stop monitoring failed", NC_C_POOL, NULL, 0},
    {NC_E_FO_MANUAL, "failover: manual failover failed", NC_C_POOL, NULL, 0},
    {NC_E_FO_RECOVERY, "failover: manual recovery failed", NC_C_POOL, NULL, 0},
    {NC_E_FO_SHUTDOWN, "failover: shutdown failed", NC_C_POOL, NULL, 0},
    {NC_E_FO_NO_ENDPOINT, "failover: no usable endpoint", NC_C_OPERATIONAL, NULL, 0},
    {NC_E_FO_UNKNOWN_ENDPOINT, "failover: unknown endpoint", NC_C_CONFIGURATION, NULL, 0},
    {NC_E_FO_NO_STANDBY, "failover: no standby within the lag limits", NC_C_OPERATIONAL, NULL, 0},
    {NC_E_FO_BAD_TARGET, "failover: unknown borrow target", NC_C_CONFIGURATION, NULL, 0},
    {NC_E_FO_SPLIT_DSN, "failover: the connection string cannot be split into endpoints", NC_C_CONFIGURATION,
     NULL, 0},
    {NC_E_FO_CAPACITY, "failover: no room for another endpoint", NC_C_OPERATIONAL, NULL, 0},
    /* Patroni */
    {NC_E_PATRONI_UNREACHABLE, "patroni: no REST API answered", NC_C_OPERATIONAL, NULL, 0},
    {NC_E_PATRONI_ANSWER, "patroni: unreadable answer from the REST API", NC_C_OPERATIONAL, NULL, 0},
    {NC_E_PATRONI_URL, "patroni: invalid REST API URL", NC_C_CONFIGURATION, NULL, 0},
    {NC_E_PATRONI_NO_MEMBER, "patroni: no member with a host and port", NC_C_OPERATIONAL, NULL, 0},
};

#undef MGR_OP

const nc_code_info *nc_code_table(int *n)
{
    if (n)
        *n = (int)(sizeof codes / sizeof codes[0]);
    return codes;
}

const nc_code_info *nc_code_lookup(int code)
{
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i].code == code)
            return &codes[i];
    return NULL;
}

const char *nc_error_describe(int code)
{
    const nc_code_info *c = nc_code_lookup(code);
    return c ? c->text : NULL;
}

/* ---- classes ------------------------------------------------------------------ */

static const struct { const char *name; int default_code; } classes[NC_C_COUNT] = {
    [NC_C_ERROR] = {"Error", NC_E_POOL},
    [NC_C_INTERFACE] = {"InterfaceError", NC_E_RELEASED},
    [NC_C_DATABASE] = {"DatabaseError", NC_E_QUERY},
    [NC_C_DATA] = {"DataError", NC_E_DECODE},
    [NC_C_OPERATIONAL] = {"OperationalError", NC_E_CONNECTION},
    [NC_C_INTEGRITY] = {"IntegrityError", NC_E_QUERY},
    [NC_C_INTERNAL] = {"InternalError", NC_E_INTERNAL},
    [NC_C_PROGRAMMING] = {"ProgrammingError", NC_E_PARAMS},
    [NC_C_NOT_SUPPORTED] = {"NotSupportedError", NC_E_NOT_SUPPORTED},
    [NC_C_POOL] = {"ConnectionPoolError", NC_E_POOL},
    [NC_C_POOL_TIMEOUT] = {"PoolTimeoutError", NC_E_POOL_TIMEOUT},
    [NC_C_POOL_CLOSED] = {"PoolClosedError", NC_E_POOL_CLOSED},
    [NC_C_CONFIGURATION] = {"ConfigurationError", NC_E_CONFIG},
    [NC_C_QUERY_TIMEOUT] = {"QueryTimeoutError", NC_E_QUERY_TIMEOUT},
    [NC_C_OUTCOME_UNKNOWN] = {"OutcomeUnknownError", NC_E_OUTCOME_UNKNOWN},
};

const char *nc_class_name(int cls)
{
    return cls >= 0 && cls < NC_C_COUNT ? classes[cls].name : NULL;
}

int nc_class_default_code(int cls)
{
    return cls >= 0 && cls < NC_C_COUNT ? classes[cls].default_code : NC_E_POOL;
}

/* SQLSTATE class (first two characters) -> class; as psycopg maps them. */
static const struct { char cls[3]; int c; } sqlstate_classes[] = {
    {"08", NC_C_OPERATIONAL},   /* connection exception */
    {"0A", NC_C_NOT_SUPPORTED}, /* feature not supported */
    {"21", NC_C_PROGRAMMING},   /* cardinality violation */
    {"22", NC_C_DATA},          /* data exception */
    {"23", NC_C_INTEGRITY},     /* integrity constraint violation */
    {"24", NC_C_INTERNAL},      /* invalid cursor state */
    {"25", NC_C_INTERNAL},      /* invalid transaction state (25006: read-only) */
    {"26", NC_C_PROGRAMMING},   /* invalid SQL statement name */
    {"27", NC_C_OPERATIONAL},   /* triggered data change violation */
    {"28", NC_C_OPERATIONAL},   /* invalid authorization */
    {"2B", NC_C_INTERNAL},
    {"2D", NC_C_INTERNAL},
    {"2F", NC_C_INTERNAL},
    {"34", NC_C_PROGRAMMING},   /* invalid cursor name */
    {"3D", NC_C_PROGRAMMING},   /* invalid catalog name */
    {"3F", NC_C_PROGRAMMING},   /* invalid schema name */
    {"40", NC_C_OPERATIONAL},   /* transaction rollback (serialization, deadlock) */
    {"42", NC_C_PROGRAMMING},   /* syntax error or access rule violation */
    {"44", NC_C_PROGRAMMING},   /* with check option violation */
    {"53", NC_C_OPERATIONAL},   /* insufficient resources */
    {"54", NC_C_OPERATIONAL},   /* program limit exceeded */
    {"55", NC_C_OPERATIONAL},   /* object not in prerequisite state */
    {"57", NC_C_OPERATIONAL},   /* operator intervention (57014 is a cancel) */
    {"58", NC_C_OPERATIONAL},   /* system error */
    {"XX", NC_C_INTERNAL},
};

int nc_sqlstate_class(const char *s)
{
    if (!s || !s[0] || !s[1])
        return -1;
    for (size_t i = 0; i < sizeof sqlstate_classes / sizeof sqlstate_classes[0]; i++)
        if (sqlstate_classes[i].cls[0] == s[0] && sqlstate_classes[i].cls[1] == s[1])
            return sqlstate_classes[i].c;
    return NC_C_OPERATIONAL;
}

static const int kind_classes[] = {
    [NC_K_NONE] = NC_C_DATABASE,
    [NC_K_INTERFACE] = NC_C_INTERFACE,
    [NC_K_OPERATIONAL] = NC_C_OPERATIONAL,
    [NC_K_PROGRAMMING] = NC_C_PROGRAMMING,
    [NC_K_INTEGRITY] = NC_C_INTEGRITY,
    [NC_K_DATA] = NC_C_DATA,
    [NC_K_NOT_SUPPORTED] = NC_C_NOT_SUPPORTED,
    [NC_K_INTERNAL] = NC_C_INTERNAL,
};

int nc_error_class(int code, int kind, const char *sqlstate)
{
    if ((code == NC_E_CONNECTION || code == NC_E_QUERY) && sqlstate && sqlstate[0]) {
        int c = nc_sqlstate_class(sqlstate);
        if (c >= 0)
            return c;
    }
    const nc_code_info *info = nc_code_lookup(code);
    if (info && info->cls >= 0)
        return info->cls;
    if (kind > 0 && kind < (int)(sizeof kind_classes / sizeof kind_classes[0]))
        return kind_classes[kind];
    return NC_C_DATABASE;
}

/* ---- what an error says about the endpoint -------------------------------------- */

int nc_error_failure(int code, const char *s)
{
    if (s && !strcmp(s, "25006"))
        return NC_FAIL_READ_ONLY;
    switch (code) {
    case NC_E_CONNECTION:
    case NC_E_NEW_INVALID:
    case NC_E_NEW_FAILED:
    case NC_E_REPLACE_INVALID:
    case NC_E_REPLACE_FAILED:
    case NC_E_OUTCOME_UNKNOWN:  /* a lost connection, with the verdict on its statement */
        return NC_FAIL_LOST;
    case NC_E_FO_NO_ENDPOINT:
        return NC_FAIL_NO_ENDPOINT;
    default:
        break;
    }
    if (s && ((s[0] == '0' && s[1] == '8') || !strcmp(s, "57P01") || !strcmp(s, "57P02") || !strcmp(s, "57P03")))
        return NC_FAIL_LOST;
    return NC_FAIL_NONE;
}

int nc_error_not_applied(const nc_error *err)
{
    return err && (err->sent == NC_SENT_NO || !strcmp(err->sqlstate, "25006"));
}

int nc_outcome_unknown(int failure, int not_applied, int effect, int in_txn)
{
    if (!failure || not_applied)
        return 0;
    if (effect == NC_EFFECT_COMMIT)
        return 1;
    /* inside BEGIN ... the lost session took its transaction with it */
    return !in_txn && effect != NC_EFFECT_NONE;
}

/* Every byte that does not start a valid UTF-8 character becomes '?'
 * (see nc_error.h). */
void nc_utf8_clean(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        unsigned c = *p, n = 0, cp = 0;
        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            n = 1, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF)
            n = 2, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4)
            n = 3, cp = c & 0x07;
        unsigned i = 1;
        for (; n && i <= n && (p[i] & 0xC0) == 0x80; i++)
            cp = (cp << 6) | (p[i] & 0x3F);
        if (!n || i <= n || (n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF))
            || (cp >= 0xD800 && cp <= 0xDFFF)) {
            *p++ = '?';     /* only the lead byte: what follows is looked at again */
            continue;
        }
        p += n + 1;
    }
}
