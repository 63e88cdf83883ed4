/*
 * ctl_profile.c - tollctl profile and profile-show: the customer profile of
 * an account, the hash TG_PROFILE_PREFIX "<account>" in the refill Redis
 * (docs/REFILL.md), whose fields are tbl/tg_profile_fields.h.
 *
 * tollctl checks a profile locally before writing it (it is the only
 * program that interprets one before the refill worker does): an address
 * that looks like one, a payment method the worker knows, no control bytes
 * (a profile's fields end up in mail headers).  After writing it, it asks
 * tollgated to re-arm the account's auto-refill (ACCT.REFILL.REARM).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "tg_assert.h"
#include "tg_refill_wire.h"

/* The profile hash of an account in the refill Redis (docs/REFILL.md). */
#define PROFILE_KEY TG_PROFILE_PREFIX "%" PRIu64
/* Bytes of that key: the prefix and 20 digits. */
#define PROFILE_KEY_MAX 64
_Static_assert(sizeof(TG_PROFILE_PREFIX) + 20 <= PROFILE_KEY_MAX, "a profile key fits");

/* No control bytes: a profile's fields end up in mail headers. */
static bool
printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* Plausible, not validated: one '@' with text on both sides, no blanks or control bytes. */
static bool
plausible_email(const char *s)
{
	const char *at = strchr(s, '@');

	if (at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@') != NULL)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			return false;
	return true;
}

/*
 * The names of the payment methods, "card or paypal", into buf (for a
 * message).
 */
static const char *
methods(char *buf, size_t cap)
{
	size_t n = 0;

	buf[0] = '\0';
	for (unsigned m = 0; m < TG_PAY__COUNT && n < cap; m++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%s",
		                      m == 0                   ? ""
		                      : m + 1 == TG_PAY__COUNT ? " or "
		                                               : ", ",
		                      tg_pay_method_name((enum tg_pay_method)m));
	return buf;
}

/*
 * tollctl profile ACCT --email E --method M --token T [--name N]: check
 * them, HSET them into the profile, then re-arm the account's auto-refill
 * on tollgated.  Exit code; connects on its own (Redis, then tollgated).
 */
int
ctl_profile_set(struct ctl *x, const struct ctl_args *a)
{
	char key[PROFILE_KEY_MAX];
	uint64_t id;
	redisReply *r;
	int rc;

	if (!ctl_parse_account(a->pos[0], &id))
		return ctl_usage_error("profile: invalid account id '%s'", a->pos[0]);
	if (a->email == NULL || a->method == NULL || a->token == NULL)
		return ctl_usage_error("profile: --email, --method and --token are required");
	if (!plausible_email(a->email))
		return ctl_usage_error("profile: '%s' is not a plausible email address", a->email);
	char names[64];
	if (tg_pay_method_parse(a->method) < 0)
		return ctl_usage_error("profile: --method must be %s",
		                       methods(names, sizeof(names)));
	if (a->token[0] == '\0' || !printable(a->token))
		return ctl_usage_error(
		    "profile: --token must be non-empty, without control characters");
	if (a->name != NULL && (a->name[0] == '\0' || !printable(a->name)))
		return ctl_usage_error(
		    "profile: --name must be non-empty, without control characters");
	snprintf(key, sizeof(key), PROFILE_KEY, id);
	const char *value[TG_PF__COUNT] = {[TG_PF_EMAIL] = a->email,
	                                   [TG_PF_METHOD] = a->method,
	                                   [TG_PF_TOKEN] = a->token,
	                                   [TG_PF_NAME] = a->name};
	const char *argv[2 + 2 * TG_PF__COUNT] = {"HSET", key};
	int argc = 2;
	for (unsigned f = 0; f < TG_PF__COUNT; f++) {
		/* Every required field was checked above; an optional one is left out. */
		TG_ASSERT(value[f] != NULL || !tg_profile_field_required(f));
		if (value[f] == NULL)
			continue;
		argv[argc++] = tg_profile_field_name(f);
		argv[argc++] = value[f];
	}
	rc = ctl_connect(x, &x->redis, NULL);
	if (rc == CTL_OK)
		rc = ctl_call(x, &r, argc, argv);
	if (rc != CTL_OK)
		return rc;
	if (r->type != REDIS_REPLY_INTEGER)
		rc = ctl_unexpected("HSET");
	freeReplyObject(r);
	if (rc != CTL_OK)
		return rc;
	/*
	 * A new card re-arms auto-refill: the engine fires a request now if the
	 * balance is already at or below the threshold (the next crossing
	 * otherwise).  The profile is written either way.
	 */
	char acct[24];
	snprintf(acct, sizeof(acct), "%llu", (unsigned long long)id);
	const char *rearm[] = {"ACCT.REFILL.REARM", acct};
	redisFree(x->c);
	x->c = NULL;
	rc = ctl_connect(x, &x->daemon, x->password);
	if (rc == CTL_OK)
		rc = ctl_call(x, &r, 2, rearm);
	if (rc != CTL_OK) {
		ctl_say("profile written, but auto-refill of account %llu was not re-armed",
		        (unsigned long long)id);
		return rc;
	}
	if (r->type == REDIS_REPLY_STRING)
		printf("OK, refill %s fired\n", r->str);
	else
		printf("OK\n");
	freeReplyObject(r);
	return CTL_OK;
}

/* tollctl profile-show ACCT [--json]: the profile as it is.  Exit code (1: none). */
int
ctl_profile_show(struct ctl *x, const struct ctl_args *a)
{
	char key[PROFILE_KEY_MAX];
	uint64_t id;
	redisReply *r;
	int rc;

	if (!ctl_parse_account(a->pos[0], &id))
		return ctl_usage_error("profile-show: invalid account id '%s'", a->pos[0]);
	snprintf(key, sizeof(key), PROFILE_KEY, id);
	const char *argv[] = {"HGETALL", key};
	rc = ctl_connect(x, &x->redis, NULL);
	if (rc == CTL_OK)
		rc = ctl_call(x, &r, 2, argv);
	if (rc != CTL_OK)
		return rc;
	if (!ctl_is_pairs(r)) {
		rc = ctl_unexpected("HGETALL");
	} else if (r->elements == 0) {
		ctl_say("no profile for account %" PRIu64 " (%s)", id, key);
		rc = CTL_SERVER;
	} else {
		ctl_print_pairs(r, a->json);
	}
	freeReplyObject(r);
	return rc;
}
