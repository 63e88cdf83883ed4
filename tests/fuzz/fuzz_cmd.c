/*
 * fuzz_cmd.c - fuzz target for command decoding (cmd.c) through the engine.
 *
 * The input is the bytes a client sent on one connection.  They are parsed
 * request after request as the server does (its caps on bytes and arguments)
 * and each request goes through the real command executor (tg_cmd_handler's
 * exec) of an in-process engine: a small account table in shared memory,
 * three plans, seven accounts, one worker, no network and no refill
 * publisher.  So every command's argument checks, its engine operation and
 * its reply formatting are fuzzed.  Each input runs twice: on a server with
 * no credential (the session starts authenticated, as admin) and on one with
 * requirepass "fuzz" and a users file of one user per role, seen from a fixed
 * client address, where AUTH, roles and lockouts decide what runs.
 *
 * Beyond not crashing: every reply is exactly one well-formed RESP2 value;
 * a CDR, CALL.AUTH, CALL.END or ACCT.CREDIT sent again at once gets the same
 * reply and moves no money (exactly once, docs/PROTOCOL.md); and after the
 * run every account is consistent (reserved >= 0, available =
 * balance - reserved, settings in their domains, auto-refill only with a
 * payment method) and the calls counted on accounts are the calls in the map.
 *
 * Global state is reset after each run so that an input always meets the
 * same engine: the segment's bytes are restored from a snapshot taken after
 * start-up, the calls map and id window are made anew, and so is the AUTH
 * state (users, failures per address).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "tg_accounts.h"
#include "tg_resp.h"
#include "tg_server.h"

#define PASSWORD  "fuzz"
#define CALLS_MAX 16
#define IDS_MAX   64
#define IDS_WIN   3600
/* Output bytes that must be free before the server parses another request (net.c). */
#define HEADROOM 8192

/* One user per role beside "default" (requirepass, admin): NAME ROLE PASSWORD. */
static const char users_txt[] = "sw call swpass\n"
                                "worker refill workerpass\n"
                                "ops admin ops pass with spaces\n";

static const char rates_csv[] =
    "plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum\n"
    "basic,1,national,0.02,0,6,6,0\n"
    "basic,1212,local,0.005,0,60,60,0\n"
    "basic,44,international,0.12,0.05,30,6,60\n"
    "basic,800,tollfree,0,0,1,1,0\n"
    "gold,1,national,0.01,0,1,1,0\n"
    "gold,44,international,0.06,0,1,1,0\n"
    "gold,900,premium,2.5,0.5,60,60,60\n"
    "world,1,national,0.03,0.1,60,60,60\n"
    "world,4420,mobile,0.3,0,1,1,0\n";

static const char accounts_csv[] =
    "account,balance,plan,state,threshold,refill,refill_amount,payment\n"
    "1001,25,basic,active,10,add,50,on\n"
    "1002,3.5,basic,active,,off,,off\n"
    "1003,0,basic,active,,off,,off\n"
    "1004,100,gold,active,20,topup,100,on\n"
    "1005,40,gold,suspended,,off,,off\n"
    "1006,12,world,closed,,off,,off\n"
    "1007,1000000,world,active,,off,,off\n";

static struct tg_server srv;
static struct tg_net_handler h;
static struct fuzz_memfd rates_file, accounts_file, users_file;
static void *snapshot;
static char reply[65536], again[65536];

static void
setup(void)
{
	struct tg_diag diag;
	char err[512], shm[64];
	size_t created, skipped;

	tg_config_defaults(&srv.cfg);
	srv.cfg.auth_addr_failures = 3; /* a lockout within reach of one input */
	srv.workers = 1;
	pthread_mutex_init(&srv.reload_lock, NULL);

	snprintf(shm, sizeof(shm), "/tg-fuzz-cmd-%d", (int)getpid());
	tg_table_unlink(shm);
	struct tg_table_cfg tcfg = {.name = shm, .capacity = 64, .mode = 0600};
	FUZZ_CHECK(tg_table_open(&srv.table, &tcfg, err, sizeof(err)) == 0);
	tg_table_unlink(shm); /* the mapping stays; a crash leaves nothing in /dev/shm */

	struct tg_engine_cfg ecfg = {.max_grant = 3600,
	                             .call_grace = 120,
	                             .calls_max = CALLS_MAX,
	                             .ids_max = IDS_MAX,
	                             .ids_window = IDS_WIN,
	                             .workers = 1};
	FUZZ_CHECK(tg_engine_init(&srv.engine, &srv.table, &ecfg) == 0);
	snprintf(srv.rates_path, sizeof(srv.rates_path), "%s",
	         fuzz_memfd_put(&rates_file, "rates", rates_csv, sizeof(rates_csv) - 1));
	FUZZ_CHECK(tg_server_reload(&srv, err, sizeof(err)) == 0);
	tg_diag_init(&diag);
	FUZZ_CHECK(tg_accounts_load(fuzz_memfd_put(&accounts_file, "accounts", accounts_csv,
	                                           sizeof(accounts_csv) - 1),
	                            &srv.table, &diag, &created, &skipped) == 0);
	srv.magic = TG_SERVER_MAGIC;
	tg_cmd_handler(&srv, &h);

	snapshot = malloc(srv.table.size);
	FUZZ_CHECK(snapshot != NULL);
	memcpy(snapshot, srv.table.base, srv.table.size);
}

/* AUTH as tollgated sets it up: with requirepass and users, or with no credential. */
static void
auth_init(bool password)
{
	char err[512];
	struct tg_auth_cfg acfg = {
	    .requirepass = password ? PASSWORD : "",
	    .users = password
	                 ? fuzz_memfd_put(&users_file, "users", users_txt, sizeof(users_txt) - 1)
	                 : "",
	    .addr_failures = srv.cfg.auth_addr_failures,
	    .lockout_s = srv.cfg.auth_lockout,
	    .max_request_noauth = srv.cfg.max_request_noauth};

	FUZZ_CHECK(tg_auth_init(&srv.auth, &acfg, err, sizeof(err)) == 0);
	FUZZ_CHECK(srv.auth.required == password);
}

/* Back to the state setup left: the segment's bytes, an empty calls map and id window. */
static void
reset(void)
{
	memcpy(srv.table.base, snapshot, srv.table.size);
	tg_calls_free(srv.engine.calls);
	tg_idem_free(srv.engine.ids);
	FUZZ_CHECK(tg_calls_init(&srv.engine.calls, CALLS_MAX) == 0);
	FUZZ_CHECK(tg_idem_init(&srv.engine.ids, IDS_MAX, IDS_WIN) == 0);
}

/* The money of the account named by argument 1, if there is one. */
static bool
money_of(const struct tg_req *req, struct tg_acct_view *v)
{
	struct tg_acct *a;
	uint64_t id;

	if (req->argc < 2 || !tg_arg_u64(&req->argv[1], &id) || id == UINT64_MAX ||
	    (a = tg_table_find(&srv.table, id)) == NULL)
		return false;
	tg_acct_read(a, v);
	return true;
}

/* A request of the contract's exactly-once commands, sent again at once: nothing changes. */
static void
check_replay(void *session, const struct tg_req *req, const char *first, size_t first_len)
{
	static const char *const once[] = {"CDR", "CALL.AUTH", "CALL.END", "ACCT.CREDIT"};
	struct tg_acct_view before, after;
	struct tg_out out;
	bool known = false;

	for (size_t i = 0; i < sizeof(once) / sizeof(once[0]); i++)
		known = known || tg_arg_is(&req->argv[0], once[i]);
	if (!known)
		return;
	bool had = money_of(req, &before);
	tg_out_init(&out, again, sizeof(again));
	FUZZ_CHECK(h.exec(h.arg, 0, session, req, &out) == TG_NET_CONTINUE);
	FUZZ_CHECK(out.len == first_len && memcmp(again, first, first_len) == 0);
	FUZZ_CHECK(money_of(req, &after) == had);
	if (had)
		FUZZ_CHECK(after.balance == before.balance && after.reserved == before.reserved &&
		           after.calls == before.calls);
}

static void
check_accounts(void)
{
	size_t calls = 0;

	for (uint64_t i = 0; i < srv.table.slots; i++) {
		struct tg_acct *a = tg_table_slot(&srv.table, i);
		struct tg_acct_view v;
		tg_money_t avail;

		if (a->key == 0)
			continue;
		tg_acct_read(a, &v);
		FUZZ_CHECK(v.reserved >= 0 && v.reserved <= TG_RESERVED_MAX);
		FUZZ_CHECK(!__builtin_sub_overflow(v.balance, v.reserved, &avail));
		FUZZ_CHECK(v.available == avail);
		FUZZ_CHECK(v.state <= TG_STATE_CLOSED && v.refill_mode <= TG_REFILL_TOPUP);
		if (v.refill_mode != TG_REFILL_OFF)
			FUZZ_CHECK((v.flags & TG_ACCT_PAYMENT) && v.refill_amount > 0);
		FUZZ_CHECK(v.calls > 0 || v.reserved == 0);
		calls += v.calls;
	}
	FUZZ_CHECK(calls == tg_calls_count(srv.engine.calls));
}

/*
 * One connection, as net.c serves it: requests parsed with the session's
 * caps, replies appended to one output buffer that is sent (emptied) when
 * less than the server's headroom is left, a reply that does not fit
 * replaced by an error.
 */
static void
run(const char *buf, size_t len, bool password)
{
	/* A client of the documentation range 192.0.2.0/24, IPv4 mapped. */
	static const struct tg_net_peer peer = {
	    .addr = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7}};
	static const char too_large[] = "-ERR reply too large\r\n";
	struct tg_session session;
	struct tg_out out;
	size_t pos = 0;

	auth_init(password);
	tg_cmd_handler(&srv, &h); /* after AUTH's set-up: it decides what the handler asks for */
	memset(&session, 0, sizeof(session));
	h.session_open(h.arg, 0, &session);
	if (h.session_peer != NULL)
		h.session_peer(h.arg, &session, &peer);
	tg_out_init(&out, reply,
	            sizeof(reply) < srv.cfg.reply_buffer ? sizeof(reply) : srv.cfg.reply_buffer);
	h.batch_begin(h.arg, 0);
	while (pos < len) {
		struct tg_req req;
		const char *err;
		size_t used, before;

		if (out.cap - out.len < HEADROOM)
			out.len = 0; /* sent */
		enum tg_parse r = tg_resp_parse_args(
		    buf + pos, len - pos, h.max_request(h.arg, &session),
		    h.max_args ? h.max_args(h.arg, &session) : TG_ARGS_MAX, &req, &used, &err);
		if (r == TG_PARSE_MORE || r == TG_PARSE_ERROR)
			break;
		pos += used;
		if (r == TG_PARSE_EMPTY)
			continue;
		before = out.len;
		int rc = h.exec(h.arg, 0, &session, &req, &out);
		FUZZ_CHECK(rc == TG_NET_CONTINUE || rc == TG_NET_CLOSE);
		if (out.overflow) {
			out.len = before;
			out.overflow = false;
			tg_out_raw(&out, too_large, sizeof(too_large) - 1);
		}
		FUZZ_CHECK(out.len > before);
		FUZZ_CHECK(fuzz_resp_reply(reply + before, out.len - before) == out.len - before);
		fuzz_note("%.*s -> %.*s", (int)req.argv[0].len, req.argv[0].p,
		          (int)(out.len - before < 100 ? out.len - before - 2 : 100),
		          reply + before);
		if (rc == TG_NET_CLOSE)
			break;
		check_replay(&session, &req, reply + before, out.len - before);
	}
	h.batch_end(h.arg, 0);
	h.tick(h.arg, 0);
	check_accounts();
	h.session_close(h.arg, 0, &session);
	tg_auth_fini(&srv.auth);
	reset();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (snapshot == NULL)
		setup();
	run((const char *)data, size, false);
	run((const char *)data, size, true);
	return 0;
}
