#!/bin/sh
# bench/cpu-per-request.sh - the server CPU one request costs: tollgated
# (relaxed and durable) and redis-server INCRBY, side by side.
#
#   bench/cpu-per-request.sh [options] BUILD-DIR [BASE-BUILD-DIR]
#
# Builds nothing: BUILD-DIR is a built tree (BUILD-DIR/engine/tollgated).
# With BASE-BUILD-DIR, the same runs with that tree's tollgated are
# interleaved with this one's (same machine, same minute), and the table gets
# a column of ratios: on a shared machine only figures taken side by side
# compare.  It starts, on private ports (127.0.0.1 only):
#
#   redis-server (no persistence)   INCRBY __rand_int__ 1
#   tollgated --durability relaxed  CDR __rand_int__ 14155551212 125 c__rand_int__-__rand_int__-__rand_int__
#   tollgated --durability durable  the same
#
# tollgated with --accounts N accounts (bench/gen-accounts.sh, ids 0..N-1)
# and the demo rate plans; every run is
#
#   redis-benchmark -c 50 -P 32 -n REQUESTS -r 1000000 COMMAND
#
# and the figure is the server's CPU time (utime + stime of every thread,
# /proc/PID/stat) over the run divided by the requests.  That drifts much
# less than req/s when other processes share the CPUs.  Each tollgated run
# is checked: every request was rated (cdr + replays counters).
#
# Options:
#   --accounts N   accounts loaded (default 1000000; -r stays 1000000, so fewer
#                  accounts make NOACCOUNT replies: keep the default)
#   --requests N   requests per run (default 2000000)
#   --runs N       runs of each, median reported (default 1)
#   --workers N    tollgated --workers (default 1)
#   --port P       first port; P..P+5 are used (default 6710)
#   --modes LIST   tollgated modes, comma-separated (default relaxed,durable)
#   --snapshots    let tollgated take its snapshots as configured by default
#                  (every 4M journal records): without it they are taken only
#                  at shutdown, since a snapshot is a background pass over the
#                  whole state (about 2 s of CPU for 1M accounts and 2M ids)
#                  that lands in one run and not the next, and is not part of
#                  the request path this measures
#   --keep         keep the temporary directory (logs) and print its path
#
# Everything it starts is stopped, and the segments and the temporary
# directory removed, on exit (Ctrl-C too).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
accounts=1000000
requests=2000000
runs=1
workers=1
port=6710
modes=relaxed,durable
keep=no
snap="--snapshot-records 0 --snapshot-interval 0"

usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "cpu-per-request: $*" >&2; exit 1; }
say() { echo "cpu-per-request: $*" >&2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--accounts) accounts=${2:?}; shift 2 ;;
	--requests) requests=${2:?}; shift 2 ;;
	--runs) runs=${2:?}; shift 2 ;;
	--workers) workers=${2:?}; shift 2 ;;
	--port) port=${2:?}; shift 2 ;;
	--modes) modes=${2:?}; shift 2 ;;
	--keep) keep=yes; shift ;;
	--snapshots) snap=; shift ;;
	-h | --help) usage; exit 0 ;;
	-*) die "unknown option $1 (try --help)" ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] && [ $# -le 2 ] || { usage >&2; exit 2; }
for v in "$accounts" "$requests" "$runs" "$workers" "$port"; do
	case "$v" in '' | *[!0-9]*) die "not a number: '$v'" ;; esac
done
new=$(cd "$1" && pwd)/engine/tollgated
[ -x "$new" ] || die "no tollgated in $1/engine (build it first)"
base=
if [ $# -eq 2 ]; then
	base=$(cd "$2" && pwd)/engine/tollgated
	[ -x "$base" ] || die "no tollgated in $2/engine (build it first)"
fi
for t in redis-server redis-cli redis-benchmark awk; do
	command -v $t >/dev/null || die "$t not found"
done
modes=$(echo "$modes" | tr ',' ' ')
for m in $modes; do
	case "$m" in relaxed | durable | off) ;; *) die "--modes: relaxed, durable or off" ;; esac
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cpu-per-request.XXXXXX")
pids=
shms=
cleanup() {
	trap - EXIT INT TERM HUP
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do
		i=0
		while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
		kill -9 "$p" 2>/dev/null || true
	done
	for s in $shms; do rm -f "/dev/shm/$s"; done
	if [ "$keep" = yes ]; then say "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

wait_ping() { # port pid log what
	tries=0
	while [ "$(redis-cli -p "$1" PING 2>/dev/null)" != PONG ]; do
		kill -0 "$2" 2>/dev/null || { cat "$3" >&2; die "$4 exited during start-up (log above)"; }
		tries=$((tries + 1))
		[ $tries -lt 1200 ] || die "$4 not answering on port $1 after 120 s (log: $3)"
		sleep 0.1
	done
}
port_free() {
	! redis-cli -p "$1" PING >/dev/null 2>&1 || die "port $1 is in use: pick others with --port"
}

say "generating $accounts accounts"
"$here/gen-accounts.sh" -n "$accounts" "$tmp/accounts.csv"
capacity=$((accounts + accounts / 10 + 1000))
ids_max=$((2 * runs * requests + 1000000))
[ "$ids_max" -ge 4000000 ] || ids_max=4000000

# start_tg TAG BINARY MODE PORT: a tollgated; sets pid_TAG and port_TAG
start_tg() {
	shm="tgcpu-$$-$1"
	rm -f "/dev/shm/$shm"
	shms="$shms $shm"
	port_free "$4"
	"$2" --port "$4" --bind 127.0.0.1 --workers "$workers" --shm-name "/$shm" --shm-reuse no \
		--capacity "$capacity" --accounts "$tmp/accounts.csv" --rates "$root/tools/demo/rates.csv" \
		--data-dir "$tmp/data-$1" --durability "$3" --ids-max "$ids_max" $snap >"$tmp/$1.log" 2>&1 &
	p=$!
	pids="$pids $p"
	eval "pid_$1=$p port_$1=$4"
	wait_ping "$4" "$p" "$tmp/$1.log" "tollgated ($1)"
}

port_free "$port"
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" \
	--logfile "$tmp/redis.log" --daemonize no >/dev/null 2>&1 &
pid_redis=$!
port_redis=$port
pids="$pids $pid_redis"
wait_ping "$port" "$pid_redis" "$tmp/redis.log" redis-server

tags=redis
k=1
for m in $modes; do
	start_tg "$m" "$new" "$m" $((port + k))
	tags="$tags $m"
	k=$((k + 1))
	if [ -n "$base" ]; then
		start_tg "base_$m" "$base" "$m" $((port + k))
		tags="$tags base_$m"
		k=$((k + 1))
	fi
done

tck=$(getconf CLK_TCK)
cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rated() { redis-cli -p "$1" INFO | tr -d '\r' | awk -F: '$1 == "cdr" || $1 == "replays" { n += $2 } END { print n + 0 }'; }

: >"$tmp/results"
r=1
while [ "$r" -le "$runs" ]; do
	for t in $tags; do
		eval "pid=\$pid_$t p=\$port_$t"
		if [ "$t" = redis ]; then
			set -- INCRBY __rand_int__ 1
		else
			set -- CDR __rand_int__ 14155551212 125 c__rand_int__-__rand_int__-__rand_int__
			n0=$(rated "$p")
		fi
		c0=$(cpu_of "$pid")
		redis-benchmark -h 127.0.0.1 -p "$p" -c 50 -P 32 -n "$requests" -r 1000000 --csv "$@" \
			>"$tmp/rb.out" 2>"$tmp/rb.err" || die "redis-benchmark against $t failed: $(tail -2 "$tmp/rb.err")"
		c1=$(cpu_of "$pid")
		rps=$(awk -F'","' 'NR == 2 { print $2 }' "$tmp/rb.out")
		if [ "$t" != redis ]; then
			n1=$(rated "$p")
			[ $((n1 - n0)) -eq "$requests" ] || die "$t: $requests sent, $((n1 - n0)) rated"
		fi
		us=$(awk -v a="$c0" -v b="$c1" -v t="$tck" -v n="$requests" 'BEGIN { printf("%.3f", (b - a) / t * 1e6 / n) }')
		say "run $r $t: $us us/request of server CPU ($rps req/s)"
		echo "$t $us $rps" >>"$tmp/results"
	done
	r=$((r + 1))
done

median() { # tag column
	awk -v t="$1" -v c="$2" '$1 == t { v[++n] = $c + 0 }
	END {
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
		print v[int((n + 1) / 2)]
	}' "$tmp/results"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf("%.2f", b > 0 ? a / b : 0) }'; }

echo
echo "redis-benchmark -c 50 -P 32 -n $requests -r 1000000; $accounts accounts; --workers $workers; runs: $runs (median)"
if [ -n "$base" ]; then
	printf '%-22s %12s %12s %10s %10s\n' "server" "us/request" "req/s" "x INCRBY" "x base"
else
	printf '%-22s %12s %12s %10s\n' "server" "us/request" "req/s" "x INCRBY"
fi
ri=$(median redis 2)
printf '%-22s %12s %12.0f %10s\n' "redis-server INCRBY" "$ri" "$(median redis 3)" "1.00"
for m in $modes; do
	v=$(median "$m" 2)
	if [ -n "$base" ]; then
		b=$(median "base_$m" 2)
		printf '%-22s %12s %12.0f %10s %10s\n' "tollgated $m" "$v" "$(median "$m" 3)" "$(ratio "$v" "$ri")" "$(ratio "$v" "$b")"
		printf '%-22s %12s %12.0f %10s\n' "  base $m" "$b" "$(median "base_$m" 3)" "$(ratio "$b" "$ri")"
	else
		printf '%-22s %12s %12.0f %10s\n' "tollgated $m" "$v" "$(median "$m" 3)" "$(ratio "$v" "$ri")"
	fi
done
echo "us/request: the server's CPU time (user + system, all threads, /proc/PID/stat) per request."
echo "x INCRBY: over redis-server's.  x base: over the base tree's, run side by side."
