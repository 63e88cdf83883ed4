/*
 * stats.c - names of the counters and histogram kinds, and reading the
 * histograms: summing blocks and finding percentiles.  Shared by INFO and
 * tollstat; never on the hot path.
 */
#include <string.h>

#include "tg_assert.h"
#include "tg_atomic.h"
#include "tg_stats.h"

static const struct {
	const char *name, *section, *text;
} counters[] = {
#define TG_COUNTER(n, s, d) {#n, #s, d},
#include "tbl/tg_counters.h"
#undef TG_COUNTER
#define TG_CATEGORY(n, d) {"charged_" #n, "money", "amount charged for " d},
#include "tbl/tg_categories.h"
#undef TG_CATEGORY
};
_Static_assert(sizeof(counters) / sizeof(counters[0]) == TG_COUNTER__COUNT, "one name each");

static const char *const kinds[] = {"auth", "update", "end", "cdr", "credit", "acct", "other"};
_Static_assert(sizeof(kinds) / sizeof(kinds[0]) == TG_HIST__COUNT, "one name each");

const char *
tg_counter_name(enum tg_counter c)
{
	TG_ASSERT((unsigned)c < TG_COUNTER__COUNT);
	return counters[c].name;
}

const char *
tg_counter_section(enum tg_counter c)
{
	TG_ASSERT((unsigned)c < TG_COUNTER__COUNT);
	return counters[c].section;
}

const char *
tg_counter_text(enum tg_counter c)
{
	TG_ASSERT((unsigned)c < TG_COUNTER__COUNT);
	return counters[c].text;
}

int
tg_counter_is_money(enum tg_counter c)
{
	const char *n = tg_counter_name(c);
	return strncmp(n, "money_", 6) == 0 || strncmp(n, "charged_", 8) == 0;
}

const char *
tg_hist_name(enum tg_hist_kind k)
{
	TG_ASSERT((unsigned)k < TG_HIST__COUNT);
	return kinds[k];
}

/*
 * Saturating, like each block: a money counter stops at TG_MONEY_MAX (it is
 * printed as a signed amount), any other at UINT64_MAX, whatever a block
 * holds.  Nine quintillion micro-units is nine trillion of the currency: a
 * wider sum would only make a figure no one can reach exact (docs/STATS.md).
 */
uint64_t
tg_stats_counter(const struct tg_stats *blocks, unsigned n, enum tg_counter c)
{
	uint64_t top = tg_counter_is_money(c) ? (uint64_t)INT64_MAX : UINT64_MAX;
	uint64_t sum = 0;
	for (unsigned i = 0; i < n; i++) {
		uint64_t v = tg_load_64(&blocks[i].counter[c]);
		if (v > top || __builtin_add_overflow(sum, v, &sum) || sum > top)
			return top;
	}
	return sum;
}

void
tg_stats_hist(const struct tg_stats *blocks, unsigned n, enum tg_hist_kind k, struct tg_hist *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < n; i++)
		for (unsigned b = 0; b < TG_HIST_BUCKETS; b++)
			out->count[b] += tg_load_64(&blocks[i].hist[k].count[b]);
}

uint64_t
tg_hist_total(const struct tg_hist *h)
{
	uint64_t t = 0;
	for (unsigned b = 0; b < TG_HIST_BUCKETS; b++)
		t += h->count[b];
	return t;
}

uint64_t
tg_hist_percentile(const struct tg_hist *h, unsigned per100k)
{
	uint64_t total = tg_hist_total(h), seen = 0;
	if (total == 0)
		return 0;
	/* The rank of the value at or below which per100k / 100000 of them lie. */
	uint64_t rank = (total * per100k + 99999) / 100000;
	if (rank == 0)
		rank = 1;
	for (unsigned b = 0; b < TG_HIST_BUCKETS; b++) {
		seen += h->count[b];
		if (seen >= rank)
			return b + 1 < TG_HIST_BUCKETS ? tg_hist_value(b + 1) - 1
			                               : tg_hist_value(b);
	}
	return tg_hist_value(TG_HIST_BUCKETS - 1);
}
