/*
 * diag.c - collecting problems found in input files, without allocating.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tg_diag.h"

void
tg_diag_init(struct tg_diag *d)
{
	memset(d, 0, sizeof(*d));
}

void
tg_diag_add(struct tg_diag *d, const char *file, unsigned line, const char *fmt, ...)
{
	if (d == NULL)
		return;
	if (d->count < TG_DIAG_KEEP) {
		struct tg_diag_msg *m = &d->msg[d->count];
		va_list ap;

		snprintf(m->file, sizeof(m->file), "%s", file ? file : "-");
		m->line = line;
		va_start(ap, fmt);
		vsnprintf(m->reason, sizeof(m->reason), fmt, ap);
		va_end(ap);
	}
	d->count++;
}

void
tg_diag_print(const struct tg_diag *d, int fd)
{
	unsigned kept = d->count < TG_DIAG_KEEP ? d->count : TG_DIAG_KEEP;

	for (unsigned i = 0; i < kept; i++) {
		const struct tg_diag_msg *m = &d->msg[i];
		if (m->line)
			dprintf(fd, "%s:%u: %s\n", m->file, m->line, m->reason);
		else
			dprintf(fd, "%s: %s\n", m->file, m->reason);
	}
	if (d->count > kept)
		dprintf(fd, "... and %u more problem%s\n", d->count - kept,
		        d->count - kept == 1 ? "" : "s");
}
