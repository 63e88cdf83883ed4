/*
 * tollctl.c - the operator's client of tollgated: one command, one exit code.
 *
 * A thin layer over the wire protocol (docs/PROTOCOL.md) through hiredis:
 * this file owns main(), the global options, the dispatch table (commands[]:
 * every command, one row each), each command's --options, the wire client
 * (ctl.h: one connection at a time, to tollgated or the refill Redis), the
 * commands that are one request to tollgated, the loading of an accounts
 * file over the wire (checked whole first, by ctl_accounts.c), and turning
 * replies into text and exit codes (docs/TOOLS.md).  The other commands
 * live in files of their own: the customer profile in the refill Redis
 * (ctl_profile.c), the journal of a data directory with no daemon
 * (ctl_journal.c), the ledger's questions (ctl_ledger.c).
 * It never decides anything about money: amounts and other values it passes
 * through are checked by the daemon, which is the authority on the protocol;
 * tollctl checks locally only what it must interpret itself (an accounts
 * file, a profile).  It never sends a command of an accounts file that has a
 * bad row, and never retries a command (a retried ACCT.SET could overwrite a
 * balance that moved meanwhile).
 */
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "ctl.h"
#include "ctl_accounts.h"
#include "ctl_billing.h"
#include "ctl_ledger.h"
#include "tg_assert.h"
#include "tg_money.h"
#include "tg_names.h"
#include "tg_refill_wire.h"

#define DEFAULT_HOST       "127.0.0.1"
#define DEFAULT_PORT       6390
#define DEFAULT_REDIS_PORT 6379
/* Commands per pipelined batch of load-accounts: a batch's requests (about
 * 40 KiB of ACCT.SET) fit in the socket buffers, so the daemon never waits on
 * us to read while we are still writing. */
#define LOAD_BATCH 256
/* Seconds to connect, and to wait for any one reply (a reload reads files). */
#define CONNECT_TIMEOUT_S 5
#define REPLY_TIMEOUT_S   120

/* usage_text spells the account states, refill modes and payment methods of the tables. */
_Static_assert(TG_ACCT_STATE__COUNT == 3 && TG_REFILL_MODE__COUNT == 3 && TG_PAY__COUNT == 2,
               "usage_text names every account state, refill mode and payment method");
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
    "        write the customer profile hash " TG_PROFILE_PREFIX "ACCT to the refill Redis\n"
    "  profile-show ACCT [--json]   read it back\n"
    "\n"
    "commands on a data directory (no daemon; docs/JOURNAL.md):\n"
    "  journal-check --data-dir DIR [--records]\n"
    "        read the whole journal, read-only, and print what the reader finds: its\n"
    "        segments, records, first and last LSN and the verdict; --records also lists\n"
    "        every record, one a line, every field as key=value (docs/TOOLS.md)\n"
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

/* One "tollctl: ..." line on stderr. */
void
ctl_say(const char *fmt, ...)
{
	va_list ap;
	fputs("tollctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Report a bad argument (fmt may be NULL), print the usage; CTL_USAGE. */
int
ctl_usage_error(const char *fmt, ...)
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
set_host(struct ctl_endpoint *e, const char *host, size_t len)
{
	if (len == 0 || len >= sizeof(e->host))
		return false;
	memcpy(e->host, host, len);
	e->host[len] = '\0';
	return true;
}

/* "host:port", "[v6]:port" or "host" (port 6379) into e. */
static bool
parse_hostport(const char *s, struct ctl_endpoint *e)
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
bool
ctl_parse_account(const char *s, uint64_t *out)
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
parse_args(const struct ctl_command *cmd, int argc, char **argv, struct ctl_args *a)
{
	bool options = cmd->opts != 0;

	memset(a, 0, sizeof(*a));
	for (int i = 0; i < argc; i++) {
		const char *s = argv[i];
		const char **val = NULL;
		if (!options || strncmp(s, "--", 2) != 0) {
			if (a->npos == CTL_ARGS_MAX)
				return ctl_usage_error("%s: too many arguments", cmd->name);
			a->pos[a->npos++] = s;
			continue;
		}
		if (strcmp(s, "--") == 0)
			options = false;
		else if ((cmd->opts & CTL_OPT_JSON) && strcmp(s, "--json") == 0)
			a->json = true;
		else if ((cmd->opts & CTL_OPT_LOAD) && strcmp(s, "--overwrite") == 0)
			a->overwrite = true;
		else if ((cmd->opts & CTL_OPT_LOAD) && strcmp(s, "--skip-existing") == 0)
			a->overwrite = false;
		else if ((cmd->opts & CTL_OPT_PROFILE) && strcmp(s, "--email") == 0)
			val = &a->email;
		else if ((cmd->opts & CTL_OPT_PROFILE) && strcmp(s, "--method") == 0)
			val = &a->method;
		else if ((cmd->opts & CTL_OPT_PROFILE) && strcmp(s, "--token") == 0)
			val = &a->token;
		else if ((cmd->opts & CTL_OPT_PROFILE) && strcmp(s, "--name") == 0)
			val = &a->name;
		else if ((cmd->opts & CTL_OPT_DATA_DIR) && strcmp(s, "--data-dir") == 0)
			val = &a->data_dir;
		else if ((cmd->opts & CTL_OPT_AT) && strcmp(s, "--at") == 0)
			val = &a->at;
		else if ((cmd->opts & CTL_OPT_RECORDS) && strcmp(s, "--records") == 0)
			a->records = true;
		else
			return ctl_usage_error("%s: unknown option '%s'", cmd->name, s);
		if (val != NULL) {
			if (i + 1 >= argc)
				return ctl_usage_error("%s: %s needs a value", cmd->name, s);
			*val = argv[++i];
		}
	}
	if (a->npos < cmd->min_pos || a->npos > cmd->max_pos)
		return ctl_usage_error("%s: wrong number of arguments", cmd->name);
	return CTL_OK;
}

/* ---- the connection ---- */

/* Connect x->c to e, then AUTH when password is set.  CTL_OK, CTL_CONNECT or CTL_SERVER (reported).
 */

int
ctl_connect(struct ctl *x, const struct ctl_endpoint *e, const char *password)
{
	struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_S};

	x->at = e;
	x->c = redisConnectWithTimeout(e->host, e->port, tv);
	if (x->c == NULL || x->c->err) {
		ctl_say("cannot connect to %s:%d: %s", e->host, e->port,
		        x->c ? x->c->errstr : "out of memory");
		return CTL_CONNECT;
	}
	tv.tv_sec = REPLY_TIMEOUT_S;
	if (redisSetTimeout(x->c, tv) != REDIS_OK) {
		ctl_say("cannot connect to %s:%d: %s", e->host, e->port, x->c->errstr);
		return CTL_CONNECT;
	}
	if (password != NULL) {
		bool named = e == &x->daemon && x->user != NULL;
		const char *argv[] = {"AUTH", named ? x->user : password, password};
		redisReply *r;
		int rc = ctl_call(x, &r, named ? 3 : 2, argv);
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
	ctl_say("connection to %s:%d lost: %s", x->at->host, x->at->port,
	        x->c->errstr[0] ? x->c->errstr : "no reply");
	return CTL_CONNECT;
}

/* Report an error reply ("tollctl: NOACCOUNT no such account").  CTL_SERVER. */
static int
server_error(const redisReply *r)
{
	ctl_say("%.*s", (int)r->len, r->str);
	return CTL_SERVER;
}

/*
 * Send one command, wait for its reply.  CTL_OK with *out (the caller frees
 * it), CTL_SERVER for an error reply or CTL_CONNECT (both reported, *out NULL).
 */
int
ctl_call(struct ctl *x, redisReply **out, int argc, const char **argv)
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
int
ctl_unexpected(const char *what)
{
	ctl_say("unexpected reply to %s", what);
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
bool
ctl_is_pairs(const redisReply *r)
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
 * integers as numbers.  r must pass ctl_is_pairs().
 */
void
ctl_print_pairs(const redisReply *r, bool json)
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
	int rc = ctl_call(x, &r, argc, argv);

	if (rc != CTL_OK)
		return rc;
	if (ctl_is_pairs(r))
		ctl_print_pairs(r, json);
	else
		rc = ctl_unexpected(what);
	freeReplyObject(r);
	return rc;
}

static int
cmd_show(struct ctl *x, const struct ctl_args *a)
{
	const char *argv[] = {"ACCT.GET", a->pos[0]};
	return pairs_command(x, "ACCT.GET", 2, argv, a->json);
}

static int
cmd_rate(struct ctl *x, const struct ctl_args *a)
{
	const char *argv[] = {"RATE", a->pos[0], a->pos[1], a->pos[2]};
	return pairs_command(x, "RATE", 4, argv, a->json);
}

/* Print a status or bulk reply on its own line. */
static int
print_line(struct ctl *x, const char *what, int argc, const char **argv)
{
	redisReply *r;
	int rc = ctl_call(x, &r, argc, argv);

	if (rc != CTL_OK)
		return rc;
	if (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING)
		printf("%.*s\n", (int)r->len, r->str);
	else
		rc = ctl_unexpected(what);
	freeReplyObject(r);
	return rc;
}

static int
cmd_set(struct ctl *x, const struct ctl_args *a)
{
	const char *argv[CTL_ARGS_MAX + 1] = {"ACCT.SET"};

	for (int i = 0; i < a->npos; i++)
		argv[i + 1] = a->pos[i];
	return print_line(x, "ACCT.SET", a->npos + 1, argv);
}

static int
cmd_credit(struct ctl *x, const struct ctl_args *a)
{
	const char *argv[] = {"ACCT.CREDIT", a->pos[0], a->pos[1], a->pos[2]};
	return print_line(x, "ACCT.CREDIT", 4, argv);
}

/*
 * RATES.RELOAD.  A failure's text is "rate plans not reloaded (N problems):"
 * then each "file:line: reason", joined by "; " on the wire: one a line here.
 */
static int
cmd_reload(struct ctl *x, const struct ctl_args *a)
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
		ctl_say("%.*s", (int)(cut - p), p);
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
		rc = ctl_unexpected("RATES.RELOAD");
	}
	freeReplyObject(r);
	return rc;
}

/* INFO: Redis's format with its CRLF line ends, printed with plain ones. */
static int
cmd_info(struct ctl *x, const struct ctl_args *a)
{
	const char *argv[] = {"INFO", a->pos[0]};
	redisReply *r;
	int rc = ctl_call(x, &r, a->npos + 1, argv);

	if (rc != CTL_OK)
		return rc;
	if (r->type == REDIS_REPLY_STRING) {
		for (size_t i = 0; i < r->len; i++)
			if (r->str[i] != '\r')
				putchar(r->str[i]);
		if (r->len > 0 && r->str[r->len - 1] != '\n')
			putchar('\n');
	} else {
		rc = ctl_unexpected("INFO");
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
	    amount[TG_MONEY_STR_MAX], limit[TG_MONEY_STR_MAX];
	char maxcalls[16], call_cap[TG_MONEY_STR_MAX], daily_cap[TG_MONEY_STR_MAX],
	    low[TG_MONEY_STR_MAX];
	const char *argv[32]; /* 17 words of settings, 8 of limits */
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
	tg_money_format(row->credit_limit, w->limit);
	w->argv[n++] = "ACCT.SET";
	w->argv[n++] = w->id;
	w->argv[n++] = "BALANCE";
	w->argv[n++] = w->balance;
	w->argv[n++] = "PLAN";
	w->argv[n++] = row->plan;
	w->argv[n++] = "STATE";
	w->argv[n++] = row->state;
	w->argv[n++] = "KIND";
	w->argv[n++] = row->kind;
	if (strcmp(row->kind, "postpaid") == 0) {
		w->argv[n++] = "LIMIT";
		w->argv[n++] = w->limit;
	} else {
		w->argv[n++] = "THRESHOLD";
		w->argv[n++] = w->threshold;
	}
	w->argv[n++] = "REFILL";
	/* ACCT.SET takes the mode as the accounts file spells it ("add"), in any case. */
	w->argv[n++] = row->refill;
	if (tg_refill_mode_parse(row->refill, strlen(row->refill)) != TG_REFILL_OFF)
		w->argv[n++] = w->amount;
	w->argv[n++] = "PAYMENT";
	w->argv[n++] = row->payment;
	/* A file with the limit columns states them, 0 (none) included; an older one, nothing. */
	if (row->limits_given) {
		snprintf(w->maxcalls, sizeof(w->maxcalls), "%" PRIu32, row->maxcalls);
		tg_money_format(row->call_cap, w->call_cap);
		tg_money_format(row->daily_cap, w->daily_cap);
		tg_money_format(row->low, w->low);
		w->argv[n++] = "MAXCALLS";
		w->argv[n++] = w->maxcalls;
		w->argv[n++] = "CALLCAP";
		w->argv[n++] = w->call_cap;
		w->argv[n++] = "DAILYCAP";
		w->argv[n++] = w->daily_cap;
		w->argv[n++] = "LOW";
		w->argv[n++] = w->low;
	}
	TG_ASSERT(n <= (int)TG_ARRAY_LEN(w->argv));
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
				ctl_say("%s:%u: account %" PRIu64 ": %.*s", path, rows[i].line,
				        rows[i].id, (int)r->len, r->str);
			else
				ctl_say("%s:%u: account %" PRIu64 ": unexpected reply to ACCT.GET",
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
				ctl_say("%s:%u: account %" PRIu64 ": %.*s", path, rows[i].line,
				        rows[i].id, (int)r->len, r->str);
			else
				ctl_say("%s:%u: account %" PRIu64 ": unexpected reply to ACCT.SET",
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
cmd_load_accounts(struct ctl *x, const struct ctl_args *a)
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
		ctl_say("%s: not loaded, nothing sent (%u problem%s):", path, diag.count,
		        diag.count == 1 ? "" : "s");
		fflush(stderr);
		tg_diag_print(&diag, 2);
		return CTL_INPUT;
	}
	rc = ctl_connect(x, &x->daemon, x->password);
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
		ctl_say(
		    "%s: stopped: %zu created, %zu overwritten, %zu already present (kept), %zu "
		    "refused, %zu not sent",
		    path, k.created, k.overwritten, k.kept, k.failed,
		    n - k.created - k.overwritten - k.kept - k.failed);
		return rc;
	}
	printf("%s: %zu accounts: %zu created, %zu overwritten, %zu already present (kept)\n", path,
	       n, k.created, k.overwritten, k.kept);
	return CTL_OK;
}

/* ---- main ---- */

/* The billing commands parse their own options (tools/ctl_billing.c). */
static int
billing_main(struct ctl *x, int argc, char **argv)
{
	return ctl_billing_main(argc, argv, x->daemon.host, x->daemon.port, x->user, x->password,
	                        x->redis.host, x->redis.port);
}

/* The ledger's questions parse their own options (tools/ctl_ledger.c). */
static int
ledger_main(struct ctl *x, int argc, char **argv)
{
	return ctl_ledger_main(argc, argv, x->daemon.host, x->daemon.port, x->user, x->password);
}

/*
 * Every command, one row each: a new one is a row here (its function in a
 * file of its own, declared in ctl.h or that file's header), a line of
 * usage_text and its entry in docs/TOOLS.md.  A row with .own_args gets the
 * command's words as they are (argv[0] its name) and parses them itself.
 */
#define DAEMON CTL_CONN_DAEMON
#define NONE   CTL_CONN_NONE
static const struct ctl_command commands[] = {
    {"load-accounts", 1, 1, CTL_OPT_LOAD, NONE, cmd_load_accounts, NULL},
    {"set", 1, CTL_ARGS_MAX - 1, 0, DAEMON, cmd_set, NULL},
    {"show", 1, 1, CTL_OPT_JSON, DAEMON, cmd_show, NULL},
    {"credit", 3, 3, 0, DAEMON, cmd_credit, NULL},
    {"rate", 3, 3, CTL_OPT_JSON, DAEMON, cmd_rate, NULL},
    {"reload", 0, 0, 0, DAEMON, cmd_reload, NULL},
    {"info", 0, 1, 0, DAEMON, cmd_info, NULL},
    {"profile", 1, 1, CTL_OPT_PROFILE, NONE, ctl_profile_set, NULL},
    {"profile-show", 1, 1, CTL_OPT_JSON, NONE, ctl_profile_show, NULL},
    {"journal-check", 0, 0, CTL_OPT_DATA_DIR | CTL_OPT_RECORDS, NONE, ctl_journal_check, NULL},
    {"journal-cut", 0, 0, CTL_OPT_DATA_DIR | CTL_OPT_AT, NONE, ctl_journal_cut, NULL},
    {"statement", 0, 0, 0, NONE, NULL, ledger_main},
    {"calls", 0, 0, 0, NONE, NULL, ledger_main},
    {"reconcile", 0, 0, 0, NONE, NULL, ledger_main},
    {"pay", 0, 0, 0, NONE, NULL, billing_main},
    {"cancel", 0, 0, 0, NONE, NULL, billing_main},
    {"invoice", 0, 0, 0, NONE, NULL, billing_main},
    {"invoices", 0, 0, 0, NONE, NULL, billing_main},
};
#undef DAEMON
#undef NONE

/* Defaults from the environment; an empty variable counts as unset.  CTL_OK or CTL_USAGE. */
static int
from_env(struct ctl *x)
{
	const char *h = getenv("TOLLGATE_HOST"), *p = getenv("TOLLGATE_PORT"),
	           *pw = getenv("TOLLGATE_PASSWORD"), *user = getenv("TOLLGATE_USER");

	if (h != NULL && h[0] != '\0' && !set_host(&x->daemon, h, strlen(h)))
		return ctl_usage_error("TOLLGATE_HOST: not a host name");
	if (p != NULL && p[0] != '\0' && !parse_port(p, &x->daemon.port))
		return ctl_usage_error("TOLLGATE_PORT '%s': not a port (1 to 65535)", p);
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
			return ctl_usage_error("unknown option '%s'", o);
		if (i + 1 >= argc)
			return ctl_usage_error("%s needs a value", o);
		const char *v = argv[++i];
		if (strcmp(o, "-h") == 0 && !set_host(&x->daemon, v, strlen(v)))
			return ctl_usage_error("-h '%s': not a host name", v);
		if (strcmp(o, "-p") == 0 && !parse_port(v, &x->daemon.port))
			return ctl_usage_error("-p '%s': not a port (1 to 65535)", v);
		if (strcmp(o, "-a") == 0)
			x->password = v;
		if (strcmp(o, "--user") == 0)
			x->user = v;
		if (strcmp(o, "--redis") == 0 && !parse_hostport(v, &x->redis))
			return ctl_usage_error("--redis '%s': expected HOST:PORT", v);
	}
	if (i >= argc)
		return ctl_usage_error(NULL);
	*first = i;
	return CTL_OK;
}

int
main(int argc, char **argv)
{
	struct ctl x = {.daemon = {.host = DEFAULT_HOST, .port = DEFAULT_PORT},
	                .redis = {.host = DEFAULT_HOST, .port = DEFAULT_REDIS_PORT}};
	const struct ctl_command *cmd = NULL;
	struct ctl_args a;
	int first = 0, rc;

	/* A peer that closes while we write must give exit 3, not death by SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	rc = from_env(&x);
	if (rc == CTL_OK)
		rc = parse_globals(&x, argc, argv, &first);
	if (rc != CTL_OK)
		return rc < 0 ? CTL_OK : rc;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[first], commands[i].name) == 0)
			cmd = &commands[i];
	if (cmd == NULL)
		return ctl_usage_error("unknown command '%s'", argv[first]);
	if (cmd->own_args != NULL)
		return cmd->own_args(&x, argc - first, argv + first);
	rc = parse_args(cmd, argc - first - 1, argv + first + 1, &a);
	if (rc == CTL_OK && cmd->conn == CTL_CONN_DAEMON)
		rc = ctl_connect(&x, &x.daemon, x.password);
	if (rc == CTL_OK)
		rc = cmd->fn(&x, &a);
	if (x.c != NULL)
		redisFree(x.c);
	return rc;
}
