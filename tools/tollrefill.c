/*
 * tollrefill.c - the refill worker: reads tollgated's refill requests from a
 * Redis stream, charges the customer through the payment gateway, credits
 * the account on the engine and mails a receipt, or, when the charge fails,
 * mails the billing contact once and reports the failure to the engine.
 *
 * Owns its consumer in the group, its pending entries, and the outcome
 * records tollgate:refill:outcome:<request id> (the one word on what became
 * of a request, written before anything customer-visible happens, so a
 * retry, a republished request or another worker taking over follows it
 * instead of charging again) and the counters in tollgate:refill:stats.
 * It must never acknowledge an entry before its outcome is settled (credit
 * accepted, or failure mailed and reported), never charge a request that
 * has an outcome, never send a second mail of a kind for a request (the
 * records tollgate:refill:mail:<request id>:<kind>, beside the notifier's
 * own guarantee), never drop a malformed entry without first copying it to
 * the dead-letter stream, and never let Redis or the engine being down lose
 * a request: it backs off and retries, leaving the entry pending.  Money is
 * micro-units throughout.  One thread; parallelism is several processes in
 * one consumer group.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "gateway.h"
#include "mail.h"
#include "refill_work.h"
#include "tg_assert.h"
#include "tg_clock.h"
#include "tg_engine.h"
#include "tg_log.h"
#include "tg_money.h"
#include "tg_names.h"
#include "tg_refill_wire.h"

#define OUTCOME_PREFIX "tollgate:refill:outcome:"
#define TRIES_PREFIX   "tollgate:refill:tries:"
#define MAIL_PREFIX    "tollgate:refill:mail:"
#define STATS_KEY      "tollgate:refill:stats"
/* Outcomes and mail records are kept a month: far longer than any republication. */
#define OUTCOME_TTL_S (30u * 24 * 3600)
/* Field/value pairs of a malformed entry copied to the dead-letter stream, at most. */
#define DEAD_PAIRS_MAX 1000
/* Bytes of a stream key, NUL included. */
#define STREAM_KEY_MAX 512
/* The test hook (docs/REFILL.md): exit 9 right after the gateway approved a charge. */
#define CRASH_HOOK_ENV "TOLLREFILL_TEST_CRASH_AFTER_CHARGE"
#define CRASH_HOOK_RC  9
/* Entries fetched per read or claim. */
#define BATCH 16
/* Longest BLOCK of a read, ms: how long a SIGTERM may wait to be noticed. */
#define BLOCK_MS_MAX 1000
/* Socket timeout of every connection beyond the BLOCK, ms. */
#define IO_TIMEOUT_MS 5000
/* Longest pause after a Redis or engine failure that --backoff-ms may ask for, ms. */
#define PAUSE_MAX_MS 60000
/* The retry schedule: the longest --retry-period (30 days, in ms), the default (24 hours). */
#define PERIOD_MAX_MS     (30ull * 24 * 3600 * 1000)
#define PERIOD_DEFAULT_MS (24ull * 3600 * 1000)
/* Scheduled retries moved back onto the stream per round trip; the longest wait between looks. */
#define MOVE_BATCH   64
#define MOVE_POLL_MS 1000
/* Longest pause before trying an unreachable Redis or engine again, ms. */
#define RETRY_MAX_MS 10000
/* Bounds of the options. */
#define ATTEMPTS_MAX       30 /* 2^(N-1) shares of the period must fit in 64 bits */
#define CLAIM_EVERY_MIN_MS 100
#define CLAIM_EVERY_MAX_MS 5000
/* Bytes of a stream entry id ("1700000000000-0"), NUL included. */
/* Bytes of a payment token, NUL included. */
#define WORKER_MAGIC 0x7265666cu /* "refl" */

/* Exit status of --once when Redis or the engine stayed unreachable: EX_TEMPFAIL. */
#define EXIT_TEMPFAIL 75

static volatile sig_atomic_t stopping;

/* ------------------------------------------------------------------ */
/* options                                                             */

struct opts {
	char redis_host[256];
	uint16_t redis_port;
	const char *redis_password;
	char engine_host[256];
	uint16_t engine_port;
	const char *engine_password;
	const char *engine_user; /* AUTH <user> <password>: a refill-role user (docs/SECURITY.md) */
	bool has_engine;
	const char *stream, *group;
	const char *dead_stream; /* --dead-stream, or dead_default */
	char dead_default[STREAM_KEY_MAX];
	char consumer[128];
	uint64_t claim_idle_ms;
	unsigned attempts;                  /* charge attempts per refill, the first included */
	uint64_t retry_period_ms;           /* the attempts after a soft failure spread over this */
	uint64_t backoff_ms;                /* pause after a Redis or engine failure, doubling */
	char retry_key[STREAM_KEY_MAX + 8]; /* <stream>:retry, the schedule */
	const char *maildir, *mail_from, *sendmail;
	bool once;
	bool crash_after_charge; /* the test hook, from the environment */
};

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: tollrefill --engine HOST:PORT (--maildir DIR | --sendmail CMD) [options]\n"
	        "  --engine HOST:PORT       tollgated (required)\n"
	        "  --engine-password PW     AUTH to tollgated\n"
	        "  --engine-user NAME       AUTH as this user (a refill-role user of tollgated's\n"
	        "                           users file) with --engine-password\n"
	        "  --redis HOST:PORT        the stream, profiles and outcomes (127.0.0.1:6379)\n"
	        "  --redis-password PW      AUTH to Redis\n"
	        "  --stream KEY             the refill stream (tollgate:refill)\n"
	        "  --dead-stream KEY        where malformed entries go (<stream>:dead)\n"
	        "  --group NAME             the consumer group (refill)\n"
	        "  --consumer NAME          this worker's name in the group (hostname-pid)\n"
	        "  --claim-idle MS          take over entries pending that long elsewhere (60000)\n"
	        "  --attempts N             charge attempts per refill while the gateway times\n"
	        "                           out or errs, spread over --retry-period (3)\n"
	        "  --retry-period TIME      from the first attempt to the last: 90s, 30m, 24h,\n"
	        "                           2d, 1500ms; a bare number is seconds (24h)\n"
	        "  --backoff-ms MS          pause after a Redis or engine failure, doubling (500)\n"
	        "  --maildir DIR            deliver mail into this maildir (made when missing)\n"
	        "  --mail-dir DIR           the same as --maildir\n"
	        "  --sendmail CMD           deliver mail by piping it into CMD (/usr/sbin/sendmail "
	        "-t)\n"
	        "  --mail-from ADDR         the From: address (billing@localhost)\n"
	        "  --currency CODE          ISO 4217 code of the payments, as tollgated's\n"
	        "                           currency setting (USD)\n"
	        "  --once                   process what is there, then exit\n"
	        "docs/REFILL.md, \"Worker\", has the whole story.\n");
}

/* "host:port" (the last ':' splits, so "[::1]" is not supported: write "::1:6379"). */
static bool
parse_addr(const char *s, char *host, size_t cap, uint16_t *port)
{
	const char *colon = strrchr(s, ':');
	uint64_t p;

	if (colon == NULL || colon == s || (size_t)(colon - s) >= cap ||
	    !rw_parse_u64(colon + 1, 1, 65535, &p))
		return false;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	*port = (uint16_t)p;
	return true;
}

/*
 * A duration: a whole number with an optional unit, ms, s, m, h or d (none:
 * seconds), from 1 ms to PERIOD_MAX_MS.
 */
static bool
parse_duration_ms(const char *s, uint64_t *out)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = {{"ms", 1},    {"s", 1000},    {"", 1000},
	             {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
	char num[24];
	size_t n = strspn(s, "0123456789");
	uint64_t v;

	if (n == 0 || n >= sizeof(num))
		return false;
	memcpy(num, s, n);
	num[n] = '\0';
	if (!rw_parse_u64(num, 1, PERIOD_MAX_MS, &v))
		return false;
	for (size_t i = 0; i < TG_ARRAY_LEN(units); i++) {
		if (strcmp(s + n, units[i].unit) != 0)
			continue;
		if (v > PERIOD_MAX_MS / units[i].ms)
			return false;
		*out = v * units[i].ms;
		return true;
	}
	return false;
}

/* 0, or 1 after printing why (the caller exits 1). */
static int
parse_opts(int argc, char **argv, struct opts *o)
{
	enum {
		O_REDIS = 256,
		O_REDIS_PW,
		O_ENGINE,
		O_ENGINE_PW,
		O_ENGINE_USER,
		O_STREAM,
		O_GROUP,
		O_CONSUMER,
		O_CLAIM,
		O_ATTEMPTS,
		O_PERIOD,
		O_BACKOFF,
		O_MAILDIR,
		O_MAILDIR_ALIAS,
		O_MAILFROM,
		O_SENDMAIL,
		O_DEAD,
		O_CURRENCY,
		O_ONCE,
		O_HELP,
	};
	static const struct option longs[] = {
	    {"redis", required_argument, NULL, O_REDIS},
	    {"redis-password", required_argument, NULL, O_REDIS_PW},
	    {"engine", required_argument, NULL, O_ENGINE},
	    {"engine-password", required_argument, NULL, O_ENGINE_PW},
	    {"engine-user", required_argument, NULL, O_ENGINE_USER},
	    {"stream", required_argument, NULL, O_STREAM},
	    {"group", required_argument, NULL, O_GROUP},
	    {"consumer", required_argument, NULL, O_CONSUMER},
	    {"claim-idle", required_argument, NULL, O_CLAIM},
	    {"attempts", required_argument, NULL, O_ATTEMPTS},
	    {"retry-period", required_argument, NULL, O_PERIOD},
	    {"backoff-ms", required_argument, NULL, O_BACKOFF},
	    {"maildir", required_argument, NULL, O_MAILDIR},
	    {"currency", required_argument, NULL, O_CURRENCY},
	    {"mail-dir", required_argument, NULL, O_MAILDIR_ALIAS},
	    {"mail-from", required_argument, NULL, O_MAILFROM},
	    {"sendmail", required_argument, NULL, O_SENDMAIL},
	    {"dead-stream", required_argument, NULL, O_DEAD},
	    {"once", no_argument, NULL, O_ONCE},
	    {"help", no_argument, NULL, O_HELP},
	    {NULL, 0, NULL, 0},
	};
	char host[64];
	uint64_t v;
	int c;

	memset(o, 0, sizeof(*o));
	snprintf(o->redis_host, sizeof(o->redis_host), "127.0.0.1");
	o->redis_port = 6379;
	snprintf(o->engine_host, sizeof(o->engine_host), "127.0.0.1");
	o->engine_port = 6390;
	o->stream = "tollgate:refill";
	o->group = "refill";
	o->claim_idle_ms = 60000;
	o->attempts = 3;
	o->retry_period_ms = PERIOD_DEFAULT_MS;
	o->backoff_ms = 500;
	o->mail_from = "billing@localhost";
	const char *hook = getenv(CRASH_HOOK_ENV);
	o->crash_after_charge = hook != NULL && strcmp(hook, "1") == 0;
	if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(o->consumer, sizeof(o->consumer), "%s-%d", host, (int)getpid());

	while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
		switch (c) {
		case O_REDIS:
			if (!parse_addr(optarg, o->redis_host, sizeof(o->redis_host),
			                &o->redis_port))
				goto bad;
			break;
		case O_REDIS_PW:
			o->redis_password = optarg;
			break;
		case O_ENGINE:
			if (!parse_addr(optarg, o->engine_host, sizeof(o->engine_host),
			                &o->engine_port))
				goto bad;
			o->has_engine = true;
			break;
		case O_ENGINE_PW:
			o->engine_password = optarg;
			break;
		case O_ENGINE_USER:
			o->engine_user = optarg;
			break;
		case O_STREAM:
			if (optarg[0] == '\0' || strlen(optarg) + 6 > STREAM_KEY_MAX)
				goto bad;
			o->stream = optarg;
			break;
		case O_DEAD:
			if (optarg[0] == '\0' || strlen(optarg) >= STREAM_KEY_MAX)
				goto bad;
			o->dead_stream = optarg;
			break;
		case O_GROUP:
			o->group = optarg;
			break;
		case O_CONSUMER:
			if (optarg[0] == '\0' ||
			    (size_t)snprintf(o->consumer, sizeof(o->consumer), "%s", optarg) >=
			        sizeof(o->consumer))
				goto bad;
			break;
		case O_CLAIM:
			if (!rw_parse_u64(optarg, 1, UINT32_MAX, &o->claim_idle_ms))
				goto bad;
			break;
		case O_ATTEMPTS:
			if (!rw_parse_u64(optarg, 1, ATTEMPTS_MAX, &v))
				goto bad;
			o->attempts = (unsigned)v;
			break;
		case O_PERIOD:
			if (!parse_duration_ms(optarg, &o->retry_period_ms))
				goto bad;
			break;
		case O_BACKOFF:
			if (!rw_parse_u64(optarg, 0, PAUSE_MAX_MS, &o->backoff_ms))
				goto bad;
			break;
		case O_MAILDIR:
		case O_MAILDIR_ALIAS:
			if (optarg[0] == '\0')
				goto bad;
			o->maildir = optarg;
			break;
		case O_MAILFROM:
			o->mail_from = optarg;
			break;
		case O_CURRENCY:
			if (tg_currency_find(optarg) == NULL) {
				fprintf(
				    stderr,
				    "tollrefill: bad value \"%s\" for --currency: not a known ISO "
				    "4217 code (%s)\n",
				    optarg, tg_currency_codes());
				return 1;
			}
			tg_currency_set(tg_currency_find(optarg));
			break;
		case O_SENDMAIL:
			if (optarg[0] == '\0')
				goto bad;
			o->sendmail = optarg;
			break;
		case O_ONCE:
			o->once = true;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "tollrefill: unexpected argument \"%s\"\n", argv[optind]);
		return 1;
	}
	if (!o->has_engine) {
		fprintf(stderr, "tollrefill: --engine HOST:PORT is required: the address of "
		                "tollgated, to credit the refills on\n");
		return 1;
	}
	if ((o->maildir == NULL) == (o->sendmail == NULL)) {
		fprintf(stderr, "tollrefill: %s\n",
		        o->maildir == NULL ? "--maildir DIR or --sendmail CMD is required: where "
		                             "receipts and failure notices go"
		                           : "--maildir and --sendmail are exclusive: choose one "
		                             "way to deliver mail");
		return 1;
	}
	if (o->dead_stream == NULL) {
		snprintf(o->dead_default, sizeof(o->dead_default), "%s:dead", o->stream);
		o->dead_stream = o->dead_default;
	}
	snprintf(o->retry_key, sizeof(o->retry_key), "%s:retry", o->stream);
	if (strcmp(o->dead_stream, o->stream) == 0) {
		fprintf(stderr, "tollrefill: --dead-stream must not be the refill stream (%s)\n",
		        o->stream);
		return 1;
	}
	if (!tg_mail_address_ok(o->mail_from)) {
		fprintf(stderr, "tollrefill: --mail-from \"%s\" is not a plain address\n",
		        o->mail_from);
		return 1;
	}
	return 0;
bad:
	fprintf(stderr, "tollrefill: bad value \"%s\" for --%s\n", optarg, longs[c - O_REDIS].name);
	return 1;
}

/* ------------------------------------------------------------------ */
/* time, signals, pauses                                               */

static void
on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

/* Sleep ms, cut short by SIGTERM/SIGINT.  False when stopping. */
static bool
pause_ms(uint64_t ms)
{
	uint64_t end = tg_mono_ms() + ms;

	while (!stopping) {
		uint64_t t = tg_mono_ms();
		if (t >= end)
			return true;
		uint64_t left = end - t;
		struct timespec ts = {.tv_sec = (time_t)(left / 1000),
		                      .tv_nsec = (long)(left % 1000) * 1000000};
		nanosleep(&ts, NULL); /* EINTR: a signal, checked above */
	}
	return false;
}

/* ------------------------------------------------------------------ */
/* the worker and its connections                                      */

struct counts {
	uint64_t approved, failed, malformed, replayed, refused, voided, scheduled;
};

struct worker {
	uint32_t magic;
	const struct opts *o;
	redisContext *r; /* Redis: stream, profiles, outcomes; NULL while down */
	redisContext *e; /* tollgated; NULL while down */
	struct tg_gateway gw;
	struct tg_notifier mail;
	bool read_pending;               /* re-read this consumer's pending entries first */
	char pending_from[RW_MSGID_MAX]; /* the pending read goes on after this id */
	bool claim_done;                 /* --once: the one XAUTOCLAIM pass is over */
	char claim_cursor[RW_MSGID_MAX];
	uint64_t claim_due_ms; /* next XAUTOCLAIM */
	uint64_t retry_ms;     /* next pause after a Redis or engine failure */
	uint64_t move_due_ms;  /* wall clock: next look for scheduled retries that are due */
	unsigned failures_in_row;
	struct counts n;
};

/* Read this consumer's pending entries again, from the first. */
static void
want_pending(struct worker *w)
{
	w->read_pending = true;
	snprintf(w->pending_from, sizeof(w->pending_from), "0");
}

static struct timeval
timeval_ms(uint64_t ms)
{
	return (struct timeval){.tv_sec = (time_t)(ms / 1000),
	                        .tv_usec = (suseconds_t)(ms % 1000) * 1000};
}

/* Close *c after an I/O error (already logged by the caller). */
static void
drop(redisContext **c)
{
	if (*c != NULL)
		redisFree(*c);
	*c = NULL;
}

/* A connection with timeouts, authenticated when password is set; NULL after logging. */
static redisContext *
dial(const char *what, const char *host, uint16_t port, const char *user, const char *password,
     uint64_t io_ms)
{
	struct timeval tv = timeval_ms(IO_TIMEOUT_MS);
	redisContext *c = redisConnectWithTimeout(host, port, tv);

	if (c == NULL || c->err) {
		tg_log("%s %s:%u: cannot connect: %s", what, host, (unsigned)port,
		       c ? c->errstr : "out of memory");
		drop(&c);
		return NULL;
	}
	tv = timeval_ms(io_ms);
	if (redisSetTimeout(c, tv) != REDIS_OK) {
		tg_log("%s %s:%u: cannot set timeouts", what, host, (unsigned)port);
		drop(&c);
		return NULL;
	}
	if (password != NULL) {
		redisReply *r = user != NULL ? redisCommand(c, "AUTH %s %s", user, password)
		                             : redisCommand(c, "AUTH %s", password);
		bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
		if (!ok)
			tg_log("%s %s:%u: AUTH failed: %s", what, host, (unsigned)port,
			       r == NULL                      ? c->errstr
			       : r->type == REDIS_REPLY_ERROR ? r->str
			                                      : "?");
		if (r != NULL)
			freeReplyObject(r);
		if (!ok) {
			drop(&c);
			return NULL;
		}
	}
	return c;
}

/*
 * Redis connected, with the group in place (XGROUP CREATE ... $ MKSTREAM;
 * BUSYGROUP means another worker made it).  False after logging.
 */
static bool
redis_up(struct worker *w)
{
	const struct opts *o = w->o;

	if (w->r != NULL)
		return true;
	w->r = dial("redis", o->redis_host, o->redis_port, NULL, o->redis_password,
	            IO_TIMEOUT_MS + BLOCK_MS_MAX);
	if (w->r == NULL)
		return false;
	redisReply *r = redisCommand(w->r, "XGROUP CREATE %s %s $ MKSTREAM", o->stream, o->group);
	bool ok =
	    r != NULL && (r->type == REDIS_REPLY_STATUS ||
	                  (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) == 0));
	if (!ok)
		tg_log("redis: XGROUP CREATE %s %s: %s", o->stream, o->group,
		       r == NULL                      ? w->r->errstr
		       : r->type == REDIS_REPLY_ERROR ? r->str
		                                      : "?");
	else if (r->type == REDIS_REPLY_STATUS)
		tg_log("redis: created group %s on %s", o->group, o->stream);
	if (r != NULL)
		freeReplyObject(r);
	if (!ok) {
		drop(&w->r);
		return false;
	}
	/* A new connection may have lost replies in flight: what we hold is pending, re-read it. */
	want_pending(w);
	return true;
}

/*
 * One Redis command.  The reply, never NULL and never an error reply; or
 * NULL after logging (an I/O error drops the connection, NOGROUP too so the
 * group is made again).  Every NULL is a transient failure to its caller.
 */
static redisReply *
rq(struct worker *w, const char *fmt, ...)
{
	va_list ap;
	redisReply *r;

	if (!redis_up(w))
		return NULL;
	va_start(ap, fmt);
	r = redisvCommand(w->r, fmt, ap);
	va_end(ap);
	if (r == NULL) {
		tg_log("redis: %s", w->r->errstr);
		drop(&w->r);
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		tg_log("redis said: %s", r->str);
		if (strncmp(r->str, "NOGROUP", 7) == 0)
			drop(&w->r);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/* Engine connected and authenticated; false after logging. */
static bool
engine_up(struct worker *w)
{
	const struct opts *o = w->o;

	if (w->e == NULL)
		w->e = dial("engine", o->engine_host, o->engine_port, o->engine_user,
		            o->engine_password, IO_TIMEOUT_MS);
	return w->e != NULL;
}

/* How an engine command went. */
enum engine_said {
	E_OK,      /* the reply is in the out parameter */
	E_DOWN,    /* unreachable, or refused for now (NOAUTH, WRONGPASS, FULL): retry */
	E_REFUSED, /* a final error reply, copied to why */
};

/*
 * One engine command.  On E_OK *out holds the reply (caller frees); on
 * E_REFUSED why holds the error line.  I/O errors drop the connection.  A
 * connection that had been open a while may have been closed by the
 * engine's idle timeout, so an I/O error on it is retried once on a fresh
 * one: every command sent here is idempotent on its request id.
 */
static enum engine_said
eq(struct worker *w, redisReply **out, char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;
	redisReply *r = NULL;

	*out = NULL;
	for (int tries = w->e != NULL ? 2 : 1; tries > 0 && r == NULL; tries--) {
		if (!engine_up(w))
			return E_DOWN;
		va_start(ap, fmt);
		r = redisvCommand(w->e, fmt, ap);
		va_end(ap);
		if (r == NULL) {
			tg_log("engine: %s", w->e->errstr);
			drop(&w->e);
		}
	}
	if (r == NULL)
		return E_DOWN;
	if (r->type != REDIS_REPLY_ERROR) {
		*out = r;
		return E_OK;
	}
	rw_printable(r->str, r->len, why, whylen);
	freeReplyObject(r);
	if (strncmp(why, "NOAUTH", 6) == 0 || strncmp(why, "WRONGPASS", 9) == 0 ||
	    strncmp(why, "FULL", 4) == 0) {
		tg_log("engine said: %s", why);
		drop(&w->e);
		return E_DOWN;
	}
	return E_REFUSED;
}

/* ------------------------------------------------------------------ */
/* requests: one stream entry                                          */

/* ------------------------------------------------------------------ */
/* the customer profile                                                */

/* Read the profile of acct (TG_PROFILE_PREFIX "<acct>") into p.  False on a transient Redis
 * failure. */
static bool
profile_get(struct worker *w, uint64_t acct, struct rw_profile *p)
{
	redisReply *r;

	memset(p, 0, sizeof(*p));
	if (!redis_up(w))
		return false;
	r = redisCommand(w->r, "HGETALL " TG_PROFILE_PREFIX "%llu", (unsigned long long)acct);
	if (r == NULL) {
		tg_log("redis: %s", w->r->errstr);
		drop(&w->r);
		return false;
	}
	if (r->type == REDIS_REPLY_ERROR) /* WRONGTYPE: not a profile; the request fails */
		tg_log("account %llu: profile unreadable: %s", (unsigned long long)acct, r->str);
	rw_profile_read(r, p);
	freeReplyObject(r);
	return true;
}

/* ------------------------------------------------------------------ */
/* outcomes: what became of a request, recorded before anyone is told  */

/* The recorded outcome of request id into oc (RW_OC_NONE: none).  False on a Redis failure. */
static bool
outcome_get(struct worker *w, const char *id, struct rw_outcome *oc)
{
	redisReply *r = rq(w, "GET " OUTCOME_PREFIX "%s", id);

	memset(oc, 0, sizeof(*oc));
	if (r == NULL)
		return false;
	if (r->type == REDIS_REPLY_STRING && !rw_outcome_parse(r->str, oc)) {
		char shown[64];
		tg_log("%s: outcome record \"%s\" is not one of ours: replaced", id,
		       rw_printable(r->str, r->len, shown, sizeof(shown)));
		oc->state = RW_OC_NONE;
		oc->unreadable = true;
	}
	freeReplyObject(r);
	return true;
}

/*
 * Record oc for id.  how: "NX" (first outcome: 1 if recorded, 0 if another
 * worker's is there) or "XX" (moving our own record on).  -1 on a Redis
 * failure.  The record lives OUTCOME_TTL_S from its first writing.
 */
static int
outcome_put(struct worker *w, const char *id, const struct rw_outcome *oc, const char *how)
{
	char text[RW_OUTCOME_TEXT_MAX];
	redisReply *r;

	rw_outcome_format(oc, text, sizeof(text));
	if (strcmp(how, "NX") == 0)
		r = rq(w, "SET " OUTCOME_PREFIX "%s %s NX EX %u", id, text, OUTCOME_TTL_S);
	else
		r = rq(w, "SET " OUTCOME_PREFIX "%s %s XX KEEPTTL", id, text);
	if (r == NULL)
		return -1;
	int won = r->type == REDIS_REPLY_STATUS;
	freeReplyObject(r);
	/* XX finds no key only if the record expired under us: write it afresh. */
	if (!won && strcmp(how, "XX") == 0)
		return outcome_put(w, id, oc, "NX");
	return won;
}

/* ------------------------------------------------------------------ */
/* settling a request                                                  */

enum step {
	STEP_DONE,  /* acknowledged */
	STEP_RETRY, /* Redis, the engine or the mail failed, or stopping: left pending */
};

/* XACK the entry and count it, in one MULTI/EXEC.  Counts locally too. */
static enum step
ack(struct worker *w, const char *msgid, const char *counter, uint64_t *local)
{
	const struct opts *o = w->o;
	bool ok = true;

	if (!redis_up(w))
		return STEP_RETRY;
	redisAppendCommand(w->r, "MULTI");
	redisAppendCommand(w->r, "XACK %s %s %s", o->stream, o->group, msgid);
	redisAppendCommand(w->r, "HINCRBY " STATS_KEY " %s 1", counter);
	redisAppendCommand(w->r, "EXEC");
	for (int i = 0; i < 4; i++) {
		void *p = NULL;
		if (redisGetReply(w->r, &p) != REDIS_OK || p == NULL) {
			tg_log("redis: %s", w->r->errstr);
			drop(&w->r);
			return STEP_RETRY;
		}
		redisReply *r = p;
		if (i == 3 && r->type != REDIS_REPLY_ARRAY) {
			tg_log("redis: EXEC of the XACK of %s: %s", msgid,
			       r->type == REDIS_REPLY_ERROR ? r->str : "aborted");
			ok = false;
		}
		freeReplyObject(r);
	}
	if (!ok)
		return STEP_RETRY;
	(*local)++;
	return STEP_DONE;
}

/*
 * Move a malformed entry to the dead-letter stream and acknowledge it, in
 * one script: atomic like MULTI/EXEC, and unlike it the XACK is never run
 * when the XADD failed (a dead-letter key of another type), and nothing is
 * run when the entry is no longer pending at this consumer (another worker
 * took it over and moves it itself): the entry lands there exactly once.
 * KEYS: stream, dead-letter stream, stats; ARGV: group, consumer, entry id,
 * then the fields to add.
 */
static const char dead_lua[] =
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])\n"
    "if #p == 0 then return 0 end\n"
    "redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])\n"
    "redis.call('HINCRBY', KEYS[3], 'malformed', 1)\n"
    "return 1\n";

/* The arguments of one command, as redisCommandArgv takes them. */
struct args {
	const char **v;
	size_t *len;
	size_t n, cap;
};

static void
arg_add(struct args *a, const char *s, size_t len)
{
	TG_ASSERT(a->n < a->cap);
	a->v[a->n] = s;
	a->len[a->n++] = len;
}

static void
arg_str(struct args *a, const char *s)
{
	arg_add(a, s, strlen(s));
}

/*
 * A malformed entry: its fields as they were (the first DEAD_PAIRS_MAX
 * pairs), plus reason (why, with the offending value) and source-id (its
 * id in the refill stream), go to --dead-stream; then it is acknowledged.
 * STEP_RETRY leaves it pending (Redis failed or refused).
 */
static enum step
dead_letter(struct worker *w, const redisReply *entry, const struct rw_request *q)
{
	const struct opts *o = w->o;
	const redisReply *kv = entry->element[1];
	size_t pairs, total = 0;
	char reason[sizeof(q->why) + 64];
	enum step s = STEP_RETRY;
	redisReply *r = NULL;

	/*
	 * A request that can never be charged as it stands is a failed refill:
	 * the engine is told first, so its flag clears and the account can
	 * refill again (no mail: the customer's card was never tried).
	 */
	if (q->reportable) {
		char why[160];
		switch (eq(w, &r, why, sizeof(why), "ACCT.REFILL.FAILED %llu %s malformed",
		           (unsigned long long)q->account, q->id)) {
		case E_DOWN:
			return STEP_RETRY;
		case E_REFUSED:
			tg_log("%s: the engine refused ACCT.REFILL.FAILED: %s", q->id, why);
			break;
		case E_OK:
			freeReplyObject(r);
			r = NULL;
			break;
		}
	}
	if (kv->type == REDIS_REPLY_ARRAY)
		total = kv->elements / 2;
	pairs = total < DEAD_PAIRS_MAX ? total : DEAD_PAIRS_MAX;
	if (pairs < total)
		snprintf(reason, sizeof(reason), "%s (%zu fields, the first %d kept)", q->why,
		         total, DEAD_PAIRS_MAX);
	else
		snprintf(reason, sizeof(reason), "%s", q->why);

	/* EVAL script 3 keys group consumer id, the pairs, reason and source-id. */
	struct args a = {.cap = 9 + 2 * pairs + 4};
	a.v = calloc(a.cap, sizeof(*a.v));
	a.len = calloc(a.cap, sizeof(*a.len));
	if (a.v == NULL || a.len == NULL) {
		tg_log("stream entry %s: out of memory", q->msgid);
		goto out;
	}
	arg_str(&a, "EVAL");
	arg_add(&a, dead_lua, sizeof(dead_lua) - 1);
	arg_str(&a, "3");
	arg_str(&a, o->stream);
	arg_str(&a, o->dead_stream);
	arg_str(&a, STATS_KEY);
	arg_str(&a, o->group);
	arg_str(&a, o->consumer);
	arg_str(&a, q->msgid);
	for (size_t i = 0; i < pairs; i++) {
		const redisReply *k = kv->element[2 * i], *v = kv->element[2 * i + 1];
		bool str = k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING;
		arg_add(&a, str ? k->str : "?", str ? k->len : 1);
		arg_add(&a, str ? v->str : "?", str ? v->len : 1);
	}
	arg_str(&a, "reason");
	arg_str(&a, reason);
	arg_str(&a, "source-id");
	arg_str(&a, q->msgid);
	TG_ASSERT(a.n == a.cap);
	if (!redis_up(w))
		goto out;
	r = redisCommandArgv(w->r, (int)a.n, a.v, a.len);
	if (r == NULL) {
		tg_log("redis: %s", w->r->errstr);
		drop(&w->r);
		goto out;
	}
	if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
		w->n.malformed++;
		tg_log("stream entry %s: malformed (%s): %smoved to %s and acknowledged", q->msgid,
		       q->why, q->reportable ? "reported failed to the engine, " : "",
		       o->dead_stream);
		s = STEP_DONE;
	} else if (r->type == REDIS_REPLY_INTEGER) {
		tg_log("stream entry %s: malformed (%s): no longer pending here (taken over): left "
		       "to its new owner",
		       q->msgid, q->why);
		s = STEP_DONE;
	} else {
		tg_log("stream entry %s: malformed (%s): cannot move it to %s: %s; left pending",
		       q->msgid, q->why, o->dead_stream,
		       r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
	}
out:
	if (r != NULL)
		freeReplyObject(r);
	free(a.v);
	free(a.len);
	return s;
}

/* The mail fields both kinds share. */
static void
mail_fill(struct tg_mail_refill *m, const struct rw_request *q, const struct rw_profile *p,
          const struct rw_outcome *oc)
{
	memset(m, 0, sizeof(*m));
	m->request_id = q->id;
	m->account = q->account;
	m->to = p->email;
	m->name = p->name;
	m->method = p->method[0] ? p->method : NULL;
	m->token = p->token;
	m->amount = oc->state == RW_OC_FAILED ? q->amount : oc->amount;
	m->balance_after = oc->balance;
	m->reference = oc->ref;
	m->reason = oc->reason;
	m->attempts = oc->attempts;
	m->has_balance = q->has_balance;
	m->balance_at_request = q->balance;
}

/*
 * The mail record of a request: 1 when the mail of kind is recorded as
 * sent (or being sent), 0 when not, -1 on a Redis failure.  With how "NX"
 * it records it (1: recorded by this call, 0: it was there), with "GET"
 * it only looks.
 */
static int
mail_record(struct worker *w, const char *id, enum tg_mail_kind kind, const char *how)
{
	redisReply *r;
	int rc;

	if (strcmp(how, "GET") == 0) {
		r = rq(w, "EXISTS " MAIL_PREFIX "%s:%s", id, tg_mail_kind_name(kind));
		if (r == NULL)
			return -1;
		rc = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
	} else {
		r = rq(w, "SET " MAIL_PREFIX "%s:%s %s NX EX %u", id, tg_mail_kind_name(kind),
		       w->o->consumer, OUTCOME_TTL_S);
		if (r == NULL)
			return -1;
		rc = r->type == REDIS_REPLY_STATUS;
	}
	freeReplyObject(r);
	return rc;
}

/*
 * Send one mail, once.  The record tollgate:refill:mail:<id>:<kind> says a
 * mail went (or was claimed): a reader emptying the maildir does not make
 * it go again.  An exclusive notifier (the maildir) is asked first and the
 * record written after, so a crash in between finds the mail in the
 * maildir; any other (sendmail) is claimed first and released when it
 * fails, so a crash in between loses that mail rather than sending it twice.
 * Sets *said to what the log line says about it; false when it must be
 * tried again (the mail is not out yet, or Redis failed).
 */
static bool
mail_once(struct worker *w, enum tg_mail_kind kind, const struct rw_request *q,
          const struct rw_profile *p, const struct rw_outcome *oc, const char **said)
{
	struct tg_mail_refill m;
	int rc;

	if (p->email[0] == '\0') {
		*said = "no mail (no billing email on file)";
		return true;
	}
	rc = mail_record(w, q->id, kind, "GET");
	if (rc != 0) {
		*said = "mail already sent";
		return rc > 0;
	}
	bool exclusive = w->mail.ops->exclusive;
	if (!exclusive) {
		rc = mail_record(w, q->id, kind, "NX");
		if (rc <= 0) {
			*said = "mail already sent";
			return rc == 0;
		}
	}
	mail_fill(&m, q, p, oc);
	rc = tg_notify(&w->mail, kind, &m);
	if (rc == -EINVAL) {
		/* Cannot happen with a parsed request and a checked address: never loop on it. */
		tg_log("%s: the %s mail cannot be composed: not sent", q->id,
		       tg_mail_kind_name(kind));
		*said = "no mail (cannot be composed)";
		return true;
	}
	if (rc < 0) {
		tg_log("%s: the %s mail was not delivered by %s: %s", q->id,
		       tg_mail_kind_name(kind), w->mail.ops->name, strerror(-rc));
		if (!exclusive) {
			redisReply *r =
			    rq(w, "DEL " MAIL_PREFIX "%s:%s", q->id, tg_mail_kind_name(kind));
			if (r != NULL)
				freeReplyObject(r);
		}
		return false;
	}
	if (exclusive && mail_record(w, q->id, kind, "NX") < 0)
		return false; /* the retry finds the mail in the maildir */
	*said = rc == 1 ? "mailed" : "mail already sent";
	return true;
}

/* An approved charge: credit it (once), mail the receipt (once), acknowledge. */
static enum step
settle_approved(struct worker *w, const struct rw_request *q, const struct rw_profile *p,
                struct rw_outcome *oc, bool replay)
{
	char amount[TG_MONEY_STR_MAX], bal[TG_MONEY_STR_MAX], why[160];
	const char *mailed;

	tg_money_format(oc->amount, amount);
	if (oc->state == RW_OC_APPROVED) {
		redisReply *r;
		/* Exactly once on the txid: a retry of this credit is a replay, not a second
		 * credit. */
		switch (eq(w, &r, why, sizeof(why), "ACCT.CREDIT %llu %s %s",
		           (unsigned long long)q->account, amount, q->id)) {
		case E_DOWN:
			return STEP_RETRY;
		case E_REFUSED:
			tg_log("%s account %llu: CHARGED %s BUT NOT CREDITED: the engine said "
			       "\"%s\"; acknowledged, an operator must credit it",
			       q->id, (unsigned long long)q->account, amount, why);
			return ack(w, q->msgid, "refused", &w->n.refused);
		case E_OK:
			break;
		}
		bool ok = (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
		          tg_money_parse(r->str, r->len, &oc->balance) == 0;
		freeReplyObject(r);
		if (!ok) {
			tg_log("%s: the engine's reply to ACCT.CREDIT is not an amount", q->id);
			drop(&w->e);
			return STEP_RETRY;
		}
		oc->state = RW_OC_CREDITED;
		if (outcome_put(w, q->id, oc, "XX") < 0)
			return STEP_RETRY;
	}
	if (!mail_once(w, TG_MAIL_RECEIPT, q, p, oc, &mailed))
		return STEP_RETRY;
	enum step s = replay ? ack(w, q->msgid, "replayed", &w->n.replayed)
	                     : ack(w, q->msgid, "approved", &w->n.approved);
	if (s != STEP_DONE)
		return s;
	tg_money_format(oc->balance, bal);
	tg_log("%s account %llu: %sapproved: charged %s by %s (ref %s, %u attempt%s), credited, "
	       "balance %s, receipt %s",
	       q->id, (unsigned long long)q->account, replay ? "replayed, already " : "", amount,
	       p->method[0] ? p->method : "the method on file", oc->ref, oc->attempts,
	       oc->attempts == 1 ? "" : "s", bal, mailed);
	return STEP_DONE;
}

/* A failed refill: mail the billing contact (once), report to the engine, acknowledge. */
static enum step
settle_failed(struct worker *w, const struct rw_request *q, const struct rw_profile *p,
              const struct rw_outcome *oc, bool replay)
{
	char why[160];
	const char *mailed, *reported = "reported";
	redisReply *r;

	if (!mail_once(w, TG_MAIL_FAILURE, q, p, oc, &mailed))
		return STEP_RETRY;
	switch (eq(w, &r, why, sizeof(why), "ACCT.REFILL.FAILED %llu %s %s",
	           (unsigned long long)q->account, q->id, oc->reason)) {
	case E_DOWN:
		return STEP_RETRY;
	case E_REFUSED:
		/* NOACCOUNT or not its request: nothing in flight to clear, nothing to retry. */
		tg_log("%s: the engine refused ACCT.REFILL.FAILED: %s", q->id, why);
		reported = "engine refused the report";
		break;
	case E_OK:
		freeReplyObject(r);
		break;
	}
	enum step s = replay ? ack(w, q->msgid, "replayed", &w->n.replayed)
	                     : ack(w, q->msgid, "failed", &w->n.failed);
	if (s != STEP_DONE)
		return s;
	char tries[32];
	if (oc->attempts == 0)
		snprintf(tries, sizeof(tries), "nothing charged");
	else
		snprintf(tries, sizeof(tries), "after %u attempt%s", oc->attempts,
		         oc->attempts == 1 ? "" : "s");
	tg_log("%s account %llu: %sfailed (%s, %s): failure %s, %s", q->id,
	       (unsigned long long)q->account, replay ? "replayed, already " : "", oc->reason,
	       tries, mailed, reported);
	return STEP_DONE;
}

/*
 * One charge attempt of q through the gateway, counted first in the
 * request's attempt record (tollgate:refill:tries:<id>, shared by every
 * worker and restart), so a retry from the schedule knows which attempt it
 * is.  Fills oc: APPROVED, FAILED (a hard failure, or the last attempt),
 * or NONE with oc->reason the soft failure when another attempt is due.
 * STEP_RETRY when Redis failed before the gateway was asked.
 */
static enum step
charge(struct worker *w, const struct rw_request *q, const struct rw_profile *p,
       struct rw_outcome *oc)
{
	const struct opts *o = w->o;

	memset(oc, 0, sizeof(*oc));
	redisReply *r = rq(w, "INCR " TRIES_PREFIX "%s", q->id);
	if (r == NULL)
		return STEP_RETRY;
	long long k = r->type == REDIS_REPLY_INTEGER ? r->integer : 1;
	freeReplyObject(r);
	r = rq(w, "EXPIRE " TRIES_PREFIX "%s %u", q->id, OUTCOME_TTL_S);
	if (r != NULL)
		freeReplyObject(r);
	oc->attempts = k < 1 ? 1 : k > 1000 ? 1000 : (unsigned)k;
	enum tg_charge_outcome out =
	    tg_gateway_charge(&w->gw, q->id, p->method, p->token, q->amount, oc->ref);
	if (out == TG_CHARGE_APPROVED && o->crash_after_charge) {
		/* The test hook: die where a crash hurts most, charged and nothing recorded. */
		tg_log("%s: %s=1: exiting %d right after the charge", q->id, CRASH_HOOK_ENV,
		       CRASH_HOOK_RC);
		_exit(CRASH_HOOK_RC);
	}
	rw_charged(oc, out, o->attempts, q->amount);
	return STEP_DONE;
}

/*
 * Put q's next attempt on the schedule, in one script: the entry's fields
 * into the hash <stream>:retry:<request id>, the request id into the
 * sorted set <stream>:retry at its due time (Unix ms), the entry
 * acknowledged and counted `scheduled`.  Nothing is done when the entry is
 * no longer pending at this consumer (another worker took it over).
 * KEYS: stream, schedule, the hash, stats; ARGV: group, consumer, entry id,
 * due, request id, then the fields.
 */
_Static_assert(OUTCOME_TTL_S == 2592000u, "schedule_lua keeps the fields as long as outcomes");
static const char schedule_lua[] =
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])\n"
    "if #p == 0 then return 0 end\n"
    "redis.call('DEL', KEYS[3])\n"
    "redis.call('HSET', KEYS[3], unpack(ARGV, 6))\n"
    "redis.call('EXPIRE', KEYS[3], 2592000)\n"
    "redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])\n"
    "redis.call('HINCRBY', KEYS[4], 'scheduled', 1)\n"
    "return 1\n";

/*
 * Move the retries that are due back onto the stream, as new entries with
 * the fields they had, and forget them; in one script, so a retry is on
 * the schedule or on the stream, never both, never neither.  Returns the
 * number moved and the due time of the next one ("" when none).
 * KEYS: schedule, stream; ARGV: now (Unix ms), the hashes' prefix, batch.
 */
static const char move_lua[] =
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, "
    "tonumber(ARGV[3]))\n"
    "for _, id in ipairs(due) do\n"
    "  local h = ARGV[2] .. id\n"
    "  local f = redis.call('HGETALL', h)\n"
    "  if #f > 0 then redis.call('XADD', KEYS[2], '*', unpack(f)) end\n"
    "  redis.call('DEL', h)\n"
    "  redis.call('ZREM', KEYS[1], id)\n"
    "end\n"
    "local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "return {#due, nxt[2] or ''}\n";

/* Whether a retry of request id is on the schedule: 1 yes, 0 no, -1 Redis failed. */
static int
scheduled(struct worker *w, const char *id)
{
	redisReply *r = rq(w, "ZSCORE %s %s", w->o->retry_key, id);
	if (r == NULL)
		return -1;
	int yes = r->type == REDIS_REPLY_STRING;
	freeReplyObject(r);
	return yes;
}

/* The time of day of a wall-clock ms, for the log. */
static const char *
clock_of(uint64_t ms, char *buf, size_t cap)
{
	struct tm tm;
	time_t t = (time_t)(ms / 1000);
	if (gmtime_r(&t, &tm) == NULL || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, cap, "?");
	return buf;
}

static enum step settle_void(struct worker *w, const struct rw_request *q, const char *why);

/*
 * A soft failure with attempts left: tell the engine a retry is scheduled
 * (ACCT.REFILL.CLAIM ... LEASE, so it does not republish the request
 * meanwhile, and so an account closed since is settled now: no charge, no
 * mail), then schedule it and acknowledge the entry.  No mail: only a refill
 * that has finally failed is mailed.
 */
static enum step
schedule(struct worker *w, const redisReply *entry, const struct rw_request *q,
         const struct rw_outcome *oc)
{
	const struct opts *o = w->o;
	const redisReply *kv = entry->element[1];
	uint64_t delay = rw_retry_delay_ms(o->retry_period_ms, o->attempts, oc->attempts),
	         due = tg_clock_ms(CLOCK_REALTIME) + delay;
	char why[160], hash[STREAM_KEY_MAX + TG_CALLID_MAX + 16], dues[24], at[32];
	enum step s = STEP_RETRY;
	redisReply *r;

	switch (eq(w, &r, why, sizeof(why), "ACCT.REFILL.CLAIM %llu %s LEASE %llu",
	           (unsigned long long)q->account, q->id,
	           (unsigned long long)((delay + 999) / 1000))) {
	case E_DOWN:
		return STEP_RETRY;
	case E_REFUSED:
		return settle_void(w, q, why);
	case E_OK:
		freeReplyObject(r);
		break;
	}
	snprintf(hash, sizeof(hash), "%s:%s", o->retry_key, q->id);
	snprintf(dues, sizeof(dues), "%llu", (unsigned long long)due);
	size_t pairs = kv->elements / 2;
	struct args a = {.cap = 12 + 2 * pairs};
	a.v = calloc(a.cap, sizeof(*a.v));
	a.len = calloc(a.cap, sizeof(*a.len));
	if (a.v == NULL || a.len == NULL) {
		tg_log("%s: out of memory", q->id);
		goto out;
	}
	arg_str(&a, "EVAL");
	arg_add(&a, schedule_lua, sizeof(schedule_lua) - 1);
	arg_str(&a, "4");
	arg_str(&a, o->stream);
	arg_str(&a, o->retry_key);
	arg_str(&a, hash);
	arg_str(&a, STATS_KEY);
	arg_str(&a, o->group);
	arg_str(&a, o->consumer);
	arg_str(&a, q->msgid);
	arg_str(&a, dues);
	arg_str(&a, q->id);
	for (size_t i = 0; i < 2 * pairs; i++)
		arg_add(&a, kv->element[i]->str, kv->element[i]->len);
	TG_ASSERT(a.n == a.cap);
	if (!redis_up(w))
		goto out;
	r = redisCommandArgv(w->r, (int)a.n, a.v, a.len);
	if (r == NULL) {
		tg_log("redis: %s", w->r->errstr);
		drop(&w->r);
		goto out;
	}
	if (r->type == REDIS_REPLY_INTEGER) {
		s = STEP_DONE;
		if (r->integer == 1) {
			w->n.scheduled++;
			tg_log("%s account %llu: charge attempt %u of %u: %s; attempt %u scheduled "
			       "in %llu ms (at %s), entry acknowledged",
			       q->id, (unsigned long long)q->account, oc->attempts, o->attempts,
			       oc->reason, oc->attempts + 1, (unsigned long long)delay,
			       clock_of(due, at, sizeof(at)));
		} else {
			tg_log("%s: no longer pending here (taken over): left to its new owner",
			       q->id);
		}
	} else {
		tg_log("%s: cannot schedule the next attempt: %s; left pending", q->id,
		       r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
	}
	freeReplyObject(r);
out:
	free(a.v);
	free(a.len);
	return s;
}

/*
 * Move the scheduled retries that are due back onto the stream (any
 * worker does it; the script makes it once).  Sets w->move_due_ms to when
 * to look again: the next due time, and at least every MOVE_POLL_MS, for
 * retries other workers schedule.  False on a Redis failure.
 */
static bool
move_due(struct worker *w)
{
	const struct opts *o = w->o;
	char now[24], prefix[STREAM_KEY_MAX + 16], batch[8];
	uint64_t t = tg_clock_ms(CLOCK_REALTIME);

	snprintf(now, sizeof(now), "%llu", (unsigned long long)t);
	snprintf(prefix, sizeof(prefix), "%s:", o->retry_key);
	snprintf(batch, sizeof(batch), "%d", MOVE_BATCH);
	redisReply *r = rq(w, "EVAL %s 2 %s %s %s %s %s", move_lua, o->retry_key, o->stream, now,
	                   prefix, batch);
	if (r == NULL)
		return false;
	long long moved = 0;
	uint64_t next = t + MOVE_POLL_MS;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER) {
		moved = r->element[0]->integer;
		if (r->element[1]->type == REDIS_REPLY_STRING && r->element[1]->len > 0) {
			uint64_t at = strtoull(r->element[1]->str, NULL, 10);
			if (at < next)
				next = at;
		}
	}
	freeReplyObject(r);
	if (moved > 0) {
		tg_log("%lld scheduled retr%s due: back on %s", moved, moved == 1 ? "y" : "ies",
		       o->stream);
		next = t; /* a full batch may have left more due */
	}
	w->move_due_ms = next;
	return true;
}

/*
 * Ask the engine whether q may still be charged (ACCT.REFILL.CLAIM), right
 * before the gateway is asked: the account may have been closed or
 * suspended, or auto-refill switched off, since the request fired.  STEP_DONE
 * with *ok false (and why) when it may not; STEP_RETRY when the engine is down.
 */
static enum step
claim(struct worker *w, const struct rw_request *q, bool *ok, char *why, size_t whylen)
{
	redisReply *r;

	*ok = false;
	switch (eq(w, &r, why, whylen, "ACCT.REFILL.CLAIM %llu %s", (unsigned long long)q->account,
	           q->id)) {
	case E_DOWN:
		return STEP_RETRY;
	case E_REFUSED:
		/* VOID, NOACCOUNT, or not its request: the engine says do not charge it. */
		return STEP_DONE;
	case E_OK:
		*ok = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
		if (!*ok)
			snprintf(why, whylen, "unexpected reply to ACCT.REFILL.CLAIM");
		freeReplyObject(r);
		return STEP_DONE;
	}
	return STEP_RETRY;
}

/* A request the engine says may not be charged: no charge, no mail, acknowledged. */
static enum step
settle_void(struct worker *w, const struct rw_request *q, const char *why)
{
	enum step s = ack(w, q->msgid, "void", &w->n.voided);
	if (s == STEP_DONE)
		tg_log("%s account %llu: not charged, no mail: %s", q->id,
		       (unsigned long long)q->account, why);
	return s;
}

/*
 * A request whose outcome oc is known (recorded, or just decided): on to
 * the step rw_settle_of names.  replay: oc was found recorded.
 */
static enum step
settle(struct worker *w, const redisReply *entry, const struct rw_request *q,
       const struct rw_profile *p, struct rw_outcome *oc, bool replay)
{
	switch (rw_settle_of(oc)) {
	case RW_SETTLE_APPROVED:
		return settle_approved(w, q, p, oc, replay);
	case RW_SETTLE_FAILED:
		return settle_failed(w, q, p, oc, replay);
	case RW_SCHEDULE:
		break;
	}
	return schedule(w, entry, q, oc);
}

/* One stream entry, from parsing to acknowledgement. */
static enum step
handle(struct worker *w, const redisReply *entry)
{
	struct rw_request q;
	struct rw_profile p;
	struct rw_outcome oc, theirs;

	TG_CHECK_OBJ_NOTNULL(w, WORKER_MAGIC);
	if (!rw_parse_entry(entry, &q)) {
		/* Redis gives every entry an id; without one there is nothing to move or
		 * acknowledge. */
		if (q.msgid[0] == '\0') {
			tg_log("stream entry ?: malformed (%s): ignored", q.why);
			return STEP_DONE;
		}
		return dead_letter(w, entry, &q);
	}
	if (!outcome_get(w, q.id, &oc) || !profile_get(w, q.account, &p))
		return STEP_RETRY;
	if (oc.state != RW_OC_NONE)
		return settle(w, entry, &q, &p, &oc, true);
	/*
	 * A retry of this request is on the schedule: this entry is a copy (the
	 * engine republished it, or a take-over).  The schedule tries it when due.
	 */
	int held = scheduled(w, q.id);
	if (held < 0)
		return STEP_RETRY;
	if (held) {
		enum step s = ack(w, q.msgid, "replayed", &w->n.replayed);
		if (s == STEP_DONE)
			tg_log("%s account %llu: its next attempt is scheduled: this copy "
			       "acknowledged",
			       q.id, (unsigned long long)q.account);
		return s;
	}
	bool overwrite = oc.unreadable;
	char why[160];
	bool may;

	if (claim(w, &q, &may, why, sizeof(why)) != STEP_DONE)
		return STEP_RETRY;
	if (!may)
		return settle_void(w, &q, why);
	if (rw_may_charge(&p, &oc) && charge(w, &q, &p, &oc) != STEP_DONE)
		return STEP_RETRY;
	if (rw_settle_of(&oc) == RW_SCHEDULE)
		return schedule(w, entry, &q, &oc);

	int won = outcome_put(w, q.id, &oc, overwrite ? "XX" : "NX");
	if (won < 0)
		return STEP_RETRY;
	if (!won) {
		/* Another worker took the entry over and recorded first: follow it, mostly. */
		if (!outcome_get(w, q.id, &theirs))
			return STEP_RETRY;
		bool ours = rw_follow_mine(&oc, &theirs);
		if (ours && theirs.state == RW_OC_FAILED)
			tg_log("%s: charged although the failure \"%s\" was recorded: crediting it",
			       q.id, theirs.reason);
		if (!ours)
			oc = theirs;
		else if (outcome_put(w, q.id, &oc, "XX") < 0)
			return STEP_RETRY;
	}
	return settle(w, entry, &q, &p, &oc, false);
}

/* ------------------------------------------------------------------ */
/* the loop                                                            */

enum source { SRC_PENDING, SRC_CLAIM, SRC_NEW };

static uint64_t
claim_every_ms(const struct opts *o)
{
	uint64_t t = o->claim_idle_ms / 2;
	return t < CLAIM_EVERY_MIN_MS   ? CLAIM_EVERY_MIN_MS
	       : t > CLAIM_EVERY_MAX_MS ? CLAIM_EVERY_MAX_MS
	                                : t;
}

/*
 * Fetch a batch from src.  Returns the reply to free (NULL on a Redis
 * failure) and points *entries at its entries (NULL when there are none).
 */
static redisReply *
fetch(struct worker *w, enum source src, const redisReply **entries)
{
	const struct opts *o = w->o;
	redisReply *r;

	*entries = NULL;
	switch (src) {
	case SRC_PENDING:
		r = rq(w, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s %s", o->group, o->consumer,
		       BATCH, o->stream, w->pending_from);
		break;
	case SRC_CLAIM:
		r = rq(w, "XAUTOCLAIM %s %s %s %llu %s COUNT %d", o->stream, o->group, o->consumer,
		       (unsigned long long)o->claim_idle_ms, w->claim_cursor, BATCH);
		if (r == NULL)
			return NULL;
		/* [next cursor, [entries], [deleted ids]]; deleted ones have left the PEL. */
		if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
		    r->element[0]->type == REDIS_REPLY_STRING &&
		    r->element[0]->len < sizeof(w->claim_cursor)) {
			memcpy(w->claim_cursor, r->element[0]->str, r->element[0]->len);
			w->claim_cursor[r->element[0]->len] = '\0';
			if (r->element[1]->type == REDIS_REPLY_ARRAY && r->element[1]->elements > 0)
				*entries = r->element[1];
		} else {
			tg_log("redis: unexpected XAUTOCLAIM reply");
			snprintf(w->claim_cursor, sizeof(w->claim_cursor), "0-0");
		}
		return r;
	case SRC_NEW:
	default:
		if (o->once) {
			r = rq(w, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s >", o->group,
			       o->consumer, BATCH, o->stream);
		} else {
			uint64_t now = tg_mono_ms(), block = BLOCK_MS_MAX,
			         wall = tg_clock_ms(CLOCK_REALTIME);
			if (w->claim_due_ms > now && w->claim_due_ms - now < block)
				block = w->claim_due_ms - now;
			/* Wake for the next scheduled retry. */
			if (w->move_due_ms <= wall)
				block = 1;
			else if (w->move_due_ms - wall < block)
				block = w->move_due_ms - wall;
			r = rq(w, "XREADGROUP GROUP %s %s COUNT %d BLOCK %llu STREAMS %s >",
			       o->group, o->consumer, BATCH,
			       (unsigned long long)(block ? block : 1), o->stream);
		}
		break;
	}
	if (r == NULL)
		return NULL;
	/* [[stream, [entries]]], or nil when a BLOCK ran out. */
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
	    r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2 &&
	    r->element[0]->element[1]->type == REDIS_REPLY_ARRAY &&
	    r->element[0]->element[1]->elements > 0)
		*entries = r->element[0]->element[1];
	return r;
}

/* A Redis or engine failure: pause (doubling) before trying again.  False: give up now. */
static bool
after_failure(struct worker *w)
{
	const struct opts *o = w->o;

	want_pending(w);
	w->failures_in_row++;
	if (stopping)
		return false;
	if (o->once && w->failures_in_row >= o->attempts) {
		tg_log("giving up after %u failures in a row: entries stay pending",
		       w->failures_in_row);
		return false;
	}
	tg_log("retrying in %llu ms", (unsigned long long)w->retry_ms);
	bool go_on = pause_ms(w->retry_ms);
	w->retry_ms = w->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : w->retry_ms * 2;
	return go_on;
}

/* Read, claim and settle until stopped (--once: until nothing is left).  The exit status. */
static int
run(struct worker *w)
{
	const struct opts *o = w->o;

	TG_CHECK_OBJ_NOTNULL(w, WORKER_MAGIC);
	want_pending(w);
	snprintf(w->claim_cursor, sizeof(w->claim_cursor), "0-0");
	w->claim_due_ms = tg_mono_ms();
	w->move_due_ms = 0;
	w->retry_ms = o->backoff_ms ? o->backoff_ms : 1;

	while (!stopping) {
		enum source src = SRC_NEW;
		const redisReply *entries;

		if (tg_clock_ms(CLOCK_REALTIME) >= w->move_due_ms && !move_due(w)) {
			if (!after_failure(w))
				return stopping ? 0 : EXIT_TEMPFAIL;
			continue;
		}
		if (w->read_pending)
			src = SRC_PENDING;
		else if (!w->claim_done && tg_mono_ms() >= w->claim_due_ms)
			src = SRC_CLAIM;
		redisReply *r = fetch(w, src, &entries);
		if (r == NULL) {
			if (!after_failure(w))
				return stopping ? 0 : EXIT_TEMPFAIL;
			continue;
		}
		bool failed = false;
		for (size_t i = 0; entries != NULL && i < entries->elements && !stopping; i++) {
			const redisReply *e = entries->element[i];
			if (handle(w, e) != STEP_DONE) {
				failed = true;
				break;
			}
			/* The pending read goes on after the last entry settled. */
			if (src == SRC_PENDING && e->type == REDIS_REPLY_ARRAY && e->elements > 0 &&
			    e->element[0]->type == REDIS_REPLY_STRING &&
			    e->element[0]->len < sizeof(w->pending_from)) {
				memcpy(w->pending_from, e->element[0]->str, e->element[0]->len);
				w->pending_from[e->element[0]->len] = '\0';
			}
		}
		freeReplyObject(r);
		if (failed) {
			if (!after_failure(w))
				return stopping ? 0 : EXIT_TEMPFAIL;
			continue;
		}
		w->failures_in_row = 0;
		w->retry_ms = o->backoff_ms ? o->backoff_ms : 1;
		if (entries != NULL)
			continue;
		/* Nothing from this source: move on to the next. */
		if (src == SRC_PENDING) {
			w->read_pending = false;
		} else if (src == SRC_CLAIM) {
			if (strcmp(w->claim_cursor, "0-0") == 0) {
				w->claim_due_ms = tg_mono_ms() + claim_every_ms(o);
				w->claim_done = o->once;
			}
		} else if (o->once) {
			break;
		}
	}
	return 0;
}

/*
 * On a clean stop, leave the group as we found it: a consumer with nothing
 * pending is removed (the default name holds the pid, so each run is a new
 * consumer).  One with entries pending stays, for XAUTOCLAIM or its next
 * run under the same --consumer.
 */
static void
leave_group(struct worker *w)
{
	const struct opts *o = w->o;

	if (w->r == NULL)
		return;
	redisReply *r =
	    redisCommand(w->r, "XPENDING %s %s - + 1 %s", o->stream, o->group, o->consumer);
	bool idle = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 0;
	if (r != NULL)
		freeReplyObject(r);
	if (!idle)
		return;
	r = redisCommand(w->r, "XGROUP DELCONSUMER %s %s %s", o->stream, o->group, o->consumer);
	if (r != NULL)
		freeReplyObject(r);
}

int
main(int argc, char **argv)
{
	struct opts o;
	struct worker w = {.magic = WORKER_MAGIC, .o = &o};
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: sleeps wake up */
	int rc;

	tg_log_init("tollrefill");
	if (parse_opts(argc, argv, &o) != 0)
		return 1;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN); /* a dead sendmail or peer is an error return, not a death */

	if (o.maildir != NULL)
		rc = tg_notifier_maildir_open(&w.mail, o.maildir, o.mail_from);
	else
		rc = tg_notifier_sendmail_open(&w.mail, o.sendmail, o.mail_from);
	if (rc != 0) {
		tg_log("%s %s: %s", o.maildir ? "maildir" : "sendmail",
		       o.maildir ? o.maildir : o.sendmail, strerror(-rc));
		return 1;
	}
	rc = tg_gateway_sim_open(&w.gw, o.redis_host, o.redis_port, o.redis_password);
	if (rc != 0) {
		tg_log("gateway: %s", strerror(-rc));
		tg_notifier_close(&w.mail);
		return 1;
	}
	tg_log("consumer %s of group %s on %s (dead letters to %s) at %s:%u; engine %s:%u; "
	       "gateway %s; mail by %s %s%s%s",
	       o.consumer, o.group, o.stream, o.dead_stream, o.redis_host, (unsigned)o.redis_port,
	       o.engine_host, (unsigned)o.engine_port, w.gw.ops->name, w.mail.ops->name,
	       o.maildir ? "" : "\"", o.maildir ? o.maildir : o.sendmail, o.maildir ? "" : "\"");
	if (o.crash_after_charge)
		tg_log("test hook %s=1: this worker exits %d right after its first approved charge",
		       CRASH_HOOK_ENV, CRASH_HOOK_RC);

	rc = run(&w);

	tg_log("%s: approved %llu, failed %llu, scheduled %llu, replayed %llu, malformed %llu, "
	       "refused %llu, void %llu",
	       stopping  ? "stopped"
	       : rc == 0 ? "done"
	                 : "gave up",
	       (unsigned long long)w.n.approved, (unsigned long long)w.n.failed,
	       (unsigned long long)w.n.scheduled, (unsigned long long)w.n.replayed,
	       (unsigned long long)w.n.malformed, (unsigned long long)w.n.refused,
	       (unsigned long long)w.n.voided);
	leave_group(&w);
	drop(&w.r);
	drop(&w.e);
	tg_gateway_close(&w.gw);
	tg_notifier_close(&w.mail);
	return rc;
}
