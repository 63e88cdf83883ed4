/*
 * stops.c - the stop publisher: worker rings of account hints, passes over
 * the call map, XADDs onto the stop stream; and the fraud alarms, handed
 * over on rings of their own and XADDed onto the alarm stream.
 *
 * Owns the thread that announces calls in progress the engine will not
 * extend any more, and its Redis connection.  The call map, not the ring,
 * is the truth: a hint only says which accounts to look at, and the pass
 * decides from the account and the call itself (tg_stop_reason_of), so a
 * stale or repeated hint announces nothing.  Only stop_hint runs on a
 * worker: a ring push, or a flag when the ring is full (the next pass then
 * looks at every call).  A call is marked (tg_call.stopped) only after its
 * entry is on the stream, so Redis being down loses nothing: the hints are
 * kept and the pass runs again once it is back.  hiredis runs on this
 * thread alone.
 *
 * Bounds: TG_STOP_RING hints per worker ring, TG_STOP_ACCTS accounts per
 * pass (more make it look at every call), BATCH entries per pipeline (a
 * pass that finds more runs again at once).
 *
 * Fraud alarms (docs/FRAUD.md, "The alarm stream") share the thread and its
 * Redis connection: one more stream on the same Redis needs no thread of
 * its own.  Unlike a stop hint, an alarm is the event itself (the worker
 * claimed the account's one alarm of that kind for the day), so its ring
 * carries the whole event; the thread holds up to BATCH of them until Redis
 * takes them, and leaves the rest on the rings meanwhile.  A worker whose
 * ring is full gives its claim back (tg_alarm_hook).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tg_atomic.h" /* before ck: it picks ck's backend */
#include <ck_ring.h>
#include <hiredis/hiredis.h>

#include "tg_assert.h"
#include "tg_clock.h"
#include "tg_log.h"
#include "tg_money.h"
#include "tg_table.h"
#include "ring_tsan.h"
#include "tg_redis_link.h"
#include "tg_stops.h"

#define STOPS_MAGIC 0x73746f70u /* "stop" */
#define TIME_LEN    sizeof("2024-01-01T00:00:00Z")

#define BATCH        256 /* XADDs pipelined per round trip, and entries per pass */
#define POLL_MS      5   /* sleep of an idle publisher: workers never wake it */
#define NAME_MAX_LEN 255
#define SET_SLOTS    (2 * TG_STOP_ACCTS) /* open addressing, half full at most */
#define MS           1000000ull

_Static_assert((TG_STOP_RING & (TG_STOP_RING - 1)) == 0, "ck_ring wants a power of two");
_Static_assert((SET_SLOTS & (SET_SLOTS - 1)) == 0, "the account set masks its hash");

static const char *const reason_names[] = {
    [TG_STOP_NONE] = NULL,
#define TG_STOP_REASON(e, n, v, d) [v] = #n,
#include "tbl/tg_stop_reasons.h"
#undef TG_STOP_REASON
};

static const char *const kind_names[] = {
#define TG_ALARM_KIND(e, n, v, d) [v] = #n,
#include "tbl/tg_alarm_kinds.h"
#undef TG_ALARM_KIND
};
_Static_assert(TG_ARRAY_LEN(kind_names) == TG_ALARM_KINDS, "alarm kinds are 0, 1, 2, ...");
_Static_assert(TG_ALARM_KINDS <= 16, "one bit of tg_limits.alarmed per kind");

/* A fraud alarm, as the worker that claimed it saw it. */
struct alarm {
	uint64_t acct;
	int64_t limit;   /* calls (maxcalls) or micro-units */
	uint32_t time_s; /* the worker's clock: the UTC day claimed is tg_utc_day(time_s) */
	uint8_t kind;    /* enum tg_alarm_kind */
};
CK_RING_PROTOTYPE(alarm, alarm)

/* One per worker record; the producer of both rings is that worker alone. */
struct lane {
	ck_ring_t ring;
	ck_ring_buffer_t buf[TG_STOP_RING];
	ck_ring_t aring;
	struct alarm abuf[TG_ALARM_RING];
} __attribute__((aligned(64)));

/* A call to announce, copied out of the map under its stripe lock. */
struct item {
	struct tg_digest key;
	uint64_t acct;
	uint8_t reason;
	uint8_t len;
	char id[TG_CALLID_MAX];
};

struct tg_stops {
	uint32_t magic;
	struct tg_engine *e;
	char host[NAME_MAX_LEN + 1];
	char stream[NAME_MAX_LEN + 1];       /* "": no stop stream */
	char alarm_stream[NAME_MAX_LEN + 1]; /* "": no alarm stream */
	uint16_t port;
	unsigned nlanes;
	struct lane *lanes;
	pthread_t thread;
	uint32_t id_keep;

	/* The thread's own. */
	struct tg_redis_link link; /* tg_redis_link.h */
	uint64_t set[SET_SLOTS];   /* account id + 1; 0 = free */
	unsigned nset;
	bool all;  /* look at every call: a ring or the set overflowed */
	bool more; /* the last pass found more than one batch */
	struct item items[BATCH];
	unsigned nitems;
	struct alarm alarms[BATCH]; /* taken off the rings, not yet on the stream */
	unsigned nalarms;

	uint32_t stop __attribute__((aligned(64)));     /* set by tg_stops_stop */
	uint32_t overflow __attribute__((aligned(64))); /* a ring was full: set by workers */
	struct tg_stats *ctr; /* counters this thread alone writes, in the publisher's block */
};

const char *
tg_stop_reason_name(unsigned r)
{
	return r < TG_ARRAY_LEN(reason_names) ? reason_names[r] : NULL;
}

enum tg_stop_reason
tg_stop_reason_of(struct tg_acct *a, const struct tg_call *c)
{
	if (c->rate.always)
		return TG_STOP_NONE;
	uint8_t state = tg_load_8(&a->state);
	if (state == TG_STATE_CLOSED)
		return TG_STOP_CLOSED;
	if (state == TG_STATE_SUSPENDED)
		return TG_STOP_SUSPENDED;
	tg_money_t avail = tg_acct_available(a), budget, cost;
	if (avail <= 0 || !tg_money_add(c->reserved, avail, &budget))
		return TG_STOP_BALANCE;
	/* What CALL.UPDATE would grant with no cap: no more than now is a BLOCKED. */
	return tg_rate_grant(&c->rate, budget, TG_DURATION_MAX, &cost) <= c->granted
	           ? TG_STOP_BALANCE
	           : TG_STOP_NONE;
}

/* The engine's stop hook, on worker w: a ring push, or the overflow flag. */
static void
stop_hint(void *arg, struct tg_worker *w, uint64_t acct)
{
	struct tg_stops *s = arg;

	TG_ASSERT(w->idx < s->nlanes);
	struct lane *l = &s->lanes[w->idx];
	RING_BEGIN();
	bool pushed = ck_ring_enqueue_spsc(&l->ring, l->buf, (void *)(uintptr_t)(acct + 1));
	RING_END();
	if (!pushed) {
		tg_count(w, TG_C_stops_hints_dropped, 1);
		if (!tg_load_32(&s->overflow))
			tg_store_32(&s->overflow, 1);
	}
}

/* The engine's alarm hook, on worker w: the alarm onto w's ring, false when it is full. */
static bool
alarm_hint(void *arg, struct tg_worker *w, uint64_t acct, enum tg_alarm_kind kind, int64_t limit)
{
	struct tg_stops *s = arg;
	struct alarm a = {.acct = acct, .limit = limit, .time_s = w->now_s, .kind = (uint8_t)kind};

	TG_ASSERT(w->idx < s->nlanes && (unsigned)kind < TG_ALARM_KINDS);
	struct lane *l = &s->lanes[w->idx];
	RING_BEGIN();
	bool pushed = ck_ring_enqueue_spsc_alarm(&l->aring, l->abuf, &a);
	RING_END();
	return pushed;
}

const char *
tg_alarm_kind_name(unsigned k)
{
	return k < TG_ARRAY_LEN(kind_names) ? kind_names[k] : NULL;
}

static void
count(struct tg_stops *s, enum tg_counter c, uint64_t n)
{
	uint64_t *p = &s->ctr->counter[c];
	tg_store_64(p, tg_load_64(p) + n);
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static uint64_t
set_hash(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return k;
}

/* Add acct + 1 (k) to the set; a full set turns the next pass into a look at every call. */
static void
set_add(struct tg_stops *s, uint64_t k)
{
	if (s->all)
		return;
	if (s->nset == TG_STOP_ACCTS) {
		s->all = true;
		return;
	}
	for (uint64_t i = set_hash(k) & (SET_SLOTS - 1);; i = (i + 1) & (SET_SLOTS - 1)) {
		if (s->set[i] == k)
			return;
		if (s->set[i] == 0) {
			s->set[i] = k;
			s->nset++;
			return;
		}
	}
}

static bool
set_has(const struct tg_stops *s, uint64_t k)
{
	for (uint64_t i = set_hash(k) & (SET_SLOTS - 1);; i = (i + 1) & (SET_SLOTS - 1)) {
		if (s->set[i] == k)
			return true;
		if (s->set[i] == 0)
			return false;
	}
}

static void
set_clear(struct tg_stops *s)
{
	memset(s->set, 0, sizeof(s->set));
	s->nset = 0;
	s->all = false;
}

/* Move every hint waiting on the rings into the set. */
static void
drain(struct tg_stops *s)
{
	if (tg_load_32(&s->overflow)) {
		tg_store_32(&s->overflow, 0);
		s->all = true;
	}
	for (unsigned k = 0; k < s->nlanes; k++) {
		struct lane *l = &s->lanes[k];
		void *v;
		for (;;) {
			RING_BEGIN();
			bool popped = ck_ring_dequeue_spsc(&l->ring, l->buf, &v);
			RING_END();
			if (!popped)
				break;
			set_add(s, (uint64_t)(uintptr_t)v);
		}
	}
}

/* tg_calls_each's visitor: under the call's stripe lock, copy out a call to announce. */
static void
visit(void *arg, struct tg_call *c, const char *id)
{
	struct tg_stops *s = arg;

	if (c->stopped != TG_STOP_NONE || (!s->all && !set_has(s, c->acct + 1)))
		return;
	struct tg_acct *a = tg_table_find(s->e->table, c->acct);
	enum tg_stop_reason why = a != NULL ? tg_stop_reason_of(a, c) : TG_STOP_NONE;
	if (why == TG_STOP_NONE)
		return;
	if (id == NULL || c->id_len == 0 || c->id_len > s->id_keep) {
		/* Its id was not kept whole (or at all: a call recovered by a restart): nothing
		 * a switch could match.  CALL.UPDATE still refuses it. */
		c->stopped = (uint8_t)why;
		count(s, TG_C_stops_unnamed, 1);
		return;
	}
	if (s->nitems == BATCH) {
		s->more = true;
		return;
	}
	struct item *it = &s->items[s->nitems++];
	it->key = c->key;
	it->acct = c->acct;
	it->reason = (uint8_t)why;
	it->len = c->id_len;
	memcpy(it->id, id, c->id_len);
}

static void
disconnect(struct tg_stops *s, const char *why)
{
	tg_redis_link_drop(&s->link, s->host, s->port, "stop publisher", why,
	                   "calls to stop are kept, retrying");
}

static void
redis_connect(struct tg_stops *s)
{
	if (!tg_redis_link_connect(&s->link, s->host, s->port, "stop publisher",
	                           "calls to stop are kept, retrying"))
		return;
	tg_log("stop publisher: redis %s:%u, stop stream %s, alarm stream %s", s->host, s->port,
	       s->stream[0] ? s->stream : "off", s->alarm_stream[0] ? s->alarm_stream : "off");
}

/*
 * XADD every item, pipelined; true when each was added.  Then mark each
 * call still there (and of the same account) as announced.
 */
static bool
publish(struct tg_stops *s)
{
	char acct[24], maxlen[24];
	snprintf(maxlen, sizeof(maxlen), "%u", TG_STOP_STREAM_MAXLEN);

	for (unsigned i = 0; i < s->nitems; i++) {
		const struct item *it = &s->items[i];
		const char *reason = tg_stop_reason_name(it->reason);
		snprintf(acct, sizeof(acct), "%llu", (unsigned long long)it->acct);
		const char *argv[] = {"XADD", s->stream, "MAXLEN", "~",    maxlen,   "*",
		                      "acct", acct,      "callid", it->id, "reason", reason};
		size_t argl[] = {
		    4, strlen(s->stream), 6, 1, strlen(maxlen), 1, 4, strlen(acct), 6, it->len,
		    6, strlen(reason)};
		_Static_assert(TG_ARRAY_LEN(argv) == TG_ARRAY_LEN(argl), "one length per argument");
		if (redisAppendCommandArgv(s->link.redis, (int)TG_ARRAY_LEN(argv), argv, argl) !=
		    REDIS_OK) {
			disconnect(s, "cannot queue XADD");
			return false;
		}
	}
	for (unsigned i = 0; i < s->nitems; i++) {
		redisReply *rep = NULL;
		if (redisGetReply(s->link.redis, (void **)&rep) != REDIS_OK || rep == NULL) {
			count(s, TG_C_stops_publish_failures, s->nitems - i);
			disconnect(s,
			           s->link.redis->errstr[0] ? s->link.redis->errstr : "no reply");
			return false;
		}
		bool ok = rep->type != REDIS_REPLY_ERROR;
		if (!ok)
			tg_log("stop publisher: XADD refused: %s", rep->str);
		freeReplyObject(rep);
		if (!ok) {
			count(s, TG_C_stops_publish_failures, 1);
			/* Read the other replies, then try again after a pause. */
			for (unsigned j = i + 1; j < s->nitems; j++) {
				if (redisGetReply(s->link.redis, (void **)&rep) != REDIS_OK) {
					disconnect(s, "no reply");
					return false;
				}
				freeReplyObject(rep);
			}
			tg_redis_link_backoff(&s->link);
			return false;
		}
	}
	for (unsigned i = 0; i < s->nitems; i++) {
		struct tg_calls_lock l;
		struct tg_call *c = tg_calls_lock(s->e->calls, s->items[i].key, &l);
		if (c != NULL && c->acct == s->items[i].acct)
			c->stopped = s->items[i].reason;
		tg_calls_unlock(&l);
	}
	count(s, TG_C_stops_published, s->nitems);
	return true;
}

/* One pass over the calls of the accounts hinted; true when it must run again at once. */
static bool
pass(struct tg_stops *s)
{
	s->nitems = 0;
	s->more = false;
	tg_calls_each(s->e->calls, visit, s);
	if (s->nitems > 0 && !publish(s))
		return false; /* the hints stay: the next pass after the back-off tries again */
	if (s->more)
		return true;
	set_clear(s);
	return false;
}

/* Take alarms off the rings while the batch has room. */
static void
drain_alarms(struct tg_stops *s)
{
	for (unsigned k = 0; k < s->nlanes && s->nalarms < BATCH; k++) {
		struct lane *l = &s->lanes[k];
		while (s->nalarms < BATCH) {
			RING_BEGIN();
			bool popped =
			    ck_ring_dequeue_spsc_alarm(&l->aring, l->abuf, &s->alarms[s->nalarms]);
			RING_END();
			if (!popped)
				break;
			s->nalarms++;
		}
	}
}

/* Whether any ring still holds an alarm (the batch was full). */
static bool
alarms_waiting(struct tg_stops *s)
{
	for (unsigned k = 0; k < s->nlanes; k++) {
		RING_BEGIN();
		unsigned n = ck_ring_size(&s->lanes[k].aring);
		RING_END();
		if (n > 0)
			return true;
	}
	return false;
}

/*
 * At the stop: give back the claim of every alarm not on the stream (held,
 * or still on a ring), so that with the shared-memory segment kept, the
 * account's next hit of the cap that day raises it again.
 */
static void
unclaim_alarms(struct tg_stops *s)
{
	for (;;) {
		for (unsigned i = 0; i < s->nalarms; i++) {
			const struct alarm *a = &s->alarms[i];
			struct tg_acct *acct = tg_table_find(s->e->table, a->acct);
			struct tg_limits *lim = acct ? tg_acct_limits(s->e->table, acct) : NULL;
			if (lim != NULL)
				tg_limits_alarm_release(lim, tg_utc_day(a->time_s), a->kind);
		}
		s->nalarms = 0;
		drain_alarms(s);
		if (s->nalarms == 0)
			return;
	}
}

/* XADD every alarm held, pipelined; true when Redis took each (the batch is then empty). */
static bool
publish_alarms(struct tg_stops *s)
{
	char acct[24], maxlen[24], limit[TG_MONEY_STR_MAX], when[TIME_LEN];

	snprintf(maxlen, sizeof(maxlen), "%u", TG_STOP_STREAM_MAXLEN);
	for (unsigned i = 0; i < s->nalarms; i++) {
		const struct alarm *a = &s->alarms[i];
		const char *kind = tg_alarm_kind_name(a->kind);
		time_t t = (time_t)a->time_s;
		struct tm tm;
		snprintf(acct, sizeof(acct), "%llu", (unsigned long long)a->acct);
		if (a->kind == TG_ALARM_MAXCALLS)
			snprintf(limit, sizeof(limit), "%lld", (long long)a->limit);
		else
			tg_money_format(a->limit, limit);
		gmtime_r(&t, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		const char *argv[] = {"XADD",  s->alarm_stream, "MAXLEN", "~",    maxlen,
		                      "*",     "acct",          acct,     "kind", kind,
		                      "limit", limit,           "time",   when};
		size_t argl[] = {4,
		                 strlen(s->alarm_stream),
		                 6,
		                 1,
		                 strlen(maxlen),
		                 1,
		                 4,
		                 strlen(acct),
		                 4,
		                 strlen(kind),
		                 5,
		                 strlen(limit),
		                 4,
		                 strlen(when)};
		_Static_assert(TG_ARRAY_LEN(argv) == TG_ARRAY_LEN(argl), "one length per argument");
		if (redisAppendCommandArgv(s->link.redis, (int)TG_ARRAY_LEN(argv), argv, argl) !=
		    REDIS_OK) {
			disconnect(s, "cannot queue XADD");
			return false;
		}
	}
	unsigned kept = 0; /* the refused, moved to the front in order: tried again after a pause */
	for (unsigned i = 0; i < s->nalarms; i++) {
		redisReply *rep = NULL;
		if (redisGetReply(s->link.redis, (void **)&rep) != REDIS_OK || rep == NULL) {
			count(s, TG_C_alarms_publish_failures, s->nalarms - i);
			disconnect(s,
			           s->link.redis->errstr[0] ? s->link.redis->errstr : "no reply");
			return false; /* all kept: a reply lost may add one twice */
		}
		if (rep->type == REDIS_REPLY_ERROR) {
			tg_log("alarm publisher: XADD refused: %s", rep->str);
			s->alarms[kept++] = s->alarms[i];
		}
		freeReplyObject(rep);
	}
	count(s, TG_C_alarms_published, s->nalarms - kept);
	count(s, TG_C_alarms_publish_failures, kept);
	s->nalarms = kept;
	if (kept == 0)
		return true;
	tg_redis_link_backoff(&s->link);
	return false;
}

static void *
run(void *arg)
{
	struct tg_stops *s = arg;
	sigset_t sigpipe;

	TG_CHECK_OBJ_NOTNULL(s, STOPS_MAGIC);
	sigemptyset(&sigpipe);
	sigaddset(&sigpipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &sigpipe, NULL);
	while (!tg_load_32(&s->stop)) {
		uint64_t now = tg_mono_ns();
		bool busy = false;

		drain(s);
		if (s->link.redis == NULL && now >= s->link.next_try_ns)
			redis_connect(s);
		if (s->link.redis != NULL && now >= s->link.next_try_ns && (s->nset > 0 || s->all))
			busy = pass(s);
		drain_alarms(s);
		if (s->link.redis != NULL && now >= s->link.next_try_ns && s->nalarms > 0)
			busy |= publish_alarms(s) && s->nalarms == 0 && alarms_waiting(s);
		if (!busy)
			sleep_ms(POLL_MS);
	}
	/* Workers are stopped: what they handed over goes out now if Redis takes it. */
	drain_alarms(s);
	if (s->link.redis != NULL && s->nalarms > 0)
		publish_alarms(s);
	unclaim_alarms(s);
	tg_redis_link_close(&s->link);
	return NULL;
}

int
tg_stops_start(struct tg_engine *e, const struct tg_stops_cfg *cfg, char *err, size_t errlen)
{
	struct tg_stops *s;
	int rc;

	TG_ASSERT(e->stop.fn == NULL && e->alarm.fn == NULL && e->calls != NULL);
	if (cfg->host == NULL || cfg->stream == NULL || cfg->stream[0] == '\0' ||
	    cfg->alarm_stream == NULL || cfg->alarm_stream[0] == '\0' ||
	    strlen(cfg->host) > NAME_MAX_LEN || strlen(cfg->stream) > NAME_MAX_LEN ||
	    strlen(cfg->alarm_stream) > NAME_MAX_LEN) {
		snprintf(err, errlen,
		         "redis-host, stop-stream and alarm-stream: 1 to %d characters",
		         NAME_MAX_LEN);
		return -EINVAL;
	}
	bool no_redis = strcmp(cfg->host, "none") == 0;
	bool stops =
	    !no_redis && strcmp(cfg->stream, "none") != 0 && tg_calls_id_keep(e->calls) != 0;
	bool alarms = !no_redis && strcmp(cfg->alarm_stream, "none") != 0;
	if (!stops)
		tg_log("stop publisher off (%s): calls of suspended, closed or drained accounts "
		       "are refused at their next CALL.UPDATE only",
		       tg_calls_id_keep(e->calls) == 0 ? "call-id-keep 0"
		       : no_redis                      ? "redis-host none"
		                                       : "stop-stream none");
	if (!alarms)
		tg_log("fraud alarms off (%s): caps reached are counted only",
		       no_redis ? "redis-host none" : "alarm-stream none");
	if (!stops && !alarms)
		return 0;
	if (cfg->port == 0 || cfg->port > 65535) {
		snprintf(err, errlen, "redis-port %u: must be 1..65535", cfg->port);
		return -EINVAL;
	}
	s = aligned_alloc(64, sizeof(*s));
	if (s == NULL)
		goto nomem;
	memset(s, 0, sizeof(*s));
	s->magic = STOPS_MAGIC;
	s->e = e;
	s->ctr = &e->table->stats[TG_STATS_PUBLISHER];
	snprintf(s->host, sizeof(s->host), "%s", cfg->host);
	snprintf(s->stream, sizeof(s->stream), "%s", stops ? cfg->stream : "");
	snprintf(s->alarm_stream, sizeof(s->alarm_stream), "%s", alarms ? cfg->alarm_stream : "");
	s->port = (uint16_t)cfg->port;
	s->id_keep = tg_calls_id_keep(e->calls);
	s->nlanes = e->cfg.workers + 1;
	s->lanes = aligned_alloc(64, s->nlanes * sizeof(*s->lanes));
	if (s->lanes == NULL)
		goto nomem;
	memset(s->lanes, 0, s->nlanes * sizeof(*s->lanes));
	for (unsigned k = 0; k < s->nlanes; k++) {
		ck_ring_init(&s->lanes[k].ring, TG_STOP_RING);
		ck_ring_init(&s->lanes[k].aring, TG_ALARM_RING);
	}
	/* Before any worker runs: a plain store is seen by the threads started after it. */
	if (stops)
		e->stop = (struct tg_stop_hook){.fn = stop_hint, .arg = s};
	if (alarms)
		e->alarm = (struct tg_alarm_hook){.fn = alarm_hint, .arg = s};
	rc = pthread_create(&s->thread, NULL, run, s);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start the stop publisher: %s", strerror(rc));
		e->stop = (struct tg_stop_hook){0};
		e->alarm = (struct tg_alarm_hook){0};
		free(s->lanes);
		free(s);
		return -rc;
	}
	return 0;
nomem:
	snprintf(err, errlen, "cannot allocate the stop rings (%u workers x %u)",
	         e->cfg.workers + 1, TG_STOP_RING);
	if (s != NULL)
		free(s->lanes);
	free(s);
	return -ENOMEM;
}

void
tg_stops_stop(struct tg_engine *e)
{
	struct tg_stops *s = e->stop.fn != NULL ? e->stop.arg : e->alarm.arg;

	if (s == NULL)
		return;
	TG_CHECK_OBJ(s, STOPS_MAGIC);
	tg_store_32(&s->stop, 1);
	pthread_join(s->thread, NULL);
	e->stop = (struct tg_stop_hook){0};
	e->alarm = (struct tg_alarm_hook){0};
	s->magic = 0;
	free(s->lanes);
	free(s);
}
