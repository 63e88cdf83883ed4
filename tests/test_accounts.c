/*
 * test_accounts.c - the accounts CSV loader: a good file, every kind of bad
 * row (and that nothing loads then), and live accounts left alone.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tg_accounts.h"
#include "tg_rate.h"

static char shm[64], path[64];
static struct tg_table table;

static int
setup(void **state)
{
	char err[256];
	(void)state;
	snprintf(shm, sizeof(shm), "/tg-test-accounts-%d", (int)getpid());
	snprintf(path, sizeof(path), "/tmp/tg-test-accounts-%d.csv", (int)getpid());
	tg_table_unlink(shm);
	struct tg_table_cfg cfg = {.name = shm, .capacity = 16, .mode = 0600};
	return tg_table_open(&table, &cfg, err, sizeof(err)) == 0 ? 0 : -1;
}

static int
teardown(void **state)
{
	(void)state;
	tg_table_close(&table);
	tg_table_unlink(shm);
	unlink(path);
	return 0;
}

static int
load(const char *text, struct tg_diag *d, size_t *created, size_t *skipped)
{
	FILE *f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	tg_diag_init(d);
	return tg_accounts_load(path, &table, d, created, skipped);
}

#define HDR "account,balance,plan,state,threshold,refill,refill_amount,payment\n"

static void
test_good_file(void **state)
{
	struct tg_diag d;
	size_t c, s;
	struct tg_acct_view v;
	(void)state;
	assert_int_equal(load("\xef\xbb\xbf# demo\r\n" HDR "1,25,basic,active,10,add,50,on\r\n"
	                      "0002,-3.5,gold,suspended,,off,,off\n\n"
	                      "3,0,basic,,,,,\n",
	                      &d, &c, &s),
	                 0);
	assert_int_equal(c, 3);
	assert_int_equal(s, 0);
	tg_acct_read(tg_table_find(&table, 1), &v);
	assert_int_equal(v.balance, 25000000);
	assert_int_equal(v.threshold, 10000000);
	assert_int_equal(v.refill_mode, TG_REFILL_ADD);
	assert_int_equal(v.refill_amount, 50000000);
	assert_true(v.flags & TG_ACCT_PAYMENT);
	assert_false(v.refill_inflight);
	assert_string_equal(tg_plan_registry_name(&table.plans, v.plan), "basic");
	tg_acct_read(tg_table_find(&table, 2), &v);
	assert_int_equal(v.balance, -3500000);
	assert_int_equal(v.state, TG_STATE_SUSPENDED);
	assert_string_equal(tg_plan_registry_name(&table.plans, v.plan), "gold");

	/* Loaded again after spending: live balances are kept. */
	struct tg_move m;
	tg_acct_debit(tg_table_find(&table, 1), 5000000, &m);
	assert_int_equal(load(HDR "1,25,basic,active,10,add,50,on\n4,1,basic,,,,,\n", &d, &c, &s),
	                 0);
	assert_int_equal(c, 1);
	assert_int_equal(s, 1);
	tg_acct_read(tg_table_find(&table, 1), &v);
	assert_int_equal(v.balance, 20000000);
}

#define HDR2 "account,balance,plan,state,threshold,refill,refill_amount,payment,kind,credit_limit\n"

/* Version 2 adds kind and credit_limit; a version 2 row must have both columns. */
static void
test_version_2_postpaid(void **state)
{
	struct tg_diag d;
	size_t c, s;
	struct tg_acct_view v;
	(void)state;
	assert_int_equal(load(HDR2 "50,0,basic,,,,,,postpaid,250\n"
	                           "51,5,basic,,2,add,10,on,prepaid,\n"
	                           "52,5,basic,,,,,,,\n",
	                      &d, &c, &s),
	                 0);
	assert_int_equal(c, 3);
	tg_acct_read(tg_table_find(&table, 50), &v);
	assert_true(v.flags & TG_ACCT_POSTPAID);
	assert_int_equal(v.credit_limit, 250000000);
	assert_int_equal(v.available, 250000000);
	assert_int_equal(v.threshold, 0);
	tg_acct_read(tg_table_find(&table, 51), &v);
	assert_false(v.flags & TG_ACCT_POSTPAID);
	assert_int_equal(v.threshold, 2000000);
	assert_int_equal(v.credit_limit, 0);
	tg_acct_read(tg_table_find(&table, 52), &v);
	assert_false(v.flags & TG_ACCT_POSTPAID);

	static const struct {
		const char *row, *reason;
	} cases[] = {
	    {"60,1,basic,,,,,", "expected 10 fields, found 8"},
	    {"60,1,basic,,,,,,monthly,", "kind 'monthly': prepaid or postpaid"},
	    {"60,1,basic,,,,,,prepaid,5", "credit_limit is a postpaid account's"},
	    {"60,1,basic,,,,,,postpaid,-5", "credit limit must be zero or more"},
	    {"60,1,basic,,,,,,postpaid,abc", "credit_limit 'abc'"},
	    {"60,1,basic,,3,,,,postpaid,5", "no refill threshold"},
	    {"60,1,basic,,,add,10,on,postpaid,5", "no auto-refill"},
	};
	char text[512];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text), HDR2 "61,1,basic,,,,,,,\n%s\n", cases[i].row);
		assert_int_equal(load(text, &d, &c, &s), -EINVAL);
		assert_int_equal(d.count, 1);
		assert_non_null(strstr(d.msg[0].reason, cases[i].reason));
		assert_null(tg_table_find(&table, 61));
	}
	/* A header of no version names the newest. */
	assert_int_equal(load("account,balance,plan,state,threshold,refill,refill_amount,payment,"
	                      "kind\n",
	                      &d, &c, &s),
	                 -EINVAL);
	assert_non_null(strstr(d.msg[0].reason, "bad header, expected account,"));
	assert_non_null(strstr(d.msg[0].reason, ",payment,kind,credit_limit"));
}

#define HDR3                                                                                       \
	"account,balance,plan,state,threshold,refill,refill_amount,payment,kind,credit_limit,"     \
	"maxcalls,call_cap,daily_cap,low\n"

/*
 * Version 3 adds the fraud limits (docs/FRAUD.md): maxcalls, call_cap,
 * daily_cap, low, each empty or 0 for none.  Every bad value is refused with
 * its reason, and then nothing loads.
 */
static void
test_version_3_limits(void **state)
{
	struct tg_diag d;
	size_t c, s;
	struct tg_limits_set ls;
	uint64_t used;
	(void)state;

	assert_int_equal(load(HDR3 "70,10,basic,,,,,,prepaid,,3,0.5,20,1.25\n"
	                           "71,10,basic,,,,,,,,,,,\n",
	                      &d, &c, &s),
	                 0);
	assert_int_equal(c, 2);
	struct tg_acct *a = tg_table_find(&table, 70);
	assert_non_null(tg_acct_limits(&table, a));
	tg_acct_read_limits(&table, a, &ls, &used);
	assert_int_equal(ls.max_calls, 3);
	assert_int_equal(ls.call_cap, 500000);
	assert_int_equal(ls.daily_cap, 20000000);
	assert_int_equal(ls.low, 1250000);
	/* Empty columns: no limits at all, the record is never read. */
	a = tg_table_find(&table, 71);
	assert_null(tg_acct_limits(&table, a));
	tg_acct_read_limits(&table, a, &ls, &used);
	assert_int_equal(ls.max_calls + ls.call_cap + ls.daily_cap + ls.low, 0);

	static const struct {
		const char *row, *reason;
	} cases[] = {
	    {"72,1,basic,,,,,,,", "expected 14 fields, found 10"},
	    {"72,1,basic,,,,,,,,1,,", "expected 14 fields, found 13"},
	    {"72,1,basic,,,,,,,,-1,,,", "maxcalls '-1': 0 to 1000000 calls"},
	    {"72,1,basic,,,,,,,,abc,,,", "maxcalls 'abc'"},
	    {"72,1,basic,,,,,,,,1000001,,,", "maxcalls '1000001'"},
	    {"72,1,basic,,,,,,,,99999999999999999999,,,", "maxcalls '99999999999999999999'"},
	    {"72,1,basic,,,,,,,,2.5,,,", "maxcalls '2.5'"},
	    {"72,1,basic,,,,,,,,,-0.5,,", "call_cap '-0.5': 0 (none) or more"},
	    {"72,1,basic,,,,,,,,,1.0000001,,", "call_cap '1.0000001': not a decimal amount"},
	    {"72,1,basic,,,,,,,,,x,,", "call_cap 'x'"},
	    {"72,1,basic,,,,,,,,,,-1,", "daily_cap '-1': 0 (none) or more"},
	    {"72,1,basic,,,,,,,,,,1e3,", "daily_cap '1e3'"},
	    {"72,1,basic,,,,,,,,,,281474976.710656,", "daily_cap '281474976.710656': at most"},
	    {"72,1,basic,,,,,,,,,,99999999999999,", "daily_cap '99999999999999': out of range"},
	    {"72,1,basic,,,,,,,,,,,-2", "low '-2': 0 (none) or more"},
	    {"72,1,basic,,,,,,,,,,,0.1234567", "low '0.1234567'"},
	};
	char text[512];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text), HDR3 "73,1,basic,,,,,,,,2,1,5,1\n%s\n", cases[i].row);
		assert_int_equal(load(text, &d, &c, &s), -EINVAL);
		assert_int_equal(d.count, 1);
		assert_int_equal(d.msg[0].line, 3);
		if (strstr(d.msg[0].reason, cases[i].reason) == NULL)
			fail_msg("row %s: '%s', expected '%s'", cases[i].row, d.msg[0].reason,
			         cases[i].reason);
		assert_null(tg_table_find(&table, 73));
	}
	/* The largest values pass. */
	assert_int_equal(load(HDR3 "74,1,basic,,,,,,,,1000000,0,281474976.710655,0\n", &d, &c, &s),
	                 0);
	tg_acct_read_limits(&table, tg_table_find(&table, 74), &ls, &used);
	assert_int_equal(ls.max_calls, 1000000);
	assert_int_equal(ls.daily_cap, 281474976710655);
}

/* Leading zeros are zeros, however many: a 20-character cap once refused these rows. */
static void
test_leading_zeros_past_20_characters(void **state)
{
	struct tg_diag d;
	size_t c, s;
	struct tg_acct_view v;
	(void)state;
	assert_int_equal(load(HDR "0000000000000000000000000000000000000042,7,basic,,,,,\n"
	                          "000000018446744073709551614,1,basic,,,,,\n",
	                      &d, &c, &s),
	                 0);
	assert_int_equal(c, 2);
	tg_acct_read(tg_table_find(&table, 42), &v);
	assert_int_equal(v.balance, 7000000);
	assert_non_null(tg_table_find(&table, UINT64_MAX - 1));
}

static void
test_bad_rows_load_nothing(void **state)
{
	static const struct {
		const char *row, *reason;
	} cases[] = {
	    {"10,1,basic,active,,off,,off,extra", "expected 8 fields"},
	    {"x1,1,basic,,,,,", "not an account id"},
	    {"18446744073709551615,1,basic,,,,,", "not an account id"},
	    {"0000018446744073709551615,1,basic,,,,,", "not an account id"},
	    {"00000100000000000000000000,1,basic,,,,,", "not an account id"},
	    {"10,1.0000001,basic,,,,,", "balance"},
	    {"10,1e3,basic,,,,,", "balance"},
	    {"10,1,,,,,,", "plan"},
	    {"10,1,bad plan,,,,,", "plan"},
	    {"10,1,basic,frozen,,,,", "state"},
	    {"10,1,basic,,,weekly,,", "refill"},
	    {"10,1,basic,,5,add,10,off", "payment method"},
	    {"10,1,basic,,5,add,,on", "refill amount must be positive"},
	    /* A top-up level at or below the threshold would charge nothing, for good. */
	    {"10,25,basic,,20,topup,10,on", "top-up level 10 is at or below the threshold 20"},
	    {"10,25,basic,,20,topup,20,on", "at or below the threshold"},
	    /* Cards are charged whole cents (USD, the default currency). */
	    {"10,25,basic,,20,add,12.345678,on", "whole minor units"},
	    {"10,25,basic,,20,topup,50.001,on", "whole minor units"},
	    {"10,1,basic,,,,,maybe", "payment"},
	};
	struct tg_diag d;
	size_t c, s, before = table.hdr->count;
	char text[512];
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* A good row first: it must not be created either. */
		snprintf(text, sizeof(text), HDR "20,1,basic,,,,,\n%s\n", cases[i].row);
		assert_int_equal(load(text, &d, &c, &s), -EINVAL);
		assert_int_equal(d.count, 1);
		assert_int_equal(d.msg[0].line, 3);
		assert_non_null(strstr(d.msg[0].reason, cases[i].reason));
		assert_null(tg_table_find(&table, 20));
		assert_int_equal(table.hdr->count, before);
	}
	assert_int_equal(
	    load(HDR "30,1,basic,,,,,\n31,1,basic,,,,,\n30,2,basic,,,,,\n", &d, &c, &s), -EINVAL);
	assert_non_null(strstr(d.msg[0].reason, "already defined at line 2"));
	assert_int_equal(load("account,balance\n1,2\n", &d, &c, &s), -EINVAL);
	assert_non_null(strstr(d.msg[0].reason, "bad header"));
	assert_int_equal(load("", &d, &c, &s), -EINVAL);
	assert_non_null(strstr(d.msg[0].reason, "no header"));
	unlink(path);
	tg_diag_init(&d);
	assert_int_equal(tg_accounts_load(path, &table, &d, &c, &s), -ENOENT);
	assert_non_null(strstr(d.msg[0].reason, "cannot read"));
	/* More than the table holds: refused before anything is created. */
	size_t len = (size_t)snprintf(text, sizeof(text), HDR);
	for (uint64_t k = 0; k <= table.hdr->capacity - before; k++)
		len += (size_t)snprintf(text + len, sizeof(text) - len, "%llu,1,p,,,,,\n",
		                        (unsigned long long)(40 + k));
	assert_true(len < sizeof(text));
	assert_int_equal(load(text, &d, &c, &s), -ENOSPC);
	assert_null(tg_table_find(&table, 40));
	assert_int_equal(table.hdr->count, before);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_file),
	    cmocka_unit_test(test_version_2_postpaid),
	    cmocka_unit_test(test_bad_rows_load_nothing),
	    cmocka_unit_test(test_leading_zeros_past_20_characters),
	    cmocka_unit_test(test_version_3_limits),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
