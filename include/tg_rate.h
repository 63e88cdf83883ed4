/*
 * tg_rate.h - rate plans: loading, longest-prefix match, billing, live swap.
 *
 * A plan set is immutable once loaded.  The live one is swapped atomically by
 * tg_rates_reload(); readers hold an epoch section while they use it and the
 * old set is freed only once no reader can still see it (ck_epoch).
 */
#ifndef TG_RATE_H
#define TG_RATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ck_epoch.h>

#include "tg_diag.h"
#include "tg_rate-t.h"

/* ---- plan names ---- */

/*
 * The one rule for a plan name (rate files, accounts files, ACCT.SET): NULL
 * when name (len bytes) is 1 to TG_PLAN_NAME_MAX of [A-Za-z0-9_.-], else
 * why it is not.
 */
const char *tg__plan_name_check(const char *name, size_t len);

/*
 * The id of plan name (len bytes).  With create, an unknown name is given a
 * free slot; when there is none, the registry's reclaim hook runs first (at
 * most once a second).  Returns the id, -ENOENT (unknown, !create), -EINVAL
 * (bad name: empty, too long, not [A-Za-z0-9_.-]) or -ENOSPC (registry full:
 * TG_PLANS_MAX names in use).  create: the caller holds the reload lock and
 * is inside no reader section (a reclaim waits for every reader).
 */
int tg_plan_registry_id(struct tg_plan_registry *reg, const char *name, size_t len, bool create);
/* The name of plan id, or NULL (never registered, or free). */
const char *tg_plan_registry_name(const struct tg_plan_registry *reg, uint32_t id);
/*
 * Slots free for new names; when fewer than want, the reclaim hook runs first
 * (as for tg_plan_registry_id with create, and under the same conditions).
 */
uint32_t tg_plan_registry_room(struct tg_plan_registry *reg, uint32_t want);
/* Names registered now (the free slots not counted). */
uint32_t tg_plan_registry_live(const struct tg_plan_registry *reg);

/* ---- loading ---- */

/*
 * Load every plan in path: one CSV file, or every *.csv file of a directory
 * (in name order).  Any bad row anywhere is reported in diag and fails the
 * whole load (-EINVAL) so a half-valid plan never goes live; an unreadable
 * file is -errno.  Plan names are registered in reg.  On success *out is a new
 * plan set owned by the caller.
 */
int tg_planset_load(const char *path, struct tg_plan_registry *reg, struct tg_planset **out,
                    struct tg_diag *diag);
void tg_planset_free(struct tg_planset *ps);
/* The plan of id, or NULL when this set does not hold it. */
const struct tg_plan *tg_planset_plan(const struct tg_planset *ps, uint32_t id);
size_t tg_planset_plans(const struct tg_planset *ps);
size_t tg_planset_prefixes(const struct tg_planset *ps);
/* A number no other plan set of this process has had: a key for caches of lookups. */
uint64_t tg_planset_serial(const struct tg_planset *ps);

const char *tg_plan_name(const struct tg_plan *p);
uint32_t tg_plan_id(const struct tg_plan *p);

/*
 * The rate of the longest prefix of dest (len digits) in plan p, or NULL when
 * none matches or dest is not 1..TG_DEST_MAX digits.  Never allocates.
 */
const struct tg_rate *tg_plan_match(const struct tg_plan *p, const char *dest, size_t len);
/*
 * Start loading what tg_plan_match(p, dest, len) reads first: the jump-table
 * entry of dest's leading digits.  A hint: nothing changes, any dest is
 * accepted.
 */
void tg_plan_prefetch(const struct tg_plan *p, const char *dest, size_t len);

/* ---- billing (docs/RATES.md) ---- */

/* Billed seconds of a call of duration seconds. */
uint32_t tg_rate_billed(const struct tg_rate *r, uint32_t duration);
/*
 * Charge of a call of duration seconds: 0 for 0 s, else connect fee +
 * ceil(billed * per_min / 60) micro-units.  False on overflow.
 */
bool tg_rate_charge(const struct tg_rate *r, uint32_t duration, tg_money_t *out);
/*
 * The longest grant, in seconds, whose charge fits in available: at most cap,
 * and ending on a billing boundary.  0 when not even the first increment is
 * affordable.  *cost receives the charge of the grant.
 */
uint32_t tg_rate_grant(const struct tg_rate *r, tg_money_t available, uint32_t cap,
                       tg_money_t *cost);

/* ---- the live plan set ---- */

struct tg_rates {
	ck_epoch_t epoch;
	ck_epoch_record_t writer; /* the reloading thread's record */
	struct tg_planset *current;
	struct tg_plan_registry reg;
	uint64_t generation; /* bumped by each successful reload */
};

/* reg must outlive rates.  Starts with an empty plan set. */
int tg_rates_init(struct tg_rates *rates, const struct tg_plan_registry *reg);
/*
 * Load path and make it the live set.  On any error the live set is left as
 * it was.  Blocks until no reader can see the old set, then frees it.  Only
 * one thread may reload at a time.
 */
int tg_rates_reload(struct tg_rates *rates, const char *path, struct tg_diag *diag);
void tg_rates_fini(struct tg_rates *rates);
/*
 * Free every plan name that no account, no plan of the live set and not id 0
 * uses, so its slot can take a new name (docs/SHM.md).  scan(arg, used) sets
 * used[id] for the plan id of every account (TG_PLANS_MAX entries; it runs
 * twice).  Safe against readers looking names up lock-free: they never see a
 * freed id.  Under the reload lock, outside any reader section.  Returns the
 * names freed.
 */
uint32_t tg_rates_reclaim(struct tg_rates *rates, void (*scan)(void *arg, bool *used), void *arg);

/* A reading thread registers once, then brackets each use of the set. */
void tg_rates_reader_register(struct tg_rates *rates, ck_epoch_record_t *rec);
void tg_rates_reader_unregister(ck_epoch_record_t *rec);
const struct tg_planset *tg_rates_enter(struct tg_rates *rates, ck_epoch_record_t *rec,
                                        ck_epoch_section_t *sec);
void tg_rates_exit(ck_epoch_record_t *rec, ck_epoch_section_t *sec);

#endif
