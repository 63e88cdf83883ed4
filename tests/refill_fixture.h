/*
 * refill_fixture.h - the refill tests' fixture (refill_fixture.c): one
 * redis-server, one tollgated, one maildir and the tollrefill workers a test
 * runs against them.  test_refill_e2e, test_refill_course and test_tollrefill
 * share it, the way liburing's test/helpers.h serves its tests; what the
 * engine answers is read with the probe of rcmd.h.  Each call fails the test
 * (cmocka) when something it needs does not work.
 */
#ifndef TG_TEST_REFILL_FIXTURE_H
#define TG_TEST_REFILL_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#include "harness.h"
#include "redis_harness.h"

/* The refill stream and its consumer group, as tollgated and tollrefill default them. */
#define RFX_STREAM "tollgate:refill"
#define RFX_GROUP  "refill"

struct rfx {
	char dir[IT_PATH_MAX];  /* the engine's data dir; the workers' logs */
	char mail[IT_PATH_MAX]; /* the workers' maildir */
	char csv[IT_PATH_MAX];  /* an accounts file, when the test writes one */
	struct tg_test_redis redis;
	struct it_daemon d;
	redisContext *r, *e; /* the test's Redis; tollgated */
	unsigned runs;       /* worker runs: names their logs */
};

/* A tollrefill process and its log (its stdout and stderr). */
struct rfx_worker {
	pid_t pid;
	char log[IT_PATH_MAX];
};

/*
 * A fresh fixture: the data dir with the maildir inside it, accounts (when
 * not NULL) written to accounts.csv (f->csv), a redis-server and f->r, the
 * consumer group made before anything is published (as in production) and
 * the simulator's declining token tok_declined.  Starts no engine.
 */
void rfx_setup(struct rfx *f, const char *accounts);
/* Close the connections, stop tollgated and Redis, remove the maildir and the data dir. */
void rfx_teardown(struct rfx *f);
/* The same as a cmocka teardown: *state is the fixture (the test's setup put it there). */
int rfx_teardown_test(void **state);
/* Remove a maildir: the files of its tmp, new and cur, those, then the directory. */
void rfx_maildir_remove(const char *dir);

/* Write acct's customer profile hash; a NULL field is left out. */
void rfx_profile(struct rfx *f, uint64_t acct, const char *email, const char *method,
                 const char *token, const char *name);
/* That acct has a refill in flight ("1") and its request id is request ("" for none). */
void rfx_expect_request(struct rfx *f, uint64_t acct, const char *request);
/* Whether acct has a refill request in flight. */
bool rfx_refill_pending(struct rfx *f, uint64_t acct);

/* Files in the maildir's sub (new, cur, tmp) whose name starts with prefix. */
unsigned rfx_files(const struct rfx *f, const char *sub, const char *prefix);
/* Mails for acct in new/ of kind ("receipt", "failure"). */
unsigned rfx_mails(const struct rfx *f, uint64_t acct, const char *kind);
/* The mail new/refill.<acct>.<n>.<kind> into buf. */
void rfx_mail_read(const struct rfx *f, uint64_t acct, unsigned n, const char *kind, char *buf,
                   size_t cap);
/* Calls the payment simulator received for one request id. */
long long rfx_gateway_calls(struct rfx *f, const char *request);
/* A whole file into buf (at most cap - 1 bytes, NUL-terminated); its length, or -1 when it cannot
 * be opened. */
long rfx_slurp(const char *path, char *buf, size_t cap);
/* Fail unless needle is in text. */
void rfx_expect_has(const char *text, const char *needle);

/*
 * Start tollrefill ($TOLLREFILL) with the fixture's addresses, its maildir
 * (unless extra names --sendmail) and a short back-off, the extra flags
 * (NULL-terminated, may be NULL) and, when env is not NULL, that
 * "NAME=value" added to its environment.
 */
void rfx_worker_start(struct rfx *f, struct rfx_worker *w, const char *const *extra,
                      const char *env);
/* The worker's log so far into buf ("" when there is none). */
void rfx_worker_log(const struct rfx_worker *w, char *buf, size_t cap);
/* Whether the worker's log says text. */
int rfx_worker_said(const struct rfx_worker *w, const char *text);
/* Print the worker's log on stderr. */
void rfx_worker_dump(const struct rfx_worker *w);
/*
 * Wait for the worker to exit (SIGKILL after timeout_ms); its exit status,
 * 128+sig if killed.  A sanitizer report in its log fails the test.
 */
int rfx_worker_wait(struct rfx_worker *w, uint64_t timeout_ms);
/* SIGTERM, then rfx_worker_wait for 10 s. */
int rfx_worker_stop(struct rfx_worker *w);
/* Whether a wait that started at t0 has run past wait_ms; if so, w's log (w may be NULL) is shown.
 */
bool rfx_waited_too_long(uint64_t t0, uint64_t wait_ms, const struct rfx_worker *w);

/* Poll cond (an expression) every 10 ms until true, or fail after wait_ms. */
#define RFX_WAIT_FOR(cond, w, wait_ms)                                                             \
	do {                                                                                       \
		uint64_t t0_ = tg_mono_ms();                                                       \
		while (!(cond)) {                                                                  \
			if (rfx_waited_too_long(t0_, (wait_ms), (w)))                              \
				fail_msg("waited %d ms for: %s", (int)(wait_ms), #cond);           \
			it_sleep_ms(10);                                                           \
		}                                                                                  \
	} while (0)

#endif
