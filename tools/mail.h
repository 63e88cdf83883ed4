/*
 * mail.h - the refill worker's mail: receipts and failure notices, written
 * once each into a spool directory.
 *
 * A mail is one file named "<request id>.<kind>" ("refill:42:1.receipt",
 * "refill:42:1.failure") holding an RFC 5322 message.  The name is claimed
 * exclusively, so however many workers and retries try, one request gets at
 * most one mail of each kind.  Optionally each new mail is also piped into a
 * command (sendmail -t).  This module composes and delivers; it never
 * decides whether a mail is due.
 */
#ifndef TG_MAIL_H
#define TG_MAIL_H

#include <stdbool.h>
#include <stdint.h>

#include "tg_money.h"

/* Bytes of one composed mail, headers included. */
#define TG_MAIL_MAX 8192
/* Bytes of an address, RFC 5321's limit, NUL not counted. */
#define TG_MAIL_ADDR_MAX 254
/* Bytes of a display name kept in a mail, NUL not counted; longer names are cut. */
#define TG_MAIL_NAME_MAX 128

enum tg_mail_kind { TG_MAIL_RECEIPT, TG_MAIL_FAILURE };

/* What a mail says.  Strings are NUL-terminated and borrowed for the call. */
struct tg_mail_refill {
	const char *request_id; /* "refill:<acct>:<n>": no '/', not starting with '.' */
	uint64_t account;
	const char *to;     /* the billing contact (tg_mail_address_ok) */
	const char *name;   /* may be NULL or empty */
	const char *method; /* "card", "paypal", or NULL when none is on file */
	tg_money_t amount;  /* charged (receipt) or asked for (failure) */
	/* receipt */
	tg_money_t balance_after;
	const char *reference; /* the gateway's reference */
	/* failure */
	const char *reason; /* declined, expired, timeout, error, no-payment-method */
	unsigned attempts;  /* charge attempts made (0: none) */
	bool has_balance;   /* balance_at_request is known */
	tg_money_t balance_at_request;
};

#define TG_MAIL_SPOOL_MAGIC 0x6d61696cu /* "mail" */

struct tg_mail_spool {
	uint32_t magic;
	int dirfd;
	unsigned seq; /* temporary file names */
	char from[TG_MAIL_ADDR_MAX + 1];
	char host[64];
	const char *sendmail; /* borrowed; NULL: spool only */
};

/* Whether addr is a plain, header-safe address: local@domain, no spaces or controls. */
bool tg_mail_address_ok(const char *addr);

/*
 * Open the spool at dir (an existing directory, writable).  from is the
 * From: address (tg_mail_address_ok); sendmail, when not NULL, a shell
 * command each new mail is piped into, kept by reference.  0 or -errno.
 */
int tg_mail_open(struct tg_mail_spool *s, const char *dir, const char *from, const char *sendmail);
void tg_mail_close(struct tg_mail_spool *s);

/*
 * Compose and post one mail of kind for m.  Returns 1 when this call wrote
 * it, 0 when that request's mail of that kind was already in the spool
 * (nothing written, nothing piped), -EINVAL for a bad address or request
 * id, another -errno when the spool could not be written (nothing
 * published: a retry may write it).  The file appears complete or not at
 * all.  A failing sendmail is logged and does not change the result: the
 * mail stays in the spool.
 */
int tg_mail_post(struct tg_mail_spool *s, enum tg_mail_kind kind, const struct tg_mail_refill *m);

#endif
