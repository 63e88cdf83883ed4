/*
 * pg_harness.c - a private PostgreSQL cluster for the tests (pg_harness.h).
 *
 * PostgreSQL refuses to run as root, so a root test runs initdb and pg_ctl
 * through runuser as the "postgres" user that Debian's package creates, in a
 * directory it owns.  The server listens on a Unix socket in that directory
 * only (listen_addresses ''), with trust authentication for the one local
 * user: nothing outside the test can reach it.
 */
#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pg_harness.h"

/* A program of PostgreSQL's bin directory: on PATH, else Debian's versioned directory. */
static int
pg_bin(const char *name, char *out, size_t len)
{
	static const char *const dirs[] = {"/usr/local/bin", "/usr/bin"};
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(out, len, "%s/%s", dirs[i], name);
		if (access(out, X_OK) == 0)
			return 0;
	}
	DIR *d = opendir("/usr/lib/postgresql");
	struct dirent *e;
	int rc = -1;
	while (d != NULL && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(out, len, "/usr/lib/postgresql/%s/bin/%s", e->d_name, name);
		if (access(out, X_OK) == 0) {
			rc = 0;
			break;
		}
	}
	if (d != NULL)
		closedir(d);
	return rc;
}

/* Run argv (as c->runas when set), its output to the cluster's log.  Exit status or -1. */
static int
run(struct pg_cluster *c, const char *const *argv)
{
	const char *full[32];
	size_t n = 0;
	if (c->runas[0] != '\0') {
		full[n++] = "/usr/sbin/runuser";
		full[n++] = "-u";
		full[n++] = c->runas;
		full[n++] = "--";
	}
	for (size_t i = 0; argv[i] != NULL && n < 31; i++)
		full[n++] = argv[i];
	full[n] = NULL;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		char log[300];
		snprintf(log, sizeof(log), "%s/harness.log", c->dir);
		if (freopen(log, "a", stdout) == NULL || freopen(log, "a", stderr) == NULL)
			_exit(126);
		execv(full[0], (char *const *)full);
		_exit(127);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static int
ctl_start(struct pg_cluster *c)
{
	char ctl[300], data[300], log[300], opts[600];
	if (pg_bin("pg_ctl", ctl, sizeof(ctl)) != 0)
		return -1;
	snprintf(data, sizeof(data), "%s/data", c->dir);
	snprintf(log, sizeof(log), "%s/server.log", c->dir);
	snprintf(opts, sizeof(opts), "-k %s -p %u -c listen_addresses='' -c max_connections=40",
	         c->dir, c->port);
	const char *argv[] = {ctl,  "-D", data, "-l", log,     "-w",
	                      "-t", "60", "-o", opts, "start", NULL};
	return run(c, argv) == 0 ? 0 : -1;
}

static int
ctl_stop(struct pg_cluster *c, const char *mode)
{
	char ctl[300], data[300];
	if (pg_bin("pg_ctl", ctl, sizeof(ctl)) != 0)
		return -1;
	snprintf(data, sizeof(data), "%s/data", c->dir);
	const char *argv[] = {ctl, "-D", data, "-m", mode, "-w", "stop", NULL};
	return run(c, argv) == 0 ? 0 : -1;
}

/* Why pg_start failed, into c->why. */
__attribute__((format(printf, 2, 3))) static void
why(struct pg_cluster *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
}

int
pg_start(struct pg_cluster *c)
{
	char initdb[300], data[300];

	memset(c, 0, sizeof(*c));
	if (pg_bin("initdb", initdb, sizeof(initdb)) != 0) {
		why(c, "no initdb (install postgresql)");
		return -ENOENT;
	}
	const char *tmp = getenv("TMPDIR");
	snprintf(c->dir, sizeof(c->dir), "%s/tg_pg.XXXXXX", tmp ? tmp : "/tmp");
	if (mkdtemp(c->dir) == NULL) {
		why(c, "mkdtemp: %s", strerror(errno));
		return -1;
	}
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam("postgres");
		if (pw == NULL || chown(c->dir, pw->pw_uid, pw->pw_gid) != 0) {
			why(c, "running as root and no 'postgres' user to run the server as");
			rmdir(c->dir);
			return -1;
		}
		snprintf(c->runas, sizeof(c->runas), "postgres");
	}
	/* Socket names are short: a port from the pid, which no other test of ours takes. */
	c->port = (uint16_t)(20000 + (getpid() * 7 + (unsigned)time(NULL)) % 20000);
	snprintf(data, sizeof(data), "%s/data", c->dir);
	const char *argv[] = {initdb, "-D", data,   "-A",        "trust", "-U",
	                      "tg",   "-E", "UTF8", "--no-sync", NULL};
	if (run(c, argv) != 0 || ctl_start(c) != 0) {
		why(c, "initdb or pg_ctl start failed: see %s/harness.log", c->dir);
		return -1;
	}
	return 0;
}

void
pg_stop(struct pg_cluster *c)
{
	char cmd[400];
	ctl_stop(c, "immediate");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "pg_harness: could not remove %s\n", c->dir);
}

int
pg_restart(struct pg_cluster *c, int crash)
{
	if (ctl_stop(c, crash ? "immediate" : "fast") != 0)
		return -1;
	struct timespec ts = {0, 300 * 1000000L};
	nanosleep(&ts, NULL);
	return ctl_start(c);
}

static void
uri_of(const struct pg_cluster *c, const char *db, char *uri, size_t len)
{
	snprintf(uri, len, "postgresql:///%s?host=%s&port=%u&user=tg", db, c->dir, c->port);
}

int
pg_create_db(struct pg_cluster *c, const char *name, char *uri, size_t len)
{
	char admin[400], sql[200];
	uri_of(c, "postgres", admin, sizeof(admin));
	PGconn *k = PQconnectdb(admin);
	int rc = -1;
	if (PQstatus(k) == CONNECTION_OK) {
		snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
		PQclear(PQexec(k, sql));
		snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
		PGresult *r = PQexec(k, sql);
		rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -1;
		if (rc != 0)
			fprintf(stderr, "pg_harness: %s", PQresultErrorMessage(r));
		PQclear(r);
	} else {
		fprintf(stderr, "pg_harness: %s", PQerrorMessage(k));
	}
	PQfinish(k);
	uri_of(c, name, uri, len);
	return rc;
}

int64_t
pg_query_i64(const char *uri, const char *sql)
{
	PGconn *k = PQconnectdb(uri);
	int64_t v = -1;
	if (PQstatus(k) == CONNECTION_OK) {
		PGresult *r = PQexec(k, sql);
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 &&
		    !PQgetisnull(r, 0, 0))
			v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		PQclear(r);
	}
	PQfinish(k);
	return v;
}

int
pg_exec(const char *uri, const char *sql)
{
	PGconn *k = PQconnectdb(uri);
	int rc = -1;
	if (PQstatus(k) == CONNECTION_OK) {
		PGresult *r = PQexec(k, sql);
		rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -1;
		PQclear(r);
	}
	PQfinish(k);
	return rc;
}

int
pg_wait_active(const char *uri, const char *prefix, unsigned timeout_ms)
{
	char like[200];
	struct timespec t0, t;
	PGconn *k = PQconnectdb(uri);
	int rc = -1;

	snprintf(like, sizeof(like), "%s%%", prefix);
	const char *p[] = {like};
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (rc != 0 && PQstatus(k) == CONNECTION_OK) {
		PGresult *r = PQexecParams(k,
		                           "SELECT count(*) FROM pg_stat_activity"
		                           " WHERE state = 'active' AND query LIKE $1",
		                           1, NULL, p, NULL, NULL, 0);
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
		    atoi(PQgetvalue(r, 0, 0)) > 0)
			rc = 0;
		PQclear(r);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >
		    (long)timeout_ms)
			break;
	}
	PQfinish(k);
	return rc;
}
