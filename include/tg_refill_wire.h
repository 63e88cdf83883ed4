/*
 * tg_refill_wire.h - the names the refill publisher, the refill worker and
 * tollctl share in Redis (docs/REFILL.md): the stream entry's fields and the
 * customer profile's key.  Names only, header-only: the worker and tollctl
 * include it without the publisher.
 */
#ifndef TG_REFILL_WIRE_H
#define TG_REFILL_WIRE_H

#include <stdbool.h>

/* The customer profile of an account is the hash TG_PROFILE_PREFIX "<account>". */
#define TG_PROFILE_PREFIX "tollgate:customer:"

enum tg_refill_field {
#define TG_REFILL_FIELD(e, n, r, d) TG_RF_##e,
#include "tbl/tg_refill_fields.h"
#undef TG_REFILL_FIELD
	TG_RF__COUNT
};

/* "id", "account", ...: the name of field f (f < TG_RF__COUNT). */
static inline const char *
tg_refill_field_name(enum tg_refill_field f)
{
	static const char *const names[] = {
#define TG_REFILL_FIELD(e, n, r, d) #n,
#include "tbl/tg_refill_fields.h"
#undef TG_REFILL_FIELD
	};
	return names[f];
}

/* True when an entry without field f is malformed. */
static inline bool
tg_refill_field_required(enum tg_refill_field f)
{
	static const bool required[] = {
#define TG_REFILL_FIELD(e, n, r, d) r,
#include "tbl/tg_refill_fields.h"
#undef TG_REFILL_FIELD
	};
	return required[f];
}

#endif
