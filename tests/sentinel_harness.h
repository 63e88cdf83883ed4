/*
 * sentinel_harness.h - real `redis-sentinel` processes for integration tests.
 *
 * Starts N sentinels as children of the test, each on 127.0.0.1 on a port
 * nobody listens on, with a generated configuration in a private directory
 * (Sentinel rewrites its own file, so each gets one): they monitor one
 * tollgated as "mymaster" with quorum 2 and a short down-after-milliseconds,
 * and authenticate with auth-pass when the node has requirepass (and
 * auth-user when they have a user of their own).  Children
 * get SIGKILL if the test process dies first.  The binary is
 * `redis-sentinel` on PATH, or REDIS_SENTINEL.  Never asserts.
 */
#ifndef TG_SENTINEL_HARNESS_H
#define TG_SENTINEL_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#include "harness.h"

#define IT_SENTINELS_MAX 5

struct it_sentinel {
	pid_t pid;
	uint16_t port;
	char conf[IT_PATH_MAX];
	char log[IT_PATH_MAX];
};

struct it_sentinel_cfg {
	const char *master_name;   /* "mymaster" when NULL */
	uint16_t master_port;      /* tollgated's port, on 127.0.0.1 */
	unsigned quorum;           /* 2 when 0 */
	unsigned down_after_ms;    /* 1000 when 0 */
	unsigned failover_timeout; /* milliseconds; 10000 when 0 */
	const char *auth_pass;     /* tollgated's requirepass (or auth_user's password), or NULL */
	const char *auth_user;     /* a user of the users file (role admin), or NULL: default */
};

/* Whether a redis-sentinel binary exists (found on PATH or REDIS_SENTINEL). */
int it_sentinel_present(void);
/*
 * Start n sentinels with configurations in dir (sentinel-<i>.conf, their
 * logs sentinel-<i>.log) and return once each answers PING (10 s each).
 * 0, or -1 (all of them stopped, the failing one's log to stderr).
 */
int it_sentinels_start(struct it_sentinel *s, unsigned n, const char *dir,
                       const struct it_sentinel_cfg *cfg);
/* SIGTERM each, wait up to 5 s, then SIGKILL.  Leaves their files in dir. */
void it_sentinels_stop(struct it_sentinel *s, unsigned n);
/* A hiredis connection to one sentinel with 5 s timeouts, or NULL. */
redisContext *it_sentinel_connect(const struct it_sentinel *s);
/*
 * Whether each of the n sentinels lists at least want healthy replicas of
 * group (SENTINEL REPLICAS, flags "slave" alone).
 */
bool it_sentinels_see_replicas(const struct it_sentinel *s, unsigned n, const char *group,
                               unsigned want);
/* Copy a sentinel's log to stderr (when a test fails). */
void it_sentinel_dump(const struct it_sentinel *s);

#endif
