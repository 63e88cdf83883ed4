/*
 * tg_engine.h - rating and call control, independent of any wire protocol.
 *
 * The engine ties the account table, the live rate plans, the calls in
 * progress and the id window together into the operations of the contract
 * (docs/PROTOCOL.md): authorize, extend, end, charge a CDR, credit.  Every
 * operation runs on a worker (one per thread) that owns its counters and its
 * epoch record; none allocates, locks a shared lock for more than a map
 * probe, or makes a syscall.
 */
#ifndef TG_ENGINE_H
#define TG_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ck_epoch.h>

#include "tg_atomic.h"
#include "tg_calls.h"
#include "tg_idem.h"
#include "tg_jwriter.h"
#include "tg_rate.h"
#include "tg_stats.h"
#include "tg_table.h"

#define TG_WORKER_MAGIC 0x776f726bu

/*
 * A worker's cache of rating lookups: (plan, destination) -> rate.  Calls
 * repeat destinations, and a hit skips the trie walk.  Keyed on the plan
 * set's serial, so a reload empties it.
 */
#define TG_RCACHE_SIZE 4096
struct tg_rcache_entry {
	uint64_t d[3]; /* the destination's bytes, zero-padded (at most 24) */
	uint32_t plan;
	uint32_t len;
	const struct tg_rate *rate;
};

struct tg_engine;
struct tg_acct;
struct tg_move;

struct tg_worker {
	uint32_t magic;
	unsigned idx;
	struct tg_engine *e;
	ck_epoch_record_t epoch;
	ck_epoch_section_t section;
	const struct tg_planset *plans; /* valid between tg_worker_enter and _exit */
	uint64_t now_ns;                /* CLOCK_MONOTONIC at enter */
	uint32_t now_s;                 /* CLOCK_REALTIME seconds at enter */
	struct tg_stats *stats;         /* this thread's block in the segment */
	uint64_t mark_ns;               /* when the last command of the batch finished */
	struct tg_rcache_entry *rcache; /* TG_RCACHE_SIZE */
	uint64_t rcache_serial;         /* plan set the cache describes */
	struct tg_jstage stage;         /* journal records of the batch in progress */
	/*
	 * Durable mode: a reply taken from state another worker applied (a replayed
	 * id, a call authorized again) may leave only once that worker's batch is on
	 * disk too.  open: batch number << 1, | 1 from tg_worker_enter until the
	 * batch's own records are on disk; replayed marks a batch that must wait.
	 */
	uint64_t open;
	bool replayed;
	uint64_t reply_lsn; /* durable mode: what the last batch's replies wait for (cmd.c) */
	/* The AUTH user of the command being executed (the ledger's "who"), or NULL. */
	const char *who;
};

struct tg_engine_cfg {
	uint32_t max_grant;  /* seconds one CALL.AUTH / CALL.UPDATE may grant (3600) */
	uint32_t call_grace; /* seconds past its grant before a silent call is settled (120) */
	size_t calls_max;    /* calls in progress at once */
	size_t ids_max;      /* ids remembered for exactly-once */
	uint32_t ids_window; /* seconds each id is remembered (86400) */
	unsigned workers;    /* worker records to prepare */
	/* The course of a failing card (docs/REFILL.md); 0: never. */
	uint32_t suspend_after; /* consecutive failed refills that suspend for non-payment */
	uint32_t close_after;   /* seconds suspended for non-payment before the account closes */
	uint32_t call_id_keep;  /* bytes of each call id kept for the stop stream (0: none) */
};

/*
 * How a fired refill leaves the engine: fn(arg, w, a, m) is called on worker
 * w's thread for every move m that fired a refill on account a, after its
 * journal record is staged.  The publisher (tg_refill.h) installs it before
 * any worker runs and clears it after they stop; the engine never includes
 * the publisher's header, so a program that links the engine alone does not
 * pull in hiredis.  fn may make no syscall, take no lock and allocate
 * nothing (the same rule as the worker's hot path).
 */
struct tg_refill_hook {
	void (*fn)(void *arg, struct tg_worker *w, struct tg_acct *a, const struct tg_move *m);
	void *arg;
};

/*
 * Where an account whose calls may have to stop is reported: fn(arg, w,
 * acct) on worker w's thread after w suspended or closed acct, or debited
 * it while it had calls in progress.  The stop publisher (tg_stops.h)
 * installs it before any worker runs and clears it after they stop; the
 * same rule as the refill hook: no syscall, no lock, no allocation.
 */
struct tg_stop_hook {
	void (*fn)(void *arg, struct tg_worker *w, uint64_t acct);
	void *arg;
};

/* enum tg_alarm_kind: the bit of tg_limits.alarmed, the alarm stream's `kind`. */
enum tg_alarm_kind {
#define TG_ALARM_KIND(e, n, v, d) TG_ALARM_##e = v,
#include "tbl/tg_alarm_kinds.h"
#undef TG_ALARM_KIND
	TG_ALARM_KINDS
};

/*
 * Where a fraud alarm goes: fn(arg, w, acct, kind, limit) on worker w's
 * thread once w claimed the day's alarm of that kind for acct (limit: the
 * cap reached, calls or micro-units; the time is w->now_s).  False when it
 * cannot be kept (its ring is full): the worker gives the claim back.  The
 * stop publisher (tg_stops.h) installs it; the refill hook's rule: no
 * syscall, no lock, no allocation.
 */
struct tg_alarm_hook {
	bool (*fn)(void *arg, struct tg_worker *w, uint64_t acct, enum tg_alarm_kind kind,
	           int64_t limit);
	void *arg;
};

/*
 * How a batch waits for other nodes: fn(arg, lsn) is called on a worker's
 * thread once the batch's records (up to lsn) are on this node's disk, and
 * before its replies leave.  Replication (tg_repl.h) installs it when
 * min-replicas-to-write asks for copies elsewhere.
 */
struct tg_commit_hook {
	void (*fn)(void *arg, uint64_t lsn);
	void *arg;
};

struct tg_engine {
	struct tg_table *table;
	struct tg_rates rates;
	struct tg_calls *calls;
	struct tg_idem *ids;
	struct tg_engine_cfg cfg;
	struct tg_worker *workers;      /* cfg.workers + 1: the last is the control thread's */
	struct tg_rcache_entry *rcache; /* TG_RCACHE_SIZE per worker record */
	uint64_t started_ns;
	struct tg_refill_hook refill; /* who publishes fired refills; {NULL, NULL}: nobody */
	struct tg_commit_hook commit; /* who else must hold a batch first; {NULL, NULL}: nobody */
	struct tg_stop_hook stop;     /* who announces calls to stop; {NULL, NULL}: nobody */
	struct tg_alarm_hook alarm;   /* who raises fraud alarms; {NULL, NULL}: nobody */
	struct tg_jw *jw;             /* the journal (tg_jwriter.h), or NULL: nothing is recorded */
	struct tg_idstore *idstore;   /* the id window's disk tier (tg_idstore.h), or NULL */
	/* The sweep that closes accounts unpaid too long (tg_engine_close_unpaid): one thread. */
	uint64_t unpaid_pos;    /* next slot to look at */
	uint32_t unpaid_next_s; /* when the next pass starts, Unix seconds */
};

/* table must stay open while the engine lives.  Returns 0 or -errno. */
int tg_engine_init(struct tg_engine *e, struct tg_table *table, const struct tg_engine_cfg *cfg);
/* Frees what tg_engine_init made.  A refill publisher must be stopped first. */
void tg_engine_fini(struct tg_engine *e);
/* The worker record idx (0..workers-1), or the control thread's (idx == workers). */
struct tg_worker *tg_engine_worker(struct tg_engine *e, unsigned idx);

/* Bracket a batch of operations: pins the rate plans, reads the clocks once. */
void tg_worker_enter(struct tg_worker *w);
void tg_worker_exit(struct tg_worker *w);

/*
 * Record every change from now on in jw (set before any worker runs; the
 * engine does not own it).  Returns 0 or -ENOMEM.
 */
int tg_engine_journal(struct tg_engine *e, struct tg_jw *jw);
/*
 * Commit the journal records of w's batch: in durable mode, returns once they
 * are on disk.  Called at the end of every batch, before any reply is sent.
 */
void tg_worker_commit(struct tg_worker *w);
/*
 * tg_worker_commit that, in durable mode with no replicas to wait for, does
 * not wait for the disk: it returns the LSN the batch's replies must wait
 * for (tg_jw_durable past it) and the caller holds them until then.  0: they
 * may leave now (relaxed, no journal, nothing staged, or it waited itself).
 */
uint64_t tg_worker_commit_held(struct tg_worker *w);
/* One record from a thread that is no worker (the refill publisher); durable on return. */
void tg_engine_journal1(struct tg_engine *e, unsigned type, const void *payload, size_t len);
/*
 * Whether a change of class k (tg_jwriter.h) must be refused now: the
 * journal's disk is down to that class's floor.  Counts the refusal.
 */
bool tg_engine_refusing(struct tg_worker *w, enum tg_jw_class k);

static inline void
tg_count(struct tg_worker *w, enum tg_counter c, uint64_t n)
{
	uint64_t *p = &w->stats->counter[c];
	tg_store_64(p, tg_load_64(p) + n);
}
/*
 * Count n (>= 0) micro-units in money counter c, saturating at TG_MONEY_MAX:
 * the counter is printed as an amount, and must stop at the top, not wrap
 * negative (docs/STATS.md).  The block's value never exceeds TG_MONEY_MAX,
 * so the 64-bit unsigned sum below cannot wrap.
 */
static inline void
tg_count_money(struct tg_worker *w, enum tg_counter c, tg_money_t n)
{
	uint64_t *p = &w->stats->counter[c];
	uint64_t v = tg_load_64(p) + (uint64_t)n;
	tg_store_64(p, v > (uint64_t)TG_MONEY_MAX ? (uint64_t)TG_MONEY_MAX : v);
}
/*
 * A command of kind k just finished: its latency (since the previous one of
 * the batch, or the batch's start) goes to the worker's histogram.
 */
void tg_worker_lap(struct tg_worker *w, enum tg_hist_kind k);

/* Sum of counter c over every thread's block. */
uint64_t tg_engine_counter(const struct tg_engine *e, enum tg_counter c);

/* ---- the operations (docs/PROTOCOL.md) ---- */

struct tg_id {
	const char *p;
	size_t len; /* 1..TG_CALLID_MAX */
};

/*
 * Why a grant is what it is (CALL.AUTH / CALL.UPDATE WITHREASON,
 * docs/PROTOCOL.md).  Persisted nowhere; the names are the wire words.
 */
enum tg_grant_why {
	TG_WHY_MONEY = 0,    /* short because the money runs out: warn, then cut */
	TG_WHY_MAXGRANT = 1, /* capped by max-grant: extend with CALL.UPDATE */
	TG_WHY_CALLCAP = 2,  /* capped by the account's per-call spend cap */
	TG_WHY_DAILYCAP = 3, /* capped by what is left of the account's daily cap */
	TG_WHY_LOW = 4,      /* granted in full, but leaves less than the low-balance threshold */
};
const char *tg_grant_why_name(enum tg_grant_why why);

/* CALL.AUTH: *granted seconds reserved for call id on acct to dest. */
enum tg_result tg_call_auth(struct tg_worker *w, uint64_t acct, const char *dest, size_t dlen,
                            struct tg_id call, uint32_t *granted);
/*
 * tg_call_auth, and why the grant is what it is.  Beyond the account's
 * limits: TG_MAXCALLS (as many calls in progress as it may hold),
 * TG_DAILYCAP (today's cap reached).
 */
enum tg_result tg_call_auth_why(struct tg_worker *w, uint64_t acct, const char *dest, size_t dlen,
                                struct tg_id call, uint32_t *granted, enum tg_grant_why *why);
/*
 * CALL.UPDATE: *granted is the new total grant.  TG_BLOCKED when the balance
 * pays for nothing more, TG_MAXGRANT when it would but the grant already
 * reaches elapsed + max-grant.
 */
enum tg_result tg_call_update(struct tg_worker *w, uint64_t acct, struct tg_id call,
                              uint32_t elapsed, uint32_t *granted);
/* tg_call_update, and why the grant is what it is (also TG_DAILYCAP). */
enum tg_result tg_call_update_why(struct tg_worker *w, uint64_t acct, struct tg_id call,
                                  uint32_t elapsed, uint32_t *granted, enum tg_grant_why *why);
/*
 * CALL.END: *charge is what the call cost.  TG_EXPIRED (with *charge what
 * expiry charged, nothing changed) for a call expiry settled.
 */
enum tg_result tg_call_end(struct tg_worker *w, uint64_t acct, struct tg_id call, uint32_t duration,
                           tg_money_t *charge);
/* CDR: *charge is what the call cost. */
enum tg_result tg_cdr(struct tg_worker *w, uint64_t acct, const char *dest, size_t dlen,
                      uint32_t duration, struct tg_id call, tg_money_t *charge);
/* ACCT.CREDIT: *balance after. */
enum tg_result tg_credit(struct tg_worker *w, uint64_t acct, tg_money_t amount, struct tg_id tx,
                         tg_money_t *balance);
/*
 * ACCT.REFILL.FAILED: the worker gave up on refill request id.  counts: the
 * customer's payment failed (not a malformed request): one more
 * consecutive failed refill, which may suspend the account for non-payment
 * (cfg.suspend_after).  A repeated report changes nothing.
 */
enum tg_result tg_refill_failed(struct tg_worker *w, uint64_t acct, struct tg_id req, bool counts);
/*
 * The customer's payment method was updated: re-arm auto-refill
 * (tg_acct_rearm), journaled and published like any request.  *fired is
 * the request fired now, 0 if none.  TG_NOACCOUNT.
 */
enum tg_result tg_refill_rearm(struct tg_worker *w, uint64_t acct, uint32_t *fired);
/*
 * A refill worker asks before it charges request req of acct: TG_OK when it
 * is still the account's pending request and the account may be charged
 * (active, auto-refill on, a payment method on file).  TG_VOID otherwise,
 * with *why saying why (a static string); a pending request that may no
 * longer be charged is settled here, its flag cleared (journaled, counted
 * refills_void).  TG_ERR: req is not a refill id of acct; TG_NOACCOUNT.
 * lease > 0 (seconds): the worker scheduled a retry of the charge; the
 * publisher does not republish the request before the lease ends (plus
 * refill-timeout), so nobody charges it early.  Kept in the refill record
 * only (docs/REFILL.md: a reboot loses it, harmlessly).
 */
enum tg_result tg_refill_claim(struct tg_worker *w, uint64_t acct, struct tg_id req, uint32_t lease,
                               const char **why);
/*
 * A rated debit with no id and no call: what tollbench core measures and the
 * demo runs.  Same rating as CDR.
 */
enum tg_result tg_rated_debit(struct tg_worker *w, struct tg_acct *a, const char *dest, size_t dlen,
                              uint32_t duration, tg_money_t *charge, struct tg_move *m);
/*
 * A batch of requests about to run, for tg_engine_prefetch: what each will
 * touch.  op says which request (the ids it uses); dest only for CDR and
 * CALL.AUTH (dlen 0 otherwise).
 */
enum tg_prefetch_op {
	TG_PF_CDR,
	TG_PF_CALL_AUTH,
	TG_PF_CALL_UPDATE,
	TG_PF_CALL_END,
	TG_PF_CREDIT,
};
struct tg_prefetch {
	uint64_t acct;
	struct tg_id id;
	const char *dest;
	uint32_t dlen;
	uint8_t op; /* enum tg_prefetch_op */
};
/*
 * Start loading, for the n requests of p, everything their execution reads
 * first: in one pass the account slots, id-window slots and call-map slots
 * (none of which needs another to be in cache), then, once the accounts'
 * lines had the time of that pass to arrive, each account's fraud-limits line,
 * its entry of the worker's rate cache and the plan's jump-table entry.  Only
 * between tg_worker_enter and tg_worker_exit.  A hint: it changes nothing,
 * takes no lock, and the requests then run one by one, in order, exactly as
 * without it (two of them on the same account or id included).
 */
void tg_engine_prefetch(struct tg_worker *w, const struct tg_prefetch *p, size_t n);
/*
 * The second step of tg_engine_prefetch for one account a about to be rated
 * for dest: its limits line, its rate-cache entry, the plan's jump entry.
 */
void tg_engine_prefetch_rating(struct tg_worker *w, const struct tg_acct *a, const char *dest,
                               size_t dlen);
/* RATE: quote without debiting. */
enum tg_result tg_quote(struct tg_worker *w, const char *plan, size_t plen, const char *dest,
                        size_t dlen, uint32_t duration, tg_money_t *charge,
                        const struct tg_rate **rate);

/*
 * Account for what a money step did: counts a refill fired (and hands the
 * request to the refill publisher) or landed.  Every caller of a tg_acct_*
 * money operation outside the engine passes its move here.
 */
void tg_note_move(struct tg_worker *w, struct tg_acct *a, const struct tg_move *m);

/* ACCT.SET's two steps, recorded: the balance outright, then the settings. */
enum tg_result tg_engine_set_balance(struct tg_worker *w, struct tg_acct *a, tg_money_t balance);
enum tg_result tg_engine_configure(struct tg_worker *w, struct tg_acct *a,
                                   const struct tg_acct_settings *s);
/* ACCT.SET's limits (docs/FRAUD.md), recorded: replaces all four. */
void tg_engine_set_limits(struct tg_worker *w, struct tg_acct *a, const struct tg_limits_set *ls);
/* Record an account just created outside the engine's operations (loaded from a file). */
void tg_engine_journal_new(struct tg_worker *w, struct tg_acct *a);

/*
 * Settle calls whose grant (plus grace) ran out, each remembered in the id
 * window under its call digest.  Returns how many; a call whose window
 * stripe is busy or full waits for the next call.
 */
size_t tg_engine_expire(struct tg_worker *w);
/*
 * Close the accounts suspended for non-payment longer than cfg.close_after
 * (docs/REFILL.md): a bounded chunk of the table per call, a whole pass at
 * most every few seconds.  One thread only (worker 0's tick).  Returns the
 * accounts closed.
 */
size_t tg_engine_close_unpaid(struct tg_worker *w);

/*
 * Room for a refill request id with its NUL: "refill:" (7), a 64-bit
 * account (20), ':', a 32-bit seq (10), NUL: 39, rounded up.
 */
#define TG_REFILL_ID_MAX 48
_Static_assert(TG_REFILL_ID_MAX >= sizeof("refill:18446744073709551615:4294967295"),
               "a refill id fits its buffer");
/*
 * The refill request id of (acct, seq): "refill:<acct>:<seq>".  buf holds
 * TG_REFILL_ID_MAX bytes.  Returns the length.
 */
size_t tg_refill_id(uint64_t acct, uint32_t seq, char *buf);
/* Parse a refill request id for acct; 0 when it is not one. */
uint32_t tg_refill_id_parse(uint64_t acct, const char *p, size_t len);

#endif
