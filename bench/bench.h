/*
 * bench.h - the benchmarks linked into tollbench, one function each, and
 * what they share.
 */
#ifndef TG_BENCH_H
#define TG_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "tg_clock.h"

/*
 * Longest-prefix match: loads a generated plan of random prefixes through the
 * real loader and times lookups of random 11-digit destinations on one
 * thread.  Options: -p prefixes (100000), -d destinations (1000000),
 * -s seconds (2).  Prints lookups per second; returns 0, or 1 on error.
 */
int tg_bench_lpm(int argc, char **argv);

/*
 * Rated debits in process: accounts in a real shm table, a generated plan,
 * the engine's tg_rated_debit on one thread and on all.  See --help.
 */
int tg_bench_core(int argc, char **argv);

/*
 * Over the network: io_uring client threads drive a running tollgated (or a
 * redis-server with bench/baseline.lua, or bare INCRBY) closed or open loop
 * and report throughput, errors by code and latency percentiles.  See
 * --help and docs/BENCHMARKS.md.  Returns 0; 1 when the run failed, lost a
 * connection or left requests unanswered; 2 for bad options.
 */
int tg_bench_load(int argc, char **argv);

/*
 * Recovery at start-up: a snapshot of -a accounts and -r journal records
 * after it, then load + replay + install timed against reading the same
 * bytes.  Returns 0, or 1 on error.
 */
int tg_bench_recover(int argc, char **argv);

/* ---- shared by the benchmarks (gen.c) ---- */

struct tg_bench_prefix {
	char s[16];
};

/* xorshift64: *x must not be 0. */
uint64_t tg_bench_rng(uint64_t *x);
/* n distinct random prefixes of 3..12 digits, in random order (free() it). */
struct tg_bench_prefix *tg_bench_prefixes(size_t n, uint64_t *seed);
/* Write plan `plan` with prefixes v to a new temporary CSV; its path goes to path. */
int tg_bench_write_plan(const char *plan, const struct tg_bench_prefix *v, size_t n, char *path,
                        size_t pathlen);

#endif
