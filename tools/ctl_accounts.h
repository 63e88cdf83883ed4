/*
 * ctl_accounts.h - tollctl's reading of an accounts CSV file (docs/ACCOUNTS.md).
 *
 * Shared by the tollctl sources only (hence the ctl_ prefix, not tg_).  The
 * file is checked here, whole, with the rules and the reasons of the
 * daemon's start-up loader (engine/accounts.c), so an operator sees the same
 * "file:line: reason" lines from either.  Never talks to a server: a file
 * with one bad row must be refused before anything is sent.
 */
#ifndef CTL_ACCOUNTS_H
#define CTL_ACCOUNTS_H

#include <stddef.h>
#include <stdint.h>

#include "tg_diag.h"
#include "tg_limits.h"
#include "tg_money.h"

/* One checked row, in the words ACCT.SET takes. */
struct ctl_account {
	uint64_t id;
	tg_money_t balance;
	tg_money_t threshold;     /* 0 when the field was empty */
	tg_money_t refill_amount; /* > 0 when refill is "add" or "topup" */
	char plan[TG_PLAN_NAME_MAX + 1];
	const char *state;       /* "active", "suspended" or "closed" (static strings) */
	const char *refill;      /* "off", "add" or "topup" (static strings) */
	const char *payment;     /* "on" or "off" (static strings) */
	const char *kind;        /* "prepaid" or "postpaid" (static strings) */
	tg_money_t credit_limit; /* postpaid: its credit limit; else 0 */
	bool limits_given;       /* version 3 or later: the four limits below are the row's */
	uint32_t maxcalls;       /* 0: none */
	tg_money_t call_cap;     /* 0: none */
	tg_money_t daily_cap;    /* 0: none */
	tg_money_t low;          /* 0: none */
	unsigned line;           /* 1-based line in the file */
};

/*
 * Read and check path.  On success (0) *out is a malloc'ed array of *n rows
 * in file order, owned by the caller (free()), with no account twice.  On
 * any problem every one is reported in diag, nothing is returned (*out NULL,
 * *n 0) and the result is -EINVAL, or -errno when the file cannot be read
 * (also reported in diag) or memory runs out.
 */
int ctl_accounts_read(const char *path, struct tg_diag *diag, struct ctl_account **out, size_t *n);

#endif
