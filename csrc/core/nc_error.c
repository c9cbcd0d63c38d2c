/* nc_error.c - filling error records, and the table of what codes mean. */
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
    vsnprintf(err->message, sizeof err->message, fmt, ap);
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
    vsnprintf(prefix, sizeof prefix, fmt, ap);
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
}

static const struct { int code; const char *text; } table[] = {
    {NC_E_POOL, "pool error"},
    {NC_E_POOL_CLOSED, "pool is shut down"},
    {NC_E_POOL_TIMEOUT, "no connection available within the timeout"},
    {NC_E_CONNECTION, "connection failed"},
    {NC_E_QUERY, "query failed"},
    {NC_E_WAIT_TIMEOUT, "connection wait timeout"},
    {NC_E_NEW_INVALID, "new connection failed validation"},
    {NC_E_NEW_FAILED, "failed to create a new connection"},
    {NC_E_REPLACE_INVALID, "replacement connection failed validation"},
    {NC_E_REPLACE_FAILED, "failed to create a replacement connection"},
    {NC_E_QUERY_TIMEOUT, "statement timeout: the statement was cancelled"},
    {NC_E_CONFIG, "invalid configuration"},
    {NC_E_PARAMS, "query parameters do not match the placeholders"},
    {NC_E_PARAM_TYPE, "unsupported parameter type"},
    {NC_E_RELEASED, "connection used after it was returned to the pool"},
    {NC_E_TXN_STATE, "invalid transaction state"},
    {NC_E_DECODE, "a value from the database could not be decoded"},
    {NC_E_ENV, "invalid environment variable value"},
    {NC_E_BACKEND, "backend object failed or broke the backend protocol"},
    {NC_E_NOT_SUPPORTED, "not supported by this backend"},
    {NC_E_IN_USE, "connection in use by another thread"},
    {NC_E_INTERNAL, "internal error"},
    {NC_E_FO_START, "failover: start monitoring failed"},
    {NC_E_FO_MANUAL, "failover: manual failover failed"},
    {NC_E_FO_RECOVERY, "failover: manual recovery failed"},
    {NC_E_FO_NO_ENDPOINT, "failover: no usable endpoint"},
    {NC_E_FO_UNKNOWN_ENDPOINT, "failover: unknown endpoint"},
};

const char *nc_error_describe(int code)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].code == code)
            return table[i].text;
    return NULL;
}

int nc_kind_for_sqlstate(const char *s)
{
    if (!s || strlen(s) < 2)
        return NC_K_NONE;
    if (s[0] == '2' && s[1] == '3')
        return NC_K_INTEGRITY;
    if (s[0] == '2' && s[1] == '2')
        return NC_K_DATA;
    if ((s[0] == '4' && s[1] == '2') || (s[0] == '2' && s[1] == '1'))
        return NC_K_PROGRAMMING;
    if (s[0] == '0' && s[1] == 'A')
        return NC_K_NOT_SUPPORTED;
    if (s[0] == 'X' && s[1] == 'X')
        return NC_K_INTERNAL;
    return NC_K_OPERATIONAL;
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
