/*
 * test_server.c - the real tollgated, driven over real sockets.
 *
 * Every test starts its own daemon (harness.c) on a private port and
 * segment, with rate plans and accounts this file writes, so every counter
 * and balance it reads is known exactly.  Expected charges and grants come
 * from a model of the billing rules written here from docs/RATES.md, in
 * integer micro-units (no float anywhere), never from the engine's code.
 * Clients are hiredis's synchronous API, and raw sockets where the bytes on
 * the wire are the point (malformed input, idle connections).  Threads never
 * call cmocka: they record their first failure and the main thread asserts.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rcmd.h"

#define FMT(a, b) __attribute__((format(printf, a, b)))

/* Micro-units per currency unit. */
#define U 1000000LL

#define PASSWORD "s3cret"
/* Expected error, then a command's arguments, NULL-terminated: see expect_errors. */
#define ARGV_MAX  10
#define MAX_GRANT 600

/* Destinations, and which row of each plan they match. */
#define D_NAT  "15551234567"  /* "1" in every plan */
#define D_UK   "441234567890" /* flat "44" */
#define D_LON  "442071234567" /* flat "4420": the longest prefix */
#define D_DIR  "4115551212"   /* flat "411": connect fee only */
#define D_NONE "999123"       /* no row in any plan */

/* ------------------------------------------------------------------ */
/* the model: rate plans and billing, from docs/RATES.md               */

enum { CAT_LOCAL, CAT_NATIONAL, CAT_INTERNATIONAL, CAT_TOLLFREE, CAT_DIRECTORY, CAT__COUNT = 8 };

static const char *const categories[CAT__COUNT] = {
    "local", "national", "international", "tollfree", "directory", "mobile", "premium", "other"};

struct row {
	const char *plan, *prefix;
	unsigned category;
	int64_t per_min, connect; /* micro-units */
	uint32_t initial, increment, minimum;
};

/* Written to rates.csv in this order; the first plan named is registered first. */
static const struct row rows[] = {
    {"flat", "1", CAT_NATIONAL, 600000, 0, 60, 60, 0},
    {"flat", "44", CAT_INTERNATIONAL, 1200000, 0, 60, 60, 0},
    {"flat", "4420", CAT_INTERNATIONAL, 900000, 0, 60, 60, 0},
    {"flat", "411", CAT_DIRECTORY, 0, 1500000, 60, 60, 0},
    {"six", "1", CAT_NATIONAL, 600000, 0, 6, 6, 0},
    {"fee", "1", CAT_NATIONAL, 600000, 250000, 60, 60, 0},
    {"sec", "1", CAT_NATIONAL, 600000, 0, 1, 1, 0},
    {"mini", "1", CAT_NATIONAL, 60000, 0, 30, 6, 45},
    {"odd", "1", CAT_NATIONAL, 10000, 0, 1, 1, 0},
};

static const struct row *
model_rate(const char *plan, const char *dest)
{
	const struct row *best = NULL;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		size_t n = strlen(rows[i].prefix);
		if (strcmp(rows[i].plan, plan) == 0 && strncmp(dest, rows[i].prefix, n) == 0 &&
		    (best == NULL || n > strlen(best->prefix)))
			best = &rows[i];
	}
	return best;
}

static uint64_t
model_billed(const struct row *r, uint64_t d)
{
	uint64_t b;
	if (d == 0)
		return 0;
	if (d <= r->initial)
		b = r->initial;
	else
		b = r->initial + (d - r->initial + r->increment - 1) / r->increment * r->increment;
	return b > r->minimum ? b : r->minimum;
}

static int64_t
model_charge(const struct row *r, uint64_t d)
{
	uint64_t b = model_billed(r, d);
	if (b == 0)
		return 0;
	return r->connect + (int64_t)((b * (uint64_t)r->per_min + 59) / 60);
}

/*
 * The longest grant at most cap that ends on a billing boundary (a call one
 * second longer is billed more) and costs at most avail; 0 when none.  By
 * brute force, to stay independent of the engine's closed form.
 */
static uint32_t
model_grant(const struct row *r, int64_t avail, uint32_t cap, int64_t *cost)
{
	*cost = 0;
	if (avail <= 0)
		return 0;
	for (uint32_t d = cap; d >= 1; d--) {
		if (model_billed(r, d + 1) > model_billed(r, d) && model_charge(r, d) <= avail) {
			*cost = model_charge(r, d);
			return d;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* money as text, exactly                                              */

/* The engine's one text form: no trailing zeros, no point for whole amounts. */
static void
money_fmt(int64_t v, char buf[32])
{
	uint64_t mag = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	uint64_t frac = mag % (uint64_t)U;
	int n = snprintf(buf, 32, "%s%" PRIu64, v < 0 ? "-" : "", mag / (uint64_t)U);

	if (frac != 0) {
		int digits = 6;
		while (frac % 10 == 0) {
			frac /= 10;
			digits--;
		}
		snprintf(buf + n, (size_t)(32 - n), ".%0*" PRIu64, digits, frac);
	}
}

/* "-12.5" into micro-units; -1 unless the whole string is an amount. */
static int
money_parse(const char *s, int64_t *out)
{
	int neg = *s == '-';
	int64_t whole = 0, frac = 0;
	int digits = 0;

	s += neg;
	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++)
		whole = whole * 10 + (*s - '0');
	if (*s == '.') {
		for (s++; *s >= '0' && *s <= '9' && digits < 6; s++, digits++)
			frac = frac * 10 + (*s - '0');
		if (digits == 0)
			return -1;
		for (; digits < 6; digits++)
			frac *= 10;
	}
	if (*s != '\0')
		return -1;
	*out = (whole * U + frac) * (neg ? -1 : 1);
	return 0;
}

/* ------------------------------------------------------------------ */
/* the fixture: one daemon per test                                    */

struct fx {
	char dir[IT_PATH_MAX], rates[IT_PATH_MAX], accounts[IT_PATH_MAX];
	struct it_daemon d;
	redisContext *c;
};

static struct fx fx;

static const char accounts_csv[] =
    "account,balance,plan,state,threshold,refill,refill_amount,payment\n"
    "100,10,flat,active,,off,,off\n"
    "101,40,flat,suspended,,off,,off\n"
    "102,12,flat,closed,,off,,off\n"
    "103,25,fee,active,10,add,50,on\n";

/* rates.csv from rows[], with flat's prefix "1" at per_min (0: as in rows[]). */
static void
rates_text(char *buf, size_t cap, int64_t flat_per_min)
{
	size_t n = (size_t)snprintf(buf, cap,
	                            "# written by test_server.c\n"
	                            "plan,prefix,category,rate_per_min,connect_fee,"
	                            "initial,increment,minimum\n");
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		char pm[32], cf[32];
		money_fmt(i == 0 && flat_per_min ? flat_per_min : r->per_min, pm);
		money_fmt(r->connect, cf);
		n += (size_t)snprintf(buf + n, cap - n, "%s,%s,%s,%s,%s,%u,%u,%u\n", r->plan,
		                      r->prefix, categories[r->category], pm, cf, r->initial,
		                      r->increment, r->minimum);
		assert_true(n < cap);
	}
}

static void
write_rates(int64_t flat_per_min)
{
	char text[4096];
	rates_text(text, sizeof(text), flat_per_min);
	assert_int_equal(it_file_write(fx.dir, "rates.csv", text, fx.rates, sizeof(fx.rates)), 0);
}

static int
fx_start(const char *const *extra)
{
	const char *flags[48];
	unsigned n = 0;

	memset(&fx, 0, sizeof(fx));
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	write_rates(0);
	assert_int_equal(
	    it_file_write(fx.dir, "accounts.csv", accounts_csv, fx.accounts, sizeof(fx.accounts)),
	    0);
	flags[n++] = "--rates";
	flags[n++] = fx.rates;
	flags[n++] = "--accounts";
	flags[n++] = fx.accounts;
	flags[n++] = "--max-grant";
	flags[n++] = "600";
	for (unsigned i = 0; extra != NULL && extra[i] != NULL; i++)
		flags[n++] = extra[i];
	flags[n] = NULL;
	assert_true(n < sizeof(flags) / sizeof(flags[0]));
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	fx.c = it_connect(&fx.d);
	assert_non_null(fx.c);
	return 0;
}

static int
setup_std(void **state)
{
	(void)state;
	return fx_start(NULL);
}

static int
setup_auth(void **state)
{
	static const char *const f[] = {"--requirepass", PASSWORD, NULL};
	(void)state;
	return fx_start(f);
}

/* A larger request allowed before AUTH than after it. */
static int
setup_auth_shrinks(void **state)
{
	static const char *const f[] = {
	    "--requirepass", PASSWORD, "--max-request", "128", "--max-request-noauth",
	    "1024",          NULL};
	(void)state;
	return fx_start(f);
}

static int
setup_update(void **state)
{
	static const char *const f[] = {"--max-grant", "60", NULL};
	(void)state;
	return fx_start(f);
}

static int
setup_expiry(void **state)
{
	static const char *const f[] = {"--max-grant", "2", "--call-grace", "1", NULL};
	(void)state;
	return fx_start(f);
}

/* The bundled demo plans, no accounts, 6-second grants settled 1 s after. */
static int
setup_expiry_demo(void **state)
{
	static const char *const f[] = {"--max-grant", "6", "--call-grace", "1", NULL};
	(void)state;
	memset(&fx, 0, sizeof(fx));
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_start(&fx.d, fx.dir, f), 0);
	fx.c = it_connect(&fx.d);
	assert_non_null(fx.c);
	return 0;
}

static int
setup_idle(void **state)
{
	static const char *const f[] = {"--idle-timeout", "1", NULL};
	(void)state;
	return fx_start(f);
}

static int
teardown(void **state)
{
	(void)state;
	if (fx.c != NULL)
		redisFree(fx.c);
	fx.c = NULL;
	int rc = it_stop(&fx.d);
	it_dir_remove(fx.dir);
	assert_int_equal(rc, 0); /* a clean exit: also what ASan's leak check reports through */
	return 0;
}

/* ------------------------------------------------------------------ */
/* commands and replies (main thread only)                             */

static char last[512]; /* the last command sent, for failure messages */

static redisReply *vcmd(redisContext *c, const char *fmt, va_list ap) FMT(2, 0);

static redisReply *
vcmd(redisContext *c, const char *fmt, va_list ap)
{
	va_list copy;
	va_copy(copy, ap);
	vsnprintf(last, sizeof(last), fmt, copy);
	va_end(copy);
	redisReply *r = redisvCommand(c, fmt, ap);
	if (r == NULL)
		fail_msg("%s: no reply (%s)", last, c->errstr);
	return r;
}

static redisReply *cmd(redisContext *c, const char *fmt, ...) FMT(2, 3);

static redisReply *
cmd(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = vcmd(c, fmt, ap);
	va_end(ap);
	return r;
}

/* Arguments given one by one (NULL-terminated): empty ones and spaces survive. */
static redisReply *
cmd_argv(redisContext *c, const char *const *argv)
{
	int argc = 0;
	size_t n = 0;
	last[0] = '\0';
	for (; argv[argc] != NULL; argc++)
		if (n < sizeof(last))
			n += (size_t)snprintf(last + n, sizeof(last) - n, "%s'%s'", argc ? " " : "",
			                      argv[argc]);
	redisReply *r = redisCommandArgv(c, argc, (const char **)argv, NULL);
	if (r == NULL)
		fail_msg("%s: no reply (%s)", last, c->errstr);
	return r;
}

static const char *
type_name(int t)
{
	switch (t) {
	case REDIS_REPLY_STRING:
		return "bulk";
	case REDIS_REPLY_ARRAY:
		return "array";
	case REDIS_REPLY_INTEGER:
		return "integer";
	case REDIS_REPLY_NIL:
		return "nil";
	case REDIS_REPLY_STATUS:
		return "status";
	case REDIS_REPLY_ERROR:
		return "error";
	}
	return "?";
}

static void
want_type(const redisReply *r, int type)
{
	if (r->type != type)
		fail_msg("%s: expected a %s reply, got %s '%s'", last, type_name(type),
		         type_name(r->type), r->type == REDIS_REPLY_INTEGER ? "" : r->str);
}

static void
expect_int(redisReply *r, long long v)
{
	want_type(r, REDIS_REPLY_INTEGER);
	if (r->integer != v)
		fail_msg("%s: expected %lld, got %lld", last, v, r->integer);
	freeReplyObject(r);
}

static void
expect_status(redisReply *r, const char *s)
{
	want_type(r, REDIS_REPLY_STATUS);
	if (strcmp(r->str, s) != 0)
		fail_msg("%s: expected +%s, got +%s", last, s, r->str);
	freeReplyObject(r);
}

static void
expect_bulk(redisReply *r, const char *s)
{
	want_type(r, REDIS_REPLY_STRING);
	if (strcmp(r->str, s) != 0)
		fail_msg("%s: expected '%s', got '%s'", last, s, r->str);
	freeReplyObject(r);
}

static void
expect_money(redisReply *r, int64_t v)
{
	char b[32];
	money_fmt(v, b);
	expect_bulk(r, b);
}

/* An error whose text starts with prefix, at a word boundary. */
static void
expect_err(redisReply *r, const char *prefix)
{
	size_t n = strlen(prefix);
	want_type(r, REDIS_REPLY_ERROR);
	if (strncmp(r->str, prefix, n) != 0 ||
	    (r->str[n] != '\0' && r->str[n] != ' ' && r->str[n] != '\''))
		fail_msg("%s: expected -%s..., got -%s", last, prefix, r->str);
	freeReplyObject(r);
}

/* Each row a command expected to get an error starting with its first element. */
static void
expect_errors(redisContext *c, const char *const (*cases)[ARGV_MAX], size_t n)
{
	for (size_t i = 0; i < n; i++)
		expect_err(cmd_argv(c, &cases[i][1]), cases[i][0]);
}

/* ---- ACCT.GET ---- */

struct acct {
	int64_t balance, available, reserved, threshold, refill_amount;
	char state[16], plan[40], refill[16], payment[8], request[64];
	long long pending, calls;
	int64_t usage[CAT__COUNT];
};

static const char *const acct_keys[] = {"balance",
                                        "available",
                                        "reserved",
                                        "state",
                                        "plan",
                                        "threshold",
                                        "refill",
                                        "refill_amount",
                                        "payment",
                                        "refill_pending",
                                        "refill_request",
                                        "calls",
                                        "usage_local",
                                        "usage_national",
                                        "usage_international",
                                        "usage_tollfree",
                                        "usage_directory",
                                        "usage_mobile",
                                        "usage_premium",
                                        "usage_other",
                                        "suspended",
                                        "suspended_since",
                                        "failed_refills",
                                        "kind",
                                        "credit_limit",
                                        "maxcalls",
                                        "callcap",
                                        "dailycap",
                                        "low",
                                        "daily_spent"};

static int64_t
elem_money(const redisReply *e)
{
	int64_t v = 0;
	if (e->type != REDIS_REPLY_STRING || money_parse(e->str, &v) != 0)
		fail_msg("%s: not an amount: %s '%s'", last, type_name(e->type),
		         e->type == REDIS_REPLY_STRING ? e->str : "");
	return v;
}

static void
elem_str(const redisReply *e, char *out, size_t cap)
{
	if (e->type != REDIS_REPLY_STRING || e->len >= cap)
		fail_msg("%s: not a short string: %s", last, type_name(e->type));
	memcpy(out, e->str, e->len + 1);
}

static long long
elem_int(const redisReply *e)
{
	if (e->type != REDIS_REPLY_INTEGER)
		fail_msg("%s: not an integer: %s", last, type_name(e->type));
	return e->integer;
}

static void
acct_get(redisContext *c, unsigned long long id, struct acct *a)
{
	const size_t nkeys = sizeof(acct_keys) / sizeof(acct_keys[0]);
	redisReply *r = cmd(c, "ACCT.GET %llu", id);

	memset(a, 0, sizeof(*a));
	want_type(r, REDIS_REPLY_ARRAY);
	if (r->elements != 2 * nkeys)
		fail_msg("%s: %zu elements, expected %zu", last, r->elements, 2 * nkeys);
	for (size_t k = 0; k < nkeys; k++) {
		const redisReply *key = r->element[2 * k];
		if (key->type != REDIS_REPLY_STRING || strcmp(key->str, acct_keys[k]) != 0)
			fail_msg("%s: field %zu is not %s", last, k, acct_keys[k]);
	}
	redisReply **e = r->element;
	a->balance = elem_money(e[1]);
	a->available = elem_money(e[3]);
	a->reserved = elem_money(e[5]);
	elem_str(e[7], a->state, sizeof(a->state));
	elem_str(e[9], a->plan, sizeof(a->plan));
	a->threshold = elem_money(e[11]);
	elem_str(e[13], a->refill, sizeof(a->refill));
	a->refill_amount = elem_money(e[15]);
	elem_str(e[17], a->payment, sizeof(a->payment));
	a->pending = elem_int(e[19]);
	elem_str(e[21], a->request, sizeof(a->request));
	a->calls = elem_int(e[23]);
	for (unsigned k = 0; k < CAT__COUNT; k++)
		a->usage[k] = elem_money(e[25 + 2 * k]);
	freeReplyObject(r);
}

/* Balance and reservation of an account, and available = balance - reserved. */
static void
expect_balance(redisContext *c, unsigned long long id, int64_t balance, int64_t reserved)
{
	struct acct a;
	acct_get(c, id, &a);
	if (a.balance != balance || a.reserved != reserved || a.available != balance - reserved)
		fail_msg("account %llu: balance %" PRId64 " reserved %" PRId64 " available %" PRId64
		         ", expected %" PRId64 " / %" PRId64 " / %" PRId64 " (micro-units)",
		         id, a.balance, a.reserved, a.available, balance, reserved,
		         balance - reserved);
}

static void
expect_same_acct(const struct acct *a, const struct acct *b)
{
	assert_true(a->balance == b->balance);
	assert_true(a->available == b->available);
	assert_true(a->reserved == b->reserved);
	assert_true(a->threshold == b->threshold);
	assert_true(a->refill_amount == b->refill_amount);
	assert_string_equal(a->state, b->state);
	assert_string_equal(a->plan, b->plan);
	assert_string_equal(a->refill, b->refill);
	assert_string_equal(a->payment, b->payment);
	assert_string_equal(a->request, b->request);
	assert_int_equal(a->pending, b->pending);
	assert_int_equal(a->calls, b->calls);
	for (unsigned k = 0; k < CAT__COUNT; k++)
		assert_true(a->usage[k] == b->usage[k]);
}

static void
acct_new(redisContext *c, unsigned long long id, const char *plan, int64_t balance)
{
	char b[32];
	money_fmt(balance, b);
	expect_status(cmd(c, "ACCT.SET %llu BALANCE %s PLAN %s", id, b, plan), "OK");
}

/* ---- INFO ---- */

/* The value of "key:" in INFO (all sections), into out. */
static void
info_field(redisContext *c, const char *key, char *out, size_t cap)
{
	char pat[64];
	redisReply *r = cmd(c, "INFO");
	want_type(r, REDIS_REPLY_STRING);
	snprintf(pat, sizeof(pat), "\r\n%s:", key);
	const char *p = strstr(r->str, pat);
	if (p == NULL)
		fail_msg("INFO has no %s", key);
	p += strlen(pat);
	size_t n = strcspn(p, "\r");
	if (n >= cap)
		fail_msg("INFO %s too long", key);
	memcpy(out, p, n);
	out[n] = '\0';
	freeReplyObject(r);
}

static long long
info_int(redisContext *c, const char *key)
{
	char v[64], *end;
	info_field(c, key, v, sizeof(v));
	long long n = strtoll(v, &end, 10);
	if (*end != '\0' || v[0] == '\0')
		fail_msg("INFO %s: '%s' is not an integer", key, v);
	return n;
}

static int64_t
info_money(redisContext *c, const char *key)
{
	char v[64];
	int64_t m;
	info_field(c, key, v, sizeof(v));
	if (money_parse(v, &m) != 0)
		fail_msg("INFO %s: '%s' is not an amount", key, v);
	return m;
}

/* Poll INFO until key is want (up to 5 s), for what the daemon does on its own time. */
static void
wait_info(redisContext *c, const char *key, long long want)
{
	uint64_t end = tg_mono_ms() + 5000;
	long long v;
	while ((v = info_int(c, key)) != want) {
		if (tg_mono_ms() > end)
			fail_msg("INFO %s is %lld, expected %lld", key, v, want);
		usleep(20000);
	}
}

/*
 * Read exactly the bytes of want from a raw socket; with closed_want, then
 * the end of the stream too (waiting up to 3 s for each).
 */
static void
raw_expect(int fd, const char *want, int closed_want)
{
	char buf[4096], more[64];
	int closed;
	size_t n = strlen(want);

	assert_true(n < sizeof(buf));
	it_raw_read(fd, buf, n + 1, 3000, &closed);
	if (strcmp(buf, want) != 0)
		fail_msg("raw reply '%s', expected '%s'", buf, want);
	if (closed_want && !closed) {
		if (it_raw_read(fd, more, sizeof(more), 3000, &closed) != 0)
			fail_msg("after '%s' came '%s'", want, more);
	}
	if (closed_want && !closed)
		fail_msg("after '%s' the connection is still open", want);
}

/* ------------------------------------------------------------------ */
/* CALL.AUTH                                                           */

struct auth_case {
	unsigned long long acct;
	const char *plan;
	int64_t balance;
	const char *dest;
};

static void
test_call_auth_grants(void **state)
{
	static const struct auth_case cases[] = {
	    {1000, "flat", 100 * U, D_NAT}, /* capped by --max-grant: 600 s */
	    {1001, "flat", 3050000, D_NAT}, /* 305 s of money: 300 */
	    {1002, "flat", 600000, D_NAT},  /* exactly one step */
	    {1003, "flat", 599999, D_NAT},  /* money, but not one step: BLOCKED */
	    {1004, "flat", 0, D_NAT},       /* $0.00: BLOCKED */
	    {1005, "flat", -1 * U, D_NAT},  /* below zero: BLOCKED */
	    {1006, "six", 350000, D_NAT},   /* 35 s of money on 6/6: 30 */
	    {1007, "six", 59999, D_NAT},    /* not 6 s: BLOCKED */
	    {1008, "fee", 850000, D_NAT},   /* 0.25 connect + 60 s */
	    {1009, "fee", 849999, D_NAT},   /* a micro-unit short: BLOCKED */
	    {1010, "fee", 250000, D_NAT},   /* the connect fee alone: BLOCKED */
	    {1011, "flat", 5 * U, D_LON},   /* 0.90/min on 4420: 300 s */
	    {1012, "flat", 5 * U, D_UK},    /* 1.20/min on 44: 240 s */
	    {1013, "flat", 2 * U, D_DIR},   /* connect fee only: the cap */
	    {1014, "flat", 1400000, D_DIR}, /* below the fee: BLOCKED */
	    {1015, "mini", 46000, D_NAT},   /* 45 s minimum: first boundary 42 */
	    {1016, "mini", 1 * U, D_NAT},   /* the cap, on the grid */
	    {1017, "odd", 1000, D_NAT},     /* 0.01/min per second: 6 s */
	    {1018, "sec", 1234567, D_NAT},  /* 1/1: 123 s */
	};
	long long granted = 0, blocked = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct auth_case *k = &cases[i];
		const struct row *r = model_rate(k->plan, k->dest);
		int64_t cost;
		uint32_t g = model_grant(r, k->balance, MAX_GRANT, &cost);

		acct_new(fx.c, k->acct, k->plan, k->balance);
		redisReply *rep =
		    cmd(fx.c, "CALL.AUTH %llu %s call-%u", k->acct, k->dest, (unsigned)i);
		if (g == 0) {
			expect_err(rep, "BLOCKED");
			expect_balance(fx.c, k->acct, k->balance, 0);
			blocked++;
			continue;
		}
		expect_int(rep, g);
		granted++;
		/* The reservation is the cost of the grant, never more than there was. */
		assert_true(cost <= k->balance);
		expect_balance(fx.c, k->acct, k->balance, cost);
		struct acct a;
		acct_get(fx.c, k->acct, &a);
		assert_int_equal(a.calls, 1);
	}
	/* The values the model gives, written out, so a wrong model shows too. */
	expect_balance(fx.c, 1000, 100 * U, 6 * U);
	expect_balance(fx.c, 1001, 3050000, 3 * U);
	expect_balance(fx.c, 1008, 850000, 850000);
	expect_balance(fx.c, 1011, 5 * U, 4500000);
	expect_balance(fx.c, 1012, 5 * U, 4800000);
	expect_balance(fx.c, 1013, 2 * U, 1500000);
	expect_balance(fx.c, 1015, 46000, 45000);
	expect_balance(fx.c, 1017, 1000, 1000);
	assert_int_equal(granted, 12);
	assert_int_equal(blocked, 7);
	assert_int_equal(info_int(fx.c, "call_auth"), 19);
	assert_int_equal(info_int(fx.c, "call_granted"), 12);
	assert_int_equal(info_int(fx.c, "call_blocked"), 7);
	assert_int_equal(info_int(fx.c, "call_refused"), 0);
}

static void
test_call_auth_many_calls_one_account(void **state)
{
	(void)state;
	acct_new(fx.c, 2000, "flat", 10 * U);
	expect_int(cmd(fx.c, "CALL.AUTH 2000 %s a1", D_NAT), 600);
	expect_balance(fx.c, 2000, 10 * U, 6 * U);
	/* 4.00 left pays 400 s: the grant stops at the boundary below, 360. */
	expect_int(cmd(fx.c, "CALL.AUTH 2000 %s a2", D_NAT), 360);
	expect_balance(fx.c, 2000, 10 * U, 9600000);
	expect_err(cmd(fx.c, "CALL.AUTH 2000 %s a3", D_NAT), "BLOCKED");
	/* A switch's retry of a call in progress: the same grant, nothing more held. */
	expect_int(cmd(fx.c, "CALL.AUTH 2000 %s a1", D_NAT), 600);
	expect_balance(fx.c, 2000, 10 * U, 9600000);
	struct acct a;
	acct_get(fx.c, 2000, &a);
	assert_int_equal(a.calls, 2);
	/* The same call id on another account is not a retry. */
	acct_new(fx.c, 2001, "flat", 10 * U);
	expect_err(cmd(fx.c, "call.auth 2001 %s a1", D_NAT), "CONFLICT");
	expect_balance(fx.c, 2001, 10 * U, 0);
	assert_int_equal(info_int(fx.c, "conflicts"), 1);
}

static void
test_call_auth_refusals(void **state)
{
	struct acct before[3];

	(void)state;
	for (unsigned i = 0; i < 3; i++)
		acct_get(fx.c, 100 + i, &before[i]);
	expect_err(cmd(fx.c, "CALL.AUTH 101 %s s1", D_NAT), "SUSPENDED");
	expect_err(cmd(fx.c, "CALL.AUTH 102 %s s2", D_NAT), "CLOSED");
	expect_err(cmd(fx.c, "CALL.AUTH 424242 %s s3", D_NAT), "NOACCOUNT");
	expect_err(cmd(fx.c, "CALL.AUTH 100 %s s4", D_NONE), "NORATE");
	/* Precedence: the account's state comes before the destination. */
	expect_err(cmd(fx.c, "CALL.AUTH 101 %s s5", D_NONE), "SUSPENDED");
	expect_err(cmd(fx.c, "CALL.AUTH 102 %s s6", D_NONE), "CLOSED");
	/* A plan name that is registered but not in the loaded rates. */
	acct_new(fx.c, 150, "ghost", 10 * U);
	expect_err(cmd(fx.c, "CALL.AUTH 150 %s s7", D_NAT), "NOPLAN");
	expect_balance(fx.c, 150, 10 * U, 0);
	for (unsigned i = 0; i < 3; i++) {
		struct acct a;
		acct_get(fx.c, 100 + i, &a);
		expect_same_acct(&a, &before[i]);
	}
	/* A suspended account made active again gets its grant: 40.00 pays the cap. */
	expect_status(cmd(fx.c, "ACCT.SET 101 STATE active"), "OK");
	expect_int(cmd(fx.c, "CALL.AUTH 101 %s s8", D_NAT), 600);
	assert_int_equal(info_int(fx.c, "call_auth"), 8);
	assert_int_equal(info_int(fx.c, "call_refused"), 7);
	assert_int_equal(info_int(fx.c, "call_granted"), 1);
}

/*
 * Account ids with leading zeros are the same account, however many zeros:
 * past 20 characters they were refused although the docs allow them.
 */
static void
test_account_id_leading_zeros_past_20_characters(void **state)
{
	static const char *const zeros = "00000000000000000000000000000000";
	(void)state;
	expect_status(cmd(fx.c, "ACCT.SET %s42 BALANCE 5 PLAN flat", zeros), "OK");
	expect_balance(fx.c, 42, 5 * U, 0);
	expect_money(cmd(fx.c, "CDR %s42 %s 60 lz1", zeros, D_NAT), 600000);
	expect_int(cmd(fx.c, "CALL.AUTH 00000000000000000000042 %s lz2", D_NAT), 420);
	expect_money(cmd(fx.c, "CALL.END %s%s42 lz2 60", zeros, zeros), 600000);
	expect_money(cmd(fx.c, "ACCT.CREDIT 000000000000000000000000042 1 lz3"), 4800000);
	expect_balance(fx.c, 42, 4800000, 0);
	redisReply *r = cmd(fx.c, "ACCT.GET %s42", zeros);
	want_type(r, REDIS_REPLY_ARRAY);
	assert_true(r->elements > 2);
	assert_string_equal(r->element[0]->str, "balance");
	assert_string_equal(r->element[1]->str, "4.8");
	freeReplyObject(r);
	/* The value still counts: 2^64 - 1 and 21 significant digits are no account id. */
	expect_err(cmd(fx.c, "ACCT.SET %s18446744073709551615 BALANCE 1", zeros),
	           "ERR invalid account id");
	expect_err(cmd(fx.c, "ACCT.GET %s100000000000000000000", zeros), "ERR invalid account id");
}

/* ------------------------------------------------------------------ */
/* CALL.UPDATE (--max-grant 60)                                        */

/*
 * An update of a call already granted max-grant past its elapsed time, on
 * an account with money to spare, used to answer "BLOCKED insufficient
 * balance": the cap stops it, and the answer says so.
 */
static void
test_call_update_at_max_grant_says_so(void **state)
{
	(void)state;
	acct_new(fx.c, 210, "sec", 100 * U);
	expect_int(cmd(fx.c, "CALL.AUTH 210 %s m1", D_NAT), 60);
	redisReply *r = cmd(fx.c, "CALL.UPDATE 210 m1 0");
	want_type(r, REDIS_REPLY_ERROR);
	assert_string_equal(
	    r->str,
	    "MAXGRANT the grant already reaches max-grant seconds past elapsed: ask again later");
	freeReplyObject(r);
	expect_balance(fx.c, 210, 100 * U, 600000);
	/* Later in the call the cap has moved: the same update extends. */
	expect_int(cmd(fx.c, "CALL.UPDATE 210 m1 30"), 90);
	/* On 60/60 the next boundary (120 s) lies past the cap (40 + 60): the cap again. */
	acct_new(fx.c, 211, "flat", 100 * U);
	expect_int(cmd(fx.c, "CALL.AUTH 211 %s m2", D_NAT), 60);
	expect_err(cmd(fx.c, "CALL.UPDATE 211 m2 40"), "MAXGRANT");
	expect_int(cmd(fx.c, "CALL.UPDATE 211 m2 60"), 120);
	/* Short of money and at the cap both: BLOCKED comes first. */
	acct_new(fx.c, 212, "sec", 600000);
	expect_int(cmd(fx.c, "CALL.AUTH 212 %s m3", D_NAT), 60);
	expect_err(cmd(fx.c, "CALL.UPDATE 212 m3 0"), "BLOCKED");
	assert_int_equal(info_int(fx.c, "call_blocked"), 1);
	assert_int_equal(info_int(fx.c, "call_update"), 2);
}

static void
test_call_update(void **state)
{
	(void)state;
	acct_new(fx.c, 200, "sec", 2 * U); /* 1/1 at 0.60/min: 0.01 a second */
	expect_int(cmd(fx.c, "CALL.AUTH 200 %s u1", D_NAT), 60);
	expect_balance(fx.c, 200, 2 * U, 600000);
	/* Each update grants up to elapsed + max-grant, as far as the money goes. */
	expect_int(cmd(fx.c, "CALL.UPDATE 200 u1 30"), 90);
	expect_balance(fx.c, 200, 2 * U, 900000);
	expect_int(cmd(fx.c, "CALL.UPDATE 200 u1 90"), 150);
	expect_int(cmd(fx.c, "CALL.UPDATE 200 u1 150"), 200); /* all of the 2.00 */
	expect_balance(fx.c, 200, 2 * U, 2 * U);
	expect_err(cmd(fx.c, "CALL.UPDATE 200 u1 200"), "BLOCKED");
	expect_err(cmd(fx.c, "CALL.UPDATE 200 u1 10"), "BLOCKED");
	expect_balance(fx.c, 200, 2 * U, 2 * U);
	expect_err(cmd(fx.c, "CALL.UPDATE 200 nosuchcall 10"), "NOCALL");
	acct_new(fx.c, 201, "sec", 2 * U);
	expect_err(cmd(fx.c, "CALL.UPDATE 201 u1 10"), "NOCALL"); /* another account's call */
	/* Seconds past the grant are not billed: the switch was told to stop. */
	expect_money(cmd(fx.c, "CALL.END 200 u1 230"), 2 * U);
	expect_balance(fx.c, 200, 0, 0);
	expect_err(cmd(fx.c, "CALL.UPDATE 200 u1 230"), "NOCALL");

	/* On 6/6 an update extends to the boundary under the cap and the money. */
	acct_new(fx.c, 202, "six", 1 * U);
	expect_int(cmd(fx.c, "CALL.AUTH 202 %s u2", D_NAT), 60);
	expect_int(cmd(fx.c, "CALL.UPDATE 202 u2 40"), 96); /* 1.00 pays 100 s */
	expect_balance(fx.c, 202, 1 * U, 960000);
	expect_money(cmd(fx.c, "CALL.END 202 u2 61"), 660000);
	expect_balance(fx.c, 202, 340000, 0);
	assert_int_equal(info_int(fx.c, "call_update"), 4);
	assert_int_equal(info_int(fx.c, "call_blocked"), 2);
	assert_int_equal(info_int(fx.c, "call_overrun_seconds"), 30);
}

/* ------------------------------------------------------------------ */
/* CALL.END                                                            */

static void
test_call_end(void **state)
{
	struct acct a;

	(void)state;
	acct_new(fx.c, 300, "flat", 10 * U);
	expect_int(cmd(fx.c, "CALL.AUTH 300 %s e1", D_NAT), 600);
	expect_money(cmd(fx.c, "CALL.END 300 e1 61"), 1200000); /* 120 s billed */
	acct_get(fx.c, 300, &a);
	assert_true(a.balance == 8800000 && a.available == 8800000 && a.reserved == 0);
	assert_int_equal(a.calls, 0);
	assert_true(a.usage[CAT_NATIONAL] == 1200000);
	/* Exactly once: the replay answers the first reply and moves nothing. */
	expect_money(cmd(fx.c, "CALL.END 300 e1 61"), 1200000);
	expect_balance(fx.c, 300, 8800000, 0);
	expect_err(cmd(fx.c, "CALL.END 300 e1 62"), "CONFLICT");
	acct_new(fx.c, 301, "flat", 10 * U);
	expect_err(cmd(fx.c, "CALL.END 301 e1 61"), "CONFLICT");
	expect_balance(fx.c, 300, 8800000, 0);
	expect_balance(fx.c, 301, 10 * U, 0);

	/* A call that never connected: everything released, nothing charged. */
	expect_int(cmd(fx.c, "CALL.AUTH 300 %s e2", D_NAT), 600);
	expect_balance(fx.c, 300, 8800000, 6 * U);
	expect_money(cmd(fx.c, "CALL.END 300 e2 0"), 0);
	expect_balance(fx.c, 300, 8800000, 0);

	expect_err(cmd(fx.c, "CALL.END 300 nosuchcall 10"), "NOCALL");
	/* The wrong account is NOCALL, and is not remembered: the right one still ends it. */
	expect_int(cmd(fx.c, "CALL.AUTH 300 %s e3", D_NAT), 600);
	expect_err(cmd(fx.c, "CALL.END 301 e3 10"), "NOCALL");
	expect_money(cmd(fx.c, "CALL.END 300 e3 10"), 600000);
	expect_balance(fx.c, 300, 8200000, 0);

	/* 6/6: 7 s is billed 12 s. */
	acct_new(fx.c, 310, "six", 1 * U);
	expect_int(cmd(fx.c, "CALL.AUTH 310 %s e4", D_NAT), 96);
	expect_money(cmd(fx.c, "CALL.END 310 e4 7"), 120000);
	expect_balance(fx.c, 310, 880000, 0);

	/* A connect fee: charged on a connected call, not on a 0-second one. */
	acct_new(fx.c, 320, "fee", 5 * U);
	expect_int(cmd(fx.c, "CALL.AUTH 320 %s e5", D_NAT), 420); /* 0.25 + 4.20 */
	expect_balance(fx.c, 320, 5 * U, 4450000);
	expect_money(cmd(fx.c, "CALL.END 320 e5 61"), 1450000);
	expect_balance(fx.c, 320, 3550000, 0);
	expect_int(cmd(fx.c, "CALL.AUTH 320 %s e6", D_NAT), 300);
	expect_money(cmd(fx.c, "CALL.END 320 e6 0"), 0);
	expect_balance(fx.c, 320, 3550000, 0);

	/* International usage is counted apart. */
	acct_new(fx.c, 330, "flat", 20 * U);
	expect_int(cmd(fx.c, "CALL.AUTH 330 %s e7", D_LON), 600);
	expect_money(cmd(fx.c, "CALL.END 330 e7 90"), 1800000);
	acct_get(fx.c, 330, &a);
	assert_true(a.balance == 18200000 && a.reserved == 0);
	assert_true(a.usage[CAT_INTERNATIONAL] == 1800000 && a.usage[CAT_NATIONAL] == 0);

	assert_int_equal(info_int(fx.c, "call_ended"), 7);
	assert_int_equal(info_int(fx.c, "replays"), 1);
	assert_int_equal(info_int(fx.c, "conflicts"), 2);
	assert_true(info_money(fx.c, "money_charged") ==
	            1200000 + 600000 + 120000 + 1450000 + 1800000);
}

/*
 * Regression: CALL.END and CALL.UPDATE of a call id that was never
 * authorized returned NOCALL with the call map's stripe still locked; the
 * next expiry tick (or any use of that stripe) then spun forever, and the
 * daemon could not even stop.
 */
static void
test_nocall_unknown_id_leaves_no_lock(void **state)
{
	struct timeval tv = {.tv_sec = 2};

	(void)state;
	expect_err(cmd(fx.c, "CALL.END 100 never-authorized 5"), "NOCALL");
	expect_err(cmd(fx.c, "CALL.UPDATE 100 never-updated 5"), "NOCALL");
	usleep(300000); /* a few expiry ticks */
	for (unsigned i = 0; i < 8; i++) {
		/* Connections land on both workers: each must still answer. */
		redisContext *c = it_connect(&fx.d);
		assert_non_null(c);
		assert_int_equal(redisSetTimeout(c, tv), REDIS_OK);
		expect_status(cmd(c, "PING"), "PONG");
		redisFree(c);
	}
	/* The same ids are usable, and reach the same stripes. */
	expect_int(cmd(fx.c, "CALL.AUTH 100 %s never-authorized", D_NAT), 600);
	expect_int(cmd(fx.c, "CALL.UPDATE 100 never-authorized 60"), 660);
	expect_money(cmd(fx.c, "CALL.END 100 never-authorized 5"), 600000);
	expect_int(cmd(fx.c, "CALL.AUTH 100 %s never-updated", D_NAT), 600);
	expect_money(cmd(fx.c, "CALL.END 100 never-updated 0"), 0);
	expect_balance(fx.c, 100, 9400000, 0);
}

/* ------------------------------------------------------------------ */
/* CDR                                                                 */

struct dup_cdr {
	pthread_t th;
	uint16_t port;
	pthread_barrier_t *bar;
	char reply[64];
	int ok;
};

static void *
dup_cdr_thread(void *arg)
{
	struct dup_cdr *k = arg;
	struct it_daemon d = {.port = k->port};
	redisContext *c = it_connect(&d);

	pthread_barrier_wait(k->bar);
	if (c == NULL)
		return NULL;
	redisReply *r = redisCommand(c, "CDR 403 %s 60 dup-cdr", D_NAT);
	if (r != NULL && r->type == REDIS_REPLY_STRING) {
		snprintf(k->reply, sizeof(k->reply), "%s", r->str);
		k->ok = 1;
	}
	if (r != NULL)
		freeReplyObject(r);
	redisFree(c);
	return NULL;
}

static void
test_cdr(void **state)
{
	struct acct a;

	(void)state;
	acct_new(fx.c, 400, "flat", 500000);
	/* The call happened: charged in full, even below zero. */
	expect_money(cmd(fx.c, "CDR 400 %s 120 cdr1", D_NAT), 1200000);
	acct_get(fx.c, 400, &a);
	assert_true(a.balance == -700000 && a.available == -700000 && a.reserved == 0);
	assert_true(a.usage[CAT_NATIONAL] == 1200000);
	expect_err(cmd(fx.c, "CALL.AUTH 400 %s after", D_NAT), "BLOCKED");
	/* Replays, and the same id with other data. */
	expect_money(cmd(fx.c, "CDR 400 %s 120 cdr1", D_NAT), 1200000);
	expect_err(cmd(fx.c, "CDR 400 %s 121 cdr1", D_NAT), "CONFLICT");
	expect_err(cmd(fx.c, "CDR 400 %s 120 cdr1", D_UK), "CONFLICT");
	acct_new(fx.c, 401, "flat", 10 * U);
	expect_err(cmd(fx.c, "CDR 401 %s 120 cdr1", D_NAT), "CONFLICT");
	expect_balance(fx.c, 400, -700000, 0);
	expect_balance(fx.c, 401, 10 * U, 0);
	/* A refused CDR is not remembered: the corrected one is charged. */
	expect_err(cmd(fx.c, "CDR 400 %s 60 cdr2", D_NONE), "NORATE");
	expect_money(cmd(fx.c, "CDR 400 %s 60 cdr2", D_NAT), 600000);
	expect_balance(fx.c, 400, -1300000, 0);
	expect_err(cmd(fx.c, "CDR 424242 %s 60 cdr3", D_NAT), "NOACCOUNT");
	expect_money(cmd(fx.c, "CDR 400 %s 0 cdr4", D_NAT), 0);
	/* Even a suspended account pays for a call that happened. */
	expect_money(cmd(fx.c, "CDR 101 %s 30 cdr5", D_UK), 1200000);
	expect_balance(fx.c, 101, 38800000, 0);
	/* Connect fee and directory usage. */
	expect_money(cmd(fx.c, "CDR 401 %s 5 cdr6", D_DIR), 1500000);
	acct_get(fx.c, 401, &a);
	assert_true(a.balance == 8500000 && a.usage[CAT_DIRECTORY] == 1500000);

	/* The same CDR on two connections, one after the other: charged once. */
	redisContext *c2 = it_connect(&fx.d);
	assert_non_null(c2);
	acct_new(fx.c, 402, "six", 10 * U);
	expect_money(cmd(fx.c, "CDR 402 %s 7 twice", D_NAT), 120000);
	expect_money(cmd(c2, "CDR 402 %s 7 twice", D_NAT), 120000);
	expect_balance(fx.c, 402, 9880000, 0);
	redisFree(c2);

	/* ...and on sixteen connections at once. */
	enum { N = 16 };
	struct dup_cdr k[N];
	pthread_barrier_t bar;
	acct_new(fx.c, 403, "flat", 10 * U);
	pthread_barrier_init(&bar, NULL, N);
	memset(k, 0, sizeof(k));
	for (int i = 0; i < N; i++) {
		k[i].port = fx.d.port;
		k[i].bar = &bar;
		assert_int_equal(pthread_create(&k[i].th, NULL, dup_cdr_thread, &k[i]), 0);
	}
	for (int i = 0; i < N; i++)
		pthread_join(k[i].th, NULL);
	pthread_barrier_destroy(&bar);
	for (int i = 0; i < N; i++) {
		assert_true(k[i].ok);
		assert_string_equal(k[i].reply, "0.6");
	}
	expect_balance(fx.c, 403, 9400000, 0);

	assert_int_equal(info_int(fx.c, "cdr"), 7);
	assert_int_equal(info_int(fx.c, "replays"), 2 + N - 1);
	assert_int_equal(info_int(fx.c, "conflicts"), 3);
}

/*
 * Requests pipelined in one write run as one batch (their accounts, ids
 * and rates prefetched ahead, docs/BENCHMARKS.md): each must still run as
 * if alone and in order, when two touch the same account or the same id,
 * and past the 32 requests one look takes.
 */
static void
test_pipelined_batch_same_account_same_id(void **state)
{
	(void)state;
	acct_new(fx.c, 450, "flat", 10 * U);
	acct_new(fx.c, 452, "flat", 20 * U);
	long long cdr0 = info_int(fx.c, "cdr"), rep0 = info_int(fx.c, "replays");
	long long conf0 = info_int(fx.c, "conflicts");
	int64_t cost;
	/* After the three CDRs below: 10 - 0.6 - 1.2 = 8.2 available. */
	uint32_t grant = model_grant(model_rate("flat", D_NAT), 8200000, MAX_GRANT, &cost);
	char cr[32];
	money_fmt(10 * U - 600000 - 1200000 - 600000 + 5 * U, cr);
	struct {
		const char *fmt;
		char want; /* 'm' money, 'i' integer (grant), 'e' error */
		int64_t v;
		const char *err;
	} steps[] = {
	    {"CDR 450 " D_NAT " 60 p1", 'm', 600000, NULL},
	    {"CDR 450 " D_NAT " 60 p1", 'm', 600000, NULL}, /* replay in the same batch */
	    {"CDR 450 " D_NAT " 61 p1", 'e', 0, "CONFLICT"},
	    {"CDR 450 " D_NAT " 120 p2", 'm', 1200000, NULL}, /* same account, new id */
	    {"CALL.AUTH 450 " D_NAT " pc1", 'i', grant, NULL},
	    {"CALL.END 450 pc1 30", 'm', 600000, NULL},
	    {"CALL.END 450 pc1 30", 'm', 600000, NULL},
	    {"ACCT.CREDIT 450 5 pt1", 'm', 0, cr},
	    {"ACCT.CREDIT 450 5 pt1", 'm', 0, cr},
	    {"CDR 451 " D_NAT " 60 p3", 'e', 0, "NOACCOUNT"},
	    {"CALL.END 450 nosuch 10", 'e', 0, "NOCALL"},
	    {"CDR 450 " D_NONE " 60 p4", 'e', 0, "NORATE"},
	    {"CDR 450 " D_NONE " 60 p4", 'e', 0, "NORATE"}, /* refused: not remembered */
	};
	enum { NSTEPS = sizeof(steps) / sizeof(steps[0]), NMANY = 40 };
	for (size_t i = 0; i < NSTEPS; i++)
		assert_int_equal(redisAppendCommand(fx.c, steps[i].fmt), REDIS_OK);
	/* 40 more on one account, each id twice, 20 apart: past one look of 32. */
	for (int i = 0; i < NMANY; i++)
		assert_int_equal(redisAppendCommand(fx.c, "CDR 452 %s 60 pm%d", D_NAT, i % 20),
		                 REDIS_OK);
	for (size_t i = 0; i < NSTEPS; i++) {
		redisReply *r = NULL;
		assert_int_equal(redisGetReply(fx.c, (void **)&r), REDIS_OK);
		snprintf(last, sizeof(last), "%s", steps[i].fmt);
		if (steps[i].want == 'e')
			expect_err(r, steps[i].err);
		else if (steps[i].want == 'i')
			expect_int(r, steps[i].v);
		else if (steps[i].err != NULL)
			expect_bulk(r, steps[i].err);
		else
			expect_money(r, steps[i].v);
	}
	for (int i = 0; i < NMANY; i++) {
		redisReply *r = NULL;
		assert_int_equal(redisGetReply(fx.c, (void **)&r), REDIS_OK);
		snprintf(last, sizeof(last), "CDR 452 %s 60 pm%d", D_NAT, i % 20);
		expect_money(r, 600000);
	}
	expect_balance(fx.c, 450, 10 * U - 600000 - 1200000 - 600000 + 5 * U, 0);
	expect_balance(fx.c, 452, 20 * U - 20 * 600000, 0);
	assert_int_equal(info_int(fx.c, "cdr") - cdr0, 2 + 20);
	assert_int_equal(info_int(fx.c, "replays") - rep0, 1 + 1 + 1 + 20);
	assert_int_equal(info_int(fx.c, "conflicts") - conf0, 1);
}

/* ------------------------------------------------------------------ */
/* ACCT.CREDIT                                                         */

static void
test_acct_credit(void **state)
{
	(void)state;
	acct_new(fx.c, 500, "flat", 10 * U);
	expect_money(cmd(fx.c, "ACCT.CREDIT 500 5 tx1"), 15 * U);
	expect_money(cmd(fx.c, "CDR 500 %s 60 c1", D_NAT), 600000);
	/* The replay answers the first reply, not today's balance, and credits nothing. */
	expect_money(cmd(fx.c, "ACCT.CREDIT 500 5 tx1"), 15 * U);
	expect_balance(fx.c, 500, 14400000, 0);
	expect_err(cmd(fx.c, "ACCT.CREDIT 500 6 tx1"), "CONFLICT");
	expect_err(cmd(fx.c, "ACCT.CREDIT 500 5.000001 tx1"), "CONFLICT");
	expect_err(cmd(fx.c, "ACCT.CREDIT 100 5 tx1"), "CONFLICT");
	expect_balance(fx.c, 500, 14400000, 0);
	expect_balance(fx.c, 100, 10 * U, 0);
	/* Amounts: positive, at most 6 decimals, in range. */
	static const char *const bad[][ARGV_MAX] = {
	    {"ERR credit amount must be positive", "ACCT.CREDIT", "500", "0", "b1", NULL},
	    {"ERR credit amount must be positive", "ACCT.CREDIT", "500", "-1", "b2", NULL},
	    {"ERR credit amount must be positive", "ACCT.CREDIT", "500", "-0.000001", "b3", NULL},
	    {"ERR invalid amount", "ACCT.CREDIT", "500", "1.0000001", "b4", NULL},
	    {"ERR invalid amount", "ACCT.CREDIT", "500", "abc", "b5", NULL},
	    {"ERR invalid amount", "ACCT.CREDIT", "500", "1e3", "b6", NULL},
	    {"ERR invalid amount", "ACCT.CREDIT", "500", "", "b7", NULL},
	    {"ERR invalid amount", "ACCT.CREDIT", "500", ".5", "b8", NULL},
	    {"ERR invalid amount", "ACCT.CREDIT", "500", "9223372036855", "b9", NULL},
	    {"ERR invalid amount", "ACCT.CREDIT", "500", "1,5", "b10", NULL},
	    {"ERR invalid txid", "ACCT.CREDIT", "500", "1", "", NULL},
	};
	expect_errors(fx.c, bad, sizeof(bad) / sizeof(bad[0]));
	expect_balance(fx.c, 500, 14400000, 0);
	/* None of those was remembered: the ids are still free. */
	expect_money(cmd(fx.c, "ACCT.CREDIT 500 0.000001 b1"), 14400001);
	expect_money(cmd(fx.c, "ACCT.CREDIT 500 +2.5 b2"), 16900001);
	expect_err(cmd(fx.c, "ACCT.CREDIT 424242 1 b3"), "NOACCOUNT");
	/* A credit lifts a negative balance, and calls are granted again. */
	acct_new(fx.c, 501, "flat", -3 * U);
	expect_err(cmd(fx.c, "CALL.AUTH 501 %s x1", D_NAT), "BLOCKED");
	expect_money(cmd(fx.c, "ACCT.CREDIT 501 4.2 tx2"), 1200000);
	expect_int(cmd(fx.c, "CALL.AUTH 501 %s x2", D_NAT), 120);
	/* A balance that would overflow is refused whole. */
	acct_new(fx.c, 502, "flat", 9223372036854 * U);
	expect_err(cmd(fx.c, "ACCT.CREDIT 502 1 tx3"), "OVERFLOW");
	expect_balance(fx.c, 502, 9223372036854 * U, 0);
	assert_int_equal(info_int(fx.c, "credits"), 4);
	assert_int_equal(info_int(fx.c, "replays"), 1);
	assert_int_equal(info_int(fx.c, "conflicts"), 3);
	assert_true(info_money(fx.c, "money_credited") == 5 * U + 1 + 2500000 + 4200000);
}

/* ------------------------------------------------------------------ */
/* ACCT.SET and ACCT.GET                                               */

static void
test_acct_set(void **state)
{
	struct acct a, b;

	(void)state;
	/* Creates, with every option at once. */
	expect_err(cmd(fx.c, "ACCT.GET 600"), "NOACCOUNT");
	expect_status(cmd(fx.c, "ACCT.SET 600 BALANCE 12.5 PLAN six STATE suspended THRESHOLD 2 "
	                        "PAYMENT on REFILL TOPUP 20"),
	              "OK");
	acct_get(fx.c, 600, &a);
	assert_true(a.balance == 12500000 && a.available == 12500000 && a.reserved == 0);
	assert_string_equal(a.state, "suspended");
	assert_string_equal(a.plan, "six");
	assert_true(a.threshold == 2 * U && a.refill_amount == 20 * U);
	assert_string_equal(a.refill, "topup");
	assert_string_equal(a.payment, "on");
	assert_int_equal(a.pending, 0);
	assert_string_equal(a.request, "");
	assert_int_equal(a.calls, 0);
	/* One option at a time, in any case. */
	expect_status(cmd(fx.c, "acct.set 600 state ACTIVE"), "OK");
	expect_status(cmd(fx.c, "ACCT.SET 600 REFILL add 7.25"), "OK");
	expect_status(cmd(fx.c, "ACCT.SET 600 PLAN flat BALANCE 30"), "OK");
	acct_get(fx.c, 600, &a);
	assert_string_equal(a.state, "active");
	assert_string_equal(a.refill, "add");
	assert_true(a.refill_amount == 7250000 && a.balance == 30 * U);
	assert_string_equal(a.plan, "flat");
	expect_int(cmd(fx.c, "CALL.AUTH 600 %s p1", D_NAT), 600); /* flat now, not six */
	expect_status(cmd(fx.c, "ACCT.SET 600 STATE closed"), "OK");
	expect_err(cmd(fx.c, "CALL.AUTH 600 %s p2", D_NAT), "CLOSED");
	expect_status(cmd(fx.c, "ACCT.SET 600 STATE active REFILL OFF PAYMENT off"), "OK");
	acct_get(fx.c, 600, &a);
	assert_string_equal(a.refill, "off");
	assert_string_equal(a.payment, "off");
	assert_true(a.reserved == 6 * U); /* the call in progress kept its reservation */

	/* Auto-refill needs a payment method, whatever the order of the options. */
	expect_err(cmd(fx.c, "ACCT.SET 600 REFILL ADD 5"), "NOPAYMENT");
	expect_err(cmd(fx.c, "ACCT.SET 601 BALANCE 5 REFILL TOPUP 5"), "NOPAYMENT");
	expect_err(cmd(fx.c, "ACCT.GET 601"), "NOACCOUNT"); /* not created */
	expect_status(cmd(fx.c, "ACCT.SET 601 REFILL ADD 5 PAYMENT on"), "OK");
	expect_err(cmd(fx.c, "ACCT.SET 601 PAYMENT off"), "NOPAYMENT");
	acct_get(fx.c, 601, &b);
	assert_string_equal(b.payment, "on");
	assert_string_equal(b.refill, "add");
	assert_true(b.balance == 0);
	/* Turned on at or below the threshold (0.00): one request at once. */
	assert_int_equal(b.pending, 1);
	assert_string_equal(b.request, "refill:601:1");

	/* Bad options: -ERR, and nothing at all changes. */
	acct_get(fx.c, 600, &a);
	static const char *const bad[][ARGV_MAX] = {
	    {"ERR STATE must be", "ACCT.SET", "600", "BALANCE", "50", "STATE", "bogus", NULL},
	    {"ERR invalid balance", "ACCT.SET", "600", "BALANCE", "abc", NULL},
	    {"ERR invalid balance", "ACCT.SET", "600", "BALANCE", "1.0000001", NULL},
	    {"ERR invalid balance", "ACCT.SET", "600", "PLAN", "six", "BALANCE", "", NULL},
	    {"ERR invalid plan name", "ACCT.SET", "600", "PLAN", "bad name", NULL},
	    {"ERR invalid plan name", "ACCT.SET", "600", "PLAN", "", NULL},
	    {"ERR REFILL add needs an amount", "ACCT.SET", "600", "REFILL", "ADD", NULL},
	    {"ERR refill amount must be positive", "ACCT.SET", "600", "PAYMENT", "on", "REFILL",
	     "TOPUP", "0", NULL},
	    {"ERR REFILL must be", "ACCT.SET", "600", "REFILL", "maybe", "5", NULL},
	    {"ERR PAYMENT must be on or off", "ACCT.SET", "600", "PAYMENT", "yes", NULL},
	    {"ERR invalid threshold", "ACCT.SET", "600", "THRESHOLD", "x", NULL},
	    {"ERR unknown or incomplete ACCT.SET option", "ACCT.SET", "600", "FOO", "1", NULL},
	    {"ERR unknown or incomplete ACCT.SET option", "ACCT.SET", "600", "BALANCE", NULL},
	    {"ERR unknown or incomplete ACCT.SET option", "ACCT.SET", "600", "STATE", "active",
	     "PLAN", NULL},
	    {"ERR invalid account id", "ACCT.SET", "6x", "BALANCE", "1", NULL},
	    {"ERR wrong number of arguments", "ACCT.SET", NULL},
	    {"ERR STATE must be", "ACCT.SET", "602", "BALANCE", "5", "STATE", "gone", NULL},
	};
	expect_errors(fx.c, bad, sizeof(bad) / sizeof(bad[0]));
	acct_get(fx.c, 600, &b);
	expect_same_acct(&a, &b);
	expect_err(cmd(fx.c, "ACCT.GET 602"), "NOACCOUNT");
	assert_int_equal(info_int(fx.c, "accounts"), 6); /* 4 from the CSV, 600 and 601 */
}

/*
 * A postpaid account: granted down to minus its credit limit at $0.00 and
 * below, CDRs charged past it (the call happened), blocked there; the kind
 * and limit read back in ACCT.GET; every misuse refused before anything
 * changes.
 */
static void
test_acct_set_postpaid(void **state)
{
	char kind[16];
	(void)state;

	expect_status(cmd(fx.c, "ACCT.SET 700 PLAN flat KIND postpaid LIMIT 6"), "OK");
	it_acct_field(fx.c, 700, "kind", kind, sizeof(kind));
	assert_string_equal(kind, "postpaid");
	assert_int_equal(it_acct_money(fx.c, 700, "credit_limit"), 6 * U);
	assert_int_equal(it_acct_money(fx.c, 700, "available"), 6 * U);
	assert_int_equal(it_acct_money(fx.c, 700, "balance"), 0);
	/* $6 of credit at $0.60 a minute: ten minutes at $0.00. */
	expect_int(cmd(fx.c, "CALL.AUTH 700 %s pp1", D_NAT), 600);
	expect_err(cmd(fx.c, "CALL.AUTH 700 %s pp2", D_NAT), "BLOCKED");
	expect_money(cmd(fx.c, "CALL.END 700 pp1 120"), 1200000);
	assert_int_equal(it_acct_money(fx.c, 700, "balance"), -1200000);
	assert_int_equal(it_acct_money(fx.c, 700, "available"), 4800000);
	/* A CDR is a call that happened: charged past the limit, then everything blocks. */
	expect_money(cmd(fx.c, "CDR 700 %s 600 pp-cdr1", D_NAT), 6 * U);
	assert_int_equal(it_acct_money(fx.c, 700, "balance"), -7200000);
	expect_err(cmd(fx.c, "CALL.AUTH 700 %s pp3", D_NAT), "BLOCKED");

	static const char *const bad[][ARGV_MAX] = {
	    {"ERR KIND must be prepaid or postpaid", "ACCT.SET", "700", "KIND", "monthly", NULL},
	    {"ERR LIMIT is a postpaid account's credit limit: add KIND postpaid", "ACCT.SET", "701",
	     "LIMIT", "5", NULL},
	    {"ERR LIMIT is a postpaid account's credit limit: add KIND postpaid", "ACCT.SET", "700",
	     "KIND", "prepaid", "LIMIT", "5", NULL},
	    {"ERR a postpaid account has no refill threshold:", "ACCT.SET", "700", "THRESHOLD", "1",
	     NULL},
	    {"ERR a postpaid account has no auto-refill:", "ACCT.SET", "700", "PAYMENT", "on",
	     "REFILL", "ADD", "5", NULL},
	    {"ERR credit limit must be zero or more", "ACCT.SET", "700", "LIMIT", "-1", NULL},
	    {"ERR invalid credit limit", "ACCT.SET", "700", "LIMIT", "lots", NULL},
	};
	expect_errors(fx.c, bad, sizeof(bad) / sizeof(bad[0]));
	expect_err(cmd(fx.c, "ACCT.GET 701"), "NOACCOUNT");
	assert_int_equal(it_acct_money(fx.c, 700, "credit_limit"), 6 * U);
	it_acct_field(fx.c, 700, "payment", kind, sizeof(kind));
	assert_string_equal(kind, "off");

	/* Paid back: room again.  Prepaid again: the limit goes, a debt blocks. */
	expect_money(cmd(fx.c, "ACCT.CREDIT 700 7.2 pp-pay1"), 0);
	expect_int(cmd(fx.c, "CALL.AUTH 700 %s pp4", D_NAT), 600);
	expect_money(cmd(fx.c, "CALL.END 700 pp4 60"), 600000);
	expect_status(cmd(fx.c, "ACCT.SET 700 KIND prepaid"), "OK");
	it_acct_field(fx.c, 700, "kind", kind, sizeof(kind));
	assert_string_equal(kind, "prepaid");
	assert_int_equal(it_acct_money(fx.c, 700, "credit_limit"), 0);
	assert_int_equal(it_acct_money(fx.c, 700, "available"), -600000);
	expect_err(cmd(fx.c, "CALL.AUTH 700 %s pp5", D_NAT), "BLOCKED");
}

/*
 * Regression: a refused ACCT.SET registered its PLAN name anyway (names are
 * never freed, at most 1024 per segment), so refused requests could fill
 * the registry and no new plan could ever be named again.
 */
static void
test_acct_set_refused_registers_no_plan(void **state)
{
	enum { FLOOD = 1100 };

	(void)state;
	for (int i = 0; i < FLOOD; i++)
		assert_int_equal(redisAppendCommand(fx.c, "ACCT.SET 1 PLAN junk-%d BOGUS", i),
		                 REDIS_OK);
	for (int i = 0; i < FLOOD; i++) {
		redisReply *r = NULL;
		assert_int_equal(redisGetReply(fx.c, (void **)&r), REDIS_OK);
		snprintf(last, sizeof(last), "ACCT.SET 1 PLAN junk-%d BOGUS", i);
		expect_err(r, "ERR unknown or incomplete ACCT.SET option");
	}
	expect_err(cmd(fx.c, "ACCT.GET 1"), "NOACCOUNT");
	expect_status(cmd(fx.c, "ACCT.SET 700 PLAN newplan BALANCE 1"), "OK");
	struct acct a;
	acct_get(fx.c, 700, &a);
	assert_string_equal(a.plan, "newplan");
}

/*
 * Regression: new plan names registered by ACCT.SET on two workers at once
 * could take the same id (the registry allows one writer at a time), so an
 * account silently got another account's plan.
 */
enum { NAMERS = 8, NAMES = 120 };

struct namer {
	pthread_t th;
	unsigned id;
	uint16_t port;
	pthread_barrier_t *bar;
	int fails;
};

static void *
namer(void *arg)
{
	struct namer *k = arg;
	struct it_daemon d = {.port = k->port};
	redisContext *c = it_connect(&d);

	pthread_barrier_wait(k->bar);
	if (c == NULL) {
		k->fails++;
		return NULL;
	}
	for (unsigned i = 0; i < NAMES; i++)
		redisAppendCommand(c, "ACCT.SET %u PLAN plan-%u-%u", 30000 + k->id * 1000 + i,
		                   k->id, i);
	for (unsigned i = 0; i < NAMES; i++) {
		redisReply *r = NULL;
		if (redisGetReply(c, (void **)&r) != REDIS_OK || r == NULL ||
		    r->type != REDIS_REPLY_STATUS)
			k->fails++;
		if (r != NULL)
			freeReplyObject(r);
	}
	redisFree(c);
	return NULL;
}

static void
test_acct_set_new_plans_concurrently(void **state)
{
	struct namer k[NAMERS];
	pthread_barrier_t bar;
	struct acct a;
	char want[40];

	(void)state;
	memset(k, 0, sizeof(k));
	pthread_barrier_init(&bar, NULL, NAMERS);
	for (unsigned i = 0; i < NAMERS; i++) {
		k[i].id = i;
		k[i].port = fx.d.port;
		k[i].bar = &bar;
		assert_int_equal(pthread_create(&k[i].th, NULL, namer, &k[i]), 0);
	}
	for (unsigned i = 0; i < NAMERS; i++)
		pthread_join(k[i].th, NULL);
	pthread_barrier_destroy(&bar);
	for (unsigned i = 0; i < NAMERS; i++) {
		assert_int_equal(k[i].fails, 0);
		for (unsigned j = 0; j < NAMES; j++) {
			acct_get(fx.c, 30000 + i * 1000 + j, &a);
			snprintf(want, sizeof(want), "plan-%u-%u", i, j);
			if (strcmp(a.plan, want) != 0)
				fail_msg("account %u: plan '%s', expected '%s'",
				         30000 + i * 1000 + j, a.plan, want);
		}
	}
	/* The plans loaded from the file kept their names too. */
	acct_get(fx.c, 103, &a);
	assert_string_equal(a.plan, "fee");
	expect_int(cmd(fx.c, "CALL.AUTH 103 %s n1", D_NAT), 600);
}

static void
test_acct_set_refill_crossing(void **state)
{
	struct acct a;

	(void)state;
	expect_status(cmd(fx.c, "ACCT.SET 610 BALANCE 20 PLAN flat THRESHOLD 10 REFILL ADD 50 "
	                        "PAYMENT on"),
	              "OK");
	expect_money(cmd(fx.c, "CDR 610 %s 600 r1", D_NAT), 6 * U);
	acct_get(fx.c, 610, &a);
	assert_int_equal(a.pending, 0);
	/* 14.00 to 8.00 crosses the threshold of 10.00: one request. */
	expect_money(cmd(fx.c, "CDR 610 %s 600 r2", D_NAT), 6 * U);
	acct_get(fx.c, 610, &a);
	assert_int_equal(a.pending, 1);
	assert_string_equal(a.request, "refill:610:1");
	expect_money(cmd(fx.c, "CDR 610 %s 600 r3", D_NAT), 6 * U); /* still in flight */
	assert_int_equal(info_int(fx.c, "refills_fired"), 1);
	/* The worker's credit, with the request id as txid, lands and clears it. */
	expect_money(cmd(fx.c, "ACCT.CREDIT 610 50 refill:610:1"), 52 * U);
	acct_get(fx.c, 610, &a);
	assert_int_equal(a.pending, 0);
	assert_string_equal(a.request, "");
	assert_int_equal(info_int(fx.c, "refills_landed"), 1);
}

static void
test_acct_get(void **state)
{
	struct acct a;

	(void)state;
	/* The accounts CSV as loaded. */
	acct_get(fx.c, 103, &a);
	assert_true(a.balance == 25 * U && a.available == 25 * U && a.reserved == 0);
	assert_string_equal(a.state, "active");
	assert_string_equal(a.plan, "fee");
	assert_true(a.threshold == 10 * U && a.refill_amount == 50 * U);
	assert_string_equal(a.refill, "add");
	assert_string_equal(a.payment, "on");
	acct_get(fx.c, 102, &a);
	assert_string_equal(a.state, "closed");
	assert_true(a.balance == 12 * U);
	/* The exact bytes: a flat array of bulk names and values. */
	int fd = it_raw_connect(fx.d.port);
	assert_true(fd >= 0);
	assert_int_equal(it_raw_write(fd, "ACCT.GET 100\r\n", 14), 0);
	char buf[4096];
	int closed;
	it_raw_read(fd, buf, sizeof(buf), 300, &closed);
	static const char head[] =
	    "*60\r\n$7\r\nbalance\r\n$2\r\n10\r\n$9\r\navailable\r\n$2\r\n10"
	    "\r\n$8\r\nreserved\r\n$1\r\n0\r\n$5\r\nstate\r\n$6\r\nactive\r\n"
	    "$4\r\nplan\r\n$4\r\nflat\r\n";
	assert_memory_equal(buf, head, sizeof(head) - 1);
	assert_false(closed);
	close(fd);
	expect_err(cmd(fx.c, "ACCT.GET 424242"), "NOACCOUNT");
	expect_err(cmd(fx.c, "ACCT.GET abc"), "ERR invalid account id");
	expect_err(cmd(fx.c, "ACCT.GET"), "ERR wrong number of arguments");
	expect_err(cmd(fx.c, "ACCT.GET 100 101"), "ERR wrong number of arguments");
}

/* ------------------------------------------------------------------ */
/* RATE                                                                */

/* The charge RATE quotes for a national call on plan. */
static int64_t
quote(redisContext *c, const char *plan, unsigned duration)
{
	redisReply *r = cmd(c, "RATE %s %s %u", plan, D_NAT, duration);
	want_type(r, REDIS_REPLY_ARRAY);
	if (r->elements != 8)
		fail_msg("%s: %zu elements", last, r->elements);
	int64_t v = elem_money(r->element[1]);
	freeReplyObject(r);
	return v;
}

struct rate_case {
	const char *plan, *dest;
	uint32_t duration;
};

static void
test_rate(void **state)
{
	static const struct rate_case cases[] = {
	    {"flat", D_NAT, 0},       {"flat", D_NAT, 1},   {"flat", D_NAT, 60},
	    {"flat", D_NAT, 61},      {"flat", D_NAT, 121}, {"flat", D_UK, 61},
	    {"flat", D_LON, 61},      {"flat", D_DIR, 1},   {"flat", D_DIR, 3600},
	    {"six", D_NAT, 1},        {"six", D_NAT, 7},    {"fee", D_NAT, 0},
	    {"fee", D_NAT, 1},        {"fee", D_NAT, 61},   {"mini", D_NAT, 1},
	    {"mini", D_NAT, 42},      {"mini", D_NAT, 43},  {"mini", D_NAT, 48},
	    {"odd", D_NAT, 1},        {"odd", D_NAT, 7},    {"sec", D_NAT, 59},
	    {"flat", D_NAT, 2678400},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct rate_case *k = &cases[i];
		const struct row *r = model_rate(k->plan, k->dest);
		char charge[32];
		redisReply *rep = cmd(fx.c, "RATE %s %s %u", k->plan, k->dest, k->duration);

		money_fmt(model_charge(r, k->duration), charge);
		want_type(rep, REDIS_REPLY_ARRAY);
		assert_int_equal(rep->elements, 8);
		assert_string_equal(rep->element[0]->str, "charge");
		assert_string_equal(rep->element[1]->str, charge);
		assert_string_equal(rep->element[2]->str, "category");
		assert_string_equal(rep->element[3]->str, categories[r->category]);
		assert_string_equal(rep->element[4]->str, "prefix");
		assert_string_equal(rep->element[5]->str, r->prefix);
		assert_string_equal(rep->element[6]->str, "billed");
		assert_int_equal(rep->element[7]->integer, model_billed(r, k->duration));
		freeReplyObject(rep);
	}
	/* Spot checks of the model against docs/RATES.md's table. */
	assert_true(quote(fx.c, "odd", 7) == 1167); /* 166.67 a second, rounded up once */
	assert_true(quote(fx.c, "mini", 43) == 48000);
	assert_true(quote(fx.c, "fee", 61) == 1450000);
	assert_true(quote(fx.c, "flat", 2678400) == 26784 * U);

	static const char *const bad[][ARGV_MAX] = {
	    {"NOPLAN", "RATE", "nosuchplan", D_NAT, "60", NULL},
	    {"NOPLAN", "RATE", "bad plan", D_NAT, "60", NULL},
	    {"NORATE", "RATE", "six", D_UK, "60", NULL},
	    {"NORATE", "RATE", "flat", D_NONE, "60", NULL},
	    {"ERR invalid destination", "RATE", "flat", "12a", "60", NULL},
	    {"ERR invalid duration", "RATE", "flat", D_NAT, "-1", NULL},
	    {"ERR invalid duration", "RATE", "flat", D_NAT, "2678401", NULL},
	    {"ERR wrong number of arguments", "RATE", "flat", D_NAT, NULL},
	};
	expect_errors(fx.c, bad, sizeof(bad) / sizeof(bad[0]));
	/* A quote debits nothing. */
	expect_balance(fx.c, 100, 10 * U, 0);
	assert_true(info_money(fx.c, "money_charged") == 0);
}

/* ------------------------------------------------------------------ */
/* PING, ECHO, INFO, COMMAND, CONFIG, QUIT, AUTH without a password    */

static void
test_ping_info_command_quit(void **state)
{
	(void)state;
	expect_status(cmd(fx.c, "PING"), "PONG");
	expect_status(cmd(fx.c, "ping"), "PONG");
	expect_bulk(cmd(fx.c, "PING %s", "hello world"), "hello world");
	expect_bulk(cmd(fx.c, "ECHO %s", "magic"), "magic");
	expect_err(cmd(fx.c, "PING a b"), "ERR wrong number of arguments for 'PING' command");

	redisReply *r = cmd(fx.c, "COMMAND");
	want_type(r, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 0);
	freeReplyObject(r);
	r = cmd(fx.c, "COMMAND DOCS");
	want_type(r, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 0);
	freeReplyObject(r);
	expect_int(cmd(fx.c, "COMMAND COUNT"), 0);
	r = cmd(fx.c, "CONFIG GET save");
	want_type(r, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 2);
	assert_string_equal(r->element[0]->str, "save");
	assert_string_equal(r->element[1]->str, "");
	freeReplyObject(r);
	expect_err(cmd(fx.c, "AUTH x"), "ERR AUTH <password> called without any password");

	/* Every section, and one at a time. */
	static const char *const sections[] = {"Server", "Clients", "Accounts", "Stats",
	                                       "Calls",  "Refills", "Money",    "Latency"};
	r = cmd(fx.c, "INFO");
	want_type(r, REDIS_REPLY_STRING);
	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
		char h[32];
		snprintf(h, sizeof(h), "# %s\r\n", sections[i]);
		assert_non_null(strstr(r->str, h));
	}
	freeReplyObject(r);
	r = cmd(fx.c, "INFO calls");
	want_type(r, REDIS_REPLY_STRING);
	assert_true(strncmp(r->str, "# Calls\r\ncall_auth:0\r\n", 22) == 0);
	assert_null(strstr(r->str, "# Server"));
	assert_null(strstr(r->str, "# Money"));
	freeReplyObject(r);
	r = cmd(fx.c, "INFO nosuchsection");
	want_type(r, REDIS_REPLY_STRING);
	assert_int_equal(r->len, 0);
	freeReplyObject(r);
	char v[64];
	info_field(fx.c, "tcp_port", v, sizeof(v));
	assert_int_equal(atoi(v), fx.d.port);
	info_field(fx.c, "process_id", v, sizeof(v));
	assert_int_equal(atoi(v), fx.d.pid);
	info_field(fx.c, "shm_name", v, sizeof(v));
	assert_string_equal(v, fx.d.shm);
	assert_int_equal(info_int(fx.c, "accounts"), 4);
	assert_int_equal(info_int(fx.c, "plans"), 6);
	assert_int_equal(info_int(fx.c, "prefixes"), 9);

	/* The "# Calls" counters move with the calls. */
	expect_int(cmd(fx.c, "CALL.AUTH 100 %s i1", D_NAT), 600);
	expect_err(cmd(fx.c, "CALL.AUTH 101 %s i2", D_NAT), "SUSPENDED");
	expect_int(cmd(fx.c, "CALL.AUTH 100 %s i3", D_NAT), 360); /* 4.00 left */
	assert_int_equal(info_int(fx.c, "calls_in_progress"), 2);
	expect_money(cmd(fx.c, "CALL.END 100 i1 1"), 600000);
	expect_money(cmd(fx.c, "CALL.END 100 i3 0"), 0);
	expect_money(cmd(fx.c, "CDR 100 %s 1 i4", D_NAT), 600000);
	expect_money(cmd(fx.c, "CDR 100 %s 1 i4", D_NAT), 600000);
	r = cmd(fx.c, "INFO calls");
	want_type(r, REDIS_REPLY_STRING);
	assert_string_equal(r->str,
	                    "# Calls\r\ncall_auth:3\r\ncall_granted:2\r\ncall_blocked:0"
	                    "\r\ncall_refused:1\r\ncall_update:0\r\ncall_ended:2\r\n"
	                    "call_expired:0\r\ncall_overrun_seconds:0\r\ncdr:1\r\n"
	                    "replays:1\r\nconflicts:0\r\nwindow_full:0\r\ncall_maxcalls:0\r\n"
	                    "call_dailycap:0\r\ncall_callcap:0\r\ncall_dailycap_short:0\r\n"
	                    "call_low:0\r\ncall_always:0\r\nstops_published:0\r\n"
	                    "stops_unnamed:0\r\nstops_publish_failures:0\r\n"
	                    "stops_hints_dropped:0\r\nalarms_published:0\r\n"
	                    "alarms_publish_failures:0\r\nalarms_dropped:0\r\n\r\n");
	freeReplyObject(r);
	assert_int_equal(info_int(fx.c, "calls_in_progress"), 0);
	assert_int_equal(info_int(fx.c, "ids_remembered"), 3);
	assert_true(info_money(fx.c, "money_charged") == 1200000);

	/* Clients: this one (the harness's probe may still be closing), then two. */
	wait_info(fx.c, "connected_clients", 1);
	redisContext *c2 = it_connect(&fx.d);
	assert_non_null(c2);
	assert_int_equal(info_int(c2, "connected_clients"), 2);

	/* QUIT: +OK, then the connection closes, and what followed it is not run. */
	int fd = it_raw_connect(fx.d.port);
	assert_true(fd >= 0);
	static const char quit[] = "QUIT\r\nCDR 100 " D_NAT " 60 afterquit\r\n";
	assert_int_equal(it_raw_write(fd, quit, sizeof(quit) - 1), 0);
	raw_expect(fd, "+OK\r\n", 1);
	close(fd);
	expect_status(cmd(c2, "QUIT"), "OK");
	redisFree(c2);
	expect_balance(fx.c, 100, 8800000, 0);
	expect_err(cmd(fx.c, "QUIT now"), "ERR wrong number of arguments");
}

/* ------------------------------------------------------------------ */
/* AUTH (--requirepass)                                                */

static void
test_auth(void **state)
{
	(void)state;
	/* Before AUTH only AUTH, PING, QUIT. */
	expect_status(cmd(fx.c, "PING"), "PONG");
	static const char *const noauth[][ARGV_MAX] = {
	    {"NOAUTH", "ACCT.GET", "100", NULL},
	    {"NOAUTH", "CDR", "100", D_NAT, "60", "na1", NULL},
	    {"NOAUTH", "CALL.AUTH", "100", D_NAT, "na2", NULL},
	    {"NOAUTH", "ACCT.CREDIT", "100", "5", "na3", NULL},
	    {"NOAUTH", "ACCT.SET", "100", "BALANCE", "1000", NULL},
	    {"NOAUTH", "INFO", NULL},
	    {"NOAUTH", "RATE", "flat", D_NAT, "60", NULL},
	    {"NOAUTH", "RATES.RELOAD", NULL},
	    {"NOAUTH", "ECHO", "x", NULL},
	};
	expect_errors(fx.c, noauth, sizeof(noauth) / sizeof(noauth[0]));
	expect_err(cmd(fx.c, "AUTH wrong"), "WRONGPASS");
	expect_err(cmd(fx.c, "AUTH admin %s", PASSWORD), "WRONGPASS");
	expect_err(cmd(fx.c, "AUTH %s", PASSWORD "x"), "WRONGPASS");
	expect_err(cmd(fx.c, "AUTH %s", ""), "WRONGPASS");
	expect_err(cmd(fx.c, "ACCT.GET 100"), "NOAUTH");
	expect_status(cmd(fx.c, "AUTH %s", PASSWORD), "OK");
	/* Nothing sent before AUTH moved money. */
	expect_balance(fx.c, 100, 10 * U, 0);
	assert_int_equal(info_int(fx.c, "auth_failures"), 4);
	/* Redis 6 clients send a user name: "default" is the only one. */
	redisContext *c2 = it_connect(&fx.d);
	assert_non_null(c2);
	expect_status(cmd(c2, "AUTH default %s", PASSWORD), "OK");
	expect_money(cmd(c2, "CDR 100 %s 60 a1", D_NAT), 600000);
	redisFree(c2);

	/* Before AUTH a request may be 256 bytes: a longer one is an error, then EOF. */
	char big[600], req[800];
	memset(big, 'x', 300);
	big[300] = '\0';
	int n = snprintf(req, sizeof(req), "*2\r\n$4\r\nPING\r\n$300\r\n%s\r\n", big);
	int fd = it_raw_connect(fx.d.port);
	assert_true(fd >= 0);
	assert_int_equal(it_raw_write(fd, req, (size_t)n), 0);
	raw_expect(fd, "-ERR Protocol error: request too large\r\n", 1);
	close(fd);
	fd = it_raw_connect(fx.d.port);
	assert_true(fd >= 0);
	n = snprintf(req, sizeof(req), "PING %s\r\n", big);
	assert_int_equal(it_raw_write(fd, req, (size_t)n), 0);
	raw_expect(fd, "-ERR Protocol error: request too large\r\n", 1);
	close(fd);
	/* QUIT is allowed before AUTH. */
	fd = it_raw_connect(fx.d.port);
	assert_true(fd >= 0);
	assert_int_equal(it_raw_write(fd, "QUIT\r\n", 6), 0);
	raw_expect(fd, "+OK\r\n", 1);
	close(fd);
	/*
	 * AUTH and a request too large before it, in one write: parsed ahead
	 * under the limit before AUTH, the second is parsed again under the
	 * limit after it, and runs.
	 */
	fd = it_raw_connect(fx.d.port);
	assert_true(fd >= 0);
	n = snprintf(req, sizeof(req), "AUTH %s\r\nPING %s\r\n", PASSWORD, big);
	assert_int_equal(it_raw_write(fd, req, (size_t)n), 0);
	char want[700];
	snprintf(want, sizeof(want), "+OK\r\n$300\r\n%s\r\n", big);
	raw_expect(fd, want, 0);
	close(fd);
	/* After AUTH the same request is fine. */
	redisReply *r = cmd(fx.c, "PING %s", big);
	expect_bulk(r, big);
	expect_balance(fx.c, 100, 9400000, 0);
}

/*
 * AUTH, then in the same write a request the limit after AUTH refuses but
 * the one before it allows: requests parsed ahead of AUTH (one batch) are
 * parsed again under the limit they run under, so it is refused as if
 * sent alone.
 */
static void
test_request_after_auth_in_same_write_gets_the_limit_after_auth(void **state)
{
	char big[301], req[400];

	(void)state;
	memset(big, 'x', 300);
	big[300] = '\0';
	int fd = it_raw_connect(fx.d.port);
	assert_true(fd >= 0);
	int n = snprintf(req, sizeof(req), "AUTH %s\r\nPING %s\r\n", PASSWORD, big);
	assert_int_equal(it_raw_write(fd, req, (size_t)n), 0);
	raw_expect(fd, "+OK\r\n-ERR Protocol error: request too large\r\n", 1);
	close(fd);
}

/* ------------------------------------------------------------------ */
/* RATES.RELOAD and SIGHUP                                             */

static int64_t
flat_quote(redisContext *c)
{
	return quote(c, "flat", 60);
}

/* Poll the flat quote until it is want, for up to 5 s. */
static void
wait_quote(int64_t want)
{
	uint64_t end = tg_mono_ms() + 5000;
	while (flat_quote(fx.c) != want) {
		if (tg_mono_ms() > end)
			fail_msg("RATE flat never became %" PRId64, want);
		usleep(20000);
	}
}

static void
test_rates_reload(void **state)
{
	char path[IT_PATH_MAX], text[4096];

	(void)state;
	assert_true(flat_quote(fx.c) == 600000);
	assert_int_equal(info_int(fx.c, "rates_reloads"), 1); /* the one at start-up */
	/* A call in progress keeps the rate it was authorized at. */
	expect_int(cmd(fx.c, "CALL.AUTH 100 %s rl1", D_NAT), 600);
	write_rates(300000);
	expect_status(cmd(fx.c, "RATES.RELOAD"), "OK");
	assert_true(flat_quote(fx.c) == 300000);
	expect_money(cmd(fx.c, "CALL.END 100 rl1 60"), 600000);
	expect_balance(fx.c, 100, 9400000, 0);
	expect_money(cmd(fx.c, "CDR 100 %s 60 rl2", D_NAT), 300000);
	expect_balance(fx.c, 100, 9100000, 0);

	/* A bad file: -ERR naming file:line, and the plans in use stay. */
	rates_text(text, sizeof(text), 900000);
	char *line4 = strstr(text, "flat,44,"); /* line 4: comment, header, "1", "44" */
	assert_non_null(line4);
	memcpy(line4, "flat,4a,", 8);
	assert_int_equal(it_file_write(fx.dir, "rates.csv", text, path, sizeof(path)), 0);
	redisReply *r = cmd(fx.c, "RATES.RELOAD");
	want_type(r, REDIS_REPLY_ERROR);
	char where[IT_PATH_MAX + 64];
	/* One problem reads as one: no "(1 problems):;" (it once did). */
	snprintf(where, sizeof(where), "ERR rate plans not reloaded (1 problem): %s:4: ", fx.rates);
	if (strncmp(r->str, where, strlen(where)) != 0 || strstr(r->str, "4a") == NULL ||
	    strchr(r->str, ';') != NULL)
		fail_msg("RATES.RELOAD of a bad file: '%s'", r->str);
	freeReplyObject(r);
	/* Two: the heading, then each problem, separated by "; ". */
	char *line5 = strstr(text, "flat,4420,");
	assert_non_null(line5);
	memcpy(line5, "flat,44x0,", 10);
	assert_int_equal(it_file_write(fx.dir, "rates.csv", text, path, sizeof(path)), 0);
	r = cmd(fx.c, "RATES.RELOAD");
	want_type(r, REDIS_REPLY_ERROR);
	snprintf(where, sizeof(where),
	         "ERR rate plans not reloaded (2 problems): %s:4: ", fx.rates);
	char second[IT_PATH_MAX + 16];
	snprintf(second, sizeof(second), "; %s:5: ", fx.rates);
	const char *semi = strstr(r->str, second);
	if (strncmp(r->str, where, strlen(where)) != 0 || semi == NULL ||
	    strchr(r->str, ';') != semi || strstr(semi, "44x0") == NULL)
		fail_msg("RATES.RELOAD of a file with two bad rows: '%s'", r->str);
	freeReplyObject(r);
	assert_true(flat_quote(fx.c) == 300000);
	/* Nothing of the bad file went live, and all of the good one stayed. */
	redisReply *uk = cmd(fx.c, "RATE flat %s 60", D_UK);
	want_type(uk, REDIS_REPLY_ARRAY);
	assert_string_equal(uk->element[1]->str, "1.2");
	assert_string_equal(uk->element[5]->str, "44");
	freeReplyObject(uk);
	assert_int_equal(info_int(fx.c, "rates_reloads"), 2);
	assert_int_equal(info_int(fx.c, "rates_reload_failures"), 2);
	expect_err(cmd(fx.c, "RATES.RELOAD now"), "ERR wrong number of arguments");

	/* SIGHUP reloads too. */
	write_rates(900000);
	assert_int_equal(kill(fx.d.pid, SIGHUP), 0);
	wait_quote(900000);
	/* The new plans go live just before the reload is counted. */
	wait_info(fx.c, "rates_reloads", 3);
	expect_money(cmd(fx.c, "CDR 100 %s 60 rl3", D_NAT), 900000);
	uint64_t end = tg_mono_ms() + 5000;
	while (!it_log_has(&fx.d, "SIGHUP: rate plans reloaded") && tg_mono_ms() < end)
		usleep(20000);
	assert_true(it_log_has(&fx.d, "SIGHUP: rate plans reloaded"));
	/* ...and a bad file on SIGHUP is logged and changes nothing. */
	assert_int_equal(it_file_write(fx.dir, "rates.csv", "plan,prefix\n", path, sizeof(path)),
	                 0);
	assert_int_equal(kill(fx.d.pid, SIGHUP), 0);
	wait_info(fx.c, "rates_reload_failures", 3);
	assert_true(flat_quote(fx.c) == 900000);
	assert_true(it_log_has(&fx.d, "SIGHUP: rate plans not reloaded"));
}

/* ------------------------------------------------------------------ */
/* pipelining: 10,000 commands in one write                            */

enum { PIPE_N = 10000 };

struct expect {
	int type;
	int64_t money;
	char s[32];
};

static void
test_pipeline_10k(void **state)
{
	static struct expect want[PIPE_N];
	const struct row *flat = model_rate("flat", D_NAT), *six = model_rate("six", D_NAT);
	int64_t balance = 100000 * U;

	(void)state;
	acct_new(fx.c, 700, "flat", balance);
	for (int i = 0; i < PIPE_N; i++) {
		struct expect *w = &want[i];
		unsigned d = (unsigned)(i * 7919) % 400;
		int rc;
		memset(w, 0, sizeof(*w));
		if (i % 1000 == 999) {
			rc = redisAppendCommand(fx.c, "CALL.END 700 nocall-%d 5", i);
			w->type = REDIS_REPLY_ERROR;
			snprintf(w->s, sizeof(w->s), "NOCALL");
		} else if (i % 4 == 0) {
			rc = redisAppendCommand(fx.c, "PING p%d", i);
			w->type = REDIS_REPLY_STRING;
			snprintf(w->s, sizeof(w->s), "p%d", i);
		} else if (i % 4 == 1) {
			rc = redisAppendCommand(fx.c, "CDR 700 %s %u pc-%d", D_NAT, d, i);
			w->type = REDIS_REPLY_STRING;
			w->money = model_charge(flat, d);
			balance -= w->money;
			money_fmt(w->money, w->s);
		} else if (i % 4 == 2) {
			rc = redisAppendCommand(fx.c, "RATE six %s %u", D_NAT, d);
			w->type = REDIS_REPLY_ARRAY;
			money_fmt(model_charge(six, d), w->s);
		} else {
			rc = redisAppendCommand(fx.c, "ACCT.CREDIT 700 0.01 pt-%d", i);
			balance += 10000;
			w->type = REDIS_REPLY_STRING;
			money_fmt(balance, w->s);
		}
		assert_int_equal(rc, REDIS_OK);
	}
	for (int i = 0; i < PIPE_N; i++) {
		redisReply *r = NULL;
		if (redisGetReply(fx.c, (void **)&r) != REDIS_OK || r == NULL)
			fail_msg("reply %d: none (%s)", i, fx.c->errstr);
		const char *got = r->type == REDIS_REPLY_ARRAY
		                      ? (r->elements == 8 ? r->element[1]->str : "?")
		                      : (r->type == REDIS_REPLY_INTEGER ? "?" : r->str);
		if (r->type != want[i].type ||
		    (want[i].type == REDIS_REPLY_ERROR
		         ? strncmp(got, want[i].s, strlen(want[i].s)) != 0
		         : strcmp(got, want[i].s) != 0))
			fail_msg("reply %d: %s '%s', expected %s '%s'", i, type_name(r->type), got,
			         type_name(want[i].type), want[i].s);
		freeReplyObject(r);
	}
	expect_balance(fx.c, 700, balance, 0);
	assert_int_equal(info_int(fx.c, "cdr"), 2500);
	assert_int_equal(info_int(fx.c, "credits"), 2490);
}

/* ------------------------------------------------------------------ */
/* many connections at once                                            */

struct client {
	pthread_t th;
	unsigned id;
	uint16_t port;
	pthread_barrier_t *bar;
	int fails;
	char err[320];
	int64_t balance; /* the model's balance at the end */
	unsigned ops, blocked, granted;
};

static void cfail(struct client *k, const char *fmt, ...) FMT(2, 3);

static void
cfail(struct client *k, const char *fmt, ...)
{
	va_list ap;
	if (k->fails++ != 0)
		return;
	va_start(ap, fmt);
	vsnprintf(k->err, sizeof(k->err), fmt, ap);
	va_end(ap);
}

/* The reply's string if it has the type, else NULL (and a failure recorded). */
static const char *
creply(struct client *k, const redisReply *r, int type, const char *what)
{
	if (r == NULL) {
		cfail(k, "client %u: %s: no reply", k->id, what);
		return NULL;
	}
	if (r->type != type) {
		cfail(k, "client %u: %s: %s '%s', expected %s", k->id, what, type_name(r->type),
		      r->type == REDIS_REPLY_INTEGER ? "" : r->str, type_name(type));
		return NULL;
	}
	return r->type == REDIS_REPLY_INTEGER ? "" : r->str;
}

static void
cexpect_str(struct client *k, redisReply *r, int type, const char *want, const char *what)
{
	const char *s = creply(k, r, type, what);
	if (s != NULL && strncmp(s, want, strlen(want)) != 0)
		cfail(k, "client %u: %s: '%s', expected '%s'", k->id, what, s, want);
	if (r != NULL)
		freeReplyObject(r);
}

static void
cexpect_money(struct client *k, redisReply *r, int64_t v, const char *what)
{
	char b[32];
	money_fmt(v, b);
	const char *s = creply(k, r, REDIS_REPLY_STRING, what);
	if (s != NULL && strcmp(s, b) != 0)
		cfail(k, "client %u: %s: '%s', expected '%s'", k->id, what, s, b);
	if (r != NULL)
		freeReplyObject(r);
}

static uint32_t
lcg(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(*s >> 33);
}

static void *
mixed_client(void *arg)
{
	static const char *const plans[] = {"flat", "six", "fee"};
	struct client *k = arg;
	struct it_daemon d = {.port = k->port};
	redisContext *c = it_connect(&d);
	unsigned long long acct = 10000 + k->id;
	const char *plan = plans[k->id % 3];
	const struct row *r = model_rate(plan, D_NAT);
	uint64_t seed = k->id + 1;
	char what[96], last_cdr[64] = "";
	unsigned last_dur = 0;
	int64_t last_charge = 0;

	k->balance = 50 * U;
	if (c == NULL)
		cfail(k, "client %u: cannot connect", k->id);
	else
		cexpect_str(k, redisCommand(c, "ACCT.SET %llu BALANCE 50 PLAN %s", acct, plan),
		            REDIS_REPLY_STATUS, "OK", "ACCT.SET");
	pthread_barrier_wait(k->bar);
	for (unsigned i = 0; c != NULL && i < 300 && k->fails == 0; i++) {
		unsigned op = lcg(&seed) % 6, dur = lcg(&seed) % 400;
		char id[64], b[32];
		int64_t cost;
		k->ops++;
		snprintf(id, sizeof(id), "m-%u-%u", k->id, i);
		snprintf(what, sizeof(what), "op %u (%u)", i, op);
		switch (op) {
		case 0:
			cexpect_str(k, redisCommand(c, "PING %s", id), REDIS_REPLY_STRING, id,
			            what);
			break;
		case 1:
			last_charge = model_charge(r, dur);
			k->balance -= last_charge;
			last_dur = dur;
			snprintf(last_cdr, sizeof(last_cdr), "%s", id);
			cexpect_money(k, redisCommand(c, "CDR %llu %s %u %s", acct, D_NAT, dur, id),
			              last_charge, what);
			break;
		case 2: {
			uint32_t g = model_grant(r, k->balance, MAX_GRANT, &cost);
			redisReply *rep = redisCommand(c, "CALL.AUTH %llu %s %s", acct, D_NAT, id);
			if (g == 0) {
				k->blocked++;
				cexpect_str(k, rep, REDIS_REPLY_ERROR, "BLOCKED", what);
				break;
			}
			if (creply(k, rep, REDIS_REPLY_INTEGER, what) != NULL && rep->integer != g)
				cfail(k, "client %u: %s: granted %lld, expected %u", k->id, what,
				      rep->integer, g);
			if (rep != NULL)
				freeReplyObject(rep);
			k->granted++;
			/* Sometimes past the grant: billed at the grant. */
			uint32_t used = dur % (g + 30);
			int64_t charge = model_charge(r, used < g ? used : g);
			k->balance -= charge;
			cexpect_money(k, redisCommand(c, "CALL.END %llu %s %u", acct, id, used),
			              charge, what);
			break;
		}
		case 3:
			k->balance += 1500000;
			cexpect_money(k, redisCommand(c, "ACCT.CREDIT %llu 1.5 %s", acct, id),
			              k->balance, what);
			break;
		case 4: {
			redisReply *rep = redisCommand(c, "ACCT.GET %llu", acct);
			money_fmt(k->balance, b);
			if (creply(k, rep, REDIS_REPLY_ARRAY, what) != NULL &&
			    (rep->elements != 50 || strcmp(rep->element[1]->str, b) != 0 ||
			     strcmp(rep->element[5]->str, "0") != 0))
				cfail(k, "client %u: %s: ACCT.GET balance '%s', expected '%s'",
				      k->id, what, rep->elements ? rep->element[1]->str : "", b);
			if (rep != NULL)
				freeReplyObject(rep);
			break;
		}
		default:
			if (last_cdr[0] == '\0')
				break;
			cexpect_money(
			    k,
			    redisCommand(c, "CDR %llu %s %u %s", acct, D_NAT, last_dur, last_cdr),
			    last_charge, what);
			break;
		}
	}
	if (c != NULL)
		redisFree(c);
	return NULL;
}

static void
test_many_clients(void **state)
{
	enum { N = 120 };
	static struct client k[N];
	pthread_barrier_t bar;
	unsigned ops = 0, blocked = 0, granted = 0;

	(void)state;
	memset(k, 0, sizeof(k));
	pthread_barrier_init(&bar, NULL, N + 1);
	for (unsigned i = 0; i < N; i++) {
		k[i].id = i;
		k[i].port = fx.d.port;
		k[i].bar = &bar;
		assert_int_equal(pthread_create(&k[i].th, NULL, mixed_client, &k[i]), 0);
	}
	pthread_barrier_wait(&bar);
	/* Every client is connected before any starts: the daemon holds them all. */
	long long clients = info_int(fx.c, "connected_clients");
	for (unsigned i = 0; i < N; i++)
		pthread_join(k[i].th, NULL);
	pthread_barrier_destroy(&bar);
	assert_int_equal(clients, N + 1);
	for (unsigned i = 0; i < N; i++) {
		if (k[i].fails)
			fail_msg("%d failures; first: %s", k[i].fails, k[i].err);
		assert_int_equal(k[i].ops, 300);
		ops += k[i].ops;
		blocked += k[i].blocked;
		granted += k[i].granted;
		expect_balance(fx.c, 10000 + i, k[i].balance, 0);
	}
	assert_int_equal(ops, N * 300);
	assert_true(granted > 0 && blocked > 0); /* both paths were taken */
	assert_int_equal(info_int(fx.c, "call_granted"), granted);
	assert_int_equal(info_int(fx.c, "call_blocked"), blocked);
	assert_int_equal(info_int(fx.c, "conflicts"), 0);
}

/* ------------------------------------------------------------------ */
/* many connections, one account                                       */

enum { RACE_N = 50, RACE_K = 40 };

struct racer {
	pthread_t th;
	unsigned id;
	uint16_t port;
	pthread_barrier_t *bar;
	int fails;
	char err[320];
	long long grant[RACE_K]; /* 0: BLOCKED */
	int64_t charged;
};

static void *
racer(void *arg)
{
	struct racer *k = arg;
	struct it_daemon d = {.port = k->port};
	redisContext *c = it_connect(&d);
	const struct row *r = model_rate("flat", D_NAT);
	struct client e = {.id = k->id};

	if (c == NULL)
		cfail(&e, "racer %u: cannot connect", k->id);
	pthread_barrier_wait(k->bar);
	for (unsigned j = 0; c != NULL && j < RACE_K; j++) {
		redisReply *rep = redisCommand(c, "CALL.AUTH 800 %s r-%u-%u", D_NAT, k->id, j);
		if (rep != NULL && rep->type == REDIS_REPLY_INTEGER)
			k->grant[j] = rep->integer;
		else if (rep != NULL && rep->type == REDIS_REPLY_ERROR &&
		         strncmp(rep->str, "BLOCKED ", 8) == 0)
			k->grant[j] = 0;
		else
			cfail(&e, "racer %u: CALL.AUTH %u: %s", k->id, j,
			      rep ? type_name(rep->type) : c->errstr);
		if (rep != NULL)
			freeReplyObject(rep);
	}
	pthread_barrier_wait(k->bar); /* the main thread looks at the reservations */
	pthread_barrier_wait(k->bar);
	for (unsigned j = 0; c != NULL && j < RACE_K; j++) {
		if (k->grant[j] <= 0)
			continue;
		uint32_t used = (k->id * 31 + j * 7) % 700, g = (uint32_t)k->grant[j];
		int64_t charge = model_charge(r, used < g ? used : g);
		char id[32];
		snprintf(id, sizeof(id), "r-%u-%u", k->id, j);
		k->charged += charge;
		cexpect_money(&e, redisCommand(c, "CALL.END 800 %s %u", id, used), charge, id);
	}
	if (c != NULL)
		redisFree(c);
	k->fails = e.fails;
	memcpy(k->err, e.err, sizeof(k->err));
	return NULL;
}

static void
test_race_one_account(void **state)
{
	static struct racer k[RACE_N];
	const struct row *r = model_rate("flat", D_NAT);
	const int64_t opening = 10000 * U;
	pthread_barrier_t bar;
	int64_t reserved = 0, charged = 0;
	unsigned grants = 0, full = 0;
	struct acct a;

	(void)state;
	acct_new(fx.c, 800, "flat", opening);
	memset(k, 0, sizeof(k));
	pthread_barrier_init(&bar, NULL, RACE_N + 1);
	for (unsigned i = 0; i < RACE_N; i++) {
		k[i].id = i;
		k[i].port = fx.d.port;
		k[i].bar = &bar;
		assert_int_equal(pthread_create(&k[i].th, NULL, racer, &k[i]), 0);
	}
	pthread_barrier_wait(&bar); /* go */
	pthread_barrier_wait(&bar); /* all authorized */
	for (unsigned i = 0; i < RACE_N; i++) {
		for (unsigned j = 0; j < RACE_K; j++) {
			if (k[i].grant[j] == 0)
				continue;
			int64_t cost;
			/* Each grant is what the balance left could pay, at most the cap. */
			assert_true(k[i].grant[j] > 0 && k[i].grant[j] <= MAX_GRANT);
			assert_true(model_billed(r, (uint64_t)k[i].grant[j]) ==
			            (uint64_t)k[i].grant[j]);
			cost = model_charge(r, (uint64_t)k[i].grant[j]);
			reserved += cost;
			grants++;
			full += k[i].grant[j] == MAX_GRANT;
		}
	}
	/* No overspend: all grants together cost at most the balance. */
	assert_true(reserved <= opening);
	acct_get(fx.c, 800, &a);
	assert_true(a.balance == opening && a.reserved == reserved);
	assert_true(a.available == opening - reserved);
	assert_int_equal(a.calls, grants);
	/* 10000.00 is 1666 grants of 6.00, one of 3.60 (for the 4.00 left), then 0.40. */
	assert_int_equal(full, 1666);
	assert_int_equal(grants, 1667);
	assert_true(reserved == 9999600000);
	pthread_barrier_wait(&bar); /* end the calls */
	for (unsigned i = 0; i < RACE_N; i++)
		pthread_join(k[i].th, NULL);
	pthread_barrier_destroy(&bar);
	for (unsigned i = 0; i < RACE_N; i++) {
		if (k[i].fails)
			fail_msg("%d failures; first: %s", k[i].fails, k[i].err);
		charged += k[i].charged;
	}
	acct_get(fx.c, 800, &a);
	assert_true(a.balance == opening - charged);
	assert_true(a.reserved == 0 && a.available == a.balance);
	assert_int_equal(a.calls, 0);
	assert_true(a.usage[CAT_NATIONAL] == charged);
	assert_int_equal(info_int(fx.c, "call_granted"), 1667);
	assert_int_equal(info_int(fx.c, "call_blocked"), RACE_N * RACE_K - 1667);
	assert_int_equal(info_int(fx.c, "call_ended"), 1667);
}

/* ------------------------------------------------------------------ */
/* reservations expire (--max-grant 2 --call-grace 1)                  */

static void
test_expiry(void **state)
{
	struct acct a;

	(void)state;
	acct_new(fx.c, 900, "sec", 1 * U);
	/* On 60/60 a 2-second cap cannot reach the first boundary. */
	expect_err(cmd(fx.c, "CALL.AUTH 100 %s x0", D_NAT), "BLOCKED");
	uint64_t t0 = tg_mono_ms();
	expect_int(cmd(fx.c, "CALL.AUTH 900 %s x1", D_NAT), 2);
	expect_balance(fx.c, 900, 1 * U, 20000);
	/* A call ended in time is not expired. */
	expect_int(cmd(fx.c, "CALL.AUTH 900 %s x2", D_NAT), 2);
	expect_money(cmd(fx.c, "CALL.END 900 x2 1"), 10000);
	/* x1 is never ended: settled at its grant 2 s + 1 s of grace after it began. */
	for (;;) {
		acct_get(fx.c, 900, &a);
		if (a.reserved == 0)
			break;
		if (tg_mono_ms() - t0 > 10000)
			fail_msg("the reservation was never settled");
		usleep(50000);
	}
	uint64_t took = tg_mono_ms() - t0;
	if (took < 2500 || took > 6000)
		fail_msg("settled after %llu ms, expected about 3000", (unsigned long long)took);
	assert_true(a.balance == 1 * U - 10000 - 20000 && a.available == a.balance);
	assert_int_equal(a.calls, 0);
	assert_true(a.usage[CAT_NATIONAL] == 30000);
	assert_int_equal(info_int(fx.c, "call_expired"), 1);
	assert_int_equal(info_int(fx.c, "call_ended"), 1);
	assert_int_equal(info_int(fx.c, "calls_in_progress"), 0);
	/* The switch's late CALL.END hears that expiry settled the call, and nothing moves. */
	expect_err(cmd(fx.c, "CALL.END 900 x1 2"), "EXPIRED");
	expect_err(cmd(fx.c, "CALL.UPDATE 900 x1 2"), "NOCALL");
	expect_balance(fx.c, 900, 970000, 0);
	assert_true(info_money(fx.c, "money_charged") == 30000);
}

/*
 * A call settled by expiry keeps its call id spent, as CALL.END does: the
 * same CALL.AUTH again used to open a second reservation and a late
 * CALL.END billed it too, two charges for one call.  The exact steps, on
 * the bundled demo plans (--max-grant 6 --call-grace 1).
 */
static void
test_expired_call_id_is_not_authorized_again(void **state)
{
	(void)state;
	expect_status(cmd(fx.c, "ACCT.SET 1300 BALANCE 1 PLAN basic"), "OK");
	expect_int(cmd(fx.c, "CALL.AUTH 1300 14165550199 exp-re"), 6);
	expect_balance(fx.c, 1300, 1 * U, 2500);
	it_sleep_ms(8500);
	/* Expiry charged the grant: 6 s at 0.025 a minute. */
	expect_balance(fx.c, 1300, 997500, 0);
	assert_int_equal(info_int(fx.c, "call_expired"), 1);
	/* The id ended by expiry: refused like a call id that ended. */
	expect_err(cmd(fx.c, "CALL.AUTH 1300 14165550199 exp-re"), "CONFLICT");
	assert_int_equal(info_int(fx.c, "conflicts"), 1);
	/* The late CALL.END hears what was charged, whatever its duration, and changes nothing. */
	redisReply *r = cmd(fx.c, "CALL.END 1300 exp-re 6");
	want_type(r, REDIS_REPLY_ERROR);
	assert_string_equal(r->str, "EXPIRED call settled by expiry at its grant: charged 0.0025");
	freeReplyObject(r);
	expect_err(cmd(fx.c, "CALL.END 1300 exp-re 4"), "EXPIRED");
	/* Not this account's call: nothing to say about it. */
	expect_err(cmd(fx.c, "CALL.END 1301 exp-re 6"), "NOCALL");
	expect_err(cmd(fx.c, "CALL.UPDATE 1300 exp-re 5"), "NOCALL");
	expect_balance(fx.c, 1300, 997500, 0);
	assert_int_equal(info_int(fx.c, "call_ended"), 0);
	assert_int_equal(info_int(fx.c, "calls_in_progress"), 0);
	assert_true(info_money(fx.c, "money_charged") == 2500);
}

/*
 * Bad settings stop start-up with exit 2 and one line each, before the
 * journal is touched: port 70000 and reply-buffer 1 were found only after
 * journal recovery, in one combined message.  The data directory must not
 * even be created.
 */
static void
test_bad_settings_each_said_before_anything(void **state)
{
	char dir[IT_PATH_MAX], data[IT_PATH_MAX + 8], out[IT_PATH_MAX + 8], shm[64], buf[2048];
	int status;

	(void)state;
	assert_int_equal(it_dir_make(dir, sizeof(dir)), 0);
	snprintf(data, sizeof(data), "%s/data", dir);
	snprintf(out, sizeof(out), "%s/stderr", dir);
	snprintf(shm, sizeof(shm), "/tg-test-badcfg-%d", (int)getpid());
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(126);
		execl(getenv("TOLLGATED"), "tollgated", "--port", "70000", "--reply-buffer", "1",
		      "--data-dir", data, "--shm-name", shm, "--accounts", "none", "--redis-host",
		      "none", (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 2);
	FILE *f = fopen(out, "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	assert_string_equal(buf, "tollgated: port: 70000 is out of range 0..65535 (a TCP port)\n"
	                         "tollgated: reply-buffer: 1 is below 16384 (bytes: room for the "
	                         "largest reply)\n");
	assert_int_equal(access(data, F_OK), -1); /* nothing opened, nothing created */
	unlink(out);
	it_dir_remove(dir);
}

/* ------------------------------------------------------------------ */
/* bad input                                                           */

struct garbage {
	const char *bytes;
	size_t len;
	const char *reply; /* the whole reply */
	int closes;
};

#define G(s) s, sizeof(s) - 1

static void
test_bad_input_raw(void **state)
{
	static const struct garbage cases[] = {
	    {G("*-5\r\n"), "-ERR Protocol error: invalid multibulk length\r\n", 1},
	    {G("*99999999\r\n"), "-ERR Protocol error: too many arguments\r\n", 1},
	    {G("*33\r\n"), "-ERR Protocol error: too many arguments\r\n", 1},
	    {G("*01\r\n$4\r\nPING\r\n"), "-ERR Protocol error: invalid multibulk length\r\n", 1},
	    {G("*1\r\n$-5\r\n"), "-ERR Protocol error: invalid bulk length\r\n", 1},
	    {G("*1\r\n$99999999\r\n"), "-ERR Protocol error: invalid bulk length\r\n", 1},
	    {G("*2\r\n$4\r\nPING\r\n:5\r\n"), "-ERR Protocol error: expected '$'\r\n", 1},
	    {G("*1\r\n$4\r\nPINGXX\r\n"), "-ERR Protocol error: expected CRLF after bulk data\r\n",
	     1},
	    {G("\x00\xff\xfe\x01garbage"), "-ERR Protocol error: NUL byte in inline request\r\n",
	     1},
	    {G("PING \"open\r\n"), "-ERR Protocol error: unbalanced quotes in request\r\n", 1},
	    {G("PING a\rb\r\n"), "-ERR Protocol error: CR not followed by LF in inline request\r\n",
	     1},
	    /* A CDR whose frame breaks in its last argument is not run. */
	    {G("*5\r\n$3\r\nCDR\r\n$3\r\n100\r\n$11\r\n" D_NAT "\r\n$2\r\n60\r\n$2\r\nidXX\r\n"),
	     "-ERR Protocol error: expected CRLF after bulk data\r\n", 1},
	    /* What came before the garbage is answered, then the error, then EOF. */
	    {G("PING\r\n*-5\r\nPING\r\n"),
	     "+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n", 1},
	    /* Garbage that still parses as words is an unknown command, not a lost stream. */
	    {G("\xff\xfe\x80\r\n"), "-ERR unknown command '\?\?\?'\r\n", 0},
	    {G("NOSUCH 1 2\r\n*-1\r\n\r\nPING\r\n"), "-ERR unknown command 'NOSUCH'\r\n+PONG\r\n",
	     0},
	};
	struct acct before, after;

	(void)state;
	acct_get(fx.c, 100, &before);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct garbage *g = &cases[i];
		char buf[1024];
		int closed;
		int fd = it_raw_connect(fx.d.port);
		assert_true(fd >= 0);
		assert_int_equal(it_raw_write(fd, g->bytes, g->len), 0);
		it_raw_read(fd, buf, sizeof(buf), g->closes ? 3000 : 300, &closed);
		if (strcmp(buf, g->reply) != 0 || closed != g->closes)
			fail_msg("case %zu: reply '%s' (%s), expected '%s' (%s)", i, buf,
			         closed ? "closed" : "open", g->reply,
			         g->closes ? "closed" : "open");
		if (!g->closes) {
			/* The same connection still works. */
			assert_int_equal(it_raw_write(fd, "PING\r\n", 6), 0);
			raw_expect(fd, "+PONG\r\n", 0);
		}
		close(fd);
	}
	/* A fresh connection works, and no balance moved. */
	redisContext *c2 = it_connect(&fx.d);
	assert_non_null(c2);
	expect_status(cmd(c2, "PING"), "PONG");
	acct_get(c2, 100, &after);
	expect_same_acct(&before, &after);
	redisFree(c2);
	assert_int_equal(info_int(fx.c, "cdr"), 0);
}

static void
test_bad_input_arguments(void **state)
{
	static const char *const cases[][ARGV_MAX] = {
	    /* unknown commands and argument counts */
	    {"ERR unknown command", "FOO", NULL},
	    {"ERR unknown command", "CALL.AUTHX", "100", D_NAT, "c", NULL},
	    {"ERR wrong number of arguments for 'CALL.AUTH' command", "CALL.AUTH", "100", D_NAT,
	     NULL},
	    {"ERR unknown option 'x' (WITHREASON)", "CALL.AUTH", "100", D_NAT, "c", "x", NULL},
	    {"ERR wrong number of arguments for 'CALL.AUTH' command", "CALL.AUTH", "100", D_NAT,
	     "c", "WITHREASON", "x", NULL},
	    {"ERR wrong number of arguments for 'CALL.UPDATE' command", "CALL.UPDATE", "100", "c",
	     NULL},
	    {"ERR wrong number of arguments for 'CALL.END' command", "CALL.END", "100", "c", NULL},
	    {"ERR wrong number of arguments for 'CDR' command", "CDR", "100", D_NAT, "60", NULL},
	    {"ERR syntax: CDR", "cdr", "100", D_NAT, "60", "i", "x", NULL},
	    {"ERR wrong number of arguments for 'CDR' command", "cdr", "100", D_NAT, "60", "i",
	     "AT", "1", "x", NULL},
	    {"ERR wrong number of arguments for 'ACCT.CREDIT' command", "ACCT.CREDIT", "100", "1",
	     NULL},
	    {"ERR wrong number of arguments for 'INFO' command", "INFO", "a", "b", NULL},
	    {"ERR wrong number of arguments for 'AUTH' command", "AUTH", NULL},
	    {"ERR wrong number of arguments for 'ECHO' command", "ECHO", NULL},
	    /* account ids: unsigned 64-bit decimals, and not 2^64 - 1 */
	    {"ERR invalid account id", "CALL.AUTH", "abc", D_NAT, "c", NULL},
	    {"ERR invalid account id", "CALL.AUTH", "-1", D_NAT, "c", NULL},
	    {"ERR invalid account id", "CALL.AUTH", "", D_NAT, "c", NULL},
	    {"ERR invalid account id", "CALL.AUTH", "1.5", D_NAT, "c", NULL},
	    {"ERR invalid account id", "CALL.AUTH", " 100", D_NAT, "c", NULL},
	    {"ERR invalid account id", "CALL.AUTH", "100 ", D_NAT, "c", NULL},
	    {"ERR invalid account id", "CALL.AUTH", "0x64", D_NAT, "c", NULL},
	    {"ERR invalid account id", "CALL.AUTH", "18446744073709551615", D_NAT, "c", NULL},
	    {"ERR invalid account id", "CALL.AUTH", "18446744073709551616", D_NAT, "c", NULL},
	    {"ERR invalid account id", "CDR", "1e2", D_NAT, "60", "i", NULL},
	    {"ERR invalid account id", "CALL.END", "x", "c", "60", NULL},
	    {"ERR invalid account id", "CALL.UPDATE", "x", "c", "60", NULL},
	    {"ERR invalid account id", "ACCT.CREDIT", "+100", "1", "t", NULL},
	    /* destinations: 1 to 32 digits */
	    {"ERR invalid destination", "CALL.AUTH", "100", "", "c", NULL},
	    {"ERR invalid destination", "CALL.AUTH", "100", "+15551234567", "c", NULL},
	    {"ERR invalid destination", "CALL.AUTH", "100", "1555-1234", "c", NULL},
	    {"ERR invalid destination", "CALL.AUTH", "100", "1 555", "c", NULL},
	    {"ERR invalid destination", "CALL.AUTH", "100", "123456789012345678901234567890123",
	     "c", NULL},
	    {"ERR invalid destination", "CDR", "100", "1555x", "60", "i", NULL},
	    /* durations: 0 to 31 days */
	    {"ERR invalid duration", "CDR", "100", D_NAT, "-1", "i", NULL},
	    {"ERR invalid duration", "CDR", "100", D_NAT, "abc", "i", NULL},
	    {"ERR invalid duration", "CDR", "100", D_NAT, "", "i", NULL},
	    {"ERR invalid duration", "CDR", "100", D_NAT, "1.5", "i", NULL},
	    {"ERR invalid duration", "CDR", "100", D_NAT, "2678401", "i", NULL},
	    {"ERR invalid duration", "CDR", "100", D_NAT, "99999999999999999999999", "i", NULL},
	    {"ERR invalid duration", "CALL.END", "100", "c", "-5", NULL},
	    {"ERR invalid elapsed", "CALL.UPDATE", "100", "c", "x", NULL},
	    /* amounts */
	    {"ERR invalid amount", "ACCT.CREDIT", "100", "1.0000001", "t", NULL},
	    {"ERR invalid amount", "ACCT.CREDIT", "100", "ten", "t", NULL},
	    {"ERR credit amount must be positive", "ACCT.CREDIT", "100", "-10", "t", NULL},
	    /* ids: 1 to 255 bytes */
	    {"ERR invalid call id", "CALL.AUTH", "100", D_NAT, "", NULL},
	    {"ERR invalid call id", "CDR", "100", D_NAT, "60", "", NULL},
	    {"ERR invalid call id", "CALL.END", "100", "", "60", NULL},
	    {"ERR invalid txid", "ACCT.CREDIT", "100", "1", "", NULL},
	};
	char longid[300];
	struct acct before, after;

	(void)state;
	acct_get(fx.c, 100, &before);
	long long errors0 = info_int(fx.c, "command_errors");
	expect_errors(fx.c, cases, sizeof(cases) / sizeof(cases[0]));
	memset(longid, 'i', 256);
	longid[256] = '\0';
	const char *const too_long[] = {"CDR", "100", D_NAT, "60", longid, NULL};
	expect_err(cmd_argv(fx.c, too_long), "ERR invalid call id");
	longid[255] = '\0'; /* 255 bytes is fine */
	const char *const long_ok[] = {"CDR", "100", D_NAT, "0", longid, NULL};
	expect_money(cmd_argv(fx.c, long_ok), 0);
	/* None of those closed the connection, moved money or ran anything. */
	expect_status(cmd(fx.c, "PING"), "PONG");
	acct_get(fx.c, 100, &after);
	expect_same_acct(&before, &after);
	assert_int_equal(info_int(fx.c, "command_errors") - errors0,
	                 (long long)(sizeof(cases) / sizeof(cases[0])) + 1);
	assert_int_equal(info_int(fx.c, "call_auth"), 0);
	assert_int_equal(info_int(fx.c, "cdr"), 1);
	redisContext *c2 = it_connect(&fx.d);
	assert_non_null(c2);
	acct_get(c2, 100, &after);
	expect_same_acct(&before, &after);
	redisFree(c2);
}

/* ------------------------------------------------------------------ */
/* idle timeout (--idle-timeout 1)                                     */

static void
test_idle_timeout(void **state)
{
	static const char half[] = "*2\r\n$4\r\nPING\r\n$3\r\nab";
	int fds[2];
	uint64_t closed_at[2] = {0, 0};
	char buf[256];

	(void)state;
	redisFree(fx.c); /* the fixture's connection would time out too */
	fx.c = NULL;
	uint64_t t0 = tg_mono_ms();
	for (int i = 0; i < 2; i++) {
		fds[i] = it_raw_connect(fx.d.port);
		assert_true(fds[i] >= 0);
	}
	assert_int_equal(it_raw_write(fds[1], half, sizeof(half) - 1), 0);
	int busy = it_raw_connect(fx.d.port);
	assert_true(busy >= 0);
	/* A connection in use every 300 ms stays open throughout. */
	while (tg_mono_ms() - t0 < 3500) {
		assert_int_equal(it_raw_write(busy, "PING\r\n", 6), 0);
		raw_expect(busy, "+PONG\r\n", 0);
		for (int i = 0; i < 2; i++) {
			int closed;
			if (closed_at[i] != 0)
				continue;
			size_t n = it_raw_read(fds[i], buf, sizeof(buf), 0, &closed);
			assert_int_equal(n, 0); /* no reply to half a request */
			if (closed)
				closed_at[i] = tg_mono_ms() - t0;
		}
		usleep(100000);
	}
	for (int i = 0; i < 2; i++) {
		if (closed_at[i] < 800 || closed_at[i] > 3000)
			fail_msg("connection %d closed after %llu ms, expected about 1000", i,
			         (unsigned long long)closed_at[i]);
		close(fds[i]);
	}
	close(busy);
	fx.c = it_connect(&fx.d);
	assert_non_null(fx.c);
	expect_status(cmd(fx.c, "PING"), "PONG");
}

/* ------------------------------------------------------------------ */
/* redis-cli                                                           */

/* The whole output of a shell command; its exit status. */
static int
run(const char *command, char *out, size_t cap)
{
	FILE *f = popen(command, "r");
	size_t n = 0;
	if (f == NULL)
		return -1;
	while (n + 1 < cap) {
		size_t r = fread(out + n, 1, cap - 1 - n, f);
		if (r == 0)
			break;
		n += r;
	}
	out[n] = '\0';
	return pclose(f);
}

static void
test_redis_cli(void **state)
{
	char sh[IT_PATH_MAX * 2], out[4096], path[IT_PATH_MAX];

	(void)state;
	if (system("command -v redis-cli >/dev/null 2>&1") != 0) {
		print_message("redis-cli is not installed: skipped\n");
		skip();
	}
	snprintf(sh, sizeof(sh), "redis-cli -p %u PING 2>&1", fx.d.port);
	assert_int_equal(run(sh, out, sizeof(out)), 0);
	assert_string_equal(out, "PONG\n");
	snprintf(sh, sizeof(sh), "redis-cli -p %u CALL.AUTH 100 %s cli1 2>&1", fx.d.port, D_NAT);
	assert_int_equal(run(sh, out, sizeof(out)), 0);
	assert_string_equal(out, "600\n");
	snprintf(sh, sizeof(sh), "redis-cli -p %u CALL.END 100 cli1 61 2>&1", fx.d.port);
	assert_int_equal(run(sh, out, sizeof(out)), 0);
	assert_string_equal(out, "1.2\n");
	snprintf(sh, sizeof(sh), "redis-cli -p %u CALL.END 100 nosuchcall 61 2>&1", fx.d.port);
	run(sh, out, sizeof(out));
	assert_true(strncmp(out, "NOCALL ", 7) == 0);

	/* --pipe: raw protocol in, a count of replies and errors out. */
	assert_int_equal(it_file_write(fx.dir, "pipe.txt",
	                               "PING\r\n"
	                               "CDR 100 " D_NAT " 60 cli-pipe-1\r\n"
	                               "*5\r\n$3\r\nCDR\r\n$3\r\n100\r\n$11\r\n" D_NAT "\r\n"
	                               "$3\r\n120\r\n$10\r\ncli-pipe-2\r\n"
	                               "ACCT.CREDIT 100 1 cli-pipe-3\r\n",
	                               path, sizeof(path)),
	                 0);
	snprintf(sh, sizeof(sh), "redis-cli -p %u --pipe --pipe-timeout 10 < '%s' 2>&1", fx.d.port,
	         path);
	assert_int_equal(run(sh, out, sizeof(out)), 0);
	if (strstr(out, "errors: 0, replies: 4") == NULL)
		fail_msg("redis-cli --pipe said: %s", out);
	/* 10 - 1.20 - 0.60 - 1.20 + 1 */
	expect_balance(fx.c, 100, 8 * U, 0);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_call_auth_grants, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_call_auth_many_calls_one_account, setup_std,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_call_auth_refusals, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_account_id_leading_zeros_past_20_characters,
	                                    setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_call_update, setup_update, teardown),
	    cmocka_unit_test_setup_teardown(test_call_update_at_max_grant_says_so, setup_update,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_call_end, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_nocall_unknown_id_leaves_no_lock, setup_std,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_cdr, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_pipelined_batch_same_account_same_id, setup_std,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_acct_credit, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_acct_set, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_acct_set_postpaid, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_acct_set_refused_registers_no_plan, setup_std,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_acct_set_new_plans_concurrently, setup_std,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_acct_set_refill_crossing, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_acct_get, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_rate, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_ping_info_command_quit, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_auth, setup_auth, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_request_after_auth_in_same_write_gets_the_limit_after_auth, setup_auth_shrinks,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_rates_reload, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_pipeline_10k, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_many_clients, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_race_one_account, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_expiry, setup_expiry, teardown),
	    cmocka_unit_test_setup_teardown(test_expired_call_id_is_not_authorized_again,
	                                    setup_expiry_demo, teardown),
	    cmocka_unit_test(test_bad_settings_each_said_before_anything),
	    cmocka_unit_test_setup_teardown(test_bad_input_raw, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_input_arguments, setup_std, teardown),
	    cmocka_unit_test_setup_teardown(test_idle_timeout, setup_idle, teardown),
	    cmocka_unit_test_setup_teardown(test_redis_cli, setup_std, teardown),
	};
	signal(SIGPIPE, SIG_IGN);
	/* test_server PATTERN: only the tests whose name matches (cmocka's glob). */
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	(void)argv;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
