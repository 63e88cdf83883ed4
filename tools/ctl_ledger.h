/*
 * ctl_ledger.h - tollctl statement, calls and reconcile: questions to the
 * ledger (docs/LEDGER.md), kept apart from tollctl.c's daemon commands.
 */
#ifndef TG_CTL_LEDGER_H
#define TG_CTL_LEDGER_H

/*
 * argv[0] is "statement", "calls" or "reconcile"; the rest its arguments.
 * host, port, user, password: tollgated, for reconcile.  Exit status: 0, 1
 * (reconcile found a difference, or the account is not in the ledger), 2
 * (usage), 3 (cannot reach the database or tollgated).
 */
int ctl_ledger_main(int argc, char **argv, const char *host, int port, const char *user,
                    const char *password);

#endif
