/*
 * tg_jwriter.h - appending to the journal: group commit through io_uring.
 *
 * Workers stage the records of a batch in their own tg_jstage while they
 * apply it (no lock, no I/O), then commit the stage once at the end of the
 * batch.  Commit takes the writer's lock just long enough to number the
 * records and encode them into the shared fill buffer.  In durable mode
 * tg_jw_commit then returns only once those records are on disk, and
 * tg_jw_commit_nowait at once, leaving the caller to hold its replies until
 * tg_jw_durable passes them (the workers do: engine/net.c).  Whoever finds
 * no flush in progress when one is due — a waiting committer, or the
 * writer's thread, woken by commit_nowait — becomes the flusher, takes the
 * whole fill buffer (every worker's records), writes it with one io_uring
 * write linked to one fdatasync, and wakes the others.  One sync covers
 * every batch that arrived while the previous one ran: that is the group
 * commit.  In relaxed mode commit returns at once and the writer's thread
 * syncs every flush_ms.
 *
 * A failed write or sync is never retried (a retried fsync can report
 * success for data the kernel already dropped): the process stops with the
 * file, the offset and the error.  Segments are rotated at segment_size.
 *
 * The writer also keeps the disk's books (docs/JOURNAL.md, "Segments and the
 * disk"): the bytes it can still append, counted down as records are
 * encoded and measured again every 100 ms, and the share of that room each
 * class of change may use.  Workers ask tg_jw_admit before a change, so a
 * full disk refuses changes with NOSPACE instead of failing a write.
 */
#ifndef TG_JWRITER_H
#define TG_JWRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_journal.h"
#include "tg_limits.h"
#include "tg_stats-t.h"

enum tg_durability { TG_DURABLE = 0, TG_RELAXED = 1, TG_NOJOURNAL = 2 };
/* "durable" / "relaxed" / "off" -> mode; -1 when unknown. */
int tg_durability_parse(const char *s);
const char *tg_durability_name(enum tg_durability d);

/* The largest payload the engine stages: an itemized commit or debit, every string full. */
#define TG_JSTAGE_PAYLOAD ((TG_JITEM_MAX + 7) & ~(size_t)7)

struct tg_jitem {
	uint16_t type;
	uint16_t len;
	uint32_t pad;
	int64_t time; /* ns since the epoch to stamp it with; 0: the commit's clock */
	uint8_t payload[TG_JSTAGE_PAYLOAD];
};

/* One worker's records of the batch in progress. */
struct tg_jstage {
	unsigned n, cap;
	struct tg_jitem *items;
	uint64_t bytes; /* atomic: bytes the staged records take on disk (read by tg_jw_admit) */
};

/*
 * Bytes the records that settle one call in progress can take: its commit
 * (or expire) record and the refill request the debit may fire.
 */
#define TG_JW_SETTLE_BYTES                                                                         \
	(tg_journal_rec_size(sizeof(struct tg_jrec_commit) + sizeof(struct tg_jitem_tail) +        \
	                     sizeof(struct tg_jitem_charge) + TG_CALLID_MAX + TG_DEST_MAX) +       \
	 tg_journal_rec_size(sizeof(struct tg_jrec_refill_fired)))
/* Bytes one command can stage at most (ACCT.SET: balance, settings, refill fired). */
#define TG_JW_CMD_BYTES                                                                            \
	(tg_journal_rec_size(sizeof(struct tg_jrec_set_balance) + sizeof(struct tg_jitem_tail) +   \
	                     TG_USER_NAME_MAX) +                                                   \
	 tg_journal_rec_size(sizeof(struct tg_jrec_settings) + sizeof(struct tg_jitem_tail) +      \
	                     TG_USER_NAME_MAX) +                                                   \
	 tg_journal_rec_size(sizeof(struct tg_jrec_refill_fired)))

/*
 * What a change is to the disk's reserve, from the first refused to the
 * last.  Each class may use the room down to its own floor.
 */
enum tg_jw_class {
	TG_JW_NEW = 0, /* takes money or creates state: CALL.AUTH, CALL.UPDATE, CDR, ACCT.SET */
	TG_JW_CREDIT,  /* adds money or answers a refill: ACCT.CREDIT, ACCT.REFILL.FAILED */
	TG_JW_EXPIRE,  /* a round of expiry: settles calls at their grant (all of them must fit) */
	TG_JW_SETTLE,  /* settles one call already granted: CALL.END */
};

/* Where the disk stands, for INFO and the log: which classes are refused. */
enum tg_jw_disk {
	TG_JW_DISK_OK = 0,   /* every change accepted */
	TG_JW_DISK_RESERVE,  /* below disk-reserve: new work refused */
	TG_JW_DISK_SETTLING, /* the credits' share is used up: only calls are settled */
	TG_JW_DISK_FULL,     /* no room even to settle: every change refused */
};
/* "ok", "reserve", "settling", "full". */
const char *tg_jw_disk_name(enum tg_jw_disk d);

struct tg_jw_cfg {
	const char *dir;
	enum tg_durability mode; /* TG_DURABLE or TG_RELAXED */
	uint32_t flush_ms;       /* relaxed: sync interval */
	uint64_t segment_size;   /* rotate past this many bytes */
	uint64_t disk_reserve;   /* refuse new work when the journal has less room */
	uint64_t calls_max;      /* calls in progress at most (bounds what settling may need) */
	/* Calls in progress now (their settlements are owed room); NULL: none. */
	uint64_t (*calls)(void *arg);
	void *calls_arg;
	size_t buffer;          /* bytes of each of the two encode buffers (0: 8 MiB) */
	struct tg_stats *stats; /* the journal's block: counters by atomic add */
	uint64_t *lsn_out;      /* where the durable LSN is published (the shm header), or NULL */
};

struct tg_jw;

/*
 * Open the journal in cfg->dir for appending after next_lsn - 1 (what the
 * reader found): appends to the last segment when it ends there, or starts
 * a new one.  Starts the writer's thread.  0 or -errno with a sentence in err.
 */
int tg_jw_open(struct tg_jw **out, const struct tg_jw_cfg *cfg, uint64_t next_lsn, char *err,
               size_t errlen);
/* Flush and sync what is staged, stop the thread, close.  NULL is fine. */
void tg_jw_close(struct tg_jw *jw);

int tg_jstage_init(struct tg_jstage *s, unsigned cap);
void tg_jstage_fini(struct tg_jstage *s);
/*
 * Count s's staged bytes against the room (every worker's stage is watched,
 * so records not yet committed are not admitted twice).  Before any worker
 * runs; at most TG_JW_STAGES_MAX stages.  0 or -ENOSPC.
 */
#define TG_JW_STAGES_MAX (TG_WORKERS_MAX + 2)
int tg_jw_watch(struct tg_jw *jw, struct tg_jstage *s);

/* Stage one record (a copy of payload); when the stage is full, commits first. */
void tg_jw_stage(struct tg_jw *jw, struct tg_jstage *s, unsigned type, const void *payload,
                 size_t len);
/*
 * Stage a record another journal wrote (a replica copying its primary's):
 * stamped with time_ns, its original time, rather than the commit's clock.
 * Its LSN is still the next one: the caller checks it is the original's.
 */
void tg_jw_stage_at(struct tg_jw *jw, struct tg_jstage *s, unsigned type, const void *payload,
                    size_t len, int64_t time_ns);
/*
 * Wait until the durable LSN passes after, at most timeout_ms; returns the
 * durable LSN then (at or below after on a timeout, or when the writer
 * closes).  Any thread: replication's senders follow the journal with it.
 */
uint64_t tg_jw_wait_durable(struct tg_jw *jw, uint64_t after, uint32_t timeout_ms);
/*
 * tg_jw_wait_durable for records written and synced, their CONFIRM maybe
 * not yet: they survive a crash (the next open confirms them) and may be
 * sent on; only acknowledging waits for the CONFIRM.  Returns the last LSN
 * synced or confirmed.
 */
uint64_t tg_jw_wait_synced(struct tg_jw *jw, uint64_t after, uint32_t timeout_ms);
/*
 * Commit what s holds (then empties it): in durable mode returns once it is
 * on disk.  Any thread, any number at once, each with its own stage.
 * Returns the last LSN given (0 when s was empty).
 */
uint64_t tg_jw_commit(struct tg_jw *jw, struct tg_jstage *s);
/*
 * tg_jw_commit without the wait: the records are numbered and encoded, and
 * in durable mode the writer's thread flushes them; the caller holds what
 * depends on them until tg_jw_durable passes the LSN returned (0: s was
 * empty).  In relaxed mode the same as tg_jw_commit.
 */
uint64_t tg_jw_commit_nowait(struct tg_jw *jw, struct tg_jstage *s);
/*
 * tg_jw_commit for records another journal numbered (tg_jw_stage_at): only
 * when the first of them takes LSN first.  Otherwise nothing is written, s
 * is emptied and 0 returned (a record of this node's own came between).
 */
uint64_t tg_jw_commit_at(struct tg_jw *jw, struct tg_jstage *s, uint64_t first);
/*
 * fn(arg, lsn) is called, on the flushing thread with the writer's lock
 * held, each time the durable LSN moves (to lsn); it may not call into the
 * writer.  NULL stops the calls: once this returns, none is running.
 */
void tg_jw_on_durable(struct tg_jw *jw, void (*fn)(void *arg, uint64_t lsn), void *arg);
/* Sync everything committed so far, in any mode; returns the durable LSN. */
uint64_t tg_jw_sync(struct tg_jw *jw);

/* The last LSN on disk. */
uint64_t tg_jw_durable(const struct tg_jw *jw);
/* The last LSN handed out. */
uint64_t tg_jw_last(struct tg_jw *jw);
/*
 * Whether a change of class k may be made now: the room left after every
 * staged record, this change and what the calls in progress owe stays above
 * k's floor.  One atomic load when the disk is far from its reserve; any
 * thread.  A refused change must change nothing (NOSPACE).
 */
bool tg_jw_admit(const struct tg_jw *jw, enum tg_jw_class k);
/* Where the disk stands now. */
enum tg_jw_disk tg_jw_disk(const struct tg_jw *jw);
/* Whether new work is refused (tg_jw_disk is not OK). */
bool tg_jw_low_space(const struct tg_jw *jw);
/* Free bytes of the file system at the last check. */
uint64_t tg_jw_free_bytes(const struct tg_jw *jw);
/* Bytes the journal can still append (free space, plus its preallocated blocks), less staged. */
int64_t tg_jw_room(const struct tg_jw *jw);
/* Bytes kept for settling the calls in progress (the settling floor). */
uint64_t tg_jw_settle_reserve(const struct tg_jw *jw);
/*
 * Take bytes of the file system for a file other than the journal (a
 * snapshot), only when they fit above the reserve: true, and the room is
 * counted down until tg_jw_unhold; false, and nothing is taken.
 */
bool tg_jw_hold(struct tg_jw *jw, uint64_t bytes);
/* The file is written (or failed): measure the disk again. */
void tg_jw_unhold(struct tg_jw *jw, uint64_t bytes);
enum tg_durability tg_jw_mode(const struct tg_jw *jw);
const char *tg_jw_dir(const struct tg_jw *jw);

#endif
