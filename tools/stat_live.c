/*
 * stat_live.c - one screen of tollstat's live view, varnishstat-style.
 *
 * Owns the layout: what changed between two snapshots, per second, as plain
 * text with ANSI cursor moves (no curses).  It must never read the segment
 * for anything but the few accounts of the top list, and never uses floating
 * point: per-second figures come from integer arithmetic on the counters and
 * the monotonic clock, and money per second is micro-units like any amount.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "stat.h"

/* Bounds of one screen: longer or wider output is cut. */
#define LINES_MAX 256
#define COLS_MAX  256
/* Width of one counter column: name, total, per second. */
#define CTR_W 52

struct screen {
	char line[LINES_MAX][COLS_MAX];
	unsigned n;
};

static void put(struct screen *sc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append one line (cut at COLS_MAX - 1 bytes); lines past LINES_MAX are dropped. */
static void
put(struct screen *sc, const char *fmt, ...)
{
	va_list ap;

	if (sc->n >= LINES_MAX)
		return;
	va_start(ap, fmt);
	vsnprintf(sc->line[sc->n++], COLS_MAX, fmt, ap);
	va_end(ap);
}

/* cur - prev for counter values, 0 when the engine restarted and counted from zero. */
static uint64_t
delta(uint64_t prev, uint64_t cur)
{
	return cur >= prev ? cur - prev : 0;
}

/* What one counter did since the previous snapshot, per second, as text ("-" without one). */
static const char *
rate_of(const struct stat_snap *prev, const struct stat_snap *cur, unsigned c, char *buf,
        size_t len)
{
	uint64_t dt = prev ? cur->mono_ns - prev->mono_ns : 0;
	if (prev == NULL || dt == 0 || !prev->counters_ok)
		return strcpy(buf, "-");
	uint64_t r = stat_per_s(delta(prev->counter[c], cur->counter[c]), dt);
	if (tg_counter_is_money(c)) {
		char m[TG_MONEY_STR_MAX];
		snprintf(buf, len, "%s", stat_money(r > INT64_MAX ? INT64_MAX : (int64_t)r, m));
	} else {
		snprintf(buf, len, "%" PRIu64, r);
	}
	return buf;
}

static const char *
total_of(const struct stat_snap *cur, unsigned c, char *buf, size_t len)
{
	char m[TG_MONEY_STR_MAX];
	if (tg_counter_is_money(c))
		snprintf(buf, len, "%s", stat_money((tg_money_t)cur->counter[c], m));
	else
		snprintf(buf, len, "%" PRIu64, cur->counter[c]);
	return buf;
}

static void
head(struct screen *sc, const struct stat_src *s, const struct stat_snap *cur, const char *notice)
{
	char t[32], a[48];
	struct tm tm;
	time_t now = (time_t)cur->now;

	gmtime_r(&now, &tm);
	strftime(t, sizeof(t), "%Y-%m-%d %H:%M:%SZ", &tm);
	put(sc, "tollstat %s   %s   generation %" PRIu64, s->name, t, cur->generation);
	if (cur->running) {
		uint64_t up = cur->now > cur->started ? (uint64_t)(cur->now - cur->started) : 0;
		put(sc, "engine pid %d running, up %" PRIu64 "d %02u:%02u:%02u, %u workers",
		    (int)cur->writer_pid, up / 86400, (unsigned)(up / 3600 % 24),
		    (unsigned)(up / 60 % 60), (unsigned)(up % 60), cur->workers);
	} else if (cur->writer_pid == 0) {
		put(sc, "engine not running (stopped cleanly): the figures are its last run's");
	} else {
		put(sc, "engine not running (pid %d is gone): the figures are its last run's",
		    (int)cur->writer_pid);
	}
	put(sc,
	    "accounts %" PRIu64 " of %" PRIu64 " (%" PRIu64 " slots), %u plans; %" PRIu64
	    " calls holding %s; scan %" PRIu64 ".%01u ms",
	    cur->count, cur->capacity, cur->slots, cur->plan_count, cur->calls,
	    stat_money128(cur->reserved, a), cur->scan_ns / 1000000,
	    (unsigned)(cur->scan_ns / 100000 % 10));
	if (notice)
		put(sc, "*** %s", notice);
	if (!cur->counters_ok)
		put(sc, "*** the segment has %u counters, this build knows %u: counters not shown",
		    cur->seg_counters, (unsigned)TG_COUNTER__COUNT);
}

/* "label N (+r/s)" for counter c */
static const char *
with_rate(const struct stat_snap *prev, const struct stat_snap *cur, const char *label, unsigned c,
          char *buf, size_t len)
{
	char t[48], r[48];
	snprintf(buf, len, "%s %s (%s/s)", label, total_of(cur, c, t, sizeof(t)),
	         rate_of(prev, cur, c, r, sizeof(r)));
	return buf;
}

/* The refill pipeline from firing to landing, and money in and out. */
static void
pipeline(struct screen *sc, const struct stat_snap *prev, const struct stat_snap *cur)
{
	char a[96], b[96], c[96], d[96];

	if (!cur->counters_ok) {
		put(sc, "refills  in flight %" PRIu64 "   pending %" PRIu64, cur->inflight,
		    cur->pending);
		return;
	}
	put(sc, "refills  %s   %s   pending %" PRIu64 "   in flight %" PRIu64,
	    with_rate(prev, cur, "fired", TG_C_refills_fired, a, sizeof(a)),
	    with_rate(prev, cur, "published", TG_C_refills_published, b, sizeof(b)), cur->pending,
	    cur->inflight);
	put(sc, "         %s   %s   republished %" PRIu64,
	    with_rate(prev, cur, "landed", TG_C_refills_landed, a, sizeof(a)),
	    with_rate(prev, cur, "failed", TG_C_refills_failed, b, sizeof(b)),
	    cur->counter[TG_C_refills_republished]);
	put(sc, "         publish failures %" PRIu64 "   ring full %" PRIu64,
	    cur->counter[TG_C_refills_publish_failures], cur->counter[TG_C_refills_ring_full]);

	put(sc, "money    charged %s/s (total %s)   credited %s/s (total %s)",
	    rate_of(prev, cur, TG_C_money_charged, a, sizeof(a)),
	    total_of(cur, TG_C_money_charged, b, sizeof(b)),
	    rate_of(prev, cur, TG_C_money_credited, c, sizeof(c)),
	    total_of(cur, TG_C_money_credited, d, sizeof(d)));
	/* Per category, per second: one line, the categories that ever charged. */
	char line[COLS_MAX] = "";
	size_t n = 0;
	for (unsigned k = TG_C_charged_local; k < TG_COUNTER__COUNT; k++) {
		if (cur->counter[k] == 0 || n >= sizeof(line))
			continue;
		n += (size_t)snprintf(line + n, sizeof(line) - n, "   %s %s/s",
		                      tg_counter_name(k) + strlen("charged_"),
		                      rate_of(prev, cur, k, a, sizeof(a)));
	}
	put(sc, "         by category:%s", n ? line : " nothing charged yet");
}

static void
latency(struct screen *sc, const struct stat_snap *prev, const struct stat_snap *cur)
{
	static const unsigned pct[] = {50000, 99000, 99900};
	uint64_t dt = prev ? cur->mono_ns - prev->mono_ns : 0;

	put(sc, "%-8s %9s %7s %7s %7s | %12s %7s %7s %7s", "latency", "calls/s", "p50", "p99",
	    "p999", "calls", "p50", "p99", "p999");
	for (unsigned k = 0; k < TG_HIST__COUNT; k++) {
		const struct tg_hist *h = &cur->hist[k];
		char iv[64];
		/* The interval's own histogram: this one minus the previous, bucket by bucket. */
		if (prev != NULL && dt > 0) {
			struct tg_hist d;
			for (unsigned b = 0; b < TG_HIST_BUCKETS; b++)
				d.count[b] = delta(prev->hist[k].count[b], h->count[b]);
			uint64_t calls = tg_hist_total(&d);
			if (calls == 0)
				snprintf(iv, sizeof(iv), "%9s %7s %7s %7s", "0", "-", "-", "-");
			else
				snprintf(iv, sizeof(iv),
				         "%9" PRIu64 " %7" PRIu64 " %7" PRIu64 " %7" PRIu64,
				         stat_per_s(calls, dt),
				         stat_usec(tg_hist_percentile(&d, pct[0])),
				         stat_usec(tg_hist_percentile(&d, pct[1])),
				         stat_usec(tg_hist_percentile(&d, pct[2])));
		} else {
			snprintf(iv, sizeof(iv), "%9s %7s %7s %7s", "-", "-", "-", "-");
		}
		put(sc, "%-8s %s | %12" PRIu64 " %7" PRIu64 " %7" PRIu64 " %7" PRIu64,
		    tg_hist_name(k), iv, tg_hist_total(h), stat_usec(tg_hist_percentile(h, pct[0])),
		    stat_usec(tg_hist_percentile(h, pct[1])),
		    stat_usec(tg_hist_percentile(h, pct[2])));
	}
	put(sc, "%-8s %34s | %36s", "", "(last interval, microseconds)", "(since start)");
}

static void
top(struct screen *sc, const struct stat_src *s, const struct stat_snap *prev,
    const struct stat_snap *cur)
{
	char a[32], b[32], c[32], r[32];
	uint64_t dt = prev ? cur->mono_ns - prev->mono_ns : 0;

	if (cur->top_want == 0)
		return;
	if (!cur->top_interval || prev == NULL) {
		put(sc, "top accounts by spend: from the next refresh on");
		put(sc, "%s", "");
		return;
	}
	put(sc, "top %u accounts by spend, last %" PRIu64 ".%01u s:", cur->top_want,
	    dt / 1000000000u, (unsigned)(dt / 100000000u % 10));
	put(sc, "%-22s %14s %14s %16s %16s %6s", "account", "spent", "spent/s", "balance",
	    "available", "calls");
	for (unsigned i = 0; i < cur->ntop; i++) {
		struct tg_acct_view v;
		tg_acct_read(tg_table_slot(&s->t, cur->top[i].slot), &v);
		uint64_t ps = dt ? stat_per_s((uint64_t)cur->top[i].spent, dt) : 0;
		put(sc, "%-22" PRIu64 " %14s %14s %16s %16s %6u", cur->top[i].id,
		    stat_money(cur->top[i].spent, a),
		    stat_money(ps > INT64_MAX ? INT64_MAX : (int64_t)ps, r),
		    stat_money(v.balance, b), stat_money(v.available, c), v.calls);
	}
	if (cur->ntop == 0)
		put(sc, "(no account was charged in the interval)");
	put(sc, "%s", "");
}

/* Every counter, grouped by INFO section; in two columns when the terminal is wide enough. */
static void
counters(struct screen *sc, const struct stat_snap *prev, const struct stat_snap *cur,
         unsigned cols)
{
	static char item[TG_COUNTER__COUNT * 2][COLS_MAX];
	const char *secs[TG_COUNTER__COUNT];
	unsigned nsec = stat_sections(secs, TG_COUNTER__COUNT), n = 0;
	char t[48], r[48];

	if (!cur->counters_ok)
		return;
	for (unsigned k = 0; k < nsec; k++) {
		snprintf(item[n++], COLS_MAX, "# %s", secs[k]);
		for (unsigned c = 0; c < TG_COUNTER__COUNT; c++)
			if (strcmp(tg_counter_section(c), secs[k]) == 0)
				snprintf(item[n++], COLS_MAX, "%-24s %14s %12s", tg_counter_name(c),
				         total_of(cur, c, t, sizeof(t)),
				         rate_of(prev, cur, c, r, sizeof(r)));
	}
	char hdr[CTR_W + 1];
	snprintf(hdr, sizeof(hdr), "%-24s %14s %12s", "counter", "total", "/s");
	if (cols >= 2 * CTR_W + 3) {
		/* Split at the section start that evens the columns out best. */
		unsigned half = n;
		for (unsigned i = 1; i < n; i++) {
			unsigned tall = i > n - i ? i : n - i;
			if (item[i][0] == '#' && tall < (half > n - half ? half : n - half))
				half = i;
		}
		unsigned right = n - half;
		put(sc, "%-*s   %s", CTR_W, hdr, hdr);
		for (unsigned i = 0; i < half || i < right; i++)
			put(sc, "%-*.*s   %s", CTR_W, CTR_W, i < half ? item[i] : "",
			    i < right ? item[half + i] : "");
	} else {
		put(sc, "%s", hdr);
		for (unsigned i = 0; i < n; i++)
			put(sc, "%s", item[i]);
	}
}

void
stat_print_live(FILE *f, const struct stat_src *s, const struct stat_snap *prev,
                const struct stat_snap *cur, const char *notice, unsigned rows, unsigned cols)
{
	static struct screen sc;

	sc.n = 0;
	head(&sc, s, cur, notice);
	put(&sc, "%s", "");
	pipeline(&sc, prev, cur);
	put(&sc, "%s", "");
	latency(&sc, prev, cur);
	put(&sc, "%s", "");
	top(&sc, s, prev, cur);
	counters(&sc, prev, cur, cols);

	/* Home, each line then clear to its end, then clear below: no flicker. */
	unsigned show = sc.n;
	if (rows > 1 && show > rows - 1)
		show = rows - 1;
	fputs("\033[H", f);
	for (unsigned i = 0; i < show; i++) {
		if (i + 1 == show && show < sc.n)
			fprintf(f, "(%u more lines: enlarge the terminal)\033[K\n",
			        sc.n - show + 1);
		else
			fprintf(f, "%.*s\033[K\n", (int)(cols ? cols : COLS_MAX), sc.line[i]);
	}
	fputs("\033[J", f);
	fflush(f);
}
