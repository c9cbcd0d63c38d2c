/* nc_sqltext.h - questions asked about a piece of SQL text, answered with
 * the core's lexer (nc_lexer.h): is the rest blank, is this a plain read,
 * is this ROLLBACK TO, is this a column type we accept.
 *
 * Each takes sql[0..len), not NUL-terminated (sql may be NULL when len is 0),
 * allocates nothing and cannot fail.  The last three replace regular
 * expressions of the Python layer and give the same answers (within the
 * limits said at each); they are conservative: false whenever they cannot
 * tell.
 */
#ifndef NC_SQLTEXT_H
#define NC_SQLTEXT_H

#include <stddef.h>
#include "nc_error.h"
#include "nc_lexer.h"

/* 1 when sql holds nothing but whitespace, comments and ';' (in the given
 * dialect's rules), else 0.  The SQLite execution loop asks this of the tail
 * after a statement.  An unterminated block comment is blank for SQLite (its
 * tokenizer reads it as a comment to the end) but not for PostgreSQL (the
 * server rejects it). */
int nc_sql_is_blank(const char *sql, size_t len, int dialect);

/* 1 when sql is certainly one read without side effects, so that running it
 * again is harmless (the retry-safety test): one statement, at most a
 * trailing ';', starting with SELECT or WITH, with no INTO, FOR (UPDATE /
 * SHARE), INSERT, UPDATE, DELETE or MERGE word, no schema-qualified call
 * such as x.f(1), and calling only well-known side-effect-free functions (or
 * keywords that take a parenthesis, such as IN or OVER).  Refused outright:
 * any backslash, $, backtick, [, NUL byte, -- or / * anywhere (even inside a
 * literal), and an unterminated quote.  Dialect-free: with those refused,
 * both dialects read the same.
 *
 * Same answers as the Python is_plain_select it replaces, except where this
 * one is stricter: a keyword spelled with a non-ASCII letter that Python's
 * case-insensitive match folds to ASCII (U+017F in SELECT); a non-ASCII
 * character right after SELECT / WITH (Python looks up whether it is a
 * letter); a quote inside %(...) (the placeholder rewrite would read it as
 * part of a parameter name, Python as a string: with either reading in
 * doubt, no). */
int nc_sql_is_plain_select(const char *sql, size_t len);

/* 1 when sql is ROLLBACK [WORK | TRANSACTION] TO ... (any case, after
 * leading whitespace): the statement that clears an aborted transaction back
 * to a savepoint.  Same answers as the Python regular expression
 * (?is)^\s*rollback\s+(?:work\s+|transaction\s+)?to\b  it replaces, except
 * that the keywords must be ASCII (Python folds U+212A to k, U+017F to s,
 * U+0130 and U+0131 to i) and a non-ASCII character right after TO reads as
 * a letter. */
int nc_sql_is_rollback_to(const char *sql, size_t len);

/* What a statement does to rows, for the DB-API's rowcount and lastrowid
 * (SQLite tells neither apart from DDL): the first word after whitespace,
 * comments and '(' read as INSERT (REPLACE too), UPDATE, DELETE, else
 * OTHER; after WITH, the first of those words (or SELECT, VALUES: OTHER)
 * outside parentheses, so  WITH x AS (SELECT ...) DELETE ...  is DELETE.
 * Only the leading statement is read. */
enum nc_sql_verb { NC_VERB_OTHER = 0, NC_VERB_INSERT, NC_VERB_UPDATE, NC_VERB_DELETE };
int nc_sql_verb(const char *sql, size_t len, int dialect);

/* Check a column type for a generated CREATE TABLE against a small grammar
 * and normalize it.  Accepted: type words (not one of NOT NULL PRIMARY
 * UNIQUE DEFAULT KEY REFERENCES CHECK COLLATE GENERATED CONSTRAINT AS ON
 * USING FOREIGN AUTOINCREMENT), an optional (n) or (n, m) among them (words
 * after it need a space), [] or [n] suffixes, then any of NOT NULL, NULL,
 * PRIMARY KEY [AUTOINCREMENT], UNIQUE, DEFAULT <number, TRUE, FALSE, NULL,
 * CURRENT_TIMESTAMP, CURRENT_DATE, CURRENT_TIME>, case-insensitive.
 * Returns 1 and, when out is not NULL, writes the text with each run of
 * whitespace made one space and none at either end (Python's
 * " ".join(text.split())), NUL-terminated: out must have room for len + 1
 * bytes; *outlen (if not NULL) gets its length.  Returns 0 when refused.
 * Same answers as the Python regular expression it replaces, except that
 * letters and digits must be ASCII (Python's re also takes any Unicode digit
 * in (n) and folds U+017F, U+212A, U+0130, U+0131 to ASCII letters). */
/* 1 when sql (one or more statements) may change the state of the session
 * past the end of its transaction, so that the connection must be reset
 * before another borrower gets it (nc_pg.c, nc_sqlite.c).  PostgreSQL: a
 * statement starting with SET (but not SET LOCAL / SET TRANSACTION, which
 * end with the transaction), RESET, PREPARE or CREATE [OR REPLACE]
 * [GLOBAL | LOCAL] TEMP[ORARY], or a call set_config(...) anywhere.  SQLite:
 * a PRAGMA that writes (PRAGMA x = v, PRAGMA x(v)), ATTACH, CREATE TEMP.
 * Not seen: what runs inside a function or a DO block (a string to the
 * lexer), advisory locks, LISTEN (a notification on an idle connection is
 * read and dropped; DISCARD ALL ends the listen when it runs anyway). */
int nc_sql_changes_session(const char *sql, size_t len, int dialect);

int nc_sql_column_type(const char *text, size_t len, char *out, size_t *outlen);

/* What sql (one or more statements) may leave behind once it ran, for
 * nc_outcome_unknown (enum nc_effect): NC_EFFECT_COMMIT when any of its
 * statements starts with COMMIT, END or PREPARE TRANSACTION (COMMIT PREPARED
 * too: it starts with COMMIT); else NC_EFFECT_NONE when it is a plain read
 * (nc_sql_is_plain_select, whose limits it shares: conservative); else
 * NC_EFFECT_WRITE.  An END that closes a BEGIN ATOMIC function body reads as
 * a COMMIT: on the side of "unknown". */
int nc_sql_effect(const char *sql, size_t len, int dialect);

#endif
