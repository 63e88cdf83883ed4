/*
 * hash.c - the hash of ids: tg_hash64 and the 128-bit tg_digest.
 *
 * Owns the one function that turns a byte string (a SIP Call-ID, a txid)
 * into the key of the calls and idem maps.  A digest may be written to the
 * journal and compared after a restart, possibly on another host, so the
 * result depends only on the bytes, their length and the seed: never on
 * endianness, alignment or a per-process random seed.  It must never read
 * outside p[0..len) and never allocate.
 *
 * It is built for speed and spread, not to resist an adversary: someone who
 * chooses ids freely and knows this code can search for two ids with the
 * same digest.  tg_digest makes that harder (two unrelated 64-bit hashes
 * must collide at once) but not impossible.
 */
#include <endian.h>
#include <stdint.h>
#include <string.h>

#include "tg_hash.h"

/* Odd 64-bit constants with about half of their bits set. */
#define K1 0x9e3779b97f4a7c15ull /* 2^64 / golden ratio */
#define K2 0xd1b54a32d192ed03ull
#define K3 0x8cb92ba72f3d8dd7ull
#define K4 0xf1357aea2e62a9c5ull
/* Seeds of the two halves of a digest. */
#define SEED_LO 0x6a09e667f3bcc909ull
#define SEED_HI 0xbb67ae8584caa73bull

static inline uint64_t
rotl64(uint64_t x, unsigned r)
{
	return (x << r) | (x >> (64 - r));
}

static inline uint64_t
read64(const unsigned char *s)
{
	uint64_t v;

	memcpy(&v, s, sizeof(v));
	return le64toh(v);
}

static inline uint32_t
read32(const unsigned char *s)
{
	uint32_t v;

	memcpy(&v, s, sizeof(v));
	return le32toh(v);
}

/*
 * The last 1..7 bytes as one word.  For a given n every byte lands in the
 * word (the two 4-byte reads overlap, the three single reads repeat), so the
 * mapping is one-to-one; the length is mixed in at the end.
 */
static inline uint64_t
read_tail(const unsigned char *s, size_t n)
{
	if (n >= 4)
		return (uint64_t)read32(s) | (uint64_t)read32(s + n - 4) << 32;
	return (uint64_t)s[0] << 16 | (uint64_t)s[n >> 1] << 8 | s[n - 1];
}

/*
 * One 8-byte lane into an accumulator.  For a fixed accumulator the result
 * is a bijection of the lane, and for a fixed lane a bijection of the
 * accumulator: two inputs that differ in one lane never collide.
 */
static inline uint64_t
lane(uint64_t acc, uint64_t v)
{
	acc += v * K2;
	acc = rotl64(acc, 31);
	return acc * K1;
}

/*
 * Two accumulators take alternate lanes, so the multiplications of the
 * main loop overlap.  p may be NULL when len is 0.
 */
uint64_t
tg_hash64(const void *p, size_t len, uint64_t seed)
{
	const unsigned char *s = p;
	size_t n = len;
	uint64_t a = seed + K3, b = seed ^ K4;

	while (n >= 16) {
		a = lane(a, read64(s));
		b = lane(b, read64(s + 8));
		s += 16;
		n -= 16;
	}
	if (n >= 8) {
		a = lane(a, read64(s));
		s += 8;
		n -= 8;
	}
	if (n > 0)
		b = lane(b, read_tail(s, n));
	return tg_mix64(lane(lane(a, b), (uint64_t)len));
}

/*
 * Two hashes whose seeds are derived from kind, so the same bytes under two
 * kinds (a call id and a txid) give unrelated digests.
 */
struct tg_digest
tg_digest(uint32_t kind, const void *p, size_t len)
{
	struct tg_digest d;

	d.lo = tg_hash64(p, len, tg_mix64(SEED_LO ^ kind));
	d.hi = tg_hash64(p, len, tg_mix64(SEED_HI + ((uint64_t)kind << 32 | kind)));
	if (d.lo == 0 && d.hi == 0)
		d.lo = 1;
	return d;
}
