/*
 * fuzz.c - helpers shared by the fuzz targets: failing a property, files for
 * the loaders (memfd and a private directory), and a strict RESP2 reply
 * checker.  Built into every fuzz target and replay program; never into the
 * engine.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

void
fuzz_fail(const char *file, int line, const char *expr)
{
	fprintf(stderr, "%s:%d: fuzz property violated: %s\n", file, line, expr);
	abort();
}

void
fuzz_note(const char *fmt, ...)
{
	static int verbose = -1;
	va_list ap;

	if (verbose < 0)
		verbose = getenv("FUZZ_VERBOSE") != NULL;
	if (!verbose)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		FUZZ_CHECK(w > 0);
		c += w;
		n -= (size_t)w;
	}
}

const char *
fuzz_memfd_put(struct fuzz_memfd *m, const char *label, const void *p, size_t n)
{
	if (m->path[0] == '\0') {
		m->fd = memfd_create(label, MFD_CLOEXEC);
		FUZZ_CHECK(m->fd >= 0);
		FUZZ_CHECK(fchmod(m->fd, 0600) == 0); /* as a file of secrets must be */
		snprintf(m->path, sizeof(m->path), "/proc/self/fd/%d", m->fd);
	}
	FUZZ_CHECK(ftruncate(m->fd, 0) == 0);
	FUZZ_CHECK(lseek(m->fd, 0, SEEK_SET) == 0);
	write_all(m->fd, p, n);
	return m->path;
}

/* The directories made by fuzz_tmpdir, removed at exit. */
#define TMPDIRS_MAX 4
static char tmpdirs[TMPDIRS_MAX][256];
static unsigned ntmpdirs;

static void
remove_tmpdirs(void)
{
	for (unsigned i = 0; i < ntmpdirs; i++) {
		DIR *d = opendir(tmpdirs[i]);
		struct dirent *e;

		while (d != NULL && (e = readdir(d)) != NULL)
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
				unlinkat(dirfd(d), e->d_name, 0);
		if (d != NULL)
			closedir(d);
		rmdir(tmpdirs[i]);
	}
	ntmpdirs = 0;
}

const char *
fuzz_tmpdir(const char *label)
{
	const char *base = getenv("TMPDIR");

	FUZZ_CHECK(ntmpdirs < TMPDIRS_MAX);
	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	snprintf(tmpdirs[ntmpdirs], sizeof(tmpdirs[0]), "%s/tg-fuzz-%s-XXXXXX", base, label);
	FUZZ_CHECK(mkdtemp(tmpdirs[ntmpdirs]) != NULL);
	if (ntmpdirs == 0)
		atexit(remove_tmpdirs);
	return tmpdirs[ntmpdirs++];
}

void
fuzz_write_file(const char *dir, const char *name, const void *p, size_t n)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0);
	write_all(fd, p, n);
	close(fd);
}

/* ---- RESP2 replies ---- */

/*
 * A decimal at p[*i..len) ending in CRLF: no sign, no leading zero, at most
 * 19 digits.  Moves *i past the CRLF.
 */
static bool
reply_num(const char *p, size_t len, size_t *i, uint64_t *v)
{
	size_t start = *i, k = start;

	*v = 0;
	while (k < len && p[k] >= '0' && p[k] <= '9') {
		if (k - start == 19 || (k > start && *v == 0))
			return false;
		*v = *v * 10 + (uint64_t)(p[k] - '0');
		k++;
	}
	if (k == start || len - k < 2 || p[k] != '\r' || p[k + 1] != '\n')
		return false;
	*i = k + 2;
	return true;
}

static size_t
reply_at(const char *p, size_t len, unsigned depth)
{
	size_t i = 1;
	uint64_t n;

	if (len == 0 || depth > 8)
		return 0;
	switch (p[0]) {
	case '+':
	case '-':
		/* A line: no CR or LF inside; an error has at least a code. */
		while (i < len && p[i] != '\r' && p[i] != '\n')
			i++;
		if (len - i < 2 || p[i] != '\r' || p[i + 1] != '\n' || (p[0] == '-' && i == 1))
			return 0;
		return i + 2;
	case ':':
		if (i < len && p[i] == '-')
			i++;
		if (!reply_num(p, len, &i, &n) || (p[1] == '-' && n == 0))
			return 0;
		return i;
	case '$':
		if (len - i >= 4 && memcmp(p + i, "-1\r\n", 4) == 0)
			return i + 4;
		if (!reply_num(p, len, &i, &n) || len - i < n + 2)
			return 0;
		i += n;
		if (p[i] != '\r' || p[i + 1] != '\n')
			return 0;
		return i + 2;
	case '*':
		if (len - i >= 4 && memcmp(p + i, "-1\r\n", 4) == 0)
			return i + 4;
		if (!reply_num(p, len, &i, &n))
			return 0;
		for (uint64_t k = 0; k < n; k++) {
			size_t e = reply_at(p + i, len - i, depth + 1);
			if (e == 0)
				return 0;
			i += e;
		}
		return i;
	default:
		return 0;
	}
}

size_t
fuzz_resp_reply(const char *p, size_t len)
{
	return reply_at(p, len, 0);
}
