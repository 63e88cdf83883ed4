/*
 * tg_idstore.h - the id window's disk tier: runs of remembered ids on disk.
 *
 * The memory tier (tg_idem.h) holds the ids of the last minute or so; the
 * snapshot thread moves older ones, read from the journal (so only ids whose
 * records are on disk), into immutable runs sorted by digest (tg_idrun.h),
 * and each moved id's fingerprint into its stripe's filter.  Runs are merged
 * so that few exist, and ids past ids-window (the horizon, 35 days by
 * default) are dropped as they merge.  The disk and ids-disk-max bound the
 * tier too: past them the oldest runs go first, counted and logged, and
 * billing goes on.  docs/JOURNAL.md, "Id runs", has the files and the rule.
 *
 * One thread (the snapshot thread) moves, merges and drops; any worker may
 * look an id up through the hook tg_idstore_open installs, at the same time.
 */
#ifndef TG_IDSTORE_H
#define TG_IDSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_idem.h"
#include "tg_replay.h"
#include "tg_stats-t.h"

/* Runs of one size class merged into one; the smallest class; runs kept at most. */
#define TG_IDSTORE_FANOUT     4
#define TG_IDSTORE_LEVEL_BASE 65536
#define TG_IDSTORE_RUNS_MAX   32
/*
 * A run holding ids-disk-max / TG_IDSTORE_RUNS_FULL ids or more is merged no
 * further (unless the runs are more than TG_IDSTORE_RUNS_MAX): past that
 * size a merge rewrites many ids to save a block read per replay.
 */
#define TG_IDSTORE_RUNS_FULL 16
/* Ids younger than this stay in memory unless memory is under pressure (seconds). */
#define TG_IDSTORE_MEMORY_AGE 60

struct tg_idstore_cfg {
	const char *dir;        /* the data directory */
	struct tg_idem *ids;    /* the memory tier, whose filters this fills */
	uint32_t horizon;       /* ids-window: seconds an id is remembered */
	uint64_t disk_max;      /* ids-disk-max: ids on disk at most */
	struct tg_stats *stats; /* counters are added here (atomically) */
	/* Is the data directory's disk below its reserve?  (NULL: never.)  Then the oldest
	 * runs go first, so the journal keeps its room and billing goes on. */
	bool (*low_space)(void *arg);
	void *low_space_arg;
};

struct tg_idstore;

/*
 * The watermark of the runs in dir, from their names alone (before the
 * state is rebuilt): every id of a record at or before *lsn first seen
 * before *cut is in a run.  0, 0 when there is none.  0 or -errno.
 */
int tg_idstore_watermark(const char *dir, uint64_t *lsn, uint32_t *cut);

/*
 * Open every run of cfg->dir, fill the filters from their keys and install
 * the lookup hook into cfg->ids.  Before any worker runs.  0 or -errno with
 * a sentence in err (a damaged run: which, and the way on).
 */
int tg_idstore_open(struct tg_idstore **out, const struct tg_idstore_cfg *cfg, char *err,
                    size_t errlen);
void tg_idstore_close(struct tg_idstore *s);

/*
 * Move the ids of state first seen before cut (UINT32_MAX: all of them)
 * into a new run, their fingerprints into the filters, out of memory and
 * out of state.  state is what the journal holds up to state->lsn: only
 * ids on disk are moved.  Then merge and drop as the limits say.  now is
 * the wall clock.  0 or -errno with err.
 */
int tg_idstore_spill(struct tg_idstore *s, struct tg_replay *state, uint32_t cut, uint32_t now,
                     char *err, size_t errlen);

/* What INFO shows. */
struct tg_idstore_info {
	uint64_t runs, ids, disk_bytes, ram_bytes;
	uint32_t oldest; /* the oldest id on disk, Unix seconds (0: none) */
};
void tg_idstore_info(struct tg_idstore *s, struct tg_idstore_info *out);
/*
 * Before when (Unix seconds) ids may have been forgotten before their time
 * (a run cut for ids-disk-max or the disk), kept across restarts in the
 * data directory's ids-forgot; 0 when none was, or s is NULL.  Any thread.
 */
uint32_t tg_idstore_forgot(const struct tg_idstore *s);

#endif
