/*
 * test_repl.c - replication between real tollgated processes (docs/HA.md).
 *
 * A primary and a replica on private ports and data directories: the
 * replica holds what the primary acknowledged, record for record; after a
 * kill -9 of the primary the replica is started as the primary and holds
 * every balance, every call in progress and every id; the old primary, which
 * took changes the replica never had, comes back as a replica, sets those
 * records aside in a directory an operator can read, and follows.  With
 * min-replicas-to-write 1, nothing is acknowledged while the replica is
 * stopped.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "redis_harness.h"
#include "rcmd.h"
#include "tg_journal.h"

/* basic, prefix 1212: $0.005 a minute, 60/60 (tools/demo/rates.csv). */
#define DEST "12125551234"

struct fx {
	char dir[IT_PATH_MAX];
	struct it_daemon p, r, x; /* primary, replica, a second replica */
	redisContext *pc, *rc, *xc;
};

static struct fx F;

/* Stop both; false when a daemon's log holds a sanitizer report. */
static bool
fx_end(struct fx *f)
{
	bool clean = true;
	if (f->pc)
		redisFree(f->pc);
	if (f->rc)
		redisFree(f->rc);
	if (f->xc)
		redisFree(f->xc);
	f->pc = f->rc = f->xc = NULL;
	if (f->p.pid > 0) {
		kill(f->p.pid, SIGCONT);
		clean &= it_stop(&f->p) != -2;
	}
	if (f->r.pid > 0) {
		kill(f->r.pid, SIGCONT);
		clean &= it_stop(&f->r) != -2;
	}
	if (f->x.pid > 0)
		clean &= it_stop(&f->x) != -2;
	if (f->dir[0])
		it_dir_remove(f->dir);
	memset(f, 0, sizeof(*f));
	return clean;
}

static int
teardown(void **state)
{
	(void)state;
	return fx_end(&F) ? 0 : -1;
}

/* Start a replica of the daemon on port, with flags after. */
static void
start_replica(struct it_daemon *d, const char *dir, uint16_t port, const char *const *more)
{
	char of[32];
	const char *flags[16] = {"--replica-of", of};
	size_t n = 2;
	snprintf(of, sizeof(of), "127.0.0.1 %u", port);
	for (size_t i = 0; more != NULL && more[i] != NULL && n < 14; i++)
		flags[n++] = more[i];
	flags[n] = NULL;
	assert_int_equal(it_start(d, dir, flags), 0);
}

/*
 * INFO's journal_lsn of d through *c, or -1 while it cannot be had: a
 * replica restarts in place when it takes a full copy or sets a diverged
 * history aside, and *c is then made again (same port).
 */
static long long
lsn_of(const struct it_daemon *d, redisContext **c)
{
	if (*c == NULL && (*c = it_connect(d)) == NULL)
		return -1;
	redisReply *r = redisCommand(*c, "INFO");
	long long v = -1;
	if (r != NULL && r->type == REDIS_REPLY_STRING) {
		const char *p = strstr(r->str, "\njournal_lsn:");
		if (p != NULL)
			v = atoll(p + 13);
	}
	if (r == NULL || (*c)->err) {
		redisFree(*c);
		*c = NULL;
	}
	if (r != NULL)
		freeReplyObject(r);
	return v;
}

/*
 * Stop d (SIGSTOP) and return once every one of its threads has stopped.
 * kill() returns when the signal is queued, not when the process is stopped:
 * one thread (the main one, waiting in sigwait) is woken to take it and only
 * then stops the others.  Until it runs, the replication receiver, asleep in
 * recv, still wakes for a record, appends it and sends its ACK: a primary
 * then rightly replies to a change sent "after" the stop.  A loaded machine
 * delays that thread for milliseconds (it took up to 9 ms here with the main
 * thread starved), longer than a primary and a replica need to hold a CDR.
 * waitpid(WUNTRACED) reports the stop only once the whole group is stopped.
 */
static void
freeze(const struct it_daemon *d)
{
	int st = 0;
	pid_t got;
	assert_int_equal(kill(d->pid, SIGSTOP), 0);
	while ((got = waitpid(d->pid, &st, WUNTRACED)) < 0 && errno == EINTR)
		;
	assert_int_equal(got, d->pid);
	assert_true(WIFSTOPPED(st));
}

/* Wait (at most 30 s) until the replica's journal ends where the primary's does. */
static void
caught_up(const struct it_daemon *pd, redisContext **p, const struct it_daemon *rd,
          redisContext **r)
{
	long long want = -1, have = -2;
	for (int i = 0; i < 600; i++) {
		want = lsn_of(pd, p);
		have = lsn_of(rd, r);
		if (want > 0 && have == want)
			break;
		usleep(50000);
	}
	assert_int_equal(have, want);
}

/* The money of account acct, the same on both. */
static void
same_account(redisContext *a, redisContext *b, uint64_t acct)
{
	assert_int_equal(it_acct_money(a, acct, "balance"), it_acct_money(b, acct, "balance"));
	assert_int_equal(it_acct_money(a, acct, "reserved"), it_acct_money(b, acct, "reserved"));
	assert_int_equal(it_acct_money(a, acct, "usage_national"),
	                 it_acct_money(b, acct, "usage_national"));
}

/* A file under dir (one level of subdirectories) whose bytes contain needle. */
static bool
found_in_files(const char *dir, const char *needle)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	bool found = false;
	if (d == NULL)
		return false;
	while (!found && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char path[IT_PATH_MAX + 300];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (stat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			found = found_in_files(path, needle);
			continue;
		}
		FILE *f = fopen(path, "rb");
		if (f == NULL)
			continue;
		char *buf = malloc((size_t)st.st_size + 1);
		size_t n = fread(buf, 1, (size_t)st.st_size, f);
		fclose(f);
		found = memmem(buf, n, needle, strlen(needle)) != NULL;
		free(buf);
	}
	closedir(d);
	return found;
}

/* A subdirectory of dir named diverged-*, into out; false when none. */
static bool
diverged_dir(const char *dir, char *out, size_t cap)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	bool found = false;
	while (d != NULL && !found && (e = readdir(d)) != NULL)
		if (strncmp(e->d_name, "diverged-", 9) == 0) {
			found = snprintf(out, cap, "%s/%s", dir, e->d_name) < (int)cap;
		}
	if (d != NULL)
		closedir(d);
	return found;
}

/*
 * The whole course: follow, fail over, come back diverged.  A call in
 * progress on the old primary is ended on the new one at its real duration;
 * a CDR retried on the new primary answers its first reply and charges
 * nothing; the records only the old primary took are set aside, never
 * applied and never lost.
 */
static void
test_follow_failover_and_diverged_return(void **state)
{
	(void)state;
	assert_int_equal(it_dir_make(F.dir, sizeof(F.dir)), 0);
	assert_int_equal(it_start(&F.p, F.dir, NULL), 0);
	F.pc = it_connect(&F.p);
	it_run_cmd(F.pc, "ACCT.SET 1 BALANCE 100 PLAN basic");
	it_run_cmd(F.pc, "ACCT.SET 2 PLAN basic KIND postpaid LIMIT 20");
	for (int i = 0; i < 50; i++)
		it_run_cmd(F.pc, "CDR 1 %s 60 before-%d", DEST, i);
	start_replica(&F.r, F.dir, F.p.port, NULL);
	F.rc = it_connect(&F.r);
	/* Records made while it streams, too. */
	for (int i = 0; i < 50; i++)
		it_run_cmd(F.pc, "CDR 1 %s 120 during-%d", DEST, i);
	it_run_cmd(F.pc, "ACCT.CREDIT 1 7.5 pay-1");
	assert_int_equal(it_int_cmd(F.pc, "CALL.AUTH 2 %s live-1", DEST), 3600);
	caught_up(&F.p, &F.pc, &F.r, &F.rc);
	same_account(F.pc, F.rc, 1);
	same_account(F.pc, F.rc, 2);
	char kind[16];
	it_acct_field(F.rc, 2, "kind", kind, sizeof(kind));
	assert_string_equal(kind, "postpaid");
	tg_money_t b1 = it_acct_money(F.pc, 1, "balance");

	/*
	 * The link is cut (the replica stops; a stopped process would still
	 * take what its socket buffer holds, so it is stopped for good); the
	 * primary takes three more CDRs; then it dies.
	 */
	redisFree(F.rc);
	F.rc = NULL;
	assert_int_equal(it_term(&F.r), 0);
	for (int i = 0; i < 3; i++)
		it_run_cmd(F.pc, "CDR 1 %s 60 only-old-%d", DEST, i);
	redisFree(F.pc);
	F.pc = NULL;
	assert_int_equal(it_kill(&F.p), 0);

	/* The replica becomes the primary: a start without replica-of. */
	const char *primary[] = {"--replica-of", "", NULL};
	assert_int_equal(it_restart(&F.r, primary, 0), 0);
	F.rc = it_connect(&F.r);
	assert_int_equal(it_acct_money(F.rc, 1, "balance"), b1);
	/* A CDR acknowledged before the failover, retried: its first reply, nothing charged. */
	tg_money_t first = it_money("0.010000");
	redisReply *rep = it_cmd(F.rc, "CDR 1 %s 120 during-7", DEST);
	assert_int_equal(it_money(rep->str), first);
	freeReplyObject(rep);
	assert_int_equal(it_acct_money(F.rc, 1, "balance"), b1);
	/* The call in progress ends here, at its real duration. */
	rep = it_cmd(F.rc, "CALL.END 2 live-1 600");
	assert_int_equal(it_money(rep->str), it_money("0.050000"));
	freeReplyObject(rep);
	assert_int_equal(it_acct_money(F.rc, 2, "balance"), -it_money("0.05"));
	it_run_cmd(F.rc, "CDR 1 %s 60 only-new-1", DEST);

	/* The old primary comes back as a replica of the new one. */
	char of[32];
	snprintf(of, sizeof(of), "127.0.0.1 %u", F.r.port);
	const char *follow[] = {"--replica-of", of, NULL};
	assert_int_equal(it_restart(&F.p, follow, 0), 0);
	F.pc = it_connect(&F.p);
	caught_up(&F.r, &F.rc, &F.p, &F.pc);
	same_account(F.rc, F.pc, 1);
	same_account(F.rc, F.pc, 2);
	/* Its three CDRs are nowhere in the books, and kept aside for the operator. */
	char aside[IT_PATH_MAX + 300];
	assert_true(diverged_dir(F.p.data, aside, sizeof(aside)));
	assert_true(found_in_files(aside, "only-old-2"));
	assert_true(it_log_has(&F.p, "set aside in"));
	/* A second replica start (nothing diverged now) continues where it was. */
	redisFree(F.pc);
	F.pc = NULL;
	assert_int_equal(it_term(&F.p), 0);
	assert_int_equal(it_restart(&F.p, follow, 0), 0);
	F.pc = it_connect(&F.p);
	it_run_cmd(F.rc, "CDR 1 %s 60 only-new-2", DEST);
	caught_up(&F.r, &F.rc, &F.p, &F.pc);
	same_account(F.rc, F.pc, 1);
}

/*
 * bursts x 1000 CDRs on account 1 through F.pc, pipelined, ids many-0 on:
 * faster than ids move to disk without pressure (every 5 s).
 */
static void
cdr_bursts(int bursts)
{
	for (int k = 0; k < bursts; k++) {
		for (int i = 0; i < 1000; i++)
			redisAppendCommand(F.pc, "CDR 1 %s 60 many-%d", DEST, k * 1000 + i);
		for (int i = 0; i < 1000; i++) {
			redisReply *rep;
			assert_int_equal(redisGetReply(F.pc, (void **)&rep), REDIS_OK);
			assert_int_equal(rep->type, REDIS_REPLY_STRING);
			freeReplyObject(rep);
		}
	}
}

/* A primary started with flags and its replica, account 1 ($100) on both. */
static void
pair(const char *const *flags)
{
	assert_int_equal(it_dir_make(F.dir, sizeof(F.dir)), 0);
	assert_int_equal(it_start(&F.p, F.dir, flags), 0);
	F.pc = it_connect(&F.p);
	start_replica(&F.r, F.dir, F.p.port, NULL);
	F.rc = it_connect(&F.r);
	it_first_change(F.pc, "ACCT.SET 1 BALANCE 100 PLAN basic");
	caught_up(&F.p, &F.pc, &F.r, &F.rc);
}

/*
 * A primary with min-replicas-to-write 1 (timeout 300 ms) and its replica,
 * account 1 created once the replica streams (until then a change is
 * refused at once, NOREPLICAS, not held), both caught up.
 */
static void
sync_pair(void)
{
	static const char *const sync[] = {"--min-replicas-to-write", "1", "--min-replicas-timeout",
	                                   "300", NULL};
	pair(sync);
}

/*
 * min-replicas-to-write 1: while the only replica is stopped, a CDR gets no
 * reply at all (it is on one node only); once the replica runs again, the
 * reply comes, and the change is on both.
 */
static void
test_sync_replica_holds_before_the_reply(void **state)
{
	(void)state;
	sync_pair();
	it_run_cmd(F.pc, "CDR 1 %s 60 s-1", DEST);
	caught_up(&F.p, &F.pc, &F.r, &F.rc);

	freeze(&F.r);
	int fd = it_raw_connect(F.p.port);
	assert_true(fd >= 0);
	static const char cdr[] =
	    "*5\r\n$3\r\nCDR\r\n$1\r\n1\r\n$11\r\n" DEST "\r\n$2\r\n60\r\n$3\r\ns-2\r\n";
	assert_int_equal(it_raw_write(fd, cdr, sizeof(cdr) - 1), 0);
	char buf[256];
	int closed;
	/* Well past min-replicas-timeout: still no reply. */
	assert_int_equal(it_raw_read(fd, buf, sizeof(buf), 1500, &closed), 0);
	assert_int_equal(closed, 0);
	assert_int_equal(kill(F.r.pid, SIGCONT), 0);
	size_t n = it_raw_read(fd, buf, sizeof(buf), 3000, &closed);
	assert_true(n > 0);
	assert_memory_equal(buf, "$5\r\n0.005\r\n", 11);
	close(fd);
	caught_up(&F.p, &F.pc, &F.r, &F.rc);
	same_account(F.pc, F.rc, 1);
	assert_true(it_log_has(&F.p, "refusing money-moving commands"));
}

/* Every thread of pid on cpu alone (sched_setaffinity of each task). */
static void
pin_threads(pid_t pid, int cpu)
{
	char path[64];
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	assert_non_null(d);
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		if (e->d_name[0] != '.')
			assert_int_equal(sched_setaffinity(atoi(e->d_name), sizeof(one), &one), 0);
	closedir(d);
}

/* A child that spins on cpu until killed. */
static pid_t
spin_on(int cpu)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		cpu_set_t one;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		sched_setaffinity(0, sizeof(one), &one);
		for (volatile unsigned long n = 0;; n++)
			;
	}
	return pid;
}

static void
spin_end(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/*
 * The same hold, with a replica slow to stop: the thread that SIGSTOP wakes
 * (its main thread) starved on one CPU behind two busy loops, its other
 * threads free on another, as a loaded machine may leave them.  Round after
 * round a CDR sent once the replica is stopped gets no reply until it runs
 * again.  With kill() alone in place of freeze(), the replica's receiver
 * took the CDR and acknowledged it before the stop reached it, and the
 * primary replied: half the rounds, against none with freeze().
 */
static void
test_sync_replica_slow_to_stop_gets_no_early_reply(void **state)
{
	(void)state;
	cpu_set_t mine;
	int cpu[2], n = 0;
	assert_int_equal(sched_getaffinity(0, sizeof(mine), &mine), 0);
	for (int i = 0; i < CPU_SETSIZE && n < 2; i++)
		if (CPU_ISSET(i, &mine))
			cpu[n++] = i;
	if (n < 2)
		skip(); /* one CPU: no thread of the replica runs while another waits */
	sync_pair();
	/* Its main thread's id is its pid: that one alone waits, on cpu[0]. */
	pin_threads(F.r.pid, cpu[1]);
	cpu_set_t first;
	CPU_ZERO(&first);
	CPU_SET(cpu[0], &first);
	assert_int_equal(sched_setaffinity(F.r.pid, sizeof(first), &first), 0);
	struct sched_param idle = {0};
	assert_int_equal(sched_setscheduler(F.r.pid, SCHED_IDLE, &idle), 0);

	for (int round = 0; round < 5; round++) {
		pid_t a = spin_on(cpu[0]), b = spin_on(cpu[0]);
		it_sleep_ms(100);
		freeze(&F.r);
		int fd = it_raw_connect(F.p.port);
		assert_true(fd >= 0);
		char cdr[128], id[16], buf[256];
		int closed;
		snprintf(id, sizeof(id), "late-%d", round);
		int len = snprintf(cdr, sizeof(cdr),
		                   "*5\r\n$3\r\nCDR\r\n$1\r\n1\r\n$11\r\n" DEST
		                   "\r\n$2\r\n60\r\n$%zu\r\n%s\r\n",
		                   strlen(id), id);
		assert_int_equal(it_raw_write(fd, cdr, (size_t)len), 0);
		/* Past min-replicas-timeout: nothing, whatever round. */
		size_t got = it_raw_read(fd, buf, sizeof(buf), 800, &closed);
		spin_end(a);
		spin_end(b);
		if (got != 0)
			fail_msg("round %d: a reply while the replica was stopped: %s", round, buf);
		assert_int_equal(kill(F.r.pid, SIGCONT), 0);
		got = it_raw_read(fd, buf, sizeof(buf), 3000, &closed);
		assert_true(got >= 11);
		assert_memory_equal(buf, "$5\r\n0.005\r\n", 11);
		close(fd);
		caught_up(&F.p, &F.pc, &F.r, &F.rc);
	}
	same_account(F.pc, F.rc, 1);
}

/* `tollstat account acct` on d's segment: the value of its line name, into out. */
static void
stat_field(const struct it_daemon *d, uint64_t acct, const char *name, char *out, size_t cap)
{
	const char *bin = getenv("TOLLSTAT");
	char cmd[IT_PATH_MAX + 128], line[256];
	assert_non_null(bin);
	snprintf(cmd, sizeof(cmd), "'%s' --shm '%s' account %llu", bin, d->shm,
	         (unsigned long long)acct);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	out[0] = '\0';
	size_t n = strlen(name);
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, name, n) == 0 && line[n] == ' ') {
			const char *v = line + n;
			while (*v == ' ')
				v++;
			snprintf(out, cap, "%.*s", (int)strcspn(v, "\n"), v);
		}
	assert_int_equal(pclose(f), 0);
}

/*
 * A refill request the primary fired is in the replica's table as it was
 * fired: the same id, balance and amount, from the journal's refill_fired
 * record.  The replica's table had no record of it (tollstat showed none);
 * a promoted node rebuilds it from its journal at its restart either way.
 */
static void
test_replica_table_holds_the_fired_refill(void **state)
{
	struct tg_test_redis redis = {0};
	char port[16], v[128];
	(void)state;
	assert_int_equal(tg_test_redis_start(&redis), 0);
	snprintf(port, sizeof(port), "%u", redis.port);
	assert_int_equal(it_dir_make(F.dir, sizeof(F.dir)), 0);
	const char *pub[] = {"--redis-host", "127.0.0.1", "--redis-port", port, NULL};
	assert_int_equal(it_start(&F.p, F.dir, pub), 0);
	F.pc = it_connect(&F.p);
	start_replica(&F.r, F.dir, F.p.port, NULL);
	F.rc = it_connect(&F.r);
	it_run_cmd(F.pc,
	           "ACCT.SET 7 BALANCE 10.5 PLAN basic THRESHOLD 10 REFILL TOPUP 30 PAYMENT on");
	it_run_cmd(F.pc, "CDR 7 %s 6000 r-1", DEST); /* $0.50: 10.00 left, at the threshold */
	caught_up(&F.p, &F.pc, &F.r, &F.rc);
	assert_int_equal(it_acct_int(F.rc, 7, "refill_pending"), 1);
	stat_field(&F.r, 7, "refill_record", v, sizeof(v));
	assert_string_equal(v, "refill:7:1 pending");
	stat_field(&F.r, 7, "refill_record_amount", v, sizeof(v));
	assert_string_equal(v, "20");
	stat_field(&F.r, 7, "refill_record_balance", v, sizeof(v));
	assert_string_equal(v, "10");
	/* The balance moves on; the record keeps the amount as fired. */
	it_run_cmd(F.pc, "CDR 7 %s 12000 r-2", DEST);
	caught_up(&F.p, &F.pc, &F.r, &F.rc);
	stat_field(&F.r, 7, "refill_record_amount", v, sizeof(v));
	assert_string_equal(v, "20");
	tg_test_redis_stop(&redis);
}

/*
 * min-replicas-to-write 1 and no replica streaming: a change is refused at
 * once with NOREPLICAS.  It used to be taken and held, and the worker with
 * it: every connection of that worker (Sentinel's PING among them) waited
 * until a replica came, so a primary just promoted looked down.
 */
static void
test_no_replica_streaming_refuses_at_once(void **state)
{
	(void)state;
	assert_int_equal(it_dir_make(F.dir, sizeof(F.dir)), 0);
	const char *sync[] = {"--min-replicas-to-write", "1", "--min-replicas-timeout", "2000",
	                      NULL};
	assert_int_equal(it_start(&F.p, F.dir, sync), 0);
	int fd = it_raw_connect(F.p.port);
	assert_true(fd >= 0);
	static const char set[] =
	    "*6\r\n$8\r\nACCT.SET\r\n$1\r\n1\r\n$7\r\nBALANCE\r\n$3\r\n100\r\n"
	    "$4\r\nPLAN\r\n$5\r\nbasic\r\n";
	assert_int_equal(it_raw_write(fd, set, sizeof(set) - 1), 0);
	char buf[256];
	int closed;
	assert_true(it_raw_read(fd, buf, sizeof(buf), 500, &closed) > 0);
	if (strncmp(buf, "-NOREPLICAS ", 12) != 0)
		fprintf(stderr, "reply: %s\n", buf);
	assert_memory_equal(buf, "-NOREPLICAS ", 12);
	close(fd);
	F.pc = it_connect(&F.p);
	char err[128];
	it_error_of(F.pc, err, sizeof(err), "ACCT.GET 1");
	assert_string_equal(err, "NOACCOUNT no such account");
}

/*
 * Wait (at most 30 s) until d answers ROLE with role: the same process,
 * which restarts in place and never exits.
 */
static void
role_is(const struct it_daemon *d, const char *role)
{
	bool is = false;
	for (int i = 0; i < 600 && !is; i++) {
		int st;
		assert_int_equal(waitpid(d->pid, &st, WNOHANG), 0); /* never exits */
		redisContext *c = it_connect(d);
		redisReply *ro = c ? redisCommand(c, "ROLE") : NULL;
		is = ro != NULL && ro->type == REDIS_REPLY_ARRAY &&
		     strcmp(ro->element[0]->str, role) == 0;
		if (ro)
			freeReplyObject(ro);
		if (c)
			redisFree(c);
		if (!is)
			usleep(50000);
	}
	assert_true(is);
}

/*
 * A primary demoted (REPLICAOF) while a batch waits for its replica: the
 * batch gets no reply, and the node restarts in place in its new role.  It
 * used to exit, and stayed down until something started it again.
 */
static void
test_demoted_with_a_held_batch_restarts(void **state)
{
	(void)state;
	sync_pair();

	freeze(&F.r);
	int fd = it_raw_connect(F.p.port);
	assert_true(fd >= 0);
	static const char cdr[] =
	    "*5\r\n$3\r\nCDR\r\n$1\r\n1\r\n$11\r\n" DEST "\r\n$2\r\n60\r\n$3\r\nh-1\r\n";
	assert_int_equal(it_raw_write(fd, cdr, sizeof(cdr) - 1), 0);
	char buf[256];
	int closed;
	assert_int_equal(it_raw_read(fd, buf, sizeof(buf), 800, &closed), 0);
	/*
	 * Sentinel demotes it: to follow its replica (any address will do here).
	 * The held batch holds its worker too: REPLICAOF goes by a connection
	 * the other worker serves (one that answers PING at once).
	 */
	redisFree(F.pc);
	F.pc = NULL;
	for (int i = 0; i < 16 && F.pc == NULL; i++) {
		redisContext *c = it_connect(&F.p);
		struct timeval tv = {0, 300000};
		redisSetTimeout(c, tv);
		redisReply *pong = redisCommand(c, "PING");
		if (pong != NULL) {
			freeReplyObject(pong);
			F.pc = c;
		} else {
			redisFree(c);
		}
	}
	assert_non_null(F.pc);
	redisReply *r = redisCommand(F.pc, "REPLICAOF 127.0.0.1 %u", F.r.port);
	assert_non_null(r);
	assert_string_equal(r->str, "OK");
	freeReplyObject(r);
	/* The held CDR: closed, never answered. */
	assert_int_equal(it_raw_read(fd, buf, sizeof(buf), 3000, &closed), 0);
	assert_int_equal(closed, 1);
	close(fd);
	redisFree(F.pc);
	F.pc = NULL;
	/* The same process, on the same port, a replica now. */
	role_is(&F.p, "slave");
	assert_true(it_log_has(&F.p, "restarting in place at once without replying"));
	assert_int_equal(kill(F.r.pid, SIGCONT), 0);
}

/*
 * Regression: a replica kept every id it followed in its replay state (its
 * own workers hold none, so nothing pressed them to disk), and a replica that
 * had followed more ids than ids-max could not start as a primary ("the
 * journal remembers more ids than ids-max allows").  It moves them to disk as
 * a primary does; promoted, it answers every id's first reply.
 */
static void
test_replica_past_ids_max_can_be_promoted(void **state)
{
	(void)state;
	const char *small[] = {"--ids-max", "20000", NULL};
	assert_int_equal(it_dir_make(F.dir, sizeof(F.dir)), 0);
	assert_int_equal(it_start(&F.p, F.dir, small), 0);
	F.pc = it_connect(&F.p);
	start_replica(&F.r, F.dir, F.p.port, small);
	F.rc = it_connect(&F.r);
	it_run_cmd(F.pc, "ACCT.SET 1 BALANCE 100000 PLAN basic");
	/* 60,000 ids in bursts faster than a spill every 5 s without pressure. */
	cdr_bursts(60);
	caught_up(&F.p, &F.pc, &F.r, &F.rc);
	tg_money_t b = it_acct_money(F.pc, 1, "balance");
	redisFree(F.pc);
	F.pc = NULL;
	assert_int_equal(it_kill(&F.p), 0);
	redisFree(F.rc);
	F.rc = NULL;
	assert_int_equal(it_term(&F.r), 0);
	const char *primary[] = {"--replica-of", "", "--ids-max", "20000", NULL};
	assert_int_equal(it_restart(&F.r, primary, 0), 0);
	F.rc = it_connect(&F.r);
	assert_int_equal(it_acct_money(F.rc, 1, "balance"), b);
	/* The first and the last ids: their first replies, nothing charged again. */
	redisReply *rep = it_cmd(F.rc, "CDR 1 %s 60 many-0", DEST);
	assert_int_equal(it_money(rep->str), it_money("0.005"));
	freeReplyObject(rep);
	rep = it_cmd(F.rc, "CDR 1 %s 60 many-59999", DEST);
	assert_int_equal(it_money(rep->str), it_money("0.005"));
	freeReplyObject(rep);
	assert_int_equal(it_acct_money(F.rc, 1, "balance"), b);
}

/* ---- an ahead replica's records taken over by the new primary ---- */

#define CREDITS 100
static const char *const SYNC1[] = {"--min-replicas-to-write", "1", "--min-replicas-timeout",
                                    "2000", NULL};

/* Send "REPLICAOF host port" (or NO ONE) to d; +OK, and d restarts in place. */
static void
replicaof(const struct it_daemon *d, const char *host, const char *port)
{
	redisContext *c = it_connect(d);
	assert_non_null(c);
	redisReply *r = redisCommand(c, "REPLICAOF %s %s", host, port);
	assert_non_null(r);
	assert_string_equal(r->str, "OK");
	freeReplyObject(r);
	redisFree(c);
}

/* Wait (at most 30 s) until account 1's balance on d is want. */
static void
balance_becomes(const struct it_daemon *d, redisContext **c, tg_money_t want)
{
	tg_money_t have = -1;
	for (int i = 0; i < 600 && have != want; i++) {
		if (*c == NULL)
			*c = it_connect(d);
		/* One ACCT.GET a look: the node restarts in place when it took records over. */
		redisReply *r = *c ? redisCommand(*c, "ACCT.GET 1") : NULL;
		if (r == NULL) {
			if (*c)
				redisFree(*c);
			*c = NULL;
			usleep(50000);
			continue;
		}
		for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k + 1 < r->elements; k += 2)
			if (strcmp(r->element[k]->str, "balance") == 0 && r->element[k + 1]->str)
				have = it_money(r->element[k + 1]->str);
		freeReplyObject(r);
		if (have != want)
			usleep(50000);
	}
	assert_int_equal(have, want);
}

/*
 * A (F.p) primary, B (F.r) and C (F.x) its replicas, all with flags; first
 * taken once they stream, all caught up; then C is killed.
 */
static void
three_nodes_c_down(const char *const *flags, const char *first)
{
	assert_int_equal(it_dir_make(F.dir, sizeof(F.dir)), 0);
	assert_int_equal(it_start(&F.p, F.dir, flags), 0);
	F.pc = it_connect(&F.p);
	start_replica(&F.r, F.dir, F.p.port, flags);
	start_replica(&F.x, F.dir, F.p.port, flags);
	it_first_change(F.pc, first);
	caught_up(&F.p, &F.pc, &F.r, &F.rc);
	caught_up(&F.p, &F.pc, &F.x, &F.xc);
	redisFree(F.xc);
	F.xc = NULL;
	assert_int_equal(it_kill(&F.x), 0);
}

/* C comes back with flags following the dead A, and is promoted: it is behind B. */
static void
promote_c_behind(const char *const *flags)
{
	char of[32];
	const char *follow[16] = {"--replica-of", of};
	size_t n = 2;
	snprintf(of, sizeof(of), "127.0.0.1 %u", F.p.port);
	for (size_t i = 0; flags[i] != NULL && n < 15; i++)
		follow[n++] = flags[i];
	follow[n] = NULL;
	assert_int_equal(it_restart(&F.x, follow, 0), 0);
	replicaof(&F.x, "NO", "ONE");
	role_is(&F.x, "master");
}

/*
 * A (primary), B and C (replicas), all with min-replicas-to-write 1; C is
 * killed; CREDITS credits are acknowledged by A and B (their replies kept in
 * reply[]); A is killed; C starts again, a replica of the dead A, and is
 * promoted (REPLICAOF NO ONE): it holds none of the credits.  Returns the
 * balance A acknowledged last.  F.p is A, F.r is B, F.x is C.
 */
static tg_money_t
ahead_setup(char reply[CREDITS][32])
{
	three_nodes_c_down(SYNC1, "ACCT.SET 1 BALANCE 100 PLAN basic");
	for (int i = 0; i < CREDITS; i++) {
		redisReply *r = it_cmd(F.pc, "ACCT.CREDIT 1 1.25 cr-%d", i);
		assert_int_equal(r->type, REDIS_REPLY_STRING);
		snprintf(reply[i], 32, "%s", r->str);
		freeReplyObject(r);
	}
	tg_money_t b = it_acct_money(F.pc, 1, "balance");
	assert_int_equal(b, it_money("100") + CREDITS * it_money("1.25"));
	caught_up(&F.p, &F.pc, &F.r, &F.rc);
	redisFree(F.pc);
	F.pc = NULL;
	assert_int_equal(it_kill(&F.p), 0);
	promote_c_behind(SYNC1);
	return b;
}

/*
 * Every credit on c: its first reply again, nothing credited twice.  The
 * new primary answers NOREPLICAS until its replica streams from it (a
 * client retries): the first replay is retried so.
 */
static void
credits_replay(redisContext *c, char reply[CREDITS][32], tg_money_t b)
{
	it_first_change(c, "ACCT.CREDIT 1 1.25 cr-0");
	for (int i = 0; i < CREDITS; i++) {
		redisReply *r = it_cmd(c, "ACCT.CREDIT 1 1.25 cr-%d", i);
		assert_int_equal(r->type, REDIS_REPLY_STRING);
		assert_string_equal(r->str, reply[i]);
		freeReplyObject(r);
	}
	assert_int_equal(it_acct_money(c, 1, "balance"), b);
}

/* No node's data directory holds a diverged-* directory. */
static void
nothing_aside(void)
{
	char aside[IT_PATH_MAX + 300];
	assert_false(diverged_dir(F.r.data, aside, sizeof(aside)));
	assert_false(diverged_dir(F.x.data, aside, sizeof(aside)));
}

/*
 * Regression: credits acknowledged by the primary and one replica were lost
 * when Sentinel promoted the other replica, which was behind.  The replica
 * ahead asked the new primary to continue the same history, was answered
 * DIVERGED, and set the acknowledged credits aside; both nodes missed them.
 * The new primary takes them over from it instead.
 */
static void
test_promoted_behind_takes_over_acknowledged_credits(void **state)
{
	(void)state;
	char reply[CREDITS][32];
	tg_money_t b = ahead_setup(reply);

	/* B (ahead) is made C's replica, as Sentinel does. */
	char port[8];
	snprintf(port, sizeof(port), "%u", F.x.port);
	replicaof(&F.r, "127.0.0.1", port);
	balance_becomes(&F.x, &F.xc, b);
	caught_up(&F.x, &F.xc, &F.r, &F.rc);
	assert_int_equal(it_acct_money(F.rc, 1, "balance"), b);
	nothing_aside();
	assert_true(it_log_has(&F.x, "taken over from replica"));
	/* Every credit's txid answers its first reply on the new primary. */
	credits_replay(F.xc, reply, b);
	/* The new primary takes changes, acknowledged by B. */
	redisReply *r = it_cmd(F.xc, "ACCT.CREDIT 1 2 after-1");
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	freeReplyObject(r);
	caught_up(&F.x, &F.xc, &F.r, &F.rc);
	assert_int_equal(it_acct_money(F.rc, 1, "balance"), b + it_money("2"));
	nothing_aside();
}

/*
 * Defect: a takeover of more records than ids-max ids left the new primary
 * unable to start: it restarted in place from its journal, whose records
 * taken over held more ids than memory may (docs/CONFIG.md, ids-max), and
 * refused ("the journal remembers more ids than ids-max allows").  Seen in
 * the Sentinel failover test after a takeover of 391,936 records.  The
 * records are now in a snapshot, and their ids on disk, before the restart.
 */
static void
test_takeover_past_ids_max_restarts(void **state)
{
	(void)state;
	const char *small[] = {"--min-replicas-to-write",
	                       "1",
	                       "--min-replicas-timeout",
	                       "2000",
	                       "--ids-max",
	                       "20000",
	                       NULL};
	three_nodes_c_down(small, "ACCT.SET 1 BALANCE 100000 PLAN basic");
	/* 30,000 ids that only A and B hold. */
	cdr_bursts(30);
	caught_up(&F.p, &F.pc, &F.r, &F.rc);
	tg_money_t b = it_acct_money(F.pc, 1, "balance");
	redisFree(F.pc);
	F.pc = NULL;
	assert_int_equal(it_kill(&F.p), 0);
	/* C, behind, follows the dead A and is promoted; B follows C. */
	promote_c_behind(small);
	char port[8];
	snprintf(port, sizeof(port), "%u", F.x.port);
	replicaof(&F.r, "127.0.0.1", port);
	balance_becomes(&F.x, &F.xc, b);
	assert_true(it_log_has(&F.x, "taken over from replica"));
	nothing_aside();
	/* The first and the last ids: their first replies, nothing charged again. */
	it_first_change(F.xc, "CDR 1 " DEST " 60 many-0");
	redisReply *rep = it_cmd(F.xc, "CDR 1 %s 60 many-29999", DEST);
	assert_int_equal(it_money(rep->str), it_money("0.005"));
	freeReplyObject(rep);
	assert_int_equal(it_acct_money(F.xc, 1, "balance"), b);
}

/* The id on the last line of DIR/repl.history (the history the node follows now). */
static void
last_history(const char *dir, char *id, size_t cap)
{
	char path[IT_PATH_MAX + 32], line[128], first[64] = "";
	snprintf(path, sizeof(path), "%s/repl.history", dir);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL)
		sscanf(line, "%63s", first);
	fclose(f);
	snprintf(id, cap, "%s", first);
}

/* Send the records from..upto of the journal in dir on fd, as a replica gives them. */
static void
give_records(int fd, const char *dir, uint64_t from, uint64_t upto)
{
	struct tg_journal_reader *jr;
	struct tg_jrec rec;
	static char buf[1 << 16];
	assert_int_equal(tg_journal_open_dir(&jr, dir), 0);
	while (tg_journal_next(jr, &rec) == TG_JOURNAL_OK && rec.lsn <= upto) {
		if (rec.lsn < from)
			continue;
		ssize_t n = tg_journal_encode(buf, sizeof(buf), rec.type, rec.lsn, rec.time,
		                              rec.payload, rec.len);
		assert_true(n > 0);
		assert_int_equal(it_raw_write(fd, buf, (size_t)n), 0);
	}
	tg_journal_close(jr);
}

/* REPL.SYNC hist lsn port on a new raw connection to d; its first reply line into line. */
static int
raw_sync(const struct it_daemon *d, const char *hist, uint64_t lsn, uint16_t port, char *line,
         size_t cap)
{
	char cmd[256], l[24], p[8];
	int closed;
	int fd = it_raw_connect(d->port);
	assert_true(fd >= 0);
	snprintf(l, sizeof(l), "%llu", (unsigned long long)lsn);
	snprintf(p, sizeof(p), "%u", port);
	int n = snprintf(cmd, sizeof(cmd),
	                 "*4\r\n$9\r\nREPL.SYNC\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n",
	                 strlen(hist), hist, strlen(l), l, strlen(p), p);
	assert_int_equal(it_raw_write(fd, cmd, (size_t)n), 0);
	assert_true(it_raw_read(fd, line, cap, 500, &closed) > 0);
	return fd;
}

/*
 * Defect: a replica that connected again (its old link half dead: no FIN,
 * no reset) held two sender slots, and both counted toward
 * min-replicas-to-write until TCP gave up on the old one: with 2, one
 * replica could stand for two.  The primary now closes the old link of the
 * same address and serving port when the new one arrives.
 */
static void
test_replica_connecting_again_counts_once(void **state)
{
	(void)state;
	char hist[64], line[256], buf[256];
	int closed;
	pair(NULL);
	/* The replica goes; this test speaks for it, twice, from its history. */
	redisFree(F.rc);
	F.rc = NULL;
	uint16_t port = F.r.port;
	assert_int_equal(it_term(&F.r), 0);
	last_history(F.r.data, hist, sizeof(hist));
	long long lsn = lsn_of(&F.p, &F.pc);
	assert_true(lsn > 0);
	int old = raw_sync(&F.p, hist, (uint64_t)lsn, port, line, sizeof(line));
	assert_memory_equal(line, "+CONTINUE ", 10);
	int fresh = raw_sync(&F.p, hist, (uint64_t)lsn, port, line, sizeof(line));
	assert_memory_equal(line, "+CONTINUE ", 10);
	/* The old link is closed by the primary; one replica is connected. */
	it_raw_read(old, buf, sizeof(buf), 2000, &closed);
	assert_int_equal(closed, 1);
	long long n = -1;
	for (int i = 0; i < 100 && n != 1; i++) {
		n = it_info(F.pc, "connected_slaves");
		usleep(20000);
	}
	assert_int_equal(n, 1);
	assert_true(it_log_has(&F.p, "connected again: its old link closed"));
	close(old);
	close(fresh);
}

/*
 * A crash of the new primary in the middle of a takeover: it had half the
 * records on disk.  Started again, it takes the rest over from the same
 * replica, and nothing is set aside or counted twice.
 */
static void
test_takeover_cut_by_a_crash_resumes(void **state)
{
	(void)state;
	char reply[CREDITS][32];
	tg_money_t b = ahead_setup(reply);

	/* B stops; this test speaks for it, from its own journal. */
	redisFree(F.rc);
	F.rc = NULL;
	assert_int_equal(it_term(&F.r), 0);
	char hist[64], cmd[256], line[256];
	last_history(F.r.data, hist, sizeof(hist));
	struct tg_journal_reader *jr;
	struct tg_jrec rec;
	uint64_t last = 0;
	assert_int_equal(tg_journal_open_dir(&jr, F.r.data), 0);
	while (tg_journal_next(jr, &rec) == TG_JOURNAL_OK)
		last = rec.lsn;
	tg_journal_close(jr);
	int fd = it_raw_connect(F.x.port);
	assert_true(fd >= 0);
	char lsn[24], port[8];
	snprintf(lsn, sizeof(lsn), "%llu", (unsigned long long)last);
	snprintf(port, sizeof(port), "%u", F.r.port);
	int n = snprintf(cmd, sizeof(cmd),
	                 "*4\r\n$9\r\nREPL.SYNC\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n",
	                 strlen(hist), hist, strlen(lsn), lsn, strlen(port), port);
	assert_int_equal(it_raw_write(fd, cmd, (size_t)n), 0);
	int closed;
	assert_true(it_raw_read(fd, line, sizeof(line), 500, &closed) > 0);
	unsigned long long from = 0, upto = 0;
	if (sscanf(line, "+AHEAD %llu %llu", &from, &upto) != 2)
		fprintf(stderr, "REPL.SYNC answered: %s\n", line);
	assert_int_equal(upto, last);
	assert_true(from > 1 && from + CREDITS <= upto + 1);
	/* Half of them, on the new primary's disk; then it dies. */
	uint64_t half = from + (upto - from) / 2;
	give_records(fd, F.r.data, from, half);
	redisContext *c = NULL;
	long long have = -1;
	for (int i = 0; i < 200 && have != (long long)half; i++) {
		have = lsn_of(&F.x, &c);
		usleep(20000);
	}
	assert_int_equal(have, (long long)half);
	if (c)
		redisFree(c);
	assert_int_equal(it_kill(&F.x), 0);
	close(fd);

	/* It starts again as the primary; B follows it, and the takeover ends. */
	assert_int_equal(it_restart(&F.x, SYNC1, 0), 0);
	char of[32];
	snprintf(of, sizeof(of), "127.0.0.1 %u", F.x.port);
	const char *follow[] = {
	    "--replica-of", of,  "--min-replicas-to-write", "1", "--min-replicas-timeout",
	    "2000",         NULL};
	assert_int_equal(it_restart(&F.r, follow, 0), 0);
	balance_becomes(&F.x, &F.xc, b);
	caught_up(&F.x, &F.xc, &F.r, &F.rc);
	assert_int_equal(it_acct_money(F.rc, 1, "balance"), b);
	nothing_aside();
	credits_replay(F.xc, reply, b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_follow_failover_and_diverged_return, teardown),
	    cmocka_unit_test_teardown(test_sync_replica_holds_before_the_reply, teardown),
	    cmocka_unit_test_teardown(test_sync_replica_slow_to_stop_gets_no_early_reply, teardown),
	    cmocka_unit_test_teardown(test_replica_past_ids_max_can_be_promoted, teardown),
	    cmocka_unit_test_teardown(test_replica_table_holds_the_fired_refill, teardown),
	    cmocka_unit_test_teardown(test_no_replica_streaming_refuses_at_once, teardown),
	    cmocka_unit_test_teardown(test_demoted_with_a_held_batch_restarts, teardown),
	    cmocka_unit_test_teardown(test_promoted_behind_takes_over_acknowledged_credits,
	                              teardown),
	    cmocka_unit_test_teardown(test_takeover_cut_by_a_crash_resumes, teardown),
	    cmocka_unit_test_teardown(test_replica_connecting_again_counts_once, teardown),
	    cmocka_unit_test_teardown(test_takeover_past_ids_max_restarts, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
