/*
 * test_stops.c - always-allowed destinations and the stop stream, through
 * the real tollgated and a real redis-server.
 *
 * Always-allowed (docs/RATES.md): an emergency call is granted at $0.00, on
 * a suspended and on a closed account, and extended there, while an
 * ordinary call on the same account is refused; a non-zero always-allowed
 * rate takes the balance below zero and is charged as usual.
 *
 * Stopping calls (docs/PROTOCOL.md, "The stop stream"): closing,
 * suspending or draining (a CDR from another switch) an account with calls
 * in progress puts one entry per call on the stream, {acct, callid as
 * sent, reason}, and its next CALL.UPDATE answers BLOCKED.  An emergency
 * call in progress is never stopped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rcmd.h"
#include "redis_harness.h"

#define STREAM  "tollgate:stops"
#define WAIT_MS 5000
/* Plan p: 911 free and always allowed, 999 always allowed at $0.60 a minute, 1 at $0.06. */
#define RATES                                                                                      \
	"plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum,always\n"         \
	"p,911,other,0,0,1,1,0,yes\n"                                                              \
	"p,999,other,0.6,0,60,60,0,yes\n"                                                          \
	"p,1,national,0.06,0,60,60,0,no\n"
#define ACCOUNTS                                                                                   \
	"account,balance,plan,state,threshold,refill,refill_amount,payment\n"                      \
	"1,0,p,active,,off,,off\n"                                                                 \
	"2,5,p,suspended,,off,,off\n"                                                              \
	"3,5,p,closed,,off,,off\n"                                                                 \
	"4,10,p,active,,off,,off\n"                                                                \
	"5,10,p,active,,off,,off\n"                                                                \
	"6,5,p,active,,off,,off\n"                                                                 \
	"7,10,p,active,,off,,off\n"
#define DEST "12125550100"

struct fx {
	char dir[IT_PATH_MAX];
	struct tg_test_redis redis;
	struct it_daemon d;
	redisContext *c;  /* tollgated */
	redisContext *rc; /* the Redis of the stream */
};

static int
setup(void **state)
{
	static struct fx fx;
	char rates[IT_PATH_MAX], accts[IT_PATH_MAX], port[16];

	if (!tg_test_redis_present())
		return 0; /* each test skips */
	memset(&fx, 0, sizeof(fx));
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_file_write(fx.dir, "rates.csv", RATES, rates, sizeof(rates)), 0);
	assert_int_equal(it_file_write(fx.dir, "accounts.csv", ACCOUNTS, accts, sizeof(accts)), 0);
	assert_int_equal(tg_test_redis_start(&fx.redis), 0);
	snprintf(port, sizeof(port), "%u", fx.redis.port);
	const char *const flags[] = {"--redis-host", "127.0.0.1",  "--redis-port", port, "--rates",
	                             rates,          "--accounts", accts,          NULL};
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	fx.c = it_connect(&fx.d);
	fx.rc = tg_test_redis_connect(&fx.redis);
	assert_non_null(fx.c);
	assert_non_null(fx.rc);
	*state = &fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *fx = *state;

	if (fx == NULL)
		return 0;
	redisFree(fx->c);
	redisFree(fx->rc);
	it_stop(&fx->d);
	tg_test_redis_stop(&fx->redis);
	it_dir_remove(fx->dir);
	return 0;
}

static struct fx *
fixture(void **state)
{
	if (*state == NULL)
		skip(); /* no redis-server here */
	return *state;
}

/* The command's reply is an error starting with prefix. */
#define expect_error(c, prefix, ...)                                                               \
	do {                                                                                       \
		char err_[256];                                                                    \
		it_error_of((c), err_, sizeof(err_), __VA_ARGS__);                                 \
		if (strncmp(err_, (prefix), strlen(prefix)) != 0)                                  \
			fail_msg("%s: '%s', expected %s", #__VA_ARGS__, err_, (prefix));           \
	} while (0)

/*
 * Wait until the stream holds an entry for call callid, then check its
 * account and reason, and that it is the only one for that call.
 */
static void
expect_stop(struct fx *fx, const char *acct, const char *callid, const char *reason)
{
	for (unsigned waited = 0;; waited += 20) {
		redisReply *r = redisCommand(fx->rc, "XRANGE %s - +", STREAM);
		unsigned found = 0;
		assert_non_null(r);
		for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
			const redisReply *e = r->element[i];
			if (strcmp(it_entry_field(e, "callid"), callid) != 0)
				continue;
			found++;
			assert_string_equal(it_entry_field(e, "acct"), acct);
			assert_string_equal(it_entry_field(e, "reason"), reason);
		}
		freeReplyObject(r);
		if (found == 1)
			return;
		if (found > 1)
			fail_msg("call %s announced %u times", callid, found);
		if (waited >= WAIT_MS)
			fail_msg("no stop event for call %s of %s within %u ms", callid, acct,
			         WAIT_MS);
		it_sleep_ms(20);
	}
}

/* No entry for callid on the stream. */
static void
expect_no_stop(struct fx *fx, const char *callid)
{
	redisReply *r = redisCommand(fx->rc, "XRANGE %s - +", STREAM);

	assert_non_null(r);
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
		if (strcmp(it_entry_field(r->element[i], "callid"), callid) == 0)
			fail_msg("call %s announced, it should not be", callid);
	freeReplyObject(r);
}

static void
test_emergency_granted_at_zero_suspended_and_closed(void **state)
{
	struct fx *fx = fixture(state);
	redisContext *c = fx->c;

	/* $0.00: 911 granted for max-grant, an ordinary call refused. */
	assert_int_equal(it_int_cmd(c, "CALL.AUTH 1 911 em-1"), 3600);
	expect_error(c, "BLOCKED", "CALL.AUTH 1 " DEST " ord-1");
	/* Suspended and closed: 911 granted, ordinary calls refused. */
	assert_int_equal(it_int_cmd(c, "CALL.AUTH 2 911 em-2"), 3600);
	expect_error(c, "SUSPENDED", "CALL.AUTH 2 " DEST " ord-2");
	assert_int_equal(it_int_cmd(c, "CALL.AUTH 3 911 em-3"), 3600);
	expect_error(c, "CLOSED", "CALL.AUTH 3 " DEST " ord-3");
	/* Extended on a suspended account; a retry of the AUTH has the same grant. */
	assert_int_equal(it_int_cmd(c, "CALL.UPDATE 2 em-2 3590"), 7190);
	assert_int_equal(it_int_cmd(c, "CALL.AUTH 2 911 em-2"), 7190);
	/* Free: nothing charged, nothing held. */
	it_run_cmd(c, "CALL.END 1 em-1 600");
	assert_int_equal(it_acct_money(c, 1, "balance"), 0);
	assert_int_equal(it_acct_money(c, 1, "reserved"), 0);
	assert_int_equal(it_info(c, "call_always"), 3);
}

static void
test_always_allowed_nonzero_rate_goes_below_zero(void **state)
{
	struct fx *fx = fixture(state);
	redisContext *c = fx->c;

	/* 999 at $0.60 a minute, 60/60, at $0.00: granted, and its cost held below zero. */
	assert_int_equal(it_int_cmd(c, "CALL.AUTH 1 999 em-nz"), 3600);
	assert_int_equal(it_acct_money(c, 1, "available"), -36 * 1000000LL);
	/* Charged as usual at its end: 2 minutes, $1.20. */
	redisReply *r = it_cmd(c, "CALL.END 1 em-nz 120");
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_string_equal(r->str, "1.2");
	freeReplyObject(r);
	assert_int_equal(it_acct_money(c, 1, "balance"), -1200000);
	assert_int_equal(it_acct_money(c, 1, "reserved"), 0);
	/* Below zero, ordinary calls stay blocked. */
	expect_error(c, "BLOCKED", "CALL.AUTH 1 " DEST " ord-nz");
}

static void
test_close_mid_call_announced_and_blocked(void **state)
{
	struct fx *fx = fixture(state);
	redisContext *c = fx->c;

	assert_int_equal(it_int_cmd(c, "CALL.AUTH 4 " DEST " a4-1@host.example"), 3600);
	assert_int_equal(it_int_cmd(c, "CALL.AUTH 4 " DEST " a4-2"), 3600);
	assert_int_equal(it_int_cmd(c, "CALL.AUTH 4 911 a4-em"), 3600);
	it_run_cmd(c, "ACCT.SET 4 STATE closed");
	expect_stop(fx, "4", "a4-1@host.example", "closed");
	expect_stop(fx, "4", "a4-2", "closed");
	/* The money would pay for more: the state alone refuses the extension. */
	expect_error(c, "BLOCKED", "CALL.UPDATE 4 a4-1@host.example 3590");
	/* The emergency call goes on. */
	expect_no_stop(fx, "a4-em");
	assert_int_equal(it_int_cmd(c, "CALL.UPDATE 4 a4-em 3590"), 7190);
	/* Ended calls bill as usual on a closed account. */
	redisReply *r = it_cmd(c, "CALL.END 4 a4-2 60");
	assert_string_equal(r->str, "0.06");
	freeReplyObject(r);
}

static void
test_suspend_mid_call_announced_and_blocked(void **state)
{
	struct fx *fx = fixture(state);
	redisContext *c = fx->c;

	assert_int_equal(it_int_cmd(c, "CALL.AUTH 5 " DEST " a5-1"), 3600);
	it_run_cmd(c, "ACCT.SET 5 STATE suspended");
	expect_stop(fx, "5", "a5-1", "suspended");
	expect_error(c, "BLOCKED", "CALL.UPDATE 5 a5-1 3590");
	/* Another ACCT.SET announces nothing twice. */
	it_run_cmd(c, "ACCT.SET 5 STATE suspended");
	it_sleep_ms(200);
	expect_stop(fx, "5", "a5-1", "suspended");
	assert_int_equal(it_info(c, "stops_published") >= 1, 1);
}

static void
test_drained_by_another_switch_announced(void **state)
{
	struct fx *fx = fixture(state);
	redisContext *c = fx->c;

	/* $5: 3600 s at $0.06 hold $3.60, $1.40 left. */
	assert_int_equal(it_int_cmd(c, "CALL.AUTH 6 " DEST " a6-1"), 3600);
	/* A CDR from another switch takes $1.80: nothing left to extend with. */
	redisReply *r = it_cmd(c, "CDR 6 " DEST " 1800 other-switch-6");
	assert_string_equal(r->str, "1.8");
	freeReplyObject(r);
	expect_stop(fx, "6", "a6-1", "balance");
	expect_error(c, "BLOCKED", "CALL.UPDATE 6 a6-1 3590");
	/* A credit revives the call: it extends again. */
	it_run_cmd(c, "ACCT.CREDIT 6 10 pay-6");
	assert_int_equal(it_int_cmd(c, "CALL.UPDATE 6 a6-1 3590") > 3600, 1);
}

static void
test_debit_that_leaves_enough_announces_nothing(void **state)
{
	struct fx *fx = fixture(state);
	redisContext *c = fx->c;

	assert_int_equal(it_int_cmd(c, "CALL.AUTH 7 " DEST " a7-1"), 3600);
	freeReplyObject(it_cmd(c, "CDR 7 " DEST " 60 other-switch-7"));
	it_sleep_ms(300);
	expect_no_stop(fx, "a7-1");
	/* 60/60 billing: the grant ends on the last minute under 3590 + 3600. */
	assert_int_equal(it_int_cmd(c, "CALL.UPDATE 7 a7-1 3590"), 7140);
}

/*
 * A call recovered by a restart has no id kept: closing its account must
 * not put an entry with an empty callid on the stream (it was announced
 * with callid ""), only refuse its next update and count it unnamed.
 */
static void
test_recovered_call_not_announced_with_empty_id(void **state)
{
	struct fx *fx = fixture(state);
	char rates[IT_PATH_MAX], accts[IT_PATH_MAX], port[16];

	assert_int_equal(it_int_cmd(fx->c, "CALL.AUTH 5 " DEST " r5-1"), 3600);
	redisFree(fx->c);
	assert_int_equal(it_kill(&fx->d), 0);
	it_pathf(rates, sizeof(rates), "%s/rates.csv", fx->dir);
	it_pathf(accts, sizeof(accts), "%s/accounts.csv", fx->dir);
	snprintf(port, sizeof(port), "%u", fx->redis.port);
	const char *const flags[] = {"--redis-host", "127.0.0.1",  "--redis-port", port, "--rates",
	                             rates,          "--accounts", accts,          NULL};
	assert_int_equal(it_restart(&fx->d, flags, 0), 0);
	fx->c = it_connect(&fx->d);
	assert_non_null(fx->c);
	assert_int_equal(it_info(fx->c, "calls_in_progress"), 1);
	it_run_cmd(fx->c, "ACCT.SET 5 STATE closed");
	for (unsigned waited = 0; it_info(fx->c, "stops_unnamed") == 0; waited += 20) {
		if (waited >= WAIT_MS)
			fail_msg("the recovered call was not looked at within %u ms", WAIT_MS);
		it_sleep_ms(20);
	}
	redisReply *r = redisCommand(fx->rc, "XRANGE %s - +", STREAM);
	assert_non_null(r);
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
		if (strcmp(it_entry_field(r->element[i], "acct"), "5") == 0)
			fail_msg("recovered call announced with callid '%s'",
			         it_entry_field(r->element[i], "callid"));
	freeReplyObject(r);
	assert_int_equal(it_info(fx->c, "stops_published"), 0);
	expect_error(fx->c, "BLOCKED", "CALL.UPDATE 5 r5-1 60");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_emergency_granted_at_zero_suspended_and_closed,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_always_allowed_nonzero_rate_goes_below_zero, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_close_mid_call_announced_and_blocked, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_suspend_mid_call_announced_and_blocked, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_drained_by_another_switch_announced, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_debit_that_leaves_enough_announces_nothing, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_recovered_call_not_announced_with_empty_id, setup,
	                                    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
