/*
 * idrun.c - id runs: immutable sorted files of remembered ids (ids-*.tgi).
 *
 * Owns the file format of docs/JOURNAL.md ("Id runs"): a 4 KiB header, 4 KiB
 * blocks of 102 entries sorted by (lo, hi), each with its CRC32C, then the
 * keys section (every lo, 8 bytes) and the block index (the first lo of each
 * block).  Writing sorts the entries and streams them through one writer,
 * which both tg_idrun_write and tg_idrun_merge use; a file is built under
 * NAME.new and renamed into place only once it is whole and on disk, so a
 * run under its own name is never half written.  An open run holds its
 * header and block index and nothing else: lookups pread one block into a
 * buffer on the caller's stack, so they may run on any number of threads
 * and never allocate.  It must never trust a block it has not checked:
 * every block read is CRC-checked before an entry of it is returned.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tg_assert.h"
#include "tg_idrun.h"
#include "tg_journal.h" /* tg_crc32c */

#define IDRUN_MAGIC 0x69647275u /* "idru" */
#define PER_BLOCK   102u        /* entries in one block */
#define HDR_SIZE    4096u
/* Blocks and keys buffered by the writer and read at once by the walks. */
#define WR_BLOCKS  64u
#define KEYS_CHUNK 8192u
/* The block number is a u32 on disk. */
#define BLOCKS_MAX 0xffffffffull

/* One block on disk: 102 entries, then a 16-byte trailer. */
struct block {
	struct tg_idrun_ent e[PER_BLOCK];
	uint32_t crc; /* CRC32C of the 4096 bytes with this field zero */
	uint32_t no;  /* the block's number, 0 first */
	uint32_t n;   /* entries in it: 102, fewer in the last block; the rest zero */
	uint32_t pad; /* zero */
};

_Static_assert(sizeof(struct block) == TG_IDRUN_BLOCK, "a block is 4096 bytes");
_Static_assert(offsetof(struct block, crc) == 4080, "documented offset");

/* The header, at offset 0; the rest of its 4096 bytes is zero. */
struct hdr {
	char magic[8];      /* TG_IDRUN_MAGIC */
	uint32_t version;   /* TG_IDRUN_VERSION */
	uint32_t hdr_size;  /* 4096: the first block's offset */
	uint32_t block;     /* TG_IDRUN_BLOCK */
	uint32_t ent_size;  /* 40 */
	uint32_t per_block; /* 102 */
	uint32_t crc;       /* CRC32C of the 4096 header bytes with this field zero */
	uint64_t count;
	uint64_t lsn_from, lsn_to;
	uint32_t seen_min, seen_max;
	uint64_t blocks;    /* ceil(count / 102) */
	uint64_t keys_off;  /* 4096 + blocks * 4096 */
	uint64_t index_off; /* keys_off + count * 8 */
	uint64_t size;      /* index_off + blocks * 8: the file's size */
	uint32_t keys_crc;  /* CRC32C of the keys section */
	uint32_t index_crc; /* CRC32C of the index section */
	int64_t created;    /* Unix seconds (informative) */
};

_Static_assert(sizeof(struct hdr) == 112, "documented layout");
_Static_assert(offsetof(struct hdr, count) == 32 && offsetof(struct hdr, blocks) == 64 &&
                   offsetof(struct hdr, keys_crc) == 96 && offsetof(struct hdr, created) == 104,
               "documented offsets");
_Static_assert(offsetof(struct tg_idrun_ent, fingerprint) == 16 &&
                   offsetof(struct tg_idrun_ent, seen) == 32 &&
                   offsetof(struct tg_idrun_ent, result) == 36,
               "documented offsets");

struct tg_idrun {
	uint32_t magic;
	int fd;
	struct tg_idrun_meta meta;
	uint64_t blocks;
	uint64_t keys_off;
	uint32_t keys_crc;
	uint64_t *index; /* blocks entries, after the struct */
	char *name;      /* after the index */
	size_t ram;
};

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static inline int
dcmp(uint64_t alo, uint64_t ahi, uint64_t blo, uint64_t bhi)
{
	if (alo != blo)
		return alo < blo ? -1 : 1;
	if (ahi != bhi)
		return ahi < bhi ? -1 : 1;
	return 0;
}

static inline bool
ent_less(const struct tg_idrun_ent *a, const struct tg_idrun_ent *b)
{
	return a->lo < b->lo || (a->lo == b->lo && a->hi < b->hi);
}

static uint32_t
block_crc(const struct block *b)
{
	static const uint32_t zero;
	uint32_t c = tg_crc32c(0, b->e, sizeof(b->e));

	c = tg_crc32c(c, &zero, sizeof(zero));
	return tg_crc32c(c, &b->no, sizeof(*b) - offsetof(struct block, no));
}

static uint32_t
hdr_crc(const unsigned char *h)
{
	struct hdr c;

	memcpy(&c, h, sizeof(c));
	c.crc = 0;
	return tg_crc32c(tg_crc32c(0, &c, sizeof(c)), h + sizeof(c), HDR_SIZE - sizeof(c));
}

static uint64_t
blocks_for(uint64_t count)
{
	return (count + PER_BLOCK - 1) / PER_BLOCK;
}

/* Entries block no of a run of count entries holds. */
static uint32_t
block_n(uint64_t count, uint64_t no)
{
	uint64_t rest = count - no * PER_BLOCK;

	return rest < PER_BLOCK ? (uint32_t)rest : PER_BLOCK;
}

/* pread exactly len bytes at off: 0, -EIO when the file ends first, -errno. */
static int
pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t k = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (k == 0)
			return -EIO;
		done += (size_t)k;
	}
	return 0;
}

static int
pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t k = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)k;
	}
	return 0;
}

/* ---- sorting: introsort on (lo, hi), the comparison inlined ---- */

static inline void
ent_swap(struct tg_idrun_ent *a, struct tg_idrun_ent *b)
{
	struct tg_idrun_ent t = *a;

	*a = *b;
	*b = t;
}

static void
insertion_sort(struct tg_idrun_ent *a, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		struct tg_idrun_ent t = a[i];
		size_t j = i;

		while (j > 0 && ent_less(&t, &a[j - 1])) {
			a[j] = a[j - 1];
			j--;
		}
		a[j] = t;
	}
}

static void
sift_down(struct tg_idrun_ent *a, size_t i, size_t n)
{
	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= n)
			return;
		if (c + 1 < n && ent_less(&a[c], &a[c + 1]))
			c++;
		if (!ent_less(&a[i], &a[c]))
			return;
		ent_swap(&a[i], &a[c]);
		i = c;
	}
}

static void
heap_sort(struct tg_idrun_ent *a, size_t n)
{
	for (size_t i = n / 2; i-- > 0;)
		sift_down(a, i, n);
	for (size_t k = n; k-- > 1;) {
		ent_swap(&a[0], &a[k]);
		sift_down(a, 0, k);
	}
}

/* Hoare's partition around the median of three, the smaller side recursed:
 * depth stays O(log n), and past depth_left the rest is heap-sorted. */
static void
intro_sort(struct tg_idrun_ent *a, size_t n, unsigned depth_left)
{
	while (n > 16) {
		if (depth_left-- == 0) {
			heap_sort(a, n);
			return;
		}
		struct tg_idrun_ent *x = &a[0], *y = &a[n / 2], *z = &a[n - 1], *m;
		if (ent_less(x, y))
			m = ent_less(y, z) ? y : (ent_less(x, z) ? z : x);
		else
			m = ent_less(x, z) ? x : (ent_less(y, z) ? z : y);
		ent_swap(&a[0], m);
		struct tg_idrun_ent p = a[0];
		size_t i = 0, j = n;
		for (;;) {
			do
				i++;
			while (i < n && ent_less(&a[i], &p));
			do
				j--;
			while (ent_less(&p, &a[j]));
			if (i >= j)
				break;
			ent_swap(&a[i], &a[j]);
		}
		ent_swap(&a[0], &a[j]);
		if (j < n - j - 1) {
			intro_sort(a, j, depth_left);
			a += j + 1;
			n -= j + 1;
		} else {
			intro_sort(a + j + 1, n - j - 1, depth_left);
			n = j;
		}
	}
	insertion_sort(a, n);
}

static void
sort_ents(struct tg_idrun_ent *a, size_t n)
{
	unsigned depth = 0;

	for (size_t k = n; k > 1; k >>= 1)
		depth += 2;
	intro_sort(a, n, depth);
}

/* ---- the writer: entries in order in, a whole file out ---- */

/*
 * Blocks are buffered WR_BLOCKS at a time and written in order from offset
 * 4096.  When the count is known (tg_idrun_write) the keys go straight to
 * their place in the file; when not (a merge drops an unknown number), to
 * an unnamed temporary file in the same directory, copied after the blocks
 * at the end.  The index grows in memory (8 bytes a block).  The header is
 * written last, with every CRC known.
 */
struct wr {
	const char *dir, *name;
	char tmp[1024], path[1024];
	int fd, kfd; /* kfd: where keys go (fd itself when the count is known) */
	uint64_t kpos;
	uint64_t count, nblocks;
	struct block *buf; /* WR_BLOCKS blocks; buf[nbuf] is being filled */
	uint32_t nbuf;
	uint64_t *keys; /* KEYS_CHUNK */
	uint32_t nkeys;
	uint32_t keys_crc;
	uint64_t *index;
	uint64_t index_cap;
	uint32_t seen_min, seen_max;
	struct tg_idrun_ent last;
	char *err;
	size_t errlen;
};

static void
wr_free(struct wr *w)
{
	if (w->kfd >= 0 && w->kfd != w->fd)
		close(w->kfd);
	if (w->fd >= 0) {
		close(w->fd);
		unlink(w->tmp);
	}
	free(w->buf);
	free(w->keys);
	free(w->index);
	w->fd = w->kfd = -1;
	w->buf = NULL;
	w->keys = NULL;
	w->index = NULL;
}

/* An unnamed file beside the run for its keys: gone by itself after a crash. */
static int
keys_tmpfile(struct wr *w)
{
	int fd = open(w->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	if (fd >= 0)
		return fd;
	/* A file system without O_TMPFILE: a name, removed at once. */
	char kp[1040];
	snprintf(kp, sizeof(kp), "%s.keys", w->tmp);
	fd = open(kp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0)
		unlink(kp);
	return fd < 0 ? -errno : fd;
}

/* Start dir/name.new; known_count is the count, or UINT64_MAX when unknown. */
static int
wr_open(struct wr *w, const char *dir, const char *name, uint64_t known_count, char *err,
        size_t errlen)
{
	memset(w, 0, sizeof(*w));
	w->fd = w->kfd = -1;
	w->dir = dir;
	w->name = name;
	w->err = err;
	w->errlen = errlen;
	w->seen_min = UINT32_MAX;
	if ((size_t)snprintf(w->path, sizeof(w->path), "%s/%s", dir, name) >= sizeof(w->path) ||
	    (size_t)snprintf(w->tmp, sizeof(w->tmp), "%s.new", w->path) >= sizeof(w->tmp))
		return fail(err, errlen, -ENAMETOOLONG, "id run path %s/%s is too long", dir, name);
	if (known_count != UINT64_MAX && blocks_for(known_count) > BLOCKS_MAX)
		return fail(err, errlen, -EFBIG, "id run %s: %llu entries is more than a run holds",
		            w->path, (unsigned long long)known_count);
	w->buf = calloc(WR_BLOCKS, sizeof(*w->buf));
	w->keys = malloc(KEYS_CHUNK * sizeof(*w->keys));
	w->index_cap = known_count != UINT64_MAX ? blocks_for(known_count) : 64;
	w->index = malloc((w->index_cap ? w->index_cap : 1) * sizeof(*w->index));
	if (w->buf == NULL || w->keys == NULL || w->index == NULL) {
		wr_free(w);
		return fail(err, errlen, -ENOMEM, "no memory to write id run %s", w->path);
	}
	w->fd = open(w->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (w->fd < 0) {
		int rc = -errno;
		wr_free(w);
		return fail(err, errlen, rc, "cannot create %s: %s", w->tmp, strerror(-rc));
	}
	if (known_count != UINT64_MAX) {
		w->kfd = w->fd;
		w->kpos = HDR_SIZE + blocks_for(known_count) * TG_IDRUN_BLOCK;
	} else {
		w->kfd = keys_tmpfile(w);
		if (w->kfd < 0) {
			int rc = w->kfd;
			w->kfd = -1;
			wr_free(w);
			return fail(err, errlen, rc, "cannot create a temporary file in %s: %s",
			            dir, strerror(-rc));
		}
	}
	return 0;
}

static int
wr_werr(struct wr *w, int rc, const char *what)
{
	return fail(w->err, w->errlen, rc, "cannot write %s (%s): %s", w->tmp, what, strerror(-rc));
}

static int
wr_flush_keys(struct wr *w)
{
	size_t len = (size_t)w->nkeys * sizeof(*w->keys);
	int rc;

	if (len == 0)
		return 0;
	w->keys_crc = tg_crc32c(w->keys_crc, w->keys, len);
	rc = pwrite_all(w->kfd, w->keys, len, w->kpos);
	if (rc != 0)
		return wr_werr(w, rc, "keys");
	w->kpos += len;
	w->nkeys = 0;
	return 0;
}

/* Write the whole blocks buffered, and the one being filled when it has entries. */
static int
wr_flush_blocks(struct wr *w)
{
	uint32_t nb = w->nbuf + (w->nbuf < WR_BLOCKS && w->buf[w->nbuf].n > 0 ? 1 : 0);

	if (nb == 0)
		return 0;
	for (uint32_t i = 0; i < nb; i++)
		w->buf[i].crc = block_crc(&w->buf[i]);
	uint64_t first = w->nblocks - nb;
	int rc = pwrite_all(w->fd, w->buf, nb * sizeof(*w->buf), HDR_SIZE + first * TG_IDRUN_BLOCK);
	if (rc != 0)
		return wr_werr(w, rc, "blocks");
	memset(w->buf, 0, nb * sizeof(*w->buf));
	w->nbuf = 0;
	return 0;
}

/* Append e, which must sort after every entry appended before. */
static int
wr_add(struct wr *w, const struct tg_idrun_ent *e)
{
	struct block *b = &w->buf[w->nbuf];
	int rc;

	if (w->count > 0 && !ent_less(&w->last, e))
		return fail(w->err, w->errlen, -EINVAL,
		            "id run %s: two entries with the digest %016llx%016llx", w->path,
		            (unsigned long long)e->hi, (unsigned long long)e->lo);
	if (b->n == 0) {
		if (w->nblocks >= BLOCKS_MAX)
			return fail(w->err, w->errlen, -EFBIG,
			            "id run %s: more entries than a run holds", w->path);
		if (w->nblocks == w->index_cap) {
			uint64_t *ni = realloc(w->index, 2 * w->index_cap * sizeof(*ni));
			if (ni == NULL)
				return fail(w->err, w->errlen, -ENOMEM,
				            "no memory for the index of %s", w->path);
			w->index = ni;
			w->index_cap *= 2;
		}
		w->index[w->nblocks] = e->lo;
		b->no = (uint32_t)w->nblocks++;
	}
	b->e[b->n++] = *e;
	w->last = *e;
	w->count++;
	if (e->seen < w->seen_min)
		w->seen_min = e->seen;
	if (e->seen > w->seen_max)
		w->seen_max = e->seen;
	w->keys[w->nkeys++] = e->lo;
	if (w->nkeys == KEYS_CHUNK && (rc = wr_flush_keys(w)) != 0)
		return rc;
	if (b->n == PER_BLOCK && ++w->nbuf == WR_BLOCKS && (rc = wr_flush_blocks(w)) != 0)
		return rc;
	return 0;
}

/* Copy the keys from the temporary file to their place at off. */
static int
wr_copy_keys(struct wr *w, uint64_t off)
{
	uint64_t len = w->kpos;
	int rc;

	for (uint64_t done = 0; done < len;) {
		size_t k = len - done < KEYS_CHUNK * 8 ? (size_t)(len - done) : KEYS_CHUNK * 8;
		rc = pread_all(w->kfd, w->keys, k, done);
		if (rc != 0)
			return fail(w->err, w->errlen, rc, "cannot read back the keys of %s: %s",
			            w->tmp, strerror(-rc));
		rc = pwrite_all(w->fd, w->keys, k, off + done);
		if (rc != 0)
			return wr_werr(w, rc, "keys");
		done += k;
	}
	return 0;
}

/* Finish the file and put it in place; meta gets the header's values.  Frees w. */
static int
wr_close(struct wr *w, uint64_t lsn_from, uint64_t lsn_to, struct tg_idrun_meta *meta)
{
	unsigned char *h = (unsigned char *)w->buf; /* the buffer, once the blocks are out */
	struct hdr hd = {0};
	int rc;

	if ((rc = wr_flush_blocks(w)) != 0 || (rc = wr_flush_keys(w)) != 0)
		goto out;
	hd.blocks = w->nblocks;
	hd.keys_off = HDR_SIZE + w->nblocks * TG_IDRUN_BLOCK;
	hd.index_off = hd.keys_off + w->count * 8;
	hd.size = hd.index_off + w->nblocks * 8;
	if (w->kfd != w->fd && (rc = wr_copy_keys(w, hd.keys_off)) != 0)
		goto out;
	TG_ASSERT(w->kfd != w->fd || w->kpos == hd.index_off);
	if ((rc = pwrite_all(w->fd, w->index, w->nblocks * 8, hd.index_off)) != 0) {
		rc = wr_werr(w, rc, "index");
		goto out;
	}
	memcpy(hd.magic, TG_IDRUN_MAGIC, 8);
	hd.version = TG_IDRUN_VERSION;
	hd.hdr_size = HDR_SIZE;
	hd.block = TG_IDRUN_BLOCK;
	hd.ent_size = sizeof(struct tg_idrun_ent);
	hd.per_block = PER_BLOCK;
	hd.count = w->count;
	hd.lsn_from = lsn_from;
	hd.lsn_to = lsn_to;
	hd.seen_min = w->count ? w->seen_min : 0;
	hd.seen_max = w->count ? w->seen_max : 0;
	hd.keys_crc = w->keys_crc;
	hd.index_crc = tg_crc32c(0, w->index, w->nblocks * 8);
	hd.created = (int64_t)time(NULL);
	memset(h, 0, HDR_SIZE);
	memcpy(h, &hd, sizeof(hd));
	hd.crc = hdr_crc(h);
	memcpy(h, &hd, sizeof(hd));
	if ((rc = pwrite_all(w->fd, h, HDR_SIZE, 0)) != 0) {
		rc = wr_werr(w, rc, "header");
		goto out;
	}
	if (fsync(w->fd) != 0) {
		rc = wr_werr(w, -errno, "fsync");
		goto out;
	}
	int dfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || rename(w->tmp, w->path) != 0 || fsync(dfd) != 0) {
		rc = -errno;
		fail(w->err, w->errlen, rc, "cannot put %s in place: %s", w->path, strerror(errno));
	}
	if (dfd >= 0)
		close(dfd);
	if (meta != NULL && rc == 0)
		*meta = (struct tg_idrun_meta){.count = hd.count,
		                               .lsn_from = lsn_from,
		                               .lsn_to = lsn_to,
		                               .seen_min = hd.seen_min,
		                               .seen_max = hd.seen_max};
out:
	wr_free(w); /* unlinks the .new name: gone already after a rename */
	return rc;
}

int
tg_idrun_write(const char *dir, const char *name, struct tg_idrun_ent *ents, size_t n,
               struct tg_idrun_meta *meta, char *err, size_t errlen)
{
	struct wr w;
	int rc;

	TG_ASSERT(meta != NULL && (ents != NULL || n == 0));
	sort_ents(ents, n);
	if ((rc = wr_open(&w, dir, name, n, err, errlen)) != 0)
		return rc;
	for (size_t i = 0; i < n; i++) {
		if ((rc = wr_add(&w, &ents[i])) != 0) {
			wr_free(&w);
			return rc;
		}
	}
	return wr_close(&w, meta->lsn_from, meta->lsn_to, meta);
}

/* ---- reading ---- */

int
tg_idrun_open(struct tg_idrun **out, const char *dir, const char *name, char *err, size_t errlen)
{
	char path[1024];
	unsigned char h[HDR_SIZE];
	struct hdr hd;
	struct stat st;
	int rc;

	*out = NULL;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return fail(err, errlen, -ENAMETOOLONG, "id run path %s/%s is too long", dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, errlen, -errno, "cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0) {
		rc = fail(err, errlen, -errno, "cannot stat %s: %s", path, strerror(errno));
		goto bad;
	}
	if ((uint64_t)st.st_size < HDR_SIZE) {
		rc = fail(err, errlen, -EPROTO, "%s: %lld bytes, shorter than an id run's header",
		          path, (long long)st.st_size);
		goto bad;
	}
	if ((rc = pread_all(fd, h, HDR_SIZE, 0)) != 0) {
		rc = fail(err, errlen, rc, "cannot read %s: %s", path, strerror(-rc));
		goto bad;
	}
	memcpy(&hd, h, sizeof(hd));
	rc = -EPROTO;
	if (memcmp(hd.magic, TG_IDRUN_MAGIC, 8) != 0) {
		fail(err, errlen, rc, "%s: not an id run (bad magic)", path);
		goto bad;
	}
	if (hd.version != TG_IDRUN_VERSION) {
		fail(err, errlen, rc, "%s: id run version %u, this build reads version %u", path,
		     hd.version, TG_IDRUN_VERSION);
		goto bad;
	}
	if (hd.crc != hdr_crc(h)) {
		fail(err, errlen, rc, "%s: header CRC does not match (damaged header)", path);
		goto bad;
	}
	uint64_t blocks = blocks_for(hd.count);
	if (hd.hdr_size != HDR_SIZE || hd.block != TG_IDRUN_BLOCK ||
	    hd.ent_size != sizeof(struct tg_idrun_ent) || hd.per_block != PER_BLOCK ||
	    hd.blocks != blocks || blocks > BLOCKS_MAX ||
	    hd.keys_off != HDR_SIZE + blocks * TG_IDRUN_BLOCK ||
	    hd.index_off != hd.keys_off + hd.count * 8 || hd.size != hd.index_off + blocks * 8 ||
	    hd.seen_min > hd.seen_max) {
		fail(err, errlen, rc, "%s: header fields do not agree with each other", path);
		goto bad;
	}
	if ((uint64_t)st.st_size != hd.size) {
		fail(err, errlen, rc, "%s: %lld bytes, %s than the %llu its header says", path,
		     (long long)st.st_size, (uint64_t)st.st_size < hd.size ? "shorter" : "longer",
		     (unsigned long long)hd.size);
		goto bad;
	}
	size_t nlen = strlen(name) + 1;
	size_t ram = sizeof(struct tg_idrun) + blocks * 8 + nlen;
	struct tg_idrun *r = malloc(ram);
	if (r == NULL) {
		rc = fail(err, errlen, -ENOMEM, "no memory for the index of %s", path);
		goto bad;
	}
	r->index = (uint64_t *)(r + 1);
	r->name = (char *)(r->index + blocks);
	memcpy(r->name, name, nlen);
	if ((rc = pread_all(fd, r->index, blocks * 8, hd.index_off)) != 0) {
		rc = fail(err, errlen, rc, "cannot read the index of %s: %s", path, strerror(-rc));
		free(r);
		goto bad;
	}
	rc = -EPROTO;
	if (tg_crc32c(0, r->index, blocks * 8) != hd.index_crc) {
		fail(err, errlen, rc, "%s: index CRC does not match (damaged index)", path);
		free(r);
		goto bad;
	}
	for (uint64_t i = 1; i < blocks; i++) {
		if (r->index[i] < r->index[i - 1]) {
			fail(err, errlen, rc, "%s: index out of order at block %llu", path,
			     (unsigned long long)i);
			free(r);
			goto bad;
		}
	}
	r->magic = IDRUN_MAGIC;
	r->fd = fd;
	r->meta = (struct tg_idrun_meta){.count = hd.count,
	                                 .lsn_from = hd.lsn_from,
	                                 .lsn_to = hd.lsn_to,
	                                 .seen_min = hd.seen_min,
	                                 .seen_max = hd.seen_max};
	r->blocks = blocks;
	r->keys_off = hd.keys_off;
	r->keys_crc = hd.keys_crc;
	r->ram = ram;
	*out = r;
	return 0;
bad:
	close(fd);
	return rc;
}

void
tg_idrun_close(struct tg_idrun *r)
{
	if (r == NULL)
		return;
	TG_CHECK_OBJ(r, IDRUN_MAGIC);
	close(r->fd);
	r->magic = 0;
	free(r);
}

const struct tg_idrun_meta *
tg_idrun_meta(const struct tg_idrun *r)
{
	TG_CHECK_OBJ_NOTNULL(r, IDRUN_MAGIC);
	return &r->meta;
}

const char *
tg_idrun_name(const struct tg_idrun *r)
{
	TG_CHECK_OBJ_NOTNULL(r, IDRUN_MAGIC);
	return r->name;
}

size_t
tg_idrun_ram(const struct tg_idrun *r)
{
	TG_CHECK_OBJ_NOTNULL(r, IDRUN_MAGIC);
	return r->ram;
}

/* Is b, read from where block no lies, that block and undamaged? */
static bool
block_ok(const struct tg_idrun *r, const struct block *b, uint64_t no)
{
	return b->crc == block_crc(b) && b->no == (uint32_t)no &&
	       b->n == block_n(r->meta.count, no) && b->pad == 0;
}

/* Read block no into b and check it: 0, -EBADMSG, -EIO, -errno. */
static int
read_block(const struct tg_idrun *r, struct block *b, uint64_t no)
{
	int rc = pread_all(r->fd, b, sizeof(*b), HDR_SIZE + no * TG_IDRUN_BLOCK);

	if (rc != 0)
		return rc;
	return block_ok(r, b, no) ? 0 : -EBADMSG;
}

int
tg_idrun_find(const struct tg_idrun *r, struct tg_digest d, struct tg_idrun_ent *out)
{
	struct block b;
	size_t lo = 0, hi;
	int rc;

	TG_CHECK_OBJ_NOTNULL(r, IDRUN_MAGIC);
	/* The last block whose first lo is <= d.lo. */
	hi = (size_t)r->blocks;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (r->index[mid] <= d.lo)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return 0;
	for (uint64_t no = lo - 1;; no--) {
		if ((rc = read_block(r, &b, no)) != 0)
			return rc;
		size_t l = 0, h = b.n;
		while (l < h) {
			size_t mid = l + (h - l) / 2;
			int c = dcmp(b.e[mid].lo, b.e[mid].hi, d.lo, d.hi);
			if (c == 0) {
				*out = b.e[mid];
				return 1;
			}
			if (c < 0)
				l = mid + 1;
			else
				h = mid;
		}
		/* Entries with d.lo may have begun in the block before (equal lo
		 * values straddling a boundary): look there only if d sorts before
		 * this block's first entry and that entry has d's lo. */
		if (no == 0 || r->index[no] != d.lo || dcmp(d.lo, d.hi, b.e[0].lo, b.e[0].hi) > 0)
			return 0;
	}
}

int
tg_idrun_each_keys(const struct tg_idrun *r, int (*fn)(void *arg, const uint64_t *lo, size_t n),
                   void *arg)
{
	uint64_t *k, prev = 0;
	uint32_t crc = 0;
	int rc = 0;

	TG_CHECK_OBJ_NOTNULL(r, IDRUN_MAGIC);
	if ((k = malloc(KEYS_CHUNK * sizeof(*k))) == NULL)
		return -ENOMEM;
	for (uint64_t i = 0; i < r->meta.count && rc == 0;) {
		uint64_t m = r->meta.count - i < KEYS_CHUNK ? r->meta.count - i : KEYS_CHUNK;
		if ((rc = pread_all(r->fd, k, m * 8, r->keys_off + i * 8)) != 0)
			break;
		crc = tg_crc32c(crc, k, m * 8);
		/* The whole chunk is checked before any of it is passed on. */
		for (uint64_t j = 0; j < m; j++) {
			if ((i + j > 0 && k[j] < prev) ||
			    ((i + j) % PER_BLOCK == 0 && k[j] != r->index[(i + j) / PER_BLOCK])) {
				rc = -EBADMSG;
				break;
			}
			prev = k[j];
		}
		if (rc == 0)
			rc = fn(arg, k, (size_t)m);
		i += m;
	}
	free(k);
	if (rc == 0 && crc != r->keys_crc)
		rc = -EBADMSG;
	return rc;
}

struct one_key {
	int (*fn)(void *arg, uint64_t lo);
	void *arg;
};

static int
each_one(void *arg, const uint64_t *lo, size_t n)
{
	const struct one_key *o = arg;
	int rc = 0;

	for (size_t j = 0; j < n && rc == 0; j++)
		rc = o->fn(o->arg, lo[j]);
	return rc;
}

int
tg_idrun_each_key(const struct tg_idrun *r, int (*fn)(void *arg, uint64_t lo), void *arg)
{
	struct one_key o = {.fn = fn, .arg = arg};

	return tg_idrun_each_keys(r, each_one, &o);
}

int
tg_idrun_each(const struct tg_idrun *r, int (*fn)(void *arg, const struct tg_idrun_ent *e),
              void *arg)
{
	struct block *b;
	struct tg_idrun_ent prev = {0};
	int rc = 0;

	TG_CHECK_OBJ_NOTNULL(r, IDRUN_MAGIC);
	if ((b = malloc(WR_BLOCKS * sizeof(*b))) == NULL)
		return -ENOMEM;
	for (uint64_t no = 0; no < r->blocks && rc == 0;) {
		uint64_t m = r->blocks - no < WR_BLOCKS ? r->blocks - no : WR_BLOCKS;
		if ((rc = pread_all(r->fd, b, m * sizeof(*b), HDR_SIZE + no * TG_IDRUN_BLOCK)) != 0)
			break;
		for (uint64_t j = 0; j < m && rc == 0; j++, no++) {
			if (!block_ok(r, &b[j], no) || b[j].e[0].lo != r->index[no]) {
				rc = -EBADMSG;
				break;
			}
			for (uint32_t i = 0; i < b[j].n; i++) {
				if ((no > 0 || i > 0) && !ent_less(&prev, &b[j].e[i])) {
					rc = -EBADMSG;
					break;
				}
				prev = b[j].e[i];
				if ((rc = fn(arg, &b[j].e[i])) != 0)
					break;
			}
		}
	}
	free(b);
	return rc;
}

/* ---- merging ---- */

/* One input of a merge: its current block and the place in it. */
struct cur {
	const struct tg_idrun *r;
	size_t in; /* its index in the inputs: ties go to the earliest */
	uint64_t no;
	uint32_t i;
	struct block b;
};

static inline bool
cur_less(const struct cur *a, const struct cur *b)
{
	int c = dcmp(a->b.e[a->i].lo, a->b.e[a->i].hi, b->b.e[b->i].lo, b->b.e[b->i].hi);

	return c < 0 || (c == 0 && a->in < b->in);
}

static void
heap_down(struct cur **h, size_t n, size_t i)
{
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			return;
		if (c + 1 < n && cur_less(h[c + 1], h[c]))
			c++;
		if (!cur_less(h[c], h[i]))
			return;
		struct cur *t = h[i];
		h[i] = h[c];
		h[c] = t;
		i = c;
	}
}

/* Move c to its next entry: 1 when it has one, 0 at its end, -EBADMSG/-errno. */
static int
cur_next(struct cur *c)
{
	struct tg_idrun_ent prev = c->b.e[c->i];
	int rc;

	if (++c->i == c->b.n) {
		if (++c->no == c->r->blocks)
			return 0;
		if ((rc = read_block(c->r, &c->b, c->no)) != 0)
			return rc;
		c->i = 0;
	}
	return ent_less(&prev, &c->b.e[c->i]) ? 1 : -EBADMSG;
}

static int
merge_err(struct wr *w, const struct cur *c, int rc)
{
	return fail(w->err, w->errlen, rc, "cannot merge into %s: id run %s, block %llu: %s",
	            w->path, c->r->name, (unsigned long long)c->no,
	            rc == -EBADMSG ? "damaged (CRC or order)" : strerror(-rc));
}

int
tg_idrun_merge(const char *dir, const char *name, struct tg_idrun *const *in, size_t nin,
               uint32_t drop_before, void (*dropped)(void *arg, const struct tg_idrun_ent *e),
               void *arg, struct tg_idrun_meta *meta, char *err, size_t errlen)
{
	struct cur *cs = calloc(nin ? nin : 1, sizeof(*cs));
	struct cur **heap = calloc(nin ? nin : 1, sizeof(*heap));
	struct tg_idrun_ent *group = calloc(nin ? nin : 1, sizeof(*group));
	uint64_t lsn_from = UINT64_MAX, lsn_to = 0;
	size_t nh = 0;
	struct wr w;
	int rc;

	if (cs == NULL || heap == NULL || group == NULL) {
		rc = fail(err, errlen, -ENOMEM, "no memory to merge into %s/%s", dir, name);
		goto out;
	}
	if ((rc = wr_open(&w, dir, name, UINT64_MAX, err, errlen)) != 0)
		goto out;
	for (size_t k = 0; k < nin; k++) {
		TG_CHECK_OBJ_NOTNULL(in[k], IDRUN_MAGIC);
		cs[k].r = in[k];
		cs[k].in = k;
		if (in[k]->meta.lsn_from < lsn_from)
			lsn_from = in[k]->meta.lsn_from;
		if (in[k]->meta.lsn_to > lsn_to)
			lsn_to = in[k]->meta.lsn_to;
		if (in[k]->blocks == 0)
			continue;
		if ((rc = read_block(in[k], &cs[k].b, 0)) != 0) {
			rc = merge_err(&w, &cs[k], rc);
			wr_free(&w);
			goto out;
		}
		heap[nh++] = &cs[k];
	}
	if (lsn_from == UINT64_MAX)
		lsn_from = 0;
	for (size_t i = nh / 2; i-- > 0;)
		heap_down(heap, nh, i);
	while (nh > 0) {
		/* The group: this digest's entry in every input that has it, earliest input first.
		 */
		size_t ng = 0;
		const struct tg_idrun_ent *top = &heap[0]->b.e[heap[0]->i];
		uint64_t glo = top->lo, ghi = top->hi;
		while (nh > 0 && heap[0]->b.e[heap[0]->i].lo == glo &&
		       heap[0]->b.e[heap[0]->i].hi == ghi) {
			struct cur *c = heap[0];
			group[ng++] = c->b.e[c->i];
			rc = cur_next(c);
			if (rc < 0) {
				rc = merge_err(&w, c, rc);
				wr_free(&w);
				goto out;
			}
			if (rc == 0)
				heap[0] = heap[--nh];
			heap_down(heap, nh, 0);
		}
		/* Drop the entries out of the window first, then keep the earliest
		 * of the rest: an id forgotten and applied again after it left the
		 * window has an old entry and a new one, and the new one is live. */
		size_t keep = ng;
		for (size_t g = 0; g < ng; g++) {
			if (group[g].seen >= drop_before &&
			    (keep == ng || group[g].seen < group[keep].seen))
				keep = g;
		}
		for (size_t g = 0; g < ng; g++) {
			if (g != keep && dropped != NULL)
				dropped(arg, &group[g]);
		}
		if (keep < ng && (rc = wr_add(&w, &group[keep])) != 0) {
			wr_free(&w);
			goto out;
		}
	}
	rc = wr_close(&w, lsn_from, lsn_to, meta);
out:
	free(cs);
	free(heap);
	free(group);
	return rc;
}
