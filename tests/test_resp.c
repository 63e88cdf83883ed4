/*
 * test_resp.c - unit tests of the RESP parser and the reply writers.
 *
 * Every buffer handed to the parser is a heap block of exactly the bytes under
 * test, so a sanitizer build catches any read past len.  Randomness comes
 * from a fixed-seed xorshift generator: a failure replays identically.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_assert.h"
#include "tg_resp.h"

/* A string literal as (pointer, length), embedded NULs included. */
#define S(lit) lit, (sizeof(lit) - 1)
/* A max_req that no test frame reaches. */
#define NO_CAP ((size_t)1 << 20)

static const char e_mbulk[] = "ERR Protocol error: invalid multibulk length";
static const char e_too_many[] = "ERR Protocol error: too many arguments";
static const char e_bulk[] = "ERR Protocol error: invalid bulk length";
static const char e_dollar[] = "ERR Protocol error: expected '$'";
static const char e_crlf[] = "ERR Protocol error: expected CRLF after bulk data";
static const char e_large[] = "ERR Protocol error: request too large";
static const char e_nul[] = "ERR Protocol error: NUL byte in inline request";
static const char e_cr[] = "ERR Protocol error: CR not followed by LF in inline request";
static const char e_quotes[] = "ERR Protocol error: unbalanced quotes in request";
static const char e_escape[] = "ERR Protocol error: backslash in a quoted inline argument";
static const char e_arg_long[] = "ERR Protocol error: inline argument too long";

/* malloc, or stop: a test without memory has nothing to say. */
static void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		abort();
	return p;
}

/*
 * A heap copy of exactly n bytes (ASan then reports any read past it).  An
 * empty copy still gets its one byte written: the parser is handed a buffer
 * it may not read, but an optimizer that inlines this cannot know that and
 * warns that it may be read uninitialized.
 */
static char *
dup_exact(const char *s, size_t n)
{
	char *p = xmalloc(n);

	if (n)
		memcpy(p, s, n);
	else
		p[0] = '\0';
	return p;
}

/* Whether [p, p+n) lies inside [lo, lo+lon), compared as integers. */
static int
inside(const char *p, size_t n, const char *lo, size_t lon)
{
	uintptr_t a = (uintptr_t)p, b = (uintptr_t)lo;

	return a >= b && a - b <= lon && n <= lon - (a - b);
}

/* What must hold after any call, whatever the input. */
static void
check_result(const char *buf, size_t len, enum tg_parse r, const struct tg_req *req, size_t used,
             const char *err)
{
	switch (r) {
	case TG_PARSE_OK:
		assert_true(used > 0 && used <= len);
		assert_true(req->argc >= 1 && req->argc <= TG_ARGS_MAX);
		for (uint32_t i = 0; i < req->argc; i++) {
			assert_true(req->argv[i].len <= TG_ARG_MAX);
			assert_true(inside(req->argv[i].p, req->argv[i].len, buf, used));
		}
		assert_null(err);
		break;
	case TG_PARSE_EMPTY:
		assert_true(used > 0 && used <= len);
		assert_int_equal(req->argc, 0);
		assert_null(err);
		break;
	case TG_PARSE_MORE:
		assert_int_equal(used, 0);
		assert_int_equal(req->argc, 0);
		assert_null(err);
		break;
	case TG_PARSE_ERROR:
		assert_int_equal(used, 0);
		assert_int_equal(req->argc, 0);
		assert_non_null(err);
		assert_int_equal(strncmp(err, "ERR Protocol error: ", 20), 0);
		assert_null(strpbrk(err, "\r\n"));
		break;
	default:
		fail_msg("unknown result %d", (int)r);
	}
}

struct parsed {
	enum tg_parse r;
	size_t used;
	const char *err;
	struct tg_req req;
	char *buf;
};

/* Parse n bytes of s from an exact-size copy; the caller frees x->buf. */
static void
parse_n(struct parsed *x, const char *s, size_t n, size_t max_req)
{
	x->buf = dup_exact(s, n);
	x->used = 12345;
	x->err = "not set";
	x->r = tg_resp_parse(x->buf, n, max_req, &x->req, &x->used, &x->err);
	check_result(x->buf, n, x->r, &x->req, x->used, x->err);
}

static void
assert_arg(const struct tg_arg *a, const char *p, size_t n)
{
	assert_int_equal(a->len, n);
	assert_memory_equal(a->p, p, n);
}

/* Expect OK, used bytes consumed, and the NULL-terminated list of C-string args. */
static void
expect_ok(const char *s, size_t n, size_t max_req, size_t used, ...)
{
	struct parsed x;
	va_list ap;
	uint32_t i = 0;
	const char *want;

	parse_n(&x, s, n, max_req);
	assert_int_equal(x.r, TG_PARSE_OK);
	assert_int_equal(x.used, used);
	va_start(ap, used);
	while ((want = va_arg(ap, const char *)) != NULL) {
		assert_true(i < x.req.argc);
		assert_arg(&x.req.argv[i], want, strlen(want));
		i++;
	}
	va_end(ap);
	assert_int_equal(x.req.argc, i);
	free(x.buf);
}

static void
expect_err(const char *s, size_t n, size_t max_req, const char *msg)
{
	struct parsed x;

	parse_n(&x, s, n, max_req);
	if (x.r != TG_PARSE_ERROR)
		fail_msg("expected error \"%s\", got result %d", msg, (int)x.r);
	assert_string_equal(x.err, msg);
	free(x.buf);
}

static void
expect_more(const char *s, size_t n, size_t max_req)
{
	struct parsed x;

	parse_n(&x, s, n, max_req);
	assert_int_equal(x.r, TG_PARSE_MORE);
	free(x.buf);
}

static void
expect_empty(const char *s, size_t n, size_t used)
{
	struct parsed x;

	parse_n(&x, s, n, NO_CAP);
	assert_int_equal(x.r, TG_PARSE_EMPTY);
	assert_int_equal(x.used, used);
	free(x.buf);
}

/* ---- multibulk ---- */

static void
test_multibulk_basic(void **state)
{
	(void)state;
	expect_ok(S("*1\r\n$4\r\nPING\r\n"), NO_CAP, 14, "PING", NULL);
	expect_ok(S("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n"), NO_CAP, 31, "SET", "k",
	          "value", NULL);
	/* An empty argument, and a second frame left untouched. */
	expect_ok(S("*2\r\n$4\r\nECHO\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n"), NO_CAP, 20, "ECHO", "",
	          NULL);
	/* Trailing bytes of the next frame, even garbage, do not matter yet. */
	expect_ok(S("*1\r\n$4\r\nPING\r\n\x01\x02"), NO_CAP, 14, "PING", NULL);
}

static void
test_multibulk_binary_safe(void **state)
{
	struct parsed x;

	(void)state;
	parse_n(&x, S("*3\r\n$3\r\na\0b\r\n$4\r\n\r\n\r\n\r\n$5\r\n*1\r\n$\r\n"), NO_CAP);
	assert_int_equal(x.r, TG_PARSE_OK);
	assert_int_equal(x.req.argc, 3);
	assert_arg(&x.req.argv[0], S("a\0b"));
	assert_arg(&x.req.argv[1], S("\r\n\r\n"));
	assert_arg(&x.req.argv[2], S("*1\r\n$"));
	/* Arguments point into the buffer: no copies. */
	assert_ptr_equal(x.req.argv[0].p, x.buf + 8);
	free(x.buf);

	/* Every byte value survives. */
	char full[10 + 256 + 2];
	memcpy(full, "*1\r\n$256\r\n", 10);
	for (int i = 0; i < 256; i++)
		full[10 + i] = (char)i;
	memcpy(full + 266, "\r\n", 2);
	parse_n(&x, full, sizeof full, NO_CAP);
	assert_int_equal(x.r, TG_PARSE_OK);
	assert_int_equal(x.used, sizeof full);
	assert_arg(&x.req.argv[0], full + 10, 256);
	free(x.buf);
}

static void
test_multibulk_limits(void **state)
{
	char *buf = xmalloc(TG_ARG_MAX + 64);
	struct parsed x;
	size_t n;

	(void)state;
	/* The largest argument parses ... */
	n = (size_t)sprintf(buf, "*1\r\n$%d\r\n", TG_ARG_MAX);
	memset(buf + n, 'x', TG_ARG_MAX);
	memcpy(buf + n + TG_ARG_MAX, "\r\n", 2);
	parse_n(&x, buf, n + TG_ARG_MAX + 2, NO_CAP);
	assert_int_equal(x.r, TG_PARSE_OK);
	assert_int_equal(x.req.argv[0].len, TG_ARG_MAX);
	free(x.buf);
	/* ... one byte more is refused on its header, before any data. */
	n = (size_t)sprintf(buf, "*1\r\n$%d\r\n", TG_ARG_MAX + 1);
	expect_err(buf, n, NO_CAP, e_bulk);
	expect_err(buf, n - 2, NO_CAP, e_bulk);

	/* The most arguments parse; one more is refused on the count alone. */
	n = (size_t)sprintf(buf, "*%d\r\n", TG_ARGS_MAX);
	for (int i = 0; i < TG_ARGS_MAX; i++)
		n += (size_t)sprintf(buf + n, "$1\r\n%c\r\n", 'a' + i % 26);
	parse_n(&x, buf, n, NO_CAP);
	assert_int_equal(x.r, TG_PARSE_OK);
	assert_int_equal(x.req.argc, TG_ARGS_MAX);
	assert_int_equal(x.used, n);
	for (int i = 0; i < TG_ARGS_MAX; i++)
		assert_int_equal(x.req.argv[i].p[0], 'a' + i % 26);
	free(x.buf);
	n = (size_t)sprintf(buf, "*%d\r\n", TG_ARGS_MAX + 1);
	expect_err(buf, n, NO_CAP, e_too_many);
	free(buf);
}

static void
test_multibulk_empty(void **state)
{
	(void)state;
	expect_empty(S("*0\r\n"), 4);
	expect_empty(S("*-1\r\n"), 5);
	expect_empty(S("*0\r\n*1\r\n$4\r\nPING\r\n"), 4);
	expect_more(S("*0"), NO_CAP);
	expect_more(S("*0\r"), NO_CAP);
	expect_more(S("*-"), NO_CAP);
	expect_more(S("*-1"), NO_CAP);
	expect_more(S("*-1\r"), NO_CAP);
}

static void
test_multibulk_bad_count(void **state)
{
	(void)state;
	expect_err(S("*-5\r\n"), NO_CAP, e_mbulk);
	expect_err(S("*-5"), NO_CAP, e_mbulk);
	expect_err(S("*-0\r\n"), NO_CAP, e_mbulk);
	expect_err(S("*-\r\n"), NO_CAP, e_mbulk);
	expect_err(S("*-1x"), NO_CAP, e_mbulk);
	expect_err(S("*-10\r\n"), NO_CAP, e_mbulk);
	expect_err(S("*abc\r\n"), NO_CAP, e_mbulk);
	expect_err(S("*\r\n"), NO_CAP, e_mbulk);
	expect_err(S("*+1\r\n"), NO_CAP, e_mbulk);
	expect_err(S("*01\r\n"), NO_CAP, e_mbulk);
	expect_err(S("*00\r\n"), NO_CAP, e_mbulk);
	expect_err(S("*1 \r\n"), NO_CAP, e_mbulk);
	expect_err(S("*1\r\r"), NO_CAP, e_mbulk);
	expect_err(S("*1\n$4\r\nPING\r\n"), NO_CAP, e_mbulk);
	/* Too many arguments is known from the digits, before the CRLF. */
	expect_err(S("*99999999\r\n"), NO_CAP, e_too_many);
	expect_err(S("*99999999"), NO_CAP, e_too_many);
	expect_err(S("*99999999999999999999999999\r\n"), NO_CAP, e_too_many);
	expect_err(S("*33\r\n"), NO_CAP, e_too_many);
}

static void
test_multibulk_bad_bulk(void **state)
{
	(void)state;
	expect_err(S("*1\r\n$-5\r\n"), NO_CAP, e_bulk);
	expect_err(S("*1\r\n$-1\r\n"), NO_CAP, e_bulk);
	expect_err(S("*1\r\n$abc\r\n"), NO_CAP, e_bulk);
	expect_err(S("*1\r\n$\r\n"), NO_CAP, e_bulk);
	expect_err(S("*1\r\n$04\r\nPING\r\n"), NO_CAP, e_bulk);
	expect_err(S("*1\r\n$4 \r\nPING\r\n"), NO_CAP, e_bulk);
	expect_err(S("*1\r\n$4\n\nPING\r\n"), NO_CAP, e_bulk);
	expect_err(S("*1\r\n$99999999\r\n"), NO_CAP, e_bulk);
	expect_err(S("*1\r\n$99999999999999999999999\r\n"), NO_CAP, e_bulk);
	expect_err(S("*1\r\n$5000"), NO_CAP, e_bulk);
	/* Something other than '$' where a bulk header belongs. */
	expect_err(S("*1\r\n:4\r\nPING\r\n"), NO_CAP, e_dollar);
	expect_err(S("*1\r\nPING\r\n"), NO_CAP, e_dollar);
	expect_err(S("*1\r\n*1\r\n$4\r\nPING\r\n"), NO_CAP, e_dollar);
	expect_err(S("*2\r\n$4\r\nPING\r\n*1\r\n"), NO_CAP, e_dollar);
	/* The bulk data must be followed by CRLF, exactly at its length. */
	expect_err(S("*1\r\n$4\r\nPINGxx"), NO_CAP, e_crlf);
	expect_err(S("*1\r\n$4\r\nPINGx"), NO_CAP, e_crlf);
	expect_err(S("*1\r\n$4\r\nPING\rx"), NO_CAP, e_crlf);
	expect_err(S("*1\r\n$4\r\nPING\n"), NO_CAP, e_crlf);
	expect_err(S("*1\r\n$3\r\nPING\r\n"), NO_CAP, e_crlf);
	expect_err(S("*1\r\n$5\r\nPING\r\n"), NO_CAP, e_crlf);
}

static void
test_multibulk_long_header(void **state)
{
	char buf[128];

	(void)state;
	/* Header lines of more than 64 bytes and no CRLF never wait for more. */
	buf[0] = '*';
	memset(buf + 1, '1', 70);
	expect_err(buf, 71, NO_CAP, e_too_many);
	memcpy(buf, "*1", 2);
	memset(buf + 2, ' ', 70);
	expect_err(buf, 72, NO_CAP, e_mbulk);
	memcpy(buf, "*1\r\n$", 5);
	memset(buf + 5, '9', 70);
	expect_err(buf, 75, NO_CAP, e_bulk);
	memcpy(buf, "*1\r\n$1", 6);
	memset(buf + 6, 'z', 70);
	expect_err(buf, 76, NO_CAP, e_bulk);
	memcpy(buf, "*1\r\n$0", 6);
	memset(buf + 6, '0', 70);
	expect_err(buf, 76, NO_CAP, e_bulk);
}

static void
test_binary_garbage(void **state)
{
	(void)state;
	expect_err(S("*\xff\xfe\xfd"), NO_CAP, e_mbulk);
	expect_err(S("*1\r\n\xff"), NO_CAP, e_dollar);
	expect_err(S("*1\r\n$\x80"), NO_CAP, e_bulk);
	expect_err(S("\x00\x01\x02\x03"), NO_CAP, e_nul);
	expect_err(S("\x16\x03\x01\x02\x00\x01\x00"), NO_CAP, e_nul); /* a TLS hello */
}

static void
test_multibulk_more(void **state)
{
	(void)state;
	expect_more("", 0, NO_CAP);
	expect_more("", 0, 0);
	expect_more(S("*"), NO_CAP);
	expect_more(S("*1"), NO_CAP);
	expect_more(S("*12"), NO_CAP);
	expect_more(S("*1\r"), NO_CAP);
	expect_more(S("*1\r\n"), NO_CAP);
	expect_more(S("*1\r\n$"), NO_CAP);
	expect_more(S("*1\r\n$4"), NO_CAP);
	expect_more(S("*1\r\n$4\r\nPI"), NO_CAP);
	expect_more(S("*1\r\n$4\r\nPING"), NO_CAP);
	expect_more(S("*1\r\n$4\r\nPING\r"), NO_CAP);
	expect_more(S("*2\r\n$4\r\nPING\r\n"), NO_CAP);
}

static void
test_max_req(void **state)
{
	char buf[200];

	(void)state;
	/* A frame of exactly max_req bytes parses; one byte less of cap refuses it. */
	expect_ok(S("*1\r\n$4\r\nPING\r\n"), 14, 14, "PING", NULL);
	expect_err(S("*1\r\n$4\r\nPING\r\n"), 13, e_large);
	expect_ok(S("PING\r\n"), 6, 6, "PING", NULL);
	expect_err(S("PING\r\n"), 5, e_large);
	expect_empty(S("*0\r\n"), 4);
	expect_err(S("*0\r\n"), 3, e_large);
	/* Known from a bulk header, before its data arrives. */
	expect_err(S("*1\r\n$100\r\n"), 50, e_large);
	expect_err(S("*1\r\n$4\r\n"), 13, e_large);
	expect_more(S("*1\r\n$4\r\n"), 14);
	/* Known from the count: 32 arguments take at least 32 * 6 bytes. */
	expect_err(S("*32\r\n"), 100, e_large);
	expect_more(S("*32\r\n"), 5 + 32 * 6);
	expect_err(S("*2\r\n$1\r\na\r\n"), 16, e_large);
	expect_ok(S("*2\r\n$1\r\na\r\n$0\r\n\r\n"), 17, 17, "a", "", NULL);
	/* Known from the bytes buffered: an incomplete frame as long as the cap. */
	expect_err(S("*1\r\n$4\r\nPING"), 12, e_large);
	expect_err(S("*1"), 2, e_large);
	expect_more(S("*1"), 3);
	/* An inline line longer than max_req without its newline. */
	memset(buf, 'a', 100);
	expect_err(buf, 100, 64, e_large);
	expect_err(buf, 64, 64, e_large);
	expect_more(buf, 63, 64);
	expect_err(S("PINGPING"), 8, e_large);
	expect_more(S("PINGPING"), 9);
	/* A newline past the cap does not rescue the line. */
	memcpy(buf + 70, "\r\n", 2);
	expect_err(buf, 72, 64, e_large);
	expect_err(S("PING\r\n"), 0, e_large);
}

/* ---- inline ---- */

static void
test_inline_basic(void **state)
{
	(void)state;
	expect_ok(S("PING\r\n"), NO_CAP, 6, "PING", NULL);
	expect_ok(S("PING\n"), NO_CAP, 5, "PING", NULL);
	expect_ok(S("  SET\tk   v \t \r\n"), NO_CAP, 16, "SET", "k", "v", NULL);
	expect_ok(S("PING\r\nPING\r\n"), NO_CAP, 6, "PING", NULL);
	/* Protocol type bytes other than '*' start an inline command, as in Redis. */
	expect_ok(S("$4\r\n"), NO_CAP, 4, "$4", NULL);
	expect_ok(S("CALL.AUTH 18446744073709551615 +4915112345 abc@host\r\n"), NO_CAP, 53,
	          "CALL.AUTH", "18446744073709551615", "+4915112345", "abc@host", NULL);
	/* High bytes are ordinary argument bytes. */
	expect_ok(S("ECHO \xc3\xa9t\xc3\xa9\n"), NO_CAP, 11, "ECHO", "\xc3\xa9t\xc3\xa9", NULL);
	expect_more(S("PING"), NO_CAP);
	expect_more(S("PING\r"), NO_CAP);
	expect_more(S(" "), NO_CAP);
}

static void
test_inline_empty(void **state)
{
	(void)state;
	expect_empty(S("\r\n"), 2);
	expect_empty(S("\n"), 1);
	expect_empty(S(" \t \r\n"), 5);
	expect_empty(S("\r\nPING\r\n"), 2);
}

static void
test_inline_quotes(void **state)
{
	(void)state;
	expect_ok(S("SET k \"hello world\"\r\n"), NO_CAP, 21, "SET", "k", "hello world", NULL);
	expect_ok(S("SET k 'a\tb'\n"), NO_CAP, 12, "SET", "k", "a\tb", NULL);
	expect_ok(S("SET k \"\"\n"), NO_CAP, 9, "SET", "k", "", NULL);
	expect_ok(S("SET k 'it\"s'\n"), NO_CAP, 13, "SET", "k", "it\"s", NULL);
	expect_ok(S("\"PING\"\t\n"), NO_CAP, 8, "PING", NULL);
	expect_err(S("SET k \"abc\r\n"), NO_CAP, e_quotes);
	expect_err(S("SET k 'abc\n"), NO_CAP, e_quotes);
	expect_err(S("SET k abc\"\r\n"), NO_CAP, e_quotes);
	expect_err(S("SET k a\"b c\"\r\n"), NO_CAP, e_quotes);
	expect_err(S("SET k \"a\"b\r\n"), NO_CAP, e_quotes);
	expect_err(S("SET k it's\r\n"), NO_CAP, e_quotes);
	expect_err(S("SET k \"a\\\"b\"\r\n"), NO_CAP, e_escape);
	expect_err(S("SET k \"a\\\\\"\r\n"), NO_CAP, e_escape);
	expect_err(S("SET k 'a\\'\r\n"), NO_CAP, e_escape);
	/* Outside quotes a backslash is an ordinary byte. */
	expect_ok(S("SET k a\\b\r\n"), NO_CAP, 11, "SET", "k", "a\\b", NULL);
}

static void
test_inline_bad(void **state)
{
	char buf[TG_ARG_MAX + 64];
	size_t n;

	(void)state;
	expect_err(S("PI\0NG\r\n"), NO_CAP, e_nul);
	expect_err(S("PI\0NG"), NO_CAP, e_nul); /* refused before the newline */
	expect_err(S("SET k \"\0\"\r\n"), NO_CAP, e_nul);
	expect_err(S("PI\rNG\r\n"), NO_CAP, e_cr);
	expect_err(S("PING\r\r\n"), NO_CAP, e_cr);
	expect_err(S("SET k \"a\rb\"\n"), NO_CAP, e_cr);

	/* TG_ARGS_MAX words parse, one more does not. */
	n = 0;
	for (int i = 0; i < TG_ARGS_MAX; i++)
		n += (size_t)sprintf(buf + n, "w%d ", i);
	memcpy(buf + n, "\n", 1);
	{
		struct parsed x;

		parse_n(&x, buf, n + 1, NO_CAP);
		assert_int_equal(x.r, TG_PARSE_OK);
		assert_int_equal(x.req.argc, TG_ARGS_MAX);
		assert_arg(&x.req.argv[TG_ARGS_MAX - 1], S("w31"));
		free(x.buf);
	}
	memcpy(buf + n, "x\n", 2);
	expect_err(buf, n + 2, NO_CAP, e_too_many);

	/* Inline arguments have the same bound as bulk ones. */
	memset(buf, 'x', TG_ARG_MAX);
	buf[TG_ARG_MAX] = '\n';
	{
		struct parsed x;

		parse_n(&x, buf, TG_ARG_MAX + 1, NO_CAP);
		assert_int_equal(x.r, TG_PARSE_OK);
		assert_int_equal(x.req.argv[0].len, TG_ARG_MAX);
		free(x.buf);
	}
	memset(buf, 'x', TG_ARG_MAX + 1);
	buf[TG_ARG_MAX + 1] = '\n';
	expect_err(buf, TG_ARG_MAX + 2, NO_CAP, e_arg_long);
	buf[0] = '"';
	buf[TG_ARG_MAX + 1] = '"';
	buf[TG_ARG_MAX + 2] = '\n';
	{
		struct parsed x;

		parse_n(&x, buf, TG_ARG_MAX + 3, NO_CAP);
		assert_int_equal(x.r, TG_PARSE_OK);
		assert_int_equal(x.used, TG_ARG_MAX + 3);
		assert_int_equal(x.req.argv[0].len, TG_ARG_MAX);
		assert_ptr_equal(x.req.argv[0].p, x.buf + 1);
		free(x.buf);
	}
}

/* ---- pipelining, splits, garbage ---- */

/* Command i of the pipeline: its arguments are "SET", "key:<i>", "v<i * 7>". */
static size_t
emit_cmd(char *dst, unsigned i)
{
	char key[24], val[24];
	int kn = sprintf(key, "key:%u", i), vn = sprintf(val, "v%u", i * 7);

	switch (i % 4) {
	case 0:
		return (size_t)sprintf(dst, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", kn,
		                       key, vn, val);
	case 1:
		return (size_t)sprintf(dst, "SET %s %s\r\n", key, val);
	case 2:
		return (size_t)sprintf(dst, "set\t%s  \"%s\"\n", key, val);
	default:
		/* An empty line or an empty multibulk ahead of the command. */
		return (size_t)sprintf(dst, "%s*3\r\n$3\r\nsEt\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n",
		                       i % 8 == 3 ? "\r\n" : "*0\r\n", kn, key, vn, val);
	}
}

static void
check_cmd(const struct tg_req *req, unsigned i)
{
	char key[24], val[24];
	int kn = sprintf(key, "key:%u", i), vn = sprintf(val, "v%u", i * 7);

	assert_int_equal(req->argc, 3);
	assert_true(tg_arg_is(&req->argv[0], "SET"));
	assert_arg(&req->argv[1], key, (size_t)kn);
	assert_arg(&req->argv[2], val, (size_t)vn);
}

static void
test_pipeline_10k(void **state)
{
	enum { N = 10000 };
	char *src = xmalloc((size_t)N * 64);
	size_t len = 0, off = 0;
	unsigned ok = 0, empty = 0;
	struct tg_req req;
	const char *err;

	(void)state;
	for (unsigned i = 0; i < N; i++)
		len += emit_cmd(src + len, i);
	char *buf = dup_exact(src, len);
	free(src);

	while (off < len) {
		size_t used;
		enum tg_parse r = tg_resp_parse(buf + off, len - off, 256, &req, &used, &err);

		check_result(buf + off, len - off, r, &req, used, err);
		if (r == TG_PARSE_EMPTY) {
			empty++;
		} else {
			assert_int_equal(r, TG_PARSE_OK);
			check_cmd(&req, ok);
			ok++;
		}
		off += used;
	}
	assert_int_equal(off, len);
	assert_int_equal(ok, N);
	assert_int_equal(empty, N / 4);
	/* Nothing left: asking again wants more. */
	{
		size_t used;

		assert_int_equal(tg_resp_parse(buf + len, 0, 256, &req, &used, &err),
		                 TG_PARSE_MORE);
	}
	free(buf);
}

/*
 * Every proper prefix of a frame is MORE and consumes nothing; the whole frame
 * then gives the same result and arguments as parsing it in one piece.
 */
static void
split_everywhere(const char *s, size_t n, enum tg_parse want)
{
	struct parsed whole, part;

	parse_n(&whole, s, n, NO_CAP);
	assert_int_equal(whole.r, want);
	assert_int_equal(whole.used, n);
	for (size_t k = 0; k < n; k++) {
		parse_n(&part, s, k, NO_CAP);
		if (part.r != TG_PARSE_MORE)
			fail_msg("prefix of %zu/%zu bytes: result %d", k, n, (int)part.r);
		free(part.buf);
		/* Also with max_req at exactly the frame's size. */
		parse_n(&part, s, k, n);
		assert_int_equal(part.r, TG_PARSE_MORE);
		free(part.buf);
	}
	parse_n(&part, s, n, n);
	assert_int_equal(part.r, want);
	assert_int_equal(part.used, n);
	assert_int_equal(part.req.argc, whole.req.argc);
	for (uint32_t i = 0; i < whole.req.argc; i++) {
		assert_int_equal(part.req.argv[i].p - part.buf, whole.req.argv[i].p - whole.buf);
		assert_arg(&part.req.argv[i], whole.req.argv[i].p, whole.req.argv[i].len);
	}
	free(part.buf);
	free(whole.buf);
}

static void
test_split_every_byte(void **state)
{
	char *big = xmalloc(TG_ARG_MAX + 64);
	size_t n;

	(void)state;
	split_everywhere(S("*1\r\n$4\r\nPING\r\n"), TG_PARSE_OK);
	split_everywhere(S("*4\r\n$8\r\nCALL.END\r\n$10\r\n1234567890\r\n$12\r\nabc@10.0.0.1\r\n"
	                   "$3\r\n120\r\n"),
	                 TG_PARSE_OK);
	split_everywhere(S("*3\r\n$3\r\na\0b\r\n$0\r\n\r\n$4\r\n\r\n\r\n\r\n"), TG_PARSE_OK);
	split_everywhere(S("PING\r\n"), TG_PARSE_OK);
	split_everywhere(S("  CDR 42\t+4930123 61 \"call id\" \n"), TG_PARSE_OK);
	split_everywhere(S("*0\r\n"), TG_PARSE_EMPTY);
	split_everywhere(S("*-1\r\n"), TG_PARSE_EMPTY);
	split_everywhere(S(" \r\n"), TG_PARSE_EMPTY);
	n = (size_t)sprintf(big, "*2\r\n$3\r\nSET\r\n$%d\r\n", TG_ARG_MAX);
	memset(big + n, 'q', TG_ARG_MAX);
	memcpy(big + n + TG_ARG_MAX, "\r\n", 2);
	split_everywhere(big, n + TG_ARG_MAX + 2, TG_PARSE_OK);
	free(big);
}

/* xorshift64*: deterministic, good enough to shake a parser. */
static uint64_t
rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static unsigned
rng_below(uint64_t *s, unsigned n)
{
	return (unsigned)(rng_next(s) >> 33) % n;
}

static const char *const seeds[] = {
    "*1\r\n$4\r\nPING\r\n",
    "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n",
    "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
    "*0\r\n",
    "*-1\r\n",
    "PING\r\n",
    "SET k \"a b\" 'c'\n",
    "\r\n",
    "*1\r\n$4\r\nPING\r\nPING\r\n*0\r\n",
};

static void
test_random_garbage(void **state)
{
	static const char alphabet[] = "*$-0123456789\r\n \t\"'\\PINGabc:+";
	static const size_t caps[] = {0, 1, 6, 14, 64, 4096, NO_CAP};
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	unsigned count[4] = {0, 0, 0, 0};
	char src[256];

	(void)state;
	for (unsigned it = 0; it < 100000; it++) {
		size_t len = 0;

		switch (rng_below(&rng, 3)) {
		case 0: /* uniform bytes */
			len = rng_below(&rng, 96);
			for (size_t i = 0; i < len; i++)
				src[i] = (char)rng_next(&rng);
			break;
		case 1: /* protocol-shaped bytes, NUL included */
			len = rng_below(&rng, 96);
			for (size_t i = 0; i < len; i++)
				src[i] = alphabet[rng_below(&rng, sizeof alphabet)];
			break;
		default: { /* a valid frame, mutated and maybe cut short */
			const char *seed = seeds[rng_below(&rng, TG_ARRAY_LEN(seeds))];
			unsigned edits = rng_below(&rng, 4);

			len = strlen(seed);
			memcpy(src, seed, len);
			for (unsigned e = 0; e < edits && len > 0 && len < sizeof src - 1; e++) {
				size_t at = rng_below(&rng, (unsigned)len);
				char c = rng_below(&rng, 2)
				             ? alphabet[rng_below(&rng, sizeof alphabet)]
				             : (char)rng_next(&rng);

				switch (rng_below(&rng, 3)) {
				case 0:
					src[at] = c;
					break;
				case 1:
					memmove(src + at + 1, src + at, len - at);
					src[at] = c;
					len++;
					break;
				default:
					memmove(src + at, src + at + 1, len - at - 1);
					len--;
					break;
				}
			}
			if (rng_below(&rng, 4) == 0)
				len = rng_below(&rng, (unsigned)len + 1);
			break;
		}
		}

		char *buf = dup_exact(src, len);
		size_t max_req = caps[rng_below(&rng, TG_ARRAY_LEN(caps))];
		size_t off = 0;

		/* Parse the way a connection does: request after request. */
		for (;;) {
			struct tg_req req;
			const char *err = "unset";
			size_t used = 999;
			enum tg_parse r =
			    tg_resp_parse(buf + off, len - off, max_req, &req, &used, &err);

			check_result(buf + off, len - off, r, &req, used, err);
			count[r]++;
			if (r != TG_PARSE_OK && r != TG_PARSE_EMPTY)
				break;
			off += used;
		}
		free(buf);
	}
	/* The loop reached every outcome. */
	for (int r = 0; r < 4; r++)
		assert_true(count[r] > 100);
}

/* ---- writers ---- */

enum wkind { W_STATUS, W_ERROR, W_INT, W_BULK, W_CSTR, W_NIL, W_ARRAY, W_MONEY, W_RAW };

/* One writer call, as data, so a test can replay it against many buffers. */
struct wcall {
	enum wkind kind;
	const char *s, *t;
	size_t n;
	int64_t i;
};

static void
wcall_run(struct tg_out *o, const struct wcall *c)
{
	switch (c->kind) {
	case W_STATUS:
		tg_out_status(o, c->s);
		break;
	case W_ERROR:
		tg_out_error(o, c->s, c->t);
		break;
	case W_INT:
		tg_out_int(o, c->i);
		break;
	case W_BULK:
		tg_out_bulk(o, c->s, c->n);
		break;
	case W_CSTR:
		tg_out_cstr(o, c->s);
		break;
	case W_NIL:
		tg_out_nil(o);
		break;
	case W_ARRAY:
		tg_out_array(o, (uint32_t)c->i);
		break;
	case W_MONEY:
		tg_out_money(o, c->i);
		break;
	case W_RAW:
		tg_out_raw(o, c->s, c->n);
		break;
	}
}

/*
 * The call writes exactly want[0..wn) when it fits; for every smaller room
 * (with and without bytes already in the buffer) it sets overflow and touches
 * nothing.
 */
static void
expect_write(const struct wcall *c, const char *want, size_t wn)
{
	enum { PAD = 16, PRE = 3 };
	struct tg_out o;

	for (size_t pre = 0; pre <= PRE; pre += PRE) {
		for (size_t cap = pre; cap <= pre + wn + 1; cap++) {
			char *b = xmalloc(cap + PAD);

			memset(b, 0xa5, cap + PAD);
			tg_out_init(&o, b, cap);
			if (pre)
				tg_out_raw(&o, "abc", pre);
			assert_int_equal(o.len, pre);
			wcall_run(&o, c);
			if (cap - pre < wn) {
				assert_true(o.overflow);
				assert_int_equal(o.len, pre);
				for (size_t k = pre; k < cap + PAD; k++)
					assert_int_equal((unsigned char)b[k], 0xa5);
			} else {
				assert_false(o.overflow);
				assert_int_equal(o.len, pre + wn);
				assert_memory_equal(b + pre, want, wn);
				for (size_t k = pre + wn; k < cap + PAD; k++)
					assert_int_equal((unsigned char)b[k], 0xa5);
			}
			free(b);
		}
	}
}

#define EXPECT_WRITE(lit, ...) expect_write(&(struct wcall){__VA_ARGS__}, S(lit))

static void
test_out_simple(void **state)
{
	(void)state;
	EXPECT_WRITE("+OK\r\n", .kind = W_STATUS, .s = "OK");
	EXPECT_WRITE("+\r\n", .kind = W_STATUS, .s = "");
	EXPECT_WRITE("+a  b c \r\n", .kind = W_STATUS, .s = "a\r\nb\nc\r");
	EXPECT_WRITE("-BLOCKED balance at or below zero\r\n", .kind = W_ERROR, .s = "BLOCKED",
	             .t = "balance at or below zero");
	EXPECT_WRITE("-NOACCOUNT\r\n", .kind = W_ERROR, .s = "NOACCOUNT", .t = "");
	EXPECT_WRITE("-NOACCOUNT\r\n", .kind = W_ERROR, .s = "NOACCOUNT", .t = NULL);
	EXPECT_WRITE("-ERR bad  -injected  \r\n", .kind = W_ERROR, .s = "ERR",
	             .t = "bad\r\n-injected\r\n");
	EXPECT_WRITE("-E X t\r\n", .kind = W_ERROR, .s = "E\nX", .t = "t");
	EXPECT_WRITE("$-1\r\n", .kind = W_NIL);
	EXPECT_WRITE("*0\r\n", .kind = W_ARRAY, .i = 0);
	EXPECT_WRITE("*26\r\n", .kind = W_ARRAY, .i = 26);
	EXPECT_WRITE("*4294967295\r\n", .kind = W_ARRAY, .i = UINT32_MAX);
	EXPECT_WRITE("+PONG\r\n", .kind = W_RAW, .s = "+PONG\r\n", .n = 7);
	EXPECT_WRITE("", .kind = W_RAW, .s = NULL, .n = 0);
}

static void
test_out_bulk(void **state)
{
	(void)state;
	EXPECT_WRITE("$5\r\nhello\r\n", .kind = W_BULK, .s = "hello", .n = 5);
	EXPECT_WRITE("$0\r\n\r\n", .kind = W_BULK, .s = NULL, .n = 0);
	EXPECT_WRITE("$5\r\na\0\r\nb\r\n", .kind = W_BULK, .s = "a\0\r\nb", .n = 5);
	EXPECT_WRITE("$5\r\nlocal\r\n", .kind = W_CSTR, .s = "local");
	EXPECT_WRITE("$0\r\n\r\n", .kind = W_CSTR, .s = "");

	/* Ten thousand bytes: a multi-digit length. */
	char *p = xmalloc(10000), *want = xmalloc(10000 + 16);
	struct wcall c = {.kind = W_BULK, .n = 10000};

	memset(p, 'z', 10000);
	memcpy(want, "$10000\r\n", 8);
	memcpy(want + 8, p, 10000);
	memcpy(want + 10008, "\r\n", 2);
	c.s = p;
	{
		char *b = xmalloc(10010);
		struct tg_out o;

		tg_out_init(&o, b, 10010);
		wcall_run(&o, &c);
		assert_false(o.overflow);
		assert_int_equal(o.len, 10010);
		assert_memory_equal(b, want, 10010);
		tg_out_init(&o, b, 10009);
		wcall_run(&o, &c);
		assert_true(o.overflow);
		assert_int_equal(o.len, 0);
		free(b);
	}
	/* A length that would wrap size_t is an overflow, not a write. */
	{
		char b[8];
		struct tg_out o;

		tg_out_init(&o, b, sizeof b);
		tg_out_bulk(&o, p, SIZE_MAX - 3);
		assert_true(o.overflow);
		assert_int_equal(o.len, 0);
	}
	free(p);
	free(want);
}

static void
test_out_int(void **state)
{
	char want[32];

	(void)state;
	EXPECT_WRITE(":0\r\n", .kind = W_INT, .i = 0);
	EXPECT_WRITE(":-1\r\n", .kind = W_INT, .i = -1);
	EXPECT_WRITE(":3600\r\n", .kind = W_INT, .i = 3600);
	EXPECT_WRITE(":9223372036854775807\r\n", .kind = W_INT, .i = INT64_MAX);
	EXPECT_WRITE(":-9223372036854775808\r\n", .kind = W_INT, .i = INT64_MIN);
	EXPECT_WRITE(":-9223372036854775807\r\n", .kind = W_INT, .i = INT64_MIN + 1);
	/* Around every power of ten, both signs, against the C library. */
	for (int64_t p10 = 1;; p10 *= 10) {
		const int64_t vals[] = {p10, p10 - 1, p10 + 1, -p10, -(p10 - 1), -(p10 + 1)};

		for (size_t j = 0; j < TG_ARRAY_LEN(vals); j++) {
			int n = snprintf(want, sizeof want, ":%" PRId64 "\r\n", vals[j]);

			expect_write(&(struct wcall){.kind = W_INT, .i = vals[j]}, want, (size_t)n);
		}
		if (p10 > INT64_MAX / 10)
			break;
	}
	/* And a deterministic spread of values. */
	uint64_t rng = 12345;
	for (int it = 0; it < 20000; it++) {
		int64_t v = (int64_t)rng_next(&rng) >> rng_below(&rng, 64);
		char b[32];
		struct tg_out o;
		int n = snprintf(want, sizeof want, ":%" PRId64 "\r\n", v);

		tg_out_init(&o, b, sizeof b);
		tg_out_int(&o, v);
		assert_int_equal(o.len, (size_t)n);
		assert_memory_equal(b, want, (size_t)n);
	}
}

static void
test_out_money(void **state)
{
	(void)state;
	EXPECT_WRITE("$1\r\n0\r\n", .kind = W_MONEY, .i = 0);
	EXPECT_WRITE("$2\r\n10\r\n", .kind = W_MONEY, .i = 10 * TG_MONEY_SCALE);
	EXPECT_WRITE("$4\r\n12.5\r\n", .kind = W_MONEY, .i = 12500000);
	EXPECT_WRITE("$9\r\n-0.000125\r\n", .kind = W_MONEY, .i = -125);
	EXPECT_WRITE("$21\r\n-9223372036854.775808\r\n", .kind = W_MONEY, .i = INT64_MIN);
	EXPECT_WRITE("$20\r\n9223372036854.775807\r\n", .kind = W_MONEY, .i = INT64_MAX);
}

static void
test_out_overflow_sticky(void **state)
{
	char b[16];
	struct tg_out o;

	(void)state;
	tg_out_init(&o, b, sizeof b);
	tg_out_status(&o, "OK");
	assert_int_equal(o.len, 5);
	tg_out_cstr(&o, "too long for the rest");
	assert_true(o.overflow);
	assert_int_equal(o.len, 5);
	/* A later reply that would fit is dropped too: it would answer the wrong request. */
	tg_out_int(&o, 1);
	tg_out_nil(&o);
	tg_out_raw(&o, "x", 1);
	assert_int_equal(o.len, 5);
	assert_true(o.overflow);
	/* Once the owner has dealt with it, writing resumes. */
	o.overflow = false;
	tg_out_int(&o, 1);
	assert_int_equal(o.len, 9);
	assert_memory_equal(b, "+OK\r\n:1\r\n", 9);
	/* A zero-sized buffer overflows on the first byte and never writes. */
	tg_out_init(&o, NULL, 0);
	tg_out_raw(&o, NULL, 0);
	assert_false(o.overflow);
	tg_out_nil(&o);
	assert_true(o.overflow);
	assert_int_equal(o.len, 0);
}

/* Writers build requests too: what they write, the parser reads back. */
static void
test_round_trip(void **state)
{
	char b[4096];
	struct tg_out o;
	struct parsed x;
	static const char bin[] = "a\0\r\n*1\r\n$-1";

	(void)state;
	tg_out_init(&o, b, sizeof b);
	tg_out_array(&o, 6);
	tg_out_cstr(&o, "ACCT.CREDIT");
	tg_out_bulk(&o, S("18446744073709551615"));
	tg_out_money(&o, -125);
	tg_out_bulk(&o, bin, sizeof bin - 1);
	tg_out_bulk(&o, NULL, 0);
	tg_out_money(&o, INT64_MIN);
	assert_false(o.overflow);
	parse_n(&x, b, o.len, NO_CAP);
	assert_int_equal(x.r, TG_PARSE_OK);
	assert_int_equal(x.used, o.len);
	assert_int_equal(x.req.argc, 6);
	assert_arg(&x.req.argv[0], S("ACCT.CREDIT"));
	assert_arg(&x.req.argv[1], S("18446744073709551615"));
	assert_arg(&x.req.argv[2], S("-0.000125"));
	assert_arg(&x.req.argv[3], bin, sizeof bin - 1);
	assert_arg(&x.req.argv[4], "", 0);
	assert_arg(&x.req.argv[5], S("-9223372036854.775808"));
	{
		uint64_t v;

		assert_true(tg_arg_u64(&x.req.argv[1], &v));
		assert_true(v == UINT64_MAX);
	}
	free(x.buf);

	/* Many requests written back to back are many requests parsed. */
	tg_out_init(&o, b, sizeof b);
	for (uint32_t i = 0; i < 50; i++) {
		tg_out_array(&o, 2);
		tg_out_cstr(&o, "ACCT.GET");
		tg_out_int(&o, i); /* not a bulk: the parser must refuse this one */
	}
	parse_n(&x, b, o.len, NO_CAP);
	assert_int_equal(x.r, TG_PARSE_ERROR);
	assert_string_equal(x.err, e_dollar);
	free(x.buf);

	tg_out_init(&o, b, sizeof b);
	for (uint32_t i = 0; i < TG_ARGS_MAX; i++) {
		char w[16];
		int n = sprintf(w, "%u", i * 1000003u);

		tg_out_array(&o, 2);
		tg_out_cstr(&o, "ACCT.GET");
		tg_out_bulk(&o, w, (size_t)n);
	}
	assert_false(o.overflow);
	{
		size_t off = 0;

		for (uint32_t i = 0; i < TG_ARGS_MAX; i++) {
			uint64_t v;

			parse_n(&x, b + off, o.len - off, NO_CAP);
			assert_int_equal(x.r, TG_PARSE_OK);
			assert_true(tg_arg_is(&x.req.argv[0], "acct.get"));
			assert_true(tg_arg_u64(&x.req.argv[1], &v));
			assert_true(v == (uint64_t)i * 1000003u);
			off += x.used;
			free(x.buf);
		}
		assert_int_equal(off, o.len);
	}
}

/* ---- argument helpers ---- */

static struct tg_arg
arg(const char *p, size_t n)
{
	return (struct tg_arg){.p = p, .len = (uint32_t)n};
}

static void
test_arg_is(void **state)
{
	struct tg_arg a;

	(void)state;
	a = arg(S("PING"));
	assert_true(tg_arg_is(&a, "PING"));
	assert_true(tg_arg_is(&a, "ping"));
	assert_true(tg_arg_is(&a, "PiNg"));
	assert_false(tg_arg_is(&a, "PIN"));
	assert_false(tg_arg_is(&a, "PINGS"));
	assert_false(tg_arg_is(&a, ""));
	assert_false(tg_arg_is(&a, "PONG"));
	a = arg(S("call.auth"));
	assert_true(tg_arg_is(&a, "CALL.AUTH"));
	assert_false(tg_arg_is(&a, "CALL\x0e"
	                           "AUTH")); /* '.' | 0x20 is not a letter fold */
	a = arg("", 0);
	assert_true(tg_arg_is(&a, ""));
	assert_false(tg_arg_is(&a, "a"));
	a = arg(NULL, 0);
	assert_true(tg_arg_is(&a, ""));
	/* A NUL inside the argument never matches the shorter string. */
	a = arg(S("PING\0"));
	assert_false(tg_arg_is(&a, "PING"));
	a = arg(S("PI\0G"));
	assert_false(tg_arg_is(&a, "PI"));
	/* Only ASCII letters fold. */
	a = arg(S("\xc9"));
	assert_false(tg_arg_is(&a, "\xe9"));
	a = arg(S("@[`{"));
	assert_false(tg_arg_is(&a, "`{@["));
	assert_true(tg_arg_is(&a, "@[`{"));
}

static void
expect_u64(const char *s, size_t n, int ok, uint64_t want)
{
	struct tg_arg a = arg(s, n);
	uint64_t v = 777;

	if (ok) {
		assert_true(tg_arg_u64(&a, &v));
		assert_true(v == want);
	} else {
		assert_false(tg_arg_u64(&a, &v));
		assert_true(v == 777); /* untouched */
	}
}

static void
test_arg_u64(void **state)
{
	(void)state;
	expect_u64(S("0"), 1, 0);
	expect_u64(S("7"), 1, 7);
	expect_u64(S("123"), 1, 123);
	expect_u64(S("000000123456"), 1, 123456);
	expect_u64(S("00000000000000000000"), 1, 0);
	expect_u64(S("00000000000000000001"), 1, 1);
	expect_u64(S("18446744073709551615"), 1, UINT64_MAX);
	expect_u64(S("18446744073709551610"), 1, UINT64_MAX - 5);
	expect_u64(S("9999999999999999999"), 1, 9999999999999999999ull);
	expect_u64(S("18446744073709551616"), 0, 0);
	expect_u64(S("18446744073709551620"), 0, 0);
	expect_u64(S("19000000000000000000"), 0, 0);
	expect_u64(S("99999999999999999999"), 0, 0);
	/* Leading zeros are just zeros, however many (a 20-character cap once refused these). */
	expect_u64(S("000000000000000000001"), 1, 1);
	expect_u64(S("0000000000000000000000000000000000000042"), 1, 42);
	expect_u64(S("000000018446744073709551615"), 1, UINT64_MAX);
	expect_u64(S("000000018446744073709551616"), 0, 0);
	expect_u64(S("0000000100000000000000000000"), 0, 0); /* 21 significant digits */
	expect_u64(S("00000000000000000000000000000"), 1, 0);
	expect_u64(S("0000000000000000000000000000x"), 0, 0);
	expect_u64("", 0, 0, 0);
	expect_u64(S("-1"), 0, 0);
	expect_u64(S("+1"), 0, 0);
	expect_u64(S(" 1"), 0, 0);
	expect_u64(S("1 "), 0, 0);
	expect_u64(S("1a"), 0, 0);
	expect_u64(S("0x10"), 0, 0);
	expect_u64(S("1.0"), 0, 0);
	expect_u64(S("12\0"), 0, 0);
	expect_u64(S("/"), 0, 0);
	expect_u64(S(":"), 0, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_multibulk_basic),
	    cmocka_unit_test(test_multibulk_binary_safe),
	    cmocka_unit_test(test_multibulk_limits),
	    cmocka_unit_test(test_multibulk_empty),
	    cmocka_unit_test(test_multibulk_bad_count),
	    cmocka_unit_test(test_multibulk_bad_bulk),
	    cmocka_unit_test(test_multibulk_long_header),
	    cmocka_unit_test(test_binary_garbage),
	    cmocka_unit_test(test_multibulk_more),
	    cmocka_unit_test(test_max_req),
	    cmocka_unit_test(test_inline_basic),
	    cmocka_unit_test(test_inline_empty),
	    cmocka_unit_test(test_inline_quotes),
	    cmocka_unit_test(test_inline_bad),
	    cmocka_unit_test(test_pipeline_10k),
	    cmocka_unit_test(test_split_every_byte),
	    cmocka_unit_test(test_random_garbage),
	    cmocka_unit_test(test_out_simple),
	    cmocka_unit_test(test_out_bulk),
	    cmocka_unit_test(test_out_int),
	    cmocka_unit_test(test_out_money),
	    cmocka_unit_test(test_out_overflow_sticky),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_arg_is),
	    cmocka_unit_test(test_arg_u64),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
