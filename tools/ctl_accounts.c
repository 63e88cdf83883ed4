/*
 * ctl_accounts.c - tollctl's view of an accounts file: the engine's own
 * reader (tg_accounts_read), so tollctl refuses exactly what the daemon's
 * start-up loader refuses, with the same "file:line: reason" lines, and
 * turns each row into the words ACCT.SET takes.  Never talks to a server.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_accounts.h"
#include "tg_accounts.h"
#include "tg_names.h"

int
ctl_accounts_read(const char *path, struct tg_diag *diag, struct ctl_account **out, size_t *n)
{
	struct tg_account_row *rows;
	size_t count;
	int rc = tg_accounts_read(path, diag, &rows, &count);

	*out = NULL;
	*n = 0;
	if (rc != 0)
		return rc;
	struct ctl_account *v = calloc(count ? count : 1, sizeof(*v));
	if (v == NULL) {
		free(rows);
		return -ENOMEM;
	}
	for (size_t i = 0; i < count; i++) {
		const struct tg_account_row *r = &rows[i];
		v[i].id = r->id;
		v[i].balance = r->balance;
		v[i].threshold = r->s.threshold;
		v[i].refill_amount = r->s.refill_amount;
		memcpy(v[i].plan, r->plan, sizeof(v[i].plan));
		v[i].state = tg_acct_state_name(r->s.state % TG_ACCT_STATE__COUNT);
		v[i].refill = tg_refill_mode_name(r->s.refill_mode % TG_REFILL_MODE__COUNT);
		v[i].payment = (r->s.flags & TG_ACCT_PAYMENT) ? "on" : "off";
		v[i].kind = (r->s.flags & TG_ACCT_POSTPAID) ? "postpaid" : "prepaid";
		v[i].credit_limit = r->s.credit_limit;
		v[i].limits_given = r->limits_given;
		v[i].maxcalls = r->limits.max_calls;
		v[i].call_cap = r->limits.call_cap;
		v[i].daily_cap = r->limits.daily_cap;
		v[i].low = r->limits.low;
		v[i].line = r->line;
	}
	free(rows);
	*out = v;
	*n = count;
	return 0;
}
