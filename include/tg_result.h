/*
 * tg_result.h - the one enum of call outcomes, and usage categories.
 *
 * System failures travel as -errno; what happened to a call or an account
 * travels as enum tg_result.  Both enums are generated from tbl/.
 */
#ifndef TG_RESULT_H
#define TG_RESULT_H

#include "tg_limits.h"

enum tg_result {
#define TG_RESULT(n, d) TG_##n,
#include "tbl/tg_results.h"
#undef TG_RESULT
	TG_RESULT__COUNT
};

enum tg_category {
#define TG_CATEGORY(n, d) TG_CAT_##n,
#include "tbl/tg_categories.h"
#undef TG_CATEGORY
	TG_CATEGORY__COUNT
};

_Static_assert(TG_CATEGORY__COUNT <= TG_CATEGORIES_MAX, "usage record holds TG_CATEGORIES_MAX");

/* "BLOCKED", "NORATE", ...: the wire code of a result. */
const char *tg_result_name(enum tg_result r);
/* A short human description of a result. */
const char *tg_result_text(enum tg_result r);
/* "local", "international", ...: the CSV and wire name of a category. */
const char *tg_category_name(enum tg_category c);
/* The category called name (len bytes, case-sensitive), or -1. */
int tg_category_parse(const char *name, size_t len);

#endif
