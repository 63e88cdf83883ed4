/*
 * stripe.h - what the two striped maps (calls.c, idem.c) share: the stripe
 * spinlock, digest keys, the home slot inside a stripe, a shared counter.
 * Internal to those two files.
 *
 * ck's spinlock, except under ThreadSanitizer: there ck's builtin backend
 * releases the lock with a fence and a volatile store, which TSan does not
 * see as a release, so the same lock word is taken and given back with
 * acquire and release atomics it understands.
 */
#ifndef TG__STRIPE_H
#define TG__STRIPE_H

#include <stdbool.h>
#include <stdint.h>

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

#endif
