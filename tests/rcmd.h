/*
 * rcmd.h - commands over hiredis for tests (rcmd.c).  Each fails the test
 * (cmocka) when the connection fails or, except where said, the reply is
 * an error.
 */
#ifndef TG_TEST_RCMD_H
#define TG_TEST_RCMD_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#define IT_FMT(a, b) __attribute__((format(printf, a, b)))

/* snprintf that fails the test instead of cutting a path short. */
void it_pathf(char *out, size_t cap, const char *fmt, ...) IT_FMT(3, 4);
/* A command whose reply must not be an error.  The caller frees it. */
redisReply *it_cmd(redisContext *c, const char *fmt, ...) IT_FMT(2, 3);
/* A command whose reply is ignored (but must not be an error). */
void it_run_cmd(redisContext *c, const char *fmt, ...) IT_FMT(2, 3);
/* An integer reply (a nil counts as 0; a string is read as a number). */
long long it_int_cmd(redisContext *c, const char *fmt, ...) IT_FMT(2, 3);

#endif
