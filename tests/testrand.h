/*
 * testrand.h - the randomness and crafted keys the unit and torture tests
 * share: splitmix64 streams (reproducible from a seed) and digests aimed at
 * a chosen stripe and home slot of a striped map.  Header-only.
 */
#ifndef TG_TEST_TESTRAND_H
#define TG_TEST_TESTRAND_H

#include <stdint.h>

#include "tg_hash.h"

/* The next number of the splitmix64 stream *s. */
static inline uint64_t
it_splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Same low 32 bits of lo: same stripe.  Same high 32 bits of hi: same first slot. */
static inline struct tg_digest
it_crafted(uint32_t stripe_bits, uint32_t home_bits, uint32_t unique)
{
	struct tg_digest d = {(uint64_t)unique << 32 | stripe_bits,
	                      (uint64_t)home_bits << 32 | unique};

	return d;
}

#endif
