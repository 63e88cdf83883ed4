/*
 * tollstat.c - the operators' live view of a running tollgated, from its
 * shared-memory segment alone (docs/TOOLS.md).
 *
 * Owns the command line, the choice of output (live view, -1, --json,
 * --prometheus, --listen, --doc, account, verify [--data-dir]) and the live loop: refresh
 * every interval, notice a restarted engine or a segment made anew, and
 * start the per-second figures over when so.  It must never connect to the
 * engine, never write to the segment (it maps it read-only), and never
 * holds an amount in a float or double.  The other stat_*.c files do the
 * reading (stat_src.c), the formats (stat_fmt.c, stat_live.c), the accounts
 * (stat_acct.c) and the HTTP endpoint (stat_http.c).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "stat.h"
#include "tg_clock.h"

#define DEFAULT_SHM "/tollgate"
#define DEFAULT_TOP 10
/* Longest refresh interval, seconds. */
#define INTERVAL_MAX 3600
/* Refreshes a notice (an engine restart) stays on the screen. */
#define NOTICE_KEEP 5
/* Length of a segment name, '/' included (struct tg_table's name holds 63). */
#define SHM_NAME_MAX 63

enum mode { M_LIVE, M_ONCE, M_JSON, M_PROM, M_LISTEN, M_DOC, M_ACCOUNT, M_VERIFY };

struct opts {
	const char *shm;
	enum mode mode;
	unsigned top;
	unsigned interval_ms;
	unsigned scan_ms; /* live view: walk every slot at most this often */
	const char *listen;
	uint64_t account;
	const char *data_dir; /* verify: also the conservation check against this journal */
};

static volatile sig_atomic_t stopping;

static void
on_signal(int sig)
{
	if (sig != SIGWINCH)
		stopping = 1;
}

static void
usage(FILE *f)
{
	fputs("usage: tollstat [--shm NAME] [-1 | --json | --prometheus | --listen HOST:PORT]\n"
	      "                [--top N] [-i SECONDS] [--scan SECONDS]\n"
	      "       tollstat [--shm NAME] account ID\n"
	      "       tollstat [--shm NAME] verify [--data-dir DIR]\n"
	      "       tollstat --doc\n"
	      "\n"
	      "Reads the engine's shared-memory segment only (read-only); never connects to it.\n"
	      "  (no mode)           live view, refreshed every interval (Ctrl-C quits)\n"
	      "  -1                  one snapshot as text, with averages since the engine started\n"
	      "  --json              one snapshot as JSON (amounts as strings)\n"
	      "  --prometheus        one snapshot in the Prometheus text format\n"
	      "  --listen HOST:PORT  serve that text at http://HOST:PORT/metrics (HTTP/1.0)\n"
	      "  --doc               print docs/STATS.md\n"
	      "  account ID          one account in full\n"
	      "  verify              check the table's invariants over every slot\n"
	      "  --data-dir DIR      verify: also rebuild every balance from DIR's snapshot and\n"
	      "                      journal and compare it with the table (read-only; a live\n"
	      "                      engine is fine)\n"
	      "  --shm NAME          the segment (default " DEFAULT_SHM ")\n"
	      "  --top N             accounts in the top list, 0..100 (default 10; 0: no usage "
	      "scan)\n"
	      "  -i SECONDS          refresh interval of the live view, 0.1..3600 (default 1)\n"
	      "  --scan SECONDS      live view: walk every slot (totals, top list) at most this\n"
	      "                      often, 0.1..3600 (default 5); counters refresh every -i\n"
	      "exit: 0 ok; 1 verify found violations or balances that differ, or no such\n"
	      "account; 2 no segment or one of another layout; 3 usage; 4 cannot listen or\n"
	      "write; 5 verify --data-dir: the data-dir or its journal cannot be read\n",
	      f);
}

static bool
parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (s == NULL || *s == '\0')
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		unsigned d = (unsigned)(*s - '0');
		if (v > (max - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* Returns -1 to go on, else the exit code. */
/* "2", "0.1", "0.25": seconds with at most 3 decimals, 0.1 to INTERVAL_MAX, as ms. */
static bool
parse_interval(const char *s, unsigned *ms)
{
	unsigned long whole = 0, frac = 0, scale = 1000;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return false;
	while (*p >= '0' && *p <= '9' && whole <= INTERVAL_MAX)
		whole = whole * 10 + (unsigned long)(*p++ - '0');
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9' && scale > 1) {
			scale /= 10;
			frac += (unsigned long)(*p++ - '0') * scale;
		}
	}
	if (*p != '\0' || whole > INTERVAL_MAX)
		return false;
	unsigned long total = whole * 1000 + frac;
	if (total < 100 || total > (unsigned long)INTERVAL_MAX * 1000)
		return false;
	*ms = (unsigned)total;
	return true;
}

static int
parse(int argc, char **argv, struct opts *o)
{
	uint64_t v;
	int i;

	*o = (struct opts){.shm = DEFAULT_SHM,
	                   .mode = M_LIVE,
	                   .top = DEFAULT_TOP,
	                   .interval_ms = 1000,
	                   .scan_ms = 5000};
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return STAT_EXIT_OK;
		} else if (strcmp(a, "--shm") == 0 && val) {
			o->shm = val;
			i++;
		} else if (strncmp(a, "--shm=", 6) == 0) {
			o->shm = a + 6;
		} else if (strcmp(a, "-1") == 0) {
			o->mode = M_ONCE;
		} else if (strcmp(a, "--json") == 0) {
			o->mode = M_JSON;
		} else if (strcmp(a, "--prometheus") == 0) {
			o->mode = M_PROM;
		} else if (strcmp(a, "--doc") == 0) {
			o->mode = M_DOC;
		} else if (strcmp(a, "--listen") == 0 && val) {
			o->mode = M_LISTEN;
			o->listen = val;
			i++;
		} else if (strcmp(a, "--top") == 0 && val) {
			if (!parse_uint(val, STAT_TOP_MAX, &v)) {
				fprintf(stderr, "tollstat: --top %s: expected 0..%d\n", val,
				        STAT_TOP_MAX);
				return STAT_EXIT_USAGE;
			}
			o->top = (unsigned)v;
			i++;
		} else if (strcmp(a, "--scan") == 0 && val) {
			if (!parse_interval(val, &o->scan_ms)) {
				fprintf(stderr, "tollstat: --scan %s: expected 0.1..%d seconds\n",
				        val, INTERVAL_MAX);
				return STAT_EXIT_USAGE;
			}
			i++;
		} else if ((strcmp(a, "-i") == 0 || strcmp(a, "--interval") == 0) && val) {
			if (!parse_interval(val, &o->interval_ms)) {
				fprintf(stderr,
				        "tollstat: -i %s: expected 0.1..%d seconds (at most 3 "
				        "decimals)\n",
				        val, INTERVAL_MAX);
				return STAT_EXIT_USAGE;
			}
			i++;
		} else if (strcmp(a, "account") == 0 && val && i + 2 == argc) {
			/* Account ids as the protocol reads them: decimal, leading zeros allowed.
			 */
			if (!parse_uint(val, UINT64_MAX - 1, &o->account)) {
				fprintf(stderr, "tollstat: account %s: expected an id, 0..%llu\n",
				        val, (unsigned long long)(UINT64_MAX - 1));
				return STAT_EXIT_USAGE;
			}
			o->mode = M_ACCOUNT;
			i++;
		} else if (strcmp(a, "verify") == 0 &&
		           (i + 1 == argc ||
		            (i + 3 == argc && strcmp(argv[i + 1], "--data-dir") == 0) ||
		            (i + 2 == argc && strncmp(argv[i + 1], "--data-dir=", 11) == 0))) {
			o->mode = M_VERIFY;
		} else if (strcmp(a, "--data-dir") == 0 && val) {
			o->data_dir = val;
			i++;
		} else if (strncmp(a, "--data-dir=", 11) == 0) {
			o->data_dir = a + 11;
		} else {
			fprintf(stderr, "tollstat: unexpected argument '%s'\n", a);
			usage(stderr);
			return STAT_EXIT_USAGE;
		}
	}
	if (o->shm[0] != '/' || strchr(o->shm + 1, '/') != NULL || o->shm[1] == '\0' ||
	    strlen(o->shm) > SHM_NAME_MAX) {
		fprintf(stderr, "tollstat: --shm %s: expected '/' then 1..%d characters, no '/'\n",
		        o->shm, SHM_NAME_MAX - 1);
		return STAT_EXIT_USAGE;
	}
	if (o->data_dir != NULL && o->mode != M_VERIFY) {
		fprintf(stderr, "tollstat: --data-dir goes with verify\n");
		usage(stderr);
		return STAT_EXIT_USAGE;
	}
	if (o->data_dir != NULL && o->data_dir[0] == '\0') {
		fprintf(stderr, "tollstat: --data-dir: expected a directory\n");
		return STAT_EXIT_USAGE;
	}
	return -1;
}

static void
terminal_size(unsigned *rows, unsigned *cols)
{
	struct winsize ws;

	*rows = 0; /* not a terminal: no limit */
	*cols = 0;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0) {
		*rows = ws.ws_row;
		*cols = ws.ws_col;
	}
}

/* Sleep ms milliseconds or until a signal comes. */
static void
nap(unsigned ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static int
live(struct stat_src *src, const struct opts *o)
{
	struct stat_snap *snaps = calloc(2, sizeof(*snaps));
	struct stat_spend spend = {0};
	char notice[STAT_ERR_MAX + 128] = "";
	unsigned notice_left = 0, rows, cols;
	bool have_prev = false, tty = isatty(STDOUT_FILENO);
	uint64_t last_scan_ms = 0;
	int cur = 0;

	if (snaps == NULL || (o->top && stat_spend_reset(&spend, src) != 0)) {
		fprintf(stderr, "tollstat: out of memory for a table of %llu slots\n",
		        (unsigned long long)src->t.slots);
		free(snaps);
		return STAT_EXIT_IO;
	}
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: wake the nap */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGWINCH, &sa, NULL);
	if (tty)
		fputs("\033[?1049h\033[H\033[2J", stdout); /* the alternate screen, like top */

	while (!stopping) {
		uint64_t was = src->generation;
		enum stat_change ch = stat_src_refresh(src);
		if (ch == STAT_NEW_ENGINE || ch == STAT_NEW_SEGMENT) {
			snprintf(notice, sizeof(notice),
			         "%s: generation %llu -> %llu, engine pid %d; per-second figures "
			         "start over",
			         ch == STAT_NEW_ENGINE ? "engine restarted" : "segment made anew",
			         (unsigned long long)was, (unsigned long long)src->generation,
			         (int)src->pid);
			notice_left = NOTICE_KEEP;
			have_prev = false;
			if (o->top && stat_spend_reset(&spend, src) != 0) {
				fprintf(stderr, "tollstat: out of memory\n");
				break;
			}
		} else if (ch == STAT_LOST) {
			snprintf(notice, sizeof(notice), "%s; showing the segment last mapped",
			         src->err);
			notice_left = 1;
		}
		/*
		 * Counters and histograms every refresh; the walk over every slot
		 * (totals, pending, top list) only every scan interval: on a big
		 * table it is the one costly part, and the engine shares the cores.
		 */
		uint64_t now = tg_mono_ms();
		bool scan = !have_prev || now - last_scan_ms >= o->scan_ms;
		stat_snap_take(src, &snaps[cur], o->top ? &spend : NULL, o->top, scan);
		if (scan) {
			last_scan_ms = now;
		} else {
			struct stat_snap *p = &snaps[cur ^ 1], *n = &snaps[cur];
			n->used = p->used;
			n->calls = p->calls;
			n->inflight = p->inflight;
			n->pending = p->pending;
			n->balance = p->balance;
			n->reserved = p->reserved;
			n->scan_ns = p->scan_ns;
			n->ntop = p->ntop;
			memcpy(n->top, p->top, sizeof(n->top));
			n->top_interval = p->top_interval;
		}
		terminal_size(&rows, &cols);
		stat_print_live(stdout, src, have_prev ? &snaps[cur ^ 1] : NULL, &snaps[cur],
		                notice_left ? notice : NULL, rows, cols);
		if (notice_left)
			notice_left--;
		have_prev = true;
		cur ^= 1;
		if (!stopping)
			nap(o->interval_ms);
	}
	if (tty)
		fputs("\033[?1049l", stdout);
	fflush(stdout);
	stat_spend_free(&spend);
	free(snaps);
	return STAT_EXIT_OK;
}

int
main(int argc, char **argv)
{
	struct opts o;
	struct stat_src src;
	int rc = parse(argc, argv, &o);

	if (rc >= 0)
		return rc;
	if (o.mode == M_DOC) {
		stat_print_doc(stdout);
		return fflush(stdout) == 0 && !ferror(stdout) ? STAT_EXIT_OK : STAT_EXIT_IO;
	}
	if (o.mode == M_LISTEN)
		return stat_listen(o.shm, o.listen);

	if (stat_src_open(&src, o.shm) != 0) {
		fprintf(stderr, "tollstat: %s\n", src.err);
		return STAT_EXIT_ATTACH;
	}
	static struct stat_snap snap;
	switch (o.mode) {
	case M_LIVE:
		rc = live(&src, &o);
		break;
	case M_ONCE:
	case M_JSON:
	case M_PROM:
		stat_snap_take(&src, &snap, NULL, o.mode == M_PROM ? 0 : o.top, true);
		if (o.mode == M_ONCE)
			stat_print_text(stdout, &src, &snap);
		else if (o.mode == M_JSON)
			stat_print_json(stdout, &src, &snap);
		else
			stat_print_prom(stdout, &src, &snap);
		rc = STAT_EXIT_OK;
		break;
	case M_ACCOUNT:
		rc = stat_account(stdout, &src, o.account);
		break;
	case M_VERIFY:
		rc = stat_verify(stdout, &src, o.data_dir != NULL);
		if (o.data_dir != NULL) {
			/* The invariants' findings first: a damaged journal must not hide them. */
			fflush(stdout);
			int jrc = stat_verify_journal(stdout, &src, o.data_dir);
			/* Could not check (5, 4) outranks found (1), which outranks ok. */
			if (rc == STAT_EXIT_OK || jrc == STAT_EXIT_JOURNAL || jrc == STAT_EXIT_IO)
				rc = jrc;
		}
		break;
	case M_DOC:
	case M_LISTEN:
		break;
	}
	stat_src_close(&src);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "tollstat: cannot write the output: %s\n", strerror(errno));
		return STAT_EXIT_IO;
	}
	return rc;
}
