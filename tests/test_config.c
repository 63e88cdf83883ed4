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
	assert_int_equal(c.ids_window, 86400);
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_set_and_refuse),
	    cmocka_unit_test(test_file_and_flags),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
