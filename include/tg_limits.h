/*
 * tg_limits.h - every fixed bound of tollgate, in one place.
 *
 * Each limit is checked at compile time where it shapes a layout, and at run
 * time (with a clear error) wherever input can reach it.
 */
#ifndef TG_LIMITS_H
#define TG_LIMITS_H

/*
 * Pipelined requests of one connection parsed ahead of their execution at
 * once, so that what they touch is prefetched together (engine/net.c).
 */
#define TG_NET_AHEAD_MAX 32
/* Digits in a destination number or a rate-plan prefix. */
#define TG_DEST_MAX 32
/* Bytes in a call id (a SIP Call-ID) or a transaction id. */
#define TG_CALLID_MAX 255
/* Bytes in a rate-plan name, without the terminating NUL. */
#define TG_PLAN_NAME_MAX 31
/*
 * Plan names registered at once in one shared-memory segment.  A name that no
 * account and no loaded plan uses any more is reclaimed when the table is
 * full (at most once a second); past that, a new name is refused with FULL.
 */
#define TG_PLANS_MAX 1024
/* Prefixes in all plans of one plan set (one load). */
#define TG_PREFIXES_MAX (4u * 1024 * 1024)
/* Bytes in one line of a CSV input file. */
#define TG_CSV_LINE_MAX 1024
/* Files in a rate-plan directory. */
#define TG_PLAN_FILES_MAX 4096
/* Bytes of a formatted money amount, NUL included: "-9223372036854.775808". */
#define TG_MONEY_STR_MAX 24
/* Usage categories per account (the usage record holds exactly this many). */
#define TG_CATEGORIES_MAX 8
/* Billing increments and minimums, seconds. */
#define TG_INCREMENT_MAX 3600
/* Longest call duration accepted on the wire, seconds (31 days). */
#define TG_DURATION_MAX (31u * 24 * 3600)
/* Accounts in one table. */
#define TG_CAPACITY_MAX (1ull << 31)
/* Slots probed before an insert reports the table full. */
#define TG_PROBE_MAX 4096
/* Worker threads of one engine (each has a block of counters in shm). */
#define TG_WORKERS_MAX 64
/* Reserved micro-units per account: the low 56 bits of the hold word. */
#define TG_RESERVED_MAX ((1ll << 56) - 1)
/* An account's concurrent-call limit (ACCT.SET MAXCALLS, docs/FRAUD.md). */
#define TG_MAXCALLS_MAX 1000000u
/* Users in the users file (docs/SECURITY.md). */
#define TG_USERS_MAX 1024
/* Bytes of a user name and of a password. */
#define TG_USER_NAME_MAX 64
#define TG_PASSWORD_MAX  200
/* Source addresses whose failed AUTHs are remembered at once (the oldest make room). */
#define TG_AUTH_ADDRS 4096
/* Bytes of replies a connection may have waiting to be sent before it has authenticated. */
#define TG_NOAUTH_PENDING_MAX 2048

_Static_assert(TG_DEST_MAX <= 32, "prefix lengths are kept in 5 bits");
_Static_assert(TG_PLAN_NAME_MAX + 1 == 32, "plan names are 32-byte slots in shm");
_Static_assert(TG_PLANS_MAX % 64 == 0, "one bit per plan-name slot, in 64-bit words");

#endif
