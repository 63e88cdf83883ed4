/*
 * tg_atomic.h - the atomic operations tollgate uses, on Concurrency Kit.
 *
 * Everything goes through ck_pr.  The one operation ck spells in assembly only
 * (cmpxchg16b, for an account's balance/hold pair) is wrapped here so a
 * ThreadSanitizer build can use the compiler's instrumented builtins instead;
 * under TSan ck itself is switched to its builtin backend for the same reason.
 */
#ifndef TG_ATOMIC_H
#define TG_ATOMIC_H

#include <stdbool.h>
#include <stdint.h>

#if defined(__SANITIZE_THREAD__)
#define TG_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TG_TSAN 1
#endif
#endif

#if defined(TG_TSAN) && !defined(CK_USE_CC_BUILTINS)
#define CK_USE_CC_BUILTINS 1
#endif

#include <ck_pr.h>

/*
 * Loads and stores.  ck's builtin backend spells these as volatile accesses,
 * which ThreadSanitizer cannot tell from plain ones, so a TSan build uses the
 * compiler's atomic builtins directly.
 */
#if defined(TG_TSAN)
#define tg_load_8(p)       __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define tg_load_32(p)      __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define tg_load_64(p)      __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define tg_store_8(p, v)   __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define tg_store_32(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define tg_store_64(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define tg_load_ptr(p)     __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define tg_store_ptr(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#else
#define tg_load_8(p)       ck_pr_load_8(p)
#define tg_load_32(p)      ck_pr_load_32(p)
#define tg_load_64(p)      ck_pr_load_64(p)
#define tg_store_8(p, v)   ck_pr_store_8((p), (v))
#define tg_store_32(p, v)  ck_pr_store_32((p), (v))
#define tg_store_64(p, v)  ck_pr_store_64((p), (v))
#define tg_load_ptr(p)     ck_pr_load_ptr(p)
#define tg_store_ptr(p, v) ck_pr_store_ptr((p), (v))
#endif

/*
 * Compare-and-swap two adjacent 64-bit words (16-byte aligned).  On failure
 * *cmp receives the current contents.  Returns true when the swap happened.
 */
static inline bool
tg_cas_pair(uint64_t target[2], uint64_t cmp[2], const uint64_t set[2])
{
#if defined(TG_TSAN)
	unsigned __int128 c, s;
	c = (unsigned __int128)cmp[1] << 64 | cmp[0];
	s = (unsigned __int128)set[1] << 64 | set[0];
	bool ok = __atomic_compare_exchange_n((unsigned __int128 *)(void *)target, &c, s, false,
	                                      __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	cmp[0] = (uint64_t)c;
	cmp[1] = (uint64_t)(c >> 64);
	return ok;
#else
	uint64_t v[2];
	bool ok = ck_pr_cas_64_2_value(target, cmp, (uint64_t *)set, v);
	cmp[0] = v[0];
	cmp[1] = v[1];
	return ok;
#endif
}

#endif
