#!/usr/bin/env python3
"""bench/ids-replay.py - send again a sample of the CDRs of a `tollbench load` run.

The run must have used --run-id RUN and --acct-by-id, so each id's account is
known: splitmix64(conn << 40 | seq) mod ACCOUNTS (bench/bench_load.c, acct_of_id).
Every id of the sample is drawn uniformly from the whole run (its oldest ids
included, which by then live in runs on disk), sent with its own account,
destination and duration, pipelined, and must be answered with the first
reply: the charge RATE quotes.  INFO's cdr and money_charged must not move
(nothing charged twice); replays must grow by the sample's size.

  bench/ids-replay.py --port P --run-id RUN --conns C --count N
                      [--sample 1000000] [--accounts 1000000]
                      [--dest 14155551212] [--secs 125] [--plan basic]

Only the Python standard library.  Exit 0 when every reply was the first
one and the counters held, 1 otherwise.
"""
import argparse
import random
import socket
import sys
import time

M64 = (1 << 64) - 1


def acct_of_id(conn, seq, accounts):
    z = ((conn << 40 | seq) + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return (z ^ (z >> 31)) % accounts


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def send(self, *cmds):
        out = []
        for words in cmds:
            out.append(b"*%d\r\n" % len(words))
            for w in words:
                w = w if isinstance(w, bytes) else str(w).encode()
                out.append(b"$%d\r\n%s\r\n" % (len(w), w))
        self.s.sendall(b"".join(out))

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def reply(self):
        ln = self.line()
        t, rest = ln[:1], ln[1:]
        if t in (b"+", b"-", b":"):
            return t + rest
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(1 << 20)
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if t == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise ValueError("bad reply %r" % ln)


def info(c):
    c.send(["INFO", "all"])
    text = c.reply().decode()
    out = {}
    for ln in text.split("\r\n"):
        if ":" in ln and not ln.startswith("#"):
            k, v = ln.split(":", 1)
            out[k] = v
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--conns", type=int, required=True)
    ap.add_argument("--count", type=int, required=True, help="requests of the run (-n)")
    ap.add_argument("--sample", type=int, default=1000000)
    ap.add_argument("--accounts", type=int, default=1000000)
    ap.add_argument("--dest", default="14155551212")
    ap.add_argument("--secs", default="125")
    ap.add_argument("--plan", default="basic")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    c = Conn(a.port)
    c.send(["RATE", a.plan, a.dest, a.secs])
    quote = c.reply()
    if not isinstance(quote, list) or b"charge" not in quote[0::2]:
        sys.exit("RATE %s %s %s: %r" % (a.plan, a.dest, a.secs, quote))
    charge = quote[quote.index(b"charge") + 1]
    before = info(c)
    rng = random.Random(a.seed)
    per = [a.count // a.conns + (1 if i < a.count % a.conns else 0) for i in range(a.conns)]
    t0 = time.time()
    wrong = conflicts = errors = 0
    first_wrong = None
    window = 2000
    sent = 0
    while sent < a.sample:
        batch = []
        for _ in range(min(window, a.sample - sent)):
            conn = rng.randrange(a.conns)
            seq = rng.randrange(per[conn])
            acct = acct_of_id(conn, seq, a.accounts)
            batch.append(["CDR", acct, a.dest, a.secs, "c%s.%d.%d" % (a.run_id, conn, seq)])
        c.send(*batch)
        for cmd in batch:
            r = c.reply()
            if r != charge:
                if isinstance(r, bytes) and r.startswith(b"-CONFLICT"):
                    conflicts += 1
                elif isinstance(r, bytes) and r.startswith(b"-"):
                    errors += 1
                else:
                    wrong += 1
                if first_wrong is None:
                    first_wrong = (cmd, r)
        sent += len(batch)
    took = time.time() - t0
    after = info(c)
    d_cdr = int(after["cdr"]) - int(before["cdr"])
    d_replays = int(after["replays"]) - int(before["replays"])
    same_money = after["money_charged"] == before["money_charged"]
    print("replayed %d ids drawn from %d in %.1f s (%.0f/s): %d first replies, "
          "%d other replies, %d CONFLICT, %d errors" %
          (a.sample, a.count, took, a.sample / took, a.sample - wrong - conflicts - errors,
           wrong, conflicts, errors))
    print("cdr counter moved by %d, replays by %d, money_charged %s (%s)" %
          (d_cdr, d_replays, "unchanged" if same_money else "CHANGED", after["money_charged"]))
    print("disk reads for the replay: %d" %
          (int(after.get("ids_disk_reads", 0)) - int(before.get("ids_disk_reads", 0))))
    if first_wrong:
        print("first bad reply: %r -> %r" % first_wrong)
    ok = wrong == 0 and conflicts == 0 and errors == 0 and d_cdr == 0 and same_money \
        and d_replays == a.sample
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
