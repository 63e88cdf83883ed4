/*
 * idem.c - the window of remembered ids, from (kind, id) digest to the first
 * reply.
 *
 * Owns the memory of every id applied within the last window_s seconds and
 * the striped locks that make "look up, apply, remember" one step.  Each
 * stripe is a small open-addressing table (linear probing, backward-shift
 * deletion, no tombstones) under one ck spinlock on its own cache line.  It
 * must never allocate after tg_idem_init, never make a syscall or wait while
 * a stripe is locked, and never forget an id still inside the window to
 * make room: a full stripe refuses (TG_FULL) instead.
 *
 * Expiry is lazy, so no thread ever walks the whole map: an entry is
 * "expired" when seen + window_s < now, and from then on counts as absent.
 * Expired entries are reclaimed (1) when a lookup's probe passes them, and
 * (2) by a short sweep after each insert into a stripe more than 3/4 full,
 * which keeps the load, and so the probe length, near what the live entries
 * need.  (1) also means a stripe with no free slot is full of live entries:
 * a lookup there walks every slot unless it meets an expired one, which it
 * reclaims.  So "room" is just a free slot, and a full stripe costs a walk
 * of the stripe per new id until entries leave the window: the price of
 * running past capacity, paid instead of forgetting a live id.
 * tg_idem_count counts entries held, expired ones not yet reclaimed
 * included: an upper bound of the ids remembered.
 *
 * Geometry as in calls.c: stripe by the low bits of d.lo, first slot by the
 * high 32 bits of d.hi; about TG__STRIPE_MEAN ids of capacity per stripe, 1.25
 * slots per id.  Memory: 40 bytes per slot (16 of digest, 24 of struct
 * tg_idem_rec), so 50 bytes per id of capacity, plus 64 per stripe.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tg_atomic.h" /* before any ck header: selects ck's backend under TSan */
#include <ck_pr.h>
#include <ck_spinlock.h>

#include "stripe.h"
#include "tg_assert.h"
#include "tg_idem.h"

#define IDEM_MAGIC 0x6964656du /* "idem" */
#define CACHE_LINE 64
/* Slots a post-insert sweep looks at. */
#define SWEEP_STEP 16
/* The disk filter: slots per bucket, relocations before an add gives up, and
 * the most ids per bucket it is sized for (a load of at most 4/5). */
#define FILTER_WAYS  4
#define FILTER_KICKS 256

struct slot {
	struct tg_digest d; /* zero: free */
	struct tg_idem_rec r;
};

_Static_assert(sizeof(struct slot) == 40, "memory per id is documented");

struct stripe {
	ck_spinlock_fas_t lock;
	uint32_t used;   /* slots holding an entry, live or expired */
	uint32_t sweep;  /* where the next sweep starts */
	uint32_t moves;  /* ids of this stripe moved to disk, ever (wraps) */
	uint32_t fcount; /* fingerprints in this stripe's disk filter */
} __attribute__((aligned(CACHE_LINE)));

_Static_assert(sizeof(struct stripe) == CACHE_LINE, "one stripe header per cache line");

struct tg_idem {
	uint32_t magic;
	uint32_t nslots; /* per stripe */
	uint32_t limit;  /* entries a stripe may hold: 15/16 of nslots */
	unsigned mask;   /* stripes - 1 */
	uint32_t window;
	struct stripe *stripes;
	struct slot *slots; /* stripe s owns slots[s * nslots ...] */
	/*
	 * The disk tier (tg_idem_set_disk): ids moved out of memory into runs on
	 * disk.  Each stripe has a cuckoo filter of 16-bit fingerprints, fbuckets
	 * buckets of FILTER_WAYS, at filter + s * fbuckets * FILTER_WAYS, under
	 * the stripe's lock like its slots: a move is one step, a filter add and
	 * a delete of the memory entry, so a reader holding the lock finds an id
	 * in one place or the other, never in neither.
	 */
	struct tg_idem_disk disk;
	uint16_t *filter;
	uint32_t fbuckets; /* per stripe, a power of two; 0: no disk tier */
	/* Entries held, all stripes; written under a stripe lock, read anywhere. */
	uint64_t count __attribute__((aligned(CACHE_LINE)));
};

/* Seen at seen, is it still remembered at now?  A seen after now is live. */
static inline bool
live(const struct tg_idem *w, uint32_t seen, uint32_t now)
{
	return (uint64_t)seen + w->window >= now;
}

static inline uint32_t
next(const struct tg_idem *w, uint32_t i)
{
	return i + 1 == w->nslots ? 0 : i + 1;
}

static inline struct slot *
stripe_slots(const struct tg_idem *w, unsigned s)
{
	return w->slots + (size_t)s * w->nslots;
}

/* ---- the disk filter: a cuckoo filter per stripe (Fan et al., 2014) ---- */

/*
 * An id's filter key is its digest's lo, which already chose the stripe
 * with its low bits: the fingerprint and the first bucket come from the
 * high ones.  A fingerprint is never 0 (an empty slot).
 */
static inline uint16_t
f_print(uint64_t lo)
{
	uint16_t f = (uint16_t)(lo >> 32);
	return f ? f : 1;
}

static inline uint32_t
f_bucket1(const struct tg_idem *w, uint64_t lo)
{
	return (uint32_t)(lo >> 48 ^ lo >> 16) & (w->fbuckets - 1);
}

/* The other bucket of a fingerprint in bucket b: an involution, as partial-key cuckoo needs. */
static inline uint32_t
f_alt(const struct tg_idem *w, uint32_t b, uint16_t f)
{
	return (b ^ (uint32_t)((f * 0x5bd1e995u) >> 15)) & (w->fbuckets - 1);
}

static inline uint16_t *
f_slots(const struct tg_idem *w, unsigned s, uint32_t b)
{
	return w->filter + ((size_t)s * w->fbuckets + b) * FILTER_WAYS;
}

static bool
f_has(const struct tg_idem *w, unsigned s, uint32_t b, uint16_t f)
{
	const uint16_t *k = f_slots(w, s, b);
	for (unsigned i = 0; i < FILTER_WAYS; i++)
		if (k[i] == f)
			return true;
	return false;
}

/* Might lo have moved to disk?  Stripe s (lo's) locked.  False is certain. */
static bool
f_maybe(const struct tg_idem *w, unsigned s, uint64_t lo)
{
	if (w->fbuckets == 0 || w->stripes[s].fcount == 0)
		return false;
	uint16_t f = f_print(lo);
	uint32_t b = f_bucket1(w, lo);
	return f_has(w, s, b, f) || f_has(w, s, f_alt(w, b, f), f);
}

static inline void
f_prefetch(const struct tg_idem *w, uint64_t lo)
{
	unsigned s = (unsigned)(lo & w->mask);
	uint16_t f = f_print(lo);
	uint32_t b = f_bucket1(w, lo);

	__builtin_prefetch(f_slots(w, s, b), 1);
	__builtin_prefetch(f_slots(w, s, f_alt(w, b, f)), 1);
}

static bool
f_put(uint16_t *k, uint16_t f)
{
	for (unsigned i = 0; i < FILTER_WAYS; i++)
		if (k[i] == 0) {
			k[i] = f;
			return true;
		}
	return false;
}

/*
 * Add lo's fingerprint to stripe s (locked).  false, with the filter as it
 * was, when FILTER_KICKS relocations find no room (the kicks are undone).
 */
static bool
f_add(struct tg_idem *w, unsigned s, uint64_t lo)
{
	struct {
		uint32_t b;
		unsigned i;
	} path[FILTER_KICKS];
	uint16_t f = f_print(lo);
	uint32_t b = f_bucket1(w, lo);

	if (f_put(f_slots(w, s, b), f) || f_put(f_slots(w, s, f_alt(w, b, f)), f))
		goto added;
	/* Evict along a path; the slot taken is chosen by the step, so it is repeatable. */
	for (unsigned n = 0; n < FILTER_KICKS; n++) {
		uint16_t *k = f_slots(w, s, b);
		unsigned i = (unsigned)(lo >> (n % 48) ^ n) % FILTER_WAYS;
		uint16_t out = k[i];
		k[i] = f;
		path[n].b = b;
		path[n].i = i;
		f = out;
		b = f_alt(w, b, f);
		if (f_put(f_slots(w, s, b), f))
			goto added;
	}
	/* No room: put every fingerprint back where it was, last kick first. */
	for (unsigned n = FILTER_KICKS; n-- > 0;) {
		uint16_t *k = f_slots(w, s, path[n].b);
		uint16_t back = k[path[n].i];
		k[path[n].i] = f;
		f = back;
	}
	return false;
added:
	/* Read without the lock by tg_idem_on_disk: an atomic store. */
	tg_store_32(&w->stripes[s].fcount, w->stripes[s].fcount + 1);
	return true;
}

/* Take one copy of lo's fingerprint out of stripe s (locked); false when none is there. */
static bool
f_del(struct tg_idem *w, unsigned s, uint64_t lo)
{
	uint16_t f = f_print(lo);
	uint32_t b1 = f_bucket1(w, lo), b2 = f_alt(w, b1, f);

	for (int pass = 0; pass < 2; pass++) {
		uint16_t *k = f_slots(w, s, pass ? b2 : b1);
		for (unsigned i = 0; i < FILTER_WAYS; i++)
			if (k[i] == f) {
				k[i] = 0;
				tg_store_32(&w->stripes[s].fcount, w->stripes[s].fcount - 1);
				return true;
			}
	}
	return false;
}

/* Backward-shift deletion of slot i of stripe s (locked); see calls.c. */
static void
delete_at(struct tg_idem *w, unsigned s, uint32_t i)
{
	struct slot *sl = stripe_slots(w, s);
	uint32_t hole = i, j = i;

	TG_ASSERT(!tg__key_free(&sl[i].d));
	memset(&sl[hole], 0, sizeof(sl[hole]));
	for (;;) {
		j = next(w, j);
		if (tg__key_free(&sl[j].d))
			break;
		uint32_t k = tg__home(&sl[j].d, w->nslots);
		bool stays = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
		if (stays)
			continue;
		sl[hole] = sl[j];
		memset(&sl[j], 0, sizeof(sl[j]));
		hole = j;
	}
	w->stripes[s].used--;
	tg__count_add(&w->count, -1);
}

/*
 * Slot of d in stripe s (locked), or -1; expired entries on the probe path
 * are reclaimed on the way (d's own included, so d is never held twice).
 * Only live entries count towards the nslots bound, so -1 leaves either a
 * free slot in the stripe or no expired entry in it.
 */
static int64_t
find(struct tg_idem *w, unsigned s, const struct tg_digest *d, uint32_t now)
{
	struct slot *sl = stripe_slots(w, s);
	uint32_t i = tg__home(d, w->nslots);

	for (uint32_t n = 0; n < w->nslots;) {
		if (tg__key_free(&sl[i].d))
			return -1;
		if (!live(w, sl[i].r.seen, now)) {
			delete_at(w, s, i); /* a later entry may now be at i */
			continue;
		}
		if (tg__key_eq(&sl[i].d, d))
			return i;
		i = next(w, i);
		n++;
	}
	return -1;
}

/*
 * Can stripe s (locked) take one more entry?  Asked only after find
 * returned -1 at the same now, so a stripe with no free slot holds no
 * expired entry either (see find).
 */
static bool
room(struct tg_idem *w, unsigned s, uint32_t now)
{
	struct stripe *st = &w->stripes[s];
	struct slot *sl = stripe_slots(w, s);

	if (st->used < w->limit)
		return true;
	/*
	 * At the limit: clear every expired entry of the stripe before saying
	 * no.  Linear probing stays short because a stripe is never filled past
	 * the limit (15/16 of its slots), and the window never holds much more
	 * than its capacity.
	 */
	for (uint32_t i = 0; i < w->nslots;) {
		if (!tg__key_free(&sl[i].d) && !live(w, sl[i].r.seen, now))
			delete_at(w, s, i); /* look at i again */
		else
			i++;
	}
	return st->used < w->limit;
}

/*
 * After an insert into a stripe more than 3/4 full, look at the next
 * SWEEP_STEP slots, so that expired entries do not pile up where no lookup
 * passes.  A full turn of the cursor takes nslots / SWEEP_STEP inserts, so
 * at most about that many expired entries linger (1/16 of the stripe).
 */
static void
sweep(struct tg_idem *w, unsigned s, uint32_t now)
{
	struct stripe *st = &w->stripes[s];
	struct slot *sl = stripe_slots(w, s);
	uint32_t i = st->sweep;

	if ((uint64_t)st->used * 4 <= (uint64_t)w->nslots * 3)
		return;
	for (unsigned n = 0; n < SWEEP_STEP; n++) {
		if (!tg__key_free(&sl[i].d) && !live(w, sl[i].r.seen, now))
			delete_at(w, s, i); /* look at i again */
		else
			i = next(w, i);
	}
	st->sweep = i;
}

/* Put d, r into stripe s (locked), which has room and does not hold d. */
static void
insert(struct tg_idem *w, unsigned s, const struct tg_digest *d, const struct tg_idem_rec *r)
{
	struct stripe *st = &w->stripes[s];
	struct slot *sl = stripe_slots(w, s);
	uint32_t i = tg__home(d, w->nslots);

	TG_ASSERT(st->used < w->nslots);
	while (!tg__key_free(&sl[i].d))
		i = next(w, i);
	sl[i].d = *d;
	sl[i].r = *r;
	st->used++;
	tg__count_add(&w->count, 1);
}

/*
 * Allocates everything the window will ever use.  capacity 0 is -EINVAL;
 * memory that cannot be had (or computed) is -ENOMEM.  window_s 0 keeps an
 * id for the second it was seen in.
 */
int
tg_idem_init(struct tg_idem **out, size_t capacity, uint32_t window_s)
{
	struct tg_idem *w;
	unsigned nstripes;
	uint32_t nslots;

	*out = NULL;
	if (capacity == 0)
		return -EINVAL;
	if (!tg__stripe_geometry(capacity, &nstripes, &nslots))
		return -ENOMEM;
	w = tg__alloc_lines(1, sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	w->nslots = nslots;
	w->limit = nslots - nslots / 16;
	w->mask = nstripes - 1;
	w->window = window_s;
	w->stripes = tg__alloc_lines(nstripes, sizeof(*w->stripes));
	/* calloc: for an array this size the pages come zeroed from the kernel, untouched until
	 * used. */
	w->slots = calloc((size_t)nstripes * nslots, sizeof(*w->slots));
	if (w->stripes == NULL || w->slots == NULL) {
		tg_idem_free(w);
		return -ENOMEM;
	}
	/* Read at random, one slot per request: a TLB miss each with 4 KiB pages. */
	tg__huge_pages(w->slots, (size_t)nstripes * nslots * sizeof(*w->slots));
	for (unsigned s = 0; s < nstripes; s++)
		ck_spinlock_fas_init(&w->stripes[s].lock);
	w->magic = IDEM_MAGIC;
	*out = w;
	return 0;
}

/* No thread may be using w. */
void
tg_idem_free(struct tg_idem *w)
{
	if (w == NULL)
		return;
	free(w->stripes);
	free(w->slots);
	free(w->filter);
	w->magic = 0;
	free(w);
}

/*
 * Entries held, expired ones not yet reclaimed included (an upper bound of
 * the ids remembered); a recent value while other threads insert.
 */
size_t
tg_idem_count(const struct tg_idem *w)
{
	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	return (size_t)tg_load_64((uint64_t *)(uintptr_t)&w->count);
}

/*
 * For recovery, before or while workers run.  Liveness is judged at r->seen:
 * an entry that had left the window by then counts as absent and may be
 * reclaimed, so ids restored in journal order behave as they did when first
 * applied.  TG_CONFLICT when d is held (the record is left as it was),
 * TG_FULL when its stripe is full of live entries.
 */
enum tg_result
tg_idem_restore(struct tg_idem *w, struct tg_digest d, const struct tg_idem_rec *r)
{
	unsigned s;
	enum tg_result res = TG_OK;

	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	TG_ASSERT(!tg__key_free(&d));
	s = (unsigned)(d.lo & w->mask);
	tg__spin_lock(&w->stripes[s].lock);
	if (find(w, s, &d, r->seen) >= 0)
		res = TG_CONFLICT;
	else if (!room(w, s, r->seen))
		res = TG_FULL;
	else {
		insert(w, s, &d, r);
		sweep(w, s, r->seen);
	}
	tg__spin_unlock(&w->stripes[s].lock);
	return res;
}

/*
 * d is not in memory and its stripe's filter says it may be on disk; the
 * stripe is locked.  Read it from disk with the lock released (no system
 * call under a spinlock), then lock again.  Found: a copy in l->disk,
 * returned.  Not found: a false positive, unless an id of the stripe moved
 * to disk meanwhile (d itself may have: look again).  A read error: NULL
 * with l->err set; the caller must refuse the request.
 */
static const struct tg_idem_rec *
from_disk(struct tg_idem *w, struct tg_idem_lock *l)
{
	struct stripe *st = &w->stripes[l->stripe];

	for (;;) {
		uint32_t moves = st->moves;
		tg__spin_unlock(&st->lock);
		int rc = w->disk.find(w->disk.arg, l->d, &l->disk);
		tg__spin_lock(&st->lock);
		if (rc < 0) {
			l->err = rc;
			return NULL;
		}
		if (rc > 0 && live(w, l->disk.seen, l->now))
			return &l->disk;
		int64_t i = find(w, l->stripe, &l->d, l->now);
		if (i >= 0) {
			l->slot = &stripe_slots(w, l->stripe)[i];
			return &((struct slot *)l->slot)->r;
		}
		if (st->moves == moves || !f_maybe(w, l->stripe, l->d.lo))
			return NULL;
	}
}

/*
 * d must not be zero.  Spins until d's stripe is free; the caller holds it
 * until tg_idem_unlock or tg_idem_record_unlock.  Lock order: at most one
 * idem stripe at a time (or one pair, tg_idem_lock_pair), taken before any
 * calls stripe (see calls.c), never while one is held (tg_idem_trylock may
 * be).  The record returned stays valid only while the lock
 * is held.  May reclaim expired entries of the stripe.
 */
const struct tg_idem_rec *
tg_idem_lock(struct tg_idem *w, struct tg_digest d, uint32_t now, struct tg_idem_lock *l)
{
	int64_t i;

	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	TG_ASSERT(!tg__key_free(&d));
	l->w = w;
	l->stripe = (unsigned)(d.lo & w->mask);
	l->d = d;
	l->now = now;
	l->err = 0;
	tg__spin_lock(&w->stripes[l->stripe].lock);
	i = find(w, l->stripe, &d, now);
	l->slot = i < 0 ? NULL : &stripe_slots(w, l->stripe)[i];
	if (i >= 0)
		return &((struct slot *)l->slot)->r;
	return f_maybe(w, l->stripe, d.lo) ? from_disk(w, l) : NULL;
}

/*
 * As tg_idem_lock, but one attempt: false, nothing locked, when d's stripe
 * is held by someone else.  For a caller holding a calls stripe (expiry),
 * which must not wait for an idem stripe: a waiting idem holder may be
 * waiting for that calls stripe.  On true *rec is as tg_idem_lock returns.
 */
bool
tg_idem_trylock(struct tg_idem *w, struct tg_digest d, uint32_t now, struct tg_idem_lock *l,
                const struct tg_idem_rec **rec)
{
	int64_t i;

	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	TG_ASSERT(!tg__key_free(&d));
	l->w = w;
	l->stripe = (unsigned)(d.lo & w->mask);
	l->d = d;
	l->now = now;
	if (!tg__spin_trylock(&w->stripes[l->stripe].lock)) {
		l->w = NULL;
		return false;
	}
	i = find(w, l->stripe, &d, now);
	l->slot = i < 0 ? NULL : &stripe_slots(w, l->stripe)[i];
	*rec = i < 0 ? NULL : &((struct slot *)l->slot)->r;
	return true;
}

/*
 * Lock the stripes of a and b together, the lower stripe first (once when
 * they share one), and say whether either digest is remembered.  The one
 * way to hold two idem stripes: every holder of two took them in stripe
 * order, and a holder of one takes no other, so no cycle can form.  Unlock
 * with tg_idem_unlock_pair.
 */
bool
tg_idem_lock_pair(struct tg_idem *w, struct tg_digest a, struct tg_digest b, uint32_t now,
                  struct tg_idem_pair *p)
{
	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	TG_ASSERT(!tg__key_free(&a) && !tg__key_free(&b));
	unsigned sa = (unsigned)(a.lo & w->mask), sb = (unsigned)(b.lo & w->mask);
	p->w = w;
	p->lo = sa < sb ? sa : sb;
	p->hi = sa < sb ? sb : sa;
	tg__spin_lock(&w->stripes[p->lo].lock);
	if (p->hi != p->lo)
		tg__spin_lock(&w->stripes[p->hi].lock);
	for (;;) {
		/* Both finds before anything is read: a find may move the other's entry. */
		bool in_a = find(w, sa, &a, now) >= 0;
		bool in_b = find(w, sb, &b, now) >= 0;
		if (in_a || in_b)
			return true;
		bool may_a = f_maybe(w, sa, a.lo), may_b = f_maybe(w, sb, b.lo);
		if (!may_a && !may_b)
			return false;
		/* As from_disk, for two: read with both stripes released. */
		uint32_t ma = w->stripes[sa].moves, mb = w->stripes[sb].moves;
		struct tg_idem_rec r;
		tg_idem_unlock_pair(p);
		p->w = w;
		int ra = may_a ? w->disk.find(w->disk.arg, a, &r) : 0;
		bool live_a = ra > 0 && live(w, r.seen, now);
		int rb = may_b && !live_a ? w->disk.find(w->disk.arg, b, &r) : 0;
		bool live_b = rb > 0 && live(w, r.seen, now);
		tg__spin_lock(&w->stripes[p->lo].lock);
		if (p->hi != p->lo)
			tg__spin_lock(&w->stripes[p->hi].lock);
		/* A read error counts as remembered: the caller refuses, nothing is double-charged.
		 */
		if (live_a || live_b || ra < 0 || rb < 0)
			return true;
		if (w->stripes[sa].moves == ma && w->stripes[sb].moves == mb)
			return false;
	}
}

/* p must be locked by tg_idem_lock_pair; afterwards it is not. */
void
tg_idem_unlock_pair(struct tg_idem_pair *p)
{
	struct tg_idem *w = p->w;

	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	p->w = NULL;
	if (p->hi != p->lo)
		tg__spin_unlock(&w->stripes[p->hi].lock);
	tg__spin_unlock(&w->stripes[p->lo].lock);
}

/* l must be locked; afterwards it is not, and the record returned is stale. */
void
tg_idem_unlock(struct tg_idem_lock *l)
{
	struct tg_idem *w = l->w;

	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	l->w = NULL;
	l->slot = NULL;
	tg__spin_unlock(&w->stripes[l->stripe].lock);
}

/*
 * l must be locked on a d that tg_idem_lock did not find.  Copies r in;
 * r->seen should be l->now (an older seen is forgotten sooner).  TG_FULL,
 * remembering nothing, when every slot of the stripe holds an entry still
 * inside the window; tg_idem_has_room says so beforehand.  Either way
 * unlocks.
 */
enum tg_result
tg_idem_record_unlock(struct tg_idem_lock *l, const struct tg_idem_rec *r)
{
	struct tg_idem *w = l->w;
	enum tg_result res = TG_OK;

	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	TG_ASSERT(l->slot == NULL);
	if (room(w, l->stripe, l->now)) {
		insert(w, l->stripe, &l->d, r);
		sweep(w, l->stripe, l->now);
	} else {
		res = TG_FULL;
	}
	tg_idem_unlock(l);
	return res;
}

/*
 * l must be locked on a d that tg_idem_lock did not find.  True exactly
 * when tg_idem_record_unlock under this same lock will succeed.
 */
int
tg_idem_has_room(const struct tg_idem_lock *l)
{
	TG_CHECK_OBJ_NOTNULL(l->w, IDEM_MAGIC);
	TG_ASSERT(l->slot == NULL);
	return room(l->w, l->stripe, l->now);
}

/* ---- the disk tier ---- */

/*
 * Before any worker runs.  Gives each stripe a filter for about
 * capacity / stripes ids at a load of at most 4/5 (16 bits an id: 2 to
 * 2.5 bytes of memory per id on disk), and installs hook, through which
 * lookups read ids that are not in memory but may be on disk.  0, -EINVAL
 * (called twice, or capacity 0), -ENOMEM.
 */
int
tg_idem_set_disk(struct tg_idem *w, const struct tg_idem_disk *hook, size_t capacity)
{
	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	if (w->fbuckets != 0 || capacity == 0 || hook == NULL || hook->find == NULL)
		return -EINVAL;
	size_t stripes = (size_t)w->mask + 1;
	size_t per = capacity / stripes + 1, buckets = 1;
	while (buckets * FILTER_WAYS * 4 < per * 5)
		buckets *= 2;
	if (buckets > UINT32_MAX / FILTER_WAYS)
		return -ENOMEM;
	w->filter = calloc(stripes * buckets * FILTER_WAYS, sizeof(*w->filter));
	if (w->filter == NULL)
		return -ENOMEM;
	/* Probed at random for every new id, and filled at random by the mover and at start-up. */
	tg__huge_pages(w->filter, stripes * buckets * FILTER_WAYS * sizeof(*w->filter));
	w->fbuckets = (uint32_t)buckets;
	w->disk = *hook;
	return 0;
}

/* Stripes of w, a power of two: an id's stripe is its digest's lo modulo this. */
size_t
tg_idem_stripes(const struct tg_idem *w)
{
	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	return (size_t)w->mask + 1;
}

size_t
tg_idem_filter_bytes(const struct tg_idem *w)
{
	return ((size_t)w->mask + 1) * w->fbuckets * FILTER_WAYS * sizeof(*w->filter);
}

/*
 * d is now in a run on disk (written and synced, and findable through the
 * hook): add its fingerprint to its stripe's filter and forget its memory
 * entry, in one step under the stripe's lock.  -ENOSPC when the filter has
 * no room: nothing changes, the entry (if any) stays in memory.
 */
int
tg_idem_moved(struct tg_idem *w, struct tg_digest d)
{
	unsigned s = (unsigned)(d.lo & w->mask);
	int rc = 0;

	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	tg__spin_lock(&w->stripes[s].lock);
	if (!f_add(w, s, d.lo)) {
		rc = -ENOSPC;
	} else {
		int64_t i = find(w, s, &d, 0);
		if (i >= 0)
			delete_at(w, s, (uint32_t)i);
		w->stripes[s].moves++;
	}
	tg__spin_unlock(&w->stripes[s].lock);
	return rc;
}

/*
 * d is about to be passed to tg_idem_moved: start loading what that will
 * touch (its filter buckets and its memory slot), without the lock -- a
 * hint only, nothing is read.  The mover calls it a few ids ahead, so the
 * cache misses of a whole run's ids overlap instead of following each other.
 */
void
tg_idem_prefetch(const struct tg_idem *w, struct tg_digest d)
{
	unsigned s = (unsigned)(d.lo & w->mask);

	if (w->fbuckets != 0)
		f_prefetch(w, d.lo);
	__builtin_prefetch(&stripe_slots(w, s)[tg__home(&d, w->nslots)], 1);
	__builtin_prefetch(&w->stripes[s], 1);
}

/* An id of key lo left the disk (past the horizon): its fingerprint goes. */
void
tg_idem_unmoved(struct tg_idem *w, uint64_t lo)
{
	unsigned s = (unsigned)(lo & w->mask);

	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	tg__spin_lock(&w->stripes[s].lock);
	(void)f_del(w, s, lo);
	tg__spin_unlock(&w->stripes[s].lock);
}

/* Start-up: an id of key lo found in a run; -ENOSPC when its filter is full. */
int
tg_idem_filter_add(struct tg_idem *w, uint64_t lo)
{
	unsigned s = (unsigned)(lo & w->mask);
	int rc;

	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	tg__spin_lock(&w->stripes[s].lock);
	rc = f_add(w, s, lo) ? 0 : -ENOSPC;
	tg__spin_unlock(&w->stripes[s].lock);
	return rc;
}

/*
 * Start-up, before any worker runs: add the keys lo[0..n) to the filters.
 * No stripe lock is taken: the caller guarantees that no other thread
 * touches the stripes of these keys meanwhile (one loader thread per
 * residue of the stripe number), which is what lets several threads load
 * at once.  The filters are far larger than the caches, and keys in run
 * order land at random in them: a memory latency per key.  So the keys
 * are first put in stripe order (a stable counting sort into scratch, n
 * entries), and each stripe's filter, 64 KiB for the defaults, is then
 * filled while it sits in the cache.  Stable: a stripe sees its keys in
 * the order given, so the filters come out as tg_idem_filter_add would
 * leave them.  0 with *full the keys that found no room, or -ENOMEM.
 */
int
tg_idem_filter_load(struct tg_idem *w, const uint64_t *lo, size_t n, uint64_t *scratch,
                    uint64_t *full)
{
	size_t stripes = (size_t)w->mask + 1;
	size_t *at = calloc(stripes + 1, sizeof(*at));

	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	TG_ASSERT(w->fbuckets != 0);
	*full = 0;
	if (at == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		at[(lo[i] & w->mask) + 1]++;
	for (size_t s = 1; s <= stripes; s++)
		at[s] += at[s - 1];
	for (size_t i = 0; i < n; i++)
		scratch[at[lo[i] & w->mask]++] = lo[i];
	for (size_t i = 0; i < n; i++)
		if (!f_add(w, (unsigned)(scratch[i] & w->mask), scratch[i]))
			(*full)++;
	free(at);
	return 0;
}

/* Fingerprints in all filters (a recent value). */
uint64_t
tg_idem_on_disk(const struct tg_idem *w)
{
	uint64_t n = 0;
	for (size_t s = 0; w->fbuckets != 0 && s <= w->mask; s++)
		n += tg_load_32((uint32_t *)&w->stripes[s].fcount);
	return n;
}

/*
 * l locked on a d not found, its stripe full.  Without a disk tier, forget
 * the stripe's oldest entry to make room and say true; with one, false: the
 * caller waits for the mover, which never forgets an id inside the horizon.
 */
bool
tg_idem_evict_oldest(struct tg_idem_lock *l)
{
	struct tg_idem *w = l->w;
	struct slot *sl = stripe_slots(w, l->stripe);
	int64_t oldest = -1;

	TG_CHECK_OBJ_NOTNULL(w, IDEM_MAGIC);
	if (w->fbuckets != 0)
		return false;
	for (uint32_t i = 0; i < w->nslots; i++)
		if (!tg__key_free(&sl[i].d) && (oldest < 0 || sl[i].r.seen < sl[oldest].r.seen))
			oldest = i;
	if (oldest < 0)
		return false;
	delete_at(w, l->stripe, (uint32_t)oldest);
	return true;
}

/* Bytes the memory tier holds: its slots and stripes (the filters are tg_idem_filter_bytes). */
size_t
tg_idem_bytes(const struct tg_idem *w)
{
	size_t stripes = (size_t)w->mask + 1;
	return stripes * (sizeof(struct stripe) + (size_t)w->nslots * sizeof(struct slot));
}
