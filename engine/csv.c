/*
 * csv.c - line splitting and error reporting for the CSV loaders.
 *
 * Reads a whole file into memory once (inputs are loaded at start-up or on
 * reload, never on the hot path) and hands each row to the loader.  Never
 * decides what a field means.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csv.h"
#include "tg_log.h"
#include "tg_limits.h"

const char *
tg__csv_show(char buf[40], const char *s, size_t len)
{
	return tg_log_show(buf, 32, s, len);
}

static int
read_all(const char *path, char **out, size_t *outlen)
{
	size_t cap = 64 * 1024, len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf;

	if (fd < 0)
		return -errno;
	buf = malloc(cap);
	if (buf == NULL) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		if (len == cap) {
			char *nb = realloc(buf, cap * 2);
			if (nb == NULL) {
				free(buf);
				close(fd);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			int rc = -errno;
			if (rc == -EINTR)
				continue;
			free(buf);
			close(fd);
			return rc;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	*out = buf;
	*outlen = len;
	return 0;
}

static bool
blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t')
			return false;
	return true;
}

static void
split(const char *p, size_t len, struct tg__csv_row *row)
{
	const char *end = p + len;

	row->n = 0;
	for (;;) {
		const char *c = memchr(p, ',', (size_t)(end - p));
		const char *fe = c ? c : end;
		if (row->n < TG__CSV_FIELDS_MAX) {
			row->f[row->n] = p;
			row->len[row->n] = (size_t)(fe - p);
		}
		row->n++;
		if (c == NULL)
			break;
		p = c + 1;
	}
}

int
tg__csv_read(const char *path, const char *header, struct tg_diag *diag, tg__csv_fn fn, void *arg,
             unsigned *bad)
{
	return tg__csv_read_versions(path, &header, 1, diag, fn, arg, bad);
}

/* Which of headers[0..n) the line p[0..ll) is; n when none. */
static unsigned
header_version(const char *p, size_t ll, const char *const *headers, unsigned n)
{
	for (unsigned v = 0; v < n; v++)
		if (ll == strlen(headers[v]) && memcmp(p, headers[v], ll) == 0)
			return v;
	return n;
}

int
tg__csv_read_versions(const char *path, const char *const *headers, unsigned n,
                      struct tg_diag *diag, tg__csv_fn fn, void *arg, unsigned *bad)
{
	char *buf = NULL, why[sizeof(diag->msg[0].reason)];
	const char *header = headers[n - 1];
	size_t len = 0;
	unsigned lineno = 0, version = 0;
	bool seen_header = false;
	int rc = read_all(path, &buf, &len);

	if (rc != 0) {
		tg_diag_add(diag, path, 0, "cannot read: %s", strerror(-rc));
		(*bad)++;
		return rc;
	}
	const char *p = buf, *end = buf + len;
	if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3; /* a UTF-8 byte-order mark, as spreadsheets write it */
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		lineno++;
		if (le > p && le[-1] == '\r')
			le--;
		size_t ll = (size_t)(le - p);
		if (ll > TG_CSV_LINE_MAX) {
			tg_diag_add(diag, path, lineno, "line of %zu bytes, at most %u", ll,
			            TG_CSV_LINE_MAX);
			(*bad)++;
		} else if (blank(p, ll) || p[0] == '#') {
			/* skipped */
		} else if (!seen_header) {
			version = header_version(p, ll, headers, n);
			if (version == n) {
				tg_diag_add(diag, path, lineno, "bad header, expected %s", header);
				(*bad)++;
				break; /* the columns are unknown: the rest cannot be read */
			}
			seen_header = true;
		} else {
			struct tg__csv_row row;
			split(p, ll, &row);
			row.line = lineno;
			row.version = version;
			if (!fn(arg, &row, why, sizeof(why))) {
				tg_diag_add(diag, path, lineno, "%s", why);
				(*bad)++;
			}
		}
		p = nl ? nl + 1 : end;
	}
	if (!seen_header && *bad == 0) {
		tg_diag_add(diag, path, 0, "no header line (expected %s)", header);
		(*bad)++;
	}
	free(buf);
	return 0;
}
