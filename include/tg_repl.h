/*
 * tg_repl.h - replication: a primary streams its journal to replicas, a
 * replica appends it to its own journal and applies it (docs/HA.md).
 *
 * A node is a primary or a replica.  A replica connects to its primary's
 * RESP port, authenticates as a user of role replica and sends REPL.SYNC
 * with the history it follows and the last LSN it holds.  The primary
 * answers with where the stream starts (or a snapshot first, when the
 * replica is too far behind or has nothing), detaches the connection from
 * request/reply (TG_NET_DETACH) and hands it to a sender thread that sends
 * each record once it is confirmed on the primary's disk.  The replica
 * writes the records into its own journal with the same LSNs, applies them
 * to its table, and acknowledges the LSN it has on disk.  In durable mode
 * with min-replicas-to-write N, a primary acknowledges a change only once
 * N replicas acknowledged it too.
 *
 * Failover is not decided here: Redis Sentinel watches the nodes (INFO
 * replication, ROLE) and promotes one with REPLICAOF NO ONE.  A change of
 * role restarts the node in place (a clean stop, then exec of the same
 * program with the new role): a promoted replica starts as a primary from
 * its own journal exactly as after a restart, a demoted primary as a
 * replica that first finds where its history and the new primary's split.
 */
#ifndef TG_REPL_H
#define TG_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_result.h"

struct tg_server;

enum tg_repl_role { TG_REPL_PRIMARY = 0, TG_REPL_REPLICA = 1 };

/* Hex characters of a run id and of a history id (as Redis's run_id and master_replid). */
#define TG_REPL_ID_LEN 40
/* Replicas one primary serves at once. */
#define TG_REPL_REPLICAS_MAX 16
/* Bytes of a host name in replica-of, NUL included. */
#define TG_REPL_HOST_MAX 256

/* One replica, as its primary sees it. */
struct tg_repl_replica {
	char ip[48];     /* its address, as text */
	uint16_t port;   /* the RESP port it listens on (it says so in REPL.SYNC) */
	bool online;     /* streaming; false: being sent a snapshot first */
	uint64_t acked;  /* the last LSN it has on its disk */
	uint64_t lag_ms; /* since its last acknowledgement */
};

/* What INFO replication and ROLE report. */
struct tg_repl_status {
	enum tg_repl_role role;
	char run_id[TG_REPL_ID_LEN + 1];  /* this process's: new at every start */
	char history[TG_REPL_ID_LEN + 1]; /* the history this node's journal follows */
	uint64_t offset;                  /* the last LSN on this node's disk */
	uint32_t priority;                /* replica-priority */
	/* a replica */
	char primary_host[TG_REPL_HOST_MAX];
	uint16_t primary_port;
	bool link_up;          /* streaming from the primary now */
	uint64_t link_down_s;  /* seconds since the link went down (or since start) */
	uint64_t last_io_s;    /* seconds since the primary last sent anything */
	bool sync_in_progress; /* receiving a snapshot */
	/* a primary */
	unsigned replicas;
	struct tg_repl_replica replica[TG_REPL_REPLICAS_MAX];
	uint32_t min_replicas;  /* min-replicas-to-write */
	unsigned good_replicas; /* replicas that acknowledged within min-replicas-timeout */
	uint64_t async_acks;    /* batches acknowledged without their replicas (async) */
	bool refusing;          /* money-moving commands refused: NOREPLICAS */
};

/* What REPL.SYNC asked for, and what tg_repl_sync decided. */
struct tg_repl_sync {
	char history[TG_REPL_ID_LEN + 1]; /* the replica's current history ("-": none) */
	uint64_t lsn;                     /* the last LSN on its disk */
	uint16_t port;                    /* the RESP port it listens on */
	bool full;                        /* the decision: a full copy first */
	bool ahead;                       /* the decision: take its records start..lsn over */
	uint64_t snap;                    /* full: the snapshot sent */
	uint64_t start;                   /* the first LSN of the stream */
};

/*
 * Prepare replication once the journal runs, before the network: a primary
 * begins a new history and, with min-replicas-to-write, installs the
 * engine's commit hook; a replica loads what it applies records to.  0 or
 * -errno (logged).
 */
int tg_repl_start(struct tg_server *srv);
/* A replica starts following replica-of, once the network runs (it tells its port). */
int tg_repl_follow(struct tg_server *srv);
/*
 * Before recovery reads DIR: when a replica found it must start over
 * (DIR/repl.reset), set the files of its history aside in
 * DIR/diverged-<unix time>/ and put the full copy it received
 * (DIR/repl-incoming/) in their place; a copy left incomplete by a crash is
 * deleted.  0, or -errno (the start stops: the files are as they were).
 */
int tg_repl_prepare(const char *dir);
/*
 * The server is stopping: batches waiting for replicas stop waiting (a
 * batch still short of min-replicas-to-write ends the process without its
 * replies: the journal has it).  Before the workers are stopped.
 */
void tg_repl_stopping(struct tg_server *srv);
/* Stop the receiver and every sender (before the journal closes).  Safe when never started. */
void tg_repl_stop(struct tg_server *srv);

/*
 * REPL.SYNC on a primary: decide where q's stream starts and write the
 * reply line into reply (cap bytes, CRLF included): "+CONTINUE <history>
 * <first LSN>", "+FULL <history> <snapshot LSN>" (the files, then the
 * records after), "+AHEAD <first LSN> <last LSN>" (this node, a primary
 * holding back, takes the replica's records of its old primary over:
 * q->ahead), "+DIVERGED <LSN>" (the replica holds records after LSN that
 * this node never had) or an -ERR.  0 when the connection is to be handed
 * over (tg_repl_take), -errno when the reply is all.
 */
int tg_repl_sync(struct tg_server *srv, struct tg_repl_sync *q, char *reply, size_t cap);
/* The connection of a REPL.SYNC answered 0: fd is the sender's now.  ip: the replica's address. */
void tg_repl_take(struct tg_server *srv, const struct tg_repl_sync *q, const char *ip, int fd);

/*
 * min-replicas-on-timeout refuse, after a batch waited min-replicas-timeout
 * in vain: money-moving commands get NOREPLICAS until enough replicas hold
 * everything again.  Any thread.
 */
bool tg_repl_refusing(const struct tg_server *srv);
/*
 * A primary just started with min-replicas-to-write (refuse) writes nothing
 * of its own — no change, no expiry, no account closed — until that many
 * replicas stream from it, and while it takes over an ahead replica's
 * records (docs/HA.md).  Any thread.
 */
bool tg_repl_holding(const struct tg_server *srv);

/* A new random run id: TG_REPL_ID_LEN hex characters and a NUL. */
void tg_repl_run_id(char id[TG_REPL_ID_LEN + 1]);

/* Fill st with this node's replication status.  Any thread. */
void tg_repl_status(struct tg_server *srv, struct tg_repl_status *st);

/* Whether this node is a replica: money-moving commands are refused READONLY.  One load. */
bool tg_repl_readonly(const struct tg_server *srv);

/*
 * REPLICAOF host port (host NULL: NO ONE).  A change of role is done by a
 * restart in place, after the reply is sent; following the same primary
 * again, or NO ONE on a primary, changes nothing.  0 (restart due: *restart
 * set) or -errno with a sentence in msg.
 */
int tg_repl_replicaof(struct tg_server *srv, const char *host, uint16_t port, bool *restart,
                      char *msg, size_t msglen);

#endif
