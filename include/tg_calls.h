/*
 * tg_calls.h - calls in progress: what each CALL.AUTH reserved.
 *
 * A fixed-capacity map from (call id) to the call's reservation, shared by
 * every worker: a switch may send CALL.AUTH and CALL.END on different
 * connections.  The map is striped: each stripe is a small open-addressing
 * table under its own spinlock, held only for the few instructions of one
 * lookup and update, never across a syscall.  Nothing is allocated after
 * tg_calls_init.
 */
#ifndef TG_CALLS_H
#define TG_CALLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_hash.h"
#include "tg_rate-t.h"
#include "tg_result.h"

struct tg_call {
	uint64_t acct;
	struct tg_rate rate; /* copied at auth: a reload mid-call changes nothing */
	tg_money_t reserved; /* what the grant holds on the account now */
	uint32_t granted;    /* seconds granted so far */
	/* UTC day (tg_utc_day) + 1 on which CALL.AUTH counted it against a daily cap; 0: not */
	uint16_t day;
	uint8_t stopped;      /* enum tg_stop_reason put on the stop stream; 0: none (stops.c) */
	uint8_t id_len;       /* bytes of the call id as sent (its first call-id-keep are kept) */
	uint64_t started_ns;  /* CLOCK_MONOTONIC at CALL.AUTH */
	uint64_t expires_ns;  /* settled at its grant if not ended by then */
	struct tg_digest key; /* the digest it is stored under (the journal names calls by it) */
};

struct tg_calls;

/* capacity: calls in progress at once.  Returns 0 or -ENOMEM. */
int tg_calls_init(struct tg_calls **out, size_t capacity);
/*
 * tg_calls_init keeping, beside each call, the first id_keep bytes
 * (0..TG_CALLID_MAX) of its id as sent (tg_calls_insert_call_unlock), for
 * the stop stream: id_keep bytes more per slot.
 */
int tg_calls_init_ids(struct tg_calls **out, size_t capacity, uint32_t id_keep);
void tg_calls_free(struct tg_calls *c);
size_t tg_calls_count(const struct tg_calls *c);

/*
 * Locked access to the entry of call id d.  tg_calls_lock returns the entry
 * (NULL when absent) with its stripe locked; the caller may read and change
 * it, then must call tg_calls_unlock (or tg_calls_remove_unlock to drop it).
 * tg_calls_insert_unlock adds a new entry to the locked stripe: TG_OK or
 * TG_FULL, and unlocks.
 */
struct tg_calls_lock {
	struct tg_calls *c;
	unsigned stripe;
	struct tg_digest d;
	struct tg_call *entry;
};
struct tg_call *tg_calls_lock(struct tg_calls *c, struct tg_digest d, struct tg_calls_lock *l);
/* Start loading what tg_calls_lock(c, d) will touch first.  A hint: nothing is read or locked. */
void tg_calls_prefetch(const struct tg_calls *c, struct tg_digest d);
void tg_calls_unlock(struct tg_calls_lock *l);
void tg_calls_remove_unlock(struct tg_calls_lock *l);
enum tg_result tg_calls_insert_unlock(struct tg_calls_lock *l, const struct tg_call *call);
/* tg_calls_insert_unlock keeping the call's id (id[0..len), len <= TG_CALLID_MAX) too. */
enum tg_result tg_calls_insert_call_unlock(struct tg_calls_lock *l, const struct tg_call *call,
                                           const char *id, size_t len);

/*
 * Offer fn every call, each under its stripe lock (so fn must be short,
 * copy what it needs and not touch c), with the kept bytes of its id: id
 * is NULL when the map keeps none, and holds min(call->id_len, id_keep)
 * bytes otherwise.  fn may change call->stopped, nothing else.  A call
 * added or moved while the scan is between chunks may be missed or offered
 * twice.
 */
void tg_calls_each(struct tg_calls *c, void (*fn)(void *arg, struct tg_call *call, const char *id),
                   void *arg);
/* Bytes of each call id the map keeps (id_keep). */
uint32_t tg_calls_id_keep(const struct tg_calls *c);

/*
 * Offer fn every call whose expires_ns <= now_ns (under the stripe lock, so
 * fn must be short and must not touch c); each call fn returns true for is
 * removed, the others wait for a later scan.  Returns how many were removed.
 */
size_t tg_calls_expire(struct tg_calls *c, uint64_t now_ns,
                       bool (*fn)(void *arg, const struct tg_call *call), void *arg);

#endif
