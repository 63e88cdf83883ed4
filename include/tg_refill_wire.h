/*
 * tg_refill_wire.h - the names the refill publisher, the refill worker and
 * tollctl share in Redis (docs/REFILL.md): the stream entry's fields, the
 * customer profile's key and fields, and the payment methods a profile names.
 * Names only, header-only: the worker and tollctl include it without the
 * publisher.
 */
#ifndef TG_REFILL_WIRE_H
#define TG_REFILL_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

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

enum tg_profile_field {
#define TG_PROFILE_FIELD(e, n, r, d) TG_PF_##e,
#include "tbl/tg_profile_fields.h"
#undef TG_PROFILE_FIELD
	TG_PF__COUNT
};

/* "email", "method", ...: the name of profile field f (f < TG_PF__COUNT). */
static inline const char *
tg_profile_field_name(enum tg_profile_field f)
{
	static const char *const names[] = {
#define TG_PROFILE_FIELD(e, n, r, d) #n,
#include "tbl/tg_profile_fields.h"
#undef TG_PROFILE_FIELD
	};
	return names[f];
}

/* True when a profile without field f cannot be charged. */
static inline bool
tg_profile_field_required(enum tg_profile_field f)
{
	static const bool required[] = {
#define TG_PROFILE_FIELD(e, n, r, d) r,
#include "tbl/tg_profile_fields.h"
#undef TG_PROFILE_FIELD
	};
	return required[f];
}

/* The profile field called name (len bytes, exactly as spelled), or -1. */
static inline int
tg_profile_field_parse(const char *name, size_t len)
{
	for (unsigned i = 0; i < TG_PF__COUNT; i++) {
		const char *n = tg_profile_field_name((enum tg_profile_field)i);
		if (strlen(n) == len && memcmp(n, name, len) == 0)
			return (int)i;
	}
	return -1;
}

enum tg_pay_method {
#define TG_PAY_METHOD(e, n, d) TG_PAY_##e,
#include "tbl/tg_pay_methods.h"
#undef TG_PAY_METHOD
	TG_PAY__COUNT
};

/* "card", "paypal": the name of method m (m < TG_PAY__COUNT). */
static inline const char *
tg_pay_method_name(enum tg_pay_method m)
{
	static const char *const names[] = {
#define TG_PAY_METHOD(e, n, d) #n,
#include "tbl/tg_pay_methods.h"
#undef TG_PAY_METHOD
	};
	return names[m];
}

/* The payment method called name (NUL-terminated, exactly as spelled), or -1. */
static inline int
tg_pay_method_parse(const char *name)
{
	for (unsigned i = 0; i < TG_PAY__COUNT; i++)
		if (strcmp(tg_pay_method_name((enum tg_pay_method)i), name) == 0)
			return (int)i;
	return -1;
}

#endif
