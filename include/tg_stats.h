/*
 * tg_stats.h - names of the counters and histograms (generated from the
 * tables in include/tbl/), for INFO, tollstat and docs/STATS.md.
 */
#ifndef TG_STATS_H
#define TG_STATS_H

#include "tg_stats-t.h"

/* Name, INFO section and description of counter c (engine/assert.c). */
const char *tg_counter_name(enum tg_counter c);
const char *tg_counter_section(enum tg_counter c);
const char *tg_counter_text(enum tg_counter c);
/* Does counter c count micro-units (printed as an amount)? */
int tg_counter_is_money(enum tg_counter c);
/* "auth", "update", ...: the name of a histogram kind. */
const char *tg_hist_name(enum tg_hist_kind k);

/* Counter c summed over n blocks, saturating: INT64_MAX for a money counter, else UINT64_MAX. */
uint64_t tg_stats_counter(const struct tg_stats *blocks, unsigned n, enum tg_counter c);
/* Histogram of kind k summed over n blocks. */
void tg_stats_hist(const struct tg_stats *blocks, unsigned n, enum tg_hist_kind k,
                   struct tg_hist *out);
uint64_t tg_hist_total(const struct tg_hist *h);
/*
 * The value (ns, upper bound of its bucket) at or below which per100k of
 * every 100000 samples lie: 50000 is the median, 99900 the p999.  0 when empty.
 */
uint64_t tg_hist_percentile(const struct tg_hist *h, unsigned per100k);

#endif
