/*
 * tollgated.c - the daemon: settings, segment, plans, accounts, network,
 * signals.
 *
 * Start-up either completes or stops with one line saying why (exit 1), or,
 * for bad settings, with one line per bad setting before anything is opened
 * (exit 2; tbl/tg_config_limits.h).  After that the main thread only waits for signals:
 * SIGHUP reloads the rate plans, SIGINT/SIGTERM stop cleanly.  The shared-
 * memory segment outlives the process, so a restart finds its balances.
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
#include "tg_server.h"

static struct tg_server server;

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

static int
start(struct tg_server *srv)
{
	struct tg_config *cfg = &srv->cfg;
	char err[512], accounts[TG_CFG_STR_MAX];
	struct tg_diag diag;
	int rc;

	srv->workers = cfg->workers ? cfg->workers : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	if (srv->workers == 0 || srv->workers > TG_WORKERS_MAX) {
		tg_log("workers: %u is not 1..%d", srv->workers, TG_WORKERS_MAX);
		return -EINVAL;
	}
	srv->pass_len = (uint32_t)strlen(cfg->requirepass);
	/* Credentials first: a bad users file stops start-up before anything is created. */
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

	struct tg_table_cfg tcfg = {.name = cfg->shm_name,
	                            .capacity = cfg->capacity,
	                            .mode = (mode_t)cfg->shm_mode,
	                            .reuse = cfg->shm_reuse,
	                            .group = cfg->shm_group};
	/* The journal's state first: it decides whether a surviving segment may be kept. */
	rc = tg_durable_prepare(srv);
	if (rc != 0)
		return rc;
	rc = tg_durable_open_table(srv, &tcfg);
	if (rc != 0)
		return rc;
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
	struct tg_engine_cfg ecfg = {.max_grant = cfg->max_grant,
	                             .call_grace = cfg->call_grace,
	                             .calls_max = cfg->calls_max,
	                             .ids_max = cfg->ids_max,
	                             .ids_window = cfg->ids_window,
	                             .workers = srv->workers,
	                             .suspend_after = cfg->refill_suspend_after,
	                             .close_after = cfg->refill_close_after};
	rc = tg_engine_init(&srv->engine, &srv->table, &ecfg);
	if (rc != 0) {
		tg_log("cannot set up the engine: %s", strerror(-rc));
		return rc;
	}
	/* Accounts, calls and ids as the journal has them; from here on every change is recorded.
	 */
	rc = tg_durable_install(srv);
	if (rc != 0)
		return rc;

	rc = input_path(cfg->rates, tg__demo_rates, "demo-rates", srv->rates_path,
	                sizeof(srv->rates_path));
	if (rc == 0)
		rc = tg_server_reload(srv, err, sizeof(err));
	if (rc != 0) {
		tg_log("%s", err);
		return rc;
	}
	tg_log("rate plans from %s: %s", cfg->rates[0] ? cfg->rates : "the bundled demo", err);

	if (strcmp(cfg->accounts, "none") != 0) {
		size_t created, skipped;
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
	}

	/* After the accounts (their start-up scan adopts what loading fired), before any worker. */
	struct tg_refill_cfg rcfg = {.host = cfg->redis_host,
	                             .port = cfg->redis_port,
	                             .stream = cfg->refill_stream,
	                             .timeout_s = cfg->refill_timeout,
	                             .ring = cfg->refill_ring};
	rc = tg_refill_start(&srv->engine, &rcfg, err, sizeof(err));
	if (rc != 0) {
		tg_log("%s", err);
		return rc;
	}
	rc = tg_durable_start(srv);
	if (rc != 0)
		return rc;

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
	if (rc == 0)
		tg_store_ptr(&srv->net, net);
	if (rc != 0) {
		tg_log("%s", err);
		return rc;
	}
	srv->port = tg_net_port(srv->net);
	srv->magic = TG_SERVER_MAGIC;
	tg_log("tollgated %s ready on %s:%u: %u workers, shm %s (generation %llu, %llu of %llu "
	       "accounts)%s",
	       TG_VERSION, cfg->bind, srv->port, srv->workers, srv->table.name,
	       (unsigned long long)srv->table.hdr->generation,
	       (unsigned long long)tg_load_64(&srv->table.hdr->count),
	       (unsigned long long)srv->table.hdr->capacity,
	       srv->auth.required ? ", AUTH required" : "");
	return 0;
}

static void
stop(struct tg_server *srv)
{
	if (srv->net)
		tg_net_stop(srv->net);
	srv->net = NULL;
	/* Workers are gone: the publisher drains their rings one last time and stops. */
	tg_refill_stop(&srv->engine);
	/* Nothing changes any more: last sync, last snapshot, the segment marked clean. */
	tg_durable_stop(srv);
	if (srv->engine.table)
		tg_engine_fini(&srv->engine);
	tg_auth_fini(&srv->auth);
	tg_table_close(&srv->table);
}

/* One bad setting: its own line on stderr. */
static void
config_problem(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "tollgated: %s\n", msg);
}

int
main(int argc, char **argv)
{
	struct tg_server *srv = &server;
	char err[512];
	sigset_t set;
	int rc, sig;

	tg_log_init("tollgated");
	tg_config_defaults(&srv->cfg);
	rc = tg_config_args(&srv->cfg, argc, (const char *const *)argv, err, sizeof(err));
	if (rc == 1)
		return 0;
	if (rc != 0) {
		fprintf(stderr, "tollgated: %s (try --help)\n", err);
		return 2;
	}
	/* Every setting checked, each problem said, before the journal or anything is touched. */
	const struct tg_currency *cur = tg_currency_find(srv->cfg.currency);
	int problems = tg_config_check(&srv->cfg, config_problem, NULL);
	if (cur == NULL) {
		fprintf(stderr, "tollgated: currency \"%s\": not a known ISO 4217 code (%s)\n",
		        srv->cfg.currency, tg_currency_codes());
		problems++;
	}
	if (problems > 0)
		return 2;
	tg_currency_set(cur);

	/* Signals go to this thread alone: block them before any worker starts. */
	signal(SIGPIPE, SIG_IGN);
	/* A file-size limit must fail the journal's write (and stop us clearly), not kill us. */
	signal(SIGXFSZ, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	if (start(srv) != 0) {
		stop(srv);
		return 1;
	}
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			rc = tg_server_reload(srv, err, sizeof(err));
			tg_log(rc == 0 ? "SIGHUP: rate plans reloaded: %s" : "SIGHUP: %s", err);
			continue;
		}
		tg_log("%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
		break;
	}
	stop(srv);
	tg_log("stopped");
	return 0;
}
