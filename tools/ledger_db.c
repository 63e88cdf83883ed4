/*
 * ledger_db.c - the ledger's two databases behind tools/ledger_db.h.
 *
 * SQLite (the embedded default: a file, no server) and PostgreSQL through
 * libpq, both used with text parameters and text results.  This file knows
 * how to talk to each database and nothing of the ledger's tables.  It never
 * retries on its own: a lost PostgreSQL connection is reported (ldb_lost) and
 * the caller, which knows where its transaction stood, reconnects.
 *
 * Rows in bulk (ldb_prepare_rows): SQLite, in the same process, inserts each
 * row as it comes; PostgreSQL, a round trip away, gets them as one COPY FROM
 * STDIN per table at ldb_flush, inside the caller's transaction.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "ledger_db.h"

struct ldb {
	enum ldb_kind kind;
	char target[1024];
	char err[512];
	bool lost;
	sqlite3 *lite;
	sqlite3_stmt *lstmt[LDB_STMTS_MAX];
	PGconn *pg;
	bool prepared[LDB_STMTS_MAX];
	char *sql[LDB_STMTS_MAX]; /* kept to prepare again after a reconnect */
	/* Rows statements: their column count (0: not one), COPY command and rows not yet sent. */
	unsigned ncols[LDB_STMTS_MAX];
	char *copy[LDB_STMTS_MAX];
	char *buf[LDB_STMTS_MAX];
	size_t len[LDB_STMTS_MAX], cap[LDB_STMTS_MAX];
};

static int fail(struct ldb *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
fail(struct ldb *db, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(db->err, sizeof(db->err), fmt, ap);
	va_end(ap);
	/* libpq's messages span lines and end in a newline: one sentence on one line. */
	for (char *p = db->err; *p != '\0'; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	size_t n = strlen(db->err);
	while (n > 0 && (db->err[n - 1] == '\n' || db->err[n - 1] == ' '))
		db->err[--n] = '\0';
	return -1;
}

static bool
is_pg_target(const char *t)
{
	return strncmp(t, "postgres://", 11) == 0 || strncmp(t, "postgresql://", 13) == 0 ||
	       strstr(t, "dbname=") != NULL;
}

/* ---- SQLite ---- */

/*
 * SQLite reads "$1" as a parameter *named* "$1", numbered in order of first
 * appearance; "?1" is the number 1.  The ledger's SQL has no '$' in its
 * literals, so every "$<digit>" becomes "?<digit>".  A copy the caller frees.
 */
static char *
lite_sql(const char *sql)
{
	char *s = strdup(sql);

	for (char *p = s; p != NULL && *p != '\0'; p++)
		if (p[0] == '$' && p[1] >= '0' && p[1] <= '9')
			p[0] = '?';
	return s;
}

static int
lite_connect(struct ldb *db)
{
	int rc =
	    sqlite3_open_v2(db->target, &db->lite,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		fail(db, "cannot open SQLite file %s: %s", db->target,
		     db->lite ? sqlite3_errmsg(db->lite) : sqlite3_errstr(rc));
		sqlite3_close(db->lite);
		db->lite = NULL;
		return -1;
	}
	/*
	 * WAL: a reader (tollctl statement) never blocks the exporter; FULL sync:
	 * a transaction the exporter saw committed is on disk, which is what lets
	 * it write its position file after the commit.
	 */
	sqlite3_busy_timeout(db->lite, 10000);
	return ldb_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
}

static int
lite_prepare(struct ldb *db, unsigned id)
{
	sqlite3_finalize(db->lstmt[id]);
	db->lstmt[id] = NULL;
	char *sql = lite_sql(db->sql[id]);
	if (sql == NULL)
		return fail(db, "out of memory");
	int rc =
	    sqlite3_prepare_v3(db->lite, sql, -1, SQLITE_PREPARE_PERSISTENT, &db->lstmt[id], NULL);
	free(sql);
	if (rc != SQLITE_OK)
		return fail(db, "SQLite: %s", sqlite3_errmsg(db->lite));
	return 0;
}

static int
lite_bind(struct ldb *db, sqlite3_stmt *st, unsigned n, const char *const *params)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	for (unsigned i = 0; i < n; i++) {
		int rc = params[i] == NULL
		             ? sqlite3_bind_null(st, (int)i + 1)
		             : sqlite3_bind_text(st, (int)i + 1, params[i], -1, SQLITE_STATIC);
		if (rc != SQLITE_OK)
			return fail(db, "SQLite: binding $%u: %s", i + 1, sqlite3_errmsg(db->lite));
	}
	return 0;
}

/* Step st to the end, calling fn for each row.  Rows, or -1. */
static long
lite_steps(struct ldb *db, sqlite3_stmt *st, ldb_row_fn fn, void *arg)
{
	long rows = 0;
	const char *vals[64];

	for (;;) {
		int rc = sqlite3_step(st);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW) {
			fail(db, "SQLite: %s", sqlite3_errmsg(db->lite));
			sqlite3_reset(st);
			return -1;
		}
		rows++;
		if (fn == NULL)
			continue;
		unsigned nc = (unsigned)sqlite3_column_count(st);
		if (nc > 64)
			nc = 64;
		for (unsigned i = 0; i < nc; i++)
			vals[i] = (const char *)sqlite3_column_text(st, (int)i);
		if (fn(arg, nc, vals) != 0)
			break;
	}
	sqlite3_reset(st);
	return rows;
}

/* ---- PostgreSQL ---- */

static int
pg_connect(struct ldb *db)
{
	db->pg = PQconnectdb(db->target);
	if (PQstatus(db->pg) != CONNECTION_OK) {
		db->lost = true;
		fail(db, "cannot connect to PostgreSQL: %s", PQerrorMessage(db->pg));
		PQfinish(db->pg);
		db->pg = NULL;
		return -1;
	}
	memset(db->prepared, 0, sizeof(db->prepared));
	/* Notices (CREATE ... IF NOT EXISTS) are not errors: keep them off stderr. */
	PQclear(PQexec(db->pg, "SET client_min_messages = warning"));
	return 0;
}

/*
 * Check a result; frees it.  0, or -1 with the sentence (and lost set when
 * the link went).  A server shutting down says so (SQLSTATE 57P01..57P03)
 * before it closes the socket, and libpq may not have seen the close yet:
 * that, and any connection exception (class 08), is a lost link too.
 */
static int
pg_check(struct ldb *db, PGresult *res, bool rows)
{
	ExecStatusType s = PQresultStatus(res);

	if (s == PGRES_COMMAND_OK || (rows && s == PGRES_TUPLES_OK))
		return 0;
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	db->lost =
	    PQstatus(db->pg) != CONNECTION_OK ||
	    (state != NULL && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0));
	fail(db, "PostgreSQL: %s",
	     res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(db->pg));
	PQclear(res);
	return -1;
}

static int
pg_prepare(struct ldb *db, unsigned id)
{
	char name[16];

	snprintf(name, sizeof(name), "s%u", id);
	PGresult *res = PQprepare(db->pg, name, db->sql[id], 0, NULL);
	if (pg_check(db, res, false) != 0)
		return -1;
	PQclear(res);
	db->prepared[id] = true;
	return 0;
}

/* Room for more bytes in rows statement id's buffer.  0 or -1. */
static int
buf_reserve(struct ldb *db, unsigned id, size_t more)
{
	if (db->len[id] + more <= db->cap[id])
		return 0;
	size_t cap = db->cap[id] != 0 ? db->cap[id] : 64 * 1024;
	while (cap < db->len[id] + more)
		cap *= 2;
	char *b = realloc(db->buf[id], cap);
	if (b == NULL)
		return fail(db, "out of memory");
	db->buf[id] = b;
	db->cap[id] = cap;
	return 0;
}

/*
 * One row in COPY's text format: values separated by tabs, a newline at the
 * end, NULL as \N, and a backslash, tab, newline or carriage return inside a
 * value escaped with a backslash.  Nothing else is special.
 */
static int
copy_row(struct ldb *db, unsigned id, const char *const *params)
{
	for (unsigned i = 0; i < db->ncols[id]; i++) {
		const char *v = params[i];
		size_t n = v != NULL ? strlen(v) : 0;
		if (buf_reserve(db, id, 2 * n + 3) != 0)
			return -1;
		char *o = db->buf[id] + db->len[id];
		if (v == NULL) {
			*o++ = '\\';
			*o++ = 'N';
		}
		for (size_t k = 0; k < n; k++) {
			char c = v[k];
			if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
				*o++ = '\\';
				c = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : c;
			}
			*o++ = c;
		}
		*o++ = i + 1 < db->ncols[id] ? '\t' : '\n';
		db->len[id] = (size_t)(o - db->buf[id]);
	}
	return 0;
}

/*
 * Send rows statement id's buffer as one COPY FROM STDIN and read its
 * outcome to the end, so the connection is ready for the next command (or
 * known lost).  0 or -1.
 */
static int
pg_copy(struct ldb *db, unsigned id)
{
	enum { CHUNK = 1 << 20 };
	PGresult *res = PQexec(db->pg, db->copy[id]);

	if (PQresultStatus(res) != PGRES_COPY_IN) {
		if (PQresultStatus(res) == PGRES_COMMAND_OK)
			PQclear(res); /* cannot be: COPY FROM STDIN always asks for data */
		else
			return pg_check(db, res, false);
		return fail(db, "PostgreSQL: %s did not ask for rows", db->copy[id]);
	}
	PQclear(res);
	int rc = 0;
	for (size_t off = 0; off < db->len[id]; off += CHUNK) {
		size_t n = db->len[id] - off < CHUNK ? db->len[id] - off : CHUNK;
		if (PQputCopyData(db->pg, db->buf[id] + off, (int)n) != 1) {
			rc = fail(db, "PostgreSQL: sending rows: %s", PQerrorMessage(db->pg));
			break;
		}
	}
	/* Ended with an error message when sending failed: the server then discards the rows. */
	if (PQputCopyEnd(db->pg, rc == 0 ? NULL : "rows not all sent") != 1 && rc == 0)
		rc = fail(db, "PostgreSQL: ending the rows: %s", PQerrorMessage(db->pg));
	while ((res = PQgetResult(db->pg)) != NULL) {
		ExecStatusType s = PQresultStatus(res);
		if (s == PGRES_COPY_IN) {
			/* Still asking for data after an end that failed: the link is gone. */
			PQclear(res);
			break;
		}
		if (s == PGRES_COMMAND_OK || rc != 0)
			PQclear(res);
		else
			rc = pg_check(db, res, false);
	}
	if (rc != 0 && PQstatus(db->pg) != CONNECTION_OK)
		db->lost = true;
	return rc;
}

/* ---- the interface ---- */

int
ldb_open(struct ldb **out, const char *target, char *err, size_t errlen)
{
	struct ldb *db = calloc(1, sizeof(*db));

	*out = NULL;
	if (db == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (strlen(target) >= sizeof(db->target)) {
		snprintf(err, errlen, "database target too long");
		free(db);
		return -1;
	}
	snprintf(db->target, sizeof(db->target), "%s", target);
	db->kind = is_pg_target(target) ? LDB_PG : LDB_SQLITE;
	int rc = db->kind == LDB_PG ? pg_connect(db) : lite_connect(db);
	if (rc != 0) {
		snprintf(err, errlen, "%s", db->err);
		ldb_close(db);
		return -1;
	}
	*out = db;
	return 0;
}

void
ldb_close(struct ldb *db)
{
	if (db == NULL)
		return;
	for (unsigned i = 0; i < LDB_STMTS_MAX; i++) {
		sqlite3_finalize(db->lstmt[i]);
		free(db->sql[i]);
		free(db->copy[i]);
		free(db->buf[i]);
	}
	if (db->lite != NULL)
		sqlite3_close(db->lite);
	if (db->pg != NULL)
		PQfinish(db->pg);
	free(db);
}

enum ldb_kind
ldb_kind_of(const char *target)
{
	return is_pg_target(target) ? LDB_PG : LDB_SQLITE;
}

enum ldb_kind
ldb_kind(const struct ldb *db)
{
	return db->kind;
}

const char *
ldb_err(const struct ldb *db)
{
	return db->err;
}

bool
ldb_lost(const struct ldb *db)
{
	return db->lost;
}

int
ldb_reconnect(struct ldb *db)
{
	db->lost = false;
	ldb_discard(db);
	if (db->kind == LDB_PG) {
		if (db->pg != NULL)
			PQfinish(db->pg);
		db->pg = NULL;
		return pg_connect(db);
	}
	for (unsigned i = 0; i < LDB_STMTS_MAX; i++) {
		sqlite3_finalize(db->lstmt[i]);
		db->lstmt[i] = NULL;
	}
	sqlite3_close(db->lite);
	db->lite = NULL;
	if (lite_connect(db) != 0)
		return -1;
	for (unsigned i = 0; i < LDB_STMTS_MAX; i++)
		if (db->sql[i] != NULL && lite_prepare(db, i) != 0)
			return -1;
	return 0;
}

int
ldb_exec(struct ldb *db, const char *sql)
{
	if (db->kind == LDB_SQLITE) {
		char *msg = NULL;
		if (sqlite3_exec(db->lite, sql, NULL, NULL, &msg) != SQLITE_OK) {
			fail(db, "SQLite: %s", msg ? msg : sqlite3_errmsg(db->lite));
			sqlite3_free(msg);
			return -1;
		}
		return 0;
	}
	PGresult *res = PQexec(db->pg, sql);
	if (pg_check(db, res, true) != 0)
		return -1;
	PQclear(res);
	return 0;
}

int
ldb_prepare(struct ldb *db, unsigned id, const char *sql)
{
	if (id >= LDB_STMTS_MAX)
		return fail(db, "statement number %u out of range", id);
	free(db->sql[id]);
	db->sql[id] = strdup(sql);
	if (db->sql[id] == NULL)
		return fail(db, "out of memory");
	return db->kind == LDB_SQLITE ? lite_prepare(db, id) : pg_prepare(db, id);
}

int
ldb_run(struct ldb *db, unsigned id, unsigned n, const char *const *params)
{
	if (id >= LDB_STMTS_MAX || db->sql[id] == NULL || n > LDB_PARAMS_MAX)
		return fail(db, "statement %u not prepared", id);
	if (db->kind == LDB_SQLITE) {
		if (lite_bind(db, db->lstmt[id], n, params) != 0)
			return -1;
		return lite_steps(db, db->lstmt[id], NULL, NULL) < 0 ? -1 : 0;
	}
	char name[16];
	if (!db->prepared[id] && pg_prepare(db, id) != 0)
		return -1;
	snprintf(name, sizeof(name), "s%u", id);
	PGresult *res = PQexecPrepared(db->pg, name, (int)n, params, NULL, NULL, 0);
	if (pg_check(db, res, true) != 0)
		return -1;
	PQclear(res);
	return 0;
}

int
ldb_prepare_rows(struct ldb *db, unsigned id, const char *table, const char *cols, unsigned ncols)
{
	char sql[1024];
	size_t n;

	if (id >= LDB_STMTS_MAX || ncols == 0 || ncols > LDB_PARAMS_MAX)
		return fail(db, "rows statement %u: bad number or columns", id);
	n = (size_t)snprintf(sql, sizeof(sql), "COPY %s (%s) FROM STDIN", table, cols);
	free(db->copy[id]);
	db->copy[id] = strdup(sql);
	if (db->copy[id] == NULL || n >= sizeof(sql))
		return fail(db, "rows statement %u: out of memory or too long", id);
	n = (size_t)snprintf(sql, sizeof(sql), "INSERT INTO %s (%s) VALUES (", table, cols);
	for (unsigned i = 0; i < ncols && n < sizeof(sql); i++)
		n += (size_t)snprintf(sql + n, sizeof(sql) - n, "%s$%u", i ? ", " : "", i + 1);
	if (n + 2 > sizeof(sql))
		return fail(db, "rows statement %u: too long", id);
	memcpy(sql + n, ")", 2);
	db->ncols[id] = ncols;
	db->len[id] = 0;
	return ldb_prepare(db, id, sql);
}

int
ldb_append(struct ldb *db, unsigned id, const char *const *params)
{
	if (id >= LDB_STMTS_MAX || db->ncols[id] == 0)
		return fail(db, "statement %u is not a rows statement", id);
	if (db->kind == LDB_SQLITE)
		return ldb_run(db, id, db->ncols[id], params);
	return copy_row(db, id, params);
}

int
ldb_flush(struct ldb *db)
{
	for (unsigned id = 0; id < LDB_STMTS_MAX; id++) {
		if (db->len[id] == 0)
			continue;
		int rc = pg_copy(db, id);
		db->len[id] = 0;
		if (rc != 0) {
			ldb_discard(db);
			return -1;
		}
	}
	return 0;
}

void
ldb_discard(struct ldb *db)
{
	for (unsigned id = 0; id < LDB_STMTS_MAX; id++)
		db->len[id] = 0;
}

long
ldb_query(struct ldb *db, const char *sql, unsigned n, const char *const *params, ldb_row_fn fn,
          void *arg)
{
	if (db->kind == LDB_SQLITE) {
		sqlite3_stmt *st;
		char *q = lite_sql(sql);
		if (q == NULL)
			return fail(db, "out of memory");
		int rc = sqlite3_prepare_v2(db->lite, q, -1, &st, NULL);
		free(q);
		if (rc != SQLITE_OK)
			return fail(db, "SQLite: %s", sqlite3_errmsg(db->lite));
		long rows = lite_bind(db, st, n, params) == 0 ? lite_steps(db, st, fn, arg) : -1;
		sqlite3_finalize(st);
		return rows;
	}
	PGresult *res = PQexecParams(db->pg, sql, (int)n, NULL, params, NULL, NULL, 0);
	if (pg_check(db, res, true) != 0)
		return -1;
	long rows = PQntuples(res);
	unsigned nc = (unsigned)PQnfields(res);
	const char *vals[64];
	if (nc > 64)
		nc = 64;
	for (long r = 0; fn != NULL && r < rows; r++) {
		for (unsigned i = 0; i < nc; i++)
			vals[i] = PQgetisnull(res, (int)r, (int)i)
			              ? NULL
			              : PQgetvalue(res, (int)r, (int)i);
		if (fn(arg, nc, vals) != 0)
			break;
	}
	PQclear(res);
	return rows;
}

struct first {
	int found;
	int64_t v;
};

static int
first_row(void *arg, unsigned ncols, const char *const *vals)
{
	struct first *f = arg;

	if (ncols >= 1 && vals[0] != NULL) {
		f->found = 1;
		f->v = strtoll(vals[0], NULL, 10);
	}
	return 1;
}

int
ldb_query_i64(struct ldb *db, const char *sql, unsigned n, const char *const *params, int64_t *out)
{
	struct first f = {0, 0};

	if (ldb_query(db, sql, n, params, first_row, &f) < 0)
		return -1;
	*out = f.v;
	return f.found;
}
