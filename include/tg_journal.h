/*
 * tg_journal.h - the journal's on-disk format: segments of checksummed
 * records (docs/JOURNAL.md), an encoder and a reader.
 *
 * This module owns the bytes on disk and nothing else.  The encoder writes
 * into a caller's buffer: no allocation, no I/O, so the engine can batch the
 * records of a worker batch and write them as it likes.  The reader walks a
 * directory of segments at start-up and says exactly what it found: a clean
 * end, a torn tail to cut, or damage an operator must look at.  It never
 * repairs anything on its own; the truncate functions are separate calls.
 *
 * Everything on disk is little-endian; the structs below are the layout on
 * the machines tollgate runs on (x86-64, aarch64), pinned by _Static_assert.
 */
#ifndef TG_JOURNAL_H
#define TG_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tg_hash.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the journal is little-endian");

/* ---- the format ---- */

#define TG_JOURNAL_MAGIC "TGJOURNL" /* 8 bytes, no NUL on disk */
/*
 * Segment format this build writes.  Version 2 promises that every flush is
 * confirmed (a CONFIRM record follows it before anything is acknowledged);
 * version 1 segments, which have no CONFIRM records, are still read.
 */
#define TG_JOURNAL_VERSION 2u
/*
 * Record version this build writes and reads.  Version 2 adds the itemized
 * tail (struct tg_jitem_tail, then its strings) after the version 1 payload of
 * the types that carry one (tg_journal_itemized); every other type, and any
 * version 1 record, is the version 1 struct exactly.  A record's version
 * says which: the writer writes version 2 only with a tail.
 */
#define TG_JOURNAL_REC_VERSION 2u
#define TG_JOURNAL_HDR_SIZE    64u
#define TG_JOURNAL_ALIGN       8u
/* Largest payload accepted; a length above it is damage, not a record. */
#define TG_JOURNAL_PAYLOAD_MAX 4096u
/* Segments in one journal directory. */
#define TG_JOURNAL_SEGMENTS_MAX (1u << 20)
/* "journal-0123456789abcdef.tgj" and its NUL. */
#define TG_JOURNAL_NAME_LEN 29

/* The segment header: the first 64 bytes of every segment file. */
struct tg_jseg_hdr {
	char magic[8];      /*  0 "TGJOURNL" */
	uint32_t version;   /*  8 TG_JOURNAL_VERSION */
	uint32_t hdr_size;  /* 12 TG_JOURNAL_HDR_SIZE */
	uint64_t first_lsn; /* 16 LSN of the segment's first record (also in its name) */
	int64_t created;    /* 24 Unix seconds */
	uint32_t crc;       /* 32 CRC32C of the 64 bytes with this field zero */
	uint8_t pad[28];    /* 36 zero */
};
_Static_assert(sizeof(struct tg_jseg_hdr) == TG_JOURNAL_HDR_SIZE, "segment header is 64 bytes");
_Static_assert(offsetof(struct tg_jseg_hdr, crc) == 32, "segment header crc at 32");

/* The record header; the payload follows, then zeros to the next 8 bytes. */
struct tg_jrec_hdr {
	uint32_t len;     /*  0 payload bytes (padding not counted) */
	uint32_t crc;     /*  4 CRC32C of bytes 8 .. 32 + len */
	uint16_t version; /*  8 TG_JOURNAL_REC_VERSION */
	uint16_t type;    /* 10 enum tg_jrec_type */
	uint32_t flags;   /* 12 0 */
	uint64_t lsn;     /* 16 previous record's + 1, across the whole journal */
	int64_t time;     /* 24 nanoseconds since the epoch */
};
_Static_assert(sizeof(struct tg_jrec_hdr) == 32, "record header is 32 bytes");
_Static_assert(sizeof(struct tg_jrec_hdr) % TG_JOURNAL_ALIGN == 0, "payload starts aligned");

/* The record types, generated from tbl/tg_journal.h.  Persisted. */
enum tg_jrec_type {
	TG_JREC__NONE = 0,
#define TG_JREC(N, n, v, d) TG_JREC_##N = v,
#include "tbl/tg_journal.h"
#undef TG_JREC
};
/* Types are dense from 1, in table order: TG_JREC__COUNT is the highest this build knows. */
enum {
#define TG_JREC(N, n, v, d) TG_JREC__IDX_##N,
#include "tbl/tg_journal.h"
#undef TG_JREC
	TG_JREC__COUNT
};
#define TG_JREC(N, n, v, d)                                                                        \
	_Static_assert(TG_JREC_##N == TG_JREC__IDX_##N + 1, "record types are dense, in order");
#include "tbl/tg_journal.h"
#undef TG_JREC

/* A 128-bit id digest on disk (struct tg_digest, spelled out). */
struct tg_jdigest {
	uint64_t lo, hi;
};

/* Why a refill's in-flight flag cleared.  Persisted, only grow at the end. */
/*
 * Why a refill's flag cleared.  VOID: the request may no longer be charged
 * (the account suspended or closed, auto-refill or the payment method
 * switched off, or the worker's claim found it so).  Persisted, only grow.
 */
enum tg_jrefill_reason { TG_JREFILL_CREDITED = 1, TG_JREFILL_FAILED = 2, TG_JREFILL_VOID = 3 };

struct tg_jrec_reserve {
	uint64_t acct;
	struct tg_jdigest call;
	int64_t amount;
	uint32_t seconds;
	uint8_t category;
	uint8_t flags; /* TG_JRESERVE_*; 0 in records written before it existed */
	uint8_t pad[2];
	int64_t per_min;
	int64_t connect;
	uint32_t initial;
	uint32_t increment;
	uint32_t minimum;
	uint32_t pad2;
};
/* tg_jrec_reserve.flags: the call is to an always-allowed destination (docs/RATES.md). */
#define TG_JRESERVE_ALWAYS 0x01u
struct tg_jrec_commit {
	uint64_t acct;
	struct tg_jdigest call;
	struct tg_jdigest end;
	uint64_t fingerprint;
	int64_t reserved;
	int64_t cost;
	uint32_t duration;
	uint32_t category;
};
struct tg_jrec_debit {
	uint64_t acct;
	struct tg_jdigest id;
	uint64_t fingerprint;
	int64_t cost;
	uint32_t duration;
	uint32_t category;
};
struct tg_jrec_credit {
	uint64_t acct;
	struct tg_jdigest txid;
	uint64_t fingerprint;
	int64_t amount;
	int64_t balance;
	uint32_t refill_seq;
	uint32_t pad;
};
struct tg_jrec_set_balance {
	uint64_t acct;
	int64_t balance;
	int64_t delta;
};
#define TG_JPLAN_NAME 32
struct tg_jrec_settings {
	uint64_t acct;
	int64_t threshold;
	int64_t refill_amount;
	uint8_t state;
	uint8_t refill_mode;
	uint8_t flags;
	uint8_t pad[5];
	char plan[TG_JPLAN_NAME];
};
struct tg_jrec_refill_fired {
	uint64_t acct;
	uint32_t refill_seq;
	uint32_t mode;
	int64_t balance;
	int64_t threshold;
	int64_t charge;
};
struct tg_jrec_refill_cleared {
	uint64_t acct;
	uint32_t refill_seq;
	uint32_t reason;
};
struct tg_jrec_expire {
	uint64_t acct;
	struct tg_jdigest call;
	int64_t reserved;
	int64_t cost;
	uint32_t seconds;
	uint32_t category;
};
struct tg_jrec_confirm {
	uint64_t lsn;
};
struct tg_jrec_standing {
	uint64_t acct;
	uint32_t unpaid_since;
	uint32_t failures;
	uint8_t state;
	uint8_t unpaid;
	uint8_t event;
	uint8_t pad[5];
};
struct tg_jrec_limits {
	uint64_t acct;
	int64_t call_cap;
	int64_t daily_cap;
	int64_t low;
	uint32_t max_calls;
	uint32_t pad;
};
/*
 * ---- the itemized tail (record version 2) ----
 *
 * After the version 1 payload of reserve, commit, debit, credit,
 * set_balance, settings and expire: one tail head (the lengths of up to four
 * strings), the type's fixed fields, then the strings, back to back, no NUL.
 * Replay reads the version 1 prefix and nothing else; the ledger exporter
 * (tools/tollexport.c) reads the rest.  Which strings a type carries, in
 * order, is listed with it in docs/JOURNAL.md.
 */
#define TG_JITEM_STRINGS 4
struct tg_jitem_tail {
	uint8_t slen[TG_JITEM_STRINGS]; /* bytes of string 0..3 (0: empty or absent) */
	uint32_t pad;
};
/* The money of one charge (commit, debit, expire), after the tail head. */
struct tg_jitem_charge {
	int64_t balance;   /* the account's balance after the charge */
	int64_t per_min;   /* the rate applied, micro-units a minute */
	int64_t connect;   /* its connect fee */
	uint32_t reported; /* seconds the switch reported (expire: the grant) */
	uint32_t billed;   /* seconds billed: rounded by initial/increment/minimum */
};
/* Where a credit came from, after the tail head (credit). */
struct tg_jitem_credit {
	uint32_t source; /* enum tg_jcredit_source */
	uint32_t pad;
};
/* Credit sources.  Persisted: only grow at the end. */
enum tg_jcredit_source {
	TG_JCREDIT_OPERATOR = 1, /* an ACCT.CREDIT whose txid is no refill request's */
	TG_JCREDIT_REFILL = 2,   /* the credit of an auto-refill request (txid is its id) */
};
/* Strings in a tail: slots by type (docs/JOURNAL.md, "Itemized records"). */
enum {
	TG_JITEM_S_ID = 0,     /* reserve, commit, debit: the call id as sent; credit: the txid */
	TG_JITEM_S_DEST = 1,   /* reserve, debit: the destination */
	TG_JITEM_S_PLAN = 2,   /* reserve, debit: the plan's name */
	TG_JITEM_S_PREFIX = 3, /* commit, debit, expire: the prefix matched */
	TG_JITEM_S_USER = 1,   /* credit, set_balance, settings: the AUTH user (empty: none) */
};
/* The largest version 2 payload: commit or debit with every string full. */
#define TG_JITEM_MAX                                                                               \
	(sizeof(struct tg_jrec_commit) + sizeof(struct tg_jitem_tail) +                            \
	 sizeof(struct tg_jitem_charge) + 4 * 255)

/*
 * Whether records of type carry a tail in version 2 (and how many fixed bytes
 * follow the tail head: *fixed).
 */
bool tg_journal_itemized(unsigned type, size_t *fixed);
/*
 * Whether payload[0..len) is a valid payload of type in record version
 * version: version 1 the struct exactly; version 2 for an itemized type the
 * struct, the tail head, the fixed fields and exactly the strings' bytes.
 */
bool tg_journal_payload_ok(unsigned type, unsigned version, const void *payload, size_t len);
/*
 * String i of a version 2 payload already checked by tg_journal_payload_ok:
 * its bytes (not NUL-terminated) and *n their count; NULL with *n = 0 for a
 * version 1 payload.  fixed, when not NULL, gets the fixed fields.
 */
const char *tg_journal_item_str(unsigned type, const void *payload, size_t len, unsigned i,
                                size_t *n);
const void *tg_journal_item_fixed(unsigned type, const void *payload, size_t len);
/*
 * Build a version 2 payload in buf (cap bytes): the version 1 struct v1 (its
 * size is the type's), fixed (the type's fixed fields, or NULL when none),
 * and up to TG_JITEM_STRINGS strings (s[i], n[i]; each cut to 255 bytes).
 * Returns the payload's length, or 0 when cap is too small.
 */
size_t tg_journal_item_build(void *buf, size_t cap, unsigned type, const void *v1,
                             const void *fixed, const char *const s[TG_JITEM_STRINGS],
                             const size_t n[TG_JITEM_STRINGS]);

/* Bytes a CONFIRM record takes on disk. */
#define TG_JOURNAL_CONFIRM_SIZE (32u + 8u)
_Static_assert(TG_JOURNAL_CONFIRM_SIZE ==
                   sizeof(struct tg_jrec_hdr) + sizeof(struct tg_jrec_confirm),
               "a CONFIRM record is a header and one word");

/* Every payload is a whole number of 8-byte words: no hidden padding on disk. */
#define TG_JREC(N, n, v, d)                                                                        \
	_Static_assert(sizeof(struct tg_jrec_##n) % 8 == 0 &&                                      \
	                   sizeof(struct tg_jrec_##n) <= TG_JOURNAL_PAYLOAD_MAX,                   \
	               "payload of " #n " is whole words");
#include "tbl/tg_journal.h"
#undef TG_JREC

static inline struct tg_jdigest
tg_jdigest_of(struct tg_digest d)
{
	return (struct tg_jdigest){d.lo, d.hi};
}

/* The payload size of type t in version 1 (the prefix of version 2), or 0 when t is unknown. */
size_t tg_journal_payload_size(unsigned type);
/* "reserve", "commit", ...; "?" for an unknown type. */
const char *tg_journal_type_name(unsigned type);

/* Bytes a record with a payload of len bytes takes on disk, padding included. */
static inline size_t
tg_journal_rec_size(size_t len)
{
	return (sizeof(struct tg_jrec_hdr) + len + TG_JOURNAL_ALIGN - 1) &
	       ~(size_t)(TG_JOURNAL_ALIGN - 1);
}

/* ---- CRC32C (Castagnoli) ---- */

/*
 * CRC32C of p[0..len), continuing from crc (0 to start): tg_crc32c(0,
 * "123456789", 9) == 0xe3069283, and tg_crc32c(tg_crc32c(0, a, n), b, m) is
 * the CRC of a then b.  Uses the SSE4.2 crc32 instruction when the CPU has
 * it, a table otherwise; both give the same value.
 */
uint32_t tg_crc32c(uint32_t crc, const void *p, size_t len);
/* The table-driven path alone (for tests). */
uint32_t tg_crc32c_sw(uint32_t crc, const void *p, size_t len);
/* Does this CPU run the hardware path? */
bool tg_crc32c_hw_available(void);
/* The hardware path alone; only when tg_crc32c_hw_available(). */
uint32_t tg_crc32c_hw(uint32_t crc, const void *p, size_t len);

/* ---- the encoder ---- */

/*
 * Encode one record (header, payload, zero padding) at buf.  type must be a
 * known type and len its payload size (a programmer's error otherwise:
 * asserted).  payload may be unaligned.  Returns the bytes written (a
 * multiple of 8, tg_journal_rec_size(len)) or -ENOSPC when cap is too small,
 * in which case nothing is written.  No allocation, no I/O; safe from any
 * thread on its own buffer.
 */
ssize_t tg_journal_encode(void *buf, size_t cap, unsigned type, uint64_t lsn, int64_t time_ns,
                          const void *payload, size_t len);
/* Fill the 64-byte header of a new segment whose first record will be first_lsn. */
void tg_journal_seg_header(struct tg_jseg_hdr *h, uint64_t first_lsn, int64_t created);
/* The file name of that segment, "journal-<16 hex digits>.tgj", into name. */
void tg_journal_seg_name(char name[TG_JOURNAL_NAME_LEN], uint64_t first_lsn);
/* The first LSN named by a segment file name, or false when it is not one. */
bool tg_journal_seg_name_parse(const char *name, uint64_t *lsn);

/* ---- the reader ---- */

/*
 * What tg_journal_next found.  Each but OK stops the reader where it is.
 * Persisted in logs and tools' exit codes: only grow at the end.  An empty
 * segment file has no status of its own: it is END when it is the last
 * segment and CORRUPT otherwise, with pos.empty_seg set either way.
 */
enum tg_journal_status {
	TG_JOURNAL_OK = 0,    /* a record, in *rec */
	TG_JOURNAL_END,       /* the clean end of the journal */
	TG_JOURNAL_TORN_TAIL, /* the last record of the last segment is incomplete: cut at pos */
	TG_JOURNAL_CORRUPT,   /* damage with valid data after it: an operator decides */
	TG_JOURNAL_NEWER_VERSION, /* a segment or record this build cannot read */
	TG_JOURNAL_GAP,           /* a segment or an LSN is missing */
	TG_JOURNAL_BAD_HEADER,    /* a segment header is not a journal header of its name */
	TG_JOURNAL_ERROR,         /* an I/O error: pos.err holds -errno */
};
const char *tg_journal_status_name(enum tg_journal_status s);

/* One record, as tg_journal_next returns it; payload valid until the next call. */
struct tg_jrec {
	uint64_t lsn;
	int64_t time; /* ns since the epoch */
	unsigned type;
	unsigned version;
	uint32_t len;
	const void *payload;
};

/* Where the reader is, or where it stopped and why. */
struct tg_journal_pos {
	char file[TG_JOURNAL_NAME_LEN]; /* segment file name, within the directory */
	uint64_t offset;                /* byte offset in it: the record (or 0: the header) */
	uint64_t lsn;                   /* the LSN expected there */
	int err;                        /* TG_JOURNAL_ERROR: -errno */
	uint64_t confirmed;             /* the highest LSN a CONFIRM record covered (0: none) */
	uint64_t confirms;              /* CONFIRM records read */
	bool empty_seg;                 /* the segment at file is a zero-length file */
	uint32_t seg_version;           /* the format version of the segment at file */
};

struct tg_journal_reader;

/*
 * Open the journal in dir: list the segments (journal-*.tgj; other names are
 * ignored) in LSN order.  No segment at all is a journal that reads as END.
 * Returns 0 or -errno (-ENOMEM, -EMFILE past TG_JOURNAL_SEGMENTS_MAX, or
 * opendir's error).  The reader is not thread-safe; one thread reads it.
 */
int tg_journal_open_dir(struct tg_journal_reader **out, const char *dir);
void tg_journal_close(struct tg_journal_reader *r);
/*
 * A reader that stopped at END (or at a TORN_TAIL: a record being written)
 * of a journal still being appended to: look again, at the last segment's
 * new size and at segments created since, and read on from where it was.
 * 0; -EINVAL when the reader stopped for another reason; -ESTALE when the
 * segment it was reading is gone (open the journal again); or -errno.
 */
int tg_journal_follow(struct tg_journal_reader *r);
/* The number of segments found and the first LSN of segment i (for tools). */
size_t tg_journal_segments(const struct tg_journal_reader *r);
uint64_t tg_journal_segment_lsn(const struct tg_journal_reader *r, size_t i);

/*
 * Before the first tg_journal_next: start at the segment that holds lsn (the
 * last whose first LSN is at or before it), skipping the segments wholly
 * before it unread.  The records of that segment before lsn are still
 * returned.  0, or -EINVAL once reading started.
 */
int tg_journal_seek(struct tg_journal_reader *r, uint64_t lsn);

/*
 * The next record, validated: its checksum, length, padding, version,
 * type, payload size and LSN (the previous + 1; the first record is the
 * first segment's first LSN).  OK fills *rec.  Any other status is sticky:
 * later calls return it again.  tg_journal_where says where and which LSN.
 */
enum tg_journal_status tg_journal_next(struct tg_journal_reader *r, struct tg_jrec *rec);
const struct tg_journal_pos *tg_journal_where(const struct tg_journal_reader *r);
/* The LSN the next record will carry (after END: where a writer continues). */
uint64_t tg_journal_next_lsn(const struct tg_journal_reader *r);
/* One sentence for the log: what was found, where, and what to do. */
void tg_journal_describe(const struct tg_journal_reader *r, char *buf, size_t len);

/*
 * After TORN_TAIL: cut the last segment at the reported offset, fsync it
 * and the directory.  The reader then reads as END.  -EINVAL when the last
 * status was not TORN_TAIL; otherwise 0 or -errno.
 */
int tg_journal_truncate_tail(struct tg_journal_reader *r);
/*
 * An operator's decision after CORRUPT (tollctl journal-cut --at
 * FILE:OFFSET): cut segment file of dir at offset (0, or a multiple of 8 at
 * or past the header) and rename every later segment to "<name>.cut-<unix seconds>", so
 * its records leave the journal but stay on disk for inspection.  fsyncs
 * the file and the directory.  0 or -errno; -EINVAL for a bad offset or a
 * name that is not a segment's, -ENOENT when file does not exist.
 */
int tg_journal_truncate_at(const char *dir, const char *file, uint64_t offset);

#endif
