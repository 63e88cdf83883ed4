/*
 * tbl/tg_config_limits.h - the limits of tollgated's numeric settings.
 *
 * TG_CFG_LIMIT(name, min, max, why).  One row per setting of tbl/tg_config.h
 * that has limits narrower than its kind; tg_config_check enforces them all,
 * before anything is opened, each violation in its own message
 * ("port: 70000 is out of range 0..65535 (a TCP port)").  A row names a
 * setting of tg_config.h (checked at start-up); the rows are kept apart from
 * that table so that its five-field rows stay as they are.
 */
TG_CFG_LIMIT("port", 0, 65535, "a TCP port")
TG_CFG_LIMIT("workers", 0, TG_WORKERS_MAX, "threads; 0 is one per core")
TG_CFG_LIMIT("max-grant", 1, TG_DURATION_MAX, "seconds, at most 31 days")
TG_CFG_LIMIT("calls-max", 1, UINT64_MAX, "calls in progress")
TG_CFG_LIMIT("ids-max", 1, UINT64_MAX, "ids remembered")
TG_CFG_LIMIT("ids-window", 1, UINT32_MAX, "seconds")
TG_CFG_LIMIT("ids-disk-max", 1, UINT64_MAX / 8, "ids on disk")
TG_CFG_LIMIT("max-clients", 1, UINT32_MAX, "connections")
TG_CFG_LIMIT("max-request", 64, UINT32_MAX, "bytes")
TG_CFG_LIMIT("max-request-noauth", 16, UINT32_MAX, "bytes")
TG_CFG_LIMIT("max-args", 3, TG_ARGS_MAX, "arguments, the command name included")
TG_CFG_LIMIT("idle-timeout", 0, 4000000, "seconds (kept as milliseconds in 32 bits)")
TG_CFG_LIMIT("request-timeout", 0, 4000000, "seconds (kept as milliseconds in 32 bits)")
TG_CFG_LIMIT("reply-timeout", 0, 4000000, "seconds (kept as milliseconds in 32 bits)")
TG_CFG_LIMIT("reply-buffer", 16384, UINT32_MAX, "bytes: room for the largest reply")
TG_CFG_LIMIT("redis-port", 1, 65535, "a TCP port")
TG_CFG_LIMIT("refill-ring", 2, TG_REFILL_RING_MAX, "triggers, a power of two")
TG_CFG_LIMIT("refill-timeout", 1, UINT32_MAX, "seconds")
TG_CFG_LIMIT("call-id-keep", 0, TG_CALLID_MAX, "bytes of a call id")
TG_CFG_LIMIT("refill-suspend-after", 0, 255, "failed refills (the count saturates at 255)")
TG_CFG_LIMIT("refill-close-after", 0, 315360000, "seconds, at most 10 years")
TG_CFG_LIMIT("subscriber-buffer", 1024, 1073741824, "bytes, 1 KiB to 1 GiB")
