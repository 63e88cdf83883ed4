/*
 * stat_acct.c - `tollstat account <id>` and `tollstat verify`: one account in
 * full, and the table's invariants over every slot.
 *
 * Owns the reading of an account's refill record from a read-only mapping
 * and the list of invariants verify checks (docs/TOOLS.md).  It must never
 * write to the segment and never report a state the engine passes through
 * for a moment as a violation: on a live engine a slot that breaks a rule is
 * read again a few times over about 50 ms and reported only if it still does.
 * What the table alone cannot prove — that money was conserved — is the
 * journal's check (stat_journal.c, with --data-dir); without it the summary
 * says it was not made.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "stat.h"
#include "tg_atomic.h"

/* Re-reads of a slot that breaks a rule on a live engine, and the pause between them. */
#define RECHECKS   5
#define RECHECK_NS 10000000L
#define RREC_TRIES 1000

static const char *const categories[] = {
#define TG_CATEGORY(n, d) #n,
#include "tbl/tg_categories.h"
#undef TG_CATEGORY
};

/* A refill record read consistently: valid only when the tag read the same around it. */
struct rrec {
	bool valid;
	uint64_t tag;
	int64_t balance, amount;
	uint32_t fired, published;
};

static void
rrec_read(const struct tg_refill_rec *r, struct rrec *o)
{
	memset(o, 0, sizeof(*o));
	for (int tries = 0; tries < RREC_TRIES; tries++) {
		uint64_t t1 = tg_load_64(&r->tag);
		if (TG_RTAG_STATE(t1) == TG_RREC_WRITING) {
			ck_pr_stall();
			continue;
		}
		ck_pr_fence_load();
		o->balance = (int64_t)tg_load_64((const uint64_t *)&r->balance);
		o->amount = (int64_t)tg_load_64((const uint64_t *)&r->amount);
		o->fired = tg_load_32(&r->fired);
		o->published = tg_load_32(&r->published);
		ck_pr_fence_load();
		if (tg_load_64(&r->tag) == t1) {
			o->valid = true;
			o->tag = t1;
			return;
		}
	}
}

/* The name of plan id into buf (plan names are 32 NUL-padded bytes; a free slot has none). */
static const char *
plan_name(const struct tg_table *t, uint32_t plan, char *buf, size_t len)
{
	if (plan >= tg_load_32(t->plans.count) || plan >= t->plans.cap ||
	    t->plans.names[plan][0] == '\0')
		snprintf(buf, len, "#%u (not registered)", plan);
	else
		snprintf(buf, len, "%.*s", TG_PLAN_NAME_MAX, t->plans.names[plan]);
	return buf;
}

static const char *
when(uint32_t t, int64_t now, char *buf, size_t len)
{
	struct tm tm;
	time_t tt = (time_t)t;
	char iso[24];

	if (t == 0 || gmtime_r(&tt, &tm) == NULL)
		return strcpy(buf, "-");
	strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(buf, len, "%u (%s, %" PRId64 " s ago)", t, iso, now - (int64_t)t);
	return buf;
}

int
stat_account(FILE *f, const struct stat_src *s, uint64_t id)
{
	const struct tg_table *t = &s->t;
	const struct tg_acct *a = tg_table_find(t, id);
	char m[TG_MONEY_STR_MAX], b[96];
	struct tg_acct_view v;
	struct rrec r;

	if (a == NULL) {
		fprintf(stderr, "tollstat: account %" PRIu64 ": no such account in %s\n", id,
		        s->name);
		return STAT_EXIT_FOUND;
	}
	tg_acct_read(a, &v);
	const struct tg_usage *u = tg_table_usage(t, a);
	rrec_read(tg_table_refill(t, a), &r);
	int64_t now = (int64_t)time(NULL);

#define FIELD(name, ...)                                                                           \
	do {                                                                                       \
		fprintf(f, "%-24s ", name);                                                        \
		fprintf(f, __VA_ARGS__);                                                           \
		fputc('\n', f);                                                                    \
	} while (0)
	FIELD("account", "%" PRIu64, v.id);
	FIELD("balance", "%s", stat_money(v.balance, m));
	FIELD("available", "%s", stat_money(v.available, m));
	FIELD("reserved", "%s", stat_money(v.reserved, m));
	FIELD("state", "%s", stat_state_name(v.state));
	FIELD("suspended", "%s",
	      v.state != TG_STATE_SUSPENDED ? "-"
	      : (v.flags & TG_ACCT_UNPAID)  ? "payment"
	                                    : "operator");
	if (v.flags & TG_ACCT_UNPAID)
		FIELD("suspended_since", "%s", when(v.unpaid_since, now, b, sizeof(b)));
	else
		FIELD("suspended_since", "-");
	FIELD("failed_refills", "%u", v.failures);
	FIELD("plan", "%s", plan_name(t, v.plan, b, sizeof(b)));
	FIELD("plan_id", "%u", v.plan);
	FIELD("threshold", "%s", stat_money(v.threshold, m));
	FIELD("refill", "%s", stat_mode_name(v.refill_mode));
	FIELD("refill_amount", "%s", stat_money(v.refill_amount, m));
	FIELD("payment", "%s", (v.flags & TG_ACCT_PAYMENT) ? "on" : "off");
	FIELD("kind", "%s", (v.flags & TG_ACCT_POSTPAID) ? "postpaid" : "prepaid");
	FIELD("credit_limit", "%s", stat_money(v.credit_limit, m));
	/* The fraud limits (docs/FRAUD.md), 0 for none, and what today's cap has counted. */
	struct tg_limits_set ls;
	uint64_t day_used;
	tg_acct_read_limits(t, a, &ls, &day_used);
	FIELD("maxcalls", "%u", ls.max_calls);
	FIELD("callcap", "%s", stat_money(ls.call_cap, m));
	FIELD("dailycap", "%s", stat_money(ls.daily_cap, m));
	FIELD("low", "%s", stat_money(ls.low, m));
	FIELD("daily_spent", "%s",
	      stat_money(ls.daily_cap != 0 && TG_DAY_OF(day_used) == tg_utc_day((uint32_t)now)
	                     ? TG_DAY_USED(day_used)
	                     : 0,
	                 m));
	FIELD("calls", "%u", v.calls);
	FIELD("refill_pending", "%d", v.refill_inflight ? 1 : 0);
	if (v.refill_inflight)
		FIELD("refill_request", "refill:%" PRIu64 ":%u", v.id, v.refill_seq);
	else
		FIELD("refill_request", "-");
	FIELD("refill_seq", "%u", v.refill_seq);
	/* The record of the request in flight, or of the last one that fired. */
	if (!r.valid) {
		FIELD("refill_record", "unreadable (being written)");
	} else if (TG_RTAG_STATE(r.tag) == TG_RREC_EMPTY) {
		FIELD("refill_record", "-");
	} else {
		FIELD("refill_record", "refill:%" PRIu64 ":%u %s", v.id, TG_RTAG_SEQ(r.tag),
		      stat_rrec_name(TG_RTAG_STATE(r.tag)));
		FIELD("refill_record_state", "%s", stat_rrec_name(TG_RTAG_STATE(r.tag)));
		FIELD("refill_record_seq", "%u", TG_RTAG_SEQ(r.tag));
		FIELD("refill_record_mode", "%s", stat_mode_name(TG_RTAG_MODE(r.tag)));
		FIELD("refill_record_balance", "%s", stat_money(r.balance, m));
		FIELD("refill_record_amount", "%s", stat_money(r.amount, m));
		FIELD("refill_record_fired", "%s", when(r.fired, now, b, sizeof(b)));
		FIELD("refill_record_published", "%s",
		      TG_RTAG_STATE(r.tag) == TG_RREC_PUBLISHED
		          ? when(r.published, now, b, sizeof(b))
		          : "-");
		FIELD("refill_record_attempts", "%u", TG_RTAG_ATTEMPT(r.tag));
	}
	for (unsigned c = 0; c < TG_ARRAY_LEN(categories); c++) {
		char name[48];
		snprintf(name, sizeof(name), "usage_%s", categories[c]);
		FIELD(name, "%s",
		      stat_money((int64_t)tg_load_64((const uint64_t *)&u->charged[c]), m));
	}
	FIELD("slot", "%" PRIu64, tg_table_index(t, a));
#undef FIELD
	return STAT_EXIT_OK;
}

/* ---- verify ---- */

struct vctx {
	FILE *f;
	const struct tg_table *t;
	bool running;
	bool print;     /* print and count what is found (the last look at a slot) */
	unsigned viol;  /* violations found by this look */
	unsigned notes; /* notes found by this look */
	uint64_t total_viol, total_notes;
};

static void report(struct vctx *v, bool violation, uint64_t slot, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
report(struct vctx *v, bool violation, uint64_t slot, const char *fmt, ...)
{
	va_list ap;
	uint64_t key = tg_load_64(&tg_table_slot(v->t, slot)->key);

	if (violation)
		v->viol++;
	else
		v->notes++;
	if (!v->print)
		return;
	if (violation)
		v->total_viol++;
	else
		v->total_notes++;
	if (key != 0)
		fprintf(v->f, "%s: account %" PRIu64 " (slot %" PRIu64 "): ",
		        violation ? "violation" : "note", key - 1, slot);
	else
		fprintf(v->f, "%s: free slot %" PRIu64 ": ", violation ? "violation" : "note",
		        slot);
	va_start(ap, fmt);
	vfprintf(v->f, fmt, ap);
	va_end(ap);
	fputc('\n', v->f);
}

static void
check_free(struct vctx *v, uint64_t i)
{
	const struct tg_slot *sl = &v->t->slot[i];
	uint64_t tag = tg_load_64(&v->t->refills[i].tag);
	bool zero = tg_load_64((const uint64_t *)&sl->acct.balance) == 0 &&
	            tg_load_64(&sl->acct.hold) == 0 && tg_load_32(&sl->acct.calls) == 0;

	for (unsigned c = 0; c < TG_CATEGORIES_MAX; c++)
		zero = zero && tg_load_64((const uint64_t *)&sl->usage.charged[c]) == 0;
	/* Accounts are never deleted: a slot never used has never been written. */
	if (!zero)
		report(v, true, i, "holds money, calls or usage with no account");
	if (tag != 0)
		report(v, true, i, "holds a refill record (state %s) with no account",
		       stat_rrec_name(TG_RTAG_STATE(tag)));
}

/* The refill flag's rules: the hold's number bits, refill_seq and the record agree. */
static void
check_refill(struct vctx *v, uint64_t i, const struct tg_acct_view *a, uint64_t hold)
{
	char m[TG_MONEY_STR_MAX];
	struct rrec r;
	uint32_t bits = (uint32_t)((hold & TG_HOLD_SEQ) >> TG_HOLD_SEQ_SHIFT);

	rrec_read(&v->t->refills[i], &r);
	if (r.valid && TG_RTAG_STATE(r.tag) > TG_RREC_DROPPED)
		report(v, true, i, "refill record state %u out of range", TG_RTAG_STATE(r.tag));
	if (r.valid && TG_RTAG_STATE(r.tag) != TG_RREC_EMPTY &&
	    TG_RTAG_MODE(r.tag) > TG_REFILL_TOPUP)
		report(v, true, i, "refill record mode %u out of range", TG_RTAG_MODE(r.tag));
	if (!(hold & TG_HOLD_REFILL)) {
		if (bits != 0)
			report(v, true, i,
			       "request number bits %u in the hold with no refill in flight", bits);
		return;
	}
	if (a->refill_mode == TG_REFILL_OFF || !(a->flags & TG_ACCT_PAYMENT))
		report(v, false, i,
		       "request refill:%" PRIu64 ":%u in flight, but auto-refill is now %s with "
		       "payment %s: the flag clears when the worker answers",
		       a->id, a->refill_seq, stat_mode_name(a->refill_mode),
		       (a->flags & TG_ACCT_PAYMENT) ? "on" : "off");
	if (bits != (a->refill_seq & 0x7fu))
		report(v, true, i,
		       "the hold names request number %u (low 7 bits), refill_seq is %u", bits,
		       a->refill_seq);
	if (!r.valid) {
		report(v, true, i, "refill record stays mid-write");
		return;
	}
	uint8_t st = TG_RTAG_STATE(r.tag);
	if (st == TG_RREC_EMPTY || TG_RTAG_SEQ(r.tag) != a->refill_seq) {
		/* The engine died between claiming the flag and writing the record: rebuilt at
		 * start. */
		report(v, v->running, i,
		       "request refill:%" PRIu64 ":%u in flight has no refill record (the record "
		       "holds %u, %s)%s",
		       a->id, a->refill_seq, TG_RTAG_SEQ(r.tag), stat_rrec_name(st),
		       v->running ? "" : "; the next engine start rebuilds it");
	} else if (st == TG_RREC_DROPPED) {
		report(v, true, i,
		       "request refill:%" PRIu64 ":%u in flight, but its record says dropped "
		       "(answered)",
		       a->id, a->refill_seq);
	} else if (r.amount < 0) {
		report(v, true, i, "refill record amount %s is negative", stat_money(r.amount, m));
	}
}

/* Look at used slot i once: the account's own rules. */
static void
check_account(struct vctx *v, uint64_t i)
{
	const struct tg_table *t = v->t;
	const struct tg_acct *a = tg_table_slot(t, i);
	char m1[TG_MONEY_STR_MAX], m2[TG_MONEY_STR_MAX];
	struct tg_acct_view av;
	int64_t balance;
	uint64_t hold;

	tg_acct_read(a, &av);
	tg_acct_read_money(a, &balance, &hold);
	/* The view's money and the pair just read may differ on a live engine: use the pair's. */
	int64_t reserved = (int64_t)(hold & TG_HOLD_RESERVED);
	int64_t avail;
	if (!tg_money_sub(balance, reserved, &avail))
		avail = TG_MONEY_MIN;

	if (tg_table_find(t, av.id) != a)
		report(v, true, i,
		       "not found from its id: the probe chain from its home slot is broken");
	if (av.state > TG_STATE_CLOSED)
		report(v, true, i, "state %u out of range", av.state);
	if (av.refill_mode > TG_REFILL_TOPUP)
		report(v, true, i, "refill mode %u out of range", av.refill_mode);
	if (av.flags & ~(TG_ACCT_PAYMENT | TG_ACCT_UNPAID))
		report(v, true, i, "unknown flags 0x%02x", av.flags);
	if ((av.flags & TG_ACCT_UNPAID) && av.state != TG_STATE_SUSPENDED)
		report(v, true, i, "marked unpaid but %s, not suspended",
		       stat_state_name(av.state));
	if ((av.flags & TG_ACCT_UNPAID) && av.unpaid_since == 0)
		report(v, true, i, "suspended for non-payment with no date");
	if (!(av.flags & TG_ACCT_UNPAID) && av.unpaid_since != 0)
		report(v, true, i, "a suspension date with no suspension for non-payment");
	if (av.refill_mode != TG_REFILL_OFF && !(av.flags & TG_ACCT_PAYMENT))
		report(v, true, i, "auto-refill %s with no payment method on file",
		       stat_mode_name(av.refill_mode));
	uint32_t plans = tg_load_32(t->plans.count);
	if (av.plan >= plans && !(av.plan == 0 && plans == 0))
		report(v, true, i, "plan id %u, but only %u plan names are registered", av.plan,
		       plans);
	else if (av.plan != 0 && av.plan < t->plans.cap &&
	         tg_load_8((const uint8_t *)t->plans.names[av.plan]) == 0)
		report(v, true, i, "plan id %u is a free slot of the plan-name table", av.plan);

	if (avail < 0) {
		if (balance < 0)
			report(v, false, i,
			       "balance %s below zero (a CDR charged past it, or it was set so)",
			       stat_money(balance, m1));
		else
			report(v, false, i,
			       "reserved %s exceeds the balance %s (a CDR charged while calls held "
			       "reservations)",
			       stat_money(reserved, m1), stat_money(balance, m2));
	}
	uint32_t calls = tg_load_32(&a->calls);
	if (reserved > 0 && calls == 0)
		report(v, true, i, "%s reserved with no call holding a reservation",
		       stat_money(reserved, m1));
	if (calls > 0 && !v->running)
		report(v, false, i, "%u calls hold %s, but no engine runs to settle them", calls,
		       stat_money(reserved, m1));

	check_refill(v, i, &av, hold);

	const struct tg_usage *u = tg_table_usage(t, a);
	for (unsigned c = 0; c < TG_CATEGORIES_MAX; c++) {
		int64_t x = (int64_t)tg_load_64((const uint64_t *)&u->charged[c]);
		if (x < 0)
			report(v, true, i, "usage_%s is negative (%s)",
			       c < TG_ARRAY_LEN(categories) ? categories[c] : "?",
			       stat_money(x, m1));
	}
}

static void
check_slot(struct vctx *v, uint64_t i)
{
	v->viol = v->notes = 0;
	if (tg_load_64(&tg_table_slot(v->t, i)->key) == 0)
		check_free(v, i);
	else
		check_account(v, i);
}

static void
pause_briefly(void)
{
	struct timespec ts = {0, RECHECK_NS};
	nanosleep(&ts, NULL);
}

static uint64_t
used_slots(const struct tg_table *t)
{
	uint64_t n = 0;
	for (uint64_t i = 0; i < t->slots; i++)
		n += tg_load_64(&tg_table_slot(t, i)->key) != 0;
	return n;
}

int
stat_verify(FILE *f, const struct stat_src *s, bool journal_next)
{
	const struct tg_table *t = &s->t;
	const struct tg_shm_hdr *h = t->hdr;
	int32_t pid = (int32_t)tg_load_32((const uint32_t *)&h->writer_pid);
	struct vctx v = {.f = f, .t = t, .running = stat_pid_alive(pid)};
	uint64_t accounts = 0;

	fprintf(f, "verify %s: %" PRIu64 " slots, generation %" PRIu64 ", engine %s\n", s->name,
	        t->slots, tg_load_64(&h->generation),
	        v.running ? "running (slots that break a rule are read again)" : "not running");
	if (!v.running && pid != 0) {
		fprintf(f, "note: engine pid %d did not stop cleanly\n", (int)pid);
		v.total_notes++;
	}

	for (uint64_t i = 0; i < t->slots; i++) {
		accounts += tg_load_64(&tg_table_slot(t, i)->key) != 0;
		v.print = false;
		check_slot(&v, i);
		if (v.viol == 0 && v.notes == 0)
			continue;
		for (int k = 0; k < RECHECKS && v.viol > 0 && v.running; k++) {
			pause_briefly();
			check_slot(&v, i);
		}
		v.print = true;
		check_slot(&v, i);
	}

	/* The header: count is raised just after a slot's key is taken, so recount on a live
	 * engine. */
	uint64_t count = tg_load_64(&h->count), used = accounts;
	for (int k = 0; k < RECHECKS && count != used && v.running; k++) {
		pause_briefly();
		used = used_slots(t);
		count = tg_load_64(&h->count);
	}
	if (count != used) {
		fprintf(f,
		        "violation: header count %" PRIu64 ", but %" PRIu64
		        " slots hold an account\n",
		        count, used);
		v.total_viol++;
	}
	if (count > h->capacity) {
		fprintf(f, "violation: header count %" PRIu64 " exceeds the capacity %" PRIu64 "\n",
		        count, h->capacity);
		v.total_viol++;
	}
	uint32_t plans = tg_load_32(t->plans.count);
	if (plans > t->plans.cap) {
		fprintf(f, "violation: %u plan names registered, the table has %u places\n", plans,
		        t->plans.cap);
		v.total_viol++;
		plans = t->plans.cap;
	}
	/* A slot whose first byte is zero is free (reclaimed, docs/SHM.md); a name ends in a NUL.
	 */
	for (uint32_t p = 0; p < plans; p++) {
		const char *name = t->plans.names[p];
		if (name[0] != '\0' && memchr(name, '\0', TG_PLAN_NAME_MAX + 1) == NULL) {
			fprintf(f, "violation: plan id %u has an unterminated name\n", p);
			v.total_viol++;
		}
	}
	if (h->counters != TG_COUNTER__COUNT) {
		fprintf(f, "note: the segment has %u counters, this build knows %u\n", h->counters,
		        (unsigned)TG_COUNTER__COUNT);
		v.total_notes++;
	}

	fprintf(f,
	        "%" PRIu64 " accounts in %" PRIu64 " slots: %" PRIu64 " violations, %" PRIu64
	        " notes%s\n",
	        accounts, t->slots, v.total_viol, v.total_notes,
	        journal_next ? ""
	                     : " (not checked: that money was conserved, which needs the journal: "
	                       "--data-dir)");
	return v.total_viol ? STAT_EXIT_FOUND : STAT_EXIT_OK;
}
