/*
 * test_net.c - the io_uring server against real sockets, with a toy handler.
 *
 * The handler knows PING, ECHO x, INCR (a per-session counter), QUIT,
 * BIG n (a bulk of n bytes) and SLEEPY (PONG, but counts); anything else is
 * "-ERR unknown command".  Clients are raw sockets (to control exactly what
 * bytes go in which write) with hiredis's reply reader, and hiredis's
 * synchronous API for the many-clients test.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "tg_clock.h"
#include "tg_net.h"

/* ------------------------------------------------------------------ */
/* the toy handler                                                     */

struct counts {
	uint64_t opened, closed, batch_begin, batch_end, ticks, wstart, wstop;
};

struct session {
	uint64_t magic;
	int64_t counter;
};

#define SESSION_MAGIC 0x5345535349304eull

static struct counts counts;

#define PATTERN_LEN 1000000
static char pattern_bytes[PATTERN_LEN];

/* Bytes that change with their offset (period 23), so a misplaced chunk shows. */
static const char *
pattern(void)
{
	return pattern_bytes;
}

static void
pattern_init(void)
{
	for (size_t i = 0; i < PATTERN_LEN; i++)
		pattern_bytes[i] = (char)('a' + i % 23);
}

static void
bump(uint64_t *c)
{
	__atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

static uint64_t
get(uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

static void
h_open(void *arg, unsigned worker, void *session)
{
	struct session *s = session;

	(void)arg;
	(void)worker;
	assert_int_equal(s->magic, 0); /* sessions start zeroed */
	assert_int_equal(s->counter, 0);
	s->magic = SESSION_MAGIC;
	bump(&counts.opened);
}

static void
h_close(void *arg, unsigned worker, void *session)
{
	struct session *s = session;

	(void)arg;
	(void)worker;
	assert_true(s->magic == SESSION_MAGIC);
	s->magic = 0;
	bump(&counts.closed);
}

static size_t
h_max_request(void *arg, void *session)
{
	(void)arg;
	(void)session;
	return 8192;
}

static int
h_exec(void *arg, unsigned worker, void *session, const struct tg_req *req, struct tg_out *out)
{
	struct session *s = session;
	uint64_t n;

	(void)arg;
	(void)worker;
	assert_true(s->magic == SESSION_MAGIC);
	assert_true(req->argc >= 1);
	if (tg_arg_is(&req->argv[0], "PING") && req->argc == 1) {
		tg_out_status(out, "PONG");
	} else if (tg_arg_is(&req->argv[0], "ECHO") && req->argc == 2) {
		tg_out_bulk(out, req->argv[1].p, req->argv[1].len);
	} else if (tg_arg_is(&req->argv[0], "INCR") && req->argc == 1) {
		tg_out_int(out, ++s->counter);
	} else if (tg_arg_is(&req->argv[0], "QUIT")) {
		tg_out_status(out, "OK");
		return TG_NET_CLOSE;
	} else if (tg_arg_is(&req->argv[0], "BIG") && req->argc == 2 &&
	           tg_arg_u64(&req->argv[1], &n) && n <= 1000000) {
		tg_out_bulk(out, pattern(), (size_t)n);
	} else {
		tg_out_error(out, "ERR", "unknown command");
	}
	return TG_NET_CONTINUE;
}

static void
h_batch_begin(void *arg, unsigned worker)
{
	(void)arg;
	(void)worker;
	bump(&counts.batch_begin);
}

static void
h_batch_end(void *arg, unsigned worker)
{
	(void)arg;
	(void)worker;
	bump(&counts.batch_end);
}

static void
h_tick(void *arg, unsigned worker)
{
	(void)arg;
	(void)worker;
	bump(&counts.ticks);
}

static void
h_wstart(void *arg, unsigned worker)
{
	(void)arg;
	(void)worker;
	bump(&counts.wstart);
}

static void
h_wstop(void *arg, unsigned worker)
{
	(void)arg;
	(void)worker;
	bump(&counts.wstop);
}

static const struct tg_net_handler handler = {
    .arg = NULL,
    .session_size = sizeof(struct session),
    .session_open = h_open,
    .session_close = h_close,
    .max_request = h_max_request,
    .exec = h_exec,
    .batch_begin = h_batch_begin,
    .batch_end = h_batch_end,
    .tick = h_tick,
    .worker_start = h_wstart,
    .worker_stop = h_wstop,
};

static struct tg_net_cfg
base_cfg(void)
{
	struct tg_net_cfg cfg = {
	    .addr = "127.0.0.1",
	    .port = 0,
	    .workers = 2,
	    .max_conns = 256,
	    .inbuf = 16384,
	    .outbuf = 65536,
	    /* Few small buffers, so holding and ENOBUFS happen in the tests. */
	    .buf_count = 64,
	    .buf_size = 4096,
	    .idle_ms = 0,
	    .tick_ms = 50,
	};
	return cfg;
}

static struct tg_net *
start(const struct tg_net_cfg *cfg)
{
	struct tg_net *n = NULL;
	char err[256] = "";
	int rc = tg_net_start(&n, cfg, &handler, err, sizeof(err));

	if (rc != 0)
		fail_msg("tg_net_start: %d %s", rc, err);
	assert_non_null(n);
	assert_true(tg_net_port(n) != 0);
	return n;
}

/* ------------------------------------------------------------------ */
/* raw clients                                                         */

static int
dial(uint16_t port)
{
	struct sockaddr_in a;
	struct timeval tv = {.tv_sec = 10};
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

static void
send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		assert_true(k > 0);
		p += k;
		n -= (size_t)k;
	}
}

/* A reader for replies arriving on fd. */
struct rclient {
	int fd;
	redisReader *r;
};

static void
rc_open(struct rclient *c, uint16_t port)
{
	c->fd = dial(port);
	c->r = redisReaderCreate();
	assert_non_null(c->r);
}

static void
rc_close(struct rclient *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	redisReaderFree(c->r);
	c->r = NULL;
}

/* The next reply, or NULL when the server closed the connection first. */
static redisReply *
rc_reply(struct rclient *c)
{
	for (;;) {
		void *reply = NULL;
		char buf[65536];
		ssize_t k;

		assert_int_equal(redisReaderGetReply(c->r, &reply), REDIS_OK);
		if (reply != NULL)
			return reply;
		k = recv(c->fd, buf, sizeof(buf), 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == ECONNRESET)
			return NULL;
		if (k < 0)
			fail_msg("recv: %s", strerror(errno));
		if (k == 0)
			return NULL;
		assert_int_equal(redisReaderFeed(c->r, buf, (size_t)k), REDIS_OK);
	}
}

static void
expect_status(struct rclient *c, const char *s)
{
	redisReply *r = rc_reply(c);

	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STATUS);
	assert_string_equal(r->str, s);
	freeReplyObject(r);
}

static void
expect_error_prefix(struct rclient *c, const char *s)
{
	redisReply *r = rc_reply(c);

	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	if (strncmp(r->str, s, strlen(s)) != 0)
		fail_msg("error reply \"%s\", expected \"%s...\"", r->str, s);
	freeReplyObject(r);
}

static void
expect_int(struct rclient *c, long long v)
{
	redisReply *r = rc_reply(c);

	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->integer, v);
	freeReplyObject(r);
}

static void
expect_bulk(struct rclient *c, const char *p, size_t n)
{
	redisReply *r = rc_reply(c);

	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_int_equal(r->len, n);
	assert_memory_equal(r->str, p, n);
	freeReplyObject(r);
}

/* The server closes the connection: EOF (or a reset) with no reply. */
static void
expect_closed(struct rclient *c)
{
	redisReply *r = rc_reply(c);

	if (r != NULL)
		fail_msg("expected the connection to close, got a reply of type %d", r->type);
}

static void
wait_connections(struct tg_net *n, uint64_t want)
{
	uint64_t deadline = tg_mono_ms() + 5000;

	while (tg_net_connections(n) != want && tg_mono_ms() < deadline)
		usleep(1000);
	assert_int_equal(tg_net_connections(n), want);
}

/* ------------------------------------------------------------------ */
/* tests                                                               */

static struct tg_net *srv; /* shared by the tests that use the default cfg */

static int
setup_srv(void **state)
{
	struct tg_net_cfg cfg = base_cfg();

	(void)state;
	srv = start(&cfg);
	return 0;
}

static int
teardown_srv(void **state)
{
	(void)state;
	tg_net_stop(srv);
	srv = NULL;
	assert_int_equal(get(&counts.opened), get(&counts.closed));
	return 0;
}

static void
test_single_command(void **state)
{
	struct rclient c;

	(void)state;
	rc_open(&c, tg_net_port(srv));
	send_all(c.fd, "*1\r\n$4\r\nPING\r\n", 14);
	expect_status(&c, "PONG");
	send_all(c.fd, "PING\r\n", 6); /* inline */
	expect_status(&c, "PONG");
	send_all(c.fd, "ECHO hello\r\n", 12);
	expect_bulk(&c, "hello", 5);
	send_all(c.fd, "NOPE\r\n", 6);
	expect_error_prefix(&c, "ERR unknown command");
	/* A bare "$abc" is an inline command (as in Redis), not a framing error. */
	send_all(c.fd, "$abc\r\nPING\r\n", 12);
	expect_error_prefix(&c, "ERR unknown command");
	expect_status(&c, "PONG");
	rc_close(&c);
	wait_connections(srv, 0);
}

static void
test_hiredis_client(void **state)
{
	struct timeval tv = {.tv_sec = 10};
	redisContext *ctx = redisConnectWithTimeout("127.0.0.1", tg_net_port(srv), tv);
	redisReply *r;

	(void)state;
	assert_non_null(ctx);
	assert_int_equal(ctx->err, 0);
	r = redisCommand(ctx, "PING");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STATUS);
	assert_string_equal(r->str, "PONG");
	freeReplyObject(r);
	r = redisCommand(ctx, "ECHO %b", "a\0b", (size_t)3);
	assert_non_null(r);
	assert_int_equal(r->len, 3);
	assert_memory_equal(r->str, "a\0b", 3);
	freeReplyObject(r);
	redisFree(ctx);
}

/* 10k requests in one write: every reply, in order. */
static void
test_pipeline_10k(void **state)
{
	enum { N = 10000 };
	struct rclient c;
	char *buf = malloc((size_t)N * 40);
	size_t len = 0;

	(void)state;
	assert_non_null(buf);
	for (int i = 0; i < N; i++) {
		char arg[16];
		int k = snprintf(arg, sizeof(arg), "%d", i);

		if (i % 3 == 0)
			len += (size_t)sprintf(buf + len, "*1\r\n$4\r\nINCR\r\n");
		else if (i % 3 == 1)
			len +=
			    (size_t)sprintf(buf + len, "*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n", k, arg);
		else
			len += (size_t)sprintf(buf + len, "PING\r\n");
	}
	rc_open(&c, tg_net_port(srv));
	send_all(c.fd, buf, len);
	for (int i = 0, incr = 0; i < N; i++) {
		char arg[16];
		int k = snprintf(arg, sizeof(arg), "%d", i);

		if (i % 3 == 0)
			expect_int(&c, ++incr);
		else if (i % 3 == 1)
			expect_bulk(&c, arg, (size_t)k);
		else
			expect_status(&c, "PONG");
	}
	rc_close(&c);
	free(buf);
}

/* Requests split at every byte boundary: one byte per write. */
static void
test_split_byte_by_byte(void **state)
{
	static const char req[] = "*2\r\n$4\r\nECHO\r\n$11\r\nhello world\r\n"
	                          "INCR\r\n"
	                          "\r\n" /* an empty line is skipped */
	                          "*1\r\n$4\r\nINCR\r\n"
	                          "ECHO 'a b'\r\n"
	                          "*0\r\n"
	                          "PING\r\n";
	struct rclient c;
	long long incr = 0;

	(void)state;
	rc_open(&c, tg_net_port(srv));
	for (int round = 0; round < 20; round++) {
		for (size_t i = 0; i < sizeof(req) - 1; i++)
			send_all(c.fd, req + i, 1);
		expect_bulk(&c, "hello world", 11);
		expect_int(&c, ++incr);
		expect_int(&c, ++incr);
		expect_bulk(&c, "a b", 3);
		expect_status(&c, "PONG");
	}
	/* Also split in two at every position. */
	for (size_t cut = 1; cut < sizeof(req) - 1; cut++) {
		send_all(c.fd, req, cut);
		usleep(200);
		send_all(c.fd, req + cut, sizeof(req) - 1 - cut);
		expect_bulk(&c, "hello world", 11);
		expect_int(&c, ++incr);
		expect_int(&c, ++incr);
		expect_bulk(&c, "a b", 3);
		expect_status(&c, "PONG");
	}
	rc_close(&c);
}

/* Many clients at once, each with its own session counter. */
enum { CLIENTS = 128, CLIENT_REQS = 300 };

static void *
client_thread(void *arg)
{
	uint16_t port = (uint16_t)(uintptr_t)arg;
	struct timeval tv = {.tv_sec = 10};
	redisContext *ctx = redisConnectWithTimeout("127.0.0.1", port, tv);
	uintptr_t bad = 0;

	if (ctx == NULL || ctx->err)
		return (void *)1;
	for (int i = 1; i <= CLIENT_REQS && !bad; i++) {
		redisReply *r;

		if (i % 50 == 0) {
			/* A small pipeline now and then. */
			for (int j = 0; j < 10; j++)
				redisAppendCommand(ctx, "ECHO %d", j);
			for (int j = 0; j < 10; j++) {
				char want[16];

				snprintf(want, sizeof(want), "%d", j);
				if (redisGetReply(ctx, (void **)&r) != REDIS_OK) {
					bad = 2;
					break;
				}
				if (r->type != REDIS_REPLY_STRING || strcmp(r->str, want) != 0)
					bad = 3;
				freeReplyObject(r);
			}
		}
		r = redisCommand(ctx, "INCR");
		if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer != i)
			bad = 4;
		if (r != NULL)
			freeReplyObject(r);
	}
	redisFree(ctx);
	return (void *)bad;
}

static void
test_many_clients(void **state)
{
	pthread_t t[CLIENTS];

	(void)state;
	for (int i = 0; i < CLIENTS; i++)
		assert_int_equal(
		    pthread_create(&t[i], NULL, client_thread, (void *)(uintptr_t)tg_net_port(srv)),
		    0);
	for (int i = 0; i < CLIENTS; i++) {
		void *rv;

		pthread_join(t[i], &rv);
		assert_int_equal((uintptr_t)rv, 0);
	}
	wait_connections(srv, 0);
}

/* Replies far larger than the output buffer, in one pipeline, complete and in order. */
static void
test_big_replies(void **state)
{
	enum { N = 300 };
	struct rclient c;
	char *buf = malloc(N * 64);
	size_t len = 0;

	(void)state;
	assert_non_null(buf);
	for (int i = 0; i < N; i++) {
		/* 1..8000 bytes: each fits in the 8 KiB headroom; 1.2 MB in all. */
		len += (size_t)sprintf(buf + len, "BIG %d\r\nINCR\r\n", 1 + (i * 7919) % 8000);
	}
	len += (size_t)sprintf(buf + len, "BIG 100000\r\nPING\r\n");
	rc_open(&c, tg_net_port(srv));
	send_all(c.fd, buf, len);
	for (int i = 0; i < N; i++) {
		expect_bulk(&c, pattern(), (size_t)(1 + (i * 7919) % 8000));
		expect_int(&c, i + 1);
	}
	/* Larger than the whole output buffer: replaced by an error, the stream goes on. */
	expect_error_prefix(&c, "ERR reply too large");
	expect_status(&c, "PONG");
	rc_close(&c);
	free(buf);
}

/* A client that sends a lot and reads nothing for a while, then reads it all. */
static void
test_slow_reader(void **state)
{
	enum { N = 2000 };
	struct rclient c;
	static char buf[N * 16];
	size_t len = 0;

	(void)state;
	for (int i = 0; i < N; i++)
		len += (size_t)sprintf(buf + len, "BIG 4000\r\n");
	rc_open(&c, tg_net_port(srv));
	send_all(c.fd, buf, len); /* 8 MB of replies wait on a reader that sleeps */
	usleep(300 * 1000);
	for (int i = 0; i < N; i++) {
		redisReply *r = rc_reply(&c);

		assert_non_null(r);
		assert_int_equal(r->type, REDIS_REPLY_STRING);
		assert_int_equal(r->len, 4000);
		freeReplyObject(r);
	}
	send_all(c.fd, "PING\r\n", 6);
	expect_status(&c, "PONG");
	rc_close(&c);
}

/* A new connection is served. */
static void
fresh_ping(uint16_t port)
{
	struct rclient c;

	rc_open(&c, port);
	send_all(c.fd, "PING\r\n", 6);
	expect_status(&c, "PONG");
	rc_close(&c);
}

static void
check_garbage(const char *junk, size_t n, const char *err)
{
	struct rclient c;

	rc_open(&c, tg_net_port(srv));
	send_all(c.fd, "PING\r\n", 6);
	send_all(c.fd, junk, n);
	expect_status(&c, "PONG");
	expect_error_prefix(&c, err);
	expect_closed(&c);
	rc_close(&c);
	fresh_ping(tg_net_port(srv));
}

static void
test_garbage(void **state)
{
	static const char binary[] = {'\x01', '\x00', '\xff', '\xfe', 'x', '\r', '\n'};
	char *huge;

	(void)state;
	check_garbage("*-5\r\n", 5, "ERR Protocol error");
	check_garbage("*1\r\n$abc\r\n", 11, "ERR Protocol error");
	check_garbage(binary, sizeof(binary), "ERR Protocol error");
	check_garbage("*2\r\n$4\r\nECHO\r\n$3\r\nabcdef\r\n", 27, "ERR Protocol error");
	/* Longer than max_request (8 KiB) with no end in sight. */
	huge = malloc(12000);
	assert_non_null(huge);
	memset(huge, 'x', 12000);
	check_garbage(huge, 12000, "ERR Protocol error: request too large");
	free(huge);
	wait_connections(srv, 0);
}

/* Clients that reset their connection mid-stream, replies still in flight. */
static void
test_reset_mid_stream(void **state)
{
	static char buf[500 * 16];
	size_t len = 0;

	(void)state;
	for (int i = 0; i < 500; i++)
		len += (size_t)sprintf(buf + len, "BIG 8000\r\n");
	for (int i = 0; i < 20; i++) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		struct rclient c;

		rc_open(&c, tg_net_port(srv));
		send_all(c.fd, buf, len);
		if (i % 2)
			usleep(2000);
		setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		rc_close(&c); /* RST */
	}
	wait_connections(srv, 0);
	fresh_ping(tg_net_port(srv));
}

static void
test_quit_and_half_close(void **state)
{
	struct rclient c;

	(void)state;
	rc_open(&c, tg_net_port(srv));
	send_all(c.fd, "PING\r\nQUIT\r\nPING\r\n", 18);
	expect_status(&c, "PONG");
	expect_status(&c, "OK");
	expect_closed(&c); /* nothing after QUIT is answered */
	rc_close(&c);

	/* The client shuts down its side right after writing: replies still come. */
	rc_open(&c, tg_net_port(srv));
	send_all(c.fd, "INCR\r\nINCR\r\nBIG 3000\r\n", 22);
	shutdown(c.fd, SHUT_WR);
	expect_int(&c, 1);
	expect_int(&c, 2);
	expect_bulk(&c, pattern(), 3000);
	expect_closed(&c);
	rc_close(&c);
	wait_connections(srv, 0);
}

static void
test_callbacks(void **state)
{
	(void)state;
	assert_int_equal(get(&counts.wstart), 2);
	assert_true(get(&counts.ticks) > 0);
	assert_true(get(&counts.batch_begin) > 0);
	assert_int_equal(get(&counts.batch_begin), get(&counts.batch_end));
	wait_connections(srv, 0);
	assert_int_equal(get(&counts.opened), get(&counts.closed));
}

/* ---- tests with their own server ---- */

static void
test_idle_timeout(void **state)
{
	struct tg_net_cfg cfg = base_cfg();
	struct tg_net *n;
	struct rclient idle, partial, busy;
	uint64_t t0;

	(void)state;
	cfg.idle_ms = 300;
	cfg.tick_ms = 50;
	n = start(&cfg);
	rc_open(&idle, tg_net_port(n));
	rc_open(&partial, tg_net_port(n));
	rc_open(&busy, tg_net_port(n));
	send_all(idle.fd, "PING\r\n", 6);
	expect_status(&idle, "PONG");
	t0 = tg_mono_ms();
	/* Trickles bytes of one request, never finishing it: closed all the same. */
	send_all(partial.fd, "*2\r\n$4\r\nECHO\r\n$1000\r\n", 21);
	for (int i = 0; i < 12; i++) {
		send_all(busy.fd, "PING\r\n", 6);
		expect_status(&busy, "PONG");
		if (send(partial.fd, "y", 1, MSG_NOSIGNAL) < 0)
			break;
		usleep(50 * 1000);
	}
	expect_closed(&idle);
	expect_closed(&partial);
	assert_true(tg_mono_ms() - t0 >= 250);
	/* The busy one stayed open. */
	send_all(busy.fd, "PING\r\n", 6);
	expect_status(&busy, "PONG");
	rc_close(&idle);
	rc_close(&partial);
	rc_close(&busy);
	wait_connections(n, 0);
	tg_net_stop(n);
}

static void
test_max_conns(void **state)
{
	struct tg_net_cfg cfg = base_cfg();
	struct tg_net *n;
	struct rclient c[4], extra;

	(void)state;
	cfg.workers = 1;
	cfg.max_conns = 4;
	n = start(&cfg);
	for (int i = 0; i < 4; i++) {
		rc_open(&c[i], tg_net_port(n));
		send_all(c[i].fd, "PING\r\n", 6);
		expect_status(&c[i], "PONG");
	}
	rc_open(&extra, tg_net_port(n));
	send(extra.fd, "PING\r\n", 6, MSG_NOSIGNAL);
	/* One line saying why, then the close. */
	expect_error_prefix(&extra, "ERR max number of clients reached");
	expect_closed(&extra);
	rc_close(&extra);
	assert_int_equal(tg_net_connections(n), 4);
	rc_close(&c[0]);
	wait_connections(n, 3);
	/* The slot is back (after the kernel closes the old fd). */
	for (int tries = 0;; tries++) {
		redisReply *r;

		rc_open(&extra, tg_net_port(n));
		send(extra.fd, "PING\r\n", 6, MSG_NOSIGNAL);
		r = rc_reply(&extra);
		if (r != NULL && r->type == REDIS_REPLY_ERROR) { /* still refused */
			freeReplyObject(r);
			r = NULL;
		}
		if (r != NULL) {
			assert_string_equal(r->str, "PONG");
			freeReplyObject(r);
			break;
		}
		rc_close(&extra);
		assert_true(tries < 100);
		usleep(10 * 1000);
	}
	rc_close(&extra);
	for (int i = 1; i < 4; i++)
		rc_close(&c[i]);
	wait_connections(n, 0);
	tg_net_stop(n);
}

/*
 * A worker starved of everything: 4 provided buffers of 128 bytes, a 512-byte
 * carry, 2 KiB of output.  Connections hold buffers, pause, run the ring dry
 * (ENOBUFS) and must still get every reply in order.
 */
enum { TINY_CLIENTS = 16, TINY_ROUNDS = 20, TINY_PIPE = 100 };

static void *
tiny_client(void *arg)
{
	uint16_t port = (uint16_t)(uintptr_t)arg;
	struct rclient c;
	char buf[TINY_PIPE * 160];
	long long incr = 0;

	rc_open(&c, port);
	for (int round = 0; round < TINY_ROUNDS; round++) {
		size_t len = 0;

		for (int i = 0; i < TINY_PIPE; i++) {
			int k = 1 + (round * 31 + i * 17) % 100;

			if (i % 2)
				len += (size_t)sprintf(buf + len,
				                       "*2\r\n$4\r\nECHO\r\n$%d\r\n%.*s\r\n", k, k,
				                       pattern());
			else
				len += (size_t)sprintf(buf + len, "INCR\r\n");
		}
		send_all(c.fd, buf, len);
		for (int i = 0; i < TINY_PIPE; i++) {
			if (i % 2)
				expect_bulk(&c, pattern(),
				            (size_t)(1 + (round * 31 + i * 17) % 100));
			else
				expect_int(&c, ++incr);
		}
	}
	rc_close(&c);
	return NULL;
}

static void
test_tiny_buffers(void **state)
{
	struct tg_net_cfg cfg = base_cfg();
	struct tg_net *n;
	pthread_t t[TINY_CLIENTS];

	(void)state;
	cfg.workers = 1;
	cfg.buf_count = 4;
	cfg.buf_size = 128;
	cfg.inbuf = 512;
	cfg.outbuf = 2048;
	n = start(&cfg);
	for (int i = 0; i < TINY_CLIENTS; i++)
		assert_int_equal(
		    pthread_create(&t[i], NULL, tiny_client, (void *)(uintptr_t)tg_net_port(n)), 0);
	for (int i = 0; i < TINY_CLIENTS; i++)
		pthread_join(t[i], NULL);
	wait_connections(n, 0);
	tg_net_stop(n);
}

/* Stop with connections open, one mid-request, one not reading its replies. */
static void
test_stop_with_open_connections(void **state)
{
	struct tg_net_cfg cfg = base_cfg();
	struct tg_net *n;
	struct rclient a, b, stuck;
	static char buf[2000 * 16];
	size_t len = 0;
	uint64_t t0, opened0 = get(&counts.opened);

	(void)state;
	n = start(&cfg);
	rc_open(&a, tg_net_port(n));
	rc_open(&b, tg_net_port(n));
	rc_open(&stuck, tg_net_port(n));
	send_all(a.fd, "PING\r\n", 6);
	expect_status(&a, "PONG");
	send_all(b.fd, "*2\r\n$4\r\nECHO\r\n$5\r\nab", 20);
	for (int i = 0; i < 2000; i++)
		len += (size_t)sprintf(buf + len, "BIG 8000\r\n");
	send_all(stuck.fd, buf, len);
	usleep(100 * 1000);
	assert_int_equal(tg_net_connections(n), 3);
	t0 = tg_mono_ms();
	tg_net_stop(n);
	assert_true(tg_mono_ms() - t0 < 1000);
	assert_int_equal(get(&counts.opened) - opened0, 3);
	assert_int_equal(get(&counts.opened), get(&counts.closed));
	expect_closed(&a);
	rc_close(&a);
	rc_close(&b);
	rc_close(&stuck);
}

static void
test_bind_errors(void **state)
{
	struct tg_net_cfg cfg = base_cfg();
	struct tg_net *n, *second = NULL;
	char err[256] = "", want[128];
	int rc;

	(void)state;
	n = start(&cfg);
	cfg.port = tg_net_port(n);
	rc = tg_net_start(&second, &cfg, &handler, err, sizeof(err));
	assert_int_equal(rc, -EADDRINUSE);
	assert_null(second);
	snprintf(want, sizeof(want), "cannot bind 127.0.0.1:%u: Address already in use", cfg.port);
	assert_string_equal(err, want);
	tg_net_stop(n);

	cfg = base_cfg();
	cfg.addr = "not-an-address";
	rc = tg_net_start(&second, &cfg, &handler, err, sizeof(err));
	assert_int_equal(rc, -EINVAL);
	assert_non_null(strstr(err, "not-an-address"));

	cfg = base_cfg();
	cfg.buf_count = 48;
	rc = tg_net_start(&second, &cfg, &handler, err, sizeof(err));
	assert_int_equal(rc, -EINVAL);
	assert_non_null(strstr(err, "buf_count"));
}

/* ------------------------------------------------------------------ */
/* replies held until durable (batch_lsn, durable)                     */

/*
 * A handler with a pretend journal: WRITE takes the next position and
 * replies with it, READ replies +OK and takes none; a batch's position is
 * its last WRITE's, and what is durable is what the test says.
 */
static uint64_t held_next;    /* positions handed out (workers) */
static uint64_t held_durable; /* the durable position (the test) */
static uint64_t held_batch;   /* the open batch's position (one worker) */

static int
held_exec(void *arg, unsigned worker, void *session, const struct tg_req *req, struct tg_out *out)
{
	(void)arg;
	(void)worker;
	(void)session;
	if (tg_arg_is(&req->argv[0], "WRITE")) {
		held_batch = __atomic_add_fetch(&held_next, 1, __ATOMIC_RELAXED);
		tg_out_int(out, (long long)held_batch);
	} else {
		tg_out_status(out, "OK");
	}
	return TG_NET_CONTINUE;
}

static void
held_batch_end(void *arg, unsigned worker)
{
	(void)arg;
	(void)worker;
}

static uint64_t
held_batch_lsn(void *arg, unsigned worker)
{
	(void)arg;
	(void)worker;
	uint64_t lsn = held_batch;
	held_batch = 0;
	return lsn;
}

static uint64_t
held_durable_lsn(void *arg)
{
	(void)arg;
	return __atomic_load_n(&held_durable, __ATOMIC_ACQUIRE);
}

static const struct tg_net_handler held_handler = {
    .session_size = sizeof(struct session),
    .max_request = h_max_request,
    .exec = held_exec,
    .batch_end = held_batch_end,
    .batch_lsn = held_batch_lsn,
    .durable = held_durable_lsn,
};

/*
 * Whether c has a reply within ms: one its reader already holds (read with
 * an earlier one: it is consumed, which only a failing test does), or bytes
 * on the socket.
 */
static bool
readable(struct rclient *c, int ms)
{
	void *reply = NULL;
	struct pollfd p = {.fd = c->fd, .events = POLLIN};

	assert_int_equal(redisReaderGetReply(c->r, &reply), REDIS_OK);
	if (reply != NULL) {
		freeReplyObject(reply);
		return true;
	}
	return poll(&p, 1, ms) == 1;
}

/*
 * A reply leaves only once the durable position passes its batch's, and
 * never before a reply that was held ahead of it on the same connection;
 * meanwhile the worker serves other connections.  Each connection's second
 * stage waits for its own position, and a connection closed with replies
 * held frees its slot for the next.
 */
static void
test_replies_held_until_durable(void **state)
{
	struct tg_net_cfg cfg = base_cfg();
	struct tg_net *n = NULL;
	struct rclient a, b;
	char err[256] = "";
	(void)state;

	cfg.workers = 1;
	__atomic_store_n(&held_next, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&held_durable, 0, __ATOMIC_RELEASE);
	assert_int_equal(tg_net_start(&n, &cfg, &held_handler, err, sizeof(err)), 0);
	rc_open(&a, tg_net_port(n));
	rc_open(&b, tg_net_port(n));

	/* WRITE is held; another connection's READ is not. */
	send_all(a.fd, "WRITE\r\n", 7);
	assert_false(readable(&a, 300));
	send_all(b.fd, "READ\r\n", 6);
	expect_status(&b, "OK");
	/* A READ behind the held WRITE waits for it, and leaves with it in order. */
	send_all(a.fd, "READ\r\n", 6);
	assert_false(readable(&a, 300));
	__atomic_store_n(&held_durable, 1, __ATOMIC_RELEASE);
	expect_int(&a, 1);
	expect_status(&a, "OK");

	/* Two stages: position 2 leaves when it is durable, 3 only after. */
	send_all(a.fd, "WRITE\r\n", 7);
	assert_false(readable(&a, 200));
	send_all(a.fd, "WRITE\r\n", 7);
	assert_false(readable(&a, 200));
	__atomic_store_n(&held_durable, 2, __ATOMIC_RELEASE);
	expect_int(&a, 2);
	assert_false(readable(&a, 300));
	__atomic_store_n(&held_durable, 3, __ATOMIC_RELEASE);
	expect_int(&a, 3);

	/* Closed with a reply held: the slot serves the next connection. */
	send_all(a.fd, "WRITE\r\n", 7);
	assert_false(readable(&a, 200));
	rc_close(&a);
	rc_open(&a, tg_net_port(n));
	send_all(a.fd, "READ\r\n", 6);
	expect_status(&a, "OK");
	__atomic_store_n(&held_durable, 4, __ATOMIC_RELEASE);
	send_all(a.fd, "WRITE\r\n", 7);
	assert_false(readable(&a, 200));
	__atomic_store_n(&held_durable, 5, __ATOMIC_RELEASE);
	expect_int(&a, 5);

	/*
	 * Past the output buffer: 20,000 pipelined WRITEs held (160 KB of
	 * replies for 64 KB of outbuf) stop being parsed when the buffer is
	 * nearly full, and wait in the receive buffers; once durable, every
	 * reply arrives, once, in order.
	 */
	enum { MANY = 20000 };
	static char many[MANY * 7];
	for (int i = 0; i < MANY; i++)
		memcpy(many + i * 7, "WRITE\r\n", 7);
	send_all(a.fd, many, sizeof(many));
	assert_false(readable(&a, 300));
	__atomic_store_n(&held_durable, UINT64_MAX, __ATOMIC_RELEASE);
	for (long long i = 6; i < 6 + MANY; i++)
		expect_int(&a, i);
	assert_false(readable(&a, 200));

	rc_close(&a);
	rc_close(&b);
	tg_net_stop(n);
}

int
main(void)
{
	/* One test per line (clang-format would pack them into columns). */
	// clang-format off
	const struct CMUnitTest shared[] = {
		cmocka_unit_test(test_single_command),
		cmocka_unit_test(test_hiredis_client),
		cmocka_unit_test(test_pipeline_10k),
		cmocka_unit_test(test_split_byte_by_byte),
		cmocka_unit_test(test_many_clients),
		cmocka_unit_test(test_big_replies),
		cmocka_unit_test(test_slow_reader),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_reset_mid_stream),
		cmocka_unit_test(test_quit_and_half_close),
		cmocka_unit_test(test_callbacks),
		cmocka_unit_test(test_replies_held_until_durable),
	};
	const struct CMUnitTest own[] = {
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_max_conns),
		cmocka_unit_test(test_tiny_buffers),
		cmocka_unit_test(test_stop_with_open_connections),
		cmocka_unit_test(test_bind_errors),
	};
	// clang-format on
	int failed;

	pattern_init();
	failed = cmocka_run_group_tests_name("net", shared, setup_srv, teardown_srv);
	failed += cmocka_run_group_tests_name("net_own_server", own, NULL, NULL);
	return failed ? 1 : 0;
}
