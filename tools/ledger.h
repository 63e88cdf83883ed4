/*
 * ledger.h - the ledger's schema and its migrations (docs/LEDGER.md), shared
 * by tollexport, which writes it, and tollctl's statement, calls and
 * reconcile, which read it.
 */
#ifndef TG_LEDGER_H
#define TG_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "ledger_db.h"

/* The schema version this build writes and reads (docs/LEDGER.md, "Migrations"). */
#define LEDGER_SCHEMA_VERSION 2

/*
 * Bring db's schema to LEDGER_SCHEMA_VERSION, each step in its own
 * transaction.  A database at a newer version is refused.  0, or -1 with a
 * sentence in err.
 */
int ledger_migrate(struct ldb *db, char *err, size_t errlen);
/* The schema version db is at (0: no ledger in it), or -1. */
int ledger_version(struct ldb *db);
/* The last LSN in the database (ledger_position), 0 when none; -1 on error. */
int64_t ledger_last_lsn(struct ldb *db);

#endif
