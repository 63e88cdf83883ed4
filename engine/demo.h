/*
 * demo.h - the bundled demo data (tools/demo/), compiled in so that
 * tollgated and tolldemo run with no files and no arguments.
 */
#ifndef TG__DEMO_H
#define TG__DEMO_H

extern const char tg__demo_rates[];
extern const char tg__demo_accounts[];
extern const char tg__demo_calls[];

/*
 * A path that reads as text (a sealed memfd, "/proc/self/fd/N"), so the
 * ordinary file loaders read embedded data.  Returns 0 or -errno.
 */
int tg__demo_path(const char *text, const char *label, char *path, size_t pathlen);

#endif
