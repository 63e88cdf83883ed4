#!/bin/sh
# bench/repl-sync.sh BUILD [N] — what synchronous replication costs.
#
# Durable mode, pipelined unique CDRs (redis-benchmark -c 50 -P 32) against
# one primary: with no replica, with one asynchronous replica, and with one
# synchronous replica (min-replicas-to-write 1).  Prints requests/s, p50 and
# p99 per run, and the primary's CPU per request (utime+stime from /proc).
# All three on the same machine, one after another; run it twice and quote
# ratios (docs/BENCHMARKS.md, "Replication").
set -eu
BUILD=${1:?usage: bench/repl-sync.sh BUILD [requests]}
N=${2:-400000}
D=$(mktemp -d /tmp/tg-repl-bench.XXXXXX)
TG=$BUILD/engine/tollgated
trap 'pkill -f "tollgated --port 74[01]" 2>/dev/null; rm -rf "$D"' EXIT

cpu() { awk '{print $14 + $15}' /proc/$1/stat; }

run() { # name min-replicas replica?
	rm -rf "$D"/p "$D"/r; mkdir -p "$D"/p "$D"/r
	$TG --port 7400 --data-dir "$D"/p --shm-name /tgbench-p --workers 2 \
	    --min-replicas-to-write "$2" --min-replicas-timeout 5000 >"$D"/p.log 2>&1 &
	sleep 1
	if [ "$3" = yes ]; then
		$TG --port 7401 --data-dir "$D"/r --shm-name /tgbench-r --workers 1 \
		    --replica-of "127.0.0.1 7400" >"$D"/r.log 2>&1 &
		sleep 2
	fi
	redis-cli -p 7400 ACCT.SET 5 BALANCE 100000000 PLAN basic >/dev/null
	pid=$(pgrep -f "tollgated --port 7400")
	c0=$(cpu "$pid")
	out=$(redis-benchmark -p 7400 -c 50 -P 32 -n "$N" -r 100000000 --precision 3 -q \
	      CDR 5 12125551234 60 b__rand_int__-__rand_int__ 2>&1 | tr '\r' '\n' | tail -1)
	c1=$(cpu "$pid")
	rps=$(echo "$out" | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p')
	p50=$(echo "$out" | sed -n 's/.*p50=\([0-9.]*\) msec.*/\1/p')
	# p99 from a latency run of its own: -q prints p50 only.
	lat=$(redis-benchmark -p 7400 -c 50 -P 32 -n "$N" -r 100000000 --precision 3 \
	      CDR 5 12125551234 60 l__rand_int__-__rand_int__ 2>/dev/null | tr '\r' '\n' |
	      awk '/latency summary/{getline; getline; print $5}')
	tick=$(getconf CLK_TCK)
	us=$(echo "$c0 $c1 $N $tick" | awk '{printf "%.2f", ($2 - $1) / $4 * 1e6 / $3}')
	printf '%-26s %10s req/s  p50 %6s ms  p99 %6s ms  primary CPU %s us/req\n' \
	    "$1" "$rps" "$p50" "$lat" "$us"
	if [ "$3" = yes ]; then
		pl=$(redis-cli -p 7400 INFO | sed -n 's/^journal_lsn:\([0-9]*\).*/\1/p')
		sleep 2
		rl=$(redis-cli -p 7401 INFO | sed -n 's/^journal_lsn:\([0-9]*\).*/\1/p')
		echo "    primary LSN $pl, replica LSN $rl"
	fi
	pkill -f "tollgated --port 74[01]"; sleep 1
}

run "no replica" 0 no
run "1 replica, asynchronous" 0 yes
run "1 replica, synchronous" 1 yes
