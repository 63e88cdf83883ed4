/*
 * server.c - one daemon's life: start, reload, stop.
 *
 * Starting is a fixed sequence of steps, each of which either completes or
 * logs one line saying why and returns -errno; tg_server_stop undoes
 * whatever was done, in reverse.  The order matters and is the contract:
 * credentials before anything is created, the journal's state before the
 * segment is attached, the accounts before the refill publisher (its
 * start-up scan adopts what loading fired), the publisher and the snapshot
 * thread before any worker, the network last.  tollgated.c keeps main()
 * and the signals; cmd.c calls tg_server_reload for RATES.RELOAD.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "demo.h"
#include "tg_accounts.h"
#include "tg_assert.h"
#include "tg_durable.h"
#include "tg_log.h"
#include "tg_refill.h"
#include "tg_stops.h"
#include "tg_server.h"

int
tg_server_reload(struct tg_server *srv, char *msg, size_t msglen)
{
	struct tg_diag diag;
	int rc;

	tg_diag_init(&diag);
	pthread_mutex_lock(&srv->reload_lock);
	rc = tg_rates_reload(&srv->engine.rates, srv->rates_path, &diag);
	pthread_mutex_unlock(&srv->reload_lock);
	if (rc == 0) {
		ck_pr_inc_64(&srv->reloads);
		const struct tg_planset *ps = srv->engine.rates.current;
		snprintf(msg, msglen, "%zu plans, %zu prefixes", tg_planset_plans(ps),
		         tg_planset_prefixes(ps));
		return 0;
	}
	ck_pr_inc_64(&srv->reload_failures);
	/* Every problem kept, one per line: file:line: reason (file: reason for a whole file). */
	size_t n =
	    (size_t)snprintf(msg, msglen, "rate plans not reloaded (%u problem%s):", diag.count,
	                     diag.count == 1 ? "" : "s");
	unsigned kept = diag.count < TG_DIAG_KEEP ? diag.count : TG_DIAG_KEEP;
	for (unsigned i = 0; i < kept && n < msglen; i++) {
		const struct tg_diag_msg *m = &diag.msg[i];
		if (m->line)
			n += (size_t)snprintf(msg + n, msglen - n, "\n%s:%u: %s", m->file, m->line,
			                      m->reason);
		else
			n += (size_t)snprintf(msg + n, msglen - n, "\n%s: %s", m->file, m->reason);
	}
	if (diag.count > kept && n < msglen)
		snprintf(msg + n, msglen - n, "\n... and %u more", diag.count - kept);
	return rc;
}

/* A setting that names a file, or the embedded demo data when empty. */
static int
input_path(const char *setting, const char *demo, const char *label, char *path, size_t len)
{
	if (setting[0] != '\0') {
		snprintf(path, len, "%s", setting);
		return 0;
	}
	return tg__demo_path(demo, label, path, len);
}

/* An account the accounts file created: into the journal like any other change. */
static void
record_new(void *arg, struct tg_acct *a)
{
	tg_engine_journal_new(arg, a);
}

/* Step 1: worker count and credentials; a bad users file stops start-up before anything is created.
 */
static int
start_auth(struct tg_server *srv)
{
	struct tg_config *cfg = &srv->cfg;
	char err[512];
	int rc;

	srv->workers = cfg->workers ? cfg->workers : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	if (srv->workers == 0 || srv->workers > TG_WORKERS_MAX) {
		tg_log("workers: %u is not 1..%d", srv->workers, TG_WORKERS_MAX);
		return -EINVAL;
	}
	srv->pass_len = (uint32_t)strlen(cfg->requirepass);
	struct tg_auth_cfg acfg = {.requirepass = cfg->requirepass,
	                           .users = cfg->users,
	                           .addr_failures = cfg->auth_addr_failures,
	                           .lockout_s = cfg->auth_lockout,
	                           .max_request_noauth = cfg->max_request_noauth};
	rc = tg_auth_init(&srv->auth, &acfg, err, sizeof(err));
	if (rc != 0) {
		tg_log("%s", err);
		return rc;
	}
	srv->started_s = (uint64_t)time(NULL);
	pthread_mutex_init(&srv->reload_lock, NULL);
	srv->repl_role = cfg->replica_of[0] != '\0' ? TG_REPL_REPLICA : TG_REPL_PRIMARY;
	snprintf(srv->replica_of_conf, sizeof(srv->replica_of_conf), "%s", cfg->replica_of);
	tg_repl_run_id(srv->run_id);
	return 0;
}

/*
 * Step 2: the journal's state, then the segment (the state decides whether
 * a surviving segment may be kept).  With no journal, what the previous
 * engine held for its calls in progress is released.
 */
static int
open_table(struct tg_server *srv)
{
	struct tg_config *cfg = &srv->cfg;
	int rc;

	struct tg_table_cfg tcfg = {.name = cfg->shm_name,
	                            .capacity = cfg->capacity,
	                            .mode = (mode_t)cfg->shm_mode,
	                            .reuse = cfg->shm_reuse,
	                            .group = cfg->shm_group};
	rc = tg_durable_prepare(srv);
	if (rc != 0)
		return rc;
	rc = tg_durable_open_table(srv, &tcfg);
	if (rc != 0)
		return rc;
	/* Read at random, one account a request: 4 KiB pages make each a TLB miss. */
	if (srv->table.size >= (8u << 20) && tg_table_huge_kib(&srv->table) == 0)
		tg_log("shm %s: %zu MiB in 4 KiB pages, a TLB miss per account looked up: "
		       "mount /dev/shm with huge=within_size for huge pages (docs/SHM.md)",
		       cfg->shm_name, srv->table.size >> 20);
	if (srv->dur.mode == TG_NOJOURNAL && tg_load_64(&srv->table.hdr->generation) > 1) {
		/*
		 * The calls the previous engine had in progress lived in its memory:
		 * their CALL.END will get NOCALL.  Release what they held rather than
		 * keep it reserved forever.
		 */
		tg_money_t held;
		uint64_t n = tg_table_release_reservations(&srv->table, &held);
		if (n > 0) {
			char amt[TG_MONEY_STR_MAX];
			tg_money_format(held, amt);
			tg_log(
			    "previous engine left calls in progress on %llu accounts: released %s "
			    "reserved (those calls' CALL.END will get NOCALL)",
			    (unsigned long long)n, amt);
		}
	}
	return 0;
}

/* Step 3: the engine, then accounts, calls and ids as the journal has them. */
static int
start_engine(struct tg_server *srv)
{
	struct tg_config *cfg = &srv->cfg;
	int rc;

	struct tg_engine_cfg ecfg = {.max_grant = cfg->max_grant,
	                             .call_grace = cfg->call_grace,
	                             .calls_max = cfg->calls_max,
	                             .ids_max = cfg->ids_max,
	                             .ids_window = cfg->ids_window,
	                             .workers = srv->workers,
	                             .suspend_after = cfg->refill_suspend_after,
	                             .close_after = cfg->refill_close_after,
	                             .call_id_keep = cfg->call_id_keep};
	rc = tg_engine_init(&srv->engine, &srv->table, &ecfg);
	if (rc != 0) {
		tg_log("cannot set up the engine: %s", strerror(-rc));
		return rc;
	}
	/* From here on every change is recorded. */
	return tg_durable_install(srv);
}

/* Step 4: the rate plans, from the rates file or the bundled demo. */
static int
load_rates(struct tg_server *srv)
{
	struct tg_config *cfg = &srv->cfg;
	char msg[512];
	int rc;

	rc = input_path(cfg->rates, tg__demo_rates, "demo-rates", srv->rates_path,
	                sizeof(srv->rates_path));
	if (rc != 0) {
		tg_log("demo-rates: %s", strerror(-rc));
		return rc;
	}
	rc = tg_server_reload(srv, msg, sizeof(msg));
	if (rc != 0) {
		tg_log("%s", msg);
		return rc;
	}
	tg_log("rate plans from %s: %s", cfg->rates[0] ? cfg->rates : "the bundled demo", msg);
	return 0;
}

/* Step 5: the accounts file (or the bundled demo; "none": nothing), each new account journaled. */
static int
load_accounts(struct tg_server *srv)
{
	struct tg_config *cfg = &srv->cfg;
	char accounts[TG_CFG_STR_MAX];
	struct tg_diag diag;
	size_t created, skipped;
	int rc;

	if (strcmp(cfg->accounts, "none") == 0)
		return 0;
	/* A replica's accounts are its primary's, record by record: it creates none itself. */
	if (srv->repl_role == TG_REPL_REPLICA) {
		tg_log("accounts: not loaded: a replica holds its primary's");
		return 0;
	}
	rc = input_path(cfg->accounts, tg__demo_accounts, "demo-accounts", accounts,
	                sizeof(accounts));
	tg_diag_init(&diag);
	struct tg_worker *ctl = tg_engine_worker(&srv->engine, srv->workers);
	if (rc == 0)
		rc = tg_accounts_load_cb(accounts, &srv->table, &diag, &created, &skipped,
		                         record_new, ctl);
	tg_worker_commit(ctl);
	if (rc != 0) {
		tg_log("accounts not loaded from %s (%u problem%s):",
		       cfg->accounts[0] ? cfg->accounts : "the bundled demo", diag.count,
		       diag.count == 1 ? "" : "s");
		tg_diag_print(&diag, STDERR_FILENO);
		return rc;
	}
	tg_log("accounts from %s: %zu created, %zu already present",
	       cfg->accounts[0] ? cfg->accounts : "the bundled demo", created, skipped);
	return 0;
}

/* Step 6: the refill publisher: after the accounts (its start-up scan adopts what loading fired),
 * before any worker. */
static int
start_refill(struct tg_server *srv)
{
	struct tg_config *cfg = &srv->cfg;
	char err[512];
	int rc;

	struct tg_refill_cfg rcfg = {.host = cfg->redis_host,
	                             .port = cfg->redis_port,
	                             .stream = cfg->refill_stream,
	                             .timeout_s = cfg->refill_timeout,
	                             .ring = cfg->refill_ring};
	/* A replica publishes nothing: its primary does; it will once promoted. */
	if (srv->repl_role == TG_REPL_REPLICA)
		return 0;
	rc = tg_refill_start(&srv->engine, &rcfg, err, sizeof(err));
	if (rc != 0) {
		tg_log("%s", err);
		return rc;
	}
	/* The stop and alarm publisher shares the refill Redis (docs/PROTOCOL.md, docs/FRAUD.md).
	 */
	struct tg_stops_cfg scfg = {.host = cfg->redis_host,
	                            .port = cfg->redis_port,
	                            .stream = cfg->stop_stream,
	                            .alarm_stream = cfg->alarm_stream};
	rc = tg_stops_start(&srv->engine, &scfg, err, sizeof(err));
	if (rc != 0)
		tg_log("%s", err);
	return rc;
}

/* Step 8: the subscribers' thread, before any worker can PUBLISH. */
static int
start_pubsub(struct tg_server *srv)
{
	char err[256];
	struct tg_pubsub_cfg pcfg = {.buffer_max = srv->cfg.subscriber_buffer,
	                             .subscribers_max = srv->cfg.max_clients};
	int rc = tg_pubsub_start(&srv->pubsub, &pcfg, err, sizeof(err));
	if (rc != 0)
		tg_log("%s", err);
	return rc;
}

/* Step 9: the io_uring workers on the port, serving the command table. */
/* The journal's durable LSN moved: wake the workers holding replies for it. */
static void
durable_moved(void *arg, uint64_t lsn)
{
	struct tg_server *srv = arg;
	tg_net_durable(srv->net, lsn);
}

static int
start_net(struct tg_server *srv)
{
	struct tg_config *cfg = &srv->cfg;
	char err[512];
	int rc;

	struct tg_net_handler h;
	tg_cmd_handler(srv, &h);
	struct tg_net_cfg ncfg = {
	    .addr = cfg->bind,
	    .port = (uint16_t)cfg->port,
	    .workers = srv->workers,
	    .max_conns = (cfg->max_clients + srv->workers - 1) / srv->workers,
	    .inbuf = cfg->max_request + 1024,
	    .outbuf = cfg->reply_buffer,
	    .buf_count = 1024,
	    .buf_size = 16384,
	    .idle_ms = cfg->idle_timeout * 1000,
	    .tick_ms = 100,
	    .max_per_addr = cfg->max_clients_per_addr,
	    .request_ms = cfg->request_timeout * 1000,
	    .reply_ms = cfg->reply_timeout * 1000,
	};
	/* Workers may run INFO before tg_net_start returns: publish the handle atomically. */
	struct tg_net *net;
	rc = tg_net_start(&net, &ncfg, &h, err, sizeof(err));
	if (rc != 0) {
		tg_log("%s", err);
		return rc;
	}
	tg_store_ptr(&srv->net, net);
	srv->port = tg_net_port(srv->net);
	/* Durable mode: replies held for the disk leave as soon as the flush that covers them. */
	if (srv->engine.jw != NULL && tg_jw_mode(srv->engine.jw) == TG_DURABLE)
		tg_jw_on_durable(srv->engine.jw, durable_moved, srv);
	return 0;
}

int
tg_server_start(struct tg_server *srv)
{
	int rc;

	if ((rc = start_auth(srv)) != 0 || (rc = open_table(srv)) != 0 ||
	    (rc = start_engine(srv)) != 0 || (rc = load_rates(srv)) != 0 ||
	    (rc = load_accounts(srv)) != 0 || (rc = start_refill(srv)) != 0 ||
	    /* Step 7: the snapshot thread, once accounts and refills are in place. */
	    (rc = tg_durable_start(srv)) != 0 || (rc = tg_repl_start(srv)) != 0 ||
	    (rc = start_pubsub(srv)) != 0 || (rc = start_net(srv)) != 0 ||
	    /* Step 10: a replica follows, once its port is known (it tells its primary). */
	    (rc = tg_repl_follow(srv)) != 0)
		return rc;
	srv->magic = TG_SERVER_MAGIC;
	tg_log("tollgated %s ready on %s:%u: %u workers, shm %s (generation %llu, %llu of %llu "
	       "accounts)%s",
	       TG_VERSION, srv->cfg.bind, srv->port, srv->workers, srv->table.name,
	       (unsigned long long)srv->table.hdr->generation,
	       (unsigned long long)tg_load_64(&srv->table.hdr->count),
	       (unsigned long long)srv->table.hdr->capacity,
	       srv->auth.required ? ", AUTH required" : "");
	return 0;
}

void
tg_server_stop(struct tg_server *srv)
{
	tg_repl_stopping(srv);
	/* No call into the network layer once it stops (none is running after this). */
	if (srv->net != NULL && srv->engine.jw != NULL)
		tg_jw_on_durable(srv->engine.jw, NULL, NULL);
	if (srv->net)
		tg_net_stop(srv->net);
	srv->net = NULL;
	/* No more records: senders and the receiver let go before the journal closes. */
	tg_repl_stop(srv);
	/* No worker can PUBLISH any more: close the subscribers. */
	tg_pubsub_stop(srv->pubsub);
	srv->pubsub = NULL;
	/* Workers are gone: the publisher drains their rings one last time and stops. */
	tg_refill_stop(&srv->engine);
	tg_stops_stop(&srv->engine);
	/* Nothing changes any more: last sync, last snapshot, the segment marked clean. */
	tg_durable_stop(srv);
	if (srv->engine.table)
		tg_engine_fini(&srv->engine);
	tg_auth_fini(&srv->auth);
	tg_table_close(&srv->table);
}

void
tg_server_restart_due(struct tg_server *srv)
{
	tg_store_8((uint8_t *)&srv->restart, 1);
	/* The main thread waits in sigwait: SIGUSR1 is its word for this. */
	kill(getpid(), SIGUSR1);
}
