#!/bin/sh
# check-docs.sh SRCDIR - the docs name everything the tables define.
#
# Settings (tbl/tg_config.h) must be in docs/CONFIG.md, counters
# (tbl/tg_counters.h) and result codes (tbl/tg_results.h) in docs/PROTOCOL.md,
# categories (tbl/tg_categories.h) in docs/RATES.md, the refill stream's
# fields, the customer profile's fields and the payment methods in docs/REFILL.md.  A table that grows
# without its doc fails here.
set -eu
src=${1:?usage: check-docs.sh SRCDIR}
fail=0
check() { # table regex doc
	for name in $(sed -n "$2" "$src/include/tbl/$1"); do
		if ! grep -q -- "$name" "$src/docs/$3"; then
			echo "docs/$3 does not mention $name (from include/tbl/$1)"
			fail=1
		fi
	done
}
check tg_config.h 's/^TG_CFG("\([^"]*\)".*/\1/p' CONFIG.md
check tg_counters.h 's/^TG_COUNTER(\([a-z_]*\),.*/\1/p' PROTOCOL.md
check tg_net_counters.h 's/^TG_NET_COUNTER([A-Z_]*, \([a-z_]*\),.*/\1/p' PROTOCOL.md
check tg_results.h 's/^TG_RESULT(\([A-Z]*\),.*/`\1`/p' PROTOCOL.md
check tg_categories.h 's/^TG_CATEGORY(\([a-z]*\),.*/\1/p' RATES.md
check tg_refill_fields.h 's/^TG_REFILL_FIELD([A-Z]*, \([a-z_]*\),.*/`\1`/p' REFILL.md
check tg_profile_fields.h 's/^TG_PROFILE_FIELD([A-Z]*, \([a-z_]*\),.*/`\1`/p' REFILL.md
check tg_pay_methods.h 's/^TG_PAY_METHOD([A-Z]*, \([a-z_]*\),.*/`\1`/p' REFILL.md
exit $fail
