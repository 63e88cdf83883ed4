#!/bin/sh
# test_tollctl.sh - tollctl against the real tollgated and a real redis-server.
#
# Starts its own tollgated (port 0, a segment of its own, rate plans this
# file writes, no accounts) and its own redis-server on a private port, both
# stopped at the end; runs tollctl and checks what it prints and its exit
# code (docs/TOOLS.md): 0 ok, 1 server error, 2 usage, 3 cannot connect,
# 4 bad input file.  Then journal-check and journal-cut on the daemon's data
# directory and on copies of it (a torn tail, a byte flipped in the middle):
# what they print, where they refuse, and that tollgated starts on the cut
# journal.  Never touches a server it did not start.  The binaries
# come from meson: TOLLGATED, TOLLCTL, TOLLBILL.  Exit 77 (skip) without redis-server.
set -u
: "${TOLLGATED:?TOLLGATED: path of tollgated}" "${TOLLCTL:?TOLLCTL: path of tollctl}" \
	"${TOLLBILL:?TOLLBILL: path of tollbill}"
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
	echo "SKIP: redis-server and redis-cli are needed"
	exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/test_tollctl.XXXXXX") || exit 1
shm="/tollctl-test-$$"
dpid="" ppid="" rpid="" port="" pport="" rport=""
fails=0 checks=0

stop() { # PID: TERM, then KILL after 10 s
	[ -n "$1" ] || return 0
	kill "$1" 2>/dev/null || return 0
	for _ in $(seq 100); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}
cleanup() {
	stop "$dpid"
	stop "$ppid"
	stop "$rpid"
	rm -f "/dev/shm$shm" "/dev/shm$shm-pw" "/dev/shm$shm-bad" "/dev/shm$shm-one" \
		"/dev/shm$shm-cut"
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
	echo "FAIL: $name: $*"
	echo "  -- stdout:" && sed 's/^/  | /' "$dir/out"
	echo "  -- stderr:" && sed 's/^/  | /' "$dir/err"
	fails=$((fails + 1))
}
# t NAME WANT CMD...: run CMD, its output into out and err, and check its exit code.
t() {
	name=$1 want=$2
	shift 2
	checks=$((checks + 1))
	"$@" >"$dir/out" 2>"$dir/err"
	got=$?
	[ "$got" = "$want" ] || fail "exit $got, expected $want"
	! grep -qE "Sanitizer|runtime error:" "$dir/err" || fail "a sanitizer report"
}
has() { # out|err TEXT: the last command's stdout or stderr holds TEXT (a fixed string)
	grep -qF -- "$2" "$dir/$1" || fail "$1 lacks '$2'"
}
lacks() {
	! grep -qF -- "$2" "$dir/$1" || fail "$1 has '$2'"
}
is() { # out|err TEXT: ... is exactly TEXT
	printf '%s\n' "$2" | cmp -s - "$dir/$1" || fail "$1 is not exactly '$2'"
}
field() { # FIELD: its value in the last "field  value" output
	awk -v f="$1" '$1 == f { print $2 }' "$dir/out"
}
field_is() { # FIELD VALUE
	v=$(field "$1")
	[ "$v" = "$2" ] || fail "$1 is '$v', expected '$2'"
}
ctl() { "$TOLLCTL" -p "$port" "$@"; }

# start_daemon LOG DATA-DIR EXTRA-ARGS...: start tollgated on port 0 with its own
# data directory (one tollgated per data directory), publishing refill requests to
# our redis-server; sets dpid_, port_.
start_daemon() {
	log=$1 data=$2
	shift 2
	"$TOLLGATED" --bind 127.0.0.1 --port 0 --workers 2 --shm-reuse no --capacity 4096 \
		--ids-max 100000 --calls-max 100000 --accounts none --rates "$dir/rates.csv" \
		--data-dir "$data" --redis-host 127.0.0.1 --redis-port "$rport" "$@" 2>"$log" &
	dpid_=$!
	port_=""
	for _ in $(seq 200); do
		port_=$(sed -n 's/.*ready on [0-9.]*:\([0-9]*\).*/\1/p' "$log")
		[ -n "$port_" ] && return 0
		kill -0 "$dpid_" 2>/dev/null || break
		sleep 0.1
	done
	echo "tollgated did not start:"
	cat "$log"
	exit 1
}

# A redis-server of our own on a free port: try ports until one is ours.
start_redis() {
	i=0
	while [ $i -lt 20 ]; do
		p=$((20000 + ($$ * 7 + i * 1009) % 40000))
		redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no \
			--dir "$dir" >"$dir/redis.log" 2>&1 &
		rpid=$!
		for _ in $(seq 50); do
			kill -0 "$rpid" 2>/dev/null || break
			if redis-cli -p "$p" info server 2>/dev/null | grep -q "process_id:$rpid"; then
				rport=$p
				return 0
			fi
			sleep 0.1
		done
		stop "$rpid"
		rpid=""
		i=$((i + 1))
	done
	echo "redis-server did not start:"
	cat "$dir/redis.log"
	exit 1
}

good_rates='plan,prefix,category,rate_per_min,connect_fee,initial,increment,minimum
basic,1,national,0.06,0,60,60,0
gold,1,national,0.03,0,1,1,0
gold,44,international,0.12,0,1,1,0'
printf '%s\n' "$good_rates" >"$dir/rates.csv"

# Our redis-server first: the daemons publish refill requests to it, never elsewhere.
start_redis
start_daemon "$dir/daemon.log" "$dir/data" --shm-name "$shm"
dpid=$dpid_ port=$port_

# ---- load-accounts: a good file (CRLF, a byte-order mark, comments, leading zeros) ----
printf '\357\273\277# accounts\r\naccount,balance,plan,state,threshold,refill,refill_amount,payment\r\n' \
	>"$dir/good.csv"
cat >>"$dir/good.csv" <<'EOF'
1001,25,basic,active,10,add,50,on

1002,3.5,basic,active,,off,,off
# a comment
1003,0,basic,active,,off,,off
1004,100,gold,active,20,topup,100,on
1005,40,gold,suspended,,off,,off
0001006,12,gold,closed,,,,
1007,-0.000125,gold,,,,,off
EOF
t load-good 0 ctl load-accounts "$dir/good.csv"
is out "$dir/good.csv: 7 accounts: 7 created, 0 overwritten, 0 already present (kept)"
t show-1001 0 ctl show 1001
field_is balance 25
field_is plan basic
field_is state active
field_is threshold 10
field_is refill add
field_is refill_amount 50
field_is payment on
field_is refill_pending 0
has out "usage_international  0"
t show-1006 0 ctl show 1006
field_is state closed
field_is plan gold
field_is refill off
t show-1007 0 ctl show 1007
field_is balance -0.000125
field_is threshold 0
field_is payment off

# Existing accounts are kept by default, and set from the file with --overwrite.
t set-1002 0 ctl set 1002 BALANCE 99
is out "OK"
t load-again 0 ctl load-accounts "$dir/good.csv"
is out "$dir/good.csv: 7 accounts: 0 created, 0 overwritten, 7 already present (kept)"
t load-again-show 0 ctl show 1002
field_is balance 99
t load-skip 0 ctl load-accounts --skip-existing "$dir/good.csv"
has out "7 already present (kept)"
t load-overwrite 0 ctl load-accounts "$dir/good.csv" --overwrite
is out "$dir/good.csv: 7 accounts: 0 created, 7 overwritten, 0 already present (kept)"
t load-overwrite-show 0 ctl show 1002
field_is balance 3.5

# Unlike the start-up loader, ACCT.SET fires a refill for a row already at its threshold.
printf 'account,balance,plan,state,threshold,refill,refill_amount,payment\n1100,5,basic,active,10,add,50,on\n' \
	>"$dir/low.csv"
t load-low 0 ctl load-accounts "$dir/low.csv"
t load-low-fired 0 ctl show 1100
field_is refill_pending 1
field_is refill_request refill:1100:1

# More rows than one pipelined batch, half of them already present.
awk 'BEGIN { print "account,balance,plan,state,threshold,refill,refill_amount,payment";
	for (i = 10000; i < 10600; i++) printf "%d,%d.25,gold,active,,off,,off\n", i, i }' \
	>"$dir/half.csv"
awk 'BEGIN { print "account,balance,plan,state,threshold,refill,refill_amount,payment";
	for (i = 10000; i < 11200; i++) printf "%d,%d.5,basic,active,,off,,off\n", i, i }' \
	>"$dir/many.csv"
t load-half 0 ctl load-accounts "$dir/half.csv"
has out "600 accounts: 600 created"
t load-many 0 ctl load-accounts "$dir/many.csv"
is out "$dir/many.csv: 1200 accounts: 600 created, 0 overwritten, 600 already present (kept)"
t load-many-old 0 ctl show 10599
field_is balance 10599.25
field_is plan gold
t load-many-new 0 ctl show 11199
field_is balance 11199.5
field_is plan basic

# Version 3 carries the fraud limits, sent as ACCT.SET MAXCALLS/CALLCAP/DAILYCAP/LOW; a row
# with them empty clears them on --overwrite, and an older file leaves them alone.
cat >"$dir/limits.csv" <<'EOF'
account,balance,plan,state,threshold,refill,refill_amount,payment,kind,credit_limit,maxcalls,call_cap,daily_cap,low
1200,50,basic,active,,off,,off,prepaid,,4,2.5,30,1.5
1201,50,basic,active,,off,,off,,,,,,
EOF
t load-limits 0 ctl load-accounts "$dir/limits.csv"
is out "$dir/limits.csv: 2 accounts: 2 created, 0 overwritten, 0 already present (kept)"
t show-1200 0 ctl show 1200
field_is maxcalls 4
field_is callcap 2.5
field_is dailycap 30
field_is low 1.5
t show-1201 0 ctl show 1201
field_is maxcalls 0
field_is dailycap 0
printf 'account,balance,plan,state,threshold,refill,refill_amount,payment\n1200,60,basic,active,,off,,off\n' \
	>"$dir/limits-v1.csv"
t load-limits-v1 0 ctl load-accounts --overwrite "$dir/limits-v1.csv"
t show-1200-v1 0 ctl show 1200
field_is balance 60
field_is maxcalls 4
field_is dailycap 30
sed 's/^1200,.*/1200,50,basic,active,,off,,off,prepaid,,,,,/' "$dir/limits.csv" >"$dir/limits-none.csv"
t load-limits-none 0 ctl load-accounts --overwrite "$dir/limits-none.csv"
t show-1200-none 0 ctl show 1200
field_is maxcalls 0
field_is callcap 0
field_is dailycap 0
field_is low 0
printf 'account,balance,plan,state,threshold,refill,refill_amount,payment,kind,credit_limit,maxcalls,call_cap,daily_cap,low\n1202,1,basic,,,,,,,,-3,,,\n' \
	>"$dir/limits-bad.csv"
t load-limits-bad 4 ctl load-accounts "$dir/limits-bad.csv"
has err "$dir/limits-bad.csv:2: maxcalls '-3': 0 to 1000000 calls (empty or 0: none)"

# ---- load-accounts: a bad file is refused whole, with the start-up loader's reasons ----
cat >"$dir/bad.csv" <<'EOF'
account,balance,plan,state,threshold,refill,refill_amount,payment
2001,25,basic,active,10,add,50,on
2002,x,basic,active,,off,,off
2003,1.1234567,basic,active,,off,,off
2004,1,basic
2001,1,basic,,,,,
2005,1,b@d,,,,,
2006,1,basic,,,add,5,off
2007,1,basic,open,,,,
2008,1,basic,,,add,0,on
18446744073709551615,1,basic,,,,,
2009,1,basic,,,,,maybe
2010,1,basic,,,weekly,,
2011,1,,,,,,
2012,1,basic,,5x,,,
2013,99999999999999999,basic,,,,,
2014,1,basic,active,,off,,off
EOF
t load-bad 4 ctl load-accounts "$dir/bad.csv"
has err "tollctl: $dir/bad.csv: not loaded, nothing sent (14 problems):"
has err "$dir/bad.csv:3: balance 'x': not a decimal amount with at most 6 decimals"
has err "$dir/bad.csv:5: expected 8 fields, found 3"
has err "$dir/bad.csv:6: account 2001 already defined at line 2"
has err "$dir/bad.csv:8: auto-refill needs a payment method on file (payment on)"
has err "$dir/bad.csv:11: account '18446744073709551615': not an account id"
has err "$dir/bad.csv:14: plan: 1 to 31 characters"
has err "$dir/bad.csv:15: threshold '5x': not a decimal amount with at most 6 decimals"
has err "$dir/bad.csv:16: balance '99999999999999999': out of range"
lacks err ":17:"
grep "^$dir/bad.csv:" "$dir/err" >"$dir/tollctl.lines"
for a in 2001 2014; do
	t "load-bad-nothing-$a" 1 ctl show $a
	is err "tollctl: NOACCOUNT no such account"
done
# The daemon's own start-up loader says exactly the same of the same file.
"$TOLLGATED" --bind 127.0.0.1 --port 0 --workers 1 --shm-reuse no --capacity 64 \
	--ids-max 1000 --calls-max 1000 --rates "$dir/rates.csv" --shm-name "$shm-bad" \
	--data-dir "$dir/data-bad" \
	--redis-host 127.0.0.1 --redis-port "$rport" \
	--accounts "$dir/bad.csv" 2>"$dir/startup.log" &
spid=$!
for _ in $(seq 100); do kill -0 $spid 2>/dev/null || break; sleep 0.1; done
stop $spid
grep "^$dir/bad.csv:" "$dir/startup.log" >"$dir/startup.lines"
name=load-bad-same-as-startup
checks=$((checks + 1))
if ! [ -s "$dir/startup.lines" ] || ! cmp -s "$dir/startup.lines" "$dir/tollctl.lines"; then
	fail "tollctl and tollgated --accounts report differently:"
	diff "$dir/startup.lines" "$dir/tollctl.lines"
fi

printf 'account,balance,plan\n1,2,basic\n' >"$dir/header.csv"
t load-bad-header 4 ctl load-accounts "$dir/header.csv"
has err "$dir/header.csv:1: bad header, expected account,balance,plan,state,threshold,refill,refill_amount,payment"
printf '# nothing\n\n' >"$dir/empty.csv"
t load-no-header 4 ctl load-accounts "$dir/empty.csv"
has err "$dir/empty.csv: no header line"
t load-missing 4 ctl load-accounts "$dir/missing.csv"
has err "$dir/missing.csv: cannot read: No such file or directory"
# A bad file is refused before any connection: exit 4 even with no daemon.
t load-bad-no-daemon 4 "$TOLLCTL" -p 1 load-accounts "$dir/bad.csv"

# ---- set, show ----
t set-new 0 ctl set 3001 BALANCE 12.5 PLAN gold THRESHOLD 2 PAYMENT on REFILL ADD 10
is out "OK"
t show-json 0 ctl show 3001 --json
has out '"balance": "12.5",'
has out '"plan": "gold",'
has out '"refill": "add",'
has out '"refill_pending": 0,'
has out '"refill_request": "",'
head -n 1 "$dir/out" | grep -qx '{' || fail "JSON does not start with {"
tail -n 1 "$dir/out" | grep -qx '}' || fail "JSON does not end with }"
t set-negative 0 ctl set 3002 BALANCE -5
t show-negative 0 ctl show 3002
field_is balance -5
field_is plan basic
t set-bad-option 1 ctl set 3001 COLOUR red
has err "tollctl: ERR unknown or incomplete ACCT.SET option 'COLOUR'"
t set-nopayment 1 ctl set 3003 REFILL ADD 5
has err "tollctl: NOPAYMENT"
t set-nopayment-nothing 1 ctl show 3003
t show-unknown 1 ctl show 999999
is err "tollctl: NOACCOUNT no such account"
t show-bad-id 1 ctl show abc
has err "tollctl: ERR invalid account id 'abc'"

# ---- credit: exactly once on the txid ----
t credit 0 ctl credit 1002 20 tx-1
is out "23.5"
t credit-replay 0 ctl credit 1002 20 tx-1
is out "23.5"
t credit-conflict 1 ctl credit 1002 21 tx-1
has err "tollctl: CONFLICT"
t credit-unknown 1 ctl credit 999999 1 tx-2
is err "tollctl: NOACCOUNT no such account"
t credit-after 0 ctl show 1002
field_is balance 23.5

# ---- rate ----
t rate 0 ctl rate gold 4420 61
is out "charge    0.122
category  international
prefix    44
billed    61"
t rate-json 0 ctl rate gold 4420 61 --json
has out '"charge": "0.122",'
has out '"billed": 61'
t rate-noplan 1 ctl rate platinum 4420 61
has err "tollctl: NOPLAN"
t rate-norate 1 ctl rate gold 33 61
has err "tollctl: NORATE"

# ---- reload: all or nothing, each problem on its own line ----
t reload 0 ctl reload
is out "OK"
printf '%s\nbasic,x1,national,0.06,0,60,60,0\ngold,44,galactic,0.1,0,1,1,0\n' "$good_rates" \
	>"$dir/rates.csv"
t reload-bad 1 ctl reload
has err "tollctl: ERR rate plans not reloaded (2 problems):"
n=$(grep -c "^$dir/rates.csv:[0-9]*: " "$dir/err")
[ "$n" = 2 ] || fail "expected 2 file:line: reason lines, found $n"
has err "$dir/rates.csv:5: "
has err "$dir/rates.csv:6: "
t reload-bad-kept 0 ctl rate gold 4420 61
has out "0.122"
printf '%s\n' "$good_rates" >"$dir/rates.csv"
t reload-again 0 ctl reload

# ---- info ----
t info 0 ctl info
has out "# Server"
has out "tollgate_version:"
has out "# Money"
grep -q "$(printf '\r')" "$dir/out" && fail "CR in the output"
t info-section 0 ctl info accounts
has out "# Accounts"
lacks out "# Server"
has out "capacity:4096"

# ---- profile, in the refill Redis ----
r="--redis 127.0.0.1:$rport"
# shellcheck disable=SC2086
{
	t profile 0 ctl $r profile 1001 --email ann@example.com --method card --token tok_123 \
		--name "Ann Example"
	is out "OK"
	redis-cli -p "$rport" HGETALL tollgate:customer:1001 >"$dir/out"
	is out "email
ann@example.com
method
card
token
tok_123
name
Ann Example"
	t profile-zeros 0 ctl $r profile 0001002 --method paypal --token pp-9 --email b@c.d
	[ "$(redis-cli -p "$rport" HGET tollgate:customer:1002 method)" = paypal ] ||
		fail "0001002 did not write tollgate:customer:1002"
	# Leading zeros are zeros however many (past 20 characters they were refused).
	t profile-many-zeros 0 ctl $r profile 0000000000000000000000000001002 --method paypal \
		--token pp-10 --email b@c.d
	[ "$(redis-cli -p "$rport" HGET tollgate:customer:1002 token)" = pp-10 ] ||
		fail "0000000000000000000000000001002 did not write tollgate:customer:1002"
	t profile-zeros-too-big 2 ctl $r profile 00018446744073709551615 --method paypal \
		--token t --email b@c.d
	t profile-show 0 ctl $r profile-show 1001
	field_is email ann@example.com
	field_is method card
	field_is token tok_123
	has out "name    Ann Example"
	t profile-show-json 0 ctl $r profile-show 1001 --json
	has out '"name": "Ann Example"'
	t profile-show-none 1 ctl $r profile-show 5555
	is err "tollctl: no profile for account 5555 (tollgate:customer:5555)"
	t profile-bad-method 2 ctl $r profile 1001 --email a@b.c --method cash --token t
	has err "tollctl: profile: --method must be card or paypal"
	t profile-bad-email 2 ctl $r profile 1001 --email "a b@c.d" --method card --token t
	has err "not a plausible email address"
	t profile-no-at 2 ctl $r profile 1001 --email ab.example --method card --token t
	t profile-no-token 2 ctl $r profile 1001 --email a@b.c --method card
	t profile-bad-acct 2 ctl $r profile 10x1 --email a@b.c --method card --token t
	t profile-no-redis 3 ctl --redis 127.0.0.1:1 profile 1001 --email a@b.c --method card \
		--token t
	is err "tollctl: cannot connect to 127.0.0.1:1: Connection refused"
	[ "$(redis-cli -p "$rport" HGET tollgate:customer:1001 email)" = ann@example.com ] ||
		fail "a refused profile changed the hash"
}

# ---- usage errors ----
t usage-none 2 "$TOLLCTL"
has err "usage: tollctl"
has err "exit status:"
t usage-help 0 "$TOLLCTL" --help
has out "4  load-accounts"
t usage-unknown 2 ctl frobnicate
has err "tollctl: unknown command 'frobnicate'"
t usage-show-none 2 ctl show
t usage-show-two 2 ctl show 1 2
t usage-show-option 2 ctl show 1001 --bogus
t usage-load-none 2 ctl load-accounts
t usage-credit 2 ctl credit 1002 5
t usage-reload 2 ctl reload now
t usage-port 2 "$TOLLCTL" -p 0 info
t usage-port-word 2 "$TOLLCTL" -p http info
t usage-port-missing 2 "$TOLLCTL" -p
t usage-option 2 "$TOLLCTL" -x info
t usage-redis 2 "$TOLLCTL" --redis 127.0.0.1:99999 profile-show 1

# ---- the environment ----
t env-port 0 env TOLLGATE_PORT="$port" "$TOLLCTL" show 1001
field_is balance 25
t env-port-bad 2 env TOLLGATE_PORT=nope "$TOLLCTL" show 1001
t env-flag-wins 0 env TOLLGATE_PORT=1 "$TOLLCTL" -p "$port" show 1001
t env-host 3 env TOLLGATE_HOST=127.0.0.2 TOLLGATE_PORT=1 "$TOLLCTL" info
is err "tollctl: cannot connect to 127.0.0.2:1: Connection refused"

# ---- a password ----
t auth-unset 1 ctl -a secret info
has err "tollctl: ERR"
start_daemon "$dir/daemon-pw.log" "$dir/data-pw" --shm-name "$shm-pw" --requirepass s3cret
ppid=$dpid_ pport=$port_
t auth-ok 0 "$TOLLCTL" -p "$pport" -a s3cret info server
has out "tollgate_version:"
t auth-env 0 env TOLLGATE_PASSWORD=s3cret "$TOLLCTL" -p "$pport" set 7 BALANCE 1
t auth-wrong 1 "$TOLLCTL" -p "$pport" -a nope info
has err "tollctl: WRONGPASS"
t auth-none 1 "$TOLLCTL" -p "$pport" show 7
has err "tollctl: NOAUTH"
t auth-load 1 "$TOLLCTL" -p "$pport" load-accounts "$dir/good.csv"
has err "account 1001: NOAUTH"
has err "7 not sent"
stop "$ppid"
ppid=""

# ---- named users (docs/SECURITY.md): --user / TOLLGATE_USER send AUTH NAME PASSWORD ----
printf 'ops admin op-pass-1\nsw1 call sw-pass-1\n' >"$dir/users"
chmod 600 "$dir/users"
start_daemon "$dir/daemon-users.log" "$dir/data-users" --shm-name "$shm-users" \
	--users "$dir/users"
ppid=$dpid_ pport=$port_
t user-admin 0 "$TOLLCTL" -p "$pport" --user ops -a op-pass-1 set 8 BALANCE 2
t user-call-read 0 env TOLLGATE_USER=sw1 "$TOLLCTL" -p "$pport" -a sw-pass-1 show 8
has out "balance"
t user-call-set 1 "$TOLLCTL" -p "$pport" --user sw1 -a sw-pass-1 set 8 BALANCE 3
has err "NOPERM"
t user-wrong 1 "$TOLLCTL" -p "$pport" --user sw1 -a op-pass-1 show 8
has err "WRONGPASS"
t user-no-value 2 "$TOLLCTL" -p "$pport" --user
stop "$ppid"
ppid=""

# ---- a connection over max-clients: one client at most, and redis-cli holds it ----
# The daemon answers it with an error and closes it (docs/PROTOCOL.md): exit 1.
start_daemon "$dir/daemon-one.log" "$dir/data-one" --shm-name "$shm-one" --workers 1 \
	--max-clients 1
ppid=$dpid_ pport=$port_
hold=""
for _ in $(seq 20); do
	redis-cli -p "$pport" -r 2 -i 30 PING >/dev/null 2>&1 &
	hold=$!
	sleep 0.3
	# A PONG: the holder lost the race for the one slot (to this probe's
	# predecessor, say); start it again.
	redis-cli -p "$pport" PING 2>/dev/null | grep -q PONG || break
	stop "$hold"
	sleep 0.2
done
t rejected 1 "$TOLLCTL" -p "$pport" info
is err "tollctl: ERR max number of clients reached"
# load-accounts pipelines: the error, then the closed connection under the rest.
t rejected-load 3 "$TOLLCTL" -p "$pport" load-accounts "$dir/good.csv"
has err "lost"
stop "$hold"
stop "$ppid"
ppid=""

# ---- a connection lost under a command: a server that accepts and closes at once ----
if command -v python3 >/dev/null 2>&1; then
	python3 -c '
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept(); c.close()
' >"$dir/closer.port" 2>/dev/null &
	ppid=$!
	cport=""
	for _ in $(seq 50); do
		cport=$(cat "$dir/closer.port")
		[ -n "$cport" ] && break
		sleep 0.1
	done
	t lost 3 "$TOLLCTL" -p "$cport" info
	has err "tollctl: connection to 127.0.0.1:$cport lost: "
	t lost-load 3 "$TOLLCTL" -p "$cport" load-accounts "$dir/good.csv"
	has err "lost"
	stop "$ppid"
	ppid=""
fi

# ---- a CDR and a credit for journal-check --records: what it must print of each ----
# The call id holds a blank and a control byte: printed as sent, each as \xNN.
t journal-acct 0 ctl set 1009 BALANCE 1 PLAN basic
callid=$(printf 'cdr 9\001x')
name=journal-cdr
checks=$((checks + 1))
[ "$(redis-cli -p "$port" CDR 1009 15551234 30 "$callid")" = 0.06 ] ||
	fail "the CDR of 1009 was not charged 0.06"
t journal-credit 0 ctl credit 1009 5 tx-journal-9
is out "5.94"

# ---- journal-check, journal-cut: usage, and a data directory in use ----
seg1=journal-0000000000000001.tgj
t journal-check-usage 2 "$TOLLCTL" journal-check
has err "journal-check: --data-dir DIR is required"
t journal-check-extra 2 "$TOLLCTL" journal-check --data-dir "$dir/data" now
t journal-cut-no-at 2 "$TOLLCTL" journal-cut --data-dir "$dir/data"
has err "journal-cut: --at FILE:OFFSET is required"
t journal-cut-bad-at 2 "$TOLLCTL" journal-cut --data-dir "$dir/data" --at "$seg1"
has err "expected FILE:OFFSET"
t journal-cut-bad-file 2 "$TOLLCTL" journal-cut --data-dir "$dir/data" --at journal-1.tgj:64
t journal-cut-bad-off 2 "$TOLLCTL" journal-cut --data-dir "$dir/data" --at "$seg1:12"
has err "a multiple of 8 from 64 on"
t journal-check-missing 4 "$TOLLCTL" journal-check --data-dir "$dir/nowhere"
has err "tollctl: $dir/nowhere: cannot read the journal: No such file or directory"
# A running tollgated holds its data directory: checked read-only, never cut.
t journal-check-live 0 "$TOLLCTL" journal-check --data-dir "$dir/data"
has out "status     END"
has out "note       tollgated pid $dpid holds $dir/data"
live_records=$(field records)
cp -p "$dir/data/$seg1" "$dir/seg1.before"
t journal-cut-live 5 "$TOLLCTL" journal-cut --data-dir "$dir/data" --at "$seg1:64"
is err "tollctl: a tollgated is running on $dir/data (pid $dpid): stop it first; nothing was changed"
cmp -s "$dir/data/$seg1" "$dir/seg1.before" || fail "the segment changed"

# ---- no daemon ----
stop "$dpid"
dpid=""
t no-daemon 3 ctl show 1001
is err "tollctl: cannot connect to 127.0.0.1:$port: Connection refused"
t no-daemon-load 3 ctl load-accounts "$dir/good.csv"
t no-daemon-default 3 env TOLLGATE_PORT= "$TOLLCTL" -p "$port" reload

# ---- journal-check after a clean stop ----
t journal-check 0 "$TOLLCTL" journal-check --data-dir "$dir/data"
field_is segments 1
field_is first "$seg1"
field_is first_lsn 1
field_is status END
records=$(field records)
if [ "$records" -lt "$live_records" ] || [ "$records" -le 1000 ]; then
	fail "$records records after the stop, $live_records before"
fi
field_is last_lsn "$records"
has out "verdict    journal: clean end in $seg1 at offset $(stat -c %s "$dir/data/$seg1"),"
lacks out "note"
t journal-check-records 0 "$TOLLCTL" journal-check --data-dir "$dir/data" --records
# One line a record: "lsn=N at=FILE:OFFSET type=NAME time=UTC acct=N" and its fields.
stamp='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z'
n=$(grep -cE "^lsn=[0-9]+ at=$seg1:[0-9]+ type=[a-z_]+ time=$stamp acct=[0-9]+( |$)" "$dir/out")
[ "$n" = "$records" ] || fail "$n record lines, $records records"
grep -qE "^lsn=1 at=$seg1:64 type=" "$dir/out" || fail "no line for LSN 1 at offset 64"
# The CDR of 1009, itemized: the call id as sent, the destination, the charge.
debit=$(grep -E " type=debit .* acct=1009 " "$dir/out")
[ "$(printf '%s\n' "$debit" | grep -c .)" = 1 ] || fail "not one debit line for 1009: $debit"
for want in "kind=cdr" 'call_id=cdr\x209\x01x' "dest=15551234" "plan=basic" "prefix=1" \
	"category=national" "duration=30" "billed=60" "rate=0.06" "connect=0" "charge=0.06" \
	"balance_after=0.94"; do
	case " $debit " in
	*" $want "*) ;;
	*) fail "the debit line lacks '$want': $debit" ;;
	esac
done
credit=$(grep -E " type=credit .* acct=1009 " "$dir/out")
for want in "amount=5" "balance_after=5.94" "txid=tx-journal-9" "source=operator" "user=" \
	"refill_seq=0"; do
	case " $credit " in
	*" $want "*) ;;
	*) fail "the credit line lacks '$want': $credit" ;;
	esac
done

# The limits 1200 was loaded with (version 3 accounts file): a limits record, every value.
grep -qE " type=limits .* acct=1200 maxcalls=4 callcap=2.5 dailycap=30 low=1.5$" "$dir/out" ||
	fail "no limits line for 1200 with its four limits: $(grep -E ' type=limits ' "$dir/out")"
grep -qE " type=limits .* acct=1200 maxcalls=0 callcap=0 dailycap=0 low=0$" "$dir/out" ||
	fail "no limits line for 1200 clearing them"

# ---- a torn tail: the last CONFIRM cut short keeps every record ----
cp -a "$dir/data" "$dir/torn"
truncate -s -3 "$dir/torn/$seg1"
t journal-check-torn-confirm 1 "$TOLLCTL" journal-check --data-dir "$dir/torn"
field_is status TORN_TAIL
field_is last_lsn "$records"
has out "verdict    journal: torn tail in $seg1 at offset"
# ---- a torn tail: the last record cut short, no CONFIRM after it (never acknowledged) ----
cp -a "$dir/data" "$dir/torn2"
truncate -s -43 "$dir/torn2/$seg1"
t journal-check-torn 1 "$TOLLCTL" journal-check --data-dir "$dir/torn2"
field_is status TORN_TAIL
field_is last_lsn $((records - 1))
has out "verdict    journal: torn tail in $seg1 at offset"
# ---- one flipped bit in the last record, confirmed on disk: damage, not a torn tail ----
cp -a "$dir/data" "$dir/flipped"
size=$(stat -c %s "$dir/flipped/$seg1")
last_byte=$((size - 40 - 9))
byte=$(od -An -tu1 -j "$last_byte" -N1 "$dir/flipped/$seg1" | tr -d ' ')
# shellcheck disable=SC2059
printf "\\$(printf %03o $((byte ^ 1)))" |
	dd of="$dir/flipped/$seg1" bs=1 seek="$last_byte" conv=notrunc 2>/dev/null
t journal-check-flipped-last 4 "$TOLLCTL" journal-check --data-dir "$dir/flipped"
field_is status CORRUPT
field_is last_lsn $((records - 1))
has out "a damaged record in $seg1 at offset"

# ---- a damaged snapshot: journal-check reads every snapshot back and says so ----
cp -a "$dir/data" "$dir/badsnap"
t journal-check-snapshots 0 "$TOLLCTL" journal-check --data-dir "$dir/badsnap"
snap=$(awk '$1 == "snapshot" && $3 == "ok" { print $2; exit }' "$dir/out")
[ -n "$snap" ] || fail "no snapshot line says ok"
has out "recovery   $snap, then the journal from LSN"
printf 'X' | dd of="$dir/badsnap/$snap" bs=1 seek=200 conv=notrunc 2>/dev/null
t journal-check-bad-snapshot 4 "$TOLLCTL" journal-check --data-dir "$dir/badsnap"
has out "snapshot   $snap DAMAGED (checksum or trailer wrong): start-up skips it"
field_is status END
# the journal is whole from LSN 1: start-up replays all of it
has out "recovery   the whole journal, from LSN 1"

# ---- damage in the middle: journal-check says where, journal-cut cuts there ----
cp -a "$dir/data" "$dir/damaged"
size=$(stat -c %s "$dir/damaged/$seg1")
mid=$((size / 2))
byte=$(od -An -tu1 -j "$mid" -N1 "$dir/damaged/$seg1" | tr -d ' ')
# shellcheck disable=SC2059
printf "\\$(printf %03o $((255 - byte)))" |
	dd of="$dir/damaged/$seg1" bs=1 seek="$mid" conv=notrunc 2>/dev/null
t journal-check-damaged 4 "$TOLLCTL" journal-check --data-dir "$dir/damaged"
field_is status CORRUPT
has out "a damaged record in $seg1 at offset"
at=$(field at)
off=${at#"$seg1":}
lost=$(awk '$1 == "verdict" { sub(/.*\(LSN /, ""); sub(/ .*/, ""); print }' "$dir/out")
if [ "$off" -le 64 ] || [ "$off" -gt "$mid" ] || [ $((mid - off)) -ge 4200 ]; then
	fail "damage at $mid reported at offset $off"
fi
cp -p "$dir/damaged/$seg1" "$dir/damaged.before"
t journal-cut-past 4 "$TOLLCTL" journal-cut --data-dir "$dir/damaged" --at "$seg1:$((off + 8))"
has err "tollctl: the journal cannot be read past $at (CORRUPT)"
t journal-cut-inside 4 "$TOLLCTL" journal-cut --data-dir "$dir/damaged" --at "$seg1:72"
has err "tollctl: $seg1:72 is inside the record of LSN 1 ($seg1:64 to"
t journal-cut-beyond 4 "$TOLLCTL" journal-cut --data-dir "$dir/damaged" --at "$seg1:$((size + 8))"
has err "is past its end ($size bytes)"
t journal-cut-no-segment 4 "$TOLLCTL" journal-cut --data-dir "$dir/damaged" \
	--at journal-00000000000000ff.tgj:64
has err "journal-00000000000000ff.tgj: No such file or directory"
cmp -s "$dir/damaged/$seg1" "$dir/damaged.before" || fail "a refused cut changed the segment"
t journal-cut 0 "$TOLLCTL" journal-cut --data-dir "$dir/damaged" --at "$at"
has out "cut $seg1 at offset $off: $((size - off)) bytes removed"
has out "the journal now ends at LSN $((lost - 1)); discarded from LSN $lost on: 0 records read before the reader stopped (CORRUPT)"
[ "$(stat -c %s "$dir/damaged/$seg1")" = "$off" ] || fail "the segment was not cut at $off"
t journal-check-cut 0 "$TOLLCTL" journal-check --data-dir "$dir/damaged"
field_is status END
field_is last_lsn $((lost - 1))
# The cut journal starts: tollgated recovers what came before the damage.
start_daemon "$dir/daemon-cut.log" "$dir/damaged" --shm-name "$shm-cut"
ppid=$dpid_ pport=$port_
has_log() { grep -qF -- "$1" "$dir/daemon-cut.log" || fail "daemon-cut.log lacks '$1'"; }
name=journal-cut-start
checks=$((checks + 1))
has_log "journal: recovered to LSN $((lost - 1))"
t journal-cut-show 0 "$TOLLCTL" -p "$pport" show 1001
field_is plan basic
stop "$ppid"
ppid=""

# A cut at the clean end of the last segment leaves nothing to remove.
t journal-cut-end 0 "$TOLLCTL" journal-cut --data-dir "$dir/data" --at "$seg1:$(stat -c %s "$dir/data/$seg1")"
has out ": 0 bytes removed"
has out "discarded from LSN $((records + 1)) on: 0 records"
# Snapshots past a cut hold what it discards: set aside with the segments after it.
count() { # PATH...: how many of them exist (a glob that matched nothing counts 0)
	n=0
	for f in "$@"; do [ -e "$f" ] && n=$((n + 1)); done
	echo "$n"
}
snaps=$(count "$dir"/data/snapshot-*.tgs)
[ "$snaps" -ge 1 ] || fail "no snapshot after a clean stop"
t journal-cut-snap 0 "$TOLLCTL" journal-cut --data-dir "$dir/data" --at "$seg1:64"
has out "the journal is now empty; discarded: $records records"
has out "past the cut) as snapshot-"
[ "$(count "$dir"/data/snapshot-*.tgs)" = 0 ] || fail "a snapshot past the cut was kept"
[ "$(count "$dir"/data/snapshot-*.tgs.cut-*)" = "$snaps" ] || fail "the snapshots were not set aside"
t journal-check-empty 0 "$TOLLCTL" journal-check --data-dir "$dir/data"
field_is records 0
field_is last_lsn -

# tollbill and tollctl's billing commands on a ledger of their own (docs/BILLING.md):
# every answer and exit code a carrier's scripts rely on.
bdb="$dir/billing.sqlite"
t bill-bad-month 2 "$TOLLBILL" run --month 2026-13 --db "$bdb"
has err "a month is YYYY-MM"
t bill-product 0 "$TOLLBILL" product Basic-line 19.99 --db "$bdb"
t bill-product-cents 1 "$TOLLBILL" product Odd 1.005 --db "$bdb"
has err "a whole number of cents"
t bill-late-fee-cap 2 "$TOLLBILL" late-fee US-GA 1.6 --db "$bdb"
has err "a percent 0 to 1.5"
t bill-customer 0 "$TOLLBILL" customer 3001 --region US-GA --signup 2026-01-01 --db "$bdb"
t bill-subscribe 0 "$TOLLBILL" subscribe 3001 Basic-line --start 2026-01-01 --db "$bdb"
t bill-subscribe-unknown 1 "$TOLLBILL" subscribe 3001 Gold --start 2026-01-01 --db "$bdb"
has err "no product 'Gold'"
t bill-invoices 0 "$TOLLCTL" invoices 3001 --db "$bdb"
has out "invoice  month"
t bill-invoice-unknown 1 "$TOLLCTL" invoice 99 --db "$bdb"
has err "no invoice 99"
t bill-pay-bad 2 "$TOLLCTL" pay 3001 abc --db "$bdb"
has err "pay: bad arguments"
t bill-db-unreachable 3 "$TOLLBILL" collect --db "$dir/no/such/dir/b.sqlite"

echo "$checks commands, $fails failures"
[ "$fails" = 0 ]
