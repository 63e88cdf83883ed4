/*
 * mail.h - the refill worker's mail: receipts and failure notices, composed
 * as RFC 5322 messages and handed to a notifier.
 *
 * A notifier is a table of function pointers behind a small handle, like
 * the payment gateway (gateway.h), so another transport can replace the
 * bundled ones without touching the worker.  Two are bundled: a maildir
 * (each mail a file linked into DIR/new under a name made of the request id
 * and the kind, so it is created at most once) and a sendmail pipe (each
 * mail piped into a command such as "sendmail -t").  This module composes
 * and delivers; it never decides whether a mail is due, and it keeps no
 * record of what it sent beyond what its transport itself holds: the worker
 * keeps that record (docs/REFILL.md, "Mail").
 */
#ifndef TG_MAIL_H
#define TG_MAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "tg_limits.h"
#include "tg_money.h"

/* Bytes of one composed mail, headers included (a billing mail carries two parts). */
#define TG_MAIL_MAX 16384
/* Bytes of an address, RFC 5321's limit, NUL not counted. */
#define TG_MAIL_ADDR_MAX 254
/* Bytes of a display name kept in a mail, NUL not counted; longer names are cut. */
#define TG_MAIL_NAME_MAX 128
/* Bytes of a maildir file name for a mail ("refill.42.1.receipt"), NUL included. */
#define TG_MAIL_FILE_MAX (TG_CALLID_MAX + 16)

/*
 * RECEIPT, FAILURE: the refill worker's.  NOTICE: a billing mail of tollbill
 * (an invoice, a collections step, a refund; docs/BILLING.md, "Mails"):
 * multipart/alternative, a text part and an HTML part saying the same.
 */
enum tg_mail_kind { TG_MAIL_RECEIPT, TG_MAIL_FAILURE, TG_MAIL_NOTICE };

/* Lines of a billing mail's table, at most. */
#define TG_MAIL_LINES_MAX 32

/* One line of a billing mail's table: a description and an amount. */
struct tg_mail_line {
	const char *text;
	tg_money_t amount;
};

/*
 * What a billing mail says (TG_MAIL_NOTICE): the subject, what happened,
 * what to do, and optionally a table of lines with a total.  Strings are
 * UTF-8 text (the HTML part escapes them), borrowed for the call.
 */
struct tg_mail_bill {
	const char *subject;
	const char *what;        /* what happened: a paragraph */
	const char *action;      /* what the customer should do: a paragraph, or NULL */
	const char *table_title; /* above the lines ("Invoice 7, December 2026"), or NULL */
	const struct tg_mail_line *lines;
	unsigned nlines;         /* at most TG_MAIL_LINES_MAX */
	const char *total_label; /* NULL: no total line */
	tg_money_t total;
};

/* What a mail says.  Strings are NUL-terminated and borrowed for the call. */
struct tg_mail_refill {
	const char *request_id; /* "refill:<acct>:<n>": letters, digits, ':', '-', '_' */
	uint64_t account;
	const char *to;     /* the billing contact (tg_mail_address_ok) */
	const char *name;   /* may be NULL or empty */
	const char *method; /* "card", "paypal", or NULL when none is on file */
	const char *token;  /* the method's token (only its last 4 characters are shown); may be
	                       NULL */
	tg_money_t amount;  /* charged (receipt) or asked for (failure) */
	time_t date;        /* the mail's date (header and body); 0: now */
	/* receipt */
	tg_money_t balance_after; /* the engine's reply to ACCT.CREDIT */
	const char *reference;    /* the gateway's reference */
	/* failure */
	const char *reason; /* declined, expired, timeout, error, no-payment-method */
	unsigned attempts;  /* charge attempts made (0: none) */
	bool has_balance;   /* balance_at_request is known */
	tg_money_t balance_at_request;
	/* notice: the billing mail's content (required for TG_MAIL_NOTICE, else ignored) */
	const struct tg_mail_bill *bill;
};

/* "receipt", "failure" or "notice". */
const char *tg_mail_kind_name(enum tg_mail_kind kind);

/* Whether addr is a plain, header-safe address: local@domain, no spaces or controls. */
bool tg_mail_address_ok(const char *addr);

/*
 * Compose the mail of kind for m into out (cap bytes): headers (To, From,
 * Subject, Date, Message-ID, MIME, X-Tollgate-Request), a blank line, the
 * body; LF line ends.  from is the From: address, host the right side of
 * the Message-ID.  Returns the length (no NUL counted), -EINVAL for a bad
 * address or request id, -EMSGSIZE when it does not fit.
 */
int tg_mail_compose(enum tg_mail_kind kind, const struct tg_mail_refill *m, const char *from,
                    const char *host, char *out, size_t cap);

/*
 * The maildir file name of the mail of kind for request_id: the id with
 * ':' turned into '.' (':' separates a maildir name from its flags), a dot
 * and the kind: "refill.42.1.receipt".  The mapping is one to one on the
 * ids tg_mail_compose accepts.  -EINVAL for a bad id, else 0.
 */
int tg_mail_file_name(const char *request_id, enum tg_mail_kind kind, char *out, size_t cap);

struct tg_notifier_ops {
	const char *name;
	/*
	 * Whether send itself refuses to deliver a mail of a kind twice for a
	 * request (answering 0 instead).  When false, the caller must claim
	 * the mail elsewhere before sending it.
	 */
	bool exclusive;
	/*
	 * Deliver the mail of kind for m (already checked).  1: delivered by
	 * this call; 0: it had been delivered before (exclusive notifiers
	 * only), nothing done; -errno: not delivered (the caller may retry).
	 */
	int (*send)(void *impl, enum tg_mail_kind kind, const struct tg_mail_refill *m);
	/* Release everything impl holds.  Called once. */
	void (*close)(void *impl);
};

#define TG_NOTIFIER_MAGIC 0x6e6f7466u /* "notf" */

struct tg_notifier {
	uint32_t magic;
	const struct tg_notifier_ops *ops;
	void *impl;
};

/*
 * Check m (request id, address) and deliver it through n.  1, 0 or -errno
 * as tg_notifier_ops.send; -EINVAL for a mail that can never be sent.
 */
int tg_notify(struct tg_notifier *n, enum tg_mail_kind kind, const struct tg_mail_refill *m);

/* Close n and clear it; a cleared or never-opened (zeroed) handle is ignored. */
void tg_notifier_close(struct tg_notifier *n);

/*
 * The maildir notifier, on dir: dir itself (its parent must exist) and its
 * tmp, new and cur are created when missing (mode 0700).  Each mail is
 * written to tmp/ under a unique name, flushed with fsync, then linked into
 * new/ under tg_mail_file_name, which fails if the name exists: exclusive.
 * A mail already in new/ or moved by a reader into cur/ (with or without
 * ":2,<flags>") counts as delivered.  from is the From: address.  0 or
 * -errno (-EINVAL for a bad from).
 */
int tg_notifier_maildir_open(struct tg_notifier *n, const char *dir, const char *from);

/*
 * The sendmail notifier: each mail piped into cmd, run by /bin/sh -c (e.g.
 * "/usr/sbin/sendmail -t": the recipients come from the headers); a mail is
 * delivered when cmd read it all and exited 0.  Not exclusive.  cmd is kept
 * by reference.  0 or -errno (-EINVAL for a bad from or an empty cmd).
 */
int tg_notifier_sendmail_open(struct tg_notifier *n, const char *cmd, const char *from);

#endif
