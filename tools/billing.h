/*
 * billing.h - postpaid billing on the ledger database (docs/BILLING.md):
 * products and subscriptions, the monthly invoice run, collections (retries,
 * the late fee, interrupted / suspended / closed), payments, the 30-day
 * money-back guarantee, statements.  Shared by tollbill and tollctl.
 *
 * Everything here works out of the hot path: on the ledger (struct ldb),
 * the payment gateway (gateway.h), the notifier (mail.h), tollgated over
 * RESP (ACCT.SET STATE, ACCT.CREDIT, ACCT.GET) and the refill Redis (the
 * customer profile: email, name, payment method).  The clock is the caller's
 * (struct tg_bill.clock): this module never reads the time itself, so a
 * test can run a year in a second.  Every step is idempotent: what was done
 * is in the database before or with the step's effect, and every outside
 * effect carries an id its receiver de-duplicates (gateway request ids,
 * ACCT.CREDIT txids, maildir names), so a rerun after a crash completes
 * what was left and repeats nothing.
 *
 * Results: 0, or a negative code with one sentence in b->err:
 * -EINVAL bad input, -ENOENT unknown account / invoice / product,
 * -EPERM refused by policy (a refund after the guarantee), -EIO the database
 * failed (nothing half done: its transaction was rolled back).
 */
#ifndef TG_BILLING_H
#define TG_BILLING_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <hiredis/hiredis.h>

#include "gateway.h"
#include "ledger_db.h"
#include "mail.h"
#include "tg_money.h"

/* Retries of a failed invoice charge, at most. */
#define TG_BILL_RETRIES_MAX 8
/* Bytes of an error sentence. */
#define TG_BILL_ERR_MAX 512

/* The collections policy (docs/BILLING.md, "Collections"): days after the invoice date. */
struct tg_bill_policy {
	unsigned retry_days[TG_BILL_RETRIES_MAX]; /* increasing; default 3, 7, 14 */
	unsigned nretry;                          /* default 3 */
	unsigned interrupt_after;                 /* default 15 */
	unsigned suspend_after;                   /* default 30 */
	unsigned close_after;                     /* default 60 */
	unsigned guarantee_days;                  /* money-back guarantee, default 30 */
};

#define TG_BILL_MAGIC 0x62696c6cu /* "bill" */

struct tg_bill {
	uint32_t magic;
	struct ldb *db;           /* the ledger, at LEDGER_SCHEMA_VERSION */
	struct tg_gateway *gw;    /* NULL: no charge or refund can be made */
	struct tg_notifier *mail; /* NULL: no mail is sent (nor recorded as sent) */
	redisContext *engine;     /* tollgated; NULL or broken: engine steps stay pending */
	redisContext *redis;      /* the refill Redis (profiles); NULL: no payment method */
	struct tg_bill_policy pol;
	int64_t (*clock)(void *arg); /* now, microseconds since the epoch (UTC) */
	void *clock_arg;
	FILE *log; /* one line per thing done, or NULL */
	char err[TG_BILL_ERR_MAX];
};

/* What a run or a collections pass did. */
struct tg_bill_report {
	unsigned invoices;    /* issued now */
	unsigned charged;     /* charge attempts approved */
	unsigned failed;      /* charge attempts that failed */
	unsigned mails;       /* notices delivered */
	unsigned late_fees;   /* assessed */
	unsigned transitions; /* standing changes (interrupted, suspended, closed, restored) */
	unsigned credits;     /* ACCT.CREDIT sent */
	unsigned pending;     /* steps left for the next pass (engine or gateway unreachable) */
	unsigned skipped;     /* postpaid accounts not billed (no customer record) */
};

/* Where billing's parts are (tollbill's and tollctl's options). */
struct tg_bill_conf {
	const char *db; /* SQLite path or PostgreSQL URI */
	bool migrate;   /* bring the schema to this build's version (tollbill), else require it */
	const char *engine_host; /* NULL: no tollgated (engine steps stay pending) */
	int engine_port;
	const char *engine_user, *engine_password; /* AUTH [user] password; NULL: none */
	const char *redis_host;                    /* the refill Redis: profiles, the gateway */
	int redis_port;
	const char *redis_password;
	const char *maildir, *sendmail; /* at most one; neither: no mail */
	const char *mail_from;
};

/*
 * Open b's parts from c (b zeroed, then clock, pol and log set by the
 * caller, before or after).  The database must open (-EIO with the reason
 * otherwise); tollgated and Redis are connected when they answer, and
 * their steps wait when they do not.  tg_bill_close releases all.
 */
int tg_bill_open(struct tg_bill *b, const struct tg_bill_conf *c);
void tg_bill_close(struct tg_bill *b);

/*
 * The options tollbill and tollctl's billing commands share: --db, --data-dir,
 * --engine, --engine-user, --engine-password, --redis, --redis-password,
 * --maildir, --sendmail, --mail-from, --now, --retry-days, --interrupt-after,
 * --suspend-after, --close-after, --guarantee-days, --currency.  1: opt was
 * one (val consumed), 0: not one of them, -EINVAL: a bad value (err says).
 * *now is set by --now (Unix seconds, as microseconds); dbbuf holds
 * DIR/ledger.sqlite for --data-dir.
 */
int tg_bill_option(struct tg_bill_conf *c, struct tg_bill_policy *pol, int64_t *now, char *dbbuf,
                   size_t dbcap, const char *opt, const char *val, char *err, size_t errlen);
/* The usage lines of those options. */
extern const char tg_bill_options_usage[];

/* The default policy. */
void tg_bill_policy_default(struct tg_bill_policy *p);
/* "3,7,14" into p's retry days.  0, or -EINVAL with the reason in err. */
int tg_bill_policy_retries(struct tg_bill_policy *p, const char *s, char *err, size_t errlen);
/* Whether p is coherent (retries increasing, interrupt after the last retry, ...): 0 or -EINVAL. */
int tg_bill_policy_check(const struct tg_bill_policy *p, char *err, size_t errlen);

/* "2026-12" -> year, month.  0 or -EINVAL. */
int tg_bill_month_parse(const char *s, int *year, int *month);
/* "2026-12-05" -> microseconds at 00:00 UTC.  0 or -EINVAL. */
int tg_bill_day_parse(const char *s, int64_t *us);
/* "1.5" (percent, at most two decimals, 0 to 1.5) -> basis points.  0 or -EINVAL. */
int tg_bill_percent_parse(const char *s, unsigned *bp);
/*
 * The prorated price of a month started on day `day` of a month of `dim`
 * days: price * (dim - day + 1) / dim, rounded to the minor unit (unit
 * micro-units), half up.  price is whole minor units.
 */
tg_money_t tg_bill_prorate(tg_money_t price, unsigned day, unsigned dim, tg_money_t unit);
/* amount * bp / 10000, rounded to the minor unit (unit), half up. */
tg_money_t tg_bill_fee(tg_money_t amount, unsigned bp, tg_money_t unit);

/* ---- set-up (tollbill product | customer | subscribe | late-fee) ---- */

/* Create or reprice product (price in whole minor units, >= 0). */
int tg_bill_product_set(struct tg_bill *b, const char *product, tg_money_t price);
/* Create or change the billing record of acct: billing region, sign-up time. */
int tg_bill_customer_set(struct tg_bill *b, uint64_t acct, const char *region, int64_t signup_us);
/* Subscribe acct (a customer) to product from start_us (00:00 UTC of a day). */
int tg_bill_subscribe(struct tg_bill *b, uint64_t acct, const char *product, int64_t start_us);
/* Set the late-fee rate of region ("*": every region without a row) in basis points, <= 150. */
int tg_bill_late_fee_set(struct tg_bill *b, const char *region, unsigned bp);

/* ---- the runs ---- */

/*
 * The invoice run of year-month, dated the 1st at 00:00 UTC: one invoice per
 * postpaid account with a customer record, not yet invoiced for that month,
 * then a collections pass.  Refused (-EINVAL) before the 1st of that month.
 */
int tg_bill_run(struct tg_bill *b, int year, int month, struct tg_bill_report *rep);
/*
 * The daily pass (also the end of every run): charge attempts due, late
 * fees, standing changes and their engine states, engine credits of paid
 * usage, and every notice not yet delivered.
 */
int tg_bill_collect(struct tg_bill *b, struct tg_bill_report *rep);

/* ---- payments and cancellation ---- */

/* A payment recorded by an operator (cash, a bank transfer), beside the profile's methods. */
#define TG_BILL_MANUAL "manual"

/* Whether m names a way to pay: TG_BILL_MANUAL or a method of tbl/tg_pay_methods.h. */
bool tg_bill_payment_method_ok(const char *m);

/*
 * Record a payment of amount (> 0, whole minor units) by acct, method
 * "manual", "card" or "paypal", under ref (unique: the same ref again with
 * the same account and amount is recognized and changes nothing; *dup set),
 * settle the oldest invoices first, credit the engine with the usage paid,
 * restore the account when nothing is late any more.
 */
int tg_bill_pay(struct tg_bill *b, uint64_t acct, tg_money_t amount, const char *method,
                const char *ref, bool *dup);
/*
 * Cancel acct: engine state closed, subscriptions ended.  With refund,
 * only within pol.guarantee_days of the sign-up (-EPERM after, nothing
 * changed): every subscription charge and fee paid goes back (postpaid), or
 * the unused balance bought minus usage (prepaid), through the gateway's
 * refunds, itemized in bill_refunds and printed to out.  A rerun completes
 * a refund left half done.
 */
int tg_bill_cancel(struct tg_bill *b, uint64_t acct, bool refund, FILE *out);

/* ---- statements ---- */

/* Print invoice number to out (lines, totals, payments, status). */
int tg_bill_invoice_print(struct tg_bill *b, int64_t number, FILE *out);
/* Print acct's invoices, one a line, with their status. */
int tg_bill_invoices_print(struct tg_bill *b, uint64_t acct, FILE *out);

#endif
