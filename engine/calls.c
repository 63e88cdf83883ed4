/*
 * calls.c - the map of calls in progress, from call-id digest to reservation.
 *
 * Owns the memory of every call between CALL.AUTH and its end (CALL.END or
 * expiry) and the striped locks that guard it.  Each stripe is a small
 * open-addressing table (linear probing, backward-shift deletion, no
 * tombstones) under one ck spinlock on its own cache line.  It must never
 * allocate after tg_calls_init, and never make a syscall, allocate or wait
 * for anything while a stripe is locked: a lock is held for one probe and
 * one copy, or for one chunk of an expiry scan.
 *
 * Geometry.  A digest picks its stripe by the low bits of d.lo and its first
 * slot by the high 32 bits of d.hi, so digests that share (d.lo & 0xffffffff)
 * share a stripe and digests that also share (d.hi >> 32) share a first slot
 * (the tests build collisions that way).  Stripes are sized for about
 * TG__STRIPE_MEAN calls each, 1.25 slots per call of capacity: with hundreds of
 * calls per stripe the extra quarter is several standard deviations of the
 * spread between stripes, so a stripe fills only when the whole map is near
 * capacity.  Memory: 136 bytes per slot (16 of digest, 120 of struct
 * tg_call), so 170 bytes per call of capacity, plus 64 per stripe, plus
 * id_keep bytes per slot when the map keeps the ids as sent (call-id-keep,
 * for the stop stream: 64 bytes kept cost 80 bytes per call of capacity).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tg_atomic.h" /* before any ck header: selects ck's backend under TSan */
#include <ck_pr.h>
#include <ck_spinlock.h>

#include "stripe.h"
#include "tg_assert.h"
#include "tg_calls.h"

#define CALLS_MAGIC 0x63616c6cu /* "call" */
#define CACHE_LINE  64
/* Slots an expiry scan looks at before it lets others have the stripe. */
#define EXPIRE_CHUNK 64

struct stripe {
	ck_spinlock_fas_t lock;
	uint32_t used; /* slots holding a call; under lock */
} __attribute__((aligned(CACHE_LINE)));

_Static_assert(sizeof(struct stripe) == CACHE_LINE, "one stripe header per cache line");
_Static_assert(sizeof(struct tg_call) + sizeof(struct tg_digest) == 136,
               "memory per call is documented");

struct tg_calls {
	uint32_t magic;
	uint32_t nslots; /* per stripe */
	unsigned mask;   /* stripes - 1 */
	struct stripe *stripes;
	struct tg_digest *keys; /* stripe s owns keys[s * nslots ...]; zero = free */
	struct tg_call *vals;   /* parallel to keys */
	char *ids;              /* parallel to keys, id_keep bytes each; NULL when 0 */
	uint32_t id_keep;
	/* Calls held, all stripes; written under a stripe lock, read anywhere. */
	uint64_t count __attribute__((aligned(CACHE_LINE)));
};

static inline uint32_t
next(const struct tg_calls *c, uint32_t i)
{
	return i + 1 == c->nslots ? 0 : i + 1;
}

/* The kept id bytes of slot i of stripe s. */
static inline char *
id_at(const struct tg_calls *c, unsigned s, uint32_t i)
{
	return c->ids + ((size_t)s * c->nslots + i) * c->id_keep;
}

/*
 * Slot of d in stripe s (locked), or -1.  At most nslots probes, so a
 * stripe with no free slot still answers.
 */
static int64_t
find(const struct tg_calls *c, unsigned s, const struct tg_digest *d)
{
	const struct tg_digest *keys = c->keys + (size_t)s * c->nslots;
	uint32_t i = tg__home(d, c->nslots);

	for (uint32_t n = 0; n < c->nslots; n++) {
		if (tg__key_free(&keys[i]))
			return -1;
		if (tg__key_eq(&keys[i], d))
			return i;
		i = next(c, i);
	}
	return -1;
}

/*
 * Empty slot i of stripe s (locked) and pull later members of its probe
 * run back, so that every call stays reachable from its first slot without
 * crossing a free slot.  A call at j whose first slot k lies cyclically in
 * (hole, j] must stay; any other fills the hole.
 */
static void
delete_at(struct tg_calls *c, unsigned s, uint32_t i)
{
	struct tg_digest *keys = c->keys + (size_t)s * c->nslots;
	struct tg_call *vals = c->vals + (size_t)s * c->nslots;
	uint32_t hole = i, j = i;

	TG_ASSERT(!tg__key_free(&keys[i]));
	memset(&keys[hole], 0, sizeof(keys[hole]));
	for (;;) {
		j = next(c, j);
		if (tg__key_free(&keys[j]))
			break;
		uint32_t k = tg__home(&keys[j], c->nslots);
		bool stays = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
		if (stays)
			continue;
		keys[hole] = keys[j];
		vals[hole] = vals[j];
		if (c->ids != NULL)
			memcpy(id_at(c, s, hole), id_at(c, s, j), c->id_keep);
		memset(&keys[j], 0, sizeof(keys[j]));
		hole = j;
	}
	c->stripes[s].used--;
	tg__count_add(&c->count, -1);
}

/*
 * Allocates everything the map will ever use.  capacity 0 is -EINVAL; a
 * capacity whose memory cannot be had (or computed) is -ENOMEM.
 */
int
tg_calls_init(struct tg_calls **out, size_t capacity)
{
	return tg_calls_init_ids(out, capacity, 0);
}

int
tg_calls_init_ids(struct tg_calls **out, size_t capacity, uint32_t id_keep)
{
	struct tg_calls *c;
	unsigned nstripes;
	uint32_t nslots;

	*out = NULL;
	if (capacity == 0)
		return -EINVAL;
	if (!tg__stripe_geometry(capacity, &nstripes, &nslots))
		return -ENOMEM;
	c = tg__alloc_lines(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->nslots = nslots;
	c->mask = nstripes - 1;
	c->stripes = tg__alloc_lines(nstripes, sizeof(*c->stripes));
	/* calloc: for arrays this size the pages come zeroed from the kernel, untouched until used.
	 */
	c->keys = calloc((size_t)nstripes * nslots, sizeof(*c->keys));
	c->vals = calloc((size_t)nstripes * nslots, sizeof(*c->vals));
	c->id_keep = id_keep;
	if (id_keep > 0)
		c->ids = calloc((size_t)nstripes * nslots, id_keep);
	if (c->stripes == NULL || c->keys == NULL || c->vals == NULL ||
	    (id_keep > 0 && c->ids == NULL)) {
		tg_calls_free(c);
		return -ENOMEM;
	}
	/* Read at random, one slot per request: a TLB miss each with 4 KiB pages. */
	tg__huge_pages(c->keys, (size_t)nstripes * nslots * sizeof(*c->keys));
	tg__huge_pages(c->vals, (size_t)nstripes * nslots * sizeof(*c->vals));
	for (unsigned s = 0; s < nstripes; s++)
		ck_spinlock_fas_init(&c->stripes[s].lock);
	c->magic = CALLS_MAGIC;
	*out = c;
	return 0;
}

/* No thread may be using c. */
void
tg_calls_free(struct tg_calls *c)
{
	if (c == NULL)
		return;
	free(c->stripes);
	free(c->keys);
	free(c->vals);
	free(c->ids);
	c->magic = 0;
	free(c);
}

/* Exact when no call is being added or removed; otherwise a recent value. */
size_t
tg_calls_count(const struct tg_calls *c)
{
	TG_CHECK_OBJ_NOTNULL(c, CALLS_MAGIC);
	return (size_t)tg_load_64((uint64_t *)(uintptr_t)&c->count);
}

/*
 * d must not be zero.  Spins until d's stripe is free; the caller holds it
 * until tg_calls_unlock, tg_calls_remove_unlock or tg_calls_insert_unlock.
 * Lock order: at most one calls stripe at a time; a caller may already hold
 * one idem stripe (CALL.END does) or a pair (CALL.AUTH), but must not wait
 * for an idem stripe while holding a calls stripe, nor call tg_calls_expire.
 */
struct tg_call *
tg_calls_lock(struct tg_calls *c, struct tg_digest d, struct tg_calls_lock *l)
{
	int64_t i;

	TG_CHECK_OBJ_NOTNULL(c, CALLS_MAGIC);
	TG_ASSERT(!tg__key_free(&d));
	l->c = c;
	l->stripe = (unsigned)(d.lo & c->mask);
	l->d = d;
	tg__spin_lock(&c->stripes[l->stripe].lock);
	i = find(c, l->stripe, &d);
	l->entry = i < 0 ? NULL : &c->vals[(size_t)l->stripe * c->nslots + (size_t)i];
	return l->entry;
}

void
tg_calls_prefetch(const struct tg_calls *c, struct tg_digest d)
{
	unsigned s = (unsigned)(d.lo & c->mask);
	uint32_t i = tg__home(&d, c->nslots);

	__builtin_prefetch(&c->stripes[s].lock, 1);
	__builtin_prefetch(&c->keys[(size_t)s * c->nslots + i], 0);
	__builtin_prefetch(&c->vals[(size_t)s * c->nslots + i], 1);
}

/* l must be locked; afterwards it is not, and l->entry is stale. */
void
tg_calls_unlock(struct tg_calls_lock *l)
{
	struct tg_calls *c = l->c;

	TG_CHECK_OBJ_NOTNULL(c, CALLS_MAGIC);
	l->c = NULL;
	l->entry = NULL;
	tg__spin_unlock(&c->stripes[l->stripe].lock);
}

/* l must be locked on a call that was found (l->entry not NULL). */
void
tg_calls_remove_unlock(struct tg_calls_lock *l)
{
	struct tg_calls *c = l->c;
	size_t base;

	TG_CHECK_OBJ_NOTNULL(c, CALLS_MAGIC);
	TG_ASSERT(l->entry != NULL);
	base = (size_t)l->stripe * c->nslots;
	TG_ASSERT(l->entry >= c->vals + base && l->entry < c->vals + base + c->nslots);
	TG_ASSERT(tg__key_eq(&c->keys[l->entry - c->vals], &l->d));
	delete_at(c, l->stripe, (uint32_t)(l->entry - (c->vals + base)));
	tg_calls_unlock(l);
}

/*
 * l must be locked on a d that was not found (l->entry NULL).  Copies call
 * in.  TG_FULL when every slot of the stripe is taken; either way unlocks.
 */
enum tg_result
tg_calls_insert_unlock(struct tg_calls_lock *l, const struct tg_call *call)
{
	return tg_calls_insert_call_unlock(l, call, NULL, 0);
}

enum tg_result
tg_calls_insert_call_unlock(struct tg_calls_lock *l, const struct tg_call *call, const char *id,
                            size_t len)
{
	struct tg_calls *c = l->c;
	struct stripe *st;
	struct tg_digest *keys;
	uint32_t i;

	TG_CHECK_OBJ_NOTNULL(c, CALLS_MAGIC);
	TG_ASSERT(l->entry == NULL);
	st = &c->stripes[l->stripe];
	if (st->used == c->nslots) {
		tg_calls_unlock(l);
		return TG_FULL;
	}
	keys = c->keys + (size_t)l->stripe * c->nslots;
	i = tg__home(&l->d, c->nslots);
	while (!tg__key_free(&keys[i]))
		i = next(c, i);
	keys[i] = l->d;
	struct tg_call *v = &c->vals[(size_t)l->stripe * c->nslots + i];
	*v = *call;
	TG_ASSERT(len <= TG_CALLID_MAX);
	v->id_len = (uint8_t)len;
	if (c->ids != NULL && len > 0) /* a recovered call has no id (len 0, id NULL) */
		memcpy(id_at(c, l->stripe, i), id, len < c->id_keep ? len : c->id_keep);
	st->used++;
	tg__count_add(&c->count, 1);
	tg_calls_unlock(l);
	return TG_OK;
}

/*
 * Every stripe in turn, EXPIRE_CHUNK slots per lock hold.  fn runs under
 * the stripe lock with each call due: it must copy what it needs, be short,
 * and not touch c; it returns true to have the call removed at once, false
 * to leave it for a later scan (fn NULL: remove every call due).  fn may not
 * wait for an idem stripe (the lock order), only try one (tg_idem_trylock).
 * With no other thread using c every call with expires_ns <= now_ns is
 * offered; a call that another thread adds, or moves by removing its
 * neighbour, while the scan is between chunks may be left for the next
 * scan.  A call fn kept may be offered again in the same scan, when a
 * removal after it pulls it back across the end of its stripe.  Returns the
 * number removed.
 */
size_t
tg_calls_expire(struct tg_calls *c, uint64_t now_ns,
                bool (*fn)(void *arg, const struct tg_call *call), void *arg)
{
	size_t expired = 0;

	TG_CHECK_OBJ_NOTNULL(c, CALLS_MAGIC);
	for (unsigned s = 0; s <= c->mask; s++) {
		struct stripe *st = &c->stripes[s];
		const struct tg_digest *keys = c->keys + (size_t)s * c->nslots;
		const struct tg_call *vals = c->vals + (size_t)s * c->nslots;
		unsigned work = 0;

		tg__spin_lock(&st->lock);
		for (uint32_t i = 0; i < c->nslots;) {
			if (++work == EXPIRE_CHUNK) {
				tg__spin_unlock(&st->lock);
				tg__spin_lock(&st->lock);
				work = 0;
			}
			if (tg__key_free(&keys[i]) || vals[i].expires_ns > now_ns) {
				i++;
				continue;
			}
			if (fn != NULL && !fn(arg, &vals[i])) {
				i++; /* kept: the next scan offers it again */
				continue;
			}
			/* a later call may be pulled into i: look at i again */
			delete_at(c, s, i);
			expired++;
		}
		tg__spin_unlock(&st->lock);
	}
	return expired;
}

uint32_t
tg_calls_id_keep(const struct tg_calls *c)
{
	TG_CHECK_OBJ_NOTNULL(c, CALLS_MAGIC);
	return c->id_keep;
}

/* Every stripe in turn, EXPIRE_CHUNK slots per lock hold, as tg_calls_expire. */
void
tg_calls_each(struct tg_calls *c, void (*fn)(void *arg, struct tg_call *call, const char *id),
              void *arg)
{
	TG_CHECK_OBJ_NOTNULL(c, CALLS_MAGIC);
	for (unsigned s = 0; s <= c->mask; s++) {
		struct stripe *st = &c->stripes[s];
		const struct tg_digest *keys = c->keys + (size_t)s * c->nslots;
		struct tg_call *vals = c->vals + (size_t)s * c->nslots;

		tg__spin_lock(&st->lock);
		for (uint32_t i = 0; i < c->nslots; i++) {
			if (i % EXPIRE_CHUNK == EXPIRE_CHUNK - 1) {
				tg__spin_unlock(&st->lock);
				tg__spin_lock(&st->lock);
			}
			if (!tg__key_free(&keys[i]))
				fn(arg, &vals[i], c->ids != NULL ? id_at(c, s, (uint32_t)i) : NULL);
		}
		tg__spin_unlock(&st->lock);
	}
}
