/*
 * tg_durable.h - tollgated's durability: the data directory, recovery at
 * start-up, the journal writer, the snapshot thread, the clean stop.
 *
 * Start-up, in order (docs/JOURNAL.md, "Start-up"):
 *   tg_durable_prepare    lock data-dir, rebuild the journal's state from
 *                         the newest good snapshot + the journal
 *   tg_durable_open_table attach the surviving segment only when a clean
 *                         stop left it at exactly that state; else a new one
 *   (engine init)
 *   tg_durable_install    the state into the table, calls, id window; open
 *                         the journal for appending; the engine records
 *   tg_durable_start      the snapshot thread (after accounts and refills)
 * and tg_durable_stop at the end: sync, last snapshot, mark the segment clean.
 */
#ifndef TG_DURABLE_H
#define TG_DURABLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "tg_jwriter.h"
#include "tg_replay.h"
#include "tg_table.h"

struct tg_server;
struct tg_idstore;

struct tg_durable {
	enum tg_durability mode;
	int lock_fd;
	struct tg_replay state; /* the journal's state: recovery's, then the snapshot thread's */
	bool state_ok;
	struct tg_jw *jw;
	struct tg_idstore *ids; /* the id window's disk tier */
	uint64_t snap_lsn;      /* LSN of the newest snapshot */
	pthread_t thread;
	bool thread_started, stop;
	unsigned settle_asked, settle_done; /* tg_durable_settle's requests, under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

/* 0, or -errno with the reason logged. */
int tg_durable_prepare(struct tg_server *srv);
int tg_durable_open_table(struct tg_server *srv, const struct tg_table_cfg *tcfg);
int tg_durable_install(struct tg_server *srv);
int tg_durable_start(struct tg_server *srv);
void tg_durable_stop(struct tg_server *srv);
/*
 * Have the snapshot thread catch up with the journal's end, move every id it
 * holds to disk when memory would be more than half full, and snapshot;
 * return when it has.  Before a restart in place from a journal that grew
 * behind the engine's back (a takeover, engine/repl.c): the next start then
 * replays from that snapshot, not every record taken, and holds no more ids
 * in memory than ids-max allows.  Nothing without the snapshot thread.
 */
void tg_durable_settle(struct tg_server *srv);

#endif
