/*
 * assert.c - tg_panic, and the names of results and categories.
 *
 * The name tables are generated from include/tbl/ so the enum, the wire codes
 * and the docs cannot drift apart.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_assert.h"
#include "tg_result.h"

void
tg_panic(const char *file, int line, const char *expr)
{
	fprintf(stderr, "tollgate: assertion failed at %s:%d: %s\n", file, line, expr);
	fflush(stderr);
	abort();
}

static const char *const result_names[] = {
#define TG_RESULT(n, d) #n,
#include "tbl/tg_results.h"
#undef TG_RESULT
};

static const char *const result_texts[] = {
#define TG_RESULT(n, d) d,
#include "tbl/tg_results.h"
#undef TG_RESULT
};

static const char *const category_names[] = {
#define TG_CATEGORY(n, d) #n,
#include "tbl/tg_categories.h"
#undef TG_CATEGORY
};

const char *
tg_result_name(enum tg_result r)
{
	TG_ASSERT((unsigned)r < TG_RESULT__COUNT);
	return result_names[r];
}

const char *
tg_result_text(enum tg_result r)
{
	TG_ASSERT((unsigned)r < TG_RESULT__COUNT);
	return result_texts[r];
}

const char *
tg_category_name(enum tg_category c)
{
	TG_ASSERT((unsigned)c < TG_CATEGORY__COUNT);
	return category_names[c];
}

int
tg_category_parse(const char *name, size_t len)
{
	for (size_t i = 0; i < TG_CATEGORY__COUNT; i++)
		if (strlen(category_names[i]) == len && memcmp(category_names[i], name, len) == 0)
			return (int)i;
	return -1;
}
