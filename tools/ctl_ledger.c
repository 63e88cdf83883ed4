/*
 * ctl_ledger.c - tollctl's questions to the ledger (docs/LEDGER.md, docs/TOOLS.md):
 *
 *   tollctl statement <acct> --month YYYY-MM [--db T] [--data-dir D] [--json]
 *   tollctl calls <acct> [--from T] [--to T] [--csv|--json] [--db T] [--data-dir D]
 *   tollctl reconcile [--db T] [--data-dir D]
 *
 * The first two read the database only.  reconcile also asks tollgated
 * (ACCT.GET, through the connection tollctl was given) and INFO's
 * journal_lsn, and compares each account's balance with the database's
 * opening + credits - charges + adjustments.  Money is printed with the
 * engine's own formatting (tg_money_format): exact, never a float.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "ctl_ledger.h"
#include "ledger.h"
#include "ledger_db.h"
#include "tg_money.h"

enum { L_OK = 0, L_DIFF = 1, L_USAGE = 2, L_CONNECT = 3 };

struct lopts {
	const char *db, *data_dir, *month, *from, *to;
	bool json, csv;
	const char *acct;
};

static void
money(char out[TG_MONEY_STR_MAX], const char *v)
{
	tg_money_format(v != NULL ? strtoll(v, NULL, 10) : 0, out);
}

/* "2026-11" -> [start, end) in microseconds, UTC. */
static bool
month_range(const char *m, int64_t *from, int64_t *to)
{
	int y, mo;
	char extra;
	if (sscanf(m, "%4d-%2d%c", &y, &mo, &extra) != 2 || mo < 1 || mo > 12 || y < 1970)
		return false;
	struct tm a = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = 1};
	struct tm b = {.tm_year = mo == 12 ? y - 1899 : y - 1900, .tm_mon = mo % 12, .tm_mday = 1};
	*from = (int64_t)timegm(&a) * 1000000;
	*to = (int64_t)timegm(&b) * 1000000;
	return true;
}

/* "2026-11-03", "2026-11-03T10:00:00" (UTC) or Unix seconds -> microseconds. */
static bool
time_arg(const char *s, int64_t *out)
{
	struct tm t = {0};
	char *end;
	long long secs = strtoll(s, &end, 10);
	if (*end == '\0' && end != s) {
		*out = secs * 1000000;
		return true;
	}
	end = strptime(s, "%Y-%m-%d", &t);
	if (end != NULL && *end == 'T')
		end = strptime(end + 1, "%H:%M:%S", &t);
	if (end == NULL || *end != '\0')
		return false;
	*out = (int64_t)timegm(&t) * 1000000;
	return true;
}

static void
time_text(char out[32], const char *us)
{
	time_t s = (time_t)(strtoll(us, NULL, 10) / 1000000);
	struct tm t;
	gmtime_r(&s, &t);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &t);
}

static const char *
nz(const char *v)
{
	return v != NULL ? v : "";
}

/* ---- calls ---- */

struct calls_out {
	bool json, csv;
	long n;
};

static int
call_row(void *arg, unsigned nc, const char *const *v)
{
	struct calls_out *o = arg;
	char t[32], charge[TG_MONEY_STR_MAX], rate[TG_MONEY_STR_MAX], bal[TG_MONEY_STR_MAX];

	if (nc < 12)
		return 1;
	time_text(t, v[0]);
	money(charge, v[9]);
	money(rate, v[8]);
	money(bal, v[10]);
	if (o->json)
		printf(
		    "%s{\"time\":\"%s\",\"kind\":\"%s\",\"call_id\":\"%s\",\"destination\":\"%s\","
		    "\"plan\":\"%s\",\"prefix\":\"%s\",\"category\":\"%s\",\"duration\":%s,"
		    "\"billed\":%s,\"per_min\":\"%s\",\"charge\":\"%s\",\"balance_after\":\"%s\","
		    "\"lsn\":%s}",
		    o->n ? ",\n " : "", t, v[1], nz(v[2]), nz(v[3]), nz(v[4]), nz(v[5]), v[6], v[7],
		    v[11] ? v[11] : "null", rate, charge, bal, v[12]);
	else if (o->csv)
		printf("%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", t, v[1], nz(v[2]), nz(v[3]),
		       nz(v[4]), nz(v[5]), v[6], v[7], nz(v[11]), rate, charge, bal);
	else
		printf("  %s  %-6s %-14s %-16s %-13s %6ss %10s\n", t, v[1], nz(v[3]), v[6],
		       nz(v[2]), v[7], charge);
	o->n++;
	return 0;
}

static const char calls_sql[] =
    "SELECT time_us, kind, call_id, destination, plan, prefix, category, duration, per_min,"
    " charge, balance_after, billed, lsn FROM calls WHERE acct = $1 AND time_us >= $2"
    " AND time_us < $3 ORDER BY time_us, lsn";

static int
cmd_calls(struct ldb *db, const struct lopts *o)
{
	int64_t from = 0, to = INT64_MAX;
	char f[24], t[24];
	if ((o->from && !time_arg(o->from, &from)) || (o->to && !time_arg(o->to, &to))) {
		fprintf(stderr,
		        "tollctl: --from/--to take YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS (UTC) or "
		        "Unix seconds\n");
		return L_USAGE;
	}
	snprintf(f, sizeof(f), "%" PRId64, from);
	snprintf(t, sizeof(t), "%" PRId64, to);
	const char *p[] = {o->acct, f, t};
	struct calls_out out = {.json = o->json, .csv = o->csv};
	if (o->json)
		printf("[");
	if (o->csv)
		printf("time,kind,call_id,destination,plan,prefix,category,duration,billed,per_min,"
		       "charge,balance_after\n");
	if (ldb_query(db, calls_sql, 3, p, call_row, &out) < 0) {
		fprintf(stderr, "tollctl: %s\n", ldb_err(db));
		return L_CONNECT;
	}
	if (o->json)
		printf("]\n");
	return L_OK;
}

/* ---- statement ---- */

struct cat_row {
	char name[32];
	long n;
	int64_t sum;
};

struct sums {
	struct cat_row c[16];
	unsigned n;
};

static int
cat_row(void *arg, unsigned nc, const char *const *v)
{
	struct sums *s = arg;
	if (nc >= 3 && s->n < 16) {
		snprintf(s->c[s->n].name, sizeof(s->c[0].name), "%s", v[0]);
		s->c[s->n].n = strtol(v[1], NULL, 10);
		s->c[s->n].sum = strtoll(v[2], NULL, 10);
		s->n++;
	}
	return 0;
}

static int
credit_row(void *arg, unsigned nc, const char *const *v)
{
	long *n = arg;
	char t[32], amt[TG_MONEY_STR_MAX], bal[TG_MONEY_STR_MAX];
	if (nc < 5)
		return 1;
	time_text(t, v[0]);
	money(amt, v[1]);
	money(bal, v[2]);
	printf("  %s  %-8s %-24s %10s  balance %s\n", t, v[3], nz(v[4]), amt, bal);
	(*n)++;
	return 0;
}

/*
 * The balance just before time_us: the opening, plus every change before
 * that time (credits, minus charges, plus adjustments) from opening_lsn on.
 */
static int
balance_before(struct ldb *db, const char *acct, const char *us, int64_t *out)
{
	static const char sql[] =
	    "SELECT a.opening_balance"
	    " + coalesce((SELECT sum(amount) FROM credits c WHERE c.acct = a.acct"
	    "   AND c.lsn >= a.opening_lsn AND c.time_us < $2), 0)"
	    " - coalesce((SELECT sum(charge) FROM calls k WHERE k.acct = a.acct"
	    "   AND k.lsn >= a.opening_lsn AND k.time_us < $2), 0)"
	    " + coalesce((SELECT sum(delta) FROM account_events e WHERE e.acct = a.acct"
	    "   AND e.kind = 'set_balance' AND e.lsn >= a.opening_lsn AND e.time_us < $2), 0)"
	    " FROM accounts a WHERE a.acct = $1";
	const char *p[] = {acct, us};
	return ldb_query_i64(db, sql, 2, p, out);
}

static int
cmd_statement(struct ldb *db, const struct lopts *o)
{
	int64_t from, to, open_b, close_b;
	char f[24], t[24], m1[TG_MONEY_STR_MAX], m2[TG_MONEY_STR_MAX];
	if (o->month == NULL || !month_range(o->month, &from, &to)) {
		fprintf(stderr, "tollctl: statement needs --month YYYY-MM\n");
		return L_USAGE;
	}
	snprintf(f, sizeof(f), "%" PRId64, from);
	snprintf(t, sizeof(t), "%" PRId64, to);
	const char *p[] = {o->acct, f, t};
	int rc1 = balance_before(db, o->acct, f, &open_b),
	    rc2 = balance_before(db, o->acct, t, &close_b);
	if (rc1 < 0 || rc2 < 0) {
		fprintf(stderr, "tollctl: %s\n", ldb_err(db));
		return L_CONNECT;
	}
	if (rc1 == 0) {
		fprintf(stderr, "tollctl: account %s is not in the ledger\n", o->acct);
		return L_DIFF;
	}
	struct sums s = {.n = 0};
	if (ldb_query(db,
	              "SELECT category, count(*), sum(charge) FROM calls WHERE acct = $1 AND"
	              " time_us >= $2 AND time_us < $3 GROUP BY category ORDER BY category",
	              3, p, cat_row, &s) < 0) {
		fprintf(stderr, "tollctl: %s\n", ldb_err(db));
		return L_CONNECT;
	}
	int64_t charged = 0, credited = 0, refills = 0, adjusted = 0;
	long ncalls = 0;
	for (unsigned i = 0; i < s.n; i++) {
		charged += s.c[i].sum;
		ncalls += s.c[i].n;
	}
	static const char cr_sql[] = "SELECT coalesce(sum(amount), 0) FROM credits WHERE acct = $1"
	                             " AND time_us >= $2 AND time_us < $3 AND source = 'refill'";
	static const char co_sql[] = "SELECT coalesce(sum(amount), 0) FROM credits WHERE acct = $1"
	                             " AND time_us >= $2 AND time_us < $3 AND source <> 'refill'";
	static const char ad_sql[] = "SELECT coalesce(sum(delta), 0) FROM account_events WHERE"
	                             " acct = $1 AND time_us >= $2 AND time_us < $3 AND"
	                             " kind = 'set_balance'";
	if (ldb_query_i64(db, cr_sql, 3, p, &refills) < 0 ||
	    ldb_query_i64(db, co_sql, 3, p, &credited) < 0 ||
	    ldb_query_i64(db, ad_sql, 3, p, &adjusted) < 0) {
		fprintf(stderr, "tollctl: %s\n", ldb_err(db));
		return L_CONNECT;
	}
	if (o->json) {
		tg_money_format(open_b, m1);
		tg_money_format(close_b, m2);
		printf("{\"account\":%s,\"month\":\"%s\",\"opening\":\"%s\",\"closing\":\"%s\","
		       "\"usage\":{",
		       o->acct, o->month, m1, m2);
		for (unsigned i = 0; i < s.n; i++) {
			tg_money_format(s.c[i].sum, m1);
			printf("%s\"%s\":{\"calls\":%ld,\"charged\":\"%s\"}", i ? "," : "",
			       s.c[i].name, s.c[i].n, m1);
		}
		tg_money_format(charged, m1);
		printf("},\"charged\":\"%s\",", m1);
		tg_money_format(credited, m1);
		tg_money_format(refills, m2);
		printf("\"credits\":\"%s\",\"refills\":\"%s\",", m1, m2);
		tg_money_format(adjusted, m1);
		printf("\"adjustments\":\"%s\",\"calls\":", m1);
		struct calls_out out = {.json = true};
		printf("[");
		if (ldb_query(db, calls_sql, 3, p, call_row, &out) < 0)
			return L_CONNECT;
		printf("]}\n");
		return L_OK;
	}
	tg_money_format(open_b, m1);
	printf("Statement for account %s, %s (UTC)\n\n", o->acct, o->month);
	printf("Opening balance %28s\n\nUsage by category\n", m1);
	for (unsigned i = 0; i < s.n; i++) {
		tg_money_format(s.c[i].sum, m1);
		printf("  %-16s %5ld calls %14s\n", s.c[i].name, s.c[i].n, m1);
	}
	tg_money_format(charged, m1);
	printf("  %-16s %5ld calls %14s\n\nCalls\n", "total", ncalls, m1);
	struct calls_out out = {.json = false};
	if (ldb_query(db, calls_sql, 3, p, call_row, &out) < 0)
		return L_CONNECT;
	printf("\nCredits and refills\n");
	long nc = 0;
	if (ldb_query(db,
	              "SELECT time_us, amount, balance_after, source, txid FROM credits WHERE"
	              " acct = $1 AND time_us >= $2 AND time_us < $3 ORDER BY time_us, lsn",
	              3, p, credit_row, &nc) < 0)
		return L_CONNECT;
	if (nc == 0)
		printf("  none\n");
	tg_money_format(credited, m1);
	tg_money_format(refills, m2);
	printf("  credits %s, refills %s", m1, m2);
	if (adjusted != 0) {
		tg_money_format(adjusted, m1);
		printf(", balance set (ACCT.SET or the accounts file) %s", m1);
	}
	tg_money_format(close_b, m1);
	printf("\n\nClosing balance %28s\n", m1);
	return L_OK;
}

/* ---- reconcile ---- */

struct recon {
	redisContext *c;
	long accounts, differ, skipped;
};

static bool
engine_balance(redisContext *c, const char *acct, int64_t *out)
{
	redisReply *r = redisCommand(c, "ACCT.GET %s", acct);
	bool ok = false;
	if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
	    r->element[1]->type == REDIS_REPLY_STRING)
		ok = tg_money_parse(r->element[1]->str, r->element[1]->len, out) == 0;
	if (r != NULL)
		freeReplyObject(r);
	return ok;
}

static int
recon_row(void *arg, unsigned nc, const char *const *v)
{
	struct recon *s = arg;
	char a[TG_MONEY_STR_MAX], b[TG_MONEY_STR_MAX];
	int64_t engine;

	if (nc < 2)
		return 1;
	s->accounts++;
	if (v[1] == NULL) {
		s->skipped++; /* no record with a balance yet: nothing to compare */
		return 0;
	}
	if (!engine_balance(s->c, v[0], &engine)) {
		printf("account %s: in the ledger, not in the engine\n", v[0]);
		s->differ++;
		return 0;
	}
	int64_t ledger = strtoll(v[1], NULL, 10);
	if (ledger != engine) {
		tg_money_format(ledger, a);
		tg_money_format(engine, b);
		printf("account %s: ledger %s, engine %s\n", v[0], a, b);
		s->differ++;
	}
	return 0;
}

static int64_t
journal_lsn(redisContext *c)
{
	redisReply *r = redisCommand(c, "INFO journal");
	int64_t v = -1;
	if (r != NULL && r->type == REDIS_REPLY_STRING) {
		const char *p = strstr(r->str, "journal_lsn:");
		if (p != NULL)
			v = strtoll(p + 12, NULL, 10);
	}
	if (r != NULL)
		freeReplyObject(r);
	return v;
}

static int
cmd_reconcile(struct ldb *db, redisContext *c)
{
	static const char sql[] =
	    "SELECT a.acct, a.opening_balance"
	    " + coalesce((SELECT sum(amount) FROM credits c WHERE c.acct = a.acct"
	    "   AND c.lsn >= a.opening_lsn), 0)"
	    " - coalesce((SELECT sum(charge) FROM calls k WHERE k.acct = a.acct"
	    "   AND k.lsn >= a.opening_lsn), 0)"
	    " + coalesce((SELECT sum(delta) FROM account_events e WHERE e.acct = a.acct"
	    "   AND e.kind = 'set_balance' AND e.lsn >= a.opening_lsn), 0)"
	    " FROM accounts a ORDER BY a.acct";
	/*
	 * The engine moves on while we compare: wait (up to 10 s) until the ledger
	 * holds everything the engine has journaled, and say so when it does not.
	 */
	int64_t want = journal_lsn(c), have = ledger_last_lsn(db);
	for (int i = 0; i < 100 && want > have; i++) {
		struct timespec ts = {0, 100 * 1000000L};
		nanosleep(&ts, NULL);
		have = ledger_last_lsn(db);
	}
	struct recon s = {.c = c};
	if (ldb_query(db, sql, 0, NULL, recon_row, &s) < 0) {
		fprintf(stderr, "tollctl: %s\n", ldb_err(db));
		return L_CONNECT;
	}
	int64_t after = journal_lsn(c);
	printf("%ld accounts, %ld differ, %ld with no balance yet; ledger at LSN %" PRId64
	       ", engine at LSN %" PRId64 "%s\n",
	       s.accounts, s.differ, s.skipped, have, after,
	       after > have ? " (the engine moved on during the check: differences may be that)"
	                    : "");
	return s.differ > 0 ? L_DIFF : L_OK;
}

int
ctl_ledger_main(int argc, char **argv, const char *host, int port, const char *user,
                const char *password)
{
	static const struct option opts[] = {
	    {"db", required_argument, NULL, 'b'},    {"data-dir", required_argument, NULL, 'd'},
	    {"month", required_argument, NULL, 'm'}, {"from", required_argument, NULL, 'f'},
	    {"to", required_argument, NULL, 't'},    {"json", no_argument, NULL, 'j'},
	    {"csv", no_argument, NULL, 'c'},         {NULL, 0, NULL, 0}};
	struct lopts o = {0};
	const char *cmd = argv[0];
	char path[1100], err[600];
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			o.db = optarg;
			break;
		case 'd':
			o.data_dir = optarg;
			break;
		case 'm':
			o.month = optarg;
			break;
		case 'f':
			o.from = optarg;
			break;
		case 't':
			o.to = optarg;
			break;
		case 'j':
			o.json = true;
			break;
		case 'c':
			o.csv = true;
			break;
		default:
			return L_USAGE;
		}
	}
	bool reconcile = strcmp(cmd, "reconcile") == 0;
	if (argc - optind != (reconcile ? 0 : 1) || (o.db == NULL && o.data_dir == NULL)) {
		fprintf(stderr, "usage: tollctl statement <acct> --month YYYY-MM | calls <acct> "
		                "[--from T] [--to T] [--csv|--json] | reconcile; each with --db "
		                "PATH|URI or --data-dir DIR (DIR/ledger.sqlite)\n");
		return L_USAGE;
	}
	if (!reconcile) {
		char *end;
		unsigned long long a = strtoull(argv[optind], &end, 10);
		if (*end != '\0' || a == 0) {
			fprintf(stderr, "tollctl: invalid account '%s'\n", argv[optind]);
			return L_USAGE;
		}
		o.acct = argv[optind];
	}
	if (o.db == NULL) {
		snprintf(path, sizeof(path), "%s/ledger.sqlite", o.data_dir);
		o.db = path;
	}
	struct ldb *db;
	if (ldb_open(&db, o.db, err, sizeof(err)) != 0) {
		fprintf(stderr, "tollctl: %s\n", err);
		return L_CONNECT;
	}
	int v = ledger_version(db);
	if (v != LEDGER_SCHEMA_VERSION) {
		fprintf(stderr, "tollctl: %s: %s\n", o.db,
		        v == 0 ? "no ledger in it (run tollexport)"
		               : "a ledger schema version this build does not read");
		ldb_close(db);
		return L_CONNECT;
	}
	int rc;
	if (strcmp(cmd, "statement") == 0) {
		rc = cmd_statement(db, &o);
	} else if (strcmp(cmd, "calls") == 0) {
		rc = cmd_calls(db, &o);
	} else {
		struct timeval tv = {.tv_sec = 5};
		redisContext *k = redisConnectWithTimeout(host, port, tv);
		if (k == NULL || k->err) {
			fprintf(stderr, "tollctl: cannot connect to %s:%d\n", host, port);
			ldb_close(db);
			return L_CONNECT;
		}
		if (password != NULL) {
			redisReply *r = user ? redisCommand(k, "AUTH %s %s", user, password)
			                     : redisCommand(k, "AUTH %s", password);
			if (r != NULL)
				freeReplyObject(r);
		}
		rc = cmd_reconcile(db, k);
		redisFree(k);
	}
	ldb_close(db);
	return rc;
}
