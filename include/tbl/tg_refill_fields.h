/*
 * tbl/tg_refill_fields.h - the fields of a refill request on the stream.
 *
 * TG_REFILL_FIELD(ENUM, name, required, description).  Generates enum
 * tg_refill_field (TG_RF_<ENUM>, the field's place in an entry) and the field
 * names the publisher writes (engine/refill.c, in this order) and the worker
 * reads (tools/tollrefill.c; a required field missing makes the entry
 * malformed).  docs/REFILL.md lists them.  A wire format: only grow at the
 * end, never rename.
 */
TG_REFILL_FIELD(ID, id, 1, "the request id, refill:<acct>:<n>")
TG_REFILL_FIELD(ACCOUNT, account, 1, "account id, decimal")
TG_REFILL_FIELD(BALANCE, balance, 0, "the balance when the request fired")
TG_REFILL_FIELD(THRESHOLD, threshold, 0, "the account's threshold")
TG_REFILL_FIELD(MODE, mode, 0, "add or topup (tbl/tg_refill_modes.h)")
TG_REFILL_FIELD(AMOUNT, amount, 1, "what to charge, whole minor units of the currency")
TG_REFILL_FIELD(FIRED, fired, 0, "when it fired, Unix seconds")
TG_REFILL_FIELD(ATTEMPT, attempt, 0, "1 for the first publication, 2... for each republication")
