/*
 * test_idem.c - the window of remembered ids.
 *
 * Unit group (default): a replay returns the first record; ids are
 * forgotten exactly when they leave the window; a stripe full of live ids
 * refuses, and has_room says so first; restore; a reference model over
 * random operations with a moving clock, collisions forced into one stripe
 * and one first slot (idem.c documents which digest bits pick them).  With
 * the argument "race": threads race to apply the same ids through lock,
 * check, record, and each id must be applied exactly once.
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
#include "tg_clock.h"
#include "tg_idem.h"
#include "testrand.h"

static struct tg_digest
tx_digest(unsigned round, unsigned i)
{
	char id[64];
	int n = snprintf(id, sizeof(id), "refill-%u-%u", round, i);

	return tg_digest(3, id, (size_t)n);
}

static struct tg_idem_rec
rec(uint64_t fp, int64_t reply, uint32_t seen)
{
	struct tg_idem_rec r;

	memset(&r, 0, sizeof(r));
	r.fingerprint = fp;
	r.reply = reply;
	r.seen = seen;
	r.result = TG_OK;
	return r;
}

/* Lock, and if d is new record it: the result of record, or TG_CONFLICT when d was there. */
static enum tg_result
apply(struct tg_idem *w, struct tg_digest d, uint32_t now, uint64_t fp)
{
	struct tg_idem_lock l;
	struct tg_idem_rec r = rec(fp, (int64_t)fp * 3, now);

	if (tg_idem_lock(w, d, now, &l) != NULL) {
		tg_idem_unlock(&l);
		return TG_CONFLICT;
	}
	return tg_idem_record_unlock(&l, &r);
}

/* fingerprint remembered for d at now, or UINT64_MAX */
static uint64_t
lookup(struct tg_idem *w, struct tg_digest d, uint32_t now)
{
	struct tg_idem_lock l;
	const struct tg_idem_rec *r = tg_idem_lock(w, d, now, &l);
	uint64_t fp = r ? r->fingerprint : UINT64_MAX;

	tg_idem_unlock(&l);
	return fp;
}

static void
test_init_errors(void **state)
{
	struct tg_idem *w = (struct tg_idem *)1;

	(void)state;
	assert_int_equal(tg_idem_init(&w, 0, 10), -EINVAL);
	assert_null(w);
	assert_int_equal(tg_idem_init(&w, SIZE_MAX / 2, 10), -ENOMEM);
	assert_null(w);
	tg_idem_free(NULL);
}

static void
test_replay(void **state)
{
	struct tg_idem *w;
	struct tg_idem_lock l;
	const struct tg_idem_rec *got;
	struct tg_idem_rec r = rec(77, -1500000, 1000);

	(void)state;
	assert_int_equal(tg_idem_init(&w, 10000, 86400), 0);
	r.result = TG_BLOCKED;
	assert_null(tg_idem_lock(w, tx_digest(0, 1), 1000, &l));
	assert_true(tg_idem_has_room(&l));
	assert_int_equal(tg_idem_record_unlock(&l, &r), TG_OK);
	assert_int_equal(tg_idem_count(w), 1);

	got = tg_idem_lock(w, tx_digest(0, 1), 1010, &l);
	assert_non_null(got);
	assert_int_equal(got->fingerprint, 77);
	assert_int_equal(got->reply, -1500000);
	assert_int_equal(got->seen, 1000);
	assert_int_equal(got->result, TG_BLOCKED);
	tg_idem_unlock(&l);

	/* the same bytes under another kind are another id */
	char id[64];
	int n = snprintf(id, sizeof(id), "refill-%u-%u", 0, 1);
	assert_null(tg_idem_lock(w, tg_digest(4, id, (size_t)n), 1010, &l));
	tg_idem_unlock(&l); /* a failed request: nothing remembered */
	assert_int_equal(tg_idem_count(w), 1);

	for (unsigned i = 0; i < 5000; i++)
		assert_int_equal(apply(w, tx_digest(1, i), 2000, i), TG_OK);
	for (unsigned i = 0; i < 5000; i++)
		assert_int_equal(apply(w, tx_digest(1, i), 2001, i), TG_CONFLICT);
	for (unsigned i = 0; i < 5000; i++)
		assert_int_equal(lookup(w, tx_digest(1, i), 2002), i);
	assert_int_equal(tg_idem_count(w), 5001);
	tg_idem_free(w);
}

/* Remembered through seen + window, forgotten one second later. */
static void
test_window(void **state)
{
	struct tg_idem *w;

	(void)state;
	assert_int_equal(tg_idem_init(&w, 1000, 100), 0);
	assert_int_equal(apply(w, tx_digest(0, 1), 1000, 5), TG_OK);
	assert_int_equal(lookup(w, tx_digest(0, 1), 999), 5); /* clock stepped back */
	assert_int_equal(lookup(w, tx_digest(0, 1), 1100), 5);
	assert_int_equal(lookup(w, tx_digest(0, 1), 1101), UINT64_MAX);
	/* the expired entry was reclaimed on the way: d is held once */
	assert_int_equal(tg_idem_count(w), 0);
	assert_int_equal(apply(w, tx_digest(0, 1), 1101, 6), TG_OK);
	assert_int_equal(lookup(w, tx_digest(0, 1), 1102), 6);
	assert_int_equal(tg_idem_count(w), 1);
	tg_idem_free(w);

	/* window 0: remembered for the second it was seen in */
	assert_int_equal(tg_idem_init(&w, 10, 0), 0);
	assert_int_equal(apply(w, tx_digest(0, 2), 50, 1), TG_OK);
	assert_int_equal(apply(w, tx_digest(0, 2), 50, 1), TG_CONFLICT);
	assert_int_equal(apply(w, tx_digest(0, 2), 51, 1), TG_OK);
	tg_idem_free(w);
}

/*
 * One stripe, one first slot, a run that wraps: it fills, has_room says no
 * before record does, and nothing live is ever pushed out.  Once the oldest
 * leave the window their slots are reused.
 */
static void
test_full_stripe(void **state)
{
	struct tg_idem *w;
	struct tg_idem_lock l;
	unsigned full = 0;

	(void)state;
	assert_int_equal(tg_idem_init(&w, 100, 60), 0);
	for (unsigned i = 0; i < 1000; i++) {
		/* the first half seen at 1000, the rest at 1030 */
		uint32_t now = i < 64 ? 1000 : 1030;
		struct tg_idem_rec r = rec(i, 0, now);

		assert_null(tg_idem_lock(w, it_crafted(1, 0xfffffffeu, i), now, &l));
		if (!tg_idem_has_room(&l)) {
			assert_int_equal(tg_idem_record_unlock(&l, &r), TG_FULL);
			full = i;
			break;
		}
		assert_int_equal(tg_idem_record_unlock(&l, &r), TG_OK);
	}
	assert_true(full >= 100); /* the capacity asked for; a stripe stops at 15/16 of its slots */
	assert_int_equal(tg_idem_count(w), full);
	for (unsigned i = 0; i < full; i++)
		assert_int_equal(lookup(w, it_crafted(1, 0xfffffffeu, i), 1060), i);
	/* at 1060 nothing has left the window yet */
	assert_int_equal(apply(w, it_crafted(1, 5, 5000), 1060, 1), TG_FULL);
	/* at 1061 the 64 seen at 1000 have: exactly 64 new ids fit */
	for (unsigned i = 0; i < 64; i++)
		assert_int_equal(apply(w, it_crafted(1, 5, 5000 + i), 1061, 5000 + i), TG_OK);
	assert_int_equal(apply(w, it_crafted(1, 5, 6000), 1061, 1), TG_FULL);
	assert_int_equal(tg_idem_count(w), full);
	for (unsigned i = 0; i < full; i++) {
		uint64_t want = i < 64 ? UINT64_MAX : i;

		assert_int_equal(lookup(w, it_crafted(1, 0xfffffffeu, i), 1061), want);
	}
	for (unsigned i = 0; i < 64; i++)
		assert_int_equal(lookup(w, it_crafted(1, 5, 5000 + i), 1061), 5000 + i);
	tg_idem_free(w);
}

static void
test_restore(void **state)
{
	struct tg_idem *w;
	struct tg_idem_rec r = rec(9, 42, 500);
	unsigned i;

	(void)state;
	assert_int_equal(tg_idem_init(&w, 100, 100), 0);
	assert_int_equal(tg_idem_restore(w, tx_digest(0, 0), &r), TG_OK);
	r.fingerprint = 10;
	assert_int_equal(tg_idem_restore(w, tx_digest(0, 0), &r), TG_CONFLICT);
	assert_int_equal(lookup(w, tx_digest(0, 0), 600), 9);
	assert_int_equal(lookup(w, tx_digest(0, 0), 601), UINT64_MAX);
	/* restored in journal order: older ones leave as newer come in */
	for (i = 0; i < 1000; i++) {
		struct tg_idem_rec ri = rec(i, 0, 500);

		if (tg_idem_restore(w, it_crafted(2, 0x80000000u, i), &ri) == TG_FULL)
			break;
	}
	assert_true(i >= 100 && i < 1000);
	/* the first one left when it was looked up at 601 */
	assert_int_equal(tg_idem_count(w), i);
	struct tg_idem_rec later = rec(1, 0, 601);
	assert_int_equal(tg_idem_restore(w, it_crafted(2, 0x80000000u, 1000), &later), TG_OK);
	assert_int_equal(tg_idem_count(w), 1);
	tg_idem_free(w);
}

/*
 * The reference model: a plain array of (present, seen, fingerprint) per
 * key, a clock that mostly moves forward and sometimes jumps, keys crowded
 * into two stripes and a few first slots, more keys than slots.  Every
 * lookup must agree with the model's idea of the window, and TG_FULL must
 * come exactly when the model's live entries fill the stripe.
 */
/* The model is one thread: under TSan (slow, and no race to find) it runs shorter. */
#if defined(TG_TSAN)
enum { MODEL_OPS = 200000 };
#else
enum { MODEL_OPS = 1000000 };
#endif
enum { MODEL_KEYS = 3000, MODEL_WINDOW = 50 };

struct model {
	bool present;
	uint32_t seen;
	uint64_t fp;
};

static struct tg_digest
model_key(unsigned k)
{
	uint32_t h;

	switch (k % 4) {
	case 0:
		h = 0xfffffff0u + k % 16;
		break;
	case 1:
		h = (k % 8) << 29;
		break;
	default:
		h = (uint32_t)(k * 2654435761u);
		break;
	}
	return it_crafted(k & 1, h, k);
}

static bool
model_live(const struct model *m, uint32_t now)
{
	return m->present && (uint64_t)m->seen + MODEL_WINDOW >= now;
}

static void
test_reference_model(void **state)
{
	static struct model model[MODEL_KEYS];
	struct tg_idem *w;
	struct tg_idem_lock l;
	uint64_t seed = 777;
	uint32_t now = 100000;
	unsigned full_at[2] = {0, 0}, fulls = 0, replays = 0, live[2] = {0, 0};
	uint32_t live_at = 0;

	(void)state;
	assert_int_equal(tg_idem_init(&w, 1500, MODEL_WINDOW), 0); /* two stripes */
	for (unsigned op = 0; op < MODEL_OPS; op++) {
		uint64_t r = it_splitmix(&seed);
		unsigned k = (unsigned)(r % MODEL_KEYS), s = k & 1,
		         what = (unsigned)(r >> 32) % 1000;
		struct model *m = &model[k];
		const struct tg_idem_rec *got;

		if (what < 3) /* the clock moves on a second */
			now++;
		else if (what == 3) /* ... or jumps */
			now += (uint32_t)(r >> 48) % 80;
		if (now != live_at) { /* live entries per stripe, at now */
			live[0] = live[1] = 0;
			for (unsigned j = 0; j < MODEL_KEYS; j++)
				live[j & 1] += model_live(&model[j], now);
			live_at = now;
		}
		got = tg_idem_lock(w, model_key(k), now, &l);
		assert_int_equal(got != NULL, model_live(m, now));
		if (got != NULL) {
			assert_int_equal(got->fingerprint, m->fp);
			assert_int_equal(got->seen, m->seen);
			replays++;
			tg_idem_unlock(&l);
			continue;
		}
		if (what % 7 == 0) { /* a request that failed: not remembered */
			tg_idem_unlock(&l);
			continue;
		}
		int room = tg_idem_has_room(&l);
		struct tg_idem_rec rr = rec(r, 0, now);
		enum tg_result res = tg_idem_record_unlock(&l, &rr);

		assert_int_equal(res, room ? TG_OK : TG_FULL);
		if (res == TG_FULL) {
			if (full_at[s] == 0)
				full_at[s] = live[s];
			assert_int_equal(live[s], full_at[s]);
			assert_true(live[s] >= 1500 / 2);
			fulls++;
			continue;
		}
		assert_true(full_at[s] == 0 || live[s] < full_at[s]);
		m->present = true;
		m->seen = now;
		m->fp = r;
		live[s]++;
		/* never more held than slots, never fewer than live */
		assert_true(tg_idem_count(w) <= (size_t)2 * (1500 * 5 / 4 / 2 + 8));
		assert_true(tg_idem_count(w) >= live[0] + live[1]);
	}
	for (unsigned k = 0; k < MODEL_KEYS; k++)
		assert_int_equal(lookup(w, model_key(k), now),
		                 model_live(&model[k], now) ? model[k].fp : UINT64_MAX);
	print_message("%u replays, %u refusals\n", replays, fulls);
	assert_true(fulls > 0);
	assert_true(replays > 0);
	tg_idem_free(w);
}

/*
 * A steady stream of new ids through a window sized for them: expired
 * entries are reclaimed as it goes, so nothing is refused and the map holds
 * not much more than the live ids.
 */
static void
test_steady_stream(void **state)
{
	enum { RATE = 100, WINDOW = 100, SECONDS = 2000 };
	struct tg_idem *w;
	size_t most = 0;

	(void)state;
	assert_int_equal(tg_idem_init(&w, RATE * (WINDOW + 1), WINDOW), 0);
	for (unsigned t = 0; t < SECONDS; t++) {
		for (unsigned i = 0; i < RATE; i++)
			assert_int_equal(apply(w, tx_digest(t, i), 1000 + t, i), TG_OK);
		if (tg_idem_count(w) > most)
			most = tg_idem_count(w);
	}
	print_message("held at most %zu for %u live\n", most, RATE * (WINDOW + 1));
	assert_true(most <= (size_t)RATE * (WINDOW + 1) * 11 / 10);
	tg_idem_free(w);
}

/*
 * The race: each round, THREADS threads walk the same ROUND_IDS ids in
 * their own orders and "apply" each through lock, check, record: a found
 * id is a replay and must carry the first applier's record; a new one is
 * applied (counted) and recorded.  Each round's clock is past the previous
 * round's window, so the map is also reclaiming under contention.  Every
 * id must be applied exactly once per round.
 */
enum { THREADS = 4, ROUND_IDS = 4096, RACE_WINDOW = 10 };

struct race {
	struct tg_idem *w;
	pthread_barrier_t barrier;
	struct tg_digest ids[ROUND_IDS];
	unsigned applied[ROUND_IDS];
	unsigned by[ROUND_IDS]; /* written and read under the id's stripe lock */
	unsigned stop, rounds, failures, replays;
	uint64_t start_ns;
};

struct worker {
	struct race *rc;
	unsigned tid;
};

static void
race_fail(struct race *rc)
{
	__atomic_fetch_add(&rc->failures, 1, __ATOMIC_RELAXED);
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

static void *
race_worker(void *arg)
{
	struct worker *wk = arg;
	struct race *rc = wk->rc;
	static unsigned orders[THREADS][ROUND_IDS];
	unsigned *order = orders[wk->tid];
	uint64_t seed = wk->tid * 1000003u + 7;

	for (unsigned round = 0;; round++) {
		uint32_t now = 1000000 + round * (RACE_WINDOW * 2);

		if (wk->tid == 0) {
			for (unsigned i = 0; i < ROUND_IDS; i++) {
				/* ids repeat every other round: the old entry must read as gone */
				rc->ids[i] = tx_digest(round % 2, i);
				rc->applied[i] = 0;
			}
		}
		pthread_barrier_wait(&rc->barrier);
		shuffle(order, ROUND_IDS, &seed);
		for (unsigned n = 0; n < ROUND_IDS; n++) {
			unsigned i = order[n];
			struct tg_idem_lock l;
			const struct tg_idem_rec *r = tg_idem_lock(rc->w, rc->ids[i], now, &l);

			if (r != NULL) {
				if (r->fingerprint != i || r->seen != now ||
				    r->reply != (int64_t)rc->by[i])
					race_fail(rc);
				__atomic_fetch_add(&rc->replays, 1, __ATOMIC_RELAXED);
				tg_idem_unlock(&l);
				continue;
			}
			if (!tg_idem_has_room(&l)) {
				race_fail(rc);
				tg_idem_unlock(&l);
				continue;
			}
			__atomic_fetch_add(&rc->applied[i], 1, __ATOMIC_RELAXED);
			rc->by[i] = wk->tid;
			struct tg_idem_rec rr = rec(i, (int64_t)wk->tid, now);
			if (tg_idem_record_unlock(&l, &rr) != TG_OK)
				race_fail(rc);
		}
		pthread_barrier_wait(&rc->barrier);
		if (wk->tid == 0) {
			for (unsigned i = 0; i < ROUND_IDS; i++)
				if (rc->applied[i] != 1)
					race_fail(rc);
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
	assert_int_equal(tg_idem_init(&rc.w, ROUND_IDS * 2, RACE_WINDOW), 0);
	assert_int_equal(pthread_barrier_init(&rc.barrier, NULL, THREADS), 0);
	rc.start_ns = tg_mono_ns();
	for (unsigned t = 0; t < THREADS; t++) {
		wk[t].rc = &rc;
		wk[t].tid = t;
		assert_int_equal(pthread_create(&th[t], NULL, race_worker, &wk[t]), 0);
	}
	for (unsigned t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	print_message("%u rounds of %u ids, %u threads, %u replays\n", rc.rounds, ROUND_IDS,
	              THREADS, rc.replays);
	assert_int_equal(rc.failures, 0);
	assert_true(rc.rounds > 0);
	assert_int_equal(rc.replays, rc.rounds * ROUND_IDS * (THREADS - 1));
	pthread_barrier_destroy(&rc.barrier);
	tg_idem_free(rc.w);
}

/*
 * The pair lock sees either digest, on one stripe or two, and holds both
 * stripes (a trylock of either fails) until unlocked; a trylock of a free
 * stripe works like tg_idem_lock.
 */
static void
test_pair_and_trylock(void **state)
{
	struct tg_idem *w;
	struct tg_idem_pair p;
	struct tg_idem_lock l;
	const struct tg_idem_rec *r;
	struct tg_digest a = it_crafted(1, 7, 1), b = it_crafted(1, 7, 2), c = it_crafted(2, 9, 3),
	                 free_one = it_crafted(3, 9, 4);

	(void)state;
	assert_int_equal(tg_idem_init(&w, 4096, 60), 0);
	assert_int_equal(apply(w, a, 100, 1), TG_OK);
	/* a remembered: on its own stripe with b, and beside c's stripe; c alone is not. */
	assert_true(tg_idem_lock_pair(w, b, a, 100, &p));
	tg_idem_unlock_pair(&p);
	assert_true(tg_idem_lock_pair(w, c, a, 100, &p));
	assert_false(tg_idem_trylock(w, a, 100, &l, &r));
	assert_false(tg_idem_trylock(w, c, 100, &l, &r));
	assert_true(tg_idem_trylock(w, free_one, 100, &l, &r));
	assert_null(r);
	tg_idem_unlock(&l);
	tg_idem_unlock_pair(&p);
	assert_false(tg_idem_lock_pair(w, c, b, 100, &p));
	tg_idem_unlock_pair(&p);
	/* Free again, and a trylock finds a as tg_idem_lock does; past the window it is gone. */
	assert_true(tg_idem_trylock(w, a, 100, &l, &r));
	assert_non_null(r);
	assert_int_equal(r->fingerprint, 1);
	tg_idem_unlock(&l);
	assert_false(tg_idem_lock_pair(w, a, c, 161, &p));
	tg_idem_unlock_pair(&p);
	tg_idem_free(w);
}

/* ---- the disk tier's protocol (idstore.c is the real hook; this one is a sorted array) ---- */

struct fake_disk {
	struct tg_digest *d;
	struct tg_idem_rec *r;
	size_t n, cap;
	unsigned calls;
	int fail; /* a read error to return */
};

static int
fake_find(void *arg, struct tg_digest d, struct tg_idem_rec *out)
{
	struct fake_disk *f = arg;
	f->calls++;
	if (f->fail)
		return f->fail;
	for (size_t i = 0; i < f->n; i++)
		if (f->d[i].lo == d.lo && f->d[i].hi == d.hi) {
			*out = f->r[i];
			return 1;
		}
	return 0;
}

static void
fake_put(struct fake_disk *f, struct tg_digest d, struct tg_idem_rec r)
{
	if (f->n == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 1024;
		f->d = realloc(f->d, f->cap * sizeof(*f->d));
		f->r = realloc(f->r, f->cap * sizeof(*f->r));
		assert_non_null(f->d);
		assert_non_null(f->r);
	}
	f->d[f->n] = d;
	f->r[f->n++] = r;
}

/*
 * Ids moved to "disk" leave memory and are found through the hook with
 * their first reply; new ids almost never reach the hook (filter false
 * positives, well under 1 %); an id that left the disk is new again; a read
 * error is said; a filter with no room keeps the id in memory.
 */
static void
test_disk_tier(void **state)
{
	struct tg_idem *w;
	struct tg_idem_lock l;
	struct fake_disk f = {0};
	const unsigned n = 20000;

	(void)state;
	assert_int_equal(tg_idem_init(&w, 4096, 100000), 0);
	struct tg_idem_disk hook = {.find = fake_find, .arg = &f};
	assert_int_equal(tg_idem_set_disk(w, &hook, 100000), 0);
	assert_int_equal(tg_idem_set_disk(w, &hook, 100000), -EINVAL);
	/* Waves of 2000: applied in memory, then moved, as the mover does. */
	for (unsigned i = 0; i < n; i++) {
		struct tg_digest d = tx_digest(7, i);
		assert_int_equal(apply(w, d, 1000, i), TG_OK);
		if (i % 2000 == 1999)
			for (unsigned k = i - 1999; k <= i; k++) {
				struct tg_digest m = tx_digest(7, k);
				fake_put(&f, m, rec(k, (int64_t)k * 3, 1000));
				assert_int_equal(tg_idem_moved(w, m), 0);
			}
	}
	assert_int_equal(tg_idem_count(w), 0);
	assert_int_equal(tg_idem_on_disk(w), n);
	/* Every id is still remembered, with its first reply, from disk. */
	f.calls = 0;
	for (unsigned i = 0; i < n; i += 7) {
		const struct tg_idem_rec *r = tg_idem_lock(w, tx_digest(7, i), 1001, &l);
		assert_non_null(r);
		assert_int_equal(r->fingerprint, i);
		assert_int_equal(r->reply, (int64_t)i * 3);
		assert_int_equal(l.err, 0);
		tg_idem_unlock(&l);
	}
	assert_int_equal(f.calls, (n + 6) / 7);
	/* New ids: the filter answers, the disk is read for false positives only. */
	f.calls = 0;
	for (unsigned i = 0; i < 100000; i++) {
		assert_null(tg_idem_lock(w, tx_digest(8, i), 1001, &l));
		tg_idem_unlock(&l);
	}
	fprintf(stderr, "disk tier: %u disk reads for 100000 new ids (filter false positives)\n",
	        f.calls);
	assert_true(f.calls < 1000);
	/* A pair finds an ended id on disk too. */
	struct tg_idem_pair p;
	assert_true(tg_idem_lock_pair(w, tx_digest(8, 1), tx_digest(7, 5), 1001, &p));
	tg_idem_unlock_pair(&p);
	assert_false(tg_idem_lock_pair(w, tx_digest(8, 1), tx_digest(8, 2), 1001, &p));
	tg_idem_unlock_pair(&p);
	/* Past the horizon on disk counts as absent. */
	assert_null(tg_idem_lock(w, tx_digest(7, 0), 1000 + 100001, &l));
	tg_idem_unlock(&l);
	/* Out of the filter (forgotten): new again, and no disk read. */
	tg_idem_unmoved(w, tx_digest(7, 14).lo);
	assert_int_equal(tg_idem_on_disk(w), n - 1);
	f.calls = 0;
	assert_null(tg_idem_lock(w, tx_digest(7, 14), 1001, &l));
	tg_idem_unlock(&l);
	/* A read error: no record, err set, the caller refuses. */
	f.fail = -EIO;
	assert_null(tg_idem_lock(w, tx_digest(7, 21), 1001, &l));
	assert_int_equal(l.err, -EIO);
	tg_idem_unlock(&l);
	f.fail = 0;
	/* With a disk tier, a full stripe waits for the mover: nothing is evicted. */
	for (unsigned i = 0; i < 100000; i++) {
		assert_null(tg_idem_lock(w, it_crafted(3, 0xfffffff0u, i), 1001, &l));
		if (!tg_idem_has_room(&l)) {
			assert_false(tg_idem_evict_oldest(&l));
			tg_idem_unlock(&l);
			break;
		}
		struct tg_idem_rec r = rec(i, 0, 1001);
		assert_int_equal(tg_idem_record_unlock(&l, &r), TG_OK);
	}
	tg_idem_free(w);
	free(f.d);
	free(f.r);

	/* A filter sized for 1000 ids takes many more only up to its room: -ENOSPC, id kept. */
	assert_int_equal(tg_idem_init(&w, 512, 100000), 0);
	assert_int_equal(tg_idem_set_disk(w, &hook, 64), 0);
	unsigned refused = 0;
	for (unsigned i = 0; i < 100000 && refused == 0; i++) {
		struct tg_digest d = tx_digest(9, i);
		assert_int_equal(apply(w, d, 1000, i), TG_OK);
		if (tg_idem_moved(w, d) == -ENOSPC) {
			refused = i;
			assert_int_equal(lookup(w, d, 1000), i); /* still in memory */
		}
	}
	assert_true(refused > 0);
	tg_idem_free(w);
}

/* Without a disk tier a full stripe forgets its oldest id to make room. */
static void
test_evict_oldest_without_disk(void **state)
{
	struct tg_idem *w;
	struct tg_idem_lock l;

	(void)state;
	assert_int_equal(tg_idem_init(&w, 100, 100000), 0);
	unsigned i;
	for (i = 0;; i++) {
		assert_null(tg_idem_lock(w, it_crafted(1, 0xfffffffeu, i), 1000 + i, &l));
		if (!tg_idem_has_room(&l))
			break;
		struct tg_idem_rec r = rec(i, 0, 1000 + i);
		assert_int_equal(tg_idem_record_unlock(&l, &r), TG_OK);
	}
	assert_true(tg_idem_evict_oldest(&l));
	struct tg_idem_rec r = rec(i, 0, 1000 + i);
	assert_int_equal(tg_idem_record_unlock(&l, &r), TG_OK);
	assert_int_equal(lookup(w, it_crafted(1, 0xfffffffeu, 0), 1000 + i), UINT64_MAX);
	assert_int_equal(lookup(w, it_crafted(1, 0xfffffffeu, 1), 1000 + i), 1);
	assert_int_equal(lookup(w, it_crafted(1, 0xfffffffeu, i), 1000 + i), i);
	tg_idem_free(w);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest unit[] = {
	    cmocka_unit_test(test_init_errors),   cmocka_unit_test(test_replay),
	    cmocka_unit_test(test_window),        cmocka_unit_test(test_full_stripe),
	    cmocka_unit_test(test_restore),       cmocka_unit_test(test_reference_model),
	    cmocka_unit_test(test_steady_stream), cmocka_unit_test(test_pair_and_trylock),
	    cmocka_unit_test(test_disk_tier),     cmocka_unit_test(test_evict_oldest_without_disk),
	};
	const struct CMUnitTest race[] = {
	    cmocka_unit_test(test_race),
	};

	if (argc > 1 && strcmp(argv[1], "race") == 0)
		return cmocka_run_group_tests_name("idem_race", race, NULL, NULL);
	return cmocka_run_group_tests_name("idem", unit, NULL, NULL);
}
