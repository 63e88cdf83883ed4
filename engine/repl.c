/*
 * repl.c - replication (tg_repl.h, docs/HA.md): the node's role, the
 * primary's senders and the replica's receiver.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "tg_atomic.h"
#include "tg_clock.h"
#include "tg_repl.h"
#include "tg_server.h"

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

void
tg_repl_status(struct tg_server *srv, struct tg_repl_status *st)
{
	memset(st, 0, sizeof(*st));
	st->role = srv->repl_role;
	memcpy(st->run_id, srv->run_id, sizeof(st->run_id));
	memcpy(st->history, srv->run_id, sizeof(st->history));
	st->priority = srv->cfg.replica_priority;
	st->min_replicas = srv->cfg.min_replicas_to_write;
	if (srv->dur.jw != NULL)
		st->offset = tg_jw_durable(srv->dur.jw);
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
	(void)srv;
	(void)host;
	(void)port;
	*restart = false;
	snprintf(msg, msglen, "replication is not available in this build yet");
	return -ENOTSUP;
}
