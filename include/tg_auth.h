/*
 * tg_auth.h - who may connect and what each may do (docs/SECURITY.md).
 *
 * Credentials come from two places: requirepass is the user "default", with
 * the admin role; the users file adds one named user per line, each with a
 * role.  AUTH checks a name and password in time independent of where they
 * differ, and failed attempts are remembered per source address so that an
 * address that keeps guessing is locked out for a while.  Everything is
 * loaded at start; checking never allocates.
 */
#ifndef TG_AUTH_H
#define TG_AUTH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_limits.h"

#define TG_AUTH_MAGIC 0x61757468u

/* Roles are bits: each command lists the roles that may run it (admin: all). */
#define TG_ROLE_CALL    0x01u /* a switch: call control, CDRs, quotes, ACCT.GET */
#define TG_ROLE_REFILL  0x02u /* a refill worker: ACCT.CREDIT, ACCT.REFILL.FAILED, ACCT.GET */
#define TG_ROLE_ADMIN   0x04u /* everything */
#define TG_ROLE_REPLICA 0x08u /* a replica following this node's journal: REPL.SYNC */
#define TG_ROLES_ALL    (TG_ROLE_CALL | TG_ROLE_REFILL | TG_ROLE_ADMIN | TG_ROLE_REPLICA)

struct tg_user {
	char name[TG_USER_NAME_MAX + 1];
	char pass[TG_PASSWORD_MAX];
	uint32_t pass_len;
	uint8_t role; /* one TG_ROLE_* */
};

/* Failed AUTHs of one source address (an IPv6 /64, or one IPv4 address). */
struct tg_auth_addr {
	uint64_t k0, k1;
	uint64_t window_s; /* when the current window of failures began (monotonic) */
	uint64_t locked_s; /* locked out until then; 0 = not locked */
	uint64_t last_s;   /* last failure: the least recent make room */
	uint32_t failures; /* in the current window */
	bool used;
};

struct tg_auth_cfg {
	const char *requirepass;   /* "" = no default user */
	const char *users;         /* path of the users file; "" = none */
	uint32_t addr_failures;    /* failures per address per window that lock it; 0 = never */
	uint32_t lockout_s;        /* the window, and the lockout */
	size_t max_request_noauth; /* every user must be able to AUTH within it */
};

struct tg_auth {
	uint32_t magic;
	bool required; /* some credential is configured: connections start unauthenticated */
	struct tg_user *users;
	unsigned n_users;
	uint32_t addr_failures, lockout_s;
	pthread_mutex_t mu;         /* failures only: never taken by a successful AUTH's compare */
	struct tg_auth_addr *addrs; /* TG_AUTH_ADDRS, in sets of 4 */
	uint64_t seed;
};

enum tg_auth_outcome {
	TG_AUTH_OK,
	TG_AUTH_WRONG,  /* no such user, or a wrong password */
	TG_AUTH_LOCKED, /* the address is locked out: refused without looking */
};

/*
 * Load the users file (checked whole: any bad line and start-up stops with
 * "file:line: reason" in err) and set up the failure table.  Returns 0,
 * -errno or -EINVAL.  On failure nothing is left allocated.
 */
int tg_auth_init(struct tg_auth *a, const struct tg_auth_cfg *cfg, char *err, size_t errlen);
void tg_auth_fini(struct tg_auth *a);

/*
 * Check one AUTH from address addr (16 bytes, IPv4 mapped; NULL when unknown:
 * then no lockout applies).  name NULL means the default user.  Any thread.
 * On TG_AUTH_OK *user is set; on TG_AUTH_LOCKED *retry_s is the seconds left;
 * *locked_now is set when this failure began a lockout.
 */
enum tg_auth_outcome tg_auth_check(struct tg_auth *a, const uint8_t *addr, const char *name,
                                   size_t name_len, const char *pass, size_t pass_len,
                                   const struct tg_user **user, uint32_t *retry_s,
                                   bool *locked_now);

/* "call", "refill", "admin" (one role); "none" for 0. */
const char *tg_role_name(uint8_t role);

#endif
