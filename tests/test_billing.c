/*
 * test_billing.c - a year of postpaid billing (docs/BILLING.md) against a
 * real SQLite ledger, a real redis-server (the gateway simulator and the
 * customer profiles) and the real tollgated (engine states and credits),
 * with a clock the test holds: no sleeping.
 *
 * Accounts:
 *   1001  signs up 2026-01-10; its card is declined on the first invoice,
 *         updated the next day, charged at the first retry; usage of every
 *         category, at the edges of the month.
 *   1002  signs up 2026-01-20 and never pays: late fee once per invoice,
 *         never compounded, then interrupted, suspended, closed on schedule.
 *   1003  no payment method at first: two partial manual payments, a
 *         replayed reference, a conflicting one; then a card.
 *   1004  signs up 2026-03-03, refunded on day 29 (subscriptions, not usage).
 *   2001  prepaid, refunded on day 28: what it bought minus its usage.
 *   2002  prepaid, refund refused on day 31.
 * Every figure is checked to the cent against the arithmetic in the
 * comments, as are the simulator's charge log and the maildir.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "../tools/billing.h"
#include "../tools/ledger.h"
#include "pg_harness.h"
#include "rcmd.h"
#include "refill_fixture.h"

#define DAY (86400LL * 1000000)

static struct rfx fx;
static struct tg_bill bill;
static struct ldb *db; /* the test's own connection: writes ledger rows as tollexport would */
static char dbpath[IT_PATH_MAX];
static int64_t clock_now;
static int64_t lsn = 1;
static bool use_pg;
static struct pg_cluster pg;

static int64_t
test_clock(void *arg)
{
	(void)arg;
	return clock_now;
}

/* 00:00 UTC of a day, plus hours. */
static int64_t
at(const char *day, int hours)
{
	int64_t us;
	assert_int_equal(tg_bill_day_parse(day, &us), 0);
	return us + (int64_t)hours * 3600 * 1000000;
}

static tg_money_t
M(const char *s)
{
	tg_money_t m;
	assert_int_equal(tg_money_parse(s, strlen(s), &m), 0);
	return m;
}

static void sql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int64_t sql_i64(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
sql(const char *fmt, ...)
{
	char q[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(q, sizeof(q), fmt, ap);
	va_end(ap);
	if (ldb_exec(db, q) != 0)
		fail_msg("%s: %s", q, ldb_err(db));
}

static int64_t
sql_i64(const char *fmt, ...)
{
	char q[1024];
	int64_t v = 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(q, sizeof(q), fmt, ap);
	va_end(ap);
	if (ldb_query_i64(db, q, 0, NULL, &v) < 0)
		fail_msg("%s: %s", q, ldb_err(db));
	return v;
}

static void sql_text(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

struct first_text {
	char *out;
	size_t cap;
};

static int
text_row(void *arg, unsigned nc, const char *const *v)
{
	struct first_text *t = arg;
	snprintf(t->out, t->cap, "%s", nc > 0 && v[0] ? v[0] : "(null)");
	return 1;
}

static void
sql_text(char *out, size_t cap, const char *fmt, ...)
{
	char q[1024];
	struct first_text t = {out, cap};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(q, sizeof(q), fmt, ap);
	va_end(ap);
	out[0] = '\0';
	if (ldb_query(db, q, 0, NULL, text_row, &t) < 0)
		fail_msg("%s: %s", q, ldb_err(db));
}

/* A call as tollexport writes it: one row of calls. */
static void
call(uint64_t acct, int64_t t, const char *category, const char *charge)
{
	sql("INSERT INTO calls (lsn, acct, time_us, kind, category, duration, charge)"
	    " VALUES (%" PRId64 ", %" PRIu64 ", %" PRId64 ", 'cdr', '%s', 60, %" PRId64 ")",
	    lsn++, acct, t, category, M(charge));
}

static void
account(uint64_t acct, const char *kind)
{
	sql("INSERT INTO accounts (acct, first_lsn, kind, credit_limit) VALUES (%" PRIu64
	    ", %" PRId64 ", '%s', %" PRId64 ")",
	    acct, lsn++, kind, strcmp(kind, "postpaid") == 0 ? M("100") : 0);
	it_run_cmd(fx.e, "ACCT.SET %" PRIu64 " BALANCE 0", acct);
}

static void
ok(int rc)
{
	if (rc != 0)
		fail_msg("billing: %d: %s", rc, bill.err);
}

static void
day_pass(int64_t t)
{
	struct tg_bill_report r;
	clock_now = t;
	ok(tg_bill_collect(&bill, &r));
}

static void
run_month(int y, int m, struct tg_bill_report *r)
{
	char d[16];
	snprintf(d, sizeof(d), "%04u-%02u-01", (unsigned)y % 10000, (unsigned)m % 100);
	clock_now = at(d, 1);
	ok(tg_bill_run(&bill, y, m, r));
}

static void
expect_state(uint64_t acct, const char *state)
{
	char v[32];
	it_acct_field(fx.e, acct, "state", v, sizeof(v));
	assert_string_equal(v, state);
}

static void
expect_invoice(int64_t number, uint64_t acct, const char *total, const char *paid,
               const char *status)
{
	char st[32];
	int64_t a = sql_i64("SELECT acct FROM bill_invoices WHERE number = %" PRId64, number);
	int64_t t = sql_i64("SELECT total FROM bill_invoices WHERE number = %" PRId64, number);
	int64_t p = sql_i64("SELECT paid FROM bill_invoices WHERE number = %" PRId64, number);
	sql_text(st, sizeof(st), "SELECT status FROM bill_invoices WHERE number = %" PRId64,
	         number);
	if (a != (int64_t)acct || t != M(total) || p != M(paid) || strcmp(st, status) != 0)
		fail_msg("invoice %" PRId64 ": account %" PRId64 ", total %" PRId64
		         ", paid %" PRId64 ", %s; expected %" PRIu64 ", %s, %s, %s",
		         number, a, t, p, st, acct, total, paid, status);
}

static void
expect_line(int64_t number, int line, const char *amount, const char *text_part)
{
	char t[256];
	assert_int_equal(sql_i64("SELECT amount FROM bill_lines WHERE invoice = %" PRId64
	                         " AND line = %d",
	                         number, line),
	                 M(amount));
	sql_text(t, sizeof(t),
	         "SELECT description FROM bill_lines WHERE invoice = %" PRId64 " AND line = %d",
	         number, line);
	if (strstr(t, text_part) == NULL)
		fail_msg("invoice %" PRId64 " line %d: '%s' lacks '%s'", number, line, t,
		         text_part);
}

static unsigned
mails(const char *prefix)
{
	return rfx_files(&fx, "new", prefix);
}

static void
mail_has(const char *name, const char *needle)
{
	char path[IT_PATH_MAX], buf[TG_MAIL_MAX + 1];
	it_pathf(path, sizeof(path), "%s/new/%s", fx.mail, name);
	assert_true(rfx_slurp(path, buf, sizeof(buf)) > 0);
	rfx_expect_has(buf, needle);
}

/* The simulator's record of a charge: "<amount> <token> <time>" -> the amount and token. */
static void
expect_charge(const char *request, const char *amount_token)
{
	redisReply *r = it_cmd(fx.r, "HGET tollgate:sim:charges %s", request);
	if (r->type != REDIS_REPLY_STRING)
		fail_msg("no charge %s in the simulator", request);
	if (strncmp(r->str, amount_token, strlen(amount_token)) != 0)
		fail_msg("charge %s is '%s', expected '%s ...'", request, r->str, amount_token);
	freeReplyObject(r);
}

static long long
sim_len(const char *hash)
{
	return it_int_cmd(fx.r, "HLEN %s", hash);
}

/* Every call the simulator received, summed over request ids. */
static long long
sim_calls(void)
{
	long long n = 0;
	redisReply *r = it_cmd(fx.r, "HVALS tollgate:sim:attempts");
	for (size_t i = 0; i < r->elements; i++)
		n += strtoll(r->element[i]->str, NULL, 10);
	freeReplyObject(r);
	return n;
}

static void
setup_world(void)
{
	struct tg_bill_conf conf = {0};
	char err[256];
	char port[16];
	const char *flags[] = {"--redis-host", "127.0.0.1", "--redis-port", port, NULL};

	rfx_setup(&fx, NULL);
	snprintf(port, sizeof(port), "%u", fx.redis.port);
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	fx.e = it_connect(&fx.d);
	assert_non_null(fx.e);
	it_pathf(dbpath, sizeof(dbpath), "%s/ledger.sqlite", fx.dir);
	if (use_pg)
		assert_int_equal(pg_create_db(&pg, "billing", dbpath, sizeof(dbpath)), 0);

	conf.db = dbpath;
	conf.migrate = true;
	conf.engine_host = "127.0.0.1";
	conf.engine_port = fx.d.port;
	conf.redis_host = "127.0.0.1";
	conf.redis_port = fx.redis.port;
	conf.maildir = fx.mail;
	conf.mail_from = "billing@carrier.example";
	tg_bill_policy_default(&bill.pol);
	bill.clock = test_clock;
	ok(tg_bill_open(&bill, &conf));
	assert_int_equal(ldb_open(&db, dbpath, err, sizeof(err)), 0);
	assert_int_equal(ledger_version(db), LEDGER_SCHEMA_VERSION);
}

static void
teardown_world(void)
{
	tg_bill_close(&bill);
	ldb_close(db);
	rfx_teardown(&fx);
}

/* ---- the year ---- */

static void
test_billing_year(void **state)
{
	struct tg_bill_report r;
	(void)state;
	setup_world();

	/* The products and the late-fee table. */
	clock_now = at("2026-01-01", 0);
	ok(tg_bill_product_set(&bill, "Basic line", M("19.99")));
	ok(tg_bill_late_fee_set(&bill, "US-GA", 150));
	ok(tg_bill_late_fee_set(&bill, "US-NY", 125));
	assert_int_equal(tg_bill_late_fee_set(&bill, "US-CA", 151), -EINVAL);
	assert_int_equal(tg_bill_product_set(&bill, "Odd", M("1.005")), -EINVAL);

	/* Sign-ups, mid-month. */
	account(1001, "postpaid");
	account(1002, "postpaid");
	account(1003, "postpaid");
	ok(tg_bill_customer_set(&bill, 1001, "US-GA", at("2026-01-10", 0)));
	ok(tg_bill_customer_set(&bill, 1002, "US-NY", at("2026-01-20", 0)));
	ok(tg_bill_customer_set(&bill, 1003, "US-GA", at("2026-01-01", 0)));
	ok(tg_bill_subscribe(&bill, 1001, "Basic line", at("2026-01-10", 0)));
	ok(tg_bill_subscribe(&bill, 1002, "Basic line", at("2026-01-20", 0)));
	ok(tg_bill_subscribe(&bill, 1003, "Basic line", at("2026-01-01", 0)));
	assert_int_equal(tg_bill_subscribe(&bill, 1001, "Gold", at("2026-01-10", 0)), -ENOENT);
	assert_int_equal(tg_bill_subscribe(&bill, 9999, "Basic line", at("2026-01-10", 0)),
	                 -ENOENT);
	assert_non_null(strstr(bill.err, "9999"));
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_a_old decline tok_never decline");
	rfx_profile(&fx, 1001, "ann@example.com", "card", "tok_a_old", "Ann Example");
	rfx_profile(&fx, 1002, "bob@example.com", "card", "tok_never", "Bob Example");
	rfx_profile(&fx, 1003, "cy@example.com", NULL, NULL, "Cy Example");

	/* January's usage, of every category; the edges of the month. */
	call(1001, at("2026-01-15", 10), "national", "1.234567");
	call(1001, at("2026-02-01", 0) - 1, "national", "0.5"); /* 23:59:59.999999 */
	call(1001, at("2026-01-20", 10), "international", "2.105");
	call(1001, at("2026-01-21", 10), "tollfree", "0.333333");
	call(1001, at("2026-01-22", 10), "directory", "1.25");
	call(1001, at("2026-01-23", 10), "local", "0.004999");
	call(1001, at("2026-02-01", 0), "international", "3"); /* February's */
	call(1002, at("2026-01-25", 10), "national", "10");
	call(1003, at("2026-01-05", 10), "local", "0.75");

	/* Not before its date; a malformed month. */
	clock_now = at("2026-01-31", 23);
	assert_int_equal(tg_bill_run(&bill, 2026, 2, &r), -EINVAL);
	assert_non_null(strstr(bill.err, "not yet"));
	int y, m;
	assert_int_equal(tg_bill_month_parse("2026-13", &y, &m), -EINVAL);
	assert_int_equal(tg_bill_month_parse("2026-2", &y, &m), -EINVAL);
	assert_int_equal(tg_bill_month_parse("26-12", &y, &m), -EINVAL);
	assert_int_equal(tg_bill_month_parse("2026-12x", &y, &m), -EINVAL);
	assert_int_equal(sql_i64("SELECT count(*) FROM bill_invoices"), 0);

	/*
	 * 2026-02-01: the first run, as if it crashed after writing the invoices
	 * (no gateway, no mail, no engine yet), then run again whole.
	 */
	struct tg_gateway *gw = bill.gw;
	struct tg_notifier *nt = bill.mail;
	bill.gw = NULL;
	bill.mail = NULL;
	run_month(2026, 2, &r);
	assert_int_equal(r.invoices, 3);
	assert_int_equal(sim_calls(), 0);
	assert_int_equal(mails("bill."), 0);
	bill.gw = gw;
	bill.mail = nt;
	run_month(2026, 2, &r);
	assert_int_equal(r.invoices, 0);

	/*
	 * 1001: Jan 10..31 = 22/31 of 19.99: 1999 * 22 / 31 = 1418.68 -> 14.19;
	 * February 19.99; usage by category: directory 1.25, international
	 * 2.105 -> 2.11 (half up), local 0.004999 -> 0.00, national 1.234567 +
	 * 0.5 = 1.734567 -> 1.73, tollfree 0.333333 -> 0.33.  Total 39.60.
	 */
	expect_invoice(1, 1001, "39.60", "0", "open");
	expect_line(1, 1, "14.19", "2026-01-10 to 2026-01-31 (22/31 days)");
	expect_line(1, 2, "19.99", "February 2026");
	expect_line(1, 3, "1.25", "directory");
	expect_line(1, 4, "2.11", "international");
	expect_line(1, 5, "0", "local");
	expect_line(1, 6, "1.73", "national, January 2026 (2 calls)");
	expect_line(1, 7, "0.33", "tollfree");
	assert_int_equal(sql_i64("SELECT count(*) FROM bill_lines WHERE invoice = 1"), 7);
	/* 1002: Jan 20..31 = 12/31: 773.81 -> 7.74; 19.99; national 10.00.  Total 37.73. */
	expect_invoice(2, 1002, "37.73", "0", "open");
	expect_line(2, 1, "7.74", "(12/31 days)");
	/* 1003: all of January (from the 1st), February, local 0.75.  Total 40.73. */
	expect_invoice(3, 1003, "40.73", "0", "open");
	expect_line(3, 1, "19.99", "January 2026");
	expect_line(3, 2, "19.99", "February 2026");
	expect_line(3, 3, "0.75", "local");
	/* One attempt each: two declined cards and no method; three invoice mails. */
	assert_int_equal(sim_calls(), 2);
	assert_int_equal(it_int_cmd(fx.r, "HGET tollgate:sim:attempts bill:1:1"), 1);
	assert_int_equal(sim_len("tollgate:sim:charges"), 0);
	assert_int_equal(mails("bill."), 3);
	mail_has("bill.1001.1.invoice.notice", "multipart/alternative");
	mail_has("bill.1001.1.invoice.notice", "$39.60");
	mail_has("bill.1001.1.invoice.notice", "credit card ****_old");
	mail_has("bill.1001.1.invoice.notice", "2026-02-04, 2026-02-08, 2026-02-15");
	mail_has("bill.1001.1.invoice.notice", "<td align=\"right\">$14.19</td>");
	mail_has("bill.1003.3.invoice.notice", "no payment method on file");

	/* Running the month again the same day: nothing charged or mailed twice. */
	run_month(2026, 2, &r);
	assert_int_equal(r.invoices + r.charged + r.failed + r.mails, 0);
	assert_int_equal(sim_calls(), 2);
	assert_int_equal(mails("bill."), 3);

	/* Every day of the year, with the events on their days. */
	for (int64_t t = at("2026-02-02", 1); t <= at("2027-01-15", 1); t += DAY) {
		int dy, dm, dd;
		time_t s = (time_t)(t / 1000000);
		struct tm tm;
		gmtime_r(&s, &tm);
		dy = tm.tm_year + 1900;
		dm = tm.tm_mon + 1;
		dd = tm.tm_mday;
		char today[16];
		snprintf(today, sizeof(today), "%04u-%02u-%02u", (unsigned)dy % 10000,
		         (unsigned)dm % 100, (unsigned)dd % 100);
		if (dd == 1) {
			run_month(dy, dm, &r);
			run_month(dy, dm, &r); /* twice: nothing new */
			assert_int_equal(r.invoices + r.charged + r.failed + r.mails, 0);
		}
		clock_now = t;
		bool dup;
		if (strcmp(today, "2026-02-02") == 0) {
			/* 1001 updates its card; 1003 pays part by cheque. */
			rfx_profile(&fx, 1001, NULL, "card", "tok_a_new", NULL);
			ok(tg_bill_pay(&bill, 1003, M("15"), "manual", "chk-1", &dup));
			assert_false(dup);
			expect_invoice(3, 1003, "40.73", "15", "open");
			/* Usage first: 0.75 of it, all of the usage, credited exactly. */
			assert_int_equal(it_acct_money(fx.e, 1003, "balance"), M("0.75"));
			ok(tg_bill_pay(&bill, 1003, M("15"), "manual", "chk-1", &dup));
			assert_true(dup);
			assert_int_equal(tg_bill_pay(&bill, 1003, M("16"), "manual", "chk-1", &dup),
			                 -EINVAL);
			assert_int_equal(tg_bill_pay(&bill, 9999, M("1"), "manual", NULL, &dup),
			                 -ENOENT);
			assert_int_equal(tg_bill_pay(&bill, 1003, M("1.001"), "manual", NULL, &dup),
			                 -EINVAL);
			expect_invoice(3, 1003, "40.73", "15", "open");
		}
		if (strcmp(today, "2026-02-06") == 0) {
			ok(tg_bill_pay(&bill, 1003, M("25.73"), "manual", "chk-2", &dup));
			expect_invoice(3, 1003, "40.73", "40.73", "paid");
			assert_int_equal(it_acct_money(fx.e, 1003, "balance"), M("0.75"));
		}
		if (strcmp(today, "2026-02-10") == 0)
			rfx_profile(&fx, 1003, NULL, "card", "tok_c", NULL);
		if (strcmp(today, "2026-03-03") == 0) {
			account(1004, "postpaid");
			ok(tg_bill_customer_set(&bill, 1004, "US-GA", at("2026-03-03", 0)));
			ok(tg_bill_subscribe(&bill, 1004, "Basic line", at("2026-03-03", 0)));
			rfx_profile(&fx, 1004, "dee@example.com", "paypal", "pp_dee_1234", "Dee");
			call(1004, at("2026-03-10", 10), "international", "4");
		}
		if (strcmp(today, "2026-04-01") == 0) {
			/* Day 29 after 2026-03-03: refunded, the usage kept. */
			clock_now = at("2026-04-01", 12);
			char out[2048] = "";
			FILE *f = fmemopen(out, sizeof(out), "w");
			ok(tg_bill_cancel(&bill, 1004, true, f));
			fclose(f);
			rfx_expect_has(out, "$38.69");
			expect_state(1004, "closed");
		}
		if (strcmp(today, "2026-05-05") == 0) {
			account(2001, "prepaid");
			account(2002, "prepaid");
			ok(tg_bill_customer_set(&bill, 2001, "US-GA", at("2026-05-05", 0)));
			ok(tg_bill_customer_set(&bill, 2002, "US-GA", at("2026-05-05", 0)));
			rfx_profile(&fx, 2001, "pat@example.com", "card", "tok_pat", NULL);
			rfx_profile(&fx, 2002, "peg@example.com", "card", "tok_peg", NULL);
			/* Auto-refills as tollrefill makes them: a charge, a credit, a ledger row.
			 */
			char ref[TG_GATEWAY_REF_MAX];
			const char *refills[][2] = {{"2001", "refill:2001:1"},
			                            {"2002", "refill:2002:1"}};
			for (int i = 0; i < 2; i++) {
				assert_int_equal(tg_gateway_charge(bill.gw, refills[i][1], "card",
				                                   i ? "tok_peg" : "tok_pat",
				                                   M("50"), ref),
				                 TG_CHARGE_APPROVED);
				it_run_cmd(fx.e, "ACCT.CREDIT %s 50 %s", refills[i][0],
				           refills[i][1]);
				sql("INSERT INTO credits (lsn, acct, time_us, amount, txid, source,"
				    " refill_seq) VALUES (%" PRId64 ", %s, %" PRId64 ", %" PRId64
				    ", '%s', 'refill', 1)",
				    lsn++, refills[i][0], t, M("50"), refills[i][1]);
			}
			/* 2001 uses 12.45: the engine's debits, the ledger's rows. */
			call(2001, t + 3600000000LL, "national", "10");
			call(2001, t + 7200000000LL, "directory", "2.45");
			it_run_cmd(fx.e, "ACCT.SET 2001 BALANCE 37.55");
		}
		if (strcmp(today, "2026-06-02") == 0) {
			char out[2048] = "";
			FILE *f = fmemopen(out, sizeof(out), "w");
			ok(tg_bill_cancel(&bill, 2001, true, f));
			fclose(f);
			/* Bought 50, used 12.45: 37.55 back, the balance to 0. */
			rfx_expect_has(out, "$37.55");
			expect_state(2001, "closed");
			assert_int_equal(it_acct_money(fx.e, 2001, "balance"), 0);
			redisReply *rr = it_cmd(fx.r, "HGET tollgate:sim:refunds refund:2001:1");
			assert_int_equal(rr->type, REDIS_REPLY_STRING);
			assert_int_equal(strncmp(rr->str, "37.55 refill:2001:1 ", 20), 0);
			freeReplyObject(rr);
			/* Again: the refund is done, nothing more goes back. */
			f = fmemopen(out, sizeof(out), "w");
			ok(tg_bill_cancel(&bill, 2001, true, f));
			fclose(f);
			assert_int_equal(
			    it_int_cmd(fx.r, "HGET tollgate:sim:refunded refill:2001:1"),
			    M("37.55"));
			assert_int_equal(mails("bill.2001.0.refund"), 1);
		}
		if (strcmp(today, "2026-06-05") == 0) {
			/* Day 31 for 2002: refused, nothing changed. */
			clock_now = at("2026-06-05", 12);
			FILE *f = fopen("/dev/null", "w");
			assert_int_equal(tg_bill_cancel(&bill, 2002, true, f), -EPERM);
			fclose(f);
			assert_non_null(
			    strstr(bill.err, "money-back guarantee ended on 2026-06-04"));
			expect_state(2002, "active");
			assert_int_equal(it_acct_money(fx.e, 2002, "balance"), M("50"));
			assert_int_equal(
			    sql_i64("SELECT count(*) FROM bill_refunds WHERE acct = 2002"), 0);
			assert_int_equal(sim_len("tollgate:sim:refunds"), 2);
		}

		day_pass(t);
		day_pass(t); /* twice a day: idempotent */

		/* 1002's course, day by day after its 2026-02-01 invoice. */
		if (strcmp(today, "2026-02-14") == 0) {
			expect_invoice(2, 1002, "37.73", "0", "open");
			expect_state(1002, "active");
		}
		if (strcmp(today, "2026-02-15") == 0) {
			/* The last retry failed: late, 1.25% of 37.73 = 0.4716 -> 0.47. */
			expect_invoice(2, 1002, "37.73", "0", "late");
			assert_int_equal(
			    sql_i64("SELECT late_fee FROM bill_invoices WHERE number = 2"),
			    M("0.47"));
			assert_int_equal(
			    sql_i64("SELECT attempts FROM bill_invoices WHERE number = 2"), 4);
			assert_int_equal(it_int_cmd(fx.r, "HGET tollgate:sim:attempts bill:2:4"),
			                 1);
			mail_has("bill.1002.2.late.notice", "late fee of $0.47 (1.25%");
			mail_has("bill.1002.2.late.notice", "interrupted on 2026-02-16");
			expect_state(1002, "active");
			/* 1001 was charged at its first retry, 2026-02-04, on the new card. */
			expect_invoice(1, 1001, "39.60", "39.60", "paid");
			expect_charge("bill:1:2", "39.6 tok_a_new ");
			/* The usage paid, exactly as the calls debited it: 5.427899. */
			assert_int_equal(it_acct_money(fx.e, 1001, "balance"), M("5.427899"));
		}
		if (strcmp(today, "2026-02-16") == 0) {
			expect_state(1002, "suspended");
			mail_has("bill.1002.2.interrupted.notice", "calls on account 1002");
		}
		if (strcmp(today, "2026-03-02") == 0) {
			/* 1002's March invoice: 19.99 + the fee 0.47 = 20.46. */
			expect_invoice(5, 1002, "20.46", "0", "open");
			expect_line(5, 2, "0.47", "Late fee on invoice 2 (1.25%)");
			/* 1001's March: 19.99 + February's international 3.00 = 22.99. */
			expect_invoice(4, 1001, "22.99", "22.99", "paid");
			expect_line(4, 2, "3", "international, February 2026");
			assert_int_equal(it_acct_money(fx.e, 1001, "balance"), M("8.427899"));
			expect_invoice(6, 1003, "19.99", "19.99", "paid");
			assert_int_equal(
			    sql_i64("SELECT count(*) FROM bill_notices WHERE acct = 1002 AND"
			            " step = 'suspended'"),
			    0);
		}
		if (strcmp(today, "2026-03-03") == 0) {
			expect_state(1002, "suspended");
			mail_has("bill.1002.2.suspended.notice", "suspended for non-payment");
		}
		if (strcmp(today, "2026-03-15") == 0) {
			/* Never compounded: 1.25% of 20.46 - 0.47 = 19.99 -> 0.2499 -> 0.25. */
			expect_invoice(5, 1002, "20.46", "0", "late");
			assert_int_equal(
			    sql_i64("SELECT late_fee FROM bill_invoices WHERE number = 5"),
			    M("0.25"));
		}
		if (strcmp(today, "2026-04-01") == 0) {
			/* 1004: Mar 3..31 = 29/31: 1870.03 -> 18.70; 19.99; 4.00.  42.69, by
			 * PayPal. */
			expect_invoice(10, 1004, "42.69", "42.69", "paid");
			expect_line(10, 1, "18.70", "(29/31 days)");
			expect_charge("bill:10:1", "42.69 pp_dee_1234 ");
			/* Refunded 42.69 - 4.00 of usage = 38.69, against that charge. */
			redisReply *rr = it_cmd(fx.r, "HGET tollgate:sim:refunds refund:1004:1");
			assert_int_equal(rr->type, REDIS_REPLY_STRING);
			assert_int_equal(strncmp(rr->str, "38.69 bill:10:1 ", 16), 0);
			freeReplyObject(rr);
			assert_int_equal(
			    sql_i64("SELECT SUM(amount) FROM bill_refunds WHERE acct = 1004"),
			    M("38.69"));
			mail_has("bill.1004.0.refund.notice", "$38.69");
			mail_has("bill.1004.0.refund.notice", "not refundable");
			expect_invoice(8, 1002, "20.24", "0", "open");
			expect_state(1002, "suspended");
		}
		if (strcmp(today, "2026-04-02") == 0) {
			/* Day 60 after 2026-02-01: closed, its invoices written off. */
			expect_state(1002, "closed");
			expect_invoice(2, 1002, "37.73", "0", "written off");
			expect_invoice(5, 1002, "20.46", "0", "written off");
			expect_invoice(8, 1002, "20.24", "0", "written off");
			mail_has("bill.1002.2.closed.notice", "closed");
		}
	}

	/* The year's figures. */
	assert_int_equal(sql_i64("SELECT count(*) FROM bill_invoices"), 28);
	assert_int_equal(sql_i64("SELECT MAX(number) FROM bill_invoices"), 28);
	/* 1001: 39.60 + 22.99 + 10 x 19.99 = 262.49, twelve invoices, all paid. */
	assert_int_equal(sql_i64("SELECT SUM(paid) FROM bill_invoices WHERE acct = 1001"),
	                 M("262.49"));
	assert_int_equal(sql_i64("SELECT count(*) FROM bill_invoices WHERE acct = 1001 AND"
	                         " status = 'paid'"),
	                 12);
	/* 1003: 40.73 + 11 x 19.99 = 260.62. */
	assert_int_equal(sql_i64("SELECT SUM(paid) FROM bill_invoices WHERE acct = 1003"),
	                 M("260.62"));
	/* 1002: three invoices, nothing paid, two late fees, one each. */
	assert_int_equal(sql_i64("SELECT count(*) FROM bill_invoices WHERE acct = 1002"), 3);
	assert_int_equal(sql_i64("SELECT SUM(late_fee) FROM bill_invoices WHERE acct = 1002"),
	                 M("0.72"));
	assert_int_equal(sql_i64("SELECT count(*) FROM bill_lines l JOIN bill_invoices i ON"
	                         " i.number = l.invoice WHERE i.acct = 1002 AND l.kind ="
	                         " 'late_fee'"),
	                 2);
	/* The simulator took exactly what the invoices say. */
	assert_int_equal(sim_len("tollgate:sim:charges"), 12 + 11 + 1 + 2);
	/* 1002: one mail per step: 3 invoices, 2 late, interrupted, suspended, closed. */
	assert_int_equal(mails("bill.1002."), 8);
	assert_int_equal(mails("bill.1001."), 12);
	assert_int_equal(mails("bill.1003."), 12);
	assert_int_equal(mails("bill.1004."), 2);
	assert_int_equal(sql_i64("SELECT count(*) FROM bill_notices WHERE sent <> 1"), 0);

	/* Statements. */
	char out[4096] = "";
	FILE *f = fmemopen(out, sizeof(out), "w");
	ok(tg_bill_invoices_print(&bill, 1002, f));
	fclose(f);
	rfx_expect_has(out, "written off");
	f = fmemopen(out, sizeof(out), "w");
	ok(tg_bill_invoice_print(&bill, 1, f));
	fclose(f);
	rfx_expect_has(out, "$39.60");
	rfx_expect_has(out, "bill:1:2");
	assert_int_equal(tg_bill_invoice_print(&bill, 999, stdout), -ENOENT);
	assert_int_equal(tg_bill_invoices_print(&bill, 9999, stdout), -ENOENT);

	/*
	 * 1002 pays its written-off debt later, by cheque, in two parts: each
	 * settles the oldest balance first, across invoices; a written-off
	 * invoice paid in full is paid.
	 */
	bool dup;
	ok(tg_bill_pay(&bill, 1002, M("50"), "manual", "chk-1002-a", &dup));
	expect_invoice(2, 1002, "37.73", "37.73", "paid");
	expect_invoice(5, 1002, "20.46", "12.27", "written off");
	expect_invoice(8, 1002, "20.24", "0", "written off");
	ok(tg_bill_pay(&bill, 1002, M("28.43"), "manual", "chk-1002-b", &dup));
	expect_invoice(5, 1002, "20.46", "20.46", "paid");
	expect_invoice(8, 1002, "20.24", "20.24", "paid");
	assert_int_equal(sql_i64("SELECT SUM(unapplied) FROM bill_payments WHERE acct = 1002"), 0);
	expect_state(1002, "closed");

	teardown_world();
}

/* Bad input: a database that cannot be reached, and nothing lost. */
/*
 * A payment restores an account interrupted for non-payment: its card
 * declines every attempt, the invoice goes late, calls are blocked the day
 * after; a manual payment of the balance due pays the invoice, the engine
 * makes the account active again at the next pass, and one notice says so.
 * The next pass changes nothing more.
 */
static void
test_late_payment_restores(void **state)
{
	bool dup;
	struct tg_bill_report r;
	(void)state;
	setup_world();
	clock_now = at("2026-01-01", 0);
	ok(tg_bill_product_set(&bill, "Basic line", M("19.99")));
	ok(tg_bill_late_fee_set(&bill, "US-GA", 150));
	account(2001, "postpaid");
	ok(tg_bill_customer_set(&bill, 2001, "US-GA", at("2026-01-01", 0)));
	ok(tg_bill_subscribe(&bill, 2001, "Basic line", at("2026-01-01", 0)));
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_decline decline");
	rfx_profile(&fx, 2001, "eve@example.com", "card", "tok_decline", "Eve");

	/* January from the 1st and February: 39.98, declined at once. */
	run_month(2026, 2, &r);
	expect_invoice(1, 2001, "39.98", "0", "open");
	for (int64_t t = at("2026-02-02", 1); t <= at("2026-02-17", 1); t += DAY)
		day_pass(t);
	/* Late after the last retry (day 14), interrupted on day 15. */
	expect_invoice(1, 2001, "39.98", "0", "late");
	expect_state(2001, "suspended");
	mail_has("bill.2001.1.interrupted.notice", "calls on account 2001");
	char err[160];
	it_error_of(fx.e, err, sizeof(err), "CALL.AUTH 2001 15551234567 late-1");
	assert_non_null(strstr(err, "SUSPENDED"));

	/* The customer pays the balance due by cheque on the 18th. */
	clock_now = at("2026-02-18", 9);
	ok(tg_bill_pay(&bill, 2001, M("39.98"), "manual", "chk-late", &dup));
	assert_false(dup);
	expect_invoice(1, 2001, "39.98", "39.98", "paid");
	day_pass(at("2026-02-18", 10));
	expect_state(2001, "active");
	mail_has("bill.2001.1.restored.notice", "is restored");
	int before = mails("bill.2001.");
	day_pass(at("2026-02-18", 11));
	day_pass(at("2026-02-19", 1));
	assert_int_equal(mails("bill.2001."), before);
	expect_state(2001, "active");
	teardown_world();
}

/*
 * A card charge pays the invoice it was made for, even while an older one
 * is late: 2002's card declines all of February's attempts (invoice 1
 * late), the customer puts a new card on file, and March's invoice is
 * charged once, at its run, and paid.  Before, the charge went to the late
 * invoice first, March's stayed open with its first attempt "done", and
 * every pass after charged the card again for it.  Invoice 1 stays late
 * (its own course goes on); a payment for it is the customer's to make.
 */
static void
test_card_charge_pays_its_own_invoice(void **state)
{
	struct tg_bill_report r;
	(void)state;
	setup_world();
	clock_now = at("2026-01-01", 0);
	ok(tg_bill_product_set(&bill, "Basic line", M("19.99")));
	account(2002, "postpaid");
	ok(tg_bill_customer_set(&bill, 2002, "US-GA", at("2026-01-01", 0)));
	ok(tg_bill_subscribe(&bill, 2002, "Basic line", at("2026-01-01", 0)));
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_decline2 decline");
	rfx_profile(&fx, 2002, "fay@example.com", "card", "tok_decline2", "Fay");

	run_month(2026, 2, &r);
	for (int64_t t = at("2026-02-02", 1); t <= at("2026-02-17", 1); t += DAY)
		day_pass(t);
	expect_invoice(1, 2002, "39.98", "0", "late");

	/* A new card; March's invoice is charged at its run, once, for itself. */
	rfx_profile(&fx, 2002, NULL, "card", "tok_fay_new", NULL);
	long long before = sim_calls();
	run_month(2026, 3, &r);
	assert_int_equal(r.charged, 1);
	int64_t total = sql_i64("SELECT total FROM bill_invoices WHERE number = 2");
	assert_int_equal(sql_i64("SELECT paid FROM bill_invoices WHERE number = 2"), total);
	char st[32];
	sql_text(st, sizeof(st), "SELECT status FROM bill_invoices WHERE number = 2");
	assert_string_equal(st, "paid");
	expect_invoice(1, 2002, "39.98", "0", "late");
	assert_int_equal(sim_calls(), before + 1);
	/* The passes after charge nothing more for it. */
	day_pass(at("2026-03-01", 2));
	day_pass(at("2026-03-02", 1));
	day_pass(at("2026-03-05", 1));
	assert_int_equal(sim_calls(), before + 1);
	teardown_world();
}

static void
test_billing_db_unreachable(void **state)
{
	struct tg_bill b = {0};
	struct tg_bill_conf conf = {.db = "/nonexistent-dir/ledger.sqlite", .migrate = true};
	(void)state;
	b.clock = test_clock;
	assert_int_equal(tg_bill_open(&b, &conf), -EIO);
	assert_true(strlen(b.err) > 0);
	tg_bill_close(&b);
	struct tg_bill b2 = {0};
	conf.db = "postgresql:///billing?host=/nonexistent-socket-dir&connect_timeout=2";
	assert_int_equal(tg_bill_open(&b2, &conf), -EIO);
	assert_true(strlen(b2.err) > 0);
	tg_bill_close(&b2);
}

/* The rules on their own: proration, the fee, percents. */
static void
test_billing_rules(void **state)
{
	unsigned bp;
	(void)state;
	/* 19.99 from the 10th of a 31-day month: 1999 * 22 / 31 = 1418.677 -> 14.19. */
	assert_int_equal(tg_bill_prorate(M("19.99"), 10, 31, 10000), M("14.19"));
	assert_int_equal(tg_bill_prorate(M("19.99"), 1, 28, 10000), M("19.99"));
	/* 10.00 over 16 of 32... half a cent up: 1000 * 1 / 8 (from the 29th of 32) = 125.0. */
	assert_int_equal(tg_bill_prorate(M("0.01"), 16, 30, 10000), M("0.01")); /* 0.5 -> 1 */
	assert_int_equal(tg_bill_prorate(M("0.01"), 17, 30, 10000), 0);         /* 0.466 -> 0 */
	assert_int_equal(tg_bill_fee(M("37.73"), 125, 10000), M("0.47"));
	assert_int_equal(tg_bill_fee(M("100"), 150, 10000), M("1.5"));
	assert_int_equal(tg_bill_fee(M("0.33"), 150, 10000), M("0")); /* 0.495 -> 0 */
	assert_int_equal(tg_bill_fee(M("0.34"), 150, 10000), M("0.01"));
	assert_int_equal(tg_bill_percent_parse("1.5", &bp), 0);
	assert_int_equal(bp, 150);
	assert_int_equal(tg_bill_percent_parse("0.75", &bp), 0);
	assert_int_equal(bp, 75);
	assert_int_equal(tg_bill_percent_parse("1.51", &bp), -EINVAL);
	assert_int_equal(tg_bill_percent_parse("1.505", &bp), -EINVAL);
	assert_int_equal(tg_bill_percent_parse("-1", &bp), -EINVAL);
	struct tg_bill_policy p;
	char err[256];
	tg_bill_policy_default(&p);
	assert_int_equal(tg_bill_policy_retries(&p, "3,7,14", err, sizeof(err)), 0);
	assert_int_equal(tg_bill_policy_retries(&p, "7,3", err, sizeof(err)), -EINVAL);
	assert_int_equal(tg_bill_policy_check(&p, err, sizeof(err)), 0);
	p.interrupt_after = 14;
	assert_int_equal(tg_bill_policy_check(&p, err, sizeof(err)), -EINVAL);
}

int
main(int argc, char **argv)
{
	if (!tg_test_redis_present())
		return 77;
	if (argc > 1 && strcmp(argv[1], "pg") == 0) {
		use_pg = true;
		/* Not installed: skipped (77).  Installed and not starting: failed. */
		int rc = pg_start(&pg);
		if (rc != 0) {
			fprintf(stderr, "no PostgreSQL cluster: %s\n", pg.why);
			return rc == -ENOENT ? 77 : 1;
		}
		const struct CMUnitTest pgt[] = {cmocka_unit_test(test_billing_year)};
		rc = cmocka_run_group_tests(pgt, NULL, NULL);
		pg_stop(&pg);
		return rc;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_billing_rules),
	    cmocka_unit_test(test_billing_db_unreachable),
	    cmocka_unit_test(test_billing_year),
	    cmocka_unit_test(test_late_payment_restores),
	    cmocka_unit_test(test_card_charge_pays_its_own_invoice),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
