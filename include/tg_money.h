/*
 * tg_money.h - exact money: a signed 64-bit count of micro-units (1e-6).
 *
 * No float or double ever touches an amount.  On the wire and in files an
 * amount is a plain decimal string: an optional sign, at least one digit,
 * and optionally a point followed by one to six digits ("10.5",
 * "-0.000125").  Exponents, a seventh decimal, spaces and overflow are errors.
 */
#ifndef TG_MONEY_H
#define TG_MONEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_limits.h"

typedef int64_t tg_money_t;

#define TG_MONEY_SCALE 1000000
#define TG_MONEY_MAX   INT64_MAX
#define TG_MONEY_MIN   INT64_MIN

/*
 * Parse len bytes of s (not NUL-terminated necessarily) into *out.
 * Returns 0, -EINVAL for a malformed string, -ERANGE when it does not fit.
 * *out is written only on success.
 */
int tg_money_parse(const char *s, size_t len, tg_money_t *out);

/*
 * An unsigned decimal number, as account ids, durations and counts are
 * written on the wire and in files: len (>= 1) digits and nothing else,
 * the value at most UINT64_MAX.  Leading zeros are just zeros, however many
 * ("000...0042" is 42): the one rule for every parser of an account id
 * (commands, the accounts CSV, tollctl).  *out is written only on success.
 */
static inline bool
tg_decimal_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	if (len == 0)
		return false;
	while (i < len && s[i] == '0')
		i++;
	if (len - i > 20) /* UINT64_MAX has 20 digits */
		return false;
	for (; i < len; i++) {
		unsigned d = (unsigned)(unsigned char)s[i] - '0';
		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/*
 * Format v into buf (at least TG_MONEY_STR_MAX bytes) in canonical form:
 * no trailing zeros in the decimals, no point when there are none
 * ("10", "10.5", "-0.000125").  Returns the length, NUL not counted.
 */
size_t tg_money_format(tg_money_t v, char *buf);

/*
 * Checked arithmetic: return false (and leave *out alone) on overflow.
 * Inline: every money step of the hot path uses them.
 */
static inline bool
tg_money_add(tg_money_t a, tg_money_t b, tg_money_t *out)
{
	tg_money_t r;
	if (__builtin_add_overflow(a, b, &r))
		return false;
	*out = r;
	return true;
}

static inline bool
tg_money_sub(tg_money_t a, tg_money_t b, tg_money_t *out)
{
	tg_money_t r;
	if (__builtin_sub_overflow(a, b, &r))
		return false;
	*out = r;
	return true;
}

/*
 * a + b clamped to [TG_MONEY_MIN, TG_MONEY_MAX]: for running totals (usage
 * per category, the money counters), which must stop at the limit rather than
 * wrap to the other sign.  Never for a balance: a balance refuses (TG_OVERFLOW).
 */
static inline tg_money_t
tg_money_add_sat(tg_money_t a, tg_money_t b)
{
	tg_money_t r;
	if (__builtin_add_overflow(a, b, &r))
		return b > 0 ? TG_MONEY_MAX : TG_MONEY_MIN;
	return r;
}

static inline bool
tg_money_mul(tg_money_t a, int64_t n, tg_money_t *out)
{
	tg_money_t r;
	if (__builtin_mul_overflow(a, n, &r))
		return false;
	*out = r;
	return true;
}

/*
 * ceil(a * b / d) for a, b >= 0 and d > 0, computed in 128 bits: the one
 * rounding rule of rating (charges round up to the next micro-unit).
 * Returns false when the result does not fit.
 */
bool tg_money_mul_div_ceil(int64_t a, int64_t b, int64_t d, tg_money_t *out);

/*
 * Currencies (ISO 4217): what payments are made in.  A card or PayPal
 * charge is a whole number of the currency's minor unit (cents for USD),
 * so refill amounts must be whole minor units and a top-up is rounded up
 * to the next one.  The engine's `currency` setting and tollrefill's
 * --currency name one of these.
 */
struct tg_currency {
	const char *code;   /* ISO 4217 alphabetic code, "USD" */
	unsigned minor;     /* digits of the minor unit: 2 for cents, 0 for JPY, 3 for KWD */
	const char *symbol; /* as the mails print it before an amount, "$" */
};

/* The currency named code (exact ISO 4217 code, upper case), or NULL if unknown. */
const struct tg_currency *tg_currency_find(const char *code);
/* The codes known, comma-separated, for error messages. */
const char *tg_currency_codes(void);
/*
 * The process's currency: USD until tg_currency_set.  Set once at start,
 * before any other thread runs; read anywhere after.
 */
const struct tg_currency *tg_currency(void);
void tg_currency_set(const struct tg_currency *c);
/* Micro-units in one minor unit of c: 10000 for cents. */
tg_money_t tg_currency_unit(const struct tg_currency *c);
/* v rounded up to a whole minor unit of c; false on overflow. */
bool tg_currency_round_up(const struct tg_currency *c, tg_money_t v, tg_money_t *out);
/*
 * Format v as the mails show it: the symbol, then exactly the minor unit's
 * digits ("$82.17", "¥500", "KD1.250").  buf holds at least
 * TG_MONEY_STR_MAX + 8 bytes.  Returns the length.
 */
size_t tg_currency_format(const struct tg_currency *c, tg_money_t v, char *buf);

#endif
