/*
 * gen.c - what the benchmarks generate: random numbers, a clock, and rate
 * plans of many random prefixes written through the real CSV format.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "tg_money.h"

uint64_t
tg_bench_rng(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static int
cmp_prefix(const void *a, const void *b)
{
	return strcmp(((const struct tg_bench_prefix *)a)->s,
	              ((const struct tg_bench_prefix *)b)->s);
}

struct tg_bench_prefix *
tg_bench_prefixes(size_t n, uint64_t *seed)
{
	size_t extra = n / 16 + 16, u = 0;
	struct tg_bench_prefix *v = calloc(n + extra, sizeof(*v));

	if (v == NULL)
		return NULL;
	while (u < n) {
		size_t m;

		for (m = u; m < n + extra; m++) {
			size_t len = 3 + tg_bench_rng(seed) % 10;

			for (size_t i = 0; i < len; i++)
				v[m].s[i] = (char)('0' + tg_bench_rng(seed) % 10);
			v[m].s[len] = '\0';
		}
		qsort(v, m, sizeof(*v), cmp_prefix);
		u = 0;
		for (size_t i = 0; i < m; i++)
			if (u == 0 || strcmp(v[u - 1].s, v[i].s) != 0)
				v[u++] = v[i];
	}
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = (size_t)(tg_bench_rng(seed) % (i + 1));
		struct tg_bench_prefix t = v[i];

		v[i] = v[j];
		v[j] = t;
	}
	return v;
}

int
tg_bench_write_plan(const char *plan, const struct tg_bench_prefix *v, size_t n, char *path,
                    size_t pathlen)
{
	const char *dir = getenv("TMPDIR");
	FILE *f;
	int fd;

	snprintf(path, pathlen, "%s/tollbench-plan-XXXXXX", dir && *dir ? dir : "/tmp");
	fd = mkstemp(path);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (f == NULL) {
		close(fd);
		unlink(path);
		return -ENOMEM;
	}
	fputs("plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum\n", f);
	for (size_t i = 0; i < n; i++) {
		char money[TG_MONEY_STR_MAX];

		tg_money_format((tg_money_t)(1000 + i % 100000), money);
		fprintf(f, "%s,%s,international,%s,0,6,6,0\n", plan, v[i].s, money);
	}
	if (fclose(f) != 0) {
		unlink(path);
		return -EIO;
	}
	return 0;
}
