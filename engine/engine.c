/*
 * engine.c - the operations of the call-control contract.
 *
 * Owns the order in which a request touches shared state: the id window
 * first (is this a replay?), then the call map, then the account (one atomic
 * step).  That order is the same everywhere, so the two striped maps can
 * never deadlock, and money moves only after every check that can refuse the
 * request has passed: a refused request changes nothing.  Must never
 * allocate, sleep or make a syscall: it runs inside a worker's batch.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tg_atomic.h"
#include "tg_assert.h"
#include "tg_clock.h"
#include "tg_engine.h"
#include "tg_hash.h"
#include "tg_log.h"

/* Id spaces of tg_digest: a call id and a CDR's id may be the same string. */
enum { KIND_CALL = 1, KIND_END = 2, KIND_CDR = 3, KIND_CREDIT = 4 };

#define NS 1000000000ull

/* used[plan] for every account's plan id: one read of each slot's first line. */
static void
plans_in_use(void *arg, bool *used)
{
	const struct tg_table *t = arg;

	for (uint64_t i = 0; i < t->slots; i++) {
		struct tg_acct *a = tg_table_slot(t, i);
		if (tg_load_64(&a->key) == 0)
			continue;
		uint32_t p = tg_load_32(&a->plan);
		if (p < TG_PLANS_MAX)
			used[p] = true;
	}
}

/*
 * The registry's reclaim hook: runs when a new plan name finds the registry
 * full, on the thread registering it, which holds the reload lock and is in
 * no reader section.  Two scans of the table and a grace period: tens of
 * milliseconds for a million accounts, at most once a second.
 */
static uint32_t
reclaim_plans(void *arg)
{
	struct tg_engine *e = arg;
	uint64_t t0 = tg_mono_ns();
	uint32_t n = tg_rates_reclaim(&e->rates, plans_in_use, e->table);

	tg_log("plan names: registry full (%u slots): %u names no account and no loaded plan "
	       "uses reclaimed in %llu ms",
	       e->table->plans.cap, n, (unsigned long long)((tg_mono_ns() - t0) / 1000000));
	return n;
}

int
tg_engine_init(struct tg_engine *e, struct tg_table *table, const struct tg_engine_cfg *cfg)
{
	unsigned n = cfg->workers + 1;
	int rc;

	memset(e, 0, sizeof(*e));
	TG_CHECK_OBJ_NOTNULL(table, TG_TABLE_MAGIC);
	TG_ASSERT(cfg->workers >= 1 && cfg->workers <= TG_WORKERS_MAX);
	e->table = table;
	e->cfg = *cfg;
	e->started_ns = tg_mono_ns();
	e->workers = calloc(n, sizeof(*e->workers));
	e->rcache = aligned_alloc(64, n * TG_RCACHE_SIZE * sizeof(*e->rcache));
	if (e->workers == NULL || e->rcache == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	/* A new run counts from zero; readers notice by the header's generation. */
	memset(table->stats, 0, (size_t)TG_STATS_BLOCKS * sizeof(*table->stats));
	tg_store_32(&table->hdr->workers, cfg->workers);
	tg_store_64((uint64_t *)&table->hdr->started, (uint64_t)time(NULL));
	rc = tg_rates_init(&e->rates, &table->plans);
	if (rc != 0)
		goto fail;
	table->plans_reclaim = (struct tg_plan_reclaim){.fn = reclaim_plans, .arg = e};
	rc = tg_calls_init_ids(&e->calls, cfg->calls_max, cfg->call_id_keep);
	if (rc != 0)
		goto fail;
	rc = tg_idem_init(&e->ids, cfg->ids_max, cfg->ids_window);
	if (rc != 0)
		goto fail;
	for (unsigned i = 0; i < n; i++) {
		struct tg_worker *w = &e->workers[i];
		w->magic = TG_WORKER_MAGIC;
		w->idx = i;
		w->e = e;
		w->stats = &table->stats[i < cfg->workers ? i : TG_STATS_CONTROL];
		w->rcache = &e->rcache[(size_t)i * TG_RCACHE_SIZE];
		w->rcache_serial = 0;
		tg_rates_reader_register(&e->rates, &w->epoch);
	}
	return 0;
fail:
	tg_engine_fini(e);
	return rc;
}

void
tg_engine_fini(struct tg_engine *e)
{
	/* A running publisher reads the table and the counters: it stops first. */
	TG_ASSERT(e->refill.fn == NULL && e->stop.fn == NULL && e->alarm.fn == NULL);
	for (unsigned i = 0; e->workers != NULL && i <= e->cfg.workers; i++)
		tg_jstage_fini(&e->workers[i].stage);
	if (e->ids)
		tg_idem_free(e->ids);
	if (e->calls)
		tg_calls_free(e->calls);
	if (e->table) {
		tg_rates_fini(&e->rates);
		e->table->plans_reclaim = (struct tg_plan_reclaim){0};
	}
	free(e->workers);
	free(e->rcache);
	memset(e, 0, sizeof(*e));
}

struct tg_worker *
tg_engine_worker(struct tg_engine *e, unsigned idx)
{
	TG_ASSERT(idx <= e->cfg.workers);
	return &e->workers[idx];
}

void
tg_worker_enter(struct tg_worker *w)
{
	struct timespec ts;

	TG_CHECK_OBJ(w, TG_WORKER_MAGIC);
	w->plans = tg_rates_enter(&w->e->rates, &w->epoch, &w->section);
	uint64_t serial = tg_planset_serial(w->plans);
	if (TG_UNLIKELY(serial != w->rcache_serial)) {
		memset(w->rcache, 0, TG_RCACHE_SIZE * sizeof(*w->rcache));
		w->rcache_serial = serial;
	}
	tg_store_64(&w->open, ((tg_load_64(&w->open) >> 1) + 1) << 1 | 1);
	ck_pr_fence_memory();
	w->now_ns = tg_mono_ns();
	w->mark_ns = w->now_ns;
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	w->now_s = (uint32_t)ts.tv_sec;
}

void
tg_worker_exit(struct tg_worker *w)
{
	w->plans = NULL;
	tg_rates_exit(&w->epoch, &w->section);
}

void
tg_worker_lap(struct tg_worker *w, enum tg_hist_kind k)
{
	uint64_t now = tg_mono_ns();
	uint64_t *b = &w->stats->hist[k].count[tg_hist_bucket(now - w->mark_ns)];

	tg_store_64(b, tg_load_64(b) + 1);
	w->mark_ns = now;
}

uint64_t
tg_engine_counter(const struct tg_engine *e, enum tg_counter c)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < TG_STATS_BLOCKS; i++)
		sum += tg_load_64(&e->table->stats[i].counter[c]);
	return sum;
}

/* ---- the journal ---- */

/* Stage one record of the batch (nothing when the engine keeps no journal). */
static inline void
jrec(struct tg_worker *w, unsigned type, const void *p, size_t len)
{
	if (w->e->jw != NULL)
		tg_jw_stage(w->e->jw, &w->stage, type, p, len);
}

/*
 * Stage one itemized record (record version 2): the version 1 payload v1,
 * the type's fixed fields and up to four strings (docs/JOURNAL.md,
 * "Itemized records").  Built on the stack; nothing when there is no journal.
 */
static void
jrec_item(struct tg_worker *w, unsigned type, const void *v1, const void *fixed, const char *s0,
          size_t n0, const char *s1, size_t n1, const char *s2, size_t n2, const char *s3,
          size_t n3)
{
	uint8_t buf[TG_JSTAGE_PAYLOAD];
	const char *const s[TG_JITEM_STRINGS] = {s0, s1, s2, s3};
	const size_t n[TG_JITEM_STRINGS] = {n0, n1, n2, n3};

	if (w->e->jw == NULL)
		return;
	size_t len = tg_journal_item_build(buf, sizeof(buf), type, v1, fixed, s, n);
	TG_ASSERT(len > 0);
	tg_jw_stage(w->e->jw, &w->stage, type, buf, len);
}

/* The AUTH user of the command in progress, for the ledger: "" when none. */
static size_t
who_len(const struct tg_worker *w)
{
	return w->who != NULL ? strlen(w->who) : 0;
}

/* The name of a's plan now, "" when it has none (for the ledger). */
static const char *
plan_name(struct tg_worker *w, struct tg_acct *a, size_t *n)
{
	const char *name = tg_plan_registry_name(&w->e->table->plans, tg_load_32(&a->plan));
	*n = name != NULL ? strnlen(name, TG_PLAN_NAME_MAX) : 0;
	return name;
}

int
tg_engine_journal(struct tg_engine *e, struct tg_jw *jw)
{
	for (unsigned i = 0; i <= e->cfg.workers; i++) {
		int rc = tg_jstage_init(&e->workers[i].stage, 4096);
		if (rc == 0)
			rc = tg_jw_watch(jw, &e->workers[i].stage);
		if (rc != 0)
			return rc;
	}
	e->jw = jw;
	return 0;
}

/*
 * Wait until no other worker has a batch open that was open when we looked:
 * whatever this batch replayed was applied by one of those batches or by one
 * already on disk.  A worker's batch closes as soon as its own records are
 * on disk, never waiting on anyone, so two replaying workers cannot wait on
 * each other.  Rare (retries), and bounded by one sync.
 */
static void
wait_others(struct tg_worker *w)
{
	struct tg_engine *e = w->e;

	ck_pr_fence_memory();
	for (unsigned i = 0; i < e->cfg.workers; i++) {
		struct tg_worker *o = &e->workers[i];
		uint64_t s = tg_load_64(&o->open);
		if (o == w || !(s & 1))
			continue;
		while (tg_load_64(&o->open) == s) {
			struct timespec ts = {0, 20000};
			nanosleep(&ts, NULL);
		}
	}
}

void
tg_worker_commit(struct tg_worker *w)
{
	struct tg_engine *e = w->e;

	uint64_t last = 0;

	if (e->jw != NULL && w->stage.n > 0)
		last = tg_jw_commit(e->jw, &w->stage);
	tg_store_64(&w->open, tg_load_64(&w->open) & ~1ull);
	if (e->jw != NULL && w->replayed && tg_jw_mode(e->jw) == TG_DURABLE)
		wait_others(w);
	/*
	 * A replayed reply may rest on a record of another batch: it waits for
	 * everything on disk now to reach the other nodes too.
	 */
	void (*fn)(void *, uint64_t) = ck_pr_load_ptr(&e->commit.fn);
	if (fn != NULL && (last != 0 || w->replayed))
		fn(e->commit.arg, w->replayed ? tg_jw_durable(e->jw) : last);
	w->replayed = false;
}

uint64_t
tg_worker_commit_held(struct tg_worker *w)
{
	struct tg_engine *e = w->e;

	/* Relaxed, no journal, or replicas to wait for: as tg_worker_commit. */
	if (e->jw == NULL || tg_jw_mode(e->jw) != TG_DURABLE ||
	    ck_pr_load_ptr(&e->commit.fn) != NULL) {
		tg_worker_commit(w);
		return 0;
	}
	uint64_t last = w->stage.n > 0 ? tg_jw_commit_nowait(e->jw, &w->stage) : 0;
	tg_store_64(&w->open, tg_load_64(&w->open) & ~1ull);
	if (w->replayed) {
		/*
		 * A replayed reply may rest on another worker's batch: once every
		 * batch open now is committed, it waits for all that was handed out.
		 */
		wait_others(w);
		last = tg_jw_last(e->jw);
	}
	w->replayed = false;
	return last;
}

void
tg_engine_journal1(struct tg_engine *e, unsigned type, const void *payload, size_t len)
{
	struct tg_jitem item;
	struct tg_jstage one = {.n = 0, .cap = 1, .items = &item};

	if (e->jw == NULL)
		return;
	tg_jw_stage(e->jw, &one, type, payload, len);
	tg_jw_commit(e->jw, &one);
	if (tg_jw_mode(e->jw) == TG_RELAXED)
		tg_jw_sync(e->jw);
}

bool
tg_engine_refusing(struct tg_worker *w, enum tg_jw_class k)
{
	if (w->e->jw == NULL || tg_jw_admit(w->e->jw, k))
		return false;
	tg_count(w, TG_C_journal_nospace, 1);
	return true;
}

static void
jrec_settings(struct tg_worker *w, struct tg_acct *a)
{
	struct tg_acct_view v;
	struct tg_jrec_settings p;

	if (w->e->jw == NULL)
		return;
	tg_acct_read(a, &v);
	memset(&p, 0, sizeof(p));
	p.acct = v.id;
	p.threshold = tg_acct_view_terms(&v); /* a postpaid account's credit limit */
	p.refill_amount = v.refill_amount;
	p.state = v.state;
	p.refill_mode = v.refill_mode;
	p.flags = v.flags;
	const char *name = tg_plan_registry_name(&w->e->table->plans, v.plan);
	if (name != NULL)
		strncpy(p.plan, name, sizeof(p.plan) - 1);
	jrec_item(w, TG_JREC_SETTINGS, &p, NULL, NULL, 0, w->who, who_len(w), NULL, 0, NULL, 0);
}

/* ---- helpers ---- */

void
tg_note_move(struct tg_worker *w, struct tg_acct *a, const struct tg_move *m)
{
	if (m->refill_fired) {
		struct tg_jrec_refill_fired p = {.acct = tg_acct_id(a),
		                                 .refill_seq = m->refill_seq,
		                                 .mode = tg_load_8(&a->refill_mode),
		                                 .balance = m->balance,
		                                 .threshold =
		                                     (int64_t)tg_load_64((uint64_t *)&a->threshold),
		                                 .charge = m->refill_charge};
		jrec(w, TG_JREC_REFILL_FIRED, &p, sizeof(p));
		tg_count(w, TG_C_refills_fired, 1);
		/* To the publisher: a record write and a ring push, nothing more. */
		if (w->e->refill.fn != NULL)
			w->e->refill.fn(w->e->refill.arg, w, a, m);
	}
	if (m->refill_cleared) {
		struct tg_jrec_refill_cleared p = {.acct = tg_acct_id(a),
		                                   .refill_seq = m->refill_seq_cleared,
		                                   .reason = m->refill_void ? TG_JREFILL_VOID
		                                                            : TG_JREFILL_CREDITED};
		jrec(w, TG_JREC_REFILL_CLEARED, &p, sizeof(p));
		tg_count(w, m->refill_void ? TG_C_refills_void : TG_C_refills_landed, 1);
	}
}

/*
 * Tell the stop publisher that a's calls in progress may have to stop (it
 * was suspended, closed or debited): only when a has any, and a publisher
 * listens.  A ring push: nothing else on the worker.
 */
static inline void
stop_hint(struct tg_worker *w, struct tg_acct *a)
{
	if (w->e->stop.fn != NULL && tg_load_32(&a->calls) > 0)
		w->e->stop.fn(w->e->stop.arg, w, tg_acct_id(a));
}

/* Record and count a change of an account's payment standing. */
static void
note_standing(struct tg_worker *w, struct tg_acct *a, enum tg_standing_event ev,
              const struct tg_standing *st)
{
	if (ev == TG_STANDING_NONE)
		return;
	struct tg_jrec_standing p = {.acct = tg_acct_id(a),
	                             .unpaid_since = st->unpaid_since,
	                             .failures = st->failures,
	                             .state = st->state,
	                             .unpaid = st->unpaid,
	                             .event = (uint8_t)ev};
	jrec(w, TG_JREC_STANDING, &p, sizeof(p));
	if (ev == TG_STANDING_SUSPENDED || ev == TG_STANDING_CLOSED)
		stop_hint(w, a);
	if (ev == TG_STANDING_SUSPENDED)
		tg_count(w, TG_C_accounts_unpaid_suspended, 1);
	else if (ev == TG_STANDING_RESTORED)
		tg_count(w, TG_C_accounts_unpaid_restored, 1);
	else if (ev == TG_STANDING_CLOSED)
		tg_count(w, TG_C_accounts_unpaid_closed, 1);
}

enum tg_result
tg_engine_set_balance(struct tg_worker *w, struct tg_acct *a, tg_money_t balance)
{
	struct tg_move m;
	enum tg_result r = tg_acct_set_balance(a, balance, &m);

	if (r != TG_OK)
		return r;
	struct tg_jrec_set_balance p = {
	    .acct = tg_acct_id(a), .balance = balance, .delta = balance - m.before};
	jrec_item(w, TG_JREC_SET_BALANCE, &p, NULL, NULL, 0, w->who, who_len(w), NULL, 0, NULL, 0);
	tg_note_move(w, a, &m);
	if (balance < m.before)
		stop_hint(w, a);
	return TG_OK;
}

enum tg_result
tg_engine_configure(struct tg_worker *w, struct tg_acct *a, const struct tg_acct_settings *s)
{
	struct tg_move m;
	enum tg_result r = tg_acct_configure(a, s, &m);

	if (r != TG_OK)
		return r;
	jrec_settings(w, a);
	tg_note_move(w, a, &m);
	/* Suspended or closed (now or before): its calls get no more time. */
	if (tg_load_8(&a->state) != TG_STATE_ACTIVE)
		stop_hint(w, a);
	return TG_OK;
}

static void
jrec_limits(struct tg_worker *w, struct tg_acct *a)
{
	struct tg_limits_set ls;
	uint64_t day_used;

	if (w->e->jw == NULL)
		return;
	tg_acct_read_limits(w->e->table, a, &ls, &day_used);
	struct tg_jrec_limits p = {.acct = tg_acct_id(a),
	                           .call_cap = ls.call_cap,
	                           .daily_cap = ls.daily_cap,
	                           .low = ls.low,
	                           .max_calls = ls.max_calls};
	jrec(w, TG_JREC_LIMITS, &p, sizeof(p));
}

void
tg_engine_set_limits(struct tg_worker *w, struct tg_acct *a, const struct tg_limits_set *ls)
{
	tg_acct_set_limits(w->e->table, a, ls, tg_utc_day(w->now_s));
	jrec_limits(w, a);
}

void
tg_engine_journal_new(struct tg_worker *w, struct tg_acct *a)
{
	struct tg_acct_view v;

	if (w->e->jw == NULL)
		return;
	tg_acct_read(a, &v);
	struct tg_jrec_set_balance p = {.acct = v.id, .balance = v.balance, .delta = v.balance};
	jrec_item(w, TG_JREC_SET_BALANCE, &p, NULL, NULL, 0, w->who, who_len(w), NULL, 0, NULL, 0);
	jrec_settings(w, a);
	if (v.flags & TG_ACCT_LIMITS)
		jrec_limits(w, a);
	if (v.refill_inflight) {
		struct tg_jrec_refill_fired f = {
		    .acct = v.id,
		    .refill_seq = v.refill_seq,
		    .mode = v.refill_mode,
		    .balance = v.balance,
		    .threshold = v.threshold,
		    .charge = tg_refill_charge(v.refill_mode, v.refill_amount, v.balance)};
		jrec(w, TG_JREC_REFILL_FIRED, &f, sizeof(f));
	}
}

static void
add_usage(struct tg_worker *w, struct tg_acct *a, const struct tg_rate *r, tg_money_t charge)
{
	tg_usage_add(tg_table_usage(w->e->table, a), r->category, charge);
	tg_count_money(w, TG_C_money_charged, charge);
	tg_count_money(w, (enum tg_counter)(TG_C_charged_local + r->category), charge);
}

/*
 * The worker's rate-cache entry of (plan, dest), with dest's bytes
 * zero-padded into d; NULL when dest is too long to be cached.
 */
static inline struct tg_rcache_entry *
rcache_slot(struct tg_worker *w, uint32_t plan, const char *dest, size_t dlen, uint64_t d[3])
{
	d[0] = d[1] = d[2] = 0;
	/* The key is the destination's bytes: longer numbers than E.164 allows skip the cache. */
	if (TG_UNLIKELY(dlen > 3 * sizeof(uint64_t)))
		return NULL;
	memcpy(d, dest, dlen);
	uint64_t h = tg_mix64(d[0] ^ (d[1] * 0x9e3779b97f4a7c15ull) ^
	                      (d[2] * 0xc2b2ae3d27d4eb4full) ^ ((uint64_t)plan << 40 | dlen));
	return &w->rcache[h & (TG_RCACHE_SIZE - 1)];
}

/*
 * The rate of dest for account a, under the worker's pinned plan set: from
 * the worker's cache when this (plan, destination) was rated before.
 */
static enum tg_result
rate_for(struct tg_worker *w, struct tg_acct *a, const char *dest, size_t dlen,
         const struct tg_rate **r)
{
	uint32_t plan = tg_load_32(&a->plan);
	uint64_t d[3];
	struct tg_rcache_entry *c = rcache_slot(w, plan, dest, dlen, d);

	if (TG_LIKELY(c != NULL)) {
		if (TG_LIKELY(c->rate != NULL && c->d[0] == d[0] && c->d[1] == d[1] &&
		              c->d[2] == d[2] && c->plan == plan && c->len == dlen)) {
			*r = c->rate;
			return TG_OK;
		}
	}
	const struct tg_plan *p = tg_planset_plan(w->plans, plan);
	if (p == NULL)
		return TG_NOPLAN;
	*r = tg_plan_match(p, dest, dlen); /* also refuses anything but 1..32 digits */
	if (*r == NULL)
		return TG_NORATE;
	if (c != NULL)
		*c = (struct tg_rcache_entry){
		    .d = {d[0], d[1], d[2]}, .plan = plan, .len = (uint32_t)dlen, .rate = *r};
	return TG_OK;
}

void
tg_engine_prefetch_rating(struct tg_worker *w, const struct tg_acct *a, const char *dest,
                          size_t dlen)
{
	uint32_t plan = tg_load_32((uint32_t *)(uintptr_t)&a->plan);
	uint64_t d[3];
	struct tg_rcache_entry *c = rcache_slot(w, plan, dest, dlen, d);

	tg_table_prefetch_limits(w->e->table, a);
	if (c != NULL) {
		__builtin_prefetch(c, 0);
		/* A hit needs nothing more; only a miss walks the plan. */
		if (c->rate != NULL && c->d[0] == d[0] && c->d[1] == d[1] && c->d[2] == d[2] &&
		    c->plan == plan && c->len == dlen)
			return;
	}
	const struct tg_plan *p = tg_planset_plan(w->plans, plan);
	if (p != NULL)
		tg_plan_prefetch(p, dest, dlen);
}

static struct tg_digest digest(uint32_t kind, struct tg_id id);

void
tg_engine_prefetch(struct tg_worker *w, const struct tg_prefetch *p, size_t n)
{
	struct tg_engine *e = w->e;
	static const uint8_t idem_kind[] = {[TG_PF_CDR] = KIND_CDR,
	                                    [TG_PF_CALL_AUTH] = KIND_END,
	                                    [TG_PF_CALL_UPDATE] = 0,
	                                    [TG_PF_CALL_END] = KIND_END,
	                                    [TG_PF_CREDIT] = KIND_CREDIT};

	TG_ASSERT(w->plans != NULL);
	for (size_t i = 0; i < n; i++) {
		const struct tg_prefetch *q = &p[i];
		TG_ASSERT(q->op < TG_ARRAY_LEN(idem_kind));
		tg_table_prefetch(e->table, q->acct);
		if (q->id.len == 0)
			continue;
		if (idem_kind[q->op] != 0)
			tg_idem_prefetch(e->ids, digest(idem_kind[q->op], q->id));
		if (q->op == TG_PF_CDR || q->op == TG_PF_CREDIT)
			continue;
		struct tg_digest key = digest(KIND_CALL, q->id);
		if (q->op == TG_PF_CALL_AUTH) /* it locks the call's id too (auth_lock) */
			tg_idem_prefetch(e->ids, key);
		tg_calls_prefetch(e->calls, key);
	}
	/* CALL.END and CALL.UPDATE read the limits line too (the day, the call places). */
	for (size_t i = 0; i < n; i++) {
		const struct tg_acct *a = tg_table_find(e->table, p[i].acct);
		if (a == NULL)
			continue;
		if (p[i].dlen != 0)
			tg_engine_prefetch_rating(w, a, p[i].dest, p[i].dlen);
		else
			tg_table_prefetch_limits(e->table, a);
	}
}

static uint64_t
fingerprint(uint64_t acct, int64_t amount, const char *dest, size_t dlen)
{
	uint64_t f[2] = {acct, (uint64_t)amount};
	return tg_hash64(f, sizeof(f), dlen ? tg_hash64(dest, dlen, 0x7467) : 0);
}

static struct tg_digest
digest(uint32_t kind, struct tg_id id)
{
	return tg_digest(kind, id.p, id.len);
}

/*
 * Look d up in the id window.  A replay with the same fingerprint answers
 * with the first reply (TG_OK, *reply set); with another fingerprint it is
 * TG_CONFLICT.  A new id returns TG_ERR with the stripe still locked in *l
 * and room checked: the caller applies, then records or unlocks.
 */
static enum tg_result
window_check(struct tg_worker *w, struct tg_digest d, uint64_t fp, struct tg_idem_lock *l,
             int64_t *reply, bool *is_new)
{
	const struct tg_idem_rec *rec;

	*is_new = false;
	/*
	 * A stripe of the memory tier full of ids not yet on disk: with a disk
	 * tier, the mover is behind; wait for it (it runs at once under such
	 * pressure) rather than refuse or forget.  Without one (durability off),
	 * the stripe's oldest id is forgotten, counted.
	 */
	for (unsigned waits = 0;; waits++) {
		rec = tg_idem_lock(w->e->ids, d, w->now_s, l);
		if (rec != NULL || l->err != 0 || tg_idem_has_room(l))
			break;
		if (tg_idem_evict_oldest(l)) {
			tg_count(w, TG_C_ids_evicted, 1);
			break;
		}
		tg_idem_unlock(l);
		if (waits == 0)
			tg_count(w, TG_C_window_waits, 1);
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	if (l->err != 0) {
		tg_idem_unlock(l);
		tg_count(w, TG_C_ids_read_errors, 1);
		return TG_IOERR;
	}
	if (rec != NULL) {
		uint64_t f = rec->fingerprint;
		int64_t rep = rec->reply;
		enum tg_result res = (enum tg_result)rec->result;
		tg_idem_unlock(l);
		if (f != fp) {
			tg_count(w, TG_C_conflicts, 1);
			return TG_CONFLICT;
		}
		tg_count(w, TG_C_replays, 1);
		w->replayed = true; /* the first may not be on disk yet */
		*reply = rep;
		return res;
	}
	*is_new = true;
	return TG_OK;
}

static void
window_record(struct tg_worker *w, struct tg_idem_lock *l, uint64_t fp, int64_t reply)
{
	struct tg_idem_rec rec = {
	    .fingerprint = fp, .reply = reply, .seen = w->now_s, .result = TG_OK};
	/* Room was checked under this same lock: recording cannot fail. */
	enum tg_result r = tg_idem_record_unlock(l, &rec);
	TG_ASSERT(r == TG_OK);
}

/* ---- call control ---- */

/*
 * The reservation of call, itemized with the call id as sent and, at
 * CALL.AUTH (a != NULL), the destination and the account's plan: the
 * ledger joins them to the call's settlement, which knows neither.
 */
static void
jrec_reserve(struct tg_worker *w, uint64_t acct, struct tg_id call, tg_money_t amount,
             uint32_t seconds, const struct tg_rate *r, struct tg_acct *a, const char *dest,
             size_t dlen)
{
	struct tg_jrec_reserve p = {.acct = acct,
	                            .call = tg_jdigest_of(digest(KIND_CALL, call)),
	                            .amount = amount,
	                            .seconds = seconds,
	                            .category = r->category,
	                            .flags = r->always ? TG_JRESERVE_ALWAYS : 0,
	                            .per_min = r->per_min,
	                            .connect = r->connect,
	                            .initial = r->initial,
	                            .increment = r->increment,
	                            .minimum = r->minimum};
	size_t pn = 0;
	const char *plan = a != NULL ? plan_name(w, a, &pn) : NULL;
	jrec_item(w, TG_JREC_RESERVE, &p, NULL, call.p, call.len, dest, dlen, plan, pn, NULL, 0);
}

static const char *const why_names[] = {"money", "maxgrant", "callcap", "dailycap", "low"};

const char *
tg_grant_why_name(enum tg_grant_why why)
{
	return (unsigned)why < TG_ARRAY_LEN(why_names) ? why_names[why] : "money";
}

/*
 * Bound budget, the most a call holding held may hold in all, by the
 * account's limits l on day: its per-call cap and what is left of today's
 * cap.  *why says which bound it is when one of them is below the money.
 */
static void
limit_budget(struct tg_limits *l, uint16_t day, tg_money_t held, tg_money_t *budget,
             enum tg_grant_why *why)
{
	tg_money_t cc = (tg_money_t)tg_load_64((uint64_t *)&l->call_cap);
	tg_money_t dc = (tg_money_t)tg_load_64((uint64_t *)&l->daily_cap);

	if (cc > 0 && cc < *budget) {
		*budget = cc;
		*why = TG_WHY_CALLCAP;
	}
	if (dc > 0) {
		tg_money_t left = dc - tg_limits_day_spent(l, day), most;
		if (left < 0)
			left = 0;
		if (tg_money_add(held, left, &most) && most < *budget) {
			*budget = most;
			*why = TG_WHY_DAILYCAP;
		}
	}
}

/* The reason of a grant that reached max-grant: low when it leaves less than the threshold. */
static enum tg_grant_why
why_full(struct tg_limits *l, tg_money_t available)
{
	tg_money_t low = l ? (tg_money_t)tg_load_64((uint64_t *)&l->low) : 0;
	return low > 0 && available < low ? TG_WHY_LOW : TG_WHY_MAXGRANT;
}

/*
 * Raise the fraud alarm of kind for account a (limits lim) when a publisher
 * listens and no alarm of that kind went out for a today (docs/FRAUD.md,
 * "The alarm stream").  A claim and a ring push, nothing else; a full ring
 * gives the claim back, so the account's next hit raises it again.
 */
static void
raise_alarm(struct tg_worker *w, struct tg_acct *a, struct tg_limits *lim, enum tg_alarm_kind kind)
{
	struct tg_engine *e = w->e;
	uint16_t day = tg_utc_day(w->now_s);
	int64_t limit;

	if (e->alarm.fn == NULL || lim == NULL || !tg_limits_alarm_claim(lim, day, kind))
		return;
	if (kind == TG_ALARM_MAXCALLS)
		limit = tg_load_32(&lim->max_calls);
	else
		limit = (int64_t)tg_load_64(
		    (uint64_t *)(kind == TG_ALARM_CALLCAP ? &lim->call_cap : &lim->daily_cap));
	if (!e->alarm.fn(e->alarm.arg, w, tg_acct_id(a), kind, limit)) {
		tg_limits_alarm_release(lim, day, kind);
		tg_count(w, TG_C_alarms_dropped, 1);
	}
}

/* The alarm a grant's reason raises, if any: it was cut to a cap. */
static inline void
alarm_why(struct tg_worker *w, struct tg_acct *a, struct tg_limits *lim, enum tg_grant_why why)
{
	if (why == TG_WHY_CALLCAP)
		raise_alarm(w, a, lim, TG_ALARM_CALLCAP);
	else if (why == TG_WHY_DAILYCAP)
		raise_alarm(w, a, lim, TG_ALARM_DAILYCAP);
}

/* Count a grant's reason (the limits that cut it short). */
static void
count_why(struct tg_worker *w, enum tg_grant_why why)
{
	if (why == TG_WHY_CALLCAP)
		tg_count(w, TG_C_call_callcap, 1);
	else if (why == TG_WHY_DAILYCAP)
		tg_count(w, TG_C_call_dailycap_short, 1);
	else if (why == TG_WHY_LOW)
		tg_count(w, TG_C_call_low, 1);
}

/*
 * The locks of a new call's CALL.AUTH, in the one order: the window's
 * stripes of both marks of call (its END, its call), then the call map's
 * stripe of key.  false, both released, with the answer in *res, when it is
 * already known: the id ended or was settled by expiry (CONFLICT: an END
 * would answer from the window and leave a second reservation to expire at
 * its grant), or the call is in progress (a switch's retry: its grant in
 * *granted, OK; another account's: CONFLICT).  true: both held, and the
 * call is new.
 */
static bool
auth_lock(struct tg_worker *w, uint64_t acct, struct tg_id call, struct tg_digest key,
          struct tg_idem_pair *il, struct tg_calls_lock *l, uint32_t *granted, enum tg_result *res)
{
	struct tg_engine *e = w->e;

	*granted = 0;
	if (tg_idem_lock_pair(e->ids, digest(KIND_END, call), key, w->now_s, il)) {
		tg_idem_unlock_pair(il);
		tg_count(w, TG_C_conflicts, 1);
		*res = TG_CONFLICT;
		return false;
	}
	struct tg_call *c = tg_calls_lock(e->calls, key, l);
	if (c == NULL)
		return true;
	bool same = c->acct == acct;
	*granted = c->granted;
	w->replayed = true;
	tg_calls_unlock(l);
	tg_idem_unlock_pair(il);
	if (!same)
		tg_count(w, TG_C_conflicts, 1);
	*res = same ? TG_OK : TG_CONFLICT;
	return false;
}

/*
 * CALL.AUTH of a call to an always-allowed destination r (docs/RATES.md,
 * "Always-allowed destinations"): granted whatever the account's balance,
 * state and caps, for max-grant seconds (ended on a billing boundary), and
 * its cost reserved even when that takes available below zero (a zero
 * rate reserves nothing).  The replay and conflict rules are those of any
 * CALL.AUTH.  a is the account of acct.
 */
static enum tg_result
call_auth_always(struct tg_worker *w, struct tg_acct *a, uint64_t acct, const char *dest,
                 size_t dlen, struct tg_id call, const struct tg_rate *r, uint32_t *granted)
{
	struct tg_engine *e = w->e;
	struct tg_idem_pair il;
	struct tg_calls_lock l;
	struct tg_move m;
	struct tg_digest key = digest(KIND_CALL, call);
	tg_money_t cost = 0;

	enum tg_result res;
	if (!auth_lock(w, acct, call, key, &il, &l, granted, &res))
		return res;
	/* As if the money were unlimited: the grant is max-grant on a billing boundary. */
	uint32_t grant = tg_rate_grant(r, TG_MONEY_MAX, e->cfg.max_grant, &cost);
	res = grant > 0 ? tg_acct_reserve_always(a, cost, true, &m) : TG_BLOCKED;
	if (res != TG_OK) {
		tg_calls_unlock(&l);
		tg_idem_unlock_pair(&il);
		tg_count(w, res == TG_BLOCKED ? TG_C_call_blocked : TG_C_call_refused, 1);
		return res;
	}
	struct tg_call nc = {.acct = acct,
	                     .key = key,
	                     .rate = *r,
	                     .reserved = cost,
	                     .granted = grant,
	                     .started_ns = w->now_ns,
	                     .expires_ns = w->now_ns + (uint64_t)(grant + e->cfg.call_grace) * NS};
	res = tg_calls_insert_call_unlock(&l, &nc, call.p, call.len);
	tg_idem_unlock_pair(&il);
	if (res != TG_OK) {
		tg_acct_commit(a, cost, 0, &m);
		return res;
	}
	jrec_reserve(w, acct, call, cost, grant, r, a, dest, dlen);
	tg_count(w, TG_C_call_granted, 1);
	tg_count(w, TG_C_call_always, 1);
	*granted = grant;
	return TG_OK;
}

enum tg_result
tg_call_auth(struct tg_worker *w, uint64_t acct, const char *dest, size_t dlen, struct tg_id call,
             uint32_t *granted)
{
	enum tg_grant_why why;
	return tg_call_auth_why(w, acct, dest, dlen, call, granted, &why);
}

enum tg_result
tg_call_auth_why(struct tg_worker *w, uint64_t acct, const char *dest, size_t dlen,
                 struct tg_id call, uint32_t *granted, enum tg_grant_why *why)
{
	struct tg_engine *e = w->e;
	const struct tg_rate *r;
	struct tg_calls_lock l;
	struct tg_move m;
	enum tg_result res;
	tg_money_t cost = 0;
	uint32_t grant = 0;

	tg_count(w, TG_C_call_auth, 1);
	if (tg_engine_refusing(w, TG_JW_NEW))
		return TG_NOSPACE;
	struct tg_acct *a = tg_table_find(e->table, acct);
	if (a == NULL) {
		res = TG_NOACCOUNT;
		goto refused;
	}
	/*
	 * Always-allowed destinations (emergency, free service numbers) first:
	 * no state, balance or cap below refuses them (docs/RATES.md).
	 */
	if (rate_for(w, a, dest, dlen, &r) == TG_OK && r->always)
		return call_auth_always(w, a, acct, dest, dlen, call, r, granted);

	uint8_t state = tg_load_8(&a->state);
	if (state != TG_STATE_ACTIVE) {
		res = state == TG_STATE_CLOSED ? TG_CLOSED : TG_SUSPENDED;
		goto refused;
	}
	res = rate_for(w, a, dest, dlen, &r);
	if (res != TG_OK)
		goto refused;

	/*
	 * A call id that already ended, or was settled by expiry, must not be
	 * authorized again: its END would answer from the window and leave the
	 * new reservation to expire at its full grant, a second charge for one
	 * call.  Holding the window stripes of both marks (before the call map,
	 * the one lock order) closes the race with a concurrent END or expiry.
	 */
	struct tg_idem_pair il;
	struct tg_digest key = digest(KIND_CALL, call);
	if (!auth_lock(w, acct, call, key, &il, &l, granted, &res)) {
		/* What limited the first answer is not kept: a full grant says so, a short one
		 * money. */
		*why = *granted >= e->cfg.max_grant ? TG_WHY_MAXGRANT : TG_WHY_MONEY;
		return res;
	}
	/*
	 * Size the grant from what is available, within the account's limits,
	 * then reserve it; retry if it moved.  An account without limits (lim
	 * NULL) never reads its limits record.
	 */
	struct tg_limits *lim = tg_acct_limits(e->table, a);
	uint16_t today = tg_utc_day(w->now_s);
	*why = TG_WHY_MONEY;
	for (int tries = 0;; tries++) {
		tg_money_t budget = tg_acct_available(a);
		*why = TG_WHY_MONEY;
		if (lim != NULL && budget > 0)
			limit_budget(lim, today, 0, &budget, why);
		grant = budget > 0 ? tg_rate_grant(r, budget, e->cfg.max_grant, &cost) : 0;
		if (grant == 0) {
			res = *why == TG_WHY_DAILYCAP ? TG_DAILYCAP : TG_BLOCKED;
			break;
		}
		res = lim != NULL ? tg_acct_reserve_limited(a, lim, today, cost, true, &m)
		                  : tg_acct_reserve(a, cost, &m);
		if ((res != TG_SHORT && res != TG_DAILYCAP) || tries == 16)
			break;
	}
	if (res != TG_OK) {
		tg_calls_unlock(&l);
		tg_idem_unlock_pair(&il);
		if (res == TG_SHORT)
			res = TG_BLOCKED;
		if (res == TG_BLOCKED)
			tg_count(w, TG_C_call_blocked, 1);
		else if (res == TG_MAXCALLS)
			tg_count(w, TG_C_call_maxcalls, 1);
		else if (res == TG_DAILYCAP)
			tg_count(w, TG_C_call_dailycap, 1);
		else
			tg_count(w, TG_C_call_refused, 1);
		if (res == TG_MAXCALLS)
			raise_alarm(w, a, lim, TG_ALARM_MAXCALLS);
		else if (res == TG_DAILYCAP)
			raise_alarm(w, a, lim, TG_ALARM_DAILYCAP);
		else if (res == TG_BLOCKED && *why == TG_WHY_CALLCAP)
			raise_alarm(w, a, lim,
			            TG_ALARM_CALLCAP); /* the cap pays for no increment */
		return res;
	}
	if (grant >= e->cfg.max_grant)
		*why = why_full(lim, m.available);
	count_why(w, *why);
	alarm_why(w, a, lim, *why);
	bool counted = lim != NULL && tg_load_64((uint64_t *)&lim->daily_cap) != 0;
	struct tg_call nc = {.acct = acct,
	                     .key = key,
	                     .rate = *r,
	                     .reserved = cost,
	                     .granted = grant,
	                     .day = counted ? (uint16_t)(tg_utc_day(w->now_s) + 1) : 0,
	                     .started_ns = w->now_ns,
	                     .expires_ns = w->now_ns + (uint64_t)(grant + e->cfg.call_grace) * NS};
	res = tg_calls_insert_call_unlock(&l, &nc, call.p, call.len);
	tg_idem_unlock_pair(&il);
	if (res != TG_OK) {
		tg_acct_commit(a, cost, 0, &m);
		if (counted)
			tg_limits_day_give(lim, today, cost);
		return res;
	}
	jrec_reserve(w, acct, call, cost, grant, r, a, dest, dlen);
	tg_count(w, TG_C_call_granted, 1);
	*granted = grant;
	return TG_OK;
refused:
	tg_count(w, TG_C_call_refused, 1);
	return res;
}

/*
 * CALL.UPDATE of an always-allowed call c (its calls stripe locked): the
 * grant grows to cap on a billing boundary whatever the state and balance,
 * the difference reserved even below zero.  TG_MAXGRANT when the cap
 * allows nothing more.
 */
static enum tg_result
update_always(struct tg_worker *w, struct tg_acct *a, uint64_t acct, struct tg_id call,
              struct tg_call *c, uint32_t cap)
{
	struct tg_move m;
	tg_money_t cost;
	uint32_t g = tg_rate_grant(&c->rate, TG_MONEY_MAX, cap, &cost);

	if (g <= c->granted)
		return TG_MAXGRANT;
	TG_ASSERT(cost >= c->reserved);
	enum tg_result res = tg_acct_reserve_always(a, cost - c->reserved, false, &m);
	if (res != TG_OK)
		return res;
	jrec_reserve(w, acct, call, cost - c->reserved, g, &c->rate, NULL, NULL, 0);
	c->reserved = cost;
	c->granted = g;
	c->expires_ns = c->started_ns + (uint64_t)(g + w->e->cfg.call_grace) * NS;
	return TG_OK;
}

enum tg_result
tg_call_update(struct tg_worker *w, uint64_t acct, struct tg_id call, uint32_t elapsed,
               uint32_t *granted)
{
	enum tg_grant_why why;
	return tg_call_update_why(w, acct, call, elapsed, granted, &why);
}

enum tg_result
tg_call_update_why(struct tg_worker *w, uint64_t acct, struct tg_id call, uint32_t elapsed,
                   uint32_t *granted, enum tg_grant_why *why)
{
	struct tg_engine *e = w->e;
	struct tg_calls_lock l;
	struct tg_move m;
	enum tg_result res = TG_BLOCKED;

	if (tg_engine_refusing(w, TG_JW_NEW))
		return TG_NOSPACE;
	/* The stripe is locked whether or not the call is there. */
	struct tg_call *c = tg_calls_lock(e->calls, digest(KIND_CALL, call), &l);
	if (c == NULL || c->acct != acct) {
		tg_calls_unlock(&l);
		return TG_NOCALL;
	}
	struct tg_acct *a = tg_table_find(e->table, acct);
	TG_ASSERT(a != NULL);
	uint64_t cap64 = (uint64_t)elapsed + e->cfg.max_grant;
	uint32_t cap = cap64 > TG_DURATION_MAX ? TG_DURATION_MAX : (uint32_t)cap64;
	struct tg_limits *lim = tg_acct_limits(e->table, a);
	uint16_t today = tg_utc_day(w->now_s);
	if (c->rate.always) {
		/* An always-allowed call: extended whatever the state and the balance. */
		res = update_always(w, a, acct, call, c, cap);
		*granted = c->granted;
		tg_calls_unlock(&l);
		if (res == TG_OK)
			tg_count(w, TG_C_call_update, 1);
		return res;
	}
	/*
	 * A suspended or closed account's calls get no more time: BLOCKED, as
	 * when the money is gone; the stop stream has told listening switches
	 * already (docs/PROTOCOL.md, "The stop stream").
	 */
	if (tg_load_8(&a->state) != TG_STATE_ACTIVE) {
		*granted = c->granted;
		tg_calls_unlock(&l);
		tg_count(w, TG_C_call_blocked, 1);
		return TG_BLOCKED;
	}
	for (int tries = 0; tries <= 16; tries++) {
		tg_money_t avail = tg_acct_available(a), budget, cost;
		*why = TG_WHY_MONEY;
		if (avail <= 0 || !tg_money_add(c->reserved, avail, &budget)) {
			res = TG_BLOCKED;
			break;
		}
		if (lim != NULL)
			limit_budget(lim, today, c->reserved, &budget, why);
		uint32_t g = tg_rate_grant(&c->rate, budget, cap, &cost);
		if (g <= c->granted) {
			/*
			 * Nothing more under the cap.  When the money would pay for
			 * more, the cap is what stops it: say so, the switch should
			 * ask again later, not hear that the balance is short.
			 */
			tg_money_t more;
			bool capped =
			    cap < TG_DURATION_MAX &&
			    tg_rate_grant(&c->rate, budget, TG_DURATION_MAX, &more) > c->granted;
			res = capped ? TG_MAXGRANT : TG_BLOCKED;
			if (!capped && *why == TG_WHY_DAILYCAP)
				res = TG_DAILYCAP;
			break;
		}
		res = lim != NULL
		          ? tg_acct_reserve_limited(a, lim, today, cost - c->reserved, false, &m)
		          : tg_acct_extend(a, cost - c->reserved, &m);
		if (res == TG_OK) {
			jrec_reserve(w, acct, call, cost - c->reserved, g, &c->rate, NULL, NULL, 0);
			c->reserved = cost;
			c->granted = g;
			c->expires_ns = c->started_ns + (uint64_t)(g + e->cfg.call_grace) * NS;
			if (g >= cap)
				*why = why_full(lim, m.available);
			c->stopped = 0; /* it may be stopped again if the money runs out again */
			break;
		}
		if (res != TG_SHORT && res != TG_DAILYCAP)
			break;
	}
	*granted = c->granted;
	tg_calls_unlock(&l);
	if (res == TG_SHORT)
		res = TG_BLOCKED;
	if (res == TG_OK || res == TG_BLOCKED)
		tg_count(w, res == TG_OK ? TG_C_call_update : TG_C_call_blocked, 1);
	if (res == TG_OK)
		count_why(w, *why);
	else if (res == TG_DAILYCAP)
		tg_count(w, TG_C_call_dailycap, 1);
	/* A cut, a DAILYCAP, or a BLOCKED because the call cap pays for nothing more. */
	if (res == TG_OK || res == TG_DAILYCAP || (res == TG_BLOCKED && *why == TG_WHY_CALLCAP))
		alarm_why(w, a, lim, res == TG_DAILYCAP ? TG_WHY_DAILYCAP : *why);
	return res;
}

/*
 * A call settled for cost: the part of its reservation it did not use goes
 * back to today's count of a daily cap, when CALL.AUTH counted it today
 * (docs/FRAUD.md: a reservation counted on a day that is over stays there).
 */
static void
settle_day(struct tg_worker *w, struct tg_acct *a, const struct tg_call *c, tg_money_t cost)
{
	if (c->day == 0 || c->day != (uint16_t)(tg_utc_day(w->now_s) + 1))
		return;
	struct tg_limits *lim = tg_acct_limits(w->e->table, a);
	if (lim != NULL && tg_load_64((uint64_t *)&lim->daily_cap) != 0)
		tg_limits_day_give(lim, tg_utc_day(w->now_s), c->reserved - cost);
}

/*
 * Was call settled by expiry for acct (and is that still remembered)?  Then
 * *charge is what expiry charged.  Takes the window stripe of the mark and
 * nothing else: called with no lock held.  Expiry records the mark before
 * it lets go of the call's stripe, so a call found gone has its mark.
 */
static bool
settled_by_expiry(struct tg_worker *w, uint64_t acct, struct tg_id call, tg_money_t *charge)
{
	struct tg_idem_lock l;
	const struct tg_idem_rec *rec =
	    tg_idem_lock(w->e->ids, digest(KIND_CALL, call), w->now_s, &l);
	bool mine = rec != NULL && rec->result == TG_EXPIRED && rec->fingerprint == acct;

	if (mine)
		*charge = rec->reply;
	tg_idem_unlock(&l);
	return mine;
}

enum tg_result
tg_call_end(struct tg_worker *w, uint64_t acct, struct tg_id call, uint32_t duration,
            tg_money_t *charge)
{
	struct tg_engine *e = w->e;
	struct tg_idem_lock il;
	struct tg_calls_lock cl;
	struct tg_move m;
	bool is_new;
	uint64_t fp = fingerprint(acct, duration, NULL, 0);

	enum tg_result res = window_check(w, digest(KIND_END, call), fp, &il, charge, &is_new);
	if (!is_new)
		return res;
	/* The settling share is kept for this: refused only when the disk is truly full. */
	if (tg_engine_refusing(w, TG_JW_SETTLE)) {
		tg_idem_unlock(&il);
		return TG_NOSPACE;
	}
	/* The stripe is locked whether or not the call is there. */
	struct tg_call *c = tg_calls_lock(e->calls, digest(KIND_CALL, call), &cl);
	if (c == NULL || c->acct != acct) {
		tg_calls_unlock(&cl);
		tg_idem_unlock(&il);
		return settled_by_expiry(w, acct, call, charge) ? TG_EXPIRED : TG_NOCALL;
	}
	/* The switch was told to stop at the grant: seconds past it are not billed. */
	uint32_t billed = duration;
	if (billed > c->granted) {
		tg_count(w, TG_C_call_overrun_seconds, billed - c->granted);
		billed = c->granted;
	}
	tg_money_t cost;
	bool ok = tg_rate_charge(&c->rate, billed, &cost);
	TG_ASSERT(ok && cost <= c->reserved);
	struct tg_acct *a = tg_table_find(e->table, acct);
	TG_ASSERT(a != NULL);
	res = tg_acct_commit(a, c->reserved, cost, &m);
	TG_ASSERT(res == TG_OK);
	struct tg_jrec_commit p = {.acct = acct,
	                           .call = tg_jdigest_of(digest(KIND_CALL, call)),
	                           .end = tg_jdigest_of(digest(KIND_END, call)),
	                           .fingerprint = fp,
	                           .reserved = c->reserved,
	                           .cost = cost,
	                           .duration = billed,
	                           .category = c->rate.category};
	struct tg_jitem_charge ic = {.balance = m.balance,
	                             .per_min = c->rate.per_min,
	                             .connect = c->rate.connect,
	                             .reported = duration,
	                             .billed = tg_rate_billed(&c->rate, billed)};
	jrec_item(w, TG_JREC_COMMIT, &p, &ic, call.p, call.len, NULL, 0, NULL, 0, c->rate.prefix,
	          c->rate.prefix_len);
	struct tg_rate rate = c->rate;
	settle_day(w, a, c, cost);
	tg_calls_remove_unlock(&cl);
	window_record(w, &il, fp, cost);
	add_usage(w, a, &rate, cost);
	tg_note_move(w, a, &m);
	tg_count(w, TG_C_call_ended, 1);
	*charge = cost;
	return TG_OK;
}

static enum tg_result
rated_debit(struct tg_worker *w, struct tg_acct *a, const char *dest, size_t dlen,
            uint32_t duration, tg_money_t *charge, struct tg_move *m, const struct tg_rate **rp)
{
	const struct tg_rate *r;
	enum tg_result res = rate_for(w, a, dest, dlen, &r);

	*rp = NULL;
	if (res != TG_OK)
		return res;
	if (!tg_rate_charge(r, duration, charge))
		return TG_OVERFLOW;
	res = tg_acct_debit(a, *charge, m);
	if (res != TG_OK)
		return res;
	/* The call happened: a daily cap counts it, even past the cap. */
	struct tg_limits *lim = tg_acct_limits(w->e->table, a);
	if (lim != NULL && tg_load_64((uint64_t *)&lim->daily_cap) != 0)
		tg_limits_day_add(lim, tg_utc_day(w->now_s), *charge);
	*rp = r;
	add_usage(w, a, r, *charge);
	return TG_OK;
}

enum tg_result
tg_rated_debit(struct tg_worker *w, struct tg_acct *a, const char *dest, size_t dlen,
               uint32_t duration, tg_money_t *charge, struct tg_move *m)
{
	const struct tg_rate *r;
	enum tg_result res = rated_debit(w, a, dest, dlen, duration, charge, m, &r);

	if (res == TG_OK) {
		tg_note_move(w, a, m);
		if (*charge > 0)
			stop_hint(w, a);
	}
	return res;
}

enum tg_result
tg_cdr(struct tg_worker *w, uint64_t acct, const char *dest, size_t dlen, uint32_t duration,
       struct tg_id call, tg_money_t *charge)
{
	struct tg_idem_lock il;
	struct tg_move m;
	bool is_new;
	uint64_t fp = fingerprint(acct, duration, dest, dlen);

	struct tg_digest d = digest(KIND_CDR, call);
	enum tg_result res = window_check(w, d, fp, &il, charge, &is_new);
	if (!is_new)
		return res;
	if (tg_engine_refusing(w, TG_JW_NEW)) {
		tg_idem_unlock(&il);
		return TG_NOSPACE;
	}
	const struct tg_rate *r = NULL;
	struct tg_acct *a = tg_table_find(w->e->table, acct);
	res = a ? rated_debit(w, a, dest, dlen, duration, charge, &m, &r) : TG_NOACCOUNT;
	if (res != TG_OK) {
		/* Refused requests are not remembered: a corrected retry may follow. */
		tg_idem_unlock(&il);
		return res;
	}
	struct tg_jrec_debit p = {.acct = acct,
	                          .id = tg_jdigest_of(d),
	                          .fingerprint = fp,
	                          .cost = *charge,
	                          .duration = duration,
	                          .category = r->category};
	struct tg_jitem_charge ic = {.balance = m.balance,
	                             .per_min = r->per_min,
	                             .connect = r->connect,
	                             .reported = duration,
	                             .billed = tg_rate_billed(r, duration)};
	size_t pn;
	const char *plan = plan_name(w, a, &pn);
	jrec_item(w, TG_JREC_DEBIT, &p, &ic, call.p, call.len, dest, dlen, plan, pn, r->prefix,
	          r->prefix_len);
	tg_note_move(w, a, &m);
	window_record(w, &il, fp, *charge);
	if (*charge > 0)
		stop_hint(w, a); /* another switch's call drained it: this one's calls may stop */
	tg_count(w, TG_C_cdr, 1);
	return TG_OK;
}

enum tg_result
tg_credit(struct tg_worker *w, uint64_t acct, tg_money_t amount, struct tg_id tx,
          tg_money_t *balance)
{
	struct tg_idem_lock il;
	struct tg_move m;
	bool is_new;
	uint64_t fp = fingerprint(acct, amount, NULL, 0);

	TG_ASSERT(amount > 0);
	struct tg_digest d = digest(KIND_CREDIT, tx);
	enum tg_result res = window_check(w, d, fp, &il, balance, &is_new);
	if (!is_new)
		return res;
	if (tg_engine_refusing(w, TG_JW_CREDIT)) {
		tg_idem_unlock(&il);
		return TG_NOSPACE;
	}
	uint32_t seq = tg_refill_id_parse(acct, tx.p, tx.len);
	struct tg_acct *a = tg_table_find(w->e->table, acct);
	res = a ? tg_acct_credit(a, amount, seq, &m) : TG_NOACCOUNT;
	if (res != TG_OK) {
		tg_idem_unlock(&il);
		return res;
	}
	struct tg_jrec_credit p = {.acct = acct,
	                           .txid = tg_jdigest_of(d),
	                           .fingerprint = fp,
	                           .amount = amount,
	                           .balance = m.balance,
	                           .refill_seq = seq};
	struct tg_jitem_credit ic = {.source = seq != 0 ? TG_JCREDIT_REFILL : TG_JCREDIT_OPERATOR};
	jrec_item(w, TG_JREC_CREDIT, &p, &ic, tx.p, tx.len, w->who, who_len(w), NULL, 0, NULL, 0);
	window_record(w, &il, fp, m.balance);
	tg_note_move(w, a, &m);
	/* A payment: the failed refills are forgiven, a suspension for non-payment lifted. */
	struct tg_standing st;
	note_standing(w, a, tg_acct_paid(a, &st), &st);
	tg_count(w, TG_C_credits, 1);
	tg_count_money(w, TG_C_money_credited, amount);
	*balance = m.balance;
	return TG_OK;
}

enum tg_result
tg_refill_failed(struct tg_worker *w, uint64_t acct, struct tg_id req, bool counts)
{
	uint32_t seq = tg_refill_id_parse(acct, req.p, req.len);
	if (seq == 0)
		return TG_ERR;
	struct tg_acct *a = tg_table_find(w->e->table, acct);
	if (a == NULL)
		return TG_NOACCOUNT;
	if (tg_engine_refusing(w, TG_JW_CREDIT))
		return TG_NOSPACE;
	/* A repeated report (a worker retrying) finds the flag already clear: still OK. */
	if (tg_acct_refill_clear(a, seq)) {
		struct tg_jrec_refill_cleared p = {
		    .acct = acct, .refill_seq = seq, .reason = TG_JREFILL_FAILED};
		jrec(w, TG_JREC_REFILL_CLEARED, &p, sizeof(p));
		tg_count(w, TG_C_refills_failed, 1);
		/* Counted once per request: only the report that cleared its flag gets here. */
		if (counts) {
			struct tg_standing st;
			enum tg_standing_event ev =
			    tg_acct_refill_failure(a, w->e->cfg.suspend_after, w->now_s, &st);
			note_standing(w, a, ev, &st);
		}
	}
	return TG_OK;
}

enum tg_result
tg_refill_rearm(struct tg_worker *w, uint64_t acct, uint32_t *fired)
{
	struct tg_move m;
	struct tg_acct *a = tg_table_find(w->e->table, acct);

	*fired = 0;
	if (a == NULL)
		return TG_NOACCOUNT;
	tg_acct_rearm(a, &m);
	tg_note_move(w, a, &m);
	if (m.refill_fired)
		*fired = m.refill_seq;
	return TG_OK;
}

/*
 * A worker will try request seq of a again in lease seconds: push the
 * record's last publication forward so the publisher's scan does not put
 * it on the stream again before then (plus refill-timeout).  Only ever
 * forward, and only while the record holds that request.
 */
static void
lease_refill(struct tg_worker *w, struct tg_acct *a, uint32_t seq, uint32_t lease)
{
	struct tg_refill_rec *rec = tg_table_refill(w->e->table, a);
	uint64_t until = (uint64_t)w->now_s + lease;
	uint32_t want = until > UINT32_MAX ? UINT32_MAX : (uint32_t)until;

	if (TG_RTAG_SEQ(tg_load_64(&rec->tag)) != seq)
		return;
	for (;;) {
		uint32_t cur = tg_load_32(&rec->published);
		if (cur >= want || ck_pr_cas_32(&rec->published, cur, want))
			break;
	}
	tg_count(w, TG_C_refills_leased, 1);
}

enum tg_result
tg_refill_claim(struct tg_worker *w, uint64_t acct, struct tg_id req, uint32_t lease,
                const char **why)
{
	struct tg_acct_view v;
	uint32_t seq = tg_refill_id_parse(acct, req.p, req.len);

	*why = NULL;
	if (seq == 0)
		return TG_ERR;
	struct tg_acct *a = tg_table_find(w->e->table, acct);
	if (a == NULL)
		return TG_NOACCOUNT;
	tg_acct_read(a, &v);
	if (!v.refill_inflight || v.refill_seq != seq) {
		*why = "not the account's pending request (answered, voided or superseded)";
		return TG_VOID;
	}
	bool may_charge = v.state == TG_STATE_ACTIVE ||
	                  (v.state == TG_STATE_SUSPENDED && (v.flags & TG_ACCT_UNPAID));
	if (may_charge && v.refill_mode != TG_REFILL_OFF && (v.flags & TG_ACCT_PAYMENT)) {
		tg_count(w, TG_C_refills_claimed, 1);
		if (lease > 0)
			lease_refill(w, a, seq, lease);
		return TG_OK;
	}
	*why = v.state == TG_STATE_CLOSED       ? "the account is closed"
	       : v.state == TG_STATE_SUSPENDED  ? "the account is suspended"
	       : v.refill_mode == TG_REFILL_OFF ? "auto-refill is off"
	                                        : "no payment method on file";
	/* Settled here, without a charge: the flag clears so the account is not jammed. */
	if (tg_acct_refill_clear(a, seq)) {
		struct tg_jrec_refill_cleared p = {
		    .acct = acct, .refill_seq = seq, .reason = TG_JREFILL_VOID};
		jrec(w, TG_JREC_REFILL_CLEARED, &p, sizeof(p));
		tg_count(w, TG_C_refills_void, 1);
	}
	return TG_VOID;
}

enum tg_result
tg_quote(struct tg_worker *w, const char *plan, size_t plen, const char *dest, size_t dlen,
         uint32_t duration, tg_money_t *charge, const struct tg_rate **rate)
{
	int id = tg_plan_registry_id(&w->e->table->plans, plan, plen, false);
	const struct tg_plan *p = id >= 0 ? tg_planset_plan(w->plans, (uint32_t)id) : NULL;

	if (p == NULL)
		return TG_NOPLAN;
	*rate = tg_plan_match(p, dest, dlen);
	if (*rate == NULL)
		return TG_NORATE;
	return tg_rate_charge(*rate, duration, charge) ? TG_OK : TG_OVERFLOW;
}

/* ---- expiry ---- */

/*
 * Settle one call due, under its calls stripe (tg_calls_expire), and mark
 * its call id in the window as a CALL.END would: a later CALL.AUTH of the
 * id is a CONFLICT and a late CALL.END answers EXPIRED with the charge.
 * The mark's stripe is only tried (the lock order forbids waiting for it
 * here); when it is busy, or full of live ids, the call is kept, its
 * reservation still held, and the next scan (a tick later) tries again:
 * settling without the mark would let the id be authorized and billed a
 * second time.
 */
static bool
settle_expired(void *arg, const struct tg_call *c)
{
	struct tg_worker *w = arg;
	struct tg_idem_lock il;
	const struct tg_idem_rec *old;
	struct tg_move m;
	tg_money_t cost;

	if (!tg_idem_trylock(w->e->ids, c->key, w->now_s, &il, &old))
		return false;
	if (old == NULL && !tg_idem_has_room(&il)) {
		tg_idem_unlock(&il);
		tg_count(w, TG_C_window_full, 1);
		return false;
	}
	struct tg_acct *a = tg_table_find(w->e->table, c->acct);
	TG_ASSERT(a != NULL);
	bool ok = tg_rate_charge(&c->rate, c->granted, &cost);
	TG_ASSERT(ok && cost <= c->reserved);
	tg_acct_commit(a, c->reserved, cost, &m);
	settle_day(w, a, c, cost);
	struct tg_jrec_expire p = {.acct = c->acct,
	                           .call = tg_jdigest_of(c->key),
	                           .reserved = c->reserved,
	                           .cost = cost,
	                           .seconds = c->granted,
	                           .category = c->rate.category};
	struct tg_jitem_charge ic = {.balance = m.balance,
	                             .per_min = c->rate.per_min,
	                             .connect = c->rate.connect,
	                             .reported = c->granted,
	                             .billed = tg_rate_billed(&c->rate, c->granted)};
	jrec_item(w, TG_JREC_EXPIRE, &p, &ic, NULL, 0, NULL, 0, NULL, 0, c->rate.prefix,
	          c->rate.prefix_len);
	if (old == NULL) {
		struct tg_idem_rec mark = {
		    .fingerprint = c->acct, .reply = cost, .seen = w->now_s, .result = TG_EXPIRED};
		enum tg_result r = tg_idem_record_unlock(&il, &mark);
		TG_ASSERT(r == TG_OK); /* room was checked under this lock */
	} else {
		tg_idem_unlock(&il); /* marked already: CALL.AUTH refuses such an id */
	}
	add_usage(w, a, &c->rate, cost);
	tg_note_move(w, a, &m);
	return true;
}

size_t
tg_engine_expire(struct tg_worker *w)
{
	/*
	 * Expiry cannot be refused call by call once it started: it runs only
	 * when every call in progress could be settled.  On a full disk the calls
	 * wait, still reserved, and are settled once space comes back.
	 */
	if (w->e->jw != NULL && !tg_jw_admit(w->e->jw, TG_JW_EXPIRE))
		return 0;
	size_t n = tg_calls_expire(w->e->calls, w->now_ns, settle_expired, w);
	tg_count(w, TG_C_call_expired, n);
	return n;
}

/* ---- accounts unpaid too long ---- */

/* Slots looked at per call: a tick's worth of work stays well under a millisecond. */
#define UNPAID_CHUNK 16384

size_t
tg_engine_close_unpaid(struct tg_worker *w)
{
	struct tg_engine *e = w->e;
	struct tg_table *t = e->table;
	uint32_t after = e->cfg.close_after;
	size_t closed = 0;

	if (after == 0 || (e->unpaid_pos == 0 && w->now_s < e->unpaid_next_s))
		return 0;
	/* A closure is a change like any other: on a full disk it waits for room. */
	if (e->jw != NULL && !tg_jw_admit(e->jw, TG_JW_NEW))
		return 0;
	uint64_t end = e->unpaid_pos + UNPAID_CHUNK;
	if (end > t->slots)
		end = t->slots;
	for (uint64_t i = e->unpaid_pos; i < end; i++) {
		struct tg_acct *a = tg_table_slot(t, i);
		struct tg_standing st;
		struct tg_move m;
		if (tg_load_64(&a->key) == 0 || !(tg_load_8(&a->flags) & TG_ACCT_UNPAID))
			continue;
		if (tg_acct_close_unpaid(a, after, w->now_s, &st, &m) != TG_STANDING_CLOSED)
			continue;
		note_standing(w, a, TG_STANDING_CLOSED, &st);
		tg_note_move(w, a, &m);
		closed++;
	}
	e->unpaid_pos = end < t->slots ? end : 0;
	if (e->unpaid_pos == 0) {
		/* A pass every tenth of the delay, between 1 and 60 seconds: closures stay timely.
		 */
		uint32_t every = after / 10;
		every = every < 1 ? 1 : every > 60 ? 60 : every;
		e->unpaid_next_s = w->now_s + every;
	}
	return closed;
}

/* ---- refill request ids ---- */

size_t
tg_refill_id(uint64_t acct, uint32_t seq, char *buf)
{
	return (size_t)snprintf(buf, TG_REFILL_ID_MAX, "refill:%llu:%u", (unsigned long long)acct,
	                        seq);
}

uint32_t
tg_refill_id_parse(uint64_t acct, const char *p, size_t len)
{
	static const char pre[] = "refill:";
	uint64_t a = 0, s = 0;
	size_t i = sizeof(pre) - 1, start;

	if (len <= i || memcmp(p, pre, i) != 0)
		return 0;
	for (start = i; i < len && p[i] >= '0' && p[i] <= '9' && i - start < 20; i++)
		a = a * 10 + (uint64_t)(p[i] - '0');
	if (i == start || i >= len || p[i] != ':' || a != acct)
		return 0;
	for (start = ++i; i < len && p[i] >= '0' && p[i] <= '9' && i - start < 10; i++)
		s = s * 10 + (uint64_t)(p[i] - '0');
	if (i == start || i != len || s == 0 || s > UINT32_MAX)
		return 0;
	return (uint32_t)s;
}
