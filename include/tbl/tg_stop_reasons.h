/*
 * tbl/tg_stop_reasons.h - why the engine stops a call in progress (the
 * `reason` field of the stop stream, docs/PROTOCOL.md "The stop stream").
 *
 * TG_STOP_REASON(enum, name on the wire, value, description).  The value is
 * kept in the call record (tg_call.stopped; 0 = not stopped): only grow at
 * the end.
 */
TG_STOP_REASON(SUSPENDED, suspended, 1,
               "the account was suspended (by an operator or for non-payment)")
TG_STOP_REASON(CLOSED, closed, 2, "the account was closed")
TG_STOP_REASON(BALANCE, balance, 3,
               "the account's available balance no longer pays for the call's next extension")
