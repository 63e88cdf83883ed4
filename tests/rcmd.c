/*
 * rcmd.c - commands over hiredis for the tests that drive a daemon or a
 * redis-server: a reply that is an error, or no reply, fails the test.  And
 * the engine probe the integration tests share (ACCT.GET fields, INFO).
 */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "rcmd.h"

void
it_pathf(char *out, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, cap, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < cap);
}

static redisReply *
vcmd(redisContext *c, const char *fmt, va_list ap)
{
	redisReply *r = redisvCommand(c, fmt, ap);
	if (r == NULL)
		fail_msg("connection failed: %s", c->errstr);
	return r;
}

redisReply *
it_cmd(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = vcmd(c, fmt, ap);
	va_end(ap);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("%s: %s", fmt, r->str);
	return r;
}

void
it_run_cmd(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = vcmd(c, fmt, ap);
	va_end(ap);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("%s: %s", fmt, r->str);
	freeReplyObject(r);
}

long long
it_int_cmd(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	long long v = 0;

	va_start(ap, fmt);
	redisReply *r = vcmd(c, fmt, ap);
	va_end(ap);
	if (r->type == REDIS_REPLY_INTEGER)
		v = r->integer;
	else if (r->type == REDIS_REPLY_STRING)
		v = strtoll(r->str, NULL, 10);
	else if (r->type != REDIS_REPLY_NIL)
		fail_msg("%s: not an integer reply (type %d)", fmt, r->type);
	freeReplyObject(r);
	return v;
}

void
it_error_of(redisContext *c, char *out, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = vcmd(c, fmt, ap);
	va_end(ap);
	snprintf(out, cap, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "");
	freeReplyObject(r);
}

tg_money_t
it_money(const char *s)
{
	tg_money_t v;
	if (tg_money_parse(s, strlen(s), &v) != 0)
		fail_msg("\"%s\" is not an amount", s);
	return v;
}

void
it_acct_field(redisContext *c, uint64_t acct, const char *field, char *out, size_t cap)
{
	redisReply *r = it_cmd(c, "ACCT.GET %llu", (unsigned long long)acct);

	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	for (size_t i = 0; i + 1 < r->elements; i += 2) {
		if (strcmp(r->element[i]->str, field) != 0)
			continue;
		const redisReply *v = r->element[i + 1];
		if (v->type == REDIS_REPLY_INTEGER)
			snprintf(out, cap, "%lld", v->integer);
		else
			snprintf(out, cap, "%s", v->str ? v->str : "");
		freeReplyObject(r);
		return;
	}
	fail_msg("ACCT.GET %llu has no field %s", (unsigned long long)acct, field);
}

tg_money_t
it_acct_money(redisContext *c, uint64_t acct, const char *field)
{
	char s[64];
	it_acct_field(c, acct, field, s, sizeof(s));
	return it_money(s);
}

long long
it_acct_int(redisContext *c, uint64_t acct, const char *field)
{
	char s[64];
	it_acct_field(c, acct, field, s, sizeof(s));
	return strtoll(s, NULL, 10);
}

long long
it_info(redisContext *c, const char *name)
{
	redisReply *r = it_cmd(c, "INFO all");
	char key[64];
	long long v = -1;

	snprintf(key, sizeof(key), "\n%s:", name);
	const char *p = strstr(r->str, key);
	if (p != NULL)
		v = strtoll(p + strlen(key), NULL, 10);
	freeReplyObject(r);
	if (v < 0)
		fail_msg("INFO has no %s", name);
	return v;
}

const char *
it_entry_field(const redisReply *entry, const char *name)
{
	const redisReply *kv = entry->element[1];

	for (size_t i = 0; i + 1 < kv->elements; i += 2)
		if (strcmp(kv->element[i]->str, name) == 0)
			return kv->element[i + 1]->str;
	return "";
}

void
it_first_change(redisContext *c, const char *cmd)
{
	char words[256], *argv[16], *save = NULL;
	int argc = 0;
	snprintf(words, sizeof(words), "%s", cmd);
	for (char *w = strtok_r(words, " ", &save); w != NULL && argc < 16;
	     w = strtok_r(NULL, " ", &save))
		argv[argc++] = w;
	for (int i = 0; i < 500; i++) {
		redisReply *r = redisCommandArgv(c, argc, (const char **)argv, NULL);
		assert_non_null(r);
		bool held = r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOREPLICAS", 10) == 0;
		if (!held && r->type == REDIS_REPLY_ERROR) {
			char why[128];
			snprintf(why, sizeof(why), "%s", r->str);
			freeReplyObject(r);
			fail_msg("%s: %s", cmd, why);
		}
		freeReplyObject(r);
		if (!held)
			return;
		usleep(20000);
	}
	fail_msg("%s: still NOREPLICAS after 10 s", cmd);
}
