/*
 * repl.c - replication (tg_repl.h, docs/HA.md): the node's histories, the
 * primary's senders and the replica's receiver.
 *
 * A primary: REPL.SYNC (cmd.c) asks tg_repl_sync where a replica's stream
 * starts; the connection then leaves request/reply (TG_NET_DETACH) and
 * tg_repl_take gives it two threads: a sender that reads the journal files
 * and sends each record once it is confirmed on disk (the snapshot and the
 * id runs first for a full copy), and an ack reader that records the LSN
 * the replica says it has on disk.  Batches that must wait for replicas
 * (min-replicas-to-write) wait in commit_wait on those acknowledgements.
 *
 * A replica: one receiver thread connects to the primary, sends REPL.SYNC
 * with its history and last LSN, and appends each record it receives to its
 * own journal with the same LSN and time (tg_jw_stage_at), then applies it
 * to its own state and puts the account into the live table for readers.
 * It acknowledges what its journal has on disk.
 *
 * Histories: each start of a primary begins a new history at the LSN after
 * its last (a random id, appended with that LSN to DIR/repl.history).  A
 * replica adopts its primary's histories as it follows them.  A replica
 * whose history the primary knows, and whose last LSN is at or before the
 * point where that history ended on the primary, continues; any other is
 * sent a full copy, after it has set its own files aside for an operator
 * (docs/HA.md, "Diverged histories").
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tg_assert.h"
#include "tg_datadir.h"
#include "tg_atomic.h"
#include "tg_clock.h"
#include "tg_log.h"
#include "tg_recover.h"
#include "tg_repl.h"
#include "tg_server.h"

#define HISTORY_FILE   "repl.history"
#define HISTORY_MAX    64 /* histories kept in the file: the newest */
#define SEND_BUF       (256 * 1024)
#define HEARTBEAT_MS   1000   /* a primary with nothing to send says so this often */
#define ACK_EVERY_MS   1000   /* a replica acknowledges at least this often */
#define LINK_TIMEOUT   10000  /* ms without a byte before a link counts as dead */
#define RETRY_MS       1000   /* a replica's wait between attempts to connect */
#define IDS_DROP_EVERY 100000 /* a replica's live state forgets its ids this often */
/* A replica commits what arrived together, up to this many records or bytes of payload. */
#define BATCH_MAX 4096
#define ARENA     (4u << 20)

struct history {
	char id[TG_REPL_ID_LEN + 1];
	uint64_t first; /* its first LSN */
};

/* One replica being served, on the primary. */
struct sender {
	struct tg_repl *r;
	int fd;
	int users; /* threads still using it (2, 1, 0: free); under r->mu */
	bool used;
	bool stop; /* either thread gave up: the other ends too */
	char ip[48];
	uint16_t port;
	uint64_t start;  /* the first LSN to send */
	bool full;       /* send the files first */
	uint64_t snap;   /* the snapshot's LSN (full) */
	uint64_t acked;  /* atomic: the last LSN on its disk */
	uint64_t ack_ms; /* atomic: monotonic ms of its last acknowledgement */
	bool online;     /* atomic: streaming records */
	pthread_t send_t, ack_t;
};

/*
 * A primary's gate (docs/HA.md, "Taking over an ahead replica's records"):
 * HELD from its start, with min-replicas-to-write under refuse, until that
 * many replicas stream from it: it writes nothing of its own, so a replica
 * ahead of it in the history it followed can still be taken over.  TAKING
 * while it appends such a replica's records (a restart in place follows).
 */
enum gate { GATE_OPEN = 0, GATE_HELD = 1, GATE_TAKING = 2 };

struct tg_repl {
	struct tg_server *srv;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* an acknowledgement came, or a sender ended */
	struct history hist[HISTORY_MAX];
	unsigned nhist;
	struct sender s[TG_REPL_REPLICAS_MAX];
	bool stop;
	/* min-replicas-to-write */
	uint32_t min;
	uint32_t timeout_ms;
	bool async_on_timeout;
	uint8_t gate;        /* atomic: enum gate; changed under mu */
	uint64_t taking_ms;  /* under mu: when GATE_TAKING was decided */
	uint16_t self_port;  /* under mu: the port this node serves (set once the network runs) */
	bool taker;          /* under mu: its thread took the connection */
	bool refusing;       /* atomic: money-moving commands refused until replicas catch up */
	uint64_t async_acks; /* atomic: batches acknowledged without their replicas */
	/* a replica */
	pthread_t recv_t;
	bool recv_started;
	int recv_fd; /* under mu: shut down to stop the receiver */
	char host[TG_REPL_HOST_MAX];
	uint16_t port;
	bool link_up;     /* atomic */
	uint64_t link_ms; /* atomic: when the link last went up or down */
	uint64_t io_ms;   /* atomic: the primary's last byte */
	bool syncing;     /* atomic: receiving files */
	struct tg_replay live;
	bool live_ok;
	struct tg_jstage stage;
	bool stage_ok;
};

/* ---- histories ---- */

/* Read DIR/repl.history into r->hist: one "<id> <first LSN>" a line, oldest first. */
static int
history_load(struct tg_repl *r, const char *dir)
{
	char path[TG_CFG_STR_MAX + 32], line[128];
	snprintf(path, sizeof(path), "%s/%s", dir, HISTORY_FILE);
	FILE *f = fopen(path, "r");

	r->nhist = 0;
	if (f == NULL)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), f) != NULL) {
		struct history h;
		char id[64];
		if (sscanf(line, "%63s %" SCNu64, id, &h.first) != 2 ||
		    strlen(id) != TG_REPL_ID_LEN) {
			fclose(f);
			tg_log("%s: a line is not \"<history id> <first LSN>\": %s", path, line);
			return -EPROTO;
		}
		memcpy(h.id, id, sizeof(h.id));
		if (r->nhist == HISTORY_MAX) {
			memmove(&r->hist[0], &r->hist[1], sizeof(h) * (HISTORY_MAX - 1));
			r->nhist--;
		}
		r->hist[r->nhist++] = h;
	}
	fclose(f);
	return 0;
}

/* Write r->hist to DIR/repl.history, whole (tg_datadir_write). */
static int
history_save(const struct tg_repl *r, const char *dir)
{
	char text[HISTORY_MAX * (TG_REPL_ID_LEN + 24)];
	size_t len = 0;
	for (unsigned i = 0; i < r->nhist; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len, "%s %" PRIu64 "\n",
		                        r->hist[i].id, r->hist[i].first);
	return tg_datadir_write(dir, HISTORY_FILE, text, len);
}

/* Append history id starting at first (an id already last is kept). */
static int
history_push(struct tg_repl *r, const char *dir, const char *id, uint64_t first)
{
	if (r->nhist > 0 && strcmp(r->hist[r->nhist - 1].id, id) == 0)
		return 0;
	if (r->nhist == HISTORY_MAX) {
		memmove(&r->hist[0], &r->hist[1], sizeof(r->hist[0]) * (HISTORY_MAX - 1));
		r->nhist--;
	}
	snprintf(r->hist[r->nhist].id, sizeof(r->hist[r->nhist].id), "%s", id);
	r->hist[r->nhist].first = first;
	r->nhist++;
	return history_save(r, dir);
}

static const char *
history_now(const struct tg_repl *r)
{
	return r->nhist ? r->hist[r->nhist - 1].id : "-";
}

/*
 * Where history id ended on this node: the LSN before the next history's
 * first, or last (this node's durable LSN) for the current one.  false when
 * this node never followed id.
 */
static bool
history_end(const struct tg_repl *r, const char *id, uint64_t last, uint64_t *end)
{
	for (unsigned i = 0; i < r->nhist; i++)
		if (strcmp(r->hist[i].id, id) == 0) {
			*end = i + 1 < r->nhist ? r->hist[i + 1].first - 1 : last;
			return true;
		}
	return false;
}

/*
 * No history starts past the journal's end: one that does (a takeover that
 * recorded where it would end, cut short by a crash) starts right after the
 * last record on disk, last + 1.  Saved when anything moved.  0 or -errno.
 */
static int
history_clamp(struct tg_repl *r, const char *dir, uint64_t last)
{
	bool moved = false;
	for (unsigned i = 0; i < r->nhist; i++)
		if (r->hist[i].first > last + 1) {
			r->hist[i].first = last + 1;
			moved = true;
		}
	return moved ? history_save(r, dir) : 0;
}

/* ---- small helpers ---- */

void
tg_repl_run_id(char id[TG_REPL_ID_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t b[TG_REPL_ID_LEN / 2];

	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		/* No entropy yet (early boot): time and pid still make a start unique. */
		uint64_t t = tg_clock_ns(CLOCK_REALTIME) ^ ((uint64_t)getpid() << 32);
		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = (uint8_t)(t >> (8 * (i % 8))) ^ (uint8_t)(i * 131);
	}
	for (size_t i = 0; i < sizeof(b); i++) {
		id[2 * i] = hex[b[i] >> 4];
		id[2 * i + 1] = hex[b[i] & 15];
	}
	id[TG_REPL_ID_LEN] = '\0';
}

/* Send all of p[0..n) (blocking); false when the peer is gone. */
static bool
send_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		c += k;
		n -= (size_t)k;
	}
	return true;
}

/* Read exactly n bytes (blocking); false at EOF or an error. */
static bool
recv_all(int fd, void *p, size_t n)
{
	char *c = p;
	while (n > 0) {
		ssize_t k = recv(fd, c, n, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		c += k;
		n -= (size_t)k;
	}
	return true;
}

/* Read one line ending in \n (no more than cap - 1 bytes) into buf, NUL-terminated, \r\n cut. */
static bool
recv_line(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	for (;;) {
		char ch;
		if (!recv_all(fd, &ch, 1))
			return false;
		if (ch == '\n')
			break;
		if (n + 1 >= cap)
			return false;
		buf[n++] = ch;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	return true;
}

static void
set_timeouts(int fd, uint32_t ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- the primary: where a replica's stream starts ---- */

/* The first LSN the journal in dir still holds (0: no segment). */
static uint64_t
journal_first(const char *dir)
{
	struct tg_journal_reader *jr;
	uint64_t first = 0;
	if (tg_journal_open_dir(&jr, dir) != 0)
		return 0;
	if (tg_journal_segments(jr) > 0)
		first = tg_journal_segment_lsn(jr, 0);
	tg_journal_close(jr);
	return first;
}

int
tg_repl_sync(struct tg_server *srv, struct tg_repl_sync *q, char *reply, size_t cap)
{
	struct tg_repl *r = srv->repl;

	if (r == NULL || srv->dur.jw == NULL) {
		snprintf(reply, cap,
		         "-ERR replication needs a journal (durability durable or "
		         "relaxed)\r\n");
		return -EINVAL;
	}
	if (tg_repl_readonly(srv)) {
		snprintf(reply, cap, "-ERR this node is a replica: follow its primary\r\n");
		return -EINVAL;
	}
	uint64_t durable = tg_jw_durable(srv->dur.jw), end = 0;
	uint64_t first = journal_first(srv->cfg.data_dir);
	pthread_mutex_lock(&r->mu);
	bool known = history_end(r, q->history, durable, &end);
	const char *now = history_now(r);
	char id[TG_REPL_ID_LEN + 1];
	snprintf(id, sizeof(id), "%s", now);
	uint8_t gate = tg_load_8(&r->gate);
	/*
	 * Ahead of this node in a history this node followed and left, with
	 * nothing written here since: the records past this node's end of that
	 * history are its old primary's, which this node never received.  They
	 * are taken over rather than set aside (docs/HA.md).
	 */
	q->ahead = gate == GATE_HELD && known && q->lsn > end && end == durable &&
	           strcmp(q->history, now) != 0 && r->stage_ok;
	if (q->ahead) {
		tg_store_8(&r->gate, GATE_TAKING);
		r->taking_ms = tg_mono_ms();
		r->taker = false;
	}
	pthread_mutex_unlock(&r->mu);

	if (gate == GATE_TAKING) {
		snprintf(reply, cap,
		         "-ERR taking over records from another replica: try again\r\n");
		return -EAGAIN;
	}
	if (q->ahead) {
		q->full = false;
		q->start = end + 1;
		snprintf(reply, cap, "+AHEAD %" PRIu64 " %" PRIu64 "\r\n", q->start, q->lsn);
		return 0;
	}

	/* A new replica, and a journal that still starts at the beginning: no copy needed. */
	bool empty = q->lsn == 0 && first == 1 && strcmp(q->history, "-") == 0;
	if (((known && q->lsn <= end) || empty) && q->lsn <= durable && first != 0 &&
	    q->lsn + 1 >= first) {
		q->full = false;
		q->start = q->lsn + 1;
		snprintf(reply, cap, "+CONTINUE %s %" PRIu64 "\r\n", id, q->start);
		return 0;
	}
	if (known && q->lsn > end) {
		/* It holds records this node never had: it sets them aside, then asks again. */
		snprintf(reply, cap, "+DIVERGED %" PRIu64 "\r\n", end);
		return -EAGAIN;
	}
	/* A full copy: the newest snapshot (if any) and the id runs, then the journal after. */
	q->full = true;
	q->snap = srv->dur.snap_lsn;
	if (q->snap == 0 && first > 1) {
		snprintf(reply, cap,
		         "-ERR no snapshot yet and the journal no longer starts at LSN "
		         "1: try again after the next snapshot\r\n");
		return -EAGAIN;
	}
	q->start = q->snap + 1;
	snprintf(reply, cap, "+FULL %s %" PRIu64 "\r\n", id, q->snap);
	return 0;
}

/* ---- the primary: a sender and its ack reader ---- */

static void
sender_release(struct sender *s)
{
	struct tg_repl *r = s->r;
	pthread_mutex_lock(&r->mu);
	tg_store_8((uint8_t *)&s->stop, 1);
	shutdown(s->fd, SHUT_RDWR);
	if (--s->users == 0) {
		close(s->fd);
		s->fd = -1;
		tg_store_8((uint8_t *)&s->used, 0);
		tg_store_8((uint8_t *)&s->online, 0);
		tg_log("replication: replica %s:%u gone", s->ip, s->port);
	}
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* Send file dir/name as "$<name> <size>\r\n" and its bytes.  false (logged) on failure. */
static bool
send_file(struct sender *s, const char *dir, const char *name)
{
	char path[TG_CFG_STR_MAX + 300], head[128];
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return false;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		tg_log("replication: cannot read %s for replica %s:%u: %s", path, s->ip, s->port,
		       strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	int n = snprintf(head, sizeof(head), "$%s %lld\r\n", name, (long long)st.st_size);
	bool ok = send_all(s->fd, head, (size_t)n);
	char buf[65536];
	off_t left = st.st_size;
	while (ok && left > 0) {
		ssize_t k = read(fd, buf, sizeof(buf) < (size_t)left ? sizeof(buf) : (size_t)left);
		if (k <= 0) {
			ok = false;
			break;
		}
		ok = send_all(s->fd, buf, (size_t)k);
		left -= k;
	}
	close(fd);
	return ok;
}

/*
 * A full copy's files: the snapshot at s->snap and every id run, counted
 * first ("*<n>\r\n").  Runs are immutable; one merged away between the
 * listing and its open makes the listing start over.
 */
static bool
send_files(struct sender *s, const char *dir)
{
	char names[512][64];
	unsigned n = 0;
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d == NULL)
		return false;
	if (s->snap != 0)
		snprintf(names[n++], sizeof(names[0]), "snapshot-%016" PRIx64 ".tgs", s->snap);
	while ((e = readdir(d)) != NULL && n < 512) {
		size_t l = strlen(e->d_name);
		if (strncmp(e->d_name, "ids-", 4) == 0 && l > 4 && l < 64 &&
		    strcmp(e->d_name + l - 4, ".tgi") == 0)
			snprintf(names[n++], sizeof(names[0]), "%s", e->d_name);
	}
	closedir(d);
	char head[32];
	int k = snprintf(head, sizeof(head), "*%u\r\n", n);
	if (!send_all(s->fd, head, (size_t)k))
		return false;
	for (unsigned i = 0; i < n; i++)
		if (!send_file(s, dir, names[i]))
			return false;
	return true;
}

/* Encode rec into buf at *len; flush buf to the replica when it is nearly full. */
static bool
send_record(struct sender *s, char *buf, size_t *len, const struct tg_jrec *rec)
{
	size_t need = tg_journal_rec_size(rec->len);
	if (*len + need > SEND_BUF) {
		if (!send_all(s->fd, buf, *len))
			return false;
		*len = 0;
	}
	ssize_t n = tg_journal_encode(buf + *len, SEND_BUF - *len, rec->type, rec->lsn, rec->time,
	                              rec->payload, rec->len);
	TG_ASSERT(n > 0);
	*len += (size_t)n;
	return true;
}

/* A heartbeat: a CONFIRM record of the primary's durable LSN (never written by a replica). */
static bool
send_heartbeat(struct sender *s, uint64_t durable)
{
	char buf[TG_JOURNAL_CONFIRM_SIZE];
	struct tg_jrec_confirm c = {.lsn = durable};
	ssize_t n = tg_journal_encode(buf, sizeof(buf), TG_JREC_CONFIRM, durable,
	                              (int64_t)tg_clock_ns(CLOCK_REALTIME), &c, sizeof(c));
	return n > 0 && send_all(s->fd, buf, (size_t)n);
}

static void *
send_main(void *arg)
{
	struct sender *s = arg;
	struct tg_server *srv = s->r->srv;
	const char *dir = srv->cfg.data_dir;
	char *buf = malloc(SEND_BUF);
	uint64_t next = s->start, last_send = tg_mono_ms();
	size_t len = 0;

	if (buf == NULL || (s->full && !send_files(s, dir)))
		goto out;
	tg_store_8((uint8_t *)&s->online, 1);
	tg_log("replication: replica %s:%u streaming from LSN %" PRIu64 "%s", s->ip, s->port, next,
	       s->full ? " after a full copy" : "");
	/*
	 * One reader for the whole stream, followed as the journal grows.  What
	 * is synced is sent (it survives a crash of this node); acknowledging a
	 * change still waits for its CONFIRM here and for the replica's.
	 */
	struct tg_journal_reader *jr = NULL;
	bool at_end = false;
	while (!tg_load_8((uint8_t *)&s->stop) && !tg_load_8((uint8_t *)&s->r->stop)) {
		struct tg_jrec rec;
		uint64_t upto = tg_jw_wait_synced(srv->dur.jw, next - 1, 100);
		if (upto < next) {
			if (tg_mono_ms() - last_send >= HEARTBEAT_MS) {
				if (!send_heartbeat(s, tg_jw_durable(srv->dur.jw)))
					break;
				last_send = tg_mono_ms();
			}
			continue;
		}
		if (jr != NULL && at_end && tg_journal_follow(jr) != 0) {
			tg_journal_close(jr); /* its segment was pruned: open the journal again */
			jr = NULL;
		}
		at_end = false;
		if (jr == NULL) {
			if (tg_journal_open_dir(&jr, dir) != 0)
				break;
			tg_journal_seek(jr, next);
		}
		enum tg_journal_status st = TG_JOURNAL_OK;
		bool ok = true;
		while (ok && next <= upto && (st = tg_journal_next(jr, &rec)) == TG_JOURNAL_OK) {
			if (rec.lsn < next)
				continue;
			ok = send_record(s, buf, &len, &rec);
			next = rec.lsn + 1;
		}
		if (!ok || (len > 0 && !send_all(s->fd, buf, len)))
			break;
		len = 0;
		last_send = tg_mono_ms();
		/* The end of what the files held when mapped: look again next time. */
		at_end = st == TG_JOURNAL_END || st == TG_JOURNAL_TORN_TAIL;
		if (next <= upto && !at_end) {
			/* Damaged, or pruned under the replica: it asks again (a full copy). */
			tg_log("replication: the journal cannot be read at LSN %" PRIu64
			       " for replica %s:%u (%s); it will ask again",
			       next, s->ip, s->port, tg_journal_status_name(st));
			break;
		}
	}
	tg_journal_close(jr);
out:
	free(buf);
	sender_release(s);
	return NULL;
}

/* The replica's acknowledgements: "ACK <lsn>" lines. */
static void *
ack_main(void *arg)
{
	struct sender *s = arg;
	struct tg_repl *r = s->r;
	char line[64];

	while (recv_line(s->fd, line, sizeof(line))) {
		uint64_t lsn;
		if (sscanf(line, "ACK %" SCNu64, &lsn) != 1)
			break;
		pthread_mutex_lock(&r->mu);
		if (lsn > tg_load_64(&s->acked))
			tg_store_64(&s->acked, lsn);
		tg_store_64(&s->ack_ms, tg_mono_ms());
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
	}
	sender_release(s);
	return NULL;
}

/* ---- the primary: taking an ahead replica's records over ---- */

/* A replica that holds records of this node's old primary this node never had. */
struct taker {
	struct tg_repl *r;
	int fd;
	char ip[48];
	uint16_t port;
	char history[TG_REPL_ID_LEN + 1];
	uint64_t from, upto; /* the records to take: its LSNs from..upto of history */
};

/*
 * Every history this node began after history id starts at first (under
 * r->mu): what this node holds of id then ends at first - 1.  0 or -errno.
 */
static int
history_move_after(struct tg_repl *r, const char *id, uint64_t first)
{
	bool after = false;
	for (unsigned i = 0; i < r->nhist; i++) {
		if (after)
			r->hist[i].first = first;
		after = after || strcmp(r->hist[i].id, id) == 0;
	}
	return history_save(r, r->srv->cfg.data_dir);
}

/*
 * The records taken are in the journal but not in the engine (the table,
 * the calls in progress, the ids): the node starts again from its journal,
 * as after a crash (no clean stop: the table is not the journal's).
 */
static void
restart_from_journal(struct tg_repl *r)
{
	struct tg_server *srv = r->srv;
	pthread_mutex_lock(&r->mu);
	uint16_t port = r->self_port;
	pthread_mutex_unlock(&r->mu);
	/* The records taken are in the journal alone: a snapshot holds them before the restart. */
	tg_durable_settle(srv);
	tg_log("replication: restarting in place on port %u", port);
	if (srv->restart_exec != NULL)
		srv->restart_exec(srv);
	tg_log("replication: cannot restart in place: exiting");
	_exit(1);
}

/*
 * Receive the replica's records t->from..t->upto (the journal's own bytes,
 * as a primary streams them), check each one's checksum and LSN, and append
 * them to this journal with their LSNs and original times.  First the
 * histories this node began since are moved past t->upto (so a crash in the
 * middle leaves them past the journal's end, and the next start brings them
 * back to it: the takeover resumes from there).  Then "+TAKEN <lsn>" and a
 * restart in place, from the journal.
 */
static void *
take_main(void *arg)
{
	struct taker *t = arg;
	struct tg_repl *r = t->r;
	struct tg_jw *jw = r->srv->dur.jw;
	char *payload = malloc(TG_JOURNAL_PAYLOAD_MAX + 8);
	uint64_t got = t->from - 1; /* the last LSN taken on disk */
	unsigned npend = 0;
	const char *why = NULL;

	tg_log("replication: replica %s:%u holds LSN %" PRIu64 "..%" PRIu64 " of history %s, "
	       "its old primary's, which this node never had: taking them over",
	       t->ip, t->port, t->from, t->upto, t->history);
	pthread_mutex_lock(&r->mu);
	int rc = history_move_after(r, t->history, t->upto + 1);
	pthread_mutex_unlock(&r->mu);
	if (rc != 0)
		why = "cannot write the histories";
	if (payload == NULL)
		why = "out of memory";
	while (why == NULL && got < t->upto) {
		struct tg_jrec_hdr h;
		if (!recv_all(t->fd, &h, sizeof(h)) || h.len > TG_JOURNAL_PAYLOAD_MAX ||
		    !recv_all(t->fd, payload, tg_journal_rec_size(h.len) - sizeof(h))) {
			why = "the replica's link broke";
			break;
		}
		uint32_t crc = tg_crc32c(0, (const char *)&h + 8, sizeof(h) - 8);
		if (tg_crc32c(crc, payload, h.len) != h.crc) {
			why = "a record fails its checksum";
			break;
		}
		if (h.type == TG_JREC_CONFIRM)
			continue;
		unsigned v = h.len == tg_journal_payload_size(h.type) ? 1 : 2;
		if (h.lsn != got + npend + 1 || h.lsn > t->upto || h.len > TG_JSTAGE_PAYLOAD ||
		    !tg_journal_payload_ok(h.type, v, payload, h.len)) {
			why = "a record is out of sequence or malformed";
			break;
		}
		tg_jw_stage_at(jw, &r->stage, h.type, payload, h.len, h.time);
		npend++;
		/* What arrived together is one write and one sync. */
		struct pollfd p = {.fd = t->fd, .events = POLLIN};
		if (npend < BATCH_MAX && h.lsn < t->upto && poll(&p, 1, 0) == 1)
			continue;
		uint64_t last = tg_jw_commit_at(jw, &r->stage, got + 1);
		if (last != got + npend) {
			why = "this node wrote a record of its own meanwhile";
			npend = 0;
			break;
		}
		got = last;
		npend = 0;
	}
	if (npend > 0) {
		uint64_t last = tg_jw_commit_at(jw, &r->stage, got + 1);
		if (last == got + npend)
			got = last;
	}
	free(payload);
	if (got > t->from - 1 && tg_jw_mode(jw) != TG_DURABLE)
		tg_jw_sync(jw);
	if (why == NULL) {
		char line[64];
		int n = snprintf(line, sizeof(line), "+TAKEN %" PRIu64 "\r\n", got);
		send_all(t->fd, line, (size_t)n);
		tg_log("replication: LSN %" PRIu64 "..%" PRIu64 " of history %s taken over from "
		       "replica %s:%u: restarting in place from the journal",
		       t->from, got, t->history, t->ip, t->port);
		restart_from_journal(r);
	}
	shutdown(t->fd, SHUT_RDWR);
	close(t->fd);
	/* Short: what is on disk is all that was taken; the histories say so. */
	pthread_mutex_lock(&r->mu);
	rc = history_move_after(r, t->history, got + 1);
	if (got == t->from - 1 && rc == 0)
		tg_store_8(&r->gate, GATE_HELD); /* nothing taken: as before */
	pthread_mutex_unlock(&r->mu);
	if (got == t->from - 1 && rc == 0) {
		tg_log("replication: taking over from replica %s:%u failed (%s); nothing was "
		       "taken",
		       t->ip, t->port, why);
		free(t);
		return NULL;
	}
	tg_log("replication: taking over from replica %s:%u stopped at LSN %" PRIu64
	       " (%s): restarting in place from the journal; it resumes when the replica asks "
	       "again",
	       t->ip, t->port, got, why);
	restart_from_journal(r);
	return NULL;
}

/* Hand fd to a taker thread for q's records.  On failure the gate opens to takeovers again. */
static void
take_over(struct tg_repl *r, const struct tg_repl_sync *q, const char *ip, int fd)
{
	struct taker *t = calloc(1, sizeof(*t));
	pthread_t th;

	if (t != NULL) {
		t->r = r;
		t->fd = fd;
		snprintf(t->ip, sizeof(t->ip), "%s", ip);
		t->port = q->port;
		snprintf(t->history, sizeof(t->history), "%s", q->history);
		t->from = q->start;
		t->upto = q->lsn;
		struct timeval tv = {.tv_sec = LINK_TIMEOUT / 1000};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		pthread_mutex_lock(&r->mu);
		r->taker = true;
		pthread_mutex_unlock(&r->mu);
		if (pthread_create(&th, NULL, take_main, t) == 0) {
			pthread_detach(th);
			return;
		}
		free(t);
	}
	tg_log("replication: cannot take over the records of replica %s:%u", ip, q->port);
	close(fd);
	pthread_mutex_lock(&r->mu);
	tg_store_8(&r->gate, GATE_HELD);
	pthread_mutex_unlock(&r->mu);
}

void
tg_repl_take(struct tg_server *srv, const struct tg_repl_sync *q, const char *ip, int fd)
{
	struct tg_repl *r = srv->repl;
	struct sender *s = NULL;

	if (q->ahead) {
		take_over(r, q, ip, fd);
		return;
	}

	pthread_mutex_lock(&r->mu);
	/*
	 * The same replica (address and serving port) connected again: its old
	 * link, however alive it looks, is done.  Left open, it would count as a
	 * second replica toward min-replicas-to-write until TCP gave up on it.
	 */
	for (unsigned i = 0; i < TG_REPL_REPLICAS_MAX; i++) {
		struct sender *o = &r->s[i];
		if (o->used && !o->stop && q->port != 0 && o->port == q->port &&
		    strcmp(o->ip, ip) == 0) {
			tg_store_8((uint8_t *)&o->stop, 1);
			shutdown(o->fd, SHUT_RDWR);
			tg_log("replication: replica %s:%u connected again: its old link closed",
			       ip, q->port);
		}
	}
	for (unsigned i = 0; i < TG_REPL_REPLICAS_MAX && s == NULL; i++)
		if (!r->s[i].used)
			s = &r->s[i];
	if (s != NULL) {
		/* used, stop and online are read without the lock (streaming): atomic stores. */
		s->r = r;
		tg_store_8((uint8_t *)&s->stop, 0);
		tg_store_8((uint8_t *)&s->online, 0);
		tg_store_8((uint8_t *)&s->used, 1);
		s->users = 2;
		s->fd = fd;
		snprintf(s->ip, sizeof(s->ip), "%s", ip);
		s->port = q->port;
		s->start = q->start;
		s->full = q->full;
		s->snap = q->snap;
		tg_store_64(&s->ack_ms, tg_mono_ms());
		tg_store_64(&s->acked, q->full ? 0 : q->start - 1);
	}
	pthread_mutex_unlock(&r->mu);
	if (s == NULL) {
		tg_log("replication: a replica from %s refused: %u replicas already", ip,
		       TG_REPL_REPLICAS_MAX);
		close(fd);
		return;
	}
	set_timeouts(fd, LINK_TIMEOUT);
	/* The ack reader blocks in recv: no receive timeout for it. */
	struct timeval none = {0, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
	if (pthread_create(&s->send_t, NULL, send_main, s) != 0) {
		s->users = 1;
		sender_release(s);
		return;
	}
	pthread_detach(s->send_t);
	if (pthread_create(&s->ack_t, NULL, ack_main, s) != 0) {
		sender_release(s);
		return;
	}
	pthread_detach(s->ack_t);
}

/* ---- the primary: a batch waits for its replicas ---- */

/* Replicas with lsn on their disk; under r->mu. */
static unsigned
holders(struct tg_repl *r, uint64_t lsn)
{
	unsigned n = 0;
	for (unsigned i = 0; i < TG_REPL_REPLICAS_MAX; i++)
		if (r->s[i].used && !r->s[i].stop && tg_load_64(&r->s[i].acked) >= lsn)
			n++;
	return n;
}

static void
commit_wait(void *arg, uint64_t lsn)
{
	struct tg_repl *r = arg;
	struct timespec ts;
	bool told = false;

	if (r->min == 0)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)r->timeout_ms * 1000000u;
	ts.tv_sec += (time_t)(ns / 1000000000u);
	ts.tv_nsec = (long)(ns % 1000000000u);
	pthread_mutex_lock(&r->mu);
	while (holders(r, lsn) < r->min) {
		if (r->stop) {
			/*
			 * Stopping, and this batch is on this node alone: its replies
			 * must not say done.  The journal has it; a restart recovers it.
			 */
			struct tg_server *srv = r->srv;
			bool again =
			    tg_load_8((uint8_t *)&srv->restart) && srv->restart_exec != NULL;
			tg_log("replication: stopping with LSN %" PRIu64 " on fewer than "
			       "min-replicas-to-write %u replicas: %s without replying",
			       lsn, r->min, again ? "restarting in place at once" : "exiting");
			/*
			 * A change of role (REPLICAOF) asked for this stop: the node must
			 * come back in its new role, as after a crash (the journal has the
			 * batch; a demoted node sets it aside if its new primary never had
			 * it), not stay down until someone starts it again.
			 */
			if (again)
				srv->restart_exec(srv);
			_exit(1);
		}
		if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == 0)
			continue;
		/* Past min-replicas-timeout. */
		if (r->async_on_timeout) {
			ck_pr_inc_64(&r->async_acks);
			break;
		}
		/*
		 * refuse: nothing is acknowledged that one node alone holds.  New
		 * money-moving commands are refused at once meanwhile, and this
		 * batch waits on (its replies never say done before it is
		 * replicated: its client times out and retries, by id).
		 */
		if (!tg_load_8((uint8_t *)&r->refusing)) {
			tg_store_8((uint8_t *)&r->refusing, 1);
			tg_log("replication: fewer than min-replicas-to-write %u replicas hold LSN "
			       "%" PRIu64
			       " after %u ms: refusing money-moving commands (NOREPLICAS) "
			       "until they catch up",
			       r->min, lsn, r->timeout_ms);
		}
		told = true;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
	}
	if (holders(r, lsn) >= r->min && tg_load_8((uint8_t *)&r->refusing) &&
	    holders(r, tg_jw_durable(r->srv->dur.jw)) >= r->min) {
		tg_store_8((uint8_t *)&r->refusing, 0);
		tg_log("replication: %u replicas hold everything again: money-moving commands "
		       "accepted",
		       r->min);
	}
	pthread_mutex_unlock(&r->mu);
	(void)told;
}

/* Replicas streaming now (a hint, read without the lock). */
static unsigned
streaming(const struct tg_repl *r)
{
	unsigned n = 0;
	for (unsigned i = 0; i < TG_REPL_REPLICAS_MAX; i++)
		n += tg_load_8((uint8_t *)&r->s[i].used) && !tg_load_8((uint8_t *)&r->s[i].stop) &&
		     tg_load_8((uint8_t *)&r->s[i].online);
	return n;
}

bool
tg_repl_holding(const struct tg_server *srv)
{
	struct tg_repl *r = srv->repl;
	if (r == NULL || tg_load_8(&r->gate) == GATE_OPEN)
		return false;
	if (tg_load_8(&r->gate) == GATE_TAKING) {
		/* A takeover decided whose connection never reached its thread: none. */
		pthread_mutex_lock(&r->mu);
		if (tg_load_8(&r->gate) == GATE_TAKING && !r->taker &&
		    tg_mono_ms() - r->taking_ms > LINK_TIMEOUT) {
			tg_store_8(&r->gate, GATE_HELD);
			tg_log("replication: the replica to take records over from never came: "
			       "holding "
			       "back again");
		}
		pthread_mutex_unlock(&r->mu);
		return true;
	}
	if (streaming(r) < r->min)
		return true;
	/* Enough replicas stream, none was ahead (or it was taken over): this node's own now. */
	pthread_mutex_lock(&r->mu);
	if (tg_load_8(&r->gate) == GATE_HELD && streaming(r) >= r->min) {
		tg_store_8(&r->gate, GATE_OPEN);
		tg_log("replication: %u replica%s from this node: taking changes", r->min,
		       r->min == 1 ? " streams" : "s stream");
	}
	pthread_mutex_unlock(&r->mu);
	return tg_load_8(&r->gate) != GATE_OPEN;
}

bool
tg_repl_refusing(const struct tg_server *srv)
{
	const struct tg_repl *r = srv->repl;
	if (r == NULL || r->min == 0)
		return false;
	if (tg_repl_holding(srv))
		return true;
	/*
	 * refuse, and fewer replicas streaming than the batch would wait for:
	 * refused at once, as Redis refuses.  Taken, the change would hold its
	 * worker in commit_wait until a replica comes, and with it every
	 * connection of that worker, Sentinel's PING among them: a primary
	 * just promoted, whose replicas are still restarting to follow it,
	 * looked down and was failed over again.
	 */
	if (!r->async_on_timeout && streaming(r) < r->min)
		return true;
	if (!tg_load_8((uint8_t *)&r->refusing))
		return false;
	/* Replicas that caught up lift it on the next look, without waiting for a batch. */
	struct tg_repl *w = (struct tg_repl *)(uintptr_t)r;
	pthread_mutex_lock(&w->mu);
	if (holders(w, tg_jw_durable(srv->dur.jw)) >= w->min) {
		tg_store_8((uint8_t *)&w->refusing, 0);
		tg_log("replication: %u replicas hold everything again: money-moving commands "
		       "accepted",
		       w->min);
	}
	pthread_mutex_unlock(&w->mu);
	return tg_load_8((uint8_t *)&w->refusing);
}

/* ---- the replica: the receiver ---- */

/* Connect to host:port; the fd, or -errno. */
static int
dial(const char *host, uint16_t port)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai, *p;
	char ps[8];
	snprintf(ps, sizeof(ps), "%u", port);
	int rc = getaddrinfo(host, ps, &hints, &ai);
	if (rc != 0)
		return -EHOSTUNREACH;
	int fd = -ECONNREFUSED;
	for (p = ai; p != NULL; p = p->ai_next) {
		fd = socket(p->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		set_timeouts(fd, LINK_TIMEOUT);
		if (connect(fd, p->ai_addr, p->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -errno;
	}
	freeaddrinfo(ai);
	return fd;
}

/* One RESP command of argc C strings; false when it cannot be sent. */
static bool
send_cmd(int fd, int argc, const char *const *argv)
{
	char buf[1024];
	size_t n = (size_t)snprintf(buf, sizeof(buf), "*%d\r\n", argc);
	for (int i = 0; i < argc; i++) {
		size_t l = strlen(argv[i]);
		if (n + l + 32 > sizeof(buf))
			return false;
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "$%zu\r\n", l);
		memcpy(buf + n, argv[i], l);
		n += l;
		memcpy(buf + n, "\r\n", 2);
		n += 2;
	}
	return send_all(fd, buf, n);
}

static void
ack(struct tg_repl *r, int fd)
{
	char line[48];
	int n = snprintf(line, sizeof(line), "ACK %" PRIu64 "\n", tg_jw_durable(r->srv->dur.jw));
	send_all(fd, line, (size_t)n);
}

/* Apply one received record to the live state and put its account into the table. */
static int
apply(struct tg_repl *r, const struct tg_jrec *rec)
{
	char err[200];
	int rc = tg_replay_apply(&r->live, rec);
	if (rc != 0) {
		tg_log("replication: record LSN %" PRIu64 " cannot be applied (%s): stopping the "
		       "link",
		       rec->lsn, strerror(-rc));
		return rc;
	}
	if (rec->len >= sizeof(uint64_t)) {
		uint64_t acct;
		memcpy(&acct, rec->payload, sizeof(acct));
		rc = tg_recover_put_live(&r->srv->table, &r->live, acct, err, sizeof(err));
		if (rc != 0 && rc != -ENOENT) {
			tg_log("replication: %s", err);
			return rc;
		}
	}
	return 0;
}

static bool
always(void *arg, const struct tg_rid *id)
{
	(void)arg;
	(void)id;
	return true;
}

/*
 * The stream after CONTINUE: records, each appended to this node's journal
 * with its LSN and time, applied, acknowledged.  Returns when the link
 * breaks or the node stops.
 */
static void
stream(struct tg_repl *r, int fd)
{
	struct tg_jw *jw = r->srv->dur.jw;
	char *payload = malloc(TG_JOURNAL_PAYLOAD_MAX + 8);
	struct tg_jrec *pend = malloc(BATCH_MAX * sizeof(*pend));
	char *pbuf = malloc(ARENA);
	unsigned npend = 0;
	size_t used = 0; /* bytes of pbuf holding pend's payloads */
	uint64_t last_ack = 0, since_drop = 0;

	if (payload == NULL || pbuf == NULL || pend == NULL)
		goto out;
	while (!tg_load_8((uint8_t *)&r->stop)) {
		struct tg_jrec_hdr h;
		if (!recv_all(fd, &h, sizeof(h)))
			break;
		tg_store_64(&r->io_ms, tg_mono_ms());
		size_t body = tg_journal_rec_size(h.len) - sizeof(h);
		if (h.len > TG_JOURNAL_PAYLOAD_MAX || !recv_all(fd, payload, body))
			break;
		uint32_t crc = tg_crc32c(0, (const char *)&h + 8, sizeof(h) - 8);
		crc = tg_crc32c(crc, payload, h.len);
		if (crc != h.crc) {
			tg_log("replication: a record from the primary fails its checksum (LSN "
			       "%" PRIu64 "): reconnecting",
			       h.lsn);
			break;
		}
		if (h.type != TG_JREC_CONFIRM) {
			uint64_t next = tg_jw_last(jw) + npend + 1;
			if (h.lsn != next) {
				tg_log("replication: the primary sent LSN %" PRIu64
				       ", this journal "
				       "expects %" PRIu64 ": reconnecting",
				       h.lsn, next);
				break;
			}
			char *keep = pbuf + used;
			memcpy(keep, payload, h.len);
			used += (h.len + 7u) & ~7u;
			pend[npend++] = (struct tg_jrec){.lsn = h.lsn,
			                                 .time = h.time,
			                                 .type = h.type,
			                                 .version = h.version,
			                                 .len = h.len,
			                                 .payload = keep};
			tg_jw_stage_at(jw, &r->stage, h.type, payload, h.len, h.time);
		}
		/* More bytes waiting: take them into the same commit (group commit, here too). */
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (npend < BATCH_MAX && used + TG_JOURNAL_PAYLOAD_MAX <= ARENA &&
		    h.type != TG_JREC_CONFIRM && poll(&p, 1, 0) == 1)
			continue;
		if (npend > 0) {
			uint64_t got = tg_jw_commit(jw, &r->stage);
			TG_ASSERT(got == pend[npend - 1].lsn);
			bool ok = true;
			for (unsigned i = 0; i < npend && ok; i++)
				ok = apply(r, &pend[i]) == 0;
			since_drop += npend;
			npend = 0;
			used = 0;
			if (!ok)
				break;
			if (since_drop >= IDS_DROP_EVERY) {
				/* The live state serves the table: its ids are the journal's
				 * business. */
				tg_replay_ids_drop(&r->live, always, NULL);
				since_drop = 0;
			}
		}
		if (tg_jw_mode(jw) == TG_DURABLE || tg_mono_ms() - last_ack >= ACK_EVERY_MS ||
		    h.type == TG_JREC_CONFIRM) {
			ack(r, fd);
			last_ack = tg_mono_ms();
		}
	}
out:
	if (npend > 0)
		tg_jw_commit(jw, &r->stage);
	free(payload);
	free(pbuf);
	free(pend);
}

static void
link_set(struct tg_repl *r, bool up)
{
	if (tg_load_8((uint8_t *)&r->link_up) != up) {
		tg_store_8((uint8_t *)&r->link_up, up);
		tg_store_64(&r->link_ms, tg_mono_ms());
		tg_log("replication: link to primary %s:%u %s", r->host, r->port,
		       up ? "up" : "down");
	}
}

/* Sleep ms, or less when the node stops. */
static void
nap(struct tg_repl *r, uint32_t ms)
{
	for (uint32_t t = 0; t < ms && !tg_load_8((uint8_t *)&r->stop); t += 50) {
		struct timespec ts = {0, 50 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

#define RESET_FILE   "repl.reset"
#define INCOMING_DIR "repl-incoming"

/* Write DIR/repl.reset saying why, whole (tg_datadir_write). */
static int
mark_reset(const char *dir, const char *why)
{
	char text[512];
	int n = snprintf(text, sizeof(text), "%s\n", why);
	return tg_datadir_write(dir, RESET_FILE, text,
	                        (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1);
}

/* The files of a node's history: journal segments, snapshots, id runs, repl.history. */
static bool
of_history(const char *n)
{
	size_t l = strlen(n);
	return (strncmp(n, "journal-", 8) == 0 && l > 4 && !strcmp(n + l - 4, ".tgj")) ||
	       strncmp(n, "snapshot-", 9) == 0 ||
	       (strncmp(n, "ids-", 4) == 0 && l > 4 && !strcmp(n + l - 4, ".tgi")) ||
	       strcmp(n, HISTORY_FILE) == 0;
}

/* Move the files of from for which pick(name) holds into to; the count moved, or -errno. */
static int
move_files(const char *from, const char *to, bool (*pick)(const char *))
{
	DIR *d = opendir(from);
	struct dirent *e;
	int moved = 0;
	if (d == NULL)
		return -errno;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || !pick(e->d_name))
			continue;
		char a[TG_CFG_STR_MAX + 300], b[TG_CFG_STR_MAX + 400];
		if (snprintf(a, sizeof(a), "%s/%s", from, e->d_name) >= (int)sizeof(a) ||
		    snprintf(b, sizeof(b), "%s/%s", to, e->d_name) >= (int)sizeof(b))
			continue;
		if (rename(a, b) != 0) {
			closedir(d);
			return -errno;
		}
		moved++;
	}
	closedir(d);
	int dfd = open(to, O_RDONLY | O_DIRECTORY);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return moved;
}

static bool
any_file(const char *n)
{
	(void)n;
	return true;
}

int
tg_repl_prepare(const char *dir)
{
	char path[TG_CFG_STR_MAX + 32], in[TG_CFG_STR_MAX + 32], why[512] = "";
	snprintf(path, sizeof(path), "%s/%s", dir, RESET_FILE);
	snprintf(in, sizeof(in), "%s/%s", dir, INCOMING_DIR);
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		/* A full copy cut short before it was complete: never used. */
		if (errno == ENOENT) {
			DIR *d = opendir(in);
			if (d != NULL) {
				struct dirent *e;
				while ((e = readdir(d)) != NULL) {
					char p[TG_CFG_STR_MAX + 300];
					if (e->d_name[0] != '.' &&
					    snprintf(p, sizeof(p), "%s/%s", in, e->d_name) <
					        (int)sizeof(p))
						unlink(p);
				}
				closedir(d);
				rmdir(in);
			}
			return 0;
		}
		return -errno;
	}
	if (fgets(why, sizeof(why), f) != NULL)
		why[strcspn(why, "\n")] = '\0';
	fclose(f);
	char to[TG_CFG_STR_MAX + 64];
	snprintf(to, sizeof(to), "%s/diverged-%lld", dir, (long long)time(NULL));
	if (mkdir(to, 0700) != 0 && errno != EEXIST)
		return -errno;
	int moved = move_files(dir, to, of_history);
	if (moved < 0)
		return moved;
	tg_log("replication: %s: %d files of this node's history set aside in %s (tollctl "
	       "journal-check --data-dir %s --records shows them)",
	       why, moved, to, to);
	struct stat st;
	if (stat(in, &st) == 0) {
		int n = move_files(in, dir, any_file);
		if (n < 0)
			return n;
		rmdir(in);
		tg_log("replication: a full copy from the primary in place: %d files", n);
	}
	return unlink(path) == 0 ? 0 : -errno;
}

/*
 * Everything this node holds is to go aside at the next start (the files
 * still serve this run until it stops): the restart in place then comes up
 * on the copy in DIR/repl-incoming, or empty, and follows from there.
 */
static int
set_aside(struct tg_repl *r, const char *why)
{
	int rc = mark_reset(r->srv->cfg.data_dir, why);
	if (rc != 0)
		tg_log("replication: cannot write %s/%s: %s", r->srv->cfg.data_dir, RESET_FILE,
		       strerror(-rc));
	return rc;
}

/* Receive a full copy's files into DIR/repl-incoming/ (tg_repl_prepare moves them in). */
static int
receive_files(struct tg_repl *r, int fd)
{
	const char *dir = r->srv->cfg.data_dir;
	char in[TG_CFG_STR_MAX + 32], line[160];
	unsigned n;

	snprintf(in, sizeof(in), "%s/%s", dir, INCOMING_DIR);
	if (mkdir(in, 0700) != 0 && errno != EEXIST)
		return -errno;
	if (!recv_line(fd, line, sizeof(line)) || sscanf(line, "*%u", &n) != 1)
		return -EPROTO;
	tg_store_8((uint8_t *)&r->syncing, 1);
	char *buf = malloc(65536);
	int rc = buf ? 0 : -ENOMEM;
	for (unsigned i = 0; i < n && rc == 0; i++) {
		char name[80];
		long long size;
		if (!recv_line(fd, line, sizeof(line)) ||
		    sscanf(line, "$%79s %lld", name, &size) != 2 || strchr(name, '/') != NULL ||
		    name[0] == '.' || !of_history(name) || size < 0) {
			rc = -EPROTO;
			break;
		}
		char path[TG_CFG_STR_MAX + 128];
		snprintf(path, sizeof(path), "%s/%s", in, name);
		int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (out < 0) {
			rc = -errno;
			break;
		}
		while (size > 0 && rc == 0) {
			size_t k = size > 65536 ? 65536 : (size_t)size;
			if (!recv_all(fd, buf, k))
				rc = -EPIPE;
			else if (write(out, buf, k) != (ssize_t)k)
				rc = -EIO;
			size -= (long long)k;
		}
		if (rc == 0 && fsync(out) != 0)
			rc = -errno;
		close(out);
	}
	free(buf);
	tg_store_8((uint8_t *)&r->syncing, 0);
	return rc;
}

/*
 * +AHEAD from..upto: the new primary takes over the records of this node's
 * history it never had.  Send them from this node's journal, as a primary
 * streams (the journal's own bytes), then read "+TAKEN <lsn>".  The link
 * then closes (the primary restarts in place) and the next REPL.SYNC
 * continues.
 */
static void
give_ahead(struct tg_repl *r, int fd, uint64_t from, uint64_t upto)
{
	const char *dir = r->srv->cfg.data_dir;
	struct tg_journal_reader *jr = NULL;
	char *buf = malloc(SEND_BUF), line[64];
	size_t len = 0;
	uint64_t next = from, taken = 0;
	bool ok = buf != NULL && from >= 1 && upto <= tg_jw_durable(r->srv->dur.jw) &&
	          tg_journal_open_dir(&jr, dir) == 0 && tg_journal_seek(jr, from) == 0;

	tg_log("replication: primary %s:%u takes over LSN %" PRIu64 "..%" PRIu64
	       " of this node's history (its old primary's records it never had)",
	       r->host, r->port, from, upto);
	while (ok && next <= upto) {
		struct tg_jrec rec;
		if (tg_journal_next(jr, &rec) != TG_JOURNAL_OK) {
			ok = false;
			break;
		}
		if (rec.lsn < next)
			continue;
		if (rec.lsn > next) {
			ok = false; /* pruned here since */
			break;
		}
		size_t need = tg_journal_rec_size(rec.len);
		if (len + need > SEND_BUF) {
			ok = send_all(fd, buf, len);
			len = 0;
		}
		ssize_t n = tg_journal_encode(buf + len, SEND_BUF - len, rec.type, rec.lsn,
		                              rec.time, rec.payload, rec.len);
		ok = ok && n > 0;
		len += n > 0 ? (size_t)n : 0;
		next = rec.lsn + 1;
	}
	if (ok && len > 0)
		ok = send_all(fd, buf, len);
	if (jr != NULL)
		tg_journal_close(jr);
	free(buf);
	if (ok && recv_line(fd, line, sizeof(line)) &&
	    sscanf(line, "+TAKEN %" SCNu64, &taken) == 1 && taken == upto)
		tg_log("replication: primary %s:%u took over LSN %" PRIu64 "..%" PRIu64, r->host,
		       r->port, from, taken);
	else
		tg_log("replication: primary %s:%u did not take LSN %" PRIu64 "..%" PRIu64
		       " over (%s): asking again",
		       r->host, r->port, from, upto,
		       next <= upto ? "this journal cannot be read there" : "no +TAKEN");
}

/*
 * One attempt: connect, AUTH, REPL.SYNC, then stream (or take a full copy
 * and restart).  Returns false when the node must restart.
 */
static bool
follow_once(struct tg_repl *r)
{
	struct tg_server *srv = r->srv;
	char line[256], lsn[24], port[8];
	int fd = dial(r->host, r->port);

	if (fd < 0)
		return true;
	pthread_mutex_lock(&r->mu);
	r->recv_fd = fd;
	pthread_mutex_unlock(&r->mu);
	bool again = true;
	if (srv->cfg.primary_password[0] != '\0') {
		const char *user = srv->cfg.primary_user[0] ? srv->cfg.primary_user : "default";
		const char *av[] = {"AUTH", user, srv->cfg.primary_password};
		if (!send_cmd(fd, 3, av) || !recv_line(fd, line, sizeof(line)))
			goto out;
		if (line[0] != '+') {
			tg_log("replication: AUTH on primary %s:%u refused: %s", r->host, r->port,
			       line);
			goto out;
		}
	}
	snprintf(lsn, sizeof(lsn), "%" PRIu64, tg_jw_durable(srv->dur.jw));
	snprintf(port, sizeof(port), "%u", srv->port);
	pthread_mutex_lock(&r->mu);
	char hist[TG_REPL_ID_LEN + 1];
	snprintf(hist, sizeof(hist), "%s", history_now(r));
	pthread_mutex_unlock(&r->mu);
	const char *av[] = {"REPL.SYNC", hist, lsn, port};
	if (!send_cmd(fd, 4, av) || !recv_line(fd, line, sizeof(line)))
		goto out;
	char id[64];
	uint64_t at, upto;
	if (sscanf(line, "+CONTINUE %63s %" SCNu64, id, &at) == 2 && strlen(id) == TG_REPL_ID_LEN) {
		pthread_mutex_lock(&r->mu);
		int rc = history_push(r, srv->cfg.data_dir, id, at);
		pthread_mutex_unlock(&r->mu);
		if (rc != 0) {
			tg_log("replication: cannot record the primary's history: %s",
			       strerror(-rc));
			goto out;
		}
		link_set(r, true);
		ack(r, fd);
		stream(r, fd);
	} else if (sscanf(line, "+FULL %63s %" SCNu64, id, &at) == 2 &&
	           strlen(id) == TG_REPL_ID_LEN) {
		/*
		 * The copy goes into DIR/repl-incoming with the history it starts;
		 * the restart sets this node's files aside and puts it in place.
		 */
		char hpath[TG_CFG_STR_MAX + 64];
		snprintf(hpath, sizeof(hpath), "%s/%s/%s", srv->cfg.data_dir, INCOMING_DIR,
		         HISTORY_FILE);
		int rc = receive_files(r, fd);
		FILE *hf = rc == 0 ? fopen(hpath, "w") : NULL;
		if (hf != NULL) {
			fprintf(hf, "%s %" PRIu64 "\n", id, at + 1);
			rc = fflush(hf) == 0 && fsync(fileno(hf)) == 0 ? 0 : -EIO;
			fclose(hf);
		} else if (rc == 0) {
			rc = -errno;
		}
		if (rc == 0)
			rc = set_aside(r, "the primary sent a full copy");
		if (rc != 0)
			tg_log("replication: the full copy from %s:%u failed (%s): asking again",
			       r->host, r->port, strerror(-rc));
		again = rc != 0;
	} else if (sscanf(line, "+AHEAD %" SCNu64 " %" SCNu64, &at, &upto) == 2) {
		give_ahead(r, fd, at, upto);
	} else if (sscanf(line, "+DIVERGED %" SCNu64, &at) == 1) {
		char why[400];
		(void)!snprintf(why, sizeof(why),
		                "this node's history holds records after LSN %" PRIu64
		                " that primary %s:%u never had",
		                at, r->host, r->port);
		again = set_aside(r, why) != 0;
	} else {
		tg_log("replication: primary %s:%u answered REPL.SYNC with: %s", r->host, r->port,
		       line);
	}
out:
	pthread_mutex_lock(&r->mu);
	r->recv_fd = -1;
	pthread_mutex_unlock(&r->mu);
	close(fd);
	link_set(r, false);
	return again;
}

static void *
recv_main(void *arg)
{
	struct tg_repl *r = arg;
	while (!tg_load_8((uint8_t *)&r->stop)) {
		if (!follow_once(r)) {
			tg_server_restart_due(r->srv);
			break;
		}
		nap(r, RETRY_MS);
	}
	return NULL;
}

/* Build the live state the receiver applies to: the node's snapshot and journal. */
static int
live_load(struct tg_repl *r)
{
	char note[600];
	struct tg_replay_end end;
	const char *dir = r->srv->cfg.data_dir;
	int rc = tg_replay_init(&r->live);
	if (rc != 0)
		return rc;
	r->live_ok = true;
	rc = tg_snapshot_load(&r->live, dir, note, sizeof(note));
	if (rc == 0)
		rc = tg_replay_journal(&r->live, dir, 0, false, &end);
	if (rc == 0)
		tg_replay_ids_drop(&r->live, always, NULL);
	return rc;
}

/* ---- start, stop, status ---- */

int
tg_repl_start(struct tg_server *srv)
{
	struct tg_repl *r = calloc(1, sizeof(*r));
	const char *dir = srv->cfg.data_dir;
	int rc;

	if (r == NULL)
		return -ENOMEM;
	r->srv = srv;
	r->recv_fd = -1;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	r->min = srv->cfg.min_replicas_to_write;
	r->timeout_ms = srv->cfg.min_replicas_timeout;
	r->async_on_timeout = strcmp(srv->cfg.min_replicas_on_timeout, "async") == 0;
	srv->repl = r;
	if (srv->dur.jw == NULL)
		return 0; /* no journal: nothing to replicate, and no replica (checked at start) */
	rc = history_load(r, dir);
	if (rc != 0)
		return rc;
	uint64_t next = tg_jw_durable(srv->dur.jw) + 1;
	/* A takeover cut short: the histories after the one it took resume at the journal's end. */
	rc = history_clamp(r, dir, next - 1);
	if (rc != 0)
		tg_log("replication: cannot write %s/%s: %s", dir, HISTORY_FILE, strerror(-rc));
	if (srv->repl_role == TG_REPL_PRIMARY) {
		/* A new history from here: a replica that has records past it diverged. */
		rc = history_push(r, dir, srv->run_id, next);
		if (rc != 0)
			/*
			 * A full disk must not stop a primary from starting: the
			 * history lives in memory.  A replica that followed it finds
			 * it unknown after the next start and takes a full copy.
			 */
			tg_log("replication: cannot write %s/%s (%s): this history is kept in "
			       "memory only; its replicas will take a full copy after a restart",
			       dir, HISTORY_FILE, strerror(-rc));
		if (r->min > 0) {
			srv->engine.commit.arg = r;
			ck_pr_store_ptr(&srv->engine.commit.fn, (void *)commit_wait);
		}
		/*
		 * Nothing of its own until min-replicas-to-write replicas stream
		 * from it: one ahead of it (its old primary's records) is taken
		 * over, into a stage of its own, before this node writes anything.
		 */
		if (r->min > 0 && !r->async_on_timeout) {
			rc = tg_jstage_init(&r->stage, BATCH_MAX);
			if (rc == 0)
				r->stage_ok = true;
			if (rc == 0)
				rc = tg_jw_watch(srv->dur.jw, &r->stage);
			if (rc != 0)
				return rc;
			tg_store_8(&r->gate, GATE_HELD);
			tg_log("replication: a primary from LSN %" PRIu64
			       " (history %s): no change of its own until %u replica%s from it",
			       next, srv->run_id, r->min, r->min == 1 ? " streams" : "s stream");
		}
		return 0;
	}
	/* A replica of HOST PORT. */
	unsigned port = 0;
	char host[TG_REPL_HOST_MAX];
	if (sscanf(srv->cfg.replica_of, "%255s %u", host, &port) != 2 || port == 0 ||
	    port > 65535) {
		tg_log("replica-of '%s': must be HOST PORT", srv->cfg.replica_of);
		return -EINVAL;
	}
	snprintf(r->host, sizeof(r->host), "%s", host);
	r->port = (uint16_t)port;
	tg_store_64(&r->link_ms, tg_mono_ms());
	rc = tg_jstage_init(&r->stage, BATCH_MAX);
	if (rc == 0)
		r->stage_ok = true;
	if (rc == 0)
		rc = tg_jw_watch(srv->dur.jw, &r->stage);
	if (rc == 0)
		rc = live_load(r);
	if (rc != 0) {
		tg_log("replication: cannot prepare to follow %s:%u: %s", r->host, r->port,
		       strerror(-rc));
		return rc;
	}
	tg_log("replication: a replica of %s:%u from LSN %" PRIu64 " (history %s)", r->host,
	       r->port, next - 1, history_now(r));
	return 0;
}

int
tg_repl_follow(struct tg_server *srv)
{
	struct tg_repl *r = srv->repl;
	if (r != NULL) {
		/* The port is known now: published under the lock for the threads that restart. */
		pthread_mutex_lock(&r->mu);
		r->self_port = srv->port;
		pthread_mutex_unlock(&r->mu);
	}
	if (r == NULL || srv->repl_role != TG_REPL_REPLICA || srv->dur.jw == NULL)
		return 0;
	int rc = pthread_create(&r->recv_t, NULL, recv_main, r);
	if (rc != 0) {
		tg_log("replication: cannot start the receiver: %s", strerror(rc));
		return -rc;
	}
	r->recv_started = true;
	return 0;
}

void
tg_repl_stopping(struct tg_server *srv)
{
	struct tg_repl *r = srv->repl;
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	tg_store_8((uint8_t *)&r->stop, 1);
	pthread_cond_broadcast(&r->cv);
	bool taking = tg_load_8(&r->gate) == GATE_TAKING;
	pthread_mutex_unlock(&r->mu);
	if (taking) {
		/*
		 * A clean stop would mark the table as the journal's, and it is
		 * not: the records being taken over are in the journal only.  The
		 * node stops as after a crash (or restarts so, for a change of role).
		 */
		bool again = tg_load_8((uint8_t *)&srv->restart) && srv->restart_exec != NULL;
		tg_log("replication: stopping while taking over a replica's records: %s without a "
		       "clean stop",
		       again ? "restarting in place" : "exiting");
		if (again)
			srv->restart_exec(srv);
		_exit(1);
	}
}

void
tg_repl_stop(struct tg_server *srv)
{
	struct tg_repl *r = srv->repl;
	if (r == NULL)
		return;
	ck_pr_store_ptr(&srv->engine.commit.fn, NULL);
	pthread_mutex_lock(&r->mu);
	tg_store_8((uint8_t *)&r->stop, 1);
	if (r->recv_fd >= 0)
		shutdown(r->recv_fd, SHUT_RDWR);
	for (unsigned i = 0; i < TG_REPL_REPLICAS_MAX; i++)
		if (r->s[i].used)
			shutdown(r->s[i].fd, SHUT_RDWR);
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	if (r->recv_started)
		pthread_join(r->recv_t, NULL);
	/* Senders are detached: wait for them to let go of their sockets. */
	for (int spin = 0; spin < 200; spin++) {
		unsigned busy = 0;
		pthread_mutex_lock(&r->mu);
		for (unsigned i = 0; i < TG_REPL_REPLICAS_MAX; i++)
			busy += r->s[i].used;
		pthread_mutex_unlock(&r->mu);
		if (busy == 0)
			break;
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	if (r->stage_ok)
		tg_jstage_fini(&r->stage);
	if (r->live_ok)
		tg_replay_free(&r->live);
}

void
tg_repl_status(struct tg_server *srv, struct tg_repl_status *st)
{
	struct tg_repl *r = srv->repl;
	uint64_t now = tg_mono_ms();

	memset(st, 0, sizeof(*st));
	st->role = srv->repl_role;
	memcpy(st->run_id, srv->run_id, sizeof(st->run_id));
	st->priority = srv->cfg.replica_priority;
	st->min_replicas = srv->cfg.min_replicas_to_write;
	if (srv->dur.jw != NULL)
		st->offset = tg_jw_durable(srv->dur.jw);
	if (r == NULL) {
		memcpy(st->history, srv->run_id, sizeof(st->history));
		return;
	}
	pthread_mutex_lock(&r->mu);
	snprintf(st->history, sizeof(st->history), "%s", history_now(r));
	snprintf(st->primary_host, sizeof(st->primary_host), "%s", r->host);
	st->primary_port = r->port;
	st->link_up = tg_load_8((uint8_t *)&r->link_up);
	st->link_down_s = st->link_up ? 0 : (now - tg_load_64(&r->link_ms)) / 1000;
	st->last_io_s = (now - tg_load_64(&r->io_ms)) / 1000;
	st->sync_in_progress = tg_load_8((uint8_t *)&r->syncing);
	for (unsigned i = 0; i < TG_REPL_REPLICAS_MAX; i++) {
		const struct sender *s = &r->s[i];
		if (!s->used || s->stop)
			continue;
		struct tg_repl_replica *o = &st->replica[st->replicas++];
		snprintf(o->ip, sizeof(o->ip), "%s", s->ip);
		o->port = s->port;
		o->online = tg_load_8((uint8_t *)&s->online);
		o->acked = tg_load_64((uint64_t *)&s->acked);
		o->lag_ms = now - tg_load_64((uint64_t *)&s->ack_ms);
		if (o->lag_ms <= r->timeout_ms + ACK_EVERY_MS)
			st->good_replicas++;
	}
	st->async_acks = tg_load_64(&r->async_acks);
	st->refusing = tg_load_8((uint8_t *)&r->refusing);
	pthread_mutex_unlock(&r->mu);
}

bool
tg_repl_readonly(const struct tg_server *srv)
{
	return srv->repl_role == TG_REPL_REPLICA;
}

int
tg_repl_replicaof(struct tg_server *srv, const char *host, uint16_t port, bool *restart, char *msg,
                  size_t msglen)
{
	char want[TG_CFG_STR_MAX];

	*restart = false;
	if (srv->dur.jw == NULL) {
		snprintf(msg, msglen,
		         "replication needs a journal (durability durable or relaxed)");
		return -EINVAL;
	}
	if (host == NULL)
		want[0] = '\0';
	else
		snprintf(want, sizeof(want), "%s %u", host, port);
	/* The main thread reads it at the restart: under the control path's lock. */
	pthread_mutex_lock(&srv->reload_lock);
	bool same = strcmp(want, srv->cfg.replica_of) == 0;
	if (!same)
		snprintf(srv->cfg.replica_of, sizeof(srv->cfg.replica_of), "%s", want);
	pthread_mutex_unlock(&srv->reload_lock);
	if (same)
		return 0; /* already so */
	tg_log("replication: %s: restarting in place",
	       host == NULL ? "REPLICAOF NO ONE: promoted" : "REPLICAOF: following");
	*restart = true;
	return 0;
}
