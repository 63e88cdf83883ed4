/*
 * auth.c - credentials, the users file, and failed AUTHs per address.
 *
 * Owns the list of users (read once at start, never changed after) and the
 * table of recent failures per source address.  It decides whether a name
 * and password are right and whether an address may try; what a connection
 * may do afterwards is the caller's (cmd.c, by role).  Passwords are compared
 * in time that depends only on the length of what the client sent, never on
 * where the bytes differ.  Runs on worker threads: no allocation after init;
 * the mutex is taken only around the failure table.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tg_assert.h"
#include "tg_auth.h"
#include "tg_clock.h"
#include "tg_hash.h"
#include "tg_log.h"

#define WAYS 4
/* AUTH, a name and a password in multibulk form: *3, $4 AUTH, two headers, CRLFs. */
#define AUTH_FRAME_OVERHEAD 40

_Static_assert(TG_AUTH_ADDRS % WAYS == 0, "the failure table is cut into sets");

static const char *const role_names[] = {"call", "refill", "admin", "replica"};
static const uint8_t role_bits[] = {TG_ROLE_CALL, TG_ROLE_REFILL, TG_ROLE_ADMIN, TG_ROLE_REPLICA};

const char *
tg_role_name(uint8_t role)
{
	for (size_t i = 0; i < TG_ARRAY_LEN(role_bits); i++)
		if (role == role_bits[i])
			return role_names[i];
	return "none";
}

/*
 * Whether a (what the client sent) equals the secret b.  The loop runs over
 * a, whatever b is, and never stops early, so the time says nothing of b.
 */
static bool
same_secret(const char *a, size_t alen, const char *b, size_t blen)
{
	volatile unsigned char diff = (unsigned char)(alen != blen);

	for (size_t i = 0; i < alen; i++)
		diff |= (unsigned char)(a[i] ^ b[i % (blen ? blen : 1)]);
	return diff == 0 && blen > 0;
}

/* ---- the users file ---- */

static bool
name_ok(const char *s, size_t n)
{
	if (n == 0 || n > TG_USER_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' || c == '@'))
			return false;
	}
	return true;
}

static int
add_user(struct tg_auth *a, const char *name, size_t nlen, uint8_t role, const char *pass,
         size_t plen, size_t max_noauth, char *why, size_t whylen)
{
	struct tg_user *u;

	for (unsigned i = 0; i < a->n_users; i++)
		if (strlen(a->users[i].name) == nlen && memcmp(a->users[i].name, name, nlen) == 0) {
			snprintf(why, whylen, "user '%.*s' is defined twice", (int)nlen, name);
			return -EINVAL;
		}
	if (a->n_users >= TG_USERS_MAX) {
		snprintf(why, whylen, "more than %d users", TG_USERS_MAX);
		return -EINVAL;
	}
	if (plen == 0 || plen > TG_PASSWORD_MAX) {
		snprintf(why, whylen, "user '%.*s': the password must be 1 to %d bytes", (int)nlen,
		         name, TG_PASSWORD_MAX);
		return -EINVAL;
	}
	/* Before AUTH a request is capped: a password that cannot fit could never be used. */
	if (nlen + plen + AUTH_FRAME_OVERHEAD > max_noauth) {
		snprintf(why, whylen,
		         "user '%.*s': name and password are too long to AUTH within "
		         "max-request-noauth (%zu bytes)",
		         (int)nlen, name, max_noauth);
		return -EINVAL;
	}
	u = &a->users[a->n_users++];
	memcpy(u->name, name, nlen);
	u->name[nlen] = '\0';
	memcpy(u->pass, pass, plen);
	u->pass_len = (uint32_t)plen;
	u->role = role;
	return 0;
}

/*
 * One line: NAME ROLE PASSWORD, the password being the rest of the line
 * (it may hold spaces; blanks around it are not part of it).
 */
static int
parse_line(struct tg_auth *a, char *s, size_t max_noauth, char *why, size_t whylen)
{
	const char *name = s, *role, *pass;
	size_t nlen, rlen, plen;
	uint8_t bits = 0;

	nlen = strcspn(name, " \t");
	role = name + nlen + strspn(name + nlen, " \t");
	rlen = strcspn(role, " \t");
	pass = role + rlen + strspn(role + rlen, " \t");
	plen = strlen(pass);
	if (rlen == 0 || plen == 0) {
		snprintf(why, whylen, "expected 'NAME ROLE PASSWORD'");
		return -EINVAL;
	}
	if (!name_ok(name, nlen)) {
		snprintf(why, whylen,
		         "user name '%.*s': 1 to %d letters, digits, '.', '_', '-' or '@'",
		         (int)(nlen < 80 ? nlen : 80), name, TG_USER_NAME_MAX);
		return -EINVAL;
	}
	if (nlen == 7 && memcmp(name, "default", 7) == 0) {
		snprintf(why, whylen, "user 'default' is requirepass: set that instead");
		return -EINVAL;
	}
	for (size_t i = 0; i < TG_ARRAY_LEN(role_names); i++)
		if (strlen(role_names[i]) == rlen && strncmp(role, role_names[i], rlen) == 0)
			bits = role_bits[i];
	if (bits == 0) {
		snprintf(why, whylen, "role '%.*s': must be call, refill or admin",
		         (int)(rlen < 40 ? rlen : 40), role);
		return -EINVAL;
	}
	for (size_t i = 0; i < plen; i++)
		if ((unsigned char)pass[i] < 0x20 || pass[i] == 0x7f) {
			snprintf(why, whylen, "user '%.*s': control character in the password",
			         (int)nlen, name);
			return -EINVAL;
		}
	return add_user(a, name, nlen, bits, pass, plen, max_noauth, why, whylen);
}

static int
load_users(struct tg_auth *a, const char *path, size_t max_noauth, char *err, size_t errlen)
{
	char line[TG_USER_NAME_MAX + TG_PASSWORD_MAX + 64], why[256];
	unsigned lineno = 0, before = a->n_users;
	struct stat st;
	int fd, rc = 0;
	FILE *f;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot read users file %s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "users file %s: not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	/* It holds passwords: anyone on the machine reading it would be every switch. */
	if (st.st_mode & 0007) {
		snprintf(err, errlen,
		         "users file %s: mode %04o lets every user read or change it; chmod 600 "
		         "(or 640)",
		         path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -EINVAL;
	}
	f = fdopen(fd, "r");
	if (f == NULL) {
		rc = -errno;
		close(fd);
		snprintf(err, errlen, "cannot read users file %s: %s", path, strerror(-rc));
		return rc;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *s = line;
		size_t n;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			snprintf(err, errlen, "%s:%u: line too long", path, lineno);
			rc = -EINVAL;
			break;
		}
		while (*s == ' ' || *s == '\t')
			s++;
		n = strlen(s);
		while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' ||
		                 s[n - 1] == '\t'))
			s[--n] = '\0';
		if (*s == '\0' || *s == '#')
			continue;
		rc = parse_line(a, s, max_noauth, why, sizeof(why));
		if (rc != 0) {
			snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
			break;
		}
	}
	if (rc == 0 && ferror(f)) {
		snprintf(err, errlen, "cannot read users file %s", path);
		rc = -EIO;
	}
	fclose(f);
	/* The line buffer held a password. */
	explicit_bzero(line, sizeof(line));
	if (rc == 0 && a->n_users == before) {
		snprintf(err, errlen, "users file %s has no users", path);
		rc = -EINVAL;
	}
	return rc;
}

int
tg_auth_init(struct tg_auth *a, const struct tg_auth_cfg *cfg, char *err, size_t errlen)
{
	size_t plen = cfg->requirepass ? strlen(cfg->requirepass) : 0;
	char why[256];
	int rc;

	memset(a, 0, sizeof(*a));
	a->addr_failures = cfg->addr_failures;
	a->lockout_s = cfg->lockout_s;
	if (a->addr_failures && a->lockout_s == 0) {
		snprintf(err, errlen,
		         "auth-lockout must be positive when auth-addr-failures is set");
		return -EINVAL;
	}
	a->users = calloc(TG_USERS_MAX, sizeof(*a->users));
	a->addrs = calloc(TG_AUTH_ADDRS, sizeof(*a->addrs));
	if (a->users == NULL || a->addrs == NULL) {
		free(a->users);
		free(a->addrs);
		snprintf(err, errlen, "cannot allocate the users");
		return -ENOMEM;
	}
	pthread_mutex_init(&a->mu, NULL);
	a->magic = TG_AUTH_MAGIC;
	if (getrandom(&a->seed, sizeof(a->seed), GRND_NONBLOCK) != sizeof(a->seed))
		a->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	if (plen > 0) {
		rc = add_user(a, "default", 7, TG_ROLE_ADMIN, cfg->requirepass, plen,
		              cfg->max_request_noauth, why, sizeof(why));
		if (rc != 0) {
			snprintf(err, errlen, "requirepass: %s", why);
			tg_auth_fini(a);
			return rc;
		}
	}
	if (cfg->users && cfg->users[0]) {
		rc = load_users(a, cfg->users, cfg->max_request_noauth, err, errlen);
		if (rc != 0) {
			tg_auth_fini(a);
			return rc;
		}
	}
	a->required = a->n_users > 0;
	return 0;
}

void
tg_auth_fini(struct tg_auth *a)
{
	if (a->magic != TG_AUTH_MAGIC)
		return;
	if (a->users)
		explicit_bzero(a->users, TG_USERS_MAX * sizeof(*a->users));
	free(a->users);
	free(a->addrs);
	pthread_mutex_destroy(&a->mu);
	memset(a, 0, sizeof(*a));
}

/* ---- failures per address ---- */

/*
 * The key of an address: an IPv4 address whole, an IPv6 address by its /64,
 * since whoever holds one IPv6 address usually holds the whole /64.
 */
static void
addr_key(const uint8_t *addr, uint64_t *k0, uint64_t *k1)
{
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memcpy(k0, addr, 8);
	memcpy(k1, addr + 8, 8);
	if (memcmp(addr, v4mapped, sizeof(v4mapped)) != 0)
		*k1 = 0;
}

/* Whether x should make room before v: unlocked before locked, then the least recent. */
static bool
stale_first(const struct tg_auth_addr *x, const struct tg_auth_addr *v, uint64_t now)
{
	bool xl = x->locked_s > now, vl = v->locked_s > now;

	if (xl != vl)
		return !xl;
	return x->last_s < v->last_s;
}

/* The entry of the key, or NULL; with make, a fresh entry replacing the stalest of its set. */
static struct tg_auth_addr *
addr_find(struct tg_auth *a, uint64_t k0, uint64_t k1, uint64_t now, bool make)
{
	uint64_t k[2] = {k0, k1};
	size_t set = (size_t)(tg_hash64(k, sizeof(k), a->seed) % (TG_AUTH_ADDRS / WAYS)) * WAYS;
	struct tg_auth_addr *e = &a->addrs[set], *victim = NULL;

	for (unsigned i = 0; i < WAYS; i++)
		if (e[i].used && e[i].k0 == k0 && e[i].k1 == k1)
			return &e[i];
	if (!make)
		return NULL;
	/* An empty entry, else the least recent of those not locked, else the least recent. */
	for (unsigned i = 0; i < WAYS; i++) {
		if (!e[i].used) {
			victim = &e[i];
			break;
		}
		if (victim == NULL || stale_first(&e[i], victim, now))
			victim = &e[i];
	}
	memset(victim, 0, sizeof(*victim));
	victim->used = true;
	victim->k0 = k0;
	victim->k1 = k1;
	victim->window_s = now;
	return victim;
}

enum tg_auth_outcome
tg_auth_check(struct tg_auth *a, const uint8_t *addr, const char *name, size_t name_len,
              const char *pass, size_t pass_len, const struct tg_user **user, uint32_t *retry_s,
              bool *locked_now)
{
	const struct tg_user *found = NULL;
	uint64_t k0 = 0, k1 = 0, now = tg_mono_s();
	bool lockable = addr != NULL && a->addr_failures > 0;
	bool ok;

	TG_CHECK_OBJ_NOTNULL(a, TG_AUTH_MAGIC);
	*user = NULL;
	*retry_s = 0;
	*locked_now = false;
	if (lockable) {
		struct tg_auth_addr *e;

		addr_key(addr, &k0, &k1);
		pthread_mutex_lock(&a->mu);
		e = addr_find(a, k0, k1, now, false);
		if (e != NULL && e->locked_s > now) {
			*retry_s = (uint32_t)(e->locked_s - now);
			pthread_mutex_unlock(&a->mu);
			return TG_AUTH_LOCKED;
		}
		pthread_mutex_unlock(&a->mu);
	}
	if (name == NULL) {
		name = "default";
		name_len = 7;
	}
	/* Names are not secret: an ordinary search.  Passwords are. */
	for (unsigned i = 0; i < a->n_users && found == NULL; i++)
		if (strlen(a->users[i].name) == name_len &&
		    memcmp(a->users[i].name, name, name_len) == 0)
			found = &a->users[i];
	if (found != NULL) {
		ok = same_secret(pass, pass_len, found->pass, found->pass_len);
	} else {
		/* The same work as a real compare, so a missing user costs what a wrong password
		 * does. */
		static const char dummy[] = "no such user: compare anyway";
		(void)same_secret(pass, pass_len, dummy, sizeof(dummy) - 1);
		ok = false;
	}
	if (ok) {
		*user = found;
		return TG_AUTH_OK;
	}
	if (lockable) {
		struct tg_auth_addr *e;

		pthread_mutex_lock(&a->mu);
		e = addr_find(a, k0, k1, now, true);
		if (now - e->window_s >= a->lockout_s) {
			e->window_s = now;
			e->failures = 0;
		}
		e->last_s = now;
		if (++e->failures >= a->addr_failures) {
			e->locked_s = now + a->lockout_s;
			e->failures = 0;
			e->window_s = now;
			*locked_now = true;
		}
		pthread_mutex_unlock(&a->mu);
	}
	return TG_AUTH_WRONG;
}
