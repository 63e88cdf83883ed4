/*
 * test_idrun.c - id runs (docs/JOURNAL.md, "Id runs"): write, open, find,
 * the walks, damage anywhere in the file, empty runs and merges.
 *
 * Each test works in a fresh temporary directory.  Entries carry fields
 * derived from their digest, so every found entry is checked whole, not just
 * its presence.  Damage is done by flipping one byte at an offset computed
 * from the documented layout.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "tg_idrun.h"
#include "testrand.h"

#define BLK  4096u
#define PERB 102u

static char tmpdir[64];

/* The entry of digest (lo, hi): every other field derived from it. */
static struct tg_idrun_ent
ent_of(uint64_t lo, uint64_t hi, uint32_t seen)
{
	return (struct tg_idrun_ent){.lo = lo,
	                             .hi = hi,
	                             .fingerprint = lo * 31 ^ hi,
	                             .reply = (int64_t)(hi >> 3) - (int64_t)(lo >> 5),
	                             .seen = seen,
	                             .result = (uint32_t)(hi % 7)};
}

static void
assert_ent_equal(const struct tg_idrun_ent *a, const struct tg_idrun_ent *b)
{
	assert_true(memcmp(a, b, sizeof(*a)) == 0);
}

static int
cmp_ent(const void *a, const void *b)
{
	const struct tg_idrun_ent *x = a, *y = b;

	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	if (x->hi != y->hi)
		return x->hi < y->hi ? -1 : 1;
	return 0;
}

/* n random entries with distinct digests, seen in [base, base + spread). */
static struct tg_idrun_ent *
random_ents(size_t n, uint64_t seed, uint32_t base, uint32_t spread)
{
	struct tg_idrun_ent *e = malloc((n ? n : 1) * sizeof(*e));
	uint64_t s = seed;

	assert_non_null(e);
	for (size_t i = 0; i < n; i++) {
		uint64_t lo = it_splitmix(&s), hi = it_splitmix(&s);
		e[i] = ent_of(lo, hi, base + (uint32_t)(it_splitmix(&s) % spread));
	}
	return e;
}

static int
setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/tg_idrun.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int
teardown(void **state)
{
	DIR *d = opendir(tmpdir);
	struct dirent *de;
	char p[512];

	(void)state;
	while (d && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", tmpdir, de->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	return rmdir(tmpdir);
}

static bool
exists(const char *name)
{
	char p[512];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
	return stat(p, &st) == 0;
}

static void
flip(const char *name, uint64_t off)
{
	char p[512];
	unsigned char c;
	int fd;

	snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
	fd = open(p, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
	c ^= 0x5a;
	assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
	close(fd);
}

static void
write_ok(const char *name, struct tg_idrun_ent *e, size_t n, struct tg_idrun_meta *m)
{
	char err[256] = "";
	int rc = tg_idrun_write(tmpdir, name, e, n, m, err, sizeof(err));

	if (rc != 0)
		fail_msg("tg_idrun_write: %d %s", rc, err);
	assert_false(exists("x.tgi.new"));
}

static struct tg_idrun *
open_ok(const char *name)
{
	char err[256] = "";
	struct tg_idrun *r = NULL;
	int rc = tg_idrun_open(&r, tmpdir, name, err, sizeof(err));

	if (rc != 0)
		fail_msg("tg_idrun_open: %d %s", rc, err);
	assert_non_null(r);
	return r;
}

/* Open must fail with -EPROTO and a reason containing why. */
static void
open_bad(const char *name, const char *why)
{
	char err[256] = "";
	struct tg_idrun *r = NULL;

	assert_int_equal(tg_idrun_open(&r, tmpdir, name, err, sizeof(err)), -EPROTO);
	assert_null(r);
	if (strstr(err, why) == NULL)
		fail_msg("open's reason \"%s\" does not say \"%s\"", err, why);
}

struct collect {
	struct tg_idrun_ent *e;
	uint64_t *k;
	size_t n, cap, stop_at;
};

static int
collect_ent(void *arg, const struct tg_idrun_ent *e)
{
	struct collect *c = arg;

	if (c->n == c->stop_at)
		return 7;
	assert_true(c->n < c->cap);
	c->e[c->n++] = *e;
	return 0;
}

static int
collect_key(void *arg, uint64_t lo)
{
	struct collect *c = arg;

	if (c->n == c->stop_at)
		return 9;
	assert_true(c->n < c->cap);
	c->k[c->n++] = lo;
	return 0;
}

/* Everything a good run of sorted[0..n) must answer. */
static void
check_run(struct tg_idrun *r, const struct tg_idrun_ent *sorted, size_t n, size_t absent,
          uint64_t seed)
{
	struct tg_idrun_ent got;
	struct collect c = {.cap = n, .stop_at = SIZE_MAX};
	uint64_t s = seed;

	assert_int_equal(tg_idrun_meta(r)->count, n);
	for (size_t i = 0; i < n; i++) {
		memset(&got, 0, sizeof(got));
		struct tg_digest d = {sorted[i].lo, sorted[i].hi};
		assert_int_equal(tg_idrun_find(r, d, &got), 1);
		assert_ent_equal(&got, &sorted[i]);
	}
	for (size_t i = 0; i < absent; i++) {
		struct tg_digest d = {it_splitmix(&s), it_splitmix(&s)};
		if (bsearch(&(struct tg_idrun_ent){.lo = d.lo, .hi = d.hi}, sorted, n,
		            sizeof(*sorted), cmp_ent) != NULL)
			continue;
		assert_int_equal(tg_idrun_find(r, d, &got), 0);
	}
	/* Neighbours of present digests: same lo, hi one off. */
	for (size_t i = 0; i < n && i < absent; i++) {
		struct tg_digest d = {sorted[i].lo, sorted[i].hi + 1};
		if (bsearch(&(struct tg_idrun_ent){.lo = d.lo, .hi = d.hi}, sorted, n,
		            sizeof(*sorted), cmp_ent) == NULL)
			assert_int_equal(tg_idrun_find(r, d, &got), 0);
	}
	c.e = malloc((n ? n : 1) * sizeof(*c.e));
	c.k = malloc((n ? n : 1) * sizeof(*c.k));
	assert_int_equal(tg_idrun_each(r, collect_ent, &c), 0);
	assert_int_equal(c.n, n);
	assert_true(n == 0 || memcmp(c.e, sorted, n * sizeof(*sorted)) == 0);
	c.n = 0;
	assert_int_equal(tg_idrun_each_key(r, collect_key, &c), 0);
	assert_int_equal(c.n, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(c.k[i], sorted[i].lo);
	free(c.e);
	free(c.k);
}

/* 1 to 300k random entries: every one found whole, 10k absent digests absent,
 * both walks in order, the meta as written. */
static void
test_round_trip(void **state)
{
	static const size_t sizes[] = {1, 2, 101, 102, 103, 204, 205, 6527, 300000};

	(void)state;
	for (size_t t = 0; t < sizeof(sizes) / sizeof(sizes[0]); t++) {
		size_t n = sizes[t];
		struct tg_idrun_ent *e = random_ents(n, 1000 + t, 1700000000, 86400);
		struct tg_idrun_ent *sorted = malloc(n * sizeof(*sorted));
		struct tg_idrun_meta m = {.lsn_from = 17, .lsn_to = 4242};
		uint32_t smin = UINT32_MAX, smax = 0;

		memcpy(sorted, e, n * sizeof(*e));
		qsort(sorted, n, sizeof(*sorted), cmp_ent);
		for (size_t i = 0; i < n; i++) {
			smin = e[i].seen < smin ? e[i].seen : smin;
			smax = e[i].seen > smax ? e[i].seen : smax;
		}
		write_ok("x.tgi", e, n, &m);
		/* sorted in place */
		assert_true(memcmp(e, sorted, n * sizeof(*e)) == 0);
		assert_int_equal(m.count, n);
		assert_int_equal(m.seen_min, smin);
		assert_int_equal(m.seen_max, smax);

		struct tg_idrun *r = open_ok("x.tgi");
		const struct tg_idrun_meta *rm = tg_idrun_meta(r);
		assert_int_equal(rm->lsn_from, 17);
		assert_int_equal(rm->lsn_to, 4242);
		assert_int_equal(rm->seen_min, smin);
		assert_int_equal(rm->seen_max, smax);
		assert_string_equal(tg_idrun_name(r), "x.tgi");
		/* The index: 8 bytes a block, plus the struct and the name. */
		size_t blocks = (n + PERB - 1) / PERB;
		assert_true(tg_idrun_ram(r) >= blocks * 8);
		assert_true(tg_idrun_ram(r) <= blocks * 8 + 256);
		/* The file's size, as documented. */
		struct stat st;
		char p[512];
		snprintf(p, sizeof(p), "%s/x.tgi", tmpdir);
		assert_int_equal(stat(p, &st), 0);
		assert_int_equal(st.st_size, BLK + blocks * BLK + n * 8 + blocks * 8);
		check_run(r, sorted, n, 10000, 77 + t);
		tg_idrun_close(r);
		free(e);
		free(sorted);
	}
}

/* Equal lo values with different hi across block boundaries: a run of 12
 * around the first boundary, and a run of 250 spanning three blocks. */
static void
test_equal_lo_straddles_blocks(void **state)
{
	size_t n = 700;
	struct tg_idrun_ent *e = random_ents(n, 5, 1000, 100);
	struct tg_idrun_ent got;
	struct tg_idrun_meta m = {0};
	const uint64_t a = 0x4000000000000000ull, b = 0x8000000000000000ull;

	(void)state;
	/* Sorted position of lo: keep the other entries away from a and b. */
	for (size_t i = 0; i < n; i++)
		e[i].lo = e[i].lo < a ? e[i].lo : e[i].lo | 0xc000000000000000ull;
	qsort(e, n, sizeof(*e), cmp_ent);
	/* Entries 96..107 get lo = a (block 0 ends at 101), 150..399 lo = b. */
	for (size_t i = 96; i < 108; i++)
		e[i] = ent_of(a, 1000 + 10 * i, 1000);
	for (size_t i = 150; i < 400; i++)
		e[i] = ent_of(b, 5000 + 10 * i, 1000);
	qsort(e, n, sizeof(*e), cmp_ent);
	for (size_t i = 1; i < n; i++)
		assert_true(cmp_ent(&e[i - 1], &e[i]) < 0);

	/* shuffled before the write: the write sorts */
	struct tg_idrun_ent *w = malloc(n * sizeof(*w));
	uint64_t s = 99;
	memcpy(w, e, n * sizeof(*e));
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = it_splitmix(&s) % (i + 1);
		struct tg_idrun_ent t = w[i];
		w[i] = w[j];
		w[j] = t;
	}
	write_ok("x.tgi", w, n, &m);
	struct tg_idrun *r = open_ok("x.tgi");
	check_run(r, e, n, 1000, 3);
	/* Absent digests with the shared lo: before, between and after the present ones. */
	for (size_t i = 96; i < 108; i++) {
		assert_int_equal(tg_idrun_find(r, (struct tg_digest){a, 1000 + 10 * i - 1}, &got),
		                 0);
		assert_int_equal(tg_idrun_find(r, (struct tg_digest){a, 1000 + 10 * i + 1}, &got),
		                 0);
	}
	for (size_t i = 150; i < 400; i++) {
		assert_int_equal(tg_idrun_find(r, (struct tg_digest){b, 5000 + 10 * i - 1}, &got),
		                 0);
		assert_int_equal(tg_idrun_find(r, (struct tg_digest){b, 5000 + 10 * i + 1}, &got),
		                 0);
	}
	assert_int_equal(tg_idrun_find(r, (struct tg_digest){a, 0}, &got), 0);
	assert_int_equal(tg_idrun_find(r, (struct tg_digest){b, UINT64_MAX}, &got), 0);
	assert_int_equal(tg_idrun_find(r, (struct tg_digest){0, 0}, &got), e[0].lo == 0);
	assert_int_equal(tg_idrun_find(r, (struct tg_digest){UINT64_MAX, UINT64_MAX}, &got), 0);
	tg_idrun_close(r);
	free(e);
	free(w);
}

/* A walk stopped by its callback returns the callback's value. */
static void
test_walks_stop(void **state)
{
	size_t n = 1000;
	struct tg_idrun_ent *e = random_ents(n, 8, 1, 10);
	struct tg_idrun_meta m = {0};
	struct collect c = {.cap = n, .stop_at = 300};

	(void)state;
	write_ok("x.tgi", e, n, &m);
	struct tg_idrun *r = open_ok("x.tgi");
	c.e = malloc(n * sizeof(*c.e));
	c.k = malloc(n * sizeof(*c.k));
	assert_int_equal(tg_idrun_each(r, collect_ent, &c), 7);
	assert_int_equal(c.n, 300);
	c.n = 0;
	assert_int_equal(tg_idrun_each_key(r, collect_key, &c), 9);
	assert_int_equal(c.n, 300);
	for (size_t i = 0; i < 300; i++)
		assert_int_equal(c.k[i], e[i].lo);
	tg_idrun_close(r);
	free(c.e);
	free(c.k);
	free(e);
}

/* A flipped byte in block 3: finds in it give -EBADMSG, the other blocks
 * still answer; each stops there.  In the keys: each_key -EBADMSG. */
static void
test_damaged_block_and_keys(void **state)
{
	size_t n = 1000; /* 10 blocks */
	size_t blocks = (n + PERB - 1) / PERB;
	struct tg_idrun_ent *e = random_ents(n, 11, 1, 10), got;
	struct tg_idrun_meta m = {0};
	struct collect c = {.cap = n, .stop_at = SIZE_MAX};

	(void)state;
	c.e = malloc(n * sizeof(*c.e));
	c.k = malloc(n * sizeof(*c.k));
	write_ok("x.tgi", e, n, &m);
	flip("x.tgi", BLK + 3 * BLK + 1234); /* an entry's byte in block 3 */
	struct tg_idrun *r = open_ok("x.tgi");
	for (size_t i = 0; i < n; i++) {
		int rc = tg_idrun_find(r, (struct tg_digest){e[i].lo, e[i].hi}, &got);
		if (i / PERB == 3) {
			assert_int_equal(rc, -EBADMSG);
		} else {
			assert_int_equal(rc, 1);
			assert_ent_equal(&got, &e[i]);
		}
	}
	assert_int_equal(tg_idrun_each(r, collect_ent, &c), -EBADMSG);
	assert_int_equal(c.n, 3 * PERB); /* the blocks before it were passed */
	c.n = 0;
	assert_int_equal(tg_idrun_each_key(r, collect_key, &c), 0); /* keys are intact */
	assert_int_equal(c.n, n);
	tg_idrun_close(r);

	/* The trailer of block 5 (its number): damaged too. */
	write_ok("x.tgi", e, n, &m);
	flip("x.tgi", BLK + 5 * BLK + 4084);
	r = open_ok("x.tgi");
	assert_int_equal(tg_idrun_find(r, (struct tg_digest){e[5 * PERB].lo, e[5 * PERB].hi}, &got),
	                 -EBADMSG);
	assert_int_equal(tg_idrun_find(r, (struct tg_digest){e[6 * PERB].lo, e[6 * PERB].hi}, &got),
	                 1);
	tg_idrun_close(r);

	/* A key in the middle of a block: only the CRC sees it, after the calls. */
	uint64_t keys = BLK + blocks * BLK;
	write_ok("x.tgi", e, n, &m);
	flip("x.tgi", keys + 8 * 500); /* its lowest byte: still in order */
	r = open_ok("x.tgi");
	c.n = 0;
	assert_int_equal(tg_idrun_each_key(r, collect_key, &c), -EBADMSG);
	assert_int_equal(c.n, n);
	assert_int_equal(tg_idrun_each(r, collect_ent,
	                               &(struct collect){.e = c.e, .cap = n, .stop_at = SIZE_MAX}),
	                 0);
	assert_int_equal(tg_idrun_find(r, (struct tg_digest){e[500].lo, e[500].hi}, &got), 1);
	tg_idrun_close(r);

	/* A key at a block's start disagrees with the index: stopped there. */
	write_ok("x.tgi", e, n, &m);
	flip("x.tgi", keys + 8 * (2 * PERB) + 7);
	r = open_ok("x.tgi");
	c.n = 0;
	assert_int_equal(tg_idrun_each_key(r, collect_key, &c), -EBADMSG);
	assert_true(c.n <= 2 * PERB);
	tg_idrun_close(r);
	free(c.e);
	free(c.k);
	free(e);
}

/* Header, index, size, magic, version: open refuses with the reason. */
static void
test_damaged_header_and_index(void **state)
{
	size_t n = 500;
	size_t blocks = (n + PERB - 1) / PERB;
	uint64_t index = BLK + blocks * BLK + n * 8, size = index + blocks * 8;
	struct tg_idrun_ent *e = random_ents(n, 12, 1, 10);
	struct tg_idrun_meta m = {0};
	char p[512], err[256];
	struct tg_idrun *r = NULL;

	(void)state;
	snprintf(p, sizeof(p), "%s/x.tgi", tmpdir);
	write_ok("x.tgi", e, n, &m);
	flip("x.tgi", 33); /* count */
	open_bad("x.tgi", "header CRC");
	write_ok("x.tgi", e, n, &m);
	flip("x.tgi", 3000); /* the zero padding of the header is covered too */
	open_bad("x.tgi", "header CRC");
	write_ok("x.tgi", e, n, &m);
	flip("x.tgi", index + 8 * 2 + 1);
	open_bad("x.tgi", "index CRC");
	write_ok("x.tgi", e, n, &m);
	flip("x.tgi", 0);
	open_bad("x.tgi", "bad magic");
	write_ok("x.tgi", e, n, &m);
	flip("x.tgi", 8); /* version */
	open_bad("x.tgi", "this build reads version 1");
	write_ok("x.tgi", e, n, &m);
	assert_int_equal(truncate(p, (off_t)size - 1), 0);
	open_bad("x.tgi", "shorter than the");
	write_ok("x.tgi", e, n, &m);
	assert_int_equal(truncate(p, (off_t)size + 8), 0);
	open_bad("x.tgi", "longer than the");
	assert_int_equal(truncate(p, 100), 0);
	open_bad("x.tgi", "shorter than an id run's header");
	assert_int_equal(truncate(p, 0), 0);
	open_bad("x.tgi", "shorter than an id run's header");
	assert_int_equal(tg_idrun_open(&r, tmpdir, "none.tgi", err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "none.tgi"));
	free(e);
}

/* An empty run: written, opened, answers absent; walks call nothing. */
static void
test_empty_run(void **state)
{
	struct tg_idrun_meta m = {.lsn_from = 5, .lsn_to = 4, .seen_min = 9, .seen_max = 9};
	struct tg_idrun_ent got;
	struct collect c = {.cap = 0, .stop_at = SIZE_MAX};

	(void)state;
	write_ok("x.tgi", NULL, 0, &m);
	assert_int_equal(m.count, 0);
	assert_int_equal(m.seen_min, 0);
	assert_int_equal(m.seen_max, 0);
	struct tg_idrun *r = open_ok("x.tgi");
	assert_int_equal(tg_idrun_meta(r)->count, 0);
	assert_int_equal(tg_idrun_meta(r)->lsn_from, 5);
	assert_int_equal(tg_idrun_find(r, (struct tg_digest){1, 2}, &got), 0);
	assert_int_equal(tg_idrun_find(r, (struct tg_digest){0, 0}, &got), 0);
	assert_int_equal(tg_idrun_each(r, collect_ent, &c), 0);
	assert_int_equal(tg_idrun_each_key(r, collect_key, &c), 0);
	assert_int_equal(c.n, 0);

	/* merged: with nothing, and with itself */
	char err[256];
	struct tg_idrun_meta mm;
	assert_int_equal(
	    tg_idrun_merge(tmpdir, "m.tgi", NULL, 0, 0, NULL, NULL, &mm, err, sizeof(err)), 0);
	assert_int_equal(mm.count, 0);
	struct tg_idrun *in[2] = {r, r};
	assert_int_equal(
	    tg_idrun_merge(tmpdir, "m.tgi", in, 2, 0, NULL, NULL, &mm, err, sizeof(err)), 0);
	assert_int_equal(mm.count, 0);
	assert_int_equal(mm.lsn_from, 5);
	tg_idrun_close(r);
	r = open_ok("m.tgi");
	assert_int_equal(tg_idrun_meta(r)->count, 0);
	tg_idrun_close(r);
}

/* Two equal digests handed to write: refused, no file left. */
static void
test_write_refuses_duplicates(void **state)
{
	struct tg_idrun_ent *e = random_ents(300, 13, 1, 10);
	struct tg_idrun_meta m = {0};
	char err[256] = "";

	(void)state;
	e[250] = e[17];
	e[250].seen = 99;
	assert_int_equal(tg_idrun_write(tmpdir, "x.tgi", e, 300, &m, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "two entries"));
	assert_false(exists("x.tgi"));
	assert_false(exists("x.tgi.new"));
	free(e);
}

/* A directory that is not there: the error and its sentence, from write and merge. */
static void
test_write_errors(void **state)
{
	struct tg_idrun_ent e = ent_of(1, 2, 3);
	struct tg_idrun_meta m = {0};
	char dir[128], err[256] = "";

	(void)state;
	snprintf(dir, sizeof(dir), "%s/missing", tmpdir);
	assert_int_equal(tg_idrun_write(dir, "x.tgi", &e, 1, &m, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "cannot create"));
	assert_non_null(strstr(err, "missing/x.tgi.new"));
	err[0] = 0;
	assert_int_equal(tg_idrun_merge(dir, "x.tgi", NULL, 0, 0, NULL, NULL, &m, err, sizeof(err)),
	                 -ENOENT);
	assert_non_null(strstr(err, "missing/x.tgi.new"));
}

struct drops {
	struct tg_idrun_ent *e;
	size_t n, cap;
};

static void
on_dropped(void *arg, const struct tg_idrun_ent *e)
{
	struct drops *d = arg;

	assert_true(d->n < d->cap);
	d->e[d->n++] = *e;
}

static int
cmp_ent_seen(const void *a, const void *b)
{
	const struct tg_idrun_ent *x = a, *y = b;
	int c = cmp_ent(a, b);

	if (c != 0)
		return c;
	return x->seen < y->seen ? -1 : x->seen > y->seen;
}

/*
 * Three runs sharing digests (some in two inputs, some in all three, with
 * different seen), merged dropping seen < 1500: the output is the model's
 * (drop old entries, then keep the smallest seen), sorted and findable, and
 * the dropped callback sees exactly every other entry.
 */
static void
test_merge_drop_and_duplicates(void **state)
{
	enum { N = 20000, NIN = 3 };
	struct tg_idrun_ent *all = malloc(NIN * N * sizeof(*all));
	struct tg_idrun *in[NIN];
	size_t nall = 0;
	uint64_t s = 21;
	char name[32], err[256] = "";

	(void)state;
	for (int k = 0; k < NIN; k++) {
		struct tg_idrun_ent *e = malloc(N * sizeof(*e));
		for (size_t i = 0; i < N; i++) {
			/* a shared pool of digests: about a third appear in several inputs */
			uint64_t id = it_splitmix(&s) % (2 * N);
			uint64_t t = id * 2654435761u;
			e[i] =
			    ent_of(t ^ 0x1234567ull, id, 1000 + (uint32_t)(it_splitmix(&s) % 1000));
			e[i].fingerprint += (uint64_t)k; /* which input it came from */
		}
		qsort(e, N, sizeof(*e), cmp_ent);
		size_t u = 0;
		for (size_t i = 0; i < N; i++)
			if (u == 0 || cmp_ent(&e[u - 1], &e[i]) != 0)
				e[u++] = e[i];
		/* one digest in every input, old in the first, live in the later ones */
		e[u++] = ent_of(5, 5, k == 0 ? 1100 : 1600 + (uint32_t)k);
		struct tg_idrun_meta m = {.lsn_from = 100 * (uint64_t)k + 1,
		                          .lsn_to = 100 * (k + 1)};
		snprintf(name, sizeof(name), "in%d.tgi", k);
		write_ok(name, e, u, &m);
		memcpy(all + nall, e, u * sizeof(*e));
		nall += u;
		in[k] = open_ok(name);
		free(e);
	}
	/* The model. */
	qsort(all, nall, sizeof(*all), cmp_ent_seen);
	struct tg_idrun_ent *kept = malloc(nall * sizeof(*kept));
	struct tg_idrun_ent *want_drop = malloc(nall * sizeof(*want_drop));
	size_t nkept = 0, nwant = 0;
	for (size_t i = 0; i < nall;) {
		size_t j = i;
		bool have = false;
		while (j < nall && cmp_ent(&all[i], &all[j]) == 0) {
			if (!have && all[j].seen >= 1500) {
				kept[nkept++] =
				    all[j]; /* smallest seen of those left: sorted by seen */
				have = true;
			} else {
				want_drop[nwant++] = all[j];
			}
			j++;
		}
		i = j;
	}
	assert_true(nkept > 1000 && nwant > 1000);

	struct drops d = {.e = malloc(nall * sizeof(*d.e)), .cap = nall};
	struct tg_idrun_meta mm;
	int rc =
	    tg_idrun_merge(tmpdir, "out.tgi", in, NIN, 1500, on_dropped, &d, &mm, err, sizeof(err));
	if (rc != 0)
		fail_msg("merge: %d %s", rc, err);
	assert_int_equal(mm.count, nkept);
	assert_int_equal(mm.lsn_from, 1);
	assert_int_equal(mm.lsn_to, 300);
	assert_true(mm.seen_min >= 1500);
	assert_int_equal(d.n, nwant);
	/* dropped in digest order */
	for (size_t i = 1; i < d.n; i++)
		assert_true(cmp_ent(&d.e[i - 1], &d.e[i]) <= 0);
	qsort(d.e, d.n, sizeof(*d.e), cmp_ent_seen);
	for (size_t i = 0; i < d.n; i++) {
		/* equal (lo, hi, seen) entries of two inputs differ in fingerprint */
		assert_int_equal(cmp_ent_seen(&d.e[i], &want_drop[i]), 0);
	}
	struct tg_idrun *out = open_ok("out.tgi");
	/* The live copy of the digest that was old in the first input. */
	struct tg_idrun_ent got;
	assert_int_equal(tg_idrun_find(out, (struct tg_digest){5, 5}, &got), 1);
	assert_int_equal(got.seen, 1601);
	/* Kept: the model's, each from the earliest input with that seen. */
	struct collect c = {.e = malloc(nkept * sizeof(*c.e)), .cap = nkept, .stop_at = SIZE_MAX};
	assert_int_equal(tg_idrun_each(out, collect_ent, &c), 0);
	assert_int_equal(c.n, nkept);
	for (size_t i = 0; i < nkept; i++) {
		assert_int_equal(cmp_ent_seen(&c.e[i], &kept[i]), 0);
		assert_int_equal(
		    tg_idrun_find(out, (struct tg_digest){kept[i].lo, kept[i].hi}, &got), 1);
		assert_ent_equal(&got, &c.e[i]);
	}
	free(c.e);
	c = (struct collect){.k = malloc(nkept * 8), .cap = nkept, .stop_at = SIZE_MAX};
	assert_int_equal(tg_idrun_each_key(out, collect_key, &c), 0);
	assert_int_equal(c.n, nkept);
	free(c.k);
	tg_idrun_close(out);

	/* Nothing dropped by age: every digest once, the earliest seen. */
	d.n = 0;
	rc = tg_idrun_merge(tmpdir, "out.tgi", in, NIN, 0, on_dropped, &d, &mm, err, sizeof(err));
	assert_int_equal(rc, 0);
	out = open_ok("out.tgi");
	assert_int_equal(tg_idrun_find(out, (struct tg_digest){5, 5}, &got), 1);
	assert_int_equal(got.seen, 1100);
	assert_int_equal(mm.count + d.n, nall);
	tg_idrun_close(out);

	/* A damaged input: the merge fails, says which, and leaves no output. */
	flip("in1.tgi", BLK + 7 * BLK + 100);
	rc = tg_idrun_merge(tmpdir, "bad.tgi", in, NIN, 0, NULL, NULL, &mm, err, sizeof(err));
	assert_int_equal(rc, -EBADMSG);
	assert_non_null(strstr(err, "in1.tgi"));
	assert_false(exists("bad.tgi"));
	assert_false(exists("bad.tgi.new"));

	for (int k = 0; k < NIN; k++)
		tg_idrun_close(in[k]);
	free(all);
	free(kept);
	free(want_drop);
	free(d.e);
}

struct finder {
	struct tg_idrun *r;
	const struct tg_idrun_ent *e;
	size_t n, from;
	int bad;
};

static void *
find_thread(void *arg)
{
	struct finder *f = arg;
	struct tg_idrun_ent got;

	for (size_t k = 0; k < f->n; k++) {
		size_t i = (f->from + k * 7919) % f->n;
		if (tg_idrun_find(f->r, (struct tg_digest){f->e[i].lo, f->e[i].hi}, &got) != 1 ||
		    memcmp(&got, &f->e[i], sizeof(got)) != 0)
			f->bad++;
	}
	return NULL;
}

static double
secs(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* 2M entries: write, open, every one found on four threads at once.  The
 * times are printed, not asserted (the machine is shared). */
static void
test_two_million_timing(void **state)
{
	size_t n = 2000000;
	struct tg_idrun_ent *e = random_ents(n, 31, 1700000000, 86400);
	struct tg_idrun_meta m = {0};
	struct timespec t0, t1, t2, t3;
	pthread_t th[4];
	struct finder f[4];

	(void)state;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	write_ok("big.tgi", e, n, &m);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	struct tg_idrun *r = open_ok("big.tgi");
	clock_gettime(CLOCK_MONOTONIC, &t2);
	for (int k = 0; k < 4; k++) {
		f[k] = (struct finder){.r = r, .e = e, .n = n, .from = (size_t)k * 1000};
		assert_int_equal(pthread_create(&th[k], NULL, find_thread, &f[k]), 0);
	}
	for (int k = 0; k < 4; k++) {
		pthread_join(th[k], NULL);
		assert_int_equal(f[k].bad, 0);
	}
	clock_gettime(CLOCK_MONOTONIC, &t3);
	struct collect c = {.k = malloc(n * 8), .cap = n, .stop_at = SIZE_MAX};
	struct timespec t4, t5;
	clock_gettime(CLOCK_MONOTONIC, &t4);
	assert_int_equal(tg_idrun_each_key(r, collect_key, &c), 0);
	clock_gettime(CLOCK_MONOTONIC, &t5);
	printf("# id run of %zu: write (sort, fsync) %.3f s, open %.3f ms, index %zu bytes "
	       "(%.3f a id), %zu finds on 4 threads %.3f s (%.2f us a find), each_key %.3f s\n",
	       n, secs(&t0, &t1), secs(&t1, &t2) * 1e3, tg_idrun_ram(r),
	       (double)tg_idrun_ram(r) / (double)n, 4 * n, secs(&t2, &t3),
	       secs(&t2, &t3) * 1e6 / (double)(4 * n), secs(&t4, &t5));
	free(c.k);
	tg_idrun_close(r);
	free(e);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_equal_lo_straddles_blocks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_walks_stop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_block_and_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_header_and_index, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_empty_run, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_refuses_duplicates, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_merge_drop_and_duplicates, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_two_million_timing, setup, teardown),
	};

	return cmocka_run_group_tests_name("idrun", tests, NULL, NULL);
}
