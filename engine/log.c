/*
 * log.c - event lines on stderr.  One write(2) per line, so lines from
 * several threads never interleave.  Not for the hot path.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tg_log.h"

static const char *prog_name = "tollgate";

void
tg_log_init(const char *prog)
{
	prog_name = prog;
}

void
tg_log(const char *fmt, ...)
{
	char line[1024];
	struct tm tm;
	time_t now = time(NULL);
	va_list ap;
	size_t n;

	gmtime_r(&now, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%SZ ", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n, "%s[%d]: ", prog_name, (int)getpid());
	va_start(ap, fmt);
	int k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	n = k < 0 ? n : (n + (size_t)k < sizeof(line) - 1 ? n + (size_t)k : sizeof(line) - 2);
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

const char *
tg_log_show(char *out, size_t max, const char *s, size_t n)
{
	size_t k = n < max ? n : max;

	for (size_t i = 0; i < k; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (n > k) {
		memcpy(out + k, "...", 3);
		k += 3;
	}
	out[k] = '\0';
	return out;
}
