/*
 * accounts.c - the accounts CSV loader.
 *
 * Two passes: check every row into a list, then create the accounts.  The
 * list is allocated here, at start-up; the table itself never is.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "csv.h"
#include "tg_accounts.h"
#include "tg_names.h"
#include "tg_rate.h"

/* The accounts file's versions, oldest first (docs/ACCOUNTS.md): each adds columns at the end. */
static const char *const headers[] = {
    "account,balance,plan,state,threshold,refill,refill_amount,payment",
    "account,balance,plan,state,threshold,refill,refill_amount,payment,kind,credit_limit",
    /* One header, cut in two: the parentheses say so to the compiler. */
    ("account,balance,plan,state,threshold,refill,refill_amount,payment,kind,credit_limit,"
     "maxcalls,call_cap,daily_cap,low"),
};
#define VERSIONS (sizeof(headers) / sizeof(headers[0]))

enum {
	F_ACCT,
	F_BALANCE,
	F_PLAN,
	F_STATE,
	F_THRESHOLD,
	F_REFILL,
	F_AMOUNT,
	F_PAYMENT,
	F_COUNT_V1,
	F_KIND = F_COUNT_V1,
	F_LIMIT,
	F_COUNT_V2,
	F_MAXCALLS = F_COUNT_V2,
	F_CALL_CAP,
	F_DAILY_CAP,
	F_LOW,
	F_COUNT_V3
};
/* Fields of a row of each version. */
static const unsigned field_count[] = {F_COUNT_V1, F_COUNT_V2, F_COUNT_V3};
_Static_assert(sizeof(field_count) / sizeof(field_count[0]) == VERSIONS, "a count per version");

struct load {
	struct tg_table *t;
	struct tg_account_row *rows;
	size_t n, cap;
	int err;
};

static bool
field_is(const struct tg__csv_row *r, unsigned i, const char *s)
{
	return r->len[i] == strlen(s) && memcmp(r->f[i], s, r->len[i]) == 0;
}

static bool
money_field(const struct tg__csv_row *r, unsigned i, const char *what, bool may_be_empty,
            tg_money_t *out, char *why, size_t whylen)
{
	char b[40];
	if (r->len[i] == 0 && may_be_empty) {
		*out = 0;
		return true;
	}
	int rc = tg_money_parse(r->f[i], r->len[i], out);
	if (rc == 0)
		return true;
	snprintf(why, whylen, "%s '%s': %s", what, tg__csv_show(b, r->f[i], r->len[i]),
	         rc == -ERANGE ? "out of range" : "not a decimal amount with at most 6 decimals");
	return false;
}

/*
 * Version 2's columns: kind (prepaid, the default when empty, or postpaid)
 * and credit_limit (a postpaid account's; empty is 0).  A postpaid row may
 * not have a threshold (its auto-refill is checked later, with the rest).
 */
static bool
kind_fields(const struct tg__csv_row *r, struct tg_acct_settings *s, char *why, size_t whylen)
{
	char b[40];

	if (field_is(r, F_KIND, "postpaid"))
		s->flags |= TG_ACCT_POSTPAID;
	else if (!field_is(r, F_KIND, "prepaid") && r->len[F_KIND] != 0) {
		snprintf(why, whylen, "kind '%s': prepaid or postpaid",
		         tg__csv_show(b, r->f[F_KIND], r->len[F_KIND]));
		return false;
	}
	if (!money_field(r, F_LIMIT, "credit_limit", true, &s->credit_limit, why, whylen))
		return false;
	if (!(s->flags & TG_ACCT_POSTPAID) && s->credit_limit != 0) {
		snprintf(why, whylen, "credit_limit is a postpaid account's: kind postpaid");
		return false;
	}
	if ((s->flags & TG_ACCT_POSTPAID) && s->threshold != 0) {
		snprintf(why, whylen,
		         "a postpaid account has no refill threshold (leave it empty)");
		return false;
	}
	return true;
}

/*
 * Version 3's columns, the fraud limits of ACCT.SET (docs/FRAUD.md): maxcalls
 * (calls at once, 0 to TG_MAXCALLS_MAX), call_cap, daily_cap (at most
 * TG_DAY_USED_MAX) and low (amounts >= 0).  Empty or 0 is none.
 */
static bool
limit_fields(const struct tg__csv_row *r, struct tg_limits_set *ls, char *why, size_t whylen)
{
	char b[40];
	uint64_t n = 0;

	if (r->len[F_MAXCALLS] != 0 &&
	    (!tg_decimal_u64(r->f[F_MAXCALLS], r->len[F_MAXCALLS], &n) || n > TG_MAXCALLS_MAX)) {
		snprintf(why, whylen, "maxcalls '%s': 0 to %u calls (empty or 0: none)",
		         tg__csv_show(b, r->f[F_MAXCALLS], r->len[F_MAXCALLS]),
		         (unsigned)TG_MAXCALLS_MAX);
		return false;
	}
	ls->max_calls = (uint32_t)n;
	static const struct {
		unsigned f;
		const char *name;
	} caps[] = {{F_CALL_CAP, "call_cap"}, {F_DAILY_CAP, "daily_cap"}, {F_LOW, "low"}};
	tg_money_t v[3];
	for (unsigned i = 0; i < 3; i++) {
		if (!money_field(r, caps[i].f, caps[i].name, true, &v[i], why, whylen))
			return false;
		if (v[i] < 0) {
			snprintf(why, whylen, "%s '%s': 0 (none) or more", caps[i].name,
			         tg__csv_show(b, r->f[caps[i].f], r->len[caps[i].f]));
			return false;
		}
	}
	if (v[1] > TG_DAY_USED_MAX) {
		snprintf(why, whylen, "daily_cap '%s': at most 281474976.710655",
		         tg__csv_show(b, r->f[F_DAILY_CAP], r->len[F_DAILY_CAP]));
		return false;
	}
	ls->call_cap = v[0];
	ls->daily_cap = v[1];
	ls->low = v[2];
	return true;
}

static bool
check_row(void *arg, const struct tg__csv_row *r, char *why, size_t whylen)
{
	struct load *ld = arg;
	struct tg_account_row row = {.line = r->line};
	char b[40];

	if (r->n != field_count[r->version]) {
		snprintf(why, whylen, "expected %u fields, found %u", field_count[r->version],
		         r->n);
		return false;
	}
	/* Account ids: plain decimal, any leading zeros, below 2^64 - 1 (as on the wire). */
	uint64_t id = 0;
	if (!tg_decimal_u64(r->f[F_ACCT], r->len[F_ACCT], &id) || id == UINT64_MAX) {
		snprintf(why, whylen, "account '%s': not an account id",
		         tg__csv_show(b, r->f[F_ACCT], r->len[F_ACCT]));
		return false;
	}
	row.id = id;
	if (!money_field(r, F_BALANCE, "balance", false, &row.balance, why, whylen) ||
	    !money_field(r, F_THRESHOLD, "threshold", true, &row.s.threshold, why, whylen) ||
	    !money_field(r, F_AMOUNT, "refill_amount", true, &row.s.refill_amount, why, whylen))
		return false;
	if (tg__plan_name_check(r->f[F_PLAN], r->len[F_PLAN]) != NULL) {
		if (r->len[F_PLAN] == 0 || r->len[F_PLAN] > TG_PLAN_NAME_MAX)
			snprintf(why, whylen, "plan: 1 to %d characters", TG_PLAN_NAME_MAX);
		else
			snprintf(why, whylen, "plan '%s': letters, digits, '_', '.', '-' only",
			         tg__csv_show(b, r->f[F_PLAN], r->len[F_PLAN]));
		return false;
	}
	memcpy(row.plan, r->f[F_PLAN], r->len[F_PLAN]);
	int state = r->len[F_STATE] == 0 ? TG_STATE_ACTIVE
	                                 : tg_acct_state_parse(r->f[F_STATE], r->len[F_STATE]);
	int mode = r->len[F_REFILL] == 0 ? TG_REFILL_OFF
	                                 : tg_refill_mode_parse(r->f[F_REFILL], r->len[F_REFILL]);
	_Static_assert(TG_ACCT_STATE__COUNT == 3 && TG_REFILL_MODE__COUNT == 3,
	               "the messages below name every state and mode");
	if (state >= 0)
		row.s.state = (uint8_t)state;
	else {
		snprintf(why, whylen, "state '%s': active, suspended or closed",
		         tg__csv_show(b, r->f[F_STATE], r->len[F_STATE]));
		return false;
	}
	if (mode >= 0)
		row.s.refill_mode = (uint8_t)mode;
	else {
		snprintf(why, whylen, "refill '%s': off, add or topup",
		         tg__csv_show(b, r->f[F_REFILL], r->len[F_REFILL]));
		return false;
	}
	if (field_is(r, F_PAYMENT, "on"))
		row.s.flags |= TG_ACCT_PAYMENT;
	else if (!field_is(r, F_PAYMENT, "off") && r->len[F_PAYMENT] != 0) {
		snprintf(why, whylen, "payment '%s': on or off",
		         tg__csv_show(b, r->f[F_PAYMENT], r->len[F_PAYMENT]));
		return false;
	}
	if (r->version >= 1 && !kind_fields(r, &row.s, why, whylen))
		return false;
	row.limits_given = r->version >= 2;
	if (row.limits_given && !limit_fields(r, &row.limits, why, whylen))
		return false;
	if (row.s.refill_mode != TG_REFILL_OFF && !(row.s.flags & TG_ACCT_PAYMENT)) {
		snprintf(why, whylen, "auto-refill needs a payment method on file (payment on)");
		return false;
	}
	if (!tg_acct_settings_check(&row.s, why, whylen))
		return false;
	if (ld->n == ld->cap) {
		size_t cap = ld->cap ? ld->cap * 2 : 1024;
		struct tg_account_row *nr = realloc(ld->rows, cap * sizeof(*nr));
		if (nr == NULL) {
			ld->err = -ENOMEM;
			snprintf(why, whylen, "out of memory");
			return false;
		}
		ld->rows = nr;
		ld->cap = cap;
	}
	ld->rows[ld->n++] = row;
	return true;
}

static int
by_id(const void *a, const void *b)
{
	const struct tg_account_row *x = a, *y = b;
	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return x->line < y->line ? -1 : 1;
}

static int
by_line(const void *a, const void *b)
{
	const struct tg_account_row *x = a, *y = b;
	return x->line < y->line ? -1 : x->line > y->line;
}

int
tg_accounts_read(const char *path, struct tg_diag *diag, struct tg_account_row **out, size_t *n)
{
	struct load ld = {0};
	unsigned bad = 0;
	int rc;

	*out = NULL;
	*n = 0;
	rc = tg__csv_read_versions(path, headers, VERSIONS, diag, check_row, &ld, &bad);
	if (rc == 0 && ld.err)
		rc = ld.err;
	if (rc == 0 && ld.n > 1) {
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
	if (rc == 0 && bad > 0)
		rc = -EINVAL;
	if (rc != 0) {
		free(ld.rows);
		return rc;
	}
	*out = ld.rows;
	*n = ld.n;
	return 0;
}

int
tg_accounts_load(const char *path, struct tg_table *t, struct tg_diag *diag, size_t *created,
                 size_t *skipped)
{
	return tg_accounts_load_cb(path, t, diag, created, skipped, NULL, NULL);
}

int
tg_accounts_load_cb(const char *path, struct tg_table *t, struct tg_diag *diag, size_t *created,
                    size_t *skipped, void (*on_new)(void *arg, struct tg_acct *a), void *arg)
{
	struct load ld = {.t = t};
	int rc;

	*created = *skipped = 0;
	rc = tg_accounts_read(path, diag, &ld.rows, &ld.n);
	if (rc == 0 && t->hdr->count + ld.n > t->hdr->capacity) {
		tg_diag_add(diag, path, 0, "%zu accounts do not fit: capacity %llu, %llu in use",
		            ld.n, (unsigned long long)t->hdr->capacity,
		            (unsigned long long)t->hdr->count);
		rc = -ENOSPC;
	}
	for (size_t i = 0; rc == 0 && i < ld.n; i++) {
		struct tg_account_row *r = &ld.rows[i];
		struct tg_acct *a;
		struct tg_move m;
		bool is_new;
		int plan = tg_plan_registry_id(&t->plans, r->plan, strlen(r->plan), true);
		if (plan < 0) {
			tg_diag_add(diag, path, r->line, "plan '%s': %s", r->plan,
			            plan == -ENOSPC
			                ? "plan-name registry full (all its names in use)"
			                : "invalid name");
			rc = plan == -ENOSPC ? -ENOSPC : -EINVAL;
			break;
		}
		if (tg_table_insert(t, r->id, &a, &is_new) != TG_OK) {
			tg_diag_add(diag, path, r->line, "table full");
			rc = -ENOSPC;
			break;
		}
		if (!is_new) {
			(*skipped)++;
			continue;
		}
		r->s.plan = (uint32_t)plan;
		tg_acct_set_balance(a, r->balance, &m);
		tg_acct_configure(a, &r->s, &m);
		if (r->limits.max_calls != 0 || r->limits.call_cap != 0 ||
		    r->limits.daily_cap != 0 || r->limits.low != 0)
			tg_acct_set_limits(t, a, &r->limits, tg_utc_day((uint32_t)time(NULL)));
		if (on_new != NULL)
			on_new(arg, a);
		(*created)++;
	}
	free(ld.rows);
	return rc;
}
