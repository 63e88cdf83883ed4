/*
 * tbl/tg_net_counters.h - the counters the server (engine/net.c) keeps.
 *
 * TG_NET_COUNTER(ENUM, name, info_section, description).  Generates enum
 * tg_net_counter (TG_NETC_<ENUM>, tg_net.h), the server's order; and, through
 * tbl/tg_counters.h which includes this table in its place, the engine
 * counters TG_C_<name> with their INFO lines and docs, contiguous and in the
 * same order: the handler hands the server the slice of a worker's block that
 * starts at the first row.  Only grow at the end.
 */
TG_NET_COUNTER(ACCEPTED, connections_accepted, clients,
               "connections accepted (the server's counters, in this order)")
TG_NET_COUNTER(CLOSED, connections_closed, clients, "connections closed, for any reason")
TG_NET_COUNTER(REJECTED, connections_rejected, clients,
               "connections closed at once: max-clients reached")
TG_NET_COUNTER(IDLE_CLOSED, connections_idle_closed, clients,
               "connections closed by the idle timeout")
TG_NET_COUNTER(PROTOCOL_ERRORS, protocol_errors, stats,
               "connections closed after a frame that could not parse")
TG_NET_COUNTER(TOO_LARGE, replies_too_large, stats, "replies replaced by -ERR reply too large")
TG_NET_COUNTER(BYTES_IN, bytes_received, stats, "bytes received from clients")
TG_NET_COUNTER(BYTES_OUT, bytes_sent, stats, "bytes sent to clients")
TG_NET_COUNTER(ADDR_REJECTED, connections_addr_rejected, clients,
               "connections closed at once: max-clients-per-addr reached for their address")
TG_NET_COUNTER(REQUEST_TIMEOUT, connections_request_timeout, clients,
               "connections closed because a request did not arrive whole within request-timeout")
TG_NET_COUNTER(STALLED, connections_stalled, clients,
               "connections closed because their replies went unread for reply-timeout (or 1 s "
               "while the worker ran short of receive buffers)")
TG_NET_COUNTER(DETACHED, connections_detached, clients,
               "connections handed over from request/reply to a stream: replicas, subscribers")
