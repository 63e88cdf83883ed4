/*
 * tollgated.c - the daemon's main(): settings, signals, and the server's
 * start and stop (server.c).
 *
 * Start-up either completes or stops with one line saying why (exit 1), or,
 * for bad settings, with one line per bad setting before anything is opened
 * (exit 2; tbl/tg_config_limits.h).  After that the main thread only waits for signals:
 * SIGHUP reloads the rate plans, SIGINT/SIGTERM stop cleanly.  The shared-
 * memory segment outlives the process, so a restart finds its balances.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tg_atomic.h"
#include "tg_log.h"
#include "tg_server.h"

static struct tg_server server;
/* The program's arguments, for a restart in place from another thread (restart_now). */
static int main_argc;
static char **main_argv;

/* One bad setting: its own line on stderr. */
static void
config_problem(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "tollgated: %s\n", msg);
}

/*
 * Run this program again with the same arguments and replica-of as it is
 * now (the last --replica-of wins) and on the port it listened on.  Returns
 * only when exec fails.
 */
static int
restart(int argc, char **argv, const char *replica_of, uint16_t port)
{
	char **av = calloc((size_t)argc + 5, sizeof(*av)), ps[8];
	if (av == NULL)
		return 1;
	int n = 0;
	for (int i = 0; i < argc; i++) {
		/* The role and port of an earlier restart in place give way to these. */
		if ((strcmp(argv[i], "--replica-of") == 0 || strcmp(argv[i], "--port") == 0) &&
		    i + 1 < argc) {
			i++;
			continue;
		}
		if (strncmp(argv[i], "--replica-of=", 13) == 0 ||
		    strncmp(argv[i], "--port=", 7) == 0)
			continue;
		av[n++] = argv[i];
	}
	argc = n;
	/* The same port, even when it was picked (port 0): Sentinel and clients know it. */
	snprintf(ps, sizeof(ps), "%u", port);
	av[argc] = (char *)"--replica-of";
	av[argc + 1] = (char *)replica_of;
	av[argc + 2] = (char *)"--port";
	av[argc + 3] = ps;
	execv("/proc/self/exe", av);
	tg_log("restart in place: exec failed: %s", strerror(errno));
	free(av);
	return 1;
}

/*
 * srv->restart_exec: the restart in place, from any thread, without the
 * clean stop (a batch waiting for replicas at the stop, repl.c).  Returns
 * only when exec fails.
 */
static void
restart_now(struct tg_server *srv)
{
	char of[TG_CFG_STR_MAX];
	pthread_mutex_lock(&srv->reload_lock);
	memcpy(of, srv->cfg.replica_of, sizeof(of));
	pthread_mutex_unlock(&srv->reload_lock);
	restart(main_argc, main_argv, of, srv->port);
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
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	main_argc = argc;
	main_argv = argv;
	srv->restart_exec = restart_now;
	if (tg_server_start(srv) != 0) {
		tg_server_stop(srv);
		return 1;
	}
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGUSR1) {
			if (!tg_load_8((uint8_t *)&srv->restart))
				continue;
			tg_log("restarting in place");
			break;
		}
		if (sig == SIGHUP) {
			rc = tg_server_reload(srv, err, sizeof(err));
			tg_log(rc == 0 ? "SIGHUP: rate plans reloaded: %s" : "SIGHUP: %s", err);
			continue;
		}
		tg_log("%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
		break;
	}
	if (tg_load_8((uint8_t *)&srv->restart)) {
		/* Let the reply that asked for it (REPLICAOF) leave first. */
		struct timespec ts = {0, 100 * 1000000L};
		nanosleep(&ts, NULL);
	}
	tg_server_stop(srv);
	tg_log("stopped");
	if (tg_load_8((uint8_t *)&srv->restart)) {
		char of[TG_CFG_STR_MAX];
		pthread_mutex_lock(&srv->reload_lock);
		memcpy(of, srv->cfg.replica_of, sizeof(of));
		pthread_mutex_unlock(&srv->reload_lock);
		return restart(argc, argv, of, srv->port);
	}
	return 0;
}
