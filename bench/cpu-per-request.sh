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
#   redis-benchmark -c 50 -P 32 -n REQUESTS -r ACCOUNTS COMMAND
#
# and the figure is the server's CPU time (utime + stime of every thread,
# /proc/PID/stat) over the run divided by the requests.  That drifts much
# less than req/s when other processes share the CPUs.  Each tollgated run
# is checked: every request was rated (cdr + replays counters).
#
# Options:
#   --accounts N   accounts loaded (default 1000000), ids 0..N-1; the random
#                  keys are drawn from the same range (-r N), for every server
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
#   --together     with BASE-BUILD-DIR: load this tree's tollgated and the base
#                  one at the same time (two redis-benchmarks at once), so that
#                  whatever else runs on the machine falls on both alike; each
#                  server's CPU per request is still its own
#   --steady N     steady state: tollgated keeps its default ids-max (4M)
#                  and gets N CDRs of its own (other call ids, not counted)
#                  before the runs, so that its id window is full, ids move
#                  to disk as they do on a server that has run for days, and
#                  the snapshot thread's tables have stopped growing.  Without
#                  it ids-max is set above what the runs send, and the runs
#                  measure a server filling a window that never moves ids
#                  (the figure of the hot-path issue's command)
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
together=no
snap="--snapshot-records 0 --snapshot-interval 0"
steady=0

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
	--together) together=yes; shift ;;
	--snapshots) snap=; shift ;;
	--steady) steady=${2:?}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	-*) die "unknown option $1 (try --help)" ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] && [ $# -le 2 ] || { usage >&2; exit 2; }
for v in "$accounts" "$requests" "$runs" "$workers" "$port" "$steady"; do
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
[ "$steady" -eq 0 ] || ids_max=4000000 # the default

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
# utime and stime of every thread, in clock ticks: "user system"
cpu_of() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
rated() { redis-cli -p "$1" INFO | tr -d '\r' | awk -F: '$1 == "cdr" || $1 == "replays" { n += $2 } END { print n + 0 }'; }

: >"$tmp/results"
# start_rb TAG: redis-benchmark against TAG's server, in the background
start_rb() {
	eval "pid=\$pid_$1 p=\$port_$1"
	if [ "$1" = redis ]; then
		set -- "$1" INCRBY __rand_int__ 1
	else
		set -- "$1" CDR __rand_int__ 14155551212 125 c__rand_int__-__rand_int__-__rand_int__
		eval "n0_$1=$(rated "$p")"
	fi
	eval "c0_$1='$(cpu_of "$pid")'"
	st=$1
	shift
	redis-benchmark -h 127.0.0.1 -p "$p" -c 50 -P 32 -n "$requests" -r "$accounts" --csv "$@" \
		>"$tmp/rb-$st.out" 2>"$tmp/rb-$st.err" &
	eval "rb_$st=$!"
}
# end_rb TAG: wait for it, check, record "TAG us/request req/s"
end_rb() {
	et=$1
	eval "pid=\$pid_$et p=\$port_$et b=\$rb_$et c0=\$c0_$et"
	wait "$b" || die "redis-benchmark against $et failed: $(tail -2 "$tmp/rb-$et.err")"
	c1=$(cpu_of "$pid")
	rps=$(awk -F'","' 'NR == 2 { print $2 }' "$tmp/rb-$et.out")
	if [ "$et" != redis ]; then
		eval "n0=\$n0_$et"
		n1=$(rated "$p")
		[ $((n1 - n0)) -eq "$requests" ] || die "$et: $requests sent, $((n1 - n0)) rated"
	fi
	set -- $c0 $c1
	us=$(awk -v a="$(($1 + $2))" -v b="$(($3 + $4))" -v t="$tck" -v n="$requests" 'BEGIN { printf("%.3f", (b - a) / t * 1e6 / n) }')
	sys=$(awk -v a="$2" -v b="$4" -v t="$tck" -v n="$requests" 'BEGIN { printf("%.3f", (b - a) / t * 1e6 / n) }')
	say "run $r $et: $us us/request of server CPU, $sys of it in the kernel ($rps req/s)"
	echo "$et $us $rps $sys" >>"$tmp/results"
}

# --steady: each tollgated gets its warm-up, both trees' at the same time
if [ "$steady" -gt 0 ]; then
	say "steady state: $steady CDRs to each tollgated first (ids-max $ids_max)"
	warm=
	for tag in $tags; do
		[ "$tag" != redis ] || continue
		eval "p=\$port_$tag"
		redis-benchmark -h 127.0.0.1 -p "$p" -c 50 -P 32 -n "$steady" -r "$accounts" -q \
			CDR __rand_int__ 14155551212 125 w__rand_int__-__rand_int__-__rand_int__ \
			>"$tmp/warm-$tag.out" 2>&1 &
		warm="$warm $!"
	done
	for w in $warm; do wait "$w" || die "the warm-up failed: $(tail -c 300 "$tmp"/warm-*.out)"; done
fi

: >"$tmp/results"
: >"$tmp/results.all"
: >"$tmp/pairs"
r=1
while [ "$r" -le "$runs" ]; do
	for tag in $tags; do
		case "$tag" in base_*) [ "$together" = no ] || continue ;; esac
		start_rb "$tag"
		if [ "$together" = yes ] && [ "$tag" != redis ]; then
			start_rb "base_$tag"
			end_rb "$tag"
			end_rb "base_$tag"
		else
			end_rb "$tag"
		fi
	done
	# this run's pairs, side by side
	for m in $modes; do
		[ -n "$base" ] || continue
		awk -v m="$m" '$1 == m { a = $2 } $1 == "base_" m { b = $2 } END { if (b > 0) printf("pair_%s %.3f\n", m, a / b) }' \
			"$tmp/results" >>"$tmp/pairs"
	done
	cat "$tmp/results" >>"$tmp/results.all"
	: >"$tmp/results"
	r=$((r + 1))
done
mv "$tmp/results.all" "$tmp/results"
cat "$tmp/pairs" >>"$tmp/results"

median() { # tag column
	awk -v t="$1" -v c="$2" '$1 == t { v[++n] = $c + 0 }
	END {
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
		print v[int((n + 1) / 2)]
	}' "$tmp/results"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf("%.2f", b > 0 ? a / b : 0) }'; }

echo
echo "redis-benchmark -c 50 -P 32 -n $requests -r $accounts; $accounts accounts; --workers $workers; runs: $runs (median)"
[ "$steady" -eq 0 ] || echo "steady state: ids-max $ids_max, $steady CDRs sent to each tollgated before the runs"
if [ -n "$base" ]; then
	printf '%-22s %12s %10s %12s %10s %10s\n' "server" "us/request" "kernel" "req/s" "x INCRBY" "x base"
else
	printf '%-22s %12s %10s %12s %10s\n' "server" "us/request" "kernel" "req/s" "x INCRBY"
fi
ri=$(median redis 2)
printf '%-22s %12s %10s %12.0f %10s\n' "redis-server INCRBY" "$ri" "$(median redis 4)" "$(median redis 3)" "1.00"
for m in $modes; do
	v=$(median "$m" 2)
	if [ -n "$base" ]; then
		b=$(median "base_$m" 2)
		printf '%-22s %12s %10s %12.0f %10s %10s\n' "tollgated $m" "$v" "$(median "$m" 4)" "$(median "$m" 3)" "$(ratio "$v" "$ri")" "$(median "pair_$m" 2)"
		printf '%-22s %12s %10s %12.0f %10s\n' "  base $m" "$b" "$(median "base_$m" 4)" "$(median "base_$m" 3)" "$(ratio "$b" "$ri")"
	else
		printf '%-22s %12s %10s %12.0f %10s\n' "tollgated $m" "$v" "$(median "$m" 4)" "$(median "$m" 3)" "$(ratio "$v" "$ri")"
	fi
done
echo "us/request: the server's CPU time (user + system, all threads, /proc/PID/stat) per request;"
echo "kernel: the system part of it (the socket reads and writes, the journal's writes)."
echo "x INCRBY: over redis-server's (medians).  x base: the median of each run's ratio to the base"
echo "tree's, measured side by side (--together: at the same time)."
[ "$together" = no ] || echo "--together: both tollgated servers were loaded at once, each with its own client."

