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
	tg_money_t per_min;           /* micro-units per minute */
	tg_money_t connect;           /* connect fee, charged once per connected call */
	uint32_t initial;             /* first billing increment, seconds, >= 1 */
	uint32_t increment;           /* each later increment, seconds, >= 1 */
	uint32_t minimum;             /* minimum billed seconds of a connected call */
	uint8_t category;             /* enum tg_category */
	uint8_t prefix_len;           /* digits in prefix */
	char prefix[TG_DEST_MAX + 2]; /* NUL-terminated */
};

/*
 * The names of rate plans, each with a stable id.  Ids are handed out once
 * and never reused, so an account's plan id keeps its meaning across reloads
 * and engine restarts; the names live in the shared-memory segment.
 * Only one thread at a time registers names (the control thread); any thread
 * may read them.
 */
struct tg_plan_registry {
	char (*names)[TG_PLAN_NAME_MAX + 1]; /* cap slots */
	uint32_t *count;                     /* slots in use; published last */
	uint32_t cap;
};

struct tg_plan;    /* one named plan: its prefixes, longest match */
struct tg_planset; /* every plan of one load, by plan id */

#endif
