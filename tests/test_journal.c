/*
 * test_journal.c - the journal's format: CRC32C, encoder, reader, and every
 * way a directory of segments can be found after a crash (docs/JOURNAL.md).
 *
 * Each test builds its journal in a fresh temporary directory and removes
 * it.  The reader's verdicts are checked with the file, offset and LSN it
 * reports, because those are what an operator acts on.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "tg_journal.h"
#include "testrand.h"

#define REC_MAX 256 /* bytes of any test record, padding included */

/* A payload of type t, every byte derived from lsn; pads stay zero. */
static size_t
make_payload(unsigned t, uint64_t lsn, void *out)
{
	uint64_t s = lsn * 7919 + t;
	size_t n = tg_journal_payload_size(t);

	memset(out, 0, n);
	switch (t) {
	case TG_JREC_RESERVE: {
		struct tg_jrec_reserve p = {.acct = it_splitmix(&s),
		                            .call = {it_splitmix(&s), it_splitmix(&s)},
		                            .amount = 1500000,
		                            .seconds = 60,
		                            .per_min = 100000,
		                            .initial = 60,
		                            .increment = 60};
		memcpy(out, &p, sizeof(p));
		break;
	}
	case TG_JREC_SETTINGS: {
		struct tg_jrec_settings p = {.acct = it_splitmix(&s),
		                             .threshold = 10000000,
		                             .refill_amount = 50000000,
		                             .refill_mode = 1,
		                             .flags = 1,
		                             .plan = "gold"};
		memcpy(out, &p, sizeof(p));
		break;
	}
	default: {
		/* every other payload: whole words of data */
		uint64_t w;

		for (size_t i = 0; i + 8 <= n; i += 8) {
			w = it_splitmix(&s);
			memcpy((char *)out + i, &w, 8);
		}
	}
	}
	return n;
}

/* A change's type for lsn, cycling through every type but CONFIRM (not a change). */
static unsigned
type_of(uint64_t lsn)
{
	unsigned t = (unsigned)(lsn % TG_JREC__COUNT) + 1;
	return t == TG_JREC_CONFIRM ? TG_JREC_SET_BALANCE : t;
}

static char tmpdir[64];

/* A CONFIRM of lsn at the end of f; its size. */
static uint64_t
write_confirm(FILE *f, uint64_t lsn)
{
	struct tg_jrec_confirm c = {.lsn = lsn};
	uint8_t rec[TG_JOURNAL_CONFIRM_SIZE];

	assert_int_equal(
	    tg_journal_encode(rec, sizeof(rec), TG_JREC_CONFIRM, lsn, 1, &c, sizeof(c)),
	    sizeof(rec));
	assert_int_equal(fwrite(rec, sizeof(rec), 1, f), 1);
	return sizeof(rec);
}

static int
setup_dir(void **state)
{
	(void)state;
	strcpy(tmpdir, "/tmp/tg_journal.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int
teardown_dir(void **state)
{
	DIR *d = opendir(tmpdir);
	struct dirent *e;
	char p[512];

	(void)state;
	while (d && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	return rmdir(tmpdir);
}

static void
path_of(char *p, size_t len, const char *name)
{
	snprintf(p, len, "%s/%s", tmpdir, name);
}

/*
 * Write a segment of format version with records first..first+n-1 and, as
 * the writer does once a flush is on disk, a CONFIRM after the first
 * confirmed of them (none when 0).  offs[i] (when given) gets each record's
 * offset, and offs[n] the file size.
 */
static void
write_seg(uint64_t first, unsigned n, uint64_t *offs, unsigned confirmed, uint32_t version)
{
	char name[TG_JOURNAL_NAME_LEN], p[512];
	struct tg_jseg_hdr h;
	uint8_t rec[REC_MAX], pl[TG_JOURNAL_PAYLOAD_MAX];
	uint64_t off = sizeof(h);

	tg_journal_seg_name(name, first);
	path_of(p, sizeof(p), name);
	FILE *f = fopen(p, "wb");
	assert_non_null(f);
	tg_journal_seg_header(&h, first, 1764000000);
	if (version != TG_JOURNAL_VERSION) {
		h.version = version;
		h.crc = 0;
		h.crc = tg_crc32c(0, &h, sizeof(h));
	}
	assert_int_equal(fwrite(&h, sizeof(h), 1, f), 1);
	for (unsigned i = 0; i < n; i++) {
		if (confirmed > 0 && i == confirmed)
			off += write_confirm(f, first + i - 1);
		uint64_t lsn = first + i;
		unsigned t = type_of(lsn);
		size_t len = make_payload(t, lsn, pl);
		ssize_t w =
		    tg_journal_encode(rec, sizeof(rec), t, lsn, (int64_t)lsn * 1000, pl, len);

		assert_true(w > 0);
		if (offs)
			offs[i] = off;
		assert_int_equal(fwrite(rec, (size_t)w, 1, f), 1);
		off += (uint64_t)w;
	}
	if (confirmed > 0 && confirmed == n)
		off += write_confirm(f, first + n - 1);
	if (offs)
		offs[n] = off;
	assert_int_equal(fclose(f), 0);
}

/* A segment as the writer leaves it after a clean stop: every record confirmed. */
static void
write_segment(uint64_t first, unsigned n, uint64_t *offs)
{
	write_seg(first, n, offs, n, TG_JOURNAL_VERSION);
}

/* Where record i of a segment written by write_segment (n records) ends. */
static uint64_t
rec_end(const uint64_t *offs, unsigned n, unsigned i)
{
	return i + 1 < n ? offs[i + 1] : offs[n] - TG_JOURNAL_CONFIRM_SIZE;
}

/* Read the journal: the records must be first.. in order with their payloads. */
static enum tg_journal_status
read_all(uint64_t first, uint64_t *count, struct tg_journal_pos *pos)
{
	struct tg_journal_reader *r;
	struct tg_jrec rec;
	enum tg_journal_status s;
	uint8_t pl[TG_JOURNAL_PAYLOAD_MAX];

	assert_int_equal(tg_journal_open_dir(&r, tmpdir), 0);
	*count = 0;
	while ((s = tg_journal_next(r, &rec)) == TG_JOURNAL_OK) {
		uint64_t lsn = first + *count;

		assert_int_equal(rec.lsn, lsn);
		assert_int_equal(rec.type, type_of(lsn));
		assert_int_equal(rec.time, (int64_t)lsn * 1000);
		assert_int_equal(rec.len, make_payload(rec.type, lsn, pl));
		assert_memory_equal(rec.payload, pl, rec.len);
		(*count)++;
	}
	/* sticky */
	assert_int_equal(tg_journal_next(r, &rec), s);
	if (pos)
		*pos = *tg_journal_where(r);
	char msg[512];
	tg_journal_describe(r, msg, sizeof(msg));
	assert_true(strlen(msg) > 10);
	tg_journal_close(r);
	return s;
}

static void
flip_bit(const char *name, uint64_t bit)
{
	char p[512];
	uint8_t b;
	int fd;

	path_of(p, sizeof(p), name);
	fd = open(p, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, (off_t)(bit / 8)), 1);
	b ^= (uint8_t)(1u << (bit % 8));
	assert_int_equal(pwrite(fd, &b, 1, (off_t)(bit / 8)), 1);
	close(fd);
}

static void
seg_name(char *name, uint64_t first)
{
	tg_journal_seg_name(name, first);
}

/* ---- CRC32C ---- */

static void
test_crc_vectors(void **state)
{
	uint8_t buf[32];

	(void)state;
	assert_int_equal(tg_crc32c(0, "123456789", 9), 0xe3069283u);
	assert_int_equal(tg_crc32c_sw(0, "123456789", 9), 0xe3069283u);
	assert_int_equal(tg_crc32c(0, "", 0), 0);
	/* RFC 3720 B.4 */
	memset(buf, 0, sizeof(buf));
	assert_int_equal(tg_crc32c(0, buf, 32), 0x8a9136aau);
	memset(buf, 0xff, sizeof(buf));
	assert_int_equal(tg_crc32c(0, buf, 32), 0x62a8ab43u);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	assert_int_equal(tg_crc32c(0, buf, 32), 0x46dd794eu);
	assert_int_equal(tg_crc32c_sw(0, buf, 32), 0x46dd794eu);
	/* continuing */
	assert_int_equal(tg_crc32c(tg_crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
}

/* Both paths agree at every length and alignment on random data. */
static void
test_crc_paths_agree(void **state)
{
	uint8_t buf[1100];
	uint64_t s = 42;

	(void)state;
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)it_splitmix(&s);
	if (!tg_crc32c_hw_available()) {
		fprintf(stderr, "no SSE4.2 here: only the table path is checked\n");
		return;
	}
	for (size_t a = 0; a < 8; a++)
		for (size_t n = 0; n + a <= 1100 && n <= 1024; n++) {
			uint32_t seed = (uint32_t)n * 31;

			assert_int_equal(tg_crc32c_hw(seed, buf + a, n),
			                 tg_crc32c_sw(seed, buf + a, n));
		}
}

/* ---- the encoder ---- */

static void
test_encode_layout(void **state)
{
	uint8_t buf[REC_MAX], pl[TG_JOURNAL_PAYLOAD_MAX];
	struct tg_jrec_hdr h;
	size_t len = make_payload(TG_JREC_SET_BALANCE, 5, pl);

	(void)state;
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(tg_journal_encode(buf, 55, TG_JREC_SET_BALANCE, 5, 9, pl, len), -ENOSPC);
	assert_int_equal(buf[0], 0xee); /* nothing written */
	assert_int_equal(tg_journal_encode(buf, 56, TG_JREC_SET_BALANCE, 5, 9, pl, len), 56);
	memcpy(&h, buf, sizeof(h));
	assert_int_equal(h.len, 24);
	assert_int_equal(h.version, 1);
	assert_int_equal(h.type, TG_JREC_SET_BALANCE);
	assert_int_equal(h.flags, 0);
	assert_int_equal(h.lsn, 5);
	assert_int_equal(h.time, 9);
	assert_int_equal(h.crc, tg_crc32c(0, buf + 8, 24 + 24));
	assert_int_equal(buf[56], 0xee);
	assert_int_equal(tg_journal_rec_size(1), 40);
	assert_int_equal(tg_journal_rec_size(8), 40);
	assert_int_equal(tg_journal_rec_size(9), 48);
	assert_string_equal(tg_journal_type_name(TG_JREC_EXPIRE), "expire");
	assert_string_equal(tg_journal_type_name(0), "?");
	assert_int_equal(tg_journal_payload_size(TG_JREC__COUNT + 1), 0);
}

/* Every type, through a file and back. */
static void
test_round_trip(void **state)
{
	uint64_t n;

	(void)state;
	write_segment(1, 3 * TG_JREC__COUNT, NULL);
	assert_int_equal(read_all(1, &n, NULL), TG_JOURNAL_END);
	assert_int_equal(n, 3 * TG_JREC__COUNT);
}

static void
test_three_segments(void **state)
{
	struct tg_journal_pos pos;
	struct tg_journal_reader *r;
	char name[TG_JOURNAL_NAME_LEN];
	uint64_t n, offs[41];

	(void)state;
	/* written out of order: the reader sorts by LSN, not by directory order */
	write_segment(0x1000 + 80, 40, offs);
	write_segment(0x1000, 30, NULL);
	write_segment(0x1000 + 30, 50, NULL);
	assert_int_equal(read_all(0x1000, &n, &pos), TG_JOURNAL_END);
	assert_int_equal(n, 120);
	seg_name(name, 0x1000 + 80);
	assert_string_equal(pos.file, name);
	assert_string_equal(name, "journal-0000000000001050.tgj");
	assert_int_equal(pos.offset, offs[40]);
	assert_int_equal(pos.lsn, 0x1000 + 120);
	assert_int_equal(tg_journal_open_dir(&r, tmpdir), 0);
	assert_int_equal(tg_journal_segments(r), 3);
	assert_int_equal(tg_journal_segment_lsn(r, 2), 0x1000 + 80);
	tg_journal_close(r);
}

/*
 * A reader at the end of a journal still being written follows it: the
 * last segment grown, then a new segment, read on from where it stopped
 * (replication's senders read the journal this way).  Regression: a second
 * listing of the directory through the reader's dup'ed descriptor started
 * at the end of the first and found no segment at all.
 */
static void
test_follow(void **state)
{
	struct tg_journal_reader *r;
	struct tg_jrec rec;
	uint64_t lsn = 0x2000;
	(void)state;

	write_seg(0x2000, 30, NULL, 0, TG_JOURNAL_VERSION);
	assert_int_equal(tg_journal_open_dir(&r, tmpdir), 0);
	assert_int_equal(tg_journal_follow(r), -EINVAL); /* not stopped yet */
	while (tg_journal_next(r, &rec) == TG_JOURNAL_OK)
		assert_int_equal(rec.lsn, lsn++);
	assert_int_equal(lsn, 0x2000 + 30);
	assert_int_equal(tg_journal_next(r, &rec), TG_JOURNAL_END);
	/* The same segment, 20 records longer (and now confirmed). */
	write_seg(0x2000, 50, NULL, 50, TG_JOURNAL_VERSION);
	assert_int_equal(tg_journal_follow(r), 0);
	while (tg_journal_next(r, &rec) == TG_JOURNAL_OK)
		assert_int_equal(rec.lsn, lsn++);
	assert_int_equal(lsn, 0x2000 + 50);
	/* A new segment after it. */
	write_segment(0x2000 + 50, 10, NULL);
	assert_int_equal(tg_journal_next(r, &rec), TG_JOURNAL_END);
	assert_int_equal(tg_journal_follow(r), 0);
	while (tg_journal_next(r, &rec) == TG_JOURNAL_OK)
		assert_int_equal(rec.lsn, lsn++);
	assert_int_equal(lsn, 0x2000 + 60);
	assert_int_equal(tg_journal_next(r, &rec), TG_JOURNAL_END);
	/* Nothing new: follows, and is at the end again. */
	assert_int_equal(tg_journal_follow(r), 0);
	assert_int_equal(tg_journal_next(r, &rec), TG_JOURNAL_END);
	/* The segment it reads pruned away: it must open the journal again. */
	char name[TG_JOURNAL_NAME_LEN], p[512];
	seg_name(name, 0x2000 + 50);
	path_of(p, sizeof(p), name);
	assert_int_equal(unlink(p), 0);
	assert_int_equal(tg_journal_follow(r), -ESTALE);
	tg_journal_close(r);
}

static void
test_no_segments(void **state)
{
	uint64_t n;

	(void)state;
	assert_int_equal(read_all(0, &n, NULL), TG_JOURNAL_END);
	assert_int_equal(n, 0);
}

/* The last record cut at every byte: TORN_TAIL at its start; after the cut, END. */
static void
test_torn_tail(void **state)
{
	char name[TG_JOURNAL_NAME_LEN], p[512];
	struct tg_journal_pos pos;
	uint64_t offs[11], n;

	(void)state;
	write_segment(1, 10, NULL);
	seg_name(name, 11);
	path_of(p, sizeof(p), name);
	for (uint64_t cut = 1;; cut++) {
		write_segment(11, 10, offs);
		uint64_t last = offs[9], size = rec_end(offs, 10, 9);
		if (last + cut >= size)
			break;
		assert_int_equal(truncate(p, (off_t)(last + cut)), 0);
		assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_TORN_TAIL);
		assert_int_equal(n, 19);
		assert_string_equal(pos.file, name);
		assert_int_equal(pos.offset, last);
		assert_int_equal(pos.lsn, 20);

		struct tg_journal_reader *r;
		struct tg_jrec rec;
		assert_int_equal(tg_journal_open_dir(&r, tmpdir), 0);
		assert_int_equal(tg_journal_truncate_tail(r), -EINVAL); /* not yet seen */
		while (tg_journal_next(r, &rec) == TG_JOURNAL_OK)
			;
		assert_int_equal(tg_journal_truncate_tail(r), 0);
		assert_int_equal(tg_journal_next(r, &rec), TG_JOURNAL_END);
		assert_int_equal(tg_journal_next_lsn(r), 20);
		tg_journal_close(r);
		assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_END);
		assert_int_equal(n, 19);
		assert_int_equal(pos.offset, last);
	}
}

/* A last segment shorter than its header: the writer died creating it. */
static void
test_torn_header(void **state)
{
	char name[TG_JOURNAL_NAME_LEN], p[512];
	struct tg_journal_pos pos;
	uint64_t n;

	(void)state;
	write_segment(1, 5, NULL);
	write_segment(6, 0, NULL);
	seg_name(name, 6);
	path_of(p, sizeof(p), name);
	assert_int_equal(truncate(p, 20), 0);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_TORN_TAIL);
	assert_int_equal(n, 5);
	assert_int_equal(pos.offset, 0);
}

/*
 * Every bit of a middle record, and of the last record of the last segment:
 * CORRUPT there, because the CONFIRM after it says it was on disk, hence
 * acknowledged.  Every bit of that CONFIRM: TORN_TAIL at the CONFIRM, and
 * every record is kept (a CONFIRM only vouches; losing one loses no change).
 */
static void
test_flipped_bits(void **state)
{
	char name[TG_JOURNAL_NAME_LEN];
	struct tg_journal_pos pos;
	uint64_t offs[11], n;

	(void)state;
	write_segment(1, 10, NULL);
	seg_name(name, 11);
	write_segment(11, 10, offs);
	for (int which = 0; which < 2; which++) {
		unsigned idx = which == 0 ? 5 : 9;
		for (uint64_t bit = offs[idx] * 8; bit < rec_end(offs, 10, idx) * 8; bit++) {
			flip_bit(name, bit);
			enum tg_journal_status s = read_all(1, &n, &pos);
			assert_int_equal(s, TG_JOURNAL_CORRUPT);
			assert_int_equal(n, 10 + idx);
			assert_string_equal(pos.file, name);
			assert_int_equal(pos.offset, offs[idx]);
			assert_int_equal(pos.lsn, 11 + idx);
			flip_bit(name, bit);
		}
	}
	for (uint64_t bit = rec_end(offs, 10, 9) * 8; bit < offs[10] * 8; bit++) {
		flip_bit(name, bit);
		assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_TORN_TAIL);
		assert_int_equal(n, 20);
		assert_int_equal(pos.offset, rec_end(offs, 10, 9));
		assert_int_equal(pos.lsn, 21);
		flip_bit(name, bit);
	}
	/* damage in the last record of a segment that is not the last: CORRUPT */
	seg_name(name, 1);
	write_segment(1, 10, offs);
	flip_bit(name, offs[9] * 8 + 300);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_CORRUPT);
	assert_int_equal(n, 9);
	assert_string_equal(pos.file, name);
	assert_int_equal(pos.offset, offs[9]);
}

/*
 * Records after the last CONFIRM were never acknowledged: their flush's
 * pages may reach the disk in any order, so damage among them is a torn
 * write even with intact records after it.  In a version 1 segment (no
 * CONFIRM records) the same damage is CORRUPT, as that format cannot tell.
 */
static void
test_unconfirmed_tail(void **state)
{
	char name[TG_JOURNAL_NAME_LEN];
	struct tg_journal_pos pos;
	uint64_t offs[16], n;

	(void)state;
	write_segment(1, 10, NULL);
	seg_name(name, 11);
	for (uint32_t version = 1; version <= TG_JOURNAL_VERSION; version++) {
		/* 11..20 confirmed, 21..25 written after the CONFIRM and never confirmed */
		write_seg(11, 15, offs, version == 1 ? 0 : 10, version);
		assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_END);
		assert_int_equal(n, 25);
		if (version >= 2)
			assert_int_equal(pos.confirmed, 20);
		flip_bit(name, offs[11] * 8 + 7 * 8 + 3); /* LSN 22, its crc */
		enum tg_journal_status s = read_all(1, &n, &pos);
		assert_int_equal(s, version == 1 ? TG_JOURNAL_CORRUPT : TG_JOURNAL_TORN_TAIL);
		assert_int_equal(n, 21);
		assert_int_equal(pos.offset, offs[11]);
		assert_int_equal(pos.lsn, 22);
	}
	/* damage before the CONFIRM is acknowledged damage, whatever follows */
	write_seg(11, 15, offs, 10, TG_JOURNAL_VERSION);
	flip_bit(name, offs[9] * 8 + 40 * 8);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_CORRUPT);
	assert_int_equal(n, 19);
	assert_int_equal(pos.offset, offs[9]);
}

/* A CONFIRM must vouch for the record just before it, and it takes no LSN. */
static void
test_confirm_lsn(void **state)
{
	char name[TG_JOURNAL_NAME_LEN], p[512];
	struct tg_journal_pos pos;
	uint64_t offs[11], n;

	(void)state;
	write_segment(1, 10, offs);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_END);
	assert_int_equal(n, 10);
	assert_int_equal(pos.confirmed, 10);
	assert_int_equal(pos.confirms, 1);
	/* a CONFIRM claiming LSN 11, which is not on disk: a good checksum, a wrong meaning */
	seg_name(name, 1);
	path_of(p, sizeof(p), name);
	FILE *f = fopen(p, "r+b");
	assert_non_null(f);
	assert_int_equal(fseek(f, (long)rec_end(offs, 10, 9), SEEK_SET), 0);
	write_confirm(f, 11);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_CORRUPT);
	assert_int_equal(n, 10);
	assert_int_equal(pos.offset, rec_end(offs, 10, 9));
}

/* What an operator does after CORRUPT: cut there; later segments move aside. */
static void
test_truncate_at(void **state)
{
	char name[TG_JOURNAL_NAME_LEN], p[512];
	struct tg_journal_pos pos;
	uint64_t offs[11], n;
	struct stat st;

	(void)state;
	write_segment(1, 10, offs);
	write_segment(11, 10, NULL);
	write_segment(21, 10, NULL);
	seg_name(name, 1);
	flip_bit(name, offs[4] * 8 + 70);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_CORRUPT);
	assert_int_equal(tg_journal_truncate_at(tmpdir, pos.file, offs[4] + 1), -EINVAL);
	assert_int_equal(tg_journal_truncate_at(tmpdir, "journal-x.tgj", 64), -EINVAL);
	assert_int_equal(tg_journal_truncate_at(tmpdir, pos.file, pos.offset), 0);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_END);
	assert_int_equal(n, 4);
	seg_name(name, 11);
	path_of(p, sizeof(p), name);
	assert_int_equal(stat(p, &st), -1); /* moved aside, not deleted */
	DIR *d = opendir(tmpdir);
	struct dirent *e;
	int cut = 0;
	while ((e = readdir(d)) != NULL)
		cut += strstr(e->d_name, ".tgj.cut-") != NULL;
	closedir(d);
	assert_int_equal(cut, 2);
}

/* Rewrite the header of the record at off: version, type, LSN + skew (and a good CRC). */
static void
patch_record(const char *name, uint64_t off, uint16_t version, uint16_t type, uint64_t skew)
{
	char p[512];
	uint8_t rec[REC_MAX];
	struct tg_jrec_hdr h;
	int fd;

	path_of(p, sizeof(p), name);
	fd = open(p, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, rec, sizeof(rec), (off_t)off) >= 32, 1);
	memcpy(&h, rec, sizeof(h));
	h.version = version;
	h.type = type;
	h.lsn += skew;
	memcpy(rec, &h, sizeof(h));
	h.crc = tg_crc32c(0, rec + 8, 24 + h.len);
	memcpy(rec, &h, sizeof(h));
	assert_int_equal(pwrite(fd, rec, 32, (off_t)off), 32);
	close(fd);
}

static void
test_newer_version(void **state)
{
	char name[TG_JOURNAL_NAME_LEN], p[512];
	struct tg_journal_pos pos;
	struct tg_jseg_hdr h;
	uint64_t offs[11], n;
	int fd;

	(void)state;
	write_segment(1, 10, NULL);
	write_segment(11, 10, offs);
	seg_name(name, 11);
	patch_record(name, offs[3], TG_JOURNAL_REC_VERSION + 1, type_of(14), 0);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_NEWER_VERSION);
	assert_int_equal(n, 13);
	assert_string_equal(pos.file, name);
	assert_int_equal(pos.offset, offs[3]);
	/* a type this build does not know: written by a newer build */
	write_segment(11, 10, offs);
	patch_record(name, offs[3], 1, TG_JREC__COUNT + 1, 0);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_NEWER_VERSION);
	/* a segment of a newer format */
	write_segment(11, 10, offs);
	path_of(p, sizeof(p), name);
	tg_journal_seg_header(&h, 11, 0);
	h.version = TG_JOURNAL_VERSION + 1;
	fd = open(p, O_RDWR);
	assert_int_equal(pwrite(fd, &h, sizeof(h), 0), sizeof(h));
	close(fd);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_NEWER_VERSION);
	assert_int_equal(n, 10);
	assert_string_equal(pos.file, name);
	assert_int_equal(pos.offset, 0);
}

static void
make_empty(uint64_t first)
{
	char name[TG_JOURNAL_NAME_LEN], p[512];
	int fd;

	seg_name(name, first);
	path_of(p, sizeof(p), name);
	fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
}

static void
test_empty_last(void **state)
{
	struct tg_journal_pos pos;
	uint64_t n;

	(void)state;
	write_segment(1, 10, NULL);
	make_empty(11);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_END);
	assert_int_equal(n, 10);
	assert_true(pos.empty_seg);
	assert_int_equal(pos.offset, 0);
	assert_int_equal(pos.lsn, 11);
}

/* Documented: an empty segment that is not the last is CORRUPT, not GAP. */
static void
test_empty_middle(void **state)
{
	char name[TG_JOURNAL_NAME_LEN];
	struct tg_journal_pos pos;
	uint64_t n;

	(void)state;
	write_segment(1, 10, NULL);
	make_empty(11);
	write_segment(21, 10, NULL);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_CORRUPT);
	assert_int_equal(n, 10);
	seg_name(name, 11);
	assert_string_equal(pos.file, name);
	assert_true(pos.empty_seg);
	assert_int_equal(pos.offset, 0);
}

static void
test_gap(void **state)
{
	char name[TG_JOURNAL_NAME_LEN], p[512];
	struct tg_journal_pos pos;
	uint64_t n;

	(void)state;
	write_segment(1, 10, NULL);
	write_segment(21, 10, NULL); /* 11..20 missing */
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_GAP);
	assert_int_equal(n, 10);
	seg_name(name, 21);
	assert_string_equal(pos.file, name);
	assert_int_equal(pos.offset, 0);
	assert_int_equal(pos.lsn, 11);
	/* an LSN skipped inside a segment (a good checksum, a wrong LSN) */
	path_of(p, sizeof(p), name);
	unlink(p);
	uint64_t offs[11];
	seg_name(name, 11);
	write_segment(11, 10, offs);
	patch_record(name, offs[3], 1, type_of(14), 1);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_GAP);
	assert_int_equal(n, 13);
	assert_string_equal(pos.file, name);
	assert_int_equal(pos.offset, offs[3]);
	assert_int_equal(pos.lsn, 14);
}

static void
test_bad_header(void **state)
{
	char name[TG_JOURNAL_NAME_LEN], p[512];
	struct tg_journal_pos pos;
	struct tg_jseg_hdr h;
	uint64_t n;
	int fd;

	(void)state;
	write_segment(1, 10, NULL);
	write_segment(11, 10, NULL);
	seg_name(name, 11);
	path_of(p, sizeof(p), name);
	/* bad magic, bad checksum, wrong first LSN, wrong size */
	for (int k = 0; k < 4; k++) {
		tg_journal_seg_header(&h, 11, 0);
		if (k == 0)
			h.magic[0] = 'X';
		else if (k == 1)
			h.created ^= 1;
		else if (k == 2) {
			tg_journal_seg_header(&h, 12, 0);
		} else {
			h.hdr_size = 128;
			h.crc = 0;
			h.crc = tg_crc32c(0, &h, sizeof(h));
		}
		fd = open(p, O_RDWR);
		assert_int_equal(pwrite(fd, &h, sizeof(h), 0), sizeof(h));
		close(fd);
		assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_BAD_HEADER);
		assert_int_equal(n, 10);
		assert_string_equal(pos.file, name);
		assert_int_equal(pos.offset, 0);
	}
	/* a middle segment shorter than a header */
	write_segment(21, 1, NULL);
	assert_int_equal(truncate(p, 10), 0);
	assert_int_equal(read_all(1, &n, &pos), TG_JOURNAL_BAD_HEADER);
}

/*
 * Record version 2: the itemized tail after the version 1 payload.  A
 * segment holding a version 1 debit (an older build's) and a version 2 debit
 * of the same call reads both; the strings and the fixed fields come back
 * as written; a tail whose string lengths do not add up, a tail on a type
 * that has none, and a version 1 record of the wrong size are CORRUPT.
 */
static void
write_raw(const char *name, const void *recs, size_t n)
{
	char p[512];
	struct tg_jseg_hdr h;

	path_of(p, sizeof(p), name);
	FILE *f = fopen(p, "wb");
	assert_non_null(f);
	tg_journal_seg_header(&h, 1, 1764000000);
	assert_int_equal(fwrite(&h, sizeof(h), 1, f), 1);
	assert_int_equal(fwrite(recs, n, 1, f), 1);
	assert_int_equal(fclose(f), 0);
}

static void
test_itemized_records(void **state)
{
	char name[TG_JOURNAL_NAME_LEN];
	uint8_t buf[4096], pl[TG_JOURNAL_PAYLOAD_MAX];
	struct tg_jrec_debit d = {.acct = 1001, .id = {7, 8}, .cost = 25200, .duration = 125};
	struct tg_jitem_charge c = {
	    .balance = 4974800, .per_min = 12000, .connect = 0, .reported = 125, .billed = 126};
	const char *const str[TG_JITEM_STRINGS] = {"call-1", "14155551212", "basic", "1415"};
	const size_t len[TG_JITEM_STRINGS] = {6, 11, 5, 4};
	struct tg_journal_reader *r;
	struct tg_jrec rec;
	size_t at = 0, n;

	(void)state;
	/* LSN 1: version 1, as an older build wrote it.  LSN 2: version 2. */
	ssize_t w = tg_journal_encode(buf, sizeof(buf), TG_JREC_DEBIT, 1, 10, &d, sizeof(d));
	assert_int_equal(w, tg_journal_rec_size(sizeof(d)));
	at += (size_t)w;
	size_t pn = tg_journal_item_build(pl, sizeof(pl), TG_JREC_DEBIT, &d, &c, str, len);
	assert_int_equal(pn, sizeof(d) + sizeof(struct tg_jitem_tail) + sizeof(c) + 26);
	assert_int_equal(tg_journal_item_build(pl, pn - 1, TG_JREC_DEBIT, &d, &c, str, len), 0);
	w = tg_journal_encode(buf + at, sizeof(buf) - at, TG_JREC_DEBIT, 2, 20, pl, pn);
	assert_true(w > 0);
	at += (size_t)w;
	tg_journal_seg_name(name, 1);
	write_raw(name, buf, at);

	assert_int_equal(tg_journal_open_dir(&r, tmpdir), 0);
	assert_int_equal(tg_journal_next(r, &rec), TG_JOURNAL_OK);
	assert_int_equal(rec.version, 1);
	assert_int_equal(rec.len, sizeof(d));
	assert_null(tg_journal_item_str(rec.type, rec.payload, rec.len, 0, &n));
	assert_int_equal(n, 0);
	assert_null(tg_journal_item_fixed(rec.type, rec.payload, rec.len));
	assert_int_equal(tg_journal_next(r, &rec), TG_JOURNAL_OK);
	assert_int_equal(rec.version, 2);
	assert_memory_equal(rec.payload, &d, sizeof(d)); /* replay's prefix, unchanged */
	for (unsigned i = 0; i < TG_JITEM_STRINGS; i++) {
		const char *sp = tg_journal_item_str(rec.type, rec.payload, rec.len, i, &n);
		assert_int_equal(n, len[i]);
		assert_memory_equal(sp, str[i], n);
	}
	assert_memory_equal(tg_journal_item_fixed(rec.type, rec.payload, rec.len), &c, sizeof(c));
	assert_int_equal(tg_journal_next(r, &rec), TG_JOURNAL_END);
	tg_journal_close(r);

	/* The checks a reader makes of a payload. */
	assert_true(tg_journal_payload_ok(TG_JREC_DEBIT, 2, pl, pn));
	assert_false(tg_journal_payload_ok(TG_JREC_DEBIT, 2, pl, pn - 1));
	assert_false(tg_journal_payload_ok(TG_JREC_DEBIT, 2, pl, sizeof(d)));
	assert_false(tg_journal_payload_ok(TG_JREC_DEBIT, 1, pl, pn));
	assert_false(tg_journal_payload_ok(TG_JREC_DEBIT, 3, pl, pn));
	assert_false(tg_journal_payload_ok(TG_JREC_REFILL_FIRED, 2, pl, 48));
	assert_true(tg_journal_itemized(TG_JREC_CREDIT, &n) && n == 8);
	assert_false(tg_journal_itemized(TG_JREC_CONFIRM, NULL));

	/* A tail whose lengths claim one byte more than the record holds: CORRUPT at it. */
	pl[sizeof(d)] += 1;
	at = (size_t)tg_journal_rec_size(sizeof(d));
	struct tg_jrec_hdr h = {.len = (uint32_t)pn, .version = 2, .type = TG_JREC_DEBIT, .lsn = 2};
	memset(buf + at, 0, tg_journal_rec_size(pn));
	memcpy(buf + at, &h, sizeof(h));
	memcpy(buf + at + sizeof(h), pl, pn);
	h.crc = tg_crc32c(0, buf + at + 8, sizeof(h) - 8 + pn);
	memcpy(buf + at + 4, &h.crc, 4);
	write_raw(name, buf, at + tg_journal_rec_size(pn));
	assert_int_equal(tg_journal_open_dir(&r, tmpdir), 0);
	assert_int_equal(tg_journal_next(r, &rec), TG_JOURNAL_OK);
	assert_int_equal(tg_journal_next(r, &rec), TG_JOURNAL_CORRUPT);
	assert_int_equal(tg_journal_where(r)->offset, TG_JOURNAL_HDR_SIZE + at);
	tg_journal_close(r);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_dir, teardown_dir)

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc_vectors),
	    cmocka_unit_test(test_crc_paths_agree),
	    cmocka_unit_test(test_encode_layout),
	    T(test_round_trip),
	    T(test_three_segments),
	    T(test_follow),
	    T(test_no_segments),
	    T(test_torn_tail),
	    T(test_torn_header),
	    T(test_flipped_bits),
	    T(test_unconfirmed_tail),
	    T(test_confirm_lsn),
	    T(test_truncate_at),
	    T(test_newer_version),
	    T(test_empty_last),
	    T(test_empty_middle),
	    T(test_gap),
	    T(test_bad_header),
	    T(test_itemized_records),
	};

	return cmocka_run_group_tests_name("journal", tests, NULL, NULL);
}
