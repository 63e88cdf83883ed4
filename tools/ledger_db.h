/*
 * ledger_db.h - the ledger's database, SQLite or PostgreSQL, behind one small
 * interface (docs/LEDGER.md).
 *
 * The ledger's SQL is written once, with $1, $2, ... parameters, which both
 * databases accept; every value goes in and comes out as text (NULL: SQL
 * NULL), so neither backend's type system leaks into the tools.  A target
 * that starts with "postgres://" or "postgresql://" (or is a libpq
 * "key=value" string holding "dbname=") is PostgreSQL; anything else is the
 * path of a SQLite file, created when missing.  One connection, one thread.
 * Errors come back as -1 with one sentence in the handle's err (ldb_err).
 */
#ifndef TG_LEDGER_DB_H
#define TG_LEDGER_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LDB_PARAMS_MAX 16
#define LDB_STMTS_MAX  16

enum ldb_kind { LDB_SQLITE = 1, LDB_PG = 2 };

struct ldb;

/* Open target (path or URI).  0, or -1 with the reason in err. */
int ldb_open(struct ldb **out, const char *target, char *err, size_t errlen);
void ldb_close(struct ldb *db);
enum ldb_kind ldb_kind(const struct ldb *db);
/* Which database a target names, before opening it. */
enum ldb_kind ldb_kind_of(const char *target);
/* The last error's sentence. */
const char *ldb_err(const struct ldb *db);
/* Whether the last error was a lost connection (PostgreSQL restarted): reconnect and retry. */
bool ldb_lost(const struct ldb *db);
/* Drop the connection and make it again (PostgreSQL); SQLite reopens the file.  0 or -1. */
int ldb_reconnect(struct ldb *db);

/* One or more statements with no parameters and no rows (DDL, BEGIN, COMMIT).  0 or -1. */
int ldb_exec(struct ldb *db, const char *sql);
/*
 * Prepare sql as statement number id (0..LDB_STMTS_MAX-1), kept until close;
 * preparing an id again replaces it.  0 or -1.
 */
int ldb_prepare(struct ldb *db, unsigned id, const char *sql);
/* Run prepared statement id with n text parameters (NULL: SQL NULL).  0 or -1. */
int ldb_run(struct ldb *db, unsigned id, unsigned n, const char *const *params);

/*
 * Rows in bulk.  Declare statement id as rows of ncols values appended to
 * table (cols: "a, b, c").  SQLite runs "INSERT INTO table (cols) VALUES
 * ($1, ...)" for each ldb_append at once; PostgreSQL keeps the rows, encoded
 * as COPY text, until ldb_flush sends each table's rows with one COPY FROM
 * STDIN, in the caller's open transaction: no round trip per row.  Rows are
 * only ever appended, never updated, so nothing in the batch can depend on
 * when they reach the table; a row that breaks a constraint fails the
 * flush (PostgreSQL) or its append (SQLite).  0 or -1.
 */
int ldb_prepare_rows(struct ldb *db, unsigned id, const char *table, const char *cols,
                     unsigned ncols);
/* Append one row of ncols values (NULL: SQL NULL) to rows statement id.  0 or -1. */
int ldb_append(struct ldb *db, unsigned id, const char *const *params);
/* Send the rows appended since the last flush (PostgreSQL; nothing to do for SQLite).  0 or -1. */
int ldb_flush(struct ldb *db);
/* Forget the rows appended and not flushed (a transaction that failed before its flush). */
void ldb_discard(struct ldb *db);

/* Called for each row of a query: ncols values (NULL: SQL NULL); nonzero stops. */
typedef int (*ldb_row_fn)(void *arg, unsigned ncols, const char *const *vals);
/* Run sql with n text parameters, calling fn for each row.  Rows seen (>= 0), or -1. */
long ldb_query(struct ldb *db, const char *sql, unsigned n, const char *const *params,
               ldb_row_fn fn, void *arg);
/* A query's first column of its first row, as a signed 64-bit integer: 1 found, 0 none, -1. */
int ldb_query_i64(struct ldb *db, const char *sql, unsigned n, const char *const *params,
                  int64_t *out);

#endif
