/*
 * tg_datadir.h - the data directory's lock: one writer per directory; and
 * its small files written whole or not at all.
 *
 * tollgated holds DIR/LOCK (flock, exclusive) for as long as it runs, with
 * its pid written in it; tollctl's offline journal commands take the same
 * lock, so neither writes a journal the other is writing.  The lock goes
 * with the process: a crash releases it, and a stale pid in the file means
 * nothing (tg_datadir_holder checks the process is alive).
 */
#ifndef TG_DATADIR_H
#define TG_DATADIR_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Take DIR/LOCK (created 0600 when missing) without waiting.  own: also
 * write this process's pid into it, as tollgated does (a failure to write
 * is logged and ignored: the lock is what counts).  Returns the fd, to keep
 * open while the lock is needed, -EWOULDBLOCK when another process holds
 * it, or -errno.
 */
int tg_datadir_lock(const char *dir, bool own);
/* The pid written into DIR/LOCK when it names a live process, else 0. */
long tg_datadir_holder(const char *dir);
/*
 * Replace DIR/NAME with len bytes of text, so that a crash leaves the old
 * file or the new one, never part of either: DIR/NAME.tmp written and
 * synced, renamed over DIR/NAME, DIR synced.  0 or -errno (the temporary
 * file removed).
 */
int tg_datadir_write(const char *dir, const char *name, const char *text, size_t len);

#endif
