/*
 * test_config.c - settings: defaults, the file, the flags, and refusals.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tg_config.h"

static void
test_defaults(void **state)
{
	struct tg_config c;
	(void)state;
	tg_config_defaults(&c);
	assert_string_equal(c.bind, "127.0.0.1");
	assert_int_equal(c.port, 6390);
	assert_int_equal(c.shm_mode, 0600);
	assert_true(c.shm_reuse);
	assert_int_equal(c.capacity, 1000000);
	assert_int_equal(c.max_grant, 3600);
	assert_int_equal(c.ids_window, 3024000); /* 35 days */
	assert_int_equal(c.ids_disk_max, 100000000);
	assert_string_equal(c.requirepass, "");
}

static void
test_set_and_refuse(void **state)
{
	struct tg_config c;
	char err[256];
	(void)state;
	tg_config_defaults(&c);
	assert_int_equal(tg_config_set(&c, "port", "7000", err, sizeof(err)), 0);
	assert_int_equal(c.port, 7000);
	assert_int_equal(tg_config_set(&c, "shm-mode", "0640", err, sizeof(err)), 0);
	assert_int_equal(c.shm_mode, 0640);
	assert_int_equal(tg_config_set(&c, "shm-reuse", "no", err, sizeof(err)), 0);
	assert_false(c.shm_reuse);
	assert_int_equal(tg_config_set(&c, "capacity", "18446744073709551615", err, sizeof(err)),
	                 0);
	assert_int_equal(tg_config_set(&c, "nope", "1", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "unknown setting 'nope'"));
	assert_int_equal(tg_config_set(&c, "port", "-1", err, sizeof(err)), -EINVAL);
	assert_int_equal(tg_config_set(&c, "port", "12ab", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "port"));
	assert_int_equal(tg_config_set(&c, "port", "", err, sizeof(err)), -EINVAL);
	assert_int_equal(tg_config_set(&c, "workers", "4294967296", err, sizeof(err)), -EINVAL);
	assert_int_equal(tg_config_set(&c, "shm-mode", "0800", err, sizeof(err)), -EINVAL);
	assert_int_equal(tg_config_set(&c, "shm-mode", "01777", err, sizeof(err)), -EINVAL);
	assert_int_equal(tg_config_set(&c, "shm-reuse", "maybe", err, sizeof(err)), -EINVAL);
	assert_int_equal(c.port, 7000);
}

static void
test_file_and_flags(void **state)
{
	struct tg_config c;
	char err[256], path[64];
	(void)state;
	snprintf(path, sizeof(path), "/tmp/tg-test-config-%d.conf", (int)getpid());
	FILE *f = fopen(path, "w");
	fputs("# a comment\n\nport 7001\n  workers\t3  \r\nrequirepass \"two words\"\n"
	      "rates /x/y.csv\n",
	      f);
	fclose(f);
	tg_config_defaults(&c);
	const char *argv[] = {"tollgated", "--port", "7002", "-c", path, "--bind", "0.0.0.0", NULL};
	assert_int_equal(tg_config_args(&c, 7, argv, err, sizeof(err)), 0);
	assert_int_equal(c.port, 7002); /* flags win over the file */
	assert_int_equal(c.workers, 3);
	assert_string_equal(c.requirepass, "two words");
	assert_string_equal(c.rates, "/x/y.csv");
	assert_string_equal(c.bind, "0.0.0.0");
	assert_string_equal(c.config_file, path);

	f = fopen(path, "w");
	fputs("port 7001\nbogus 1\n", f);
	fclose(f);
	tg_config_defaults(&c);
	assert_int_equal(tg_config_load(&c, path, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":2: unknown setting 'bogus'"));
	unlink(path);
	assert_int_equal(tg_config_load(&c, path, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "cannot read config file"));

	const char *bad1[] = {"tollgated", "--port", NULL};
	assert_int_equal(tg_config_args(&c, 2, bad1, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "needs a value"));
	const char *bad2[] = {"tollgated", "port", "1", NULL};
	assert_int_equal(tg_config_args(&c, 3, bad2, err, sizeof(err)), -EINVAL);
	const char *bad3[] = {"tollgated", "-c", NULL};
	assert_int_equal(tg_config_args(&c, 2, bad3, err, sizeof(err)), -EINVAL);
}

struct said {
	unsigned n;
	char all[1024];
};

static void
collect(void *arg, const char *msg)
{
	struct said *s = arg;
	size_t used = strlen(s->all);
	snprintf(s->all + used, sizeof(s->all) - used, "%s\n", msg);
	s->n++;
}

/*
 * Every setting out of its limits is its own message: port 70000 and
 * reply-buffer 1 used to come as one combined sentence, found late.
 */
static void
test_check_says_each_bad_setting(void **state)
{
	struct tg_config c;
	struct said s = {0};
	char err[256];
	(void)state;
	tg_config_defaults(&c);
	assert_int_equal(tg_config_check(&c, collect, &s), 0);
	assert_int_equal(tg_config_set(&c, "port", "70000", err, sizeof(err)), 0);
	assert_int_equal(tg_config_set(&c, "reply-buffer", "1", err, sizeof(err)), 0);
	assert_int_equal(tg_config_check(&c, collect, &s), 2);
	assert_int_equal(s.n, 2);
	assert_string_equal(s.all, "port: 70000 is out of range 0..65535 (a TCP port)\n"
	                           "reply-buffer: 1 is below 16384 (bytes: room for the largest "
	                           "reply)\n");
	/* The rules a range cannot say, each on its own too. */
	tg_config_defaults(&c);
	memset(&s, 0, sizeof(s));
	assert_int_equal(tg_config_set(&c, "refill-ring", "100", err, sizeof(err)), 0);
	assert_int_equal(tg_config_set(&c, "shm-mode", "0666", err, sizeof(err)), 0);
	assert_int_equal(tg_config_set(&c, "durability", "maybe", err, sizeof(err)), 0);
	assert_int_equal(tg_config_set(&c, "max-grant", "0", err, sizeof(err)), 0);
	assert_int_equal(tg_config_set(&c, "ids-max", "0", err, sizeof(err)), 0);
	assert_int_equal(tg_config_check(&c, collect, &s), 5);
	assert_non_null(strstr(s.all, "refill-ring: 100 is not a power of two\n"));
	assert_non_null(strstr(s.all, "shm-mode: 0666 "));
	assert_non_null(strstr(s.all, "durability: 'maybe' "));
	assert_non_null(strstr(s.all, "max-grant: 0 is out of range 1..2678400"));
	assert_non_null(strstr(s.all, "ids-max: 0 is below 1"));
	/*
	 * A bad refill or credential setting is said here, with the others (exit
	 * 2), not found by the publisher or AUTH half-way through start-up (it was
	 * exit 1 after the journal was opened).
	 */
	tg_config_defaults(&c);
	memset(&s, 0, sizeof(s));
	assert_int_equal(tg_config_set(&c, "refill-timeout", "0", err, sizeof(err)), 0);
	assert_int_equal(tg_config_set(&c, "redis-host", "", err, sizeof(err)), 0);
	assert_int_equal(tg_config_set(&c, "refill-stream", "", err, sizeof(err)), 0);
	assert_int_equal(tg_config_set(&c, "auth-lockout", "0", err, sizeof(err)), 0);
	assert_int_equal(tg_config_check(&c, collect, &s), 4);
	assert_non_null(strstr(s.all, "refill-timeout: 0 is below 1 (seconds)\n"));
	assert_non_null(strstr(s.all, "redis-host: must be 1 to 255 characters"));
	assert_non_null(strstr(s.all, "refill-stream: must be 1 to 255 characters"));
	assert_non_null(strstr(s.all, "auth-lockout: 0 must be positive"));
	/* max-args below what the shortest command needs (the name and two arguments). */
	tg_config_defaults(&c);
	memset(&s, 0, sizeof(s));
	assert_int_equal(tg_config_set(&c, "max-args", "2", err, sizeof(err)), 0);
	assert_int_equal(tg_config_check(&c, collect, &s), 1);
	assert_non_null(strstr(s.all, "max-args: 2 is out of range 3.."));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_set_and_refuse),
	    cmocka_unit_test(test_file_and_flags),
	    cmocka_unit_test(test_check_says_each_bad_setting),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
