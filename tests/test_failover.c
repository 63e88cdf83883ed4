/*
 * test_failover.c - automatic failover under load, with stock Redis
 * Sentinel (docs/HA.md, "How long a failover takes").
 *
 * Three redis-sentinel processes watch a primary and two replicas, all in
 * durable mode with min-replicas-to-write 1, requirepass, a replica-role
 * user for replication and an admin user for the sentinels; a real
 * redis-server receives the refill stream.  One client finds the primary as
 * redis-py's Sentinel support does (SENTINEL GET-MASTER-ADDR-BY-NAME, then
 * ROLE) and sends a pipelined stream of unique CDRs and ACCT.CREDITs, each
 * retried with its id until it is acknowledged; a refill worker in the same
 * loop reads the stream and credits each request once.  The primary is
 * killed (SIGKILL) FAILOVER_KILLS times (12 by default, 4 under
 * sanitizers); Sentinel promotes a replica; the killed node is started
 * again from its config file the way its init system would (below) and
 * rejoins as a replica.
 *
 * At the end, on every node once it holds the primary's last LSN: each
 * balance is its opening plus the acknowledged credits minus the
 * acknowledged charges, exactly; every acknowledged operation replayed
 * with its id answers its first reply and moves nothing; every refill
 * request id on the stream is refill:<acct>:<n>, n = 1, 2, ... without a
 * gap, each credited once.  How long each failover took (from the kill to
 * the first write acknowledged by the new primary) is printed.
 *
 * The restart of a killed node: its unit's start step asks the sentinels
 * where the primary is and, when a majority names another node, writes
 * that node into the config file's replica-of line before tollgated starts
 * with -c.  A node that was killed as the primary thus never runs as a
 * second primary beside the promoted one (docs/HA.md says why).
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rcmd.h"
#include "redis_harness.h"
#include "sentinel_harness.h"
#include "testrand.h"
#include "tg_clock.h"

/* basic, prefix 1212: $0.005 a minute, 60/60 (tools/demo/rates.csv). */
#define DEST                "12125551234"
#define NODES               3
#define SENTINELS           3
#define ACCOUNTS            8
#define REFILL_ACCOUNTS     4 /* accounts 1..4: threshold 9, REFILL TOPUP 20, PAYMENT on */
#define REFILL_SEQ_MAX      65536
#define PIPE                64
#define PASS                "fo-default-pass"
#define REPL_PASS           "fo-repl-pass"
#define SENT_PASS           "fo-sentinel-pass"
#define DOWN_AFTER_MS       1000
#define FAILOVER_TIMEOUT_MS 3000

enum op_kind { OP_CDR, OP_CREDIT };

struct op {
	char id[40];
	uint32_t acct;
	uint8_t kind;
	bool acked;
	uint32_t dur;      /* OP_CDR */
	tg_money_t amount; /* OP_CREDIT; OP_CDR: the charge acknowledged */
	char reply[32];    /* the first reply */
};

struct node {
	struct it_daemon d;
	uint16_t port;
	char conf[IT_PATH_MAX];
	bool up;
};

struct fx {
	char dir[IT_PATH_MAX];
	char users[IT_PATH_MAX];
	struct node n[NODES];
	struct it_sentinel s[SENTINELS];
	bool sentinels;
	struct tg_test_redis redis;
	redisContext *rc; /* to redis-server: the refill stream */

	/* the client */
	redisContext *c;
	int c_node; /* the node c is connected to */
	struct op *op;
	size_t ops, ops_cap;
	size_t *pend; /* indices of unacknowledged operations, oldest first */
	size_t npend, pend_cap;
	bool generate;
	uint64_t next_id;
	uint64_t rng;
	unsigned retried; /* operations sent more than once */
	unsigned reconnects;
	char fatal[256]; /* the first reply no retry can fix */

	/* the refill worker */
	char last_entry[64];
	uint64_t refill_poll_at;
	uint32_t refill_max[ACCOUNTS + 1];
	uint16_t *refill_seen[ACCOUNTS + 1]; /* entries per request number */
	unsigned entries;

	/* the failover in measurement */
	int killed;
	uint64_t kill_at, first_ack_at;
};

static struct fx F;

static const tg_money_t opening[ACCOUNTS + 1] = {
    0, 20000000, 20000000, 20000000, 20000000, 1000000000, 1000000000, 1000000000, 1000000000};

static uint64_t
now_ms(void)
{
	return tg_mono_ms();
}

/* ---- nodes ---- */

/*
 * The node's config file, as its unit would install it, with replica-of
 * set to the primary it must follow (NULL: none, a primary).
 */
static void
conf_write(int i, const char *replica_of)
{
	char text[1024];
	int n = snprintf(text, sizeof(text),
	                 "# tollgate node %d (test_failover)\n"
	                 "requirepass %s\n"
	                 "users %s\n"
	                 "primary-user repl\n"
	                 "primary-password %s\n"
	                 "min-replicas-to-write 1\n"
	                 "min-replicas-timeout 2000\n",
	                 i, PASS, F.users, REPL_PASS);
	if (replica_of != NULL)
		snprintf(text + n, sizeof(text) - (size_t)n, "replica-of %s\n", replica_of);
	char name[32];
	snprintf(name, sizeof(name), "node-%d.conf", i);
	assert_int_equal(it_file_write(F.dir, name, text, F.n[i].conf, sizeof(F.n[i].conf)), 0);
}

/* Start (or start again) node i from its config file, on its port once it has one. */
static void
node_start(int i)
{
	char port[8], rport[8];
	snprintf(port, sizeof(port), "%u", F.n[i].port);
	snprintf(rport, sizeof(rport), "%u", F.redis.port);
	const char *flags[] = {"--config",  F.n[i].conf,    "--port", port, "--redis-host",
	                       "127.0.0.1", "--redis-port", rport,    NULL};
	int rc = F.n[i].d.shm[0] == '\0' ? it_start(&F.n[i].d, F.dir, flags)
	                                 : it_restart(&F.n[i].d, flags, 0);
	assert_int_equal(rc, 0);
	F.n[i].port = F.n[i].d.port;
	F.n[i].up = true;
}

static int
node_of_port(uint16_t port)
{
	for (int i = 0; i < NODES; i++)
		if (F.n[i].port == port)
			return i;
	return -1;
}

/* An authenticated connection to node i with short timeouts, or NULL. */
static redisContext *
node_connect(int i, unsigned timeout_ms)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", F.n[i].port, tv);
	if (c == NULL || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	redisReply *r = redisCommand(c, "AUTH %s", PASS);
	bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
	if (r)
		freeReplyObject(r);
	if (!ok) {
		redisFree(c);
		return NULL;
	}
	return c;
}

/* The value of name in node i's INFO all into out; false when it cannot be had. */
static bool
node_info(int i, const char *name, char *out, size_t cap)
{
	redisContext *c = node_connect(i, 2000);
	bool found = false;
	if (c == NULL)
		return false;
	redisReply *r = redisCommand(c, "INFO all");
	if (r != NULL && r->type == REDIS_REPLY_STRING) {
		char key[64];
		snprintf(key, sizeof(key), "\n%s:", name);
		const char *p = strstr(r->str, key);
		if (p != NULL) {
			p += strlen(key);
			size_t n = strcspn(p, "\r\n");
			snprintf(out, cap, "%.*s", (int)n, p);
			found = true;
		}
	}
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return found;
}

static long long
node_lsn(int i)
{
	char v[32];
	return node_info(i, "journal_lsn", v, sizeof(v)) ? atoll(v) : -1;
}

/* ---- Sentinel ---- */

/* The primary's port as sentinel k names it, or 0. */
static uint16_t
sentinel_primary(int k)
{
	struct timeval tv = {0, 500000};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", F.s[k].port, tv);
	uint16_t port = 0;
	if (c == NULL || c->err) {
		if (c)
			redisFree(c);
		return 0;
	}
	redisSetTimeout(c, tv);
	redisReply *r = redisCommand(c, "SENTINEL GET-MASTER-ADDR-BY-NAME mymaster");
	if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[1]->type == REDIS_REPLY_STRING)
		port = (uint16_t)atoi(r->element[1]->str);
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return port;
}

/* The port most sentinels name as the primary, or 0 when no two agree. */
static uint16_t
majority_primary(void)
{
	uint16_t p[SENTINELS];
	for (int k = 0; k < SENTINELS; k++)
		p[k] = sentinel_primary(k);
	for (int k = 0; k < SENTINELS; k++) {
		int agree = 0;
		for (int j = 0; j < SENTINELS; j++)
			agree += p[k] != 0 && p[j] == p[k];
		if (agree * 2 > SENTINELS)
			return p[k];
	}
	return 0;
}

/*
 * What the killed node's unit does before it starts tollgated: ask the
 * sentinels where the primary is; when a majority names another node,
 * follow it (replica-of in the config file), else start as the file says.
 */
static void
node_unit_start(int i)
{
	uint16_t p = 0;
	for (int t = 0; t < 100 && ((p = majority_primary()) == 0 || p == F.n[i].port); t++)
		it_sleep_ms(100);
	if (p != 0 && p != F.n[i].port) {
		char of[32];
		snprintf(of, sizeof(of), "127.0.0.1 %u", p);
		conf_write(i, of);
	}
	node_start(i);
}

/* ---- the client ---- */

static void
client_drop(void)
{
	if (F.c != NULL)
		redisFree(F.c);
	F.c = NULL;
	F.c_node = -1;
}

/* Find the primary as redis-py's Sentinel does: ask a sentinel, then check ROLE.  */
static bool
client_connect(void)
{
	uint16_t port = 0;
	for (int k = 0; k < SENTINELS && port == 0; k++)
		port = sentinel_primary(k);
	int i = node_of_port(port);
	if (i < 0)
		return false;
	redisContext *c = node_connect(i, 4000);
	if (c == NULL)
		return false;
	redisReply *r = redisCommand(c, "ROLE");
	bool master = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
	              strcmp(r->element[0]->str, "master") == 0;
	if (r)
		freeReplyObject(r);
	if (!master) {
		redisFree(c);
		return false;
	}
	F.c = c;
	F.c_node = i;
	F.reconnects++;
	return true;
}

static size_t
op_add(enum op_kind kind, uint32_t acct, uint32_t dur, tg_money_t amount, const char *id)
{
	if (F.ops == F.ops_cap) {
		F.ops_cap = F.ops_cap ? F.ops_cap * 2 : 65536;
		F.op = realloc(F.op, F.ops_cap * sizeof(*F.op));
		assert_non_null(F.op);
	}
	struct op *o = &F.op[F.ops];
	memset(o, 0, sizeof(*o));
	o->kind = (uint8_t)kind;
	o->acct = acct;
	o->dur = dur;
	o->amount = amount;
	snprintf(o->id, sizeof(o->id), "%s", id);
	if (F.npend == F.pend_cap) {
		F.pend_cap = F.pend_cap ? F.pend_cap * 2 : 4096;
		F.pend = realloc(F.pend, F.pend_cap * sizeof(*F.pend));
		assert_non_null(F.pend);
	}
	F.pend[F.npend++] = F.ops;
	return F.ops++;
}

/* A new CDR (nine in ten) or ACCT.CREDIT on a random account. */
static void
op_new(void)
{
	char id[40];
	uint32_t acct = 1 + (uint32_t)(it_splitmix(&F.rng) % ACCOUNTS);
	uint64_t n = ++F.next_id;
	/* The refill accounts are paid by their refills alone: their balances cross again and
	 * again. */
	if (acct <= REFILL_ACCOUNTS || it_splitmix(&F.rng) % 10 != 0) {
		snprintf(id, sizeof(id), "fo-cdr-%llu", (unsigned long long)n);
		op_add(OP_CDR, acct, 60 + (uint32_t)(it_splitmix(&F.rng) % 1200), 0, id);
	} else {
		snprintf(id, sizeof(id), "fo-pay-%llu", (unsigned long long)n);
		op_add(OP_CREDIT, acct, 0, 250000 * (tg_money_t)(1 + it_splitmix(&F.rng) % 4), id);
	}
}

static void
money_text(tg_money_t m, char *out, size_t cap)
{
	snprintf(out, cap, "%lld.%06lld", (long long)(m / 1000000), (long long)(m % 1000000));
}

static void
op_append(redisContext *c, const struct op *o)
{
	char a[32];
	if (o->kind == OP_CDR) {
		redisAppendCommand(c, "CDR %u %s %u %s", o->acct, DEST, o->dur, o->id);
	} else {
		money_text(o->amount, a, sizeof(a));
		redisAppendCommand(c, "ACCT.CREDIT %u %s %s", o->acct, a, o->id);
	}
}

/* Whether an error is one a client retries after finding the primary again. */
static bool
retryable(const char *err)
{
	static const char *const kinds[] = {"READONLY ", "NOREPLICAS ", "LOADING ", "TRYAGAIN "};
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
		if (strncmp(err, kinds[k], strlen(kinds[k])) == 0)
			return true;
	return false;
}

/* The stream: poll it, credit each request not seen before (once). */
static void
refill_poll(void)
{
	if (F.rc == NULL)
		F.rc = tg_test_redis_connect(&F.redis);
	assert_non_null(F.rc);
	for (;;) {
		redisReply *r =
		    redisCommand(F.rc, "XRANGE tollgate:refill %s%s + COUNT 1000",
		                 F.last_entry[0] ? "(" : "", F.last_entry[0] ? F.last_entry : "-");
		assert_non_null(r);
		assert_int_equal(r->type, REDIS_REPLY_ARRAY);
		size_t got = r->elements;
		for (size_t e = 0; e < r->elements; e++) {
			redisReply *ent = r->element[e];
			snprintf(F.last_entry, sizeof(F.last_entry), "%s", ent->element[0]->str);
			redisReply *fl = ent->element[1];
			const char *id = NULL, *acct = NULL, *cents = NULL;
			for (size_t f = 0; f + 1 < fl->elements; f += 2) {
				if (strcmp(fl->element[f]->str, "id") == 0)
					id = fl->element[f + 1]->str;
				else if (strcmp(fl->element[f]->str, "account") == 0)
					acct = fl->element[f + 1]->str;
				else if (strcmp(fl->element[f]->str, "amount") == 0)
					cents = fl->element[f + 1]->str;
			}
			assert_non_null(id);
			assert_non_null(acct);
			assert_non_null(cents);
			assert_true(atoll(cents) > 0);
			unsigned a, n;
			char tail;
			assert_int_equal(sscanf(id, "refill:%u:%u%c", &a, &n, &tail), 2);
			assert_int_equal(a, (unsigned)atoi(acct));
			assert_true(a >= 1 && a <= REFILL_ACCOUNTS);
			assert_true(n >= 1 && n < REFILL_SEQ_MAX);
			F.entries++;
			if (F.refill_seen[a][n]++ == 0)
				op_add(OP_CREDIT, a, 0, (tg_money_t)atoll(cents) * 10000, id);
			if (n > F.refill_max[a])
				F.refill_max[a] = n;
		}
		freeReplyObject(r);
		if (got < 1000)
			break;
	}
}

/*
 * Run the client (and the refill worker) for ms milliseconds: batches of up
 * to PIPE operations, the oldest unacknowledged first; a lost connection,
 * READONLY or NOREPLICAS make it find the primary again and send the same
 * operations again.
 */
static void
pump(unsigned ms)
{
	uint64_t end = now_ms() + ms;
	while (now_ms() < end && F.fatal[0] == '\0') {
		if (now_ms() >= F.refill_poll_at) {
			refill_poll();
			F.refill_poll_at = now_ms() + 100;
		}
		while (F.generate && F.npend < PIPE)
			op_new();
		if (F.npend == 0) {
			it_sleep_ms(5);
			continue;
		}
		if (F.c == NULL && !client_connect()) {
			it_sleep_ms(20);
			continue;
		}
		size_t n = F.npend < PIPE ? F.npend : PIPE;
		for (size_t k = 0; k < n; k++)
			op_append(F.c, &F.op[F.pend[k]]);
		bool again = false, lost = false;
		size_t kept = 0;
		for (size_t k = 0; k < n; k++) {
			struct op *o = &F.op[F.pend[k]];
			redisReply *r = NULL;
			if (!lost && redisGetReply(F.c, (void **)&r) != REDIS_OK)
				lost = true;
			if (lost || r == NULL) {
				F.pend[kept++] = F.pend[k];
				continue;
			}
			if (r->type == REDIS_REPLY_ERROR) {
				if (!retryable(r->str) && F.fatal[0] == '\0')
					snprintf(F.fatal, sizeof(F.fatal), "%s %s: %s",
					         o->kind == OP_CDR ? "CDR" : "ACCT.CREDIT", o->id,
					         r->str);
				again = true;
				F.pend[kept++] = F.pend[k];
			} else if (r->type == REDIS_REPLY_STRING) {
				o->acked = true;
				snprintf(o->reply, sizeof(o->reply), "%s", r->str);
				if (o->kind == OP_CDR)
					o->amount = it_money(r->str);
				if (F.kill_at != 0 && F.first_ack_at == 0 && F.c_node != F.killed)
					F.first_ack_at = now_ms();
			} else {
				snprintf(F.fatal, sizeof(F.fatal), "%s: reply of type %d", o->id,
				         r->type);
			}
			freeReplyObject(r);
		}
		for (size_t k = n; k < F.npend; k++)
			F.pend[kept++] = F.pend[k];
		F.retried += (unsigned)(kept - (F.npend - n));
		F.npend = kept;
		if (lost || again) {
			client_drop();
			it_sleep_ms(lost ? 20 : 50);
		}
	}
}

/* ---- rounds ---- */

/* The node that is the primary now: the sentinels' majority, confirmed by ROLE. */
static int
primary_now(void)
{
	int i = node_of_port(majority_primary());
	char role[16];
	if (i < 0 || !node_info(i, "role", role, sizeof(role)) || strcmp(role, "master") != 0)
		return -1;
	return i;
}

/* Whether node i follows node p with its link up. */
static bool
follows(int i, int p)
{
	char v[64];
	return node_info(i, "role", v, sizeof(v)) && strcmp(v, "slave") == 0 &&
	       node_info(i, "master_port", v, sizeof(v)) && atoi(v) == F.n[p].port &&
	       node_info(i, "master_link_status", v, sizeof(v)) && strcmp(v, "up") == 0;
}

/* Pump until the cluster is whole: a primary, two replicas streaming, sentinels agree. */
static int
settle(unsigned max_ms)
{
	uint64_t end = now_ms() + max_ms;
	while (now_ms() < end) {
		pump(200);
		int p = primary_now();
		if (p < 0)
			continue;
		bool all = true;
		for (int i = 0; i < NODES; i++)
			all &= i == p || follows(i, p);
		if (all && it_sentinels_see_replicas(F.s, SENTINELS, "mymaster", 2))
			return p;
	}
	return -1;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static unsigned
kills_wanted(void)
{
	const char *k = getenv("FAILOVER_KILLS");
	if (k != NULL && *k)
		return (unsigned)atoi(k);
	const char *san = getenv("TG_SANITIZED");
	return san != NULL && *san && strcmp(san, "none") != 0 ? 4 : 12;
}

/* Wait until every node's journal ends at the primary's LSN. */
static void
all_caught_up(int p)
{
	long long want = -1;
	bool same = false;
	for (int t = 0; t < 600 && !same; t++) {
		want = node_lsn(p);
		same = want > 0;
		for (int i = 0; i < NODES; i++)
			same &= node_lsn(i) == want;
		if (!same)
			it_sleep_ms(50);
	}
	if (!same)
		for (int i = 0; i < NODES; i++)
			fprintf(stderr, "node %d: journal_lsn %lld (primary %d: %lld)\n", i,
			        node_lsn(i), p, want);
	assert_true(same);
}

/*
 * With FAILOVER_KEEP, every operation in DIR/ops.txt for comparison with
 * the nodes' journals (tollctl journal-check --records): id, account,
 * kind, acknowledged, amount and first reply.
 */
static void
ops_keep(void)
{
	if (getenv("FAILOVER_KEEP") == NULL)
		return;
	char path[IT_PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/ops.txt", F.dir);
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return;
	for (size_t i = 0; i < F.ops; i++) {
		const struct op *o = &F.op[i];
		fprintf(f, "%s %u %s %d %lld %s\n", o->id, o->acct,
		        o->kind == OP_CDR ? "cdr" : "credit", o->acked, (long long)o->amount,
		        o->reply);
	}
	fclose(f);
}

/* Each node's balances: opening + acknowledged credits - acknowledged charges. */
static void
check_balances(const tg_money_t *want)
{
	for (int i = 0; i < NODES; i++) {
		redisContext *c = node_connect(i, 5000);
		assert_non_null(c);
		for (uint32_t a = 1; a <= ACCOUNTS; a++) {
			tg_money_t b = it_acct_money(c, a, "balance");
			if (b != want[a])
				fprintf(stderr, "node %d account %u: balance %lld, expected %lld\n",
				        i, a, (long long)b, (long long)want[a]);
			assert_int_equal(b, want[a]);
		}
		redisFree(c);
	}
}

static void
test_sentinel_failover_under_load(void **state)
{
	(void)state;
	unsigned kills = kills_wanted();
	uint64_t took[256];
	unsigned rounds = 0;
	assert_true(kills <= 256);
	F.killed = -1;
	F.c_node = -1;
	F.rng = 0x5eed0f41u;
	for (int a = 1; a <= ACCOUNTS; a++) {
		F.refill_seen[a] = calloc(REFILL_SEQ_MAX, sizeof(uint16_t));
		assert_non_null(F.refill_seen[a]);
	}

	assert_int_equal(it_dir_make(F.dir, sizeof(F.dir)), 0);
	int rc = tg_test_redis_start(&F.redis);
	if (rc == -ENOENT)
		skip();
	assert_int_equal(rc, 0);
	assert_int_equal(it_file_write(F.dir, "users",
	                               "sentinel admin " SENT_PASS "\nrepl replica " REPL_PASS "\n",
	                               F.users, sizeof(F.users)),
	                 0);
	assert_int_equal(chmod(F.users, 0600), 0);

	/* Node 0 the primary, 1 and 2 its replicas; the accounts once both follow. */
	conf_write(0, NULL);
	node_start(0);
	char of[32];
	snprintf(of, sizeof(of), "127.0.0.1 %u", F.n[0].port);
	for (int i = 1; i < NODES; i++) {
		conf_write(i, of);
		node_start(i);
	}
	redisContext *c = node_connect(0, 10000);
	assert_non_null(c);
	/* The primary takes no change until a replica streams: the first waits for it. */
	for (uint32_t a = 1; a <= ACCOUNTS; a++) {
		char bal[32], cmd[160];
		money_text(opening[a], bal, sizeof(bal));
		it_pathf(cmd, sizeof(cmd), "ACCT.SET %u BALANCE %s PLAN basic%s", a, bal,
		         a <= REFILL_ACCOUNTS ? " THRESHOLD 9 REFILL TOPUP 20 PAYMENT on" : "");
		it_first_change(c, cmd);
	}
	redisFree(c);

	struct it_sentinel_cfg cfg = {.master_port = F.n[0].port,
	                              .quorum = 2,
	                              .down_after_ms = DOWN_AFTER_MS,
	                              .failover_timeout = FAILOVER_TIMEOUT_MS,
	                              .auth_user = "sentinel",
	                              .auth_pass = SENT_PASS};
	assert_int_equal(it_sentinels_start(F.s, SENTINELS, F.dir, &cfg), 0);
	F.sentinels = true;

	F.generate = true;
	int p = settle(30000);
	assert_true(p >= 0);
	uint64_t last_kill = 0;
	for (unsigned k = 0; k < kills; k++) {
		/* Sentinel starts no new failover of a master within 2 x failover-timeout. */
		while (now_ms() < last_kill + 2 * FAILOVER_TIMEOUT_MS + 200)
			pump(100);
		pump(300);
		assert_string_equal(F.fatal, "");
		F.killed = p;
		F.first_ack_at = 0;
		F.kill_at = last_kill = now_ms();
		assert_int_equal(it_kill(&F.n[p].d), 0);
		F.n[p].up = false;
		while (F.first_ack_at == 0 && now_ms() < F.kill_at + 60000 && F.fatal[0] == '\0')
			pump(50);
		if (F.first_ack_at == 0)
			for (int s = 0; s < SENTINELS; s++)
				it_sentinel_dump(&F.s[s]);
		assert_string_equal(F.fatal, "");
		assert_true(F.first_ack_at != 0);
		took[rounds++] = F.first_ack_at - F.kill_at;
		printf("failover %u: node %d killed, node %d primary, first write acknowledged "
		       "after %llu ms\n",
		       k + 1, p, F.c_node, (unsigned long long)(F.first_ack_at - F.kill_at));
		fflush(stdout);
		F.kill_at = 0;
		node_unit_start(p);
		p = settle(60000);
		if (p < 0)
			for (int s = 0; s < SENTINELS; s++)
				it_sentinel_dump(&F.s[s]);
		assert_true(p >= 0);
	}

	/* Drain: every operation acknowledged, every refill request credited. */
	F.generate = false;
	for (int quiet = 0, t = 0; quiet < 3 && t < 300; t++) {
		unsigned before = F.entries;
		pump(200);
		refill_poll();
		quiet = F.npend == 0 && F.entries == before ? quiet + 1 : 0;
	}
	assert_string_equal(F.fatal, "");
	assert_int_equal(F.npend, 0);
	p = primary_now();
	assert_true(p >= 0);
	all_caught_up(p);

	tg_money_t want[ACCOUNTS + 1];
	size_t cdrs = 0, credits = 0;
	for (int a = 0; a <= ACCOUNTS; a++)
		want[a] = opening[a];
	for (size_t i = 0; i < F.ops; i++) {
		const struct op *o = &F.op[i];
		assert_true(o->acked);
		want[o->acct] += o->kind == OP_CDR ? -o->amount : o->amount;
		cdrs += o->kind == OP_CDR;
		credits += o->kind == OP_CREDIT;
	}
	ops_keep();
	check_balances(want);

	/* Refill ids: refill:<acct>:1..n, none missing, each credited once (the op above). */
	unsigned requests = 0;
	for (int a = 1; a <= REFILL_ACCOUNTS; a++) {
		for (uint32_t n = 1; n <= F.refill_max[a]; n++) {
			if (F.refill_seen[a][n] == 0)
				fprintf(stderr, "refill:%d:%u missing from the stream\n", a, n);
			assert_true(F.refill_seen[a][n] > 0);
		}
		requests += F.refill_max[a];
		/* Nothing in flight beyond the last id on the stream. */
		for (int i = 0; i < NODES; i++) {
			redisContext *nc = node_connect(i, 5000);
			char req[64], last[64];
			it_acct_field(nc, (uint64_t)a, "refill_request", req, sizeof(req));
			snprintf(last, sizeof(last), "refill:%d:%u", a, F.refill_max[a]);
			assert_true(req[0] == '\0' || strcmp(req, last) == 0);
			redisFree(nc);
		}
	}
	assert_true(requests > 0);

	/* Every acknowledged operation again, with its id: its first reply, nothing moved. */
	c = node_connect(p, 10000);
	assert_non_null(c);
	for (size_t i = 0; i < F.ops; i += PIPE) {
		size_t n = F.ops - i < PIPE ? F.ops - i : PIPE;
		for (size_t k = 0; k < n; k++)
			op_append(c, &F.op[i + k]);
		for (size_t k = 0; k < n; k++) {
			redisReply *r = NULL;
			assert_int_equal(redisGetReply(c, (void **)&r), REDIS_OK);
			assert_int_equal(r->type, REDIS_REPLY_STRING);
			if (strcmp(r->str, F.op[i + k].reply) != 0)
				fprintf(stderr, "%s replayed: %s, first reply %s\n", F.op[i + k].id,
				        r->str, F.op[i + k].reply);
			assert_string_equal(r->str, F.op[i + k].reply);
			freeReplyObject(r);
		}
	}
	redisFree(c);
	all_caught_up(p);
	check_balances(want);

	qsort(took, rounds, sizeof(took[0]), cmp_u64);
	printf("failovers: %u; from the kill to the first acknowledged write: min %llu ms, "
	       "median %llu ms, max %llu ms\n",
	       rounds, (unsigned long long)(rounds ? took[0] : 0),
	       (unsigned long long)(rounds ? took[rounds / 2] : 0),
	       (unsigned long long)(rounds ? took[rounds - 1] : 0));
	printf("operations acknowledged: %zu CDRs, %zu credits (%u refill requests, %u stream "
	       "entries); sent again after an error: %u; connections to a primary: %u\n",
	       cdrs, credits, requests, F.entries, F.retried, F.reconnects);
}

static int
teardown(void **state)
{
	(void)state;
	bool clean = true;
	client_drop();
	if (F.rc)
		redisFree(F.rc);
	if (F.sentinels)
		it_sentinels_stop(F.s, SENTINELS);
	for (int i = 0; i < NODES; i++)
		if (F.n[i].d.pid > 0)
			clean &= it_stop(&F.n[i].d) != -2;
	tg_test_redis_stop(&F.redis);
	if (F.dir[0] && getenv("FAILOVER_KEEP") != NULL)
		fprintf(stderr, "kept: %s\n", F.dir);
	else if (F.dir[0])
		it_dir_remove(F.dir);
	for (int a = 0; a <= ACCOUNTS; a++)
		free(F.refill_seen[a]);
	free(F.op);
	free(F.pend);
	memset(&F, 0, sizeof(F));
	return clean ? 0 : -1;
}

int
main(void)
{
	if (!it_sentinel_present()) {
		fprintf(stderr, "redis-sentinel not found: skipping\n");
		return 77;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_sentinel_failover_under_load, teardown),
	};
	return cmocka_run_group_tests_name("failover", tests, NULL, NULL);
}
