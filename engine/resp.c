/*
 * resp.c - the Redis protocol (RESP2): request parsing and reply writing.
 *
 * This file owns the wire syntax and nothing else: it turns bytes into an
 * argument vector and replies into bytes, and knows no command.  It runs on
 * every request, on bytes a client controls, so it must never allocate, never
 * copy an argument, never read at or past the length it was given, and never
 * write at or past an output buffer's capacity.  An incomplete frame costs a
 * re-parse from its first byte when more arrives; frames are bounded by
 * max_req, so that is O(frame).
 *
 * Grammar accepted (anything else is TG_PARSE_ERROR):
 *   multibulk  '*' count CRLF, then count times: '$' length CRLF bytes CRLF
 *              count is 1..max_args, at most TG_ARGS_MAX ("*0" and "*-1"
 *              are empty, as in Redis; inline requests have the same
 *              cap), length is 0..TG_ARG_MAX; numbers are plain decimals
 *              with no sign and no leading zero.
 *   inline     a line not starting with '*', ended by LF or CRLF, split on
 *              spaces and tabs.  An argument may be wrapped in double or
 *              single quotes to hold spaces; since arguments point into the
 *              caller's buffer nothing can be unescaped, so a backslash
 *              inside quotes is refused rather than misread.  A quote must
 *              open and close a whole argument.  NUL bytes, and a CR anywhere
 *              but just before the LF, are refused.
 */
#include <string.h>

#include "tg_assert.h"
#include "tg_resp.h"

/*
 * Numbers in headers are parsed into a uint32_t and refused as soon as they
 * pass their bound, so they can never overflow, and a header is never longer
 * than a few bytes: no separate cap on header lines is needed.
 */
_Static_assert(TG_ARG_MAX < UINT32_MAX / 10 - 9, "bulk lengths are parsed in 32 bits");
_Static_assert(TG_ARGS_MAX < UINT32_MAX / 10 - 9, "argument counts are parsed in 32 bits");

/* The smallest bulk argument on the wire: "$0\r\n\r\n". */
#define BULK_MIN 6

static const char err_mbulk[] = "ERR Protocol error: invalid multibulk length";
static const char err_too_many[] = "ERR Protocol error: too many arguments";
static const char err_bulk[] = "ERR Protocol error: invalid bulk length";
static const char err_dollar[] = "ERR Protocol error: expected '$'";
static const char err_crlf[] = "ERR Protocol error: expected CRLF after bulk data";
static const char err_large[] = "ERR Protocol error: request too large";
static const char err_nul[] = "ERR Protocol error: NUL byte in inline request";
static const char err_cr[] = "ERR Protocol error: CR not followed by LF in inline request";
static const char err_quotes[] = "ERR Protocol error: unbalanced quotes in request";
static const char err_escape[] = "ERR Protocol error: backslash in a quoted inline argument";
static const char err_arg_long[] = "ERR Protocol error: inline argument too long";

/* Outcome of one step of the multibulk parser. */
enum step {
	STEP_OK,
	STEP_MORE, /* the bytes so far are a valid prefix */
	STEP_BAD,  /* the bytes so far can never become valid */
	STEP_BIG,  /* a number passed its bound */
};

/*
 * Match the n bytes of lit at buf[pos..len).  STEP_MORE when the bytes present
 * are a proper prefix of lit.  Requires pos <= len.
 */
static enum step
match(const char *buf, size_t len, size_t pos, const char *lit, size_t n)
{
	size_t have = len - pos < n ? len - pos : n;

	/* n is 1 to 4: a library call costs more than the bytes. */
	for (size_t i = 0; i < have; i++)
		if (buf[pos + i] != lit[i])
			return STEP_BAD;
	return have == n ? STEP_OK : STEP_MORE;
}

/*
 * Parse "<decimal>\r\n" at buf[*pos..len): at least one digit, no sign, no
 * leading zero, at most max.  On STEP_OK stores the value and moves *pos past
 * the CRLF; otherwise leaves both alone.  Requires *pos <= len and
 * max < UINT32_MAX / 10 - 9.
 */
static enum step
parse_num(const char *buf, size_t len, size_t *pos, uint32_t max, uint32_t *val)
{
	size_t start = *pos, i = start;
	uint32_t v = 0;
	enum step s;

	for (; i < len; i++) {
		unsigned d = (unsigned)(unsigned char)buf[i] - '0';

		if (d > 9)
			break;
		if (i > start && v == 0)
			return STEP_BAD; /* a leading zero */
		v = v * 10 + d;
		if (v > max)
			return STEP_BIG;
	}
	if (i == len)
		return STEP_MORE;
	if (i == start)
		return STEP_BAD;
	s = match(buf, len, i, "\r\n", 2);
	if (s != STEP_OK)
		return s;
	*val = v;
	*pos = i + 2;
	return STEP_OK;
}

/*
 * The frame is incomplete, so it is at least len + 1 bytes long: MORE, or an
 * error when that already passes max_req.
 */
static enum tg_parse
need_more(size_t len, size_t max_req, const char **err)
{
	if (len >= max_req) {
		*err = err_large;
		return TG_PARSE_ERROR;
	}
	return TG_PARSE_MORE;
}

static enum tg_parse
fail(const char **err, const char *msg)
{
	*err = msg;
	return TG_PARSE_ERROR;
}

/* buf[0] is '*'; max_args <= TG_ARGS_MAX.  Same contract as tg_resp_parse_args. */
static enum tg_parse
parse_multibulk(const char *buf, size_t len, size_t max_req, uint32_t max_args, struct tg_req *req,
                size_t *used, const char **err)
{
	size_t pos = 1;
	uint32_t argc, alen;
	enum step s;

	if (pos < len && buf[pos] == '-') {
		/* "*-1" is a null array; Redis skips it, so do we. */
		s = match(buf, len, pos, "-1\r\n", 4);
		if (s == STEP_MORE)
			return need_more(len, max_req, err);
		if (s == STEP_BAD)
			return fail(err, err_mbulk);
		pos += 4;
		argc = 0;
	} else {
		s = parse_num(buf, len, &pos, max_args, &argc);
		if (s == STEP_MORE)
			return need_more(len, max_req, err);
		if (s == STEP_BIG)
			return fail(err, err_too_many);
		if (s == STEP_BAD)
			return fail(err, err_mbulk);
	}

	for (uint32_t i = 0; i < argc; i++) {
		uint32_t left = argc - i - 1; /* arguments after this one */

		if (pos + (size_t)(left + 1) * BULK_MIN > max_req)
			return fail(err, err_large);
		s = match(buf, len, pos, "$", 1);
		if (s == STEP_MORE)
			return need_more(len, max_req, err);
		if (s == STEP_BAD)
			return fail(err, err_dollar);
		pos++;
		s = parse_num(buf, len, &pos, TG_ARG_MAX, &alen);
		if (s == STEP_MORE)
			return need_more(len, max_req, err);
		if (s != STEP_OK)
			return fail(err, err_bulk);
		if (pos + alen + 2 + (size_t)left * BULK_MIN > max_req)
			return fail(err, err_large);
		if (len - pos < alen)
			return need_more(len, max_req, err);
		req->argv[i].p = buf + pos;
		req->argv[i].len = alen;
		pos += alen;
		s = match(buf, len, pos, "\r\n", 2);
		if (s == STEP_MORE)
			return need_more(len, max_req, err);
		if (s == STEP_BAD)
			return fail(err, err_crlf);
		pos += 2;
	}
	if (pos > max_req)
		return fail(err, err_large);
	req->argc = argc;
	*used = pos;
	return argc ? TG_PARSE_OK : TG_PARSE_EMPTY;
}

static inline bool
is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/*
 * Check one byte of an inline argument: NUL, CR, and (inside quotes) a
 * backslash are refused.  Returns the error or NULL.
 */
static inline const char *
inline_byte_err(char c, bool quoted)
{
	if (c == '\0')
		return err_nul;
	if (c == '\r')
		return err_cr;
	if (c == '\\' && quoted)
		return err_escape;
	if (!quoted && (c == '"' || c == '\''))
		return err_quotes; /* a quote in the middle of a word */
	return NULL;
}

/* buf[0] is not '*'; len > 0; max_args <= TG_ARGS_MAX.  Same contract as tg_resp_parse_args. */
static enum tg_parse
parse_inline(const char *buf, size_t len, size_t max_req, uint32_t max_args, struct tg_req *req,
             size_t *used, const char **err)
{
	size_t scan = len < max_req ? len : max_req;
	const char *nl = memchr(buf, '\n', scan);
	size_t end, i = 0;
	uint32_t argc = 0;

	if (nl == NULL) {
		/* Refuse binary garbage now rather than after max_req bytes of it. */
		if (memchr(buf, '\0', scan) != NULL)
			return fail(err, err_nul);
		return need_more(len, max_req, err);
	}
	end = (size_t)(nl - buf);
	*used = end + 1;
	if (end > 0 && buf[end - 1] == '\r')
		end--;

	for (;;) {
		size_t start, stop;
		const char *e;

		while (i < end && is_blank(buf[i]))
			i++;
		if (i == end)
			break;
		if (argc == max_args)
			return fail(err, err_too_many);
		if (buf[i] == '"' || buf[i] == '\'') {
			char q = buf[i];

			start = ++i;
			for (; i < end && buf[i] != q; i++)
				if ((e = inline_byte_err(buf[i], true)) != NULL)
					return fail(err, e);
			if (i == end)
				return fail(err, err_quotes);
			stop = i++;
			if (i < end && !is_blank(buf[i]))
				return fail(err, err_quotes);
		} else {
			start = i;
			for (; i < end && !is_blank(buf[i]); i++)
				if ((e = inline_byte_err(buf[i], false)) != NULL)
					return fail(err, e);
			stop = i;
		}
		if (stop - start > TG_ARG_MAX)
			return fail(err, err_arg_long);
		req->argv[argc].p = buf + start;
		req->argv[argc].len = (uint32_t)(stop - start);
		argc++;
	}
	req->argc = argc;
	return argc ? TG_PARSE_OK : TG_PARSE_EMPTY;
}

/*
 * Contract: buf[0..len) is never read past len and never written; on OK the
 * arguments point into buf[0..*used).  *used is set (non-zero) on OK and EMPTY
 * and to 0 otherwise; *err is set on ERROR and to NULL otherwise; req->argc is
 * 0 unless OK.
 */
enum tg_parse
tg_resp_parse(const char *buf, size_t len, size_t max_req, struct tg_req *req, size_t *used,
              const char **err)
{
	return tg_resp_parse_args(buf, len, max_req, TG_ARGS_MAX, req, used, err);
}

/* As tg_resp_parse; a count above max_args (clamped to 1..TG_ARGS_MAX) is "too many arguments". */
enum tg_parse
tg_resp_parse_args(const char *buf, size_t len, size_t max_req, uint32_t max_args,
                   struct tg_req *req, size_t *used, const char **err)
{
	enum tg_parse r;

	TG_ASSERT(req != NULL && used != NULL && err != NULL);
	if (max_args == 0 || max_args > TG_ARGS_MAX)
		max_args = TG_ARGS_MAX;
	TG_ASSERT(buf != NULL || len == 0);
	*used = 0;
	*err = NULL;
	req->argc = 0;
	if (len == 0)
		return TG_PARSE_MORE; /* no frame has begun, so none is too large yet */
	if (buf[0] == '*')
		r = parse_multibulk(buf, len, max_req, max_args, req, used, err);
	else
		r = parse_inline(buf, len, max_req, max_args, req, used, err);
	if (r != TG_PARSE_OK && r != TG_PARSE_EMPTY) {
		*used = 0;
		req->argc = 0;
	}
	return r;
}

/*
 * Writers.  Each computes its full size first and writes either all of it or
 * nothing.  Overflow is sticky: once a reply has been dropped, whatever
 * follows would answer the wrong request, so every later write is dropped too
 * until the owner resets the buffer (tg_out_init) or clears the flag.  A
 * caller that needs a multi-part reply to be all-or-nothing saves o->len
 * before it and restores it on overflow.
 */

void
tg_out_init(struct tg_out *o, char *buf, size_t cap)
{
	TG_ASSERT(o != NULL && (buf != NULL || cap == 0));
	o->buf = buf;
	o->len = 0;
	o->cap = cap;
	o->overflow = false;
}

/* a + b, or SIZE_MAX when that wraps: a size no buffer has room for. */
static inline size_t
sat_add(size_t a, size_t b)
{
	return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

/* Whether n more bytes fit; sets overflow when they do not. */
static inline bool
room(struct tg_out *o, size_t n)
{
	if (TG_UNLIKELY(o->overflow || o->cap - o->len < n)) {
		o->overflow = true;
		return false;
	}
	return true;
}

static inline void
put(struct tg_out *o, const void *p, size_t n)
{
	memcpy(o->buf + o->len, p, n);
	o->len += n;
}

static const char digit_pairs[201] = "00010203040506070809"
                                     "10111213141516171819"
                                     "20212223242526272829"
                                     "30313233343536373839"
                                     "40414243444546474849"
                                     "50515253545556575859"
                                     "60616263646566676869"
                                     "70717273747576777879"
                                     "80818283848586878889"
                                     "90919293949596979899";

/* The longest uint64_t in decimal. */
#define U64_DIGITS 20

/*
 * Write v in decimal so that it ends just before end; returns its first byte.
 * Needs U64_DIGITS bytes before end.
 */
static char *
put_u64(char *end, uint64_t v)
{
	char *p = end;

	while (v >= 100) {
		unsigned i = (unsigned)(v % 100) * 2;

		v /= 100;
		p -= 2;
		p[0] = digit_pairs[i];
		p[1] = digit_pairs[i + 1];
	}
	if (v >= 10) {
		p -= 2;
		p[0] = digit_pairs[v * 2];
		p[1] = digit_pairs[v * 2 + 1];
	} else {
		*--p = (char)('0' + v);
	}
	return p;
}

/* A header line: type byte, optional '-', v, CRLF. */
static void
out_header(struct tg_out *o, char type, bool neg, uint64_t v)
{
	char tmp[1 + 1 + U64_DIGITS + 2];
	char *end = tmp + sizeof tmp, *p;

	end[-2] = '\r';
	end[-1] = '\n';
	p = put_u64(end - 2, v);
	if (neg)
		*--p = '-';
	*--p = type;
	if (room(o, (size_t)(end - p)))
		put(o, p, (size_t)(end - p));
}

/* Copy s, a C string, with CR and LF turned into spaces: a line stays a line. */
static void
put_line_safe(struct tg_out *o, const char *s, size_t n)
{
	char *d = o->buf + o->len;

	for (size_t i = 0; i < n; i++)
		d[i] = (s[i] == '\r' || s[i] == '\n') ? ' ' : s[i];
	o->len += n;
}

/* Contract: s is a NUL-terminated string; CR and LF in it become spaces. */
void
tg_out_status(struct tg_out *o, const char *s)
{
	size_t n = strlen(s);

	if (!room(o, sat_add(n, 3)))
		return;
	put(o, "+", 1);
	put_line_safe(o, s, n);
	put(o, "\r\n", 2);
}

/*
 * Contract: code is a non-empty word; text may be NULL or empty, in which
 * case no space follows the code.  CR and LF in either become spaces.
 */
void
tg_out_error(struct tg_out *o, const char *code, const char *text)
{
	size_t nc, nt, need;

	TG_ASSERT(code != NULL && code[0] != '\0');
	nc = strlen(code);
	nt = text ? strlen(text) : 0;
	need = sat_add(sat_add(nc, 3), nt ? sat_add(nt, 1) : 0);
	if (!room(o, need))
		return;
	put(o, "-", 1);
	put_line_safe(o, code, nc);
	if (nt) {
		put(o, " ", 1);
		put_line_safe(o, text, nt);
	}
	put(o, "\r\n", 2);
}

void
tg_out_int(struct tg_out *o, int64_t n)
{
	/* Negate in unsigned arithmetic: -INT64_MIN does not fit an int64_t. */
	uint64_t u = n < 0 ? 0 - (uint64_t)n : (uint64_t)n;

	out_header(o, ':', n < 0, u);
}

/* Contract: p[0..len) is any bytes (p may be NULL when len is 0). */
void
tg_out_bulk(struct tg_out *o, const char *p, size_t len)
{
	char tmp[1 + U64_DIGITS + 2];
	char *end = tmp + sizeof tmp, *h;
	size_t hn;

	end[-2] = '\r';
	end[-1] = '\n';
	h = put_u64(end - 2, len);
	*--h = '$';
	hn = (size_t)(end - h);
	if (!room(o, sat_add(len, hn + 2)))
		return;
	put(o, h, hn);
	if (len)
		put(o, p, len);
	put(o, "\r\n", 2);
}

void
tg_out_cstr(struct tg_out *o, const char *s)
{
	tg_out_bulk(o, s, strlen(s));
}

void
tg_out_nil(struct tg_out *o)
{
	if (room(o, 5))
		put(o, "$-1\r\n", 5);
}

void
tg_out_array(struct tg_out *o, uint32_t n)
{
	out_header(o, '*', false, n);
}

void
tg_out_money(struct tg_out *o, tg_money_t v)
{
	char tmp[TG_MONEY_STR_MAX];
	size_t n = tg_money_format(v, tmp);

	TG_ASSERT(n < TG_MONEY_STR_MAX);
	tg_out_bulk(o, tmp, n);
}

/* Contract: p[0..len) is already valid RESP; it is copied as is. */
void
tg_out_raw(struct tg_out *o, const char *p, size_t len)
{
	if (room(o, len) && len)
		put(o, p, len);
}

static inline unsigned char
ascii_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/*
 * Contract: s is NUL-terminated.  Only ASCII letters fold; an argument holding
 * a NUL byte never equals s.
 */
bool
tg_arg_is(const struct tg_arg *a, const char *s)
{
	const unsigned char *p = (const unsigned char *)a->p;
	const unsigned char *q = (const unsigned char *)s;

	for (uint32_t i = 0; i < a->len; i++) {
		if (q[i] == '\0' || ascii_lower(p[i]) != ascii_lower(q[i]))
			return false;
	}
	return q[a->len] == '\0';
}

/*
 * Contract: 1..20 ASCII digits, leading zeros allowed, no sign or spaces, and
 * a value that fits.  *out is written only on success.
 */
bool
tg_arg_u64(const struct tg_arg *a, uint64_t *out)
{
	return tg_decimal_u64(a->p, a->len, out);
}
