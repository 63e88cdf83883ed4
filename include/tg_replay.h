/*
 * tg_replay.h - the state the journal describes, rebuilt from files alone:
 * snapshots, replay, recovery and verification.
 *
 * A tg_replay holds every account, every call in progress and every
 * remembered id as of one LSN.  It is built by loading the newest good
 * snapshot and applying the journal's records after it, in LSN order.  Every
 * record is an effect (money deltas, settings), so applying needs no rate
 * plan and no clock, and deltas commute: records of two workers that touched
 * one account in the other order still sum to the same balance.
 *
 * The same state serves three callers: start-up installs it into a fresh
 * table (recovery), the snapshot thread writes it to a snapshot file (so
 * recovery stays short and old segments can go), and tollstat verify
 * compares it with the live table (the conservation check).
 */
#ifndef TG_REPLAY_H
#define TG_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_journal.h"
#include "tg_limits.h"

/*
 * One account as the journal says it is.  Also its record in a snapshot
 * (200 bytes; 160 in version 2 snapshots, which end at failures; 152 in
 * version 1 snapshots, which end at usage).
 */
struct tg_racct {
	uint64_t id;
	int64_t balance;
	int64_t reserved;  /* held by calls in progress */
	int64_t threshold; /* the terms word: a postpaid account's credit limit (tg_acct_terms) */
	int64_t refill_amount;
	int64_t fired_balance; /* the newest refill request: balance when it fired */
	int64_t fired_charge;  /* and what it asks to charge */
	int64_t fired_time;    /* ns since the epoch */
	uint32_t plan;         /* index into the state's plan names */
	uint32_t refill_seq;   /* newest request fired */
	uint32_t refill_done;  /* newest request credited or failed */
	uint32_t fired_mode;
	uint8_t state, refill_mode, flags, used;
	uint32_t calls;                   /* calls in progress (not in snapshots: recounted) */
	int64_t usage[TG_CATEGORIES_MAX]; /* charged per category (enum tg_category) */
	uint32_t unpaid_since; /* suspended for non-payment since, Unix seconds; 0: not */
	uint8_t failures;      /* consecutive failed refills */
	uint8_t pad[3];
	/* Version 3: the fraud limits (docs/FRAUD.md); 0: none. */
	int64_t call_cap;
	int64_t daily_cap;
	int64_t low;
	int64_t day_used; /* counted against daily_cap on day */
	uint32_t max_calls;
	uint32_t day; /* UTC day (days since the epoch) day_used counts */
};

/* One call in progress (80 bytes). */
struct tg_rcall {
	struct tg_jdigest call;
	uint64_t acct;
	int64_t reserved;
	int64_t started; /* ns since the epoch, of its CALL.AUTH */
	int64_t per_min;
	int64_t connect;
	uint32_t granted;
	uint32_t initial;
	uint32_t increment;
	uint32_t minimum;
	uint8_t category;
	uint8_t counted; /* CALL.AUTH counted it against a daily cap, on day (version 3) */
	uint8_t flags;   /* TG_JRESERVE_* of its CALL.AUTH (0 in older snapshots: none) */
	uint8_t pad[1];
	uint32_t day;
};

/* One remembered id (48 bytes). */
struct tg_rid {
	struct tg_jdigest id;
	uint64_t fingerprint;
	int64_t reply;
	uint32_t seen;   /* Unix seconds */
	uint32_t result; /* enum tg_result: OK, or EXPIRED for a call expiry settled */
	uint64_t pad;
};

struct tg_rtab {
	void *slot;
	size_t cap, n; /* cap a power of two */
};

struct tg_replay {
	uint64_t lsn;  /* the last record applied */
	uint64_t from; /* the snapshot it started from (0: none) */
	struct tg_rtab accts, calls, ids;
	char (*plans)[TG_PLAN_NAME_MAX + 1];
	uint32_t nplans, plans_cap;
	uint64_t records;   /* applied by tg_replay_journal */
	uint64_t anomalies; /* records that referred to a call not in progress */
	/*
	 * The disk tier's watermark (tg_idstore.h): every id of a record at or
	 * before spill_lsn first seen before spill_cut is in a run on disk, so
	 * replay does not hold it again.  0, 0: nothing on disk.
	 */
	uint64_t spill_lsn;
	uint32_t spill_cut;
	uint64_t cur_lsn; /* the record being applied */
};

int tg_replay_init(struct tg_replay *r);
void tg_replay_free(struct tg_replay *r);

/*
 * Apply one record (its LSN must follow r->lsn).  0, -ENOMEM, or -EPROTO for
 * a record no build writes (an unknown type, a category out of range).
 */
int tg_replay_apply(struct tg_replay *r, const struct tg_jrec *rec);

/* How tg_replay_journal ended. */
struct tg_replay_end {
	enum tg_journal_status status; /* END, or where it stopped */
	uint64_t next_lsn;             /* where a writer continues */
	bool cut;                      /* a torn tail was cut off */
	char msg[600];                 /* one sentence for the log */
};

/*
 * Apply the records of the journal in dir after r->lsn, up to limit (0: to
 * the end).  Segments wholly at or before r->lsn are not read (damage in
 * them is not seen here).  A torn tail is cut off when cut_torn, and
 * reported in end.
 * Returns 0 (END, limit reached, or torn tail), -EPROTO when the journal is
 * damaged (CORRUPT, NEWER_VERSION, GAP, BAD_HEADER: end->msg says which file,
 * which offset and what to do) or does not continue r (records missing
 * between the snapshot and the journal), or -errno.
 */
int tg_replay_journal(struct tg_replay *r, const char *dir, uint64_t limit, bool cut_torn,
                      struct tg_replay_end *end);

/* ---- lookups ---- */

const struct tg_racct *tg_replay_acct(const struct tg_replay *r, uint64_t id);
const char *tg_replay_plan_name(const struct tg_replay *r, uint32_t plan);
/* Call fn on every account / call / id. */
void tg_replay_each_acct(const struct tg_replay *r, void (*fn)(void *, const struct tg_racct *),
                         void *arg);
/* Only the accounts in slots [from, to) of r->accts (for splitting work between threads). */
void tg_replay_each_acct_range(const struct tg_replay *r, size_t from, size_t to,
                               void (*fn)(void *, const struct tg_racct *), void *arg);
void tg_replay_each_call(const struct tg_replay *r, void (*fn)(void *, const struct tg_rcall *),
                         void *arg);
void tg_replay_each_id(const struct tg_replay *r, void (*fn)(void *, const struct tg_rid *),
                       void *arg);
/*
 * Forget every id for which drop(arg, id) is true: the disk tier took them.
 * In place, no allocation: the rest are put back where a lookup finds
 * them.  Returns 0.
 */
int tg_replay_ids_drop(struct tg_replay *r, bool (*drop)(void *, const struct tg_rid *), void *arg);

/* ---- snapshots (docs/JOURNAL.md) ---- */

#define TG_SNAP_MAGIC "TGSNAPSH"
#define TG_SNAP_END   "TGSNEND"
/* 3: accounts carry their limits and day's count; 2: failures and unpaid_since; 1, 2 still read */
#define TG_SNAP_VERSION 3u
/* "snapshot-0123456789abcdef.tgs" and its NUL. */
#define TG_SNAP_NAME_LEN 30
/* Verified snapshots kept: the newest, and one to fall back on. */
#define TG_SNAP_KEEP 2
/* Snapshot files looked at in one directory (the newest ones; more are ignored). */
#define TG_SNAP_LIST_MAX 256

struct tg_snap_hdr {
	char magic[8];      /*  0 "TGSNAPSH" */
	uint32_t version;   /*  8 TG_SNAP_VERSION */
	uint32_t hdr_size;  /* 12 64 */
	uint64_t lsn;       /* 16 the state after this record */
	int64_t created;    /* 24 Unix seconds */
	uint64_t accounts;  /* 32 */
	uint32_t calls;     /* 40 */
	uint32_t ids;       /* 44 */
	uint32_t plans;     /* 48 */
	uint32_t rec_sizes; /* 52 sizes of an account, call, id record: 152 | 80 << 8 | 48 << 16 */
	uint32_t pad;       /* 56 */
	uint32_t crc;       /* 60 CRC32C of the 64 bytes with this field zero */
};

struct tg_snap_trailer {
	char magic[8]; /* "TGSNEND\0" */
	uint32_t crc;  /* CRC32C of every byte between the header and the trailer */
	uint32_t pad;
};

/*
 * Write r as snapshot-<lsn>.tgs in dir: a temporary file, fsync, rename,
 * fsync of the directory.  Ids seen before now - window are left out.
 * Then read it back from the disk (tg_snapshot_verify): a copy that does not
 * verify is removed and -EIO returned, with nothing pruned.  Otherwise keep
 * the TG_SNAP_KEEP newest verified snapshots and remove the older ones and
 * the journal segments wholly before the older one kept; with fewer than
 * TG_SNAP_KEEP verified snapshots nothing is removed.  0 or -errno with a
 * sentence in err.
 */
int tg_snapshot_write(const struct tg_replay *r, const char *dir, uint32_t now, uint32_t window,
                      char *err, size_t errlen);

/*
 * The ledger exporter's claim on the journal (docs/LEDGER.md, "Retention"):
 * it writes the last LSN in its database to <data-dir>/ledger.pos, and
 * pruning keeps the segments holding later records, at most max_bytes of
 * them beyond what the snapshots keep.  Past that the oldest go anyway:
 * billing never waits for the exporter.
 */
#define TG_LEDGER_POS_FILE "ledger.pos"
struct tg_ledger_keep {
	uint64_t max_bytes; /* journal kept for the exporter at most; 0: nothing kept for it */
	uint64_t exported;  /* out: its position (0: no position file) */
	unsigned cut;       /* out: segments it had not read that were pruned anyway */
	uint64_t cut_lsn;   /* out: when cut, the first LSN still on disk */
};
/* tg_snapshot_write, pruning as keep says (NULL: as tg_snapshot_write). */
int tg_snapshot_write_keep(const struct tg_replay *r, const char *dir, uint32_t now,
                           uint32_t window, struct tg_ledger_keep *keep, char *err, size_t errlen);
/* The LSN in dir's ledger.pos: 0 when there is none or it does not read as one. */
uint64_t tg_ledger_pos_read(const char *dir);
/*
 * Check snapshot-<lsn>.tgs of dir as it is on the device (its cached pages
 * are dropped first): header, size, checksum, trailer, without loading it.
 * 0, -EPROTO (damaged, why says how), -ENOMEM, or -errno from open.
 */
int tg_snapshot_verify(const char *dir, uint64_t lsn, char *why, size_t whylen);
/*
 * Load the newest snapshot of dir that reads whole into r (empty, from
 * tg_replay_init).  A damaged one is skipped, and said in note (the older
 * one and a longer replay take its place).  0 (with r->lsn 0 when there is
 * none), or -errno.
 */
int tg_snapshot_load(struct tg_replay *r, const char *dir, char *note, size_t notelen);

#endif
