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
#include "tg_money.h"

#define U       1000000LL /* micro-units per currency unit */
#define STREAM  "tollgate:refill"
#define GROUP   "refill"
#define WAIT_MS 30000
#define LOG_MAX (1 << 17)
/* No account at start: each test makes its own with ACCT.SET, as the repro steps do. */
#define ACCOUNTS "account,balance,plan,state,threshold,refill,refill_amount,payment\n"

extern char **environ;

struct fx {
	char dir[IT_PATH_MAX], mail[IT_PATH_MAX], csv[IT_PATH_MAX];
	struct tg_test_redis redis;
	struct it_daemon d;
	redisContext *r, *e;
	unsigned runs;
};

static struct fx fx;

static tg_money_t
money(const char *s)
{
	tg_money_t v;
	if (tg_money_parse(s, strlen(s), &v) != 0)
		fail_msg("\"%s\" is not an amount", s);
	return v;
}

/* Remove a maildir: the files of its tmp, new and cur, those, then the directory. */
static void
maildir_remove(const char *dir)
{
	static const char *const subs[] = {"tmp", "new", "cur"};
	char path[IT_PATH_MAX];

	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		it_pathf(path, sizeof(path), "%s/%s", dir, subs[i]);
		it_dir_remove(path);
	}
	it_dir_remove(dir);
}

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
	(void)state;
	memset(&fx, 0, sizeof(fx));
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	it_pathf(fx.mail, sizeof(fx.mail), "%s/maildir", fx.dir);
	assert_int_equal(it_file_write(fx.dir, "accounts.csv", ACCOUNTS, fx.csv, sizeof(fx.csv)),
	                 0);
	assert_int_equal(tg_test_redis_start(&fx.redis), 0);
	fx.r = tg_test_redis_connect(&fx.redis);
	assert_non_null(fx.r);
	/* The group before the first publication, as in production. */
	it_run_cmd(fx.r, "XGROUP CREATE " STREAM " " GROUP " $ MKSTREAM");
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_declined decline");
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	if (fx.r != NULL)
		redisFree(fx.r);
	if (fx.e != NULL)
		redisFree(fx.e);
	if (fx.d.pid > 0)
		assert_int_equal(it_stop(&fx.d), 0);
	tg_test_redis_stop(&fx.redis);
	maildir_remove(fx.mail);
	it_dir_remove(fx.dir);
	return 0;
}

/* ------------------------------------------------------------------ */
/* the engine, Redis, the simulator, the maildir                        */

/* ACCT.GET field of acct, as a string, into out. */
static void
acct_field(uint64_t acct, const char *field, char *out, size_t cap)
{
	redisReply *r = it_cmd(fx.e, "ACCT.GET %llu", (unsigned long long)acct);

	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	for (size_t i = 0; i + 1 < r->elements; i += 2) {
		if (strcmp(r->element[i]->str, field) != 0)
			continue;
		const redisReply *v = r->element[i + 1];
		if (v->type == REDIS_REPLY_INTEGER)
			snprintf(out, cap, "%lld", v->integer);
		else
			snprintf(out, cap, "%s", v->str ? v->str : "");
		freeReplyObject(r);
		return;
	}
	fail_msg("ACCT.GET %llu has no field %s", (unsigned long long)acct, field);
}

static tg_money_t
balance(uint64_t acct)
{
	char s[64];
	acct_field(acct, "balance", s, sizeof(s));
	return money(s);
}

static bool
refill_pending(uint64_t acct)
{
	char s[64];
	acct_field(acct, "refill_pending", s, sizeof(s));
	return strcmp(s, "1") == 0;
}

static void
expect_request(uint64_t acct, const char *request)
{
	char s[64];

	acct_field(acct, "refill_pending", s, sizeof(s));
	assert_string_equal(s, request[0] ? "1" : "0");
	acct_field(acct, "refill_request", s, sizeof(s));
	assert_string_equal(s, request);
}

/* An INFO counter of the engine. */
static long long
info(const char *name)
{
	redisReply *r = it_cmd(fx.e, "INFO all");
	char key[64];
	long long v = -1;

	snprintf(key, sizeof(key), "\n%s:", name);
	const char *p = strstr(r->str, key);
	if (p != NULL)
		v = strtoll(p + strlen(key), NULL, 10);
	freeReplyObject(r);
	if (v < 0)
		fail_msg("INFO has no %s", name);
	return v;
}

static void
profile(uint64_t acct, const char *email, const char *method, const char *token)
{
	it_run_cmd(fx.r, "HSET tollgate:customer:%llu email %s method %s token %s name %s",
	           (unsigned long long)acct, email, method, token, "Test");
}

/* Files in the maildir's sub (new, cur, tmp) whose name starts with prefix. */
static unsigned
files(const char *sub, const char *prefix)
{
	char path[IT_PATH_MAX];
	struct dirent *e;
	unsigned n = 0;

	it_pathf(path, sizeof(path), "%s/%s", fx.mail, sub);
	DIR *d = opendir(path);
	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.' && strncmp(e->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(d);
	return n;
}

/* Mails for acct in new/ of kind ("receipt", "failure"). */
static unsigned
mails(uint64_t acct, const char *kind)
{
	char prefix[64], path[IT_PATH_MAX];
	struct dirent *e;
	unsigned n = 0;

	snprintf(prefix, sizeof(prefix), "refill.%llu.", (unsigned long long)acct);
	it_pathf(path, sizeof(path), "%s/new", fx.mail);
	DIR *d = opendir(path);
	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name), k = strlen(kind);
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 && l > k &&
		    strcmp(e->d_name + l - k, kind) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* The mail new/refill.<acct>.<n>.<kind> into buf. */
static void
mail_read(uint64_t acct, unsigned n, const char *kind, char *buf, size_t cap)
{
	char path[IT_PATH_MAX];
	size_t len = 0;
	ssize_t k;

	it_pathf(path, sizeof(path), "%s/new/refill.%llu.%u.%s", fx.mail, (unsigned long long)acct,
	         n, kind);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fail_msg("no mail %s", path);
	while (len + 1 < cap && (k = read(fd, buf + len, cap - 1 - len)) > 0)
		len += (size_t)k;
	close(fd);
	buf[len] = '\0';
}

static void
expect_has(const char *text, const char *needle)
{
	if (strstr(text, needle) == NULL)
		fail_msg("expected \"%s\" in:\n%s", needle, text);
}

/* Approved charges the simulator recorded for request id (0 or 1), and calls it received. */
static long long
charges(const char *id)
{
	return it_int_cmd(fx.r, "HEXISTS tollgate:sim:charges %s", id);
}

static long long
gateway_calls(const char *id)
{
	return it_int_cmd(fx.r, "HGET tollgate:sim:attempts %s", id);
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

struct worker {
	pid_t pid;
	char log[IT_PATH_MAX];
};

/*
 * Start tollrefill with the fixture's addresses, maildir and a short
 * back-off, the extra flags (NULL-terminated, may be NULL) and, when env is
 * not NULL, that "NAME=value" added to its environment.
 */
static void
worker_start(struct worker *w, const char *const *extra, const char *env)
{
	const char *bin = getenv("TOLLREFILL");
	char redis[32], engine[32];
	const char *argv[48];
	char *envp[256];
	unsigned n = 0, k = 0;

	if (bin == NULL || bin[0] == '\0')
		fail_msg("TOLLREFILL is not set (run through meson test)");
	snprintf(redis, sizeof(redis), "127.0.0.1:%u", fx.redis.port);
	snprintf(engine, sizeof(engine), "127.0.0.1:%u", fx.d.port);
	it_pathf(w->log, sizeof(w->log), "%s/tollrefill-%u.log", fx.dir, ++fx.runs);
	argv[n++] = bin;
	argv[n++] = "--redis";
	argv[n++] = redis;
	argv[n++] = "--engine";
	argv[n++] = engine;
	argv[n++] = "--maildir";
	argv[n++] = fx.mail;
	argv[n++] = "--backoff-ms";
	argv[n++] = "20";
	for (unsigned i = 0; extra != NULL && extra[i] != NULL; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	assert_true(n < sizeof(argv) / sizeof(argv[0]));
	/* The environment is built before fork: the child only execs. */
	for (char **e = environ; *e != NULL && k + 2 < sizeof(envp) / sizeof(envp[0]); e++)
		envp[k++] = *e;
	if (env != NULL)
		envp[k++] = (char *)env;
	envp[k] = NULL;

	pid_t parent = getpid();
	w->pid = fork();
	assert_true(w->pid >= 0);
	if (w->pid == 0) {
		int fd = open(w->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent || fd < 0 || null < 0 || dup2(null, 0) < 0 ||
		    dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(126);
		execve(bin, (char *const *)argv, envp);
		_exit(127);
	}
}

static void
worker_log(const struct worker *w, char *buf, size_t cap)
{
	size_t n = 0;
	ssize_t k;
	int fd = open(w->log, O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		while (n + 1 < cap && (k = read(fd, buf + n, cap - 1 - n)) > 0)
			n += (size_t)k;
		close(fd);
	}
	buf[n] = '\0';
}

static int
worker_said(const struct worker *w, const char *text)
{
	static char buf[LOG_MAX];
	worker_log(w, buf, sizeof(buf));
	return strstr(buf, text) != NULL;
}

static void
worker_dump(const struct worker *w)
{
	static char buf[LOG_MAX];
	worker_log(w, buf, sizeof(buf));
	fprintf(stderr, "---- %s ----\n%s---- end ----\n", w->log, buf);
}

/* Wait for the worker to exit (SIGKILL after timeout_ms); its exit status, 128+sig if killed. */
static int
worker_wait(struct worker *w, uint64_t timeout_ms)
{
	static char buf[LOG_MAX];
	uint64_t deadline = tg_mono_ms() + timeout_ms;
	int status = 0;

	for (;;) {
		pid_t p = waitpid(w->pid, &status, WNOHANG);
		if (p == w->pid)
			break;
		if (tg_mono_ms() >= deadline) {
			kill(w->pid, SIGKILL);
			waitpid(w->pid, &status, 0);
			break;
		}
		it_sleep_ms(5);
	}
	w->pid = 0;
	worker_log(w, buf, sizeof(buf));
	if (strstr(buf, "runtime error:") != NULL || strstr(buf, "Sanitizer") != NULL)
		fail_msg("sanitizer report in %s:\n%s", w->log, buf);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int
worker_stop(struct worker *w)
{
	kill(w->pid, SIGTERM);
	return worker_wait(w, 10000);
}

/* Whether a wait that started at t0 has run out; if so, the worker's log is shown. */
static bool
waited_too_long(uint64_t t0, const struct worker *w)
{
	if (tg_mono_ms() - t0 < WAIT_MS)
		return false;
	if (w != NULL)
		worker_dump(w);
	return true;
}

/* Poll cond (an expression) every 10 ms until true, or fail after WAIT_MS. */
#define WAIT_FOR(cond, w)                                                                          \
	do {                                                                                       \
		uint64_t t0_ = tg_mono_ms();                                                       \
		while (!(cond)) {                                                                  \
			if (waited_too_long(t0_, (w)))                                             \
				fail_msg("waited %d ms for: %s", WAIT_MS, #cond);                  \
			it_sleep_ms(10);                                                           \
		}                                                                                  \
	} while (0)

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
	struct worker w;

	(void)state;
	engine_start(NULL);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_expired expired");
	profile(7101, "ann@example.com", "card", "tok_visa_4242");
	profile(7102, "bo@example.com", "card", "tok_expired");
	worker_start(&w, flags, NULL);

	ok("ACCT.SET 7101 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 1 PAYMENT on");
	redisReply *r = it_cmd(fx.e, "CDR 7101 12025550100 1500 c7101-1"); /* $0.50 */
	freeReplyObject(r);
	WAIT_FOR(mails(7101, "receipt") == 1 && !refill_pending(7101), &w);
	assert_true(balance(7101) == 21 * U);
	char mail[8192];
	mail_read(7101, 1, "receipt", mail, sizeof(mail));
	expect_has(mail, "Amount charged:     $1.00\n");
	for (int i = 0; i < 3; i++)
		ok("ACCT.SET 7101 STATE closed");
	it_sleep_ms(1500); /* what a fired request would take to be charged */
	assert_int_equal(info("refills_fired"), 1);
	assert_int_equal(charges("refill:7101:1"), 1);
	assert_int_equal(charges("refill:7101:2"), 0);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 1);
	assert_int_equal(mails(7101, "receipt"), 1);
	assert_true(balance(7101) == 21 * U);

	ok("ACCT.SET 7102 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 1 PAYMENT on");
	r = it_cmd(fx.e, "CDR 7102 12025550100 1500 c7102-1");
	freeReplyObject(r);
	WAIT_FOR(mails(7102, "failure") == 1 && !refill_pending(7102), &w);
	ok("ACCT.SET 7102 PLAN gold");
	ok("ACCT.SET 7102 STATE suspended");
	it_sleep_ms(1500);
	assert_int_equal(info("refills_fired"), 2);
	assert_int_equal(gateway_calls("refill:7102:1"), 1);
	assert_int_equal(gateway_calls("refill:7102:2"), 0);
	assert_int_equal(mails(7102, "failure"), 1);
	assert_int_equal(files("new", ""), 2);
	assert_int_equal(worker_stop(&w), 0);
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
	struct worker w;
	char err[256];

	(void)state;
	engine_start(NULL);
	profile(7012, "cy@example.com", "card", "tok_visa_1111");
	for (unsigned a = 7013; a <= 7015; a++)
		profile(a, "dee@example.com", "card", "tok_visa_2222");
	worker_start(&w, flags, NULL);

	ok("ACCT.SET 7012 BALANCE 22 PLAN basic THRESHOLD 20 REFILL ADD 50 PAYMENT on STATE "
	   "closed");
	redisReply *r = it_cmd(fx.e, "CDR 7012 01144201234567 10000 c7012-1");
	freeReplyObject(r);
	assert_false(refill_pending(7012));
	it_sleep_ms(1000);
	assert_int_equal(info("refills_fired"), 0);
	assert_int_equal(gateway_calls("refill:7012:1"), 0);
	assert_int_equal(files("new", ""), 0);
	assert_int_equal(worker_stop(&w), 0);

	/* In flight, no worker running: then closed, suspended, switched off. */
	for (unsigned a = 7013; a <= 7015; a++) {
		ok("ACCT.SET %u BALANCE 22 PLAN basic THRESHOLD 20 REFILL ADD 50 PAYMENT on", a);
		r = it_cmd(fx.e, "CDR %u 01144201234567 10000 c%u-1", a, a);
		freeReplyObject(r);
		assert_true(refill_pending(a));
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
	assert_int_equal(info("refills_void"), 3);
	worker_start(&w, flags, NULL);
	WAIT_FOR(it_int_cmd(fx.r, "HGET tollgate:refill:stats void") == 3, &w);
	for (unsigned a = 7013; a <= 7015; a++) {
		char id[32];
		snprintf(id, sizeof(id), "refill:%u:1", a);
		assert_int_equal(gateway_calls(id), 0);
		expect_request(a, "");
		assert_true(balance(a) < 20 * U);
	}
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 0);
	assert_int_equal(files("new", ""), 0);
	assert_true(worker_said(&w, "refill:7014:1 account 7014: not charged, no mail"));
	assert_int_equal(worker_stop(&w), 0);
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
	struct worker w;
	char err[256];

	(void)state;
	engine_start(NULL);
	profile(7301, "eve@example.com", "card", "tok_visa_3333");
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
	acct_field(7301, "threshold", thr, sizeof(thr));
	assert_string_equal(thr, "20");

	/* A request whose stream entry is malformed (as the zero top-up's was). */
	redisReply *r = it_cmd(fx.e, "CDR 7301 01144201234567 10000 c7301-1"); /* $6.67 */
	freeReplyObject(r);
	assert_true(refill_pending(7301));
	WAIT_FOR(it_int_cmd(fx.r, "XLEN " STREAM) == 1, NULL);
	it_run_cmd(fx.r, "XTRIM " STREAM " MAXLEN 0");
	it_run_cmd(fx.r, "XADD " STREAM " * id refill:7301:1 account 7301 amount 0 mode topup");
	worker_start(&w, flags, NULL);
	WAIT_FOR(!refill_pending(7301), &w);
	WAIT_FOR(it_int_cmd(fx.r, "XLEN " STREAM ":dead") == 1, &w);
	assert_int_equal(info("refills_failed"), 1);
	assert_int_equal(gateway_calls("refill:7301:1"), 0);
	assert_int_equal(files("new", ""), 0); /* the card was never tried: no mail */
	assert_true(worker_said(&w, "reported failed to the engine"));

	/* Not jammed: the next crossing fires request 2, charged and credited. */
	ok("ACCT.SET 7301 BALANCE 25");
	r = it_cmd(fx.e, "CDR 7301 01144201234567 10000 c7301-2");
	freeReplyObject(r);
	WAIT_FOR(mails(7301, "receipt") == 1 && !refill_pending(7301), &w);
	assert_int_equal(charges("refill:7301:2"), 1);
	assert_int_equal(worker_stop(&w), 0);
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
	struct worker w;
	char err[256], mail[8192];

	(void)state;
	engine_start(eur);
	profile(7401, "fay@example.com", "card", "tok_visa_4444");
	refused(err, sizeof(err),
	        "ACCT.SET 7401 BALANCE 30 PLAN basic THRESHOLD 20 REFILL ADD 12.345678 PAYMENT on");
	assert_non_null(strstr(err, "whole minor units"));
	/* 20.002 - a $0.005 local minute = 19.997: the top-up to 100 is 80.003, charged 80.01. */
	ok("ACCT.SET 7401 BALANCE 20.002 PLAN basic THRESHOLD 20 REFILL TOPUP 100 PAYMENT on");
	worker_start(&w, flags, NULL);
	redisReply *r = it_cmd(fx.e, "CDR 7401 12125550100 60 c7401-1");
	assert_string_equal(r->str, "0.005");
	freeReplyObject(r);
	WAIT_FOR(mails(7401, "receipt") == 1 && !refill_pending(7401), &w);
	r = it_cmd(fx.r, "HGET tollgate:sim:charges refill:7401:1");
	assert_true(strncmp(r->str, "80.01 tok_visa_4444 ", 20) == 0);
	freeReplyObject(r);
	assert_true(balance(7401) == 100007000); /* at least the level, never short of it */
	mail_read(7401, 1, "receipt", mail, sizeof(mail));
	expect_has(mail, "Amount charged:     \u20ac80.01\n");
	expect_has(mail, "New balance:        \u20ac100.007\n");
	assert_int_equal(worker_stop(&w), 0);

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
 * refill-timeout of 1 s, would republish the request during the pauses but
 * for the worker's lease: it republishes nothing.
 */
static void
test_soft_failure_succeeds_on_third_attempt(void **state)
{
	static const char *const engine[] = {"--refill-timeout", "1", NULL};
	static const char *const first[] = {"--consumer",     "w1", "--attempts", "3",
	                                    "--retry-period", "2s", NULL};
	static const char *const second[] = {"--consumer",     "w2", "--attempts", "3",
	                                     "--retry-period", "2s", NULL};
	struct worker w, w2;
	char mail[8192];

	(void)state;
	engine_start(engine);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_flaky intermittent:2");
	profile(7501, "gil@example.com", "card", "tok_flaky");
	ok("ACCT.SET 7501 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on");
	worker_start(&w, first, NULL);
	redisReply *r = it_cmd(fx.e, "CDR 7501 12025550100 1500 c7501-1");
	freeReplyObject(r);
	WAIT_FOR(worker_said(&w, "charge attempt 1 of 3: timeout; attempt 2 scheduled"), &w);
	assert_int_equal(worker_stop(&w), 0);
	/* On the schedule in Redis, acknowledged on the stream, still pending at the engine. */
	assert_int_equal(it_int_cmd(fx.r, "ZCARD " STREAM ":retry"), 1);
	assert_int_equal(it_int_cmd(fx.r, "XLEN " STREAM), 1);
	assert_true(refill_pending(7501));
	assert_int_equal(gateway_calls("refill:7501:1"), 1);

	worker_start(&w2, second, NULL);
	WAIT_FOR(mails(7501, "receipt") == 1 && !refill_pending(7501), &w2);
	assert_int_equal(gateway_calls("refill:7501:1"), 3);
	assert_int_equal(charges("refill:7501:1"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 1);
	assert_int_equal(mails(7501, "failure"), 0);
	assert_true(balance(7501) == 45 * U);
	mail_read(7501, 1, "receipt", mail, sizeof(mail));
	expect_has(mail, "Amount charged:     $25.00\n");
	assert_true(worker_said(&w2, "3 attempts), credited"));
	assert_true(worker_said(&w2, "charge attempt 2 of 3: timeout; attempt 3 scheduled"));
	assert_int_equal(it_int_cmd(fx.r, "ZCARD " STREAM ":retry"), 0);
	assert_int_equal(info("refills_landed"), 1);
	assert_int_equal(info("refills_leased"), 2);
	assert_int_equal(info("refills_republished"), 0);
	assert_int_equal(worker_stop(&w2), 0);
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
	struct worker w;
	char mail[8192];

	(void)state;
	engine_start(NULL);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_old expired");
	profile(7601, "hob@example.com", "card", "tok_old");
	ok("ACCT.SET 7601 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on");
	worker_start(&w, flags, NULL);
	redisReply *r = it_cmd(fx.e, "CDR 7601 12025550100 1500 c7601-1");
	freeReplyObject(r);
	WAIT_FOR(mails(7601, "failure") == 1 && !refill_pending(7601), &w);
	it_sleep_ms(500);
	assert_int_equal(gateway_calls("refill:7601:1"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 0);
	assert_int_equal(mails(7601, "failure"), 1);
	assert_int_equal(mails(7601, "receipt"), 0);
	mail_read(7601, 1, "failure", mail, sizeof(mail));
	expect_has(mail, "This is the only notification you will receive.");
	assert_int_equal(info("refills_failed"), 1);
	assert_true(balance(7601) == 20 * U);
	r = it_cmd(fx.e, "CALL.AUTH 7601 12025550100 c7601-2");
	assert_int_equal(r->type, REDIS_REPLY_INTEGER); /* still rating */
	freeReplyObject(r);
	assert_int_equal(worker_stop(&w), 0);
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
	struct worker w;
	char cmd[3 * IT_PATH_MAX];

	(void)state;
	engine_start(NULL);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_old expired");
	profile(7701, "ida@example.com", "card", "tok_old");
	ok("ACCT.SET 7701 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on");
	worker_start(&w, flags, NULL);
	redisReply *r = it_cmd(fx.e, "CDR 7701 12025550100 1500 c7701-1");
	freeReplyObject(r);
	WAIT_FOR(mails(7701, "failure") == 1 && !refill_pending(7701), &w);

	snprintf(cmd, sizeof(cmd),
	         "'%s' -p %u --redis 127.0.0.1:%u profile 7701 --email ida@example.com --method "
	         "card --token tok_new_5555 >'%s/tollctl.out' 2>&1",
	         getenv("TOLLCTL"), fx.d.port, fx.redis.port, fx.dir);
	assert_int_equal(system(cmd), 0);
	WAIT_FOR(mails(7701, "receipt") == 1 && !refill_pending(7701), &w);
	assert_int_equal(charges("refill:7701:2"), 1);
	r = it_cmd(fx.r, "HGET tollgate:sim:charges refill:7701:2");
	assert_true(strncmp(r->str, "25 tok_new_5555 ", 16) == 0);
	freeReplyObject(r);
	assert_int_equal(mails(7701, "failure"), 1);
	assert_true(balance(7701) == 45 * U);

	/* Above the threshold now: another update fires nothing; the next crossing will. */
	assert_int_equal(system(cmd), 0);
	it_sleep_ms(500);
	assert_int_equal(info("refills_fired"), 2);
	assert_int_equal(worker_stop(&w), 0);
}

/* ACCT.GET field of acct as an integer. */
static long long
acct_int(uint64_t acct, const char *field)
{
	char v[64];
	acct_field(acct, field, v, sizeof(v));
	return strtoll(v, NULL, 10);
}

static bool
field_is(uint64_t acct, const char *field, const char *want)
{
	char v[64];
	acct_field(acct, field, v, sizeof(v));
	return strcmp(v, want) == 0;
}

static void
expect_field(uint64_t acct, const char *field, const char *want)
{
	char v[64];
	acct_field(acct, field, v, sizeof(v));
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
	struct worker w;
	char word[32];

	(void)state;
	engine_start(engine);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_old expired tok_older expired");
	profile(7801, "jan@example.com", "card", "tok_old");
	ok("ACCT.SET 7801 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on");
	worker_start(&w, flags, NULL);
	redisReply *r = it_cmd(fx.e, "CDR 7801 12025550100 1500 c7801-1");
	freeReplyObject(r);
	WAIT_FOR(mails(7801, "failure") == 1 && !refill_pending(7801), &w);
	expect_field(7801, "state", "active");
	expect_field(7801, "suspended", "");
	assert_int_equal(acct_int(7801, "failed_refills"), 1);
	assert_int_equal(info("accounts_unpaid_suspended"), 0);

	profile(7801, "jan@example.com", "card", "tok_older");
	r = it_cmd(fx.e, "ACCT.REFILL.REARM 7801");
	assert_string_equal(r->str, "refill:7801:2");
	freeReplyObject(r);
	WAIT_FOR(mails(7801, "failure") == 2 && !refill_pending(7801), &w);
	uint64_t suspended_at = tg_mono_ms();
	expect_field(7801, "state", "suspended");
	expect_field(7801, "suspended", "payment");
	assert_int_equal(acct_int(7801, "failed_refills"), 2);
	long long since = acct_int(7801, "suspended_since");
	assert_true(since > 0 && since <= (long long)time(NULL));
	assert_int_equal(info("accounts_unpaid_suspended"), 1);
	error_word(word, sizeof(word), 7801, "c7801-2");
	assert_string_equal(word, "SUSPENDED");

	WAIT_FOR(field_is(7801, "state", "closed") && info("accounts_unpaid_closed") == 1, &w);
	expect_field(7801, "state", "closed");
	expect_field(7801, "suspended", "");
	assert_true(tg_mono_ms() - suspended_at >= 1000);
	error_word(word, sizeof(word), 7801, "c7801-3");
	assert_string_equal(word, "CLOSED");
	/* The outside world: two gateway calls, nothing charged, two failure mails, no receipt. */
	assert_int_equal(gateway_calls("refill:7801:1"), 1);
	assert_int_equal(gateway_calls("refill:7801:2"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 0);
	assert_int_equal(mails(7801, "failure"), 2);
	assert_int_equal(mails(7801, "receipt"), 0);
	assert_int_equal(info("refills_failed"), 2);
	/* A closed account is never re-armed, even by a new card. */
	r = it_cmd(fx.e, "ACCT.REFILL.REARM 7801");
	assert_int_equal(r->type, REDIS_REPLY_NIL);
	freeReplyObject(r);
	assert_int_equal(worker_stop(&w), 0);
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
	struct worker w;
	char cmd[3 * IT_PATH_MAX];

	(void)state;
	engine_start(engine);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_old expired");
	worker_start(&w, flags, NULL);
	for (uint64_t a = 7901; a <= 7904; a++) {
		profile(a, "kim@example.com", "card", "tok_old");
		ok("ACCT.SET %llu BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on",
		   (unsigned long long)a);
	}
	ok("ACCT.SET 7903 STATE suspended");
	for (uint64_t a = 7901; a <= 7904; a++) {
		redisReply *r = it_cmd(fx.e, "CDR %llu 12025550100 1500 c%llu-1",
		                       (unsigned long long)a, (unsigned long long)a);
		freeReplyObject(r);
	}
	WAIT_FOR(mails(7901, "failure") == 1 && mails(7902, "failure") == 1 &&
	             mails(7904, "failure") == 1 && !refill_pending(7901) &&
	             !refill_pending(7902) && !refill_pending(7904),
	         &w);
	for (uint64_t a = 7901; a <= 7904; a++)
		if (a != 7903)
			expect_field(a, "suspended", "payment");
	/* The operator's suspension fired nothing and is the operator's. */
	expect_field(7903, "suspended", "operator");
	assert_int_equal(mails(7903, "failure"), 0);
	assert_int_equal(gateway_calls("refill:7903:1"), 0);
	assert_int_equal(info("accounts_unpaid_suspended"), 3);

	/* 7901: the customer updates the card; the re-armed refill is charged and restores it. */
	snprintf(cmd, sizeof(cmd),
	         "'%s' -p %u --redis 127.0.0.1:%u profile 7901 --email kim@example.com --method "
	         "card --token tok_new_7901 >'%s/tollctl.out' 2>&1",
	         getenv("TOLLCTL"), fx.d.port, fx.redis.port, fx.dir);
	assert_int_equal(system(cmd), 0);
	WAIT_FOR(mails(7901, "receipt") == 1 && !refill_pending(7901), &w);
	assert_int_equal(charges("refill:7901:2"), 1);
	expect_field(7901, "state", "active");
	expect_field(7901, "suspended", "");
	assert_int_equal(acct_int(7901, "failed_refills"), 0);
	assert_int_equal(acct_int(7901, "suspended_since"), 0);
	assert_true(balance(7901) == 45 * U);

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
	assert_int_equal(acct_int(7902, "failed_refills"), 0);
	expect_field(7903, "state", "suspended");
	expect_field(7903, "suspended", "operator");
	expect_field(7904, "state", "suspended");
	expect_field(7904, "suspended", "operator");
	assert_int_equal(info("accounts_unpaid_restored"), 2);
	/* A closed account stays closed whatever is paid. */
	ok("ACCT.SET 7902 STATE closed");
	redisReply *r = it_cmd(fx.e, "ACCT.CREDIT 7902 10 pay-7902-2");
	freeReplyObject(r);
	expect_field(7902, "state", "closed");

	/* The outside world: one charge (7901's new card), one receipt, one failure mail each. */
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 1);
	assert_int_equal(mails(7902, "receipt") + mails(7903, "receipt") + mails(7904, "receipt"),
	                 0);
	for (uint64_t a = 7901; a <= 7904; a++)
		assert_int_equal(mails(a, "failure"), a == 7903 ? 0 : 1);
	assert_int_equal(worker_stop(&w), 0);
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
	struct worker w;

	(void)state;
	engine_start(NULL);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_slow timeout");
	profile(8001, "lee@example.com", "card", "tok_slow");
	ok("ACCT.SET 8001 BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on");
	worker_start(&w, flags, NULL);
	redisReply *r = it_cmd(fx.e, "CDR 8001 12025550100 1500 c8001-1");
	freeReplyObject(r);
	WAIT_FOR(worker_said(&w, "charge attempt 1 of 3: timeout; attempt 2 scheduled"), &w);
	ok("ACCT.SET 8001 STATE closed");
	assert_false(refill_pending(8001));
	WAIT_FOR(worker_said(&w, "not charged, no mail"), &w);
	WAIT_FOR(it_int_cmd(fx.r, "ZCARD " STREAM ":retry") == 0, &w);
	it_sleep_ms(1500); /* past the whole period: nothing else happens */
	assert_int_equal(gateway_calls("refill:8001:1"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HLEN tollgate:sim:charges"), 0);
	assert_int_equal(files("new", "refill.8001."), 0);
	assert_int_equal(files("tmp", ""), 0);
	assert_true(balance(8001) == 20 * U);
	expect_field(8001, "state", "closed");
	assert_int_equal(info("refills_void"), 1);
	assert_int_equal(it_int_cmd(fx.r, "HGET tollgate:refill:stats void"), 1);
	assert_int_equal(worker_stop(&w), 0);
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
	struct worker w;
	char port[16];
	const char *eflags[32];

	(void)state;
	engine_start(engine);
	it_run_cmd(fx.r, "HSET tollgate:sim:tokens tok_old expired");
	worker_start(&w, flags, NULL);
	for (uint64_t a = 8101; a <= 8103; a++) {
		profile(a, "max@example.com", "card", "tok_old");
		ok("ACCT.SET %llu BALANCE 20.5 PLAN basic THRESHOLD 20 REFILL ADD 25 PAYMENT on",
		   (unsigned long long)a);
	}
	ok("ACCT.SET 8103 STATE suspended");
	for (uint64_t a = 8101; a <= 8102; a++) {
		redisReply *r = it_cmd(fx.e, "CDR %llu 12025550100 1500 c%llu-1",
		                       (unsigned long long)a, (unsigned long long)a);
		freeReplyObject(r);
	}
	WAIT_FOR(mails(8101, "failure") == 1 && mails(8102, "failure") == 1 &&
	             !refill_pending(8101) && !refill_pending(8102),
	         &w);
	redisReply *r = it_cmd(fx.e, "ACCT.REFILL.REARM 8101");
	freeReplyObject(r);
	WAIT_FOR(mails(8101, "failure") == 2 && !refill_pending(8101), &w);
	assert_int_equal(worker_stop(&w), 0);
	long long since = acct_int(8101, "suspended_since");
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
		assert_int_equal(acct_int(8101, "failed_refills"), 2);
		assert_int_equal(acct_int(8101, "suspended_since"), since);
		expect_field(8102, "state", "active");
		assert_int_equal(acct_int(8102, "failed_refills"), 1);
		expect_field(8103, "state", "suspended");
		expect_field(8103, "suspended", "operator");
		assert_int_equal(acct_int(8103, "failed_refills"), 0);
	}
	/* One more failure of 8102 after the reboot suspends it: the count was kept. */
	worker_start(&w, flags, NULL);
	r = it_cmd(fx.e, "ACCT.REFILL.REARM 8102");
	assert_string_equal(r->str, "refill:8102:2");
	freeReplyObject(r);
	WAIT_FOR(mails(8102, "failure") == 2 && !refill_pending(8102), &w);
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
	assert_int_equal(mails(8101, "failure"), 2);
	assert_int_equal(mails(8101, "receipt") + mails(8102, "receipt"), 0);
	assert_int_equal(worker_stop(&w), 0);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_acct_set_does_not_refire, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_closed_or_suspended_never_charged, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_jammed_topup_refused_and_dead_letter_unjams, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_charges_are_whole_cents_in_the_currency, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_soft_failure_succeeds_on_third_attempt, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_hard_failure_ends_at_once_one_mail, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_updating_the_card_rearms, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failures_suspend_then_close, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_payment_restores_only_unpaid, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_closed_while_retry_scheduled, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_standing_survives_crash_and_reboot, setup,
	                                    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
