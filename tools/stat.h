/*
 * stat.h - what the tollstat sources share (hence the stat_ prefix, not tg_).
 *
 * tollstat reads one thing: the engine's shared-memory segment, mapped
 * read-only (docs/SHM.md).  It never talks to the engine over the network and
 * never writes to the segment; everything it shows is computed from a
 * snapshot of the header, the counter blocks, the histograms and a scan of
 * the slots.  Money stays in micro-units from end to end: no float or
 * double ever holds an amount, a rate of money or a latency.
 */
#ifndef STAT_H
#define STAT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "tg_assert.h"
#include "tg_money.h"
#include "tg_stats.h"
#include "tg_table.h"

/* Exit codes: the contract with scripts, also in the usage text and docs/TOOLS.md. */
enum {
	STAT_EXIT_OK = 0,      /* done; verify found nothing wrong */
	STAT_EXIT_FOUND = 1,   /* verify found violations or balances that differ; account: none */
	STAT_EXIT_ATTACH = 2,  /* no segment, or one of another layout: nothing was read */
	STAT_EXIT_USAGE = 3,   /* bad arguments (usage printed) */
	STAT_EXIT_IO = 4,      /* --listen cannot listen; output cannot be written */
	STAT_EXIT_JOURNAL = 5, /* verify --data-dir: the data-dir cannot be read, or its journal
	                          is damaged: the conservation check could not be made */
};

/* Most accounts in the top list (--top). */
#define STAT_TOP_MAX 100
/* Bytes of an error sentence. */
#define STAT_ERR_MAX 320

/*
 * The segment being watched.  A segment can be replaced (removed and made
 * again) or taken over by a new engine (same segment, new generation); the
 * watcher notices both and maps the segment again.
 */
struct stat_src {
	const char *name;  /* "/tollgate"; not owned */
	struct tg_table t; /* attached read-only while t.base != NULL */
	dev_t dev;         /* the file attached, to notice a segment made anew */
	ino_t ino;
	uint64_t generation; /* header generation and writer when attached or last checked */
	int32_t pid;
	char err[STAT_ERR_MAX]; /* why the last open or refresh failed */
};

/* What stat_src_refresh found. */
enum stat_change {
	STAT_SAME,        /* the same segment and the same engine */
	STAT_NEW_ENGINE,  /* an engine attached since (generation or writer changed): re-mapped */
	STAT_NEW_SEGMENT, /* the name now names another segment: re-mapped */
	STAT_LOST, /* the segment is gone or unreadable (err says why); still mapped if it was */
};

/*
 * Map segment name read-only.  Returns 0, or -errno with a sentence in
 * s->err (-EPROTO: a segment of another layout).  name is not copied.
 */
int stat_src_open(struct stat_src *s, const char *name);
/*
 * Check whether the segment was replaced or the engine restarted, and map
 * it again when so.  Cheap (a shm_open and an fstat): call once per refresh.
 */
enum stat_change stat_src_refresh(struct stat_src *s);
void stat_src_close(struct stat_src *s);
/* Is process pid running?  False for 0. */
bool stat_pid_alive(int32_t pid);

/* One account of the top list. */
struct stat_top {
	uint64_t id;
	uint64_t slot;
	tg_money_t spent; /* in the interval, or since the account was made */
};

/* Each slot's spend at the previous scan, for the top list of the live view. */
struct stat_spend {
	int64_t *prev; /* slots of them, malloc'ed by stat_spend_reset */
	uint64_t slots;
	bool primed; /* prev holds a scan of the current segment */
};

/* Everything tollstat shows, taken at one moment. */
struct stat_snap {
	int64_t now;      /* Unix seconds when taken */
	uint64_t mono_ns; /* CLOCK_MONOTONIC when taken */
	/* the header */
	uint64_t generation;
	int32_t writer_pid;
	bool running; /* writer_pid names a live process */
	int64_t created, started;
	uint32_t workers, plan_count;
	uint64_t capacity, slots, count;
	/* the counter blocks: valid only when counters_ok */
	bool counters_ok;      /* the segment's counter table is this build's */
	uint32_t seg_counters; /* counters the segment says it holds */
	uint64_t counter[TG_COUNTER__COUNT];
	struct tg_hist hist[TG_HIST__COUNT];
	/* the scan of every slot */
	uint64_t used;     /* slots holding an account */
	uint64_t calls;    /* calls holding a reservation, all accounts */
	uint64_t inflight; /* accounts with a refill request in flight */
	uint64_t pending;  /* of those, requests not on the stream yet */
	__int128 balance;  /* sum of the balances, micro-units */
	__int128 reserved; /* sum of the reservations, micro-units */
	uint64_t scan_ns;  /* time the scan took */
	unsigned top_want; /* places asked for */
	unsigned ntop;     /* places filled: accounts that spent anything */
	struct stat_top top[STAT_TOP_MAX];
	bool top_interval; /* top[] is spend since the previous scan, not since creation */
};

/* Size sp for the segment of s and forget the previous scan.  Returns 0 or -ENOMEM. */
int stat_spend_reset(struct stat_spend *sp, const struct stat_src *s);
void stat_spend_free(struct stat_spend *sp);
/*
 * Take a snapshot of s into out; with scan_slots false the per-slot figures
 * (totals, pending, top list) are left zero for the caller to carry over.  ntop (0..STAT_TOP_MAX)
 * accounts go into the top list: by spend since sp's previous scan when sp is primed (sp is then
 * updated), by spend since creation when sp is NULL.  With ntop 0 the usage records are not read at
 * all.
 */
void stat_snap_take(const struct stat_src *s, struct stat_snap *out, struct stat_spend *sp,
                    unsigned ntop, bool scan_slots);

/* ---- formatting (stat_fmt.c) ---- */

/* v formatted as an amount into buf; returns buf. */
const char *stat_money(tg_money_t v, char buf[TG_MONEY_STR_MAX]);
/* A sum of amounts (may exceed 64 bits) as a decimal; buf of at least 48 bytes. */
const char *stat_money128(__int128 v, char *buf);
/* Names of the persisted enums; "?" for a value out of range. */
const char *stat_state_name(unsigned state);
const char *stat_mode_name(unsigned mode);
const char *stat_rrec_name(unsigned state);
/* ns rounded up to whole microseconds, as INFO shows latency. */
uint64_t stat_usec(uint64_t ns);
/* d per second over dt_ns nanoseconds, rounded down (dt_ns > 0). */
uint64_t stat_per_s(uint64_t d, uint64_t dt_ns);
/* The distinct INFO sections of the counters, in table order, into out[max]: how many. */
unsigned stat_sections(const char *out[], unsigned max);

/* -1: one snapshot as text, with averages since the engine started. */
void stat_print_text(FILE *f, const struct stat_src *s, const struct stat_snap *n);
/* --json: one snapshot as one JSON object. */
void stat_print_json(FILE *f, const struct stat_src *s, const struct stat_snap *n);
/* --prometheus and /metrics: the text exposition format, version 0.0.4. */
void stat_print_prom(FILE *f, const struct stat_src *s, const struct stat_snap *n);
/* --doc: docs/STATS.md. */
void stat_print_doc(FILE *f);

/* ---- the live view (stat_live.c) ---- */

/*
 * One screen: what changed from prev to cur (prev NULL: totals only), the
 * notice line (NULL: none), laid out for a terminal of rows x cols.
 */
void stat_print_live(FILE *f, const struct stat_src *s, const struct stat_snap *prev,
                     const struct stat_snap *cur, const char *notice, unsigned rows, unsigned cols);

/* ---- accounts (stat_acct.c) ---- */

/* `tollstat account <id>`: STAT_EXIT_OK, or STAT_EXIT_FOUND for no such account. */
int stat_account(FILE *f, const struct stat_src *s, uint64_t id);
/*
 * `tollstat verify`: STAT_EXIT_OK when every invariant holds, else STAT_EXIT_FOUND.
 * journal_next: a conservation check follows (the summary line says whether).
 */
int stat_verify(FILE *f, const struct stat_src *s, bool journal_next);

/* ---- the conservation check (stat_journal.c) ---- */

/*
 * `tollstat verify --data-dir DIR`: every account rebuilt from DIR's newest
 * snapshot and journal, compared with the table (again for about 2 s on a
 * running engine).  Reads DIR and the segment only.  STAT_EXIT_OK when they
 * agree, STAT_EXIT_FOUND when accounts differ (printed), STAT_EXIT_JOURNAL
 * when DIR or its journal cannot be read (the reason on stderr).
 */
int stat_verify_journal(FILE *f, const struct stat_src *s, const char *dir);

/* ---- --listen (stat_http.c) ---- */

/*
 * Serve GET /metrics on addr ("host:port") for the segment named name until
 * SIGINT or SIGTERM: STAT_EXIT_OK then, STAT_EXIT_IO when it cannot listen,
 * STAT_EXIT_USAGE for a malformed addr.
 */
int stat_listen(const char *name, const char *addr);

#endif
