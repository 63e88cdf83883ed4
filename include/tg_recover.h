/*
 * tg_recover.h - between the journal's state (tg_replay.h) and the live
 * engine: install it at start-up, compare it with a running table.
 */
#ifndef TG_RECOVER_H
#define TG_RECOVER_H

#include <stddef.h>
#include <stdint.h>

#include "tg_engine.h"
#include "tg_replay.h"

/*
 * Install r into e's table (empty, or holding exactly these accounts), call
 * map and id window, before any worker runs.  Plan names are registered as
 * needed; calls resume with the time they have left; ids older than the
 * window are dropped; refill requests in flight get their pending record
 * back, so the publisher puts them on the stream again under the same id.
 * 0, or -ENOSPC (capacity, calls-max or ids-max too small: err says which).
 */
int tg_recover_install(const struct tg_replay *r, struct tg_engine *e, char *err, size_t errlen);

/*
 * Install account id of r into t while readers run (a replica following its
 * primary): created when new, its plan registered by name, settings, money
 * and usage as r has them (tg_acct_replace).  Its refill record is not
 * touched: a replica publishes nothing, and a promoted one rebuilds them at
 * its restart.  0, -ENOENT (r has no such account), or -ENOSPC with a
 * sentence in err (capacity or the plan registry).
 */
int tg_recover_put_live(struct tg_table *t, const struct tg_replay *r, uint64_t id, char *err,
                        size_t errlen);

/* One difference between the journal and the live table. */
struct tg_recover_diff {
	uint64_t acct;
	const char *what; /* "balance", "reserved", "refill", "settings", "missing", "extra" */
	int64_t journal, live;
};

/*
 * Compare every account of r with t (any mapping, read-only is fine): the
 * conservation check.  fn gets each difference (may be NULL).  Returns the
 * number of accounts that differ.
 */
uint64_t tg_recover_compare(const struct tg_replay *r, const struct tg_table *t,
                            void (*fn)(void *arg, const struct tg_recover_diff *d), void *arg);
/* Re-check only account id (after more of the journal was applied): 0 or 1. */
uint64_t tg_recover_compare_one(const struct tg_replay *r, const struct tg_table *t, uint64_t id,
                                void (*fn)(void *arg, const struct tg_recover_diff *d), void *arg);

#endif
