/* stats.h: traffic counters summed per database from the pools, and their averages over stats_period. */
#ifndef PGMUX_STATS_H
#define PGMUX_STATS_H

#include <stdbool.h>
#include <stdint.h>

#include "pgmux.h"

/* How an average is formed from two snapshots `dur` microseconds apart. */
enum stats_avg_kind {
	STATS_AVG_RATE,       /* per second */
	STATS_AVG_PER_XACT,   /* per transaction in the period (µs per transaction) */
	STATS_AVG_PER_QUERY,  /* per query in the period (µs per query) */
};

/* The one table of counters: X(id, pool member, STATS_TOTALS name, SHOW STATS total_ name,
 * SHOW STATS avg_ name, average kind).  Order is PgBouncer's (1.21) SHOW STATS order. */
#define STATS_FIELDS(X) \
	X(STAT_XACT_COUNT,         xact_count,         "xact_count",         "total_xact_count",         "avg_xact_count",         STATS_AVG_RATE)      \
	X(STAT_QUERY_COUNT,        query_count,        "query_count",        "total_query_count",        "avg_query_count",        STATS_AVG_RATE)      \
	X(STAT_BYTES_RECV,         bytes_recv,         "bytes_received",     "total_received",           "avg_recv",               STATS_AVG_RATE)      \
	X(STAT_BYTES_SENT,         bytes_sent,         "bytes_sent",         "total_sent",               "avg_sent",               STATS_AVG_RATE)      \
	X(STAT_XACT_TIME,          xact_time,          "xact_time",          "total_xact_time",          "avg_xact_time",          STATS_AVG_PER_XACT)  \
	X(STAT_QUERY_TIME,         query_time,         "query_time",         "total_query_time",         "avg_query_time",         STATS_AVG_PER_QUERY) \
	X(STAT_WAIT_TIME,          wait_time,          "wait_time",          "total_wait_time",          "avg_wait_time",          STATS_AVG_RATE)      \
	X(STAT_CLIENT_PARSE_COUNT, client_parse_count, "client_parse_count", "total_client_parse_count", "avg_client_parse_count", STATS_AVG_RATE)      \
	X(STAT_SERVER_PARSE_COUNT, server_parse_count, "server_parse_count", "total_server_parse_count", "avg_server_parse_count", STATS_AVG_RATE)      \
	X(STAT_BIND_COUNT,         bind_count,         "bind_count",         "total_bind_count",         "avg_bind_count",         STATS_AVG_RATE)

enum stats_field {
#define STATS_ENUM(id, member, name, total, avg, kind) id,
	STATS_FIELDS(STATS_ENUM)
#undef STATS_ENUM
	STATS_N
};

struct stats {
	uint64_t v[STATS_N];
};

struct stats_field_desc {
	const char *name, *total_name, *avg_name;
	enum stats_avg_kind kind;
};

/* The table above as data, indexed by enum stats_field. */
extern const struct stats_field_desc stats_fields[STATS_N];

/* Adds a pool's counters to *s. */
void stats_add_pool(struct stats *s, const struct pool *p);

/* Totals of one database's pools (db NULL: every pool). */
void stats_total(struct worker *w, const struct database *db, struct stats *out);

/* Pure: the averages between snapshot `old` and `cur`, taken `dur` µs apart (0 gives zeros).
 * Counters that went backwards count as zero. */
void stats_average(const struct stats *cur, const struct stats *old, uint64_t dur, struct stats *avg);

/* Starts the stats_period snapshot timer for the worker; a no-op when it runs already. */
void stats_start(struct worker *w);

/* Stops the timer and frees the snapshots (at exit). */
void stats_stop(struct worker *w);

/* The averages over the last complete stats_period for db (NULL: all databases); zeros until
 * one period has passed since stats_start. */
void stats_average_of(struct worker *w, const struct database *db, struct stats *avg);

#endif
