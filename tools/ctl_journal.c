/*
 * ctl_journal.c - tollctl journal-check and journal-cut: a data directory's
 * journal, offline, with no daemon (docs/JOURNAL.md, docs/TOOLS.md).
 *
 * journal-check reads the journal (read-only, no lock: it may run beside a
 * tollgated) and says what the reader finds, every snapshot read back, and
 * with --records each record with every field it holds, one key=value line
 * a record.  journal-cut is the operator's way past damage: it takes the
 * data directory's lock as tollgated does (engine/datadir.c) and refuses
 * while a tollgated holds it, cuts only where a record starts, at or before
 * the damage, and deletes nothing: what it discards is renamed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "tg_datadir.h"
#include "tg_journal.h"
#include "tg_money.h"
#include "tg_names.h"
#include "tg_replay.h"
#include "tg_result.h"
#include "tg_table.h"

/* The data directory given with --data-dir, or a usage error. */
static int
need_data_dir(const char *cmd, const struct ctl_args *a)
{
	if (a->data_dir == NULL || a->data_dir[0] == '\0')
		return ctl_usage_error("%s: --data-dir DIR is required", cmd);
	return CTL_OK;
}

/* Segment names of dir that sort after lsn: the names journal-cut sets aside.  */
struct seg_list {
	uint64_t *lsn;
	size_t n;
};

static int
cmp_lsn(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Names of kind ("journal" or "snapshot") in dir, by LSN.  0 or -errno. */
static int
list_files(const char *dir, bool snapshots, struct seg_list *out)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t cap = 0;

	out->lsn = NULL;
	out->n = 0;
	if (d == NULL)
		return -errno;
	while ((e = readdir(d)) != NULL) {
		uint64_t lsn = 0;
		bool ok;
		if (snapshots) {
			ok = strlen(e->d_name) == TG_SNAP_NAME_LEN - 1 &&
			     strncmp(e->d_name, "snapshot-", 9) == 0 &&
			     strcmp(e->d_name + 25, ".tgs") == 0;
			for (int i = 9; ok && i < 25; i++) {
				char c = e->d_name[i];
				ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
				lsn = lsn << 4 | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
			}
		} else {
			ok = tg_journal_seg_name_parse(e->d_name, &lsn);
		}
		if (!ok)
			continue;
		if (out->n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			uint64_t *nv = realloc(out->lsn, ncap * sizeof(*nv));
			if (nv == NULL) {
				closedir(d);
				free(out->lsn);
				out->lsn = NULL;
				return -ENOMEM;
			}
			out->lsn = nv;
			cap = ncap;
		}
		out->lsn[out->n++] = lsn;
	}
	closedir(d);
	if (out->n > 1)
		qsort(out->lsn, out->n, sizeof(*out->lsn), cmp_lsn);
	return 0;
}

static void
snap_name(char name[TG_SNAP_NAME_LEN], uint64_t lsn)
{
	snprintf(name, TG_SNAP_NAME_LEN, "snapshot-%016" PRIx64 ".tgs", lsn);
}

/* The size of dir/name, or -1. */
static int64_t
file_size(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* ---- one record, every field: journal-check --records ---- */

/* Why a refill's flag cleared (enum tg_jrefill_reason), as printed. */
static const char *
reason_name(uint32_t r)
{
	switch (r) {
	case TG_JREFILL_CREDITED:
		return "credited";
	case TG_JREFILL_FAILED:
		return "failed";
	case TG_JREFILL_VOID:
		return "void";
	}
	return "?";
}

static const char *
category_name(unsigned c)
{
	return c < TG_CATEGORY__COUNT ? tg_category_name((enum tg_category)c) : "?";
}

/* " key=<amount>": money as the wire writes it, exact. */
static void
put_money(const char *key, int64_t v)
{
	char m[TG_MONEY_STR_MAX];

	tg_money_format(v, m);
	printf(" %s=%s", key, m);
}

static void
put_u64(const char *key, uint64_t v)
{
	printf(" %s=%" PRIu64, key, v);
}

/* " key=<32 hex digits>": an id's digest, high word first (as tollexport keys it). */
static void
put_digest(const char *key, struct tg_jdigest d)
{
	printf(" %s=%016" PRIx64 "%016" PRIx64, key, d.hi, d.lo);
}

/*
 * " key=<bytes>": s[0..n) as it was sent, every byte outside '!'..'~', and
 * the backslash, as \xNN, so a value never holds a blank and the line
 * splits on blanks.  "key=" for an empty string.
 */
static void
put_bytes(const char *key, const char *s, size_t n)
{
	printf(" %s=", key);
	for (size_t k = 0; k < n; k++) {
		unsigned char c = (unsigned char)s[k];
		if (c > ' ' && c < 0x7f && c != '\\')
			putchar(c);
		else
			printf("\\x%02x", c);
	}
}

/* String i of an itemized payload (put_bytes); nothing for a version 1 record. */
static void
put_item(const struct tg_jrec *rec, const char *key, unsigned i)
{
	size_t n;
	const char *s = tg_journal_item_str(rec->type, rec->payload, rec->len, i, &n);

	if (s != NULL)
		put_bytes(key, s, n);
}

/* The money of a charge (commit, debit, expire) when the record is itemized. */
static bool
charge_of(const struct tg_jrec *rec, struct tg_jitem_charge *c)
{
	const void *f = tg_journal_item_fixed(rec->type, rec->payload, rec->len);

	if (f == NULL)
		return false;
	memcpy(c, f, sizeof(*c)); /* payloads are packed: copied, never dereferenced */
	return true;
}

/*
 * The fields of a charge (commit, debit, expire): kind, the strings the
 * type carries (bit i of strings: string i, in docs/JOURNAL.md's order),
 * category, duration, and when itemized the seconds billed, the rate, the
 * connect fee; then the charge and, itemized, the balance after it.
 */
static void
put_charge(const struct tg_jrec *rec, const char *kind, unsigned strings, unsigned category,
           uint32_t duration, int64_t cost)
{
	static const char *const key[TG_JITEM_STRINGS] = {
	    [TG_JITEM_S_ID] = "call_id",
	    [TG_JITEM_S_DEST] = "dest",
	    [TG_JITEM_S_PLAN] = "plan",
	    [TG_JITEM_S_PREFIX] = "prefix",
	};
	struct tg_jitem_charge c;
	bool item = charge_of(rec, &c);

	printf(" kind=%s", kind);
	for (unsigned i = 0; i < TG_JITEM_STRINGS; i++)
		if (strings & (1u << i))
			put_item(rec, key[i], i);
	printf(" category=%s", category_name(category));
	put_u64("duration", duration);
	if (item) {
		put_u64("billed", c.billed);
		put_money("rate", c.per_min);
		put_money("connect", c.connect);
	}
	put_money("charge", cost);
	if (item)
		put_money("balance_after", c.balance);
}

/* Bits of put_charge's strings. */
#define S_ID     (1u << TG_JITEM_S_ID)
#define S_DEST   (1u << TG_JITEM_S_DEST)
#define S_PLAN   (1u << TG_JITEM_S_PLAN)
#define S_PREFIX (1u << TG_JITEM_S_PREFIX)

/*
 * One record, one line: "lsn=N at=FILE:OFFSET type=NAME time=UTC acct=N"
 * then its own fields, in the order docs/TOOLS.md lists them.  The payload
 * was validated by the reader (tg_journal_payload_ok): its version 1 part
 * is whole, and an itemized tail is exactly as long as it says.
 */
static void
print_record(const struct tg_jrec *rec, const char *file, uint64_t offset)
{
	union {
		struct tg_jrec_reserve reserve;
		struct tg_jrec_commit commit;
		struct tg_jrec_debit debit;
		struct tg_jrec_credit credit;
		struct tg_jrec_set_balance set_balance;
		struct tg_jrec_settings settings;
		struct tg_jrec_refill_fired fired;
		struct tg_jrec_refill_cleared cleared;
		struct tg_jrec_expire expire;
		struct tg_jrec_standing standing;
		struct tg_jrec_limits limits;
		uint64_t acct; /* the first field of every type but confirm */
	} u;
	size_t v1 = tg_journal_payload_size(rec->type);
	char when[40];
	struct tm tm;
	time_t sec = (time_t)(rec->time / 1000000000);
	long ns = (long)(rec->time % 1000000000);

	if (ns < 0) {
		ns += 1000000000;
		sec--;
	}
	if (gmtime_r(&sec, &tm) == NULL ||
	    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		snprintf(when, sizeof(when), "?");
	memset(&u, 0, sizeof(u));
	if (v1 > 0 && v1 <= sizeof(u) && rec->len >= v1)
		memcpy(&u, rec->payload, v1);
	else
		v1 = 0; /* a type this build does not know: its header alone */
	printf("lsn=%" PRIu64 " at=%s:%" PRIu64 " type=%s time=%s.%09ldZ", rec->lsn, file, offset,
	       tg_journal_type_name(rec->type), when, ns);
	if (v1 == 0) {
		printf(" version=%u len=%" PRIu32 "\n", rec->version, rec->len);
		return;
	}
	put_u64("acct", u.acct);
	switch (rec->type) {
	case TG_JREC_RESERVE:
		put_item(rec, "call_id", TG_JITEM_S_ID);
		put_item(rec, "dest", TG_JITEM_S_DEST);
		put_item(rec, "plan", TG_JITEM_S_PLAN);
		printf(" category=%s", category_name(u.reserve.category));
		put_u64("seconds", u.reserve.seconds);
		put_money("rate", u.reserve.per_min);
		put_money("connect", u.reserve.connect);
		put_u64("initial", u.reserve.initial);
		put_u64("increment", u.reserve.increment);
		put_u64("minimum", u.reserve.minimum);
		put_money("amount", u.reserve.amount);
		put_digest("call_key", u.reserve.call);
		break;
	case TG_JREC_COMMIT:
		put_charge(rec, "end", S_ID | S_PREFIX, u.commit.category, u.commit.duration,
		           u.commit.cost);
		put_money("released", u.commit.reserved);
		put_digest("call_key", u.commit.call);
		put_digest("end_key", u.commit.end);
		printf(" fingerprint=%016" PRIx64, u.commit.fingerprint);
		break;
	case TG_JREC_DEBIT:
		put_charge(rec, "cdr", S_ID | S_DEST | S_PLAN | S_PREFIX, u.debit.category,
		           u.debit.duration, u.debit.cost);
		put_digest("call_key", u.debit.id);
		printf(" fingerprint=%016" PRIx64, u.debit.fingerprint);
		break;
	case TG_JREC_EXPIRE:
		put_charge(rec, "expiry", S_PREFIX, u.expire.category, u.expire.seconds,
		           u.expire.cost);
		put_money("released", u.expire.reserved);
		put_digest("call_key", u.expire.call);
		break;
	case TG_JREC_CREDIT: {
		const void *f = tg_journal_item_fixed(rec->type, rec->payload, rec->len);
		put_money("amount", u.credit.amount);
		put_money("balance_after", u.credit.balance);
		put_item(rec, "txid", TG_JITEM_S_ID);
		if (f != NULL) {
			struct tg_jitem_credit c;
			memcpy(&c, f, sizeof(c));
			printf(" source=%s", c.source == TG_JCREDIT_REFILL     ? "refill"
			                     : c.source == TG_JCREDIT_OPERATOR ? "operator"
			                                                       : "?");
		}
		put_item(rec, "user", TG_JITEM_S_USER);
		put_u64("refill_seq", u.credit.refill_seq);
		put_digest("txid_key", u.credit.txid);
		printf(" fingerprint=%016" PRIx64, u.credit.fingerprint);
		break;
	}
	case TG_JREC_SET_BALANCE:
		put_money("balance", u.set_balance.balance);
		put_money("delta", u.set_balance.delta);
		put_item(rec, "user", TG_JITEM_S_USER);
		break;
	case TG_JREC_SETTINGS:
		put_bytes("plan", u.settings.plan, strnlen(u.settings.plan, TG_JPLAN_NAME));
		printf(" state=%s", tg_acct_state_name(u.settings.state));
		put_money("threshold", u.settings.threshold);
		printf(" refill=%s", tg_refill_mode_name(u.settings.refill_mode));
		put_money("refill_amount", u.settings.refill_amount);
		printf(" payment=%s flags=0x%02x",
		       (u.settings.flags & TG_ACCT_PAYMENT) ? "on" : "off", u.settings.flags);
		put_item(rec, "user", TG_JITEM_S_USER);
		break;
	case TG_JREC_REFILL_FIRED:
		put_u64("refill_seq", u.fired.refill_seq);
		printf(" mode=%s", tg_refill_mode_name(u.fired.mode));
		put_money("balance", u.fired.balance);
		put_money("threshold", u.fired.threshold);
		put_money("amount", u.fired.charge);
		break;
	case TG_JREC_REFILL_CLEARED:
		put_u64("refill_seq", u.cleared.refill_seq);
		printf(" reason=%s", reason_name(u.cleared.reason));
		break;
	case TG_JREC_STANDING:
		printf(" event=%s state=%s", tg_standing_event_name(u.standing.event),
		       tg_acct_state_name(u.standing.state));
		put_u64("unpaid", u.standing.unpaid);
		put_u64("failures", u.standing.failures);
		put_u64("unpaid_since", u.standing.unpaid_since);
		break;
	case TG_JREC_LIMITS: /* docs/FRAUD.md: 0 is none */
		put_u64("maxcalls", u.limits.max_calls);
		put_money("callcap", u.limits.call_cap);
		put_money("dailycap", u.limits.daily_cap);
		put_money("low", u.limits.low);
		break;
	}
	putchar('\n');
}

/* What a walk through the journal found. */
struct jwalk {
	enum tg_journal_status st;
	struct tg_journal_pos pos; /* where it stopped */
	char verdict[600];
	uint64_t records, first_lsn, last_lsn;
	size_t segments;
	uint64_t first_seg, last_seg;
	/* journal-cut: the cut point */
	const char *cut_file;
	uint64_t cut_off;
	bool cut_found;  /* a record starts there (or the walk stopped there) */
	bool cut_inside; /* it falls inside the record at cut_rec_off */
	uint64_t cut_rec_off, cut_rec_end, cut_lsn; /* first LSN discarded */
	uint64_t discarded;                         /* records at or past the cut */
	bool past_cut;
};

/*
 * Read the whole journal in dir; with list, print each record.  0 with w
 * filled (whatever the reader's verdict), or -errno when the directory
 * cannot be opened.
 */
static int
walk_journal(const char *dir, bool list, struct jwalk *w)
{
	struct tg_journal_reader *jr;
	struct tg_jrec rec;
	int rc = tg_journal_open_dir(&jr, dir);

	if (rc != 0)
		return rc;
	w->segments = tg_journal_segments(jr);
	if (w->segments > 0) {
		w->first_seg = tg_journal_segment_lsn(jr, 0);
		w->last_seg = tg_journal_segment_lsn(jr, w->segments - 1);
	}
	while ((w->st = tg_journal_next(jr, &rec)) == TG_JOURNAL_OK) {
		const struct tg_journal_pos *p = tg_journal_where(jr);
		uint64_t end = p->offset, start = end - tg_journal_rec_size(rec.len);
		if (w->records++ == 0)
			w->first_lsn = rec.lsn;
		w->last_lsn = rec.lsn;
		if (list)
			print_record(&rec, p->file, start);
		if (w->cut_file != NULL && !w->past_cut && strcmp(p->file, w->cut_file) == 0) {
			/* At 0 the whole segment goes: its first record at the header's end. */
			if (start == w->cut_off ||
			    (w->cut_off == 0 && start == TG_JOURNAL_HDR_SIZE)) {
				w->cut_found = w->past_cut = true;
				w->cut_lsn = rec.lsn;
			} else if (start < w->cut_off && w->cut_off < end) {
				w->cut_inside = true;
				w->cut_rec_off = start;
				w->cut_rec_end = end;
				w->cut_lsn = rec.lsn;
			}
		}
		/* A cut at the end of a segment: the next record, in the next segment, is the first
		 * lost. */
		if (w->cut_file != NULL && !w->past_cut && !w->cut_inside &&
		    strcmp(p->file, w->cut_file) > 0) {
			w->cut_found = w->past_cut = true;
			w->cut_lsn = rec.lsn;
		}
		w->discarded += w->past_cut;
	}
	w->pos = *tg_journal_where(jr);
	tg_journal_describe(jr, w->verdict, sizeof(w->verdict));
	tg_journal_close(jr);
	return 0;
}

/*
 * tollctl journal-check --data-dir DIR [--records].  Exit code: CTL_OK (a
 * clean end), CTL_TORN, CTL_INPUT (damage, a damaged snapshot, no way to
 * recover, or the directory cannot be read).
 */
int
ctl_journal_check(struct ctl *x, const struct ctl_args *a)
{
	const char *dir = a->data_dir;
	struct jwalk w = {0};
	struct seg_list snaps;
	int rc = need_data_dir("journal-check", a);

	(void)x;
	if (rc != CTL_OK)
		return rc;
	rc = walk_journal(dir, a->records, &w);
	if (rc != 0) {
		ctl_say("%s: cannot read the journal: %s", dir, strerror(-rc));
		return CTL_INPUT;
	}
	char first[TG_JOURNAL_NAME_LEN] = "-", last[TG_JOURNAL_NAME_LEN] = "-";
	if (w.segments > 0) {
		tg_journal_seg_name(first, w.first_seg);
		tg_journal_seg_name(last, w.last_seg);
	}
	printf("directory  %s\n", dir);
	printf("segments   %zu\n", w.segments);
	printf("first      %s\n", first);
	printf("last       %s\n", last);
	printf("records    %" PRIu64 "\n", w.records);
	if (w.records > 0) {
		printf("first_lsn  %" PRIu64 "\n", w.first_lsn);
		printf("last_lsn   %" PRIu64 "\n", w.last_lsn);
	} else {
		printf("first_lsn  -\n");
		printf("last_lsn   -\n");
	}
	if (w.pos.confirms > 0)
		printf("confirmed  %" PRIu64 "\n", w.pos.confirmed);
	else
		printf("confirmed  -\n");
	bool damaged_snap = false, have_good = false;
	uint64_t good = 0; /* the newest snapshot that verifies: what start-up loads */
	if (list_files(dir, true, &snaps) == 0) {
		if (snaps.n > 0)
			printf("snapshots  %zu (newest at LSN %" PRIu64 ")\n", snaps.n,
			       snaps.lsn[snaps.n - 1]);
		else
			printf("snapshots  0\n");
		/* Each one read back whole; start-up loads the newest that verifies. */
		for (size_t i = snaps.n; i-- > 0;) {
			char name[TG_SNAP_NAME_LEN], why[200];
			snprintf(name, sizeof(name), "snapshot-%016" PRIx64 ".tgs", snaps.lsn[i]);
			if (tg_snapshot_verify(dir, snaps.lsn[i], why, sizeof(why)) == 0) {
				printf("snapshot   %s ok\n", name);
				if (!have_good) {
					have_good = true;
					good = snaps.lsn[i];
				}
			} else {
				printf("snapshot   %s DAMAGED (%s): start-up skips it\n", name,
				       why);
				damaged_snap = true;
			}
		}
		free(snaps.lsn);
	}
	/* Start-up needs the journal to reach back to what it loads: LSN good + 1. */
	bool recoverable = w.segments == 0 || w.first_seg <= good + 1;
	if (!recoverable)
		printf("recovery   IMPOSSIBLE: the journal starts at LSN %" PRIu64 " but %s\n",
		       w.first_seg,
		       have_good ? "the newest good snapshot ends before it"
		                 : "no snapshot is good");
	else if (have_good)
		printf("recovery   snapshot-%016" PRIx64 ".tgs, then the journal from LSN %" PRIu64
		       "\n",
		       good, good + 1);
	else
		printf("recovery   the whole journal, from LSN %" PRIu64 "\n",
		       w.segments ? w.first_seg : 1);
	printf("status     %s\n", tg_journal_status_name(w.st));
	if (w.pos.file[0] != '\0')
		printf("at         %s:%" PRIu64 "\n", w.pos.file, w.pos.offset);
	printf("verdict    %s\n", w.verdict);
	long pid = tg_datadir_holder(dir);
	if (pid != 0)
		printf("note       tollgated pid %ld holds %s: its last segment grows while it is "
		       "read, so its end may be a write in progress\n",
		       pid, dir);
	if (damaged_snap || (w.segments > 0 && !recoverable))
		return CTL_INPUT;
	if (w.st == TG_JOURNAL_END)
		return CTL_OK;
	return w.st == TG_JOURNAL_TORN_TAIL ? CTL_TORN : CTL_INPUT;
}

/* "journal-....tgj:1234" into file and offset.  false for anything else. */
static bool
parse_at(const char *at, char file[TG_JOURNAL_NAME_LEN], uint64_t *offset)
{
	const char *colon = strrchr(at, ':');
	uint64_t lsn, v = 0;

	if (colon == NULL || (size_t)(colon - at) != TG_JOURNAL_NAME_LEN - 1 || colon[1] == '\0' ||
	    strlen(colon + 1) > 20)
		return false;
	memcpy(file, at, TG_JOURNAL_NAME_LEN - 1);
	file[TG_JOURNAL_NAME_LEN - 1] = '\0';
	if (!tg_journal_seg_name_parse(file, &lsn))
		return false;
	for (const char *p = colon + 1; *p; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*offset = v;
	return true;
}

/* The name file was set aside as by the cut just made: the newest "<file>.cut-N". */
static void
cut_name(const char *dir, const char *file, char *out, size_t len)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = strlen(file);
	long long best = -1;

	snprintf(out, len, "%s.cut-?", file);
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, file, n) != 0 || strncmp(e->d_name + n, ".cut-", 5) != 0)
			continue;
		long long t = strtoll(e->d_name + n + 5, NULL, 10);
		size_t l = strlen(e->d_name);
		if (t > best && l < len) {
			best = t;
			memcpy(out, e->d_name, l + 1);
		}
	}
	closedir(d);
}

/*
 * Take DIR/LOCK as tollgated does, so that no tollgated starts while the
 * journal is cut.  The fd (to keep until done), -1 with CTL_BUSY or
 * CTL_INPUT reported.
 */
static int
lock_data_dir(const char *dir, int *code)
{
	int fd = tg_datadir_lock(dir, false);

	if (fd < 0) {
		int e = -fd;
		long pid = tg_datadir_holder(dir);
		if (e == EWOULDBLOCK) {
			if (pid != 0)
				ctl_say("a tollgated is running on %s (pid %ld): stop it first; "
				        "nothing "
				        "was changed",
				        dir, pid);
			else
				ctl_say("a tollgated is running on %s: stop it first; nothing was "
				        "changed",
				        dir);
			*code = CTL_BUSY;
		} else {
			ctl_say("%s/LOCK: cannot lock: %s", dir, strerror(e));
			*code = CTL_INPUT;
		}
		return -1;
	}
	return fd;
}

/*
 * tollctl journal-cut --data-dir DIR --at FILE:OFFSET.  Exit code: CTL_OK,
 * CTL_USAGE, CTL_BUSY (a tollgated holds DIR: nothing changed) or CTL_INPUT
 * (refused or failed; the message says whether anything changed).
 */
int
ctl_journal_cut(struct ctl *x, const struct ctl_args *a)
{
	const char *dir = a->data_dir;
	char file[TG_JOURNAL_NAME_LEN], name[TG_JOURNAL_NAME_LEN], aside[TG_JOURNAL_NAME_LEN + 32];
	struct seg_list segs = {0}, snaps = {0};
	struct jwalk w = {0};
	uint64_t offset, file_lsn;
	int rc = need_data_dir("journal-cut", a), code = CTL_INPUT, lock;

	(void)x;
	if (rc != CTL_OK)
		return rc;
	if (a->at == NULL)
		return ctl_usage_error("journal-cut: --at FILE:OFFSET is required");
	if (!parse_at(a->at, file, &offset))
		return ctl_usage_error(
		    "journal-cut: --at '%s': expected FILE:OFFSET, FILE a segment "
		    "name (journal-<16 hex digits>.tgj) and OFFSET bytes",
		    a->at);
	if (offset != 0 && (offset < TG_JOURNAL_HDR_SIZE || offset % TG_JOURNAL_ALIGN != 0))
		return ctl_usage_error(
		    "journal-cut: --at %s: a record starts at offset 0 (the whole "
		    "segment) or at a multiple of %u from %u on",
		    a->at, TG_JOURNAL_ALIGN, TG_JOURNAL_HDR_SIZE);
	tg_journal_seg_name_parse(file, &file_lsn);
	lock = lock_data_dir(dir, &code);
	if (lock < 0)
		return code;

	int64_t size = file_size(dir, file);
	if (size < 0) {
		ctl_say("%s/%s: %s", dir, file, strerror(errno));
		goto out;
	}
	if ((uint64_t)size < offset) {
		ctl_say("%s: offset %" PRIu64 " is past its end (%" PRId64
		        " bytes); nothing was changed",
		        file, offset, size);
		goto out;
	}
	/* The cut must fall between records, at or before the first damage. */
	w.cut_file = file;
	w.cut_off = offset;
	rc = walk_journal(dir, false, &w);
	if (rc != 0) {
		ctl_say("%s: cannot read the journal: %s", dir, strerror(-rc));
		goto out;
	}
	/* Segment names sort as their LSNs: fixed width, lower-case hex. */
	int where = strcmp(w.pos.file, file);
	if (w.st != TG_JOURNAL_END && (where < 0 || (where == 0 && w.pos.offset < offset))) {
		ctl_say("the journal cannot be read past %s:%" PRIu64 " (%s): a cut at %s:%" PRIu64
		        " would leave that in place; cut at %s:%" PRIu64 " (journal-check shows "
		        "where); nothing was changed",
		        w.pos.file[0] ? w.pos.file : "(no segment)", w.pos.offset,
		        tg_journal_status_name(w.st), file, offset, w.pos.file, w.pos.offset);
		goto out;
	}
	if (offset == 0) {
		w.cut_found = true; /* the whole segment */
		w.cut_lsn = file_lsn;
	} else if (!w.cut_found && !w.cut_inside && where == 0 && w.pos.offset == offset) {
		/* Exactly where the reader stopped: the damage, a torn tail, or the end. */
		w.cut_found = true;
		w.cut_lsn = w.pos.lsn;
	}
	if (w.cut_inside) {
		ctl_say("%s:%" PRIu64 " is inside the record of LSN %" PRIu64 " (%s:%" PRIu64
		        " to %" PRIu64 "): cut at %" PRIu64 " to discard it, or at %" PRIu64
		        " to keep it; nothing was changed",
		        file, offset, w.cut_lsn, file, w.cut_rec_off, w.cut_rec_end, w.cut_rec_off,
		        w.cut_rec_end);
		goto out;
	}
	if (!w.cut_found) {
		ctl_say("no record of the journal starts at %s:%" PRIu64
		        " (journal-check --records "
		        "lists where each one does); nothing was changed",
		        file, offset);
		goto out;
	}

	if (list_files(dir, false, &segs) != 0 || list_files(dir, true, &snaps) != 0) {
		ctl_say("%s: cannot list: %s", dir, strerror(errno));
		goto out;
	}
	rc = tg_journal_truncate_at(dir, file, offset);
	if (rc != 0) {
		ctl_say("%s: cannot cut %s at %" PRIu64 ": %s", dir, file, offset, strerror(-rc));
		goto out;
	}
	printf("cut %s at offset %" PRIu64 ": %" PRId64 " bytes removed\n", file, offset,
	       size - (int64_t)offset);
	for (size_t i = 0; i < segs.n; i++) {
		if (segs.lsn[i] <= file_lsn)
			continue;
		tg_journal_seg_name(name, segs.lsn[i]);
		cut_name(dir, name, aside, sizeof(aside));
		printf("set aside %s (%" PRId64 " bytes) as %s\n", name, file_size(dir, aside),
		       aside);
	}
	/*
	 * A snapshot at or past the first LSN discarded holds what the cut
	 * discards, and the writer would append after its LSN, leaving a gap in
	 * the journal: set it aside too, the same way.
	 */
	char snap[TG_SNAP_NAME_LEN], from[PATH_MAX], to[PATH_MAX + 32];
	long long now = (long long)time(NULL);
	bool renamed = false;
	for (size_t i = 0; i < snaps.n; i++) {
		if (snaps.lsn[i] < w.cut_lsn)
			continue;
		snap_name(snap, snaps.lsn[i]);
		snprintf(from, sizeof(from), "%s/%s", dir, snap);
		snprintf(to, sizeof(to), "%s.cut-%lld", from, now);
		if (rename(from, to) != 0) {
			ctl_say(
			    "the journal was cut, but %s could not be set aside: %s; move it out "
			    "of %s "
			    "before starting tollgated",
			    from, strerror(errno), dir);
			goto out;
		}
		renamed = true;
		printf("set aside %s (LSN %" PRIu64 ", past the cut) as %s.cut-%lld\n", snap,
		       snaps.lsn[i], snap, now);
	}
	if (renamed) {
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd) != 0)
			ctl_say("%s: fsync: %s (the renames may not survive a crash)", dir,
			        strerror(errno));
		if (dfd >= 0)
			close(dfd);
	}
	if (w.cut_lsn > 1)
		printf("the journal now ends at LSN %" PRIu64 "; discarded from LSN %" PRIu64
		       " on: ",
		       w.cut_lsn - 1, w.cut_lsn);
	else
		printf("the journal is now empty; discarded: ");
	if (w.st == TG_JOURNAL_END)
		printf("%" PRIu64 " records\n", w.discarded);
	else
		printf("%" PRIu64 " records read before the reader stopped (%s), and what it could "
		       "not read\n",
		       w.discarded, tg_journal_status_name(w.st));
	code = CTL_OK;
out:
	free(segs.lsn);
	free(snaps.lsn);
	close(lock);
	return code;
}
