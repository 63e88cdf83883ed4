/*
 * sentinel_harness.c - start and stop real redis-sentinel processes
 * (sentinel_harness.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sentinel_harness.h"

static const char *
binary(void)
{
	const char *b = getenv("REDIS_SENTINEL");
	return b && *b ? b : "redis-sentinel";
}

int
it_sentinel_present(void)
{
	const char *b = binary();
	if (strchr(b, '/') != NULL)
		return access(b, X_OK) == 0;
	const char *path = getenv("PATH");
	char dir[IT_PATH_MAX];
	for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
		size_t n = strcspn(p, ":");
		snprintf(dir, sizeof(dir), "%.*s/%s", (int)n, p, b);
		if (access(dir, X_OK) == 0)
			return 1;
		p += n + (p[n] == ':');
	}
	return 0;
}

/* A port nobody listens on now (the kernel's pick, released). */
static uint16_t
free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint16_t port = 0;

	if (fd < 0)
		return 0;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

void
it_sentinel_dump(const struct it_sentinel *s)
{
	char buf[8192];
	FILE *f = fopen(s->log, "r");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	if (f)
		fclose(f);
	buf[n] = '\0';
	fprintf(stderr, "---- %s ----\n%s---- end ----\n", s->log, buf);
}

redisContext *
it_sentinel_connect(const struct it_sentinel *s)
{
	struct timeval tv = {5, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
	if (c == NULL || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	return c;
}

bool
it_sentinels_see_replicas(const struct it_sentinel *s, unsigned n, const char *group, unsigned want)
{
	for (unsigned k = 0; k < n; k++) {
		redisContext *c = it_sentinel_connect(&s[k]);
		if (c == NULL)
			return false;
		redisReply *r = redisCommand(c, "SENTINEL REPLICAS %s", group);
		unsigned good = 0;
		if (r != NULL && r->type == REDIS_REPLY_ARRAY)
			for (size_t e = 0; e < r->elements; e++) {
				redisReply *x = r->element[e];
				for (size_t f = 0; f + 1 < x->elements; f += 2)
					if (strcmp(x->element[f]->str, "flags") == 0 &&
					    strcmp(x->element[f + 1]->str, "slave") == 0)
						good++;
			}
		if (r)
			freeReplyObject(r);
		redisFree(c);
		if (good < want)
			return false;
	}
	return true;
}

static int
start_one(struct it_sentinel *s, unsigned i, const char *dir, const struct it_sentinel_cfg *cfg)
{
	char text[2048];
	int n;

	s->port = free_port();
	if (s->port == 0)
		return -1;
	snprintf(s->conf, sizeof(s->conf), "%s/sentinel-%u.conf", dir, i);
	snprintf(s->log, sizeof(s->log), "%s/sentinel-%u.log", dir, i);
	const char *name = cfg->master_name ? cfg->master_name : "mymaster";
	n = snprintf(text, sizeof(text),
	             "port %u\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"
	             "logfile \"%s\"\ndir \"%s\"\n"
	             "sentinel monitor %s 127.0.0.1 %u %u\n"
	             "sentinel down-after-milliseconds %s %u\n"
	             "sentinel failover-timeout %s %u\n",
	             s->port, s->log, dir, name, cfg->master_port, cfg->quorum ? cfg->quorum : 2,
	             name, cfg->down_after_ms ? cfg->down_after_ms : 1000, name,
	             cfg->failover_timeout ? cfg->failover_timeout : 10000);
	if (cfg->auth_pass != NULL)
		n += snprintf(text + n, sizeof(text) - (size_t)n, "sentinel auth-pass %s %s\n",
		              name, cfg->auth_pass);
	if (cfg->auth_user != NULL)
		n += snprintf(text + n, sizeof(text) - (size_t)n, "sentinel auth-user %s %s\n",
		              name, cfg->auth_user);
	FILE *f = fopen(s->conf, "w");
	if (f == NULL)
		return -1;
	fputs(text, f);
	fclose(f);

	pid_t parent = getpid();
	s->pid = fork();
	if (s->pid < 0)
		return -1;
	if (s->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
		}
		execlp(binary(), binary(), s->conf, (char *)NULL);
		_exit(127);
	}
	for (int t = 0; t < 200; t++) {
		redisContext *c = it_sentinel_connect(s);
		if (c != NULL) {
			redisReply *r = redisCommand(c, "PING");
			int ok = r && r->type == REDIS_REPLY_STATUS;
			if (r)
				freeReplyObject(r);
			redisFree(c);
			if (ok)
				return 0;
		}
		int st;
		if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
			s->pid = 0;
			return -1;
		}
		it_sleep_ms(50);
	}
	return -1;
}

int
it_sentinels_start(struct it_sentinel *s, unsigned n, const char *dir,
                   const struct it_sentinel_cfg *cfg)
{
	memset(s, 0, n * sizeof(*s));
	if (n > IT_SENTINELS_MAX)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		if (start_one(&s[i], i, dir, cfg) != 0) {
			it_sentinel_dump(&s[i]);
			it_sentinels_stop(s, n);
			return -1;
		}
	}
	return 0;
}

void
it_sentinels_stop(struct it_sentinel *s, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (s[i].pid > 0)
			kill(s[i].pid, SIGTERM);
	for (unsigned i = 0; i < n; i++) {
		if (s[i].pid <= 0)
			continue;
		int st, t = 0;
		pid_t r;
		while ((r = waitpid(s[i].pid, &st, WNOHANG)) == 0 && t++ < 100)
			it_sleep_ms(50);
		if (r == 0) {
			kill(s[i].pid, SIGKILL);
			waitpid(s[i].pid, &st, 0);
		}
		s[i].pid = 0;
	}
}
