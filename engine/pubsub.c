/*
 * pubsub.c - subscribers and PUBLISH (tg_pubsub.h, docs/HA.md).
 *
 * One thread owns every subscriber's socket (non-blocking, one poll over
 * them all and an eventfd to wake it).  Workers only ever append to a
 * subscriber's buffer under the mutex and wake the thread; they never
 * write to a subscriber's socket nor wait for one.  A subscriber's memory
 * is freed by the thread alone, so the thread may use a subscriber between
 * its poll and the next lock without looking it up again.
 */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tg_assert.h"
#include "tg_clock.h"
#include "tg_log.h"
#include "tg_net.h"
#include "tg_pubsub.h"

#define PUBSUB_MAGIC 0x70756273u

struct subscription {
	char *name; /* NUL-terminated copy */
	uint32_t len;
	bool pattern;
};

struct sub {
	uint64_t id;
	int fd;    /* -1 until attached */
	bool drop; /* close now, whatever is unsent */
	bool quit; /* close once everything is sent (QUIT, a protocol error) */
	uint64_t added_s;
	char name[65];
	char addr[48];
	unsigned n;
	struct subscription s[TG_PUBSUB_SUBS_MAX];
	char *out; /* unsent replies: out[off..len) */
	size_t off, len, cap;
	size_t in_len;
	struct sub *next;
	char in[TG_PUBSUB_INBUF];
};

struct tg_pubsub {
	uint32_t magic;
	struct tg_pubsub_cfg cfg;
	pthread_mutex_t mu;
	pthread_t thread;
	bool started;
	bool stop;
	int wake; /* eventfd */
	struct sub *subs;
	unsigned count;
	uint64_t messages, slow_dropped, killed;
	struct pollfd *pfd; /* cfg.subscribers_max + 1, the thread's */
	struct sub **pfd_sub;
};

static uint64_t
now_s(void)
{
	return tg_clock_ms(CLOCK_MONOTONIC_COARSE) / 1000;
}

static void
wake(struct tg_pubsub *ps)
{
	uint64_t one = 1;
	/* A full counter already wakes the thread: nothing to do on EAGAIN. */
	if (write(ps->wake, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return;
}

/*
 * Append p[0..n) to s's unsent replies.  Past buffer_max the subscriber is
 * dropped (counted as slow) and false returned.  Under mu.
 */
static bool
out_add(struct tg_pubsub *ps, struct sub *s, const char *p, size_t n)
{
	if (s->drop)
		return false;
	if (s->off > 0 && s->off == s->len)
		s->off = s->len = 0;
	if (s->len - s->off + n > ps->cfg.buffer_max) {
		s->drop = true;
		ps->slow_dropped++;
		return false;
	}
	if (s->len + n > s->cap && s->off > 0) {
		memmove(s->out, s->out + s->off, s->len - s->off);
		s->len -= s->off;
		s->off = 0;
	}
	if (s->len + n > s->cap) {
		size_t cap = s->cap ? s->cap : 256;
		while (cap < s->len + n)
			cap *= 2;
		if (cap > ps->cfg.buffer_max)
			cap = ps->cfg.buffer_max;
		char *nb = realloc(s->out, cap);
		if (nb == NULL) {
			s->drop = true;
			return false;
		}
		s->out = nb;
		s->cap = cap;
	}
	memcpy(s->out + s->len, p, n);
	s->len += n;
	return true;
}

static bool
out_header(struct tg_pubsub *ps, struct sub *s, char kind, long long v)
{
	char b[32];
	int n = snprintf(b, sizeof(b), "%c%lld\r\n", kind, v);
	return out_add(ps, s, b, (size_t)n);
}

static bool
out_bulk(struct tg_pubsub *ps, struct sub *s, const char *p, size_t n)
{
	return out_header(ps, s, '$', (long long)n) && out_add(ps, s, p, n) &&
	       out_add(ps, s, "\r\n", 2);
}

static bool
out_cstr(struct tg_pubsub *ps, struct sub *s, const char *p)
{
	return out_bulk(ps, s, p, strlen(p));
}

static int
find(const struct sub *s, const char *name, size_t len, bool pattern)
{
	for (unsigned i = 0; i < s->n; i++)
		if (s->s[i].pattern == pattern && s->s[i].len == len &&
		    memcmp(s->s[i].name, name, len) == 0)
			return (int)i;
	return -1;
}

/* Add one subscription unless s holds it already.  0, -E2BIG or -ENOMEM. */
static int
subscribe_one(struct sub *s, const char *name, size_t len, bool pattern)
{
	if (find(s, name, len, pattern) >= 0)
		return 0;
	if (s->n >= TG_PUBSUB_SUBS_MAX)
		return -E2BIG;
	char *copy = malloc(len + 1);
	if (copy == NULL)
		return -ENOMEM;
	memcpy(copy, name, len);
	copy[len] = '\0';
	s->s[s->n++] = (struct subscription){copy, (uint32_t)len, pattern};
	return 0;
}

static void
unsubscribe_at(struct sub *s, unsigned i)
{
	free(s->s[i].name);
	s->s[i] = s->s[--s->n];
}

static void
sub_free(struct sub *s)
{
	for (unsigned i = 0; i < s->n; i++)
		free(s->s[i].name);
	if (s->fd >= 0)
		close(s->fd);
	free(s->out);
	free(s);
}

static struct sub *
lookup(struct tg_pubsub *ps, uint64_t id)
{
	for (struct sub *s = ps->subs; s != NULL; s = s->next)
		if (s->id == id)
			return s;
	return NULL;
}

int
tg_pubsub_add(struct tg_pubsub *ps, uint64_t id, const char *name, bool pattern,
              const struct tg_arg *names, unsigned n, struct tg_out *out)
{
	if (ps == NULL)
		return -ENOTCONN; /* no subscribers' thread (a program that embeds the commands) */
	TG_CHECK_OBJ(ps, PUBSUB_MAGIC);
	struct sub *s = calloc(1, sizeof(*s));
	int rc = 0;

	if (s == NULL)
		return -ENOMEM;
	s->id = id;
	s->fd = -1;
	s->added_s = now_s();
	snprintf(s->name, sizeof(s->name), "%s", name);
	for (unsigned i = 0; i < n && rc == 0; i++)
		rc = subscribe_one(s, names[i].p, names[i].len, pattern);
	pthread_mutex_lock(&ps->mu);
	if (rc == 0 && ps->count >= ps->cfg.subscribers_max)
		rc = -EMFILE;
	if (rc == 0) {
		s->next = ps->subs;
		ps->subs = s;
		ps->count++;
	}
	pthread_mutex_unlock(&ps->mu);
	if (rc != 0) {
		sub_free(s);
		return rc;
	}
	/* Redis counts as it goes: a repeated name does not raise the count. */
	unsigned seen = 0;
	for (unsigned i = 0; i < n; i++) {
		bool dup = false;
		for (unsigned k = 0; k < i && !dup; k++)
			dup = names[k].len == names[i].len &&
			      memcmp(names[k].p, names[i].p, names[i].len) == 0;
		seen += !dup;
		tg_out_array(out, 3);
		tg_out_cstr(out, pattern ? "psubscribe" : "subscribe");
		tg_out_bulk(out, names[i].p, names[i].len);
		tg_out_int(out, seen);
	}
	return 0;
}

void
tg_pubsub_attach(struct tg_pubsub *ps, uint64_t id, int fd)
{
	TG_CHECK_OBJ(ps, PUBSUB_MAGIC);
	struct tg_net_peer peer = {{0}};
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char addr[48] = "?";

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET6) {
			memcpy(peer.addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
		} else if (ss.ss_family == AF_INET) {
			peer.addr[10] = peer.addr[11] = 0xff;
			memcpy(peer.addr + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
		}
		tg_net_peer_str(&peer, addr, sizeof(addr));
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	pthread_mutex_lock(&ps->mu);
	struct sub *s = lookup(ps, id);
	if (s != NULL && s->fd < 0) {
		s->fd = fd;
		snprintf(s->addr, sizeof(s->addr), "%s", addr);
		fd = -1;
	}
	pthread_mutex_unlock(&ps->mu);
	if (fd >= 0) /* forgotten meanwhile (killed, dropped, too late) */
		close(fd);
	else
		wake(ps);
}

uint64_t
tg_pubsub_publish(struct tg_pubsub *ps, const char *channel, size_t chlen, const char *msg,
                  size_t msglen)
{
	if (ps == NULL)
		return 0;
	TG_CHECK_OBJ(ps, PUBSUB_MAGIC);
	char ch[TG_ARG_MAX + 1];
	uint64_t receivers = 0;

	if (chlen > TG_ARG_MAX)
		chlen = TG_ARG_MAX;
	memcpy(ch, channel, chlen);
	ch[chlen] = '\0';
	pthread_mutex_lock(&ps->mu);
	for (struct sub *s = ps->subs; s != NULL; s = s->next) {
		for (unsigned i = 0; i < s->n && !s->drop; i++) {
			const struct subscription *x = &s->s[i];
			if (!x->pattern) {
				if (x->len != chlen || memcmp(x->name, ch, chlen) != 0)
					continue;
				if (out_header(ps, s, '*', 3) && out_cstr(ps, s, "message") &&
				    out_bulk(ps, s, ch, chlen) && out_bulk(ps, s, msg, msglen))
					receivers++;
			} else {
				if (fnmatch(x->name, ch, 0) != 0)
					continue;
				if (out_header(ps, s, '*', 4) && out_cstr(ps, s, "pmessage") &&
				    out_bulk(ps, s, x->name, x->len) &&
				    out_bulk(ps, s, ch, chlen) && out_bulk(ps, s, msg, msglen))
					receivers++;
			}
		}
	}
	ps->messages += receivers;
	pthread_mutex_unlock(&ps->mu);
	wake(ps);
	return receivers;
}

uint64_t
tg_pubsub_kill(struct tg_pubsub *ps)
{
	if (ps == NULL)
		return 0;
	TG_CHECK_OBJ(ps, PUBSUB_MAGIC);
	uint64_t n = 0;

	pthread_mutex_lock(&ps->mu);
	for (struct sub *s = ps->subs; s != NULL; s = s->next)
		if (!s->drop) {
			s->drop = true;
			n++;
		}
	ps->killed += n;
	pthread_mutex_unlock(&ps->mu);
	wake(ps);
	return n;
}

void
tg_pubsub_list(struct tg_pubsub *ps, char *buf, size_t *len, size_t cap)
{
	if (ps == NULL)
		return;
	TG_CHECK_OBJ(ps, PUBSUB_MAGIC);
	uint64_t now = now_s();

	pthread_mutex_lock(&ps->mu);
	for (struct sub *s = ps->subs; s != NULL && *len < cap; s = s->next) {
		unsigned ch = 0, pat = 0;
		for (unsigned i = 0; i < s->n; i++)
			s->s[i].pattern ? pat++ : ch++;
		int n = snprintf(buf + *len, cap - *len,
		                 "id=%llu addr=%s name=%s age=%llu flags=P sub=%u psub=%u "
		                 "omem=%zu cmd=subscribe\n",
		                 (unsigned long long)s->id, s->addr[0] ? s->addr : "?", s->name,
		                 (unsigned long long)(now - s->added_s), ch, pat, s->len - s->off);
		if (n > 0)
			*len = (size_t)n < cap - *len ? *len + (size_t)n : cap;
	}
	pthread_mutex_unlock(&ps->mu);
}

void
tg_pubsub_stats(struct tg_pubsub *ps, struct tg_pubsub_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (ps == NULL)
		return;
	TG_CHECK_OBJ(ps, PUBSUB_MAGIC);
	pthread_mutex_lock(&ps->mu);
	for (struct sub *s = ps->subs; s != NULL; s = s->next) {
		st->subscribers++;
		for (unsigned i = 0; i < s->n; i++)
			s->s[i].pattern ? st->patterns++ : st->channels++;
	}
	st->messages = ps->messages;
	st->slow_dropped = ps->slow_dropped;
	st->killed = ps->killed;
	pthread_mutex_unlock(&ps->mu);
}

/* ---- the thread ---- */

/* UNSUBSCRIBE / PUNSUBSCRIBE: the names given, or every one of that kind.  Under mu. */
static void
unsubscribe(struct tg_pubsub *ps, struct sub *s, const struct tg_req *r, bool pattern)
{
	const char *kind = pattern ? "punsubscribe" : "unsubscribe";
	bool any = false;

	if (r->argc > 1) {
		for (uint32_t a = 1; a < r->argc; a++) {
			int i = find(s, r->argv[a].p, r->argv[a].len, pattern);
			if (i >= 0)
				unsubscribe_at(s, (unsigned)i);
			out_header(ps, s, '*', 3);
			out_cstr(ps, s, kind);
			out_bulk(ps, s, r->argv[a].p, r->argv[a].len);
			out_header(ps, s, ':', s->n);
		}
		return;
	}
	for (unsigned i = 0; i < s->n;) {
		if (s->s[i].pattern != pattern) {
			i++;
			continue;
		}
		any = true;
		out_header(ps, s, '*', 3);
		out_cstr(ps, s, kind);
		out_bulk(ps, s, s->s[i].name, s->s[i].len);
		unsubscribe_at(s, i);
		out_header(ps, s, ':', s->n);
	}
	if (!any) {
		out_header(ps, s, '*', 3);
		out_cstr(ps, s, kind);
		out_add(ps, s, "$-1\r\n", 5);
		out_header(ps, s, ':', s->n);
	}
}

/* One request from a subscriber.  Under mu. */
static void
handle(struct tg_pubsub *ps, struct sub *s, const struct tg_req *r)
{
	const struct tg_arg *cmd = &r->argv[0];
	bool pattern = tg_arg_is(cmd, "PSUBSCRIBE") || tg_arg_is(cmd, "PUNSUBSCRIBE");

	if ((tg_arg_is(cmd, "SUBSCRIBE") || tg_arg_is(cmd, "PSUBSCRIBE")) && r->argc > 1) {
		for (uint32_t a = 1; a < r->argc; a++) {
			int rc = subscribe_one(s, r->argv[a].p, r->argv[a].len, pattern);
			if (rc != 0) {
				char msg[96];
				int n = snprintf(msg, sizeof(msg),
				                 "-ERR at most %d subscriptions per connection\r\n",
				                 TG_PUBSUB_SUBS_MAX);
				out_add(ps, s, msg, (size_t)n);
				continue;
			}
			out_header(ps, s, '*', 3);
			out_cstr(ps, s, pattern ? "psubscribe" : "subscribe");
			out_bulk(ps, s, r->argv[a].p, r->argv[a].len);
			out_header(ps, s, ':', s->n);
		}
	} else if (tg_arg_is(cmd, "UNSUBSCRIBE") || tg_arg_is(cmd, "PUNSUBSCRIBE")) {
		unsubscribe(ps, s, r, pattern);
	} else if (tg_arg_is(cmd, "PING") && r->argc <= 2) {
		/* In subscribed mode Redis answers PING with an array. */
		out_header(ps, s, '*', 2);
		out_cstr(ps, s, "pong");
		if (r->argc == 2)
			out_bulk(ps, s, r->argv[1].p, r->argv[1].len);
		else
			out_bulk(ps, s, "", 0);
	} else if (tg_arg_is(cmd, "QUIT")) {
		out_add(ps, s, "+OK\r\n", 5);
		s->quit = true;
	} else {
		char msg[160], b[48];
		int n = snprintf(msg, sizeof(msg),
		                 "-ERR Can't execute '%s': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / "
		                 "PING / QUIT are allowed in this context\r\n",
		                 tg_log_show(b, 40, cmd->p, cmd->len));
		out_add(ps, s, msg, (size_t)n);
	}
}

/* Read what s sent and answer it.  Under mu. */
static void
sub_read(struct tg_pubsub *ps, struct sub *s)
{
	ssize_t n = recv(s->fd, s->in + s->in_len, sizeof(s->in) - s->in_len, 0);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		s->drop = true;
		return;
	}
	if (n < 0)
		return;
	s->in_len += (size_t)n;
	size_t pos = 0;
	while (pos < s->in_len && !s->quit && !s->drop) {
		struct tg_req r;
		size_t used = 0;
		const char *err = NULL;
		enum tg_parse p =
		    tg_resp_parse(s->in + pos, s->in_len - pos, sizeof(s->in), &r, &used, &err);
		if (p == TG_PARSE_MORE)
			break;
		if (p == TG_PARSE_ERROR) {
			out_add(ps, s, "-", 1);
			out_add(ps, s, err, strlen(err));
			out_add(ps, s, "\r\n", 2);
			s->quit = true;
			break;
		}
		pos += used;
		if (p == TG_PARSE_OK)
			handle(ps, s, &r);
	}
	memmove(s->in, s->in + pos, s->in_len - pos);
	s->in_len -= pos;
	if (s->in_len == sizeof(s->in)) /* a request longer than the buffer */
		s->quit = true;
}

/* Send what s has waiting.  Under mu. */
static void
sub_write(struct sub *s)
{
	while (s->off < s->len) {
		ssize_t n = send(s->fd, s->out + s->off, s->len - s->off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				s->drop = true;
			return;
		}
		s->off += (size_t)n;
	}
	if (s->quit)
		s->drop = true;
}

/* Free the dropped and the never attached.  Under mu. */
static void
reap(struct tg_pubsub *ps)
{
	uint64_t now = now_s();
	for (struct sub **pp = &ps->subs; *pp != NULL;) {
		struct sub *s = *pp;
		if (s->drop || (s->fd < 0 && now - s->added_s > TG_PUBSUB_ATTACH_S)) {
			*pp = s->next;
			ps->count--;
			sub_free(s);
			continue;
		}
		pp = &s->next;
	}
}

static void *
run(void *arg)
{
	struct tg_pubsub *ps = arg;

	pthread_mutex_lock(&ps->mu);
	while (!ps->stop) {
		reap(ps);
		unsigned n = 1;
		bool again = false;
		ps->pfd[0] = (struct pollfd){.fd = ps->wake, .events = POLLIN};
		for (struct sub *s = ps->subs; s != NULL; s = s->next) {
			if (s->fd < 0)
				continue;
			if (s->off < s->len)
				sub_write(s);
			if (s->drop) {
				again = true;
				continue;
			}
			ps->pfd[n] = (struct pollfd){
			    .fd = s->fd,
			    .events = (short)(POLLIN | (s->off < s->len ? POLLOUT : 0))};
			ps->pfd_sub[n++] = s;
		}
		if (again)
			continue; /* a write failed or QUIT is done: reap before sleeping */
		pthread_mutex_unlock(&ps->mu);
		/* A second at most: registrations that never attach expire on time. */
		int rc = poll(ps->pfd, n, 1000);
		pthread_mutex_lock(&ps->mu);
		if (rc <= 0)
			continue;
		if (ps->pfd[0].revents & POLLIN) {
			uint64_t v;
			if (read(ps->wake, &v, sizeof(v)) < 0 && errno != EAGAIN)
				tg_log("pubsub: eventfd read: %s", strerror(errno));
		}
		for (unsigned i = 1; i < n; i++) {
			struct sub *s = ps->pfd_sub[i];
			short ev = ps->pfd[i].revents;
			if (s->drop || ev == 0)
				continue;
			if (ev & (POLLIN | POLLHUP | POLLERR))
				sub_read(ps, s);
			if (!s->drop && (ev & POLLOUT))
				sub_write(s);
		}
	}
	pthread_mutex_unlock(&ps->mu);
	return NULL;
}

int
tg_pubsub_start(struct tg_pubsub **out, const struct tg_pubsub_cfg *cfg, char *err, size_t errlen)
{
	struct tg_pubsub *ps = calloc(1, sizeof(*ps));
	int rc;

	*out = NULL;
	if (ps == NULL) {
		snprintf(err, errlen, "pubsub: out of memory");
		return -ENOMEM;
	}
	ps->magic = PUBSUB_MAGIC;
	ps->cfg = *cfg;
	ps->wake = -1;
	pthread_mutex_init(&ps->mu, NULL);
	ps->pfd = calloc(cfg->subscribers_max + 1, sizeof(*ps->pfd));
	ps->pfd_sub = calloc(cfg->subscribers_max + 1, sizeof(*ps->pfd_sub));
	ps->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ps->pfd == NULL || ps->pfd_sub == NULL || ps->wake < 0) {
		rc = ps->wake < 0 ? -errno : -ENOMEM;
		snprintf(err, errlen, "pubsub: cannot set up: %s", strerror(-rc));
		tg_pubsub_stop(ps);
		return rc;
	}
	rc = -pthread_create(&ps->thread, NULL, run, ps);
	if (rc != 0) {
		snprintf(err, errlen, "pubsub: cannot start its thread: %s", strerror(-rc));
		tg_pubsub_stop(ps);
		return rc;
	}
	ps->started = true;
	*out = ps;
	return 0;
}

void
tg_pubsub_stop(struct tg_pubsub *ps)
{
	if (ps == NULL)
		return;
	TG_CHECK_OBJ(ps, PUBSUB_MAGIC);
	if (ps->started) {
		pthread_mutex_lock(&ps->mu);
		ps->stop = true;
		pthread_mutex_unlock(&ps->mu);
		wake(ps);
		pthread_join(ps->thread, NULL);
	}
	while (ps->subs != NULL) {
		struct sub *s = ps->subs;
		ps->subs = s->next;
		sub_free(s);
	}
	if (ps->wake >= 0)
		close(ps->wake);
	free(ps->pfd);
	free(ps->pfd_sub);
	pthread_mutex_destroy(&ps->mu);
	ps->magic = 0;
	free(ps);
}
