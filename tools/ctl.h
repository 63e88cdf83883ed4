/*
 * ctl.h - what the tollctl sources share (hence the ctl_ prefix, not tg_).
 *
 * tollctl.c owns main(), the global options, the dispatch table and the
 * wire client below (one connection at a time, to tollgated or to the
 * refill Redis); each group of commands lives in a file of its own
 * (ctl_profile.c, ctl_journal.c, ...) and is reached through one row of the
 * dispatch table: a name, its argument counts, the --options it takes,
 * whether tollctl connects to tollgated before running it, and its
 * function (or one that parses its own arguments).  A command function gets the parsed arguments
 * and returns an exit code below; it reports its own problems (ctl_say, ctl_usage_error).
 */
#ifndef CTL_H
#define CTL_H

#include <stdbool.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

/* Exit codes: the contract with scripts, also in the usage text and docs/TOOLS.md. */
enum {
	CTL_OK = 0,      /* done */
	CTL_SERVER = 1,  /* the server answered with an error (printed) */
	CTL_USAGE = 2,   /* bad arguments (usage printed) */
	CTL_CONNECT = 3, /* cannot connect, or the connection was lost */
	CTL_INPUT = 4,   /* load-accounts: the file is invalid; nothing was sent */
	CTL_BUSY = 5,    /* journal-cut: a tollgated holds the data directory; nothing changed */
};
/* journal-check: a torn tail (the next start cuts it); damage is CTL_INPUT. */
#define CTL_TORN CTL_SERVER

/* Arguments after the command name: the protocol takes 32 with the name. */
#define CTL_ARGS_MAX 32
#define CTL_HOST_MAX 256

struct ctl_endpoint {
	char host[CTL_HOST_MAX];
	int port;
};

/* The client: where to connect, as whom, and the one connection in use. */
struct ctl {
	struct ctl_endpoint daemon; /* tollgated */
	struct ctl_endpoint redis;  /* the refill Redis, for the profile commands */
	const char *password;       /* NULL: no AUTH */
	const char *user;           /* NULL: AUTH <password>; else AUTH <user> <password> */
	redisContext *c;            /* the one connection in use, or NULL */
	const struct ctl_endpoint *at;
};

/* A command's arguments once its own --options are taken out. */
struct ctl_args {
	const char *pos[CTL_ARGS_MAX];
	int npos;
	bool json, overwrite, records;
	const char *email, *method, *token, *name;
	const char *data_dir, *at;
};

/* Which --options a command takes (struct ctl_command.opts). */
enum {
	CTL_OPT_JSON = 1u << 0,
	CTL_OPT_LOAD = 1u << 1,     /* --overwrite, --skip-existing */
	CTL_OPT_PROFILE = 1u << 2,  /* --email, --method, --token, --name */
	CTL_OPT_DATA_DIR = 1u << 3, /* --data-dir */
	CTL_OPT_AT = 1u << 4,       /* --at */
	CTL_OPT_RECORDS = 1u << 5,  /* --records */
};

/* What tollctl connects to before it runs a command. */
enum ctl_conn {
	CTL_CONN_DAEMON, /* tollgated (with AUTH when a password is given) */
	CTL_CONN_NONE,   /* nothing: the command connects on its own, or works on files */
};

/* One row of the dispatch table (tollctl.c, commands[]). */
struct ctl_command {
	const char *name;
	int min_pos, max_pos; /* positional arguments */
	unsigned opts;        /* CTL_OPT_*; 0: every argument is positional, even "--x" or "-5" */
	enum ctl_conn conn;
	int (*fn)(struct ctl *x, const struct ctl_args *a);
	/*
	 * Instead of fn, for a command that parses its own options: its words
	 * as given (argv[0] its name), nothing connected.  An exit code.
	 */
	int (*own_args)(struct ctl *x, int argc, char **argv);
};

/* ---- messages (tollctl.c) ---- */

/* One "tollctl: ..." line on stderr. */
void ctl_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Report a bad argument (fmt may be NULL), print the usage; CTL_USAGE. */
int ctl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- the wire client (tollctl.c) ---- */

/*
 * Connect x->c to e, then AUTH when password is set (as x->user on
 * tollgated when one is given).  CTL_OK, CTL_CONNECT or CTL_SERVER
 * (reported).  The caller closes an earlier connection first.
 */
int ctl_connect(struct ctl *x, const struct ctl_endpoint *e, const char *password);
/*
 * Send one command on x->c, wait for its reply.  CTL_OK with *out (the
 * caller frees it), CTL_SERVER for an error reply or CTL_CONNECT (both
 * reported, *out NULL).
 */
int ctl_call(struct ctl *x, redisReply **out, int argc, const char **argv);
/* Report a reply of a type the command never returns.  CTL_SERVER. */
int ctl_unexpected(const char *what);
/* Whether r is a flat array of field/value pairs with string fields. */
bool ctl_is_pairs(const redisReply *r);
/*
 * A flat field/value array as aligned "field  value" lines, or as one JSON
 * object: strings (amounts included, so they stay exact) as JSON strings,
 * integers as numbers.  r must pass ctl_is_pairs().
 */
void ctl_print_pairs(const redisReply *r, bool json);
/*
 * An account id as the protocol defines it (decimal, leading zeros allowed,
 * below 2^64 - 1), for the commands that build a Redis key from it: the key
 * must name the account the daemon means, so "0042" becomes 42.
 */
bool ctl_parse_account(const char *s, uint64_t *out);

/* ---- the customer profile in the refill Redis (ctl_profile.c) ---- */

int ctl_profile_set(struct ctl *x, const struct ctl_args *a);
int ctl_profile_show(struct ctl *x, const struct ctl_args *a);

/* ---- a data directory's journal, no daemon (ctl_journal.c) ---- */

int ctl_journal_check(struct ctl *x, const struct ctl_args *a);
int ctl_journal_cut(struct ctl *x, const struct ctl_args *a);

#endif
