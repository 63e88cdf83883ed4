/*
 * table.c - the account table in POSIX shared memory.
 *
 * Owns the segment's life (create, reserve, attach, validate) and every
 * change to an account.  Money moves only through one 16-byte CAS on the
 * balance/hold pair, so each operation is a single atomic step: there is no
 * window in which a reader, or another writer, can see a reservation without
 * its balance or a threshold crossing without its refill flag.  Settings
 * change under a per-account sequence counter.  Nothing here allocates,
 * sleeps or makes a syscall after the segment is mapped.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tg_atomic.h"
#include "tg_assert.h"
#include "tg_hash.h"
#include "tg_table.h"

#define MIB (1024.0 * 1024.0)

static uint64_t
slots_for(uint64_t capacity)
{
	uint64_t s = capacity + capacity / 4;
	return s < 16 ? 16 : s;
}

static size_t
plans_bytes(void)
{
	return (size_t)TG_PLANS_MAX * (TG_PLAN_NAME_MAX + 1);
}

/* The limits records follow the refill records, on a 64-byte boundary. */
static uint64_t
limits_off_for(uint64_t capacity)
{
	uint64_t slots = slots_for(capacity);
	uint64_t end = TG_SHM_HDR_SIZE + plans_bytes() + slots * sizeof(struct tg_slot) +
	               slots * sizeof(struct tg_refill_rec);
	return (end + 63) & ~(uint64_t)63;
}

/* The counter blocks start on the page after the limits records. */
static uint64_t
stats_off_for(uint64_t capacity)
{
	uint64_t end = limits_off_for(capacity) + slots_for(capacity) * sizeof(struct tg_limits);
	return (end + 4095) & ~(uint64_t)4095;
}

size_t
tg_table_size(uint64_t capacity)
{
	return stats_off_for(capacity) + (size_t)TG_STATS_BLOCKS * sizeof(struct tg_stats);
}

static void
bind_layout(struct tg_table *t, void *base, size_t size, bool readonly)
{
	struct tg_shm_hdr *h = base;

	t->magic = TG_TABLE_MAGIC;
	t->readonly = readonly;
	t->base = base;
	t->size = size;
	t->hdr = h;
	t->slots = h->slots;
	t->slot = (struct tg_slot *)(void *)((char *)base + h->slots_off);
	t->refills = (struct tg_refill_rec *)(void *)((char *)base + h->refill_off);
	t->limits = (struct tg_limits *)(void *)((char *)base + h->limits_off);
	t->stats = (struct tg_stats *)(void *)((char *)base + h->stats_off);
	t->plans.names = (char(*)[TG_PLAN_NAME_MAX + 1])(void *)((char *)base + h->plans_off);
	t->plans.count = &h->plan_count;
	t->plans.cap = h->plans_max;
	t->plans.dying = readonly ? NULL : t->plans_dying;
	t->plans.reclaim = readonly ? NULL : &t->plans_reclaim;
}

/*
 * Check that a mapped header describes a segment this build understands and
 * that its offsets fit in size bytes.  Returns 0 or -EPROTO with err set.
 */
static int
check_header(const struct tg_shm_hdr *h, size_t size, const char *name, char *err, size_t errlen)
{
	if (size < TG_SHM_HDR_SIZE) {
		snprintf(err, errlen, "%s: %zu bytes, too small for a tollgate segment", name,
		         size);
		return -EPROTO;
	}
	if (tg_load_64((const uint64_t *)&h->magic) != TG_SHM_MAGIC) {
		snprintf(err, errlen, "%s: not a tollgate segment (bad magic)", name);
		return -EPROTO;
	}
	if (h->version != TG_SHM_VERSION) {
		snprintf(err, errlen, "%s: layout version %u, this build reads version %u", name,
		         h->version, TG_SHM_VERSION);
		return -EPROTO;
	}
	if (h->record_size != sizeof(struct tg_acct) || h->hdr_size != TG_SHM_HDR_SIZE) {
		snprintf(err, errlen, "%s: record size %u / header %u, expected %zu / %u", name,
		         h->record_size, h->hdr_size, sizeof(struct tg_acct), TG_SHM_HDR_SIZE);
		return -EPROTO;
	}
	if (h->capacity == 0 || h->capacity > TG_CAPACITY_MAX ||
	    h->slots != slots_for(h->capacity) || h->total_size != tg_table_size(h->capacity) ||
	    h->total_size > size || h->plans_off != TG_SHM_HDR_SIZE ||
	    h->plans_max != TG_PLANS_MAX || h->slots_off != h->plans_off + plans_bytes() ||
	    h->slot_size != sizeof(struct tg_slot) ||
	    h->refill_off != h->slots_off + h->slots * sizeof(struct tg_slot) ||
	    h->refill_size != sizeof(struct tg_refill_rec) ||
	    h->limits_off != limits_off_for(h->capacity) ||
	    h->limits_size != sizeof(struct tg_limits) || h->stats_blocks != TG_STATS_BLOCKS ||
	    h->stats_off != stats_off_for(h->capacity) ||
	    h->stats_size != sizeof(struct tg_stats) || h->counters > TG_COUNTERS_MAX ||
	    h->hist_buckets != TG_HIST_BUCKETS) {
		snprintf(err, errlen,
		         "%s: header sizes and offsets do not add up (corrupt segment)", name);
		return -EPROTO;
	}
	return 0;
}

/*
 * The group named by cfg->group ("" or NULL: none) into *gid.  A number is
 * taken as a gid.  Returns 0, 1 when no group is configured, or -EINVAL.
 */
static int
shm_group(const struct tg_table_cfg *cfg, gid_t *gid, char *err, size_t errlen)
{
	struct group gr, *found = NULL;
	char buf[4096], *end;
	unsigned long n;

	if (cfg->group == NULL || cfg->group[0] == '\0')
		return 1;
	n = strtoul(cfg->group, &end, 10);
	if (*end == '\0' && cfg->group[0] >= '0' && cfg->group[0] <= '9' && n < (gid_t)-1) {
		*gid = (gid_t)n;
		return 0;
	}
	if (getgrnam_r(cfg->group, &gr, buf, sizeof(buf), &found) != 0 || found == NULL) {
		snprintf(err, errlen, "shm-group '%s': no such group", cfg->group);
		return -EINVAL;
	}
	*gid = found->gr_gid;
	return 0;
}

/*
 * Give the segment exactly the configured mode and group, on creation and on
 * reuse alike: a segment a previous run left looser is tightened.  umask
 * cannot narrow what fchmod sets.
 */
static int
set_perms(int fd, const struct tg_table_cfg *cfg, bool have_group, gid_t gid, char *err,
          size_t errlen)
{
	if (fchmod(fd, cfg->mode) < 0) {
		snprintf(err, errlen, "cannot set mode %04o on shm segment %s: %s",
		         (unsigned)cfg->mode, cfg->name, strerror(errno));
		return -errno;
	}
	if (have_group && fchown(fd, (uid_t)-1, gid) < 0) {
		int e = errno;
		snprintf(err, errlen, "cannot give shm segment %s to group %s (gid %u): %s%s",
		         cfg->name, cfg->group, (unsigned)gid, strerror(e),
		         e == EPERM ? " (the engine's user must be a member of it)" : "");
		return -e;
	}
	return 0;
}

static int
fail(int fd, const char *unlink_name, int rc)
{
	if (fd >= 0)
		close(fd);
	if (unlink_name)
		shm_unlink(unlink_name);
	return rc;
}

int
tg_table_open(struct tg_table *t, const struct tg_table_cfg *cfg, char *err, size_t errlen)
{
	const char *name = cfg->name;
	bool created = true;
	size_t size;
	int fd, rc;
	void *base;

	memset(t, 0, sizeof(*t));
	if (name == NULL || name[0] != '/' || strlen(name) >= sizeof(t->name) ||
	    strchr(name + 1, '/') != NULL) {
		snprintf(err, errlen,
		         "shm name '%s': must be '/' then up to %zu characters, no '/'",
		         name ? name : "", sizeof(t->name) - 2);
		return -EINVAL;
	}
	if (cfg->capacity == 0 || cfg->capacity > TG_CAPACITY_MAX) {
		snprintf(err, errlen, "capacity %llu: must be 1..%llu accounts",
		         (unsigned long long)cfg->capacity, (unsigned long long)TG_CAPACITY_MAX);
		return -EINVAL;
	}
	/*
	 * Every process that can write the segment can move money: only the
	 * engine's user may.  Group and others may at most read (tollstat).
	 */
	if ((cfg->mode & 0600) != 0600 || (cfg->mode & 0133) != 0) {
		snprintf(err, errlen,
		         "shm mode %04o: the segment must be read-write for its owner and "
		         "writable by no one else (0600, or 0640 with a group for tollstat)",
		         (unsigned)cfg->mode);
		return -EINVAL;
	}
	gid_t gid = 0;
	rc = shm_group(cfg, &gid, err, errlen);
	if (rc < 0)
		return rc;
	bool have_group = rc == 0;
	size = tg_table_size(cfg->capacity);

	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, cfg->mode);
	if (fd < 0 && errno == EEXIST && cfg->reuse) {
		created = false;
		fd = shm_open(name, O_RDWR, 0);
	}
	if (fd < 0) {
		rc = -errno;
		if (rc == -EEXIST)
			snprintf(err, errlen,
			         "shm segment %s already exists (another engine, or left by a "
			         "crash): remove it or allow reuse",
			         name);
		else
			snprintf(err, errlen, "cannot open shm segment %s: %s", name,
			         strerror(-rc));
		return rc;
	}

	if (created) {
		rc = set_perms(fd, cfg, have_group, gid, err, errlen);
		if (rc < 0)
			return fail(fd, name, rc);
		if (ftruncate(fd, (off_t)size) < 0) {
			rc = -errno;
			snprintf(err, errlen, "cannot size shm segment %s to %zu bytes: %s", name,
			         size, strerror(-rc));
			return fail(fd, name, rc);
		}
		/* Reserve every page now: a small /dev/shm fails here, not with SIGBUS later. */
		rc = posix_fallocate(fd, 0, (off_t)size);
		if (rc != 0) {
			snprintf(err, errlen,
			         "cannot reserve %.1f MiB in /dev/shm for %llu accounts: %s "
			         "(enlarge /dev/shm or lower the capacity)",
			         size / MIB, (unsigned long long)cfg->capacity, strerror(rc));
			return fail(fd, name, -rc);
		}
	} else {
		struct stat st;
		if (fstat(fd, &st) < 0) {
			rc = -errno;
			snprintf(err, errlen, "cannot stat shm segment %s: %s", name,
			         strerror(-rc));
			return fail(fd, NULL, rc);
		}
		if (st.st_uid != geteuid()) {
			snprintf(err, errlen,
			         "shm segment %s belongs to uid %u, not to this user (%u)", name,
			         (unsigned)st.st_uid, (unsigned)geteuid());
			return fail(fd, NULL, -EPERM);
		}
		if ((size_t)st.st_size != size) {
			snprintf(err, errlen,
			         "shm segment %s is %lld bytes; capacity %llu needs %zu: remove it "
			         "or start with the capacity it was made with",
			         name, (long long)st.st_size, (unsigned long long)cfg->capacity,
			         size);
			return fail(fd, NULL, -EPROTO);
		}
		rc = set_perms(fd, cfg, have_group, gid, err, errlen);
		if (rc < 0)
			return fail(fd, NULL, rc);
	}

	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		snprintf(err, errlen, "cannot map shm segment %s: %s", name, strerror(-rc));
		return fail(fd, created ? name : NULL, rc);
	}
	close(fd);
	/*
	 * Huge pages spare the TLB on a table of millions of accounts.  The pages
	 * are the file's, allocated by posix_fallocate above: they are huge when
	 * /dev/shm is mounted with huge=within_size or huge=always, and this
	 * hint does not change that (docs/SHM.md, "Huge pages").
	 */
	madvise(base, size, MADV_HUGEPAGE);
	/*
	 * Map every page now, in one call: recovery then fills millions of
	 * accounts without a page fault each.  Best effort (Linux 5.14+).
	 */
#ifdef MADV_POPULATE_WRITE
	if (created)
		madvise(base, size, MADV_POPULATE_WRITE);
#endif

	struct tg_shm_hdr *h = base;
	if (created) {
		h->version = TG_SHM_VERSION;
		h->record_size = sizeof(struct tg_acct);
		h->capacity = cfg->capacity;
		h->slots = slots_for(cfg->capacity);
		h->created = (int64_t)time(NULL);
		h->hdr_size = TG_SHM_HDR_SIZE;
		h->total_size = size;
		h->plans_off = TG_SHM_HDR_SIZE;
		h->plans_max = TG_PLANS_MAX;
		h->slots_off = h->plans_off + plans_bytes();
		h->slot_size = sizeof(struct tg_slot);
		h->refill_off = h->slots_off + h->slots * sizeof(struct tg_slot);
		h->refill_size = sizeof(struct tg_refill_rec);
		h->limits_off = limits_off_for(cfg->capacity);
		h->limits_size = sizeof(struct tg_limits);
		h->stats_blocks = TG_STATS_BLOCKS;
		h->stats_off = stats_off_for(cfg->capacity);
		h->stats_size = sizeof(struct tg_stats);
		h->counters = TG_COUNTER__COUNT;
		h->hist_buckets = TG_HIST_BUCKETS;
		/* The magic goes last: a reader never attaches to a half-written header. */
		ck_pr_fence_store();
		tg_store_64((uint64_t *)&h->magic, TG_SHM_MAGIC);
	} else {
		rc = check_header(h, size, name, err, errlen);
		if (rc == 0 && h->capacity != cfg->capacity) {
			snprintf(err, errlen, "shm segment %s was made for %llu accounts, not %llu",
			         name, (unsigned long long)h->capacity,
			         (unsigned long long)cfg->capacity);
			rc = -EPROTO;
		}
		pid_t other = (pid_t)tg_load_32((const uint32_t *)&h->writer_pid);
		if (rc == 0 && other != 0 && other != getpid() && kill(other, 0) == 0) {
			snprintf(err, errlen,
			         "shm segment %s is in use by a running engine (pid %d)", name,
			         (int)other);
			rc = -EBUSY;
		}
		if (rc != 0) {
			munmap(base, size);
			return rc;
		}
	}
	ck_pr_inc_64(&h->generation);
	tg_store_32((uint32_t *)&h->writer_pid, (uint32_t)getpid());
	bind_layout(t, base, size, false);
	snprintf(t->name, sizeof(t->name), "%s", name);
	return 0;
}

int
tg_table_attach(struct tg_table *t, const char *name, char *err, size_t errlen)
{
	struct stat st;
	void *base;
	int fd, rc;

	memset(t, 0, sizeof(*t));
	fd = shm_open(name, O_RDONLY, 0);
	if (fd < 0) {
		rc = -errno;
		if (rc == -ENOENT)
			snprintf(err, errlen, "no shm segment %s: is the engine running?", name);
		else
			snprintf(err, errlen, "cannot open shm segment %s: %s", name,
			         strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot stat shm segment %s: %s", name, strerror(-rc));
		return fail(fd, NULL, rc);
	}
	if ((size_t)st.st_size < TG_SHM_HDR_SIZE) {
		snprintf(err, errlen, "%s: %lld bytes, too small for a tollgate segment", name,
		         (long long)st.st_size);
		return fail(fd, NULL, -EPROTO);
	}
	/* Anyone could have written what a segment writable by others says: do not report it. */
	if (st.st_mode & 0022) {
		snprintf(err, errlen,
		         "shm segment %s is writable by users other than its owner (mode %04o): "
		         "refusing to trust it",
		         name, (unsigned)(st.st_mode & 07777));
		return fail(fd, NULL, -EPERM);
	}
	base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		snprintf(err, errlen, "cannot map shm segment %s: %s", name, strerror(-rc));
		return fail(fd, NULL, rc);
	}
	close(fd);
	rc = check_header(base, (size_t)st.st_size, name, err, errlen);
	if (rc != 0) {
		munmap(base, (size_t)st.st_size);
		return rc;
	}
	bind_layout(t, base, (size_t)st.st_size, true);
	snprintf(t->name, sizeof(t->name), "%s", name);
	return 0;
}

void
tg_table_close(struct tg_table *t)
{
	if (t->base == NULL)
		return;
	TG_CHECK_OBJ(t, TG_TABLE_MAGIC);
	if (!t->readonly)
		ck_pr_cas_32((uint32_t *)&t->hdr->writer_pid, (uint32_t)getpid(), 0);
	munmap(t->base, t->size);
	memset(t, 0, sizeof(*t));
}

int
tg_table_unlink(const char *name)
{
	return shm_unlink(name) < 0 ? -errno : 0;
}

/* ---- lookup and insert ---- */

static inline uint64_t
home_slot(const struct tg_table *t, uint64_t id)
{
	/* Multiply-shift maps the hash onto any slot count, not only powers of two. */
	return (uint64_t)(((unsigned __int128)tg_mix64(id) * t->slots) >> 64);
}

void
tg_table_prefetch(const struct tg_table *t, uint64_t id)
{
	uint64_t i = home_slot(t, id);
	__builtin_prefetch(&t->slot[i].acct, 1, 3);
	__builtin_prefetch(&t->slot[i].usage, 1, 3);
}

void
tg_table_prefetch_limits(const struct tg_table *t, const struct tg_acct *a)
{
	if (tg_load_8((uint8_t *)(uintptr_t)&a->flags) & TG_ACCT_LIMITS)
		__builtin_prefetch(&t->limits[tg_table_index(t, a)], 1, 3);
}

struct tg_acct *
tg_table_find(const struct tg_table *t, uint64_t id)
{
	uint64_t key = id + 1, i, n;

	if (TG_UNLIKELY(key == 0))
		return NULL;
	i = home_slot(t, id);
	for (n = 0; n < TG_PROBE_MAX && n < t->slots; n++) {
		uint64_t k = tg_load_64(&t->slot[i].acct.key);
		if (k == key)
			return &t->slot[i].acct;
		if (k == 0)
			return NULL;
		if (++i == t->slots)
			i = 0;
	}
	return NULL;
}

enum tg_result
tg_table_insert(struct tg_table *t, uint64_t id, struct tg_acct **out, bool *created)
{
	uint64_t key = id + 1, i, n;

	TG_CHECK_OBJ(t, TG_TABLE_MAGIC);
	TG_ASSERT(!t->readonly);
	*created = false;
	if (key == 0)
		return TG_ERR;
	i = home_slot(t, id);
	for (n = 0; n < TG_PROBE_MAX && n < t->slots; n++) {
		struct tg_acct *a = &t->slot[i].acct;
		uint64_t k = tg_load_64(&a->key);

		if (k == 0) {
			if (tg_load_64(&t->hdr->count) >= t->hdr->capacity)
				return TG_FULL;
			if (ck_pr_cas_64_value(&a->key, 0, key, &k)) {
				ck_pr_inc_64(&t->hdr->count);
				*created = true;
				*out = a;
				return TG_OK;
			}
			/* Lost the race for this slot: k is what won it. */
		}
		if (k == key) {
			*out = a;
			return TG_OK;
		}
		if (++i == t->slots)
			i = 0;
	}
	return TG_FULL;
}

struct tg_usage *
tg_table_usage(const struct tg_table *t, const struct tg_acct *a)
{
	const struct tg_slot *s = (const struct tg_slot *)(const void *)a;
	TG_ASSERT(s >= t->slot && s < t->slot + t->slots);
	return (struct tg_usage *)&s->usage;
}

tg_money_t
tg_usage_add(struct tg_usage *u, unsigned category, tg_money_t charge)
{
	uint64_t *p = (uint64_t *)&u->charged[category];
	uint64_t cur = tg_load_64(p), set;

	TG_ASSERT(category < TG_CATEGORIES_MAX && charge >= 0);
	/* A compare-and-swap rather than an add: two workers must not carry it past the top. */
	do {
		set = (uint64_t)tg_money_add_sat((tg_money_t)cur, charge);
	} while (set != cur && !ck_pr_cas_64_value(p, cur, set, &cur));
	return (tg_money_t)set;
}

/* ---- money ---- */

static inline void
load_pair(struct tg_acct *a, uint64_t v[2])
{
	v[0] = tg_load_64((uint64_t *)&a->balance);
	v[1] = tg_load_64(&a->hold);
}

static inline uint64_t *
pair_of(struct tg_acct *a)
{
	return (uint64_t *)(void *)&a->balance;
}

static inline int64_t
reserved_of(uint64_t hold)
{
	return (int64_t)(hold & TG_HOLD_RESERVED);
}

/*
 * What a grant may take: balance - reserved + credit (a postpaid account's
 * credit limit, 0 for a prepaid one), saturated: a deep CDR debt cannot wrap
 * it positive.
 */
static inline tg_money_t
available_of(int64_t balance, uint64_t hold, tg_money_t credit)
{
	tg_money_t a;
	if (!tg_money_sub(balance, reserved_of(hold), &a))
		a = TG_MONEY_MIN;
	if (!tg_money_add(a, credit, &a))
		a = TG_MONEY_MAX;
	return a;
}

/*
 * The credit an account's grants may use: its credit limit when postpaid,
 * else 0.  Both words live in the account's own line: a prepaid account's
 * reserve reads nothing it did not already.
 */
static tg_money_t
credit_of(const struct tg_acct *a)
{
	struct tg_acct *w = (struct tg_acct *)(uintptr_t)a; /* ck_pr loads take non-const */

	/* Prepaid, the common case: one load.  A kind changing under it reads as prepaid: 0. */
	if (!(tg_load_8(&w->flags) & TG_ACCT_POSTPAID))
		return 0;
	/* The word is a threshold again once the kind changes back: read both under seq. */
	for (;;) {
		uint32_t s1 = tg_load_32(&w->seq);
		if (!(s1 & 1)) {
			ck_pr_fence_load();
			uint8_t flags = tg_load_8(&w->flags);
			int64_t word = (int64_t)tg_load_64((uint64_t *)&w->credit_limit);
			ck_pr_fence_load();
			if (tg_load_32(&w->seq) == s1)
				return (flags & TG_ACCT_POSTPAID) ? word : 0;
		}
		ck_pr_stall();
	}
}

tg_money_t
tg_refill_charge(uint8_t mode, tg_money_t amount, tg_money_t balance)
{
	tg_money_t c;

	if (mode == TG_REFILL_ADD)
		return amount;
	if (mode == TG_REFILL_TOPUP) {
		/* A card is charged whole cents: round up, so the balance reaches the level. */
		if (!tg_money_sub(amount, balance, &c) ||
		    !tg_currency_round_up(tg_currency(), c, &c))
			return TG_MONEY_MAX;
		return c > 0 ? c : 0;
	}
	return 0;
}

bool
tg_acct_settings_check(const struct tg_acct_settings *s, char *why, size_t len)
{
	const struct tg_currency *cur = tg_currency();
	char a[TG_MONEY_STR_MAX], t[TG_MONEY_STR_MAX];

	if (s->flags & TG_ACCT_POSTPAID) {
		if (s->refill_mode != TG_REFILL_OFF) {
			snprintf(why, len,
			         "a postpaid account has no auto-refill: it is billed in "
			         "arrears (REFILL OFF, or KIND prepaid)");
			return false;
		}
		if (s->credit_limit < 0) {
			snprintf(why, len, "credit limit must be zero or more");
			return false;
		}
		return true;
	}
	if (s->refill_mode == TG_REFILL_OFF)
		return true;
	tg_money_format(s->refill_amount, a);
	tg_money_format(s->threshold, t);
	if (s->refill_amount <= 0) {
		snprintf(why, len, "refill amount must be positive");
		return false;
	}
	if (s->refill_amount % tg_currency_unit(cur) != 0) {
		snprintf(why, len, "refill amount %s: must be whole %s (%u decimals at most)", a,
		         cur->minor ? "minor units of the currency" : "units of the currency",
		         cur->minor);
		return false;
	}
	if (s->refill_mode == TG_REFILL_TOPUP && s->refill_amount <= s->threshold) {
		snprintf(why, len,
		         "top-up level %s is at or below the threshold %s: it must be above it, or "
		         "a refill would charge nothing",
		         a, t);
		return false;
	}
	return true;
}

/*
 * May the account fire a refill at all?  Auto-refill on, a payment method on
 * file, and the account active — or suspended for non-payment, which a
 * payment is exactly what it waits for.  An account an operator suspended,
 * or a closed one, is never charged.
 */
static inline bool
may_fire(uint8_t mode, uint8_t flags, uint8_t state)
{
	return mode != TG_REFILL_OFF && (flags & TG_ACCT_PAYMENT) &&
	       (state == TG_STATE_ACTIVE ||
	        (state == TG_STATE_SUSPENDED && (flags & TG_ACCT_UNPAID)));
}

/* Take the settings for writing: seq odd.  Writers are rare; money never waits on it. */
static uint32_t
settings_lock(struct tg_acct *a)
{
	for (;;) {
		uint32_t seq = tg_load_32(&a->seq);
		if (!(seq & 1) && ck_pr_cas_32(&a->seq, seq, seq + 1)) {
			ck_pr_fence_store();
			return seq;
		}
		ck_pr_stall();
	}
}

static void
settings_unlock(struct tg_acct *a, uint32_t seq)
{
	ck_pr_fence_store();
	tg_store_32(&a->seq, seq + 2);
}

/*
 * Would a move of the balance from before to after claim the refill flag?
 * Only when the account may fire, no request is in flight, and the balance
 * goes from above the threshold to at or below it.
 */
static inline bool
crosses(const struct tg_acct *a, int64_t before, int64_t after, uint64_t hold)
{
	if (hold & TG_HOLD_REFILL)
		return false;
	if (!may_fire(tg_load_8((const uint8_t *)&a->refill_mode),
	              tg_load_8((const uint8_t *)&a->flags), tg_load_8((const uint8_t *)&a->state)))
		return false;
	int64_t thr = (int64_t)tg_load_64((const uint64_t *)&a->threshold);
	return before > thr && after <= thr;
}

/*
 * The hold bits that claim the refill flag for the account's next request.
 * Only a claimant advances refill_seq, and only while it holds the flag, so
 * the number read here is final once the claim's CAS succeeds.
 */
static inline uint64_t
claim_bits(const struct tg_acct *a)
{
	uint64_t next = (uint64_t)tg_load_32(&a->refill_seq) + 1;
	return TG_HOLD_REFILL | ((next << TG_HOLD_SEQ_SHIFT) & TG_HOLD_SEQ);
}

/*
 * Claim a's refill-in-flight flag when the balance in cur is at or below
 * threshold and no request is in flight, by one compare-and-swap of the
 * pair (cur is refreshed on a lost race).  True when this call claimed it;
 * cur then holds the pair as stored.
 */
static bool
claim_at_or_below(struct tg_acct *a, uint64_t cur[2], int64_t threshold)
{
	uint64_t set[2];

	for (;;) {
		if ((cur[1] & TG_HOLD_REFILL) || (int64_t)cur[0] > threshold)
			return false;
		set[0] = cur[0];
		set[1] = cur[1] | claim_bits(a);
		if (tg_cas_pair(pair_of(a), cur, set)) {
			cur[1] = set[1];
			return true;
		}
	}
}

/* Does the flag in hold belong to request seq?  Both the bits and the counter must say so. */
static inline bool
holds_request(const struct tg_acct *a, uint64_t hold, uint32_t seq)
{
	return (hold & TG_HOLD_REFILL) &&
	       ((hold & TG_HOLD_SEQ) >> TG_HOLD_SEQ_SHIFT) == (seq & 0x7fu) &&
	       tg_load_32(&a->refill_seq) == seq;
}

static void
fill_move(struct tg_acct *a, const uint64_t v[2], bool fired, struct tg_move *m)
{
	m->balance = (int64_t)v[0];
	m->available = available_of((int64_t)v[0], v[1], credit_of(a));
	m->refill_fired = fired;
	m->refill_cleared = false;
	m->refill_void = false;
	m->refill_seq_cleared = 0;
	m->before = 0;
	m->refill_seq = 0;
	m->refill_charge = 0;
	if (fired) {
		/* Only the holder of the flag bumps the sequence, so each request is unique. */
		m->refill_seq = tg_load_32(&a->refill_seq) + 1;
		tg_store_32(&a->refill_seq, m->refill_seq);
		m->refill_charge = tg_refill_charge(
		    tg_load_8(&a->refill_mode), (int64_t)tg_load_64((uint64_t *)&a->refill_amount),
		    m->balance);
	}
}

tg_money_t
tg_acct_available(struct tg_acct *a)
{
	uint64_t cur[2];
	load_pair(a, cur);
	return available_of((int64_t)cur[0], cur[1], credit_of(a));
}

/* ---- limits (docs/FRAUD.md) ---- */

bool
tg_limits_day_take(struct tg_limits *l, uint16_t day, tg_money_t amount, tg_money_t cap)
{
	uint64_t cur = tg_load_64(&l->day_used);

	TG_ASSERT(amount >= 0);
	for (;;) {
		tg_money_t used = TG_DAY_OF(cur) == day ? TG_DAY_USED(cur) : 0;
		if (amount > cap || used > cap - amount)
			return false;
		if (ck_pr_cas_64_value(&l->day_used, cur, TG_DAY_PACK(day, used + amount), &cur))
			return true;
	}
}

void
tg_limits_day_give(struct tg_limits *l, uint16_t day, tg_money_t amount)
{
	uint64_t cur = tg_load_64(&l->day_used);

	TG_ASSERT(amount >= 0);
	for (;;) {
		if (TG_DAY_OF(cur) != day || amount == 0)
			return; /* counted on a day that is over: nothing to give back */
		tg_money_t used = TG_DAY_USED(cur);
		used = used > amount ? used - amount : 0;
		if (ck_pr_cas_64_value(&l->day_used, cur, TG_DAY_PACK(day, used), &cur))
			return;
	}
}

void
tg_limits_day_add(struct tg_limits *l, uint16_t day, tg_money_t amount)
{
	uint64_t cur = tg_load_64(&l->day_used);

	TG_ASSERT(amount >= 0);
	for (;;) {
		tg_money_t used = TG_DAY_OF(cur) == day ? TG_DAY_USED(cur) : 0;
		used = used > TG_DAY_USED_MAX - amount ? TG_DAY_USED_MAX : used + amount;
		if (ck_pr_cas_64_value(&l->day_used, cur, TG_DAY_PACK(day, used), &cur))
			return;
	}
}

tg_money_t
tg_limits_day_spent(const struct tg_limits *l, uint16_t day)
{
	uint64_t cur = tg_load_64((uint64_t *)(uintptr_t)&l->day_used);
	return TG_DAY_OF(cur) == day ? TG_DAY_USED(cur) : 0;
}

/*
 * Take one of the account's call places: a compare-and-swap of calls
 * against max (> 0), so no interleaving of any number of threads ever
 * counts more than max calls.
 */
static bool
take_call(struct tg_acct *a, uint32_t max)
{
	uint32_t cur = tg_load_32(&a->calls);

	for (;;) {
		if (cur >= max)
			return false;
		if (ck_pr_cas_32_value(&a->calls, cur, cur + 1, &cur))
			return true;
	}
}

static enum tg_result
reserve(struct tg_acct *a, struct tg_limits *l, uint16_t day, tg_money_t amount, bool new_call,
        struct tg_move *m)
{
	uint64_t cur[2], set[2];
	uint8_t state;
	bool took_call = false;
	tg_money_t took_day = 0;
	enum tg_result r;

	TG_ASSERT(amount >= 0);
	state = tg_load_8(&a->state);
	if (state == TG_STATE_CLOSED)
		return TG_CLOSED;
	if (state == TG_STATE_SUSPENDED)
		return TG_SUSPENDED;
	/*
	 * The limits are claimed first, each by its own compare-and-swap, and
	 * given back when the money is short: for that instant another grant
	 * may see one call or one amount too many, and be refused; never the
	 * reverse, so a limit is never exceeded.
	 */
	if (l != NULL) {
		uint32_t max = tg_load_32(&l->max_calls);
		if (new_call && max != 0) {
			if (!take_call(a, max))
				return TG_MAXCALLS;
			took_call = true;
		}
		tg_money_t cap = (tg_money_t)tg_load_64((uint64_t *)&l->daily_cap);
		if (cap > 0 && amount > 0) {
			if (!tg_limits_day_take(l, day, amount, cap)) {
				r = TG_DAILYCAP;
				goto undo;
			}
			took_day = amount;
		}
	}
	/*
	 * Read once, before the loop: a change of the limit racing this grant
	 * orders the grant before it, as a change of state does.
	 */
	tg_money_t credit = credit_of(a);
	load_pair(a, cur);
	for (;;) {
		tg_money_t avail = available_of((int64_t)cur[0], cur[1], credit);
		if (avail <= 0 || avail < amount) {
			fill_move(a, cur, false, m);
			r = avail <= 0 ? TG_BLOCKED : TG_SHORT;
			goto undo;
		}
		if (reserved_of(cur[1]) > TG_RESERVED_MAX - amount) {
			r = TG_OVERFLOW;
			goto undo;
		}
		set[0] = cur[0];
		set[1] = cur[1] + (uint64_t)amount;
		if (amount == 0 || tg_cas_pair(pair_of(a), cur, set))
			break;
	}
	if (new_call && !took_call)
		ck_pr_inc_32(&a->calls);
	fill_move(a, set, false, m);
	return TG_OK;
undo:
	if (took_day != 0)
		tg_limits_day_give(l, day, took_day);
	if (took_call)
		ck_pr_dec_32(&a->calls);
	return r;
}

enum tg_result
tg_acct_reserve(struct tg_acct *a, tg_money_t amount, struct tg_move *m)
{
	return reserve(a, NULL, 0, amount, true, m);
}

enum tg_result
tg_acct_extend(struct tg_acct *a, tg_money_t amount, struct tg_move *m)
{
	TG_ASSERT(amount > 0);
	return reserve(a, NULL, 0, amount, false, m);
}

enum tg_result
tg_acct_reserve_limited(struct tg_acct *a, struct tg_limits *l, uint16_t day, tg_money_t amount,
                        bool new_call, struct tg_move *m)
{
	TG_ASSERT(new_call || amount > 0);
	return reserve(a, l, day, amount, new_call, m);
}

struct tg_limits *
tg_acct_limits(const struct tg_table *t, struct tg_acct *a)
{
	if (!(tg_load_8(&a->flags) & TG_ACCT_LIMITS))
		return NULL;
	return &t->limits[tg_table_index(t, a)];
}

void
tg_acct_set_limits(const struct tg_table *t, struct tg_acct *a, const struct tg_limits_set *ls,
                   uint16_t today)
{
	struct tg_limits *l = &t->limits[tg_table_index(t, a)];
	bool any = ls->max_calls != 0 || ls->call_cap != 0 || ls->daily_cap != 0 || ls->low != 0;
	uint32_t seq = settings_lock(a);
	int64_t old_cap = (int64_t)tg_load_64((uint64_t *)&l->daily_cap);

	tg_store_64((uint64_t *)&l->call_cap, (uint64_t)ls->call_cap);
	tg_store_64((uint64_t *)&l->daily_cap, (uint64_t)ls->daily_cap);
	tg_store_64((uint64_t *)&l->low, (uint64_t)ls->low);
	tg_store_32(&l->max_calls, ls->max_calls);
	/* A daily cap counts from when it is set; a counter nobody kept is no count. */
	if (ls->daily_cap == 0 || old_cap == 0 || !(tg_load_8(&a->flags) & TG_ACCT_LIMITS))
		tg_store_64(&l->day_used, TG_DAY_PACK(today, 0));
	uint8_t flags = tg_load_8(&a->flags);
	tg_store_8(&a->flags,
	           any ? (uint8_t)(flags | TG_ACCT_LIMITS) : (uint8_t)(flags & ~TG_ACCT_LIMITS));
	settings_unlock(a, seq);
}

void
tg_acct_read_limits(const struct tg_table *t, const struct tg_acct *a, struct tg_limits_set *ls,
                    uint64_t *day_used)
{
	struct tg_acct *w = (struct tg_acct *)(uintptr_t)a; /* ck_pr loads take non-const */
	struct tg_limits *l = &t->limits[tg_table_index(t, a)];
	uint32_t s1, s2;

	do {
		s1 = tg_load_32(&w->seq);
		if (s1 & 1) {
			ck_pr_stall();
			continue;
		}
		ck_pr_fence_load();
		bool has = (tg_load_8(&w->flags) & TG_ACCT_LIMITS) != 0;
		ls->call_cap = has ? (int64_t)tg_load_64((uint64_t *)&l->call_cap) : 0;
		ls->daily_cap = has ? (int64_t)tg_load_64((uint64_t *)&l->daily_cap) : 0;
		ls->low = has ? (int64_t)tg_load_64((uint64_t *)&l->low) : 0;
		ls->max_calls = has ? tg_load_32(&l->max_calls) : 0;
		*day_used = has ? tg_load_64(&l->day_used) : 0;
		ck_pr_fence_load();
		s2 = tg_load_32(&w->seq);
	} while ((s1 & 1) || s1 != s2);
}

void
tg_acct_restore_limits(const struct tg_table *t, struct tg_acct *a, const struct tg_limits_set *ls,
                       uint64_t day_used)
{
	struct tg_limits *l = &t->limits[tg_table_index(t, a)];
	bool any = ls->max_calls != 0 || ls->call_cap != 0 || ls->daily_cap != 0 || ls->low != 0;
	uint32_t seq = settings_lock(a);

	tg_store_64((uint64_t *)&l->call_cap, (uint64_t)ls->call_cap);
	tg_store_64((uint64_t *)&l->daily_cap, (uint64_t)ls->daily_cap);
	tg_store_64((uint64_t *)&l->low, (uint64_t)ls->low);
	tg_store_32(&l->max_calls, ls->max_calls);
	tg_store_64(&l->day_used, day_used);
	tg_store_32(&l->alarmed, 0);
	uint8_t flags = tg_load_8(&a->flags);
	tg_store_8(&a->flags,
	           any ? (uint8_t)(flags | TG_ACCT_LIMITS) : (uint8_t)(flags & ~TG_ACCT_LIMITS));
	settings_unlock(a, seq);
}

bool
tg_limits_alarm_claim(struct tg_limits *l, uint16_t day, unsigned kind)
{
	uint32_t cur = tg_load_32(&l->alarmed);

	for (;;) {
		uint32_t bits = (uint16_t)(cur >> 16) == day ? (cur & 0xffffu) : 0;
		if (bits & (1u << kind))
			return false;
		uint32_t set = (uint32_t)day << 16 | bits | (1u << kind);
		if (ck_pr_cas_32_value(&l->alarmed, cur, set, &cur))
			return true;
	}
}

void
tg_limits_alarm_release(struct tg_limits *l, uint16_t day, unsigned kind)
{
	uint32_t cur = tg_load_32(&l->alarmed);

	TG_ASSERT(kind < 16);
	for (;;) {
		if ((uint16_t)(cur >> 16) != day || !(cur & (1u << kind)))
			return; /* a later day's word, or not claimed: nothing of ours */
		if (ck_pr_cas_32_value(&l->alarmed, cur, cur & ~(1u << kind), &cur))
			return;
	}
}

/*
 * Reserve amount (>= 0) for an always-allowed call (docs/RATES.md): no
 * check of the state or of what is available, so it may take available
 * below zero.  new_call counts the call (CALL.AUTH); an extension does not.
 */
enum tg_result
tg_acct_reserve_always(struct tg_acct *a, tg_money_t amount, bool new_call, struct tg_move *m)
{
	uint64_t cur[2], set[2];

	TG_ASSERT(amount >= 0);
	load_pair(a, cur);
	for (;;) {
		if (reserved_of(cur[1]) > TG_RESERVED_MAX - amount)
			return TG_OVERFLOW;
		set[0] = cur[0];
		set[1] = cur[1] + (uint64_t)amount;
		if (amount == 0 || tg_cas_pair(pair_of(a), cur, set))
			break;
	}
	if (new_call)
		ck_pr_inc_32(&a->calls);
	fill_move(a, set, false, m);
	return TG_OK;
}

/*
 * The one debit loop: release `release` from the reservation, take `cost`
 * from the balance, claim the refill flag on a threshold crossing.
 */
static enum tg_result
move_down(struct tg_acct *a, tg_money_t release, tg_money_t cost, struct tg_move *m)
{
	uint64_t cur[2], set[2];
	bool fired;

	TG_ASSERT(release >= 0 && cost >= 0);
	load_pair(a, cur);
	for (;;) {
		int64_t before = (int64_t)cur[0], after;
		TG_ASSERT(reserved_of(cur[1]) >= release);
		if (!tg_money_sub(before, cost, &after))
			return TG_OVERFLOW;
		fired = crosses(a, before, after, cur[1]);
		set[0] = (uint64_t)after;
		set[1] = (cur[1] - (uint64_t)release) | (fired ? claim_bits(a) : 0);
		if (tg_cas_pair(pair_of(a), cur, set))
			break;
	}
	fill_move(a, set, fired, m);
	return TG_OK;
}

enum tg_result
tg_acct_commit(struct tg_acct *a, tg_money_t reserved, tg_money_t cost, struct tg_move *m)
{
	enum tg_result r = move_down(a, reserved, cost, m);
	if (r == TG_OK)
		ck_pr_dec_32(&a->calls);
	return r;
}

enum tg_result
tg_acct_debit(struct tg_acct *a, tg_money_t cost, struct tg_move *m)
{
	return move_down(a, 0, cost, m);
}

enum tg_result
tg_acct_credit(struct tg_acct *a, tg_money_t amount, uint32_t refill_seq, struct tg_move *m)
{
	uint64_t cur[2], set[2];

	TG_ASSERT(amount >= 0);
	load_pair(a, cur);
	for (;;) {
		int64_t after;
		if (!tg_money_add((int64_t)cur[0], amount, &after))
			return TG_OVERFLOW;
		set[0] = (uint64_t)after;
		set[1] = cur[1];
		if (refill_seq != 0 && holds_request(a, cur[1], refill_seq))
			set[1] &= ~(TG_HOLD_REFILL | TG_HOLD_SEQ);
		if (tg_cas_pair(pair_of(a), cur, set))
			break;
	}
	fill_move(a, set, false, m);
	m->refill_cleared = (cur[1] & TG_HOLD_REFILL) && !(set[1] & TG_HOLD_REFILL);
	if (m->refill_cleared)
		m->refill_seq_cleared = refill_seq;
	return TG_OK;
}

enum tg_result
tg_acct_set_balance(struct tg_acct *a, tg_money_t balance, struct tg_move *m)
{
	uint64_t cur[2], set[2];
	bool fired;

	load_pair(a, cur);
	for (;;) {
		fired = crosses(a, (int64_t)cur[0], balance, cur[1]);
		set[0] = (uint64_t)balance;
		set[1] = cur[1] | (fired ? claim_bits(a) : 0);
		if (tg_cas_pair(pair_of(a), cur, set))
			break;
	}
	fill_move(a, set, fired, m);
	m->before = (int64_t)cur[0];
	return TG_OK;
}

bool
tg_acct_refill_clear(struct tg_acct *a, uint32_t refill_seq)
{
	uint64_t cur[2], set[2];

	load_pair(a, cur);
	for (;;) {
		if (!holds_request(a, cur[1], refill_seq))
			return false;
		set[0] = cur[0];
		set[1] = cur[1] & ~(TG_HOLD_REFILL | TG_HOLD_SEQ);
		if (tg_cas_pair(pair_of(a), cur, set))
			return true;
	}
}

uint64_t
tg_table_release_reservations(struct tg_table *t, tg_money_t *amount)
{
	uint64_t touched = 0;

	TG_CHECK_OBJ(t, TG_TABLE_MAGIC);
	TG_ASSERT(!t->readonly);
	*amount = 0;
	for (uint64_t i = 0; i < t->slots; i++) {
		struct tg_acct *a = &t->slot[i].acct;
		uint64_t cur[2], set[2];
		if (tg_load_64(&a->key) == 0)
			continue;
		load_pair(a, cur);
		if (reserved_of(cur[1]) == 0 && tg_load_32(&a->calls) == 0)
			continue;
		for (;;) {
			set[0] = cur[0];
			set[1] = cur[1] & ~TG_HOLD_RESERVED;
			if (tg_cas_pair(pair_of(a), cur, set))
				break;
		}
		*amount += reserved_of(cur[1]);
		tg_store_32(&a->calls, 0);
		touched++;
	}
	return touched;
}

void
tg_acct_restore(struct tg_acct *a, const struct tg_acct_restore *r,
                const struct tg_acct_settings *s)
{
	uint64_t hold = (uint64_t)r->reserved & TG_HOLD_RESERVED;

	TG_ASSERT(r->reserved >= 0 && r->reserved <= TG_RESERVED_MAX);
	if (r->refill_inflight)
		hold |= TG_HOLD_REFILL | ((uint64_t)(r->refill_seq & 0x7fu) << TG_HOLD_SEQ_SHIFT);
	tg_store_64((uint64_t *)&a->balance, (uint64_t)r->balance);
	tg_store_64(&a->hold, hold);
	tg_store_32(&a->calls, r->calls);
	tg_store_32(&a->refill_seq, r->refill_seq);
	tg_store_32(&a->plan, s->plan);
	tg_store_64((uint64_t *)&a->threshold, (uint64_t)tg_acct_terms(s));
	tg_store_64((uint64_t *)&a->refill_amount, (uint64_t)s->refill_amount);
	tg_store_8(&a->state, s->state);
	tg_store_8(&a->refill_mode, s->refill_mode);
	tg_store_8(&a->flags, s->flags);
	tg_store_8(&a->failures, r->failures);
	tg_store_32(&a->unpaid_since, (s->flags & TG_ACCT_UNPAID) ? r->unpaid_since : 0);
}

void
tg_acct_replace(struct tg_acct *a, const struct tg_acct_restore *r,
                const struct tg_acct_settings *s)
{
	uint64_t cur[2], set[2];

	TG_ASSERT(r->reserved >= 0 && r->reserved <= TG_RESERVED_MAX);
	set[0] = (uint64_t)r->balance;
	set[1] = (uint64_t)r->reserved & TG_HOLD_RESERVED;
	if (r->refill_inflight)
		set[1] |= TG_HOLD_REFILL | ((uint64_t)(r->refill_seq & 0x7fu) << TG_HOLD_SEQ_SHIFT);
	uint32_t seq = settings_lock(a);
	tg_store_32(&a->plan, s->plan);
	tg_store_64((uint64_t *)&a->threshold, (uint64_t)tg_acct_terms(s));
	tg_store_64((uint64_t *)&a->refill_amount, (uint64_t)s->refill_amount);
	tg_store_8(&a->state, s->state);
	tg_store_8(&a->refill_mode, s->refill_mode);
	tg_store_8(&a->flags, s->flags);
	tg_store_8(&a->failures, r->failures);
	tg_store_32(&a->unpaid_since, (s->flags & TG_ACCT_UNPAID) ? r->unpaid_since : 0);
	settings_unlock(a, seq);
	load_pair(a, cur);
	while (!tg_cas_pair(pair_of(a), cur, set))
		;
	tg_store_32(&a->calls, r->calls);
	tg_store_32(&a->refill_seq, r->refill_seq);
}

/* ---- settings ---- */

enum tg_result
tg_acct_configure(struct tg_acct *a, const struct tg_acct_settings *s, struct tg_move *m)
{
	uint64_t cur[2];
	uint32_t seq;
	bool fired = false;

	if (s->refill_mode > TG_REFILL_TOPUP || s->state > TG_STATE_CLOSED)
		return TG_ERR;
	if ((s->flags & TG_ACCT_POSTPAID) &&
	    (s->refill_mode != TG_REFILL_OFF || s->credit_limit < 0 || s->threshold != 0))
		return TG_ERR;
	if (s->refill_mode != TG_REFILL_OFF && !(s->flags & TG_ACCT_PAYMENT))
		return TG_NOPAYMENT;
	/* "For non-payment" describes a suspension, and only that. */
	uint8_t flags = s->flags;
	if (s->state != TG_STATE_SUSPENDED)
		flags &= (uint8_t)~TG_ACCT_UNPAID;

	seq = settings_lock(a);
	bool could =
	    may_fire(tg_load_8(&a->refill_mode), tg_load_8(&a->flags), tg_load_8(&a->state));
	int64_t old_threshold = (int64_t)tg_load_64((uint64_t *)&a->threshold);
	/* Only the engine suspends for non-payment: an operator can keep it, never set it. */
	if (!(tg_load_8(&a->flags) & TG_ACCT_UNPAID))
		flags &= (uint8_t)~TG_ACCT_UNPAID;
	/* The limits have their own setter (tg_acct_set_limits): their bit stays as it is. */
	flags = (uint8_t)((flags & ~TG_ACCT_LIMITS) | (tg_load_8(&a->flags) & TG_ACCT_LIMITS));
	tg_store_32(&a->plan, s->plan);
	tg_store_64((uint64_t *)&a->threshold, (uint64_t)tg_acct_terms(s));
	tg_store_64((uint64_t *)&a->refill_amount, (uint64_t)s->refill_amount);
	tg_store_8(&a->state, s->state);
	tg_store_8(&a->refill_mode, s->refill_mode);
	tg_store_8(&a->flags, flags);
	if (!(flags & TG_ACCT_UNPAID))
		tg_store_32(&a->unpaid_since, 0);
	settings_unlock(a, seq);

	bool can = may_fire(s->refill_mode, flags, s->state);
	load_pair(a, cur);
	if (!can) {
		/* A request in flight may no longer be charged: it is void, its flag cleared. */
		uint32_t rs = tg_load_32(&a->refill_seq);
		fill_move(a, cur, false, m);
		if (tg_acct_refill_clear(a, rs)) {
			m->refill_cleared = true;
			m->refill_void = true;
			m->refill_seq_cleared = rs;
		}
		return TG_OK;
	}
	/*
	 * Auto-refill switched on (or the account made active again, or its
	 * threshold changed) with the balance already at or below the threshold:
	 * fire now.  Any other change of settings fires nothing: the crossing
	 * that matters already happened or has yet to.
	 */
	if (!could || old_threshold != s->threshold) {
		fired = claim_at_or_below(a, cur, s->threshold);
	}
	fill_move(a, cur, fired, m);
	return TG_OK;
}

/* ---- the course of a failing card ---- */

static void
standing_of(struct tg_acct *a, struct tg_standing *st)
{
	st->state = tg_load_8(&a->state);
	st->failures = tg_load_8(&a->failures);
	st->unpaid = (tg_load_8(&a->flags) & TG_ACCT_UNPAID) != 0;
	st->unpaid_since = tg_load_32(&a->unpaid_since);
}

enum tg_standing_event
tg_acct_refill_failure(struct tg_acct *a, uint32_t suspend_after, uint32_t now,
                       struct tg_standing *st)
{
	enum tg_standing_event ev = TG_STANDING_FAILED;
	uint32_t seq = settings_lock(a);
	uint8_t n = tg_load_8(&a->failures);

	if (n < UINT8_MAX)
		tg_store_8(&a->failures, ++n);
	if (suspend_after != 0 && n >= suspend_after && tg_load_8(&a->state) == TG_STATE_ACTIVE) {
		/* Still may fire (may_fire): the customer's card update is how it gets out. */
		tg_store_8(&a->state, TG_STATE_SUSPENDED);
		tg_store_8(&a->flags, (uint8_t)(tg_load_8(&a->flags) | TG_ACCT_UNPAID));
		tg_store_32(&a->unpaid_since, now ? now : 1);
		ev = TG_STANDING_SUSPENDED;
	}
	standing_of(a, st);
	settings_unlock(a, seq);
	return ev;
}

enum tg_standing_event
tg_acct_paid(struct tg_acct *a, struct tg_standing *st)
{
	enum tg_standing_event ev = TG_STANDING_NONE;

	if (tg_load_8(&a->failures) == 0 && !(tg_load_8(&a->flags) & TG_ACCT_UNPAID))
		return TG_STANDING_NONE;
	uint32_t seq = settings_lock(a);
	uint8_t flags = tg_load_8(&a->flags);
	if ((flags & TG_ACCT_UNPAID) && tg_load_8(&a->state) == TG_STATE_SUSPENDED) {
		tg_store_8(&a->state, TG_STATE_ACTIVE);
		ev = TG_STANDING_RESTORED;
	} else if (tg_load_8(&a->failures) != 0) {
		ev = TG_STANDING_PAID;
	}
	tg_store_8(&a->flags, (uint8_t)(flags & ~TG_ACCT_UNPAID));
	tg_store_32(&a->unpaid_since, 0);
	tg_store_8(&a->failures, 0);
	standing_of(a, st);
	settings_unlock(a, seq);
	return ev;
}

enum tg_standing_event
tg_acct_close_unpaid(struct tg_acct *a, uint32_t close_after, uint32_t now, struct tg_standing *st,
                     struct tg_move *m)
{
	uint64_t cur[2];

	TG_ASSERT(close_after > 0);
	if (!(tg_load_8(&a->flags) & TG_ACCT_UNPAID))
		return TG_STANDING_NONE;
	uint32_t seq = settings_lock(a);
	uint32_t since = tg_load_32(&a->unpaid_since);
	bool due = (tg_load_8(&a->flags) & TG_ACCT_UNPAID) &&
	           tg_load_8(&a->state) == TG_STATE_SUSPENDED &&
	           (uint64_t)since + close_after <= now;
	if (due) {
		tg_store_8(&a->state, TG_STATE_CLOSED);
		tg_store_8(&a->flags, (uint8_t)(tg_load_8(&a->flags) & ~TG_ACCT_UNPAID));
		tg_store_32(&a->unpaid_since, 0);
	}
	standing_of(a, st);
	settings_unlock(a, seq);
	if (!due)
		return TG_STANDING_NONE;
	/* A closed account is never charged: a request in flight is void. */
	uint32_t rs = tg_load_32(&a->refill_seq);
	load_pair(a, cur);
	fill_move(a, cur, false, m);
	if (tg_acct_refill_clear(a, rs)) {
		m->refill_cleared = true;
		m->refill_void = true;
		m->refill_seq_cleared = rs;
	}
	return TG_STANDING_CLOSED;
}

enum tg_result
tg_acct_rearm(struct tg_acct *a, struct tg_move *m)
{
	uint64_t cur[2];
	struct tg_acct_view v;
	bool fired = false;

	tg_acct_read(a, &v);
	load_pair(a, cur);
	if (may_fire(v.refill_mode, v.flags, v.state)) {
		fired = claim_at_or_below(a, cur, v.threshold);
	}
	fill_move(a, cur, fired, m);
	return TG_OK;
}

void
tg_acct_read_money(const struct tg_acct *a, int64_t *balance, uint64_t *hold)
{
	const uint64_t *bp = (const uint64_t *)(const void *)&a->balance;
	uint64_t b1, h1, b2, h2;

	/*
	 * A read-only mapping cannot use cmpxchg16b to read the pair, so read it
	 * twice until both reads agree.
	 */
	for (int tries = 0;; tries++) {
		b1 = tg_load_64(bp);
		h1 = tg_load_64(&a->hold);
		ck_pr_fence_load();
		b2 = tg_load_64(bp);
		h2 = tg_load_64(&a->hold);
		if ((b1 == b2 && h1 == h2) || tries > 1000)
			break;
	}
	*balance = (int64_t)b2;
	*hold = h2;
}

void
tg_acct_read(const struct tg_acct *a, struct tg_acct_view *v)
{
	struct tg_acct *w = (struct tg_acct *)(uintptr_t)a; /* ck_pr loads take non-const */
	uint32_t s1, s2;
	int64_t b2;
	uint64_t h2;

	do {
		s1 = tg_load_32(&w->seq);
		if (s1 & 1) {
			ck_pr_stall();
			continue;
		}
		ck_pr_fence_load();
		v->plan = tg_load_32(&w->plan);
		int64_t terms = (int64_t)tg_load_64((uint64_t *)&w->threshold);
		v->refill_amount = (int64_t)tg_load_64((uint64_t *)&w->refill_amount);
		v->state = tg_load_8(&w->state);
		v->refill_mode = tg_load_8(&w->refill_mode);
		v->flags = tg_load_8(&w->flags);
		bool postpaid = (v->flags & TG_ACCT_POSTPAID) != 0;
		v->threshold = postpaid ? 0 : terms;
		v->credit_limit = postpaid ? terms : 0;
		v->failures = tg_load_8(&w->failures);
		v->unpaid_since = tg_load_32(&w->unpaid_since);
		ck_pr_fence_load();
		s2 = tg_load_32(&w->seq);
	} while ((s1 & 1) || s1 != s2);

	tg_acct_read_money(a, &b2, &h2);
	v->id = tg_load_64(&w->key) - 1;
	v->balance = b2;
	v->reserved = reserved_of(h2);
	v->available = available_of(b2, h2, v->credit_limit);
	v->refill_inflight = (h2 & TG_HOLD_REFILL) != 0;
	v->refill_seq = tg_load_32(&w->refill_seq);
	v->calls = tg_load_32(&w->calls);
}

long
tg_table_huge_kib(const struct tg_table *t)
{
	char line[256];
	unsigned long lo, hi;
	long kib = -1;
	bool ours = false;

	TG_CHECK_OBJ_NOTNULL(t, TG_TABLE_MAGIC);
	FILE *f = fopen("/proc/self/smaps", "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' '))
			ours = lo == (unsigned long)(uintptr_t)t->base;
		else if (ours && sscanf(line, "ShmemPmdMapped: %ld kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib;
}
