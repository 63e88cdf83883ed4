/*
 * tollbench.c - the benchmark tool: one subcommand per benchmark.
 *
 * Benchmarks measure; they never pass or fail on time.  Figures are quoted
 * as ratios against a baseline run side by side (docs/BENCHMARKS.md).
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *what;
} subs[] = {
    {"core", tg_bench_core, "rated debits in process, no network: the ceiling"},
    {"lpm", tg_bench_lpm, "longest-prefix matches on a large plan"},
    {"load", tg_bench_load, "requests over TCP to a running server: throughput, latency"},
    {"recover", tg_bench_recover, "start-up: snapshot + journal replay + install"},
};

int
main(int argc, char **argv)
{
	if (argc >= 2) {
		for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
			if (strcmp(argv[1], subs[i].name) == 0)
				return subs[i].fn(argc - 1, argv + 1);
	}
	fprintf(stderr, "usage: tollbench <benchmark> [options]   (<benchmark> --help)\n\n");
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
		fprintf(stderr, "  %-6s %s\n", subs[i].name, subs[i].what);
	return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
}
