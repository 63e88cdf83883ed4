/*
 * test_tollrefill.c - the refill worker against a real redis-server and the
 * real tollgated.
 *
 * Every test gets its own redis-server (redis_harness.c) and daemon
 * (harness.c), fires refill requests on the engine with ACCT.SET (the
 * engine's own flag and request id are the ground truth), publishes the
 * stream entries itself exactly as docs/REFILL.md describes them (the
 * engine's publisher is turned off; one end-to-end test turns it on, and
 * is skipped when the engine has none), runs tollrefill as a child process
 * and checks what it did from the outside: balances and flags on the engine,
 * charges and calls recorded by the gateway simulator, mail files in the
 * maildir (or what a sendmail command received), malformed entries in the
 * dead-letter stream, entries pending in the group.  Amounts are compared as strings or
 * micro-units, never floats.  The worker's log is checked for sanitizer
 * reports after every run.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

#define U 1000000LL /* micro-units per currency unit */

#define STREAM RFX_STREAM
#define DEAD   "tollgate:refill:dead"
#define GROUP  RFX_GROUP
/* Longest a worker run may take before the test kills it, ms. */
#define RUN_TIMEOUT_MS 60000
/* Longest a test waits for a running worker to get something done, ms. */
#define WAIT_MS 20000
#define LOG_MAX (1 << 17)

/* ------------------------------------------------------------------ */
/* the fixture: one redis-server, one tollgated, one maildir per test  */

static struct rfx fx;

/*
 * Start the fixture's tollgated with extra flags (NULL-terminated, may be
 * NULL).  The tests publish the stream entries themselves, so the engine's
 * own publisher is turned off (redis-host none): it must neither add
 * entries to the test's stream nor reach for a Redis on the default port.
 * An engine without that setting (no publisher) is started without it.
 */
static int
engine_start(const char *const *extra)
{
	static int has_publisher = -1; /* unknown until the first start */
	const char *flags[32];
	unsigned n = 0;

	if (has_publisher != 0) {
		flags[n++] = "--redis-host";
		flags[n++] = "none";
	}
	for (unsigned i = 0; extra != NULL && extra[i] != NULL; i++)
		flags[n++] = extra[i];
	flags[n] = NULL;
	assert_true(n < sizeof(flags) / sizeof(flags[0]));
	int rc = it_start(&fx.d, fx.dir, flags);
	if (rc != 0 && has_publisher == -1) {
		fprintf(stderr, "tollgated has no redis-host setting: no publisher to turn off\n");
		has_publisher = 0;
		return engine_start(extra);
	}
	if (has_publisher == -1)
		has_publisher = 1;
	if (rc == 0) {
		fx.e = it_connect(&fx.d);
		assert_non_null(fx.e);
	}
	return rc;
}

static int
setup_bare(void **state)
{
	*state = &fx;
	memset(&fx, 0, sizeof(fx));
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_dir_make(fx.mail, sizeof(fx.mail)), 0);
	assert_int_equal(tg_test_redis_start(&fx.redis), 0);
	fx.r = tg_test_redis_connect(&fx.redis);
	assert_non_null(fx.r);
	assert_int_equal(engine_start(NULL), 0);
	return 0;
}

/* The usual start: the group exists before anything is published, as in production. */
static int
setup(void **state)
{
	setup_bare(state);
	it_run_cmd(fx.r, "XGROUP CREATE " STREAM " " GROUP " $ MKSTREAM");
	return 0;
}

/* ------------------------------------------------------------------ */
/* the engine's side                                                   */

/*
 * Set acct up at balance 5 with threshold 10 and the given refill setting
 * (mode "ADD" or "TOPUP", amount): already at the threshold, so the engine fires
 * request refill:<acct>:1 at once.
 */
static void
fire(uint64_t acct, const char *mode, const char *amount)
{
	char want[64];

	it_run_cmd(fx.e, "ACCT.SET %llu BALANCE 5 THRESHOLD 10 PAYMENT on REFILL %s %s",
	           (unsigned long long)acct, mode, amount);
	snprintf(want, sizeof(want), "refill:%llu:1", (unsigned long long)acct);
	rfx_expect_request(&fx, acct, want);
}

/* ------------------------------------------------------------------ */
/* Redis's side: profiles, the stream, the simulator, the worker's keys */

static void
token_does(const char *token, const char *behaviour)
{
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens %s %s", token, behaviour);
}

/* Publish request refill:<acct>:<n> as docs/REFILL.md says the engine does. */
static void
publish(uint64_t acct, unsigned n, const char *mode, const char *amount, unsigned attempt)
{
	it_run_cmd(fx.r,
	           "XADD " STREAM " * id refill:%llu:%u account %llu balance 5 threshold 10 "
	           "mode %s amount %s fired %lld attempt %u",
	           (unsigned long long)acct, n, (unsigned long long)acct, mode, amount,
	           (long long)time(NULL), attempt);
}

/* XADD an entry given as "field value ..." words, whatever they hold. */
static void
xadd_words(const char *words)
{
	char copy[512], *save = NULL;
	const char *argv[32] = {"XADD", STREAM, "*"};
	int n = 3;

	snprintf(copy, sizeof(copy), "%s", words);
	for (char *t = strtok_r(copy, " ", &save); t != NULL; t = strtok_r(NULL, " ", &save)) {
		assert_true(n < 32);
		argv[n++] = t;
	}
	redisReply *r = redisCommandArgv(fx.r, n, argv, NULL);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	freeReplyObject(r);
}

/* Charges the simulator took, all requests. */
static long long
charges(void)
{
	return it_int_cmd(fx.r, "HLEN tollgate:sim:charges");
}

/* A counter of the workers, from tollgate:refill:stats. */
static long long
counter(const char *name)
{
	return it_int_cmd(fx.r, "HGET tollgate:refill:stats %s", name);
}

/* Entries delivered to the group and not acknowledged. */
static long long
group_pending(void)
{
	redisReply *r = it_cmd(fx.r, "XPENDING " STREAM " " GROUP);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	long long n = r->element[0]->integer;
	freeReplyObject(r);
	return n;
}

/* ------------------------------------------------------------------ */
/* the maildir                                                         */

/* Files in fx.mail/sub whose name ends with suffix. */
static unsigned
files_in(const char *sub, const char *suffix)
{
	char path[IT_PATH_MAX];
	struct dirent *e;
	unsigned n = 0;

	it_pathf(path, sizeof(path), "%s/%s", fx.mail, sub);
	DIR *d = opendir(path);
	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name), s = strlen(suffix);
		if (e->d_name[0] != '.' && l >= s && strcmp(e->d_name + l - s, suffix) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* Mails delivered to the maildir (in new/) whose name ends with suffix. */
static unsigned
mails(const char *suffix)
{
	return files_in("new", suffix);
}

/* The path of the mail of kind for request in new/: "refill:1:2" -> "new/refill.1.2.<kind>". */
static void
mail_path(const char *request, const char *kind, char *path, size_t cap)
{
	char name[128];

	snprintf(name, sizeof(name), "%s.%s", request, kind);
	for (char *p = name; *p != '\0'; p++)
		if (*p == ':')
			*p = '.';
	it_pathf(path, cap, "%s/new/%s", fx.mail, name);
}

/* The mail of kind for request into buf; fails the test when it is not there. */
static void
mail_read(const char *request, const char *kind, char *buf, size_t cap)
{
	char path[IT_PATH_MAX];

	mail_path(request, kind, path, sizeof(path));
	if (rfx_slurp(path, buf, cap) < 0)
		fail_msg("no mail %s", path);
}

static unsigned
occurrences(const char *text, const char *needle)
{
	unsigned n = 0;
	for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

/* ------------------------------------------------------------------ */
/* running the worker                                                  */

/* One --once run with extra flags; its exit status must be want. */
static void
run_once(struct rfx_worker *w, int want, const char *const *extra)
{
	const char *flags[32];
	unsigned n = 0;

	flags[n++] = "--once";
	for (unsigned i = 0; extra != NULL && extra[i] != NULL; i++)
		flags[n++] = extra[i];
	flags[n] = NULL;
	rfx_worker_start(&fx, w, flags, NULL);
	int rc = rfx_worker_wait(w, RUN_TIMEOUT_MS);
	if (rc != want) {
		rfx_worker_dump(w);
		fail_msg("tollrefill exited %d, expected %d", rc, want);
	}
}

/* Poll until counter(name) reaches n, or fail after WAIT_MS. */
static void
wait_counter(const char *name, long long n, const struct rfx_worker *w)
{
	uint64_t deadline = tg_mono_ms() + WAIT_MS;

	while (counter(name) < n) {
		if (tg_mono_ms() >= deadline) {
			if (w != NULL)
				rfx_worker_dump(w);
			fail_msg("stat %s stayed at %lld, expected %lld", name, counter(name), n);
		}
		it_sleep_ms(10);
	}
}

/* ------------------------------------------------------------------ */
/* tests                                                               */

/* The worker makes its group (XGROUP CREATE ... $ MKSTREAM) and a second start finds it there. */
static void
test_group_created(void **state)
{
	struct rfx_worker w;
	static const char *const custom[] = {"--stream", "other:stream", "--group", "g2", NULL};

	(void)state;
	run_once(&w, 0, NULL);
	assert_true(rfx_worker_said(&w, "created group refill on tollgate:refill"));
	redisReply *r = it_cmd(fx.r, "XINFO GROUPS " STREAM);
	assert_int_equal(r->elements, 1);
	freeReplyObject(r);
	run_once(&w, 0, NULL); /* BUSYGROUP: fine */
	assert_false(rfx_worker_said(&w, "created group"));
	run_once(&w, 0, custom);
	r = it_cmd(fx.r, "XINFO GROUPS other:stream");
	assert_int_equal(r->elements, 1);
	freeReplyObject(r);
}

/* Approved: credited once, one receipt, one charge, the flag cleared; a republication changes
 * nothing. */
static void
test_approved_then_republished(void **state)
{
	char mail[8192], again[8192], rec[128];
	struct rfx_worker w;

	(void)state;
	fire(100, "ADD", "50");
	rfx_profile(&fx, 100, "ann@example.com", "card", "tok_ann", "Ann Example");
	publish(100, 1, "add", "50", 1);
	run_once(&w, 0, NULL);

	assert_true(it_acct_money(fx.e, 100, "balance") == 55 * U);
	rfx_expect_request(&fx, 100, "");
	assert_int_equal(it_info(fx.e, "refills_landed"), 1);
	assert_int_equal(it_info(fx.e, "credits"), 1);
	assert_int_equal(charges(), 1);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:100:1"), 1);
	redisReply *r = it_cmd(fx.r, "HGET tollgate:sim:charges refill:100:1");
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	snprintf(rec, sizeof(rec), "%s", r->str);
	freeReplyObject(r);
	assert_true(strncmp(rec, "50 tok_ann ", 11) == 0);
	assert_int_equal(mails(".receipt"), 1);
	assert_int_equal(mails(".failure"), 0);
	mail_read("refill:100:1", "receipt", mail, sizeof(mail));
	rfx_expect_has(mail, "To: \"Ann Example\" <ann@example.com>\n");
	rfx_expect_has(mail, "\nSubject: ");
	rfx_expect_has(mail, "\n\nHello Ann Example,");
	rfx_expect_has(mail, "Account:            100\n");
	rfx_expect_has(mail, "Amount charged:     $50.00\n");
	/* The token's last 4 characters only; the balance is the engine's reply to the credit. */
	rfx_expect_has(mail, "Payment method:     credit card ****_ann\n");
	assert_null(strstr(mail, "tok_ann"));
	rfx_expect_has(mail, "New balance:        $55.00\n");
	rfx_expect_has(mail, "Message-ID: <refill.100.1.receipt@");
	/* The Date header, RFC 5322, and the same date in the body. */
	const char *date = strstr(mail, "\nDate: ");
	assert_non_null(date);
	char day[64], body[80];
	assert_int_equal(sscanf(date, "\nDate: %63[^\n]", day), 1);
	assert_int_equal(strlen(day), strlen("Thu, 26 Nov 2026 13:58:40 +0000"));
	assert_string_equal(day + strlen(day) - 6, " +0000");
	snprintf(body, sizeof(body), "  Date:               %s\n", day);
	rfx_expect_has(mail, body);
	assert_int_equal(files_in("tmp", ""), 0); /* nothing left behind in tmp/ */
	assert_int_equal(counter("approved"), 1);
	assert_int_equal(group_pending(), 0);
	assert_true(rfx_worker_said(&w, "refill:100:1 account 100: approved"));

	/* The same request again (the engine republished it): acknowledged, nothing else. */
	publish(100, 1, "add", "50", 2);
	run_once(&w, 0, NULL);
	assert_true(it_acct_money(fx.e, 100, "balance") == 55 * U);
	assert_int_equal(it_info(fx.e, "credits"), 1);
	assert_int_equal(charges(), 1);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:100:1"), 1);
	assert_int_equal(mails(".receipt"), 1);
	mail_read("refill:100:1", "receipt", again, sizeof(again));
	assert_string_equal(mail, again);
	assert_int_equal(counter("replayed"), 1);
	assert_int_equal(counter("approved"), 1);
	assert_int_equal(group_pending(), 0);
}

/* Declined and expired: one failure mail each, the flag cleared by ACCT.REFILL.FAILED, no credit,
 * no retry. */
static void
test_declined_and_expired(void **state)
{
	char mail[8192], again[8192];
	struct rfx_worker w;

	(void)state;
	token_does("tok_dec", "decline");
	token_does("tok_exp", "expired");
	fire(101, "ADD", "50");
	rfx_profile(&fx, 101, "bob@example.com", "paypal", "tok_dec", NULL);
	fire(102, "TOPUP", "30");
	rfx_profile(&fx, 102, "cy@example.com", "card", "tok_exp", "Cy");
	publish(101, 1, "add", "50", 1);
	publish(102, 1, "topup", "25", 1);
	run_once(&w, 0, NULL);

	assert_true(it_acct_money(fx.e, 101, "balance") == 5 * U);
	assert_true(it_acct_money(fx.e, 102, "balance") == 5 * U);
	rfx_expect_request(&fx, 101, "");
	rfx_expect_request(&fx, 102, "");
	assert_int_equal(it_info(fx.e, "refills_failed"), 2);
	assert_int_equal(it_info(fx.e, "credits"), 0);
	assert_int_equal(charges(), 0);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:101:1"), 1); /* final at once: no retry */
	assert_int_equal(rfx_gateway_calls(&fx, "refill:102:1"), 1);
	assert_int_equal(mails(".failure"), 2);
	assert_int_equal(mails(".receipt"), 0);
	mail_read("refill:101:1", "failure", mail, sizeof(mail));
	rfx_expect_has(mail, "To: bob@example.com\n");
	rfx_expect_has(mail, "the payment was declined");
	rfx_expect_has(mail, "This is the only notification you will receive.");
	rfx_expect_has(mail,
	               "when your prepaid balance falls to $0.00, you will not be\nable to use "
	               "your service");
	rfx_expect_has(mail, "Refill amount:      $50.00\n");
	rfx_expect_has(mail, "Payment method:     PayPal ****_dec\n");
	mail_read("refill:102:1", "failure", again, sizeof(again));
	rfx_expect_has(again, "has expired");
	rfx_expect_has(again, "Refill amount:      $25.00\n");
	assert_int_equal(counter("failed"), 2);
	assert_int_equal(group_pending(), 0);

	/* Republished: no second attempt, no second mail. */
	publish(101, 1, "add", "50", 2);
	run_once(&w, 0, NULL);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:101:1"), 1);
	assert_int_equal(mails(".failure"), 2);
	mail_read("refill:101:1", "failure", again, sizeof(again));
	assert_string_equal(mail, again);
	assert_true(it_acct_money(fx.e, 101, "balance") == 5 * U);
	assert_int_equal(counter("replayed"), 1);
	assert_int_equal(counter("failed"), 2);
	assert_int_equal(group_pending(), 0);
}

/*
 * intermittent:2 with 3 attempts over 300 ms (pauses of 100 and 200 ms):
 * each attempt is made by another process, from the schedule in Redis, and
 * the third is approved and charged once.
 */
static void
test_intermittent_approved_on_third_attempt(void **state)
{
	static const char *const flags[] = {"--attempts", "3", "--retry-period", "300ms", NULL};
	struct rfx_worker w;

	(void)state;
	token_does("tok_flaky", "intermittent:2");
	fire(103, "TOPUP", "30");
	rfx_profile(&fx, 103, "dee@example.com", "card", "tok_flaky", NULL);
	publish(103, 1, "topup", "25", 1);
	run_once(&w, 0, flags);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:103:1"), 1);
	assert_true(rfx_worker_said(&w, "charge attempt 1 of 3: timeout; attempt 2 scheduled"));
	assert_int_equal(group_pending(), 0); /* acknowledged: the schedule holds it */
	assert_int_equal(it_int_cmd(fx.r, "ZCARD " STREAM ":retry"), 1);
	it_sleep_ms(150);
	run_once(&w, 0, flags);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:103:1"), 2);
	it_sleep_ms(250);
	run_once(&w, 0, flags);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:103:1"), 3);
	assert_int_equal(it_int_cmd(fx.r, "ZCARD " STREAM ":retry"), 0);
	assert_int_equal(charges(), 1);
	assert_true(it_acct_money(fx.e, 103, "balance") == 30 * U);
	rfx_expect_request(&fx, 103, "");
	assert_int_equal(mails(".receipt"), 1);
	assert_int_equal(mails(".failure"), 0);
	assert_true(rfx_worker_said(&w, "3 attempts"));
}

/*
 * A gateway that always times out: failure after exactly --attempts tries,
 * spread over --retry-period (1400 ms: pauses of 200, 400 and 800 ms); an
 * attempt is never made before it is due, and no mail goes before the last.
 */
static void
test_timeout_fails_after_attempts(void **state)
{
	static const char *const flags[] = {"--attempts", "4", "--retry-period", "1400ms", NULL};
	static const unsigned pause[] = {200, 400, 800};
	char mail[8192];
	struct rfx_worker w;

	(void)state;
	token_does("tok_slow", "timeout");
	fire(104, "ADD", "50");
	rfx_profile(&fx, 104, "eve@example.com", "card", "tok_slow", NULL);
	publish(104, 1, "add", "50", 1);
	for (unsigned k = 0; k < 3; k++) {
		uint64_t t0 = tg_mono_ms();
		run_once(&w, 0, flags);
		assert_int_equal(rfx_gateway_calls(&fx, "refill:104:1"), k + 1);
		assert_int_equal(mails(".failure"), 0);
		/* Not due yet: nothing is tried. */
		if (tg_mono_ms() - t0 < pause[k] / 2) {
			run_once(&w, 0, flags);
			assert_int_equal(rfx_gateway_calls(&fx, "refill:104:1"), k + 1);
		}
		it_sleep_ms(pause[k] + 50);
	}
	run_once(&w, 0, flags);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:104:1"), 4);
	assert_int_equal(charges(), 0);
	assert_true(it_acct_money(fx.e, 104, "balance") == 5 * U);
	rfx_expect_request(&fx, 104, "");
	assert_int_equal(mails(".failure"), 1);
	mail_read("refill:104:1", "failure", mail, sizeof(mail));
	rfx_expect_has(mail, "did not answer (4 attempts)");
	assert_int_equal(counter("failed"), 1);
	assert_int_equal(group_pending(), 0);
}

/* No profile, no usable method, no token: failed as no-payment-method, mailed when there is an
 * address. */
static void
test_no_payment_method(void **state)
{
	char mail[8192];
	struct rfx_worker w;

	(void)state;
	fire(105, "ADD", "50"); /* no profile at all */
	fire(106, "ADD", "50");
	rfx_profile(&fx, 106, "fay@example.com", "cheque", "tok_x", NULL);
	fire(107, "ADD", "50");
	rfx_profile(&fx, 107, "gus@example.com", "card", NULL, NULL);
	publish(105, 1, "add", "50", 1);
	publish(106, 1, "add", "50", 1);
	publish(107, 1, "add", "50", 1);
	run_once(&w, 0, NULL);
	for (uint64_t a = 105; a <= 107; a++) {
		rfx_expect_request(&fx, a, "");
		assert_true(it_acct_money(fx.e, a, "balance") == 5 * U);
	}
	assert_int_equal(rfx_gateway_calls(&fx, "refill:105:1") +
	                     rfx_gateway_calls(&fx, "refill:106:1") +
	                     rfx_gateway_calls(&fx, "refill:107:1"),
	                 0);
	assert_int_equal(mails(".failure"), 2); /* 105 has no address to mail */
	mail_read("refill:106:1", "failure", mail, sizeof(mail));
	rfx_expect_has(mail, "no valid credit card or PayPal account on file");
	rfx_expect_has(mail, "This is the only notification you will receive.");
	mail_read("refill:107:1", "failure", mail, sizeof(mail));
	assert_int_equal(counter("failed"), 3);
	assert_int_equal(it_info(fx.e, "refills_failed"), 3);
	assert_true(rfx_worker_said(&w, "refill:105:1 account 105: failed (no-payment-method"));
	assert_int_equal(group_pending(), 0);
}

/* Malformed entries: each logged, acknowledged and counted; the good one after them still goes
 * through. */
static void
test_malformed_entries_acked_and_counted(void **state)
{
	/*
	 * Request 9, not the pending request 1: a malformed entry whose id and
	 * account are sound is reported failed to the engine (so it never jams
	 * the account), which for a request not in flight changes nothing.
	 */
	static const char *const bad[] = {
	    "id refill:110:9 account 110 amount abc",         /* bad amount */
	    "id refill:110:9 account 110 amount -5",          /* not positive */
	    "id refill:110:9 account 110 amount 1.0000001",   /* a 7th decimal */
	    "account 110 amount 50",                          /* no id */
	    "id refill:110:9 amount 50",                      /* no account */
	    "id refill:110:9 account 110",                    /* no amount */
	    "id refill:999:1 account 110 amount 50",          /* someone else's request */
	    "id refill:0110:1 account 110 amount 50",         /* not the canonical spelling */
	    "id refill:110:9 account 11x amount 50",          /* bad account */
	    "id refill:110:9 account 110 amount 50 mode odd", /* bad mode */
	    "id refill:110:1 id refill:110:2 account 110 amount 50", /* twice */
	};
	struct rfx_worker w;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		xadd_words(bad[i]);
	fire(110, "ADD", "50");
	rfx_profile(&fx, 110, "hal@example.com", "card", "tok_hal", NULL);
	publish(110, 1, "add", "50", 1);
	run_once(&w, 0, NULL);
	assert_int_equal(counter("malformed"), (long long)(sizeof(bad) / sizeof(bad[0])));
	assert_int_equal(counter("approved"), 1);
	assert_int_equal(group_pending(), 0);
	assert_true(it_acct_money(fx.e, 110, "balance") == 55 * U);
	assert_int_equal(it_info(fx.e, "refills_failed"), 0);
	assert_int_equal(charges(), 1);
	assert_true(rfx_worker_said(&w, "malformed (bad amount \"abc\")"));
	assert_true(rfx_worker_said(&w, "malformed (no id field)"));
	assert_true(rfx_worker_said(&w, "moved to " DEAD " and acknowledged"));

	/* Each one in the dead-letter stream, in order: its own fields, reason, source-id. */
	assert_int_equal(it_int_cmd(fx.r, "XLEN " DEAD), (long long)(sizeof(bad) / sizeof(bad[0])));
	redisReply *src =
	    it_cmd(fx.r, "XRANGE " STREAM " - + COUNT %d", (int)(sizeof(bad) / sizeof(bad[0])));
	redisReply *dead = it_cmd(fx.r, "XRANGE " DEAD " - +");
	assert_int_equal(dead->elements, sizeof(bad) / sizeof(bad[0]));
	for (size_t i = 0; i < dead->elements; i++) {
		const redisReply *f = dead->element[i]->element[1];
		const redisReply *o = src->element[i]->element[1];
		char words[512] = "";
		size_t n = 0;
		assert_int_equal(f->elements, o->elements + 4);
		for (size_t k = 0; k < o->elements; k++) {
			assert_string_equal(f->element[k]->str, o->element[k]->str);
			n += (size_t)snprintf(words + n, sizeof(words) - n, "%s%s", k ? " " : "",
			                      o->element[k]->str);
		}
		assert_string_equal(words, bad[i]);
		assert_string_equal(f->element[o->elements]->str, "reason");
		assert_string_equal(f->element[o->elements + 2]->str, "source-id");
		assert_string_equal(f->element[o->elements + 3]->str,
		                    src->element[i]->element[0]->str);
	}
	assert_string_equal(dead->element[0]->element[1]->element[7]->str, "bad amount \"abc\"");
	assert_string_equal(dead->element[3]->element[1]->element[5]->str, "no id field");
	freeReplyObject(src);
	freeReplyObject(dead);

	/* Nothing left to loop on: a second run finds nothing. */
	run_once(&w, 0, NULL);
	assert_int_equal(counter("malformed"), (long long)(sizeof(bad) / sizeof(bad[0])));
	assert_int_equal(it_int_cmd(fx.r, "XLEN " DEAD), (long long)(sizeof(bad) / sizeof(bad[0])));
}

/*
 * A dead-letter stream that cannot be written (its key holds a string): the
 * malformed entry is not acknowledged, nothing is lost; once the key is
 * fixed it is moved, once.  --dead-stream names another stream.
 */
static void
test_dead_letter_unwritable_keeps_the_entry(void **state)
{
	static const char *const flags[] = {"--consumer", "c8", "--attempts", "2", NULL};
	static const char *const other[] = {"--consumer", "c8", "--dead-stream", "ops:poison",
	                                    NULL};
	struct rfx_worker w;

	(void)state;
	it_run_cmd(fx.r, "SET " DEAD " not-a-stream");
	xadd_words("id refill:120:1 account 120 amount 0");
	run_once(&w, 75, flags);
	assert_true(rfx_worker_said(&w, "cannot move it to " DEAD ": WRONGTYPE"));
	assert_int_equal(group_pending(), 1);
	assert_int_equal(counter("malformed"), 0);

	run_once(&w, 0, other);
	assert_int_equal(group_pending(), 0);
	assert_int_equal(counter("malformed"), 1);
	assert_int_equal(it_int_cmd(fx.r, "XLEN ops:poison"), 1);
	redisReply *r = it_cmd(fx.r, "XRANGE ops:poison - +");
	const redisReply *f = r->element[0]->element[1];
	assert_int_equal(f->elements, 10);
	assert_string_equal(f->element[6]->str, "reason");
	assert_string_equal(f->element[7]->str, "bad amount \"0\"");
	freeReplyObject(r);
	/* An entry deleted from the stream while pending goes too: no fields, its reason. */
	it_run_cmd(fx.r, "DEL " DEAD);
	xadd_words("id refill:121:1 account 121 amount 5 mode nope");
	r = it_cmd(fx.r, "XREADGROUP GROUP " GROUP " c9 COUNT 1 STREAMS " STREAM " >");
	char id[64];
	snprintf(id, sizeof(id), "%s", r->element[0]->element[1]->element[0]->element[0]->str);
	freeReplyObject(r);
	it_run_cmd(fx.r, "XDEL " STREAM " %s", id);
	static const char *const c9[] = {"--consumer", "c9", NULL};
	run_once(&w, 0, c9);
	assert_true(rfx_worker_said(&w, "deleted from the stream while pending"));
	assert_int_equal(group_pending(), 0);
	assert_int_equal(counter("malformed"), 2);
	r = it_cmd(fx.r, "XRANGE " DEAD " - +");
	assert_int_equal(r->elements, 1);
	f = r->element[0]->element[1];
	assert_int_equal(f->elements, 4);
	assert_string_equal(f->element[1]->str, "deleted from the stream while pending");
	assert_string_equal(f->element[3]->str, id);
	freeReplyObject(r);
}

/* Two workers in parallel on 20 requests: each settled exactly once. */
static void
test_two_workers_twenty_requests(void **state)
{
	static const char *const fa[] = {"--consumer", "wa", NULL};
	static const char *const fb[] = {"--consumer", "wb", NULL};
	struct rfx_worker a, b;
	char amount[16], email[64];

	(void)state;
	for (uint64_t acct = 200; acct < 220; acct++) {
		snprintf(amount, sizeof(amount), "%llu", (unsigned long long)acct - 190);
		fire(acct, "ADD", amount);
		snprintf(email, sizeof(email), "c%llu@example.com", (unsigned long long)acct);
		rfx_profile(&fx, acct, email, acct % 2 ? "card" : "paypal", "tok_ok", NULL);
	}
	rfx_worker_start(&fx, &a, fa, NULL);
	rfx_worker_start(&fx, &b, fb, NULL);
	for (uint64_t acct = 200; acct < 220; acct++) {
		snprintf(amount, sizeof(amount), "%llu", (unsigned long long)acct - 190);
		publish(acct, 1, "add", amount, 1);
	}
	wait_counter("approved", 20, &a);
	assert_int_equal(rfx_worker_stop(&a), 0);
	assert_int_equal(rfx_worker_stop(&b), 0);
	/* Their logs together hold one outcome line per request: none twice. */
	static char la[LOG_MAX], lb[LOG_MAX];
	rfx_worker_log(&a, la, sizeof(la));
	rfx_worker_log(&b, lb, sizeof(lb));
	assert_int_equal(occurrences(la, ": approved:") + occurrences(lb, ": approved:"), 20);
	for (uint64_t acct = 200; acct < 220; acct++) {
		char line[64];
		snprintf(line, sizeof(line), "refill:%llu:1 account", (unsigned long long)acct);
		assert_int_equal(occurrences(la, line) + occurrences(lb, line), 1);
	}

	assert_int_equal(charges(), 20);
	assert_int_equal(it_info(fx.e, "credits"), 20);
	assert_int_equal(it_info(fx.e, "refills_landed"), 20);
	for (uint64_t acct = 200; acct < 220; acct++) {
		char id[32];
		snprintf(id, sizeof(id), "refill:%llu:1", (unsigned long long)acct);
		assert_int_equal(rfx_gateway_calls(&fx, id), 1);
		assert_true(it_acct_money(fx.e, acct, "balance") == (5 + (int64_t)acct - 190) * U);
		rfx_expect_request(&fx, acct, "");
	}
	assert_int_equal(mails(".receipt"), 20);
	assert_int_equal(counter("approved"), 20);
	assert_int_equal(counter("replayed"), 0);
	assert_int_equal(group_pending(), 0);
}

/*
 * A worker that died after the gateway took the money and before it wrote
 * anything down: the next one asks the gateway again, which answers
 * "approved" from its record without charging a second time.
 */
static void
test_crash_after_charge_charges_once(void **state)
{
	char rec[128];
	struct rfx_worker w;

	(void)state;
	fire(700, "ADD", "50");
	rfx_profile(&fx, 700, "max@example.com", "card", "tok_ok", NULL);
	it_run_cmd(fx.r, "HSET tollgate:sim:charges refill:700:1 %s", "50 tok_ok 1000");
	publish(700, 1, "add", "50", 1);
	run_once(&w, 0, NULL);
	assert_int_equal(charges(), 1);
	redisReply *r = it_cmd(fx.r, "HGET tollgate:sim:charges refill:700:1");
	snprintf(rec, sizeof(rec), "%s", r->str);
	freeReplyObject(r);
	assert_string_equal(rec, "50 tok_ok 1000"); /* the first charge's record, untouched */
	assert_true(it_acct_money(fx.e, 700, "balance") == 55 * U);
	rfx_expect_request(&fx, 700, "");
	assert_int_equal(mails(".receipt"), 1);
	assert_int_equal(counter("approved"), 1);
}

/* A dead worker's entry is left alone until --claim-idle, then taken over. */
static void
test_dead_worker_taken_over(void **state)
{
	static const char *const patient[] = {"--consumer", "live", NULL};
	static const char *const eager[] = {"--consumer", "live", "--claim-idle", "200", NULL};
	struct rfx_worker w;

	(void)state;
	fire(300, "ADD", "50");
	rfx_profile(&fx, 300, "ida@example.com", "card", "tok_ok", NULL);
	publish(300, 1, "add", "50", 1);
	/* The dead worker: reads the entry and is never heard of again. */
	redisReply *r =
	    it_cmd(fx.r, "XREADGROUP GROUP " GROUP " dead COUNT 1 STREAMS " STREAM " >");
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	freeReplyObject(r);
	assert_int_equal(group_pending(), 1);

	run_once(&w, 0, patient); /* --claim-idle 60000: not yet */
	assert_int_equal(charges(), 0);
	assert_int_equal(group_pending(), 1);
	assert_true(it_acct_money(fx.e, 300, "balance") == 5 * U);

	it_sleep_ms(300);
	run_once(&w, 0, eager);
	assert_int_equal(charges(), 1);
	assert_int_equal(group_pending(), 0);
	assert_true(it_acct_money(fx.e, 300, "balance") == 55 * U);
	rfx_expect_request(&fx, 300, "");
	assert_int_equal(mails(".receipt"), 1);
}

/* The engine down: the entry stays pending (not acknowledged), and is settled once it is back. */
static void
test_engine_down_then_back(void **state)
{
	static const char *const once[] = {"--consumer", "c1", "--attempts", "2", NULL};
	static const char *const daemon[] = {"--consumer", "c1", NULL};
	char port[16], csv[IT_PATH_MAX];
	struct rfx_worker w;

	(void)state;
	rfx_profile(&fx, 400, "jo@example.com", "card", "tok_ok", NULL);
	publish(400, 1, "add", "50", 1);
	/* Stop the engine; its port is where the worker will look for it. */
	redisFree(fx.e);
	fx.e = NULL;
	uint16_t p = fx.d.port;
	assert_int_equal(it_stop(&fx.d), 0);

	/* --once gives up after its attempts, exit 75, leaving the entry pending. */
	run_once(&w, 75, once);
	assert_true(rfx_worker_said(&w, "cannot connect"));
	assert_int_equal(group_pending(), 1);
	assert_int_equal(mails(".receipt"), 0);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:400:1"), 0);

	/* A long-running worker keeps trying. */
	rfx_worker_start(&fx, &w, daemon, NULL);
	it_sleep_ms(400);
	assert_int_equal(group_pending(), 1);
	assert_int_equal(w.pid != 0 && waitpid(w.pid, NULL, WNOHANG) == 0, 1);

	/*
	 * The engine comes back on the same port with account 400 loaded
	 * below its threshold: it fires refill:400:1 as it loads, before it
	 * answers anyone, so the worker's credit always finds it in flight.
	 */
	assert_int_equal(it_file_write(fx.dir, "accounts.csv",
	                               "account,balance,plan,state,threshold,refill,"
	                               "refill_amount,payment\n"
	                               "400,5,basic,active,10,add,50,on\n",
	                               csv, sizeof(csv)),
	                 0);
	snprintf(port, sizeof(port), "%u", p);
	const char *const flags[] = {"--port", port, "--accounts", csv, NULL};
	assert_int_equal(engine_start(flags), 0);

	wait_counter("approved", 1, &w);
	assert_int_equal(rfx_worker_stop(&w), 0);
	assert_int_equal(group_pending(), 0);
	assert_true(it_acct_money(fx.e, 400, "balance") == 55 * U);
	rfx_expect_request(&fx, 400, "");
	assert_int_equal(it_info(fx.e, "refills_landed"), 1);
	assert_int_equal(charges(), 1);
	/* Charged once, after the outage: the claim comes first, so nothing is taken while
	 * the engine cannot be asked (or credited). */
	assert_int_equal(rfx_gateway_calls(&fx, "refill:400:1"), 1);
	assert_int_equal(mails(".receipt"), 1);
}

/*
 * A worker that authenticates as a refill-role user (--engine-user): its
 * credit lands; the role could not have set a balance (docs/SECURITY.md).
 */
static void
test_refill_role_user(void **state)
{
	static const char *const as_rw[] = {"--engine-user", "rw", "--engine-password", "rw-pass-9",
	                                    NULL};
	char users[IT_PATH_MAX], csv[IT_PATH_MAX];
	struct rfx_worker w;

	(void)state;
	redisFree(fx.e);
	fx.e = NULL;
	assert_int_equal(it_stop(&fx.d), 0);
	assert_int_equal(it_file_write(fx.dir, "users",
	                               "ops admin ops-pass-9\nrw refill rw-pass-9\n", users,
	                               sizeof(users)),
	                 0);
	assert_int_equal(chmod(users, 0600), 0);
	assert_int_equal(it_file_write(fx.dir, "accounts.csv",
	                               "account,balance,plan,state,threshold,refill,"
	                               "refill_amount,payment\n"
	                               "500,5,basic,active,10,add,50,on\n",
	                               csv, sizeof(csv)),
	                 0);
	const char *const flags[] = {"--users", users, "--accounts", csv, NULL};
	assert_int_equal(engine_start(flags), 0);
	it_run_cmd(fx.e, "AUTH ops ops-pass-9");
	rfx_expect_request(&fx, 500, "refill:500:1");

	rfx_profile(&fx, 500, "rw@example.com", "card", "tok_ok", NULL);
	publish(500, 1, "add", "50", 1);
	run_once(&w, 0, as_rw);
	assert_true(it_acct_money(fx.e, 500, "balance") == 55 * U);
	rfx_expect_request(&fx, 500, "");
	assert_int_equal(charges(), 1);

	/* The same user may not do what only an admin may. */
	redisContext *c = it_connect(&fx.d);
	assert_non_null(c);
	it_run_cmd(c, "AUTH rw rw-pass-9");
	redisReply *r = redisCommand(c, "ACCT.SET 500 BALANCE 1000");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	assert_true(strncmp(r->str, "NOPERM", 6) == 0);
	freeReplyObject(r);
	redisFree(c);
	assert_true(it_acct_money(fx.e, 500, "balance") == 55 * U);
}

/* Redis down when the worker starts: it waits, then works once Redis is there. */
static void
test_redis_down_at_start(void **state)
{
	static const char *const flags[] = {"--consumer", "c1", NULL};
	struct rfx_worker w;

	(void)state;
	redisFree(fx.r);
	fx.r = NULL;
	tg_test_redis_stop(&fx.redis);
	rfx_worker_start(&fx, &w, flags, NULL);
	it_sleep_ms(300);
	assert_int_equal(tg_test_redis_start(&fx.redis), 0); /* same port, empty */
	fx.r = tg_test_redis_connect(&fx.redis);
	assert_non_null(fx.r);
	/* The worker may have made the group already: BUSYGROUP is fine here too. */
	redisReply *r = redisCommand(fx.r, "XGROUP CREATE " STREAM " " GROUP " $ MKSTREAM");
	assert_non_null(r);
	freeReplyObject(r);
	fire(500, "ADD", "50");
	rfx_profile(&fx, 500, "kim@example.com", "card", "tok_ok", NULL);
	publish(500, 1, "add", "50", 1);
	wait_counter("approved", 1, &w);
	assert_int_equal(rfx_worker_stop(&w), 0);
	assert_true(rfx_worker_said(&w, "redis 127.0.0.1"));
	assert_true(it_acct_money(fx.e, 500, "balance") == 55 * U);
	assert_int_equal(group_pending(), 0);
}

/* SIGTERM (and SIGINT) stop an idle worker at once, with status 0. */
static void
test_clean_exit_on_signals(void **state)
{
	struct rfx_worker w;

	(void)state;
	rfx_worker_start(&fx, &w, NULL, NULL);
	it_sleep_ms(200);
	uint64_t t0 = tg_mono_ms();
	assert_int_equal(rfx_worker_stop(&w), 0);
	assert_true(tg_mono_ms() - t0 < 3000);
	assert_true(rfx_worker_said(&w, "stopped: approved 0"));
	/* Nothing pending: it left the group as it found it. */
	redisReply *r = it_cmd(fx.r, "XINFO CONSUMERS " STREAM " " GROUP);
	assert_int_equal(r->elements, 0);
	freeReplyObject(r);

	rfx_worker_start(&fx, &w, NULL, NULL);
	it_sleep_ms(200);
	kill(w.pid, SIGINT);
	assert_int_equal(rfx_worker_wait(&w, 10000), 0);
}

/*
 * --sendmail: each mail piped once into the command, no maildir; a replay
 * pipes nothing.  A command that fails leaves the entry pending (the credit
 * is not made twice), and the mail goes once a command works.
 */
static void
test_sendmail_pipes_each_mail_once(void **state)
{
	char good[IT_PATH_MAX + 32], bad[IT_PATH_MAX + 32], sent[IT_PATH_MAX], text[16384];
	struct rfx_worker w;

	(void)state;
	it_pathf(sent, sizeof(sent), "%s/sent.txt", fx.dir);
	snprintf(good, sizeof(good), "cat >> '%s'", sent);
	snprintf(bad, sizeof(bad), "cat > /dev/null; exit 3");
	const char *const flags[] = {"--consumer", "s1", "--sendmail", good, NULL};
	const char *const failing[] = {"--consumer", "s1", "--sendmail", bad,
	                               "--attempts", "2",  NULL};
	fire(600, "ADD", "50");
	rfx_profile(&fx, 600, "lu@example.com", "card", "tok_lu_4242", "Lu");
	publish(600, 1, "add", "50", 1);
	run_once(&w, 0, flags);
	assert_true(rfx_worker_said(&w, "mail by sendmail"));
	publish(600, 1, "add", "50", 2);
	run_once(&w, 0, flags);
	assert_true(rfx_slurp(sent, text, sizeof(text)) > 0);
	assert_int_equal(occurrences(text, "\nSubject: Auto-refill receipt"), 1);
	rfx_expect_has(text, "To: \"Lu\" <lu@example.com>\n");
	rfx_expect_has(text, "Payment method:     credit card ****4242\n");
	assert_int_equal(counter("replayed"), 1);

	/* A failing command: credited once, the entry left pending, no mail recorded. */
	token_does("tok_no", "decline");
	fire(601, "ADD", "50");
	rfx_profile(&fx, 601, "mo@example.com", "paypal", "tok_no", NULL);
	publish(601, 1, "add", "50", 1);
	run_once(&w, 75, failing);
	assert_true(rfx_worker_said(&w, "exit 3") || rfx_worker_said(&w, "status 3"));
	assert_int_equal(group_pending(), 1);
	assert_int_equal(it_int_cmd(fx.r, "EXISTS tollgate:refill:mail:refill:601:1:failure"), 0);
	rfx_expect_request(&fx, 601,
	                   "refill:601:1"); /* the failure is reported only after its mail */
	run_once(&w, 0, flags);
	assert_int_equal(group_pending(), 0);
	rfx_expect_request(&fx, 601, "");
	assert_true(rfx_slurp(sent, text, sizeof(text)) > 0);
	assert_int_equal(occurrences(text, "\nSubject: Auto-refill failed for account 601"), 1);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:601:1"), 1);
	assert_int_equal(it_int_cmd(fx.r, "EXISTS tollgate:refill:mail:refill:601:1:failure"), 1);
}

/*
 * The maildir: a mail is sent once even after its reader took it away.
 * --mail-dir is the same option as --maildir.
 */
static void
test_maildir_mail_sent_once_whatever_the_reader_does(void **state)
{
	char from[IT_PATH_MAX], to[IT_PATH_MAX], other[IT_PATH_MAX];
	struct rfx_worker w;

	(void)state;
	fire(610, "ADD", "50");
	rfx_profile(&fx, 610, "nu@example.com", "card", "tok_nu", NULL);
	publish(610, 1, "add", "50", 1);
	run_once(&w, 0, NULL);
	assert_int_equal(mails(".receipt"), 1);
	assert_int_equal(it_int_cmd(fx.r, "EXISTS tollgate:refill:mail:refill:610:1:receipt"), 1);

	/* The reader moves it to cur/ and marks it seen: a replay sends nothing. */
	mail_path("refill:610:1", "receipt", from, sizeof(from));
	it_pathf(to, sizeof(to), "%s/cur/refill.610.1.receipt:2,S", fx.mail);
	assert_int_equal(rename(from, to), 0);
	publish(610, 1, "add", "50", 2);
	run_once(&w, 0, NULL);
	assert_int_equal(mails(".receipt"), 0);
	assert_int_equal(files_in("cur", ":2,S"), 1);

	/* Even without the mail record, the maildir itself knows: cur/ holds it. */
	it_run_cmd(fx.r, "DEL tollgate:refill:mail:refill:610:1:receipt");
	publish(610, 1, "add", "50", 3);
	run_once(&w, 0, NULL);
	assert_int_equal(mails(".receipt"), 0);

	/* The reader deleted it: the mail record still says it went. */
	assert_int_equal(unlink(to), 0);
	publish(610, 1, "add", "50", 4);
	run_once(&w, 0, NULL);
	assert_int_equal(mails(".receipt"), 0);
	assert_int_equal(files_in("cur", ""), 0);
	assert_int_equal(counter("replayed"), 3);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 1);

	/* --mail-dir: the old name of --maildir; the maildir is made when missing. */
	it_pathf(other, sizeof(other), "%s/alias", fx.dir);
	const char *const alias[] = {"--mail-dir", other, NULL};
	fire(611, "ADD", "50");
	rfx_profile(&fx, 611, "xi@example.com", "card", "tok_xi", NULL);
	publish(611, 1, "add", "50", 1);
	run_once(&w, 0, alias);
	it_pathf(to, sizeof(to), "%s/new/refill.611.1.receipt", other);
	assert_int_equal(access(to, F_OK), 0);
	assert_int_equal(mails(".receipt"), 0);
	rfx_maildir_remove(other);
}

/*
 * End to end, with the engine's own publisher writing the stream (skipped
 * when tollgated has none): a crossing is published, settled by the worker
 * and cleared on the engine, and the next crossing fires a new request.
 */
static void
test_end_to_end_with_the_engines_publisher(void **state)
{
	char redis_port[16];
	struct rfx_worker w;
	uint64_t deadline;

	(void)state;
	redisFree(fx.e);
	fx.e = NULL;
	assert_int_equal(it_stop(&fx.d), 0);
	snprintf(redis_port, sizeof(redis_port), "%u", fx.redis.port);
	const char *const flags[] = {"--redis-host", "127.0.0.1", "--redis-port", redis_port, NULL};
	if (it_start(&fx.d, fx.dir, flags) != 0)
		skip();
	fx.e = it_connect(&fx.d);
	assert_non_null(fx.e);

	token_does("tok_no", "decline");
	rfx_profile(&fx, 800, "nia@example.com", "card", "tok_ok", NULL);
	rfx_profile(&fx, 801, "oz@example.com", "paypal", "tok_no", NULL);
	fire(800, "ADD", "50");
	fire(801, "ADD", "20");
	deadline = tg_mono_ms() + WAIT_MS;
	while (it_int_cmd(fx.r, "XLEN " STREAM) < 2) {
		if (tg_mono_ms() >= deadline)
			fail_msg("the engine did not publish the two requests");
		it_sleep_ms(10);
	}
	run_once(&w, 0, NULL);
	assert_true(it_acct_money(fx.e, 800, "balance") == 55 * U);
	rfx_expect_request(&fx, 800, "");
	assert_true(it_acct_money(fx.e, 801, "balance") == 5 * U);
	rfx_expect_request(&fx, 801, "");
	assert_int_equal(mails(".receipt"), 1);
	assert_int_equal(mails(".failure"), 1);

	/* The next crossing is a new request, published and settled the same way. */
	it_run_cmd(fx.e, "ACCT.SET 800 BALANCE 5");
	rfx_expect_request(&fx, 800, "refill:800:2");
	deadline = tg_mono_ms() + WAIT_MS;
	while (it_int_cmd(fx.r, "XLEN " STREAM) < 3) {
		if (tg_mono_ms() >= deadline)
			fail_msg("the engine did not publish refill:800:2");
		it_sleep_ms(10);
	}
	run_once(&w, 0, NULL);
	assert_true(it_acct_money(fx.e, 800, "balance") == 55 * U);
	rfx_expect_request(&fx, 800, "");
	assert_int_equal(charges(), 2);
	assert_int_equal(mails(".receipt"), 2);
	assert_int_equal(it_info(fx.e, "refills_landed"), 2);
	assert_int_equal(it_info(fx.e, "refills_failed"), 1);
	assert_int_equal(group_pending(), 0);
}

/* Bad options: exit 1 with a message, nothing done. */
static void
test_bad_options(void **state)
{
	static const char *const nomail[] = {"--mail-dir", "/nonexistent/dir", "--once", NULL};
	static const char *const badport[] = {"--engine", "127.0.0.1:99999", "--once", NULL};
	static const char *const badnum[] = {"--attempts", "0", "--once", NULL};
	struct rfx_worker w;

	(void)state;
	rfx_worker_start(&fx, &w, nomail, NULL);
	assert_int_equal(rfx_worker_wait(&w, RUN_TIMEOUT_MS), 1);
	rfx_worker_start(&fx, &w, badport, NULL);
	assert_int_equal(rfx_worker_wait(&w, RUN_TIMEOUT_MS), 1);
	assert_true(rfx_worker_said(&w, "bad value \"127.0.0.1:99999\" for --engine"));
	rfx_worker_start(&fx, &w, badnum, NULL);
	assert_int_equal(rfx_worker_wait(&w, RUN_TIMEOUT_MS), 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_group_created, setup_bare, rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_approved_then_republished, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_declined_and_expired, setup, rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_intermittent_approved_on_third_attempt, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_timeout_fails_after_attempts, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_no_payment_method, setup, rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_malformed_entries_acked_and_counted, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_two_workers_twenty_requests, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_crash_after_charge_charges_once, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_dead_worker_taken_over, setup, rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_refill_role_user, setup, rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_engine_down_then_back, setup, rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_redis_down_at_start, setup, rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_clean_exit_on_signals, setup, rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_sendmail_pipes_each_mail_once, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_maildir_mail_sent_once_whatever_the_reader_does,
	                                    setup, rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_dead_letter_unwritable_keeps_the_entry, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_end_to_end_with_the_engines_publisher, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_bad_options, setup, rfx_teardown_test),
	};

	signal(SIGPIPE, SIG_IGN);
	/* No redis-server on this machine: skip, as every integration test does. */
	if (!tg_test_redis_present())
		return 77;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
