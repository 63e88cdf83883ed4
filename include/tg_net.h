/*
 * tg_net.h - the io_uring server: worker threads, connections, batching.
 *
 * Each worker owns one io_uring, one SO_REUSEPORT listener with a multishot
 * accept, a provided-buffer ring fed to multishot recvs, and a fixed pool of
 * connection slots allocated at start.  Everything parsed from one read is
 * executed and answered with one send.  The server knows nothing of
 * accounts: commands go to the handler below.
 */
#ifndef TG_NET_H
#define TG_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_limits.h"
#include "tg_resp.h"

/* exec() return values */
#define TG_NET_CONTINUE 0
#define TG_NET_CLOSE    1 /* send what was written, then close (QUIT, protocol error) */
/*
 * Send what was written, then hand the socket to the handler's detached()
 * (replication, subscriptions: a connection that leaves request/reply).
 * Without a detached() it is TG_NET_CLOSE.
 */
#define TG_NET_DETACH 2

/*
 * The server's counters, in this order (tbl/tg_net_counters.h): where they
 * live is the handler's choice (tollgated puts them in each worker's block of
 * the segment).
 */
enum tg_net_counter {
#define TG_NET_COUNTER(e, n, s, d) TG_NETC_##e,
#include "tbl/tg_net_counters.h"
#undef TG_NET_COUNTER
	TG_NETC__COUNT
};

/* A connection's source address: IPv6, or IPv4 as ::ffff:a.b.c.d. */
struct tg_net_peer {
	uint8_t addr[16];
};

/* The address as text ("127.0.0.1", "2001:db8::1") into buf (48 bytes are enough). */
void tg_net_peer_str(const struct tg_net_peer *p, char *buf, size_t len);

struct tg_net_handler {
	void *arg;
	/*
	 * Where worker `worker` keeps its TG_NETC__COUNT counters (written by
	 * that worker alone, read by anyone); NULL: the server's own memory.
	 */
	uint64_t *(*counters)(void *arg, unsigned worker);
	/* Bytes of per-connection state handed to the callbacks (allocated at start). */
	size_t session_size;
	void (*session_open)(void *arg, unsigned worker, void *session);
	void (*session_close)(void *arg, unsigned worker, void *session);
	/*
	 * Called for every open connection about every tick_ms: true closes it
	 * (an unauthenticated connection past its deadline).  NULL: never.
	 */
	bool (*session_expired)(void *arg, unsigned worker, void *session);
	/* The largest request this session may send now (smaller before AUTH). */
	size_t (*max_request)(void *arg, void *session);
	/* The most arguments (name included) one request may have now; NULL: TG_ARGS_MAX. */
	uint32_t (*max_args)(void *arg, void *session);
	/*
	 * Called right after session_open with the peer's address (a
	 * getpeername per accepted connection, only when this is set or
	 * max_per_addr is); not called when the address cannot be had.
	 */
	void (*session_peer)(void *arg, void *session, const struct tg_net_peer *peer);
	/* Execute one request, appending its reply to out. */
	int (*exec)(void *arg, unsigned worker, void *session, const struct tg_req *req,
	            struct tg_out *out);
	/*
	 * Optional: the next n (<= TG_NET_AHEAD_MAX) requests of a connection, parsed, before any
	 * of them is executed (inside the batch: after batch_begin).  A hint to start loading what
	 * they will touch; it must change nothing, since exec then runs each of them in order
	 * exactly as without it.
	 */
	void (*prefetch)(void *arg, unsigned worker, void *session, const struct tg_req *reqs,
	                 unsigned n);
	/* Around each batch of requests from one read (epoch sections, clocks). */
	void (*batch_begin)(void *arg, unsigned worker);
	void (*batch_end)(void *arg, unsigned worker);
	/*
	 * Optional, together: for a handler whose batch_end may return before
	 * what the batch changed is durable.  batch_lsn, read right after
	 * batch_end, is the position the batch's replies wait for (0: none);
	 * durable is the position reached, from any worker.  A connection's
	 * replies leave once durable passes their batch's position, in order;
	 * meanwhile the worker goes on with other connections.  Whoever moves
	 * the durable position calls tg_net_durable, which wakes the workers
	 * holding replies it releases; they also read it every millisecond.
	 */
	uint64_t (*batch_lsn)(void *arg, unsigned worker);
	uint64_t (*durable)(void *arg);
	/*
	 * A connection whose exec returned TG_NET_DETACH: its replies are sent,
	 * nothing of it is in the kernel, session_close has run (the session's
	 * memory is still readable here, and only here).  fd is the callee's
	 * to keep and close.  Bytes the peer sent after the detaching request
	 * and that the server had already read are lost: a protocol that
	 * detaches must have the peer wait for the reply.
	 */
	void (*detached)(void *arg, unsigned worker, void *session, int fd);
	/* Called on every worker about every tick_ms. */
	void (*tick)(void *arg, unsigned worker);
	/* Called once on each worker thread before it serves / after it stops. */
	void (*worker_start)(void *arg, unsigned worker);
	void (*worker_stop)(void *arg, unsigned worker);
};

struct tg_net_cfg {
	const char *addr;   /* "127.0.0.1" */
	uint16_t port;      /* 6390; 0 picks a free port (see tg_net_port) */
	unsigned workers;   /* worker threads, >= 1 */
	unsigned max_conns; /* connections per worker */
	size_t inbuf;       /* bytes kept per connection for a partial request */
	size_t outbuf;      /* bytes of replies per connection per send */
	unsigned buf_count; /* provided buffers per worker (power of 2) */
	size_t buf_size;    /* bytes per provided buffer */
	uint32_t idle_ms;   /* close connections idle (or stuck mid-request) this long; 0 = never */
	uint32_t tick_ms;
	/* Connections from one source address, all workers together; 0 = no limit. */
	unsigned max_per_addr;
	/* Close a connection whose request has not arrived whole this long after its first byte. */
	uint32_t request_ms; /* 0 = never (idle_ms still applies) */
	/* Close a connection whose replies have waited unsent, with no progress, this long. */
	uint32_t reply_ms; /* 0 = never (idle_ms still applies) */
};

struct tg_net;

/* Bind, start the workers.  Returns 0 or -errno (with a sentence in err). */
/*
 * The durable position (h->durable) reached lsn: wake the workers holding
 * replies that wait for no more.  Any thread; an eventfd write per such
 * worker.  Call it after h->durable returns lsn.
 */
void tg_net_durable(struct tg_net *n, uint64_t lsn);
int tg_net_start(struct tg_net **out, const struct tg_net_cfg *cfg, const struct tg_net_handler *h,
                 char *err, size_t errlen);
/* The port actually bound. */
uint16_t tg_net_port(const struct tg_net *n);
/* Connections open now, all workers. */
uint64_t tg_net_connections(const struct tg_net *n);
/* What the server counted, all workers summed. */
struct tg_net_stats {
	uint64_t open;             /* connections open now */
	uint64_t accepted;         /* connections accepted since start */
	uint64_t rejected;         /* closed at once: max-clients reached */
	uint64_t idle_closed;      /* closed by the idle timeout */
	uint64_t protocol_errors;  /* closed after a frame that could not parse */
	uint64_t too_large;        /* replies replaced by "-ERR reply too large" */
	uint64_t addr_rejected;    /* closed at once: max_per_addr reached for that address */
	uint64_t request_timeouts; /* closed: a request took longer than request_ms to arrive */
	uint64_t stalled; /* closed: replies unread for reply_ms, or under buffer pressure */
};
void tg_net_stats(const struct tg_net *n, struct tg_net_stats *st);

/* Ask every worker to stop, wait for them, free everything. */
void tg_net_stop(struct tg_net *n);

#endif
