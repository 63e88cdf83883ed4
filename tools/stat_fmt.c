/*
 * stat_fmt.c - tollstat's one-shot outputs: text (-1), JSON (--json),
 * Prometheus (--prometheus, /metrics) and docs/STATS.md (--doc).
 *
 * Owns the names things are printed under.  Every counter, histogram kind
 * and category comes from the tables (include/tbl/, tg_stats.h), never from
 * a list kept here, so a counter added to the table shows up everywhere and
 * in the doc at once.  Amounts are formatted from micro-units with integer
 * arithmetic only; no float or double ever holds an amount or a latency.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "stat.h"
#include "tg_names.h"

/* Percentiles shown everywhere, in 1/100000ths, with their Prometheus quantile labels. */
static const struct {
	unsigned per100k;
	const char *label, *json;
} pcts[] = {
    {50000, "0.5", "p50_usec"},
    {99000, "0.99", "p99_usec"},
    {99900, "0.999", "p999_usec"},
};

/* What each histogram kind times (engine/cmd.c files each command under one). */
static const char *const kind_cmds[] = {
    "`CALL.AUTH`",
    "`CALL.UPDATE`",
    "`CALL.END`",
    "`CDR`",
    "`ACCT.CREDIT`",
    "`ACCT.SET`, `ACCT.GET`, `ACCT.REFILL.FAILED`, `RATE`",
    "everything else (`PING`, `INFO`, `AUTH`, `RATES.RELOAD`, ...)",
};
_Static_assert(sizeof(kind_cmds) / sizeof(kind_cmds[0]) == TG_HIST__COUNT, "one line per kind");

const char *
stat_money(tg_money_t v, char buf[TG_MONEY_STR_MAX])
{
	tg_money_format(v, buf);
	return buf;
}

const char *
stat_money128(__int128 v, char *buf)
{
	char tmp[48];
	unsigned __int128 u = v < 0 ? -(unsigned __int128)v : (unsigned __int128)v;
	unsigned __int128 whole = u / TG_MONEY_SCALE;
	unsigned frac = (unsigned)(u % TG_MONEY_SCALE);
	size_t n = sizeof(tmp);

	tmp[--n] = '\0';
	do {
		tmp[--n] = (char)('0' + (unsigned)(whole % 10));
		whole /= 10;
	} while (whole != 0);
	if (v < 0)
		tmp[--n] = '-';
	if (frac == 0) {
		strcpy(buf, tmp + n);
	} else {
		int len = snprintf(buf, 48, "%s.%06u", tmp + n, frac);
		while (len > 0 && buf[len - 1] == '0')
			buf[--len] = '\0';
	}
	return buf;
}

const char *
stat_state_name(unsigned state)
{
	return tg_acct_state_name(state);
}

const char *
stat_mode_name(unsigned mode)
{
	return tg_refill_mode_name(mode);
}

const char *
stat_rrec_name(unsigned state)
{
	static const char *const n[] = {"empty",  "writing",   "pending",
	                                "queued", "published", "dropped"};
	return state < 6 ? n[state] : "?";
}

uint64_t
stat_usec(uint64_t ns)
{
	return ns / 1000 + (ns % 1000 != 0);
}

uint64_t
stat_per_s(uint64_t d, uint64_t dt_ns)
{
	return (uint64_t)((unsigned __int128)d * 1000000000u / dt_ns);
}

unsigned
stat_sections(const char *out[], unsigned max)
{
	unsigned n = 0;
	for (unsigned c = 0; c < TG_COUNTER__COUNT; c++) {
		const char *s = tg_counter_section(c);
		unsigned k = 0;
		while (k < n && strcmp(out[k], s) != 0)
			k++;
		if (k == n && n < max)
			out[n++] = s;
	}
	return n;
}

/* Unix time t as 2024-05-01T12:00:00Z into buf (at least 24 bytes). */
static const char *
iso_time(int64_t t, char *buf)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (t <= 0 || gmtime_r(&tt, &tm) == NULL)
		return strcpy(buf, "-");
	strftime(buf, 24, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

/* Seconds since the engine started, 0 when it does not run. */
static uint64_t
uptime_of(const struct stat_snap *n)
{
	return n->running && n->started > 0 && n->now > n->started ? (uint64_t)(n->now - n->started)
	                                                           : 0;
}

/* "2d 03:04:05" */
static const char *
duration(uint64_t s, char *buf, size_t len)
{
	snprintf(buf, len, "%" PRIu64 "d %02u:%02u:%02u", s / 86400, (unsigned)(s / 3600 % 24),
	         (unsigned)(s / 60 % 60), (unsigned)(s % 60));
	return buf;
}

/* ns as seconds with up to nine decimals, no trailing zeros. */
static const char *
seconds(unsigned __int128 ns, char *buf, size_t len)
{
	uint64_t whole = (uint64_t)(ns / 1000000000u);
	unsigned frac = (unsigned)(ns % 1000000000u);
	if (frac == 0) {
		snprintf(buf, len, "%" PRIu64, whole);
		return buf;
	}
	int n = snprintf(buf, len, "%" PRIu64 ".%09u", whole, frac);
	while (n > 0 && (size_t)n < len && buf[n - 1] == '0')
		buf[--n] = '\0';
	return buf;
}

/* The JSON string of s, quotes included. */
static void
json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void
engine_line(FILE *f, const struct stat_snap *n)
{
	char up[48], t[24];

	if (n->running)
		fprintf(f, "engine:   pid %d running, up %s (started %s), %u workers\n",
		        (int)n->writer_pid, duration(uptime_of(n), up, sizeof(up)),
		        iso_time(n->started, t), n->workers);
	else if (n->writer_pid == 0)
		fprintf(f, "engine:   not running (stopped cleanly)\n");
	else
		fprintf(f, "engine:   not running (pid %d is gone: it did not stop cleanly)\n",
		        (int)n->writer_pid);
}

/* value / seconds as "12.34" (two decimals, rounded down), or "-" when seconds is 0. */
static const char *
avg_count(uint64_t v, uint64_t secs, char *buf, size_t len)
{
	if (secs == 0)
		return strcpy(buf, "-");
	uint64_t c = (uint64_t)((unsigned __int128)v * 100 / secs);
	snprintf(buf, len, "%" PRIu64 ".%02u", c / 100, (unsigned)(c % 100));
	return buf;
}

/* Records the ledger exporter has still to export (docs/LEDGER.md); 0 with none. */
static uint64_t
ledger_lag(const struct stat_src *s, const struct stat_snap *n)
{
	uint64_t at = n->counters_ok ? n->counter[TG_C_ledger_lsn] : 0;
	uint64_t lsn = __atomic_load_n(&s->t.hdr->journal_lsn, __ATOMIC_ACQUIRE);
	return at == 0 || lsn <= at ? 0 : lsn - at;
}

/*
 * Seconds back to the oldest id remembered on disk: the exactly-once horizon
 * in effect (docs/JOURNAL.md, "Id runs"); 0 with nothing on disk.
 */
static uint64_t
ids_horizon(const struct stat_snap *n)
{
	uint64_t oldest = n->counters_ok ? n->counter[TG_C_ids_horizon_oldest] : 0;
	uint64_t now = (uint64_t)time(NULL);
	return oldest == 0 || oldest >= now ? 0 : now - oldest;
}

void
stat_print_text(FILE *f, const struct stat_src *s, const struct stat_snap *n)
{
	char a[48], b[48], c[48], t[24];
	const char *secs[TG_COUNTER__COUNT];
	unsigned nsec = stat_sections(secs, TG_COUNTER__COUNT);
	uint64_t up = uptime_of(n);

	fprintf(f, "tollstat: %s, layout version %u, generation %" PRIu64 "\n", s->name,
	        s->t.hdr->version, n->generation);
	engine_line(f, n);
	fprintf(f,
	        "segment:  %" PRIu64 " accounts of %" PRIu64 " (%" PRIu64
	        " slots), %u plans, created %s\n",
	        n->count, n->capacity, n->slots, n->plan_count, iso_time(n->created, t));
	fprintf(f,
	        "now:      %" PRIu64
	        " calls holding %s reserved; balances total %s; refills: %" PRIu64
	        " in flight, %" PRIu64 " pending\n",
	        n->calls, stat_money128(n->reserved, a), stat_money128(n->balance, b), n->inflight,
	        n->pending);

	if (!n->counters_ok) {
		fprintf(f,
		        "\ncounters: the segment has %u, this build knows %u: not shown (use the "
		        "tollstat of the engine's build)\n",
		        n->seg_counters, (unsigned)TG_COUNTER__COUNT);
	} else {
		fprintf(f, "\n%-28s %20s %14s  %s\n", "counter", "total", "avg/s", "description");
		for (unsigned k = 0; k < nsec; k++) {
			fprintf(f, "# %s\n", secs[k]);
			for (unsigned i = 0; i < TG_COUNTER__COUNT; i++) {
				if (strcmp(tg_counter_section(i), secs[k]) != 0)
					continue;
				uint64_t v = n->counter[i];
				if (tg_counter_is_money(i)) {
					stat_money((tg_money_t)v, a);
					if (up)
						stat_money((tg_money_t)(v / up), b);
					else
						strcpy(b, "-");
				} else {
					snprintf(a, sizeof(a), "%" PRIu64, v);
					avg_count(v, up, b, sizeof(b));
				}
				fprintf(f, "%-28s %20s %14s  %s\n", tg_counter_name(i), a, b,
				        tg_counter_text(i));
			}
		}
	}

	fprintf(f, "\n%-8s %12s %10s %10s %10s %10s   (microseconds, since start)\n", "latency",
	        "calls", "calls/s", "p50", "p99", "p999");
	for (unsigned k = 0; k < TG_HIST__COUNT; k++) {
		const struct tg_hist *h = &n->hist[k];
		fprintf(f, "%-8s %12" PRIu64 " %10s", tg_hist_name(k), tg_hist_total(h),
		        avg_count(tg_hist_total(h), up, c, sizeof(c)));
		for (unsigned p = 0; p < TG_ARRAY_LEN(pcts); p++)
			fprintf(f, " %10" PRIu64,
			        stat_usec(tg_hist_percentile(h, pcts[p].per100k)));
		fputc('\n', f);
	}

	if (n->ntop > 0) {
		fprintf(f, "\ntop %u accounts by spend since created\n", n->ntop);
		fprintf(f, "%-22s %20s %20s\n", "account", "spent", "balance");
		for (unsigned i = 0; i < n->ntop; i++) {
			const struct tg_acct *acct = tg_table_slot(&s->t, n->top[i].slot);
			int64_t bal;
			uint64_t hold;
			tg_acct_read_money(acct, &bal, &hold);
			fprintf(f, "%-22" PRIu64 " %20s %20s\n", n->top[i].id,
			        stat_money(n->top[i].spent, a), stat_money(bal, b));
		}
	}
}

void
stat_print_json(FILE *f, const struct stat_src *s, const struct stat_snap *n)
{
	char a[48];

	fputs("{\n  \"shm\": ", f);
	json_str(f, s->name);
	fprintf(f, ",\n  \"time\": %" PRId64 ",\n", n->now);
	fprintf(f,
	        "  \"header\": {\"version\": %u, \"generation\": %" PRIu64
	        ", \"writer_pid\": %d, \"running\": %s, \"created\": %" PRId64
	        ", \"started\": %" PRId64 ", \"uptime_s\": %" PRIu64 ", \"workers\": %u, "
	        "\"capacity\": %" PRIu64 ", \"slots\": %" PRIu64 ", \"accounts\": %" PRIu64
	        ", \"plans\": %u, \"counters\": %u},\n",
	        s->t.hdr->version, n->generation, (int)n->writer_pid, n->running ? "true" : "false",
	        n->created, n->started, uptime_of(n), n->workers, n->capacity, n->slots, n->count,
	        n->plan_count, n->seg_counters);
	fprintf(f,
	        "  \"gauges\": {\"accounts_used\": %" PRIu64 ", \"calls\": %" PRIu64
	        ", \"reserved\": \"%s\", ",
	        n->used, n->calls, stat_money128(n->reserved, a));
	fprintf(f,
	        "\"balance_total\": \"%s\", \"refills_in_flight\": %" PRIu64
	        ", \"refills_pending\": %" PRIu64 ", \"ledger_lag\": %" PRIu64
	        ", \"ids_horizon_seconds\": %" PRIu64 "},\n",
	        stat_money128(n->balance, a), n->inflight, n->pending, ledger_lag(s, n),
	        ids_horizon(n));

	/* A segment with another counter table gets an empty object, not wrong names. */
	fputs("  \"counters\": {", f);
	for (unsigned c = 0; n->counters_ok && c < TG_COUNTER__COUNT; c++) {
		fprintf(f, "%s\n    \"%s\": ", c ? "," : "", tg_counter_name(c));
		if (tg_counter_is_money(c))
			fprintf(f, "\"%s\"", stat_money((tg_money_t)n->counter[c], a));
		else
			fprintf(f, "%" PRIu64, n->counter[c]);
	}
	fputs(n->counters_ok ? "\n  },\n" : "},\n", f);

	fputs("  \"latency\": {", f);
	for (unsigned k = 0; k < TG_HIST__COUNT; k++) {
		const struct tg_hist *h = &n->hist[k];
		fprintf(f, "%s\n    \"%s\": {\"calls\": %" PRIu64, k ? "," : "", tg_hist_name(k),
		        tg_hist_total(h));
		for (unsigned p = 0; p < TG_ARRAY_LEN(pcts); p++)
			fprintf(f, ", \"%s\": %" PRIu64, pcts[p].json,
			        stat_usec(tg_hist_percentile(h, pcts[p].per100k)));
		fputc('}', f);
	}
	fputs("\n  },\n", f);

	/* Account ids can exceed 2^53: strings, like the amounts. */
	fputs("  \"top\": [", f);
	for (unsigned i = 0; i < n->ntop; i++)
		fprintf(f, "%s\n    {\"account\": \"%" PRIu64 "\", \"spent\": \"%s\"}",
		        i ? "," : "", n->top[i].id, stat_money(n->top[i].spent, a));
	fputs(n->ntop ? "\n  ]\n}\n" : "]\n}\n", f);
}

/* ---- Prometheus ---- */

/* HELP text: backslash and line feed escaped, as the format asks. */
static void
prom_help(FILE *f, const char *metric, const char *text, const char *suffix)
{
	fprintf(f, "# HELP %s ", metric);
	for (; *text; text++) {
		if (*text == '\\')
			fputs("\\\\", f);
		else if (*text == '\n')
			fputs("\\n", f);
		else
			fputc(*text, f);
	}
	fprintf(f, "%s\n", suffix);
}

static void
prom_gauge(FILE *f, const char *name, const char *help, const char *value)
{
	char metric[96];
	snprintf(metric, sizeof(metric), "tollgate_%s", name);
	prom_help(f, metric, help, "");
	fprintf(f, "# TYPE %s gauge\n%s %s\n", metric, metric, value);
}

static void
prom_gauge_u(FILE *f, const char *name, const char *help, uint64_t v)
{
	char b[24];
	snprintf(b, sizeof(b), "%" PRIu64, v);
	prom_gauge(f, name, help, b);
}

static void
prom_gauge_i128(FILE *f, const char *name, const char *help, __int128 v)
{
	/* micro-units: the decimal of the amount without its point. */
	char b[48], out[48];
	unsigned __int128 u = v < 0 ? -(unsigned __int128)v : (unsigned __int128)v;
	size_t k = sizeof(b);
	b[--k] = '\0';
	do {
		b[--k] = (char)('0' + (unsigned)(u % 10));
		u /= 10;
	} while (u != 0);
	snprintf(out, sizeof(out), "%s%s", v < 0 ? "-" : "", b + k);
	prom_gauge(f, name, help, out);
}

/*
 * The sum of a histogram's samples, estimated from its buckets' midpoints
 * (within half a bucket: 3.2 %), for the summary's _sum.
 */
static unsigned __int128
hist_sum_ns(const struct tg_hist *h)
{
	unsigned __int128 sum = 0;
	for (unsigned b = 0; b < TG_HIST_BUCKETS; b++) {
		if (h->count[b] == 0)
			continue;
		uint64_t lo = tg_hist_value(b);
		uint64_t hi = b + 1 < TG_HIST_BUCKETS ? tg_hist_value(b + 1) : lo + 1;
		sum += (unsigned __int128)h->count[b] * (lo + (hi - lo) / 2);
	}
	return sum;
}

void
stat_print_prom(FILE *f, const struct stat_src *s, const struct stat_snap *n)
{
	char metric[96], v[48];
	(void)s;

	prom_gauge_u(f, "up", "1 while the engine that attached the segment runs", n->running);
	prom_gauge_u(f, "shm_generation", "times an engine attached the segment", n->generation);
	prom_gauge_u(f, "start_time_seconds", "when the engine last started, Unix seconds",
	             n->started > 0 ? (uint64_t)n->started : 0);
	prom_gauge_u(f, "workers", "worker threads of the engine", n->workers);
	prom_gauge_u(f, "accounts", "accounts in the table", n->count);
	prom_gauge_u(f, "capacity", "accounts the segment was sized for", n->capacity);
	prom_gauge_u(f, "plans", "rate-plan names registered in the segment", n->plan_count);
	prom_gauge_u(f, "calls_in_progress", "calls holding a reservation, all accounts", n->calls);
	prom_gauge_i128(f, "reserved_micro", "micro-units reserved by calls in progress",
	                n->reserved);
	prom_gauge_i128(f, "balance_micro", "sum of every account's balance, micro-units",
	                n->balance);
	prom_gauge_u(f, "refills_in_flight", "accounts with an auto-refill request in flight",
	             n->inflight);
	prom_gauge_u(f, "refills_pending", "refill requests fired and not yet on the stream",
	             n->pending);
	prom_gauge_u(f, "ledger_lag_records",
	             "journal records not yet in the ledger's database (0: no exporter)",
	             ledger_lag(s, n));
	prom_gauge_u(f, "ids_horizon_seconds",
	             "seconds back to the oldest id remembered on disk (0: none on disk)",
	             ids_horizon(n));

	if (!n->counters_ok)
		fprintf(f,
		        "# tollstat: the segment has %u counters, this build knows %u: counters "
		        "not exported\n",
		        n->seg_counters, (unsigned)TG_COUNTER__COUNT);
	for (unsigned c = 0; n->counters_ok && c < TG_COUNTER__COUNT; c++) {
		bool money = tg_counter_is_money(c);
		snprintf(metric, sizeof(metric), "tollgate_%s%s_total", tg_counter_name(c),
		         money ? "_micro" : "");
		prom_help(f, metric, tg_counter_text(c), money ? " (micro-units)" : "");
		fprintf(f, "# TYPE %s counter\n%s %" PRIu64 "\n", metric, metric, n->counter[c]);
	}

	fputs("# HELP tollgate_latency_seconds time each command took to execute, by kind, since "
	      "the engine started (_sum estimated from the buckets)\n"
	      "# TYPE tollgate_latency_seconds summary\n",
	      f);
	for (unsigned k = 0; k < TG_HIST__COUNT; k++) {
		const struct tg_hist *h = &n->hist[k];
		uint64_t total = tg_hist_total(h);
		for (unsigned p = 0; p < TG_ARRAY_LEN(pcts); p++) {
			if (total == 0)
				strcpy(v, "NaN");
			else
				seconds(tg_hist_percentile(h, pcts[p].per100k), v, sizeof(v));
			fprintf(f, "tollgate_latency_seconds{kind=\"%s\",quantile=\"%s\"} %s\n",
			        tg_hist_name(k), pcts[p].label, v);
		}
		fprintf(f, "tollgate_latency_seconds_sum{kind=\"%s\"} %s\n", tg_hist_name(k),
		        seconds(hist_sum_ns(h), v, sizeof(v)));
		fprintf(f, "tollgate_latency_seconds_count{kind=\"%s\"} %" PRIu64 "\n",
		        tg_hist_name(k), total);
	}
}

/* ---- docs/STATS.md ---- */

static void para(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One paragraph of the doc, wrapped at 96 columns like the hand-written docs, then a blank line. */
static void
para(FILE *f, const char *fmt, ...)
{
	char text[2048];
	va_list ap;
	size_t col = 0;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	for (char *w = strtok(text, " "); w != NULL; w = strtok(NULL, " ")) {
		size_t len = strlen(w);
		if (col > 0 && col + 1 + len > 96) {
			fputc('\n', f);
			col = 0;
		} else if (col > 0) {
			fputc(' ', f);
			col++;
		}
		fputs(w, f);
		col += len;
	}
	fputs("\n\n", f);
}

void
stat_print_doc(FILE *f)
{
	const char *secs[TG_COUNTER__COUNT];
	unsigned nsec = stat_sections(secs, TG_COUNTER__COUNT);
	unsigned sub = 1u << TG_HIST_SUB_BITS;
	unsigned last = TG_HIST_BUCKETS - 1;
	uint64_t top = tg_hist_value(last);
	unsigned width100 = 10000 / sub; /* widest bucket, in 1/100 % of its lower bound */

	fputs("<!-- Generated by `tollstat --doc` from include/tbl/tg_counters.h,\n"
	      "     include/tbl/tg_categories.h and include/tg_stats-t.h. Do not edit:\n"
	      "     tests/check-stats-doc.sh fails when this file and the tables disagree. -->\n"
	      "# Statistics\n\n",
	      f);
	para(f,
	     "The engine keeps its counters and latency histograms in the shared-memory segment "
	     "(docs/SHM.md): %u blocks, one per worker thread (up to %u), one for the control "
	     "thread and one for the refill publisher, each written by its own thread alone. "
	     "`INFO` (docs/PROTOCOL.md) and `tollstat` (docs/TOOLS.md) add the blocks up. A new "
	     "run of the engine starts every block at zero; readers notice by the header's "
	     "`generation`.",
	     (unsigned)TG_STATS_BLOCKS, (unsigned)TG_WORKERS_MAX);

	fputs("## Counters\n\n", f);
	para(f,
	     "Counters only grow within one run of the engine. Money counters are micro-units "
	     "(1e-6 of the currency): `INFO` and `tollstat` print them as decimals, and "
	     "Prometheus gets them as integers of micro-units under a `_micro` name (divide by "
	     "1e6 for the amount; Prometheus' float64 holds them exactly up to 2^53 micro-units, "
	     "about 9 billion of the currency).");
	para(f, "A money counter stops at 9223372036854.775807 (2^63 - 1 micro-units, the largest "
	        "amount) rather than wrap negative: each thread's block saturates there, and so "
	        "does the sum of the blocks. That is nine trillion of the currency in one run of "
	        "the engine, 292 years of a million one-unit calls a second, so a wider sum would "
	        "only make exact a figure no carrier reaches; a counter that shows it has reached "
	        "the top and says nothing more. Counts stop at 2^64 - 1 the same way.");
	for (unsigned k = 0; k < nsec; k++) {
		fprintf(f, "### INFO section `%s`\n\n", secs[k]);
		fputs("| counter | unit | Prometheus | description |\n|---|---|---|---|\n", f);
		for (unsigned c = 0; c < TG_COUNTER__COUNT; c++) {
			if (strcmp(tg_counter_section(c), secs[k]) != 0)
				continue;
			bool money = tg_counter_is_money(c);
			fprintf(f, "| `%s` | %s | `tollgate_%s%s_total` | %s |\n",
			        tg_counter_name(c), money ? "micro-units" : "count",
			        tg_counter_name(c), money ? "_micro" : "", tg_counter_text(c));
		}
		fputc('\n', f);
	}

	fputs("## Gauges\n\n", f);
	para(f, "Not kept by the engine as counters: `tollstat` reads them from the header and "
	        "from a scan of every slot (docs/TOOLS.md gives the cost of the scan).");
	fputs(
	    "| gauge | Prometheus | meaning |\n|---|---|---|\n"
	    "| up | `tollgate_up` | 1 while the header's `writer_pid` names a running process |\n"
	    "| generation | `tollgate_shm_generation` | times an engine attached the segment |\n"
	    "| started | `tollgate_start_time_seconds` | when the engine last started, Unix "
	    "seconds |\n"
	    "| workers | `tollgate_workers` | worker threads of the engine |\n"
	    "| accounts | `tollgate_accounts` | accounts in use (the header's `count`) |\n"
	    "| capacity | `tollgate_capacity` | accounts the segment was sized for |\n"
	    "| plans | `tollgate_plans` | rate-plan names registered in the segment |\n"
	    "| calls | `tollgate_calls_in_progress` | calls holding a reservation, all accounts |\n"
	    "| reserved | `tollgate_reserved_micro` | micro-units reserved by calls in progress |\n"
	    "| balance total | `tollgate_balance_micro` | sum of every account's balance, "
	    "micro-units |\n"
	    "| refills in flight | `tollgate_refills_in_flight` | accounts whose refill flag is "
	    "set |\n"
	    "| refills pending | `tollgate_refills_pending` | refill records being written, "
	    "pending or in the publisher's pipeline: fired and not yet on the stream (`INFO` "
	    "`refills_pending`) |\n"
	    "| ledger lag | `tollgate_ledger_lag_records` | journal records not yet exported to "
	    "the "
	    "ledger: the header's `journal_lsn` less `ledger_lsn` (docs/LEDGER.md); 0 with no "
	    "exporter |\n"
	    "| ids horizon | `tollgate_ids_horizon_seconds` | the exactly-once horizon in effect: "
	    "seconds back to the oldest id remembered on disk (`ids_horizon_oldest`; "
	    "docs/JOURNAL.md, \"Id runs\"); 0 with none on disk |\n\n",
	    f);

	fputs("## Latency histograms\n\n", f);
	para(f, "Each worker times every command it executes and counts it in the histogram of "
	        "the command's kind:");
	fputs("| kind | commands |\n|---|---|\n", f);
	for (unsigned k = 0; k < TG_HIST__COUNT; k++)
		fprintf(f, "| `%s` | %s |\n", tg_hist_name(k), kind_cmds[k]);
	fputc('\n', f);
	para(f,
	     "Buckets count nanoseconds, log-linear (HdrHistogram-style), %u of them per "
	     "histogram. Values below %u ns have a bucket each; above, every power of two is cut "
	     "into %u equal sub-buckets, so a bucket is at most %u.%02u %% wide relative to its "
	     "lower bound. The last bucket starts at %" PRIu64 " ns (about %" PRIu64
	     " s) and also counts anything longer.",
	     (unsigned)TG_HIST_BUCKETS, sub, sub, width100 / 100, width100 % 100, top,
	     top / 1000000000u);
	para(f,
	     "A percentile is the upper bound of the bucket that holds its rank, so it overstates "
	     "by at most %u.%02u %%; `INFO` and `tollstat` show p50, p99 and p999 rounded up to "
	     "whole microseconds. Prometheus gets a summary per kind, since the engine started: "
	     "`tollgate_latency_seconds{kind=\"auth\",quantile=\"0.99\"}`, with `_count` and a "
	     "`_sum` estimated from the bucket midpoints (the histograms keep no exact sum); a "
	     "kind with no samples has `NaN` quantiles.",
	     width100 / 100, width100 % 100);
}
