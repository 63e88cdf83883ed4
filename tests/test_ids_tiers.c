/*
 * test_ids_tiers.c - exactly-once past the memory tier: ids move to runs on
 * disk and are still answered exactly, across kills and restarts; nothing
 * is ever refused with FULL for lack of memory; a CDR older than the
 * horizon is STALE; with durability off the oldest ids are forgotten.
 *
 * The real tollgated with a tiny memory tier (--ids-max 4096), driven over
 * its socket with pipelined requests, so that most ids live on disk.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rcmd.h"
#include "tg_money.h"

#define DEST  "14155551212"
#define NCDR  60000
#define NCRED 6000
#define NCALL 2000

static const char *const small[] = {"--ids-max", "4096", NULL};

struct fx {
	char dir[IT_PATH_MAX];
	struct it_daemon d;
	redisContext *c;
	tg_money_t cdr_reply[NCDR];
	tg_money_t cred_reply[NCRED];
	tg_money_t end_reply[NCALL];
};

static struct fx fx;

/* A command whose reply may be an error (it_cmd fails on one); the connection must hold. */
static redisReply *
vcmd(const char *fmt, va_list ap)
{
	redisReply *r = redisvCommand(fx.c, fmt, ap);
	if (r == NULL)
		fail_msg("connection failed: %s", fx.c->errstr);
	return r;
}

static redisReply *
cmd(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = vcmd(fmt, ap);
	va_end(ap);
	return r;
}

/* A command whose reply must be an error starting with prefix. */
static void expect_err(const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void
expect_err(const char *prefix, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = vcmd(fmt, ap);
	va_end(ap);
	if (r->type != REDIS_REPLY_ERROR || strncmp(r->str, prefix, strlen(prefix)) != 0)
		fail_msg("'%s': %s, expected -%s...", fmt,
		         r->type == REDIS_REPLY_ERROR ? r->str : "no error", prefix);
	freeReplyObject(r);
}

static void
reconnect(void)
{
	if (fx.c != NULL)
		redisFree(fx.c);
	fx.c = it_connect(&fx.d);
	assert_non_null(fx.c);
}

/* The test's connection closed. */
static void
disconnect(void)
{
	if (fx.c != NULL)
		disconnect();
}

/* The end of a test: disconnected, the daemon stopped cleanly, its directory removed. */
static void
finish(void)
{
	disconnect();
	assert_int_equal(it_stop(&fx.d), 0);
	it_dir_remove(fx.dir);
}

/*
 * Send n formatted requests pipelined (fmt takes one int, the index i of
 * from + k), collect the money replies into out (NULL: any), and fail on an
 * error reply.
 */
static void
burst(const char *fmt, int from, int n, int step, tg_money_t *out, bool compare)
{
	const int window = 256;
	int sent = 0, got = 0;
	while (got < n) {
		while (sent < n && sent - got < window) {
			assert_int_equal(redisAppendCommand(fx.c, fmt, from + sent * step),
			                 REDIS_OK);
			sent++;
		}
		redisReply *r;
		assert_int_equal(redisGetReply(fx.c, (void **)&r), REDIS_OK);
		if (r->type == REDIS_REPLY_ERROR)
			fail_msg("request %d of '%s': -%s", from + got * step, fmt, r->str);
		tg_money_t v = r->type == REDIS_REPLY_INTEGER ? r->integer : it_money(r->str);
		int idx = from + got * step;
		if (out != NULL && compare && out[idx] != v)
			fail_msg("request %d of '%s' replayed: %lld, first reply %lld", idx, fmt,
			         (long long)v, (long long)out[idx]);
		if (out != NULL && !compare)
			out[idx] = v;
		freeReplyObject(r);
		got++;
	}
}

/* Replays of a sample of every kind of id: the first replies, nothing charged. */
static void
replay_sample(const char *when)
{
	tg_money_t b1 = it_acct_money(fx.c, 1, "balance"), b2 = it_acct_money(fx.c, 2, "balance");
	fprintf(stderr, "ids: replaying a sample %s\n", when);
	/* Exact first replies: the id and its data are what the first request sent. */
	for (int i = 0; i < NCDR; i += 97) {
		redisReply *r = cmd("CDR 1 " DEST " %d cdr-%d", i % 600 + 1, i);
		if (r->type != REDIS_REPLY_STRING || it_money(r->str) != fx.cdr_reply[i])
			fail_msg("%s: CDR cdr-%d replayed as %s, first reply %lld", when, i,
			         r->str ? r->str : "?", (long long)fx.cdr_reply[i]);
		freeReplyObject(r);
	}
	for (int i = 0; i < NCRED; i += 61) {
		redisReply *r = cmd("ACCT.CREDIT 2 0.01 tx-%d", i);
		if (r->type != REDIS_REPLY_STRING || it_money(r->str) != fx.cred_reply[i])
			fail_msg("%s: credit tx-%d replayed as %s", when, i, r->str ? r->str : "?");
		freeReplyObject(r);
	}
	for (int i = 0; i < NCALL; i += 37) {
		redisReply *r = cmd("CALL.END 1 call-%d 30", i);
		if (r->type != REDIS_REPLY_STRING || it_money(r->str) != fx.end_reply[i])
			fail_msg("%s: CALL.END call-%d replayed as %s", when, i,
			         r->str ? r->str : "?");
		freeReplyObject(r);
		/* An ended call, its END id on disk, is never authorized again. */
		r = cmd("CALL.AUTH 1 " DEST " call-%d", i);
		if (r->type != REDIS_REPLY_ERROR || strncmp(r->str, "CONFLICT", 8) != 0)
			fail_msg("%s: CALL.AUTH of ended call-%d: %s", when, i,
			         r->type == REDIS_REPLY_ERROR ? r->str : "granted");
		freeReplyObject(r);
	}
	/* Same id, other data: CONFLICT, wherever the id lives. */
	expect_err("CONFLICT", "CDR 1 " DEST " 7 cdr-0");
	assert_int_equal(it_acct_money(fx.c, 1, "balance"), b1);
	assert_int_equal(it_acct_money(fx.c, 2, "balance"), b2);
}

static void
test_ids_on_disk_answer_exactly_across_restarts(void **state)
{
	(void)state;
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_start(&fx.d, fx.dir, small), 0);
	reconnect();
	it_run_cmd(fx.c, "ACCT.SET 1 BALANCE 1000000 PLAN basic");
	it_run_cmd(fx.c, "ACCT.SET 2 BALANCE 0 PLAN basic");
	/* Calls authorized and ended first, so that their END ids are the oldest. */
	for (int i = 0; i < NCALL; i++) {
		assert_true(it_int_cmd(fx.c, "CALL.AUTH 1 " DEST " call-%d", i) > 0);
		redisReply *r = it_cmd(fx.c, "CALL.END 1 call-%d 30", i);
		assert_int_equal(r->type, REDIS_REPLY_STRING);
		fx.end_reply[i] = it_money(r->str);
		freeReplyObject(r);
	}
	burst("ACCT.CREDIT 2 0.01 tx-%d", 0, NCRED, 1, fx.cred_reply, false);
	/* 15 times the memory tier: no FULL (burst fails on any error), most ids go to disk. */
	for (int i = 0; i < NCDR; i++) {
		assert_int_equal(
		    redisAppendCommand(fx.c, "CDR 1 " DEST " %d cdr-%d", i % 600 + 1, i), REDIS_OK);
		if (i % 256 == 255 || i == NCDR - 1) {
			for (int k = i - i % 256; k <= i; k++) {
				redisReply *r;
				assert_int_equal(redisGetReply(fx.c, (void **)&r), REDIS_OK);
				if (r->type != REDIS_REPLY_STRING)
					fail_msg("CDR cdr-%d: %s", k, r->str ? r->str : "?");
				fx.cdr_reply[k] = it_money(r->str);
				freeReplyObject(r);
			}
		}
	}
	tg_money_t charged = 0;
	for (int i = 0; i < NCDR; i++)
		charged += fx.cdr_reply[i];
	for (int i = 0; i < NCALL; i++)
		charged += fx.end_reply[i];
	assert_int_equal(it_acct_money(fx.c, 1, "balance"), 1000000 * 1000000LL - charged);
	assert_int_equal(it_acct_money(fx.c, 2, "balance"), NCRED * 10000LL);
	it_sleep_ms(600); /* the mover's tick */
	fprintf(stderr, "ids: %lld in memory, %lld on disk in %lld runs, %lld moved, %lld waits\n",
	        it_info(fx.c, "ids_memory"), it_info(fx.c, "ids_disk"),
	        it_info(fx.c, "ids_disk_runs"), it_info(fx.c, "ids_moved"),
	        it_info(fx.c, "window_waits"));
	assert_true(it_info(fx.c, "ids_moved") > NCDR / 2);
	assert_true(it_info(fx.c, "ids_disk") > NCDR / 2);
	assert_true(it_info(fx.c, "ids_memory") <= 4096 * 5 / 4);
	assert_int_equal(it_info(fx.c, "window_full"), 0);
	replay_sample("on the live engine");
	assert_true(it_info(fx.c, "ids_disk_reads") > 0);

	/* A crash with the segment kept, then a reboot: the runs and the journal. */
	disconnect();
	assert_int_equal(it_kill(&fx.d), 0);
	assert_int_equal(it_restart(&fx.d, small, 0), 0);
	reconnect();
	replay_sample("after a kill");
	disconnect();
	assert_int_equal(it_kill(&fx.d), 0);
	assert_int_equal(it_restart(&fx.d, small, 1), 0);
	reconnect();
	assert_true(it_log_has(&fx.d, "remembered on disk, loaded in"));
	replay_sample("after a reboot");
	disconnect();
	assert_int_equal(it_term(&fx.d), 0);
	assert_int_equal(it_restart(&fx.d, small, 1), 0);
	reconnect();
	replay_sample("after a clean stop");
	finish();
}

/* A damaged run stops start-up with the file and the way on; nothing is changed. */
static void
test_damaged_run_stops_start(void **state)
{
	(void)state;
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_start(&fx.d, fx.dir, small), 0);
	reconnect();
	it_run_cmd(fx.c, "ACCT.SET 1 BALANCE 1000 PLAN basic");
	burst("CDR 1 " DEST " 1 d-%d", 0, 20000, 1, NULL, false);
	it_sleep_ms(600);
	assert_true(it_info(fx.c, "ids_disk") > 0);
	disconnect();
	assert_int_equal(it_kill(&fx.d), 0);
	DIR *d = opendir(fx.d.data);
	struct dirent *e;
	char path[IT_PATH_MAX] = "";
	while ((e = readdir(d)) != NULL)
		if (strncmp(e->d_name, "ids-", 4) == 0)
			it_pathf(path, sizeof(path), "%s/%s", fx.d.data, e->d_name);
	closedir(d);
	assert_true(path[0] != '\0');
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	fseek(f, 20, SEEK_SET);
	fputc(0x5a, f);
	fclose(f);
	assert_int_equal(it_restart(&fx.d, small, 1), -1);
	assert_true(it_log_has(&fx.d, "cannot be read"));
	assert_true(it_log_has(&fx.d, "move it aside"));
	it_dir_remove(fx.dir);
}

/* CDR ... AT: older than the horizon is STALE and not remembered; a bad AT is an error. */
static void
test_cdr_at_older_than_horizon_is_stale(void **state)
{
	static const char *const flags[] = {"--ids-window", "3600", NULL};
	long long now = (long long)time(NULL);

	(void)state;
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	reconnect();
	it_run_cmd(fx.c, "ACCT.SET 1 BALANCE 100 PLAN basic");
	expect_err("STALE", "CDR 1 " DEST " 60 late-1 AT %lld", now - 3700);
	assert_int_equal(it_acct_money(fx.c, 1, "balance"), 100 * 1000000LL);
	assert_int_equal(it_info(fx.c, "cdr_stale"), 1);
	/* Not remembered: the same id with a start inside the horizon is charged. */
	redisReply *r = cmd("CDR 1 " DEST " 60 late-1 AT %lld", now - 60);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	freeReplyObject(r);
	assert_true(it_acct_money(fx.c, 1, "balance") < 100 * 1000000LL);
	expect_err("ERR invalid AT", "CDR 1 " DEST " 60 late-2 AT %lld", now + 7 * 86400);
	expect_err("ERR syntax: CDR", "CDR 1 " DEST " 60 late-3 WHEN 5");
	finish();
}

/*
 * ids-disk-max 10000: runs are forgotten before their time.  From then on a
 * CDR of a call that started before the newest forgotten id was first seen
 * is STALE (its id may be one of them: charging it could charge twice),
 * and so it stays across a restart; a later start is charged.  A damaged
 * watermark file stops the start with a sentence.
 */
static void
test_cdr_at_before_forgotten_ids_is_stale(void **state)
{
	static const char *const flags[] = {"--ids-max", "4096", "--ids-disk-max", "10000", NULL};
	char path[IT_PATH_MAX];

	(void)state;
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	reconnect();
	it_run_cmd(fx.c, "ACCT.SET 1 BALANCE 1000 PLAN basic");
	assert_int_equal(it_info(fx.c, "ids_forgotten_before"), 0);
	long long forgot = 0;
	for (int round = 0; round < 40 && forgot == 0; round++) {
		burst("CDR 1 " DEST " 1 f-%d", round * 5000, 5000, 1, NULL, false);
		it_sleep_ms(300);
		forgot = it_info(fx.c, "ids_forgotten_before");
	}
	assert_true(forgot > 0);
	assert_true(it_info(fx.c, "ids_horizon_cut") > 0);
	assert_true(it_log_has(&fx.d, "forgetting the oldest run"));

	/* Before the watermark: STALE, nothing charged, nothing remembered. */
	tg_money_t before = it_acct_money(fx.c, 1, "balance");
	expect_err("STALE", "CDR 1 " DEST " 60 f-0 AT %lld", forgot - 1);
	assert_int_equal(it_acct_money(fx.c, 1, "balance"), before);
	/* From it on: charged. */
	while ((long long)time(NULL) < forgot)
		it_sleep_ms(100);
	redisReply *r = cmd("CDR 1 " DEST " 60 late-new AT %lld", forgot);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	freeReplyObject(r);
	assert_true(it_acct_money(fx.c, 1, "balance") < before);

	/* Kept across a restart. */
	disconnect();
	assert_int_equal(it_stop(&fx.d), 0);
	assert_int_equal(it_restart(&fx.d, flags, 1), 0);
	reconnect();
	assert_true(it_info(fx.c, "ids_forgotten_before") >= forgot);
	expect_err("STALE", "CDR 1 " DEST " 60 f-1 AT %lld", forgot - 1);

	/* A watermark that cannot be read is not taken for none. */
	disconnect();
	assert_int_equal(it_stop(&fx.d), 0);
	it_pathf(path, sizeof(path), "%s/ids-forgot", fx.d.data);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("soon\n", f);
	fclose(f);
	assert_int_equal(it_restart(&fx.d, flags, 1), -1);
	assert_true(it_log_has(&fx.d, "ids-forgot is damaged"));
	it_dir_remove(fx.dir);
}

/* With no journal there is no disk tier: the oldest ids are forgotten, never FULL. */
static void
test_durability_off_forgets_oldest(void **state)
{
	static const char *const flags[] = {"--ids-max", "4096", "--durability", "off", NULL};

	(void)state;
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	reconnect();
	it_run_cmd(fx.c, "ACCT.SET 1 BALANCE 1000 PLAN basic");
	burst("CDR 1 " DEST " 1 off-%d", 0, 20000, 1, NULL, false);
	assert_true(it_info(fx.c, "ids_evicted") > 0);
	assert_int_equal(it_info(fx.c, "window_full"), 0);
	finish();
}

/*
 * A busy engine with a long snapshot-interval (here: none) left a restart
 * the whole journal since the last snapshot to replay: 32M records, 13 s,
 * after a 100M-CDR run.  snapshot-records takes a snapshot once that many
 * records were journaled, so after a kill the restart replays about that
 * many at most, and every id is still answered exactly.
 */
static void
test_restart_replays_at_most_snapshot_records(void **state)
{
	static const char *const flags[] = {
	    "--ids-max", "4096", "--snapshot-interval", "0", "--snapshot-records", "5000", NULL};
	enum { N = 30000 };
	static tg_money_t first[N];

	(void)state;
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	reconnect();
	it_run_cmd(fx.c, "ACCT.SET 1 BALANCE 1000000 PLAN basic");
	burst("CDR 1 " DEST " 7 snap-%d", 0, N, 1, first, false);
	/* At most one snapshot by record count every 5 s: wait for one. */
	for (int i = 0; i < 100 && it_info(fx.c, "snapshots") == 0; i++)
		it_sleep_ms(100);
	assert_true(it_info(fx.c, "snapshots") >= 1);
	disconnect();
	assert_int_equal(it_kill(&fx.d), 0);
	assert_int_equal(it_restart(&fx.d, flags, 0), 0);
	reconnect();
	tg_money_t before = it_acct_money(fx.c, 1, "balance");
	burst("CDR 1 " DEST " 7 snap-%d", 0, N, 1, first, true);
	assert_int_equal(it_acct_money(fx.c, 1, "balance"), before);
	finish();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ids_on_disk_answer_exactly_across_restarts),
	    cmocka_unit_test(test_damaged_run_stops_start),
	    cmocka_unit_test(test_cdr_at_older_than_horizon_is_stale),
	    cmocka_unit_test(test_cdr_at_before_forgotten_ids_is_stale),
	    cmocka_unit_test(test_durability_off_forgets_oldest),
	    cmocka_unit_test(test_restart_replays_at_most_snapshot_records),
	};
	return cmocka_run_group_tests_name("ids_tiers", tests, NULL, NULL);
}
