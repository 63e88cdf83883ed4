/*
 * tg_stats-t.h - the engine's counters and latency histograms, as they lie
 * in the shared-memory segment (docs/SHM.md, docs/STATS.md).
 *
 * One block per writer thread (each worker, the control thread, the refill
 * publisher), each written by its thread alone with plain atomic stores and
 * summed by readers.  Types and the bucket arithmetic only: tools include
 * this without the engine.
 */
#ifndef TG_STATS_T_H
#define TG_STATS_T_H

#include <stdint.h>

#include "tg_limits.h"

enum tg_counter {
#define TG_COUNTER(n, s, d) TG_C_##n,
#include "tbl/tg_counters.h"
#undef TG_COUNTER
/* Micro-units charged per usage category, after the table's own counters. */
#define TG_CATEGORY(n, d) TG_C_charged_##n,
#include "tbl/tg_categories.h"
#undef TG_CATEGORY
	TG_COUNTER__COUNT
};

/* Latency is kept per kind of command. */
enum tg_hist_kind {
	TG_H_AUTH,   /* CALL.AUTH */
	TG_H_UPDATE, /* CALL.UPDATE */
	TG_H_END,    /* CALL.END */
	TG_H_CDR,    /* CDR */
	TG_H_CREDIT, /* ACCT.CREDIT */
	TG_H_ACCT,   /* ACCT.SET, ACCT.GET, ACCT.REFILL.FAILED, RATE */
	TG_H_OTHER,  /* everything else */
	TG_HIST__COUNT
};

/*
 * Log-linear buckets of nanoseconds, HdrHistogram-style: values below 16 ns
 * have a bucket each; above, every power of two is cut into 16 equal
 * sub-buckets (at most 6.25 % apart), up to 2^35 ns (34 s).
 */
#define TG_HIST_SUB_BITS 4
#define TG_HIST_BUCKETS  512

struct tg_hist {
	uint64_t count[TG_HIST_BUCKETS];
};

static inline unsigned
tg_hist_bucket(uint64_t ns)
{
	if (ns < 16)
		return (unsigned)ns;
	unsigned e = 63u - (unsigned)__builtin_clzll(ns); /* >= 4 */
	unsigned b = (e - 3) * 16 + (unsigned)((ns >> (e - 4)) & 15);
	return b < TG_HIST_BUCKETS ? b : TG_HIST_BUCKETS - 1;
}

/* The smallest value that falls in bucket b. */
static inline uint64_t
tg_hist_value(unsigned b)
{
	if (b < 16)
		return b;
	unsigned e = b / 16 + 3;
	return (uint64_t)(16 + b % 16) << (e - 4);
}

/* Counter slots per block: room to grow without moving the histograms. */
#define TG_COUNTERS_MAX 128

struct tg_stats {
	uint64_t counter[TG_COUNTERS_MAX];
	struct tg_hist hist[TG_HIST__COUNT];
} __attribute__((aligned(64)));

/*
 * Blocks: one per worker (up to TG_WORKERS_MAX), the control thread, the
 * refill publisher, the journal (written with atomic adds by whichever thread
 * flushes it).
 */
#define TG_STATS_CONTROL   TG_WORKERS_MAX
#define TG_STATS_PUBLISHER (TG_WORKERS_MAX + 1)
#define TG_STATS_JOURNAL   (TG_WORKERS_MAX + 2)
#define TG_STATS_BLOCKS    (TG_WORKERS_MAX + 3)

_Static_assert(TG_COUNTER__COUNT <= TG_COUNTERS_MAX, "counter slots");
_Static_assert(sizeof(struct tg_stats) % 64 == 0, "blocks on their own cache lines");
_Static_assert(sizeof(struct tg_stats) ==
                   8 * TG_COUNTERS_MAX + 8 * TG_HIST_BUCKETS * TG_HIST__COUNT,
               "layout pinned by docs/SHM.md");

#endif
