/*
 * tollexport - the ledger: every charge, credit and account change of the
 * journal, itemized, exported exactly once into SQL (docs/LEDGER.md).
 *
 * It reads the journal directory read-only, as tollstat verify does, and
 * writes rows into a SQLite file (the default) or PostgreSQL (a URI).  The
 * last LSN exported is stored in the database in the same transaction as the
 * rows: a killed exporter, a lost database connection or a crashed machine
 * resumes from exactly there, with no gap and no duplicate.  Only records a
 * CONFIRM covers are exported, never a tail the engine may still cut.  After
 * each commit it writes its position to <data-dir>/ledger.pos, which the
 * engine's pruning respects (up to ledger-keep-max): the only file it writes
 * in the data directory.  It never blocks the engine.
 *
 *   tollexport --data-dir DIR [--db PATH|URI] [--follow] [--batch N] [--poll-ms MS]
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ledger.h"
#include "ledger_db.h"
#include "tg_assert.h"
#include "tg_journal.h"
#include "tg_names.h"
#include "tg_replay.h"
#include "tg_result.h"
#include "tg_shm-t.h"

enum {
	S_CALL, /* rows statements (ldb_prepare_rows): COPY on PostgreSQL */
	S_CREDIT,
	S_EVENT,
	S_OPEN_ROW,
	S_ACCT, /* statements (ldb_prepare) */
	S_OPENING,
	S_SETTINGS,
	S_OPEN_DEL,
	S_POS,
	S_GAP,
};

static const struct {
	const char *table, *cols;
	unsigned ncols;
} rows_of[] = {
    [S_CALL] = {"calls",
                "lsn, acct, time_us, kind, call_id, destination, plan, prefix, category,"
                " duration, billed, per_min, connect, charge, balance_after",
                15},
    [S_CREDIT] = {"credits",
                  "lsn, acct, time_us, amount, balance_after, txid, source, refill_seq, by_user",
                  9},
    [S_EVENT] = {"account_events",
                 "lsn, acct, time_us, kind, by_user, balance, delta, state, plan, detail", 10},
    [S_OPEN_ROW] = {"open_calls", "call_key, acct, lsn, call_id, destination, plan", 6},
};

static const char *const stmt_sql[] = {
    [S_ACCT] = "INSERT INTO accounts (acct, first_lsn) VALUES ($1, $2)"
               " ON CONFLICT (acct) DO NOTHING",
    [S_OPENING] = "UPDATE accounts SET opening_balance = $2, opening_lsn = $3"
                  " WHERE acct = $1 AND opening_balance IS NULL",
    [S_SETTINGS] = "UPDATE accounts SET plan = $2, state = $3, threshold = $4,"
                   " refill_amount = $5, refill_mode = $6, kind = $7, credit_limit = $8"
                   " WHERE acct = $1",
    [S_OPEN_DEL] = NULL, /* open_del_sql: the key list is spelt per database */
    [S_POS] = "UPDATE ledger_position SET last_lsn = $1, exported_us = $2 WHERE id = 1",
    [S_GAP] = "INSERT INTO ledger_gaps (from_lsn, to_lsn, noticed_us) VALUES ($1, $2, $3)"
              " ON CONFLICT (from_lsn) DO NOTHING",
};

/*
 * The open calls a batch touches, read in one query and deleted in one
 * statement: $1 is a list of call keys, a PostgreSQL array literal
 * ({k1,k2}) or a JSON array (["k1","k2"]) for SQLite.  Keys are hex: no
 * quoting needed in either.
 */
static const char *const open_get_sql[] = {
    [LDB_SQLITE] = "SELECT call_key, call_id, destination, plan FROM open_calls"
                   " WHERE call_key IN (SELECT value FROM json_each($1))",
    [LDB_PG] = "SELECT call_key, call_id, destination, plan FROM open_calls"
               " WHERE call_key = ANY($1::text[])",
};
static const char *const open_del_sql[] = {
    [LDB_SQLITE] = "DELETE FROM open_calls WHERE call_key IN (SELECT value FROM json_each($1))",
    [LDB_PG] = "DELETE FROM open_calls WHERE call_key = ANY($1::text[])",
};

/* A set of account ids (open addressing; 0 is never an account). */
struct idset {
	uint64_t *v;
	size_t cap, n;
};

static bool
idset_has(const struct idset *s, uint64_t id)
{
	if (s->cap == 0)
		return false;
	for (size_t i = (id * 0x9e3779b97f4a7c15ull) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (s->v[i] == id)
			return true;
		if (s->v[i] == 0)
			return false;
	}
}

static void
idset_add(struct idset *s, uint64_t id)
{
	if ((s->n + 1) * 2 > s->cap) {
		struct idset g = {calloc(s->cap ? s->cap * 2 : 1024, 8), s->cap ? s->cap * 2 : 1024,
		                  0};
		if (g.v == NULL) {
			fprintf(stderr, "tollexport: out of memory\n");
			exit(1);
		}
		for (size_t i = 0; i < s->cap; i++)
			if (s->v[i] != 0)
				idset_add(&g, s->v[i]);
		free(s->v);
		*s = g;
	}
	size_t i = (id * 0x9e3779b97f4a7c15ull) & (s->cap - 1);
	while (s->v[i] != 0 && s->v[i] != id)
		i = (i + 1) & (s->cap - 1);
	if (s->v[i] == 0) {
		s->v[i] = id;
		s->n++;
	}
}

static void
idset_clear(struct idset *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* One record read and not yet exported: a copy, the reader's memory moves on. */
struct pend {
	uint64_t lsn;
	int64_t time;
	unsigned type, version;
	uint32_t len;
	size_t at; /* payload offset in the arena */
};

/*
 * An open call as a batch sees it.  Before the batch's records are ingested
 * every call key they name is looked up in open_calls at once (in_db); then
 * the records move it in order, in memory: a reserve opens it unless it is
 * open (as ON CONFLICT DO NOTHING did), a commit or expire reads it and
 * closes it.  At the end of the batch the table gets the difference: rows
 * closed (or closed and opened again) deleted, rows opened inserted.  An
 * authorization and its settlement in one batch never touch the table.
 */
#define OSTR_NULL SIZE_MAX
struct ocall {
	uint64_t hi, lo;       /* the call key (digest of the call id) */
	uint64_t acct, lsn;    /* of the reserve that opened it in this batch */
	size_t id, dest, plan; /* offsets in exporter.ostr, or OSTR_NULL */
	bool used, in_db, open, from_batch;
};

struct exporter {
	const char *dir, *target;
	struct ldb *db;
	bool follow, quiet;
	unsigned batch, poll_ms;
	uint64_t last;              /* last LSN in the database */
	struct idset known, opened; /* accounts with a row; with an opening balance */
	struct pend *pend;
	size_t npend;
	uint8_t *arena;
	size_t arena_len, arena_cap;
	uint64_t rows, gaps;
	bool pos_warned;
	struct ocall *oc; /* open addressing, oc_cap a power of two */
	size_t oc_cap, *oc_used, oc_n;
	char *ostr, *keys; /* the open calls' strings; a key list for a query */
	size_t ostr_len, ostr_cap, keys_cap;
};

static volatile sig_atomic_t stopping;

static void
on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static int64_t
now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- text values ---- */

#define NUMS 16
struct vals {
	char num[NUMS][24];
	char str[4][256 * 2 + 4];
	unsigned nn, ns;
};

static const char *
vi(struct vals *v, int64_t x)
{
	char *b = v->num[v->nn++ % NUMS];
	snprintf(b, 24, "%" PRId64, x);
	return b;
}

static const char *
vu(struct vals *v, uint64_t x)
{
	char *b = v->num[v->nn++ % NUMS];
	snprintf(b, 24, "%" PRIu64, x);
	return b;
}

/*
 * String i of a version 2 payload as text, or NULL (SQL NULL) when the
 * record does not carry it.  Bytes that are not printable ASCII (a switch
 * may send anything in a call id) are written as \xNN, so the text column
 * holds exactly what was sent, readably, on both databases.
 */
static const char *
vs(struct vals *v, const struct pend *p, const uint8_t *pl, unsigned i, bool empty_is_null)
{
	size_t n;
	const char *s = tg_journal_item_str(p->type, pl, p->len, i, &n);
	if (s == NULL || (n == 0 && empty_is_null))
		return NULL;
	char *b = v->str[v->ns++ % 4], *o = b;
	for (size_t k = 0; k < n; k++) {
		unsigned char c = (unsigned char)s[k];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			*o++ = (char)c;
		else
			o += sprintf(o, "\\x%02x", c);
		if (o - b > (long)sizeof(v->str[0]) - 5)
			break;
	}
	*o = '\0';
	return b;
}

static const char *
key_of(struct vals *v, struct tg_jdigest d)
{
	char *b = v->str[v->ns++ % 4];
	snprintf(b, sizeof(v->str[0]), "%016" PRIx64 "%016" PRIx64, d.hi, d.lo);
	return b;
}

static const char *
category(unsigned c)
{
	return c < TG_CATEGORY__COUNT ? tg_category_name((enum tg_category)c) : "unknown";
}

/* ---- one record into the open transaction ---- */

static int
run(struct exporter *x, unsigned id, unsigned n, const char *const *p)
{
	return ldb_run(x->db, id, n, p);
}

/* The account's row (first seen at lsn) and, when balance_before is known, its opening. */
static int
touch(struct exporter *x, uint64_t acct, uint64_t lsn, bool has_before, int64_t before)
{
	struct vals v = {0};

	if (!idset_has(&x->known, acct)) {
		const char *p[] = {vu(&v, acct), vu(&v, lsn)};
		if (run(x, S_ACCT, 2, p) != 0)
			return -1;
		idset_add(&x->known, acct);
	}
	if (has_before && !idset_has(&x->opened, acct)) {
		const char *p[] = {vu(&v, acct), vi(&v, before), vu(&v, lsn)};
		if (run(x, S_OPENING, 3, p) != 0)
			return -1;
		idset_add(&x->opened, acct);
	}
	return 0;
}

/* p with room for need elements of size bytes (*cap updated); out of memory ends the exporter. */
static void *
grow(void *p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return p;
	size_t c = *cap ? *cap : 1024;
	while (c < need)
		c *= 2;
	p = realloc(p, c * size);
	if (p == NULL) {
		fprintf(stderr, "tollexport: out of memory\n");
		exit(1);
	}
	*cap = c;
	return p;
}

/* A copy of s (NULL stays NULL) in ostr; the offset. */
static size_t
ostr_put(struct exporter *x, const char *s)
{
	if (s == NULL)
		return OSTR_NULL;
	size_t n = strlen(s) + 1, at = x->ostr_len;
	x->ostr = grow(x->ostr, &x->ostr_cap, at + n, 1);
	memcpy(x->ostr + at, s, n);
	x->ostr_len += n;
	return at;
}

/* The string at off, NULL for none or empty (as the reserve's columns were read). */
static const char *
ostr_get(const struct exporter *x, size_t off)
{
	return off == OSTR_NULL || x->ostr[off] == '\0' ? NULL : x->ostr + off;
}

/* The batch's entry for call key d; created (closed, not in the table) when create. */
static struct ocall *
oc_find(struct exporter *x, struct tg_jdigest d, bool create)
{
	if (x->oc_cap == 0)
		return NULL;
	size_t m = x->oc_cap - 1;
	for (size_t i = ((d.hi ^ d.lo) * 0x9e3779b97f4a7c15ull) & m;; i = (i + 1) & m) {
		struct ocall *e = &x->oc[i];
		if (e->used && e->hi == d.hi && e->lo == d.lo)
			return e;
		if (!e->used) {
			if (!create)
				return NULL;
			*e = (struct ocall){.hi = d.hi, .lo = d.lo, .used = true};
			x->oc_used[x->oc_n++] = i;
			return e;
		}
	}
}

/* Forget the last batch's open calls; room for keys more. */
static void
oc_reset(struct exporter *x, size_t keys)
{
	for (size_t k = 0; k < x->oc_n; k++)
		x->oc[x->oc_used[k]].used = false;
	x->oc_n = 0;
	x->ostr_len = 0;
	if (keys * 2 <= x->oc_cap)
		return;
	size_t cap = 1024;
	while (cap < keys * 2)
		cap *= 2;
	free(x->oc);
	free(x->oc_used);
	x->oc = calloc(cap, sizeof(*x->oc));
	x->oc_used = calloc(cap / 2, sizeof(*x->oc_used));
	if (x->oc == NULL || x->oc_used == NULL) {
		fprintf(stderr, "tollexport: out of memory\n");
		exit(1);
	}
	x->oc_cap = cap;
}

/* The call key a record names, when it is one the open calls care about. */
static bool
call_key_of(const struct exporter *x, const struct pend *p, struct tg_jdigest *d)
{
	const uint8_t *pl = x->arena + p->at;
	size_t dn;

	switch (p->type) {
	case TG_JREC_RESERVE:
		/* Only CALL.AUTH names the destination: a CALL.UPDATE adds nothing to keep. */
		if (tg_journal_item_str(p->type, pl, p->len, TG_JITEM_S_DEST, &dn) == NULL ||
		    dn == 0)
			return false;
		memcpy(d, pl + offsetof(struct tg_jrec_reserve, call), sizeof(*d));
		return true;
	case TG_JREC_COMMIT:
		memcpy(d, pl + offsetof(struct tg_jrec_commit, call), sizeof(*d));
		return true;
	case TG_JREC_EXPIRE:
		memcpy(d, pl + offsetof(struct tg_jrec_expire, call), sizeof(*d));
		return true;
	default:
		return false;
	}
}

/* The 16 hex digits at s (as key_of writes them) as a number. */
static uint64_t
hex64(const char *s)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < 16 && s[i] != '\0'; i++)
		v = v << 4 | (uint64_t)(s[i] <= '9' ? s[i] - '0' : (s[i] | 0x20) - 'a' + 10);
	return v;
}

/* A row of open_get_sql (key, call id, destination, plan): its call is open in the table. */
static int
open_row(void *arg, unsigned nc, const char *const *vals)
{
	struct exporter *x = arg;
	if (nc < 4 || vals[0] == NULL || strlen(vals[0]) != 32)
		return 0;
	struct tg_jdigest d = {.hi = hex64(vals[0]), .lo = hex64(vals[0] + 16)};
	struct ocall *e = oc_find(x, d, false);
	if (e != NULL && !e->in_db) {
		e->in_db = e->open = true;
		e->id = ostr_put(x, vals[1]);
		e->dest = ostr_put(x, vals[2]);
		e->plan = ostr_put(x, vals[3]);
	}
	return 0;
}

/* The list of the keys of the entries keep() accepts, as open_get_sql's $1; NULL when none. */
static const char *
key_list(struct exporter *x, bool (*keep)(const struct ocall *))
{
	bool pg = ldb_kind(x->db) == LDB_PG;
	size_t n = 0;

	x->keys = grow(x->keys, &x->keys_cap, x->oc_n * 36 + 3, 1);
	x->keys[n++] = pg ? '{' : '[';
	for (size_t k = 0; k < x->oc_n; k++) {
		const struct ocall *e = &x->oc[x->oc_used[k]];
		if (!keep(e))
			continue;
		n += (size_t)sprintf(x->keys + n,
		                     pg ? "%s%016" PRIx64 "%016" PRIx64
		                        : "%s\"%016" PRIx64 "%016" PRIx64 "\"",
		                     n > 1 ? "," : "", e->hi, e->lo);
	}
	if (n == 1)
		return NULL;
	x->keys[n++] = pg ? '}' : ']';
	x->keys[n] = '\0';
	return x->keys;
}

/* key_list's choices: every key the batch names; the rows the batch removes from the table. */
static bool
any_key(const struct ocall *e)
{
	(void)e;
	return true;
}

static bool
gone_from_table(const struct ocall *e)
{
	return e->in_db && (!e->open || e->from_batch);
}

/* Every call key of pend[i..n) into the batch's table, with its row from open_calls if any. */
static int
open_calls_load(struct exporter *x, size_t i, size_t n)
{
	struct tg_jdigest d;

	oc_reset(x, n - i);
	for (size_t k = i; k < n; k++)
		if (call_key_of(x, &x->pend[k], &d))
			oc_find(x, d, true);
	const char *keys = key_list(x, any_key);
	if (keys == NULL)
		return 0;
	const char *p[] = {keys};
	return ldb_query(x->db, open_get_sql[ldb_kind(x->db)], 1, p, open_row, x) < 0 ? -1 : 0;
}

/* The batch's open calls back into open_calls: closed ones deleted, opened ones inserted. */
static int
open_calls_store(struct exporter *x)
{
	struct vals v = {0};
	const char *gone = key_list(x, gone_from_table);
	const char *p[] = {gone};

	if (gone != NULL && run(x, S_OPEN_DEL, 1, p) != 0)
		return -1;
	for (size_t k = 0; k < x->oc_n; k++) {
		const struct ocall *e = &x->oc[x->oc_used[k]];
		if (!e->open || !e->from_batch)
			continue;
		v.nn = v.ns = 0;
		const char *row[] = {key_of(&v, (struct tg_jdigest){.hi = e->hi, .lo = e->lo}),
		                     vu(&v, e->acct),
		                     vu(&v, e->lsn),
		                     ostr_get(x, e->id),
		                     ostr_get(x, e->dest),
		                     ostr_get(x, e->plan)};
		if (ldb_append(x->db, S_OPEN_ROW, row) != 0)
			return -1;
	}
	return 0;
}

/* A settlement (commit or expire): the call's identity from its reserve, then the row. */
static int
settle(struct exporter *x, const struct pend *p, const uint8_t *pl, uint64_t acct,
       struct tg_jdigest call, int64_t cost, uint32_t seconds, uint32_t cat, const char *kind)
{
	struct vals v = {0};
	struct ocall *o = oc_find(x, call, false);
	bool found = o != NULL && o->open;

	const struct tg_jitem_charge *c = tg_journal_item_fixed(p->type, pl, p->len);
	struct tg_jitem_charge ch;
	if (c != NULL)
		memcpy(&ch, c, sizeof(ch));
	if (touch(x, acct, p->lsn, c != NULL, c != NULL ? ch.balance + cost : 0) != 0)
		return -1;
	const char *own_id = vs(&v, p, pl, TG_JITEM_S_ID, true);
	const char *row[] = {vu(&v, p->lsn),
	                     vu(&v, acct),
	                     vi(&v, p->time / 1000),
	                     kind,
	                     own_id != NULL ? own_id
	                     : found        ? ostr_get(x, o->id)
	                                    : NULL,
	                     found ? ostr_get(x, o->dest) : NULL,
	                     found ? ostr_get(x, o->plan) : NULL,
	                     vs(&v, p, pl, TG_JITEM_S_PREFIX, false),
	                     category(cat),
	                     vu(&v, c != NULL ? ch.reported : seconds),
	                     c != NULL ? vu(&v, ch.billed) : NULL,
	                     c != NULL ? vi(&v, ch.per_min) : NULL,
	                     c != NULL ? vi(&v, ch.connect) : NULL,
	                     vi(&v, cost),
	                     c != NULL ? vi(&v, ch.balance) : NULL};
	if (found)
		o->open = false;
	return ldb_append(x->db, S_CALL, row);
}

static int
event(struct exporter *x, const struct pend *p, uint64_t acct, const char *kind, const char *user,
      const int64_t *balance, const int64_t *delta, const int *state, const char *plan,
      const char *detail)
{
	struct vals v = {0};
	const char *row[] = {vu(&v, p->lsn),
	                     vu(&v, acct),
	                     vi(&v, p->time / 1000),
	                     kind,
	                     user,
	                     balance ? vi(&v, *balance) : NULL,
	                     delta ? vi(&v, *delta) : NULL,
	                     state ? vi(&v, *state) : NULL,
	                     plan,
	                     detail};
	return ldb_append(x->db, S_EVENT, row);
}

static int
ingest(struct exporter *x, const struct pend *p)
{
	const uint8_t *pl = x->arena + p->at;
	struct vals v = {0};
	char detail[160];

	switch (p->type) {
	case TG_JREC_RESERVE: {
		struct tg_jrec_reserve r;
		memcpy(&r, pl, sizeof(r));
		size_t dn;
		/* Only CALL.AUTH names the destination: a CALL.UPDATE adds nothing to keep. */
		if (tg_journal_item_str(p->type, pl, p->len, TG_JITEM_S_DEST, &dn) == NULL ||
		    dn == 0)
			return 0;
		if (touch(x, r.acct, p->lsn, false, 0) != 0)
			return -1;
		struct ocall *o = oc_find(x, r.call, false);
		TG_ASSERT(o != NULL); /* open_calls_load saw every key of the batch */
		if (o->open)
			return 0; /* open already: the first reserve's row stays */
		o->open = o->from_batch = true;
		o->acct = r.acct;
		o->lsn = p->lsn;
		o->id = ostr_put(x, vs(&v, p, pl, TG_JITEM_S_ID, true));
		o->dest = ostr_put(x, vs(&v, p, pl, TG_JITEM_S_DEST, true));
		o->plan = ostr_put(x, vs(&v, p, pl, TG_JITEM_S_PLAN, true));
		return 0;
	}
	case TG_JREC_COMMIT: {
		struct tg_jrec_commit r;
		memcpy(&r, pl, sizeof(r));
		return settle(x, p, pl, r.acct, r.call, r.cost, r.duration, r.category, "end");
	}
	case TG_JREC_EXPIRE: {
		struct tg_jrec_expire r;
		memcpy(&r, pl, sizeof(r));
		return settle(x, p, pl, r.acct, r.call, r.cost, r.seconds, r.category, "expiry");
	}
	case TG_JREC_DEBIT: {
		struct tg_jrec_debit r;
		memcpy(&r, pl, sizeof(r));
		const struct tg_jitem_charge *c = tg_journal_item_fixed(p->type, pl, p->len);
		struct tg_jitem_charge ch = {0};
		if (c != NULL)
			memcpy(&ch, c, sizeof(ch));
		if (touch(x, r.acct, p->lsn, c != NULL, ch.balance + r.cost) != 0)
			return -1;
		const char *row[] = {vu(&v, p->lsn),
		                     vu(&v, r.acct),
		                     vi(&v, p->time / 1000),
		                     "cdr",
		                     vs(&v, p, pl, TG_JITEM_S_ID, true),
		                     vs(&v, p, pl, TG_JITEM_S_DEST, true),
		                     vs(&v, p, pl, TG_JITEM_S_PLAN, true),
		                     vs(&v, p, pl, TG_JITEM_S_PREFIX, false),
		                     category(r.category),
		                     vu(&v, c != NULL ? ch.reported : r.duration),
		                     c != NULL ? vu(&v, ch.billed) : NULL,
		                     c != NULL ? vi(&v, ch.per_min) : NULL,
		                     c != NULL ? vi(&v, ch.connect) : NULL,
		                     vi(&v, r.cost),
		                     c != NULL ? vi(&v, ch.balance) : NULL};
		return ldb_append(x->db, S_CALL, row);
	}
	case TG_JREC_CREDIT: {
		struct tg_jrec_credit r;
		memcpy(&r, pl, sizeof(r));
		const struct tg_jitem_credit *c = tg_journal_item_fixed(p->type, pl, p->len);
		uint32_t src = r.refill_seq != 0 ? TG_JCREDIT_REFILL : TG_JCREDIT_OPERATOR;
		if (c != NULL) {
			struct tg_jitem_credit
			    ic; /* payloads are packed: copy, never dereference */
			memcpy(&ic, c, sizeof(ic));
			src = ic.source;
		}
		if (touch(x, r.acct, p->lsn, true, r.balance - r.amount) != 0)
			return -1;
		const char *row[] = {vu(&v, p->lsn),
		                     vu(&v, r.acct),
		                     vi(&v, p->time / 1000),
		                     vi(&v, r.amount),
		                     vi(&v, r.balance),
		                     vs(&v, p, pl, TG_JITEM_S_ID, true),
		                     src == TG_JCREDIT_REFILL ? "refill" : "operator",
		                     vu(&v, r.refill_seq),
		                     vs(&v, p, pl, TG_JITEM_S_USER, true)};
		return ldb_append(x->db, S_CREDIT, row);
	}
	case TG_JREC_SET_BALANCE: {
		struct tg_jrec_set_balance r;
		memcpy(&r, pl, sizeof(r));
		if (touch(x, r.acct, p->lsn, true, r.balance - r.delta) != 0)
			return -1;
		return event(x, p, r.acct, "set_balance", vs(&v, p, pl, TG_JITEM_S_USER, true),
		             &r.balance, &r.delta, NULL, NULL, NULL);
	}
	case TG_JREC_SETTINGS: {
		struct tg_jrec_settings r;
		memcpy(&r, pl, sizeof(r));
		char plan[TG_JPLAN_NAME + 1];
		memcpy(plan, r.plan, TG_JPLAN_NAME);
		plan[TG_JPLAN_NAME] = '\0';
		int state = r.state;
		/* A postpaid account's credit limit shares the threshold's word (docs/SHM.md). */
		bool postpaid = (r.flags & TG_ACCT_POSTPAID) != 0;
		if (touch(x, r.acct, p->lsn, false, 0) != 0)
			return -1;
		const char *row[] = {vu(&v, r.acct),
		                     plan,
		                     vi(&v, state),
		                     vi(&v, postpaid ? 0 : r.threshold),
		                     vi(&v, r.refill_amount),
		                     vi(&v, r.refill_mode),
		                     postpaid ? "postpaid" : "prepaid",
		                     vi(&v, postpaid ? r.threshold : 0)};
		if (run(x, S_SETTINGS, 8, row) != 0)
			return -1;
		if (postpaid)
			snprintf(detail, sizeof(detail),
			         "kind=postpaid credit_limit=%" PRId64 " refill_mode=%u flags=%u",
			         r.threshold, r.refill_mode, r.flags);
		else
			snprintf(detail, sizeof(detail),
			         "threshold=%" PRId64 " refill_amount=%" PRId64
			         " refill_mode=%u flags=%u",
			         r.threshold, r.refill_amount, r.refill_mode, r.flags);
		return event(x, p, r.acct, "settings", vs(&v, p, pl, TG_JITEM_S_USER, true), NULL,
		             NULL, &state, plan, detail);
	}
	case TG_JREC_STANDING: {
		struct tg_jrec_standing r;
		memcpy(&r, pl, sizeof(r));
		int state = r.state;
		snprintf(detail, sizeof(detail), "%s failures=%u unpaid=%u",
		         tg_standing_event_name(r.event), r.failures, r.unpaid);
		if (touch(x, r.acct, p->lsn, false, 0) != 0)
			return -1;
		return event(x, p, r.acct, "standing", NULL, NULL, NULL, &state, NULL, detail);
	}
	case TG_JREC_REFILL_FIRED: {
		struct tg_jrec_refill_fired r;
		memcpy(&r, pl, sizeof(r));
		snprintf(detail, sizeof(detail), "request=%u charge=%" PRId64, r.refill_seq,
		         r.charge);
		if (touch(x, r.acct, p->lsn, false, 0) != 0)
			return -1;
		return event(x, p, r.acct, "refill_fired", NULL, &r.balance, NULL, NULL, NULL,
		             detail);
	}
	case TG_JREC_REFILL_CLEARED: {
		struct tg_jrec_refill_cleared r;
		memcpy(&r, pl, sizeof(r));
		snprintf(detail, sizeof(detail), "request=%u %s", r.refill_seq,
		         r.reason == TG_JREFILL_CREDITED ? "credited"
		         : r.reason == TG_JREFILL_FAILED ? "failed"
		                                         : "void");
		if (touch(x, r.acct, p->lsn, false, 0) != 0)
			return -1;
		return event(x, p, r.acct, "refill_cleared", NULL, NULL, NULL, NULL, NULL, detail);
	}
	case TG_JREC_LIMITS: {
		struct tg_jrec_limits r;
		memcpy(&r, pl, sizeof(r));
		/* docs/FRAUD.md: 0 is none; amounts in micro-units, as every money column. */
		snprintf(detail, sizeof(detail),
		         "max_calls=%u call_cap=%" PRId64 " daily_cap=%" PRId64 " low=%" PRId64,
		         r.max_calls, r.call_cap, r.daily_cap, r.low);
		if (touch(x, r.acct, p->lsn, false, 0) != 0)
			return -1;
		return event(x, p, r.acct, "limits", NULL, NULL, NULL, NULL, NULL, detail);
	}
	default:
		return 0;
	}
}

/* ---- the database: sets, transactions, reconnecting ---- */

static int
load_row(void *arg, unsigned nc, const char *const *vals)
{
	struct idset *s = arg;
	if (nc >= 1 && vals[0] != NULL)
		idset_add(s, strtoull(vals[0], NULL, 10));
	return 0;
}

/* Read the position and the account sets back from the database (start, and after a failure). */
static int
reload(struct exporter *x)
{
	idset_clear(&x->known);
	idset_clear(&x->opened);
	int64_t last = ledger_last_lsn(x->db);
	if (last < 0 ||
	    ldb_query(x->db, "SELECT acct FROM accounts", 0, NULL, load_row, &x->known) < 0 ||
	    ldb_query(x->db, "SELECT acct FROM accounts WHERE opening_balance IS NOT NULL", 0, NULL,
	              load_row, &x->opened) < 0)
		return -1;
	x->last = (uint64_t)last;
	return 0;
}

static int
prepare_all(struct exporter *x)
{
	for (unsigned i = 0; i < sizeof(rows_of) / sizeof(rows_of[0]); i++)
		if (ldb_prepare_rows(x->db, i, rows_of[i].table, rows_of[i].cols,
		                     rows_of[i].ncols) != 0)
			return -1;
	for (unsigned i = S_ACCT; i < sizeof(stmt_sql) / sizeof(stmt_sql[0]); i++)
		if (ldb_prepare(x->db, i,
		                i == S_OPEN_DEL ? open_del_sql[ldb_kind(x->db)] : stmt_sql[i]) != 0)
			return -1;
	return 0;
}

/*
 * Connect again until it works (PostgreSQL restarting, a file locked), then
 * re-read where the database stands: a COMMIT whose answer was lost may have
 * happened, and the position in the database says whether it did.
 */
static void
recover_db(struct exporter *x)
{
	unsigned wait_ms = 100;

	for (;;) {
		if (ldb_reconnect(x->db) == 0 && prepare_all(x) == 0 && reload(x) == 0)
			return;
		if (stopping)
			exit(1);
		fprintf(stderr, "tollexport: %s; trying again in %u ms\n", ldb_err(x->db), wait_ms);
		usleep(wait_ms * 1000);
		wait_ms = wait_ms < 5000 ? wait_ms * 2 : 5000;
	}
}

/* Write <dir>/ledger.pos: a temporary file renamed over it.  Never ahead of the database. */
static void
write_pos(struct exporter *x)
{
	char tmp[1200], path[1100], buf[32];

	snprintf(path, sizeof(path), "%s/%s", x->dir, TG_LEDGER_POS_FILE);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	int n = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", x->last);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	bool ok = fd >= 0 && write(fd, buf, (size_t)n) == n;
	if (fd >= 0)
		close(fd);
	ok = ok && rename(tmp, path) == 0;
	if (!ok && !x->pos_warned) {
		fprintf(
		    stderr,
		    "tollexport: cannot write %s (%s): the engine will not keep the journal for "
		    "this exporter\n",
		    path, strerror(errno));
		x->pos_warned = true;
	}
}

/*
 * Export pend[0..n) in one transaction with the new position.  On a
 * failure, roll back, reconnect and try again from what the database says
 * it holds.  Returns 0, or -1 on an error that retrying cannot fix.
 */
static int
export_batch(struct exporter *x, size_t n)
{
	for (unsigned tries = 0;; tries++) {
		size_t i = 0;
		while (i < n && x->pend[i].lsn <= x->last)
			i++; /* committed already (the answer to a COMMIT was lost) */
		if (i == n)
			return 0;
		struct vals v = {0};
		ldb_discard(x->db); /* rows of an attempt that failed before its flush */
		bool ok = ldb_exec(x->db, "BEGIN") == 0 && open_calls_load(x, i, n) == 0;
		for (size_t k = i; ok && k < n; k++)
			ok = ingest(x, &x->pend[k]) == 0;
		const char *pos[] = {vu(&v, x->pend[n - 1].lsn), vi(&v, now_us())};
		ok = ok && open_calls_store(x) == 0 && ldb_flush(x->db) == 0 &&
		     run(x, S_POS, 2, pos) == 0 && ldb_exec(x->db, "COMMIT") == 0;
		if (ok) {
			x->last = x->pend[n - 1].lsn;
			x->rows += n - i;
			write_pos(x);
			return 0;
		}
		fprintf(stderr, "tollexport: at LSN %" PRIu64 ": %s\n", x->pend[i].lsn,
		        ldb_err(x->db));
		bool lost = ldb_lost(x->db);
		ldb_exec(x->db, "ROLLBACK");
		if (!lost && tries >= 3)
			return -1;
		recover_db(x);
	}
}

/* ---- reading the journal ---- */

static void
pend_push(struct exporter *x, const struct tg_jrec *rec)
{
	if (x->arena_len + rec->len > x->arena_cap) {
		x->arena_cap = (x->arena_len + rec->len) * 2;
		x->arena = realloc(x->arena, x->arena_cap);
		if (x->arena == NULL) {
			fprintf(stderr, "tollexport: out of memory\n");
			exit(1);
		}
	}
	memcpy(x->arena + x->arena_len, rec->payload, rec->len);
	x->pend[x->npend++] = (struct pend){.lsn = rec->lsn,
	                                    .time = rec->time,
	                                    .type = rec->type,
	                                    .version = rec->version,
	                                    .len = rec->len,
	                                    .at = x->arena_len};
	x->arena_len += rec->len;
}

/* Export the pending records a CONFIRM covers (all of them in a version 1 segment). */
static int
drain(struct exporter *x, const struct tg_journal_pos *pos)
{
	size_t n = 0;
	while (n < x->npend && (x->pend[n].lsn <= pos->confirmed || pos->seg_version < 2))
		n++;
	if (n == 0)
		return 0;
	if (export_batch(x, n) != 0)
		return -1;
	/* Keep the rest, moved to the front (their payloads too). */
	size_t from = n < x->npend ? x->pend[n].at : x->arena_len;
	memmove(x->arena, x->arena + from, x->arena_len - from);
	x->arena_len -= from;
	for (size_t k = n; k < x->npend; k++) {
		x->pend[k - n] = x->pend[k];
		x->pend[k - n].at -= from;
	}
	x->npend -= n;
	return 0;
}

static int
note_gap(struct exporter *x, uint64_t first)
{
	struct vals v = {0};
	fprintf(stderr,
	        "tollexport: the journal now starts at LSN %" PRIu64 " but the ledger holds up to "
	        "%" PRIu64 ": LSNs %" PRIu64 "..%" PRIu64
	        " were pruned before they were exported (the engine's ledger-keep-max); recorded "
	        "in ledger_gaps\n",
	        first, x->last, x->last + 1, first - 1);
	const char *p[] = {vu(&v, x->last + 1), vu(&v, first - 1), vi(&v, now_us())};
	x->gaps++;
	return run(x, S_GAP, 3, p);
}

/*
 * One pass over the journal from the LSN after the database's: every
 * confirmed record exported.  0 at the end of what is there, -1 on an error.
 */
static int
pass(struct exporter *x)
{
	struct tg_journal_reader *r;
	struct tg_jrec rec;
	enum tg_journal_status st;
	int rc = 0;

	if (tg_journal_open_dir(&r, x->dir) != 0) {
		fprintf(stderr, "tollexport: cannot read the journal in %s: %s\n", x->dir,
		        strerror(errno));
		return -1;
	}
	tg_journal_seek(r, x->last + 1);
	bool first = true;
	x->npend = 0;
	x->arena_len = 0;
	while (!stopping && (st = tg_journal_next(r, &rec)) == TG_JOURNAL_OK) {
		if (rec.lsn <= x->last)
			continue;
		if (first && x->last > 0 && rec.lsn > x->last + 1 && note_gap(x, rec.lsn) != 0) {
			rc = -1;
			break;
		}
		first = false;
		pend_push(x, &rec);
		if (x->npend == x->batch && drain(x, tg_journal_where(r)) != 0) {
			rc = -1;
			break;
		}
		if (x->npend == x->batch) {
			/* A batch read past the last CONFIRM: the rest waits for the next pass. */
			st = TG_JOURNAL_END;
			break;
		}
	}
	if (rc == 0 && !stopping)
		rc = drain(x, tg_journal_where(r));
	/* A live journal ends in a torn or unconfirmed tail now and then: read again later. */
	if (rc == 0 && !stopping && st != TG_JOURNAL_END && st != TG_JOURNAL_TORN_TAIL &&
	    st != TG_JOURNAL_OK) {
		char why[600];
		tg_journal_describe(r, why, sizeof(why));
		fprintf(stderr, "tollexport: %s\n", why);
		rc = -1;
	}
	tg_journal_close(r);
	return rc;
}

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: tollexport --data-dir DIR [--db PATH|URI] [--follow] [--batch N] "
	        "[--poll-ms MS] [--quiet]\n"
	        "  Exports the journal of DIR into the ledger (docs/LEDGER.md), exactly once.\n"
	        "  --db       a SQLite file (default DIR/ledger.sqlite) or a PostgreSQL URI\n"
	        "             (postgresql://user@host:port/db)\n"
	        "  --follow   keep tailing the journal (otherwise: export up to now and exit)\n"
	        "  --batch    records per transaction (default 2000)\n"
	        "  --poll-ms  follow: milliseconds between looks at the journal (default 200)\n");
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"data-dir", required_argument, NULL, 'd'}, {"db", required_argument, NULL, 'b'},
	    {"follow", no_argument, NULL, 'f'},         {"batch", required_argument, NULL, 'n'},
	    {"poll-ms", required_argument, NULL, 'p'},  {"quiet", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
	struct exporter x = {.batch = 2000, .poll_ms = 200};
	char dbpath[1100], err[600];
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			x.dir = optarg;
			break;
		case 'b':
			x.target = optarg;
			break;
		case 'f':
			x.follow = true;
			break;
		case 'n':
			x.batch = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'p':
			x.poll_ms = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'q':
			x.quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (x.dir == NULL || optind != argc || x.batch == 0 || x.batch > 1000000) {
		usage(stderr);
		return 2;
	}
	if (x.target == NULL) {
		snprintf(dbpath, sizeof(dbpath), "%s/ledger.sqlite", x.dir);
		x.target = dbpath;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	/*
	 * Following, a database that is down or restarting at start is waited
	 * for like one lost later (the engine goes on meanwhile); in batch mode
	 * it is an error.
	 */
	for (unsigned wait_ms = 100;; wait_ms = wait_ms < 5000 ? wait_ms * 2 : 5000) {
		bool opened = x.db != NULL || ldb_open(&x.db, x.target, err, sizeof(err)) == 0;
		if (opened && ledger_migrate(x.db, err, sizeof(err)) == 0)
			break;
		bool lost = !opened ? ldb_kind_of(x.target) == LDB_PG : ldb_lost(x.db);
		fprintf(stderr, "tollexport: %s\n", err);
		if (!x.follow || !lost || stopping)
			return 1;
		usleep(wait_ms * 1000);
		if (x.db != NULL)
			ldb_reconnect(x.db);
	}
	x.pend = calloc(x.batch, sizeof(*x.pend));
	if (x.pend == NULL) {
		fprintf(stderr, "tollexport: out of memory\n");
		return 1;
	}
	if (prepare_all(&x) != 0 || reload(&x) != 0) {
		fprintf(stderr, "tollexport: %s\n", ldb_err(x.db));
		if (!x.follow || !ldb_lost(x.db))
			return 1;
		recover_db(&x);
	}
	uint64_t start = x.last;
	int rc;
	for (;;) {
		rc = pass(&x);
		if (!x.follow || stopping)
			break;
		if (rc != 0)
			sleep(1); /* damage or a database refusing: said above; looked at again */
		else
			usleep(x.poll_ms * 1000);
	}
	if (!x.quiet)
		printf("exported %" PRIu64 " records: LSN %" PRIu64 " to %" PRIu64 " into %s%s\n",
		       x.rows, start + (x.rows > 0), x.last, x.target,
		       x.gaps ? " (with a gap: see ledger_gaps)" : "");
	ldb_close(x.db);
	free(x.pend);
	free(x.arena);
	free(x.oc);
	free(x.oc_used);
	free(x.ostr);
	free(x.keys);
	idset_clear(&x.known);
	idset_clear(&x.opened);
	return rc == 0 ? 0 : 1;
}
