/*
 * bench_recover.c - `tollbench recover`: how long start-up takes to rebuild
 * the engine from a snapshot and the journal after it (docs/JOURNAL.md).
 *
 * Builds, in a temporary directory, a snapshot of -a accounts and a journal
 * of -r records after it (CDR debits with unique ids, one credit in ten),
 * written by the real writer.  Then times what tollgated does at start-up:
 * load the snapshot, replay the journal, install the state into a fresh
 * shared-memory table, its call map and its id window.  The baseline, side
 * by side: reading the same files with plain read() (they are in the page
 * cache by then), the floor for any recovery from these bytes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "tg_engine.h"
#include "tg_hash.h"
#include "tg_jwriter.h"
#include "tg_recover.h"
#include "tg_replay.h"
#include "tg_table.h"

static void
usage(FILE *f)
{
	fprintf(f, "usage: tollbench recover [-a ACCOUNTS] [-r RECORDS] [-k]\n"
	           "  -a N   accounts in the snapshot (10000000)\n"
	           "  -r N   journal records after it (1000000)\n"
	           "  -k     keep the directory (its path is printed)\n");
}

static double
secs(uint64_t ns)
{
	return (double)ns / 1e9;
}

/* Read every regular file of dir with read(): the bytes' floor.  Returns bytes. */
static uint64_t
read_all(const char *dir)
{
	static char buf[1 << 20];
	char path[1024];
	uint64_t total = 0;
	DIR *d = opendir(dir);
	struct dirent *e;

	while (d != NULL && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || strcmp(e->d_name, "LOCK") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		int fd = open(path, O_RDONLY);
		ssize_t n;
		while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
			total += (uint64_t)n;
		if (fd >= 0)
			close(fd);
	}
	if (d != NULL)
		closedir(d);
	return total;
}

static void
remove_dir(const char *dir)
{
	char path[1024];
	DIR *d = opendir(dir);
	struct dirent *e;

	while (d != NULL && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	if (d != NULL)
		closedir(d);
	rmdir(dir);
}

/* The snapshot: accounts 0..n-1 on plan "basic", $100 each, refill off. */
static int
make_snapshot(const char *dir, uint64_t n)
{
	struct tg_replay r;
	char err[600];
	int rc = tg_replay_init(&r);

	for (uint64_t i = 0; rc == 0 && i < n; i++) {
		struct tg_jrec_settings s = {.acct = i, .plan = "basic"};
		struct tg_jrec_set_balance b = {
		    .acct = i, .balance = 100000000, .delta = 100000000};
		struct tg_jrec rec = {.lsn = i * 2 + 1, .type = TG_JREC_SETTINGS, .payload = &s};
		rc = tg_replay_apply(&r, &rec);
		rec =
		    (struct tg_jrec){.lsn = i * 2 + 2, .type = TG_JREC_SET_BALANCE, .payload = &b};
		if (rc == 0)
			rc = tg_replay_apply(&r, &rec);
	}
	r.lsn = n * 2;
	if (rc == 0)
		rc = tg_snapshot_write(&r, dir, 0, UINT32_MAX, err, sizeof(err));
	if (rc != 0)
		fprintf(stderr, "tollbench recover: snapshot: %s\n",
		        rc == -ENOMEM ? "no memory" : err);
	tg_replay_free(&r);
	return rc;
}

/* records journal records after LSN first - 1, through the real writer. */
static int
make_journal(const char *dir, uint64_t accounts, uint64_t records, uint64_t first)
{
	struct tg_jw_cfg cfg = {.dir = dir,
	                        .mode = TG_RELAXED,
	                        .flush_ms = 50,
	                        .segment_size = 64u << 20,
	                        .disk_reserve = 0,
	                        .buffer = 16u << 20};
	struct tg_jw *jw;
	struct tg_jstage st;
	char err[600];
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	int rc = tg_jw_open(&jw, &cfg, first, err, sizeof(err));

	if (rc != 0) {
		fprintf(stderr, "tollbench recover: %s\n", err);
		return rc;
	}
	rc = tg_jstage_init(&st, 4096);
	for (uint64_t i = 0; rc == 0 && i < records; i++) {
		uint64_t acct = tg_bench_rng(&seed) % accounts;
		if (i % 10 == 9) {
			struct tg_jrec_credit p = {.acct = acct,
			                           .txid = {tg_mix64(i + 1), tg_mix64(i ^ 0x7478)},
			                           .fingerprint = i,
			                           .amount = 5000000,
			                           .balance = 105000000};
			tg_jw_stage(jw, &st, TG_JREC_CREDIT, &p, sizeof(p));
		} else {
			struct tg_jrec_debit p = {.acct = acct,
			                          .id = {tg_mix64(i + 1), tg_mix64(i ^ 0x636472)},
			                          .fingerprint = i,
			                          .cost = 12345,
			                          .duration = 125,
			                          .category = 1};
			tg_jw_stage(jw, &st, TG_JREC_DEBIT, &p, sizeof(p));
		}
	}
	tg_jw_commit(jw, &st);
	tg_jstage_fini(&st);
	tg_jw_close(jw);
	return rc;
}

int
tg_bench_recover(int argc, char **argv)
{
	uint64_t accounts = 10000000, records = 1000000;
	bool keep = false;
	int opt;

	while ((opt = getopt(argc, argv, "a:r:kh")) != -1) {
		switch (opt) {
		case 'a':
			accounts = strtoull(optarg, NULL, 10);
			break;
		case 'r':
			records = strtoull(optarg, NULL, 10);
			break;
		case 'k':
			keep = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (accounts == 0 || accounts > TG_CAPACITY_MAX / 2) {
		usage(stderr);
		return 2;
	}
	char dir[] = "/tmp/tollbench-recover-XXXXXX";
	if (mkdtemp(dir) == NULL) {
		perror("tollbench recover: mkdtemp");
		return 1;
	}
	printf("recover: %" PRIu64 " accounts in the snapshot, %" PRIu64
	       " journal records after it, in %s\n",
	       accounts, records, dir);
	fflush(stdout);
	uint64_t t = tg_mono_ns();
	if (make_snapshot(dir, accounts) != 0 ||
	    make_journal(dir, accounts, records, accounts * 2 + 1) != 0) {
		remove_dir(dir);
		return 1;
	}
	printf("  built the files in %.2f s\n", secs(tg_mono_ns() - t));

	/* The baseline: the same bytes through read(). */
	uint64_t t0 = tg_mono_ns();
	uint64_t bytes = read_all(dir);
	uint64_t raw = tg_mono_ns() - t0;

	/* What start-up does. */
	struct tg_replay r;
	struct tg_replay_end end;
	char note[512], err[600], shm[64];
	int rc = tg_replay_init(&r);
	uint64_t t1 = tg_mono_ns();
	if (rc == 0)
		rc = tg_snapshot_load(&r, dir, note, sizeof(note));
	uint64_t t2 = tg_mono_ns();
	if (rc == 0)
		rc = tg_replay_journal(&r, dir, 0, false, &end);
	uint64_t t3 = tg_mono_ns();
	if (rc != 0 || r.accts.n != accounts) {
		fprintf(stderr, "tollbench recover: replay failed: %s %s\n", end.msg, note);
		tg_replay_free(&r);
		remove_dir(dir);
		return 1;
	}
	snprintf(shm, sizeof(shm), "/tollbench-recover-%d", (int)getpid());
	struct tg_table table;
	struct tg_table_cfg tcfg = {.name = shm, .capacity = accounts, .mode = 0600};
	struct tg_engine e;
	struct tg_engine_cfg ecfg = {.max_grant = 3600,
	                             .call_grace = 120,
	                             .calls_max = 1000,
	                             .ids_max = records * 2 + 1000,
	                             .ids_window = UINT32_MAX / 2,
	                             .workers = 1};
	tg_table_unlink(shm);
	rc = tg_table_open(&table, &tcfg, err, sizeof(err));
	if (rc == 0 && (rc = tg_engine_init(&e, &table, &ecfg)) == 0) {
		uint64_t t4 = tg_mono_ns();
		rc = tg_recover_install(&r, &e, err, sizeof(err));
		uint64_t t5 = tg_mono_ns();
		if (rc == 0) {
			uint64_t total = (t3 - t1) + (t5 - t4);
			printf("  snapshot load   %7.3f s   (%" PRIu64 " accounts)\n",
			       secs(t2 - t1), accounts);
			printf("  journal replay  %7.3f s   (%" PRIu64
			       " records, %.1fM records/s)\n",
			       secs(t3 - t2), r.records, (double)r.records / secs(t3 - t2) / 1e6);
			printf("  install         %7.3f s   (table, %zu ids)\n", secs(t5 - t4),
			       tg_idem_count(e.ids));
			printf("  recovery total  %7.3f s\n", secs(total));
			printf("  baseline: read() of the same %.0f MiB: %.3f s; recovery / "
			       "baseline = "
			       "%.1f\n",
			       (double)bytes / (1 << 20), secs(raw), (double)total / (double)raw);
		} else {
			fprintf(stderr, "tollbench recover: install: %s\n", err);
		}
		tg_engine_fini(&e);
	} else if (rc != 0) {
		fprintf(stderr, "tollbench recover: %s\n", err);
	}
	tg_table_close(&table);
	tg_table_unlink(shm);
	tg_replay_free(&r);
	if (keep)
		printf("  kept %s\n", dir);
	else
		remove_dir(dir);
	return rc == 0 ? 0 : 1;
}
