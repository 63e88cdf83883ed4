/*
 * fuzz_money.c - fuzz target for the money parser and formatter (money.c).
 *
 * The input is the text handed to tg_money_parse.  Beyond not crashing:
 * the result must match a slow reference reading of the grammar of
 * tg_money.h (same error, same value), *out must be untouched on error, and
 * parse -> format -> parse must give the same value with the formatted text
 * in canonical form.  Every 8 bytes of the input are also taken as raw
 * amounts, to round-trip values no text reaches (INT64_MIN) and to check the
 * checked arithmetic against 128-bit references.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "tg_money.h"

#define SENTINEL ((tg_money_t)0x5a5a5a5a5a5a5a5a)

/*
 * The grammar [+-]? digit+ ( '.' digit{1,6} )? read the slow way: 0 and the
 * value, -EINVAL or -ERANGE.
 */
static int
ref_parse(const char *s, size_t len, tg_money_t *out)
{
	const unsigned __int128 cap = (unsigned __int128)1 << 100; /* saturates, never wraps */
	unsigned __int128 whole = 0, frac = 0, mag;
	size_t i = 0, digits = 0, decimals = 0;
	bool neg = false;

	if (len > 0 && (s[0] == '+' || s[0] == '-'))
		neg = s[i++] == '-';
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, digits++)
		whole = whole >= cap ? cap : whole * 10 + (unsigned)(s[i] - '0');
	if (digits == 0)
		return -EINVAL;
	if (i < len) {
		if (s[i++] != '.')
			return -EINVAL;
		for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, decimals++)
			frac = frac * 10 + (unsigned)(s[i] - '0');
		if (decimals < 1 || decimals > 6 || i < len)
			return -EINVAL;
	}
	for (size_t d = decimals; d < 6; d++)
		frac *= 10;
	mag = whole * TG_MONEY_SCALE + frac;
	if (whole >= cap || mag > (unsigned __int128)INT64_MAX + neg)
		return -ERANGE;
	*out = neg ? (tg_money_t)(0 - (uint64_t)mag) : (tg_money_t)mag;
	return 0;
}

/* "0", "-12", "10.5": no '+', no "-0", no leading zero, no trailing decimal zero. */
static bool
canonical(const char *s, size_t n)
{
	size_t i = 0, start;

	if (n > 0 && s[0] == '-')
		i++;
	start = i;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	if (i == start || (s[start] == '0' && i - start > 1))
		return false;
	if (i < n) {
		size_t dot = i++;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i != n || i - dot < 2 || i - dot > 7 || s[n - 1] == '0')
			return false;
	}
	/* "-0" is not canonical; "-0.5" is. */
	return !(s[0] == '-' && n == 2 && s[1] == '0');
}

static void
round_trip(tg_money_t v)
{
	char buf[TG_MONEY_STR_MAX + 8];
	tg_money_t back = SENTINEL;
	size_t n;

	memset(buf, 'x', sizeof(buf));
	n = tg_money_format(v, buf);
	FUZZ_CHECK(n > 0 && n < TG_MONEY_STR_MAX && buf[n] == '\0' && strlen(buf) == n);
	FUZZ_CHECK(buf[TG_MONEY_STR_MAX] == 'x'); /* nothing written past the documented size */
	FUZZ_CHECK(canonical(buf, n));
	FUZZ_CHECK(tg_money_parse(buf, n, &back) == 0 && back == v);
}

static void
arithmetic(tg_money_t a, tg_money_t b)
{
	__int128 sum = (__int128)a + b, diff = (__int128)a - b, prod = (__int128)a * b;
	tg_money_t r = SENTINEL;
	bool fits;

	fits = sum >= INT64_MIN && sum <= INT64_MAX;
	FUZZ_CHECK(tg_money_add(a, b, &r) == fits && r == (fits ? (tg_money_t)sum : SENTINEL));
	r = SENTINEL;
	fits = diff >= INT64_MIN && diff <= INT64_MAX;
	FUZZ_CHECK(tg_money_sub(a, b, &r) == fits && r == (fits ? (tg_money_t)diff : SENTINEL));
	r = SENTINEL;
	fits = prod >= INT64_MIN && prod <= INT64_MAX;
	FUZZ_CHECK(tg_money_mul(a, b, &r) == fits && r == (fits ? (tg_money_t)prod : SENTINEL));

	/* ceil(x * y / d) for x, y >= 0 and d > 0: the rounding rule of every charge. */
	int64_t x = a & INT64_MAX, y = b & INT64_MAX, d = (int64_t)((uint64_t)a ^ (uint64_t)b);
	d &= INT64_MAX;
	d = d ? d : 1;
	unsigned __int128 p = (unsigned __int128)x * (unsigned __int128)y;
	unsigned __int128 q = p / (unsigned __int128)d + (p % (unsigned __int128)d != 0);
	fits = q <= INT64_MAX;
	r = SENTINEL;
	FUZZ_CHECK(tg_money_mul_div_ceil(x, y, d, &r) == fits &&
	           r == (fits ? (tg_money_t)q : SENTINEL));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	tg_money_t v = SENTINEL, ref = SENTINEL;
	int rc = tg_money_parse(s, size, &v);

	FUZZ_CHECK(rc == ref_parse(s, size, &ref));
	fuzz_note("money: %d %lld", rc, (long long)v);
	if (rc == 0) {
		FUZZ_CHECK(v == ref);
		round_trip(v);
	} else {
		FUZZ_CHECK(rc == -EINVAL || rc == -ERANGE);
		FUZZ_CHECK(v == SENTINEL); /* *out is written only on success */
	}

	tg_money_t prev = v;
	for (size_t i = 0; i + 8 <= size; i += 8) {
		tg_money_t raw;
		memcpy(&raw, data + i, 8);
		round_trip(raw);
		arithmetic(prev, raw);
		prev = raw;
	}
	return 0;
}
