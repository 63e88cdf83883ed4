/*
 * tg_resp.h - the Redis protocol (RESP2): request parsing, reply writing.
 *
 * The parser never allocates and never copies: arguments point into the
 * caller's buffer.  It accepts multibulk requests ("*2\r\n$4\r\nPING\r\n...")
 * and inline ones ("PING\r\n", words split on spaces and tabs), and tells a
 * frame that is merely incomplete (read more) from one that can never parse
 * (reply with the error, then close).  Reply writers append to a bounded
 * buffer and never write past it.
 */
#ifndef TG_RESP_H
#define TG_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_money.h"

/* Arguments in one request, command name included. */
#define TG_ARGS_MAX 32
/* Bytes of one bulk argument. */
#define TG_ARG_MAX 4096

struct tg_arg {
	const char *p;
	uint32_t len;
};

struct tg_req {
	uint32_t argc;
	struct tg_arg argv[TG_ARGS_MAX];
};

enum tg_parse {
	TG_PARSE_OK,    /* one request parsed, *used bytes consumed */
	TG_PARSE_MORE,  /* incomplete: keep the bytes, read more */
	TG_PARSE_EMPTY, /* an empty line or "*0": consumed *used bytes, no request */
	TG_PARSE_ERROR, /* can never parse: reply with *err, then close */
};

/*
 * Parse the first request in buf[0..len).  max_req caps the bytes one request
 * may take (a smaller cap applies before AUTH): a frame longer than that is
 * TG_PARSE_ERROR as soon as it is known to be.  *err is a static string
 * without the leading "-" and trailing CRLF ("ERR Protocol error: ...").
 */
enum tg_parse tg_resp_parse(const char *buf, size_t len, size_t max_req, struct tg_req *req,
                            size_t *used, const char **err);
/*
 * The same with a cap on the arguments (name included): a request with more
 * than max_args is TG_PARSE_ERROR "too many arguments".  max_args 0 or above
 * TG_ARGS_MAX means TG_ARGS_MAX.  The server uses this one, with max-args
 * (before AUTH too: max-request-noauth is what bounds an unauthenticated
 * request).
 */
enum tg_parse tg_resp_parse_args(const char *buf, size_t len, size_t max_req, uint32_t max_args,
                                 struct tg_req *req, size_t *used, const char **err);

/* An output buffer.  Writers that do not fit set overflow and write nothing. */
struct tg_out {
	char *buf;
	size_t len;
	size_t cap;
	bool overflow;
};

void tg_out_init(struct tg_out *o, char *buf, size_t cap);
/* +s */
void tg_out_status(struct tg_out *o, const char *s);
/* -CODE text (code is the first word; text may be empty) */
void tg_out_error(struct tg_out *o, const char *code, const char *text);
/* :n */
void tg_out_int(struct tg_out *o, int64_t n);
/* $len bulk */
void tg_out_bulk(struct tg_out *o, const char *p, size_t len);
void tg_out_cstr(struct tg_out *o, const char *s); /* bulk of a C string */
/* $-1 */
void tg_out_nil(struct tg_out *o);
/* *n: an array header; the n elements follow */
void tg_out_array(struct tg_out *o, uint32_t n);
/* a money amount as a bulk string ("12.5") */
void tg_out_money(struct tg_out *o, tg_money_t v);
/* Raw bytes, already in RESP form. */
void tg_out_raw(struct tg_out *o, const char *p, size_t len);

/* Case-insensitive compare of an argument with a C string. */
bool tg_arg_is(const struct tg_arg *a, const char *s);
/* Argument as an unsigned decimal (no sign, no spaces, fits; leading zeros: tg_decimal_u64). */
bool tg_arg_u64(const struct tg_arg *a, uint64_t *out);

#endif
