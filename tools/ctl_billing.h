/*
 * ctl_billing.h - tollctl pay, cancel, invoice and invoices: the operator's
 * side of billing (docs/BILLING.md, docs/TOOLS.md), on the ledger database
 * through tools/billing.c, kept apart from tollctl.c's daemon commands.
 */
#ifndef TG_CTL_BILLING_H
#define TG_CTL_BILLING_H

/*
 * argv[0] is "pay", "cancel", "invoice" or "invoices"; the rest its
 * arguments.  host, port, user, password: tollgated; redis_host,
 * redis_port: the refill Redis (profiles, the gateway).  Exit status: 0, 1
 * (refused: unknown account or invoice, a refund after the guarantee, a
 * reused payment reference), 2 (usage), 3 (cannot reach the database, or
 * tollgated when the command needs it).
 */
int ctl_billing_main(int argc, char **argv, const char *host, int port, const char *user,
                     const char *password, const char *redis_host, int redis_port);

#endif
