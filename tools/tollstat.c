/*
 * tollstat.c - the operators' live view of a running tollgated, from its
 * shared-memory segment alone (docs/TOOLS.md).
 *
 * Owns the command line, the choice of output (live view, -1, --json,
 * --prometheus, --listen, --doc, account, verify) and the live loop: refresh
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
	unsigned interval;
	const char *listen;
	uint64_t account;
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
	      "                [--top N] [-i SECONDS]\n"
	      "       tollstat [--shm NAME] account ID\n"
	      "       tollstat [--shm NAME] verify\n"
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
	      "  --shm NAME          the segment (default " DEFAULT_SHM ")\n"
	      "  --top N             accounts in the top list, 0..100 (default 10; 0: no usage "
	      "scan)\n"
	      "  -i SECONDS          refresh interval of the live view, 1..3600 (default 1)\n"
	      "exit: 0 ok; 1 verify found violations, or no such account; 2 no segment or one\n"
	      "of another layout; 3 usage; 4 cannot listen or write\n",
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
static int
parse(int argc, char **argv, struct opts *o)
{
	uint64_t v;
	int i;

	*o = (struct opts){.shm = DEFAULT_SHM, .mode = M_LIVE, .top = DEFAULT_TOP, .interval = 1};
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
		} else if ((strcmp(a, "-i") == 0 || strcmp(a, "--interval") == 0) && val) {
			if (!parse_uint(val, INTERVAL_MAX, &v) || v == 0) {
				fprintf(stderr, "tollstat: -i %s: expected 1..%d seconds\n", val,
				        INTERVAL_MAX);
				return STAT_EXIT_USAGE;
			}
			o->interval = (unsigned)v;
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
		} else if (strcmp(a, "verify") == 0 && i + 1 == argc) {
			o->mode = M_VERIFY;
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

/* Sleep s seconds or until a signal comes. */
static void
nap(unsigned s)
{
	struct timespec ts = {(time_t)s, 0};
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
		stat_snap_take(src, &snaps[cur], o->top ? &spend : NULL, o->top);
		terminal_size(&rows, &cols);
		stat_print_live(stdout, src, have_prev ? &snaps[cur ^ 1] : NULL, &snaps[cur],
		                notice_left ? notice : NULL, rows, cols);
		if (notice_left)
			notice_left--;
		have_prev = true;
		cur ^= 1;
		if (!stopping)
			nap(o->interval);
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
		stat_snap_take(&src, &snap, NULL, o.mode == M_PROM ? 0 : o.top);
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
		rc = stat_verify(stdout, &src);
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
