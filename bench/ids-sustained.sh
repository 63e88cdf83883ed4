#!/bin/sh
# bench/ids-sustained.sh - the id window at steady state: COUNT unique CDRs at
# full speed into tollgated with default id settings over 1M accounts, then a
# replay of a sample drawn from the whole run, then a restart with every id
# remembered (docs/BENCHMARKS.md, "The id window at steady state").
#
#   bench/ids-sustained.sh [--durability durable|relaxed] [--count 100M]
#                          [--sample 1000000] [--accounts 1000000] [--keep]
#
# Reports: FULL replies (must be 0: tollbench counts error replies), the
# throughput of the first and the last 10% of the run (from tollbench's
# per-second CSV), RAM (VmRSS of tollgated less its start-up RSS, and INFO's
# byte counts per tier) and disk per remembered id, the replay's verdict
# (bench/ids-replay.py), and the time from a SIGKILL to "ready" again.  Since
# the machine may be shared, it also reports tollgated's CPU per request in
# the first and the last 10% of the run (utime + stime from /proc/PID/stat
# against INFO's cdr, sampled each second): steadier than the throughput.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD:-$root/build}
mode=durable
count=100M
sample=1000000
accounts=1000000
keep=0
while [ $# -gt 0 ]; do
	case $1 in
	--durability) mode=$2; shift 2 ;;
	--count) count=$2; shift 2 ;;
	--sample) sample=$2; shift 2 ;;
	--accounts) accounts=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	*) echo "usage: $0 [--durability M] [--count N] [--sample N] [--accounts N] [--keep]" >&2; exit 2 ;;
	esac
done
n=$(echo "$count" | sed 's/[kK]$/000/; s/M$/000000/')
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/tg-ids.XXXXXX")
pid=""
cleanup() {
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
	rm -f "/dev/shm/tg-ids-$$"
	if [ "$keep" = 1 ]; then echo "kept: $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT INT TERM

port=$(($(od -An -N2 -tu2 /dev/urandom) % 20000 + 30000))
"$here/gen-accounts.sh" -n "$accounts" --refill off "$tmp/accounts.csv"
start() { # N (the Nth start): the accounts file the first time only
	acsv=$tmp/accounts.csv
	[ "$1" = 1 ] || acsv=none
	"$build/engine/tollgated" --port "$port" --shm-name "/tg-ids-$$" --data-dir "$tmp/data" \
		--capacity $((accounts + accounts / 10)) --accounts "$acsv" \
		--durability "$mode" --redis-host none 2>>"$tmp/tollgated.log" &
	pid=$!
	t0=$(date +%s%N)
	until grep -q "ready on" "$tmp/tollgated.log" 2>/dev/null &&
		[ "$(grep -c 'ready on' "$tmp/tollgated.log")" -ge "$1" ]; do
		kill -0 "$pid" || { cat "$tmp/tollgated.log"; exit 1; }
		sleep 0.05
	done
	ready_ms=$((($(date +%s%N) - t0) / 1000000))
}
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$pid/status"; }
info() { redis-cli -p "$port" INFO all | tr -d '\r' | awk -F: -v k="$1" '$1 == k { print $2 }'; }

start 1
rss0=$(rss_kb)
echo "tollgated ($mode, default ids-max/ids-window/ids-disk-max), $accounts accounts, up in $ready_ms ms, RSS $((rss0 / 1024)) MiB"
run=$(printf '%08x' $(($(od -An -N4 -tu4 /dev/urandom))))
# One row a second: tollgated's CPU ticks (user + system) and the CDRs applied.
hz=$(getconf CLK_TCK)
(while kill -0 "$pid" 2>/dev/null; do
	t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null) || break
	c=$(info cdr 2>/dev/null) || break
	echo "$t ${c:-0}"
	sleep 1
done >"$tmp/cpu.txt") &
sampler=$!
"$build/bench/tollbench" load -p "$port" -c 50 -P 32 -n "$count" --accounts "$accounts" \
	--run-id "$run" --acct-by-id --csv "$tmp/persec.csv" -q --json >"$tmp/load.json"
sleep 1
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
rss1=$(rss_kb)
python3 - "$tmp/load.json" "$tmp/persec.csv" "$tmp/cpu.txt" "$hz" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
rows = [l.strip().split(",") for l in open(sys.argv[2]) if l[:1].isdigit()]
reqs = [int(r[1]) for r in rows]
total = sum(reqs)
def rate(lo, hi):
    # seconds whose cumulative requests fall in [lo, hi) of the run
    acc, n, secs = 0, 0, 0
    for r in reqs:
        if lo <= acc < hi:
            n += r; secs += 1
        acc += r
    return n / secs if secs else 0
first, last = rate(0, total * 0.1), rate(total * 0.9, total + 1)
print("load: %d requests in %.0f s, %d errors; first 10%%: %.0f/s, last 10%%: %.0f/s (last/first %.2f)"
      % (j.get("requests", total), j.get("seconds", 0), j.get("errors", 0), first, last,
         last / first if first else 0))
# CPU per request over the samples whose CDR count lies in [lo, hi) of the run
cpu = [tuple(map(int, l.split())) for l in open(sys.argv[3]) if len(l.split()) == 2]
# Up to the first sample with every request in: after it the snapshot thread
# still works (a move, a snapshot) with no request coming, and that CPU
# belongs to no request.
while len(cpu) > 1 and cpu[-2][1] == cpu[-1][1]:
    cpu.pop()
hz = int(sys.argv[4])
def us_per_req(lo, hi):
    pts = [(t, c) for t, c in cpu if lo <= c - cpu[0][1] <= hi]
    if len(pts) < 2 or pts[-1][1] == pts[0][1]:
        return 0
    return (pts[-1][0] - pts[0][0]) * 1e6 / hz / (pts[-1][1] - pts[0][1])
if cpu:
    done = cpu[-1][1] - cpu[0][1]
    a, b = us_per_req(0, done * 0.1), us_per_req(done * 0.9, done)
    print("tollgated CPU per request: first 10%%: %.2f us, last 10%%: %.2f us (last/first %.2f)"
          % (a, b, b / a if a else 0))
EOF
mem=$(info ids_memory); disk=$(info ids_disk); runs=$(info ids_disk_runs)
dbytes=$(info ids_disk_bytes); ram=$(info ids_disk_ram_bytes); mbytes=$(info ids_memory_bytes)
echo "ids: $mem in memory ($mbytes bytes), $disk on disk in $runs runs ($dbytes bytes, $(echo "$dbytes $disk" | awk '{ printf "%.1f", $1 / ($2 ? $2 : 1) }') bytes/id)"
echo "ram for the disk tier (filters + run indexes): $ram bytes, $(echo "$ram $disk" | awk '{ printf "%.2f", $1 / ($2 ? $2 : 1) }') bytes/id on disk"
echo "tollgated RSS: $((rss0 / 1024)) MiB at start, $((rss1 / 1024)) MiB after the run ($(echo "$rss0 $rss1 $mem $disk" | awk '{ printf "%.2f", ($2 - $1) * 1024 / ($3 + $4) }') bytes per remembered id)"
echo "full: $(info window_full) window_full, waits: $(info window_waits), horizon cut: $(info ids_horizon_cut)"
python3 "$here/ids-replay.py" --port "$port" --run-id "$run" --conns 50 --count "$n" \
	--sample "$sample" --accounts "$accounts" || echo "REPLAY FAILED"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
start 2
echo "restart after SIGKILL with $disk ids on disk: ready in $ready_ms ms"
grep -E "remembered on disk|recovered to LSN" "$tmp/tollgated.log" | tail -2
python3 "$here/ids-replay.py" --port "$port" --run-id "$run" --conns 50 --count "$n" \
	--sample 100000 --accounts "$accounts" --seed 2 || echo "REPLAY AFTER RESTART FAILED"
