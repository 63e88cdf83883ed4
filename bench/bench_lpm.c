/*
 * bench_lpm.c - how many longest-prefix lookups one core does.
 *
 * Builds the plan the target is stated on (100k random prefixes of 3..12
 * digits), writes it to a temporary CSV file and loads it through the real
 * loader, so what is timed is exactly the structure the engine serves from.
 * Then looks up random 11-digit destinations on one thread for a few seconds,
 * reading each match's rate as rating would.  Timing only, never a pass/fail
 * test; integers only, no float.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "tg_assert.h"
#include "tg_clock.h"
#include "tg_diag.h"
#include "tg_rate.h"

#define DEST_LEN    11
#define DEST_STRIDE 12 /* 11 digits and a NUL per destination */

static void
usage(FILE *out)
{
	fprintf(out, "usage: tollbench lpm [-p prefixes] [-d destinations] [-s seconds]\n"
	             "  -p  random prefixes of 3..12 digits in the plan (100000)\n"
	             "  -d  random 11-digit destinations looked up in turn (1000000)\n"
	             "  -s  seconds to run (2)\n");
}

int
tg_bench_lpm(int argc, char **argv)
{
	static char names[TG_PLANS_MAX][TG_PLAN_NAME_MAX + 1];
	static uint32_t count;
	struct tg_plan_registry reg = {names, &count, TG_PLANS_MAX};
	unsigned long nprefix = 100000, ndest = 1000000, seconds = 2;
	uint64_t seed = 0x243f6a8885a308d3ull, t0, elapsed, lookups = 0, matched = 0, sum = 0;
	uint64_t ps_each, cpu0, cpu;
	struct tg_planset *ps = NULL;
	const struct tg_plan *plan;
	struct tg_bench_prefix *v;
	struct tg_diag diag;
	char path[512], *dests;
	int opt, rc;

	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		usage(stdout);
		return 0;
	}
	optind = 1;
	while ((opt = getopt(argc, argv, "p:d:s:")) != -1) {
		char *end;
		unsigned long val;

		if (opt != 'p' && opt != 'd' && opt != 's') {
			usage(stderr);
			return 1;
		}
		errno = 0;
		val = strtoul(optarg, &end, 10);
		if (errno != 0 || *end != '\0' || val == 0) {
			usage(stderr);
			return 1;
		}
		if (opt == 'p')
			nprefix = val;
		else if (opt == 'd')
			ndest = val;
		else
			seconds = val;
	}
	if (nprefix > TG_PREFIXES_MAX || ndest > 100000000 || seconds > 3600) {
		usage(stderr);
		return 1;
	}

	v = tg_bench_prefixes(nprefix, &seed);
	if (v == NULL) {
		fprintf(stderr, "lpm: out of memory\n");
		return 1;
	}
	rc = tg_bench_write_plan("bench", v, nprefix, path, sizeof(path));
	free(v);
	if (rc != 0) {
		fprintf(stderr, "lpm: cannot write a temporary plan: %s\n", strerror(-rc));
		return 1;
	}
	tg_diag_init(&diag);
	t0 = tg_mono_ns();
	rc = tg_planset_load(path, &reg, &ps, &diag);
	elapsed = tg_mono_ns() - t0;
	unlink(path);
	if (rc != 0) {
		tg_diag_print(&diag, 2);
		fprintf(stderr, "lpm: load failed: %s\n", strerror(-rc));
		return 1;
	}
	plan = tg_planset_plan(ps, (uint32_t)tg_plan_registry_id(&reg, "bench", 5, false));
	printf("lpm: loaded %zu prefixes in %" PRIu64 " ms\n", tg_planset_prefixes(ps),
	       elapsed / 1000000);

	TG_ASSERT(plan != NULL); /* the plan just loaded */
	dests = malloc((size_t)ndest * DEST_STRIDE);
	if (dests == NULL) {
		fprintf(stderr, "lpm: out of memory\n");
		tg_planset_free(ps);
		return 1;
	}
	for (size_t i = 0; i < ndest; i++) {
		char *d = dests + i * DEST_STRIDE;

		for (size_t k = 0; k < DEST_LEN; k++)
			d[k] = (char)('0' + tg_bench_rng(&seed) % 10);
		d[DEST_LEN] = '\0';
	}

	/* One untimed pass to fault in and warm the caches, then whole passes. */
	for (size_t i = 0; i < ndest; i++)
		sum += tg_plan_match(plan, dests + i * DEST_STRIDE, DEST_LEN) != NULL;
	t0 = tg_mono_ns();
	cpu0 = tg_clock_ns(CLOCK_THREAD_CPUTIME_ID);
	do {
		for (size_t i = 0; i < ndest; i++) {
			const struct tg_rate *r =
			    tg_plan_match(plan, dests + i * DEST_STRIDE, DEST_LEN);

			if (r != NULL) {
				matched++;
				sum += (uint64_t)r->per_min;
			}
		}
		lookups += ndest;
		elapsed = tg_mono_ns() - t0;
	} while (elapsed < (uint64_t)seconds * 1000000000u);
	cpu = tg_clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
	if (cpu == 0)
		cpu = 1;

	printf("lpm: %" PRIu64 " lookups of %lu random %d-digit destinations in %" PRIu64
	       " ms, %" PRIu64 "%% matched\n",
	       lookups, ndest, DEST_LEN, elapsed / 1000000, matched * 100 / lookups);
	ps_each = (uint64_t)((unsigned __int128)elapsed * 1000u / lookups);
	printf("lpm: %" PRIu64 " lookups/s on one thread (%" PRIu64 ".%01" PRIu64
	       " ns each; checksum %" PRIu64 ")\n",
	       (uint64_t)((unsigned __int128)lookups * 1000000000u / elapsed), ps_each / 1000,
	       ps_each % 1000 / 100, sum & 0xffff);
	/* The same per second of CPU the thread got: steadier on a shared machine. */
	printf("lpm: %" PRIu64 " lookups per CPU-second\n",
	       (uint64_t)((unsigned __int128)lookups * 1000000000u / cpu));
	free(dests);
	tg_planset_free(ps);
	return 0;
}
