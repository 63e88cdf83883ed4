/*
 * tollctl.c - the operator's client of tollgated: one command, one exit code.
 *
 * A thin layer over the wire protocol (docs/PROTOCOL.md) through hiredis:
 * it owns argument handling, the loading of an accounts file over the wire
 * (checked whole first, by ctl_accounts.c), the customer profile hash in the
 * refill Redis (docs/REFILL.md), and turning replies into text and exit codes
 * (docs/TOOLS.md).  Two commands work on files instead, with no daemon:
 * journal-check reads a data directory's journal (read-only) and says what
 * the reader finds, and journal-cut is the operator's way past damage
 * (docs/JOURNAL.md): it refuses while a tollgated holds the directory, cuts
 * only at a record's start, and deletes nothing (what it discards is renamed).
 * It never decides anything about money: amounts and other values it passes
 * through are checked by the daemon, which is the authority on the protocol;
 * tollctl checks locally only what it must interpret itself (an accounts
 * file, a profile).  It never sends a command of an accounts file that has a
 * bad row, and never retries a command (a retried ACCT.SET could overwrite a
 * balance that moved meanwhile).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "ctl_accounts.h"
#include "ctl_billing.h"
#include "tg_datadir.h"
#include "ctl_ledger.h"
#include "tg_journal.h"
#include "tg_money.h"
#include "tg_refill_wire.h"
#include "tg_replay.h"

/* Exit codes: the contract with scripts, also in the usage text and docs/TOOLS.md. */
enum {
	CTL_OK = 0,      /* done */
	CTL_SERVER = 1,  /* the server answered with an error (printed) */
	CTL_USAGE = 2,   /* bad arguments (usage printed) */
	CTL_CONNECT = 3, /* cannot connect, or the connection was lost */
	CTL_INPUT = 4,   /* load-accounts: the file is invalid; nothing was sent */
	CTL_BUSY = 5,    /* journal-cut: a tollgated holds the data directory; nothing changed */
};
/* journal-check: a torn tail (the next start cuts it); damage is CTL_INPUT. */
#define CTL_TORN CTL_SERVER

#define DEFAULT_HOST       "127.0.0.1"
#define DEFAULT_PORT       6390
#define DEFAULT_REDIS_PORT 6379
/* Commands per pipelined batch of load-accounts: a batch's requests (about
 * 40 KiB of ACCT.SET) fit in the socket buffers, so the daemon never waits on
 * us to read while we are still writing. */
#define LOAD_BATCH 256
/* Arguments after the command name: the protocol takes 32 with the name. */
#define ARGS_MAX 32
#define HOST_MAX 256
/* Seconds to connect, and to wait for any one reply (a reload reads files). */
#define CONNECT_TIMEOUT_S 5
#define REPLY_TIMEOUT_S   120
/* The profile hash of an account in the refill Redis (docs/REFILL.md). */
#define PROFILE_KEY TG_PROFILE_PREFIX "%" PRIu64

struct endpoint {
	char host[HOST_MAX];
	int port;
};

struct ctl {
	struct endpoint daemon; /* tollgated */
	struct endpoint redis;  /* the refill Redis, for the profile commands */
	const char *password;   /* NULL: no AUTH */
	const char *user;       /* NULL: AUTH <password>; else AUTH <user> <password> */
	redisContext *c;        /* the one connection in use, or NULL */
	const struct endpoint *at;
};

/* A command's arguments once its own --options are taken out. */
struct args {
	const char *pos[ARGS_MAX];
	int npos;
	bool json, overwrite, records;
	const char *email, *method, *token, *name;
	const char *data_dir, *at;
};

/* Which --options a command takes. */
enum {
	OPT_JSON = 1u << 0,
	OPT_LOAD = 1u << 1,     /* --overwrite, --skip-existing */
	OPT_PROFILE = 1u << 2,  /* --email, --method, --token, --name */
	OPT_DATA_DIR = 1u << 3, /* --data-dir */
	OPT_AT = 1u << 4,       /* --at */
	OPT_RECORDS = 1u << 5,  /* --records */
};

struct command {
	const char *name;
	int min_pos, max_pos;
	unsigned opts; /* OPT_*; 0: every argument is positional, even "--x" or "-5" */
	int (*fn)(struct ctl *x, const struct args *a);
};

static const char usage_text[] =
    "usage: tollctl [-h HOST] [-p PORT] [-a PASSWORD] [--redis HOST:PORT] COMMAND [ARGS]\n"
    "\n"
    "The admin client of tollgated (docs/TOOLS.md; the commands: docs/PROTOCOL.md).\n"
    "\n"
    "  -h HOST            tollgated's address (env TOLLGATE_HOST; default 127.0.0.1)\n"
    "  -p PORT            its port (env TOLLGATE_PORT; default 6390)\n"
    "  -a PASSWORD        AUTH with it first (env TOLLGATE_PASSWORD)\n"
    "  --user NAME        AUTH as that user of tollgated's users file (env TOLLGATE_USER)\n"
    "  --redis HOST:PORT  the refill Redis of the profile commands (default 127.0.0.1:6379)\n"
    "  --help             this text\n"
    "\n"
    "commands:\n"
    "  load-accounts FILE [--skip-existing | --overwrite]\n"
    "        create the accounts of an accounts CSV file (docs/ACCOUNTS.md); the whole\n"
    "        file is checked first and nothing is sent if a row is bad.  Accounts already\n"
    "        present are left as they are (--skip-existing, the default, as at start-up)\n"
    "        or set from the file (--overwrite)\n"
    "  set ACCT [BALANCE a] [PLAN p] [STATE active|suspended|closed] [THRESHOLD a]\n"
    "      [REFILL ADD a | REFILL TOPUP a | REFILL OFF] [PAYMENT on|off]\n"
    "        ACCT.SET: create the account if new, change what is named\n"
    "  show ACCT [--json]           the account (ACCT.GET), one \"field  value\" a line\n"
    "  credit ACCT AMOUNT TXID      ACCT.CREDIT; prints the new balance\n"
    "  rate PLAN DEST SECONDS [--json]\n"
    "        a quote (RATE), nothing debited\n"
    "  reload                       RATES.RELOAD; on failure each file:line: reason a line\n"
    "  info [SECTION]               INFO\n"
    "  profile ACCT --email E --method card|paypal --token T [--name N]\n"
    "        write the customer profile hash tollgate:customer:ACCT to the refill Redis\n"
    "  profile-show ACCT [--json]   read it back\n"
    "\n"
    "commands on a data directory (no daemon; docs/JOURNAL.md):\n"
    "  journal-check --data-dir DIR [--records]\n"
    "        read the whole journal, read-only, and print what the reader finds: its\n"
    "        segments, records, first and last LSN and the verdict; --records also lists\n"
    "        every record (LSN, FILE:OFFSET, type, account)\n"
    "  journal-cut --data-dir DIR --at FILE:OFFSET\n"
    "        discard the journal from the record at OFFSET of segment FILE on (the place\n"
    "        tollgated names when it refuses a damaged journal): that segment is cut there,\n"
    "        later segments and snapshots past the cut are renamed NAME.cut-SECONDS.\n"
    "        Refused while a tollgated runs on DIR\n"
    "  statement ACCT --month YYYY-MM [--json]\n"
    "        the ledger's statement (docs/LEDGER.md): opening balance, usage by category,\n"
    "        every call, credits and refills, closing balance\n"
    "  calls ACCT [--from T] [--to T] [--csv | --json]\n"
    "        the ledger's calls of ACCT between two times (YYYY-MM-DD[THH:MM:SS] UTC)\n"
    "  reconcile    the ledger's balance of every account against tollgated's; exit 1\n"
    "        when one differs.  The three read --db PATH|URI or --data-dir DIR\n"
    "        (DIR/ledger.sqlite)\n"
    "\n"
    "billing (docs/BILLING.md; --db or --data-dir, and tollbill's options):\n"
    "  pay ACCT AMOUNT [--ref R] [--method manual|card|paypal]\n"
    "        record a payment: the oldest invoices are settled first\n"
    "  cancel ACCT [--refund]       close the account; --refund within 30 days of sign-up\n"
    "        refunds subscriptions and fees paid (prepaid: the unused balance bought)\n"
    "  invoice NUMBER               print an invoice\n"
    "  invoices ACCT                list an account's invoices and their status\n"
    "\n"
    "exit status:\n"
    "  0  ok; journal-check: the journal ends cleanly\n"
    "  1  the server answered with an error (printed), or profile-show found no profile;\n"
    "     journal-check: a torn tail (the next start cuts it)\n"
    "  2  usage error: bad arguments\n"
    "  3  cannot connect, or the connection was lost\n"
    "  4  load-accounts: the file is invalid or unreadable (nothing was sent);\n"
    "     journal-check: the journal is damaged or unreadable; journal-cut: refused\n"
    "     (the offset is not a record's start, or lies past the damage) or failed\n"
    "  5  journal-cut: a tollgated is running on the data directory (nothing changed)\n";

/* ---- messages ---- */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One "tollctl: ..." line on stderr. */
static void
say(const char *fmt, ...)
{
	va_list ap;
	fputs("tollctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Report a bad argument (fmt may be NULL), print the usage; CTL_USAGE. */
static int
usage_error(const char *fmt, ...)
{
	if (fmt != NULL) {
		va_list ap;
		fputs("tollctl: ", stderr);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputs("\n\n", stderr);
	}
	fputs(usage_text, stderr);
	return CTL_USAGE;
}

/* ---- arguments ---- */

/* A TCP port, 1 to 65535, plain decimal.  false leaves *out alone. */
static bool
parse_port(const char *s, int *out)
{
	long v = 0;

	if (*s == '\0' || strlen(s) > 5)
		return false;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (*p - '0');
	}
	if (v < 1 || v > 65535)
		return false;
	*out = (int)v;
	return true;
}

static bool
set_host(struct endpoint *e, const char *host, size_t len)
{
	if (len == 0 || len >= sizeof(e->host))
		return false;
	memcpy(e->host, host, len);
	e->host[len] = '\0';
	return true;
}

/* "host:port", "[v6]:port" or "host" (port 6379) into e. */
static bool
parse_hostport(const char *s, struct endpoint *e)
{
	const char *colon = strrchr(s, ':');
	const char *close = strrchr(s, ']');

	if (s[0] == '[' && close != NULL) {
		if (close[1] == '\0')
			colon = NULL;
		else if (close[1] != ':')
			return false;
		else
			colon = close + 1;
		e->port = DEFAULT_REDIS_PORT;
		if (colon != NULL && !parse_port(colon + 1, &e->port))
			return false;
		return set_host(e, s + 1, (size_t)(close - s - 1));
	}
	e->port = DEFAULT_REDIS_PORT;
	if (colon == NULL)
		return set_host(e, s, strlen(s));
	if (!parse_port(colon + 1, &e->port))
		return false;
	return set_host(e, s, (size_t)(colon - s));
}

/*
 * An account id as the protocol defines it (decimal, leading zeros allowed,
 * below 2^64 - 1), for the commands that build a Redis key from it: the key
 * must name the account the daemon means, so "0042" becomes 42.
 */
static bool
parse_account(const char *s, uint64_t *out)
{
	uint64_t id;

	if (!tg_decimal_u64(s, strlen(s), &id) || id == UINT64_MAX)
		return false;
	*out = id;
	return true;
}

/*
 * Split a command's arguments (after its name) into positionals and the
 * --options the command takes.  "--" ends the options.  CTL_OK or CTL_USAGE
 * (reported).
 */
static int
parse_args(const struct command *cmd, int argc, char **argv, struct args *a)
{
	bool options = cmd->opts != 0;

	memset(a, 0, sizeof(*a));
	for (int i = 0; i < argc; i++) {
		const char *s = argv[i];
		const char **val = NULL;
		if (!options || strncmp(s, "--", 2) != 0) {
			if (a->npos == ARGS_MAX)
				return usage_error("%s: too many arguments", cmd->name);
			a->pos[a->npos++] = s;
			continue;
		}
		if (strcmp(s, "--") == 0)
			options = false;
		else if ((cmd->opts & OPT_JSON) && strcmp(s, "--json") == 0)
			a->json = true;
		else if ((cmd->opts & OPT_LOAD) && strcmp(s, "--overwrite") == 0)
			a->overwrite = true;
		else if ((cmd->opts & OPT_LOAD) && strcmp(s, "--skip-existing") == 0)
			a->overwrite = false;
		else if ((cmd->opts & OPT_PROFILE) && strcmp(s, "--email") == 0)
			val = &a->email;
		else if ((cmd->opts & OPT_PROFILE) && strcmp(s, "--method") == 0)
			val = &a->method;
		else if ((cmd->opts & OPT_PROFILE) && strcmp(s, "--token") == 0)
			val = &a->token;
		else if ((cmd->opts & OPT_PROFILE) && strcmp(s, "--name") == 0)
			val = &a->name;
		else if ((cmd->opts & OPT_DATA_DIR) && strcmp(s, "--data-dir") == 0)
			val = &a->data_dir;
		else if ((cmd->opts & OPT_AT) && strcmp(s, "--at") == 0)
			val = &a->at;
		else if ((cmd->opts & OPT_RECORDS) && strcmp(s, "--records") == 0)
			a->records = true;
		else
			return usage_error("%s: unknown option '%s'", cmd->name, s);
		if (val != NULL) {
			if (i + 1 >= argc)
				return usage_error("%s: %s needs a value", cmd->name, s);
			*val = argv[++i];
		}
	}
	if (a->npos < cmd->min_pos || a->npos > cmd->max_pos)
		return usage_error("%s: wrong number of arguments", cmd->name);
	return CTL_OK;
}

/* ---- the connection ---- */

/* Connect x->c to e, then AUTH when password is set.  CTL_OK, CTL_CONNECT or CTL_SERVER (reported).
 */
static int call(struct ctl *x, redisReply **out, int argc, const char **argv);

static int
connect_to(struct ctl *x, const struct endpoint *e, const char *password)
{
	struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_S};

	x->at = e;
	x->c = redisConnectWithTimeout(e->host, e->port, tv);
	if (x->c == NULL || x->c->err) {
		say("cannot connect to %s:%d: %s", e->host, e->port,
		    x->c ? x->c->errstr : "out of memory");
		return CTL_CONNECT;
	}
	tv.tv_sec = REPLY_TIMEOUT_S;
	if (redisSetTimeout(x->c, tv) != REDIS_OK) {
		say("cannot connect to %s:%d: %s", e->host, e->port, x->c->errstr);
		return CTL_CONNECT;
	}
	if (password != NULL) {
		bool named = e == &x->daemon && x->user != NULL;
		const char *argv[] = {"AUTH", named ? x->user : password, password};
		redisReply *r;
		int rc = call(x, &r, named ? 3 : 2, argv);
		if (rc != CTL_OK)
			return rc;
		freeReplyObject(r);
	}
	return CTL_OK;
}

/* The connection failed under a command: report it.  CTL_CONNECT. */
static int
lost(struct ctl *x)
{
	say("connection to %s:%d lost: %s", x->at->host, x->at->port,
	    x->c->errstr[0] ? x->c->errstr : "no reply");
	return CTL_CONNECT;
}

/* Report an error reply ("tollctl: NOACCOUNT no such account").  CTL_SERVER. */
static int
server_error(const redisReply *r)
{
	say("%.*s", (int)r->len, r->str);
	return CTL_SERVER;
}

/*
 * Send one command, wait for its reply.  CTL_OK with *out (the caller frees
 * it), CTL_SERVER for an error reply or CTL_CONNECT (both reported, *out NULL).
 */
static int
call(struct ctl *x, redisReply **out, int argc, const char **argv)
{
	redisReply *r = redisCommandArgv(x->c, argc, argv, NULL);

	*out = NULL;
	if (r == NULL)
		return lost(x);
	if (r->type == REDIS_REPLY_ERROR) {
		int rc = server_error(r);
		freeReplyObject(r);
		return rc;
	}
	*out = r;
	return CTL_OK;
}

/* A reply of a type the command never returns.  CTL_SERVER. */
static int
unexpected(const char *what)
{
	say("unexpected reply to %s", what);
	return CTL_SERVER;
}

/* ---- output ---- */

static void
json_string(const char *s, size_t len)
{
	putchar('"');
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

/* Whether r is a flat array of field/value pairs with string fields. */
static bool
is_pairs(const redisReply *r)
{
	if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0)
		return false;
	for (size_t i = 0; i < r->elements; i += 2)
		if (r->element[i]->type != REDIS_REPLY_STRING &&
		    r->element[i]->type != REDIS_REPLY_STATUS)
			return false;
	return true;
}

/*
 * A flat field/value array as aligned "field  value" lines, or as one JSON
 * object: strings (amounts included, so they stay exact) as JSON strings,
 * integers as numbers.  r must pass is_pairs().
 */
static void
print_pairs(const redisReply *r, bool json)
{
	size_t width = 0;

	for (size_t i = 0; i < r->elements; i += 2)
		if (r->element[i]->len > width)
			width = r->element[i]->len;
	if (json)
		fputs("{", stdout);
	for (size_t i = 0; i < r->elements; i += 2) {
		const redisReply *k = r->element[i], *v = r->element[i + 1];
		if (json) {
			fputs(i ? ",\n  " : "\n  ", stdout);
			json_string(k->str, k->len);
			fputs(": ", stdout);
			if (v->type == REDIS_REPLY_INTEGER)
				printf("%lld", v->integer);
			else if (v->type == REDIS_REPLY_STRING || v->type == REDIS_REPLY_STATUS)
				json_string(v->str, v->len);
			else
				fputs("null", stdout);
			continue;
		}
		if (v->type == REDIS_REPLY_INTEGER)
			printf("%-*.*s  %lld\n", (int)width, (int)k->len, k->str, v->integer);
		else if ((v->type == REDIS_REPLY_STRING || v->type == REDIS_REPLY_STATUS) &&
		         v->len > 0)
			printf("%-*.*s  %.*s\n", (int)width, (int)k->len, k->str, (int)v->len,
			       v->str);
		else
			printf("%.*s\n", (int)k->len, k->str); /* empty: no trailing blanks */
	}
	if (json)
		fputs(r->elements ? "\n}\n" : "}\n", stdout);
}

/* ---- commands against tollgated ---- */

/* Run one command whose reply is field/value pairs, and print them. */
static int
pairs_command(struct ctl *x, const char *what, int argc, const char **argv, bool json)
{
	redisReply *r;
	int rc = call(x, &r, argc, argv);

	if (rc != CTL_OK)
		return rc;
	if (is_pairs(r))
		print_pairs(r, json);
	else
		rc = unexpected(what);
	freeReplyObject(r);
	return rc;
}

static int
cmd_show(struct ctl *x, const struct args *a)
{
	const char *argv[] = {"ACCT.GET", a->pos[0]};
	return pairs_command(x, "ACCT.GET", 2, argv, a->json);
}

static int
cmd_rate(struct ctl *x, const struct args *a)
{
	const char *argv[] = {"RATE", a->pos[0], a->pos[1], a->pos[2]};
	return pairs_command(x, "RATE", 4, argv, a->json);
}

/* Print a status or bulk reply on its own line. */
static int
print_line(struct ctl *x, const char *what, int argc, const char **argv)
{
	redisReply *r;
	int rc = call(x, &r, argc, argv);

	if (rc != CTL_OK)
		return rc;
	if (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING)
		printf("%.*s\n", (int)r->len, r->str);
	else
		rc = unexpected(what);
	freeReplyObject(r);
	return rc;
}

static int
cmd_set(struct ctl *x, const struct args *a)
{
	const char *argv[ARGS_MAX + 1] = {"ACCT.SET"};

	for (int i = 0; i < a->npos; i++)
		argv[i + 1] = a->pos[i];
	return print_line(x, "ACCT.SET", a->npos + 1, argv);
}

static int
cmd_credit(struct ctl *x, const struct args *a)
{
	const char *argv[] = {"ACCT.CREDIT", a->pos[0], a->pos[1], a->pos[2]};
	return print_line(x, "ACCT.CREDIT", 4, argv);
}

/*
 * RATES.RELOAD.  A failure's text is "rate plans not reloaded (N problems):"
 * then each "file:line: reason", joined by "; " on the wire: one a line here.
 */
static int
cmd_reload(struct ctl *x, const struct args *a)
{
	const char *argv[] = {"RATES.RELOAD"};
	redisReply *r = redisCommandArgv(x->c, 1, argv, NULL);
	int rc = CTL_OK;

	(void)a;
	if (r == NULL)
		return lost(x);
	if (r->type == REDIS_REPLY_ERROR) {
		const char *p = r->str, *end = r->str + r->len;
		const char *head = strstr(p, "): "); /* the heading ends at "(N problems):" */
		const char *cut = head != NULL ? head + 2 : end;
		say("%.*s", (int)(cut - p), p);
		for (p = cut; p < end;) {
			p += strspn(p, " ");
			const char *semi = strstr(p, "; ");
			const char *stop = semi != NULL ? semi : end;
			if (stop > p)
				fprintf(stderr, "%.*s\n", (int)(stop - p), p);
			p = semi != NULL ? semi + 2 : end;
		}
		rc = CTL_SERVER;
	} else if (r->type == REDIS_REPLY_STATUS) {
		printf("%.*s\n", (int)r->len, r->str);
	} else {
		rc = unexpected("RATES.RELOAD");
	}
	freeReplyObject(r);
	return rc;
}

/* INFO: Redis's format with its CRLF line ends, printed with plain ones. */
static int
cmd_info(struct ctl *x, const struct args *a)
{
	const char *argv[] = {"INFO", a->pos[0]};
	redisReply *r;
	int rc = call(x, &r, a->npos + 1, argv);

	if (rc != CTL_OK)
		return rc;
	if (r->type == REDIS_REPLY_STRING) {
		for (size_t i = 0; i < r->len; i++)
			if (r->str[i] != '\r')
				putchar(r->str[i]);
		if (r->len > 0 && r->str[r->len - 1] != '\n')
			putchar('\n');
	} else {
		rc = unexpected("INFO");
	}
	freeReplyObject(r);
	return rc;
}

/* ---- load-accounts ---- */

/* What a load did, for the report. */
struct load_counts {
	size_t created, overwritten, kept, failed;
};

/* The ACCT.SET words of one row, in buffers that live as long as the struct. */
struct set_words {
	char id[24], balance[TG_MONEY_STR_MAX], threshold[TG_MONEY_STR_MAX],
	    amount[TG_MONEY_STR_MAX];
	const char *argv[16];
	int argc;
};

static void
set_words(const struct ctl_account *row, struct set_words *w)
{
	int n = 0;

	snprintf(w->id, sizeof(w->id), "%" PRIu64, row->id);
	tg_money_format(row->balance, w->balance);
	tg_money_format(row->threshold, w->threshold);
	tg_money_format(row->refill_amount, w->amount);
	w->argv[n++] = "ACCT.SET";
	w->argv[n++] = w->id;
	w->argv[n++] = "BALANCE";
	w->argv[n++] = w->balance;
	w->argv[n++] = "PLAN";
	w->argv[n++] = row->plan;
	w->argv[n++] = "STATE";
	w->argv[n++] = row->state;
	w->argv[n++] = "THRESHOLD";
	w->argv[n++] = w->threshold;
	w->argv[n++] = "REFILL";
	if (strcmp(row->refill, "add") == 0) {
		w->argv[n++] = "ADD";
		w->argv[n++] = w->amount;
	} else if (strcmp(row->refill, "topup") == 0) {
		w->argv[n++] = "TOPUP";
		w->argv[n++] = w->amount;
	} else {
		w->argv[n++] = "OFF";
	}
	w->argv[n++] = "PAYMENT";
	w->argv[n++] = row->payment;
	w->argc = n;
}

/*
 * Read the reply of one pipelined command into *out (caller frees).  CTL_OK
 * (error replies included: the caller judges them) or CTL_CONNECT (reported).
 */
static int
next_reply(struct ctl *x, redisReply **out)
{
	void *r = NULL;

	if (redisGetReply(x->c, &r) != REDIS_OK || r == NULL)
		return lost(x);
	*out = r;
	return CTL_OK;
}

/*
 * Which of rows[0..n) exist (ACCT.GET, pipelined) into exists[].  CTL_OK,
 * CTL_SERVER for an error other than NOACCOUNT (reported with the row's line),
 * or CTL_CONNECT.
 */
static int
probe_batch(struct ctl *x, const char *path, const struct ctl_account *rows, size_t n, bool *exists)
{
	char id[24];
	int rc = CTL_OK;

	for (size_t i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "%" PRIu64, rows[i].id);
		const char *argv[] = {"ACCT.GET", id};
		if (redisAppendCommandArgv(x->c, 2, argv, NULL) != REDIS_OK)
			return lost(x);
	}
	for (size_t i = 0; i < n; i++) {
		redisReply *r;
		if (next_reply(x, &r) != CTL_OK)
			return CTL_CONNECT;
		if (r->type == REDIS_REPLY_ARRAY) {
			exists[i] = true;
		} else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOACCOUNT", 9) == 0 &&
		           (r->str[9] == ' ' || r->str[9] == '\0')) {
			exists[i] = false;
		} else if (rc == CTL_OK) {
			if (r->type == REDIS_REPLY_ERROR)
				say("%s:%u: account %" PRIu64 ": %.*s", path, rows[i].line,
				    rows[i].id, (int)r->len, r->str);
			else
				say("%s:%u: account %" PRIu64 ": unexpected reply to ACCT.GET",
				    path, rows[i].line, rows[i].id);
			rc = CTL_SERVER;
		}
		freeReplyObject(r);
	}
	return rc;
}

/*
 * ACCT.SET the rows of one batch that are to be set (all, or the new ones),
 * pipelined.  Every refused row is reported with its line; CTL_OK, CTL_SERVER
 * when any was refused, or CTL_CONNECT.
 */
static int
set_batch(struct ctl *x, const char *path, const struct ctl_account *rows, size_t n,
          const bool *exists, bool overwrite, struct load_counts *k)
{
	struct set_words w;
	int rc = CTL_OK;

	for (size_t i = 0; i < n; i++) {
		if (exists[i] && !overwrite)
			continue;
		set_words(&rows[i], &w);
		if (redisAppendCommandArgv(x->c, w.argc, w.argv, NULL) != REDIS_OK)
			return lost(x);
	}
	for (size_t i = 0; i < n; i++) {
		redisReply *r;
		if (exists[i] && !overwrite) {
			k->kept++;
			continue;
		}
		if (next_reply(x, &r) != CTL_OK)
			return CTL_CONNECT;
		if (r->type == REDIS_REPLY_STATUS) {
			if (exists[i])
				k->overwritten++;
			else
				k->created++;
		} else {
			if (r->type == REDIS_REPLY_ERROR)
				say("%s:%u: account %" PRIu64 ": %.*s", path, rows[i].line,
				    rows[i].id, (int)r->len, r->str);
			else
				say("%s:%u: account %" PRIu64 ": unexpected reply to ACCT.SET",
				    path, rows[i].line, rows[i].id);
			k->failed++;
			rc = CTL_SERVER;
		}
		freeReplyObject(r);
	}
	return rc;
}

/*
 * Check the whole file, then create its accounts in pipelined batches:
 * ACCT.GET to learn which exist, then ACCT.SET of the new ones (or of all
 * with --overwrite).  A batch with a refused row ends the load after that
 * batch; the rows already set stay set (each ACCT.SET is its own request).
 * Between a batch's ACCT.GET and its ACCT.SET another client could create
 * one of its accounts; it would then be set from the file.
 */
static int
cmd_load_accounts(struct ctl *x, const struct args *a)
{
	const char *path = a->pos[0];
	struct ctl_account *rows;
	struct load_counts k = {0};
	struct tg_diag diag;
	bool exists[LOAD_BATCH];
	size_t n, done = 0;
	int rc;

	tg_diag_init(&diag);
	if (ctl_accounts_read(path, &diag, &rows, &n) != 0) {
		say("%s: not loaded, nothing sent (%u problem%s):", path, diag.count,
		    diag.count == 1 ? "" : "s");
		fflush(stderr);
		tg_diag_print(&diag, 2);
		return CTL_INPUT;
	}
	rc = connect_to(x, &x->daemon, x->password);
	while (rc == CTL_OK && done < n) {
		size_t b = n - done < LOAD_BATCH ? n - done : LOAD_BATCH;
		rc = probe_batch(x, path, rows + done, b, exists);
		if (rc == CTL_OK)
			rc = set_batch(x, path, rows + done, b, exists, a->overwrite, &k);
		done += b;
	}
	free(rows);
	if (rc == CTL_CONNECT)
		return rc;
	if (rc != CTL_OK) {
		say("%s: stopped: %zu created, %zu overwritten, %zu already present (kept), %zu "
		    "refused, %zu not sent",
		    path, k.created, k.overwritten, k.kept, k.failed,
		    n - k.created - k.overwritten - k.kept - k.failed);
		return rc;
	}
	printf("%s: %zu accounts: %zu created, %zu overwritten, %zu already present (kept)\n", path,
	       n, k.created, k.overwritten, k.kept);
	return CTL_OK;
}

/* ---- the customer profile, in the refill Redis ---- */

/* No control bytes: a profile's fields end up in mail headers. */
static bool
printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* Plausible, not validated: one '@' with text on both sides, no blanks or control bytes. */
static bool
plausible_email(const char *s)
{
	const char *at = strchr(s, '@');

	if (at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@') != NULL)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			return false;
	return true;
}

static int
cmd_profile(struct ctl *x, const struct args *a)
{
	char key[64];
	uint64_t id;
	redisReply *r;
	int rc;

	if (!parse_account(a->pos[0], &id))
		return usage_error("profile: invalid account id '%s'", a->pos[0]);
	if (a->email == NULL || a->method == NULL || a->token == NULL)
		return usage_error("profile: --email, --method and --token are required");
	if (!plausible_email(a->email))
		return usage_error("profile: '%s' is not a plausible email address", a->email);
	if (strcmp(a->method, "card") != 0 && strcmp(a->method, "paypal") != 0)
		return usage_error("profile: --method must be card or paypal");
	if (a->token[0] == '\0' || !printable(a->token))
		return usage_error(
		    "profile: --token must be non-empty, without control characters");
	if (a->name != NULL && (a->name[0] == '\0' || !printable(a->name)))
		return usage_error("profile: --name must be non-empty, without control characters");
	snprintf(key, sizeof(key), PROFILE_KEY, id);
	const char *argv[] = {"HSET",    key,     "email",  a->email, "method",
	                      a->method, "token", a->token, "name",   a->name};
	rc = connect_to(x, &x->redis, NULL);
	if (rc == CTL_OK)
		rc = call(x, &r, a->name ? 10 : 8, argv);
	if (rc != CTL_OK)
		return rc;
	if (r->type != REDIS_REPLY_INTEGER)
		rc = unexpected("HSET");
	freeReplyObject(r);
	if (rc != CTL_OK)
		return rc;
	/*
	 * A new card re-arms auto-refill: the engine fires a request now if the
	 * balance is already at or below the threshold (the next crossing
	 * otherwise).  The profile is written either way.
	 */
	char acct[24];
	snprintf(acct, sizeof(acct), "%llu", (unsigned long long)id);
	const char *rearm[] = {"ACCT.REFILL.REARM", acct};
	redisFree(x->c);
	x->c = NULL;
	rc = connect_to(x, &x->daemon, x->password);
	if (rc == CTL_OK)
		rc = call(x, &r, 2, rearm);
	if (rc != CTL_OK) {
		say("profile written, but auto-refill of account %llu was not re-armed",
		    (unsigned long long)id);
		return rc;
	}
	if (r->type == REDIS_REPLY_STRING)
		printf("OK, refill %s fired\n", r->str);
	else
		printf("OK\n");
	freeReplyObject(r);
	return CTL_OK;
}

static int
cmd_profile_show(struct ctl *x, const struct args *a)
{
	char key[64];
	uint64_t id;
	redisReply *r;
	int rc;

	if (!parse_account(a->pos[0], &id))
		return usage_error("profile-show: invalid account id '%s'", a->pos[0]);
	snprintf(key, sizeof(key), PROFILE_KEY, id);
	const char *argv[] = {"HGETALL", key};
	rc = connect_to(x, &x->redis, NULL);
	if (rc == CTL_OK)
		rc = call(x, &r, 2, argv);
	if (rc != CTL_OK)
		return rc;
	if (!is_pairs(r)) {
		rc = unexpected("HGETALL");
	} else if (r->elements == 0) {
		say("no profile for account %" PRIu64 " (%s)", id, key);
		rc = CTL_SERVER;
	} else {
		print_pairs(r, a->json);
	}
	freeReplyObject(r);
	return rc;
}

/* ---- the journal of a data directory (no daemon) ---- */

/* The data directory given with --data-dir, or a usage error. */
static int
need_data_dir(const char *cmd, const struct args *a)
{
	if (a->data_dir == NULL || a->data_dir[0] == '\0')
		return usage_error("%s: --data-dir DIR is required", cmd);
	return CTL_OK;
}

/* Segment names of dir that sort after lsn: the names journal-cut sets aside.  */
struct seg_list {
	uint64_t *lsn;
	size_t n;
};

static int
cmp_lsn(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Names of kind ("journal" or "snapshot") in dir, by LSN.  0 or -errno. */
static int
list_files(const char *dir, bool snapshots, struct seg_list *out)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t cap = 0;

	out->lsn = NULL;
	out->n = 0;
	if (d == NULL)
		return -errno;
	while ((e = readdir(d)) != NULL) {
		uint64_t lsn = 0;
		bool ok;
		if (snapshots) {
			ok = strlen(e->d_name) == TG_SNAP_NAME_LEN - 1 &&
			     strncmp(e->d_name, "snapshot-", 9) == 0 &&
			     strcmp(e->d_name + 25, ".tgs") == 0;
			for (int i = 9; ok && i < 25; i++) {
				char c = e->d_name[i];
				ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
				lsn = lsn << 4 | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
			}
		} else {
			ok = tg_journal_seg_name_parse(e->d_name, &lsn);
		}
		if (!ok)
			continue;
		if (out->n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			uint64_t *nv = realloc(out->lsn, ncap * sizeof(*nv));
			if (nv == NULL) {
				closedir(d);
				free(out->lsn);
				out->lsn = NULL;
				return -ENOMEM;
			}
			out->lsn = nv;
			cap = ncap;
		}
		out->lsn[out->n++] = lsn;
	}
	closedir(d);
	if (out->n > 1)
		qsort(out->lsn, out->n, sizeof(*out->lsn), cmp_lsn);
	return 0;
}

static void
snap_name(char name[TG_SNAP_NAME_LEN], uint64_t lsn)
{
	snprintf(name, TG_SNAP_NAME_LEN, "snapshot-%016" PRIx64 ".tgs", lsn);
}

/* The size of dir/name, or -1. */
static int64_t
file_size(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* What a walk through the journal found. */
struct jwalk {
	enum tg_journal_status st;
	struct tg_journal_pos pos; /* where it stopped */
	char verdict[600];
	uint64_t records, first_lsn, last_lsn;
	size_t segments;
	uint64_t first_seg, last_seg;
	/* journal-cut: the cut point */
	const char *cut_file;
	uint64_t cut_off;
	bool cut_found;  /* a record starts there (or the walk stopped there) */
	bool cut_inside; /* it falls inside the record at cut_rec_off */
	uint64_t cut_rec_off, cut_rec_end, cut_lsn; /* first LSN discarded */
	uint64_t discarded;                         /* records at or past the cut */
	bool past_cut;
};

/*
 * Read the whole journal in dir; with list, print each record.  0 with w
 * filled (whatever the reader's verdict), or -errno when the directory
 * cannot be opened.
 */
static int
walk_journal(const char *dir, bool list, struct jwalk *w)
{
	struct tg_journal_reader *jr;
	struct tg_jrec rec;
	int rc = tg_journal_open_dir(&jr, dir);

	if (rc != 0)
		return rc;
	w->segments = tg_journal_segments(jr);
	if (w->segments > 0) {
		w->first_seg = tg_journal_segment_lsn(jr, 0);
		w->last_seg = tg_journal_segment_lsn(jr, w->segments - 1);
	}
	while ((w->st = tg_journal_next(jr, &rec)) == TG_JOURNAL_OK) {
		const struct tg_journal_pos *p = tg_journal_where(jr);
		uint64_t end = p->offset, start = end - tg_journal_rec_size(rec.len);
		if (w->records++ == 0)
			w->first_lsn = rec.lsn;
		w->last_lsn = rec.lsn;
		if (list) {
			uint64_t acct = 0;
			if (rec.len >= sizeof(acct))
				memcpy(&acct, rec.payload, sizeof(acct));
			printf("%" PRIu64 " %s:%" PRIu64 " %s %" PRIu64 "\n", rec.lsn, p->file,
			       start, tg_journal_type_name(rec.type), acct);
		}
		if (w->cut_file != NULL && !w->past_cut && strcmp(p->file, w->cut_file) == 0) {
			/* At 0 the whole segment goes: its first record at the header's end. */
			if (start == w->cut_off ||
			    (w->cut_off == 0 && start == TG_JOURNAL_HDR_SIZE)) {
				w->cut_found = w->past_cut = true;
				w->cut_lsn = rec.lsn;
			} else if (start < w->cut_off && w->cut_off < end) {
				w->cut_inside = true;
				w->cut_rec_off = start;
				w->cut_rec_end = end;
				w->cut_lsn = rec.lsn;
			}
		}
		/* A cut at the end of a segment: the next record, in the next segment, is the first
		 * lost. */
		if (w->cut_file != NULL && !w->past_cut && !w->cut_inside &&
		    strcmp(p->file, w->cut_file) > 0) {
			w->cut_found = w->past_cut = true;
			w->cut_lsn = rec.lsn;
		}
		w->discarded += w->past_cut;
	}
	w->pos = *tg_journal_where(jr);
	tg_journal_describe(jr, w->verdict, sizeof(w->verdict));
	tg_journal_close(jr);
	return 0;
}

static int
cmd_journal_check(struct ctl *x, const struct args *a)
{
	const char *dir = a->data_dir;
	struct jwalk w = {0};
	struct seg_list snaps;
	int rc = need_data_dir("journal-check", a);

	(void)x;
	if (rc != CTL_OK)
		return rc;
	rc = walk_journal(dir, a->records, &w);
	if (rc != 0) {
		say("%s: cannot read the journal: %s", dir, strerror(-rc));
		return CTL_INPUT;
	}
	char first[TG_JOURNAL_NAME_LEN] = "-", last[TG_JOURNAL_NAME_LEN] = "-";
	if (w.segments > 0) {
		tg_journal_seg_name(first, w.first_seg);
		tg_journal_seg_name(last, w.last_seg);
	}
	printf("directory  %s\n", dir);
	printf("segments   %zu\n", w.segments);
	printf("first      %s\n", first);
	printf("last       %s\n", last);
	printf("records    %" PRIu64 "\n", w.records);
	if (w.records > 0) {
		printf("first_lsn  %" PRIu64 "\n", w.first_lsn);
		printf("last_lsn   %" PRIu64 "\n", w.last_lsn);
	} else {
		printf("first_lsn  -\n");
		printf("last_lsn   -\n");
	}
	if (w.pos.confirms > 0)
		printf("confirmed  %" PRIu64 "\n", w.pos.confirmed);
	else
		printf("confirmed  -\n");
	bool damaged_snap = false, have_good = false;
	uint64_t good = 0; /* the newest snapshot that verifies: what start-up loads */
	if (list_files(dir, true, &snaps) == 0) {
		if (snaps.n > 0)
			printf("snapshots  %zu (newest at LSN %" PRIu64 ")\n", snaps.n,
			       snaps.lsn[snaps.n - 1]);
		else
			printf("snapshots  0\n");
		/* Each one read back whole; start-up loads the newest that verifies. */
		for (size_t i = snaps.n; i-- > 0;) {
			char name[TG_SNAP_NAME_LEN], why[200];
			snprintf(name, sizeof(name), "snapshot-%016" PRIx64 ".tgs", snaps.lsn[i]);
			if (tg_snapshot_verify(dir, snaps.lsn[i], why, sizeof(why)) == 0) {
				printf("snapshot   %s ok\n", name);
				if (!have_good) {
					have_good = true;
					good = snaps.lsn[i];
				}
			} else {
				printf("snapshot   %s DAMAGED (%s): start-up skips it\n", name,
				       why);
				damaged_snap = true;
			}
		}
		free(snaps.lsn);
	}
	/* Start-up needs the journal to reach back to what it loads: LSN good + 1. */
	bool recoverable = w.segments == 0 || w.first_seg <= good + 1;
	if (!recoverable)
		printf("recovery   IMPOSSIBLE: the journal starts at LSN %" PRIu64 " but %s\n",
		       w.first_seg,
		       have_good ? "the newest good snapshot ends before it"
		                 : "no snapshot is good");
	else if (have_good)
		printf("recovery   snapshot-%016" PRIx64 ".tgs, then the journal from LSN %" PRIu64
		       "\n",
		       good, good + 1);
	else
		printf("recovery   the whole journal, from LSN %" PRIu64 "\n",
		       w.segments ? w.first_seg : 1);
	printf("status     %s\n", tg_journal_status_name(w.st));
	if (w.pos.file[0] != '\0')
		printf("at         %s:%" PRIu64 "\n", w.pos.file, w.pos.offset);
	printf("verdict    %s\n", w.verdict);
	long pid = tg_datadir_holder(dir);
	if (pid != 0)
		printf("note       tollgated pid %ld holds %s: its last segment grows while it is "
		       "read, so its end may be a write in progress\n",
		       pid, dir);
	if (damaged_snap || (w.segments > 0 && !recoverable))
		return CTL_INPUT;
	if (w.st == TG_JOURNAL_END)
		return CTL_OK;
	return w.st == TG_JOURNAL_TORN_TAIL ? CTL_TORN : CTL_INPUT;
}

/* "journal-....tgj:1234" into file and offset.  false for anything else. */
static bool
parse_at(const char *at, char file[TG_JOURNAL_NAME_LEN], uint64_t *offset)
{
	const char *colon = strrchr(at, ':');
	uint64_t lsn, v = 0;

	if (colon == NULL || (size_t)(colon - at) != TG_JOURNAL_NAME_LEN - 1 || colon[1] == '\0' ||
	    strlen(colon + 1) > 20)
		return false;
	memcpy(file, at, TG_JOURNAL_NAME_LEN - 1);
	file[TG_JOURNAL_NAME_LEN - 1] = '\0';
	if (!tg_journal_seg_name_parse(file, &lsn))
		return false;
	for (const char *p = colon + 1; *p; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*offset = v;
	return true;
}

/* The name file was set aside as by the cut just made: the newest "<file>.cut-N". */
static void
cut_name(const char *dir, const char *file, char *out, size_t len)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = strlen(file);
	long long best = -1;

	snprintf(out, len, "%s.cut-?", file);
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, file, n) != 0 || strncmp(e->d_name + n, ".cut-", 5) != 0)
			continue;
		long long t = strtoll(e->d_name + n + 5, NULL, 10);
		size_t l = strlen(e->d_name);
		if (t > best && l < len) {
			best = t;
			memcpy(out, e->d_name, l + 1);
		}
	}
	closedir(d);
}

/*
 * Take DIR/LOCK as tollgated does, so that no tollgated starts while the
 * journal is cut.  The fd (to keep until done), -1 with CTL_BUSY or
 * CTL_INPUT reported.
 */
static int
lock_data_dir(const char *dir, int *code)
{
	int fd = tg_datadir_lock(dir, false);

	if (fd < 0) {
		int e = -fd;
		long pid = tg_datadir_holder(dir);
		if (e == EWOULDBLOCK) {
			if (pid != 0)
				say("a tollgated is running on %s (pid %ld): stop it first; "
				    "nothing "
				    "was changed",
				    dir, pid);
			else
				say("a tollgated is running on %s: stop it first; nothing was "
				    "changed",
				    dir);
			*code = CTL_BUSY;
		} else {
			say("%s/LOCK: cannot lock: %s", dir, strerror(e));
			*code = CTL_INPUT;
		}
		return -1;
	}
	return fd;
}

static int
cmd_journal_cut(struct ctl *x, const struct args *a)
{
	const char *dir = a->data_dir;
	char file[TG_JOURNAL_NAME_LEN], name[TG_JOURNAL_NAME_LEN], aside[TG_JOURNAL_NAME_LEN + 32];
	struct seg_list segs = {0}, snaps = {0};
	struct jwalk w = {0};
	uint64_t offset, file_lsn;
	int rc = need_data_dir("journal-cut", a), code = CTL_INPUT, lock;

	(void)x;
	if (rc != CTL_OK)
		return rc;
	if (a->at == NULL)
		return usage_error("journal-cut: --at FILE:OFFSET is required");
	if (!parse_at(a->at, file, &offset))
		return usage_error("journal-cut: --at '%s': expected FILE:OFFSET, FILE a segment "
		                   "name (journal-<16 hex digits>.tgj) and OFFSET bytes",
		                   a->at);
	if (offset != 0 && (offset < TG_JOURNAL_HDR_SIZE || offset % TG_JOURNAL_ALIGN != 0))
		return usage_error("journal-cut: --at %s: a record starts at offset 0 (the whole "
		                   "segment) or at a multiple of %u from %u on",
		                   a->at, TG_JOURNAL_ALIGN, TG_JOURNAL_HDR_SIZE);
	tg_journal_seg_name_parse(file, &file_lsn);
	lock = lock_data_dir(dir, &code);
	if (lock < 0)
		return code;

	int64_t size = file_size(dir, file);
	if (size < 0) {
		say("%s/%s: %s", dir, file, strerror(errno));
		goto out;
	}
	if ((uint64_t)size < offset) {
		say("%s: offset %" PRIu64 " is past its end (%" PRId64
		    " bytes); nothing was changed",
		    file, offset, size);
		goto out;
	}
	/* The cut must fall between records, at or before the first damage. */
	w.cut_file = file;
	w.cut_off = offset;
	rc = walk_journal(dir, false, &w);
	if (rc != 0) {
		say("%s: cannot read the journal: %s", dir, strerror(-rc));
		goto out;
	}
	/* Segment names sort as their LSNs: fixed width, lower-case hex. */
	int where = strcmp(w.pos.file, file);
	if (w.st != TG_JOURNAL_END && (where < 0 || (where == 0 && w.pos.offset < offset))) {
		say("the journal cannot be read past %s:%" PRIu64 " (%s): a cut at %s:%" PRIu64
		    " would leave that in place; cut at %s:%" PRIu64 " (journal-check shows "
		    "where); nothing was changed",
		    w.pos.file[0] ? w.pos.file : "(no segment)", w.pos.offset,
		    tg_journal_status_name(w.st), file, offset, w.pos.file, w.pos.offset);
		goto out;
	}
	if (offset == 0) {
		w.cut_found = true; /* the whole segment */
		w.cut_lsn = file_lsn;
	} else if (!w.cut_found && !w.cut_inside && where == 0 && w.pos.offset == offset) {
		/* Exactly where the reader stopped: the damage, a torn tail, or the end. */
		w.cut_found = true;
		w.cut_lsn = w.pos.lsn;
	}
	if (w.cut_inside) {
		say("%s:%" PRIu64 " is inside the record of LSN %" PRIu64 " (%s:%" PRIu64
		    " to %" PRIu64 "): cut at %" PRIu64 " to discard it, or at %" PRIu64
		    " to keep it; nothing was changed",
		    file, offset, w.cut_lsn, file, w.cut_rec_off, w.cut_rec_end, w.cut_rec_off,
		    w.cut_rec_end);
		goto out;
	}
	if (!w.cut_found) {
		say("no record of the journal starts at %s:%" PRIu64 " (journal-check --records "
		    "lists where each one does); nothing was changed",
		    file, offset);
		goto out;
	}

	if (list_files(dir, false, &segs) != 0 || list_files(dir, true, &snaps) != 0) {
		say("%s: cannot list: %s", dir, strerror(errno));
		goto out;
	}
	rc = tg_journal_truncate_at(dir, file, offset);
	if (rc != 0) {
		say("%s: cannot cut %s at %" PRIu64 ": %s", dir, file, offset, strerror(-rc));
		goto out;
	}
	printf("cut %s at offset %" PRIu64 ": %" PRId64 " bytes removed\n", file, offset,
	       size - (int64_t)offset);
	for (size_t i = 0; i < segs.n; i++) {
		if (segs.lsn[i] <= file_lsn)
			continue;
		tg_journal_seg_name(name, segs.lsn[i]);
		cut_name(dir, name, aside, sizeof(aside));
		printf("set aside %s (%" PRId64 " bytes) as %s\n", name, file_size(dir, aside),
		       aside);
	}
	/*
	 * A snapshot at or past the first LSN discarded holds what the cut
	 * discards, and the writer would append after its LSN, leaving a gap in
	 * the journal: set it aside too, the same way.
	 */
	char snap[TG_SNAP_NAME_LEN], from[PATH_MAX], to[PATH_MAX + 32];
	long long now = (long long)time(NULL);
	bool renamed = false;
	for (size_t i = 0; i < snaps.n; i++) {
		if (snaps.lsn[i] < w.cut_lsn)
			continue;
		snap_name(snap, snaps.lsn[i]);
		snprintf(from, sizeof(from), "%s/%s", dir, snap);
		snprintf(to, sizeof(to), "%s.cut-%lld", from, now);
		if (rename(from, to) != 0) {
			say("the journal was cut, but %s could not be set aside: %s; move it out "
			    "of %s "
			    "before starting tollgated",
			    from, strerror(errno), dir);
			goto out;
		}
		renamed = true;
		printf("set aside %s (LSN %" PRIu64 ", past the cut) as %s.cut-%lld\n", snap,
		       snaps.lsn[i], snap, now);
	}
	if (renamed) {
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd) != 0)
			say("%s: fsync: %s (the renames may not survive a crash)", dir,
			    strerror(errno));
		if (dfd >= 0)
			close(dfd);
	}
	if (w.cut_lsn > 1)
		printf("the journal now ends at LSN %" PRIu64 "; discarded from LSN %" PRIu64
		       " on: ",
		       w.cut_lsn - 1, w.cut_lsn);
	else
		printf("the journal is now empty; discarded: ");
	if (w.st == TG_JOURNAL_END)
		printf("%" PRIu64 " records\n", w.discarded);
	else
		printf("%" PRIu64 " records read before the reader stopped (%s), and what it could "
		       "not read\n",
		       w.discarded, tg_journal_status_name(w.st));
	code = CTL_OK;
out:
	free(segs.lsn);
	free(snaps.lsn);
	close(lock);
	return code;
}

/* ---- main ---- */

static const struct command commands[] = {
    {"load-accounts", 1, 1, OPT_LOAD, cmd_load_accounts},
    {"set", 1, ARGS_MAX - 1, 0, cmd_set},
    {"show", 1, 1, OPT_JSON, cmd_show},
    {"credit", 3, 3, 0, cmd_credit},
    {"rate", 3, 3, OPT_JSON, cmd_rate},
    {"reload", 0, 0, 0, cmd_reload},
    {"info", 0, 1, 0, cmd_info},
    {"profile", 1, 1, OPT_PROFILE, cmd_profile},
    {"profile-show", 1, 1, OPT_JSON, cmd_profile_show},
    {"journal-check", 0, 0, OPT_DATA_DIR | OPT_RECORDS, cmd_journal_check},
    {"journal-cut", 0, 0, OPT_DATA_DIR | OPT_AT, cmd_journal_cut},
};

/* Whether a command talks to tollgated (the others connect on their own). */
static bool
to_daemon(const struct command *cmd)
{
	return cmd->fn != cmd_load_accounts && cmd->fn != cmd_profile &&
	       cmd->fn != cmd_profile_show && cmd->fn != cmd_journal_check &&
	       cmd->fn != cmd_journal_cut;
}

/* Defaults from the environment; an empty variable counts as unset.  CTL_OK or CTL_USAGE. */
static int
from_env(struct ctl *x)
{
	const char *h = getenv("TOLLGATE_HOST"), *p = getenv("TOLLGATE_PORT"),
	           *pw = getenv("TOLLGATE_PASSWORD"), *user = getenv("TOLLGATE_USER");

	if (h != NULL && h[0] != '\0' && !set_host(&x->daemon, h, strlen(h)))
		return usage_error("TOLLGATE_HOST: not a host name");
	if (p != NULL && p[0] != '\0' && !parse_port(p, &x->daemon.port))
		return usage_error("TOLLGATE_PORT '%s': not a port (1 to 65535)", p);
	if (pw != NULL && pw[0] != '\0')
		x->password = pw;
	if (user != NULL && user[0] != '\0')
		x->user = user;
	return CTL_OK;
}

/*
 * The global options, up to the command name; *first is its index.  CTL_OK,
 * CTL_USAGE (reported), or -1 when --help was printed.
 */
static int
parse_globals(struct ctl *x, int argc, char **argv, int *first)
{
	int i = 1;

	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *o = argv[i];
		if (strcmp(o, "--help") == 0) {
			fputs(usage_text, stdout);
			return -1;
		}
		if (strcmp(o, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(o, "-h") != 0 && strcmp(o, "-p") != 0 && strcmp(o, "-a") != 0 &&
		    strcmp(o, "--user") != 0 && strcmp(o, "--redis") != 0)
			return usage_error("unknown option '%s'", o);
		if (i + 1 >= argc)
			return usage_error("%s needs a value", o);
		const char *v = argv[++i];
		if (strcmp(o, "-h") == 0 && !set_host(&x->daemon, v, strlen(v)))
			return usage_error("-h '%s': not a host name", v);
		if (strcmp(o, "-p") == 0 && !parse_port(v, &x->daemon.port))
			return usage_error("-p '%s': not a port (1 to 65535)", v);
		if (strcmp(o, "-a") == 0)
			x->password = v;
		if (strcmp(o, "--user") == 0)
			x->user = v;
		if (strcmp(o, "--redis") == 0 && !parse_hostport(v, &x->redis))
			return usage_error("--redis '%s': expected HOST:PORT", v);
	}
	if (i >= argc)
		return usage_error(NULL);
	*first = i;
	return CTL_OK;
}

int
main(int argc, char **argv)
{
	struct ctl x = {.daemon = {.host = DEFAULT_HOST, .port = DEFAULT_PORT},
	                .redis = {.host = DEFAULT_HOST, .port = DEFAULT_REDIS_PORT}};
	const struct command *cmd = NULL;
	struct args a;
	int first = 0, rc;

	/* A peer that closes while we write must give exit 3, not death by SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	rc = from_env(&x);
	if (rc == CTL_OK)
		rc = parse_globals(&x, argc, argv, &first);
	if (rc != CTL_OK)
		return rc < 0 ? CTL_OK : rc;
	/* The ledger's questions parse their own options (tools/ctl_ledger.c). */
	if (strcmp(argv[first], "statement") == 0 || strcmp(argv[first], "calls") == 0 ||
	    strcmp(argv[first], "reconcile") == 0)
		return ctl_ledger_main(argc - first, argv + first, x.daemon.host, x.daemon.port,
		                       x.user, x.password);
	if (ctl_billing_handles(argv[first]))
		return ctl_billing_main(argc - first, argv + first, x.daemon.host, x.daemon.port,
		                        x.user, x.password, x.redis.host, x.redis.port);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[first], commands[i].name) == 0)
			cmd = &commands[i];
	if (cmd == NULL)
		return usage_error("unknown command '%s'", argv[first]);
	rc = parse_args(cmd, argc - first - 1, argv + first + 1, &a);
	if (rc == CTL_OK && to_daemon(cmd))
		rc = connect_to(&x, &x.daemon, x.password);
	if (rc == CTL_OK)
		rc = cmd->fn(&x, &a);
	if (x.c != NULL)
		redisFree(x.c);
	return rc;
}
