/*
 * test_refill_work.c - unit tests of tools/refill_work.c, the refill
 * worker's decisions without Redis, the engine or a gateway: a stream entry
 * parsed (good ones, and every way one is malformed: a missing field, a bad
 * amount or account, an overlong or foreign id, an unknown mode, a broken
 * shape), a customer profile read, the outcome record's text both ways, and
 * the settle decisions (after the gateway's answer, with no payment method,
 * when another worker recorded first, the retry schedule).
 *
 * The replies are made by hiredis's own reader from RESP bytes, exactly as
 * the worker receives them.  Money is micro-units; the currency is USD
 * (cents), set in main.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>

#include "refill_work.h"
#include "tg_money.h"

/* ---- replies from RESP bytes ---- */

#define RESP_MAX 8192

/* The reply hiredis makes of text[0..len); the caller frees it. */
static redisReply *
reply_of(const char *text, size_t len)
{
	redisReader *rd = redisReaderCreate();
	void *out = NULL;

	assert_non_null(rd);
	assert_int_equal(redisReaderFeed(rd, text, len), REDIS_OK);
	assert_int_equal(redisReaderGetReply(rd, &out), REDIS_OK);
	assert_non_null(out);
	redisReaderFree(rd);
	return out;
}

struct resp {
	char b[RESP_MAX];
	size_t n;
};

static void put(struct resp *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void
put(struct resp *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(r->b + r->n, sizeof(r->b) - r->n, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(r->b) - r->n);
	r->n += (size_t)n;
}

/* A bulk string of s[0..len) (may hold NULs). */
static void
bulk(struct resp *r, const char *s, size_t len)
{
	put(r, "$%zu\r\n", len);
	assert_true(r->n + len + 2 < sizeof(r->b));
	memcpy(r->b + r->n, s, len);
	r->n += len;
	put(r, "\r\n");
}

/*
 * A stream entry [msgid, [f1, v1, f2, v2, ...]] from a NULL-ended list of
 * field and value strings.
 */
static redisReply *
entry(const char *msgid, ...)
{
	const char *kv[64];
	size_t n = 0;
	va_list ap;
	struct resp r = {.n = 0};

	va_start(ap, msgid);
	for (const char *s; (s = va_arg(ap, const char *)) != NULL;) {
		assert_true(n < 64);
		kv[n++] = s;
	}
	va_end(ap);
	put(&r, "*2\r\n");
	bulk(&r, msgid, strlen(msgid));
	put(&r, "*%zu\r\n", n);
	for (size_t i = 0; i < n; i++)
		bulk(&r, kv[i], strlen(kv[i]));
	return reply_of(r.b, r.n);
}

/* The good request every case below starts from, with field `drop` left out and one
 * field `set` replaced by value (NULL: none). */
static redisReply *
request_with(const char *drop, const char *set, const char *value)
{
	static const char *const f[][2] = {
	    {"id", "refill:42:7"}, {"account", "42"}, {"balance", "3.5"},      {"threshold", "10"},
	    {"mode", "add"},       {"amount", "50"},  {"fired", "1700000000"}, {"attempt", "1"},
	};
	const char *kv[16] = {0};
	size_t n = 0;
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		if (drop != NULL && strcmp(f[i][0], drop) == 0)
			continue;
		kv[n++] = f[i][0];
		kv[n++] = set != NULL && strcmp(f[i][0], set) == 0 ? value : f[i][1];
	}
	return entry("1700000000000-0", kv[0], kv[1], kv[2], kv[3], kv[4], kv[5], kv[6], kv[7],
	             kv[8], kv[9], kv[10], kv[11], kv[12], kv[13], kv[14], kv[15], NULL);
}

/* Parse e (freed here): the result, with q filled. */
static bool
parse(redisReply *e, struct rw_request *q)
{
	bool ok = rw_parse_entry(e, q);
	freeReplyObject(e);
	return ok;
}

/* q->why starts with want. */
static void
why_is(const struct rw_request *q, const char *want)
{
	if (strncmp(q->why, want, strlen(want)) != 0)
		fail_msg("why is \"%s\", expected \"%s...\"", q->why, want);
}

/* ---- good entries ---- */

static void
test_entry_good(void **state)
{
	struct rw_request q;
	(void)state;

	assert_true(parse(request_with(NULL, NULL, NULL), &q));
	assert_string_equal(q.msgid, "1700000000000-0");
	assert_string_equal(q.id, "refill:42:7");
	assert_int_equal(q.account, 42);
	assert_int_equal(q.amount, 50000000);
	assert_true(q.has_balance);
	assert_int_equal(q.balance, 3500000);
	assert_true(q.reportable);
	assert_string_equal(q.why, "");

	/* The required fields alone; topup; a field of a newer publisher is ignored. */
	assert_true(parse(entry("1-1", "amount", "0.25", "account", "18446744073709551614", "id",
	                        "refill:18446744073709551614:4294967295", "mode", "topup",
	                        "channel", "sms", NULL),
	                  &q));
	assert_int_equal(q.account, UINT64_MAX - 1);
	assert_int_equal(q.amount, 250000);
	assert_false(q.has_balance);
	/* A negative balance is a balance (a CDR took it below zero). */
	assert_true(parse(request_with(NULL, "balance", "-0.000125"), &q));
	assert_int_equal(q.balance, -125);
}

/* ---- malformed entries ---- */

static void
test_entry_missing_fields(void **state)
{
	struct rw_request q;
	(void)state;

	assert_false(parse(request_with("id", NULL, NULL), &q));
	assert_string_equal(q.why, "no id field");
	assert_false(q.reportable);
	assert_string_equal(q.msgid, "1700000000000-0"); /* still moved to the dead letters */
	assert_false(parse(request_with("account", NULL, NULL), &q));
	assert_string_equal(q.why, "no account field");
	assert_false(q.reportable);
	assert_false(parse(request_with("amount", NULL, NULL), &q));
	assert_string_equal(q.why, "no amount field");
	/* The optional ones may be left out. */
	const char *optional[] = {"balance", "threshold", "mode", "fired", "attempt"};
	for (size_t i = 0; i < sizeof(optional) / sizeof(optional[0]); i++)
		assert_true(parse(request_with(optional[i], NULL, NULL), &q));
}

static void
test_entry_bad_amounts(void **state)
{
	static const char *const bad[] = {
	    "",      "abc",   "-5",  "0",         "-0",
	    "1.001", "0.01x", "1e3", "1.0000001", "99999999999999999999",
	    " 5",    "0.001",
	};
	struct rw_request q;
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(request_with(NULL, "amount", bad[i]), &q))
			fail_msg("amount \"%s\" was accepted", bad[i]);
		/* The id and account are sound: the engine is told the request failed. */
		assert_true(q.reportable);
		if (strncmp(q.why, "bad amount", 10) != 0 &&
		    strncmp(q.why, "amount is not whole minor units", 31) != 0)
			fail_msg("amount \"%s\": why is \"%s\"", bad[i], q.why);
	}
	assert_false(parse(request_with(NULL, "amount", "1.001"), &q));
	why_is(&q, "amount is not whole minor units of the currency: \"1.001\"");
	assert_false(parse(request_with(NULL, "balance", "3.5.0"), &q));
	why_is(&q, "bad balance \"3.5.0\"");
	assert_false(parse(request_with(NULL, "threshold", "ten"), &q));
	why_is(&q, "bad threshold \"ten\"");
	/* One cent is whole. */
	assert_true(parse(request_with(NULL, "amount", "0.01"), &q));
	assert_int_equal(q.amount, 10000);
}

static void
test_entry_bad_accounts(void **state)
{
	static const char *const bad[] = {
	    "", "x", "-1", "+42", "4 2", "18446744073709551615", "99999999999999999999"};
	struct rw_request q;
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(request_with(NULL, "account", bad[i]), &q))
			fail_msg("account \"%s\" was accepted", bad[i]);
		why_is(&q, "bad account");
		assert_false(q.reportable);
	}
}

static void
test_entry_ids(void **state)
{
	char longid[TG_CALLID_MAX + 2];
	char longmsg[RW_MSGID_MAX + 1];
	struct rw_request q;
	(void)state;

	/* Overlong: one byte more than a call id may have. */
	memset(longid, '7', sizeof(longid) - 1);
	memcpy(longid, "refill:42:", 10);
	longid[sizeof(longid) - 1] = '\0';
	assert_false(parse(request_with(NULL, "id", longid), &q));
	why_is(&q, "id is not a refill request id of the account:");
	assert_false(q.reportable);
	/* Only the canonical spelling, and only the account's own. */
	static const char *const bad[] = {
	    "refill:0042:7", "refill:42:07",  "refill:43:7", "refill:42:0",
	    "refill:42",     "refill:42:7:1", "REFILL:42:7", "x"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(request_with(NULL, "id", bad[i]), &q))
			fail_msg("id \"%s\" was accepted", bad[i]);
		why_is(&q, "id is not a refill request id of the account:");
	}
	/* An entry id that does not fit: not a stream entry, nothing to acknowledge. */
	memset(longmsg, '1', sizeof(longmsg) - 1);
	longmsg[sizeof(longmsg) - 1] = '\0';
	assert_false(
	    parse(entry(longmsg, "id", "refill:42:7", "account", "42", "amount", "5", NULL), &q));
	assert_string_equal(q.why, "not a stream entry");
	assert_string_equal(q.msgid, "");
}

static void
test_entry_modes(void **state)
{
	static const char *const bad[] = {"off", "weekly", "ADD", "Topup", "", "add "};
	struct rw_request q;
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(request_with(NULL, "mode", bad[i]), &q))
			fail_msg("mode \"%s\" was accepted", bad[i]);
		why_is(&q, "bad mode");
		assert_true(q.reportable);
	}
	/* "add" followed by a NUL byte is not "add". */
	struct resp r = {.n = 0};
	put(&r, "*2\r\n");
	bulk(&r, "5-0", 3);
	put(&r, "*8\r\n");
	bulk(&r, "id", 2);
	bulk(&r, "refill:42:7", 11);
	bulk(&r, "account", 7);
	bulk(&r, "42", 2);
	bulk(&r, "amount", 6);
	bulk(&r, "5", 1);
	bulk(&r, "mode", 4);
	bulk(&r, "add\0x", 5);
	assert_false(parse(reply_of(r.b, r.n), &q));
	why_is(&q, "bad mode");
	assert_true(parse(request_with(NULL, "mode", "topup"), &q));
}

static void
test_entry_shapes(void **state)
{
	struct rw_request q;
	(void)state;

	static const char not_array[] = "$3\r\nabc\r\n";
	assert_false(parse(reply_of(not_array, sizeof(not_array) - 1), &q));
	assert_string_equal(q.why, "not a stream entry");
	/* XREADGROUP of a pending entry deleted from the stream: [id, nil]. */
	static const char deleted[] = "*2\r\n$3\r\n9-0\r\n*-1\r\n";
	assert_false(parse(reply_of(deleted, sizeof(deleted) - 1), &q));
	assert_string_equal(q.why, "deleted from the stream while pending");
	assert_string_equal(q.msgid, "9-0");
	static const char odd[] = "*2\r\n$3\r\n9-0\r\n*1\r\n$2\r\nid\r\n";
	assert_false(parse(reply_of(odd, sizeof(odd) - 1), &q));
	assert_string_equal(q.why, "fields are not pairs");
	static const char integer[] = "*2\r\n$3\r\n9-0\r\n*2\r\n$2\r\nid\r\n:5\r\n";
	assert_false(parse(reply_of(integer, sizeof(integer) - 1), &q));
	assert_string_equal(q.why, "a field is not a string");
	assert_false(parse(
	    entry("9-0", "id", "refill:42:7", "account", "42", "amount", "5", "amount", "6", NULL),
	    &q));
	why_is(&q, "field given twice: \"amount\"");
	assert_false(parse(request_with(NULL, "fired", "-1"), &q));
	why_is(&q, "bad fired");
	assert_false(parse(request_with(NULL, "attempt", "2x"), &q));
	why_is(&q, "bad attempt");
}

/* ---- the profile ---- */

static void
test_profile(void **state)
{
	struct rw_profile p;
	struct resp r = {.n = 0};
	char longname[TG_MAIL_NAME_MAX + 20];
	(void)state;

	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	put(&r, "*10\r\n");
	const char *kv[] = {"email", "ann@example.com", "method", "paypal", "token", "tok_1",
	                    "name",  longname,          "color",  "blue"};
	for (size_t i = 0; i < 10; i++)
		bulk(&r, kv[i], strlen(kv[i]));
	redisReply *rep = reply_of(r.b, r.n);
	rw_profile_read(rep, &p);
	freeReplyObject(rep);
	assert_true(p.found);
	assert_string_equal(p.email, "ann@example.com");
	assert_string_equal(p.method, "paypal");
	assert_string_equal(p.token, "tok_1");
	assert_int_equal(strlen(p.name), TG_MAIL_NAME_MAX);

	/* Unusable fields are left empty: no charge can be made with them. */
	struct rw_outcome oc;
	rep = entry("x", "email", "not an address", "method", "cheque", "token", "tok 1", NULL);
	rw_profile_read(rep->element[1], &p);
	freeReplyObject(rep);
	assert_true(p.found);
	assert_string_equal(p.email, "");
	assert_string_equal(p.method, "");
	assert_string_equal(p.token, "");
	assert_false(rw_may_charge(&p, &oc));
	assert_int_equal(oc.state, RW_OC_FAILED);
	assert_string_equal(oc.reason, "no-payment-method");
	assert_int_equal(oc.attempts, 0);

	/* No profile at all, and a key of another type (WRONGTYPE). */
	static const char empty[] = "*0\r\n", wrong[] = "-WRONGTYPE not a hash\r\n";
	rep = reply_of(empty, sizeof(empty) - 1);
	rw_profile_read(rep, &p);
	freeReplyObject(rep);
	assert_false(p.found);
	assert_false(rw_may_charge(&p, &oc));
	rep = reply_of(wrong, sizeof(wrong) - 1);
	rw_profile_read(rep, &p);
	freeReplyObject(rep);
	assert_false(p.found);

	/* A method but no token, then both. */
	rep = entry("x", "method", "card", NULL);
	rw_profile_read(rep->element[1], &p);
	freeReplyObject(rep);
	assert_string_equal(p.method, "card");
	assert_false(rw_may_charge(&p, &oc));
	rep = entry("x", "method", "card", "token", "tok_visa", NULL);
	rw_profile_read(rep->element[1], &p);
	freeReplyObject(rep);
	assert_true(rw_may_charge(&p, &oc));
}

/* ---- outcome records ---- */

static void
test_outcome_text(void **state)
{
	struct rw_outcome a = {.state = RW_OC_CREDITED,
	                       .amount = 50000000,
	                       .balance = 54940000,
	                       .attempts = 2,
	                       .ref = "sim:refill:42:7"},
	                  b;
	char text[RW_OUTCOME_TEXT_MAX];
	(void)state;

	rw_outcome_format(&a, text, sizeof(text));
	assert_string_equal(text, "credited 50 2 54.94 sim:refill:42:7");
	assert_true(rw_outcome_parse(text, &b));
	assert_int_equal(b.state, RW_OC_CREDITED);
	assert_int_equal(b.amount, a.amount);
	assert_int_equal(b.balance, a.balance);
	assert_int_equal(b.attempts, 2);
	assert_string_equal(b.ref, a.ref);
	a.state = RW_OC_APPROVED;
	rw_outcome_format(&a, text, sizeof(text));
	assert_string_equal(text, "approved 50 2 sim:refill:42:7");
	assert_true(rw_outcome_parse(text, &b));
	assert_int_equal(b.state, RW_OC_APPROVED);
	a = (struct rw_outcome){.state = RW_OC_FAILED, .attempts = 3, .reason = "timeout"};
	rw_outcome_format(&a, text, sizeof(text));
	assert_string_equal(text, "failed timeout 3");
	assert_true(rw_outcome_parse(text, &b));
	assert_int_equal(b.state, RW_OC_FAILED);
	assert_string_equal(b.reason, "timeout");

	static const char *const bad[] = {"",
	                                  "ok",
	                                  "failed",
	                                  "failed x",
	                                  "failed x 1 2",
	                                  "approved -5 1 r",
	                                  "approved 0 1 r",
	                                  "approved 5",
	                                  "credited 5 1 x r",
	                                  "approved x 1 r"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (rw_outcome_parse(bad[i], &b))
			fail_msg("outcome \"%s\" was read as one of ours", bad[i]);
		assert_int_equal(b.state, RW_OC_NONE);
	}
}

/* ---- the settle decisions ---- */

static void
test_settle_after_charge(void **state)
{
	static const struct {
		enum tg_charge_outcome out;
		unsigned attempt, max;
		enum rw_settle want;
		const char *reason;
	} cases[] = {
	    {TG_CHARGE_APPROVED, 1, 3, RW_SETTLE_APPROVED, ""},
	    {TG_CHARGE_APPROVED, 3, 3, RW_SETTLE_APPROVED, ""},
	    {TG_CHARGE_DECLINED, 1, 3, RW_SETTLE_FAILED, "declined"},
	    {TG_CHARGE_EXPIRED, 1, 3, RW_SETTLE_FAILED, "expired"},
	    {TG_CHARGE_TIMEOUT, 1, 3, RW_SCHEDULE, "timeout"},
	    {TG_CHARGE_ERROR, 2, 3, RW_SCHEDULE, "error"},
	    {TG_CHARGE_TIMEOUT, 3, 3, RW_SETTLE_FAILED, "timeout"},
	    {TG_CHARGE_ERROR, 1, 1, RW_SETTLE_FAILED, "error"},
	    {TG_CHARGE_TIMEOUT, 5, 3, RW_SETTLE_FAILED, "timeout"}, /* past the last: never more */
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rw_outcome oc = {.attempts = cases[i].attempt};
		rw_charged(&oc, cases[i].out, cases[i].max, 7000000);
		if (rw_settle_of(&oc) != cases[i].want)
			fail_msg("case %zu: settle %d, expected %d", i, rw_settle_of(&oc),
			         cases[i].want);
		assert_string_equal(oc.reason, cases[i].reason);
		assert_int_equal(oc.amount, cases[i].out == TG_CHARGE_APPROVED ? 7000000 : 0);
		assert_int_equal(oc.attempts, cases[i].attempt);
	}
	struct rw_outcome credited = {.state = RW_OC_CREDITED};
	assert_int_equal(rw_settle_of(&credited), RW_SETTLE_APPROVED);
}

static void
test_settle_follow(void **state)
{
	struct rw_outcome approved = {.state = RW_OC_APPROVED},
	                  credited = {.state = RW_OC_CREDITED}, failed = {.state = RW_OC_FAILED},
	                  none = {.state = RW_OC_NONE};
	(void)state;

	/* Money taken reaches the account, whatever another worker recorded. */
	assert_true(rw_follow_mine(&approved, &failed));
	/* Theirs unreadable or gone: ours is recorded. */
	assert_true(rw_follow_mine(&approved, &none));
	assert_true(rw_follow_mine(&failed, &none));
	/* Otherwise theirs is followed: one credit, one mail. */
	assert_false(rw_follow_mine(&approved, &approved));
	assert_false(rw_follow_mine(&approved, &credited));
	assert_false(rw_follow_mine(&failed, &approved));
	assert_false(rw_follow_mine(&failed, &failed));
}

static void
test_retry_delay(void **state)
{
	const uint64_t day = 24ull * 3600 * 1000;
	(void)state;

	assert_int_equal(rw_retry_delay_ms(day, 3, 1), 8ull * 3600 * 1000);
	assert_int_equal(rw_retry_delay_ms(day, 3, 2), 16ull * 3600 * 1000);
	assert_int_equal(rw_retry_delay_ms(day, 2, 1), day);
	/*
	 * The pauses add up to the period (to a few ms of rounding), each twice
	 * the last (the first ones, below 1 ms here, are 1 ms).
	 */
	uint64_t sum = 0;
	for (unsigned k = 1; k < 30; k++) {
		uint64_t d = rw_retry_delay_ms(day, 30, k);
		uint64_t prev = k > 1 ? rw_retry_delay_ms(day, 30, k - 1) : 0;
		assert_true(d >= 2 * prev || prev == 1);
		sum += d;
	}
	assert_true(sum <= day && sum + 30 >= day);
	assert_int_equal(rw_retry_delay_ms(1, 30, 1), 1); /* never 0 */
}

int
main(void)
{
	tg_currency_set(tg_currency_find("USD"));
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_entry_good),        cmocka_unit_test(test_entry_missing_fields),
	    cmocka_unit_test(test_entry_bad_amounts), cmocka_unit_test(test_entry_bad_accounts),
	    cmocka_unit_test(test_entry_ids),         cmocka_unit_test(test_entry_modes),
	    cmocka_unit_test(test_entry_shapes),      cmocka_unit_test(test_profile),
	    cmocka_unit_test(test_outcome_text),      cmocka_unit_test(test_settle_after_charge),
	    cmocka_unit_test(test_settle_follow),     cmocka_unit_test(test_retry_delay),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
