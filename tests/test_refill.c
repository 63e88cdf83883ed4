/*
 * test_refill.c - auto-refill requests from threshold crossing to Redis
 * stream, against a real redis-server (tests/redis_harness.h).
 *
 * In process: a table, an engine and the publisher, with debits made the
 * way every engine operation makes them (a money step, then tg_note_move).
 * Checked: the stream entry's fields, exactly one entry per crossing under
 * many threads and a tiny ring, Redis stopped or paused (workers go on,
 * requests wait in shared memory and come out once, with their ids),
 * republication after refill-timeout, the credit and the failure that clear
 * the flag, and a fresh publisher taking over what an earlier engine left.
 * Last, the same through the real tollgated over a socket.  Exit 77 (skip)
 * when there is no redis-server.
 */
#include <errno.h>
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

#include <cmocka.h>

#include "harness.h"
#include "redis_harness.h"
#include "tg_engine.h"
#include "tg_refill.h"

#define U       ((tg_money_t)TG_MONEY_SCALE)
#define WORKERS 4
#define STREAM  "tollgate:refill"

static struct tg_test_redis redis;
static char shm[64], rates_path[128];
static unsigned tables;
static struct tg_table table;
static struct tg_engine engine;
static redisContext *rc; /* the test's own connection, to read the stream */

static const char rates_csv[] =
    "plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum\n"
    "p,1,national,0.6,0,60,60,0\n";

/* ---- helpers ---- */

static struct tg_id
ID(const char *s) {
	return (struct tg_id){s, strlen(s)};
}

static void
open_table(bool fresh)
{
	char err[256];
	struct tg_diag diag;

	if (fresh) {
		snprintf(shm, sizeof(shm), "/tg-test-refill-%d-%u", (int)getpid(), tables++);
		tg_table_unlink(shm);
	}
	struct tg_table_cfg tcfg = {.name = shm, .capacity = 4000, .mode = 0600, .reuse = true};
	assert_int_equal(tg_table_open(&table, &tcfg, err, sizeof(err)), 0);
	struct tg_engine_cfg ecfg = {.max_grant = 3600,
	                             .call_grace = 120,
	                             .calls_max = 64,
	                             .ids_max = 100000,
	                             .ids_window = 3600,
	                             .workers = WORKERS};
	assert_int_equal(tg_engine_init(&engine, &table, &ecfg), 0);
	tg_diag_init(&diag);
	assert_int_equal(tg_rates_reload(&engine.rates, rates_path, &diag), 0);
}

/* The engine goes away as a crash would leave it: the segment stays. */
static void
close_table(void)
{
	tg_refill_stop(&engine);
	tg_engine_fini(&engine);
	tg_table_close(&table);
}

static int
setup(void **state)
{
	(void)state;
	rc = tg_test_redis_connect(&redis);
	if (rc == NULL)
		return -1;
	redisReply *r = redisCommand(rc, "FLUSHALL");
	if (r == NULL)
		return -1;
	freeReplyObject(r);
	open_table(true);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	close_table();
	tg_table_unlink(shm);
	if (rc != NULL)
		redisFree(rc);
	rc = NULL;
	return 0;
}

static void
publisher(const char *host, uint32_t timeout_s, uint32_t ring)
{
	char err[256];
	struct tg_refill_cfg cfg = {.host = host,
	                            .port = redis.port,
	                            .stream = STREAM,
	                            .timeout_s = timeout_s,
	                            .ring = ring};
	int r = tg_refill_start(&engine, &cfg, err, sizeof(err));
	if (r != 0)
		fail_msg("tg_refill_start: %s", err);
}

/* Account id: plan p, auto-refill on with a card on file. */
static struct tg_acct *
account(uint64_t id, tg_money_t balance, tg_money_t threshold, uint8_t mode, tg_money_t amount)
{
	struct tg_acct *a;
	struct tg_move m;
	bool created;

	assert_int_equal(tg_table_insert(&table, id, &a, &created), TG_OK);
	assert_int_equal(tg_acct_set_balance(a, balance, &m), TG_OK);
	struct tg_acct_settings s = {.plan =
	                                 (uint32_t)tg_plan_registry_id(&table.plans, "p", 1, false),
	                             .threshold = threshold,
	                             .refill_amount = amount,
	                             .refill_mode = mode,
	                             .flags = TG_ACCT_PAYMENT};
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	assert_false(m.refill_fired);
	return a;
}

/* A debit as every engine operation makes one: the money step, then tg_note_move. */
static struct tg_move
debit_on(unsigned widx, uint64_t id, tg_money_t amount)
{
	struct tg_worker *w = tg_engine_worker(&engine, widx);
	struct tg_acct *a = tg_table_find(&table, id);
	struct tg_move m = {0};

	tg_worker_enter(w);
	if (a != NULL && tg_acct_debit(a, amount, &m) == TG_OK)
		tg_note_move(w, a, &m);
	tg_worker_exit(w);
	return m;
}

static struct tg_move
debit(uint64_t id, tg_money_t amount)
{
	return debit_on(0, id, amount);
}

static enum tg_result
credit(uint64_t id, tg_money_t amount, const char *txid)
{
	struct tg_worker *w = tg_engine_worker(&engine, WORKERS);
	tg_money_t bal;

	tg_worker_enter(w);
	enum tg_result r = tg_credit(w, id, amount, ID(txid), &bal);
	tg_worker_exit(w);
	return r;
}

static bool
inflight(uint64_t id)
{
	struct tg_acct_view v;
	tg_acct_read(tg_table_find(&table, id), &v);
	return v.refill_inflight;
}

static uint64_t
counter(enum tg_counter c)
{
	return tg_engine_counter(&engine, c);
}

/*
 * Counter c once it reaches at least n, or its value after timeout_ms: the
 * publisher counts an entry after Redis answered its XADD, so a reader of
 * the stream may see the entry a moment before the counter moves.
 */
static uint64_t
wait_counter(enum tg_counter c, uint64_t n, unsigned timeout_ms)
{
	uint64_t deadline = tg_mono_ms() + timeout_ms;
	while (counter(c) < n && tg_mono_ms() < deadline)
		it_sleep_ms(5);
	return counter(c);
}

static long long
stream_len(void)
{
	redisReply *r = redisCommand(rc, "XLEN %s", STREAM);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	long long n = r->integer;
	freeReplyObject(r);
	return n;
}

/* Poll until the stream holds at least n entries, or timeout_ms.  The length last seen. */
static long long
wait_len(long long n, unsigned timeout_ms)
{
	uint64_t deadline = tg_mono_ms() + timeout_ms;
	long long len;

	while ((len = stream_len()) < n && tg_mono_ms() < deadline)
		it_sleep_ms(5);
	return len;
}

struct entry {
	char id[64], account[24], balance[32], threshold[32], mode[16], amount[32];
	unsigned long fired, attempt;
};

/* Every entry of the stream, oldest first; the caller frees. */
static struct entry *
read_stream(size_t *n)
{
	redisReply *r = redisCommand(rc, "XRANGE %s - +", STREAM);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	struct entry *e = calloc(r->elements + 1, sizeof(*e));
	assert_non_null(e);
	for (size_t i = 0; i < r->elements; i++) {
		redisReply *f = r->element[i]->element[1];
		assert_int_equal(f->elements, 16); /* exactly the eight fields of docs/REFILL.md */
		for (size_t k = 0; k + 1 < f->elements; k += 2) {
			const char *key = f->element[k]->str, *val = f->element[k + 1]->str;
			char *dst = NULL;
			size_t cap = 0;
			if (strcmp(key, "id") == 0)
				dst = e[i].id, cap = sizeof(e[i].id);
			else if (strcmp(key, "account") == 0)
				dst = e[i].account, cap = sizeof(e[i].account);
			else if (strcmp(key, "balance") == 0)
				dst = e[i].balance, cap = sizeof(e[i].balance);
			else if (strcmp(key, "threshold") == 0)
				dst = e[i].threshold, cap = sizeof(e[i].threshold);
			else if (strcmp(key, "mode") == 0)
				dst = e[i].mode, cap = sizeof(e[i].mode);
			else if (strcmp(key, "amount") == 0)
				dst = e[i].amount, cap = sizeof(e[i].amount);
			else if (strcmp(key, "fired") == 0)
				e[i].fired = strtoul(val, NULL, 10);
			else if (strcmp(key, "attempt") == 0)
				e[i].attempt = strtoul(val, NULL, 10);
			else
				fail_msg("unexpected field %s", key);
			if (dst != NULL)
				snprintf(dst, cap, "%s", val);
		}
	}
	*n = r->elements;
	freeReplyObject(r);
	return e;
}

/* The one entry with request id rid (fails when there is not exactly one). */
static struct entry
entry_of(const char *rid)
{
	size_t n, found = 0;
	struct entry *e = read_stream(&n), out = {0};
	for (size_t i = 0; i < n; i++)
		if (strcmp(e[i].id, rid) == 0) {
			out = e[i];
			found++;
		}
	free(e);
	if (found != 1)
		fail_msg("%zu entries with id %s, expected one", found, rid);
	return out;
}

/*
 * Every entry is a distinct (account, request) and each account in
 * [first, first + n) has exactly the requests 1..rounds.
 */
static void
assert_once_each(uint64_t first, uint64_t n, uint32_t rounds)
{
	size_t len;
	struct entry *e = read_stream(&len);
	uint8_t *seen = calloc(n * rounds, 1);

	assert_non_null(seen);
	assert_int_equal(len, n * rounds);
	for (size_t i = 0; i < len; i++) {
		unsigned long long acct;
		unsigned seq;
		assert_int_equal(sscanf(e[i].id, "refill:%llu:%u", &acct, &seq), 2);
		assert_true(acct >= first && acct < first + n && seq >= 1 && seq <= rounds);
		uint8_t *s = &seen[(acct - first) * rounds + seq - 1];
		if (*s)
			fail_msg("%s is on the stream twice", e[i].id);
		*s = 1;
		assert_int_equal(e[i].attempt, 1);
	}
	free(seen);
	free(e);
}

/* ---- tests ---- */

static void
test_crossing_fields_add_and_topup(void **state)
{
	(void)state;
	publisher("127.0.0.1", 600, 4096);
	account(1, 12 * U, 10 * U, TG_REFILL_ADD, 50 * U);
	account(2, 12 * U, 10 * U, TG_REFILL_TOPUP, 100 * U);
	uint32_t t0 = (uint32_t)time(NULL);

	assert_false(debit(1, 1500000).refill_fired); /* 10.5: still above */
	struct tg_move m = debit(1, 500000);          /* 10: at the threshold, fires */
	assert_true(m.refill_fired);
	assert_int_equal(m.refill_seq, 1);
	assert_false(debit(1, U).refill_fired);      /* 9: in flight already */
	assert_true(debit(2, 4500000).refill_fired); /* 7.5 */

	assert_int_equal(wait_len(2, 5000), 2);
	struct entry a = entry_of("refill:1:1");
	assert_string_equal(a.account, "1");
	assert_string_equal(a.balance, "10");
	assert_string_equal(a.threshold, "10");
	assert_string_equal(a.mode, "add");
	assert_string_equal(a.amount, "50");
	assert_in_range(a.fired, t0, (uint32_t)time(NULL));
	assert_int_equal(a.attempt, 1);
	struct entry b = entry_of("refill:2:1");
	assert_string_equal(b.account, "2");
	assert_string_equal(b.balance, "7.5");
	assert_string_equal(b.mode, "topup");
	assert_string_equal(b.amount, "92.5"); /* back to 100 from 7.5 */
	assert_int_equal(b.attempt, 1);

	/* Once each: nothing more comes. */
	it_sleep_ms(200);
	assert_int_equal(stream_len(), 2);
	assert_int_equal(counter(TG_C_refills_published), 2);
	assert_int_equal(counter(TG_C_refills_fired), 2);
	assert_int_equal(tg_refill_pending(&engine), 0);
	struct tg_refill_rec *rec = tg_table_refill(&table, tg_table_find(&table, 1));
	assert_int_equal(TG_RTAG_STATE(rec->tag), TG_RREC_PUBLISHED);
	assert_int_equal(TG_RTAG_SEQ(rec->tag), 1);
	assert_int_equal(TG_RTAG_ATTEMPT(rec->tag), 1);
}

/* ---- many threads ---- */

#define T_ACCTS 600
#define T_FIRST 1000

struct racer {
	unsigned idx;
	pthread_t th;
};

/* Each thread takes 1.00 from every account 20 times, in its own order. */
static void *
race(void *arg)
{
	struct racer *rc_ = arg;
	for (unsigned round = 0; round < 20; round++)
		for (unsigned k = 0; k < T_ACCTS; k++) {
			unsigned j = (k * 7 + rc_->idx * 131 + round * 17) % T_ACCTS;
			debit_on(rc_->idx, T_FIRST + j, U);
		}
	return NULL;
}

static void
run_racers(void)
{
	struct racer r[WORKERS];
	for (unsigned i = 0; i < WORKERS; i++) {
		r[i].idx = i;
		assert_int_equal(pthread_create(&r[i].th, NULL, race, &r[i]), 0);
	}
	for (unsigned i = 0; i < WORKERS; i++)
		pthread_join(r[i].th, NULL);
}

static void
test_threads_one_entry_per_crossing(void **state)
{
	char rid[48];
	(void)state;

	/* A tiny ring: most triggers overflow and are found by the scan instead. */
	publisher("127.0.0.1", 600, 8);
	for (unsigned k = 0; k < T_ACCTS; k++)
		account(T_FIRST + k, 100 * U, 50 * U, TG_REFILL_ADD, 100 * U);

	run_racers(); /* 100 - 80 = 20: each account crosses 50 once */
	assert_int_equal(counter(TG_C_refills_fired), T_ACCTS);
	assert_int_equal(wait_len(T_ACCTS, 10000), T_ACCTS);
	it_sleep_ms(200);
	assert_once_each(T_FIRST, T_ACCTS, 1);

	/* The refills land (20 + 100 = 120), and the next crossing is request 2. */
	for (unsigned k = 0; k < T_ACCTS; k++) {
		tg_refill_id(T_FIRST + k, 1, rid);
		assert_int_equal(credit(T_FIRST + k, 100 * U, rid), TG_OK);
		assert_false(inflight(T_FIRST + k));
	}
	assert_int_equal(counter(TG_C_refills_landed), T_ACCTS);
	run_racers(); /* 120 - 80 = 40 */
	assert_int_equal(counter(TG_C_refills_fired), 2 * T_ACCTS);
	assert_int_equal(wait_len(2 * T_ACCTS, 10000), 2 * T_ACCTS);
	it_sleep_ms(200);
	assert_once_each(T_FIRST, T_ACCTS, 2);
	assert_int_equal(counter(TG_C_refills_published), 2 * T_ACCTS);
	assert_int_equal(tg_refill_pending(&engine), 0);
	printf("# %llu of %u triggers overflowed the 8-entry rings\n",
	       (unsigned long long)counter(TG_C_refills_ring_full), 2 * T_ACCTS);
}

/* ---- Redis down, Redis slow ---- */

#define D_ACCTS 1000
#define D_FIRST 5000

static void
test_redis_down_requests_wait_then_publish_once(void **state)
{
	(void)state;
	publisher("127.0.0.1", 600, 64);
	for (unsigned k = 0; k < D_ACCTS; k++)
		account(D_FIRST + k, 20 * U, 10 * U, TG_REFILL_ADD, 50 * U);
	redisFree(rc);
	rc = NULL;
	tg_test_redis_stop(&redis);

	/* Workers go on: 200000 debits, 1000 crossings among them, nothing waits. */
	uint64_t t0 = tg_mono_ms();
	for (unsigned round = 0; round < 200; round++)
		for (unsigned k = 0; k < D_ACCTS; k++)
			debit_on(k % WORKERS, D_FIRST + k, round < 11 ? U : 1);
	uint64_t took = tg_mono_ms() - t0;
	printf("# 200000 debits with Redis down: %llu ms\n", (unsigned long long)took);
	assert_int_equal(counter(TG_C_refills_fired), D_ACCTS);
	assert_int_equal(tg_refill_pending(&engine), D_ACCTS);
	assert_true(counter(TG_C_refills_ring_full) > 0);
	assert_int_equal(counter(TG_C_refills_published), 0);

	/* Back on the same port: everything comes out, each request once, with its id. */
	assert_int_equal(tg_test_redis_start(&redis), 0);
	rc = tg_test_redis_connect(&redis);
	assert_non_null(rc);
	assert_int_equal(wait_len(D_ACCTS, 15000), D_ACCTS);
	it_sleep_ms(300); /* the stale triggers left in the rings must not publish again */
	assert_once_each(D_FIRST, D_ACCTS, 1);
	assert_int_equal(tg_refill_pending(&engine), 0);
	assert_int_equal(counter(TG_C_refills_published), D_ACCTS);
}

static void
test_redis_paused_workers_do_not_wait(void **state)
{
	(void)state;
	publisher("127.0.0.1", 600, 4096);
	for (unsigned k = 0; k < D_ACCTS; k++)
		account(D_FIRST + k, 20 * U, 10 * U, TG_REFILL_ADD, 50 * U);
	assert_true(debit(D_FIRST, 11 * U).refill_fired);
	assert_int_equal(wait_len(1, 5000), 1);

	/* Redis stops answering writes for 1.5 s: the publisher's XADDs hang... */
	redisReply *r = redisCommand(rc, "CLIENT PAUSE 1500 WRITE");
	assert_non_null(r);
	freeReplyObject(r);
	uint64_t t0 = tg_mono_ms();
	for (unsigned k = 1; k < D_ACCTS; k++)
		assert_true(debit_on(k % WORKERS, D_FIRST + k, 11 * U).refill_fired);
	for (unsigned round = 0; round < 100; round++)
		for (unsigned k = 0; k < D_ACCTS; k++)
			debit_on(k % WORKERS, D_FIRST + k, 1);
	uint64_t took = tg_mono_ms() - t0;
	/* ...and the workers did all of that without waiting for it. */
	printf("# 101000 debits while Redis was paused: %llu ms\n", (unsigned long long)took);
	assert_true(took < 1500);
	assert_true(stream_len() <= 1 + 256); /* at most the one pipeline caught in the pause */
	assert_int_equal(wait_len(D_ACCTS, 15000), D_ACCTS);
	it_sleep_ms(200);
	assert_once_each(D_FIRST, D_ACCTS, 1);
	assert_int_equal(tg_refill_pending(&engine), 0);
}

/*
 * Redis stopped (SIGSTOP) for 3.5 s while 20 accounts cross: the XADDs sent
 * into the stall time out (2 s) and go back to pending, but Redis still holds
 * them in its socket buffer and runs them when it resumes.  The publisher's
 * retry must find them there: 20 entries for 20 requests, not 40.
 */
static void
test_redis_stopped_each_request_once(void **state)
{
	(void)state;
	publisher("127.0.0.1", 600, 4096);
	account(7000, 20 * U, 10 * U, TG_REFILL_ADD, 50 * U);
	for (unsigned k = 1; k <= 20; k++)
		account(7000 + k, 20 * U, 10 * U, TG_REFILL_ADD, 50 * U);
	assert_true(debit(7000, 11 * U).refill_fired); /* the publisher is connected */
	assert_int_equal(wait_len(1, 5000), 1);

	assert_int_equal(kill(redis.pid, SIGSTOP), 0);
	for (unsigned k = 1; k <= 20; k++)
		assert_true(debit_on(k % WORKERS, 7000 + k, 11 * U).refill_fired);
	it_sleep_ms(3500);
	assert_int_equal(kill(redis.pid, SIGCONT), 0);

	assert_int_equal(wait_len(21, 15000), 21);
	uint64_t deadline = tg_mono_ms() + 15000;
	while (tg_refill_pending(&engine) != 0 && tg_mono_ms() < deadline)
		it_sleep_ms(10);
	assert_int_equal(tg_refill_pending(&engine), 0);
	it_sleep_ms(500); /* a duplicate would come out by now */
	printf("# stalled: %llu publish failures, %llu found already on the stream\n",
	       (unsigned long long)counter(TG_C_refills_publish_failures),
	       (unsigned long long)counter(TG_C_refills_already_on_stream));
	assert_once_each(7000, 21, 1);
	/* The stall was felt (how many attempts failed depends on the machine's pace). */
	assert_true(counter(TG_C_refills_publish_failures) >= 1);
	assert_true(counter(TG_C_refills_already_on_stream) >= 1); /* and ridden out */
	assert_int_equal(counter(TG_C_refills_published), 21);
}

/* ---- republish, credit, failure ---- */

static void
test_republish_after_timeout_keeps_id(void **state)
{
	(void)state;
	publisher("127.0.0.1", 1, 4096);
	account(3, 20 * U, 10 * U, TG_REFILL_ADD, 50 * U);
	assert_true(debit(3, 15 * U).refill_fired);
	assert_int_equal(wait_len(1, 5000), 1);

	/* Nobody answers: the same request again, attempt 2, then 3. */
	assert_true(wait_len(3, 8000) >= 3);
	size_t n;
	struct entry *e = read_stream(&n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(e[i].id, "refill:3:1");
		assert_string_equal(e[i].balance, "5");
		assert_string_equal(e[i].amount, "50");
		assert_int_equal(e[i].attempt, i + 1);
		assert_int_equal(e[i].fired, e[0].fired);
	}
	free(e);
	assert_int_equal(counter(TG_C_refills_published), 1);
	assert_true(wait_counter(TG_C_refills_republished, 2, 2000) >= 2);
	assert_int_equal(tg_refill_pending(&engine), 0);

	/* The credit lands: no more republication. */
	assert_int_equal(credit(3, 50 * U, "refill:3:1"), TG_OK);
	assert_false(inflight(3));
	long long len = stream_len();
	it_sleep_ms(2000);
	assert_true(stream_len() <= len + 1); /* one XADD may have been on its way */
	len = stream_len();
	it_sleep_ms(1500);
	assert_int_equal(stream_len(), len);
}

static void
test_credit_clears_and_next_crossing_is_request_2(void **state)
{
	(void)state;
	publisher("127.0.0.1", 600, 4096);
	account(7, 20 * U, 10 * U, TG_REFILL_ADD, 50 * U);
	assert_true(debit(7, 12 * U).refill_fired); /* 8 */
	assert_int_equal(wait_len(1, 5000), 1);
	entry_of("refill:7:1");

	/* Another txid does not clear it; the request id does, once. */
	assert_int_equal(credit(7, 5 * U, "payment-1"), TG_OK); /* 13 */
	assert_true(inflight(7));
	assert_int_equal(credit(7, 50 * U, "refill:7:1"), TG_OK); /* 63 */
	assert_false(inflight(7));
	assert_int_equal(counter(TG_C_refills_landed), 1);
	assert_int_equal(credit(7, 50 * U, "refill:7:1"), TG_OK); /* a replay: nothing */
	assert_int_equal(counter(TG_C_refills_landed), 1);

	assert_false(debit(7, 50 * U).refill_fired); /* 13 */
	struct tg_move m = debit(7, 4 * U);          /* 9: fires request 2 */
	assert_true(m.refill_fired);
	assert_int_equal(m.refill_seq, 2);
	assert_int_equal(wait_len(2, 5000), 2);
	struct entry e = entry_of("refill:7:2");
	assert_string_equal(e.balance, "9");
	assert_int_equal(e.attempt, 1);
	it_sleep_ms(100);
	assert_int_equal(stream_len(), 2);
}

static void
test_failure_report_clears(void **state)
{
	struct tg_worker *w = tg_engine_worker(&engine, WORKERS);
	(void)state;

	publisher("127.0.0.1", 600, 4096);
	account(8, 20 * U, 10 * U, TG_REFILL_TOPUP, 30 * U);
	assert_true(debit(8, 11 * U).refill_fired); /* 9 */
	assert_int_equal(wait_len(1, 5000), 1);
	assert_string_equal(entry_of("refill:8:1").amount, "21");

	tg_worker_enter(w);
	assert_int_equal(tg_refill_failed(w, 8, ID("refill:8:2"), true), TG_OK); /* not in flight */
	assert_true(inflight(8));
	assert_int_equal(tg_refill_failed(w, 8, ID("refill:8:1"), true), TG_OK);
	assert_int_equal(tg_refill_failed(w, 8, ID("refill:8:1"), true), TG_OK); /* a retry */
	tg_worker_exit(w);
	assert_false(inflight(8));
	assert_int_equal(counter(TG_C_refills_failed), 1);

	/* The account keeps rating; a payment lifts it and the next crossing fires again. */
	assert_int_equal(credit(8, 10 * U, "cash-1"), TG_OK); /* 19 */
	assert_true(debit(8, 12 * U).refill_fired);           /* 7 */
	assert_int_equal(wait_len(2, 5000), 2);
	struct entry e = entry_of("refill:8:2");
	assert_string_equal(e.balance, "7");
	assert_string_equal(e.amount, "23");
}

/* ---- restart: a fresh publisher takes over what the segment holds ---- */

static void
test_restart_publishes_with_the_same_id(void **state)
{
	(void)state;

	/* A first engine with publishing off: request 20:1 is written and waits. */
	publisher("none", 600, 4096);
	account(20, 20 * U, 10 * U, TG_REFILL_ADD, 50 * U);
	account(21, 20 * U, 10 * U, TG_REFILL_TOPUP, 40 * U);
	account(22, 20 * U, 10 * U, TG_REFILL_ADD, 25 * U);
	account(23, 20 * U, 10 * U, TG_REFILL_ADD, 60 * U);
	assert_true(debit(20, 10500000).refill_fired);   /* 9.5 */
	assert_true(debit(20, U).refill_fired == false); /* 8.5 now; the request said 9.5 */
	assert_true(debit(22, 11 * U).refill_fired);     /* 9, published later */
	assert_true(debit(23, 11 * U).refill_fired);     /* 9, caught mid-pipeline */
	assert_int_equal(tg_refill_pending(&engine), 3);
	assert_int_equal(counter(TG_C_refills_ring_full), 0);
	/* 21 fires, but the engine dies before its record is written. */
	struct tg_move m;
	assert_int_equal(tg_acct_debit(tg_table_find(&table, 21), 12 * U, &m), TG_OK);
	assert_true(m.refill_fired); /* 8 */
	it_sleep_ms(100);
	assert_int_equal(stream_len(), 0); /* redis-host none: nothing published */
	/* 22:1 was published long ago and never answered; 23:1 was in a pipeline. */
	struct tg_refill_rec *r22 = tg_table_refill(&table, tg_table_find(&table, 22));
	struct tg_refill_rec *r23 = tg_table_refill(&table, tg_table_find(&table, 23));
	r22->tag = TG_RTAG(1, 1, TG_REFILL_ADD, TG_RREC_PUBLISHED);
	r22->published = (uint32_t)time(NULL) - 700;
	r23->tag = TG_RTAG(1, 0, TG_REFILL_ADD, TG_RREC_QUEUED);
	close_table();

	/* A new engine on the surviving segment, Redis up: all of it comes out. */
	open_table(false);
	publisher("127.0.0.1", 600, 4096);
	assert_int_equal(wait_len(4, 5000), 4);
	struct entry e = entry_of("refill:20:1");
	assert_string_equal(e.balance, "9.5");
	assert_string_equal(e.amount, "50");
	assert_int_equal(e.attempt, 1);
	e = entry_of("refill:21:1"); /* rebuilt from the account as it is */
	assert_string_equal(e.balance, "8");
	assert_string_equal(e.mode, "topup");
	assert_string_equal(e.amount, "32");
	e = entry_of("refill:22:1");
	assert_int_equal(e.attempt, 2);
	e = entry_of("refill:23:1");
	assert_int_equal(e.attempt, 1);
	it_sleep_ms(200);
	assert_int_equal(stream_len(), 4);
	assert_int_equal(tg_refill_pending(&engine), 0);
	assert_int_equal(counter(TG_C_refills_published), 3);
	assert_int_equal(counter(TG_C_refills_republished), 1);

	/* The ids hold across the restart: the credit of 20:1 clears it. */
	assert_int_equal(credit(20, 50 * U, "refill:20:1"), TG_OK);
	assert_false(inflight(20));
}

static void
test_start_refuses_bad_settings(void **state)
{
	char err[256];
	(void)state;
	struct tg_refill_cfg cfg = {.host = "127.0.0.1",
	                            .port = redis.port,
	                            .stream = STREAM,
	                            .timeout_s = 600,
	                            .ring = 1000};
	assert_int_equal(tg_refill_start(&engine, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "power of two"));
	cfg.ring = 1024;
	cfg.timeout_s = 0;
	assert_int_equal(tg_refill_start(&engine, &cfg, err, sizeof(err)), -EINVAL);
	cfg.timeout_s = 600;
	cfg.port = 70000;
	assert_int_equal(tg_refill_start(&engine, &cfg, err, sizeof(err)), -EINVAL);
	assert_null(engine.refill.fn);
}

/* ---- the real daemon ---- */

static redisReply *
cmd(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	assert_non_null(r);
	return r;
}

static void
test_daemon_publishes_and_stops_cleanly(void **state)
{
	char dir[IT_PATH_MAX], port[16];
	struct it_daemon d;
	(void)state;

	if (getenv("TOLLGATED") == NULL)
		skip();
	snprintf(port, sizeof(port), "%u", redis.port);
	assert_int_equal(it_dir_make(dir, sizeof(dir)), 0);
	const char *const flags[] = {
	    "--redis-host", "127.0.0.1", "--redis-port", port, "--refill-timeout", "600", NULL};
	assert_int_equal(it_start(&d, dir, flags), 0);
	redisContext *c = it_connect(&d);
	assert_non_null(c);

	/* The demo plans: basic, 0.005 a minute to 1212. */
	redisReply *r = cmd(c, "ACCT.SET 5 BALANCE 10.004 PLAN basic THRESHOLD 10 REFILL ADD 50 "
	                       "PAYMENT on");
	assert_int_equal(r->type, REDIS_REPLY_STATUS);
	freeReplyObject(r);
	r = cmd(c, "CDR 5 12125550100 60 cdr-1");
	assert_string_equal(r->str, "0.005");
	freeReplyObject(r);
	assert_int_equal(wait_len(1, 5000), 1);
	struct entry e = entry_of("refill:5:1");
	assert_string_equal(e.balance, "9.999");
	assert_string_equal(e.amount, "50");
	assert_string_equal(e.mode, "add");

	/*
	 * The entry is on the stream before the publisher has read XADD's reply
	 * and counted it: under load INFO can come in between, so wait for it.
	 */
	for (int tries = 0;; tries++) {
		r = cmd(c, "INFO refills");
		if (strstr(r->str, "refills_published:1\r\n") != NULL || tries == 100)
			break;
		freeReplyObject(r);
		it_sleep_ms(50);
	}
	assert_non_null(strstr(r->str, "refills_fired:1\r\n"));
	assert_non_null(strstr(r->str, "refills_published:1\r\n"));
	assert_non_null(strstr(r->str, "refills_pending:0\r\n"));
	freeReplyObject(r);
	r = cmd(c, "ACCT.CREDIT 5 50 refill:5:1");
	assert_string_equal(r->str, "59.999");
	freeReplyObject(r);
	r = cmd(c, "INFO refills");
	assert_non_null(strstr(r->str, "refills_landed:1\r\n"));
	freeReplyObject(r);

	redisFree(c);
	assert_int_equal(it_stop(&d), 0); /* SIGTERM: the publisher stops with the rest */
	assert_true(it_log_has(&d, "refill publisher: redis 127.0.0.1:"));
	it_dir_remove(dir);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	int r = tg_test_redis_start(&redis);
	if (r == -ENOENT) {
		printf("# no redis-server: skipped\n");
		return 77;
	}
	if (r != 0) {
		fprintf(stderr, "cannot start redis-server: %s\n", strerror(-r));
		return 1;
	}
	snprintf(rates_path, sizeof(rates_path), "/tmp/tg-test-refill-%d.csv", (int)getpid());
	FILE *f = fopen(rates_path, "w");
	if (f == NULL)
		return 1;
	fputs(rates_csv, f);
	fclose(f);

	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_crossing_fields_add_and_topup, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_threads_one_entry_per_crossing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_redis_down_requests_wait_then_publish_once, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_redis_paused_workers_do_not_wait, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_redis_stopped_each_request_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_republish_after_timeout_keeps_id, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_credit_clears_and_next_crossing_is_request_2,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failure_report_clears, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restart_publishes_with_the_same_id, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_start_refuses_bad_settings, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_daemon_publishes_and_stops_cleanly, setup,
	                                    teardown),
	};
	r = cmocka_run_group_tests(tests, NULL, NULL);
	unlink(rates_path);
	tg_test_redis_stop(&redis);
	return r;
}
