/*
 * test_ledger.c - the ledger exported exactly once (docs/LEDGER.md), against
 * the real tollgated and a real database: a SQLite file here, a private
 * PostgreSQL cluster when the machine can start one (tests/pg_harness.c).
 *
 * The test keeps its own books: every charge and credit the engine answered
 * is summed from the replies, and the database must hold exactly those
 * rows, no more, no less, whatever happened on the way: the exporter killed
 * with SIGKILL at random points, the engine restarted, the journal rotated
 * through small segments and pruned behind snapshots.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <sqlite3.h>

#include "harness.h"
#include "tg_clock.h"
#include "pg_harness.h"
#include "rcmd.h"
#include "tg_journal.h"
#include "tg_money.h"

struct books {
	long calls, credits;
	tg_money_t charged, credited;
	tg_money_t by_acct[8]; /* charged, accounts 1001..1007 */
};

struct fx {
	char dir[IT_PATH_MAX];
	struct it_daemon d;
	redisContext *c;
	char db[IT_PATH_MAX]; /* SQLite path or PostgreSQL URI */
	struct books b;
	pid_t exporter;
	bool started;
	uint64_t seed;
	unsigned seq;
};

static uint64_t
rnd(struct fx *f)
{
	uint64_t z = (f->seed += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static tg_money_t
money_of(const char *s)
{
	tg_money_t m;
	assert_int_equal(tg_money_parse(s, strlen(s), &m), 0);
	return m;
}

static const char *
tollexport_bin(void)
{
	const char *p = getenv("TOLLEXPORT");
	assert_non_null(p);
	return p;
}

/* Start tollexport on the fixture's data dir and database; follow: it keeps tailing. */
static pid_t
exporter_start(struct fx *f, bool follow, unsigned batch)
{
	char b[16];
	snprintf(b, sizeof(b), "%u", batch);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		const char *argv[] = {tollexport_bin(),
		                      "--data-dir",
		                      f->d.data,
		                      "--db",
		                      f->db,
		                      "--batch",
		                      b,
		                      "--poll-ms",
		                      "20",
		                      "--quiet",
		                      follow ? "--follow" : NULL,
		                      NULL};
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* Export up to now, in batch mode: exit status 0. */
static void
export_all(struct fx *f, unsigned batch)
{
	int st;
	pid_t pid = exporter_start(f, false, batch);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void
kill9(pid_t pid)
{
	int st;
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &st, 0), pid);
}

/* ---- the load, with the test's own books ---- */

static const char *const dests[] = {"14155551212", "12125550100", "01144201234567", "18005551234",
                                    "01133612345678"};

static void
one_op(struct fx *f)
{
	unsigned acct = 1001 + (unsigned)(rnd(f) % 2) * 3; /* 1001 basic or 1004 gold */
	unsigned kind = (unsigned)(rnd(f) % 10), dur = 1 + (unsigned)(rnd(f) % 400);
	const char *dest = dests[rnd(f) % 5];
	unsigned n = ++f->seq;
	redisReply *r;

	if (kind < 5) {
		r = redisCommand(f->c, "CDR %u %s %u cdr-%llu-%u", acct, dest, dur,
		                 (unsigned long long)f->seed % 1000, n);
	} else if (kind < 8) {
		r = redisCommand(f->c, "CALL.AUTH %u %s call-%u", acct, dest, n);
		assert_non_null(r);
		bool granted = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
		long long grant = r->integer;
		freeReplyObject(r);
		if (!granted)
			return;
		r = redisCommand(f->c, "CALL.END %u call-%u %u", acct, n,
		                 dur < grant ? dur : (unsigned)grant);
	} else {
		r = redisCommand(f->c, "ACCT.CREDIT %u 2.50 tx-%u", acct, n);
		assert_non_null(r);
		assert_int_equal(r->type, REDIS_REPLY_STRING);
		f->b.credits++;
		f->b.credited += 2500000;
		freeReplyObject(r);
		return;
	}
	assert_non_null(r);
	/* BLOCKED and the like charge nothing: only a money reply is a charge. */
	if (r->type == REDIS_REPLY_STRING) {
		tg_money_t m = money_of(r->str);
		f->b.calls++;
		f->b.charged += m;
		f->b.by_acct[acct - 1001] += m;
	}
	freeReplyObject(r);
}

/* A CALL.AUTH of call id oc-<n>: the seconds granted (0: refused). */
static long long
auth_call(struct fx *f, unsigned n, unsigned acct, const char *dest)
{
	redisReply *r = redisCommand(f->c, "CALL.AUTH %u %s oc-%u", acct, dest, n);
	assert_non_null(r);
	long long grant = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
	freeReplyObject(r);
	return grant;
}

/* Its CALL.END after dur seconds, into the books. */
static void
end_call(struct fx *f, unsigned n, unsigned acct, unsigned dur)
{
	redisReply *r = redisCommand(f->c, "CALL.END %u oc-%u %u", acct, n, dur);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	tg_money_t m = money_of(r->str);
	f->b.calls++;
	f->b.charged += m;
	f->b.by_acct[acct - 1001] += m;
	freeReplyObject(r);
}

/* n CDRs on account 1001, pipelined 1000 at a time, into the books. */
static void
load_cdrs(struct fx *f, unsigned n)
{
	for (unsigned done = 0; done < n;) {
		unsigned k = n - done < 1000 ? n - done : 1000;
		for (unsigned i = 0; i < k; i++)
			redisAppendCommand(f->c, "CDR 1001 %s %u bulk-%u", dests[rnd(f) % 5],
			                   1 + (unsigned)(rnd(f) % 60), ++f->seq);
		for (unsigned i = 0; i < k; i++) {
			redisReply *r;
			assert_int_equal(redisGetReply(f->c, (void **)&r), REDIS_OK);
			assert_int_equal(r->type, REDIS_REPLY_STRING);
			tg_money_t m = money_of(r->str);
			f->b.calls++;
			f->b.charged += m;
			f->b.by_acct[0] += m;
			freeReplyObject(r);
		}
		done += k;
	}
}

/* ---- reading the database back (SQLite here; PostgreSQL through psql) ---- */

static int64_t
q64(struct fx *f, const char *sql)
{
	if (strncmp(f->db, "postgresql://", 13) == 0)
		return pg_query_i64(f->db, sql);
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t v = -1;
	assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* A statement with no rows (to alter one for a test). */
static void
sql_exec(struct fx *f, const char *sql)
{
	if (strncmp(f->db, "postgresql://", 13) == 0) {
		assert_int_equal(pg_exec(f->db, sql), 0);
		return;
	}
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

/* The database holds exactly the books: counts, sums, per account, no LSN twice. */
static void
check_books(struct fx *f)
{
	char sql[200];

	assert_int_equal(q64(f, "SELECT count(*) FROM calls"), f->b.calls);
	assert_int_equal(q64(f, "SELECT coalesce(sum(charge), 0) FROM calls"), f->b.charged);
	assert_int_equal(q64(f, "SELECT count(*) FROM credits WHERE txid LIKE 'tx-%'"),
	                 f->b.credits);
	assert_int_equal(q64(f, "SELECT coalesce(sum(amount), 0) FROM credits WHERE txid LIKE "
	                        "'tx-%'"),
	                 f->b.credited);
	for (unsigned a = 0; a < 8; a++) {
		snprintf(sql, sizeof(sql),
		         "SELECT coalesce(sum(charge), 0) FROM calls WHERE acct = %u", 1001 + a);
		assert_int_equal(q64(f, sql), f->b.by_acct[a]);
	}
	/* Every call row is itemized: call id, destination and plan known. */
	assert_int_equal(q64(f,
	                     "SELECT count(*) FROM calls WHERE call_id IS NULL OR destination IS "
	                     "NULL OR plan IS NULL OR billed IS NULL"),
	                 0);
	assert_int_equal(q64(f, "SELECT count(*) FROM ledger_gaps"), 0);
}

/*
 * The database against the journal itself: every charge record once, by
 * LSN, over what the engine has not pruned (clean stops snapshot and prune).
 */
static void
check_journal(struct fx *f)
{
	struct tg_journal_reader *r;
	struct tg_jrec rec;
	int64_t n = 0, sum = 0;
	uint64_t last = 0, first;
	char sql[200];

	assert_int_equal(tg_journal_open_dir(&r, f->d.data), 0);
	first = tg_journal_segment_lsn(r, 0);
	while (tg_journal_next(r, &rec) == TG_JOURNAL_OK) {
		last = rec.lsn;
		int64_t cost;
		if (rec.type == TG_JREC_COMMIT)
			memcpy(&cost,
			       (const char *)rec.payload + offsetof(struct tg_jrec_commit, cost),
			       8);
		else if (rec.type == TG_JREC_DEBIT)
			memcpy(&cost,
			       (const char *)rec.payload + offsetof(struct tg_jrec_debit, cost), 8);
		else if (rec.type == TG_JREC_EXPIRE)
			memcpy(&cost,
			       (const char *)rec.payload + offsetof(struct tg_jrec_expire, cost),
			       8);
		else
			continue;
		n++;
		sum += cost;
	}
	tg_journal_close(r);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM calls WHERE lsn >= %" PRIu64, first);
	assert_int_equal(q64(f, sql), n);
	snprintf(sql, sizeof(sql),
	         "SELECT coalesce(sum(charge), 0) FROM calls WHERE lsn >= %" PRIu64, first);
	assert_int_equal(q64(f, sql), sum);
	assert_int_equal(q64(f, "SELECT last_lsn FROM ledger_position"), (int64_t)last);
}

static void
fx_start(struct fx *f, const char *const *flags, const char *db)
{
	memset(f, 0, sizeof(*f));
	f->seed = (uint64_t)getpid() * 2654435761u + (uint64_t)tg_mono_ms();
	fprintf(stderr, "seed %llu\n", (unsigned long long)f->seed);
	assert_int_equal(it_dir_make(f->dir, sizeof(f->dir)), 0);
	assert_int_equal(it_start(&f->d, f->dir, flags), 0);
	f->c = it_connect(&f->d);
	assert_non_null(f->c);
	f->started = true;
	/* Money enough that nothing is blocked: every call and CDR is a charge. */
	it_run_cmd(f->c, "ACCT.SET 1001 BALANCE 100000 PLAN basic");
	it_run_cmd(f->c, "ACCT.SET 1004 BALANCE 100000 PLAN gold");
	if (db != NULL)
		snprintf(f->db, sizeof(f->db), "%s", db);
	else
		it_pathf(f->db, sizeof(f->db), "%s/ledger.sqlite", f->dir);
}

static void
fx_end(struct fx *f)
{
	if (!f->started)
		return;
	if (f->exporter > 0)
		kill9(f->exporter);
	f->exporter = 0;
	if (f->c != NULL)
		redisFree(f->c);
	f->c = NULL;
	it_stop(&f->d);
	it_dir_remove(f->dir);
	f->started = false;
}

/* Each test's fixture; the teardown ends it also after a failed assertion. */
static struct fx F;

static int
teardown(void **state)
{
	(void)state;
	fx_end(&F);
	return 0;
}

/*
 * The exporter killed with SIGKILL at random points while the engine takes
 * calls, CDRs and credits, the engine restarted every fourth round, the
 * journal rotating through 8 KiB segments: the rows match the books and the
 * journal exactly.
 */
static void
run_kill9(struct fx *f)
{
	static const char *const flags[] = {"--journal-segment-size", "8192", NULL};

	for (unsigned round = 0; round < 16; round++) {
		f->exporter = exporter_start(f, true, 1 + (unsigned)(rnd(f) % 40));
		for (unsigned i = 0; i < 30; i++)
			one_op(f);
		it_sleep_ms((unsigned)(rnd(f) % 120));
		kill9(f->exporter);
		f->exporter = 0;
		if (round % 4 == 3) {
			/* A crash (SIGKILL) one time, a clean stop the next. */
			redisFree(f->c);
			f->c = NULL;
			if (round % 8 == 3)
				it_kill(&f->d);
			else
				it_stop(&f->d);
			assert_int_equal(it_restart(&f->d, flags, 0), 0);
			f->c = it_connect(&f->d);
			assert_non_null(f->c);
		}
	}
	export_all(f, 1000);
	check_books(f);
	check_journal(f);
	/* A second run finds nothing new and changes nothing. */
	export_all(f, 7);
	check_books(f);
}

static void
test_exactly_once_across_kill9_restarts_rotation(void **state)
{
	static const char *const flags[] = {"--journal-segment-size", "8192", NULL};
	struct fx *f = &F;

	(void)state;
	fx_start(f, flags, NULL);
	run_kill9(f);
}

/*
 * The engine prunes the journal behind its snapshots but keeps what the
 * exporter has not read (ledger.pos); past ledger-keep-max it prunes anyway,
 * says so and counts it, and the exporter records the gap instead of
 * pretending nothing is missing.
 */
static long long
info_num(redisContext *c, const char *name)
{
	redisReply *r = it_cmd(c, "INFO");
	const char *p = strstr(r->str, name);
	long long v = p ? atoll(p + strlen(name) + 1) : -1;
	freeReplyObject(r);
	return v;
}

static void
test_pruning_keeps_what_the_exporter_needs(void **state)
{
	static const char *const flags[] = {"--journal-segment-size", "4096", "--snapshot-interval",
	                                    "1", NULL};
	struct fx *f = &F;

	(void)state;
	fx_start(f, flags, NULL);
	for (unsigned i = 0; i < 20; i++)
		one_op(f);
	export_all(f, 100);
	/* The exporter stops; the engine goes on, snapshots and prunes. */
	for (unsigned round = 0; round < 3; round++) {
		for (unsigned i = 0; i < 60; i++)
			one_op(f);
		it_sleep_ms(1300);
	}
	assert_true(it_log_has(&f->d, "snapshot at LSN"));
	assert_int_equal(info_num(f->c, "ledger_segments_cut"), 0);
	assert_true(info_num(f->c, "ledger_lsn") > 0);
	export_all(f, 100);
	check_books(f);

	/* Now with almost no room kept for it: the exporter behind loses records, loudly. */
	static const char *const tight[] = {"--journal-segment-size",
	                                    "4096",
	                                    "--snapshot-interval",
	                                    "1",
	                                    "--ledger-keep-max",
	                                    "4096",
	                                    NULL};
	redisFree(f->c);
	f->c = NULL;
	it_stop(&f->d);
	assert_int_equal(it_restart(&f->d, tight, 0), 0);
	f->c = it_connect(&f->d);
	for (unsigned round = 0; round < 3; round++) {
		for (unsigned i = 0; i < 60; i++)
			one_op(f);
		it_sleep_ms(1300);
	}
	assert_true(info_num(f->c, "ledger_segments_cut") > 0);
	assert_true(it_log_has(&f->d, "ledger-keep-max"));
	int st;
	pid_t pid = exporter_start(f, false, 100);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_true(q64(f, "SELECT count(*) FROM ledger_gaps") == 1);
	fx_end(f);
}

/*
 * Calls authorized and settled in one export transaction, and across
 * transactions.  A commit carries neither destination nor plan: within a
 * batch the exporter takes them from the reserve in memory, across batches
 * from open_calls.  Either way every end row names what its CALL.AUTH named,
 * and open_calls holds exactly the calls still open.
 */
struct oc_call {
	unsigned n, acct;
	const char *dest;
	bool ended;
};

/* Each ended call's row carries its own call id, destination and plan; open ones are open. */
static void
check_open_calls(struct fx *f, const struct oc_call *c, size_t nc)
{
	char sql[300];
	long open = 0;

	for (size_t i = 0; i < nc; i++) {
		if (!c[i].ended) {
			open++;
			snprintf(sql, sizeof(sql),
			         "SELECT count(*) FROM open_calls WHERE call_id = 'oc-%u'"
			         " AND destination = '%s' AND plan = '%s'",
			         c[i].n, c[i].dest, c[i].acct == 1001 ? "basic" : "gold");
		} else {
			snprintf(
			    sql, sizeof(sql),
			    "SELECT count(*) FROM calls WHERE kind = 'end' AND call_id = 'oc-%u'"
			    " AND destination = '%s' AND plan = '%s'",
			    c[i].n, c[i].dest, c[i].acct == 1001 ? "basic" : "gold");
		}
		assert_int_equal(q64(f, sql), 1);
	}
	assert_int_equal(q64(f, "SELECT count(*) FROM open_calls"), open);
}

static void
run_open_calls_in_batches(struct fx *f)
{
	struct oc_call c[70];
	size_t nc = 0;

	/* One transaction (batch 100000): 20 authorized and ended in it, 20 left open. */
	for (unsigned i = 0; i < 40; i++) {
		struct oc_call *k = &c[nc++];
		*k = (struct oc_call){++f->seq, 1001 + (i % 2) * 3, dests[i % 5], false};
		long long grant = auth_call(f, k->n, k->acct, k->dest);
		assert_true(grant > 0);
		if (i % 2 == 0) {
			end_call(f, k->n, k->acct, 1 + i);
			k->ended = true;
		}
		one_op(f);
	}
	export_all(f, 100000);
	check_open_calls(f, c, nc);
	check_books(f);

	/*
	 * Batches of 3: the 20 open ones ended (their reserves are in the table),
	 * 20 more authorized and ended (some pairs in one batch, some split), 10
	 * left open.
	 */
	for (unsigned i = 0; i < 30; i++) {
		struct oc_call *k = &c[nc++];
		*k = (struct oc_call){++f->seq, 1001 + (i % 2) * 3, dests[(i + 2) % 5], false};
		assert_true(auth_call(f, k->n, k->acct, k->dest) > 0);
		if (i < 20) {
			end_call(f, k->n, k->acct, 2 + i);
			k->ended = true;
		}
		if (i < 20 && c[2 * i + 1].ended == false) {
			end_call(f, c[2 * i + 1].n, c[2 * i + 1].acct, 3 + i);
			c[2 * i + 1].ended = true;
		}
	}
	export_all(f, 3);
	check_open_calls(f, c, nc);
	check_books(f);
	check_journal(f);
}

static void
test_open_calls_resolved_within_and_across_batches(void **state)
{
	(void)state;
	fx_start(&F, NULL, NULL);
	run_open_calls_in_batches(&F);
}

/* ---- tollctl statement, calls, reconcile ---- */

/* Run tollctl with args; its stdout into out (cap bytes).  Exit status. */
static int
tollctl(struct fx *f, char *out, size_t cap, const char *const *args)
{
	char port[16], path[IT_PATH_MAX];
	const char *argv[24] = {getenv("TOLLCTL"), "-p", port};
	size_t n = 3;
	assert_non_null(argv[0]);
	snprintf(port, sizeof(port), "%u", f->d.port);
	for (size_t i = 0; args[i] != NULL && n < 22; i++)
		argv[n++] = args[i];
	argv[n++] = "--db";
	argv[n++] = f->db;
	argv[n] = NULL;
	it_pathf(path, sizeof(path), "%s/tollctl.out", f->dir);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (freopen(path, "w", stdout) == NULL)
			_exit(126);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	FILE *in = fopen(path, "r");
	assert_non_null(in);
	size_t got = fread(out, 1, cap - 1, in);
	out[got] = '\0';
	fclose(in);
	fputs(out, stderr);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

/* The engine's usage of category cat on acct (ACCT.GET usage_<cat>), in micro-units. */
static tg_money_t
engine_usage(struct fx *f, unsigned acct, const char *cat)
{
	char field[48];
	snprintf(field, sizeof(field), "usage_%s", cat);
	redisReply *r = it_cmd(f->c, "ACCT.GET %u", acct);
	tg_money_t v = -1;
	for (size_t i = 0; i + 1 < r->elements; i += 2)
		if (strcmp(r->element[i]->str, field) == 0)
			v = money_of(r->element[i + 1]->str);
	freeReplyObject(r);
	return v;
}

/* "charged":"X" of category cat in a statement's JSON, 0 when it has none. */
static tg_money_t
statement_usage(const char *json, const char *cat)
{
	char key[64];
	snprintf(key, sizeof(key), "\"%s\":{\"calls\":", cat);
	const char *p = strstr(json, key);
	if (p == NULL)
		return 0;
	p = strstr(p, "\"charged\":\"");
	assert_non_null(p);
	p += 11;
	const char *e = strchr(p, '"');
	tg_money_t m;
	assert_int_equal(tg_money_parse(p, (size_t)(e - p), &m), 0);
	return m;
}

static void
run_statement_and_reconcile(struct fx *f)
{
	static const char *const cats[] = {"local",     "national", "international", "tollfree",
	                                   "directory", "mobile",   "premium",       "other"};
	static char out[1 << 20];
	char month[16], acct[16];
	time_t now = time(NULL);
	struct tm t;

	for (unsigned i = 0; i < 120; i++)
		one_op(f);
	export_all(f, 50);
	gmtime_r(&now, &t);
	strftime(month, sizeof(month), "%Y-%m", &t);
	for (unsigned a = 1001; a <= 1004; a += 3) {
		snprintf(acct, sizeof(acct), "%u", a);
		const char *args[] = {"statement", acct, "--month", month, "--json", NULL};
		assert_int_equal(tollctl(f, out, sizeof(out), args), 0);
		/* The statement's usage by category is the engine's, to the micro-unit. */
		tg_money_t total = 0;
		for (size_t k = 0; k < 8; k++) {
			assert_int_equal(statement_usage(out, cats[k]),
			                 engine_usage(f, a, cats[k]));
			total += statement_usage(out, cats[k]);
		}
		assert_int_equal(total, f->b.by_acct[a - 1001]);
		const char *text[] = {"statement", acct, "--month", month, NULL};
		assert_int_equal(tollctl(f, out, sizeof(out), text), 0);
		assert_non_null(strstr(out, "Opening balance"));
		assert_non_null(strstr(out, "Closing balance"));
		const char *csv[] = {"calls", acct, "--from", "2000-01-01", "--csv", NULL};
		assert_int_equal(tollctl(f, out, sizeof(out), csv), 0);
		assert_non_null(strstr(out, "time,kind,call_id"));
	}
	const char *rec[] = {"reconcile", NULL};
	assert_int_equal(tollctl(f, out, sizeof(out), rec), 0);
	assert_non_null(strstr(out, " 0 differ"));
	/* One row altered by a micro-unit: reconcile names its account and fails. */
	char sql[200];
	snprintf(sql, sizeof(sql), "UPDATE calls SET charge = charge + 1 WHERE lsn = %lld",
	         (long long)q64(f, "SELECT max(lsn) FROM calls WHERE acct = 1004"));
	sql_exec(f, sql);
	assert_int_equal(tollctl(f, out, sizeof(out), rec), 1);
	assert_non_null(strstr(out, "account 1004: ledger "));
	assert_null(strstr(out, "account 1001:"));
}

static void
test_statement_totals_and_reconcile(void **state)
{
	(void)state;
	fx_start(&F, NULL, NULL);
	run_statement_and_reconcile(&F);
}

/*
 * A postpaid account's kind and credit limit reach the ledger's accounts
 * table (tollbill bills by them): the limit from the settings record's
 * terms word, not as a threshold; back to prepaid, both go.
 */
static void
sql_text(struct fx *f, const char *sql, char *out, size_t cap)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void
accounts_row(struct fx *f, unsigned acct, char *out, size_t cap)
{
	char sql[160];
	snprintf(sql, sizeof(sql),
	         "SELECT kind || ' ' || credit_limit || ' ' || threshold FROM accounts "
	         "WHERE acct = %u",
	         acct);
	sql_text(f, sql, out, cap);
}

static void
test_postpaid_kind_and_limit_exported(void **state)
{
	char row[128];
	(void)state;
	fx_start(&F, NULL, NULL);
	it_run_cmd(F.c, "ACCT.SET 2001 PLAN basic KIND postpaid LIMIT 150");
	it_run_cmd(F.c, "ACCT.SET 2002 PLAN basic THRESHOLD 5");
	export_all(&F, 100);
	accounts_row(&F, 2001, row, sizeof(row));
	assert_string_equal(row, "postpaid 150000000 0");
	accounts_row(&F, 2002, row, sizeof(row));
	assert_string_equal(row, "prepaid 0 5000000");
	it_run_cmd(F.c, "ACCT.SET 2001 KIND prepaid THRESHOLD 1");
	export_all(&F, 100);
	accounts_row(&F, 2001, row, sizeof(row));
	assert_string_equal(row, "prepaid 0 1000000");
}

/*
 * Defect: the exporter skipped the journal's limits records, so the ledger
 * said nothing of a fraud desk's MAXCALLS or caps.  Each change is an
 * account event, its user and the limits in micro-units in its detail.
 */
static void
test_limits_exported_as_account_events(void **state)
{
	char row[256];
	(void)state;
	fx_start(&F, NULL, NULL);
	it_run_cmd(F.c, "ACCT.SET 2003 BALANCE 10 PLAN basic");
	it_run_cmd(F.c, "ACCT.SET 2003 MAXCALLS 2 CALLCAP 5 DAILYCAP 20.5 LOW 1");
	export_all(&F, 100);
	sql_text(&F,
	         "SELECT count(*) || ' ' || max(detail) FROM account_events "
	         "WHERE acct = 2003 AND kind = 'limits'",
	         row, sizeof(row));
	assert_string_equal(row, "1 max_calls=2 call_cap=5000000 daily_cap=20500000 low=1000000");
	it_run_cmd(F.c, "ACCT.SET 2003 MAXCALLS 0");
	export_all(&F, 100);
	sql_text(&F,
	         "SELECT count(*) || ' ' || min(detail) FROM account_events "
	         "WHERE acct = 2003 AND kind = 'limits'",
	         row, sizeof(row));
	assert_string_equal(row, "2 max_calls=0 call_cap=5000000 daily_cap=20500000 low=1000000");
}

/* ---- PostgreSQL ---- */

static struct pg_cluster pg;
static bool pg_up;

static void
test_pg_exactly_once_across_kill9(void **state)
{
	static const char *const flags[] = {"--journal-segment-size", "8192", NULL};
	struct fx *f = &F;
	char uri[IT_PATH_MAX];

	(void)state;
	if (!pg_up)
		skip();
	assert_int_equal(pg_create_db(&pg, "kill9", uri, sizeof(uri)), 0);
	fx_start(f, flags, uri);
	run_kill9(f);
	fx_end(f);
}

/* PostgreSQL restarted while the exporter follows a busy engine: nothing lost, nothing twice. */
static void
test_pg_restart_mid_export(void **state)
{
	struct fx *f = &F;
	char uri[IT_PATH_MAX];

	(void)state;
	if (!pg_up)
		skip();
	assert_int_equal(pg_create_db(&pg, "restart", uri, sizeof(uri)), 0);
	fx_start(f, NULL, uri);
	f->exporter = exporter_start(f, true, 5);
	for (unsigned round = 0; round < 4; round++) {
		for (unsigned i = 0; i < 40; i++)
			one_op(f);
		assert_int_equal(pg_restart(&pg, round % 2 == 0), 0);
	}
	for (unsigned i = 0; i < 40; i++)
		one_op(f);
	/* The follower catches up on its own once the database is back. */
	uint64_t deadline = tg_mono_ms() + 30000;
	while (q64(f, "SELECT count(*) FROM calls") < f->b.calls && tg_mono_ms() < deadline)
		it_sleep_ms(100);
	kill9(f->exporter);
	f->exporter = 0;
	check_books(f);
	check_journal(f);
	fx_end(f);
}

static void
test_pg_open_calls_resolved_within_and_across_batches(void **state)
{
	char uri[IT_PATH_MAX];

	(void)state;
	if (!pg_up)
		skip();
	assert_int_equal(pg_create_db(&pg, "opencalls", uri, sizeof(uri)), 0);
	fx_start(&F, NULL, uri);
	run_open_calls_in_batches(&F);
}

/*
 * The cluster restarted (immediate: a crash) while the exporter streams a
 * batch of tens of thousands of rows with COPY: the transaction is lost
 * whole, the exporter reconnects, reads the position and sends the batch
 * again; the rows match the books and the journal exactly.
 */
static void
test_pg_connection_lost_mid_copy(void **state)
{
	struct fx *f = &F;
	char uri[IT_PATH_MAX];
	bool seen = false;

	(void)state;
	if (!pg_up)
		skip();
	assert_int_equal(pg_create_db(&pg, "midcopy", uri, sizeof(uri)), 0);
	fx_start(f, NULL, uri);
	it_run_cmd(f->c, "ACCT.SET 1001 BALANCE 100000000 PLAN basic");
	/* Each round adds rows and exports them in one batch, until a COPY is caught. */
	for (unsigned round = 0; round < 5 && !seen; round++) {
		load_cdrs(f, 40000);
		f->exporter = exporter_start(f, false, 1000000);
		seen = pg_wait_active(uri, "COPY calls", 20000) == 0;
		if (seen)
			assert_int_equal(pg_restart(&pg, 1), 0);
		int st;
		assert_int_equal(waitpid(f->exporter, &st, 0), f->exporter);
		f->exporter = 0;
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	assert_true(seen);
	check_books(f);
	check_journal(f);
	fx_end(f);
}

static void
test_pg_statement_totals_and_reconcile(void **state)
{
	char uri[IT_PATH_MAX];

	(void)state;
	if (!pg_up)
		skip();
	assert_int_equal(pg_create_db(&pg, "stmt", uri, sizeof(uri)), 0);
	fx_start(&F, NULL, uri);
	run_statement_and_reconcile(&F);
}

static int
pg_teardown(void **state)
{
	(void)state;
	if (pg_up)
		pg_stop(&pg);
	return 0;
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest lite[] = {
	    cmocka_unit_test_teardown(test_exactly_once_across_kill9_restarts_rotation, teardown),
	    cmocka_unit_test_teardown(test_pruning_keeps_what_the_exporter_needs, teardown),
	    cmocka_unit_test_teardown(test_statement_totals_and_reconcile, teardown),
	    cmocka_unit_test_teardown(test_open_calls_resolved_within_and_across_batches, teardown),
	    cmocka_unit_test_teardown(test_postpaid_kind_and_limit_exported, teardown),
	    cmocka_unit_test_teardown(test_limits_exported_as_account_events, teardown),
	};
	const struct CMUnitTest pgt[] = {
	    cmocka_unit_test_teardown(test_pg_exactly_once_across_kill9, teardown),
	    cmocka_unit_test_teardown(test_pg_restart_mid_export, teardown),
	    cmocka_unit_test_teardown(test_pg_statement_totals_and_reconcile, teardown),
	    cmocka_unit_test_teardown(test_pg_open_calls_resolved_within_and_across_batches,
	                              teardown),
	    cmocka_unit_test_teardown(test_pg_connection_lost_mid_copy, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	if (argc > 1 && strcmp(argv[1], "pg") == 0) {
		/* Not installed: skipped (77).  Installed and not starting: failed. */
		int rc = pg_start(&pg);
		if (rc != 0) {
			fprintf(stderr, "no PostgreSQL cluster: %s\n", pg.why);
			return rc == -ENOENT ? 77 : 1;
		}
		pg_up = true;
		return cmocka_run_group_tests_name("ledger_pg", pgt, NULL, pg_teardown);
	}
	return cmocka_run_group_tests_name("ledger", lite, NULL, NULL);
}
