/*
 * harness.c - start, reach and stop the real tollgated for integration tests.
 *
 * Owns the child process and its segment: every daemon it starts it also
 * stops (SIGTERM, then SIGKILL if it hangs) and every segment name it hands
 * out it unlinks, so a test run leaves nothing behind in /dev/shm.  The child
 * asks the kernel for SIGKILL if the test process dies first.  Never asserts
 * and never exits: errors are returned to the test.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define ARGS_MAX      64
#define START_TIMEOUT 20000
#define STOP_TIMEOUT  10000

static unsigned started; /* daemons started by this process: part of the segment name */

void
it_sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int
it_dir_make(char *path, size_t len)
{
	const char *tmp = getenv("TMPDIR");
	if (tmp == NULL || tmp[0] == '\0')
		tmp = "/tmp";
	if ((size_t)snprintf(path, len, "%s/tg-it-XXXXXX", tmp) >= len)
		return -ENAMETOOLONG;
	return mkdtemp(path) ? 0 : -errno;
}

void
it_dir_remove(const char *dir)
{
	char path[IT_PATH_MAX];
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path))
			continue;
		if (unlink(path) != 0 && (errno == EISDIR || errno == EPERM))
			it_dir_remove(path); /* a daemon's data directory */
	}
	closedir(d);
	rmdir(dir);
}

int
it_file_write(const char *dir, const char *name, const char *text, char *path, size_t len)
{
	char tmp[IT_PATH_MAX];
	size_t n = strlen(text);
	int fd, rc = 0;

	if ((size_t)snprintf(path, len, "%s/%s", dir, name) >= len ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= sizeof(tmp))
		return -ENAMETOOLONG;
	/* Write aside and rename: a reload racing with us sees the old or the new file. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (it_raw_write(fd, text, n) != 0)
		rc = -EIO;
	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -errno;
	if (rc != 0)
		unlink(tmp);
	return rc;
}

/* The whole log, NUL-terminated, into buf; its length. */
static size_t
log_read(const struct it_daemon *d, char *buf, size_t cap)
{
	size_t n = 0;
	int fd = open(d->log, O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		ssize_t r;
		while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0)
			n += (size_t)r;
		close(fd);
	}
	buf[n] = '\0';
	return n;
}

int
it_log_has(const struct it_daemon *d, const char *text)
{
	static char buf[1 << 16];
	log_read(d, buf, sizeof(buf));
	return strstr(buf, text) != NULL;
}

static void
log_dump(const struct it_daemon *d)
{
	static char buf[1 << 16];
	log_read(d, buf, sizeof(buf));
	fprintf(stderr, "---- %s ----\n%s---- end of log ----\n", d->log, buf);
}

/* The port from "ready on 127.0.0.1:<port>:" in the log, or 0 while there is none. */
static uint16_t
log_port(const struct it_daemon *d)
{
	static char buf[1 << 16];
	static const char key[] = " ready on 127.0.0.1:";
	unsigned long port;
	char *end;

	log_read(d, buf, sizeof(buf));
	const char *p = strstr(buf, key);
	if (p == NULL)
		return 0;
	port = strtoul(p + sizeof(key) - 1, &end, 10);
	return (*end == ':' && port > 0 && port <= 65535) ? (uint16_t)port : 0;
}

static int spawn(struct it_daemon *d, const char *bin, const char *const *flags);

static void
child(const struct it_daemon *d, char **argv)
{
	int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
		_exit(126);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		_exit(126);
	execv(argv[0], argv);
	fprintf(stderr, "harness: cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Whether the daemon answers a PING on a fresh connection. */
static int
answers(const struct it_daemon *d)
{
	redisContext *c = it_connect(d);
	int ok = 0;

	if (c != NULL) {
		redisReply *r = redisCommand(c, "PING");
		ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
		if (r != NULL)
			freeReplyObject(r);
		redisFree(c);
	}
	return ok;
}

int
it_start(struct it_daemon *d, const char *dir, const char *const *flags)
{
	const char *bin = getenv("TOLLGATED");

	memset(d, 0, sizeof(*d));
	if (bin == NULL || bin[0] == '\0') {
		fprintf(stderr, "harness: TOLLGATED is not set (run through meson test)\n");
		return -1;
	}
	unsigned k = ++started;
	snprintf(d->shm, sizeof(d->shm), "/tg-it-%d-%u", (int)getpid(), k);
	snprintf(d->base, sizeof(d->base), "%s/tollgated-%u", dir, k);
	snprintf(d->log, sizeof(d->log), "%.*s.log", (int)(sizeof(d->log) - 8), d->base);
	snprintf(d->data, sizeof(d->data), "%s/data-%u", dir, k);
	shm_unlink(d->shm);
	return spawn(d, bin, flags);
}

int
it_restart(struct it_daemon *d, const char *const *flags, int reboot)
{
	const char *bin = getenv("TOLLGATED");

	if (bin == NULL || bin[0] == '\0' || d->shm[0] == '\0')
		return -1;
	if (reboot)
		shm_unlink(d->shm);
	/* Each run its own log: the port is read back from the log. */
	d->port = 0;
	d->runs++;
	snprintf(d->log, sizeof(d->log), "%.*s.%u.log", (int)(sizeof(d->log) - 16), d->base,
	         d->runs);
	return spawn(d, bin, flags);
}

int
it_kill(struct it_daemon *d)
{
	int status;

	if (d->pid <= 0)
		return -1;
	kill(d->pid, SIGKILL);
	if (waitpid(d->pid, &status, 0) != d->pid)
		return -1;
	d->pid = 0;
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? 0 : 1;
}

static int
spawn(struct it_daemon *d, const char *bin, const char *const *flags)
{
	char *argv[ARGS_MAX];
	unsigned n = 0;
	int status;

	static const char *const base[] = {"--bind",       "127.0.0.1", "--port",      "0",
	                                   "--workers",    "2",         "--shm-reuse", "yes",
	                                   "--capacity",   "4096",      "--ids-max",   "100000",
	                                   "--calls-max",  "100000",    "--accounts",  "none",
	                                   "--redis-host", "none",      NULL};
	argv[n++] = (char *)bin;
	for (unsigned i = 0; base[i] != NULL; i++)
		argv[n++] = (char *)base[i];
	argv[n++] = (char *)"--shm-name";
	argv[n++] = d->shm;
	argv[n++] = (char *)"--data-dir";
	argv[n++] = d->data;
	for (unsigned i = 0; flags != NULL && flags[i] != NULL; i++) {
		if (n + 1 >= ARGS_MAX) {
			fprintf(stderr, "harness: too many flags\n");
			return -1;
		}
		argv[n++] = (char *)flags[i];
	}
	argv[n] = NULL;

	d->pid = fork();
	if (d->pid < 0) {
		d->pid = 0;
		return -1;
	}
	if (d->pid == 0)
		child(d, argv);

	uint64_t deadline = tg_mono_ms() + START_TIMEOUT;
	while (tg_mono_ms() < deadline) {
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			fprintf(stderr, "harness: tollgated exited during start-up (status %d)\n",
			        WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
			d->pid = 0;
			log_dump(d);
			shm_unlink(d->shm);
			return -1;
		}
		if (d->port == 0)
			d->port = log_port(d);
		if (d->port != 0 && answers(d))
			return 0;
		it_sleep_ms(10);
	}
	fprintf(stderr, "harness: tollgated not ready after %d ms\n", START_TIMEOUT);
	log_dump(d);
	it_stop(d);
	return -1;
}

int
it_stop(struct it_daemon *d)
{
	int rc = it_term(d);

	shm_unlink(d->shm);
	return rc;
}

int
it_term(struct it_daemon *d)
{
	int status = 0, rc = -1;

	if (d->pid <= 0)
		return -1;
	kill(d->pid, SIGTERM);
	uint64_t deadline = tg_mono_ms() + STOP_TIMEOUT;
	for (;;) {
		pid_t p = waitpid(d->pid, &status, WNOHANG);
		if (p == d->pid) {
			rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			break;
		}
		if (p < 0 && errno != EINTR)
			break;
		if (tg_mono_ms() >= deadline) {
			fprintf(stderr, "harness: tollgated did not stop on SIGTERM; killing it\n");
			kill(d->pid, SIGKILL);
			waitpid(d->pid, &status, 0);
			rc = -1;
			break;
		}
		it_sleep_ms(5);
	}
	/* A sanitizer that reports and carries on (UBSan by default) fails the stop too. */
	if (rc == 0 && (it_log_has(d, "runtime error:") || it_log_has(d, "Sanitizer"))) {
		fprintf(stderr, "harness: tollgated's log has a sanitizer report\n");
		rc = -2;
	}
	if (rc != 0)
		log_dump(d);
	d->pid = 0;
	return rc;
}

redisContext *
it_connect(const struct it_daemon *d)
{
	struct timeval tv = {.tv_sec = 10};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", d->port, tv);

	if (c == NULL)
		return NULL;
	if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
		redisFree(c);
		return NULL;
	}
	return c;
}

int
it_raw_connect(uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons(port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int
it_raw_write(int fd, const void *p, size_t n)
{
	const char *b = p;
	while (n > 0) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

size_t
it_raw_read(int fd, char *buf, size_t cap, int quiet_ms, int *closed)
{
	size_t n = 0;

	*closed = 0;
	while (n + 1 < cap) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int rc = poll(&p, 1, quiet_ms);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			break;
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			*closed = 1; /* EOF, or a reset: either way the daemon closed it */
			break;
		}
		n += (size_t)r;
	}
	buf[n] = '\0';
	return n;
}
