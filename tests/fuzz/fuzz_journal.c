/*
 * fuzz_journal.c - fuzz target for the journal reader (journal.c; format in
 * docs/JOURNAL.md).
 *
 * The input is the content of one segment file, journal-0000000000000001.tgj,
 * alone in a private directory, read with tg_journal_open_dir and
 * tg_journal_next until the reader stops.  It is read twice: as it is, and
 * with every checksum recomputed (the header's, then each record's as far as
 * the length fields lead), so the checks behind the CRCs are reached too.
 * Only the reader's public API and the two fields the format fixes forever
 * (len at 0, crc at 4 of a record) are used: the record structs may grow.
 *
 * Beyond not crashing or reading past the file: records come with LSNs 1, 2,
 * ... and the payload size of their type; the stop is sticky and reported at
 * an aligned offset inside the file; and what the reader says to do works:
 * after TORN_TAIL, tg_journal_truncate_tail leaves a journal that reads the
 * same records then END, and after CORRUPT the operator's cut at the reported
 * place (tg_journal_truncate_at) does the same.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "tg_journal.h"

#define SEGMENT "journal-0000000000000001.tgj"

static const char *dir;

struct outcome {
	enum tg_journal_status status;
	size_t records;
	uint64_t next_lsn;
	struct tg_journal_pos pos;
};

static struct outcome
read_all(size_t size)
{
	struct tg_journal_reader *r;
	struct outcome o = {.records = 0};
	struct tg_jrec rec;
	char text[1024];

	FUZZ_CHECK(tg_journal_open_dir(&r, dir) == 0);
	FUZZ_CHECK(tg_journal_segments(r) == 1 && tg_journal_segment_lsn(r, 0) == 1);
	while ((o.status = tg_journal_next(r, &rec)) == TG_JOURNAL_OK) {
		FUZZ_CHECK(rec.lsn == o.records + 1);
		FUZZ_CHECK(rec.version >= 1 && rec.version <= TG_JOURNAL_REC_VERSION);
		FUZZ_CHECK(tg_journal_payload_ok(rec.type, rec.version, rec.payload, rec.len) &&
		           rec.len >= tg_journal_payload_size(rec.type) && rec.len > 0);
		FUZZ_CHECK(strcmp(tg_journal_type_name(rec.type), "?") != 0);
		/* Every payload byte is inside the mapping: touch them all. */
		(void)tg_crc32c_sw(0, rec.payload, rec.len);
		o.records++;
		FUZZ_CHECK(TG_JOURNAL_HDR_SIZE + o.records * tg_journal_rec_size(0) <= size);
	}
	FUZZ_CHECK(o.status != TG_JOURNAL_ERROR);
	FUZZ_CHECK(tg_journal_next(r, &rec) == o.status); /* sticky */
	o.pos = *tg_journal_where(r);
	o.next_lsn = tg_journal_next_lsn(r);
	FUZZ_CHECK(o.next_lsn == o.records + 1);
	FUZZ_CHECK(o.pos.offset <= size && o.pos.offset % TG_JOURNAL_ALIGN == 0);
	FUZZ_CHECK(strcmp(o.pos.file, SEGMENT) == 0);
	FUZZ_CHECK(o.pos.empty_seg == (size == 0));
	FUZZ_CHECK(strcmp(tg_journal_status_name(o.status), "?") != 0);
	tg_journal_describe(r, text, sizeof(text));
	FUZZ_CHECK(strncmp(text, "journal: ", 9) == 0);
	fuzz_note("journal: %zu records, %s", o.records, text);
	if (o.status == TG_JOURNAL_END)
		FUZZ_CHECK(o.pos.offset == size);
	if (o.status == TG_JOURNAL_TORN_TAIL) {
		FUZZ_CHECK(tg_journal_truncate_tail(r) == 0);
		FUZZ_CHECK(tg_journal_next(r, &rec) == TG_JOURNAL_END);
	} else {
		FUZZ_CHECK(tg_journal_truncate_tail(r) == -EINVAL);
	}
	tg_journal_close(r);
	return o;
}

/* Write the segment, read it, and check that following the reader's advice works. */
static void
run(const uint8_t *p, size_t size)
{
	fuzz_write_file(dir, SEGMENT, p, size);
	struct outcome o = read_all(size);

	if (o.status == TG_JOURNAL_CORRUPT)
		FUZZ_CHECK(tg_journal_truncate_at(dir, o.pos.file, o.pos.offset) == 0);
	if (o.status == TG_JOURNAL_TORN_TAIL || o.status == TG_JOURNAL_CORRUPT) {
		struct outcome cut = read_all(o.pos.offset);
		FUZZ_CHECK(cut.status == TG_JOURNAL_END && cut.records == o.records);
		FUZZ_CHECK(cut.next_lsn == o.next_lsn);
	}
}

static uint32_t
get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v; /* the journal is little-endian, as tg_journal.h asserts of the host */
}

/* Recompute the header's CRC and every record's, as far as the lengths lead. */
static void
fix_crcs(uint8_t *p, size_t size)
{
	uint32_t crc;

	if (size < TG_JOURNAL_HDR_SIZE)
		return;
	memset(p + 32, 0, 4); /* the header's crc, at 32, is taken as zero */
	crc = tg_crc32c(0, p, TG_JOURNAL_HDR_SIZE);
	memcpy(p + 32, &crc, 4);
	for (size_t off = TG_JOURNAL_HDR_SIZE; size - off >= tg_journal_rec_size(0);) {
		uint32_t len = get32(p + off);
		if (len > TG_JOURNAL_PAYLOAD_MAX || tg_journal_rec_size(len) > size - off)
			break;
		crc = tg_crc32c(0, p + off + 8, tg_journal_rec_size(0) - 8 + len);
		memcpy(p + off + 4, &crc, 4);
		off += tg_journal_rec_size(len);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (dir == NULL)
		dir = fuzz_tmpdir("journal");
	run(data, size);

	uint8_t *fixed = malloc(size ? size : 1);
	FUZZ_CHECK(fixed != NULL);
	memcpy(fixed, data, size);
	fix_crcs(fixed, size);
	if (memcmp(fixed, data, size) != 0)
		run(fixed, size);
	free(fixed);
	return 0;
}
