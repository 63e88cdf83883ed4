/*
 * tollbill.c - the monthly invoice run and collections of postpaid accounts
 * (docs/BILLING.md), out of the hot path, on the ledger database:
 *
 *   tollbill run --month YYYY-MM [options]     invoices dated the 1st, then collect
 *   tollbill collect [options]                 the daily pass: retries, late fees, states
 *   tollbill product NAME PRICE                create or reprice a product
 *   tollbill customer ACCT --region R --signup YYYY-MM-DD
 *   tollbill subscribe ACCT PRODUCT --start YYYY-MM-DD
 *   tollbill late-fee REGION PERCENT            the late-fee table ('*': the default)
 *
 * Argument handling, the clock and the exit codes only: the billing itself
 * is tools/billing.c.  The clock is the system's, or --now (tests, reruns
 * of a missed day).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "tg_clock.h"

/* Exit codes (docs/TOOLS.md). */
enum { B_OK = 0, B_REFUSED = 1, B_USAGE = 2, B_FAILED = 3 };

#define POS_MAX 4

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: tollbill COMMAND [ARGS] [options]\n"
	        "  run --month YYYY-MM     issue the invoices dated the 1st of that month (next\n"
	        "                          month's subscription, last month's usage, late fees),\n"
	        "                          charge and mail them, then collect; idempotent\n"
	        "  collect                 the daily collections pass: charge retries due, late\n"
	        "                          fees, interrupted / suspended / closed / restored,\n"
	        "                          engine credits of paid usage, notices not yet sent\n"
	        "  product NAME PRICE      create or reprice a product (monthly, e.g. 19.99)\n"
	        "  customer ACCT --region R --signup YYYY-MM-DD\n"
	        "                          the billing record of an account (billing region,\n"
	        "                          sign-up day)\n"
	        "  subscribe ACCT PRODUCT --start YYYY-MM-DD\n"
	        "  late-fee REGION PERCENT the late fee of a billing region, 0 to 1.5 ('*': the\n"
	        "                          default of regions without a row)\n"
	        "options:\n%s"
	        "exit status: 0 done (steps that need tollgated, Redis or the mail and could not\n"
	        "reach them are said on stderr and done by the next pass), 1 refused (unknown\n"
	        "account or product, a run before its date), 2 usage, 3 the database failed\n",
	        tg_bill_options_usage);
}

static int64_t
system_clock(void *arg)
{
	(void)arg;
	return (int64_t)(tg_clock_ns(CLOCK_REALTIME) / 1000);
}

static int64_t
fixed_clock(void *arg)
{
	return *(const int64_t *)arg;
}

static int
code_of(int rc)
{
	return rc == 0 ? B_OK : rc == -EIO || rc == -ENOMEM ? B_FAILED : B_REFUSED;
}

static bool
acct_arg(const char *s, uint64_t *out)
{
	char *end;
	if (s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno == 0 && *end == '\0';
}

static void
report(const char *what, const struct tg_bill_report *r)
{
	printf("%s: %u invoice(s) issued, %u charge(s) approved, %u failed, %u late fee(s), %u "
	       "standing change(s), %u engine credit(s), %u notice(s) mailed\n",
	       what, r->invoices, r->charged, r->failed, r->late_fees, r->transitions, r->credits,
	       r->mails);
	if (r->skipped)
		fprintf(
		    stderr,
		    "tollbill: %u postpaid account(s) without a billing record were not invoiced\n",
		    r->skipped);
	if (r->pending)
		fprintf(
		    stderr,
		    "tollbill: %u step(s) could not be done now (tollgated, Redis, the gateway or "
		    "the mail did not answer): the next run or collect does them\n",
		    r->pending);
}

int
main(int argc, char **argv)
{
	struct tg_bill b = {0};
	struct tg_bill_conf conf = {.migrate = true,
	                            .engine_host = "127.0.0.1",
	                            .engine_port = 6390,
	                            .redis_host = "127.0.0.1",
	                            .redis_port = 6379};
	const char *pos[POS_MAX], *month = NULL, *region = NULL, *signup = NULL, *start = NULL;
	char err[TG_BILL_ERR_MAX], dbbuf[1024];
	int64_t now = 0;
	int npos = 0, rc;
	bool quiet = false;

	signal(SIGPIPE, SIG_IGN);
	tg_bill_policy_default(&b.pol);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return B_OK;
		}
		if (strcmp(a, "-q") == 0) {
			quiet = true;
			continue;
		}
		if (strncmp(a, "--", 2) != 0) {
			if (npos == POS_MAX) {
				fprintf(stderr, "tollbill: too many arguments\n");
				return B_USAGE;
			}
			pos[npos++] = a;
			continue;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "tollbill: %s needs a value\n", a);
			return B_USAGE;
		}
		const char *v = argv[++i];
		if (strcmp(a, "--month") == 0)
			month = v;
		else if (strcmp(a, "--region") == 0)
			region = v;
		else if (strcmp(a, "--signup") == 0)
			signup = v;
		else if (strcmp(a, "--start") == 0)
			start = v;
		else if ((rc = tg_bill_option(&conf, &b.pol, &now, dbbuf, sizeof(dbbuf), a, v, err,
		                              sizeof(err))) <= 0) {
			fprintf(stderr, "tollbill: %s\n", rc < 0 ? err : "unknown option");
			if (rc == 0)
				fprintf(stderr,
				        "tollbill: '%s' is not an option (tollbill --help)\n", a);
			return B_USAGE;
		}
	}
	if (npos == 0) {
		usage(stderr);
		return B_USAGE;
	}
	if (tg_bill_policy_check(&b.pol, err, sizeof(err)) != 0) {
		fprintf(stderr, "tollbill: %s\n", err);
		return B_USAGE;
	}

	/* Every argument is checked before the database is opened. */
	const char *cmd = pos[0];
	int y = 0, m = 0;
	uint64_t acct = 0;
	int64_t day = 0;
	tg_money_t price = 0;
	unsigned bp = 0;
	bool ok;
	if (strcmp(cmd, "run") == 0)
		ok = npos == 1 && month != NULL && tg_bill_month_parse(month, &y, &m) == 0;
	else if (strcmp(cmd, "collect") == 0)
		ok = npos == 1;
	else if (strcmp(cmd, "product") == 0)
		ok = npos == 3 && tg_money_parse(pos[2], strlen(pos[2]), &price) == 0;
	else if (strcmp(cmd, "customer") == 0)
		ok = npos == 2 && acct_arg(pos[1], &acct) && region != NULL && signup != NULL &&
		     tg_bill_day_parse(signup, &day) == 0;
	else if (strcmp(cmd, "subscribe") == 0)
		ok = npos == 3 && acct_arg(pos[1], &acct) && start != NULL &&
		     tg_bill_day_parse(start, &day) == 0;
	else if (strcmp(cmd, "late-fee") == 0)
		ok = npos == 3 && tg_bill_percent_parse(pos[2], &bp) == 0;
	else {
		fprintf(stderr, "tollbill: unknown command '%s'\n", cmd);
		return B_USAGE;
	}
	if (!ok) {
		fprintf(
		    stderr,
		    "tollbill: %s: bad arguments (a month is YYYY-MM, a day YYYY-MM-DD, an account "
		    "a decimal number, a percent 0 to 1.5 with at most two decimals; see "
		    "tollbill --help)\n",
		    cmd);
		return B_USAGE;
	}
	if (conf.db == NULL) {
		fprintf(stderr, "tollbill: --db PATH|URI or --data-dir DIR is required\n");
		return B_USAGE;
	}

	b.clock = now ? fixed_clock : system_clock;
	b.clock_arg = &now;
	b.log = quiet ? NULL : stderr;
	if ((rc = tg_bill_open(&b, &conf)) != 0) {
		fprintf(stderr, "tollbill: %s\n", b.err);
		tg_bill_close(&b);
		return rc == -EINVAL ? B_USAGE : B_FAILED;
	}
	if (b.engine == NULL && (strcmp(cmd, "run") == 0 || strcmp(cmd, "collect") == 0))
		fprintf(
		    stderr,
		    "tollbill: tollgated at %s:%d does not answer: engine states and credits wait "
		    "for the next pass\n",
		    conf.engine_host, conf.engine_port);

	struct tg_bill_report rep = {0};
	if (strcmp(cmd, "run") == 0)
		rc = tg_bill_run(&b, y, m, &rep);
	else if (strcmp(cmd, "collect") == 0)
		rc = tg_bill_collect(&b, &rep);
	else if (strcmp(cmd, "product") == 0)
		rc = tg_bill_product_set(&b, pos[1], price);
	else if (strcmp(cmd, "customer") == 0)
		rc = tg_bill_customer_set(&b, acct, region, day);
	else if (strcmp(cmd, "subscribe") == 0)
		rc = tg_bill_subscribe(&b, acct, pos[2], day);
	else
		rc = tg_bill_late_fee_set(&b, pos[1], bp);
	if (rc == 0 && (strcmp(cmd, "run") == 0 || strcmp(cmd, "collect") == 0))
		report(cmd, &rep);
	if (rc != 0)
		fprintf(stderr, "tollbill: %s\n", b.err);
	tg_bill_close(&b);
	return code_of(rc);
}
