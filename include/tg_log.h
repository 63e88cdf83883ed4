/*
 * tg_log.h - one line per notable event (start, reload, errors), never per
 * call: "2026-11-26T13:40:00Z tollgated[4242]: message" on stderr.
 */
#ifndef TG_LOG_H
#define TG_LOG_H

/* The program name shown in each line ("tollgated"). */
void tg_log_init(const char *prog);
__attribute__((format(printf, 1, 2))) void tg_log(const char *fmt, ...);

#include <stddef.h>

/*
 * Outside input made safe to quote in one log line, error reply or reason:
 * at most max bytes of s (n bytes), anything but printable ASCII shown as
 * '?', "..." after a cut.  out holds max + 4 bytes.  Returns out.
 */
const char *tg_log_show(char *out, size_t max, const char *s, size_t n);

#endif
