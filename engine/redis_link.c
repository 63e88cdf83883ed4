/*
 * redis_link.c - a publisher's connection to Redis (tg_redis_link.h).
 */
#include "tg_redis_link.h"
#include "tg_clock.h"
#include "tg_log.h"

#define BACKOFF_MIN_MS     100
#define BACKOFF_MAX_MS     5000
#define CONNECT_TIMEOUT_MS 1000
#define COMMAND_TIMEOUT_MS 2000
#define MS                 1000000ull

void
tg_redis_link_backoff(struct tg_redis_link *l)
{
	l->backoff_ms = l->backoff_ms == 0 ? BACKOFF_MIN_MS : l->backoff_ms * 2;
	if (l->backoff_ms > BACKOFF_MAX_MS)
		l->backoff_ms = BACKOFF_MAX_MS;
	l->next_try_ns = tg_mono_ns() + l->backoff_ms * MS;
}

bool
tg_redis_link_connect(struct tg_redis_link *l, const char *host, uint16_t port, const char *who,
                      const char *note)
{
	struct timeval ct = {.tv_sec = CONNECT_TIMEOUT_MS / 1000,
	                     .tv_usec = (CONNECT_TIMEOUT_MS % 1000) * 1000};
	struct timeval rt = {.tv_sec = COMMAND_TIMEOUT_MS / 1000,
	                     .tv_usec = (COMMAND_TIMEOUT_MS % 1000) * 1000};
	redisContext *c = redisConnectWithTimeout(host, port, ct);
	redisReply *rep = NULL;

	if (c != NULL && c->err == 0 && redisSetTimeout(c, rt) == REDIS_OK) {
		redisEnableKeepAlive(c);
		rep = redisCommand(c, "PING");
	}
	if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
		if (!l->down_logged)
			tg_log("%s: cannot reach redis %s:%u (%s): %s", who, host, port,
			       rep         ? rep->str
			       : c == NULL ? "out of memory"
			                   : c->errstr,
			       note);
		l->down_logged = true;
		if (rep != NULL)
			freeReplyObject(rep);
		if (c != NULL)
			redisFree(c);
		tg_redis_link_backoff(l);
		return false;
	}
	freeReplyObject(rep);
	l->redis = c;
	l->down_logged = false;
	l->backoff_ms = 0;
	return true;
}

void
tg_redis_link_drop(struct tg_redis_link *l, const char *host, uint16_t port, const char *who,
                   const char *why, const char *note)
{
	tg_log("%s: lost redis %s:%u (%s): %s", who, host, port, why, note);
	tg_redis_link_close(l);
	l->down_logged = true;
	tg_redis_link_backoff(l);
}

void
tg_redis_link_close(struct tg_redis_link *l)
{
	if (l->redis != NULL)
		redisFree(l->redis);
	l->redis = NULL;
}
