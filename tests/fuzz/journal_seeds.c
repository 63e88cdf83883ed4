/*
 * journal_seeds.c - writes the seed segments of corpus/journal/ with the
 * journal's own encoder, so every seed has the record sizes of this build.
 * Run it again whenever the format changes (docs/FUZZING.md):
 *
 *   ninja -C build tests/fuzz/journal_seeds
 *   ./build/tests/fuzz/journal_seeds tests/fuzz/corpus/journal
 *
 * Each seed's name says what the reader must report for it.  Only the public
 * encoder and the two fields the format fixes forever (a record's len at 0
 * and crc at 4) are used: payloads are byte patterns, not structs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tg_journal.h"

#define T0 1764160000123456789ll

static uint8_t seg[16384];
static size_t len;
static const char *dir;

static void
start(uint64_t first_lsn)
{
	struct tg_jseg_hdr h;

	tg_journal_seg_header(&h, first_lsn, 1764160000);
	memcpy(seg, &h, sizeof(h));
	len = sizeof(h);
}

/* Append a record of type with a patterned payload of its size; returns its offset. */
static size_t
rec(unsigned type, uint64_t lsn)
{
	uint8_t payload[TG_JOURNAL_PAYLOAD_MAX];
	size_t n = tg_journal_payload_size(type), at = len;

	for (size_t i = 0; i < n; i++)
		payload[i] = (uint8_t)(type * 7 + i);
	ssize_t w = tg_journal_encode(seg + len, sizeof(seg) - len, type, lsn, T0 + (int64_t)lsn,
	                              payload, n);
	if (w < 0)
		abort();
	len += (size_t)w;
	return at;
}

/* Rewrite the CRC of the record at off after its bytes were changed. */
static void
reseal(size_t off)
{
	uint32_t n, crc;

	memcpy(&n, seg + off, 4);
	crc = tg_crc32c(0, seg + off + 8, 24 + n);
	memcpy(seg + off + 4, &crc, 4);
}

static void
save(const char *name)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(seg, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

int
main(int argc, char **argv)
{
	size_t at;
	uint16_t u16;
	uint32_t u32;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	mkdir(dir, 0755);

	len = 0;
	save("ok-empty-file");
	start(1);
	save("ok-header-only");
	start(1);
	rec(TG_JREC_RESERVE, 1);
	rec(TG_JREC_COMMIT, 2);
	rec(TG_JREC_CREDIT, 3);
	save("ok-three-records");
	start(1);
	for (unsigned t = 1; t <= TG_JREC__COUNT; t++)
		rec(t, t);
	save("ok-every-type");

	start(1);
	len = 30;
	save("torn-short-header");
	start(1);
	rec(TG_JREC_DEBIT, 1);
	rec(TG_JREC_DEBIT, 2);
	len -= 9;
	save("torn-last-record-cut");
	start(1);
	rec(TG_JREC_DEBIT, 1);
	at = rec(TG_JREC_SET_BALANCE, 2);
	seg[at + 20] ^= 1;
	save("torn-last-record-bad-crc");
	start(1);
	rec(TG_JREC_DEBIT, 1);
	u32 = 5000;
	memcpy(seg + len, &u32, 4);
	memset(seg + len + 4, 0, 28);
	len += 32;
	save("torn-huge-length");

	start(1);
	rec(TG_JREC_RESERVE, 1);
	at = rec(TG_JREC_COMMIT, 2);
	rec(TG_JREC_CREDIT, 3);
	seg[at + 40] ^= 0x80;
	save("corrupt-bad-crc-then-valid");
	start(1);
	at = rec(TG_JREC_SETTINGS, 1);
	rec(TG_JREC_DEBIT, 2);
	u32 = (uint32_t)tg_journal_payload_size(TG_JREC_SETTINGS) - 8; /* shorter by a word */
	memcpy(seg + at, &u32, 4);
	memmove(seg + at + 32 + u32, seg + at + 40 + u32, len - (at + 40 + u32));
	len -= 8;
	reseal(at);
	save("corrupt-wrong-payload-size");
	start(1);
	at = rec(TG_JREC_SETTINGS, 1);
	rec(TG_JREC_DEBIT, 2);
	u16 = 0;
	memcpy(seg + at + 10, &u16, 2); /* type 0 */
	reseal(at);
	save("corrupt-type-0");

	start(1);
	memcpy(seg, "TGJOURNX", 8);
	rec(TG_JREC_DEBIT, 1);
	save("bad-header-magic");
	start(1);
	seg[40] = 1; /* in the padding, under the header's CRC */
	rec(TG_JREC_DEBIT, 1);
	save("bad-header-crc");
	start(7);
	rec(TG_JREC_DEBIT, 7);
	save("bad-header-lsn");

	struct tg_jseg_hdr h;
	start(1);
	memcpy(&h, seg, sizeof(h));
	h.version = TG_JOURNAL_VERSION + 1;
	h.crc = 0;
	h.crc = tg_crc32c(0, &h, sizeof(h));
	memcpy(seg, &h, sizeof(h));
	rec(TG_JREC_DEBIT, 1);
	save("newer-segment-version");
	start(1);
	rec(TG_JREC_DEBIT, 1);
	at = rec(TG_JREC_DEBIT, 2);
	u16 = TG_JOURNAL_REC_VERSION + 1;
	memcpy(seg + at + 8, &u16, 2);
	reseal(at);
	save("newer-record-version");
	start(1);
	at = rec(TG_JREC_DEBIT, 1);
	seg[at + 12] = 1; /* flags */
	reseal(at);
	save("newer-record-flags");
	start(1);
	at = rec(TG_JREC_DEBIT, 1);
	u16 = TG_JREC__COUNT + 1;
	memcpy(seg + at + 10, &u16, 2);
	reseal(at);
	save("newer-record-type");

	start(1);
	rec(TG_JREC_RESERVE, 1);
	rec(TG_JREC_COMMIT, 3);
	save("gap-lsn");
	return 0;
}
