#!/bin/sh
# bench/compare-load.sh - tollgated against Redis with tollbench's own load
# generator: the same `tollbench load` flags against each of
#
#   tollgated     CDR <acct> 14155551212 125 <unique call id>
#   redis + Lua   EVALSHA <bench/baseline.lua> 0 <acct> 14155551212 125 <unique call id>
#   redis bare    INCRBY bal:<acct> 125
#
# and prints the three throughputs, their latencies and the ratios.
#
#   bench/compare-load.sh [options] [-- TOLLBENCH-LOAD-FLAGS...]
#
# Options:
#   --workers N        tollgated --workers (default 1: Redis runs its commands on one thread)
#   --runs N           run each N times, interleaved, and report the median (default 3)
#   --accounts N       accounts 0..N-1 on both servers (default 1000000)
#   --rates FILE       rate plans (default tools/demo/rates.csv)
#   --durability M   tollgated --durability: durable (default), relaxed or off; the
#                      journal goes to the temporary directory
#   --tollgated PATH   (default $TOLLGATED, else build/engine/tollgated)
#   --tollbench PATH   (default $TOLLBENCH, else build/bench/tollbench)
#   --redis-port P     (default 6479)
#   --tg-port P        (default 6480)
#   --ids-max N        tollgated --ids-max: the CDR ids it remembers (50 bytes each); once
#                      the runs have sent more CDRs than that, CDRs get FULL errors.
#                      Default: enough for every run at 2.5M requests/s (-d) or for
#                      every -n, at least 4000000
#   --keep             keep the temporary directory (logs, reports) and print its path
#   -- FLAGS           tollbench load flags for all three, replacing the default
#                      -c 50 -P 32 -d 5 (--mix must stay cdr: Redis has no CALL.AUTH)
#
# It starts a private redis-server (no persistence) and a private tollgated,
# loads both with the same accounts through bench/gen-accounts.sh and
# bench/load-baseline.sh, and stops both, and removes the shared-memory
# segment and the temporary directory, on exit (also on Ctrl-C).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

durability=durable
workers=1
runs=3
accounts=1000000
rates="$root/tools/demo/rates.csv"
tollgated=${TOLLGATED:-"$root/build/engine/tollgated"}
tollbench=${TOLLBENCH:-"$root/build/bench/tollbench"}
rport=6479
tport=6480
ids_max=
keep=no
lflags="-c 50 -P 32 -d 5"

usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "compare-load: $*" >&2; exit 1; }
say() { echo "compare-load: $*" >&2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--durability) durability=${2:?}; shift 2 ;;
	--workers) workers=${2:?}; shift 2 ;;
	--runs) runs=${2:?}; shift 2 ;;
	--accounts) accounts=${2:?}; shift 2 ;;
	--rates) rates=${2:?}; shift 2 ;;
	--tollgated) tollgated=${2:?}; shift 2 ;;
	--tollbench) tollbench=${2:?}; shift 2 ;;
	--redis-port) rport=${2:?}; shift 2 ;;
	--tg-port) tport=${2:?}; shift 2 ;;
	--ids-max) ids_max=${2:?}; shift 2 ;;
	--keep) keep=yes; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; lflags="$*"; break ;;
	*) die "unknown option $1 (try --help)" ;;
	esac
done
for v in "$workers" "$runs" "$accounts" "$rport" "$tport" "${ids_max:-0}"; do
	case "$v" in '' | *[!0-9]*) die "not a number: '$v'" ;; esac
done
[ "$runs" -ge 1 ] || die "--runs must be at least 1"
case " $lflags " in *" --target "* | *" -p "* | *" --accounts "*)
	die "the flags may not set --target, -p or --accounts: this script does" ;;
esac
# The CDRs all runs send at most: -n each, or -d seconds at 2.5M/s (more
# than two cores manage); k and M suffixes as tollbench takes them.
if [ -z "$ids_max" ]; then
	ids_max=$(echo "$lflags" | awk -v runs="$runs" '{
		n = ""; d = 10
		for (i = 1; i < NF; i++) {
			if ($i == "-n") n = $(i + 1)
			if ($i == "-d") d = $(i + 1)
		}
		if (n != "") {
			m = 1
			if (n ~ /[kK]$/) m = 1000
			if (n ~ /[mM]$/) m = 1000000
			per = (n + 0) * m
		} else per = d * 2500000
		v = runs * per * 1.1 + 100000
		if (v < 4000000) v = 4000000
		printf("%.0f", v)
	}')
fi
[ -x "$tollgated" ] || die "no tollgated at $tollgated (meson setup build && ninja -C build, or --tollgated PATH)"
[ -x "$tollbench" ] || die "no tollbench at $tollbench (or --tollbench PATH)"
[ -r "$rates" ] || die "cannot read $rates"
for t in redis-server redis-cli awk; do
	command -v $t >/dev/null || die "$t not found"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/compare-load.XXXXXX")
shm="tgload-$$"
pids=
cleanup() {
	trap - EXIT INT TERM HUP
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do
		i=0
		while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
		kill -9 "$p" 2>/dev/null || true
	done
	rm -f "/dev/shm/$shm"
	if [ "$keep" = yes ]; then say "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

port_free() { # port what
	if redis-cli -p "$1" PING >/dev/null 2>&1; then
		die "port $1 (for $2) is already in use: pick another with --redis-port / --tg-port"
	fi
}
wait_ping() { # port pid log what
	tries=0
	while [ "$(redis-cli -p "$1" PING 2>/dev/null)" != PONG ]; do
		kill -0 "$2" 2>/dev/null || { cat "$3" >&2; die "$4 exited during start-up (log above)"; }
		tries=$((tries + 1))
		[ $tries -lt 1200 ] || die "$4 not answering on port $1 after 120 s (log: $3)"
		sleep 0.1
	done
}

rver=$(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')
ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
say "tollbench load flags: $lflags; $ncpu CPUs; redis-server $rver; tollgated --workers $workers"

say "generating $accounts accounts"
"$here/gen-accounts.sh" -n "$accounts" "$tmp/accounts.csv"

say "starting redis-server on port $rport"
port_free "$rport" redis-server
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
	--dir "$tmp" --logfile "$tmp/redis.log" --daemonize no >/dev/null 2>&1 &
rpid=$!
pids="$pids $rpid"
wait_ping "$rport" "$rpid" "$tmp/redis.log" redis-server
sha=$("$here/load-baseline.sh" --flush -n "$accounts" --rates "$rates" \
	--script "$here/baseline.lua" 127.0.0.1 "$rport")

say "starting tollgated on port $tport (shm /$shm, --ids-max $ids_max)"
port_free "$tport" tollgated
"$tollgated" --port "$tport" --bind 127.0.0.1 --workers "$workers" --shm-name "/$shm" \
	--shm-reuse no --capacity $((accounts + accounts / 10 + 1000)) \
	--data-dir "$tmp/data" --durability "$durability" \
	--accounts "$tmp/accounts.csv" --rates "$rates" --ids-max "$ids_max" \
	>"$tmp/tollgated.log" 2>&1 &
tpid=$!
pids="$pids $tpid"
wait_ping "$tport" "$tpid" "$tmp/tollgated.log" tollgated

# A number from a JSON report: a top-level key or a key of latency_us.
num() { sed -n "s/.*\"$1\": \([0-9][0-9.]*\).*/\1/p" "$2" | head -1; }

# run TAG ARGS...: one tollbench load run; appends "tag rps p50 p99 errors" to results
: >"$tmp/results"
run() {
	tag=$1
	shift
	out="$tmp/$tag.$r.json"
	# shellcheck disable=SC2086
	if ! "$tollbench" load $lflags --accounts "$accounts" -q --json "$@" >"$out" 2>"$tmp/$tag.$r.err"; then
		say "WARNING: $tag run $r: tollbench load failed:"
		sed 's/^/    /' "$tmp/$tag.$r.err" >&2
	fi
	rps=$(num throughput "$out")
	[ -n "$rps" ] || { echo "$tag 0 - - -" >>"$tmp/results"; return 0; }
	errs=$(num errors "$out")
	[ "$errs" = 0 ] || say "WARNING: $tag run $r: $errs error replies: $(grep errors_by_code "$out")"
	echo "$tag $rps $(num p50 "$out") $(num p99 "$out") $errs" >>"$tmp/results"
	say "  $tag: $rps req/s, p50 $(num p50 "$out") us, p99 $(num p99 "$out") us, errors $errs"
}

r=1
while [ "$r" -le "$runs" ]; do
	say "run $r of $runs"
	run tollgated -p "$tport"
	run lua -p "$rport" --target redis --lua-sha "$sha"
	run incrby -p "$rport" --target incrby
	r=$((r + 1))
done

median() { # tag column
	awk -v t="$1" -v c="$2" '$1 == t && $c != "-" { v[++n] = $c + 0 }
	END {
		if (n == 0) { print "-"; exit }
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
		print v[int((n + 1) / 2)]
	}' "$tmp/results"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf("%.2f", a / b); else print "-" }'; }

tg=$(median tollgated 2)
lua=$(median lua 2)
incr=$(median incrby 2)
echo
echo "tollbench load $lflags --accounts $accounts   (median of $runs runs; $ncpu CPUs, client and servers on the same machine)"
printf '%-34s %11s %10s %10s %7s\n' system "req/s" "p50 us" "p99 us" errors
printf '%-34s %11.0f %10s %10s %7s\n' "tollgated CDR (--workers $workers)" "$tg" "$(median tollgated 3)" "$(median tollgated 4)" "$(median tollgated 5)"
printf '%-34s %11.0f %10s %10s %7s\n' "redis $rver + Lua (baseline.lua)" "$lua" "$(median lua 3)" "$(median lua 4)" "$(median lua 5)"
printf '%-34s %11.0f %10s %10s %7s\n' "redis $rver INCRBY" "$incr" "$(median incrby 3)" "$(median incrby 4)" "$(median incrby 5)"
echo "tollgated / redis + Lua: $(ratio "$tg" "$lua")x    tollgated / redis INCRBY: $(ratio "$tg" "$incr")x"
