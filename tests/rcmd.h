/*
 * rcmd.h - commands over hiredis for tests (rcmd.c), and the engine probe:
 * what the tests read back from a running tollgated (ACCT.GET fields, INFO
 * counters).  Each fails the test (cmocka) when the connection fails or,
 * except where said, the reply is an error.
 */
#ifndef TG_TEST_RCMD_H
#define TG_TEST_RCMD_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "tg_money.h"

#define IT_FMT(a, b) __attribute__((format(printf, a, b)))

/* snprintf that fails the test instead of cutting a path short. */
void it_pathf(char *out, size_t cap, const char *fmt, ...) IT_FMT(3, 4);
/* A command whose reply must not be an error.  The caller frees it. */
redisReply *it_cmd(redisContext *c, const char *fmt, ...) IT_FMT(2, 3);
/* A command whose reply is ignored (but must not be an error). */
void it_run_cmd(redisContext *c, const char *fmt, ...) IT_FMT(2, 3);
/* An integer reply (a nil counts as 0; a string is read as a number). */
long long it_int_cmd(redisContext *c, const char *fmt, ...) IT_FMT(2, 3);
/*
 * The error a command got into out ("" when it succeeded).  No format
 * attribute: a whole command may be passed as fmt (hiredis splits a format at
 * its spaces, never an argument), as long as it has no '%'.
 */
void it_error_of(redisContext *c, char *out, size_t cap, const char *fmt, ...);

/* ---- the engine probe: c is a connection to tollgated ---- */

/* An amount as text ("12.5"); the test fails on anything else. */
tg_money_t it_money(const char *s);
/* Field of ACCT.GET acct as text into out (an integer printed); the test fails without it. */
void it_acct_field(redisContext *c, uint64_t acct, const char *field, char *out, size_t cap);
/* An amount field of ACCT.GET acct ("balance", "reserved", ...). */
tg_money_t it_acct_money(redisContext *c, uint64_t acct, const char *field);
/* A number field of ACCT.GET acct. */
long long it_acct_int(redisContext *c, uint64_t acct, const char *field);
/* The value of field name of a stream entry (an [id, [f, v, ...]] pair, as XRANGE gives), or "". */
const char *it_entry_field(const redisReply *entry, const char *name);
/* The counter name of INFO all; the test fails when INFO has none. */
long long it_info(redisContext *c, const char *name);

/*
 * Send cmd (words split at spaces) until it is taken: with
 * min-replicas-to-write a primary refuses changes (NOREPLICAS) until its
 * replicas stream; the test fails after 10 s of that, or on any other error.
 */
void it_first_change(redisContext *c, const char *cmd);

#endif
