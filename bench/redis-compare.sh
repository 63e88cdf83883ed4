#!/bin/sh
# bench/redis-compare.sh - tollgated against Redis, side by side, with the
# same client (redis-benchmark) and the same flags.
#
#   bench/redis-compare.sh [options] [-- REDIS-BENCHMARK-FLAGS...]
#
# It starts a private redis-server (no persistence) and one tollgated per
# --workers value (private ports and shared-memory names), gives both the
# same accounts (ids 0..N-1, plan basic, a large balance, auto-refill on
# with a threshold) and the same rate plans, checks that Redis + Lua and
# tollgated rate the same call to the same charge, and then runs:
#
#   tollgated     CDR __rand_int__ 14155551212 125 c__rand_int____rand_int____rand_int__
#   redis + Lua   EVALSHA <baseline.lua> 0 __rand_int__ 14155551212 125 c__rand_int____rand_int____rand_int__
#   redis bare    INCRBY bal:__rand_int__ 125
#
# The call id has three 12-digit random parts, not two: redis-benchmark
# stops at the first error reply, and with two parts (10^12 ids) two
# requests of a 2M run share a call id with a probability of about 0.9,
# which is a -CONFLICT on both systems (same id, another account).
#
# After every run it checks the servers' own counters: tollgated rated every
# request (cdr + replays) and charged exactly count x the checked charge;
# Redis answered no error and baseline.lua did its two HINCRBYs per request.
# Besides req/s and redis-benchmark's p50/p99 it reports the CPU time per
# request of the server and of redis-benchmark (/proc/PID/stat, `times`),
# which other load on the machine disturbs much less than req/s.
#
# Options:
#   --workers LIST      tollgated --workers values, comma-separated (default 1,2)
#   --runs N            run each benchmark N times, report the median (default 1)
#   --latency           also the latency mode: -P 1, -c chosen so tollgated runs
#                       at about half of its measured maximum at -P 1; p50/p99
#   --latency-n N       requests per latency run (default 300000)
#   --accounts N        accounts (default 1000000; must cover -r)
#   --rates FILE        rate plans (default tools/demo/rates.csv)
#   --durability M   tollgated --durability: durable (default), relaxed or off; the
#                      journal goes to the temporary directory
#   --tollgated PATH    the binary (default $TOLLGATED, else build/engine/tollgated)
#   --redis-port P      (default 6479)
#   --tg-port P         first tollgated port; the i-th --workers value uses P+i-1 (default 6480)
#   --ids-max N         tollgated --ids-max (default: twice the CDRs the run sends, >= 4M)
#   --pin               pin the servers to the last CPU and redis-benchmark to CPU 0
#                       (tollgated with more than one worker is left unpinned)
#   --keep              keep the temporary directory (logs, CSVs) and print its path
#   -- FLAGS            redis-benchmark flags for all three, replacing the default
#                       -c 50 -P 32 -r 1000000 -n 2000000 -q
#
# Everything it starts is stopped, and the shared-memory segments and the
# temporary directory are removed, on exit (also on Ctrl-C).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

durability=durable
workers=1,2
runs=1
latency=no
latency_n=300000
accounts=1000000
rates="$root/tools/demo/rates.csv"
tollgated=${TOLLGATED:-"$root/build/engine/tollgated"}
rport=6479
tport=6480
ids_max=
pin=no
keep=no
bflags="-c 50 -P 32 -r 1000000 -n 2000000 -q"

DEST=14155551212
DUR=125
CALLID=c__rand_int____rand_int____rand_int__

usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "redis-compare: $*" >&2; exit 1; }
say() { echo "redis-compare: $*" >&2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--durability) durability=${2:?}; shift 2 ;;
	--workers) workers=${2:?}; shift 2 ;;
	--runs) runs=${2:?}; shift 2 ;;
	--latency) latency=yes; shift ;;
	--latency-n) latency_n=${2:?}; shift 2 ;;
	--accounts) accounts=${2:?}; shift 2 ;;
	--rates) rates=${2:?}; shift 2 ;;
	--tollgated) tollgated=${2:?}; shift 2 ;;
	--redis-port) rport=${2:?}; shift 2 ;;
	--tg-port) tport=${2:?}; shift 2 ;;
	--ids-max) ids_max=${2:?}; shift 2 ;;
	--pin) pin=yes; shift ;;
	--keep) keep=yes; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; bflags="$*"; break ;;
	*) die "unknown option $1 (try --help)" ;;
	esac
done

for v in "$runs" "$latency_n" "$accounts" "$rport" "$tport"; do
	case "$v" in '' | *[!0-9]*) die "not a number: '$v'" ;; esac
done
[ "$runs" -ge 1 ] || die "--runs must be at least 1"
workers=$(echo "$workers" | tr ',' ' ')
for w in $workers; do
	case "$w" in '' | *[!0-9]* | 0) die "--workers: positive integers, comma-separated" ;; esac
done
[ -x "$tollgated" ] || die "no tollgated at $tollgated (build it: meson setup build && ninja -C build, or --tollgated PATH)"
[ -r "$rates" ] || die "cannot read $rates"
for t in redis-server redis-cli redis-benchmark awk; do
	command -v $t >/dev/null || die "$t not found"
done
if [ "$pin" = yes ]; then
	command -v taskset >/dev/null || die "--pin needs taskset"
fi

# The value of one redis-benchmark flag in the flags (the last one wins, as in redis-benchmark).
flag() {
	echo "$bflags" | awk -v f="$1" -v d="$2" '{
		v = d
		for (i = 1; i < NF; i++) if ($i == f) v = $(i + 1)
		print v
	}'
}
bn=$(flag -n 100000)
br=$(flag -r 0)
bc=$(flag -c 50)
[ "$br" -gt 0 ] || die "the benchmark flags need -r (random account ids): $bflags"
[ "$br" -le "$accounts" ] || die "-r $br is more than --accounts $accounts: requests would hit missing accounts"

if [ -z "$ids_max" ]; then
	need=$((runs * bn + 10))
	[ "$latency" = yes ] && need=$((need + 2 * latency_n + 500000))
	ids_max=$((2 * need))
	[ "$ids_max" -ge 4000000 ] || ids_max=4000000
fi
capacity=$((accounts + accounts / 10 + 1000))

ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
last_cpu=$((ncpu - 1))
srv_pin() { if [ "$pin" = yes ]; then echo "taskset -c $last_cpu"; fi; }
cli_pin() { if [ "$pin" = yes ]; then echo "taskset -c 0"; fi; }

# ---- clean-up ----
tmp=$(mktemp -d "${TMPDIR:-/tmp}/redis-compare.XXXXXX")
pids=
shms=
bpid=
cleanup() {
	trap - EXIT INT TERM HUP
	[ -z "$bpid" ] || kill "$bpid" 2>/dev/null || true
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do
		i=0
		while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
		kill -9 "$p" 2>/dev/null || true
	done
	for s in $shms; do rm -f "/dev/shm/$s"; done
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
		if ! kill -0 "$2" 2>/dev/null; then
			cat "$3" >&2
			die "$4 exited during start-up (log above)"
		fi
		tries=$((tries + 1))
		[ $tries -lt 1200 ] || die "$4 not answering on port $1 after 120 s (log: $3)"
		sleep 0.1
	done
	kill -0 "$2" 2>/dev/null || die "$4 exited (log: $3)"
}

# Is anything else using the CPUs?  Other load makes every figure here noise.
busy_check() {
	s1=$(head -1 /proc/stat); sleep 1; s2=$(head -1 /proc/stat)
	idle=$(printf '%s\n%s\n' "$s1" "$s2" | awk '
		{ t = 0; for (i = 2; i <= NF; i++) t += $i; tot[NR] = t; id[NR] = $5 + $6 }
		END { d = tot[2] - tot[1]; printf("%d", d > 0 ? 100 * (id[2] - id[1]) / d : 100) }')
	if [ "$idle" -lt 90 ]; then
		say "WARNING: the machine is only ${idle}% idle before the run: other processes compete for the CPUs, figures will be low and noisy:"
		ps -eo pcpu,pid,args --sort=-pcpu 2>/dev/null | sed -n '2,5p' | cut -c1-110 | sed 's/^/    /' >&2
	fi
	echo "$idle"
}

# ---- start ----
rver=$(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')
say "tollgated $tollgated; redis-server $rver; $ncpu CPUs; pin=$pin"
say "redis-benchmark flags: $bflags"
idle0=$(busy_check)

say "generating $accounts accounts"
"$here/gen-accounts.sh" -n "$accounts" "$tmp/accounts.csv"

say "starting redis-server on port $rport"
port_free "$rport" redis-server
$(srv_pin) redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
	--dir "$tmp" --logfile "$tmp/redis.log" --daemonize no >/dev/null 2>&1 &
rpid=$!
pids="$pids $rpid"
wait_ping "$rport" "$rpid" "$tmp/redis.log" "redis-server"
sha=$("$here/load-baseline.sh" --flush -n "$accounts" --rates "$rates" \
	--script "$here/baseline.lua" 127.0.0.1 "$rport")

tg_ports=
k=0
for w in $workers; do
	p=$((tport + k))
	shm="tgcmp-$$-w$w-$k"
	rm -f "/dev/shm/$shm"
	shms="$shms $shm"
	pinned=
	[ "$w" -eq 1 ] && pinned=$(srv_pin)
	say "starting tollgated --workers $w on port $p (shm /$shm, --ids-max $ids_max)"
	port_free "$p" tollgated
	$pinned "$tollgated" --port "$p" --bind 127.0.0.1 --workers "$w" --shm-name "/$shm" \
		--shm-reuse no --capacity "$capacity" --accounts "$tmp/accounts.csv" --rates "$rates" \
		--data-dir "$tmp/data-$p" --durability "$durability" \
		--ids-max "$ids_max" >"$tmp/tollgated-$p.log" 2>&1 &
	tpid=$!
	pids="$pids $tpid"
	eval "tpid_$p=$tpid"
	wait_ping "$p" "$tpid" "$tmp/tollgated-$p.log" "tollgated --workers $w"
	eval "workers_$p=$w"
	tg_ports="$tg_ports $p"
	k=$((k + 1))
done

# ---- check: the same charge on both, a replay charges nothing ----
to_micro() { # decimal string -> integer micro-units
	echo "$1" | awk '{
		s = $0; neg = ""
		if (substr(s, 1, 1) == "-") { neg = "-"; s = substr(s, 2) }
		p = index(s, "."); if (p) { w = substr(s, 1, p - 1); f = substr(s, p + 1) } else { w = s; f = "" }
		while (length(f) < 6) f = f "0"
		r = w f; sub(/^0+/, "", r); if (r == "") r = "0"
		print (r == "0" ? "" : neg) r
	}'
}
field() { awk -v k="$1" 'prev == k { print; exit } { prev = $0 }'; }

ACCT=000000000042 # as redis-benchmark sends account 42
vid="verify-$$"
first_tg=${tg_ports# }
first_tg=${first_tg%% *}
expect=$(redis-cli -p "$first_tg" RATE basic "$DEST" "$DUR" | field charge)
say "check: CDR $ACCT $DEST $DUR $vid (tollgated's RATE quote: $expect)"
check_one() { # name cdr-cmd... ; uses $bal_cmd, which prints the balance in micro-units
	name=$1; shift
	b0=$(eval "$bal_cmd")
	c1=$("$@" "$ACCT" "$DEST" "$DUR" "$vid" 2>&1)
	c2=$("$@" "$ACCT" "$DEST" "$DUR" "$vid" 2>&1)
	c3=$("$@" "$ACCT" "$DEST" $((DUR + 1)) "$vid" 2>&1)
	b1=$(eval "$bal_cmd")
	debited=$((b0 - b1))
	say "  $name: charge $c1, replay $c2, other duration -> $(echo "$c3" | cut -d' ' -f1), debited $debited micro-units"
	[ "$c1" = "$expect" ] || die "$name: charge '$c1', expected '$expect'"
	[ "$c2" = "$c1" ] || die "$name: replay answered '$c2', not the first charge '$c1'"
	case "$c3" in CONFLICT*) ;; *) die "$name: same id with another duration answered '$c3', not CONFLICT" ;; esac
	[ "$debited" -eq "$(to_micro "$c1")" ] || die "$name: balance moved by $debited micro-units, the charge is $(to_micro "$c1"): replay charged twice?"
}
for p in $tg_ports; do
	bal_cmd="to_micro \$(redis-cli -p $p ACCT.GET 42 | field balance)"
	check_one "tollgated:$p" redis-cli -p "$p" CDR
done
bal_cmd="redis-cli -p $rport HGET acct:42 balance"
check_one "redis+lua" redis-cli -p "$rport" EVALSHA "$sha" 0
say "check passed: tollgated and Redis + Lua agree"

# ---- benchmark ----
# CPU time in clock ticks of a server process, all its threads
tck=$(getconf CLK_TCK 2>/dev/null || echo 100)
proc_cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU seconds of the waited-for children of this shell (redis-benchmark); `times`
# must run in this shell, not in a $(...) subshell
child_cpu() {
	times >"$tmp/times"
	sed -n 2p "$tmp/times" | awk '{
		t = 0
		for (i = 1; i <= 2; i++) { split($i, a, "m"); sub(/s$/, "", a[2]); t += a[1] * 60 + a[2] }
		printf("%.6f", t)
	}'
}
# Counters read around every run, as "a b": tollgated: CDRs rated (cdr +
# replays) and money charged in micro-units; redis: error replies and HINCRBY
# calls (two per rated CDR in baseline.lua: balance and usage).
stats() { # kind port
	if [ "$1" = tg ]; then
		redis-cli -p "$2" INFO | tr -d '\r' | awk -F: '
			$1 == "cdr" || $1 == "replays" { n += $2 }
			$1 == "money_charged" { m = $2 }
			END { print n + 0, m }' | { read -r n m; echo "$n $(to_micro "$m")"; }
	else
		redis-cli -p "$2" INFO all | tr -d '\r' | awk -F'[:=,]' '
			$1 == "total_error_replies" { e = $2 }
			$1 == "cmdstat_hincrby" { h = $3 }
			END { print e + 0, h + 0 }'
	fi
}

# run_rb TAG PORT EXTRA-FLAGS -- COMMAND...: one redis-benchmark run; appends
# "tag rps p50_ms p99_ms srv_us cli_us" to $tmp/results ("tag FAILED ..." when
# redis-benchmark fails, with the symptom on stderr).
run_rb() {
	tag=$1 port=$2 extra=$3
	shift 4
	if [ "$port" = "$rport" ]; then kind=redis; else kind=tg; fi
	case "$kind" in
	tg) eval "spid=\$tpid_$port" ;;
	*) spid=$rpid ;;
	esac
	before=$(stats "$kind" "$port")
	s0=$(proc_cpu "$spid")
	child_cpu >"$tmp/c0"
	# in the background and waited for, so that a signal to this script is
	# handled at once (the trap kills the benchmark too)
	# shellcheck disable=SC2086
	$(cli_pin) redis-benchmark -h 127.0.0.1 -p "$port" $bflags $extra --csv "$@" \
		>"$tmp/rb.out" 2>"$tmp/rb.err" &
	bpid=$!
	rb_rc=0
	wait "$bpid" || rb_rc=$?
	bpid=
	if [ "$rb_rc" -ne 0 ]; then
		say "FAILED: redis-benchmark against $tag (port $port) exited non-zero:"
		tail -5 "$tmp/rb.err" | tr '\r' '\n' | grep -v '^ *$' | tail -3 | sed 's/^/    /' >&2
		case "$kind" in tg)
			redis-cli -p "$port" INFO 2>&1 | tr -d '\r' |
				grep -E '^(cdr|replays|conflicts|window_full|command_errors|protocol_errors|ids_remembered):' |
				tr '\n' ' ' | sed 's/^/    tollgated INFO: /' >&2
			echo >&2
			tp=
			eval "tp=\$tpid_$port"
			kill -0 "$tp" 2>/dev/null || say "    tollgated on port $port is GONE (pid $tp exited)"
			tail -5 "$tmp/tollgated-$port.log" | sed 's/^/    log: /' >&2 ;;
		esac
		echo "$tag FAILED - - - -" >>"$tmp/results"
		return 0
	fi
	s1=$(proc_cpu "$spid")
	child_cpu >"$tmp/c1"
	line=$(grep -v '^"test"' "$tmp/rb.out" | tail -1)
	rps=$(echo "$line" | awk -F'","' '{print $2}')
	p50=$(echo "$line" | awk -F'","' '{print $5}')
	p99=$(echo "$line" | awk -F'","' '{print $7}')
	[ -n "$rps" ] || die "no result from redis-benchmark against $tag: $(cat "$tmp/rb.out" "$tmp/rb.err" | tail -3)"
	sent=$(echo "$bflags $extra" | awk '{ v = 100000; for (i = 1; i < NF; i++) if ($i == "-n") v = $(i + 1); print v }')
	after=$(stats "$kind" "$port")
	# shellcheck disable=SC2086 # four numbers, split on purpose
	set -- $before $after
	if [ "$kind" = tg ]; then
		# every request rated, and the money moved is exactly count x the checked charge
		[ $(($3 - $1)) -eq "$sent" ] || say "WARNING: $tag: $sent requests sent, $(($3 - $1)) rated (cdr + replays)"
		[ $(($4 - $2)) -eq $((($3 - $1) * $(to_micro "$expect"))) ] ||
			say "WARNING: $tag: $(($4 - $2)) micro-units charged for $(($3 - $1)) CDRs of $expect each"
	else
		[ "$3" -eq "$1" ] || say "WARNING: $tag: $(($3 - $1)) error replies"
		case "$tag" in *lua*)
			[ $(($4 - $2)) -eq $((2 * sent)) ] ||
				say "WARNING: $tag: $(($4 - $2)) HINCRBY calls for $sent requests, expected 2 each" ;;
		esac
	fi
	srv_us=$(awk -v a="$s0" -v b="$s1" -v t="$tck" -v n="$sent" 'BEGIN { printf("%.2f", (b - a) / t * 1e6 / n) }')
	cli_us=$(awk -v a="$(cat "$tmp/c0")" -v b="$(cat "$tmp/c1")" -v n="$sent" 'BEGIN { printf("%.2f", (b - a) * 1e6 / n) }')
	echo "$tag $rps $p50 $p99 $srv_us $cli_us" >>"$tmp/results"
	say "  $tag: $rps req/s (p50 $p50 ms, p99 $p99 ms; CPU per request: server $srv_us us, redis-benchmark $cli_us us)"
}

: >"$tmp/results"
r=1
while [ "$r" -le "$runs" ]; do
	say "run $r of $runs"
	for p in $tg_ports; do
		eval "w=\$workers_$p"
		run_rb "tg$w" "$p" "" -- CDR __rand_int__ "$DEST" "$DUR" "$CALLID"
	done
	run_rb lua "$rport" "" -- EVALSHA "$sha" 0 __rand_int__ "$DEST" "$DUR" "$CALLID"
	run_rb incrby "$rport" "" -- INCRBY bal:__rand_int__ "$DUR"
	r=$((r + 1))
done

# median of column $2 over the rows of one tag (FAILED rows count as 0)
median() { # tag column
	awk -v t="$1" -v c="$2" '$1 == t { v[++n] = ($c == "FAILED" || $c == "-") ? 0 : $c + 0 }
	END {
		if (n == 0) { print "-"; exit }
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
		print v[int((n + 1) / 2)]
	}' "$tmp/results"
}
failed() { awk -v t="$1" '$1 == t && $2 == "FAILED" { n++ } END { print n + 0 }' "$tmp/results"; }

lua_rps=$(median lua 2)
incr_rps=$(median incrby 2)
lua_cpu=$(median lua 5)
incr_cpu=$(median incrby 5)
idle1=$(busy_check)
cp "$tmp/results" "$tmp/throughput"

ratio() { awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN { if (a > 0 && b > 0) printf(f, a / b); else print "-" }'; }
echo
echo "redis-benchmark $bflags"
echo "runs: $runs (median shown); $ncpu CPUs; pin=$pin; CPU idle before: ${idle0}%, after: ${idle1}%"
printf '%-33s %11s %7s %8s %10s %10s %8s %8s\n' "system" "req/s" "p50 ms" "p99 ms" "srv us/req" "cli us/req" "x lua" "x incrby"
row() { # label tag ratios?
	rps=$(median "$2" 2)
	f=$(failed "$2")
	note=
	[ "$f" -eq 0 ] || note="  ($f of $runs runs FAILED)"
	vl="" vi=""
	if [ "$3" = yes ]; then
		vl=$(ratio "$rps" "$lua_rps" "%.1f")
		vi=$(ratio "$rps" "$incr_rps" "%.2f")
	fi
	printf '%-33s %11.0f %7s %8s %10s %10s %8s %8s%s\n' "$1" "$rps" "$(median "$2" 3)" "$(median "$2" 4)" \
		"$(median "$2" 5)" "$(median "$2" 6)" "$vl" "$vi" "$note"
}
for p in $tg_ports; do
	eval "w=\$workers_$p"
	row "tollgated CDR (--workers $w)" "tg$w" yes
done
row "redis $rver + Lua (baseline.lua)" lua no
row "redis $rver INCRBY" incrby no
echo "x lua, x incrby: tollgated's req/s over theirs.  p50/p99: redis-benchmark's latency per request, a"
echo "whole pipeline of -P requests in flight.  srv/cli us/req: CPU time (user+sys, all threads) of the"
echo "server and of redis-benchmark per request, which other load on the machine disturbs far less than req/s."
for p in $tg_ports; do
	eval "w=\$workers_$p"
	c=$(median "tg$w" 5)
	echo "server CPU per request, tollgated --workers $w: $(ratio "$lua_cpu" "$c" "%.1f")x less than Redis + Lua, $(ratio "$incr_cpu" "$c" "%.2f")x INCRBY's"
done

# ---- latency: one request per round trip at about half of tollgated's maximum ----
# redis-benchmark is a closed loop: with -P 1 the offered load is set by -c
# alone, so the load is steered by picking -c.  -c 1 is the lowest it goes.
if [ "$latency" = yes ]; then
	: >"$tmp/lat"
	for p in $tg_ports; do
		eval "w=\$workers_$p"
		: >"$tmp/results"
		# the maximum at -P 1, with the -c of the flags
		run_rb "tgmax$w" "$p" "-P 1 -n $latency_n" -- CDR __rand_int__ "$DEST" "$DUR" "$CALLID"
		max=$(median "tgmax$w" 2)
		half=$(awk -v m="$max" 'BEGIN { printf("%d", m / 2) }')
		# the largest -c whose throughput stays at or below about half (short probes)
		best=1
		for c in 1 2 3 4 6 8 12 16 24 32 48; do
			[ "$c" -lt "$bc" ] || break
			run_rb "probe$c" "$p" "-P 1 -c $c -n $((latency_n / 5))" -- CDR __rand_int__ "$DEST" "$DUR" "$CALLID"
			got=$(median "probe$c" 2)
			if awk -v g="$got" -v h="$half" 'BEGIN { exit !(g <= h * 1.1) }'; then best=$c; else break; fi
		done
		say "tollgated --workers $w: $max req/s at -P 1 -c $bc; half: $half; -c $best"
		r=1
		while [ "$r" -le "$runs" ]; do
			run_rb "lat_tg$w" "$p" "-P 1 -c $best -n $latency_n" -- CDR __rand_int__ "$DEST" "$DUR" "$CALLID"
			run_rb "lat_lua$w" "$rport" "-P 1 -c $best -n $latency_n" -- EVALSHA "$sha" 0 __rand_int__ "$DEST" "$DUR" "$CALLID"
			run_rb "lat_incr$w" "$rport" "-P 1 -c $best -n $latency_n" -- INCRBY bal:__rand_int__ "$DUR"
			r=$((r + 1))
		done
		for t in "lat_tg$w tollgated CDR (--workers $w)" "lat_lua$w redis + Lua, same -c" "lat_incr$w redis INCRBY, same -c"; do
			tag=${t%% *}
			label=${t#* }
			us() { awk -v v="$(median "$tag" "$1")" 'BEGIN { if (v == "-" || v == 0) print "-"; else printf("%.0f", v * 1000) }'; }
			load="" m=""
			case "$tag" in lat_tg*)
				m=$(awk -v v="$max" 'BEGIN { printf("%.0f", v) }')
				load=$(awk -v a="$(median "$tag" 2)" -v b="$max" 'BEGIN { if (b > 0) printf("%.0f%%", 100 * a / b) }') ;;
			esac
			printf '%-33s %4s %11.0f %7s %7s %7s %11s %10s\n' "$label" "$best" "$(median "$tag" 2)" "$(us 3)" "$(us 4)" \
				"$load" "$m" "$(median "$tag" 5)" >>"$tmp/lat"
		done
	done
	echo
	echo "latency mode: -P 1, $latency_n requests per run, $runs run(s), median; other flags as above"
	printf '%-33s %4s %11s %7s %7s %7s %11s %10s\n' "system" "-c" "req/s" "p50 us" "p99 us" "load" "max at -P1" "srv us/req"
	cat "$tmp/lat"
	echo "p50/p99: redis-benchmark's, 1 us resolution, client time included.  load: tollgated's req/s over its"
	echo "maximum at -P 1 -c $bc (max at -P1).  A closed-loop client cannot offer less than -c 1."
fi
