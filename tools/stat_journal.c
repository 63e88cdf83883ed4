/*
 * stat_journal.c - `tollstat verify --data-dir DIR`: the conservation check.
 *
 * Rebuilds every account from the data directory's newest snapshot and its
 * journal (tg_replay.h) and compares it with the live table
 * (tg_recover_compare).  The journal is the record; the table must say the
 * same.  On a running engine the table runs ahead of the journal by what
 * the workers applied since the last sync, so an account that differs is
 * looked at again, for about 2 s, and reported only if it still differs.
 * Each round takes a sample of the account, waits for the journal to catch
 * up, and reads the journal's new records one by one: if the account as the
 * journal has it passes through the sampled state, the table was only ahead.
 * A busy account (one changed by every batch of the workers) is never
 * quiet long enough to compare at rest, but it does pass through its
 * sampled state; a balance that no journal record explains never does.
 *
 * It must never write anything: not the segment (mapped read-only), not the
 * data directory (a torn tail is reported, never cut; no lock is taken), so
 * it can run beside the engine at any time.  It never trusts the journal's
 * growing tail: on a running engine it reads no further than the LSN the
 * engine says is on disk (the header's journal_lsn), read before the files.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "stat.h"
#include "tg_atomic.h"
#include "tg_clock.h"
#include "tg_recover.h"

/* Rounds of "read more journal, compare the differing accounts again" on a live engine. */
#define ROUNDS_MAX       20
#define ROUND_MS         50
#define ROUNDS_BUDGET_MS 2000
/* Tries of the first build on a live engine: a snapshot written meanwhile may prune files. */
#define BUILD_TRIES 3

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* The accounts that differ, each once, in the order found. */
struct idlist {
	uint64_t *v;
	size_t n, cap;
	bool oom;
};

static void
idlist_add(struct idlist *l, uint64_t id)
{
	if (l->n > 0 && l->v[l->n - 1] == id)
		return; /* one account's differences come one after another */
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 64;
		uint64_t *nv = realloc(l->v, ncap * sizeof(*nv));
		if (nv == NULL) {
			l->oom = true;
			return;
		}
		l->v = nv;
		l->cap = ncap;
	}
	l->v[l->n++] = id;
}

static void
collect(void *arg, const struct tg_recover_diff *d)
{
	idlist_add(arg, d->acct);
}

/* One differing account as the table had it at one moment. */
struct sample {
	bool present; /* in the table */
	struct tg_acct_view v;
	char plan[TG_PLAN_NAME_MAX + 1];
};

/* The accounts looked at again, sorted by id. */
struct watch {
	uint64_t id;
	struct sample s;
	bool matched;     /* the journal passed through the sample */
	unsigned changes; /* rounds in which its sample changed */
};

struct jctx {
	FILE *f;
	const struct stat_src *s;
	const char *dir;
	struct tg_replay r;
	bool running;
	uint64_t limit;   /* the LSN read up to (live engine), 0: the whole journal */
	unsigned printed; /* differences printed for the account at hand */
	char err[700];    /* why the journal could not be read */
};

/* "request 3 in flight", "request 3 answered", "no request fired": a negative v is in flight. */
static const char *
refill_text(int64_t v, char *buf, size_t len)
{
	if (v < 0)
		snprintf(buf, len, "request %" PRId64 " in flight", -v);
	else if (v == 0)
		snprintf(buf, len, "no request fired");
	else
		snprintf(buf, len, "request %" PRId64 " answered", v);
	return buf;
}

/* The settings that differ, field by field, from both sides read again. */
static void
print_settings(struct jctx *c, uint64_t id)
{
	const struct tg_racct *ra = tg_replay_acct(&c->r, id);
	const struct tg_acct *a = tg_table_find(&c->s->t, id);
	char m1[TG_MONEY_STR_MAX], m2[TG_MONEY_STR_MAX], p[TG_PLAN_NAME_MAX + 24];
	struct tg_acct_view v;
	const char *sep = "";

	if (ra == NULL || a == NULL)
		return;
	tg_acct_read(a, &v);
	fprintf(c->f, "differs: account %" PRIu64 ": settings:", id);
	if (ra->threshold != tg_acct_view_terms(&v)) {
		fprintf(c->f, "%s %s journal %s, live %s", sep,
		        (v.flags & TG_ACCT_POSTPAID) ? "credit limit" : "threshold",
		        stat_money(ra->threshold, m1), stat_money(tg_acct_view_terms(&v), m2));
		sep = ";";
	}
	if (ra->refill_mode != v.refill_mode || ra->refill_amount != v.refill_amount) {
		fprintf(c->f, "%s refill journal %s %s, live %s %s", sep,
		        stat_mode_name(ra->refill_mode), stat_money(ra->refill_amount, m1),
		        stat_mode_name(v.refill_mode), stat_money(v.refill_amount, m2));
		sep = ";";
	}
	if (ra->state != v.state) {
		fprintf(c->f, "%s state journal %s, live %s", sep, stat_state_name(ra->state),
		        stat_state_name(v.state));
		sep = ";";
	}
	if ((ra->flags ^ v.flags) & TG_ACCT_PAYMENT) {
		fprintf(c->f, "%s payment journal %s, live %s", sep,
		        (ra->flags & TG_ACCT_PAYMENT) ? "on" : "off",
		        (v.flags & TG_ACCT_PAYMENT) ? "on" : "off");
		sep = ";";
	}
	if (ra->flags != v.flags && !((ra->flags ^ v.flags) & TG_ACCT_PAYMENT)) {
		fprintf(c->f, "%s flags journal 0x%02x, live 0x%02x", sep, ra->flags, v.flags);
		sep = ";";
	}
	const char *live_plan = tg_plan_registry_name(&c->s->t.plans, v.plan);
	if (live_plan == NULL) {
		snprintf(p, sizeof(p), "#%u (not registered)", v.plan);
		live_plan = p;
	}
	if (strcmp(live_plan, tg_replay_plan_name(&c->r, ra->plan)) != 0) {
		fprintf(c->f, "%s plan journal '%s', live '%s'", sep,
		        tg_replay_plan_name(&c->r, ra->plan), live_plan);
		sep = ";";
	}
	if (sep[0] == '\0')
		fputs(" changed while being read", c->f);
	fputc('\n', c->f);
}

static void
print_diff(void *arg, const struct tg_recover_diff *d)
{
	struct jctx *c = arg;
	char m1[TG_MONEY_STR_MAX], m2[TG_MONEY_STR_MAX], b1[48], b2[48];

	c->printed++;
	if (strcmp(d->what, "settings") == 0) {
		print_settings(c, d->acct);
	} else if (strcmp(d->what, "refill") == 0) {
		fprintf(c->f, "differs: account %" PRIu64 ": refill: journal %s, live %s\n",
		        d->acct, refill_text(d->journal, b1, sizeof(b1)),
		        refill_text(d->live, b2, sizeof(b2)));
	} else if (strcmp(d->what, "missing") == 0) {
		fprintf(c->f,
		        "differs: account %" PRIu64
		        ": missing: in the journal (balance %s), not in "
		        "the table\n",
		        d->acct, stat_money(d->journal, m1));
	} else if (strcmp(d->what, "extra") == 0) {
		fprintf(c->f,
		        "differs: account %" PRIu64 ": extra: in the table (balance %s), never in "
		        "the journal\n",
		        d->acct, stat_money(d->live, m2));
	} else {
		/* balance, reserved: amounts */
		fprintf(c->f, "differs: account %" PRIu64 ": %s: journal %s, live %s\n", d->acct,
		        d->what, stat_money(d->journal, m1), stat_money(d->live, m2));
	}
}

static void
sum_balance(void *arg, const struct tg_racct *a)
{
	*(__int128 *)arg += a->balance;
}

/*
 * Read the journal after c->r.lsn up to limit (0: to its end).  0, or
 * STAT_EXIT_JOURNAL with the reason in c->err.  Damage past the limit on a
 * running engine is its write in progress, not damage: ignored.
 */
static int
read_journal(struct jctx *c, uint64_t limit, struct tg_replay_end *end)
{
	int rc = tg_replay_journal(&c->r, c->dir, limit, false, end);

	if (rc == 0 && limit != 0 && c->r.lsn < limit) {
		/* The engine said these records are on disk: this is not its journal, or not all.
		 */
		if (end->status == TG_JOURNAL_TORN_TAIL)
			snprintf(c->err, sizeof(c->err),
			         "%s, but the engine on %s has written up to LSN %" PRIu64
			         " (journal_lsn)",
			         end->msg, c->s->name, limit);
		else
			snprintf(c->err, sizeof(c->err),
			         "the journal in %s ends at LSN %" PRIu64
			         ", but the engine on %s has "
			         "written up to LSN %" PRIu64 " (journal_lsn): is %s its data-dir?",
			         c->dir, c->r.lsn, c->s->name, limit, c->dir);
		return STAT_EXIT_JOURNAL;
	}
	if (rc == 0 || (c->running && limit != 0 && c->r.lsn >= limit))
		return 0;
	if (end->msg[0] != '\0')
		snprintf(c->err, sizeof(c->err), "%s", end->msg);
	else
		snprintf(c->err, sizeof(c->err), "cannot read the journal in %s: %s", c->dir,
		         strerror(-rc));
	return STAT_EXIT_JOURNAL;
}

/* The state from the newest snapshot and the journal: 0 or STAT_EXIT_JOURNAL (c->err). */
static int
build(struct jctx *c, char *note, size_t notelen, struct tg_replay_end *end)
{
	const struct tg_shm_hdr *h = c->s->t.hdr;
	int rc = tg_replay_init(&c->r);

	if (rc == 0)
		rc = tg_snapshot_load(&c->r, c->dir, note, notelen);
	if (rc != 0) {
		snprintf(c->err, sizeof(c->err), "cannot load a snapshot from %s: %s", c->dir,
		         strerror(-rc));
		return STAT_EXIT_JOURNAL;
	}
	if (!c->running) {
		/* Nothing grows: the whole journal, as the next start will read it. */
		c->limit = 0;
		return read_journal(c, 0, end);
	}
	/*
	 * What the engine has on disk, read after the snapshot (the snapshot thread
	 * writes only what is on disk, so a snapshot is never past it) and before
	 * the journal (records past it may be half written: never read).
	 */
	c->limit = tg_load_64(&h->journal_lsn);
	if (c->r.lsn > c->limit) {
		snprintf(c->err, sizeof(c->err),
		         "the snapshot in %s is at LSN %" PRIu64 ", past the LSN the engine on %s "
		         "has written (%" PRIu64 "): is %s its data-dir?",
		         c->dir, c->r.lsn, c->s->name, c->limit, c->dir);
		return STAT_EXIT_JOURNAL;
	}
	memset(end, 0, sizeof(*end));
	if (c->limit == c->r.lsn)
		return 0; /* nothing to read (limit 0 would mean "to the end") */
	return read_journal(c, c->limit, end);
}

/* Does dir hold a journal segment or a snapshot?  0, or -errno. */
static int
holds_journal(const char *dir, bool *yes)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	uint64_t lsn;

	*yes = false;
	if (d == NULL)
		return -errno;
	while (!*yes && (e = readdir(d)) != NULL)
		*yes = tg_journal_seg_name_parse(e->d_name, &lsn) ||
		       (strncmp(e->d_name, "snapshot-", 9) == 0 &&
		        strlen(e->d_name) == TG_SNAP_NAME_LEN - 1 &&
		        strcmp(e->d_name + TG_SNAP_NAME_LEN - 5, ".tgs") == 0);
	closedir(d);
	return 0;
}

static void
take_sample(const struct jctx *c, uint64_t id, struct sample *out)
{
	const struct tg_acct *a = tg_table_find(&c->s->t, id);

	memset(out, 0, sizeof(*out));
	if (a == NULL)
		return;
	out->present = true;
	tg_acct_read(a, &out->v);
	const char *plan = tg_plan_registry_name(&c->s->t.plans, out->v.plan);
	snprintf(out->plan, sizeof(out->plan), "%s", plan ? plan : "");
}

static bool
same_sample(const struct sample *a, const struct sample *b)
{
	return a->present == b->present && a->v.balance == b->v.balance &&
	       a->v.reserved == b->v.reserved && a->v.refill_seq == b->v.refill_seq &&
	       a->v.refill_inflight == b->v.refill_inflight && a->v.threshold == b->v.threshold &&
	       a->v.credit_limit == b->v.credit_limit && a->v.refill_amount == b->v.refill_amount &&
	       a->v.state == b->v.state && a->v.refill_mode == b->v.refill_mode &&
	       a->v.flags == b->v.flags && strcmp(a->plan, b->plan) == 0;
}

/*
 * Is the journal's account (NULL: unknown to it) what the sample shows?  The
 * fields tg_recover_compare compares, and only those: keep the two alike.
 */
static bool
journal_is(const struct jctx *c, const struct tg_racct *ra, const struct sample *s)
{
	if (ra == NULL || !s->present)
		return ra == NULL && !s->present;
	return ra->balance == s->v.balance && ra->reserved == s->v.reserved &&
	       ra->refill_seq == s->v.refill_seq &&
	       (ra->refill_seq > ra->refill_done) == s->v.refill_inflight &&
	       ra->threshold == tg_acct_view_terms(&s->v) &&
	       ra->refill_amount == s->v.refill_amount && ra->state == s->v.state &&
	       ra->refill_mode == s->v.refill_mode && ra->flags == s->v.flags &&
	       strcmp(tg_replay_plan_name(&c->r, ra->plan), s->plan) == 0;
}

static int
cmp_watch(const void *a, const void *b)
{
	uint64_t x = ((const struct watch *)a)->id, y = ((const struct watch *)b)->id;
	return x < y ? -1 : x > y;
}

static struct watch *
find_watch(struct watch *w, size_t n, uint64_t id)
{
	struct watch key = {.id = id};
	return bsearch(&key, w, n, sizeof(*w), cmp_watch);
}

/*
 * Apply the journal's records after c->r.lsn up to limit, one at a time,
 * and after each one that names a watched account, see whether the journal
 * now shows what its sample showed.  The same reading as tg_replay_journal
 * (which applies a range at once); 0 or STAT_EXIT_JOURNAL (c->err).
 */
static int
replay_watching(struct jctx *c, uint64_t limit, struct watch *w, size_t n)
{
	struct tg_journal_reader *jr;
	enum tg_journal_status st = TG_JOURNAL_OK;
	struct tg_jrec rec;
	int rc = tg_journal_open_dir(&jr, c->dir);

	if (rc != 0) {
		snprintf(c->err, sizeof(c->err), "cannot read the journal in %s: %s", c->dir,
		         strerror(-rc));
		return STAT_EXIT_JOURNAL;
	}
	if (tg_journal_segments(jr) > 0 && tg_journal_segment_lsn(jr, 0) > c->r.lsn + 1) {
		snprintf(c->err, sizeof(c->err),
		         "the journal in %s now starts at LSN %" PRIu64 ", after LSN %" PRIu64
		         " read so far: segments were removed while it was read",
		         c->dir, tg_journal_segment_lsn(jr, 0), c->r.lsn);
		tg_journal_close(jr);
		return STAT_EXIT_JOURNAL;
	}
	while (c->r.lsn < limit && (st = tg_journal_next(jr, &rec)) == TG_JOURNAL_OK) {
		uint64_t acct;
		if (rec.lsn <= c->r.lsn)
			continue;
		rc = tg_replay_apply(&c->r, &rec);
		if (rc != 0) {
			snprintf(c->err, sizeof(c->err), "cannot apply LSN %" PRIu64 ": %s",
			         rec.lsn, strerror(-rc));
			tg_journal_close(jr);
			return STAT_EXIT_JOURNAL;
		}
		c->r.lsn = rec.lsn;
		c->r.records++;
		/* Every record type begins with the account it changes. */
		if (rec.len < sizeof(acct))
			continue;
		memcpy(&acct, rec.payload, sizeof(acct));
		struct watch *x = find_watch(w, n, acct);
		if (x != NULL && !x->matched && journal_is(c, tg_replay_acct(&c->r, acct), &x->s))
			x->matched = true;
	}
	if (c->r.lsn < limit) {
		/* Records the engine says are on disk and the reader cannot give. */
		if (st == TG_JOURNAL_END)
			snprintf(c->err, sizeof(c->err),
			         "the journal in %s ends at LSN %" PRIu64 ", but the engine has "
			         "written up to LSN %" PRIu64 " (journal_lsn): was it cut or moved "
			         "while the engine ran?",
			         c->dir, c->r.lsn, limit);
		else
			tg_journal_describe(jr, c->err, sizeof(c->err));
		tg_journal_close(jr);
		return STAT_EXIT_JOURNAL;
	}
	tg_journal_close(jr);
	return 0;
}

/*
 * On a running engine: look again at the accounts in ids, up to ROUNDS_MAX
 * rounds or ROUNDS_BUDGET_MS.  Each round samples them, waits for the
 * journal to catch up with the sample, and reads it on, record by record.
 * ids keeps those never matched.  0 or STAT_EXIT_JOURNAL (c->err).
 */
static int
settle(struct jctx *c, struct idlist *ids, unsigned *rounds)
{
	struct watch *w = calloc(ids->n, sizeof(*w));
	uint64_t t0 = tg_mono_ms();
	size_t n = ids->n;
	int rc = 0;

	if (w == NULL) {
		ids->oom = true;
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		w[i].id = ids->v[i];
		take_sample(c, w[i].id, &w[i].s);
	}
	qsort(w, n, sizeof(*w), cmp_watch);
	while (n > 0 && *rounds < ROUNDS_MAX && tg_mono_ms() - t0 < ROUNDS_BUDGET_MS) {
		(*rounds)++;
		if (*rounds > 1) {
			for (size_t i = 0; i < n; i++) {
				struct sample was = w[i].s;
				take_sample(c, w[i].id, &w[i].s);
				w[i].changes += !same_sample(&was, &w[i].s);
			}
		}
		/* The state as of now, before more is read: the account may simply be at rest. */
		for (size_t i = 0; i < n; i++)
			w[i].matched = journal_is(c, tg_replay_acct(&c->r, w[i].id), &w[i].s);
		/* Let the workers' batches of the sample's moment reach the disk. */
		sleep_ms(ROUND_MS);
		uint64_t limit = tg_load_64(&c->s->t.hdr->journal_lsn);
		if (limit > c->r.lsn) {
			rc = replay_watching(c, limit, w, n);
			if (rc != 0)
				break;
			c->limit = limit;
		}
		size_t keep = 0;
		for (size_t i = 0; i < n; i++)
			if (!w[i].matched)
				w[keep++] = w[i];
		n = keep;
	}
	for (size_t i = 0; i < n; i++) {
		ids->v[i] = w[i].id;
		if (*rounds > 1 && w[i].changes + 1 >= *rounds)
			fprintf(
			    c->f,
			    "note: account %" PRIu64 " changed in every round (a busy account): "
			    "what follows may be the table running ahead; run verify again when it "
			    "is quieter\n",
			    w[i].id);
	}
	ids->n = n;
	free(w);
	return rc;
}

int
stat_verify_journal(FILE *f, const struct stat_src *s, const char *dir)
{
	const struct tg_shm_hdr *h = s->t.hdr;
	int32_t pid = (int32_t)tg_load_32((const uint32_t *)&h->writer_pid);
	struct jctx c = {.f = f, .s = s, .dir = dir, .running = stat_pid_alive(pid)};
	struct idlist ids = {0};
	struct tg_replay_end end;
	char note[1024] = "", m[48];
	bool any;
	int rc;

	rc = holds_journal(dir, &any);
	if (rc != 0) {
		fprintf(stderr, "tollstat: --data-dir %s: %s\n", dir, strerror(-rc));
		return STAT_EXIT_JOURNAL;
	}
	if (!any) {
		fprintf(stderr,
		        "tollstat: --data-dir %s holds no journal segment and no snapshot: is it "
		        "the data-dir of the engine on %s?\n",
		        dir, s->name);
		return STAT_EXIT_JOURNAL;
	}
	/* A snapshot written meanwhile prunes old snapshots and segments: build again. */
	for (int k = 0; k < BUILD_TRIES; k++) {
		if (k > 0) {
			tg_replay_free(&c.r);
			sleep_ms(ROUND_MS);
		}
		rc = build(&c, note, sizeof(note), &end);
		if (rc == 0 || !c.running)
			break;
	}
	if (rc != 0) {
		fprintf(stderr, "tollstat: %s\n", c.err);
		tg_replay_free(&c.r);
		return rc;
	}
	uint64_t snap_lsn = c.r.from, jlsn = tg_load_64(&h->journal_lsn);
	uint64_t clean = tg_load_64(&h->clean_lsn);
	if (note[0] != '\0')
		fprintf(f, "note: %s\n", note);
	if (!c.running) {
		uint64_t was = clean != 0 ? clean : jlsn;
		if (end.status == TG_JOURNAL_TORN_TAIL)
			fprintf(f,
			        "note: %s (read-only: nothing was cut; the next start cuts it)\n",
			        end.msg);
		if (was != 0 && was != c.r.lsn)
			fprintf(
			    f,
			    "note: the journal ends at LSN %" PRIu64 ", the engine %s LSN %" PRIu64
			    ": %s\n",
			    c.r.lsn, clean != 0 ? "stopped cleanly at" : "had written up to", was,
			    c.r.lsn < was ? "records were cut or lost since, and the accounts they "
			                    "changed differ"
			                  : "records were written after (by another engine?)");
	}
	if (c.r.anomalies != 0)
		fprintf(f,
		        "note: %" PRIu64
		        " journal records named calls not in progress (replayed as "
		        "best they could be)\n",
		        c.r.anomalies);

	tg_recover_compare(&c.r, &s->t, collect, &ids);
	unsigned rounds = 0;
	if (c.running && ids.n > 0 && !ids.oom)
		rc = settle(&c, &ids, &rounds);
	if (ids.oom) {
		fprintf(stderr, "tollstat: out of memory for the list of accounts that differ\n");
		free(ids.v);
		tg_replay_free(&c.r);
		return STAT_EXIT_IO;
	}
	if (rc != 0) {
		fprintf(stderr, "tollstat: %s\n", c.err);
		free(ids.v);
		tg_replay_free(&c.r);
		return rc;
	}
	uint64_t differ = 0;
	for (size_t i = 0; i < ids.n; i++) {
		c.printed = 0;
		if (tg_recover_compare_one(&c.r, &s->t, ids.v[i], print_diff, &c) == 0)
			continue; /* caught up at the last look */
		if (c.printed == 0) {
			/* In the table, never named by the journal: compare_one says so silently.
			 */
			struct tg_recover_diff d = {.acct = ids.v[i], .what = "extra"};
			const struct tg_acct *a = tg_table_find(&s->t, ids.v[i]);
			struct tg_acct_view v = {0};
			if (a != NULL)
				tg_acct_read(a, &v);
			d.live = v.balance;
			print_diff(&c, &d);
		}
		differ++;
	}

	if (differ > 0 && c.running && c.limit == 0)
		fprintf(f,
		        "note: the engine on %s has journaled nothing (journal_lsn 0): does it run "
		        "with durability off, or with another data-dir?\n",
		        s->name);
	__int128 total = 0;
	tg_replay_each_acct(&c.r, sum_balance, &total);
	fprintf(f,
	        "conservation: %zu accounts of the journal compared at LSN %" PRIu64
	        " (snapshot at LSN %" PRIu64 " + %" PRIu64 " records replayed",
	        c.r.accts.n, c.r.lsn, snap_lsn, c.r.records);
	if (c.running)
		fprintf(f, "; engine running, %u rounds", rounds);
	fprintf(f, "): %" PRIu64 " differ; balances total %s\n", differ, stat_money128(total, m));
	free(ids.v);
	tg_replay_free(&c.r);
	return differ ? STAT_EXIT_FOUND : STAT_EXIT_OK;
}
