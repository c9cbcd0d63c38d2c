/* pg_adapt.c - Python values to PostgreSQL parameters, and PostgreSQL text
 * results to Python values.
 *
 * Parameters are sent in text format with the type OID the Python type
 * implies (str goes as OID 0, "unknown", so the server infers the type as it
 * does for a literal, like psycopg 3); bytes-likes go in binary format as
 * bytea.  Results arrive in text format (DateStyle ISO, set by the
 * connection) and are decoded by the column's type OID; a type without a
 * decoder of its own (enums, ranges, user types, arrays of those ...) is
 * returned as str.  A list goes as an array of the type its elements imply
 * (pg_array.c writes and reads the array syntax); a dict as json.
 *
 * Values Python cannot represent come back as str, unchanged:
 *   - date/timestamp[tz] 'infinity' and '-infinity',
 *   - BC dates (" BC" suffix) and years above 9999,
 *   - time[tz] '24:00:00' (PostgreSQL allows it, datetime.time does not).
 */
#include "pg_adapt.h"
#include "pg_array.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <locale.h>
#include <string.h>


/* ---- type OIDs (pg_type.dat) ------------------------------------------- */

#define OID_BOOL        16
#define OID_BYTEA       17
#define OID_CHAR        18
#define OID_NAME        19
#define OID_INT8        20
#define OID_INT2        21
#define OID_INT4        23
#define OID_TEXT        25
#define OID_OID         26
#define OID_JSON        114
#define OID_XML         142
#define OID_FLOAT4      700
#define OID_FLOAT8      701
#define OID_UNKNOWN     705
#define OID_BPCHAR      1042
#define OID_VARCHAR     1043
#define OID_DATE        1082
#define OID_TIME        1083
#define OID_TIMESTAMP   1114
#define OID_TIMESTAMPTZ 1184
#define OID_INTERVAL    1186
#define OID_TIMETZ      1266
#define OID_NUMERIC     1700
#define OID_UUID        2950
#define OID_JSONB       3802
#define OID_INT2VECTOR  22
#define OID_OIDVECTOR   30

/* array types (pg_type.dat's typarray of each element type above) */
#define OID_JSON_ARRAY        199
#define OID_XML_ARRAY         143
#define OID_BOOL_ARRAY        1000
#define OID_BYTEA_ARRAY       1001
#define OID_CHAR_ARRAY        1002
#define OID_NAME_ARRAY        1003
#define OID_INT2_ARRAY        1005
#define OID_INT2VECTOR_ARRAY  1006
#define OID_INT4_ARRAY        1007
#define OID_TEXT_ARRAY        1009
#define OID_OIDVECTOR_ARRAY   1013
#define OID_BPCHAR_ARRAY      1014
#define OID_VARCHAR_ARRAY     1015
#define OID_INT8_ARRAY        1016
#define OID_FLOAT4_ARRAY      1021
#define OID_FLOAT8_ARRAY      1022
#define OID_OID_ARRAY         1028
#define OID_TIMESTAMP_ARRAY   1115
#define OID_DATE_ARRAY        1182
#define OID_TIME_ARRAY        1183
#define OID_TIMESTAMPTZ_ARRAY 1185
#define OID_INTERVAL_ARRAY    1187
#define OID_NUMERIC_ARRAY     1231
#define OID_TIMETZ_ARRAY      1270
#define OID_UUID_ARRAY        2951
#define OID_JSONB_ARRAY       3807

/* ======================================================================== */
/* Parameters                                                               */
/* ======================================================================== */

/* npy_pg_params_init makes one allocation holding every array plus, per slot,
 * NC_PG_SCRATCH bytes where short values (numbers, dates, times ...) are
 * formatted, so the common types need no allocation of their
 * own.  Layout: values | keep | owned (pointers) | types | lengths | formats
 * | scratch.  pp->values is the start of the block. */
#define NC_PG_SCRATCH 64

static char *scratch_of(npy_pg_params *pp, int i)
{
    return (char *)(pp->formats + pp->n) + (size_t)i * NC_PG_SCRATCH;
}

int npy_pg_params_init(npy_pg_params *pp, int n)
{
    memset(pp, 0, sizeof *pp);
    if (n < 0) {
        PyErr_SetString(PyExc_SystemError, "npy_pg_params_init: negative count");
        return -1;
    }
    if (n == 0)
        return 0;
    size_t per = 3 * sizeof(void *) + sizeof(Oid) + 2 * sizeof(int) + NC_PG_SCRATCH;
    if ((size_t)n > SIZE_MAX / per) {
        PyErr_NoMemory();
        return -1;
    }
    char *block = calloc((size_t)n, per);
    if (!block) {
        PyErr_NoMemory();
        return -1;
    }
    size_t un = (size_t)n;
    pp->values = (const char **)block;
    pp->keep = (PyObject **)(block + un * sizeof(void *));
    pp->owned = (char **)(block + 2 * un * sizeof(void *));
    pp->types = (Oid *)(block + 3 * un * sizeof(void *));
    pp->lengths = (int *)(pp->types + un);
    pp->formats = pp->lengths + un;
    pp->n = n;
    return 0;
}

static void slot_clear(npy_pg_params *pp, int i)
{
    Py_CLEAR(pp->keep[i]);
    free(pp->owned[i]);
    pp->owned[i] = NULL;
    pp->values[i] = NULL;
    pp->lengths[i] = 0;
    pp->formats[i] = 0;
    pp->types[i] = 0;
}

void npy_pg_params_free(npy_pg_params *pp)
{
    if (!pp)
        return;
    if (pp->values) {
        for (int i = 0; i < pp->n; i++) {
            Py_XDECREF(pp->keep[i]);
            free(pp->owned[i]);
        }
        free((void *)pp->values);
    }
    memset(pp, 0, sizeof *pp);
}

static int set_text(npy_pg_params *pp, int i, const char *text, int len, Oid type)
{
    pp->values[i] = text;
    pp->lengths[i] = len;
    pp->formats[i] = 0;
    pp->types[i] = type;
    return 0;
}

/* Send the str s (a reference we own, stolen) as text of the given type. */
static int set_str(npy_pg_params *pp, int i, PyObject *s, Oid type, const char *what)
{
    Py_ssize_t len;
    const char *u = npy_adapt_utf8(s, &len, what);
    if (!u) {
        Py_DECREF(s);
        return -1;
    }
    if (len > INT_MAX) {
        Py_DECREF(s);
        npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING, "%s: str value too long (%zd bytes)",
                        what, len);
        return -1;
    }
    /* text parameters travel NUL-terminated: a NUL would cut the value short */
    if (memchr(u, '\0', (size_t)len)) {
        Py_DECREF(s);
        npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING,
                        "%s: str value contains NUL (\\x00) characters, which PostgreSQL "
                        "text cannot store", what);
        return -1;
    }
    pp->keep[i] = s;
    return set_text(pp, i, u, (int)len, type);
}

/* Send the bytes object b (stolen) as binary bytea. */
static int set_bytes(npy_pg_params *pp, int i, PyObject *b, const char *what)
{
    Py_ssize_t len = PyBytes_GET_SIZE(b);
    if (len > INT_MAX) {
        Py_DECREF(b);
        npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING,
                        "%s: bytes value too long (%zd bytes)", what, len);
        return -1;
    }
    pp->keep[i] = b;
    pp->values[i] = PyBytes_AS_STRING(b);
    pp->lengths[i] = (int)len;
    pp->formats[i] = 1;
    pp->types[i] = OID_BYTEA;
    return 0;
}

/* Decimal text of x into buf; returns the length. */
static int format_ll(char *buf, long long x)
{
    char tmp[24];
    int n = 0, len = 0;
    unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (x < 0)
        buf[len++] = '-';
    while (n)
        buf[len++] = tmp[--n];
    buf[len] = '\0';
    return len;
}

/* PostgreSQL takes a UTC offset of whole seconds within +-15:59:59 (its
 * TZDISP_LIMIT); Python allows up to 23:59:59.999999.  Refused here (2015)
 * instead of by the server after the statement was sent.  0 ok, -1 raised. */
static int check_offset(PyObject *value, const char *what)
{
    long long us;
    int r = npy_adapt_utcoffset_us(value, &us);
    if (r < 0)
        return -1;
    if (r == 1 && (us % 1000000 != 0 || us < -57599000000LL || us > 57599000000LL)) {
        npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING,
                        "%s: UTC offset out of PostgreSQL's range (whole seconds within +-15:59:59)", what);
        return -1;
    }
    return 0;
}

/* ---- lists as arrays ----------------------------------------------------- */

/* The array type of an element type (0: none we send). */
static Oid array_oid_of(Oid elem)
{
    switch (elem) {
    case OID_BOOL: return OID_BOOL_ARRAY;
    case OID_BYTEA: return OID_BYTEA_ARRAY;
    case OID_INT4: return OID_INT4_ARRAY;
    case OID_INT8: return OID_INT8_ARRAY;
    case OID_TEXT: return OID_TEXT_ARRAY;
    case OID_FLOAT8: return OID_FLOAT8_ARRAY;
    case OID_NUMERIC: return OID_NUMERIC_ARRAY;
    case OID_DATE: return OID_DATE_ARRAY;
    case OID_TIME: return OID_TIME_ARRAY;
    case OID_TIMETZ: return OID_TIMETZ_ARRAY;
    case OID_TIMESTAMP: return OID_TIMESTAMP_ARRAY;
    case OID_TIMESTAMPTZ: return OID_TIMESTAMPTZ_ARRAY;
    case OID_INTERVAL: return OID_INTERVAL_ARRAY;
    case OID_UUID: return OID_UUID_ARRAY;
    case OID_JSON: return OID_JSON_ARRAY;
    default: return 0;
    }
}

/* Two element types in one list: integers widen (int4 < int8 < numeric,
 * Decimal is numeric), as one int column would; anything else is refused. */
static unsigned merge_elem(unsigned a, unsigned b)
{
    int ra = a == OID_INT4 ? 1 : a == OID_INT8 ? 2 : a == OID_NUMERIC ? 3 : 0;
    int rb = b == OID_INT4 ? 1 : b == OID_INT8 ? 2 : b == OID_NUMERIC ? 3 : 0;
    if (!ra || !rb)
        return 0;
    return ra > rb ? a : b;
}

/* One element through the scalar rules, in a one-slot npy_pg_params that
 * the whole list shares; bytea (binary as a scalar) is written as its hex
 * text, str (unknown as a scalar) becomes text. */
typedef struct {
    npy_pg_params one;
    char *hex;
    const char *what;
} elem_ctx;

static int encode_elem(void *vctx, PyObject *leaf, const char **text, Py_ssize_t *len, unsigned *oid)
{
    elem_ctx *ec = vctx;
    if (npy_pg_params_set(&ec->one, 0, leaf, ec->what) < 0)
        return -1;
    Oid t = ec->one.types[0];
    if (ec->one.formats[0] == 1) {
        static const char hexd[] = "0123456789abcdef";
        const unsigned char *b = (const unsigned char *)ec->one.values[0];
        size_t n = (size_t)ec->one.lengths[0];
        free(ec->hex);
        ec->hex = malloc(2 * n + 3);
        if (!ec->hex) {
            PyErr_NoMemory();
            return -1;
        }
        ec->hex[0] = '\\';
        ec->hex[1] = 'x';
        for (size_t k = 0; k < n; k++) {
            ec->hex[2 + 2 * k] = hexd[b[k] >> 4];
            ec->hex[3 + 2 * k] = hexd[b[k] & 15];
        }
        *text = ec->hex;
        *len = (Py_ssize_t)(2 * n + 2);
    } else {
        *text = ec->one.values[0];
        *len = ec->one.lengths[0];
    }
    *oid = t ? t : OID_TEXT;
    return 0;
}

/* A list as an array of the type its elements imply (psycopg 3's rule);
 * an empty or all-None list goes as "unknown", so the server takes the
 * array type from the context (an int[] column, = ANY(...)). */
static int set_list(npy_pg_params *pp, int i, PyObject *list, const char *what)
{
    elem_ctx ec;
    memset(&ec, 0, sizeof ec);
    ec.what = what;
    if (npy_pg_params_init(&ec.one, 1) < 0)
        return -1;
    unsigned elem = 0;
    Py_ssize_t len = 0;
    char *text = npy_pg_array_format(list, encode_elem, &ec, merge_elem, &elem, &len, what);
    npy_pg_params_free(&ec.one);
    free(ec.hex);
    if (!text)
        return -1;
    if (len > INT_MAX) {
        free(text);
        npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING, "%s: list too long as an array", what);
        return -1;
    }
    Oid type = elem ? array_oid_of(elem) : 0;
    if (elem && !type) {            /* cannot happen: every scalar type maps */
        free(text);
        npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING, "%s: no array type for element type %u",
                         what, elem);
        return -1;
    }
    pp->owned[i] = text;
    return set_text(pp, i, text, (int)len, type);
}

int npy_pg_params_set(npy_pg_params *pp, int i, PyObject *value, const char *what)
{
    if (!what)
        what = "parameter";
    if (i < 0 || i >= pp->n) {
        PyErr_Format(PyExc_IndexError, "npy_pg_params_set: slot %d out of range (%d)", i, pp->n);
        return -1;
    }
    slot_clear(pp, i);

    char *buf = scratch_of(pp, i);
    int has_offset, len;
    PyObject *s;
    int kind = npy_adapt_kind(value);

    switch (kind) {
    case NPY_V_NONE:
        return 0;

    case NPY_V_INT: {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (!overflow) {
            if (x == -1 && PyErr_Occurred())
                return -1;
            /* int4 when it fits, as psycopg 3 chooses by value: functions
             * such as repeat(text, int4) and date + int4 have no int8
             * variant; int8 beyond, numeric beyond that. */
            Oid oid = (x >= -2147483648LL && x <= 2147483647LL) ? OID_INT4 : OID_INT8;
            return set_text(pp, i, buf, format_ll(buf, x), oid);
        }
        s = PyNumber_ToBase(value, 10);     /* beyond int8: send as numeric */
        if (!s)
            return -1;
        return set_str(pp, i, s, OID_NUMERIC, what);
    }

    case NPY_V_STR:
        return set_str(pp, i, Py_NewRef(value), 0, what);

    case NPY_V_FLOAT: {
        double d = PyFloat_AS_DOUBLE(value);
        if (isnan(d))
            return set_text(pp, i, "NaN", 3, OID_FLOAT8);
        if (isinf(d))
            return d > 0 ? set_text(pp, i, "Infinity", 8, OID_FLOAT8)
                         : set_text(pp, i, "-Infinity", 9, OID_FLOAT8);
        char *r = PyOS_double_to_string(d, 'r', 0, 0, NULL);
        if (!r)
            return -1;
        size_t rl = strlen(r);
        if (rl >= NC_PG_SCRATCH) {      /* cannot happen: repr is <= 24 chars */
            PyMem_Free(r);
            PyErr_SetString(PyExc_SystemError, "float repr too long");
            return -1;
        }
        memcpy(buf, r, rl + 1);
        PyMem_Free(r);
        return set_text(pp, i, buf, (int)rl, OID_FLOAT8);
    }

    case NPY_V_BOOL:
        return set_text(pp, i, value == Py_True ? "t" : "f", 1, OID_BOOL);

    case NPY_V_BYTES:
        return set_bytes(pp, i, Py_NewRef(value), what);

    case NPY_V_BUFFER:
        /* bytearray / memoryview: copy, the original may change (or be
         * resized) while the statement runs without the GIL */
        s = PyBytes_FromObject(value);
        if (!s)
            return -1;
        return set_bytes(pp, i, s, what);

    case NPY_V_DECIMAL: {
        s = PyObject_Str(value);
        if (!s)
            return -1;
        const char *u = PyUnicode_AsUTF8(s);
        if (!u) {
            Py_DECREF(s);
            return -1;
        }
        if (*u == '-' || *u == '+')
            u++;
        if (*u == 's' || *u == 'S') {
            Py_DECREF(s);
            npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING,
                            "%s: a signaling NaN Decimal cannot be sent", what);
            return -1;
        }
        if (*u == 'N' || *u == 'n') {   /* "-NaN", "NaN123": numeric knows one NaN */
            Py_DECREF(s);
            return set_text(pp, i, "NaN", 3, OID_NUMERIC);
        }
        return set_str(pp, i, s, OID_NUMERIC, what);
    }

    case NPY_V_DATETIME:
    case NPY_V_DATE:
    case NPY_V_TIME:
    case NPY_V_TIMEDELTA: {
        len = npy_adapt_format_temporal(value, kind, buf, NC_PG_SCRATCH, &has_offset);
        if (len < 0)
            return -1;
        if (has_offset && check_offset(value, what) < 0)
            return -1;
        Oid type = kind == NPY_V_DATETIME ? (has_offset ? OID_TIMESTAMPTZ : OID_TIMESTAMP)
                 : kind == NPY_V_DATE ? OID_DATE
                 : kind == NPY_V_TIME ? (has_offset ? OID_TIMETZ : OID_TIME)
                 : OID_INTERVAL;
        return set_text(pp, i, buf, len, type);
    }

    case NPY_V_UUID:
        s = PyObject_Str(value);
        if (!s)
            return -1;
        return set_str(pp, i, s, OID_UUID, what);

    case NPY_V_JSON:
        if (PyList_Check(value))
            return set_list(pp, i, value, what);
        s = npy_adapt_json_dumps(value, what);
        if (!s)
            return -1;
        return set_str(pp, i, s, OID_JSON, what);

    case NPY_V_OTHER:
        npy_adapt_type_error(what, value);
        return -1;

    default:                            /* -1: error set by npy_adapt_kind */
        return -1;
    }
}

/* ======================================================================== */
/* Results                                                                  */
/* ======================================================================== */

/* A short printable prefix of value for error messages. */
static void value_prefix(char *out, size_t size, const char *v, int len)
{
    size_t o = 0;
    int i;
    for (i = 0; i < len && o + 5 < size && i < 40; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", c);
        }
    }
    if (i < len && o + 4 <= size) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Raise DataError 2018 for a value of type oid (tname names it), or convert
 * a pending exception into it (chained); MemoryError is left alone. */
static PyObject *decode_error(Oid oid, const char *tname, const char *v, int len, const char *why)
{
    char pfx[200], msg[400];
    value_prefix(pfx, sizeof pfx, v, len);
    if (oid)
        snprintf(msg, sizeof msg, "cannot decode a %s value (type OID %u)%s%s: '%s'",
                 tname, (unsigned)oid, why ? ": " : "", why ? why : "", pfx);
    else    /* the generic str decoder is not told the OID */
        snprintf(msg, sizeof msg, "cannot decode a value (%s)%s%s: '%s'",
                 tname, why ? ": " : "", why ? why : "", pfx);
    if (PyErr_Occurred())
        return npy_adapt_reraise(NC_E_DECODE, NC_K_DATA, msg);
    return npy_adapt_raisef(NC_E_DECODE, NC_K_DATA, "%s", msg);
}

/* ---- str -------------------------------------------------------------- */

static inline PyObject *dec_text_impl(const char *v, int len, Oid oid, const char *tname)
{
    PyObject *r = PyUnicode_DecodeUTF8(v, len, NULL);
    if (!r)
        return decode_error(oid, tname, v, len, "invalid UTF-8");
    return r;
}

#define TEXT_DECODER(fname, oid, tname) \
    static PyObject *fname(const char *v, int len) { return dec_text_impl(v, len, oid, tname); }

TEXT_DECODER(dec_text, OID_TEXT, "text")
TEXT_DECODER(dec_varchar, OID_VARCHAR, "varchar")
TEXT_DECODER(dec_bpchar, OID_BPCHAR, "bpchar")
TEXT_DECODER(dec_name, OID_NAME, "name")
TEXT_DECODER(dec_char, OID_CHAR, "\"char\"")
TEXT_DECODER(dec_unknown, OID_UNKNOWN, "unknown")
TEXT_DECODER(dec_xml, OID_XML, "xml")
/* every type without a decoder: the OID is not known here */
TEXT_DECODER(dec_other, 0, "a type without a decoder of its own, read as str")

/* ---- numbers ------------------------------------------------------------ */

static inline PyObject *dec_int_impl(const char *v, int len, Oid oid, const char *tname)
{
    const char *p = v, *end = v + len;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p < end && end - p <= 19) {
        unsigned long long acc = 0;
        for (; p < end; p++) {
            unsigned d = (unsigned)(unsigned char)*p - '0';
            if (d > 9)
                goto slow;
            acc = acc * 10 + d;         /* 19 digits fit in 64 unsigned bits */
        }
        if (!neg && acc <= (unsigned long long)LLONG_MAX)
            return PyLong_FromLongLong((long long)acc);
        if (neg && acc <= (unsigned long long)LLONG_MAX + 1)
            return PyLong_FromLongLong(acc == (unsigned long long)LLONG_MAX + 1
                                       ? LLONG_MIN : -(long long)acc);
    }
slow: {
        /* not plain digits, or more than int8 holds: let Python judge */
        char buf[64];
        char *pend;
        if (len <= 0 || len >= (int)sizeof buf)
            return decode_error(oid, tname, v, len, "not an integer");
        memcpy(buf, v, (size_t)len);
        buf[len] = '\0';
        PyObject *r = PyLong_FromString(buf, &pend, 10);
        if (r && pend != buf + len) {
            Py_CLEAR(r);
        }
        if (!r)
            return decode_error(oid, tname, v, len, "not an integer");
        return r;
    }
}

static PyObject *dec_int8(const char *v, int len) { return dec_int_impl(v, len, OID_INT8, "int8"); }
static PyObject *dec_int4(const char *v, int len) { return dec_int_impl(v, len, OID_INT4, "int4"); }
static PyObject *dec_int2(const char *v, int len) { return dec_int_impl(v, len, OID_INT2, "int2"); }
static PyObject *dec_oid(const char *v, int len) { return dec_int_impl(v, len, OID_OID, "oid"); }

/* The "C" locale for strtod_l: decoding must not depend on the process
 * locale, and PyOS_string_to_double switches the x87 control word on every
 * call, which made it the top cost of fetching float columns. */
static locale_t c_locale;

static inline PyObject *dec_float_impl(const char *v, int len, Oid oid, const char *tname)
{
    char *end;
    if (len <= 0)
        return decode_error(oid, tname, v, len, "not a number");
    if (!c_locale)
        c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    /* libpq's values are NUL-terminated; glibc's strtod rounds correctly and
     * reads "NaN", "Infinity" and "-Infinity". */
    double d = c_locale ? strtod_l(v, &end, c_locale) : PyOS_string_to_double(v, &end, NULL);
    if (d == -1.0 && PyErr_Occurred())
        return decode_error(oid, tname, v, len, "not a number");
    if (end != v + len)
        return decode_error(oid, tname, v, len, "not a number");
    return PyFloat_FromDouble(d);
}

static PyObject *dec_float8(const char *v, int len) { return dec_float_impl(v, len, OID_FLOAT8, "float8"); }
static PyObject *dec_float4(const char *v, int len) { return dec_float_impl(v, len, OID_FLOAT4, "float4"); }

static PyObject *dec_bool(const char *v, int len)
{
    if (len == 1) {
        if (*v == 't')
            Py_RETURN_TRUE;
        if (*v == 'f')
            Py_RETURN_FALSE;
    }
    return decode_error(OID_BOOL, "bool", v, len, "expected 't' or 'f'");
}

/* Call factory(str(value)); failures become 2018. */
static PyObject *dec_via(PyObject *factory, const char *v, int len, Oid oid, const char *tname)
{
    if (!factory) {
        PyErr_SetString(PyExc_SystemError, "noodlecore: npy_adapt_init() was not called");
        return NULL;
    }
    PyObject *s = PyUnicode_DecodeUTF8(v, len, NULL);
    if (!s)
        return decode_error(oid, tname, v, len, "invalid UTF-8");
    PyObject *r = PyObject_CallOneArg(factory, s);
    Py_DECREF(s);
    if (!r)
        return decode_error(oid, tname, v, len, NULL);
    return r;
}

static PyObject *dec_numeric(const char *v, int len)
{
    return dec_via(npy_st->Decimal, v, len, OID_NUMERIC, "numeric");
}

static PyObject *dec_uuid(const char *v, int len)
{
    return dec_via(npy_st->UUID, v, len, OID_UUID, "uuid");
}

static PyObject *dec_json(const char *v, int len)
{
    return dec_via(npy_st->json_loads, v, len, OID_JSON, "json");
}

static PyObject *dec_jsonb(const char *v, int len)
{
    return dec_via(npy_st->json_loads, v, len, OID_JSONB, "jsonb");
}

/* ---- bytea -------------------------------------------------------------- */

static inline int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static inline int is_octal(char c)
{
    return c >= '0' && c <= '7';
}

static PyObject *dec_bytea(const char *v, int len)
{
    PyObject *r;
    char *out;

    if (len >= 2 && v[0] == '\\' && v[1] == 'x') {     /* bytea_output = hex */
        int n = len - 2;
        if (n % 2)
            return decode_error(OID_BYTEA, "bytea", v, len, "odd number of hex digits");
        r = PyBytes_FromStringAndSize(NULL, n / 2);
        if (!r)
            return NULL;
        out = PyBytes_AS_STRING(r);
        const unsigned char *p = (const unsigned char *)v + 2;
        for (int k = 0; k < n / 2; k++) {
            int hi = hexval(p[2 * k]), lo = hexval(p[2 * k + 1]);
            if ((hi | lo) < 0) {
                Py_DECREF(r);
                return decode_error(OID_BYTEA, "bytea", v, len, "invalid hex digit");
            }
            out[k] = (char)(hi << 4 | lo);
        }
        return r;
    }

    /* bytea_output = escape: "\\" is a backslash, "\ooo" an octal byte */
    Py_ssize_t n = 0;
    for (int k = 0; k < len; n++) {
        if (v[k] != '\\') {
            k++;
        } else if (k + 1 < len && v[k + 1] == '\\') {
            k += 2;
        } else if (k + 3 < len && is_octal(v[k + 1]) && is_octal(v[k + 2]) && is_octal(v[k + 3])
                   && v[k + 1] <= '3') {
            k += 4;
        } else {
            return decode_error(OID_BYTEA, "bytea", v, len, "invalid escape");
        }
    }
    r = PyBytes_FromStringAndSize(NULL, n);
    if (!r)
        return NULL;
    out = PyBytes_AS_STRING(r);
    for (int k = 0; k < len;) {
        if (v[k] != '\\') {
            *out++ = v[k++];
        } else if (v[k + 1] == '\\') {
            *out++ = '\\';
            k += 2;
        } else {
            *out++ = (char)((v[k + 1] - '0') << 6 | (v[k + 2] - '0') << 3 | (v[k + 3] - '0'));
            k += 4;
        }
    }
    return r;
}

/* ---- dates and times ---------------------------------------------------- */

/* Parsing results: OK, a valid value Python cannot hold (returned as str),
 * or malformed text (DataError). */
enum { P_OK = 0, P_STR = 1, P_BAD = -1 };

/* exactly n digits */
static int digits(const char **pp, const char *end, int n, int *out)
{
    const char *p = *pp;
    int x = 0;
    if (end - p < n)
        return -1;
    for (int k = 0; k < n; k++) {
        unsigned d = (unsigned)(unsigned char)p[k] - '0';
        if (d > 9)
            return -1;
        x = x * 10 + (int)d;
    }
    *pp = p + n;
    *out = x;
    return 0;
}

static int expect(const char **pp, const char *end, char c)
{
    if (*pp < end && **pp == c) {
        (*pp)++;
        return 0;
    }
    return -1;
}

/* "YYYY-MM-DD"; a year of more than 4 digits is P_STR. */
static int parse_date(const char **pp, const char *end, int *y, int *m, int *d)
{
    const char *p = *pp, *q = p;
    while (q < end && *q >= '0' && *q <= '9')
        q++;
    if (q - p < 4)
        return P_BAD;
    if (q - p > 4)
        return P_STR;
    if (digits(&p, end, 4, y) < 0 || expect(&p, end, '-') < 0 || digits(&p, end, 2, m) < 0
        || expect(&p, end, '-') < 0 || digits(&p, end, 2, d) < 0)
        return P_BAD;
    if (*y < 1)
        return P_STR;
    *pp = p;
    return P_OK;
}

/* "HH:MM:SS[.f{1,6}]"; hour 24 (only 24:00:00 is valid) is P_STR. */
static int parse_time(const char **pp, const char *end, int *h, int *mi, int *s, int *us)
{
    const char *p = *pp;
    if (digits(&p, end, 2, h) < 0 || expect(&p, end, ':') < 0 || digits(&p, end, 2, mi) < 0
        || expect(&p, end, ':') < 0 || digits(&p, end, 2, s) < 0)
        return P_BAD;
    *us = 0;
    if (p < end && *p == '.') {
        int nd = 0;
        p++;
        while (p < end && *p >= '0' && *p <= '9' && nd < 6) {
            *us = *us * 10 + (*p - '0');
            p++;
            nd++;
        }
        if (nd == 0)
            return P_BAD;
        for (; nd < 6; nd++)
            *us *= 10;
    }
    *pp = p;
    return *h == 24 ? P_STR : P_OK;
}

/* "+HH[:MM[:SS]]" -> seconds east of UTC */
static int parse_offset(const char **pp, const char *end, int *off)
{
    const char *p = *pp;
    int sign, h, m = 0, s = 0;
    if (p >= end || (*p != '+' && *p != '-'))
        return P_BAD;
    sign = *p++ == '-' ? -1 : 1;
    if (digits(&p, end, 2, &h) < 0)
        return P_BAD;
    if (p < end && *p == ':') {
        p++;
        if (digits(&p, end, 2, &m) < 0)
            return P_BAD;
        if (p < end && *p == ':') {
            p++;
            if (digits(&p, end, 2, &s) < 0)
                return P_BAD;
        }
    }
    if (m > 59 || s > 59 || h > 23)
        return P_BAD;
    *off = sign * (h * 3600 + m * 60 + s);
    *pp = p;
    return P_OK;
}

static PyObject *as_str(const char *v, int len)
{
    return PyUnicode_DecodeUTF8(v, len, NULL);
}

/* 'infinity', '-infinity' and BC values cannot be Python dates */
static int unrepresentable(const char *v, int len)
{
    if ((len == 8 && memcmp(v, "infinity", 8) == 0) || (len == 9 && memcmp(v, "-infinity", 9) == 0))
        return 1;
    return len >= 3 && memcmp(v + len - 3, " BC", 3) == 0;
}

/* Construct via the datetime API, turning its ValueError into 2018. */
#define CHECK_BUILT(r, oid, tname) \
    do { if (!(r)) return decode_error(oid, tname, v, len, "out of range"); } while (0)

static PyObject *dec_date(const char *v, int len)
{
    const char *p = v, *end = v + len;
    int y, m, d, rc;
    if (unrepresentable(v, len))
        return as_str(v, len);
    rc = parse_date(&p, end, &y, &m, &d);
    if (rc == P_STR)
        return as_str(v, len);
    if (rc != P_OK || p != end)
        return decode_error(OID_DATE, "date", v, len, "malformed");
    PyObject *r = npy_adapt_new_date(y, m, d);
    CHECK_BUILT(r, OID_DATE, "date");
    return r;
}

static PyObject *dec_time_impl(const char *v, int len, int tz)
{
    const char *p = v, *end = v + len;
    Oid oid = tz ? OID_TIMETZ : OID_TIME;
    const char *tname = tz ? "timetz" : "time";
    int h, mi, s, us, off = 0, rc;
    rc = parse_time(&p, end, &h, &mi, &s, &us);
    if (rc == P_BAD || (tz && parse_offset(&p, end, &off) != P_OK) || p != end)
        return decode_error(oid, tname, v, len, "malformed");
    if (rc == P_STR)
        return as_str(v, len);
    PyObject *tzinfo = NULL;
    if (tz && !(tzinfo = npy_adapt_tz(off)))
        return decode_error(oid, tname, v, len, "bad offset");
    PyObject *r = npy_adapt_new_time(h, mi, s, us, tzinfo);
    Py_XDECREF(tzinfo);
    CHECK_BUILT(r, oid, tname);
    return r;
}

static PyObject *dec_time(const char *v, int len) { return dec_time_impl(v, len, 0); }
static PyObject *dec_timetz(const char *v, int len) { return dec_time_impl(v, len, 1); }

static PyObject *dec_timestamp_impl(const char *v, int len, int tz)
{
    const char *p = v, *end = v + len;
    Oid oid = tz ? OID_TIMESTAMPTZ : OID_TIMESTAMP;
    const char *tname = tz ? "timestamptz" : "timestamp";
    int y, mo, d, h, mi, s, us, off = 0, rc, rc2;
    if (unrepresentable(v, len))
        return as_str(v, len);
    rc = parse_date(&p, end, &y, &mo, &d);
    if (rc == P_STR)
        return as_str(v, len);
    if (rc != P_OK || expect(&p, end, ' ') < 0)
        return decode_error(oid, tname, v, len, "malformed");
    rc2 = parse_time(&p, end, &h, &mi, &s, &us);
    if (rc2 != P_OK || (tz && parse_offset(&p, end, &off) != P_OK) || p != end)
        return decode_error(oid, tname, v, len, "malformed");
    PyObject *tzinfo = NULL;
    if (tz && !(tzinfo = npy_adapt_tz(off)))
        return decode_error(oid, tname, v, len, "bad offset");
    PyObject *r = npy_adapt_new_datetime(y, mo, d, h, mi, s, us, tzinfo);
    Py_XDECREF(tzinfo);
    CHECK_BUILT(r, oid, tname);
    return r;
}

static PyObject *dec_timestamp(const char *v, int len) { return dec_timestamp_impl(v, len, 0); }
static PyObject *dec_timestamptz(const char *v, int len) { return dec_timestamp_impl(v, len, 1); }

/* ---- interval ------------------------------------------------------------ */

/* IntervalStyle postgres (the connection makes sure of it):
 * "[N year[s]] [N mon[s]] [N day[s]] [[+-]H+:MM:SS[.f]]", each part signed,
 * e.g. "-1 days +02:03:04.5", "1 year 2 mons", "00:00:00".  timedelta has
 * no months: a month is 30 days and a year 365, psycopg 3's rule for the
 * text format (so '1 mon' and '30 days' decode alike, and '1 year' is not
 * 12 months' 360 days).  Beyond timedelta's range (999999999 days) is a
 * DataError; 'infinity' (PostgreSQL 17) comes back as str. */
static PyObject *dec_interval(const char *v, int len)
{
    const char *p = v, *end = v + len;
    long long days = 0, secs = 0, us = 0;   /* the time part in seconds and microseconds */
    if ((len == 8 && memcmp(v, "infinity", 8) == 0) || (len == 9 && memcmp(v, "-infinity", 9) == 0))
        return as_str(v, len);
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        if (p >= end)
            break;
        int neg = 0;
        if (*p == '-' || *p == '+')
            neg = *p++ == '-';
        const char *num = p;
        long long x = 0;
        while (p < end && *p >= '0' && *p <= '9' && p - num < 12)
            x = x * 10 + (*p++ - '0');
        if (p == num)
            goto bad;
        if (p < end && *p == ':') {     /* the time part: H+:MM:SS[.f] */
            int mi, sec, frac = 0;
            p++;
            if (digits(&p, end, 2, &mi) < 0 || expect(&p, end, ':') < 0 || digits(&p, end, 2, &sec) < 0)
                goto bad;
            if (p < end && *p == '.') {
                int nd = 0;
                p++;
                while (p < end && *p >= '0' && *p <= '9' && nd < 6) {
                    frac = frac * 10 + (*p++ - '0');
                    nd++;
                }
                if (nd == 0)
                    goto bad;
                for (; nd < 6; nd++)
                    frac *= 10;
            }
            long long t = (x * 60 + mi) * 60 + sec;   /* x < 10^12: no overflow */
            secs = neg ? -t : t;
            us = neg ? -frac : frac;
            if (p != end)
                goto bad;
            break;
        }
        if (neg)
            x = -x;
        if (expect(&p, end, ' ') < 0)
            goto bad;
        const char *unit = p;
        while (p < end && *p != ' ')
            p++;
        size_t ul = (size_t)(p - unit);
        if ((ul == 4 && !memcmp(unit, "year", 4)) || (ul == 5 && !memcmp(unit, "years", 5)))
            days += x * 365;
        else if ((ul == 3 && !memcmp(unit, "mon", 3)) || (ul == 4 && !memcmp(unit, "mons", 4)))
            days += x * 30;
        else if ((ul == 3 && !memcmp(unit, "day", 3)) || (ul == 4 && !memcmp(unit, "days", 4)))
            days += x;
        else
            goto bad;
    }
    {
        /* normalise as timedelta does: us in [0, 10^6), secs in [0, 86400) */
        if (us < 0) {
            us += 1000000;
            secs--;
        }
        long long carry = secs / 86400;
        secs -= carry * 86400;
        if (secs < 0) {
            secs += 86400;
            carry--;
        }
        days += carry;
        if (days < -999999999LL || days > 999999999LL)
            return decode_error(OID_INTERVAL, "interval", v, len,
                                "out of timedelta's range (a month is 30 days, a year 365)");
        PyObject *r = npy_adapt_new_timedelta((int)days, (int)secs, (int)us);
        CHECK_BUILT(r, OID_INTERVAL, "interval");
        return r;
    }
bad:
    return decode_error(OID_INTERVAL, "interval", v, len, "malformed (IntervalStyle must be postgres)");
}

/* ---- arrays --------------------------------------------------------------- */

#define ARRAY_DECODER(fname, elem, tname) \
    static PyObject *fname(const char *v, int len) { return npy_pg_array_parse(v, len, elem, tname); }

static PyObject *dec_int2vector(const char *v, int len)
{
    return npy_pg_vector_parse(v, len, "int2vector");
}

static PyObject *dec_oidvector(const char *v, int len)
{
    return npy_pg_vector_parse(v, len, "oidvector");
}

ARRAY_DECODER(dec_bool_array, dec_bool, "bool[]")
ARRAY_DECODER(dec_bytea_array, dec_bytea, "bytea[]")
ARRAY_DECODER(dec_char_array, dec_char, "\"char\"[]")
ARRAY_DECODER(dec_name_array, dec_name, "name[]")
ARRAY_DECODER(dec_int2_array, dec_int2, "int2[]")
ARRAY_DECODER(dec_int2vector_array, dec_int2vector, "int2vector[]")
ARRAY_DECODER(dec_int4_array, dec_int4, "int4[]")
ARRAY_DECODER(dec_int8_array, dec_int8, "int8[]")
ARRAY_DECODER(dec_oid_array, dec_oid, "oid[]")
ARRAY_DECODER(dec_oidvector_array, dec_oidvector, "oidvector[]")
ARRAY_DECODER(dec_text_array, dec_text, "text[]")
ARRAY_DECODER(dec_varchar_array, dec_varchar, "varchar[]")
ARRAY_DECODER(dec_bpchar_array, dec_bpchar, "bpchar[]")
ARRAY_DECODER(dec_xml_array, dec_xml, "xml[]")
ARRAY_DECODER(dec_float4_array, dec_float4, "float4[]")
ARRAY_DECODER(dec_float8_array, dec_float8, "float8[]")
ARRAY_DECODER(dec_numeric_array, dec_numeric, "numeric[]")
ARRAY_DECODER(dec_date_array, dec_date, "date[]")
ARRAY_DECODER(dec_time_array, dec_time, "time[]")
ARRAY_DECODER(dec_timetz_array, dec_timetz, "timetz[]")
ARRAY_DECODER(dec_timestamp_array, dec_timestamp, "timestamp[]")
ARRAY_DECODER(dec_timestamptz_array, dec_timestamptz, "timestamptz[]")
ARRAY_DECODER(dec_interval_array, dec_interval, "interval[]")
ARRAY_DECODER(dec_uuid_array, dec_uuid, "uuid[]")
ARRAY_DECODER(dec_json_array, dec_json, "json[]")
ARRAY_DECODER(dec_jsonb_array, dec_jsonb, "jsonb[]")

/* ---- the table ---------------------------------------------------------- */

npy_pg_decoder npy_pg_decoder_for(Oid type)
{
    switch (type) {
    case OID_BOOL: return dec_bool;
    case OID_INT8: return dec_int8;
    case OID_INT4: return dec_int4;
    case OID_INT2: return dec_int2;
    case OID_OID: return dec_oid;
    case OID_FLOAT8: return dec_float8;
    case OID_FLOAT4: return dec_float4;
    case OID_NUMERIC: return dec_numeric;
    case OID_TEXT: return dec_text;
    case OID_VARCHAR: return dec_varchar;
    case OID_BPCHAR: return dec_bpchar;
    case OID_NAME: return dec_name;
    case OID_CHAR: return dec_char;
    case OID_UNKNOWN: return dec_unknown;
    case OID_XML: return dec_xml;
    case OID_INTERVAL: return dec_interval;
    case OID_BYTEA: return dec_bytea;
    case OID_DATE: return dec_date;
    case OID_TIME: return dec_time;
    case OID_TIMETZ: return dec_timetz;
    case OID_TIMESTAMP: return dec_timestamp;
    case OID_TIMESTAMPTZ: return dec_timestamptz;
    case OID_UUID: return dec_uuid;
    case OID_JSON: return dec_json;
    case OID_JSONB: return dec_jsonb;
    case OID_INT2VECTOR: return dec_int2vector;
    case OID_OIDVECTOR: return dec_oidvector;
    case OID_BOOL_ARRAY: return dec_bool_array;
    case OID_BYTEA_ARRAY: return dec_bytea_array;
    case OID_CHAR_ARRAY: return dec_char_array;
    case OID_NAME_ARRAY: return dec_name_array;
    case OID_INT2_ARRAY: return dec_int2_array;
    case OID_INT2VECTOR_ARRAY: return dec_int2vector_array;
    case OID_INT4_ARRAY: return dec_int4_array;
    case OID_INT8_ARRAY: return dec_int8_array;
    case OID_OID_ARRAY: return dec_oid_array;
    case OID_OIDVECTOR_ARRAY: return dec_oidvector_array;
    case OID_TEXT_ARRAY: return dec_text_array;
    case OID_VARCHAR_ARRAY: return dec_varchar_array;
    case OID_BPCHAR_ARRAY: return dec_bpchar_array;
    case OID_XML_ARRAY: return dec_xml_array;
    case OID_FLOAT4_ARRAY: return dec_float4_array;
    case OID_FLOAT8_ARRAY: return dec_float8_array;
    case OID_NUMERIC_ARRAY: return dec_numeric_array;
    case OID_DATE_ARRAY: return dec_date_array;
    case OID_TIME_ARRAY: return dec_time_array;
    case OID_TIMETZ_ARRAY: return dec_timetz_array;
    case OID_TIMESTAMP_ARRAY: return dec_timestamp_array;
    case OID_TIMESTAMPTZ_ARRAY: return dec_timestamptz_array;
    case OID_INTERVAL_ARRAY: return dec_interval_array;
    case OID_UUID_ARRAY: return dec_uuid_array;
    case OID_JSON_ARRAY: return dec_json_array;
    case OID_JSONB_ARRAY: return dec_jsonb_array;
    default: return dec_other;
    }
}
