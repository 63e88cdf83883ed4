/*
 * tg_config.h - tollgated's settings: defaults, config file, flags.
 *
 * The file is "key value" lines (as redis.conf), '#' starts a comment; every
 * key is also a command-line flag (--port 6390).  Later settings win: the
 * embedded defaults, then the file, then the flags.  See docs/CONFIG.md.
 */
#ifndef TG_CONFIG_H
#define TG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TG_CFG_STR_MAX 512

struct tg_config {
#define TG_CFG_STR(f)                        char f[TG_CFG_STR_MAX];
#define TG_CFG_U32(f)                        uint32_t f;
#define TG_CFG_U64(f)                        uint64_t f;
#define TG_CFG_MODE(f)                       uint32_t f;
#define TG_CFG_BOOL(f)                       bool f;
#define TG_CFG(name, kind, field, def, desc) TG_CFG_##kind(field)
#include "tbl/tg_config.h"
#undef TG_CFG
#undef TG_CFG_STR
#undef TG_CFG_U32
#undef TG_CFG_U64
#undef TG_CFG_MODE
#undef TG_CFG_BOOL
	char config_file[TG_CFG_STR_MAX];
};

/* Fill c with the embedded defaults. */
void tg_config_defaults(struct tg_config *c);
/* Set key to value.  Returns 0 or -EINVAL with a sentence in err. */
int tg_config_set(struct tg_config *c, const char *key, const char *value, char *err,
                  size_t errlen);
/* Apply a config file.  Returns 0, -errno or -EINVAL, with "file:line: reason" in err. */
int tg_config_load(struct tg_config *c, const char *path, char *err, size_t errlen);
/*
 * Apply command-line arguments: "-c FILE" / "--config FILE" first (wherever
 * it is), then every "--key value" in order.  Returns 0, 1 for --help (usage
 * printed), or -EINVAL with err set.
 */
int tg_config_args(struct tg_config *c, int argc, const char *const *argv, char *err,
                   size_t errlen);
/*
 * Check every setting against its limits (tbl/tg_config_limits.h) and the
 * rules between values (a power of two, a mode, a word): fn gets one
 * sentence per problem, "key: why".  Returns the number of problems.  Reads
 * nothing but c: meant to run before anything is opened.
 */
unsigned tg_config_check(const struct tg_config *c, void (*fn)(void *arg, const char *msg),
                         void *arg);
/*
 * Rewrite the config file at path with key set to value (CONFIG REWRITE):
 * the first line setting key gets the new value, later ones go, every
 * other line (comments included) stays as it was; with no such line,
 * "key value" is appended.  An empty value removes key's lines (the
 * default applies).  Atomic: a temporary file beside it, fsync, rename,
 * fsync of the directory; its mode is kept.  0, or -errno with a sentence
 * in err (the file unchanged).
 */
int tg_config_rewrite(const char *path, const char *key, const char *value, char *err,
                      size_t errlen);
/* Print every setting, one "key value" line each (for --help and docs). */
void tg_config_usage(FILE *f);

#endif
