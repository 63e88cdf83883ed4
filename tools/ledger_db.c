/*
 * ledger_db.c - the ledger's two databases behind tools/ledger_db.h.
 *
 * SQLite (the embedded default: a file, no server) and PostgreSQL through
 * libpq, both used with text parameters and text results.  This file knows
 * how to talk to each database and nothing of the ledger's tables.  It never
 * retries on its own: a lost PostgreSQL connection is reported (ldb_lost) and
 * the caller, which knows where its transaction stood, reconnects.
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
};

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

/* Check a result; frees it.  0, or -1 with the sentence (and lost set when the link went). */
static int
pg_check(struct ldb *db, PGresult *res, bool rows)
{
	ExecStatusType s = PQresultStatus(res);

	if (s == PGRES_COMMAND_OK || (rows && s == PGRES_TUPLES_OK))
		return 0;
	db->lost = PQstatus(db->pg) != CONNECTION_OK;
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
