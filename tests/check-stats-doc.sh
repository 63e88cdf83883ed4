#!/bin/sh
# check-stats-doc.sh SRCDIR - docs/STATS.md is exactly what `tollstat --doc`
# prints from the counter, category and histogram tables.  A counter added to
# include/tbl/tg_counters.h without regenerating the doc fails here; the fix
# is `tollstat --doc > docs/STATS.md`, never an edit by hand.
set -eu
src=${1:?usage: check-stats-doc.sh SRCDIR}
: "${TOLLSTAT:?TOLLSTAT: path of tollstat}"
out=$(mktemp "${TMPDIR:-/tmp}/stats-doc.XXXXXX")
trap 'rm -f "$out"' EXIT
"$TOLLSTAT" --doc >"$out"
if ! diff -u "$src/docs/STATS.md" "$out"; then
	echo "docs/STATS.md differs from \`tollstat --doc\`: regenerate it with"
	echo "  tollstat --doc > docs/STATS.md"
	exit 1
fi
