/*
 * test_security.c - the real tollgated against hostile and careless clients
 * (docs/SECURITY.md).
 *
 * Each test starts its own daemon (harness.c) with the limit it is about set
 * low, and checks three things: the offender gets a clear error or is cut
 * off within the documented time, a well-behaved client on the same daemon
 * is served all along, and the counter that says so moved.  Per-user roles
 * are checked command by command, with balances read back to prove that a
 * refused command moved nothing.  Connections "from another machine" come
 * from 127.0.0.2 (all of 127/8 is loopback on Linux).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "tg_shm-t.h"
#include "tg_table.h"

#define FMT(a, b) __attribute__((format(printf, a, b)))
#define D_NAT     "15551234567"

static const char rates_csv[] =
    "plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum\n"
    "flat,1,national,0.6,0,60,60,0\n";
static const char accounts_csv[] =
    "account,balance,plan,state,threshold,refill,refill_amount,payment\n"
    "100,10,flat,active,,off,,off\n"
    "101,10,flat,active,,off,,off\n";

struct fx {
	char dir[IT_PATH_MAX], rates[IT_PATH_MAX], accounts[IT_PATH_MAX], users[IT_PATH_MAX];
	char shm[64]; /* a segment name of the test's own, unlinked at teardown */
	struct it_daemon d;
	redisContext *c;
};

static struct fx fx;

static int
setup(void **state)
{
	(void)state;
	memset(&fx, 0, sizeof(fx));
	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_file_write(fx.dir, "rates.csv", rates_csv, fx.rates, sizeof(fx.rates)),
	                 0);
	assert_int_equal(
	    it_file_write(fx.dir, "accounts.csv", accounts_csv, fx.accounts, sizeof(fx.accounts)),
	    0);
	snprintf(fx.shm, sizeof(fx.shm), "/tg-sec-%d", (int)getpid());
	return 0;
}

static int
teardown(void **state)
{
	int rc = 0;
	(void)state;
	if (fx.c != NULL)
		redisFree(fx.c);
	fx.c = NULL;
	if (fx.d.pid > 0)
		rc = it_stop(&fx.d);
	shm_unlink(fx.shm);
	it_dir_remove(fx.dir);
	assert_int_equal(rc, 0);
	return 0;
}

/* Start the daemon with the test's rates and accounts, then extra flags (NULL-terminated). */
static int
start(const char *const *extra)
{
	const char *flags[48];
	unsigned n = 0;

	flags[n++] = "--rates";
	flags[n++] = fx.rates;
	flags[n++] = "--accounts";
	flags[n++] = fx.accounts;
	for (unsigned i = 0; extra != NULL && extra[i] != NULL; i++)
		flags[n++] = extra[i];
	flags[n] = NULL;
	assert_true(n < sizeof(flags) / sizeof(flags[0]));
	return it_start(&fx.d, fx.dir, flags);
}

static void
start_ok(const char *const *extra)
{
	assert_int_equal(start(extra), 0);
	fx.c = it_connect(&fx.d);
	assert_non_null(fx.c);
}

/* The daemon must refuse to start, with want in its log. */
static void
start_refused(const char *const *extra, const char *want)
{
	assert_int_equal(start(extra), -1);
	if (!it_log_has(&fx.d, want))
		fail_msg("tollgated's log does not say '%s'", want);
}

/* ---- commands ---- */

static char last[256];

static redisReply *cmd(redisContext *c, const char *fmt, ...) FMT(2, 3);

static redisReply *
cmd(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last, sizeof(last), fmt, ap);
	va_end(ap);
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (r == NULL)
		fail_msg("%s: no reply (%s)", last, c->errstr);
	return r;
}

static void
expect_status(redisReply *r, const char *s)
{
	if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, s) != 0)
		fail_msg("%s: expected +%s, got type %d '%s'", last, s, r->type,
		         r->type == REDIS_REPLY_INTEGER ? "" : r->str);
	freeReplyObject(r);
}

static void
expect_bulk(redisReply *r, const char *s)
{
	if (r->type != REDIS_REPLY_STRING || strcmp(r->str, s) != 0)
		fail_msg("%s: expected '%s', got type %d '%s'", last, s, r->type,
		         r->type == REDIS_REPLY_INTEGER ? "" : r->str);
	freeReplyObject(r);
}

static void
expect_type(redisReply *r, int type)
{
	if (r->type != type)
		fail_msg("%s: expected a reply of type %d, got %d '%s'", last, type, r->type,
		         r->type == REDIS_REPLY_INTEGER ? "" : r->str);
	freeReplyObject(r);
}

/* An error reply starting with prefix. */
static void
expect_err(redisReply *r, const char *prefix)
{
	if (r->type != REDIS_REPLY_ERROR || strncmp(r->str, prefix, strlen(prefix)) != 0)
		fail_msg("%s: expected -%s..., got type %d '%s'", last, prefix, r->type,
		         r->type == REDIS_REPLY_INTEGER ? "" : r->str);
	freeReplyObject(r);
}

/* The value of "key:" in INFO. */
static long long
info_int(redisContext *c, const char *key)
{
	char pat[80];
	redisReply *r = cmd(c, "INFO");
	if (r->type != REDIS_REPLY_STRING)
		fail_msg("INFO: %s", r->type == REDIS_REPLY_ERROR ? r->str : "not a bulk string");
	snprintf(pat, sizeof(pat), "\r\n%s:", key);
	const char *p = strstr(r->str, pat);
	if (p == NULL)
		fail_msg("INFO has no %s", key);
	long long v = strtoll(p + strlen(pat), NULL, 10);
	freeReplyObject(r);
	return v;
}

/* Poll INFO until key is want, for up to ms. */
static void
wait_info(redisContext *c, const char *key, long long want, unsigned ms)
{
	uint64_t end = tg_mono_ms() + ms;
	long long v;
	while ((v = info_int(c, key)) != want) {
		if (tg_mono_ms() > end)
			fail_msg("INFO %s is %lld, expected %lld", key, v, want);
		it_sleep_ms(20);
	}
}

/* The balance of an account, as ACCT.GET prints it. */
static void
expect_balance(redisContext *c, unsigned acct, const char *want)
{
	redisReply *r = cmd(c, "ACCT.GET %u", acct);
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
	    strcmp(r->element[0]->str, "balance"))
		fail_msg("ACCT.GET %u: unexpected reply", acct);
	if (strcmp(r->element[1]->str, want) != 0)
		fail_msg("account %u: balance %s, expected %s", acct, r->element[1]->str, want);
	freeReplyObject(r);
}

/* ---- raw sockets ---- */

/* A TCP connection to the daemon from source address src ("127.0.0.2"), or -1. */
static int
raw_from(const char *src, uint16_t port)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
	struct sockaddr_in me = {.sin_family = AF_INET};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
	inet_pton(AF_INET, src, &me.sin_addr);
	if (bind(fd, (struct sockaddr *)&me, sizeof(me)) != 0 ||
	    connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* hiredis over a connection from src. */
static redisContext *
connect_from(const char *src)
{
	struct timeval tv = {.tv_sec = 10};
	int fd = raw_from(src, fx.d.port);
	assert_true(fd >= 0);
	redisContext *c = redisConnectFd(fd);
	assert_non_null(c);
	assert_int_equal(redisSetTimeout(c, tv), REDIS_OK);
	return c;
}

/* Read exactly the bytes of want; with closed_want, then the end of the stream. */
static void
raw_expect(int fd, const char *want, int closed_want)
{
	char buf[4096], more[64];
	int closed;
	size_t n = strlen(want);

	assert_true(n < sizeof(buf));
	it_raw_read(fd, buf, n + 1, 3000, &closed);
	if (strcmp(buf, want) != 0)
		fail_msg("raw reply '%s', expected '%s'", buf, want);
	if (closed_want && !closed && it_raw_read(fd, more, sizeof(more), 3000, &closed) != 0)
		fail_msg("after '%s' came '%s'", want, more);
	if (closed_want && !closed)
		fail_msg("after '%s' the connection is still open", want);
}

static void
raw_send(int fd, const char *s)
{
	assert_int_equal(it_raw_write(fd, s, strlen(s)), 0);
}

/* Resident memory of a process, KiB (VmRSS). */
static long
rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "VmRSS:", 6) == 0)
			kib = strtol(line + 6, NULL, 10);
	fclose(f);
	return kib;
}

/* ------------------------------------------------------------------ */
/* users and roles                                                     */

static void
write_users(const char *text, mode_t mode)
{
	assert_int_equal(it_file_write(fx.dir, "users", text, fx.users, sizeof(fx.users)), 0);
	assert_int_equal(chmod(fx.users, mode), 0);
}

static void
test_roles(void **state)
{
	(void)state;
	write_users("# one switch, one refill worker, one operator\n"
	            "sw1 call sw-pass\n"
	            "rf1 refill rf-pass\n"
	            "ops admin ops pass\n",
	            0600);
	const char *const f[] = {"--users", fx.users, "--requirepass", "root-pass", NULL};
	start_ok(f);
	redisContext *sw = fx.c, *rf = it_connect(&fx.d), *ops = it_connect(&fx.d);
	assert_non_null(rf);
	assert_non_null(ops);

	/* Before AUTH: NOAUTH, as with requirepass alone. */
	expect_status(cmd(sw, "PING"), "PONG");
	expect_err(cmd(sw, "CDR 100 %s 60 pre", D_NAT), "NOAUTH");
	expect_err(cmd(sw, "AUTH sw1 wrong"), "WRONGPASS invalid username-password pair");
	expect_err(cmd(sw, "AUTH nobody sw-pass"), "WRONGPASS");
	expect_err(cmd(sw, "AUTH sw-pass"), "WRONGPASS"); /* that is the default user's */
	expect_status(cmd(sw, "AUTH sw1 sw-pass"), "OK");

	/* A switch: call control, CDRs, quotes, reading an account. */
	expect_bulk(cmd(sw, "CDR 100 %s 60 r1", D_NAT), "0.6");
	expect_type(cmd(sw, "CALL.AUTH 100 %s c1", D_NAT), REDIS_REPLY_INTEGER);
	/* Past the permission check: the grant already took all the money. */
	expect_err(cmd(sw, "CALL.UPDATE 100 c1 10"), "BLOCKED");
	expect_bulk(cmd(sw, "CALL.END 100 c1 0"), "0");
	expect_type(cmd(sw, "RATE flat %s 60", D_NAT), REDIS_REPLY_ARRAY);
	expect_type(cmd(sw, "ACCT.GET 100"), REDIS_REPLY_ARRAY);
	expect_type(cmd(sw, "INFO server"), REDIS_REPLY_STRING);
	expect_bulk(cmd(sw, "ECHO hi"), "hi");
	/* ... and nothing else. */
	static const char *const refused[][5] = {
	    {"ACCT.SET", "100", "BALANCE", "1000", NULL},
	    {"ACCT.CREDIT", "100", "5", "t-sw", NULL},
	    {"ACCT.REFILL.FAILED", "100", "refill:100:1", NULL},
	    {"RATES.RELOAD", NULL},
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		int argc = 0;
		while (refused[i][argc] != NULL)
			argc++;
		for (int twice = 0; twice < 2; twice++) {
			char want[128];
			redisReply *r = redisCommandArgv(sw, argc, (const char **)refused[i], NULL);
			assert_non_null(r);
			snprintf(want, sizeof(want),
			         "NOPERM this user has no permissions to run the '%s' command "
			         "(role call)",
			         refused[i][0]);
			if (r->type != REDIS_REPLY_ERROR || strcmp(r->str, want) != 0)
				fail_msg("%s: got '%s', expected '%s'", refused[i][0],
				         r->type == REDIS_REPLY_INTEGER ? "" : r->str, want);
			freeReplyObject(r);
		}
	}
	/* A failed AUTH leaves the connection as it was. */
	expect_err(cmd(sw, "AUTH ops wrong"), "WRONGPASS");
	expect_bulk(cmd(sw, "CDR 100 %s 60 r2", D_NAT), "0.6");
	expect_err(cmd(sw, "ACCT.SET 100 BALANCE 1000"), "NOPERM");

	/* A refill worker: credits and failures, reading an account. */
	expect_status(cmd(rf, "AUTH rf1 rf-pass"), "OK");
	expect_bulk(cmd(rf, "ACCT.CREDIT 100 5 t1"), "13.8");
	expect_type(cmd(rf, "ACCT.GET 100"), REDIS_REPLY_ARRAY);
	expect_err(cmd(rf, "CDR 100 %s 60 r3", D_NAT), "NOPERM");
	expect_err(cmd(rf, "CALL.AUTH 100 %s c2", D_NAT), "NOPERM");
	expect_err(cmd(rf, "ACCT.SET 100 BALANCE 1000"), "NOPERM");
	expect_err(cmd(rf, "RATES.RELOAD"), "NOPERM");

	/* An operator: everything, as the default user (requirepass) is. */
	expect_status(cmd(ops, "AUTH ops %s", "ops pass"), "OK");
	expect_status(cmd(ops, "ACCT.SET 101 BALANCE 20"), "OK");
	expect_status(cmd(ops, "RATES.RELOAD"), "OK");
	expect_bulk(cmd(ops, "CDR 101 %s 60 o1", D_NAT), "0.6");
	expect_bulk(cmd(ops, "ACCT.CREDIT 101 1 o2"), "20.4");
	redisContext *root = it_connect(&fx.d);
	assert_non_null(root);
	expect_status(cmd(root, "AUTH root-pass"), "OK");
	expect_status(cmd(root, "ACCT.SET 101 STATE active"), "OK");
	expect_status(cmd(root, "AUTH default root-pass"), "OK");
	expect_status(cmd(root, "RATES.RELOAD"), "OK");
	/* Re-AUTH changes the role both ways. */
	expect_status(cmd(root, "AUTH sw1 sw-pass"), "OK");
	expect_err(cmd(root, "ACCT.SET 101 STATE active"), "NOPERM");
	expect_status(cmd(root, "AUTH ops %s", "ops pass"), "OK");
	expect_status(cmd(root, "ACCT.SET 101 STATE active"), "OK");

	/* Nothing refused moved money: 10 - 0.6 - 0.6 + 5, and 20 - 0.6 + 1. */
	expect_balance(ops, 100, "13.8");
	expect_balance(ops, 101, "20.4");
	assert_int_equal(info_int(ops, "noperm"), 4 * 2 + 1 + 4 + 1);
	assert_int_equal(info_int(ops, "auth_failures"), 4);
	assert_int_equal(info_int(ops, "cdr"), 3);
	redisFree(rf);
	redisFree(ops);
	redisFree(root);
}

/* Users but no requirepass: no default user, and AUTH is still required. */
static void
test_users_without_requirepass(void **state)
{
	(void)state;
	write_users("sw1 call sw-pass\n", 0640);
	const char *const f[] = {"--users", fx.users, NULL};
	start_ok(f);
	expect_err(cmd(fx.c, "ACCT.GET 100"), "NOAUTH");
	expect_err(cmd(fx.c, "AUTH sw-pass"), "WRONGPASS");
	expect_err(cmd(fx.c, "AUTH default sw-pass"), "WRONGPASS");
	expect_status(cmd(fx.c, "AUTH sw1 sw-pass"), "OK");
	expect_type(cmd(fx.c, "ACCT.GET 100"), REDIS_REPLY_ARRAY);
	expect_err(cmd(fx.c, "ACCT.SET 100 STATE closed"), "NOPERM");
}

static void
test_users_file_refused(void **state)
{
	(void)state;
	write_users("sw1 call sw-pass\n", 0644);
	const char *const f[] = {"--users", fx.users, NULL};
	start_refused(f, "lets every user read or change it; chmod 600");
	write_users("sw1 call sw-pass\nsw2 switch pw\n", 0600);
	start_refused(f, "users:2: role 'switch': must be call, refill or admin");
	const char *const missing[] = {"--users", "/nonexistent/users", NULL};
	start_refused(missing, "cannot read users file /nonexistent/users");
}

/* ------------------------------------------------------------------ */
/* failed AUTHs: per connection, then per address                      */

static void
test_auth_failures(void **state)
{
	(void)state;
	const char *const f[] = {"--requirepass",
	                         "right",
	                         "--auth-max-failures",
	                         "2",
	                         "--auth-addr-failures",
	                         "4",
	                         "--auth-lockout",
	                         "3",
	                         NULL};
	start_ok(f);
	static const char wrong[] = "-WRONGPASS invalid username-password pair\r\n";
	char two[128];
	snprintf(two, sizeof(two), "%s%s", wrong, wrong);

	/* auth-max-failures: the second failure on a connection closes it (the PING is never run).
	 */
	for (int k = 0; k < 2; k++) {
		int fd = raw_from("127.0.0.1", fx.d.port);
		assert_true(fd >= 0);
		raw_send(fd, "AUTH x\r\nAUTH y\r\nPING\r\n");
		raw_expect(fd, two, 1);
		close(fd);
	}
	/* That was 4 from 127.0.0.1: locked out, so the right password is refused too. */
	int fd = raw_from("127.0.0.1", fx.d.port);
	assert_true(fd >= 0);
	raw_send(fd, "AUTH right\r\n");
	char buf[256];
	int closed;
	it_raw_read(fd, buf, sizeof(buf), 500, &closed);
	if (strncmp(buf,
	            "-WRONGPASS too many failed AUTH attempts from this address: try again in ",
	            72) != 0)
		fail_msg("locked out AUTH got '%s'", buf);
	raw_send(fd, "PING\r\nCDR 100 " D_NAT " 60 x\r\n");
	raw_expect(fd, "+PONG\r\n-NOAUTH Authentication required.\r\n", 0);
	close(fd);
	/* Another address is not locked out. */
	redisContext *other = connect_from("127.0.0.2");
	expect_status(cmd(other, "AUTH right"), "OK");
	assert_int_equal(info_int(other, "auth_failures"), 4);
	assert_int_equal(info_int(other, "auth_failure_closes"), 2);
	assert_int_equal(info_int(other, "auth_lockouts"), 1);
	assert_int_equal(info_int(other, "auth_locked_refused"), 1);
	assert_true(
	    it_log_has(&fx.d, "AUTH: 4 failures from 127.0.0.1 within 3 s: locked out for 3 s"));
	/* The lockout ends. */
	it_sleep_ms(3200);
	redisContext *back = connect_from("127.0.0.1");
	expect_status(cmd(back, "AUTH right"), "OK");
	expect_bulk(cmd(back, "CDR 100 %s 60 after", D_NAT), "0.6");
	redisFree(back);
	redisFree(other);
}

/* ------------------------------------------------------------------ */
/* connection limits                                                   */

static void
test_max_clients_per_addr(void **state)
{
	(void)state;
	const char *const f[] = {"--max-clients-per-addr", "3", NULL};
	start_ok(f);
	wait_info(fx.c, "connected_clients", 1, 3000); /* the harness's probe is gone */
	int fds[3];
	for (int i = 0; i < 2; i++) {
		fds[i] = raw_from("127.0.0.1", fx.d.port);
		assert_true(fds[i] >= 0);
		raw_send(fds[i], "PING\r\n");
		raw_expect(fds[i], "+PONG\r\n", 0);
	}
	/* The fourth from 127.0.0.1 is told why and closed. */
	fds[2] = raw_from("127.0.0.1", fx.d.port);
	assert_true(fds[2] >= 0);
	raw_expect(fds[2], "-ERR too many connections from this address\r\n", 1);
	close(fds[2]);
	/* Another address has its own three. */
	redisContext *o[3];
	for (int i = 0; i < 3; i++) {
		o[i] = connect_from("127.0.0.2");
		expect_status(cmd(o[i], "PING"), "PONG");
	}
	int extra = raw_from("127.0.0.2", fx.d.port);
	raw_expect(extra, "-ERR too many connections from this address\r\n", 1);
	close(extra);
	/* A closed connection gives its place back. */
	close(fds[0]);
	wait_info(fx.c, "connected_clients", 5, 3000);
	int again = raw_from("127.0.0.1", fx.d.port);
	raw_send(again, "PING\r\n");
	raw_expect(again, "+PONG\r\n", 0);
	close(again);
	close(fds[1]);
	assert_int_equal(info_int(fx.c, "connections_addr_rejected"), 2);
	assert_int_equal(info_int(fx.c, "rejected_connections"), 0);
	for (int i = 0; i < 3; i++)
		redisFree(o[i]);
}

/*
 * Many addresses opening and closing at random, enough of them to collide in
 * the per-address table: each may always hold exactly its limit, never more,
 * however the table's entries have moved.
 */
static void
test_max_clients_per_addr_churn(void **state)
{
	enum { ADDRS = 60, PER = 2, ROUNDS = 300 };
	static int fds[ADDRS][PER];
	uint64_t seed = 42;

	(void)state;
	const char *const f[] = {"--max-clients-per-addr", "2", "--max-clients", "200", NULL};
	start_ok(f);
	for (int a = 0; a < ADDRS; a++)
		for (int k = 0; k < PER; k++)
			fds[a][k] = -1;
	for (int round = 0; round < ROUNDS; round++) {
		char src[32];
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		int a = (int)((seed >> 33) % ADDRS), k = (int)((seed >> 20) % PER);
		snprintf(src, sizeof(src), "127.0.1.%d", a + 1);
		if (fds[a][k] >= 0) {
			close(fds[a][k]);
			fds[a][k] = -1;
			continue;
		}
		/* The place of a connection just closed comes back once the server has seen it go.
		 */
		for (int tries = 0;; tries++) {
			char buf[128];
			int closed;
			int fd = raw_from(src, fx.d.port);
			assert_true(fd >= 0);
			raw_send(fd, "PING\r\n");
			it_raw_read(fd, buf, 8, 2000, &closed);
			if (strcmp(buf, "+PONG\r\n") == 0) {
				fds[a][k] = fd;
				break;
			}
			close(fd);
			if (tries > 200)
				fail_msg("round %d: %s cannot open connection %d: '%s'", round, src,
				         k, buf);
			it_sleep_ms(5);
		}
		/* Full: one more is refused. */
		int open_now = 0;
		for (int j = 0; j < PER; j++)
			open_now += fds[a][j] >= 0;
		if (open_now == PER) {
			int fd = raw_from(src, fx.d.port);
			raw_expect(fd, "-ERR too many connections from this address\r\n", 1);
			close(fd);
		}
	}
	for (int a = 0; a < ADDRS; a++)
		for (int k = 0; k < PER; k++)
			if (fds[a][k] >= 0)
				close(fds[a][k]);
	/* Every address gets its two back at the end. */
	wait_info(fx.c, "connected_clients", 1, 3000);
	for (int a = 0; a < ADDRS; a++) {
		char src[32];
		snprintf(src, sizeof(src), "127.0.1.%d", a + 1);
		for (int k = 0; k < PER; k++) {
			fds[a][k] = raw_from(src, fx.d.port);
			raw_send(fds[a][k], "PING\r\n");
			raw_expect(fds[a][k], "+PONG\r\n", 0);
		}
	}
	for (int a = 0; a < ADDRS; a++)
		for (int k = 0; k < PER; k++)
			close(fds[a][k]);
}

/* Before AUTH nobody pipelines: a peer that does is cut off after 2 KiB of replies. */
static void
test_noauth_pipelining(void **state)
{
	static char flood[6 * 1000 + 1];

	(void)state;
	const char *const f[] = {"--requirepass", "pw", NULL};
	start_ok(f);
	for (int i = 0; i < 1000; i++)
		memcpy(flood + 6 * i, "PING\r\n", 6);
	int fd = raw_from("127.0.0.1", fx.d.port);
	assert_int_equal(it_raw_write(fd, flood, 6000), 0);
	static char buf[16384];
	int closed;
	size_t n = it_raw_read(fd, buf, sizeof(buf), 3000, &closed);
	close(fd);
	static const char tail[] = "-ERR too many requests before AUTH\r\n";
	assert_true(closed);
	assert_true(n > sizeof(tail));
	assert_string_equal(buf + n - (sizeof(tail) - 1), tail);
	size_t pongs = (n - (sizeof(tail) - 1)) / 7;
	assert_true(pongs >= 2048 / 7 && pongs < 1000);
	redisContext *c = connect_from("127.0.0.2");
	expect_status(cmd(c, "AUTH pw"), "OK");
	assert_int_equal(info_int(c, "noauth_closes"), 1);
	/* Authenticated, the same pipeline is fine. */
	fd = raw_from("127.0.0.1", fx.d.port);
	raw_send(fd, "AUTH pw\r\n");
	raw_expect(fd, "+OK\r\n", 0);
	assert_int_equal(it_raw_write(fd, flood, 6000), 0);
	n = 0;
	while (n < 7000) {
		size_t got = it_raw_read(fd, buf + n, sizeof(buf) - n, 3000, &closed);
		if (got == 0)
			break;
		n += got;
	}
	assert_int_equal(n, 7000);
	close(fd);
	redisFree(c);
}

static void
test_max_clients(void **state)
{
	(void)state;
	/* One worker, so the limit is exact (with several, it is per worker: docs/SECURITY.md). */
	const char *const f[] = {"--workers", "1", "--max-clients", "3", NULL};
	start_ok(f);
	wait_info(fx.c, "connected_clients", 1, 3000);
	int a = raw_from("127.0.0.1", fx.d.port), b = raw_from("127.0.0.1", fx.d.port);
	raw_send(a, "PING\r\n");
	raw_expect(a, "+PONG\r\n", 0);
	raw_send(b, "PING\r\n");
	raw_expect(b, "+PONG\r\n", 0);
	int c = raw_from("127.0.0.2", fx.d.port);
	raw_expect(c, "-ERR max number of clients reached\r\n", 1);
	close(c);
	assert_int_equal(info_int(fx.c, "rejected_connections"), 1);
	close(a);
	close(b);
}

/* ------------------------------------------------------------------ */
/* request limits                                                      */

static void
test_max_args_and_request(void **state)
{
	(void)state;
	const char *const f[] = {"--max-args", "6", "--max-request", "1024", NULL};
	start_ok(f);
	/* Up to 6 arguments, name included, in both forms. */
	expect_bulk(cmd(fx.c, "CDR 100 %s 60 a1", D_NAT), "0.6");
	expect_status(cmd(fx.c, "ACCT.SET 100 STATE active PAYMENT off"), "OK");
	int fd = raw_from("127.0.0.1", fx.d.port);
	raw_send(fd, "ACCT.SET 100 STATE active PAYMENT off BALANCE 999\r\n");
	raw_expect(fd, "-ERR Protocol error: too many arguments\r\n", 1);
	close(fd);
	fd = raw_from("127.0.0.1", fx.d.port);
	raw_send(fd, "PING\r\n*7\r\n$4\r\nPING\r\n");
	raw_expect(fd, "+PONG\r\n-ERR Protocol error: too many arguments\r\n", 1);
	close(fd);
	/* max-request: 1024 bytes, authenticated or not (no password here). */
	char big[1200], req[1300];
	memset(big, 'x', 1100);
	big[1100] = '\0';
	fd = raw_from("127.0.0.1", fx.d.port);
	snprintf(req, sizeof(req), "ECHO %s\r\n", big);
	raw_send(fd, req);
	raw_expect(fd, "-ERR Protocol error: request too large\r\n", 1);
	close(fd);
	big[900] = '\0';
	expect_bulk(cmd(fx.c, "ECHO %s", big), big);
	/* None of it moved money. */
	expect_balance(fx.c, 100, "9.4");
	assert_int_equal(info_int(fx.c, "protocol_errors"), 3);
}

/* A client trickling a request one byte at a time is dropped after request-timeout. */
static void
test_request_timeout(void **state)
{
	(void)state;
	const char *const f[] = {"--request-timeout", "1", NULL};
	start_ok(f);
	static const char slow[] =
	    "*2\r\n$4\r\nPING\r\n$40\r\n0123456789012345678901234567890123456789\r\n";
	int fd = raw_from("127.0.0.1", fx.d.port);
	uint64_t t0 = tg_mono_ms(), closed_at = 0;
	/* One byte every 100 ms: never idle, never a whole request within a second. */
	for (size_t i = 0; i < sizeof(slow) - 1 && closed_at == 0; i++) {
		char buf[128];
		int closed;
		if (send(fd, slow + i, 1, MSG_NOSIGNAL) < 0) {
			closed_at = tg_mono_ms() - t0;
			break;
		}
		/* Meanwhile a client sending whole requests is served. */
		expect_status(cmd(fx.c, "PING"), "PONG");
		size_t n = it_raw_read(fd, buf, sizeof(buf), 100, &closed);
		assert_int_equal(n, 0); /* no reply to part of a request */
		if (closed)
			closed_at = tg_mono_ms() - t0;
	}
	close(fd);
	if (closed_at < 900 || closed_at > 2500)
		fail_msg("the trickling connection closed after %llu ms, expected about 1000",
		         (unsigned long long)closed_at);
	assert_int_equal(info_int(fx.c, "connections_request_timeout"), 1);
	assert_int_equal(info_int(fx.c, "idle_closed_connections"), 0);
	/* A request split in two within the timeout is fine. */
	fd = raw_from("127.0.0.1", fx.d.port);
	raw_send(fd, "*2\r\n$4\r\nECHO\r\n$2\r\n");
	it_sleep_ms(400);
	raw_send(fd, "ok\r\n");
	raw_expect(fd, "$2\r\nok\r\n", 0);
	close(fd);
}

/*
 * auth-timeout: a connection that keeps itself busy with PING but never
 * authenticates is closed at the deadline; one that authenticated in time
 * stays, however long after.
 */
static void
test_auth_timeout(void **state)
{
	(void)state;
	const char *const f[] = {"--requirepass", "pw-at-1", "--auth-timeout", "1", NULL};
	start_ok(f);
	int lazy = raw_from("127.0.0.1", fx.d.port);
	int good = raw_from("127.0.0.1", fx.d.port);
	raw_send(good, "AUTH pw-at-1\r\n");
	raw_expect(good, "+OK\r\n", 0);
	uint64_t t0 = tg_mono_ms(), closed_at = 0;
	while (closed_at == 0 && tg_mono_ms() - t0 < 4000) {
		char buf[64];
		int closed = 0;
		if (send(lazy, "PING\r\n", 6, MSG_NOSIGNAL) < 0)
			closed_at = tg_mono_ms() - t0;
		else if (it_raw_read(lazy, buf, sizeof(buf), 200, &closed) == 0 || closed)
			closed_at = closed ? tg_mono_ms() - t0 : 0;
	}
	close(lazy);
	if (closed_at < 900 || closed_at > 2500)
		fail_msg("the unauthenticated connection closed after %llu ms, expected about 1000",
		         (unsigned long long)closed_at);
	raw_send(good, "PING\r\n");
	raw_expect(good, "+PONG\r\n", 0);
	close(good);
	/* fx.c never authenticated either: it went the same way.  A fresh one counts. */
	redisFree(fx.c);
	fx.c = it_connect(&fx.d);
	assert_non_null(fx.c);
	expect_status(cmd(fx.c, "AUTH pw-at-1"), "OK");
	assert_true(info_int(fx.c, "auth_timeouts") >= 1);
}

/*
 * A client that pipelines and reads nothing: its replies back up, the
 * server stops reading it, and after reply-timeout with no progress it is
 * closed; memory does not grow with what it sends.  A client that reads
 * slowly but steadily is not cut off, however long it takes.
 */
static void
test_reply_timeout(void **state)
{
	(void)state;
	const char *const f[] = {"--reply-timeout", "1", NULL};
	start_ok(f);
	char pad[4001], req[4100];
	memset(pad, 'p', 4000);
	pad[4000] = '\0';
	int n = snprintf(req, sizeof(req), "ECHO %s\r\n", pad);
	long rss0 = rss_kib(fx.d.pid);

	int fd = raw_from("127.0.0.1", fx.d.port);
	assert_true(fd >= 0);
	int rcv = 4096;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	fcntl(fd, F_SETFL, O_NONBLOCK);
	/* Write until the server stops taking anything for 300 ms. */
	size_t sent = 0;
	uint64_t t0 = tg_mono_ms(), quiet = tg_mono_ms();
	while (tg_mono_ms() - quiet < 300 && tg_mono_ms() - t0 < 10000) {
		ssize_t w = send(fd, req, (size_t)n, MSG_NOSIGNAL);
		if (w > 0) {
			sent += (size_t)w;
			quiet = tg_mono_ms();
		} else {
			it_sleep_ms(5);
		}
	}
	uint64_t stuck = tg_mono_ms();
	assert_true(sent > 100000);
	/* Served meanwhile, and then the non-reader is cut off within about a second. */
	expect_status(cmd(fx.c, "PING"), "PONG");
	wait_info(fx.c, "connections_stalled", 1, 5000);
	uint64_t took = tg_mono_ms() - stuck;
	long rss1 = rss_kib(fx.d.pid);
	close(fd);
	print_message(
	    "non-reader: %zu bytes sent before the server stopped reading; closed %llu ms "
	    "later; RSS %ld -> %ld KiB\n",
	    sent, (unsigned long long)took, rss0, rss1);
	if (took > 3000)
		fail_msg("the non-reader was closed after %llu ms, expected reply-timeout (1 s)",
		         (unsigned long long)took);
	/* Its backlog is one output buffer and a few receive buffers, not what it sent. */
	assert_true(rss1 - rss0 < 16 * 1024);
	assert_int_equal(info_int(fx.c, "idle_closed_connections"), 0);

	/* A slow reader that keeps reading: 8 MB of replies over about 3 s, never cut off. */
	redisContext *slow = it_connect(&fx.d);
	assert_non_null(slow);
	for (int i = 0; i < 2000; i++)
		redisAppendCommand(slow, "ECHO %s", pad);
	for (int i = 0; i < 2000; i++) {
		redisReply *r;
		if (i % 50 == 0)
			it_sleep_ms(70);
		assert_int_equal(redisGetReply(slow, (void **)&r), REDIS_OK);
		assert_int_equal(r->type, REDIS_REPLY_STRING);
		assert_int_equal(r->len, 4000);
		freeReplyObject(r);
	}
	expect_status(cmd(slow, "PING"), "PONG");
	redisFree(slow);
	assert_int_equal(info_int(fx.c, "connections_stalled"), 1);
}

/* ------------------------------------------------------------------ */
/* the segment                                                         */

static void
test_shm_permissions(void **state)
{
	struct stat st;
	char path[128];

	(void)state;
	const char *const loose[] = {"--shm-mode", "0666", NULL};
	start_refused(loose, "shm-mode: 0666 must let the engine read and write and no one else "
	                     "write");
	const char *const nogroup[] = {"--shm-mode", "0640", "--shm-group", "no-such-group-tg",
	                               NULL};
	start_refused(nogroup, "shm-group 'no-such-group-tg': no such group");

	/* A segment left by someone else under our name is refused, and left alone. */
	int fd = shm_open(fx.shm, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	/* The size the harness's capacity (4096 accounts) makes: only the header is wrong. */
	assert_int_equal(ftruncate(fd, (off_t)tg_table_size(4096)), 0);
	/*
	 * Without a journal: with one, a segment of ours that is not readable is
	 * rebuilt from the journal instead (docs/JOURNAL.md), never attached either.
	 */
	const char *const reuse[] = {"--shm-name",   fx.shm, "--shm-reuse", "yes",
	                             "--durability", "off",  NULL};
	if (geteuid() == 0) {
		assert_int_equal(fchown(fd, 65534, 65534), 0);
		start_refused(reuse, "belongs to uid 65534, not to this user");
		assert_int_equal(fchown(fd, 0, 0), 0);
	}
	/* Ours, but not a tollgate segment (garbage where the magic goes). */
	assert_int_equal(pwrite(fd, "NOTTOLL!", 8, 0), 8);
	start_refused(reuse, "not a tollgate segment (bad magic)");
	/* A tollgate segment of another layout version. */
	uint64_t magic = TG_SHM_MAGIC;
	uint32_t version = TG_SHM_VERSION + 1;
	assert_int_equal(pwrite(fd, &magic, 8, offsetof(struct tg_shm_hdr, magic)), 8);
	assert_int_equal(pwrite(fd, &version, 4, offsetof(struct tg_shm_hdr, version)), 4);
	char want[128];
	snprintf(want, sizeof(want), "layout version %u, this build reads version %u", version,
	         TG_SHM_VERSION);
	start_refused(reuse, want);
	close(fd);
	shm_unlink(fx.shm);

	if (geteuid() != 0) {
		print_message("not root: shm-group is not tested through tollgated\n");
		return;
	}
	const char *const grp[] = {"--shm-name",  fx.shm,  "--shm-mode", "0640",
	                           "--shm-group", "65534", NULL};
	start_ok(grp);
	snprintf(path, sizeof(path), "/dev/shm%s", fx.shm);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_gid, 65534);
	assert_int_equal(st.st_uid, geteuid());
}

int
main(void)
{
	// clang-format off
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roles, setup, teardown),
		cmocka_unit_test_setup_teardown(test_users_without_requirepass, setup, teardown),
		cmocka_unit_test_setup_teardown(test_users_file_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_clients_per_addr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_clients_per_addr_churn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_noauth_pipelining, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_clients, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_args_and_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_request_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reply_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shm_permissions, setup, teardown),
	};
	// clang-format on
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
