/*
 * tg_names.h - the spelled names of the account states, refill modes and
 * standing events.
 *
 * One place turns enum tg_acct_state and enum tg_refill_mode into the words
 * the wire, the accounts file, the refill stream and the tools use, and back:
 * both are generated from tbl/tg_acct_states.h and tbl/tg_refill_modes.h.
 * Header-only, so tools that read the segment need nothing of the engine.
 */
#ifndef TG_NAMES_H
#define TG_NAMES_H

#include <stddef.h>
#include <string.h>

#include "tg_shm-t.h"

static const char *const tg__acct_state_names[] = {
#define TG_ACCT_STATE(e, n, v, d) [v] = #n,
#include "tbl/tg_acct_states.h"
#undef TG_ACCT_STATE
};
_Static_assert(sizeof(tg__acct_state_names) / sizeof(tg__acct_state_names[0]) ==
                   TG_ACCT_STATE__COUNT,
               "tbl/tg_acct_states.h: values contiguous from 0");

static const char *const tg__refill_mode_names[] = {
#define TG_REFILL_MODE(e, n, v, d) [v] = #n,
#include "tbl/tg_refill_modes.h"
#undef TG_REFILL_MODE
};
_Static_assert(sizeof(tg__refill_mode_names) / sizeof(tg__refill_mode_names[0]) ==
                   TG_REFILL_MODE__COUNT,
               "tbl/tg_refill_modes.h: values contiguous from 0");

/* "active", "suspended", "closed"; "?" for a value no state has. */
static inline const char *
tg_acct_state_name(unsigned state)
{
	return state < TG_ACCT_STATE__COUNT ? tg__acct_state_names[state] : "?";
}

/* "off", "add", "topup"; "?" for a value no mode has. */
static inline const char *
tg_refill_mode_name(unsigned mode)
{
	return mode < TG_REFILL_MODE__COUNT ? tg__refill_mode_names[mode] : "?";
}

/* The state called name (len bytes, exactly as spelled), or -1. */
static inline int
tg_acct_state_parse(const char *name, size_t len)
{
	for (unsigned i = 0; i < TG_ACCT_STATE__COUNT; i++)
		if (strlen(tg__acct_state_names[i]) == len &&
		    memcmp(tg__acct_state_names[i], name, len) == 0)
			return (int)i;
	return -1;
}

/* The refill mode called name (len bytes, exactly as spelled), or -1. */
static inline int
tg_refill_mode_parse(const char *name, size_t len)
{
	for (unsigned i = 0; i < TG_REFILL_MODE__COUNT; i++)
		if (strlen(tg__refill_mode_names[i]) == len &&
		    memcmp(tg__refill_mode_names[i], name, len) == 0)
			return (int)i;
	return -1;
}

static const char *const tg__standing_event_names[] = {
#define TG_STANDING_EVENT(e, n, v, d) [v] = #n,
#include "tbl/tg_standing_events.h"
#undef TG_STANDING_EVENT
};

/*
 * "none", "failed", "suspended", "restored", "closed", "paid": what a
 * standing change did (enum tg_standing_event); "?" for a value none has.
 */
static inline const char *
tg_standing_event_name(unsigned e)
{
	return e < sizeof(tg__standing_event_names) / sizeof(tg__standing_event_names[0])
	           ? tg__standing_event_names[e]
	           : "?";
}

#endif
