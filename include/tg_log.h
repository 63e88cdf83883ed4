/*
 * tg_log.h - one line per notable event (start, reload, errors), never per
 * call: "2026-11-26T13:40:00Z tollgated[4242]: message" on stderr.
 */
#ifndef TG_LOG_H
#define TG_LOG_H

/* The program name shown in each line ("tollgated"). */
void tg_log_init(const char *prog);
__attribute__((format(printf, 1, 2))) void tg_log(const char *fmt, ...);

#endif
