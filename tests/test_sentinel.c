/*
 * test_sentinel.c - what Redis Sentinel talks to (docs/HA.md), against the
 * real tollgated and real redis-sentinel processes.
 *
 * Group "cmds": each command Sentinel sends, one test each, on a daemon of
 * its own: INFO replication's format, READONLY on a replica, MULTI/EXEC,
 * CLIENT KILL TYPE normal and pubsub, PUBLISH/SUBSCRIBE with a subscriber
 * that does not read, CONFIG REWRITE across a restart, the replica role.
 * Group "sentinel": three sentinels monitor one tollgated: they find each
 * other through its hello channel, report it as the master, and flag it
 * down once it is killed.
 */
#include <ctype.h>
#include <dirent.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rcmd.h"
#include "sentinel_harness.h"

struct fx {
	char dir[IT_PATH_MAX];
	struct it_daemon d;
	bool running;
	redisContext *c;
	struct it_sentinel s[3];
	unsigned sentinels;
};

static struct fx fx;

static int
setup(void **state)
{
	(void)state;
	memset(&fx, 0, sizeof(fx));
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	return 0;
}

static int
teardown(void **state)
{
	int rc = 0;
	(void)state;
	if (fx.c != NULL)
		redisFree(fx.c);
	it_sentinels_stop(fx.s, fx.sentinels);
	if (fx.running)
		rc = it_stop(&fx.d);
	it_dir_remove(fx.dir);
	/* A clean stop, and no sanitizer report in the daemon's log. */
	assert_int_equal(rc, 0);
	return 0;
}

static void
start(const char *const *flags)
{
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	fx.running = true;
	fx.c = it_connect(&fx.d);
	assert_non_null(fx.c);
}

static redisContext *
conn(void)
{
	redisContext *c = it_connect(&fx.d);
	assert_non_null(c);
	return c;
}

/* The value of "name:" in INFO section into out; false when the line is missing. */
static bool
info_line(redisContext *c, const char *section, const char *name, char *out, size_t cap)
{
	redisReply *r = it_cmd(c, "INFO %s", section);
	char key[96];
	bool found = false;

	assert_int_equal(r->type, REDIS_REPLY_STRING);
	snprintf(key, sizeof(key), "\r\n%s:", name);
	const char *p = strstr(r->str, key);
	if (p == NULL && strncmp(r->str, key + 2, strlen(key + 2)) == 0)
		p = r->str - 2;
	if (p != NULL) {
		p += strlen(key);
		size_t n = strcspn(p, "\r");
		snprintf(out, cap, "%.*s", (int)n, p);
		found = true;
	}
	freeReplyObject(r);
	return found;
}

static void
assert_info(redisContext *c, const char *section, const char *name, const char *want)
{
	char v[256];
	if (!info_line(c, section, name, v, sizeof(v)))
		fail_msg("INFO %s has no %s", section, name);
	if (strcmp(v, want) != 0)
		fail_msg("INFO %s: %s is '%s', want '%s'", section, name, v, want);
}

static bool
is_hex40(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++)
		if (!isxdigit((unsigned char)s[n]) || isupper((unsigned char)s[n]))
			return false;
	return n == 40;
}

static bool
is_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

/* The error of a command whose reply must be one (hiredis argv, no splitting). */
static void
assert_error(redisContext *c, const char *want_prefix, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	assert_non_null(r);
	if (r->type != REDIS_REPLY_ERROR || strncmp(r->str, want_prefix, strlen(want_prefix)) != 0)
		fail_msg("%s: got type %d '%s', want an error starting '%s'", fmt, r->type,
		         r->str ? r->str : "", want_prefix);
	freeReplyObject(r);
}

/* ------------------------------------------------------------------ */
/* INFO replication, ROLE                                             */
/* ------------------------------------------------------------------ */

static void
test_info_replication_primary_format(void **state)
{
	(void)state;
	char v[256], run1[64], run2[64];
	start(NULL);

	/* The section begins exactly as Redis's does, in the same order. */
	redisReply *r = it_cmd(fx.c, "INFO replication");
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_true(strncmp(r->str,
	                    "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
	                    "master_failover_state:no-failover\r\nmaster_replid:",
	                    strlen("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
	                           "master_failover_state:no-failover\r\nmaster_replid:")) == 0);
	assert_null(strstr(r->str, "master_host:"));
	freeReplyObject(r);
	assert_true(info_line(fx.c, "replication", "master_replid", v, sizeof(v)));
	assert_true(is_hex40(v));
	assert_true(info_line(fx.c, "replication", "master_repl_offset", v, sizeof(v)));
	assert_true(is_digits(v));
	/* Sentinel needs run_id in # Server: 40 hex characters, new at every start. */
	assert_true(info_line(fx.c, "server", "run_id", run1, sizeof(run1)));
	assert_true(is_hex40(run1));
	/* INFO and INFO all carry the section too (Sentinel sends a bare INFO). */
	r = it_cmd(fx.c, "INFO");
	assert_non_null(strstr(r->str, "# Replication\r\nrole:master\r\n"));
	assert_non_null(strstr(r->str, "\r\nrun_id:"));
	freeReplyObject(r);
	r = it_cmd(fx.c, "INFO all");
	assert_non_null(strstr(r->str, "# Replication\r\nrole:master\r\n"));
	freeReplyObject(r);

	/* ROLE: ["master", offset, []] */
	r = it_cmd(fx.c, "ROLE");
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 3);
	assert_string_equal(r->element[0]->str, "master");
	assert_int_equal(r->element[1]->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->element[2]->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->element[2]->elements, 0);
	freeReplyObject(r);

	redisFree(fx.c);
	assert_int_equal(it_term(&fx.d), 0);
	assert_int_equal(it_restart(&fx.d, NULL, 0), 0);
	fx.c = conn();
	assert_true(info_line(fx.c, "server", "run_id", run2, sizeof(run2)));
	assert_true(is_hex40(run2));
	assert_string_not_equal(run1, run2);
}

/* ------------------------------------------------------------------ */
/* READONLY on a replica                                              */
/* ------------------------------------------------------------------ */

static void
test_replica_refuses_money_readonly(void **state)
{
	(void)state;
	/* Port 1: nobody answers there, the node stays a replica with its link down. */
	const char *flags[] = {"--replica-of", "127.0.0.1 1", NULL};
	start(flags);

	const char *ro = "READONLY You can't write against a read only replica.";
	redisReply *r = redisCommand(fx.c, "CDR 5 15551234567 60 call-1");
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	assert_string_equal(r->str, ro);
	freeReplyObject(r);
	assert_error(fx.c, "READONLY", "ACCT.SET 5 BALANCE 10");
	assert_error(fx.c, "READONLY", "ACCT.CREDIT 5 10 tx-1");
	assert_error(fx.c, "READONLY", "CALL.AUTH 5 15551234567 c-1");
	assert_error(fx.c, "READONLY", "CALL.UPDATE 5 c-1 30");
	assert_error(fx.c, "READONLY", "CALL.END 5 c-1 30");
	assert_error(fx.c, "READONLY", "ACCT.REFILL.FAILED 5 refill:5:1");
	assert_error(fx.c, "READONLY", "ACCT.REFILL.CLAIM 5 refill:5:1");
	assert_error(fx.c, "READONLY", "ACCT.REFILL.REARM 5");
	assert_error(fx.c, "READONLY", "RATES.RELOAD");
	/* Reads keep working: the account is simply not there. */
	assert_error(fx.c, "NOACCOUNT", "ACCT.GET 5");
	redisReply *p = it_cmd(fx.c, "PING");
	assert_string_equal(p->str, "PONG");
	freeReplyObject(p);

	/* INFO replication as a Redis replica whose link is down. */
	assert_info(fx.c, "replication", "role", "slave");
	assert_info(fx.c, "replication", "master_host", "127.0.0.1");
	assert_info(fx.c, "replication", "master_port", "1");
	assert_info(fx.c, "replication", "master_link_status", "down");
	assert_info(fx.c, "replication", "master_last_io_seconds_ago", "-1");
	assert_info(fx.c, "replication", "master_sync_in_progress", "0");
	assert_info(fx.c, "replication", "slave_priority", "100");
	assert_info(fx.c, "replication", "slave_read_only", "1");
	assert_info(fx.c, "replication", "connected_slaves", "0");
	char v[64];
	assert_true(info_line(fx.c, "replication", "master_link_down_since_seconds", v, sizeof(v)));
	assert_true(is_digits(v));
	assert_true(info_line(fx.c, "replication", "slave_repl_offset", v, sizeof(v)));
	assert_true(is_digits(v));

	/* ROLE: ["slave", host, port, state, offset] */
	r = it_cmd(fx.c, "ROLE");
	assert_int_equal(r->elements, 5);
	assert_string_equal(r->element[0]->str, "slave");
	assert_string_equal(r->element[1]->str, "127.0.0.1");
	assert_int_equal(r->element[2]->integer, 1);
	assert_string_equal(r->element[3]->str, "connect");
	assert_int_equal(r->element[4]->type, REDIS_REPLY_INTEGER);
	freeReplyObject(r);
}

/* ------------------------------------------------------------------ */
/* MULTI / EXEC / DISCARD                                             */
/* ------------------------------------------------------------------ */

static void
expect_status(redisContext *c, const char *cmd, const char *want)
{
	redisReply *r = redisCommand(c, cmd);
	assert_non_null(r);
	if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, want) != 0)
		fail_msg("%s: got type %d '%s', want +%s", cmd, r->type, r->str ? r->str : "",
		         want);
	freeReplyObject(r);
}

static void
test_multi_exec_queues_and_refuses_money(void **state)
{
	(void)state;
	start(NULL);

	expect_status(fx.c, "MULTI", "OK");
	expect_status(fx.c, "PING", "QUEUED");
	expect_status(fx.c, "ECHO hi", "QUEUED");
	expect_status(fx.c, "CLIENT SETNAME txn", "QUEUED");
	redisReply *r = it_cmd(fx.c, "EXEC");
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 3);
	assert_string_equal(r->element[0]->str, "PONG");
	assert_string_equal(r->element[1]->str, "hi");
	assert_string_equal(r->element[2]->str, "OK");
	freeReplyObject(r);
	r = it_cmd(fx.c, "CLIENT GETNAME");
	assert_string_equal(r->str, "txn");
	freeReplyObject(r);

	/* What Sentinel sends to reconfigure a node, in one transaction. */
	expect_status(fx.c, "MULTI", "OK");
	expect_status(fx.c, "SLAVEOF NO ONE", "QUEUED");
	expect_status(fx.c, "CONFIG REWRITE", "QUEUED");
	expect_status(fx.c, "CLIENT KILL TYPE normal", "QUEUED");
	expect_status(fx.c, "CLIENT KILL TYPE pubsub", "QUEUED");
	r = it_cmd(fx.c, "EXEC");
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 4);
	/* No config file: Redis's error, inside the array. */
	assert_int_equal(r->element[1]->type, REDIS_REPLY_ERROR);
	assert_string_equal(r->element[1]->str, "ERR The server is running without a config file");
	assert_int_equal(r->element[2]->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->element[3]->type, REDIS_REPLY_INTEGER);
	freeReplyObject(r);
	/* The caller of CLIENT KILL TYPE normal is not killed. */
	expect_status(fx.c, "PING", "PONG");

	/* Money inside MULTI: refused at once, and EXEC aborts; nothing moved. */
	expect_status(fx.c, "MULTI", "OK");
	assert_error(fx.c, "ERR ACCT.SET cannot run inside MULTI", "ACCT.SET 7 BALANCE 10");
	expect_status(fx.c, "PING", "QUEUED");
	assert_error(fx.c, "EXECABORT Transaction discarded because of previous errors.", "EXEC");
	assert_error(fx.c, "NOACCOUNT", "ACCT.GET 7");
	/* An unknown command while queueing aborts too. */
	expect_status(fx.c, "MULTI", "OK");
	assert_error(fx.c, "ERR unknown command", "NOSUCH");
	assert_error(fx.c, "EXECABORT", "EXEC");

	assert_error(fx.c, "ERR EXEC without MULTI", "EXEC");
	assert_error(fx.c, "ERR DISCARD without MULTI", "DISCARD");
	expect_status(fx.c, "MULTI", "OK");
	assert_error(fx.c, "ERR MULTI calls can not be nested", "MULTI");
	expect_status(fx.c, "ECHO x", "QUEUED");
	expect_status(fx.c, "DISCARD", "OK");
	expect_status(fx.c, "PING", "PONG");
}

/* ------------------------------------------------------------------ */
/* CLIENT                                                             */
/* ------------------------------------------------------------------ */

static bool
alive(redisContext *c)
{
	redisReply *r = redisCommand(c, "PING");
	bool ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
	if (r)
		freeReplyObject(r);
	return ok;
}

static void
test_client_kill_type_normal_closes_others_not_caller(void **state)
{
	(void)state;
	char buf[256];
	int closed = -1;
	start(NULL);

	redisContext *b = conn(), *sub = conn();
	expect_status(b, "CLIENT SETNAME victim", "OK");
	redisReply *r = it_cmd(b, "CLIENT ID");
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	long long b_id = r->integer;
	freeReplyObject(r);
	r = it_cmd(fx.c, "CLIENT ID");
	assert_true(r->integer != b_id);
	freeReplyObject(r);
	/* An idle connection that will send nothing more: the tick must close it. */
	int idle = it_raw_connect(fx.d.port);
	assert_true(idle >= 0);
	assert_int_equal(it_raw_write(idle, "PING\r\n", 6), 0);
	it_raw_read(idle, buf, sizeof(buf), 300, &closed);
	assert_string_equal(buf, "+PONG\r\n");
	r = it_cmd(sub, "SUBSCRIBE news");
	freeReplyObject(r);

	long long killed = it_int_cmd(fx.c, "CLIENT KILL TYPE normal");
	assert_true(killed >= 2); /* b and the idle one, at least */
	size_t n = it_raw_read(idle, buf, sizeof(buf), 2000, &closed);
	assert_int_equal(n, 0);
	assert_int_equal(closed, 1);
	close(idle);
	assert_false(alive(b));
	redisFree(b);
	assert_true(alive(fx.c));
	/* A connection opened after the kill is served. */
	redisContext *d = conn();
	assert_true(alive(d));
	redisFree(d);
	assert_true(it_info(fx.c, "clients_killed") >= 2);

	/* Subscribers are not normal clients: TYPE pubsub closes them. */
	assert_int_equal(it_int_cmd(fx.c, "PUBLISH news still-here"), 1);
	assert_int_equal(it_int_cmd(fx.c, "CLIENT KILL TYPE pubsub"), 1);
	for (int t = 0; t < 50 && it_int_cmd(fx.c, "PUBLISH news gone") != 0; t++)
		it_sleep_ms(20);
	assert_int_equal(it_int_cmd(fx.c, "PUBLISH news gone"), 0);
	assert_int_equal(it_info(fx.c, "pubsub_killed"), 1);
	redisFree(sub);

	assert_int_equal(it_int_cmd(fx.c, "CLIENT KILL TYPE master"), 0);
	assert_error(fx.c, "ERR Unknown client type", "CLIENT KILL TYPE bogus");
	assert_error(fx.c, "ERR only CLIENT KILL TYPE", "CLIENT KILL 127.0.0.1:1");
	assert_error(fx.c, "ERR Client names cannot contain spaces", "CLIENT SETNAME %s", "a b");
	r = it_cmd(fx.c, "CLIENT GETNAME");
	assert_int_equal(r->type, REDIS_REPLY_NIL);
	freeReplyObject(r);
}

/* ------------------------------------------------------------------ */
/* PUBLISH / SUBSCRIBE                                                */
/* ------------------------------------------------------------------ */

static void
expect_push(redisContext *c, const char *kind, const char *a, const char *b)
{
	redisReply *r;
	assert_int_equal(redisGetReply(c, (void **)&r), REDIS_OK);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_string_equal(r->element[0]->str, kind);
	assert_string_equal(r->element[1]->str, a);
	if (b != NULL)
		assert_string_equal(r->element[r->elements - 1]->str, b);
	freeReplyObject(r);
}

/* A subscriber that never reads, with a receive buffer as small as the kernel allows. */
static int
slow_subscriber(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons(port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0), small = 1024;
	char buf[256];
	int closed;
	assert_true(fd >= 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(it_raw_write(fd, "SUBSCRIBE news\r\n", 16), 0);
	it_raw_read(fd, buf, sizeof(buf), 300, &closed);
	assert_string_equal(buf, "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
	return fd;
}

static void
test_publish_two_subscribers_and_a_slow_one(void **state)
{
	(void)state;
	const char *flags[] = {"--subscriber-buffer", "8192", NULL};
	start(flags);

	redisContext *s1 = conn(), *s2 = conn(), *s3 = conn();
	redisReply *r = it_cmd(s1, "SUBSCRIBE news other");
	assert_int_equal(r->elements, 3);
	assert_string_equal(r->element[0]->str, "subscribe");
	assert_string_equal(r->element[1]->str, "news");
	assert_int_equal(r->element[2]->integer, 1);
	freeReplyObject(r);
	expect_push(s1, "subscribe", "other", NULL);
	freeReplyObject(it_cmd(s2, "SUBSCRIBE news"));
	freeReplyObject(it_cmd(s3, "PSUBSCRIBE n*"));

	assert_int_equal(it_int_cmd(fx.c, "PUBLISH news hello"), 3);
	expect_push(s1, "message", "news", "hello");
	expect_push(s2, "message", "news", "hello");
	expect_push(s3, "pmessage", "n*", "hello");
	assert_int_equal(it_int_cmd(fx.c, "PUBLISH nobody x"), 1); /* the pattern */
	expect_push(s3, "pmessage", "n*", "x");
	assert_int_equal(it_int_cmd(fx.c, "PUBLISH zzz x"), 0);

	/* In subscribed mode: PING, UNSUBSCRIBE, and nothing else. */
	redisAppendCommand(s1, "PING");
	expect_push(s1, "pong", "", NULL);
	redisAppendCommand(s1, "UNSUBSCRIBE news");
	expect_push(s1, "unsubscribe", "news", NULL);
	redisAppendCommand(s1, "ACCT.GET 1");
	redisReply *e;
	assert_int_equal(redisGetReply(s1, (void **)&e), REDIS_OK);
	assert_int_equal(e->type, REDIS_REPLY_ERROR);
	assert_non_null(strstr(e->str, "only (P)SUBSCRIBE"));
	freeReplyObject(e);
	assert_int_equal(it_int_cmd(fx.c, "PUBLISH news again"), 2);
	expect_push(s2, "message", "news", "again");
	expect_push(s3, "pmessage", "n*", "again");
	assert_int_equal(it_info(fx.c, "pubsub_clients"), 3);
	redisFree(s1);
	redisFree(s3);

	/*
	 * A subscriber that never reads is dropped once 8 KiB wait for it
	 * (plus what the kernel buffers); the one that reads gets every
	 * message, in order, all along.
	 */
	int slow = slow_subscriber(fx.d.port);
	char msg[1001];
	memset(msg, 'm', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	long long receivers = 2;
	int sent = 0;
	for (; sent < 20000 && receivers == 2; sent++) {
		snprintf(msg, 12, "%010d", sent);
		msg[10] = 'm';
		receivers = it_int_cmd(fx.c, "PUBLISH news %s", msg);
		redisReply *m;
		assert_int_equal(redisGetReply(s2, (void **)&m), REDIS_OK);
		assert_string_equal(m->element[2]->str, msg);
		freeReplyObject(m);
	}
	assert_int_equal(receivers, 1);
	assert_true(sent < 20000);
	assert_int_equal(it_info(fx.c, "pubsub_slow_dropped"), 1);
	/* The slow one's socket is closed: what the kernel held, then EOF. */
	char *drain = malloc(1 << 24);
	int closed = 0;
	it_raw_read(slow, drain, 1 << 24, 3000, &closed);
	free(drain);
	assert_int_equal(closed, 1);
	close(slow);
	assert_int_equal(it_int_cmd(fx.c, "PUBLISH news last"), 1);
	expect_push(s2, "message", "news", "last");
	redisFree(s2);
}

/* ------------------------------------------------------------------ */
/* CONFIG REWRITE                                                     */
/* ------------------------------------------------------------------ */

static void
read_file(const char *path, char *out, size_t cap)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, cap - 1, f);
	out[n] = '\0';
	fclose(f);
}

static void
test_config_rewrite_round_trip(void **state)
{
	(void)state;
	char path[IT_PATH_MAX], text[2048];
	struct stat st;
	static const char orig[] = "# tollgate, written by hand\n"
	                           "idle-timeout 300\n"
	                           "# the primary we follow\n"
	                           "#replica-of 10.1.1.1 6390\n"
	                           "replica-of 10.9.9.9 7000\n"
	                           "\tsnapshot-interval 120\n";

	assert_int_equal(it_file_write(fx.dir, "tollgated.conf", orig, path, sizeof(path)), 0);
	assert_int_equal(chmod(path, 0640), 0);
	/* A flag wins over the file: the node follows 127.0.0.1 1 and the file must say so. */
	const char *f1[] = {"--config", path, "--replica-of", "127.0.0.1 1", NULL};
	start(f1);
	assert_info(fx.c, "replication", "master_port", "1");
	expect_status(fx.c, "CONFIG REWRITE", "OK");
	read_file(path, text, sizeof(text));
	assert_string_equal(text, "# tollgate, written by hand\n"
	                          "idle-timeout 300\n"
	                          "# the primary we follow\n"
	                          "#replica-of 10.1.1.1 6390\n"
	                          "replica-of 127.0.0.1 1\n"
	                          "\tsnapshot-interval 120\n");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);

	/* The round trip: started from the file alone, it is that replica again. */
	redisFree(fx.c);
	assert_int_equal(it_term(&fx.d), 0);
	const char *f2[] = {"--config", path, NULL};
	assert_int_equal(it_restart(&fx.d, f2, 0), 0);
	fx.c = conn();
	assert_info(fx.c, "replication", "role", "slave");
	assert_info(fx.c, "replication", "master_host", "127.0.0.1");
	assert_info(fx.c, "replication", "master_port", "1");

	/* A primary's rewrite removes replica-of, and only that. */
	redisFree(fx.c);
	assert_int_equal(it_term(&fx.d), 0);
	const char *f3[] = {"--config", path, "--replica-of", "", NULL};
	assert_int_equal(it_restart(&fx.d, f3, 0), 0);
	fx.c = conn();
	assert_info(fx.c, "replication", "role", "master");
	expect_status(fx.c, "CONFIG REWRITE", "OK");
	read_file(path, text, sizeof(text));
	assert_string_equal(text, "# tollgate, written by hand\n"
	                          "idle-timeout 300\n"
	                          "# the primary we follow\n"
	                          "#replica-of 10.1.1.1 6390\n"
	                          "\tsnapshot-interval 120\n");
	/* No temporary file left beside it. */
	DIR *dir = opendir(fx.dir);
	assert_non_null(dir);
	for (struct dirent *e; (e = readdir(dir)) != NULL;)
		assert_null(strstr(e->d_name, ".rewrite-"));
	closedir(dir);

	/* A file that cannot be replaced: the error says why, the file is unchanged. */
	assert_int_equal(chmod(fx.dir, 0500), 0);
	if (access(fx.dir, W_OK) != 0) { /* root writes anyway */
		assert_error(fx.c, "ERR Rewriting config file", "CONFIG REWRITE");
		read_file(path, text, sizeof(text));
		assert_null(strstr(text, "replica-of"));
	}
	assert_int_equal(chmod(fx.dir, 0700), 0);
}

/* ------------------------------------------------------------------ */
/* roles                                                              */
/* ------------------------------------------------------------------ */

static void
test_replica_role_runs_only_ping_auth_quit(void **state)
{
	(void)state;
	char users[IT_PATH_MAX];
	assert_int_equal(
	    it_file_write(fx.dir, "users",
	                  "rep replica rep-pass\nsw call sw-pass\nops admin ops-pass\n", users,
	                  sizeof(users)),
	    0);
	assert_int_equal(chmod(users, 0600), 0);
	const char *flags[] = {"--users", users, NULL};
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	fx.running = true;

	redisContext *rep = conn(), *sw = conn(), *ops = conn();
	expect_status(rep, "AUTH rep rep-pass", "OK");
	expect_status(sw, "AUTH sw sw-pass", "OK");
	expect_status(ops, "AUTH ops ops-pass", "OK");

	expect_status(rep, "PING", "PONG");
	const char *refused[] = {
	    "INFO",       "ROLE",        "ECHO x",      "CLIENT ID", "CONFIG GET save",
	    "ACCT.GET 1", "PUBLISH a b", "SUBSCRIBE a", "MULTI",     "SELECT 0"};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		assert_error(rep, "NOPERM", refused[i]);

	/* A switch asks where the primary is and names its connection; it cannot steer. */
	redisReply *r = it_cmd(sw, "ROLE");
	assert_string_equal(r->element[0]->str, "master");
	freeReplyObject(r);
	expect_status(sw, "CLIENT SETNAME sw-east", "OK");
	assert_error(sw, "NOPERM", "CLIENT KILL TYPE normal");
	assert_error(sw, "NOPERM", "CLIENT LIST");
	assert_error(sw, "NOPERM", "CONFIG REWRITE");
	assert_error(sw, "NOPERM", "REPLICAOF NO ONE");
	assert_error(sw, "NOPERM", "PUBLISH a b");
	assert_error(sw, "NOPERM", "MULTI");

	/* Sentinel's user is an admin. */
	r = it_cmd(ops, "CLIENT LIST");
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_non_null(strstr(r->str, "user=ops"));
	freeReplyObject(r);
	assert_int_equal(it_int_cmd(ops, "PUBLISH a b"), 0);
	redisFree(rep);
	redisFree(sw);
	redisFree(ops);
	fx.c = NULL;
}

/* ------------------------------------------------------------------ */
/* three sentinels                                                    */
/* ------------------------------------------------------------------ */

/* Field of SENTINEL MASTER mymaster (a flat array of names and values) into out. */
static bool
master_field(const struct it_sentinel *s, const char *name, char *out, size_t cap)
{
	redisContext *c = it_sentinel_connect(s);
	bool found = false;
	if (c == NULL)
		return false;
	redisReply *r = redisCommand(c, "SENTINEL MASTER mymaster");
	if (r != NULL && r->type == REDIS_REPLY_ARRAY)
		for (size_t i = 0; i + 1 < r->elements && !found; i += 2)
			if (strcmp(r->element[i]->str, name) == 0) {
				snprintf(out, cap, "%s", r->element[i + 1]->str);
				found = true;
			}
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return found;
}

/* Wait up to ms for every sentinel's field to satisfy ok. */
static bool
wait_all(const char *name, bool (*ok)(const char *v), unsigned ms)
{
	char v[256];
	for (unsigned t = 0; t < ms; t += 100) {
		unsigned good = 0;
		for (unsigned i = 0; i < fx.sentinels; i++)
			good += master_field(&fx.s[i], name, v, sizeof(v)) && ok(v);
		if (good == fx.sentinels)
			return true;
		it_sleep_ms(100);
	}
	return false;
}

static bool
two_others(const char *v)
{
	return strcmp(v, "2") == 0;
}

static bool
flags_master(const char *v)
{
	return strcmp(v, "master") == 0;
}

static bool
flags_odown(const char *v)
{
	return strstr(v, "s_down") != NULL && strstr(v, "o_down") != NULL;
}

static void
test_three_sentinels_monitor_and_flag_down(void **state)
{
	(void)state;
	char v[256], port[16];

	const char *flags[] = {"--requirepass", "sentinel-test-pass", NULL};
	start(flags);
	struct it_sentinel_cfg cfg = {.master_port = fx.d.port,
	                              .quorum = 2,
	                              .down_after_ms = 1000,
	                              .auth_pass = "sentinel-test-pass"};
	fx.sentinels = 3;
	assert_int_equal(it_sentinels_start(fx.s, 3, fx.dir, &cfg), 0);

	/* They see a master and, through its hello channel, each other. */
	bool seen = wait_all("flags", flags_master, 20000) &&
	            wait_all("num-other-sentinels", two_others, 20000);
	if (!seen)
		for (unsigned i = 0; i < 3; i++)
			it_sentinel_dump(&fx.s[i]);
	assert_true(seen);
	assert_true(master_field(&fx.s[0], "role-reported", v, sizeof(v)));
	assert_string_equal(v, "master");
	assert_true(master_field(&fx.s[0], "num-slaves", v, sizeof(v)));
	assert_string_equal(v, "0");
	/* It reached the node through AUTH: the run id Sentinel holds is the node's. */
	char run_id[64];
	expect_status(fx.c, "AUTH sentinel-test-pass", "OK");
	assert_true(info_line(fx.c, "server", "run_id", run_id, sizeof(run_id)));
	assert_true(master_field(&fx.s[1], "runid", v, sizeof(v)));
	assert_string_equal(v, run_id);
	/* Their pub/sub links are subscribers of the node, and hellos flow. */
	assert_true(it_info(fx.c, "pubsub_clients") >= 3);
	assert_true(it_info(fx.c, "pubsub_messages") > 0);

	redisContext *s = it_sentinel_connect(&fx.s[2]);
	assert_non_null(s);
	redisReply *r = redisCommand(s, "SENTINEL GET-MASTER-ADDR-BY-NAME mymaster");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 2);
	assert_string_equal(r->element[0]->str, "127.0.0.1");
	snprintf(port, sizeof(port), "%u", fx.d.port);
	assert_string_equal(r->element[1]->str, port);
	freeReplyObject(r);
	redisFree(s);

	/* The node dies: subjectively, then objectively down (quorum 2 of 3). */
	redisFree(fx.c);
	fx.c = NULL;
	assert_int_equal(it_kill(&fx.d), 0);
	fx.running = false;
	bool down = wait_all("flags", flags_odown, 20000);
	if (!down)
		for (unsigned i = 0; i < 3; i++)
			it_sentinel_dump(&fx.s[i]);
	assert_true(down);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest cmds[] = {
	    cmocka_unit_test_setup_teardown(test_info_replication_primary_format, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replica_refuses_money_readonly, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_multi_exec_queues_and_refuses_money, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_client_kill_type_normal_closes_others_not_caller,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_publish_two_subscribers_and_a_slow_one, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_config_rewrite_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replica_role_runs_only_ping_auth_quit, setup,
	                                    teardown),
	};
	const struct CMUnitTest sentinel[] = {
	    cmocka_unit_test_setup_teardown(test_three_sentinels_monitor_and_flag_down, setup,
	                                    teardown),
	};

	if (argc > 1 && strcmp(argv[1], "sentinel") == 0) {
		if (!it_sentinel_present()) {
			fprintf(stderr, "redis-sentinel not found: skipping\n");
			return 77;
		}
		return cmocka_run_group_tests_name("sentinel", sentinel, NULL, NULL);
	}
	return cmocka_run_group_tests_name("sentinel_cmds", cmds, NULL, NULL);
}
