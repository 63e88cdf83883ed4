/*
 * money.c - exact decimal money: parsing, formatting and checked arithmetic.
 *
 * An amount is a signed 64-bit count of micro-units.  This file owns the one
 * text form of an amount (see tg_money.h) and the one rounding rule of rating
 * (round a charge up to the next micro-unit).  It must never use a float or a
 * double, and never let an overflow wrap silently: every operation either
 * gives the exact answer or says it could not.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tg_assert.h"
#include "tg_money.h"

#define MONEY_DECIMALS 6

_Static_assert(TG_MONEY_SCALE == 1000000, "six decimals");
_Static_assert(sizeof("-9223372036854.775808") <= TG_MONEY_STR_MAX, "longest amount fits");

/*
 * Accepts exactly: [+-]? digit+ ( '.' digit{1,6} )?.  The magnitude is built
 * as an unsigned micro-unit count so that INT64_MIN, whose magnitude is one
 * more than INT64_MAX, parses without a detour.
 */
int
tg_money_parse(const char *s, size_t len, tg_money_t *out)
{
	size_t i = 0;
	bool neg = false;
	uint64_t whole = 0, frac = 0, mag;
	unsigned decimals = 0;
	bool overflow = false;

	if (s == NULL || len == 0)
		return -EINVAL;
	if (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-';
		i++;
	}
	if (i == len || (unsigned)(s[i] - '0') > 9)
		return -EINVAL;
	/* Keep scanning after an overflow: a malformed tail is -EINVAL, not -ERANGE. */
	for (; i < len && (unsigned)(s[i] - '0') <= 9; i++) {
		if (__builtin_mul_overflow(whole, 10, &whole) ||
		    __builtin_add_overflow(whole, (uint64_t)(s[i] - '0'), &whole))
			overflow = true;
	}
	if (i < len) {
		if (s[i] != '.')
			return -EINVAL;
		i++;
		for (; i < len && (unsigned)(s[i] - '0') <= 9; i++) {
			if (++decimals > MONEY_DECIMALS)
				return -EINVAL;
			frac = frac * 10 + (uint64_t)(s[i] - '0');
		}
		if (decimals == 0 || i < len)
			return -EINVAL;
	}
	for (unsigned d = decimals; d < MONEY_DECIMALS; d++)
		frac *= 10;
	if (overflow || __builtin_mul_overflow(whole, (uint64_t)TG_MONEY_SCALE, &mag) ||
	    __builtin_add_overflow(mag, frac, &mag))
		return -ERANGE;
	if (neg) {
		if (mag > (uint64_t)INT64_MAX + 1)
			return -ERANGE;
		/* 0 - mag in unsigned arithmetic, then the two's-complement view. */
		*out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
	} else {
		if (mag > (uint64_t)INT64_MAX)
			return -ERANGE;
		*out = (int64_t)mag;
	}
	return 0;
}

/*
 * Writes at most TG_MONEY_STR_MAX bytes, NUL included.  The magnitude is
 * taken in unsigned arithmetic so INT64_MIN needs no special case.
 */
size_t
tg_money_format(tg_money_t v, char *buf)
{
	char tmp[TG_MONEY_STR_MAX];
	size_t n = 0, len = 0;
	uint64_t mag = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	uint64_t whole = mag / TG_MONEY_SCALE;
	uint64_t frac = mag % TG_MONEY_SCALE;

	if (v < 0)
		buf[len++] = '-';
	do {
		tmp[n++] = (char)('0' + whole % 10);
		whole /= 10;
	} while (whole != 0);
	while (n > 0)
		buf[len++] = tmp[--n];
	if (frac != 0) {
		unsigned digits = MONEY_DECIMALS;

		while (frac % 10 == 0) {
			frac /= 10;
			digits--;
		}
		buf[len++] = '.';
		for (unsigned d = digits; d > 0; d--) {
			buf[len + d - 1] = (char)('0' + frac % 10);
			frac /= 10;
		}
		len += digits;
	}
	TG_ASSERT(len < TG_MONEY_STR_MAX);
	buf[len] = '\0';
	return len;
}

/*
 * Negative operands or a zero divisor are a caller's bug, not an input error:
 * rates are validated (>= 0) when loaded, so this asserts rather than fails.
 * a * b < 2^126 always fits in 128 bits, so only the quotient can overflow.
 */
bool
tg_money_mul_div_ceil(int64_t a, int64_t b, int64_t d, tg_money_t *out)
{
	unsigned __int128 p, q;

	TG_ASSERT(a >= 0 && b >= 0 && d > 0);
	p = (unsigned __int128)a * (unsigned __int128)b;
	q = p / (unsigned __int128)d;
	if (p % (unsigned __int128)d != 0)
		q++;
	if (q > (unsigned __int128)INT64_MAX)
		return false;
	*out = (tg_money_t)q;
	return true;
}

/* ---- currencies ---- */

/*
 * The currencies a carrier is likely to bill in.  Adding one is a row here
 * (its ISO 4217 minor unit) and a line in docs/CONFIG.md.
 */
static const struct tg_currency currencies[] = {
    {"USD", 2, "$"},    {"EUR", 2, "€"},    {"GBP", 2, "£"},    {"CAD", 2, "CA$"},
    {"AUD", 2, "A$"},   {"NZD", 2, "NZ$"},  {"CHF", 2, "CHF "}, {"SEK", 2, "SEK "},
    {"NOK", 2, "NOK "}, {"DKK", 2, "DKK "}, {"INR", 2, "₹"},    {"MXN", 2, "MX$"},
    {"BRL", 2, "R$"},   {"ZAR", 2, "R"},    {"JPY", 0, "¥"},    {"KRW", 0, "₩"},
    {"KWD", 3, "KD"},   {"BHD", 3, "BD"},
};

static const struct tg_currency *current = &currencies[0];

const struct tg_currency *
tg_currency_find(const char *code)
{
	for (size_t i = 0; i < sizeof(currencies) / sizeof(currencies[0]); i++)
		if (strcmp(currencies[i].code, code) == 0)
			return &currencies[i];
	return NULL;
}

const char *
tg_currency_codes(void)
{
	return "USD, EUR, GBP, CAD, AUD, NZD, CHF, SEK, NOK, DKK, INR, MXN, BRL, ZAR, JPY, KRW, "
	       "KWD, BHD";
}

const struct tg_currency *
tg_currency(void)
{
	return current;
}

void
tg_currency_set(const struct tg_currency *c)
{
	TG_ASSERT(c != NULL && c->minor <= 6);
	current = c;
}

tg_money_t
tg_currency_unit(const struct tg_currency *c)
{
	tg_money_t u = 1;
	for (unsigned k = c->minor; k < 6; k++)
		u *= 10;
	return u;
}

bool
tg_currency_round_up(const struct tg_currency *c, tg_money_t v, tg_money_t *out)
{
	tg_money_t u = tg_currency_unit(c), r = v % u;

	if (r == 0) {
		*out = v;
		return true;
	}
	/* Up means towards +infinity: a negative remainder is already up by -r. */
	return tg_money_add(v, r > 0 ? u - r : -r, out);
}

size_t
tg_currency_format(const struct tg_currency *c, tg_money_t v, char *buf)
{
	char m[TG_MONEY_STR_MAX];
	size_t n = tg_money_format(v, m);
	const char *dot = memchr(m, '.', n);
	size_t whole = dot ? (size_t)(dot - m) : n, have = dot ? n - whole - 1 : 0;
	int len;

	/* Whole minor units print exactly; anything finer keeps its digits rather than lie. */
	if (have <= c->minor)
		len = snprintf(buf, TG_MONEY_STR_MAX + 8, "%s%.*s%s%.*s%.*s", c->symbol, (int)whole,
		               m, c->minor ? "." : "", (int)have, dot ? dot + 1 : "",
		               (int)(c->minor - have), "000000");
	else
		len = snprintf(buf, TG_MONEY_STR_MAX + 8, "%s%s", c->symbol, m);
	return (size_t)len;
}
