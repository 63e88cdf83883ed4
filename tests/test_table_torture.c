/*
 * test_table_torture.c - many threads, one table, millions of operations.
 *
 * Checks what must hold under any interleaving: money is conserved to the
 * micro-unit, reservations never exceed the balance, a threshold crossed N
 * times fires exactly N refills, and a reader never sees a torn record.
 * TG_TORTURE_OPS scales the run (operations per thread).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tg_atomic.h"
#include "tg_table.h"

#define THREADS 4
#define ACCTS   64
#define UNIT    ((tg_money_t)TG_MONEY_SCALE)

static char shm_name[64];
static struct tg_table table;
static long ops_per_thread;

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int
setup(void **state)
{
	struct tg_table_cfg cfg = {.capacity = 1024, .mode = 0600};
	char err[256];
	(void)state;
	snprintf(shm_name, sizeof(shm_name), "/tg-torture-%d", (int)getpid());
	tg_table_unlink(shm_name);
	cfg.name = shm_name;
	if (tg_table_open(&table, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	const char *e = getenv("TG_TORTURE_OPS");
	ops_per_thread = e ? atol(e) : 2000000;
#if defined(TG_TSAN)
	if (!e)
		ops_per_thread = 200000;
#endif
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	tg_table_close(&table);
	tg_table_unlink(shm_name);
	return 0;
}

/* ---- conservation ---- */

struct open_resv {
	struct tg_acct *a;
	tg_money_t amount;
};

struct worker {
	pthread_t tid;
	unsigned idx;
	uint64_t base_id;
	tg_money_t debited, credited;
	long fired, cleared;
	long failures;
};

static void *
conservation_worker(void *arg)
{
	struct worker *w = arg;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (w->idx + 1);
	struct open_resv open[16];
	unsigned nopen = 0;
	struct tg_move m;

	for (long i = 0; i < ops_per_thread; i++) {
		uint64_t r = rnd(&seed);
		struct tg_acct *a = tg_table_find(&table, w->base_id + r % ACCTS);
		tg_money_t amt = (tg_money_t)(rnd(&seed) % (5 * UNIT)) + 1;
		switch ((r >> 20) % 8) {
		case 0:
			if (nopen < 16 && tg_acct_reserve(a, amt, &m) == TG_OK) {
				open[nopen].a = a;
				open[nopen].amount = amt;
				nopen++;
			}
			break;
		case 1:
		case 2:
			if (nopen > 0) {
				unsigned k = (unsigned)(r % nopen);
				/* Cost up to 120% of the reservation: calls overrun. */
				tg_money_t cost =
				    (tg_money_t)(rnd(&seed) %
				                 (uint64_t)(open[k].amount + open[k].amount / 5));
				if (tg_acct_commit(open[k].a, open[k].amount, cost, &m) != TG_OK)
					w->failures++;
				w->debited += cost;
				w->fired += m.refill_fired;
				if (m.refill_fired && tg_acct_refill_clear(open[k].a, m.refill_seq))
					w->cleared++;
				open[k] = open[--nopen];
			}
			break;
		case 3:
		case 4:
		case 5:
			if (tg_acct_debit(a, amt, &m) != TG_OK)
				w->failures++;
			w->debited += amt;
			if (m.refill_fired) {
				/* The refill lands: its credit clears the flag. */
				w->fired++;
				struct tg_move c;
				if (tg_acct_credit(a, m.refill_charge, m.refill_seq, &c) != TG_OK)
					w->failures++;
				w->credited += m.refill_charge;
				w->cleared++;
			}
			break;
		default:
			if (tg_acct_credit(a, amt, 0, &m) != TG_OK)
				w->failures++;
			w->credited += amt;
			break;
		}
	}
	while (nopen > 0) {
		nopen--;
		if (tg_acct_commit(open[nopen].a, open[nopen].amount, open[nopen].amount, &m) !=
		    TG_OK)
			w->failures++;
		w->debited += open[nopen].amount;
		w->fired += m.refill_fired;
		if (m.refill_fired && tg_acct_refill_clear(open[nopen].a, m.refill_seq))
			w->cleared++;
	}
	return NULL;
}

static void
test_conservation(void **state)
{
	struct worker w[THREADS];
	tg_money_t opening = 0, closing = 0, debited = 0, credited = 0;
	long fired = 0, cleared = 0;
	uint64_t base = 1000;
	(void)state;

	for (uint64_t i = 0; i < ACCTS; i++) {
		struct tg_acct *a;
		struct tg_move m;
		bool created;
		assert_int_equal(tg_table_insert(&table, base + i, &a, &created), TG_OK);
		tg_money_t b = (tg_money_t)(100 + i) * UNIT;
		assert_int_equal(tg_acct_set_balance(a, b, &m), TG_OK);
		struct tg_acct_settings s = {.threshold = 50 * UNIT,
		                             .refill_mode = TG_REFILL_TOPUP,
		                             .refill_amount = 120 * UNIT,
		                             .flags = TG_ACCT_PAYMENT};
		assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
		assert_false(m.refill_fired);
		opening += b;
	}
	for (unsigned i = 0; i < THREADS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].idx = i;
		w[i].base_id = base;
		assert_int_equal(pthread_create(&w[i].tid, NULL, conservation_worker, &w[i]), 0);
	}
	for (unsigned i = 0; i < THREADS; i++) {
		pthread_join(w[i].tid, NULL);
		assert_int_equal(w[i].failures, 0);
		debited += w[i].debited;
		credited += w[i].credited;
		fired += w[i].fired;
		cleared += w[i].cleared;
	}
	for (uint64_t i = 0; i < ACCTS; i++) {
		struct tg_acct_view v;
		tg_acct_read(tg_table_find(&table, base + i), &v);
		assert_int_equal(v.reserved, 0);
		assert_int_equal(v.calls, 0);
		assert_false(v.refill_inflight);
		closing += v.balance;
	}
	assert_int_equal(opening + credited - debited, closing);
	assert_int_equal(fired, cleared);
	assert_true(fired > 0);
	printf("conservation: %ld ops/thread, %ld refills fired and cleared\n", ops_per_thread,
	       fired);
}

/* ---- no overspend, no torn reads ---- */

static uint32_t stop_flag;
static uint64_t overspend_base = 5000;

static void *
reserver(void *arg)
{
	uintptr_t idx = (uintptr_t)arg;
	uint64_t seed = 12345 + idx;
	struct tg_move m;

	for (long i = 0; i < ops_per_thread; i++) {
		struct tg_acct *a = tg_table_find(&table, overspend_base + rnd(&seed) % 4);
		tg_money_t amt = (tg_money_t)(rnd(&seed) % UNIT) + 1;
		if (tg_acct_reserve(a, amt, &m) == TG_OK) {
			/* Commit no more than was reserved: the balance never goes below zero. */
			tg_money_t cost = (tg_money_t)(rnd(&seed) % (uint64_t)amt);
			tg_acct_commit(a, amt, cost, &m);
		} else if ((i & 7) == 0) {
			tg_acct_credit(a, UNIT, 0, &m);
		}
	}
	return NULL;
}

static void *
configurer(void *arg)
{
	struct tg_acct *a = arg;
	struct tg_move m;
	for (uint32_t k = 1; !tg_load_32(&stop_flag); k++) {
		struct tg_acct_settings s = {.plan = k & 0xffff,
		                             .threshold = -(tg_money_t)k,
		                             .refill_amount = (tg_money_t)k,
		                             .state = TG_STATE_ACTIVE};
		tg_acct_configure(a, &s, &m);
	}
	return NULL;
}

static void *
checker(void *arg)
{
	long *bad = arg;
	long reads = 0;
	while (!tg_load_32(&stop_flag) || reads < 1000) {
		for (uint64_t i = 0; i < 4; i++) {
			struct tg_acct_view v;
			tg_acct_read(tg_table_find(&table, overspend_base + i), &v);
			if (v.available < 0 || v.reserved > v.balance || v.balance < 0)
				(*bad)++;
			if (v.threshold != -v.refill_amount ||
			    v.plan != ((uint32_t)v.refill_amount & 0xffff))
				(*bad)++;
			reads++;
		}
	}
	return NULL;
}

static void
test_no_overspend_no_torn_reads(void **state)
{
	pthread_t r[THREADS - 1], c, k;
	long bad = 0;
	(void)state;

	for (uint64_t i = 0; i < 4; i++) {
		struct tg_acct *a;
		struct tg_move m;
		bool created;
		assert_int_equal(tg_table_insert(&table, overspend_base + i, &a, &created), TG_OK);
		assert_int_equal(tg_acct_set_balance(a, 3 * UNIT, &m), TG_OK);
	}
	tg_store_32(&stop_flag, 0);
	pthread_create(&c, NULL, configurer, tg_table_find(&table, overspend_base));
	pthread_create(&k, NULL, checker, &bad);
	for (uintptr_t i = 0; i < THREADS - 1; i++)
		pthread_create(&r[i], NULL, reserver, (void *)i);
	for (unsigned i = 0; i < THREADS - 1; i++)
		pthread_join(r[i], NULL);
	tg_store_32(&stop_flag, 1);
	pthread_join(c, NULL);
	pthread_join(k, NULL);
	assert_int_equal(bad, 0);
	for (uint64_t i = 0; i < 4; i++) {
		struct tg_acct_view v;
		tg_acct_read(tg_table_find(&table, overspend_base + i), &v);
		assert_int_equal(v.reserved, 0);
		assert_true(v.balance >= 0);
	}
}

/*
 * ---- postpaid: never below minus the limit, while the kind flips ----
 *
 * Reservers take and commit no more than they reserved on one account
 * whose settings flip between postpaid (limit 2 units) and prepaid with a
 * threshold of 5 units, the same word: a grant that read the threshold as a
 * limit would take the balance below -2 units.
 */
#define PP_LIMIT (2 * UNIT)
static uint64_t postpaid_id = 900000;

static void *
pp_reserver(void *arg)
{
	uintptr_t idx = (uintptr_t)arg;
	uint64_t seed = 777 + idx;
	struct tg_acct *a = tg_table_find(&table, postpaid_id);
	struct tg_move m;

	for (long i = 0; i < ops_per_thread / 2; i++) {
		tg_money_t amt = (tg_money_t)(rnd(&seed) % UNIT) + 1;
		if (tg_acct_reserve(a, amt, &m) == TG_OK) {
			tg_acct_commit(a, amt, amt, &m);
		} else if ((i & 3) == 0) {
			/* Pay back whatever is owed, as an invoice payment would. */
			struct tg_acct_view v;
			tg_acct_read(a, &v);
			if (v.balance < 0)
				tg_acct_credit(a, -v.balance, 0, &m);
		}
	}
	return NULL;
}

static void *
pp_flipper(void *arg)
{
	struct tg_acct *a = arg;
	struct tg_move m;
	for (uint32_t k = 0; !tg_load_32(&stop_flag); k++) {
		struct tg_acct_settings s = {.state = TG_STATE_ACTIVE};
		if (k & 1) {
			s.flags = TG_ACCT_POSTPAID;
			s.credit_limit = PP_LIMIT;
		} else {
			s.threshold = 5 * UNIT;
		}
		tg_acct_configure(a, &s, &m);
	}
	return NULL;
}

static void *
pp_checker(void *arg)
{
	long *bad = arg;
	struct tg_acct *a = tg_table_find(&table, postpaid_id);
	while (!tg_load_32(&stop_flag)) {
		int64_t balance;
		uint64_t hold;
		tg_acct_read_money(a, &balance, &hold);
		if (balance < -PP_LIMIT)
			(*bad)++;
		struct tg_acct_view v;
		tg_acct_read(a, &v);
		if ((v.flags & TG_ACCT_POSTPAID) ? v.credit_limit != PP_LIMIT || v.threshold != 0
		                                 : v.threshold != 5 * UNIT || v.credit_limit != 0)
			(*bad)++;
	}
	return NULL;
}

static void
test_postpaid_never_below_minus_the_limit(void **state)
{
	pthread_t r[THREADS - 1], f, k;
	long bad = 0;
	struct tg_acct *a;
	struct tg_move m;
	bool created;
	(void)state;

	assert_int_equal(tg_table_insert(&table, postpaid_id, &a, &created), TG_OK);
	/* Settled before the checker looks: prepaid with the threshold it expects. */
	struct tg_acct_settings first = {.state = TG_STATE_ACTIVE, .threshold = 5 * UNIT};
	assert_int_equal(tg_acct_configure(a, &first, &m), TG_OK);
	tg_store_32(&stop_flag, 0);
	pthread_create(&f, NULL, pp_flipper, a);
	pthread_create(&k, NULL, pp_checker, &bad);
	for (uintptr_t i = 0; i < THREADS - 1; i++)
		pthread_create(&r[i], NULL, pp_reserver, (void *)i);
	for (unsigned i = 0; i < THREADS - 1; i++)
		pthread_join(r[i], NULL);
	tg_store_32(&stop_flag, 1);
	pthread_join(f, NULL);
	pthread_join(k, NULL);
	assert_int_equal(bad, 0);
	struct tg_acct_view v;
	tg_acct_read(a, &v);
	assert_int_equal(v.reserved, 0);
	assert_true(v.balance >= -PP_LIMIT);
}

/*
 * ---- fraud limits: never more than MAXCALLS calls, never past the daily cap ----
 *
 * Every thread authorizes calls on one account with MAXCALLS 3 and a daily
 * cap (tg_acct_reserve_limited), sometimes extends one, then settles it for
 * no more than it holds and gives the unused part back to the day, as the
 * engine does.  The balance is far above the cap, so only the limits
 * refuse.  A checker watches the account's call count and the day's count
 * throughout; at the end the day's count is exactly what the calls cost.
 */
#define LIM_CALLS 3u
/* About a quarter of what the calls would cost unlimited, so the cap binds mid-run. */
#define LIM_CAP ((tg_money_t)(ops_per_thread / 8) * THREADS * 100)
#define LIM_DAY 20000
static uint64_t limits_id = 910000;
static uint32_t lim_open; /* calls a thread holds, counted after the grant, before the settle */
static uint32_t lim_open_max;

struct lim_worker {
	pthread_t tid;
	uint64_t seed;
	struct tg_acct *a;
	struct tg_limits *l;
	tg_money_t cost; /* what its calls cost in all */
	long granted, maxcalls, dailycap;
	long bad; /* the checker's: limits seen exceeded */
};

static void *
lim_caller(void *arg)
{
	struct lim_worker *w = arg;
	struct tg_move m;

	for (long i = 0; i < ops_per_thread / 8; i++) {
		/* Up to two calls at once per thread: four threads want up to eight places. */
		tg_money_t held[2];
		unsigned n = 0, want = 1 + (unsigned)(rnd(&w->seed) & 1);
		for (unsigned k = 0; k < want; k++) {
			tg_money_t amt = (tg_money_t)(rnd(&w->seed) % 1000) + 1;
			enum tg_result r =
			    tg_acct_reserve_limited(w->a, w->l, LIM_DAY, amt, true, &m);
			if (r == TG_MAXCALLS) {
				w->maxcalls++;
				continue;
			}
			if (r == TG_DAILYCAP) {
				w->dailycap++;
				continue;
			}
			assert_int_equal(r, TG_OK);
			w->granted++;
			held[n++] = amt;
			uint32_t open = ck_pr_faa_32(&lim_open, 1) + 1;
			for (uint32_t seen = tg_load_32(&lim_open_max); open > seen;)
				if (ck_pr_cas_32_value(&lim_open_max, seen, open, &seen))
					break;
		}
		if (n > 0 && (rnd(&w->seed) & 3) == 0) {
			tg_money_t more = (tg_money_t)(rnd(&w->seed) % 500) + 1;
			enum tg_result r =
			    tg_acct_reserve_limited(w->a, w->l, LIM_DAY, more, false, &m);
			if (r == TG_OK)
				held[0] += more;
			else
				assert_int_equal(r, TG_DAILYCAP);
		}
		for (unsigned k = 0; k < n; k++) {
			tg_money_t cost = (tg_money_t)(rnd(&w->seed) % (uint64_t)(held[k] + 1));
			ck_pr_dec_32(&lim_open);
			assert_int_equal(tg_acct_commit(w->a, held[k], cost, &m), TG_OK);
			tg_limits_day_give(w->l, LIM_DAY, held[k] - cost);
			w->cost += cost;
		}
	}
	return NULL;
}

static void *
lim_checker(void *arg)
{
	struct lim_worker *w = arg;
	long *bad = &w->bad;

	while (!tg_load_32(&stop_flag)) {
		if (tg_load_32(&w->a->calls) > LIM_CALLS)
			(*bad)++;
		if (tg_limits_day_spent(w->l, LIM_DAY) > LIM_CAP)
			(*bad)++;
		if (tg_load_32(&lim_open) > LIM_CALLS)
			(*bad)++;
	}
	return NULL;
}

static void
test_limits_exact_under_contention(void **state)
{
	struct lim_worker w[THREADS], chk = {0};
	struct tg_acct *a;
	struct tg_move m;
	bool created;
	(void)state;

	assert_int_equal(tg_table_insert(&table, limits_id, &a, &created), TG_OK);
	assert_int_equal(tg_acct_set_balance(a, 1000000 * UNIT, &m), TG_OK);
	struct tg_limits_set ls = {.max_calls = LIM_CALLS, .daily_cap = LIM_CAP};
	tg_acct_set_limits(&table, a, &ls, LIM_DAY);
	struct tg_limits *l = tg_acct_limits(&table, a);
	assert_non_null(l);
	tg_store_32(&stop_flag, 0);
	chk = (struct lim_worker){.a = a, .l = l};
	pthread_create(&chk.tid, NULL, lim_checker, &chk);
	for (unsigned i = 0; i < THREADS; i++) {
		w[i] = (struct lim_worker){.seed = 777 + i, .a = a, .l = l};
		pthread_create(&w[i].tid, NULL, lim_caller, &w[i]);
	}
	tg_money_t cost = 0;
	long granted = 0, maxcalls = 0, dailycap = 0;
	for (unsigned i = 0; i < THREADS; i++) {
		pthread_join(w[i].tid, NULL);
		cost += w[i].cost;
		granted += w[i].granted;
		maxcalls += w[i].maxcalls;
		dailycap += w[i].dailycap;
	}
	tg_store_32(&stop_flag, 1);
	pthread_join(chk.tid, NULL);
	assert_int_equal(chk.bad, 0);
	assert_true(lim_open_max <= LIM_CALLS);
	/* Both limits refused, and calls got through: the run tested something. */
	printf("limits: %ld granted, %ld MAXCALLS, %ld DAILYCAP, %lld of %lld spent\n", granted,
	       maxcalls, dailycap, (long long)cost, (long long)LIM_CAP);
	assert_true(granted > 0 && maxcalls > 0 && dailycap > 0);
	/* Settled: no call held, nothing reserved, the day's count is what the calls cost. */
	struct tg_acct_view v;
	tg_acct_read(a, &v);
	assert_int_equal(tg_load_32(&a->calls), 0);
	assert_int_equal(v.reserved, 0);
	assert_int_equal(v.balance, 1000000 * UNIT - cost);
	assert_int_equal(tg_limits_day_spent(l, LIM_DAY), cost);
	assert_true(cost <= LIM_CAP);
}

/* ---- exactly one refill per crossing ---- */

#define ROUNDS_DEFAULT 2000
static pthread_barrier_t barrier;
static long crossing_rounds;
static uint64_t fired_total;
static struct tg_acct *cross_acct;

static void *
crosser(void *arg)
{
	(void)arg;
	struct tg_move m;
	for (long r = 0; r < crossing_rounds; r++) {
		pthread_barrier_wait(&barrier);
		/* Every thread debits 1 unit 4 times: 16 debits across 10 units above. */
		for (int i = 0; i < 4; i++) {
			tg_acct_debit(cross_acct, UNIT, &m);
			if (m.refill_fired)
				ck_pr_inc_64(&fired_total);
		}
		pthread_barrier_wait(&barrier);
	}
	return NULL;
}

static void
test_one_refill_per_crossing(void **state)
{
	pthread_t t[THREADS];
	struct tg_move m;
	bool created;
	(void)state;

	crossing_rounds = ops_per_thread / 250;
	if (crossing_rounds < 100)
		crossing_rounds = 100;
	assert_int_equal(tg_table_insert(&table, 9000, &cross_acct, &created), TG_OK);
	struct tg_acct_settings s = {.threshold = 10 * UNIT,
	                             .refill_mode = TG_REFILL_ADD,
	                             .refill_amount = 16 * UNIT,
	                             .flags = TG_ACCT_PAYMENT};
	assert_int_equal(tg_acct_set_balance(cross_acct, 20 * UNIT, &m), TG_OK);
	assert_int_equal(tg_acct_configure(cross_acct, &s, &m), TG_OK);
	pthread_barrier_init(&barrier, NULL, THREADS + 1);
	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, crosser, NULL);
	for (long r = 0; r < crossing_rounds; r++) {
		pthread_barrier_wait(&barrier); /* go */
		pthread_barrier_wait(&barrier); /* done: 20 - 16 = 4, crossed 10 once */
		struct tg_acct_view v;
		tg_acct_read(cross_acct, &v);
		assert_int_equal(v.balance, 4 * UNIT);
		assert_true(v.refill_inflight);
		assert_int_equal(tg_load_64(&fired_total), (uint64_t)r + 1);
		/* The refill lands (clearing the flag), back to 20 for the next round. */
		assert_int_equal(tg_acct_credit(cross_acct, 16 * UNIT, v.refill_seq, &m), TG_OK);
		tg_acct_read(cross_acct, &v);
		assert_false(v.refill_inflight);
		assert_int_equal(v.balance, 20 * UNIT);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&barrier);
	assert_int_equal(fired_total, (uint64_t)crossing_rounds);
	printf("crossings: %ld rounds, %llu refills\n", crossing_rounds,
	       (unsigned long long)fired_total);
}

/* ---- concurrent inserts ---- */

static void *
inserter(void *arg)
{
	(void)arg;
	long *created_count = calloc(1, sizeof(long));
	for (uint64_t id = 100000; id < 100600; id++) {
		struct tg_acct *a;
		bool created;
		if (tg_table_insert(&table, id, &a, &created) == TG_OK && created)
			(*created_count)++;
	}
	return created_count;
}

static void
test_concurrent_insert(void **state)
{
	pthread_t t[THREADS];
	long total = 0;
	(void)state;
	for (uintptr_t i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, inserter, (void *)i);
	for (int i = 0; i < THREADS; i++) {
		void *p;
		pthread_join(t[i], &p);
		total += *(long *)p;
		free(p);
	}
	/* Every id created exactly once, whoever won the race. */
	assert_int_equal(total, 600);
	for (uint64_t id = 100000; id < 100600; id++)
		assert_non_null(tg_table_find(&table, id));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_conservation),
	    cmocka_unit_test(test_no_overspend_no_torn_reads),
	    cmocka_unit_test(test_postpaid_never_below_minus_the_limit),
	    cmocka_unit_test(test_limits_exact_under_contention),
	    cmocka_unit_test(test_one_refill_per_crossing),
	    cmocka_unit_test(test_concurrent_insert),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
