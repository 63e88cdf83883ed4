/*
 * tg_redis_link.h - one connection to Redis kept by a publisher thread (the
 * refill publisher, refill.c; the stop and alarm publisher, stops.c): the
 * connect with its PING and timeouts, the back-off after a failure and the
 * log of an outage, written once.  The thread that owns a link is the only
 * one to touch it.
 */
#ifndef TG_REDIS_LINK_H
#define TG_REDIS_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

struct tg_redis_link {
	redisContext *redis;  /* NULL while down */
	bool down_logged;     /* this outage has been logged */
	uint64_t backoff_ms;  /* the last wait: 100 ms doubling to 5 s; 0 after a success */
	uint64_t next_try_ns; /* monotonic: no attempt before */
};

/* A failure: wait longer before the next attempt. */
void tg_redis_link_backoff(struct tg_redis_link *l);
/*
 * Connect to host:port (1 s to connect, 2 s per command, keep-alive) and
 * PING.  true: l->redis is set and the back-off reset.  false: logged once
 * per outage as "<who>: cannot reach redis host:port (why): <note>", and
 * backed off.
 */
bool tg_redis_link_connect(struct tg_redis_link *l, const char *host, uint16_t port,
                           const char *who, const char *note);
/* The connection failed under a command: "<who>: lost redis host:port (why): <note>", backed off.
 */
void tg_redis_link_drop(struct tg_redis_link *l, const char *host, uint16_t port, const char *who,
                        const char *why, const char *note);
/* Close, as at a stop. */
void tg_redis_link_close(struct tg_redis_link *l);

#endif
