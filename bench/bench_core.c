/*
 * bench_core.c - `tollbench core`: the in-process ceiling of rated debits.
 *
 * No network: accounts in a real shared-memory table, a generated plan of
 * many prefixes loaded through the real loader, and the engine's own
 * tg_rated_debit (account lookup, plan, longest-prefix match, charge, one
 * atomic debit with the threshold check, usage counters).  Each thread works
 * in batches of BATCH operations, two ways side by side:
 *
 *   one by one   find the account, rate and debit it, then the next: every
 *                cache miss (account, usage, limits line) waits for the last
 *   batched      as the server runs a read of pipelined requests: the
 *                accounts of the next batch are prefetched while this one
 *                runs; before a batch is applied, each of its accounts' limits
 *                line, rate-cache entry and plan jump entry is prefetched
 *                (tg_engine_prefetch_rating); then the batch is applied in order
 *
 * and the floor both are compared with: a naive atomic add on each
 * account's balance, one by one (find, add).  At the end the books must
 * balance: what the accounts lost equals what the engine says it charged.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "tg_engine.h"

#define BATCH 16
/* What one grant takes in -g mode, micro-units. */
#define GRANT 1000

struct core {
	struct tg_table table;
	struct tg_engine engine;
	uint64_t accounts;
	size_t ndest;
	char (*dests)[16];
	size_t *dlen;
	uint64_t run_ns;
	uint64_t ops; /* operations of the measured runs, all threads (for -g's books) */
	bool bare;    /* the baseline: one atomic add per account, no rating */
	bool grants; /* -g: a grant and its settlement (reserve, commit) instead of a rated debit */
	bool postpaid; /* -k postpaid: every account postpaid, at 0 with a credit limit */
	bool limits;   /* -l: every account has fraud limits, grants go through them */
	bool batched;  /* prefetch a batch ahead (see the top of the file) */
	uint16_t day;  /* -l: the UTC day the grants count against */
	volatile int go;
};

struct thread {
	pthread_t tid;
	struct core *c;
	unsigned idx;
	uint64_t ops;
	uint64_t errors;
	uint64_t ns;
};

static void *
run(void *arg)
{
	struct thread *th = arg;
	struct core *c = th->c;
	struct tg_worker *w = tg_engine_worker(&c->engine, th->idx);
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ ((uint64_t)th->idx << 32 | 1);
	uint64_t ids[BATCH], next[BATCH];
	uint32_t dsel[BATCH], nsel[BATCH];
	struct tg_acct *acct[BATCH];
	struct tg_move m;
	tg_money_t charge;

	while (!__atomic_load_n(&c->go, __ATOMIC_ACQUIRE))
		;
	for (unsigned i = 0; i < BATCH; i++) {
		next[i] = tg_bench_rng(&seed) % c->accounts;
		nsel[i] = (uint32_t)(tg_bench_rng(&seed) % c->ndest);
		if (c->batched)
			tg_table_prefetch(&c->table, next[i]);
	}
	uint64_t start = tg_mono_ns(), deadline = start + c->run_ns, now;
	do {
		tg_worker_enter(w);
		for (unsigned round = 0; round < 64; round++) {
			memcpy(ids, next, sizeof(ids));
			memcpy(dsel, nsel, sizeof(dsel));
			if (c->batched) {
				/*
				 * This batch's accounts were prefetched during the last
				 * one: what rating them reads next starts loading now,
				 * the next batch's accounts after it.
				 */
				for (unsigned i = 0; i < BATCH; i++) {
					acct[i] = tg_table_find(&c->table, ids[i]);
					if (acct[i] != NULL && !c->bare)
						tg_engine_prefetch_rating(w, acct[i],
						                          c->dests[dsel[i]],
						                          c->dlen[dsel[i]]);
				}
			}
			for (unsigned i = 0; i < BATCH; i++) {
				next[i] = tg_bench_rng(&seed) % c->accounts;
				nsel[i] = (uint32_t)(tg_bench_rng(&seed) % c->ndest);
				if (c->batched)
					tg_table_prefetch(&c->table, next[i]);
			}
			for (unsigned i = 0; i < BATCH; i++) {
				struct tg_acct *a =
				    c->batched ? acct[i] : tg_table_find(&c->table, ids[i]);
				if (a == NULL)
					th->errors++;
				else if (c->bare)
					ck_pr_faa_64((uint64_t *)&a->balance, (uint64_t)-1);
				else if (c->limits) {
					/*
					 * An account with limits: CALL.AUTH finds its limits
					 * record, takes a call place and the amount from the
					 * day, then reserves; CALL.END commits and frees the
					 * place (nothing unused to give back to the day).
					 */
					struct tg_limits *l = tg_acct_limits(&c->table, a);
					if (l == NULL ||
					    tg_acct_reserve_limited(a, l, c->day, GRANT, true,
					                            &m) != TG_OK ||
					    tg_acct_commit(a, GRANT, GRANT, &m) != TG_OK)
						th->errors++;
				} else if (c->grants) {
					/* CALL.AUTH's reserve, then CALL.END's commit of all of it.
					 */
					if (tg_acct_reserve(a, GRANT, &m) != TG_OK ||
					    tg_acct_commit(a, GRANT, GRANT, &m) != TG_OK)
						th->errors++;
				} else if (tg_rated_debit(w, a, c->dests[dsel[i]], c->dlen[dsel[i]],
				                          125, &charge, &m) != TG_OK)
					th->errors++;
			}
			th->ops += BATCH;
		}
		tg_worker_exit(w);
		now = tg_mono_ns();
	} while (now < deadline);
	th->ns = now - start;
	return NULL;
}

static void
usage(void)
{
	fprintf(stderr,
	        "usage: tollbench core [-a accounts] [-p prefixes] [-D destinations] [-t threads]\n"
	        "                      [-s seconds] [-g] [-l] [-k prepaid|postpaid]\n"
	        "  -g  grants: a reserve and its commit per operation, not a rated debit\n"
	        "  -l  grants (-g) on accounts with fraud limits (MAXCALLS and DAILYCAP,\n"
	        "      both far above what the run reaches): what an account with limits costs\n"
	        "  -k  the accounts' kind: postpaid ones start at 0 with a credit limit\n"
	        "  -a  accounts in the table (1000000)\n"
	        "  -p  prefixes in the rate plan (100000)\n"
	        "  -D  distinct destinations dialled, drawn from the plan (1024)\n"
	        "  -t  threads for the parallel run (0 = one per core)\n"
	        "  -s  seconds per run (3)\n");
}

/* One run on n threads; returns rated debits per second. */
static uint64_t
measure(struct core *c, unsigned n, uint64_t *errors)
{
	struct thread *th = calloc(n, sizeof(*th));
	uint64_t ops = 0, ns = 0;

	c->go = 0;
	for (unsigned i = 0; i < n; i++) {
		th[i].c = c;
		th[i].idx = i;
		pthread_create(&th[i].tid, NULL, run, &th[i]);
	}
	__atomic_store_n(&c->go, 1, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < n; i++) {
		pthread_join(th[i].tid, NULL);
		ops += th[i].ops;
		*errors += th[i].errors;
		c->ops += th[i].ops - th[i].errors;
		if (th[i].ns > ns)
			ns = th[i].ns;
	}
	free(th);
	return ns ? ops * 1000000000ull / ns : 0;
}

int
tg_bench_core(int argc, char **argv)
{
	struct core c = {.accounts = 1000000, .ndest = 1024};
	size_t nprefix = 100000;
	unsigned threads = 0, seconds = 3;
	char shm[64], plan_path[256], err[256];
	int opt, rc = 1;

	optind = 1;
	while ((opt = getopt(argc, argv, "a:p:D:t:s:glk:h")) != -1) {
		switch (opt) {
		case 'g':
			c.grants = true;
			break;
		case 'l':
			c.grants = c.limits = true;
			break;
		case 'k':
			if (strcmp(optarg, "postpaid") != 0 && strcmp(optarg, "prepaid") != 0) {
				usage();
				return 1;
			}
			c.postpaid = strcmp(optarg, "postpaid") == 0;
			break;
		case 'a':
			c.accounts = strtoull(optarg, NULL, 10);
			break;
		case 'p':
			nprefix = strtoul(optarg, NULL, 10);
			break;
		case 'D':
			c.ndest = strtoul(optarg, NULL, 10);
			break;
		case 't':
			threads = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 's':
			seconds = (unsigned)strtoul(optarg, NULL, 10);
			break;
		default:
			usage();
			return opt == 'h' ? 0 : 1;
		}
	}
	if (c.accounts == 0 || nprefix == 0 || c.ndest == 0 || seconds == 0) {
		usage();
		return 1;
	}
	if (threads == 0)
		threads = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	c.run_ns = (uint64_t)seconds * 1000000000ull;
	c.day = tg_utc_day((uint32_t)time(NULL));

	/* The table. */
	snprintf(shm, sizeof(shm), "/tollbench-core-%d", (int)getpid());
	struct tg_table_cfg tcfg = {.name = shm, .capacity = c.accounts, .mode = 0600};
	if (tg_table_open(&c.table, &tcfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "tollbench core: %s\n", err);
		return 1;
	}
	tg_table_unlink(shm); /* gone when we exit, however we exit */
	struct tg_engine_cfg ecfg = {.max_grant = 3600,
	                             .call_grace = 60,
	                             .calls_max = 1024,
	                             .ids_max = 1024,
	                             .ids_window = 60,
	                             .workers = threads};
	if (tg_engine_init(&c.engine, &c.table, &ecfg) != 0) {
		fprintf(stderr, "tollbench core: cannot set up the engine\n");
		goto out_table;
	}

	/* The plan, through the real loader. */
	uint64_t seed = 42;
	struct tg_bench_prefix *px = tg_bench_prefixes(nprefix, &seed);
	if (px == NULL ||
	    tg_bench_write_plan("bench", px, nprefix, plan_path, sizeof(plan_path)) != 0) {
		fprintf(stderr, "tollbench core: cannot write the plan\n");
		free(px);
		goto out_engine;
	}
	struct tg_diag diag;
	tg_diag_init(&diag);
	rc = tg_rates_reload(&c.engine.rates, plan_path, &diag);
	unlink(plan_path);
	if (rc != 0) {
		tg_diag_print(&diag, 2);
		free(px);
		rc = 1;
		goto out_engine;
	}
	rc = 1;
	int plan = tg_plan_registry_id(&c.table.plans, "bench", 5, false);

	/* Destinations: a prefix of the plan, completed to 11+ digits. */
	c.dests = calloc(c.ndest, sizeof(*c.dests));
	c.dlen = calloc(c.ndest, sizeof(*c.dlen));
	for (size_t i = 0; i < c.ndest; i++) {
		const char *p = px[tg_bench_rng(&seed) % nprefix].s;
		size_t l = strlen(p);
		memcpy(c.dests[i], p, l);
		while (l < 11)
			c.dests[i][l++] = (char)('0' + tg_bench_rng(&seed) % 10);
		c.dlen[i] = l;
	}
	free(px);

	/* The accounts: enough money never to block. */
	const tg_money_t opening = (tg_money_t)1000000 * TG_MONEY_SCALE;
	uint64_t t0 = tg_mono_ns();
	for (uint64_t id = 0; id < c.accounts; id++) {
		struct tg_acct *a;
		struct tg_move m;
		bool created;
		if (tg_table_insert(&c.table, id, &a, &created) != TG_OK) {
			fprintf(stderr, "tollbench core: table full at %llu\n",
			        (unsigned long long)id);
			goto out_dests;
		}
		struct tg_acct_settings s = {.plan = (uint32_t)plan};
		if (c.postpaid) {
			s.flags = TG_ACCT_POSTPAID;
			s.credit_limit = opening;
		}
		tg_acct_set_balance(a, c.postpaid ? 0 : opening, &m);
		tg_acct_configure(a, &s, &m);
		if (c.limits) {
			/* Never reached: the run measures the checks, not refusals. */
			struct tg_limits_set ls = {.max_calls = TG_MAXCALLS_MAX,
			                           .daily_cap = TG_DAY_USED_MAX};
			tg_acct_set_limits(&c.table, a, &ls, c.day);
		}
	}
	printf("setup: %llu accounts, %zu prefixes, %zu destinations in %.0f ms\n",
	       (unsigned long long)c.accounts, nprefix, c.ndest, (double)(tg_mono_ns() - t0) / 1e6);

	/*
	 * Side by side: the same loop doing only an atomic add on each account's
	 * balance (the memory floor), then the rated debits, one by one and
	 * batched.  The bare adds are put back before the books are checked.
	 */
	uint64_t errors = 0;
	c.bare = true;
	uint64_t bare1 = measure(&c, 1, &errors);
	uint64_t bare_all = measure(&c, threads, &errors);
	c.batched = true;
	uint64_t barep1 = measure(&c, 1, &errors);
	c.batched = false;
	c.bare = false;
	const tg_money_t start = c.postpaid ? 0 : opening;
	for (uint64_t id = 0; id < c.accounts; id++) {
		struct tg_move m;
		tg_acct_set_balance(tg_table_find(&c.table, id), start, &m);
	}
	c.ops = 0;
	uint64_t one = measure(&c, 1, &errors);
	uint64_t all = measure(&c, threads, &errors);
	c.batched = true;
	uint64_t bone = measure(&c, 1, &errors);
	uint64_t ball = measure(&c, threads, &errors);
	const char *what = c.limits   ? "grant + settle, limits"
	                   : c.grants ? "grant + settle"
	                              : "rated debit";
	char row[64];
	printf("%-44s %12s %12s\n", "per second", "1 thread", "all threads");
	printf("%-44s %12llu %12llu\n", "naive atomic add (baseline)", (unsigned long long)bare1,
	       (unsigned long long)bare_all);
	printf("%-44s %12llu\n", "atomic add, batched + prefetch", (unsigned long long)barep1);
	snprintf(row, sizeof(row), "%s, one by one", what);
	printf("%-44s %12llu %12llu\n", row, (unsigned long long)one, (unsigned long long)all);
	snprintf(row, sizeof(row), "%s, batched + prefetch", what);
	printf("%-44s %12llu %12llu\n", row, (unsigned long long)bone, (unsigned long long)ball);
	printf("%-44s %11llu%% %11llu%%\n", "one by one / baseline",
	       (unsigned long long)(bare1 ? one * 100 / bare1 : 0),
	       (unsigned long long)(bare_all ? all * 100 / bare_all : 0));
	printf("%-44s %11llu%% %11llu%%\n", "batched / baseline",
	       (unsigned long long)(bare1 ? bone * 100 / bare1 : 0),
	       (unsigned long long)(bare_all ? ball * 100 / bare_all : 0));
	printf("threads: %u; batched per thread: %llu\n", threads,
	       (unsigned long long)(ball / threads));

	/* The books: what the accounts lost is what the engine charged. */
	tg_money_t lost = 0;
	for (uint64_t id = 0; id < c.accounts; id++) {
		struct tg_acct_view v;
		tg_acct_read(tg_table_find(&c.table, id), &v);
		lost += start - v.balance;
	}
	uint64_t charged =
	    c.grants ? c.ops * GRANT : tg_engine_counter(&c.engine, TG_C_money_charged);
	if (errors != 0 || (uint64_t)lost != charged) {
		fprintf(stderr, "tollbench core: FAILED: %llu errors, lost %lld != charged %llu\n",
		        (unsigned long long)errors, (long long)lost, (unsigned long long)charged);
		goto out_dests;
	}
	printf("verified: balances lost exactly the %llu micro-units charged\n",
	       (unsigned long long)charged);
	if (c.limits) {
		/* Every grant was counted against its account's day, and settled in full. */
		tg_money_t counted = 0;
		for (uint64_t id = 0; id < c.accounts; id++) {
			struct tg_acct *a = tg_table_find(&c.table, id);
			counted += tg_limits_day_spent(tg_acct_limits(&c.table, a), c.day);
			if (tg_load_32(&a->calls) != 0)
				counted = -1;
		}
		if ((uint64_t)counted != charged) {
			fprintf(stderr, "tollbench core: FAILED: the days counted %lld != %llu\n",
			        (long long)counted, (unsigned long long)charged);
			rc = 1;
			goto out_dests;
		}
		printf("verified: the daily caps counted the same, no call place left held\n");
	}
	rc = 0;
out_dests:
	free(c.dests);
	free(c.dlen);
out_engine:
	tg_engine_fini(&c.engine);
out_table:
	tg_table_close(&c.table);
	return rc;
}
