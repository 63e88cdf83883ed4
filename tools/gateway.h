/*
 * gateway.h - the payment-gateway interface of the refill worker, and its one
 * bundled implementation, a simulator.
 *
 * A gateway is a table of function pointers behind a small handle, so a real
 * processor can replace the simulator without touching the worker.  Every
 * gateway must be idempotent on the request id: charging a request id that it
 * already approved answers "approved" again with the same reference and takes
 * no money.  That is what lets a worker that crashed between charging and
 * crediting retry without charging twice.  A gateway never credits, mails or
 * touches the refill stream; it only takes money (or refuses to).
 */
#ifndef TG_GATEWAY_H
#define TG_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "tg_money.h"

/* Outcomes of one charge attempt.  DECLINED, EXPIRED: final; TIMEOUT, ERROR: retried. */
enum tg_charge_outcome {
	TG_CHARGE_APPROVED = 0, /* the money was taken (now or by an earlier attempt) */
	TG_CHARGE_DECLINED,     /* the issuer refused: final */
	TG_CHARGE_EXPIRED,      /* the payment method has expired: final */
	TG_CHARGE_TIMEOUT,      /* no answer in time, nothing taken: worth another attempt */
	TG_CHARGE_ERROR,        /* the gateway failed, nothing taken: worth another attempt */
};

/* Bytes of a gateway's reference for an approved charge, NUL included. */
#define TG_GATEWAY_REF_MAX 320

struct tg_gateway_ops {
	const char *name;
	/*
	 * Charge amount (> 0) to the payment method (method "card" or
	 * "paypal", token its id at the gateway) for request_id (a
	 * NUL-terminated refill request id).  On APPROVED, ref receives the
	 * gateway's reference (NUL-terminated, at most TG_GATEWAY_REF_MAX
	 * bytes with the NUL).  Must be idempotent on request_id.  Never
	 * blocks longer than the gateway's own timeout.
	 */
	enum tg_charge_outcome (*charge)(void *impl, const char *request_id, const char *method,
	                                 const char *token, tg_money_t amount, char *ref);
	/*
	 * Refund amount (> 0) of the approved charge charge_id, as refund
	 * refund_id (NUL-terminated, letters, digits, ':', '-', '_').  APPROVED:
	 * the money went back (now or by an earlier call with the same
	 * refund_id: idempotent on it, the amount is not returned twice), ref
	 * receives the gateway's reference.  DECLINED: charge_id is not an
	 * approved charge, or the refunds of it would exceed what it took.
	 * TIMEOUT, ERROR: nothing refunded, worth another call with the same
	 * refund_id.
	 */
	enum tg_charge_outcome (*refund)(void *impl, const char *refund_id, const char *charge_id,
	                                 tg_money_t amount, char *ref);
	/* Release everything impl holds.  Called once. */
	void (*close)(void *impl);
};

#define TG_GATEWAY_MAGIC 0x67617465u /* "gate" */

struct tg_gateway {
	uint32_t magic;
	const struct tg_gateway_ops *ops;
	void *impl;
};

/* The word for an outcome, as reported to the engine and logged: "approved", "declined", ... */
const char *tg_charge_outcome_name(enum tg_charge_outcome o);

/* Charge through gw (opened, not closed); see tg_gateway_ops.charge. */
enum tg_charge_outcome tg_gateway_charge(struct tg_gateway *gw, const char *request_id,
                                         const char *method, const char *token, tg_money_t amount,
                                         char *ref);

/* Refund through gw (opened, not closed); see tg_gateway_ops.refund. */
enum tg_charge_outcome tg_gateway_refund(struct tg_gateway *gw, const char *refund_id,
                                         const char *charge_id, tg_money_t amount, char *ref);

/* Close gw and clear it; a cleared or never-opened (zeroed) handle is ignored. */
void tg_gateway_close(struct tg_gateway *gw);

/*
 * The simulator, on a Redis server at host:port (password may be NULL).
 * What each token does comes from the hash tollgate:sim:tokens (token ->
 * approve | decline | expired | timeout | error | intermittent[:N]; a token
 * not in the hash is approved).  Every call is counted per request id in
 * the hash tollgate:sim:attempts; intermittent:N times out on the first N
 * calls for a request id (N defaults to 1), then approves.  Every approved charge is recorded
 * once with HSETNX in the hash tollgate:sim:charges: request id ->
 * "<amount> <token> <unix time>"; a request id found there is approved again
 * without a new record.  The reference is "sim:<request id>".  A refund is
 * recorded once with HSETNX in tollgate:sim:refunds: refund id -> "<amount>
 * <charge id> <unix time>", and added to tollgate:sim:refunded (charge id ->
 * micro-units refunded so far), atomically (one Lua script); it is declined
 * when the charge is not in tollgate:sim:charges or the refunds of it would
 * exceed its amount.  Its reference is "sim:<refund id>".  The Redis
 * connection is made lazily and remade after an error; while Redis cannot be
 * reached every charge answers ERROR.  Returns 0 or -ENOMEM.
 */
int tg_gateway_sim_open(struct tg_gateway *gw, const char *host, uint16_t port,
                        const char *password);

#endif
