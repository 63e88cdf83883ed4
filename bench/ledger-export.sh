#!/bin/sh
# bench/ledger-export.sh - does the ledger keep up with the durable engine?
#
#   bench/ledger-export.sh BUILD-DIR [REQUESTS] [sqlite|pg]
#
# A durable tollgated takes REQUESTS (400000) pipelined CDRs with unique ids
# (redis-benchmark -c 50 -P 32) while `tollexport --follow` tails its journal
# into a SQLite file, or into PostgreSQL with "pg" as the third argument; the
# lag (journal_lsn - ledger_lsn) is sampled every 0.5 s.  Then the whole
# journal is exported again in batch mode into a fresh SQLite file and into a
# fresh database of a private PostgreSQL cluster (initdb + pg_ctl as the
# postgres user, a Unix socket only), timed.  Prints the engine's CDR rate,
# rows/s into each database, the worst lag seen, and bytes per record in the
# journal and in each database.  docs/BENCHMARKS.md, "The ledger".
set -eu
b=${1:?usage: ledger-export.sh BUILD-DIR [REQUESTS] [sqlite|pg]}
n=${2:-400000}
follow=${3:-sqlite}
tmp=$(mktemp -d)
chmod 755 "$tmp"
pid=""
fpid=""
pgdata=""
cleanup() {
	[ -n "$fpid" ] && kill "$fpid" 2>/dev/null
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	[ -n "$pgdata" ] && runuser -u postgres -- pg_ctl -D "$pgdata" -m immediate stop >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT
port=$(($(od -An -N2 -tu2 /dev/urandom) % 20000 + 30000))
"$b/engine/tollgated" --port "$port" --shm-name "/tg-lx-$$" --data-dir "$tmp/data" \
	--accounts none --durability durable --workers 2 2>"$tmp/log" &
pid=$!
for _ in $(seq 100); do
	redis-cli -p "$port" PING >/dev/null 2>&1 && break
	sleep 0.05
done
redis-cli -p "$port" ACCT.SET 1 BALANCE 100000000 PLAN basic >/dev/null
info() { redis-cli -p "$port" INFO journal | tr -d '\r' | sed -n "s/^$1://p"; }

pgdata="$tmp/pg"
mkdir "$pgdata" && chown postgres "$pgdata"
runuser -u postgres -- initdb -D "$pgdata" -A trust -U tg --no-sync >/dev/null
runuser -u postgres -- pg_ctl -D "$pgdata" -l "$pgdata/server.log" -w \
	-o "-k $pgdata -p $port -c listen_addresses=''" start >/dev/null
pg="postgresql:///postgres?host=$pgdata&port=$port&user=tg"
psql -Atq "$pg" -c "CREATE DATABASE follow" -c "CREATE DATABASE batch"
case $follow in
pg) fdb="postgresql:///follow?host=$pgdata&port=$port&user=tg" ;;
*) fdb="$tmp/follow.sqlite" ;;
esac

"$b/tools/tollexport" --data-dir "$tmp/data" --db "$fdb" --follow --quiet &
fpid=$!
(
	while sleep 0.5; do
		j=$(info journal_lsn)
		l=$(info ledger_lsn)
		[ -n "$j" ] && [ -n "$l" ] && echo $((j - l))
	done
) >"$tmp/lag" 2>/dev/null &
sampler=$!
rps=$(redis-benchmark -p "$port" -c 50 -P 32 -n "$n" -r 100000000 --csv \
	CDR 1 14155551212 60 c__rand_int____rand_int__ | awk -F'"' 'NR == 2 { print $4 }')
t0=$(date +%s.%N)
last=$(info journal_lsn)
while [ "$(info ledger_lsn)" -lt "$last" ]; do sleep 0.1; done
catchup=$(echo "$(date +%s.%N) - $t0" | bc)
kill "$sampler"
kill "$fpid"
fpid=""
maxlag=$(sort -n "$tmp/lag" | tail -1)
records=$(info journal_records)
jbytes=$(info journal_bytes)

# Batch export into fresh databases (the engine stays up, idle).
t0=$(date +%s.%N)
"$b/tools/tollexport" --data-dir "$tmp/data" --db "$tmp/batch.sqlite" --quiet
lite_s=$(echo "$(date +%s.%N) - $t0" | bc)
rows=$(sqlite3 "$tmp/batch.sqlite" "SELECT count(*) FROM calls")
lite_bytes=$(stat -c %s "$tmp/batch.sqlite")

uri="postgresql:///batch?host=$pgdata&port=$port&user=tg"
t0=$(date +%s.%N)
"$b/tools/tollexport" --data-dir "$tmp/data" --db "$uri" --quiet
pg_s=$(echo "$(date +%s.%N) - $t0" | bc)
pg_bytes=$(psql -Atq "$uri" -c "SELECT pg_total_relation_size('calls')")

echo "engine: $rps CDR/s durable (redis-benchmark -c 50 -P 32 -n $n)"
echo "journal: $records records, $jbytes bytes, $((jbytes / records)) bytes a record (confirms included)"
echo "follow ($follow): worst lag sampled $maxlag records; caught up ${catchup}s after the load ended"
echo "batch SQLite: $rows rows in ${lite_s}s = $(echo "$rows / $lite_s" | bc) rows/s; $((lite_bytes / rows)) bytes a call row (file)"
echo "batch PostgreSQL: $rows rows in ${pg_s}s = $(echo "$rows / $pg_s" | bc) rows/s; $((pg_bytes / rows)) bytes a call row (table + indexes)"
