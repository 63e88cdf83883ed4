/*
 * tg_table.h - the account table in POSIX shared memory.
 *
 * One writer process (the engine, with any number of threads) maps the
 * segment read-write; any number of reader processes map it read-only.
 * Inserts and every money operation are lock-free: a CAS on the key to take a
 * slot, a 16-byte CAS on the balance/hold pair to move money.  Accounts are
 * never deleted (closing one is a state).
 */
#ifndef TG_TABLE_H
#define TG_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tg_money.h"
#include "tg_rate-t.h"
#include "tg_result.h"
#include "tg_shm-t.h"

#define TG_TABLE_MAGIC 0x7461626cu

struct tg_table {
	uint32_t magic;
	bool readonly;
	void *base;
	size_t size;
	struct tg_shm_hdr *hdr;
	struct tg_slot *slot; /* slots of them */
	/* slots of them, same index as slot: the pending refill of each account */
	struct tg_refill_rec *refills;
	/* slots of them, same index as slot: the fraud limits of each account */
	struct tg_limits *limits;
	struct tg_stats *stats; /* TG_STATS_BLOCKS */
	uint64_t slots;
	struct tg_plan_registry plans; /* points into the segment */
	/* The registry's process-local part (a writer's only): see tg_plan_registry. */
	uint64_t plans_dying[TG_PLANS_MAX / 64];
	struct tg_plan_reclaim plans_reclaim;
	char name[64];
};

/* How to open a segment as its writer. */
struct tg_table_cfg {
	const char *name;  /* "/tollgate" */
	uint64_t capacity; /* accounts; 1..TG_CAPACITY_MAX */
	mode_t mode;       /* 0600, or 0640 with group; never writable by others */
	bool reuse;        /* attach to a compatible surviving segment instead of failing */
	const char *group; /* NULL or "": the creator's group; else a group name or number */
};

/*
 * Create (or with cfg->reuse, re-attach to) the segment as its writer.
 * The whole size is reserved with posix_fallocate so a small /dev/shm fails
 * here, not with SIGBUS later.  Returns 0 or -errno, with a sentence in err.
 */
int tg_table_open(struct tg_table *t, const struct tg_table_cfg *cfg, char *err, size_t errlen);
/*
 * Map an existing segment read-only.  Refuses (-EPROTO, with a sentence in
 * err) a wrong magic, version, record size or a size that does not add up.
 */
int tg_table_attach(struct tg_table *t, const char *name, char *err, size_t errlen);
/* Unmap; a writer also clears writer_pid.  The segment stays. */
void tg_table_close(struct tg_table *t);
int tg_table_unlink(const char *name);

/* Bytes a segment of capacity accounts takes. */
size_t tg_table_size(uint64_t capacity);
/*
 * KiB of t's mapping the kernel backs with huge pages (ShmemPmdMapped in
 * /proc/self/smaps); -1 when it cannot tell.  0 on a /dev/shm mounted
 * without huge= (docs/SHM.md, "Huge pages").
 */
long tg_table_huge_kib(const struct tg_table *t);

/* The account id, or NULL.  Lock-free, wait-free for readers. */
struct tg_acct *tg_table_find(const struct tg_table *t, uint64_t id);
/*
 * Find or create account id (a new account: active, balance 0, plan 0).
 * TG_OK with *out set (and *created when this call made it), or TG_FULL.
 */
enum tg_result tg_table_insert(struct tg_table *t, uint64_t id, struct tg_acct **out,
                               bool *created);
/* Start loading the home slot of id into cache (for batched lookups). */
void tg_table_prefetch(const struct tg_table *t, uint64_t id);
/*
 * Start loading a's fraud-limits line when a has limits (reads a's flags:
 * call it once a's own line has had time to arrive).  A hint: nothing changes.
 */
void tg_table_prefetch_limits(const struct tg_table *t, const struct tg_acct *a);
/* The usage record of account a. */
struct tg_usage *tg_table_usage(const struct tg_table *t, const struct tg_acct *a);
/*
 * Add charge (>= 0) to category (< TG_CATEGORIES_MAX) of usage record u, in
 * one atomic step, saturating at TG_MONEY_MAX: a statement total that has
 * reached 9223372036854.775807 stays there rather than wrap negative
 * (docs/SHM.md).  Returns the total after.
 */
tg_money_t tg_usage_add(struct tg_usage *u, unsigned category, tg_money_t charge);
/* Slot i, 0 <= i < t->slots (for scans: key 0 means free). */
static inline struct tg_acct *
tg_table_slot(const struct tg_table *t, uint64_t i)
{
	return &t->slot[i].acct;
}
/* The slot index of account a. */
static inline uint64_t
tg_table_index(const struct tg_table *t, const struct tg_acct *a)
{
	return (uint64_t)((const struct tg_slot *)(const void *)a - t->slot);
}
/* The pending-refill record of account a (written by whoever fired its request). */
static inline struct tg_refill_rec *
tg_table_refill(const struct tg_table *t, const struct tg_acct *a)
{
	return &t->refills[tg_table_index(t, a)];
}
static inline uint64_t
tg_acct_id(const struct tg_acct *a)
{
	return a->key - 1;
}

/* ---- money: each call is one atomic step ---- */

/* What a money operation did. */
struct tg_move {
	tg_money_t balance;   /* balance after */
	tg_money_t available; /* balance - reserved, after */
	bool refill_fired;    /* this step crossed the threshold and claimed the refill flag */
	bool refill_cleared;  /* this step (a refill's credit) cleared the flag */
	bool refill_void;     /* cleared because the request may no longer be charged */
	uint32_t refill_seq_cleared; /* when cleared: the request's number */
	tg_money_t before;           /* balance before (set by tg_acct_set_balance) */
	uint32_t refill_seq;         /* when fired: the request's number */
	tg_money_t refill_charge;    /* when fired: the amount to charge */
};

/*
 * Reserve amount (>= 0) for a new call: TG_OK, or TG_BLOCKED (available
 * <= 0), TG_SHORT (0 < available < amount), TG_SUSPENDED, TG_CLOSED,
 * TG_OVERFLOW.  Never takes available below zero.  Counts the call.
 */
enum tg_result tg_acct_reserve(struct tg_acct *a, tg_money_t amount, struct tg_move *m);
/* Reserve amount (> 0) more for a call already counted (a grant extended). */
enum tg_result tg_acct_extend(struct tg_acct *a, tg_money_t amount, struct tg_move *m);
/*
 * The fraud limits' settings (docs/FRAUD.md); 0 in any: no such limit.
 * Money in micro-units: call_cap and daily_cap are > 0 when set, daily_cap
 * at most TG_DAY_USED_MAX; low >= 0.
 */
struct tg_limits_set {
	int64_t call_cap;
	int64_t daily_cap;
	int64_t low;
	uint32_t max_calls;
};
/* The UTC day of Unix time s as the limits count it (days since the epoch, mod 65536). */
static inline uint16_t
tg_utc_day(uint32_t s)
{
	return (uint16_t)(s / 86400u);
}
/* The limits record of a, or NULL when a has no limits (TG_ACCT_LIMITS clear). */
struct tg_limits *tg_acct_limits(const struct tg_table *t, struct tg_acct *a);
/*
 * tg_acct_reserve (new_call) or tg_acct_extend (!new_call) of an account
 * with limits l (NULL: none), on UTC day day: also TG_MAXCALLS when a new
 * call would take the account past l->max_calls calls at once, TG_DAILYCAP
 * when amount would take the day's count past l->daily_cap.  Each limit is
 * claimed by its own compare-and-swap, in the same step as the reserve:
 * exact under any concurrency.
 */
enum tg_result tg_acct_reserve_limited(struct tg_acct *a, struct tg_limits *l, uint16_t day,
                                       tg_money_t amount, bool new_call, struct tg_move *m);
/*
 * The day's count of l (docs/FRAUD.md): take amount (>= 0) when it keeps the
 * count of day within cap (false: it would not; nothing taken); give back
 * (only if the count is still day's, never below 0); add without a cap
 * (CDRs: the call happened), saturating at TG_DAY_USED_MAX; read.
 */
bool tg_limits_day_take(struct tg_limits *l, uint16_t day, tg_money_t amount, tg_money_t cap);
void tg_limits_day_give(struct tg_limits *l, uint16_t day, tg_money_t amount);
void tg_limits_day_add(struct tg_limits *l, uint16_t day, tg_money_t amount);
tg_money_t tg_limits_day_spent(const struct tg_limits *l, uint16_t day);
/*
 * Claim the one alarm of kind (< 16) of l for day: true the first time in
 * that day, false after.  One compare-and-swap.
 */
bool tg_limits_alarm_claim(struct tg_limits *l, uint16_t day, unsigned kind);
/* Give back a claim of tg_limits_alarm_claim whose alarm could not be kept (still day's). */
void tg_limits_alarm_release(struct tg_limits *l, uint16_t day, unsigned kind);
/*
 * Replace a's limits (under its settings sequence) and set or clear
 * TG_ACCT_LIMITS.  Setting a daily cap where none was, or removing it,
 * starts the day's count at 0 on today.
 */
void tg_acct_set_limits(const struct tg_table *t, struct tg_acct *a, const struct tg_limits_set *ls,
                        uint16_t today);
/* Recovery (or a replica): a's limits and day's count word outright, as the journal says. */
void tg_acct_restore_limits(const struct tg_table *t, struct tg_acct *a,
                            const struct tg_limits_set *ls, uint64_t day_used);
/* a's limits, consistently (all 0 when it has none), and its day's count word. */
void tg_acct_read_limits(const struct tg_table *t, const struct tg_acct *a,
                         struct tg_limits_set *ls, uint64_t *day_used);
/*
 * Reserve amount (>= 0) for an always-allowed call whatever the state and
 * the balance: available may go below zero.  new_call counts the call.
 * TG_OK or TG_OVERFLOW.
 */
enum tg_result tg_acct_reserve_always(struct tg_acct *a, tg_money_t amount, bool new_call,
                                      struct tg_move *m);
/* Available balance now (balance - reserved), from one racy read: a hint for sizing a grant. */
tg_money_t tg_acct_available(struct tg_acct *a);
/*
 * Release reserved (what an earlier reserve took) and debit cost (>= 0) in
 * one step.  cost may exceed reserved: the call happened.
 */
enum tg_result tg_acct_commit(struct tg_acct *a, tg_money_t reserved, tg_money_t cost,
                              struct tg_move *m);
/* Debit cost (>= 0) unconditionally: may take the balance below zero. */
enum tg_result tg_acct_debit(struct tg_acct *a, tg_money_t cost, struct tg_move *m);
/*
 * Credit amount (>= 0).  With refill_seq != 0 and that request in flight, the
 * refill flag clears in the same step.
 */
enum tg_result tg_acct_credit(struct tg_acct *a, tg_money_t amount, uint32_t refill_seq,
                              struct tg_move *m);
/* Set the balance outright (an operator's correction).  Fires like a debit. */
enum tg_result tg_acct_set_balance(struct tg_acct *a, tg_money_t balance, struct tg_move *m);
/* A refill worker gave up on request refill_seq: clear the flag.  False if not in flight. */
bool tg_acct_refill_clear(struct tg_acct *a, uint32_t refill_seq);

/*
 * At start-up on a segment a previous engine left: the calls it had in
 * progress are gone with its process, so their reservations would hold money
 * forever.  Release every reservation and call count (writer only, before
 * any worker runs).  Returns the accounts touched; *amount the micro-units
 * released.
 */
uint64_t tg_table_release_reservations(struct tg_table *t, tg_money_t *amount);

/*
 * Recovery: set an account to what the journal says, outright (writer only,
 * before any worker runs).  refill_inflight sets the flag with refill_seq's
 * low bits, as a fired request would.
 */
struct tg_acct_settings;
struct tg_acct_restore {
	tg_money_t balance;
	tg_money_t reserved;
	uint32_t calls;
	uint32_t refill_seq;
	bool refill_inflight;
	uint8_t failures;      /* consecutive failed refills */
	uint32_t unpaid_since; /* suspended for non-payment since (Unix seconds), 0 */
};
void tg_acct_restore(struct tg_acct *a, const struct tg_acct_restore *r,
                     const struct tg_acct_settings *s);
/*
 * tg_acct_restore while readers run (a replica applying its primary's
 * records; only one thread changes the account): the settings under seq,
 * the money pair by one compare-and-swap, so tg_acct_read never sees half.
 */
void tg_acct_replace(struct tg_acct *a, const struct tg_acct_restore *r,
                     const struct tg_acct_settings *s);

/* ---- settings ---- */

struct tg_acct_settings {
	uint32_t plan;
	int64_t threshold;     /* prepaid */
	int64_t refill_amount; /* prepaid */
	int64_t credit_limit;  /* postpaid (TG_ACCT_POSTPAID in flags): >= 0 */
	uint8_t state;         /* enum tg_acct_state */
	uint8_t refill_mode;   /* enum tg_refill_mode */
	uint8_t flags;         /* TG_ACCT_* */
};

/*
 * The one word an account keeps its terms in, in its line, in the journal's
 * settings record and in a snapshot: a postpaid account's credit limit, a
 * prepaid account's threshold (docs/SHM.md).  tg_acct_terms_set is the
 * reverse: it fills s's threshold or credit limit from word by s->flags.
 */
static inline int64_t
tg_acct_terms(const struct tg_acct_settings *s)
{
	return (s->flags & TG_ACCT_POSTPAID) ? s->credit_limit : s->threshold;
}

static inline void
tg_acct_terms_set(struct tg_acct_settings *s, int64_t word)
{
	s->threshold = (s->flags & TG_ACCT_POSTPAID) ? 0 : word;
	s->credit_limit = (s->flags & TG_ACCT_POSTPAID) ? word : 0;
}

/*
 * Replace the settings.  TG_NOPAYMENT when refill_mode is not OFF and no
 * payment method is on file.  Switching auto-refill on, making the account
 * active again or changing the threshold, with the balance already at or
 * below the threshold, fires one request at once (in *m); no other change
 * fires.  Settings under which no refill may fire (auto-refill off, no
 * payment method, the account suspended or closed) void the request in
 * flight: its flag clears (m->refill_cleared and m->refill_void).
 * TG_ACCT_UNPAID in s->flags is kept only with the state suspended; without
 * it the suspension date clears.  The count of failed refills is kept.
 */
enum tg_result tg_acct_configure(struct tg_acct *a, const struct tg_acct_settings *s,
                                 struct tg_move *m);

/*
 * The payment method was updated: fire a request now if the account may
 * fire (active, auto-refill and payment on), none is in flight and the
 * balance is at or below the threshold (in *m); otherwise nothing, and the
 * next crossing fires as usual.
 */
enum tg_result tg_acct_rearm(struct tg_acct *a, struct tg_move *m);

/*
 * Whether s is a sound auto-refill setting (docs/REFILL.md): with refill
 * on, an amount that is positive and a whole number of the currency's
 * minor unit (tg_currency()), and for TOPUP a level above the threshold
 * (at or below it a refill would charge nothing).  False with why filled.
 * ACCT.SET and the accounts file check with it before anything changes.
 */
bool tg_acct_settings_check(const struct tg_acct_settings *s, char *why, size_t len);

/* ---- the course of a failing card (docs/REFILL.md) ---- */

/*
 * What a change of an account's payment standing did.  Persisted (the
 * journal's standing record carries it): only grow at the end.
 */
enum tg_standing_event {
#define TG_STANDING_EVENT(e, n, v, d) TG_STANDING_##e = v,
#include "tbl/tg_standing_events.h"
#undef TG_STANDING_EVENT
	TG_STANDING__COUNT
};

/* The standing after a change: what the journal records. */
struct tg_standing {
	uint8_t state;         /* enum tg_acct_state */
	uint8_t failures;      /* consecutive failed refills */
	bool unpaid;           /* suspended for non-payment */
	uint32_t unpaid_since; /* since when, Unix seconds; 0 when not */
};

/*
 * A refill of a finally failed (after all its attempts): one more
 * consecutive failure.  At suspend_after failures (0: never) an active
 * account is suspended for non-payment, since now.  An account an operator
 * suspended or closed only has its count raised.  Returns FAILED or
 * SUSPENDED, with the standing after in *st.
 */
enum tg_standing_event tg_acct_refill_failure(struct tg_acct *a, uint32_t suspend_after,
                                              uint32_t now, struct tg_standing *st);
/*
 * A payment landed (any credit): the count of failed refills clears and an
 * account suspended for non-payment is active again; an operator's
 * suspension or a closure stays.  NONE, with nothing written, when there
 * was nothing to clear (the common case: one read, no lock).
 */
enum tg_standing_event tg_acct_paid(struct tg_acct *a, struct tg_standing *st);
/*
 * Close a if it has been suspended for non-payment since close_after
 * seconds (> 0) before now or longer.  CLOSED, with a request in flight
 * voided in *m (m->refill_cleared, m->refill_void); NONE otherwise.
 */
enum tg_standing_event tg_acct_close_unpaid(struct tg_acct *a, uint32_t close_after, uint32_t now,
                                            struct tg_standing *st, struct tg_move *m);

/* A consistent copy of one account, from a read-write or read-only mapping. */
struct tg_acct_view {
	uint64_t id;
	tg_money_t balance;
	tg_money_t reserved;
	tg_money_t available;
	tg_money_t threshold; /* prepaid; 0 for a postpaid account */
	tg_money_t refill_amount;
	tg_money_t credit_limit; /* postpaid (TG_ACCT_POSTPAID in flags); 0 for a prepaid one */
	uint32_t plan;
	uint32_t refill_seq;
	uint32_t calls;
	uint8_t state;
	uint8_t refill_mode;
	uint8_t flags;
	bool refill_inflight;
	uint8_t failures;      /* consecutive failed refills */
	uint32_t unpaid_since; /* suspended for non-payment since, Unix seconds; 0 */
};
void tg_acct_read(const struct tg_acct *a, struct tg_acct_view *v);
/* The terms word of a view (tg_acct_terms): its credit limit when postpaid, else its threshold. */
static inline int64_t
tg_acct_view_terms(const struct tg_acct_view *v)
{
	return (v->flags & TG_ACCT_POSTPAID) ? v->credit_limit : v->threshold;
}
/* Just the money pair, consistently, from any mapping: what tg_acct_read uses. */
void tg_acct_read_money(const struct tg_acct *a, int64_t *balance, uint64_t *hold);

/* The amount a refill fired at balance would charge (ADD: amount; TOPUP: level - balance). */
tg_money_t tg_refill_charge(uint8_t mode, tg_money_t amount, tg_money_t balance);

#endif
