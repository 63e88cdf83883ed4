/*
 * redis_harness.h - a real, private redis-server for integration tests.
 *
 * Starts `redis-server` as a child of the test: on 127.0.0.1, on a port
 * nobody else is listening on, with no persistence (--save "" --appendonly
 * no) and its working directory and log in a private temporary directory.
 * The child gets SIGKILL if the test process dies first, so a crashed test
 * leaves no server behind.  The binary is `redis-server` on PATH, or the
 * REDIS_SERVER environment variable.  Never asserts: errors are returned.
 *
 *	struct tg_test_redis r = {0};
 *	if (tg_test_redis_start(&r) == -ENOENT)
 *		return 77;                        (no redis-server: skip)
 *	redisContext *c = tg_test_redis_connect(&r);
 *	...
 *	tg_test_redis_stop(&r);                   (r.port is kept ...)
 *	tg_test_redis_start(&r);                  (... so this restarts it there,
 *	tg_test_redis_stop(&r);                    empty: nothing is persisted)
 */
#ifndef TG_REDIS_HARNESS_H
#define TG_REDIS_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

struct tg_test_redis {
	pid_t pid;     /* the running server, 0 when stopped */
	uint16_t port; /* 0 on the first start: pick a free one; kept by stop */
	char dir[256]; /* private working directory (redis.log), while running */
};

/*
 * Start redis-server and return once it answers PING (within 10 s).  r must
 * be zeroed before the first start; with r->port already set (a stopped
 * server) it starts on that port again.  Returns 0, -ENOENT when no
 * redis-server binary exists (skip the test), or another -errno (the log is
 * copied to stderr).
 */
int tg_test_redis_start(struct tg_test_redis *r);
/*
 * SIGTERM, wait up to 5 s, then SIGKILL; remove the private directory.
 * Keeps r->port so a later start comes back on the same port.  Does
 * nothing when stopped.
 */
void tg_test_redis_stop(struct tg_test_redis *r);
/* A connection with 5 s timeouts, or NULL.  The caller redisFree()s it. */
redisContext *tg_test_redis_connect(const struct tg_test_redis *r);
/*
 * Whether a redis-server can run here (one is started and stopped).  False
 * after saying "redis-server not found: skipping": the test exits 77.
 */
bool tg_test_redis_present(void);

#endif
