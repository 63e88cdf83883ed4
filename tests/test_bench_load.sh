#!/bin/sh
# tests/test_bench_load.sh - `tollbench load` against the real tollgated for
# about a second each way, closed loop with every command of the mix and
# open loop with a CSV: it must complete with no error reply, no lost
# connection, every request answered, and figures that make sense.  It
# checks that the load generator works, never how fast anything is.
#
#   TOLLGATED=build/engine/tollgated TOLLBENCH=build/bench/tollbench sh tests/test_bench_load.sh
#
# Starts its own tollgated (port 0, a private shared-memory segment) and
# stops it, and removes the segment and its temporary directory, however it
# exits.
set -eu

: "${TOLLGATED:?set TOLLGATED to the tollgated binary}"
: "${TOLLBENCH:?set TOLLBENCH to the tollbench binary}"

fail() { echo "test_bench_load: FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tg-bench-load.XXXXXX")
shm="tg-bench-load-$$"
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "/dev/shm/$shm"
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# 1000 accounts with a large balance on the bundled plan "basic".
awk 'BEGIN {
	print "account,balance,plan,state,threshold,refill,refill_amount,payment"
	for (i = 0; i < 1000; i++) printf("%d,1000000,basic,active,0,off,,off\n", i)
}' >"$tmp/accounts.csv"

"$TOLLGATED" --port 0 --bind 127.0.0.1 --workers 1 --shm-name "/$shm" --shm-reuse no \
	--data-dir "$tmp/data" --capacity 2000 --accounts "$tmp/accounts.csv" 2>"$tmp/tollgated.log" &
pid=$!
i=0
while ! grep -q "ready on" "$tmp/tollgated.log"; do
	kill -0 "$pid" 2>/dev/null || { cat "$tmp/tollgated.log" >&2; fail "tollgated exited at start"; }
	i=$((i + 1))
	[ $i -lt 300 ] || fail "tollgated not ready after 30 s"
	sleep 0.1
done
port=$(sed -n 's/.* ready on [^ ]*:\([0-9][0-9]*\):.*/\1/p' "$tmp/tollgated.log" | head -1)
[ -n "$port" ] || fail "no port in: $(cat "$tmp/tollgated.log")"

# A number from the JSON report: top-level key, or a key of latency_us.
num() { sed -n "s/.*\"$1\": \([0-9][0-9.]*\).*/\1/p" "$2" | head -1; }
# awk as a calculator: exit 0 when the condition holds.
holds() { awk "BEGIN { exit !($1) }"; }

check_report() { # file what
	f=$1
	for k in requests sent errors unanswered unsent disconnects throughput p50 p99 p999 max; do
		[ -n "$(num $k "$f")" ] || fail "$2: no \"$k\" in the report: $(cat "$f")"
	done
	req=$(num requests "$f")
	[ "$(num errors "$f")" = 0 ] || fail "$2: error replies: $(grep errors_by_code "$f")"
	[ "$(num unanswered "$f")" = 0 ] || fail "$2: requests unanswered"
	[ "$(num disconnects "$f")" = 0 ] || fail "$2: connections lost"
	[ "$(num sent "$f")" = "$req" ] || fail "$2: $(num sent "$f") sent, $req answered"
	holds "$req > 0" || fail "$2: no request answered"
	holds "$(num throughput "$f") > 0" || fail "$2: no throughput"
	p50=$(num p50 "$f") p99=$(num p99 "$f") p999=$(num p999 "$f") max=$(num max "$f")
	holds "$p50 > 0 && $p50 <= $p99 && $p99 <= $p999 && $p999 <= $max && $max < 10000000" ||
		fail "$2: latency percentiles out of order: p50 $p50 p99 $p99 p999 $p999 max $max"
}

# Closed loop: every command of the mix, Zipf-distributed accounts.
"$TOLLBENCH" load -p "$port" -t 2 -c 4 -P 8 -d 1 --accounts 1000 --dist zipf \
	--mix cdr:8,auth-end:1,credit:1 --json >"$tmp/closed.json" 2>"$tmp/closed.err" ||
	{ cat "$tmp/closed.err" "$tmp/closed.json" >&2; fail "closed loop: tollbench load failed"; }
check_report "$tmp/closed.json" "closed loop"
grep -q '"mode": "closed"' "$tmp/closed.json" || fail "closed loop: mode not reported"
grep -q '"mix": "cdr:8,auth-end:1,credit:1"' "$tmp/closed.json" || fail "closed loop: mix not reported"
grep -q "req/s" "$tmp/closed.err" || fail "closed loop: no progress line on stderr"

# Open loop at 2000 requests/s for 1 s: about 2000 requests, one CSV row a second.
"$TOLLBENCH" load -p "$port" -c 4 -P 1 -n 2000 --rate 2000 --accounts 1000 \
	--csv "$tmp/open.csv" --json >"$tmp/open.json" 2>"$tmp/open.err" ||
	{ cat "$tmp/open.err" "$tmp/open.json" >&2; fail "open loop: tollbench load failed"; }
check_report "$tmp/open.json" "open loop"
[ "$(num requests "$tmp/open.json")" = 2000 ] || fail "open loop: -n 2000 answered $(num requests "$tmp/open.json")"
[ "$(num unsent "$tmp/open.json")" = 0 ] || fail "open loop: requests due but never sent"
holds "$(num seconds "$tmp/open.json") >= 0.9" || fail "open loop: 2000 requests at 2000/s in under 0.9 s"
[ "$(head -1 "$tmp/open.csv")" = "second,requests,p50,p90,p99,p999,max" ] || fail "CSV header: $(head -1 "$tmp/open.csv")"
rows=$(awk -F, 'NR > 1 && NF == 7 && $1 == NR - 1 { n++ } END { print n + 0 }' "$tmp/open.csv")
total=$(awk -F, 'NR > 1 { n += $2 } END { print n + 0 }' "$tmp/open.csv")
[ "$rows" -ge 1 ] && [ "$rows" -eq $(($(wc -l <"$tmp/open.csv") - 1)) ] || fail "CSV rows: $(cat "$tmp/open.csv")"
[ "$total" = 2000 ] || fail "CSV rows add up to $total requests, not 2000"

# The engine counted exactly what the generator sent: CDRs and money charged.
info() { redis-cli -p "$port" INFO "$1" | tr -d '\r' | sed -n "s/^$2://p"; }
if command -v redis-cli >/dev/null 2>&1; then
	cdr0=$(info calls cdr) money0=$(info money money_charged)
	"$TOLLBENCH" load -p "$port" -c 4 -P 16 -n 5000 --accounts 1000 --mix cdr \
		--dest 14155551212 --secs 125 --json >"$tmp/count.json" 2>"$tmp/count.err" ||
		{ cat "$tmp/count.err" >&2; fail "count run: tollbench load failed"; }
	[ "$(num requests "$tmp/count.json")" = 5000 ] || fail "count run: $(num requests "$tmp/count.json") answered"
	cdr1=$(info calls cdr) money1=$(info money money_charged)
	[ $((cdr1 - cdr0)) = 5000 ] || fail "engine counted $((cdr1 - cdr0)) CDRs, the generator sent 5000"
	# 125 s at 0.012/min, 6/6 billing: 126 s billed, 0.0252 each; 5000 of them: 126,
	# compared in integer micro-units (no floating point near money).
	micro() { # "12.5" -> 12500000
		int=${1%%.*} frac=
		case $1 in *.*) frac=${1#*.} ;; esac
		frac=$(printf '%s000000' "$frac" | cut -c1-6 | sed 's/^0*//; s/^$/0/')
		echo $((int * 1000000 + frac))
	}
	[ $(($(micro "$money1") - $(micro "$money0"))) = 126000000 ] ||
		fail "engine charged $money0 -> $money1, not 126 more"
fi

# The human report, and the daemon still up.
"$TOLLBENCH" load -p "$port" -c 2 -n 100 --accounts 1000 -q >"$tmp/text.out" 2>&1 ||
	{ cat "$tmp/text.out" >&2; fail "text report: tollbench load failed"; }
grep -q "^throughput" "$tmp/text.out" && grep -q "^latency .*p99" "$tmp/text.out" ||
	fail "text report: $(cat "$tmp/text.out")"
kill -0 "$pid" 2>/dev/null || fail "tollgated died during the runs"
echo "test_bench_load: ok (closed loop $(num throughput "$tmp/closed.json") req/s, open loop p99 $(num p99 "$tmp/open.json") us)"
