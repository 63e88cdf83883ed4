/*
 * test_refill_course.c - what auto-refill must never do, and the course of a
 * failing card, end to end: the real tollgated with its publisher, a real
 * redis-server, real tollrefill processes and the bundled gateway simulator.
 *
 * Every test checks the outside world, not only the engine: the
 * simulator's charge log (tollgate:sim:charges, one field per approved
 * charge; tollgate:sim:attempts, every call) and the maildir (one file per
 * mail).  Each defect's test replays its repro steps word for word.  Money
 * is micro-units (tg_money_t), never floats.
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

#define U       1000000LL /* micro-units per currency unit */
#define STREAM  RFX_STREAM
#define GROUP   RFX_GROUP
#define WAIT_MS 30000
/* No account at start: each test makes its own with ACCT.SET, as the repro steps do. */
#define ACCOUNTS "account,balance,plan,state,threshold,refill,refill_amount,payment\n"

static struct rfx fx;

/* tollgated's flags: publishing to the test's Redis, then extra (NULL-terminated, may be NULL). */
static void
engine_flags(const char *const *extra, const char **flags, char *port, size_t portlen)
{
	unsigned n = 0;

	snprintf(port, portlen, "%u", fx.redis.port);
	const char *const base[] = {"--redis-host", "127.0.0.1", "--redis-port",     port,
	                            "--accounts",   fx.csv,      "--refill-timeout", "600"};
	for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
		flags[n++] = base[i];
	for (unsigned i = 0; extra != NULL && extra[i] != NULL; i++)
		flags[n++] = extra[i];
	flags[n] = NULL;
}

/* Start tollgated publishing to the test's Redis; extra flags (NULL-terminated, may be NULL). */
static void
engine_start(const char *const *extra)
{
	char port[16];
	const char *flags[32];

	engine_flags(extra, flags, port, sizeof(port));
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	fx.e = it_connect(&fx.d);
	assert_non_null(fx.e);
}

/* Kill tollgated (SIGKILL, as a crash) and start it again; reboot: its segment gone too. */
static void
engine_crash_restart(const char *const *extra, int reboot)
{
	char port[16];
	const char *flags[32];

	redisFree(fx.e);
	fx.e = NULL;
	assert_int_equal(it_kill(&fx.d), 0);
	engine_flags(extra, flags, port, sizeof(port));
	assert_int_equal(it_restart(&fx.d, flags, reboot), 0);
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
/* the engine, Redis, the simulator, the maildir                        */

/* Approved charges the simulator recorded for request id (0 or 1), and calls it received. */
static long long
charges(const char *id)
{
	return it_int_cmd(fx.r, "HEXISTS tollgate:sim:charges %s", id);
}

/* An engine command whose reply is +OK. */
static void ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
ok(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(fx.e, fmt, ap);
	va_end(ap);
	assert_non_null(r);
	if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, "OK") != 0)
		fail_msg("expected +OK, got type %d %s", r->type, r->str ? r->str : "");
	freeReplyObject(r);
}

/* An engine command whose reply is an error; its text into out. */
static void refused(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
refused(char *out, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(fx.e, fmt, ap);
	va_end(ap);
	assert_non_null(r);
	if (r->type != REDIS_REPLY_ERROR)
		fail_msg("expected an error, got type %d %s", r->type, r->str ? r->str : "");
	snprintf(out, cap, "%s", r->str);
	freeReplyObject(r);
}

/* ------------------------------------------------------------------ */
/* workers                                                             */

#define WAIT_FOR(cond, w) RFX_WAIT_FOR(cond, w, WAIT_MS)

/* ------------------------------------------------------------------ */
/* defects                                                             */

/*
 * Defect: every ACCT.SET on an account at or below its threshold with no
 * refill pending fired one.  With an approving card: threshold 20, REFILL
 * ADD 1, one CDR crosses, then ACCT.SET STATE closed three times: one
 * charge and one receipt, not four.  With an expired card: ACCT.SET PLAN
 * gold, then STATE suspended: one failure mail, not three.
 */
static void
test_acct_set_does_not_refire(void **state)
{
	static const char *const flags[] = {"--consumer", "w1", NULL};
	struct rfx_worker w;

	(void)state;
	engine_start(NULL);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_expired expired");
	rfx_profile(&fx, 7101, "ann@example.com", "card", "tok_visa_4242", "Test");
	rfx_profile(&fx, 7102, "bo@example.com", "card", "tok_expired", "Test");
	rfx_worker_start(&fx, &w, flags, NULL);

	ok("ACCT.SET 7101 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 1 PAYMENT on");
	redisReply *r = it_cmd(fx.e, "CDR 7101 12025550100 1500 c7101-1"); /* $0.50 */
	freeReplyObject(r);
	WAIT_FOR(rfx_mails(&fx, 7101, "receipt") == 1 && !rfx_refill_pending(&fx, 7101), &w);
	assert_true(it_acct_money(fx.e, 7101, "balance") == 21 * U);
	char mail[8192];
	rfx_mail_read(&fx, 7101, 1, "receipt", mail, sizeof(mail));
	rfx_expect_has(mail, "Amount charged:     $1.00\n");
	for (int i = 0; i < 3; i++)
		ok("ACCT.SET 7101 STATE closed");
	it_sleep_ms(1500); /* what a fired request would take to be charged */
	assert_int_equal(it_info(fx.e, "refills_fired"), 1);
	assert_int_equal(charges("refill:7101:1"), 1);
	assert_int_equal(charges("refill:7101:2"), 0);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 1);
	assert_int_equal(rfx_mails(&fx, 7101, "receipt"), 1);
	assert_true(it_acct_money(fx.e, 7101, "balance") == 21 * U);

	ok("ACCT.SET 7102 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 1 PAYMENT on");
	r = it_cmd(fx.e, "CDR 7102 12025550100 1500 c7102-1");
	freeReplyObject(r);
	WAIT_FOR(rfx_mails(&fx, 7102, "failure") == 1 && !rfx_refill_pending(&fx, 7102), &w);
	ok("ACCT.SET 7102 PLAN gold");
	ok("ACCT.SET 7102 STATE suspended");
	it_sleep_ms(1500);
	assert_int_equal(it_info(fx.e, "refills_fired"), 2);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:7102:1"), 1);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:7102:2"), 0);
	assert_int_equal(rfx_mails(&fx, 7102, "failure"), 1);
	assert_int_equal(rfx_files(&fx, "new", ""), 2);
	assert_int_equal(rfx_worker_stop(&w), 0);
}

/*
 * Defect: a closed account's card was charged.  ACCT.SET 7012 BALANCE 22
 * PLAN basic THRESHOLD 20 REFILL ADD 50 PAYMENT on STATE closed, then CDR
 * 7012 01144201234567 10000 c7012-1: no request, no charge, no mail.  And a
 * request already in flight when its account is closed, suspended or has
 * auto-refill switched off is settled without a charge or a mail: the
 * worker claims it first (ACCT.REFILL.CLAIM) and the engine says VOID.
 */
static void
test_closed_or_suspended_never_charged(void **state)
{
	static const char *const flags[] = {"--consumer", "w1", NULL};
	struct rfx_worker w;
	char err[256];

	(void)state;
	engine_start(NULL);
	rfx_profile(&fx, 7012, "cy@example.com", "card", "tok_visa_1111", "Test");
	for (unsigned a = 7013; a <= 7015; a++)
		rfx_profile(&fx, a, "dee@example.com", "card", "tok_visa_2222", "Test");
	rfx_worker_start(&fx, &w, flags, NULL);

	ok("ACCT.SET 7012 BALANCE 22 PLAN basic THRESHOLD 20 REFILL ADD 50 PAYMENT on STATE "
	   "closed");
	redisReply *r = it_cmd(fx.e, "CDR 7012 01144201234567 10000 c7012-1");
	freeReplyObject(r);
	assert_false(rfx_refill_pending(&fx, 7012));
	it_sleep_ms(1000);
	assert_int_equal(it_info(fx.e, "refills_fired"), 0);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:7012:1"), 0);
	assert_int_equal(rfx_files(&fx, "new", ""), 0);
	assert_int_equal(rfx_worker_stop(&w), 0);

	/* In flight, no worker running: then closed, suspended, switched off. */
	for (unsigned a = 7013; a <= 7015; a++) {
		ok("ACCT.SET %u BALANCE 22 PLAN basic THRESHOLD 20 REFILL ADD 50 PAYMENT on", a);
		r = it_cmd(fx.e, "CDR %u 01144201234567 10000 c%u-1", a, a);
		freeReplyObject(r);
		assert_true(rfx_refill_pending(&fx, a));
	}
	WAIT_FOR(it_int_cmd(fx.r, "XLEN " STREAM) == 3, NULL);
	/* The claim answers while the request is pending and the account active... */
	r = it_cmd(fx.e, "ACCT.REFILL.CLAIM 7013 refill:7013:1");
	assert_string_equal(r->str, "OK");
	freeReplyObject(r);
	ok("ACCT.SET 7013 STATE closed");
	ok("ACCT.SET 7014 STATE suspended");
	ok("ACCT.SET 7015 REFILL OFF");
	/* ...and no longer once it was voided. */
	refused(err, sizeof(err), "ACCT.REFILL.CLAIM 7013 refill:7013:1");
	assert_true(strncmp(err, "VOID ", 5) == 0);
	assert_int_equal(it_info(fx.e, "refills_void"), 3);
	rfx_worker_start(&fx, &w, flags, NULL);
	WAIT_FOR(it_int_cmd(fx.r, "HGET tollgate:refill:stats void") == 3, &w);
	for (unsigned a = 7013; a <= 7015; a++) {
		char id[32];
		snprintf(id, sizeof(id), "refill:%u:1", a);
		assert_int_equal(rfx_gateway_calls(&fx, id), 0);
		rfx_expect_request(&fx, a, "");
		assert_true(it_acct_money(fx.e, a, "balance") < 20 * U);
	}
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 0);
	assert_int_equal(rfx_files(&fx, "new", ""), 0);
	WAIT_FOR(rfx_worker_said(&w, "refill:7014:1 account 7014: not charged, no mail"),
	         &w); /* logged after the acknowledgement */
	assert_int_equal(rfx_worker_stop(&w), 0);
}

/*
 * Defect: THRESHOLD 20 REFILL TOPUP 10 was accepted; the crossing sent
 * amount 0, the worker dead-lettered it, and the flag stayed set for good.
 * Such settings are refused now (ACCT.SET; the accounts file is in
 * test_accounts.c), and a request that is malformed however it got so is
 * reported failed when it is dead-lettered: the account can refill again.
 */
static void
test_jammed_topup_refused_and_dead_letter_unjams(void **state)
{
	static const char *const flags[] = {"--consumer", "w1", NULL};
	struct rfx_worker w;
	char err[256];

	(void)state;
	engine_start(NULL);
	rfx_profile(&fx, 7301, "eve@example.com", "card", "tok_visa_3333", "Test");
	refused(err, sizeof(err),
	        "ACCT.SET 7301 BALANCE 25 PLAN basic THRESHOLD 20 REFILL TOPUP 10 PAYMENT on");
	assert_non_null(strstr(err, "top-up level 10 is at or below the threshold 20"));
	refused(err, sizeof(err),
	        "ACCT.SET 7301 BALANCE 25 PLAN basic THRESHOLD 20 REFILL TOPUP 20 PAYMENT on");
	refused(err, sizeof(err), "ACCT.GET 7301"); /* nothing was created */
	assert_true(strncmp(err, "NOACCOUNT", 9) == 0);
	/* A sound account, then a threshold raised to its level: refused, nothing changed. */
	ok("ACCT.SET 7301 BALANCE 25 PLAN basic THRESHOLD 20 REFILL TOPUP 40 PAYMENT on");
	refused(err, sizeof(err), "ACCT.SET 7301 THRESHOLD 40");
	char thr[32];
	it_acct_field(fx.e, 7301, "threshold", thr, sizeof(thr));
	assert_string_equal(thr, "20");

	/* A request whose stream entry is malformed (as the zero top-up's was). */
	redisReply *r = it_cmd(fx.e, "CDR 7301 01144201234567 10000 c7301-1"); /* $6.67 */
	freeReplyObject(r);
	assert_true(rfx_refill_pending(&fx, 7301));
	WAIT_FOR(it_int_cmd(fx.r, "XLEN " STREAM) == 1, NULL);
	it_run_cmd(fx.r, "XTRIM " STREAM " MAXLEN 0");
	it_run_cmd(fx.r, "XADD " STREAM " * id refill:7301:1 account 7301 amount 0 mode topup");
	rfx_worker_start(&fx, &w, flags, NULL);
	WAIT_FOR(!rfx_refill_pending(&fx, 7301), &w);
	WAIT_FOR(it_int_cmd(fx.r, "XLEN " STREAM ":dead") == 1, &w);
	assert_int_equal(it_info(fx.e, "refills_failed"), 1);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:7301:1"), 0);
	assert_int_equal(rfx_files(&fx, "new", ""), 0); /* the card was never tried: no mail */
	WAIT_FOR(rfx_worker_said(&w, "reported failed to the engine"),
	         &w); /* logged after the acknowledgement */

	/* Not jammed: the next crossing fires request 2, charged and credited. */
	ok("ACCT.SET 7301 BALANCE 25");
	r = it_cmd(fx.e, "CDR 7301 01144201234567 10000 c7301-2");
	freeReplyObject(r);
	WAIT_FOR(rfx_mails(&fx, 7301, "receipt") == 1 && !rfx_refill_pending(&fx, 7301), &w);
	assert_int_equal(charges("refill:7301:2"), 1);
	assert_int_equal(rfx_worker_stop(&w), 0);
}

/*
 * Defect: a TOPUP charged 82.166667 and the receipt said "$82.166667";
 * REFILL ADD 12.345678 was accepted.  Charges are whole minor units of the
 * currency (a setting: here EUR, in the engine and the worker alike): a
 * top-up is rounded up to the next cent, finer refill amounts are refused,
 * and the mails print the currency's symbol.
 */
static void
test_charges_are_whole_cents_in_the_currency(void **state)
{
	static const char *const eur[] = {"--currency", "EUR", NULL};
	static const char *const flags[] = {"--consumer", "w1", "--currency", "EUR", NULL};
	struct rfx_worker w;
	char err[256], mail[8192];

	(void)state;
	engine_start(eur);
	rfx_profile(&fx, 7401, "fay@example.com", "card", "tok_visa_4444", "Test");
	refused(err, sizeof(err),
	        "ACCT.SET 7401 BALANCE 30 PLAN basic THRESHOLD 20 REFILL ADD 12.345678 PAYMENT on");
	assert_non_null(strstr(err, "whole minor units"));
	/* 20.002 - a $0.005 local minute = 19.997: the top-up to 100 is 80.003, charged 80.01. */
	ok("ACCT.SET 7401 BALANCE 20.002 PLAN basic THRESHOLD 20 REFILL TOPUP 100 PAYMENT on");
	rfx_worker_start(&fx, &w, flags, NULL);
	redisReply *r = it_cmd(fx.e, "CDR 7401 12125550100 60 c7401-1");
	assert_string_equal(r->str, "0.005");
	freeReplyObject(r);
	WAIT_FOR(rfx_mails(&fx, 7401, "receipt") == 1 && !rfx_refill_pending(&fx, 7401), &w);
	r = it_cmd(fx.r, "HGET tollgate:sim:charges refill:7401:1");
	assert_true(strncmp(r->str, "80.01 tok_visa_4444 ", 20) == 0);
	freeReplyObject(r);
	assert_true(it_acct_money(fx.e, 7401, "balance") ==
	            100007000); /* at least the level, never short of it */
	rfx_mail_read(&fx, 7401, 1, "receipt", mail, sizeof(mail));
	rfx_expect_has(mail, "Amount charged:     \u20ac80.01\n");
	rfx_expect_has(mail, "New balance:        \u20ac100.007\n");
	assert_int_equal(rfx_worker_stop(&w), 0);

	/* A currency the engine does not know is refused at start, before anything is touched. */
	char cmd[IT_PATH_MAX + 64];
	snprintf(cmd, sizeof(cmd), "'%s' --currency XYZ --data-dir /nonexistent >/dev/null 2>&1",
	         getenv("TOLLGATED"));
	int rc = system(cmd);
	assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
}

/* ------------------------------------------------------------------ */
/* the course of a failing card                                        */

/*
 * A soft failure (the processor times out) is tried again from the
 * schedule in Redis, not by a worker pausing: 3 attempts over 2 s (pauses
 * of about 0.67 and 1.33 s).  The worker that made the first attempt is
 * stopped; another one, started later, makes the second and third from the
 * schedule, and the third is approved: one charge, one credit, one receipt,
 * and no failure mail for the attempts that failed.  The engine, with a
 * refill-timeout of 2 s, would republish the request during the second pause
 * but for the worker's lease: it republishes nothing.
 */
static void
test_soft_failure_succeeds_on_third_attempt(void **state)
{
	/*
	 * The pauses are 4/3 s and 8/3 s: without the lease the engine would
	 * republish during the second.  The 2 s before the first lease leave the
	 * first attempt room on a loaded machine.
	 */
	static const char *const engine[] = {"--refill-timeout", "2", NULL};
	static const char *const first[] = {"--consumer",     "w1", "--attempts", "3",
	                                    "--retry-period", "4s", NULL};
	static const char *const second[] = {"--consumer",     "w2", "--attempts", "3",
	                                     "--retry-period", "4s", NULL};
	struct rfx_worker w, w2;
	char mail[8192];

	(void)state;
	engine_start(engine);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_flaky intermittent:2");
	rfx_profile(&fx, 7501, "gil@example.com", "card", "tok_flaky", "Test");
	ok("ACCT.SET 7501 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on");
	rfx_worker_start(&fx, &w, first, NULL);
	redisReply *r = it_cmd(fx.e, "CDR 7501 12025550100 1500 c7501-1");
	freeReplyObject(r);
	WAIT_FOR(rfx_worker_said(&w, "charge attempt 1 of 3: timeout; attempt 2 scheduled"), &w);
	assert_int_equal(rfx_worker_stop(&w), 0);
	/* On the schedule in Redis, acknowledged on the stream, still pending at the engine. */
	assert_int_equal(it_int_cmd(fx.r, "ZCARD " STREAM ":retry"), 1);
	assert_int_equal(it_int_cmd(fx.r, "XLEN " STREAM), 1);
	assert_true(rfx_refill_pending(&fx, 7501));
	assert_int_equal(rfx_gateway_calls(&fx, "refill:7501:1"), 1);

	rfx_worker_start(&fx, &w2, second, NULL);
	WAIT_FOR(rfx_mails(&fx, 7501, "receipt") == 1 && !rfx_refill_pending(&fx, 7501), &w2);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:7501:1"), 3);
	assert_int_equal(charges("refill:7501:1"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 1);
	assert_int_equal(rfx_mails(&fx, 7501, "failure"), 0);
	assert_true(it_acct_money(fx.e, 7501, "balance") == 45 * U);
	rfx_mail_read(&fx, 7501, 1, "receipt", mail, sizeof(mail));
	rfx_expect_has(mail, "Amount charged:     $25.00\n");
	WAIT_FOR(rfx_worker_said(&w2, "3 attempts), credited"),
	         &w2); /* logged after the acknowledgement */
	assert_true(rfx_worker_said(&w2, "charge attempt 2 of 3: timeout; attempt 3 scheduled"));
	assert_int_equal(it_int_cmd(fx.r, "ZCARD " STREAM ":retry"), 0);
	assert_int_equal(it_info(fx.e, "refills_landed"), 1);
	assert_int_equal(it_info(fx.e, "refills_leased"), 2);
	assert_int_equal(it_info(fx.e, "refills_republished"), 0);
	assert_int_equal(rfx_worker_stop(&w2), 0);
}

/*
 * A hard failure (an expired card) ends at once: one gateway call, nothing
 * charged, exactly one failure mail, the flag cleared; the account keeps
 * rating and the next crossing may fire again.
 */
static void
test_hard_failure_ends_at_once_one_mail(void **state)
{
	static const char *const flags[] = {"--consumer", "w1", "--attempts", "3", NULL};
	struct rfx_worker w;
	char mail[8192];

	(void)state;
	engine_start(NULL);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_old expired");
	rfx_profile(&fx, 7601, "hob@example.com", "card", "tok_old", "Test");
	ok("ACCT.SET 7601 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on");
	rfx_worker_start(&fx, &w, flags, NULL);
	redisReply *r = it_cmd(fx.e, "CDR 7601 12025550100 1500 c7601-1");
	freeReplyObject(r);
	WAIT_FOR(rfx_mails(&fx, 7601, "failure") == 1 && !rfx_refill_pending(&fx, 7601), &w);
	it_sleep_ms(500);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:7601:1"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 0);
	assert_int_equal(rfx_mails(&fx, 7601, "failure"), 1);
	assert_int_equal(rfx_mails(&fx, 7601, "receipt"), 0);
	rfx_mail_read(&fx, 7601, 1, "failure", mail, sizeof(mail));
	rfx_expect_has(mail, "This is the only notification you will receive.");
	assert_int_equal(it_info(fx.e, "refills_failed"), 1);
	assert_true(it_acct_money(fx.e, 7601, "balance") == 20 * U);
	r = it_cmd(fx.e, "CALL.AUTH 7601 12025550100 c7601-2");
	assert_int_equal(r->type, REDIS_REPLY_INTEGER); /* still rating */
	freeReplyObject(r);
	assert_int_equal(rfx_worker_stop(&w), 0);
}

/*
 * Updating the card (tollctl profile) re-arms auto-refill: the account's
 * last refill failed on an expired card and its balance is below the
 * threshold, so the new card is charged at once for a new request.
 */
static void
test_updating_the_card_rearms(void **state)
{
	static const char *const flags[] = {"--consumer", "w1", NULL};
	struct rfx_worker w;
	char cmd[3 * IT_PATH_MAX];

	(void)state;
	engine_start(NULL);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_old expired");
	rfx_profile(&fx, 7701, "ida@example.com", "card", "tok_old", "Test");
	ok("ACCT.SET 7701 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on");
	rfx_worker_start(&fx, &w, flags, NULL);
	redisReply *r = it_cmd(fx.e, "CDR 7701 12025550100 1500 c7701-1");
	freeReplyObject(r);
	WAIT_FOR(rfx_mails(&fx, 7701, "failure") == 1 && !rfx_refill_pending(&fx, 7701), &w);

	snprintf(cmd, sizeof(cmd),
	         "'%s' -p %u --redis 127.0.0.1:%u profile 7701 --email ida@example.com --method "
	         "card --token tok_new_5555 >'%s/tollctl.out' 2>&1",
	         getenv("TOLLCTL"), fx.d.port, fx.redis.port, fx.dir);
	assert_int_equal(system(cmd), 0);
	WAIT_FOR(rfx_mails(&fx, 7701, "receipt") == 1 && !rfx_refill_pending(&fx, 7701), &w);
	assert_int_equal(charges("refill:7701:2"), 1);
	r = it_cmd(fx.r, "HGET tollgate:sim:charges refill:7701:2");
	assert_true(strncmp(r->str, "25 tok_new_5555 ", 16) == 0);
	freeReplyObject(r);
	assert_int_equal(rfx_mails(&fx, 7701, "failure"), 1);
	assert_true(it_acct_money(fx.e, 7701, "balance") == 45 * U);

	/* Above the threshold now: another update fires nothing; the next crossing will. */
	assert_int_equal(system(cmd), 0);
	it_sleep_ms(500);
	assert_int_equal(it_info(fx.e, "refills_fired"), 2);
	assert_int_equal(rfx_worker_stop(&w), 0);
}

static bool
field_is(uint64_t acct, const char *field, const char *want)
{
	char v[64];
	it_acct_field(fx.e, acct, field, v, sizeof(v));
	return strcmp(v, want) == 0;
}

static void
expect_field(uint64_t acct, const char *field, const char *want)
{
	char v[64];
	it_acct_field(fx.e, acct, field, v, sizeof(v));
	if (strcmp(v, want) != 0)
		fail_msg("account %llu: %s is \"%s\", expected \"%s\"", (unsigned long long)acct,
		         field, v, want);
}

/* The first word of the engine's error reply to a CALL.AUTH, into out. */
static void
error_word(char *out, size_t cap, uint64_t acct, const char *call)
{
	redisReply *r =
	    redisCommand(fx.e, "CALL.AUTH %llu 12025550100 %s", (unsigned long long)acct, call);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	snprintf(out, cap, "%.*s", (int)strcspn(r->str, " "), r->str);
	freeReplyObject(r);
}

/*
 * Escalation: with refill-suspend-after 2 and refill-close-after 2 s, an
 * expired card fails its refill (one failure mail, still active, one failed
 * refill counted); the customer "updates" to another expired card, the
 * re-armed refill fails too (a second mail): the account is suspended for
 * non-payment and refuses calls; 2 s later, with no payment, the engine
 * closes it.  Nothing was ever charged; each failed refill got exactly one
 * mail, no receipt.
 */
static void
test_failures_suspend_then_close(void **state)
{
	static const char *const engine[] = {"--refill-suspend-after", "2", "--refill-close-after",
	                                     "2", NULL};
	static const char *const flags[] = {"--consumer", "w1", NULL};
	struct rfx_worker w;
	char word[32];

	(void)state;
	engine_start(engine);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_old expired tok_older expired");
	rfx_profile(&fx, 7801, "jan@example.com", "card", "tok_old", "Test");
	ok("ACCT.SET 7801 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on");
	rfx_worker_start(&fx, &w, flags, NULL);
	redisReply *r = it_cmd(fx.e, "CDR 7801 12025550100 1500 c7801-1");
	freeReplyObject(r);
	WAIT_FOR(rfx_mails(&fx, 7801, "failure") == 1 && !rfx_refill_pending(&fx, 7801), &w);
	expect_field(7801, "state", "active");
	expect_field(7801, "suspended", "");
	assert_int_equal(it_acct_int(fx.e, 7801, "failed_refills"), 1);
	assert_int_equal(it_info(fx.e, "accounts_unpaid_suspended"), 0);

	rfx_profile(&fx, 7801, "jan@example.com", "card", "tok_older", "Test");
	r = it_cmd(fx.e, "ACCT.REFILL.REARM 7801");
	assert_string_equal(r->str, "refill:7801:2");
	freeReplyObject(r);
	WAIT_FOR(rfx_mails(&fx, 7801, "failure") == 2 && !rfx_refill_pending(&fx, 7801), &w);
	uint64_t suspended_at = tg_mono_ms();
	expect_field(7801, "state", "suspended");
	expect_field(7801, "suspended", "payment");
	assert_int_equal(it_acct_int(fx.e, 7801, "failed_refills"), 2);
	long long since = it_acct_int(fx.e, 7801, "suspended_since");
	assert_true(since > 0 && since <= (long long)time(NULL));
	assert_int_equal(it_info(fx.e, "accounts_unpaid_suspended"), 1);
	error_word(word, sizeof(word), 7801, "c7801-2");
	assert_string_equal(word, "SUSPENDED");

	WAIT_FOR(field_is(7801, "state", "closed") && it_info(fx.e, "accounts_unpaid_closed") == 1,
	         &w);
	expect_field(7801, "state", "closed");
	expect_field(7801, "suspended", "");
	assert_true(tg_mono_ms() - suspended_at >= 1000);
	error_word(word, sizeof(word), 7801, "c7801-3");
	assert_string_equal(word, "CLOSED");
	/* The outside world: two gateway calls, nothing charged, two failure mails, no receipt. */
	assert_int_equal(rfx_gateway_calls(&fx, "refill:7801:1"), 1);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:7801:2"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 0);
	assert_int_equal(rfx_mails(&fx, 7801, "failure"), 2);
	assert_int_equal(rfx_mails(&fx, 7801, "receipt"), 0);
	assert_int_equal(it_info(fx.e, "refills_failed"), 2);
	/* A closed account is never re-armed, even by a new card. */
	r = it_cmd(fx.e, "ACCT.REFILL.REARM 7801");
	assert_int_equal(r->type, REDIS_REPLY_NIL);
	freeReplyObject(r);
	assert_int_equal(rfx_worker_stop(&w), 0);
}

/*
 * A payment re-activates an account suspended for non-payment: for 7901 a
 * refill that succeeds on the updated card (tollctl profile re-arms it,
 * the new card is charged), for 7902 an ACCT.CREDIT.  Never one an operator
 * suspended (7903), even one the engine had suspended for non-payment
 * first (7904: the operator's word then stands), and never a closed one.
 */
static void
test_payment_restores_only_unpaid(void **state)
{
	static const char *const engine[] = {"--refill-suspend-after", "1", NULL};
	static const char *const flags[] = {"--consumer", "w1", NULL};
	struct rfx_worker w;
	char cmd[3 * IT_PATH_MAX];

	(void)state;
	engine_start(engine);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_old expired");
	rfx_worker_start(&fx, &w, flags, NULL);
	for (uint64_t a = 7901; a <= 7904; a++) {
		rfx_profile(&fx, a, "kim@example.com", "card", "tok_old", "Test");
		ok("ACCT.SET %llu BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on",
		   (unsigned long long)a);
	}
	ok("ACCT.SET 7903 STATE suspended");
	for (uint64_t a = 7901; a <= 7904; a++) {
		redisReply *r = it_cmd(fx.e, "CDR %llu 12025550100 1500 c%llu-1",
		                       (unsigned long long)a, (unsigned long long)a);
		freeReplyObject(r);
	}
	WAIT_FOR(rfx_mails(&fx, 7901, "failure") == 1 && rfx_mails(&fx, 7902, "failure") == 1 &&
	             rfx_mails(&fx, 7904, "failure") == 1 && !rfx_refill_pending(&fx, 7901) &&
	             !rfx_refill_pending(&fx, 7902) && !rfx_refill_pending(&fx, 7904),
	         &w);
	for (uint64_t a = 7901; a <= 7904; a++)
		if (a != 7903)
			expect_field(a, "suspended", "payment");
	/* The operator's suspension fired nothing and is the operator's. */
	expect_field(7903, "suspended", "operator");
	assert_int_equal(rfx_mails(&fx, 7903, "failure"), 0);
	assert_int_equal(rfx_gateway_calls(&fx, "refill:7903:1"), 0);
	assert_int_equal(it_info(fx.e, "accounts_unpaid_suspended"), 3);

	/* 7901: the customer updates the card; the re-armed refill is charged and restores it. */
	snprintf(cmd, sizeof(cmd),
	         "'%s' -p %u --redis 127.0.0.1:%u profile 7901 --email kim@example.com --method "
	         "card --token tok_new_7901 >'%s/tollctl.out' 2>&1",
	         getenv("TOLLCTL"), fx.d.port, fx.redis.port, fx.dir);
	assert_int_equal(system(cmd), 0);
	WAIT_FOR(rfx_mails(&fx, 7901, "receipt") == 1 && !rfx_refill_pending(&fx, 7901), &w);
	assert_int_equal(charges("refill:7901:2"), 1);
	expect_field(7901, "state", "active");
	expect_field(7901, "suspended", "");
	assert_int_equal(it_acct_int(fx.e, 7901, "failed_refills"), 0);
	assert_int_equal(it_acct_int(fx.e, 7901, "suspended_since"), 0);
	assert_true(it_acct_money(fx.e, 7901, "balance") == 45 * U);

	/* 7902: a credit restores; 7903 and 7904 (now the operator's) stay suspended. */
	ok("ACCT.SET 7904 STATE suspended");
	expect_field(7904, "suspended", "operator");
	for (uint64_t a = 7902; a <= 7904; a++) {
		redisReply *r = it_cmd(fx.e, "ACCT.CREDIT %llu 10 pay-%llu", (unsigned long long)a,
		                       (unsigned long long)a);
		assert_int_equal(r->type, REDIS_REPLY_STRING);
		freeReplyObject(r);
	}
	expect_field(7902, "state", "active");
	expect_field(7902, "suspended", "");
	assert_int_equal(it_acct_int(fx.e, 7902, "failed_refills"), 0);
	expect_field(7903, "state", "suspended");
	expect_field(7903, "suspended", "operator");
	expect_field(7904, "state", "suspended");
	expect_field(7904, "suspended", "operator");
	assert_int_equal(it_info(fx.e, "accounts_unpaid_restored"), 2);
	/* A closed account stays closed whatever is paid. */
	ok("ACCT.SET 7902 STATE closed");
	redisReply *r = it_cmd(fx.e, "ACCT.CREDIT 7902 10 pay-7902-2");
	freeReplyObject(r);
	expect_field(7902, "state", "closed");

	/* The outside world: one charge (7901's new card), one receipt, one failure mail each. */
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 1);
	assert_int_equal(rfx_mails(&fx, 7902, "receipt") + rfx_mails(&fx, 7903, "receipt") +
	                     rfx_mails(&fx, 7904, "receipt"),
	                 0);
	for (uint64_t a = 7901; a <= 7904; a++)
		assert_int_equal(rfx_mails(&fx, a, "failure"), a == 7903 ? 0 : 1);
	assert_int_equal(rfx_worker_stop(&w), 0);
}

/*
 * An account closed while its retry is scheduled: the processor timed out,
 * the next attempt waits in Redis; the operator closes the account.  When
 * the retry comes due the worker's claim is refused: no second gateway
 * call, no charge, no mail of any kind; the schedule is empty after.
 */
static void
test_closed_while_retry_scheduled(void **state)
{
	static const char *const flags[] = {"--consumer",     "w1", "--attempts", "3",
	                                    "--retry-period", "1s", NULL};
	struct rfx_worker w;

	(void)state;
	engine_start(NULL);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_slow timeout");
	rfx_profile(&fx, 8001, "lee@example.com", "card", "tok_slow", "Test");
	ok("ACCT.SET 8001 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on");
	rfx_worker_start(&fx, &w, flags, NULL);
	redisReply *r = it_cmd(fx.e, "CDR 8001 12025550100 1500 c8001-1");
	freeReplyObject(r);
	WAIT_FOR(rfx_worker_said(&w, "charge attempt 1 of 3: timeout; attempt 2 scheduled"), &w);
	ok("ACCT.SET 8001 STATE closed");
	assert_false(rfx_refill_pending(&fx, 8001));
	WAIT_FOR(rfx_worker_said(&w, "not charged, no mail"), &w);
	WAIT_FOR(it_int_cmd(fx.r, "ZCARD " STREAM ":retry") == 0, &w);
	it_sleep_ms(1500); /* past the whole period: nothing else happens */
	assert_int_equal(rfx_gateway_calls(&fx, "refill:8001:1"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 0);
	assert_int_equal(rfx_files(&fx, "new", "refill.8001."), 0);
	assert_int_equal(rfx_files(&fx, "tmp", ""), 0);
	assert_true(it_acct_money(fx.e, 8001, "balance") == 20 * U);
	expect_field(8001, "state", "closed");
	assert_int_equal(it_info(fx.e, "refills_void"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HGET tollgate:refill:stats void"), 1);
	assert_int_equal(rfx_worker_stop(&w), 0);
}

/*
 * The standing survives a crash and a reboot, through the journal (and a
 * snapshot): 8101 suspended for non-payment after 2 failed refills (its
 * date kept), 8102 with one failed refill counted and still active, 8103
 * suspended by an operator.  After a kill -9 with the segment kept, a clean
 * stop (a snapshot) and a kill -9 with the segment gone (a reboot), each
 * reads the same, and a payment still restores 8101 and never 8103.
 */
static void
test_standing_survives_crash_and_reboot(void **state)
{
	static const char *const engine[] = {"--refill-suspend-after", "2", NULL};
	static const char *const flags[] = {"--consumer", "w1", NULL};
	struct rfx_worker w;
	char port[16];
	const char *eflags[32];

	(void)state;
	engine_start(engine);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_old expired");
	rfx_worker_start(&fx, &w, flags, NULL);
	for (uint64_t a = 8101; a <= 8103; a++) {
		rfx_profile(&fx, a, "max@example.com", "card", "tok_old", "Test");
		ok("ACCT.SET %llu BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on",
		   (unsigned long long)a);
	}
	ok("ACCT.SET 8103 STATE suspended");
	for (uint64_t a = 8101; a <= 8102; a++) {
		redisReply *r = it_cmd(fx.e, "CDR %llu 12025550100 1500 c%llu-1",
		                       (unsigned long long)a, (unsigned long long)a);
		freeReplyObject(r);
	}
	WAIT_FOR(rfx_mails(&fx, 8101, "failure") == 1 && rfx_mails(&fx, 8102, "failure") == 1 &&
	             !rfx_refill_pending(&fx, 8101) && !rfx_refill_pending(&fx, 8102),
	         &w);
	redisReply *r = it_cmd(fx.e, "ACCT.REFILL.REARM 8101");
	freeReplyObject(r);
	WAIT_FOR(rfx_mails(&fx, 8101, "failure") == 2 && !rfx_refill_pending(&fx, 8101), &w);
	assert_int_equal(rfx_worker_stop(&w), 0);
	long long since = it_acct_int(fx.e, 8101, "suspended_since");
	assert_true(since > 0);

	for (int round = 0; round < 3; round++) {
		if (round == 1) {
			/* A clean stop writes a snapshot; the start after reads it back. */
			redisFree(fx.e);
			fx.e = NULL;
			assert_int_equal(it_term(&fx.d), 0);
			engine_flags(engine, eflags, port, sizeof(port));
			assert_int_equal(it_restart(&fx.d, eflags, 0), 0);
			fx.e = it_connect(&fx.d);
			assert_non_null(fx.e);
		} else {
			engine_crash_restart(engine, round == 2);
		}
		expect_field(8101, "state", "suspended");
		expect_field(8101, "suspended", "payment");
		assert_int_equal(it_acct_int(fx.e, 8101, "failed_refills"), 2);
		assert_int_equal(it_acct_int(fx.e, 8101, "suspended_since"), since);
		expect_field(8102, "state", "active");
		assert_int_equal(it_acct_int(fx.e, 8102, "failed_refills"), 1);
		expect_field(8103, "state", "suspended");
		expect_field(8103, "suspended", "operator");
		assert_int_equal(it_acct_int(fx.e, 8103, "failed_refills"), 0);
	}
	/* One more failure of 8102 after the reboot suspends it: the count was kept. */
	rfx_worker_start(&fx, &w, flags, NULL);
	r = it_cmd(fx.e, "ACCT.REFILL.REARM 8102");
	assert_string_equal(r->str, "refill:8102:2");
	freeReplyObject(r);
	WAIT_FOR(rfx_mails(&fx, 8102, "failure") == 2 && !rfx_refill_pending(&fx, 8102), &w);
	expect_field(8102, "suspended", "payment");
	/* And a payment still tells the two suspensions apart. */
	for (uint64_t a = 8101; a <= 8103; a += 2) {
		r = it_cmd(fx.e, "ACCT.CREDIT %llu 10 pay-%llu", (unsigned long long)a,
		           (unsigned long long)a);
		freeReplyObject(r);
	}
	expect_field(8101, "state", "active");
	expect_field(8103, "suspended", "operator");
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 0);
	assert_int_equal(rfx_mails(&fx, 8101, "failure"), 2);
	assert_int_equal(rfx_mails(&fx, 8101, "receipt") + rfx_mails(&fx, 8102, "receipt"), 0);
	assert_int_equal(rfx_worker_stop(&w), 0);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_acct_set_does_not_refire, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_closed_or_suspended_never_charged, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_jammed_topup_refused_and_dead_letter_unjams, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_charges_are_whole_cents_in_the_currency, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_soft_failure_succeeds_on_third_attempt, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_hard_failure_ends_at_once_one_mail, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_updating_the_card_rearms, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_failures_suspend_then_close, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_payment_restores_only_unpaid, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_closed_while_retry_scheduled, setup,
	                                    rfx_teardown_test),
	    cmocka_unit_test_setup_teardown(test_standing_survives_crash_and_reboot, setup,
	                                    rfx_teardown_test),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
