/*
 * redis_harness.c - start, reach and stop a private redis-server for tests.
 *
 * Owns the child process and its directory: every server it starts it also
 * stops (SIGTERM, then SIGKILL if it hangs) and every directory it makes it
 * removes.  The port is found by binding port 0 and reading back what the
 * kernel chose; another process could take it before redis binds, so a
 * server that exits during start-up on a port picked here is retried on a
 * fresh one.  Never asserts and never exits: errors are returned.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "redis_harness.h"

#define READY_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS  5000
#define PORT_TRIES       5

/* The redis-server to run: $REDIS_SERVER, or the first on PATH.  NULL if none. */
static const char *
find_binary(char *buf, size_t len)
{
	const char *env = getenv("REDIS_SERVER");
	if (env != NULL && env[0] != '\0')
		return access(env, X_OK) == 0 ? env : NULL;
	const char *path = getenv("PATH");
	if (path == NULL)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path != '\0') {
		size_t n = strcspn(path, ":");
		if (n > 0 && (size_t)snprintf(buf, len, "%.*s/redis-server", (int)n, path) < len &&
		    access(buf, X_OK) == 0)
			return buf;
		path += n;
		if (*path == ':')
			path++;
	}
	return NULL;
}

/* A TCP port on 127.0.0.1 that nothing listens on right now, or 0. */
static uint16_t
free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	uint16_t port = 0;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static void
copy_log(const struct tg_test_redis *r)
{
	char path[512], line[512];
	snprintf(path, sizeof(path), "%s/redis.log", r->dir);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return;
	fprintf(stderr, "--- %s ---\n", path);
	while (fgets(line, sizeof(line), f) != NULL)
		fputs(line, stderr);
	fclose(f);
}

static pid_t
spawn(const char *bin, const struct tg_test_redis *r)
{
	char port[16], log[512];
	pid_t parent = getpid();

	snprintf(port, sizeof(port), "%u", r->port);
	snprintf(log, sizeof(log), "%s/redis.log", r->dir);
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	/* The child: die with the test, write only into the private directory. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	int in = open("/dev/null", O_RDONLY);
	int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (in < 0 || out < 0 || chdir(r->dir) != 0)
		_exit(127);
	dup2(in, STDIN_FILENO);
	dup2(out, STDOUT_FILENO);
	dup2(out, STDERR_FILENO);
	execl(bin, bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
	      "--dir", r->dir, "--daemonize", "no", "--logfile", "", (char *)NULL);
	_exit(127);
}

/* PING until PONG.  0, -ECHILD if the server exited, -ETIMEDOUT. */
static int
wait_ready(struct tg_test_redis *r)
{
	uint64_t deadline = tg_mono_ms() + READY_TIMEOUT_MS;
	int status;

	while (tg_mono_ms() < deadline) {
		if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
			r->pid = 0;
			return -ECHILD;
		}
		redisContext *c = tg_test_redis_connect(r);
		if (c != NULL) {
			redisReply *rep = redisCommand(c, "PING");
			int ok = rep != NULL && rep->type == REDIS_REPLY_STATUS &&
			         strcmp(rep->str, "PONG") == 0;
			if (rep != NULL)
				freeReplyObject(rep);
			redisFree(c);
			if (ok)
				return 0;
		}
		it_sleep_ms(20);
	}
	return -ETIMEDOUT;
}

static void
kill_wait(struct tg_test_redis *r)
{
	uint64_t deadline = tg_mono_ms() + STOP_TIMEOUT_MS;
	int status;

	if (r->pid <= 0)
		return;
	kill(r->pid, SIGTERM);
	while (waitpid(r->pid, &status, WNOHANG) == 0) {
		if (tg_mono_ms() > deadline) {
			kill(r->pid, SIGKILL);
			waitpid(r->pid, &status, 0);
			break;
		}
		it_sleep_ms(10);
	}
	r->pid = 0;
}

int
tg_test_redis_start(struct tg_test_redis *r)
{
	char buf[512];
	const char *bin = find_binary(buf, sizeof(buf));
	const char *tmp = getenv("TMPDIR");
	bool picked = r->port == 0;
	int rc = -EINVAL;

	if (bin == NULL)
		return -ENOENT;
	if (r->pid > 0)
		return -EALREADY;
	if (tmp == NULL || tmp[0] == '\0')
		tmp = "/tmp";
	for (int tries = 0; tries < PORT_TRIES; tries++) {
		if ((size_t)snprintf(r->dir, sizeof(r->dir), "%s/tg-redis-XXXXXX", tmp) >=
		    sizeof(r->dir))
			return -ENAMETOOLONG;
		if (mkdtemp(r->dir) == NULL)
			return -errno;
		if (picked)
			r->port = free_port();
		if (r->port == 0) {
			it_dir_remove(r->dir);
			return -EADDRNOTAVAIL;
		}
		r->pid = spawn(bin, r);
		if (r->pid < 0) {
			rc = -errno;
			r->pid = 0;
			it_dir_remove(r->dir);
			return rc;
		}
		rc = wait_ready(r);
		if (rc == 0)
			return 0;
		/* Someone else took the port between our probe and redis's bind: pick again. */
		if (rc != -ECHILD || !picked || tries == PORT_TRIES - 1)
			copy_log(r);
		kill_wait(r);
		it_dir_remove(r->dir);
		r->dir[0] = '\0';
		if (rc != -ECHILD || !picked)
			break;
	}
	if (picked)
		r->port = 0;
	return rc;
}

void
tg_test_redis_stop(struct tg_test_redis *r)
{
	if (r->pid <= 0)
		return;
	kill_wait(r);
	if (r->dir[0] != '\0')
		it_dir_remove(r->dir);
	r->dir[0] = '\0';
}

redisContext *
tg_test_redis_connect(const struct tg_test_redis *r)
{
	struct timeval tv = {.tv_sec = 5};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);

	if (c == NULL)
		return NULL;
	if (c->err != 0) {
		redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	return c;
}

bool
tg_test_redis_present(void)
{
	struct tg_test_redis probe = {0};

	if (tg_test_redis_start(&probe) == -ENOENT) {
		fprintf(stderr, "redis-server not found: skipping\n");
		return false;
	}
	tg_test_redis_stop(&probe);
	return true;
}
