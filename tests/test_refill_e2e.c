/*
 * test_refill_e2e.c - auto-refill end to end: the real tollgated with its
 * real publisher, a real redis-server and real tollrefill processes.
 *
 * Each test gets a private redis-server (redis_harness.c), the consumer
 * group made before anything is published, a tollgated publishing to that
 * Redis (--redis-host 127.0.0.1 --redis-port <port>) with the test's
 * accounts, and a maildir.  The test drives the accounts over sockets with
 * CALL.AUTH, CALL.END and CDR as a switch would and lets the engine fire,
 * publish and the workers settle; it then checks from the outside that each
 * crossing made one request, one charge, one credit and one mail, and that
 * every balance is exactly the start minus the charges the engine replied
 * plus the refill.  Money is micro-units (tg_money_t), never floats.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rcmd.h"
#include "redis_harness.h"
#include "refill_fixture.h"
#include "tg_money.h"

#define FMT(a, b) __attribute__((format(printf, a, b)))

#define U      1000000LL /* micro-units per currency unit */
#define STREAM RFX_STREAM
#define GROUP  RFX_GROUP
/* basic, prefix 1: $0.02 a minute, 6/6: 600 s cost $0.20, 3000 s $1.00. */
#define DEST "12025550100"
/* Longest a test waits for the engine and the workers to get something done, ms. */
#define WAIT_MS 30000
/* The accounts every test starts with (docs/ACCOUNTS.md). */
#define ACCOUNTS                                                                                   \
	"account,balance,plan,state,threshold,refill,refill_amount,payment\n"                      \
	"2001,12,basic,active,10,add,50,on\n"                                                      \
	"2002,12,basic,active,10,topup,40,on\n"                                                    \
	"2003,10.5,basic,active,10,add,50,on\n"                                                    \
	"2004,12,basic,active,10,add,50,on\n"                                                      \
	"2005,12,basic,active,10,add,50,on\n"                                                      \
	"2006,12,basic,active,10,add,25,on\n"

/* ------------------------------------------------------------------ */
/* the fixture                                                         */

static struct rfx fx;

/* Start tollgated on the test's accounts, publishing to the test's Redis. */
static void
engine_start(const char *refill_timeout)
{
	char port[16];

	snprintf(port, sizeof(port), "%u", fx.redis.port);
	const char *const flags[] = {
	    "--redis-host", "127.0.0.1",        "--redis-port", port, "--accounts",
	    fx.csv,         "--refill-timeout", refill_timeout, NULL};
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	fx.e = it_connect(&fx.d);
	assert_non_null(fx.e);
}

static int
setup(void **state)
{
	*state = &fx;
	rfx_setup(&fx, ACCOUNTS);
	return 0;
}

/* ------------------------------------------------------------------ */
/* the engine, as a switch sees it                                     */

/*
 * A switch's traffic on one account: every operation's charge, as the
 * engine replied it, is added up, so the balance can be computed exactly.
 * bal is the balance as the switch knows it (start minus charges).
 */
struct traffic {
	redisContext *c;
	uint64_t acct;
	tg_money_t bal;       /* start minus every charge so far */
	tg_money_t threshold; /* the account's */
	int crossed_at;       /* the CDR that took bal to the threshold or below; -1: none */
	tg_money_t at_crossing;
	tg_money_t after[256]; /* bal after CDR i, for i < n */
	int n;
	unsigned seq;
};

static void
traffic_open(struct traffic *t, uint64_t acct, tg_money_t start, tg_money_t threshold)
{
	memset(t, 0, sizeof(*t));
	t->c = it_connect(&fx.d);
	assert_non_null(t->c);
	t->acct = acct;
	t->bal = start;
	t->threshold = threshold;
	t->crossed_at = -1;
}

static void
traffic_close(struct traffic *t)
{
	redisFree(t->c);
	t->c = NULL;
}

/* A charge reply: a bulk string amount. */
static tg_money_t
charge_of(redisReply *r, const char *what)
{
	if (r->type != REDIS_REPLY_STRING)
		fail_msg("%s: reply type %d (%s)", what, r->type,
		         r->type == REDIS_REPLY_ERROR ? r->str : "not a charge");
	tg_money_t v = it_money(r->str);
	freeReplyObject(r);
	return v;
}

/*
 * CALL.AUTH, which must grant (never BLOCKED while the balance is
 * positive), then CALL.END with 0 seconds (the call never connected).
 */
static void
traffic_auth(struct traffic *t)
{
	char id[64];

	snprintf(id, sizeof(id), "auth-%llu-%u", (unsigned long long)t->acct, ++t->seq);
	redisReply *r = it_cmd(t->c, "CALL.AUTH %llu " DEST " %s", (unsigned long long)t->acct, id);
	if (r->type != REDIS_REPLY_INTEGER || r->integer <= 0)
		fail_msg("CALL.AUTH %llu: not a grant (type %d %s) at balance %lld",
		         (unsigned long long)t->acct, r->type,
		         r->type == REDIS_REPLY_ERROR ? r->str : "", (long long)t->bal);
	freeReplyObject(r);
	t->bal -= charge_of(
	    redisCommand(t->c, "CALL.END %llu %s 0", (unsigned long long)t->acct, id), "CALL.END");
}

/* One CDR of seconds; returns its charge. */
static tg_money_t
traffic_cdr(struct traffic *t, unsigned seconds)
{
	char id[64];

	snprintf(id, sizeof(id), "cdr-%llu-%u", (unsigned long long)t->acct, ++t->seq);
	tg_money_t c = charge_of(
	    redisCommand(t->c, "CDR %llu " DEST " %u %s", (unsigned long long)t->acct, seconds, id),
	    "CDR");
	bool above = t->bal > t->threshold;
	t->bal -= c;
	if (above && t->bal <= t->threshold && t->crossed_at < 0) {
		t->crossed_at = t->n;
		t->at_crossing = t->bal;
	}
	assert_true(t->n < (int)(sizeof(t->after) / sizeof(t->after[0])));
	t->after[t->n++] = t->bal;
	return c;
}

/* ------------------------------------------------------------------ */
/* Redis: the stream, the simulator, the maildir                       */

/* Stream entries (all attempts) whose account is acct; the last one's fields into *last. */
static unsigned
requests_for(uint64_t acct, redisReply **last)
{
	redisReply *r = it_cmd(fx.r, "XRANGE " STREAM " - +");
	char a[32];
	unsigned n = 0;

	snprintf(a, sizeof(a), "%llu", (unsigned long long)acct);
	if (last != NULL)
		*last = NULL;
	for (size_t i = 0; i < r->elements; i++) {
		redisReply *f = r->element[i]->element[1];
		for (size_t k = 0; k + 1 < f->elements; k += 2) {
			if (strcmp(f->element[k]->str, "account") != 0 ||
			    strcmp(f->element[k + 1]->str, a) != 0)
				continue;
			n++;
			if (last != NULL) {
				if (*last != NULL)
					freeReplyObject(*last);
				*last = it_cmd(fx.r, "XRANGE " STREAM " %s %s",
				               r->element[i]->element[0]->str,
				               r->element[i]->element[0]->str);
			}
		}
	}
	freeReplyObject(r);
	return n;
}

/* A field of an XRANGE reply's single entry; the test fails without it. */
static const char *
entry_field(const redisReply *range, const char *name)
{
	const char *v = it_entry_field(range->element[0], name);
	if (v[0] == '\0')
		fail_msg("the stream entry has no field %s", name);
	return v;
}

static long long
group_pending(void)
{
	redisReply *r = it_cmd(fx.r, "XPENDING " STREAM " " GROUP);
	long long n = r->element[0]->integer;
	freeReplyObject(r);
	return n;
}

/* An amount as the mails show it: "$56.00". */
static void
dollars(tg_money_t v, char *out, size_t cap)
{
	char m[TG_MONEY_STR_MAX];
	tg_money_format(v, m);
	const char *dot = strchr(m, '.');
	snprintf(out, cap, "$%s%s", m, dot == NULL ? ".00" : strlen(dot) == 2 ? "0" : "");
}

/* ------------------------------------------------------------------ */
/* workers                                                             */

#define WAIT_FOR(cond, w) RFX_WAIT_FOR(cond, w, WAIT_MS)

/* ------------------------------------------------------------------ */
/* tests                                                               */

/*
 * (a) A switch's CDRs take an ADD account and a TOPUP account across their
 * threshold while CALL.AUTH keeps being granted: one request each on the
 * stream, one charge, one credit, one receipt, and balances exactly where
 * ADD and TOPUP say.
 */
static void
test_cdrs_cross_once_add_and_topup(void **state)
{
	static const char *const flags[] = {"--consumer", "w1", NULL};
	struct traffic add, top;
	struct rfx_worker w;
	char mail[8192], line[128], rec[256];

	(void)state;
	engine_start("600");
	rfx_profile(&fx, 2001, "ann@example.com", "card", "tok_visa_4242", "Test");
	rfx_profile(&fx, 2002, "bo@example.com", "paypal", "tok_pp_7788", "Test");
	rfx_worker_start(&fx, &w, flags, NULL);

	traffic_open(&add, 2001, 12 * U, 10 * U);
	traffic_open(&top, 2002, 12 * U, 10 * U);
	/* 30 CDRs of $0.20 each: the 10th takes both to $10.00, the threshold. */
	for (int i = 0; i < 30; i++) {
		traffic_auth(&add);
		assert_true(traffic_cdr(&add, 600) == 200000);
		traffic_auth(&top);
		assert_true(traffic_cdr(&top, 600) == 200000);
	}
	assert_int_equal(add.crossed_at, 9);
	assert_int_equal(top.crossed_at, 9);

	WAIT_FOR(!rfx_refill_pending(&fx, 2001) && !rfx_refill_pending(&fx, 2002) &&
	             rfx_mails(&fx, 2001, "receipt") == 1 && rfx_mails(&fx, 2002, "receipt") == 1,
	         &w);
	/* Traffic goes on after the refill: still granted. */
	for (int i = 0; i < 5; i++) {
		traffic_auth(&add);
		traffic_cdr(&add, 600);
		traffic_auth(&top);
		traffic_cdr(&top, 600);
	}

	/* One request each, with the fields the crossing had. */
	redisReply *e;
	assert_int_equal(requests_for(2001, &e), 1);
	assert_string_equal(entry_field(e, "id"), "refill:2001:1");
	assert_string_equal(entry_field(e, "mode"), "add");
	assert_true(it_money(entry_field(e, "amount")) == 50 * U);
	assert_true(it_money(entry_field(e, "balance")) == add.at_crossing);
	assert_true(it_money(entry_field(e, "threshold")) == 10 * U);
	freeReplyObject(e);
	assert_int_equal(requests_for(2002, &e), 1);
	assert_string_equal(entry_field(e, "id"), "refill:2002:1");
	assert_string_equal(entry_field(e, "mode"), "topup");
	tg_money_t topup = 40 * U - top.at_crossing; /* what returns the balance to 40 */
	assert_true(it_money(entry_field(e, "amount")) == topup);
	assert_true(topup == 30 * U);
	freeReplyObject(e);

	/* One charge each, at the gateway, for the request's amount. */
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 2);
	assert_int_equal(it_int_cmd(fx.r, "HGET tollgate:sim:attempts refill:2001:1"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HGET tollgate:sim:attempts refill:2002:1"), 1);
	redisReply *r = it_cmd(fx.r, "HGET tollgate:sim:charges refill:2001:1");
	assert_true(strncmp(r->str, "50 tok_visa_4242 ", 17) == 0);
	freeReplyObject(r);
	r = it_cmd(fx.r, "HGET tollgate:sim:charges refill:2002:1");
	assert_true(strncmp(r->str, "30 tok_pp_7788 ", 15) == 0);
	freeReplyObject(r);

	/* One credit each; the balances exactly start - charges + refill. */
	assert_int_equal(it_info(fx.e, "refills_fired"), 2);
	assert_int_equal(it_info(fx.e, "refills_landed"), 2);
	assert_int_equal(it_info(fx.e, "credits"), 2);
	assert_int_equal(it_info(fx.e, "refills_republished"), 0);
	assert_true(it_acct_money(fx.e, 2001, "balance") == add.bal + 50 * U);
	assert_true(it_acct_money(fx.e, 2002, "balance") == top.bal + topup);
	rfx_expect_request(&fx, 2001, "");
	rfx_expect_request(&fx, 2002, "");

	/*
	 * One receipt each.  Its new balance is the credit's reply: the
	 * balance after some CDR past the crossing, plus the refill.
	 */
	rfx_mail_read(&fx, 2001, 1, "receipt", mail, sizeof(mail));
	rfx_expect_has(mail, "To: \"Test\" <ann@example.com>\n");
	rfx_expect_has(mail, "Amount charged:     $50.00\n");
	rfx_expect_has(mail, "Payment method:     credit card ****4242\n");
	r = it_cmd(fx.r, "GET tollgate:refill:outcome:refill:2001:1");
	snprintf(rec, sizeof(rec), "%s", r->str);
	freeReplyObject(r);
	char amount[32], after[32];
	assert_int_equal(sscanf(rec, "credited %31s %*u %31s", amount, after), 2);
	bool seen = false;
	for (int i = add.crossed_at; i < add.n; i++)
		seen |= it_money(after) == add.after[i] + 50 * U;
	assert_true(seen);
	char shown[48];
	dollars(it_money(after), shown, sizeof(shown));
	snprintf(line, sizeof(line), "New balance:        %s\n", shown);
	rfx_expect_has(mail, line);
	rfx_mail_read(&fx, 2002, 1, "receipt", mail, sizeof(mail));
	rfx_expect_has(mail, "Amount charged:     $30.00\n");
	rfx_expect_has(mail, "Payment method:     PayPal ****7788\n");
	assert_int_equal(rfx_files(&fx, "new", ""), 2);
	assert_int_equal(rfx_files(&fx, "tmp", ""), 0);

	assert_int_equal(rfx_worker_stop(&w), 0);
	assert_int_equal(group_pending(), 0);
	traffic_close(&add);
	traffic_close(&top);
}

struct racer {
	pthread_t t;
	uint16_t port;
	unsigned k;
	tg_money_t charged;
	int err;
};

enum { RACERS = 16, RACER_CDRS = 20 };

static pthread_barrier_t start_line;

/* One connection: RACER_CDRS pipelined CDRs on account 2003, all released at once. */
static void *
racer_run(void *arg)
{
	struct racer *r = arg;
	struct timeval tv = {.tv_sec = 10};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);

	pthread_barrier_wait(&start_line);
	if (c == NULL || c->err) {
		r->err = 1;
		if (c != NULL)
			redisFree(c);
		return NULL;
	}
	for (unsigned i = 0; i < RACER_CDRS; i++)
		redisAppendCommand(c, "CDR 2003 " DEST " 60 race-%u-%u", r->k, i);
	for (unsigned i = 0; i < RACER_CDRS; i++) {
		void *p = NULL;
		tg_money_t v;
		if (redisGetReply(c, &p) != REDIS_OK || p == NULL) {
			r->err = 1;
			break;
		}
		redisReply *rep = p;
		if (rep->type != REDIS_REPLY_STRING || tg_money_parse(rep->str, rep->len, &v) != 0)
			r->err = 1;
		else
			r->charged += v;
		freeReplyObject(rep);
	}
	redisFree(c);
	return NULL;
}

/* (b) Many connections cross the same account's threshold at once: one request. */
static void
test_many_connections_cross_at_once(void **state)
{
	static const char *const flags[] = {"--consumer", "w1", NULL};
	struct racer rs[RACERS];
	struct rfx_worker w;
	tg_money_t charged = 0;

	(void)state;
	engine_start("600");
	rfx_profile(&fx, 2003, "cy@example.com", "card", "tok_visa_1111", "Test");
	rfx_worker_start(&fx, &w, flags, NULL);
	assert_int_equal(pthread_barrier_init(&start_line, NULL, RACERS), 0);
	for (unsigned k = 0; k < RACERS; k++) {
		rs[k] = (struct racer){.port = fx.d.port, .k = k};
		assert_int_equal(pthread_create(&rs[k].t, NULL, racer_run, &rs[k]), 0);
	}
	for (unsigned k = 0; k < RACERS; k++) {
		pthread_join(rs[k].t, NULL);
		assert_int_equal(rs[k].err, 0);
		charged += rs[k].charged;
	}
	pthread_barrier_destroy(&start_line);
	assert_true(charged == RACERS * RACER_CDRS * 20000); /* $0.02 a CDR */

	WAIT_FOR(!rfx_refill_pending(&fx, 2003) && rfx_mails(&fx, 2003, "receipt") == 1, &w);
	assert_int_equal(requests_for(2003, NULL), 1);
	assert_int_equal(it_info(fx.e, "refills_fired"), 1);
	assert_int_equal(it_info(fx.e, "refills_landed"), 1);
	assert_int_equal(it_info(fx.e, "credits"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HGET tollgate:sim:attempts refill:2003:1"), 1);
	assert_true(it_acct_money(fx.e, 2003, "balance") == 10 * U + 500000 - charged + 50 * U);
	rfx_expect_request(&fx, 2003, "");
	assert_int_equal(rfx_worker_stop(&w), 0);
	assert_int_equal(group_pending(), 0);
}

/*
 * (c) A worker dies right after the gateway took the money, before it wrote
 * anything down; another, with a short --claim-idle, takes the entry over:
 * one charge in all, one credit, one receipt.
 */
static void
test_worker_killed_after_charge_taken_over(void **state)
{
	static const char *const doomed[] = {"--consumer", "doomed", NULL};
	static const char *const rescuer[] = {"--consumer", "rescuer", "--claim-idle", "300", NULL};
	struct traffic t;
	struct rfx_worker a, b;

	(void)state;
	engine_start("600");
	rfx_profile(&fx, 2004, "di@example.com", "card", "tok_visa_2004", "Test");
	rfx_worker_start(&fx, &a, doomed, "TOLLREFILL_TEST_CRASH_AFTER_CHARGE=1");
	traffic_open(&t, 2004, 12 * U, 10 * U);
	for (int i = 0; i < 12; i++) {
		traffic_auth(&t);
		traffic_cdr(&t, 600);
	}
	assert_int_equal(rfx_worker_wait(&a, WAIT_MS), 9);
	assert_true(rfx_worker_said(&a, "TOLLREFILL_TEST_CRASH_AFTER_CHARGE=1: exiting 9"));
	/* Charged, nothing else: no credit, no mail, the entry pending at the dead worker. */
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 1);
	assert_int_equal(it_int_cmd(fx.r, "EXISTS tollgate:refill:outcome:refill:2004:1"), 0);
	assert_true(it_acct_money(fx.e, 2004, "balance") == t.bal);
	rfx_expect_request(&fx, 2004, "refill:2004:1");
	assert_int_equal(rfx_mails(&fx, 2004, "receipt"), 0);
	assert_int_equal(group_pending(), 1);

	rfx_worker_start(&fx, &b, rescuer, NULL);
	WAIT_FOR(!rfx_refill_pending(&fx, 2004) && rfx_mails(&fx, 2004, "receipt") == 1, &b);
	assert_int_equal(rfx_worker_stop(&b), 0);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HGET tollgate:sim:attempts refill:2004:1"), 2);
	assert_int_equal(it_info(fx.e, "credits"), 1);
	assert_int_equal(it_info(fx.e, "refills_landed"), 1);
	assert_int_equal(requests_for(2004, NULL), 1);
	assert_true(it_acct_money(fx.e, 2004, "balance") == t.bal + 50 * U);
	assert_int_equal(rfx_files(&fx, "new", ""), 1);
	assert_int_equal(group_pending(), 0);
	assert_true(rfx_worker_said(&b, "refill:2004:1 account 2004: approved"));
	traffic_close(&t);
}

/*
 * (d) A declined card: one failure mail, no credit, the flag cleared; the
 * account rates on and blocks at $0.00.  Once the card is fixed and a
 * credit lifts the balance above the threshold, the next crossing fires a
 * new request, charged and credited.
 */
static void
test_declined_then_fixed(void **state)
{
	static const char *const flags[] = {"--consumer", "w1", NULL};
	struct traffic t;
	struct rfx_worker w;
	char mail[8192];

	(void)state;
	engine_start("600");
	rfx_profile(&fx, 2005, "ed@example.com", "card", "tok_declined", "Test");
	rfx_worker_start(&fx, &w, flags, NULL);
	traffic_open(&t, 2005, 12 * U, 10 * U);
	for (int i = 0; i < 2; i++) {
		traffic_auth(&t);
		assert_true(traffic_cdr(&t, 3000) == U); /* $1.00 */
	}
	assert_int_equal(t.crossed_at, 1);
	WAIT_FOR(rfx_mails(&fx, 2005, "failure") == 1 && !rfx_refill_pending(&fx, 2005), &w);

	assert_int_equal(rfx_mails(&fx, 2005, "failure"), 1);
	assert_int_equal(rfx_mails(&fx, 2005, "receipt"), 0);
	rfx_mail_read(&fx, 2005, 1, "failure", mail, sizeof(mail));
	rfx_expect_has(mail, "To: \"Test\" <ed@example.com>\n");
	rfx_expect_has(mail, "the payment was declined");
	rfx_expect_has(mail, "Payment method:     credit card ****ined\n");
	rfx_expect_has(mail, "This is the only notification you will receive.");
	rfx_expect_has(mail,
	               "when your prepaid balance falls to $0.00, you will not be\nable to use "
	               "your service");
	rfx_expect_request(&fx, 2005, "");
	assert_int_equal(it_info(fx.e, "credits"), 0);
	assert_int_equal(it_info(fx.e, "refills_failed"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 0);
	assert_true(it_acct_money(fx.e, 2005, "balance") == 10 * U);

	/* Rating goes on down to $0.00, where CALL.AUTH blocks; no new request on the way. */
	for (int i = 0; i < 10; i++) {
		traffic_auth(&t);
		traffic_cdr(&t, 3000);
	}
	assert_true(t.bal == 0);
	assert_true(it_acct_money(fx.e, 2005, "balance") == 0);
	redisReply *r = redisCommand(t.c, "CALL.AUTH 2005 " DEST " blocked-1");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	assert_true(strncmp(r->str, "BLOCKED", 7) == 0);
	freeReplyObject(r);
	assert_int_equal(requests_for(2005, NULL), 1);
	rfx_expect_request(&fx, 2005, "");

	/* The card is fixed, a payment lifts the balance above the threshold. */
	it_run_cmd(fx.r, "HSET tollgate:customer:2005 token tok_visa_2005");
	r = it_cmd(fx.e, "ACCT.CREDIT 2005 20 payment-2005-1");
	assert_true(it_money(r->str) == 20 * U);
	freeReplyObject(r);
	t.bal += 20 * U;
	t.crossed_at = -1;
	for (int i = 0; i < 12; i++) {
		traffic_auth(&t);
		traffic_cdr(&t, 3000);
	}
	assert_true(t.crossed_at >= 0);
	WAIT_FOR(rfx_mails(&fx, 2005, "receipt") == 1 && !rfx_refill_pending(&fx, 2005), &w);
	assert_int_equal(requests_for(2005, NULL), 2);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HEXISTS tollgate:sim:charges refill:2005:2"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HGET tollgate:sim:attempts refill:2005:1"), 1);
	assert_true(it_acct_money(fx.e, 2005, "balance") == t.bal + 50 * U);
	assert_true(it_acct_money(fx.e, 2005, "balance") == 58 * U);
	rfx_mail_read(&fx, 2005, 2, "receipt", mail, sizeof(mail));
	rfx_expect_has(mail, "Payment method:     credit card ****2005\n");
	assert_int_equal(rfx_mails(&fx, 2005, "failure"), 1);
	assert_int_equal(it_info(fx.e, "credits"), 2); /* the payment and the refill */
	assert_int_equal(it_info(fx.e, "refills_landed"), 1);
	traffic_auth(&t);
	assert_int_equal(rfx_worker_stop(&w), 0);
	assert_int_equal(group_pending(), 0);
	traffic_close(&t);
}

/*
 * (e) Bad configuration: exit 1 with a message saying what is wrong.  An
 * unreachable Redis with --once: a non-zero exit, and nothing lost: the
 * engine keeps the request and publishes it again once Redis is back,
 * where a worker settles it, once.
 */
static void
test_bad_config_and_unreachable_redis(void **state)
{
	static const char *const bad_value[] = {"--claim-idle", "soon", "--once", NULL};
	static const char *const bad_dead[] = {"--dead-stream", STREAM, "--once", NULL};
	static const char *const once[] = {"--once", "--attempts", "2", NULL};
	static const char *const flags[] = {"--consumer", "w1", NULL};
	const char *bin = getenv("TOLLREFILL");
	struct traffic t;
	struct rfx_worker w;
	char cmdline[IT_PATH_MAX * 4];

	(void)state;
	engine_start("2");
	rfx_worker_start(&fx, &w, bad_value, NULL);
	assert_int_equal(rfx_worker_wait(&w, WAIT_MS), 1);
	assert_true(rfx_worker_said(&w, "tollrefill: bad value \"soon\" for --claim-idle"));
	rfx_worker_start(&fx, &w, bad_dead, NULL);
	assert_int_equal(rfx_worker_wait(&w, WAIT_MS), 1);
	assert_true(rfx_worker_said(&w, "--dead-stream must not be the refill stream"));

	/* No --engine at all: said so, exit 1. */
	it_pathf(cmdline, sizeof(cmdline), "'%s' --maildir '%s' --once >'%s/noengine.log' 2>&1",
	         bin, fx.mail, fx.dir);
	int status = system(cmdline);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);
	struct rfx_worker nolog;
	it_pathf(nolog.log, sizeof(nolog.log), "%s/noengine.log", fx.dir);
	assert_true(rfx_worker_said(&nolog, "tollrefill: --engine HOST:PORT is required"));
	assert_int_equal(it_int_cmd(fx.r, "XLEN " STREAM), 0);

	/* A request on the stream, then Redis goes away. */
	rfx_profile(&fx, 2006, "fi@example.com", "card", "tok_visa_2006", "Test");
	traffic_open(&t, 2006, 12 * U, 10 * U);
	for (int i = 0; i < 10; i++)
		traffic_cdr(&t, 600);
	WAIT_FOR(requests_for(2006, NULL) >= 1, NULL);
	redisFree(fx.r);
	fx.r = NULL;
	tg_test_redis_stop(&fx.redis);

	rfx_worker_start(&fx, &w, once, NULL);
	int rc = rfx_worker_wait(&w, WAIT_MS);
	assert_int_not_equal(rc, 0);
	assert_int_equal(rc, 75);
	assert_true(rfx_worker_said(&w, "cannot connect"));
	assert_true(rfx_worker_said(&w, "entries stay pending"));
	/* Nothing was lost: the engine still holds the request, nothing was charged or credited. */
	rfx_expect_request(&fx, 2006, "refill:2006:1");
	assert_true(it_acct_money(fx.e, 2006, "balance") == t.bal);
	assert_int_equal(rfx_mails(&fx, 2006, "receipt"), 0);

	/* Redis is back (empty: no persistence); the engine publishes the request again. */
	assert_int_equal(tg_test_redis_start(&fx.redis), 0);
	fx.r = tg_test_redis_connect(&fx.redis);
	assert_non_null(fx.r);
	redisReply *r = redisCommand(fx.r, "XGROUP CREATE " STREAM " " GROUP " $ MKSTREAM");
	assert_non_null(r);
	freeReplyObject(r);
	rfx_profile(&fx, 2006, "fi@example.com", "card", "tok_visa_2006", "Test");
	rfx_worker_start(&fx, &w, flags, NULL);
	WAIT_FOR(!rfx_refill_pending(&fx, 2006) && rfx_mails(&fx, 2006, "receipt") == 1, &w);
	assert_int_equal(rfx_worker_stop(&w), 0);
	assert_true(it_acct_money(fx.e, 2006, "balance") == t.bal + 25 * U);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 1);
	assert_int_equal(it_info(fx.e, "refills_landed"), 1);
	assert_int_equal(it_info(fx.e, "credits"), 1);
	assert_true(it_info(fx.e, "refills_republished") >= 1);
	traffic_close(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_cdrs_cross_once_add_and_topup, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_many_connections_cross_at_once, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_worker_killed_after_charge_taken_over, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_declined_then_fixed, setup, rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_bad_config_and_unreachable_redis, setup,
	                                    rfx_teardown_test),
	};

	signal(SIGPIPE, SIG_IGN);
	/* No redis-server on this machine: skip, as every integration test does. */
	if (!tg_test_redis_present())
		return 77;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
