/*
 * jwriter.c - the journal's writer: staging, group commit, segments.
 *
 * Owns the open segment, the two encode buffers and the one io_uring the
 * journal's I/O goes through.  Only the flusher (one thread at a time, any
 * thread) touches the file and the ring; everything else happens under mu in
 * memory.  See tg_jwriter.h for the protocol and docs/JOURNAL.md for why.
 *
 * It also keeps the disk's books: room, the bytes the journal can still
 * append, is measured (free space plus the segment's preallocated blocks)
 * every 100 ms under mu while no write is in flight, and counted down by
 * every commit in between, so a burst between two measurements cannot run
 * the disk dry.  Admission compares that room, less what the workers have
 * staged, with the floor of each class of change; a write must never meet a
 * full disk, because a failed write stops the engine.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <ck_pr.h>

#include "tg_assert.h"
#include "tg_atomic.h"
#include "tg_clock.h"
#include "tg_jwriter.h"
#include "tg_log.h"

#define JW_MAGIC       0x4a575231u /* "JWR1" */
#define BUFFER_DEFAULT (8u << 20)
#define SPACE_CHECK_MS 100
/* Every buffer starts with room for the CONFIRM record a flush may lead with. */
#define HEAD TG_JOURNAL_CONFIRM_SIZE
/*
 * Room no admitted change may take: a new segment's header block and
 * directory entry, file-system metadata, the changes other workers admit
 * between their check and their staging (one command each).
 */
#define DISK_SLACK (64u << 10)
/* A reserve above this is as good as infinite (and keeps the sums in int64_t). */
#define RESERVE_MAX (1ull << 60)
/* A segment that could not be made is tried again after this long. */
#define ROTATE_RETRY_MS 1000
/* The process stops with this status when the journal cannot be written. */
#define EXIT_JOURNAL 3

struct tg_jw {
	uint32_t magic;
	struct tg_jw_cfg cfg;
	char dir[512];
	int dirfd;
	int fd;                        /* the segment appended to */
	char seg[TG_JOURNAL_NAME_LEN]; /* its name */
	uint64_t seg_off;              /* its size: where the next write goes */
	struct io_uring ring;
	bool ring_ok;

	pthread_mutex_t mu;
	pthread_cond_t cv;   /* a flush finished */
	pthread_cond_t tick; /* wakes the writer's thread early (close) */
	char *fill, *spare;  /* records encoded, not yet written; the other buffer */
	size_t fill_len, cap;
	uint64_t fill_last; /* LSN of the last record in fill */
	uint64_t next_lsn;  /* the next LSN handed out */
	uint64_t synced;    /* last LSN written and synced, not yet confirmed when > durable */
	uint64_t durable;   /* last LSN confirmed on disk: what may be acknowledged; atomics */
	bool flushing;
	uint64_t last_flush_ms;

	pthread_t thread;
	bool thread_started, stop;
	/* Told, with mu held, each time durable moves (tg_jw_on_durable). */
	void (*on_durable)(void *arg, uint64_t lsn);
	void *on_durable_arg;

	/* The disk's books.  room and free_bytes are written under mu, read by anyone. */
	int64_t room __attribute__((aligned(64))); /* bytes appendable, less those encoded */
	uint64_t free_bytes;                       /* the file system's, at the last check */
	uint64_t held;                             /* mu: taken by other files (tg_jw_hold) */
	uint64_t next_check_ms;                    /* mu: when the disk is measured again */
	int64_t fast; /* room above which every class is admitted at once */
	struct tg_jstage *stages[TG_JW_STAGES_MAX]; /* added before the workers run */
	unsigned nstages; /* atomic: the writer's thread already runs when stages are added */
	uint64_t rotate_retry_ms; /* flusher: a failed rotation is tried again then; 0: none */
	enum tg_jw_disk logged;   /* the writer's thread: the state last logged */
};

int
tg_durability_parse(const char *s)
{
	if (strcmp(s, "durable") == 0)
		return TG_DURABLE;
	if (strcmp(s, "relaxed") == 0)
		return TG_RELAXED;
	if (strcmp(s, "off") == 0)
		return TG_NOJOURNAL;
	return -1;
}

const char *
tg_durability_name(enum tg_durability d)
{
	return d == TG_DURABLE ? "durable" : d == TG_RELAXED ? "relaxed" : "off";
}

static void
count(struct tg_jw *jw, enum tg_counter c, uint64_t n)
{
	if (jw->cfg.stats != NULL)
		ck_pr_faa_64(&jw->cfg.stats->counter[c], n);
}

/*
 * The journal cannot be written: nothing more may be acknowledged, and a
 * retried write or fsync cannot be trusted.  Stop the whole process now,
 * saying what, where and what to do; the replies of the batch are never sent.
 */
__attribute__((noreturn)) static void
fatal(struct tg_jw *jw, const char *what, int err)
{
	tg_log("journal: %s %s/%s at offset %llu failed: %s. Stopping now: changes that cannot "
	       "be recorded are never acknowledged. Free space or fix the disk, then start "
	       "tollgated again: it recovers from the journal (a torn last record is cut off).",
	       what, jw->dir, jw->seg, (unsigned long long)jw->seg_off, strerror(err));
	_exit(EXIT_JOURNAL);
}

/* Write all of buf at off, then fdatasync, linked in one submission. */
static void
write_sync(struct tg_jw *jw, const char *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		struct io_uring_sqe *w = io_uring_get_sqe(&jw->ring);
		struct io_uring_sqe *s = io_uring_get_sqe(&jw->ring);
		struct io_uring_cqe *cqe;
		int wres = 0, sres = 0;

		TG_ASSERT(w != NULL && s != NULL);
		io_uring_prep_write(w, jw->fd, buf + done, (unsigned)(len - done),
		                    jw->seg_off + done);
		w->flags |= IOSQE_IO_LINK;
		w->user_data = 1;
		/* Linked: the sync starts only after the whole write completed. */
		io_uring_prep_fsync(s, jw->fd, IORING_FSYNC_DATASYNC);
		s->user_data = 2;
		int rc = io_uring_submit_and_wait(&jw->ring, 2);
		if (rc < 0)
			fatal(jw, "submitting the write of", -rc);
		for (int i = 0; i < 2; i++) {
			rc = io_uring_wait_cqe(&jw->ring, &cqe);
			if (rc < 0)
				fatal(jw, "waiting for the write of", -rc);
			if (cqe->user_data == 1)
				wres = cqe->res;
			else
				sres = cqe->res;
			io_uring_cqe_seen(&jw->ring, cqe);
		}
		if (wres < 0)
			fatal(jw, "write to", -wres);
		if (wres == 0)
			fatal(jw, "write to", ENOSPC);
		done += (size_t)wres;
		/* A short write cancels the linked sync: write the rest, sync again. */
		if (sres < 0 && sres != -ECANCELED)
			fatal(jw, "fdatasync of", -sres);
		if (sres == -ECANCELED && done == len)
			fatal(jw, "fdatasync of", ECANCELED);
	}
}

/*
 * Create segment first_lsn: header written and synced under a temporary
 * name, then renamed.  On failure *placed says whether the rename happened:
 * if not, nothing changed and the current segment can still be appended to.
 */
static int
seg_create(struct tg_jw *jw, uint64_t first_lsn, bool *placed, char *err, size_t errlen)
{
	char name[TG_JOURNAL_NAME_LEN], tmp[TG_JOURNAL_NAME_LEN + 8];
	struct tg_jseg_hdr h;
	struct statvfs sv;
	int fd;

	*placed = false;
	tg_journal_seg_name(name, first_lsn);
	snprintf(tmp, sizeof(tmp), "%s.new", name);
	fd = openat(jw->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		goto fail;
	tg_journal_seg_header(&h, first_lsn, (int64_t)time(NULL));
	if (pwrite(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
		if (errno == 0)
			errno = ENOSPC;
		goto fail_fd;
	}
	/*
	 * Take the segment's blocks now, so appends within it do not find the disk
	 * full.  Only from space above the reserve: blocks held by the journal are
	 * no longer free for a snapshot.  Best effort: a file system without it
	 * still works; the room is counted either way.
	 */
	if (fstatvfs(fd, &sv) == 0 &&
	    (uint64_t)sv.f_bavail * sv.f_frsize >= jw->cfg.segment_size + jw->cfg.disk_reserve)
		(void)fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)jw->cfg.segment_size);
	if (fsync(fd) != 0 || renameat(jw->dirfd, tmp, jw->dirfd, name) != 0)
		goto fail_fd;
	*placed = true;
	if (fsync(jw->dirfd) != 0)
		goto fail_fd;
	if (jw->fd >= 0)
		close(jw->fd);
	jw->fd = fd;
	memcpy(jw->seg, name, sizeof(name));
	jw->seg_off = sizeof(h);
	return 0;
fail_fd:;
	int e = errno;
	close(fd);
	unlinkat(jw->dirfd, tmp, 0);
	errno = e;
fail:
	snprintf(err, errlen, "journal: cannot create segment %s/%s: %s", jw->dir, name,
	         strerror(errno));
	return -errno;
}

/*
 * A new segment for first_lsn, or, on a full disk, none for now: the engine
 * comes up refusing changes.  The full last segment takes the appends
 * meanwhile (its size is a target, not a limit), or the first write makes
 * the segment.
 */
static int
seg_open_new(struct tg_jw *jw, uint64_t first_lsn, char *err, size_t errlen)
{
	bool placed;
	int rc = seg_create(jw, first_lsn, &placed, err, errlen);
	if (rc == 0 || placed || (rc != -ENOSPC && rc != -EDQUOT))
		return rc;
	tg_log("%s: %s", err,
	       jw->fd >= 0 ? "appending to the last segment past journal-segment-size until a new "
	                     "one can be made"
	                   : "the segment will be made by the first write");
	return 0;
}

/* Open the last segment for appending when it is the one next_lsn continues; else a new one. */
static int
seg_open_last(struct tg_jw *jw, uint64_t next_lsn, char *err, size_t errlen)
{
	DIR *d = fdopendir(dup(jw->dirfd));
	uint64_t best = 0, lsn;
	bool found = false;
	struct dirent *e;
	struct stat st;

	if (d == NULL) {
		snprintf(err, errlen, "journal: cannot list %s: %s", jw->dir, strerror(errno));
		return -errno;
	}
	while ((e = readdir(d)) != NULL)
		if (tg_journal_seg_name_parse(e->d_name, &lsn) && lsn <= next_lsn &&
		    (!found || lsn > best)) {
			best = lsn;
			found = true;
		}
	closedir(d);
	if (found) {
		char name[TG_JOURNAL_NAME_LEN];
		tg_journal_seg_name(name, best);
		int fd = openat(jw->dirfd, name, O_RDWR | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) != 0) {
			snprintf(err, errlen, "journal: cannot open %s/%s: %s", jw->dir, name,
			         strerror(errno));
			if (fd >= 0)
				close(fd);
			return -errno;
		}
		/*
		 * A segment with no whole header holds no record: start over in its
		 * place.  A segment of an older format is left as it is (a segment's
		 * records are all of its header's version).  Otherwise append, even
		 * to a full one: its last records may be unconfirmed, and
		 * confirm_open writes their CONFIRM there before rotating.
		 */
		struct tg_jseg_hdr h;
		if ((uint64_t)st.st_size < TG_JOURNAL_HDR_SIZE) {
			close(fd);
			unlinkat(jw->dirfd, name, 0);
		} else if (pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
		           h.version == TG_JOURNAL_VERSION) {
			jw->fd = fd;
			memcpy(jw->seg, name, sizeof(name));
			jw->seg_off = (uint64_t)st.st_size;
			return 0;
		} else {
			close(fd);
		}
	}
	return seg_open_new(jw, next_lsn, err, errlen);
}

/*
 * With mu held and no flush running: measure the disk and set the room from
 * it.  Everything encoded is then either in the file (and in the
 * measurement) or in fill; what is held for other files is not room.
 */
static void
measure(struct tg_jw *jw)
{
	struct statvfs sv;
	struct stat st;
	int64_t prealloc = 0;

	TG_ASSERT(!jw->flushing);
	jw->next_check_ms = tg_mono_ms() + SPACE_CHECK_MS;
	if (fstatvfs(jw->dirfd, &sv) != 0)
		return;
	uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	/* Blocks the segment holds past its end are written without taking free space. */
	if (jw->fd >= 0 && fstat(jw->fd, &st) == 0 && (uint64_t)st.st_blocks * 512 > jw->seg_off)
		prealloc = (int64_t)((uint64_t)st.st_blocks * 512 - jw->seg_off);
	if (avail > RESERVE_MAX)
		avail = RESERVE_MAX;
	tg_store_64(&jw->free_bytes, avail);
	tg_store_64((uint64_t *)&jw->room, (uint64_t)((int64_t)avail + prealloc -
	                                              (int64_t)jw->fill_len - (int64_t)jw->held));
}

static uint64_t
calls_now(const struct tg_jw *jw)
{
	return jw->cfg.calls != NULL ? jw->cfg.calls(jw->cfg.calls_arg) : 0;
}

/* The bytes kept for settling calls: half the reserve, more when the calls need more. */
static int64_t
settle_reserve(const struct tg_jw *jw, uint64_t calls)
{
	uint64_t owed = calls * TG_JW_SETTLE_BYTES, half = jw->cfg.disk_reserve / 2;
	return (int64_t)(owed > half ? owed : half);
}

/* The room a change of class k must leave (docs/JOURNAL.md, "Segments and the disk"). */
static int64_t
floor_of(const struct tg_jw *jw, enum tg_jw_class k, uint64_t calls)
{
	switch (k) {
	case TG_JW_NEW:
		return settle_reserve(jw, calls) +
		       (int64_t)(jw->cfg.disk_reserve - jw->cfg.disk_reserve / 2) + DISK_SLACK;
	case TG_JW_CREDIT:
		return settle_reserve(jw, calls) + DISK_SLACK;
	case TG_JW_EXPIRE:
		return (int64_t)(calls * TG_JW_SETTLE_BYTES) + DISK_SLACK;
	case TG_JW_SETTLE:
		break;
	}
	return DISK_SLACK;
}

/*
 * The room less every watched stage.  The stages first: a commit counts
 * the room down before it empties its stage, so a record is counted twice
 * at worst, never missed.
 */
static int64_t
room_now(const struct tg_jw *jw)
{
	int64_t staged = 0;
	unsigned n = tg_load_32((uint32_t *)&jw->nstages);
	ck_pr_fence_load();
	for (unsigned i = 0; i < n; i++)
		staged += (int64_t)tg_load_64(&jw->stages[i]->bytes);
	ck_pr_fence_load();
	return (int64_t)tg_load_64((uint64_t *)&jw->room) - staged;
}

/* Is there anything to write: records in fill, or synced records to confirm? */
static bool
flush_due(const struct tg_jw *jw)
{
	return jw->fill_len > HEAD || jw->synced > jw->durable;
}

/* A CONFIRM record for lsn at buf (HEAD bytes). */
static void
encode_confirm(char *buf, uint64_t lsn)
{
	struct tg_jrec_confirm c = {.lsn = lsn};
	ssize_t n = tg_journal_encode(buf, HEAD, TG_JREC_CONFIRM, lsn,
	                              (int64_t)tg_clock_ns(CLOCK_REALTIME), &c, sizeof(c));
	TG_ASSERT(n == HEAD);
}

/* With mu held: bytes the writer appends that no commit counted (CONFIRM records). */
static void
room_take(struct tg_jw *jw, uint64_t bytes)
{
	tg_store_64((uint64_t *)&jw->room, tg_load_64((uint64_t *)&jw->room) - bytes);
}

/*
 * At open, before anything is acknowledged: the records the reader found at
 * the end of the last segment may never have been confirmed (a stop between
 * a flush and its CONFIRM), yet the recovered state holds them and replies
 * will depend on them.  Confirm them now, then move on to a new segment if
 * that one is full.  When the write fails (a full disk), the first flush
 * leads with the CONFIRM instead: durable is left one short, so nothing waits
 * on it meanwhile but the first commit, which then confirms before it returns.
 */
static int
confirm_open(struct tg_jw *jw, char *err, size_t errlen)
{
	char c[HEAD];

	if (jw->fd >= 0 && jw->seg_off > TG_JOURNAL_HDR_SIZE) {
		encode_confirm(c, jw->next_lsn - 1);
		if (pwrite(jw->fd, c, HEAD, (off_t)jw->seg_off) != (ssize_t)HEAD ||
		    fdatasync(jw->fd) != 0) {
			tg_log("journal: cannot confirm the end of %s/%s at open (%s): the first "
			       "flush will",
			       jw->dir, jw->seg, errno ? strerror(errno) : "short write");
			(void)ftruncate(jw->fd, (off_t)jw->seg_off);
			if (jw->synced > 0)
				jw->durable = jw->synced - 1;
		} else {
			jw->seg_off += HEAD;
		}
	}
	if (jw->fd < 0 || jw->seg_off < jw->cfg.segment_size)
		return 0;
	return seg_open_new(jw, jw->next_lsn, err, errlen);
}

/*
 * With mu held, flushing false and flush_due: write and sync fill, led by a
 * CONFIRM of what the previous flush synced.  Drops mu during the I/O; other
 * workers keep encoding into the other buffer.
 *
 * Two steps make a change acknowledgeable: its records are written and
 * synced, then a CONFIRM after them is written and synced (docs/JOURNAL.md,
 * "Torn or damaged").  Under load the second step rides on the next flush,
 * so a sync still carries every batch that queued behind the previous one;
 * when nothing else is waiting the flush is the CONFIRM alone.  durable (what
 * commit waits for) is the confirmed LSN, never merely the synced one.
 */
static void
flush_locked(struct tg_jw *jw)
{
	char *buf = jw->fill;
	size_t len = jw->fill_len;
	uint64_t upto = len > HEAD ? jw->fill_last : jw->synced;
	uint64_t first = jw->synced + 1, confirmed = jw->durable, before = jw->durable;
	bool confirm = jw->synced > jw->durable;
	size_t start = confirm ? 0 : HEAD;

	TG_ASSERT(!jw->flushing && flush_due(jw));
	if (confirm) {
		encode_confirm(buf, jw->synced);
		confirmed = jw->synced;
		room_take(jw, HEAD);
	}
	jw->flushing = true;
	jw->fill = jw->spare;
	jw->fill_len = HEAD;
	pthread_mutex_unlock(&jw->mu);

	uint64_t t0 = tg_clock_ns(CLOCK_MONOTONIC);
	char err[600];
	bool placed;
	/* Started on a full disk with no segment: make it now (the room was measured). */
	if (jw->fd < 0) {
		int rc = seg_create(jw, first, &placed, err, sizeof(err));
		if (rc != 0) {
			tg_log("%s", err);
			fatal(jw, "creating", -rc);
		}
	}
	write_sync(jw, buf + start, len - start);
	jw->seg_off += len - start;
	count(jw, TG_C_journal_syncs, 1);
	count(jw, TG_C_journal_sync_ns, tg_clock_ns(CLOCK_MONOTONIC) - t0);
	bool rotate = jw->seg_off >= jw->cfg.segment_size && tg_mono_ms() >= jw->rotate_retry_ms;
	bool end_confirm = rotate && upto > confirmed;
	if (end_confirm) {
		/* Every segment ends confirmed: its last flush is acknowledged before the next. */
		char c[HEAD];
		encode_confirm(c, upto);
		write_sync(jw, c, HEAD);
		jw->seg_off += HEAD;
		count(jw, TG_C_journal_syncs, 1);
		confirmed = upto;
	}
	if (rotate) {
		int rc = seg_create(jw, upto + 1, &placed, err, sizeof(err));
		if (rc != 0 && placed) {
			/* Renamed but the directory's sync failed: never retried, as any sync. */
			tg_log("%s", err);
			fatal(jw, "rotating past", -rc);
		}
		/*
		 * Nothing changed: the segment grows past its size instead (the reader
		 * does not mind) and the rotation is tried again in a second.
		 */
		if (rc != 0 && jw->rotate_retry_ms == 0)
			tg_log("%s: appending to %s past journal-segment-size until a new segment "
			       "can be made",
			       err, jw->seg);
		if (rc == 0 && jw->rotate_retry_ms != 0)
			tg_log("journal: moved on to a new segment %s/%s", jw->dir, jw->seg);
		jw->rotate_retry_ms = rc != 0 ? tg_mono_ms() + ROTATE_RETRY_MS : 0;
	}

	pthread_mutex_lock(&jw->mu);
	if (end_confirm)
		room_take(jw, HEAD);
	jw->spare = buf;
	jw->synced = upto;
	tg_store_64(&jw->durable, confirmed);
	if (jw->cfg.lsn_out != NULL)
		tg_store_64(jw->cfg.lsn_out, confirmed);
	jw->flushing = false;
	jw->last_flush_ms = tg_mono_ms();
	/*
	 * Under a steady load the writer's thread rarely finds no flush running,
	 * so the flusher measures too: every 100 ms, and after every flush once
	 * the room is within twice the highest floor, where another process
	 * filling the disk between two measurements could matter.
	 */
	if (jw->last_flush_ms >= jw->next_check_ms ||
	    (int64_t)tg_load_64((uint64_t *)&jw->room) <
	        2 * (int64_t)tg_load_64((uint64_t *)&jw->fast))
		measure(jw);
	pthread_cond_broadcast(&jw->cv);
	if (jw->on_durable != NULL && confirmed > before)
		jw->on_durable(jw->on_durable_arg, confirmed);
	/* Durable: left over for the writer's thread (tg_jw_commit_nowait), or a CONFIRM owed. */
	if (jw->cfg.mode == TG_DURABLE && flush_due(jw))
		pthread_cond_signal(&jw->tick);
}

static size_t
stage_bytes(const struct tg_jstage *s)
{
	size_t n = 0;
	for (unsigned i = 0; i < s->n; i++)
		n += tg_journal_rec_size(s->items[i].len);
	return n;
}

static uint64_t commit(struct tg_jw *jw, struct tg_jstage *s, uint64_t first, bool wait);

uint64_t
tg_jw_commit(struct tg_jw *jw, struct tg_jstage *s)
{
	return commit(jw, s, 0, true);
}

uint64_t
tg_jw_commit_at(struct tg_jw *jw, struct tg_jstage *s, uint64_t first)
{
	return commit(jw, s, first, true);
}

uint64_t
tg_jw_commit_nowait(struct tg_jw *jw, struct tg_jstage *s)
{
	return commit(jw, s, 0, false);
}

/*
 * Number and encode s into the fill buffer.  With wait, in durable mode,
 * return once it is durable, flushing when no one else is; without, hand
 * the flush to the writer's thread.
 */
static uint64_t
commit(struct tg_jw *jw, struct tg_jstage *s, uint64_t first, bool wait)
{
	TG_CHECK_OBJ_NOTNULL(jw, JW_MAGIC);
	if (s->n == 0)
		return 0;
	size_t need = stage_bytes(s);
	int64_t now = (int64_t)tg_clock_ns(CLOCK_REALTIME);
	bool waited = false;

	TG_ASSERT(need <= jw->cap - HEAD);
	pthread_mutex_lock(&jw->mu);
	while (jw->fill_len + need > jw->cap) {
		if (!jw->flushing)
			flush_locked(jw);
		else
			pthread_cond_wait(&jw->cv, &jw->mu);
	}
	if (first != 0 && jw->next_lsn != first) {
		/* Another record took first: these keep their own LSNs or are not written. */
		pthread_mutex_unlock(&jw->mu);
		s->n = 0;
		tg_store_64(&s->bytes, 0);
		return 0;
	}
	for (unsigned i = 0; i < s->n; i++) {
		const struct tg_jitem *it = &s->items[i];
		ssize_t n = tg_journal_encode(jw->fill + jw->fill_len, jw->cap - jw->fill_len,
		                              it->type, jw->next_lsn,
		                              it->time != 0 ? it->time : now, it->payload, it->len);
		TG_ASSERT(n > 0);
		jw->fill_len += (size_t)n;
		jw->fill_last = jw->next_lsn++;
	}
	uint64_t last = jw->fill_last;
	count(jw, TG_C_journal_records, s->n);
	count(jw, TG_C_journal_bytes, need);
	s->n = 0;
	tg_store_64((uint64_t *)&jw->room, (uint64_t)(tg_load_64((uint64_t *)&jw->room) - need));
	ck_pr_fence_store();
	tg_store_64(&s->bytes, 0);
	if (jw->cfg.mode == TG_DURABLE && !wait) {
		/* The writer's thread flushes it (and the CONFIRM after it). */
		if (!jw->flushing)
			pthread_cond_signal(&jw->tick);
	} else if (jw->cfg.mode == TG_DURABLE) {
		while (tg_load_64(&jw->durable) < last) {
			if (!jw->flushing) {
				flush_locked(jw);
			} else {
				waited = true;
				pthread_cond_wait(&jw->cv, &jw->mu);
			}
		}
	}
	pthread_mutex_unlock(&jw->mu);
	if (waited)
		count(jw, TG_C_journal_waits, 1);
	return last;
}

void
tg_jw_on_durable(struct tg_jw *jw, void (*fn)(void *arg, uint64_t lsn), void *arg)
{
	TG_CHECK_OBJ_NOTNULL(jw, JW_MAGIC);
	pthread_mutex_lock(&jw->mu);
	jw->on_durable = fn;
	jw->on_durable_arg = arg;
	pthread_mutex_unlock(&jw->mu);
}

uint64_t
tg_jw_sync(struct tg_jw *jw)
{
	pthread_mutex_lock(&jw->mu);
	uint64_t last = jw->next_lsn - 1;
	while (tg_load_64(&jw->durable) < last) {
		if (!jw->flushing && flush_due(jw))
			flush_locked(jw);
		else
			pthread_cond_wait(&jw->cv, &jw->mu);
	}
	pthread_mutex_unlock(&jw->mu);
	return last;
}

void
tg_jw_stage(struct tg_jw *jw, struct tg_jstage *s, unsigned type, const void *payload, size_t len)
{
	tg_jw_stage_at(jw, s, type, payload, len, 0);
}

/* The last LSN on disk: confirmed (durable) or, with synced, merely synced. mu held. */
static uint64_t
on_disk(const struct tg_jw *jw, bool synced)
{
	uint64_t d = tg_load_64((uint64_t *)&jw->durable);
	return synced && jw->synced > d ? jw->synced : d;
}

uint64_t
tg_jw_wait_synced(struct tg_jw *jw, uint64_t after, uint32_t timeout_ms)
{
	struct timespec ts;
	uint64_t d;

	pthread_mutex_lock(&jw->mu);
	d = on_disk(jw, true);
	if (d <= after && timeout_ms > 0) {
		ts = tg_clock_after_ms(CLOCK_REALTIME, timeout_ms);
		while ((d = on_disk(jw, true)) <= after && !jw->stop)
			if (pthread_cond_timedwait(&jw->cv, &jw->mu, &ts) != 0)
				break;
	}
	d = on_disk(jw, true);
	pthread_mutex_unlock(&jw->mu);
	return d;
}

uint64_t
tg_jw_wait_durable(struct tg_jw *jw, uint64_t after, uint32_t timeout_ms)
{
	struct timespec ts;
	uint64_t d = tg_load_64(&jw->durable);

	if (d > after || timeout_ms == 0)
		return d;
	ts = tg_clock_after_ms(CLOCK_REALTIME, timeout_ms);
	pthread_mutex_lock(&jw->mu);
	/* Every flush broadcasts cv; relaxed mode's flushes come from the writer's thread. */
	while ((d = tg_load_64(&jw->durable)) <= after && !jw->stop)
		if (pthread_cond_timedwait(&jw->cv, &jw->mu, &ts) != 0)
			break;
	pthread_mutex_unlock(&jw->mu);
	return tg_load_64(&jw->durable);
}

void
tg_jw_stage_at(struct tg_jw *jw, struct tg_jstage *s, unsigned type, const void *payload,
               size_t len, int64_t time_ns)
{
	TG_ASSERT(len <= TG_JSTAGE_PAYLOAD &&
	          tg_journal_payload_ok(type, len == tg_journal_payload_size(type) ? 1 : 2, payload,
	                                len));
	if (s->n == s->cap)
		tg_jw_commit(jw, s);
	struct tg_jitem *it = &s->items[s->n++];
	it->type = (uint16_t)type;
	it->len = (uint16_t)len;
	it->time = time_ns;
	memcpy(it->payload, payload, len);
	/* Only this thread writes it: a plain add, published for tg_jw_admit. */
	tg_store_64(&s->bytes, s->bytes + tg_journal_rec_size(len));
}

int
tg_jstage_init(struct tg_jstage *s, unsigned cap)
{
	s->n = 0;
	s->cap = cap;
	s->bytes = 0;
	s->items = calloc(cap, sizeof(*s->items));
	return s->items ? 0 : -ENOMEM;
}

void
tg_jstage_fini(struct tg_jstage *s)
{
	free(s->items);
	memset(s, 0, sizeof(*s));
}

const char *
tg_jw_disk_name(enum tg_jw_disk d)
{
	static const char *const names[] = {"ok", "reserve", "settling", "full"};
	return (unsigned)d < TG_ARRAY_LEN(names) ? names[d] : "?";
}

/* Log where the disk stands when it changed since the last time: the operator's cue. */
static void
report(struct tg_jw *jw)
{
	enum tg_jw_disk d = tg_jw_disk(jw);
	unsigned long long avail = tg_load_64(&jw->free_bytes);
	long long room = (long long)room_now(jw);
	uint64_t calls = calls_now(jw);

	if (d == jw->logged)
		return;
	jw->logged = d;
	switch (d) {
	case TG_JW_DISK_OK:
		tg_log("journal: %s has %llu bytes free again: accepting every command", jw->dir,
		       avail);
		break;
	case TG_JW_DISK_RESERVE:
		tg_log("journal: %s has %llu bytes free, below disk-reserve %llu: refusing "
		       "CALL.AUTH, CALL.UPDATE, CDR and ACCT.SET with NOSPACE until space is "
		       "freed; ACCT.CREDIT and ACCT.REFILL.FAILED go on with half of the reserve, "
		       "CALL.END and expiry with the rest",
		       jw->dir, avail, (unsigned long long)jw->cfg.disk_reserve);
		break;
	case TG_JW_DISK_SETTLING:
		tg_log("journal: %s has %llu bytes free, below disk-reserve %llu, and the "
		       "credits' share of it is used: refusing ACCT.CREDIT and ACCT.REFILL.FAILED "
		       "too; only CALL.END and expiry are recorded (%lld bytes of room, %lld kept "
		       "for %llu calls in progress) until space is freed",
		       jw->dir, avail, (unsigned long long)jw->cfg.disk_reserve, room,
		       (long long)settle_reserve(jw, calls), (unsigned long long)calls);
		break;
	case TG_JW_DISK_FULL:
		tg_log("journal: %s has %llu bytes free, below disk-reserve %llu, with no room "
		       "left to record anything: refusing every change with NOSPACE (CALL.END too; "
		       "expiry waits), serving ACCT.GET, RATE and INFO, until space is freed",
		       jw->dir, avail, (unsigned long long)jw->cfg.disk_reserve);
		break;
	}
}

/* Relaxed mode's syncs and the disk-space check, every few milliseconds. */
static void *
jw_thread(void *arg)
{
	struct tg_jw *jw = arg;
	uint32_t step = jw->cfg.mode == TG_RELAXED && jw->cfg.flush_ms < SPACE_CHECK_MS
	                    ? (jw->cfg.flush_ms ? jw->cfg.flush_ms : 1)
	                    : SPACE_CHECK_MS;
	uint64_t next_report = 0;

	pthread_mutex_lock(&jw->mu);
	while (!jw->stop) {
		struct timespec ts = tg_clock_after_ms(CLOCK_REALTIME, step);
		pthread_cond_timedwait(&jw->tick, &jw->mu, &ts);
		if (jw->stop)
			break;
		uint64_t now = tg_mono_ms();
		if (jw->cfg.mode == TG_RELAXED && !jw->flushing && flush_due(jw) &&
		    now - jw->last_flush_ms >= jw->cfg.flush_ms)
			flush_locked(jw);
		/*
		 * Durable: what tg_jw_commit_nowait left is flushed at once, and
		 * the CONFIRM after it, and whatever queued meanwhile, until
		 * nothing is due (a waiting committer may take a turn as flusher).
		 */
		while (jw->cfg.mode == TG_DURABLE && !jw->stop && !jw->flushing && flush_due(jw))
			flush_locked(jw);
		if (!jw->flushing && now >= jw->next_check_ms)
			measure(jw);
		if (now >= next_report) {
			pthread_mutex_unlock(&jw->mu);
			report(jw);
			pthread_mutex_lock(&jw->mu);
			next_report = now + SPACE_CHECK_MS;
		}
	}
	pthread_mutex_unlock(&jw->mu);
	return NULL;
}

int
tg_jw_open(struct tg_jw **out, const struct tg_jw_cfg *cfg, uint64_t next_lsn, char *err,
           size_t errlen)
{
	struct tg_jw *jw = calloc(1, sizeof(*jw));
	int rc;

	*out = NULL;
	if (jw == NULL)
		return -ENOMEM;
	jw->magic = JW_MAGIC;
	jw->cfg = *cfg;
	jw->fd = -1;
	jw->dirfd = -1;
	snprintf(jw->dir, sizeof(jw->dir), "%s", cfg->dir);
	jw->cfg.dir = jw->dir;
	jw->cap = cfg->buffer ? cfg->buffer : BUFFER_DEFAULT;
	jw->next_lsn = next_lsn;
	jw->durable = next_lsn - 1;
	jw->synced = next_lsn - 1;
	jw->fill_last = next_lsn - 1;
	jw->fill_len = HEAD;
	pthread_mutex_init(&jw->mu, NULL);
	pthread_cond_init(&jw->cv, NULL);
	pthread_cond_init(&jw->tick, NULL);
	if (jw->cfg.segment_size < 4096)
		jw->cfg.segment_size = 4096;
	if (jw->cfg.disk_reserve > RESERVE_MAX)
		jw->cfg.disk_reserve = RESERVE_MAX;
	/* Past this room no class can be refused, whatever the calls and stages hold. */
	jw->fast = floor_of(jw, TG_JW_NEW, jw->cfg.calls_max) + (int64_t)TG_JW_CMD_BYTES;
	jw->fill = malloc(jw->cap);
	jw->spare = malloc(jw->cap);
	if (jw->fill == NULL || jw->spare == NULL) {
		snprintf(err, errlen, "journal: cannot allocate 2 x %zu bytes of buffers", jw->cap);
		rc = -ENOMEM;
		goto fail;
	}
	jw->dirfd = open(jw->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (jw->dirfd < 0) {
		rc = -errno;
		snprintf(err, errlen, "journal: cannot open %s: %s", jw->dir, strerror(errno));
		goto fail;
	}
	rc = io_uring_queue_init(8, &jw->ring, 0);
	if (rc < 0) {
		snprintf(err, errlen, "journal: cannot set up io_uring: %s", strerror(-rc));
		goto fail;
	}
	jw->ring_ok = true;
	rc = seg_open_last(jw, next_lsn, err, errlen);
	if (rc == 0)
		rc = confirm_open(jw, err, errlen);
	if (rc != 0)
		goto fail;
	if (cfg->lsn_out != NULL)
		tg_store_64(cfg->lsn_out, jw->durable);
	pthread_mutex_lock(&jw->mu);
	measure(jw);
	pthread_mutex_unlock(&jw->mu);
	report(jw); /* a start on a full disk says so before the engine is ready */
	jw->last_flush_ms = tg_mono_ms();
	rc = -pthread_create(&jw->thread, NULL, jw_thread, jw);
	if (rc != 0) {
		snprintf(err, errlen, "journal: cannot start its thread: %s", strerror(-rc));
		goto fail;
	}
	jw->thread_started = true;
	*out = jw;
	return 0;
fail:
	tg_jw_close(jw);
	return rc;
}

void
tg_jw_close(struct tg_jw *jw)
{
	if (jw == NULL)
		return;
	if (jw->thread_started) {
		pthread_mutex_lock(&jw->mu);
		jw->stop = true;
		pthread_cond_broadcast(&jw->tick);
		pthread_mutex_unlock(&jw->mu);
		pthread_join(jw->thread, NULL);
		tg_jw_sync(jw);
	}
	if (jw->ring_ok)
		io_uring_queue_exit(&jw->ring);
	if (jw->fd >= 0)
		close(jw->fd);
	if (jw->dirfd >= 0)
		close(jw->dirfd);
	free(jw->fill);
	free(jw->spare);
	pthread_mutex_destroy(&jw->mu);
	pthread_cond_destroy(&jw->cv);
	pthread_cond_destroy(&jw->tick);
	free(jw);
}

uint64_t
tg_jw_durable(const struct tg_jw *jw)
{
	return tg_load_64((uint64_t *)&jw->durable);
}

uint64_t
tg_jw_last(struct tg_jw *jw)
{
	pthread_mutex_lock(&jw->mu);
	uint64_t v = jw->next_lsn - 1;
	pthread_mutex_unlock(&jw->mu);
	return v;
}

int
tg_jw_watch(struct tg_jw *jw, struct tg_jstage *s)
{
	TG_CHECK_OBJ_NOTNULL(jw, JW_MAGIC);
	if (jw->nstages == TG_JW_STAGES_MAX)
		return -ENOSPC;
	/* The writer's thread already runs: the stage first, then the count that shows it. */
	jw->stages[jw->nstages] = s;
	ck_pr_fence_store();
	tg_store_32((uint32_t *)&jw->nstages, jw->nstages + 1);
	tg_store_64((uint64_t *)&jw->fast,
	            (uint64_t)(jw->fast +
	                       (int64_t)s->cap * (int64_t)tg_journal_rec_size(TG_JSTAGE_PAYLOAD)));
	return 0;
}

bool
tg_jw_admit(const struct tg_jw *jw, enum tg_jw_class k)
{
	if ((int64_t)tg_load_64((uint64_t *)&jw->room) >=
	    (int64_t)tg_load_64((uint64_t *)&jw->fast))
		return true;
	return room_now(jw) - (int64_t)TG_JW_CMD_BYTES >= floor_of(jw, k, calls_now(jw));
}

enum tg_jw_disk
tg_jw_disk(const struct tg_jw *jw)
{
	if (tg_jw_admit(jw, TG_JW_NEW))
		return TG_JW_DISK_OK;
	if (tg_jw_admit(jw, TG_JW_CREDIT))
		return TG_JW_DISK_RESERVE;
	if (tg_jw_admit(jw, TG_JW_SETTLE))
		return TG_JW_DISK_SETTLING;
	return TG_JW_DISK_FULL;
}

bool
tg_jw_low_space(const struct tg_jw *jw)
{
	return tg_jw_disk(jw) != TG_JW_DISK_OK;
}

int64_t
tg_jw_room(const struct tg_jw *jw)
{
	return room_now(jw);
}

uint64_t
tg_jw_settle_reserve(const struct tg_jw *jw)
{
	return (uint64_t)settle_reserve(jw, calls_now(jw));
}

bool
tg_jw_hold(struct tg_jw *jw, uint64_t bytes)
{
	uint64_t calls = calls_now(jw);
	bool ok = false;

	if (bytes > RESERVE_MAX)
		return false;
	pthread_mutex_lock(&jw->mu);
	/* Above the reserve only, and the file system must have the blocks themselves. */
	if (room_now(jw) - (int64_t)bytes >= floor_of(jw, TG_JW_NEW, calls) &&
	    tg_load_64(&jw->free_bytes) >= bytes + DISK_SLACK) {
		jw->held += bytes;
		tg_store_64(
		    (uint64_t *)&jw->room,
		    (uint64_t)((int64_t)tg_load_64((uint64_t *)&jw->room) - (int64_t)bytes));
		ok = true;
	}
	pthread_mutex_unlock(&jw->mu);
	return ok;
}

void
tg_jw_unhold(struct tg_jw *jw, uint64_t bytes)
{
	pthread_mutex_lock(&jw->mu);
	TG_ASSERT(jw->held >= bytes);
	jw->held -= bytes;
	/* The file's blocks (or none, if it failed) show in the next measurement. */
	jw->next_check_ms = 0;
	if (!jw->flushing)
		measure(jw);
	pthread_mutex_unlock(&jw->mu);
}

uint64_t
tg_jw_free_bytes(const struct tg_jw *jw)
{
	return tg_load_64((uint64_t *)&jw->free_bytes);
}

enum tg_durability
tg_jw_mode(const struct tg_jw *jw)
{
	return jw->cfg.mode;
}

const char *
tg_jw_dir(const struct tg_jw *jw)
{
	return jw->dir;
}
