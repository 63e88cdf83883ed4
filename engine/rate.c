/*
 * rate.c - plan names, billing arithmetic and the live plan set.
 *
 * Owns three things: the registry that gives each plan name a stable id (its
 * names live in shared memory, so ids survive reloads and restarts); the
 * billing rules of docs/RATES.md (billed seconds, charge, grant), all in exact
 * integer arithmetic; and the atomic swap of the live plan set, with old sets
 * reclaimed through ck_epoch once no reader can still hold them.
 *
 * Billing and reading the live set run on the hot path: no allocation, no
 * lock, no loop whose length depends on a duration.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "tg_atomic.h" /* first: chooses ck's backend under TSan */

#include "rate-int.h"
#include "tg_assert.h"
#include "tg_clock.h"
#include "tg_rate.h"

#if defined(TG_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

/* ---- plan names ---- */

const char *
tg__plan_name_check(const char *name, size_t len)
{
	if (len == 0)
		return "empty name";
	if (len > TG_PLAN_NAME_MAX)
		return "longer than 31 characters";
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return "only A-Z a-z 0-9 _ . - allowed";
	}
	return NULL;
}

/* Slots handed out, never more than cap even if the shared count was damaged. */
static uint32_t
registry_used(const struct tg_plan_registry *reg)
{
	uint32_t n = tg_load_32(reg->count);

	ck_pr_fence_load(); /* the names written before count was published */
	return n < reg->cap ? n : reg->cap;
}

/*
 * A slot is four 64-bit words, read and written whole: the first word is
 * zero exactly when the slot is free (a name has at least one byte).  A
 * name is written into a free slot back to front, the first word last, and
 * erased front to back, so a reader that sees a non-zero first word and
 * then fences sees the whole name.
 */
#define SLOT_WORDS ((TG_PLAN_NAME_MAX + 1) / 8)

static uint64_t *
slot_words(const struct tg_plan_registry *reg, uint32_t id)
{
	return (uint64_t *)(void *)reg->names[id];
}

static bool
slot_live(const struct tg_plan_registry *reg, uint32_t id)
{
	if (tg_load_64(slot_words(reg, id)) == 0)
		return false;
	ck_pr_fence_load();
	return true;
}

static void
slot_write(struct tg_plan_registry *reg, uint32_t id, const char *name, size_t len)
{
	uint64_t w[SLOT_WORDS] = {0};
	uint64_t *p = slot_words(reg, id);

	memcpy(w, name, len);
	for (int i = SLOT_WORDS - 1; i > 0; i--)
		tg_store_64(&p[i], w[i]);
	ck_pr_fence_store();
	tg_store_64(&p[0], w[0]);
}

static void
slot_erase(struct tg_plan_registry *reg, uint32_t id)
{
	uint64_t *p = slot_words(reg, id);

	tg_store_64(&p[0], 0);
	ck_pr_fence_store();
	for (int i = 1; i < SLOT_WORDS; i++)
		tg_store_64(&p[i], 0);
}

static bool
dying(const struct tg_plan_registry *reg, uint32_t id)
{
	return reg->dying != NULL && (tg_load_64(&reg->dying[id / 64]) >> (id % 64) & 1);
}

/* The live id of name (len bytes, valid), or -ENOENT. */
static int
registry_find(const struct tg_plan_registry *reg, const char *name, size_t len)
{
	uint32_t n = registry_used(reg);

	for (uint32_t i = 0; i < n; i++) {
		if (!slot_live(reg, i) || dying(reg, i))
			continue;
		if (memcmp(reg->names[i], name, len) == 0 && reg->names[i][len] == '\0')
			return (int)i;
	}
	return -ENOENT;
}

/* A slot for a new name: the first free one, else the next never used, else -ENOSPC. */
static int
registry_room(const struct tg_plan_registry *reg)
{
	uint32_t n = registry_used(reg);

	for (uint32_t i = 0; i < n; i++)
		if (!slot_live(reg, i) && !dying(reg, i))
			return (int)i;
	return n < reg->cap ? (int)n : -ENOSPC;
}

/* Run the reclaim hook, unless there is none or it ran less than a second ago. */
static uint32_t
registry_reclaim(struct tg_plan_registry *reg)
{
	struct tg_plan_reclaim *rc = reg->reclaim;
	uint64_t now = tg_mono_ns();

	if (rc == NULL || rc->fn == NULL || (rc->last_ns != 0 && now - rc->last_ns < 1000000000u))
		return 0;
	rc->last_ns = now;
	return rc->fn(rc->arg);
}

/*
 * Registration writes a whole free slot, or the slot at count and then
 * publishes the new count with a store fence, so a reader that sees count n
 * sees n complete slots.  Only one thread may register at a time.
 */
int
tg_plan_registry_id(struct tg_plan_registry *reg, const char *name, size_t len, bool create)
{
	TG_ASSERT(reg != NULL && reg->names != NULL && reg->count != NULL);
	if (name == NULL || tg__plan_name_check(name, len) != NULL)
		return -EINVAL;
	int id = registry_find(reg, name, len);
	if (id >= 0 || !create)
		return id;
	id = registry_room(reg);
	if (id < 0 && registry_reclaim(reg) > 0)
		id = registry_room(reg);
	if (id < 0)
		return -ENOSPC;
	uint32_t n = registry_used(reg);
	slot_write(reg, (uint32_t)id, name, len);
	if ((uint32_t)id == n) {
		ck_pr_fence_store();
		tg_store_32(reg->count, n + 1);
	}
	return id;
}

uint32_t
tg_plan_registry_room(struct tg_plan_registry *reg, uint32_t want)
{
	uint32_t n = registry_used(reg), room = reg->cap - n;

	for (uint32_t i = 0; i < n; i++)
		room += !slot_live(reg, i) && !dying(reg, i);
	if (room < want && registry_reclaim(reg) > 0)
		return tg_plan_registry_room(reg, 0);
	return room;
}

uint32_t
tg_plan_registry_live(const struct tg_plan_registry *reg)
{
	uint32_t n = registry_used(reg), live = 0;

	for (uint32_t i = 0; i < n; i++)
		live += slot_live(reg, i);
	return live;
}

const char *
tg_plan_registry_name(const struct tg_plan_registry *reg, uint32_t id)
{
	TG_ASSERT(reg != NULL);
	/* The slots are in shared memory: never hand out one without its NUL. */
	if (id >= registry_used(reg) || !slot_live(reg, id) ||
	    reg->names[id][TG_PLAN_NAME_MAX] != '\0')
		return NULL;
	return reg->names[id];
}

/* ---- billing ---- */

/*
 * Billed seconds, exact, for any 32-bit duration (the result can pass 2^32
 * for durations within one increment of it, hence 64 bits).  The minimum is
 * a floor under every non-zero call, not only under calls that end within
 * the initial increment: see docs/RATES.md for why.
 */
static uint64_t
billed64(const struct tg_rate *r, uint64_t d)
{
	uint64_t b;

	TG_ASSERT(r->initial >= 1 && r->increment >= 1);
	if (d == 0)
		return 0;
	if (d <= r->initial)
		b = r->initial;
	else
		b = r->initial + (d - r->initial + r->increment - 1) / r->increment * r->increment;
	return b > r->minimum ? b : r->minimum;
}

/* Saturates at UINT32_MAX, reached only by durations near 2^32 s. */
uint32_t
tg_rate_billed(const struct tg_rate *r, uint32_t duration)
{
	uint64_t b = billed64(r, duration);

	return b > UINT32_MAX ? UINT32_MAX : (uint32_t)b;
}

static bool
charge_of_billed(const struct tg_rate *r, uint64_t billed, tg_money_t *out)
{
	tg_money_t usage;

	if (billed == 0) {
		*out = 0;
		return true;
	}
	TG_ASSERT(r->per_min >= 0 && r->connect >= 0);
	/*
	 * The common case fits in 64 bits, where dividing by the constant 60 is a
	 * multiply; the 128-bit path is kept for rates that would overflow.
	 */
	uint64_t p;
	if (!__builtin_mul_overflow(billed, (uint64_t)r->per_min, &p)) {
		uint64_t q = p / 60 + (p % 60 != 0);
		if (q > (uint64_t)INT64_MAX)
			return false;
		usage = (tg_money_t)q;
	} else if (!tg_money_mul_div_ceil((int64_t)billed, r->per_min, 60, &usage)) {
		return false;
	}
	return tg_money_add(r->connect, usage, out);
}

bool
tg_rate_charge(const struct tg_rate *r, uint32_t duration, tg_money_t *out)
{
	return charge_of_billed(r, billed64(r, duration), out);
}

/*
 * The grant is the right end of a billing step: the longest duration that
 * still costs what it costs (docs/RATES.md, "Grants").  Those ends are the
 * points g(k) = initial + k * increment for k >= k0, where k0 is 0, or with a
 * minimum above the initial increment, the last k whose g(k) <= minimum; the
 * billed seconds at g(k) are max(minimum, g(k)).  So the answer is the
 * largest g(k) under both cap and the longest billable time that money
 * allows, found with two divisions, whatever the durations.
 */
uint32_t
tg_rate_grant(const struct tg_rate *r, tg_money_t available, uint32_t cap, tg_money_t *cost)
{
	uint64_t I = r->initial, N = r->increment, M = r->minimum;
	uint64_t first_end, first_billed, lim = cap, grant;
	tg_money_t room;
	bool ok;

	TG_ASSERT(I >= 1 && N >= 1 && r->per_min >= 0 && r->connect >= 0);
	*cost = 0;
	first_billed = M > I ? M : I;
	first_end = M > I ? I + (M - I) / N * N : I;
	if (available <= 0 || cap < first_end || available < r->connect)
		return 0;
	room = available - r->connect;
	if (r->per_min > 0) {
		/* ceil(b * per_min / 60) <= room  <=>  b <= floor(room * 60 / per_min) */
		unsigned __int128 q = (unsigned __int128)room * 60 / (unsigned __int128)r->per_min;
		uint64_t bmax = q > UINT64_MAX ? UINT64_MAX : (uint64_t)q;

		if (bmax < first_billed)
			return 0;
		if (bmax < lim)
			lim = bmax;
	}
	grant = I + (lim - I) / N * N;
	TG_ASSERT(grant >= first_end && grant <= cap);
	ok = tg_rate_charge(r, (uint32_t)grant, cost);
	TG_ASSERT(ok && *cost <= available);
	return (uint32_t)grant;
}

/* ---- the live plan set ---- */

/*
 * Under ThreadSanitizer: ck's loads and stores are plain volatile accesses and
 * its grace periods run inside the uninstrumented libck, so TSan sees neither
 * the publication of a new set nor that every reader left the old one before
 * it is freed.  The pointer then goes through the compiler's atomics, and a
 * reader's exit is declared a release that the reclaiming writer acquires.
 */
#if defined(TG_TSAN)
static void
publish(struct tg_rates *rates, struct tg_planset *ps)
{
	__atomic_store_n(&rates->current, ps, __ATOMIC_RELEASE);
}

static struct tg_planset *
current(struct tg_rates *rates)
{
	return __atomic_load_n(&rates->current, __ATOMIC_ACQUIRE);
}

/* The epoch's list of records, read while other threads may push onto it. */
static ck_stack_entry_t *
load_entry(ck_stack_entry_t *const *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

#define EPOCH_RELEASE(rec) __tsan_release((rec)->global)
#define EPOCH_ACQUIRE(ep)  __tsan_acquire(ep)
#else
static void
publish(struct tg_rates *rates, struct tg_planset *ps)
{
	ck_pr_fence_store();
	ck_pr_store_ptr(&rates->current, ps);
}

static struct tg_planset *
current(struct tg_rates *rates)
{
	return ck_pr_load_ptr(&rates->current);
}

static ck_stack_entry_t *
load_entry(ck_stack_entry_t *const *p)
{
	return ck_pr_load_ptr(p);
}

#define EPOCH_RELEASE(rec) ((void)0)
#define EPOCH_ACQUIRE(ep)  ((void)0)
#endif

int
tg_rates_init(struct tg_rates *rates, const struct tg_plan_registry *reg)
{
	TG_ASSERT(rates != NULL && reg != NULL);
	memset(rates, 0, sizeof(*rates));
	rates->current = tg__planset_empty();
	if (rates->current == NULL)
		return -ENOMEM;
	rates->reg = *reg;
	ck_epoch_init(&rates->epoch);
	ck_epoch_register(&rates->epoch, &rates->writer, NULL);
	return 0;
}

/*
 * The new set is fully built before it is published with one pointer store
 * (after a store fence), so a reader sees either the old set or the whole
 * new one.  ck_epoch_synchronize returns once every reader that could have
 * loaded the old pointer has left its section.
 */
int
tg_rates_reload(struct tg_rates *rates, const char *path, struct tg_diag *diag)
{
	struct tg_planset *ps = NULL, *old;
	int rc;

	rc = tg_planset_load(path, &rates->reg, &ps, diag);
	if (rc != 0)
		return rc;
	old = rates->current;
	publish(rates, ps);
	ck_epoch_synchronize(&rates->writer);
	EPOCH_ACQUIRE(&rates->epoch);
	tg_planset_free(old);
	ck_pr_store_64(&rates->generation, rates->generation + 1);
	return 0;
}

/* used[id] for every id an account holds (scan), a plan of the live set holds, and id 0. */
static void
in_use(struct tg_rates *rates, void (*scan)(void *, bool *), void *arg, bool *used)
{
	const struct tg_planset *ps = current(rates);

	memset(used, 0, TG_PLANS_MAX * sizeof(*used));
	scan(arg, used);
	for (uint32_t i = 0; i < ps->nplans; i++)
		used[ps->plans[i].id] = true;
	used[0] = true;
}

static void
set_dying(struct tg_plan_registry *reg, uint32_t id, bool on)
{
	uint64_t *w = &reg->dying[id / 64], bit = 1ull << (id % 64);
	tg_store_64(w, on ? tg_load_64(w) | bit : tg_load_64(w) & ~bit);
}

/*
 * Two scans around a grace period.  The names the first scan finds unused
 * are marked dying, so no lookup by name can hand out their ids any more;
 * ck_epoch_synchronize then waits until every worker has left the section
 * in which it may have looked one up before the mark and stored it in an
 * account.  The second scan sees those stores: a name it finds in use is
 * kept, the others are erased.  Id 0 is never reclaimed: it is the plan of
 * an account made without one (docs/PROTOCOL.md, ACCT.SET).
 */
uint32_t
tg_rates_reclaim(struct tg_rates *rates, void (*scan)(void *arg, bool *used), void *arg)
{
	struct tg_plan_registry *reg = &rates->reg;
	bool used[TG_PLANS_MAX];
	uint32_t n = registry_used(reg), marked = 0, freed = 0;

	TG_ASSERT(reg->dying != NULL);
	in_use(rates, scan, arg, used);
	for (uint32_t i = 0; i < n; i++)
		if (!used[i] && slot_live(reg, i)) {
			set_dying(reg, i, true);
			marked++;
		}
	if (marked == 0)
		return 0;
	ck_pr_fence_memory();
	ck_epoch_synchronize(&rates->writer);
	EPOCH_ACQUIRE(&rates->epoch);
	in_use(rates, scan, arg, used);
	for (uint32_t i = 0; i < n; i++) {
		if (!dying(reg, i))
			continue;
		if (!used[i]) {
			slot_erase(reg, i);
			freed++;
		}
		set_dying(reg, i, false);
	}
	return freed;
}

/* No reader may be inside a section, nor use the set afterwards. */
void
tg_rates_fini(struct tg_rates *rates)
{
	ck_epoch_synchronize(&rates->writer);
	EPOCH_ACQUIRE(&rates->epoch);
	tg_planset_free(rates->current);
	rates->current = NULL;
	ck_epoch_unregister(&rates->writer);
}

/*
 * rec must stay allocated until tg_rates_fini and be registered only once:
 * ck_epoch keeps every record on its list, even after unregistering, and
 * pushing one twice would tie the list into a loop.  So a thread's record
 * lives in its long-lived worker state, not on its stack.
 */
void
tg_rates_reader_register(struct tg_rates *rates, ck_epoch_record_t *rec)
{
	ck_stack_entry_t *cursor;

	TG_ASSERT(rec != &rates->writer);
	for (cursor = load_entry(&rates->epoch.records.head); cursor != NULL;
	     cursor = load_entry(&cursor->next))
		TG_ASSERT(cursor != &rec->record_next);
	ck_epoch_register(&rates->epoch, rec, NULL);
}

void
tg_rates_reader_unregister(ck_epoch_record_t *rec)
{
	ck_epoch_unregister(rec);
}

/*
 * The returned set stays valid until the matching tg_rates_exit; sections
 * may nest.  Hot path: a few stores and one fence.
 */
const struct tg_planset *
tg_rates_enter(struct tg_rates *rates, ck_epoch_record_t *rec, ck_epoch_section_t *sec)
{
	ck_epoch_begin(rec, sec);
	return current(rates);
}

void
tg_rates_exit(ck_epoch_record_t *rec, ck_epoch_section_t *sec)
{
	EPOCH_RELEASE(rec);
	ck_epoch_end(rec, sec);
}
