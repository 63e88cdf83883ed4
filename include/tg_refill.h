/*
 * tg_refill.h - the refill publisher: from a threshold crossing to an XADD.
 *
 * A worker whose debit crossed an account's threshold (and claimed its
 * refill flag in the same step) writes the request into the account's
 * pending-refill record in shared memory, then pushes a small trigger onto
 * its own single-producer ring.  One publisher thread drains the rings,
 * pipelines XADDs onto the Redis stream (docs/REFILL.md) and marks the
 * records published.  Workers never wait on Redis: the ring push is all they
 * do, and when a ring is full the trigger simply stays pending in shared
 * memory, where the publisher's scan of the table finds it.
 */
#ifndef TG_REFILL_H
#define TG_REFILL_H

#include <stddef.h>
#include <stdint.h>

#include "tg_engine.h"

/* Longest redis-host and refill-stream accepted. */
#define TG_REFILL_NAME_MAX 255
/* Largest refill-ring: entries per worker ring. */
#define TG_REFILL_RING_MAX (1u << 24)

struct tg_refill_cfg {
	const char *host;   /* redis-host; "none" publishes nothing (requests stay pending) */
	uint32_t port;      /* redis-port, 1..65535 */
	const char *stream; /* refill-stream: the stream key */
	uint32_t timeout_s; /* refill-timeout: republish a request unanswered this long */
	uint32_t ring;      /* refill-ring: triggers per worker ring, a power of two >= 2 */
};

/*
 * Start the publisher of e (e->refill is set): one ring per worker record,
 * then the start-up scan, which takes over every request the segment holds
 * that is not on the stream yet (one that fired before a crash keeps its
 * id), then the thread.  Call after tg_engine_init and any account loading,
 * before a worker runs: the start-up scan rebuilds records that no worker is
 * writing.  Redis being down is not an error (the thread retries).  Returns
 * 0, or -EINVAL / -ENOMEM / -errno with a sentence in err.
 */
int tg_refill_start(struct tg_engine *e, const struct tg_refill_cfg *cfg, char *err, size_t errlen);
/*
 * Stop the thread (after one last drain of the rings when Redis is up) and
 * free the publisher and its hook; e->refill is {NULL, NULL} after.  Workers must be stopped
 * first.  Returns within the Redis timeouts (about 3 s at worst).  Does
 * nothing when no publisher runs.
 */
void tg_refill_stop(struct tg_engine *e);
/* Refill requests fired and not yet on the stream (INFO refills_pending); 0 with no publisher. */
uint64_t tg_refill_pending(const struct tg_engine *e);

#endif
