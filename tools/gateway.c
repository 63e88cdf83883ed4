/*
 * gateway.c - the payment-gateway handle and the bundled simulator.
 *
 * Owns the simulator's Redis connection and its three hashes (tokens,
 * attempts, charges; see gateway.h).  The simulator stands in for a card
 * processor, so it keeps a processor's promises: a request id is charged at
 * most once, whatever the number of attempts, workers or crashes, and a
 * charge that did not go through takes nothing.  It must never write
 * anything but its own tollgate:sim:* keys.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "gateway.h"
#include "tg_assert.h"
#include "tg_log.h"

#define SIM_MAGIC      0x73696d75u /* "simu" */
#define SIM_TOKENS     "tollgate:sim:tokens"
#define SIM_ATTEMPTS   "tollgate:sim:attempts"
#define SIM_CHARGES    "tollgate:sim:charges"
#define SIM_REFUNDS    "tollgate:sim:refunds"
#define SIM_REFUNDED   "tollgate:sim:refunded"
#define SIM_TIMEOUT_MS 5000
/* Most failures an intermittent token may be told to produce. */
#define SIM_INTERMITTENT_MAX 1000000

const char *
tg_charge_outcome_name(enum tg_charge_outcome o)
{
	switch (o) {
	case TG_CHARGE_APPROVED:
		return "approved";
	case TG_CHARGE_DECLINED:
		return "declined";
	case TG_CHARGE_EXPIRED:
		return "expired";
	case TG_CHARGE_TIMEOUT:
		return "timeout";
	case TG_CHARGE_ERROR:
		return "error";
	}
	return "error";
}

enum tg_charge_outcome
tg_gateway_charge(struct tg_gateway *gw, const char *request_id, const char *method,
                  const char *token, tg_money_t amount, char *ref)
{
	TG_CHECK_OBJ_NOTNULL(gw, TG_GATEWAY_MAGIC);
	TG_ASSERT(amount > 0);
	ref[0] = '\0';
	return gw->ops->charge(gw->impl, request_id, method, token, amount, ref);
}

enum tg_charge_outcome
tg_gateway_refund(struct tg_gateway *gw, const char *refund_id, const char *charge_id,
                  tg_money_t amount, char *ref)
{
	TG_CHECK_OBJ_NOTNULL(gw, TG_GATEWAY_MAGIC);
	TG_ASSERT(amount > 0);
	ref[0] = '\0';
	return gw->ops->refund(gw->impl, refund_id, charge_id, amount, ref);
}

void
tg_gateway_close(struct tg_gateway *gw)
{
	if (gw == NULL || gw->magic != TG_GATEWAY_MAGIC)
		return;
	gw->ops->close(gw->impl);
	memset(gw, 0, sizeof(*gw));
}

/* ---- the simulator ---- */

struct sim {
	uint32_t magic;
	char host[256];
	uint16_t port;
	char password[256];
	redisContext *c; /* NULL while disconnected */
};

/* Drop the connection after an I/O error; the next charge reconnects. */
static void
sim_drop(struct sim *s, const char *what)
{
	tg_log("gateway sim: redis %s:%u: %s", s->host, (unsigned)s->port, what);
	redisFree(s->c);
	s->c = NULL;
}

/* Connected (and authenticated), or false after logging why not. */
static bool
sim_connect(struct sim *s)
{
	struct timeval tv = {.tv_sec = SIM_TIMEOUT_MS / 1000,
	                     .tv_usec = (SIM_TIMEOUT_MS % 1000) * 1000};

	if (s->c != NULL)
		return true;
	s->c = redisConnectWithTimeout(s->host, s->port, tv);
	if (s->c == NULL || s->c->err || redisSetTimeout(s->c, tv) != REDIS_OK) {
		if (s->c != NULL)
			sim_drop(s, s->c->errstr);
		return false;
	}
	if (s->password[0] != '\0') {
		redisReply *r = redisCommand(s->c, "AUTH %s", s->password);
		bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
		if (r != NULL)
			freeReplyObject(r);
		if (!ok) {
			sim_drop(s, "AUTH refused");
			return false;
		}
	}
	return true;
}

/*
 * One command; the reply (never NULL, never an error reply) or NULL after
 * logging and, for an I/O error, dropping the connection.
 */
static redisReply *
sim_cmd(struct sim *s, const char *fmt, ...)
{
	va_list ap;
	redisReply *r;

	va_start(ap, fmt);
	r = redisvCommand(s->c, fmt, ap);
	va_end(ap);
	if (r == NULL) {
		sim_drop(s, s->c->errstr);
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		tg_log("gateway sim: redis said: %s", r->str);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/* What a token's behaviour word asks for; *fails is N of intermittent:N. */
enum behaviour { B_APPROVE, B_DECLINE, B_EXPIRED, B_TIMEOUT, B_ERROR, B_INTERMITTENT, B_BAD };

static enum behaviour
behaviour_parse(const char *w, long *fails)
{
	static const struct {
		const char *word;
		enum behaviour b;
	} words[] = {{"approve", B_APPROVE},
	             {"decline", B_DECLINE},
	             {"expired", B_EXPIRED},
	             {"timeout", B_TIMEOUT},
	             {"error", B_ERROR}};
	static const char im[] = "intermittent";

	*fails = 1;
	for (size_t i = 0; i < TG_ARRAY_LEN(words); i++)
		if (strcmp(w, words[i].word) == 0)
			return words[i].b;
	if (strncmp(w, im, sizeof(im) - 1) != 0)
		return B_BAD;
	w += sizeof(im) - 1;
	if (*w == '\0')
		return B_INTERMITTENT;
	if (*w != ':' || w[1] < '0' || w[1] > '9')
		return B_BAD;
	char *end;
	errno = 0;
	*fails = strtol(w + 1, &end, 10);
	if (*end != '\0' || errno != 0 || *fails > SIM_INTERMITTENT_MAX)
		return B_BAD;
	return B_INTERMITTENT;
}

/* Record the approved charge (once) and answer APPROVED; ERROR when Redis fails. */
static enum tg_charge_outcome
sim_approve(struct sim *s, const char *request_id, const char *token, tg_money_t amount, char *ref)
{
	char money[TG_MONEY_STR_MAX], rec[TG_MONEY_STR_MAX + 300];

	tg_money_format(amount, money);
	if ((size_t)snprintf(rec, sizeof(rec), "%s %s %lld", money, token, (long long)time(NULL)) >=
	    sizeof(rec))
		return TG_CHARGE_ERROR;
	/* HSETNX: a second approval of the same id (another worker) records nothing new. */
	redisReply *r = sim_cmd(s, "HSETNX " SIM_CHARGES " %s %s", request_id, rec);
	if (r == NULL)
		return TG_CHARGE_ERROR;
	freeReplyObject(r);
	snprintf(ref, TG_GATEWAY_REF_MAX, "sim:%s", request_id);
	return TG_CHARGE_APPROVED;
}

static enum tg_charge_outcome
sim_charge(void *impl, const char *request_id, const char *method, const char *token,
           tg_money_t amount, char *ref)
{
	struct sim *s = impl;
	redisReply *r;
	long fails = 1;

	TG_CHECK_OBJ_NOTNULL(s, SIM_MAGIC);
	(void)method; /* the simulator treats cards and PayPal alike */
	if (!sim_connect(s))
		return TG_CHARGE_ERROR;

	/* Every call is counted, so a test can see how often the worker asked. */
	r = sim_cmd(s, "HINCRBY " SIM_ATTEMPTS " %s 1", request_id);
	if (r == NULL)
		return TG_CHARGE_ERROR;
	long long calls = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
	freeReplyObject(r);

	/* Idempotent on the request id: already charged means approved, and nothing more. */
	r = sim_cmd(s, "HEXISTS " SIM_CHARGES " %s", request_id);
	if (r == NULL)
		return TG_CHARGE_ERROR;
	bool charged = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
	freeReplyObject(r);
	if (charged) {
		snprintf(ref, TG_GATEWAY_REF_MAX, "sim:%s", request_id);
		return TG_CHARGE_APPROVED;
	}

	r = sim_cmd(s, "HGET " SIM_TOKENS " %s", token);
	if (r == NULL)
		return TG_CHARGE_ERROR;
	enum behaviour b =
	    r->type == REDIS_REPLY_STRING ? behaviour_parse(r->str, &fails) : B_APPROVE;
	if (b == B_BAD)
		tg_log("gateway sim: token %s has an unknown behaviour \"%s\": answering error",
		       token, r->str);
	freeReplyObject(r);

	switch (b) {
	case B_APPROVE:
		return sim_approve(s, request_id, token, amount, ref);
	case B_DECLINE:
		return TG_CHARGE_DECLINED;
	case B_EXPIRED:
		return TG_CHARGE_EXPIRED;
	case B_TIMEOUT:
		return TG_CHARGE_TIMEOUT;
	case B_ERROR:
	case B_BAD:
		return TG_CHARGE_ERROR;
	case B_INTERMITTENT:
		return calls > fails ? sim_approve(s, request_id, token, amount, ref)
		                     : TG_CHARGE_TIMEOUT;
	}
	return TG_CHARGE_ERROR;
}

/*
 * One refund, atomically: 1 recorded now or before (same refund id), 0 the
 * charge is unknown or would be over-refunded.  KEYS: refunds, refunded,
 * charges; ARGV: refund id, charge id, amount (micro-units), the record.
 */
static const char sim_refund_lua[] =
    "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 1 end "
    "local c = redis.call('HGET', KEYS[3], ARGV[2]) "
    "if not c then return 0 end "
    "local whole, frac = string.match(c, '^(%d+)%.?(%d*) ') "
    "if not whole then return 0 end "
    "frac = string.sub(frac .. '000000', 1, 6) "
    "local charged = tonumber(whole) * 1000000 + tonumber(frac) "
    "local done = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') "
    "if done + tonumber(ARGV[3]) > charged then return 0 end "
    "redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3]) "
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) "
    "return 1";

static enum tg_charge_outcome
sim_refund(void *impl, const char *refund_id, const char *charge_id, tg_money_t amount, char *ref)
{
	struct sim *s = impl;
	char money[TG_MONEY_STR_MAX], micro[24], rec[TG_MONEY_STR_MAX + 300];

	TG_CHECK_OBJ_NOTNULL(s, SIM_MAGIC);
	if (!sim_connect(s))
		return TG_CHARGE_ERROR;
	tg_money_format(amount, money);
	snprintf(micro, sizeof(micro), "%lld", (long long)amount);
	if ((size_t)snprintf(rec, sizeof(rec), "%s %s %lld", money, charge_id,
	                     (long long)time(NULL)) >= sizeof(rec))
		return TG_CHARGE_ERROR;
	redisReply *r = sim_cmd(s, "EVAL %s 3 %s %s %s %s %s %s %s", sim_refund_lua, SIM_REFUNDS,
	                        SIM_REFUNDED, SIM_CHARGES, refund_id, charge_id, micro, rec);
	if (r == NULL)
		return TG_CHARGE_ERROR;
	bool ok = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
	freeReplyObject(r);
	if (!ok)
		return TG_CHARGE_DECLINED;
	snprintf(ref, TG_GATEWAY_REF_MAX, "sim:%s", refund_id);
	return TG_CHARGE_APPROVED;
}

static void
sim_close(void *impl)
{
	struct sim *s = impl;

	TG_CHECK_OBJ_NOTNULL(s, SIM_MAGIC);
	if (s->c != NULL)
		redisFree(s->c);
	s->magic = 0;
	free(s);
}

static const struct tg_gateway_ops sim_ops = {
    .name = "sim",
    .charge = sim_charge,
    .refund = sim_refund,
    .close = sim_close,
};

int
tg_gateway_sim_open(struct tg_gateway *gw, const char *host, uint16_t port, const char *password)
{
	struct sim *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return -ENOMEM;
	s->magic = SIM_MAGIC;
	snprintf(s->host, sizeof(s->host), "%s", host);
	s->port = port;
	snprintf(s->password, sizeof(s->password), "%s", password ? password : "");
	gw->magic = TG_GATEWAY_MAGIC;
	gw->ops = &sim_ops;
	gw->impl = s;
	return 0;
}
