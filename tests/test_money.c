/*
 * test_money.c - unit tests of engine/money.c: every parsing rule, canonical
 * formatting, the 64-bit bounds, checked arithmetic and the rounding rule.
 *
 * Integers only, like the code under test: no float or double here either.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tg_money.h"

struct parse_case {
	const char *s;
	int rc;
	tg_money_t v;
};

static const struct parse_case parse_cases[] = {
    {"0", 0, 0},
    {"-0", 0, 0},
    {"+0", 0, 0},
    {"0.0", 0, 0},
    {"-0.000000", 0, 0},
    {"1", 0, 1000000},
    {"+1", 0, 1000000},
    {"-1", 0, -1000000},
    {"10", 0, 10000000},
    {"10.5", 0, 10500000},
    {"10.50", 0, 10500000},
    {"0.1", 0, 100000},
    {"0.000001", 0, 1},
    {"-0.000001", 0, -1},
    {"0.000125", 0, 125},
    {"-0.000125", 0, -125},
    {"+1.000001", 0, 1000001},
    {"007.50", 0, 7500000},
    {"000000000000000000000000000001", 0, 1000000},
    {"123456.789012", 0, 123456789012},
    {"9223372036854.775807", 0, INT64_MAX},
    {"-9223372036854.775807", 0, -INT64_MAX},
    {"-9223372036854.775808", 0, INT64_MIN},
    {"9223372036854", 0, 9223372036854000000},
    {"-9223372036854", 0, -9223372036854000000},

    {"9223372036854.775808", -ERANGE, 0},
    {"+9223372036854.775808", -ERANGE, 0},
    {"-9223372036854.775809", -ERANGE, 0},
    {"9223372036855", -ERANGE, 0},
    {"-9223372036855", -ERANGE, 0},
    {"18446744073709.551616", -ERANGE, 0},
    {"18446744073709551616", -ERANGE, 0},
    {"99999999999999999999999999", -ERANGE, 0},
    {"99999999999999999999999999.5", -ERANGE, 0},

    {"-", -EINVAL, 0},
    {"+", -EINVAL, 0},
    {".", -EINVAL, 0},
    {".5", -EINVAL, 0},
    {"-.5", -EINVAL, 0},
    {"5.", -EINVAL, 0},
    {"-5.", -EINVAL, 0},
    {"1.1234567", -EINVAL, 0},
    {"0.0000001", -EINVAL, 0},
    {"1.000000000", -EINVAL, 0},
    {"99999999999999999999999.1234567", -EINVAL, 0},
    {"99999999999999999999999x", -EINVAL, 0},
    {"1e5", -EINVAL, 0},
    {"1E5", -EINVAL, 0},
    {"1.5e1", -EINVAL, 0},
    {" 1", -EINVAL, 0},
    {"1 ", -EINVAL, 0},
    {"1. 5", -EINVAL, 0},
    {"1,5", -EINVAL, 0},
    {"1_000", -EINVAL, 0},
    {"0x10", -EINVAL, 0},
    {"1.2.3", -EINVAL, 0},
    {"--1", -EINVAL, 0},
    {"+-1", -EINVAL, 0},
    {"-+1", -EINVAL, 0},
    {"1-", -EINVAL, 0},
    {"1+", -EINVAL, 0},
    {"abc", -EINVAL, 0},
    {"inf", -EINVAL, 0},
    {"nan", -EINVAL, 0},
    {"$1", -EINVAL, 0},
    {"1\n", -EINVAL, 0},
    {"\xd9\xa1", -EINVAL, 0}, /* ARABIC-INDIC DIGIT ONE is not a digit here */
};

static void
test_parse_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		const struct parse_case *c = &parse_cases[i];
		tg_money_t v = 4242;
		int rc = tg_money_parse(c->s, strlen(c->s), &v);

		if (rc != c->rc)
			fail_msg("'%s': rc %d, expected %d", c->s, rc, c->rc);
		if (c->rc == 0 && v != c->v)
			fail_msg("'%s': %lld, expected %lld", c->s, (long long)v, (long long)c->v);
		if (c->rc != 0 && v != 4242)
			fail_msg("'%s': *out written on failure", c->s);
	}
}

static void
test_parse_length(void **state)
{
	tg_money_t v = 7;

	(void)state;
	assert_int_equal(tg_money_parse("", 0, &v), -EINVAL);
	assert_int_equal(tg_money_parse("12345", 0, &v), -EINVAL);
	assert_int_equal(v, 7);
	/* Only len bytes count: no NUL terminator is needed or looked for. */
	assert_int_equal(tg_money_parse("12345", 2, &v), 0);
	assert_int_equal(v, 12000000);
	assert_int_equal(tg_money_parse("1.5xyz", 3, &v), 0);
	assert_int_equal(v, 1500000);
	assert_int_equal(tg_money_parse("1.", 2, &v), -EINVAL);
	/* An embedded NUL inside len is a malformed byte. */
	assert_int_equal(tg_money_parse("1.5\0", 4, &v), -EINVAL);
	assert_int_equal(tg_money_parse("\0", 1, &v), -EINVAL);
	assert_int_equal(tg_money_parse(NULL, 0, &v), -EINVAL);
}

struct format_case {
	tg_money_t v;
	const char *s;
};

static const struct format_case format_cases[] = {
    {0, "0"},
    {1, "0.000001"},
    {-1, "-0.000001"},
    {10, "0.00001"},
    {125, "0.000125"},
    {-125, "-0.000125"},
    {100000, "0.1"},
    {999999, "0.999999"},
    {1000000, "1"},
    {-1000000, "-1"},
    {1000001, "1.000001"},
    {1234567, "1.234567"},
    {10000000, "10"},
    {10500000, "10.5"},
    {-10500000, "-10.5"},
    {12000, "0.012"},
    {INT64_MAX, "9223372036854.775807"},
    {-INT64_MAX, "-9223372036854.775807"},
    {INT64_MIN, "-9223372036854.775808"},
    {9223372036854000000, "9223372036854"},
};

static void
test_format_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(format_cases) / sizeof(format_cases[0]); i++) {
		char buf[TG_MONEY_STR_MAX];
		size_t n;

		memset(buf, 'x', sizeof(buf));
		n = tg_money_format(format_cases[i].v, buf);
		assert_string_equal(buf, format_cases[i].s);
		assert_int_equal(n, strlen(format_cases[i].s));
	}
}

/* parse(format(v)) == v and the text is canonical, over a spread of values. */
static void
check_round_trip(tg_money_t v)
{
	char buf[TG_MONEY_STR_MAX];
	tg_money_t back = 0;
	size_t n = tg_money_format(v, buf);

	assert_true(n < TG_MONEY_STR_MAX);
	assert_int_equal(n, strlen(buf));
	if (tg_money_parse(buf, n, &back) != 0 || back != v)
		fail_msg("%lld -> '%s' -> %lld", (long long)v, buf, (long long)back);
	/* Canonical: no trailing zero after a point, no point without decimals. */
	if (strchr(buf, '.') != NULL)
		assert_true(buf[n - 1] != '0' && buf[n - 1] != '.');
	/* Minimal: no leading zero before another digit. */
	{
		const char *d = buf[0] == '-' ? buf + 1 : buf;

		assert_false(d[0] == '0' && d[1] >= '0' && d[1] <= '9');
	}
}

static void
test_round_trip(void **state)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;

	(void)state;
	for (tg_money_t v = -2000000; v <= 2000000; v += 7)
		check_round_trip(v);
	for (tg_money_t v = -1000; v <= 1000; v++)
		check_round_trip(v);
	for (int s = 0; s < 63; s++) {
		tg_money_t p = (tg_money_t)1 << s;

		check_round_trip(p);
		check_round_trip(p - 1);
		check_round_trip(-p);
		check_round_trip(-p + 1);
	}
	for (int i = 0; i < 200000; i++) {
		/* xorshift64: spread over the whole range, every digit count */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		check_round_trip((tg_money_t)x);
		check_round_trip((tg_money_t)(x >> (x % 64)));
	}
	check_round_trip(INT64_MAX);
	check_round_trip(INT64_MIN);
	check_round_trip(INT64_MIN + 1);
}

static void
test_canonical_reformat(void **state)
{
	static const char *const in[][2] = {
	    {"007.50", "7.5"}, {"-0", "0"},        {"+3", "3"},
	    {"1.000000", "1"}, {"-0.100", "-0.1"}, {"0000.000001", "0.000001"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		char buf[TG_MONEY_STR_MAX];
		tg_money_t v;

		assert_int_equal(tg_money_parse(in[i][0], strlen(in[i][0]), &v), 0);
		tg_money_format(v, buf);
		assert_string_equal(buf, in[i][1]);
	}
}

static void
test_checked_ops(void **state)
{
	tg_money_t r = 99;

	(void)state;
	assert_true(tg_money_add(1, 2, &r));
	assert_int_equal(r, 3);
	assert_true(tg_money_add(INT64_MAX, 0, &r));
	assert_int_equal(r, INT64_MAX);
	assert_true(tg_money_add(INT64_MAX, INT64_MIN, &r));
	assert_int_equal(r, -1);
	r = 99;
	assert_false(tg_money_add(INT64_MAX, 1, &r));
	assert_false(tg_money_add(INT64_MIN, -1, &r));
	assert_false(tg_money_add(INT64_MAX / 2 + 1, INT64_MAX / 2 + 1, &r));
	assert_int_equal(r, 99);

	assert_true(tg_money_sub(5, 7, &r));
	assert_int_equal(r, -2);
	assert_true(tg_money_sub(-1, INT64_MAX, &r));
	assert_int_equal(r, INT64_MIN);
	r = 99;
	assert_false(tg_money_sub(INT64_MIN, 1, &r));
	assert_false(tg_money_sub(0, INT64_MIN, &r));
	assert_false(tg_money_sub(INT64_MAX, -1, &r));
	assert_false(tg_money_sub(-2, INT64_MAX, &r));
	assert_int_equal(r, 99);

	assert_true(tg_money_mul(1500000, 3, &r));
	assert_int_equal(r, 4500000);
	assert_true(tg_money_mul(-7, 0, &r));
	assert_int_equal(r, 0);
	assert_true(tg_money_mul(INT64_MIN, 1, &r));
	assert_int_equal(r, INT64_MIN);
	assert_true(tg_money_mul(-INT64_MAX, -1, &r));
	assert_int_equal(r, INT64_MAX);
	r = 99;
	assert_false(tg_money_mul(INT64_MIN, -1, &r));
	assert_false(tg_money_mul(INT64_MAX / 2 + 1, 2, &r));
	assert_false(tg_money_mul(INT64_MAX, INT64_MAX, &r));
	assert_false(tg_money_mul(INT64_MIN, 2, &r));
	assert_int_equal(r, 99);
}

static void
test_mul_div_ceil(void **state)
{
	tg_money_t r = 99;

	(void)state;
	assert_true(tg_money_mul_div_ceil(0, 12345, 60, &r));
	assert_int_equal(r, 0);
	assert_true(tg_money_mul_div_ceil(1, 1, 60, &r)); /* 1/60 rounds up to 1 */
	assert_int_equal(r, 1);
	assert_true(tg_money_mul_div_ceil(60, 1, 60, &r));
	assert_int_equal(r, 1);
	assert_true(tg_money_mul_div_ceil(61, 1, 60, &r));
	assert_int_equal(r, 2);
	assert_true(tg_money_mul_div_ceil(7, 10000, 60, &r)); /* 1166.67 */
	assert_int_equal(r, 1167);
	assert_true(tg_money_mul_div_ceil(30, 12000, 60, &r)); /* exact */
	assert_int_equal(r, 6000);
	assert_true(tg_money_mul_div_ceil(INT64_MAX, INT64_MAX, INT64_MAX, &r));
	assert_int_equal(r, INT64_MAX);
	assert_true(tg_money_mul_div_ceil(INT64_MAX, 1, 1, &r));
	assert_int_equal(r, INT64_MAX);
	/* (2^63 - 1) * 60 / 60: the product needs 69 bits, the result fits. */
	assert_true(tg_money_mul_div_ceil(INT64_MAX, 60, 60, &r));
	assert_int_equal(r, INT64_MAX);
	assert_true(tg_money_mul_div_ceil(INT64_MAX, INT64_MAX - 1, INT64_MAX, &r));
	assert_int_equal(r, INT64_MAX - 1);
	r = 99;
	assert_false(tg_money_mul_div_ceil(INT64_MAX, 2, 1, &r));
	assert_false(tg_money_mul_div_ceil(INT64_MAX, INT64_MAX, INT64_MAX - 1, &r));
	assert_int_equal(r, 99);

	/* Against the plain formula where it cannot overflow. */
	for (int64_t a = 0; a < 200; a++)
		for (int64_t b = 0; b < 200; b += 3)
			for (int64_t d = 1; d < 130; d += 7) {
				assert_true(tg_money_mul_div_ceil(a, b, d, &r));
				assert_int_equal(r, (a * b + d - 1) / d);
			}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_table),        cmocka_unit_test(test_parse_length),
	    cmocka_unit_test(test_format_table),       cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_canonical_reformat), cmocka_unit_test(test_checked_ops),
	    cmocka_unit_test(test_mul_div_ceil),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
