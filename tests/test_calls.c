/*
 * test_calls.c - the map of calls in progress.
 *
 * Unit group (default): lookups, updates and removals; collisions forced
 * into one stripe and one first slot (calls.c documents which digest bits
 * pick them); a full stripe; expiry with a fake clock; and a reference
 * model over a million random operations on a nearly full two-stripe map.
 * With the argument "race": threads race to add, update, remove and expire
 * the same calls for about a second (run under TSan as suite 'concurrent').
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "tg_atomic.h" /* TG_TSAN */
#include "tg_calls.h"
#include "tg_clock.h"
#include "testrand.h"

static struct tg_digest
id_digest(unsigned round, unsigned i)
{
	char id[64];
	int n = snprintf(id, sizeof(id), "r%u-%u@switch-a", round, i);

	return tg_digest(1, id, (size_t)n);
}

static struct tg_call
make_call(uint64_t acct, uint64_t expires_ns)
{
	struct tg_call call;

	memset(&call, 0, sizeof(call));
	call.acct = acct;
	call.reserved = (tg_money_t)acct * 10;
	call.granted = 60;
	call.started_ns = 1;
	call.expires_ns = expires_ns;
	return call;
}

static enum tg_result
add(struct tg_calls *c, struct tg_digest d, uint64_t acct, uint64_t expires_ns)
{
	struct tg_calls_lock l;
	struct tg_call call = make_call(acct, expires_ns);

	assert_null(tg_calls_lock(c, d, &l));
	return tg_calls_insert_unlock(&l, &call);
}

/* The acct of d's call, or UINT64_MAX when absent. */
static uint64_t
acct_of(struct tg_calls *c, struct tg_digest d)
{
	struct tg_calls_lock l;
	struct tg_call *e = tg_calls_lock(c, d, &l);
	uint64_t acct = e ? e->acct : UINT64_MAX;

	tg_calls_unlock(&l);
	return acct;
}

static void
drop(struct tg_calls *c, struct tg_digest d)
{
	struct tg_calls_lock l;

	assert_non_null(tg_calls_lock(c, d, &l));
	tg_calls_remove_unlock(&l);
}

static void
test_init_errors(void **state)
{
	struct tg_calls *c = (struct tg_calls *)1;

	(void)state;
	assert_int_equal(tg_calls_init(&c, 0), -EINVAL);
	assert_null(c);
	assert_int_equal(tg_calls_init(&c, SIZE_MAX / 2), -ENOMEM);
	assert_null(c);
	tg_calls_free(NULL);
}

static void
test_insert_lookup_update_remove(void **state)
{
	enum { N = 8000 };
	struct tg_calls *c;
	struct tg_calls_lock l;

	(void)state;
	assert_int_equal(tg_calls_init(&c, 10000), 0);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(add(c, id_digest(0, i), i, 1000 + i), TG_OK);
	assert_int_equal(tg_calls_count(c), N);
	for (unsigned i = 0; i < N; i++) {
		struct tg_call *e = tg_calls_lock(c, id_digest(0, i), &l);

		assert_non_null(e);
		assert_int_equal(e->acct, i);
		assert_int_equal(e->reserved, (tg_money_t)i * 10);
		assert_int_equal(e->expires_ns, 1000 + i);
		e->granted = i * 2;
		e->reserved += 5;
		tg_calls_unlock(&l);
	}
	for (unsigned i = 0; i < N; i += 2)
		drop(c, id_digest(0, i));
	assert_int_equal(tg_calls_count(c), N / 2);
	for (unsigned i = 0; i < N; i++) {
		struct tg_call *e = tg_calls_lock(c, id_digest(0, i), &l);

		if (i % 2 == 0) {
			assert_null(e);
		} else {
			assert_non_null(e);
			assert_int_equal(e->granted, i * 2);
			assert_int_equal(e->reserved, (tg_money_t)i * 10 + 5);
		}
		tg_calls_unlock(&l);
	}
	assert_null(tg_calls_lock(c, id_digest(1, 0), &l));
	tg_calls_unlock(&l);
	tg_calls_free(c);
}

/*
 * Every call in one stripe with the same first slot, near the end of the
 * stripe so the probe run wraps around: fill to TG_FULL, punch holes in the
 * run, check that every survivor is still found, and fill the holes again.
 */
static void
test_collisions_full_stripe(void **state)
{
	enum { MAX = 400 };
	struct tg_calls *c;
	unsigned full = 0;

	(void)state;
	assert_int_equal(tg_calls_init(&c, 100), 0);
	for (unsigned i = 0; i < MAX; i++) {
		enum tg_result r = add(c, it_crafted(5, 0xfffffff0u, i), i, 0);

		if (r == TG_FULL) {
			full = i;
			break;
		}
		assert_int_equal(r, TG_OK);
	}
	assert_true(full >= 125); /* 1.25 slots per call of capacity */
	assert_int_equal(tg_calls_count(c), full);
	assert_int_equal(add(c, it_crafted(5, 0x10u, MAX), MAX, 0), TG_FULL);
	for (unsigned i = 0; i < full; i++)
		assert_int_equal(acct_of(c, it_crafted(5, 0xfffffff0u, i)), i);
	for (unsigned i = 1; i < full; i += 3)
		drop(c, it_crafted(5, 0xfffffff0u, i));
	for (unsigned i = 0; i < full; i++) {
		uint64_t want = i % 3 == 1 ? UINT64_MAX : i;

		assert_int_equal(acct_of(c, it_crafted(5, 0xfffffff0u, i)), want);
	}
	for (unsigned i = 1; i < full; i += 3)
		assert_int_equal(add(c, it_crafted(5, 0xfffffff0u, i), i + 1000, 0), TG_OK);
	assert_int_equal(tg_calls_count(c), full);
	assert_int_equal(add(c, it_crafted(5, 0x10u, MAX), MAX, 0), TG_FULL);
	for (unsigned i = full; i-- > 0;)
		drop(c, it_crafted(5, 0xfffffff0u, i));
	assert_int_equal(tg_calls_count(c), 0);
	tg_calls_free(c);
}

/* A full stripe does not stop the others. */
static void
test_full_stripe_alone(void **state)
{
	struct tg_calls *c;
	unsigned i = 0;

	(void)state;
	assert_int_equal(tg_calls_init(&c, 100000), 0);
	while (add(c, it_crafted(3, (uint32_t)i * 7919u, i), i, 0) == TG_OK)
		i++;
	assert_true(i >= 512 * 5 / 4);
	assert_int_equal(tg_calls_count(c), i);
	for (unsigned j = 0; j < 500; j++)
		assert_int_equal(add(c, it_crafted(4, (uint32_t)j * 7919u, j), j, 0), TG_OK);
	drop(c, it_crafted(3, 0, 0));
	assert_int_equal(add(c, it_crafted(3, 0, 0), 0, 0), TG_OK);
	tg_calls_free(c);
}

struct expired {
	uint64_t now;
	unsigned seen[5000];
	unsigned bad;
};

static bool
on_expire(void *arg, const struct tg_call *call)
{
	struct expired *x = arg;

	if (call->expires_ns > x->now || call->acct >= 5000)
		x->bad++;
	else
		x->seen[call->acct]++;
	return true;
}

static void
expire_check(struct tg_calls *c, struct tg_digest (*key)(unsigned), const uint64_t *exp, unsigned n)
{
	static struct expired x;
	size_t left = tg_calls_count(c), want;

	/* clock steps 0, 250, ..., 1000: each call is due in exactly one step */
	for (uint64_t now = 0, prev = 0; now <= 1000; prev = now, now += 250) {
		memset(&x, 0, sizeof(x));
		x.now = now;
		want = 0;
		for (unsigned i = 0; i < n; i++)
			want += exp[i] <= now && (now == 0 || exp[i] > prev);
		assert_int_equal(tg_calls_expire(c, now, on_expire, &x), want);
		assert_int_equal(x.bad, 0);
		for (unsigned i = 0; i < n; i++) {
			bool due = exp[i] <= now && (now == 0 || exp[i] > prev);

			assert_int_equal(x.seen[i], due);
			assert_int_equal(acct_of(c, key(i)), exp[i] <= now ? UINT64_MAX : i);
		}
		left -= want;
		assert_int_equal(tg_calls_count(c), left);
	}
	assert_int_equal(tg_calls_count(c), 0);
	assert_int_equal(tg_calls_expire(c, UINT64_MAX, on_expire, &x), 0);
}

static struct tg_digest
key_plain(unsigned i)
{
	return id_digest(7, i);
}

static struct tg_digest
key_colliding(unsigned i)
{
	return it_crafted(9, 0xfffffff8u + i % 4, i);
}

/* A fake clock: each call is given to fn once, when and only when it is due. */
static void
test_expire(void **state)
{
	static uint64_t exp[5000];
	struct tg_calls *c;
	uint64_t seed = 5;

	(void)state;
	assert_int_equal(tg_calls_init(&c, 6000), 0);
	for (unsigned i = 0; i < 5000; i++) {
		exp[i] = it_splitmix(&seed) % 1001; /* 0 .. 1000: all gone by 1000 */
		assert_int_equal(add(c, key_plain(i), i, exp[i]), TG_OK);
	}
	expire_check(c, key_plain, exp, 5000);
	tg_calls_free(c);

	/* one wrapped probe run, expiring from its middle */
	assert_int_equal(tg_calls_init(&c, 100), 0);
	for (unsigned i = 0; i < 120; i++) {
		exp[i] = it_splitmix(&seed) % 1001;
		assert_int_equal(add(c, key_colliding(i), i, exp[i]), TG_OK);
	}
	expire_check(c, key_colliding, exp, 120);
	tg_calls_free(c);
}

/* Declines the even accounts: they must stay, and be offered again next scan. */
static bool
keep_even(void *arg, const struct tg_call *call)
{
	unsigned *offered = arg;

	offered[call->acct]++;
	return call->acct % 2 == 1;
}

/* A call the expiry callback declines stays in the map and is offered again. */
static void
test_expire_keeps_declined_calls(void **state)
{
	static unsigned offered[120];
	struct tg_calls *c;

	(void)state;
	assert_int_equal(tg_calls_init(&c, 100), 0);
	for (unsigned i = 0; i < 120; i++) /* one wrapped probe run: removals shift the rest */
		assert_int_equal(add(c, key_colliding(i), i, 5), TG_OK);
	assert_int_equal(tg_calls_expire(c, 4, keep_even, offered), 0);
	assert_int_equal(tg_calls_expire(c, 5, keep_even, offered), 60);
	for (unsigned i = 0; i < 120; i++) {
		assert_true(offered[i] >= 1); /* a removal may move a kept call past the scan */
		assert_int_equal(acct_of(c, key_colliding(i)), i % 2 ? UINT64_MAX : i);
	}
	assert_int_equal(tg_calls_count(c), 60);
	assert_int_equal(tg_calls_expire(c, 5, keep_even, offered), 0);
	for (unsigned i = 0; i < 120; i += 2)
		assert_true(offered[i] >= 2);
	assert_int_equal(tg_calls_expire(c, 5, NULL, NULL), 60);
	assert_int_equal(tg_calls_count(c), 0);
	tg_calls_free(c);
}

/*
 * The reference model: a plain array says which keys are present and with
 * what.  Keys crowd a map of two stripes, many of them sharing first slots
 * (some near the end of a stripe, so runs wrap), and more keys exist than
 * slots, so stripes fill up and TG_FULL must come exactly when the model
 * says the stripe is full.
 */
/* The model is one thread: under TSan (slow, and no race to find) it runs shorter. */
#if defined(TG_TSAN)
enum { MODEL_OPS = 200000 };
#else
enum { MODEL_OPS = 1000000 };
#endif
enum { MODEL_KEYS = 4000 };

struct model {
	bool present;
	uint64_t expires;
	uint32_t granted;
};

static struct tg_digest
model_key(unsigned k)
{
	uint32_t h;

	switch (k % 4) {
	case 0:
		h = 0xfffffff0u + k % 16; /* wraps */
		break;
	case 1:
		h = (k % 8) << 29; /* eight crowded first slots */
		break;
	default:
		h = (uint32_t)(k * 2654435761u);
		break;
	}
	return it_crafted(k & 1, h, k);
}

static struct model model[MODEL_KEYS];
static uint64_t model_now;
static unsigned model_bad;

static bool
model_expire_fn(void *arg, const struct tg_call *call)
{
	(void)arg;
	if (call->acct >= MODEL_KEYS || !model[call->acct].present ||
	    model[call->acct].expires > model_now)
		model_bad++;
	else
		model[call->acct].present = false;
	return true;
}

static void
model_check_all(struct tg_calls *c, const unsigned used[2])
{
	struct tg_calls_lock l;

	for (unsigned k = 0; k < MODEL_KEYS; k++) {
		struct tg_call *e = tg_calls_lock(c, model_key(k), &l);

		if (model[k].present) {
			assert_non_null(e);
			assert_int_equal(e->acct, k);
			assert_int_equal(e->granted, model[k].granted);
			assert_int_equal(e->expires_ns, model[k].expires);
		} else {
			assert_null(e);
		}
		tg_calls_unlock(&l);
	}
	assert_int_equal(tg_calls_count(c), used[0] + used[1]);
}

static void
test_reference_model(void **state)
{
	struct tg_calls *c;
	struct tg_calls_lock l;
	uint64_t seed = 12345;
	unsigned used[2] = {0, 0}, full_at[2] = {0, 0}, fulls = 0;

	(void)state;
	memset(model, 0, sizeof(model));
	assert_int_equal(tg_calls_init(&c, 1500), 0); /* two stripes */
	for (unsigned op = 0; op < MODEL_OPS; op++) {
		uint64_t r = it_splitmix(&seed);
		unsigned k = (unsigned)(r % MODEL_KEYS), s = k & 1,
		         what = (unsigned)(r >> 32) % 100;
		struct model *m = &model[k];
		struct tg_call *e;

		if (what == 0) {
			unsigned before = used[0] + used[1];

			model_now = (r >> 40) % 3000;
			size_t n = tg_calls_expire(c, model_now, model_expire_fn, NULL);
			assert_int_equal(model_bad, 0);
			used[0] = used[1] = 0;
			for (unsigned j = 0; j < MODEL_KEYS; j++) {
				assert_false(model[j].present && model[j].expires <= model_now);
				used[j & 1] += model[j].present;
			}
			assert_int_equal(n, before - used[0] - used[1]);
			continue;
		}
		e = tg_calls_lock(c, model_key(k), &l);
		assert_int_equal(e != NULL, m->present);
		if (e != NULL) {
			assert_int_equal(e->acct, k);
			assert_int_equal(e->granted, m->granted);
			assert_int_equal(e->expires_ns, m->expires);
		}
		if (what < 50) { /* add */
			if (e != NULL) {
				tg_calls_unlock(&l);
				continue;
			}
			struct tg_call call = make_call(k, (r >> 20) % 60000);
			call.granted = (uint32_t)(r >> 8);
			enum tg_result res = tg_calls_insert_unlock(&l, &call);
			if (res == TG_FULL) {
				if (full_at[s] == 0)
					full_at[s] = used[s];
				assert_int_equal(used[s], full_at[s]);
				assert_true(used[s] >= 1500 * 5 / 4 / 2);
				fulls++;
				continue;
			}
			assert_int_equal(res, TG_OK);
			assert_true(full_at[s] == 0 || used[s] < full_at[s]);
			m->present = true;
			m->granted = call.granted;
			m->expires = call.expires_ns;
			used[s]++;
		} else if (what < 80) { /* remove */
			if (e == NULL) {
				tg_calls_unlock(&l);
				continue;
			}
			tg_calls_remove_unlock(&l);
			m->present = false;
			used[s]--;
		} else { /* update in place */
			if (e != NULL) {
				e->granted += 30;
				m->granted += 30;
			}
			tg_calls_unlock(&l);
		}
		if (op % 50000 == 0)
			model_check_all(c, used);
	}
	model_check_all(c, used);
	assert_true(fulls > 0);
	tg_calls_free(c);
}

/*
 * The race: each round, THREADS threads walk the same ROUND_IDS calls in
 * their own orders.  Phase 1: add the call if absent, else bump its
 * granted (under the lock).  Phase 2: remove it if present.  Thread 0 also
 * expires now and then; every eighth call is born expired, so it may be
 * expired and re-added any number of times.  Checked per call: added
 * exactly as often as removed or expired, a call that never expires added
 * exactly once and bumped by every other thread (no lost update).
 */
enum { THREADS = 4, ROUND_IDS = 4096 };

struct race {
	struct tg_calls *c;
	pthread_barrier_t barrier;
	struct tg_digest ids[ROUND_IDS];
	unsigned added[ROUND_IDS], removed[ROUND_IDS];
	unsigned stop, rounds, failures;
	uint64_t start_ns;
};

static bool
race_expired(void *arg, const struct tg_call *call)
{
	struct race *rc = arg;

	if (call->acct >= ROUND_IDS || call->expires_ns != 0)
		__atomic_fetch_add(&rc->failures, 1, __ATOMIC_RELAXED);
	else
		__atomic_fetch_add(&rc->removed[call->acct], 1, __ATOMIC_RELAXED);
	return true;
}

static void
shuffle(unsigned *order, unsigned n, uint64_t *seed)
{
	for (unsigned i = 0; i < n; i++)
		order[i] = i;
	for (unsigned i = n - 1; i > 0; i--) {
		unsigned j = (unsigned)(it_splitmix(seed) % (i + 1)), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
}

struct worker {
	struct race *rc;
	unsigned tid;
};

static void
race_fail(struct race *rc)
{
	__atomic_fetch_add(&rc->failures, 1, __ATOMIC_RELAXED);
}

static void *
race_worker(void *arg)
{
	struct worker *wk = arg;
	struct race *rc = wk->rc;
	static unsigned orders[THREADS][ROUND_IDS];
	unsigned *order = orders[wk->tid];
	uint64_t seed = wk->tid * 1000003u + 1;

	for (unsigned round = 0;; round++) {
		struct tg_calls_lock l;

		if (wk->tid == 0) {
			for (unsigned i = 0; i < ROUND_IDS; i++) {
				rc->ids[i] = id_digest(round + 100, i);
				rc->added[i] = rc->removed[i] = 0;
			}
		}
		pthread_barrier_wait(&rc->barrier);
		shuffle(order, ROUND_IDS, &seed);
		for (unsigned n = 0; n < ROUND_IDS; n++) {
			unsigned i = order[n];
			struct tg_call *e = tg_calls_lock(rc->c, rc->ids[i], &l);

			if (e == NULL) {
				struct tg_call call = make_call(i, i % 8 == 0 ? 0 : UINT64_MAX);
				call.granted = 1;
				if (tg_calls_insert_unlock(&l, &call) != TG_OK)
					race_fail(rc);
				else
					__atomic_fetch_add(&rc->added[i], 1, __ATOMIC_RELAXED);
			} else {
				if (e->acct != i)
					race_fail(rc);
				e->granted++;
				tg_calls_unlock(&l);
			}
			if (wk->tid == 0 && n % 256 == 0)
				tg_calls_expire(rc->c, 1, race_expired, rc);
		}
		pthread_barrier_wait(&rc->barrier);
		shuffle(order, ROUND_IDS, &seed);
		for (unsigned n = 0; n < ROUND_IDS; n++) {
			unsigned i = order[n];
			struct tg_call *e = tg_calls_lock(rc->c, rc->ids[i], &l);

			if (e == NULL) {
				tg_calls_unlock(&l);
			} else {
				if (e->acct != i || (i % 8 != 0 && e->granted != THREADS))
					race_fail(rc);
				tg_calls_remove_unlock(&l);
				__atomic_fetch_add(&rc->removed[i], 1, __ATOMIC_RELAXED);
			}
			if (wk->tid == 0 && n % 256 == 0)
				tg_calls_expire(rc->c, 1, race_expired, rc);
		}
		pthread_barrier_wait(&rc->barrier);
		if (wk->tid == 0) {
			if (tg_calls_count(rc->c) != 0)
				race_fail(rc);
			for (unsigned i = 0; i < ROUND_IDS; i++) {
				if (rc->added[i] == 0 || rc->added[i] != rc->removed[i] ||
				    (i % 8 != 0 && rc->added[i] != 1))
					race_fail(rc);
			}
			rc->rounds++;
			rc->stop = tg_mono_ns() - rc->start_ns > 1000000000u || rc->rounds >= 10000;
		}
		pthread_barrier_wait(&rc->barrier);
		if (rc->stop)
			return NULL;
	}
}

static void
test_race(void **state)
{
	static struct race rc;
	pthread_t th[THREADS];
	struct worker wk[THREADS];

	(void)state;
	assert_int_equal(tg_calls_init(&rc.c, 20000), 0);
	assert_int_equal(pthread_barrier_init(&rc.barrier, NULL, THREADS), 0);
	rc.start_ns = tg_mono_ns();
	for (unsigned t = 0; t < THREADS; t++) {
		wk[t].rc = &rc;
		wk[t].tid = t;
		assert_int_equal(pthread_create(&th[t], NULL, race_worker, &wk[t]), 0);
	}
	for (unsigned t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	print_message("%u rounds of %u calls, %u threads\n", rc.rounds, ROUND_IDS, THREADS);
	assert_int_equal(rc.failures, 0);
	assert_true(rc.rounds > 0);
	pthread_barrier_destroy(&rc.barrier);
	tg_calls_free(rc.c);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest unit[] = {
	    cmocka_unit_test(test_init_errors),
	    cmocka_unit_test(test_insert_lookup_update_remove),
	    cmocka_unit_test(test_collisions_full_stripe),
	    cmocka_unit_test(test_full_stripe_alone),
	    cmocka_unit_test(test_expire),
	    cmocka_unit_test(test_expire_keeps_declined_calls),
	    cmocka_unit_test(test_reference_model),
	};
	const struct CMUnitTest race[] = {
	    cmocka_unit_test(test_race),
	};

	if (argc > 1 && strcmp(argv[1], "race") == 0)
		return cmocka_run_group_tests_name("calls_race", race, NULL, NULL);
	return cmocka_run_group_tests_name("calls", unit, NULL, NULL);
}
