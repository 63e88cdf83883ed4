/*
 * tg_clock.h - the clocks, read one way everywhere.
 *
 * Every program of the tree (the engine, the daemon, the tools, the benches,
 * the tests) reads a clock through these: nanoseconds, milliseconds or
 * seconds of a clockid_t, the monotonic clock by default.  Header-only and
 * free of the engine, so any program includes it.
 */
#ifndef TG_CLOCK_H
#define TG_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds of clock id (CLOCK_REALTIME: since the epoch). */
static inline uint64_t
tg_clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Milliseconds of clock id, rounded down. */
static inline uint64_t
tg_clock_ms(clockid_t id)
{
	return tg_clock_ns(id) / 1000000u;
}

/* The monotonic clock in nanoseconds. */
static inline uint64_t
tg_mono_ns(void)
{
	return tg_clock_ns(CLOCK_MONOTONIC);
}

/* The monotonic clock in milliseconds. */
static inline uint64_t
tg_mono_ms(void)
{
	return tg_clock_ms(CLOCK_MONOTONIC);
}

/*
 * The time ms milliseconds from now on clock id, as a timespec: the
 * deadline pthread_cond_timedwait takes (CLOCK_REALTIME unless the
 * condition variable was set up with another clock).
 */
static inline struct timespec
tg_clock_after_ms(clockid_t id, uint64_t ms)
{
	uint64_t t = tg_clock_ns(id) + ms * 1000000u;
	return (struct timespec){.tv_sec = (time_t)(t / 1000000000u),
	                         .tv_nsec = (long)(t % 1000000000u)};
}

/* The monotonic clock in whole seconds. */
static inline uint64_t
tg_mono_s(void)
{
	return tg_clock_ns(CLOCK_MONOTONIC) / 1000000000u;
}

#endif
