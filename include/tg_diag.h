/*
 * tg_diag.h - what was wrong with an input file: file, line and reason.
 *
 * Loaders report every bad row here, keep the first TG_DIAG_KEEP in full and
 * count the rest, then refuse the whole input.  No allocation.
 */
#ifndef TG_DIAG_H
#define TG_DIAG_H

#define TG_DIAG_KEEP 16

struct tg_diag_msg {
	char file[160];
	unsigned line; /* 0 when the problem is not on one line */
	char reason[120];
};

struct tg_diag {
	unsigned count; /* problems reported, kept or not */
	struct tg_diag_msg msg[TG_DIAG_KEEP];
};

void tg_diag_init(struct tg_diag *d);
__attribute__((format(printf, 4, 5))) void tg_diag_add(struct tg_diag *d, const char *file,
                                                       unsigned line, const char *fmt, ...);
/* Write every kept message as "file:line: reason\n" to fd, and a count of the rest. */
void tg_diag_print(const struct tg_diag *d, int fd);

#endif
