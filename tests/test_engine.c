/*
 * test_engine.c - the contract's operations in process: grants, extensions,
 * ends, CDRs, credits, exactly-once, expiry, refill ids.  Expected amounts
 * are worked out by hand in micro-units.
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

#include "tg_engine.h"

#define U ((tg_money_t)TG_MONEY_SCALE)

static char shm[64], rates_path[128];
static struct tg_table table;
static struct tg_engine engine;
static struct tg_worker *w;

/* Plan "p": 0.60/min in whole minutes (1 s = 10000 micro-units, a minute 600000). */
static const char rates_csv[] =
    "plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum\n"
    "p,1,national,0.6,0,60,60,0\n"
    "p,44,international,1.2,0.1,30,6,0\n"
    "p,800,tollfree,0,0,1,1,0\n"
    "p,5,premium,0,9223372036854.775807,1,1,0\n";

static struct tg_acct *
account(uint64_t id, tg_money_t balance)
{
	struct tg_acct *a;
	struct tg_move m;
	bool created;
	assert_int_equal(tg_table_insert(&table, id, &a, &created), TG_OK);
	tg_acct_set_balance(a, balance, &m);
	struct tg_acct_settings s = {
	    .plan = (uint32_t)tg_plan_registry_id(&table.plans, "p", 1, false)};
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	return a;
}

static struct tg_acct_view
view(uint64_t id)
{
	struct tg_acct_view v;
	tg_acct_read(tg_table_find(&table, id), &v);
	return v;
}

static struct tg_id
ID(const char *s) {
	return (struct tg_id){s, strlen(s)};
}

static int
setup(void **state)
{
	char err[256];
	struct tg_diag diag;
	(void)state;

	snprintf(shm, sizeof(shm), "/tg-test-engine-%d", (int)getpid());
	tg_table_unlink(shm);
	struct tg_table_cfg tcfg = {.name = shm, .capacity = 100, .mode = 0600};
	if (tg_table_open(&table, &tcfg, err, sizeof(err)) != 0)
		return -1;
	snprintf(rates_path, sizeof(rates_path), "/tmp/tg-test-engine-%d.csv", (int)getpid());
	FILE *f = fopen(rates_path, "w");
	fputs(rates_csv, f);
	fclose(f);
	struct tg_engine_cfg ecfg = {.max_grant = 3600,
	                             .call_grace = 120,
	                             .calls_max = 64,
	                             .ids_max = 64,
	                             .ids_window = 3600,
	                             .workers = 1};
	if (tg_engine_init(&engine, &table, &ecfg) != 0)
		return -1;
	tg_diag_init(&diag);
	if (tg_rates_reload(&engine.rates, rates_path, &diag) != 0)
		return -1;
	w = tg_engine_worker(&engine, 0);
	tg_worker_enter(w);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	tg_worker_exit(w);
	tg_engine_fini(&engine);
	tg_table_close(&table);
	tg_table_unlink(shm);
	unlink(rates_path);
	return 0;
}

static void
test_grant_reserve_end(void **state)
{
	uint32_t g;
	tg_money_t c;
	(void)state;

	account(1, 10 * U);
	/* 10.00 at 0.60 a minute: 16 whole minutes. */
	assert_int_equal(tg_call_auth(w, 1, "15551234567", 11, ID("a1"), &g), TG_OK);
	assert_int_equal(g, 960);
	assert_int_equal(view(1).reserved, 9600000);
	assert_int_equal(view(1).available, 400000);
	assert_int_equal(view(1).calls, 1);
	/* 0.40 left pays for no minute. */
	assert_int_equal(tg_call_auth(w, 1, "15551234567", 11, ID("a2"), &g), TG_BLOCKED);
	/* The same call again: the same grant, nothing more reserved. */
	assert_int_equal(tg_call_auth(w, 1, "15551234567", 11, ID("a1"), &g), TG_OK);
	assert_int_equal(g, 960);
	assert_int_equal(view(1).reserved, 9600000);
	/* Another account with this call id: conflict. */
	account(2, 10 * U);
	assert_int_equal(tg_call_auth(w, 2, "15551234567", 11, ID("a1"), &g), TG_CONFLICT);

	/* 61 s bill two minutes: 1.20; the rest comes back. */
	assert_int_equal(tg_call_end(w, 1, ID("a1"), 61, &c), TG_OK);
	assert_int_equal(c, 1200000);
	assert_int_equal(view(1).balance, 8800000);
	assert_int_equal(view(1).reserved, 0);
	assert_int_equal(view(1).calls, 0);
	/* Replay: same reply, nothing charged.  Other data: conflict.  Unknown: NOCALL. */
	assert_int_equal(tg_call_end(w, 1, ID("a1"), 61, &c), TG_OK);
	assert_int_equal(c, 1200000);
	assert_int_equal(view(1).balance, 8800000);
	assert_int_equal(tg_call_end(w, 1, ID("a1"), 62, &c), TG_CONFLICT);
	assert_int_equal(tg_call_end(w, 1, ID("nope"), 5, &c), TG_NOCALL);
	assert_int_equal(tg_engine_counter(&engine, TG_C_conflicts), 2);
	assert_int_equal(tg_engine_counter(&engine, TG_C_replays), 1);
	assert_int_equal(tg_table_usage(&table, tg_table_find(&table, 1))->charged[TG_CAT_national],
	                 1200000);
}

static void
test_never_connected_and_overrun(void **state)
{
	uint32_t g;
	tg_money_t c;
	(void)state;

	account(3, 1 * U);
	assert_int_equal(tg_call_auth(w, 3, "1555", 4, ID("b1"), &g), TG_OK);
	assert_int_equal(g, 60);
	assert_int_equal(tg_call_end(w, 3, ID("b1"), 0, &c), TG_OK);
	assert_int_equal(c, 0);
	assert_int_equal(view(3).balance, 1 * U);
	/* A switch late to hang up: billed as the grant, never more. */
	assert_int_equal(tg_call_auth(w, 3, "1555", 4, ID("b2"), &g), TG_OK);
	assert_int_equal(g, 60);
	assert_int_equal(tg_call_end(w, 3, ID("b2"), 75, &c), TG_OK);
	assert_int_equal(c, 600000);
	assert_int_equal(view(3).balance, 400000);
	assert_int_equal(tg_engine_counter(&engine, TG_C_call_overrun_seconds), 15);
}

/* A switch re-sending CALL.AUTH after CALL.END must not open a second reservation. */
static void
test_auth_after_end_is_conflict(void **state)
{
	uint32_t g;
	tg_money_t c;
	(void)state;

	account(13, 5 * U);
	assert_int_equal(tg_call_auth(w, 13, "1555", 4, ID("late"), &g), TG_OK);
	assert_int_equal(tg_call_end(w, 13, ID("late"), 10, &c), TG_OK);
	assert_int_equal(c, 600000);
	assert_int_equal(tg_call_auth(w, 13, "1555", 4, ID("late"), &g), TG_CONFLICT);
	assert_int_equal(view(13).reserved, 0);
	assert_int_equal(view(13).calls, 0);
	assert_int_equal(tg_call_end(w, 13, ID("late"), 10, &c), TG_OK);
	assert_int_equal(view(13).balance, 4400000);
}

static void
test_update_extends(void **state)
{
	uint32_t g;
	tg_money_t c;
	(void)state;

	struct tg_engine_cfg saved = engine.cfg;
	engine.cfg.max_grant = 120;
	account(4, 5 * U);
	assert_int_equal(tg_call_auth(w, 4, "1555", 4, ID("u1"), &g), TG_OK);
	assert_int_equal(g, 120);
	assert_int_equal(view(4).reserved, 1200000);
	/* At 100 s: up to 100 + 120 = 220, on a minute boundary: 180. */
	assert_int_equal(tg_call_update(w, 4, ID("u1"), 100, &g), TG_OK);
	assert_int_equal(g, 180);
	assert_int_equal(view(4).reserved, 1800000);
	assert_int_equal(view(4).calls, 1);
	assert_int_equal(tg_call_update(w, 4, ID("nope"), 100, &g), TG_NOCALL);
	assert_int_equal(tg_call_update(w, 5, ID("u1"), 100, &g), TG_NOCALL);
	/* Spend the rest elsewhere: nothing more to give. */
	struct tg_move m;
	tg_acct_debit(tg_table_find(&table, 4), 3200000, &m);
	assert_int_equal(tg_call_update(w, 4, ID("u1"), 170, &g), TG_BLOCKED);
	assert_int_equal(g, 180);
	assert_int_equal(tg_call_end(w, 4, ID("u1"), 170, &c), TG_OK);
	assert_int_equal(c, 1800000);
	assert_int_equal(view(4).balance, 0);
	engine.cfg = saved;
}

static void
test_refusals(void **state)
{
	uint32_t g;
	tg_money_t c;
	struct tg_move m;
	(void)state;

	assert_int_equal(tg_call_auth(w, 999, "1555", 4, ID("r1"), &g), TG_NOACCOUNT);
	struct tg_acct *a = account(6, 5 * U);
	assert_int_equal(tg_call_auth(w, 6, "999", 3, ID("r2"), &g), TG_NORATE);
	struct tg_acct_settings s = {.state = TG_STATE_SUSPENDED};
	tg_acct_configure(a, &s, &m);
	assert_int_equal(tg_call_auth(w, 6, "1555", 4, ID("r3"), &g), TG_SUSPENDED);
	s.state = TG_STATE_CLOSED;
	tg_acct_configure(a, &s, &m);
	assert_int_equal(tg_call_auth(w, 6, "1555", 4, ID("r4"), &g), TG_CLOSED);
	/* A plan id that the live set does not hold. */
	s.state = TG_STATE_ACTIVE;
	s.plan = 77;
	tg_acct_configure(a, &s, &m);
	assert_int_equal(tg_call_auth(w, 6, "1555", 4, ID("r5"), &g), TG_NOPLAN);
	assert_int_equal(tg_cdr(w, 6, "1555", 4, 60, ID("r6"), &c), TG_NOPLAN);
	/* Blocked at exactly zero; a free call is still blocked at zero. */
	account(7, 0);
	assert_int_equal(tg_call_auth(w, 7, "800555", 6, ID("r7"), &g), TG_BLOCKED);
	account(8, 1);
	assert_int_equal(tg_call_auth(w, 8, "800555", 6, ID("r8"), &g), TG_OK);
	assert_int_equal(g, 3600);
	assert_int_equal(view(8).reserved, 0);
	assert_int_equal(tg_call_end(w, 8, ID("r8"), 3600, &c), TG_OK);
	assert_int_equal(c, 0);
	assert_int_equal(view(8).calls, 0);
}

static void
test_cdr_exactly_once_and_below_zero(void **state)
{
	uint32_t g;
	tg_money_t c;
	(void)state;

	account(9, 1 * U);
	/* 44: 1.20/min, 0.10 connect, 30/6: 100 s bill 102 s = 2.04 + 0.10. */
	assert_int_equal(tg_cdr(w, 9, "4420", 4, 100, ID("x1"), &c), TG_OK);
	assert_int_equal(c, 2140000);
	assert_int_equal(view(9).balance, -1140000);
	assert_int_equal(tg_cdr(w, 9, "4420", 4, 100, ID("x1"), &c), TG_OK);
	assert_int_equal(c, 2140000);
	assert_int_equal(view(9).balance, -1140000);
	assert_int_equal(tg_cdr(w, 9, "4421", 4, 100, ID("x1"), &c), TG_CONFLICT);
	assert_int_equal(tg_cdr(w, 10, "4421", 4, 100, ID("x1"), &c), TG_CONFLICT);
	/* Refused CDRs are not remembered: a corrected retry goes through. */
	assert_int_equal(tg_cdr(w, 9, "999", 3, 100, ID("x2"), &c), TG_NORATE);
	assert_int_equal(tg_cdr(w, 9, "4420", 4, 10, ID("x2"), &c), TG_OK);
	assert_int_equal(c, 700000); /* 30 s minimum increment: 0.60 + 0.10 */
	assert_int_equal(tg_call_auth(w, 9, "1555", 4, ID("x3"), &g), TG_BLOCKED);
	/* A CALL.END id and a CDR id are separate spaces. */
	account(10, 10 * U);
	assert_int_equal(tg_call_auth(w, 10, "1555", 4, ID("x1"), &g), TG_OK);
	assert_int_equal(tg_call_end(w, 10, ID("x1"), 60, &c), TG_OK);
	assert_int_equal(c, 600000);
}

static void
test_credit_and_refill_ids(void **state)
{
	tg_money_t b;
	char rid[48];
	struct tg_move m;
	(void)state;

	struct tg_acct *a = account(11, 20 * U);
	assert_int_equal(tg_credit(w, 11, 5 * U, ID("t1"), &b), TG_OK);
	assert_int_equal(b, 25 * U);
	assert_int_equal(tg_credit(w, 11, 5 * U, ID("t1"), &b), TG_OK);
	assert_int_equal(b, 25 * U);
	assert_int_equal(view(11).balance, 25 * U);
	assert_int_equal(tg_credit(w, 11, 6 * U, ID("t1"), &b), TG_CONFLICT);
	assert_int_equal(tg_credit(w, 999, 6 * U, ID("t2"), &b), TG_NOACCOUNT);

	/* Auto-refill: a crossing fires; the refill's credit clears the flag. */
	struct tg_acct_settings s = {.plan = a->plan,
	                             .threshold = 10 * U,
	                             .refill_mode = TG_REFILL_ADD,
	                             .refill_amount = 50 * U,
	                             .flags = TG_ACCT_PAYMENT};
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	tg_money_t c;
	assert_int_equal(tg_cdr(w, 11, "1555", 4, 1500, ID("big"), &c), TG_OK); /* 15.00 */
	assert_true(view(11).refill_inflight);
	assert_int_equal(tg_engine_counter(&engine, TG_C_refills_fired), 1);
	size_t n = tg_refill_id(11, view(11).refill_seq, rid);
	assert_string_equal(rid, "refill:11:1");
	assert_int_equal(tg_refill_id_parse(11, rid, n), 1);
	assert_int_equal(tg_refill_id_parse(12, rid, n), 0);
	assert_int_equal(tg_refill_id_parse(11, "refill:11:", 10), 0);
	assert_int_equal(tg_refill_id_parse(11, "refill:11:1x", 12), 0);
	assert_int_equal(tg_refill_id_parse(11, "refill:11:0", 11), 0);
	assert_int_equal(tg_refill_id_parse(11, "refill:11:4294967296", 20), 0);
	assert_int_equal(tg_credit(w, 11, 50 * U, ID(rid), &b), TG_OK);
	assert_false(view(11).refill_inflight);
	assert_int_equal(tg_engine_counter(&engine, TG_C_refills_landed), 1);
	/* A failure report clears a flag in flight; repeated, it is still OK. */
	tg_acct_set_balance(a, 10 * U, &m);
	assert_true(m.refill_fired);
	tg_refill_id(11, m.refill_seq, rid);
	assert_int_equal(tg_refill_failed(w, 11, ID(rid), true), TG_OK);
	assert_false(view(11).refill_inflight);
	assert_int_equal(tg_refill_failed(w, 11, ID(rid), true), TG_OK);
	assert_int_equal(tg_refill_failed(w, 11, ID("garbage"), true), TG_ERR);
	assert_int_equal(tg_engine_counter(&engine, TG_C_refills_failed), 1);
}

static void
test_expiry_settles_at_grant(void **state)
{
	uint32_t g;
	tg_money_t c;
	(void)state;

	account(12, 2 * U);
	assert_int_equal(tg_call_auth(w, 12, "1555", 4, ID("e1"), &g), TG_OK);
	assert_int_equal(g, 180);
	uint64_t now = w->now_ns;
	/* Not yet: grant + grace has not passed. */
	w->now_ns = now + (uint64_t)(180 + 119) * 1000000000ull;
	assert_int_equal(tg_engine_expire(w), 0);
	w->now_ns = now + (uint64_t)(180 + 120) * 1000000000ull;
	assert_int_equal(tg_engine_expire(w), 1);
	w->now_ns = now;
	assert_int_equal(view(12).balance, 200000);
	assert_int_equal(view(12).reserved, 0);
	assert_int_equal(view(12).calls, 0);
	assert_int_equal(tg_engine_counter(&engine, TG_C_call_expired), 1);
	/* The id is spent: a late END hears what expiry charged, a new AUTH is refused. */
	c = 0;
	assert_int_equal(tg_call_end(w, 12, ID("e1"), 30, &c), TG_EXPIRED);
	assert_int_equal(c, 1800000);
	assert_int_equal(tg_call_end(w, 13, ID("e1"), 30, &c), TG_NOCALL);
	assert_int_equal(tg_call_auth(w, 12, "1555", 4, ID("e1"), &g), TG_CONFLICT);
	assert_int_equal(view(12).balance, 200000);
	assert_int_equal(view(12).reserved, 0);
}

/*
 * Regression: a usage category and the money_charged / money_credited
 * counters wrapped negative past 9223372036854.775807.  Two charges of the
 * largest amount (a connect fee of that much) and two credits of it: each
 * total stops at the top.
 */
static void
test_totals_saturate_at_the_top(void **state)
{
	struct tg_move m;
	tg_money_t c, b;
	(void)state;

	struct tg_acct *a = account(30, TG_MONEY_MAX);
	assert_int_equal(tg_cdr(w, 30, "5551", 4, 1, ID("top-1"), &c), TG_OK);
	assert_int_equal(c, TG_MONEY_MAX);
	assert_int_equal(view(30).balance, 0);
	tg_acct_set_balance(a, TG_MONEY_MAX, &m);
	assert_int_equal(tg_cdr(w, 30, "5551", 4, 1, ID("top-2"), &c), TG_OK);
	assert_int_equal(c, TG_MONEY_MAX);
	assert_int_equal(tg_table_usage(&table, a)->charged[TG_CAT_premium], TG_MONEY_MAX);
	assert_int_equal(tg_engine_counter(&engine, TG_C_money_charged), TG_MONEY_MAX);
	assert_int_equal(tg_engine_counter(&engine, TG_C_charged_premium), TG_MONEY_MAX);

	struct tg_acct *k = account(31, TG_MONEY_MIN);
	assert_int_equal(tg_credit(w, 31, TG_MONEY_MAX, ID("top-c1"), &b), TG_OK);
	assert_int_equal(b, -1);
	tg_acct_set_balance(k, TG_MONEY_MIN, &m);
	assert_int_equal(tg_credit(w, 31, TG_MONEY_MAX, ID("top-c2"), &b), TG_OK);
	assert_int_equal(tg_engine_counter(&engine, TG_C_money_credited), TG_MONEY_MAX);
}

/*
 * The sum over blocks saturates too: at TG_MONEY_MAX for a money counter
 * (printed as a signed amount), at UINT64_MAX for a count.
 */
static void
test_counter_sum_saturates(void **state)
{
	static struct tg_stats blocks[3];
	(void)state;

	for (int i = 0; i < 3; i++) {
		blocks[i].counter[TG_C_money_charged] = (uint64_t)TG_MONEY_MAX / 2 + 1;
		blocks[i].counter[TG_C_commands] = UINT64_MAX / 2;
		blocks[i].counter[TG_C_credits] = 7;
	}
	assert_int_equal(tg_stats_counter(blocks, 1, TG_C_money_charged),
	                 (uint64_t)TG_MONEY_MAX / 2 + 1);
	assert_int_equal(tg_stats_counter(blocks, 2, TG_C_money_charged), TG_MONEY_MAX);
	assert_int_equal(tg_stats_counter(blocks, 3, TG_C_money_charged), TG_MONEY_MAX);
	assert_true(tg_stats_counter(blocks, 2, TG_C_commands) == UINT64_MAX - 1);
	assert_true(tg_stats_counter(blocks, 3, TG_C_commands) == UINT64_MAX);
	assert_int_equal(tg_stats_counter(blocks, 3, TG_C_credits), 21);
	/* A damaged block past the top of a money counter reads as the top, not negative. */
	blocks[0].counter[TG_C_money_credited] = UINT64_MAX;
	assert_int_equal(tg_stats_counter(blocks, 1, TG_C_money_credited), TG_MONEY_MAX);
}

static void
test_quote(void **state)
{
	tg_money_t c;
	const struct tg_rate *r;
	(void)state;
	assert_int_equal(tg_quote(w, "p", 1, "4412", 4, 31, &c, &r), TG_OK);
	assert_int_equal(c, 820000); /* 36 s at 1.20/min = 0.72, + 0.10 */
	assert_string_equal(r->prefix, "44");
	assert_int_equal(tg_quote(w, "q", 1, "4412", 4, 31, &c, &r), TG_NOPLAN);
	assert_int_equal(tg_quote(w, "p", 1, "999", 3, 31, &c, &r), TG_NORATE);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_grant_reserve_end),
	    cmocka_unit_test(test_never_connected_and_overrun),
	    cmocka_unit_test(test_auth_after_end_is_conflict),
	    cmocka_unit_test(test_update_extends),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_cdr_exactly_once_and_below_zero),
	    cmocka_unit_test(test_credit_and_refill_ids),
	    cmocka_unit_test(test_expiry_settles_at_grant),
	    cmocka_unit_test(test_totals_saturate_at_the_top),
	    cmocka_unit_test(test_counter_sum_saturates),
	    cmocka_unit_test(test_quote),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
