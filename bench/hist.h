/*
 * hist.h - a log-linear latency histogram, laid out as HdrHistogram lays
 * out its counts, for the load generator.
 *
 * Values are nanoseconds from 0 to TG_HIST_LIMIT - 1 (2^34 ns, about 17 s;
 * larger values are counted in the top bucket, and the exact maximum is kept
 * apart).  Below 256 every value has its own count; above, each power of two
 * is cut into 128 equal buckets, so a bucket is never wider than 1/128 of its
 * values: two significant decimal digits everywhere, 1 ns resolution where
 * loopback latencies live.  The histogram is one fixed-size struct (28 KiB):
 * recording is a count-leading-zeros, a shift and an add, with no allocation
 * and no floating point; only the percentile query takes a double.  Not
 * thread-safe: one writer, and readers only when the writer has let go.
 */
#ifndef TG_BENCH_HIST_H
#define TG_BENCH_HIST_H

#include <stdint.h>

#define TG_HIST_SUB_BITS  8 /* 2^8 = 256 exact values, then 128 buckets per power of two */
#define TG_HIST_HALF      (1u << (TG_HIST_SUB_BITS - 1))
#define TG_HIST_LIMIT_LOG 34
#define TG_HIST_LIMIT     (UINT64_C(1) << TG_HIST_LIMIT_LOG)
#define TG_HIST_COUNTS    ((TG_HIST_LIMIT_LOG - TG_HIST_SUB_BITS + 2) * TG_HIST_HALF)

struct tg_hist {
	uint64_t n;   /* values recorded */
	uint64_t min; /* exact; UINT64_MAX while empty */
	uint64_t max; /* exact, even beyond TG_HIST_LIMIT */
	uint64_t sum; /* for the mean; 2^64 ns is 584 years */
	uint64_t counts[TG_HIST_COUNTS];
};

_Static_assert(TG_HIST_COUNTS == 3584, "2^34 ns in 128-bucket halvings above 256 exact values");

/* The bucket of value v (< TG_HIST_LIMIT). */
static inline unsigned
tg_hist_index(uint64_t v)
{
	unsigned b =
	    (unsigned)(63 - __builtin_clzll(v | (2 * TG_HIST_HALF - 1))) - (TG_HIST_SUB_BITS - 1);
	return b * TG_HIST_HALF + (unsigned)(v >> b);
}

/* Count one value of v nanoseconds.  h must have been reset once. */
static inline void
tg_hist_record(struct tg_hist *h, uint64_t v)
{
	h->n++;
	h->sum += v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->counts[tg_hist_index(v < TG_HIST_LIMIT ? v : TG_HIST_LIMIT - 1)]++;
}

/* Empty h (also its first initialisation). */
void tg_hist_reset(struct tg_hist *h);

/* Add every count of src to dst; src is not changed. */
void tg_hist_add(struct tg_hist *dst, const struct tg_hist *src);

/*
 * The value at percentile q (0 < q <= 100) of h: the highest value of the
 * bucket holding the ceil(q% of n)-th smallest value, never above the exact
 * maximum (so q = 100 is the maximum).  0 for an empty histogram.
 */
uint64_t tg_hist_percentile(const struct tg_hist *h, double q);

/* The mean, rounded down; 0 for an empty histogram. */
uint64_t tg_hist_mean(const struct tg_hist *h);

#endif
