/*
 * idstore.c - the id window's disk tier: which runs exist, moving ids into
 * them, finding ids in them, merging and dropping them.
 *
 * Owns the list of open runs (newest first) behind a read-write lock:
 * workers take it shared for a lookup, which reads the disk and is rare (a
 * replay of an id on disk, or a filter's false positive); the snapshot
 * thread takes it exclusive only to swap the list.  It never deletes a run
 * file while a reader may hold it, and never takes an id out of memory
 * before the run holding it is on disk and in the list, so a worker always
 * finds a remembered id in one tier or the other (docs/JOURNAL.md, "Id
 * runs").
 *
 * A run's name carries the watermark of the move that made it:
 * ids-<LSN, 16 hex>-<cut, 8 hex>-<sequence, 8 hex>.tgi: every id of a record
 * at or before LSN first seen before cut (Unix seconds) was moved by then.
 * A merged run takes the newest input's LSN and cut and a new sequence.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ck_pr.h>

#include "tg_assert.h"
#include "tg_datadir.h"
#include "tg_atomic.h"
#include "tg_idrun.h"
#include "tg_idstore.h"
#include "tg_log.h"

#define IDSTORE_MAGIC 0x69647374u /* "idst" */
/* "ids-" 16 "-" 8 "-" 8 ".tgi" and its NUL. */
#define RUN_NAME_LEN 43

struct run {
	struct tg_idrun *r;
	uint64_t lsn;
	uint32_t cut, seq;
};

struct tg_idstore {
	uint32_t magic;
	struct tg_idstore_cfg cfg;
	char dir[512];
	pthread_rwlock_t lock; /* runs, nruns: shared to read them, exclusive to swap */
	struct run *runs;      /* newest first */
	size_t nruns;
	uint32_t seq; /* the next run's sequence */
	/*
	 * Every id first seen before this (Unix seconds) may have been forgotten
	 * before its time (a run cut: ids-disk-max, the disk): 0 when none was.
	 * Kept in FORGOT_NAME; written by the snapshot thread, read by workers.
	 */
	uint32_t forgot;
};

/* The watermark of ids forgotten before their time, in the data directory. */
#define FORGOT_NAME "ids-forgot"

static int forgot_load(struct tg_idstore *s, char *err, size_t errlen);

static void
count(struct tg_idstore *s, enum tg_counter c, uint64_t n)
{
	if (s->cfg.stats != NULL && n > 0)
		ck_pr_faa_64(&s->cfg.stats->counter[c], n);
}

static void
run_name(char name[RUN_NAME_LEN], uint64_t lsn, uint32_t cut, uint32_t seq)
{
	snprintf(name, RUN_NAME_LEN, "ids-%016" PRIx64 "-%08" PRIx32 "-%08" PRIx32 ".tgi", lsn, cut,
	         seq);
}

static bool
hex(const char *p, int n, uint64_t *out)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++) {
		char c = p[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return false;
		v = v << 4 | d;
	}
	*out = v;
	return true;
}

static bool
run_name_parse(const char *name, struct run *out)
{
	uint64_t lsn, cut, seq;
	if (strlen(name) != RUN_NAME_LEN - 1 || memcmp(name, "ids-", 4) != 0 || name[20] != '-' ||
	    name[29] != '-' || strcmp(name + 38, ".tgi") != 0)
		return false;
	if (!hex(name + 4, 16, &lsn) || !hex(name + 21, 8, &cut) || !hex(name + 30, 8, &seq))
		return false;
	out->lsn = lsn;
	out->cut = (uint32_t)cut;
	out->seq = (uint32_t)seq;
	out->r = NULL;
	return true;
}

/* Newest first: by LSN, then by sequence. */
static int
run_cmp(const void *a, const void *b)
{
	const struct run *x = a, *y = b;
	if (x->lsn != y->lsn)
		return x->lsn < y->lsn ? 1 : -1;
	return x->seq < y->seq ? 1 : x->seq > y->seq ? -1 : 0;
}

/* The runs named in dir, newest first, not opened.  0 or -errno. */
static int
list_runs(const char *dir, struct run **out, size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t cap = 0;

	*out = NULL;
	*n = 0;
	if (d == NULL)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d)) != NULL) {
		struct run r;
		if (!run_name_parse(e->d_name, &r))
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			struct run *nv = realloc(*out, cap * sizeof(*nv));
			if (nv == NULL) {
				closedir(d);
				free(*out);
				*out = NULL;
				return -ENOMEM;
			}
			*out = nv;
		}
		(*out)[(*n)++] = r;
	}
	closedir(d);
	if (*n > 1)
		qsort(*out, *n, sizeof(**out), run_cmp);
	return 0;
}

int
tg_idstore_watermark(const char *dir, uint64_t *lsn, uint32_t *cut)
{
	struct run *runs;
	size_t n;
	int rc = list_runs(dir, &runs, &n);

	*lsn = 0;
	*cut = 0;
	if (rc != 0)
		return rc;
	/* The newest move's pair says the most that is certain (see the top of the file). */
	if (n > 0) {
		*lsn = runs[0].lsn;
		*cut = runs[0].cut;
	}
	free(runs);
	return 0;
}

/* The lookup hook (tg_idem_disk): newest run first; no stripe is held. */
static int
find_hook(void *arg, struct tg_digest d, struct tg_idem_rec *rec)
{
	struct tg_idstore *s = arg;
	struct tg_idrun_ent e;
	int rc = 0;

	count(s, TG_C_ids_disk_reads, 1);
	pthread_rwlock_rdlock(&s->lock);
	for (size_t i = 0; i < s->nruns && rc == 0; i++)
		rc = tg_idrun_find(s->runs[i].r, d, &e);
	pthread_rwlock_unlock(&s->lock);
	if (rc == 1)
		*rec = (struct tg_idem_rec){.fingerprint = e.fingerprint,
		                            .reply = e.reply,
		                            .seen = e.seen,
		                            .result = (uint8_t)e.result};
	return rc;
}

/* Ids a move prefetches ahead of the one it moves (tg_idem_prefetch). */
#define MOVE_AHEAD 8
/* Threads that rebuild the filters at start-up, at most. */
#define LOADERS_MAX 4

/*
 * Keys a start-up loader gathers before it adds them (tg_idem_filter_load):
 * enough for each stripe's filter to take hundreds at once while it is in
 * the cache; 2 x 32 MiB of buffers a loader.
 */
#define LOAD_BATCH (1u << 22)

/* One start-up loader: the stripes part mod parts, from every run. */
struct loader {
	struct tg_idstore *s;
	unsigned part, parts;
	uint64_t *keys, *scratch; /* LOAD_BATCH each */
	size_t n;
	uint64_t full; /* keys that found no room */
	int rc;
	size_t bad; /* the run that failed, when rc != 0 */
	pthread_t th;
	bool started;
};

static int
load_flush(struct loader *l)
{
	uint64_t full;
	int rc = tg_idem_filter_load(l->s->cfg.ids, l->keys, l->n, l->scratch, &full);

	l->full += full;
	l->n = 0;
	return rc;
}

static int
load_keys(void *arg, const uint64_t *lo, size_t n)
{
	struct loader *l = arg;
	unsigned mask = (unsigned)tg_idem_stripes(l->s->cfg.ids) - 1;
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++) {
		if (((unsigned)lo[i] & mask) % l->parts != l->part)
			continue;
		l->keys[l->n++] = lo[i];
		if (l->n == LOAD_BATCH)
			rc = load_flush(l);
	}
	return rc;
}

static void *
loader_run(void *arg)
{
	struct loader *l = arg;

	l->keys = malloc(LOAD_BATCH * sizeof(*l->keys));
	l->scratch = malloc(LOAD_BATCH * sizeof(*l->scratch));
	if (l->keys == NULL || l->scratch == NULL)
		l->rc = -ENOMEM;
	for (size_t i = 0; i < l->s->nruns && l->rc == 0; i++) {
		l->rc = tg_idrun_each_keys(l->s->runs[i].r, load_keys, l);
		l->bad = i;
	}
	if (l->rc == 0 && l->n > 0)
		l->rc = load_flush(l);
	free(l->keys);
	free(l->scratch);
	return NULL;
}

/*
 * Rebuild the filters from the keys of every open run, on up to
 * LOADERS_MAX threads (one per core), each owning the stripes of one
 * residue (stripe mod threads), so that no stripe lock is needed: a
 * restart waits for this.  Before any worker runs.  0, or the first run's error with *bad
 * set to it.
 */
static int
load_filters(struct tg_idstore *s, size_t *bad)
{
	struct loader l[LOADERS_MAX];
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned parts = cpus < 1 ? 1 : cpus > LOADERS_MAX ? LOADERS_MAX : (unsigned)cpus;
	int rc = 0;

	if (s->nruns == 0)
		return 0;
	for (unsigned p = 0; p < parts; p++) {
		l[p] = (struct loader){.s = s, .part = p, .parts = parts};
		if (p > 0)
			l[p].started = pthread_create(&l[p].th, NULL, loader_run, &l[p]) == 0;
	}
	loader_run(&l[0]);
	for (unsigned p = 1; p < parts; p++) {
		if (l[p].started)
			pthread_join(l[p].th, NULL);
		else
			loader_run(&l[p]);
	}
	for (unsigned p = 0; p < parts; p++) {
		count(s, TG_C_ids_filter_full, l[p].full);
		if (l[p].rc != 0 && (rc == 0 || l[p].bad < *bad)) {
			rc = l[p].rc;
			*bad = l[p].bad;
		}
	}
	return rc;
}

/* Start-up cannot go on without run i: say so after what err holds, and what to do. */
static void
unreadable(const struct tg_idstore *s, size_t i, int rc, char *err, size_t errlen)
{
	char name[RUN_NAME_LEN];
	size_t used = strlen(err);

	run_name(name, s->runs[i].lsn, s->runs[i].cut, s->runs[i].seq);
	snprintf(err + used, errlen - used,
	         "%sids: run %s/%s cannot be read (%s): its ids would be charged again "
	         "if replayed.  Restore it from a backup, or move it aside (ids-*.tgi."
	         "damaged) to start without it",
	         used ? "; " : "", s->dir, name, strerror(-rc));
}

int
tg_idstore_open(struct tg_idstore **out, const struct tg_idstore_cfg *cfg, char *err, size_t errlen)
{
	struct tg_idstore *s = calloc(1, sizeof(*s));
	int rc;

	*out = NULL;
	if (s == NULL)
		return -ENOMEM;
	s->magic = IDSTORE_MAGIC;
	s->cfg = *cfg;
	snprintf(s->dir, sizeof(s->dir), "%s", cfg->dir);
	s->cfg.dir = s->dir;
	pthread_rwlock_init(&s->lock, NULL);
	rc = list_runs(s->dir, &s->runs, &s->nruns);
	if (rc != 0) {
		snprintf(err, errlen, "ids: cannot list %s: %s", s->dir, strerror(-rc));
		goto fail;
	}
	rc = forgot_load(s, err, errlen);
	if (rc != 0)
		goto fail;
	struct tg_idem_disk hook = {.find = find_hook, .arg = s};
	rc = tg_idem_set_disk(cfg->ids, &hook, cfg->disk_max);
	if (rc != 0) {
		snprintf(err, errlen,
		         "ids: cannot allocate the disk tier's filters for %" PRIu64 " ids: %s",
		         cfg->disk_max, strerror(-rc));
		goto fail;
	}
	for (size_t i = 0; i < s->nruns; i++) {
		char name[RUN_NAME_LEN];
		run_name(name, s->runs[i].lsn, s->runs[i].cut, s->runs[i].seq);
		rc = tg_idrun_open(&s->runs[i].r, s->dir, name, err, errlen);
		if (rc != 0) {
			unreadable(s, i, rc, err, errlen);
			goto fail;
		}
		if (s->runs[i].seq >= s->seq)
			s->seq = s->runs[i].seq + 1;
	}
	size_t bad = 0;
	err[0] = '\0';
	rc = load_filters(s, &bad);
	if (rc != 0) {
		unreadable(s, bad, rc, err, errlen);
		goto fail;
	}
	*out = s;
	return 0;
fail:
	tg_idstore_close(s);
	return rc;
}

void
tg_idstore_close(struct tg_idstore *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->nruns; i++)
		tg_idrun_close(s->runs[i].r);
	free(s->runs);
	pthread_rwlock_destroy(&s->lock);
	s->magic = 0;
	free(s);
}

/* ---- moving ids out of memory ---- */

struct take {
	struct tg_idrun_ent *ents;
	size_t n, cap;
	uint32_t cut, oldest;
	bool failed;
	/* Ids that could not move (their filter was full), sorted: they stay in the state. */
	struct tg_idrun_ent *kept;
	size_t nkept;
};

static void
take_id(void *arg, const struct tg_rid *d)
{
	struct take *t = arg;
	if (d->seen >= t->cut || d->seen < t->oldest || t->failed)
		return;
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 4096;
		struct tg_idrun_ent *nv = realloc(t->ents, cap * sizeof(*nv));
		if (nv == NULL) {
			t->failed = true;
			return;
		}
		t->ents = nv;
		t->cap = cap;
	}
	t->ents[t->n++] = (struct tg_idrun_ent){.lo = d->id.lo,
	                                        .hi = d->id.hi,
	                                        .fingerprint = d->fingerprint,
	                                        .reply = d->reply,
	                                        .seen = d->seen,
	                                        .result = d->result};
}

static int
ent_cmp(const void *a, const void *b)
{
	const struct tg_idrun_ent *x = a, *y = b;
	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	return x->hi < y->hi ? -1 : x->hi > y->hi;
}

/*
 * Every id take_id took moved, but for the few in kept: all of them leave
 * the state, and so do ids past the horizon.  O(1) an id but for a search
 * of kept, which is empty unless a filter filled up.
 */
static bool
moved_id(void *arg, const struct tg_rid *d)
{
	const struct take *t = arg;
	if (d->seen < t->oldest)
		return true;
	if (d->seen >= t->cut)
		return false;
	struct tg_idrun_ent key = {.lo = d->id.lo, .hi = d->id.hi};
	return t->nkept == 0 || bsearch(&key, t->kept, t->nkept, sizeof(key), ent_cmp) == NULL;
}

/* Open dir/name and put it first in the list. */
static int
publish(struct tg_idstore *s, const char *name, struct run r, char *err, size_t errlen)
{
	int rc = tg_idrun_open(&r.r, s->dir, name, err, errlen);
	if (rc != 0)
		return rc;
	struct run *nv = malloc((s->nruns + 1) * sizeof(*nv));
	if (nv == NULL) {
		tg_idrun_close(r.r);
		return -ENOMEM;
	}
	nv[0] = r;
	if (s->nruns > 0)
		memcpy(nv + 1, s->runs, s->nruns * sizeof(*nv));
	pthread_rwlock_wrlock(&s->lock);
	struct run *old = s->runs;
	s->runs = nv;
	s->nruns++;
	pthread_rwlock_unlock(&s->lock);
	free(old);
	return 0;
}

/* Fingerprints of ids leaving the disk (merged away, past the horizon) leave the filters. */
static void
dropped_ent(void *arg, const struct tg_idrun_ent *e)
{
	struct tg_idstore *s = arg;
	tg_idem_unmoved(s->cfg.ids, e->lo);
}

static int
unmove_key(void *arg, uint64_t lo)
{
	struct tg_idstore *s = arg;
	tg_idem_unmoved(s->cfg.ids, lo);
	return 0;
}

/*
 * Take runs [from, nruns) out of the list, close them and delete their
 * files (nobody reads them once the exclusive lock was had), after their
 * fingerprints left the filters when unfilter.
 */
static void
retire(struct tg_idstore *s, size_t from, bool unfilter)
{
	size_t n = s->nruns;
	struct run *gone = malloc((n - from) * sizeof(*gone));
	if (gone == NULL)
		return; /* kept: nothing is lost, the merge is tried again later */
	memcpy(gone, s->runs + from, (n - from) * sizeof(*gone));
	pthread_rwlock_wrlock(&s->lock);
	s->nruns = from;
	pthread_rwlock_unlock(&s->lock);
	for (size_t i = 0; i < n - from; i++) {
		char name[RUN_NAME_LEN], path[600];
		if (unfilter)
			(void)tg_idrun_each_key(gone[i].r, unmove_key, s);
		run_name(name, gone[i].lsn, gone[i].cut, gone[i].seq);
		tg_idrun_close(gone[i].r);
		snprintf(path, sizeof(path), "%s/%s", s->dir, name);
		unlink(path);
	}
	free(gone);
}

/* A run's size class: runs of one class are merged FANOUT at a time. */
static unsigned
level_of(uint64_t count)
{
	unsigned l = 0;
	for (uint64_t c = count / TG_IDSTORE_LEVEL_BASE; c >= TG_IDSTORE_FANOUT;
	     c /= TG_IDSTORE_FANOUT)
		l++;
	return l;
}

/*
 * Merge runs at[0..k) (positions in the list, newest first, ascending) into
 * one that takes the place of the newest of them, dropping ids past the
 * horizon (their fingerprints leave the filters as the merge finds them; the
 * inputs still answer meanwhile).  Then the inputs are closed and deleted.
 */
static int
merge(struct tg_idstore *s, const size_t *at, size_t k, uint32_t horizon_start, char *err,
      size_t errlen)
{
	struct tg_idrun *in[TG_IDSTORE_FANOUT];
	struct run gone[TG_IDSTORE_FANOUT];
	struct run m = {.lsn = s->runs[at[0]].lsn, .cut = s->runs[at[0]].cut, .seq = s->seq++};
	char name[RUN_NAME_LEN];
	struct tg_idrun_meta meta;
	uint64_t before = 0;

	TG_ASSERT(k >= 2 && k <= TG_IDSTORE_FANOUT);
	for (size_t i = 0; i < k; i++) {
		in[i] = s->runs[at[i]].r;
		gone[i] = s->runs[at[i]];
		before += tg_idrun_meta(in[i])->count;
	}
	run_name(name, m.lsn, m.cut, m.seq);
	int rc =
	    tg_idrun_merge(s->dir, name, in, k, horizon_start, dropped_ent, s, &meta, err, errlen);
	if (rc == 0)
		rc = tg_idrun_open(&m.r, s->dir, name, err, errlen);
	struct run *nv = rc == 0 ? malloc(s->nruns * sizeof(*nv)) : NULL;
	if (rc == 0 && nv == NULL) {
		tg_idrun_close(m.r);
		rc = -ENOMEM;
	}
	if (rc != 0)
		return rc;
	size_t n = 0;
	for (size_t i = 0, g = 0; i < s->nruns; i++) {
		if (g < k && i == at[g]) {
			if (g++ == 0)
				nv[n++] = m;
			continue;
		}
		nv[n++] = s->runs[i];
	}
	pthread_rwlock_wrlock(&s->lock);
	struct run *old = s->runs;
	s->runs = nv;
	s->nruns = n;
	pthread_rwlock_unlock(&s->lock);
	free(old);
	for (size_t i = 0; i < k; i++) {
		char path[600];
		run_name(name, gone[i].lsn, gone[i].cut, gone[i].seq);
		tg_idrun_close(gone[i].r);
		snprintf(path, sizeof(path), "%s/%s", s->dir, name);
		unlink(path);
	}
	count(s, TG_C_ids_expired, before - meta.count);
	return 0;
}

/*
 * Keep the runs few and the writing bounded (size-tiered, as LSM stores do):
 * TG_IDSTORE_FANOUT runs of one size class merge into one of the next, up to
 * a full-size run (ids-disk-max / TG_IDSTORE_RUNS_FULL ids), which merges no
 * further.  So each id is rewritten at most about
 * log4(ids-disk-max / 16 / TG_IDSTORE_LEVEL_BASE) times, however many ids
 * the disk holds: the merging per new id is the same with 10M ids on disk
 * as with 100M (uncapped, the merges into ever larger runs made each new id
 * cost more as the disk filled), and a replay reads at most about 16
 * full-size runs and a few small ones.  Runs wholly past the horizon go as they
 * are; past ids-disk-max the oldest runs go first.
 */
/*
 * Read FORGOT_NAME into s->forgot (none: 0).  -EPROTO, with a sentence in
 * err, when it is there but not a number: a watermark that cannot be read
 * must not be taken for none.
 */
static int
forgot_load(struct tg_idstore *s, char *err, size_t errlen)
{
	char path[600], text[32];
	unsigned long v;
	char *end;

	snprintf(path, sizeof(path), "%s/" FORGOT_NAME, s->dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "ids: cannot read %s: %s", path, strerror(errno));
		return -errno;
	}
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	text[n > 0 ? n : 0] = '\0';
	errno = 0;
	v = strtoul(text, &end, 10);
	if (n <= 0 || end == text || (*end != '\n' && *end != '\0') || errno != 0 ||
	    v > UINT32_MAX) {
		snprintf(err, errlen,
		         "ids: %s is damaged (not a Unix time): it says before when ids may have "
		         "been forgotten; write the time of the last \"forgetting the oldest run\" "
		         "line of the log into it, or remove it to assume none was",
		         path);
		return -EPROTO;
	}
	s->forgot = (uint32_t)v;
	return 0;
}

/*
 * The oldest run goes before its time (why: ids-disk-max, the disk): every
 * id in it is forgotten, so a CDR of a call that started before its newest
 * id was first seen may be one of them, and CDR ... AT refuses those with
 * STALE (tg_idstore_forgot).  The watermark is written down before the run
 * goes, so a restart knows it too.
 */
static void
forget_oldest(struct tg_idstore *s, const char *why)
{
	const struct tg_idrun_meta *m = tg_idrun_meta(s->runs[s->nruns - 1].r);
	uint32_t before = m->seen_max + 1;

	tg_log("ids: %s: forgetting the oldest run (%" PRIu64 " ids first seen from %" PRIu32
	       " to %" PRIu32 "): the horizon is shorter than ids-window, and a CDR ... AT "
	       "before %" PRIu32 " is STALE",
	       why, m->count, m->seen_min, m->seen_max, before);
	count(s, TG_C_ids_horizon_cut, m->count);
	if (before > s->forgot) {
		char text[16];
		int n = snprintf(text, sizeof(text), "%" PRIu32 "\n", before);
		int rc = tg_datadir_write(s->dir, FORGOT_NAME, text, (size_t)n);
		if (rc != 0)
			tg_log("ids: cannot write %s/" FORGOT_NAME
			       " (%s): the watermark holds until a restart",
			       s->dir, strerror(-rc));
		tg_store_32(&s->forgot, before);
	}
	retire(s, s->nruns - 1, true);
}

uint32_t
tg_idstore_forgot(const struct tg_idstore *s)
{
	return s != NULL ? tg_load_32((uint32_t *)&s->forgot) : 0;
}

static int
compact(struct tg_idstore *s, uint32_t now, char *err, size_t errlen)
{
	uint32_t horizon_start = now > s->cfg.horizon ? now - s->cfg.horizon : 0;
	uint64_t full = s->cfg.disk_max / TG_IDSTORE_RUNS_FULL;

	while (s->nruns > 0 && tg_idrun_meta(s->runs[s->nruns - 1].r)->seen_max < horizon_start) {
		count(s, TG_C_ids_expired, tg_idrun_meta(s->runs[s->nruns - 1].r)->count);
		retire(s, s->nruns - 1, true);
	}
	for (;;) {
		size_t at[TG_IDSTORE_FANOUT], k = 0;
		/*
		 * The newest class with FANOUT runs, full-size runs left out; too
		 * many runs at all: the newest FANOUT.
		 */
		for (unsigned l = 0; l < 32 && k < TG_IDSTORE_FANOUT; l++) {
			k = 0;
			for (size_t i = 0; i < s->nruns && k < TG_IDSTORE_FANOUT; i++) {
				uint64_t n = tg_idrun_meta(s->runs[i].r)->count;
				if (n < full && level_of(n) == l)
					at[k++] = i;
			}
		}
		if (k < TG_IDSTORE_FANOUT && s->nruns > TG_IDSTORE_RUNS_MAX)
			for (k = 0; k < TG_IDSTORE_FANOUT; k++)
				at[k] = k;
		else if (k < TG_IDSTORE_FANOUT)
			break;
		int rc = merge(s, at, k, horizon_start, err, errlen);
		if (rc != 0)
			return rc;
	}
	/*
	 * Below the disk reserve the horizon gets shorter, the oldest run first:
	 * the journal's room is worth more than the memory of a month-old id.
	 */
	if (s->nruns > 0 && s->cfg.low_space != NULL && s->cfg.low_space(s->cfg.low_space_arg)) {
		char why[600];
		snprintf(why, sizeof(why), "%s is below disk-reserve", s->dir);
		forget_oldest(s, why); /* one a move: the space measurement lags the deletion */
	}
	/* Past ids-disk-max the horizon gets shorter, the oldest run first. */
	while (s->nruns > 1 && tg_idem_on_disk(s->cfg.ids) > s->cfg.disk_max) {
		char why[160];
		snprintf(why, sizeof(why), "%" PRIu64 " ids on disk, above ids-disk-max %" PRIu64,
		         tg_idem_on_disk(s->cfg.ids), s->cfg.disk_max);
		forget_oldest(s, why);
	}
	return 0;
}

int
tg_idstore_spill(struct tg_idstore *s, struct tg_replay *state, uint32_t cut, uint32_t now,
                 char *err, size_t errlen)
{
	TG_CHECK_OBJ_NOTNULL(s, IDSTORE_MAGIC);
	struct take t = {.cut = cut, .oldest = now > s->cfg.horizon ? now - s->cfg.horizon : 0};
	struct run r = {.lsn = state->lsn, .cut = cut, .seq = s->seq};
	char name[RUN_NAME_LEN];
	struct tg_idrun_meta meta = {.lsn_from = state->spill_lsn + 1, .lsn_to = state->lsn};
	int rc;

	tg_replay_each_id(state, take_id, &t);
	if (t.failed) {
		free(t.ents);
		snprintf(err, errlen, "ids: out of memory gathering the ids to move");
		return -ENOMEM;
	}
	if (t.n > 0) {
		run_name(name, r.lsn, r.cut, r.seq);
		rc = tg_idrun_write(s->dir, name, t.ents, t.n, &meta, err, errlen);
		if ((rc == -ENOSPC || rc == -EDQUOT) && s->nruns > 0) {
			/* The disk is full: the oldest ids make room for the newest, once. */
			char why[80];
			snprintf(why, sizeof(why), "no room on disk for %zu ids", t.n);
			forget_oldest(s, why);
			rc = tg_idrun_write(s->dir, name, t.ents, t.n, &meta, err, errlen);
		}
		if (rc == 0)
			rc = publish(s, name, r, err, errlen);
		if (rc != 0) {
			free(t.ents);
			return rc;
		}
		s->seq++;
		/*
		 * On disk and findable: now out of memory, one id at a time.  One
		 * that cannot move stays in memory and in the state (kept, sorted as
		 * ents is, at ents' front: i never passes a slot not yet read).
		 */
		uint64_t moved = 0;
		for (size_t i = 0; i < t.n; i++) {
			struct tg_digest d = {.lo = t.ents[i].lo, .hi = t.ents[i].hi};
			if (i + MOVE_AHEAD < t.n)
				tg_idem_prefetch(s->cfg.ids, (struct tg_digest){
				                                 .lo = t.ents[i + MOVE_AHEAD].lo,
				                                 .hi = t.ents[i + MOVE_AHEAD].hi});
			if (tg_idem_moved(s->cfg.ids, d) != 0) {
				count(s, TG_C_ids_filter_full, 1);
				t.ents[t.nkept++] = t.ents[i];
				continue;
			}
			moved++;
		}
		t.kept = t.ents;
		count(s, TG_C_ids_moved, moved);
		rc = tg_replay_ids_drop(state, moved_id, &t);
		if (rc != 0) {
			free(t.ents);
			snprintf(err, errlen, "ids: out of memory dropping the moved ids");
			return rc;
		}
	}
	free(t.ents);
	state->spill_lsn = state->lsn;
	state->spill_cut = cut;
	return compact(s, now, err, errlen);
}

void
tg_idstore_info(struct tg_idstore *s, struct tg_idstore_info *out)
{
	memset(out, 0, sizeof(*out));
	if (s == NULL)
		return;
	pthread_rwlock_rdlock(&s->lock);
	out->runs = s->nruns;
	for (size_t i = 0; i < s->nruns; i++) {
		const struct tg_idrun_meta *m = tg_idrun_meta(s->runs[i].r);
		char name[RUN_NAME_LEN], path[600];
		struct stat st;
		run_name(name, s->runs[i].lsn, s->runs[i].cut, s->runs[i].seq);
		snprintf(path, sizeof(path), "%s/%s", s->dir, name);
		out->ids += m->count;
		if (stat(path, &st) == 0)
			out->disk_bytes += (uint64_t)st.st_size;
		out->ram_bytes += tg_idrun_ram(s->runs[i].r);
		if (m->count > 0 && (out->oldest == 0 || m->seen_min < out->oldest))
			out->oldest = m->seen_min;
	}
	pthread_rwlock_unlock(&s->lock);
	out->ram_bytes += tg_idem_filter_bytes(s->cfg.ids);
}
