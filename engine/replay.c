/*
 * replay.c - the journal's state rebuilt from files: apply, snapshots.
 *
 * Three open-addressing tables with linear probing (accounts by id, calls
 * and ids by digest), grown by doubling at three quarters full (the
 * account table is the big one: 152 bytes a slot); calls are removed by
 * backward shifting, so there are no tombstones.  Nothing here runs on a
 * worker: start-up, the snapshot thread and tollstat use it, so plain
 * malloc and stdio are fine.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tg_assert.h"
#include "tg_hash.h"
#include "tg_money.h"
#include "tg_replay.h"
#include "tg_result.h"
#include "tg_shm-t.h"

_Static_assert(sizeof(struct tg_racct) == 200, "snapshot account record");
/* A version 1 snapshot's account record: the same, up to the end of usage. */
#define RACCT_V1_SIZE 152u
_Static_assert(offsetof(struct tg_racct, unpaid_since) == RACCT_V1_SIZE, "version 2 appends");
/* A version 2 snapshot's: up to the end of failures. */
#define RACCT_V2_SIZE 160u
_Static_assert(offsetof(struct tg_racct, call_cap) == RACCT_V2_SIZE, "version 3 appends");
_Static_assert(sizeof(struct tg_rcall) == 80, "snapshot call record");
_Static_assert(sizeof(struct tg_rid) == 48, "snapshot id record");
_Static_assert(sizeof(struct tg_snap_hdr) == 64, "snapshot header");
_Static_assert(sizeof(struct tg_snap_trailer) == 16, "snapshot trailer");

#define REC_SIZES    (200u | 80u << 8 | 48u << 16)
#define REC_SIZES_V2 (RACCT_V2_SIZE | 80u << 8 | 48u << 16)
#define REC_SIZES_V1 (RACCT_V1_SIZE | 80u << 8 | 48u << 16)

/* The size of an account record in a snapshot of version v with rec_sizes; 0: not one we read. */
static size_t
snap_acct_size(uint32_t v, uint32_t rec_sizes)
{
	if (v == TG_SNAP_VERSION && rec_sizes == REC_SIZES)
		return sizeof(struct tg_racct);
	if (v == 2 && rec_sizes == REC_SIZES_V2)
		return RACCT_V2_SIZE;
	if (v == 1 && rec_sizes == REC_SIZES_V1)
		return RACCT_V1_SIZE;
	return 0;
}

/* ---- the tables ---- */

/* Tables from this size on ask for huge pages. */
#define HUGE_TABLE (4u << 20)
#define HUGE_PAGE  (2u << 20)

static int
tab_init(struct tg_rtab *t, size_t esize, size_t cap)
{
	t->slot = calloc(cap, esize);
	t->cap = cap;
	t->n = 0;
	if (t->slot == NULL)
		return -ENOMEM;
	/*
	 * The snapshot thread looks up an account for nearly every record it
	 * applies, at random in a table of 160-byte slots (320 MB for a
	 * million accounts): with 4 KiB pages each lookup also missed the TLB.
	 * Huge pages where the kernel grants them (a hint: nothing depends on
	 * it), on the whole 2 MiB pages inside the table.
	 */
	if (cap * esize >= HUGE_TABLE) {
		uintptr_t a = ((uintptr_t)t->slot + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
		uintptr_t b = ((uintptr_t)t->slot + cap * esize) & ~(uintptr_t)(HUGE_PAGE - 1);
		if (b > a)
			(void)madvise((void *)a, b - a, MADV_HUGEPAGE);
	}
	return 0;
}

static uint64_t
acct_hash(uint64_t id)
{
	return tg_mix64(id + 1);
}

static uint64_t
digest_hash(struct tg_jdigest d)
{
	return tg_mix64(d.lo ^ tg_mix64(d.hi));
}

static bool
digest_eq(struct tg_jdigest a, struct tg_jdigest b)
{
	return a.lo == b.lo && a.hi == b.hi;
}

static bool
digest_used(struct tg_jdigest d)
{
	return (d.lo | d.hi) != 0;
}

static struct tg_racct *
acct_slot(const struct tg_rtab *t, uint64_t id)
{
	struct tg_racct *s = t->slot;
	size_t mask = t->cap - 1;
	/* The probe ends only at a free slot: the table is a power of two, never full. */
	TG_ASSERT(t->cap > 0 && (t->cap & mask) == 0 && t->n < t->cap);
	for (size_t i = acct_hash(id) & mask;; i = (i + 1) & mask)
		if (!s[i].used || s[i].id == id)
			return &s[i];
}

static struct tg_rcall *
call_slot(const struct tg_rtab *t, struct tg_jdigest d)
{
	struct tg_rcall *s = t->slot;
	size_t mask = t->cap - 1;
	/* The probe ends only at a free slot: the table is a power of two, never full. */
	TG_ASSERT(t->cap > 0 && (t->cap & mask) == 0 && t->n < t->cap);
	for (size_t i = digest_hash(d) & mask;; i = (i + 1) & mask)
		if (!digest_used(s[i].call) || digest_eq(s[i].call, d))
			return &s[i];
}

static struct tg_rid *
id_slot(const struct tg_rtab *t, struct tg_jdigest d)
{
	struct tg_rid *s = t->slot;
	size_t mask = t->cap - 1;
	/* The probe ends only at a free slot: the table is a power of two, never full. */
	TG_ASSERT(t->cap > 0 && (t->cap & mask) == 0 && t->n < t->cap);
	for (size_t i = digest_hash(d) & mask;; i = (i + 1) & mask)
		if (!digest_used(s[i].id) || digest_eq(s[i].id, d))
			return &s[i];
}

/*
 * Double a table of entries of size bytes when it is three quarters full:
 * place() puts each entry of the old table that is in use into the new one.
 */
static int
tab_grow(struct tg_rtab *t, size_t size, void (*place)(struct tg_rtab *n, const void *e))
{
	struct tg_rtab n;
	if (t->n * 4 < t->cap * 3)
		return 0;
	if (tab_init(&n, size, t->cap * 2) != 0)
		return -ENOMEM;
	for (size_t i = 0; i < t->cap; i++)
		place(&n, (const char *)t->slot + i * size);
	n.n = t->n;
	free(t->slot);
	*t = n;
	return 0;
}

static void
acct_place(struct tg_rtab *n, const void *e)
{
	const struct tg_racct *a = e;
	if (a->used)
		*acct_slot(n, a->id) = *a;
}

static void
call_place(struct tg_rtab *n, const void *e)
{
	const struct tg_rcall *c = e;
	if (digest_used(c->call))
		*call_slot(n, c->call) = *c;
}

static void
id_place(struct tg_rtab *n, const void *e)
{
	const struct tg_rid *d = e;
	if (digest_used(d->id))
		*id_slot(n, d->id) = *d;
}

static int
acct_grow(struct tg_rtab *t)
{
	return tab_grow(t, sizeof(struct tg_racct), acct_place);
}

static int
call_grow(struct tg_rtab *t)
{
	return tab_grow(t, sizeof(struct tg_rcall), call_place);
}

static int
id_grow(struct tg_rtab *t)
{
	return tab_grow(t, sizeof(struct tg_rid), id_place);
}

/* Remove the call at slot e: shift back the entries of the probe run behind it. */
static void
call_remove(struct tg_rtab *t, struct tg_rcall *e)
{
	struct tg_rcall *s = t->slot;
	size_t mask = t->cap - 1;
	/* The probe ends only at a free slot: the table is a power of two, never full. */
	TG_ASSERT(t->cap > 0 && (t->cap & mask) == 0 && t->n < t->cap);
	size_t i = (size_t)(e - s), j = i;

	for (;;) {
		j = (j + 1) & mask;
		if (!digest_used(s[j].call))
			break;
		size_t home = digest_hash(s[j].call) & mask;
		/* s[j] may move to i when i lies on its probe path: home .. j, cyclically. */
		bool between = i <= j ? (home <= i || home > j) : (home <= i && home > j);
		if (between) {
			s[i] = s[j];
			i = j;
		}
	}
	memset(&s[i], 0, sizeof(s[i]));
	t->n--;
}

int
tg_replay_init(struct tg_replay *r)
{
	memset(r, 0, sizeof(*r));
	r->plans_cap = TG_PLANS_MAX;
	r->plans = calloc(r->plans_cap, sizeof(*r->plans));
	if (r->plans == NULL || tab_init(&r->accts, sizeof(struct tg_racct), 1024) != 0 ||
	    tab_init(&r->calls, sizeof(struct tg_rcall), 1024) != 0 ||
	    tab_init(&r->ids, sizeof(struct tg_rid), 1024) != 0) {
		tg_replay_free(r);
		return -ENOMEM;
	}
	return 0;
}

void
tg_replay_free(struct tg_replay *r)
{
	free(r->accts.slot);
	free(r->calls.slot);
	free(r->ids.slot);
	free(r->plans);
	memset(r, 0, sizeof(*r));
}

/* The account id, created (active, zero, plan "") when the journal first names it. */
static struct tg_racct *
acct_get(struct tg_replay *r, uint64_t id)
{
	if (acct_grow(&r->accts) != 0)
		return NULL;
	struct tg_racct *a = acct_slot(&r->accts, id);
	if (!a->used) {
		memset(a, 0, sizeof(*a));
		a->id = id;
		a->used = 1;
		r->accts.n++;
	}
	return a;
}

/*
 * The plan names are full: keep only those some account holds, renumbered
 * in their order.  The engine reclaims names no account uses, so over its
 * life the journal may name more than TG_PLANS_MAX plans, never more than
 * that at once.
 */
static void
plans_compact(struct tg_replay *r)
{
	uint32_t map[TG_PLANS_MAX], n = 0;
	bool used[TG_PLANS_MAX] = {false};
	struct tg_racct *s = r->accts.slot;

	for (size_t i = 0; i < r->accts.cap; i++)
		if (s[i].used && s[i].plan < r->nplans)
			used[s[i].plan] = true;
	for (uint32_t i = 0; i < r->nplans; i++) {
		map[i] = n;
		if (used[i]) {
			if (n != i)
				memcpy(r->plans[n], r->plans[i], sizeof(r->plans[n]));
			n++;
		}
	}
	for (size_t i = 0; i < r->accts.cap; i++)
		if (s[i].used && s[i].plan < r->nplans)
			s[i].plan = map[s[i].plan];
	memset(r->plans[n], 0, (size_t)(r->nplans - n) * sizeof(r->plans[0]));
	r->nplans = n;
}

static int
plan_index(struct tg_replay *r, const char *name, uint32_t *out)
{
	char n[TG_PLAN_NAME_MAX + 1];

	memcpy(n, name, TG_PLAN_NAME_MAX);
	n[TG_PLAN_NAME_MAX] = '\0';
	for (uint32_t i = 0; i < r->nplans; i++)
		if (strcmp(r->plans[i], n) == 0) {
			*out = i;
			return 0;
		}
	if (r->nplans == r->plans_cap)
		plans_compact(r);
	if (r->nplans == r->plans_cap)
		return -ENOSPC;
	memcpy(r->plans[r->nplans], n, sizeof(n));
	*out = r->nplans++;
	return 0;
}

/* Remember id d as the engine's window did: fingerprint, first reply, result. */
static int
id_put(struct tg_replay *r, struct tg_jdigest d, uint64_t fp, int64_t reply, int64_t time_ns,
       enum tg_result result)
{
	uint32_t seen = (uint32_t)(time_ns / 1000000000);
	/* Already on disk (and in its filter): the engine finds it there. */
	if (r->cur_lsn <= r->spill_lsn && seen < r->spill_cut)
		return 0;
	if (id_grow(&r->ids) != 0)
		return -ENOMEM;
	struct tg_rid *e = id_slot(&r->ids, d);
	if (!digest_used(e->id))
		r->ids.n++;
	*e = (struct tg_rid){
	    .id = d, .fingerprint = fp, .reply = reply, .seen = seen, .result = result};
	return 0;
}

/* A call's reservation released (ended or expired). */
static void
call_end(struct tg_replay *r, struct tg_racct *a, struct tg_jdigest call, int64_t reserved)
{
	struct tg_rcall *c = call_slot(&r->calls, call);

	a->reserved -= reserved;
	if (digest_used(c->call)) {
		call_remove(&r->calls, c);
		if (a->calls > 0)
			a->calls--;
	} else {
		r->anomalies++;
	}
}

/* The day (UTC, days since the epoch) of a record's time. */
static uint32_t
day_of(int64_t time_ns)
{
	return time_ns > 0 ? (uint32_t)(time_ns / 86400000000000ll) : 0;
}

/* Add amount to a's count of day, as the live table's tg_limits_day_add does. */
static void
day_add(struct tg_racct *a, uint32_t day, int64_t amount)
{
	if (a->day != day) {
		a->day = day;
		a->day_used = 0;
	}
	a->day_used =
	    a->day_used > TG_DAY_USED_MAX - amount ? TG_DAY_USED_MAX : a->day_used + amount;
}

/* Give back what call c counted on day and did not use (tg_limits_day_give). */
static void
day_give(struct tg_racct *a, const struct tg_rcall *c, uint32_t day, int64_t reserved, int64_t cost)
{
	if (a->daily_cap == 0 || !digest_used(c->call) || !c->counted || c->day != day ||
	    a->day != day)
		return;
	int64_t unused = reserved - cost;
	a->day_used = a->day_used > unused ? a->day_used - unused : 0;
}

/*
 * Usage saturates at the top, as the live table's does (tg_usage_add).  The
 * caller has refused a category out of range (category_ok).
 */
static void
usage_add(struct tg_racct *a, uint32_t category, int64_t cost)
{
	TG_ASSERT(category < TG_CATEGORIES_MAX);
	int64_t *u = &a->usage[category];
	*u = tg_money_add_sat(*u, cost);
}

/*
 * A category no build ever wrote: the record is refused (-EPROTO), not
 * folded into range, so a writer's bug or a newer layout stops the replay
 * with a clear error instead of charging the wrong line of a statement.
 */
static bool
category_ok(uint32_t category)
{
	return category < TG_CATEGORIES_MAX;
}

int
tg_replay_apply(struct tg_replay *r, const struct tg_jrec *rec)
{
	struct tg_racct *a;
	uint64_t acct;

	memcpy(&acct, rec->payload, sizeof(acct)); /* every type starts with its account */
	r->cur_lsn = rec->lsn;
	a = acct_get(r, acct);
	if (a == NULL)
		return -ENOMEM;
	switch (rec->type) {
	case TG_JREC_RESERVE: {
		struct tg_jrec_reserve p;
		memcpy(&p, rec->payload, sizeof(p));
		if (!category_ok(p.category))
			return -EPROTO;
		if (call_grow(&r->calls) != 0)
			return -ENOMEM;
		struct tg_rcall *c = call_slot(&r->calls, p.call);
		a->reserved += p.amount;
		if (!digest_used(c->call)) {
			*c = (struct tg_rcall){.call = p.call,
			                       .acct = p.acct,
			                       .started = rec->time,
			                       .per_min = p.per_min,
			                       .connect = p.connect,
			                       .initial = p.initial,
			                       .increment = p.increment,
			                       .minimum = p.minimum,
			                       .category = p.category,
			                       .counted = a->daily_cap != 0,
			                       .day = day_of(rec->time),
			                       .flags = p.flags};
			r->calls.n++;
			a->calls++;
		}
		if (a->daily_cap != 0 && p.amount > 0)
			day_add(a, day_of(rec->time), p.amount);
		c->reserved += p.amount;
		c->granted = p.seconds;
		break;
	}
	case TG_JREC_COMMIT: {
		struct tg_jrec_commit p;
		memcpy(&p, rec->payload, sizeof(p));
		if (!category_ok(p.category))
			return -EPROTO;
		a->balance -= p.cost;
		usage_add(a, p.category, p.cost);
		day_give(a, call_slot(&r->calls, p.call), day_of(rec->time), p.reserved, p.cost);
		call_end(r, a, p.call, p.reserved);
		return id_put(r, p.end, p.fingerprint, p.cost, rec->time, TG_OK);
	}
	case TG_JREC_DEBIT: {
		struct tg_jrec_debit p;
		memcpy(&p, rec->payload, sizeof(p));
		if (!category_ok(p.category))
			return -EPROTO;
		a->balance -= p.cost;
		usage_add(a, p.category, p.cost);
		if (a->daily_cap != 0)
			day_add(a, day_of(rec->time), p.cost);
		return id_put(r, p.id, p.fingerprint, p.cost, rec->time, TG_OK);
	}
	case TG_JREC_CREDIT: {
		struct tg_jrec_credit p;
		memcpy(&p, rec->payload, sizeof(p));
		a->balance += p.amount;
		return id_put(r, p.txid, p.fingerprint, p.balance, rec->time, TG_OK);
	}
	case TG_JREC_SET_BALANCE: {
		struct tg_jrec_set_balance p;
		memcpy(&p, rec->payload, sizeof(p));
		/* The delta, not the value: it commutes with other workers' records. */
		a->balance += p.delta;
		break;
	}
	case TG_JREC_SETTINGS: {
		struct tg_jrec_settings p;
		uint32_t plan;
		memcpy(&p, rec->payload, sizeof(p));
		if (plan_index(r, p.plan, &plan) != 0)
			return -ENOSPC;
		a->threshold = p.threshold;
		a->refill_amount = p.refill_amount;
		a->state = p.state;
		a->refill_mode = p.refill_mode;
		/* The limits' bit is the limits record's to say (TG_JREC_LIMITS). */
		a->flags = (uint8_t)((p.flags & ~TG_ACCT_LIMITS) | (a->flags & TG_ACCT_LIMITS));
		a->plan = plan;
		if (!(p.flags & TG_ACCT_UNPAID))
			a->unpaid_since = 0;
		break;
	}
	case TG_JREC_LIMITS: {
		struct tg_jrec_limits p;
		memcpy(&p, rec->payload, sizeof(p));
		if (p.call_cap < 0 || p.daily_cap < 0 || p.daily_cap > TG_DAY_USED_MAX || p.low < 0)
			return -EPROTO;
		/* As tg_acct_set_limits: a cap set where none was, or removed, starts at 0. */
		if (p.daily_cap == 0 || a->daily_cap == 0) {
			a->day = day_of(rec->time);
			a->day_used = 0;
		}
		a->call_cap = p.call_cap;
		a->daily_cap = p.daily_cap;
		a->low = p.low;
		a->max_calls = p.max_calls;
		bool any = p.call_cap || p.daily_cap || p.low || p.max_calls;
		a->flags = (uint8_t)(any ? a->flags | TG_ACCT_LIMITS : a->flags & ~TG_ACCT_LIMITS);
		break;
	}
	case TG_JREC_STANDING: {
		struct tg_jrec_standing p;
		memcpy(&p, rec->payload, sizeof(p));
		a->state = p.state;
		a->flags =
		    (uint8_t)((a->flags & ~TG_ACCT_UNPAID) | (p.unpaid ? TG_ACCT_UNPAID : 0));
		a->unpaid_since = p.unpaid ? p.unpaid_since : 0;
		a->failures = (uint8_t)(p.failures > UINT8_MAX ? UINT8_MAX : p.failures);
		break;
	}
	case TG_JREC_REFILL_FIRED: {
		struct tg_jrec_refill_fired p;
		memcpy(&p, rec->payload, sizeof(p));
		if (p.refill_seq >= a->refill_seq) {
			a->refill_seq = p.refill_seq;
			a->fired_mode = p.mode;
			a->fired_balance = p.balance;
			a->fired_charge = p.charge;
			a->fired_time = rec->time;
		}
		break;
	}
	case TG_JREC_REFILL_CLEARED: {
		struct tg_jrec_refill_cleared p;
		memcpy(&p, rec->payload, sizeof(p));
		if (p.refill_seq > a->refill_done)
			a->refill_done = p.refill_seq;
		break;
	}
	case TG_JREC_EXPIRE: {
		struct tg_jrec_expire p;
		memcpy(&p, rec->payload, sizeof(p));
		if (!category_ok(p.category))
			return -EPROTO;
		a->balance -= p.cost;
		usage_add(a, p.category, p.cost);
		day_give(a, call_slot(&r->calls, p.call), day_of(rec->time), p.reserved, p.cost);
		call_end(r, a, p.call, p.reserved);
		/* The call id stays spent, as the live engine's window has it (tg_idem.h). */
		return id_put(r, p.call, p.acct, p.cost, rec->time, TG_EXPIRED);
	}
	default:
		return -EPROTO;
	}
	return 0;
}

/*
 * Records are applied a batch at a time: the batch is read first and the
 * account slot (and, for a record that remembers an id, the id's slot) each
 * will touch is prefetched, so the batch's cache misses overlap instead of
 * coming one after the other.  The snapshot thread follows the journal at
 * the workers' pace, and a miss per record, one at a time, was a tenth of a
 * busy server's CPU (docs/BENCHMARKS.md, "Steady state").  Each record's
 * payload is copied out of the reader's mapping, which a read that moves to
 * the next segment unmaps.
 */
#define APPLY_BATCH 16

struct batch {
	struct tg_jrec rec[APPLY_BATCH];
	_Alignas(8) unsigned char payload[APPLY_BATCH][TG_JOURNAL_PAYLOAD_MAX];
};

static void
prefetch_id(const struct tg_rtab *t, struct tg_jdigest d)
{
	const struct tg_rid *s = t->slot;
	__builtin_prefetch(&s[digest_hash(d) & (t->cap - 1)], 1);
}

static void
prefetch_rec(const struct tg_replay *r, const struct tg_jrec *rec)
{
	const struct tg_racct *a = r->accts.slot;
	uint64_t acct;

	memcpy(&acct, rec->payload, sizeof(acct));
	__builtin_prefetch(&a[acct_hash(acct) & (r->accts.cap - 1)], 1);
	if (rec->type == TG_JREC_DEBIT) {
		struct tg_jrec_debit p;
		memcpy(&p, rec->payload, sizeof(p));
		prefetch_id(&r->ids, p.id);
	} else if (rec->type == TG_JREC_COMMIT) {
		struct tg_jrec_commit p;
		memcpy(&p, rec->payload, sizeof(p));
		prefetch_id(&r->ids, p.end);
	} else if (rec->type == TG_JREC_CREDIT) {
		struct tg_jrec_credit p;
		memcpy(&p, rec->payload, sizeof(p));
		prefetch_id(&r->ids, p.txid);
	}
}

/*
 * Up to APPLY_BATCH records after r->lsn into b, prefetched, stopping past
 * limit (0: none) or where the journal stops (*st: OK, or why it stopped).
 * The number read; *last when nothing follows them (the journal stopped, or
 * limit was passed).
 */
static size_t
read_batch(const struct tg_replay *r, struct tg_journal_reader *jr, uint64_t limit, struct batch *b,
           enum tg_journal_status *st, bool *last)
{
	size_t n = 0;

	*st = TG_JOURNAL_OK;
	*last = false;
	while (n < APPLY_BATCH) {
		struct tg_jrec *rec = &b->rec[n];
		*st = tg_journal_next(jr, rec);
		*last = *st != TG_JOURNAL_OK || (limit != 0 && rec->lsn > limit);
		if (*last)
			break;
		if (rec->lsn <= r->lsn)
			continue; /* in the snapshot already */
		TG_ASSERT(rec->len <= TG_JOURNAL_PAYLOAD_MAX);
		memcpy(b->payload[n], rec->payload, rec->len);
		rec->payload = b->payload[n];
		prefetch_rec(r, rec);
		n++;
	}
	return n;
}

/* Why the record at rec was refused (tg_replay_apply's rc), into end->msg. */
static void
refused(const struct tg_jrec *rec, int rc, struct tg_replay_end *end)
{
	if (rc == -EPROTO)
		snprintf(end->msg, sizeof(end->msg),
		         "journal: LSN %" PRIu64 " (type %u) is a record no build writes "
		         "(an unknown type, or a category outside 0..%d): refused",
		         rec->lsn, rec->type, TG_CATEGORIES_MAX - 1);
	else
		snprintf(end->msg, sizeof(end->msg), "journal: cannot apply LSN %" PRIu64 ": %s",
		         rec->lsn, strerror(-rc));
}

int
tg_replay_journal(struct tg_replay *r, const char *dir, uint64_t limit, bool cut_torn,
                  struct tg_replay_end *end)
{
	struct tg_journal_reader *jr;
	enum tg_journal_status st;
	int rc;

	memset(end, 0, sizeof(*end));
	rc = tg_journal_open_dir(&jr, dir);
	if (rc != 0) {
		snprintf(end->msg, sizeof(end->msg), "journal: cannot read %s: %s", dir,
		         strerror(-rc));
		return rc;
	}
	/* The journal must reach back to the snapshot: LSN r->lsn + 1 must be in it. */
	if (tg_journal_segments(jr) > 0 && tg_journal_segment_lsn(jr, 0) > r->lsn + 1) {
		snprintf(end->msg, sizeof(end->msg),
		         "journal: the journal in %s starts at LSN %" PRIu64
		         " but the %s ends at LSN %" PRIu64
		         ": records in between are missing (a segment was removed by hand?)",
		         dir, tg_journal_segment_lsn(jr, 0), r->from ? "snapshot" : "empty state",
		         r->lsn);
		end->status = TG_JOURNAL_GAP;
		tg_journal_close(jr);
		return -EPROTO;
	}
	/*
	 * The segments wholly before r->lsn + 1 are already in the state: not
	 * read again.  The snapshot thread catches up every few seconds, and
	 * reading the whole journal kept since the oldest segment each time
	 * made a catch-up cost grow with the journal, not with what it adds.
	 */
	(void)tg_journal_seek(jr, r->lsn + 1);
	struct batch *b = malloc(sizeof(*b));
	if (b == NULL) {
		snprintf(end->msg, sizeof(end->msg), "journal: no memory to read %s", dir);
		tg_journal_close(jr);
		return -ENOMEM;
	}
	for (bool last = false; !last;) {
		size_t n = read_batch(r, jr, limit, b, &st, &last);
		for (size_t i = 0; i < n; i++) {
			rc = tg_replay_apply(r, &b->rec[i]);
			if (rc != 0) {
				refused(&b->rec[i], rc, end);
				free(b);
				tg_journal_close(jr);
				return rc;
			}
			r->lsn = b->rec[i].lsn;
			r->records++;
		}
	}
	free(b);
	end->status = st;
	end->next_lsn = r->lsn + 1;
	rc = 0;
	if (st == TG_JOURNAL_OK || st == TG_JOURNAL_END) {
		end->status = TG_JOURNAL_END;
	} else if (st == TG_JOURNAL_TORN_TAIL) {
		tg_journal_describe(jr, end->msg, sizeof(end->msg));
		if (cut_torn) {
			rc = tg_journal_truncate_tail(jr);
			end->cut = rc == 0;
		}
	} else {
		tg_journal_describe(jr, end->msg, sizeof(end->msg));
		rc = st == TG_JOURNAL_ERROR ? tg_journal_where(jr)->err : -EPROTO;
	}
	tg_journal_close(jr);
	return rc;
}

/* ---- lookups ---- */

const struct tg_racct *
tg_replay_acct(const struct tg_replay *r, uint64_t id)
{
	const struct tg_racct *a = acct_slot(&r->accts, id);
	return a->used ? a : NULL;
}

const char *
tg_replay_plan_name(const struct tg_replay *r, uint32_t plan)
{
	return plan < r->nplans ? r->plans[plan] : "";
}

void
tg_replay_each_acct(const struct tg_replay *r, void (*fn)(void *, const struct tg_racct *),
                    void *arg)
{
	const struct tg_racct *s = r->accts.slot;
	for (size_t i = 0; i < r->accts.cap; i++)
		if (s[i].used)
			fn(arg, &s[i]);
}

void
tg_replay_each_acct_range(const struct tg_replay *r, size_t from, size_t to,
                          void (*fn)(void *, const struct tg_racct *), void *arg)
{
	const struct tg_racct *s = r->accts.slot;
	if (to > r->accts.cap)
		to = r->accts.cap;
	for (size_t i = from; i < to; i++)
		if (s[i].used)
			fn(arg, &s[i]);
}

void
tg_replay_each_call(const struct tg_replay *r, void (*fn)(void *, const struct tg_rcall *),
                    void *arg)
{
	const struct tg_rcall *s = r->calls.slot;
	for (size_t i = 0; i < r->calls.cap; i++)
		if (digest_used(s[i].call))
			fn(arg, &s[i]);
}

void
tg_replay_each_id(const struct tg_replay *r, void (*fn)(void *, const struct tg_rid *), void *arg)
{
	const struct tg_rid *s = r->ids.slot;
	for (size_t i = 0; i < r->ids.cap; i++)
		if (digest_used(s[i].id))
			fn(arg, &s[i]);
}

/* ---- snapshots ---- */

static void
snap_name(char name[TG_SNAP_NAME_LEN], uint64_t lsn)
{
	snprintf(name, TG_SNAP_NAME_LEN, "snapshot-%016" PRIx64 ".tgs", lsn);
}

static bool
snap_name_parse(const char *name, uint64_t *lsn)
{
	uint64_t v = 0;

	if (strlen(name) != TG_SNAP_NAME_LEN - 1 || memcmp(name, "snapshot-", 9) != 0 ||
	    memcmp(name + 25, ".tgs", 4) != 0)
		return false;
	for (int i = 9; i < 25; i++) {
		char c = name[i];
		if (c >= '0' && c <= '9')
			v = v << 4 | (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v << 4 | (uint64_t)(c - 'a' + 10);
		else
			return false;
	}
	*lsn = v;
	return true;
}

static uint32_t
hdr_crc(const struct tg_snap_hdr *h)
{
	struct tg_snap_hdr c = *h;
	c.crc = 0;
	return tg_crc32c(0, &c, sizeof(c));
}

/* A buffered writer that checksums what it writes. */
struct sw {
	FILE *f;
	uint32_t crc;
	bool err;
};

static void
sw_put(struct sw *w, const void *p, size_t n)
{
	w->crc = tg_crc32c(w->crc, p, n);
	if (!w->err && fwrite(p, 1, n, w->f) != n)
		w->err = true;
}

struct snap_ctx {
	struct sw *w;
	uint32_t oldest; /* ids seen before are left out */
	uint64_t n;
};

static void
put_acct(void *arg, const struct tg_racct *a)
{
	struct snap_ctx *c = arg;
	struct tg_racct x = *a;
	x.calls = 0;
	sw_put(c->w, &x, sizeof(x));
	c->n++;
}

static void
put_call(void *arg, const struct tg_rcall *k)
{
	struct snap_ctx *c = arg;
	sw_put(c->w, k, sizeof(*k));
	c->n++;
}

static void
count_id(void *arg, const struct tg_rid *d)
{
	struct snap_ctx *c = arg;
	if (d->seen >= c->oldest)
		c->n++;
}

static void
put_id(void *arg, const struct tg_rid *d)
{
	struct snap_ctx *c = arg;
	if (d->seen >= c->oldest) {
		sw_put(c->w, d, sizeof(*d));
		c->n++;
	}
}

static int
lsn_desc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

/* Snapshots in dir, newest first, into lsns (at most max).  The count, or -errno. */
static int
snap_list(const char *dir, uint64_t *lsns, int max)
{
	uint64_t all[TG_SNAP_LIST_MAX];
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d)) != NULL) {
		uint64_t lsn;
		if (snap_name_parse(e->d_name, &lsn) && n < (int)TG_ARRAY_LEN(all))
			all[n++] = lsn;
	}
	closedir(d);
	qsort(all, (size_t)n, sizeof(all[0]), lsn_desc);
	if (n > max)
		n = max;
	memcpy(lsns, all, (size_t)n * sizeof(all[0]));
	return n;
}

/*
 * The pruning rule (docs/JOURNAL.md, "Snapshots"): the journal from the older
 * of the two newest *verified* snapshots onward is always kept, so losing
 * any one snapshot file never loses a balance.  Every candidate is read back
 * from the disk and checked before anything is deleted on its strength;
 * with fewer than TG_SNAP_KEEP verified snapshots nothing is deleted at all.
 * Snapshots older than the older verified one, damaged or not, go; damaged
 * ones newer than it stay for an operator to look at (journal-check lists
 * them; start-up skips them).  known is an LSN whose snapshot the caller has
 * just verified (0: none).
 */
uint64_t
tg_ledger_pos_read(const char *dir)
{
	char path[1024], buf[32];
	unsigned long long v = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, TG_LEDGER_POS_FILE);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	char *end;
	v = strtoull(buf, &end, 10);
	return end != buf && (*end == '\n' || *end == '\0') ? (uint64_t)v : 0;
}

/*
 * The first segment prune may keep for the ledger exporter: of the segments
 * [0, k) the snapshots no longer need, those from the first holding an LSN
 * after the exporter's position, trimmed from the front to keep->max_bytes.
 */
static size_t
ledger_first_kept(struct tg_journal_reader *jr, const char *dir, size_t k,
                  struct tg_ledger_keep *keep)
{
	char path[1024], seg[TG_JOURNAL_NAME_LEN];
	struct stat st;
	size_t j = 0;

	keep->exported = tg_ledger_pos_read(dir);
	if (keep->exported == 0)
		return k;
	while (j < k && tg_journal_segment_lsn(jr, j + 1) <= keep->exported + 1)
		j++;
	uint64_t bytes = 0;
	size_t first = k;
	while (first > j) {
		tg_journal_seg_name(seg, tg_journal_segment_lsn(jr, first - 1));
		snprintf(path, sizeof(path), "%s/%s", dir, seg);
		uint64_t b = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
		if (bytes + b > keep->max_bytes)
			break;
		bytes += b;
		first--;
	}
	if (first > j) {
		keep->cut = (unsigned)(first - j);
		keep->cut_lsn = tg_journal_segment_lsn(jr, first);
	}
	return first;
}

static void
prune(const char *dir, uint64_t known, struct tg_ledger_keep *keep)
{
	uint64_t all[TG_SNAP_LIST_MAX], good[TG_SNAP_KEEP];
	int n = snap_list(dir, all, TG_SNAP_LIST_MAX), ngood = 0;
	char path[1024], name[TG_SNAP_NAME_LEN], why[200];

	for (int i = 0; i < n && ngood < TG_SNAP_KEEP; i++)
		if (all[i] == known || tg_snapshot_verify(dir, all[i], why, sizeof(why)) == 0)
			good[ngood++] = all[i];
	if (ngood < TG_SNAP_KEEP)
		return;
	uint64_t oldest = good[TG_SNAP_KEEP - 1];
	for (int i = 0; i < n; i++) {
		if (all[i] >= oldest)
			continue;
		snap_name(name, all[i]);
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		unlink(path);
	}

	/* Segment i can go when segment i + 1 starts at or before oldest + 1. */
	struct tg_journal_reader *jr;
	if (tg_journal_open_dir(&jr, dir) != 0)
		return;
	size_t segs = tg_journal_segments(jr), k = 0;
	while (k + 1 < segs && tg_journal_segment_lsn(jr, k + 1) <= oldest + 1)
		k++;
	if (keep != NULL)
		k = ledger_first_kept(jr, dir, k, keep);
	for (size_t i = 0; i < k; i++) {
		char seg[TG_JOURNAL_NAME_LEN];
		tg_journal_seg_name(seg, tg_journal_segment_lsn(jr, i));
		snprintf(path, sizeof(path), "%s/%s", dir, seg);
		unlink(path);
	}
	tg_journal_close(jr);
}

int
tg_snapshot_verify(const char *dir, uint64_t lsn, char *why, size_t whylen)
{
	char name[TG_SNAP_NAME_LEN], path[1024];
	static const size_t chunk = 1 << 20;
	struct tg_snap_hdr h;
	struct tg_snap_trailer t;
	struct stat st;
	uint32_t crc = 0;
	int rc = -EPROTO;

	snap_name(name, lsn);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		rc = -errno;
		snprintf(why, whylen, "%s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	/* Read what is on the device, not the pages the writer left in the cache. */
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	uint8_t *buf = malloc(chunk);
	if (buf == NULL) {
		close(fd);
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
	    memcmp(h.magic, TG_SNAP_MAGIC, 8) != 0 || h.hdr_size != sizeof(h) ||
	    h.crc != hdr_crc(&h) || h.lsn != lsn) {
		snprintf(why, whylen, "bad header");
		goto out;
	}
	size_t asz = snap_acct_size(h.version, h.rec_sizes);
	if (asz == 0) {
		snprintf(why, whylen, "version %u, this build reads 1 to %u", h.version,
		         TG_SNAP_VERSION);
		goto out;
	}
	/* The counts bound the size only once accounts cannot overflow it. */
	uint64_t body = (uint64_t)h.plans * (TG_PLAN_NAME_MAX + 1) +
	                (uint64_t)h.calls * sizeof(struct tg_rcall) +
	                (uint64_t)h.ids * sizeof(struct tg_rid);
	if (h.accounts > (uint64_t)st.st_size / asz)
		body = UINT64_MAX - sizeof(h) - sizeof(t);
	else
		body += h.accounts * asz;
	if ((uint64_t)st.st_size != sizeof(h) + body + sizeof(t)) {
		snprintf(why, whylen, "%lld bytes, its header announces %llu",
		         (long long)st.st_size, (unsigned long long)(sizeof(h) + body + sizeof(t)));
		goto out;
	}
	for (uint64_t off = 0; off < body;) {
		size_t n = body - off < chunk ? (size_t)(body - off) : chunk;
		if (pread(fd, buf, n, (off_t)(sizeof(h) + off)) != (ssize_t)n) {
			snprintf(why, whylen, "read error at offset %llu: %s",
			         (unsigned long long)(sizeof(h) + off),
			         errno ? strerror(errno) : "short read");
			goto out;
		}
		crc = tg_crc32c(crc, buf, n);
		off += n;
	}
	if (pread(fd, &t, sizeof(t), (off_t)(sizeof(h) + body)) != (ssize_t)sizeof(t) ||
	    memcmp(t.magic, TG_SNAP_END, 8) != 0 || t.crc != crc) {
		snprintf(why, whylen, "checksum or trailer wrong");
		goto out;
	}
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

int
tg_snapshot_write(const struct tg_replay *r, const char *dir, uint32_t now, uint32_t window,
                  char *err, size_t errlen)
{
	return tg_snapshot_write_keep(r, dir, now, window, NULL, err, errlen);
}

int
tg_snapshot_write_keep(const struct tg_replay *r, const char *dir, uint32_t now, uint32_t window,
                       struct tg_ledger_keep *keep, char *err, size_t errlen)
{
	char name[TG_SNAP_NAME_LEN], path[1024], tmp[1040];
	struct tg_snap_hdr h;
	struct sw w = {0};
	struct snap_ctx c = {.w = &w, .oldest = now > window ? now - window : 0};
	int rc = 0;

	snap_name(name, r->lsn);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	w.f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (w.f == NULL) {
		if (fd >= 0)
			close(fd);
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		return -errno;
	}
	setvbuf(w.f, NULL, _IOFBF, 1 << 20);

	struct snap_ctx idc = {.oldest = c.oldest};
	tg_replay_each_id(r, count_id, &idc);
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, TG_SNAP_MAGIC, 8);
	h.version = TG_SNAP_VERSION;
	h.hdr_size = sizeof(h);
	h.lsn = r->lsn;
	h.created = (int64_t)time(NULL);
	h.accounts = r->accts.n;
	h.calls = (uint32_t)r->calls.n;
	h.ids = (uint32_t)idc.n;
	h.plans = r->nplans;
	h.rec_sizes = REC_SIZES;
	h.crc = hdr_crc(&h);
	if (fwrite(&h, sizeof(h), 1, w.f) != 1)
		w.err = true;
	sw_put(&w, r->plans, (size_t)r->nplans * sizeof(*r->plans));
	tg_replay_each_acct(r, put_acct, &c);
	tg_replay_each_call(r, put_call, &c);
	tg_replay_each_id(r, put_id, &c);

	struct tg_snap_trailer t = {.crc = w.crc};
	memcpy(t.magic, TG_SNAP_END, sizeof(TG_SNAP_END));
	if (fwrite(&t, sizeof(t), 1, w.f) != 1)
		w.err = true;
	if (fflush(w.f) != 0 || w.err || fsync(fileno(w.f)) != 0) {
		rc = -(errno ? errno : EIO);
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(-rc));
		fclose(w.f);
		unlink(tmp);
		return rc;
	}
	fclose(w.f);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rename(tmp, path) != 0 || dfd < 0 || fsync(dfd) != 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot put %s in place: %s", path, strerror(errno));
		unlink(tmp);
	}
	if (dfd >= 0)
		close(dfd);
	if (rc != 0)
		return rc;
	/* Read it back from the disk: nothing is pruned on the strength of a bad copy. */
	char why[200];
	rc = tg_snapshot_verify(dir, r->lsn, why, sizeof(why));
	if (rc != 0) {
		snprintf(err, errlen, "%s reads back damaged (%s): removed; the journal is kept",
		         path, why);
		unlink(path);
		return rc == -ENOMEM ? rc : -EIO;
	}
	prune(dir, r->lsn, keep);
	return 0;
}

/* A buffered reader that checksums what it reads. */
static bool
sr_get(FILE *f, void *p, size_t n, uint32_t *crc)
{
	if (fread(p, 1, n, f) != n)
		return false;
	*crc = tg_crc32c(*crc, p, n);
	return true;
}

/* An empty table t made big enough for n entries, at most two thirds full. */
static int
presize(struct tg_rtab *t, size_t esize, uint64_t n)
{
	size_t cap = t->cap;
	while (cap * 2 < 3 * n + 2)
		cap *= 2;
	if (cap == t->cap)
		return 0;
	free(t->slot);
	return tab_init(t, esize, cap);
}

/* Load one snapshot file into r (empty).  0, or -EPROTO with why in why. */
static int
snap_read(struct tg_replay *r, const char *path, uint64_t lsn, char *why, size_t whylen)
{
	FILE *f = fopen(path, "re");
	struct tg_snap_hdr h;
	struct tg_snap_trailer t;
	uint32_t crc = 0;
	int rc = -EPROTO;

	if (f == NULL) {
		snprintf(why, whylen, "%s", strerror(errno));
		return -errno;
	}
	setvbuf(f, NULL, _IOFBF, 1 << 20);
	if (fread(&h, sizeof(h), 1, f) != 1 || memcmp(h.magic, TG_SNAP_MAGIC, 8) != 0 ||
	    h.hdr_size != sizeof(h) || h.crc != hdr_crc(&h) || h.lsn != lsn) {
		snprintf(why, whylen, "bad header");
		goto out;
	}
	size_t asz = snap_acct_size(h.version, h.rec_sizes);
	if (asz == 0) {
		snprintf(why, whylen, "version %u, this build reads 1 to %u", h.version,
		         TG_SNAP_VERSION);
		goto out;
	}
	if (h.plans > r->plans_cap ||
	    !sr_get(f, r->plans, (size_t)h.plans * sizeof(*r->plans), &crc)) {
		snprintf(why, whylen, "plan names cut short");
		goto out;
	}
	r->nplans = h.plans;
	/* Size the tables for what the header announces: no rehash while loading. */
	if (presize(&r->accts, sizeof(struct tg_racct), h.accounts) != 0 ||
	    presize(&r->calls, sizeof(struct tg_rcall), h.calls) != 0 ||
	    presize(&r->ids, sizeof(struct tg_rid), h.ids) != 0) {
		rc = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < h.accounts; i++) {
		struct tg_racct a;
		memset(
		    &a, 0,
		    sizeof(a)); /* version 1: no failed refills, no suspension date; 2: no limits */
		if (!sr_get(f, &a, asz, &crc) || !a.used || (h.plans > 0 && a.plan >= h.plans)) {
			snprintf(why, whylen, "account %" PRIu64 " of %" PRIu64 " cut short or bad",
			         i, (uint64_t)h.accounts);
			goto out;
		}
		if (acct_grow(&r->accts) != 0) {
			rc = -ENOMEM;
			goto out;
		}
		struct tg_racct *s = acct_slot(&r->accts, a.id);
		if (s->used) {
			snprintf(why, whylen, "account %" PRIu64 " twice", a.id);
			goto out;
		}
		a.calls = 0;
		*s = a;
		r->accts.n++;
	}
	for (uint32_t i = 0; i < h.calls; i++) {
		struct tg_rcall k;
		if (!sr_get(f, &k, sizeof(k), &crc) || !digest_used(k.call)) {
			snprintf(why, whylen, "call %u of %u cut short or bad", i, h.calls);
			goto out;
		}
		if (call_grow(&r->calls) != 0) {
			rc = -ENOMEM;
			goto out;
		}
		*call_slot(&r->calls, k.call) = k;
		r->calls.n++;
		struct tg_racct *a = acct_slot(&r->accts, k.acct);
		if (a->used)
			a->calls++;
	}
	for (uint32_t i = 0; i < h.ids; i++) {
		struct tg_rid d;
		if (!sr_get(f, &d, sizeof(d), &crc) || !digest_used(d.id)) {
			snprintf(why, whylen, "id %u of %u cut short or bad", i, h.ids);
			goto out;
		}
		/* A snapshot older than the disk tier's watermark holds ids moved since. */
		if (h.lsn < r->spill_lsn && d.seen < r->spill_cut)
			continue;
		if (id_grow(&r->ids) != 0) {
			rc = -ENOMEM;
			goto out;
		}
		*id_slot(&r->ids, d.id) = d;
		r->ids.n++;
	}
	if (fread(&t, sizeof(t), 1, f) != 1 || memcmp(t.magic, TG_SNAP_END, 8) != 0 ||
	    t.crc != crc || fgetc(f) != EOF) {
		snprintf(why, whylen, "checksum or trailer wrong");
		goto out;
	}
	r->lsn = h.lsn;
	r->from = h.lsn;
	rc = 0;
out:
	fclose(f);
	return rc;
}

int
tg_snapshot_load(struct tg_replay *r, const char *dir, char *note, size_t notelen)
{
	uint64_t lsns[16];
	char path[1024], name[TG_SNAP_NAME_LEN], why[200];
	int n = snap_list(dir, lsns, 16);
	size_t used = 0;

	if (note != NULL && notelen > 0)
		note[0] = '\0';
	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		snap_name(name, lsns[i]);
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		int rc = snap_read(r, path, lsns[i], why, sizeof(why));
		if (rc == 0)
			return 0;
		if (rc == -ENOMEM)
			return rc;
		/* Damaged: start again empty and try the older one. */
		if (note != NULL && used < notelen)
			used += (size_t)snprintf(note + used, notelen - used,
			                         "%ssnapshot %s skipped (%s)", used ? "; " : "",
			                         path, why);
		uint64_t spill_lsn = r->spill_lsn;
		uint32_t spill_cut = r->spill_cut;
		tg_replay_free(r);
		rc = tg_replay_init(r);
		r->spill_lsn = spill_lsn; /* the disk tier's watermark is the directory's, kept */
		r->spill_cut = spill_cut;
		if (rc != 0)
			return rc;
	}
	return 0;
}

int
tg_replay_ids_drop(struct tg_replay *r, bool (*drop)(void *, const struct tg_rid *), void *arg)
{
	struct tg_rid *e = r->ids.slot;
	size_t cap = r->ids.cap, mask = cap - 1, start = 0;

	/*
	 * In place: a move drops most of a table that may hold millions of
	 * slots, every few seconds, and a new table each time cost as much in
	 * page faults (fresh zeroed pages, then unmapping the old) as the rest
	 * of the move.  First the dropped entries leave their slots...
	 */
	for (size_t i = 0; i < cap; i++)
		if (digest_used(e[i].id) && drop(arg, &e[i])) {
			memset(&e[i], 0, sizeof(e[i]));
			r->ids.n--;
		}
	/*
	 * ... which leaves holes in the probe runs: once round the table from
	 * just after a free slot (there is one: the table is never full), each
	 * entry is taken out and put back, landing at the first free slot from
	 * its home.  That slot is at or before where it was, and every entry
	 * before it in its run is already in place, so each run ends whole.
	 */
	while (digest_used(e[start].id))
		start++;
	for (size_t k = 1; k <= cap; k++) {
		size_t i = (start + k) & mask;
		if (!digest_used(e[i].id))
			continue;
		struct tg_rid t = e[i];
		memset(&e[i], 0, sizeof(e[i]));
		*id_slot(&r->ids, t.id) = t;
	}
	return 0;
}
