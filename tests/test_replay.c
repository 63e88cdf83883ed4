/*
 * test_replay.c - the journal's state rebuilt from records and snapshots
 * (engine/replay.c): what each record type does, that order between
 * accounts does not matter, that calls come and go without losing one,
 * that a snapshot reads back exactly, that a damaged one is skipped for the
 * older one, and that pruning keeps what the older snapshot needs.
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
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tg_jwriter.h"
#include "tg_replay.h"
#include "tg_result.h"

static uint64_t lsn;

/* Records as version 2 (with an itemized tail) instead of version 1. */
static bool itemize;

static void
apply(struct tg_replay *r, unsigned type, const void *p, int64_t time_ns)
{
	uint8_t v2[TG_JOURNAL_PAYLOAD_MAX], fixed[64];
	const char *const str[TG_JITEM_STRINGS] = {"call-1", "14155551212", "gold", "1415"};
	const size_t n[TG_JITEM_STRINGS] = {6, 11, 4, 4};
	size_t f;
	struct tg_jrec rec = {.lsn = ++lsn,
	                      .time = time_ns,
	                      .type = type,
	                      .version = 1,
	                      .len = (uint32_t)tg_journal_payload_size(type),
	                      .payload = p};
	/* Itemized: the same change as record version 2, its tail full of other data. */
	if (itemize && tg_journal_itemized(type, &f)) {
		memset(fixed, 0x5a, sizeof(fixed));
		rec.len = (uint32_t)tg_journal_item_build(v2, sizeof(v2), type, p, fixed, str, n);
		rec.version = 2;
		rec.payload = v2;
		assert_true(tg_journal_payload_ok(type, 2, v2, rec.len));
	}
	assert_int_equal(tg_replay_apply(r, &rec), 0);
	r->lsn = rec.lsn;
}

static void
settings(struct tg_replay *r, uint64_t acct, const char *plan)
{
	struct tg_jrec_settings s = {.acct = acct, .threshold = 10, .refill_amount = 50};
	snprintf(s.plan, sizeof(s.plan), "%s", plan);
	apply(r, TG_JREC_SETTINGS, &s, 0);
}

/* Copies the remembered id {9, 9} into arg. */
static void
find_rid_9(void *arg, const struct tg_rid *d)
{
	if (d->id.lo == 9 && d->id.hi == 9)
		*(struct tg_rid *)arg = *d;
}

static void
test_each_record_type(void **state)
{
	struct tg_replay r;
	(void)state;
	lsn = 0;
	assert_int_equal(tg_replay_init(&r), 0);
	settings(&r, 7, "gold");
	struct tg_jrec_set_balance sb = {.acct = 7, .balance = 1000, .delta = 1000};
	apply(&r, TG_JREC_SET_BALANCE, &sb, 0);
	struct tg_jrec_reserve rv = {.acct = 7,
	                             .call = {1, 2},
	                             .amount = 300,
	                             .seconds = 60,
	                             .category = 2,
	                             .per_min = 300,
	                             .initial = 60,
	                             .increment = 60};
	apply(&r, TG_JREC_RESERVE, &rv, 5000000000ll);
	rv.amount = 100; /* CALL.UPDATE: 100 more, 80 s in all */
	rv.seconds = 80;
	apply(&r, TG_JREC_RESERVE, &rv, 9000000000ll);
	const struct tg_racct *a = tg_replay_acct(&r, 7);
	assert_non_null(a);
	assert_int_equal(a->balance, 1000);
	assert_int_equal(a->reserved, 400);
	assert_int_equal(a->calls, 1);
	assert_int_equal(r.calls.n, 1);
	assert_string_equal(tg_replay_plan_name(&r, a->plan), "gold");

	struct tg_jrec_commit cm = {.acct = 7,
	                            .call = {1, 2},
	                            .end = {3, 4},
	                            .fingerprint = 99,
	                            .reserved = 400,
	                            .cost = 350,
	                            .duration = 70,
	                            .category = 2};
	apply(&r, TG_JREC_COMMIT, &cm, 10000000000ll);
	assert_int_equal(a->balance, 650);
	assert_int_equal(a->reserved, 0);
	assert_int_equal(a->calls, 0);
	assert_int_equal(a->usage[2], 350);
	assert_int_equal(r.calls.n, 0);
	assert_int_equal(r.ids.n, 1);

	struct tg_jrec_debit db = {
	    .acct = 7, .id = {5, 6}, .fingerprint = 1, .cost = 50, .category = 1};
	apply(&r, TG_JREC_DEBIT, &db, 11000000000ll);
	struct tg_jrec_refill_fired rf = {
	    .acct = 7, .refill_seq = 1, .mode = 1, .balance = 600, .threshold = 10, .charge = 50};
	apply(&r, TG_JREC_REFILL_FIRED, &rf, 0);
	assert_int_equal(a->refill_seq, 1);
	assert_int_equal(a->refill_done, 0);
	struct tg_jrec_credit cr = {.acct = 7,
	                            .txid = {7, 8},
	                            .fingerprint = 2,
	                            .amount = 50,
	                            .balance = 650,
	                            .refill_seq = 1};
	apply(&r, TG_JREC_CREDIT, &cr, 0);
	struct tg_jrec_refill_cleared rc = {.acct = 7, .refill_seq = 1, .reason = 1};
	apply(&r, TG_JREC_REFILL_CLEARED, &rc, 0);
	assert_int_equal(a->refill_done, 1);
	assert_int_equal(a->balance, 650);
	sb = (struct tg_jrec_set_balance){.acct = 7, .balance = 20, .delta = -630};
	apply(&r, TG_JREC_SET_BALANCE, &sb, 0);
	assert_int_equal(a->balance, 20);

	/* A call that expired: settled at its grant. */
	rv = (struct tg_jrec_reserve){.acct = 7, .call = {9, 9}, .amount = 15, .seconds = 3};
	apply(&r, TG_JREC_RESERVE, &rv, 0);
	struct tg_jrec_expire ex = {
	    .acct = 7, .call = {9, 9}, .reserved = 15, .cost = 15, .seconds = 3, .category = 0};
	apply(&r, TG_JREC_EXPIRE, &ex, 12000000000ll);
	assert_int_equal(a->balance, 5);
	assert_int_equal(a->reserved, 0);
	/* ...and its call id stays spent, as the live window marks it. */
	assert_int_equal(r.ids.n, 4);
	struct tg_rid mark = {0};
	tg_replay_each_id(&r, find_rid_9, &mark);
	assert_int_equal(mark.result, TG_EXPIRED);
	assert_int_equal(mark.fingerprint, 7);
	assert_int_equal(mark.reply, 15);
	assert_int_equal(mark.seen, 12);
	/* An end for a call the state never saw is counted, and the money still moves. */
	ex.call = (struct tg_jdigest){42, 42};
	apply(&r, TG_JREC_EXPIRE, &ex, 0);
	assert_int_equal(r.anomalies, 1);
	assert_int_equal(a->balance, -10);
	assert_int_equal(r.ids.n, 5);
	tg_replay_free(&r);
}

/*
 * A record whose category no build writes was folded into range with '%'
 * and charged to another category; it is refused, and nothing of it is
 * applied.
 */
static void
test_category_out_of_range_refused(void **state)
{
	struct tg_replay r;
	(void)state;
	lsn = 0;
	assert_int_equal(tg_replay_init(&r), 0);
	settings(&r, 7, "gold");
	struct tg_jrec_debit d = {
	    .acct = 7, .id = {5, 5}, .cost = 250, .duration = 30, .category = TG_CATEGORIES_MAX};
	struct tg_jrec rec = {.lsn = ++lsn,
	                      .type = TG_JREC_DEBIT,
	                      .version = 1,
	                      .len = (uint32_t)tg_journal_payload_size(TG_JREC_DEBIT),
	                      .payload = &d};
	assert_int_equal(tg_replay_apply(&r, &rec), -EPROTO);
	struct tg_jrec_reserve rv = {
	    .acct = 7, .call = {1, 2}, .amount = 300, .seconds = 60, .category = TG_CATEGORIES_MAX};
	rec = (struct tg_jrec){.lsn = ++lsn,
	                       .type = TG_JREC_RESERVE,
	                       .version = 1,
	                       .len = (uint32_t)tg_journal_payload_size(TG_JREC_RESERVE),
	                       .payload = &rv};
	assert_int_equal(tg_replay_apply(&r, &rec), -EPROTO);
	const struct tg_racct *a = tg_replay_acct(&r, 7);
	assert_non_null(a);
	assert_int_equal(a->balance, 0);
	assert_int_equal(a->reserved, 0);
	for (int c = 0; c < TG_CATEGORIES_MAX; c++)
		assert_int_equal(a->usage[c], 0);
	/* In range, the same debit applies. */
	d.category = TG_CATEGORIES_MAX - 1;
	apply(&r, TG_JREC_DEBIT, &d, 0);
	a = tg_replay_acct(&r, 7);
	assert_int_equal(a->usage[TG_CATEGORIES_MAX - 1], 250);
	tg_replay_free(&r);
}

/* Replay reads version 2 records as it reads version 1: the tail changes nothing. */
static void
test_each_record_type_itemized(void **state)
{
	itemize = true;
	test_each_record_type(state);
	itemize = false;
}

/*
 * Regression: replay added usage without a limit, so a statement total
 * rebuilt from the journal wrapped negative past 9223372036854.775807 (and
 * then disagreed with nothing, since the live table wrapped the same way).
 * It stops at the top, as the table does.
 */
static void
test_usage_saturates_in_replay(void **state)
{
	struct tg_replay r;
	(void)state;
	lsn = 0;
	assert_int_equal(tg_replay_init(&r), 0);
	settings(&r, 3, "big");
	/* As the engine journals it: the balance set to the top, all of it charged, twice. */
	struct tg_jrec_set_balance sb = {.acct = 3, .balance = INT64_MAX, .delta = INT64_MAX};
	struct tg_jrec_debit d = {.acct = 3, .id = {9, 1}, .cost = INT64_MAX, .category = 6};
	apply(&r, TG_JREC_SET_BALANCE, &sb, 0);
	apply(&r, TG_JREC_DEBIT, &d, 0);
	d.id.lo = 2;
	apply(&r, TG_JREC_SET_BALANCE, &sb, 0);
	apply(&r, TG_JREC_DEBIT, &d, 0);
	struct tg_jrec_commit cm = {
	    .acct = 3, .call = {4, 4}, .end = {5, 5}, .cost = 5, .category = 6};
	apply(&r, TG_JREC_COMMIT, &cm, 0);
	struct tg_jrec_expire ex = {.acct = 3, .call = {6, 6}, .cost = 5, .category = 6};
	apply(&r, TG_JREC_EXPIRE, &ex, 0);
	const struct tg_racct *a = tg_replay_acct(&r, 3);
	assert_int_equal(a->usage[6], INT64_MAX);
	assert_int_equal(a->balance, -10);
	for (int c = 0; c < TG_CATEGORIES_MAX; c++)
		if (c != 6)
			assert_int_equal(a->usage[c], 0);
	tg_replay_free(&r);
}

/* Records of many accounts, applied in two different orders: the same state. */
static void
test_order_between_workers_does_not_matter(void **state)
{
	struct tg_replay a, b;
	struct tg_jrec_debit d[2000];
	(void)state;
	assert_int_equal(tg_replay_init(&a), 0);
	assert_int_equal(tg_replay_init(&b), 0);
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < 2000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		d[i] = (struct tg_jrec_debit){
		    .acct = x % 50, .id = {x, (uint64_t)i + 1}, .cost = (int64_t)(x % 1000)};
	}
	lsn = 0;
	for (int i = 0; i < 2000; i++)
		apply(&a, TG_JREC_DEBIT, &d[i], 0);
	lsn = 0;
	for (int i = 1999; i >= 0; i--)
		apply(&b, TG_JREC_DEBIT, &d[i], 0);
	for (uint64_t acct = 0; acct < 50; acct++) {
		const struct tg_racct *p = tg_replay_acct(&a, acct), *q = tg_replay_acct(&b, acct);
		assert_non_null(p);
		assert_non_null(q);
		assert_int_equal(p->balance, q->balance);
	}
	tg_replay_free(&a);
	tg_replay_free(&b);
}

/* Thousands of calls made and ended in random order: none lost, none left over. */
static void
test_calls_come_and_go(void **state)
{
	enum { N = 20000 };
	static bool live[N];
	struct tg_replay r;
	(void)state;
	lsn = 0;
	memset(live, 0, sizeof(live));
	assert_int_equal(tg_replay_init(&r), 0);
	uint64_t x = 0x2545f4914f6cdd1dull;
	size_t n = 0;
	for (int step = 0; step < 200000; step++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		unsigned k = (unsigned)(x % N);
		/* Small digests on purpose: long probe runs, many backward shifts. */
		struct tg_jdigest call = {k % 97 + 1, k};
		if (!live[k]) {
			struct tg_jrec_reserve rv = {
			    .acct = k % 10, .call = call, .amount = 1, .seconds = 1};
			apply(&r, TG_JREC_RESERVE, &rv, 0);
			live[k] = true;
			n++;
		} else {
			struct tg_jrec_expire ex = {.acct = k % 10, .call = call, .reserved = 1};
			apply(&r, TG_JREC_EXPIRE, &ex, 0);
			live[k] = false;
			n--;
		}
		assert_int_equal(r.calls.n, n);
	}
	assert_int_equal(r.anomalies, 0);
	int64_t held = 0;
	for (uint64_t a = 0; a < 10; a++)
		held += tg_replay_acct(&r, a)->reserved;
	assert_int_equal(held, (int64_t)n);
	tg_replay_free(&r);
}

static char dir[64];

static int
mkdir_tmp(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_replay.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int
rm_tmp(void **state)
{
	char path[600];
	DIR *d = opendir(dir);
	struct dirent *e;
	(void)state;
	while (d && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
	return rmdir(dir);
}

struct same {
	const struct tg_replay *other;
	size_t n;
};

static void
same_acct(void *arg, const struct tg_racct *a)
{
	struct same *s = arg;
	const struct tg_racct *b = tg_replay_acct(s->other, a->id);
	assert_non_null(b);
	assert_int_equal(a->balance, b->balance);
	assert_int_equal(a->reserved, b->reserved);
	assert_int_equal(a->calls, b->calls);
	assert_int_equal(a->refill_seq, b->refill_seq);
	assert_memory_equal(a->usage, b->usage, sizeof(a->usage));
	assert_string_equal(tg_replay_plan_name(s->other, b->plan), "silver");
	s->n++;
}

static void
build(struct tg_replay *r, int n)
{
	lsn = 0;
	assert_int_equal(tg_replay_init(r), 0);
	for (int i = 0; i < n; i++) {
		settings(r, (uint64_t)i, "silver");
		struct tg_jrec_debit db = {
		    .acct = (uint64_t)i, .id = {(uint64_t)i + 1, 77}, .cost = i, .category = 3};
		apply(r, TG_JREC_DEBIT, &db, (int64_t)2000000000 * 1000000000ll);
		if (i % 3 == 0) {
			struct tg_jrec_reserve rv = {.acct = (uint64_t)i,
			                             .call = {(uint64_t)i + 1, 5},
			                             .amount = 10,
			                             .seconds = 60};
			apply(r, TG_JREC_RESERVE, &rv, 0);
		}
	}
}

static void
test_snapshot_round_trip_and_fallback(void **state)
{
	struct tg_replay r, back;
	char err[600], note[600];
	(void)state;

	build(&r, 5000);
	uint64_t first = r.lsn;
	assert_int_equal(tg_snapshot_write(&r, dir, 2000000000u, 86400, err, sizeof(err)), 0);
	struct tg_jrec_debit db = {.acct = 1, .id = {999999, 1}, .cost = 5};
	apply(&r, TG_JREC_DEBIT, &db, (int64_t)2000000000 * 1000000000ll);
	assert_int_equal(tg_snapshot_write(&r, dir, 2000000000u, 86400, err, sizeof(err)), 0);

	assert_int_equal(tg_replay_init(&back), 0);
	assert_int_equal(tg_snapshot_load(&back, dir, note, sizeof(note)), 0);
	assert_string_equal(note, "");
	assert_int_equal(back.lsn, r.lsn);
	assert_int_equal(back.accts.n, 5000);
	assert_int_equal(back.calls.n, r.calls.n);
	assert_int_equal(back.ids.n, r.ids.n);
	struct same s = {.other = &r};
	tg_replay_each_acct(&back, same_acct, &s);
	assert_int_equal(s.n, 5000);
	tg_replay_free(&back);

	/* Flip one byte of the newest: the older one loads, and says why. */
	char path[256];
	snprintf(path, sizeof(path), "%s/snapshot-%016llx.tgs", dir, (unsigned long long)r.lsn);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	char c;
	assert_int_equal(pread(fd, &c, 1, 5000), 1);
	c ^= 0x10;
	assert_int_equal(pwrite(fd, &c, 1, 5000), 1);
	close(fd);
	assert_int_equal(tg_replay_init(&back), 0);
	assert_int_equal(tg_snapshot_load(&back, dir, note, sizeof(note)), 0);
	assert_non_null(strstr(note, "skipped"));
	assert_int_equal(back.lsn, first);
	tg_replay_free(&back);

	/* Ids outside the window are left out of a snapshot. */
	assert_int_equal(tg_snapshot_write(&r, dir, 2000000000u + 90000, 86400, err, sizeof(err)),
	                 0);
	assert_int_equal(tg_replay_init(&back), 0);
	assert_int_equal(tg_snapshot_load(&back, dir, note, sizeof(note)), 0);
	assert_int_equal(back.ids.n, 0);
	tg_replay_free(&back);
	tg_replay_free(&r);
}

/* Journal + snapshots through the real writer: replay continues the snapshot; pruning is safe. */
static void
test_journal_after_snapshot_and_pruning(void **state)
{
	struct tg_replay r, back;
	struct tg_replay_end end;
	struct tg_jw *jw;
	struct tg_jstage st;
	char err[600], note[600];
	(void)state;

	struct tg_jw_cfg cfg = {.dir = dir, .mode = TG_DURABLE, .segment_size = 4096};
	assert_int_equal(tg_jw_open(&jw, &cfg, 1, err, sizeof(err)), 0);
	assert_int_equal(tg_jstage_init(&st, 64), 0);
	assert_int_equal(tg_replay_init(&r), 0);
	int64_t want = 0;
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < 300; i++) {
			struct tg_jrec_debit db = {.acct = (uint64_t)(i % 7),
			                           .id = {(uint64_t)(round * 1000 + i + 1), 3},
			                           .cost = 10};
			tg_jw_stage(jw, &st, TG_JREC_DEBIT, &db, sizeof(db));
			want -= 10;
		}
		tg_jw_commit(jw, &st);
		/* A snapshot after each round but the last, as the snapshot thread would. */
		if (round < 3) {
			assert_int_equal(tg_replay_journal(&r, dir, tg_jw_durable(jw), false, &end),
			                 0);
			assert_int_equal(
			    tg_snapshot_write(&r, dir, 0, UINT32_MAX, err, sizeof(err)), 0);
		}
	}
	tg_jstage_fini(&st);
	tg_jw_close(jw);

	assert_int_equal(tg_replay_init(&back), 0);
	assert_int_equal(tg_snapshot_load(&back, dir, note, sizeof(note)), 0);
	assert_int_equal(back.lsn, 900);
	assert_int_equal(tg_replay_journal(&back, dir, 0, false, &end), 0);
	assert_int_equal(end.status, TG_JOURNAL_END);
	assert_int_equal(back.lsn, 1200);
	assert_int_equal(back.records, 300);
	int64_t sum = 0;
	for (uint64_t a = 0; a < 7; a++)
		sum += tg_replay_acct(&back, a)->balance;
	assert_int_equal(sum, want);
	tg_replay_free(&back);

	/* Only segments wholly before the older snapshot (LSN 600) are gone. */
	struct tg_journal_reader *jr;
	assert_int_equal(tg_journal_open_dir(&jr, dir), 0);
	assert_true(tg_journal_segment_lsn(jr, 0) > 1);
	assert_true(tg_journal_segment_lsn(jr, 0) <= 601);
	tg_journal_close(jr);
	/* From the older snapshot, the journal still reaches: the fallback works. */
	char path[256];
	snprintf(path, sizeof(path), "%s/snapshot-%016llx.tgs", dir, 900ull);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(tg_replay_init(&back), 0);
	assert_int_equal(tg_snapshot_load(&back, dir, note, sizeof(note)), 0);
	assert_int_equal(back.lsn, 600);
	assert_int_equal(tg_replay_journal(&back, dir, 0, false, &end), 0);
	assert_int_equal(back.lsn, 1200);
	tg_replay_free(&back);
	tg_replay_free(&r);
}

/*
 * The snapshot thread catches its state up every few seconds.  It used to
 * read the journal from its oldest segment each time, skipping what it had
 * applied: a catch-up cost as much as the whole journal kept, and the
 * engine slowed as the journal grew.  The segments wholly before the state
 * must not be read at all: damage to the first one, after the state went
 * past it, must not stop a catch-up.
 */
static void
test_catch_up_skips_segments_already_applied(void **state)
{
	struct tg_replay r;
	struct tg_replay_end end;
	struct tg_jw *jw;
	struct tg_jstage st;
	char err[600], path[256];
	(void)state;

	struct tg_jw_cfg cfg = {.dir = dir, .mode = TG_DURABLE, .segment_size = 4096};
	assert_int_equal(tg_jw_open(&jw, &cfg, 1, err, sizeof(err)), 0);
	assert_int_equal(tg_jstage_init(&st, 64), 0);
	assert_int_equal(tg_replay_init(&r), 0);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 300; i++) {
			struct tg_jrec_debit db = {.acct = (uint64_t)(i % 7),
			                           .id = {(uint64_t)(round * 1000 + i + 1), 3},
			                           .cost = 10};
			tg_jw_stage(jw, &st, TG_JREC_DEBIT, &db, sizeof(db));
		}
		tg_jw_commit(jw, &st);
		if (round == 0) {
			assert_int_equal(tg_replay_journal(&r, dir, tg_jw_durable(jw), false, &end),
			                 0);
			assert_int_equal(r.lsn, 300);
		}
	}
	tg_jstage_fini(&st);
	tg_jw_close(jw);

	/* Damage a record of the first segment, which the state has gone past. */
	struct tg_journal_reader *jr;
	assert_int_equal(tg_journal_open_dir(&jr, dir), 0);
	assert_true(tg_journal_segments(jr) > 2);
	assert_int_equal(tg_journal_segment_lsn(jr, 0), 1);
	assert_true(tg_journal_segment_lsn(jr, 1) <= 300);
	tg_journal_close(jr);
	snprintf(path, sizeof(path), "%s/journal-%016llx.tgj", dir, 1ull);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, TG_JOURNAL_HDR_SIZE + 40), 1);
	b ^= 0xff;
	assert_int_equal(pwrite(fd, &b, 1, TG_JOURNAL_HDR_SIZE + 40), 1);
	close(fd);

	assert_int_equal(tg_replay_journal(&r, dir, 0, false, &end), 0);
	assert_int_equal(end.status, TG_JOURNAL_END);
	assert_int_equal(r.lsn, 600);
	assert_int_equal(r.records, 600);
	tg_replay_free(&r);

	/* From the start, the damage is found: it was only skipped, not missed. */
	assert_int_equal(tg_replay_init(&r), 0);
	assert_int_equal(tg_replay_journal(&r, dir, 0, false, &end), -EPROTO);
	assert_int_equal(end.status, TG_JOURNAL_CORRUPT);
	tg_replay_free(&r);
}

/* Drops every id whose lo is odd. */
static bool
odd_lo(void *arg, const struct tg_rid *d)
{
	(void)arg;
	return d->id.lo & 1;
}

static void
count_even(void *arg, const struct tg_rid *d)
{
	assert_false(d->id.lo & 1);
	(*(size_t *)arg)++;
}

/*
 * tg_replay_ids_drop drops in place and mends the probe runs: every id left
 * is still found (applying it again finds its slot and adds none), none
 * dropped is left, and the table keeps working for new ids.
 */
static void
test_ids_drop_in_place_keeps_the_rest_findable(void **state)
{
	struct tg_replay r;
	enum { N = 50000 };
	(void)state;

	lsn = 0;
	assert_int_equal(tg_replay_init(&r), 0);
	settings(&r, 1, "silver");
	for (int round = 0; round < 3; round++) {
		for (uint64_t i = 0; i < N; i++) {
			/* Clustered digests: long probe runs, with holes after the drop. */
			struct tg_jrec_debit db = {
			    .acct = 1,
			    .id = {i * 3 + (uint64_t)round * 7 * N + 1, i % 5},
			    .cost = 1};
			apply(&r, TG_JREC_DEBIT, &db, 0);
		}
		size_t before = r.ids.n, evens = 0;
		assert_int_equal(tg_replay_ids_drop(&r, odd_lo, NULL), 0);
		tg_replay_each_id(&r, count_even, &evens);
		assert_int_equal(evens, r.ids.n);
		assert_true(r.ids.n < before);
		/* Every id left is found again: the count does not move. */
		size_t left = r.ids.n;
		for (uint64_t rr = 0; rr <= (uint64_t)round; rr++)
			for (uint64_t i = 0; i < N; i++) {
				uint64_t lo = i * 3 + rr * 7 * N + 1;
				if (lo & 1)
					continue;
				struct tg_jrec_debit db = {.acct = 1, .id = {lo, i % 5}, .cost = 1};
				apply(&r, TG_JREC_DEBIT, &db, 0);
			}
		assert_int_equal(r.ids.n, left);
	}
	tg_replay_free(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_each_record_type),
	    cmocka_unit_test(test_each_record_type_itemized),
	    cmocka_unit_test(test_usage_saturates_in_replay),
	    cmocka_unit_test(test_category_out_of_range_refused),
	    cmocka_unit_test(test_order_between_workers_does_not_matter),
	    cmocka_unit_test(test_calls_come_and_go),
	    cmocka_unit_test_setup_teardown(test_snapshot_round_trip_and_fallback, mkdir_tmp,
	                                    rm_tmp),
	    cmocka_unit_test_setup_teardown(test_journal_after_snapshot_and_pruning, mkdir_tmp,
	                                    rm_tmp),
	    cmocka_unit_test(test_ids_drop_in_place_keeps_the_rest_findable),
	    cmocka_unit_test_setup_teardown(test_catch_up_skips_segments_already_applied, mkdir_tmp,
	                                    rm_tmp),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
