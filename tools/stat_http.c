/*
 * stat_http.c - `tollstat --listen host:port`: the Prometheus text over a
 * tiny HTTP/1.0 endpoint.
 *
 * Owns the listening socket and one connection at a time: read the request
 * head, answer GET /metrics with a fresh snapshot (404 for any other path,
 * 405 for another method), close.  No threads, no keep-alive.  A client
 * that sends nothing or reads nothing holds the loop for at most IO_TIMEOUT_S
 * seconds, and a request head larger than REQ_MAX is refused, so no client
 * can stall the endpoint for long or make it allocate.  It must never write
 * to the segment, and answers 503 while the segment cannot be read.
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "stat.h"

#define REQ_MAX      4096
#define IO_TIMEOUT_S 5
#define HOST_MAX     256

static volatile sig_atomic_t stopping;

static void
on_stop(int sig)
{
	(void)sig;
	stopping = 1;
}

/* Split "host:port" or "[v6]:port".  Returns 0, or -1 for a malformed address. */
static int
split_addr(const char *addr, char host[HOST_MAX], char port[8])
{
	const char *colon = strrchr(addr, ':');
	size_t hl;

	if (colon == NULL || colon[1] == '\0' || strlen(colon + 1) > 5 ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1))
		return -1;
	hl = (size_t)(colon - addr);
	if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
		addr++;
		hl -= 2;
	}
	if (hl == 0 || hl >= HOST_MAX || atoi(colon + 1) > 65535)
		return -1;
	memcpy(host, addr, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

/* A listening socket on host:port, or -1 with the reason on stderr. */
static int
listen_on(const char *host, const char *port)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res, *ai;
	int fd = -1, rc, one = 1, err = 0;

	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "tollstat: --listen %s:%s: %s\n", host, port, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0)
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		fprintf(stderr, "tollstat: cannot listen on %s:%s: %s\n", host, port,
		        strerror(err));
	return fd;
}

/* The port fd listens on (for --listen host:0). */
static unsigned
bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return 0;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)(void *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port);
}

static void
send_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR && !stopping)
			continue;
		if (n <= 0)
			return; /* the client went away or timed out: nothing to do */
		p += n;
		len -= (size_t)n;
	}
}

static void
respond(int fd, const char *status, const char *type, const char *body, size_t len)
{
	char head[256];
	int n = snprintf(head, sizeof(head),
	                 "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	                 "Connection: close\r\n\r\n",
	                 status, type, len);
	send_all(fd, head, (size_t)n);
	send_all(fd, body, len);
}

/* Read the request head (up to the blank line) into buf.  Returns its length or -1. */
static ssize_t
read_head(int fd, char *buf, size_t cap)
{
	size_t len = 0;

	while (len < cap - 1) {
		ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
		if (n < 0 && errno == EINTR && !stopping)
			continue;
		if (n <= 0)
			return len ? (ssize_t)len : -1;
		len += (size_t)n;
		buf[len] = '\0';
		if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
			return (ssize_t)len;
	}
	return -1;
}

/*
 * Answer one connection.  The segment is checked for a new engine or a new
 * segment before each scrape; *src stays usable across calls.
 */
static void
serve(int fd, struct stat_src *src, bool *attached)
{
	static const char text[] = "text/plain; charset=utf-8";
	char req[REQ_MAX];
	struct timeval tv = {IO_TIMEOUT_S, 0};

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	ssize_t n = read_head(fd, req, sizeof(req));
	if (n < 0) {
		static const char msg[] = "bad request\n";
		respond(fd, "400 Bad Request", text, msg, sizeof(msg) - 1);
		return;
	}
	/* Request line: METHOD SP target SP version; the query string is ignored. */
	char *sp1 = strchr(req, ' ');
	char *sp2 = sp1 ? strpbrk(sp1 + 1, " \r\n") : NULL;
	if (sp1 == NULL || sp2 == NULL) {
		static const char msg[] = "bad request\n";
		respond(fd, "400 Bad Request", text, msg, sizeof(msg) - 1);
		return;
	}
	*sp1 = *sp2 = '\0';
	char *target = sp1 + 1, *q = strchr(target, '?');
	if (q)
		*q = '\0';
	if (strcmp(req, "GET") != 0) {
		static const char msg[] = "only GET\n";
		respond(fd, "405 Method Not Allowed", text, msg, sizeof(msg) - 1);
		return;
	}
	if (strcmp(target, "/metrics") != 0) {
		static const char msg[] = "not found: the metrics are at /metrics\n";
		respond(fd, "404 Not Found", text, msg, sizeof(msg) - 1);
		return;
	}

	enum stat_change ch = STAT_LOST;
	if (*attached) {
		ch = stat_src_refresh(src);
	} else if (stat_src_open(src, src->name) == 0) {
		*attached = true;
		ch = STAT_NEW_SEGMENT;
	}
	if (ch == STAT_LOST) {
		char msg[STAT_ERR_MAX + 8];
		int len = snprintf(msg, sizeof(msg), "%s\n", src->err);
		respond(fd, "503 Service Unavailable", text, msg, (size_t)len);
		return;
	}

	static struct stat_snap snap;
	char *body = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&body, &len);
	if (m == NULL) {
		static const char msg[] = "out of memory\n";
		respond(fd, "500 Internal Server Error", text, msg, sizeof(msg) - 1);
		return;
	}
	stat_snap_take(src, &snap, NULL, 0, true);
	stat_print_prom(m, src, &snap);
	fclose(m);
	respond(fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, len);
	free(body);
}

int
stat_listen(const char *name, const char *addr)
{
	char host[HOST_MAX], port[8];
	struct stat_src src;
	bool attached = false;

	if (split_addr(addr, host, port) != 0) {
		fprintf(stderr, "tollstat: --listen %s: expected host:port\n", addr);
		return STAT_EXIT_USAGE;
	}
	/* A segment that is there at start must be one this build reads; one not there yet may
	 * come. */
	int rc = stat_src_open(&src, name);
	if (rc == 0) {
		attached = true;
	} else if (rc != -ENOENT) {
		fprintf(stderr, "tollstat: %s\n", src.err);
		return STAT_EXIT_ATTACH;
	} else {
		fprintf(stderr, "tollstat: %s (answering 503 until it appears)\n", src.err);
	}

	int lfd = listen_on(host, port);
	if (lfd < 0) {
		if (attached)
			stat_src_close(&src);
		return STAT_EXIT_IO;
	}
	struct sigaction sa = {.sa_handler = on_stop};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	fprintf(stderr, "tollstat: serving %s on http://%s:%u/metrics\n", name, host,
	        bound_port(lfd));

	while (!stopping) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE) { /* wait for a descriptor */
				usleep(100000);
				continue;
			}
			fprintf(stderr, "tollstat: accept: %s\n", strerror(errno));
			break;
		}
		serve(fd, &src, &attached);
		close(fd);
	}
	close(lfd);
	if (attached)
		stat_src_close(&src);
	return stopping ? STAT_EXIT_OK : STAT_EXIT_IO;
}
