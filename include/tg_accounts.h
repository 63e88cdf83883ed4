/*
 * tg_accounts.h - loading accounts from a CSV file (docs/ACCOUNTS.md).
 */
#ifndef TG_ACCOUNTS_H
#define TG_ACCOUNTS_H

#include <stddef.h>

#include "tg_diag.h"
#include "tg_table.h"

/* One checked row of an accounts file. */
struct tg_account_row {
	uint64_t id;
	tg_money_t balance;
	struct tg_acct_settings s;   /* s.plan is not set: the name is in plan */
	struct tg_limits_set limits; /* version 3's fraud limits; all 0: none (docs/FRAUD.md) */
	bool limits_given;           /* the file has the limit columns (version 3 or later) */
	char plan[TG_PLAN_NAME_MAX + 1];
	unsigned line; /* 1-based */
};

/*
 * Read and check every row of path, touching no table (tollctl uses it to
 * refuse a file before sending anything).  On success *rows is a malloc'ed
 * array of *n rows in file order, no account twice; on any problem each is
 * reported in diag and the result is -EINVAL (or -errno / -ENOMEM).
 */
int tg_accounts_read(const char *path, struct tg_diag *diag, struct tg_account_row **rows,
                     size_t *n);

/*
 * Create the accounts of path in t.  Every row is checked before any account
 * is touched: one bad row (reported in diag with file, line and reason) and
 * nothing changes (-EINVAL).  An account already in the table is left exactly
 * as it is (a surviving segment keeps its balances) and counted in *skipped.
 * Returns 0, -EINVAL, -ENOSPC (table full) or -errno.
 */
int tg_accounts_load(const char *path, struct tg_table *t, struct tg_diag *diag, size_t *created,
                     size_t *skipped);
/* The same, calling on_new(arg, a) for each account it creates (to record it). */
int tg_accounts_load_cb(const char *path, struct tg_table *t, struct tg_diag *diag, size_t *created,
                        size_t *skipped, void (*on_new)(void *arg, struct tg_acct *a), void *arg);

#endif
