/*
 * test_hash.c - tg_hash64 and tg_digest: stable, spread out, in bounds.
 *
 * Digests key the idem window and may outlive a process (journal,
 * snapshot), so the pinned values below must only change with a version
 * bump of every format that stores a digest.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tg_hash.h"
#include "testrand.h"

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Accidental changes to the function show up here. */
static void
test_pinned(void **state)
{
	(void)state;
	assert_int_equal(tg_hash64("", 0, 0), 0xbbd1b97c7441f6a2ull);
	assert_int_equal(tg_hash64("a", 1, 0), 0x990dfce21e810ac3ull);
	assert_int_equal(tg_hash64("abcdefghijklmnopqrstuvwxyz", 26, 42), 0x03f82fd870bfab6cull);
	struct tg_digest d = tg_digest(1, "a84b4c76e66710@pc33.atlanta.com", 31);
	assert_int_equal(d.lo, 0xd0f36c11aa0977b2ull);
	assert_int_equal(d.hi, 0xc5c6236ba5224626ull);
}

/*
 * Every length from 0 to 80, each input in a heap block of exactly its size
 * (ASan catches a read past the end), at every alignment: the same bytes
 * give the same hash wherever they sit.
 */
static void
test_lengths_alignment(void **state)
{
	unsigned char src[80];
	uint64_t seed = 1;

	(void)state;
	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (unsigned char)it_splitmix(&seed);
	for (size_t len = 0; len <= sizeof(src); len++) {
		unsigned char *exact = malloc(len ? len : 1);
		uint64_t h;

		assert_non_null(exact);
		memcpy(exact, src, len);
		h = tg_hash64(exact, len, 7);
		for (size_t off = 1; off < 8; off++) {
			unsigned char buf[96];

			memcpy(buf + off, src, len);
			assert_int_equal(tg_hash64(buf + off, len, 7), h);
		}
		/* a prefix is not the whole: length counts */
		if (len > 0)
			assert_true(tg_hash64(exact, len - 1, 7) != h);
		assert_true(tg_hash64(exact, len, 8) != h);
		free(exact);
	}
	/* trailing zero bytes are not padding */
	assert_true(tg_hash64("ab", 2, 0) != tg_hash64("ab\0", 3, 0));
	assert_true(tg_hash64("\0", 1, 0) != tg_hash64("", 0, 0));
}

/* 1M call-id-like strings: no collision in 64 bits, none in the digest. */
static void
test_no_collisions(void **state)
{
	enum { N = 1000000 };
	uint64_t *h = malloc(N * sizeof(*h));
	uint64_t *lo = malloc(N * sizeof(*lo));
	unsigned buckets[1024] = {0};
	char id[64];

	(void)state;
	assert_non_null(h);
	assert_non_null(lo);
	for (unsigned i = 0; i < N; i++) {
		int n = snprintf(id, sizeof(id), "%u-call@10.0.0.1", i);
		struct tg_digest d = tg_digest(1, id, (size_t)n);

		assert_true(d.lo != 0 || d.hi != 0);
		h[i] = d.hi;
		lo[i] = d.lo;
		buckets[d.lo & 1023]++;
	}
	qsort(h, N, sizeof(*h), cmp_u64);
	qsort(lo, N, sizeof(*lo), cmp_u64);
	for (unsigned i = 1; i < N; i++) {
		assert_true(h[i] != h[i - 1]);
		assert_true(lo[i] != lo[i - 1]);
	}
	/* stripes are picked by the low bits: chi-square over 1024 buckets */
	/* chi = sum (b - N/1024)^2 / (N/1024), in integers: sum (1024b - N)^2 / (1024 N) */
	uint64_t chi_scaled = 0;
	for (unsigned b = 0; b < 1024; b++) {
		int64_t dev = (int64_t)buckets[b] * 1024 - N;
		chi_scaled += (uint64_t)(dev * dev);
	}
	assert_true(chi_scaled < (uint64_t)1250 * 1024 * N); /* 1023 d.o.f.: p < 1e-5 */
	free(h);
	free(lo);
}

/* One flipped input bit flips about half of the output bits. */
static void
test_avalanche(void **state)
{
	static const size_t lens[] = {3, 8, 13, 24, 100};
	uint64_t seed = 99;

	(void)state;
	for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
		size_t len = lens[li];
		unsigned long flips[64] = {0}, trials = 0;

		for (unsigned t = 0; t < 200; t++) {
			unsigned char buf[100];

			for (size_t i = 0; i < len; i++)
				buf[i] = (unsigned char)it_splitmix(&seed);
			uint64_t h = tg_hash64(buf, len, 0);
			for (size_t bit = 0; bit < len * 8; bit++) {
				buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
				uint64_t x = h ^ tg_hash64(buf, len, 0);
				buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
				for (unsigned o = 0; o < 64; o++)
					flips[o] += (x >> o) & 1;
				trials++;
			}
		}
		/* each output bit flips with probability within 0.47 .. 0.53 */
		for (unsigned o = 0; o < 64; o++) {
			assert_true(flips[o] * 100 > trials * 47);
			assert_true(flips[o] * 100 < trials * 53);
		}
	}
}

/* The same bytes under two kinds are unrelated digests. */
static void
test_kinds(void **state)
{
	struct tg_digest a = tg_digest(1, "tx-1", 4), b = tg_digest(2, "tx-1", 4);
	struct tg_digest a2 = tg_digest(1, "tx-1", 4);

	(void)state;
	assert_true(a.lo != b.lo && a.hi != b.hi);
	assert_true(a.lo != a.hi);
	assert_int_equal(a.lo, a2.lo);
	assert_int_equal(a.hi, a2.hi);
	/* mixing is a bijection: distinct inputs, distinct outputs */
	assert_true(tg_mix64(1) != tg_mix64(2));
	assert_int_equal(tg_mix64(0), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pinned),        cmocka_unit_test(test_lengths_alignment),
	    cmocka_unit_test(test_no_collisions), cmocka_unit_test(test_avalanche),
	    cmocka_unit_test(test_kinds),
	};

	return cmocka_run_group_tests_name("hash", tests, NULL, NULL);
}
