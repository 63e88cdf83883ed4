#!/bin/sh
# bench/gen-accounts.sh - write a tollgated accounts CSV of N accounts, the
# same accounts bench/load-baseline.sh puts into Redis (ids 0..N-1).
#
#   bench/gen-accounts.sh [options] [FILE]      (no FILE, or -: stdout)
#
#   -n, --accounts N     accounts 0..N-1 (default 1000000)
#   --balance A          opening balance (default 1000000000)
#   --plan NAME          plan (default basic)
#   --threshold A        auto-refill threshold (default 10)
#   --refill MODE        off | add | topup (default add)
#   --refill-amount A    (default 50)
#   --payment on|off     (default on)
#
# Load it with: tollgated --accounts FILE --capacity <N + 10%> ...
set -eu

n=1000000
balance=1000000000
plan=basic
threshold=10
refill=add
refill_amount=50
payment=on
out=-

usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "gen-accounts: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
	case "$1" in
	-n | --accounts) n=${2:?}; shift 2 ;;
	--balance) balance=${2:?}; shift 2 ;;
	--plan) plan=${2:?}; shift 2 ;;
	--threshold) threshold=${2:?}; shift 2 ;;
	--refill) refill=${2:?}; shift 2 ;;
	--refill-amount) refill_amount=${2:?}; shift 2 ;;
	--payment) payment=${2:?}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	-?*) die "unknown option $1 (try --help)" ;;
	*) out=$1; shift ;;
	esac
done
case "$n" in '' | *[!0-9]*) die "--accounts: not a number: $n" ;; esac
case "$refill" in off | add | topup) ;; *) die "--refill: off, add or topup" ;; esac
case "$payment" in on | off) ;; *) die "--payment: on or off" ;; esac
if [ "$refill" = off ]; then amount=; else amount=$refill_amount; fi

gen() {
	awk -v n="$n" -v row=",$balance,$plan,active,$threshold,$refill,$amount,$payment" 'BEGIN {
		print "account,balance,plan,state,threshold,refill,refill_amount,payment"
		for (i = 0; i < n; i++) printf("%d%s\n", i, row)
	}'
}
if [ "$out" = - ]; then
	gen
else
	gen >"$out.tmp.$$" && mv "$out.tmp.$$" "$out"
fi
