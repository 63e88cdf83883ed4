/*
 * refill.c - the refill publisher: pending records, worker rings, XADDs.
 *
 * Owns each pending-refill record from the moment the request fired, and
 * the one thread that talks to Redis.  The record in shared memory, not the
 * ring, is the truth: a trigger on a ring is only a hint of where to look,
 * so a full ring, a Redis outage or a crashed engine loses nothing; a scan
 * of the table finds every request not yet on the stream.  Only
 * refill_fire (the engine's refill hook) runs on a worker, and it makes no syscall, takes no lock
 * and allocates nothing: a compare-and-swap on the record, a few stores, a
 * ring push.  hiredis runs on the publisher thread alone.
 *
 * A record's tag word (seq, attempt, mode, state) moves by compare-and-swap:
 *
 *   EMPTY/PUBLISHED/DROPPED --claim--> WRITING --> PENDING   (the writer)
 *   PENDING --> QUEUED --XADD ok--> PUBLISHED --timeout, XADD ok--> PUBLISHED
 *     ^           |                              (attempt + 1 each time)
 *     +-XADD fails+
 *   PENDING --answered before publication--> DROPPED        (the publisher)
 *
 * A writer claims a record only for a newer request than the one it holds
 * and never while another writer is at it, so a late publisher step on an
 * old request fails its compare-and-swap instead of clobbering a new one.
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
#include "tg_names.h"
#include "tg_redis_link.h"
#include "tg_refill.h"
#include "tg_refill_wire.h"
#include "ring_tsan.h"

#define REFILL_MAGIC 0x72666c6cu

#define BATCH              256   /* XADDs pipelined per round trip */
#define SCAN_CHUNK         65536 /* slots scanned between two drains of the rings */
#define DRAIN_MAX          4096  /* triggers taken from one ring per turn */
#define SUSPECTS           64    /* unwritten requests remembered from one scan to the next */
#define SUSPECT_GRACE_MS   1000  /* how long a worker may take to write a record it fired */
#define POLL_MS            5     /* sleep of an idle publisher: workers never wake it */
#define SCAN_PERIOD_MIN_MS 100
#define SCAN_PERIOD_MAX_MS 60000
#define MARK_TTL_S         86400 /* a publication marker outlives refill-timeout by this */

/*
 * One publication of a request, at most once on the stream: a marker key
 * <stream>:published:<request id>:<attempt> holds the entry's id.  An XADD
 * whose reply was lost (Redis stalled past the reply timeout, then carried
 * on with the command already in its socket) is sent again by the
 * publisher; the script finds the marker and answers the entry already
 * there instead of adding a second one.  One script, so atomic: nothing
 * runs between the check and the XADD.
 * KEYS: stream, marker; ARGV: marker TTL in seconds, then the fields.
 * Answers {entry id, 1 if added now, 0 if it was already there}.
 */
static const char publish_lua[] = "local id = redis.call('GET', KEYS[2])\n"
                                  "if id then return {id, 0} end\n"
                                  "id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))\n"
                                  "redis.call('SET', KEYS[2], id, 'EX', ARGV[1])\n"
                                  "return {id, 1}\n";

#define MS 1000000ull

_Static_assert(sizeof(void *) == 8, "a trigger is a slot index and a seq in one pointer");
_Static_assert(TG_CAPACITY_MAX + TG_CAPACITY_MAX / 4 < (1ull << 32), "slot index fits 32 bits");

/* One per worker record.  The ring's producer and `added` are that worker's alone. */
struct lane {
	ck_ring_t ring;
	ck_ring_buffer_t *buf;                       /* NULL when publishing is off */
	uint64_t added __attribute__((aligned(64))); /* requests this worker made pending */
} __attribute__((aligned(64)));

/* An XADD in the pipeline. */
struct item {
	uint64_t slot;
	uint64_t tag; /* the record's tag when the item was taken */
	bool republish;
	enum { ITEM_SKIP, ITEM_SENT, ITEM_OK, ITEM_FAILED } status;
	bool was_there; /* ITEM_OK: an earlier send of this publication had added it */
};

struct suspect {
	uint64_t slot;
	uint64_t since; /* CLOCK_MONOTONIC ns when first seen unwritten */
	uint32_t seq;
};

struct tg_refill {
	uint32_t magic;
	struct tg_engine *e;
	struct tg_table *t;
	char host[TG_REFILL_NAME_MAX + 1];
	char stream[TG_REFILL_NAME_MAX + 1];
	uint16_t port;
	bool enabled;
	uint32_t timeout_s;
	char mark_ttl[16]; /* seconds a publication marker lives, as text */
	uint64_t scan_period_ns;
	unsigned nlanes;
	struct lane *lanes;
	pthread_t thread;
	bool started;

	/* The publisher thread's own. */
	struct tg_redis_link link; /* tg_redis_link.h */
	bool refused_logged;
	uint64_t next_scan_ns;
	bool scanning, scan_again;
	uint64_t scan_pos;
	struct item batch[BATCH];
	unsigned nbatch;
	struct suspect prev[SUSPECTS], cur[SUSPECTS];
	unsigned nprev, ncur;

	uint32_t stop __attribute__((aligned(64)));   /* set by tg_refill_stop */
	uint32_t rescan __attribute__((aligned(64))); /* a ring overflowed: set by workers */
	/* Written by the publisher (and start-up) only, read by anyone. */
	uint64_t adopted __attribute__((aligned(64))); /* made pending by the publisher's hand */
	uint64_t removed;                              /* left the pending set */
	struct tg_stats *ctr;                          /* the publisher's block in the segment */
};

static uint32_t
unix_s(void)
{
	return (uint32_t)time(NULL);
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* Add to a counter only this thread writes. */
static inline void
bump(uint64_t *p, uint64_t n)
{
	tg_store_64(p, tg_load_64(p) + n);
}

static void
count(struct tg_refill *r, enum tg_counter c, uint64_t n)
{
	bump(&r->ctr->counter[c], n);
}

static uint64_t
retag(uint64_t tag, uint16_t attempt, uint8_t state)
{
	return TG_RTAG(TG_RTAG_SEQ(tag), attempt, TG_RTAG_MODE(tag), state);
}

static bool
is_pending(uint8_t state)
{
	return state == TG_RREC_WRITING || state == TG_RREC_PENDING || state == TG_RREC_QUEUED;
}

/*
 * Claim rec for request seq and write it, ending PENDING.  Refused (false)
 * when the record holds seq or a newer request, or another writer is at it:
 * that writer, or the publisher, owns the request.  *added grows by one
 * unless the claim replaced a request still pending (which then leaves the
 * pending set as this one enters it).  No syscall, lock or allocation.
 */
static bool
rec_write(struct tg_refill_rec *rec, uint32_t seq, uint8_t mode, tg_money_t balance,
          tg_money_t amount, uint32_t fired, uint64_t *added)
{
	uint64_t cur = tg_load_64(&rec->tag);
	uint8_t state;

	for (;;) {
		state = TG_RTAG_STATE(cur);
		if (state == TG_RREC_WRITING ||
		    (state != TG_RREC_EMPTY && (int32_t)(TG_RTAG_SEQ(cur) - seq) >= 0))
			return false;
		if (ck_pr_cas_64_value(&rec->tag, cur, TG_RTAG(seq, 0, mode, TG_RREC_WRITING),
		                       &cur))
			break;
	}
	/* Counted before the record can be seen pending, so the gauge never goes below zero. */
	if (!is_pending(state))
		bump(added, 1);
	ck_pr_fence_store();
	tg_store_64((uint64_t *)&rec->balance, (uint64_t)balance);
	tg_store_64((uint64_t *)&rec->amount, (uint64_t)amount);
	tg_store_32(&rec->fired, fired);
	ck_pr_fence_store();
	tg_store_64(&rec->tag, TG_RTAG(seq, 0, mode, TG_RREC_PENDING));
	return true;
}

/* ---- the worker's side ---- */

/*
 * The engine's refill hook (struct tg_refill_hook): hand the refill that
 * move m fired on account a to the publisher: write its record, push its
 * trigger.  Runs on worker w's thread: no syscall, no lock, no allocation.
 */
static void
refill_fire(void *arg, struct tg_worker *w, struct tg_acct *a, const struct tg_move *m)
{
	struct tg_refill *r = arg;
	uint64_t i = tg_table_index(r->t, a);
	uint32_t now = w->now_s ? w->now_s : unix_s();

	TG_ASSERT(m->refill_fired && m->refill_seq != 0 && w->idx < r->nlanes);
	struct lane *l = &r->lanes[w->idx];
	if (!rec_write(&r->t->refills[i], m->refill_seq, tg_load_8(&a->refill_mode), m->balance,
	               m->refill_charge, now, &l->added))
		return;
	if (l->buf == NULL)
		return;
	RING_BEGIN();
	bool pushed =
	    ck_ring_enqueue_spsc(&l->ring, l->buf, (void *)(uintptr_t)(i << 32 | m->refill_seq));
	RING_END();
	/* Full: the request stays pending in shared memory; the publisher's scan finds it. */
	if (!pushed) {
		tg_count(w, TG_C_refills_ring_full, 1);
		if (!tg_load_32(&r->rescan))
			tg_store_32(&r->rescan, 1);
	}
}

uint64_t
tg_refill_pending(const struct tg_engine *e)
{
	const struct tg_refill *r = e->refill.arg;
	uint64_t in, out;

	if (r == NULL)
		return 0;
	/* Removals follow their additions: read them first and the difference stays >= 0. */
	out = tg_load_64(&r->removed);
	ck_pr_fence_load();
	in = tg_load_64(&r->adopted);
	for (unsigned k = 0; k < r->nlanes; k++)
		in += tg_load_64(&r->lanes[k].added);
	return in > out ? in - out : 0;
}

/* ---- the publisher's side ---- */

/*
 * Clear a void request's flag (auto-refill was switched off while it was in
 * flight), and record it: a replayed journal must not find it in flight.
 */
static void
clear_void(struct tg_refill *r, struct tg_acct *a, uint32_t seq)
{
	if (!tg_acct_refill_clear(a, seq))
		return;
	struct tg_jrec_refill_cleared p = {
	    .acct = tg_acct_id(a), .refill_seq = seq, .reason = TG_JREFILL_FAILED};
	tg_engine_journal1(r->e, TG_JREC_REFILL_CLEARED, &p, sizeof(p));
}

/* Whether request seq of a is answered: its flag is down, or a newer request fired. */
static bool
answered(struct tg_acct *a, uint32_t seq)
{
	uint32_t s = tg_load_32(&a->refill_seq);
	return !(tg_load_64(&a->hold) & TG_HOLD_REFILL) || s != seq;
}

/*
 * Rebuild the record of a request that fired but was never written (the
 * engine died between the two, or a path fired without tg_note_move) from
 * the account as it is now.  With auto-refill since switched off there is
 * nothing to ask for: the flag is cleared instead.
 */
static void
rebuild(struct tg_refill *r, uint64_t i, uint32_t seq)
{
	struct tg_acct *a = tg_table_slot(r->t, i);
	struct tg_acct_view v;

	tg_acct_read(a, &v);
	if (!v.refill_inflight || v.refill_seq != seq)
		return;
	if (v.refill_mode != TG_REFILL_ADD && v.refill_mode != TG_REFILL_TOPUP) {
		clear_void(r, a, seq);
		return;
	}
	rec_write(&r->t->refills[i], seq, v.refill_mode, v.balance,
	          tg_refill_charge(v.refill_mode, v.refill_amount, v.balance), unix_s(),
	          &r->adopted);
}

/*
 * The start-up scan, before any worker runs: whatever a previous engine
 * left half done is made whole.  A record caught mid-write is rewritten,
 * one caught in a pipeline is pending again, one answered is dropped, and a
 * request that fired with no record gets one.  What is pending is adopted.
 */
static void
adopt_all(struct tg_refill *r)
{
	struct tg_table *t = r->t;

	for (uint64_t i = 0; i < t->slots; i++) {
		struct tg_acct *a = tg_table_slot(t, i);
		struct tg_refill_rec *rec = &t->refills[i];
		uint64_t tag = tg_load_64(&rec->tag);
		uint32_t seq = TG_RTAG_SEQ(tag);

		if (tg_load_64(&a->key) == 0)
			continue;
		switch (TG_RTAG_STATE(tag)) {
		case TG_RREC_WRITING:
			tag = 0; /* its fields cannot be trusted */
			tg_store_64(&rec->tag, tag);
			break;
		case TG_RREC_QUEUED:
		case TG_RREC_PENDING:
			if (answered(a, seq) || TG_RTAG_MODE(tag) == TG_REFILL_OFF) {
				tg_store_64(&rec->tag,
				            retag(tag, TG_RTAG_ATTEMPT(tag), TG_RREC_DROPPED));
				if (TG_RTAG_MODE(tag) == TG_REFILL_OFF)
					clear_void(r, a, seq); /* void: auto-refill was off */
			} else {
				tg_store_64(&rec->tag,
				            retag(tag, TG_RTAG_ATTEMPT(tag), TG_RREC_PENDING));
				bump(&r->adopted, 1);
			}
			continue;
		default:
			break;
		}
		uint32_t aseq = tg_load_32(&a->refill_seq);
		if ((tg_load_64(&a->hold) & TG_HOLD_REFILL) && aseq != 0 &&
		    (TG_RTAG_STATE(tag) == TG_RREC_EMPTY || TG_RTAG_SEQ(tag) != aseq))
			rebuild(r, i, aseq);
	}
}

static void
disconnect(struct tg_refill *r, const char *why)
{
	tg_redis_link_drop(&r->link, r->host, r->port, "refill publisher", why,
	                   "requests stay pending, retrying");
	r->scanning = false;
}

/* Start a scan of the whole table, or another one right after the current one. */
static void
scan_request(struct tg_refill *r)
{
	if (r->scanning) {
		r->scan_again = true;
		return;
	}
	r->scanning = true;
	r->scan_pos = 0;
	r->ncur = 0;
}

static void
redis_connect(struct tg_refill *r)
{
	if (!tg_redis_link_connect(&r->link, r->host, r->port, "refill publisher",
	                           "requests stay pending, retrying"))
		return;
	tg_log("refill publisher: redis %s:%u, stream %s, %llu requests pending", r->host, r->port,
	       r->stream, (unsigned long long)tg_refill_pending(r->e));
	/* Whatever fired while Redis was away is in the table: publish it all. */
	scan_request(r);
}

/*
 * Queue the publication of it on the connection: the script above, which
 * XADDs the entry unless this very publication (request id and attempt) is
 * already on the stream.  ITEM_SKIP when its record changed since it was taken.
 */
static int
append(struct tg_refill *r, const struct item *it)
{
	struct tg_refill_rec *rec = &r->t->refills[it->slot];
	struct tg_acct *a = tg_table_slot(r->t, it->slot);
	char rid[TG_REFILL_ID_MAX], acct[24], bal[TG_MONEY_STR_MAX], thr[TG_MONEY_STR_MAX],
	    amt[TG_MONEY_STR_MAX], fired[16], attempt[8], mark[TG_REFILL_NAME_MAX + 80];
	struct tg_acct_view v;

	ck_pr_fence_load();
	tg_money_t balance = (tg_money_t)tg_load_64((uint64_t *)&rec->balance);
	tg_money_t amount = (tg_money_t)tg_load_64((uint64_t *)&rec->amount);
	uint32_t when = tg_load_32(&rec->fired);
	ck_pr_fence_load();
	if (tg_load_64(&rec->tag) != it->tag)
		return ITEM_SKIP;
	tg_acct_read(a, &v);
	uint32_t seq = TG_RTAG_SEQ(it->tag);
	unsigned n = TG_RTAG_ATTEMPT(it->tag);
	tg_refill_id(v.id, seq, rid);
	snprintf(acct, sizeof(acct), "%llu", (unsigned long long)v.id);
	tg_money_format(balance, bal);
	tg_money_format(v.threshold, thr);
	tg_money_format(amount, amt);
	snprintf(fired, sizeof(fired), "%u", when);
	snprintf(attempt, sizeof(attempt), "%u", n < UINT16_MAX ? n + 1 : n);
	snprintf(mark, sizeof(mark), "%s:published:%s:%s", r->stream, rid, attempt);

	unsigned mode = TG_RTAG_MODE(it->tag) == TG_REFILL_TOPUP ? TG_REFILL_TOPUP : TG_REFILL_ADD;
	const char *val[TG_RF__COUNT] = {
	    [TG_RF_ID] = rid,
	    [TG_RF_ACCOUNT] = acct,
	    [TG_RF_BALANCE] = bal,
	    [TG_RF_THRESHOLD] = thr,
	    [TG_RF_MODE] = tg_refill_mode_name(mode),
	    [TG_RF_AMOUNT] = amt,
	    [TG_RF_FIRED] = fired,
	    [TG_RF_ATTEMPT] = attempt,
	};
	const char *argv[6 + 2 * TG_RF__COUNT] = {"EVAL",    publish_lua, "2",
	                                          r->stream, mark,        r->mark_ttl};
	/* The fields in the table's order, each with its value. */
	for (unsigned k = 0; k < TG_RF__COUNT; k++) {
		TG_ASSERT(val[k] != NULL);
		argv[6 + 2 * k] = tg_refill_field_name(k);
		argv[7 + 2 * k] = val[k];
	}
	size_t argl[TG_ARRAY_LEN(argv)];
	for (size_t k = 0; k < TG_ARRAY_LEN(argv); k++)
		argl[k] = strlen(argv[k]);
	if (redisAppendCommandArgv(r->link.redis, (int)TG_ARRAY_LEN(argv), argv, argl) != REDIS_OK)
		return ITEM_FAILED;
	return ITEM_SENT;
}

/* Record what became of an item: published, or pending again. */
static void
settle(struct tg_refill *r, const struct item *it, uint32_t now)
{
	struct tg_refill_rec *rec = &r->t->refills[it->slot];
	unsigned n = TG_RTAG_ATTEMPT(it->tag);
	uint16_t attempt = (uint16_t)(n < UINT16_MAX ? n + 1 : n);

	if (it->status == ITEM_OK) {
		tg_store_32(&rec->published, now);
		bool mine =
		    ck_pr_cas_64(&rec->tag, it->tag, retag(it->tag, attempt, TG_RREC_PUBLISHED));
		if (mine && !it->republish)
			bump(&r->removed, 1);
		count(r, it->republish ? TG_C_refills_republished : TG_C_refills_published, 1);
		if (it->was_there)
			count(r, TG_C_refills_already_on_stream, 1);
	} else if (it->status == ITEM_FAILED) {
		if (!it->republish)
			ck_pr_cas_64(&rec->tag, it->tag,
			             retag(it->tag, TG_RTAG_ATTEMPT(it->tag), TG_RREC_PENDING));
		count(r, TG_C_refills_publish_failures, 1);
	}
}

/* Send the batch as one pipeline and settle every item.  Disconnects on an I/O error. */
static void
flush(struct tg_refill *r)
{
	unsigned n = r->nbatch;
	const char *io_error = NULL;
	bool refused = false, any_ok = false;

	if (n == 0)
		return;
	r->nbatch = 0;
	for (unsigned k = 0; k < n; k++)
		r->batch[k].status = r->link.redis ? append(r, &r->batch[k]) : ITEM_FAILED;
	for (unsigned k = 0; k < n; k++) {
		struct item *it = &r->batch[k];
		redisReply *rep = NULL;

		if (it->status != ITEM_SENT)
			continue;
		if (io_error != NULL || redisGetReply(r->link.redis, (void **)&rep) != REDIS_OK) {
			if (io_error == NULL)
				io_error =
				    r->link.redis->errstr[0] ? r->link.redis->errstr : "I/O error";
			it->status = ITEM_FAILED;
			continue;
		}
		if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
		    rep->element[0]->type == REDIS_REPLY_STRING &&
		    rep->element[1]->type == REDIS_REPLY_INTEGER) {
			it->status = ITEM_OK;
			it->was_there = rep->element[1]->integer == 0;
			any_ok = true;
		} else {
			it->status = ITEM_FAILED;
			if (!r->refused_logged)
				tg_log("refill publisher: publication on %s refused: %s", r->stream,
				       rep->type == REDIS_REPLY_ERROR ? rep->str
				                                      : "unexpected reply");
			r->refused_logged = refused = true;
		}
		freeReplyObject(rep);
	}
	uint32_t now = unix_s();
	for (unsigned k = 0; k < n; k++)
		settle(r, &r->batch[k], now);
	if (io_error != NULL) {
		char why[128];
		snprintf(why, sizeof(why), "%s", io_error);
		disconnect(r, why);
	} else if (refused) {
		tg_redis_link_backoff(
		    &r->link); /* keep the connection, but do not hammer a server that says no */
	} else if (any_ok) {
		r->link.backoff_ms = 0;
		r->refused_logged = false;
	}
}

static void
add_item(struct tg_refill *r, uint64_t i, uint64_t tag, bool republish)
{
	r->batch[r->nbatch++] = (struct item){.slot = i, .tag = tag, .republish = republish};
	if (r->nbatch == BATCH)
		flush(r);
}

static void take(struct tg_refill *r, uint64_t i, uint32_t want_seq);

/*
 * A request fired but not written: its worker is between the two steps, or
 * the path that fired it never handed it over.  Seen in two scans at least
 * SUSPECT_GRACE_MS apart, it is written here (the claim settles a race with
 * a late worker: one of the two writes it, the other backs off).
 */
static void
suspect(struct tg_refill *r, uint64_t i, uint64_t tag)
{
	struct tg_acct *a = tg_table_slot(r->t, i);
	uint32_t aseq = tg_load_32(&a->refill_seq);
	uint64_t since = tg_mono_ns();

	if (!(tg_load_64(&a->hold) & TG_HOLD_REFILL) || aseq == 0 || aseq == TG_RTAG_SEQ(tag))
		return;
	for (unsigned k = 0; k < r->nprev; k++) {
		if (r->prev[k].slot == i && r->prev[k].seq == aseq) {
			since = r->prev[k].since;
			break;
		}
	}
	if (tg_mono_ns() - since >= SUSPECT_GRACE_MS * MS) {
		rebuild(r, i, aseq);
		take(r, i, aseq);
		return;
	}
	if (r->ncur < SUSPECTS)
		r->cur[r->ncur++] = (struct suspect){.slot = i, .since = since, .seq = aseq};
}

/*
 * Look at the record of slot i: queue it when pending (want_seq: only that
 * request, 0 from a scan), and from a scan also republish it when it has
 * waited refill-timeout for an answer, or spot a request never written.
 */
static void
take(struct tg_refill *r, uint64_t i, uint32_t want_seq)
{
	struct tg_acct *a = tg_table_slot(r->t, i);
	struct tg_refill_rec *rec = &r->t->refills[i];
	uint64_t tag = tg_load_64(&rec->tag);
	uint32_t seq = TG_RTAG_SEQ(tag);
	uint8_t state = TG_RTAG_STATE(tag);

	if (want_seq != 0 && seq != want_seq)
		return; /* a newer request took the record: its own trigger follows */
	if (state == TG_RREC_PENDING) {
		bool off = TG_RTAG_MODE(tag) == TG_REFILL_OFF;
		if (answered(a, seq) || off) {
			/* Answered before it was ever published (or void): never publish it. */
			if (ck_pr_cas_64(&rec->tag, tag,
			                 retag(tag, TG_RTAG_ATTEMPT(tag), TG_RREC_DROPPED)))
				bump(&r->removed, 1);
			if (off)
				clear_void(r, a, seq);
			return;
		}
		uint64_t queued = retag(tag, TG_RTAG_ATTEMPT(tag), TG_RREC_QUEUED);
		if (ck_pr_cas_64(&rec->tag, tag, queued))
			add_item(r, i, queued, false);
		return;
	}
	if (want_seq != 0 || state == TG_RREC_WRITING || state == TG_RREC_QUEUED)
		return;
	if (state == TG_RREC_PUBLISHED && !answered(a, seq)) {
		int64_t waited = (int64_t)unix_s() - (int64_t)tg_load_32(&rec->published);
		if (waited >= (int64_t)r->timeout_s)
			add_item(r, i, tag, true);
		return;
	}
	suspect(r, i, tag);
}

/* Take every trigger waiting on the rings (a bounded number per ring).  True if any. */
static bool
drain(struct tg_refill *r)
{
	bool any = false;

	for (unsigned k = 0; k < r->nlanes && r->link.redis != NULL; k++) {
		struct lane *l = &r->lanes[k];
		void *v;
		for (unsigned n = 0; n < DRAIN_MAX && r->link.redis != NULL; n++) {
			RING_BEGIN();
			bool popped = ck_ring_dequeue_spsc(&l->ring, l->buf, &v);
			RING_END();
			if (!popped)
				break;
			uintptr_t trig = (uintptr_t)v;
			take(r, trig >> 32, (uint32_t)trig);
			any = true;
		}
	}
	flush(r);
	return any;
}

/* Scan the next chunk of the table.  True while the scan goes on. */
static bool
scan_step(struct tg_refill *r)
{
	struct tg_table *t = r->t;
	uint64_t end = r->scan_pos + SCAN_CHUNK;

	if (end > t->slots)
		end = t->slots;
	for (uint64_t i = r->scan_pos; i < end && r->link.redis != NULL; i++)
		if (tg_load_64(&tg_table_slot(t, i)->key) != 0)
			take(r, i, 0);
	flush(r);
	if (r->link.redis == NULL)
		return false; /* the next connection starts a scan of its own */
	r->scan_pos = end;
	if (end < t->slots)
		return true;
	/* A pass is done: what it suspected is what the next pass checks. */
	memcpy(r->prev, r->cur, r->ncur * sizeof(r->cur[0]));
	r->nprev = r->ncur;
	r->ncur = 0;
	r->scanning = false;
	r->next_scan_ns = tg_mono_ns() + r->scan_period_ns;
	if (r->scan_again) {
		r->scan_again = false;
		scan_request(r);
	}
	return r->scanning;
}

static void *
run(void *arg)
{
	struct tg_refill *r = arg;
	sigset_t sigpipe;

	TG_CHECK_OBJ_NOTNULL(r, REFILL_MAGIC);
	/* A write to a Redis that went away is an EPIPE to handle here, never a signal. */
	sigemptyset(&sigpipe);
	sigaddset(&sigpipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &sigpipe, NULL);
	while (!tg_load_32(&r->stop)) {
		uint64_t now = tg_mono_ns();
		bool busy = false;

		if (r->link.redis == NULL && now >= r->link.next_try_ns)
			redis_connect(r);
		if (r->link.redis != NULL && now >= r->link.next_try_ns) {
			busy = drain(r);
			if (tg_load_32(&r->rescan)) {
				tg_store_32(&r->rescan, 0);
				scan_request(r);
			}
			if (!r->scanning && now >= r->next_scan_ns)
				scan_request(r);
			if (r->scanning && r->link.redis != NULL)
				busy |= scan_step(r);
		}
		if (!busy)
			sleep_ms(POLL_MS);
	}
	/* A clean stop publishes what the workers handed over last. */
	if (r->link.redis != NULL && tg_mono_ns() >= r->link.next_try_ns)
		drain(r);
	tg_redis_link_close(&r->link);
	return NULL;
}

/* ---- life ---- */

static void
free_refill(struct tg_refill *r)
{
	if (r->lanes != NULL)
		for (unsigned k = 0; k < r->nlanes; k++)
			free(r->lanes[k].buf);
	free(r->lanes);
	free(r);
}

int
tg_refill_start(struct tg_engine *e, const struct tg_refill_cfg *cfg, char *err, size_t errlen)
{
	struct tg_refill *r;
	int rc;

	TG_ASSERT(e->refill.fn == NULL && e->table != NULL);
	if (cfg->host == NULL || cfg->host[0] == '\0' || strlen(cfg->host) > TG_REFILL_NAME_MAX ||
	    cfg->stream == NULL || cfg->stream[0] == '\0' ||
	    strlen(cfg->stream) > TG_REFILL_NAME_MAX) {
		snprintf(err, errlen, "redis-host and refill-stream: 1 to %d characters",
		         TG_REFILL_NAME_MAX);
		return -EINVAL;
	}
	if (cfg->port == 0 || cfg->port > 65535) {
		snprintf(err, errlen, "redis-port %u: must be 1..65535", cfg->port);
		return -EINVAL;
	}
	if (cfg->ring < 2 || cfg->ring > TG_REFILL_RING_MAX || (cfg->ring & (cfg->ring - 1)) != 0) {
		snprintf(err, errlen, "refill-ring %u: must be a power of two, 2..%u", cfg->ring,
		         TG_REFILL_RING_MAX);
		return -EINVAL;
	}
	if (cfg->timeout_s == 0) {
		snprintf(err, errlen, "refill-timeout must be positive");
		return -EINVAL;
	}

	r = aligned_alloc(64, sizeof(*r));
	if (r == NULL)
		goto nomem;
	memset(r, 0, sizeof(*r));
	r->magic = REFILL_MAGIC;
	r->e = e;
	r->t = e->table;
	r->ctr = &e->table->stats[TG_STATS_PUBLISHER];
	snprintf(r->host, sizeof(r->host), "%s", cfg->host);
	snprintf(r->stream, sizeof(r->stream), "%s", cfg->stream);
	r->port = (uint16_t)cfg->port;
	r->enabled = strcmp(cfg->host, "none") != 0;
	r->timeout_s = cfg->timeout_s;
	snprintf(r->mark_ttl, sizeof(r->mark_ttl), "%llu",
	         (unsigned long long)cfg->timeout_s + MARK_TTL_S);
	uint64_t period = (uint64_t)cfg->timeout_s * 1000 / 4;
	if (period < SCAN_PERIOD_MIN_MS)
		period = SCAN_PERIOD_MIN_MS;
	if (period > SCAN_PERIOD_MAX_MS)
		period = SCAN_PERIOD_MAX_MS;
	r->scan_period_ns = period * MS;
	r->nlanes = e->cfg.workers + 1;
	r->lanes = aligned_alloc(64, r->nlanes * sizeof(*r->lanes));
	if (r->lanes == NULL)
		goto nomem;
	memset(r->lanes, 0, r->nlanes * sizeof(*r->lanes));
	for (unsigned k = 0; k < r->nlanes && r->enabled; k++) {
		r->lanes[k].buf = calloc(cfg->ring, sizeof(*r->lanes[k].buf));
		if (r->lanes[k].buf == NULL)
			goto nomem;
		ck_ring_init(&r->lanes[k].ring, cfg->ring);
	}

	adopt_all(r);
	/* Before any worker runs: a plain store is seen by the threads started after it. */
	e->refill = (struct tg_refill_hook){.fn = refill_fire, .arg = r};
	if (r->enabled) {
		rc = pthread_create(&r->thread, NULL, run, r);
		if (rc != 0) {
			snprintf(err, errlen, "cannot start the refill publisher: %s",
			         strerror(rc));
			e->refill = (struct tg_refill_hook){0};
			free_refill(r);
			return -rc;
		}
		r->started = true;
	}
	if (!r->enabled)
		tg_log("refill publisher off (redis-host none): %llu requests pending",
		       (unsigned long long)tg_refill_pending(e));
	return 0;
nomem:
	snprintf(err, errlen, "cannot allocate the refill rings (%u workers x %u)",
	         e->cfg.workers + 1, cfg->ring);
	if (r != NULL)
		free_refill(r);
	return -ENOMEM;
}

void
tg_refill_stop(struct tg_engine *e)
{
	struct tg_refill *r = e->refill.arg;

	if (e->refill.fn == NULL)
		return;
	TG_CHECK_OBJ(r, REFILL_MAGIC);
	if (r->started) {
		tg_store_32(&r->stop, 1);
		pthread_join(r->thread, NULL);
	}
	e->refill = (struct tg_refill_hook){0};
	r->magic = 0;
	free_refill(r);
}
