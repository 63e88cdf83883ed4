/*
 * tg_assert.h - assertions that stay on in production.
 *
 * A broken invariant in a money path must stop the process, not be compiled
 * away: TG_ASSERT does not depend on NDEBUG.  Objects handed across threads or
 * through io_uring user_data carry a magic number checked with TG_CHECK_OBJ.
 */
#ifndef TG_ASSERT_H
#define TG_ASSERT_H

#include <stddef.h>

_Noreturn void tg_panic(const char *file, int line, const char *expr);

#define TG_ASSERT(e)   ((e) ? (void)0 : tg_panic(__FILE__, __LINE__, #e))
#define TG_LIKELY(e)   __builtin_expect(!!(e), 1)
#define TG_UNLIKELY(e) __builtin_expect(!!(e), 0)

#define TG_CHECK_OBJ(p, m)         TG_ASSERT((p)->magic == (m))
#define TG_CHECK_OBJ_NOTNULL(p, m) TG_ASSERT((p) != NULL && (p)->magic == (m))

#define TG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
