/*
 * net.c - the io_uring TCP server: workers, connections, batching.
 *
 * This file owns sockets, rings, buffers and connection slots, and nothing
 * about accounts: every parsed request goes to the handler.  On the hot path
 * it must never allocate, lock or make a system call per request; the only
 * system call of a busy worker is one io_uring_enter per turn of its loop.
 * Everything is sized from the configuration and allocated at start.
 *
 * Memory.  Per connection slot (cfg->max_conns of them per worker):
 *   session (h->session_size, rounded up to 64) + inbuf (cfg->inbuf)
 *   + outbuf (cfg->outbuf), each rounded up to 64, + struct conn (at most
 *   192 bytes) + 8 bytes in the send and re-arm lists.
 * Per worker: the provided-buffer ring, cfg->buf_count * cfg->buf_size bytes
 * plus 16 bytes of ring entry and 12 of hold record per buffer, and a 4096
 * entry io_uring.  All of it is mapped once at start (anonymous mappings,
 * so a slot's pages are only touched when a connection first uses them).
 *
 * Batching.  Each turn of a worker's loop takes every completion the ring
 * holds.  Requests executed during one turn, over all its connections, run
 * between one h->batch_begin and one h->batch_end (only when the turn
 * executes something); the replies are sent after batch_end, so a handler
 * that makes a batch durable there never has a reply leave first.  A
 * handler may instead return from batch_end at once and name the position
 * the batch's replies wait for (h->batch_lsn): each connection then holds
 * them, in order behind what it already holds, until h->durable passes it,
 * and the worker serves its other connections meanwhile.  A
 * connection gets at most one send per turn holding every reply it produced,
 * and has at most one send in flight: while it is, bytes that arrive are kept
 * in their provided buffers (in order, parsed when the send completes), so
 * replies keep their order and the output buffer is never written under the
 * kernel.  Parsing stops when less than HEADROOM bytes of output are left;
 * what is unparsed waits in its buffer for the send to complete.  A reply
 * that does not fit in what is left is replaced by "-ERR reply too large":
 * replies up to HEADROOM bytes always fit.  A connection holding HOLD_PAUSE
 * buffers stops receiving (its multishot recv is cancelled) until it has
 * caught up, so one slow reader cannot drain the worker's buffer ring.
 * The bytes of a request split across reads are carried in inbuf.
 *
 * Limits against hostile peers (docs/SECURITY.md).  With max_per_addr set,
 * connections are counted per source address in one table shared by the
 * workers (a mutex taken once per accept and once per close, never per
 * request; the address costs a getpeername per accept).  A connection over
 * max_conns or max_per_addr gets one error line and is closed at once.  Every
 * tick: a request whose first byte came request_ms ago and is still not
 * whole closes its connection (a client trickling bytes cannot hold a slot),
 * and so does output that has waited reply_ms with no progress (a client that
 * reads nothing).  Held buffers are bounded per connection (HOLD_PAUSE) but
 * not per worker, so when half a worker's buffer ring is held, connections
 * that hold buffers behind a send stuck for PRESSURE_MS are closed early
 * rather than let non-readers starve everyone of receive buffers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tg_assert.h"
#include "tg_atomic.h"
#include "tg_clock.h"
#include "tg_hash.h"
#include "tg_net.h"

#define NET_MAGIC    0x4e455431u /* "NET1" */
#define WORKER_MAGIC 0x574b5231u /* "WKR1" */
#define CONN_MAGIC   0x434f4e31u /* "CON1" */

/* Submission queue entries per worker ring; the completion queue is 4 times larger. */
#define RING_ENTRIES 4096
/* Output bytes that must be free before another request is parsed. */
#define HEADROOM 8192
/* Buffers a connection may hold unparsed before its recv is paused. */
#define HOLD_PAUSE 4
/* With half the buffer ring held, a send stuck this long closes a holder (if reply_ms is set). */
#define PRESSURE_MS 1000
/* Bounds checked against the configuration. */
#define WORKERS_MAX   1024
#define CONNS_MAX     (1u << 24)
#define BUF_COUNT_MAX 32768 /* the kernel's limit for a buffer ring */
#define CONN_BUF_MIN  64
#define CONN_BUF_MAX  (1u << 30)
#define BUF_SIZE_MAX  (1u << 20)
/* How long a stopping worker waits for the kernel to give back its requests. */
#define DRAIN_MS        2000
#define TICK_DEFAULT_MS 100
/* While replies wait for the handler's durable position, it is read this often at least. */
#define HELD_POLL_NS 1000000

#define NONE16 0xffffu
#define NONE32 0xffffffffu

/*
 * user_data: kind in bits 56..63, slot generation in bits 32..55, slot index
 * in bits 0..31.  Kind 0 is never used, so 0 (and liburing's own ~0) are
 * recognised as not ours.
 */
enum op {
	OP_ACCEPT = 1, /* multishot accept on the listener */
	OP_WAKE,       /* poll on the stop eventfd */
	OP_RECV,       /* a connection's multishot recv */
	OP_SEND,       /* a connection's send */
	OP_CANCEL,     /* cancelling a connection's requests */
	OP_CLOSE,      /* closing a connection's fd; frees the slot */
	OP_REJECT,     /* closing a connection refused for lack of slots */
	OP_STOP,       /* cancelling everything at stop */
};

#define GEN_MASK 0xffffffu

enum conn_state {
	CONN_FREE,
	CONN_OPEN,    /* requests are served */
	CONN_CLOSING, /* session closed; waiting for the kernel to give back its requests */
};

struct conn {
	uint32_t magic;
	uint32_t gen; /* bumped when the slot is freed */
	uint32_t idx;
	int fd;
	uint8_t state;
	bool recv_armed;    /* a multishot recv is in the kernel */
	bool send_inflight; /* a send is in the kernel */
	bool paused;        /* holding HOLD_PAUSE buffers: recv cancelled until drained */
	bool eof;           /* the peer shut down its side */
	bool close_after;   /* QUIT or a protocol error: close once the replies are sent */
	bool detach;        /* with close_after: hand the fd to the handler instead of closing */
	bool on_dirty;      /* in the worker's send list */
	bool on_rearm;      /* in the worker's re-arm list */
	uint16_t ops;       /* requests in the kernel (recv, send, cancel, close) */
	uint16_t hold_head, hold_tail, hold_n; /* unparsed provided buffers, FIFO */
	uint32_t in_len;                       /* carried bytes of a partial request */
	uint32_t out_sent;                     /* bytes of out already sent */
	uint32_t next_free;
	/*
	 * Replies held until the handler's durable position passes theirs
	 * (h->batch_lsn): with pend_lsn set, out[held_from..pend_end) waits for
	 * pend_lsn and out[pend_end..out.len) for next_lsn (or, when that is 0,
	 * for pend_lsn too).  Two stages, so a connection fed without pause
	 * still sees its first stage leave.
	 */
	uint32_t held_from, pend_end;
	uint64_t pend_lsn, next_lsn;
	bool on_wait;        /* in the worker's list of connections holding replies */
	uint64_t last_ms;    /* last byte received or sent */
	uint64_t partial_ms; /* when the carried partial request began */
	char *in;
	void *session;
	struct tg_out out; /* replies not yet sent: out.buf[out_sent..out.len) */
	/* Cold: touched by the tick, at accept and at close. */
	uint64_t send_ms;  /* the send in flight was submitted, or last made progress */
	bool addr_counted; /* counted in the per-address table under peer */
	struct tg_net_peer peer;
};

_Static_assert(sizeof(struct conn) <= 192, "the per-connection cost documented above");

/* One source address in the per-address table; count 0 marks a free entry. */
struct addr_ent {
	uint64_t k0, k1;
	uint32_t count;
};

/* A provided buffer kept by a connection: bytes [off, off + len) still unparsed. */
struct hold {
	uint32_t off, len;
	uint16_t next;
};

struct worker {
	uint32_t magic;
	unsigned id;
	struct tg_net *net;
	pthread_t thread;
	bool thread_started;
	int lfd; /* listener */
	int efd; /* stop eventfd */
	struct io_uring ring;
	bool ring_ok, br_ok;
	struct io_uring_buf_ring *br;
	size_t br_bytes;
	unsigned br_pending; /* buffers added to the ring since the last advance */
	char *bufs;
	size_t bufs_bytes;
	struct hold *hold;
	size_t hold_bytes;
	struct conn *conns;
	size_t conns_bytes;
	char *connmem;
	size_t connmem_bytes;
	uint32_t *dirty;   /* connections with replies to send this turn */
	uint32_t *rearm;   /* connections whose recv must be re-armed */
	uint32_t *waiting; /* connections holding replies until the handler's durable position */
	size_t lists_bytes;
	uint32_t n_dirty, n_rearm, n_waiting;
	/*
	 * The lowest position a held reply waits for (0: none), for
	 * tg_net_durable: written by this worker, read by the thread that
	 * moves the durable position.
	 */
	uint64_t wait_lsn;
	uint32_t free_head;
	uint32_t hw;       /* slots [0, hw) have been used */
	uint32_t held;     /* provided buffers held by connections */
	uint32_t inflight; /* requests of this ring in the kernel */
	bool in_batch;
	bool accept_armed, accept_retry;
	bool drained; /* every request came back: memory may be freed */
	uint64_t now_ms, next_tick_ms;
	int setup_rc;
	char setup_err[200];
	/* Written by this worker only, read by any thread: own[] unless the handler gives a place.
	 */
	uint64_t *ctr;
	uint64_t own[TG_NETC__COUNT] __attribute__((aligned(64)));
	/* Requests parsed ahead (conn_run): ahead[0..n_ahead), of ahead_len[i] bytes each. */
	struct tg_req ahead[TG_NET_AHEAD_MAX];
	uint32_t ahead_len[TG_NET_AHEAD_MAX];
};

struct tg_net {
	uint32_t magic;
	struct tg_net_cfg cfg;
	struct tg_net_handler h;
	char addr[64];
	uint16_t port;
	int stop;
	size_t sess_size;  /* session bytes per slot, rounded to 64 */
	size_t slot_bytes; /* session + inbuf + outbuf */
	size_t headroom;
	unsigned nworkers;
	struct worker *w;
	/* Connections per source address (max_per_addr), all workers: linear probing. */
	pthread_mutex_t addr_mu;
	struct addr_ent *addrs;
	size_t addrs_bytes;
	uint64_t addr_mask, addr_seed;
	/* start-up handshake */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned reported;
	bool go, abort;
};

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static void *
map(size_t bytes)
{
	void *p;

	if (bytes == 0)
		return NULL;
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
	         -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void
unmap(void *p, size_t bytes)
{
	if (p != NULL)
		munmap(p, bytes);
}

static size_t
round64(size_t n)
{
	return (n + 63) & ~(size_t)63;
}

static uint64_t
ud_make(enum op kind, uint32_t idx, uint32_t gen)
{
	return (uint64_t)kind << 56 | (uint64_t)(gen & GEN_MASK) << 32 | idx;
}

/*
 * Counters and the stop flag cross threads.  ck_pr's loads and stores are
 * volatile accesses ThreadSanitizer cannot see, so under TSan the compiler's
 * atomics stand in (as elsewhere in the engine).
 */
static uint64_t
load64(const uint64_t *p)
{
#if defined(TG_TSAN)
	return __atomic_load_n(p, __ATOMIC_RELAXED);
#else
	return ck_pr_load_64(p);
#endif
}

/* Single writer: the owning worker. */
static void
store64(uint64_t *p, uint64_t v)
{
#if defined(TG_TSAN)
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
#else
	ck_pr_store_64(p, v);
#endif
}

static bool
stop_requested(const struct tg_net *n)
{
#if defined(TG_TSAN)
	return __atomic_load_n(&n->stop, __ATOMIC_ACQUIRE) != 0;
#else
	return ck_pr_load_int(&n->stop) != 0;
#endif
}

static void
set_stop(struct tg_net *n)
{
#if defined(TG_TSAN)
	__atomic_store_n(&n->stop, 1, __ATOMIC_RELEASE);
#else
	ck_pr_fence_store();
	ck_pr_store_int(&n->stop, 1);
#endif
}

static unsigned
ud_kind(uint64_t ud)
{
	return (unsigned)(ud >> 56);
}

/* Whether ud is one of ours (liburing uses ~0 for its internal timeout). */
static bool
ud_ours(uint64_t ud)
{
	return ud_kind(ud) >= OP_ACCEPT && ud_kind(ud) <= OP_STOP;
}

static void
stat_add(struct worker *w, enum tg_net_counter k, uint64_t n)
{
	store64(&w->ctr[k], load64(&w->ctr[k]) + n);
}

/* Give provided buffer bid back to the kernel (published before the next submit). */
static void
buf_return(struct worker *w, unsigned bid)
{
	const struct tg_net_cfg *cfg = &w->net->cfg;

	io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * cfg->buf_size, (unsigned)cfg->buf_size,
	                      (unsigned short)bid, io_uring_buf_ring_mask(cfg->buf_count),
	                      (int)w->br_pending);
	w->br_pending++;
}

static void
buf_publish(struct worker *w)
{
	if (w->br_pending) {
		io_uring_buf_ring_advance(w->br, (int)w->br_pending);
		w->br_pending = 0;
	}
}

/*
 * An SQE counted in flight; the caller prepares it, then sets user_data (the
 * prep helpers may clear it).  When the queue is full the returned buffers
 * are published and the queue submitted first: rare (4096 entries), and never
 * a reply sent early, since sends are only prepared after batch_end.
 */
static struct io_uring_sqe *
sqe_get(struct worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

	if (sqe == NULL) {
		buf_publish(w);
		io_uring_submit(&w->ring);
		sqe = io_uring_get_sqe(&w->ring);
		TG_ASSERT(sqe != NULL);
	}
	w->inflight++;
	return sqe;
}

/* An SQE for connection c, counted in the connection's requests too. */
static struct io_uring_sqe *
sqe_conn(struct worker *w, struct conn *c)
{
	TG_ASSERT(c->ops < UINT16_MAX);
	c->ops++;
	return sqe_get(w);
}

/* ------------------------------------------------------------------ */
/* arming                                                              */

static void
arm_accept(struct worker *w)
{
	struct io_uring_sqe *sqe = sqe_get(w);

	io_uring_prep_multishot_accept(sqe, w->lfd, NULL, NULL, SOCK_CLOEXEC);
	sqe->user_data = ud_make(OP_ACCEPT, 0, 0);
	w->accept_armed = true;
}

static void
arm_wake(struct worker *w)
{
	struct io_uring_sqe *sqe = sqe_get(w);

	io_uring_prep_poll_add(sqe, w->efd, POLLIN);
	sqe->user_data = ud_make(OP_WAKE, 0, 0);
}

static void
arm_recv(struct worker *w, struct conn *c)
{
	struct io_uring_sqe *sqe;

	TG_ASSERT(!c->recv_armed);
	sqe = sqe_conn(w, c);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 0;
	sqe->user_data = ud_make(OP_RECV, c->idx, c->gen);
	c->recv_armed = true;
}

/* Queue c for a send at the end of this turn. */
static void
mark_dirty(struct worker *w, struct conn *c)
{
	if (!c->on_dirty) {
		c->on_dirty = true;
		w->dirty[w->n_dirty++] = c->idx;
	}
}

/* The end of what c may send now: replies held for durability stay. */
static uint32_t
sendable(const struct conn *c)
{
	return c->pend_lsn != 0 ? c->held_from : c->out.len;
}

/* Queue c for its recv to be re-armed at the end of this turn (or later). */
static void
mark_rearm(struct worker *w, struct conn *c)
{
	if (!c->on_rearm) {
		c->on_rearm = true;
		w->rearm[w->n_rearm++] = c->idx;
	}
}

/* ------------------------------------------------------------------ */
/* source addresses                                                    */

void
tg_net_peer_str(const struct tg_net_peer *p, char *buf, size_t len)
{
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	char tmp[INET6_ADDRSTRLEN];

	if (memcmp(p->addr, v4mapped, sizeof(v4mapped)) == 0)
		inet_ntop(AF_INET, p->addr + 12, tmp, sizeof(tmp));
	else
		inet_ntop(AF_INET6, p->addr, tmp, sizeof(tmp));
	snprintf(buf, len, "%s", tmp);
}

/* The peer of fd, IPv4 mapped into IPv6.  False when it cannot be had (not IP, or gone). */
static bool
peer_of(int fd, struct tg_net_peer *p)
{
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
	} a;
	socklen_t len = sizeof(a);

	memset(p, 0, sizeof(*p));
	if (getpeername(fd, &a.sa, &len) < 0)
		return false;
	if (a.sa.sa_family == AF_INET) {
		p->addr[10] = p->addr[11] = 0xff;
		memcpy(p->addr + 12, &a.in4.sin_addr, 4);
		return true;
	}
	if (a.sa.sa_family == AF_INET6) {
		memcpy(p->addr, &a.in6.sin6_addr, 16);
		return true;
	}
	return false;
}

/*
 * The table is sized at twice the connections of all workers, so it is at
 * most half full and a probe always ends; the seed is random so a peer who
 * picks its addresses (an IPv6 /64) cannot aim them all at one chain.
 */
static uint64_t
addr_home(const struct tg_net *n, uint64_t k0, uint64_t k1)
{
	uint64_t k[2] = {k0, k1};

	return tg_hash64(k, sizeof(k), n->addr_seed) & n->addr_mask;
}

/* Count one more connection from p unless it has max_per_addr already.  Any worker. */
static bool
addr_take(struct tg_net *n, const struct tg_net_peer *p)
{
	uint64_t k0, k1, i;
	bool ok = true;

	memcpy(&k0, p->addr, 8);
	memcpy(&k1, p->addr + 8, 8);
	pthread_mutex_lock(&n->addr_mu);
	for (i = addr_home(n, k0, k1);; i = (i + 1) & n->addr_mask) {
		struct addr_ent *e = &n->addrs[i];

		if (e->count == 0) {
			e->k0 = k0;
			e->k1 = k1;
			e->count = 1;
			break;
		}
		if (e->k0 == k0 && e->k1 == k1) {
			if (e->count >= n->cfg.max_per_addr)
				ok = false;
			else
				e->count++;
			break;
		}
	}
	pthread_mutex_unlock(&n->addr_mu);
	return ok;
}

/* One connection from p is gone.  An entry that reaches 0 is removed by backward shift. */
static void
addr_release(struct tg_net *n, const struct tg_net_peer *p)
{
	uint64_t k0, k1, i, j;

	memcpy(&k0, p->addr, 8);
	memcpy(&k1, p->addr + 8, 8);
	pthread_mutex_lock(&n->addr_mu);
	for (i = addr_home(n, k0, k1);; i = (i + 1) & n->addr_mask) {
		struct addr_ent *e = &n->addrs[i];

		TG_ASSERT(e->count != 0); /* it was counted, so it is there */
		if (e->k0 == k0 && e->k1 == k1)
			break;
	}
	if (--n->addrs[i].count == 0) {
		/* Pull later entries of the chain back over the hole, so lookups never stop early.
		 */
		for (j = (i + 1) & n->addr_mask; n->addrs[j].count != 0;
		     j = (j + 1) & n->addr_mask) {
			uint64_t h = addr_home(n, n->addrs[j].k0, n->addrs[j].k1);
			bool stays = i <= j ? (h > i && h <= j) : (h > i || h <= j);

			if (!stays) {
				n->addrs[i] = n->addrs[j];
				n->addrs[j].count = 0;
				i = j;
			}
		}
	}
	pthread_mutex_unlock(&n->addr_mu);
}

/* ------------------------------------------------------------------ */
/* connections                                                         */

static void
hold_release_all(struct worker *w, struct conn *c)
{
	while (c->hold_n) {
		uint16_t bid = c->hold_head;

		c->hold_head = w->hold[bid].next;
		c->hold_n--;
		w->held--;
		buf_return(w, bid);
	}
	c->hold_head = c->hold_tail = NONE16;
}

/* Keep bytes [off, off + len) of buffer bid, after whatever c already holds. */
static void
hold_add(struct worker *w, struct conn *c, uint16_t bid, uint32_t off, uint32_t len)
{
	w->hold[bid].off = off;
	w->hold[bid].len = len;
	w->hold[bid].next = NONE16;
	if (c->hold_n)
		w->hold[c->hold_tail].next = bid;
	else
		c->hold_head = bid;
	c->hold_tail = bid;
	c->hold_n++;
	w->held++;
	if (c->hold_n >= HOLD_PAUSE && !c->paused) {
		c->paused = true;
		if (c->recv_armed) {
			struct io_uring_sqe *sqe = sqe_conn(w, c);

			io_uring_prep_cancel64(sqe, ud_make(OP_RECV, c->idx, c->gen), 0);
			sqe->user_data = ud_make(OP_CANCEL, c->idx, c->gen);
		}
	}
}

static void slot_free(struct worker *w, struct conn *c);

/* Once nothing of c is in the kernel any more, close its fd (or hand it over: detach). */
static void
conn_finish(struct worker *w, struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->state != CONN_CLOSING || c->ops != 0 || c->fd < 0)
		return;
	if (c->detach) {
		/* Nothing of c is in the kernel: the fd is the handler's now, the slot free. */
		const struct tg_net_handler *h = &w->net->h;
		int fd = c->fd;
		c->fd = -1;
		stat_add(w, TG_NETC_DETACHED, 1);
		h->detached(h->arg, w->id, c->session, fd);
		slot_free(w, c);
		return;
	}
	sqe = sqe_conn(w, c);
	io_uring_prep_close(sqe, c->fd);
	sqe->user_data = ud_make(OP_CLOSE, c->idx, c->gen);
	c->fd = -1; /* the number belongs to the close request now */
}

/*
 * Stop serving c: close the session, return its buffers, cancel what it has
 * in the kernel.  The slot is freed when the close completes.  Idempotent.
 */
static void
conn_close(struct worker *w, struct conn *c)
{
	const struct tg_net_handler *h = &w->net->h;

	if (c->state != CONN_OPEN)
		return;
	c->state = CONN_CLOSING;
	if (h->session_close)
		h->session_close(h->arg, w->id, c->session);
	stat_add(w, TG_NETC_CLOSED, 1);
	if (c->addr_counted) {
		addr_release(w->net, &c->peer);
		c->addr_counted = false;
	}
	hold_release_all(w, c);
	c->in_len = 0;
	if (c->recv_armed || c->send_inflight) {
		struct io_uring_sqe *sqe = sqe_conn(w, c);

		io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
		sqe->user_data = ud_make(OP_CANCEL, c->idx, c->gen);
	}
	conn_finish(w, c);
}

static void
slot_free(struct worker *w, struct conn *c)
{
	TG_ASSERT(c->state == CONN_CLOSING && c->ops == 0 && c->hold_n == 0);
	c->state = CONN_FREE;
	c->gen = (c->gen + 1) & GEN_MASK;
	c->next_free = w->free_head;
	w->free_head = c->idx;
}

/*
 * Refuse a connection without a slot: one error line (best effort: the socket
 * is new, so its send buffer has room; MSG_DONTWAIT never lets it wait), then
 * the close, hard-linked so it runs whatever the send did.  The message is
 * static: it outlives the request.
 */
static void
conn_reject(struct worker *w, int fd, const char *msg, enum tg_net_counter k)
{
	struct io_uring_sqe *sqe;

	/* Both entries in one submission, or the link would be cut. */
	if (io_uring_sq_space_left(&w->ring) < 2) {
		buf_publish(w);
		io_uring_submit(&w->ring);
	}
	sqe = sqe_get(w);
	io_uring_prep_send(sqe, fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
	sqe->flags |= IOSQE_IO_HARDLINK;
	sqe->user_data = ud_make(OP_REJECT, 0, 0);
	sqe = sqe_get(w);
	io_uring_prep_close(sqe, fd);
	sqe->user_data = ud_make(OP_REJECT, 0, 0);
	stat_add(w, k, 1);
}

static void
conn_open(struct worker *w, int fd)
{
	struct tg_net *n = w->net;
	const struct tg_net_handler *h = &n->h;
	struct tg_net_peer peer;
	bool have_peer = false;
	struct conn *c;

	if (w->free_head == NONE32) {
		conn_reject(w, fd, "-ERR max number of clients reached\r\n", TG_NETC_REJECTED);
		return;
	}
	if (n->cfg.max_per_addr || h->session_peer)
		have_peer = peer_of(fd, &peer);
	if (n->cfg.max_per_addr && have_peer && !addr_take(n, &peer)) {
		conn_reject(w, fd, "-ERR too many connections from this address\r\n",
		            TG_NETC_ADDR_REJECTED);
		return;
	}
	c = &w->conns[w->free_head];
	TG_CHECK_OBJ(c, CONN_MAGIC);
	TG_ASSERT(c->state == CONN_FREE && c->ops == 0);
	w->free_head = c->next_free;
	if (c->idx >= w->hw)
		w->hw = c->idx + 1;
	c->fd = fd;
	c->state = CONN_OPEN;
	c->recv_armed = c->send_inflight = c->paused = false;
	c->eof = c->close_after = c->detach = false;
	c->hold_head = c->hold_tail = NONE16;
	c->hold_n = 0;
	c->in_len = 0;
	c->out_sent = 0;
	c->out.len = 0;
	c->out.overflow = false;
	c->held_from = c->pend_end = 0;
	c->pend_lsn = c->next_lsn = 0;
	/* on_wait stays: a closed connection's entry leaves the list at the next release. */
	c->last_ms = w->now_ms;
	c->partial_ms = 0;
	c->send_ms = 0;
	c->addr_counted = n->cfg.max_per_addr && have_peer;
	if (have_peer)
		c->peer = peer;
	else
		memset(&c->peer, 0, sizeof(c->peer));
	memset(c->session, 0, h->session_size);
	stat_add(w, TG_NETC_ACCEPTED, 1);
	if (h->session_open)
		h->session_open(h->arg, w->id, c->session);
	if (have_peer && h->session_peer)
		h->session_peer(h->arg, c->session, &peer);
	arm_recv(w, c);
}

static void
batch_enter(struct worker *w)
{
	const struct tg_net_handler *h = &w->net->h;

	if (!w->in_batch) {
		w->in_batch = true;
		if (h->batch_begin)
			h->batch_begin(h->arg, w->id);
	}
}

/* Append "-<err>\r\n" (err has no "-" nor CRLF) if it fits, and close after the send. */
static void
conn_error(struct worker *w, struct conn *c, const char *err)
{
	size_t n = strlen(err);

	if (c->out.cap - c->out.len >= n + 3) {
		tg_out_raw(&c->out, "-", 1);
		tg_out_raw(&c->out, err, n);
		tg_out_raw(&c->out, "\r\n", 2);
	}
	c->close_after = true;
	stat_add(w, TG_NETC_PROTOCOL_ERRORS, 1);
}

static size_t
max_request(const struct worker *w, struct conn *c)
{
	const struct tg_net_handler *h = &w->net->h;

	return h->max_request ? h->max_request(h->arg, c->session) : w->net->cfg.inbuf;
}

static uint32_t
max_args(const struct worker *w, struct conn *c)
{
	const struct tg_net_handler *h = &w->net->h;

	return h->max_args ? h->max_args(h->arg, c->session) : TG_ARGS_MAX;
}

enum run {
	RUN_MORE,     /* everything parsed but an incomplete tail */
	RUN_CROSSED,  /* parsing passed stop_after */
	RUN_HEADROOM, /* the output buffer is nearly full: send first */
	RUN_CLOSE,    /* QUIT or protocol error: nothing more is parsed */
};

/*
 * Parse, without executing, the whole requests that follow in buf[0..len)
 * (at most TG_NET_AHEAD_MAX, stopping at anything but a whole request) into
 * w->ahead under the limits max_req and max_args, and hand them to
 * h->prefetch.  Parsing has no effect, so the requests then run exactly as
 * if parsed one by one; they are only looked at early.  Returns how many.
 */
static unsigned
look_ahead(struct worker *w, struct conn *c, const char *buf, size_t len, size_t max_req,
           uint32_t max_args)
{
	const struct tg_net_handler *h = &w->net->h;
	size_t pos = 0;
	unsigned k = 0;

	while (k < TG_NET_AHEAD_MAX && pos < len) {
		const char *err;
		size_t n;

		if (tg_resp_parse_args(buf + pos, len - pos, max_req, max_args, &w->ahead[k], &n,
		                       &err) != TG_PARSE_OK)
			break;
		w->ahead_len[k++] = (uint32_t)n;
		pos += n;
	}
	if (k > 0) {
		batch_enter(w);
		h->prefetch(h->arg, w->id, c->session, w->ahead, k);
	}
	return k;
}

/*
 * Parse and execute the requests in buf[0..len), appending replies to c->out.
 * *used: bytes consumed (requests and empty lines; all of len on RUN_CLOSE).
 * Stops with RUN_CROSSED as soon as the consumed bytes reach stop_after.
 *
 * With h->prefetch, the requests are taken a batch at a time: look_ahead
 * parses up to TG_NET_AHEAD_MAX of them and lets the handler start loading what
 * they will touch; they are then executed one by one, in order, from those
 * parses, as long as the session's limits (max_request, max_args) are those
 * they were parsed under: a request that changes them (AUTH) sends the
 * rest back to the parser.
 */
static enum run
conn_run(struct worker *w, struct conn *c, const char *buf, size_t len, size_t stop_after,
         size_t *used)
{
	const struct tg_net_handler *h = &w->net->h;
	size_t pos = 0;
	unsigned next = 0, ahead = 0; /* w->ahead[next..ahead) start at pos */
	size_t ahead_req = 0;
	uint32_t ahead_args = 0;

	for (;;) {
		struct tg_req one, *req = &one;
		const char *err;
		size_t n;
		enum tg_parse r;

		if (pos == len) {
			*used = pos;
			return RUN_MORE;
		}
		if (c->out.cap - c->out.len < w->net->headroom) {
			*used = pos;
			return RUN_HEADROOM;
		}
		size_t mreq = max_request(w, c);
		uint32_t margs = max_args(w, c);
		if (next < ahead && (mreq != ahead_req || margs != ahead_args))
			next = ahead = 0; /* parsed under other limits: parse again */
		if (next == ahead && h->prefetch != NULL) {
			next = 0;
			ahead = look_ahead(w, c, buf + pos, len - pos, mreq, margs);
			ahead_req = mreq;
			ahead_args = margs;
		}
		if (next < ahead) {
			req = &w->ahead[next];
			n = w->ahead_len[next++];
			r = TG_PARSE_OK;
		} else {
			r = tg_resp_parse_args(buf + pos, len - pos, mreq, margs, req, &n, &err);
		}
		switch (r) {
		case TG_PARSE_MORE:
			*used = pos;
			return RUN_MORE;
		case TG_PARSE_ERROR:
			conn_error(w, c, err);
			*used = len;
			return RUN_CLOSE;
		case TG_PARSE_EMPTY:
			TG_ASSERT(n > 0 && n <= len - pos);
			pos += n;
			break;
		case TG_PARSE_OK: {
			size_t before = c->out.len;
			int rc;

			TG_ASSERT(n > 0 && n <= len - pos);
			pos += n;
			batch_enter(w);
			rc = h->exec(h->arg, w->id, c->session, req, &c->out);
			if (TG_UNLIKELY(c->out.overflow)) {
				static const char too_large[] = "-ERR reply too large\r\n";

				c->out.len = before;
				c->out.overflow = false;
				tg_out_raw(&c->out, too_large, sizeof(too_large) - 1);
				stat_add(w, TG_NETC_TOO_LARGE, 1);
			}
			if (rc == TG_NET_CLOSE || rc == TG_NET_DETACH) {
				/* Whatever the peer sent after a detaching command is dropped. */
				c->close_after = true;
				c->detach = rc == TG_NET_DETACH && h->detached != NULL;
				*used = len;
				return RUN_CLOSE;
			}
			break;
		}
		}
		if (pos >= stop_after) {
			*used = pos;
			return RUN_CROSSED;
		}
	}
}

/* A request longer than inbuf can hold. */
static void
conn_too_large(struct worker *w, struct conn *c)
{
	c->in_len = 0;
	conn_error(w, c, "ERR Protocol error: request too large");
}

/*
 * Feed p[0..n), the bytes that follow c's carried partial request, to the
 * parser.  Returns the bytes consumed (parsed, or copied into inbuf); fewer
 * than n only when parsing stopped for headroom, and the caller keeps the
 * rest.  On QUIT or a protocol error everything counts as consumed and
 * c->close_after is set.
 *
 * The carried bytes are an incomplete request (nothing else is ever left in
 * inbuf), so the first request parsed ends in p: once it does, parsing moves
 * to p itself and inbuf is empty again.  Requires c open and no send in flight.
 */
static size_t
conn_feed(struct worker *w, struct conn *c, const char *p, size_t n)
{
	const size_t cap = w->net->cfg.inbuf;
	size_t off = 0, used;
	enum run r;
	/*
	 * The carried request is refused by the parser once it reaches
	 * max_request bytes, so no more than that is ever copied to complete it:
	 * a connection limited to a small request (before AUTH) never touches
	 * more of inbuf than that.
	 */
	size_t lim = max_request(w, c) + 1 < cap ? max_request(w, c) + 1 : cap;

	if (c->out.cap - c->out.len < w->net->headroom)
		return 0;
	while (c->in_len > 0) {
		size_t old = c->in_len;
		size_t room = lim > old ? lim - old : 0;
		size_t k = n - off < room ? n - off : room;

		memcpy(c->in + old, p + off, k);
		c->in_len += (uint32_t)k;
		r = conn_run(w, c, c->in, c->in_len, old, &used);
		if (r == RUN_CLOSE) {
			c->in_len = 0;
			return n;
		}
		if (used >= old) {
			/* in[old + j] is p[off + j]: continue in p after the request. */
			off += used - old;
			c->in_len = 0;
			break;
		}
		TG_ASSERT(r == RUN_MORE);
		if (used > 0) {
			memmove(c->in, c->in + used, c->in_len - used);
			c->in_len -= (uint32_t)used;
		}
		off += k;
		if (off == n)
			return n;
		if (used == 0 && c->in_len >= lim) {
			conn_too_large(w, c);
			return n;
		}
	}
	if (off == n)
		return n;
	r = conn_run(w, c, p + off, n - off, SIZE_MAX, &used);
	off += used;
	if (r == RUN_HEADROOM)
		return off;
	if (r == RUN_CLOSE)
		return n;
	TG_ASSERT(r == RUN_MORE);
	if (n - off > cap) {
		conn_too_large(w, c);
		return n;
	}
	if (n > off) {
		memcpy(c->in, p + off, n - off);
		c->in_len = (uint32_t)(n - off);
		c->partial_ms = w->now_ms;
	}
	return n;
}

/*
 * After output was sent (or something changed): decide what c needs next.
 * Requires c open.
 */
static void
conn_settle(struct worker *w, struct conn *c)
{
	if (c->state != CONN_OPEN || c->send_inflight)
		return;
	/*
	 * Every connection with output to send is on the dirty list, held or
	 * not: the end of the batch must see what it added behind held replies.
	 */
	if (c->out.len > c->out_sent) {
		mark_dirty(w, c);
		return;
	}
	if (c->hold_n == 0 && (c->eof || c->close_after))
		conn_close(w, c);
}

/* Parse what c holds, in order, until done or the output is nearly full. */
static void
conn_drain(struct worker *w, struct conn *c)
{
	const size_t bsize = w->net->cfg.buf_size;

	while (c->hold_n && c->state == CONN_OPEN && !c->close_after) {
		uint16_t bid = c->hold_head;
		struct hold *hd = &w->hold[bid];
		size_t used = conn_feed(w, c, w->bufs + bid * bsize + hd->off, hd->len);

		if (used < hd->len) {
			hd->off += (uint32_t)used;
			hd->len -= (uint32_t)used;
			return;
		}
		c->hold_head = hd->next;
		c->hold_n--;
		w->held--;
		buf_return(w, bid);
	}
	if (c->hold_n == 0)
		c->hold_head = c->hold_tail = NONE16;
	if (c->close_after)
		hold_release_all(w, c);
	if (c->hold_n == 0 && c->paused) {
		c->paused = false;
		if (!c->recv_armed && !c->eof && !c->close_after && c->state == CONN_OPEN)
			mark_rearm(w, c);
	}
}

/* ------------------------------------------------------------------ */
/* completions                                                         */

static void
on_recv(struct worker *w, struct conn *c, const struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (!more)
		c->recv_armed = false;
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);

		TG_ASSERT(bid < w->net->cfg.buf_count);
		if (res <= 0 || c->state != CONN_OPEN || c->close_after) {
			buf_return(w, bid);
		} else {
			const char *p = w->bufs + (size_t)bid * w->net->cfg.buf_size;
			size_t used = 0;

			c->last_ms = w->now_ms;
			stat_add(w, TG_NETC_BYTES_IN, (uint64_t)res);
			if (!c->send_inflight && c->hold_n == 0)
				used = conn_feed(w, c, p, (size_t)res);
			if (used < (size_t)res && c->state == CONN_OPEN && !c->close_after)
				hold_add(w, c, bid, (uint32_t)used, (uint32_t)((size_t)res - used));
			else
				buf_return(w, bid);
		}
	}
	if (c->state != CONN_OPEN)
		return;
	if (res == 0) {
		c->eof = true;
	} else if (res < 0 && res != -ENOBUFS && res != -ECANCELED) {
		conn_close(w, c); /* ECONNRESET and friends */
		return;
	}
	if (!more && !c->eof && !c->close_after && !c->paused)
		mark_rearm(w, c);
	conn_settle(w, c);
}

static void
on_send(struct worker *w, struct conn *c, const struct io_uring_cqe *cqe)
{
	c->send_inflight = false;
	if (c->state != CONN_OPEN)
		return;
	if (cqe->res < 0) {
		conn_close(w, c);
		return;
	}
	c->last_ms = w->now_ms;
	c->send_ms = w->now_ms;
	stat_add(w, TG_NETC_BYTES_OUT, (uint64_t)cqe->res);
	c->out_sent += (uint32_t)cqe->res;
	TG_ASSERT(c->out_sent <= c->out.len);
	if (c->out_sent == c->out.len) {
		TG_ASSERT(c->pend_lsn == 0);
		c->out.len = 0;
		c->out_sent = 0;
		c->held_from = c->pend_end = 0;
		if (!c->close_after)
			conn_drain(w, c);
	}
	conn_settle(w, c);
}

static void
on_accept(struct worker *w, const struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		w->accept_armed = false;
		/* After an error (EMFILE...) retry on the next tick, not in a loop. */
		if (cqe->res >= 0 || cqe->res == -ECANCELED)
			arm_accept(w);
		else
			w->accept_retry = true;
	}
	if (cqe->res >= 0)
		conn_open(w, cqe->res);
}

static void
on_cqe(struct worker *w, const struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	uint32_t idx = (uint32_t)ud;
	uint32_t gen = (uint32_t)(ud >> 32) & GEN_MASK;
	bool final = !(cqe->flags & IORING_CQE_F_MORE);
	enum op kind;
	struct conn *c;

	if (!ud_ours(ud))
		return;
	kind = (enum op)ud_kind(ud);
	if (final) {
		TG_ASSERT(w->inflight > 0);
		w->inflight--;
	}
	switch (kind) {
	case OP_ACCEPT:
		on_accept(w, cqe);
		return;
	case OP_WAKE:
		if (!stop_requested(w->net)) {
			uint64_t v;

			/* Not a stop: empty the counter so the poll does not fire again. */
			if (read(w->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				return;
			arm_wake(w);
		}
		return;
	case OP_REJECT:
	case OP_STOP:
		return;
	case OP_RECV:
	case OP_SEND:
	case OP_CANCEL:
	case OP_CLOSE:
		break;
	}
	TG_ASSERT(idx < w->net->cfg.max_conns);
	c = &w->conns[idx];
	TG_CHECK_OBJ(c, CONN_MAGIC);
	if (TG_UNLIKELY(gen != c->gen || c->state == CONN_FREE)) {
		/* Cannot happen while ops are counted; never touch the new owner. */
		if (cqe->flags & IORING_CQE_F_BUFFER)
			buf_return(w, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		return;
	}
	if (final) {
		TG_ASSERT(c->ops > 0);
		c->ops--;
	}
	switch (kind) {
	case OP_RECV:
		on_recv(w, c, cqe);
		break;
	case OP_SEND:
		on_send(w, c, cqe);
		break;
	case OP_CLOSE:
		slot_free(w, c);
		return;
	default:
		break;
	}
	if (c->state == CONN_CLOSING)
		conn_finish(w, c);
}

/*
 * The batch that just ended made replies that may leave only once the
 * handler's durable position passes lsn (0: none of its own).  Each
 * connection with output this turn holds it behind what it already holds,
 * so its replies keep their order.
 */
static void
hold_batch(struct worker *w, uint64_t lsn)
{
	const struct tg_net_handler *h = &w->net->h;
	uint64_t durable = lsn != 0 ? h->durable(h->arg) : 0;

	for (uint32_t i = 0; i < w->n_dirty; i++) {
		struct conn *c = &w->conns[w->dirty[i]];

		if (c->state != CONN_OPEN || c->out.len == c->out_sent)
			continue;
		if (c->pend_lsn == 0) {
			if (lsn <= durable)
				continue; /* nothing held, nothing to hold: it leaves now */
			c->held_from = c->out_sent;
			c->pend_end = c->out.len;
			c->pend_lsn = lsn;
		} else if (c->out.len > c->pend_end) {
			/* Behind what is held: it waits for that too, and for its own. */
			uint64_t after = c->next_lsn != 0 ? c->next_lsn : c->pend_lsn;
			c->next_lsn = lsn > after ? lsn : after;
		}
		if (!c->on_wait) {
			c->on_wait = true;
			w->waiting[w->n_waiting++] = c->idx;
		}
	}
}

/*
 * Let go of the replies whose position the handler made durable: each
 * connection's first stage, then its second, which becomes the first.
 */
static void
release_held(struct worker *w)
{
	const struct tg_net_handler *h = &w->net->h;
	uint64_t durable = h->durable(h->arg);
	uint64_t lowest = 0;
	uint32_t kept = 0;

	for (uint32_t i = 0; i < w->n_waiting; i++) {
		struct conn *c = &w->conns[w->waiting[i]];

		if (c->state != CONN_OPEN) {
			c->on_wait = false;
			c->pend_lsn = c->next_lsn = 0;
			continue;
		}
		while (c->pend_lsn != 0 && c->pend_lsn <= durable) {
			c->held_from = c->pend_end;
			if (c->next_lsn != 0 && c->out.len > c->pend_end) {
				c->pend_end = c->out.len;
				c->pend_lsn = c->next_lsn;
			} else {
				c->pend_lsn = 0;
			}
			c->next_lsn = 0;
		}
		if (sendable(c) > c->out_sent)
			mark_dirty(w, c);
		if (c->pend_lsn != 0) {
			w->waiting[kept++] = c->idx;
			if (lowest == 0 || c->pend_lsn < lowest)
				lowest = c->pend_lsn;
		} else {
			c->on_wait = false;
		}
	}
	w->n_waiting = kept;
	/* Published before the durable position is read again (worker_loop): no wake is lost. */
	__atomic_store_n(&w->wait_lsn, lowest, __ATOMIC_SEQ_CST);
}

/* End of a turn: close the batch, then one send per connection with replies. */
static void
turn_end(struct worker *w)
{
	const struct tg_net_handler *h = &w->net->h;
	uint32_t i, kept = 0;

	if (w->in_batch) {
		w->in_batch = false;
		if (h->batch_end)
			h->batch_end(h->arg, w->id);
		if (h->batch_lsn != NULL)
			hold_batch(w, h->batch_lsn(h->arg, w->id));
	}
	if (w->n_waiting > 0)
		release_held(w);
	for (i = 0; i < w->n_dirty; i++) {
		struct conn *c = &w->conns[w->dirty[i]];

		c->on_dirty = false;
		if (c->state == CONN_OPEN && !c->send_inflight && sendable(c) > c->out_sent) {
			struct io_uring_sqe *sqe = sqe_conn(w, c);

			io_uring_prep_send(sqe, c->fd, c->out.buf + c->out_sent,
			                   sendable(c) - c->out_sent, MSG_NOSIGNAL);
			sqe->user_data = ud_make(OP_SEND, c->idx, c->gen);
			c->send_inflight = true;
			c->send_ms = w->now_ms;
		}
	}
	w->n_dirty = 0;
	buf_publish(w);
	/* Re-arm recvs; while every buffer is held the kernel has none to give. */
	for (i = 0; i < w->n_rearm; i++) {
		struct conn *c = &w->conns[w->rearm[i]];

		if (c->state != CONN_OPEN || c->recv_armed || c->paused || c->eof ||
		    c->close_after) {
			c->on_rearm = false;
		} else if (w->held >= w->net->cfg.buf_count) {
			w->rearm[kept++] = c->idx;
		} else {
			c->on_rearm = false;
			arm_recv(w, c);
		}
	}
	w->n_rearm = kept;
}

/* Which timeout, if any, closes c now. */
static enum tg_net_counter
conn_expired(const struct worker *w, const struct conn *c, bool pressure)
{
	const struct tg_net_cfg *cfg = &w->net->cfg;
	uint64_t now = w->now_ms;

	if (cfg->idle_ms && (now - c->last_ms >= cfg->idle_ms ||
	                     (c->in_len > 0 && now - c->partial_ms >= cfg->idle_ms)))
		return TG_NETC_IDLE_CLOSED;
	if (cfg->request_ms && c->in_len > 0 && now - c->partial_ms >= cfg->request_ms)
		return TG_NETC_REQUEST_TIMEOUT;
	if (cfg->reply_ms && c->send_inflight &&
	    (now - c->send_ms >= cfg->reply_ms ||
	     (pressure && c->hold_n > 0 && now - c->send_ms >= PRESSURE_MS)))
		return TG_NETC_STALLED;
	return TG_NETC__COUNT;
}

static void
tick(struct worker *w)
{
	const struct tg_net_handler *h = &w->net->h;
	const struct tg_net_cfg *cfg = &w->net->cfg;
	bool pressure = (uint64_t)w->held * 2 >= cfg->buf_count;

	if (h->tick)
		h->tick(h->arg, w->id);
	if (w->accept_retry && !w->accept_armed && !stop_requested(w->net)) {
		w->accept_retry = false;
		arm_accept(w);
	}
	if (cfg->idle_ms == 0 && cfg->request_ms == 0 && cfg->reply_ms == 0 &&
	    h->session_expired == NULL)
		return;
	for (uint32_t i = 0; i < w->hw; i++) {
		struct conn *c = &w->conns[i];
		enum tg_net_counter why;

		if (c->state != CONN_OPEN)
			continue;
		if (h->session_expired != NULL && h->session_expired(h->arg, w->id, c->session)) {
			conn_close(w, c); /* the handler counted why */
			continue;
		}
		why = conn_expired(w, c, pressure);
		if (why != TG_NETC__COUNT) {
			stat_add(w, why, 1);
			conn_close(w, c);
		}
	}
}

static void
process_cqes(struct worker *w)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&w->ring, head, cqe)
	{
		on_cqe(w, cqe);
		n++;
	}
	io_uring_cq_advance(&w->ring, n);
}

/* ------------------------------------------------------------------ */
/* the worker                                                          */

/* "what: strerror(e)" into err. */
static void
set_err(char *err, size_t errlen, const char *what, int e)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s: %s", what, strerror(e));
}

/* On the worker thread: ring, buffer ring, slots.  Returns 0 or -errno. */
static int
worker_setup(struct worker *w)
{
	const struct tg_net *n = w->net;
	const struct tg_net_cfg *cfg = &n->cfg;
	static const unsigned flag_sets[] = {
	    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
	    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
	    IORING_SETUP_COOP_TASKRUN,
	    0,
	};
	struct io_uring_buf_reg reg;
	int rc = -EINVAL;

	for (size_t i = 0; i < TG_ARRAY_LEN(flag_sets); i++) {
		struct io_uring_params p;

		memset(&p, 0, sizeof(p));
		p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = RING_ENTRIES * 4;
		rc = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
		if (rc == 0)
			break;
	}
	if (rc < 0) {
		snprintf(w->setup_err, sizeof(w->setup_err), "cannot set up io_uring: %s",
		         strerror(-rc));
		return rc;
	}
	w->ring_ok = true;

	w->br_bytes = (size_t)cfg->buf_count * sizeof(struct io_uring_buf);
	w->bufs_bytes = (size_t)cfg->buf_count * cfg->buf_size;
	w->hold_bytes = (size_t)cfg->buf_count * sizeof(struct hold);
	w->conns_bytes = (size_t)cfg->max_conns * sizeof(struct conn);
	w->connmem_bytes = (size_t)cfg->max_conns * n->slot_bytes;
	w->lists_bytes = (size_t)cfg->max_conns * 3 * sizeof(uint32_t);
	w->br = map(w->br_bytes);
	w->bufs = map(w->bufs_bytes);
	w->hold = map(w->hold_bytes);
	w->conns = map(w->conns_bytes);
	w->connmem = map(w->connmem_bytes);
	w->dirty = map(w->lists_bytes);
	if (!w->br || !w->bufs || !w->hold || !w->conns || !w->connmem || !w->dirty) {
		snprintf(w->setup_err, sizeof(w->setup_err),
		         "cannot map %zu bytes for worker %u's connections and buffers",
		         w->br_bytes + w->bufs_bytes + w->hold_bytes + w->conns_bytes +
		             w->connmem_bytes + w->lists_bytes,
		         w->id);
		return -ENOMEM;
	}
	w->rearm = w->dirty + cfg->max_conns;
	w->waiting = w->rearm + cfg->max_conns;

	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)w->br;
	reg.ring_entries = cfg->buf_count;
	reg.bgid = 0;
	rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
	if (rc < 0) {
		snprintf(w->setup_err, sizeof(w->setup_err),
		         "cannot register the io_uring buffer ring: %s", strerror(-rc));
		return rc;
	}
	w->br_ok = true;
	io_uring_buf_ring_init(w->br);
	for (unsigned i = 0; i < cfg->buf_count; i++)
		buf_return(w, i);
	buf_publish(w);

	w->free_head = NONE32;
	for (uint32_t i = cfg->max_conns; i-- > 0;) {
		struct conn *c = &w->conns[i];
		char *m = w->connmem + (size_t)i * n->slot_bytes;

		c->magic = CONN_MAGIC;
		c->idx = i;
		c->fd = -1;
		c->state = CONN_FREE;
		c->session = m;
		c->in = m + n->sess_size;
		tg_out_init(&c->out, m + n->sess_size + round64(cfg->inbuf), cfg->outbuf);
		c->hold_head = c->hold_tail = NONE16;
		c->next_free = w->free_head;
		w->free_head = i;
	}
	return 0;
}

/*
 * On the worker thread, after the loop: close every session, then cancel
 * everything and wait (at most DRAIN_MS) until the kernel has completed every
 * request, so no buffer is freed under it.
 */
static void
worker_teardown(struct worker *w)
{
	const struct tg_net_handler *h = &w->net->h;
	struct io_uring_sqe *sqe;
	uint64_t deadline;

	for (uint32_t i = 0; i < w->hw; i++) {
		struct conn *c = &w->conns[i];

		if (c->state == CONN_OPEN) {
			c->state = CONN_CLOSING;
			if (h->session_close)
				h->session_close(h->arg, w->id, c->session);
			stat_add(w, TG_NETC_CLOSED, 1);
			if (c->addr_counted) {
				addr_release(w->net, &c->peer);
				c->addr_counted = false;
			}
		}
		/* Wakes a recv or a send stuck on a peer that does not read. */
		if (c->fd >= 0)
			shutdown(c->fd, SHUT_RDWR);
	}
	sqe = sqe_get(w);
	io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
	sqe->user_data = ud_make(OP_STOP, 0, 0);
	deadline = tg_mono_ms() + DRAIN_MS;
	while (w->inflight > 0 && tg_mono_ms() < deadline) {
		struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;

		io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
		io_uring_for_each_cqe(&w->ring, head, cqe)
		{
			if (!(cqe->flags & IORING_CQE_F_MORE) && ud_ours(cqe->user_data))
				w->inflight--;
			if (ud_kind(cqe->user_data) == OP_ACCEPT && cqe->res >= 0)
				close(cqe->res); /* accepted before the cancel */
			n++;
		}
		io_uring_cq_advance(&w->ring, n);
	}
	w->drained = w->inflight == 0;
	for (uint32_t i = 0; i < w->hw; i++) {
		if (w->conns[i].fd >= 0) {
			close(w->conns[i].fd);
			w->conns[i].fd = -1;
		}
	}
}

static void
worker_loop(struct worker *w)
{
	const struct tg_net *n = w->net;
	uint32_t tick_ms = n->cfg.tick_ms ? n->cfg.tick_ms : TICK_DEFAULT_MS;

	w->now_ms = tg_mono_ms();
	w->next_tick_ms = w->now_ms + tick_ms;
	arm_wake(w);
	arm_accept(w);
	while (!stop_requested(n)) {
		struct __kernel_timespec ts;
		struct io_uring_cqe *cqe;
		uint64_t wait = w->next_tick_ms > w->now_ms ? w->next_tick_ms - w->now_ms : 0;

		ts.tv_sec = (long long)(wait / 1000);
		ts.tv_nsec = (long long)(wait % 1000) * 1000000;
		/*
		 * Replies held for durability: tg_net_durable wakes this worker when
		 * the position they wait for is reached; if it already was, no wait.
		 * The poll is a backstop.
		 */
		if (w->n_waiting > 0) {
			uint64_t lowest = __atomic_load_n(&w->wait_lsn, __ATOMIC_SEQ_CST);
			ts.tv_sec = 0;
			ts.tv_nsec = lowest != 0 && w->net->h.durable(w->net->h.arg) >= lowest
			                 ? 0
			                 : HELD_POLL_NS;
		}
		buf_publish(w);
		io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
		w->now_ms = tg_mono_ms();
		process_cqes(w);
		turn_end(w);
		if (w->now_ms >= w->next_tick_ms) {
			tick(w);
			turn_end(w); /* idle closes may have work to submit */
			w->next_tick_ms = w->now_ms + tick_ms;
		}
	}
}

/*
 * On the worker thread: a single-issuer ring is best torn down by its
 * submitter.  The buffers stay mapped until the main thread frees them.
 */
static void
worker_release_ring(struct worker *w)
{
	if (w->br_ok)
		io_uring_unregister_buf_ring(&w->ring, 0);
	w->br_ok = false;
	if (w->ring_ok)
		io_uring_queue_exit(&w->ring);
	w->ring_ok = false;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct tg_net *n = w->net;
	const struct tg_net_handler *h = &n->h;
	bool go;
	int rc;

	TG_CHECK_OBJ_NOTNULL(w, WORKER_MAGIC);
	rc = worker_setup(w);
	if (rc == 0 && h->worker_start)
		h->worker_start(h->arg, w->id);
	pthread_mutex_lock(&n->mu);
	w->setup_rc = rc;
	n->reported++;
	pthread_cond_broadcast(&n->cv);
	while (!n->go && !n->abort)
		pthread_cond_wait(&n->cv, &n->mu);
	go = n->go;
	pthread_mutex_unlock(&n->mu);
	if (rc != 0) {
		worker_release_ring(w);
		return NULL;
	}
	if (go)
		worker_loop(w);
	worker_teardown(w);
	if (h->worker_stop)
		h->worker_stop(h->arg, w->id);
	worker_release_ring(w);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* start and stop                                                      */

union addr {
	struct sockaddr sa;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
};

static int
parse_addr(const char *s, uint16_t port, union addr *a, socklen_t *len)
{
	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, s, &a->in4.sin_addr) == 1) {
		a->in4.sin_family = AF_INET;
		a->in4.sin_port = htons(port);
		*len = sizeof(a->in4);
		return 0;
	}
	if (inet_pton(AF_INET6, s, &a->in6.sin6_addr) == 1) {
		a->in6.sin6_family = AF_INET6;
		a->in6.sin6_port = htons(port);
		*len = sizeof(a->in6);
		return 0;
	}
	return -EINVAL;
}

static uint16_t
addr_port(const union addr *a)
{
	return ntohs(a->sa.sa_family == AF_INET ? a->in4.sin_port : a->in6.sin6_port);
}

static void
addr_set_port(union addr *a, uint16_t port)
{
	if (a->sa.sa_family == AF_INET)
		a->in4.sin_port = htons(port);
	else
		a->in6.sin6_port = htons(port);
}

static void
bind_err(const struct tg_net *n, uint16_t port, int e, char *err, size_t errlen)
{
	if (err == NULL || errlen == 0)
		return;
	if (strchr(n->addr, ':'))
		snprintf(err, errlen, "cannot bind [%s]:%u: %s", n->addr, port, strerror(e));
	else
		snprintf(err, errlen, "cannot bind %s:%u: %s", n->addr, port, strerror(e));
}

/*
 * A socket bound to a (port 0: the kernel picks).  With reuseport false it is
 * a probe: it fails when anyone listens on the port, SO_REUSEPORT or not, so a
 * second daemon cannot silently share the first one's port.  Returns the fd
 * or -errno.
 */
static int
bind_socket(union addr *a, socklen_t alen, bool reuseport, bool listening)
{
	int one = 1;
	int fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int e;

	if (fd < 0)
		return -errno;
	/* Accepted sockets inherit TCP_NODELAY: no system call per connection. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    bind(fd, &a->sa, alen) < 0 || (listening && listen(fd, SOMAXCONN) < 0)) {
		e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

static int
check_cfg(const struct tg_net_cfg *cfg, const struct tg_net_handler *h, char *err, size_t errlen)
{
	const char *bad = NULL;

	if (h == NULL || h->exec == NULL)
		bad = "the handler has no exec";
	else if (cfg->workers < 1 || cfg->workers > WORKERS_MAX)
		bad = "workers must be 1..1024";
	else if (cfg->max_conns < 1 || cfg->max_conns > CONNS_MAX)
		bad = "max_conns must be 1..16777216";
	else if (cfg->inbuf < CONN_BUF_MIN || cfg->inbuf > CONN_BUF_MAX)
		bad = "inbuf must be 64 bytes..1 GiB";
	else if (cfg->outbuf < CONN_BUF_MIN || cfg->outbuf > CONN_BUF_MAX)
		bad = "outbuf must be 64 bytes..1 GiB";
	else if (cfg->buf_count < 1 || cfg->buf_count > BUF_COUNT_MAX ||
	         (cfg->buf_count & (cfg->buf_count - 1)) != 0)
		bad = "buf_count must be a power of 2, 1..32768";
	else if (cfg->buf_size < CONN_BUF_MIN || cfg->buf_size > BUF_SIZE_MAX)
		bad = "buf_size must be 64 bytes..1 MiB";
	if (bad == NULL)
		return 0;
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "bad network configuration: %s", bad);
	return -EINVAL;
}

/* Stop and join the threads that were started, close sockets, free memory. */
static void
net_destroy(struct tg_net *n)
{
	for (unsigned i = 0; i < n->nworkers; i++) {
		struct worker *w = &n->w[i];

		if (w->thread_started)
			pthread_join(w->thread, NULL);
	}
	for (unsigned i = 0; i < n->nworkers; i++) {
		struct worker *w = &n->w[i];

		if (w->lfd >= 0)
			close(w->lfd);
		if (w->efd >= 0)
			close(w->efd);
		/*
		 * A request the kernel never gave back could still write into
		 * a provided buffer: then the buffers are left mapped.  A worker
		 * that never ran a loop never armed anything.
		 */
		if (w->drained || !w->thread_started || w->setup_rc != 0 || !n->go) {
			unmap(w->bufs, w->bufs_bytes);
			unmap(w->br, w->br_bytes);
			unmap(w->connmem, w->connmem_bytes);
		}
		unmap(w->hold, w->hold_bytes);
		unmap(w->conns, w->conns_bytes);
		unmap(w->dirty, w->lists_bytes);
		w->magic = 0;
	}
	pthread_mutex_destroy(&n->mu);
	pthread_cond_destroy(&n->cv);
	pthread_mutex_destroy(&n->addr_mu);
	unmap(n->addrs, n->addrs_bytes);
	free(n->w);
	n->magic = 0;
	free(n);
}

static void
wake_all(struct tg_net *n)
{
	uint64_t one = 1;

	for (unsigned i = 0; i < n->nworkers; i++)
		if (n->w[i].efd >= 0 && write(n->w[i].efd, &one, sizeof(one)) < 0)
			continue; /* the tick wakes it anyway */
}

void
tg_net_durable(struct tg_net *n, uint64_t lsn)
{
	uint64_t one = 1;

	TG_CHECK_OBJ_NOTNULL(n, NET_MAGIC);
	for (unsigned i = 0; i < n->nworkers; i++) {
		struct worker *w = &n->w[i];
		uint64_t want = __atomic_load_n(&w->wait_lsn, __ATOMIC_SEQ_CST);
		if (want != 0 && want <= lsn && w->efd >= 0 && write(w->efd, &one, sizeof(one)) < 0)
			continue; /* the worker's poll finds it anyway */
	}
}

/*
 * Contract: cfg and h are copied (cfg->addr too); h->arg must outlive the
 * server.  h->exec is required, every other callback may be NULL, and
 * max_request NULL means cfg->inbuf.  Sessions start zeroed.  On failure
 * nothing is left running or allocated.
 */
int
tg_net_start(struct tg_net **out, const struct tg_net_cfg *cfg, const struct tg_net_handler *h,
             char *err, size_t errlen)
{
	struct tg_net *n;
	union addr a;
	socklen_t alen;
	void *mem;
	int rc, probe;
	bool failed = false;

	TG_ASSERT(out != NULL && cfg != NULL);
	*out = NULL;
	rc = check_cfg(cfg, h, err, errlen);
	if (rc < 0)
		return rc;
	n = calloc(1, sizeof(*n));
	if (n == NULL) {
		set_err(err, errlen, "cannot allocate the server", ENOMEM);
		return -ENOMEM;
	}
	n->magic = NET_MAGIC;
	n->cfg = *cfg;
	n->h = *h;
	snprintf(n->addr, sizeof(n->addr), "%s", cfg->addr ? cfg->addr : "127.0.0.1");
	n->cfg.addr = n->addr;
	n->sess_size = round64(h->session_size);
	n->slot_bytes = n->sess_size + round64(cfg->inbuf) + round64(cfg->outbuf);
	n->headroom = cfg->outbuf / 2 < HEADROOM ? cfg->outbuf / 2 : HEADROOM;
	pthread_mutex_init(&n->mu, NULL);
	pthread_cond_init(&n->cv, NULL);
	pthread_mutex_init(&n->addr_mu, NULL);
	if (posix_memalign(&mem, 64, cfg->workers * sizeof(struct worker)) != 0) {
		pthread_mutex_destroy(&n->mu);
		pthread_cond_destroy(&n->cv);
		pthread_mutex_destroy(&n->addr_mu);
		free(n);
		set_err(err, errlen, "cannot allocate the workers", ENOMEM);
		return -ENOMEM;
	}
	n->w = mem;
	memset(n->w, 0, cfg->workers * sizeof(struct worker));
	n->nworkers = cfg->workers;
	for (unsigned i = 0; i < n->nworkers; i++) {
		n->w[i].magic = WORKER_MAGIC;
		n->w[i].id = i;
		n->w[i].net = n;
		n->w[i].ctr = h->counters ? h->counters(h->arg, i) : NULL;
		if (n->w[i].ctr == NULL)
			n->w[i].ctr = n->w[i].own;
		n->w[i].lfd = -1;
		n->w[i].efd = -1;
	}

	if (cfg->max_per_addr) {
		/* At least twice the connections of all workers: never more than half full. */
		uint64_t slots = 16;

		while (slots < 2 * (uint64_t)cfg->workers * cfg->max_conns)
			slots *= 2;
		n->addr_mask = slots - 1;
		n->addrs_bytes = slots * sizeof(struct addr_ent);
		n->addrs = map(n->addrs_bytes);
		if (getrandom(&n->addr_seed, sizeof(n->addr_seed), GRND_NONBLOCK) !=
		    sizeof(n->addr_seed))
			n->addr_seed = tg_mono_ms() ^ ((uint64_t)getpid() << 32);
		if (n->addrs == NULL) {
			set_err(err, errlen, "cannot map the per-address table", ENOMEM);
			net_destroy(n);
			return -ENOMEM;
		}
	}
	if (parse_addr(n->addr, cfg->port, &a, &alen) < 0) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "cannot bind %s: not an IPv4 or IPv6 address",
			         n->addr);
		net_destroy(n);
		return -EINVAL;
	}
	/*
	 * SO_REUSEPORT would let a second daemon share the port silently: a
	 * probe without it fails when anyone listens there.  For port 0 it
	 * also picks the port.  It is closed before the listeners bind.
	 */
	probe = bind_socket(&a, alen, false, false);
	if (probe < 0) {
		bind_err(n, cfg->port, -probe, err, errlen);
		net_destroy(n);
		return probe;
	}
	if (cfg->port == 0) {
		union addr got;
		socklen_t glen = sizeof(got);

		if (getsockname(probe, &got.sa, &glen) < 0) {
			rc = -errno;
			close(probe);
			bind_err(n, 0, -rc, err, errlen);
			net_destroy(n);
			return rc;
		}
		addr_set_port(&a, addr_port(&got));
	}
	n->port = addr_port(&a);
	close(probe);
	for (unsigned i = 0; i < n->nworkers; i++) {
		struct worker *w = &n->w[i];

		rc = bind_socket(&a, alen, true, true);
		if (rc < 0) {
			bind_err(n, n->port, -rc, err, errlen);
			net_destroy(n);
			return rc;
		}
		w->lfd = rc;
		w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (w->efd < 0) {
			rc = -errno;
			set_err(err, errlen, "cannot create an eventfd", -rc);
			net_destroy(n);
			return rc;
		}
	}

	for (unsigned i = 0; i < n->nworkers; i++) {
		struct worker *w = &n->w[i];

		rc = -pthread_create(&w->thread, NULL, worker_main, w);
		if (rc < 0) {
			set_err(err, errlen, "cannot start a worker thread", -rc);
			failed = true;
			break;
		}
		w->thread_started = true;
	}
	pthread_mutex_lock(&n->mu);
	while (!failed && n->reported < n->nworkers)
		pthread_cond_wait(&n->cv, &n->mu);
	for (unsigned i = 0; !failed && i < n->nworkers; i++) {
		if (n->w[i].setup_rc < 0) {
			rc = n->w[i].setup_rc;
			if (err != NULL && errlen > 0)
				snprintf(err, errlen, "%s", n->w[i].setup_err);
			failed = true;
		}
	}
	if (failed)
		n->abort = true;
	else
		n->go = true;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mu);
	if (failed) {
		set_stop(n);
		net_destroy(n);
		return rc;
	}
	*out = n;
	return 0;
}

uint16_t
tg_net_port(const struct tg_net *n)
{
	TG_CHECK_OBJ_NOTNULL(n, NET_MAGIC);
	return n->port;
}

/* Approximate while connections come and go: each worker's count is exact. */
uint64_t
tg_net_connections(const struct tg_net *n)
{
	uint64_t sum = 0;

	TG_CHECK_OBJ_NOTNULL(n, NET_MAGIC);
	for (unsigned i = 0; i < n->nworkers; i++)
		sum +=
		    load64(&n->w[i].ctr[TG_NETC_ACCEPTED]) - load64(&n->w[i].ctr[TG_NETC_CLOSED]);
	return sum;
}

void
tg_net_stats(const struct tg_net *n, struct tg_net_stats *st)
{
	TG_CHECK_OBJ_NOTNULL(n, NET_MAGIC);
	memset(st, 0, sizeof(*st));
	for (unsigned i = 0; i < n->nworkers; i++) {
		const uint64_t *k = n->w[i].ctr;
		st->open += load64(&k[TG_NETC_ACCEPTED]) - load64(&k[TG_NETC_CLOSED]);
		st->accepted += load64(&k[TG_NETC_ACCEPTED]);
		st->rejected += load64(&k[TG_NETC_REJECTED]);
		st->idle_closed += load64(&k[TG_NETC_IDLE_CLOSED]);
		st->protocol_errors += load64(&k[TG_NETC_PROTOCOL_ERRORS]);
		st->too_large += load64(&k[TG_NETC_TOO_LARGE]);
		st->addr_rejected += load64(&k[TG_NETC_ADDR_REJECTED]);
		st->request_timeouts += load64(&k[TG_NETC_REQUEST_TIMEOUT]);
		st->stalled += load64(&k[TG_NETC_STALLED]);
	}
}

/*
 * Contract: called once, not from a worker thread (not from a callback).
 * Open connections are closed (session_close runs for each on its worker);
 * returns after every worker has stopped.
 */
void
tg_net_stop(struct tg_net *n)
{
	if (n == NULL)
		return;
	TG_CHECK_OBJ(n, NET_MAGIC);
	set_stop(n);
	wake_all(n);
	net_destroy(n);
}
