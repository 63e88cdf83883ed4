/*
 * config.c - parsing tollgated's settings from the file and the flags.
 *
 * Every setting is declared once in include/tbl/tg_config.h; this file only
 * knows how to parse each kind.  A bad value is refused with the key, the
 * value and the reason; nothing here ever guesses.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tg_assert.h"
#include "tg_config.h"
#include "tg_jwriter.h"
#include "tg_limits.h"
#include "tg_refill.h"
#include "tg_resp.h"

enum kind { K_STR, K_U32, K_U64, K_MODE, K_BOOL };

struct key {
	const char *name;
	enum kind kind;
	size_t off;
	const char *def;
	const char *desc;
};

static const struct key keys[] = {
#define TG_CFG(name, kind, field, def, desc)                                                       \
	{name, K_##kind, offsetof(struct tg_config, field), def, desc},
#include "tbl/tg_config.h"
#undef TG_CFG
};

static const struct key *
find_key(const char *name)
{
	for (size_t i = 0; i < TG_ARRAY_LEN(keys); i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static bool
parse_unsigned(const char *v, int base, uint64_t max, uint64_t *out)
{
	char *end;
	if (*v == '\0' || *v == '-' || *v == '+' || *v == ' ')
		return false;
	errno = 0;
	unsigned long long n = strtoull(v, &end, base);
	if (errno != 0 || *end != '\0' || n > max)
		return false;
	*out = n;
	return true;
}

int
tg_config_set(struct tg_config *c, const char *key, const char *value, char *err, size_t errlen)
{
	const struct key *k = find_key(key);
	char *field;
	uint64_t n;

	if (k == NULL) {
		snprintf(err, errlen, "unknown setting '%s'", key);
		return -EINVAL;
	}
	field = (char *)c + k->off;
	switch (k->kind) {
	case K_STR:
		if (strlen(value) >= TG_CFG_STR_MAX) {
			snprintf(err, errlen, "%s: value longer than %d bytes", key,
			         TG_CFG_STR_MAX - 1);
			return -EINVAL;
		}
		memcpy(field, value, strlen(value) + 1);
		return 0;
	case K_U32:
		if (!parse_unsigned(value, 10, UINT32_MAX, &n))
			break;
		*(uint32_t *)(void *)field = (uint32_t)n;
		return 0;
	case K_U64:
		if (!parse_unsigned(value, 10, UINT64_MAX, &n))
			break;
		*(uint64_t *)(void *)field = n;
		return 0;
	case K_MODE:
		if (!parse_unsigned(value, 8, 0777, &n))
			break;
		*(uint32_t *)(void *)field = (uint32_t)n;
		return 0;
	case K_BOOL:
		if (strcmp(value, "yes") == 0 || strcmp(value, "no") == 0) {
			*(bool *)(void *)field = value[0] == 'y';
			return 0;
		}
		snprintf(err, errlen, "%s: '%s' is not yes or no", key, value);
		return -EINVAL;
	}
	snprintf(err, errlen, "%s: '%s' is not a %s", key, value,
	         k->kind == K_MODE ? "file mode in octal (0600)" : "non-negative integer");
	return -EINVAL;
}

void
tg_config_defaults(struct tg_config *c)
{
	char err[128];

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < TG_ARRAY_LEN(keys); i++) {
		int rc = tg_config_set(c, keys[i].name, keys[i].def, err, sizeof(err));
		TG_ASSERT(rc == 0);
	}
}

/* Strip leading and trailing blanks in place. */
static char *
trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 &&
	       (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

int
tg_config_load(struct tg_config *c, const char *path, char *err, size_t errlen)
{
	char line[TG_CFG_STR_MAX + 128], why[256];
	unsigned lineno = 0;
	FILE *f = fopen(path, "r");
	int rc = 0;

	if (f == NULL) {
		rc = -errno;
		snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(errno));
		return rc;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			snprintf(err, errlen, "%s:%u: line too long", path, lineno);
			rc = -EINVAL;
			break;
		}
		char *s = trim(line);
		if (*s == '\0' || *s == '#')
			continue;
		char *v = s + strcspn(s, " \t");
		if (*v != '\0')
			*v++ = '\0';
		v = trim(v);
		/* A value may be quoted, to hold spaces or be empty: requirepass "" */
		size_t vl = strlen(v);
		if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
			v[vl - 1] = '\0';
			v++;
		}
		if (tg_config_set(c, s, v, why, sizeof(why)) != 0) {
			snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
			rc = -EINVAL;
			break;
		}
	}
	fclose(f);
	if (rc == 0)
		snprintf(c->config_file, sizeof(c->config_file), "%s", path);
	return rc;
}

/* ---- CONFIG REWRITE ---- */

/* Config files are small: a bigger one is refused rather than read whole. */
#define REWRITE_MAX (1u << 20)

/* Whether line (not NUL-terminated, n bytes) sets key. */
static bool
line_sets(const char *line, size_t n, const char *key)
{
	size_t i = 0, kl = strlen(key);
	while (i < n && (line[i] == ' ' || line[i] == '\t'))
		i++;
	return n - i > kl && memcmp(line + i, key, kl) == 0 &&
	       (line[i + kl] == ' ' || line[i + kl] == '\t' || line[i + kl] == '\r' ||
	        line[i + kl] == '\n');
}

static int
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int
tg_config_rewrite(const char *path, const char *key, const char *value, char *err, size_t errlen)
{
	char tmp[TG_CFG_STR_MAX + 32], dir[TG_CFG_STR_MAX];
	struct stat st;
	char *in = NULL, *out = NULL;
	size_t in_len = 0, out_len = 0;
	bool done = false;
	int fd = -1, rc;

	int rfd = open(path, O_RDONLY | O_CLOEXEC);
	if (rfd < 0 || fstat(rfd, &st) != 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(-rc));
		goto out;
	}
	if ((uint64_t)st.st_size > REWRITE_MAX) {
		rc = -EFBIG;
		snprintf(err, errlen, "config file %s is larger than %u bytes", path, REWRITE_MAX);
		goto out;
	}
	in = malloc((size_t)st.st_size + 1);
	out = malloc((size_t)st.st_size + strlen(key) + strlen(value) + 4);
	if (in == NULL || out == NULL) {
		rc = -ENOMEM;
		snprintf(err, errlen, "CONFIG REWRITE: out of memory");
		goto out;
	}
	for (ssize_t r; in_len < (size_t)st.st_size; in_len += (size_t)r) {
		r = read(rfd, in + in_len, (size_t)st.st_size - in_len);
		if (r <= 0) {
			rc = r < 0 ? -errno : -EIO;
			snprintf(err, errlen, "cannot read config file %s: %s", path,
			         strerror(-rc));
			goto out;
		}
	}
	for (size_t pos = 0; pos < in_len;) {
		const char *nl = memchr(in + pos, '\n', in_len - pos);
		size_t n = nl ? (size_t)(nl - (in + pos)) + 1 : in_len - pos;
		if (!line_sets(in + pos, n, key)) {
			memcpy(out + out_len, in + pos, n);
			out_len += n;
		} else if (!done && value[0] != '\0') {
			out_len += (size_t)sprintf(out + out_len, "%s %s\n", key, value);
			done = true;
		}
		pos += n;
	}
	if (!done && value[0] != '\0') {
		if (out_len > 0 && out[out_len - 1] != '\n')
			out[out_len++] = '\n';
		out_len += (size_t)sprintf(out + out_len, "%s %s\n", key, value);
	}
	snprintf(tmp, sizeof(tmp), "%s.rewrite-XXXXXX", path);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(-rc));
		goto out;
	}
	if ((rc = write_all(fd, out, out_len)) != 0 || fchmod(fd, st.st_mode & 07777) != 0 ||
	    fsync(fd) != 0) {
		rc = rc ? rc : -errno;
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(-rc));
		unlink(tmp);
		goto out;
	}
	close(fd);
	fd = -1;
	if (rename(tmp, path) != 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(-rc));
		unlink(tmp);
		goto out;
	}
	/* The rename is durable once the directory is. */
	snprintf(dir, sizeof(dir), "%s", path);
	fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	rc = 0;
	if (fd < 0 || fsync(fd) != 0) {
		rc = -errno;
		snprintf(err, errlen, "config file %s rewritten, but its directory not synced: %s",
		         path, strerror(-rc));
	}
out:
	if (fd >= 0)
		close(fd);
	if (rfd >= 0)
		close(rfd);
	free(in);
	free(out);
	return rc;
}

/* ---- limits: every setting checked before anything is opened ---- */

struct limit {
	const char *name;
	uint64_t min, max;
	const char *why;
};

static const struct limit limits[] = {
#define TG_CFG_LIMIT(name, min, max, why) {name, min, max, why},
#include "tbl/tg_config_limits.h"
#undef TG_CFG_LIMIT
};

static uint64_t
value_of(const struct tg_config *c, const struct key *k)
{
	const char *field = (const char *)c + k->off;
	if (k->kind == K_U64)
		return *(const uint64_t *)(const void *)field;
	return *(const uint32_t *)(const void *)field;
}

/* Report one problem: "key: sentence". */
static void report(void (*fn)(void *, const char *), void *arg, unsigned *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
report(void (*fn)(void *, const char *), void *arg, unsigned *n, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fn(arg, msg);
	(*n)++;
}

unsigned
tg_config_check(const struct tg_config *c, void (*fn)(void *arg, const char *msg), void *arg)
{
	unsigned n = 0;

	for (size_t i = 0; i < TG_ARRAY_LEN(limits); i++) {
		const struct limit *l = &limits[i];
		const struct key *k = find_key(l->name);
		/* A limit for a setting that does not exist (or is not a number) is a build bug. */
		TG_ASSERT(k != NULL && (k->kind == K_U32 || k->kind == K_U64));
		uint64_t v = value_of(c, k);
		uint64_t top = k->kind == K_U64 ? UINT64_MAX : UINT32_MAX;
		if (v >= l->min && v <= l->max)
			continue;
		if (l->max >= top)
			report(fn, arg, &n, "%s: %llu is below %llu (%s)", l->name,
			       (unsigned long long)v, (unsigned long long)l->min, l->why);
		else
			report(fn, arg, &n, "%s: %llu is out of range %llu..%llu (%s)", l->name,
			       (unsigned long long)v, (unsigned long long)l->min,
			       (unsigned long long)l->max, l->why);
	}
	/* The rules a range cannot say. */
	if (c->refill_ring >= 2 && (c->refill_ring & (c->refill_ring - 1)) != 0)
		report(fn, arg, &n, "refill-ring: %u is not a power of two", c->refill_ring);
	if ((c->shm_mode & 0600) != 0600 || (c->shm_mode & 0133) != 0)
		report(fn, arg, &n,
		       "shm-mode: %04o must let the engine read and write and no one else write "
		       "(0600, or 0640 with shm-group for tollstat)",
		       c->shm_mode);
	/*
	 * What the refill publisher and the credentials would refuse at start-up
	 * (tg_refill_start, tg_auth_init): said here too, so that a bad setting
	 * is always exit 2 before anything is opened, never exit 1 half-way.
	 */
	if (c->redis_host[0] == '\0' || strlen(c->redis_host) > TG_REFILL_NAME_MAX)
		report(fn, arg, &n,
		       "redis-host: must be 1 to %d characters (\"none\": no publisher)",
		       TG_REFILL_NAME_MAX);
	if (c->refill_stream[0] == '\0' || strlen(c->refill_stream) > TG_REFILL_NAME_MAX)
		report(fn, arg, &n, "refill-stream: must be 1 to %d characters",
		       TG_REFILL_NAME_MAX);
	if (c->auth_addr_failures != 0 && c->auth_lockout == 0)
		report(fn, arg, &n,
		       "auth-lockout: 0 must be positive when auth-addr-failures is set");
	if (tg_durability_parse(c->durability) < 0)
		report(fn, arg, &n, "durability: '%s' must be durable, relaxed or off",
		       c->durability);
	return n;
}

void
tg_config_usage(FILE *f)
{
	fprintf(f, "usage: tollgated [-c FILE] [--KEY VALUE ...]\n\n"
	           "  -c, --config FILE   read settings from FILE (\"key value\" lines)\n"
	           "  -h, --help          this text\n\n"
	           "settings (each also a --flag), with defaults:\n");
	for (size_t i = 0; i < TG_ARRAY_LEN(keys); i++)
		fprintf(f, "  --%-20s %-12s %s\n", keys[i].name,
		        keys[i].def[0] ? keys[i].def : "\"\"", keys[i].desc);
}

int
tg_config_args(struct tg_config *c, int argc, const char *const *argv, char *err, size_t errlen)
{
	int rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			tg_config_usage(stdout);
			return 1;
		}
		if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
			if (i + 1 >= argc) {
				snprintf(err, errlen, "%s needs a file", argv[i]);
				return -EINVAL;
			}
			rc = tg_config_load(c, argv[i + 1], err, errlen);
			if (rc != 0)
				return rc;
		}
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			i++;
			continue;
		}
		if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
			snprintf(err, errlen, "unexpected argument '%s' (settings are --key value)",
			         a);
			return -EINVAL;
		}
		if (i + 1 >= argc) {
			snprintf(err, errlen, "%s needs a value", a);
			return -EINVAL;
		}
		rc = tg_config_set(c, a + 2, argv[i + 1], err, errlen);
		if (rc != 0)
			return rc;
		i++;
	}
	return 0;
}
