/*
 * jwriter.c - the journal's writer: staging, group commit, segments.
 *
 * Owns the open segment, the two encode buffers and the one io_uring the
 * journal's I/O goes through.  Only the flusher (one thread at a time, any
 * thread) touches the file and the ring; everything else happens under mu in
 * memory.  See tg_jwriter.h for the protocol and docs/JOURNAL.md for why.
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
#include "tg_jwriter.h"
#include "tg_log.h"

#define JW_MAGIC       0x4a575231u /* "JWR1" */
#define BUFFER_DEFAULT (8u << 20)
#define SPACE_CHECK_MS 100
/* Every buffer starts with room for the CONFIRM record a flush may lead with. */
#define HEAD TG_JOURNAL_CONFIRM_SIZE
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
	char *fill, *spare;  /* records encoded after HEAD, not yet written; the other buffer */
	size_t fill_len, cap;
	uint64_t fill_last; /* LSN of the last record in fill */
	uint64_t next_lsn;  /* the next LSN handed out */
	uint64_t synced;    /* last LSN written and synced, not yet confirmed when > durable */
	uint64_t durable;   /* last LSN confirmed on disk: what may be acknowledged; atomics */
	bool flushing;
	uint64_t last_flush_ms;

	pthread_t thread;
	bool thread_started, stop;
	int low_space; /* atomic: free space below the reserve */
	uint64_t free_bytes;
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

static uint64_t
clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
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

/* Create segment first_lsn: header written and synced under a temporary name, then renamed. */
static int
seg_create(struct tg_jw *jw, uint64_t first_lsn, char *err, size_t errlen)
{
	char name[TG_JOURNAL_NAME_LEN], tmp[TG_JOURNAL_NAME_LEN + 8];
	struct tg_jseg_hdr h;
	int fd;

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
	 * full.  Best effort: a file system without it still works, and a write
	 * that fails later stops the engine cleanly anyway.
	 */
	(void)fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)jw->cfg.segment_size);
	if (fsync(fd) != 0 || renameat(jw->dirfd, tmp, jw->dirfd, name) != 0 ||
	    fsync(jw->dirfd) != 0)
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
		struct tg_jseg_hdr h;
		tg_journal_seg_name(name, best);
		int fd = openat(jw->dirfd, name, O_WRONLY | O_CLOEXEC);
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
	return seg_create(jw, next_lsn, err, errlen);
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
	                              (int64_t)clock_ns(CLOCK_REALTIME), &c, sizeof(c));
	TG_ASSERT(n == HEAD);
}

/*
 * At open, before anything is acknowledged: the records the reader found at
 * the end of the last segment may never have been confirmed (a stop between
 * a flush and its CONFIRM), yet the recovered state holds them and replies
 * will depend on them.  Confirm them now, then rotate if the segment is full.
 * When that write fails (a full disk), the first flush leads with the CONFIRM
 * instead: durable is left one short, so nothing waits on it meanwhile
 * but the first commit, which then confirms before it returns.
 */
static int
confirm_open(struct tg_jw *jw, char *err, size_t errlen)
{
	char c[HEAD];

	if (jw->seg_off > TG_JOURNAL_HDR_SIZE) {
		encode_confirm(c, jw->next_lsn - 1);
		if (pwrite(jw->fd, c, HEAD, (off_t)jw->seg_off) != (ssize_t)HEAD ||
		    fdatasync(jw->fd) != 0) {
			tg_log("journal: cannot confirm the end of %s/%s at open (%s): the first "
			       "flush will",
			       jw->dir, jw->seg, errno ? strerror(errno) : "short write");
			(void)ftruncate(jw->fd, (off_t)jw->seg_off);
			if (jw->synced > 0)
				jw->durable = jw->synced - 1;
			return 0;
		}
		jw->seg_off += HEAD;
	}
	if (jw->seg_off < jw->cfg.segment_size)
		return 0;
	return seg_create(jw, jw->next_lsn, err, errlen);
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
	uint64_t confirmed = jw->durable;
	bool confirm = jw->synced > jw->durable;
	size_t start = confirm ? 0 : HEAD;

	TG_ASSERT(!jw->flushing && flush_due(jw));
	if (confirm) {
		encode_confirm(buf, jw->synced);
		confirmed = jw->synced;
	}
	jw->flushing = true;
	jw->fill = jw->spare;
	jw->fill_len = HEAD;
	pthread_mutex_unlock(&jw->mu);

	uint64_t t0 = clock_ns(CLOCK_MONOTONIC);
	write_sync(jw, buf + start, len - start);
	jw->seg_off += len - start;
	count(jw, TG_C_journal_syncs, 1);
	count(jw, TG_C_journal_sync_ns, clock_ns(CLOCK_MONOTONIC) - t0);
	if (jw->seg_off >= jw->cfg.segment_size) {
		/* Every segment ends confirmed: its last flush is acknowledged before the next. */
		char err[600], c[HEAD];
		if (upto > confirmed) {
			encode_confirm(c, upto);
			write_sync(jw, c, HEAD);
			jw->seg_off += HEAD;
			count(jw, TG_C_journal_syncs, 1);
			confirmed = upto;
		}
		if (seg_create(jw, upto + 1, err, sizeof(err)) != 0) {
			tg_log("%s", err);
			fatal(jw, "rotating past", errno ? errno : EIO);
		}
	}

	pthread_mutex_lock(&jw->mu);
	jw->spare = buf;
	jw->synced = upto;
	tg_store_64(&jw->durable, confirmed);
	if (jw->cfg.lsn_out != NULL)
		tg_store_64(jw->cfg.lsn_out, confirmed);
	jw->flushing = false;
	jw->last_flush_ms = clock_ns(CLOCK_MONOTONIC) / 1000000;
	pthread_cond_broadcast(&jw->cv);
}

static size_t
stage_bytes(const struct tg_jstage *s)
{
	size_t n = 0;
	for (unsigned i = 0; i < s->n; i++)
		n += tg_journal_rec_size(s->items[i].len);
	return n;
}

uint64_t
tg_jw_commit(struct tg_jw *jw, struct tg_jstage *s)
{
	TG_CHECK_OBJ_NOTNULL(jw, JW_MAGIC);
	if (s->n == 0)
		return 0;
	size_t need = stage_bytes(s);
	int64_t now = (int64_t)clock_ns(CLOCK_REALTIME);
	bool waited = false;

	TG_ASSERT(need <= jw->cap - HEAD);
	pthread_mutex_lock(&jw->mu);
	while (jw->fill_len + need > jw->cap) {
		if (!jw->flushing)
			flush_locked(jw);
		else
			pthread_cond_wait(&jw->cv, &jw->mu);
	}
	for (unsigned i = 0; i < s->n; i++) {
		const struct tg_jitem *it = &s->items[i];
		ssize_t n = tg_journal_encode(jw->fill + jw->fill_len, jw->cap - jw->fill_len,
		                              it->type, jw->next_lsn, now, it->payload, it->len);
		TG_ASSERT(n > 0);
		jw->fill_len += (size_t)n;
		jw->fill_last = jw->next_lsn++;
	}
	uint64_t last = jw->fill_last;
	count(jw, TG_C_journal_records, s->n);
	count(jw, TG_C_journal_bytes, need);
	s->n = 0;
	if (jw->cfg.mode == TG_DURABLE) {
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
	TG_ASSERT(len <= TG_JSTAGE_PAYLOAD && len == tg_journal_payload_size(type));
	if (s->n == s->cap)
		tg_jw_commit(jw, s);
	struct tg_jitem *it = &s->items[s->n++];
	it->type = (uint16_t)type;
	it->len = (uint16_t)len;
	memcpy(it->payload, payload, len);
}

int
tg_jstage_init(struct tg_jstage *s, unsigned cap)
{
	s->n = 0;
	s->cap = cap;
	s->items = calloc(cap, sizeof(*s->items));
	return s->items ? 0 : -ENOMEM;
}

void
tg_jstage_fini(struct tg_jstage *s)
{
	free(s->items);
	memset(s, 0, sizeof(*s));
}

static void
check_space(struct tg_jw *jw)
{
	struct statvfs sv;

	if (fstatvfs(jw->dirfd, &sv) != 0)
		return;
	uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	bool low = avail < jw->cfg.disk_reserve;
	tg_store_64(&jw->free_bytes, avail);
	if (low != (bool)tg_load_32((uint32_t *)&jw->low_space)) {
		tg_store_32((uint32_t *)&jw->low_space, low);
		if (low)
			tg_log(
			    "journal: %s has %llu bytes free, below disk-reserve %llu: refusing "
			    "CALL.AUTH, CALL.UPDATE, CDR and ACCT.SET with NOSPACE until space is "
			    "freed",
			    jw->dir, (unsigned long long)avail,
			    (unsigned long long)jw->cfg.disk_reserve);
		else
			tg_log("journal: %s has %llu bytes free again: accepting every command",
			       jw->dir, (unsigned long long)avail);
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
	uint64_t next_check = 0;

	pthread_mutex_lock(&jw->mu);
	while (!jw->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)step * 1000000;
		ts.tv_sec += ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
		pthread_cond_timedwait(&jw->tick, &jw->mu, &ts);
		if (jw->stop)
			break;
		uint64_t now = clock_ns(CLOCK_MONOTONIC) / 1000000;
		if (jw->cfg.mode == TG_RELAXED && !jw->flushing && flush_due(jw) &&
		    now - jw->last_flush_ms >= jw->cfg.flush_ms)
			flush_locked(jw);
		if (now >= next_check) {
			pthread_mutex_unlock(&jw->mu);
			check_space(jw);
			pthread_mutex_lock(&jw->mu);
			next_check = now + SPACE_CHECK_MS;
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
	check_space(jw);
	jw->last_flush_ms = clock_ns(CLOCK_MONOTONIC) / 1000000;
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

bool
tg_jw_low_space(const struct tg_jw *jw)
{
	return tg_load_32((uint32_t *)&jw->low_space) != 0;
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
