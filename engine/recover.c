/*
 * recover.c - the journal's state into the live engine, and back out for
 * comparison.  Start-up and tollstat verify; never on a worker.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tg_assert.h"
#include "tg_atomic.h"
#include "tg_clock.h"
#include "tg_recover.h"

#define NS 1000000000ll

#define INSTALL_THREADS 8

struct install {
	const struct tg_replay *r;
	size_t from, to; /* the slots of r's account table this one installs */
	char errbuf[200];
	struct tg_engine *e;
	int32_t *plan_ids; /* replay plan index -> registry id */
	int64_t now_rt, now_mono;
	uint32_t now_s;
	int rc;
	char *err;
	size_t errlen;
	uint64_t accounts, calls, ids, refills, dropped_ids;
};

static bool
inflight(const struct tg_racct *a)
{
	return a->refill_seq > a->refill_done;
}

static struct tg_acct_settings
settings_of(const struct tg_racct *a, uint32_t plan)
{
	struct tg_acct_settings s = {.plan = plan,
	                             .refill_amount = a->refill_amount,
	                             .state = a->state,
	                             .refill_mode = a->refill_mode,
	                             .flags = a->flags};
	tg_acct_terms_set(&s, a->threshold);
	return s;
}

/* The limits of ra into the table's record of a (docs/FRAUD.md). */
static void
restore_limits(struct tg_table *t, struct tg_acct *a, const struct tg_racct *ra)
{
	struct tg_limits_set ls = {.call_cap = ra->call_cap,
	                           .daily_cap = ra->daily_cap,
	                           .low = ra->low,
	                           .max_calls = ra->max_calls};
	tg_acct_restore_limits(t, a, &ls, TG_DAY_PACK(ra->day, ra->day_used));
}

static struct tg_acct_restore
restore_of(const struct tg_racct *ra)
{
	return (struct tg_acct_restore){.balance = ra->balance,
	                                .reserved = ra->reserved,
	                                .calls = ra->calls,
	                                .refill_seq = ra->refill_seq,
	                                .refill_inflight = inflight(ra),
	                                .failures = ra->failures,
	                                .unpaid_since = ra->unpaid_since};
}

/*
 * The refill request a's journal says is in flight, as it was fired (its
 * mode, balance and amount from the refill_fired record), pending: the
 * publisher's start-up scan puts it on the stream with the same id and the
 * same amount, never one recomputed from the balance of now.
 */
static void
put_refill(struct tg_table *t, struct tg_acct *a, const struct tg_racct *ra)
{
	struct tg_refill_rec *rec = tg_table_refill(t, a);
	uint8_t mode = (uint8_t)(ra->fired_mode ? ra->fired_mode : ra->refill_mode);
	tg_store_64((uint64_t *)&rec->balance, (uint64_t)ra->fired_balance);
	tg_store_64((uint64_t *)&rec->amount, (uint64_t)ra->fired_charge);
	tg_store_32(&rec->fired, (uint32_t)(ra->fired_time / NS));
	tg_store_32(&rec->published, 0);
	tg_store_64(&rec->tag, TG_RTAG(ra->refill_seq, 0, mode, TG_RREC_PENDING));
}

int
tg_recover_put_live(struct tg_table *t, const struct tg_replay *r, uint64_t id, char *err,
                    size_t errlen)
{
	const struct tg_racct *ra = tg_replay_acct(r, id);
	struct tg_acct *a;
	bool created;

	if (ra == NULL)
		return -ENOENT;
	const char *name = tg_replay_plan_name(r, ra->plan);
	/* No name yet (its balance came before its settings): plan id 0, as at install. */
	int plan = name[0] ? tg_plan_registry_id(&t->plans, name, strlen(name), true) : 0;
	if (plan < 0) {
		snprintf(err, errlen, "plan '%s' of account %llu: %s", name, (unsigned long long)id,
		         plan == -ENOSPC ? "plan-name registry full" : "invalid name");
		return -ENOSPC;
	}
	if (tg_table_insert(t, id, &a, &created) != TG_OK) {
		snprintf(err, errlen, "account %llu: the table is full (capacity %llu)",
		         (unsigned long long)id, (unsigned long long)t->hdr->capacity);
		return -ENOSPC;
	}
	struct tg_acct_restore rs = restore_of(ra);
	struct tg_acct_settings s = settings_of(ra, (uint32_t)plan);
	tg_acct_replace(a, &rs, &s);
	restore_limits(t, a, ra);
	struct tg_usage *u = tg_table_usage(t, a);
	for (int k = 0; k < TG_CATEGORIES_MAX; k++)
		tg_store_64((uint64_t *)&u->charged[k], (uint64_t)ra->usage[k]);
	/* A replica publishes nothing; its table shows the request as its primary fired it. */
	if (rs.refill_inflight &&
	    TG_RTAG_SEQ(tg_load_64(&tg_table_refill(t, a)->tag)) != ra->refill_seq)
		put_refill(t, a, ra);
	return 0;
}

static void
put_acct(void *arg, const struct tg_racct *ra)
{
	struct install *in = arg;
	struct tg_table *t = in->e->table;
	struct tg_acct *a;
	bool created;

	if (in->rc != 0)
		return;
	/* The replay refused every record whose plan it did not register. */
	TG_ASSERT(ra->plan < TG_PLANS_MAX);
	if (tg_table_insert(t, ra->id, &a, &created) != TG_OK) {
		snprintf(
		    in->err, in->errlen,
		    "the journal holds more accounts than capacity %llu allows: raise capacity",
		    (unsigned long long)t->hdr->capacity);
		in->rc = -ENOSPC;
		return;
	}
	struct tg_acct_restore r = restore_of(ra);
	struct tg_acct_settings s = settings_of(ra, (uint32_t)in->plan_ids[ra->plan]);
	tg_acct_restore(a, &r, &s);
	restore_limits(t, a, ra);
	struct tg_usage *u = tg_table_usage(t, a);
	for (int k = 0; k < TG_CATEGORIES_MAX; k++)
		tg_store_64((uint64_t *)&u->charged[k], (uint64_t)ra->usage[k]);
	in->accounts++;
	if (r.refill_inflight) {
		put_refill(t, a, ra);
		in->refills++;
	}
}

static void *
install_accts(void *arg)
{
	struct install *in = arg;
	tg_replay_each_acct_range(in->r, in->from, in->to, put_acct, in);
	return NULL;
}

static void
put_call(void *arg, const struct tg_rcall *rc)
{
	struct install *in = arg;
	struct tg_calls_lock l;
	struct tg_digest d = {rc->call.lo, rc->call.hi};

	if (in->rc != 0)
		return;
	/* Its age in wall-clock time, carried over to this boot's monotonic clock. */
	int64_t age = in->now_rt - rc->started;
	if (age < 0)
		age = 0;
	uint64_t started = in->now_mono > age ? (uint64_t)(in->now_mono - age) : 0;
	struct tg_call c = {
	    .acct = rc->acct,
	    .rate = {.per_min = rc->per_min,
	             .connect = rc->connect,
	             .initial = rc->initial,
	             .increment = rc->increment,
	             .minimum = rc->minimum,
	             .category = rc->category,
	             .always = (rc->flags & TG_JRESERVE_ALWAYS) != 0},
	    .reserved = rc->reserved,
	    .granted = rc->granted,
	    .day = rc->counted ? rc->day + 1 : 0,
	    .started_ns = started,
	    .expires_ns = started + (uint64_t)(rc->granted + in->e->cfg.call_grace) * (uint64_t)NS,
	    .key = d,
	};
	if (tg_calls_lock(in->e->calls, d, &l) != NULL) {
		tg_calls_unlock(&l);
		return;
	}
	if (tg_calls_insert_unlock(&l, &c) != TG_OK) {
		snprintf(
		    in->err, in->errlen,
		    "the journal holds more calls in progress than calls-max allows: raise it");
		in->rc = -ENOSPC;
		return;
	}
	in->calls++;
}

static void
put_id(void *arg, const struct tg_rid *ri)
{
	struct install *in = arg;
	struct tg_digest d = {ri->id.lo, ri->id.hi};
	/* Only an expiry's mark carries a result other than OK (tg_idem.h). */
	struct tg_idem_rec rec = {.fingerprint = ri->fingerprint,
	                          .reply = ri->reply,
	                          .seen = ri->seen,
	                          .result = ri->result == TG_EXPIRED ? TG_EXPIRED : TG_OK};

	if (in->rc != 0)
		return;
	if ((uint64_t)ri->seen + in->e->cfg.ids_window <= in->now_s) {
		in->dropped_ids++;
		return;
	}
	enum tg_result res = tg_idem_restore(in->e->ids, d, &rec);
	if (res == TG_FULL) {
		snprintf(in->err, in->errlen,
		         "the journal remembers more ids than ids-max allows: raise it");
		in->rc = -ENOSPC;
		return;
	}
	in->ids++;
}

static void
mark_plan(void *arg, const struct tg_racct *a)
{
	bool *used = arg;
	if (a->plan < TG_PLANS_MAX)
		used[a->plan] = true;
}

int
tg_recover_install(const struct tg_replay *r, struct tg_engine *e, char *err, size_t errlen)
{
	int32_t plan_ids[TG_PLANS_MAX] = {0};
	struct install in = {.e = e, .plan_ids = plan_ids, .err = err, .errlen = errlen};

	/* Into a fresh engine only, before any worker runs; the names fit the registry. */
	TG_ASSERT(e->table != NULL && e->calls != NULL && e->ids != NULL);
	TG_ASSERT(r->nplans <= TG_PLANS_MAX);
	/* Only the names some account holds: the others would take slots for nothing. */
	bool used[TG_PLANS_MAX] = {false};
	tg_replay_each_acct(r, mark_plan, used);
	for (uint32_t i = 0; i < r->nplans; i++) {
		const char *name = tg_replay_plan_name(r, i);
		if (!used[i])
			continue;
		int id =
		    name[0] ? tg_plan_registry_id(&e->table->plans, name, strlen(name), true) : 0;
		if (id < 0) {
			snprintf(err, errlen, "cannot register plan '%s' from the journal: %s",
			         name, strerror(-id));
			return id;
		}
		plan_ids[i] = id;
	}
	in.now_rt = (int64_t)tg_clock_ns(CLOCK_REALTIME);
	in.now_mono = (int64_t)tg_mono_ns();
	in.now_s = (uint32_t)(in.now_rt / NS);
	/*
	 * Accounts in parallel: inserts are lock-free and each account is
	 * written by one thread.  Most of the time goes to first touches of the
	 * segment's pages, which the threads share out.
	 */
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned nt = ncpu < 1 ? 1 : ncpu > INSTALL_THREADS ? INSTALL_THREADS : (unsigned)ncpu;
	struct install part[INSTALL_THREADS];
	pthread_t th[INSTALL_THREADS];
	bool started[INSTALL_THREADS] = {false};
	size_t cap = r->accts.cap, step = (cap + nt - 1) / nt;
	if (r->accts.n < 100000)
		nt = 1;
	for (unsigned k = 0; k < nt; k++) {
		part[k] = in;
		part[k].r = r;
		part[k].from = k * step;
		part[k].to = k + 1 == nt ? cap : (k + 1) * step;
		part[k].err = k == 0 ? err : part[k].errbuf;
		part[k].errlen = k == 0 ? errlen : sizeof(part[k].errbuf);
		if (k > 0)
			started[k] = pthread_create(&th[k], NULL, install_accts, &part[k]) == 0;
	}
	install_accts(&part[0]);
	for (unsigned k = 1; k < nt; k++) {
		if (started[k])
			pthread_join(th[k], NULL);
		else
			install_accts(&part[k]);
		if (part[k].rc != 0 && part[0].rc == 0) {
			part[0].rc = part[k].rc;
			snprintf(err, errlen, "%s", part[k].errbuf);
		}
	}
	in.rc = part[0].rc;
	tg_replay_each_call(r, put_call, &in);
	tg_replay_each_id(r, put_id, &in);
	return in.rc;
}

/* ---- comparison ---- */

struct cmp {
	const struct tg_replay *r;
	const struct tg_table *t;
	void (*fn)(void *arg, const struct tg_recover_diff *d);
	void *arg;
	uint64_t differ;
};

static void
diff(struct cmp *c, uint64_t acct, const char *what, int64_t journal, int64_t live)
{
	struct tg_recover_diff d = {.acct = acct, .what = what, .journal = journal, .live = live};
	if (c->fn != NULL)
		c->fn(c->arg, &d);
}

static void
cmp_acct(void *arg, const struct tg_racct *ra)
{
	struct cmp *c = arg;
	struct tg_acct_view v;
	bool bad = false;

	const struct tg_acct *a = tg_table_find(c->t, ra->id);
	if (a == NULL) {
		diff(c, ra->id, "missing", ra->balance, 0);
		c->differ++;
		return;
	}
	tg_acct_read(a, &v);
	if (v.balance != ra->balance) {
		diff(c, ra->id, "balance", ra->balance, v.balance);
		bad = true;
	}
	if (v.reserved != ra->reserved) {
		diff(c, ra->id, "reserved", ra->reserved, v.reserved);
		bad = true;
	}
	if (v.refill_inflight != inflight(ra) || v.refill_seq != ra->refill_seq) {
		diff(c, ra->id, "refill", (int64_t)ra->refill_seq * (inflight(ra) ? -1 : 1),
		     (int64_t)v.refill_seq * (v.refill_inflight ? -1 : 1));
		bad = true;
	}
	const char *plan = tg_plan_registry_name(&c->t->plans, v.plan);
	if (tg_acct_view_terms(&v) != ra->threshold || v.refill_amount != ra->refill_amount ||
	    v.state != ra->state || v.refill_mode != ra->refill_mode || v.flags != ra->flags ||
	    v.failures != ra->failures || v.unpaid_since != ra->unpaid_since ||
	    strcmp(plan ? plan : "", tg_replay_plan_name(c->r, ra->plan)) != 0) {
		diff(c, ra->id, "settings", 0, 0);
		bad = true;
	}
	if (bad)
		c->differ++;
}

uint64_t
tg_recover_compare(const struct tg_replay *r, const struct tg_table *t,
                   void (*fn)(void *arg, const struct tg_recover_diff *d), void *arg)
{
	struct cmp c = {.r = r, .t = t, .fn = fn, .arg = arg};

	tg_replay_each_acct(r, cmp_acct, &c);
	/* Accounts the table has and the journal never named. */
	for (uint64_t i = 0; i < t->slots; i++) {
		const struct tg_acct *a = tg_table_slot(t, i);
		if (tg_load_64((uint64_t *)&a->key) == 0)
			continue;
		if (tg_replay_acct(r, tg_acct_id(a)) == NULL) {
			struct tg_acct_view v;
			tg_acct_read(a, &v);
			diff(&c, v.id, "extra", 0, v.balance);
			c.differ++;
		}
	}
	return c.differ;
}

uint64_t
tg_recover_compare_one(const struct tg_replay *r, const struct tg_table *t, uint64_t id,
                       void (*fn)(void *arg, const struct tg_recover_diff *d), void *arg)
{
	struct cmp c = {.r = r, .t = t, .fn = fn, .arg = arg};
	const struct tg_racct *ra = tg_replay_acct(r, id);

	if (ra == NULL)
		return tg_table_find(t, id) != NULL;
	cmp_acct(&c, ra);
	return c.differ;
}
