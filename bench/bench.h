/*
 * bench.h - the benchmarks linked into tollbench, one function each.
 */
#ifndef TG_BENCH_H
#define TG_BENCH_H

/*
 * Longest-prefix match: loads a generated plan of random prefixes through the
 * real loader and times lookups of random 11-digit destinations on one
 * thread.  Options: -p prefixes (100000), -d destinations (1000000),
 * -s seconds (2).  Prints lookups per second; returns 0, or 1 on error.
 */
int tg_bench_lpm(int argc, char **argv);

#endif
