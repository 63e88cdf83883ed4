/*
 * tg_accounts.h - loading accounts from a CSV file (docs/ACCOUNTS.md).
 */
#ifndef TG_ACCOUNTS_H
#define TG_ACCOUNTS_H

#include <stddef.h>

#include "tg_diag.h"
#include "tg_table.h"

/*
 * Create the accounts of path in t.  Every row is checked before any account
 * is touched: one bad row (reported in diag with file, line and reason) and
 * nothing changes (-EINVAL).  An account already in the table is left exactly
 * as it is (a surviving segment keeps its balances) and counted in *skipped.
 * Returns 0, -EINVAL, -ENOSPC (table full) or -errno.
 */
int tg_accounts_load(const char *path, struct tg_table *t, struct tg_diag *diag, size_t *created,
                     size_t *skipped);

#endif
