/*
 * test_security_unit.c - the hardening pieces on their own (docs/SECURITY.md).
 *
 * The users file (every way a line can be wrong, with its line number),
 * AUTH's checks (roles, the default user, failures per address, the lockout
 * and its IPv6 /64 grouping), the parser's cap on arguments, and the
 * permissions of the shared-memory segment: created with exactly the
 * configured mode and group, never writable by others, a segment of another
 * owner or with a wrong magic or version refused.  Tests that need root (to
 * give a segment away) skip without it.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tg_auth.h"
#include "tg_resp.h"
#include "tg_table.h"

static char dir[256];
static char shm_name[64];

static int
setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "%s/tg-secu-XXXXXX",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	assert_non_null(mkdtemp(dir));
	snprintf(shm_name, sizeof(shm_name), "/tg-secu-%d", (int)getpid());
	shm_unlink(shm_name);
	return 0;
}

static int
teardown(void **state)
{
	char cmd[300];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	shm_unlink(shm_name);
	return 0;
}

/* Write text to dir/name with mode; its path into path. */
static void
write_file(const char *name, const char *text, mode_t mode, char *path, size_t len)
{
	snprintf(path, len, "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static struct tg_auth_cfg
auth_cfg(const char *pass, const char *users)
{
	struct tg_auth_cfg c = {.requirepass = pass,
	                        .users = users,
	                        .addr_failures = 0,
	                        .lockout_s = 60,
	                        .max_request_noauth = 256};
	return c;
}

static enum tg_auth_outcome
check(struct tg_auth *a, const uint8_t *addr, const char *name, const char *pass,
      const struct tg_user **u)
{
	uint32_t retry;
	bool locked_now;
	return tg_auth_check(a, addr, name, name ? strlen(name) : 0, pass, strlen(pass), u, &retry,
	                     &locked_now);
}

/* ---- users and roles ---- */

static void
test_requirepass_is_default_admin(void **state)
{
	struct tg_auth a;
	struct tg_auth_cfg c = auth_cfg("s3cret", "");
	const struct tg_user *u;
	char err[256];

	(void)state;
	assert_int_equal(tg_auth_init(&a, &c, err, sizeof(err)), 0);
	assert_true(a.required);
	assert_int_equal(check(&a, NULL, NULL, "s3cret", &u), TG_AUTH_OK);
	assert_string_equal(u->name, "default");
	assert_int_equal(u->role, TG_ROLE_ADMIN);
	assert_int_equal(check(&a, NULL, "default", "s3cret", &u), TG_AUTH_OK);
	assert_int_equal(check(&a, NULL, NULL, "s3cre", &u), TG_AUTH_WRONG);
	assert_null(u);
	assert_int_equal(check(&a, NULL, NULL, "s3cretX", &u), TG_AUTH_WRONG);
	assert_int_equal(check(&a, NULL, NULL, "", &u), TG_AUTH_WRONG);
	assert_int_equal(check(&a, NULL, "admin", "s3cret", &u), TG_AUTH_WRONG);
	tg_auth_fini(&a);

	/* Nothing configured: nothing required. */
	c = auth_cfg("", "");
	assert_int_equal(tg_auth_init(&a, &c, err, sizeof(err)), 0);
	assert_false(a.required);
	assert_int_equal(check(&a, NULL, NULL, "", &u), TG_AUTH_WRONG);
	tg_auth_fini(&a);
}

static void
test_users_file(void **state)
{
	struct tg_auth a;
	char path[300], err[256];
	const struct tg_user *u;

	(void)state;
	write_file("users",
	           "# switches and workers\n"
	           "\n"
	           "sw-east    call    east pass with spaces  \n"
	           "\tsw.west call w3st\r\n"
	           "refill@1 refill r3fill\n"
	           "ops admin 0ps!\"'#x\n",
	           0640, path, sizeof(path));
	struct tg_auth_cfg c = auth_cfg("", path);
	assert_int_equal(tg_auth_init(&a, &c, err, sizeof(err)), 0);
	assert_true(a.required);
	assert_int_equal(a.n_users, 4);
	assert_int_equal(check(&a, NULL, "sw-east", "east pass with spaces", &u), TG_AUTH_OK);
	assert_int_equal(u->role, TG_ROLE_CALL);
	assert_int_equal(check(&a, NULL, "sw.west", "w3st", &u), TG_AUTH_OK);
	assert_int_equal(u->role, TG_ROLE_CALL);
	assert_int_equal(check(&a, NULL, "refill@1", "r3fill", &u), TG_AUTH_OK);
	assert_int_equal(u->role, TG_ROLE_REFILL);
	assert_int_equal(check(&a, NULL, "ops", "0ps!\"'#x", &u), TG_AUTH_OK);
	assert_int_equal(u->role, TG_ROLE_ADMIN);
	/* Names are case-sensitive, passwords exact; no default user without requirepass. */
	assert_int_equal(check(&a, NULL, "SW-EAST", "east pass with spaces", &u), TG_AUTH_WRONG);
	assert_int_equal(check(&a, NULL, "sw.west", "w3st ", &u), TG_AUTH_WRONG);
	assert_int_equal(check(&a, NULL, "sw.west", "r3fill", &u), TG_AUTH_WRONG);
	assert_int_equal(check(&a, NULL, NULL, "w3st", &u), TG_AUTH_WRONG);
	assert_string_equal(tg_role_name(TG_ROLE_CALL), "call");
	assert_string_equal(tg_role_name(TG_ROLE_REFILL), "refill");
	assert_string_equal(tg_role_name(TG_ROLE_ADMIN), "admin");
	tg_auth_fini(&a);

	/* With requirepass too: both kinds of AUTH work. */
	c = auth_cfg("pw", path);
	assert_int_equal(tg_auth_init(&a, &c, err, sizeof(err)), 0);
	assert_int_equal(a.n_users, 5);
	assert_int_equal(check(&a, NULL, NULL, "pw", &u), TG_AUTH_OK);
	assert_int_equal(check(&a, NULL, "sw.west", "w3st", &u), TG_AUTH_OK);
	tg_auth_fini(&a);
}

struct bad_file {
	const char *text;
	mode_t mode;
	const char *err; /* expected in the message, after "path" */
};

static void
test_users_file_errors(void **state)
{
	static const struct bad_file cases[] = {
	    {"sw call pw\n", 0644, ": mode 0644 lets every user read or change it; chmod 600"},
	    {"sw call pw\n", 0602, ": mode 0602 lets every user"},
	    {"# nothing\n\n", 0600, " has no users"},
	    {"sw call pw\nsw2 operator pw\n", 0600,
	     ":2: role 'operator': must be call, refill or admin"},
	    {"sw call\n", 0600, ":1: expected 'NAME ROLE PASSWORD'"},
	    {"sw\n", 0600, ":1: expected 'NAME ROLE PASSWORD'"},
	    {"s/w call pw\n", 0600, ":1: user name 's/w': 1 to 64 letters, digits"},
	    {"sw call pw\nsw admin pw2\n", 0600, ":2: user 'sw' is defined twice"},
	    {"default admin pw\n", 0600, ":1: user 'default' is requirepass: set that instead"},
	    {"sw call p\x01w\n", 0600, ":1: user 'sw': control character in the password"},
	    {"sw call "
	     "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234"
	     "567890123456789012345678901234567890123456789012345678901234567890123456789012345678"
	     "901234567890123456789012345678901234567890\n",
	     0600, ":1: user 'sw': the password must be 1 to 200 bytes"},
	    /* A 60-byte name and a 160-byte password: 260 bytes, past 256 with AUTH's framing. */
	    {"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn call "
	     "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp"
	     "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp\n",
	     0600,
	     ":1: user 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn': name and "
	     "password are too long to AUTH "
	     "within max-request-noauth (256 bytes)"},
	};
	struct tg_auth a;
	char path[300], err[512], want[600];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_file("bad", cases[i].text, cases[i].mode, path, sizeof(path));
		struct tg_auth_cfg c = auth_cfg("", path);
		err[0] = '\0';
		assert_int_equal(tg_auth_init(&a, &c, err, sizeof(err)), -EINVAL);
		snprintf(want, sizeof(want), "%s%s", path, cases[i].err);
		if (strstr(err, want) == NULL)
			fail_msg("case %zu: error '%s', expected it to contain '%s'", i, err, want);
	}
	struct tg_auth_cfg c = auth_cfg("", "/nonexistent/users");
	assert_int_equal(tg_auth_init(&a, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "cannot read users file /nonexistent/users"));
	/* requirepass is held to the same rule as a user's password. */
	char longpass[240];
	memset(longpass, 'p', sizeof(longpass) - 1);
	longpass[sizeof(longpass) - 1] = '\0';
	c = auth_cfg(longpass, "");
	assert_int_equal(tg_auth_init(&a, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "requirepass: user 'default': the password must be"));
	c = auth_cfg("pw", "");
	c.addr_failures = 3;
	c.lockout_s = 0;
	assert_int_equal(tg_auth_init(&a, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "auth-lockout must be positive"));
}

/* ---- failures per address ---- */

static void
v4(uint8_t a[16], unsigned last)
{
	memset(a, 0, 16);
	a[10] = a[11] = 0xff;
	a[12] = 10;
	a[15] = (uint8_t)last;
}

static void
test_lockout(void **state)
{
	struct tg_auth a;
	struct tg_auth_cfg c = auth_cfg("right", "");
	const struct tg_user *u;
	uint8_t one[16], two[16], six_a[16], six_b[16], six_other[16];
	uint32_t retry;
	bool locked_now;
	char err[256];

	(void)state;
	c.addr_failures = 3;
	c.lockout_s = 2;
	assert_int_equal(tg_auth_init(&a, &c, err, sizeof(err)), 0);
	v4(one, 1);
	v4(two, 2);
	/* Two failures: not yet; a success in between does not reset the window. */
	assert_int_equal(tg_auth_check(&a, one, NULL, 0, "x", 1, &u, &retry, &locked_now),
	                 TG_AUTH_WRONG);
	assert_false(locked_now);
	assert_int_equal(check(&a, one, NULL, "right", &u), TG_AUTH_OK);
	assert_int_equal(tg_auth_check(&a, one, NULL, 0, "y", 1, &u, &retry, &locked_now),
	                 TG_AUTH_WRONG);
	assert_false(locked_now);
	/* The third locks the address, and says so once. */
	assert_int_equal(tg_auth_check(&a, one, "nobody", 6, "z", 1, &u, &retry, &locked_now),
	                 TG_AUTH_WRONG);
	assert_true(locked_now);
	/* Locked: even the right password is refused, without being looked at. */
	assert_int_equal(tg_auth_check(&a, one, NULL, 0, "right", 5, &u, &retry, &locked_now),
	                 TG_AUTH_LOCKED);
	assert_false(locked_now);
	assert_null(u);
	assert_true(retry >= 1 && retry <= 2);
	/* Another address is not affected; nor is a connection whose address is unknown. */
	assert_int_equal(check(&a, two, NULL, "right", &u), TG_AUTH_OK);
	assert_int_equal(check(&a, NULL, NULL, "right", &u), TG_AUTH_OK);
	/* IPv6: one /64 is one key. */
	memset(six_a, 0, 16);
	six_a[0] = 0x20;
	six_a[1] = 0x01;
	six_a[15] = 1;
	memcpy(six_b, six_a, 16);
	six_b[15] = 2;
	six_b[9] = 7; /* still the same /64 */
	memcpy(six_other, six_a, 16);
	six_other[7] = 1; /* another /64 */
	for (int i = 0; i < 3; i++)
		assert_int_equal(check(&a, i == 1 ? six_b : six_a, NULL, "bad", &u), TG_AUTH_WRONG);
	assert_int_equal(check(&a, six_b, NULL, "right", &u), TG_AUTH_LOCKED);
	assert_int_equal(check(&a, six_other, NULL, "right", &u), TG_AUTH_OK);
	/* The lockout ends. */
	sleep(3);
	assert_int_equal(check(&a, one, NULL, "right", &u), TG_AUTH_OK);
	assert_int_equal(check(&a, six_a, NULL, "right", &u), TG_AUTH_OK);
	tg_auth_fini(&a);

	/* auth-addr-failures 0: no lockout however many failures. */
	c.addr_failures = 0;
	assert_int_equal(tg_auth_init(&a, &c, err, sizeof(err)), 0);
	for (int i = 0; i < 50; i++)
		assert_int_equal(check(&a, one, NULL, "bad", &u), TG_AUTH_WRONG);
	assert_int_equal(check(&a, one, NULL, "right", &u), TG_AUTH_OK);
	tg_auth_fini(&a);
}

/* Many addresses failing: the table stays bounded and a locked address stays locked. */
static void
test_lockout_table_churn(void **state)
{
	struct tg_auth a;
	struct tg_auth_cfg c = auth_cfg("right", "");
	const struct tg_user *u;
	uint8_t addr[16], victim[16];
	char err[256];

	(void)state;
	c.addr_failures = 2;
	c.lockout_s = 60;
	assert_int_equal(tg_auth_init(&a, &c, err, sizeof(err)), 0);
	v4(victim, 200);
	victim[13] = 99;
	assert_int_equal(check(&a, victim, NULL, "bad", &u), TG_AUTH_WRONG);
	assert_int_equal(check(&a, victim, NULL, "bad", &u), TG_AUTH_WRONG);
	assert_int_equal(check(&a, victim, NULL, "right", &u), TG_AUTH_LOCKED);
	/* One failure each from many more addresses than the table holds. */
	for (unsigned i = 0; i < 4 * TG_AUTH_ADDRS; i++) {
		v4(addr, i & 0xff);
		addr[13] = (uint8_t)(i >> 8);
		addr[14] = (uint8_t)(i >> 16);
		assert_int_equal(check(&a, addr, NULL, "bad", &u), TG_AUTH_WRONG);
	}
	/* Unlocked entries made room first. */
	assert_int_equal(check(&a, victim, NULL, "right", &u), TG_AUTH_LOCKED);
	tg_auth_fini(&a);
}

/* ---- the parser's cap on arguments ---- */

static void
test_parse_max_args(void **state)
{
	struct tg_req req;
	size_t used;
	const char *err;
	static const char three[] = "*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$1\r\np\r\n";
	static const char four[] = "*4\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$1\r\np\r\n$1\r\nx\r\n";

	(void)state;
	assert_int_equal(tg_resp_parse_args(three, sizeof(three) - 1, 1024, 3, &req, &used, &err),
	                 TG_PARSE_OK);
	assert_int_equal(req.argc, 3);
	assert_int_equal(tg_resp_parse_args(four, sizeof(four) - 1, 1024, 3, &req, &used, &err),
	                 TG_PARSE_ERROR);
	assert_string_equal(err, "ERR Protocol error: too many arguments");
	/* Known too many from the header alone: no need to wait for the rest. */
	assert_int_equal(tg_resp_parse_args("*4\r\n", 4, 1024, 3, &req, &used, &err),
	                 TG_PARSE_ERROR);
	assert_int_equal(tg_resp_parse_args("a b c\r\n", 7, 1024, 3, &req, &used, &err),
	                 TG_PARSE_OK);
	assert_int_equal(tg_resp_parse_args("a b c d\r\n", 9, 1024, 3, &req, &used, &err),
	                 TG_PARSE_ERROR);
	assert_string_equal(err, "ERR Protocol error: too many arguments");
	/* 0 and anything above TG_ARGS_MAX mean TG_ARGS_MAX; tg_resp_parse is that too. */
	assert_int_equal(tg_resp_parse_args(four, sizeof(four) - 1, 1024, 0, &req, &used, &err),
	                 TG_PARSE_OK);
	assert_int_equal(tg_resp_parse_args("*33\r\n", 5, 1024, 1000, &req, &used, &err),
	                 TG_PARSE_ERROR);
	assert_int_equal(tg_resp_parse("*32\r\n", 5, 1024, &req, &used, &err), TG_PARSE_MORE);
	assert_int_equal(tg_resp_parse("*33\r\n", 5, 1024, &req, &used, &err), TG_PARSE_ERROR);
}

/* ---- the segment's permissions ---- */

static int
open_seg(struct tg_table *t, mode_t mode, const char *group, bool reuse, char *err, size_t len)
{
	struct tg_table_cfg cfg = {
	    .name = shm_name, .capacity = 16, .mode = mode, .reuse = reuse, .group = group};
	return tg_table_open(t, &cfg, err, len);
}

static struct stat
seg_stat(void)
{
	struct stat st;
	int fd = shm_open(shm_name, O_RDONLY, 0);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	close(fd);
	return st;
}

static void
test_shm_mode(void **state)
{
	struct tg_table t;
	char err[256];
	mode_t old = umask(0);

	(void)state;
	/* Exactly the mode asked, whatever the umask. */
	assert_int_equal(open_seg(&t, 0600, NULL, false, err, sizeof(err)), 0);
	assert_int_equal(seg_stat().st_mode & 07777, 0600);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
	umask(077);
	assert_int_equal(open_seg(&t, 0640, "", false, err, sizeof(err)), 0);
	assert_int_equal(seg_stat().st_mode & 07777, 0640);
	tg_table_close(&t);
	/* Reused with another mode: the configured one wins, a looser one is tightened. */
	assert_int_equal(open_seg(&t, 0600, NULL, true, err, sizeof(err)), 0);
	assert_int_equal(seg_stat().st_mode & 07777, 0600);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
	umask(old);

	/* Never writable by anyone but the owner, always read-write for the owner. */
	static const mode_t bad[] = {0666, 0660, 0620, 0602, 0400, 0700, 0644 | 0100, 0};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(open_seg(&t, bad[i], NULL, false, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "writable by no one else"));
		assert_int_equal(shm_open(shm_name, O_RDONLY, 0), -1); /* nothing created */
	}
	assert_int_equal(open_seg(&t, 0644, NULL, false, err, sizeof(err)), 0);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

static void
test_shm_group(void **state)
{
	struct tg_table t;
	char err[512], num[32];
	struct group *g;

	(void)state;
	assert_int_equal(open_seg(&t, 0640, "no-such-group-tg", false, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "shm-group 'no-such-group-tg': no such group");
	assert_int_equal(shm_open(shm_name, O_RDONLY, 0), -1);
	if (geteuid() != 0) {
		print_message("not root: giving the segment to another group is not tested\n");
		skip();
	}
	/* By number, and by name (root's group always exists). */
	snprintf(num, sizeof(num), "%u", 65534u);
	assert_int_equal(open_seg(&t, 0640, num, false, err, sizeof(err)), 0);
	assert_int_equal(seg_stat().st_gid, 65534);
	assert_int_equal(seg_stat().st_mode & 07777, 0640);
	tg_table_close(&t);
	g = getgrgid(0);
	assert_non_null(g);
	assert_int_equal(open_seg(&t, 0640, g->gr_name, true, err, sizeof(err)), 0);
	assert_int_equal(seg_stat().st_gid, 0);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

static void
test_shm_other_owner_refused(void **state)
{
	struct tg_table t;
	char err[256];

	(void)state;
	if (geteuid() != 0) {
		print_message("not root: cannot give a segment to another user\n");
		skip();
	}
	assert_int_equal(open_seg(&t, 0600, NULL, false, err, sizeof(err)), 0);
	tg_table_close(&t);
	int fd = shm_open(shm_name, O_RDWR, 0);
	assert_true(fd >= 0);
	assert_int_equal(fchown(fd, 65534, 65534), 0);
	close(fd);
	assert_int_equal(open_seg(&t, 0600, NULL, true, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "belongs to uid 65534, not to this user"));
	/* It was left as it was. */
	assert_int_equal(seg_stat().st_uid, 65534);
	tg_table_unlink(shm_name);
}

/* Flip a byte of the header of the (closed) segment. */
static void
poke_header(size_t off, uint32_t value)
{
	int fd = shm_open(shm_name, O_RDWR, 0);
	assert_true(fd >= 0);
	char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(p != MAP_FAILED);
	memcpy(p + off, &value, sizeof(value));
	munmap(p, 4096);
	close(fd);
}

static void
test_shm_wrong_magic_version_refused(void **state)
{
	struct tg_table t;
	char err[256];
	uint32_t magic_lo;

	(void)state;
	assert_int_equal(open_seg(&t, 0600, NULL, false, err, sizeof(err)), 0);
	memcpy(&magic_lo, (char *)t.hdr + offsetof(struct tg_shm_hdr, magic), 4);
	tg_table_close(&t);

	poke_header(offsetof(struct tg_shm_hdr, magic), magic_lo ^ 1);
	assert_int_equal(open_seg(&t, 0600, NULL, true, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "not a tollgate segment (bad magic)"));
	poke_header(offsetof(struct tg_shm_hdr, magic), magic_lo);

	poke_header(offsetof(struct tg_shm_hdr, version), TG_SHM_VERSION + 1);
	assert_int_equal(open_seg(&t, 0600, NULL, true, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "this build reads version"));
	poke_header(offsetof(struct tg_shm_hdr, version), TG_SHM_VERSION);

	/* Put right again, it is accepted. */
	assert_int_equal(open_seg(&t, 0600, NULL, true, err, sizeof(err)), 0);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

static void
test_shm_attach_refuses_writable_by_others(void **state)
{
	struct tg_table t, r;
	char err[256];

	(void)state;
	assert_int_equal(open_seg(&t, 0640, NULL, false, err, sizeof(err)), 0);
	assert_int_equal(tg_table_attach(&r, shm_name, err, sizeof(err)), 0);
	tg_table_close(&r);
	int fd = shm_open(shm_name, O_RDWR, 0);
	assert_true(fd >= 0);
	for (mode_t m = 0620; m <= 0622; m += 2) {
		assert_int_equal(fchmod(fd, m), 0);
		assert_int_equal(tg_table_attach(&r, shm_name, err, sizeof(err)), -EPERM);
		assert_non_null(strstr(err, "writable by users other than its owner"));
	}
	close(fd);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

int
main(void)
{
	// clang-format off
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_requirepass_is_default_admin, setup, teardown),
		cmocka_unit_test_setup_teardown(test_users_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_users_file_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lockout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lockout_table_churn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_max_args, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shm_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shm_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shm_other_owner_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shm_wrong_magic_version_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shm_attach_refuses_writable_by_others, setup,
		                                teardown),
	};
	// clang-format on
	return cmocka_run_group_tests(tests, NULL, NULL);
}
