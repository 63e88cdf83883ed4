/*
 * harness.h - start the real tollgated for integration tests.
 *
 * A test gets a private directory for its input files and one or more
 * daemons, each on a port the kernel picked (--port 0, read back from the
 * daemon's log) and with a shared-memory segment of its own that is unlinked
 * when the daemon stops.  The binary is found through the TOLLGATED
 * environment variable, which meson sets.  The harness never asserts: it
 * returns errors and leaves judging them to the test.
 */
#ifndef TG_HARNESS_H
#define TG_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#include "tg_clock.h"

#define IT_PATH_MAX 512

struct it_daemon {
	pid_t pid;
	uint16_t port;
	char shm[64];
	char log[IT_PATH_MAX];  /* this run's log */
	char data[IT_PATH_MAX]; /* --data-dir: <dir>/data-<n>, kept across restarts */
	unsigned runs;          /* restarts so far */
	char base[IT_PATH_MAX]; /* <dir>/tollgated-<n>: the logs are <base>.log, <base>.<run>.log */
};

/* Make a fresh private directory (mode 0700) under TMPDIR or /tmp.  0 or -errno. */
int it_dir_make(char *path, size_t len);
/* Remove the regular files in dir, then dir itself. */
void it_dir_remove(const char *dir);
/* Write text to dir/name (replacing it), and its path into path.  0 or -errno. */
int it_file_write(const char *dir, const char *name, const char *text, char *path, size_t len);

/*
 * Start tollgated with a unique segment name, port 0, two workers, small id
 * and call tables, and no demo accounts; flags (a NULL-terminated list of
 * "--key", "value" pairs, may be NULL) come last, so they override those.
 * Returns once the daemon logged that it is ready and answered a PING (with
 * requirepass set, an AUTH), within 20 s.  On failure the daemon is stopped,
 * its log copied to stderr, and -1 returned.  Its log is kept in dir.
 */
int it_start(struct it_daemon *d, const char *dir, const char *const *flags);
/*
 * Start d again after it stopped or was killed: same segment name and data
 * directory, a new port and a new log (<name>.<run>.log).  reboot: unlink
 * the segment first, as a reboot would.  Flags as for it_start.
 */
int it_restart(struct it_daemon *d, const char *const *flags, int reboot);
/* SIGKILL and reap, leaving segment and data as a crash would.  0, or -1/1. */
int it_kill(struct it_daemon *d);
/*
 * SIGTERM, wait up to 10 s (then SIGKILL), unlink the segment.  Returns the
 * exit status (0 for a clean stop), -1 if the daemon had to be killed, -2 if
 * it exited 0 but its log holds a sanitizer report.
 */
int it_stop(struct it_daemon *d);
/* it_stop, but the segment stays, as a clean stop leaves it. */
int it_term(struct it_daemon *d);
/* Whether the daemon's log holds the text. */
int it_log_has(const struct it_daemon *d, const char *text);

/* A hiredis connection with 10 s timeouts, or NULL. */
redisContext *it_connect(const struct it_daemon *d);
/* A plain blocking TCP socket to the daemon (TCP_NODELAY), or -1. */
int it_raw_connect(uint16_t port);
/* Write all n bytes.  0 or -1. */
int it_raw_write(int fd, const void *p, size_t n);
/*
 * Read until the peer closes or nothing arrives for quiet_ms (or cap bytes
 * are in).  Returns the bytes read (NUL-terminated, so cap must leave room)
 * and sets *closed to 1 if the peer closed, 0 if it went quiet.
 */
size_t it_raw_read(int fd, char *buf, size_t cap, int quiet_ms, int *closed);

/* Sleep ms milliseconds, through signals. */
void it_sleep_ms(unsigned ms);

#endif
