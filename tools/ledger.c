/*
 * ledger.c - the ledger's schema, one text for SQLite and PostgreSQL, and the
 * steps that bring a database from one version to the next.
 *
 * Money is BIGINT micro-units (never a float, as in the journal), times are
 * BIGINT microseconds since the epoch (UTC), LSNs are BIGINT.  Every row of
 * calls, credits and account_events is keyed by the LSN of the journal record
 * it came from, so a second copy of a record could never be inserted even if
 * the exporter's own bookkeeping failed.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ledger.h"

/* Step i brings a database from version i to i + 1.  Append only. */
static const char *const steps[LEDGER_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    "CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE ledger_position (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " last_lsn BIGINT NOT NULL, exported_us BIGINT NOT NULL);"
    "INSERT INTO ledger_position VALUES (1, 0, 0);"
    "CREATE TABLE ledger_gaps (from_lsn BIGINT PRIMARY KEY, to_lsn BIGINT NOT NULL,"
    " noticed_us BIGINT NOT NULL);"
    "CREATE TABLE accounts (acct BIGINT PRIMARY KEY, first_lsn BIGINT NOT NULL,"
    " opening_lsn BIGINT, opening_balance BIGINT, plan TEXT, state INTEGER,"
    " threshold BIGINT, refill_amount BIGINT, refill_mode INTEGER);"
    "CREATE TABLE calls (lsn BIGINT PRIMARY KEY, acct BIGINT NOT NULL, time_us BIGINT NOT NULL,"
    " kind TEXT NOT NULL, call_id TEXT, destination TEXT, plan TEXT, prefix TEXT,"
    " category TEXT NOT NULL, duration INTEGER NOT NULL, billed INTEGER, per_min BIGINT,"
    " connect BIGINT, charge BIGINT NOT NULL, balance_after BIGINT);"
    "CREATE INDEX calls_acct_time ON calls (acct, time_us);"
    "CREATE TABLE credits (lsn BIGINT PRIMARY KEY, acct BIGINT NOT NULL,"
    " time_us BIGINT NOT NULL, amount BIGINT NOT NULL, balance_after BIGINT, txid TEXT,"
    " source TEXT NOT NULL, refill_seq INTEGER NOT NULL, by_user TEXT);"
    "CREATE INDEX credits_acct_time ON credits (acct, time_us);"
    "CREATE TABLE account_events (lsn BIGINT PRIMARY KEY, acct BIGINT NOT NULL,"
    " time_us BIGINT NOT NULL, kind TEXT NOT NULL, by_user TEXT, balance BIGINT,"
    " delta BIGINT, state INTEGER, plan TEXT, detail TEXT);"
    "CREATE INDEX account_events_acct_time ON account_events (acct, time_us);"
    "CREATE TABLE open_calls (call_key TEXT PRIMARY KEY, acct BIGINT NOT NULL,"
    " lsn BIGINT NOT NULL, call_id TEXT, destination TEXT, plan TEXT);",
    /*
     * 1 -> 2: the account's kind (the engine's prepaid | postpaid, filled in
     * by tollexport) and the billing tables of tollbill (docs/BILLING.md).
     * Ids are assigned by tollbill (max + 1 in the writing transaction), so
     * the same DDL runs on both databases and invoice numbers have no gaps.
     */
    "ALTER TABLE accounts ADD COLUMN kind TEXT NOT NULL DEFAULT 'prepaid';"
    "ALTER TABLE accounts ADD COLUMN credit_limit BIGINT NOT NULL DEFAULT 0;"
    "CREATE TABLE bill_products (product TEXT PRIMARY KEY, price BIGINT NOT NULL"
    " CHECK (price >= 0));"
    "CREATE TABLE bill_customers (acct BIGINT PRIMARY KEY, region TEXT NOT NULL,"
    " signup_us BIGINT NOT NULL, standing TEXT NOT NULL DEFAULT 'good',"
    " standing_invoice BIGINT NOT NULL DEFAULT 0, standing_us BIGINT NOT NULL DEFAULT 0,"
    " engine_state TEXT, engine_done INTEGER NOT NULL DEFAULT 1, cancelled_us BIGINT);"
    "CREATE TABLE bill_subscriptions (id BIGINT PRIMARY KEY, acct BIGINT NOT NULL,"
    " product TEXT NOT NULL, start_day TEXT NOT NULL, end_day TEXT);"
    "CREATE INDEX bill_subscriptions_acct ON bill_subscriptions (acct);"
    "CREATE TABLE bill_sub_periods (sub BIGINT NOT NULL, month TEXT NOT NULL,"
    " invoice BIGINT NOT NULL, PRIMARY KEY (sub, month));"
    "CREATE TABLE bill_invoices (number BIGINT PRIMARY KEY, acct BIGINT NOT NULL,"
    " month TEXT NOT NULL, issued_us BIGINT NOT NULL, total BIGINT NOT NULL,"
    " paid BIGINT NOT NULL DEFAULT 0, usage_total BIGINT NOT NULL, usage_micro BIGINT NOT NULL,"
    " usage_paid BIGINT NOT NULL DEFAULT 0, usage_credit BIGINT NOT NULL DEFAULT 0,"
    " status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_us BIGINT,"
    " late_us BIGINT, late_fee BIGINT NOT NULL DEFAULT 0, late_fee_rate INTEGER,"
    " late_fee_billed BIGINT, UNIQUE (acct, month));"
    "CREATE TABLE bill_lines (invoice BIGINT NOT NULL, line INTEGER NOT NULL,"
    " kind TEXT NOT NULL, category TEXT, description TEXT NOT NULL, amount BIGINT NOT NULL,"
    " PRIMARY KEY (invoice, line));"
    "CREATE TABLE bill_attempts (request_id TEXT PRIMARY KEY, invoice BIGINT NOT NULL,"
    " attempt INTEGER NOT NULL, time_us BIGINT NOT NULL, method TEXT, amount BIGINT NOT NULL,"
    " outcome TEXT NOT NULL, reference TEXT);"
    "CREATE TABLE bill_payments (id BIGINT PRIMARY KEY, acct BIGINT NOT NULL,"
    " time_us BIGINT NOT NULL, amount BIGINT NOT NULL, method TEXT NOT NULL,"
    " ref TEXT NOT NULL UNIQUE, unapplied BIGINT NOT NULL);"
    "CREATE TABLE bill_allocations (payment BIGINT NOT NULL, invoice BIGINT NOT NULL,"
    " amount BIGINT NOT NULL, usage_amount BIGINT NOT NULL, credit BIGINT NOT NULL,"
    " credited INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (payment, invoice));"
    "CREATE TABLE bill_notices (acct BIGINT NOT NULL, invoice BIGINT NOT NULL,"
    " step TEXT NOT NULL, time_us BIGINT NOT NULL, sent INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (acct, invoice, step));"
    "CREATE TABLE bill_refunds (acct BIGINT NOT NULL, item INTEGER NOT NULL,"
    " time_us BIGINT NOT NULL, kind TEXT NOT NULL, invoice BIGINT, charge_id TEXT,"
    " description TEXT NOT NULL, amount BIGINT NOT NULL, status TEXT NOT NULL,"
    " reference TEXT, PRIMARY KEY (acct, item));"
    "CREATE TABLE bill_late_fees (region TEXT PRIMARY KEY, rate_bp INTEGER NOT NULL"
    " CHECK (rate_bp >= 0 AND rate_bp <= 150));"
    "INSERT INTO bill_late_fees VALUES ('*', 150);",
};

int
ledger_version(struct ldb *db)
{
	int64_t v;
	const char *probe = ldb_kind(db) == LDB_SQLITE
	                        ? "SELECT count(*) FROM sqlite_master WHERE name = 'ledger_meta'"
	                        : "SELECT count(*) FROM information_schema.tables"
	                          " WHERE table_name = 'ledger_meta'"
	                          " AND table_schema = current_schema()";

	if (ldb_query_i64(db, probe, 0, NULL, &v) < 0)
		return -1;
	if (v == 0)
		return 0;
	int rc = ldb_query_i64(
	    db, "SELECT CAST(value AS BIGINT) FROM ledger_meta WHERE key = 'schema_version'", 0,
	    NULL, &v);
	return rc < 0 ? -1 : rc == 0 ? 0 : (int)v;
}

int
ledger_migrate(struct ldb *db, char *err, size_t errlen)
{
	int v = ledger_version(db);

	if (v < 0) {
		snprintf(err, errlen, "reading the schema version: %s", ldb_err(db));
		return -1;
	}
	if (v > LEDGER_SCHEMA_VERSION) {
		snprintf(
		    err, errlen,
		    "the ledger's schema is version %d, this build knows up to %d: use a newer "
		    "tollexport",
		    v, LEDGER_SCHEMA_VERSION);
		return -1;
	}
	for (; v < LEDGER_SCHEMA_VERSION; v++) {
		char set[160];
		snprintf(set, sizeof(set),
		         v == 0
		             ? "INSERT INTO ledger_meta VALUES ('schema_version', '%d')"
		             : "UPDATE ledger_meta SET value = '%d' WHERE key = 'schema_version'",
		         v + 1);
		if (ldb_exec(db, "BEGIN") != 0 || ldb_exec(db, steps[v]) != 0 ||
		    ldb_exec(db, set) != 0 || ldb_exec(db, "COMMIT") != 0) {
			snprintf(err, errlen, "migrating the ledger from version %d to %d: %s", v,
			         v + 1, ldb_err(db));
			ldb_exec(db, "ROLLBACK");
			return -1;
		}
	}
	return 0;
}

int64_t
ledger_last_lsn(struct ldb *db)
{
	int64_t v;
	int rc =
	    ldb_query_i64(db, "SELECT last_lsn FROM ledger_position WHERE id = 1", 0, NULL, &v);
	return rc < 0 ? -1 : rc == 0 ? 0 : v;
}
