--[[
bench/baseline.lua - tollgated's `CDR` as a Redis Lua script: the baseline
that bench/redis-compare.sh runs side by side with tollgated.

    EVALSHA <sha> 0 <acct> <dest> <duration> <callid>
    EVALSHA <sha> 4 <acct> <dest> <duration> <callid>      (same thing via KEYS)

One call does what tollgated's CDR does, in the same order, with the same
replies (docs/RATES.md, product brief "Money and rating" / "Call control"):

  1. check the arguments: account = 1-20 digits below 2^64-1 (leading zeros
     allowed: redis-benchmark pads __rand_int__ to 12 digits, so
     "000000000042" is account 42), destination = 1-32 digits, duration =
     0..2678400 s (31 days), call id = 1-255 bytes;
  2. exactly-once: key `cdr:<callid>` holds "<acct>|<dest>|<duration>|<charge>"
     for 24 h.  A replay with the same account, destination and duration
     returns the stored charge and debits nothing; with other data it is
     -CONFLICT.  A refused request (NOACCOUNT, NOPLAN, NORATE, OVERFLOW) is
     not remembered, as in tollgated;
  3. the account hash `acct:<id>` (one HMGET): plan, threshold, refill mode,
     refill amount, payment flag, refill-in-flight flag;
  4. longest-prefix match in the plan hash `plan:<name>` (field = prefix,
     value = "rate_per_min_micro,connect_micro,initial,increment,minimum,
     category"): one HMGET of every prefix of the destination, longest first;
     the first hit wins;
  5. billed seconds and charge in integer micro-units, exactly tollgated's
     rule: billed = 0 for 0 s; max(min, initial) if d <= initial; else
     max(min, initial + ceil((d - initial) / increment) * increment);
     charge = connect + ceil(billed * rate_per_min / 60);
  6. debit (HINCRBY balance), usage per category (HINCRBY usage_<category>);
  7. threshold: a debit that takes the balance from above the threshold to at
     or below it, with auto-refill on, a payment method on file and no
     refill in flight, sets the in-flight flag, bumps refill_seq and XADDs
     the request (id refill:<acct>:<seq>, account, balance, threshold, mode,
     amount) to the stream `tollgate:refills`.  All of it is one atomic step
     because a script is;
  8. remember the call id (SET ... EX 86400 NX) and reply with the charge as
     a decimal string, 6 decimals at most, trailing zeros trimmed, exactly
     like tollgated's tg_money_format ("0.0252", "1.99", "0").

Numbers.  Redis runs Lua 5.1, whose only number type is a double.  Every
amount here is an integer count of micro-units and every operation is
integer-valued: sums, differences and products of integers below 2^53 are
exact in a double, and the divisions are done as (a - fmod(a, b)) / b, where
C's fmod is exact and the quotient of an exact multiple is exact, never as
floor(a / b) (a rounded quotient can land on the next integer once a/b is
above 2^48).  Every intermediate is checked against 2^53 and the script
answers -OVERFLOW beyond it.  In practice that means: rates up to about
$3,300/min for the longest (31-day) call, balances and thresholds within
+-$9,007,199,254 (2^53 micro-units); the loader (bench/load-baseline.sh)
stores whole micro-unit integers and never a fraction.  tollgated itself
computes in int64/int128 and has no such limit; within these limits both
compute the same charge bit for bit.

Account ids are kept as normalized decimal *strings* (leading zeros
stripped), never converted to numbers, so ids up to 2^64-2 work exactly.

Key layout (what bench/load-baseline.sh writes):
  acct:<id>    hash: balance, plan, threshold, refill (off|add|topup),
               refill_amount, payment (0|1), refill_pending (0|1),
               refill_seq, usage_<category> ...
  plan:<name>  hash: <prefix> -> "rate_micro,connect_micro,initial,increment,minimum,category"
  cdr:<callid> string, 24 h TTL: "<acct>|<dest>|<duration>|<charge>"
  tollgate:refills   stream of refill requests
]]

local TWO53 = 9007199254740992
local DURATION_MAX = 2678400
local CALLID_MAX = 255
local DEST_MAX = 32
local WINDOW_S = 86400
local SCALE = 1000000

local fmod = math.fmod

-- an integer-valued number below 2^53 as decimal text; never "-0", which
-- Redis's string2ll refuses
local function i2s(x)
	if x == 0 then
		return "0"
	end
	return string.format("%.0f", x)
end

local a_acct, a_dest, a_dur, a_call
if #KEYS >= 4 then
	a_acct, a_dest, a_dur, a_call = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
else
	a_acct, a_dest, a_dur, a_call = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
end
if a_call == nil then
	return redis.error_reply("ERR wrong number of arguments: <acct> <dest> <duration> <callid>")
end

-- 1. arguments ---------------------------------------------------------------
local function show(s)
	if #s > 40 then
		s = string.sub(s, 1, 40) .. "..."
	end
	return (string.gsub(s, "[^\32-\126]", "?"))
end

-- account: digits, leading zeros allowed; normalized as a string
if #a_acct < 1 or string.find(a_acct, "^%d+$") == nil then
	return redis.error_reply("ERR invalid account id '" .. show(a_acct) .. "'")
end
local acct = string.gsub(a_acct, "^0+", "")
if acct == "" then
	acct = "0"
end
-- below 2^64 - 1 (UINT64_MAX is reserved), compared as equal-length strings
if #acct > 20 or (#acct == 20 and acct >= "18446744073709551615") then
	return redis.error_reply("ERR invalid account id '" .. show(a_acct) .. "'")
end

local dlen = #a_dest
if dlen < 1 or dlen > DEST_MAX or string.find(a_dest, "^%d+$") == nil then
	return redis.error_reply("ERR invalid destination '" .. show(a_dest) .. "' (1 to 32 digits)")
end

if #a_dur < 1 or #a_dur > 20 or string.find(a_dur, "^%d+$") == nil
    or tonumber(a_dur) > DURATION_MAX then
	return redis.error_reply("ERR invalid duration '" .. show(a_dur) .. "' (0 to 2678400 seconds)")
end
local d = tonumber(a_dur) -- an integer <= 2678400: exact

if #a_call < 1 or #a_call > CALLID_MAX then
	return redis.error_reply("ERR invalid call id (1 to 255 bytes)")
end

-- 2. exactly-once: a replay answers with the first charge ---------------------
local idkey = "cdr:" .. a_call
-- the fingerprint tollgated keys on: account (as a number), destination, duration
local fp = acct .. "|" .. a_dest .. "|" .. d .. "|"
local seen = redis.call("GET", idkey)
if seen then
	if string.sub(seen, 1, #fp) == fp then
		return string.sub(seen, #fp + 1)
	end
	return redis.error_reply("CONFLICT id already used with different data")
end

-- 3. the account ----------------------------------------------------------------
local akey = "acct:" .. acct
local a = redis.call("HMGET", akey, "plan", "threshold", "refill", "refill_amount",
	"payment", "refill_pending")
local plan = a[1]
if not plan then
	return redis.error_reply("NOACCOUNT no such account")
end

-- 4. longest-prefix match: every prefix of the destination, longest first -----
local pkey = "plan:" .. plan
local cand = {}
for n = dlen, 1, -1 do
	cand[dlen - n + 1] = string.sub(a_dest, 1, n)
end
local hits = redis.call("HMGET", pkey, unpack(cand))
local row
for i = 1, dlen do
	if hits[i] then
		row = hits[i]
		break
	end
end
if not row then
	if redis.call("EXISTS", pkey) == 0 then
		return redis.error_reply("NOPLAN the account's rate plan is not loaded")
	end
	return redis.error_reply("NORATE no rate for this destination")
end
local s_rate, s_conn, s_init, s_incr, s_min, cat =
    string.match(row, "^(%d+),(%d+),(%d+),(%d+),(%d+),([%w_]+)$")
if not cat then
	return redis.error_reply("ERR bad rate row in " .. pkey .. ": " .. show(row))
end
local rate, conn = tonumber(s_rate), tonumber(s_conn)
local I, N, M = tonumber(s_init), tonumber(s_incr), tonumber(s_min)
if rate >= TWO53 or conn >= TWO53 or I < 1 or N < 1 then
	return redis.error_reply("ERR bad rate row in " .. pkey .. ": " .. show(row))
end

-- 5. billed seconds and charge, integers only ----------------------------------
-- ceil(a / b) for integers 0 <= a < 2^53, b >= 1, exactly
local function ceil_div(x, b)
	local r = fmod(x, b)
	local q = (x - r) / b
	if r > 0 then
		q = q + 1
	end
	return q
end

local billed
if d == 0 then
	billed = 0
elseif d <= I then
	billed = I
else
	billed = I + ceil_div(d - I, N) * N
end
if billed > 0 and billed < M then
	billed = M -- the minimum is a floor under every connected call (docs/RATES.md)
end

local charge = 0
if billed > 0 then
	local prod = billed * rate
	if prod >= TWO53 then
		return redis.error_reply("OVERFLOW amount out of range")
	end
	charge = conn + ceil_div(prod, 60)
	if charge >= TWO53 then
		return redis.error_reply("OVERFLOW amount out of range")
	end
end

-- 6. debit and usage ------------------------------------------------------------
-- amounts go to Redis as exact integer text (i2s), not as Lua numbers
local after = redis.call("HINCRBY", akey, "balance", i2s(-charge))
redis.call("HINCRBY", akey, "usage_" .. cat, i2s(charge))

-- 7. threshold crossing: one refill request per crossing ----------------------
local mode = a[3]
if mode and mode ~= "off" and a[5] == "1" and a[6] ~= "1" then
	local thr = tonumber(a[2] or "0")
	local before = after + charge
	if after <= -TWO53 or before >= TWO53 then
		return redis.error_reply("OVERFLOW amount out of range")
	end
	if before > thr and after <= thr then
		local amount = tonumber(a[4] or "0")
		if mode == "topup" then
			amount = amount - after
			if amount < 0 then
				amount = 0
			end
		end
		local seq = redis.call("HINCRBY", akey, "refill_seq", 1)
		redis.call("HSET", akey, "refill_pending", "1")
		redis.call("XADD", "tollgate:refills", "*",
			"id", "refill:" .. acct .. ":" .. seq,
			"account", acct,
			"balance", i2s(after),
			"threshold", i2s(thr),
			"mode", mode,
			"amount", i2s(amount))
	end
end

-- 8. the reply, as tg_money_format writes it -----------------------------------
local frac = fmod(charge, SCALE)
local out = i2s((charge - frac) / SCALE)
if frac > 0 then
	local f = string.gsub(string.format("%06d", frac), "0+$", "")
	out = out .. "." .. f
end
redis.call("SET", idkey, fp .. out, "EX", WINDOW_S, "NX")
return out
