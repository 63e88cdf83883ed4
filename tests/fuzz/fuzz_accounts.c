/*
 * fuzz_accounts.c - fuzz target for the accounts CSV loader (accounts.c,
 * csv.c; format in docs/ACCOUNTS.md).
 *
 * The input is the content of an accounts file, read through
 * tg_accounts_read from a memfd.  Beyond not crashing or leaking: a refused
 * file reports at least one problem and hands back nothing; an accepted one
 * gives rows in file order, no account twice, every field within its
 * documented domain; and those rows written back out as a CSV file read
 * back to exactly the same rows (written in the newest version: an older
 * file's rows read back the same with its new columns at their defaults).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "tg_accounts.h"

/* The echo is written in the newest version, with every column. */
#define HEADER                                                                                     \
	"account,balance,plan,state,threshold,refill,refill_amount,payment,kind,credit_limit,"     \
	"maxcalls,call_cap,daily_cap,low\n"

static struct fuzz_memfd input, echo;
static int devnull = -1;

static const char *const states[] = {"active", "suspended", "closed"};
static const char *const refills[] = {"off", "add", "topup"};

static bool
plan_name_ok(const char *p)
{
	size_t n = strnlen(p, TG_PLAN_NAME_MAX + 1);

	if (n < 1 || n > TG_PLAN_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
		      (p[i] >= '0' && p[i] <= '9') || p[i] == '_' || p[i] == '.' || p[i] == '-'))
			return false;
	return true;
}

static int
by_id(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void
check_rows(const struct tg_account_row *rows, size_t n, size_t lines)
{
	uint64_t *ids = malloc((n ? n : 1) * sizeof(*ids));

	FUZZ_CHECK(ids != NULL && n <= lines);
	for (size_t i = 0; i < n; i++) {
		const struct tg_account_row *r = &rows[i];
		FUZZ_CHECK(i == 0 || r->line > rows[i - 1].line);
		FUZZ_CHECK(r->line >= 2 && r->line <= lines); /* the header comes first */
		FUZZ_CHECK(r->id != UINT64_MAX);
		FUZZ_CHECK(plan_name_ok(r->plan));
		FUZZ_CHECK(r->s.state <= TG_STATE_CLOSED && r->s.refill_mode <= TG_REFILL_TOPUP);
		FUZZ_CHECK((r->s.flags & ~(TG_ACCT_PAYMENT | TG_ACCT_POSTPAID)) == 0);
		if (r->s.flags & TG_ACCT_POSTPAID)
			FUZZ_CHECK(r->s.threshold == 0 && r->s.credit_limit >= 0);
		else
			FUZZ_CHECK(r->s.credit_limit == 0);
		FUZZ_CHECK(r->limits.max_calls <= TG_MAXCALLS_MAX && r->limits.call_cap >= 0);
		FUZZ_CHECK(r->limits.daily_cap >= 0 && r->limits.daily_cap <= TG_DAY_USED_MAX);
		FUZZ_CHECK(r->limits.low >= 0);
		if (!r->limits_given)
			FUZZ_CHECK(r->limits.max_calls == 0 && r->limits.call_cap == 0 &&
			           r->limits.daily_cap == 0 && r->limits.low == 0);
		if (r->s.refill_mode != TG_REFILL_OFF)
			FUZZ_CHECK((r->s.flags & TG_ACCT_PAYMENT) && r->s.refill_amount > 0);
		ids[i] = r->id;
	}
	qsort(ids, n, sizeof(*ids), by_id);
	for (size_t i = 1; i < n; i++)
		FUZZ_CHECK(ids[i] != ids[i - 1]);
	free(ids);
}

/* The rows as an accounts file, in the canonical spelling of every field. */
static char *
write_csv(const struct tg_account_row *rows, size_t n, size_t *len)
{
	size_t cap = sizeof(HEADER) + n * (40 + 7 * TG_MONEY_STR_MAX + TG_PLAN_NAME_MAX + 60);
	char *buf = malloc(cap), bal[TG_MONEY_STR_MAX], thr[TG_MONEY_STR_MAX],
	     amt[TG_MONEY_STR_MAX], lim[TG_MONEY_STR_MAX], ccap[TG_MONEY_STR_MAX],
	     dcap[TG_MONEY_STR_MAX], low[TG_MONEY_STR_MAX];
	size_t off = 0;

	FUZZ_CHECK(buf != NULL);
	off += (size_t)snprintf(buf, cap, "%s", HEADER);
	for (size_t i = 0; i < n; i++) {
		const struct tg_account_row *r = &rows[i];
		tg_money_format(r->balance, bal);
		tg_money_format(r->s.threshold, thr);
		tg_money_format(r->s.refill_amount, amt);
		tg_money_format(r->s.credit_limit, lim);
		tg_money_format(r->limits.call_cap, ccap);
		tg_money_format(r->limits.daily_cap, dcap);
		tg_money_format(r->limits.low, low);
		off += (size_t)snprintf(
		    buf + off, cap - off, "%llu,%s,%s,%s,%s,%s,%s,%s,%s,%s,%u,%s,%s,%s\n",
		    (unsigned long long)r->id, bal, r->plan, states[r->s.state], thr,
		    refills[r->s.refill_mode], amt, (r->s.flags & TG_ACCT_PAYMENT) ? "on" : "off",
		    (r->s.flags & TG_ACCT_POSTPAID) ? "postpaid" : "prepaid", lim,
		    r->limits.max_calls, ccap, dcap, low);
		FUZZ_CHECK(off < cap);
	}
	*len = off;
	return buf;
}

static void
check_echo(const struct tg_account_row *rows, size_t n)
{
	struct tg_account_row *back = NULL;
	struct tg_diag diag;
	size_t len, nb = 0;
	char *csv = write_csv(rows, n, &len);

	tg_diag_init(&diag);
	FUZZ_CHECK(tg_accounts_read(fuzz_memfd_put(&echo, "accounts-echo", csv, len), &diag, &back,
	                            &nb) == 0);
	FUZZ_CHECK(nb == n && diag.count == 0);
	for (size_t i = 0; i < n; i++) {
		const struct tg_account_row *a = &rows[i], *b = &back[i];
		FUZZ_CHECK(a->id == b->id && a->balance == b->balance);
		FUZZ_CHECK(strcmp(a->plan, b->plan) == 0);
		FUZZ_CHECK(a->s.state == b->s.state && a->s.refill_mode == b->s.refill_mode);
		FUZZ_CHECK(a->s.flags == b->s.flags && a->s.threshold == b->s.threshold);
		FUZZ_CHECK(a->s.refill_amount == b->s.refill_amount);
		FUZZ_CHECK(a->s.credit_limit == b->s.credit_limit);
		FUZZ_CHECK(memcmp(&a->limits, &b->limits, sizeof(a->limits)) == 0);
	}
	free(back);
	free(csv);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tg_account_row *rows = (struct tg_account_row *)1;
	struct tg_diag diag;
	size_t n = 42, lines = 1;
	int rc;

	if (devnull < 0)
		devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	tg_diag_init(&diag);
	rc = tg_accounts_read(fuzz_memfd_put(&input, "accounts", data, size), &diag, &rows, &n);
	tg_diag_print(&diag, devnull);
	if (rc != 0) {
		fuzz_note("accounts: refused (%d), %u problems, first: line %u: %s", rc, diag.count,
		          diag.msg[0].line, diag.msg[0].reason);
		FUZZ_CHECK(rc < 0 && rows == NULL && n == 0 && diag.count > 0);
		return 0;
	}
	fuzz_note("accounts: %zu rows", n);
	FUZZ_CHECK(diag.count == 0);
	check_rows(rows, n, lines);
	check_echo(rows, n);
	free(rows);
	return 0;
}
