/*
 * test_rate.c - unit tests of rate plans: the CSV loader and its errors, the
 * plan registry, longest-prefix match against brute force, billing and
 * grants (exhaustively against a loop), and the live swap under readers.
 *
 * Every input file is written by the test into a fresh temporary directory,
 * removed at the end.  Integers only: no float or double.
 */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tg_atomic.h"

#include "tg_assert.h"
#include "tg_diag.h"
#include "tg_money.h"
#include "tg_rate.h"
#include "tg_result.h"

#define HEADER "plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum\n"
/* Version 1 of the format: the column always (docs/RATES.md). */
#define HEADER_V1 "plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum,always\n"

/* ---- fixtures: a temporary directory, a registry ---- */

static char tmpdir[256];
static unsigned file_seq;

static char reg_names[TG_PLANS_MAX][TG_PLAN_NAME_MAX + 1];
static uint32_t reg_count;
static struct tg_plan_registry reg;

static void
reg_reset(uint32_t cap)
{
	memset(reg_names, 0, sizeof(reg_names));
	reg_count = 0;
	reg.names = reg_names;
	reg.count = &reg_count;
	reg.cap = cap;
	reg.dying = NULL;
	reg.reclaim = NULL;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
group_setup(void **state)
{
	const char *base = getenv("TMPDIR");

	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "%s/tg_test_rate_XXXXXX", base && *base ? base : "/tmp");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A path under the temporary directory; the result lives until freed. */
static char *
tmp_path(const char *name)
{
	char *p;

	assert_true(asprintf(&p, "%s/%s", tmpdir, name) > 0);
	return p;
}

static void
write_text(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Write text to a new uniquely named file; returns its path (free it). */
static char *
new_file(const char *text)
{
	char name[32];
	char *p;

	snprintf(name, sizeof(name), "f%u.csv", file_seq++);
	p = tmp_path(name);
	write_text(p, text, strlen(text));
	return p;
}

static char *
new_dir(void)
{
	char name[32];
	char *p;

	snprintf(name, sizeof(name), "d%u", file_seq++);
	p = tmp_path(name);
	assert_int_equal(mkdir(p, 0700), 0);
	return p;
}

static char *
dir_file(const char *dir, const char *name, const char *text)
{
	char *p;

	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	write_text(p, text, strlen(text));
	return p;
}

static struct tg_rate
mkrate(uint32_t initial, uint32_t increment, uint32_t minimum, tg_money_t per_min,
       tg_money_t connect)
{
	struct tg_rate r;

	memset(&r, 0, sizeof(r));
	r.initial = initial;
	r.increment = increment;
	r.minimum = minimum;
	r.per_min = per_min;
	r.connect = connect;
	r.category = TG_CAT_national;
	r.prefix[0] = '1';
	r.prefix_len = 1;
	return r;
}

static const struct tg_rate *
match_str(const struct tg_plan *p, const char *dest)
{
	return tg_plan_match(p, dest, strlen(dest));
}

/* ---- billing ---- */

struct bill_case {
	uint32_t initial, increment, minimum;
	tg_money_t per_min, connect;
	uint32_t duration;
	uint32_t billed;
	tg_money_t charge;
};

static const struct bill_case bill_cases[] = {
    /* 60/60 at 0.10/min */
    {60, 60, 0, 100000, 0, 0, 0, 0},
    {60, 60, 0, 100000, 0, 1, 60, 100000},
    {60, 60, 0, 100000, 0, 59, 60, 100000},
    {60, 60, 0, 100000, 0, 60, 60, 100000},
    {60, 60, 0, 100000, 0, 61, 120, 200000},
    {60, 60, 0, 100000, 0, 120, 120, 200000},
    {60, 60, 0, 100000, 0, 121, 180, 300000},
    /* 30/6 at 0.06/min (0.001/s) */
    {30, 6, 0, 60000, 0, 0, 0, 0},
    {30, 6, 0, 60000, 0, 1, 30, 30000},
    {30, 6, 0, 60000, 0, 29, 30, 30000},
    {30, 6, 0, 60000, 0, 30, 30, 30000},
    {30, 6, 0, 60000, 0, 31, 36, 36000},
    {30, 6, 0, 60000, 0, 36, 36, 36000},
    {30, 6, 0, 60000, 0, 37, 42, 42000},
    {30, 6, 0, 60000, 0, 3600, 3600, 3600000},
    /* 1/1 at 0.01/min: fractions of a micro-unit round up */
    {1, 1, 0, 10000, 0, 0, 0, 0},
    {1, 1, 0, 10000, 0, 1, 1, 167},
    {1, 1, 0, 10000, 0, 2, 2, 334},
    {1, 1, 0, 10000, 0, 7, 7, 1167},
    {1, 1, 0, 10000, 0, 60, 60, 10000},
    {1, 1, 0, 10000, 0, 61, 61, 10167},
    /* 6/6 at 0.012/min, the demo's 1415555 */
    {6, 6, 0, 12000, 0, 1, 6, 1200},
    {6, 6, 0, 12000, 0, 6, 6, 1200},
    {6, 6, 0, 12000, 0, 7, 12, 2400},
    /* a connect fee */
    {60, 60, 0, 100000, 50000, 0, 0, 0},
    {60, 60, 0, 100000, 50000, 1, 60, 150000},
    {60, 60, 0, 100000, 50000, 61, 120, 250000},
    /* a connect fee only */
    {60, 60, 0, 0, 250000, 0, 0, 0},
    {60, 60, 0, 0, 250000, 1, 60, 250000},
    {60, 60, 0, 0, 250000, 3600, 3600, 250000},
    /* free */
    {1, 1, 0, 0, 0, 100, 100, 0},
    /* minimum 60 on 1/1 at 0.06/min: a floor under every call */
    {1, 1, 60, 60000, 0, 0, 0, 0},
    {1, 1, 60, 60000, 0, 1, 60, 60000},
    {1, 1, 60, 60000, 0, 2, 60, 60000},
    {1, 1, 60, 60000, 0, 30, 60, 60000},
    {1, 1, 60, 60000, 0, 60, 60, 60000},
    {1, 1, 60, 60000, 0, 61, 61, 61000},
    /* minimum 45 on 30/6: not on the 6 s grid */
    {30, 6, 45, 60000, 0, 1, 45, 45000},
    {30, 6, 45, 60000, 0, 30, 45, 45000},
    {30, 6, 45, 60000, 0, 36, 45, 45000},
    {30, 6, 45, 60000, 0, 42, 45, 45000},
    {30, 6, 45, 60000, 0, 43, 48, 48000},
    {30, 6, 45, 60000, 0, 48, 48, 48000},
    /* a minimum below the initial increment changes nothing */
    {30, 6, 20, 60000, 0, 1, 30, 30000},
    {30, 6, 20, 60000, 0, 31, 36, 36000},
    /* the longest call of the wire */
    {60, 60, 0, 100000, 0, TG_DURATION_MAX, TG_DURATION_MAX, 4464000000},
};

static void
test_billing_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < TG_ARRAY_LEN(bill_cases); i++) {
		const struct bill_case *c = &bill_cases[i];
		struct tg_rate r =
		    mkrate(c->initial, c->increment, c->minimum, c->per_min, c->connect);
		tg_money_t charge = -1;
		uint32_t billed = tg_rate_billed(&r, c->duration);

		if (billed != c->billed)
			fail_msg("case %zu: %u/%u min %u, %u s: billed %u, expected %u", i,
			         c->initial, c->increment, c->minimum, c->duration, billed,
			         c->billed);
		assert_true(tg_rate_charge(&r, c->duration, &charge));
		if (charge != c->charge)
			fail_msg("case %zu: %u s: charge %lld, expected %lld", i, c->duration,
			         (long long)charge, (long long)c->charge);
	}
}

static void
test_billing_overflow(void **state)
{
	struct tg_rate r = mkrate(60, 60, 0, INT64_MAX, 0);
	tg_money_t charge = 0;

	(void)state;
	assert_false(tg_rate_charge(&r, 3600, &charge));
	assert_true(tg_rate_charge(&r, 0, &charge));
	assert_int_equal(charge, 0);
	/* INT64_MAX per minute for 60 s is exactly INT64_MAX. */
	assert_true(tg_rate_charge(&r, 60, &charge));
	assert_int_equal(charge, INT64_MAX);

	r = mkrate(1, 1, 0, 60, INT64_MAX);
	assert_false(tg_rate_charge(&r, 1, &charge));
	r = mkrate(1, 1, 0, 0, INT64_MAX);
	assert_true(tg_rate_charge(&r, 1, &charge));
	assert_int_equal(charge, INT64_MAX);

	/* Near 2^32 s the billed seconds pass 2^32: saturated, the charge exact. */
	r = mkrate(60, 60, 0, 100000, 0);
	assert_int_equal(tg_rate_billed(&r, UINT32_MAX), UINT32_MAX);
	assert_true(tg_rate_charge(&r, UINT32_MAX, &charge));
	assert_int_equal(charge, (tg_money_t)71582789 * 100000);
}

/* Billed seconds never decrease with the duration, and never fall under the minimum. */
static void
test_billing_monotonic(void **state)
{
	static const uint32_t inits[] = {1, 6, 30, 60, 3600};
	static const uint32_t incs[] = {1, 6, 30, 60};
	static const uint32_t mins[] = {0, 1, 45, 60, 90, 3600};

	(void)state;
	for (size_t a = 0; a < TG_ARRAY_LEN(inits); a++)
		for (size_t b = 0; b < TG_ARRAY_LEN(incs); b++)
			for (size_t c = 0; c < TG_ARRAY_LEN(mins); c++) {
				struct tg_rate r = mkrate(inits[a], incs[b], mins[c], 1, 0);
				uint32_t prev = 0;

				for (uint32_t d = 1; d < 8000; d++) {
					uint32_t bl = tg_rate_billed(&r, d);

					assert_true(bl >= prev && bl >= d && bl >= mins[c]);
					assert_true(bl >= inits[a]);
					prev = bl;
				}
			}
}

/* The grant of one rate at one amount, by brute force: every duration, one by one. */
static void
check_grant_brute(const struct tg_rate *r, tg_money_t avail, uint32_t maxcap)
{
	uint32_t best = 0;
	tg_money_t best_cost = 0;

	for (uint32_t cap = 0; cap <= maxcap; cap++) {
		tg_money_t cost = -1;
		uint32_t g;

		if (cap > 0 && avail > 0) {
			/* cap is a step's right end when one more second costs more. */
			bool end = tg_rate_billed(r, cap + 1) != tg_rate_billed(r, cap);
			tg_money_t ch;

			assert_true(tg_rate_charge(r, cap, &ch));
			if (end && ch <= avail) {
				best = cap;
				best_cost = ch;
			}
		}
		g = tg_rate_grant(r, avail, cap, &cost);
		if (g != best || cost != best_cost)
			fail_msg("%u/%u min %u per_min %lld connect %lld avail %lld cap %u: "
			         "grant %u cost %lld, brute force %u cost %lld",
			         r->initial, r->increment, r->minimum, (long long)r->per_min,
			         (long long)r->connect, (long long)avail, cap, g, (long long)cost,
			         best, (long long)best_cost);
	}
}

/* One rate shape against brute force, at amounts around its charges. */
static void
check_grant_shape(const struct tg_rate *r)
{
	static const uint32_t probes[] = {1, 30, 60, 61, 97, 150, 240};
	tg_money_t avails[4 + 3 * TG_ARRAY_LEN(probes)] = {-5, 0, 1, INT64_MAX};
	size_t n = 4;

	for (size_t i = 0; i < TG_ARRAY_LEN(probes); i++) {
		tg_money_t ch;

		assert_true(tg_rate_charge(r, probes[i], &ch));
		avails[n++] = ch - 1;
		avails[n++] = ch;
		avails[n++] = ch + 1;
	}
	for (size_t i = 0; i < n; i++)
		check_grant_brute(r, avails[i], 250);
}

static void
test_grant_exhaustive(void **state)
{
	static const uint32_t inits[] = {1, 6, 30, 60};
	static const uint32_t incs[] = {1, 6, 30, 60};
	static const uint32_t mins[] = {0, 1, 30, 45, 60, 90, 120};
	static const tg_money_t per_mins[] = {0, 7, 1000, 12000, 600000};
	static const tg_money_t connects[] = {0, 500, 10000};
	const size_t shapes = TG_ARRAY_LEN(inits) * TG_ARRAY_LEN(incs) * TG_ARRAY_LEN(mins) *
	                      TG_ARRAY_LEN(per_mins) * TG_ARRAY_LEN(connects);

	(void)state;
	for (size_t k = 0; k < shapes; k++) {
		size_t i = k;
		uint32_t init = inits[i % TG_ARRAY_LEN(inits)];
		uint32_t inc = incs[(i /= TG_ARRAY_LEN(inits)) % TG_ARRAY_LEN(incs)];
		uint32_t min = mins[(i /= TG_ARRAY_LEN(incs)) % TG_ARRAY_LEN(mins)];
		tg_money_t per_min = per_mins[(i /= TG_ARRAY_LEN(mins)) % TG_ARRAY_LEN(per_mins)];
		tg_money_t connect =
		    connects[(i /= TG_ARRAY_LEN(per_mins)) % TG_ARRAY_LEN(connects)];
		struct tg_rate r = mkrate(init, inc, min, per_min, connect);

		check_grant_shape(&r);
	}
}

/* Long caps, a few shapes: the grant takes no time whatever the cap. */
static void
test_grant_long(void **state)
{
	struct tg_rate r = mkrate(30, 6, 45, 12000, 10000);
	tg_money_t cost;
	uint32_t g;

	(void)state;
	check_grant_brute(&r, 500000, 20000);
	r = mkrate(60, 60, 0, 1, 0);
	check_grant_brute(&r, 3000, 200000);
	/* Money for far more than the cap: the cap's boundary. */
	r = mkrate(60, 60, 0, 100000, 0);
	g = tg_rate_grant(&r, INT64_MAX, TG_DURATION_MAX, &cost);
	assert_int_equal(g, TG_DURATION_MAX);
	assert_int_equal(cost, (tg_money_t)TG_DURATION_MAX / 60 * 100000);
	g = tg_rate_grant(&r, INT64_MAX, UINT32_MAX, &cost);
	assert_int_equal(g, 60 + (UINT32_MAX - 60) / 60 * 60);
	/* A free rate grants the cap's boundary with any positive balance. */
	r = mkrate(1, 1, 0, 0, 0);
	g = tg_rate_grant(&r, 1, UINT32_MAX, &cost);
	assert_int_equal(g, UINT32_MAX);
	assert_int_equal(cost, 0);
}

struct grant_case {
	uint32_t initial, increment, minimum;
	tg_money_t per_min, connect, available;
	uint32_t cap, grant;
	tg_money_t cost;
};

/* The worked examples of docs/RATES.md. */
static const struct grant_case grant_cases[] = {
    {30, 6, 0, 60000, 0, 30000, 3600, 30, 30000},
    {30, 6, 0, 60000, 0, 35999, 3600, 30, 30000},
    {30, 6, 0, 60000, 0, 36000, 3600, 36, 36000},
    {30, 6, 0, 60000, 0, 29999, 3600, 0, 0},
    {30, 6, 0, 60000, 0, 1000000, 100, 96, 96000},
    {30, 6, 0, 60000, 0, 1000000, 29, 0, 0},
    {60, 60, 0, 100000, 50000, 200000, 3600, 60, 150000},
    {60, 60, 0, 100000, 50000, 250000, 3600, 120, 250000},
    {60, 60, 0, 100000, 50000, 50000, 3600, 0, 0},
    {30, 6, 45, 60000, 0, 45000, 3600, 42, 45000},
    {30, 6, 45, 60000, 0, 47999, 3600, 42, 45000},
    {30, 6, 45, 60000, 0, 48000, 3600, 48, 48000},
    {30, 6, 45, 60000, 0, 44999, 3600, 0, 0},
    {1, 1, 60, 60000, 0, 60000, 3600, 60, 60000},
    {1, 1, 60, 60000, 0, 60999, 3600, 60, 60000},
    {1, 1, 60, 60000, 0, 61000, 3600, 61, 61000},
    {1, 1, 60, 60000, 0, 1000000, 59, 0, 0},
    {6, 6, 0, 12000, 0, 10000000, 3600, 3600, 720000},
    {60, 60, 0, 0, 250000, 250000, 3600, 3600, 250000},
    {60, 60, 0, 0, 250000, 249999, 3600, 0, 0},
    {60, 60, 0, 0, 0, 0, 3600, 0, 0},
    {60, 60, 0, 0, 0, -1, 3600, 0, 0},
};

static void
test_grant_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < TG_ARRAY_LEN(grant_cases); i++) {
		const struct grant_case *c = &grant_cases[i];
		struct tg_rate r =
		    mkrate(c->initial, c->increment, c->minimum, c->per_min, c->connect);
		tg_money_t cost = -1;
		uint32_t g = tg_rate_grant(&r, c->available, c->cap, &cost);

		if (g != c->grant || cost != c->cost)
			fail_msg("case %zu: grant %u cost %lld, expected %u cost %lld", i, g,
			         (long long)cost, c->grant, (long long)c->cost);
	}
}

/* ---- registry ---- */

static void
test_registry(void **state)
{
	(void)state;
	reg_reset(3);
	assert_int_equal(tg_plan_registry_id(&reg, "gold", 4, false), -ENOENT);
	assert_int_equal(tg_plan_registry_id(&reg, "gold", 4, true), 0);
	assert_int_equal(tg_plan_registry_id(&reg, "basic", 5, true), 1);
	assert_int_equal(tg_plan_registry_id(&reg, "gold", 4, true), 0);
	assert_int_equal(tg_plan_registry_id(&reg, "gold", 4, false), 0);
	/* A prefix of a name is another name. */
	assert_int_equal(tg_plan_registry_id(&reg, "gol", 3, false), -ENOENT);
	assert_int_equal(tg_plan_registry_id(&reg, "golden", 4, false), 0);
	assert_string_equal(tg_plan_registry_name(&reg, 0), "gold");
	assert_string_equal(tg_plan_registry_name(&reg, 1), "basic");
	assert_null(tg_plan_registry_name(&reg, 2));
	assert_null(tg_plan_registry_name(&reg, UINT32_MAX));

	assert_int_equal(tg_plan_registry_id(&reg, "", 0, true), -EINVAL);
	assert_int_equal(tg_plan_registry_id(&reg, "a b", 3, true), -EINVAL);
	assert_int_equal(tg_plan_registry_id(&reg, "a,b", 3, true), -EINVAL);
	assert_int_equal(tg_plan_registry_id(&reg, "caf\xc3\xa9", 5, true), -EINVAL);
	assert_int_equal(tg_plan_registry_id(&reg, "0123456789012345678901234567890", 31, true), 2);
	assert_int_equal(tg_plan_registry_id(&reg, "01234567890123456789012345678901", 32, true),
	                 -EINVAL);
	assert_int_equal(tg_plan_registry_id(&reg, "A-z_0.9", 7, true), -ENOSPC);
	assert_int_equal(reg_count, 3);
	reg_reset(TG_PLANS_MAX);
	assert_int_equal(tg_plan_registry_id(&reg, "A-z_0.9", 7, true), 0);
	/* A damaged slot in shared memory (no NUL) is never handed out. */
	memset(reg_names[0], 'x', sizeof(reg_names[0]));
	assert_null(tg_plan_registry_name(&reg, 0));
}

/*
 * Regression: the registry handed out each name's slot for good, so names no
 * longer used (1030 ACCT.SET 9999 PLAN junkN) filled it and every later new
 * name failed.  Reclaim: the hook runs when a new name finds it full, frees
 * what no account (here a fake scan), no live plan and not id 0 uses, and
 * the freed slots take new names.
 */
static uint64_t reg_dying[TG_PLANS_MAX / 64];
static struct tg_plan_reclaim reg_hook;
static struct tg_rates *reclaim_rates;
static bool acct_plans[TG_PLANS_MAX];  /* what the fake accounts hold */
static bool acct_plans2[TG_PLANS_MAX]; /* what they hold at the second scan */
static unsigned scans, hook_runs;

static void
fake_scan(void *arg, bool *used)
{
	(void)arg;
	for (int i = 0; i < TG_PLANS_MAX; i++)
		used[i] = used[i] || (scans == 0 ? acct_plans[i] : acct_plans2[i]);
	scans++;
}

static uint32_t
fake_hook(void *arg)
{
	(void)arg;
	hook_runs++;
	scans = 0;
	return tg_rates_reclaim(reclaim_rates, fake_scan, NULL);
}

static int
reg_id(const char *name, bool create)
{
	return tg_plan_registry_id(&reg, name, strlen(name), create);
}

static void
test_registry_reclaims_unused_names(void **state)
{
	char *f = new_file(HEADER "live,1,national,0.01,0,60,60,0\n");
	char *f2 = new_file(HEADER "live,1,national,0.01,0,60,60,0\n"
	                           "extra,1,national,0.01,0,60,60,0\n");
	struct tg_rates *rates = aligned_alloc(64, (sizeof(*rates) + 63) & ~(size_t)63);
	struct tg_diag diag;

	(void)state;
	reg_reset(5);
	memset(reg_dying, 0, sizeof(reg_dying));
	reg_hook = (struct tg_plan_reclaim){.fn = fake_hook};
	reg.dying = reg_dying;
	reg.reclaim = &reg_hook;
	memset(acct_plans, 0, sizeof(acct_plans));
	assert_int_equal(tg_rates_init(rates, &reg), 0);
	reclaim_rates = rates;
	hook_runs = 0;
	tg_diag_init(&diag);
	assert_int_equal(reg_id("first", true), 0); /* id 0: never reclaimed */
	assert_int_equal(tg_rates_reload(rates, f, &diag), 0);
	assert_int_equal(reg_id("live", false), 1);
	assert_int_equal(reg_id("a", true), 2);
	assert_int_equal(reg_id("b", true), 3);
	assert_int_equal(reg_id("c", true), 4);
	assert_int_equal(hook_runs, 0);
	/* Full.  An account holds a; b was looked up before the mark and stored after it. */
	acct_plans[2] = true;
	memcpy(acct_plans2, acct_plans, sizeof(acct_plans));
	acct_plans2[3] = true;
	assert_int_equal(reg_id("d", true), 4);
	assert_int_equal(hook_runs, 1);
	assert_int_equal(scans, 2);
	assert_string_equal(tg_plan_registry_name(&reg, 0), "first");
	assert_string_equal(tg_plan_registry_name(&reg, 1), "live");
	assert_string_equal(tg_plan_registry_name(&reg, 2), "a");
	assert_string_equal(tg_plan_registry_name(&reg, 3), "b");
	assert_string_equal(tg_plan_registry_name(&reg, 4), "d");
	assert_int_equal(reg_id("c", false), -ENOENT);
	assert_int_equal(tg_plan_registry_live(&reg), 5);
	assert_int_equal(reg_count, 5);
	for (int i = 0; i < TG_PLANS_MAX / 64; i++)
		assert_int_equal(reg_dying[i], 0);

	/* Full of names in use: a second reclaim within the second does not run. */
	acct_plans[3] = acct_plans[4] = true;
	memcpy(acct_plans2, acct_plans, sizeof(acct_plans));
	assert_int_equal(reg_id("e", true), -ENOSPC);
	assert_int_equal(hook_runs, 1);
	/* A second later it runs, finds nothing to free: still full. */
	reg_hook.last_ns -= 2000000000ull;
	assert_int_equal(reg_id("e", true), -ENOSPC);
	assert_int_equal(hook_runs, 2);
	assert_int_equal(scans, 1);

	/* b is free again: a reload adding a plan reclaims it and goes through. */
	acct_plans[3] = acct_plans2[3] = false;
	reg_hook.last_ns -= 2000000000ull;
	tg_diag_init(&diag);
	assert_int_equal(tg_rates_reload(rates, f2, &diag), 0);
	assert_int_equal(hook_runs, 3);
	assert_int_equal(reg_id("extra", false), 3);
	assert_int_equal(reg_id("b", false), -ENOENT);
	assert_int_equal(reg_id("live", false), 1);
	assert_int_equal(reg_id("a", false), 2);
	assert_int_equal(reg_id("d", false), 4);

	tg_rates_fini(rates);
	free(rates);
	reg_reset(TG_PLANS_MAX);
	free(f);
	free(f2);
}

static void
test_registry_stable_ids(void **state)
{
	char *f1 = new_file(HEADER "alpha,1,national,0.01,0,60,60,0\n"
	                           "beta,1,national,0.02,0,60,60,0\n");
	char *f2 = new_file(HEADER "gamma,1,national,0.03,0,60,60,0\n"
	                           "beta,1,national,0.04,0,60,60,0\n"
	                           "alpha,1,national,0.05,0,60,60,0\n");
	struct tg_planset *ps1 = NULL, *ps2 = NULL;
	struct tg_diag diag;

	(void)state;
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(f1, &reg, &ps1, &diag), 0);
	assert_int_equal(tg_planset_load(f2, &reg, &ps2, &diag), 0);
	assert_int_equal(diag.count, 0);
	assert_int_equal(reg_count, 3);
	assert_int_equal(tg_plan_registry_id(&reg, "alpha", 5, false), 0);
	assert_int_equal(tg_plan_registry_id(&reg, "beta", 4, false), 1);
	assert_int_equal(tg_plan_registry_id(&reg, "gamma", 5, false), 2);

	assert_int_equal(tg_planset_plans(ps1), 2);
	assert_int_equal(tg_planset_plans(ps2), 3);
	assert_null(tg_planset_plan(ps1, 2));
	assert_null(tg_planset_plan(ps1, 1000));
	for (uint32_t id = 0; id < 3; id++) {
		const struct tg_plan *p = tg_planset_plan(ps2, id);

		assert_non_null(p);
		assert_int_equal(tg_plan_id(p), id);
		assert_string_equal(tg_plan_name(p), tg_plan_registry_name(&reg, id));
	}
	assert_int_equal(match_str(tg_planset_plan(ps1, 0), "1555")->per_min, 10000);
	assert_int_equal(match_str(tg_planset_plan(ps2, 0), "1555")->per_min, 50000);
	assert_int_equal(match_str(tg_planset_plan(ps2, 1), "1555")->per_min, 40000);
	tg_planset_free(ps1);
	tg_planset_free(ps2);
	free(f1);
	free(f2);
}

/* ---- loader: good inputs ---- */

static void
test_load_format(void **state)
{
	/* BOM, comments before the header, CRLF, blank lines, no final newline. */
	char *f = new_file("\xef\xbb\xbf# demo\r\n\r\n" HEADER "# basic plan\r\n"
	                   "basic,1,national,0.02,0,60,60,0\r\n"
	                   "   \r\n"
	                   "basic,1415555,national,0.012,0.001,6,6,0\r\n"
	                   "basic,011,international,0.25,0,30,6,0\r\n"
	                   "basic,1800,tollfree,0,0,1,1,0\r\n"
	                   "basic,411,directory,0,1.5,60,60,0\r\n"
	                   "basic,555,local,0.000001,0,1,1,60");
	struct tg_planset *ps = NULL;
	const struct tg_plan *p;
	const struct tg_rate *r;
	struct tg_diag diag;

	(void)state;
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(f, &reg, &ps, &diag), 0);
	assert_int_equal(diag.count, 0);
	assert_int_equal(tg_planset_plans(ps), 1);
	assert_int_equal(tg_planset_prefixes(ps), 6);
	p = tg_planset_plan(ps, 0);
	assert_string_equal(tg_plan_name(p), "basic");

	r = match_str(p, "14155551212");
	assert_non_null(r);
	assert_string_equal(r->prefix, "1415555");
	assert_int_equal(r->prefix_len, 7);
	assert_int_equal(r->category, TG_CAT_national);
	assert_int_equal(r->per_min, 12000);
	assert_int_equal(r->connect, 1000);
	assert_int_equal(r->initial, 6);
	assert_int_equal(r->increment, 6);
	assert_int_equal(r->minimum, 0);
	r = match_str(p, "011442071234567");
	assert_string_equal(r->prefix, "011");
	assert_int_equal(r->category, TG_CAT_international);
	assert_int_equal(match_str(p, "18005551212")->category, TG_CAT_tollfree);
	assert_int_equal(match_str(p, "411")->category, TG_CAT_directory);
	assert_int_equal(match_str(p, "411")->connect, 1500000);
	r = match_str(p, "5551234");
	assert_int_equal(r->category, TG_CAT_local);
	assert_int_equal(r->minimum, 60);
	assert_int_equal(r->per_min, 1);
	assert_null(match_str(p, "2125551212"));
	tg_planset_free(ps);
	free(f);
}

static void
test_load_header_only(void **state)
{
	char *f = new_file("# nothing yet\n" HEADER "\n# still nothing\n");
	struct tg_planset *ps = NULL;
	struct tg_diag diag;

	(void)state;
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(f, &reg, &ps, &diag), 0);
	assert_int_equal(tg_planset_plans(ps), 0);
	assert_int_equal(tg_planset_prefixes(ps), 0);
	assert_null(tg_planset_plan(ps, 0));
	assert_int_equal(reg_count, 0);
	tg_planset_free(ps);
	free(f);
}

/* ---- loader: every kind of bad row ---- */

struct bad_case {
	const char *row; /* at line 3, after the header and a good row */
	const char *reason;
};

static const struct bad_case bad_cases[] = {
    {"gold,44,local,0.0100000,0,60,60,0", "rate_per_min: 7 decimals"},
    {"gold,44,local,0.01,0.12345678,60,60,0", "connect_fee: 8 decimals"},
    {"gold,44,foo,0.01,0,60,60,0", "unknown category 'foo'"},
    {"gold,44,Local,0.01,0,60,60,0", "unknown category 'Local'"},
    {"gold,44,,0.01,0,60,60,0", "unknown category ''"},
    {"gold,1,local,0.02,0,60,60,0", "duplicate prefix 1 in plan gold (first at line 2)"},
    {"gold,44,local,0.01,0,60,60", "expected 8 fields, found 7"},
    {"gold,44,local,0.01,0,60,60,0,", "expected 8 fields, found 9"},
    {"gold", "expected 8 fields, found 1"},
    {"gold,4a4,local,0.01,0,60,60,0", "prefix: not digits '4a4'"},
    {"gold,+44,local,0.01,0,60,60,0", "prefix: not digits '+44'"},
    {"gold,,local,0.01,0,60,60,0", "prefix: empty"},
    {"gold,123456789012345678901234567890123,local,0.01,0,60,60,0",
     "prefix: 33 digits, at most 32"},
    {",44,local,0.01,0,60,60,0", "plan '': empty name"},
    {"go ld,44,local,0.01,0,60,60,0", "plan 'go ld': only A-Z a-z 0-9 _ . - allowed"},
    {" gold,44,local,0.01,0,60,60,0", "plan ' gold': only A-Z a-z 0-9 _ . - allowed"},
    {"\"gold\",44,local,0.01,0,60,60,0", "plan '\"gold\"': only A-Z a-z 0-9 _ . - allowed"},
    {"abcdefghijabcdefghijabcdefghij12,44,local,0.01,0,60,60,0",
     "plan 'abcdefghijabcdefghijabcdefghij12': longer than 31 characters"},
    {"gold,44,local,-0.01,0,60,60,0", "rate_per_min: negative"},
    {"gold,44,local,0.01,-1,60,60,0", "connect_fee: negative"},
    {"gold,44,local,abc,0,60,60,0", "rate_per_min: not an amount 'abc'"},
    {"gold,44,local,,0,60,60,0", "rate_per_min: empty"},
    {"gold,44,local,.5,0,60,60,0", "rate_per_min: not an amount '.5'"},
    {"gold,44,local,5.,0,60,60,0", "rate_per_min: not an amount '5.'"},
    {"gold,44,local,0.01,1e3,60,60,0", "connect_fee: not an amount '1e3'"},
    {"gold,44,local,0.01,0.5 ,60,60,0", "connect_fee: not an amount '0.5 '"},
    {"gold,44,local,9999999999999999,0,60,60,0", "rate_per_min: out of range '9999999999999999'"},
    {"gold,44,local,0.01,0,0,60,0", "initial: 0 outside 1..3600"},
    {"gold,44,local,0.01,0,6x,60,0", "initial: not a number '6x'"},
    {"gold,44,local,0.01,0,,60,0", "initial: empty"},
    {"gold,44,local,0.01,0,-1,60,0", "initial: not a number '-1'"},
    {"gold,44,local,0.01,0,60,3601,0", "increment: 3601 outside 1..3600"},
    {"gold,44,local,0.01,0,60,0,0", "increment: 0 outside 1..3600"},
    {"gold,44,local,0.01,0,60,60,3601", "minimum: 3601 outside 0..3600"},
    {"gold,44,local,0.01,0,60,60,99999999999999999999",
     "minimum: 99999999999999999999 outside 0..3600"},
    {"gold,44,local,0.01,0,60,60,1.5", "minimum: not a number '1.5'"},
    {"gold,44,local,0.01,0,60,60,0\tx", "minimum: not a number '0?x'"},
};

/* Load text; expect one problem, at line, with reason; nothing registered. */
static void
expect_one_error(const char *text, unsigned line, const char *reason)
{
	char *f = new_file(text);
	struct tg_planset *ps = NULL;
	struct tg_diag diag;
	int rc;

	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	rc = tg_planset_load(f, &reg, &ps, &diag);
	if (rc != -EINVAL || diag.count != 1 || diag.msg[0].line != line ||
	    strcmp(diag.msg[0].reason, reason) != 0 || strcmp(diag.msg[0].file, f) != 0)
		fail_msg("rc %d, %u problems, first %s:%u '%s'; expected line %u '%s'", rc,
		         diag.count, diag.msg[0].file, diag.msg[0].line, diag.msg[0].reason, line,
		         reason);
	assert_null(ps);
	assert_int_equal(reg_count, 0);
	free(f);
}

static void
test_load_bad_rows(void **state)
{
	(void)state;
	for (size_t i = 0; i < TG_ARRAY_LEN(bad_cases); i++) {
		char text[512];

		snprintf(text, sizeof(text),
		         HEADER "gold,1,local,0.01,0,60,60,0\n%s\n"
		                "gold,2,local,0.01,0,60,60,0\n",
		         bad_cases[i].row);
		expect_one_error(text, 3, bad_cases[i].reason);
	}
}

/*
 * Always-allowed prefixes: version 1 files mark them (yes/no), version 0
 * files still load with none marked, and a row of the wrong width for its
 * file's version, or a bad mark, is refused with its line and reason.
 */
static void
test_load_always_allowed(void **state)
{
	char *f1 = new_file("# version 1\n" HEADER_V1 "basic,911,other,0,0,1,1,0,yes\n"
	                    "basic,1800,tollfree,0,0,1,1,0,yes\n"
	                    "basic,999,other,0.5,0,60,60,0,yes\n"
	                    "basic,1,national,0.02,0,6,6,0,no\n");
	char *f0 = new_file(HEADER "basic,911,other,0,0,1,1,0\n");
	struct tg_planset *ps = NULL;
	struct tg_diag diag;

	(void)state;
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(f1, &reg, &ps, &diag), 0);
	const struct tg_plan *p = tg_planset_plan(ps, 0);
	assert_int_equal(match_str(p, "911")->always, 1);
	assert_int_equal(match_str(p, "18005551212")->always, 1);
	assert_int_equal(match_str(p, "999")->always, 1);
	assert_int_equal(match_str(p, "999")->per_min, 500000); /* rated at its rate */
	assert_int_equal(match_str(p, "12125550100")->always, 0);
	tg_planset_free(ps);

	reg_reset(TG_PLANS_MAX);
	assert_int_equal(tg_planset_load(f0, &reg, &ps, &diag), 0);
	assert_int_equal(match_str(tg_planset_plan(ps, 0), "911")->always, 0);
	tg_planset_free(ps);
	free(f0);
	free(f1);

	expect_one_error(HEADER_V1 "basic,911,other,0,0,1,1,0\n", 2, "expected 9 fields, found 8");
	expect_one_error(HEADER "basic,911,other,0,0,1,1,0,yes\n", 2, "expected 8 fields, found 9");
	expect_one_error(HEADER_V1 "basic,911,other,0,0,1,1,0,Yes\n", 2,
	                 "always: 'Yes', expected yes or no");
	expect_one_error(HEADER_V1 "basic,911,other,0,0,1,1,0,1\n", 2,
	                 "always: '1', expected yes or no");
	expect_one_error(HEADER_V1 "basic,911,other,0,0,1,1,0,\n", 2, "always: empty (yes or no)");
}

static void
test_load_missing_header(void **state)
{
	char reason[160];

	(void)state;
	/* A bad header names the newest version's. */
	snprintf(reason, sizeof(reason), "bad header, expected %.*s", (int)strlen(HEADER_V1) - 1,
	         HEADER_V1);
	expect_one_error("# rates\n\ngold,1,local,0.01,0,60,60,0\n", 3, reason);
	expect_one_error("plan,prefix,category,rate_per_min,connect_fee,initial,increment\n"
	                 "gold,1,local,0.01,0,60,60,0\n",
	                 1, reason);
	expect_one_error(
	    "plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum,\n", 1,
	    reason);
	expect_one_error(
	    "Plan,Prefix,Category,Rate_per_min,Connect_fee,Initial,Increment,Minimum\n", 1, reason);
	expect_one_error(" " HEADER, 1, reason);
	snprintf(reason, sizeof(reason), "no header line (expected %.*s)",
	         (int)strlen(HEADER_V1) - 1, HEADER_V1);
	expect_one_error("", 0, reason);
	expect_one_error("# only a comment\n\n", 0, reason);
}

static void
test_load_long_line(void **state)
{
	char text[4096];
	size_t n;

	(void)state;
	/* 1024 bytes (and a CR) are allowed; 1025 are not. */
	n = (size_t)snprintf(text, sizeof(text), HEADER "#");
	memset(text + n, 'x', TG_CSV_LINE_MAX - 1);
	n += TG_CSV_LINE_MAX - 1;
	n += (size_t)snprintf(text + n, sizeof(text) - n, "\r\n#");
	memset(text + n, 'x', TG_CSV_LINE_MAX);
	n += TG_CSV_LINE_MAX;
	snprintf(text + n, sizeof(text) - n, "\ngold,1,local,0.01,0,60,60,0\n");
	expect_one_error(text, 3, "line of 1025 bytes, at most 1024");
}

static void
test_load_many_errors(void **state)
{
	char text[8192];
	size_t n;
	char *f;
	struct tg_planset *ps = NULL;
	struct tg_diag diag;

	(void)state;
	n = (size_t)snprintf(text, sizeof(text), HEADER);
	/* line 2 good, lines 3..22 bad (20 problems: 16 kept, all counted) */
	n += (size_t)snprintf(text + n, sizeof(text) - n, "p,1,local,0.01,0,60,60,0\n");
	for (int i = 0; i < 20; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "p,%d,nope,0.01,0,60,60,0\n",
		                      100 + i);
	f = new_file(text);
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(f, &reg, &ps, &diag), -EINVAL);
	assert_null(ps);
	assert_int_equal(diag.count, 20);
	for (unsigned i = 0; i < TG_DIAG_KEEP; i++) {
		assert_int_equal(diag.msg[i].line, 3 + i);
		assert_string_equal(diag.msg[i].reason, "unknown category 'nope'");
	}
	assert_int_equal(reg_count, 0);
	free(f);

	/* Three duplicate rows and a bad one: each reported at its own line. */
	f = new_file(HEADER "q,44,local,0.01,0,60,60,0\n"
	                    "q,44,local,0.01,0,60,60,0\n"
	                    "q,45,local,x,0,60,60,0\n"
	                    "r,44,local,0.01,0,60,60,0\n"
	                    "q,44,local,0.01,0,60,60,0\n");
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(f, &reg, &ps, &diag), -EINVAL);
	assert_int_equal(diag.count, 3);
	assert_int_equal(diag.msg[0].line, 4);
	assert_string_equal(diag.msg[0].reason, "rate_per_min: not an amount 'x'");
	assert_int_equal(diag.msg[1].line, 3);
	assert_string_equal(diag.msg[1].reason, "duplicate prefix 44 in plan q (first at line 2)");
	assert_int_equal(diag.msg[2].line, 6);
	assert_string_equal(diag.msg[2].reason, "duplicate prefix 44 in plan q (first at line 2)");
	free(f);
}

static void
test_load_too_many_plans(void **state)
{
	size_t cap = (TG_PLANS_MAX + 2) * 40 + sizeof(HEADER), n;
	char *text = malloc(cap);
	char *f;
	struct tg_planset *ps = NULL;
	struct tg_diag diag;

	(void)state;
	n = (size_t)snprintf(text, cap, HEADER);
	for (int i = 0; i <= TG_PLANS_MAX; i++)
		n += (size_t)snprintf(text + n, cap - n, "p%d,1,local,0.01,0,60,60,0\n", i);
	f = new_file(text);
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(f, &reg, &ps, &diag), -EINVAL);
	assert_int_equal(diag.count, 1);
	assert_int_equal(diag.msg[0].line, TG_PLANS_MAX + 2);
	assert_string_equal(diag.msg[0].reason, "more than 1024 plans in one load");
	assert_int_equal(reg_count, 0);
	free(f);
	free(text);
}

static void
test_load_registry_full(void **state)
{
	char *f = new_file(HEADER "a,1,local,0.01,0,60,60,0\n"
	                          "b,1,local,0.01,0,60,60,0\n"
	                          "c,1,local,0.01,0,60,60,0\n");
	struct tg_planset *ps = NULL;
	struct tg_diag diag;

	(void)state;
	reg_reset(2);
	assert_int_equal(tg_plan_registry_id(&reg, "b", 1, true), 0);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(f, &reg, &ps, &diag), -ENOSPC);
	assert_null(ps);
	assert_int_equal(diag.count, 1);
	assert_string_equal(
	    diag.msg[0].reason,
	    "plan-name registry full: 2 new names, room for 1 of 2 (unused names are "
	    "reclaimed at most once a second)");
	/* all or nothing: neither a nor c was registered */
	assert_int_equal(reg_count, 1);
	free(f);
}

static void
test_load_unreadable(void **state)
{
	char *missing = tmp_path("no-such-file.csv");
	char *empty = new_dir();
	struct tg_planset *ps = NULL;
	struct tg_diag diag;

	(void)state;
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(missing, &reg, &ps, &diag), -ENOENT);
	assert_int_equal(diag.count, 1);
	assert_string_equal(diag.msg[0].file, missing);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(empty, &reg, &ps, &diag), -ENOENT);
	assert_string_equal(diag.msg[0].reason, "no *.csv file in this directory");
	assert_null(ps);
	free(missing);
	free(empty);
}

/* ---- loader: directories ---- */

static void
test_load_directory(void **state)
{
	char *dir = new_dir();
	char *files[5];
	struct tg_planset *ps = NULL;
	struct tg_diag diag;
	const struct tg_plan *p;

	(void)state;
	/* Name order decides ids: a.csv before b.csv whatever readdir says. */
	files[0] = dir_file(dir, "b.csv",
	                    HEADER "gold,1,national,0.01,0,6,6,0\n"
	                           "gold,44,international,0.05,0,6,6,0\n");
	files[1] = dir_file(dir, "a.csv", HEADER "basic,1,national,0.02,0,60,60,0\n");
	files[2] = dir_file(dir, "notes.txt", "not a rate file\n");
	files[3] = dir_file(dir, ".hidden.csv", "not even a header\n");
	files[4] = dir_file(dir, "c.csv.bak", "old\n");
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(dir, &reg, &ps, &diag), 0);
	assert_int_equal(diag.count, 0);
	assert_int_equal(tg_planset_plans(ps), 2);
	assert_int_equal(tg_planset_prefixes(ps), 3);
	assert_int_equal(tg_plan_registry_id(&reg, "basic", 5, false), 0);
	assert_int_equal(tg_plan_registry_id(&reg, "gold", 4, false), 1);
	p = tg_planset_plan(ps, 1);
	assert_string_equal(tg_plan_name(p), "gold");
	assert_int_equal(match_str(p, "447700900123")->per_min, 50000);
	tg_planset_free(ps);

	/* A bad row in the second file fails the whole load, with its file name. */
	free(files[0]);
	files[0] = dir_file(dir, "b.csv",
	                    HEADER "gold,1,national,0.01,0,6,6,0\n"
	                           "gold,44,international,0.05,0,6,0,0\n");
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	ps = NULL;
	assert_int_equal(tg_planset_load(dir, &reg, &ps, &diag), -EINVAL);
	assert_null(ps);
	assert_int_equal(diag.count, 1);
	assert_string_equal(diag.msg[0].file, files[0]);
	assert_int_equal(diag.msg[0].line, 3);
	assert_string_equal(diag.msg[0].reason, "increment: 0 outside 1..3600");
	assert_int_equal(reg_count, 0);
	for (int i = 0; i < 5; i++)
		free(files[i]);
	free(dir);
}

static void
test_load_plan_in_two_files(void **state)
{
	char *dir = new_dir();
	char *a, *b;
	struct tg_planset *ps = NULL;
	struct tg_diag diag;

	(void)state;
	a = dir_file(dir, "a.csv",
	             HEADER "# gold\n"
	                    "gold,1,national,0.01,0,6,6,0\n");
	b = dir_file(dir, "b.csv",
	             HEADER "basic,1,national,0.02,0,60,60,0\n"
	                    "gold,44,international,0.05,0,6,6,0\n"
	                    "gold,33,international,0.05,0,6,6,0\n");
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(dir, &reg, &ps, &diag), -EINVAL);
	assert_null(ps);
	/* Reported once per file, at its first row there. */
	assert_int_equal(diag.count, 1);
	assert_string_equal(diag.msg[0].file, b);
	assert_int_equal(diag.msg[0].line, 3);
	assert_string_equal(diag.msg[0].reason, "plan gold already in a.csv (line 3)");
	assert_int_equal(reg_count, 0);
	free(a);
	free(b);
	free(dir);
}

/* ---- longest-prefix match ---- */

static void
test_match_small(void **state)
{
	static const char *const cases[][2] = {
	    {"14155551212", "1415555"},
	    {"1415555", "1415555"},
	    {"141555", "1415"},
	    {"14165551212", "14"},
	    {"12125551212", "1"},
	    {"1", "1"},
	    {"442071234567", "4420"},
	    {"442079", "442079"},
	    {"4420799", "442079"},
	    {"44", "44"},
	    {"4", NULL},
	    {"33", NULL},
	    {"0", NULL},
	    {"", NULL},
	    {"14a", NULL},
	    {"1415555121x", NULL},
	    {"-1", NULL},
	    {" 1", NULL},
	    {"1 ", NULL},
	};
	char *f = new_file(HEADER "p,1,national,0.01,0,60,60,0\n"
	                          "p,14,national,0.01,0,60,60,0\n"
	                          "p,1415,national,0.01,0,60,60,0\n"
	                          "p,1415555,national,0.01,0,60,60,0\n"
	                          "p,44,international,0.01,0,60,60,0\n"
	                          "p,4420,international,0.01,0,60,60,0\n"
	                          "p,442079,international,0.01,0,60,60,0\n");
	char dest[TG_DEST_MAX + 2];
	struct tg_planset *ps = NULL;
	const struct tg_plan *p;
	struct tg_diag diag;

	(void)state;
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(f, &reg, &ps, &diag), 0);
	p = tg_planset_plan(ps, 0);
	for (size_t i = 0; i < TG_ARRAY_LEN(cases); i++) {
		const struct tg_rate *r = match_str(p, cases[i][0]);

		if (cases[i][1] == NULL && r != NULL)
			fail_msg("'%s' matched %s", cases[i][0], r->prefix);
		if (cases[i][1] != NULL && (r == NULL || strcmp(r->prefix, cases[i][1]) != 0))
			fail_msg("'%s' matched %s, expected %s", cases[i][0], r ? r->prefix : "-",
			         cases[i][1]);
	}
	/* 32 digits is the longest destination, 33 is refused. */
	memset(dest, '1', sizeof(dest));
	assert_non_null(tg_plan_match(p, dest, TG_DEST_MAX));
	assert_null(tg_plan_match(p, dest, TG_DEST_MAX + 1));
	/* Only len bytes are read. */
	assert_string_equal(tg_plan_match(p, "4420799", 3)->prefix, "44");
	tg_planset_free(ps);
	free(f);
}

struct big_prefix {
	char s[16];
};

static int
cmp_prefix(const void *a, const void *b)
{
	return strcmp(((const struct big_prefix *)a)->s, ((const struct big_prefix *)b)->s);
}

static uint64_t
rng_next(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* The reference: try every length of dest, longest first, in the sorted list. */
static const char *
ref_match(const struct big_prefix *v, size_t n, const char *dest, size_t len)
{
	for (size_t l = len < 15 ? len : 15; l > 0; l--) {
		struct big_prefix key;
		const struct big_prefix *hit;

		memcpy(key.s, dest, l);
		key.s[l] = '\0';
		hit = bsearch(&key, v, n, sizeof(*v), cmp_prefix);
		if (hit != NULL)
			return hit->s;
	}
	return NULL;
}

/* Plain brute force, for a few: the longest prefix of all, scanned one by one. */
static const char *
scan_match(const struct big_prefix *v, size_t n, const char *dest, size_t len)
{
	const char *best = NULL;
	size_t best_len = 0;

	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(v[i].s);

		if (l <= len && l > best_len && memcmp(v[i].s, dest, l) == 0) {
			best = v[i].s;
			best_len = l;
		}
	}
	return best;
}

static void
test_match_100k(void **state)
{
	enum { WANT = 100000 };
	struct big_prefix *v = calloc(WANT + 100, sizeof(*v));
	size_t n = 0, u = 0, cap = (size_t)WANT * 64 + 128, len;
	char *text = malloc(cap), *f;
	uint64_t x = 0x2545f4914f6cdd1dull;
	struct tg_planset *ps = NULL;
	const struct tg_plan *p;
	struct tg_diag diag;

	(void)state;
	assert_non_null(v);
	assert_non_null(text);
	/* Random prefixes of 3..12 digits; sorted and deduplicated until WANT remain. */
	while (u < WANT) {
		for (n = u; n < WANT + 100; n++) {
			size_t l = 3 + rng_next(&x) % 10;

			for (size_t i = 0; i < l; i++)
				v[n].s[i] = (char)('0' + rng_next(&x) % 10);
			v[n].s[l] = '\0';
		}
		qsort(v, n, sizeof(*v), cmp_prefix);
		u = 0;
		for (size_t i = 0; i < n; i++)
			if (u == 0 || strcmp(v[u - 1].s, v[i].s) != 0)
				v[u++] = v[i];
	}
	n = WANT;
	/* Shuffle the file order so the trie is not built from sorted input. */
	len = (size_t)snprintf(text, cap, HEADER);
	for (size_t i = 0; i < n; i++) {
		size_t j = (size_t)(rng_next(&x) % n);
		struct big_prefix t = v[i];

		v[i] = v[j];
		v[j] = t;
	}
	for (size_t i = 0; i < n; i++) {
		char money[TG_MONEY_STR_MAX];

		tg_money_format((tg_money_t)i + 1, money);
		len += (size_t)snprintf(text + len, cap - len, "big,%s,international,%s,0,1,1,0\n",
		                        v[i].s, money);
	}
	f = new_file(text);
	free(text);
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	assert_int_equal(tg_planset_load(f, &reg, &ps, &diag), 0);
	assert_int_equal(tg_planset_prefixes(ps), WANT);
	p = tg_planset_plan(ps, 0);

	/* Every prefix finds its own row (rate i + 1 micro-units). */
	for (size_t i = 0; i < n; i++) {
		const struct tg_rate *r = match_str(p, v[i].s);

		assert_non_null(r);
		assert_string_equal(r->prefix, v[i].s);
		assert_int_equal(r->per_min, (tg_money_t)i + 1);
	}
	qsort(v, n, sizeof(*v), cmp_prefix);

	/* Random destinations: 11 digits mostly, every length 1..20 some of the time. */
	for (int k = 0; k < 100000; k++) {
		char dest[24];
		size_t dl = k % 10 == 0 ? 1 + rng_next(&x) % 20 : 11;
		const struct tg_rate *r;
		const char *want;

		for (size_t i = 0; i < dl; i++)
			dest[i] = (char)('0' + rng_next(&x) % 10);
		dest[dl] = '\0';
		r = tg_plan_match(p, dest, dl);
		want = ref_match(v, n, dest, dl);
		if ((r == NULL) != (want == NULL) || (r != NULL && strcmp(r->prefix, want) != 0))
			fail_msg("%s: matched %s, expected %s", dest, r ? r->prefix : "-",
			         want ? want : "-");
		if (k < 100) {
			const char *scan = scan_match(v, n, dest, dl);

			assert_true(scan == want || (scan && want && strcmp(scan, want) == 0));
		}
	}
	tg_planset_free(ps);
	free(v);
	free(f);
}

/* ---- the demo plan of tools/demo ---- */

static void
test_demo_plan(void **state)
{
	char path[512];
	const char *slash = strrchr(__FILE__, '/');
	struct tg_planset *ps = NULL;
	struct tg_diag diag;
	const struct tg_plan *p;
	const struct tg_rate *r;
	bool seen[TG_CATEGORY__COUNT] = {false};

	(void)state;
	/* __FILE__ is relative to the build directory, where meson runs tests. */
	snprintf(path, sizeof(path), "%.*s/../tools/demo/rates.csv",
	         slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".");
	if (access(path, R_OK) != 0)
		skip();
	reg_reset(TG_PLANS_MAX);
	tg_diag_init(&diag);
	if (tg_planset_load(path, &reg, &ps, &diag) != 0) {
		tg_diag_print(&diag, 2);
		fail();
	}
	assert_true(tg_planset_plans(ps) >= 2);
	for (uint32_t id = 0; id < tg_planset_plans(ps); id++) {
		p = tg_planset_plan(ps, id);
		assert_non_null(p);
		/* Emergency numbers are always allowed, and free, in every demo plan. */
		assert_int_equal(match_str(p, "911")->always, 1);
		assert_int_equal(match_str(p, "112")->always, 1);
		assert_int_equal(match_str(p, "911")->per_min, 0);
		r = match_str(p, "14155551212");
		assert_non_null(r);
		assert_int_equal(r->always, 0);
		assert_string_equal(r->prefix, "1415555");
		assert_int_equal(r->category, TG_CAT_national);
		/* prefix 1 is every plan's national fallback */
		r = match_str(p, "19995551212");
		assert_non_null(r);
		assert_string_equal(r->prefix, "1");
		assert_int_equal(r->category, TG_CAT_national);
	}
	p = tg_planset_plan(ps, (uint32_t)tg_plan_registry_id(&reg, "basic", 5, false));
	r = match_str(p, "14155551212");
	assert_int_equal(r->per_min, 12000);
	assert_int_equal(r->initial, 6);
	assert_int_equal(r->increment, 6);
	for (uint32_t id = 0; id < tg_planset_plans(ps); id++) {
		static const char *const probes[] = {"4115551212",  "411",      "18005551212",
		                                     "12125551234", "01144207", "011",
		                                     "14155551212"};

		p = tg_planset_plan(ps, id);
		for (size_t i = 0; i < TG_ARRAY_LEN(probes); i++) {
			r = match_str(p, probes[i]);
			if (r != NULL)
				seen[r->category] = true;
		}
	}
	assert_true(seen[TG_CAT_local] && seen[TG_CAT_national] && seen[TG_CAT_international] &&
	            seen[TG_CAT_tollfree] && seen[TG_CAT_directory]);
	tg_planset_free(ps);
}

/* ---- the live set under readers ---- */

enum { RELOAD_A = 2000, RELOAD_B = 3000, READERS = 2, RELOADS = 40 };

struct reader {
	/* ck_epoch keeps a record on its list after unregistering: it must outlive rates. */
	ck_epoch_record_t rec;
	pthread_t tid;
	struct tg_rates *rates;
	uint32_t plan;
	int *stop; /* set by the main thread (compiler atomics: TSan sees them) */
	uint64_t seed;
	unsigned long checks, seen_a, seen_b;
	int bad; /* 0, or what was wrong */
};

static void
reload_prefix(uint32_t i, char out[16])
{
	/* distinct 7-digit prefixes, spread over the first digits */
	snprintf(out, 16, "%u%06u", 1 + i % 9, i);
}

static void *
reader_main(void *arg)
{
	struct reader *rd = arg;
	ck_epoch_record_t *rec = &rd->rec;

	tg_rates_reader_register(rd->rates, rec);
	while (!__atomic_load_n(rd->stop, __ATOMIC_ACQUIRE) && rd->bad == 0) {
		ck_epoch_section_t sec;
		const struct tg_planset *ps = tg_rates_enter(rd->rates, rec, &sec);
		const struct tg_plan *p = tg_planset_plan(ps, rd->plan);

		if (p != NULL) {
			size_t n = tg_planset_prefixes(ps);
			tg_money_t want = n == RELOAD_A ? 10000 : 20000;

			if (n != RELOAD_A && n != RELOAD_B)
				rd->bad = 1;
			for (int k = 0; k < 64 && rd->bad == 0; k++) {
				char dest[24];
				uint32_t i = (uint32_t)(rng_next(&rd->seed) % RELOAD_B);
				const struct tg_rate *r;

				reload_prefix(i, dest);
				memcpy(dest + 7, "0000", 5);
				r = tg_plan_match(p, dest, 11);
				/* A row of the other version would be a torn plan. */
				if (i < RELOAD_A && (r == NULL || r->per_min != want))
					rd->bad = 2;
				if (i >= RELOAD_A && (n == RELOAD_A) != (r == NULL))
					rd->bad = 3;
				if (r != NULL && r->per_min != want)
					rd->bad = 4;
				rd->checks++;
			}
			if (n == RELOAD_A)
				rd->seen_a++;
			else
				rd->seen_b++;
		}
		tg_rates_exit(rec, &sec);
	}
	tg_rates_reader_unregister(rec);
	return NULL;
}

static char *
reload_file(uint32_t rows, const char *per_min)
{
	size_t cap = (size_t)rows * 64 + 128, n;
	char *text = malloc(cap), *f;

	n = (size_t)snprintf(text, cap, HEADER);
	for (uint32_t i = 0; i < rows; i++) {
		char pre[16];

		reload_prefix(i, pre);
		n += (size_t)snprintf(text + n, cap - n, "p,%s,national,%s,0,60,60,0\n", pre,
		                      per_min);
	}
	f = new_file(text);
	free(text);
	return f;
}

static void
test_reload_under_readers(void **state)
{
	char *fa = reload_file(RELOAD_A, "0.01");
	char *fb = reload_file(RELOAD_B, "0.02");
	char *bad = new_file(HEADER "p,1,national,0.01,0,60,0,0\n");
	struct tg_rates *rates = aligned_alloc(64, (sizeof(*rates) + 63) & ~(size_t)63);
	struct reader rd[READERS];
	int stop = 0;
	struct tg_diag diag;
	unsigned long total = 0, seen_a = 0, seen_b = 0;

	(void)state;
	reg_reset(TG_PLANS_MAX);
	assert_int_equal(tg_rates_init(rates, &reg), 0);
	assert_int_equal(tg_planset_plans(rates->current), 0);
	assert_int_equal(rates->generation, 0);
	for (int i = 0; i < READERS; i++) {
		memset(&rd[i], 0, sizeof(rd[i]));
		rd[i].rates = rates;
		rd[i].plan = 0;
		rd[i].stop = &stop;
		rd[i].seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
		assert_int_equal(pthread_create(&rd[i].tid, NULL, reader_main, &rd[i]), 0);
	}
	for (int k = 0; k < RELOADS; k++) {
		tg_diag_init(&diag);
		assert_int_equal(tg_rates_reload(rates, k % 2 ? fb : fa, &diag), 0);
		assert_int_equal(rates->generation, (uint64_t)k + 1);
		if (k == RELOADS / 2) {
			/* A failed reload leaves the live set and generation alone. */
			const struct tg_planset *before = rates->current;

			tg_diag_init(&diag);
			assert_int_equal(tg_rates_reload(rates, bad, &diag), -EINVAL);
			assert_int_equal(diag.count, 1);
			assert_ptr_equal(rates->current, before);
			assert_int_equal(rates->generation, (uint64_t)k + 1);
		}
		usleep(1000);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < READERS; i++) {
		assert_int_equal(pthread_join(rd[i].tid, NULL), 0);
		if (rd[i].bad != 0)
			fail_msg("reader %d saw a torn plan set (%d)", i, rd[i].bad);
		total += rd[i].checks;
		seen_a += rd[i].seen_a;
		seen_b += rd[i].seen_b;
	}
	/* The readers really ran across swaps: both versions were seen. */
	assert_true(total > 0 && seen_a > 0 && seen_b > 0);
	/* The id of p never changed across all those loads. */
	assert_int_equal(reg_count, 1);
	tg_rates_fini(rates);
	free(rates);
	free(fa);
	free(fb);
	free(bad);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_billing_table),
	    cmocka_unit_test(test_billing_overflow),
	    cmocka_unit_test(test_billing_monotonic),
	    cmocka_unit_test(test_grant_table),
	    cmocka_unit_test(test_grant_exhaustive),
	    cmocka_unit_test(test_grant_long),
	    cmocka_unit_test(test_registry),
	    cmocka_unit_test(test_registry_reclaims_unused_names),
	    cmocka_unit_test(test_registry_stable_ids),
	    cmocka_unit_test(test_load_format),
	    cmocka_unit_test(test_load_header_only),
	    cmocka_unit_test(test_load_bad_rows),
	    cmocka_unit_test(test_load_missing_header),
	    cmocka_unit_test(test_load_always_allowed),
	    cmocka_unit_test(test_load_long_line),
	    cmocka_unit_test(test_load_many_errors),
	    cmocka_unit_test(test_load_too_many_plans),
	    cmocka_unit_test(test_load_registry_full),
	    cmocka_unit_test(test_load_unreadable),
	    cmocka_unit_test(test_load_directory),
	    cmocka_unit_test(test_load_plan_in_two_files),
	    cmocka_unit_test(test_match_small),
	    cmocka_unit_test(test_match_100k),
	    cmocka_unit_test(test_demo_plan),
	    cmocka_unit_test(test_reload_under_readers),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
