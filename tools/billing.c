/*
 * billing.c - postpaid billing on the ledger (billing.h, docs/BILLING.md).
 *
 * Owns the bill_* tables.  Reads the ledger's accounts and calls; never
 * writes them.  Each step follows one pattern: decide and record in one
 * transaction, then make the outside effect under an id its receiver
 * de-duplicates, then record that it was made.  A crash anywhere leaves
 * either the decision unrecorded (the rerun decides again, identically) or
 * the effect pending (the rerun makes it again under the same id: the
 * gateway answers with the first outcome, the engine's ACCT.CREDIT replays
 * its first reply, the maildir refuses a second copy).
 *
 * Money is micro-units (tg_money_t) as everywhere; every invoice figure is
 * a whole number of the currency's minor unit.  Time is microseconds since
 * the epoch, UTC, from b->clock only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "billing.h"
#include "ledger.h"
#include "tg_assert.h"
#include "tg_names.h"
#include "tg_refill_wire.h"

#define DAY_US   (86400LL * 1000000)
#define TEXT_MAX 512
/* Bytes of a request id, refund id or txid we make ("bill:<n>:<k>"). */
#define ID_MAX 96
/* Months a subscription is billed for at most in one invoice (catching up). */
#define CATCHUP_MAX 120

/* ---- errors, params, rows ---- */

__attribute__((format(printf, 3, 4))) static int
fail(struct tg_bill *b, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(b->err, sizeof(b->err), fmt, ap);
	va_end(ap);
	return rc;
}

__attribute__((format(printf, 2, 3))) static void
note(struct tg_bill *b, const char *fmt, ...)
{
	va_list ap;

	if (b->log == NULL)
		return;
	va_start(ap, fmt);
	vfprintf(b->log, fmt, ap);
	va_end(ap);
	fputc('\n', b->log);
}

static int64_t
now_us(struct tg_bill *b)
{
	return b->clock(b->clock_arg);
}

/* Text parameters of one statement. */
struct par {
	char buf[LDB_PARAMS_MAX][32];
	const char *v[LDB_PARAMS_MAX];
	unsigned n;
};

static struct par *
pi(struct par *p, int64_t v)
{
	TG_ASSERT(p->n < LDB_PARAMS_MAX);
	snprintf(p->buf[p->n], sizeof(p->buf[0]), "%" PRId64, v);
	p->v[p->n] = p->buf[p->n];
	p->n++;
	return p;
}

static struct par *
ps(struct par *p, const char *s)
{
	TG_ASSERT(p->n < LDB_PARAMS_MAX);
	p->v[p->n++] = s;
	return p;
}

/* A query's rows, copied: v[r * nc + c], NULL for SQL NULL. */
struct rows {
	unsigned n, nc, cap;
	char **v;
	bool oom;
};

static int
rows_add(void *arg, unsigned nc, const char *const *vals)
{
	struct rows *r = arg;

	if (r->nc == 0)
		r->nc = nc;
	if (r->n == r->cap) {
		unsigned cap = r->cap ? r->cap * 2 : 16;
		char **v = realloc(r->v, sizeof(char *) * cap * r->nc);
		if (v == NULL) {
			r->oom = true;
			return 1;
		}
		r->v = v;
		r->cap = cap;
	}
	for (unsigned c = 0; c < r->nc; c++) {
		r->v[r->n * r->nc + c] = vals[c] ? strdup(vals[c]) : NULL;
		if (vals[c] && r->v[r->n * r->nc + c] == NULL)
			r->oom = true;
	}
	r->n++;
	return r->oom;
}

static void
rows_free(struct rows *r)
{
	for (unsigned i = 0; i < r->n * r->nc; i++)
		free(r->v[i]);
	free(r->v);
	memset(r, 0, sizeof(*r));
}

static const char *
cell(const struct rows *r, unsigned row, unsigned col)
{
	TG_ASSERT(row < r->n && col < r->nc);
	return r->v[row * r->nc + col];
}

static int64_t
cell_i64(const struct rows *r, unsigned row, unsigned col)
{
	const char *s = cell(r, row, col);
	return s ? strtoll(s, NULL, 10) : 0;
}

/* Rows of sql into *r (freed first by the caller's rows_free).  0 or -EIO. */
static int
q(struct tg_bill *b, const char *sql, const struct par *p, struct rows *r)
{
	memset(r, 0, sizeof(*r));
	if (ldb_query(b->db, sql, p ? p->n : 0, p ? p->v : NULL, rows_add, r) < 0) {
		rows_free(r);
		return fail(b, -EIO, "database: %s", ldb_err(b->db));
	}
	if (r->oom) {
		rows_free(r);
		return fail(b, -EIO, "out of memory reading the database");
	}
	return 0;
}

/* A statement with no rows.  0 or -EIO. */
static int
x(struct tg_bill *b, const char *sql, const struct par *p)
{
	if (ldb_query(b->db, sql, p ? p->n : 0, p ? p->v : NULL, NULL, NULL) < 0)
		return fail(b, -EIO, "database: %s", ldb_err(b->db));
	return 0;
}

/* First column of the first row: 1 found, 0 none, -EIO. */
static int
one(struct tg_bill *b, const char *sql, const struct par *p, int64_t *out)
{
	*out = 0;
	int rc = ldb_query_i64(b->db, sql, p ? p->n : 0, p ? p->v : NULL, out);
	return rc < 0 ? fail(b, -EIO, "database: %s", ldb_err(b->db)) : rc;
}

static int
begin(struct tg_bill *b)
{
	return ldb_exec(b->db, "BEGIN") == 0 ? 0 : fail(b, -EIO, "database: %s", ldb_err(b->db));
}

static int
commit(struct tg_bill *b)
{
	if (ldb_exec(b->db, "COMMIT") == 0)
		return 0;
	fail(b, -EIO, "database: %s", ldb_err(b->db));
	ldb_exec(b->db, "ROLLBACK");
	return -EIO;
}

/* Roll back after rc (kept, with its sentence). */
static int
rollback(struct tg_bill *b, int rc)
{
	ldb_exec(b->db, "ROLLBACK");
	return rc;
}

/* ---- money, days, months ---- */

static tg_money_t
unit(void)
{
	return tg_currency_unit(tg_currency());
}

/* v to a whole minor unit, half up (v >= 0). */
static tg_money_t
round_unit(tg_money_t v)
{
	tg_money_t u = unit();
	return (v + u / 2) / u * u;
}

/* "$12.34", "-$1.50". */
static void
show(tg_money_t v, char out[TG_MONEY_STR_MAX + 16])
{
	char *p = out;
	if (v < 0)
		*p++ = '-';
	tg_currency_format(tg_currency(), v < 0 ? -v : v, p);
}

static int64_t
month_us(int y, int m)
{
	struct tm t = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = 1};
	return (int64_t)timegm(&t) * 1000000;
}

static void
next_month(int *y, int *m)
{
	if (++*m > 12) {
		*m = 1;
		++*y;
	}
}

static void
prev_month(int *y, int *m)
{
	if (--*m < 1) {
		*m = 12;
		--*y;
	}
}

static unsigned
days_in(int y, int m)
{
	int ny = y, nm = m;
	next_month(&ny, &nm);
	return (unsigned)((month_us(ny, nm) - month_us(y, m)) / DAY_US);
}

static void
ymd(int64_t us, int *y, int *m, int *d)
{
	time_t s = (time_t)(us / 1000000);
	struct tm t;
	gmtime_r(&s, &t);
	*y = t.tm_year + 1900;
	*m = t.tm_mon + 1;
	*d = t.tm_mday;
}

static void
day_text(int64_t us, char out[16])
{
	int y, m, d;
	ymd(us, &y, &m, &d);
	snprintf(out, 16, "%04u-%02u-%02u", (unsigned)y % 10000, (unsigned)m % 100,
	         (unsigned)d % 100);
}

static const char *const month_names[] = {"January",   "February", "March",    "April",
                                          "May",       "June",     "July",     "August",
                                          "September", "October",  "November", "December"};

int
tg_bill_month_parse(const char *s, int *year, int *month)
{
	int y, m;
	char extra;
	if (strlen(s) != 7 || s[4] != '-' || sscanf(s, "%4d-%2d%c", &y, &m, &extra) != 2 ||
	    y < 1970 || y > 9999 || m < 1 || m > 12)
		return -EINVAL;
	*year = y;
	*month = m;
	return 0;
}

int
tg_bill_day_parse(const char *s, int64_t *us)
{
	int y, m, d;
	char extra;
	if (strlen(s) != 10 || s[4] != '-' || s[7] != '-' ||
	    sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &extra) != 3 || y < 1970 || y > 9999 || m < 1 ||
	    m > 12 || d < 1 || (unsigned)d > days_in(y, m))
		return -EINVAL;
	*us = month_us(y, m) + (int64_t)(d - 1) * DAY_US;
	return 0;
}

int
tg_bill_percent_parse(const char *s, unsigned *bp)
{
	unsigned whole = 0, frac = 0, fd = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++)
		if ((whole = whole * 10 + (unsigned)(*p - '0')) > 100)
			return -EINVAL;
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9'; p++, fd++) {
			if (fd >= 2)
				return -EINVAL;
			frac = frac * 10 + (unsigned)(*p - '0');
		}
	}
	if (*p != '\0')
		return -EINVAL;
	if (fd == 1)
		frac *= 10;
	unsigned v = whole * 100 + frac;
	if (v > 150)
		return -EINVAL;
	*bp = v;
	return 0;
}

tg_money_t
tg_bill_prorate(tg_money_t price, unsigned day, unsigned dim, tg_money_t u)
{
	TG_ASSERT(day >= 1 && day <= dim && price >= 0 && u > 0);
	/* In minor units: (cents * days * 2 + dim) / (2 * dim) is cents * days / dim half up. */
	int64_t cents = price / u, days = dim - day + 1;
	return (cents * days * 2 + dim) / (2 * (int64_t)dim) * u;
}

tg_money_t
tg_bill_fee(tg_money_t amount, unsigned bp, tg_money_t u)
{
	int64_t cents = amount / u;
	return (cents * bp * 2 + 10000) / 20000 * u;
}

void
tg_bill_policy_default(struct tg_bill_policy *p)
{
	*p = (struct tg_bill_policy){.retry_days = {3, 7, 14},
	                             .nretry = 3,
	                             .interrupt_after = 15,
	                             .suspend_after = 30,
	                             .close_after = 60,
	                             .guarantee_days = 30};
}

int
tg_bill_policy_retries(struct tg_bill_policy *p, const char *s, char *err, size_t errlen)
{
	unsigned n = 0;
	const char *c = s;

	while (*c != '\0') {
		char *end;
		unsigned long v = strtoul(c, &end, 10);
		if (end == c || v == 0 || v > 365 || n == TG_BILL_RETRIES_MAX ||
		    (n > 0 && v <= p->retry_days[n - 1]) || (*end != ',' && *end != '\0')) {
			snprintf(
			    err, errlen,
			    "retry days '%s': expected increasing days 1 to 365, comma-separated, "
			    "at most %d",
			    s, TG_BILL_RETRIES_MAX);
			return -EINVAL;
		}
		p->retry_days[n++] = (unsigned)v;
		c = *end == ',' ? end + 1 : end;
	}
	p->nretry = n;
	return 0;
}

int
tg_bill_policy_check(const struct tg_bill_policy *p, char *err, size_t errlen)
{
	unsigned last = p->nretry ? p->retry_days[p->nretry - 1] : 0;
	if (p->interrupt_after <= last || p->suspend_after < p->interrupt_after ||
	    p->close_after < p->suspend_after || p->close_after > 3650 || p->guarantee_days > 365) {
		snprintf(
		    err, errlen,
		    "collections days: the last retry (day %u) < interrupt (%u) <= suspend (%u) "
		    "<= close (%u) <= 3650, guarantee <= 365 days",
		    last, p->interrupt_after, p->suspend_after, p->close_after);
		return -EINVAL;
	}
	return 0;
}

/* ---- outside: the customer profile, the engine ---- */

struct profile {
	char email[TG_MAIL_ADDR_MAX + 1];
	char name[TG_MAIL_NAME_MAX + 1];
	char method[16];
	char token[256];
};

/* The refill profile of acct (docs/REFILL.md).  true when it has a usable email. */
static bool
profile_get(struct tg_bill *b, uint64_t acct, struct profile *pr)
{
	char key[64];

	memset(pr, 0, sizeof(*pr));
	if (b->redis == NULL || b->redis->err)
		return false;
	snprintf(key, sizeof(key), TG_PROFILE_PREFIX "%" PRIu64, acct);
	redisReply *r = redisCommand(b->redis, "HGETALL %s", key);
	if (r == NULL)
		return false;
	if (r->type == REDIS_REPLY_ARRAY)
		for (size_t i = 0; i + 1 < r->elements; i += 2) {
			const char *f = r->element[i]->str, *v = r->element[i + 1]->str;
			if (f == NULL || v == NULL)
				continue;
			switch (tg_profile_field_parse(f, strlen(f))) {
			case TG_PF_EMAIL:
				snprintf(pr->email, sizeof(pr->email), "%s", v);
				break;
			case TG_PF_NAME:
				snprintf(pr->name, sizeof(pr->name), "%s", v);
				break;
			case TG_PF_METHOD:
				snprintf(pr->method, sizeof(pr->method), "%s", v);
				break;
			case TG_PF_TOKEN:
				snprintf(pr->token, sizeof(pr->token), "%s", v);
				break;
			default:
				break;
			}
		}
	freeReplyObject(r);
	if (tg_pay_method_parse(pr->method) < 0)
		pr->method[0] = pr->token[0] = '\0';
	if (pr->token[0] == '\0')
		pr->method[0] = '\0';
	return pr->email[0] != '\0' && tg_mail_address_ok(pr->email);
}

/* One command to tollgated: 0 (reply in *out if out, else freed), or -EIO with the reason. */
static int
engine(struct tg_bill *b, redisReply **out, int argc, const char **argv)
{
	if (out)
		*out = NULL;
	if (b->engine == NULL || b->engine->err)
		return fail(b, -EIO, "tollgated is not connected");
	redisReply *r = redisCommandArgv(b->engine, argc, argv, NULL);
	if (r == NULL)
		return fail(b, -EIO, "tollgated: %s", b->engine->errstr);
	if (r->type == REDIS_REPLY_ERROR) {
		fail(b, -EIO, "tollgated answered %s %s: %s", argv[0], argv[1], r->str);
		freeReplyObject(r);
		return -EIO;
	}
	if (out)
		*out = r;
	else
		freeReplyObject(r);
	return 0;
}

/* ---- set-up ---- */

static bool
word_ok(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < ' ' || *p == 0x7f)
			return false;
	return true;
}

int
tg_bill_product_set(struct tg_bill *b, const char *product, tg_money_t price)
{
	struct par p = {0};
	if (!word_ok(product, 64))
		return fail(b, -EINVAL, "product name: 1 to 64 printable characters");
	if (price < 0 || price % unit() != 0)
		return fail(b, -EINVAL,
		            "a product's monthly price is a whole number of cents, >= 0");
	ps(&p, product);
	pi(&p, price);
	int rc = x(b,
	           "INSERT INTO bill_products (product, price) VALUES ($1, $2)"
	           " ON CONFLICT (product) DO UPDATE SET price = excluded.price",
	           &p);
	return rc;
}

int
tg_bill_customer_set(struct tg_bill *b, uint64_t acct, const char *region, int64_t signup_us)
{
	struct par p = {0};
	if (!word_ok(region, 32) || strcmp(region, "*") == 0)
		return fail(b, -EINVAL, "region: 1 to 32 printable characters, not '*'");
	pi(&p, (int64_t)acct);
	ps(&p, region);
	pi(&p, signup_us);
	return x(b,
	         "INSERT INTO bill_customers (acct, region, signup_us) VALUES ($1, $2, $3)"
	         " ON CONFLICT (acct) DO UPDATE SET region = excluded.region,"
	         " signup_us = excluded.signup_us",
	         &p);
}

static int
customer_known(struct tg_bill *b, uint64_t acct)
{
	struct par p = {0};
	int64_t v;
	pi(&p, (int64_t)acct);
	int rc = one(b, "SELECT count(*) FROM bill_customers WHERE acct = $1", &p, &v);
	if (rc < 0)
		return rc;
	return v > 0 ? 0
	             : fail(b, -ENOENT,
	                    "account %" PRIu64 " has no billing record (tollbill customer %" PRIu64
	                    " --region R --signup YYYY-MM-DD)",
	                    acct, acct);
}

int
tg_bill_subscribe(struct tg_bill *b, uint64_t acct, const char *product, int64_t start_us)
{
	struct par p = {0};
	int64_t v, id;
	int rc = customer_known(b, acct);
	if (rc < 0)
		return rc;
	if (start_us % DAY_US != 0)
		return fail(b, -EINVAL, "a subscription starts at 00:00 UTC of a day");
	ps(&p, product);
	if ((rc = one(b, "SELECT count(*) FROM bill_products WHERE product = $1", &p, &v)) < 0)
		return rc;
	if (v == 0)
		return fail(b, -ENOENT, "no product '%s' (tollbill product NAME PRICE)", product);
	if ((rc = begin(b)) < 0)
		return rc;
	if ((rc = one(b, "SELECT COALESCE(MAX(id), 0) + 1 FROM bill_subscriptions", NULL, &id)) < 0)
		return rollback(b, rc);
	char day[16];
	day_text(start_us, day);
	p = (struct par){0};
	pi(&p, id);
	pi(&p, (int64_t)acct);
	ps(&p, product);
	ps(&p, day);
	if ((rc = x(b,
	            "INSERT INTO bill_subscriptions (id, acct, product, start_day)"
	            " VALUES ($1, $2, $3, $4)",
	            &p)) < 0)
		return rollback(b, rc);
	return commit(b);
}

int
tg_bill_late_fee_set(struct tg_bill *b, const char *region, unsigned bp)
{
	struct par p = {0};
	if (!word_ok(region, 32))
		return fail(b, -EINVAL, "region: 1 to 32 printable characters ('*': the default)");
	if (bp > 150)
		return fail(b, -EINVAL, "a late fee is at most 1.5%%");
	ps(&p, region);
	pi(&p, bp);
	return x(b,
	         "INSERT INTO bill_late_fees (region, rate_bp) VALUES ($1, $2)"
	         " ON CONFLICT (region) DO UPDATE SET rate_bp = excluded.rate_bp",
	         &p);
}

/* The late-fee rate of acct's region (its row, else '*', else 0). */
static int
late_rate(struct tg_bill *b, uint64_t acct, unsigned *bp)
{
	struct par p = {0};
	int64_t v;
	pi(&p, (int64_t)acct);
	int rc = one(b,
	             "SELECT rate_bp FROM bill_late_fees f JOIN bill_customers c"
	             " ON f.region = c.region WHERE c.acct = $1",
	             &p, &v);
	if (rc == 0)
		rc = one(b, "SELECT rate_bp FROM bill_late_fees WHERE region = '*'", NULL, &v);
	if (rc < 0)
		return rc;
	*bp = (unsigned)v;
	return 0;
}

/* Record that the notice step of (acct, invoice) is due: once (the key says so). */
static int
notice_due(struct tg_bill *b, uint64_t acct, int64_t invoice, const char *step)
{
	struct par p = {0};
	pi(&p, (int64_t)acct);
	pi(&p, invoice);
	ps(&p, step);
	pi(&p, now_us(b));
	return x(b,
	         "INSERT INTO bill_notices (acct, invoice, step, time_us) VALUES ($1, $2, $3, $4)"
	         " ON CONFLICT (acct, invoice, step) DO NOTHING",
	         &p);
}

/* ---- allocation of payments ---- */

/*
 * Apply what is left of payment pay (unapplied avail) to invoice inv of its
 * account (one row: number, total, paid, usage_total, usage_paid,
 * usage_micro, usage_credit), in the caller's transaction.  Usage is paid
 * first, then subscriptions, then fees.  The engine credit: the usage paid,
 * and when the usage is paid in full, exactly what the calls debited (the
 * micro-units the invoice rounded to cents).  *used: the amount applied.
 */
static int
allocate(struct tg_bill *b, int64_t pay, tg_money_t avail, const struct rows *inv, unsigned r,
         tg_money_t *used)
{
	int64_t number = cell_i64(inv, r, 0);
	tg_money_t total = cell_i64(inv, r, 1), paid = cell_i64(inv, r, 2);
	tg_money_t ut = cell_i64(inv, r, 3), up = cell_i64(inv, r, 4);
	tg_money_t um = cell_i64(inv, r, 5), uc = cell_i64(inv, r, 6);
	tg_money_t a = total - paid < avail ? total - paid : avail;
	tg_money_t ua = ut - up < a ? ut - up : a, credit = 0;
	struct par p = {0};
	int rc;

	*used = 0;
	if (a <= 0)
		return 0;
	if (ua > 0)
		credit = up + ua == ut ? um - uc : ua;
	if (credit < 0)
		credit = 0;
	pi(&p, pay);
	pi(&p, number);
	pi(&p, a);
	pi(&p, ua);
	pi(&p, credit);
	pi(&p, credit > 0 ? 0 : 1);
	if ((rc = x(b,
	            "INSERT INTO bill_allocations (payment, invoice, amount, usage_amount, credit,"
	            " credited) VALUES ($1, $2, $3, $4, $5, $6)",
	            &p)) < 0)
		return rc;
	p = (struct par){0};
	pi(&p, number);
	pi(&p, a);
	pi(&p, ua);
	pi(&p, credit);
	if ((rc = x(b,
	            "UPDATE bill_invoices SET paid = paid + $2, usage_paid = usage_paid + $3,"
	            " usage_credit = usage_credit + $4, next_attempt_us = CASE WHEN paid + $2 ="
	            " total THEN NULL ELSE next_attempt_us END, status = CASE WHEN paid + $2 ="
	            " total THEN 'paid' ELSE status END WHERE number = $1",
	            &p)) < 0)
		return rc;
	p = (struct par){0};
	pi(&p, pay);
	pi(&p, a);
	if ((rc = x(b, "UPDATE bill_payments SET unapplied = unapplied - $2 WHERE id = $1", &p)) <
	    0)
		return rc;
	*used = a;
	note(b, "payment %" PRId64 ": %" PRId64 " micro-units to invoice %" PRId64, pay, a, number);
	return 0;
}

static const char inv_cols[] = "SELECT number, total, paid, usage_total, usage_paid, usage_micro,"
                               " usage_credit FROM bill_invoices";

/*
 * Apply payment pay of acct (caller's transaction): to invoice first when it
 * is not 0 (a card or PayPal charge pays the invoice it was made for), then
 * to the account's oldest invoices with a balance due.
 */
static int
settle(struct tg_bill *b, int64_t pay, uint64_t acct, int64_t first)
{
	struct par p = {0};
	struct rows inv;
	int64_t avail;
	char sql[256];
	int rc;

	pi(&p, pay);
	if ((rc = one(b, "SELECT unapplied FROM bill_payments WHERE id = $1", &p, &avail)) < 0)
		return rc;
	rc = 0;
	for (int pass = first != 0 ? 0 : 1; pass < 2 && avail > 0 && rc == 0; pass++) {
		p = (struct par){0};
		pi(&p, pass == 0 ? first : (int64_t)acct);
		snprintf(sql, sizeof(sql), "%s WHERE %s = $1 AND paid < total ORDER BY number",
		         inv_cols, pass == 0 ? "number" : "acct");
		if ((rc = q(b, sql, &p, &inv)) < 0)
			return rc;
		for (unsigned r = 0; r < inv.n && avail > 0 && rc == 0; r++) {
			tg_money_t used;
			rc = allocate(b, pay, avail, &inv, r, &used);
			avail -= used;
		}
		rows_free(&inv);
	}
	return rc;
}

/* Insert a payment (caller's transaction); its id in *id. */
static int
payment_add(struct tg_bill *b, uint64_t acct, tg_money_t amount, const char *method,
            const char *ref, int64_t *id)
{
	struct par p = {0};
	int rc = one(b, "SELECT COALESCE(MAX(id), 0) + 1 FROM bill_payments", NULL, id);
	if (rc < 0)
		return rc;
	pi(&p, *id);
	pi(&p, (int64_t)acct);
	pi(&p, now_us(b));
	pi(&p, amount);
	ps(&p, method);
	ps(&p, ref);
	return x(b,
	         "INSERT INTO bill_payments (id, acct, time_us, amount, method, ref, unapplied)"
	         " VALUES ($1, $2, $3, $4, $5, $6, $4)",
	         &p);
}

/* ---- the invoice run ---- */

struct line {
	char kind[16];
	char category[32];
	char text[128];
	tg_money_t amount;
};

struct lines {
	struct line l[TG_MAIL_LINES_MAX];
	unsigned n;
	int64_t subs[TG_MAIL_LINES_MAX];
	char sub_month[TG_MAIL_LINES_MAX][8];
	unsigned nsubs;
	bool full;
};

static struct line *
line_add(struct lines *ls, const char *kind)
{
	if (ls->n == TG_MAIL_LINES_MAX) {
		ls->full = true;
		return NULL;
	}
	struct line *l = &ls->l[ls->n++];
	memset(l, 0, sizeof(*l));
	snprintf(l->kind, sizeof(l->kind), "%s", kind);
	return l;
}

/* The subscription lines of acct's invoice dated (y, m): every month not yet billed. */
static int
sub_lines(struct tg_bill *b, uint64_t acct, int y, int m, struct lines *ls)
{
	struct par p = {0};
	struct rows s;
	int64_t issue = month_us(y, m);
	int rc;

	pi(&p, (int64_t)acct);
	if ((rc =
	         q(b,
	           "SELECT s.id, s.product, p.price, s.start_day, s.end_day FROM bill_subscriptions"
	           " s JOIN bill_products p ON p.product = s.product WHERE s.acct = $1"
	           " ORDER BY s.id",
	           &p, &s)) < 0)
		return rc;
	for (unsigned r = 0; r < s.n && rc == 0; r++) {
		int64_t id = cell_i64(&s, r, 0), start, end = INT64_MAX;
		tg_money_t price = cell_i64(&s, r, 2);
		const char *prod = cell(&s, r, 1);
		if (tg_bill_day_parse(cell(&s, r, 3), &start) != 0 ||
		    (cell(&s, r, 4) && tg_bill_day_parse(cell(&s, r, 4), &end) != 0)) {
			rc = fail(b, -EIO, "subscription %" PRId64 ": a bad date in the database",
			          id);
			break;
		}
		if (start > issue)
			continue; /* not started by the invoice date: the next invoice bills it */
		int sy, sm, sd;
		ymd(start, &sy, &sm, &sd);
		for (unsigned k = 0; k < CATCHUP_MAX && (sy < y || (sy == y && sm <= m)) && rc == 0;
		     k++, sd = 1, next_month(&sy, &sm)) {
			char month[8];
			int64_t v;
			if (end <= month_us(sy, sm))
				break;
			snprintf(month, sizeof(month), "%04u-%02u", (unsigned)sy % 10000,
			         (unsigned)sm % 100);
			struct par pp = {0};
			pi(&pp, id);
			ps(&pp, month);
			if ((rc = one(b,
			              "SELECT count(*) FROM bill_sub_periods WHERE sub = $1 AND"
			              " month = $2",
			              &pp, &v)) < 0)
				continue;
			rc = 0;
			if (v > 0)
				continue;
			struct line *l = line_add(ls, "subscription");
			if (l == NULL || ls->nsubs == TG_MAIL_LINES_MAX) {
				ls->full = true;
				break;
			}
			unsigned dim = days_in(sy, sm);
			if (sd > 1) {
				l->amount = tg_bill_prorate(price, (unsigned)sd, dim, unit());
				snprintf(l->text, sizeof(l->text),
				         "%.40s, %04d-%02d-%02d to %04d-%02d-%02d (%u/%u days)",
				         prod, sy, sm, sd, sy, sm, dim, dim - (unsigned)sd + 1,
				         dim);
			} else {
				l->amount = price;
				snprintf(l->text, sizeof(l->text), "%.40s, %s %d", prod,
				         month_names[sm - 1], sy);
			}
			ls->subs[ls->nsubs] = id;
			memcpy(ls->sub_month[ls->nsubs++], month, sizeof(month));
		}
	}
	rows_free(&s);
	return rc;
}

/* The usage lines: the previous month's calls by category, each rounded to the cent. */
static int
usage_lines(struct tg_bill *b, uint64_t acct, int y, int m, struct lines *ls, tg_money_t *micro)
{
	struct par p = {0};
	struct rows u;
	int py = y, pm = m, rc;

	prev_month(&py, &pm);
	pi(&p, (int64_t)acct);
	pi(&p, month_us(py, pm));
	pi(&p, month_us(y, m));
	if ((rc = q(b,
	            "SELECT category, SUM(charge), COUNT(*) FROM calls WHERE acct = $1 AND"
	            " time_us >= $2 AND time_us < $3 GROUP BY category ORDER BY category",
	            &p, &u)) < 0)
		return rc;
	*micro = 0;
	for (unsigned r = 0; r < u.n; r++) {
		tg_money_t sum = cell_i64(&u, r, 1);
		if (sum <= 0)
			continue;
		struct line *l = line_add(ls, "usage");
		if (l == NULL)
			break;
		*micro += sum;
		l->amount = round_unit(sum);
		snprintf(l->category, sizeof(l->category), "%.31s", cell(&u, r, 0));
		snprintf(l->text, sizeof(l->text), "Usage: %.31s, %s %d (%s call%s)",
		         cell(&u, r, 0), month_names[pm - 1], py, cell(&u, r, 2),
		         strcmp(cell(&u, r, 2), "1") == 0 ? "" : "s");
	}
	rows_free(&u);
	return 0;
}

/* Issue acct's invoice for (y, m) unless it exists: one transaction. */
static int
issue(struct tg_bill *b, uint64_t acct, int y, int m, const char *standing,
      struct tg_bill_report *rep)
{
	struct lines ls = {0};
	struct par p = {0};
	struct rows fees = {0};
	char month[8];
	int64_t v, number;
	tg_money_t micro = 0, total = 0, usage = 0;
	int rc;

	snprintf(month, sizeof(month), "%04u-%02u", (unsigned)y % 10000, (unsigned)m % 100);
	if ((rc = begin(b)) < 0)
		return rc;
	pi(&p, (int64_t)acct);
	ps(&p, month);
	if ((rc = one(b, "SELECT count(*) FROM bill_invoices WHERE acct = $1 AND month = $2", &p,
	              &v)) < 0)
		return rollback(b, rc);
	if (v > 0)
		return rollback(b, 0);
	/* A closed account owes its last month's usage and fees, no more subscription. */
	if (strcmp(standing, "closed") != 0 && (rc = sub_lines(b, acct, y, m, &ls)) < 0)
		return rollback(b, rc);
	if ((rc = usage_lines(b, acct, y, m, &ls, &micro)) < 0)
		return rollback(b, rc);
	p = (struct par){0};
	pi(&p, (int64_t)acct);
	if ((rc = q(b,
	            "SELECT number, late_fee, late_fee_rate FROM bill_invoices WHERE acct = $1 AND"
	            " late_fee > 0 AND late_fee_billed IS NULL ORDER BY number",
	            &p, &fees)) < 0)
		return rollback(b, rc);
	for (unsigned r = 0; r < fees.n; r++) {
		struct line *l = line_add(&ls, "late_fee");
		if (l == NULL)
			break;
		int64_t bp = cell_i64(&fees, r, 2);
		l->amount = cell_i64(&fees, r, 1);
		snprintf(l->text, sizeof(l->text),
		         "Late fee on invoice %s (%" PRId64 ".%02" PRId64 "%%)", cell(&fees, r, 0),
		         bp / 100, bp % 100);
	}
	if (ls.full) {
		rows_free(&fees);
		return rollback(b, fail(b, -EIO,
		                        "account %" PRIu64 ": more than %d invoice lines for %s",
		                        acct, TG_MAIL_LINES_MAX, month));
	}
	if (ls.n == 0) {
		rows_free(&fees);
		return rollback(b, 0); /* nothing to bill */
	}
	for (unsigned i = 0; i < ls.n; i++) {
		total += ls.l[i].amount;
		if (strcmp(ls.l[i].kind, "usage") == 0)
			usage += ls.l[i].amount;
	}
	if ((rc = one(b, "SELECT COALESCE(MAX(number), 0) + 1 FROM bill_invoices", NULL, &number)) <
	    0)
		goto undo;
	p = (struct par){0};
	pi(&p, number);
	pi(&p, (int64_t)acct);
	ps(&p, month);
	pi(&p, month_us(y, m));
	pi(&p, total);
	pi(&p, usage);
	pi(&p, micro);
	ps(&p, total > 0 ? "open" : "paid");
	if ((rc = x(b,
	            "INSERT INTO bill_invoices (number, acct, month, issued_us, total, usage_total,"
	            " usage_micro, status, next_attempt_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
	            " $4)",
	            &p)) < 0)
		goto undo;
	for (unsigned i = 0; i < ls.n && rc == 0; i++) {
		p = (struct par){0};
		pi(&p, number);
		pi(&p, i + 1);
		ps(&p, ls.l[i].kind);
		ps(&p, ls.l[i].category[0] ? ls.l[i].category : NULL);
		ps(&p, ls.l[i].text);
		pi(&p, ls.l[i].amount);
		rc = x(b,
		       "INSERT INTO bill_lines (invoice, line, kind, category, description, amount)"
		       " VALUES ($1, $2, $3, $4, $5, $6)",
		       &p);
	}
	for (unsigned i = 0; i < ls.nsubs && rc == 0; i++) {
		p = (struct par){0};
		pi(&p, ls.subs[i]);
		ps(&p, ls.sub_month[i]);
		pi(&p, number);
		rc = x(b, "INSERT INTO bill_sub_periods (sub, month, invoice) VALUES ($1, $2, $3)",
		       &p);
	}
	for (unsigned r = 0; r < fees.n && rc == 0; r++) {
		p = (struct par){0};
		pi(&p, number);
		ps(&p, cell(&fees, r, 0));
		rc = x(b, "UPDATE bill_invoices SET late_fee_billed = $1 WHERE number = $2", &p);
	}
	/* Credit left over from earlier payments goes to the new invoice first. */
	if (rc == 0) {
		struct rows pays;
		p = (struct par){0};
		pi(&p, (int64_t)acct);
		rc = q(b,
		       "SELECT id FROM bill_payments WHERE acct = $1 AND unapplied > 0 ORDER BY id",
		       &p, &pays);
		for (unsigned r = 0; rc == 0 && r < pays.n; r++)
			rc = settle(b, cell_i64(&pays, r, 0), acct, 0);
		if (rc == 0)
			rows_free(&pays);
	}
	if (rc == 0) {
		p = (struct par){0};
		pi(&p, number);
		rc = one(b, "SELECT total - paid FROM bill_invoices WHERE number = $1", &p, &v);
		/* Nothing to charge: the invoice mail goes out now; else after the first attempt.
		 */
		if (rc >= 0 && v == 0)
			rc = notice_due(b, acct, number, "invoice");
	}
	if (rc < 0)
		goto undo;
	rows_free(&fees);
	if ((rc = commit(b)) < 0)
		return rc;
	note(b, "invoice %" PRId64 ": account %" PRIu64 ", %s, %u lines, total %" PRId64, number,
	     acct, month, ls.n, total);
	rep->invoices++;
	return 0;
undo:
	rows_free(&fees);
	return rollback(b, rc);
}

int
tg_bill_run(struct tg_bill *b, int year, int month, struct tg_bill_report *rep)
{
	struct rows a;
	int rc;

	TG_CHECK_OBJ_NOTNULL(b, TG_BILL_MAGIC);
	memset(rep, 0, sizeof(*rep));
	if (year < 1970 || year > 9999 || month < 1 || month > 12)
		return fail(b, -EINVAL, "malformed month");
	if (now_us(b) < month_us(year, month)) {
		char today[16];
		day_text(now_us(b), today);
		return fail(
		    b, -EINVAL,
		    "the invoice run of %04d-%02d is dated %04d-%02d-01; today is %s: not yet",
		    year, month, year, month, today);
	}
	if ((rc = q(b,
	            "SELECT a.acct, c.standing FROM accounts a LEFT JOIN bill_customers c ON"
	            " c.acct = a.acct WHERE a.kind = 'postpaid' ORDER BY a.acct",
	            NULL, &a)) < 0)
		return rc;
	for (unsigned r = 0; r < a.n; r++) {
		uint64_t acct = (uint64_t)cell_i64(&a, r, 0);
		if (cell(&a, r, 1) == NULL) {
			note(b,
			     "account %" PRIu64
			     " is postpaid but has no billing record: not invoiced",
			     acct);
			rep->skipped++;
			continue;
		}
		if ((rc = issue(b, acct, year, month, cell(&a, r, 1), rep)) < 0)
			break;
	}
	rows_free(&a);
	if (rc < 0)
		return rc;
	struct tg_bill_report c;
	rc = tg_bill_collect(b, &c);
	rep->charged += c.charged;
	rep->failed += c.failed;
	rep->mails += c.mails;
	rep->late_fees += c.late_fees;
	rep->transitions += c.transitions;
	rep->credits += c.credits;
	rep->pending += c.pending;
	return rc;
}

/* ---- collections ---- */

/*
 * One charge attempt of invoice row r (number, acct, total - paid, attempts,
 * issued_us).  The attempt's request id is recorded before the gateway sees
 * it; a pending one (a crash, a timeout) is sent again under the same id.
 */
static int
attempt(struct tg_bill *b, const struct rows *inv, unsigned r, struct tg_bill_report *rep)
{
	int64_t number = cell_i64(inv, r, 0), issued = cell_i64(inv, r, 4);
	uint64_t acct = (uint64_t)cell_i64(inv, r, 1);
	int k = (int)cell_i64(inv, r, 3) + 1;
	tg_money_t due = cell_i64(inv, r, 2);
	char id[ID_MAX], ref[TG_GATEWAY_REF_MAX];
	struct profile pr;
	struct par p = {0};
	struct rows at;
	int rc;

	snprintf(id, sizeof(id), "bill:%" PRId64 ":%d", number, k);
	ps(&p, id);
	if ((rc = q(b, "SELECT amount, outcome FROM bill_attempts WHERE request_id = $1", &p,
	            &at)) < 0)
		return rc;
	if (at.n > 0)
		due = cell_i64(&at, 0, 0); /* the amount first asked for under this id */
	rows_free(&at);
	profile_get(b, acct, &pr);
	if (pr.method[0] != '\0' && b->gw == NULL) {
		rep->pending++;
		return 0;
	}
	p = (struct par){0};
	ps(&p, id);
	pi(&p, number);
	pi(&p, k);
	pi(&p, now_us(b));
	ps(&p, pr.method[0] ? pr.method : NULL);
	pi(&p, due);
	if ((rc = x(b,
	            "INSERT INTO bill_attempts (request_id, invoice, attempt, time_us, method,"
	            " amount, outcome) VALUES ($1, $2, $3, $4, $5, $6, 'pending')"
	            " ON CONFLICT (request_id) DO NOTHING",
	            &p)) < 0)
		return rc;

	enum tg_charge_outcome oc = TG_CHARGE_DECLINED;
	const char *word = "no-payment-method";
	ref[0] = '\0';
	if (pr.method[0] != '\0') {
		oc = tg_gateway_charge(b->gw, id, pr.method, pr.token, due, ref);
		word = tg_charge_outcome_name(oc);
	}
	note(b, "invoice %" PRId64 ": attempt %d (%s) of %" PRId64 ": %s", number, k, id, due,
	     word);
	if (oc == TG_CHARGE_TIMEOUT || oc == TG_CHARGE_ERROR) {
		rep->pending++; /* not the customer's failure: same id at the next pass */
		return 0;
	}
	if ((rc = begin(b)) < 0)
		return rc;
	p = (struct par){0};
	ps(&p, id);
	ps(&p, word);
	ps(&p, ref[0] ? ref : NULL);
	if ((rc =
	         x(b, "UPDATE bill_attempts SET outcome = $2, reference = $3 WHERE request_id = $1",
	           &p)) < 0)
		return rollback(b, rc);
	p = (struct par){0};
	pi(&p, number);
	pi(&p, k);
	if ((rc = x(b, "UPDATE bill_invoices SET attempts = $2 WHERE number = $1", &p)) < 0)
		return rollback(b, rc);
	if (oc == TG_CHARGE_APPROVED) {
		int64_t pay;
		if ((rc = payment_add(b, acct, due, pr.method, id, &pay)) < 0 ||
		    (rc = settle(b, pay, acct, number)) < 0)
			return rollback(b, rc);
		rep->charged++;
	} else {
		rep->failed++;
		p = (struct par){0};
		pi(&p, number);
		if ((unsigned)k <= b->pol.nretry) {
			pi(&p, issued + (int64_t)b->pol.retry_days[k - 1] * DAY_US);
			rc = x(b, "UPDATE bill_invoices SET next_attempt_us = $2 WHERE number = $1",
			       &p);
		} else {
			/* The last attempt failed: late, with the fee of the region, once. */
			struct rows f;
			unsigned bp;
			if ((rc = late_rate(b, acct, &bp)) < 0 ||
			    (rc = q(b,
			            "SELECT i.total - i.paid, COALESCE((SELECT SUM(amount) FROM "
			            "bill_lines"
			            " WHERE invoice = i.number AND kind = 'late_fee'), 0) FROM"
			            " bill_invoices i WHERE number = $1",
			            &p, &f)) < 0)
				return rollback(b, rc);
			tg_money_t owed = cell_i64(&f, 0, 0), fees = cell_i64(&f, 0, 1);
			rows_free(&f);
			/* Never compounded: the fees an invoice carries are not part of the base.
			 */
			tg_money_t base = owed - (fees < owed ? fees : owed);
			tg_money_t fee = tg_bill_fee(base, bp, unit());
			pi(&p, now_us(b));
			pi(&p, fee);
			pi(&p, bp);
			rc = x(b,
			       "UPDATE bill_invoices SET status = 'late', next_attempt_us = NULL,"
			       " late_us = $2, late_fee = $3, late_fee_rate = $4 WHERE number = $1",
			       &p);
			if (rc == 0)
				rc = notice_due(b, acct, number, "late");
			rep->late_fees += fee > 0;
		}
		if (rc < 0)
			return rollback(b, rc);
	}
	if (k == 1 && (rc = notice_due(b, acct, number, "invoice")) < 0)
		return rollback(b, rc);
	return commit(b);
}

static int
attempts(struct tg_bill *b, uint64_t only, struct tg_bill_report *rep)
{
	struct par p = {0};
	struct rows inv;
	int rc;

	pi(&p, now_us(b));
	pi(&p, (int64_t)only);
	if ((rc = q(b,
	            "SELECT number, acct, total - paid, attempts, issued_us FROM bill_invoices"
	            " WHERE status = 'open' AND paid < total AND next_attempt_us IS NOT NULL AND"
	            " next_attempt_us <= $1 AND (CAST($2 AS BIGINT) = 0 OR acct = CAST($2 AS "
	            "BIGINT)) ORDER BY number",
	            &p, &inv)) < 0)
		return rc;
	for (unsigned r = 0; r < inv.n && rc == 0; r++)
		rc = attempt(b, &inv, r, rep);
	rows_free(&inv);
	return rc;
}

static int
rank(const char *standing)
{
	static const char *const order[] = {"good", "interrupted", "suspended", "closed"};
	for (int i = 0; i < 4; i++)
		if (strcmp(standing, order[i]) == 0)
			return i;
	return 0;
}

static const char *
engine_state_of(const char *standing)
{
	return strcmp(standing, "closed") == 0 ? tg_acct_state_name(TG_STATE_CLOSED)
	       : strcmp(standing, "good") == 0 ? tg_acct_state_name(TG_STATE_ACTIVE)
	                                       : tg_acct_state_name(TG_STATE_SUSPENDED);
}

/* Set acct's standing (and its engine state, pending) in one transaction; notice due. */
static int
standing_set(struct tg_bill *b, uint64_t acct, const char *standing, int64_t invoice,
             const char *step)
{
	struct par p = {0};
	int rc;

	if ((rc = begin(b)) < 0)
		return rc;
	pi(&p, (int64_t)acct);
	ps(&p, standing);
	pi(&p, invoice);
	pi(&p, now_us(b));
	ps(&p, engine_state_of(standing));
	if ((rc = x(b,
	            "UPDATE bill_customers SET standing = $2, standing_invoice = $3,"
	            " standing_us = $4, engine_state = $5, engine_done = 0 WHERE acct = $1",
	            &p)) < 0)
		return rollback(b, rc);
	if (strcmp(standing, "closed") == 0) {
		char today[16];
		day_text(now_us(b), today);
		p = (struct par){0};
		pi(&p, (int64_t)acct);
		ps(&p, today);
		struct par p1 = {0};
		pi(&p1, (int64_t)acct);
		if ((rc =
		         x(b,
		           "UPDATE bill_invoices SET status = 'written off', next_attempt_us = NULL"
		           " WHERE acct = $1 AND paid < total",
		           &p1)) < 0 ||
		    (rc = x(b,
		            "UPDATE bill_subscriptions SET end_day = $2 WHERE acct = $1 AND"
		            " (end_day IS NULL OR end_day > $2)",
		            &p)) < 0)
			return rollback(b, rc);
	}
	if (step != NULL && (rc = notice_due(b, acct, invoice, step)) < 0)
		return rollback(b, rc);
	note(b, "account %" PRIu64 ": %s (invoice %" PRId64 ")", acct, standing, invoice);
	return commit(b);
}

/* Every customer's standing from its oldest late invoice; engine states applied. */
static int
standings(struct tg_bill *b, uint64_t only, struct tg_bill_report *rep)
{
	static const char *const order[] = {"good", "interrupted", "suspended", "closed"};
	struct par p = {0};
	struct rows c;
	int rc;

	pi(&p, (int64_t)only);
	if ((rc = q(b,
	            "SELECT c.acct, c.standing, c.standing_invoice, (SELECT MIN(number) FROM"
	            " bill_invoices i WHERE i.acct = c.acct AND i.status = 'late' AND i.paid <"
	            " i.total) FROM bill_customers c WHERE CAST($1 AS BIGINT) = 0 OR c.acct = "
	            "CAST($1 AS BIGINT) ORDER BY c.acct",
	            &p, &c)) < 0)
		return rc;
	for (unsigned r = 0; r < c.n && rc == 0; r++) {
		uint64_t acct = (uint64_t)cell_i64(&c, r, 0);
		int cur = rank(cell(&c, r, 1));
		if (cur == 3)
			continue;
		if (cell(&c, r, 3) != NULL) {
			int64_t late = cell_i64(&c, r, 3), issued;
			struct par pp = {0};
			pi(&pp, late);
			if ((rc = one(b, "SELECT issued_us FROM bill_invoices WHERE number = $1",
			              &pp, &issued)) < 0)
				break;
			rc = 0;
			int64_t days = (now_us(b) - issued) / DAY_US;
			int target = days >= b->pol.close_after       ? 3
			             : days >= b->pol.suspend_after   ? 2
			             : days >= b->pol.interrupt_after ? 1
			                                              : 0;
			/* One step at a time, each with its notice, even when a pass comes late. */
			while (cur < target && rc == 0) {
				cur++;
				rc = standing_set(b, acct, order[cur], late, order[cur]);
				rep->transitions++;
			}
		} else if (cur == 1 || cur == 2) {
			rc = standing_set(b, acct, "good", cell_i64(&c, r, 2), "restored");
			rep->transitions++;
		}
	}
	rows_free(&c);
	if (rc < 0)
		return rc;

	/* The engine's side of every standing not yet applied. */
	p = (struct par){0};
	pi(&p, (int64_t)only);
	if ((rc = q(b,
	            "SELECT acct, engine_state FROM bill_customers WHERE engine_done = 0 AND"
	            " (CAST($1 AS BIGINT) = 0 OR acct = CAST($1 AS BIGINT)) ORDER BY acct",
	            &p, &c)) < 0)
		return rc;
	for (unsigned r = 0; r < c.n && rc == 0; r++) {
		const char *argv[] = {"ACCT.SET", cell(&c, r, 0), "STATE", cell(&c, r, 1)};
		if (engine(b, NULL, 4, argv) != 0) {
			note(b, "account %s: %s; the state %s is applied at the next pass",
			     cell(&c, r, 0), b->err, cell(&c, r, 1));
			rep->pending++;
			continue;
		}
		struct par pp = {0};
		ps(&pp, cell(&c, r, 0));
		ps(&pp, cell(&c, r, 1));
		rc = x(b,
		       "UPDATE bill_customers SET engine_done = 1 WHERE acct = CAST($1 AS BIGINT)"
		       " AND engine_state = $2",
		       &pp);
	}
	rows_free(&c);
	return rc;
}

/* ACCT.CREDIT for the usage of every allocation not yet credited. */
static int
credits(struct tg_bill *b, uint64_t only, struct tg_bill_report *rep)
{
	struct par p = {0};
	struct rows a;
	int rc;

	pi(&p, (int64_t)only);
	if ((rc = q(b,
	            "SELECT a.payment, a.invoice, i.acct, a.credit FROM bill_allocations a JOIN"
	            " bill_invoices i ON i.number = a.invoice WHERE a.credited = 0 AND a.credit > 0"
	            " AND (CAST($1 AS BIGINT) = 0 OR i.acct = CAST($1 AS BIGINT)) ORDER BY "
	            "a.payment, a.invoice",
	            &p, &a)) < 0)
		return rc;
	for (unsigned r = 0; r < a.n && rc == 0; r++) {
		char txid[ID_MAX], amount[TG_MONEY_STR_MAX];
		snprintf(txid, sizeof(txid), "bill:%s:%s:%s", cell(&a, r, 2), cell(&a, r, 0),
		         cell(&a, r, 1));
		tg_money_format(cell_i64(&a, r, 3), amount);
		const char *argv[] = {"ACCT.CREDIT", cell(&a, r, 2), amount, txid};
		if (engine(b, NULL, 4, argv) != 0) {
			note(b, "%s: %s; credited at the next pass", txid, b->err);
			rep->pending++;
			continue;
		}
		rep->credits++;
		struct par pp = {0};
		ps(&pp, cell(&a, r, 0));
		ps(&pp, cell(&a, r, 1));
		rc = x(b,
		       "UPDATE bill_allocations SET credited = 1 WHERE payment = CAST($1 AS BIGINT)"
		       " AND invoice = CAST($2 AS BIGINT)",
		       &pp);
	}
	rows_free(&a);
	return rc;
}

/* ---- notices ---- */

struct compose {
	char subject[160];
	char what[1024];
	char action[768];
	char title[96];
	struct tg_mail_line lines[TG_MAIL_LINES_MAX];
	char texts[TG_MAIL_LINES_MAX][128];
	unsigned n;
	const char *total_label;
	tg_money_t total;
};

static void
method_words(const struct profile *pr, char out[48])
{
	size_t n = strlen(pr->token);
	if (pr->method[0] == '\0')
		snprintf(out, 48, "no payment method on file");
	else
		snprintf(out, 48, "%s ****%s",
		         tg_pay_method_parse(pr->method) == TG_PAY_PAYPAL ? "PayPal"
		                                                          : "credit card",
		         n > 4 ? pr->token + n - 4 : "");
}

/* The invoice's lines into c, and its figures (total, paid, status, month, attempts...). */
static int
invoice_lines(struct tg_bill *b, int64_t number, struct compose *c, struct rows *inv)
{
	struct par p = {0};
	struct rows l;
	int rc;

	pi(&p, number);
	if ((rc = q(b,
	            "SELECT number, acct, month, issued_us, total, paid, status, attempts,"
	            " late_fee, late_fee_rate, usage_total FROM bill_invoices WHERE number = $1",
	            &p, inv)) < 0)
		return rc;
	if (inv->n == 0) {
		rows_free(inv);
		return fail(b, -ENOENT, "no invoice %" PRId64, number);
	}
	if ((rc =
	         q(b, "SELECT description, amount FROM bill_lines WHERE invoice = $1 ORDER BY line",
	           &p, &l)) < 0) {
		rows_free(inv);
		return rc;
	}
	for (unsigned r = 0; r < l.n && r < TG_MAIL_LINES_MAX; r++) {
		snprintf(c->texts[r], sizeof(c->texts[r]), "%s", cell(&l, r, 0));
		c->lines[r].text = c->texts[r];
		c->lines[r].amount = cell_i64(&l, r, 1);
	}
	c->n = l.n < TG_MAIL_LINES_MAX ? l.n : TG_MAIL_LINES_MAX;
	rows_free(&l);
	int y, m;
	tg_bill_month_parse(cell(inv, 0, 2), &y, &m);
	snprintf(c->title, sizeof(c->title), "Invoice %" PRId64 ", %s %d", number,
	         month_names[m - 1], y);
	c->total_label = "Total";
	c->total = cell_i64(inv, 0, 4);
	return 0;
}

/* The mail of one notice step into c.  0, or -ENOENT (the invoice is gone) or -EIO. */
static int
compose(struct tg_bill *b, uint64_t acct, int64_t invoice, const char *step,
        const struct profile *pr, struct compose *c)
{
	char total[48], due[48], fee[48], method[48], d1[16], d2[16], d3[16];
	struct rows inv = {0};
	int rc;

	memset(c, 0, sizeof(*c));
	method_words(pr, method);
	if (strcmp(step, "refund") == 0) {
		struct par p = {0};
		struct rows r;
		pi(&p, (int64_t)acct);
		if ((rc = q(b,
		            "SELECT description, amount, status FROM bill_refunds WHERE acct = $1"
		            " ORDER BY item",
		            &p, &r)) < 0)
			return rc;
		for (unsigned i = 0; i < r.n && i < TG_MAIL_LINES_MAX; i++) {
			snprintf(c->texts[i], sizeof(c->texts[i]), "%.100s%s", cell(&r, i, 0),
			         strcmp(cell(&r, i, 2), TG_BILL_MANUAL) == 0 ? " (returned by us)"
			                                                     : "");
			c->lines[i].text = c->texts[i];
			c->lines[i].amount = cell_i64(&r, i, 1);
			c->total += c->lines[i].amount;
		}
		c->n = r.n < TG_MAIL_LINES_MAX ? r.n : TG_MAIL_LINES_MAX;
		rows_free(&r);
		c->total_label = "Total refunded";
		snprintf(c->title, sizeof(c->title), "Refund, account %" PRIu64, acct);
		snprintf(c->subject, sizeof(c->subject),
		         "Account %" PRIu64 " cancelled: your 30-day money-back refund", acct);
		snprintf(
		    c->what, sizeof(c->what),
		    "Your account %" PRIu64 " is cancelled under our 30-day money-back guarantee,"
		    " and calls are no longer possible. We refunded every subscription charge and"
		    " surcharge you paid, to the payment method they were taken from. Usage"
		    " (long distance, international, toll-free minutes, directory assistance) is"
		    " not refundable.",
		    acct);
		snprintf(c->action, sizeof(c->action),
		         "Nothing to do: refunds reach your account within a few business days.");
		return 0;
	}
	if (strcmp(step, "cancelled") == 0) {
		snprintf(c->subject, sizeof(c->subject), "Account %" PRIu64 " cancelled", acct);
		snprintf(c->what, sizeof(c->what),
		         "Your account %" PRIu64 " is cancelled as you asked; calls are no longer"
		         " possible. Charges already due remain due.",
		         acct);
		return 0;
	}
	if ((rc = invoice_lines(b, invoice, c, &inv)) < 0)
		return rc;
	int64_t issued = cell_i64(&inv, 0, 3);
	tg_money_t tot = cell_i64(&inv, 0, 4), paid = cell_i64(&inv, 0, 5);
	show(tot, total);
	show(tot - paid, due);
	show(cell_i64(&inv, 0, 8), fee);
	day_text(issued + (int64_t)b->pol.interrupt_after * DAY_US, d1);
	day_text(issued + (int64_t)b->pol.suspend_after * DAY_US, d2);
	day_text(issued + (int64_t)b->pol.close_after * DAY_US, d3);
	const char *mon = cell(&inv, 0, 2);
	if (strcmp(step, "invoice") == 0) {
		snprintf(c->subject, sizeof(c->subject),
		         "Invoice %" PRId64 " for account %" PRIu64 ": %s", invoice, acct, total);
		if (tot == paid) {
			snprintf(c->what, sizeof(c->what),
			         "Your invoice %" PRId64
			         " for %s: next month's subscription and last"
			         " month's usage. It is paid (%s, %s). Thank you.",
			         invoice, mon, method, total);
		} else {
			char days[64] = "";
			size_t n = 0;
			for (unsigned i = 0; i < b->pol.nretry && n < sizeof(days) - 16; i++) {
				char d[16];
				day_text(issued + (int64_t)b->pol.retry_days[i] * DAY_US, d);
				n += (size_t)snprintf(days + n, sizeof(days) - n, "%s%s",
				                      i ? ", " : "", d);
			}
			snprintf(
			    c->what, sizeof(c->what),
			    "Your invoice %" PRId64 " for %s: next month's subscription and last"
			    " month's usage. We could not charge %s to your %s; %s remains due. We"
			    " will try again on %s.",
			    invoice, mon, due, method, due, days);
			snprintf(
			    c->action, sizeof(c->action),
			    "To avoid a late fee and an interruption of service, make sure your"
			    " payment information is accurate (expiration date included) and that"
			    " funds are available: log in to the online portal and update your "
			    "credit"
			    " card or PayPal account, or pay the balance due.");
		}
	} else if (strcmp(step, "late") == 0) {
		int64_t bp = cell_i64(&inv, 0, 9);
		snprintf(c->subject, sizeof(c->subject),
		         "Invoice %" PRId64 " is past due: late fee of %s", invoice, fee);
		snprintf(
		    c->what, sizeof(c->what),
		    "We could not collect invoice %" PRId64 " (%s) after %" PRId64 " attempts;"
		    " %s remains due. A late fee of %s (%" PRId64 ".%02" PRId64 "%% of the balance"
		    " due, the rate for your billing address) is charged once and will appear on"
		    " your next invoice.",
		    invoice, total, cell_i64(&inv, 0, 7), due, fee, bp / 100, bp % 100);
		snprintf(
		    c->action, sizeof(c->action),
		    "Please pay %s now, or update your payment method in the online portal. If it"
		    " is still unpaid, your service will be interrupted on %s (calls blocked,"
		    " payments still accepted), suspended on %s and closed on %s.",
		    due, d1, d2, d3);
	} else if (strcmp(step, "interrupted") == 0) {
		snprintf(c->subject, sizeof(c->subject),
		         "Service interrupted on account %" PRIu64 ": %s past due", acct, due);
		snprintf(
		    c->what, sizeof(c->what),
		    "Invoice %" PRId64 " is still unpaid (%s due), so calls on account %" PRIu64
		    " are blocked from today. Your account and number are kept and payments are"
		    " accepted.",
		    invoice, due, acct);
		snprintf(
		    c->action, sizeof(c->action),
		    "Pay the balance due (or update your payment method in the online portal and"
		    " we will charge it) and service is restored at once. Unpaid, the account is"
		    " suspended on %s and closed on %s.",
		    d2, d3);
	} else if (strcmp(step, "suspended") == 0) {
		snprintf(c->subject, sizeof(c->subject),
		         "Account %" PRIu64 " suspended for non-payment", acct);
		snprintf(c->what, sizeof(c->what),
		         "Invoice %" PRId64 " is still unpaid (%s due): account %" PRIu64
		         " is suspended for non-payment.",
		         invoice, due, acct);
		snprintf(
		    c->action, sizeof(c->action),
		    "Pay the balance due to restore your service. Unpaid, the account is closed"
		    " on %s and its open invoices are written off to collections.",
		    d3);
	} else if (strcmp(step, "closed") == 0) {
		snprintf(c->subject, sizeof(c->subject),
		         "Account %" PRIu64 " closed for non-payment", acct);
		snprintf(c->what, sizeof(c->what),
		         "Invoice %" PRId64 " remained unpaid (%s due): account %" PRIu64
		         " is closed and its subscriptions ended.",
		         invoice, due, acct);
		snprintf(c->action, sizeof(c->action),
		         "The balance remains due; contact customer service to settle it.");
	} else if (strcmp(step, "restored") == 0) {
		snprintf(c->subject, sizeof(c->subject), "Service restored on account %" PRIu64,
		         acct);
		snprintf(c->what, sizeof(c->what),
		         "Thank you: your payment settled what was past due, and service on account"
		         " %" PRIu64 " is restored. Calls are possible again.",
		         acct);
		c->n = 0;
		c->total_label = NULL;
	} else {
		rows_free(&inv);
		return fail(b, -EIO, "unknown notice step '%s' in the database", step);
	}
	rows_free(&inv);
	return 0;
}

static int
notices(struct tg_bill *b, uint64_t only, struct tg_bill_report *rep)
{
	struct par p = {0};
	struct rows n;
	int rc;

	if (b->mail == NULL)
		return 0;
	pi(&p, (int64_t)only);
	if ((rc = q(
	         b,
	         "SELECT acct, invoice, step FROM bill_notices WHERE sent = 0 AND (CAST($1 AS"
	         " BIGINT) = 0 OR acct = CAST($1 AS BIGINT)) ORDER BY time_us, acct, invoice, step",
	         &p, &n)) < 0)
		return rc;
	for (unsigned r = 0; r < n.n && rc == 0; r++) {
		uint64_t acct = (uint64_t)cell_i64(&n, r, 0);
		int64_t inv = cell_i64(&n, r, 1);
		const char *step = cell(&n, r, 2);
		struct profile pr;
		struct compose c;
		char id[ID_MAX];
		struct par pp = {0};
		pi(&pp, (int64_t)acct);
		pi(&pp, inv);
		ps(&pp, step);
		if (!profile_get(b, acct, &pr)) {
			note(b,
			     "account %" PRIu64
			     ": no billing email in its profile: the %s notice waits",
			     acct, step);
			rep->pending++;
			continue;
		}
		if ((rc = compose(b, acct, inv, step, &pr, &c)) < 0)
			break;
		snprintf(id, sizeof(id), "bill:%" PRIu64 ":%" PRId64 ":%s", acct, inv, step);
		struct tg_mail_bill bl = {.subject = c.subject,
		                          .what = c.what,
		                          .action = c.action[0] ? c.action : NULL,
		                          .table_title = c.n || c.total_label ? c.title : NULL,
		                          .lines = c.lines,
		                          .nlines = c.n,
		                          .total_label = c.total_label,
		                          .total = c.total};
		struct tg_mail_refill m = {.request_id = id,
		                           .account = acct,
		                           .to = pr.email,
		                           .name = pr.name,
		                           .date = (time_t)(now_us(b) / 1000000),
		                           .bill = &bl};
		/* Not exclusive (sendmail): claimed first, so a crash loses a mail rather than
		 * doubling it. */
		if (!b->mail->ops->exclusive &&
		    (rc = x(b,
		            "UPDATE bill_notices SET sent = 2 WHERE acct = $1 AND invoice = $2 AND"
		            " step = $3",
		            &pp)) < 0)
			break;
		int s = tg_notify(b->mail, TG_MAIL_NOTICE, &m);
		if (s < 0) {
			note(b, "%s: the mail was not delivered (%s): tried again at the next pass",
			     id, strerror(-s));
			rep->pending++;
			continue;
		}
		rep->mails += s == 1;
		note(b, "%s: %s", id, s == 1 ? "mailed" : "had been mailed");
		rc = x(b,
		       "UPDATE bill_notices SET sent = 1 WHERE acct = $1 AND invoice = $2 AND step "
		       "= $3",
		       &pp);
	}
	rows_free(&n);
	return rc;
}

int
tg_bill_collect(struct tg_bill *b, struct tg_bill_report *rep)
{
	TG_CHECK_OBJ_NOTNULL(b, TG_BILL_MAGIC);
	memset(rep, 0, sizeof(*rep));
	int rc = attempts(b, 0, rep);
	if (rc == 0)
		rc = standings(b, 0, rep);
	if (rc == 0)
		rc = credits(b, 0, rep);
	if (rc == 0)
		rc = notices(b, 0, rep);
	return rc;
}

/* ---- payments ---- */

bool
tg_bill_payment_method_ok(const char *m)
{
	return strcmp(m, TG_BILL_MANUAL) == 0 || tg_pay_method_parse(m) >= 0;
}

int
tg_bill_pay(struct tg_bill *b, uint64_t acct, tg_money_t amount, const char *method,
            const char *ref, bool *dup)
{
	struct par p = {0};
	struct rows e;
	char gen[ID_MAX];
	int64_t id;
	int rc;

	TG_CHECK_OBJ_NOTNULL(b, TG_BILL_MAGIC);
	*dup = false;
	if ((rc = customer_known(b, acct)) < 0)
		return rc;
	if (amount <= 0 || amount % unit() != 0)
		return fail(b, -EINVAL, "a payment is a positive whole number of cents");
	if (!tg_bill_payment_method_ok(method))
		return fail(b, -EINVAL, "payment method: manual, card or paypal");
	if (ref == NULL) {
		snprintf(gen, sizeof(gen), TG_BILL_MANUAL ":%" PRIu64 ":%" PRId64, acct, now_us(b));
		ref = gen;
	} else if (!word_ok(ref, 80) || strchr(ref, ' ') != NULL) {
		return fail(b, -EINVAL,
		            "a payment reference: 1 to 80 printable characters, no space");
	}
	if ((rc = begin(b)) < 0)
		return rc;
	ps(&p, ref);
	if ((rc = q(b, "SELECT acct, amount FROM bill_payments WHERE ref = $1", &p, &e)) < 0)
		return rollback(b, rc);
	if (e.n > 0) {
		bool same = (uint64_t)cell_i64(&e, 0, 0) == acct && cell_i64(&e, 0, 1) == amount;
		rows_free(&e);
		rollback(b, 0);
		if (!same)
			return fail(
			    b, -EINVAL,
			    "payment reference '%s' is already recorded for another account or"
			    " amount: nothing done",
			    ref);
		*dup = true;
	} else {
		rows_free(&e);
		if ((rc = payment_add(b, acct, amount, method, ref, &id)) < 0 ||
		    (rc = settle(b, id, acct, 0)) < 0)
			return rollback(b, rc);
		if ((rc = commit(b)) < 0)
			return rc;
		note(b, "payment %" PRId64 " (%s): account %" PRIu64 ", %" PRId64, id, ref, acct,
		     amount);
	}
	/* The payment is recorded: the rest (engine credit, restoring) is retried by collect. */
	struct tg_bill_report rep = {0};
	if ((rc = standings(b, acct, &rep)) == 0 && (rc = credits(b, acct, &rep)) == 0)
		rc = notices(b, acct, &rep);
	if (rc == 0 && rep.pending > 0)
		note(b, "account %" PRIu64 ": %u step(s) left for the next tollbill collect", acct,
		     rep.pending);
	return rc;
}

/* ---- cancellation and the money-back guarantee ---- */

/* The sign-up time of acct: its billing record, else its first record in the ledger. */
static int
signup_of(struct tg_bill *b, uint64_t acct, int64_t *out)
{
	struct par p = {0};
	pi(&p, (int64_t)acct);
	int rc = one(b, "SELECT signup_us FROM bill_customers WHERE acct = $1", &p, out);
	if (rc != 0)
		return rc < 0 ? rc : 0;
	rc = one(b,
	         "SELECT MIN(t) FROM (SELECT MIN(time_us) AS t FROM account_events WHERE acct = $1"
	         " UNION ALL SELECT MIN(time_us) FROM credits WHERE acct = $1 UNION ALL"
	         " SELECT MIN(time_us) FROM calls WHERE acct = $1) AS firsts",
	         &p, out);
	if (rc < 0)
		return rc;
	return rc == 1 ? 0
	               : fail(b, -ENOENT,
	                      "account %" PRIu64 " is neither a billing customer nor in the ledger",
	                      acct);
}

struct item {
	char kind[16];
	int64_t invoice;
	char charge[ID_MAX];
	char text[128];
	tg_money_t amount;
};

/* The refund plan of a postpaid customer: what it paid beyond usage, per payment. */
static int
plan_postpaid(struct tg_bill *b, uint64_t acct, struct item *it, unsigned *n)
{
	struct par p = {0};
	struct rows a;
	int rc;

	pi(&p, (int64_t)acct);
	if ((rc = q(b,
	            "SELECT a.invoice, y.method, y.ref, a.amount - a.usage_amount FROM"
	            " bill_allocations a JOIN bill_payments y ON y.id = a.payment WHERE y.acct = $1"
	            " AND a.amount > a.usage_amount UNION ALL SELECT 0, method, ref, unapplied"
	            " FROM bill_payments WHERE acct = $1 AND unapplied > 0 ORDER BY 1, 3",
	            &p, &a)) < 0)
		return rc;
	for (unsigned r = 0; r < a.n && *n < TG_MAIL_LINES_MAX; r++) {
		struct item *i = &it[(*n)++];
		memset(i, 0, sizeof(*i));
		i->invoice = cell_i64(&a, r, 0);
		bool gw = strcmp(cell(&a, r, 1), TG_BILL_MANUAL) != 0;
		snprintf(i->kind, sizeof(i->kind), "%s", gw ? "gateway" : TG_BILL_MANUAL);
		if (gw)
			snprintf(i->charge, sizeof(i->charge), "%s", cell(&a, r, 2));
		i->amount = cell_i64(&a, r, 3);
		if (i->invoice > 0)
			snprintf(i->text, sizeof(i->text),
			         "Subscription and fees paid on invoice %" PRId64 " (%.40s)",
			         i->invoice, cell(&a, r, 2));
		else
			snprintf(i->text, sizeof(i->text), "Unapplied payment %.60s",
			         cell(&a, r, 2));
	}
	rows_free(&a);
	return 0;
}

/*
 * The refund plan of a prepaid account: what it bought by auto-refill
 * minus its usage, at most its balance, in whole cents, newest purchase first.
 */
static int
plan_prepaid(struct tg_bill *b, uint64_t acct, tg_money_t balance, struct item *it, unsigned *n)
{
	struct par p = {0};
	struct rows c;
	int64_t used;
	int rc;

	pi(&p, (int64_t)acct);
	if ((rc = one(b, "SELECT COALESCE(SUM(charge), 0) FROM calls WHERE acct = $1", &p, &used)) <
	    0)
		return rc;
	if ((rc = q(b,
	            "SELECT txid, amount FROM credits WHERE acct = $1 AND source = 'refill' AND"
	            " txid IS NOT NULL ORDER BY lsn DESC",
	            &p, &c)) < 0)
		return rc;
	tg_money_t bought = 0;
	for (unsigned r = 0; r < c.n; r++)
		bought += cell_i64(&c, r, 1);
	tg_money_t left = bought - used < balance ? bought - used : balance;
	left = left > 0 ? left / unit() * unit() : 0;
	for (unsigned r = 0; r < c.n && left > 0 && *n < TG_MAIL_LINES_MAX; r++) {
		struct item *i = &it[(*n)++];
		memset(i, 0, sizeof(*i));
		tg_money_t a = cell_i64(&c, r, 1) / unit() * unit();
		i->amount = a < left ? a : left;
		left -= i->amount;
		snprintf(i->kind, sizeof(i->kind), "gateway");
		snprintf(i->charge, sizeof(i->charge), "%.90s", cell(&c, r, 0));
		snprintf(i->text, sizeof(i->text), "Unused prepaid balance bought by %.60s",
		         cell(&c, r, 0));
		if (i->amount == 0)
			(*n)--;
	}
	rows_free(&c);
	return 0;
}

static int
acct_kind(struct tg_bill *b, uint64_t acct, bool *postpaid)
{
	struct par p = {0};
	struct rows k;
	pi(&p, (int64_t)acct);
	int rc = q(b, "SELECT kind FROM accounts WHERE acct = $1", &p, &k);
	if (rc < 0)
		return rc;
	*postpaid = k.n > 0 && cell(&k, 0, 0) && strcmp(cell(&k, 0, 0), "postpaid") == 0;
	rows_free(&k);
	return 0;
}

int
tg_bill_cancel(struct tg_bill *b, uint64_t acct, bool refund, FILE *out)
{
	struct par p = {0};
	int64_t signup, planned;
	bool postpaid;
	char acs[24], day[16], end[16];
	int rc;

	TG_CHECK_OBJ_NOTNULL(b, TG_BILL_MAGIC);
	snprintf(acs, sizeof(acs), "%" PRIu64, acct);
	if ((rc = signup_of(b, acct, &signup)) < 0 || (rc = acct_kind(b, acct, &postpaid)) < 0)
		return rc;
	pi(&p, (int64_t)acct);
	if ((rc = one(b, "SELECT count(*) FROM bill_refunds WHERE acct = $1", &p, &planned)) < 0)
		return rc;
	int64_t limit = signup + (int64_t)b->pol.guarantee_days * DAY_US;
	if (refund && planned == 0 && now_us(b) > limit) {
		day_text(signup, day);
		day_text(limit, end);
		return fail(b, -EPERM,
		            "account %" PRIu64
		            " signed up on %s: the %u-day money-back guarantee ended"
		            " on %s; nothing was changed (cancel without --refund closes it with no"
		            " refund)",
		            acct, day, b->pol.guarantee_days, end);
	}
	/* Closed first: no call may add usage while the refund is worked out. */
	const char *set[] = {"ACCT.SET", acs, "STATE", tg_acct_state_name(TG_STATE_CLOSED)};
	if ((rc = engine(b, NULL, 4, set)) < 0)
		return rc;
	int64_t v;
	if ((rc = one(b, "SELECT count(*) FROM bill_customers WHERE acct = $1", &p, &v)) < 0)
		return rc;
	if (v > 0) {
		if ((rc = begin(b)) < 0)
			return rc;
		day_text(now_us(b), day);
		struct par pp = {0}, pd = {0};
		pi(&pp, (int64_t)acct);
		pi(&pp, now_us(b));
		pi(&pd, (int64_t)acct);
		ps(&pd, day);
		if ((rc = x(b,
		            "UPDATE bill_customers SET standing = 'closed', standing_us = $2,"
		            " engine_state = 'closed', engine_done = 1, cancelled_us = COALESCE("
		            "cancelled_us, $2) WHERE acct = $1",
		            &pp)) < 0 ||
		    (rc = x(b,
		            "UPDATE bill_subscriptions SET end_day = $2 WHERE acct = $1 AND"
		            " (end_day IS NULL OR end_day > $2)",
		            &pd)) < 0)
			return rollback(b, rc);
		if (!refund && (rc = notice_due(b, acct, 0, "cancelled")) < 0)
			return rollback(b, rc);
		if ((rc = commit(b)) < 0)
			return rc;
	}
	if (!refund) {
		fprintf(out, "account %" PRIu64 " cancelled (closed), no refund\n", acct);
		struct tg_bill_report rep = {0};
		return notices(b, acct, &rep);
	}

	/* The plan, once: recorded whole before any money moves. */
	tg_money_t balance = 0;
	if (planned == 0) {
		struct item it[TG_MAIL_LINES_MAX];
		unsigned n = 0;
		if (!postpaid) {
			redisReply *r;
			const char *get[] = {"ACCT.GET", acs};
			if ((rc = engine(b, &r, 2, get)) < 0)
				return rc;
			for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements;
			     i += 2)
				if (r->element[i]->str &&
				    strcmp(r->element[i]->str, "balance") == 0 &&
				    r->element[i + 1]->str)
					tg_money_parse(r->element[i + 1]->str,
					               strlen(r->element[i + 1]->str), &balance);
			freeReplyObject(r);
			rc = plan_prepaid(b, acct, balance, it, &n);
		} else {
			rc = plan_postpaid(b, acct, it, &n);
		}
		if (rc < 0)
			return rc;
		if ((rc = begin(b)) < 0)
			return rc;
		for (unsigned i = 0; i < n && rc == 0; i++) {
			struct par pp = {0};
			pi(&pp, (int64_t)acct);
			pi(&pp, i + 1);
			pi(&pp, now_us(b));
			ps(&pp, it[i].kind);
			pi(&pp, it[i].invoice);
			ps(&pp, it[i].charge[0] ? it[i].charge : NULL);
			ps(&pp, it[i].text);
			pi(&pp, it[i].amount);
			rc = x(
			    b,
			    "INSERT INTO bill_refunds (acct, item, time_us, kind, invoice, "
			    "charge_id,"
			    " description, amount, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
			    " 'pending')",
			    &pp);
		}
		/* A marker item 0 when nothing is refundable: the plan exists, and says so. */
		if (rc == 0 && n == 0) {
			struct par pp = {0};
			pi(&pp, (int64_t)acct);
			pi(&pp, now_us(b));
			rc =
			    x(b,
			      "INSERT INTO bill_refunds (acct, item, time_us, kind, description, "
			      "amount,"
			      " status) VALUES ($1, 0, $2, 'none', 'Nothing paid is refundable', 0,"
			      " 'done')",
			      &pp);
		}
		if (rc == 0 && !postpaid) {
			/* The prepaid balance after the refund, set once every item is done. */
			tg_money_t sum = 0;
			for (unsigned i = 0; i < n; i++)
				sum += it[i].amount;
			struct par pp = {0};
			pi(&pp, (int64_t)acct);
			pi(&pp, now_us(b));
			pi(&pp, balance - sum);
			rc = x(b,
			       "INSERT INTO bill_refunds (acct, item, time_us, kind, description, "
			       "amount,"
			       " status) VALUES ($1, -1, $2, 'balance', 'Engine balance after the "
			       "refund',"
			       " $3, 'pending')",
			       &pp);
		}
		if (rc == 0)
			rc = notice_due(b, acct, 0, "refund");
		if (rc < 0)
			return rollback(b, rc);
		if ((rc = commit(b)) < 0)
			return rc;
	}

	/* Carry out every pending item, each idempotent on its refund id; the balance last. */
	struct rows items;
	if ((rc = q(b,
	            "SELECT item, kind, charge_id, amount, description FROM bill_refunds WHERE"
	            " acct = $1 AND status = 'pending' ORDER BY item DESC",
	            &p, &items)) < 0)
		return rc;
	unsigned left = 0;
	for (unsigned r = 0; r < items.n && rc == 0; r++) {
		int64_t item = cell_i64(&items, r, 0);
		const char *kind = cell(&items, r, 1), *status = "done";
		char ref[TG_GATEWAY_REF_MAX] = "", id[ID_MAX];
		if (strcmp(kind, "balance") == 0) {
			if (left > 0)
				continue; /* after every refund went through */
			char bal[TG_MONEY_STR_MAX];
			tg_money_format(cell_i64(&items, r, 3), bal);
			const char *argv[] = {"ACCT.SET", acs, "BALANCE", bal};
			if ((rc = engine(b, NULL, 4, argv)) < 0)
				break;
		} else if (strcmp(kind, TG_BILL_MANUAL) == 0) {
			status = TG_BILL_MANUAL;
		} else {
			snprintf(id, sizeof(id), "refund:%" PRIu64 ":%" PRId64, acct, item);
			enum tg_charge_outcome oc =
			    b->gw ? tg_gateway_refund(b->gw, id, cell(&items, r, 2),
			                              cell_i64(&items, r, 3), ref)
			          : TG_CHARGE_ERROR;
			if (oc == TG_CHARGE_DECLINED) {
				status = "refused";
			} else if (oc != TG_CHARGE_APPROVED) {
				note(b, "%s: %s; run the cancel again to finish the refund", id,
				     tg_charge_outcome_name(oc));
				left++;
				continue;
			}
		}
		struct par pp = {0};
		pi(&pp, (int64_t)acct);
		pi(&pp, item);
		ps(&pp, status);
		ps(&pp, ref[0] ? ref : NULL);
		rc = x(b,
		       "UPDATE bill_refunds SET status = $3, reference = $4 WHERE acct = $1 AND"
		       " item = $2",
		       &pp);
	}
	rows_free(&items);
	if (rc < 0)
		return rc;
	if (left > 0)
		return fail(
		    b, -EIO,
		    "%u refund(s) could not reach the gateway: run the cancel again to finish",
		    left);

	struct rows all;
	if ((rc = q(b,
	            "SELECT item, description, amount, status, reference FROM bill_refunds WHERE"
	            " acct = $1 AND item > 0 ORDER BY item",
	            &p, &all)) < 0)
		return rc;
	tg_money_t total = 0;
	fprintf(out, "account %" PRIu64 " cancelled (closed) under the money-back guarantee\n",
	        acct);
	for (unsigned r = 0; r < all.n; r++) {
		char a[48];
		show(cell_i64(&all, r, 2), a);
		fprintf(out, "  %2s  %-60s %10s  %s%s%s\n", cell(&all, r, 0), cell(&all, r, 1), a,
		        cell(&all, r, 3), cell(&all, r, 4) ? " " : "",
		        cell(&all, r, 4) ? cell(&all, r, 4) : "");
		if (strcmp(cell(&all, r, 3), "refused") != 0)
			total += cell_i64(&all, r, 2);
	}
	rows_free(&all);
	char t[48];
	show(total, t);
	fprintf(out, "  refunded %s (usage is not refundable)\n", t);
	struct tg_bill_report rep = {0};
	return notices(b, acct, &rep);
}

/* ---- statements ---- */

int
tg_bill_invoice_print(struct tg_bill *b, int64_t number, FILE *out)
{
	struct compose c;
	struct rows inv, pays;
	char a[48], t[48], pd[48], day[16];
	int rc;

	TG_CHECK_OBJ_NOTNULL(b, TG_BILL_MAGIC);
	memset(&c, 0, sizeof(c));
	if ((rc = invoice_lines(b, number, &c, &inv)) < 0)
		return rc;
	day_text(cell_i64(&inv, 0, 3), day);
	show(cell_i64(&inv, 0, 4), t);
	show(cell_i64(&inv, 0, 5), pd);
	fprintf(out, "invoice %" PRId64 "  account %s  dated %s  (%s)\n", number, cell(&inv, 0, 1),
	        day, cell(&inv, 0, 6));
	for (unsigned i = 0; i < c.n; i++) {
		show(c.lines[i].amount, a);
		fprintf(out, "  %2u  %-60s %10s\n", i + 1, c.lines[i].text, a);
	}
	fprintf(out, "      %-60s %10s\n", "Total", t);
	fprintf(out, "      %-60s %10s\n", "Paid", pd);
	show(cell_i64(&inv, 0, 4) - cell_i64(&inv, 0, 5), a);
	fprintf(out, "      %-60s %10s\n", "Balance due", a);
	if (cell_i64(&inv, 0, 8) > 0) {
		show(cell_i64(&inv, 0, 8), a);
		fprintf(out, "  late fee assessed: %s (billed on the next invoice)\n", a);
	}
	rows_free(&inv);
	struct par p = {0};
	pi(&p, number);
	if ((rc = q(b,
	            "SELECT y.ref, y.method, y.time_us, a.amount FROM bill_allocations a JOIN"
	            " bill_payments y ON y.id = a.payment WHERE a.invoice = $1 ORDER BY y.id",
	            &p, &pays)) < 0)
		return rc;
	for (unsigned r = 0; r < pays.n; r++) {
		day_text(cell_i64(&pays, r, 2), day);
		show(cell_i64(&pays, r, 3), a);
		fprintf(out, "  payment %s  %s  %s  %s\n", day, cell(&pays, r, 1),
		        cell(&pays, r, 0), a);
	}
	rows_free(&pays);
	return 0;
}

int
tg_bill_invoices_print(struct tg_bill *b, uint64_t acct, FILE *out)
{
	struct par p = {0};
	struct rows inv;
	int rc;

	TG_CHECK_OBJ_NOTNULL(b, TG_BILL_MAGIC);
	if ((rc = customer_known(b, acct)) < 0)
		return rc;
	pi(&p, (int64_t)acct);
	if ((rc = q(b,
	            "SELECT number, month, issued_us, total, paid, status FROM bill_invoices WHERE"
	            " acct = $1 ORDER BY number",
	            &p, &inv)) < 0)
		return rc;
	fprintf(out, "%-8s %-8s %-10s %12s %12s %12s  %s\n", "invoice", "month", "dated", "total",
	        "paid", "due", "status");
	for (unsigned r = 0; r < inv.n; r++) {
		char day[16], t[48], pd[48], due[48];
		day_text(cell_i64(&inv, r, 2), day);
		show(cell_i64(&inv, r, 3), t);
		show(cell_i64(&inv, r, 4), pd);
		show(cell_i64(&inv, r, 3) - cell_i64(&inv, r, 4), due);
		fprintf(out, "%-8s %-8s %-10s %12s %12s %12s  %s\n", cell(&inv, r, 0),
		        cell(&inv, r, 1), day, t, pd, due, cell(&inv, r, 5));
	}
	rows_free(&inv);
	return 0;
}

/* ---- opening ---- */

static redisContext *
connect_redis(const char *host, int port, const char *user, const char *password)
{
	struct timeval tv = {.tv_sec = 5};
	redisContext *c = redisConnectWithTimeout(host, port, tv);
	if (c == NULL || c->err || redisSetTimeout(c, tv) != REDIS_OK) {
		if (c != NULL)
			redisFree(c);
		return NULL;
	}
	if (password != NULL && password[0] != '\0') {
		redisReply *r = user ? redisCommand(c, "AUTH %s %s", user, password)
		                     : redisCommand(c, "AUTH %s", password);
		bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
		if (r != NULL)
			freeReplyObject(r);
		if (!ok) {
			redisFree(c);
			return NULL;
		}
	}
	return c;
}

int
tg_bill_open(struct tg_bill *b, const struct tg_bill_conf *c)
{
	char err[TG_BILL_ERR_MAX];
	int rc;

	b->magic = TG_BILL_MAGIC;
	if (c->db == NULL || c->db[0] == '\0')
		return fail(b, -EINVAL, "--db PATH|URI is required");
	if (ldb_open(&b->db, c->db, err, sizeof(err)) != 0) {
		b->db = NULL;
		return fail(b, -EIO, "%s", err);
	}
	if (c->migrate) {
		if (ledger_migrate(b->db, err, sizeof(err)) != 0)
			return fail(b, -EIO, "%s", err);
	} else if ((rc = ledger_version(b->db)) != LEDGER_SCHEMA_VERSION) {
		return fail(b, -EIO, "%s: %s", c->db,
		            rc < 0    ? "cannot read the ledger's schema version"
		            : rc == 0 ? "no ledger in it (run tollexport or tollbill first)"
		                      : "a ledger schema version this build does not read");
	}
	if (c->engine_host != NULL)
		b->engine = connect_redis(c->engine_host, c->engine_port, c->engine_user,
		                          c->engine_password);
	if (c->redis_host != NULL) {
		b->redis = connect_redis(c->redis_host, c->redis_port, NULL, c->redis_password);
		b->gw = calloc(1, sizeof(*b->gw));
		if (b->gw == NULL ||
		    tg_gateway_sim_open(b->gw, c->redis_host, (uint16_t)c->redis_port,
		                        c->redis_password) != 0) {
			free(b->gw);
			b->gw = NULL;
			return fail(b, -ENOMEM, "out of memory");
		}
	}
	if (c->maildir != NULL || c->sendmail != NULL) {
		const char *from = c->mail_from ? c->mail_from : "billing@localhost";
		b->mail = calloc(1, sizeof(*b->mail));
		if (b->mail == NULL)
			return fail(b, -ENOMEM, "out of memory");
		rc = c->maildir ? tg_notifier_maildir_open(b->mail, c->maildir, from)
		                : tg_notifier_sendmail_open(b->mail, c->sendmail, from);
		if (rc != 0) {
			free(b->mail);
			b->mail = NULL;
			return fail(b, -EINVAL, "the notifier (%s, from %s): %s",
			            c->maildir ? c->maildir : c->sendmail, from, strerror(-rc));
		}
	}
	return 0;
}

void
tg_bill_close(struct tg_bill *b)
{
	if (b->mail != NULL) {
		tg_notifier_close(b->mail);
		free(b->mail);
	}
	if (b->gw != NULL) {
		tg_gateway_close(b->gw);
		free(b->gw);
	}
	if (b->engine != NULL)
		redisFree(b->engine);
	if (b->redis != NULL)
		redisFree(b->redis);
	if (b->db != NULL)
		ldb_close(b->db);
	b->mail = NULL;
	b->gw = NULL;
	b->engine = b->redis = NULL;
	b->db = NULL;
	b->magic = 0;
}

/* ---- the shared options ---- */

const char tg_bill_options_usage[] =
    "  --db PATH|URI          the ledger: a SQLite file or a PostgreSQL URI\n"
    "  --data-dir DIR         the same as --db DIR/ledger.sqlite\n"
    "  --engine HOST:PORT     tollgated (127.0.0.1:6390)\n"
    "  --engine-user NAME     AUTH as that user, with --engine-password\n"
    "  --engine-password PW   AUTH to tollgated\n"
    "  --redis HOST:PORT      the refill Redis: profiles and the gateway (127.0.0.1:6379)\n"
    "  --redis-password PW    AUTH to Redis\n"
    "  --maildir DIR          deliver notices into this maildir\n"
    "  --sendmail CMD         deliver notices by piping them into CMD\n"
    "  --mail-from ADDR       the From: address (billing@localhost)\n"
    "  --retry-days LIST      days after the invoice date of the charge retries (3,7,14)\n"
    "  --interrupt-after D    days past due before calls are blocked (15)\n"
    "  --suspend-after D      days past due before the account is suspended (30)\n"
    "  --close-after D        days past due before the account is closed (60)\n"
    "  --guarantee-days D     the money-back guarantee (30)\n"
    "  --currency CODE        ISO 4217 code, as tollgated's currency setting (USD)\n"
    "  --now UNIX             the time to act at, Unix seconds (default: the clock)\n";

static bool
hostport(const char *s, const char **host, int *port, char *buf, size_t cap)
{
	const char *colon = strrchr(s, ':');
	char *end;
	if (colon == NULL || colon == s || (size_t)(colon - s) >= cap)
		return false;
	long p = strtol(colon + 1, &end, 10);
	if (*end != '\0' || p < 1 || p > 65535)
		return false;
	memcpy(buf, s, (size_t)(colon - s));
	buf[colon - s] = '\0';
	*host = buf;
	*port = (int)p;
	return true;
}

static bool
days_opt(const char *s, unsigned *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	if (end == s || *end != '\0' || v > 3650)
		return false;
	*out = (unsigned)v;
	return true;
}

int
tg_bill_option(struct tg_bill_conf *c, struct tg_bill_policy *pol, int64_t *now, char *dbbuf,
               size_t dbcap, const char *opt, const char *val, char *err, size_t errlen)
{
	static char ehost[256], rhost[256];
	bool ok = true;

	if (strcmp(opt, "--db") == 0)
		c->db = val;
	else if (strcmp(opt, "--data-dir") == 0)
		ok = (size_t)snprintf(dbbuf, dbcap, "%s/ledger.sqlite", val) < dbcap &&
		     (c->db = dbbuf) != NULL;
	else if (strcmp(opt, "--engine") == 0)
		ok = hostport(val, &c->engine_host, &c->engine_port, ehost, sizeof(ehost));
	else if (strcmp(opt, "--engine-user") == 0)
		c->engine_user = val;
	else if (strcmp(opt, "--engine-password") == 0)
		c->engine_password = val;
	else if (strcmp(opt, "--redis") == 0)
		ok = hostport(val, &c->redis_host, &c->redis_port, rhost, sizeof(rhost));
	else if (strcmp(opt, "--redis-password") == 0)
		c->redis_password = val;
	else if (strcmp(opt, "--maildir") == 0)
		c->maildir = val;
	else if (strcmp(opt, "--sendmail") == 0)
		c->sendmail = val;
	else if (strcmp(opt, "--mail-from") == 0)
		ok = tg_mail_address_ok(val) && (c->mail_from = val) != NULL;
	else if (strcmp(opt, "--retry-days") == 0)
		return tg_bill_policy_retries(pol, val, err, errlen) == 0 ? 1 : -EINVAL;
	else if (strcmp(opt, "--interrupt-after") == 0)
		ok = days_opt(val, &pol->interrupt_after);
	else if (strcmp(opt, "--suspend-after") == 0)
		ok = days_opt(val, &pol->suspend_after);
	else if (strcmp(opt, "--close-after") == 0)
		ok = days_opt(val, &pol->close_after);
	else if (strcmp(opt, "--guarantee-days") == 0)
		ok = days_opt(val, &pol->guarantee_days);
	else if (strcmp(opt, "--currency") == 0) {
		const struct tg_currency *cur = tg_currency_find(val);
		if ((ok = cur != NULL))
			tg_currency_set(cur);
	} else if (strcmp(opt, "--now") == 0) {
		char *end;
		long long v = strtoll(val, &end, 10);
		ok = end != val && *end == '\0' && v > 0 && v < 253402300800LL;
		*now = (int64_t)v * 1000000;
	} else
		return 0;
	if (!ok) {
		snprintf(err, errlen, "%s '%s': not a valid value", opt, val);
		return -EINVAL;
	}
	if (c->maildir != NULL && c->sendmail != NULL) {
		snprintf(err, errlen, "--maildir and --sendmail are exclusive: choose one");
		return -EINVAL;
	}
	return 1;
}
