#!/bin/sh
# bench/load-baseline.sh - fill a running redis-server with the data
# bench/baseline.lua rates against: N accounts and the rate plans of a CSV.
#
#   bench/load-baseline.sh [options] [HOST [PORT]]
#
#   -n, --accounts N     accounts 0..N-1 (default 1000000)
#   --rates FILE         rate-plan CSV, docs/RATES.md format (default tools/demo/rates.csv)
#   --balance A          opening balance of every account (default 1000000000)
#   --plan NAME          their plan (default basic)
#   --threshold A        auto-refill threshold (default 10)
#   --refill MODE        off | add | topup (default add)
#   --refill-amount A    (default 50)
#   --payment on|off     payment method on file (default on)
#   --flush              FLUSHALL first (default: keep other keys; accounts and plans are overwritten)
#   --script FILE        also SCRIPT LOAD this file and print its sha1 on stdout
#                        (default: none)
#
# It starts nothing: HOST (default 127.0.0.1) and PORT (default 6379) name a
# redis-server that is already running.  Amounts are decimal strings with at
# most 6 decimals, as in tollgated; they are stored as integer micro-units
# (string arithmetic, no floating point).  Accounts go in with one RESP
# stream through `redis-cli --pipe`:
#   acct:<id>   hash  balance plan threshold refill refill_amount payment refill_pending refill_seq
#   plan:<name> hash  <prefix> -> "rate_per_min_micro,connect_micro,initial,increment,minimum,category"
# Use bench/gen-accounts.sh with the same options for tollgated's accounts CSV.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

n=1000000
rates="$root/tools/demo/rates.csv"
balance=1000000000
plan=basic
threshold=10
refill=add
refill_amount=50
payment=on
flush=no
script=
host=127.0.0.1
port=6379
npos=0

usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "load-baseline: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
	case "$1" in
	-n | --accounts) n=${2:?}; shift 2 ;;
	--rates) rates=${2:?}; shift 2 ;;
	--balance) balance=${2:?}; shift 2 ;;
	--plan) plan=${2:?}; shift 2 ;;
	--threshold) threshold=${2:?}; shift 2 ;;
	--refill) refill=${2:?}; shift 2 ;;
	--refill-amount) refill_amount=${2:?}; shift 2 ;;
	--payment) payment=${2:?}; shift 2 ;;
	--flush) flush=yes; shift ;;
	--script) script=${2:?}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	-*) die "unknown option $1 (try --help)" ;;
	*)
		npos=$((npos + 1))
		case $npos in 1) host=$1 ;; 2) port=$1 ;; *) die "too many arguments" ;; esac
		shift ;;
	esac
done

case "$n" in '' | *[!0-9]*) die "--accounts: not a number: $n" ;; esac
case "$refill" in off | add | topup) ;; *) die "--refill: off, add or topup" ;; esac
case "$payment" in on) pay=1 ;; off) pay=0 ;; *) die "--payment: on or off" ;; esac
[ -r "$rates" ] || die "cannot read $rates"
command -v redis-cli >/dev/null || die "redis-cli not found"

cli() { redis-cli -h "$host" -p "$port" "$@"; }
[ "$(cli PING 2>&1)" = PONG ] || die "no redis-server answering PING on $host:$port"

# The awk helpers shared by both streams: RESP encoding and exact decimal ->
# micro-unit conversion done on the digits (awk numbers are doubles).
awk_lib='
function micro(s, what,   neg, w, f, p, r) {
	neg = ""
	if (s ~ /^[+-]/) { if (substr(s, 1, 1) == "-") neg = "-"; s = substr(s, 2) }
	if (s !~ /^[0-9]+(\.[0-9][0-9]?[0-9]?[0-9]?[0-9]?[0-9]?)?$/) {
		printf("load-baseline: %s: not an amount with at most 6 decimals: %s\n", what, s) > "/dev/stderr"
		bad = 1; exit 1
	}
	p = index(s, ".")
	if (p) { w = substr(s, 1, p - 1); f = substr(s, p + 1) } else { w = s; f = "" }
	while (length(f) < 6) f = f "0"
	r = w f
	sub(/^0+/, "", r)
	if (r == "") return "0"
	if (length(r) > 16 || (length(r) == 16 && r >= "9007199254740992")) {
		printf("load-baseline: %s: %s is beyond 2^53 micro-units (baseline.lua limit)\n", what, s) > "/dev/stderr"
		bad = 1; exit 1
	}
	return neg r
}
function resp(argc, argv,   i, out) {
	out = "*" argc "\r\n"
	for (i = 1; i <= argc; i++) out = out "$" length(argv[i]) "\r\n" argv[i] "\r\n"
	printf("%s", out)
}
'

pipe() {
	# redis-cli --pipe prints "errors: E, replies: R" at the end
	out=$(cli --pipe 2>&1) || { echo "$out" >&2; die "redis-cli --pipe failed"; }
	case "$out" in
	*"errors: 0,"*) echo "$out" | tail -n 1 | sed "s/^/load-baseline: $1: /" >&2 ;;
	*) echo "$out" >&2; die "$1: the server reported errors" ;;
	esac
}

if [ "$flush" = yes ]; then
	cli FLUSHALL >/dev/null
fi

# ---- rate plans ----
awk "$awk_lib"'
BEGIN { FS = ","; hdr = 0; bad = 0 }
{ sub(/\r$/, "") }
NR == 1 { sub(/^\357\273\277/, "") }
/^#/ || /^$/ { next }
!hdr {
	if ($0 != "plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum") {
		printf("load-baseline: %s:%d: bad header\n", FILENAME, NR) > "/dev/stderr"; bad = 1; exit 1
	}
	hdr = 1; next
}
{
	if (NF != 8 || $2 !~ /^[0-9]+$/ || length($2) > 32 || $6 !~ /^[0-9]+$/ || $7 !~ /^[0-9]+$/ || $8 !~ /^[0-9]+$/ || $6 < 1 || $7 < 1) {
		printf("load-baseline: %s:%d: bad row: %s\n", FILENAME, NR, $0) > "/dev/stderr"; bad = 1; exit 1
	}
	if (!($1 in seen)) { seen[$1] = 1; a[1] = "DEL"; a[2] = "plan:" $1; resp(2, a); nplans++ }
	a[1] = "HSET"; a[2] = "plan:" $1; a[3] = $2
	a[4] = micro($4, "rate_per_min") "," micro($5, "connect_fee") "," ($6 + 0) "," ($7 + 0) "," ($8 + 0) "," $3
	resp(4, a); nrows++
}
END {
	if (bad) exit 1
	printf("load-baseline: %d plans, %d prefixes from %s\n", nplans, nrows, FILENAME) > "/dev/stderr"
}
' "$rates" | pipe "rates"

# ---- accounts ----
awk -v n="$n" -v bal="$balance" -v plan="$plan" -v thr="$threshold" -v mode="$refill" \
    -v amt="$refill_amount" -v pay="$pay" "$awk_lib"'
BEGIN {
	b = micro(bal, "balance"); t = micro(thr, "threshold"); m = micro(amt, "refill_amount")
	a[1] = "HSET"
	a[3] = "balance"; a[4] = b; a[5] = "plan"; a[6] = plan; a[7] = "threshold"; a[8] = t
	a[9] = "refill"; a[10] = mode; a[11] = "refill_amount"; a[12] = m
	a[13] = "payment"; a[14] = pay; a[15] = "refill_pending"; a[16] = "0"
	a[17] = "refill_seq"; a[18] = "0"
	# the fields are the same for every account: encode them once
	tail = ""
	for (j = 3; j <= 18; j++) tail = tail "$" length(a[j]) "\r\n" a[j] "\r\n"
	for (i = 0; i < n; i++) {
		k = "acct:" i
		printf("*18\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n%s", length(k), k, tail)
	}
}' | pipe "$n accounts"
echo "load-baseline: $host:$port now holds $(cli DBSIZE) keys" >&2

if [ -n "$script" ]; then
	sha=$(cli -x SCRIPT LOAD <"$script") || die "SCRIPT LOAD $script failed"
	case "$sha" in *[!0-9a-f]* | '') die "SCRIPT LOAD $script: $sha" ;; esac
	echo "$sha"
fi
