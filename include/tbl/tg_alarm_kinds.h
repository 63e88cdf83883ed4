/*
 * tbl/tg_alarm_kinds.h - the caps whose reaching raises a fraud alarm (the
 * `kind` field of the alarm stream, docs/FRAUD.md "The alarm stream").
 *
 * TG_ALARM_KIND(enum, name on the wire, value, description).  The value is
 * a bit number of the limits record's `alarmed` word in shared memory
 * (docs/SHM.md), below 16: only grow at the end.
 */
TG_ALARM_KIND(MAXCALLS, maxcalls, 0, "CALL.AUTH refused: the account holds MAXCALLS calls already")
TG_ALARM_KIND(CALLCAP, callcap, 1,
              "a grant cut to the account's CALLCAP, or refused because the cap pays for nothing "
              "more")
TG_ALARM_KIND(DAILYCAP, dailycap, 2,
              "a grant cut to what is left of the account's DAILYCAP, or refused with DAILYCAP")
