/*
 * test_crash.c - kill -9 torture: acknowledged means on disk, exactly once.
 *
 * What it proves (docs/JOURNAL.md, "Durability" in the brief): in durable
 * mode a reply leaves tollgated only once its change is on disk, and a
 * restart, with the shared-memory segment surviving (a crash) or removed (a
 * reboot), rebuilds the balances, the id window and the calls in progress, so
 * that a client that retries whatever was not acknowledged gets each
 * operation applied exactly once:
 *
 *   - for every account, opening + acknowledged credits - acknowledged
 *     charges (CDR and CALL.END, each id once) == the balance, exactly, with
 *     nothing reserved once every call has ended;
 *   - every acknowledged operation, sent again with its id, answers its first
 *     reply (a CDR's or END's charge, a credit's balance after) and moves no
 *     money; a CALL.AUTH of an ended call reserves nothing;
 *   - every charge is the plan's price for the duration (RATE);
 *   - an account whose balance crossed its auto-refill threshold has exactly
 *     one request, refill:<acct>:1, in flight and on the stream (published
 *     again with the same id after a restart is fine, a second request or a
 *     lost one is not); an account that never crossed has none.
 *
 * How: a private redis-server takes the refill stream; tollgated runs with
 * --durability durable, 2 workers and a 1 s snapshot interval on a rate file
 * of its own, and 200 accounts (a quarter with auto-refill ADD at a $10
 * threshold, taking only debits so that "crossed" is simply "ended at or
 * below the threshold").  Two client threads, each on one connection,
 * pipeline batches of 1 to 32 requests: CDRs, ACCT.CREDITs and CALL.AUTH /
 * CALL.END pairs with unique ids, calls held open for a few batches so that
 * kills land on calls in progress.  A batch cut short by a dead connection
 * leaves its unanswered requests at the head of the queue, and they are
 * sent again, same id and arguments, on the next engine.  After a
 * reconnection a quarter of the open calls are also authorized again and
 * must get their first grant (only a quarter: re-authorizing a call the
 * engine lost would re-create it and hide the loss from its END).
 * Meanwhile the main thread kills tollgated with SIGKILL after 30-400 ms of
 * traffic (now and then 1-30 ms, or 1.1-2.5 s so that snapshots are taken
 * and killed too) and restarts it, removing the segment first for about
 * half of the kills.  At the end the clients drain (every request answered,
 * every call ended) and the checks above run on the live engine, again after
 * one more kill, and again after one more kill with the segment removed.
 *
 * Everything random comes from one seed, printed first.  Replay a failure
 * with the same operations and kill schedule (the timing of a kill against
 * the traffic is the machine's):
 *
 *	TG_CRASH_SEED=<seed> meson test -C build crash -v
 *
 * TG_CRASH_KILLS (default 50) sets the number of kills; 0 runs 2 s of
 * traffic and checks the live engine only (the client and the checks on
 * their own).  The default takes about 35 s here.  The long mode (about
 * 22 minutes here: restarts slow down as the id window grows):
 *
 *	TG_CRASH_KILLS=1000 meson test -C build crash -v -t 0
 *
 * TG_CRASH_REBOOT sets the percentage of kills that remove the segment
 * (default 50; 0: crashes only; 100: reboots only).  TG_CRASH_DURABILITY
 * (default durable) is there to see the test bite: with relaxed (up to
 * journal-flush-ms of acknowledged work may be lost, by design) or off it
 * must fail, naming the lost and the doubly applied operations.
 * TG_CRASH_KEEP=1 leaves the test's directory behind: every run's log
 * (tollgated-1.<run>.log) and the data directory.
 *
 * A violation names the seed, the operation (its command and id), the
 * engine run it was first sent to and the run that acknowledged it (run k
 * started after kill k, with the segment kept or removed), and what was
 * expected against what came back.  The summary counts the requests that
 * were sent again after a kill and answered from the id window: those the
 * dead engine had applied and not answered, the case this test is about.
 * Money is micro-units (tg_money_t), never floats.
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rcmd.h"
#include "redis_harness.h"
#include "testrand.h"
#include "tg_money.h"

#define FMT(a, b) __attribute__((format(printf, a, b)))

#define U          1000000LL /* micro-units per currency unit */
#define STREAM     "tg:crash:refill"
#define FIRST_ACCT 7100001ULL
#define ACCTS      200
#define CLIENTS    2
#define BATCH_MAX  32
#define OPEN_MAX   48  /* calls held open per client */
#define REAUTH_MAX 8   /* open calls authorized again after a reconnection */
#define DUR_MAX    300 /* seconds of a CDR or a call */
/*
 * At most one batch per client every PACE_US: about 11,000 requests a
 * second in all, whatever the engine's speed, so that the id window
 * (a few thousand ids per kill), the memory and the checks stay bounded in
 * the long mode.  A durable engine's fsync is usually the slower pace.
 */
#define PACE_US    3000
#define IDS_MEMORY 8192
#define THRESHOLD  (10 * U)
#define REFILL_ADD (50 * U)
#define KILLS      50
#define REBOOT_PCT 50
/* Traffic before the first kill (and the whole run with no kill), ms. */
#define FIRST_PHASE_MS 1500
#define NOKILL_MS      2000
/* A reply later than this is a stall, s. */
#define REPLY_TIMEOUT_S 10
/* The clients' deadline to get everything answered once the kills stop, ms. */
#define DRAIN_MS 30000
/* A refill that fired before a restart is on the stream within this, ms. */
#define REFILL_WAIT_MS 10000
/* Violations printed; all are counted. */
#define VIOL_KEEP 40
/* Failed checks printed per kind and per round of checks; all are counted. */
#define FAIL_SHOW 10
#define MSG_MAX   512

/* Plan "pa" for plain accounts, "pb" (dearer, so thresholds get crossed) for refill ones. */
#define RATES                                                                                      \
	"plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum\n"                \
	"pa,1,national,0.017777,0,1,1,0\n"                                                         \
	"pa,44,international,0.123457,0.05,30,6,60\n"                                              \
	"pa,1800,tollfree,0,0,1,1,0\n"                                                             \
	"pb,1,national,0.333333,0,6,6,0\n"                                                         \
	"pb,44,international,0.999999,0.1,60,60,0\n"                                               \
	"pb,1800,tollfree,0,0,1,1,0\n"
#define PLANS 2
static const char *const plan_names[PLANS] = {"pa", "pb"};
#define DESTS 3
static const char *const dests[DESTS] = {"12025550123", "442071838750", "18005550199"};

/* ------------------------------------------------------------------ */
/* randomness: splitmix64, one stream per thread, all from the seed    */

static uint32_t
below(uint64_t *s, uint32_t n)
{
	return (uint32_t)(it_splitmix(s) % n);
}

/* ------------------------------------------------------------------ */
/* the run's state                                                     */

struct acct {
	uint64_t id;
	tg_money_t opening;
	uint8_t plan; /* index in plan_names */
	bool refill;  /* ADD REFILL_ADD at THRESHOLD; only debits */
};

enum kind { OP_CDR, OP_CREDIT, OP_AUTH, OP_END, OP_REAUTH };

enum state { ST_WAIT, ST_ACKED, ST_BAD };

/*
 * One operation of a client.  Its id is built from the client, the kind and
 * n, so it is unique in the run and the same on every retry.
 */
struct op {
	uint8_t kind;      /* enum kind (never OP_REAUTH: those are not kept) */
	uint8_t state;     /* enum state */
	uint8_t dest;      /* CDR, AUTH, END: index in dests */
	uint8_t ended;     /* AUTH: its END was acknowledged */
	uint16_t acct;     /* index in accts */
	uint16_t sends;    /* times sent */
	uint32_t n;        /* the id's number */
	uint32_t dur;      /* CDR, END: seconds */
	uint32_t grant;    /* AUTH: the grant acknowledged (0: BLOCKED); END: its call's */
	uint32_t auth;     /* END: its AUTH op */
	uint32_t sent_run; /* the engine run it was first sent to */
	uint32_t ack_run;  /* the engine run that acknowledged it */
	tg_money_t amount; /* CREDIT: the amount */
	tg_money_t reply;  /* CDR, END: the charge; CREDIT: the balance after */
};

struct open_call {
	uint32_t auth;   /* the AUTH op */
	uint64_t end_at; /* batch from which its END may be sent */
	bool reauth;     /* authorized again in the batch being built */
};

struct client {
	unsigned idx;
	uint64_t rng;
	pthread_t thread;
	redisContext *c;
	unsigned run; /* the engine run c is connected to */
	struct op *ops;
	size_t nops, cap;
	uint32_t *pend; /* ops not answered yet, oldest first: pend[phead .. phead + plen) */
	size_t phead, plen, pcap;
	struct open_call open[OPEN_MAX];
	unsigned nopen, auth_waiting;
	uint32_t next[3]; /* id numbers: CDR, CREDIT, call */
	uint64_t batches, reconnects, reauths;
};

/* What a failed check at the end is about. */
enum fcat { F_STREAM, F_BALANCE, F_RESERVED, F_REFILL, F_REPLY, F_MOVED, F_ENDED, F__N };
static const char *const fcat_names[F__N] = {"refill requests on the stream",
                                             "balances",
                                             "reservations left",
                                             "refill in flight (ACCT.GET)",
                                             "replies to operations sent again",
                                             "operations sent again that moved money",
                                             "ended calls authorized again"};

static struct {
	char dir[IT_PATH_MAX], rates[IT_PATH_MAX];
	char redis_port[16], ids_max[24];
	char log0[IT_PATH_MAX]; /* the first run's log */
	const char *durability; /* durable, or TG_CRASH_DURABILITY */
	const char *flags[32];
	struct tg_test_redis redis;
	struct it_daemon d;
	redisContext *r, *e;
	uint64_t seed;
	unsigned kills, reboot_pct;
	struct acct accts[ACCTS];
	tg_money_t quote[PLANS][DESTS][DUR_MAX + 1];
	struct client cl[CLIENTS];
	uint8_t *removed; /* [k]: run k began with the segment removed; kills + 3 of them */
	/* Shared with the clients, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint16_t port;
	unsigned run;
	bool stop, abort;
	unsigned nviol;
	uint64_t acked;   /* atomic */
	uint64_t replays; /* INFO replays, summed over the runs (read before each kill) */
	bool keep;        /* TG_CRASH_KEEP: leave the directory (logs, data) behind */
	/* The checks. */
	tg_money_t expect[ACCTS], seen[ACCTS];
	bool crossed[ACCTS];
	unsigned failures, fcount[F__N];
} fx;

static void violation(const char *fmt, ...) FMT(1, 2);

/* A violation of the contract, seen by a client: counted, the first ones printed. */
static void
violation(const char *fmt, ...)
{
	char msg[MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&fx.mu);
	if (fx.nviol++ < VIOL_KEEP)
		fprintf(stderr, "crash: VIOLATION (seed %llu): %s\n", (unsigned long long)fx.seed,
		        msg);
	pthread_mutex_unlock(&fx.mu);
}

static void failure(enum fcat cat, const char *fmt, ...) FMT(2, 3);

/* A failed check at the end (main thread): counted, the first of each kind printed. */
static void
failure(enum fcat cat, const char *fmt, ...)
{
	va_list ap;

	fx.failures++;
	if (fx.fcount[cat]++ >= FAIL_SHOW)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "crash: FAILED (seed %llu): ", (unsigned long long)fx.seed);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static tg_money_t
money(const char *s, bool *ok)
{
	tg_money_t v = 0;
	*ok = s != NULL && tg_money_parse(s, strlen(s), &v) == 0;
	return v;
}

/* An amount as text, in one of four rotating buffers (for one printf). */
static const char *
amt(tg_money_t v)
{
	static __thread char buf[4][TG_MONEY_STR_MAX];
	static __thread unsigned k;
	char *b = buf[k++ % 4];
	tg_money_format(v, b);
	return b;
}

static const char *
run_name(unsigned run, char *buf, size_t cap)
{
	if (run == 0)
		snprintf(buf, cap, "run 0 (first start)");
	else
		snprintf(buf, cap, "run %u (after kill %u, %s)", run, run,
		         __atomic_load_n(&fx.removed[run], __ATOMIC_RELAXED) ? "segment removed"
		                                                             : "segment kept");
	return buf;
}

static int
words(const char *argv[5], const char *a, const char *b, const char *c, const char *d,
      const char *e)
{
	argv[0] = a, argv[1] = b, argv[2] = c, argv[3] = d, argv[4] = e;
	return e != NULL ? 5 : 4;
}

/*
 * The request of o: its words into argv (pointing into buf and the tables),
 * their number returned.  The id is built from the client, the kind and n.
 */
static int
op_argv(const struct client *cl, const struct op *o, char buf[4][64], const char *argv[5])
{
	const char *acct = buf[0], *id = buf[1], *secs = buf[2], *amount = buf[3];
	const char *dest = dests[o->dest];

	snprintf(buf[0], sizeof(buf[0]), "%llu", (unsigned long long)fx.accts[o->acct].id);
	snprintf(buf[1], sizeof(buf[1]), "c%u-%s-%u", cl->idx,
	         o->kind == OP_CDR      ? "cdr"
	         : o->kind == OP_CREDIT ? "tx"
	                                : "call",
	         o->n);
	snprintf(buf[2], sizeof(buf[2]), "%u", o->dur);
	tg_money_format(o->amount, buf[3]);
	switch (o->kind) {
	case OP_CDR:
		return words(argv, "CDR", acct, dest, secs, id);
	case OP_CREDIT:
		return words(argv, "ACCT.CREDIT", acct, amount, id, NULL);
	case OP_AUTH:
	case OP_REAUTH:
		return words(argv, "CALL.AUTH", acct, dest, id, NULL);
	default:
		return words(argv, "CALL.END", acct, id, secs, NULL);
	}
}

/* The request of o, as text, into out. */
static void
op_command(const struct client *cl, const struct op *o, char *out, size_t cap)
{
	char buf[4][64];
	const char *argv[5];
	size_t n = 0;
	int argc = op_argv(cl, o, buf, argv);

	out[0] = '\0';
	for (int i = 0; i < argc && n < cap; i++)
		n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? " " : "", argv[i]);
}

/* "<command> (first sent in run 3 (...), acknowledged in run 4 (...))" */
static void
op_describe(const struct client *cl, const struct op *o, char *out, size_t cap)
{
	char cmd[160], r1[64], r2[64];

	op_command(cl, o, cmd, sizeof(cmd));
	if (o->state == ST_ACKED)
		snprintf(out, cap, "%s (first sent in %s, acknowledged in %s, sent %u times)", cmd,
		         run_name(o->sent_run, r1, sizeof(r1)),
		         run_name(o->ack_run, r2, sizeof(r2)), o->sends);
	else
		snprintf(out, cap, "%s (first sent in %s, sent %u times)", cmd,
		         run_name(o->sent_run, r1, sizeof(r1)), o->sends);
}

/* What a reply is, for a message. */
static const char *
reply_text(const redisReply *r, char *buf, size_t cap)
{
	if (r == NULL)
		snprintf(buf, cap, "no reply");
	else if (r->type == REDIS_REPLY_INTEGER)
		snprintf(buf, cap, "(integer) %lld", r->integer);
	else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
		snprintf(buf, cap, "\"%s\"", r->str);
	else if (r->type == REDIS_REPLY_ERROR)
		snprintf(buf, cap, "-%s", r->str);
	else
		snprintf(buf, cap, "a reply of type %d", r->type);
	return buf;
}

/* ------------------------------------------------------------------ */
/* a client                                                            */

static void
client_append(redisContext *c, const struct client *cl, const struct op *o)
{
	char buf[4][64];
	const char *argv[5];
	int argc = op_argv(cl, o, buf, argv);

	redisAppendCommandArgv(c, argc, argv, NULL);
}

/* Keep o and queue it to be sent. */
static void
client_new_op(struct client *cl, const struct op *o)
{
	if (cl->nops == cl->cap) {
		cl->cap = cl->cap ? 2 * cl->cap : 4096;
		cl->ops = realloc(cl->ops, cl->cap * sizeof(*cl->ops));
		if (cl->ops == NULL)
			abort();
	}
	cl->ops[cl->nops] = *o;
	if (cl->phead + cl->plen == cl->pcap) {
		if (cl->phead > 0) {
			memmove(cl->pend, cl->pend + cl->phead, cl->plen * sizeof(*cl->pend));
			cl->phead = 0;
		} else {
			cl->pcap = cl->pcap ? 2 * cl->pcap : 1024;
			cl->pend = realloc(cl->pend, cl->pcap * sizeof(*cl->pend));
			if (cl->pend == NULL)
				abort();
		}
	}
	cl->pend[cl->phead + cl->plen++] = (uint32_t)cl->nops++;
}

/* A new operation of a random kind on a random account. */
static void
client_invent(struct client *cl)
{
	struct op o = {.acct = (uint16_t)below(&cl->rng, ACCTS)};
	uint32_t k = below(&cl->rng, 100);

	o.dest = (uint8_t)below(&cl->rng, DESTS);
	if (k >= 45 && k < 65 && !fx.accts[o.acct].refill) {
		o.kind = OP_CREDIT;
		o.n = ++cl->next[1];
		o.amount = 1 + (tg_money_t)(it_splitmix(&cl->rng) % (20 * U));
	} else if (k >= 65 && cl->nopen + cl->auth_waiting < OPEN_MAX) {
		o.kind = OP_AUTH;
		o.n = ++cl->next[2];
		cl->auth_waiting++;
	} else {
		o.kind = OP_CDR;
		o.n = ++cl->next[0];
		o.dur = below(&cl->rng, 20) == 0 ? 0 : 1 + below(&cl->rng, DUR_MAX);
	}
	client_new_op(cl, &o);
}

/* The END of open call i (which leaves the open list). */
static void
client_end(struct client *cl, unsigned i)
{
	const struct op *a = &cl->ops[cl->open[i].auth];
	uint32_t most = a->grant < DUR_MAX ? a->grant : DUR_MAX;
	struct op o = {.kind = OP_END,
	               .acct = a->acct,
	               .dest = a->dest,
	               .n = a->n,
	               .grant = a->grant,
	               .auth = cl->open[i].auth,
	               .dur = below(&cl->rng, most + 1)};

	cl->open[i] = cl->open[--cl->nopen];
	client_new_op(cl, &o);
}

/*
 * Check the reply to op k against the contract and record it.  Any reply
 * settles the op: a wrong one as a violation, and it is not sent again.
 */
static void
client_settle(struct client *cl, uint32_t k, const redisReply *r)
{
	struct op *o = &cl->ops[k];
	char what[400], got[160];
	bool ok = false;

	if (r->type == REDIS_REPLY_STRING && (o->kind == OP_CDR || o->kind == OP_END)) {
		o->reply = money(r->str, &ok);
		tg_money_t want = fx.quote[fx.accts[o->acct].plan][o->dest][o->dur];
		if (ok && o->reply != want) {
			op_describe(cl, o, what, sizeof(what));
			violation("%s: charged %s, the plan's price is %s", what, amt(o->reply),
			          amt(want));
		}
	} else if (r->type == REDIS_REPLY_STRING && o->kind == OP_CREDIT) {
		o->reply = money(r->str, &ok);
	} else if (o->kind == OP_AUTH && r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
		o->grant = (uint32_t)r->integer;
		ok = true;
	} else if (o->kind == OP_AUTH && r->type == REDIS_REPLY_ERROR &&
	           strncmp(r->str, "BLOCKED", 7) == 0) {
		o->grant = 0; /* no call: nothing to end */
		ok = true;
	}
	if (o->kind == OP_AUTH)
		cl->auth_waiting--;
	if (!ok) {
		o->state = ST_BAD;
		op_describe(cl, o, what, sizeof(what));
		violation("%s: got %s", what, reply_text(r, got, sizeof(got)));
		return;
	}
	o->state = ST_ACKED;
	o->ack_run = cl->run;
	__atomic_add_fetch(&fx.acked, 1, __ATOMIC_RELAXED);
	if (o->kind == OP_AUTH && o->grant > 0)
		cl->open[cl->nopen++] =
		    (struct open_call){.auth = k, .end_at = cl->batches + 1 + below(&cl->rng, 20)};
	if (o->kind == OP_END)
		cl->ops[o->auth].ended = 1;
}

/* A connection to the engine of the current run; waits for a restart while there is none. */
static void
client_connect(struct client *cl)
{
	struct timeval conn = {.tv_sec = 2}, reply = {.tv_sec = REPLY_TIMEOUT_S};
	unsigned failed = cl->run;
	bool tried = cl->batches > 0;

	for (;;) {
		pthread_mutex_lock(&fx.mu);
		if (tried && fx.run == failed && !fx.abort) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 20 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&fx.cv, &fx.mu, &ts);
		}
		uint16_t port = fx.port;
		unsigned run = fx.run;
		bool quit = fx.abort;
		pthread_mutex_unlock(&fx.mu);
		if (quit)
			return;
		redisContext *c = redisConnectWithTimeout("127.0.0.1", port, conn);
		if (c != NULL && c->err == 0 && redisSetTimeout(c, reply) == REDIS_OK) {
			cl->c = c;
			cl->run = run;
			cl->reconnects++;
			return;
		}
		if (c != NULL)
			redisFree(c);
		tried = true;
		failed = run;
	}
}

/*
 * One batch: authorize again some open calls (right after a reconnection),
 * send again what was not answered, then new operations, all pipelined;
 * read the replies in order until the connection breaks.
 */
static void
client_batch(struct client *cl, bool fresh, bool stopping)
{
	struct op reauth[REAUTH_MAX];
	uint32_t reauth_of[REAUTH_MAX];
	uint32_t batch[BATCH_MAX + OPEN_MAX];
	unsigned nre = 0, nb = 0;
	unsigned want = 1 + below(&cl->rng, BATCH_MAX);

	for (unsigned i = 0; i < cl->nopen; i++) {
		cl->open[i].reauth = fresh && nre < REAUTH_MAX && below(&cl->rng, 4) == 0;
		if (cl->open[i].reauth) {
			reauth_of[nre] = cl->open[i].auth;
			reauth[nre] = cl->ops[cl->open[i].auth];
			reauth[nre++].kind = OP_REAUTH;
		}
	}
	/* What the last connection left unanswered goes first, in its order. */
	while (nb < cl->plen && nb < want)
		batch[nb] = cl->pend[cl->phead + nb], nb++;
	while (nb < want || stopping) {
		unsigned due = cl->nopen;
		for (unsigned i = 0; i < cl->nopen; i++)
			if (!cl->open[i].reauth &&
			    (stopping || cl->open[i].end_at <= cl->batches)) {
				due = i;
				break;
			}
		if (due < cl->nopen)
			client_end(cl, due);
		else if (!stopping)
			client_invent(cl);
		else
			break;
		batch[nb] = cl->pend[cl->phead + nb];
		nb++;
	}
	for (unsigned i = 0; i < nre; i++)
		client_append(cl->c, cl, &reauth[i]);
	for (unsigned i = 0; i < nb; i++) {
		struct op *o = &cl->ops[batch[i]];
		if (o->sends++ == 0)
			o->sent_run = cl->run;
		client_append(cl->c, cl, o);
	}
	cl->batches++;

	unsigned got = 0;
	for (unsigned i = 0; i < nre + nb; i++) {
		redisReply *r = NULL;
		uint64_t t = tg_mono_ms();
		if (redisGetReply(cl->c, (void **)&r) != REDIS_OK || r == NULL) {
			/* A kill shows as a reset or an end of file at once; a silence is a stall.
			 */
			if (tg_mono_ms() - t >= REPLY_TIMEOUT_S * 1000 - 100) {
				violation("client %u: no reply within %d s in run %u (a stall)",
				          cl->idx, REPLY_TIMEOUT_S, cl->run);
			}
			redisFree(cl->c);
			cl->c = NULL;
			break;
		}
		if (i < nre) {
			const struct op *a = &cl->ops[reauth_of[i]];
			if (r->type != REDIS_REPLY_INTEGER || r->integer != (long long)a->grant) {
				char what[400], txt[160];
				op_describe(cl, a, what, sizeof(what));
				violation("%s, granted %u, authorized again in run %u: got %s",
				          what, a->grant, cl->run, reply_text(r, txt, sizeof(txt)));
			} else {
				cl->reauths++;
			}
		} else {
			client_settle(cl, batch[i - nre], r);
			got++;
		}
		freeReplyObject(r);
	}
	cl->phead += got;
	cl->plen -= got;
}

static void *
client_main(void *arg)
{
	struct client *cl = arg;
	uint64_t deadline = 0;
	bool fresh = false;

	for (;;) {
		pthread_mutex_lock(&fx.mu);
		bool stopping = fx.stop, quit = fx.abort;
		pthread_mutex_unlock(&fx.mu);
		if (quit)
			break;
		if (stopping && deadline == 0)
			deadline = tg_mono_ms() + DRAIN_MS;
		if (stopping && cl->plen == 0 && cl->nopen == 0)
			break;
		if (stopping && tg_mono_ms() > deadline) {
			for (size_t i = 0; i < cl->plen; i++) {
				char what[400];
				op_describe(cl, &cl->ops[cl->pend[cl->phead + i]], what,
				            sizeof(what));
				violation("%s: no answer %d ms after the last kill", what,
				          DRAIN_MS);
			}
			break;
		}
		if (cl->c == NULL) {
			client_connect(cl);
			fresh = true;
			continue;
		}
		uint64_t t = tg_mono_ms();
		client_batch(cl, fresh, stopping);
		fresh = false;
		if (!stopping && tg_mono_ms() - t < PACE_US / 1000)
			it_sleep_ms((unsigned)(PACE_US / 1000 - (tg_mono_ms() - t)));
	}
	if (cl->c != NULL)
		redisFree(cl->c);
	cl->c = NULL;
	return NULL;
}

/* ------------------------------------------------------------------ */
/* the engine and Redis                                                */

static void
engine_publish(unsigned run)
{
	pthread_mutex_lock(&fx.mu);
	fx.port = fx.d.port;
	fx.run = run;
	pthread_cond_broadcast(&fx.cv);
	pthread_mutex_unlock(&fx.mu);
}

/* The log of engine run k: tollgated-1.log, then tollgated-1.<k>.log (engine_crash). */
static void
run_log(unsigned k, char *out, size_t cap)
{
	size_t n = strlen(fx.log0) - strlen(".log");
	if (k == 0)
		snprintf(out, cap, "%s", fx.log0);
	else
		snprintf(out, cap, "%.*s.%u.log", (int)n, fx.log0, k);
}

/* Up to cap - 1 bytes of the end of a file, NUL-terminated, into buf. */
static void
file_tail(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n = 0;

	if (f != NULL) {
		if (fseek(f, 0, SEEK_END) == 0 && ftell(f) > (long)(cap - 1))
			fseek(f, -(long)(cap - 1), SEEK_END);
		else
			fseek(f, 0, SEEK_SET);
		n = fread(buf, 1, cap - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
}

/*
 * Flip one byte in the middle of the newest snapshot of the data directory,
 * as a disk that rots would.  Returns the snapshot's name's LSN, or 0 when
 * there is none.
 */
static unsigned long long
damage_newest_snapshot(void)
{
	DIR *d = opendir(fx.d.data);
	struct dirent *e;
	unsigned long long best = 0, lsn;
	char path[IT_PATH_MAX];

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (sscanf(e->d_name, "snapshot-%16llx.tgs", &lsn) == 1 &&
		    strlen(e->d_name) == 29 && lsn > best)
			best = lsn;
	closedir(d);
	if (best == 0)
		return 0;
	it_pathf(path, sizeof(path), "%s/snapshot-%016llx.tgs", fx.d.data, best);
	int fd = open(path, O_RDWR);
	off_t size = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
	uint8_t b;
	assert_true(size > 128);
	assert_int_equal(pread(fd, &b, 1, size / 2), 1);
	b ^= 0x20;
	assert_int_equal(pwrite(fd, &b, 1, size / 2), 1);
	close(fd);
	return best;
}

/*
 * Kill and restart (reboot: the segment removed first; damage: the newest
 * snapshot damaged in between).  Returns 0 or -1 (the log was shown).
 */
static int
engine_crash(unsigned run, bool reboot, bool damage)
{
	static char tail[8192];

	if (fx.e != NULL)
		redisFree(fx.e);
	fx.e = NULL;
	if (it_kill(&fx.d) != 0) {
		file_tail(fx.d.log, tail, sizeof(tail));
		fprintf(stderr,
		        "crash: tollgated had exited before kill %u; the end of %s:\n%s---- end of "
		        "log ----\n",
		        run, fx.d.log, tail);
		return -1;
	}
	__atomic_store_n(&fx.removed[run], reboot, __ATOMIC_RELAXED);
	if (damage) {
		unsigned long long lsn = damage_newest_snapshot();
		assert_true(lsn > 0);
		fprintf(stderr, "crash: snapshot at LSN %llu damaged before the restart\n", lsn);
	}
	/*
	 * it_restart names the new log by replacing the old name's last
	 * extension, so the names grow with every restart (tollgated-1.1.2.3...)
	 * and pass NAME_MAX after about 80: start each time from the first name,
	 * which gives tollgated-1.<run>.log.
	 */
	memcpy(fx.d.log, fx.log0, sizeof(fx.d.log));
	if (it_restart(&fx.d, fx.flags, reboot) != 0)
		return -1;
	engine_publish(run);
	return 0;
}

/*
 * An INFO counter of the running engine, or 0 when it does not answer: no
 * assertion, this runs while the clients do.
 */
static uint64_t
info_counter(const char *name)
{
	char key[64];
	uint64_t v = 0;

	if (fx.e == NULL)
		fx.e = it_connect(&fx.d);
	if (fx.e == NULL)
		return 0;
	redisReply *r = redisCommand(fx.e, "INFO all");
	snprintf(key, sizeof(key), "\n%s:", name);
	if (r != NULL && r->type == REDIS_REPLY_STRING && strstr(r->str, key) != NULL)
		v = strtoull(strstr(r->str, key) + strlen(key), NULL, 10);
	if (r != NULL)
		freeReplyObject(r);
	return v;
}

static redisContext *
engine(void)
{
	if (fx.e == NULL)
		fx.e = it_connect(&fx.d);
	assert_non_null(fx.e);
	return fx.e;
}

static void
env_u64(const char *name, uint64_t *v)
{
	const char *s = getenv(name);
	char *end;

	if (s == NULL || s[0] == '\0')
		return;
	errno = 0;
	unsigned long long x = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0') {
		fprintf(stderr, "crash: %s=%s is not a number\n", name, s);
		exit(2);
	}
	*v = x;
}

static int
setup(void **state)
{
	uint64_t kills = KILLS, reboot = REBOOT_PCT;
	unsigned n = 0;

	(void)state;
	memset(&fx, 0, sizeof(fx));
	fx.seed = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
	env_u64("TG_CRASH_SEED", &fx.seed);
	env_u64("TG_CRASH_KILLS", &kills);
	env_u64("TG_CRASH_REBOOT", &reboot);
	fx.keep = getenv("TG_CRASH_KEEP") != NULL && strcmp(getenv("TG_CRASH_KEEP"), "0") != 0;
	const char *dur = getenv("TG_CRASH_DURABILITY");
	fx.durability = dur != NULL && dur[0] != '\0' ? dur : "durable";
	assert_true(kills <= 1000000 && reboot <= 100);
	fx.kills = (unsigned)kills;
	fx.reboot_pct = (unsigned)reboot;
	fx.removed = calloc(fx.kills + 4, sizeof(*fx.removed));
	assert_non_null(fx.removed);
	pthread_mutex_init(&fx.mu, NULL);
	pthread_cond_init(&fx.cv, NULL);
	fprintf(stderr,
	        "crash: seed %llu (replay: TG_CRASH_SEED=%llu), %u kills, %u%% with the segment "
	        "removed, --durability %s\n",
	        (unsigned long long)fx.seed, (unsigned long long)fx.seed, fx.kills, fx.reboot_pct,
	        fx.durability);

	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_file_write(fx.dir, "rates.csv", RATES, fx.rates, sizeof(fx.rates)), 0);
	assert_int_equal(tg_test_redis_start(&fx.redis), 0);
	fx.r = tg_test_redis_connect(&fx.redis);
	assert_non_null(fx.r);
	snprintf(fx.redis_port, sizeof(fx.redis_port), "%u", fx.redis.port);

	/*
	 * shm-reuse yes (the harness says no): a kill leaves the segment for the
	 * next engine to find and judge, a reboot does not; the two cases differ.
	 */
	static const char *const fixed[] = {
	    "--workers", "2", "--snapshot-interval", "1", "--shm-reuse", "yes", "--refill-stream",
	    STREAM, "--redis-host", "127.0.0.1",
	    /* small segments: snapshots prune the journal many times during the run */
	    "--journal-segment-size", "262144"};
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		fx.flags[n++] = fixed[i];
	fx.flags[n++] = "--redis-port";
	fx.flags[n++] = fx.redis_port;
	fx.flags[n++] = "--rates";
	fx.flags[n++] = fx.rates;
	/*
	 * A memory tier of IDS_MEMORY ids: most ids move to runs on disk during
	 * the run, and replays after a kill are answered from there too.
	 */
	snprintf(fx.ids_max, sizeof(fx.ids_max), "%u", IDS_MEMORY);
	fx.flags[n++] = "--ids-max";
	fx.flags[n++] = fx.ids_max;
	fx.flags[n++] = "--durability";
	fx.flags[n++] = fx.durability;
	fx.flags[n] = NULL;
	assert_int_equal(it_start(&fx.d, fx.dir, fx.flags), 0);
	memcpy(fx.log0, fx.d.log, sizeof(fx.log0));
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	pthread_mutex_lock(&fx.mu);
	fx.abort = true;
	pthread_cond_broadcast(&fx.cv);
	pthread_mutex_unlock(&fx.mu);
	if (fx.e != NULL)
		redisFree(fx.e);
	if (fx.r != NULL)
		redisFree(fx.r);
	if (fx.d.pid > 0)
		it_stop(&fx.d);
	tg_test_redis_stop(&fx.redis);
	for (unsigned i = 0; i < CLIENTS; i++) {
		free(fx.cl[i].ops);
		free(fx.cl[i].pend);
	}
	free(fx.removed);
	if (fx.keep)
		fprintf(stderr, "crash: TG_CRASH_KEEP: the logs and the data are in %s\n", fx.dir);
	else
		it_dir_remove(fx.dir);
	return 0;
}

/* The accounts: opening balances with odd cents, a quarter with auto-refill. */
static void
make_accounts(uint64_t *rng)
{
	redisContext *c = engine();

	for (unsigned i = 0; i < ACCTS; i++) {
		struct acct *a = &fx.accts[i];
		a->id = FIRST_ACCT + i;
		a->refill = i % 4 == 3;
		a->plan = a->refill ? 1 : 0;
		if (a->refill) /* $1 to $32768 above the threshold: crossings spread over the run */
			a->opening = THRESHOLD + ((tg_money_t)1 << below(rng, 16)) * U +
			             (tg_money_t)(it_splitmix(rng) % U);
		else
			a->opening = 20 * U + (tg_money_t)(it_splitmix(rng) % (480 * U));
		if (a->refill)
			redisAppendCommand(
			    c,
			    "ACCT.SET %llu BALANCE %s PLAN %s THRESHOLD %s REFILL ADD "
			    "%s PAYMENT on",
			    (unsigned long long)a->id, amt(a->opening), plan_names[a->plan],
			    amt(THRESHOLD), amt(REFILL_ADD));
		else
			redisAppendCommand(c, "ACCT.SET %llu BALANCE %s PLAN %s",
			                   (unsigned long long)a->id, amt(a->opening),
			                   plan_names[a->plan]);
	}
	for (unsigned i = 0; i < ACCTS; i++) {
		redisReply *r = NULL;
		assert_int_equal(redisGetReply(c, (void **)&r), REDIS_OK);
		if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, "OK") != 0)
			fail_msg("ACCT.SET %llu: %s", (unsigned long long)fx.accts[i].id,
			         r->type == REDIS_REPLY_ERROR ? r->str : "not +OK");
		freeReplyObject(r);
	}
}

/* Every price the traffic can be charged, from the engine's own RATE. */
static void
load_quotes(void)
{
	redisContext *c = engine();

	for (unsigned p = 0; p < PLANS; p++)
		for (unsigned d = 0; d < DESTS; d++)
			for (unsigned s = 0; s <= DUR_MAX; s++)
				redisAppendCommand(c, "RATE %s %s %u", plan_names[p], dests[d], s);
	for (unsigned p = 0; p < PLANS; p++)
		for (unsigned d = 0; d < DESTS; d++)
			for (unsigned s = 0; s <= DUR_MAX; s++) {
				redisReply *r = NULL;
				bool ok = false;
				assert_int_equal(redisGetReply(c, (void **)&r), REDIS_OK);
				if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
				    r->element[1]->type == REDIS_REPLY_STRING)
					fx.quote[p][d][s] = money(r->element[1]->str, &ok);
				if (!ok)
					fail_msg("RATE %s %s %u: no charge", plan_names[p],
					         dests[d], s);
				freeReplyObject(r);
			}
}

/* ------------------------------------------------------------------ */
/* the checks                                                          */

/* What every account's balance must be, from the acknowledged operations. */
static void
compute_expected(void)
{
	for (unsigned i = 0; i < ACCTS; i++)
		fx.expect[i] = fx.accts[i].opening;
	for (unsigned k = 0; k < CLIENTS; k++)
		for (size_t i = 0; i < fx.cl[k].nops; i++) {
			const struct op *o = &fx.cl[k].ops[i];
			if (o->state != ST_ACKED)
				continue;
			if (o->kind == OP_CREDIT)
				fx.expect[o->acct] += o->amount;
			else if (o->kind == OP_CDR || o->kind == OP_END)
				fx.expect[o->acct] -= o->reply;
		}
	/* Refill accounts only lose money: they crossed iff they ended at or below. */
	for (unsigned i = 0; i < ACCTS; i++)
		fx.crossed[i] = fx.accts[i].refill && fx.expect[i] <= THRESHOLD;
}

static const redisReply *
field(const redisReply *r, const char *name)
{
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2)
		if (r->element[i]->type == REDIS_REPLY_STRING &&
		    strcmp(r->element[i]->str, name) == 0)
			return r->element[i + 1];
	return NULL;
}

static tg_money_t
field_money(const redisReply *r, const char *name, bool *ok)
{
	const redisReply *v = field(r, name);
	return money(v != NULL && v->type == REDIS_REPLY_STRING ? v->str : NULL, ok);
}

static long long
field_int(const redisReply *r, const char *name)
{
	const redisReply *v = field(r, name);
	return v != NULL && v->type == REDIS_REPLY_INTEGER ? v->integer : -1;
}

static const char *
field_str(const redisReply *r, const char *name)
{
	const redisReply *v = field(r, name);
	return v != NULL && v->type == REDIS_REPLY_STRING ? v->str : "?";
}

static int
acct_index(const char *s)
{
	char *end;
	unsigned long long a = strtoull(s, &end, 10);
	if (*end != '\0' && *end != ':')
		return -1;
	return a >= FIRST_ACCT && a < FIRST_ACCT + ACCTS ? (int)(a - FIRST_ACCT) : -1;
}

/*
 * The stream: for every refill account that crossed, refill:<acct>:1 (once
 * or more), nothing for the others.  Waits up to REFILL_WAIT_MS for it to be
 * so (a restarted engine publishes what it found pending), then reports.
 */
static void
check_stream(const char *when)
{
	uint64_t deadline = tg_mono_ms() + REFILL_WAIT_MS;
	unsigned count[ACCTS];
	char bad[MSG_MAX];

	for (;;) {
		unsigned wrong = 0;
		bad[0] = '\0';
		memset(count, 0, sizeof(count));
		redisReply *r = it_cmd(fx.r, "XRANGE " STREAM " - +");
		for (size_t i = 0; i < r->elements; i++) {
			const redisReply *f = r->element[i]->element[1];
			const char *id = field_str(f, "id"), *acct = field_str(f, "account");
			int k = strncmp(id, "refill:", 7) == 0 ? acct_index(id + 7) : -1;
			char want[64] = "";
			bool ok_amt;
			tg_money_t a = money(field_str(f, "amount"), &ok_amt);

			if (k >= 0)
				snprintf(want, sizeof(want), "refill:%llu:1",
				         (unsigned long long)fx.accts[k].id);
			if (k < 0 || !fx.accts[k].refill || strcmp(id, want) != 0 ||
			    acct_index(acct) != k || strcmp(field_str(f, "mode"), "add") != 0 ||
			    !ok_amt || a != REFILL_ADD) {
				if (wrong++ == 0)
					snprintf(bad, sizeof(bad),
					         "entry %s: id %s, account %s, mode %s, amount %s",
					         r->element[i]->element[0]->str, id, acct,
					         field_str(f, "mode"), field_str(f, "amount"));
				continue;
			}
			count[k]++;
		}
		freeReplyObject(r);
		unsigned missing = 0, extra = 0;
		for (unsigned k = 0; k < ACCTS; k++) {
			missing += fx.crossed[k] && count[k] == 0;
			extra += !fx.crossed[k] && count[k] > 0;
		}
		if ((missing == 0 && extra == 0 && wrong == 0) || tg_mono_ms() > deadline)
			break;
		it_sleep_ms(100);
	}
	if (bad[0] != '\0')
		failure(F_STREAM,
		        "%s: stream entries that are not the first request (refill:<acct>:1, ADD "
		        "%s) of an auto-refill account (a second request, or garbage), the first: "
		        "%s",
		        when, amt(REFILL_ADD), bad);
	for (unsigned k = 0; k < ACCTS; k++) {
		unsigned long long id = fx.accts[k].id;
		if (fx.crossed[k] && count[k] == 0)
			failure(
			    F_STREAM,
			    "%s: account %llu crossed its threshold %s (balance %s) but "
			    "refill:%llu:1 is not on the stream %d ms after the restart: a refill "
			    "that fired was lost",
			    when, id, amt(THRESHOLD), amt(fx.expect[k]), id, REFILL_WAIT_MS);
		if (!fx.crossed[k] && count[k] > 0)
			failure(
			    F_STREAM,
			    "%s: account %llu never crossed its threshold (balance %s, threshold "
			    "%s) but the stream has %u requests for it",
			    when, id, amt(fx.expect[k]), amt(THRESHOLD), count[k]);
	}
}

/*
 * An account's balance is off by diff (seen - expected): name the
 * operations that explain it alone: one sent more than once whose effect,
 * applied a second time, is diff (applied by the dead engine, unanswered,
 * and again by the new one); or one refused when sent again (a violation
 * already) that the dead engine had applied.  A lost operation (-diff) is
 * named by check_replays.
 */
static void
explain_balance(unsigned acct, tg_money_t diff, char *out, size_t cap)
{
	size_t n = 0, retried = 0;

	out[0] = '\0';
	for (unsigned k = 0; k < CLIENTS; k++)
		for (size_t i = 0; i < fx.cl[k].nops; i++) {
			const struct op *o = &fx.cl[k].ops[i];
			if (o->acct != acct || o->sends < 2 || o->kind == OP_AUTH ||
			    o->state == ST_WAIT)
				continue;
			retried++;
			tg_money_t price = fx.quote[fx.accts[acct].plan][o->dest][o->dur];
			tg_money_t effect = o->kind == OP_CREDIT   ? o->amount
			                    : o->state == ST_ACKED ? -o->reply
			                                           : -price;
			if (effect != diff || n >= cap / 2)
				continue;
			char what[400];
			op_describe(&fx.cl[k], o, what, sizeof(what));
			n += (size_t)snprintf(out + n, cap - n, "; %s: %s",
			                      o->state == ST_ACKED
			                          ? "applied twice, it seems"
			                          : "refused when sent again, applied before",
			                      what);
		}
	if (n == 0)
		snprintf(out, cap,
		         " (%zu of its operations were sent more than once; none explains "
		         "the difference alone)",
		         retried);
}

/* ACCT.GET of every account: the balance, nothing reserved, the refill in flight. */
static void
check_accounts(const char *when, bool *off)
{
	redisContext *c = engine();

	for (unsigned k = 0; k < ACCTS; k++)
		redisAppendCommand(c, "ACCT.GET %llu", (unsigned long long)fx.accts[k].id);
	for (unsigned k = 0; k < ACCTS; k++) {
		const struct acct *a = &fx.accts[k];
		unsigned long long id = a->id;
		redisReply *r = NULL;
		bool okb, okr;
		char want[64], txt[MSG_MAX];

		assert_int_equal(redisGetReply(c, (void **)&r), REDIS_OK);
		off[k] = true;
		if (r->type != REDIS_REPLY_ARRAY) {
			failure(F_BALANCE, "%s: ACCT.GET %llu: %s", when, id,
			        reply_text(r, txt, sizeof(txt)));
			fx.seen[k] = 0;
			freeReplyObject(r);
			continue;
		}
		fx.seen[k] = field_money(r, "balance", &okb);
		tg_money_t reserved = field_money(r, "reserved", &okr);
		if (okb && fx.seen[k] == fx.expect[k]) {
			off[k] = false;
		} else {
			tg_money_t diff = fx.seen[k] - fx.expect[k];
			explain_balance(k, diff, txt, sizeof(txt));
			failure(F_BALANCE,
			        "%s: account %llu: balance %s, expected %s (opening %s + credits - "
			        "charges acknowledged): %s by %s%s",
			        when, id, field_str(r, "balance"), amt(fx.expect[k]),
			        amt(a->opening), diff > 0 ? "too high" : "too low",
			        amt(diff > 0 ? diff : -diff), txt);
		}
		if (!okr || reserved != 0 || field_int(r, "calls") != 0)
			failure(F_RESERVED,
			        "%s: account %llu: reserved %s with %lld calls, once every call "
			        "ended",
			        when, id, field_str(r, "reserved"), field_int(r, "calls"));
		if (fx.crossed[k])
			snprintf(want, sizeof(want), "refill:%llu:1", id);
		else
			want[0] = '\0';
		if (field_int(r, "refill_pending") != (fx.crossed[k] ? 1 : 0) ||
		    strcmp(field_str(r, "refill_request"), want) != 0)
			failure(F_REFILL,
			        "%s: account %llu (%s, balance %s, threshold %s): refill_pending "
			        "%lld, refill_request \"%s\", expected %d and \"%s\"",
			        when, id, a->refill ? "auto-refill" : "no auto-refill",
			        amt(fx.expect[k]), amt(THRESHOLD), field_int(r, "refill_pending"),
			        field_str(r, "refill_request"), fx.crossed[k] ? 1 : 0, want);
		freeReplyObject(r);
	}
}

struct ref {
	uint8_t cl;
	uint32_t op;
};

/* Whether o is sent again by check_replays: every acknowledged op, and AUTHs of ended calls. */
static bool
replayed(const struct op *o)
{
	return o->state == ST_ACKED && (o->kind != OP_AUTH || o->ended);
}

/*
 * Send every acknowledged operation again, account by account: each must
 * answer its first reply, and the account's balance must not move.  The
 * calls that ended are authorized again too: CONFLICT, nothing reserved.
 * For an account whose balance was already wrong (off), an ACCT.GET
 * follows each operation, which names the operations that moved money.
 */
static void
check_replays(const char *when, const bool *off)
{
	redisContext *c = engine();
	size_t total = 0, start[ACCTS + 1] = {0}, fill[ACCTS];

	for (unsigned k = 0; k < CLIENTS; k++)
		for (size_t i = 0; i < fx.cl[k].nops; i++)
			if (replayed(&fx.cl[k].ops[i]))
				start[fx.cl[k].ops[i].acct + 1]++, total++;
	for (unsigned a = 0; a < ACCTS; a++)
		start[a + 1] += start[a];
	struct ref *refs = calloc(total ? total : 1, sizeof(*refs));
	assert_non_null(refs);
	memcpy(fill, start, sizeof(fill));
	for (unsigned k = 0; k < CLIENTS; k++)
		for (size_t i = 0; i < fx.cl[k].nops; i++)
			if (replayed(&fx.cl[k].ops[i]))
				refs[fill[fx.cl[k].ops[i].acct]++] =
				    (struct ref){.cl = (uint8_t)k, .op = (uint32_t)i};

	for (unsigned a = 0; a < ACCTS; a++) {
		unsigned long long id = fx.accts[a].id;
		tg_money_t bal = fx.seen[a];
		unsigned moved = 0;

		for (size_t i = start[a]; i < start[a + 1]; i++) {
			client_append(c, &fx.cl[refs[i].cl], &fx.cl[refs[i].cl].ops[refs[i].op]);
			if (off[a])
				redisAppendCommand(c, "ACCT.GET %llu", id);
		}
		redisAppendCommand(c, "ACCT.GET %llu", id);
		for (size_t i = start[a]; i < start[a + 1]; i++) {
			const struct client *cl = &fx.cl[refs[i].cl];
			const struct op *o = &cl->ops[refs[i].op];
			redisReply *r = NULL;
			char what[400], txt[160];
			bool ok = false;

			assert_int_equal(redisGetReply(c, (void **)&r), REDIS_OK);
			if (o->kind == OP_AUTH) {
				ok = r->type == REDIS_REPLY_ERROR &&
				     strncmp(r->str, "CONFLICT", 8) == 0;
			} else if (r->type == REDIS_REPLY_STRING) {
				tg_money_t v = money(r->str, &ok);
				ok = ok && v == o->reply;
			}
			if (!ok) {
				op_describe(cl, o, what, sizeof(what));
				if (o->kind == OP_AUTH)
					failure(
					    F_ENDED,
					    "%s: %s, a call that ended, authorized again: got %s, "
					    "expected -CONFLICT (the engine forgot its CALL.END)",
					    when, what, reply_text(r, txt, sizeof(txt)));
				else
					failure(
					    F_REPLY,
					    "%s: %s sent again: got %s, expected its first reply "
					    "\"%s\"",
					    when, what, reply_text(r, txt, sizeof(txt)),
					    amt(o->reply));
			}
			freeReplyObject(r);
			if (!off[a])
				continue;
			assert_int_equal(redisGetReply(c, (void **)&r), REDIS_OK);
			tg_money_t now = field_money(r, "balance", &ok);
			freeReplyObject(r);
			if (ok && now != bal) {
				op_describe(cl, o, what, sizeof(what));
				failure(F_MOVED,
				        "%s: %s sent again moved the balance from %s to %s: the "
				        "engine had lost it (acknowledged, not applied)",
				        when, what, amt(bal), amt(now));
				moved++;
				bal = now;
			}
		}
		redisReply *r = NULL;
		bool okb = false, okr = false;
		assert_int_equal(redisGetReply(c, (void **)&r), REDIS_OK);
		tg_money_t now = field_money(r, "balance", &okb);
		tg_money_t reserved = field_money(r, "reserved", &okr);
		if (okb && now != bal && moved == 0)
			failure(F_MOVED,
			        "%s: account %llu: sending its %zu acknowledged operations again "
			        "moved the balance from %s to %s (some were not remembered)",
			        when, id, start[a + 1] - start[a], amt(bal), amt(now));
		if (!okr || reserved != 0)
			failure(
			    F_ENDED,
			    "%s: account %llu: %s reserved after its ended calls were authorized "
			    "again",
			    when, id, field_str(r, "reserved"));
		freeReplyObject(r);
	}
	free(refs);
}

/* Every check, on the engine as it is now; returns the number of failures. */
static unsigned
check_all(const char *when)
{
	bool off[ACCTS];
	unsigned before = fx.failures;
	uint64_t t0 = tg_mono_ms();

	memset(fx.fcount, 0, sizeof(fx.fcount));
	check_stream(when);
	check_accounts(when, off);
	check_replays(when, off);
	fprintf(stderr, "crash: checked %s in %llu ms: %u failures\n", when,
	        (unsigned long long)(tg_mono_ms() - t0), fx.failures - before);
	for (unsigned k = 0; k < F__N; k++)
		if (fx.fcount[k] > 0)
			fprintf(stderr, "crash:   %6u about %s%s\n", fx.fcount[k], fcat_names[k],
			        fx.fcount[k] > FAIL_SHOW ? " (the first ones shown above)" : "");
	return fx.failures - before;
}

/* ------------------------------------------------------------------ */
/* the test                                                            */

/* Traffic before the next kill, ms: mostly 30-400, sometimes a blink, sometimes a snapshot. */
static unsigned
phase_ms(uint64_t *rng)
{
	uint32_t k = below(rng, 100);
	if (k < 10)
		return 1 + below(rng, 30);
	if (k < 22)
		return 1100 + below(rng, 1400);
	return 30 + below(rng, 371);
}

static void
summary(uint64_t t0, unsigned kills, unsigned reboots)
{
	size_t n[4] = {0}, blocked = 0, again = 0, bad = 0;
	uint64_t reconnects = 0, batches = 0, reauths = 0;

	for (unsigned k = 0; k < CLIENTS; k++) {
		reconnects += fx.cl[k].reconnects;
		batches += fx.cl[k].batches;
		reauths += fx.cl[k].reauths;
		for (size_t i = 0; i < fx.cl[k].nops; i++) {
			const struct op *o = &fx.cl[k].ops[i];
			if (o->state == ST_BAD) {
				bad++;
				continue;
			}
			n[o->kind]++;
			blocked += o->kind == OP_AUTH && o->grant == 0;
			again += o->sends > 1;
		}
	}
	unsigned crossed = 0;
	for (unsigned a = 0; a < ACCTS; a++)
		crossed += fx.crossed[a];
	fprintf(stderr,
	        "crash: %u kills (%u with the segment removed) in %llu ms; acknowledged: %zu CDRs, "
	        "%zu credits, %zu calls authorized (%zu blocked), %zu ended; %zu sent again after "
	        "a kill (%llu answered from the id window: applied by the engine that died), %llu "
	        "calls in progress authorized again after a kill with their grant, %zu refused; "
	        "%llu batches, %llu connections; %u of %u refill accounts crossed\n",
	        kills, reboots, (unsigned long long)(tg_mono_ms() - t0), n[OP_CDR], n[OP_CREDIT],
	        n[OP_AUTH], blocked, n[OP_END], again, (unsigned long long)fx.replays,
	        (unsigned long long)reauths, bad, (unsigned long long)batches,
	        (unsigned long long)reconnects, crossed, ACCTS / 4);
}

static void
test_kill9_torture(void **state)
{
	uint64_t rng = fx.seed, t0 = tg_mono_ms();
	unsigned kills = 0, reboots = 0;
	bool restart_failed = false;

	(void)state;
	make_accounts(&rng);
	load_quotes();
	for (unsigned k = 0; k < CLIENTS; k++) {
		fx.cl[k].idx = k;
		fx.cl[k].rng = fx.seed ^ (0x5851f42d4c957f2dULL * (k + 1));
	}
	engine_publish(0);
	for (unsigned k = 0; k < CLIENTS; k++)
		assert_int_equal(pthread_create(&fx.cl[k].thread, NULL, client_main, &fx.cl[k]), 0);

	it_sleep_ms(fx.kills > 0 ? FIRST_PHASE_MS : NOKILL_MS);
	for (unsigned k = 1; k <= fx.kills; k++) {
		unsigned ms = phase_ms(&rng);
		bool reboot = below(&rng, 100) < fx.reboot_pct;
		it_sleep_ms(ms);
		/* Answered from the window in this run: retries the previous run had applied. */
		fx.replays += info_counter("replays");
		uint64_t t = tg_mono_ms();
		if (engine_crash(k, reboot, false) != 0) {
			fprintf(stderr, "crash: the restart after kill %u (%s) failed\n", k,
			        reboot ? "segment removed" : "segment kept");
			restart_failed = true;
			break;
		}
		kills++;
		reboots += reboot;
		fprintf(stderr,
		        "crash: kill %u/%u after %u ms of traffic, %s, up again in %llu ms; %llu "
		        "operations acknowledged, %llu answered from the window when sent again\n",
		        k, fx.kills, ms, reboot ? "segment removed" : "segment kept",
		        (unsigned long long)(tg_mono_ms() - t),
		        (unsigned long long)__atomic_load_n(&fx.acked, __ATOMIC_RELAXED),
		        (unsigned long long)fx.replays);
	}

	/* The clients get everything answered and every call ended, then stop. */
	pthread_mutex_lock(&fx.mu);
	fx.stop = true;
	fx.abort = restart_failed;
	pthread_cond_broadcast(&fx.cv);
	pthread_mutex_unlock(&fx.mu);
	for (unsigned k = 0; k < CLIENTS; k++)
		pthread_join(fx.cl[k].thread, NULL);
	if (restart_failed)
		fail_msg("tollgated did not come back after kill %u (seed %llu; replay with "
		         "TG_CRASH_SEED=%llu)",
		         kills + 1, (unsigned long long)fx.seed, (unsigned long long)fx.seed);

	compute_expected();
	fx.replays += info_counter("replays");
	/* The replays were answered from both tiers: most ids had moved to disk. */
	uint64_t on_disk = info_counter("ids_disk");
	fprintf(stderr, "crash: %llu ids on disk at the end, %llu in memory\n",
	        (unsigned long long)on_disk, (unsigned long long)info_counter("ids_memory"));
	if (fx.kills > 0)
		assert_true(on_disk > IDS_MEMORY);
	summary(t0, kills, reboots);
	/*
	 * Once a round of checks failed, the replays have changed the state the
	 * next round would look at: the first failing round is the one to read.
	 */
	if (check_all("on the live engine") == 0 && fx.kills > 0) {
		assert_int_equal(engine_crash(fx.kills + 1, false, false), 0);
		if (check_all("after one more kill (segment kept)") == 0) {
			assert_int_equal(engine_crash(fx.kills + 2, true, false), 0);
			/*
			 * The journal was pruned all along (small segments, a snapshot a
			 * second): the older verified snapshot and the journal after it
			 * must still rebuild every balance when the newest one rots.
			 */
			if (check_all("after one more kill (segment removed)") == 0) {
				assert_int_equal(engine_crash(fx.kills + 3, true, true), 0);
				check_all("after a kill with the newest snapshot damaged");
			}
		}
	}
	/* A sanitizer that reports and carries on, in any run's log. */
	unsigned reports = 0;
	for (unsigned k = 0; k <= fx.d.runs; k++) {
		static char text[1 << 20];
		char path[IT_PATH_MAX];
		run_log(k, path, sizeof(path));
		file_tail(path, text, sizeof(text));
		if (strstr(text, "runtime error:") != NULL || strstr(text, "Sanitizer") != NULL) {
			fprintf(stderr, "crash: a sanitizer report in %s:\n%s", path, text);
			reports++;
		}
	}
	if (fx.nviol > 0 || fx.failures > 0 || reports > 0) {
		fprintf(stderr,
		        "crash: %u violations during the run (the first %u above), %u failed "
		        "checks at the end\n",
		        fx.nviol, fx.nviol < VIOL_KEEP ? fx.nviol : VIOL_KEEP, fx.failures);
		fail_msg("%u violations, %u failed checks, %u sanitizer reports (seed %llu; replay "
		         "with TG_CRASH_SEED=%llu TG_CRASH_KILLS=%u TG_CRASH_REBOOT=%u%s%s, and "
		         "TG_CRASH_KEEP=1 to keep the engine's logs and data)",
		         fx.nviol, fx.failures, reports, (unsigned long long)fx.seed,
		         (unsigned long long)fx.seed, fx.kills, fx.reboot_pct,
		         strcmp(fx.durability, "durable") != 0 ? " TG_CRASH_DURABILITY=" : "",
		         strcmp(fx.durability, "durable") != 0 ? fx.durability : "");
	}
	if (fx.e != NULL)
		redisFree(fx.e);
	fx.e = NULL;
	assert_int_equal(it_stop(&fx.d), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_kill9_torture, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	/* No redis-server on this machine: skip, as every integration test does. */
	if (!tg_test_redis_present())
		return 77;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
