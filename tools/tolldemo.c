/*
 * tolldemo.c - the engine in process, on the bundled demo data.
 *
 * Loads the demo rate plans and accounts into a private shared-memory table,
 * then plays a list of calls through the same operations a switch uses:
 * CALL.AUTH for a grant, CALL.END with the real duration (cut at the grant,
 * as the switch would).  Prints what happened to every call and each
 * account's books at the end.  Files given on the command line replace the
 * demo data.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csv.h"
#include "demo.h"
#include "tg_accounts.h"
#include "tg_engine.h"
#include "tg_names.h"

struct call {
	uint64_t acct;
	char dest[TG_DEST_MAX + 1];
	uint32_t duration;
	char id[64];
};

struct calls {
	struct call v[256];
	unsigned n;
};

static bool
add_call(void *arg, const struct tg__csv_row *r, char *why, size_t whylen)
{
	struct calls *cs = arg;
	struct call *c;
	char *end;

	if (r->n != 4) {
		snprintf(why, whylen, "expected 4 fields, found %u", r->n);
		return false;
	}
	if (cs->n == sizeof(cs->v) / sizeof(cs->v[0])) {
		snprintf(why, whylen, "more than %zu calls", sizeof(cs->v) / sizeof(cs->v[0]));
		return false;
	}
	c = &cs->v[cs->n];
	char num[32];
	if (r->len[0] == 0 || r->len[0] >= sizeof(num) || r->len[1] == 0 ||
	    r->len[1] > TG_DEST_MAX || r->len[2] == 0 || r->len[2] >= sizeof(num) ||
	    r->len[3] == 0 || r->len[3] >= sizeof(c->id)) {
		snprintf(why, whylen, "a field is empty or too long");
		return false;
	}
	memcpy(num, r->f[0], r->len[0]);
	num[r->len[0]] = '\0';
	c->acct = strtoull(num, &end, 10);
	if (*end != '\0') {
		snprintf(why, whylen, "account '%s' is not a number", num);
		return false;
	}
	memcpy(num, r->f[2], r->len[2]);
	num[r->len[2]] = '\0';
	unsigned long d = strtoul(num, &end, 10);
	if (*end != '\0' || d > TG_DURATION_MAX) {
		snprintf(why, whylen, "duration '%s' is not a number of seconds", num);
		return false;
	}
	c->duration = (uint32_t)d;
	memcpy(c->dest, r->f[1], r->len[1]);
	c->dest[r->len[1]] = '\0';
	memcpy(c->id, r->f[3], r->len[3]);
	c->id[r->len[3]] = '\0';
	cs->n++;
	return true;
}

static const char *
category_of(struct tg_worker *w, struct tg_table *t, uint64_t acct, const char *dest)
{
	struct tg_acct *a = tg_table_find(t, acct);
	if (a == NULL)
		return "-";
	const struct tg_plan *p = tg_planset_plan(w->plans, a->plan);
	const struct tg_rate *r = p ? tg_plan_match(p, dest, strlen(dest)) : NULL;
	return r ? tg_category_name(r->category) : "-";
}

static int
by_key(const void *x, const void *y)
{
	uint64_t a = (*(struct tg_acct *const *)x)->key, b = (*(struct tg_acct *const *)y)->key;
	return a < b ? -1 : a > b;
}

static void
usage(void)
{
	fprintf(stderr, "usage: tolldemo [--rates FILE] [--accounts FILE] [--calls FILE]\n"
	                "  with no options, the demo data bundled from tools/demo/\n");
}

int
main(int argc, char **argv)
{
	const char *rates = NULL, *accounts = NULL, *calls_file = NULL;
	char rates_path[256], accounts_path[256], calls_path[256], shm[64], err[256];
	static struct calls calls;
	struct tg_table table;
	struct tg_engine engine;
	struct tg_diag diag;
	unsigned bad = 0;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (i + 1 < argc && strcmp(argv[i], "--rates") == 0)
			rates = argv[++i];
		else if (i + 1 < argc && strcmp(argv[i], "--accounts") == 0)
			accounts = argv[++i];
		else if (i + 1 < argc && strcmp(argv[i], "--calls") == 0)
			calls_file = argv[++i];
		else {
			usage();
			return strcmp(argv[i], "--help") == 0 ? 0 : 2;
		}
	}
	if ((rates ? snprintf(rates_path, sizeof(rates_path), "%s", rates) < 0
	           : tg__demo_path(tg__demo_rates, "rates", rates_path, sizeof(rates_path)) != 0) ||
	    (accounts ? snprintf(accounts_path, sizeof(accounts_path), "%s", accounts) < 0
	              : tg__demo_path(tg__demo_accounts, "accounts", accounts_path,
	                              sizeof(accounts_path)) != 0) ||
	    (calls_file
	         ? snprintf(calls_path, sizeof(calls_path), "%s", calls_file) < 0
	         : tg__demo_path(tg__demo_calls, "calls", calls_path, sizeof(calls_path)) != 0)) {
		fprintf(stderr, "tolldemo: cannot prepare the demo data: %s\n", strerror(errno));
		return 1;
	}

	snprintf(shm, sizeof(shm), "/tolldemo-%d", (int)getpid());
	struct tg_table_cfg tcfg = {.name = shm, .capacity = 1000, .mode = 0600};
	if (tg_table_open(&table, &tcfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "tolldemo: %s\n", err);
		return 1;
	}
	tg_table_unlink(shm);
	struct tg_engine_cfg ecfg = {.max_grant = 3600,
	                             .call_grace = 120,
	                             .calls_max = 1024,
	                             .ids_max = 4096,
	                             .ids_window = 86400,
	                             .workers = 1};
	if (tg_engine_init(&engine, &table, &ecfg) != 0) {
		fprintf(stderr, "tolldemo: cannot set up the engine\n");
		goto out_table;
	}
	tg_diag_init(&diag);
	size_t created, skipped;
	if (tg_rates_reload(&engine.rates, rates_path, &diag) != 0 ||
	    tg_accounts_load(accounts_path, &table, &diag, &created, &skipped) != 0 ||
	    tg__csv_read(calls_path, "account,destination,duration,call_id", &diag, add_call,
	                 &calls, &bad) != 0 ||
	    bad != 0) {
		tg_diag_print(&diag, 2);
		goto out_engine;
	}
	printf("%zu rate plans (%zu prefixes), %zu accounts, %u calls\n\n",
	       tg_planset_plans(engine.rates.current), tg_planset_prefixes(engine.rates.current),
	       created, calls.n);
	printf("%-10s %-5s %-15s %-13s %6s  %-22s %10s %10s\n", "call", "acct", "destination",
	       "category", "secs", "outcome", "charge", "balance");

	struct tg_worker *w = tg_engine_worker(&engine, 0);
	for (unsigned i = 0; i < calls.n; i++) {
		struct call *c = &calls.v[i];
		struct tg_id id = {c->id, strlen(c->id)};
		char outcome[64], charge_s[TG_MONEY_STR_MAX] = "-", bal_s[TG_MONEY_STR_MAX] = "-";
		uint32_t granted = 0;
		tg_money_t charge;
		uint64_t fired = tg_engine_counter(&engine, TG_C_refills_fired);

		tg_worker_enter(w);
		const char *cat = category_of(w, &table, c->acct, c->dest);
		enum tg_result r = tg_call_auth(w, c->acct, c->dest, strlen(c->dest), id, &granted);
		if (r == TG_OK) {
			/* The switch cuts the call at the grant. */
			uint32_t talked = c->duration < granted ? c->duration : granted;
			r = tg_call_end(w, c->acct, id, talked, &charge);
			tg_money_format(charge, charge_s);
			snprintf(outcome, sizeof(outcome), "granted %u s%s", granted,
			         talked < c->duration ? ", cut" : "");
		} else {
			snprintf(outcome, sizeof(outcome), "refused: %s", tg_result_name(r));
		}
		tg_worker_exit(w);
		struct tg_acct *a = tg_table_find(&table, c->acct);
		if (a != NULL) {
			struct tg_acct_view v;
			tg_acct_read(a, &v);
			tg_money_format(v.balance, bal_s);
		}
		printf("%-10s %-5llu %-15s %-13s %6u  %-22s %10s %10s%s\n", c->id,
		       (unsigned long long)c->acct, c->dest, cat, c->duration, outcome, charge_s,
		       bal_s,
		       tg_engine_counter(&engine, TG_C_refills_fired) > fired
		           ? "  <- auto-refill request fired"
		           : "");
	}

	printf("\n%-5s %-6s %-10s %10s %10s  %s\n", "acct", "plan", "state", "balance", "charged",
	       "usage by category");
	static struct tg_acct *accts[1000];
	size_t na = 0;
	for (uint64_t s = 0; s < table.slots && na < 1000; s++)
		if (tg_table_slot(&table, s)->key != 0)
			accts[na++] = tg_table_slot(&table, s);
	qsort(accts, na, sizeof(accts[0]), by_key);
	for (size_t i = 0; i < na; i++) {
		struct tg_acct *a = accts[i];
		struct tg_acct_view v;
		char b[TG_MONEY_STR_MAX], u[TG_MONEY_STR_MAX], line[256] = "";
		tg_money_t total = 0;
		size_t n = 0;
		tg_acct_read(a, &v);
		const struct tg_usage *us = tg_table_usage(&table, a);
		for (unsigned k = 0; k < TG_CATEGORY__COUNT; k++) {
			if (us->charged[k] == 0)
				continue;
			total += us->charged[k];
			tg_money_format(us->charged[k], u);
			n += (size_t)snprintf(line + n, sizeof(line) - n, "%s %s  ",
			                      tg_category_name(k), u);
		}
		tg_money_format(v.balance, b);
		tg_money_format(total, u);
		printf("%-5llu %-6s %-10s %10s %10s  %s%s\n", (unsigned long long)v.id,
		       tg_plan_registry_name(&table.plans, v.plan),
		       tg_acct_state_name(v.state % TG_ACCT_STATE__COUNT), b, u, line,
		       v.refill_inflight ? "(refill in flight)" : "");
	}
	printf("\nrefill requests fired: %llu (they wait in shared memory for the publisher)\n",
	       (unsigned long long)tg_engine_counter(&engine, TG_C_refills_fired));
	rc = 0;
out_engine:
	tg_engine_fini(&engine);
out_table:
	tg_table_close(&table);
	return rc;
}
