/* stats_fields.h: the one table of traffic counters (STATS_FIELDS): the pool's counter members
 * (model.h), the per-database totals and averages (stats.h) and every column that prints them
 * are generated from it.  Plain data: includes nothing. */
#ifndef PGMUX_STATS_FIELDS_H
#define PGMUX_STATS_FIELDS_H

/* How an average is formed from two snapshots `dur` microseconds apart. */
enum stats_avg_kind {
	STATS_AVG_RATE,       /* per second */
	STATS_AVG_PER_XACT,   /* per transaction in the period (µs per transaction) */
	STATS_AVG_PER_QUERY,  /* per query in the period (µs per query) */
};

/* The unit of a counter, which /metrics converts to Prometheus's base units. */
enum stats_unit {
	STATS_U_COUNT,        /* a plain count */
	STATS_U_BYTES,        /* bytes (already a base unit) */
	STATS_U_USEC,         /* microseconds: /metrics shows seconds */
};

/* The one table of counters: X(id, pool member, STATS_TOTALS name, SHOW STATS total_ name,
 * SHOW STATS avg_ name, average kind, /metrics family (pgmux_stats_<it>_total), unit).  Order
 * is PgBouncer's (1.25) SHOW STATS order: server_assignment_count counts servers handed to
 * clients, client_login_count logins.  The console keeps PgBouncer's names and units; the
 * /metrics name puts the base unit last, as Prometheus's naming rules (and promtool) want. */
#define STATS_FIELDS(X) \
	X(STAT_SERVER_ASSIGNMENTS, server_assignment_count, "server_assignment_count", "total_server_assignment_count", "avg_server_assignment_count", STATS_AVG_RATE, "server_assignment_count", STATS_U_COUNT) \
	X(STAT_XACT_COUNT,         xact_count,         "xact_count",         "total_xact_count",         "avg_xact_count",         STATS_AVG_RATE,      "xact_count",         STATS_U_COUNT) \
	X(STAT_QUERY_COUNT,        query_count,        "query_count",        "total_query_count",        "avg_query_count",        STATS_AVG_RATE,      "query_count",        STATS_U_COUNT) \
	X(STAT_BYTES_RECV,         bytes_recv,         "bytes_received",     "total_received",           "avg_recv",               STATS_AVG_RATE,      "received_bytes",     STATS_U_BYTES) \
	X(STAT_BYTES_SENT,         bytes_sent,         "bytes_sent",         "total_sent",               "avg_sent",               STATS_AVG_RATE,      "sent_bytes",         STATS_U_BYTES) \
	X(STAT_XACT_TIME,          xact_time,          "xact_time",          "total_xact_time",          "avg_xact_time",          STATS_AVG_PER_XACT,  "xact_time_seconds",  STATS_U_USEC) \
	X(STAT_QUERY_TIME,         query_time,         "query_time",         "total_query_time",         "avg_query_time",         STATS_AVG_PER_QUERY, "query_time_seconds", STATS_U_USEC) \
	X(STAT_WAIT_TIME,          wait_time,          "wait_time",          "total_wait_time",          "avg_wait_time",          STATS_AVG_RATE,      "wait_time_seconds",  STATS_U_USEC) \
	X(STAT_CLIENT_PARSE_COUNT, client_parse_count, "client_parse_count", "total_client_parse_count", "avg_client_parse_count", STATS_AVG_RATE,      "client_parse_count", STATS_U_COUNT) \
	X(STAT_SERVER_PARSE_COUNT, server_parse_count, "server_parse_count", "total_server_parse_count", "avg_server_parse_count", STATS_AVG_RATE,      "server_parse_count", STATS_U_COUNT) \
	X(STAT_BIND_COUNT,         bind_count,         "bind_count",         "total_bind_count",         "avg_bind_count",         STATS_AVG_RATE,      "bind_count",         STATS_U_COUNT) \
	X(STAT_CLIENT_LOGINS,      client_login_count, "client_login_count", "total_client_login_count", "avg_client_login_count", STATS_AVG_RATE, "client_login_count", STATS_U_COUNT)

#endif
