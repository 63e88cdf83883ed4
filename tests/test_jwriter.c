/*
 * test_jwriter.c - the journal writer under concurrent committers
 * (engine/jwriter.c): threads commit batches at once, in durable and in
 * relaxed mode, across segment rotations.  Afterwards the reader must find
 * every record exactly once, LSNs without a gap, a clean end, and each
 * thread's records in the order it committed them.  In durable mode a
 * commit may return only once the durable LSN covers it.  Also run under
 * ThreadSanitizer (suite concurrent).
 */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tg_jwriter.h"

#define THREADS 4
#define BATCHES 1500

static char dir[64];

struct worker {
	struct tg_jw *jw;
	unsigned id;
	uint64_t records;
	int bad; /* a durable commit returned before its LSN was durable */
};

static void *
run(void *arg)
{
	struct worker *w = arg;
	struct tg_jstage st;
	uint64_t x = 0x9e3779b97f4a7c15ull * (w->id + 1), seq = 0;

	if (tg_jstage_init(&st, 16) != 0)
		return NULL;
	for (int b = 0; b < BATCHES; b++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		unsigned n = (unsigned)(x % 24) + 1; /* past the stage's 16: commits mid-batch */
		for (unsigned i = 0; i < n; i++) {
			struct tg_jrec_debit d = {
			    .acct = w->id, .id = {++seq, w->id + 1}, .cost = 1};
			tg_jw_stage(w->jw, &st, TG_JREC_DEBIT, &d, sizeof(d));
		}
		uint64_t last = tg_jw_commit(w->jw, &st);
		if (tg_jw_mode(w->jw) == TG_DURABLE && tg_jw_durable(w->jw) < last)
			w->bad++;
		w->records += n;
	}
	tg_jstage_fini(&st);
	return NULL;
}

static void
clean(void)
{
	char path[600];
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
}

static void
hammer(enum tg_durability mode)
{
	struct tg_jw *jw;
	struct worker w[THREADS];
	pthread_t t[THREADS];
	char err[600];
	struct tg_jw_cfg cfg = {.dir = dir, .mode = mode, .flush_ms = 1, .segment_size = 65536};

	snprintf(dir, sizeof(dir), "/tmp/test_jwriter.XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(tg_jw_open(&jw, &cfg, 1, err, sizeof(err)), 0);
	for (unsigned i = 0; i < THREADS; i++) {
		w[i] = (struct worker){.jw = jw, .id = i};
		assert_int_equal(pthread_create(&t[i], NULL, run, &w[i]), 0);
	}
	uint64_t total = 0;
	for (unsigned i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].bad, 0);
		total += w[i].records;
	}
	assert_int_equal(tg_jw_last(jw), total);
	tg_jw_close(jw);

	/* Read it all back: each thread's ids 1..n in order, nothing twice, a clean end. */
	struct tg_journal_reader *r;
	struct tg_jrec rec;
	uint64_t next[THREADS] = {0}, n = 0;
	enum tg_journal_status s;
	assert_int_equal(tg_journal_open_dir(&r, dir), 0);
	assert_true(tg_journal_segments(r) > 1); /* rotated */
	while ((s = tg_journal_next(r, &rec)) == TG_JOURNAL_OK) {
		struct tg_jrec_debit d;
		assert_int_equal(rec.type, TG_JREC_DEBIT);
		memcpy(&d, rec.payload, sizeof(d));
		assert_true(d.acct < THREADS);
		assert_int_equal(d.id.lo, ++next[d.acct]);
		n++;
	}
	assert_int_equal(s, TG_JOURNAL_END);
	assert_int_equal(n, total);
	for (unsigned i = 0; i < THREADS; i++)
		assert_int_equal(next[i], w[i].records);
	tg_journal_close(r);

	/* Reopened after the end, the writer continues the same journal. */
	assert_int_equal(tg_jw_open(&jw, &cfg, total + 1, err, sizeof(err)), 0);
	struct tg_jstage st;
	assert_int_equal(tg_jstage_init(&st, 4), 0);
	struct tg_jrec_debit d = {.acct = 0, .id = {next[0] + 1, 1}, .cost = 1};
	tg_jw_stage(jw, &st, TG_JREC_DEBIT, &d, sizeof(d));
	assert_int_equal(tg_jw_commit(jw, &st), total + 1);
	tg_jstage_fini(&st);
	tg_jw_close(jw);
	assert_int_equal(tg_journal_open_dir(&r, dir), 0);
	n = 0;
	while ((s = tg_journal_next(r, &rec)) == TG_JOURNAL_OK)
		n++;
	assert_int_equal(s, TG_JOURNAL_END);
	assert_int_equal(n, total + 1);
	tg_journal_close(r);
	clean();
	rmdir(dir);
}

static void
test_durable(void **state)
{
	(void)state;
	hammer(TG_DURABLE);
}

static void
test_relaxed(void **state)
{
	(void)state;
	hammer(TG_RELAXED);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_durable),
	    cmocka_unit_test(test_relaxed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
