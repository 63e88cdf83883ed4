/*
 * tg_rate-t.h - rate-plan types.  See docs/RATES.md for the file format.
 */
#ifndef TG_RATE_T_H
#define TG_RATE_T_H

#include <stdint.h>

#include "tg_limits.h"
#include "tg_money.h"

/* One row of a rate plan: what a call to destinations under prefix costs. */
struct tg_rate {
	tg_money_t per_min; /* micro-units per minute */
	tg_money_t connect; /* connect fee, charged once per connected call */
	uint32_t initial;   /* first billing increment, seconds, >= 1 */
	uint32_t increment; /* each later increment, seconds, >= 1 */
	uint32_t minimum;   /* minimum billed seconds of a connected call */
	uint8_t category;   /* enum tg_category */
	uint8_t prefix_len; /* digits in prefix */
	/*
	 * 1: an always-allowed destination (emergency, free service numbers):
	 * granted whatever the balance, the state and the caps, still charged
	 * at this rate (docs/RATES.md, "Always-allowed destinations").
	 */
	uint8_t always;
	char prefix[TG_DEST_MAX + 1]; /* NUL-terminated */
};
_Static_assert(sizeof(struct tg_rate) == 64, "one rate row per cache line (docs/RATES.md)");

/*
 * How a full registry makes room (docs/SHM.md, "The plan-name table"): fn
 * frees the names that no account and no loaded plan uses and returns how
 * many it freed.  Installed by the engine, which knows the accounts
 * (tg_engine_init); process memory, shared by every copy of the registry.
 */
struct tg_plan_reclaim {
	uint32_t (*fn)(void *arg);
	void *arg;
	uint64_t last_ns; /* CLOCK_MONOTONIC of the last attempt: at most one a second */
};

/*
 * The names of rate plans, each with a stable id: an account's plan id keeps
 * its meaning across reloads and restarts for as long as anything uses it.
 * The names live in the shared-memory segment; a slot whose first byte is
 * zero is free.  A name nothing uses any more is reclaimed when the registry
 * is full, and its slot may then take a new name.  Only one thread at a
 * time registers or reclaims names (the one holding the reload lock); any
 * thread may read them.
 */
struct tg_plan_registry {
	char (*names)[TG_PLAN_NAME_MAX + 1]; /* cap slots */
	uint32_t *count; /* slots handed out (some may be free); published last */
	uint32_t cap;
	/*
	 * Process memory, NULL in a read-only mapping: one bit per slot whose
	 * name is being reclaimed (lookups by name skip it), and the hook.
	 */
	uint64_t *dying;
	struct tg_plan_reclaim *reclaim;
};

struct tg_plan;    /* one named plan: its prefixes, longest match */
struct tg_planset; /* every plan of one load, by plan id */

#endif
