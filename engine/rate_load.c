/*
 * rate_load.c - rate-plan CSV files in, an immutable plan set out.
 *
 * Owns the file format of docs/RATES.md and the all-or-nothing rule: every
 * file of a load is read and every row checked before anything is built or
 * any plan name registered, every problem is reported with its file, line
 * and a precise reason, and one bad row anywhere fails the whole load.  What
 * it builds is never modified afterwards (lpm.c walks it lock-free).
 *
 * Loading allocates freely; it runs on the control thread, never on the hot
 * path.  Bounds: TG_CSV_LINE_MAX per line, TG_PREFIXES_MAX rows per load,
 * TG_PLANS_MAX plans, TG_PLAN_FILES_MAX files per directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tg_atomic.h" /* first: chooses ck's backend under TSan */

#include "csv.h"
#include "rate-int.h"
#include "tg_assert.h"
#include "tg_result.h"

/*
 * The versions of the format, oldest first (docs/RATES.md): version 1 adds
 * the column `always`.  A file says which it is by its header; every row
 * of it has that version's number of fields.
 */
#define CSV_HEADER_V0  "plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum"
#define CSV_HEADER_V1  CSV_HEADER_V0 ",always"
#define CSV_FIELDS_MAX 9
#define CSV_SHOW       32 /* bytes of a bad field quoted back in a reason */

static const char *const csv_headers[] = {CSV_HEADER_V0, CSV_HEADER_V1};
static const unsigned csv_fields[] = {8, 9}; /* fields of a row, by version */

enum {
	F_PLAN,
	F_PREFIX,
	F_CATEGORY,
	F_PER_MIN,
	F_CONNECT,
	F_INITIAL,
	F_INCREMENT,
	F_MINIMUM,
	F_ALWAYS
};

static const char *const field_names[CSV_FIELDS_MAX] = {
    "plan",    "prefix",    "category", "rate_per_min", "connect_fee",
    "initial", "increment", "minimum",  "always",
};

/* One accepted row, before it is sorted into its plan. */
struct row {
	struct tg_rate rate;
	uint32_t plan; /* index into load.plans */
	uint32_t file; /* index into load.files */
	uint32_t line;
};

/* A plan name seen in this load. */
struct lplan {
	char name[TG_PLAN_NAME_MAX + 1];
	uint32_t len;
	uint32_t file;       /* the file it was first seen in */
	uint32_t line;       /* ... at this line */
	uint32_t other_file; /* the last other file already reported, or UINT32_MAX */
	uint32_t nrows;
	int id; /* registry id, set after validation */
};

#define PLAN_HASH_SLOTS (2 * TG_PLANS_MAX)

struct load {
	struct tg_diag *diag;
	bool bad;           /* a problem was reported */
	bool stop;          /* a limit was hit: read no further */
	int err;            /* -ENOMEM while reading rows */
	const char *path;   /* the path given to the load */
	char **files;       /* display path of each file read */
	const char **names; /* the file's own name, for "also in" reasons */
	uint32_t nfiles;
	struct row *rows;
	size_t nrows, caprows;
	struct lplan *plans; /* TG_PLANS_MAX */
	uint32_t nplans;
	uint32_t last_plan;             /* cache: rows usually come grouped by plan */
	uint16_t hash[PLAN_HASH_SLOTS]; /* plan index + 1, 0 = empty */
};

/* Copy a field for quoting in a reason: bounded, non-printable bytes as '?'. */
static const char *
show(char buf[CSV_SHOW + 4], const char *s, size_t len)
{
	size_t n = len < CSV_SHOW ? len : CSV_SHOW;

	for (size_t i = 0; i < n; i++)
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (len > n) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
	return buf;
}

static uint32_t
name_hash(const char *s, size_t len)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)s[i]) * 16777619u;
	return h;
}

/*
 * The index of plan name in this load, adding it when new (first seen in
 * file at line).  Returns -1 with a reason in why when the load already has
 * TG_PLANS_MAX plans.
 */
static int
plan_lookup(struct load *ld, const char *name, size_t len, uint32_t file, unsigned line, char *why,
            size_t whylen)
{
	struct lplan *lp;
	uint32_t slot;

	if (ld->nplans > 0) {
		lp = &ld->plans[ld->last_plan];
		if (lp->len == len && memcmp(lp->name, name, len) == 0)
			return (int)ld->last_plan;
	}
	for (slot = name_hash(name, len) % PLAN_HASH_SLOTS; ld->hash[slot] != 0;
	     slot = (slot + 1) % PLAN_HASH_SLOTS) {
		uint32_t i = ld->hash[slot] - 1u;

		lp = &ld->plans[i];
		if (lp->len == len && memcmp(lp->name, name, len) == 0) {
			ld->last_plan = i;
			return (int)i;
		}
	}
	if (ld->nplans == TG_PLANS_MAX) {
		snprintf(why, whylen, "more than %u plans in one load", TG_PLANS_MAX);
		ld->stop = true;
		return -1;
	}
	lp = &ld->plans[ld->nplans];
	memset(lp, 0, sizeof(*lp));
	memcpy(lp->name, name, len);
	lp->len = (uint32_t)len;
	lp->file = file;
	lp->line = line;
	lp->other_file = UINT32_MAX;
	lp->id = -1;
	ld->hash[slot] = (uint16_t)(ld->nplans + 1);
	ld->last_plan = ld->nplans;
	return (int)ld->nplans++;
}

/*
 * Parse a money field that must be >= 0.  On failure writes the reason to
 * why and returns false.  A failing amount is looked at again only to say
 * precisely what is wrong with it.
 */
static bool
field_money(const char *fname, const char *s, size_t len, tg_money_t *out, char *why, size_t whylen)
{
	char b[CSV_SHOW + 4];
	int rc;

	if (len == 0) {
		snprintf(why, whylen, "%s: empty", fname);
		return false;
	}
	rc = tg_money_parse(s, len, out);
	if (rc == -ERANGE) {
		snprintf(why, whylen, "%s: out of range '%s'", fname, show(b, s, len));
		return false;
	}
	if (rc != 0) {
		const char *dot = memchr(s, '.', len);
		size_t decimals = 0;

		if (dot != NULL) {
			const char *p = dot + 1;

			while (p < s + len && (unsigned)(*p - '0') <= 9)
				p++;
			if (p == s + len)
				decimals = (size_t)(p - dot - 1);
		}
		if (decimals > 6 && tg_money_parse(s, (size_t)(dot - s), out) == 0)
			snprintf(why, whylen, "%s: %zu decimals", fname, decimals);
		else
			snprintf(why, whylen, "%s: not an amount '%s'", fname, show(b, s, len));
		return false;
	}
	if (*out < 0) {
		snprintf(why, whylen, "%s: negative", fname);
		return false;
	}
	return true;
}

/* Parse a whole number of seconds within lo..hi. */
static bool
field_seconds(const char *fname, const char *s, size_t len, uint32_t lo, uint32_t hi, uint32_t *out,
              char *why, size_t whylen)
{
	char b[CSV_SHOW + 4];
	uint64_t v = 0;

	if (len == 0) {
		snprintf(why, whylen, "%s: empty", fname);
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		if ((unsigned)(s[i] - '0') > 9) {
			snprintf(why, whylen, "%s: not a number '%s'", fname, show(b, s, len));
			return false;
		}
		if (v <= UINT32_MAX)
			v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v < lo || v > hi) {
		snprintf(why, whylen, "%s: %s outside %u..%u", fname, show(b, s, len), lo, hi);
		return false;
	}
	*out = (uint32_t)v;
	return true;
}

/* Parse yes or no (lower case, as the file's other words) into 1 or 0. */
static bool
field_yesno(const char *fname, const char *s, size_t len, uint8_t *out, char *why, size_t whylen)
{
	char b[CSV_SHOW + 4];

	if (len == 3 && memcmp(s, "yes", 3) == 0) {
		*out = 1;
		return true;
	}
	if (len == 2 && memcmp(s, "no", 2) == 0) {
		*out = 0;
		return true;
	}
	if (len == 0)
		snprintf(why, whylen, "%s: empty (yes or no)", fname);
	else
		snprintf(why, whylen, "%s: '%s', expected yes or no", fname, show(b, s, len));
	return false;
}

/* Check and store one data row; false with a reason in why when it is bad. */
static bool
parse_row(struct load *ld, const struct tg__csv_row *row, uint32_t file, char *why, size_t whylen)
{
	const char *const *f = row->f;
	const size_t *fl = row->len;
	unsigned lineno = row->line;
	char b[CSV_SHOW + 4];
	const char *reason;
	struct row r;
	struct lplan *lp;
	int cat, pl;

	TG_ASSERT(row->version < TG_ARRAY_LEN(csv_fields));
	unsigned nfields = csv_fields[row->version];
	if (row->n != nfields) {
		snprintf(why, whylen, "expected %u fields, found %u", nfields, row->n);
		return false;
	}

	memset(&r, 0, sizeof(r));
	reason = tg__plan_name_check(f[F_PLAN], fl[F_PLAN]);
	if (reason != NULL) {
		snprintf(why, whylen, "plan '%s': %s", show(b, f[F_PLAN], fl[F_PLAN]), reason);
		return false;
	}
	if (fl[F_PREFIX] == 0) {
		snprintf(why, whylen, "prefix: empty");
		return false;
	}
	for (size_t i = 0; i < fl[F_PREFIX]; i++) {
		if ((unsigned)(f[F_PREFIX][i] - '0') > 9) {
			snprintf(why, whylen, "prefix: not digits '%s'",
			         show(b, f[F_PREFIX], fl[F_PREFIX]));
			return false;
		}
	}
	if (fl[F_PREFIX] > TG_DEST_MAX) {
		snprintf(why, whylen, "prefix: %zu digits, at most %u", fl[F_PREFIX], TG_DEST_MAX);
		return false;
	}
	memcpy(r.rate.prefix, f[F_PREFIX], fl[F_PREFIX]);
	r.rate.prefix[fl[F_PREFIX]] = '\0';
	r.rate.prefix_len = (uint8_t)fl[F_PREFIX];

	cat = tg_category_parse(f[F_CATEGORY], fl[F_CATEGORY]);
	if (cat < 0) {
		snprintf(why, whylen, "unknown category '%s'",
		         show(b, f[F_CATEGORY], fl[F_CATEGORY]));
		return false;
	}
	r.rate.category = (uint8_t)cat;

	if (!field_money(field_names[F_PER_MIN], f[F_PER_MIN], fl[F_PER_MIN], &r.rate.per_min, why,
	                 whylen) ||
	    !field_money(field_names[F_CONNECT], f[F_CONNECT], fl[F_CONNECT], &r.rate.connect, why,
	                 whylen) ||
	    !field_seconds(field_names[F_INITIAL], f[F_INITIAL], fl[F_INITIAL], 1, TG_INCREMENT_MAX,
	                   &r.rate.initial, why, whylen) ||
	    !field_seconds(field_names[F_INCREMENT], f[F_INCREMENT], fl[F_INCREMENT], 1,
	                   TG_INCREMENT_MAX, &r.rate.increment, why, whylen) ||
	    !field_seconds(field_names[F_MINIMUM], f[F_MINIMUM], fl[F_MINIMUM], 0, TG_INCREMENT_MAX,
	                   &r.rate.minimum, why, whylen))
		return false;
	if (row->version >= 1 && !field_yesno(field_names[F_ALWAYS], f[F_ALWAYS], fl[F_ALWAYS],
	                                      &r.rate.always, why, whylen))
		return false;

	pl = plan_lookup(ld, f[F_PLAN], fl[F_PLAN], file, lineno, why, whylen);
	if (pl < 0)
		return false;
	lp = &ld->plans[pl];
	if (lp->file != file) {
		if (lp->other_file != file) {
			lp->other_file = file;
			snprintf(why, whylen, "plan %s already in %s (line %u)", lp->name,
			         ld->names[lp->file], lp->line);
			return false;
		}
		/* Reported once for this file (the load is failing); drop the row. */
		TG_ASSERT(ld->bad);
		return true;
	}
	if (ld->nrows == TG_PREFIXES_MAX) {
		snprintf(why, whylen, "more than %u prefixes in one load", TG_PREFIXES_MAX);
		ld->stop = true;
		return false;
	}
	if (ld->nrows == ld->caprows) {
		size_t ncap = ld->caprows ? ld->caprows * 2 : 1024;
		struct row *nr;

		if (ncap > TG_PREFIXES_MAX)
			ncap = TG_PREFIXES_MAX;
		nr = realloc(ld->rows, ncap * sizeof(*nr));
		if (nr == NULL) {
			snprintf(why, whylen, "out of memory");
			ld->err = -ENOMEM;
			ld->stop = true;
			return false;
		}
		ld->rows = nr;
		ld->caprows = ncap;
	}
	r.plan = (uint32_t)pl;
	r.file = file;
	r.line = lineno;
	ld->rows[ld->nrows++] = r;
	lp->nrows++;
	return true;
}

struct file_ctx {
	struct load *ld;
	uint32_t file;
};

static bool
check_row(void *arg, const struct tg__csv_row *row, char *why, size_t whylen)
{
	struct file_ctx *fc = arg;

	if (fc->ld->stop)
		return true; /* a limit was hit and reported: the rest is not read */
	if (parse_row(fc->ld, row, fc->file, why, whylen))
		return true;
	fc->ld->bad = true;
	return false;
}

/* Read and check one file (index file of ld->files).  Returns 0 or -errno. */
static int
load_file(struct load *ld, uint32_t file)
{
	struct file_ctx fc = {ld, file};
	unsigned bad = 0;
	int rc = tg__csv_read_versions(ld->files[file], csv_headers, TG_ARRAY_LEN(csv_headers),
	                               ld->diag, check_row, &fc, &bad);

	if (bad != 0)
		ld->bad = true;
	return rc;
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool
is_csv_name(const char *n)
{
	size_t l = strlen(n);

	return n[0] != '.' && l > 4 && strcmp(n + l - 4, ".csv") == 0;
}

/*
 * Fill ld->files: path itself, or the regular *.csv files of directory path
 * in strcmp order (hidden files skipped).  Returns 0 or -errno.
 */
static int
list_files(struct load *ld, const char *path)
{
	struct stat st;
	DIR *dir;
	struct dirent *de;
	char **names = NULL;
	uint32_t n = 0;
	int rc = 0;

	if (stat(path, &st) != 0) {
		rc = -errno;
		tg_diag_add(ld->diag, path, 0, "cannot open: %s", strerror(-rc));
		return rc;
	}
	if (!S_ISDIR(st.st_mode)) {
		ld->files = calloc(1, sizeof(*ld->files));
		ld->names = calloc(1, sizeof(*ld->names));
		if (ld->files == NULL || ld->names == NULL || (ld->files[0] = strdup(path)) == NULL)
			return -ENOMEM;
		ld->names[0] =
		    strrchr(ld->files[0], '/') ? strrchr(ld->files[0], '/') + 1 : ld->files[0];
		ld->nfiles = 1;
		return 0;
	}

	dir = opendir(path);
	if (dir == NULL) {
		rc = -errno;
		tg_diag_add(ld->diag, path, 0, "cannot open directory: %s", strerror(-rc));
		return rc;
	}
	names = calloc(TG_PLAN_FILES_MAX, sizeof(*names));
	if (names == NULL) {
		closedir(dir);
		return -ENOMEM;
	}
	errno = 0;
	while ((de = readdir(dir)) != NULL) {
		char *full;
		struct stat fst;

		if (!is_csv_name(de->d_name))
			continue;
		if (asprintf(&full, "%s/%s", path, de->d_name) < 0) {
			rc = -ENOMEM;
			break;
		}
		if (stat(full, &fst) != 0 || !S_ISREG(fst.st_mode)) {
			free(full);
			continue;
		}
		if (n == TG_PLAN_FILES_MAX) {
			free(full);
			tg_diag_add(ld->diag, path, 0, "more than %u *.csv files",
			            TG_PLAN_FILES_MAX);
			ld->bad = true;
			rc = -EINVAL;
			break;
		}
		names[n++] = full;
	}
	if (rc == 0 && errno != 0)
		rc = -errno;
	closedir(dir);
	if (rc == 0 && n == 0) {
		tg_diag_add(ld->diag, path, 0, "no *.csv file in this directory");
		rc = -ENOENT;
	}
	if (rc != 0) {
		for (uint32_t i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return rc;
	}
	qsort(names, n, sizeof(*names), cmp_names);
	ld->files = names;
	ld->names = calloc(n, sizeof(*ld->names));
	ld->nfiles = n;
	if (ld->names == NULL)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		ld->names[i] = strrchr(names[i], '/') + 1;
	return 0;
}

struct dup_ctx {
	struct load *ld;
	const struct lplan *lp;
	const uint32_t *order; /* the plan's rows: rate index -> row index */
};

static void
report_dup(void *arg, uint32_t first, uint32_t again)
{
	struct dup_ctx *c = arg;
	const struct row *r1 = &c->ld->rows[c->order[first]];
	const struct row *r2 = &c->ld->rows[c->order[again]];

	tg_diag_add(c->ld->diag, c->ld->files[r2->file], r2->line,
	            "duplicate prefix %s in plan %s (first at line %u)", r2->rate.prefix,
	            c->lp->name, r1->line);
	c->ld->bad = true;
}

/*
 * Sort the rows into their plans (stable: file order within a plan) and
 * build each plan's trie, which also finds duplicate prefixes.
 */
static int
build_plans(struct load *ld, struct tg_planset *ps)
{
	uint32_t *order, *start;
	int rc = 0;

	ps->plans = calloc(ld->nplans ? ld->nplans : 1, sizeof(*ps->plans));
	order = malloc((ld->nrows ? ld->nrows : 1) * sizeof(*order));
	start = calloc((size_t)ld->nplans + 1, sizeof(*start));
	if (ps->plans == NULL || order == NULL || start == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	ps->nplans = ld->nplans;
	for (uint32_t i = 0; i < ld->nplans; i++)
		start[i + 1] = start[i] + ld->plans[i].nrows;
	{
		uint32_t *fill = calloc(ld->nplans ? ld->nplans : 1, sizeof(*fill));

		if (fill == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		for (size_t r = 0; r < ld->nrows; r++) {
			uint32_t pl = ld->rows[r].plan;

			order[start[pl] + fill[pl]++] = (uint32_t)r;
		}
		free(fill);
	}

	for (uint32_t i = 0; i < ld->nplans; i++) {
		struct tg_plan *p = &ps->plans[i];
		const struct lplan *lp = &ld->plans[i];
		size_t bytes = (size_t)lp->nrows * sizeof(struct tg_rate);
		struct dup_ctx dc = {ld, lp, order + start[i]};

		p->magic = TG__PLAN_MAGIC;
		memcpy(p->name, lp->name, sizeof(p->name));
		p->nrates = lp->nrows;
		p->rates = tg__mem_alloc(bytes, &p->rates_map);
		if (p->rates == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		for (uint32_t j = 0; j < lp->nrows; j++)
			p->rates[j] = ld->rows[order[start[i] + j]].rate;
		rc = tg__lpm_build(&p->lpm, p->rates, p->nrates, report_dup, &dc);
		if (rc != 0)
			goto out;
		ps->nprefixes += p->nrates;
	}
out:
	free(order);
	free(start);
	return rc;
}

/* Plans of the load whose names are not registered; -errno for a bad name. */
static int
count_fresh(struct load *ld, struct tg_plan_registry *reg)
{
	int fresh = 0;

	for (uint32_t i = 0; i < ld->nplans; i++) {
		int id = tg_plan_registry_id(reg, ld->plans[i].name, ld->plans[i].len, false);

		if (id == -ENOENT)
			fresh++;
		else if (id < 0)
			return id;
	}
	return fresh;
}

/*
 * Give every plan of the load its registry id, all or none: the free slots
 * are counted first so a full registry fails before any name is written.
 * Making room may reclaim names, some perhaps of this load, so the names
 * are counted again after it and looked up only then.
 */
static int
register_plans(struct load *ld, struct tg_plan_registry *reg, struct tg_planset *ps)
{
	uint32_t max_id = 0;
	int fresh = count_fresh(ld, reg);

	if (fresh < 0)
		return fresh;
	uint32_t room = tg_plan_registry_room(reg, (uint32_t)fresh);
	fresh = count_fresh(ld, reg);
	if (fresh < 0)
		return fresh;
	if ((uint32_t)fresh > room) {
		tg_diag_add(ld->diag, ld->path, 0,
		            "plan-name registry full: %d new names, room for %u of %u (unused "
		            "names are reclaimed at most once a second)",
		            fresh, room, reg->cap);
		return -ENOSPC;
	}
	for (uint32_t i = 0; i < ld->nplans; i++) {
		int id = tg_plan_registry_id(reg, ld->plans[i].name, ld->plans[i].len, true);

		TG_ASSERT(id >= 0);
		ld->plans[i].id = id;
		ps->plans[i].id = (uint32_t)id;
		if ((uint32_t)id + 1 > max_id)
			max_id = (uint32_t)id + 1;
	}
	ps->nby_id = max_id;
	ps->by_id = calloc(max_id ? max_id : 1, sizeof(*ps->by_id));
	if (ps->by_id == NULL)
		return -ENOMEM;
	for (uint32_t i = 0; i < ps->nplans; i++)
		ps->by_id[ps->plans[i].id] = &ps->plans[i];
	return 0;
}

static void
load_fini(struct load *ld)
{
	for (uint32_t i = 0; i < ld->nfiles; i++)
		free(ld->files[i]);
	free(ld->files);
	free(ld->names);
	free(ld->rows);
	free(ld->plans);
}

int
tg_planset_load(const char *path, struct tg_plan_registry *reg, struct tg_planset **out,
                struct tg_diag *diag)
{
	struct load *ld;
	struct tg_planset *ps = NULL;
	int rc;

	TG_ASSERT(path != NULL && reg != NULL && out != NULL);
	ld = calloc(1, sizeof(*ld));
	if (ld == NULL)
		return -ENOMEM;
	ld->diag = diag;
	ld->path = path;
	ld->plans = malloc(TG_PLANS_MAX * sizeof(*ld->plans));
	if (ld->plans == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	rc = list_files(ld, path);
	for (uint32_t f = 0; rc == 0 && f < ld->nfiles && !ld->stop; f++)
		rc = load_file(ld, f);
	if (rc == 0)
		rc = ld->err;
	if (rc != 0)
		goto out;

	ps = tg__planset_empty();
	if (ps == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	/* Built even when rows were bad: building is what finds duplicate prefixes. */
	if (!ld->stop)
		rc = build_plans(ld, ps);
	if (rc == 0 && ld->bad)
		rc = -EINVAL;
	if (rc == 0)
		rc = register_plans(ld, reg, ps);
out:
	if (rc != 0) {
		tg_planset_free(ps);
		ps = NULL;
	} else {
		*out = ps;
	}
	load_fini(ld);
	free(ld);
	return rc;
}

struct tg_planset *
tg__planset_empty(void)
{
	static uint64_t serials;
	struct tg_planset *ps = calloc(1, sizeof(*ps));

	if (ps != NULL) {
		ps->magic = TG__PLANSET_MAGIC;
		ps->serial = __atomic_add_fetch(&serials, 1, __ATOMIC_RELAXED);
	}
	return ps;
}

uint64_t
tg_planset_serial(const struct tg_planset *ps)
{
	TG_CHECK_OBJ_NOTNULL(ps, TG__PLANSET_MAGIC);
	return ps->serial;
}

void
tg_planset_free(struct tg_planset *ps)
{
	if (ps == NULL)
		return;
	TG_CHECK_OBJ(ps, TG__PLANSET_MAGIC);
	for (uint32_t i = 0; ps->plans != NULL && i < ps->nplans; i++) {
		tg__lpm_free(&ps->plans[i].lpm);
		if (ps->plans[i].rates != NULL)
			tg__mem_free(ps->plans[i].rates, ps->plans[i].rates_map);
		ps->plans[i].magic = 0;
	}
	free(ps->plans);
	free(ps->by_id);
	ps->magic = 0;
	free(ps);
}

const struct tg_plan *
tg_planset_plan(const struct tg_planset *ps, uint32_t id)
{
	TG_CHECK_OBJ_NOTNULL(ps, TG__PLANSET_MAGIC);
	return id < ps->nby_id ? ps->by_id[id] : NULL;
}

size_t
tg_planset_plans(const struct tg_planset *ps)
{
	TG_CHECK_OBJ_NOTNULL(ps, TG__PLANSET_MAGIC);
	return ps->nplans;
}

size_t
tg_planset_prefixes(const struct tg_planset *ps)
{
	TG_CHECK_OBJ_NOTNULL(ps, TG__PLANSET_MAGIC);
	return ps->nprefixes;
}

const char *
tg_plan_name(const struct tg_plan *p)
{
	TG_CHECK_OBJ_NOTNULL(p, TG__PLAN_MAGIC);
	return p->name;
}

uint32_t
tg_plan_id(const struct tg_plan *p)
{
	TG_CHECK_OBJ_NOTNULL(p, TG__PLAN_MAGIC);
	return p->id;
}
