/*
 * refill_work.h - what the refill worker decides, apart from what it does
 * (hence the rw_ prefix, not tg_): the parsing of a stream entry and of a
 * customer profile, the outcome record's text, and the settle decisions.
 *
 * Nothing here talks to Redis, the engine, the gateway or the mail: every
 * function takes what tools/tollrefill.c read and says what it means or
 * what to do next, so tests/test_refill_work.c checks each decision on its
 * own, with replies built by hiredis's own reader.  Money is micro-units.
 */
#ifndef RW_REFILL_WORK_H
#define RW_REFILL_WORK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "gateway.h"
#include "mail.h"
#include "tg_limits.h"
#include "tg_money.h"

/* Bytes of a stream entry id ("1700000000000-0") with its NUL. */
#define RW_MSGID_MAX 48
/* Bytes of a payment token with its NUL. */
#define RW_TOKEN_MAX 256
/* Bytes of the reason a malformed entry is refused, with its NUL. */
#define RW_WHY_MAX 160
/* Bytes of a failure's one word reported to the engine, with its NUL. */
#define RW_REASON_MAX 32
/* Bytes of an outcome record's text, with its NUL. */
#define RW_OUTCOME_TEXT_MAX (TG_GATEWAY_REF_MAX + 96)

/* A whole decimal number in [min, max] (digits only, no sign or blank). */
bool rw_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* s[0..n) with anything unprintable shown as '?', cut to fit cap: safe in one log line. */
const char *rw_printable(const char *s, size_t n, char *out, size_t cap);

/* ---- a refill request: one stream entry ---- */

struct rw_request {
	char msgid[RW_MSGID_MAX];
	char id[TG_CALLID_MAX + 1];
	uint64_t account;
	tg_money_t amount;
	bool has_balance;
	tg_money_t balance;
	bool reportable;      /* id and account are sound: a malformed entry is reported failed */
	char why[RW_WHY_MAX]; /* what is wrong with a malformed entry */
};

/*
 * Parse one stream entry ([id, [field, value, ...]]) into q: the fields of
 * docs/REFILL.md (tbl/tg_refill_fields.h).  id, account and amount are
 * required; balance, threshold, mode, fired and attempt are checked when
 * present; unknown fields are ignored (a newer publisher may add some).
 * The id must be the account's refill request id, spelled canonically; the
 * amount positive, whole minor units of the currency (tg_currency()); the
 * mode add or topup.  False with q->why set when the entry is malformed;
 * q->msgid is set whenever the entry has an id at all, q->reportable once
 * the id and account are sound.
 */
bool rw_parse_entry(const redisReply *e, struct rw_request *q);

/* ---- the customer profile ---- */

struct rw_profile {
	bool found;
	char email[TG_MAIL_ADDR_MAX + 1]; /* "" when missing or not a plain address */
	char method[8];                   /* a payment method's name, or "" */
	char token[RW_TOKEN_MAX];         /* "" when missing or unusable */
	char name[TG_MAIL_NAME_MAX + 1];  /* cut to TG_MAIL_NAME_MAX bytes */
};

/*
 * The profile in r, the reply to HGETALL of the profile's key (a flat
 * array; anything else, an error included, is no profile).  Fields
 * (tbl/tg_profile_fields.h) that are unusable are left empty; unknown
 * fields are ignored.
 */
void rw_profile_read(const redisReply *r, struct rw_profile *p);

/* ---- outcomes: what became of a request ---- */

enum rw_outcome_state { RW_OC_NONE, RW_OC_APPROVED, RW_OC_CREDITED, RW_OC_FAILED };

struct rw_outcome {
	enum rw_outcome_state state;
	tg_money_t amount;          /* APPROVED, CREDITED: what was charged */
	tg_money_t balance;         /* CREDITED: the engine's balance after the credit */
	unsigned attempts;          /* charge attempts made */
	char reason[RW_REASON_MAX]; /* FAILED, or NONE after a soft failure: the one word */
	char ref[TG_GATEWAY_REF_MAX];
	bool unreadable; /* NONE, but a record that is not ours is in the way */
};

/*
 * The record's text into buf (RW_OUTCOME_TEXT_MAX bytes): "approved <amount>
 * <attempts> <ref>", "credited <amount> <attempts> <balance> <ref>",
 * "failed <reason> <attempts>".  oc->state is not NONE.
 */
void rw_outcome_format(const struct rw_outcome *oc, char *buf, size_t cap);
/* Parse a record's text; false (and RW_OC_NONE) when it is not one of ours. */
bool rw_outcome_parse(const char *s, struct rw_outcome *oc);

/* ---- the settle decisions ---- */

/* What the worker does with a request whose outcome is oc. */
enum rw_settle {
	RW_SETTLE_APPROVED, /* credit it (unless done), mail the receipt, acknowledge */
	RW_SETTLE_FAILED,   /* mail the failure, report it to the engine, acknowledge */
	RW_SCHEDULE,        /* a soft failure with attempts left: the next one on the schedule */
};
enum rw_settle rw_settle_of(const struct rw_outcome *oc);

/*
 * Whether the profile can be charged at all (found, with a payment method
 * and a token).  When not, oc becomes the failure "no-payment-method" (no
 * attempt made) and false is returned.
 */
bool rw_may_charge(const struct rw_profile *p, struct rw_outcome *oc);

/*
 * The gateway answered out to attempt oc->attempts (1-based) of at most
 * attempts_max for a charge of amount: APPROVED with the amount, FAILED
 * for a hard failure (declined, expired) or the last attempt, NONE with
 * the reason when another attempt is due.  oc->ref is left as the gateway
 * wrote it.
 */
void rw_charged(struct rw_outcome *oc, enum tg_charge_outcome out, unsigned attempts_max,
                tg_money_t amount);

/*
 * Another worker recorded theirs before ours (mine) could be: whether ours
 * stands and must be recorded over theirs (true), or theirs is followed.
 * Ours stands when theirs is unreadable or gone, and when we took money
 * and they recorded a failure: money taken must reach the account.
 */
bool rw_follow_mine(const struct rw_outcome *mine, const struct rw_outcome *theirs);

/*
 * The pause before attempt k + 1 (k = 1 .. attempts - 1) after a soft
 * failure: the attempts after the first spread over period_ms, each pause
 * twice the one before (3 attempts over 24 h: 8 h, then 16 h); at least 1.
 * attempts is 2 .. 30.
 */
uint64_t rw_retry_delay_ms(uint64_t period_ms, unsigned attempts, unsigned k);

#endif
