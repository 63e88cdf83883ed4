/*
 * tg_idem.h - the window of remembered ids: exactly-once for CALL.END, CDR
 * and ACCT.CREDIT.
 *
 * Each entry holds the 128-bit digest of (kind, id), a fingerprint of the
 * request's data (account, duration, amount, ...), the first reply, and the
 * time it was first seen.  A request is looked up, applied and recorded while
 * its stripe is locked, so two copies racing on two connections apply once.
 * Entries older than the window are forgotten; when a stripe is full of
 * entries still inside the window the new request is refused (TG_FULL)
 * rather than risking a double charge.  Fixed size, allocated once.
 */
#ifndef TG_IDEM_H
#define TG_IDEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_hash.h"
#include "tg_result.h"

struct tg_idem;

/* What was remembered of a request. */
struct tg_idem_rec {
	uint64_t fingerprint; /* of the request's data */
	int64_t reply;        /* the first reply (a charge, a balance) */
	uint32_t seen;        /* Unix seconds when first applied */
	uint8_t result;       /* enum tg_result of the first reply */
};

/*
 * A call settled by expiry is remembered under its call digest (the key of
 * the calls map and of the journal's expire record) with result TG_EXPIRED,
 * its account as fingerprint and the charge as reply: a CALL.END or a
 * CALL.AUTH that comes later finds it there.
 */

/* capacity: ids remembered at most; window_s: how long each is kept. */
int tg_idem_init(struct tg_idem **out, size_t capacity, uint32_t window_s);
void tg_idem_free(struct tg_idem *w);
size_t tg_idem_count(const struct tg_idem *w);
/* Insert a remembered id directly (recovery); TG_OK, TG_CONFLICT (present), TG_FULL. */
enum tg_result tg_idem_restore(struct tg_idem *w, struct tg_digest d, const struct tg_idem_rec *r);

struct tg_idem_lock {
	struct tg_idem *w;
	unsigned stripe;
	struct tg_digest d;
	uint32_t now;
	void *slot;              /* the entry found in memory, or NULL */
	int err;                 /* a read of the disk tier failed (-errno): refuse */
	struct tg_idem_rec disk; /* the entry found on disk, returned by tg_idem_lock */
};

/*
 * Lock the stripe of d (now: Unix seconds).  Returns the entry remembered
 * for d (copy it out) or NULL when d is new (or expired).  The caller then
 * applies the request and calls tg_idem_record_unlock, or only
 * tg_idem_unlock (a replay, or a request that failed and must not be
 * remembered).
 */
const struct tg_idem_rec *tg_idem_lock(struct tg_idem *w, struct tg_digest d, uint32_t now,
                                       struct tg_idem_lock *l);
void tg_idem_unlock(struct tg_idem_lock *l);
/* One attempt at tg_idem_lock: false (nothing locked) when d's stripe is busy. */
bool tg_idem_trylock(struct tg_idem *w, struct tg_digest d, uint32_t now, struct tg_idem_lock *l,
                     const struct tg_idem_rec **rec);

/* Two stripes held at once, taken in stripe order (lo == hi: one stripe). */
struct tg_idem_pair {
	struct tg_idem *w;
	unsigned lo, hi;
};
/* Lock the stripes of a and b; true when either digest is remembered. */
bool tg_idem_lock_pair(struct tg_idem *w, struct tg_digest a, struct tg_digest b, uint32_t now,
                       struct tg_idem_pair *p);
void tg_idem_unlock_pair(struct tg_idem_pair *p);
/* Remember d with r; TG_OK or TG_FULL (stripe full of live entries).  Unlocks. */
enum tg_result tg_idem_record_unlock(struct tg_idem_lock *l, const struct tg_idem_rec *r);
/* Can a new id be remembered in d's stripe?  (check before applying, under the lock) */
int tg_idem_has_room(const struct tg_idem_lock *l);

/*
 * The disk tier (docs/JOURNAL.md, "Id runs").  Ids move out of memory into
 * sorted runs on disk; a filter per stripe, under the stripe's lock, says
 * which ids may be there, so a new id costs no disk read.  find reads one
 * id from the runs: 1 with *rec filled, 0 absent, -errno.  It is called
 * with no stripe held, from any worker, rarely (a replay of an id on disk,
 * or a filter false positive).
 */
struct tg_idem_disk {
	int (*find)(void *arg, struct tg_digest d, struct tg_idem_rec *rec);
	void *arg;
};
int tg_idem_set_disk(struct tg_idem *w, const struct tg_idem_disk *hook, size_t capacity);
size_t tg_idem_filter_bytes(const struct tg_idem *w);
size_t tg_idem_stripes(const struct tg_idem *w);
size_t tg_idem_bytes(const struct tg_idem *w);
int tg_idem_moved(struct tg_idem *w, struct tg_digest d);
void tg_idem_prefetch(const struct tg_idem *w, struct tg_digest d);
void tg_idem_unmoved(struct tg_idem *w, uint64_t lo);
int tg_idem_filter_add(struct tg_idem *w, uint64_t lo);
/* Start-up, no worker running, no other thread on these keys' stripes (tg_idem_filter_load). */
int tg_idem_filter_load(struct tg_idem *w, const uint64_t *lo, size_t n, uint64_t *scratch,
                        uint64_t *full);
uint64_t tg_idem_on_disk(const struct tg_idem *w);
/* No disk tier: forget the oldest id of l's (full) stripe; false with a disk tier. */
bool tg_idem_evict_oldest(struct tg_idem_lock *l);

#endif
