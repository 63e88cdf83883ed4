/*
 * fuzz_rates.c - fuzz target for the rate-plan CSV loader (rate_load.c,
 * csv.c, lpm.c; format in docs/RATES.md) and the billing of what it loads.
 *
 * The input is one plan file, loaded with tg_planset_load from a memfd.  A
 * line "%%" splits it into up to 8 files (a.csv, b.csv, ...) loaded as a
 * directory, which reaches the rules across files (a plan in two files).
 * Beyond not crashing or leaking: a refused load reports a problem and hands
 * back nothing; an accepted one holds every row as written, each row's prefix
 * matches itself exactly and is the longest match under any longer number,
 * and billing its rate keeps the rules of docs/RATES.md (charges never fall
 * as a call gets longer, a grant costs what it says and fits the money, and
 * one more increment would not).  The plan registry is reset every run.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "tg_rate.h"
#include "tg_result.h"

#define FILES_MAX 8
/* Rows whose match and billing are checked, per run. */
#define ROWS_CHECKED 64

static char reg_names[TG_PLANS_MAX][TG_PLAN_NAME_MAX + 1];
static uint32_t reg_count;
static struct tg_plan_registry reg = {reg_names, &reg_count, TG_PLANS_MAX};

static struct fuzz_memfd input;
static const char *dir;
static const char *const file_names[FILES_MAX] = {"a.csv", "b.csv", "c.csv", "d.csv",
                                                  "e.csv", "f.csv", "g.csv", "h.csv"};

struct part {
	const char *p;
	size_t len;
};

/* Split at lines "%%" (CR allowed): the number of parts. */
static unsigned
split(const char *s, size_t len, struct part *parts)
{
	unsigned n = 0;
	size_t start = 0, i = 0;

	while (i < len) {
		const char *nl = memchr(s + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - s) : len, ll = end - i;
		if (n + 1 < FILES_MAX && ((ll == 2 && memcmp(s + i, "%%", 2) == 0) ||
		                          (ll == 3 && memcmp(s + i, "%%\r", 3) == 0))) {
			parts[n++] = (struct part){s + start, i - start};
			start = end + 1 < len ? end + 1 : len;
		}
		i = nl ? end + 1 : len;
	}
	parts[n++] = (struct part){s + start, len - start};
	return n;
}

static uint32_t
field_u32(const char *s, size_t len)
{
	uint32_t v = 0;
	for (size_t i = 0; i < len; i++)
		v = v * 10 + (uint32_t)(s[i] - '0'); /* checked by the loader: <= 3600 */
	return v;
}

static void
check_billing(const struct tg_rate *r)
{
	static const uint32_t durations[] = {
	    0, 1, 5, 6, 29, 30, 59, 60, 61, 119, 3600, 86400, TG_DURATION_MAX, UINT32_MAX};
	static const tg_money_t money[] = {0,        1, 9999, 1000000, 123456789, 1000000000000,
	                                   INT64_MAX};
	tg_money_t last = 0, c = 0;
	bool overflowed = false;

	for (size_t i = 0; i < sizeof(durations) / sizeof(durations[0]); i++) {
		uint32_t d = durations[i], b = tg_rate_billed(r, d);
		FUZZ_CHECK(d == 0 ? b == 0 : b >= d && b >= r->minimum && b >= r->initial);
		if (!tg_rate_charge(r, d, &c)) {
			overflowed = true; /* and for every longer call too */
			continue;
		}
		FUZZ_CHECK(!overflowed && c >= last && c >= (d ? r->connect : 0));
		last = c;
	}
	for (size_t i = 0; i < sizeof(money) / sizeof(money[0]); i++) {
		tg_money_t avail = money[i], cost = -1, next;
		if (i < 3 && !tg_money_add(avail, r->connect, &avail))
			avail = INT64_MAX;
		uint32_t cap = 3600, g = tg_rate_grant(r, avail, cap, &cost);
		if (g == 0) {
			FUZZ_CHECK(cost == 0);
			continue;
		}
		FUZZ_CHECK(g <= cap && g >= r->initial && cost <= avail);
		FUZZ_CHECK(tg_rate_charge(r, g, &c) && c == cost);
		/* The longest such grant: one more increment costs more than there is. */
		if (g + r->increment <= cap && tg_rate_charge(r, g + r->increment, &next))
			FUZZ_CHECK(next > avail);
	}
}

/* One accepted row: its rate is in its plan as written, and matches as it must. */
static void
check_row(const struct tg_planset *ps, const struct part *f)
{
	const char *fl[8];
	size_t fn[8];
	unsigned n = 0;
	const char *p = f->p, *end = f->p + f->len;

	while (n < 8) {
		const char *c = memchr(p, ',', (size_t)(end - p));
		fl[n] = p;
		fn[n++] = (size_t)((c ? c : end) - p);
		if (c == NULL)
			break;
		p = c + 1;
	}
	FUZZ_CHECK(n == 8);
	int id = tg_plan_registry_id(&reg, fl[0], fn[0], false);
	FUZZ_CHECK(id >= 0);
	const struct tg_plan *plan = tg_planset_plan(ps, (uint32_t)id);
	FUZZ_CHECK(plan != NULL && tg_plan_id(plan) == (uint32_t)id);
	FUZZ_CHECK(strlen(tg_plan_name(plan)) == fn[0] &&
	           memcmp(tg_plan_name(plan), fl[0], fn[0]) == 0);

	const struct tg_rate *r = tg_plan_match(plan, fl[1], fn[1]);
	tg_money_t per_min, connect;
	FUZZ_CHECK(r != NULL && r->prefix_len == fn[1] && memcmp(r->prefix, fl[1], fn[1]) == 0);
	FUZZ_CHECK(r->prefix[fn[1]] == '\0');
	FUZZ_CHECK((int)r->category == tg_category_parse(fl[2], fn[2]));
	FUZZ_CHECK(tg_money_parse(fl[3], fn[3], &per_min) == 0 && per_min == r->per_min);
	FUZZ_CHECK(tg_money_parse(fl[4], fn[4], &connect) == 0 && connect == r->connect);
	FUZZ_CHECK(r->initial == field_u32(fl[5], fn[5]));
	FUZZ_CHECK(r->increment == field_u32(fl[6], fn[6]));
	FUZZ_CHECK(r->minimum == field_u32(fl[7], fn[7]));

	/* Under a longer number the match is at least this long, and a prefix of it. */
	if (fn[1] < TG_DEST_MAX) {
		char dest[TG_DEST_MAX];
		memcpy(dest, fl[1], fn[1]);
		dest[fn[1]] = '7';
		const struct tg_rate *l = tg_plan_match(plan, dest, fn[1] + 1);
		FUZZ_CHECK(l != NULL && l->prefix_len >= fn[1] && l->prefix_len <= fn[1] + 1);
		FUZZ_CHECK(memcmp(l->prefix, dest, l->prefix_len) == 0);
	}
	check_billing(r);
}

/* Walk the accepted files as csv.c reads them; check rows, count them. */
static size_t
check_loaded(const struct tg_planset *ps, const struct part *parts, unsigned nparts)
{
	size_t rows = 0;

	for (unsigned k = 0; k < nparts; k++) {
		const char *p = parts[k].p, *end = p + parts[k].len;
		bool header = false;

		if (parts[k].len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
			p += 3;
		while (p < end) {
			const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
			size_t ll;
			bool blank = true;

			if (le > p && le[-1] == '\r')
				le--;
			ll = (size_t)(le - p);
			for (size_t i = 0; i < ll; i++)
				blank = blank && (p[i] == ' ' || p[i] == '\t');
			if (!blank && p[0] != '#') {
				if (header) {
					struct part row = {p, ll};
					if (rows++ < ROWS_CHECKED)
						check_row(ps, &row);
				}
				header = true;
			}
			p = nl ? nl + 1 : end;
		}
	}
	return rows;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tg_planset *ps = (struct tg_planset *)1;
	struct part parts[FILES_MAX];
	struct tg_diag diag;
	const char *path;
	unsigned nparts = split((const char *)data, size, parts);
	int rc;

	reg_count = 0;
	if (nparts == 1) {
		path = fuzz_memfd_put(&input, "rates", data, size);
	} else {
		if (dir == NULL)
			dir = fuzz_tmpdir("rates");
		for (unsigned i = 0; i < FILES_MAX; i++) {
			char p[512];
			snprintf(p, sizeof(p), "%s/%s", dir, file_names[i]);
			if (i < nparts)
				fuzz_write_file(dir, file_names[i], parts[i].p, parts[i].len);
			else
				unlink(p);
		}
		path = dir;
	}
	tg_diag_init(&diag);
	rc = tg_planset_load(path, &reg, &ps, &diag);
	if (rc != 0) {
		fuzz_note("rates: refused (%d), %u problems, first: %s:%u: %s", rc, diag.count,
		          diag.msg[0].file, diag.msg[0].line, diag.msg[0].reason);
		FUZZ_CHECK(rc < 0 && diag.count > 0 && ps == (struct tg_planset *)1);
		return 0;
	}
	FUZZ_CHECK(diag.count == 0 && ps != NULL);
	fuzz_note("rates: %zu plans, %zu prefixes in %u files", tg_planset_plans(ps),
	          tg_planset_prefixes(ps), nparts);
	FUZZ_CHECK(tg_planset_plans(ps) == reg_count);
	FUZZ_CHECK(tg_planset_prefixes(ps) == check_loaded(ps, parts, nparts));
	tg_planset_free(ps);
	return 0;
}
