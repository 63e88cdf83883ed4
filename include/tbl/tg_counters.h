/*
 * tbl/tg_counters.h - every counter the engine keeps, per worker.
 *
 * TG_COUNTER(name, info_section, description).  Generates the counter enum,
 * the INFO lines ("name:value" under "# Section") and docs/PROTOCOL.md's
 * list.  Money counters are micro-units, printed as decimals.  Only grow at
 * the end.
 */
TG_COUNTER(commands, stats, "requests executed")
TG_COUNTER(command_errors, stats, "requests answered with -ERR (unknown command, bad arguments)")
TG_COUNTER(auth_failures, stats, "AUTH with a wrong password")
TG_COUNTER(call_auth, calls, "CALL.AUTH requests")
TG_COUNTER(call_granted, calls, "CALL.AUTH that granted seconds")
TG_COUNTER(call_blocked, calls, "CALL.AUTH and CALL.UPDATE refused with BLOCKED")
TG_COUNTER(call_refused, calls, "CALL.AUTH refused: NOACCOUNT, SUSPENDED, CLOSED, NOPLAN, NORATE")
TG_COUNTER(call_update, calls, "CALL.UPDATE that extended a grant")
TG_COUNTER(call_ended, calls, "CALL.END that settled a call")
TG_COUNTER(call_expired, calls, "reservations settled at their grant because no CALL.END came")
TG_COUNTER(call_overrun_seconds, calls, "seconds reported past a grant (billed as the grant)")
TG_COUNTER(cdr, calls, "CDRs charged")
TG_COUNTER(replays, calls, "CALL.END, CDR, ACCT.CREDIT answered from the id window")
TG_COUNTER(conflicts, calls, "ids reused with different data (CONFLICT)")
TG_COUNTER(window_full, calls,
           "expiries put off a tenth of a second: the id window's stripe was busy or full")
TG_COUNTER(credits, money, "ACCT.CREDIT applied")
TG_COUNTER(money_charged, money, "amount charged by calls and CDRs")
TG_COUNTER(money_credited, money, "amount credited")
TG_COUNTER(refills_fired, refills, "auto-refill requests fired (threshold crossings)")
TG_COUNTER(refills_landed, refills, "refill credits that cleared the in-flight flag")
TG_COUNTER(refills_failed, refills, "refills reported failed by a worker")
TG_COUNTER(refills_published, refills, "refill requests put on the stream for the first time")
TG_COUNTER(refills_republished, refills,
           "refill requests put on the stream again, same id, after refill-timeout with no answer")
TG_COUNTER(refills_publish_failures, refills,
           "XADDs that failed (Redis down, slow or refusing); the request stays pending")
TG_COUNTER(refills_ring_full, refills,
           "refills fired while the worker's ring was full; found by the publisher's scan")
TG_COUNTER(refills_claimed, refills,
           "ACCT.REFILL.CLAIM answered OK: a worker may charge the request")
TG_COUNTER(refills_void, refills,
           "refill requests settled without a charge: the account was suspended or closed, or "
           "auto-refill or the payment method switched off, while the request was in flight")
TG_COUNTER(refills_already_on_stream, refills,
           "publications sent again after a lost reply and found already on the stream: not "
           "added twice")
/*
 * The server's own counters (tbl/tg_net_counters.h): here, contiguous and in
 * the server's order, so that its block is a slice of each worker's.
 */
#define TG_NET_COUNTER(e, n, s, d) TG_COUNTER(n, s, d)
#include "tbl/tg_net_counters.h"
#undef TG_NET_COUNTER
/* Hardening (docs/SECURITY.md), counted by the commands. */
TG_COUNTER(auth_failure_closes, stats, "connections closed after auth-max-failures failed AUTHs")
TG_COUNTER(
    auth_lockouts, stats,
    "source addresses locked out after auth-addr-failures failed AUTHs in auth-lockout seconds")
TG_COUNTER(auth_locked_refused, stats,
           "AUTHs refused, right password or not, because their address was locked out")
TG_COUNTER(noperm, stats, "commands refused with NOPERM: outside the user's role")
TG_COUNTER(auth_timeouts, stats,
           "connections closed for not authenticating within auth-timeout seconds")
TG_COUNTER(noauth_closes, stats,
           "connections closed for pipelining more than 2 KiB of replies before AUTH")
/* The id window's tiers (docs/JOURNAL.md, "Id runs"). */
TG_COUNTER(window_waits, ids,
           "requests that waited for the mover: their memory stripe was full of ids not yet on "
           "disk")
TG_COUNTER(ids_evicted, ids,
           "ids forgotten to make room in memory, with no disk tier (durability off)")
TG_COUNTER(ids_read_errors, ids, "requests refused with IOERR: an id on disk could not be read")
TG_COUNTER(ids_disk_reads, ids,
           "lookups that read a run on disk (replays of ids on disk, and filter false positives)")
TG_COUNTER(ids_moved, ids, "ids moved from memory to runs on disk")
TG_COUNTER(ids_expired, ids, "ids forgotten past ids-window (the horizon)")
TG_COUNTER(ids_horizon_cut, ids,
           "ids forgotten before ids-window: the disk or ids-disk-max forced the horizon shorter")
TG_COUNTER(ids_filter_full, ids,
           "ids kept in memory because their stripe's disk filter had no room (raise ids-disk-max)")
TG_COUNTER(ids_horizon_oldest, ids,
           "a position, not a count: the oldest id remembered on disk, Unix seconds (0: none), "
           "set by the snapshot thread as runs come and go")
TG_COUNTER(ids_forgotten_before, ids,
           "a position, not a count: ids first seen before this (Unix seconds) may have been "
           "forgotten early (ids_horizon_cut), so a CDR ... AT before it is STALE; 0: none was")
TG_COUNTER(cdr_stale, ids, "CDRs refused with STALE: their AT time is older than ids-window")
/* The course of a failing card (docs/REFILL.md). */
TG_COUNTER(refills_leased, refills,
           "ACCT.REFILL.CLAIM with LEASE: a worker scheduled another attempt at a charge that "
           "failed softly; the request is not republished meanwhile")
TG_COUNTER(accounts_unpaid_suspended, refills,
           "accounts suspended for non-payment after refill-suspend-after consecutive failed "
           "refills")
TG_COUNTER(accounts_unpaid_restored, refills,
           "accounts suspended for non-payment made active again by a payment (a refill's "
           "credit or any ACCT.CREDIT)")
TG_COUNTER(accounts_unpaid_closed, refills,
           "accounts closed after refill-close-after seconds suspended for non-payment with no "
           "payment")
/* Fraud limits (docs/FRAUD.md). */
TG_COUNTER(call_maxcalls, calls,
           "CALL.AUTH refused with MAXCALLS: the account's concurrent-call limit reached")
TG_COUNTER(call_dailycap, calls,
           "CALL.AUTH and CALL.UPDATE refused with DAILYCAP: the account's daily cap reached")
TG_COUNTER(call_callcap, calls, "grants cut short by the account's per-call spend cap")
TG_COUNTER(call_dailycap_short, calls,
           "grants cut short by what was left of the account's daily spend cap")
TG_COUNTER(call_low, calls, "grants that left less than the account's low-balance threshold")
/* The journal (docs/JOURNAL.md).  These stay last: other blocks are added above them. */
TG_COUNTER(journal_records, journal, "records appended to the journal")
TG_COUNTER(journal_bytes, journal, "bytes appended to the journal")
TG_COUNTER(journal_syncs, journal, "write + fdatasync pairs completed (group commits)")
TG_COUNTER(journal_waits, journal,
           "batches that waited for another worker's sync to cover them (group commit)")
TG_COUNTER(journal_nospace, journal, "requests refused with NOSPACE: the disk reserve was reached")
TG_COUNTER(snapshots, journal, "snapshots written")
TG_COUNTER(journal_sync_ns, journal, "nanoseconds spent in journal write + fdatasync, all syncs")
TG_COUNTER(ledger_lsn, journal,
           "the ledger exporter's position: the last LSN in its database (ledger.pos); 0: none")
TG_COUNTER(ledger_segments_cut, journal,
           "journal segments pruned before the ledger exporter read them (it fell more than "
           "ledger-keep-max behind)")
TG_COUNTER(call_always, calls,
           "CALL.AUTH granted to an always-allowed destination (emergency, free service numbers)")
TG_COUNTER(stops_published, calls,
           "calls in progress announced on the stop stream (suspended, closed, balance)")
TG_COUNTER(stops_unnamed, calls,
           "calls to stop whose id was longer than call-id-keep: not announced, refused at their "
           "next CALL.UPDATE")
TG_COUNTER(stops_publish_failures, calls,
           "stop-stream XADDs that failed (Redis down, slow or refusing); the calls are announced "
           "once it is back")
TG_COUNTER(stops_hints_dropped, calls,
           "stop hints a worker found its ring full for; the next pass looks at every call")
TG_COUNTER(alarms_published, calls,
           "fraud alarms (an account reaching a cap, once per kind and UTC day) added to the "
           "alarm stream")
TG_COUNTER(alarms_publish_failures, calls,
           "alarm-stream XADDs that failed (Redis down, slow or refusing); the alarms are kept "
           "and added once it is back")
TG_COUNTER(alarms_dropped, calls,
           "fraud alarms a worker found its ring full for: not kept, the account's next hit of "
           "the cap that day raises it again")
