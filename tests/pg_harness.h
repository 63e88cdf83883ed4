/*
 * pg_harness.h - a private PostgreSQL cluster for the tests, as
 * tests/redis_harness.c starts a private redis-server: initdb into a fresh
 * temporary directory, pg_ctl on a private port, listening only on a Unix
 * socket in that directory, run as an unprivileged user (the "postgres" user
 * when the tests run as root).  Stopped and removed by pg_stop.
 */
#ifndef TG_PG_HARNESS_H
#define TG_PG_HARNESS_H

#include <stddef.h>
#include <stdint.h>

struct pg_cluster {
	char dir[256];  /* the cluster's directory: data/, the socket, log */
	uint16_t port;  /* names the socket (.s.PGSQL.<port>); no TCP */
	char why[512];  /* when pg_start failed: why */
	char runas[32]; /* the user the server runs as ("" : this one) */
};

/*
 * initdb and start: 0; -ENOENT with why set when PostgreSQL is not installed
 * (the caller skips: exit 77); -1 with why set when it is and the cluster
 * does not start (the caller fails: that is a broken test machine, not a
 * missing package).
 */
int pg_start(struct pg_cluster *c);
/* Stop it (immediate) and remove its directory. */
void pg_stop(struct pg_cluster *c);
/* Stop (crash: immediate; else fast) and start it again on the same port: 0 or -1. */
int pg_restart(struct pg_cluster *c, int crash);
/* Create database name (dropped first if it exists); its URI into uri.  0 or -1. */
int pg_create_db(struct pg_cluster *c, const char *name, char *uri, size_t len);
/* The first column of the first row of sql on uri, as an integer; -1 on any error. */
int64_t pg_query_i64(const char *uri, const char *sql);

/* Run sql (no rows) on uri: 0 or -1. */
int pg_exec(const char *uri, const char *sql);
/*
 * Wait until a session of the cluster is running a statement that starts
 * with prefix (pg_stat_activity, state active), polling as fast as one
 * connection answers.  0 when seen, -1 when not within timeout_ms.
 */
int pg_wait_active(const char *uri, const char *prefix, unsigned timeout_ms);

#endif
