/*
 * tbl/tg_journal.h - the journal's record types (docs/JOURNAL.md).
 *
 * TG_JREC(NAME, name, value, description).  The payload of a record of type
 * TG_JREC_NAME is struct tg_jrec_name (include/tg_journal.h), whose fields are
 * listed here in order.  The numeric value is written to disk: persisted,
 * only grow at the end, never reuse a value.  0 is never a valid type.
 *
 * Money is i64 micro-units; account ids are u64; call ids and txids are
 * their 128-bit digest (tg_digest: lo, hi).  Never a float.
 */

/* acct u64, call {lo, hi}, amount i64 (micro-units reserved by this step),
 * seconds u32 (total granted to the call), category u8, pad 3, and the call's
 * rate: per_min i64, connect i64, initial u32, increment u32, minimum u32, pad u32 */
TG_JREC(RESERVE, reserve, 1, "a call's reservation made or extended")
/* acct u64, call {lo, hi}, end {lo, hi} (the CALL.END id), fingerprint u64,
 * reserved i64 (released), cost i64 (debited), duration u32 (seconds),
 * category u32 (enum tg_category) */
TG_JREC(COMMIT, commit, 2, "a call ended: reservation released, cost debited")
/* acct u64, id {lo, hi} (the CDR id), fingerprint u64, cost i64, duration u32, category u32 */
TG_JREC(DEBIT, debit, 3, "a CDR debited with no reservation")
/* acct u64, txid {lo, hi}, fingerprint u64, amount i64, balance i64 (after: the reply),
 * refill_seq u32 (0: not a refill), pad u32 */
TG_JREC(CREDIT, credit, 4, "an account credited")
/* acct u64, balance i64 (the new balance), delta i64 (new - old) */
TG_JREC(SET_BALANCE, set_balance, 5, "an operator set the balance outright")
/* acct u64, threshold i64, refill_amount i64, state u8, refill_mode u8, flags u8,
 * pad 5, plan char[32] (the plan's name, NUL-padded) */
TG_JREC(SETTINGS, settings, 6, "an account's settings replaced (or the account created)")
/* acct u64, refill_seq u32, mode u32, balance i64, threshold i64, charge i64 */
TG_JREC(REFILL_FIRED, refill_fired, 7, "a threshold crossing fired a refill request")
/* acct u64, refill_seq u32, reason u32 (enum tg_jrefill_reason) */
TG_JREC(REFILL_CLEARED, refill_cleared, 8, "a refill request's in-flight flag cleared")
/* acct u64, call {lo, hi}, reserved i64, cost i64, seconds u32, category u32 */
TG_JREC(EXPIRE, expire, 9, "a call with no CALL.END settled at its timeout")
/* lsn u64: the LSN of the record just before it, which was on disk (written and
 * fdatasync'ed) before this record was written.  Not a change: it takes no LSN of
 * its own (its header's lsn is the same value) and the reader never returns it. */
TG_JREC(CONFIRM, confirm, 10, "the records before it were on disk before it was written")
/* acct u64, unpaid_since u32 (Unix seconds since the account was suspended for
 * non-payment; 0: it is not), failures u32 (consecutive failed refills), state u8
 * (enum tg_acct_state), unpaid u8 (1: suspended for non-payment), event u8 (enum
 * tg_standing_event), pad 5.  The standing after the change, outright. */
TG_JREC(STANDING, standing, 11,
        "an account's payment standing changed: a failed refill counted, suspended or closed "
        "for non-payment, restored or cleared by a payment")
/* acct u64, call_cap i64, daily_cap i64, low i64 (micro-units, 0: none), max_calls u32
 * (0: none), pad u32.  The account's fraud limits after the change, outright. */
TG_JREC(LIMITS, limits, 12, "an account's fraud limits set (docs/FRAUD.md)")
