/*
 * fuzz_resp.c - fuzz target for the RESP2 request parser and the reply
 * writers (resp.c).
 *
 * The input is the bytes a client sent on one connection; they are parsed
 * request after request as the server does, until one is incomplete or
 * malformed.  Beyond not crashing or reading past the input, each request
 * must keep the parser's contract: arguments inside the bytes consumed, no
 * more than TG_ARGS_MAX of at most TG_ARG_MAX bytes; a frame parses the same
 * under a larger cap, exactly at its own size, and not one byte below it;
 * every proper prefix of it is incomplete, never an error; a cap on the
 * arguments (tg_resp_parse_args) takes it unchanged when it has no more,
 * refuses it as "too many arguments" otherwise, and turns no incomplete or
 * malformed frame into a request.  Its arguments
 * written back as a request with the reply writers parse to the same bytes,
 * the writers stop all-or-nothing at a small buffer's end, and each reply
 * they write is one well-formed RESP2 value.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "tg_resp.h"

/* The server's default caps (max-request, max-request-noauth). */
#define CAP_BIG   65536
#define CAP_SMALL 256
/* Room for any request written back: every argument at its largest. */
#define OUT_BIG (TG_ARGS_MAX * (TG_ARG_MAX + 32) + 32)

static char out_big[OUT_BIG], out_small[OUT_BIG];

static bool
same_req(const struct tg_req *a, const struct tg_req *b)
{
	if (a->argc != b->argc)
		return false;
	for (uint32_t i = 0; i < a->argc; i++)
		if (a->argv[i].len != b->argv[i].len ||
		    memcmp(a->argv[i].p, b->argv[i].p, a->argv[i].len) != 0)
			return false;
	return true;
}

static const char *last_err;

/* tg_resp_parse_args (max_args 0: tg_resp_parse), checked against its contract. */
static enum tg_parse
parse_args(const char *buf, size_t len, size_t cap, uint32_t max_args, struct tg_req *req,
           size_t *used)
{
	const char *err = (const char *)1;
	enum tg_parse r = max_args ? tg_resp_parse_args(buf, len, cap, max_args, req, used, &err)
	                           : tg_resp_parse(buf, len, cap, req, used, &err);
	uint32_t most = max_args ? max_args : TG_ARGS_MAX;

	switch (r) {
	case TG_PARSE_OK:
	case TG_PARSE_EMPTY:
		FUZZ_CHECK(*used > 0 && *used <= len && *used <= cap && err == NULL);
		FUZZ_CHECK(r == TG_PARSE_OK ? req->argc >= 1 && req->argc <= most : req->argc == 0);
		for (uint32_t i = 0; i < req->argc; i++) {
			const struct tg_arg *a = &req->argv[i];
			FUZZ_CHECK(a->len <= TG_ARG_MAX);
			FUZZ_CHECK(a->p >= buf && a->p + a->len <= buf + *used);
		}
		break;
	case TG_PARSE_MORE:
		FUZZ_CHECK(*used == 0 && err == NULL && req->argc == 0);
		break;
	case TG_PARSE_ERROR:
		FUZZ_CHECK(*used == 0 && err != NULL && req->argc == 0);
		FUZZ_CHECK(strncmp(err, "ERR Protocol error: ", 20) == 0);
		FUZZ_CHECK(strchr(err, '\r') == NULL && strchr(err, '\n') == NULL);
		break;
	default:
		FUZZ_CHECK(!"a result tg_resp.h does not list");
	}
	last_err = err;
	return r;
}

static enum tg_parse
parse(const char *buf, size_t len, size_t cap, struct tg_req *req, size_t *used)
{
	return parse_args(buf, len, cap, 0, req, used);
}

/* Whatever the full parse found (r, req, used), a cap of max_args arguments agrees. */
static void
check_max_args(const char *buf, size_t len, uint32_t max_args, enum tg_parse r,
               const struct tg_req *req, size_t used)
{
	struct tg_req q;
	size_t u;
	enum tg_parse ra = parse_args(buf, len, CAP_BIG, max_args, &q, &u);

	switch (r) {
	case TG_PARSE_OK:
		if (req->argc <= max_args) {
			FUZZ_CHECK(ra == r && u == used && same_req(&q, req));
		} else {
			FUZZ_CHECK(ra == TG_PARSE_ERROR);
			FUZZ_CHECK(strstr(last_err, "too many arguments") != NULL);
		}
		break;
	case TG_PARSE_EMPTY:
		FUZZ_CHECK(ra == r && u == used);
		break;
	case TG_PARSE_MORE:
		FUZZ_CHECK(ra == TG_PARSE_MORE || ra == TG_PARSE_ERROR);
		break;
	case TG_PARSE_ERROR:
		FUZZ_CHECK(ra == TG_PARSE_ERROR);
		break;
	}
}

/* The frame buf[0..used) that parsed as r under the big cap, checked against other caps. */
static void
check_frame(const char *buf, size_t len, size_t used, enum tg_parse r, const struct tg_req *req)
{
	struct tg_req q;
	size_t u;

	/* The noauth cap: the same frame when it fits, else an error; never another reading. */
	enum tg_parse rs = parse(buf, len, CAP_SMALL, &q, &u);
	if (used <= CAP_SMALL)
		FUZZ_CHECK(rs == r && u == used && same_req(&q, req));
	else
		FUZZ_CHECK(rs == TG_PARSE_ERROR);
	/* A cap of exactly the frame's size takes it; one byte less refuses it. */
	FUZZ_CHECK(parse(buf, len, used, &q, &u) == r && u == used && same_req(&q, req));
	FUZZ_CHECK(parse(buf, len, used - 1, &q, &u) == TG_PARSE_ERROR);
	/* No cap on the arguments is the largest one. */
	FUZZ_CHECK(parse_args(buf, len, CAP_BIG, TG_ARGS_MAX, &q, &u) == r && u == used &&
	           same_req(&q, req));
	check_max_args(buf, len, req->argc > 1 ? req->argc - 1 : 1, r, req, used);
	check_max_args(buf, len, req->argc ? req->argc : 1, r, req, used);
	/* Proper prefixes are incomplete: the server waits for more, it never errs early. */
	size_t cuts[] = {1, used / 2, used - 1};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
		if (cuts[i] > 0 && cuts[i] < used)
			FUZZ_CHECK(parse(buf, cuts[i], CAP_BIG, &q, &u) == TG_PARSE_MORE);
}

/* tg_arg_u64 against the contract: 1 or more digits, any leading zeros, fits. */
static void
check_u64(const struct tg_arg *a)
{
	uint64_t v = 0, got = 42;
	bool ok = a->len >= 1;

	for (uint32_t i = 0; ok && i < a->len; i++) {
		unsigned d = (unsigned)(unsigned char)a->p[i] - '0';
		ok = d <= 9 && !__builtin_mul_overflow(v, 10, &v) &&
		     !__builtin_add_overflow(v, d, &v);
	}
	FUZZ_CHECK(tg_arg_u64(a, &got) == ok);
	FUZZ_CHECK(got == (ok ? v : 42));
}

/* The request written back with the writers parses to the same arguments. */
static void
check_writers(const struct tg_req *req, size_t small_cap)
{
	struct tg_out big, small;
	struct tg_req q;
	size_t u;

	tg_out_init(&big, out_big, sizeof(out_big));
	tg_out_init(&small, out_small, small_cap);
	tg_out_array(&big, req->argc);
	tg_out_array(&small, req->argc);
	for (uint32_t i = 0; i < req->argc; i++) {
		tg_out_bulk(&big, req->argv[i].p, req->argv[i].len);
		tg_out_bulk(&small, req->argv[i].p, req->argv[i].len);
	}
	FUZZ_CHECK(!big.overflow);
	FUZZ_CHECK(parse(out_big, big.len, big.len, &q, &u) == TG_PARSE_OK && u == big.len);
	FUZZ_CHECK(same_req(&q, req));
	FUZZ_CHECK(fuzz_resp_reply(out_big, big.len) == big.len);
	/* A small buffer keeps a prefix of whole writes, and says it dropped the rest. */
	FUZZ_CHECK(small.len <= small_cap && memcmp(out_small, out_big, small.len) == 0);
	FUZZ_CHECK(small.overflow == (small.len < big.len));
}

/* One reply per writer, from an argument's bytes: each must be one RESP2 value. */
static void
check_replies(const struct tg_arg *a, size_t cap)
{
	char text[TG_ARG_MAX + 1];
	struct tg_out o;
	tg_money_t m = 0;
	uint64_t v = 0;

	memcpy(text, a->p, a->len);
	text[a->len] = '\0'; /* a C string: up to the first NUL */
	tg_arg_u64(a, &v);
	tg_money_parse(a->p, a->len, &m);
	for (int w = 0; w < 6; w++) {
		tg_out_init(&o, out_small, cap);
		switch (w) {
		case 0:
			tg_out_status(&o, text);
			break;
		case 1:
			tg_out_error(&o, "ERR", text);
			break;
		case 2:
			tg_out_error(&o, text[0] ? text : "ERR", NULL);
			break;
		case 3:
			tg_out_int(&o, (int64_t)v);
			break;
		case 4:
			tg_out_money(&o, m);
			break;
		case 5:
			tg_out_nil(&o);
			break;
		}
		FUZZ_CHECK(o.len <= cap);
		FUZZ_CHECK(o.overflow ? o.len == 0 : fuzz_resp_reply(out_small, o.len) == o.len);
	}
	FUZZ_CHECK(tg_arg_is(a, "PING") == (a->len == 4 && strncasecmp(a->p, "PING", 4) == 0));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	size_t pos = 0;
	unsigned frames = 0;

	while (pos < size) {
		struct tg_req req;
		size_t used;
		enum tg_parse r = parse(buf + pos, size - pos, CAP_BIG, &req, &used);

		/* The cap the server applies before AUTH. */
		check_max_args(buf + pos, size - pos, 3, r, &req, used);
		if (r == TG_PARSE_MORE || r == TG_PARSE_ERROR)
			break;
		/* The deeper checks on the first few frames: the rest only parse. */
		if (frames++ < 4) {
			check_frame(buf + pos, size - pos, used, r, &req);
			if (r == TG_PARSE_OK) {
				check_writers(&req, 1 + (size + used) % 200);
				for (uint32_t i = 0; i < req.argc; i++) {
					check_u64(&req.argv[i]);
					check_replies(&req.argv[i],
					              i == 0 ? 16 : sizeof(out_small));
				}
			}
		}
		pos += used;
	}
	return 0;
}
