/*
 * tbl/tg_acct_states.h - the states of an account.
 *
 * TG_ACCT_STATE(ENUM, name, value, description).  Generates enum
 * tg_acct_state (TG_STATE_<ENUM> = value, tg_shm-t.h) and the names that
 * ACCT.SET/ACCT.GET, the accounts file, tollctl, tollstat and tolldemo spell
 * (tg_names.h).  The value is stored in shared memory and the journal: only
 * grow at the end, values contiguous from 0.
 */
TG_ACCT_STATE(ACTIVE, active, 0, "calls are rated and granted")
TG_ACCT_STATE(SUSPENDED, suspended, 1,
              "calls refused with SUSPENDED: by an operator, or for non-payment (TG_ACCT_UNPAID)")
TG_ACCT_STATE(CLOSED, closed, 2, "calls refused with CLOSED")
