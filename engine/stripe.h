/*
 * stripe.h - what the two striped maps (calls.c, idem.c) share: the sizing
 * arithmetic and the cache-line allocation, the stripe spinlock, digest
 * keys, the home slot inside a stripe, a shared counter.  Each map keeps its
 * own slots and probing; only the arithmetic is written once (as ck's
 * ck_internal.h serves ck_ht, ck_hs and ck_rhs).  Internal to those two
 * files.
 *
 * ck's spinlock, except under ThreadSanitizer: there ck's builtin backend
 * releases the lock with a fence and a volatile store, which TSan does not
 * see as a release, so the same lock word is taken and given back with
 * acquire and release atomics it understands.
 */
#ifndef TG__STRIPE_H
#define TG__STRIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "tg_atomic.h"
#include <ck_spinlock.h>

#include "tg_hash.h"

static inline void
tg__spin_lock(ck_spinlock_fas_t *l)
{
#if defined(TG_TSAN)
	while (__atomic_exchange_n(&l->value, 1u, __ATOMIC_ACQUIRE) != 0)
		while (__atomic_load_n(&l->value, __ATOMIC_RELAXED) != 0)
			ck_pr_stall();
#else
	ck_spinlock_fas_lock(l);
#endif
}

static inline void
tg__spin_unlock(ck_spinlock_fas_t *l)
{
#if defined(TG_TSAN)
	__atomic_store_n(&l->value, 0u, __ATOMIC_RELEASE);
#else
	ck_spinlock_fas_unlock(l);
#endif
}

/*
 * One attempt at the lock: true when taken.  For a caller that holds a lock
 * of the other map and so may not wait for this one (see calls.c).
 */
static inline bool
tg__spin_trylock(ck_spinlock_fas_t *l)
{
#if defined(TG_TSAN)
	return __atomic_exchange_n(&l->value, 1u, __ATOMIC_ACQUIRE) == 0;
#else
	return ck_spinlock_fas_trylock(l);
#endif
}

/* A counter written under stripe locks (several of them), read anywhere. */
static inline void
tg__count_add(uint64_t *count, int64_t delta)
{
#if defined(TG_TSAN)
	__atomic_fetch_add(count, (uint64_t)delta, __ATOMIC_RELAXED);
#else
	ck_pr_add_64(count, (uint64_t)delta);
#endif
}

/* The all-zero digest marks a free slot. */
static inline bool
tg__key_free(const struct tg_digest *k)
{
	return (k->lo | k->hi) == 0;
}

static inline bool
tg__key_eq(const struct tg_digest *a, const struct tg_digest *b)
{
	return ((a->lo ^ b->lo) | (a->hi ^ b->hi)) == 0;
}

/* The first slot to probe, within a stripe of nslots: from d.hi's top 32 bits. */
static inline uint32_t
tg__home(const struct tg_digest *d, uint32_t nslots)
{
	return (uint32_t)(((d->hi >> 32) * (uint64_t)nslots) >> 32);
}

/* Entries of capacity per stripe, at least (see calls.c, "Geometry"). */
#define TG__STRIPE_MEAN 512
/* Stripes at most, so a stripe index fits the lock's unsigned. */
#define TG__STRIPES_MAX (1u << 30)
/* Slots per stripe are rounded up to a multiple of this. */
#define TG__SLOT_ROUND 8
/* What the maps align their stripes and slots to. */
#define TG__CACHE_LINE 64

/*
 * Stripes (a power of two, about capacity / TG__STRIPE_MEAN) and slots per
 * stripe (1.25 per entry of capacity, rounded up to TG__SLOT_ROUND) for a
 * map of capacity entries; false when the sizes overflow.
 */
static inline bool
tg__stripe_geometry(size_t capacity, unsigned *nstripes, uint32_t *nslots)
{
	size_t want = capacity / TG__STRIPE_MEAN, per, slots;
	unsigned s = 1;

	while (s < TG__STRIPES_MAX && (size_t)s * 2 <= want)
		s *= 2;
	/* ceil(capacity * 1.25 / s), then up to a multiple of TG__SLOT_ROUND */
	if (capacity > SIZE_MAX / 5)
		return false;
	per = (capacity * 5 + (size_t)4 * s - 1) / ((size_t)4 * s);
	slots = (per + TG__SLOT_ROUND - 1) / TG__SLOT_ROUND * TG__SLOT_ROUND;
	if (slots > UINT32_MAX)
		return false;
	*nstripes = s;
	*nslots = (uint32_t)slots;
	return true;
}

/*
 * Ask for huge pages on the whole 2 MiB pages inside [p, p + len): for the
 * large arrays read at random (a TLB miss per access with 4 KiB pages).  A
 * hint the kernel may ignore; nothing depends on it.
 */
static inline void
tg__huge_pages(void *p, size_t len)
{
	const uintptr_t huge = (uintptr_t)2 << 20;
	uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
	uintptr_t b = ((uintptr_t)p + len) & ~(huge - 1);

	if (b > a)
		(void)madvise((void *)a, b - a, MADV_HUGEPAGE);
}

/*
 * n zeroed objects of size bytes, cache-line aligned and rounded up to
 * whole lines; NULL when the size overflows or memory is short.  free()d.
 */
static inline void *
tg__alloc_lines(size_t n, size_t size)
{
	size_t bytes;
	void *p;

	if (__builtin_mul_overflow(n, size, &bytes) || bytes > SIZE_MAX - TG__CACHE_LINE)
		return NULL;
	bytes = (bytes + TG__CACHE_LINE - 1) / TG__CACHE_LINE * TG__CACHE_LINE;
	p = aligned_alloc(TG__CACHE_LINE, bytes);
	if (p != NULL)
		memset(p, 0, bytes);
	return p;
}

#endif
