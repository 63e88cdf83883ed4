/*
 * tg_stops.h - the stop publisher: calls in progress the engine wants ended.
 *
 * When an account is suspended or closed, or a debit (a CDR from another
 * switch, ACCT.SET BALANCE) leaves it too little to extend a
 * call, the worker that made the change pushes the account's id onto its
 * own single-producer ring (a hint: nothing else, no syscall, no lock).  One
 * thread drains the rings, looks at every call in progress of those
 * accounts (a pass over the call map, stripe by stripe), and for each call
 * that can no longer be extended XADDs {acct, callid, reason} onto a Redis
 * stream (docs/PROTOCOL.md, "The stop stream"), then marks the call so it
 * is announced once.  At least once: a lost reply or a restart may announce
 * a call twice; a full ring makes the next pass look at every call.
 */
#ifndef TG_STOPS_H
#define TG_STOPS_H

#include <stddef.h>
#include <stdint.h>

#include "tg_engine.h"

/* enum tg_stop_reason: tg_call.stopped, the stream's `reason` (tbl/tg_stop_reasons.h). */
enum tg_stop_reason {
	TG_STOP_NONE = 0,
#define TG_STOP_REASON(e, n, v, d) TG_STOP_##e = v,
#include "tbl/tg_stop_reasons.h"
#undef TG_STOP_REASON
};

/* Account hints each worker's ring holds before the next pass looks at every call. */
#define TG_STOP_RING 1024
/* Accounts one pass looks for; more hints waiting make it look at every call. */
#define TG_STOP_ACCTS 1024
/* Fraud alarms each worker's ring holds while the publisher cannot take them (Redis down). */
#define TG_ALARM_RING 256
/* Entries each stream keeps, about (XADD MAXLEN ~): older ones are trimmed. */
#define TG_STOP_STREAM_MAXLEN 100000

struct tg_stops_cfg {
	const char *host;         /* redis-host; "none": no stop events */
	uint32_t port;            /* redis-port */
	const char *stream;       /* stop-stream; "none": no stop events */
	const char *alarm_stream; /* alarm-stream; "none": no fraud alarms */
};

/*
 * Start the stop publisher of e.  It announces calls to stop (e->stop is
 * set) when both redis-host and stop-stream name something, and the call
 * map keeps ids (call-id-keep > 0); it raises fraud alarms (e->alarm is
 * set) when redis-host and alarm-stream name something.  When neither,
 * nothing runs and both hooks stay unset.  Before any worker
 * runs.  Redis being down is not an error (the thread retries, keeping the
 * hints).  Returns 0, or -EINVAL / -ENOMEM / -errno with a sentence in err.
 */
int tg_stops_start(struct tg_engine *e, const struct tg_stops_cfg *cfg, char *err, size_t errlen);
/*
 * Stop the thread and free it; e->stop and e->alarm are {NULL, NULL} after.
 * Workers must be stopped first.  Alarms not yet on the stream give their
 * claim back (tg_limits_alarm_release).
 */
void tg_stops_stop(struct tg_engine *e);
/* The wire name of alarm kind k ("maxcalls", ...), or NULL. */
const char *tg_alarm_kind_name(unsigned k);
/* The wire name of reason r ("suspended", ...), or NULL for none. */
const char *tg_stop_reason_name(unsigned r);
/*
 * Why call c of account a must stop now, or TG_STOP_NONE: a's state, else
 * whether what is available (with what c holds) pays for more than c's
 * grant.  An always-allowed call never stops.  Reads a racily (a hint).
 */
enum tg_stop_reason tg_stop_reason_of(struct tg_acct *a, const struct tg_call *c);

#endif
