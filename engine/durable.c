/*
 * durable.c - tollgated's data directory: recovery, the journal writer, the
 * snapshot thread and the clean stop (tg_durable.h, docs/JOURNAL.md).
 *
 * The rule everything here follows: the journal is the record.  A segment
 * in shared memory is kept across a restart only when a clean stop left it
 * at exactly the journal's last LSN; after a crash it may hold changes that
 * were applied but never made durable (and so never acknowledged), and
 * keeping them would charge a retried request twice.  So it is rebuilt.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tg_assert.h"
#include "tg_atomic.h"
#include "tg_clock.h"
#include "tg_datadir.h"
#include "tg_idstore.h"
#include "tg_log.h"
#include "tg_recover.h"
#include "tg_server.h"

/* The snapshot thread's tick, and how often it moves ids to disk without pressure. */
#define SPILL_TICK_MS  250
#define SPILL_EVERY_MS 5000

/* mkdir -p, mode 0700 for what it creates. */
static int
make_dirs(const char *path)
{
	char p[TG_CFG_STR_MAX];

	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, 0700) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int
tg_durable_prepare(struct tg_server *srv)
{
	struct tg_durable *d = &srv->dur;
	const char *dir = srv->cfg.data_dir;
	char note[1024];
	struct tg_replay_end end;
	int rc, mode = tg_durability_parse(srv->cfg.durability);

	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	d->lock_fd = -1;
	if (mode < 0) {
		tg_log("durability '%s': must be durable, relaxed or off", srv->cfg.durability);
		return -EINVAL;
	}
	d->mode = (enum tg_durability)mode;
	if (d->mode == TG_NOJOURNAL) {
		tg_log("durability off: no journal; balances live only in shared memory, and a "
		       "reboot loses them");
		return 0;
	}
	if (dir[0] == '\0' || make_dirs(dir) != 0) {
		tg_log("data-dir '%s': cannot create it: %s", dir, strerror(errno));
		return -EINVAL;
	}
	/* One engine per data directory: a second one would interleave two journals. */
	rc = tg_datadir_lock(dir, true);
	if (rc < 0) {
		tg_log("data-dir %s: %s", dir,
		       rc == -EWOULDBLOCK ? "another tollgated is using it" : strerror(-rc));
		return rc;
	}
	d->lock_fd = rc;
	/* A replica that must start over sets its history aside first (docs/HA.md). */
	rc = tg_repl_prepare(dir);
	if (rc != 0) {
		tg_log("data-dir %s: cannot set a diverged history aside: %s", dir, strerror(-rc));
		return rc;
	}

	uint64_t t0 = tg_mono_ms();
	rc = tg_replay_init(&d->state);
	/* Ids the disk tier holds are not held again in memory (tg_idstore.h). */
	if (rc == 0)
		rc = tg_idstore_watermark(dir, &d->state.spill_lsn, &d->state.spill_cut);
	if (rc == 0)
		rc = tg_snapshot_load(&d->state, dir, note, sizeof(note));
	if (rc != 0) {
		tg_log("data-dir %s: cannot load a snapshot: %s", dir, strerror(-rc));
		return rc;
	}
	d->state_ok = true;
	if (note[0] != '\0')
		tg_log("%s", note);
	d->snap_lsn = d->state.lsn;
	uint64_t t1 = tg_mono_ms();
	rc = tg_replay_journal(&d->state, dir, 0, true, &end);
	if (rc != 0) {
		tg_log("%s", end.msg);
		tg_log("journal: not starting: nothing has been changed. See docs/JOURNAL.md, "
		       "\"When start-up stops\": after checking the file, `tollctl journal-cut "
		       "--data-dir %s --at FILE:OFFSET` sets the damaged part aside and "
		       "start-up continues from what comes before it.",
		       dir);
		return rc;
	}
	if (end.status == TG_JOURNAL_TORN_TAIL)
		tg_log("%s%s", end.msg, end.cut ? " (cut off)" : " (NOT cut: read-only?)");
	if (end.status == TG_JOURNAL_TORN_TAIL && !end.cut)
		return -EIO;
	tg_log("journal: recovered to LSN %" PRIu64 " in %" PRIu64 " ms: snapshot at LSN %" PRIu64
	       " (%" PRIu64 " ms) + %" PRIu64 " records; %zu accounts, %zu calls in progress, "
	       "%zu ids%s",
	       d->state.lsn, tg_mono_ms() - t0, d->snap_lsn, t1 - t0, d->state.records,
	       d->state.accts.n, d->state.calls.n, d->state.ids.n,
	       d->state.anomalies ? " (some records named calls not in progress: see tollstat "
	                            "verify)"
	                          : "");
	return 0;
}

int
tg_durable_open_table(struct tg_server *srv, const struct tg_table_cfg *tcfg)
{
	struct tg_durable *d = &srv->dur;
	char err[512];
	int rc = tg_table_open(&srv->table, tcfg, err, sizeof(err));

	if (d->mode == TG_NOJOURNAL) {
		if (rc != 0)
			tg_log("%s", err);
		return rc;
	}
	/* A segment of another size or layout: the journal rebuilds it at the new one. */
	if (rc == -EPROTO && tcfg->reuse) {
		tg_log("%s: rebuilding it from the journal", err);
		tg_table_unlink(tcfg->name);
		rc = tg_table_open(&srv->table, tcfg, err, sizeof(err));
	}
	if (rc != 0) {
		tg_log("%s", err);
		return rc;
	}
	struct tg_shm_hdr *h = srv->table.hdr;
	if (tg_load_64(&h->generation) <= 1)
		return 0; /* created now */
	uint64_t clean = tg_load_64(&h->clean_lsn);
	if (clean != 0 && clean == d->state.lsn) {
		tg_log("shm %s: kept: a clean stop left it at LSN %" PRIu64 ", the journal's end",
		       tcfg->name, clean);
		return 0;
	}
	if (clean != 0)
		tg_log("shm %s: a clean stop left it at LSN %" PRIu64
		       " but the journal ends at %" PRIu64 ": rebuilding it from the journal",
		       tcfg->name, clean, d->state.lsn);
	else
		tg_log("shm %s: the engine before did not stop cleanly, so the segment may hold "
		       "changes that were never recorded nor acknowledged: rebuilding it from the "
		       "journal",
		       tcfg->name);
	tg_table_close(&srv->table);
	tg_table_unlink(tcfg->name);
	rc = tg_table_open(&srv->table, tcfg, err, sizeof(err));
	if (rc != 0)
		tg_log("%s", err);
	return rc;
}

/* The journal's hook: calls in progress, whose settlements the disk must keep room for. */
static uint64_t
calls_in_progress(void *arg)
{
	struct tg_engine *e = arg;
	return tg_calls_count(e->calls);
}

/* The id store's view of the disk: the journal measures it (NULL before it is open). */
static bool
disk_low(void *arg)
{
	const struct tg_durable *d = arg;
	return d->jw != NULL && tg_jw_low_space(d->jw);
}

/*
 * The horizon in effect, for tollstat and Prometheus (INFO reads them too):
 * the oldest id on disk and before when ids may have been forgotten early.
 * Positions kept in the journal's counter block; the snapshot thread alone
 * changes the runs, so it sets them, at start and every tick.
 */
static void
ids_horizon_publish(struct tg_server *srv)
{
	struct tg_stats *st = &srv->table.stats[TG_STATS_JOURNAL];
	struct tg_idstore_info ii;

	tg_idstore_info(srv->dur.ids, &ii);
	tg_store_64(&st->counter[TG_C_ids_horizon_oldest], ii.oldest);
	tg_store_64(&st->counter[TG_C_ids_forgotten_before], tg_idstore_forgot(srv->dur.ids));
}

int
tg_durable_install(struct tg_server *srv)
{
	struct tg_durable *d = &srv->dur;
	struct tg_stats *st = &srv->table.stats[TG_STATS_JOURNAL];
	char err[600];
	int rc;

	if (d->mode == TG_NOJOURNAL)
		return 0;
	/* tg_durable_prepare held the lock and rebuilt the state; the engine is up. */
	TG_ASSERT(d->lock_fd >= 0 && srv->engine.table == &srv->table && srv->engine.ids != NULL);
	uint64_t t0 = tg_mono_ms();
	struct tg_idstore_cfg icfg = {.dir = srv->cfg.data_dir,
	                              .ids = srv->engine.ids,
	                              .horizon = srv->cfg.ids_window,
	                              .disk_max = srv->cfg.ids_disk_max,
	                              .stats = &srv->table.stats[TG_STATS_JOURNAL],
	                              .low_space = disk_low,
	                              .low_space_arg = d};
	rc = tg_idstore_open(&d->ids, &icfg, err, sizeof(err));
	if (rc != 0) {
		tg_log("%s", err);
		return rc;
	}
	srv->engine.idstore = d->ids;
	ids_horizon_publish(srv);
	tg_log("ids: %" PRIu64 " remembered on disk, loaded in %" PRIu64 " ms",
	       tg_idem_on_disk(srv->engine.ids), tg_mono_ms() - t0);
	t0 = tg_mono_ms();
	rc = tg_recover_install(&d->state, &srv->engine, err, sizeof(err));
	if (rc != 0) {
		tg_log("journal: cannot install the recovered state: %s", err);
		return rc;
	}
	tg_log("journal: installed in %" PRIu64 " ms", tg_mono_ms() - t0);
	/* From now on the segment runs ahead of any clean stop. */
	tg_store_64(&srv->table.hdr->clean_lsn, 0);
	struct tg_jw_cfg jcfg = {.dir = srv->cfg.data_dir,
	                         .mode = d->mode,
	                         .flush_ms = srv->cfg.journal_flush_ms,
	                         .segment_size = srv->cfg.journal_segment_size,
	                         .disk_reserve = srv->cfg.disk_reserve,
	                         .calls_max = srv->cfg.calls_max,
	                         .calls = calls_in_progress,
	                         .calls_arg = &srv->engine,
	                         .stats = st,
	                         .lsn_out = &srv->table.hdr->journal_lsn};
	rc = tg_jw_open(&d->jw, &jcfg, d->state.lsn + 1, err, sizeof(err));
	if (rc != 0) {
		tg_log("%s", err);
		return rc;
	}
	rc = tg_engine_journal(&srv->engine, d->jw);
	if (rc != 0)
		tg_log("journal: cannot allocate the workers' staging: %s", strerror(-rc));
	tg_log("journal: %s mode in %s, appending from LSN %" PRIu64 "%s",
	       tg_durability_name(d->mode), srv->cfg.data_dir, d->state.lsn + 1,
	       d->mode == TG_RELAXED ? " (relaxed: a crash may lose the last journal-flush-ms of "
	                               "acknowledged changes)"
	                             : "");
	return rc;
}

/* The size of the snapshot of r, at most (ids past the window are left out). */
static uint64_t
snapshot_bytes(const struct tg_replay *r)
{
	return sizeof(struct tg_snap_hdr) + (uint64_t)r->nplans * TG_JPLAN_NAME +
	       (uint64_t)r->accts.n * sizeof(struct tg_racct) +
	       (uint64_t)r->calls.n * sizeof(struct tg_rcall) +
	       (uint64_t)r->ids.n * sizeof(struct tg_rid) + sizeof(struct tg_snap_trailer);
}

/*
 * Bring the state up to what is on disk and write it as a snapshot.  The
 * state is built from the files alone, never from the live table: it is
 * consistent at its LSN whatever the workers are doing.
 */
/* Bring the state up to what is confirmed on disk.  false (logged) when the journal cannot be read.
 */
static bool
catch_up(struct tg_server *srv)
{
	struct tg_durable *d = &srv->dur;
	struct tg_replay_end end;
	uint64_t limit = tg_jw_durable(d->jw);

	if (limit <= d->state.lsn)
		return true;
	int rc = tg_replay_journal(&d->state, srv->cfg.data_dir, limit, false, &end);
	if (rc != 0)
		tg_log("snapshot thread: cannot read the journal: %s", end.msg);
	return rc == 0;
}

/*
 * Move ids out of memory into a run on disk (tg_idstore.h): those older than
 * a minute, or every id the journal holds when memory is half full.  The
 * state is caught up first, so only ids whose records are on disk move.
 */
static void
spill(struct tg_server *srv, bool pressure)
{
	struct tg_durable *d = &srv->dur;
	char err[600];
	uint32_t now = (uint32_t)time(NULL);
	uint64_t t0 = tg_mono_ms();

	if (d->ids == NULL || !catch_up(srv))
		return;
	size_t before = d->state.ids.n; /* caught up: the ids this move may take */
	uint32_t cut = pressure ? UINT32_MAX : now - TG_IDSTORE_MEMORY_AGE;
	int rc = tg_idstore_spill(d->ids, &d->state, cut, now, err, sizeof(err));
	if (rc != 0)
		tg_log("ids: moving ids to disk failed: %s; they stay in memory", err);
	else if (pressure && tg_mono_ms() - t0 > 1000)
		tg_log("ids: memory half full: moved %zu ids to disk in %" PRIu64 " ms",
		       before - d->state.ids.n, tg_mono_ms() - t0);
}

static void
snapshot(struct tg_server *srv)
{
	struct tg_durable *d = &srv->dur;
	char err[600];
	uint64_t t0 = tg_mono_ms();

	if (!catch_up(srv) || d->state.lsn <= d->snap_lsn)
		return;
	int rc;
	/*
	 * The file takes its blocks from above the disk's reserve, never from the
	 * room the journal keeps for credits and settlements.  If it does not fit,
	 * or the write fails, the older snapshots stay and the engine goes on.
	 */
	uint64_t bytes = snapshot_bytes(&d->state);
	if (!tg_jw_hold(d->jw, bytes)) {
		tg_log("snapshot at LSN %" PRIu64 " skipped: it needs %" PRIu64
		       " bytes and %s has %" PRIu64 " free, too little above disk-reserve %" PRIu64
		       " and what the journal keeps; the older snapshots stay",
		       d->state.lsn, bytes, srv->cfg.data_dir, tg_jw_free_bytes(d->jw),
		       srv->cfg.disk_reserve);
		return;
	}
	struct tg_ledger_keep keep = {.max_bytes = srv->cfg.ledger_keep_max};
	rc = tg_snapshot_write_keep(&d->state, srv->cfg.data_dir, (uint32_t)time(NULL),
	                            srv->cfg.ids_window, &keep, err, sizeof(err));
	if (keep.cut > 0) {
		/* The exporter must hear of it: its next batch finds the gap and records it. */
		tg_log("ledger: the exporter is at LSN %" PRIu64
		       ", more than ledger-keep-max %" PRIu64
		       " bytes of journal behind; %u segment(s) it has not read were pruned, the "
		       "journal now starts at LSN %" PRIu64,
		       keep.exported, srv->cfg.ledger_keep_max, keep.cut, keep.cut_lsn);
		ck_pr_faa_64(&srv->table.stats[TG_STATS_JOURNAL].counter[TG_C_ledger_segments_cut],
		             keep.cut);
	}
	tg_jw_unhold(d->jw, bytes);
	if (rc != 0) {
		tg_log("snapshot: %s; the older snapshots stay", err);
		return;
	}
	d->snap_lsn = d->state.lsn;
	ck_pr_faa_64(&srv->table.stats[TG_STATS_JOURNAL].counter[TG_C_snapshots], 1);
	tg_log("snapshot at LSN %" PRIu64 ": %zu accounts, %zu calls, %zu ids in %" PRIu64 " ms",
	       d->state.lsn, d->state.accts.n, d->state.calls.n, d->state.ids.n, tg_mono_ms() - t0);
}

static void *
snap_thread(void *arg)
{
	struct tg_server *srv = arg;
	struct tg_durable *d = &srv->dur;

	uint64_t last_snap = tg_mono_ms(), last_spill = tg_mono_ms();
	unsigned settled = 0;

	/*
	 * A tick every SPILL_TICK_MS: ids move to disk every SPILL_EVERY_MS, or at
	 * once when the memory tier is half full; a snapshot every
	 * snapshot-interval (0: none but the last), or once snapshot-records
	 * records were journaled since the last.
	 */
	pthread_mutex_lock(&d->mu);
	while (!d->stop) {
		struct timespec ts = tg_clock_after_ms(CLOCK_REALTIME, SPILL_TICK_MS);
		pthread_cond_timedwait(&d->cv, &d->mu, &ts);
		if (d->stop)
			break;
		unsigned asked = d->settle_asked;
		pthread_mutex_unlock(&d->mu);
		if (asked != settled) {
			/* tg_durable_settle: everything journaled, in a snapshot and on disk. */
			if (catch_up(srv) && d->state.ids.n * 2 > srv->cfg.ids_max)
				spill(srv, true);
			snapshot(srv);
			settled = asked;
			last_snap = last_spill = tg_mono_ms();
			pthread_mutex_lock(&d->mu);
			d->settle_done = asked;
			pthread_cond_broadcast(&d->cv);
			continue;
		}
		uint64_t now = tg_mono_ms();
		/*
		 * A replica's ids are in this thread's state only (its workers take
		 * no requests): the same bound there, or a promotion would find more
		 * ids than ids-max to hold in memory and refuse to start.
		 */
		bool replica = srv->repl_role == TG_REPL_REPLICA;
		if (replica)
			catch_up(srv);
		size_t held = replica ? d->state.ids.n : tg_idem_count(srv->engine.ids);
		bool pressure = held * 2 > srv->cfg.ids_max;
		if (pressure || now - last_spill >= SPILL_EVERY_MS) {
			spill(srv, pressure);
			last_spill = now;
		}
		ids_horizon_publish(srv);
		/* The exporter's position, for the lag (tollstat, INFO): one small read a tick. */
		tg_store_64(&srv->table.stats[TG_STATS_JOURNAL].counter[TG_C_ledger_lsn],
		            tg_ledger_pos_read(srv->cfg.data_dir));
		/*
		 * Or sooner when the journal since the last one would make a restart
		 * slow; at most one such a SPILL_EVERY_MS, so a snapshot that cannot
		 * be written (no room) is not retried every tick.
		 */
		bool many = srv->cfg.snapshot_records > 0 && now - last_snap >= SPILL_EVERY_MS &&
		            tg_jw_durable(d->jw) - d->snap_lsn >= srv->cfg.snapshot_records;
		if (many || (srv->cfg.snapshot_interval > 0 &&
		             now - last_snap >= (uint64_t)srv->cfg.snapshot_interval * 1000)) {
			snapshot(srv);
			last_snap = tg_mono_ms();
		}
		pthread_mutex_lock(&d->mu);
	}
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

int
tg_durable_start(struct tg_server *srv)
{
	struct tg_durable *d = &srv->dur;

	if (d->jw == NULL)
		return 0;
	int rc = pthread_create(&d->thread, NULL, snap_thread, srv);
	if (rc != 0) {
		tg_log("cannot start the snapshot thread: %s", strerror(rc));
		return -rc;
	}
	d->thread_started = true;
	return 0;
}

void
tg_durable_settle(struct tg_server *srv)
{
	struct tg_durable *d = &srv->dur;

	if (!d->thread_started)
		return;
	pthread_mutex_lock(&d->mu);
	unsigned want = ++d->settle_asked;
	pthread_cond_broadcast(&d->cv);
	while (d->settle_done != want && !d->stop)
		pthread_cond_wait(&d->cv, &d->mu);
	pthread_mutex_unlock(&d->mu);
}

void
tg_durable_stop(struct tg_server *srv)
{
	struct tg_durable *d = &srv->dur;

	if (d->thread_started) {
		pthread_mutex_lock(&d->mu);
		d->stop = true;
		pthread_cond_broadcast(&d->cv);
		pthread_mutex_unlock(&d->mu);
		pthread_join(d->thread, NULL);
		d->thread_started = false;
	}
	if (d->jw != NULL) {
		uint64_t last = tg_jw_sync(d->jw);
		/* A replica's last burst of ids goes to disk before its snapshot holds them all. */
		if (srv->repl_role == TG_REPL_REPLICA && catch_up(srv) &&
		    d->state.ids.n * 2 > srv->cfg.ids_max)
			spill(srv, true);
		snapshot(srv);
		tg_jw_close(d->jw);
		d->jw = NULL;
		srv->engine.jw = NULL;
		/*
		 * The table is exactly the journal up to last: the next start may
		 * keep it.  Not a replica's: its calls and ids were never in memory
		 * (only the journal holds them), so its next start rebuilds.
		 */
		if (srv->table.hdr != NULL && srv->repl_role == TG_REPL_PRIMARY)
			tg_store_64(&srv->table.hdr->clean_lsn, last);
		tg_log("journal: stopped cleanly at LSN %" PRIu64, last);
	}
	srv->engine.idstore = NULL;
	tg_idstore_close(d->ids);
	d->ids = NULL;
	if (d->state_ok)
		tg_replay_free(&d->state);
	d->state_ok = false;
	if (d->lock_fd > 0)
		close(d->lock_fd);
	d->lock_fd = -1;
}
