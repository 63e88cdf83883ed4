/*
 * test_disk_full.c - the journal's disk filling up under the real tollgated.
 *
 * The data directory sits on a private 40 MiB tmpfs mounted by the test (it
 * needs root; without the right to mount, the test is skipped with 77), and
 * a filler file takes most of it, so the reserve is reached in seconds.  What
 * is checked, from the outside: CDRs and then credits are refused with
 * NOSPACE while the engine keeps running, the credits stop with half of the
 * reserve still free, calls granted before the disk filled are ended and
 * expire and are billed, every acknowledged change is in the balance after a
 * SIGKILL, a start on a disk with no byte free comes up refusing changes and
 * serving reads, and freeing space brings everything back.
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
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rcmd.h"
#include "tg_money.h"

#define U 1000000LL
/* basic, prefix 1212: $0.005 a minute, 60/60 (tools/demo/rates.csv). */
#define DEST "12125551234"
/* basic, prefix 1415555: $0.012 a minute, 6/6: short grants. */
#define DEST_CALL "14155551212"
#define RESERVE   (4u << 20)
/* Commands sent per pipeline while driving the disk down. */
#define CHUNK 1000

struct fx {
	char dir[IT_PATH_MAX];
	char mnt[IT_PATH_MAX];  /* the tmpfs */
	char data[IT_PATH_MAX]; /* --data-dir, on it */
	char filler[IT_PATH_MAX];
	bool mounted;
	struct it_daemon d;
	redisContext *c;
};

/* cmd is sent as a format: no '%' in it. */
static void
assert_nospace(redisContext *c, const char *cmd)
{
	char err[256];
	it_error_of(c, err, sizeof(err), cmd);
	if (strncmp(err, "NOSPACE", 7) != 0)
		fail_msg("%s: expected NOSPACE, got '%s'", cmd, err);
}

/* Whether INFO journal holds the text. */
static bool
info_has(redisContext *c, const char *text)
{
	redisReply *r = it_cmd(c, "INFO journal");
	bool has = strstr(r->str, text) != NULL;
	if (!has)
		fprintf(stderr, "INFO journal lacks '%s':\n%s\n", text, r->str);
	freeReplyObject(r);
	return has;
}

/* A gauge of INFO journal. */
static long long
info_num(redisContext *c, const char *name)
{
	redisReply *r = it_cmd(c, "INFO");
	const char *p = strstr(r->str, name);
	assert_non_null(p);
	long long v = strtoll(p + strlen(name) + 1, NULL, 10);
	freeReplyObject(r);
	return v;
}

static uint64_t
disk_free(const struct fx *f)
{
	struct statvfs sv;
	assert_int_equal(statvfs(f->mnt, &sv), 0);
	return (uint64_t)sv.f_bavail * sv.f_frsize;
}

/*
 * Grow the filler file until the file system has at most `leave` bytes
 * free (0: until a write fails with ENOSPC).
 */
static void
fill(struct fx *f, uint64_t leave)
{
	static char zero[1 << 16];
	int fd = open(f->filler, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	for (size_t step = sizeof(zero); step >= 512; step /= 8) {
		for (;;) {
			uint64_t avail = disk_free(f);
			if (leave > 0 && avail <= leave)
				break;
			size_t n = step;
			if (leave > 0 && avail - leave < n)
				n = (size_t)(avail - leave);
			ssize_t w = write(fd, zero, n);
			if (w < 0 && errno == ENOSPC)
				break;
			assert_true(w > 0);
		}
	}
	assert_int_equal(fsync(fd), 0);
	close(fd);
}

/*
 * Send fmt(i) for i in [*next, *next + n) in one pipeline; replies that are
 * money are added to *sum, every reply that is no error counts in *acked.
 * Returns how many were refused with NOSPACE; any other error fails the
 * test, and so does a connection the engine closed (it died).
 */
static unsigned
pipeline(redisContext *c, const char *fmt, unsigned n, unsigned *next, unsigned *acked,
         tg_money_t *sum)
{
	unsigned refused = 0;

	for (unsigned i = 0; i < n; i++)
		assert_int_equal(redisAppendCommand(c, fmt, *next + i), REDIS_OK);
	for (unsigned i = 0; i < n; i++) {
		redisReply *r = NULL;
		if (redisGetReply(c, (void **)&r) != REDIS_OK || r == NULL)
			fail_msg("no reply to '%s' #%u: %s (did the engine stop?)", fmt, *next + i,
			         c->errstr);
		if (r->type == REDIS_REPLY_ERROR) {
			if (strncmp(r->str, "NOSPACE", 7) != 0)
				fail_msg("'%s' #%u: %s", fmt, *next + i, r->str);
			refused++;
		} else if (r->type == REDIS_REPLY_INTEGER) {
			(*acked)++;
		} else {
			(*acked)++;
			if (sum != NULL)
				*sum += it_money(r->str);
		}
		freeReplyObject(r);
	}
	*next += n;
	return refused;
}

static unsigned
chunk(redisContext *c, const char *fmt, unsigned *next, unsigned *acked, tg_money_t *sum)
{
	return pipeline(c, fmt, CHUNK, next, acked, sum);
}

/* Mount a 40 MiB tmpfs in a fresh directory; false when this process may not. */
static bool
mount_tmpfs(struct fx *f)
{
	if (it_dir_make(f->dir, sizeof(f->dir)) != 0)
		return false;
	if ((size_t)snprintf(f->mnt, sizeof(f->mnt), "%.400s/mnt", f->dir) >= sizeof(f->mnt) ||
	    (size_t)snprintf(f->data, sizeof(f->data), "%.400s/data", f->mnt) >= sizeof(f->data) ||
	    (size_t)snprintf(f->filler, sizeof(f->filler), "%.400s/filler", f->mnt) >=
	        sizeof(f->filler) ||
	    mkdir(f->mnt, 0700) != 0)
		return false;
	f->mounted = mount("tmpfs", f->mnt, "tmpfs", 0, "size=40m,mode=0700") == 0;
	return f->mounted;
}

static void
fx_start(struct fx *f, const char *const *extra)
{
	const char *flags[24];
	unsigned n = 0;

	assert_true(mount_tmpfs(f));
	flags[n++] = "--data-dir";
	flags[n++] = f->data;
	flags[n++] = "--ids-max";
	flags[n++] = "400000";
	for (unsigned i = 0; extra[i] != NULL; i++)
		flags[n++] = extra[i];
	flags[n] = NULL;
	assert_int_equal(it_start(&f->d, f->dir, flags), 0);
	f->c = it_connect(&f->d);
	assert_non_null(f->c);
}

static void
fx_restart(struct fx *f, const char *const *extra)
{
	const char *flags[24];
	unsigned n = 0;

	flags[n++] = "--data-dir";
	flags[n++] = f->data;
	flags[n++] = "--ids-max";
	flags[n++] = "400000";
	for (unsigned i = 0; extra[i] != NULL; i++)
		flags[n++] = extra[i];
	flags[n] = NULL;
	assert_int_equal(it_restart(&f->d, flags, 1), 0);
	f->c = it_connect(&f->d);
	assert_non_null(f->c);
}

static void
fx_crash(struct fx *f)
{
	redisFree(f->c);
	f->c = NULL;
	assert_int_equal(it_kill(&f->d), 0);
}

static int
fx_setup(void **state)
{
	*state = calloc(1, sizeof(struct fx));
	return *state == NULL ? -1 : 0;
}

/* Also after a failed assertion: the daemon stopped, the tmpfs unmounted. */
static int
fx_teardown(void **state)
{
	struct fx *f = *state;
	if (f->c != NULL)
		redisFree(f->c);
	f->c = NULL;
	int status = f->d.pid > 0 ? it_stop(&f->d) : 0;
	if (status != 0)
		fprintf(stderr, "tollgated did not stop cleanly: %d\n", status);
	if (f->mounted && umount2(f->mnt, MNT_DETACH) != 0)
		fprintf(stderr, "cannot unmount %s: %s\n", f->mnt, strerror(errno));
	if (f->dir[0] != '\0')
		it_dir_remove(f->dir);
	free(f);
	return status == 0 ? 0 : -1;
}

/*
 * The exact steps: 4 MiB reserve on a 40 MiB tmpfs; CDRs get NOSPACE, then
 * credits used the whole reserve in 2 s and the write failed, stopping the
 * engine; restarted with 0 bytes free, one ACCT.CREDIT stopped it again.
 */
static void
test_full_disk_refuses_instead_of_crashing(void **state)
{
	static const char *const flags[] = {"--disk-reserve", "4194304", "--journal-segment-size",
	                                    "1048576", NULL};
	/*
	 * Then segments of 4 KiB: the last one is already past that, and the
	 * full disk has no room for a new one.
	 */
	static const char *const small_segs[] = {"--disk-reserve", "4194304",
	                                         "--journal-segment-size", "4096", NULL};
	struct fx *f = *state;
	tg_money_t charged = 0;
	unsigned next = 0, acked = 0, credits = 0;

	fx_start(f, flags);
	it_run_cmd(f->c, "ACCT.SET 1 BALANCE 1000 PLAN basic");
	/* Leave 8 MiB: about 50,000 CDRs down to the reserve. */
	fill(f, 8u << 20);
	it_sleep_ms(300); /* the engine measures the disk every 100 ms: it sees the filler */

	while (chunk(f->c, "CDR 1 " DEST " 60 cdr-%u", &next, &acked, &charged) == 0)
		assert_true(next < 400000);
	assert_true(acked > 0);
	assert_true(info_has(f->c, "journal_disk_state:reserve"));
	it_sleep_ms(300); /* the writer's thread logs within 100 ms */
	assert_true(it_log_has(&f->d, "below disk-reserve"));
	assert_nospace(f->c, "CALL.AUTH 1 " DEST " call-late");
	assert_nospace(f->c, "ACCT.SET 2 BALANCE 5 PLAN basic");

	/* Credits go on, with half of the reserve, then are refused too. */
	next = 0;
	while (chunk(f->c, "ACCT.CREDIT 1 0.01 tx-%u", &next, &credits, NULL) == 0)
		assert_true(next < 400000);
	assert_true(credits > 0);
	assert_nospace(f->c, "ACCT.CREDIT 1 0.01 tx-late");
	assert_nospace(f->c, "ACCT.REFILL.FAILED 1 refill:1:1");
	assert_true(info_has(f->c, "journal_disk_state:settling"));
	it_sleep_ms(300);
	assert_true(it_log_has(&f->d, "credits' share"));
	/* The reserve held: credits stopped with half of it still free. */
	uint64_t left = disk_free(f);
	fprintf(stderr, "disk: %u CDRs and %u credits recorded, %llu bytes left of a %u reserve\n",
	        acked, credits, (unsigned long long)left, RESERVE);
	assert_true(left >= RESERVE / 2);
	assert_true(left <= RESERVE);
	/* Still running, and the replayed credit answers as the first did. */
	redisReply *r = it_cmd(f->c, "PING");
	freeReplyObject(r);
	tg_money_t want = 1000 * U - charged + (tg_money_t)credits * (U / 100);
	r = it_cmd(f->c, "ACCT.CREDIT 1 0.01 tx-0");
	assert_true(it_money(r->str) > 0);
	freeReplyObject(r);
	assert_int_equal(it_acct_money(f->c, 1, "balance"), want);
	assert_false(it_log_has(&f->d, "Stopping now"));

	/* A crash, then a start on a disk with not one byte free. */
	fx_crash(f);
	fill(f, 0);
	assert_true(disk_free(f) < 4096);
	fx_restart(f, small_segs);
	assert_true(it_log_has(&f->d, "no room left to record anything"));
	assert_true(it_log_has(&f->d, "past journal-segment-size"));
	assert_true(info_has(f->c, "journal_disk_state:full"));
	assert_true(info_has(f->c, "journal_low_space:1"));
	assert_int_equal(it_acct_money(f->c, 1, "balance"), want);
	assert_nospace(f->c, "ACCT.CREDIT 1 1 tx-full");
	assert_nospace(f->c, "CDR 1 " DEST " 60 cdr-full");
	assert_nospace(f->c, "CALL.AUTH 1 " DEST " call-full");
	r = it_cmd(f->c, "RATE basic " DEST " 60");
	freeReplyObject(r);
	it_sleep_ms(300); /* past a few checks of the disk: still alive, still refusing */
	assert_nospace(f->c, "ACCT.CREDIT 1 1 tx-full");
	assert_int_equal(it_acct_money(f->c, 1, "balance"), want);

	/* Space comes back: everything is accepted again. */
	assert_int_equal(unlink(f->filler), 0);
	it_sleep_ms(400);
	assert_true(info_has(f->c, "journal_disk_state:ok"));
	assert_true(it_log_has(&f->d, "free again: accepting every command"));
	r = it_cmd(f->c, "ACCT.CREDIT 1 1 tx-after");
	assert_int_equal(it_money(r->str), want + U);
	freeReplyObject(r);
	tg_money_t cdr = 0;
	r = it_cmd(f->c, "CDR 1 " DEST " 60 cdr-after");
	cdr = it_money(r->str);
	freeReplyObject(r);
	assert_true(cdr > 0);
	want += U - cdr;
	assert_int_equal(it_acct_money(f->c, 1, "balance"), want);
	fx_crash(f);
	fx_restart(f, small_segs);
	assert_int_equal(it_acct_money(f->c, 1, "balance"), want);
}

/*
 * Calls granted before the disk filled are ended and billed, and those
 * never ended expire and are billed, however the credits ran the disk down:
 * the reserve keeps room for every call in progress.  With a small reserve
 * (64 KiB) and 2000 calls, what they need (2000 x 504 bytes) is more than
 * half the reserve, so it is their number that sizes the floor.
 */
static void
test_calls_granted_before_disk_filled_are_billed(void **state)
{
	static const char *const flags[] = {"--disk-reserve", "65536", "--max-grant", "12",
	                                    "--call-grace",   "1",     NULL};
	enum { CALLS = 2000, ENDED = 1500 };
	struct fx *f = *state;
	unsigned next = 0, granted = 0, credits = 0, ended = 0;
	tg_money_t billed = 0;

	fx_start(f, flags);
	it_run_cmd(f->c, "ACCT.SET 1 BALANCE 100000 PLAN basic");
	uint64_t t0 = tg_mono_ms();
	pipeline(f->c, "CALL.AUTH 1 " DEST_CALL " call-%u", CALLS, &next, &granted, NULL);
	assert_int_equal(granted, CALLS);
	assert_int_equal(info_num(f->c, "journal_settle_reserve"), CALLS * 504);
	fill(f, 2u << 20);
	it_sleep_ms(300);

	next = 0;
	while (chunk(f->c, "ACCT.CREDIT 1 0.01 tx-%u", &next, &credits, NULL) == 0)
		assert_true(next < 400000);
	assert_true(credits > 0);
	assert_true(info_has(f->c, "journal_disk_state:settling"));
	assert_nospace(f->c, "CALL.AUTH 1 " DEST_CALL " call-late");
	assert_nospace(f->c, "ACCT.CREDIT 1 0.01 tx-late");
	uint64_t left = disk_free(f);
	fprintf(stderr, "disk: %u credits recorded, %llu bytes left for %u calls\n", credits,
	        (unsigned long long)left, CALLS);
	assert_true(left >= CALLS * 504);

	/* Every call granted before is ended and billed, none refused. */
	next = 0;
	assert_int_equal(pipeline(f->c, "CALL.END 1 call-%u 5", ENDED, &next, &ended, &billed), 0);
	assert_int_equal(ended, ENDED);
	/* The rest expire at their grant (12 s + 1 s of grace) and are billed for it. */
	assert_true(tg_mono_ms() - t0 < 12000);
	uint64_t deadline = tg_mono_ms() + 30000;
	while (info_num(f->c, "calls_in_progress") > 0 && tg_mono_ms() < deadline)
		it_sleep_ms(200);
	assert_int_equal(info_num(f->c, "calls_in_progress"), 0);
	redisReply *r = it_cmd(f->c, "RATE basic " DEST_CALL " 5");
	tg_money_t end_each = it_money(r->element[1]->str);
	freeReplyObject(r);
	r = it_cmd(f->c, "RATE basic " DEST_CALL " 12");
	tg_money_t exp_each = it_money(r->element[1]->str);
	freeReplyObject(r);
	assert_true(end_each > 0 && exp_each > end_each);
	assert_int_equal(billed, ENDED * end_each);
	tg_money_t want = 100000 * U + (tg_money_t)credits * (U / 100) - ENDED * end_each -
	                  (CALLS - ENDED) * exp_each;
	assert_int_equal(it_acct_money(f->c, 1, "balance"), want);
	assert_int_equal(it_acct_money(f->c, 1, "reserved"), 0);
	assert_false(it_log_has(&f->d, "Stopping now"));

	/* All of it on disk. */
	fx_crash(f);
	fx_restart(f, flags);
	assert_int_equal(it_acct_money(f->c, 1, "balance"), want);
	assert_int_equal(it_acct_money(f->c, 1, "reserved"), 0);
}

/* The snapshot files in dir, names joined by spaces, into out. */
static void
snapshots(const char *dir, char *out, size_t cap)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	assert_non_null(d);
	out[0] = '\0';
	while ((e = readdir(d)) != NULL)
		if (strncmp(e->d_name, "snapshot-", 9) == 0 && n + strlen(e->d_name) + 2 < cap)
			n += (size_t)snprintf(out + n, cap - n, "%s ", e->d_name);
	closedir(d);
}

/*
 * A snapshot takes its blocks from above the reserve only: on a disk below
 * it the snapshot thread skips its turn, says so, keeps the older snapshot,
 * and the engine goes on (and stops cleanly).  Space back, snapshots resume.
 */
/*
 * Below the reserve the id window's oldest runs go first: the horizon gets
 * shorter, the log says so, a counter moves, and billing goes on.
 */
static void
test_id_runs_go_first_below_the_reserve(void **state)
{
	static const char *const flags[] = {"--disk-reserve", "8388608", "--ids-max", "4096", NULL};
	struct fx *f = *state;
	unsigned next = 0, acked = 0;
	tg_money_t charged = 0;

	fx_start(f, flags);
	it_run_cmd(f->c, "ACCT.SET 1 BALANCE 100000 PLAN basic");
	for (int k = 0; k < 40; k++)
		assert_int_equal(chunk(f->c, "CDR 1 " DEST " 60 cdr-%u", &next, &acked, &charged),
		                 0);
	uint64_t deadline = tg_mono_ms() + 8000;
	while (info_num(f->c, "ids_disk_runs") == 0 && tg_mono_ms() < deadline)
		it_sleep_ms(100);
	assert_true(info_num(f->c, "ids_disk_runs") > 0);
	/* Below the reserve: the next move drops the oldest run (every 5 s at the latest). */
	fill(f, 4 << 20);
	deadline = tg_mono_ms() + 12000;
	while (!it_log_has(&f->d, "below disk-reserve: forgetting the oldest run") &&
	       tg_mono_ms() < deadline)
		it_sleep_ms(200);
	assert_true(it_log_has(&f->d, "below disk-reserve: forgetting the oldest run"));
	assert_true(info_num(f->c, "ids_horizon_cut") > 0);
	/*
	 * Billing goes on: credits are still recorded, and the balance is exact.
	 * The writer measures the disk every 100 ms: until it has seen the room
	 * the dropped run gave back, a credit may still get NOSPACE, which
	 * changes nothing and is retried with the same txid.
	 */
	char err[160] = "NOSPACE";
	for (int i = 0; i < 30 && strncmp(err, "NOSPACE", 7) == 0; i++) {
		if (i > 0)
			it_sleep_ms(100);
		it_error_of(f->c, err, sizeof(err), "ACCT.CREDIT 1 1 tx-after");
	}
	assert_string_equal(err, "");
	assert_int_equal(it_acct_money(f->c, 1, "balance"), 100000 * U - charged + U);
}

static void
test_snapshot_on_full_disk_keeps_the_old_one(void **state)
{
	static const char *const flags[] = {"--disk-reserve", "4194304", "--snapshot-interval", "1",
	                                    NULL};
	struct fx *f = *state;
	unsigned next = 0, acked = 0, credits = 0;
	tg_money_t charged = 0;
	char before[1024], after[1024];

	fx_start(f, flags);
	it_run_cmd(f->c, "ACCT.SET 1 BALANCE 100 PLAN basic");
	assert_int_equal(chunk(f->c, "CDR 1 " DEST " 60 cdr-%u", &next, &acked, &charged), 0);
	uint64_t deadline = tg_mono_ms() + 10000;
	do {
		it_sleep_ms(100);
		snapshots(f->data, before, sizeof(before));
	} while (before[0] == '\0' && tg_mono_ms() < deadline);
	assert_true(before[0] != '\0');

	/* Below the reserve, above the credits' floor: the journal still grows. */
	fill(f, 3u << 20);
	it_sleep_ms(300);
	assert_true(info_has(f->c, "journal_disk_state:reserve"));
	next = 0;
	assert_int_equal(pipeline(f->c, "ACCT.CREDIT 1 0.01 tx-%u", 100, &next, &credits, NULL), 0);
	deadline = tg_mono_ms() + 10000;
	while (!it_log_has(&f->d, "skipped: it needs") && tg_mono_ms() < deadline)
		it_sleep_ms(100);
	assert_true(it_log_has(&f->d, "skipped: it needs"));
	snapshots(f->data, after, sizeof(after));
	assert_string_equal(after, before);
	tg_money_t want = 100 * U - charged + (tg_money_t)credits * (U / 100);
	assert_int_equal(it_acct_money(f->c, 1, "balance"), want);

	/* A clean stop (its own snapshot skipped too), a start from the older snapshot. */
	redisFree(f->c);
	f->c = NULL;
	assert_int_equal(it_stop(&f->d), 0);
	fx_restart(f, flags);
	assert_int_equal(it_acct_money(f->c, 1, "balance"), want);

	/* Space back: the next turn writes a snapshot. */
	assert_int_equal(unlink(f->filler), 0);
	it_sleep_ms(300);
	it_run_cmd(f->c, "ACCT.CREDIT 1 1 tx-after");
	deadline = tg_mono_ms() + 10000;
	do {
		it_sleep_ms(100);
		snapshots(f->data, after, sizeof(after));
	} while (strcmp(after, before) == 0 && tg_mono_ms() < deadline);
	assert_string_not_equal(after, before);
	assert_int_equal(it_acct_money(f->c, 1, "balance"), want + U);
}

int
main(void)
{
	/* Mounting needs CAP_SYS_ADMIN: without it there is nothing to test here. */
	struct fx probe = {0};
	bool can = mount_tmpfs(&probe);
	int err = errno;
	if (probe.mounted)
		umount2(probe.mnt, MNT_DETACH);
	it_dir_remove(probe.dir);
	if (!can) {
		fprintf(stderr, "skipped: cannot mount a tmpfs (%s)\n", strerror(err));
		return 77;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_full_disk_refuses_instead_of_crashing, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_calls_granted_before_disk_filled_are_billed,
	                                    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_id_runs_go_first_below_the_reserve, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_on_full_disk_keeps_the_old_one, fx_setup,
	                                    fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
