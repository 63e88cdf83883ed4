/*
 * tbl/tg_config.h - every setting of tollgated, with its default.
 *
 * TG_CFG(name, kind, field, default, description).  Generates the config
 * struct's defaults, the file and command-line parser (every key is also a
 * --flag) and docs/CONFIG.md's table.  kind: STR, U32, U64, MODE (octal),
 * BOOL (yes/no).
 */
TG_CFG("bind", STR, bind, "127.0.0.1", "address to listen on")
TG_CFG("port", U32, port, "6390", "TCP port (0 picks a free one and logs it)")
TG_CFG("workers", U32, workers, "0", "worker threads, each with its own io_uring; 0 = one per core")
TG_CFG("shm-name", STR, shm_name, "/tollgate", "name of the shared-memory segment")
TG_CFG("shm-mode", MODE, shm_mode, "0600",
       "permissions of the segment, set when created or reused; 0600 or 0640 (never writable "
       "by others)")
TG_CFG("shm-reuse", BOOL, shm_reuse, "yes", "attach to a surviving segment of the same capacity")
TG_CFG("capacity", U64, capacity, "1000000", "accounts the segment is sized for")
TG_CFG("rates", STR, rates, "", "rate-plan CSV file or directory; empty = the bundled demo plans")
TG_CFG("accounts", STR, accounts, "",
       "accounts CSV loaded at start; empty = bundled demo accounts; none = skip")
TG_CFG("requirepass", STR, requirepass, "", "password clients must AUTH with; empty = none")
TG_CFG("max-grant", U32, max_grant, "3600", "most seconds one CALL.AUTH or CALL.UPDATE grants")
TG_CFG("call-grace", U32, call_grace, "120",
       "seconds past its grant before a call with no CALL.END is settled at the grant")
TG_CFG("calls-max", U64, calls_max, "1000000", "calls in progress at once")
TG_CFG("ids-max", U64, ids_max, "4000000",
       "call ids and txids held in memory (the recent ones; older ones move to disk)")
TG_CFG("ids-window", U32, ids_window, "3024000",
       "seconds each id is remembered, in memory or on disk (the horizon: 35 days)")
TG_CFG("ids-disk-max", U64, ids_disk_max, "100000000",
       "ids remembered on disk at most (about 2.5 bytes of memory each for their filters)")
TG_CFG("max-clients", U32, max_clients, "10000", "connections at once, all workers")
TG_CFG("idle-timeout", U32, idle_timeout, "300",
       "seconds before an idle or half-sent connection is closed; 0 = never")
TG_CFG("max-request", U32, max_request, "65536", "bytes of one request")
TG_CFG("max-request-noauth", U32, max_request_noauth, "256", "bytes of one request before AUTH")
/* Hardening (docs/SECURITY.md). */
TG_CFG("users", STR, users, "",
       "file of per-switch credentials, one 'NAME ROLE PASSWORD' line each (roles call, refill, "
       "admin); empty = none")
TG_CFG("auth-max-failures", U32, auth_max_failures, "5",
       "failed AUTHs after which a connection is closed; 0 = never")
TG_CFG("auth-addr-failures", U32, auth_addr_failures, "10",
       "failed AUTHs from one source address within auth-lockout seconds that lock the address "
       "out of AUTH for auth-lockout seconds; 0 = no lockout")
TG_CFG("auth-lockout", U32, auth_lockout, "60",
       "seconds of the failure window and of the lockout (auth-addr-failures)")
TG_CFG("auth-timeout", U32, auth_timeout, "10",
       "seconds a connection may stay unauthenticated (when AUTH is required), however busy "
       "with PING; 0 = no limit")
TG_CFG("max-clients-per-addr", U32, max_clients_per_addr, "1024",
       "connections at once from one source address, all workers; 0 = no limit")
TG_CFG("max-args", U32, max_args, "32", "arguments in one request, command name included (3..32)")
TG_CFG("request-timeout", U32, request_timeout, "10",
       "seconds a request may take to arrive whole after its first byte; 0 = no limit")
TG_CFG("reply-timeout", U32, reply_timeout, "30",
       "seconds replies may wait unread (no progress sending them) before the connection is "
       "closed; 0 = no limit")
TG_CFG("shm-group", STR, shm_group, "",
       "group given the segment (name or number), to let tollstat read it with shm-mode 0640; "
       "empty = the engine's own")
TG_CFG("reply-buffer", U32, reply_buffer, "65536", "bytes of replies per connection per send")
TG_CFG("redis-host", STR, redis_host, "127.0.0.1",
       "Redis the refill requests are published to; none = publish nothing (requests stay pending)")
TG_CFG("redis-port", U32, redis_port, "6379", "port of that Redis")
TG_CFG("refill-stream", STR, refill_stream, "tollgate:refill",
       "stream key the refill requests are added to")
TG_CFG("refill-timeout", U32, refill_timeout, "600",
       "seconds a published refill may go unanswered (no credit, no failure) before it is "
       "republished with the same id")
TG_CFG("refill-ring", U32, refill_ring, "4096",
       "refill triggers each worker can hand the publisher before they wait in shared memory; a "
       "power of two")
TG_CFG("currency", STR, currency, "USD",
       "ISO 4217 code of the currency payments are made in (USD, EUR, GBP, JPY, ...): refill "
       "amounts must be whole minor units of it (cents), top-ups are rounded up to one")
TG_CFG("stop-stream", STR, stop_stream, "tollgate:stops",
       "stream key (on redis-host) the calls to stop are added to: an account suspended, closed "
       "or drained mid-call; none = announce nothing (CALL.UPDATE still refuses them)")
TG_CFG("alarm-stream", STR, alarm_stream, "tollgate:alarms",
       "stream key (on redis-host) the fraud alarms are added to: an account reaching MAXCALLS, "
       "CALLCAP or DAILYCAP, once per account, kind and UTC day; none = raise none")
TG_CFG("call-id-keep", U32, call_id_keep, "64",
       "bytes of each call id kept with the call in progress, for the stop stream (0..255; 0 = "
       "keep none, no stop stream); a longer id is not announced")
/* The course of a failing card (docs/REFILL.md). */
TG_CFG("refill-suspend-after", U32, refill_suspend_after, "3",
       "consecutive failed refills (each after all its attempts) after which an active account is "
       "suspended for non-payment; 0 = never")
TG_CFG("refill-close-after", U32, refill_close_after, "2592000",
       "seconds an account stays suspended for non-payment, with no payment, before it is "
       "closed (30 days); 0 = never")
/* Durability (docs/JOURNAL.md).  These stay last: other blocks are added above them. */
TG_CFG("data-dir", STR, data_dir, "/var/lib/tollgate",
       "directory of the journal and the snapshots; created if missing")
TG_CFG("durability", STR, durability, "durable",
       "durable: a reply leaves only once its change is on disk; relaxed: the journal is synced "
       "every journal-flush-ms and up to that much acknowledged work can be lost; off: no journal "
       "(a reboot loses every balance)")
TG_CFG("journal-flush-ms", U32, journal_flush_ms, "10",
       "relaxed mode: milliseconds between syncs of the journal, the most acknowledged work lost")
TG_CFG("journal-segment-size", U64, journal_segment_size, "67108864",
       "bytes after which the journal moves on to a new segment file")
TG_CFG("disk-reserve", U64, disk_reserve, "268435456",
       "free bytes the data-dir's file system must keep: below it money-moving commands are "
       "refused with NOSPACE rather than acknowledged without a record")
TG_CFG("ledger-keep-max", U64, ledger_keep_max, "1073741824",
       "bytes of journal kept, past what the snapshots need, for a ledger exporter behind "
       "(its ledger.pos); older segments go anyway and ledger_segments_cut counts them")
TG_CFG("snapshot-interval", U32, snapshot_interval, "300",
       "seconds between snapshots (taken only when the journal grew); 0 = only at shutdown")
TG_CFG("subscriber-buffer", U64, subscriber_buffer, "1048576",
       "bytes of messages and replies one SUBSCRIBE connection may have unsent; past it the "
       "subscriber is dropped and counted (pubsub_slow_dropped)")
TG_CFG("replica-of", STR, replica_of, "",
       "HOST PORT of the primary to follow as a replica; empty = this node is a primary "
       "(docs/HA.md)")
TG_CFG("primary-user", STR, primary_user, "",
       "user a replica AUTHs as on its primary (a user of role replica there); empty = default")
TG_CFG("primary-password", STR, primary_password, "",
       "password a replica AUTHs with on its primary; empty = no AUTH")
TG_CFG("replica-priority", U32, replica_priority, "100",
       "Sentinel's replica-priority: lower is promoted first, 0 = never promoted")
TG_CFG("min-replicas-to-write", U32, min_replicas_to_write, "0",
       "durable mode: acknowledge a change only once this many replicas have it on disk too")
TG_CFG("min-replicas-timeout", U32, min_replicas_timeout, "1000",
       "milliseconds a change waits for min-replicas-to-write replicas before "
       "min-replicas-on-timeout applies")
TG_CFG("min-replicas-on-timeout", STR, min_replicas_on_timeout, "refuse",
       "refuse: money-moving commands get NOREPLICAS until enough replicas catch up; async: "
       "acknowledge on this node's disk alone (logged and counted)")
TG_CFG("snapshot-records", U64, snapshot_records, "4000000",
       "journal records after which a snapshot is taken without waiting for snapshot-interval, "
       "so a restart replays about this many at most; 0 = by snapshot-interval only")
