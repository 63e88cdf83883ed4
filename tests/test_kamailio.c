/*
 * test_kamailio.c - a real SIP switch authorizes, limits and bills its calls
 * through tollgated.
 *
 * Kamailio from Debian's packages runs tools/kamailio/tollgate.cfg unchanged
 * (its settings given as -A defines), talking to the real tollgated through
 * its stock ndb_redis module; tollgated publishes refills to a real, private
 * redis-server.  Two SIP user agents written below, a caller and a callee on
 * their own UDP sockets, place real calls through Kamailio on loopback: the
 * caller sends INVITE, Kamailio asks tollgated and relays it to the callee
 * (the config's next hop), the callee answers, the caller ACKs and later
 * hangs up with BYE, or Kamailio tears the call down with BYE to both sides.
 * The test then checks, from tollgated's side, what each call cost.
 *
 * Everything runs on loopback on ports the kernel picked, with Kamailio's
 * pid file, runtime directory, log and tables in a private directory, so
 * runs can go in parallel.  Kamailio runs in the foreground (-DD -E) and is
 * stopped whatever happens (teardown, a watchdog alarm, SIGTERM, exit).
 * Where Kamailio or its ndb_redis module is not installed the test is
 * skipped (77) with the reason; tools/quickstart installs both.  Money is
 * micro-units (tg_money_t), never floats.  TEST_KAMAILIO_LOG=1 prints
 * Kamailio's logs at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rcmd.h"
#include "redis_harness.h"
#include "sentinel_harness.h"
#include "tg_money.h"

#define FMT(a, b) __attribute__((format(printf, a, b)))

#define STREAM "tollgate:refill"
/*
 * $0.60 a minute billed by the second: one second costs $0.01.  112 and 911
 * are always allowed (emergency): 112 at $0.06 a minute ($0.001 a second,
 * so its bill shows), 911 free.
 */
#define RATES                                                                                      \
	"plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum,always\n"         \
	"kam,1,national,0.6,0,1,1,0,no\n"                                                          \
	"kam,112,other,0.06,0,1,1,0,yes\n"                                                         \
	"kam,911,other,0,0,1,1,0,yes\n"
#define DEST   "14155550100"
#define NORATE "99912345"
/*
 * 1001 has credit and auto-refill (ADD $10 when the balance drops to $0.95);
 * 1002 is at $0.00; 1003 has $0.05, five seconds; 1004 is suspended; 1005
 * is reached through the account table, as caller "alice"; 1006 is at $0.00
 * and calls emergency numbers; 1007 may have one call at a time (MAXCALLS
 * 1, set by its test); 1008 and 1009 are closed in the middle of a call;
 * 1010's call ends while tollgated is away.
 */
#define ACCOUNTS                                                                                   \
	"account,balance,plan,state,threshold,refill,refill_amount,payment\n"                      \
	"1001,1,kam,active,0.95,add,10,on\n"                                                       \
	"1002,0,kam,active,0,off,,off\n"                                                           \
	"1003,0.05,kam,active,0,off,,off\n"                                                        \
	"1004,5,kam,suspended,0,off,,off\n"                                                        \
	"1005,5,kam,active,0,off,,off\n"                                                           \
	"1006,0,kam,active,0,off,,off\n"                                                           \
	"1007,5,kam,active,0,off,,off\n"                                                           \
	"1008,5,kam,active,0,off,,off\n"                                                           \
	"1009,5,kam,active,0,off,,off\n"                                                           \
	"1010,5,kam,active,0,off,,off\n"
/* Kamailio's db_text table: caller -> account (tools/kamailio/db/). */
#define ACCOUNT_TABLE                                                                              \
	"caller(str) account(str)\n"                                                               \
	"alice:1005\n"
/* Longest grant tollgated gives at once, s: calls must be extended. */
#define MAX_GRANT "4"
/* CALL.UPDATE this many seconds before a grant runs out. */
#define UPDATE_BEFORE "2"
/* The stop stream's tick in the test, an rtimer spec (250 ms). */
#define STOP_TIMER "name=tgstop;interval=250000u;mode=1;"
/*
 * A call of a closed account ends this long after ACCT.SET at most: through
 * the stop stream (a tick, then one or two ticks of the dialog module's 1 s timer), and
 * without it at the grant (MAX_GRANT) that CALL.UPDATE no longer extends.
 */
#define STOP_CUT_MS   2500
#define UPDATE_CUT_MS (4000 + 1500)
/* The whole test is killed after this long, whatever it is doing. */
#define WATCHDOG_S 115

/*
 * Milliseconds an agent takes to answer a BYE, a LAN's round trip.  At once
 * (microseconds, on loopback) the 200 OK to Kamailio's first BYE can come
 * back before it has sent the second, and Kamailio 5.6 then never sends the
 * second (docs/integrations/kamailio.md, "Failure modes").
 */
#define BYE_RTT_MS 20

#define MSG_MAX  8192
#define WAIT_MS  5000
#define LOG_MAX  (1 << 18)
#define KAM_ARGS 40

/* A SIP user agent: one UDP socket on 127.0.0.1. */
struct ua {
	int fd;
	uint16_t port;
	const char *name; /* its user part, in its Contact */
};

/* A running Kamailio. */
struct kam {
	pid_t pid;
	uint16_t port; /* its SIP port, UDP on 127.0.0.1 */
	char log[IT_PATH_MAX];
	char pidfile[IT_PATH_MAX];
};

/* Everything the tests share: started once, in order, by group_setup. */

static struct {
	char dir[IT_PATH_MAX], rates[IT_PATH_MAX], accounts[IT_PATH_MAX], db[IT_PATH_MAX];
	const char *bin, *cfg;
	struct tg_test_redis redis;
	struct it_daemon d;
	redisContext *e, *r;
	struct kam k;  /* fail closed, reading the stop stream: the configuration's defaults */
	struct kam k2; /* fail open, against a tollgated that is gone */
	struct kam k3; /* its stop-stream Redis unreachable */
	struct ua caller, callee; /* the callee is the configuration's next hop (GW_URI) */
	struct ua caller2;        /* a second caller, for a call while one is up */
	unsigned calls;           /* Call-IDs handed out */
	/* the Sentinel group: fx.d is the first primary, this its replica */
	struct it_daemon replica;
	struct it_sentinel s[3];
	bool sentinels;
} fx;

/* ------------------------------------------------------------------ */
/* Kamailio                                                            */

/* Every process of a Kamailio whose main process is pid: its children first. */
static void
kam_kill_all(pid_t pid)
{
	DIR *d = opendir("/proc");
	struct dirent *e;

	/* The children would outlive a SIGKILLed main process, holding the port. */
	while (d != NULL && (e = readdir(d)) != NULL) {
		char path[300], buf[512];
		long child = strtol(e->d_name, NULL, 10);
		if (child <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", child);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		const char *p = strrchr(buf, ')'); /* "pid (comm) state ppid ..." */
		long ppid = 0;
		char state;
		if (p != NULL && sscanf(p + 1, " %c %ld", &state, &ppid) == 2 && ppid == pid)
			kill((pid_t)child, SIGKILL);
	}
	if (d != NULL)
		closedir(d);
	kill(pid, SIGKILL);
}

/* Stop Kamailio: SIGTERM (it stops its children), then SIGKILL after 5 s. */
static void
kam_stop(struct kam *k)
{
	int status;

	if (k->pid <= 0)
		return;
	kill(k->pid, SIGTERM);
	uint64_t deadline = tg_mono_ms() + 5000;
	while (waitpid(k->pid, &status, WNOHANG) == 0) {
		if (tg_mono_ms() >= deadline) {
			fprintf(stderr, "kamailio did not stop on SIGTERM; killing it\n");
			kam_kill_all(k->pid);
			waitpid(k->pid, &status, 0);
			break;
		}
		it_sleep_ms(10);
	}
	k->pid = 0;
}

/*
 * The watchdog, a signal, or an exit with daemons still running: stop them
 * all, with async-signal-safe calls only.  Each Kamailio gets SIGTERM (its
 * main process stops its children) and 3 s before SIGKILL.
 */
static void
kill_everything(void)
{
	struct kam *const ks[] = {&fx.k, &fx.k2, &fx.k3};
	const size_t nk = sizeof(ks) / sizeof(ks[0]);

	for (size_t i = 0; i < nk; i++)
		if (ks[i]->pid > 0)
			kill(ks[i]->pid, SIGTERM);
	for (size_t i = 0; i < nk; i++) {
		if (ks[i]->pid <= 0)
			continue;
		uint64_t deadline = tg_mono_ms() + 3000;
		pid_t p;
		while ((p = waitpid(ks[i]->pid, NULL, WNOHANG)) == 0 && tg_mono_ms() < deadline)
			it_sleep_ms(10);
		if (p == 0)
			kill(ks[i]->pid, SIGKILL);
		ks[i]->pid = 0;
	}
	if (fx.d.pid > 0)
		kill(fx.d.pid, SIGKILL);
	if (fx.replica.pid > 0)
		kill(fx.replica.pid, SIGKILL);
	for (size_t i = 0; fx.sentinels && i < 3; i++)
		if (fx.s[i].pid > 0)
			kill(fx.s[i].pid, SIGKILL);
	if (fx.redis.pid > 0)
		kill(fx.redis.pid, SIGKILL);
}

static void
on_fatal_signal(int sig)
{
	static const char msg[] = "test_kamailio: watchdog or signal: killing everything\n";
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing more to do */
	}
	kill_everything();
	_exit(sig == SIGALRM ? 1 : 128 + sig);
}

static size_t
file_read(const char *path, char *buf, size_t cap)
{
	size_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t r;
		while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0)
			n += (size_t)r;
		close(fd);
	}
	buf[n] = '\0';
	return n;
}

static bool
kam_log_has(const struct kam *k, const char *text)
{
	static char buf[LOG_MAX];
	file_read(k->log, buf, sizeof(buf));
	return strstr(buf, text) != NULL;
}

/* How much Kamailio has logged so far: where to look for what comes next. */
static size_t
kam_log_size(const struct kam *k)
{
	struct stat st;
	return stat(k->log, &st) == 0 ? (size_t)st.st_size : 0;
}

/*
 * Wait for Kamailio's first "CALL.END <acct> <n> s: charged <amount>" line
 * logged after offset off; the seconds it billed into *secs and the amount
 * into *charged.
 */
static void
kam_wait_end(const struct kam *k, size_t off, unsigned acct, long *secs, tg_money_t *charged)
{
	static char buf[LOG_MAX];
	char pat[64], amount[32];
	uint64_t deadline = tg_mono_ms() + WAIT_MS;

	snprintf(pat, sizeof(pat), "tollgate: CALL.END %u ", acct);
	for (;;) {
		size_t n = file_read(k->log, buf, sizeof(buf));
		const char *p = off < n ? strstr(buf + off, pat) : NULL;
		if (p != NULL && strchr(p, '\n') != NULL) {
			if (sscanf(p + strlen(pat), "%ld s: charged %31s", secs, amount) != 2)
				fail_msg("unexpected line: %.80s", p);
			*charged = it_money(amount);
			return;
		}
		if (tg_mono_ms() >= deadline) {
			fprintf(stderr, "---- %s ----\n%s---- end of log ----\n", k->log, buf);
			fail_msg("no \"%s\" line within %d ms", pat, WAIT_MS);
		}
		it_sleep_ms(20);
	}
}

static void
kam_log_dump(const struct kam *k)
{
	static char buf[LOG_MAX];
	file_read(k->log, buf, sizeof(buf));
	fprintf(stderr, "---- %s ----\n%s---- end of log ----\n", k->log, buf);
}

/* A UDP port on 127.0.0.1 that nothing is bound to right now, or 0. */
static uint16_t
free_udp_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	uint16_t port = 0;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/*
 * Run kamailio with the configuration under test and defines (a
 * NULL-terminated list of -A values), listening on k->port, or only
 * checking the configuration (-c).  Its output goes to <dir>/<name>.log.
 * Returns the child's pid, or -1.
 */
static pid_t
kam_spawn(struct kam *k, const char *name, const char *const *defines, bool check_only)
{
	char listen[64], *argv[KAM_ARGS];
	unsigned n = 0;

	snprintf(listen, sizeof(listen), "LISTEN=udp:127.0.0.1:%u", k->port);
	it_pathf(k->log, sizeof(k->log), "%s/%s.log", fx.dir, name);
	it_pathf(k->pidfile, sizeof(k->pidfile), "%s/%s.pid", fx.dir, name);
	argv[n++] = (char *)fx.bin;
	argv[n++] = (char *)"-f";
	argv[n++] = (char *)fx.cfg;
	if (check_only) {
		argv[n++] = (char *)"-c";
	} else {
		/* Foreground, log to stderr, its files in the test's directory. */
		static const char *const fg[] = {"-DD", "-E", "-n", "2",  "-m", "32",
		                                 "-M",  "8",  "-a", "no", NULL};
		for (unsigned i = 0; fg[i] != NULL; i++)
			argv[n++] = (char *)fg[i];
		argv[n++] = (char *)"-Y";
		argv[n++] = fx.dir;
		argv[n++] = (char *)"-w";
		argv[n++] = fx.dir;
		argv[n++] = (char *)"-P";
		argv[n++] = k->pidfile;
	}
	argv[n++] = (char *)"-A";
	argv[n++] = listen;
	for (unsigned i = 0; defines[i] != NULL; i++) {
		assert_true(n + 3 < KAM_ARGS);
		argv[n++] = (char *)"-A";
		argv[n++] = (char *)defines[i];
	}
	argv[n] = NULL;

	pid_t pid = fork();
	if (pid != 0)
		return pid;
	int fd = open(k->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
		_exit(126);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	execv(argv[0], argv);
	fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* ------------------------------------------------------------------ */
/* SIP user agents                                                     */

/*
 * Just enough RFC 3261 for a caller and a callee behind a record-routing
 * proxy, over UDP: requests with Via, From/To tags, Call-ID and CSeq;
 * responses that copy them; the caller's route set from the 2xx's
 * Record-Route, reversed; ACK and BYE sent along it.  No SDP (Kamailio
 * does not look at the body), no retransmissions (loopback loses nothing).
 */

/* A message being built. */
struct sbuf {
	char b[MSG_MAX];
	size_t n;
};

static void FMT(2, 3) sb_add(struct sbuf *sb, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(sb->b + sb->n, sizeof(sb->b) - sb->n, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(sb->b) - sb->n);
	sb->n += (size_t)n;
}

static void
ua_open(struct ua *u, const char *name)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);

	u->name = name;
	u->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(u->fd >= 0);
	assert_int_equal(bind(u->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(u->fd, (struct sockaddr *)&sa, &sl), 0);
	u->port = ntohs(sa.sin_port);
}

static void
ua_close(struct ua *u)
{
	if (u->fd > 0)
		close(u->fd);
	u->fd = -1;
}

static void
ua_send(const struct ua *u, uint16_t port, const struct sbuf *sb)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons(port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	ssize_t n = sendto(u->fd, sb->b, sb->n, 0, (struct sockaddr *)&sa, sizeof(sa));
	assert_int_equal(n, (ssize_t)sb->n);
}

/*
 * Wait up to ms for a datagram on any of the n agents.  Returns the index of
 * the agent that got one (the message NUL-terminated in buf, its sender's
 * port in *from) or -1 when nothing came.
 */
static int
ua_recv(struct ua *const *uas, int n, char *buf, size_t cap, int ms, uint16_t *from)
{
	struct pollfd p[4];

	assert_true(n <= 4);
	for (int i = 0; i < n; i++)
		p[i] = (struct pollfd){.fd = uas[i]->fd, .events = POLLIN};
	int rc = poll(p, (nfds_t)n, ms < 0 ? 0 : ms);
	if (rc <= 0)
		return -1;
	for (int i = 0; i < n; i++) {
		if (!(p[i].revents & POLLIN))
			continue;
		struct sockaddr_in sa;
		socklen_t sl = sizeof(sa);
		ssize_t got = recvfrom(uas[i]->fd, buf, cap - 1, 0, (struct sockaddr *)&sa, &sl);
		assert_true(got > 0);
		buf[got] = '\0';
		*from = ntohs(sa.sin_port);
		return i;
	}
	return -1;
}

/* The header name (or its compact form c) at the start of line, if it is one. */
static bool
hdr_is(const char *line, const char *name, char c)
{
	size_t n = strlen(name);
	const char *p;

	if (strncasecmp(line, name, n) == 0)
		p = line + n;
	else if (c != 0 && (line[0] == c || line[0] == (c ^ 0x20)))
		p = line + 1;
	else
		return false;
	while (*p == ' ' || *p == '\t')
		p++;
	return *p == ':';
}

/* The end of the headers (the blank line), for bounding searches. */
static const char *
hdrs_end(const char *msg)
{
	const char *e = strstr(msg, "\r\n\r\n");
	return e != NULL ? e + 2 : msg + strlen(msg);
}

/*
 * The value of the nth (from 0) header line named name, trimmed, into out.
 * Returns whether there is one.
 */
static bool
hdr_get(const char *msg, const char *name, char c, int nth, char *out, size_t cap)
{
	const char *end = hdrs_end(msg);
	const char *line = strstr(msg, "\r\n");

	while (line != NULL && line + 2 < end) {
		line += 2;
		const char *eol = strstr(line, "\r\n");
		if (eol == NULL)
			break;
		if (hdr_is(line, name, c) && nth-- == 0) {
			const char *v = strchr(line, ':') + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			size_t len = (size_t)(eol - v);
			assert_true(len < cap);
			memcpy(out, v, len);
			out[len] = '\0';
			return true;
		}
		line = eol;
	}
	return false;
}

/* Append every header line named name, verbatim, to sb. */
static void
hdr_copy(struct sbuf *sb, const char *msg, const char *name, char c)
{
	char v[1024];
	for (int i = 0; hdr_get(msg, name, c, i, v, sizeof(v)); i++)
		sb_add(sb, "%s: %s\r\n", name, v);
}

/* The status code of a response, or 0 for a request. */
static int
sip_status(const char *msg)
{
	int code = 0;
	if (strncmp(msg, "SIP/2.0 ", 8) == 0)
		code = atoi(msg + 8);
	return code;
}

static bool
sip_method_is(const char *msg, const char *method)
{
	size_t n = strlen(method);
	return strncmp(msg, method, n) == 0 && msg[n] == ' ';
}

/* Whether the CSeq of msg names method. */
static bool
cseq_is(const char *msg, const char *method)
{
	char v[128];
	if (!hdr_get(msg, "CSeq", 0, 0, v, sizeof(v)))
		return false;
	const char *m = strchr(v, ' ');
	return m != NULL && strcmp(m + 1, method) == 0;
}

/* Reply to a request with code, copying what a response must carry. */
static void
ua_reply(const struct ua *u, uint16_t to, const char *req, int code, const char *reason,
         const char *to_tag, bool dialog)
{
	struct sbuf sb = {.n = 0};
	char v[1024];

	sb_add(&sb, "SIP/2.0 %d %s\r\n", code, reason);
	hdr_copy(&sb, req, "Via", 'v');
	if (dialog)
		hdr_copy(&sb, req, "Record-Route", 0);
	assert_true(hdr_get(req, "From", 'f', 0, v, sizeof(v)));
	sb_add(&sb, "From: %s\r\n", v);
	assert_true(hdr_get(req, "To", 't', 0, v, sizeof(v)));
	if (to_tag != NULL && strstr(v, ";tag=") == NULL)
		sb_add(&sb, "To: %s;tag=%s\r\n", v, to_tag);
	else
		sb_add(&sb, "To: %s\r\n", v);
	assert_true(hdr_get(req, "Call-ID", 'i', 0, v, sizeof(v)));
	sb_add(&sb, "Call-ID: %s\r\n", v);
	assert_true(hdr_get(req, "CSeq", 0, 0, v, sizeof(v)));
	sb_add(&sb, "CSeq: %s\r\n", v);
	if (dialog)
		sb_add(&sb, "Contact: <sip:%s@127.0.0.1:%u>\r\n", u->name, u->port);
	sb_add(&sb, "Content-Length: 0\r\n\r\n");
	ua_send(u, to, &sb);
}

struct call_result;

/* What a call should do. */
struct call_spec {
	const char *caller; /* the From user */
	const char *dest;   /* the dialled number (R-URI user) */
	int answer;         /* the callee's final reply: 200, or a failure code */
	int hold_ms;        /* the caller hangs up this long after the answer */
	int limit_ms;       /* give up after this long */
	struct kam *k;      /* through which Kamailio */
	/* Run once while the call is up, right after the ACK (NULL: nothing). */
	void (*during)(const struct call_spec *s, struct call_result *r);
};

/* What it did. */
struct call_result {
	int status;           /* the final reply to the INVITE at the caller, 0 if none */
	bool invited;         /* the INVITE reached the callee */
	bool torn_down;       /* Kamailio sent the caller a BYE */
	bool callee_bye;      /* the callee got a BYE */
	bool hung_up;         /* the caller's own BYE was answered */
	char retry_after[32]; /* Retry-After of the final reply, if any */
	uint64_t answered;    /* when the caller sent its ACK, ms */
	uint64_t ended;       /* when the caller sent its BYE or got Kamailio's, ms */
	uint64_t mark;        /* when `during` did what it does, ms */
	int second_status;    /* `during`'s second call: the final reply to it */
	bool second_invited;  /* `during`'s second call reached the callee */
	char callid[128];
};

/* The caller side of the dialog, learnt from the 200 OK. */
struct dialog {
	char to[512];     /* To, with the callee's tag */
	char target[512]; /* the callee's Contact URI */
	char route[1024]; /* the route set, as one Route header value */
	char from_tag[32];
};

/* An in-dialog request from the caller (ACK or BYE for the 2xx). */
static void
caller_request(const struct ua *caller, const struct call_spec *s, const struct dialog *dl,
               const char *callid, const char *method, unsigned cseq)
{
	struct sbuf sb = {.n = 0};

	sb_add(&sb, "%s %s SIP/2.0\r\n", method, dl->target);
	sb_add(&sb, "Via: SIP/2.0/UDP 127.0.0.1:%u;rport;branch=z9hG4bK-%s-%u-%lu\r\n",
	       caller->port, method, cseq, (unsigned long)tg_mono_ms());
	if (dl->route[0] != '\0')
		sb_add(&sb, "Route: %s\r\n", dl->route);
	sb_add(&sb, "Max-Forwards: 70\r\n");
	sb_add(&sb, "From: <sip:%s@127.0.0.1>;tag=%s\r\n", s->caller, dl->from_tag);
	sb_add(&sb, "To: %s\r\n", dl->to);
	sb_add(&sb, "Call-ID: %s\r\n", callid);
	sb_add(&sb, "CSeq: %u %s\r\n", cseq, method);
	sb_add(&sb, "Content-Length: 0\r\n\r\n");
	ua_send(caller, s->k->port, &sb);
}

/* Learn the dialog from the 2xx: the route set is the Record-Route reversed. */
static void
dialog_learn(struct dialog *dl, const char *ok)
{
	char rr[8][512];
	int n = 0;

	assert_true(hdr_get(ok, "To", 't', 0, dl->to, sizeof(dl->to)));
	char contact[512];
	assert_true(hdr_get(ok, "Contact", 'm', 0, contact, sizeof(contact)));
	const char *lt = strchr(contact, '<'), *gt = strchr(contact, '>');
	assert_true(lt != NULL && gt != NULL && gt > lt);
	snprintf(dl->target, sizeof(dl->target), "%.*s", (int)(gt - lt - 1), lt + 1);
	while (n < 8 && hdr_get(ok, "Record-Route", 0, n, rr[n], sizeof(rr[n])))
		n++;
	dl->route[0] = '\0';
	for (int i = n - 1; i >= 0; i--) {
		size_t len = strlen(dl->route);
		snprintf(dl->route + len, sizeof(dl->route) - len, "%s%s", len ? ", " : "", rr[i]);
	}
}

/*
 * Place one call: the caller's INVITE through Kamailio to the callee, the
 * callee's answer, the ACK, then the caller's BYE after hold_ms, unless
 * Kamailio sends BYEs first.  Both agents answer every request they get.
 */
static void
place_call(const struct call_spec *s, struct call_result *r)
{
	struct ua *const uas[] = {&fx.caller, &fx.callee};
	const struct ua *caller = &fx.caller, *callee = &fx.callee;
	enum { CALLING, TALKING, HANGING_UP, TORN_DOWN, DONE } st = CALLING;
	struct dialog dl = {.from_tag = ""};
	static char msg[MSG_MAX];
	char invite_via[256];
	uint16_t from;

	memset(r, 0, sizeof(*r));
	/* A '%' in the Call-ID: it must reach tollgated as it is, not as a format. */
	snprintf(r->callid, sizeof(r->callid), "kam-%u-%d%%25s@127.0.0.1", ++fx.calls,
	         (int)getpid());
	snprintf(dl.from_tag, sizeof(dl.from_tag), "ft%u", fx.calls);
	snprintf(invite_via, sizeof(invite_via),
	         "SIP/2.0/UDP 127.0.0.1:%u;rport;branch=z9hG4bK-inv-%u-%d", caller->port, fx.calls,
	         (int)getpid());

	struct sbuf inv = {.n = 0};
	sb_add(&inv, "INVITE sip:%s@127.0.0.1:%u SIP/2.0\r\n", s->dest, s->k->port);
	sb_add(&inv, "Via: %s\r\n", invite_via);
	sb_add(&inv, "Max-Forwards: 70\r\n");
	sb_add(&inv, "From: <sip:%s@127.0.0.1>;tag=%s\r\n", s->caller, dl.from_tag);
	sb_add(&inv, "To: <sip:%s@127.0.0.1>\r\n", s->dest);
	sb_add(&inv, "Call-ID: %s\r\n", r->callid);
	sb_add(&inv, "CSeq: 1 INVITE\r\n");
	sb_add(&inv, "Contact: <sip:%s@127.0.0.1:%u>\r\n", s->caller, caller->port);
	sb_add(&inv, "Content-Length: 0\r\n\r\n");
	ua_send(caller, s->k->port, &inv);

	uint64_t start = tg_mono_ms(), deadline = start + (uint64_t)s->limit_ms, bye_wait = 0;
	while (st != DONE) {
		uint64_t now = tg_mono_ms();
		if (now >= deadline)
			break;
		if (st == TORN_DOWN && now >= bye_wait)
			break; /* the other BYE never came: checked by the test */
		uint64_t until = deadline;
		if (st == TALKING && r->answered + (uint64_t)s->hold_ms < until)
			until = r->answered + (uint64_t)s->hold_ms;
		if (st == TORN_DOWN && bye_wait < until)
			until = bye_wait;
		int i = ua_recv(uas, 2, msg, sizeof(msg), (int)(until - now), &from);
		if (i < 0) {
			if (st == TALKING && tg_mono_ms() >= r->answered + (uint64_t)s->hold_ms) {
				caller_request(caller, s, &dl, r->callid, "BYE", 2);
				r->ended = tg_mono_ms();
				st = HANGING_UP;
			}
			continue;
		}
		int code = sip_status(msg);
		char ci[256];
		if (!hdr_get(msg, "Call-ID", 'i', 0, ci, sizeof(ci)) ||
		    strcmp(ci, r->callid) != 0) {
			/* A straggler of an earlier call: answer its requests, drop the rest. */
			if (code == 0 && !sip_method_is(msg, "ACK"))
				ua_reply(uas[i], from, msg, 481, "Call Does Not Exist", NULL,
				         false);
			continue;
		}
		if (i == 0 && code != 0) { /* a response at the caller */
			if (cseq_is(msg, "INVITE")) {
				if (code < 200)
					continue;
				if (code < 300) {
					if (st == CALLING) {
						dialog_learn(&dl, msg);
						r->status = code;
						st = TALKING;
					}
					/* ACK every 2xx, retransmissions too. */
					caller_request(caller, s, &dl, r->callid, "ACK", 1);
					if (r->answered == 0) {
						r->answered = tg_mono_ms();
						if (s->during != NULL)
							s->during(s, r);
					}
					continue;
				}
				/* A failure: ACK it, hop by hop, and the call is over. */
				struct sbuf ack = {.n = 0};
				char to[512];
				assert_true(hdr_get(msg, "To", 't', 0, to, sizeof(to)));
				sb_add(&ack, "ACK sip:%s@127.0.0.1:%u SIP/2.0\r\n", s->dest,
				       s->k->port);
				sb_add(&ack, "Via: %s\r\n", invite_via);
				sb_add(&ack, "Max-Forwards: 70\r\n");
				sb_add(&ack, "From: <sip:%s@127.0.0.1>;tag=%s\r\n", s->caller,
				       dl.from_tag);
				sb_add(&ack, "To: %s\r\n", to);
				sb_add(&ack, "Call-ID: %s\r\n", r->callid);
				sb_add(&ack, "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
				ua_send(caller, from, &ack);
				hdr_get(msg, "Retry-After", 0, 0, r->retry_after,
				        sizeof(r->retry_after));
				r->status = code;
				st = DONE;
			} else if (cseq_is(msg, "BYE") && code >= 200 && st == HANGING_UP) {
				r->hung_up = code == 200;
				st = DONE;
			}
			continue;
		}
		if (code != 0)
			continue; /* a response at the callee: nothing it asked */
		if (sip_method_is(msg, "ACK"))
			continue;
		if (i == 0) { /* a request at the caller: Kamailio's BYE */
			if (sip_method_is(msg, "BYE")) {
				it_sleep_ms(BYE_RTT_MS);
				ua_reply(caller, from, msg, 200, "OK", NULL, false);
				if (!r->torn_down) {
					r->torn_down = true;
					r->ended = tg_mono_ms();
				}
				st = r->callee_bye ? DONE : TORN_DOWN;
				bye_wait = tg_mono_ms() + 3000;
			} else {
				ua_reply(caller, from, msg, 405, "Method Not Allowed", NULL, false);
			}
			continue;
		}
		/* A request at the callee. */
		if (sip_method_is(msg, "INVITE")) {
			r->invited = true;
			if (s->answer == 200)
				ua_reply(callee, from, msg, 200, "OK", "callee", true);
			else
				ua_reply(callee, from, msg, s->answer, "Busy Here", "callee",
				         false);
		} else if (sip_method_is(msg, "BYE")) {
			it_sleep_ms(BYE_RTT_MS);
			ua_reply(callee, from, msg, 200, "OK", NULL, false);
			r->callee_bye = true;
			if (st == TORN_DOWN)
				st = DONE;
			else if (st == TALKING) {
				st = TORN_DOWN; /* Kamailio's BYE to the callee came first */
				bye_wait = tg_mono_ms() + 3000;
			}
		} else {
			ua_reply(callee, from, msg, 200, "OK", NULL, false);
		}
	}
}

/* ------------------------------------------------------------------ */
/* tollgated, as the test sees it                                      */

/* What RATE quotes for a call of seconds to dest. */
static tg_money_t
quote_to(const char *dest, unsigned seconds)
{
	redisReply *r = it_cmd(fx.e, "RATE kam %s %u", dest, seconds);
	tg_money_t v = -1;

	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	for (size_t i = 0; i + 1 < r->elements; i += 2)
		if (strcmp(r->element[i]->str, "charge") == 0)
			v = it_money(r->element[i + 1]->str);
	freeReplyObject(r);
	assert_true(v >= 0);
	return v;
}

/* What RATE quotes for a call of seconds to DEST. */
static tg_money_t
quote(unsigned seconds)
{
	return quote_to(DEST, seconds);
}

/*
 * Wait until acct holds no call and no reservation: Kamailio sends CALL.END
 * as the dialog ends, which may be a little after the agents are done.
 */
static void
wait_settled(unsigned acct)
{
	uint64_t deadline = tg_mono_ms() + WAIT_MS;
	while (it_acct_int(fx.e, acct, "calls") != 0 ||
	       it_acct_money(fx.e, acct, "reserved") != 0) {
		if (tg_mono_ms() >= deadline) {
			kam_log_dump(&fx.k);
			fail_msg("account %u still holds a call after %d ms", acct, WAIT_MS);
		}
		it_sleep_ms(20);
	}
}

/* ------------------------------------------------------------------ */
/* the fixture                                                         */

/* Whether Kamailio answers an OPTIONS ping within ms. */
static bool
kam_answers(const struct kam *k, int ms)
{
	static char msg[MSG_MAX];
	struct ua *const uas[] = {&fx.caller};
	struct sbuf sb = {.n = 0};
	char callid[64];
	uint16_t from;

	snprintf(callid, sizeof(callid), "ping-%u-%lu@127.0.0.1", k->port,
	         (unsigned long)tg_mono_ms());
	sb_add(&sb, "OPTIONS sip:127.0.0.1:%u SIP/2.0\r\n", k->port);
	sb_add(&sb, "Via: SIP/2.0/UDP 127.0.0.1:%u;rport;branch=z9hG4bK-%s\r\n", fx.caller.port,
	       callid);
	sb_add(&sb, "Max-Forwards: 70\r\nFrom: <sip:ping@127.0.0.1>;tag=p\r\n");
	sb_add(&sb, "To: <sip:127.0.0.1:%u>\r\nCall-ID: %s\r\n", k->port, callid);
	sb_add(&sb, "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
	ua_send(&fx.caller, k->port, &sb);
	uint64_t deadline = tg_mono_ms() + (uint64_t)ms;
	for (;;) {
		int left = (int)(deadline - tg_mono_ms());
		if (left <= 0 || ua_recv(uas, 1, msg, sizeof(msg), left, &from) < 0)
			return false;
		char ci[64];
		if (sip_status(msg) == 200 && hdr_get(msg, "Call-ID", 'i', 0, ci, sizeof(ci)) &&
		    strcmp(ci, callid) == 0)
			return true;
	}
}

/* Start Kamailio with the configuration and these defines; ready for calls. */
static void
kam_start(struct kam *k, const char *name, const char *const *defines)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		int status;
		k->port = free_udp_port();
		assert_true(k->port != 0);
		k->pid = kam_spawn(k, name, defines, false);
		assert_true(k->pid > 0);
		uint64_t deadline = tg_mono_ms() + 15000;
		while (tg_mono_ms() < deadline) {
			if (waitpid(k->pid, &status, WNOHANG) == k->pid) {
				k->pid = 0;
				break;
			}
			if (kam_answers(k, 200))
				return;
		}
		if (k->pid > 0) {
			kam_log_dump(k);
			kam_stop(k);
			fail_msg("kamailio did not answer OPTIONS within 15 s");
		}
		/* It exited: a port taken meanwhile is worth another try. */
		if (!kam_log_has(k, "Address already in use")) {
			kam_log_dump(k);
			fail_msg("kamailio exited during start-up");
		}
	}
	fail_msg("kamailio could not bind a port in 3 attempts");
}

static int
group_setup(void **state)
{
	char path[IT_PATH_MAX], port[16], server[128], gw[64], db[IT_PATH_MAX + 32], stops[128];
	(void)state;

	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_file_write(fx.dir, "rates.csv", RATES, fx.rates, sizeof(fx.rates)), 0);
	assert_int_equal(
	    it_file_write(fx.dir, "accounts.csv", ACCOUNTS, fx.accounts, sizeof(fx.accounts)), 0);
	it_pathf(fx.db, sizeof(fx.db), "%s/db", fx.dir);
	assert_int_equal(mkdir(fx.db, 0700), 0);
	assert_int_equal(
	    it_file_write(fx.db, "tollgate_accounts", ACCOUNT_TABLE, path, sizeof(path)), 0);

	assert_int_equal(tg_test_redis_start(&fx.redis), 0);
	fx.r = tg_test_redis_connect(&fx.redis);
	assert_non_null(fx.r);
	snprintf(port, sizeof(port), "%u", fx.redis.port);
	const char *const flags[] = {
	    "--rates",      fx.rates,    "--accounts",   fx.accounts, "--max-grant", MAX_GRANT,
	    "--redis-host", "127.0.0.1", "--redis-port", port,        NULL};
	assert_int_equal(it_start(&fx.d, fx.dir, flags), 0);
	fx.e = it_connect(&fx.d);
	assert_non_null(fx.e);

	ua_open(&fx.caller, "caller");
	ua_open(&fx.callee, "callee");
	ua_open(&fx.caller2, "caller2");
	snprintf(server, sizeof(server), "TG_SERVER=\"name=tollgate;addr=127.0.0.1;port=%u\"",
	         fx.d.port);
	snprintf(gw, sizeof(gw), "GW_URI=\"sip:127.0.0.1:%u\"", fx.callee.port);
	snprintf(db, sizeof(db), "ACCOUNT_DB_URL=\"text://%s\"", fx.db);
	snprintf(stops, sizeof(stops), "TG_STOP_SERVER=\"name=tgstops;addr=127.0.0.1;port=%u\"",
	         fx.redis.port);
	/* The stop stream is on by default: its Redis is the test's. */
	const char *const defines[] = {
	    server, gw,    "TG_UPDATE_BEFORE=" UPDATE_BEFORE,  "WITH_ACCOUNT_TABLE",
	    db,     stops, "TG_STOP_TIMER=\"" STOP_TIMER "\"", NULL};
	kam_start(&fx.k, "kamailio", defines);
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	if (getenv("TEST_KAMAILIO_LOG") != NULL) {
		kam_log_dump(&fx.k);
		if (fx.k2.log[0] != '\0')
			kam_log_dump(&fx.k2);
		if (fx.k3.log[0] != '\0')
			kam_log_dump(&fx.k3);
	}
	kam_stop(&fx.k);
	kam_stop(&fx.k2);
	kam_stop(&fx.k3);
	if (fx.e != NULL)
		redisFree(fx.e);
	if (fx.r != NULL)
		redisFree(fx.r);
	int rc = fx.d.pid > 0 ? it_stop(&fx.d) : 0;
	tg_test_redis_stop(&fx.redis);
	ua_close(&fx.caller);
	ua_close(&fx.callee);
	ua_close(&fx.caller2);
	it_dir_remove(fx.dir);
	return rc == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* the calls                                                           */

/*
 * 1001 calls for 7 s.  tollgated grants at most 4 s at a time, so Kamailio
 * must extend the call twice with CALL.UPDATE; after the caller's BYE the
 * balance is charged exactly the rated cost of 7 s, nothing stays reserved.
 */
static void
test_call_billed_for_its_duration(void **state)
{
	(void)state;
	struct call_spec s = {"1001", DEST, 200, 7000, 20000, &fx.k};
	struct call_result r;
	tg_money_t before = it_acct_money(fx.e, 1001, "balance");
	long long updates = it_info(fx.e, "call_update");

	place_call(&s, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.invited);
	assert_false(r.torn_down);
	assert_true(r.hung_up);
	assert_true(r.callee_bye);
	wait_settled(1001);

	uint64_t talk = r.ended - r.answered;
	assert_true(talk >= 7000 && talk < 7400);
	assert_true(it_acct_money(fx.e, 1001, "balance") == before - quote(7));
	assert_true(quote(7) == 70000);
	/* Extended twice (at 2 and 4 s of 4 and 6 s granted), maybe three times. */
	assert_true(it_info(fx.e, "call_update") - updates >= 2);
	assert_true(kam_log_has(&fx.k, "tollgate: CALL.UPDATE 1001"));
	assert_true(kam_log_has(&fx.k, "tollgate: CALL.END 1001 7 s: charged 0.07"));
}

/* 1002 is at $0.00: 402, the callee never rings, nothing is charged. */
static void
test_no_credit_gets_402(void **state)
{
	(void)state;
	struct call_spec s = {"1002", DEST, 200, 1000, 5000, &fx.k};
	struct call_result r;

	place_call(&s, &r);
	assert_int_equal(r.status, 402);
	assert_false(r.invited);
	assert_true(it_acct_money(fx.e, 1002, "balance") == 0);
	assert_true(it_acct_money(fx.e, 1002, "reserved") == 0);
	assert_int_equal(it_acct_int(fx.e, 1002, "calls"), 0);
}

/*
 * 1003 has $0.05: five seconds.  The caller would talk for 15 s; Kamailio
 * cuts the call with BYE to both sides at the grant (4 s, extended to the
 * 5 s the balance pays for, then CALL.UPDATE is BLOCKED), within a second or
 * two, and the account is charged for 5 s: exactly its $0.05.
 */
static void
test_call_cut_at_the_grant(void **state)
{
	(void)state;
	struct call_spec s = {"1003", DEST, 200, 15000, 25000, &fx.k};
	struct call_result r;

	place_call(&s, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.torn_down);
	assert_true(r.callee_bye);
	assert_false(r.hung_up);
	uint64_t talk = r.ended - r.answered;
	if (talk < 4500 || talk > 7000) {
		kam_log_dump(&fx.k);
		fail_msg("torn down after %llu ms, not at the 5 s granted",
		         (unsigned long long)talk);
	}
	wait_settled(1003);
	assert_true(quote(5) == 50000);
	assert_true(it_acct_money(fx.e, 1003, "balance") == 0);
	assert_true(kam_log_has(&fx.k, "tollgate: CALL.UPDATE 1003 at"));
	assert_true(kam_log_has(&fx.k, ": BLOCKED"));
}

/*
 * "alice" is account 1005 through Kamailio's table.  The callee is busy: the
 * call never connects, and its reservation is released at once (CALL.END 0)
 * rather than held until tollgated's expiry.
 */
static void
test_unanswered_call_releases_its_reservation(void **state)
{
	(void)state;
	/* Dialled in E.164 form: Kamailio drops the '+'. */
	struct call_spec s = {"alice", "+" DEST, 486, 1000, 5000, &fx.k};
	struct call_result r;

	place_call(&s, &r);
	assert_int_equal(r.status, 486);
	assert_true(r.invited);
	wait_settled(1005);
	assert_true(it_acct_money(fx.e, 1005, "balance") == 5000000);
	assert_true(kam_log_has(&fx.k, "tollgate: CALL.AUTH 1005 " DEST ": 4 s"));
	assert_true(kam_log_has(&fx.k, "tollgate: CALL.END 1005 0 s: charged 0"));
}

/* Suspended 403, unknown caller 403, unrated destination 404: no ring, no charge. */
static void
test_refusals(void **state)
{
	(void)state;
	static const struct {
		const char *caller, *dest;
		int status;
	} cases[] = {
	    {"1004", DEST, 403},
	    {"mallory", DEST, 403},
	    {"1001", NORATE, 404},
	    {"1001", "+1-415", 484},
	};
	tg_money_t before = it_acct_money(fx.e, 1001, "balance");

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct call_spec s = {cases[i].caller, cases[i].dest, 200, 1000, 5000, &fx.k};
		struct call_result r;
		place_call(&s, &r);
		if (r.status != cases[i].status)
			fail_msg("%s -> %s: %d, not %d", cases[i].caller, cases[i].dest, r.status,
			         cases[i].status);
		assert_false(r.invited);
	}
	assert_true(it_acct_money(fx.e, 1001, "balance") == before);
	assert_true(it_acct_money(fx.e, 1004, "balance") == 5000000);
	assert_int_equal(it_acct_int(fx.e, 1004, "calls"), 0);
}

/*
 * `during` of the MAXCALLS test: while the first call is up, the same
 * account calls again from a second agent.  Waits for the final reply to
 * that INVITE (r->second_status) and notes whether the callee was rung.
 */
static void
second_call(const struct call_spec *s, struct call_result *r)
{
	struct ua *const uas[] = {&fx.caller2, &fx.callee};
	static char msg[MSG_MAX];
	char callid[128], via[256], to[512];
	uint16_t from;

	snprintf(callid, sizeof(callid), "kam-second-%u-%d@127.0.0.1", fx.calls, (int)getpid());
	snprintf(via, sizeof(via), "SIP/2.0/UDP 127.0.0.1:%u;rport;branch=z9hG4bK-second-%u-%d",
	         fx.caller2.port, fx.calls, (int)getpid());
	struct sbuf inv = {.n = 0};
	sb_add(&inv, "INVITE sip:%s@127.0.0.1:%u SIP/2.0\r\n", s->dest, s->k->port);
	sb_add(&inv, "Via: %s\r\nMax-Forwards: 70\r\n", via);
	sb_add(&inv, "From: <sip:%s@127.0.0.1>;tag=second\r\n", s->caller);
	sb_add(&inv, "To: <sip:%s@127.0.0.1>\r\n", s->dest);
	sb_add(&inv, "Call-ID: %s\r\nCSeq: 1 INVITE\r\n", callid);
	sb_add(&inv, "Contact: <sip:%s@127.0.0.1:%u>\r\n", s->caller, fx.caller2.port);
	sb_add(&inv, "Content-Length: 0\r\n\r\n");
	ua_send(&fx.caller2, s->k->port, &inv);
	r->mark = tg_mono_ms();

	uint64_t deadline = r->mark + WAIT_MS;
	while (r->second_status == 0 && tg_mono_ms() < deadline) {
		int i = ua_recv(uas, 2, msg, sizeof(msg), (int)(deadline - tg_mono_ms()), &from);
		char ci[256];
		if (i < 0 || !hdr_get(msg, "Call-ID", 'i', 0, ci, sizeof(ci)) ||
		    strcmp(ci, callid) != 0)
			continue; /* the first call's messages are not expected meanwhile */
		int code = sip_status(msg);
		if (i == 1) { /* the second call rang the callee: it must not */
			if (sip_method_is(msg, "INVITE")) {
				r->second_invited = true;
				ua_reply(&fx.callee, from, msg, 486, "Busy Here", "callee", false);
			}
			continue;
		}
		if (code < 200)
			continue;
		r->second_status = code;
		/* ACK the failure, hop by hop. */
		assert_true(hdr_get(msg, "To", 't', 0, to, sizeof(to)));
		struct sbuf ack = {.n = 0};
		sb_add(&ack, "ACK sip:%s@127.0.0.1:%u SIP/2.0\r\n", s->dest, s->k->port);
		sb_add(&ack, "Via: %s\r\nMax-Forwards: 70\r\n", via);
		sb_add(&ack, "From: <sip:%s@127.0.0.1>;tag=second\r\n", s->caller);
		sb_add(&ack, "To: %s\r\nCall-ID: %s\r\n", to, callid);
		sb_add(&ack, "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
		ua_send(&fx.caller2, from, &ack);
	}
}

/*
 * 1007 may have one call at a time (MAXCALLS 1).  Its first call is put
 * through; a second one, placed while the first is up, is refused by
 * Kamailio with 403 Too Many Calls (tollgated: -MAXCALLS) without ringing
 * the callee.  The first call is billed exactly for its talk time, and once
 * it is over the account may call again.
 */
static void
test_second_call_refused_at_maxcalls(void **state)
{
	(void)state;
	struct call_spec s = {"1007", DEST, 200, 3000, 15000, &fx.k, second_call};
	struct call_result r;
	long secs;
	tg_money_t charged;

	it_run_cmd(fx.e, "ACCT.SET 1007 MAXCALLS 1");
	tg_money_t before = it_acct_money(fx.e, 1007, "balance");
	long long refused = it_info(fx.e, "call_maxcalls");
	size_t off = kam_log_size(&fx.k);

	place_call(&s, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.hung_up);
	assert_true(r.callee_bye);
	if (r.second_status != 403) {
		kam_log_dump(&fx.k);
		fail_msg("the second call got %d, not 403", r.second_status);
	}
	assert_false(r.second_invited);
	assert_int_equal(it_info(fx.e, "call_maxcalls") - refused, 1);
	assert_true(kam_log_has(&fx.k, "tollgate: CALL.AUTH 1007 " DEST ": MAXCALLS"));
	wait_settled(1007);
	kam_wait_end(&fx.k, off, 1007, &secs, &charged);
	long long talk = (long long)(r.ended - r.answered);
	if (llabs(secs * 1000 - talk) > 1000)
		fail_msg("billed %ld s for %lld ms of talk", secs, talk);
	assert_true(charged == quote((unsigned)secs));
	assert_true(it_acct_money(fx.e, 1007, "balance") == before - charged);

	/* The place is given back at CALL.END: the next call goes through. */
	struct call_spec again = {"1007", DEST, 200, 500, 10000, &fx.k, NULL};
	place_call(&again, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.hung_up);
	wait_settled(1007);
}

/*
 * 1006 is at $0.00 and calls 112, an always-allowed destination: the call is
 * connected and billed at 112's rate, $0.001 a second, taking the balance
 * below zero by exactly that.  911 (free) connects too and costs nothing,
 * while an ordinary number stays refused (402).
 */
static void
test_emergency_call_at_zero_balance(void **state)
{
	(void)state;
	struct call_spec s = {"1006", "112", 200, 2000, 15000, &fx.k, NULL};
	struct call_result r;
	long secs;
	tg_money_t charged;
	size_t off = kam_log_size(&fx.k);

	assert_true(it_acct_money(fx.e, 1006, "balance") == 0);
	place_call(&s, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.invited);
	assert_true(r.hung_up);
	assert_false(r.torn_down);
	wait_settled(1006);
	kam_wait_end(&fx.k, off, 1006, &secs, &charged);
	long long talk = (long long)(r.ended - r.answered);
	if (llabs(secs * 1000 - talk) > 1000)
		fail_msg("billed %ld s for %lld ms of talk", secs, talk);
	assert_true(secs >= 1);
	/* $0.06 a minute is 1000 micro-units a second. */
	assert_true(quote_to("112", (unsigned)secs) == secs * 1000);
	assert_true(charged == secs * 1000);
	assert_true(it_acct_money(fx.e, 1006, "balance") == -charged);

	struct call_spec free_call = {"1006", "911", 200, 1000, 15000, &fx.k, NULL};
	tg_money_t owed = it_acct_money(fx.e, 1006, "balance");
	off = kam_log_size(&fx.k);
	place_call(&free_call, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.hung_up);
	wait_settled(1006);
	kam_wait_end(&fx.k, off, 1006, &secs, &charged);
	assert_true(secs >= 1);
	assert_true(charged == 0);
	assert_true(it_acct_money(fx.e, 1006, "balance") == owed);

	struct call_spec ordinary = {"1006", DEST, 200, 1000, 5000, &fx.k, NULL};
	place_call(&ordinary, &r);
	assert_int_equal(r.status, 402);
	assert_false(r.invited);
}

/* `during` of the mid-call close tests: ACCT.SET STATE closed 500 ms in. */
static void
close_account(const struct call_spec *s, struct call_result *r)
{
	it_sleep_ms(500);
	it_run_cmd(fx.e, "ACCT.SET %s STATE closed", s->caller);
	r->mark = tg_mono_ms();
}

/*
 * Place a call of acct through k, closed 500 ms after the answer; it must be
 * torn down by Kamailio (BYE to both sides) within cut_ms of the close and
 * billed exactly for its talk time up to the cut.
 */
static void
closed_mid_call(struct kam *k, const char *acct, int cut_ms, struct call_result *r)
{
	struct call_spec s = {acct, DEST, 200, 15000, 25000, k, close_account};
	unsigned id = (unsigned)strtoul(acct, NULL, 10);
	long secs;
	tg_money_t charged;
	tg_money_t before = it_acct_money(fx.e, id, "balance");
	size_t off = kam_log_size(k);

	place_call(&s, r);
	assert_int_equal(r->status, 200);
	assert_true(r->mark != 0);
	assert_true(r->torn_down);
	assert_true(r->callee_bye);
	assert_false(r->hung_up);
	long long cut = (long long)(r->ended - r->mark);
	fprintf(stderr, "%s: torn down %lld ms after the close (at most %d)\n", acct, cut, cut_ms);
	if (cut > cut_ms) {
		kam_log_dump(k);
		fail_msg("%s: torn down %lld ms after the close, not within %d ms", acct, cut,
		         cut_ms);
	}
	wait_settled(id);
	kam_wait_end(k, off, id, &secs, &charged);
	long long talk = (long long)(r->ended - r->answered);
	if (llabs(secs * 1000 - talk) > 1000)
		fail_msg("billed %ld s for %lld ms of talk", secs, talk);
	/*
	 * Closed before its first CALL.UPDATE, the call keeps its first grant
	 * (MAX_GRANT) and no more: cut at the grant, it may be torn down up to a
	 * dialog timer tick later, and a duration past the grant is billed as the
	 * grant (docs/PROTOCOL.md).
	 */
	unsigned billable =
	    (unsigned)secs < (unsigned)atoi(MAX_GRANT) ? (unsigned)secs : (unsigned)atoi(MAX_GRANT);
	if (charged != quote(billable))
		fail_msg("%s: %ld s reported, charged %lld micro-units, the quote for %u s is %lld",
		         acct, secs, (long long)charged, billable, (long long)quote(billable));
	assert_true(it_acct_money(fx.e, id, "balance") == before - charged);
	char st[32];
	it_acct_field(fx.e, id, "state", st, sizeof(st));
	assert_string_equal(st, "closed");
}

/*
 * A Kamailio whose stop-stream Redis cannot be reached (a port bound and
 * not listening: every connection is refused) still authorizes calls; it
 * used to answer every call 503, ndb_redis having left tollgated's
 * connection unmade.  1008 is closed mid-call: without the stream, the call
 * ends when CALL.UPDATE is refused (BLOCKED), within the grant.
 */
static void
test_closed_mid_call_cut_at_update(void **state)
{
	(void)state;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	char server[128], gw[64], stops[128];
	struct call_result r;
	int dead = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(dead >= 0);
	assert_int_equal(bind(dead, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(dead, (struct sockaddr *)&sa, &sl), 0);
	snprintf(server, sizeof(server), "TG_SERVER=\"name=tollgate;addr=127.0.0.1;port=%u\"",
	         fx.d.port);
	snprintf(gw, sizeof(gw), "GW_URI=\"sip:127.0.0.1:%u\"", fx.callee.port);
	snprintf(stops, sizeof(stops), "TG_STOP_SERVER=\"name=tgstops;addr=127.0.0.1;port=%u\"",
	         ntohs(sa.sin_port));
	const char *const defines[] = {server,
	                               gw,
	                               "TG_UPDATE_BEFORE=" UPDATE_BEFORE,
	                               stops,
	                               "TG_STOP_TIMER=\"" STOP_TIMER "\"",
	                               NULL};
	kam_start(&fx.k3, "kamailio-nostops", defines);

	closed_mid_call(&fx.k3, "1008", UPDATE_CUT_MS, &r);
	assert_true(kam_log_has(&fx.k3, "failed to connect to redis server [tgstops]"));
	assert_true(kam_log_has(&fx.k3, "tollgate: CALL.UPDATE 1008 at"));
	assert_false(kam_log_has(&fx.k3, "stopped by the engine"));
	close(dead);
}

/*
 * With the stop stream (the configuration's default), 1009 closed mid-call
 * is on tollgate:stops at once, and Kamailio ends the call from it well
 * before its grant: within a stop tick and a dialog timer tick.
 */
static void
test_closed_mid_call_cut_by_the_stop_stream(void **state)
{
	(void)state;
	struct call_result r;

	closed_mid_call(&fx.k, "1009", STOP_CUT_MS, &r);
	assert_true(kam_log_has(&fx.k, "of 1009 stopped by the engine (closed)"));
	redisReply *x = it_cmd(fx.r, "XRANGE tollgate:stops - +");
	assert_int_equal(x->type, REDIS_REPLY_ARRAY);
	bool listed = false;
	for (size_t i = 0; i < x->elements; i++)
		listed |= strcmp(it_entry_field(x->element[i], "callid"), r.callid) == 0 &&
		          strcmp(it_entry_field(x->element[i], "acct"), "1009") == 0;
	freeReplyObject(x);
	assert_true(listed);
}

/* 1001's call took it from $1.00 to $0.93, across its $0.95: one request. */
static void
test_one_refill_request_on_the_stream(void **state)
{
	(void)state;
	uint64_t deadline = tg_mono_ms() + WAIT_MS;
	while (it_int_cmd(fx.r, "XLEN " STREAM) < 1) {
		if (tg_mono_ms() >= deadline)
			fail_msg("no refill request on " STREAM " after %d ms", WAIT_MS);
		it_sleep_ms(20);
	}
	it_sleep_ms(300); /* a second one would be published by now */
	assert_int_equal(it_int_cmd(fx.r, "XLEN " STREAM), 1);
	redisReply *x = it_cmd(fx.r, "XRANGE " STREAM " - +");
	assert_int_equal(x->type, REDIS_REPLY_ARRAY);
	assert_int_equal(x->elements, 1);
	const redisReply *f = x->element[0]->element[1];
	bool id = false, acct = false;
	for (size_t i = 0; i + 1 < f->elements; i += 2) {
		if (strcmp(f->element[i]->str, "id") == 0)
			id = strcmp(f->element[i + 1]->str, "refill:1001:1") == 0;
		if (strcmp(f->element[i]->str, "account") == 0)
			acct = strcmp(f->element[i + 1]->str, "1001") == 0;
	}
	freeReplyObject(x);
	assert_true(id && acct);
	assert_int_equal(it_acct_int(fx.e, 1001, "refill_pending"), 1);
}

static tg_money_t charged_for(struct kam *k, const char *acct, const char *callid, long *secs);

/* tollgated again, on port, with this test's flags. */
static void
restart_tollgated(uint16_t port)
{
	char p[16], redis_port[16];
	snprintf(p, sizeof(p), "%u", port);
	snprintf(redis_port, sizeof(redis_port), "%u", fx.redis.port);
	const char *const flags[] = {"--rates",
	                             fx.rates,
	                             "--accounts",
	                             fx.accounts,
	                             "--max-grant",
	                             MAX_GRANT,
	                             "--redis-host",
	                             "127.0.0.1",
	                             "--redis-port",
	                             redis_port,
	                             "--port",
	                             p,
	                             NULL};
	assert_int_equal(it_restart(&fx.d, flags, 0), 0);
	assert_int_equal(fx.d.port, port);
	fx.e = it_connect(&fx.d);
	assert_non_null(fx.e);
}

/* `during` of the next test: tollgated stops (SIGTERM) while the call is up. */
static void
stop_tollgated(const struct call_spec *s, struct call_result *r)
{
	(void)s;
	redisFree(fx.e);
	fx.e = NULL;
	assert_int_equal(it_term(&fx.d), 0);
	r->mark = tg_mono_ms();
}

/*
 * A call whose end finds tollgated away: Kamailio keeps its CALL.END and
 * sends it again at every tick (TG_END_LATER); tollgated back on its port,
 * the call is billed for its talk time, once.  Before, the CALL.END was only
 * logged to replay, and tollgated's expiry billed the whole grant.
 */
static void
test_call_end_sent_again_when_tollgated_returns(void **state)
{
	(void)state;
	struct call_spec s = {"1010", DEST, 200, 1500, 15000, &fx.k, stop_tollgated};
	struct call_result r;
	char retry[256];
	long secs;
	uint16_t port = fx.d.port;
	tg_money_t before = it_acct_money(fx.e, 1010, "balance");

	place_call(&s, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.hung_up);
	snprintf(retry, sizeof(retry), "tollgate: retrying E of call %s of 1010", r.callid);
	uint64_t deadline = tg_mono_ms() + WAIT_MS;
	while (!kam_log_has(&fx.k, retry)) {
		if (tg_mono_ms() >= deadline) {
			kam_log_dump(&fx.k);
			fail_msg("no \"%s\" in the log", retry);
		}
		it_sleep_ms(20);
	}
	it_sleep_ms(1200); /* a tick with tollgated still away: kept, not dropped */
	restart_tollgated(port);
	tg_money_t charged = charged_for(&fx.k, "1010", r.callid, &secs);
	long long talk = (long long)(r.ended - r.answered);
	if (llabs(secs * 1000 - talk) > 1000)
		fail_msg("billed %ld s for %lld ms of talk", secs, talk);
	assert_true(charged == quote((unsigned)secs));
	wait_settled(1010);
	assert_true(it_acct_money(fx.e, 1010, "balance") == before - charged);
	assert_false(kam_log_has(&fx.k, "replay: CALL.END"));
}

/*
 * tollgated goes away.  Failing closed (the default), a new call gets 503.
 * A second Kamailio set to fail open lets the call through unrated and,
 * tollgated being still away at its end, keeps its CDR and sends it again
 * at every tick; tollgated back on its port, the CDR lands, charged once.
 */
static void
test_tollgated_unreachable(void **state)
{
	(void)state;
	char server[128], gw[64], retry[256], landed[256];
	struct call_result r;
	uint16_t port = fx.d.port;

	snprintf(server, sizeof(server), "TG_SERVER=\"name=tollgate;addr=127.0.0.1;port=%u\"",
	         fx.d.port);
	tg_money_t before = it_acct_money(fx.e, 1001, "balance");
	redisFree(fx.e);
	fx.e = NULL;
	assert_int_equal(it_stop(&fx.d), 0);

	struct call_spec closed = {"1001", DEST, 200, 1000, 10000, &fx.k};
	place_call(&closed, &r);
	assert_int_equal(r.status, 503);
	assert_string_equal(r.retry_after, "30");
	assert_false(r.invited);
	assert_true(kam_log_has(&fx.k, "refused (fail closed)"));

	snprintf(gw, sizeof(gw), "GW_URI=\"sip:127.0.0.1:%u\"", fx.callee.port);
	const char *const defines[] = {server, gw, "TG_FAIL_OPEN=1", NULL};
	kam_start(&fx.k2, "kamailio-open", defines);
	struct call_spec open = {"1001", DEST, 200, 1000, 10000, &fx.k2};
	place_call(&open, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.hung_up);
	assert_true(kam_log_has(&fx.k2, "UNRATED (fail open)"));
	snprintf(retry, sizeof(retry), "tollgate: retrying C of call %s of 1001 (1 s)", r.callid);
	uint64_t deadline = tg_mono_ms() + WAIT_MS;
	while (!kam_log_has(&fx.k2, retry)) {
		if (tg_mono_ms() >= deadline) {
			kam_log_dump(&fx.k2);
			fail_msg("no \"%s\" in the log", retry);
		}
		it_sleep_ms(20);
	}

	restart_tollgated(port);
	snprintf(landed, sizeof(landed), "tollgate: CDR 1001 " DEST " 1: ");
	snprintf(retry, sizeof(retry), " (call %s)", r.callid);
	deadline = tg_mono_ms() + WAIT_MS;
	while (!kam_log_has(&fx.k2, landed) || !kam_log_has(&fx.k2, retry)) {
		if (tg_mono_ms() >= deadline) {
			kam_log_dump(&fx.k2);
			fail_msg("the kept CDR did not land within %d ms", WAIT_MS);
		}
		it_sleep_ms(20);
	}
	assert_true(it_acct_money(fx.e, 1001, "balance") == before - quote(1));
	it_sleep_ms(1500); /* a tick or more: nothing is sent again */
	assert_true(it_acct_money(fx.e, 1001, "balance") == before - quote(1));
	assert_false(kam_log_has(&fx.k2, "replay: CDR"));
}

/* ------------------------------------------------------------------ */
/* Kamailio through Sentinel                                           */

#define SENTINELS 3
#define GROUP     "tgkam"

/*
 * A primary (min-replicas-to-write 1: what it acknowledged is on the
 * replica) and its replica, both with the test's rates and a config file
 * Sentinel can rewrite; account 1005 created on the primary; three
 * sentinels watching them; Kamailio finding the primary through the first
 * sentinel (WITH_SENTINEL).
 */
static int
sentinel_setup(void **state)
{
	char conf[IT_PATH_MAX], rconf[IT_PATH_MAX], text[256], sserver[256], gw[64];
	(void)state;

	assert_int_equal(it_dir_make(fx.dir, sizeof(fx.dir)), 0);
	assert_int_equal(it_file_write(fx.dir, "rates.csv", RATES, fx.rates, sizeof(fx.rates)), 0);
	assert_int_equal(it_file_write(fx.dir, "primary.conf",
	                               "min-replicas-to-write 1\nmin-replicas-timeout 2000\n", conf,
	                               sizeof(conf)),
	                 0);
	const char *const pflags[] = {"--config",     conf,          "--rates",
	                              fx.rates,       "--max-grant", MAX_GRANT,
	                              "--redis-host", "none",        NULL};
	assert_int_equal(it_start(&fx.d, fx.dir, pflags), 0);
	snprintf(text, sizeof(text), "replica-of 127.0.0.1 %u\n", fx.d.port);
	assert_int_equal(it_file_write(fx.dir, "replica.conf", text, rconf, sizeof(rconf)), 0);
	const char *const rflags[] = {"--config",     rconf,         "--rates",
	                              fx.rates,       "--max-grant", MAX_GRANT,
	                              "--redis-host", "none",        NULL};
	assert_int_equal(it_start(&fx.replica, fx.dir, rflags), 0);
	fx.e = it_connect(&fx.d);
	assert_non_null(fx.e);
	/* The primary takes no change until its replica streams: this waits for it. */
	it_first_change(fx.e, "ACCT.SET 1005 BALANCE 5 PLAN kam");

	struct it_sentinel_cfg cfg = {.master_name = GROUP,
	                              .master_port = fx.d.port,
	                              .quorum = 2,
	                              .down_after_ms = 1000,
	                              .failover_timeout = 3000};
	assert_int_equal(it_sentinels_start(fx.s, SENTINELS, fx.dir, &cfg), 0);
	fx.sentinels = true;
	uint64_t deadline = tg_mono_ms() + 30000;
	while (!it_sentinels_see_replicas(fx.s, SENTINELS, GROUP, 1)) {
		if (tg_mono_ms() >= deadline)
			fail_msg("the sentinels did not see the replica within 30 s");
		it_sleep_ms(100);
	}

	ua_open(&fx.caller, "caller");
	ua_open(&fx.callee, "callee");
	ua_open(&fx.caller2, "caller2");
	snprintf(sserver, sizeof(sserver),
	         "TG_SENTINEL_SERVER=\"name=tollgate;sentinel_group=" GROUP
	         ";sentinel_master=1;sentinel=127.0.0.1:%u\"",
	         fx.s[0].port);
	snprintf(gw, sizeof(gw), "GW_URI=\"sip:127.0.0.1:%u\"", fx.callee.port);
	const char *const defines[] = {
	    "WITH_SENTINEL",       sserver, gw, "TG_UPDATE_BEFORE=" UPDATE_BEFORE,
	    "WITHOUT_STOP_STREAM", NULL};
	kam_start(&fx.k, "kamailio-sentinel", defines);
	return 0;
}

static int
sentinel_teardown(void **state)
{
	(void)state;
	if (getenv("TEST_KAMAILIO_LOG") != NULL)
		kam_log_dump(&fx.k);
	kam_stop(&fx.k);
	if (fx.sentinels)
		it_sentinels_stop(fx.s, SENTINELS);
	fx.sentinels = false;
	if (fx.e != NULL)
		redisFree(fx.e);
	fx.e = NULL;
	int rc = 0;
	if (fx.d.pid > 0)
		rc |= it_stop(&fx.d);
	if (fx.replica.pid > 0)
		rc |= it_stop(&fx.replica);
	ua_close(&fx.caller);
	ua_close(&fx.callee);
	ua_close(&fx.caller2);
	it_dir_remove(fx.dir);
	return rc == 0 ? 0 : -1;
}

/* The Call-IDs of the calls of 1005 that were answered. */
static char answered[64][128];
static unsigned nanswered;

/*
 * What Kamailio logged it charged for the call callid (its CALL.END line,
 * "... charged <amount> (call <callid>)"), waiting for it: a CALL.END that
 * tollgated did not answer is sent again at every tick (TG_END_LATER).
 */
static tg_money_t
charged_for(struct kam *k, const char *acct, const char *callid, long *secs)
{
	static char buf[LOG_MAX];
	char tail[160], head[64], amount[32];
	uint64_t deadline = tg_mono_ms() + WAIT_MS;

	snprintf(tail, sizeof(tail), " (call %s)\n", callid);
	snprintf(head, sizeof(head), "tollgate: CALL.END %s ", acct);
	for (;;) {
		size_t n = file_read(k->log, buf, sizeof(buf));
		const char *t = n > 0 ? strstr(buf, tail) : NULL;
		if (t != NULL) {
			const char *line = t;
			while (line > buf && line[-1] != '\n')
				line--;
			const char *h = strstr(line, head);
			if (h == NULL || h > t ||
			    sscanf(h + strlen(head), "%ld s: charged %31s", secs, amount) != 2)
				fail_msg("unexpected line: %.*s", (int)(t - line), line);
			return it_money(amount);
		}
		if (tg_mono_ms() >= deadline) {
			kam_log_dump(k);
			fail_msg("no CALL.END charged for %s within %d ms", callid, WAIT_MS);
		}
		it_sleep_ms(20);
	}
}

/* One call of 1005 through Kamailio, 600 ms of talk; its final status. */
static int
sentinel_call(void)
{
	struct call_spec s = {"1005", DEST, 200, 600, 8000, &fx.k, NULL};
	struct call_result r;

	place_call(&s, &r);
	if (r.status == 200) {
		assert_true(r.hung_up);
		assert_true(nanswered < 64);
		snprintf(answered[nanswered++], sizeof(answered[0]), "%s", r.callid);
	}
	return r.status;
}

/*
 * Calls go through; the primary is killed (-9); Sentinel promotes the
 * replica; Kamailio, asking the sentinel at its reconnects, finds it and
 * authorizes calls again (three in a row).  Calls placed during the switch
 * may get 503 (fail closed), none anything else.  On the promoted node 1005 has paid exactly
 * the calls that were answered: each once.
 */
static void
test_calls_go_on_after_a_sentinel_failover(void **state)
{
	(void)state;
	tg_money_t billed = 0;
	unsigned failed = 0, after = 0;
	long secs;

	for (int i = 0; i < 3; i++)
		assert_int_equal(sentinel_call(), 200);
	wait_settled(1005);
	for (int i = 0; i < 3; i++)
		billed += charged_for(&fx.k, "1005", answered[i], &secs);
	assert_true(billed == 3 * quote(1));

	redisFree(fx.e);
	fx.e = NULL;
	assert_int_equal(it_kill(&fx.d), 0);
	uint64_t kill_at = tg_mono_ms(), first_ok = 0, deadline = kill_at + 30000;
	while (after < 3) { /* three calls in a row put through */
		if (tg_mono_ms() >= deadline) {
			kam_log_dump(&fx.k);
			fail_msg("no call put through within 30 s of the kill (%u refused)",
			         failed);
		}
		int status = sentinel_call();
		if (status == 200) {
			if (first_ok == 0)
				first_ok = tg_mono_ms();
			after++;
		} else if (status == 503) {
			/* Each Kamailio process finds the new primary on its own: the next one may
			 * not yet. */
			after = 0;
			failed++;
			it_sleep_ms(200);
		} else {
			kam_log_dump(&fx.k);
			fail_msg("a call during the failover got %d", status);
		}
	}
	fprintf(stderr,
	        "failover: first call put through %llu ms after the kill, %u refused (503) "
	        "meanwhile\n",
	        (unsigned long long)(first_ok - kill_at), failed);

	fx.e = it_connect(&fx.replica);
	assert_non_null(fx.e);
	redisReply *role = it_cmd(fx.e, "ROLE");
	assert_int_equal(role->type, REDIS_REPLY_ARRAY);
	assert_string_equal(role->element[0]->str, "master");
	freeReplyObject(role);
	/*
	 * Every answered call is billed once for its second: a CALL.END that
	 * found no primary is sent again by Kamailio (TG_END_LATER) until one
	 * answers, never left to be settled at its whole grant.
	 */
	for (unsigned i = 3; i < nanswered; i++) {
		billed += charged_for(&fx.k, "1005", answered[i], &secs);
		assert_true(secs == 1);
	}
	assert_true(billed == nanswered * quote(1));
	wait_settled(1005);
	fprintf(stderr, "%u calls answered, %s CALL.END sent again\n", nanswered,
	        kam_log_has(&fx.k, "tollgate: retrying E of call") ? "a" : "no");
	assert_true(it_acct_money(fx.e, 1005, "balance") == 5000000 - billed);
	assert_false(kam_log_has(&fx.k, "replay: CALL.END"));
	assert_true(kam_log_has(&fx.k, "refused (fail closed)") == (failed > 0));
}

/* ------------------------------------------------------------------ */

/* The kamailio binary: $KAMAILIO, or the first on PATH, or /usr/sbin's. */
static const char *
find_kamailio(void)
{
	static char buf[IT_PATH_MAX];
	const char *env = getenv("KAMAILIO");
	if (env != NULL && env[0] != '\0')
		return access(env, X_OK) == 0 ? env : NULL;
	const char *path = getenv("PATH");
	char all[2048];
	snprintf(all, sizeof(all), "%s:/usr/sbin:/usr/local/sbin", path ? path : "/usr/bin");
	for (char *dir = strtok(all, ":"); dir != NULL; dir = strtok(NULL, ":")) {
		if ((size_t)snprintf(buf, sizeof(buf), "%s/kamailio", dir) < sizeof(buf) &&
		    access(buf, X_OK) == 0)
			return buf;
	}
	return NULL;
}

/*
 * Whether this Kamailio can run the configuration: 0 yes, 77 it cannot for
 * want of a package (the reason printed), 1 the configuration is broken.
 */
static int
kam_probe(void)
{
	struct kam k = {.port = 5060};
	const char *const defines[] = {"WITH_ACCOUNT_TABLE", NULL};
	int status;

	if (it_dir_make(fx.dir, sizeof(fx.dir)) != 0)
		return 1;
	pid_t pid = kam_spawn(&k, "probe", defines, true);
	if (pid < 0 || waitpid(pid, &status, 0) != pid) {
		it_dir_remove(fx.dir);
		return 1;
	}
	int rc = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		if (kam_log_has(&k, "could not find module") || kam_log_has(&k, "cannot open")) {
			fprintf(stderr, "kamailio lacks a module this configuration needs "
			                "(apt-get install kamailio-redis-modules): skipping\n");
			rc = 77;
		} else {
			kam_log_dump(&k);
			fprintf(stderr, "kamailio -c rejects %s\n", fx.cfg);
			rc = 1;
		}
	}
	it_dir_remove(fx.dir);
	memset(fx.dir, 0, sizeof(fx.dir));
	return rc;
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest sentinel_tests[] = {
	    cmocka_unit_test(test_calls_go_on_after_a_sentinel_failover),
	};
	bool sentinel = argc > 1 && strcmp(argv[1], "sentinel") == 0;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_call_billed_for_its_duration),
	    cmocka_unit_test(test_no_credit_gets_402),
	    cmocka_unit_test(test_call_cut_at_the_grant),
	    cmocka_unit_test(test_unanswered_call_releases_its_reservation),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_one_refill_request_on_the_stream),
	    cmocka_unit_test(test_second_call_refused_at_maxcalls),
	    cmocka_unit_test(test_emergency_call_at_zero_balance),
	    cmocka_unit_test(test_closed_mid_call_cut_at_update),
	    cmocka_unit_test(test_closed_mid_call_cut_by_the_stop_stream),
	    cmocka_unit_test(test_call_end_sent_again_when_tollgated_returns),
	    cmocka_unit_test(test_tollgated_unreachable),
	};

	fx.cfg = getenv("KAMAILIO_CFG");
	if (fx.cfg == NULL || fx.cfg[0] == '\0') {
		fprintf(stderr, "KAMAILIO_CFG is not set (run through meson test)\n");
		return 1;
	}
	fx.bin = find_kamailio();
	if (fx.bin == NULL) {
		fprintf(stderr, "kamailio is not installed (apt-get install kamailio "
		                "kamailio-redis-modules): skipping\n");
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_fatal_signal);
	signal(SIGTERM, on_fatal_signal);
	signal(SIGINT, on_fatal_signal);
	alarm(WATCHDOG_S);
	atexit(kill_everything);
	int rc = kam_probe();
	if (rc != 0)
		return rc;
	if (sentinel) {
		if (!it_sentinel_present()) {
			fprintf(stderr, "redis-sentinel is not installed: skipping\n");
			return 77;
		}
		return cmocka_run_group_tests(sentinel_tests, sentinel_setup, sentinel_teardown);
	}
	/* No redis-server on this machine: skip, as every integration test does. */
	if (!tg_test_redis_present())
		return 77;
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
