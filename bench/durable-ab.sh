#!/bin/sh
# bench/durable-ab.sh - two tollgated binaries in durable mode, side by side.
#
#   bench/durable-ab.sh OLD-TOLLGATED NEW-TOLLGATED [ROUNDS]
#
# For each round and each binary: a fresh data directory on the same file
# system, one account with a large balance, then redis-benchmark with
#   -c 50 -P 32  (pipelined: throughput, group commit at work) and
#   -c 1  -P 1   (one request per round trip: the latency of an idle commit)
# of rated CDRs with unique ids.  The binaries alternate within each round so
# that load elsewhere on the machine falls on both alike; compare the ratios.
set -eu
old=$1
new=$2
rounds=${3:-3}
n=${TG_AB_REQUESTS:-400000}
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
pid=""

run() { # BIN LABEL
	rm -rf "$tmp/data"
	port=$(($(od -An -N2 -tu2 /dev/urandom) % 20000 + 30000))
	"$1" --port "$port" --shm-name "/tg-ab-$$" --data-dir "$tmp/data" --accounts none \
		--durability durable --workers 2 2>"$tmp/log" &
	pid=$!
	for _ in $(seq 100); do
		redis-cli -p "$port" PING >/dev/null 2>&1 && break
		sleep 0.05
	done
	redis-cli -p "$port" ACCT.SET 1 BALANCE 100000000 PLAN basic >/dev/null
	p=$(redis-benchmark -p "$port" -c 50 -P 32 -n "$n" -r 1000000000 --csv \
		CDR 1 14155551212 60 c__rand_int____rand_int__ | awk -F'"' 'NR == 2 { print $4 }')
	l=$(redis-benchmark -p "$port" -c 1 -P 1 -n 2000 -r 1000000000 --csv \
		CDR 1 14155551212 60 l__rand_int____rand_int__ | awk -F'"' 'NR == 2 { print $4 }')
	echo "$2 pipelined_rps $p single_rps $l"
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	pid=""
}

for r in $(seq "$rounds"); do
	run "$old" "old"
	run "$new" "new"
done
