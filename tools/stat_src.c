/*
 * stat_src.c - tollstat's view of the segment: attaching read-only, noticing
 * a new segment or a new engine, and taking snapshots.
 *
 * Owns the read-only mapping and tollstat's private memory of each slot's
 * spend (the top list).  It must never write to the segment (the mapping is
 * PROT_READ: a write would fault), never wait on the engine, and reads every
 * field the engine changes with an atomic load.  The snapshot is not one
 * atomic picture of the table — the engine keeps running while it is taken —
 * but each account in it is read consistently.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "stat.h"
#include "tg_atomic.h"
#include "tg_clock.h"
#include "tg_rate.h"

/*
 * The identity (device, inode) of the file the name stands for now.
 * Returns 0, or -errno with a sentence in err.
 */
static int
seg_id(const char *name, dev_t *dev, ino_t *ino, char *err, size_t errlen)
{
	struct stat st;
	int fd, rc = 0;

	fd = shm_open(name, O_RDONLY, 0);
	if (fd < 0) {
		rc = -errno;
		if (rc == -ENOENT)
			snprintf(err, errlen, "no shm segment %s: is the engine running?", name);
		else
			snprintf(err, errlen, "cannot open shm segment %s: %s", name,
			         strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot stat shm segment %s: %s", name, strerror(-rc));
	} else {
		*dev = st.st_dev;
		*ino = st.st_ino;
	}
	close(fd);
	return rc;
}

static void
note_writer(struct stat_src *s)
{
	s->generation = tg_load_64(&s->t.hdr->generation);
	s->pid = (int32_t)tg_load_32((uint32_t *)&s->t.hdr->writer_pid);
}

int
stat_src_open(struct stat_src *s, const char *name)
{
	memset(s, 0, sizeof(*s));
	s->name = name;
	/* The file mapped must be the one identified: one made anew in between is retried. */
	for (int tries = 0; tries < 3; tries++) {
		dev_t d1, d2;
		ino_t i1, i2;
		int rc = seg_id(name, &d1, &i1, s->err, sizeof(s->err));
		if (rc != 0)
			return rc;
		rc = tg_table_attach(&s->t, name, s->err, sizeof(s->err));
		if (rc != 0)
			return rc;
		rc = seg_id(name, &d2, &i2, s->err, sizeof(s->err));
		if (rc == 0 && d1 == d2 && i1 == i2) {
			s->dev = d1;
			s->ino = i1;
			note_writer(s);
			return 0;
		}
		tg_table_close(&s->t);
	}
	snprintf(s->err, sizeof(s->err), "shm segment %s keeps being replaced", name);
	return -EAGAIN;
}

void
stat_src_close(struct stat_src *s)
{
	tg_table_close(&s->t);
}

/* Map s's segment again; on failure s stays as it was, with the reason in s->err. */
static bool
remap(struct stat_src *s)
{
	struct stat_src n;

	if (stat_src_open(&n, s->name) != 0) {
		memcpy(s->err, n.err, sizeof(s->err));
		return false;
	}
	stat_src_close(s);
	*s = n;
	return true;
}

enum stat_change
stat_src_refresh(struct stat_src *s)
{
	dev_t dev;
	ino_t ino;

	if (seg_id(s->name, &dev, &ino, s->err, sizeof(s->err)) != 0)
		return STAT_LOST;
	if (s->t.base == NULL || dev != s->dev || ino != s->ino)
		return remap(s) ? STAT_NEW_SEGMENT : STAT_LOST;

	uint64_t gen = tg_load_64(&s->t.hdr->generation);
	int32_t pid = (int32_t)tg_load_32((uint32_t *)&s->t.hdr->writer_pid);
	/* A writer that attaches bumps the generation; one going away only clears its pid. */
	if (gen != s->generation || (pid != s->pid && pid != 0))
		return remap(s) ? STAT_NEW_ENGINE : STAT_LOST;
	s->pid = pid;
	return STAT_SAME;
}

bool
stat_pid_alive(int32_t pid)
{
	/* EPERM: it runs, as another user. */
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

int
stat_spend_reset(struct stat_spend *sp, const struct stat_src *s)
{
	uint64_t slots = s->t.slots;

	sp->primed = false;
	if (sp->prev != NULL && sp->slots == slots)
		return 0;
	free(sp->prev);
	sp->prev = calloc(slots, sizeof(*sp->prev));
	sp->slots = sp->prev ? slots : 0;
	return sp->prev ? 0 : -ENOMEM;
}

void
stat_spend_free(struct stat_spend *sp)
{
	free(sp->prev);
	memset(sp, 0, sizeof(*sp));
}

/* Put (id, slot, spent) into the top list of n, kept sorted by spend, largest first. */
static void
top_offer(struct stat_snap *n, unsigned ntop, uint64_t id, uint64_t slot, tg_money_t spent)
{
	unsigned i;

	if (spent <= 0 || ntop == 0)
		return;
	if (n->ntop == ntop && spent <= n->top[ntop - 1].spent)
		return;
	i = n->ntop < ntop ? n->ntop++ : ntop - 1;
	while (i > 0 && n->top[i - 1].spent < spent) {
		n->top[i] = n->top[i - 1];
		i--;
	}
	n->top[i] = (struct stat_top){.id = id, .slot = slot, .spent = spent};
}

/*
 * What account slot u's usage record says it was charged, all categories;
 * saturating like each category, so eight totals at the top do not wrap.
 */
static int64_t
spend_of(const struct tg_usage *u)
{
	int64_t sum = 0;
	for (unsigned c = 0; c < TG_CATEGORIES_MAX; c++)
		sum = tg_money_add_sat(sum, (int64_t)tg_load_64((const uint64_t *)&u->charged[c]));
	return sum;
}

/*
 * One pass over every slot: the account line of each, its refill record and,
 * with ntop, its usage line.  This is the cost of a refresh on a big table
 * (docs/TOOLS.md): 64 bytes per slot, 96 more per account.
 */
static void
scan(const struct tg_table *t, struct stat_snap *n, struct stat_spend *sp, unsigned ntop)
{
	bool interval = sp != NULL && sp->primed && sp->slots == t->slots;
	uint64_t t0 = tg_clock_ns(CLOCK_MONOTONIC);

	for (uint64_t i = 0; i < t->slots; i++) {
		const struct tg_slot *sl = &t->slot[i];
		uint64_t key = tg_load_64(&sl->acct.key), hold;
		int64_t balance;

		if (key == 0)
			continue;
		n->used++;
		tg_acct_read_money(&sl->acct, &balance, &hold);
		n->balance += balance;
		n->reserved += (int64_t)(hold & TG_HOLD_RESERVED);
		n->calls += tg_load_32(&sl->acct.calls);
		if (hold & TG_HOLD_REFILL)
			n->inflight++;
		/* Pending as INFO counts it: a record being written, waiting, or in the pipeline.
		 */
		uint8_t st = TG_RTAG_STATE(tg_load_64(&t->refills[i].tag));
		if (st == TG_RREC_WRITING || st == TG_RREC_PENDING || st == TG_RREC_QUEUED)
			n->pending++;
		if (ntop == 0)
			continue;
		int64_t spent = spend_of(&sl->usage);
		if (sp != NULL && sp->slots == t->slots) {
			int64_t was = sp->prev[i];
			sp->prev[i] = spent;
			if (interval)
				top_offer(n, ntop, key - 1, i, spent - was);
		} else if (sp == NULL) {
			top_offer(n, ntop, key - 1, i, spent);
		}
	}
	if (sp != NULL && sp->slots == t->slots)
		sp->primed = true;
	n->top_interval = interval;
	n->scan_ns = tg_clock_ns(CLOCK_MONOTONIC) - t0;
}

void
stat_snap_take(const struct stat_src *s, struct stat_snap *n, struct stat_spend *sp, unsigned ntop,
               bool scan_slots)
{
	const struct tg_table *t = &s->t;
	struct tg_shm_hdr *h = t->hdr;

	memset(n, 0, sizeof(*n));
	if (ntop > STAT_TOP_MAX)
		ntop = STAT_TOP_MAX;
	n->top_want = ntop;
	n->now = (int64_t)(tg_clock_ns(CLOCK_REALTIME) / 1000000000u);
	n->mono_ns = tg_clock_ns(CLOCK_MONOTONIC);
	n->generation = tg_load_64(&h->generation);
	n->writer_pid = (int32_t)tg_load_32((uint32_t *)&h->writer_pid);
	n->running = stat_pid_alive(n->writer_pid);
	n->created = h->created;
	n->started = (int64_t)tg_load_64((uint64_t *)&h->started);
	n->workers = tg_load_32(&h->workers);
	n->plan_count = tg_plan_registry_live(&t->plans); /* free slots not counted */
	n->capacity = h->capacity;
	n->slots = h->slots;
	n->count = tg_load_64(&h->count);

	/*
	 * The charged_* counters follow the table's own in the enum: a segment
	 * with another number of counters puts other meanings at these indexes.
	 */
	n->seg_counters = h->counters;
	n->counters_ok = h->counters == TG_COUNTER__COUNT;
	if (n->counters_ok)
		for (unsigned c = 0; c < TG_COUNTER__COUNT; c++)
			n->counter[c] = tg_stats_counter(t->stats, h->stats_blocks, c);
	for (unsigned k = 0; k < TG_HIST__COUNT; k++)
		tg_stats_hist(t->stats, h->stats_blocks, k, &n->hist[k]);
	if (scan_slots)
		scan(t, n, sp, ntop);
}
