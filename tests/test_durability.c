/*
 * test_durability.c - the journal against the real tollgated: what a crash,
 * a reboot, a damaged file, a full disk and a failing write each do.
 *
 * Every case drives the daemon over its socket, then kills it (SIGKILL, as
 * a crash) or stops it, does something to the data directory or the shared
 * memory segment, starts it again on the same directory and checks from the
 * outside what survived: balances to the micro-unit, replies of replayed
 * ids, calls still in progress, refills in flight.  The statistical version
 * (thousands of operations, fifty kills) is test_crash.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rcmd.h"
#include "tg_journal.h"
#include "tg_money.h"

#define U 1000000LL
/* basic, prefix 1212: $0.005 a minute, 60/60 (tools/demo/rates.csv). */
#define DEST "12125551234"

struct fx {
	char dir[IT_PATH_MAX];
	struct it_daemon d;
	redisContext *c;
};

/* A reply that is a money amount (bulk or status string). */
static tg_money_t
money_cmd(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	assert_non_null(r);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("%s: %s", fmt, r->str);
	tg_money_t v = r->type == REDIS_REPLY_INTEGER ? r->integer * U : it_money(r->str);
	freeReplyObject(r);
	return v;
}

static void
fx_start(struct fx *f, const char *const *flags)
{
	assert_int_equal(it_dir_make(f->dir, sizeof(f->dir)), 0);
	assert_int_equal(it_start(&f->d, f->dir, flags), 0);
	f->c = it_connect(&f->d);
	assert_non_null(f->c);
	it_run_cmd(f->c, "ACCT.SET 1 BALANCE 100 PLAN basic");
	it_run_cmd(f->c, "ACCT.SET 2 BALANCE 50 PLAN basic");
}

static void
fx_reconnect(struct fx *f)
{
	if (f->c)
		redisFree(f->c);
	f->c = it_connect(&f->d);
	assert_non_null(f->c);
}

static void
fx_crash(struct fx *f)
{
	if (f->c)
		redisFree(f->c);
	f->c = NULL;
	assert_int_equal(it_kill(&f->d), 0);
}

static void
fx_restart(struct fx *f, const char *const *flags, int reboot)
{
	assert_int_equal(it_restart(&f->d, flags, reboot), 0);
	fx_reconnect(f);
}

static void
fx_end(struct fx *f)
{
	if (f->c)
		redisFree(f->c);
	f->c = NULL;
	if (f->d.pid > 0)
		assert_int_equal(it_stop(&f->d), 0);
	it_dir_remove(f->dir);
}

/* Path of the segment journal-<lsn>.tgj with the highest LSN in the data dir. */
static void
last_segment(const struct fx *f, char *path, size_t cap)
{
	DIR *d = opendir(f->d.data);
	struct dirent *e;
	uint64_t best = 0, lsn;
	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (tg_journal_seg_name_parse(e->d_name, &lsn) && lsn >= best)
			best = lsn;
	closedir(d);
	char name[TG_JOURNAL_NAME_LEN];
	tg_journal_seg_name(name, best);
	it_pathf(path, cap, "%s/%s", f->d.data, name);
}

/* Offset of record k (0-based) of a segment file. */
static off_t
record_offset(const char *path, unsigned k)
{
	int fd = open(path, O_RDONLY);
	off_t off = TG_JOURNAL_HDR_SIZE;
	assert_true(fd >= 0);
	for (unsigned i = 0; i < k; i++) {
		struct tg_jrec_hdr h;
		assert_int_equal(pread(fd, &h, sizeof(h), off), (ssize_t)sizeof(h));
		off += (off_t)tg_journal_rec_size(h.len);
	}
	close(fd);
	return off;
}

static void
patch(const char *path, off_t off, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, p, n, off), (ssize_t)n);
	close(fd);
}

static size_t
count_files(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;
	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(d);
	return n;
}

/* ---- crash and reboot: everything acknowledged is there, nothing twice ---- */

static void
crash_case(int reboot)
{
	struct fx f = {0};
	char v[64];

	fx_start(&f, NULL);
	tg_money_t c1 = money_cmd(f.c, "CDR 1 " DEST " 600 cdr-1");
	tg_money_t b2 = money_cmd(f.c, "ACCT.CREDIT 2 7.5 tx-1");
	assert_int_equal(b2, 57500000);
	long long grant = it_int_cmd(f.c, "CALL.AUTH 1 " DEST " call-1");
	assert_true(grant > 0);
	tg_money_t held = it_acct_money(f.c, 1, "reserved");
	assert_true(held > 0);
	it_run_cmd(f.c, "ACCT.SET 2 THRESHOLD 60 REFILL ADD 25 PAYMENT on"); /* fires at once */
	it_acct_field(f.c, 2, "refill_request", v, sizeof(v));
	assert_string_equal(v, "refill:2:1");

	fx_crash(&f);
	fx_restart(&f, NULL, reboot);
	assert_true(
	    it_log_has(&f.d, reboot ? "recovered to LSN" : "rebuilding it from the journal"));
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - c1);
	assert_int_equal(it_acct_money(f.c, 2, "balance"), 57500000);
	assert_int_equal(it_acct_money(f.c, 1, "reserved"), held);
	it_acct_field(f.c, 2, "refill_request", v, sizeof(v));
	assert_string_equal(v, "refill:2:1"); /* still in flight, same number */
	/* Replays answer from the rebuilt window and move nothing. */
	assert_int_equal(money_cmd(f.c, "CDR 1 " DEST " 600 cdr-1"), c1);
	assert_int_equal(money_cmd(f.c, "ACCT.CREDIT 2 7.5 tx-1"), 57500000);
	assert_int_equal(it_int_cmd(f.c, "CALL.AUTH 1 " DEST " call-1"), grant);
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - c1);
	/* The call survived: its END settles it. */
	tg_money_t c2 = money_cmd(f.c, "CALL.END 1 call-1 90");
	assert_true(c2 > 0);
	assert_int_equal(it_acct_money(f.c, 1, "reserved"), 0);
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - c1 - c2);
	/* No second refill while the first is in flight. */
	money_cmd(f.c, "CDR 2 " DEST " 60 cdr-2");
	it_acct_field(f.c, 2, "refill_request", v, sizeof(v));
	assert_string_equal(v, "refill:2:1");

	/* A clean stop keeps the segment; the next start uses it as it is. */
	assert_int_equal(it_term(&f.d), 0);
	redisFree(f.c);
	f.c = NULL;
	fx_restart(&f, NULL, 0);
	assert_true(it_log_has(&f.d, "kept: a clean stop left it at LSN"));
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - c1 - c2);
	assert_int_equal(money_cmd(f.c, "CALL.END 1 call-1 90"), c2);
	fx_end(&f);
}

static void
test_crash_restart(void **state)
{
	(void)state;
	crash_case(0);
}

static void
test_reboot(void **state)
{
	(void)state;
	crash_case(1);
}

/*
 * A postpaid account keeps its kind and credit limit across a crash (from
 * the journal's settings record, where the limit shares the threshold's
 * word) and across a clean stop and a reboot (from a snapshot): granted
 * below $0.00 down to minus the limit, and no further, before and after.
 */
static void
postpaid_expect(struct fx *f, tg_money_t balance)
{
	char kind[16];
	it_acct_field(f->c, 3, "kind", kind, sizeof(kind));
	assert_string_equal(kind, "postpaid");
	assert_int_equal(it_acct_money(f->c, 3, "credit_limit"), 10000);
	assert_int_equal(it_acct_money(f->c, 3, "threshold"), 0);
	assert_int_equal(it_acct_money(f->c, 3, "balance"), balance);
	assert_int_equal(it_acct_money(f->c, 3, "available"), balance + 10000);
}

static void
test_postpaid_survives_restart(void **state)
{
	struct fx f = {0};
	(void)state;

	fx_start(&f, NULL);
	/* $0.01 of credit at $0.005 a minute: two minutes at $0.00. */
	it_run_cmd(f.c, "ACCT.SET 3 PLAN basic KIND postpaid LIMIT 0.01");
	assert_int_equal(it_int_cmd(f.c, "CALL.AUTH 3 %s pp-1", DEST), 120);
	it_run_cmd(f.c, "CALL.END 3 pp-1 60");
	postpaid_expect(&f, -5000);
	fx_crash(&f);
	fx_restart(&f, NULL, 0);
	postpaid_expect(&f, -5000);
	assert_int_equal(it_int_cmd(f.c, "CALL.AUTH 3 %s pp-2", DEST), 60);
	it_run_cmd(f.c, "CALL.END 3 pp-2 60");
	postpaid_expect(&f, -10000);
	char err[128];
	it_error_of(f.c, err, sizeof(err), "CALL.AUTH 3 " DEST " pp-3");
	assert_non_null(strstr(err, "BLOCKED"));
	assert_int_equal(it_stop(&f.d), 0);
	fx_restart(&f, NULL, 1);
	postpaid_expect(&f, -10000);
	it_error_of(f.c, err, sizeof(err), "CALL.AUTH 3 " DEST " pp-4");
	assert_non_null(strstr(err, "BLOCKED"));
	/* A payment (a credit) makes room again. */
	it_run_cmd(f.c, "ACCT.CREDIT 3 0.01 pay-1");
	assert_int_equal(it_int_cmd(f.c, "CALL.AUTH 3 %s pp-5", DEST), 120);
	fx_end(&f);
}

/*
 * A call settled by expiry keeps its call id spent across restarts: rebuilt
 * from the journal's expire record after a crash, then from a snapshot
 * after a clean stop.  Without it a restarted engine authorized the id
 * again and billed the call twice.
 */
static void
test_expired_call_id_survives_restart(void **state)
{
	static const char *const flags[] = {"--max-grant", "6", "--call-grace", "1", NULL};
	struct fx f = {0};
	char err[128];

	(void)state;
	fx_start(&f, flags);
	it_run_cmd(f.c, "ACCT.SET 1300 BALANCE 1 PLAN basic");
	assert_int_equal(it_int_cmd(f.c, "CALL.AUTH 1300 14165550199 exp-re"), 6);
	long long granted_at = it_info(f.c, "journal_lsn"); /* the reserve is on disk */
	uint64_t end = tg_mono_ms() + 15000;
	while (it_acct_money(f.c, 1300, "reserved") != 0 && tg_mono_ms() < end)
		it_sleep_ms(100);
	assert_int_equal(it_acct_money(f.c, 1300, "balance"), 997500); /* 6 s at 0.025 a minute */
	/*
	 * The expiry is seen in the table before its record is on disk, and no
	 * one waits for that record: a kill -9 in between leaves the call in
	 * progress for the next start to settle.  Crash only once it is on disk.
	 */
	while (it_info(f.c, "journal_lsn") <= granted_at && tg_mono_ms() < end)
		it_sleep_ms(20);
	assert_true(it_info(f.c, "journal_lsn") > granted_at);

	for (int run = 0; run < 2; run++) {
		if (run == 0) {
			fx_crash(&f); /* the journal's expire record rebuilds the mark */
		} else {
			assert_int_equal(it_term(&f.d), 0); /* the last snapshot holds it */
			redisFree(f.c);
			f.c = NULL;
		}
		fx_restart(&f, flags, 1);
		if (run == 1)
			assert_true(it_log_has(&f.d, " + 0 records;")); /* all from the snapshot */
		it_error_of(f.c, err, sizeof(err), "CALL.AUTH 1300 14165550199 exp-re");
		assert_string_equal(err, "CONFLICT id already used with different data");
		it_error_of(f.c, err, sizeof(err), "CALL.END 1300 exp-re 6");
		assert_string_equal(err,
		                    "EXPIRED call settled by expiry at its grant: charged 0.0025");
		assert_int_equal(it_acct_money(f.c, 1300, "balance"), 997500);
		assert_int_equal(it_acct_money(f.c, 1300, "reserved"), 0);
	}
	fx_end(&f);
}

/* ---- damaged journals ---- */

static void
test_torn_tail_is_cut(void **state)
{
	struct fx f = {0};
	char seg[IT_PATH_MAX];

	(void)state;
	fx_start(&f, NULL);
	tg_money_t c1 = money_cmd(f.c, "CDR 1 " DEST " 600 cdr-1");
	fx_crash(&f);
	/* Half a record at the end: a crash in the middle of a write. */
	last_segment(&f, seg, sizeof(seg));
	struct stat st;
	assert_int_equal(stat(seg, &st), 0);
	static const char half[20] = {40, 0, 0, 0, 1, 2, 3, 4};
	patch(seg, st.st_size, half, sizeof(half));
	fx_restart(&f, NULL, 1);
	assert_true(it_log_has(&f.d, "(cut off)"));
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - c1);
	assert_int_equal(stat(seg, &st), 0);
	assert_int_equal(st.st_size % 8, 0);
	fx_end(&f);
}

static void
test_corrupt_middle_stops_start(void **state)
{
	struct fx f = {0};
	char seg[IT_PATH_MAX], name[IT_PATH_MAX];

	(void)state;
	fx_start(&f, NULL); /* records 0..5: two accounts, balance + settings each */
	money_cmd(f.c, "CDR 1 " DEST " 600 cdr-1"); /* record 4 */
	tg_money_t c2 = money_cmd(f.c, "CDR 1 " DEST " 60 cdr-2");
	money_cmd(f.c, "CDR 1 " DEST " 60 cdr-3");
	fx_crash(&f);
	last_segment(&f, seg, sizeof(seg));
	off_t off = record_offset(seg, 4);
	uint8_t x = 0x5a;
	patch(seg, off + 40, &x, 1); /* in the payload: the checksum no longer matches */

	assert_int_equal(it_restart(&f.d, NULL, 1), -1);
	const char *base = strrchr(seg, '/') + 1;
	it_pathf(name, sizeof(name), "%s", base);
	assert_true(it_log_has(&f.d, name));
	assert_true(it_log_has(&f.d, "journal-cut"));
	char at[64];
	it_pathf(at, sizeof(at), "offset %lld", (long long)off);
	assert_true(it_log_has(&f.d, at));

	/* The operator's way on: cut there; the records before it are the state. */
	assert_int_equal(tg_journal_truncate_at(f.d.data, name, (uint64_t)off), 0);
	fx_restart(&f, NULL, 1);
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U);
	/* The CDRs after the cut were lost with it: they charge again when sent again. */
	assert_int_equal(money_cmd(f.c, "CDR 1 " DEST " 60 cdr-2"), c2);
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - c2);
	fx_end(&f);
}

static void
test_newer_record_version_stops_start(void **state)
{
	struct fx f = {0};
	char seg[IT_PATH_MAX];

	(void)state;
	fx_start(&f, NULL);
	money_cmd(f.c, "CDR 1 " DEST " 600 cdr-1");
	fx_crash(&f);
	last_segment(&f, seg, sizeof(seg));
	/* Record 4 claims a version above this build's, with a checksum that matches. */
	off_t off = record_offset(seg, 4);
	int fd = open(seg, O_RDWR);
	struct tg_jrec_hdr h;
	uint8_t rec[TG_JOURNAL_PAYLOAD_MAX + 32];
	assert_int_equal(pread(fd, &h, sizeof(h), off), (ssize_t)sizeof(h));
	assert_int_equal(pread(fd, rec, sizeof(h) + h.len, off), (ssize_t)(sizeof(h) + h.len));
	uint16_t v2 = TG_JOURNAL_REC_VERSION + 1;
	memcpy(rec + offsetof(struct tg_jrec_hdr, version), &v2, 2);
	uint32_t crc = tg_crc32c(0, rec + 8, sizeof(h) - 8 + h.len);
	memcpy(rec + 4, &crc, 4);
	assert_int_equal(pwrite(fd, rec, sizeof(h) + h.len, off), (ssize_t)(sizeof(h) + h.len));
	close(fd);
	assert_int_equal(it_restart(&f.d, NULL, 1), -1);
	assert_true(it_log_has(&f.d, "newer"));
	fx_end(&f);
}

static void
test_empty_last_segment_is_fine(void **state)
{
	struct fx f = {0};
	char path[IT_PATH_MAX], name[TG_JOURNAL_NAME_LEN];

	(void)state;
	fx_start(&f, NULL);
	tg_money_t c1 = money_cmd(f.c, "CDR 1 " DEST " 600 cdr-1");
	fx_crash(&f);
	/* A crash between creating the next segment and writing its header. */
	tg_journal_seg_name(name, 6);
	it_pathf(path, sizeof(path), "%s/%s", f.d.data, name);
	int fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	fx_restart(&f, NULL, 1);
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - c1);
	assert_int_equal(money_cmd(f.c, "CDR 1 " DEST " 600 cdr-1"), c1);
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - c1);
	fx_end(&f);
}

static void
test_missing_segment_stops_start(void **state)
{
	static const char *const small[] = {"--journal-segment-size", "4096", NULL};
	struct fx f = {0};
	char path[IT_PATH_MAX];

	(void)state;
	fx_start(&f, small);
	for (int i = 0; i < 200; i++)
		money_cmd(f.c, "CDR 1 " DEST " 60 cdr-%d", i);
	fx_crash(&f);
	assert_true(count_files(f.d.data, "journal-") >= 3);
	/* Remove the second segment (by name order, which is LSN order). */
	struct dirent **list;
	int n = scandir(f.d.data, &list, NULL, alphasort), removed = 0;
	for (int i = 0, segs = 0; i < n; i++) {
		uint64_t lsn;
		if (tg_journal_seg_name_parse(list[i]->d_name, &lsn) && ++segs == 2) {
			it_pathf(path, sizeof(path), "%s/%s", f.d.data, list[i]->d_name);
			assert_int_equal(unlink(path), 0);
			removed = 1;
		}
		free(list[i]);
	}
	free(list);
	assert_true(removed);
	assert_int_equal(it_restart(&f.d, small, 1), -1);
	assert_true(it_log_has(&f.d, "missing") || it_log_has(&f.d, "gap"));
	fx_end(&f);
}

/* ---- snapshots ---- */

static void
test_snapshots_prune_and_fall_back(void **state)
{
	static const char *const flags[] = {"--journal-segment-size", "4096", "--snapshot-interval",
	                                    "1", NULL};
	struct fx f = {0};
	tg_money_t spent = 0;

	(void)state;
	fx_start(&f, flags);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 100; i++)
			spent += money_cmd(f.c, "CDR 1 " DEST " 60 r%d-%d", round, i);
		it_sleep_ms(1300); /* a snapshot each round */
	}
	assert_true(it_log_has(&f.d, "snapshot at LSN"));
	assert_true(count_files(f.d.data, "snapshot-") <= 2);
	size_t segs = count_files(f.d.data, "journal-");
	/* 300 CDRs are about 60 KiB of journal (15 segments): most went with the snapshots. */
	assert_true(segs < 10);
	fx_crash(&f);

	/* Damage the newest snapshot: the older one and a longer replay take its place. */
	struct dirent **list;
	int n = scandir(f.d.data, &list, NULL, alphasort);
	char newest[IT_PATH_MAX] = "";
	for (int i = 0; i < n; i++) {
		if (strncmp(list[i]->d_name, "snapshot-", 9) == 0 &&
		    strstr(list[i]->d_name, ".new") == NULL)
			it_pathf(newest, sizeof(newest), "%s/%s", f.d.data, list[i]->d_name);
		free(list[i]);
	}
	free(list);
	assert_true(newest[0] != '\0');
	uint8_t x = 0xff;
	patch(newest, 100, &x, 1);
	fx_restart(&f, flags, 1);
	assert_true(it_log_has(&f.d, "skipped"));
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - spent);
	assert_int_equal(money_cmd(f.c, "CDR 1 " DEST " 60 r2-99"), spent / 300);
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - spent);
	fx_end(&f);
}

/* The snapshot files of the data directory, newest first, into paths; their count. */
static int
snapshot_files(const struct fx *f, char paths[][IT_PATH_MAX], int max)
{
	struct dirent **list;
	int n = scandir(f->d.data, &list, NULL, alphasort), k = 0;
	assert_true(n >= 0);
	for (int i = n; i-- > 0;) {
		const char *name = list[i]->d_name;
		size_t len = strlen(name);
		if (k < max && strncmp(name, "snapshot-", 9) == 0 && len > 4 &&
		    strcmp(name + len - 4, ".tgs") == 0)
			it_pathf(paths[k++], IT_PATH_MAX, "%s/%s", f->d.data, name);
	}
	for (int i = 0; i < n; i++)
		free(list[i]);
	free(list);
	return k;
}

/* CDRs r<tag>-0 .. r<tag>-(n-1) on account 1, pipelined; the sum of their charges. */
static tg_money_t
cdr_burst(struct fx *f, const char *tag, int n)
{
	tg_money_t spent = 0;
	for (int i = 0; i < n; i++)
		assert_int_equal(redisAppendCommand(f->c, "CDR 1 " DEST " 60 %s-%d", tag, i),
		                 REDIS_OK);
	for (int i = 0; i < n; i++) {
		redisReply *r;
		assert_int_equal(redisGetReply(f->c, (void **)&r), REDIS_OK);
		assert_int_equal(r->type, REDIS_REPLY_STRING);
		spent += it_money(r->str);
		freeReplyObject(r);
	}
	return spent;
}

/*
 * One snapshot, one flipped byte: after the first clean stop the data
 * directory holds a single snapshot, and nothing it covers may have been
 * deleted on its strength alone.  Damaged, it is skipped and the whole
 * journal replays every balance exactly.
 */
static void
test_single_snapshot_corrupt_keeps_every_balance(void **state)
{
	static const char *const flags[] = {"--journal-segment-size", "1048576", "--disk-reserve",
	                                    "1048576", NULL};
	char snaps[4][IT_PATH_MAX];
	struct fx f = {0};

	(void)state;
	fx_start(&f, flags);
	it_run_cmd(f.c, "ACCT.SET 1 BALANCE 1000 PLAN basic");
	tg_money_t spent = cdr_burst(&f, "one", 30000);
	tg_money_t before = it_acct_money(f.c, 1, "balance");
	assert_int_equal(before, 1000 * U - spent);
	redisFree(f.c);
	f.c = NULL;
	assert_int_equal(it_term(&f.d), 0);
	assert_int_equal(snapshot_files(&f, snaps, 4), 1);
	/* 30000 CDRs are about 3 MiB: several segments, every one still there. */
	assert_true(count_files(f.d.data, "journal-") >= 3);
	uint8_t x = 0x5a;
	patch(snaps[0], 4096, &x, 1);

	fx_restart(&f, flags, 1);
	assert_true(it_log_has(&f.d, "skipped"));
	assert_int_equal(it_acct_money(f.c, 1, "balance"), before);
	assert_int_equal(it_acct_money(f.c, 2, "balance"), 50 * U);
	/* The id window came back from the journal too: a replay charges nothing. */
	assert_int_equal(money_cmd(f.c, "CDR 1 " DEST " 60 one-29999"), spent / 30000);
	assert_int_equal(it_acct_money(f.c, 1, "balance"), before);
	fx_end(&f);
}

/*
 * Snapshots every second with small segments: pruning keeps the journal
 * from the older of the two newest snapshots, so damaging the newest one
 * (or both the newest and a segment-free fallback) never loses a balance.
 */
static void
test_pruning_keeps_the_older_verified_snapshot(void **state)
{
	static const char *const flags[] = {"--journal-segment-size", "65536",
	                                    "--snapshot-interval", "1", NULL};
	char snaps[8][IT_PATH_MAX];
	struct fx f = {0};
	tg_money_t spent = 0;

	(void)state;
	fx_start(&f, flags);
	for (int round = 0; round < 4; round++) {
		char tag[16];
		snprintf(tag, sizeof(tag), "p%d", round);
		spent += cdr_burst(&f, tag, 3000);
		it_sleep_ms(1300);
	}
	assert_true(snapshot_files(&f, snaps, 8) <= 2);
	/* 12000 CDRs are over a megabyte: the oldest segments went with the snapshots. */
	char first[TG_JOURNAL_NAME_LEN];
	tg_journal_seg_name(first, 1);
	char path[IT_PATH_MAX];
	it_pathf(path, sizeof(path), "%s/%s", f.d.data, first);
	assert_int_not_equal(access(path, F_OK), 0);
	tg_money_t before = it_acct_money(f.c, 1, "balance");
	assert_int_equal(before, 100 * U - spent);
	fx_crash(&f);

	int n = snapshot_files(&f, snaps, 8);
	assert_int_equal(n, 2);
	uint8_t x = 0xff;
	patch(snaps[0], 100, &x, 1);
	fx_restart(&f, flags, 1);
	assert_true(it_log_has(&f.d, "skipped"));
	assert_int_equal(it_acct_money(f.c, 1, "balance"), before);
	fx_end(&f);
}

/*
 * One flipped bit in the last record of the journal, acknowledged and on
 * disk: the CONFIRM after it proves it was acknowledged, so start-up refuses
 * with the file, the offset and the way on, rather than cutting it as a torn
 * tail and losing the CDR.  The same bit flipped in that CONFIRM loses
 * nothing: it is cut, and every record before it stays.
 */
static void
test_flipped_last_record_stops_start(void **state)
{
	struct fx f = {0};
	char seg[IT_PATH_MAX], at[64];
	struct stat st;

	(void)state;
	fx_start(&f, NULL);
	tg_money_t c1 = money_cmd(f.c, "CDR 1 " DEST " 600 last-1");
	fx_crash(&f);
	last_segment(&f, seg, sizeof(seg));
	assert_int_equal(stat(seg, &st), 0);
	/* The file ends: ... debit (itemized: its size varies), CONFIRM (40 bytes). */
	off_t confirm = st.st_size - TG_JOURNAL_CONFIRM_SIZE, debit = TG_JOURNAL_HDR_SIZE;
	struct tg_jrec_hdr h;
	int fd = open(seg, O_RDONLY);
	assert_true(fd >= 0);
	for (;;) {
		assert_int_equal(pread(fd, &h, sizeof(h), debit), (ssize_t)sizeof(h));
		if (debit + (off_t)tg_journal_rec_size(h.len) >= confirm)
			break;
		debit += (off_t)tg_journal_rec_size(h.len);
	}
	assert_int_equal(pread(fd, &h, sizeof(h), debit), (ssize_t)sizeof(h));
	assert_int_equal(h.type, TG_JREC_DEBIT);
	assert_int_equal(pread(fd, &h, sizeof(h), confirm), (ssize_t)sizeof(h));
	assert_int_equal(h.type, TG_JREC_CONFIRM);
	close(fd);

	uint8_t b;
	fd = open(seg, O_RDWR);
	assert_int_equal(pread(fd, &b, 1, debit + 40), 1);
	b ^= 0x10;
	assert_int_equal(pwrite(fd, &b, 1, debit + 40), 1);
	close(fd);
	assert_int_equal(it_restart(&f.d, NULL, 1), -1);
	assert_false(it_log_has(&f.d, "torn tail"));
	it_pathf(at, sizeof(at), "offset %lld", (long long)debit);
	assert_true(it_log_has(&f.d, at));
	assert_true(it_log_has(&f.d, strrchr(seg, '/') + 1));
	assert_true(it_log_has(&f.d, "journal-cut"));
	assert_true(it_log_has(&f.d, "from a backup or replica"));
	assert_int_equal(stat(seg, &st), 0);
	assert_int_equal(st.st_size, confirm + TG_JOURNAL_CONFIRM_SIZE); /* nothing was cut */

	/* The intact copy back in place: everything is there. */
	b ^= 0x10;
	patch(seg, debit + 40, &b, 1);
	/* One bit of the CONFIRM itself: cut, and the CDR stays. */
	fd = open(seg, O_RDWR);
	assert_int_equal(pread(fd, &b, 1, confirm + 36), 1);
	b ^= 0x01;
	assert_int_equal(pwrite(fd, &b, 1, confirm + 36), 1);
	close(fd);
	fx_restart(&f, NULL, 1);
	assert_true(it_log_has(&f.d, "(cut off)"));
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - c1);
	assert_int_equal(money_cmd(f.c, "CDR 1 " DEST " 600 last-1"), c1);
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - c1);
	/* Every start appended to the one segment, after a CONFIRM of what it found. */
	assert_int_equal(count_files(f.d.data, "journal-"), 1);
	fx_end(&f);
}

/* ---- the disk ---- */

static void
test_disk_reserve_refuses_debits(void **state)
{
	static const char *const flags[] = {"--disk-reserve", "18000000000000000000", NULL};
	struct fx f = {0};
	char err[256];

	(void)state;
	assert_int_equal(it_dir_make(f.dir, sizeof(f.dir)), 0);
	assert_int_equal(it_start(&f.d, f.dir, flags), 0);
	f.c = it_connect(&f.d);
	assert_non_null(f.c);
	it_sleep_ms(300); /* the first space check */
	it_error_of(f.c, err, sizeof(err), "ACCT.SET 1 BALANCE 100 PLAN basic");
	assert_true(strncmp(err, "NOSPACE", 7) == 0);
	it_error_of(f.c, err, sizeof(err), "CDR 1 " DEST " 60 c1");
	assert_true(strncmp(err, "NOSPACE", 7) == 0 || strncmp(err, "NOACCOUNT", 9) == 0);
	it_error_of(f.c, err, sizeof(err), "CALL.AUTH 1 " DEST " call-1");
	assert_true(strncmp(err, "NOSPACE", 7) == 0);
	redisReply *r = it_cmd(f.c, "INFO journal");
	assert_non_null(strstr(r->str, "journal_low_space:1"));
	assert_non_null(strstr(r->str, "journal_nospace:"));
	freeReplyObject(r);
	assert_true(it_log_has(&f.d, "below disk-reserve"));
	fx_end(&f);
}

static void
test_write_error_stops_engine(void **state)
{
	struct fx f = {0};
	struct rlimit old, lim;
	int acked = 0, failed_at = -1;
	tg_money_t spent = 0, each = 0;

	(void)state;
	fx_start(&f, NULL);
	assert_int_equal(it_term(&f.d), 0);
	redisFree(f.c);
	f.c = NULL;
	/* The next run may not grow a file past 64 KiB: its journal will hit it. */
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = 64 * 1024;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	int rc = it_restart(&f.d, NULL, 0);
	setrlimit(RLIMIT_FSIZE, &old);
	assert_int_equal(rc, 0);
	fx_reconnect(&f);
	for (int i = 0; i < 2000; i++) {
		redisReply *r = redisCommand(f.c, "CDR 1 " DEST " 60 w-%d", i);
		if (r == NULL || r->type == REDIS_REPLY_ERROR) {
			if (r)
				freeReplyObject(r);
			failed_at = i;
			break;
		}
		each = it_money(r->str);
		spent += each;
		acked++;
		freeReplyObject(r);
	}
	assert_true(failed_at >= 0); /* the engine stopped */
	it_sleep_ms(200);
	assert_true(it_log_has(&f.d, "File too large"));
	assert_true(it_log_has(&f.d, "Stopping now"));
	int status = 0;
	assert_int_equal(waitpid(f.d.pid, &status, 0), f.d.pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 3);
	f.d.pid = 0;
	redisFree(f.c);
	f.c = NULL;

	/* Restarted without the limit: every acknowledged CDR is there, once. */
	fx_restart(&f, NULL, 1);
	tg_money_t bal = it_acct_money(f.c, 1, "balance");
	assert_true(bal <= 100 * U - spent);
	/* The one that got no answer may or may not have landed; sent again, it lands once. */
	money_cmd(f.c, "CDR 1 " DEST " 60 w-%d", failed_at);
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - spent - each);
	for (int i = 0; i < acked; i++)
		money_cmd(f.c, "CDR 1 " DEST " 60 w-%d", i);
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - spent - each);
	fx_end(&f);
}

/* ---- modes and the directory ---- */

static void
test_relaxed_mode_recovers_after_clean_stop(void **state)
{
	static const char *const flags[] = {"--durability", "relaxed", "--journal-flush-ms", "5",
	                                    NULL};
	struct fx f = {0};

	(void)state;
	fx_start(&f, flags);
	tg_money_t c1 = money_cmd(f.c, "CDR 1 " DEST " 600 cdr-1");
	it_sleep_ms(100); /* past journal-flush-ms: on disk */
	fx_crash(&f);
	fx_restart(&f, flags, 1);
	assert_true(it_log_has(&f.d, "relaxed mode"));
	assert_int_equal(it_acct_money(f.c, 1, "balance"), 100 * U - c1);
	assert_int_equal(money_cmd(f.c, "CDR 1 " DEST " 600 cdr-1"), c1);
	fx_end(&f);
}

static void
test_one_engine_per_data_dir(void **state)
{
	struct fx f = {0};
	struct it_daemon second;

	(void)state;
	fx_start(&f, NULL);
	const char *const flags[] = {"--data-dir", f.d.data, NULL};
	assert_int_equal(it_start(&second, f.dir, flags), -1);
	assert_true(it_log_has(&second, "another tollgated is using it"));
	fx_end(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crash_restart),
	    cmocka_unit_test(test_reboot),
	    cmocka_unit_test(test_expired_call_id_survives_restart),
	    cmocka_unit_test(test_postpaid_survives_restart),
	    cmocka_unit_test(test_torn_tail_is_cut),
	    cmocka_unit_test(test_corrupt_middle_stops_start),
	    cmocka_unit_test(test_newer_record_version_stops_start),
	    cmocka_unit_test(test_empty_last_segment_is_fine),
	    cmocka_unit_test(test_missing_segment_stops_start),
	    cmocka_unit_test(test_snapshots_prune_and_fall_back),
	    cmocka_unit_test(test_single_snapshot_corrupt_keeps_every_balance),
	    cmocka_unit_test(test_pruning_keeps_the_older_verified_snapshot),
	    cmocka_unit_test(test_flipped_last_record_stops_start),
	    cmocka_unit_test(test_disk_reserve_refuses_debits),
	    cmocka_unit_test(test_write_error_stops_engine),
	    cmocka_unit_test(test_relaxed_mode_recovers_after_clean_stop),
	    cmocka_unit_test(test_one_engine_per_data_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
