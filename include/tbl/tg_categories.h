/*
 * tbl/tg_categories.h - usage categories of a rate plan.
 *
 * TG_CATEGORY(name, description).  The index is the slot in an account's
 * usage record (at most TG_CATEGORIES_MAX).  Only grow at the end: the indexes
 * are stored in shared memory and the journal.
 */
TG_CATEGORY(local, "local calls")
TG_CATEGORY(national, "national long distance")
TG_CATEGORY(international, "international")
TG_CATEGORY(tollfree, "toll-free minutes")
TG_CATEGORY(directory, "directory assistance")
TG_CATEGORY(mobile, "calls to mobile networks")
TG_CATEGORY(premium, "premium-rate numbers")
TG_CATEGORY(other, "anything else")
