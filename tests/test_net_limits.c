/*
 * test_net_limits.c - the io_uring server's defences, with a toy handler and
 * a configuration small enough to reach them (docs/SECURITY.md, "Limits").
 *
 * The case the daemon's defaults make hard to reach: clients that pipeline
 * and read nothing, enough of them to hold half of a worker's receive
 * buffers.  They must be closed about PRESSURE_MS (1 s) after their sends
 * stuck, long before reply_ms, and a well-behaved client must be served
 * again once they are gone.  The other limits are tested through the real
 * daemon (test_security.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

#include "tg_clock.h"
#include "tg_net.h"

static char pattern[65536];

static int
h_exec(void *arg, unsigned worker, void *session, const struct tg_req *req, struct tg_out *out)
{
	uint64_t n;

	(void)arg;
	(void)worker;
	(void)session;
	if (tg_arg_is(&req->argv[0], "PING"))
		tg_out_status(out, "PONG");
	else if (tg_arg_is(&req->argv[0], "BIG") && req->argc == 2 &&
	         tg_arg_u64(&req->argv[1], &n) && n <= sizeof(pattern))
		tg_out_bulk(out, pattern, (size_t)n);
	else
		tg_out_error(out, "ERR", "unknown command");
	return TG_NET_CONTINUE;
}

static int
dial(uint16_t port, int rcvbuf)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (rcvbuf > 0) /* before connect, so the window is small from the start */
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* One PING answered within ms; false when not (or closed). */
static bool
ping(int fd, int ms)
{
	char buf[16];
	size_t got = 0;
	uint64_t end = tg_mono_ms() + (uint64_t)ms;

	if (send(fd, "PING\r\n", 6, MSG_NOSIGNAL) != 6)
		return false;
	while (got < 7 && tg_mono_ms() < end) {
		ssize_t k = recv(fd, buf + got, sizeof(buf) - got, MSG_DONTWAIT);
		if (k > 0)
			got += (size_t)k;
		else if (k == 0)
			return false;
		else
			usleep(2000);
	}
	return got == 7 && memcmp(buf, "+PONG\r\n", 7) == 0;
}

static void
test_buffer_pressure_closes_nonreaders(void **state)
{
	enum { NONREADERS = 8 };
	static const struct tg_net_handler h = {.exec = h_exec};
	struct tg_net_cfg cfg = {
	    .addr = "127.0.0.1",
	    .workers = 1,
	    .max_conns = 64,
	    .inbuf = 16384,
	    .outbuf = 65536,
	    /* 16 buffers: 8 non-readers holding 4 each would take them all. */
	    .buf_count = 16,
	    .buf_size = 4096,
	    .tick_ms = 50,
	    .reply_ms = 20000, /* far away: only the pressure rule can act in time */
	};
	struct tg_net *n = NULL;
	struct tg_net_stats st;
	char err[256] = "", req[64];
	int fds[NONREADERS];

	(void)state;
	memset(pattern, 'x', sizeof(pattern));
	assert_int_equal(tg_net_start(&n, &cfg, &h, err, sizeof(err)), 0);
	uint16_t port = tg_net_port(n);
	int good = dial(port, 0);
	assert_true(ping(good, 2000));

	/* Each asks for far more than its tiny window takes, and keeps asking. */
	int len = snprintf(req, sizeof(req), "BIG 60000\r\n");
	for (int i = 0; i < NONREADERS; i++) {
		fds[i] = dial(port, 2048);
		fcntl(fds[i], F_SETFL, O_NONBLOCK);
	}
	uint64_t t0 = tg_mono_ms();
	while (tg_mono_ms() - t0 < 600) {
		for (int i = 0; i < NONREADERS; i++)
			for (int k = 0; k < 64; k++)
				if (send(fds[i], req, (size_t)len, MSG_NOSIGNAL) < 0)
					break;
		usleep(10000);
	}
	/* Closed within about PRESSURE_MS of their sends sticking, not after reply_ms. */
	uint64_t closed_at = 0;
	while (tg_mono_ms() - t0 < 5000) {
		tg_net_stats(n, &st);
		if (st.stalled > 0) {
			closed_at = tg_mono_ms() - t0;
			break;
		}
		usleep(20000);
	}
	tg_net_stats(n, &st);
	print_message("buffer pressure: %llu of %d non-readers closed, the first %llu ms after "
	              "they began\n",
	              (unsigned long long)st.stalled, NONREADERS, (unsigned long long)closed_at);
	assert_true(st.stalled > 0);
	assert_true(closed_at >= 900 && closed_at < 3000);
	/* The well-behaved client is served (it may wait for the ring to refill). */
	assert_true(ping(good, 3000));
	for (int i = 0; i < NONREADERS; i++)
		close(fds[i]);
	close(good);
	tg_net_stop(n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_buffer_pressure_closes_nonreaders),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
