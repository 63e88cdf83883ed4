/*
 * ctl_accounts.c - checking an accounts CSV file for tollctl load-accounts.
 *
 * Owns the file's syntax as docs/ACCOUNTS.md states it: byte-order mark,
 * CRLF, comments, blank lines, the exact header, 8 comma-separated fields,
 * the form of each field, no account twice.  The reasons are worded exactly
 * as engine/accounts.c and engine/csv.c word them (the start-up loader's
 * checks are file-local there), and tests/test_tollctl.sh compares the two
 * on one bad file, so they cannot drift apart unnoticed.  Amounts go through
 * tg_money_parse() only.  Never sends anything and never prints: problems
 * go to the caller's tg_diag.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_accounts.h"

enum { F_ACCT, F_BALANCE, F_PLAN, F_STATE, F_THRESHOLD, F_REFILL, F_AMOUNT, F_PAYMENT, F_COUNT };

/* One line split on ',': at most F_COUNT fields kept, all of them counted. */
struct fields {
	const char *f[F_COUNT];
	size_t len[F_COUNT];
	unsigned n;
};

/* The rows checked so far, and a failed allocation, if any. */
struct load {
	struct ctl_account *rows;
	size_t n, cap;
	int err;
};

/*
 * Quote at most 32 bytes of s into buf for a reason, non-printables as '?',
 * "..." when cut (engine/csv.c's tg__csv_show, which is engine-internal).
 */
static const char *
show(char buf[40], const char *s, size_t len)
{
	size_t n = len < 32 ? len : 32;

	for (size_t i = 0; i < n; i++)
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (len > n) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
	return buf;
}

/* The whole file, malloc'ed, into *out (caller frees).  0 or -errno. */
static int
read_all(const char *path, char **out, size_t *outlen)
{
	size_t cap = 64 * 1024, len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf;

	if (fd < 0)
		return -errno;
	buf = malloc(cap);
	if (buf == NULL) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		if (len == cap) {
			char *nb = realloc(buf, cap * 2);
			if (nb == NULL) {
				free(buf);
				close(fd);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t got = read(fd, buf + len, cap - len);
		if (got < 0) {
			int rc = -errno;
			if (rc == -EINTR)
				continue;
			free(buf);
			close(fd);
			return rc;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	close(fd);
	*out = buf;
	*outlen = len;
	return 0;
}

static bool
blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t')
			return false;
	return true;
}

static void
split(const char *p, size_t len, struct fields *fl)
{
	const char *end = p + len;

	fl->n = 0;
	for (;;) {
		const char *c = memchr(p, ',', (size_t)(end - p));
		const char *fe = c ? c : end;
		if (fl->n < F_COUNT) {
			fl->f[fl->n] = p;
			fl->len[fl->n] = (size_t)(fe - p);
		}
		fl->n++;
		if (c == NULL)
			break;
		p = c + 1;
	}
}

static bool
field_is(const struct fields *fl, unsigned i, const char *s)
{
	return fl->len[i] == strlen(s) && memcmp(fl->f[i], s, fl->len[i]) == 0;
}

/* An amount field into *out; an empty one is 0 when may_be_empty. */
static bool
money_field(const struct fields *fl, unsigned i, const char *what, bool may_be_empty,
            tg_money_t *out, char *why, size_t whylen)
{
	char b[40];
	if (fl->len[i] == 0 && may_be_empty) {
		*out = 0;
		return true;
	}
	int rc = tg_money_parse(fl->f[i], fl->len[i], out);
	if (rc == 0)
		return true;
	snprintf(why, whylen, "%s '%s': %s", what, show(b, fl->f[i], fl->len[i]),
	         rc == -ERANGE ? "out of range" : "not a decimal amount with at most 6 decimals");
	return false;
}

/* An account id: 1 to 20 decimal digits, below 2^64 - 1 (the protocol's reserved id). */
static bool
account_id(const char *s, size_t len, uint64_t *out)
{
	bool ok = len >= 1 && len <= 20;
	uint64_t id = 0;

	for (size_t k = 0; ok && k < len; k++) {
		unsigned d = (unsigned)(s[k] - '0');
		ok = d <= 9 && id <= (UINT64_MAX - 1 - d) / 10;
		id = id * 10 + d;
	}
	if (ok)
		*out = id;
	return ok;
}

/*
 * Check one data row into *row.  false with a reason in why refuses it; the
 * checks and their order are engine/accounts.c's check_row().
 */
static bool
check_row(const struct fields *fl, struct ctl_account *row, char *why, size_t whylen)
{
	char b[40];

	if (fl->n != F_COUNT) {
		snprintf(why, whylen, "expected %d fields, found %u", F_COUNT, fl->n);
		return false;
	}
	if (!account_id(fl->f[F_ACCT], fl->len[F_ACCT], &row->id)) {
		snprintf(why, whylen, "account '%s': not an account id",
		         show(b, fl->f[F_ACCT], fl->len[F_ACCT]));
		return false;
	}
	if (!money_field(fl, F_BALANCE, "balance", false, &row->balance, why, whylen) ||
	    !money_field(fl, F_THRESHOLD, "threshold", true, &row->threshold, why, whylen) ||
	    !money_field(fl, F_AMOUNT, "refill_amount", true, &row->refill_amount, why, whylen))
		return false;
	if (fl->len[F_PLAN] == 0 || fl->len[F_PLAN] > TG_PLAN_NAME_MAX) {
		snprintf(why, whylen, "plan: 1 to %d characters", TG_PLAN_NAME_MAX);
		return false;
	}
	for (size_t k = 0; k < fl->len[F_PLAN]; k++) {
		char ch = fl->f[F_PLAN][k];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-')) {
			snprintf(why, whylen, "plan '%s': letters, digits, '_', '.', '-' only",
			         show(b, fl->f[F_PLAN], fl->len[F_PLAN]));
			return false;
		}
	}
	memcpy(row->plan, fl->f[F_PLAN], fl->len[F_PLAN]);
	row->plan[fl->len[F_PLAN]] = '\0';
	if (field_is(fl, F_STATE, "active") || fl->len[F_STATE] == 0)
		row->state = "active";
	else if (field_is(fl, F_STATE, "suspended"))
		row->state = "suspended";
	else if (field_is(fl, F_STATE, "closed"))
		row->state = "closed";
	else {
		snprintf(why, whylen, "state '%s': active, suspended or closed",
		         show(b, fl->f[F_STATE], fl->len[F_STATE]));
		return false;
	}
	if (field_is(fl, F_REFILL, "off") || fl->len[F_REFILL] == 0)
		row->refill = "off";
	else if (field_is(fl, F_REFILL, "add"))
		row->refill = "add";
	else if (field_is(fl, F_REFILL, "topup"))
		row->refill = "topup";
	else {
		snprintf(why, whylen, "refill '%s': off, add or topup",
		         show(b, fl->f[F_REFILL], fl->len[F_REFILL]));
		return false;
	}
	if (field_is(fl, F_PAYMENT, "on"))
		row->payment = "on";
	else if (field_is(fl, F_PAYMENT, "off") || fl->len[F_PAYMENT] == 0)
		row->payment = "off";
	else {
		snprintf(why, whylen, "payment '%s': on or off",
		         show(b, fl->f[F_PAYMENT], fl->len[F_PAYMENT]));
		return false;
	}
	bool refill_on = strcmp(row->refill, "off") != 0;
	if (refill_on && strcmp(row->payment, "on") != 0) {
		snprintf(why, whylen, "auto-refill needs a payment method on file (payment on)");
		return false;
	}
	if (refill_on && row->refill_amount <= 0) {
		snprintf(why, whylen, "refill_amount must be positive when refill is on");
		return false;
	}
	return true;
}

/* Keep a checked row.  false (and ld->err) when memory runs out. */
static bool
keep(struct load *ld, const struct ctl_account *row)
{
	if (ld->n == ld->cap) {
		size_t cap = ld->cap ? ld->cap * 2 : 1024;
		struct ctl_account *nr = realloc(ld->rows, cap * sizeof(*nr));
		if (nr == NULL) {
			ld->err = -ENOMEM;
			return false;
		}
		ld->rows = nr;
		ld->cap = cap;
	}
	ld->rows[ld->n++] = *row;
	return true;
}

static int
by_id(const void *a, const void *b)
{
	const struct ctl_account *x = a, *y = b;
	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return x->line < y->line ? -1 : 1;
}

static int
by_line(const void *a, const void *b)
{
	const struct ctl_account *x = a, *y = b;
	return x->line < y->line ? -1 : x->line > y->line;
}

/*
 * Every line of buf: the lines' own problems into diag and *bad, the good
 * rows into ld.  engine/csv.c's tg__csv_read(), line for line.
 */
static void
scan(const char *path, const char *buf, size_t len, struct tg_diag *diag, struct load *ld,
     unsigned *bad)
{
	const char *p = buf, *end = buf + len;
	const size_t hlen = strlen(CTL_ACCOUNTS_HEADER);
	char why[sizeof(diag->msg[0].reason)];
	unsigned lineno = 0;
	bool seen_header = false;

	if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3; /* a UTF-8 byte-order mark, as spreadsheets write it */
	while (p < end && ld->err == 0) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		lineno++;
		if (le > p && le[-1] == '\r')
			le--;
		size_t ll = (size_t)(le - p);
		if (ll > TG_CSV_LINE_MAX) {
			tg_diag_add(diag, path, lineno, "line of %zu bytes, at most %u", ll,
			            TG_CSV_LINE_MAX);
			(*bad)++;
		} else if (blank(p, ll) || p[0] == '#') {
			/* skipped */
		} else if (!seen_header) {
			if (ll != hlen || memcmp(p, CTL_ACCOUNTS_HEADER, ll) != 0) {
				tg_diag_add(diag, path, lineno, "bad header, expected %s",
				            CTL_ACCOUNTS_HEADER);
				(*bad)++;
				break; /* the columns are unknown: the rest cannot be read */
			}
			seen_header = true;
		} else {
			struct fields fl;
			struct ctl_account row = {.line = lineno};
			split(p, ll, &fl);
			if (!check_row(&fl, &row, why, sizeof(why))) {
				tg_diag_add(diag, path, lineno, "%s", why);
				(*bad)++;
			} else if (!keep(ld, &row)) {
				tg_diag_add(diag, path, lineno, "out of memory");
				(*bad)++;
			}
		}
		p = nl ? nl + 1 : end;
	}
	if (!seen_header && *bad == 0) {
		tg_diag_add(diag, path, 0, "no header line (expected %s)", CTL_ACCOUNTS_HEADER);
		(*bad)++;
	}
}

int
ctl_accounts_read(const char *path, struct tg_diag *diag, struct ctl_account **out, size_t *n)
{
	struct load ld = {0};
	char *buf = NULL;
	size_t len = 0;
	unsigned bad = 0;
	int rc;

	*out = NULL;
	*n = 0;
	rc = read_all(path, &buf, &len);
	if (rc != 0) {
		tg_diag_add(diag, path, 0, "cannot read: %s", strerror(-rc));
		return rc;
	}
	scan(path, buf, len, diag, &ld, &bad);
	free(buf);
	if (ld.err != 0) {
		free(ld.rows);
		return ld.err;
	}
	if (ld.n > 1) {
		qsort(ld.rows, ld.n, sizeof(*ld.rows), by_id);
		for (size_t i = 1; i < ld.n; i++)
			if (ld.rows[i].id == ld.rows[i - 1].id) {
				tg_diag_add(diag, path, ld.rows[i].line,
				            "account %llu already defined at line %u",
				            (unsigned long long)ld.rows[i].id, ld.rows[i - 1].line);
				bad++;
			}
		qsort(ld.rows, ld.n, sizeof(*ld.rows), by_line);
	}
	if (bad > 0) {
		free(ld.rows);
		return -EINVAL;
	}
	*out = ld.rows;
	*n = ld.n;
	return 0;
}
