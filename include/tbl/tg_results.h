/*
 * tbl/tg_results.h - call outcomes, in order of precedence.
 *
 * TG_RESULT(name, description).  The wire code is the name: a RESP error
 * "-<NAME> <description>".  When a command could fail for several reasons the
 * earliest in this list is reported.  Only grow at the end: the numeric values
 * are written to the journal.
 */
TG_RESULT(OK, "success")
TG_RESULT(ERR, "malformed command or argument")
TG_RESULT(NOAUTH, "authentication required")
TG_RESULT(WRONGPASS, "invalid password")
TG_RESULT(NOACCOUNT, "no such account")
TG_RESULT(CLOSED, "account closed")
TG_RESULT(SUSPENDED, "account suspended")
TG_RESULT(NOPLAN, "the account's rate plan is not loaded")
TG_RESULT(NORATE, "no rate for this destination")
TG_RESULT(CONFLICT, "id already used with different data")
TG_RESULT(NOCALL, "no such call in progress")
TG_RESULT(BLOCKED, "insufficient balance")
TG_RESULT(SHORT, "available balance below the amount asked")
TG_RESULT(OVERFLOW, "amount out of range")
TG_RESULT(FULL, "capacity exhausted")
TG_RESULT(NOPAYMENT, "auto-refill needs a payment method on file")
TG_RESULT(NOSPACE, "the journal's disk is at its reserve: changes to money are refused")
TG_RESULT(NOPERM, "the user's role does not allow this command")
TG_RESULT(VOID, "the refill request may not be charged")
TG_RESULT(EXPIRED, "the call was settled by expiry at its grant")
TG_RESULT(MAXGRANT, "the grant already reaches max-grant seconds past elapsed: ask again later")
TG_RESULT(IOERR, "an id remembered on disk could not be read: nothing was applied")
TG_RESULT(STALE, "the CDR is older than ids-window: its id may be forgotten, so it is not charged")
TG_RESULT(READONLY, "You can't write against a read only replica.")
TG_RESULT(NOREPLICAS, "Not enough good replicas to write.")
TG_RESULT(MAXCALLS, "the account has as many calls in progress as its limit allows")
TG_RESULT(DAILYCAP, "the account's daily spend cap is reached")
