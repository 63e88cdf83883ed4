/*
 * csv.h - reading tollgate's CSV inputs (rate plans, accounts), shared by the
 * loaders and by nobody else.
 *
 * The format is deliberately plain: one record per line, fields split on
 * ',', no quoting; a UTF-8 byte-order mark, CRLF line ends, blank lines and
 * lines starting with '#' are tolerated; the first other line must be the
 * exact header.  Each problem is reported with file, line and reason.
 */
#ifndef TG__CSV_H
#define TG__CSV_H

#include <stdbool.h>
#include <stddef.h>

#include "tg_diag.h"

#define TG__CSV_FIELDS_MAX 16

struct tg__csv_row {
	const char *f[TG__CSV_FIELDS_MAX];
	size_t len[TG__CSV_FIELDS_MAX];
	unsigned n;    /* fields on the line (may exceed TG__CSV_FIELDS_MAX: only that many kept) */
	unsigned line; /* 1-based */
	unsigned version; /* which of the accepted headers the file has: 0 for the first */
};

/* Check one row; false with a reason in why refuses it. */
typedef bool (*tg__csv_fn)(void *arg, const struct tg__csv_row *row, char *why, size_t whylen);

/*
 * Read path, passing each row after the header to fn.  Every refused row,
 * over-long line or header problem is reported in diag and counted in *bad.
 * Returns 0 once the file was read (even with bad rows), or -errno when it
 * could not be (reported in diag too).
 */
int tg__csv_read(const char *path, const char *header, struct tg_diag *diag, tg__csv_fn fn,
                 void *arg, unsigned *bad);
/*
 * tg__csv_read for a file with versions: headers[0..n) are the headers of
 * version 0, 1, ... (oldest first).  The header found sets each row's
 * version; a header that is none of them is reported naming the newest.
 */
int tg__csv_read_versions(const char *path, const char *const *headers, unsigned n,
                          struct tg_diag *diag, tg__csv_fn fn, void *arg, unsigned *bad);

/* Quote at most 32 bytes of s for a reason; non-printables as '?'. */
const char *tg__csv_show(char buf[40], const char *s, size_t len);

#endif
