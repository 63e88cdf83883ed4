/*
 * cmd.c - the commands of the wire contract (docs/PROTOCOL.md).
 *
 * Owns argument checking and reply formatting; every decision about money
 * is the engine's.  A request is checked whole before the engine sees it, so
 * a malformed one changes nothing.  Runs on worker threads inside a batch:
 * no allocation, no lock, no syscall, except the control commands (reload),
 * which say so.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tg_assert.h"
#include "tg_clock.h"
#include "tg_log.h"
#include "tg_names.h"
#include "tg_idstore.h"
#include "tg_refill.h"
#include "tg_server.h"

struct ctx {
	struct tg_server *srv;
	struct tg_worker *w;
	struct tg_session *s;
	const struct tg_req *req;
	struct tg_out *out;
};

typedef int (*cmd_fn)(struct ctx *c);

/* struct command's flags */
#define F_WRITE   0x01u /* moves money: READONLY on a replica, refused inside MULTI */
#define F_NOQUEUE 0x02u /* cannot be queued by MULTI (it leaves request/reply, or AUTHs) */
#define F_TXN     0x04u /* MULTI, EXEC, DISCARD: run at once, even inside MULTI */

struct command {
	const char *name;
	uint8_t kind;    /* enum tg_hist_kind: which latency histogram */
	int8_t min_args; /* arguments after the name */
	int8_t max_args; /* -1: any */
	bool noauth;     /* allowed before AUTH */
	cmd_fn fn;
	uint8_t flags; /* F_* */
};

static bool is_admin(struct ctx *c, const char *what);
static int config_rewrite(struct ctx *c);

/* ---- replies ---- */

static int
reply_result(struct ctx *c, enum tg_result r)
{
	tg_out_error(c->out, tg_result_name(r), tg_result_text(r));
	return TG_NET_CONTINUE;
}

static int reply_err(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
reply_err(struct ctx *c, const char *fmt, ...)
{
	char msg[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	tg_count(c->w, TG_C_command_errors, 1);
	tg_out_error(c->out, "ERR", msg);
	return TG_NET_CONTINUE;
}

/* Print at most 40 bytes of an argument, non-printables as '?'. */
static const char *
show(const struct tg_arg *a, char buf[48])
{
	return tg_log_show(buf, 40, a->p, a->len);
}

/* ---- arguments ---- */

static bool
arg_acct(struct ctx *c, unsigned i, uint64_t *acct)
{
	char b[48];
	if (tg_arg_u64(&c->req->argv[i], acct) && *acct != UINT64_MAX)
		return true;
	reply_err(c, "invalid account id '%s'", show(&c->req->argv[i], b));
	return false;
}

static bool
arg_dest(struct ctx *c, unsigned i)
{
	const struct tg_arg *a = &c->req->argv[i];
	char b[48];
	bool ok = a->len >= 1 && a->len <= TG_DEST_MAX;
	for (uint32_t k = 0; ok && k < a->len; k++)
		ok = a->p[k] >= '0' && a->p[k] <= '9';
	if (!ok)
		reply_err(c, "invalid destination '%s' (1 to %d digits)", show(a, b), TG_DEST_MAX);
	return ok;
}

static bool
arg_seconds(struct ctx *c, unsigned i, const char *what, uint32_t *out)
{
	uint64_t v;
	char b[48];
	if (tg_arg_u64(&c->req->argv[i], &v) && v <= TG_DURATION_MAX) {
		*out = (uint32_t)v;
		return true;
	}
	reply_err(c, "invalid %s '%s' (0 to %u seconds)", what, show(&c->req->argv[i], b),
	          TG_DURATION_MAX);
	return false;
}

static bool
arg_id(struct ctx *c, unsigned i, const char *what, struct tg_id *id)
{
	const struct tg_arg *a = &c->req->argv[i];
	if (a->len >= 1 && a->len <= TG_CALLID_MAX) {
		id->p = a->p;
		id->len = a->len;
		return true;
	}
	reply_err(c, "invalid %s (1 to %d bytes)", what, TG_CALLID_MAX);
	return false;
}

static bool
arg_money(struct ctx *c, unsigned i, const char *what, tg_money_t *out)
{
	const struct tg_arg *a = &c->req->argv[i];
	char b[48];
	int rc = tg_money_parse(a->p, a->len, out);
	if (rc == 0)
		return true;
	reply_err(c, "invalid %s '%s' (%s)", what, show(a, b),
	          rc == -ERANGE ? "out of range" : "a decimal with at most 6 decimals");
	return false;
}

/* ---- call control ---- */

/*
 * The optional last argument WITHREASON (argument i): true with *with set,
 * false (an error sent) for anything else there.
 */
static bool
arg_withreason(struct ctx *c, unsigned i, bool *with)
{
	char b[48];

	*with = false;
	if (c->req->argc <= i)
		return true;
	if (tg_arg_is(&c->req->argv[i], "WITHREASON")) {
		*with = true;
		return true;
	}
	reply_err(c, "unknown option '%s' (WITHREASON)", show(&c->req->argv[i], b));
	return false;
}

/* A grant: the integer, or with WITHREASON [seconds, reason]. */
static void
reply_grant(struct ctx *c, uint32_t granted, bool with, enum tg_grant_why why)
{
	if (!with) {
		tg_out_int(c->out, granted);
		return;
	}
	tg_out_array(c->out, 2);
	tg_out_int(c->out, granted);
	tg_out_cstr(c->out, tg_grant_why_name(why));
}

static int
cmd_call_auth(struct ctx *c)
{
	uint64_t acct;
	struct tg_id call;
	uint32_t granted;
	enum tg_grant_why why;
	bool with;

	if (!arg_acct(c, 1, &acct) || !arg_dest(c, 2) || !arg_id(c, 3, "call id", &call) ||
	    !arg_withreason(c, 4, &with))
		return TG_NET_CONTINUE;
	const struct tg_arg *d = &c->req->argv[2];
	enum tg_result r = tg_call_auth_why(c->w, acct, d->p, d->len, call, &granted, &why);
	if (r != TG_OK)
		return reply_result(c, r);
	reply_grant(c, granted, with, why);
	return TG_NET_CONTINUE;
}

static int
cmd_call_update(struct ctx *c)
{
	uint64_t acct;
	struct tg_id call;
	uint32_t elapsed, granted;
	enum tg_grant_why why;
	bool with;

	if (!arg_acct(c, 1, &acct) || !arg_id(c, 2, "call id", &call) ||
	    !arg_seconds(c, 3, "elapsed", &elapsed) || !arg_withreason(c, 4, &with))
		return TG_NET_CONTINUE;
	enum tg_result r = tg_call_update_why(c->w, acct, call, elapsed, &granted, &why);
	if (r != TG_OK)
		return reply_result(c, r);
	reply_grant(c, granted, with, why);
	return TG_NET_CONTINUE;
}

static int
cmd_call_end(struct ctx *c)
{
	uint64_t acct;
	struct tg_id call;
	uint32_t duration;
	tg_money_t charge;

	if (!arg_acct(c, 1, &acct) || !arg_id(c, 2, "call id", &call) ||
	    !arg_seconds(c, 3, "duration", &duration))
		return TG_NET_CONTINUE;
	enum tg_result r = tg_call_end(c->w, acct, call, duration, &charge);
	if (r == TG_EXPIRED) {
		/* Says what was charged, so the switch's log needs no CDR to bill it. */
		char amt[TG_MONEY_STR_MAX], msg[96];
		tg_money_format(charge, amt);
		snprintf(msg, sizeof(msg), "call settled by expiry at its grant: charged %s", amt);
		tg_out_error(c->out, tg_result_name(r), msg);
		return TG_NET_CONTINUE;
	}
	if (r != TG_OK)
		return reply_result(c, r);
	tg_out_money(c->out, charge);
	return TG_NET_CONTINUE;
}

static int
cmd_cdr(struct ctx *c)
{
	uint64_t acct;
	struct tg_id call;
	uint32_t duration;
	tg_money_t charge;

	if (!arg_acct(c, 1, &acct) || !arg_dest(c, 2) ||
	    !arg_seconds(c, 3, "duration", &duration) || !arg_id(c, 4, "call id", &call))
		return TG_NET_CONTINUE;
	/*
	 * AT <unix-seconds>: when the call started.  A CDR older than the horizon
	 * (ids-window, or shorter where ids were forgotten before their time:
	 * tg_idstore_forgot) is refused with STALE and not remembered: its id
	 * may have been forgotten, so charging it could charge twice
	 * (docs/PROTOCOL.md).
	 */
	if (c->req->argc != 5) {
		uint64_t at;
		char b[48];
		if (c->req->argc != 7 || !tg_arg_is(&c->req->argv[5], "AT"))
			return reply_err(c, "syntax: CDR <acct> <dest> <duration> <callid> [AT "
			                    "<unix-seconds>]");
		if (!tg_arg_u64(&c->req->argv[6], &at) || at > (uint64_t)c->w->now_s + 86400)
			return reply_err(c, "invalid AT '%s' (Unix seconds, not in the future)",
			                 show(&c->req->argv[6], b));
		if (at + c->w->e->cfg.ids_window < c->w->now_s ||
		    at < tg_idstore_forgot(c->w->e->idstore)) {
			tg_count(c->w, TG_C_cdr_stale, 1);
			return reply_result(c, TG_STALE);
		}
	}
	const struct tg_arg *d = &c->req->argv[2];
	enum tg_result r = tg_cdr(c->w, acct, d->p, d->len, duration, call, &charge);
	if (r != TG_OK)
		return reply_result(c, r);
	tg_out_money(c->out, charge);
	return TG_NET_CONTINUE;
}

static int
cmd_acct_credit(struct ctx *c)
{
	uint64_t acct;
	struct tg_id tx;
	tg_money_t amount, balance;

	if (!arg_acct(c, 1, &acct) || !arg_money(c, 2, "amount", &amount) ||
	    !arg_id(c, 3, "txid", &tx))
		return TG_NET_CONTINUE;
	if (amount <= 0)
		return reply_err(c, "credit amount must be positive");
	enum tg_result r = tg_credit(c->w, acct, amount, tx, &balance);
	if (r != TG_OK)
		return reply_result(c, r);
	tg_out_money(c->out, balance);
	return TG_NET_CONTINUE;
}

static int
cmd_acct_refill_failed(struct ctx *c)
{
	uint64_t acct;
	struct tg_id req;

	if (!arg_acct(c, 1, &acct) || !arg_id(c, 2, "request id", &req))
		return TG_NET_CONTINUE;
	/*
	 * The reason: a malformed request is the system's fault, not the
	 * customer's card, and does not count towards a suspension.
	 */
	bool counts = c->req->argc < 4 || !tg_arg_is(&c->req->argv[3], "malformed");
	enum tg_result r = tg_refill_failed(c->w, acct, req, counts);
	if (r == TG_ERR)
		return reply_err(c, "not a refill request id of account %llu",
		                 (unsigned long long)acct);
	if (r != TG_OK)
		return reply_result(c, r);
	tg_out_status(c->out, "OK");
	return TG_NET_CONTINUE;
}

/*
 * ACCT.REFILL.CLAIM <acct> <request id> [LEASE <seconds>]: the worker's last
 * check before it charges a card; with LEASE, before it schedules another
 * attempt that many seconds ahead.  +OK, or -VOID <request>: <why>
 * (settled: no charge, no mail).
 */
static int
cmd_acct_refill_claim(struct ctx *c)
{
	uint64_t acct;
	struct tg_id req;
	const char *why;
	char msg[160];
	uint32_t lease = 0;

	if (!arg_acct(c, 1, &acct) || !arg_id(c, 2, "request id", &req))
		return TG_NET_CONTINUE;
	if (c->req->argc == 4 || (c->req->argc == 5 && !tg_arg_is(&c->req->argv[3], "LEASE")))
		return reply_err(c, "ACCT.REFILL.CLAIM takes LEASE <seconds> after the request id");
	if (c->req->argc == 5 && !arg_seconds(c, 4, "lease", &lease))
		return TG_NET_CONTINUE;
	enum tg_result r = tg_refill_claim(c->w, acct, req, lease, &why);
	if (r == TG_ERR)
		return reply_err(c, "not a refill request id of account %llu",
		                 (unsigned long long)acct);
	if (r == TG_VOID) {
		snprintf(msg, sizeof(msg), "%.*s may not be charged: %s",
		         (int)(req.len < 64 ? req.len : 64), req.p, why);
		tg_out_error(c->out, "VOID", msg);
		return TG_NET_CONTINUE;
	}
	if (r != TG_OK)
		return reply_result(c, r);
	tg_out_status(c->out, "OK");
	return TG_NET_CONTINUE;
}

/*
 * ACCT.REFILL.REARM <acct>: the payment method was updated.  The request
 * fired at once (bulk "refill:<acct>:<n>"), or nil when none was due (or
 * there is no such account yet).
 */
static int
cmd_acct_refill_rearm(struct ctx *c)
{
	uint64_t acct;
	uint32_t seq;
	char rid[TG_REFILL_ID_MAX];

	if (!arg_acct(c, 1, &acct))
		return TG_NET_CONTINUE;
	if (tg_engine_refusing(c->w, TG_JW_NEW))
		return reply_result(c, TG_NOSPACE);
	enum tg_result r = tg_refill_rearm(c->w, acct, &seq);
	/* A profile may be provisioned before its account: nothing to re-arm yet. */
	if (r != TG_OK && r != TG_NOACCOUNT)
		return reply_result(c, r);
	if (seq == 0) {
		tg_out_nil(c->out);
		return TG_NET_CONTINUE;
	}
	tg_out_bulk(c->out, rid, tg_refill_id(acct, seq, rid));
	return TG_NET_CONTINUE;
}

/* ---- accounts ---- */

_Static_assert(TG_ACCT_STATE__COUNT == 3 && TG_REFILL_MODE__COUNT == 3,
               "ACCT.SET's STATE and REFILL messages name every state and mode");

/* The value of n whose name (tg_names.h) a is, in any case; or -1. */
static int
pick(const struct tg_arg *a, const char *(*name)(unsigned), unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (tg_arg_is(a, name(i)))
			return (int)i;
	return -1;
}

/*
 * Register a plan name never seen before.  The registry takes one writer at a
 * time and reloads register names too, so this takes the reload lock; a
 * reload holding it waits for every worker to leave the plans, so leave them
 * first, as RATES.RELOAD does.  Not the hot path: only a new name gets here.
 */
static int
register_plan(struct ctx *c, const struct tg_arg *p)
{
	tg_worker_exit(c->w);
	pthread_mutex_lock(&c->srv->reload_lock);
	int id = tg_plan_registry_id(&c->srv->table.plans, p->p, p->len, true);
	pthread_mutex_unlock(&c->srv->reload_lock);
	tg_worker_enter(c->w);
	return id;
}

static int
cmd_acct_set(struct ctx *c)
{
	const struct tg_req *q = c->req;
	struct tg_table *t = &c->srv->table;
	const struct tg_arg *new_plan = NULL;
	struct tg_acct_settings s = {0};
	struct tg_acct_view v;
	tg_money_t balance = 0;
	bool set_balance = false, limit_given = false, threshold_given = false;
	struct tg_limits_set ls = {0};
	bool limits_given = false;
	int plan = -1;
	uint64_t acct;
	char b[48];

	if (!arg_acct(c, 1, &acct))
		return TG_NET_CONTINUE;
	struct tg_acct *a = tg_table_find(t, acct);
	if (a != NULL) {
		uint64_t day_used;
		tg_acct_read(a, &v);
		tg_acct_read_limits(t, a, &ls, &day_used);
		s = (struct tg_acct_settings){.plan = v.plan,
		                              .threshold = v.threshold,
		                              .refill_amount = v.refill_amount,
		                              .credit_limit = v.credit_limit,
		                              .state = v.state,
		                              .refill_mode = v.refill_mode,
		                              .flags = v.flags};
	}
	/* Parse every option before anything changes. */
	for (unsigned i = 2; i < q->argc; i++) {
		const struct tg_arg *k = &q->argv[i];
		bool last = i + 1 >= q->argc;
		if (tg_arg_is(k, "BALANCE") && !last) {
			if (!arg_money(c, ++i, "balance", &balance))
				return TG_NET_CONTINUE;
			set_balance = true;
		} else if (tg_arg_is(k, "PLAN") && !last) {
			const struct tg_arg *p = &q->argv[++i];
			/* A new name is registered only once the whole request is good. */
			plan = tg_plan_registry_id(&t->plans, p->p, p->len, false);
			new_plan = plan == -ENOENT ? p : NULL;
			if (plan < 0 && plan != -ENOENT)
				return reply_err(c, "invalid plan name '%s'", show(p, b));
			if (plan >= 0)
				s.plan = (uint32_t)plan;
		} else if (tg_arg_is(k, "STATE") && !last) {
			int st = pick(&q->argv[++i], tg_acct_state_name, TG_ACCT_STATE__COUNT);
			if (st < 0)
				return reply_err(c, "STATE must be active, suspended or closed");
			s.state = (uint8_t)st;
			/* The operator's word: a suspension they set is theirs, never lifted by a
			 * payment. */
			s.flags &= (uint8_t)~TG_ACCT_UNPAID;
		} else if (tg_arg_is(k, "THRESHOLD") && !last) {
			if (!arg_money(c, ++i, "threshold", &s.threshold))
				return TG_NET_CONTINUE;
			threshold_given = true;
		} else if (tg_arg_is(k, "REFILL") && !last) {
			int mode = pick(&q->argv[++i], tg_refill_mode_name, TG_REFILL_MODE__COUNT);
			if (mode < 0)
				return reply_err(
				    c, "REFILL must be ADD <amount>, TOPUP <level> or OFF");
			if (mode != TG_REFILL_OFF) {
				if (i + 1 >= q->argc)
					return reply_err(c, "REFILL %s needs an amount",
					                 tg_refill_mode_name((unsigned)mode));
				if (!arg_money(c, ++i, "refill amount", &s.refill_amount))
					return TG_NET_CONTINUE;
			}
			s.refill_mode = (uint8_t)mode;
		} else if (tg_arg_is(k, "KIND") && !last) {
			const struct tg_arg *p = &q->argv[++i];
			if (tg_arg_is(p, "postpaid")) {
				s.flags |= TG_ACCT_POSTPAID;
				s.threshold = 0;
			} else if (tg_arg_is(p, "prepaid")) {
				s.flags &= (uint8_t)~TG_ACCT_POSTPAID;
				s.credit_limit = 0;
			} else {
				return reply_err(c, "KIND must be prepaid or postpaid");
			}
		} else if (tg_arg_is(k, "LIMIT") && !last) {
			if (!arg_money(c, ++i, "credit limit", &s.credit_limit))
				return TG_NET_CONTINUE;
			limit_given = true;
		} else if (tg_arg_is(k, "MAXCALLS") && !last) {
			uint64_t n;
			if (!tg_arg_u64(&q->argv[++i], &n) || n > TG_MAXCALLS_MAX)
				return reply_err(c,
				                 "invalid MAXCALLS '%s' (0 to %u calls; 0: none)",
				                 show(&q->argv[i], b), (unsigned)TG_MAXCALLS_MAX);
			ls.max_calls = (uint32_t)n;
			limits_given = true;
		} else if ((tg_arg_is(k, "CALLCAP") || tg_arg_is(k, "DAILYCAP") ||
		            tg_arg_is(k, "LOW")) &&
		           !last) {
			tg_money_t v1;
			char what[16];
			snprintf(what, sizeof(what), "%.*s", (int)k->len, k->p);
			if (!arg_money(c, ++i, what, &v1))
				return TG_NET_CONTINUE;
			if (v1 < 0)
				return reply_err(c, "%s must be 0 (none) or more", what);
			if (tg_arg_is(k, "DAILYCAP") && v1 > TG_DAY_USED_MAX)
				return reply_err(c, "DAILYCAP at most 281474976.710655");
			if (tg_arg_is(k, "CALLCAP"))
				ls.call_cap = v1;
			else if (tg_arg_is(k, "DAILYCAP"))
				ls.daily_cap = v1;
			else
				ls.low = v1;
			limits_given = true;
		} else if (tg_arg_is(k, "PAYMENT") && !last) {
			const struct tg_arg *p = &q->argv[++i];
			if (tg_arg_is(p, "on"))
				s.flags |= TG_ACCT_PAYMENT;
			else if (tg_arg_is(p, "off"))
				s.flags &= (uint8_t)~TG_ACCT_PAYMENT;
			else
				return reply_err(c, "PAYMENT must be on or off");
		} else {
			return reply_err(c, "unknown or incomplete ACCT.SET option '%s'",
			                 show(k, b));
		}
	}
	if (limit_given && !(s.flags & TG_ACCT_POSTPAID))
		return reply_err(c,
		                 "LIMIT is a postpaid account's credit limit: add KIND postpaid");
	if ((s.flags & TG_ACCT_POSTPAID) && threshold_given)
		return reply_err(c, "a postpaid account has no refill threshold: it is billed in "
		                    "arrears");
	if (s.refill_mode != TG_REFILL_OFF && !(s.flags & TG_ACCT_PAYMENT))
		return reply_result(c, TG_NOPAYMENT);
	char why[160];
	if (!tg_acct_settings_check(&s, why, sizeof(why)))
		return reply_err(c, "%s", why);
	if (tg_engine_refusing(c->w, TG_JW_NEW))
		return reply_result(c, TG_NOSPACE);
	if (new_plan != NULL) {
		plan = register_plan(c, new_plan);
		if (plan == -ENOSPC) {
			char msg[160];
			snprintf(msg, sizeof(msg),
			         "plan-name registry full: all %u names are used by accounts or "
			         "loaded plans (unused names are reclaimed at most once a second)",
			         (unsigned)TG_PLANS_MAX);
			tg_out_error(c->out, tg_result_name(TG_FULL), msg);
			return TG_NET_CONTINUE;
		}
		if (plan < 0)
			return reply_err(c, "invalid plan name '%s'", show(new_plan, b));
		s.plan = (uint32_t)plan;
	}
	if (a == NULL) {
		bool created;
		enum tg_result r = tg_table_insert(t, acct, &a, &created);
		if (r != TG_OK)
			return reply_result(c, r);
	}
	/* The balance first, then the settings: a new account must not fire a refill at 0. */
	if (set_balance)
		tg_engine_set_balance(c->w, a, balance);
	enum tg_result r = tg_engine_configure(c->w, a, &s);
	if (r != TG_OK)
		return reply_result(c, r);
	if (limits_given)
		tg_engine_set_limits(c->w, a, &ls);
	tg_out_status(c->out, "OK");
	return TG_NET_CONTINUE;
}

static void
pair_money(struct tg_out *o, const char *k, tg_money_t v)
{
	tg_out_cstr(o, k);
	tg_out_money(o, v);
}

static void
pair_str(struct tg_out *o, const char *k, const char *v)
{
	tg_out_cstr(o, k);
	tg_out_cstr(o, v);
}

static void
pair_int(struct tg_out *o, const char *k, int64_t v)
{
	tg_out_cstr(o, k);
	tg_out_int(o, v);
}

static int
cmd_acct_get(struct ctx *c)
{
	struct tg_table *t = &c->srv->table;
	struct tg_acct_view v;
	uint64_t acct;
	char name[40], rid[TG_REFILL_ID_MAX];

	if (!arg_acct(c, 1, &acct))
		return TG_NET_CONTINUE;
	struct tg_acct *a = tg_table_find(t, acct);
	if (a == NULL)
		return reply_result(c, TG_NOACCOUNT);
	tg_acct_read(a, &v);
	const char *plan = tg_plan_registry_name(&t->plans, v.plan);
	const struct tg_usage *u = tg_table_usage(t, a);

	if (v.refill_inflight)
		tg_refill_id(acct, v.refill_seq, rid);
	else
		rid[0] = '\0';
	struct tg_limits_set ls;
	uint64_t day_used;
	tg_acct_read_limits(t, a, &ls, &day_used);
	uint16_t today = tg_utc_day(c->w->now_s);
	tg_out_array(c->out, 2 * (22 + TG_CATEGORY__COUNT));
	pair_money(c->out, "balance", v.balance);
	pair_money(c->out, "available", v.available);
	pair_money(c->out, "reserved", v.reserved);
	pair_str(c->out, "state", tg_acct_state_name(v.state < TG_ACCT_STATE__COUNT ? v.state : 0));
	pair_str(c->out, "plan", plan ? plan : "");
	pair_money(c->out, "threshold", v.threshold);
	pair_str(c->out, "refill",
	         tg_refill_mode_name(v.refill_mode < TG_REFILL_MODE__COUNT ? v.refill_mode : 0));
	pair_money(c->out, "refill_amount", v.refill_amount);
	pair_str(c->out, "payment", (v.flags & TG_ACCT_PAYMENT) ? "on" : "off");
	pair_int(c->out, "refill_pending", v.refill_inflight);
	pair_str(c->out, "refill_request", rid);
	pair_int(c->out, "calls", v.calls);
	for (unsigned k = 0; k < TG_CATEGORY__COUNT; k++) {
		snprintf(name, sizeof(name), "usage_%s", tg_category_name(k));
		pair_money(c->out, name, (tg_money_t)tg_load_64((const uint64_t *)&u->charged[k]));
	}
	/*
	 * Fields added later go last: switch configurations read ACCT.GET's
	 * reply by position (ndb_redis value[n]), and those positions stay.
	 * Why it is suspended: for non-payment (a payment lifts it) or by an operator.
	 */
	pair_str(c->out, "suspended",
	         v.state != TG_STATE_SUSPENDED ? ""
	         : (v.flags & TG_ACCT_UNPAID)  ? "payment"
	                                       : "operator");
	pair_int(c->out, "suspended_since", (v.flags & TG_ACCT_UNPAID) ? v.unpaid_since : 0);
	pair_int(c->out, "failed_refills", v.failures);
	pair_str(c->out, "kind", (v.flags & TG_ACCT_POSTPAID) ? "postpaid" : "prepaid");
	pair_money(c->out, "credit_limit", v.credit_limit);
	/* The fraud limits (docs/FRAUD.md): 0 is none. */
	pair_int(c->out, "maxcalls", ls.max_calls);
	pair_money(c->out, "callcap", ls.call_cap);
	pair_money(c->out, "dailycap", ls.daily_cap);
	pair_money(c->out, "low", ls.low);
	pair_money(c->out, "daily_spent",
	           ls.daily_cap != 0 && TG_DAY_OF(day_used) == today ? TG_DAY_USED(day_used) : 0);
	return TG_NET_CONTINUE;
}

static int
cmd_rate(struct ctx *c)
{
	const struct tg_arg *p = &c->req->argv[1], *d = &c->req->argv[2];
	const struct tg_rate *r;
	tg_money_t charge;
	uint32_t duration;

	if (!arg_dest(c, 2) || !arg_seconds(c, 3, "duration", &duration))
		return TG_NET_CONTINUE;
	enum tg_result res = tg_quote(c->w, p->p, p->len, d->p, d->len, duration, &charge, &r);
	if (res != TG_OK)
		return reply_result(c, res);
	tg_out_array(c->out, 8);
	pair_money(c->out, "charge", charge);
	pair_str(c->out, "category", tg_category_name(r->category));
	pair_str(c->out, "prefix", r->prefix);
	pair_int(c->out, "billed", tg_rate_billed(r, duration));
	return TG_NET_CONTINUE;
}

/* ---- control ---- */

static int
cmd_rates_reload(struct ctx *c)
{
	char msg[1024];
	/* Reloading waits for every reader to leave the old plans: leave ours first. */
	tg_worker_exit(c->w);
	int rc = tg_server_reload(c->srv, msg, sizeof(msg));
	tg_worker_enter(c->w);
	if (rc != 0) {
		/*
		 * One line on the wire: "rate plans not reloaded (2 problems): a:3:
		 * why; a:7: why".  The heading ends with ':', the problems are
		 * separated by "; " (tollctl splits them there again).
		 */
		char line[sizeof(msg) + 64];
		size_t n = 0;
		for (const char *p = msg; *p && n + 3 < sizeof(line); p++) {
			if (*p != '\n') {
				line[n++] = *p;
				continue;
			}
			if (n > 0 && line[n - 1] != ':')
				line[n++] = ';';
			line[n++] = ' ';
		}
		line[n] = '\0';
		tg_out_error(c->out, rc == -ENOSPC ? tg_result_name(TG_FULL) : "ERR", line);
		return TG_NET_CONTINUE;
	}
	tg_out_status(c->out, "OK");
	return TG_NET_CONTINUE;
}

static int
cmd_ping(struct ctx *c)
{
	if (c->req->argc == 2)
		tg_out_bulk(c->out, c->req->argv[1].p, c->req->argv[1].len);
	else
		tg_out_status(c->out, "PONG");
	return TG_NET_CONTINUE;
}

/*
 * AUTH <password> (the user "default", that is requirepass), or AUTH <user>
 * <password> as Redis 6 clients send it.  A failure leaves the connection as
 * it was (authenticated or not); auth-max-failures of them close it, and
 * auth-addr-failures from one address within auth-lockout seconds lock the
 * address out of AUTH for auth-lockout seconds (tg_auth_check).
 */
static int
cmd_auth(struct ctx *c)
{
	struct tg_server *srv = c->srv;
	const struct tg_arg *p = &c->req->argv[c->req->argc - 1];
	const struct tg_arg *u = c->req->argc == 3 ? &c->req->argv[1] : NULL;
	const struct tg_user *user;
	uint32_t retry_s;
	bool locked_now;
	char msg[128];

	if (!srv->auth.required) {
		tg_out_error(c->out, "ERR",
		             "AUTH <password> called without any password configured");
		return TG_NET_CONTINUE;
	}
	enum tg_auth_outcome r =
	    tg_auth_check(&srv->auth, c->s->peer_known ? c->s->peer : NULL, u ? u->p : NULL,
	                  u ? u->len : 0, p->p, p->len, &user, &retry_s, &locked_now);
	if (r == TG_AUTH_OK) {
		c->s->authed = true;
		c->s->role = user->role;
		c->s->user = user;
		tg_out_status(c->out, "OK");
		return TG_NET_CONTINUE;
	}
	if (r == TG_AUTH_LOCKED) {
		tg_count(c->w, TG_C_auth_locked_refused, 1);
		snprintf(msg, sizeof(msg),
		         "too many failed AUTH attempts from this address: try again in %u s",
		         (unsigned)retry_s);
	} else {
		tg_count(c->w, TG_C_auth_failures, 1);
		snprintf(msg, sizeof(msg), "invalid username-password pair");
	}
	if (locked_now) {
		struct tg_net_peer peer;
		char addr[64];
		memcpy(peer.addr, c->s->peer, sizeof(peer.addr));
		tg_net_peer_str(&peer, addr, sizeof(addr));
		tg_count(c->w, TG_C_auth_lockouts, 1);
		tg_log("AUTH: %u failures from %s within %u s: locked out for %u s",
		       (unsigned)srv->cfg.auth_addr_failures, addr, (unsigned)srv->cfg.auth_lockout,
		       (unsigned)srv->cfg.auth_lockout);
	}
	tg_out_error(c->out, "WRONGPASS", msg);
	if (c->s->auth_failures < UINT8_MAX)
		c->s->auth_failures++;
	if (srv->cfg.auth_max_failures && c->s->auth_failures >= srv->cfg.auth_max_failures) {
		/* One connection guessing on: close it, the guesser must pay a new handshake. */
		tg_count(c->w, TG_C_auth_failure_closes, 1);
		return TG_NET_CLOSE;
	}
	return TG_NET_CONTINUE;
}

/* redis-cli --pipe ends its input with ECHO <magic> and waits for that reply. */
static int
cmd_echo(struct ctx *c)
{
	tg_out_bulk(c->out, c->req->argv[1].p, c->req->argv[1].len);
	return TG_NET_CONTINUE;
}

static int
cmd_quit(struct ctx *c)
{
	tg_out_status(c->out, "OK");
	return TG_NET_CLOSE;
}

static int
cmd_command(struct ctx *c)
{
	/* Enough for redis-cli: it asks for COMMAND DOCS to offer hints. */
	if (c->req->argc >= 2 && tg_arg_is(&c->req->argv[1], "COUNT"))
		tg_out_int(c->out, 0);
	else
		tg_out_array(c->out, 0);
	return TG_NET_CONTINUE;
}

static int
cmd_config(struct ctx *c)
{
	/* redis-benchmark asks CONFIG GET save / appendonly before it starts. */
	const struct tg_arg *sub = &c->req->argv[1];
	if (tg_arg_is(sub, "REWRITE") && c->req->argc == 2)
		return is_admin(c, "CONFIG REWRITE") ? config_rewrite(c) : TG_NET_CONTINUE;
	if (!tg_arg_is(sub, "GET") || c->req->argc != 3)
		return reply_err(c, "only CONFIG GET <parameter> and CONFIG REWRITE are supported");
	const struct tg_arg *k = &c->req->argv[2];
	if (tg_arg_is(k, "save") || tg_arg_is(k, "appendonly")) {
		tg_out_array(c->out, 2);
		tg_out_bulk(c->out, k->p, k->len);
		tg_out_cstr(c->out, tg_arg_is(k, "save") ? "" : "no");
	} else {
		tg_out_array(c->out, 0);
	}
	return TG_NET_CONTINUE;
}

/*
 * Kamailio's ndb_redis (and other Redis clients) send SELECT 0 on every
 * connect: there is one database, number 0.
 */
static int
cmd_select(struct ctx *c)
{
	const struct tg_arg *db = &c->req->argv[1];
	if (db->len != 1 || db->p[0] != '0')
		return reply_err(c, "DB index is out of range (tollgate has database 0 only)");
	tg_out_status(c->out, "OK");
	return TG_NET_CONTINUE;
}

/* ---- replication (docs/HA.md) ---- */

/*
 * REPL.SYNC <history> <lsn> <port>: a replica asks to follow this node's
 * journal.  The reply says where its stream starts; then the connection
 * leaves request/reply and a sender thread takes it (tg_repl_take).
 */
static int
cmd_repl_sync(struct ctx *c)
{
	const struct tg_req *q = c->req;
	const struct tg_arg *h = &q->argv[1];
	struct tg_repl_sync rs = {0};
	uint64_t port;
	char reply[256];

	if (h->len == 0 || h->len > TG_REPL_ID_LEN || !tg_arg_u64(&q->argv[2], &rs.lsn) ||
	    !tg_arg_u64(&q->argv[3], &port) || port == 0 || port > 65535)
		return reply_err(c, "REPL.SYNC <history> <lsn> <port>");
	memcpy(rs.history, h->p, h->len);
	rs.port = (uint16_t)port;
	int rc = tg_repl_sync(c->srv, &rs, reply, sizeof(reply));
	if (rc == 0 && (c->s->sync = malloc(sizeof(rs))) == NULL)
		return reply_err(c, "out of memory");
	tg_out_raw(c->out, reply, strlen(reply));
	if (rc != 0)
		return TG_NET_CONTINUE;
	*c->s->sync = rs;
	c->s->detach = TG_DETACH_REPLICA;
	return TG_NET_DETACH;
}

/* A REPL.SYNC's connection, its reply sent: the replica's sender takes it. */
static void
replica_take(struct tg_server *srv, const struct tg_session *s, int fd)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);
	char ip[64] = "?";

	if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0) {
		if (sa.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, ip, sizeof(ip));
		else if (sa.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, ip,
			          sizeof(ip));
	}
	/* An IPv4 peer of a dual-stack listener: show it as IPv4, as Redis does. */
	const char *shown = strncmp(ip, "::ffff:", 7) == 0 ? ip + 7 : ip;
	tg_repl_take(srv, s->sync, shown, fd);
}

/* ---- replication: ROLE, REPLICAOF, CONFIG REWRITE (docs/HA.md) ---- */

/*
 * The node's replication status; a replica's primary comes from the
 * replica-of it started with when replication does not say (it has not
 * connected yet).
 */
static void
repl_status(struct tg_server *srv, struct tg_repl_status *st)
{
	tg_repl_status(srv, st);
	if (st->role != TG_REPL_REPLICA || st->primary_host[0] != '\0')
		return;
	char host[TG_REPL_HOST_MAX];
	unsigned port = 0;
	_Static_assert(TG_REPL_HOST_MAX == 256, "the width in the format below");
	if (sscanf(srv->cfg.replica_of, "%255s %u", host, &port) == 2 && port <= 65535) {
		snprintf(st->primary_host, sizeof(st->primary_host), "%s", host);
		st->primary_port = (uint16_t)port;
	}
}

/*
 * ROLE, as Redis answers it: ["master", offset, [[ip, port, offset], ...]]
 * or ["slave", host, port, state, offset].
 */
static int
cmd_role(struct ctx *c)
{
	struct tg_repl_status st;
	char b[32];

	repl_status(c->srv, &st);
	if (st.role == TG_REPL_PRIMARY) {
		tg_out_array(c->out, 3);
		tg_out_cstr(c->out, "master");
		tg_out_int(c->out, (int64_t)st.offset);
		tg_out_array(c->out, st.replicas);
		for (unsigned k = 0; k < st.replicas; k++) {
			const struct tg_repl_replica *r = &st.replica[k];
			tg_out_array(c->out, 3);
			tg_out_cstr(c->out, r->ip);
			snprintf(b, sizeof(b), "%u", r->port);
			tg_out_cstr(c->out, b);
			snprintf(b, sizeof(b), "%llu", (unsigned long long)r->acked);
			tg_out_cstr(c->out, b);
		}
		return TG_NET_CONTINUE;
	}
	tg_out_array(c->out, 5);
	tg_out_cstr(c->out, "slave");
	tg_out_cstr(c->out, st.primary_host);
	tg_out_int(c->out, st.primary_port);
	tg_out_cstr(c->out, st.link_up ? "connected" : st.sync_in_progress ? "sync" : "connect");
	tg_out_int(c->out, (int64_t)st.offset);
	return TG_NET_CONTINUE;
}

/*
 * REPLICAOF host port | REPLICAOF NO ONE (SLAVEOF is the same).  A change
 * of role is replication's to make (tg_repl_replicaof): when it says a
 * restart is due, the reply is +OK and the restart follows it.  The target
 * is remembered for CONFIG REWRITE, which Sentinel sends next.
 */
static int
cmd_replicaof(struct ctx *c)
{
	const struct tg_arg *h = &c->req->argv[1], *p = &c->req->argv[2];
	char host[TG_REPL_HOST_MAX], msg[256], b[48];
	uint64_t port = 0;
	bool restart = false;

	bool no_one = tg_arg_is(h, "NO") && tg_arg_is(p, "ONE");
	if (!no_one) {
		bool ok = h->len >= 1 && h->len < sizeof(host);
		for (uint32_t k = 0; ok && k < h->len; k++)
			ok = h->p[k] > ' ' && h->p[k] < 127;
		if (!ok)
			return reply_err(c, "invalid host '%s'", show(h, b));
		if (!tg_arg_u64(p, &port) || port == 0 || port > 65535)
			return reply_err(c, "Invalid master port");
		memcpy(host, h->p, h->len);
		host[h->len] = '\0';
	}
	/* Replication may wait on its threads: leave the epoch section as RATES.RELOAD does. */
	tg_worker_exit(c->w);
	int rc = tg_repl_replicaof(c->srv, no_one ? NULL : host, (uint16_t)port, &restart, msg,
	                           sizeof(msg));
	if (rc == 0) {
		pthread_mutex_lock(&c->srv->reload_lock);
		if (no_one)
			c->srv->replica_of_conf[0] = '\0';
		else
			snprintf(c->srv->replica_of_conf, sizeof(c->srv->replica_of_conf), "%s %u",
			         host, (unsigned)port);
		pthread_mutex_unlock(&c->srv->reload_lock);
		if (restart)
			tg_server_restart_due(c->srv);
	}
	tg_worker_enter(c->w);
	if (rc != 0)
		return reply_err(c, "%s", msg);
	tg_log("%s %s by %s: %s", tg_arg_is(&c->req->argv[0], "SLAVEOF") ? "SLAVEOF" : "REPLICAOF",
	       no_one ? "NO ONE" : host, c->w->who ? c->w->who : "default",
	       restart ? "restart due" : "nothing to change");
	if (!restart && !no_one)
		tg_out_status(c->out, "OK Already connected to specified master");
	else
		tg_out_status(c->out, "OK");
	return TG_NET_CONTINUE;
}

/* ---- clients: CLIENT, MULTI/EXEC, PUBLISH/SUBSCRIBE (docs/HA.md) ---- */

static bool
is_admin(struct ctx *c, const char *what)
{
	if (c->s->role & TG_ROLE_ADMIN)
		return true;
	char msg[160];
	tg_count(c->w, TG_C_noperm, 1);
	snprintf(msg, sizeof(msg), "this user has no permissions to run '%s' (role %s)", what,
	         tg_role_name(c->s->role));
	tg_out_error(c->out, tg_result_name(TG_NOPERM), msg);
	return false;
}

/*
 * CLIENT KILL TYPE normal: every request/reply connection open now but the
 * caller closes, each on its worker's next tick (about 100 ms) or before its
 * next command, whichever comes first; the reply counts them.  pubsub: every
 * subscriber.  master, slave, replica: replication's connections, which this
 * node does not close on request (0).
 */
static int
client_kill(struct ctx *c)
{
	const struct tg_req *q = c->req;
	if (q->argc != 4 || !tg_arg_is(&q->argv[2], "TYPE"))
		return reply_err(c, "only CLIENT KILL TYPE normal|pubsub|master|slave|replica is "
		                    "supported");
	const struct tg_arg *t = &q->argv[3];
	if (tg_arg_is(t, "normal")) {
		uint64_t gen = ck_pr_faa_64(&c->srv->kill_gen, 1) + 1;
		c->s->kill_seen = gen;
		uint64_t open = tg_load_64(&c->srv->normal_clients);
		tg_out_int(c->out, open > 0 ? (int64_t)open - 1 : 0);
		return TG_NET_CONTINUE;
	}
	if (tg_arg_is(t, "pubsub")) {
		tg_out_int(c->out, (int64_t)tg_pubsub_kill(c->srv->pubsub));
		return TG_NET_CONTINUE;
	}
	if (tg_arg_is(t, "master") || tg_arg_is(t, "slave") || tg_arg_is(t, "replica")) {
		tg_out_int(c->out, 0);
		return TG_NET_CONTINUE;
	}
	char b[48];
	return reply_err(c, "Unknown client type '%s'", show(t, b));
}

/* CLIENT LIST: the caller's line, then one per subscriber. */
static int
client_list(struct ctx *c)
{
	char buf[8192], addr[64] = "?";
	size_t n = 0;

	if (c->s->peer_known) {
		struct tg_net_peer peer;
		memcpy(peer.addr, c->s->peer, sizeof(peer.addr));
		tg_net_peer_str(&peer, addr, sizeof(addr));
	}
	n = (size_t)snprintf(
	    buf, sizeof(buf), "id=%llu addr=%s name=%s age=%llu flags=N user=%s cmd=client|list\n",
	    (unsigned long long)c->s->id, addr, c->s->name,
	    (unsigned long long)((tg_clock_ms(CLOCK_MONOTONIC_COARSE) - c->s->opened_ms) / 1000),
	    c->s->user ? c->s->user->name : "default");
	tg_pubsub_list(c->srv->pubsub, buf, &n, sizeof(buf));
	tg_out_bulk(c->out, buf, n);
	return TG_NET_CONTINUE;
}

static int
cmd_client(struct ctx *c)
{
	const struct tg_req *q = c->req;
	const struct tg_arg *sub = &q->argv[1];

	if (tg_arg_is(sub, "SETNAME") && q->argc == 3) {
		const struct tg_arg *n = &q->argv[2];
		if (n->len > TG_CLIENT_NAME_MAX)
			return reply_err(c, "client name longer than %d bytes", TG_CLIENT_NAME_MAX);
		for (uint32_t k = 0; k < n->len; k++)
			if (n->p[k] <= ' ' || n->p[k] > '~')
				return reply_err(c,
				                 "Client names cannot contain spaces, newlines or "
				                 "special characters.");
		memcpy(c->s->name, n->p, n->len);
		c->s->name[n->len] = '\0';
		tg_out_status(c->out, "OK");
	} else if (tg_arg_is(sub, "GETNAME") && q->argc == 2) {
		if (c->s->name[0] == '\0')
			tg_out_nil(c->out);
		else
			tg_out_cstr(c->out, c->s->name);
	} else if (tg_arg_is(sub, "ID") && q->argc == 2) {
		tg_out_int(c->out, (int64_t)c->s->id);
	} else if (tg_arg_is(sub, "SETINFO") && q->argc == 4) {
		/* redis-py and others announce their library: accepted, not kept. */
		tg_out_status(c->out, "OK");
	} else if (tg_arg_is(sub, "KILL")) {
		if (is_admin(c, "CLIENT KILL"))
			return client_kill(c);
	} else if (tg_arg_is(sub, "LIST") && q->argc == 2) {
		if (is_admin(c, "CLIENT LIST"))
			return client_list(c);
	} else {
		char b[48];
		return reply_err(c,
		                 "unknown CLIENT subcommand '%s' (SETNAME, GETNAME, ID, KILL, "
		                 "LIST)",
		                 show(sub, b));
	}
	return TG_NET_CONTINUE;
}

static int
cmd_publish(struct ctx *c)
{
	const struct tg_arg *ch = &c->req->argv[1], *m = &c->req->argv[2];
	tg_out_int(c->out,
	           (int64_t)tg_pubsub_publish(c->srv->pubsub, ch->p, ch->len, m->p, m->len));
	return TG_NET_CONTINUE;
}

/*
 * SUBSCRIBE / PSUBSCRIBE: the connection leaves request/reply for the
 * subscribers' thread (pubsub.c), which answers everything it sends next.
 */
static int
cmd_subscribe(struct ctx *c)
{
	bool pattern = tg_arg_is(&c->req->argv[0], "PSUBSCRIBE");
	int rc = tg_pubsub_add(c->srv->pubsub, c->s->id, c->s->name, pattern, &c->req->argv[1],
	                       c->req->argc - 1, c->out);
	if (rc == -EMFILE)
		return reply_err(c, "too many subscribers (max-clients %u)",
		                 (unsigned)c->srv->cfg.max_clients);
	if (rc == -ENOTCONN)
		return reply_err(c, "publish/subscribe is not running here");
	if (rc == -E2BIG)
		return reply_err(c, "at most %d subscriptions per connection", TG_PUBSUB_SUBS_MAX);
	if (rc != 0)
		return reply_err(c, "cannot subscribe: %s", strerror(-rc));
	c->s->detach = TG_DETACH_PUBSUB;
	return TG_NET_DETACH;
}

/* UNSUBSCRIBE / PUNSUBSCRIBE on a connection that subscribes to nothing: what Redis says. */
static int
cmd_unsubscribe(struct ctx *c)
{
	const char *kind =
	    tg_arg_is(&c->req->argv[0], "PUNSUBSCRIBE") ? "punsubscribe" : "unsubscribe";
	if (c->req->argc == 1) {
		tg_out_array(c->out, 3);
		tg_out_cstr(c->out, kind);
		tg_out_nil(c->out);
		tg_out_int(c->out, 0);
	}
	for (uint32_t k = 1; k < c->req->argc; k++) {
		tg_out_array(c->out, 3);
		tg_out_cstr(c->out, kind);
		tg_out_bulk(c->out, c->req->argv[k].p, c->req->argv[k].len);
		tg_out_int(c->out, 0);
	}
	return TG_NET_CONTINUE;
}

/*
 * The commands queued after MULTI, copied: argc, then each argument's
 * length and bytes.  Allocated by MULTI, freed by EXEC, DISCARD or the
 * connection's close.
 */
#define MULTI_CMDS  32
#define MULTI_BYTES 8192

struct tg_multi {
	bool dirty; /* a command was refused while queueing: EXEC aborts */
	uint32_t n, used;
	char data[MULTI_BYTES];
};

static int
cmd_multi(struct ctx *c)
{
	if (c->s->multi != NULL)
		return reply_err(c, "MULTI calls can not be nested");
	c->s->multi = calloc(1, sizeof(*c->s->multi));
	if (c->s->multi == NULL)
		return reply_err(c, "out of memory");
	tg_out_status(c->out, "OK");
	return TG_NET_CONTINUE;
}

static int
cmd_discard(struct ctx *c)
{
	if (c->s->multi == NULL)
		return reply_err(c, "DISCARD without MULTI");
	free(c->s->multi);
	c->s->multi = NULL;
	tg_out_status(c->out, "OK");
	return TG_NET_CONTINUE;
}

/* Inside MULTI: refuse cmd or queue it (+QUEUED). */
static int
queue(struct ctx *c, const struct command *cmd)
{
	struct tg_multi *m = c->s->multi;
	const struct tg_req *q = c->req;

	if (cmd->flags & (F_WRITE | F_NOQUEUE)) {
		m->dirty = true;
		return reply_err(c, "%s cannot run inside MULTI: %s", cmd->name,
		                 (cmd->flags & F_WRITE)
		                     ? "commands that move money are not transactional"
		                     : "it leaves request/reply or changes the connection");
	}
	size_t need = 4;
	for (uint32_t k = 0; k < q->argc; k++)
		need += 4 + q->argv[k].len;
	if (m->n >= MULTI_CMDS || m->used + need > sizeof(m->data)) {
		m->dirty = true;
		return reply_err(c, "transaction too large (at most %d commands, %d bytes)",
		                 MULTI_CMDS, MULTI_BYTES);
	}
	memcpy(m->data + m->used, &q->argc, 4);
	m->used += 4;
	for (uint32_t k = 0; k < q->argc; k++) {
		memcpy(m->data + m->used, &q->argv[k].len, 4);
		memcpy(m->data + m->used + 4, q->argv[k].p, q->argv[k].len);
		m->used += 4 + q->argv[k].len;
	}
	m->n++;
	tg_out_status(c->out, "QUEUED");
	return TG_NET_CONTINUE;
}

static const struct command *lookup(const struct tg_arg *name);
static bool admit(struct ctx *c, const struct command *cmd);
static int run(struct ctx *c, const struct command *cmd);

/* EXEC: the queued commands in order, their replies in one array. */
static int
cmd_exec(struct ctx *c)
{
	struct tg_multi *m = c->s->multi;
	if (m == NULL)
		return reply_err(c, "EXEC without MULTI");
	c->s->multi = NULL;
	if (m->dirty) {
		free(m);
		tg_out_error(c->out, "EXECABORT",
		             "Transaction discarded because of previous errors.");
		return TG_NET_CONTINUE;
	}
	tg_out_array(c->out, m->n);
	const struct tg_req *outer = c->req;
	struct tg_req q;
	uint32_t pos = 0;
	for (uint32_t i = 0; i < m->n; i++) {
		memcpy(&q.argc, m->data + pos, 4);
		pos += 4;
		for (uint32_t k = 0; k < q.argc; k++) {
			memcpy(&q.argv[k].len, m->data + pos, 4);
			q.argv[k].p = m->data + pos + 4;
			pos += 4 + q.argv[k].len;
		}
		c->req = &q;
		const struct command *cmd = lookup(&q.argv[0]);
		/* Checked when queued; checked again, as nothing may bypass the gate. */
		if (cmd != NULL && admit(c, cmd))
			run(c, cmd);
	}
	c->req = outer;
	free(m);
	return TG_NET_CONTINUE;
}

/* CONFIG REWRITE: replica-of into the file tollgated was started with (-c). */
static int
config_rewrite(struct ctx *c)
{
	struct tg_server *srv = c->srv;
	char err[TG_CFG_STR_MAX + 128], value[TG_CFG_STR_MAX];

	if (srv->cfg.config_file[0] == '\0')
		return reply_err(c, "The server is running without a config file");
	tg_worker_exit(c->w);
	pthread_mutex_lock(&srv->reload_lock);
	snprintf(value, sizeof(value), "%s", srv->replica_of_conf);
	int rc = tg_config_rewrite(srv->cfg.config_file, "replica-of", value, err, sizeof(err));
	pthread_mutex_unlock(&srv->reload_lock);
	tg_worker_enter(c->w);
	if (rc != 0) {
		tg_log("CONFIG REWRITE: %s", err);
		return reply_err(c, "Rewriting config file: %s", err);
	}
	tg_log("CONFIG REWRITE: %s: replica-of %s", srv->cfg.config_file,
	       value[0] ? value : "(none: a primary)");
	tg_out_status(c->out, "OK");
	return TG_NET_CONTINUE;
}

/* ---- INFO ---- */

struct info {
	char *buf;
	size_t len, cap;
};

static void info_add(struct info *i, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
info_add(struct info *i, const char *fmt, ...)
{
	va_list ap;
	if (i->len >= i->cap)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(i->buf + i->len, i->cap - i->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		i->len = (size_t)n < i->cap - i->len ? i->len + (size_t)n : i->cap;
}

static bool
want(const struct tg_arg *sec, const char *name)
{
	return sec == NULL || tg_arg_is(sec, "all") || tg_arg_is(sec, "everything") ||
	       tg_arg_is(sec, name);
}

static void
info_counters(struct info *i, const struct tg_engine *e, const char *section)
{
	char money[TG_MONEY_STR_MAX];

	for (unsigned k = 0; k < TG_COUNTER__COUNT; k++) {
		if (strcmp(tg_counter_section(k), section) != 0)
			continue;
		uint64_t v = tg_engine_counter(e, k);
		if (tg_counter_is_money(k)) {
			tg_money_format((tg_money_t)v, money);
			info_add(i, "%s:%s\r\n", tg_counter_name(k), money);
		} else {
			info_add(i, "%s:%llu\r\n", tg_counter_name(k), (unsigned long long)v);
		}
	}
}

/*
 * INFO replication in Redis's format and order (Redis 7.0), which Sentinel
 * parses: role, a replica's link to its primary, the replicas of a
 * primary.  Offsets are journal LSNs; lag is in seconds, as Redis's.
 */
static void
info_replication(struct info *i, struct tg_server *srv)
{
	struct tg_repl_status st;

	repl_status(srv, &st);
	info_add(i, "# Replication\r\nrole:%s\r\n",
	         st.role == TG_REPL_REPLICA ? "slave" : "master");
	if (st.role == TG_REPL_REPLICA) {
		info_add(i,
		         "master_host:%s\r\nmaster_port:%u\r\nmaster_link_status:%s\r\n"
		         "master_last_io_seconds_ago:%lld\r\nmaster_sync_in_progress:%d\r\n"
		         "slave_read_repl_offset:%llu\r\nslave_repl_offset:%llu\r\n",
		         st.primary_host, st.primary_port, st.link_up ? "up" : "down",
		         st.link_up ? (long long)st.last_io_s : -1LL, st.sync_in_progress,
		         (unsigned long long)st.offset, (unsigned long long)st.offset);
		if (!st.link_up)
			info_add(i, "master_link_down_since_seconds:%llu\r\n",
			         (unsigned long long)st.link_down_s);
		info_add(i, "slave_priority:%u\r\nslave_read_only:1\r\nreplica_announced:1\r\n",
		         st.priority);
	}
	unsigned n = st.replicas < TG_REPL_REPLICAS_MAX ? st.replicas : TG_REPL_REPLICAS_MAX;
	info_add(i, "connected_slaves:%u\r\n", n);
	if (st.min_replicas > 0)
		info_add(i,
		         "min_slaves_good_slaves:%u\r\nrepl_refusing:%d\r\n"
		         "repl_async_acks:%llu\r\n",
		         st.good_replicas, st.refusing ? 1 : 0, (unsigned long long)st.async_acks);
	for (unsigned k = 0; k < n; k++) {
		const struct tg_repl_replica *r = &st.replica[k];
		info_add(i, "slave%u:ip=%s,port=%u,state=%s,offset=%llu,lag=%llu\r\n", k, r->ip,
		         r->port, r->online ? "online" : "wait_bgsave",
		         (unsigned long long)r->acked, (unsigned long long)(r->lag_ms / 1000));
	}
	info_add(i,
	         "master_failover_state:no-failover\r\nmaster_replid:%s\r\n"
	         "master_replid2:0000000000000000000000000000000000000000\r\n"
	         "master_repl_offset:%llu\r\nsecond_repl_offset:-1\r\n\r\n",
	         st.history, (unsigned long long)st.offset);
}

static int
cmd_info(struct ctx *c)
{
	struct tg_server *srv = c->srv;
	struct tg_engine *e = &srv->engine;
	const struct tg_arg *sec = c->req->argc == 2 ? &c->req->argv[1] : NULL;
	char buf[16384];
	struct info i = {buf, 0, sizeof(buf)};

	struct tg_net_stats ns = {0};
	struct tg_net *net = tg_load_ptr(&srv->net);
	if (net != NULL) /* NULL only while the server is still starting */
		tg_net_stats(net, &ns);
	if (want(sec, "server")) {
		info_add(&i,
		         "# Server\r\ntollgate_version:%s\r\nrun_id:%s\r\nprocess_id:%d\r\n"
		         "tcp_port:%u\r\n"
		         "uptime_in_seconds:%llu\r\nworkers:%u\r\nshm_name:%s\r\n"
		         "shm_generation:%llu\r\nconfig_file:%s\r\nrates:%s\r\n"
		         "rates_reloads:%llu\r\nrates_reload_failures:%llu\r\n\r\n",
		         TG_VERSION, srv->run_id, (int)getpid(), net ? tg_net_port(net) : 0,
		         (unsigned long long)(c->w->now_s - srv->started_s), srv->workers,
		         srv->table.name, (unsigned long long)srv->table.hdr->generation,
		         srv->cfg.config_file, srv->rates_path,
		         (unsigned long long)tg_load_64(&srv->reloads),
		         (unsigned long long)tg_load_64(&srv->reload_failures));
	}

	if (want(sec, "clients")) {
		struct tg_pubsub_stats ps;
		tg_pubsub_stats(srv->pubsub, &ps);
		info_add(
		    &i,
		    "# Clients\r\nconnected_clients:%llu\r\ntotal_connections_received:%llu\r\n"
		    "rejected_connections:%llu\r\nidle_closed_connections:%llu\r\n"
		    "connections_addr_rejected:%llu\r\nconnections_request_timeout:%llu\r\n"
		    "connections_stalled:%llu\r\nclients_killed:%llu\r\npubsub_clients:%llu\r\n"
		    "pubsub_channels:%llu\r\npubsub_patterns:%llu\r\npubsub_messages:%llu\r\n"
		    "pubsub_slow_dropped:%llu\r\npubsub_killed:%llu\r\n\r\n",
		    (unsigned long long)ns.open, (unsigned long long)ns.accepted,
		    (unsigned long long)ns.rejected, (unsigned long long)ns.idle_closed,
		    (unsigned long long)ns.addr_rejected, (unsigned long long)ns.request_timeouts,
		    (unsigned long long)ns.stalled,
		    (unsigned long long)tg_load_64(&srv->clients_killed),
		    (unsigned long long)ps.subscribers, (unsigned long long)ps.channels,
		    (unsigned long long)ps.patterns, (unsigned long long)ps.messages,
		    (unsigned long long)ps.slow_dropped, (unsigned long long)ps.killed);
	}
	if (want(sec, "replication"))
		info_replication(&i, srv);
	if (want(sec, "accounts")) {
		const struct tg_planset *ps = c->w->plans;
		info_add(&i,
		         "# Accounts\r\naccounts:%llu\r\ncapacity:%llu\r\ncalls_in_progress:%zu\r\n"
		         "ids_remembered:%zu\r\nplans:%zu\r\nprefixes:%zu\r\n\r\n",
		         (unsigned long long)ck_pr_load_64(&srv->table.hdr->count),
		         (unsigned long long)srv->table.hdr->capacity, tg_calls_count(e->calls),
		         tg_idem_count(e->ids), ps ? tg_planset_plans(ps) : 0,
		         ps ? tg_planset_prefixes(ps) : 0);
	}
	static const char *const sections[] = {"stats", "calls", "refills",
	                                       "money", "ids",   "journal"};
	static const char *const titles[] = {"Stats", "Calls", "Refills",
	                                     "Money", "Ids",   "Journal"};
	for (unsigned k = 0; k < TG_ARRAY_LEN(sections); k++) {
		if (!want(sec, sections[k]))
			continue;
		info_add(&i, "# %s\r\n", titles[k]);
		info_counters(&i, e, sections[k]);
		if (strcmp(sections[k], "refills") == 0) /* a gauge, not a counter */
			info_add(&i, "refills_pending:%llu\r\n",
			         (unsigned long long)tg_refill_pending(e));
		if (strcmp(sections[k], "ids") ==
		    0) { /* the two tiers (docs/JOURNAL.md, "Id runs") */
			struct tg_idstore_info ii;
			tg_idstore_info(e->idstore, &ii);
			uint32_t now = (uint32_t)time(NULL);
			size_t mem = tg_idem_count(e->ids);
			info_add(
			    &i,
			    "ids_memory:%zu\r\nids_memory_capacity:%llu\r\nids_memory_bytes:%"
			    "llu\r\n"
			    "ids_disk:%llu\r\nids_disk_runs:%llu\r\nids_disk_bytes:%llu\r\n"
			    "ids_disk_ram_bytes:%llu\r\n"
			    "ids_horizon_seconds:%u\r\nids_window:%u\r\n",
			    mem, (unsigned long long)e->cfg.ids_max,
			    (unsigned long long)tg_idem_bytes(e->ids), (unsigned long long)ii.ids,
			    (unsigned long long)ii.runs, (unsigned long long)ii.disk_bytes,
			    (unsigned long long)ii.ram_bytes,
			    ii.oldest && ii.oldest < now ? now - ii.oldest : 0, e->cfg.ids_window);
		}
		if (strcmp(sections[k], "journal") == 0) { /* its gauges */
			enum tg_jw_disk disk = e->jw ? tg_jw_disk(e->jw) : TG_JW_DISK_OK;
			info_add(&i,
			         "durability:%s\r\njournal_lsn:%llu\r\njournal_disk_free:%llu\r\n"
			         "journal_low_space:%d\r\njournal_disk_state:%s\r\n"
			         "journal_disk_room:%lld\r\njournal_settle_reserve:%llu\r\n",
			         e->jw ? tg_durability_name(tg_jw_mode(e->jw)) : "off",
			         (unsigned long long)(e->jw ? tg_jw_durable(e->jw) : 0),
			         (unsigned long long)(e->jw ? tg_jw_free_bytes(e->jw) : 0),
			         disk != TG_JW_DISK_OK, tg_jw_disk_name(disk),
			         (long long)(e->jw ? tg_jw_room(e->jw) : 0),
			         (unsigned long long)(e->jw ? tg_jw_settle_reserve(e->jw) : 0));
		}
		info_add(&i, "\r\n");
	}
	if (want(sec, "latency")) {
		/* Per kind of command, from every thread's histogram: microseconds. */
		info_add(&i, "# Latency\r\n");
		for (unsigned k = 0; k < TG_HIST__COUNT; k++) {
			struct tg_hist h;
			tg_stats_hist(srv->table.stats, TG_STATS_BLOCKS, k, &h);
			info_add(
			    &i,
			    "latency_%s:calls=%llu,p50_usec=%llu,p99_usec=%llu,p999_usec=%llu\r\n",
			    tg_hist_name(k), (unsigned long long)tg_hist_total(&h),
			    (unsigned long long)(tg_hist_percentile(&h, 50000) + 999) / 1000,
			    (unsigned long long)(tg_hist_percentile(&h, 99000) + 999) / 1000,
			    (unsigned long long)(tg_hist_percentile(&h, 99900) + 999) / 1000);
		}
		info_add(&i, "\r\n");
	}
	tg_out_bulk(c->out, buf, i.len);
	return TG_NET_CONTINUE;
}

/* ---- dispatch ---- */

static const struct command commands[] = {
    {"CDR", TG_H_CDR, 4, 6, false, cmd_cdr, F_WRITE},
    {"CALL.AUTH", TG_H_AUTH, 3, 4, false, cmd_call_auth, F_WRITE},
    {"CALL.END", TG_H_END, 3, 3, false, cmd_call_end, F_WRITE},
    {"CALL.UPDATE", TG_H_UPDATE, 3, 4, false, cmd_call_update, F_WRITE},
    {"ACCT.CREDIT", TG_H_CREDIT, 3, 3, false, cmd_acct_credit, F_WRITE},
    {"ACCT.GET", TG_H_ACCT, 1, 1, false, cmd_acct_get, 0},
    {"ACCT.SET", TG_H_ACCT, 1, 30, false, cmd_acct_set, F_WRITE},
    {"ACCT.REFILL.FAILED", TG_H_ACCT, 2, 3, false, cmd_acct_refill_failed, F_WRITE},
    {"ACCT.REFILL.CLAIM", TG_H_ACCT, 2, 4, false, cmd_acct_refill_claim, F_WRITE},
    {"ACCT.REFILL.REARM", TG_H_ACCT, 1, 1, false, cmd_acct_refill_rearm, F_WRITE},
    {"RATE", TG_H_ACCT, 3, 3, false, cmd_rate, 0},
    {"RATES.RELOAD", TG_H_OTHER, 0, 0, false, cmd_rates_reload, F_WRITE},
    {"PING", TG_H_OTHER, 0, 1, true, cmd_ping, 0},
    {"ECHO", TG_H_OTHER, 1, 1, false, cmd_echo, 0},
    {"AUTH", TG_H_OTHER, 1, 2, true, cmd_auth, F_NOQUEUE},
    {"QUIT", TG_H_OTHER, 0, 0, true, cmd_quit, F_NOQUEUE},
    {"INFO", TG_H_OTHER, 0, 1, false, cmd_info, 0},
    {"COMMAND", TG_H_OTHER, 0, -1, false, cmd_command, 0},
    {"CONFIG", TG_H_OTHER, 1, 3, false, cmd_config, 0},
    {"SELECT", TG_H_OTHER, 1, 1, false, cmd_select, 0},
    /* What Redis Sentinel and Sentinel-aware clients send (docs/HA.md). */
    {"ROLE", TG_H_OTHER, 0, 0, false, cmd_role, 0},
    {"REPLICAOF", TG_H_OTHER, 2, 2, false, cmd_replicaof, 0},
    {"SLAVEOF", TG_H_OTHER, 2, 2, false, cmd_replicaof, 0},
    {"CLIENT", TG_H_OTHER, 1, 3, false, cmd_client, 0},
    {"MULTI", TG_H_OTHER, 0, 0, false, cmd_multi, F_TXN},
    {"EXEC", TG_H_OTHER, 0, 0, false, cmd_exec, F_TXN},
    {"DISCARD", TG_H_OTHER, 0, 0, false, cmd_discard, F_TXN},
    {"PUBLISH", TG_H_OTHER, 2, 2, false, cmd_publish, 0},
    {"SUBSCRIBE", TG_H_OTHER, 1, -1, false, cmd_subscribe, F_NOQUEUE},
    {"PSUBSCRIBE", TG_H_OTHER, 1, -1, false, cmd_subscribe, F_NOQUEUE},
    {"UNSUBSCRIBE", TG_H_OTHER, 0, -1, false, cmd_unsubscribe, F_NOQUEUE},
    {"PUNSUBSCRIBE", TG_H_OTHER, 0, -1, false, cmd_unsubscribe, F_NOQUEUE},
    /* A replica asks to follow the journal (docs/HA.md). */
    {"REPL.SYNC", TG_H_OTHER, 3, 3, false, cmd_repl_sync, F_NOQUEUE},
};

static const struct command *
lookup(const struct tg_arg *name)
{
	for (size_t i = 0; i < TG_ARRAY_LEN(commands); i++)
		if (tg_arg_is(name, commands[i].name))
			return &commands[i];
	return NULL;
}

/* Every role that is a client of the money: not a replica. */
#define TG_ROLES_CLIENTS (TG_ROLE_CALL | TG_ROLE_REFILL | TG_ROLE_ADMIN)

/*
 * Who may run what besides admin (docs/SECURITY.md).  A command not named
 * here is admin only, so one added to commands[] later is safe until someone
 * decides otherwise.  Kept apart from commands[] for that reason.
 */
static const struct {
	const char *name;
	uint8_t roles;
} grants[] = {
    {"AUTH", TG_ROLES_ALL},
    {"PING", TG_ROLES_ALL},
    {"QUIT", TG_ROLES_ALL},
    {"ECHO", TG_ROLES_CLIENTS},
    {"COMMAND", TG_ROLES_CLIENTS},
    {"CONFIG", TG_ROLES_CLIENTS}, /* CONFIG REWRITE: admin (is_admin) */
    {"SELECT", TG_ROLES_CLIENTS},
    {"INFO", TG_ROLES_CLIENTS},
    {"ROLE", TG_ROLES_CLIENTS},   /* Sentinel-aware clients ask where the primary is */
    {"CLIENT", TG_ROLES_CLIENTS}, /* CLIENT KILL and LIST: admin (is_admin) */
    {"CALL.AUTH", TG_ROLE_CALL},
    {"CALL.UPDATE", TG_ROLE_CALL},
    {"CALL.END", TG_ROLE_CALL},
    {"CDR", TG_ROLE_CALL},
    {"RATE", TG_ROLE_CALL},
    {"ACCT.GET", TG_ROLE_CALL | TG_ROLE_REFILL},
    {"ACCT.CREDIT", TG_ROLE_REFILL},
    {"ACCT.REFILL.FAILED", TG_ROLE_REFILL},
    {"ACCT.REFILL.CLAIM", TG_ROLE_REFILL},
    /* A replica following this node's journal: that and PING, AUTH, QUIT only. */
    {"REPL.SYNC", TG_ROLE_REPLICA},
};

/* The roles of commands[i], filled once by tg_cmd_handler before any worker runs. */
static uint8_t cmd_roles[TG_ARRAY_LEN(commands)];

static void
roles_init(void)
{
	for (size_t i = 0; i < TG_ARRAY_LEN(commands); i++) {
		cmd_roles[i] = TG_ROLE_ADMIN;
		for (size_t k = 0; k < TG_ARRAY_LEN(grants); k++)
			if (strcmp(commands[i].name, grants[k].name) == 0)
				cmd_roles[i] |= grants[k].roles;
	}
}

/*
 * Whether c may run cmd now: known, authenticated, allowed for the role,
 * the right number of arguments.  False with the error written.
 */
static bool
admit(struct ctx *c, const struct command *cmd)
{
	const struct tg_req *req = c->req;
	char b[48];

	if (cmd == NULL) {
		reply_err(c, "unknown command '%s'", show(&req->argv[0], b));
		return false;
	}
	if (!cmd->noauth && !c->s->authed) {
		tg_out_error(c->out, "NOAUTH", "Authentication required.");
		return false;
	}
	/* Before AUTH only the noauth commands get here: the role is whoever authenticates. */
	if (TG_UNLIKELY(c->s->authed && !(cmd_roles[cmd - commands] & c->s->role))) {
		char msg[160];
		tg_count(c->w, TG_C_noperm, 1);
		snprintf(msg, sizeof(msg),
		         "this user has no permissions to run the '%s' command (role %s)",
		         cmd->name, tg_role_name(c->s->role));
		tg_out_error(c->out, tg_result_name(TG_NOPERM), msg);
		return false;
	}
	int nargs = (int)req->argc - 1;
	if (nargs < cmd->min_args || (cmd->max_args >= 0 && nargs > cmd->max_args)) {
		reply_err(c, "wrong number of arguments for '%s' command", cmd->name);
		return false;
	}
	return true;
}

/* Run an admitted command.  A replica moves no money: READONLY (docs/HA.md). */
static int
run(struct ctx *c, const struct command *cmd)
{
	if ((cmd->flags & F_WRITE) && tg_repl_readonly(c->srv))
		return reply_result(c, TG_READONLY);
	/* Replicas fell behind min-replicas-to-write: nothing new until they catch up. */
	if ((cmd->flags & F_WRITE) && tg_repl_refusing(c->srv))
		return reply_result(c, TG_NOREPLICAS);
	c->w->who = c->s->user != NULL ? c->s->user->name : NULL;
	int rc = cmd->fn(c);
	c->w->who = NULL;
	tg_worker_lap(c->w, (enum tg_hist_kind)cmd->kind);
	return rc;
}

/* Whether CLIENT KILL TYPE normal, run since s opened, closes it. */
static bool
killed(struct tg_server *srv, const struct tg_session *s)
{
	return TG_UNLIKELY(s->kill_seen < tg_load_64(&srv->kill_gen));
}

static int
exec(void *arg, unsigned worker, void *session, const struct tg_req *req, struct tg_out *out)
{
	struct tg_server *srv = arg;
	struct ctx c = {.srv = srv,
	                .w = tg_engine_worker(&srv->engine, worker),
	                .s = session,
	                .req = req,
	                .out = out};

	TG_CHECK_OBJ(c.s, TG_SESSION_MAGIC);
	TG_ASSERT(req->argc >= 1);
	/* Killed while this request was on its way: closed before it runs, as Redis does. */
	if (killed(srv, c.s)) {
		ck_pr_inc_64(&srv->clients_killed);
		return TG_NET_CLOSE;
	}
	tg_count(c.w, TG_C_commands, 1);
	/*
	 * Before AUTH nobody needs to pipeline: a peer that does is not a
	 * client.  Capping what it can have waiting caps the memory it can make
	 * the engine touch (docs/SECURITY.md, "Memory").
	 */
	if (TG_UNLIKELY(!c.s->authed && out->len >= TG_NOAUTH_PENDING_MAX)) {
		tg_count(c.w, TG_C_noauth_closes, 1);
		tg_out_error(out, "ERR", "too many requests before AUTH");
		return TG_NET_CLOSE;
	}
	const struct command *cmd = lookup(&req->argv[0]);
	if (!admit(&c, cmd)) {
		/* As Redis: a command refused while queueing makes EXEC abort. */
		if (c.s->multi != NULL)
			c.s->multi->dirty = true;
		return TG_NET_CONTINUE;
	}
	if (c.s->multi != NULL && !(cmd->flags & F_TXN))
		return queue(&c, cmd);
	return run(&c, cmd);
}

static void
session_open(void *arg, unsigned worker, void *session)
{
	struct tg_server *srv = arg;
	struct tg_session *s = session;
	(void)worker;
	s->magic = TG_SESSION_MAGIC;
	/* With no credential configured every connection is trusted as admin. */
	s->authed = !srv->auth.required;
	s->role = s->authed ? TG_ROLE_ADMIN : 0;
	s->opened_ms = tg_clock_ms(CLOCK_MONOTONIC_COARSE);
	s->sync = NULL;
	s->id = ck_pr_faa_64(&srv->next_client_id, 1) + 1;
	s->kill_seen = tg_load_64(&srv->kill_gen);
	s->multi = NULL;
	s->detach = TG_DETACH_NONE;
	s->name[0] = '\0';
	ck_pr_inc_64(&srv->normal_clients);
}

/*
 * auth-timeout: a connection that has not authenticated in time is closed,
 * however busy it keeps itself with PING, so idle guessers cannot hold the
 * slots legitimate switches need.
 */
static bool
session_expired(void *arg, unsigned worker, void *session)
{
	struct tg_server *srv = arg;
	struct tg_session *s = session;

	TG_CHECK_OBJ(s, TG_SESSION_MAGIC);
	if (killed(srv, s)) {
		ck_pr_inc_64(&srv->clients_killed);
		return true;
	}
	if (s->authed || srv->cfg.auth_timeout == 0)
		return false;
	uint64_t now = tg_clock_ms(CLOCK_MONOTONIC_COARSE);
	if (now - s->opened_ms < (uint64_t)srv->cfg.auth_timeout * 1000)
		return false;
	tg_count(tg_engine_worker(&srv->engine, worker), TG_C_auth_timeouts, 1);
	return true;
}

/* Where the connection comes from: the key of AUTH's lockout. */
static void
session_peer(void *arg, void *session, const struct tg_net_peer *peer)
{
	struct tg_session *s = session;
	(void)arg;
	TG_CHECK_OBJ(s, TG_SESSION_MAGIC);
	memcpy(s->peer, peer->addr, sizeof(s->peer));
	s->peer_known = true;
}

static void
session_close(void *arg, unsigned worker, void *session)
{
	struct tg_server *srv = arg;
	struct tg_session *s = session;
	(void)worker;
	TG_CHECK_OBJ(s, TG_SESSION_MAGIC);
	free(s->multi);
	s->multi = NULL;
	ck_pr_dec_64(&srv->normal_clients);
	s->magic = 0;
}

/*
 * A connection that left request/reply, its replies sent: a subscriber goes
 * to the subscribers' thread.  The session is closed but still readable.
 */
static void
detached(void *arg, unsigned worker, void *session, int fd)
{
	struct tg_server *srv = arg;
	struct tg_session *s = session;
	(void)worker;
	if (s->detach == TG_DETACH_PUBSUB && srv->pubsub != NULL)
		tg_pubsub_attach(srv->pubsub, s->id, fd);
	else if (s->detach == TG_DETACH_REPLICA && s->sync != NULL)
		replica_take(srv, s, fd);
	else
		close(fd);
	free(s->sync);
	s->sync = NULL;
}

static size_t
max_request(void *arg, void *session)
{
	struct tg_server *srv = arg;
	struct tg_session *s = session;
	return s->authed ? srv->cfg.max_request : srv->cfg.max_request_noauth;
}

/*
 * The same before AUTH: max-request-noauth already caps what an unknown peer
 * sends, and a command with its usual arguments should get NOAUTH, not a
 * protocol error.
 */
static uint32_t
max_args(void *arg, void *session)
{
	struct tg_server *srv = arg;
	(void)session;
	return srv->cfg.max_args;
}

/*
 * What a request of the money path will touch, for tg_engine_prefetch:
 * false for anything else, or arguments that do not parse (exec answers
 * those; this only looks).
 */
static bool
prefetch_of(const struct tg_req *req, struct tg_prefetch *p)
{
	static const struct {
		const char *name;
		uint8_t argc, op, id, dest; /* argc: at least; id, dest: argument index (0: none) */
	} ops[] = {
	    {"CDR", 5, TG_PF_CDR, 4, 2},
	    {"CALL.END", 4, TG_PF_CALL_END, 2, 0},
	    {"CALL.AUTH", 4, TG_PF_CALL_AUTH, 3, 2},
	    {"CALL.UPDATE", 4, TG_PF_CALL_UPDATE, 2, 0},
	    {"ACCT.CREDIT", 4, TG_PF_CREDIT, 3, 0},
	};

	for (size_t i = 0; i < TG_ARRAY_LEN(ops); i++) {
		if (req->argc < ops[i].argc || !tg_arg_is(&req->argv[0], ops[i].name))
			continue;
		const struct tg_arg *id = &req->argv[ops[i].id];
		if (!tg_arg_u64(&req->argv[1], &p->acct) || p->acct == UINT64_MAX || id->len == 0 ||
		    id->len > TG_CALLID_MAX)
			return false;
		p->op = ops[i].op;
		p->id = (struct tg_id){.p = id->p, .len = id->len};
		p->dest = ops[i].dest ? req->argv[ops[i].dest].p : NULL;
		p->dlen = ops[i].dest ? req->argv[ops[i].dest].len : 0;
		return true;
	}
	return false;
}

/* The requests of a read about to run: start loading what they will touch. */
static void
prefetch(void *arg, unsigned worker, void *session, const struct tg_req *reqs, unsigned n)
{
	struct tg_server *srv = arg;
	struct tg_session *s = session;
	struct tg_prefetch p[TG_NET_AHEAD_MAX];
	size_t k = 0;

	TG_ASSERT(n <= TG_NET_AHEAD_MAX);
	if (!s->authed)
		return;
	for (unsigned i = 0; i < n; i++)
		k += prefetch_of(&reqs[i], &p[k]);
	tg_engine_prefetch(tg_engine_worker(&srv->engine, worker), p, k);
}

static void
batch_begin(void *arg, unsigned worker)
{
	struct tg_server *srv = arg;
	tg_worker_enter(tg_engine_worker(&srv->engine, worker));
}

/*
 * The replies of the batch are sent after this returns, and in durable mode
 * only once its records are on disk: the commit either waited for that
 * (replicas to wait for too) or left the LSN to wait for in reply_lsn, and
 * the worker holds the replies until tg_jw_durable passes it (batch_lsn).
 */
static void
batch_end(void *arg, unsigned worker)
{
	struct tg_server *srv = arg;
	struct tg_worker *w = tg_engine_worker(&srv->engine, worker);
	tg_worker_exit(w);
	w->reply_lsn = tg_worker_commit_held(w);
}

static uint64_t
batch_lsn(void *arg, unsigned worker)
{
	struct tg_server *srv = arg;
	return tg_engine_worker(&srv->engine, worker)->reply_lsn;
}

static uint64_t
durable_lsn(void *arg)
{
	struct tg_server *srv = arg;
	return tg_jw_durable(srv->engine.jw);
}

static void
tick(void *arg, unsigned worker)
{
	struct tg_server *srv = arg;
	struct tg_worker *w = tg_engine_worker(&srv->engine, worker);
	/*
	 * One worker settles expired calls and closes accounts unpaid too long;
	 * the others have nothing periodic yet.
	 */
	if (worker != 0)
		return;
	/*
	 * A replica's calls are settled by its primary's records, not by its own
	 * clock; a primary holding back (tg_repl_holding) settles them later.
	 */
	if (tg_repl_readonly(srv) || tg_repl_holding(srv))
		return;
	tg_worker_enter(w);
	tg_engine_expire(w);
	tg_engine_close_unpaid(w);
	tg_worker_exit(w);
	tg_worker_commit(w);
}

/* The server's counters go to each worker's block in the segment, in enum tg_net_counter order. */
static uint64_t *
net_counters(void *arg, unsigned worker)
{
	struct tg_server *srv = arg;
	return &tg_engine_worker(&srv->engine, worker)->stats->counter[TG_C_connections_accepted];
}

/* Both enums come from tbl/tg_net_counters.h; each row is where the server expects it. */
#define TG_NET_COUNTER(e, n, s, d)                                                                 \
	_Static_assert(TG_C_##n - TG_C_connections_accepted == TG_NETC_##e,                        \
	               "tbl/tg_net_counters.h: " #n " out of the server's order");
#include "tbl/tg_net_counters.h"
#undef TG_NET_COUNTER

void
tg_cmd_handler(struct tg_server *srv, struct tg_net_handler *h)
{
	roles_init();
	memset(h, 0, sizeof(*h));
	h->arg = srv;
	h->session_size = sizeof(struct tg_session);
	h->counters = net_counters;
	h->session_open = session_open;
	h->session_expired = session_expired;
	h->session_close = session_close;
	h->max_request = max_request;
	h->max_args = max_args;
	/* The address costs a getpeername per connection: only when a lockout can use it. */
	if (srv->auth.required && srv->cfg.auth_addr_failures > 0)
		h->session_peer = session_peer;
	h->exec = exec;
	h->detached = detached;
	h->prefetch = prefetch;
	h->batch_begin = batch_begin;
	h->batch_end = batch_end;
	if (srv->engine.jw != NULL && tg_jw_mode(srv->engine.jw) == TG_DURABLE) {
		h->batch_lsn = batch_lsn;
		h->durable = durable_lsn;
	}
	h->tick = tick;
}
