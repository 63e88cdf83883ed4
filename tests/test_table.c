/*
 * test_table.c - the account table: segment life, lookup, every money step,
 * refill firing, and a second process reading a live segment.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tg_table.h"

#define M(units) ((tg_money_t)(units)*TG_MONEY_SCALE)

static char shm_name[64];

static void
make_name(const char *tag)
{
	snprintf(shm_name, sizeof(shm_name), "/tg-test-%s-%d", tag, (int)getpid());
	tg_table_unlink(shm_name);
}

static void
open_table(struct tg_table *t, uint64_t capacity)
{
	struct tg_table_cfg cfg = {.name = shm_name, .capacity = capacity, .mode = 0600};
	char err[256];
	int rc = tg_table_open(t, &cfg, err, sizeof(err));
	if (rc != 0)
		fail_msg("tg_table_open: %s", err);
}

static struct tg_acct *
new_acct(struct tg_table *t, uint64_t id, tg_money_t balance)
{
	struct tg_acct *a;
	struct tg_move m;
	bool created;
	assert_int_equal(tg_table_insert(t, id, &a, &created), TG_OK);
	assert_int_equal(tg_acct_set_balance(a, balance, &m), TG_OK);
	return a;
}

static void
test_create_mode_and_header(void **state)
{
	struct tg_table t;
	struct stat st;
	(void)state;

	make_name("hdr");
	open_table(&t, 1000);
	int fd = shm_open(shm_name, O_RDONLY, 0);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	close(fd);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal((size_t)st.st_size, tg_table_size(1000));
	assert_int_equal(t.hdr->magic, TG_SHM_MAGIC);
	assert_int_equal(t.hdr->version, TG_SHM_VERSION);
	assert_int_equal(t.hdr->record_size, 64);
	assert_int_equal(t.hdr->capacity, 1000);
	assert_int_equal(t.hdr->writer_pid, getpid());
	assert_int_equal(t.hdr->generation, 1);
	assert_true(t.hdr->created > 0);
	assert_int_equal((uintptr_t)t.slot % 128, 0);
	assert_int_equal(t.hdr->slot_size, 128);

	/* A second writer is refused while the first is attached... */
	struct tg_table t2;
	struct tg_table_cfg cfg = {.name = shm_name, .capacity = 1000, .mode = 0600};
	char err[256];
	assert_int_equal(tg_table_open(&t2, &cfg, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "already exists"));
	/* ...and with reuse too: the writer is alive. */
	tg_table_close(&t);
	cfg.reuse = true;
	cfg.capacity = 2000;
	assert_int_equal(tg_table_open(&t2, &cfg, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "capacity"));
	cfg.capacity = 1000;
	assert_int_equal(tg_table_open(&t2, &cfg, err, sizeof(err)), 0);
	assert_int_equal(t2.hdr->generation, 2);
	tg_table_close(&t2);
	tg_table_unlink(shm_name);
}

static void
test_bad_names_and_capacity(void **state)
{
	struct tg_table t;
	char err[256];
	(void)state;
	struct tg_table_cfg cfg = {.name = "no-slash", .capacity = 10, .mode = 0600};
	assert_int_equal(tg_table_open(&t, &cfg, err, sizeof(err)), -EINVAL);
	cfg.name = "/a/b";
	assert_int_equal(tg_table_open(&t, &cfg, err, sizeof(err)), -EINVAL);
	cfg.name = "/tg-test-cap";
	cfg.capacity = 0;
	assert_int_equal(tg_table_open(&t, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "capacity"));
}

static void
test_undersized_shm_fails_at_start(void **state)
{
	struct tg_table t;
	char err[256];
	(void)state;
	make_name("huge");
	/* 2^30 accounts need ~160 GiB: more than /dev/shm holds here. */
	struct tg_table_cfg cfg = {.name = shm_name, .capacity = 1ull << 30, .mode = 0600};
	int rc = tg_table_open(&t, &cfg, err, sizeof(err));
	if (rc == 0) {
		tg_table_close(&t);
		tg_table_unlink(shm_name);
		skip();
	}
	assert_int_equal(rc, -ENOSPC);
	assert_non_null(strstr(err, "/dev/shm"));
	/* Nothing is left behind. */
	assert_int_equal(shm_open(shm_name, O_RDONLY, 0), -1);
	assert_int_equal(errno, ENOENT);
}

static void
test_insert_find_full(void **state)
{
	struct tg_table t;
	struct tg_acct *a, *b;
	bool created;
	(void)state;

	make_name("full");
	open_table(&t, 100);
	assert_null(tg_table_find(&t, 42));
	assert_int_equal(tg_table_insert(&t, 42, &a, &created), TG_OK);
	assert_true(created);
	assert_int_equal(tg_acct_id(a), 42);
	assert_int_equal(tg_table_insert(&t, 42, &b, &created), TG_OK);
	assert_false(created);
	assert_ptr_equal(a, b);
	assert_ptr_equal(tg_table_find(&t, 42), a);
	/* Account 0 is an ordinary account; UINT64_MAX is not an id. */
	assert_int_equal(tg_table_insert(&t, 0, &b, &created), TG_OK);
	assert_ptr_equal(tg_table_find(&t, 0), b);
	assert_int_equal(tg_table_insert(&t, UINT64_MAX, &b, &created), TG_ERR);
	assert_null(tg_table_find(&t, UINT64_MAX));
	for (uint64_t id = 1000; id < 1098; id++)
		assert_int_equal(tg_table_insert(&t, id, &b, &created), TG_OK);
	assert_int_equal(t.hdr->count, 100);
	assert_int_equal(tg_table_insert(&t, 5000, &b, &created), TG_FULL);
	for (uint64_t id = 1000; id < 1098; id++) {
		b = tg_table_find(&t, id);
		assert_non_null(b);
		assert_int_equal(tg_acct_id(b), id);
	}
	assert_null(tg_table_find(&t, 5000));
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

static void
test_reserve_commit_debit_credit(void **state)
{
	struct tg_table t;
	struct tg_move m;
	struct tg_acct_view v;
	(void)state;

	make_name("money");
	open_table(&t, 10);
	struct tg_acct *a = new_acct(&t, 7, M(10));

	assert_int_equal(tg_acct_reserve(a, M(4), &m), TG_OK);
	assert_int_equal(m.available, M(6));
	assert_int_equal(m.balance, M(10));
	assert_int_equal(tg_acct_reserve(a, M(7), &m), TG_SHORT);
	assert_int_equal(tg_acct_reserve(a, M(6), &m), TG_OK);
	assert_int_equal(m.available, 0);
	assert_int_equal(tg_acct_reserve(a, 1, &m), TG_BLOCKED);
	tg_acct_read(a, &v);
	assert_int_equal(v.reserved, M(10));
	assert_int_equal(v.calls, 2);

	/* Commit 4 reserved at a cost of 1.5: 2.5 comes back. */
	assert_int_equal(tg_acct_commit(a, M(4), 1500000, &m), TG_OK);
	assert_int_equal(m.balance, 8500000);
	assert_int_equal(m.available, 2500000);
	/* Commit more than reserved: the call happened, it is charged. */
	assert_int_equal(tg_acct_commit(a, M(6), M(7), &m), TG_OK);
	assert_int_equal(m.balance, 1500000);
	assert_int_equal(m.available, 1500000);
	tg_acct_read(a, &v);
	assert_int_equal(v.reserved, 0);
	assert_int_equal(v.calls, 0);

	/* A CDR may go below zero; then everything blocks. */
	assert_int_equal(tg_acct_debit(a, M(2), &m), TG_OK);
	assert_int_equal(m.balance, -500000);
	assert_int_equal(tg_acct_reserve(a, 1, &m), TG_BLOCKED);
	assert_int_equal(tg_acct_credit(a, 500000, 0, &m), TG_OK);
	assert_int_equal(m.balance, 0);
	assert_int_equal(tg_acct_reserve(a, 1, &m), TG_BLOCKED);
	assert_int_equal(tg_acct_credit(a, 1, 0, &m), TG_OK);
	assert_int_equal(tg_acct_reserve(a, 1, &m), TG_OK);
	assert_int_equal(tg_acct_commit(a, 1, 0, &m), TG_OK);

	/* Overflow is refused, nothing moves. */
	assert_int_equal(tg_acct_credit(a, INT64_MAX, 0, &m), TG_OVERFLOW);
	tg_acct_read(a, &v);
	assert_int_equal(v.balance, 1);
	assert_int_equal(tg_acct_set_balance(a, INT64_MIN + 5, &m), TG_OK);
	assert_int_equal(tg_acct_debit(a, 10, &m), TG_OVERFLOW);
	assert_int_equal(tg_acct_reserve(a, 1, &m), TG_BLOCKED);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

/*
 * A postpaid account is granted down to minus its credit limit, by the same
 * reserve; its settings read back with the limit, not as a threshold, and
 * it may not have auto-refill.
 */
static void
test_postpaid_grants_down_to_minus_the_limit(void **state)
{
	struct tg_table t;
	struct tg_move m;
	struct tg_acct_view v;
	char why[160];
	(void)state;

	make_name("postpaid");
	open_table(&t, 10);
	struct tg_acct *a = new_acct(&t, 9, 0);
	struct tg_acct_settings s = {.flags = TG_ACCT_POSTPAID, .credit_limit = M(50)};
	assert_true(tg_acct_settings_check(&s, why, sizeof(why)));
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	tg_acct_read(a, &v);
	assert_int_equal(v.credit_limit, M(50));
	assert_int_equal(v.threshold, 0);
	assert_int_equal(v.available, M(50));
	assert_int_equal(tg_acct_view_terms(&v), M(50));

	/* At $0.00 it is still granted: 30 + 20 = the whole limit, then nothing. */
	assert_int_equal(tg_acct_reserve(a, M(30), &m), TG_OK);
	assert_int_equal(m.available, M(20));
	assert_int_equal(tg_acct_reserve(a, M(21), &m), TG_SHORT);
	assert_int_equal(tg_acct_reserve(a, M(20), &m), TG_OK);
	assert_int_equal(tg_acct_reserve(a, 1, &m), TG_BLOCKED);
	assert_int_equal(tg_acct_commit(a, M(30), M(30), &m), TG_OK);
	assert_int_equal(tg_acct_commit(a, M(20), M(5), &m), TG_OK);
	assert_int_equal(m.balance, -M(35));
	assert_int_equal(m.available, M(15));
	/* A payment credits it back: the limit counts from the new balance. */
	assert_int_equal(tg_acct_credit(a, M(35), 0, &m), TG_OK);
	assert_int_equal(m.available, M(50));
	assert_int_equal(m.refill_fired, false);

	/* Back to prepaid: the limit goes, and the debt (if any) blocks. */
	assert_int_equal(tg_acct_debit(a, M(1), &m), TG_OK);
	s = (struct tg_acct_settings){.threshold = M(2)};
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	tg_acct_read(a, &v);
	assert_int_equal(v.credit_limit, 0);
	assert_int_equal(v.threshold, M(2));
	assert_int_equal(v.available, -M(1));
	assert_int_equal(tg_acct_reserve(a, 1, &m), TG_BLOCKED);

	/* No auto-refill for a postpaid account, no negative limit. */
	s = (struct tg_acct_settings){.flags = TG_ACCT_POSTPAID | TG_ACCT_PAYMENT,
	                              .refill_mode = TG_REFILL_ADD,
	                              .refill_amount = M(10)};
	assert_false(tg_acct_settings_check(&s, why, sizeof(why)));
	assert_non_null(strstr(why, "no auto-refill"));
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_ERR);
	s = (struct tg_acct_settings){.flags = TG_ACCT_POSTPAID, .credit_limit = -1};
	assert_false(tg_acct_settings_check(&s, why, sizeof(why)));
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_ERR);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

/*
 * Regression: usage per category was a plain atomic add, so a statement
 * total past 9223372036854.775807 wrapped negative.  It stops at the top,
 * also when two threads race it there.
 */
struct usage_race {
	struct tg_usage *u;
	int rounds;
};

static void *
usage_racer(void *arg)
{
	struct usage_race *r = arg;
	for (int i = 0; i < r->rounds; i++)
		tg_usage_add(r->u, 5, TG_MONEY_MAX / 1000);
	return NULL;
}

static void
test_usage_saturates_at_the_top(void **state)
{
	struct tg_table t;
	(void)state;

	make_name("usage");
	open_table(&t, 8);
	struct tg_acct *a = new_acct(&t, 1, 0);
	struct tg_usage *u = tg_table_usage(&t, a);
	assert_int_equal(tg_usage_add(u, 6, TG_MONEY_MAX - 10), TG_MONEY_MAX - 10);
	assert_int_equal(tg_usage_add(u, 6, 7), TG_MONEY_MAX - 3);
	assert_int_equal(tg_usage_add(u, 6, 7), TG_MONEY_MAX);
	assert_int_equal(tg_usage_add(u, 6, 0), TG_MONEY_MAX);
	assert_int_equal(tg_usage_add(u, 6, TG_MONEY_MAX), TG_MONEY_MAX);
	assert_int_equal(u->charged[6], TG_MONEY_MAX);
	for (unsigned c = 0; c < TG_CATEGORIES_MAX; c++)
		if (c != 6)
			assert_int_equal(u->charged[c], 0);

	/* Four threads, each alone enough to pass the top four times over. */
	struct usage_race r = {.u = u, .rounds = 4000};
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, usage_racer, &r), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(u->charged[5], TG_MONEY_MAX);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

static void
test_states_block(void **state)
{
	struct tg_table t;
	struct tg_move m;
	(void)state;

	make_name("state");
	open_table(&t, 10);
	struct tg_acct *a = new_acct(&t, 1, M(100));
	struct tg_acct_settings s = {.state = TG_STATE_SUSPENDED};
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	assert_int_equal(tg_acct_reserve(a, 1, &m), TG_SUSPENDED);
	s.state = TG_STATE_CLOSED;
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	assert_int_equal(tg_acct_reserve(a, 1, &m), TG_CLOSED);
	/* CDRs still apply to a closed account: the call happened. */
	assert_int_equal(tg_acct_debit(a, 5, &m), TG_OK);
	s.state = 9;
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_ERR);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

/*
 * The day's fraud alarm of each kind is claimed once; a claim given back
 * (its alarm could not be kept) is claimed again; a new day re-arms every
 * kind, and a give-back of an older day leaves the new day's claims alone.
 */
static void
test_alarm_claim_release(void **state)
{
	struct tg_limits l;
	(void)state;

	memset(&l, 0, sizeof(l));
	assert_true(tg_limits_alarm_claim(&l, 100, 0));
	assert_false(tg_limits_alarm_claim(&l, 100, 0));
	assert_true(tg_limits_alarm_claim(&l, 100, 2));
	tg_limits_alarm_release(&l, 100, 0);
	assert_false(tg_limits_alarm_claim(&l, 100, 2)); /* the other kind kept its claim */
	assert_true(tg_limits_alarm_claim(&l, 100, 0));
	assert_true(tg_limits_alarm_claim(&l, 101, 0)); /* the next day */
	assert_true(tg_limits_alarm_claim(&l, 101, 2));
	tg_limits_alarm_release(&l, 100, 0); /* yesterday's: nothing of today's */
	assert_false(tg_limits_alarm_claim(&l, 101, 0));
	tg_limits_alarm_release(&l, 101, 1); /* never claimed: nothing */
	assert_false(tg_limits_alarm_claim(&l, 101, 2));
}

/*
 * The course of a failing card in the account record: failed refills
 * counted, a suspension for non-payment at the limit (never over an
 * operator's), lifted by a payment, closed when due and not before, with
 * the request in flight voided.
 */
static void
test_unpaid_standing(void **state)
{
	struct tg_table t;
	struct tg_move m;
	struct tg_standing st;
	struct tg_acct_view v;
	(void)state;

	make_name("unpaid");
	open_table(&t, 10);
	struct tg_acct *a = new_acct(&t, 1, M(5));
	struct tg_acct_settings s = {.threshold = M(10),
	                             .refill_amount = M(50),
	                             .refill_mode = TG_REFILL_ADD,
	                             .flags = TG_ACCT_PAYMENT};
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	assert_true(m.refill_fired);
	assert_int_equal(tg_acct_refill_failure(a, 2, 1000, &st), TG_STANDING_FAILED);
	assert_int_equal(st.failures, 1);
	assert_int_equal(st.state, TG_STATE_ACTIVE);
	assert_int_equal(tg_acct_refill_failure(a, 2, 1001, &st), TG_STANDING_SUSPENDED);
	assert_true(st.unpaid && st.unpaid_since == 1001 && st.state == TG_STATE_SUSPENDED);
	assert_int_equal(tg_acct_reserve(a, 1, &m), TG_SUSPENDED);
	/* Not due before close_after has passed; a payment lifts it. */
	assert_int_equal(tg_acct_close_unpaid(a, 60, 1060, &st, &m), TG_STANDING_NONE);
	assert_int_equal(tg_acct_paid(a, &st), TG_STANDING_RESTORED);
	tg_acct_read(a, &v);
	assert_true(v.state == TG_STATE_ACTIVE && v.failures == 0 && v.unpaid_since == 0 &&
	            !(v.flags & TG_ACCT_UNPAID));
	assert_int_equal(tg_acct_paid(a, &st), TG_STANDING_NONE);

	/* Suspended again; an operator's STATE suspended makes it theirs: no payment lifts it. */
	tg_acct_refill_failure(a, 1, 2000, &st);
	assert_true(st.unpaid);
	s.state = TG_STATE_SUSPENDED;
	s.flags = TG_ACCT_PAYMENT; /* what ACCT.SET STATE sends */
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	assert_int_equal(tg_acct_paid(a, &st), TG_STANDING_PAID);
	tg_acct_read(a, &v);
	assert_true(v.state == TG_STATE_SUSPENDED && !(v.flags & TG_ACCT_UNPAID));
	assert_int_equal(tg_acct_close_unpaid(a, 1, 99999, &st, &m), TG_STANDING_NONE);
	/* An operator cannot set the flag itself. */
	s.flags = TG_ACCT_PAYMENT | TG_ACCT_UNPAID;
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	tg_acct_read(a, &v);
	assert_false(v.flags & TG_ACCT_UNPAID);
	/* An operator-suspended account's failure only counts. */
	assert_int_equal(tg_acct_refill_failure(a, 1, 3000, &st), TG_STANDING_FAILED);

	/* Active again, a request in flight, suspended for non-payment, then closed when due. */
	s.state = TG_STATE_ACTIVE;
	s.flags = TG_ACCT_PAYMENT;
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	assert_true(m.refill_fired); /* made active again below the threshold */
	assert_true(tg_acct_refill_clear(a, m.refill_seq)); /* that request failed */
	assert_int_equal(tg_acct_refill_failure(a, 1, 4000, &st), TG_STANDING_SUSPENDED);
	assert_int_equal(tg_acct_rearm(a, &m), TG_OK);
	assert_true(m.refill_fired); /* suspended for non-payment: a new card is tried */
	assert_int_equal(tg_acct_close_unpaid(a, 60, 4059, &st, &m), TG_STANDING_NONE);
	assert_int_equal(tg_acct_close_unpaid(a, 60, 4060, &st, &m), TG_STANDING_CLOSED);
	assert_true(m.refill_cleared && m.refill_void);
	tg_acct_read(a, &v);
	assert_true(v.state == TG_STATE_CLOSED && !v.refill_inflight && v.unpaid_since == 0);
	assert_int_equal(tg_acct_paid(a, &st), TG_STANDING_PAID);
	tg_acct_read(a, &v);
	assert_int_equal(v.state, TG_STATE_CLOSED);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

static void
test_refill_fires_once_per_crossing(void **state)
{
	struct tg_table t;
	struct tg_move m;
	struct tg_acct_view v;
	(void)state;

	make_name("refill");
	open_table(&t, 10);
	struct tg_acct *a = new_acct(&t, 3, M(20));

	/* Refill without a payment method is refused. */
	struct tg_acct_settings s = {
	    .threshold = M(10), .refill_mode = TG_REFILL_ADD, .refill_amount = M(50)};
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_NOPAYMENT);
	s.flags = TG_ACCT_PAYMENT;
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	assert_false(m.refill_fired);

	assert_int_equal(tg_acct_debit(a, M(9), &m), TG_OK); /* 11: above */
	assert_false(m.refill_fired);
	assert_int_equal(tg_acct_debit(a, M(1), &m), TG_OK); /* 10: at -> fires */
	assert_true(m.refill_fired);
	assert_int_equal(m.refill_seq, 1);
	assert_int_equal(m.refill_charge, M(50));
	assert_int_equal(tg_acct_debit(a, M(1), &m), TG_OK); /* already in flight */
	assert_false(m.refill_fired);

	/* A credit that is not the refill leaves the flag; the refill's clears it. */
	assert_int_equal(tg_acct_credit(a, M(5), 0, &m), TG_OK);
	tg_acct_read(a, &v);
	assert_true(v.refill_inflight);
	assert_int_equal(tg_acct_credit(a, M(50), 2, &m), TG_OK); /* wrong request */
	tg_acct_read(a, &v);
	assert_true(v.refill_inflight);
	assert_int_equal(tg_acct_credit(a, M(50), 1, &m), TG_OK);
	tg_acct_read(a, &v);
	assert_false(v.refill_inflight);
	assert_int_equal(v.balance, M(114));

	/* Commit crossing fires too, once. */
	assert_int_equal(tg_acct_reserve(a, M(110), &m), TG_OK);
	assert_int_equal(tg_acct_commit(a, M(110), M(104), &m), TG_OK); /* 10 */
	assert_true(m.refill_fired);
	assert_int_equal(m.refill_seq, 2);
	/* The worker failed: flag clears, no new request while still below. */
	assert_false(tg_acct_refill_clear(a, 1));
	assert_true(tg_acct_refill_clear(a, 2));
	assert_false(tg_acct_refill_clear(a, 2));
	assert_int_equal(tg_acct_debit(a, M(1), &m), TG_OK);
	assert_false(m.refill_fired);

	/* TOPUP charges what returns the balance to the level. */
	assert_int_equal(tg_acct_set_balance(a, M(30), &m), TG_OK);
	s.refill_mode = TG_REFILL_TOPUP;
	s.refill_amount = M(100);
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	assert_false(m.refill_fired);
	assert_int_equal(tg_acct_debit(a, 20500000, &m), TG_OK); /* 9.5 */
	assert_true(m.refill_fired);
	assert_int_equal(m.refill_charge, 90500000);
	assert_true(tg_acct_refill_clear(a, m.refill_seq));

	/* Switching refill on at or below the threshold fires at once. */
	s.refill_mode = TG_REFILL_OFF;
	s.flags = 0;
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	assert_int_equal(tg_acct_debit(a, M(5), &m), TG_OK);
	assert_false(m.refill_fired);
	s.refill_mode = TG_REFILL_ADD;
	s.refill_amount = M(25);
	s.flags = TG_ACCT_PAYMENT;
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	assert_true(m.refill_fired);
	assert_int_equal(m.refill_charge, M(25));
	assert_int_equal(tg_acct_configure(a, &s, &m), TG_OK);
	assert_false(m.refill_fired);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

/* A restarted engine cannot know its predecessor's calls: their holds are released. */
static void
test_release_reservations_after_restart(void **state)
{
	struct tg_table t;
	struct tg_move m;
	struct tg_acct_view v;
	tg_money_t amount;
	(void)state;

	make_name("release");
	open_table(&t, 10);
	struct tg_acct *a = new_acct(&t, 1, M(10));
	struct tg_acct *b = new_acct(&t, 2, M(10));
	new_acct(&t, 3, M(10));
	assert_int_equal(tg_acct_reserve(a, M(4), &m), TG_OK);
	assert_int_equal(tg_acct_reserve(a, M(1), &m), TG_OK);
	assert_int_equal(tg_acct_reserve(b, 0, &m), TG_OK); /* a free call: no money, one call */
	assert_int_equal(tg_table_release_reservations(&t, &amount), 2);
	assert_int_equal(amount, M(5));
	tg_acct_read(a, &v);
	assert_int_equal(v.reserved, 0);
	assert_int_equal(v.available, M(10));
	assert_int_equal(v.balance, M(10));
	assert_int_equal(v.calls, 0);
	tg_acct_read(b, &v);
	assert_int_equal(v.calls, 0);
	assert_int_equal(tg_table_release_reservations(&t, &amount), 0);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

static void
test_reader_process_sees_updates(void **state)
{
	struct tg_table t;
	struct tg_move m;
	int to_child[2], to_parent[2];
	(void)state;

	make_name("proc");
	open_table(&t, 1000);
	struct tg_acct *a = new_acct(&t, 99, M(1));
	assert_int_equal(pipe(to_child), 0);
	assert_int_equal(pipe(to_parent), 0);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct tg_table r;
		struct tg_acct_view v;
		char err[256], c;
		int ok = 1;
		if (tg_table_attach(&r, shm_name, err, sizeof(err)) != 0)
			_exit(10);
		for (int round = 0; round < 3; round++) {
			if (read(to_child[0], &c, 1) != 1)
				_exit(11);
			struct tg_acct *ra = tg_table_find(&r, 99);
			if (ra == NULL)
				_exit(12);
			tg_acct_read(ra, &v);
			ok &= v.balance == M(100 + round) && v.id == 99 &&
			      v.reserved == (tg_money_t)round;
			if (write(to_parent[1], "k", 1) != 1)
				_exit(13);
		}
		/* Read-only: the mapping refuses writes. */
		_exit(ok ? 0 : 14);
	}
	for (int round = 0; round < 3; round++) {
		char c;
		assert_int_equal(tg_acct_set_balance(a, M(100 + round), &m), TG_OK);
		if (round > 0)
			assert_int_equal(tg_acct_reserve(a, 1, &m), TG_OK);
		assert_int_equal(write(to_child[1], "g", 1), 1);
		assert_int_equal(read(to_parent[0], &c, 1), 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

static void
test_attach_refuses_foreign_segments(void **state)
{
	struct tg_table t, r;
	char err[256];
	(void)state;

	make_name("bad");
	/* Not there. */
	assert_int_equal(tg_table_attach(&r, shm_name, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "engine running"));

	/* Too small, garbage. */
	int fd = shm_open(shm_name, O_RDWR | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 100), 0);
	close(fd);
	assert_int_equal(tg_table_attach(&r, shm_name, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "too small"));
	tg_table_unlink(shm_name);

	/* Wrong magic, wrong version, wrong record size. */
	open_table(&t, 10);
	t.hdr->magic ^= 1;
	assert_int_equal(tg_table_attach(&r, shm_name, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "magic"));
	t.hdr->magic ^= 1;
	t.hdr->version = TG_SHM_VERSION + 1;
	assert_int_equal(tg_table_attach(&r, shm_name, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "version"));
	t.hdr->version = TG_SHM_VERSION;
	t.hdr->record_size = 128;
	assert_int_equal(tg_table_attach(&r, shm_name, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "record size"));
	t.hdr->record_size = 64;
	t.hdr->slots += 1;
	assert_int_equal(tg_table_attach(&r, shm_name, err, sizeof(err)), -EPROTO);
	t.hdr->slots -= 1;
	assert_int_equal(tg_table_attach(&r, shm_name, err, sizeof(err)), 0);
	assert_true(r.readonly);
	tg_table_close(&r);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

/*
 * How much of the segment the kernel backs with huge pages is read from
 * /proc/self/smaps: a figure (0 on a /dev/shm without huge=, the whole
 * segment's 2 MiB pages with it), never more than the mapping, never the
 * -1 of a mapping it could not find.
 */
static void
test_huge_pages_are_reported(void **state)
{
	struct tg_table t;
	(void)state;

	make_name("huge");
	open_table(&t, 200000);
	long kib = tg_table_huge_kib(&t);
	assert_true(kib >= 0);
	assert_true((size_t)kib <= t.size / 1024);
	tg_table_close(&t);
	tg_table_unlink(shm_name);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create_mode_and_header),
	    cmocka_unit_test(test_huge_pages_are_reported),
	    cmocka_unit_test(test_unpaid_standing),
	    cmocka_unit_test(test_bad_names_and_capacity),
	    cmocka_unit_test(test_undersized_shm_fails_at_start),
	    cmocka_unit_test(test_insert_find_full),
	    cmocka_unit_test(test_reserve_commit_debit_credit),
	    cmocka_unit_test(test_postpaid_grants_down_to_minus_the_limit),
	    cmocka_unit_test(test_usage_saturates_at_the_top),
	    cmocka_unit_test(test_states_block),
	    cmocka_unit_test(test_alarm_claim_release),
	    cmocka_unit_test(test_refill_fires_once_per_crossing),
	    cmocka_unit_test(test_release_reservations_after_restart),
	    cmocka_unit_test(test_reader_process_sees_updates),
	    cmocka_unit_test(test_attach_refuses_foreign_segments),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
