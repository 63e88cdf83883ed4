/*
 * tg_pubsub.h - PUBLISH / SUBSCRIBE for Redis Sentinel's hello channel and
 * anyone else who listens (docs/HA.md, "What Sentinel talks to").
 *
 * A connection that sends SUBSCRIBE or PSUBSCRIBE leaves request/reply: the
 * worker registers it here with its first subscriptions (and writes their
 * confirmations), returns TG_NET_DETACH, and once those replies are sent
 * hands the socket over (tg_pubsub_attach).  From then on one thread of this
 * module owns the socket: it answers SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE,
 * PUNSUBSCRIBE, PING and QUIT, and sends what any worker PUBLISHes.
 * Messages published between the registration and the hand-over wait in
 * the subscriber's buffer, so none is lost.  Each subscriber's unsent
 * replies are bounded (subscriber-buffer): a subscriber that does not read
 * is dropped and counted, never waited for.
 *
 * Not the hot path: PUBLISH takes one mutex and copies the message into
 * each receiver's buffer.
 */
#ifndef TG_PUBSUB_H
#define TG_PUBSUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_resp.h"

/* Channels and patterns one subscriber may hold at once. */
#define TG_PUBSUB_SUBS_MAX 64
/* Bytes of one subscriber's partial request. */
#define TG_PUBSUB_INBUF 16384
/* Seconds a registered subscriber may wait for its socket before it is forgotten. */
#define TG_PUBSUB_ATTACH_S 10

struct tg_pubsub;

struct tg_pubsub_cfg {
	size_t buffer_max;        /* subscriber-buffer: unsent bytes per subscriber */
	unsigned subscribers_max; /* subscribers at once (max-clients) */
};

struct tg_pubsub_stats {
	uint64_t subscribers;  /* now, sockets handed over or about to be */
	uint64_t channels;     /* channel subscriptions now, all subscribers */
	uint64_t patterns;     /* pattern subscriptions now, all subscribers */
	uint64_t messages;     /* deliveries queued since start (one per receiver) */
	uint64_t slow_dropped; /* subscribers dropped: their unsent replies passed buffer_max */
	uint64_t killed;       /* subscribers closed by CLIENT KILL TYPE pubsub */
};

/* Start the thread.  0, or -errno with a sentence in err. */
int tg_pubsub_start(struct tg_pubsub **out, const struct tg_pubsub_cfg *cfg, char *err,
                    size_t errlen);
/* Stop the thread, close every subscriber, free everything.  NULL is fine. */
void tg_pubsub_stop(struct tg_pubsub *ps);

/*
 * Register subscriber id (a CLIENT ID, unique) named name (may be "") with
 * its first n channels (pattern: patterns), and append the confirmations
 * to out, as Redis does: ["subscribe", channel, count] for each.  The
 * caller then detaches the connection and calls tg_pubsub_attach.  Any
 * thread.  0; -EMFILE when subscribers_max are registered, -E2BIG past
 * TG_PUBSUB_SUBS_MAX subscriptions: nothing registered, nothing written;
 * -ENOTCONN when ps is NULL (no subscribers' thread: a program that runs
 * the commands without the daemon, such as the command fuzzer).  The other
 * calls take a NULL ps as no subscriber at all.
 */
int tg_pubsub_add(struct tg_pubsub *ps, uint64_t id, const char *name, bool pattern,
                  const struct tg_arg *names, unsigned n, struct tg_out *out);
/*
 * The socket of subscriber id, its replies sent: the thread owns fd from
 * here (closes it even when id is unknown).  Any thread.
 */
void tg_pubsub_attach(struct tg_pubsub *ps, uint64_t id, int fd);

/*
 * Queue message to every subscriber of channel (and every pattern that
 * matches it).  Returns the receivers, as Redis's PUBLISH.  Any thread.
 */
uint64_t tg_pubsub_publish(struct tg_pubsub *ps, const char *channel, size_t chlen, const char *msg,
                           size_t msglen);

/* Close every subscriber (CLIENT KILL TYPE pubsub).  Returns how many.  Any thread. */
uint64_t tg_pubsub_kill(struct tg_pubsub *ps);

/*
 * One CLIENT LIST line per subscriber ("id=.. addr=.. name=.. ...\n")
 * appended to buf[*len..cap).  Any thread.
 */
void tg_pubsub_list(struct tg_pubsub *ps, char *buf, size_t *len, size_t cap);

void tg_pubsub_stats(struct tg_pubsub *ps, struct tg_pubsub_stats *st);

#endif
