#!/bin/sh
# bench/latency-floor.sh - what a rated CDR adds to a round trip, over the
# loopback floor (docs/BENCHMARKS.md, "Latency over the loopback floor").
#
#   bench/latency-floor.sh [--accounts N] [--requests N] [--rounds N]
#                          [--durability relaxed|durable] [--workers N]
#                          [--port P] BUILD-DIR
#
# Builds nothing.  Starts tollgated from BUILD-DIR on a private port with
# N accounts (bench/gen-accounts.sh), then, --rounds times, runs one client
# with one request per round trip (redis-benchmark -c 1 -P 1) for PING and
# for a unique CDR, one after the other, and prints each round's p50 and p99
# (microseconds, from redis-benchmark's --csv) and what the CDR adds to
# tollgated's own PING through the same client; then the medians over the
# rounds.  The goal (issue text in docs/BENCHMARKS.md): at most 10 µs at p50
# and 30 µs at p99 over PING.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
accounts=1000000
requests=50000
rounds=5
durability=relaxed
workers=2
port=6760

usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "latency-floor: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case "$1" in
	--accounts) accounts=${2:?}; shift 2 ;;
	--requests) requests=${2:?}; shift 2 ;;
	--rounds) rounds=${2:?}; shift 2 ;;
	--durability) durability=${2:?}; shift 2 ;;
	--workers) workers=${2:?}; shift 2 ;;
	--port) port=${2:?}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	-*) die "unknown option $1 (try --help)" ;;
	*) break ;;
	esac
done
[ $# -eq 1 ] || { usage >&2; exit 2; }
for v in "$accounts" "$requests" "$rounds" "$workers" "$port"; do
	case "$v" in '' | *[!0-9]*) die "not a number: '$v'" ;; esac
done
case "$durability" in relaxed | durable | off) ;; *) die "--durability: relaxed, durable or off" ;; esac
bin=$(cd "$1" && pwd)/engine/tollgated
[ -x "$bin" ] || die "no tollgated in $1/engine (build it first)"
for t in redis-cli redis-benchmark awk sort; do
	command -v $t >/dev/null || die "$t not found"
done
! redis-cli -p "$port" PING >/dev/null 2>&1 || die "port $port is in use: pick another with --port"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/latency-floor.XXXXXX")
shm="tglat-$$"
pid=
cleanup() {
	trap - EXIT INT TERM HUP
	[ -z "$pid" ] || kill "$pid" 2>/dev/null || true
	[ -z "$pid" ] || wait "$pid" 2>/dev/null || true
	rm -f "/dev/shm/$shm"
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

"$here/gen-accounts.sh" -n "$accounts" "$tmp/accounts.csv"
"$bin" --port "$port" --bind 127.0.0.1 --workers "$workers" --shm-name "/$shm" --shm-reuse no \
	--capacity $((accounts + accounts / 10 + 1000)) --accounts "$tmp/accounts.csv" \
	--rates "$root/tools/demo/rates.csv" --data-dir "$tmp/data" --durability "$durability" \
	--ids-max $((rounds * requests + 1000000)) >"$tmp/tollgated.log" 2>&1 &
pid=$!
tries=0
while [ "$(redis-cli -p "$port" PING 2>/dev/null)" != PONG ]; do
	kill -0 "$pid" 2>/dev/null || { cat "$tmp/tollgated.log" >&2; die "tollgated exited"; }
	tries=$((tries + 1))
	[ $tries -lt 1200 ] || die "tollgated not answering after 120 s"
	sleep 0.1
done

# p50 and p99 in µs of one redis-benchmark run (its --csv: "test","rps",
# "avg","min","p50","p95","p99","max", milliseconds).
lat() {
	redis-benchmark -h 127.0.0.1 -p "$port" -c 1 -P 1 -n "$requests" -r "$accounts" --csv "$@" |
		awk -F'","' 'NR == 2 { gsub(/"/, "", $8); printf "%.0f %.0f\n", $5 * 1000, $7 * 1000 }'
}

printf '%-6s %10s %10s %10s %10s %10s %10s\n' round "PING p50" "CDR p50" "+p50" \
	"PING p99" "CDR p99" "+p99"
r=1
: >"$tmp/rows"
while [ $r -le "$rounds" ]; do
	set -- $(lat PING)
	p50=$1 p99=$2
	set -- $(lat CDR __rand_int__ 14155551212 125 "l$r-__rand_int__-__rand_int__")
	c50=$1 c99=$2
	echo "$p50 $c50 $((c50 - p50)) $p99 $c99 $((c99 - p99))" >>"$tmp/rows"
	printf '%-6s %10s %10s %10s %10s %10s %10s\n' "$r" "$p50" "$c50" "$((c50 - p50))" "$p99" \
		"$c99" "$((c99 - p99))"
	r=$((r + 1))
done
med() { awk -v c="$1" '{ print $c }' "$tmp/rows" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
printf '%-6s %10s %10s %10s %10s %10s %10s\n' median "$(med 1)" "$(med 2)" "$(med 3)" \
	"$(med 4)" "$(med 5)" "$(med 6)"
echo "(µs, one client, one request per round trip, $durability, $workers workers, $accounts accounts)"
rated=$(redis-cli -p "$port" INFO | tr -d '\r' | awk -F: '$1 == "cdr" { print $2 + 0 }')
[ "$rated" -eq $((rounds * requests)) ] ||
	die "tollgated rated $rated CDRs of $((rounds * requests)) sent: the figures are not a CDR's"
