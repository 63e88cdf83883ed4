/*
 * hist.c - the latency histogram's queries (hist.h has the layout and the
 * recording, which the load generator inlines).  Merging and percentiles
 * walk the 3584 counts once; they run once a second, never per request.
 */
#include <string.h>

#include "hist.h"

void
tg_hist_reset(struct tg_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

void
tg_hist_add(struct tg_hist *dst, const struct tg_hist *src)
{
	if (src->n == 0)
		return;
	dst->n += src->n;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
	for (unsigned i = 0; i < TG_HIST_COUNTS; i++)
		dst->counts[i] += src->counts[i];
}

/* The highest value that falls in bucket i. */
static uint64_t
bucket_top(unsigned i)
{
	if (i < 2 * TG_HIST_HALF)
		return i;
	unsigned b = i / TG_HIST_HALF - 1;
	uint64_t sub = i - b * TG_HIST_HALF;

	return ((sub + 1) << b) - 1;
}

uint64_t
tg_hist_percentile(const struct tg_hist *h, double q)
{
	if (h->n == 0)
		return 0;
	if (q >= 100.0)
		return h->max;
	/* The rank of the value asked for, 1-based: ceil(q% of n), at least 1. */
	uint64_t rank = (uint64_t)(q / 100.0 * (double)h->n);
	if ((double)rank < q / 100.0 * (double)h->n)
		rank++;
	if (rank == 0)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < TG_HIST_COUNTS; i++) {
		seen += h->counts[i];
		if (seen >= rank) {
			uint64_t top = bucket_top(i);
			return top < h->max ? top : h->max;
		}
	}
	return h->max;
}

uint64_t
tg_hist_mean(const struct tg_hist *h)
{
	return h->n ? h->sum / h->n : 0;
}
