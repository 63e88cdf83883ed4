/*
 * fuzz.h - what the fuzz targets of tests/fuzz share (docs/FUZZING.md).
 *
 * Each fuzz_<name>.c defines LLVMFuzzerTestOneInput and nothing else that is
 * visible: linked with -fsanitize=fuzzer it is a libFuzzer binary, linked with
 * replay.c it is a plain program that replays a corpus.  A target checks
 * properties as well as surviving: FUZZ_CHECK aborts on a violated one, so
 * both libFuzzer and the replay test report it as a crash.  Targets must be
 * deterministic, must not leak, and keep their global state bounded.
 */
#ifndef TG_FUZZ_H
#define TG_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

_Noreturn void fuzz_fail(const char *file, int line, const char *expr);
/* What an input did, to stderr, only when FUZZ_VERBOSE is set (for writing seeds). */
__attribute__((format(printf, 1, 2))) void fuzz_note(const char *fmt, ...);

/* A property of the code under test; violated, the input is a crash. */
#define FUZZ_CHECK(e) ((e) ? (void)0 : fuzz_fail(__FILE__, __LINE__, #e))

/*
 * A memory-backed file (memfd) for loaders that take a path: created on the
 * first call, its content replaced by each fuzz_memfd_put, which returns the
 * path to open ("/proc/self/fd/N").  One per label per process.
 */
struct fuzz_memfd {
	int fd;
	char path[32];
};
const char *fuzz_memfd_put(struct fuzz_memfd *m, const char *label, const void *p, size_t n);

/*
 * A private directory under $TMPDIR (or /tmp), made on the first call and
 * removed with its files at exit.  Files are written whole, replacing any.
 */
const char *fuzz_tmpdir(const char *label);
void fuzz_write_file(const char *dir, const char *name, const void *p, size_t n);

/*
 * The length of the one RESP2 reply at p[0..len) (+, -, :, $, * nested up to
 * depth 8), or 0 when those bytes do not begin with a whole, well-formed reply.
 */
size_t fuzz_resp_reply(const char *p, size_t len);

#endif
