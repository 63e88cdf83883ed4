/*
 * test_alarms.c - the fraud alarm stream (docs/FRAUD.md, "The alarm
 * stream") through the real tollgated and a real redis-server.
 *
 * An account that reaches a cap (a CALL.AUTH refused with MAXCALLS, a grant
 * cut to its CALLCAP, a grant cut to what is left of its DAILYCAP and then
 * refused with DAILYCAP) puts one entry {acct, kind, limit, time} on the
 * stream per account, kind and UTC day, however many times it hits the cap;
 * an account that reaches none puts nothing.  Redis down when the cap is
 * reached: the alarm is kept and added once Redis is back.  alarm-stream
 * none: nothing is added.
 */
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
#include "redis_harness.h"

#define STREAM  "tollgate:alarms"
#define WAIT_MS 5000
/* Plan p: $0.06 a minute, 60/60 billing. */
#define RATES                                                                                      \
	"plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum\n"                \
	"p,1,national,0.06,0,60,60,0\n"
#define ACCOUNTS                                                                                   \
	"account,balance,plan,state,threshold,refill,refill_amount,payment\n"                      \
	"1,100,p,active,,off,,off\n"                                                               \
	"2,100,p,active,,off,,off\n"                                                               \
	"3,100,p,active,,off,,off\n"                                                               \
	"4,100,p,active,,off,,off\n"
#define DEST "12125550100"

struct fx {
	char dir[IT_PATH_MAX];
	struct tg_test_redis redis;
	struct it_daemon d;
	redisContext *c;  /* tollgated */
	redisContext *rc; /* the Redis of the stream */
};

static int
start(void **state, const char *alarm_stream)
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
	const char *const flags[] = {
	    "--redis-host", "127.0.0.1", "--redis-port",   port,         "--rates", rates,
	    "--accounts",   accts,       "--alarm-stream", alarm_stream, NULL};
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	fx.c = it_connect(&fx.d);
	fx.rc = tg_test_redis_connect(&fx.redis);
	assert_non_null(fx.c);
	assert_non_null(fx.rc);
	*state = &fx;
	return 0;
}

static int
setup(void **state)
{
	return start(state, STREAM);
}

static int
setup_off(void **state)
{
	return start(state, "none");
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

/* Entries of acct and kind on the stream; the last one's limit and time copied out. */
static unsigned
alarms_of(struct fx *fx, const char *acct, const char *kind, char *limit, char *when)
{
	redisReply *r = redisCommand(fx->rc, "XRANGE %s - +", STREAM);
	unsigned found = 0;

	assert_non_null(r);
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
		const redisReply *e = r->element[i];
		if (strcmp(it_entry_field(e, "acct"), acct) != 0 ||
		    strcmp(it_entry_field(e, "kind"), kind) != 0)
			continue;
		found++;
		snprintf(limit, 32, "%s", it_entry_field(e, "limit"));
		snprintf(when, 32, "%s", it_entry_field(e, "time"));
	}
	freeReplyObject(r);
	return found;
}

/* Entries on the whole stream. */
static long long
stream_len(struct fx *fx)
{
	return it_int_cmd(fx->rc, "XLEN %s", STREAM);
}

/*
 * Wait for the one alarm of acct and kind, check its limit and that its
 * time is now (UTC, to the second within the wait), and that it stays one.
 */
static void
expect_alarm(struct fx *fx, const char *acct, const char *kind, const char *limit)
{
	char got_limit[32] = "", when[32] = "", lo[32], hi[32];
	time_t t0 = time(NULL) - 1;
	struct tm tm;

	for (unsigned waited = 0;; waited += 20) {
		unsigned n = alarms_of(fx, acct, kind, got_limit, when);
		if (n > 1)
			fail_msg("account %s: %u %s alarms, expected one", acct, n, kind);
		if (n == 1)
			break;
		if (waited >= WAIT_MS)
			fail_msg("no %s alarm for account %s within %u ms", kind, acct, WAIT_MS);
		it_sleep_ms(20);
	}
	assert_string_equal(got_limit, limit);
	/* The worker stamped it when the cap was hit: at most a few seconds ago. */
	gmtime_r(&(time_t){t0 - 10}, &tm);
	strftime(lo, sizeof(lo), "%Y-%m-%dT%H:%M:%SZ", &tm);
	time_t t1 = time(NULL);
	gmtime_r(&t1, &tm);
	strftime(hi, sizeof(hi), "%Y-%m-%dT%H:%M:%SZ", &tm);
	assert_int_equal(strlen(when), strlen(hi));
	if (strcmp(when, lo) < 0 || strcmp(when, hi) > 0)
		fail_msg("alarm time %s not between %s and %s", when, lo, hi);
}

static void
test_maxcalls_refusals_raise_one_alarm(void **state)
{
	struct fx *fx = fixture(state);

	it_run_cmd(fx->c, "ACCT.SET 1 MAXCALLS 2");
	assert_int_equal(it_int_cmd(fx->c, "CALL.AUTH 1 " DEST " m1"), 3600);
	assert_int_equal(it_int_cmd(fx->c, "CALL.AUTH 1 " DEST " m2"), 3600);
	for (int i = 3; i < 8; i++)
		expect_error(fx->c, "MAXCALLS", "CALL.AUTH 1 " DEST " m%d", i);
	expect_alarm(fx, "1", "maxcalls", "2");
	/* A place freed and taken again, then refused again: still the one alarm today. */
	it_run_cmd(fx->c, "CALL.END 1 m1 30");
	assert_int_equal(it_int_cmd(fx->c, "CALL.AUTH 1 " DEST " m9"), 3600);
	expect_error(fx->c, "MAXCALLS", "CALL.AUTH 1 " DEST " m10");
	it_sleep_ms(100);
	expect_alarm(fx, "1", "maxcalls", "2");
	assert_int_equal(stream_len(fx), 1);
	assert_int_equal(it_info(fx->c, "alarms_published"), 1);
	assert_int_equal(it_info(fx->c, "alarms_dropped"), 0);
}

static void
test_callcap_cut_raises_one_alarm(void **state)
{
	struct fx *fx = fixture(state);

	/* $0.30 a call at $0.06 a minute: 300 s, not the 3600 s of max-grant. */
	it_run_cmd(fx->c, "ACCT.SET 2 CALLCAP 0.3");
	assert_int_equal(it_int_cmd(fx->c, "CALL.AUTH 2 " DEST " c1"), 300);
	assert_int_equal(it_int_cmd(fx->c, "CALL.AUTH 2 " DEST " c2"), 300);
	/* The cap pays for nothing more: BLOCKED at the update, no second alarm. */
	expect_error(fx->c, "BLOCKED", "CALL.UPDATE 2 c1 290");
	expect_alarm(fx, "2", "callcap", "0.3");
	it_sleep_ms(100);
	assert_int_equal(stream_len(fx), 1);
}

static void
test_dailycap_cut_then_refused_raises_one_alarm(void **state)
{
	struct fx *fx = fixture(state);

	/* $0.50 a day: the first call 3600 s ($3.60) would pass it, cut to 480 s ($0.48). */
	it_run_cmd(fx->c, "ACCT.SET 3 DAILYCAP 0.5");
	assert_int_equal(it_int_cmd(fx->c, "CALL.AUTH 3 " DEST " d1"), 480);
	expect_error(fx->c, "DAILYCAP", "CALL.AUTH 3 " DEST " d2");
	expect_error(fx->c, "DAILYCAP", "CALL.AUTH 3 " DEST " d3");
	expect_alarm(fx, "3", "dailycap", "0.5");
	/* Another account's cap is its own alarm; one without limits raises none. */
	it_run_cmd(fx->c, "ACCT.SET 1 DAILYCAP 0.06");
	assert_int_equal(it_int_cmd(fx->c, "CALL.AUTH 1 " DEST " o1"), 60);
	expect_alarm(fx, "1", "dailycap", "0.06");
	assert_int_equal(it_int_cmd(fx->c, "CALL.AUTH 4 " DEST " n1"), 3600);
	it_sleep_ms(100);
	assert_int_equal(stream_len(fx), 2);
	assert_int_equal(it_info(fx->c, "alarms_published"), 2);
}

static void
test_alarm_kept_while_redis_down(void **state)
{
	struct fx *fx = fixture(state);

	redisFree(fx->rc);
	fx->rc = NULL;
	tg_test_redis_stop(&fx->redis);
	it_run_cmd(fx->c, "ACCT.SET 2 MAXCALLS 1");
	assert_int_equal(it_int_cmd(fx->c, "CALL.AUTH 2 " DEST " r1"), 3600);
	expect_error(fx->c, "MAXCALLS", "CALL.AUTH 2 " DEST " r2");
	it_sleep_ms(300); /* the publisher tries, fails, backs off */
	assert_int_equal(tg_test_redis_start(&fx->redis), 0);
	fx->rc = tg_test_redis_connect(&fx->redis);
	assert_non_null(fx->rc);
	expect_alarm(fx, "2", "maxcalls", "1");
	expect_error(fx->c, "MAXCALLS", "CALL.AUTH 2 " DEST " r3");
	it_sleep_ms(100);
	assert_int_equal(stream_len(fx), 1);
}

static void
test_alarm_stream_none_adds_nothing(void **state)
{
	struct fx *fx = fixture(state);

	it_run_cmd(fx->c, "ACCT.SET 1 MAXCALLS 1");
	assert_int_equal(it_int_cmd(fx->c, "CALL.AUTH 1 " DEST " x1"), 3600);
	expect_error(fx->c, "MAXCALLS", "CALL.AUTH 1 " DEST " x2");
	it_sleep_ms(200);
	assert_int_equal(stream_len(fx), 0);
	assert_int_equal(it_info(fx->c, "alarms_published"), 0);
	assert_int_equal(it_info(fx->c, "call_maxcalls"), 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_maxcalls_refusals_raise_one_alarm, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_callcap_cut_raises_one_alarm, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dailycap_cut_then_refused_raises_one_alarm, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_alarm_kept_while_redis_down, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_alarm_stream_none_adds_nothing, setup_off,
	                                    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
