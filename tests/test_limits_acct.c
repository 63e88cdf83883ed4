/*
 * test_limits_acct.c - an account's fraud limits through the real tollgated
 * (docs/FRAUD.md): the concurrent-call limit under many connections at
 * once, the per-call and daily spend caps, the grant's reason, bad input,
 * and the limits and the day's count across a crash and a reboot.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rcmd.h"
#include "tg_money.h"

#define U 1000000LL
/* basic, prefix 1212: $0.005 a minute, 60/60 (tools/demo/rates.csv). */
#define DEST "12125551234"

struct fx {
	char dir[IT_PATH_MAX];
	struct it_daemon d;
	redisContext *c;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(it_dir_make(f->dir, sizeof(f->dir)), 0);
	assert_int_equal(it_start(&f->d, f->dir, NULL), 0);
	f->c = it_connect(&f->d);
	assert_non_null(f->c);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	if (f->c)
		redisFree(f->c);
	if (f->d.pid > 0)
		assert_int_equal(it_stop(&f->d), 0);
	it_dir_remove(f->dir);
	free(f);
	return 0;
}

/* CALL.AUTH ... WITHREASON: the seconds, and the reason into why. */
static long long
auth_why(redisContext *c, const char *acct, const char *call, char *why, size_t cap)
{
	redisReply *r = redisCommand(c, "CALL.AUTH %s %s %s WITHREASON", acct, DEST, call);
	assert_non_null(r);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("CALL.AUTH %s %s: %s", acct, call, r->str);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 2);
	assert_int_equal(r->element[0]->type, REDIS_REPLY_INTEGER);
	long long s = r->element[0]->integer;
	snprintf(why, cap, "%s", r->element[1]->str);
	freeReplyObject(r);
	return s;
}

/* ---- the concurrent-call limit, many connections at once ---- */

#define THREADS 8
#define PER     40
#define LIMIT   5

struct racer {
	const struct it_daemon *d;
	int idx;
	int granted, refused, other;
};

static void *
race(void *arg)
{
	struct racer *r = arg;
	redisContext *c = it_connect(r->d);
	if (c == NULL)
		return NULL;
	/* Pipelined: every request of the connection in one write. */
	for (int i = 0; i < PER; i++)
		redisAppendCommand(c, "CALL.AUTH 7020 %s cc-%d-%d", DEST, r->idx, i);
	for (int i = 0; i < PER; i++) {
		redisReply *rep;
		if (redisGetReply(c, (void **)&rep) != REDIS_OK)
			break;
		if (rep->type == REDIS_REPLY_INTEGER && rep->integer > 0)
			r->granted++;
		else if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "MAXCALLS", 8) == 0)
			r->refused++;
		else
			r->other++;
		freeReplyObject(rep);
	}
	redisFree(c);
	return NULL;
}

static void
maxcalls_never_exceeded_under_many_connections(void **state)
{
	struct fx *f = *state;
	pthread_t th[THREADS];
	struct racer rs[THREADS];

	it_run_cmd(f->c, "ACCT.SET 7020 BALANCE 1000 PLAN basic MAXCALLS %d", LIMIT);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < THREADS; i++) {
			rs[i] = (struct racer){.d = &f->d, .idx = round * THREADS + i};
			assert_int_equal(pthread_create(&th[i], NULL, race, &rs[i]), 0);
		}
		int granted = 0, refused = 0, other = 0;
		for (int i = 0; i < THREADS; i++) {
			pthread_join(th[i], NULL);
			granted += rs[i].granted;
			refused += rs[i].refused;
			other += rs[i].other;
		}
		assert_int_equal(other, 0);
		assert_int_equal(granted, LIMIT);
		assert_int_equal(refused, THREADS * PER - LIMIT);
		assert_int_equal(it_acct_int(f->c, 7020, "calls"), LIMIT);
		/* Release them all: CALL.END of every granted call frees its place. */
		for (int i = 0; i < THREADS; i++)
			for (int k = 0; k < PER; k++) {
				char err[64];
				char cmd[96];
				snprintf(cmd, sizeof(cmd), "CALL.END 7020 cc-%d-%d 10",
				         round * THREADS + i, k);
				it_error_of(f->c, err, sizeof(err), cmd);
			}
		assert_int_equal(it_acct_int(f->c, 7020, "calls"), 0);
	}
	assert_int_equal(it_info(f->c, "call_maxcalls"), 3 * (THREADS * PER - LIMIT));
	assert_int_equal(it_acct_int(f->c, 7020, "maxcalls"), LIMIT);
	/* 0 removes the limit. */
	it_run_cmd(f->c, "ACCT.SET 7020 MAXCALLS 0");
	for (int i = 0; i < LIMIT + 3; i++)
		assert_true(it_int_cmd(f->c, "CALL.AUTH 7020 %s free-%d", DEST, i) > 0);
}

/* ---- the spend caps and the reasons ---- */

static void
grant_reasons_and_caps(void **state)
{
	struct fx *f = *state;
	char why[32], err[128];

	/* Plenty of money: capped by max-grant. */
	it_run_cmd(f->c, "ACCT.SET 12 BALANCE 100 PLAN basic");
	assert_int_equal(auth_why(f->c, "12", "m1", why, sizeof(why)), 3600);
	assert_string_equal(why, "maxgrant");
	/* The plain form keeps its integer. */
	assert_int_equal(it_int_cmd(f->c, "CALL.AUTH 12 %s m2", DEST), 3600);
	/* The money runs out: $0.01 at $0.005 a minute pays 120 s. */
	it_run_cmd(f->c, "ACCT.SET 11 BALANCE 0.01 PLAN basic");
	assert_int_equal(auth_why(f->c, "11", "s1", why, sizeof(why)), 120);
	assert_string_equal(why, "money");
	/* Granted in full, leaving $0.70 below a $0.90 threshold: low. */
	it_run_cmd(f->c, "ACCT.SET 10 BALANCE 1 PLAN basic LOW 0.9");
	assert_int_equal(auth_why(f->c, "10", "l1", why, sizeof(why)), 3600);
	assert_string_equal(why, "low");
	/* Per-call cap: $0.01 a call is 120 s whatever the balance. */
	it_run_cmd(f->c, "ACCT.SET 8 BALANCE 100 PLAN basic CALLCAP 0.01");
	assert_int_equal(auth_why(f->c, "8", "c1", why, sizeof(why)), 120);
	assert_string_equal(why, "callcap");
	assert_int_equal(it_acct_money(f->c, 8, "reserved"), 10000);
	/* ...and CALL.UPDATE cannot take the call past it. */
	redisReply *r = redisCommand(f->c, "CALL.UPDATE 8 c1 60 WITHREASON");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	assert_string_equal(r->str, "BLOCKED insufficient balance");
	freeReplyObject(r);
	/* Daily cap: $0.02 pays 240 s, then nothing more today. */
	it_run_cmd(f->c, "ACCT.SET 9 BALANCE 100 PLAN basic DAILYCAP 0.02");
	assert_int_equal(auth_why(f->c, "9", "d1", why, sizeof(why)), 240);
	assert_string_equal(why, "dailycap");
	it_error_of(f->c, err, sizeof(err), "CALL.AUTH 9 " DEST " d2");
	assert_string_equal(err, "DAILYCAP the account's daily spend cap is reached");
	assert_int_equal(it_acct_money(f->c, 9, "daily_spent"), 20000);
	/* The call used 60 s ($0.005): the rest of its reservation is back in the day. */
	it_run_cmd(f->c, "CALL.END 9 d1 60");
	assert_int_equal(it_acct_money(f->c, 9, "daily_spent"), 5000);
	assert_int_equal(auth_why(f->c, "9", "d3", why, sizeof(why)), 180);
	assert_string_equal(why, "dailycap");
	/* A CDR is charged even past the cap (the call happened), and counted. */
	it_run_cmd(f->c, "CDR 9 " DEST " 600 cdr-1");
	assert_int_equal(it_acct_money(f->c, 9, "daily_spent"), 20000 + 50000);
	assert_int_equal(it_info(f->c, "call_dailycap"), 1);
	assert_true(it_info(f->c, "call_callcap") >= 1);
	assert_true(it_info(f->c, "call_low") >= 1);
}

static void
bad_limits_are_refused_and_change_nothing(void **state)
{
	struct fx *f = *state;
	char err[200];
	static const char *const bad[] = {
	    "ACCT.SET 30 MAXCALLS -1",
	    "ACCT.SET 30 MAXCALLS abc",
	    "ACCT.SET 30 LOW abc",
	    "ACCT.SET 30 LOW -1",
	    "ACCT.SET 30 DAILYCAP -0.5",
	    "ACCT.SET 30 CALLCAP 1.0000001",
	    "ACCT.SET 30 MAXCALLS 99999999999",
	    "ACCT.SET 30 DAILYCAP 300000000",
	    "ACCT.SET 30 MAXCALLS",
	};

	it_run_cmd(f->c, "ACCT.SET 30 BALANCE 5 PLAN basic MAXCALLS 2 LOW 1");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		it_error_of(f->c, err, sizeof(err), bad[i]);
		if (strncmp(err, "ERR ", 4) != 0)
			fail_msg("%s: '%s'", bad[i], err);
	}
	it_error_of(f->c, err, sizeof(err), "CALL.AUTH 30 " DEST " x1 WITHREASONS");
	assert_true(strncmp(err, "ERR ", 4) == 0);
	assert_int_equal(it_acct_int(f->c, 30, "maxcalls"), 2);
	assert_int_equal(it_acct_money(f->c, 30, "low"), 1 * U);
	assert_int_equal(it_acct_money(f->c, 30, "balance"), 5 * U);
	assert_int_equal(it_acct_int(f->c, 30, "calls"), 0);
}

/* ---- restart: the limits kept, the calls recounted, the day's count rebuilt ---- */

static void
limits_and_counts_survive_crash_and_reboot(void **state)
{
	struct fx *f = *state;
	char err[128];

	it_run_cmd(f->c,
	           "ACCT.SET 40 BALANCE 100 PLAN basic MAXCALLS 2 DAILYCAP 0.05 CALLCAP 0.02");
	assert_int_equal(it_int_cmd(f->c, "CALL.AUTH 40 %s r1", DEST), 240);
	assert_int_equal(it_int_cmd(f->c, "CALL.AUTH 40 %s r2", DEST), 240);
	it_error_of(f->c, err, sizeof(err), "CALL.AUTH 40 " DEST " r3");
	assert_string_equal(err, "MAXCALLS the account has as many calls in progress as its "
	                         "limit allows");
	for (int reboot = 0; reboot < 2; reboot++) {
		redisFree(f->c);
		f->c = NULL;
		assert_int_equal(it_kill(&f->d), 0);
		assert_int_equal(it_restart(&f->d, NULL, reboot), 0);
		f->c = it_connect(&f->d);
		assert_non_null(f->c);
		assert_int_equal(it_acct_int(f->c, 40, "maxcalls"), 2);
		assert_int_equal(it_acct_money(f->c, 40, "callcap"), 20000);
		assert_int_equal(it_acct_money(f->c, 40, "dailycap"), 50000);
		assert_int_equal(it_acct_int(f->c, 40, "calls"), 2);
		assert_int_equal(it_acct_money(f->c, 40, "daily_spent"), 40000);
		it_error_of(f->c, err, sizeof(err), "CALL.AUTH 40 " DEST " r3");
		assert_true(strncmp(err, "MAXCALLS", 8) == 0);
	}
	/* One call ends after 60 s: its place and the unused $0.015 come back. */
	it_run_cmd(f->c, "CALL.END 40 r1 60");
	assert_int_equal(it_acct_money(f->c, 40, "daily_spent"), 25000);
	assert_int_equal(it_int_cmd(f->c, "CALL.AUTH 40 %s r4", DEST), 240);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(maxcalls_never_exceeded_under_many_connections, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(grant_reasons_and_caps, setup, teardown),
	    cmocka_unit_test_setup_teardown(bad_limits_are_refused_and_change_nothing, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(limits_and_counts_survive_crash_and_reboot, setup,
	                                    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
