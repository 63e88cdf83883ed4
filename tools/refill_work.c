/*
 * refill_work.c - the refill worker's decisions (refill_work.h): a stream
 * entry and a profile parsed, an outcome record written and read, and what
 * to do with a request once the gateway, the records or another worker
 * have spoken.  No I/O: tools/tollrefill.c does it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refill_work.h"
#include "tg_assert.h"
#include "tg_engine.h"
#include "tg_log.h"
#include "tg_names.h"
#include "tg_refill_wire.h"

/* A whole decimal number in [min, max]. */
bool
rw_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

const char *
rw_printable(const char *s, size_t n, char *out, size_t cap)
{
	TG_ASSERT(cap >= 4);
	return tg_log_show(out, cap - 4, s, n);
}

/* ---- a refill request ---- */

/* The value of a field as a NUL-terminated copy, or false if it does not fit. */
static bool
field_copy(const redisReply *v, char *out, size_t cap)
{
	if (v->len >= cap || memchr(v->str, '\0', v->len) != NULL)
		return false;
	memcpy(out, v->str, v->len);
	out[v->len] = '\0';
	return true;
}

static bool
is_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* Why the entry is malformed, with the offending value, into q->why; returns false. */
static bool
malformed(struct rw_request *q, const char *what, const redisReply *v)
{
	char shown[48];

	if (v == NULL)
		snprintf(q->why, sizeof(q->why), "%s", what);
	else
		snprintf(q->why, sizeof(q->why), "%s \"%s\"", what,
		         rw_printable(v->str, v->len, shown, sizeof(shown)));
	return false;
}

/*
 * Parse one stream entry ([id, [field, value, ...]]) into q: the fields of
 * docs/REFILL.md.  id, account and amount are required; balance, threshold,
 * mode, fired and attempt are checked when present; unknown fields are
 * ignored (a newer publisher may add some).  False with q->why set when the
 * entry is malformed; q->msgid is set whenever the entry has an id at all.
 */
bool
rw_parse_entry(const redisReply *e, struct rw_request *q)
{
	const redisReply *f[TG_RF__COUNT] = {NULL};
	char num[32];
	uint64_t acct;

	memset(q, 0, sizeof(*q));
	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
	    e->element[0]->type != REDIS_REPLY_STRING ||
	    !field_copy(e->element[0], q->msgid, sizeof(q->msgid)))
		return malformed(q, "not a stream entry", NULL);
	const redisReply *kv = e->element[1];
	if (kv->type == REDIS_REPLY_NIL)
		return malformed(q, "deleted from the stream while pending", NULL);
	if (kv->type != REDIS_REPLY_ARRAY || kv->elements % 2 != 0)
		return malformed(q, "fields are not pairs", NULL);
	for (size_t i = 0; i < kv->elements; i += 2) {
		const redisReply *k = kv->element[i], *v = kv->element[i + 1];
		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
			return malformed(q, "a field is not a string", NULL);
		for (unsigned j = 0; j < TG_RF__COUNT; j++) {
			const char *name = tg_refill_field_name(j);
			if (k->len != strlen(name) || memcmp(k->str, name, k->len) != 0)
				continue;
			if (f[j] != NULL)
				return malformed(q, "field given twice:", k);
			f[j] = v;
		}
	}
	for (unsigned j = 0; j < TG_RF__COUNT; j++) {
		if (f[j] == NULL && tg_refill_field_required(j)) {
			snprintf(q->why, sizeof(q->why), "no %s field", tg_refill_field_name(j));
			return false;
		}
	}
	if (!field_copy(f[TG_RF_ACCOUNT], num, sizeof(num)) ||
	    !rw_parse_u64(num, 0, UINT64_MAX - 1, &acct))
		return malformed(q, "bad account", f[TG_RF_ACCOUNT]);
	q->account = acct;
	/*
	 * Only the canonical spelling: "refill:0042:1" would be another txid to
	 * the engine and another mail name here, so a second credit and mail.
	 */
	char canon[TG_REFILL_ID_MAX];
	uint32_t seq = 0;
	if (field_copy(f[TG_RF_ID], q->id, sizeof(q->id)))
		seq = tg_refill_id_parse(acct, q->id, strlen(q->id));
	if (seq == 0 || tg_refill_id(acct, seq, canon) != strlen(q->id) ||
	    strcmp(canon, q->id) != 0)
		return malformed(q, "id is not a refill request id of the account:", f[TG_RF_ID]);
	q->reportable = true;
	if (tg_money_parse(f[TG_RF_AMOUNT]->str, f[TG_RF_AMOUNT]->len, &q->amount) != 0 ||
	    q->amount <= 0)
		return malformed(q, "bad amount", f[TG_RF_AMOUNT]);
	/* A card or PayPal charge is whole minor units (cents): never round a charge here. */
	if (q->amount % tg_currency_unit(tg_currency()) != 0)
		return malformed(
		    q, "amount is not whole minor units of the currency:", f[TG_RF_AMOUNT]);
	if (f[TG_RF_BALANCE] != NULL) {
		if (tg_money_parse(f[TG_RF_BALANCE]->str, f[TG_RF_BALANCE]->len, &q->balance) != 0)
			return malformed(q, "bad balance", f[TG_RF_BALANCE]);
		q->has_balance = true;
	}
	tg_money_t threshold;
	if (f[TG_RF_THRESHOLD] != NULL &&
	    tg_money_parse(f[TG_RF_THRESHOLD]->str, f[TG_RF_THRESHOLD]->len, &threshold) != 0)
		return malformed(q, "bad threshold", f[TG_RF_THRESHOLD]);
	int mode = f[TG_RF_MODE] == NULL
	               ? TG_REFILL_ADD
	               : tg_refill_mode_parse(f[TG_RF_MODE]->str, f[TG_RF_MODE]->len);
	if (mode != TG_REFILL_ADD && mode != TG_REFILL_TOPUP)
		return malformed(q, "bad mode", f[TG_RF_MODE]);
	for (size_t j = TG_RF_FIRED; j <= TG_RF_ATTEMPT; j++)
		if (f[j] != NULL && (!field_copy(f[j], num, sizeof(num)) || !is_digits(num)))
			return malformed(q, j == TG_RF_FIRED ? "bad fired" : "bad attempt", f[j]);
	return true;
}

/* ---- the customer profile ---- */

/* Whether a token can be handed to a gateway: printable ASCII, no spaces. */
static bool
token_ok(const redisReply *v)
{
	if (v->len == 0 || v->len >= RW_TOKEN_MAX)
		return false;
	for (size_t i = 0; i < v->len; i++)
		if (v->str[i] <= ' ' || v->str[i] >= 0x7f)
			return false;
	return true;
}

void
rw_profile_read(const redisReply *r, struct rw_profile *p)
{
	memset(p, 0, sizeof(*p));
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements == 0)
		return;
	p->found = true;
	for (size_t i = 0; i + 1 < r->elements; i += 2) {
		const redisReply *k = r->element[i], *v = r->element[i + 1];
		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
			continue;
		switch (tg_profile_field_parse(k->str, k->len)) {
		case TG_PF_EMAIL:
			if (!field_copy(v, p->email, sizeof(p->email)) ||
			    !tg_mail_address_ok(p->email))
				p->email[0] = '\0';
			break;
		case TG_PF_METHOD:
			if (memchr(v->str, '\0', v->len) == NULL &&
			    tg_pay_method_parse(v->str) >= 0)
				snprintf(p->method, sizeof(p->method), "%s", v->str);
			break;
		case TG_PF_TOKEN:
			if (token_ok(v))
				field_copy(v, p->token, sizeof(p->token));
			break;
		case TG_PF_NAME: {
			/* Cut long names: the mail shows at most TG_MAIL_NAME_MAX bytes. */
			size_t n = v->len < TG_MAIL_NAME_MAX ? v->len : TG_MAIL_NAME_MAX;
			memcpy(p->name, v->str, n);
			p->name[n] = '\0';
			break;
		}
		default: /* a field of a newer tollctl: ignored */
			break;
		}
	}
}

/* ---- outcomes ---- */

/*
 * The record's text: "approved <amount> <attempts> <ref>",
 * "credited <amount> <attempts> <balance> <ref>", "failed <reason> <attempts>".
 */
void
rw_outcome_format(const struct rw_outcome *oc, char *buf, size_t cap)
{
	char a[TG_MONEY_STR_MAX], b[TG_MONEY_STR_MAX];

	tg_money_format(oc->amount, a);
	tg_money_format(oc->balance, b);
	switch (oc->state) {
	case RW_OC_APPROVED:
		snprintf(buf, cap, "approved %s %u %s", a, oc->attempts, oc->ref);
		break;
	case RW_OC_CREDITED:
		snprintf(buf, cap, "credited %s %u %s %s", a, oc->attempts, b, oc->ref);
		break;
	case RW_OC_FAILED:
		snprintf(buf, cap, "failed %s %u", oc->reason, oc->attempts);
		break;
	case RW_OC_NONE:
		TG_ASSERT(!"an outcome to record");
	}
}

/* Parse a record; false (and RW_OC_NONE) when it is not one of ours. */
bool
rw_outcome_parse(const char *s, struct rw_outcome *oc)
{
	char word[16], a[TG_MONEY_STR_MAX + 1], b[TG_MONEY_STR_MAX + 1];
	int used = 0;

	memset(oc, 0, sizeof(*oc));
	if (sscanf(s, "%15s", word) != 1)
		return false;
	if (strcmp(word, "failed") == 0) {
		if (sscanf(s, "failed %31s %u%n", oc->reason, &oc->attempts, &used) != 2 ||
		    s[used] != '\0')
			return false;
		oc->state = RW_OC_FAILED;
		return true;
	}
	if (strcmp(word, "approved") == 0) {
		if (sscanf(s, "approved %24s %u %n", a, &oc->attempts, &used) != 2 || used == 0)
			return false;
		oc->state = RW_OC_APPROVED;
	} else if (strcmp(word, "credited") == 0) {
		if (sscanf(s, "credited %24s %u %24s %n", a, &oc->attempts, b, &used) != 3 ||
		    used == 0 || tg_money_parse(b, strlen(b), &oc->balance) != 0)
			return false;
		oc->state = RW_OC_CREDITED;
	} else {
		return false;
	}
	if (tg_money_parse(a, strlen(a), &oc->amount) != 0 || oc->amount <= 0 ||
	    (size_t)snprintf(oc->ref, sizeof(oc->ref), "%s", s + used) >= sizeof(oc->ref)) {
		oc->state = RW_OC_NONE;
		return false;
	}
	return true;
}

/* ---- the settle decisions ---- */

enum rw_settle
rw_settle_of(const struct rw_outcome *oc)
{
	switch (oc->state) {
	case RW_OC_APPROVED:
	case RW_OC_CREDITED:
		return RW_SETTLE_APPROVED;
	case RW_OC_FAILED:
		return RW_SETTLE_FAILED;
	case RW_OC_NONE:
		break;
	}
	return RW_SCHEDULE;
}

bool
rw_may_charge(const struct rw_profile *p, struct rw_outcome *oc)
{
	if (p->found && p->method[0] != '\0' && p->token[0] != '\0')
		return true;
	memset(oc, 0, sizeof(*oc));
	oc->state = RW_OC_FAILED;
	snprintf(oc->reason, sizeof(oc->reason), "no-payment-method");
	return false;
}

void
rw_charged(struct rw_outcome *oc, enum tg_charge_outcome out, unsigned attempts_max,
           tg_money_t amount)
{
	TG_ASSERT(oc->attempts >= 1);
	if (out == TG_CHARGE_APPROVED) {
		oc->state = RW_OC_APPROVED;
		oc->amount = amount;
		return;
	}
	oc->state = RW_OC_NONE;
	snprintf(oc->reason, sizeof(oc->reason), "%s", tg_charge_outcome_name(out));
	/* Hard failures (declined, expired) end at once; soft ones have the schedule. */
	if (out == TG_CHARGE_DECLINED || out == TG_CHARGE_EXPIRED || oc->attempts >= attempts_max)
		oc->state = RW_OC_FAILED;
}

bool
rw_follow_mine(const struct rw_outcome *mine, const struct rw_outcome *theirs)
{
	if (theirs->state == RW_OC_NONE) /* unreadable, or gone meanwhile */
		return true;
	/* Money was taken: it must reach the account whatever was recorded. */
	return mine->state == RW_OC_APPROVED && theirs->state == RW_OC_FAILED;
}

uint64_t
rw_retry_delay_ms(uint64_t period_ms, unsigned attempts, unsigned k)
{
	TG_ASSERT(attempts >= 2 && attempts <= 30 && k >= 1 && k < attempts);
	uint64_t shares = (1ull << (attempts - 1)) - 1;
	unsigned __int128 d = (unsigned __int128)period_ms << (k - 1);

	d /= shares;
	return d < 1 ? 1 : (uint64_t)d;
}
