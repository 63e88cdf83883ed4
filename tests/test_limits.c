/*
 * test_limits.c - the real tollgated at its fixed bounds: totals at the top
 * of a signed 64-bit amount, and the plan-name registry filled and freed.
 *
 * Each test starts its own daemon (harness.c) with a rates file it writes,
 * drives it over hiredis exactly as the steps that once broke it did, then
 * restarts it (the segment kept after a clean stop, then rebuilt from the
 * journal after a crash and a reboot) and checks that nothing moved, with
 * tollstat verify (TOLLSTAT) reading the segment and the journal as well.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rcmd.h"

#define HEADER "plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum\n"
/* The largest amount: the top of a signed 64-bit count of micro-units. */
#define TOP "9223372036854.775807"
/* "big": a 1 s call to 5... costs the largest amount (its connect fee). */
#define RATES                                                                                      \
	HEADER "basic,1,national,0.6,0,60,60,0\n"                                                  \
	       "big,5,premium,0,9223372036854.775807,1,1,0\n"
#define RATES_EXTRA RATES "extra,1,national,1.2,0,60,60,0\n"
/* Names in the registry at once (TG_PLANS_MAX, docs/SHM.md). */
#define PLANS_MAX 1024

struct fx {
	char dir[IT_PATH_MAX];
	char rates[IT_PATH_MAX];
	struct it_daemon d;
	redisContext *c;
	const char *flags[8];
};

static void
fx_start(struct fx *f, const char *durability)
{
	memset(f, 0, sizeof(*f));
	assert_int_equal(it_dir_make(f->dir, sizeof(f->dir)), 0);
	assert_int_equal(it_file_write(f->dir, "rates.csv", RATES, f->rates, sizeof(f->rates)), 0);
	const char *flags[] = {"--rates", f->rates, "--durability", durability, NULL};
	memcpy(f->flags, flags, sizeof(flags));
	assert_int_equal(it_start(&f->d, f->dir, f->flags), 0);
	f->c = it_connect(&f->d);
	assert_non_null(f->c);
}

static void
fx_reconnect(struct fx *f)
{
	redisFree(f->c);
	f->c = it_connect(&f->d);
	assert_non_null(f->c);
}

static void
fx_stop(struct fx *f)
{
	redisFree(f->c);
	assert_int_equal(it_stop(&f->d), 0);
	it_dir_remove(f->dir);
}

/* A line "key:value" of INFO, its value. */
static void
info_field(redisContext *c, const char *key, char *out, size_t cap)
{
	redisReply *r = it_cmd(c, "INFO");
	char want[80];
	snprintf(want, sizeof(want), "\n%s:", key);
	const char *p = strstr(r->str, want);
	if (p == NULL)
		fail_msg("INFO has no %s", key);
	p += strlen(want);
	size_t n = strcspn(p, "\r\n");
	snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
	freeReplyObject(r);
}

/* The reply of a command as text: "OK", a bulk string, or an error's text. */
static void
reply_of(redisContext *c, char *out, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	assert_non_null(r);
	snprintf(out, cap, "%s", r->str ? r->str : "");
	freeReplyObject(r);
}

/* tollstat verify of the daemon's segment and journal: its exit status, its output in out. */
static int
verify(const struct fx *f, char *out, size_t cap)
{
	const char *tollstat = getenv("TOLLSTAT");
	char cmd[2 * IT_PATH_MAX];

	assert_non_null(tollstat);
	if (f->d.data[0] != '\0' && access(f->d.data, F_OK) == 0)
		it_pathf(cmd, sizeof(cmd), "'%s' --shm '%s' verify --data-dir '%s' 2>&1", tollstat,
		         f->d.shm, f->d.data);
	else
		it_pathf(cmd, sizeof(cmd), "'%s' --shm '%s' verify 2>&1", tollstat, f->d.shm);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = fread(out, 1, cap - 1, p);
	out[n] = '\0';
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
expect_verify_clean(const struct fx *f)
{
	static char out[65536];
	int rc = verify(f, out, sizeof(out));
	if (rc != 0)
		fail_msg("tollstat verify exited %d:\n%s", rc, out);
	assert_null(strstr(out, "negative"));
}

/* ---- totals at the top ---- */

static void
expect_totals_at_top(struct fx *f)
{
	char v[64];

	it_acct_field(f->c, 1, "usage_premium", v, sizeof(v));
	assert_string_equal(v, TOP);
	it_acct_field(f->c, 1, "balance", v, sizeof(v));
	assert_string_equal(v, "0");
}

/*
 * Regression: a usage category and INFO's money_charged / money_credited
 * were plain 64-bit adds: two charges of the largest amount left
 * usage_premium at -0.000002 and money_charged negative, and tollstat
 * verify reported "usage_premium is negative".  They stop at the top, and
 * stay there through a restart that keeps the segment and one that
 * rebuilds it from the journal.
 */
static void
test_totals_stop_at_the_top(void **state)
{
	struct fx f;
	char v[64];
	(void)state;

	fx_start(&f, "durable");
	it_run_cmd(f.c, "ACCT.SET 1 BALANCE " TOP " PLAN big");
	reply_of(f.c, v, sizeof(v), "CDR 1 5551234 1 top-1");
	assert_string_equal(v, TOP);
	it_run_cmd(f.c, "ACCT.SET 1 BALANCE " TOP);
	reply_of(f.c, v, sizeof(v), "CDR 1 5551234 1 top-2");
	assert_string_equal(v, TOP);
	expect_totals_at_top(&f);

	it_run_cmd(f.c, "ACCT.SET 2 BALANCE -9223372036854.775808 PLAN basic");
	reply_of(f.c, v, sizeof(v), "ACCT.CREDIT 2 " TOP " credit-1");
	assert_string_equal(v, "-0.000001");
	it_run_cmd(f.c, "ACCT.SET 2 BALANCE -9223372036854.775808");
	reply_of(f.c, v, sizeof(v), "ACCT.CREDIT 2 " TOP " credit-2");
	assert_string_equal(v, "-0.000001");

	info_field(f.c, "money_charged", v, sizeof(v));
	assert_string_equal(v, TOP);
	info_field(f.c, "charged_premium", v, sizeof(v));
	assert_string_equal(v, TOP);
	info_field(f.c, "money_credited", v, sizeof(v));
	assert_string_equal(v, TOP);
	expect_verify_clean(&f);

	/* A clean stop keeps the segment; a crash and a reboot rebuild it from the journal. */
	redisFree(f.c);
	f.c = NULL;
	assert_int_equal(it_term(&f.d), 0);
	assert_int_equal(it_restart(&f.d, f.flags, 0), 0);
	f.c = it_connect(&f.d);
	expect_totals_at_top(&f);
	assert_int_equal(it_kill(&f.d), 0);
	assert_int_equal(it_restart(&f.d, f.flags, 1), 0);
	fx_reconnect(&f);
	expect_totals_at_top(&f);
	expect_verify_clean(&f);
	fx_stop(&f);
}

/* ---- the plan-name registry ---- */

/* Read n pipelined replies into replies (their text), or with replies NULL, fail on an error. */
static void
read_replies(redisContext *c, unsigned n, char (*replies)[160])
{
	for (unsigned i = 0; i < n; i++) {
		redisReply *r = NULL;
		assert_int_equal(redisGetReply(c, (void **)&r), REDIS_OK);
		if (replies != NULL)
			snprintf(replies[i], 160, "%s", r->str ? r->str : "");
		else if (r->type == REDIS_REPLY_ERROR)
			fail_msg("reply %u of %u: %s", i, n, r->str);
		freeReplyObject(r);
	}
}

/*
 * Regression, as first seen: 1030 ACCT.SET 9999 PLAN junkN filled the
 * registry for good (one account, 1029 names it no longer holds), and then
 * a reload that added a plan failed with "invalid plan name ... (too many
 * plans)".  Now the unused names are reclaimed when it fills: every
 * ACCT.SET and the reload go through, in every durability mode, and a
 * journal that named more plans than the registry holds replays.
 */
static void
one_account_cycles_names(const char *durability)
{
	struct fx f;
	char v[160];

	fx_start(&f, durability);
	for (unsigned i = 0; i < 1030; i++)
		redisAppendCommand(f.c, "ACCT.SET 9999 PLAN junk%u", i);
	read_replies(f.c, 1030, NULL);
	assert_int_equal(it_log_has(&f.d, "names no account and no loaded plan uses reclaimed"), 1);
	it_acct_field(f.c, 9999, "plan", v, sizeof(v));
	assert_string_equal(v, "junk1029");
	assert_int_equal(it_file_write(f.dir, "rates.csv", RATES_EXTRA, f.rates, sizeof(f.rates)),
	                 0);
	reply_of(f.c, v, sizeof(v), "RATES.RELOAD");
	assert_string_equal(v, "OK");
	it_run_cmd(f.c, "ACCT.SET 9999 BALANCE 10 PLAN extra");
	reply_of(f.c, v, sizeof(v), "CDR 9999 15551234 60 after-reload");
	assert_string_equal(v, "1.2");
	if (strcmp(durability, "off") != 0) {
		assert_int_equal(it_kill(&f.d), 0);
		assert_int_equal(it_restart(&f.d, f.flags, 1), 0);
		fx_reconnect(&f);
		it_acct_field(f.c, 9999, "plan", v, sizeof(v));
		assert_string_equal(v, "extra");
		it_acct_field(f.c, 9999, "balance", v, sizeof(v));
		assert_string_equal(v, "8.8");
		expect_verify_clean(&f);
	}
	fx_stop(&f);
}

static void
test_plan_names_one_account_cycles_durable(void **state)
{
	(void)state;
	one_account_cycles_names("durable");
}

static void
test_plan_names_one_account_cycles_off(void **state)
{
	(void)state;
	one_account_cycles_names("off");
}

/* Accounts 1000.. hold junk<i> except the first `moved`, moved to basic; 5000 fresh; 5001 extra. */
static void
expect_plans(struct fx *f, unsigned held, unsigned moved)
{
	char v[160], want[40];

	for (unsigned i = 0; i < held; i++) {
		it_acct_field(f->c, 1000 + i, "plan", v, sizeof(v));
		if (i < moved)
			snprintf(want, sizeof(want), "basic");
		else
			snprintf(want, sizeof(want), "junk%u", i);
		if (strcmp(v, want) != 0)
			fail_msg("account %u: plan '%s', expected '%s'", 1000 + i, v, want);
	}
	it_acct_field(f->c, 5000, "plan", v, sizeof(v));
	assert_string_equal(v, "fresh");
	it_acct_field(f->c, 5001, "plan", v, sizeof(v));
	assert_string_equal(v, "extra");
}

/*
 * Past the bound: 1031 accounts each on a plan name of its own fill the
 * registry with names in use (basic and big take two slots), and the rest
 * are refused with FULL and a sentence that says so, as is a reload that
 * adds a plan.  Once 500 of those accounts move to basic, the next new name
 * (a second later) reclaims theirs: new names and the reload go through,
 * and every account keeps its plan across a clean restart and a rebuild
 * from the journal.
 */
static void
test_plan_registry_full_then_reclaimed(void **state)
{
	static char replies[1031][160];
	const unsigned held = PLANS_MAX - 2, moved = 500;
	struct fx f;
	char v[160];
	(void)state;

	fx_start(&f, "durable");
	for (unsigned i = 0; i < 1031; i++)
		redisAppendCommand(f.c, "ACCT.SET %u PLAN junk%u", 1000 + i, i);
	read_replies(f.c, 1031, replies);
	for (unsigned i = 0; i < 1031; i++) {
		if (i < held) {
			if (strcmp(replies[i], "OK") != 0)
				fail_msg("ACCT.SET %u PLAN junk%u: %s", 1000 + i, i, replies[i]);
		} else if (strncmp(replies[i],
		                   "FULL plan-name registry full: all 1024 names are used",
		                   53) != 0) {
			fail_msg("ACCT.SET %u PLAN junk%u: '%s', expected FULL", 1000 + i, i,
			         replies[i]);
		}
	}
	assert_int_equal(it_file_write(f.dir, "rates.csv", RATES_EXTRA, f.rates, sizeof(f.rates)),
	                 0);
	reply_of(f.c, v, sizeof(v), "RATES.RELOAD");
	if (strncmp(v, "FULL ", 5) != 0 || strstr(v, "plan-name registry full") == NULL)
		fail_msg("RATES.RELOAD on a full registry: '%s'", v);
	/* A refused ACCT.SET changed nothing: not even the account was made. */
	reply_of(f.c, v, sizeof(v), "ACCT.GET %u", 1000 + held);
	assert_int_equal(strncmp(v, "NOACCOUNT", 9), 0);

	/* Free 500 names: their accounts move to basic. */
	for (unsigned i = 0; i < moved; i++)
		redisAppendCommand(f.c, "ACCT.SET %u PLAN basic", 1000 + i);
	read_replies(f.c, moved, NULL);
	it_sleep_ms(1100); /* reclaiming runs at most once a second */
	reply_of(f.c, v, sizeof(v), "ACCT.SET 5000 PLAN fresh");
	assert_string_equal(v, "OK");
	reply_of(f.c, v, sizeof(v), "RATES.RELOAD");
	assert_string_equal(v, "OK");
	it_run_cmd(f.c, "ACCT.SET 5001 BALANCE 10 PLAN extra");
	reply_of(f.c, v, sizeof(v), "CDR 5001 15551234 60 extra-1");
	assert_string_equal(v, "1.2");
	expect_plans(&f, held, moved);
	expect_verify_clean(&f);

	redisFree(f.c);
	f.c = NULL;
	assert_int_equal(it_term(&f.d), 0);
	assert_int_equal(it_restart(&f.d, f.flags, 0), 0);
	f.c = it_connect(&f.d);
	expect_plans(&f, held, moved);
	assert_int_equal(it_kill(&f.d), 0);
	assert_int_equal(it_restart(&f.d, f.flags, 1), 0);
	fx_reconnect(&f);
	expect_plans(&f, held, moved);
	expect_verify_clean(&f);
	fx_stop(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_totals_stop_at_the_top),
	    cmocka_unit_test(test_plan_names_one_account_cycles_durable),
	    cmocka_unit_test(test_plan_names_one_account_cycles_off),
	    cmocka_unit_test(test_plan_registry_full_then_reclaimed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
