/*
 * ctl_billing.c - tollctl's billing commands (docs/BILLING.md):
 *
 *   tollctl pay ACCT AMOUNT [--ref R] [--method manual|card|paypal]
 *   tollctl cancel ACCT [--refund]
 *   tollctl invoice NUMBER
 *   tollctl invoices ACCT
 *
 * each with tollbill's options (--db or --data-dir, --maildir, --now, ...;
 * tg_bill_option).  Argument handling and exit codes only: the billing is
 * tools/billing.c, the same code tollbill runs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "ctl_billing.h"
#include "tg_clock.h"

enum { C_OK = 0, C_REFUSED = 1, C_USAGE = 2, C_CONNECT = 3 };

#define POS_MAX 3

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
usage_error(const char *cmd, const char *why)
{
	fprintf(stderr,
	        "tollctl: %s: %s\n"
	        "usage: tollctl pay ACCT AMOUNT [--ref R] [--method manual|card|paypal] [options]\n"
	        "       tollctl cancel ACCT [--refund] [options]\n"
	        "       tollctl invoice NUMBER [options]\n"
	        "       tollctl invoices ACCT [options]\n"
	        "options:\n%s",
	        cmd, why, tg_bill_options_usage);
	return C_USAGE;
}

static bool
number_arg(const char *s, uint64_t *out)
{
	char *end;
	if (s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno == 0 && *end == '\0';
}

int
ctl_billing_main(int argc, char **argv, const char *host, int port, const char *user,
                 const char *password, const char *redis_host, int redis_port)
{
	struct tg_bill b = {0};
	struct tg_bill_conf conf = {.engine_host = host,
	                            .engine_port = port,
	                            .engine_user = user,
	                            .engine_password = password,
	                            .redis_host = redis_host,
	                            .redis_port = redis_port};
	const char *cmd = argv[0], *pos[POS_MAX], *ref = NULL, *method = TG_BILL_MANUAL;
	char err[TG_BILL_ERR_MAX], dbbuf[1024];
	int64_t now = 0;
	bool refund = false;
	int npos = 0, rc;

	tg_bill_policy_default(&b.pol);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--refund") == 0 && strcmp(cmd, "cancel") == 0) {
			refund = true;
			continue;
		}
		if (strncmp(a, "--", 2) != 0) {
			if (npos == POS_MAX)
				return usage_error(cmd, "too many arguments");
			pos[npos++] = a;
			continue;
		}
		if (i + 1 >= argc)
			return usage_error(cmd, "an option needs a value");
		const char *v = argv[++i];
		if (strcmp(a, "--ref") == 0 && strcmp(cmd, "pay") == 0)
			ref = v;
		else if (strcmp(a, "--method") == 0 && strcmp(cmd, "pay") == 0)
			method = v;
		else if ((rc = tg_bill_option(&conf, &b.pol, &now, dbbuf, sizeof(dbbuf), a, v, err,
		                              sizeof(err))) <= 0)
			return usage_error(cmd, rc < 0 ? err : "unknown option");
	}
	uint64_t id = 0;
	tg_money_t amount = 0;
	bool ok = npos == (strcmp(cmd, "pay") == 0 ? 2 : 1) && number_arg(pos[0], &id);
	if (ok && strcmp(cmd, "pay") == 0)
		ok = tg_money_parse(pos[1], strlen(pos[1]), &amount) == 0 && amount > 0;
	if (!ok)
		return usage_error(cmd, "bad arguments (an account or invoice is a decimal number, "
		                        "an amount a positive decimal such as 25.50)");
	if (conf.db == NULL)
		return usage_error(cmd, "--db PATH|URI or --data-dir DIR is required");
	if (!tg_bill_payment_method_ok(method))
		return usage_error(cmd, "--method is manual, card or paypal");
	if (tg_bill_policy_check(&b.pol, err, sizeof(err)) != 0)
		return usage_error(cmd, err);

	b.clock = now ? fixed_clock : system_clock;
	b.clock_arg = &now;
	if ((rc = tg_bill_open(&b, &conf)) != 0) {
		fprintf(stderr, "tollctl: %s\n", b.err);
		tg_bill_close(&b);
		return rc == -EINVAL ? C_USAGE : C_CONNECT;
	}
	if (strcmp(cmd, "pay") == 0) {
		bool dup;
		rc = tg_bill_pay(&b, id, amount, method, ref, &dup);
		if (rc == 0) {
			char m[TG_MONEY_STR_MAX];
			tg_money_format(amount, m);
			printf(dup ? "payment %s of %s by account %" PRIu64
			             " was already recorded\n"
			           : "payment %s of %s by account %" PRIu64 " recorded\n",
			       ref ? ref : "(manual)", m, id);
			if (b.engine == NULL)
				fprintf(stderr, "tollctl: tollgated did not answer: the account's "
				                "credit and state "
				                "follow at the next tollbill collect\n");
		}
	} else if (strcmp(cmd, "cancel") == 0) {
		if (b.engine == NULL)
			rc = -ECONNREFUSED;
		else
			rc = tg_bill_cancel(&b, id, refund, stdout);
		if (rc == -ECONNREFUSED)
			snprintf(b.err, sizeof(b.err),
			         "tollgated at %s:%d does not answer: nothing was cancelled", host,
			         port);
	} else if (strcmp(cmd, "invoice") == 0) {
		rc = tg_bill_invoice_print(&b, (int64_t)id, stdout);
	} else {
		rc = tg_bill_invoices_print(&b, id, stdout);
	}
	if (rc != 0)
		fprintf(stderr, "tollctl: %s\n", b.err);
	tg_bill_close(&b);
	return rc == 0                                              ? C_OK
	       : rc == -EIO || rc == -ECONNREFUSED || rc == -ENOMEM ? C_CONNECT
	                                                            : C_REFUSED;
}
