/*
 * tg_shm-t.h - the shared-memory segment, box by box (docs/SHM.md).
 *
 * This header is the layout and nothing else: tools include it to read a
 * running engine's segment without dragging in engine internals.  Any change
 * of size, order or meaning of a field bumps TG_SHM_VERSION.
 *
 *   +------------------+ 0
 *   | struct tg_shm_hdr|   4096 bytes
 *   +------------------+ plans_off
 *   | plan names       |   plans_max * 32 bytes, NUL-padded; all zero: free
 *   +------------------+ slots_off  (128-byte aligned)
 *   | struct tg_slot   |   slots * 128 bytes, open addressing: each slot is
 *   |  tg_acct | usage |   the account's line, then its usage line
 *   +------------------+ refill_off
 *   | tg_refill_rec    |   slots * 32 bytes, same index as the slot
 *   +------------------+ limits_off
 *   | struct tg_limits |   slots * 64 bytes, same index as the slot: read
 *   |                  |   only when the account has TG_ACCT_LIMITS
 *   +------------------+ stats_off  (next page)
 *   | struct tg_stats  |   stats_blocks blocks: counters and latency
 *   |                  |   histograms, one block per engine thread
 *   +------------------+ total_size
 */
#ifndef TG_SHM_T_H
#define TG_SHM_T_H

#include <stddef.h>
#include <stdint.h>

#include "tg_limits.h"
#include "tg_stats-t.h"

#define TG_SHM_MAGIC    0x31544147474c4f54ull /* "TOLLGAT1", little-endian */
#define TG_SHM_VERSION  8u
#define TG_SHM_HDR_SIZE 4096u

struct tg_shm_hdr {
	uint64_t magic;        /*   0 TG_SHM_MAGIC */
	uint32_t version;      /*   8 TG_SHM_VERSION */
	uint32_t record_size;  /*  12 sizeof(struct tg_acct) */
	uint64_t capacity;     /*  16 accounts the segment was sized for */
	uint64_t slots;        /*  24 account slots: capacity * 5 / 4 */
	uint64_t generation;   /*  32 bumped each time a writer attaches */
	int64_t created;       /*  40 creation time, Unix seconds */
	int32_t writer_pid;    /*  48 pid of the attached writer; 0 when none */
	uint32_t hdr_size;     /*  52 TG_SHM_HDR_SIZE */
	uint64_t total_size;   /*  56 bytes of the whole segment */
	uint64_t plans_off;    /*  64 offset of the plan-name table */
	uint64_t slots_off;    /*  72 offset of the slots */
	uint64_t slot_size;    /*  80 sizeof(struct tg_slot) */
	uint64_t count;        /*  88 accounts in use */
	uint32_t plan_count;   /*  96 plan-name slots handed out (a slot may be free again) */
	uint32_t plans_max;    /* 100 slots of the plan-name table */
	uint64_t refill_off;   /* 104 offset of the pending-refill records */
	uint32_t refill_size;  /* 112 sizeof(struct tg_refill_rec) */
	uint32_t stats_blocks; /* 116 TG_STATS_BLOCKS */
	uint64_t stats_off;    /* 120 offset of the counter blocks */
	uint32_t stats_size;   /* 128 sizeof(struct tg_stats) */
	uint32_t counters;     /* 132 TG_COUNTER__COUNT: counters in use in each block */
	uint32_t workers;      /* 136 worker threads of the attached engine */
	uint32_t hist_buckets; /* 140 TG_HIST_BUCKETS */
	int64_t started;       /* 144 when the attached engine started, Unix seconds */
	uint64_t journal_lsn;  /* 152 last LSN on disk (docs/JOURNAL.md); 0: no journal */
	uint64_t clean_lsn;  /* 160 set by a clean stop: the table is exactly the journal to here */
	uint64_t limits_off; /* 168 offset of the limits records */
	uint32_t limits_size; /* 176 sizeof(struct tg_limits) */
	uint32_t pad;         /* 180 zero */
	uint8_t reserved[TG_SHM_HDR_SIZE - 184];
};

/* enum tg_acct_state: persisted, only grow at the end (tbl/tg_acct_states.h). */
enum tg_acct_state {
#define TG_ACCT_STATE(e, n, v, d) TG_STATE_##e = v,
#include "tbl/tg_acct_states.h"
#undef TG_ACCT_STATE
	TG_ACCT_STATE__COUNT
};
/* enum tg_refill_mode: persisted, only grow at the end (tbl/tg_refill_modes.h). */
enum tg_refill_mode {
#define TG_REFILL_MODE(e, n, v, d) TG_REFILL_##e = v,
#include "tbl/tg_refill_modes.h"
#undef TG_REFILL_MODE
	TG_REFILL_MODE__COUNT
};

/* tg_acct.flags */
#define TG_ACCT_PAYMENT 0x01u /* a payment method is on file */
/* Suspended for non-payment (state suspended): a payment makes it active again. */
#define TG_ACCT_UNPAID 0x02u
/*
 * A postpaid account: usage billed in arrears, grants go down to minus its
 * credit limit, no auto-refill (docs/ACCOUNTS.md, "Postpaid accounts").
 */
#define TG_ACCT_POSTPAID 0x04u
/*
 * The account has fraud limits (a concurrent-call limit, a per-call or
 * daily spend cap, a low-balance threshold): its tg_limits record is read.
 * Without it the record is never touched (docs/SHM.md, "Limits").
 */
#define TG_ACCT_LIMITS 0x08u

/* tg_acct.hold: reserved micro-units in the low 56 bits, flags above. */
#define TG_HOLD_RESERVED ((uint64_t)TG_RESERVED_MAX)
#define TG_HOLD_REFILL   (1ull << 63) /* a refill request is in flight */
/* Bits 56-62: the low 7 bits of the number of the request in flight, set with the flag. */
#define TG_HOLD_SEQ_SHIFT 56
#define TG_HOLD_SEQ       (0x7full << TG_HOLD_SEQ_SHIFT)

/*
 * One account: one cache line.  balance and hold are changed together by one
 * 16-byte compare-and-swap, so a reservation, a debit and the claim of the
 * refill flag are each a single atomic step.  The settings (plan, threshold,
 * refill, state, flags) change under seq, a sequence counter that is odd while
 * a writer is at work; readers retry until they see the same even value
 * before and after.
 */
struct tg_acct {
	uint64_t key;    /*  0 account id + 1; 0 = free slot.  Set once, by CAS */
	uint32_t seq;    /*  8 settings sequence */
	uint32_t plan;   /* 12 rate-plan id */
	int64_t balance; /* 16 micro-units; below zero only through CDRs */
	uint64_t hold;   /* 24 reserved | TG_HOLD_SEQ | TG_HOLD_REFILL */
	/* 32: the account's terms, by kind (TG_ACCT_POSTPAID in flags) */
	union {
		int64_t threshold;    /* prepaid: auto-refill fires when balance drops to this */
		int64_t credit_limit; /* postpaid: grants go down to -credit_limit (>= 0) */
	};
	int64_t refill_amount; /* 40 ADD: amount charged; TOPUP: level returned to; postpaid: 0 */
	uint32_t refill_seq;   /* 48 number of the last refill request fired */
	uint32_t calls;        /* 52 calls holding a reservation */
	uint8_t state;         /* 56 enum tg_acct_state */
	uint8_t refill_mode;   /* 57 enum tg_refill_mode */
	uint8_t flags;         /* 58 TG_ACCT_* */
	uint8_t failures;      /* 59 consecutive failed refills (saturates at 255) */
	uint32_t unpaid_since; /* 60 suspended for non-payment since, Unix seconds; 0: not */
} __attribute__((aligned(64)));

/* Charges per usage category (enum tg_category), same slot index as the account. */
struct tg_usage {
	int64_t charged[TG_CATEGORIES_MAX]; /* micro-units */
} __attribute__((aligned(64)));

/* enum tg_refill_state: tg_refill_rec's life.  Persisted, only grow at the end. */
enum tg_refill_state {
	TG_RREC_EMPTY = 0,     /* no request was ever written here */
	TG_RREC_WRITING = 1,   /* its writer is filling the fields in */
	TG_RREC_PENDING = 2,   /* written, not yet on the stream */
	TG_RREC_QUEUED = 3,    /* in the publisher's pipeline right now */
	TG_RREC_PUBLISHED = 4, /* on the stream (attempt times); waits for its credit */
	TG_RREC_DROPPED = 5,   /* credited or failed before it was ever published */
};

/* The tag word of a refill record: one 64-bit word, changed by compare-and-swap. */
#define TG_RTAG(seq, attempt, mode, state)                                                         \
	((uint64_t)(uint32_t)(seq) | (uint64_t)(uint16_t)(attempt) << 32 |                         \
	 (uint64_t)(uint8_t)(mode) << 48 | (uint64_t)(uint8_t)(state) << 56)
#define TG_RTAG_SEQ(t)     ((uint32_t)(t))
#define TG_RTAG_ATTEMPT(t) ((uint16_t)((t) >> 32))
#define TG_RTAG_MODE(t)    ((uint8_t)((t) >> 48))
#define TG_RTAG_STATE(t)   ((uint8_t)((t) >> 56))

/*
 * The pending auto-refill request of one account (docs/SHM.md, docs/REFILL.md),
 * same slot index as the account.  Written by whoever fired the request (the
 * worker whose debit claimed TG_HOLD_REFILL) before it hands the request to
 * the publisher; the publisher moves the state on.  The fields are valid only
 * while the tag reads the same, in a state other than WRITING, before and
 * after reading them.
 */
struct tg_refill_rec {
	int64_t balance;    /*  0 balance when the request fired, micro-units */
	int64_t amount;     /*  8 what to charge, micro-units */
	uint32_t fired;     /* 16 when it fired, Unix seconds */
	uint32_t published; /* 20 last publication, or a lease's end (docs/SHM.md), Unix seconds */
	uint64_t tag;       /* 24 TG_RTAG(seq, attempt, mode, state) */
} __attribute__((aligned(32)));

/* tg_limits.day_used: the UTC day counted (days since the epoch, mod 65536) and the amount. */
#define TG_DAY_SHIFT    48
#define TG_DAY_USED_MAX ((int64_t)((1ull << TG_DAY_SHIFT) - 1)) /* 281474976.710655 */
#define TG_DAY_PACK(day, used)                                                                     \
	((uint64_t)(uint16_t)(day) << TG_DAY_SHIFT | ((uint64_t)(used) & (uint64_t)TG_DAY_USED_MAX))
#define TG_DAY_OF(w)   ((uint16_t)((w) >> TG_DAY_SHIFT))
#define TG_DAY_USED(w) ((int64_t)((w) & (uint64_t)TG_DAY_USED_MAX))

/*
 * The fraud limits of one account (docs/SHM.md, docs/FRAUD.md), same slot
 * index as the account.  The settings (max_calls, call_cap, daily_cap, low)
 * change under the account's seq, as its other settings do; day_used is
 * changed by compare-and-swap only, by every grant, settlement and CDR of
 * an account with a daily cap.  0 in a setting: no limit.
 */
struct tg_limits {
	int64_t call_cap;  /*  0 most money one call may be granted, micro-units */
	int64_t daily_cap; /*  8 most money granted or charged in one UTC day, micro-units */
	int64_t low;       /* 16 low-balance threshold: a grant leaving less available says "low" */
	uint64_t day_used; /* 24 TG_DAY_PACK(day, micro-units counted against daily_cap) */
	uint32_t max_calls; /* 32 calls holding a reservation at once */
	uint32_t alarmed;   /* 36 day (mod 65536) << 16 | kinds alarmed that day (docs/FRAUD.md) */
	uint8_t reserved[24];
} __attribute__((aligned(64)));

/*
 * An account and its usage, side by side: a rated debit touches both, and
 * two neighbouring lines cost one TLB entry and one DRAM page, not two.
 */
struct tg_slot {
	struct tg_acct acct;
	struct tg_usage usage;
} __attribute__((aligned(128)));

_Static_assert(sizeof(struct tg_shm_hdr) == TG_SHM_HDR_SIZE, "header is one page");
_Static_assert(sizeof(struct tg_slot) == 128, "account line, then usage line");
_Static_assert(sizeof(struct tg_acct) == 64, "one cache line per account");
_Static_assert(offsetof(struct tg_acct, balance) % 16 == 0, "money pair is 16-byte aligned");
_Static_assert(offsetof(struct tg_acct, hold) == offsetof(struct tg_acct, balance) + 8,
               "balance and hold are adjacent");
_Static_assert(offsetof(struct tg_acct, state) == 56, "layout pinned by docs/SHM.md");
_Static_assert(offsetof(struct tg_acct, unpaid_since) == 60, "layout pinned by docs/SHM.md");
_Static_assert(sizeof(struct tg_usage) == 64, "one cache line of usage");
_Static_assert(offsetof(struct tg_shm_hdr, plan_count) == 96, "layout pinned by docs/SHM.md");
_Static_assert(offsetof(struct tg_shm_hdr, refill_off) == 104, "layout pinned by docs/SHM.md");
_Static_assert(offsetof(struct tg_shm_hdr, refill_size) == 112, "layout pinned by docs/SHM.md");
_Static_assert(offsetof(struct tg_shm_hdr, stats_off) == 120, "layout pinned by docs/SHM.md");
_Static_assert(offsetof(struct tg_shm_hdr, started) == 144, "layout pinned by docs/SHM.md");
_Static_assert(offsetof(struct tg_shm_hdr, clean_lsn) == 160, "layout pinned by docs/SHM.md");
_Static_assert(offsetof(struct tg_shm_hdr, limits_off) == 168, "layout pinned by docs/SHM.md");
_Static_assert(sizeof(struct tg_limits) == 64, "one cache line of limits");
_Static_assert(offsetof(struct tg_limits, max_calls) == 32, "layout pinned by docs/SHM.md");
_Static_assert(sizeof(struct tg_refill_rec) == 32, "two refill records per cache line");
_Static_assert(offsetof(struct tg_refill_rec, tag) == 24, "layout pinned by docs/SHM.md");

#endif
