/*
 * bench_load.c - `tollbench load`: the network load generator.
 *
 * Drives tollgated over TCP with RESP requests - or, for the baselines, a
 * plain redis-server running bench/baseline.lua (EVALSHA) or bare INCRBY,
 * with the same flags - from io_uring client threads: one ring per thread,
 * the connections spread over the threads, up to -P requests in flight on
 * each.  Closed loop by default (a reply frees a slot, the slot is refilled
 * at once); open loop with --rate, where every request has a due time on a
 * fixed timetable and its latency is counted from that due time, not from
 * when it could be sent, so a server that stalls cannot hide the stall
 * (no coordinated omission; docs/BENCHMARKS.md explains).
 *
 * Everything is sized at start: connections, their send and receive
 * buffers, the rings of requests in flight, the histograms.  The hot path
 * neither allocates nor locks nor formats with printf.  The main thread
 * only reports: once a second it flips each thread's per-second slot, waits
 * for the thread to acknowledge (a thread looks at least every TURN_NS), and
 * reads the slot the thread has let go of.  A server that closes, resets or
 * answers with something that is not RESP is counted and reported, never a
 * crash; a reply `-CODE text` is counted under CODE.  It must never send a
 * call id or txid twice: ids carry a run id taken from the clock and pid.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include "bench.h"
#include "hist.h"
#include "tg_assert.h"

#define THREADS_MAX  256
#define CONNS_MAX    10000
#define PIPELINE_MAX 4096
#define ERRCODES_MAX 16            /* distinct error codes kept by name; the rest are OTHER */
#define ERRCODE_LEN  24            /* bytes of one code, NUL included */
#define PROBE_MAX    4096          /* bytes of one reply read while setting up */
#define TURN_NS      10000000ull   /* longest wait for a completion: 10 ms */
#define DRAIN_NS     2000000000ull /* how long replies are awaited after the end: 2 s */
#define SEC_NS       1000000000ull
#define CONN_MAGIC   0x6c436f6eu /* "lCon" */
#define THR_MAGIC    0x6c546872u /* "lThr" */
#define UD_SEND      1u          /* low bit of user_data: the send, else the recv */

enum target { TARGET_TOLLGATE, TARGET_REDIS, TARGET_INCRBY };
static const char *const target_names[] = {"tollgate", "redis", "incrby"};

/* What --mix chooses between; a weight each. */
enum mix { MIX_CDR, MIX_AUTH_END, MIX_CREDIT, MIX__N };
static const char *const mix_names[MIX__N] = {"cdr", "auth-end", "credit"};

/* The request a slot in flight is waiting for a reply to. */
enum kind { K_CDR, K_AUTH, K_END, K_CREDIT, K_EVALSHA, K_INCRBY };

/* Zipf(s) over 1..n by rejection-inversion (Hormann & Derflinger, 1996):
 * constant memory, a few logs per draw, for any s > 0. */
struct zipf {
	double s;
	double n;
	double hx1;  /* H(1.5) - 1 */
	double hn;   /* H(n + 0.5) */
	double tail; /* 2 - H^-1(H(2.5) - h(2)) */
};

/* A request in flight: when it was due, and enough to build its follow-up. */
struct slot {
	uint64_t sched_ns;
	uint64_t acct;
	uint64_t seq;
	uint32_t kind;
};

/* A CALL.END owed for a granted CALL.AUTH. */
struct owed {
	uint64_t due_ns;
	uint64_t acct;
	uint64_t seq;
};

struct errtab {
	unsigned n;
	uint64_t other;
	struct {
		char code[ERRCODE_LEN];
		uint64_t count;
	} e[ERRCODES_MAX];
};

/* What a thread counts for one interval of the progress report. */
struct pslot {
	struct tg_hist h;
	uint64_t replies;
	uint64_t errors;
};

struct load;

struct conn {
	uint32_t magic;
	int fd;
	unsigned idx; /* 0..conns-1, over all threads */
	int dead;
	int recv_busy;
	int send_busy;
	char *in; /* replies received, not yet parsed */
	size_t in_have, in_cap;
	char *out; /* requests built, not yet sent; [0, out_busy) is in the kernel */
	size_t out_len, out_busy, out_cap;
	struct slot *fly; /* ring of pipeline entries */
	unsigned fly_head, fly_n;
	struct owed *owed; /* ring of pipeline entries */
	unsigned owed_head, owed_n;
	uint64_t next_slot; /* open loop: this connection's next place in the timetable */
	uint64_t quota;     /* requests still to send (-n), UINT64_MAX without -n */
	uint64_t seq;       /* call ids and txids used */
	uint64_t answered;
	char idp[40]; /* "<run id>.<idx>.": the unique part of every id */
	size_t idp_len;
} __attribute__((aligned(64)));

struct thr {
	uint32_t magic;
	unsigned idx;
	pthread_t tid;
	struct load *L;
	struct io_uring ring;
	int ring_ok;
	struct conn *conns;
	unsigned nconn, live;
	uint64_t rng;
	/* the per-second slots: main writes phase, the thread answers with ack */
	unsigned phase, ack, cur;
	struct pslot ps[2];
	/* the thread's own until it is done */
	struct tg_hist late; /* lower bounds for unanswered and unsent requests */
	struct tg_hist lag;  /* open loop: due to sent (a full pipeline, or the client late) */
	struct errtab errs;
	uint64_t sent, unanswered, unsent, disconnects;
	uint64_t next_due, stop_ns, last_reply_ns;
	int stopping;
	char failure[160]; /* the first connection failure, or why the thread gave up */
	int done;
};

struct load {
	/* settings */
	const char *host, *port, *pass, *dest, *amount, *sha, *csv_path;
	unsigned threads, conns, pipeline;
	uint64_t seconds, count, accounts, rate, secs, seed;
	double zipf_s;
	int zipf, json, quiet, spin, acct_by_id;
	const char *fixed_run_id;
	enum target target;
	unsigned mix[MIX__N], mix_total;
	/* derived */
	struct zipf z;
	char run_id[9];
	char a_dest[48], a_secs[32], a_amount[64], a_sha[64];
	size_t a_dest_len, a_secs_len, a_amount_len, a_sha_len, cmd_max;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	/* the run */
	uint64_t start_ns, deadline_ns;
	int go; /* 1 run, -1 give up */
	unsigned ready;
	struct thr *thr;
	struct conn *conn;
};

static int interrupted;

static void
on_sigint(int sig)
{
	(void)sig;
	__atomic_store_n(&interrupted, 1, __ATOMIC_RELAXED);
}

/* ---- numbers and settings ---- */

/* Decimal digits of v at d (20 bytes of room); returns how many. */
static size_t
dec(char *d, uint64_t v)
{
	char t[20];
	size_t n = 0;

	do
		t[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	for (size_t i = 0; i < n; i++)
		d[i] = t[n - 1 - i];
	return n;
}

/*
 * s as an integer in [lo, hi], with an optional k (10^3) or M (10^6) suffix
 * when suffix is set.  Returns 0, or -1 when s is anything else.
 */
static int
parse_u64(const char *s, uint64_t lo, uint64_t hi, int suffix, uint64_t *out)
{
	uint64_t v = 0, mul = 1;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (suffix && (*p == 'k' || *p == 'K') && p[1] == '\0')
		mul = 1000, p++;
	else if (suffix && (*p == 'm' || *p == 'M') && p[1] == '\0')
		mul = 1000000, p++;
	if (*p != '\0' || v > UINT64_MAX / mul)
		return -1;
	v *= mul;
	if (v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* "cdr", "auth-end", "credit", or "name:weight,..."; fills L->mix. */
static int
parse_mix(struct load *L, const char *s)
{
	memset(L->mix, 0, sizeof(L->mix));
	L->mix_total = 0;
	while (*s != '\0') {
		size_t len = strcspn(s, ":,");
		unsigned m;
		uint64_t w = 1;

		for (m = 0; m < MIX__N; m++)
			if (strlen(mix_names[m]) == len && strncmp(s, mix_names[m], len) == 0)
				break;
		if (m == MIX__N || L->mix[m] != 0)
			return -1;
		s += len;
		if (*s == ':') {
			char num[16];
			size_t nl = strcspn(++s, ",");
			if (nl == 0 || nl >= sizeof(num))
				return -1;
			memcpy(num, s, nl);
			num[nl] = '\0';
			if (parse_u64(num, 1, 1000000, 0, &w) != 0)
				return -1;
			s += nl;
		}
		L->mix[m] = (unsigned)w;
		L->mix_total += (unsigned)w;
		if (*s == ',' && *++s == '\0')
			return -1;
	}
	return L->mix_total ? 0 : -1;
}

/* "uniform", "zipf" or "zipf:<s>" with 0 < s <= 10. */
static int
parse_dist(struct load *L, const char *s)
{
	if (strcmp(s, "uniform") == 0) {
		L->zipf = 0;
		return 0;
	}
	if (strncmp(s, "zipf", 4) != 0 || (s[4] != '\0' && s[4] != ':'))
		return -1;
	L->zipf = 1;
	L->zipf_s = 0.99;
	if (s[4] == ':') {
		char *end;
		errno = 0;
		L->zipf_s = strtod(s + 5, &end);
		if (errno != 0 || end == s + 5 || *end != '\0' || !(L->zipf_s > 0.0) ||
		    L->zipf_s > 10.0)
			return -1;
	}
	return 0;
}

/* The mix as "name:w,name:w" for the report. */
static void
mix_string(const struct load *L, char *out, size_t len)
{
	size_t n = 0;

	out[0] = '\0';
	for (unsigned m = 0; m < MIX__N && n < len; m++)
		if (L->mix[m])
			n += (size_t)snprintf(out + n, len - n, "%s%s:%u", n ? "," : "",
			                      mix_names[m], L->mix[m]);
}

/* ---- Zipf ---- */

static double
zipf_helper1(double x)
{
	return fabs(x) > 1e-8 ? log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x));
}

static double
zipf_helper2(double x)
{
	return fabs(x) > 1e-8 ? expm1(x) / x : 1 + x * 0.5 * (1 + x / 3 * (1 + 0.25 * x));
}

/* h(x) = x^-s */
static double
zipf_h(const struct zipf *z, double x)
{
	return exp(-z->s * log(x));
}

/* H(x): an integral of h, written so that s = 1 needs no special case. */
static double
zipf_H(const struct zipf *z, double x)
{
	double lx = log(x);
	return zipf_helper2((1 - z->s) * lx) * lx;
}

static double
zipf_Hinv(const struct zipf *z, double x)
{
	double t = x * (1 - z->s);
	if (t < -1)
		t = -1;
	return exp(zipf_helper1(t) * x);
}

static void
zipf_init(struct zipf *z, double s, uint64_t n)
{
	z->s = s;
	z->n = (double)n;
	z->hx1 = zipf_H(z, 1.5) - 1;
	z->hn = zipf_H(z, z->n + 0.5);
	z->tail = 2 - zipf_Hinv(z, zipf_H(z, 2.5) - zipf_h(z, 2));
}

/* A rank in 1..n, rank k with probability proportional to k^-s. */
static uint64_t
zipf_draw(const struct zipf *z, uint64_t *rng)
{
	for (;;) {
		double u01 = (double)(tg_bench_rng(rng) >> 11) * 0x1.0p-53;
		double u = z->hn + u01 * (z->hx1 - z->hn);
		double x = zipf_Hinv(z, u);
		double k = floor(x + 0.5);

		if (k < 1)
			k = 1;
		else if (k > z->n)
			k = z->n;
		if (k - x <= z->tail || u >= zipf_H(z, k + 0.5) - zipf_h(z, k))
			return (uint64_t)k;
	}
}

/* ---- RESP replies ---- */

struct reply {
	char type; /* '+', '-', ':', '$', '*' */
	const char *err;
	size_t errlen; /* the code: the first word of an error */
	int64_t ival;  /* ':' replies */
};

/* A signed decimal in [p, e); -1 when it is not one or is out of range. */
static int
resp_int(const char *p, const char *e, int64_t *out)
{
	int neg = 0;
	uint64_t v = 0;

	if (p < e && *p == '-')
		neg = 1, p++;
	if (p == e || e - p > 19)
		return -1;
	for (; p < e; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v > INT64_MAX)
		return -1;
	*out = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

/*
 * The length of the one complete RESP2 reply at p[0, n): > 0 with r filled
 * in, 0 when more bytes are needed, -1 when the bytes are not RESP.  Arrays
 * are walked without recursion, as a count of elements still to come.
 */
static long
resp_reply(const char *p, size_t n, struct reply *r)
{
	size_t off = 0;
	uint64_t want = 1;

	while (want > 0) {
		if (off >= n)
			return 0;
		const char *l = p + off, *nl = memchr(l, '\n', n - off);
		if (nl == NULL)
			return n - off > PROBE_MAX ? -1 : 0;
		if (nl == l || nl[-1] != '\r')
			return -1;
		const char *e = nl - 1;
		int64_t v = 0;
		char t = *l;

		if (off == 0) {
			r->type = t;
			r->err = NULL;
			r->errlen = 0;
			r->ival = 0;
		}
		off = (size_t)(nl - p) + 1;
		want--;
		switch (t) {
		case '+':
			break;
		case '-':
			if (r->err == NULL && r->type == '-') {
				r->err = l + 1;
				r->errlen = strcspn(l + 1, " \r");
				if (r->errlen > (size_t)(e - l - 1))
					r->errlen = (size_t)(e - l - 1);
			}
			break;
		case ':':
			if (resp_int(l + 1, e, &v) != 0)
				return -1;
			if (l == p)
				r->ival = v;
			break;
		case '$':
			if (resp_int(l + 1, e, &v) != 0 || v < -1 || v > 512 * 1024 * 1024)
				return -1;
			if (v >= 0) {
				if (n - off < (size_t)v + 2)
					return 0;
				if (p[off + (size_t)v] != '\r' || p[off + (size_t)v + 1] != '\n')
					return -1;
				off += (size_t)v + 2;
			}
			break;
		case '*':
			if (resp_int(l + 1, e, &v) != 0 || v < -1 || v > 1000000)
				return -1;
			if (v > 0)
				want += (uint64_t)v;
			break;
		default:
			return -1;
		}
	}
	return (long)off;
}

/* Count one error reply under its code (at most ERRCODE_LEN - 1 bytes kept). */
static void
errtab_add(struct errtab *t, const char *code, size_t len, uint64_t count)
{
	if (len >= ERRCODE_LEN)
		len = ERRCODE_LEN - 1;
	for (unsigned i = 0; i < t->n; i++)
		if (strncmp(t->e[i].code, code, len) == 0 && t->e[i].code[len] == '\0') {
			t->e[i].count += count;
			return;
		}
	if (t->n == ERRCODES_MAX) {
		t->other += count;
		return;
	}
	/* Codes go into JSON: keep letters, digits, '_' and '.', nothing else. */
	for (size_t i = 0; i < len; i++) {
		char ch = code[i];
		int ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		         (ch >= '0' && ch <= '9') || ch == '_' || ch == '.';
		t->e[t->n].code[i] = ok ? ch : '?';
	}
	t->e[t->n].code[len] = '\0';
	t->e[t->n].count = count;
	t->n++;
}

/* ---- building requests ---- */

/* "$<len>\r\n<s>\r\n" into dst (room for len + 32); returns its length. */
static size_t
arg_chunk(char *dst, const char *s, size_t len)
{
	size_t n = 0;

	dst[n++] = '$';
	n += dec(dst + n, len);
	dst[n++] = '\r';
	dst[n++] = '\n';
	memcpy(dst + n, s, len);
	n += len;
	dst[n++] = '\r';
	dst[n++] = '\n';
	return n;
}

static inline void
put(struct conn *c, const char *s, size_t n)
{
	memcpy(c->out + c->out_len, s, n);
	c->out_len += n;
}

#define PUT_LIT(c, s) put((c), (s), sizeof(s) - 1)

/* One argument: prefix (may be empty) then v in decimal. */
static inline void
put_num(struct conn *c, const char *pfx, size_t pfxlen, uint64_t v)
{
	char d[20];
	size_t dn = dec(d, v);
	char *o = c->out + c->out_len;
	size_t n = 0;

	o[n++] = '$';
	n += dec(o + n, pfxlen + dn);
	o[n++] = '\r';
	o[n++] = '\n';
	memcpy(o + n, pfx, pfxlen);
	n += pfxlen;
	memcpy(o + n, d, dn);
	n += dn;
	o[n++] = '\r';
	o[n++] = '\n';
	c->out_len += n;
}

/* An id that no other request of any run shares: <tag><run id>.<conn>.<seq>. */
static inline void
put_id(struct conn *c, char tag, uint64_t seq)
{
	char d[20];
	size_t dn = dec(d, seq);
	char *o = c->out + c->out_len;
	size_t n = 0;

	o[n++] = '$';
	n += dec(o + n, 1 + c->idp_len + dn);
	o[n++] = '\r';
	o[n++] = '\n';
	o[n++] = tag;
	memcpy(o + n, c->idp, c->idp_len);
	n += c->idp_len;
	memcpy(o + n, d, dn);
	n += dn;
	o[n++] = '\r';
	o[n++] = '\n';
	c->out_len += n;
}

/*
 * Append one request of kind k to c's output and put it in flight, due at
 * sched.  The caller has checked that a pipeline slot is free; the output
 * buffer holds pipeline * cmd_max bytes, so it always has room.
 */
static void
request(const struct load *L, struct conn *c, enum kind k, uint64_t acct, uint64_t seq,
        uint64_t sched)
{
	TG_ASSERT(c->fly_n < L->pipeline && c->out_len + L->cmd_max <= c->out_cap);
	switch (k) {
	case K_CDR:
		PUT_LIT(c, "*5\r\n$3\r\nCDR\r\n");
		put_num(c, "", 0, acct);
		put(c, L->a_dest, L->a_dest_len);
		put(c, L->a_secs, L->a_secs_len);
		put_id(c, 'c', seq);
		break;
	case K_AUTH:
		PUT_LIT(c, "*4\r\n$9\r\nCALL.AUTH\r\n");
		put_num(c, "", 0, acct);
		put(c, L->a_dest, L->a_dest_len);
		put_id(c, 'a', seq);
		break;
	case K_END:
		PUT_LIT(c, "*4\r\n$8\r\nCALL.END\r\n");
		put_num(c, "", 0, acct);
		put_id(c, 'a', seq);
		put(c, L->a_secs, L->a_secs_len);
		break;
	case K_CREDIT:
		PUT_LIT(c, "*4\r\n$11\r\nACCT.CREDIT\r\n");
		put_num(c, "", 0, acct);
		put(c, L->a_amount, L->a_amount_len);
		put_id(c, 't', seq);
		break;
	case K_EVALSHA:
		/* bench/baseline.lua: EVALSHA <sha> 0 <acct> <dest> <duration> <callid> */
		PUT_LIT(c, "*7\r\n$7\r\nEVALSHA\r\n");
		put(c, L->a_sha, L->a_sha_len);
		PUT_LIT(c, "$1\r\n0\r\n");
		put_num(c, "", 0, acct);
		put(c, L->a_dest, L->a_dest_len);
		put(c, L->a_secs, L->a_secs_len);
		put_id(c, 'c', seq);
		break;
	case K_INCRBY:
		PUT_LIT(c, "*3\r\n$6\r\nINCRBY\r\n");
		put_num(c, "bal:", 4, acct);
		put(c, L->a_secs, L->a_secs_len);
		break;
	}
	unsigned i = c->fly_head + c->fly_n;
	if (i >= L->pipeline)
		i -= L->pipeline;
	c->fly[i] = (struct slot){.sched_ns = sched, .acct = acct, .seq = seq, .kind = k};
	c->fly_n++;
}

/* When request number k of connection idx is due: the connections take
 * turns, so the whole client sends one request every 1/rate seconds. */
static uint64_t
slot_due(const struct load *L, unsigned idx, uint64_t k)
{
	unsigned __int128 t = ((unsigned __int128)k * L->conns + idx) * SEC_NS;
	return L->start_ns + (uint64_t)(t / L->rate);
}

static uint64_t
pick_account(const struct load *L, struct thr *t)
{
	if (L->zipf)
		return zipf_draw(&L->z, &t->rng) - 1;
	return tg_bench_rng(&t->rng) % L->accounts;
}

/* --acct-by-id: splitmix64 of the id's connection and sequence, as bench/ids-replay.py has it. */
static uint64_t
acct_of_id(const struct load *L, unsigned conn, uint64_t seq)
{
	uint64_t z = ((uint64_t)conn << 40 | seq) + 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (z ^ (z >> 31)) % L->accounts;
}

static enum mix
pick_mix(const struct load *L, struct thr *t)
{
	if (L->mix[MIX_CDR] == L->mix_total)
		return MIX_CDR;
	unsigned r = (unsigned)(tg_bench_rng(&t->rng) % L->mix_total);
	enum mix m = MIX_CDR;
	while (r >= L->mix[m])
		r -= L->mix[m++];
	return m;
}

/* ---- the ring ---- */

static struct io_uring_sqe *
sqe_get(struct thr *t)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);
	if (sqe == NULL) {
		io_uring_submit(&t->ring);
		sqe = io_uring_get_sqe(&t->ring);
	}
	/* The ring has two entries per connection, and a connection has at
	 * most one recv and one send queued: this cannot fail. */
	TG_ASSERT(sqe != NULL);
	return sqe;
}

static void
conn_recv(struct thr *t, struct conn *c)
{
	struct io_uring_sqe *sqe = sqe_get(t);

	io_uring_prep_recv(sqe, c->fd, c->in + c->in_have, c->in_cap - c->in_have, 0);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c);
	c->recv_busy = 1;
}

static void
conn_send(struct thr *t, struct conn *c)
{
	struct io_uring_sqe *sqe = sqe_get(t);

	io_uring_prep_send(sqe, c->fd, c->out, c->out_len, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | UD_SEND);
	c->send_busy = 1;
	c->out_busy = c->out_len;
}

/*
 * The connection is lost (closed, reset, or it spoke something that is not
 * RESP): its requests in flight are counted unanswered, with the time they
 * have waited as a lower bound of their latency, and it is shut down so its
 * queued recv and send complete.  The fd is closed after the ring is gone.
 */
static void
conn_fail(struct thr *t, struct conn *c, const char *why)
{
	if (c->dead)
		return;
	uint64_t now = tg_mono_ns();

	c->dead = 1;
	t->live--;
	t->disconnects++;
	while (c->fly_n > 0) {
		struct slot *s = &c->fly[c->fly_head];
		tg_hist_record(&t->late, now > s->sched_ns ? now - s->sched_ns : 0);
		t->unanswered++;
		if (++c->fly_head == t->L->pipeline)
			c->fly_head = 0;
		c->fly_n--;
	}
	t->unsent += c->owed_n;
	c->owed_n = 0;
	if (t->failure[0] == '\0')
		snprintf(t->failure, sizeof(t->failure),
		         "connection %u: %s after %" PRIu64 " replies", c->idx, why, c->answered);
	shutdown(c->fd, SHUT_RDWR);
}

/*
 * Fill c's pipeline: CALL.ENDs owed first, then new requests - closed loop:
 * as many as there are free slots; open loop: those whose due time has come
 * (t->next_due learns the earliest one still to come).  Then send, if no
 * send is in flight.
 */
static void
conn_fill(struct thr *t, struct conn *c, uint64_t now)
{
	const struct load *L = t->L;

	while (c->fly_n < L->pipeline) {
		if (c->owed_n > 0) {
			struct owed *o = &c->owed[c->owed_head];
			request(L, c, K_END, o->acct, o->seq, o->due_ns);
			if (L->rate)
				tg_hist_record(&t->lag, now > o->due_ns ? now - o->due_ns : 0);
			if (++c->owed_head == L->pipeline)
				c->owed_head = 0;
			c->owed_n--;
			t->sent++;
			continue;
		}
		if (t->stopping || c->quota == 0)
			break;
		uint64_t sched = now;
		if (L->rate) {
			sched = slot_due(L, c->idx, c->next_slot);
			if (sched > now) {
				if (sched < t->next_due)
					t->next_due = sched;
				break;
			}
		}
		if (L->rate)
			tg_hist_record(&t->lag, now - sched);
		enum mix m = pick_mix(L, t);
		uint64_t n = m == MIX_AUTH_END ? 2 : 1, acct = pick_account(L, t);
		if (L->acct_by_id)
			acct = acct_of_id(L, c->idx, c->seq);
		c->next_slot += n;
		c->quota = c->quota > n ? c->quota - n : 0;
		switch (L->target) {
		case TARGET_REDIS:
			request(L, c, K_EVALSHA, acct, c->seq++, sched);
			break;
		case TARGET_INCRBY:
			request(L, c, K_INCRBY, acct, 0, sched);
			break;
		case TARGET_TOLLGATE:
			request(L, c,
			        m == MIX_CDR      ? K_CDR
			        : m == MIX_CREDIT ? K_CREDIT
			                          : K_AUTH,
			        acct, c->seq++, sched);
			break;
		}
		t->sent++;
	}
	if (!c->send_busy && c->out_len > 0)
		conn_send(t, c);
}

/* Replies arrived: match them with the requests in flight, oldest first. */
static void
conn_recv_done(struct thr *t, struct conn *c, int res)
{
	const struct load *L = t->L;

	c->recv_busy = 0;
	if (c->dead)
		return;
	if (res <= 0) {
		conn_fail(t, c, res == 0 ? "closed by the server" : strerror(-res));
		return;
	}
	c->in_have += (size_t)res;

	uint64_t now = tg_mono_ns();
	struct pslot *ps = &t->ps[t->cur];
	size_t off = 0;
	struct reply r;
	long n;

	while ((n = resp_reply(c->in + off, c->in_have - off, &r)) > 0) {
		if (c->fly_n == 0) {
			conn_fail(t, c, "a reply to no request");
			return;
		}
		struct slot *s = &c->fly[c->fly_head];
		tg_hist_record(&ps->h, now > s->sched_ns ? now - s->sched_ns : 0);
		ps->replies++;
		c->answered++;
		if (r.type == '-') {
			ps->errors++;
			errtab_add(&t->errs, r.err, r.errlen, 1);
		} else if (s->kind == K_AUTH && r.type == ':' && r.ival > 0) {
			/* Granted: the call ends on the same connection, once the
			 * switch would know it was granted. */
			unsigned i = c->owed_head + c->owed_n;
			if (i >= L->pipeline)
				i -= L->pipeline;
			c->owed[i] = (struct owed){.due_ns = now, .acct = s->acct, .seq = s->seq};
			c->owed_n++;
		}
		if (++c->fly_head == L->pipeline)
			c->fly_head = 0;
		c->fly_n--;
		off += (size_t)n;
	}
	if (n < 0) {
		conn_fail(t, c, "a reply that is not RESP");
		return;
	}
	memmove(c->in, c->in + off, c->in_have - off);
	c->in_have -= off;
	if (c->in_have == c->in_cap) {
		conn_fail(t, c, "a reply larger than the receive buffer");
		return;
	}
	t->last_reply_ns = now;
	conn_recv(t, c);
}

static void
conn_send_done(struct thr *t, struct conn *c, int res)
{
	c->send_busy = 0;
	if (c->dead)
		return;
	if (res <= 0) {
		conn_fail(t, c, res == 0 ? "send wrote nothing" : strerror(-res));
		return;
	}
	/* Requests appended while the send was in flight sit after it. */
	memmove(c->out, c->out + res, c->out_len - (size_t)res);
	c->out_len -= (size_t)res;
}

static void
handle_cqe(struct thr *t, const struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	struct conn *c = (struct conn *)(uintptr_t)(ud & ~(uint64_t)UD_SEND);

	TG_CHECK_OBJ_NOTNULL(c, CONN_MAGIC);
	if (ud & UD_SEND)
		conn_send_done(t, c, cqe->res);
	else
		conn_recv_done(t, c, cqe->res);
}

static int
ring_init(struct thr *t)
{
	unsigned entries = 64;
	while (entries < 2 * t->nconn + 8)
		entries *= 2;

	struct io_uring_params p = {.flags =
	                                IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN};
	int rc = io_uring_queue_init_params(entries, &t->ring, &p);
	if (rc == -EINVAL) { /* an older kernel: plain ring */
		memset(&p, 0, sizeof(p));
		rc = io_uring_queue_init_params(entries, &t->ring, &p);
	}
	if (rc == 0 && !(p.features & IORING_FEAT_EXT_ARG)) {
		io_uring_queue_exit(&t->ring);
		return -ENOSYS; /* timed waits need Linux 5.11 */
	}
	return rc;
}

/* When the run is over: requests due and never sent (open loop), and
 * requests sent and never answered, waited at least this long. */
static void
thr_finish(struct thr *t, uint64_t now)
{
	const struct load *L = t->L;
	uint64_t end = L->deadline_ns < t->stop_ns ? L->deadline_ns : t->stop_ns;

	for (unsigned i = 0; i < t->nconn; i++) {
		struct conn *c = &t->conns[i];
		for (; L->rate && c->quota > 0; c->quota--) {
			uint64_t due = slot_due(L, c->idx, c->next_slot);
			if (due >= end)
				break;
			tg_hist_record(&t->late, now - due);
			c->next_slot++;
			t->unsent++;
		}
		if (c->dead)
			continue;
		for (; c->fly_n > 0; c->fly_n--) {
			struct slot *s = &c->fly[c->fly_head];
			tg_hist_record(&t->late, now > s->sched_ns ? now - s->sched_ns : 0);
			t->unanswered++;
			if (++c->fly_head == L->pipeline)
				c->fly_head = 0;
		}
		t->unsent += c->owed_n;
	}
}

static void *
thr_run(void *arg)
{
	struct thr *t = arg;
	TG_CHECK_OBJ_NOTNULL(t, THR_MAGIC);
	struct load *L = t->L;
	uint64_t drain_end = UINT64_MAX, now;
	int rc;

	/* Timed waits to the microsecond, not the default 50 us of slack. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	rc = ring_init(t);
	if (rc != 0)
		snprintf(t->failure, sizeof(t->failure), "io_uring: %s", strerror(-rc));
	t->ring_ok = rc == 0;
	__atomic_add_fetch(&L->ready, 1, __ATOMIC_ACQ_REL);
	while (__atomic_load_n(&L->go, __ATOMIC_ACQUIRE) == 0)
		sched_yield();
	if (!t->ring_ok || __atomic_load_n(&L->go, __ATOMIC_ACQUIRE) < 0)
		goto out;

	for (unsigned i = 0; i < t->nconn; i++)
		conn_recv(t, &t->conns[i]);
	for (;;) {
		now = tg_mono_ns();
		unsigned p = __atomic_load_n(&t->phase, __ATOMIC_ACQUIRE);
		if (p != t->cur) {
			t->cur = p;
			__atomic_store_n(&t->ack, p, __ATOMIC_RELEASE);
		}
		if (!t->stopping &&
		    (now >= L->deadline_ns || __atomic_load_n(&interrupted, __ATOMIC_RELAXED))) {
			t->stopping = 1;
			t->stop_ns = now;
			drain_end = now + DRAIN_NS;
		}

		int busy = 0;
		t->next_due = UINT64_MAX;
		for (unsigned i = 0; i < t->nconn; i++) {
			struct conn *c = &t->conns[i];
			if (c->dead)
				continue;
			conn_fill(t, c, now);
			busy |= c->fly_n > 0 || c->owed_n > 0 || (!t->stopping && c->quota > 0);
		}
		if (t->live == 0 || !busy || now >= drain_end)
			break;

		uint64_t wait = TURN_NS;
		if (t->next_due != UINT64_MAX)
			wait = t->next_due > now ? t->next_due - now : 0;
		if (wait > TURN_NS)
			wait = TURN_NS;
		if (drain_end - now < wait)
			wait = drain_end - now;
		if (wait == 0 || L->spin) {
			/* Enter the kernel even with nothing to submit: completions
			 * are posted by task work that runs on the way out. */
			rc = io_uring_submit_and_get_events(&t->ring);
		} else {
			struct __kernel_timespec ts = {.tv_sec = (long long)(wait / SEC_NS),
			                               .tv_nsec = (long long)(wait % SEC_NS)};
			struct io_uring_cqe *cqe;
			rc = io_uring_submit_and_wait_timeout(&t->ring, &cqe, 1, &ts, NULL);
		}
		if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			snprintf(t->failure, sizeof(t->failure), "io_uring_enter: %s",
			         strerror(-rc));
			break;
		}

		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&t->ring, head, cqe)
		{
			handle_cqe(t, cqe);
			seen++;
		}
		io_uring_cq_advance(&t->ring, seen);
	}
	now = tg_mono_ns();
	if (!t->stopping)
		t->stop_ns = now;
	thr_finish(t, now);
out:
	if (t->ring_ok)
		io_uring_queue_exit(&t->ring);
	__atomic_store_n(&t->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* ---- setting up ---- */

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: tollbench load [options]\n"
	    "  -h HOST          server address (127.0.0.1)\n"
	    "  -p PORT          port (6390; 6379 with --target redis or incrby)\n"
	    "  -a PASSWORD      AUTH on every connection first\n"
	    "  -t THREADS       client threads, one io_uring each (1)\n"
	    "  -c CONNECTIONS   connections, spread over the threads (50)\n"
	    "  -P DEPTH         requests in flight per connection (1)\n"
	    "  -d SECONDS       how long to send (10 unless -n is given)\n"
	    "  -n COUNT         how many requests to send in all (k, M suffixes)\n"
	    "  --rate R         open loop: R requests/s in all on a fixed timetable, latency\n"
	    "                   counted from each request's due time (k, M suffixes);\n"
	    "                   without it, closed loop\n"
	    "  --accounts N     account ids 0..N-1 (1000000)\n"
	    "  --dist D         uniform | zipf[:s] (Zipf exponent s, default 0.99)\n"
	    "  --mix M          cdr | auth-end | credit, or weighted: cdr:8,auth-end:1,credit:1\n"
	    "                   (cdr).  auth-end: CALL.AUTH, then CALL.END of the same call\n"
	    "                   on the same connection once it is granted\n"
	    "  --dest DIGITS    destination dialled (14155551212)\n"
	    "  --secs S         call duration in seconds; INCRBY's increment (125)\n"
	    "  --amount A       ACCT.CREDIT amount (0.01)\n"
	    "  --target T       tollgate | redis (EVALSHA --lua-sha instead of CDR) |\n"
	    "                   incrby (INCRBY bal:<acct> <secs> instead of CDR) (tollgate)\n"
	    "  --lua-sha SHA    with --target redis: SCRIPT LOAD of bench/baseline.lua\n"
	    "  --seed N         seed of the account and mix draws (from the clock)\n"
	    "  --run-id HEX     the run id in every call id (8 hex digits; random by default)\n"
	    "  --acct-by-id     a request's account is splitmix64(conn << 40 | seq) mod\n"
	    "                   --accounts, so a replayer can send any id again with its own\n"
	    "                   account and data (bench/ids-replay.py)\n"
	    "  --json           the final report as JSON on stdout\n"
	    "  --csv FILE       one row a second: second,requests,p50,p90,p99,p999,max (us)\n"
	    "  --spin           poll for completions instead of sleeping: no wake-up delay\n"
	    "                   in the client's timing, at the cost of a busy core per thread\n"
	    "  -q               no progress line each second\n");
}

enum {
	OPT_RATE = 256,
	OPT_ACCOUNTS,
	OPT_DIST,
	OPT_MIX,
	OPT_DEST,
	OPT_SECS,
	OPT_AMOUNT,
	OPT_TARGET,
	OPT_SHA,
	OPT_SEED,
	OPT_JSON,
	OPT_CSV,
	OPT_HELP,
	OPT_SPIN,
	OPT_RUN_ID,
	OPT_ACCT_BY_ID,
};

static const struct option long_opts[] = {
    {"rate", required_argument, NULL, OPT_RATE},
    {"accounts", required_argument, NULL, OPT_ACCOUNTS},
    {"dist", required_argument, NULL, OPT_DIST},
    {"mix", required_argument, NULL, OPT_MIX},
    {"dest", required_argument, NULL, OPT_DEST},
    {"secs", required_argument, NULL, OPT_SECS},
    {"amount", required_argument, NULL, OPT_AMOUNT},
    {"target", required_argument, NULL, OPT_TARGET},
    {"lua-sha", required_argument, NULL, OPT_SHA},
    {"seed", required_argument, NULL, OPT_SEED},
    {"json", no_argument, NULL, OPT_JSON},
    {"csv", required_argument, NULL, OPT_CSV},
    {"help", no_argument, NULL, OPT_HELP},
    {"spin", no_argument, NULL, OPT_SPIN},
    {"run-id", required_argument, NULL, OPT_RUN_ID},
    {"acct-by-id", no_argument, NULL, OPT_ACCT_BY_ID},
    {NULL, 0, NULL, 0},
};

static int
bad(const char *what, const char *value)
{
	fprintf(stderr, "tollbench load: %s: '%s' (try --help)\n", what, value);
	return 2;
}

/* Options into L.  Returns 0, or the exit status: 2 for bad options, 0 after --help (-1). */
static int
parse(struct load *L, int argc, char **argv)
{
	uint64_t v;
	int opt;

	*L = (struct load){.host = "127.0.0.1",
	                   .dest = "14155551212",
	                   .amount = "0.01",
	                   .threads = 1,
	                   .conns = 50,
	                   .pipeline = 1,
	                   .accounts = 1000000,
	                   .secs = 125,
	                   .mix = {1, 0, 0},
	                   .mix_total = 1};
	optind = 1;
	opterr = 1;
	while ((opt = getopt_long(argc, argv, "h:p:a:t:c:P:d:n:q", long_opts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			L->host = optarg;
			break;
		case 'p':
			if (parse_u64(optarg, 1, 65535, 0, &v) != 0)
				return bad("-p: a port 1..65535", optarg);
			L->port = optarg;
			break;
		case 'a':
			L->pass = optarg;
			break;
		case 't':
			if (parse_u64(optarg, 1, THREADS_MAX, 0, &v) != 0)
				return bad("-t: 1..256 threads", optarg);
			L->threads = (unsigned)v;
			break;
		case 'c':
			if (parse_u64(optarg, 1, CONNS_MAX, 0, &v) != 0)
				return bad("-c: 1..10000 connections", optarg);
			L->conns = (unsigned)v;
			break;
		case 'P':
			if (parse_u64(optarg, 1, PIPELINE_MAX, 0, &v) != 0)
				return bad("-P: a depth of 1..4096", optarg);
			L->pipeline = (unsigned)v;
			break;
		case 'd':
			if (parse_u64(optarg, 1, 86400 * 7, 0, &L->seconds) != 0)
				return bad("-d: seconds, 1 to a week", optarg);
			break;
		case 'n':
			if (parse_u64(optarg, 1, UINT64_MAX / 2, 1, &L->count) != 0)
				return bad("-n: a positive count", optarg);
			break;
		case 'q':
			L->quiet = 1;
			break;
		case OPT_SPIN:
			L->spin = 1;
			break;
		case OPT_RATE:
			if (parse_u64(optarg, 1, 1000000000, 1, &L->rate) != 0)
				return bad("--rate: requests/s, 1 to 10^9", optarg);
			break;
		case OPT_ACCOUNTS:
			if (parse_u64(optarg, 1, UINT64_MAX - 1, 1, &L->accounts) != 0)
				return bad("--accounts: a positive count", optarg);
			break;
		case OPT_DIST:
			if (parse_dist(L, optarg) != 0)
				return bad("--dist: uniform, zipf or zipf:<s> with 0 < s <= 10",
				           optarg);
			break;
		case OPT_MIX:
			if (parse_mix(L, optarg) != 0)
				return bad("--mix: cdr, auth-end, credit or name:weight,...",
				           optarg);
			break;
		case OPT_DEST:
			if (strlen(optarg) < 1 || strlen(optarg) > 32 ||
			    strspn(optarg, "0123456789") != strlen(optarg))
				return bad("--dest: 1 to 32 digits", optarg);
			L->dest = optarg;
			break;
		case OPT_SECS:
			if (parse_u64(optarg, 0, 2678400, 0, &L->secs) != 0)
				return bad("--secs: 0..2678400", optarg);
			break;
		case OPT_AMOUNT:
			if (strlen(optarg) < 1 || strlen(optarg) > 30 ||
			    strspn(optarg, "0123456789.") != strlen(optarg))
				return bad("--amount: a positive decimal", optarg);
			L->amount = optarg;
			break;
		case OPT_TARGET:
			for (v = 0; v < TG_ARRAY_LEN(target_names); v++)
				if (strcmp(optarg, target_names[v]) == 0)
					break;
			if (v == TG_ARRAY_LEN(target_names))
				return bad("--target: tollgate, redis or incrby", optarg);
			L->target = (enum target)v;
			break;
		case OPT_SHA:
			if (strlen(optarg) != 40 || strspn(optarg, "0123456789abcdefABCDEF") != 40)
				return bad("--lua-sha: 40 hex digits", optarg);
			L->sha = optarg;
			break;
		case OPT_RUN_ID:
			if (strlen(optarg) != 8 || strspn(optarg, "0123456789abcdef") != 8)
				return bad("--run-id: 8 lower-case hex digits", optarg);
			L->fixed_run_id = optarg;
			break;
		case OPT_ACCT_BY_ID:
			L->acct_by_id = 1;
			break;
		case OPT_SEED:
			if (parse_u64(optarg, 0, UINT64_MAX - 1, 0, &L->seed) != 0)
				return bad("--seed: a number", optarg);
			L->seed++;
			break;
		case OPT_JSON:
			L->json = 1;
			break;
		case OPT_CSV:
			L->csv_path = optarg;
			break;
		case OPT_HELP:
			usage(stdout);
			return -1;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc)
		return bad("unexpected argument", argv[optind]);
	if (L->target == TARGET_REDIS && L->sha == NULL) {
		fprintf(stderr, "tollbench load: --target redis needs --lua-sha (the SHA1 that "
		                "SCRIPT LOAD bench/baseline.lua returns)\n");
		return 2;
	}
	if (L->target != TARGET_TOLLGATE && L->mix[MIX_CDR] != L->mix_total) {
		fprintf(stderr, "tollbench load: --target %s replaces CDR only: use --mix cdr\n",
		        target_names[L->target]);
		return 2;
	}
	if (L->threads > L->conns)
		L->threads = L->conns;
	if (L->port == NULL)
		L->port = L->target == TARGET_TOLLGATE ? "6390" : "6379";
	if (L->seconds == 0 && L->count == 0)
		L->seconds = 10;
	return 0;
}

/* Read one complete reply into buf (blocking, with the socket's timeout).
 * Returns its length, or -errno. */
static long
probe(int fd, const char *req, size_t reqlen, char *buf, size_t cap)
{
	size_t have = 0;
	struct reply r;

	ssize_t sent = send(fd, req, reqlen, MSG_NOSIGNAL);
	if (sent != (ssize_t)reqlen)
		return sent < 0 ? -errno : -EIO;
	for (;;) {
		long n = resp_reply(buf, have, &r);
		if (n > 0)
			return n;
		if (n < 0)
			return -EPROTO;
		if (have == cap - 1)
			return -EMSGSIZE;
		ssize_t got = recv(fd, buf + have, cap - 1 - have, 0);
		if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return -ETIMEDOUT;
		if (got <= 0)
			return got == 0 ? -ECONNRESET : -errno;
		have += (size_t)got;
		buf[have] = '\0';
	}
}

/* A multibulk request of up to 4 words into out (room for PROBE_MAX). */
static size_t
build_words(char *out, const char *const *w, unsigned n)
{
	size_t len = (size_t)snprintf(out, PROBE_MAX, "*%u\r\n", n);

	for (unsigned i = 0; i < n; i++)
		len += arg_chunk(out + len, w[i], strlen(w[i]));
	return len;
}

/* The reply's first line, for messages. */
static const char *
first_line(char *buf)
{
	buf[strcspn(buf, "\r\n")] = '\0';
	return buf;
}

/* Connect connection c; AUTH with -a.  Returns 0 or -1 with a message out. */
static int
dial(struct load *L, struct conn *c)
{
	char req[PROBE_MAX], rep[PROBE_MAX];
	int one = 1;
	long n;

	c->fd = socket(L->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&L->addr, L->addrlen) != 0) {
		fprintf(stderr, "tollbench load: cannot connect to %s:%s (connection %u): %s\n",
		        L->host, L->port, c->idx, strerror(errno));
		return -1;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (L->pass == NULL)
		return 0;

	struct timeval tv = {.tv_sec = 5};
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	const char *w[] = {"AUTH", L->pass};
	n = probe(c->fd, req, build_words(req, w, 2), rep, sizeof(rep));
	if (n < 0 || rep[0] != '+') {
		fprintf(stderr, "tollbench load: AUTH on connection %u: %s\n", c->idx,
		        n < 0 ? strerror((int)-n) : first_line(rep));
		return -1;
	}
	tv.tv_sec = 0;
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return 0;
}

/*
 * Before the clock starts, on connection 0: is the server what --target
 * says, and does it hold the accounts?  A script that is not loaded stops
 * the run (every request would fail); a missing account only warns.
 */
static int
check_server(struct load *L, int fd)
{
	char req[PROBE_MAX], rep[PROBE_MAX], last[24], key[32];
	struct timeval tv = {.tv_sec = 5};
	long n;

	last[dec(last, L->accounts - 1)] = '\0';
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (L->target == TARGET_REDIS) {
		const char *w[] = {"SCRIPT", "EXISTS", L->sha};
		n = probe(fd, req, build_words(req, w, 3), rep, sizeof(rep));
		if (n < 0 || strncmp(rep, "*1\r\n:1\r\n", 8) != 0) {
			fprintf(stderr,
			        "tollbench load: script %s is not loaded on %s:%s (%s): "
			        "redis-cli -p %s SCRIPT LOAD \"$(cat bench/baseline.lua)\"\n",
			        L->sha, L->host, L->port,
			        n < 0           ? strerror((int)-n)
			        : rep[0] == '*' ? "SCRIPT EXISTS answers 0"
			                        : first_line(rep),
			        L->port);
			return -1;
		}
		snprintf(key, sizeof(key), "acct:%s", last);
	} else if (L->target == TARGET_TOLLGATE) {
		snprintf(key, sizeof(key), "%s", last);
	}
	if (L->target != TARGET_INCRBY) {
		const char *w[] = {L->target == TARGET_REDIS ? "EXISTS" : "ACCT.GET", key};
		n = probe(fd, req, build_words(req, w, 2), rep, sizeof(rep));
		if (n < 0)
			fprintf(stderr, "tollbench load: %s:%s: %s\n", L->host, L->port,
			        strerror((int)-n));
		if (n < 0)
			return -1;
		if (rep[0] == '-' || strncmp(rep, ":0\r\n", 4) == 0)
			fprintf(stderr,
			        "tollbench load: warning: %s %s answers %s: requests will fail\n",
			        w[0], key, rep[0] == '-' ? first_line(rep) : "0 (no such account)");
	}
	tv.tv_sec = 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return 0;
}

/* Allocate and connect everything.  Returns 0, or -1 with a message out. */
static int
setup(struct load *L)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
	int rc = getaddrinfo(L->host, L->port, &hints, &ai);

	if (rc != 0) {
		fprintf(stderr, "tollbench load: %s:%s: %s\n", L->host, L->port, gai_strerror(rc));
		return -1;
	}
	memcpy(&L->addr, ai->ai_addr, ai->ai_addrlen);
	L->addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);

	/* Enough descriptors for every connection. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < L->conns + 64u) {
		rl.rlim_cur = rl.rlim_max < L->conns + 64u ? rl.rlim_max : L->conns + 64u;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	/* The constant arguments, once. */
	L->a_dest_len = arg_chunk(L->a_dest, L->dest, strlen(L->dest));
	char secs[24];
	L->a_secs_len = arg_chunk(L->a_secs, secs, dec(secs, L->secs));
	L->a_amount_len = arg_chunk(L->a_amount, L->amount, strlen(L->amount));
	if (L->sha)
		L->a_sha_len = arg_chunk(L->a_sha, L->sha, strlen(L->sha));
	/* The longest request: the fixed words, three numbers of 20 digits and
	 * an id, with room to spare. */
	L->cmd_max =
	    128 + L->a_dest_len + L->a_secs_len + L->a_amount_len + L->a_sha_len + 3 * 28 + 64;

	uint64_t x = tg_mono_ns() ^ ((uint64_t)getpid() << 32);
	snprintf(L->run_id, sizeof(L->run_id), "%08" PRIx32,
	         (uint32_t)(tg_bench_rng(&x) ^ tg_bench_rng(&x) >> 32));
	if (L->fixed_run_id != NULL)
		memcpy(L->run_id, L->fixed_run_id, sizeof(L->run_id));
	if (L->seed == 0)
		L->seed = tg_mono_ns() | 1;
	if (L->zipf)
		zipf_init(&L->z, L->zipf_s, L->accounts);

	L->thr = calloc(L->threads, sizeof(*L->thr));
	L->conn = aligned_alloc(64, sizeof(struct conn) * L->conns);
	if (L->thr == NULL || L->conn == NULL)
		goto nomem;
	memset(L->conn, 0, sizeof(struct conn) * L->conns);
	for (unsigned i = 0; i < L->conns; i++)
		L->conn[i].fd = -1;

	size_t in_cap = 16384 + (size_t)L->pipeline * 128;
	size_t out_cap = (size_t)L->pipeline * L->cmd_max;
	unsigned next = 0;
	for (unsigned ti = 0; ti < L->threads; ti++) {
		struct thr *t = &L->thr[ti];
		unsigned n = L->conns / L->threads + (ti < L->conns % L->threads);

		t->magic = THR_MAGIC;
		t->idx = ti;
		t->L = L;
		t->conns = &L->conn[next];
		t->nconn = t->live = n;
		t->rng = (L->seed + ti) * 0x9e3779b97f4a7c15ull | 1;
		tg_hist_reset(&t->ps[0].h);
		tg_hist_reset(&t->ps[1].h);
		tg_hist_reset(&t->late);
		tg_hist_reset(&t->lag);
		for (unsigned k = 0; k < n; k++, next++) {
			struct conn *c = &L->conn[next];
			c->magic = CONN_MAGIC;
			c->idx = next;
			c->in_cap = in_cap;
			c->out_cap = out_cap;
			c->in = malloc(in_cap);
			c->out = malloc(out_cap);
			c->fly = calloc(L->pipeline, sizeof(*c->fly));
			c->owed = calloc(L->pipeline, sizeof(*c->owed));
			if (!c->in || !c->out || !c->fly || !c->owed)
				goto nomem;
			c->quota = UINT64_MAX;
			if (L->count)
				c->quota = L->count / L->conns + (next < L->count % L->conns);
			c->idp_len =
			    (size_t)snprintf(c->idp, sizeof(c->idp), "%s.%u.", L->run_id, next);
			if (dial(L, c) != 0)
				return -1;
		}
	}
	return check_server(L, L->conn[0].fd);
nomem:
	fprintf(stderr, "tollbench load: out of memory for %u connections\n", L->conns);
	return -1;
}

static void
teardown(struct load *L)
{
	if (L->conn) {
		for (unsigned i = 0; i < L->conns; i++) {
			struct conn *c = &L->conn[i];
			if (c->fd >= 0)
				close(c->fd);
			free(c->in);
			free(c->out);
			free(c->fly);
			free(c->owed);
		}
	}
	free(L->conn);
	free(L->thr);
}

/* ---- reporting ---- */

/* Move src into dst and empty src. */
static void
take(struct pslot *dst, struct pslot *src)
{
	tg_hist_add(&dst->h, &src->h);
	dst->replies += src->replies;
	dst->errors += src->errors;
	tg_hist_reset(&src->h);
	src->replies = src->errors = 0;
}

/*
 * Everything the threads counted since the last call, into into: each
 * running thread is flipped to its other slot and the one it let go of is
 * read once it has acknowledged; a finished thread writes no more, so both
 * its slots are read.
 */
static void
collect(struct load *L, struct pslot *into)
{
	for (unsigned i = 0; i < L->threads; i++) {
		struct thr *t = &L->thr[i];

		if (__atomic_load_n(&t->done, __ATOMIC_ACQUIRE)) {
			take(into, &t->ps[0]);
			take(into, &t->ps[1]);
			continue;
		}
		unsigned old = t->phase, nw = old ^ 1;
		__atomic_store_n(&t->phase, nw, __ATOMIC_RELEASE);
		while (__atomic_load_n(&t->ack, __ATOMIC_ACQUIRE) != nw &&
		       !__atomic_load_n(&t->done, __ATOMIC_ACQUIRE)) {
			struct timespec ts = {.tv_nsec = 50000};
			nanosleep(&ts, NULL);
		}
		take(into, &t->ps[old]);
	}
}

static double
us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

static unsigned
threads_done(struct load *L)
{
	unsigned n = 0;
	for (unsigned i = 0; i < L->threads; i++)
		n += __atomic_load_n(&L->thr[i].done, __ATOMIC_ACQUIRE) != 0;
	return n;
}

/* Totals of the whole run, for the final report. */
struct totals {
	struct pslot all;   /* every answered request */
	struct tg_hist lat; /* all, plus the lower bounds of the unanswered and unsent */
	struct tg_hist lag; /* open loop: when each request went out - when it was due */
	struct errtab errs;
	uint64_t sent, unanswered, unsent, disconnects, end_ns;
};

static void
report_text(const struct load *L, const struct totals *T, double elapsed)
{
	char mix[64];
	const struct tg_hist *h = &T->lat;

	mix_string(L, mix, sizeof(mix));
	printf("target       %s %s:%s%s\n", target_names[L->target], L->host, L->port,
	       L->target == TARGET_REDIS    ? " (EVALSHA bench/baseline.lua instead of CDR)"
	       : L->target == TARGET_INCRBY ? " (INCRBY bal:<acct> instead of CDR)"
	                                    : "");
	printf("clients      %u threads, %u connections, pipeline %u, ", L->threads, L->conns,
	       L->pipeline);
	if (L->rate)
		printf("open loop at %" PRIu64 " req/s\n", L->rate);
	else
		printf("closed loop\n");
	printf("load         mix %s, accounts 0..%" PRIu64 " ", mix, L->accounts - 1);
	if (L->zipf)
		printf("zipf:%g", L->zipf_s);
	else
		printf("uniform");
	printf(", dest %s, secs %" PRIu64 ", run id %s\n", L->dest, L->secs, L->run_id);
	printf("requests     %" PRIu64 " answered in %.2f s (%" PRIu64 " sent, %" PRIu64
	       " unanswered, %" PRIu64 " due but unsent)\n",
	       T->all.replies, elapsed, T->sent, T->unanswered, T->unsent);
	printf("throughput   %.0f req/s\n", elapsed > 0 ? (double)T->all.replies / elapsed : 0.0);
	printf("errors       %" PRIu64, T->all.errors);
	for (unsigned i = 0; i < T->errs.n; i++)
		printf("%s%s %" PRIu64, i ? ", " : ": ", T->errs.e[i].code, T->errs.e[i].count);
	if (T->errs.other)
		printf(", OTHER %" PRIu64, T->errs.other);
	printf("\n");
	if (T->disconnects)
		printf("connections  %" PRIu64 " lost\n", T->disconnects);
	printf("latency      p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f us\n",
	       us(tg_hist_percentile(h, 50)), us(tg_hist_percentile(h, 90)),
	       us(tg_hist_percentile(h, 99)), us(tg_hist_percentile(h, 99.9)), us(h->max),
	       us(tg_hist_mean(h)));
	if (T->unanswered + T->unsent)
		printf("             (with the %" PRIu64
		       " requests never answered or never sent at "
		       "the time they had waited: lower bounds)\n",
		       T->unanswered + T->unsent);
	printf("             (%s)\n", L->rate
	                                  ? "from each request's scheduled send time to its reply"
	                                  : "from each request's send to its reply");
	if (L->rate)
		printf(
		    "send lag     p50 %.1f  p99 %.1f  max %.1f us (due to sent: waiting for a free "
		    "slot or for the client to run)\n",
		    us(tg_hist_percentile(&T->lag, 50)), us(tg_hist_percentile(&T->lag, 99)),
		    us(T->lag.max));
}

static void
report_json(const struct load *L, const struct totals *T, double elapsed)
{
	char mix[64];
	const struct tg_hist *h = &T->lat;

	mix_string(L, mix, sizeof(mix));
	printf("{\n");
	printf("  \"target\": \"%s\",\n  \"host\": \"%s\",\n  \"port\": %s,\n",
	       target_names[L->target], L->host, L->port);
	printf("  \"threads\": %u,\n  \"connections\": %u,\n  \"pipeline\": %u,\n", L->threads,
	       L->conns, L->pipeline);
	printf("  \"mode\": \"%s\",\n  \"rate\": %" PRIu64 ",\n", L->rate ? "open" : "closed",
	       L->rate);
	printf("  \"mix\": \"%s\",\n  \"accounts\": %" PRIu64 ",\n", mix, L->accounts);
	if (L->zipf)
		printf("  \"dist\": \"zipf:%g\",\n", L->zipf_s);
	else
		printf("  \"dist\": \"uniform\",\n");
	printf("  \"run_id\": \"%s\",\n  \"seconds\": %.3f,\n", L->run_id, elapsed);
	printf("  \"sent\": %" PRIu64 ",\n  \"requests\": %" PRIu64 ",\n", T->sent, T->all.replies);
	printf("  \"unanswered\": %" PRIu64 ",\n  \"unsent\": %" PRIu64 ",\n", T->unanswered,
	       T->unsent);
	printf("  \"disconnects\": %" PRIu64 ",\n", T->disconnects);
	printf("  \"throughput\": %.0f,\n", elapsed > 0 ? (double)T->all.replies / elapsed : 0.0);
	printf("  \"errors\": %" PRIu64 ",\n  \"errors_by_code\": {", T->all.errors);
	for (unsigned i = 0; i < T->errs.n; i++)
		printf("%s\"%s\": %" PRIu64, i ? ", " : "", T->errs.e[i].code, T->errs.e[i].count);
	if (T->errs.other)
		printf("%s\"OTHER\": %" PRIu64, T->errs.n ? ", " : "", T->errs.other);
	printf("},\n");
	printf("  \"latency_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, "
	       "\"max\": %.1f, \"mean\": %.1f},\n",
	       us(tg_hist_percentile(h, 50)), us(tg_hist_percentile(h, 90)),
	       us(tg_hist_percentile(h, 99)), us(tg_hist_percentile(h, 99.9)), us(h->max),
	       us(tg_hist_mean(h)));
	printf("  \"send_lag_us\": {\"p50\": %.1f, \"p99\": %.1f, \"max\": %.1f}\n",
	       us(tg_hist_percentile(&T->lag, 50)), us(tg_hist_percentile(&T->lag, 99)),
	       us(T->lag.max));
	printf("}\n");
}

/* One interval: a progress line on stderr, a row in the CSV. */
static void
report_second(const struct load *L, FILE *csv, unsigned sec, const struct pslot *s, uint64_t ns,
              int last)
{
	const struct tg_hist *h = &s->h;

	/* The tail after the last whole second (the drain) is too short for a
	 * rate: its count is shown instead.  The CSV keeps it as a last row. */
	if (!L->quiet && last && ns < SEC_NS)
		fprintf(stderr,
		        "tollbench load:  end %10" PRIu64 " replies errors %-6" PRIu64
		        "  p50 %8.1f us  p99 %8.1f us\n",
		        s->replies, s->errors, us(tg_hist_percentile(h, 50)),
		        us(tg_hist_percentile(h, 99)));
	else if (!L->quiet)
		fprintf(stderr,
		        "tollbench load: %4us %10.0f req/s  errors %-6" PRIu64
		        "  p50 %8.1f us  p99 %8.1f us\n",
		        sec, ns ? (double)s->replies * 1e9 / (double)ns : 0.0, s->errors,
		        us(tg_hist_percentile(h, 50)), us(tg_hist_percentile(h, 99)));
	if (csv)
		fprintf(csv, "%u,%" PRIu64 ",%.1f,%.1f,%.1f,%.1f,%.1f\n", sec, s->replies,
		        us(tg_hist_percentile(h, 50)), us(tg_hist_percentile(h, 90)),
		        us(tg_hist_percentile(h, 99)), us(tg_hist_percentile(h, 99.9)), us(h->max));
}

/* Start the threads, report each second until they are done, add up. */
static int
run(struct load *L, FILE *csv, struct totals *T)
{
	struct pslot *sec = calloc(1, sizeof(*sec));
	unsigned started = 0, failed = 0;

	if (sec == NULL)
		return -1;
	tg_hist_reset(&sec->h);
	for (; started < L->threads; started++)
		if (pthread_create(&L->thr[started].tid, NULL, thr_run, &L->thr[started]) != 0)
			break;
	while (__atomic_load_n(&L->ready, __ATOMIC_ACQUIRE) < started)
		sched_yield();
	for (unsigned i = 0; i < started; i++)
		failed += !L->thr[i].ring_ok;
	if (started < L->threads || failed) {
		__atomic_store_n(&L->go, -1, __ATOMIC_RELEASE);
		for (unsigned i = 0; i < started; i++)
			pthread_join(L->thr[i].tid, NULL);
		for (unsigned i = 0; i < started; i++)
			if (L->thr[i].failure[0])
				fprintf(stderr, "tollbench load: thread %u: %s\n", i,
				        L->thr[i].failure);
		if (started < L->threads)
			fprintf(stderr, "tollbench load: cannot start %u threads\n", L->threads);
		free(sec);
		return -1;
	}

	L->start_ns = tg_mono_ns();
	L->deadline_ns = L->seconds ? L->start_ns + L->seconds * SEC_NS : UINT64_MAX;
	__atomic_store_n(&L->go, 1, __ATOMIC_RELEASE);

	uint64_t prev = L->start_ns;
	for (unsigned k = 1;; k++) {
		uint64_t tick = L->start_ns + k * SEC_NS, now;
		int all = 0;
		/* Sleep to the next second, waking early when every thread is done. */
		while ((now = tg_mono_ns()) < tick && !(all = threads_done(L) == L->threads)) {
			uint64_t left = tick - now < 10000000 ? tick - now : 10000000;
			struct timespec ts = {.tv_nsec = (long)left};
			nanosleep(&ts, NULL);
		}
		all = threads_done(L) == L->threads;
		collect(L, sec);
		now = tg_mono_ns();
		if (!all || sec->replies > 0)
			report_second(L, csv, k, sec, now - prev, all);
		prev = now;
		take(&T->all, sec);
		if (all)
			break;
	}
	free(sec);

	tg_hist_add(&T->lat, &T->all.h);
	for (unsigned i = 0; i < L->threads; i++) {
		struct thr *t = &L->thr[i];
		pthread_join(t->tid, NULL);
		tg_hist_add(&T->lat, &t->late);
		tg_hist_add(&T->lag, &t->lag);
		T->sent += t->sent;
		T->unanswered += t->unanswered;
		T->unsent += t->unsent;
		T->disconnects += t->disconnects;
		/* The run ends at the last reply, or when sending stopped if
		 * that is later (a server that stopped answering). */
		if (t->last_reply_ns > T->end_ns)
			T->end_ns = t->last_reply_ns;
		if (t->stop_ns > T->end_ns)
			T->end_ns = t->stop_ns;
		for (unsigned e = 0; e < t->errs.n; e++)
			errtab_add(&T->errs, t->errs.e[e].code, strlen(t->errs.e[e].code),
			           t->errs.e[e].count);
		T->errs.other += t->errs.other;
		if (t->failure[0])
			fprintf(stderr, "tollbench load: thread %u: %s%s\n", i, t->failure,
			        t->disconnects > 1 ? " (and more)" : "");
	}
	return 0;
}

int
tg_bench_load(int argc, char **argv)
{
	struct load L;
	struct totals *T = NULL;
	FILE *csv = NULL;
	int rc = parse(&L, argc, argv);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (L.csv_path) {
		csv = fopen(L.csv_path, "w");
		if (csv == NULL) {
			fprintf(stderr, "tollbench load: %s: %s\n", L.csv_path, strerror(errno));
			return 1;
		}
		fprintf(csv, "second,requests,p50,p90,p99,p999,max\n");
	}
	signal(SIGPIPE, SIG_IGN);
	rc = 1;
	if (setup(&L) != 0)
		goto out;
	T = calloc(1, sizeof(*T));
	if (T == NULL)
		goto out;
	tg_hist_reset(&T->all.h);
	tg_hist_reset(&T->lat);
	tg_hist_reset(&T->lag);

	struct sigaction sa = {.sa_handler = on_sigint}, old;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old);
	int ran = run(&L, csv, T);
	sigaction(SIGINT, &old, NULL);
	if (ran != 0)
		goto out;

	uint64_t end = T->end_ns > L.start_ns ? T->end_ns : tg_mono_ns();
	double elapsed = (double)(end - L.start_ns) / 1e9;
	if (L.json)
		report_json(&L, T, elapsed);
	else
		report_text(&L, T, elapsed);
	fflush(stdout);
	rc = T->disconnects || T->unanswered || T->all.replies == 0 ? 1 : 0;
out:
	if (csv && fclose(csv) != 0) {
		fprintf(stderr, "tollbench load: %s: %s\n", L.csv_path, strerror(errno));
		rc = 1;
	}
	free(T);
	teardown(&L);
	return rc;
}
