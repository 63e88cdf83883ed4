/*
 * tg_server.h - tollgated: the engine behind the io_uring server.
 *
 * The server holds what one daemon owns: its settings, the segment, the
 * engine, the network, and the control path (reloads, signals).  cmd.c turns
 * RESP requests into engine operations; server.c starts, reloads and stops
 * it all; tollgated.c is main() and the signals.
 */
#ifndef TG_SERVER_H
#define TG_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "tg_auth.h"
#include "tg_config.h"
#include "tg_durable.h"
#include "tg_engine.h"
#include "tg_net.h"
#include "tg_pubsub.h"
#include "tg_repl.h"
#include "tg_table.h"

#define TG_SERVER_MAGIC  0x73727672u
#define TG_SESSION_MAGIC 0x73657373u
#define TG_VERSION       "0.1.0"

struct tg_server {
	uint32_t magic;
	struct tg_config cfg;
	struct tg_table table;
	struct tg_engine engine;
	struct tg_net *net;
	/* reloads, replica_of_conf: never taken on the hot path */
	pthread_mutex_t reload_lock;
	char rates_path[TG_CFG_STR_MAX];
	uint64_t started_s;
	unsigned workers;
	uint16_t port;
	uint64_t reloads, reload_failures;
	uint32_t pass_len;
	struct tg_auth auth;   /* users and failed AUTHs (docs/SECURITY.md) */
	struct tg_durable dur; /* journal, snapshots, recovery (docs/JOURNAL.md) */
	/* replication (docs/HA.md) */
	enum tg_repl_role repl_role;     /* set at start from replica-of */
	char run_id[TG_REPL_ID_LEN + 1]; /* random, new at every start */
	struct tg_repl *repl;            /* senders and receiver (repl.c) */
	bool restart;                    /* a restart in place is due (tg_server_restart_due) */
	/*
	 * Set by main before the start: run the program again now, with the
	 * current replica-of, without stopping (returns only when exec fails).
	 * For a stop that cannot finish cleanly while a restart is due: a batch
	 * still waiting for replicas (repl.c) must not answer, and a plain exit
	 * would leave the node down instead of in its new role.
	 */
	void (*restart_exec)(struct tg_server *srv);
	/*
	 * The replica-of CONFIG REWRITE writes: the one started with, then the
	 * last REPLICAOF accepted ("" for NO ONE).  Under reload_lock.
	 */
	char replica_of_conf[TG_CFG_STR_MAX];
	/* Clients (docs/HA.md, "What Sentinel talks to") */
	struct tg_pubsub *pubsub; /* subscribers and PUBLISH */
	uint64_t next_client_id;  /* CLIENT ID: atomic increment */
	uint64_t kill_gen;        /* CLIENT KILL TYPE normal: sessions older than this close */
	uint64_t normal_clients;  /* request/reply connections open now */
	uint64_t clients_killed;  /* connections closed by CLIENT KILL TYPE normal */
};

/* Bytes of a CLIENT SETNAME name. */
#define TG_CLIENT_NAME_MAX 64

/* What a connection that leaves request/reply becomes (tg_session.detach). */
enum tg_detach { TG_DETACH_NONE = 0, TG_DETACH_PUBSUB = 1, TG_DETACH_REPLICA = 2 };

struct tg_multi; /* the commands queued after MULTI (cmd.c) */

/* Per connection. */
struct tg_session {
	uint32_t magic;
	bool authed;
	bool peer_known;            /* peer holds the source address */
	uint8_t role;               /* TG_ROLE_* of the user authenticated as; 0 before AUTH */
	uint8_t auth_failures;      /* failed AUTHs on this connection (saturates at 255) */
	uint8_t peer[16];           /* IPv6, or IPv4 as ::ffff:a.b.c.d */
	const struct tg_user *user; /* who it authenticated as; NULL before AUTH or with no users */
	uint64_t opened_ms;         /* CLOCK_MONOTONIC_COARSE when accepted (auth-timeout) */
	struct tg_repl_sync *sync;  /* REPL.SYNC answered: handed to a sender once detached */
	uint64_t id;                /* CLIENT ID: unique for the process's life */
	uint64_t kill_seen;         /* srv->kill_gen when it opened (or ran CLIENT KILL) */
	struct tg_multi *multi;     /* after MULTI until EXEC/DISCARD: allocated, else NULL */
	uint8_t detach;             /* enum tg_detach: set by the command that detaches */
	char name[TG_CLIENT_NAME_MAX + 1]; /* CLIENT SETNAME */
};

/*
 * Start the daemon described by srv->cfg (checked by tg_config_check):
 * credentials, journal and segment, engine, rate plans, accounts, refill
 * publisher, snapshot thread, network, in that order.  Each failing step
 * logs one line saying why.  Signals must already be blocked in the calling
 * thread (workers inherit the mask).  Returns 0, or -errno; either way
 * tg_server_stop undoes what was done.
 */
int tg_server_start(struct tg_server *srv);
/*
 * Stop everything tg_server_start started, in reverse: workers, publisher
 * (one last drain), journal (last sync and snapshot, segment marked clean),
 * engine, credentials, segment.  Safe after a partial start.
 */
void tg_server_stop(struct tg_server *srv);

/*
 * Ask for a restart in place (a change of role, a full copy received): the
 * main thread stops the server and runs the program again with the current
 * replica-of, on the same port.  Any thread; returns at once.
 */
void tg_server_restart_due(struct tg_server *srv);

/* The network callbacks that run commands against srv. */
void tg_cmd_handler(struct tg_server *srv, struct tg_net_handler *h);

/*
 * Reload the rate plans from srv->rates_path.  Must not be called from
 * inside a worker's batch.  Returns 0, or -errno / -EINVAL with every problem
 * (file:line: reason) in msg.
 */
int tg_server_reload(struct tg_server *srv, char *msg, size_t msglen);

#endif
