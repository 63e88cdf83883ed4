/*
 * tg_hash.h - hashing of ids: 64-bit and 128-bit digests of byte strings.
 *
 * Call ids and transaction ids are remembered by a 128-bit digest, not by
 * their bytes, so the maps stay fixed-size; two different ids colliding in
 * 128 bits is not a risk worth a byte of memory.
 */
#ifndef TG_HASH_H
#define TG_HASH_H

#include <stddef.h>
#include <stdint.h>

struct tg_digest {
	uint64_t lo, hi; /* never both zero (zero marks a free slot) */
};

/* 64-bit hash of p[0..len) with seed. */
uint64_t tg_hash64(const void *p, size_t len, uint64_t seed);
/* 128-bit digest of (kind, p[0..len)): kind separates id spaces. */
struct tg_digest tg_digest(uint32_t kind, const void *p, size_t len);
/* Mix an integer (for account ids in open addressing). */
static inline uint64_t
tg_mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

#endif
