/*
 * tbl/tg_standing_events.h - what a change of an account's payment standing
 * did (the course of a failing card, docs/REFILL.md).
 *
 * TG_STANDING_EVENT(ENUM, name, value, description).  Generates enum
 * tg_standing_event (tg_table.h) and the names tollctl prints and the ledger
 * stores (tg_standing_event_name, tg_names.h).  Persisted: the journal's
 * standing record carries the value, so values only grow at the end.
 */
TG_STANDING_EVENT(NONE, none, 0, "nothing changed")
TG_STANDING_EVENT(FAILED, failed, 1, "a failed refill counted; the account stays as it was")
TG_STANDING_EVENT(SUSPENDED, suspended, 2, "suspended for non-payment")
TG_STANDING_EVENT(RESTORED, restored, 3,
                  "a payment made an account suspended for non-payment active")
TG_STANDING_EVENT(CLOSED, closed, 4, "closed after too long suspended for non-payment")
TG_STANDING_EVENT(PAID, paid, 5, "a payment cleared the count of failed refills")
