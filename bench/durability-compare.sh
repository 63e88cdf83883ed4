#!/bin/sh
# bench/durability-compare.sh - what the journal costs: the same `tollbench
# load` against tollgated with --durability off, relaxed and durable, side by
# side, interleaved run by run, and the ratios (docs/BENCHMARKS.md).
#
#   bench/durability-compare.sh [options] [-- TOLLBENCH-LOAD-FLAGS...]
#
# Options:
#   --workers N        tollgated --workers (default 2)
#   --runs N           runs of each mode, interleaved; the median is reported (default 3)
#   --accounts N       accounts 0..N-1 (default 100000)
#   --port P           tollgated's port (default 6481)
#   --dir DIR          where the data directories go (default $TMPDIR or /tmp): put it on
#                      the disk you mean to measure, never on tmpfs
#   --keep             keep the temporary directory and print its path
#   -- FLAGS           tollbench load flags, replacing the default -c 50 -P 32 -d 5
#
# Run it twice: pipelined (the default: group commit's case) and one request
# per round trip (-- -c 1 -P 1 -d 5): the acknowledged-write latency.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
workers=2
runs=3
accounts=100000
port=6481
base=${TMPDIR:-/tmp}
keep=no
lflags="-c 50 -P 32 -d 5"
tollgated=${TOLLGATED:-"$root/build/engine/tollgated"}
tollbench=${TOLLBENCH:-"$root/build/bench/tollbench"}

die() { echo "durability-compare: $*" >&2; exit 1; }
say() { echo "durability-compare: $*" >&2; }
while [ $# -gt 0 ]; do
	case "$1" in
	--workers) workers=${2:?}; shift 2 ;;
	--runs) runs=${2:?}; shift 2 ;;
	--accounts) accounts=${2:?}; shift 2 ;;
	--port) port=${2:?}; shift 2 ;;
	--dir) base=${2:?}; shift 2 ;;
	--keep) keep=yes; shift ;;
	-h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	--) shift; lflags="$*"; break ;;
	*) die "unknown option $1 (try --help)" ;;
	esac
done
for v in "$workers" "$runs" "$accounts" "$port"; do
	case "$v" in '' | *[!0-9]*) die "not a number: '$v'" ;; esac
done
[ -x "$tollgated" ] || die "no tollgated at $tollgated (meson setup build && ninja -C build)"
[ -x "$tollbench" ] || die "no tollbench at $tollbench"
command -v redis-cli >/dev/null || die "redis-cli not found"

tmp=$(mktemp -d "$base/durability-compare.XXXXXX")
shm="tgdur-$$"
tpid=
cleanup() {
	trap - EXIT INT TERM HUP
	if [ -n "$tpid" ]; then kill "$tpid" 2>/dev/null || true; wait "$tpid" 2>/dev/null || true; fi
	rm -f "/dev/shm/$shm"
	if [ "$keep" = yes ]; then say "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if redis-cli -p "$port" PING >/dev/null 2>&1; then
	die "port $port is in use: pick another with --port"
fi
say "generating $accounts accounts"
"$here/gen-accounts.sh" -n "$accounts" "$tmp/accounts.csv"
fs=$(df -P "$tmp" | awk 'NR == 2 { print $1 }')
say "tollbench load $lflags; data directories on $fs; tollgated --workers $workers"

num() { sed -n "s/.*\"$1\": \([0-9][0-9.]*\).*/\1/p" "$2" | head -1; }
: >"$tmp/results"

# run MODE: a fresh engine in that mode, one load run, then stop it.
run() {
	mode=$1
	rm -rf "$tmp/data" "/dev/shm/$shm"
	"$tollgated" --port "$port" --bind 127.0.0.1 --workers "$workers" --shm-name "/$shm" \
		--capacity $((accounts + accounts / 10 + 1000)) --ids-max 40000000 \
		--accounts "$tmp/accounts.csv" --rates "$root/tools/demo/rates.csv" \
		--redis-host none --data-dir "$tmp/data" --durability "$mode" \
		--snapshot-interval 0 >"$tmp/tollgated-$mode.log" 2>&1 &
	tpid=$!
	i=0
	while [ "$(redis-cli -p "$port" PING 2>/dev/null)" != PONG ]; do
		kill -0 "$tpid" 2>/dev/null || { cat "$tmp/tollgated-$mode.log" >&2; die "tollgated ($mode) did not start"; }
		i=$((i + 1))
		[ $i -lt 600 ] || die "tollgated ($mode) not answering"
		sleep 0.1
	done
	out="$tmp/$mode.$r.json"
	# shellcheck disable=SC2086
	"$tollbench" load -p "$port" $lflags --accounts "$accounts" -q --json >"$out" \
		2>"$tmp/$mode.$r.err" || say "WARNING: $mode run $r: tollbench load failed"
	syncs=$(redis-cli -p "$port" INFO journal | sed -n 's/^journal_syncs:\([0-9]*\).*/\1/p')
	kill "$tpid"
	wait "$tpid" 2>/dev/null || true
	tpid=
	rps=$(num throughput "$out")
	[ -n "$rps" ] || rps=0
	echo "$mode $rps $(num p50 "$out") $(num p99 "$out") $(num p999 "$out") ${syncs:-0}" >>"$tmp/results"
	say "  $mode: $rps req/s, p50 $(num p50 "$out") us, p99 $(num p99 "$out") us, syncs ${syncs:-0}"
}

r=1
while [ "$r" -le "$runs" ]; do
	say "run $r of $runs"
	for m in off relaxed durable; do run $m; done
	r=$((r + 1))
done

median() { # mode column
	awk -v t="$1" -v c="$2" '$1 == t && $c != "" { v[++n] = $c + 0 }
	END {
		if (n == 0) { print "-"; exit }
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
		print v[int((n + 1) / 2)]
	}' "$tmp/results"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf("%.2f", a / b); else print "-" }'; }

echo
echo "tollbench load $lflags --accounts $accounts (median of $runs runs; tollgated --workers $workers; journal on $fs)"
printf '%-10s %11s %9s %9s %9s %10s\n' durability "req/s" "p50 us" "p99 us" "p999 us" syncs
for m in off relaxed durable; do
	printf '%-10s %11.0f %9s %9s %9s %10s\n' "$m" "$(median $m 2)" "$(median $m 3)" "$(median $m 4)" "$(median $m 5)" "$(median $m 6)"
done
echo "durable / relaxed: $(ratio "$(median durable 2)" "$(median relaxed 2)")x    relaxed / off: $(ratio "$(median relaxed 2)" "$(median off 2)")x    durable / off: $(ratio "$(median durable 2)" "$(median off 2)")x"
