/*
 * tbl/tg_refill_modes.h - how an account refills when it crosses its threshold.
 *
 * TG_REFILL_MODE(ENUM, name, value, description).  Generates enum
 * tg_refill_mode (TG_REFILL_<ENUM> = value, tg_shm-t.h) and the names that
 * ACCT.SET/ACCT.GET, the accounts file, the refill stream's "mode" field,
 * tollctl and tollstat spell (tg_names.h).  The value is stored in shared
 * memory and the journal: only grow at the end, values contiguous from 0.
 */
TG_REFILL_MODE(OFF, off, 0, "no auto-refill")
TG_REFILL_MODE(ADD, add, 1, "charge the refill amount")
TG_REFILL_MODE(TOPUP, topup, 2, "charge what brings the balance back to the refill amount")
