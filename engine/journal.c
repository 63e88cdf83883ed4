/*
 * journal.c - the journal's bytes on disk: CRC32C, the record encoder and
 * the segment reader (docs/JOURNAL.md).
 *
 * The encoder is pure: a caller's buffer in, bytes out, no allocation, no
 * system call, so worker threads can use it on the hot path.  The reader runs
 * at start-up only; it maps one segment at a time and validates every byte
 * it hands out.  Neither ever changes a file: cutting a torn tail or
 * discarding damage is a separate, explicit call.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tg_assert.h"
#include "tg_journal.h"

/* ---- CRC32C ---- */

/* Reflected Castagnoli polynomial 0x82f63b78, one byte at a time. */
static const uint32_t crc32c_table[256] = {
    0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4, 0xc79a971f, 0x35f1141c, 0x26a1e7e8, 0xd4ca64eb,
    0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b, 0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24,
    0x105ec76f, 0xe235446c, 0xf165b798, 0x030e349b, 0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
    0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54, 0x5d1d08bf, 0xaf768bbc, 0xbc267848, 0x4e4dfb4b,
    0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a, 0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35,
    0xaa64d611, 0x580f5512, 0x4b5fa6e6, 0xb93425e5, 0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
    0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45, 0xf779deae, 0x05125dad, 0x1642ae59, 0xe4292d5a,
    0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a, 0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595,
    0x417b1dbc, 0xb3109ebf, 0xa0406d4b, 0x522bee48, 0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
    0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687, 0x0c38d26c, 0xfe53516f, 0xed03a29b, 0x1f682198,
    0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927, 0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38,
    0xdbfc821c, 0x2997011f, 0x3ac7f2eb, 0xc8ac71e8, 0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
    0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096, 0xa65c047d, 0x5437877e, 0x4767748a, 0xb50cf789,
    0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859, 0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46,
    0x7198540d, 0x83f3d70e, 0x90a324fa, 0x62c8a7f9, 0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
    0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36, 0x3cdb9bdd, 0xceb018de, 0xdde0eb2a, 0x2f8b6829,
    0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c, 0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93,
    0x082f63b7, 0xfa44e0b4, 0xe9141340, 0x1b7f9043, 0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
    0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3, 0x55326b08, 0xa759e80b, 0xb4091bff, 0x466298fc,
    0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c, 0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033,
    0xa24bb5a6, 0x502036a5, 0x4370c551, 0xb11b4652, 0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
    0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d, 0xef087a76, 0x1d63f975, 0x0e330a81, 0xfc588982,
    0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d, 0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622,
    0x38cc2a06, 0xcaa7a905, 0xd9f75af1, 0x2b9cd9f2, 0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
    0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530, 0x0417b1db, 0xf67c32d8, 0xe52cc12c, 0x1747422f,
    0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff, 0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0,
    0xd3d3e1ab, 0x21b862a8, 0x32e8915c, 0xc083125f, 0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
    0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90, 0x9e902e7b, 0x6cfbad78, 0x7fab5e8c, 0x8dc0dd8f,
    0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee, 0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1,
    0x69e9f0d5, 0x9b8273d6, 0x88d28022, 0x7ab90321, 0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
    0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81, 0x34f4f86a, 0xc69f7b69, 0xd5cf889d, 0x27a40b9e,
    0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e, 0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351,
};

uint32_t
tg_crc32c_sw(uint32_t crc, const void *p, size_t len)
{
	const uint8_t *b = p;

	crc = ~crc;
	while (len--)
		crc = crc32c_table[(crc ^ *b++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t
tg_crc32c_hw(uint32_t crc, const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t c = ~crc;

	while (len >= 8) {
		uint64_t w;

		memcpy(&w, b, 8); /* unaligned is fine for the instruction, not for C */
		c = __builtin_ia32_crc32di(c, w);
		b += 8;
		len -= 8;
	}
	uint32_t c32 = (uint32_t)c;
	while (len--)
		c32 = __builtin_ia32_crc32qi(c32, *b++);
	return ~c32;
}

bool
tg_crc32c_hw_available(void)
{
	/* 0 unknown, 1 no, 2 yes; a benign race: every thread computes the same. */
	static int known;
	int k = __atomic_load_n(&known, __ATOMIC_RELAXED);

	if (k == 0) {
		__builtin_cpu_init();
		k = __builtin_cpu_supports("sse4.2") ? 2 : 1;
		__atomic_store_n(&known, k, __ATOMIC_RELAXED);
	}
	return k == 2;
}
#else
/* No hardware path on this architecture: the table serves. */
uint32_t
tg_crc32c_hw(uint32_t crc, const void *p, size_t len)
{
	return tg_crc32c_sw(crc, p, len);
}

bool
tg_crc32c_hw_available(void)
{
	return false;
}
#endif

uint32_t
tg_crc32c(uint32_t crc, const void *p, size_t len)
{
	if (TG_LIKELY(tg_crc32c_hw_available()))
		return tg_crc32c_hw(crc, p, len);
	return tg_crc32c_sw(crc, p, len);
}

/* ---- record types ---- */

static const size_t payload_size[TG_JREC__COUNT + 1] = {
#define TG_JREC(N, n, v, d) [v] = sizeof(struct tg_jrec_##n),
#include "tbl/tg_journal.h"
#undef TG_JREC
};

static const char *const type_name[TG_JREC__COUNT + 1] = {
#define TG_JREC(N, n, v, d) [v] = #n,
#include "tbl/tg_journal.h"
#undef TG_JREC
};

size_t
tg_journal_payload_size(unsigned type)
{
	return type >= 1 && type <= TG_JREC__COUNT ? payload_size[type] : 0;
}

bool
tg_journal_itemized(unsigned type, size_t *fixed)
{
	size_t f = 0;

	switch (type) {
	case TG_JREC_COMMIT:
	case TG_JREC_DEBIT:
	case TG_JREC_EXPIRE:
		f = sizeof(struct tg_jitem_charge);
		break;
	case TG_JREC_CREDIT:
		f = sizeof(struct tg_jitem_credit);
		break;
	case TG_JREC_RESERVE:
	case TG_JREC_SET_BALANCE:
	case TG_JREC_SETTINGS:
		break;
	default:
		return false;
	}
	if (fixed != NULL)
		*fixed = f;
	return true;
}

bool
tg_journal_payload_ok(unsigned type, unsigned version, const void *payload, size_t len)
{
	size_t v1 = tg_journal_payload_size(type), fixed;
	struct tg_jitem_tail t;

	if (v1 == 0)
		return false;
	if (version == 1)
		return len == v1;
	if (version != 2 || !tg_journal_itemized(type, &fixed) || len < v1 + sizeof(t) + fixed)
		return false;
	memcpy(&t, (const uint8_t *)payload + v1, sizeof(t));
	size_t want = v1 + sizeof(t) + fixed;
	for (unsigned i = 0; i < TG_JITEM_STRINGS; i++)
		want += t.slen[i];
	return t.pad == 0 && len == want;
}

const void *
tg_journal_item_fixed(unsigned type, const void *payload, size_t len)
{
	size_t v1 = tg_journal_payload_size(type);

	if (len <= v1)
		return NULL;
	return (const uint8_t *)payload + v1 + sizeof(struct tg_jitem_tail);
}

const char *
tg_journal_item_str(unsigned type, const void *payload, size_t len, unsigned i, size_t *n)
{
	size_t v1 = tg_journal_payload_size(type), fixed = 0;
	struct tg_jitem_tail t;

	*n = 0;
	if (len <= v1 || i >= TG_JITEM_STRINGS || !tg_journal_itemized(type, &fixed))
		return NULL;
	memcpy(&t, (const uint8_t *)payload + v1, sizeof(t));
	size_t at = v1 + sizeof(t) + fixed;
	for (unsigned k = 0; k < i; k++)
		at += t.slen[k];
	*n = t.slen[i];
	return (const char *)payload + at;
}

size_t
tg_journal_item_build(void *buf, size_t cap, unsigned type, const void *v1, const void *fixed,
                      const char *const s[TG_JITEM_STRINGS], const size_t n[TG_JITEM_STRINGS])
{
	size_t base = tg_journal_payload_size(type), f = 0;
	struct tg_jitem_tail t = {{0}, 0};
	uint8_t *b = buf;

	TG_ASSERT(tg_journal_itemized(type, &f));
	for (unsigned i = 0; i < TG_JITEM_STRINGS; i++)
		t.slen[i] = (uint8_t)(s[i] == NULL ? 0 : n[i] > 255 ? 255 : n[i]);
	size_t len = base + sizeof(t) + f;
	for (unsigned i = 0; i < TG_JITEM_STRINGS; i++)
		len += t.slen[i];
	if (len > cap)
		return 0;
	memcpy(b, v1, base);
	memcpy(b + base, &t, sizeof(t));
	if (f > 0)
		memcpy(b + base + sizeof(t), fixed, f);
	size_t at = base + sizeof(t) + f;
	for (unsigned i = 0; i < TG_JITEM_STRINGS; i++) {
		if (t.slen[i] > 0)
			memcpy(b + at, s[i], t.slen[i]);
		at += t.slen[i];
	}
	return len;
}

const char *
tg_journal_type_name(unsigned type)
{
	return type >= 1 && type <= TG_JREC__COUNT ? type_name[type] : "?";
}

/* ---- the encoder ---- */

ssize_t
tg_journal_encode(void *buf, size_t cap, unsigned type, uint64_t lsn, int64_t time_ns,
                  const void *payload, size_t len)
{
	/* The payload's size says its version: the version 1 struct, or that and a tail. */
	unsigned version = len == tg_journal_payload_size(type) ? 1u : 2u;
	TG_ASSERT(tg_journal_payload_ok(type, version, payload, len) &&
	          len <= TG_JOURNAL_PAYLOAD_MAX);
	TG_ASSERT(buf != NULL && (payload != NULL || len == 0));
	size_t total = tg_journal_rec_size(len);
	uint8_t *b = buf;

	if (cap < total)
		return -ENOSPC;
	struct tg_jrec_hdr h = {
	    .len = (uint32_t)len,
	    .version = (uint16_t)version,
	    .type = (uint16_t)type,
	    .flags = 0,
	    .lsn = lsn,
	    .time = time_ns,
	};
	memcpy(b, &h, sizeof(h));
	memcpy(b + sizeof(h), payload, len);
	memset(b + sizeof(h) + len, 0, total - sizeof(h) - len);
	h.crc = tg_crc32c(0, b + 8, sizeof(h) - 8 + len);
	memcpy(b + offsetof(struct tg_jrec_hdr, crc), &h.crc, sizeof(h.crc));
	return (ssize_t)total;
}

static uint32_t
seg_header_crc(const struct tg_jseg_hdr *h)
{
	struct tg_jseg_hdr c = *h;

	c.crc = 0;
	return tg_crc32c(0, &c, sizeof(c));
}

void
tg_journal_seg_header(struct tg_jseg_hdr *h, uint64_t first_lsn, int64_t created)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, TG_JOURNAL_MAGIC, sizeof(h->magic));
	h->version = TG_JOURNAL_VERSION;
	h->hdr_size = TG_JOURNAL_HDR_SIZE;
	h->first_lsn = first_lsn;
	h->created = created;
	h->crc = seg_header_crc(h);
}

void
tg_journal_seg_name(char name[TG_JOURNAL_NAME_LEN], uint64_t first_lsn)
{
	snprintf(name, TG_JOURNAL_NAME_LEN, "journal-%016" PRIx64 ".tgj", first_lsn);
}

bool
tg_journal_seg_name_parse(const char *name, uint64_t *lsn)
{
	uint64_t v = 0;

	if (strlen(name) != TG_JOURNAL_NAME_LEN - 1 || memcmp(name, "journal-", 8) != 0 ||
	    memcmp(name + 24, ".tgj", 4) != 0)
		return false;
	for (int i = 8; i < 24; i++) {
		char c = name[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return false; /* upper case is not a name we write */
		v = v << 4 | d;
	}
	*lsn = v;
	return true;
}

/* ---- the reader ---- */

#define TG_JREADER_MAGIC 0x6a726472u

struct tg_journal_reader {
	uint32_t magic;
	int dirfd;
	uint64_t *segs; /* first LSNs, ascending */
	size_t nsegs;
	size_t cur; /* segment being read */
	bool mapped;
	const uint8_t *map; /* the current segment; NULL when it is empty */
	size_t size;
	uint64_t off;         /* next record in the current segment */
	uint64_t next_lsn;    /* the LSN the next record must carry */
	uint32_t seg_version; /* the current segment's format version */
	enum tg_journal_status stuck;
	struct tg_journal_pos pos;
};

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The first LSNs of the segments in the directory open at dirfd, sorted. */
static int
list_segments(int dirfd, uint64_t **out, size_t *n)
{
	int fd = dup(dirfd);
	DIR *d;
	uint64_t *v = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *e;
	int rc = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (d == NULL) {
		rc = -errno;
		close(fd);
		return rc;
	}
	/* A dup shares the offset of dirfd: a second listing must start from the top. */
	rewinddir(d);
	while ((e = readdir(d)) != NULL) {
		uint64_t lsn;

		if (!tg_journal_seg_name_parse(e->d_name, &lsn))
			continue;
		if (cnt == TG_JOURNAL_SEGMENTS_MAX) {
			rc = -EMFILE;
			break;
		}
		if (cnt == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			uint64_t *nv = realloc(v, ncap * sizeof(*v));

			if (nv == NULL) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		v[cnt++] = lsn;
	}
	closedir(d);
	if (rc < 0) {
		free(v);
		return rc;
	}
	if (cnt > 1)
		qsort(v, cnt, sizeof(*v), cmp_u64);
	*out = v;
	*n = cnt;
	return 0;
}

int
tg_journal_open_dir(struct tg_journal_reader **out, const char *dir)
{
	struct tg_journal_reader *r = calloc(1, sizeof(*r));
	int rc;

	if (r == NULL)
		return -ENOMEM;
	r->magic = TG_JREADER_MAGIC;
	r->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->dirfd < 0) {
		rc = -errno;
		free(r);
		return rc;
	}
	rc = list_segments(r->dirfd, &r->segs, &r->nsegs);
	if (rc < 0) {
		close(r->dirfd);
		free(r);
		return rc;
	}
	r->stuck = TG_JOURNAL_OK;
	r->next_lsn = r->nsegs ? r->segs[0] : 0;
	r->pos.lsn = r->next_lsn;
	*out = r;
	return 0;
}

static void
unmap_segment(struct tg_journal_reader *r)
{
	if (r->mapped && r->map != NULL)
		munmap((void *)(uintptr_t)r->map, r->size);
	r->mapped = false;
	r->map = NULL;
	r->size = 0;
}

void
tg_journal_close(struct tg_journal_reader *r)
{
	if (r == NULL)
		return;
	TG_CHECK_OBJ(r, TG_JREADER_MAGIC);
	unmap_segment(r);
	close(r->dirfd);
	free(r->segs);
	r->magic = 0;
	free(r);
}

int
tg_journal_seek(struct tg_journal_reader *r, uint64_t lsn)
{
	TG_CHECK_OBJ_NOTNULL(r, TG_JREADER_MAGIC);
	if (r->mapped || r->cur != 0 || r->stuck != TG_JOURNAL_OK)
		return -EINVAL;
	size_t i = 0;
	while (i + 1 < r->nsegs && r->segs[i + 1] <= lsn)
		i++;
	if (r->nsegs > 0) {
		r->cur = i;
		r->next_lsn = r->segs[i];
		r->pos.lsn = r->next_lsn;
	}
	return 0;
}

int
tg_journal_follow(struct tg_journal_reader *r)
{
	TG_CHECK_OBJ_NOTNULL(r, TG_JREADER_MAGIC);
	if (r->stuck != TG_JOURNAL_END && r->stuck != TG_JOURNAL_TORN_TAIL)
		return -EINVAL;
	uint64_t *segs;
	size_t n, k = 0;
	int rc = list_segments(r->dirfd, &segs, &n);
	if (rc < 0)
		return rc;
	if (r->nsegs > 0) {
		/* Pruning removes older segments only: the one being read must still be there. */
		while (k < n && segs[k] != r->segs[r->cur])
			k++;
		if (k == n) {
			free(segs);
			return -ESTALE;
		}
	}
	free(r->segs);
	r->segs = segs;
	r->nsegs = n;
	r->cur = k;
	if (r->mapped && r->map != NULL) {
		/* The same segment, grown: map it again at its new size, the offset kept. */
		struct stat st;
		int fd = openat(r->dirfd, r->pos.file, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0) {
			rc = -errno;
			if (fd >= 0)
				close(fd);
			return rc;
		}
		if ((size_t)st.st_size > r->size) {
			void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
			if (m == MAP_FAILED) {
				rc = -errno;
				close(fd);
				return rc;
			}
			munmap((void *)(uintptr_t)r->map, r->size);
			r->map = m;
			r->size = (size_t)st.st_size;
		}
		close(fd);
	} else {
		/* An empty last segment: opened again from its header. */
		unmap_segment(r);
	}
	r->stuck = TG_JOURNAL_OK;
	return 0;
}

size_t
tg_journal_segments(const struct tg_journal_reader *r)
{
	TG_CHECK_OBJ_NOTNULL(r, TG_JREADER_MAGIC);
	return r->nsegs;
}

uint64_t
tg_journal_segment_lsn(const struct tg_journal_reader *r, size_t i)
{
	TG_CHECK_OBJ_NOTNULL(r, TG_JREADER_MAGIC);
	TG_ASSERT(i < r->nsegs);
	return r->segs[i];
}

const struct tg_journal_pos *
tg_journal_where(const struct tg_journal_reader *r)
{
	TG_CHECK_OBJ_NOTNULL(r, TG_JREADER_MAGIC);
	return &r->pos;
}

uint64_t
tg_journal_next_lsn(const struct tg_journal_reader *r)
{
	TG_CHECK_OBJ_NOTNULL(r, TG_JREADER_MAGIC);
	return r->next_lsn;
}

static enum tg_journal_status
stop(struct tg_journal_reader *r, enum tg_journal_status s, uint64_t offset)
{
	r->stuck = s;
	r->pos.offset = offset;
	r->pos.lsn = r->next_lsn;
	return s;
}

/*
 * Map segment r->cur and check its header.  OK leaves r->off after the
 * header; an empty last segment also returns OK, with nothing to read.
 */
static enum tg_journal_status
open_segment(struct tg_journal_reader *r)
{
	uint64_t first = r->segs[r->cur];
	bool last = r->cur + 1 == r->nsegs;
	struct tg_jseg_hdr h;
	struct stat st;
	void *m;
	int fd;

	tg_journal_seg_name(r->pos.file, first);
	r->pos.empty_seg = false;
	if (first != r->next_lsn)
		return stop(r, TG_JOURNAL_GAP, 0);
	fd = openat(r->dirfd, r->pos.file, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		r->pos.err = -errno;
		if (fd >= 0)
			close(fd);
		return stop(r, TG_JOURNAL_ERROR, 0);
	}
	if (st.st_size == 0) {
		/* A writer died between creating the file and writing its header. */
		close(fd);
		r->pos.empty_seg = true;
		if (!last)
			return stop(r, TG_JOURNAL_CORRUPT, 0);
		r->mapped = true;
		r->off = 0;
		return TG_JOURNAL_OK;
	}
	if (st.st_size < (off_t)TG_JOURNAL_HDR_SIZE) {
		close(fd);
		return stop(r, last ? TG_JOURNAL_TORN_TAIL : TG_JOURNAL_BAD_HEADER, 0);
	}
	m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED) {
		r->pos.err = -errno;
		close(fd);
		return stop(r, TG_JOURNAL_ERROR, 0);
	}
	close(fd);
	r->mapped = true;
	r->map = m;
	r->size = (size_t)st.st_size;
	memcpy(&h, r->map, sizeof(h));
	if (memcmp(h.magic, TG_JOURNAL_MAGIC, sizeof(h.magic)) != 0 || h.version == 0)
		return stop(r, TG_JOURNAL_BAD_HEADER, 0);
	if (h.version > TG_JOURNAL_VERSION)
		return stop(r, TG_JOURNAL_NEWER_VERSION, 0);
	if (h.hdr_size != TG_JOURNAL_HDR_SIZE || h.crc != seg_header_crc(&h) ||
	    h.first_lsn != first)
		return stop(r, TG_JOURNAL_BAD_HEADER, 0);
	r->seg_version = h.version;
	r->pos.seg_version = h.version;
	r->off = TG_JOURNAL_HDR_SIZE;
	return TG_JOURNAL_OK;
}

/*
 * Is there a whole record with a good checksum at off?  Its meaning is not
 * checked: this only tells damage from a torn tail.
 */
static bool
intact_at(const struct tg_journal_reader *r, uint64_t off, struct tg_jrec_hdr *h)
{
	if (r->size - off < sizeof(*h))
		return false;
	memcpy(h, r->map + off, sizeof(*h));
	if (h->len > TG_JOURNAL_PAYLOAD_MAX || tg_journal_rec_size(h->len) > r->size - off)
		return false;
	if (tg_crc32c(0, r->map + off + 8, sizeof(*h) - 8 + h->len) != h->crc)
		return false;
	for (size_t i = sizeof(*h) + h->len; i < tg_journal_rec_size(h->len); i++)
		if (r->map[off + i] != 0)
			return false;
	return true;
}

/*
 * Damage at off.  Only the last segment can end in a torn write; elsewhere
 * damage is always CORRUPT.  In the last segment, what comes after the damage
 * decides (docs/JOURNAL.md, "Torn or damaged"):
 *
 *  - a version 2 segment confirms every flush: a CONFIRM record is written
 *    after the flush's records are on disk, and nothing is acknowledged
 *    before its CONFIRM is on disk too.  An intact CONFIRM after the damage
 *    means the damaged bytes were on disk and acknowledged: CORRUPT.  With
 *    none after it, the damage lies in the last, never-confirmed flush, whose
 *    pages may have reached the disk in any order: TORN_TAIL, even when some
 *    of its later records are intact.
 *  - a version 1 segment has no CONFIRM records: any intact record after the
 *    damage makes it CORRUPT.
 *
 * The scan tries every 8-byte boundary to the end of the file; it runs once,
 * at start-up, and a candidate costs a CRC only when its length is plausible.
 */
static enum tg_journal_status
damaged(struct tg_journal_reader *r, uint64_t off)
{
	struct tg_jrec_hdr h;

	if (r->cur + 1 < r->nsegs)
		return stop(r, TG_JOURNAL_CORRUPT, off);
	for (uint64_t o = off + TG_JOURNAL_ALIGN; o + sizeof(h) <= r->size; o += TG_JOURNAL_ALIGN)
		if (intact_at(r, o, &h) && (r->seg_version < 2 || h.type == TG_JREC_CONFIRM))
			return stop(r, TG_JOURNAL_CORRUPT, off);
	return stop(r, TG_JOURNAL_TORN_TAIL, off);
}

enum tg_journal_status
tg_journal_next(struct tg_journal_reader *r, struct tg_jrec *rec)
{
	TG_CHECK_OBJ_NOTNULL(r, TG_JREADER_MAGIC);
	if (r->stuck != TG_JOURNAL_OK)
		return r->stuck;
	/* Each pass returns, skips a CONFIRM or moves to the next segment: bounded by the file. */
	for (;;) {
		if (!r->mapped) {
			if (r->cur == r->nsegs)
				return stop(r, TG_JOURNAL_END, r->pos.offset);
			enum tg_journal_status s = open_segment(r);
			if (s != TG_JOURNAL_OK)
				return s;
		}
		if (r->off == r->size) {
			if (r->cur + 1 == r->nsegs) {
				/* Stay on the last segment: END reports where a writer appends. */
				r->pos.offset = r->off;
				return stop(r, TG_JOURNAL_END, r->off);
			}
			unmap_segment(r);
			r->cur++;
			continue;
		}
		uint64_t off = r->off;
		struct tg_jrec_hdr h;

		if (!intact_at(r, off, &h))
			return damaged(r, off);
		/* Past here the bytes are what some writer wrote. */
		if (h.version > TG_JOURNAL_REC_VERSION || h.flags != 0 || h.type > TG_JREC__COUNT)
			return stop(r, TG_JOURNAL_NEWER_VERSION, off);
		if (h.version == 0 || h.type == 0 ||
		    !tg_journal_payload_ok(h.type, h.version, r->map + off + sizeof(h), h.len))
			return stop(r, TG_JOURNAL_CORRUPT, off);
		if (h.type == TG_JREC_CONFIRM) {
			/* Confirms the record before it: same LSN, takes none of its own. */
			uint64_t lsn;
			memcpy(&lsn, r->map + off + sizeof(h), sizeof(lsn));
			if (h.lsn != r->next_lsn - 1 || lsn != h.lsn)
				return stop(r, TG_JOURNAL_CORRUPT, off);
			r->pos.confirmed = lsn;
			r->pos.confirms++;
			r->off = off + tg_journal_rec_size(h.len);
			r->pos.offset = r->off;
			continue;
		}
		if (h.lsn != r->next_lsn)
			return stop(r, TG_JOURNAL_GAP, off);
		rec->lsn = h.lsn;
		rec->time = h.time;
		rec->type = h.type;
		rec->version = h.version;
		rec->len = h.len;
		rec->payload = r->map + off + sizeof(h);
		r->off = off + tg_journal_rec_size(h.len);
		r->next_lsn++;
		r->pos.offset = r->off;
		r->pos.lsn = r->next_lsn;
		return TG_JOURNAL_OK;
	}
}

const char *
tg_journal_status_name(enum tg_journal_status s)
{
	switch (s) {
	case TG_JOURNAL_OK:
		return "OK";
	case TG_JOURNAL_END:
		return "END";
	case TG_JOURNAL_TORN_TAIL:
		return "TORN_TAIL";
	case TG_JOURNAL_CORRUPT:
		return "CORRUPT";
	case TG_JOURNAL_NEWER_VERSION:
		return "NEWER_VERSION";
	case TG_JOURNAL_GAP:
		return "GAP";
	case TG_JOURNAL_BAD_HEADER:
		return "BAD_HEADER";
	case TG_JOURNAL_ERROR:
		return "ERROR";
	}
	return "?";
}

void
tg_journal_describe(const struct tg_journal_reader *r, char *buf, size_t len)
{
	TG_CHECK_OBJ_NOTNULL(r, TG_JREADER_MAGIC);
	const struct tg_journal_pos *p = &r->pos;
	const char *f = p->file[0] ? p->file : "(no segment)";
	unsigned long long off = (unsigned long long)p->offset, lsn = (unsigned long long)p->lsn;

	switch (r->stuck) {
	case TG_JOURNAL_OK:
		snprintf(buf, len, "journal: reading %s at offset %llu, next LSN %llu", f, off,
		         lsn);
		break;
	case TG_JOURNAL_END:
		snprintf(buf, len, "journal: clean end in %s at offset %llu, next LSN %llu", f, off,
		         lsn);
		break;
	case TG_JOURNAL_TORN_TAIL:
		snprintf(buf, len,
		         "journal: torn tail in %s at offset %llu (LSN %llu): the last write did "
		         "not finish and was never confirmed, so never acknowledged; it is cut "
		         "there and the journal continues",
		         f, off, lsn);
		break;
	case TG_JOURNAL_CORRUPT:
		snprintf(
		    buf, len,
		    "journal: %s in %s at offset %llu (LSN %llu expected) with more journal "
		    "after it; start-up stops.  Restore %s from a backup or replica, or discard "
		    "everything from there on with `tollctl journal-cut --data-dir DIR --at "
		    "%s:%llu` "
		    "(docs/JOURNAL.md)",
		    p->empty_seg ? "an empty segment file" : "a damaged record", f, off, lsn, f, f,
		    off);
		break;
	case TG_JOURNAL_NEWER_VERSION:
		snprintf(buf, len,
		         "journal: %s at offset %llu was written by a newer tollgate (format above "
		         "segment %u / record %u); run that version",
		         f, off, TG_JOURNAL_VERSION, TG_JOURNAL_REC_VERSION);
		break;
	case TG_JOURNAL_GAP:
		snprintf(buf, len,
		         "journal: gap at %s offset %llu: LSN %llu expected; a segment is missing "
		         "(restore it from a backup)",
		         f, off, lsn);
		break;
	case TG_JOURNAL_BAD_HEADER:
		snprintf(buf, len,
		         "journal: %s has no valid segment header for its name (magic, size, "
		         "checksum or first LSN); restore it or move it aside",
		         f);
		break;
	case TG_JOURNAL_ERROR:
		snprintf(buf, len, "journal: cannot read %s: %s", f, strerror(-p->err));
		break;
	}
}

/* Cut file (in dirfd) at offset and make that durable. */
static int
cut_file(int dirfd, const char *file, uint64_t offset, bool check_size)
{
	struct stat st;
	int fd = openat(dirfd, file, O_WRONLY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (check_size && fstat(fd, &st) < 0)
		rc = -errno;
	else if (check_size && (uint64_t)st.st_size < offset)
		rc = -EINVAL;
	if (rc == 0 && (ftruncate(fd, (off_t)offset) < 0 || fsync(fd) < 0))
		rc = -errno;
	close(fd);
	if (rc == 0 && fsync(dirfd) < 0)
		rc = -errno;
	return rc;
}

int
tg_journal_truncate_tail(struct tg_journal_reader *r)
{
	TG_CHECK_OBJ_NOTNULL(r, TG_JREADER_MAGIC);
	if (r->stuck != TG_JOURNAL_TORN_TAIL)
		return -EINVAL;
	unmap_segment(r);
	int rc = cut_file(r->dirfd, r->pos.file, r->pos.offset, false);
	if (rc < 0)
		return rc;
	r->stuck = TG_JOURNAL_END;
	return 0;
}

int
tg_journal_truncate_at(const char *dir, const char *file, uint64_t offset)
{
	uint64_t lsn, *segs = NULL;
	size_t n = 0;
	int dirfd, rc;

	if (!tg_journal_seg_name_parse(file, &lsn))
		return -EINVAL;
	if (offset != 0 && (offset < TG_JOURNAL_HDR_SIZE || offset % TG_JOURNAL_ALIGN != 0))
		return -EINVAL;
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	rc = cut_file(dirfd, file, offset, true);
	if (rc == 0)
		rc = list_segments(dirfd, &segs, &n);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char from[TG_JOURNAL_NAME_LEN], to[TG_JOURNAL_NAME_LEN + 32];

		if (segs[i] <= lsn)
			continue;
		tg_journal_seg_name(from, segs[i]);
		snprintf(to, sizeof(to), "%s.cut-%lld", from, (long long)time(NULL));
		if (renameat2(dirfd, from, dirfd, to, RENAME_NOREPLACE) < 0)
			rc = -errno;
	}
	free(segs);
	if (rc == 0 && fsync(dirfd) < 0)
		rc = -errno;
	close(dirfd);
	return rc;
}
