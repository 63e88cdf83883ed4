/*
 * refill_fixture.c - the refill tests' shared fixture (refill_fixture.h):
 * teardown, the customer profile, the maildir and the tollrefill workers.
 */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "rcmd.h"
#include "refill_fixture.h"
#include "tg_clock.h"
#include "tg_refill_wire.h"

#define LOG_MAX (1 << 17)

extern char **environ;

void
rfx_maildir_remove(const char *dir)
{
	static const char *const subs[] = {"tmp", "new", "cur"};
	char path[IT_PATH_MAX];

	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		it_pathf(path, sizeof(path), "%s/%s", dir, subs[i]);
		it_dir_remove(path);
	}
	it_dir_remove(dir);
}

void
rfx_setup(struct rfx *f, const char *accounts)
{
	memset(f, 0, sizeof(*f));
	assert_int_equal(it_dir_make(f->dir, sizeof(f->dir)), 0);
	it_pathf(f->mail, sizeof(f->mail), "%s/maildir", f->dir);
	if (accounts != NULL)
		assert_int_equal(
		    it_file_write(f->dir, "accounts.csv", accounts, f->csv, sizeof(f->csv)), 0);
	assert_int_equal(tg_test_redis_start(&f->redis), 0);
	f->r = tg_test_redis_connect(&f->redis);
	assert_non_null(f->r);
	it_run_cmd(f->r, "XGROUP CREATE " RFX_STREAM " " RFX_GROUP " $ MKSTREAM");
	it_run_cmd(f->r, "HSET tollgate:sim:tokens tok_declined decline");
}

void
rfx_teardown(struct rfx *f)
{
	if (f->r != NULL)
		redisFree(f->r);
	if (f->e != NULL)
		redisFree(f->e);
	if (f->d.pid > 0)
		assert_int_equal(it_stop(&f->d), 0);
	tg_test_redis_stop(&f->redis);
	rfx_maildir_remove(f->mail);
	it_dir_remove(f->dir);
}

void
rfx_profile(struct rfx *f, uint64_t acct, const char *email, const char *method, const char *token,
            const char *name)
{
	const char *v[TG_PF__COUNT] = {[TG_PF_EMAIL] = email,
	                               [TG_PF_METHOD] = method,
	                               [TG_PF_TOKEN] = token,
	                               [TG_PF_NAME] = name};

	for (unsigned i = 0; i < TG_PF__COUNT; i++)
		if (v[i] != NULL)
			it_run_cmd(f->r, "HSET " TG_PROFILE_PREFIX "%llu %s %s",
			           (unsigned long long)acct, tg_profile_field_name(i), v[i]);
}

int
rfx_teardown_test(void **state)
{
	rfx_teardown(*state);
	return 0;
}

bool
rfx_refill_pending(struct rfx *f, uint64_t acct)
{
	char s[64];
	it_acct_field(f->e, acct, "refill_pending", s, sizeof(s));
	return strcmp(s, "1") == 0;
}

void
rfx_expect_request(struct rfx *f, uint64_t acct, const char *request)
{
	char s[64];

	it_acct_field(f->e, acct, "refill_pending", s, sizeof(s));
	assert_string_equal(s, request[0] ? "1" : "0");
	it_acct_field(f->e, acct, "refill_request", s, sizeof(s));
	assert_string_equal(s, request);
}

unsigned
rfx_files(const struct rfx *f, const char *sub, const char *prefix)
{
	char path[IT_PATH_MAX];
	struct dirent *e;
	unsigned n = 0;

	it_pathf(path, sizeof(path), "%s/%s", f->mail, sub);
	DIR *d = opendir(path);
	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.' && strncmp(e->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(d);
	return n;
}

unsigned
rfx_mails(const struct rfx *f, uint64_t acct, const char *kind)
{
	char prefix[64], path[IT_PATH_MAX];
	struct dirent *e;
	unsigned n = 0;

	snprintf(prefix, sizeof(prefix), "refill.%llu.", (unsigned long long)acct);
	it_pathf(path, sizeof(path), "%s/new", f->mail);
	DIR *d = opendir(path);
	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name), k = strlen(kind);
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 && l > k &&
		    strcmp(e->d_name + l - k, kind) == 0)
			n++;
	}
	closedir(d);
	return n;
}

long
rfx_slurp(const char *path, char *buf, size_t cap)
{
	size_t len = 0;
	ssize_t k;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	while (len + 1 < cap && (k = read(fd, buf + len, cap - 1 - len)) > 0)
		len += (size_t)k;
	close(fd);
	buf[len] = '\0';
	return (long)len;
}

void
rfx_mail_read(const struct rfx *f, uint64_t acct, unsigned n, const char *kind, char *buf,
              size_t cap)
{
	char path[IT_PATH_MAX];

	it_pathf(path, sizeof(path), "%s/new/refill.%llu.%u.%s", f->mail, (unsigned long long)acct,
	         n, kind);
	if (rfx_slurp(path, buf, cap) < 0)
		fail_msg("no mail %s", path);
}

long long
rfx_gateway_calls(struct rfx *f, const char *request)
{
	return it_int_cmd(f->r, "HGET tollgate:sim:attempts %s", request);
}

void
rfx_expect_has(const char *text, const char *needle)
{
	if (strstr(text, needle) == NULL)
		fail_msg("expected \"%s\" in:\n%s", needle, text);
}

void
rfx_worker_start(struct rfx *f, struct rfx_worker *w, const char *const *extra, const char *env)
{
	const char *bin = getenv("TOLLREFILL");
	char redis[32], engine[32];
	const char *argv[48];
	char *envp[256];
	unsigned n = 0, k = 0;
	bool sendmail = false;

	if (bin == NULL || bin[0] == '\0')
		fail_msg("TOLLREFILL is not set (run through meson test)");
	snprintf(redis, sizeof(redis), "127.0.0.1:%u", f->redis.port);
	snprintf(engine, sizeof(engine), "127.0.0.1:%u", f->d.port);
	it_pathf(w->log, sizeof(w->log), "%s/tollrefill-%u.log", f->dir, ++f->runs);
	argv[n++] = bin;
	argv[n++] = "--redis";
	argv[n++] = redis;
	argv[n++] = "--engine";
	argv[n++] = engine;
	for (unsigned i = 0; extra != NULL && extra[i] != NULL; i++)
		sendmail |= strcmp(extra[i], "--sendmail") == 0;
	if (!sendmail) {
		argv[n++] = "--maildir";
		argv[n++] = f->mail;
	}
	argv[n++] = "--backoff-ms";
	argv[n++] = "20";
	for (unsigned i = 0; extra != NULL && extra[i] != NULL; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	assert_true(n < sizeof(argv) / sizeof(argv[0]));
	/* The environment is built before fork: the child only execs. */
	for (char **e = environ; *e != NULL && k + 2 < sizeof(envp) / sizeof(envp[0]); e++)
		envp[k++] = *e;
	if (env != NULL)
		envp[k++] = (char *)env;
	envp[k] = NULL;

	pid_t parent = getpid();
	w->pid = fork();
	assert_true(w->pid >= 0);
	if (w->pid == 0) {
		int fd = open(w->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent || fd < 0 || null < 0 || dup2(null, 0) < 0 ||
		    dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(126);
		execve(bin, (char *const *)argv, envp);
		_exit(127);
	}
}

void
rfx_worker_log(const struct rfx_worker *w, char *buf, size_t cap)
{
	if (rfx_slurp(w->log, buf, cap) < 0)
		buf[0] = '\0';
}

int
rfx_worker_said(const struct rfx_worker *w, const char *text)
{
	static char buf[LOG_MAX];
	rfx_worker_log(w, buf, sizeof(buf));
	return strstr(buf, text) != NULL;
}

void
rfx_worker_dump(const struct rfx_worker *w)
{
	static char buf[LOG_MAX];
	rfx_worker_log(w, buf, sizeof(buf));
	fprintf(stderr, "---- %s ----\n%s---- end ----\n", w->log, buf);
}

int
rfx_worker_wait(struct rfx_worker *w, uint64_t timeout_ms)
{
	static char buf[LOG_MAX];
	uint64_t deadline = tg_mono_ms() + timeout_ms;
	int status = 0;

	for (;;) {
		pid_t p = waitpid(w->pid, &status, WNOHANG);
		if (p == w->pid)
			break;
		if (tg_mono_ms() >= deadline) {
			kill(w->pid, SIGKILL);
			waitpid(w->pid, &status, 0);
			break;
		}
		it_sleep_ms(5);
	}
	w->pid = 0;
	/* The worker's stderr is its log: a sanitizer report there fails the test. */
	rfx_worker_log(w, buf, sizeof(buf));
	if (strstr(buf, "runtime error:") != NULL || strstr(buf, "Sanitizer") != NULL)
		fail_msg("sanitizer report in %s:\n%s", w->log, buf);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int
rfx_worker_stop(struct rfx_worker *w)
{
	kill(w->pid, SIGTERM);
	return rfx_worker_wait(w, 10000);
}

bool
rfx_waited_too_long(uint64_t t0, uint64_t wait_ms, const struct rfx_worker *w)
{
	if (tg_mono_ms() - t0 < wait_ms)
		return false;
	if (w != NULL)
		rfx_worker_dump(w);
	return true;
}
