/*
 * test_flood.c - rating goes on while thousands of connections attack.
 *
 * The real tollgated (harness.c, two workers, requirepass) is flooded for
 * FLOOD_SECONDS by FLOOD_CONNS connections from eight other loopback
 * addresses, each playing one kind of attacker again and again: random
 * bytes, half frames that never complete, well-formed CDRs before AUTH,
 * CDR frames broken in their last argument, oversized requests, password
 * guessing, connections that say nothing, and ones trickling a byte at a
 * time.  Meanwhile LEGIT_CLIENTS authenticated clients send CDRs one round
 * trip at a time and time each one.  Then (docs/SECURITY.md, "Flood"):
 *   - the legitimate p99 is within P99_BOUND_MS;
 *   - every legitimate account's balance is its opening balance minus
 *     exactly the charges its CDRs were answered with, the account the
 *     flood aims its CDRs at did not move, and `cdr` counts only theirs;
 *   - tollgated's resident memory (VmRSS, sampled all along) stayed within
 *     the documented bound, computed here from the same formula.
 * Prints the figures.  Exit 77 (skip) when the file limit cannot be raised.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"

/* Defaults; TG_FLOOD_CONNS, TG_FLOOD_SECONDS and TG_FLOOD_DURABILITY override them. */
#define FLOOD_CONNS   3000
#define FLOOD_SECONDS 10
#define FLOOD_ADDRS   8 /* 127.0.0.2 .. 127.0.0.9 */
#define LEGIT_CLIENTS 4
#define P99_BOUND_MS  50
#define PASSWORD      "flood-test-password"
#define D_NAT         "15551234567"
#define TARGET        9999 /* the account the flood's CDRs name */
#define MAX_SAMPLES   (1 << 20)
/* Each legitimate client sends at most one CDR per this many microseconds (a busy switch). */
#define LEGIT_PACE_US 500
/* Every CDR id is remembered: room for all of them, and its memory is in the bound. */
#define IDS_MAX   200000
#define IDS_BYTES (IDS_MAX * 50ull)
/* Micro-units per currency unit. */
#define U 1000000LL
/* The documented bound (docs/SECURITY.md): rings + per connection + slack over the idle RSS. */
#define RING_BYTES     (2ull * 1024 * 16384) /* workers x buf_count x buf_size */
#define PER_CONN_BYTES (16ull * 1024)
#define SLACK_BYTES    (32ull * 1024 * 1024)

enum kind {
	K_RANDOM,  /* random bytes: a protocol error, or unknown commands */
	K_HALF,    /* a multibulk CDR cut in its middle, never finished */
	K_NOAUTH,  /* well-formed CDRs before AUTH, one every 100 ms */
	K_BROKEN,  /* a CDR frame whose last argument overruns its length */
	K_BIG,     /* a request past max-request-noauth */
	K_GUESS,   /* wrong passwords until cut off (and locked out) */
	K_SILENT,  /* connects and says nothing */
	K_TRICKLE, /* a CDR, one byte every 500 ms */
	K__COUNT
};

struct fconn {
	int fd;
	uint8_t kind;
	bool connected;
	uint32_t src;
	uint32_t off;     /* bytes of the payload sent (trickle) */
	uint64_t next_ms; /* next action: reconnect, resend, next byte */
};

static struct it_daemon d;
static char dir[IT_PATH_MAX];
static unsigned flood_conns = FLOOD_CONNS, flood_seconds = FLOOD_SECONDS;
static const char *durability = "relaxed";
static volatile int stop_flood, stop_legit;
static uint16_t port;

struct flood_stats {
	uint64_t connects, connect_errors, closed_by_server, bytes_sent;
	long rss_max_kib;
};

/* ---- helpers ---- */

static long
rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "VmRSS:", 6) == 0)
			kib = strtol(line + 6, NULL, 10);
	fclose(f);
	return kib;
}

/* "-12.5" into micro-units; -1 unless the whole string is an amount. */
static int
money_parse(const char *s, int64_t *out)
{
	int neg = *s == '-';
	int64_t whole = 0, frac = 0;
	int digits = 0;

	s += neg;
	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++)
		whole = whole * 10 + (*s - '0');
	if (*s == '.') {
		for (s++; *s >= '0' && *s <= '9' && digits < 6; s++, digits++)
			frac = frac * 10 + (*s - '0');
		if (digits == 0)
			return -1;
		for (; digits < 6; digits++)
			frac *= 10;
	}
	if (*s != '\0')
		return -1;
	*out = (whole * U + frac) * (neg ? -1 : 1);
	return 0;
}

static uint64_t
rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ---- the flood ---- */

static const char half_frame[] = "*5\r\n$3\r\nCDR\r\n$4\r\n9999\r\n$11\r\n1555";
static const char noauth_cdr[] = "CDR 9999 " D_NAT " 60 flood-noauth\r\n";
static const char broken_cdr[] =
    "*5\r\n$3\r\nCDR\r\n$4\r\n9999\r\n$11\r\n" D_NAT "\r\n$2\r\n60\r\n$4\r\nflood-id\r\n";
static const char guess[] = "AUTH guess-1\r\nAUTH guess-2\r\nAUTH guess-3\r\nAUTH guess-4\r\n"
                            "AUTH guess-5\r\nAUTH guess-6\r\nCDR 9999 " D_NAT " 60 g\r\n";
static const char trickle[] = "CDR 9999 " D_NAT " 60 flood-trickle\r\n";

static void
fconn_close(int ep, struct fconn *c, uint64_t now, uint64_t *seed)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->connected = false;
	/* Come back soon, spread out, as a bot would. */
	c->next_ms = now + 100 + rng(seed) % 300;
}

static void
fconn_open(int ep, struct fconn *c, struct flood_stats *st)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
	struct sockaddr_in me = {.sin_family = AF_INET};
	int one = 1;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		st->connect_errors++;
		return;
	}
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	me.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 2 + c->src);
	/* Let connect pick the port per destination: tens of thousands of connects. */
	setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bind(c->fd, (struct sockaddr *)&me, sizeof(me)) != 0 ||
	    (connect(c->fd, (struct sockaddr *)&to, sizeof(to)) != 0 && errno != EINPROGRESS)) {
		close(c->fd);
		c->fd = -1;
		st->connect_errors++;
		return;
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
	epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	c->off = 0;
	st->connects++;
}

static void
fsend(struct fconn *c, const void *p, size_t n, struct flood_stats *st)
{
	ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (w > 0)
		st->bytes_sent += (uint64_t)w;
}

/* The connection just connected (or its timer fired): do what its kind does. */
static void
fconn_act(struct fconn *c, uint64_t now, uint64_t *seed, struct flood_stats *st)
{
	char junk[512];

	switch ((enum kind)c->kind) {
	case K_RANDOM: {
		size_t n = 64 + rng(seed) % 256;
		for (size_t i = 0; i < n; i++)
			junk[i] = (char)rng(seed);
		fsend(c, junk, n, st);
		c->next_ms = now + 200;
		break;
	}
	case K_HALF:
		if (c->off == 0)
			fsend(c, half_frame, sizeof(half_frame) - 1, st);
		c->off = 1;
		c->next_ms = UINT64_MAX;
		break;
	case K_NOAUTH:
		fsend(c, noauth_cdr, sizeof(noauth_cdr) - 1, st);
		c->next_ms = now + 100;
		break;
	case K_BROKEN:
		fsend(c, broken_cdr, sizeof(broken_cdr) - 1, st);
		c->next_ms = UINT64_MAX;
		break;
	case K_BIG:
		memset(junk, 'A', 400);
		memcpy(junk, "CDR ", 4);
		memcpy(junk + 398, "\r\n", 2);
		fsend(c, junk, 400, st);
		c->next_ms = UINT64_MAX;
		break;
	case K_GUESS:
		fsend(c, guess, sizeof(guess) - 1, st);
		c->next_ms = UINT64_MAX;
		break;
	case K_SILENT:
		c->next_ms = UINT64_MAX;
		break;
	case K_TRICKLE:
		if (c->off < sizeof(trickle) - 1) {
			fsend(c, trickle + c->off, 1, st);
			c->off++;
		}
		c->next_ms = now + 500;
		break;
	default:
		break;
	}
}

static void *
flood_main(void *arg)
{
	struct flood_stats *st = arg;
	struct fconn *conns = calloc(flood_conns ? flood_conns : 1, sizeof(*conns));
	struct epoll_event evs[512];
	uint64_t seed = 0x9e3779b97f4a7c15ull, next_rss = 0;
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep < 0 || conns == NULL)
		return NULL;
	for (unsigned i = 0; i < flood_conns; i++) {
		conns[i].fd = -1;
		conns[i].kind = (uint8_t)(i % K__COUNT);
		conns[i].src = (i / K__COUNT) % FLOOD_ADDRS; /* every kind from every address */
		conns[i].next_ms = tg_mono_ms() + i % 500;   /* ramp up over half a second */
	}
	while (!stop_flood) {
		uint64_t now = tg_mono_ms();
		int n = epoll_wait(ep, evs, 512, 5);

		for (int k = 0; k < n; k++) {
			struct fconn *c = evs[k].data.ptr;
			char buf[4096];

			if (c->fd < 0)
				continue;
			if (!c->connected && (evs[k].events & EPOLLOUT) &&
			    !(evs[k].events & (EPOLLERR | EPOLLHUP))) {
				struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
				                         .data.ptr = c};
				c->connected = true;
				epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
				fconn_act(c, now, &seed, st);
			}
			if (evs[k].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
				ssize_t r;
				while ((r = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
					;
				if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
					st->closed_by_server++;
					fconn_close(ep, c, now, &seed);
				}
			}
		}
		now = tg_mono_ms();
		for (unsigned i = 0; i < flood_conns; i++) {
			struct fconn *c = &conns[i];
			if (c->next_ms > now)
				continue;
			if (c->fd < 0) {
				c->next_ms = UINT64_MAX;
				fconn_open(ep, c, st);
				if (c->fd < 0)
					c->next_ms = now + 100;
			} else if (c->connected) {
				fconn_act(c, now, &seed, st);
			}
		}
		if (now >= next_rss) {
			long kib = rss_kib(d.pid);
			if (kib > st->rss_max_kib)
				st->rss_max_kib = kib;
			next_rss = now + 100;
		}
	}
	for (unsigned i = 0; i < flood_conns; i++)
		if (conns[i].fd >= 0)
			close(conns[i].fd);
	close(ep);
	free(conns);
	return NULL;
}

/* ---- the legitimate clients ---- */

struct legit {
	unsigned id;
	uint64_t acct;
	uint64_t n, errors;
	int64_t charged; /* micro-units, from the replies */
	uint32_t *us;    /* latency of each request, microseconds */
	char err[256];
};

static void *
legit_main(void *arg)
{
	struct legit *l = arg;
	redisContext *c = it_connect(&d);
	uint64_t seed = 0x12345ull + l->id;

	if (c == NULL) {
		snprintf(l->err, sizeof(l->err), "cannot connect");
		return NULL;
	}
	redisReply *r = redisCommand(c, "AUTH %s", PASSWORD);
	if (r == NULL || r->type != REDIS_REPLY_STATUS) {
		snprintf(l->err, sizeof(l->err), "AUTH failed");
		if (r)
			freeReplyObject(r);
		redisFree(c);
		return NULL;
	}
	freeReplyObject(r);
	uint64_t next_us = 0;
	while (!stop_legit && l->n < MAX_SAMPLES) {
		struct timespec a, b;
		unsigned dur = 1 + (unsigned)(rng(&seed) % 300);
		int64_t v;

		clock_gettime(CLOCK_MONOTONIC, &a);
		uint64_t now_us = (uint64_t)a.tv_sec * 1000000 + (uint64_t)a.tv_nsec / 1000;
		if (now_us < next_us) {
			usleep((useconds_t)(next_us - now_us));
			clock_gettime(CLOCK_MONOTONIC, &a);
		}
		next_us = (next_us > now_us ? next_us : now_us) + LEGIT_PACE_US;
		r = redisCommand(c, "CDR %llu %s %u legit-%u-%llu", (unsigned long long)l->acct,
		                 D_NAT, dur, l->id, (unsigned long long)l->n);
		clock_gettime(CLOCK_MONOTONIC, &b);
		if (r == NULL) {
			snprintf(l->err, sizeof(l->err), "no reply: %s", c->errstr);
			break;
		}
		if (r->type != REDIS_REPLY_STRING || money_parse(r->str, &v) != 0) {
			snprintf(l->err, sizeof(l->err), "CDR reply type %d '%s'", r->type,
			         r->type == REDIS_REPLY_ERROR ? r->str : "");
			freeReplyObject(r);
			l->errors++;
			break;
		}
		freeReplyObject(r);
		l->charged += v;
		int64_t ns = (int64_t)(b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec);
		l->us[l->n++] = (uint32_t)(ns / 1000);
	}
	redisFree(c);
	return NULL;
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* ---- checks ---- */

static int64_t
balance_of(redisContext *c, uint64_t acct)
{
	int64_t v;
	redisReply *r = redisCommand(c, "ACCT.GET %llu", (unsigned long long)acct);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_string_equal(r->element[0]->str, "balance");
	assert_int_equal(money_parse(r->element[1]->str, &v), 0);
	freeReplyObject(r);
	return v;
}

static long long
info_int(redisContext *c, const char *key)
{
	char pat[80];
	redisReply *r = redisCommand(c, "INFO");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	snprintf(pat, sizeof(pat), "\r\n%s:", key);
	const char *p = strstr(r->str, pat);
	if (p == NULL)
		fail_msg("INFO has no %s", key);
	long long v = strtoll(p + strlen(pat), NULL, 10);
	freeReplyObject(r);
	return v;
}

static void
test_flood(void **state)
{
	char rates[IT_PATH_MAX], accounts[IT_PATH_MAX], text[1024];
	static struct legit legit[LEGIT_CLIENTS];
	struct flood_stats fst = {0};
	pthread_t ft, lt[LEGIT_CLIENTS];
	int64_t opening = 1000000 * U;
	size_t n = 0;

	(void)state;
	assert_int_equal(it_dir_make(dir, sizeof(dir)), 0);
	assert_int_equal(it_file_write(dir, "rates.csv",
	                               "plan,prefix,category,rate_per_min,connect_fee,initial,"
	                               "increment,minimum\nflat,1,national,0.6,0,60,60,0\n",
	                               rates, sizeof(rates)),
	                 0);
	n = (size_t)snprintf(text, sizeof(text),
	                     "account,balance,plan,state,threshold,refill,refill_amount,payment\n"
	                     "%d,1000000,flat,active,,off,,off\n",
	                     TARGET);
	for (unsigned i = 0; i < LEGIT_CLIENTS; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n,
		                      "%u,1000000,flat,active,,off,,off\n", i + 1);
	assert_int_equal(it_file_write(dir, "accounts.csv", text, accounts, sizeof(accounts)), 0);
	const char *const flags[] = {"--rates",
	                             rates,
	                             "--accounts",
	                             accounts,
	                             "--requirepass",
	                             PASSWORD,
	                             "--max-clients",
	                             "8192",
	                             "--request-timeout",
	                             "2",
	                             "--ids-max",
	                             "200000",
	                             "--durability",
	                             durability,
	                             NULL};
	assert_int_equal(it_start(&d, dir, flags), 0);
	port = d.port;
	redisContext *c = it_connect(&d);
	assert_non_null(c);
	redisReply *r = redisCommand(c, "AUTH %s", PASSWORD);
	assert_non_null(r);
	freeReplyObject(r);
	it_sleep_ms(300);
	long rss0 = rss_kib(d.pid);

	for (unsigned i = 0; i < LEGIT_CLIENTS; i++) {
		legit[i].id = i;
		legit[i].acct = i + 1;
		legit[i].us = calloc(MAX_SAMPLES, sizeof(uint32_t));
		assert_non_null(legit[i].us);
	}
	assert_int_equal(pthread_create(&ft, NULL, flood_main, &fst), 0);
	it_sleep_ms(1000); /* the flood at full strength first */
	for (unsigned i = 0; i < LEGIT_CLIENTS; i++)
		assert_int_equal(pthread_create(&lt[i], NULL, legit_main, &legit[i]), 0);
	it_sleep_ms(flood_seconds * 1000);
	stop_legit = 1;
	for (unsigned i = 0; i < LEGIT_CLIENTS; i++)
		pthread_join(lt[i], NULL);
	long open_during = info_int(c, "connected_clients");
	stop_flood = 1;
	pthread_join(ft, NULL);

	/* Latency over every legitimate request. */
	uint64_t total = 0;
	for (unsigned i = 0; i < LEGIT_CLIENTS; i++) {
		if (legit[i].err[0])
			fail_msg("legitimate client %u: %s", i, legit[i].err);
		total += legit[i].n;
	}
	uint32_t *all = calloc(total ? total : 1, sizeof(uint32_t));
	assert_non_null(all);
	size_t k = 0;
	for (unsigned i = 0; i < LEGIT_CLIENTS; i++) {
		memcpy(all + k, legit[i].us, legit[i].n * sizeof(uint32_t));
		k += legit[i].n;
	}
	qsort(all, total, sizeof(uint32_t), cmp_u32);
	uint32_t p50 = all[total / 2], p99 = all[total * 99 / 100], p999 = all[total * 999 / 1000],
	         max = all[total - 1];

	/* Money: exactly what the legitimate CDRs were answered with; the target untouched. */
	for (unsigned i = 0; i < LEGIT_CLIENTS; i++) {
		int64_t b = balance_of(c, legit[i].acct);
		if (b != opening - legit[i].charged)
			fail_msg("account %llu: balance %" PRId64 ", expected %" PRId64
			         " - %" PRId64,
			         (unsigned long long)legit[i].acct, b, opening, legit[i].charged);
	}
	assert_true(balance_of(c, TARGET) == opening);
	long long cdrs = info_int(c, "cdr");

	uint64_t bound_kib =
	    (uint64_t)rss0 +
	    (RING_BYTES + (uint64_t)flood_conns * PER_CONN_BYTES + IDS_BYTES + SLACK_BYTES) / 1024;
	print_message("flood: %u connections from %d addresses for %u s (durability %s): %" PRIu64
	              " connects (%" PRIu64 " failed), %" PRIu64 " closed by the server, %" PRIu64
	              " bytes sent; %ld open at the end\n",
	              flood_conns, FLOOD_ADDRS, flood_seconds, durability, fst.connects,
	              fst.connect_errors, fst.closed_by_server, fst.bytes_sent, open_during);
	print_message(
	    "flood: server closed %lld after protocol errors, %lld on request-timeout, "
	    "%lld after failed AUTHs; %lld AUTH lockouts; %lld CDRs run, all legitimate\n",
	    info_int(c, "protocol_errors"), info_int(c, "connections_request_timeout"),
	    info_int(c, "auth_failure_closes"), info_int(c, "auth_lockouts"), cdrs);
	print_message("legit: %" PRIu64 " CDRs by %d clients, one per round trip: p50 %u us, p99 "
	              "%u us, p99.9 %u us, max %u us (bound p99 %d ms)\n",
	              total, LEGIT_CLIENTS, p50, p99, p999, max, P99_BOUND_MS);
	print_message("memory: tollgated VmRSS %ld KiB before, %ld KiB at most during the flood "
	              "(bound %" PRIu64 " KiB)\n",
	              rss0, fst.rss_max_kib, bound_kib);

	assert_true(total > 1000);
	assert_int_equal(cdrs, (long long)total);
	if (p99 > P99_BOUND_MS * 1000)
		fail_msg("legitimate p99 %u us is over %d ms", p99, P99_BOUND_MS);
	if ((uint64_t)fst.rss_max_kib > bound_kib)
		fail_msg("VmRSS reached %ld KiB, over the bound of %" PRIu64 " KiB",
		         fst.rss_max_kib, bound_kib);
	assert_true(flood_conns == 0 || fst.closed_by_server > 0);
	free(all);
	for (unsigned i = 0; i < LEGIT_CLIENTS; i++)
		free(legit[i].us);
	redisFree(c);
	assert_int_equal(it_stop(&d), 0);
	it_dir_remove(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_flood)};
	struct rlimit rl;
	const char *e;

	if ((e = getenv("TG_FLOOD_CONNS")) != NULL && *e)
		flood_conns = (unsigned)strtoul(e, NULL, 10);
	if ((e = getenv("TG_FLOOD_SECONDS")) != NULL && *e)
		flood_seconds = (unsigned)strtoul(e, NULL, 10);
	if ((e = getenv("TG_FLOOD_DURABILITY")) != NULL && *e)
		durability = e;
	const rlim_t need = 2 * (rlim_t)flood_conns + 1024;
	signal(SIGPIPE, SIG_IGN);
	/* The test and the daemon (which inherits it) each hold every flood connection. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
		rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < need) {
		fprintf(stderr, "test_flood: cannot raise the open file limit to %llu: skipped\n",
		        (unsigned long long)need);
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
