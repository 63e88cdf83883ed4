/*
 * tg_idrun.h - id runs: immutable sorted files of remembered ids (ids-*.tgi).
 *
 * Call ids and txids older than the in-memory window of engine/idem.c move
 * to id runs on disk.  A run is written once, sorted by digest, and never
 * changed: lookups read one 4 KiB block found through a block index held in
 * memory (8 bytes per 102 ids), a compact keys section lets a filter be
 * rebuilt without reading the entries, and runs are compacted by merging
 * them into a new one.  Whether a lookup needs the disk at all is decided
 * elsewhere (a filter over the keys); this module only owns the file.  The
 * format, box by box, is in docs/JOURNAL.md ("Id runs").
 */
#ifndef TG_IDRUN_H
#define TG_IDRUN_H

#include <stddef.h>
#include <stdint.h>

#include "tg_hash.h"

#define TG_IDRUN_MAGIC   "TGIDRUN1" /* 8 bytes, no NUL on disk */
#define TG_IDRUN_VERSION 1u
#define TG_IDRUN_BLOCK   4096u /* bytes of one block of entries */

/* One remembered id: its record in a block (40 bytes on disk, little-endian). */
struct tg_idrun_ent {
	uint64_t lo, hi;      /* the id's digest */
	uint64_t fingerprint; /* of the request's data */
	int64_t reply;        /* the first reply */
	uint32_t seen;        /* Unix seconds, when first applied */
	uint32_t result;      /* enum tg_result of the first reply */
};

_Static_assert(sizeof(struct tg_idrun_ent) == 40, "an id run entry is 40 bytes on disk");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "id runs are little-endian");

/* What a run's header says about it. */
struct tg_idrun_meta {
	uint64_t count;              /* entries */
	uint64_t lsn_from, lsn_to;   /* journal range the ids came from (informative) */
	uint32_t seen_min, seen_max; /* over the entries; both 0 in an empty run */
};

/* An open run: its header, its block index and its file descriptor. */
struct tg_idrun;

/*
 * Sort ents[0..n) by (lo, hi) in place and write them as dir/name: written to
 * dir/name.new, fsync, rename over dir/name (replacing one that exists), fsync
 * of dir.  The caller guarantees no two equal digests; two found after the
 * sort give -EINVAL and no file.  meta is in and out: lsn_from and lsn_to are
 * the caller's, count is set from n, seen_min and seen_max are computed.
 * n may be 0 (an empty run).  0, or -errno with a sentence in err (the .new
 * file removed).
 */
int tg_idrun_write(const char *dir, const char *name, struct tg_idrun_ent *ents, size_t n,
                   struct tg_idrun_meta *meta, char *err, size_t errlen);

/*
 * Open dir/name: read and check the header and the block index (kept in
 * memory, with the fd).  Does not read the blocks or the keys: a run of 100M
 * ids opens with one 4 KiB read and one of about 8 MB.  0 and *out set, or
 * -errno with the reason in err: -EPROTO for a damaged or foreign file (bad
 * magic, a version this build does not read, a header or index CRC that does
 * not match, a file shorter or longer than its header says), -ENOMEM, or the
 * error of open/pread.  The caller owns *out and closes it with
 * tg_idrun_close.
 */
int tg_idrun_open(struct tg_idrun **out, const char *dir, const char *name, char *err,
                  size_t errlen);

/* Close r and free it; NULL is a no-op.  No lookup may be running on r. */
void tg_idrun_close(struct tg_idrun *r);

/* r's header: count, journal range, seen range.  Valid until r is closed. */
const struct tg_idrun_meta *tg_idrun_meta(const struct tg_idrun *r);

/* The file name r was opened with (no directory).  Valid until r is closed. */
const char *tg_idrun_name(const struct tg_idrun *r);

/* Bytes of memory the open run holds: the struct, its name and its block index. */
size_t tg_idrun_ram(const struct tg_idrun *r);

/*
 * Look d up: 1 and *out filled when present, 0 when absent, -EBADMSG when a
 * block it needs fails its CRC (or is not the block it should be), -EIO when
 * the file has become shorter, -errno from pread.  pread only: any number of
 * threads at once on one r, no allocation (one block on the stack).  Costs
 * one block read, two when equal lo values straddle a block boundary.
 */
int tg_idrun_find(const struct tg_idrun *r, struct tg_digest d, struct tg_idrun_ent *out);

/*
 * Call fn(arg, lo) for every entry's lo, in order, from the keys section (8
 * bytes an entry: rebuilding a filter reads a fifth of the file).  fn
 * returning non-zero stops the walk, and that value is returned (the CRC is
 * then not checked).  0 when every key was passed and the section's CRC
 * matches; -EBADMSG when it does not, or when a key is out of order or
 * disagrees with the block index -- some calls were already made: the
 * caller must discard what it built from them (tg_idrun_each gives the same
 * keys from the blocks); -ENOMEM, -EIO or -errno from pread.
 */
int tg_idrun_each_key(const struct tg_idrun *r, int (*fn)(void *arg, uint64_t lo), void *arg);
/*
 * The same walk a chunk at a time (up to 8192 keys, each chunk checked for
 * order and against the index before fn sees it): for a caller that wants
 * to work ahead of the key it is on, as the filter loader prefetches.
 */
int tg_idrun_each_keys(const struct tg_idrun *r, int (*fn)(void *arg, const uint64_t *lo, size_t n),
                       void *arg);

/*
 * Call fn(arg, e) for every entry, in (lo, hi) order, each block checked
 * (CRC, place, entry count, order) before any of its entries is passed.
 * fn returning non-zero stops and that value is returned.  0, -EBADMSG at
 * the first damaged block (the entries of the blocks before it were passed),
 * -ENOMEM, -EIO or -errno from pread.
 */
int tg_idrun_each(const struct tg_idrun *r, int (*fn)(void *arg, const struct tg_idrun_ent *e),
                  void *arg);

/*
 * K-way merge of the runs in[0..nin) into dir/name, written as tg_idrun_write
 * writes (dir/name may be the name of an input: the open input keeps reading
 * the old file).  Streaming: memory is one block per input and one output
 * buffer, whatever the counts.  First every entry with seen < drop_before
 * is dropped; then of a digest left in several inputs the entry with the
 * smallest seen is kept (the earliest input on a tie).  Every entry not kept
 * is passed to dropped(arg, e) (dropped may be NULL), in digest order.  The
 * output's meta in *meta (may be NULL): lsn_from the smallest and lsn_to the
 * largest of the inputs'.  nin may be 0 (an empty run).  0, or -errno with a
 * sentence in err and no output file: -EBADMSG when an input's block is
 * damaged or out of order, errors of writing as tg_idrun_write.
 */
int tg_idrun_merge(const char *dir, const char *name, struct tg_idrun *const *in, size_t nin,
                   uint32_t drop_before, void (*dropped)(void *arg, const struct tg_idrun_ent *e),
                   void *arg, struct tg_idrun_meta *meta, char *err, size_t errlen);

#endif
