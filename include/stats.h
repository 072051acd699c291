/* stats.h: traffic counters summed per database, their averages over stats_period, and per-pool saturation windows. */
#ifndef PGMUX_STATS_H
#define PGMUX_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "stats_fields.h"

enum stats_field {
#define STATS_ENUM(id, member, name, total, avg, kind, prom, unit) id,
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
	const char *prom_name;      /* /metrics: pgmux_stats_<prom_name>_total */
	enum stats_unit unit;
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
/* The console's row: its counters and their averages over the last stats_period.  The
 * all-databases figures (db NULL above) include them. */
void stats_console(struct worker *w, struct stats *tot, struct stats *avg);

/* ---- SHOW POOLS figures ------------------------------------------------------------------ */

/* The numeric SHOW POOLS columns between user and pool_mode, in PgBouncer's order:
 * X(member, help).  One table so that the console and /metrics give the same numbers. */
#define POOL_FIGURES(X) \
	X(cl_active,             "client connections linked to a server or idle between transactions") \
	X(cl_waiting,            "client connections waiting for a server (or for the first server login)") \
	X(cl_active_cancel_req,  "cancel requests forwarded to a server (always 0 in pgmux)") \
	X(cl_waiting_cancel_req, "cancel requests waiting for a server (always 0 in pgmux)") \
	X(sv_active,             "server connections linked to a client") \
	X(sv_active_cancel,      "server connections forwarding a cancel (always 0 in pgmux)") \
	X(sv_being_canceled,     "server connections with a cancel request in flight") \
	X(sv_idle,               "server connections ready for a client") \
	X(sv_used,               "server connections released and not yet checked") \
	X(sv_tested,             "server connections running server_reset_query or server_check_query") \
	X(sv_login,              "server connections logging in") \
	X(maxwait,               "seconds part of the oldest client wait") \
	X(maxwait_us,            "microseconds part of the oldest client wait")

struct stats_pool_row {
#define POOL_FIGURE_MEMBER(member, help) int64_t member;
	POOL_FIGURES(POOL_FIGURE_MEMBER)
#undef POOL_FIGURE_MEMBER
	int64_t pool_size;
	double saturation;          /* sv_active / pool_size; 0 when pool_size is 0 */
	uint64_t maxwait_total_us;  /* maxwait and maxwait_us as one figure */
};

/* A pool's SHOW POOLS figures as of `now` (worker_now()). */
void stats_pool_row(const struct pool *p, uint64_t now, struct stats_pool_row *r);

/* ---- saturation --------------------------------------------------------------------------- */

/* The quantiles SHOW SATURATION and /metrics report, in column order (p50, p95, p99). */
#define STATS_NQ 3
extern const double stats_quantiles[STATS_NQ];

enum stats_hist_kind { STATS_H_WAIT, STATS_H_QUERY, STATS_H_XACT, STATS_NH };

/* One pool's saturation figures.  Percentiles cover the percentile window: the stats_period in
 * progress and the complete one before it (since the pool was made, until two periods have
 * passed), so they never go blank at a period boundary.  peak_period covers the same window;
 * peak_1m the last 60 seconds, sampled once a second plus what happened since the last sample. */
struct stats_saturation {
	const struct pool *pool;
	int pool_size, sv_active, cl_waiting;
	double saturation;              /* sv_active / pool_size */
	int peak_1m, peak_period;       /* highest sv_active */
	double peak_saturation_1m;      /* peak_1m / pool_size */
	int headroom;                   /* pool_size - peak_1m (negative when the reserve was used) */
	uint64_t maxwait_us;            /* the oldest client's wait so far */
	uint64_t saturated_us;          /* how long saturation has stayed >= saturation_warn; 0 if not */
	uint64_t q[STATS_NH][STATS_NQ]; /* wait, query, xact percentiles in the window (µs) */
	uint64_t win_count[STATS_NH];   /* events in the window */
};

/* Seconds of saturation history kept per pool (the status page's 15-minute chart): one byte
 * each, so 900 bytes per pool. */
#define STATS_HISTORY 900

/* Copies pool p's saturation history into out, oldest second first: each byte is the second's
 * peak sv_active as a percentage of pool_size (capped at 255).  At most max samples, and only
 * seconds sampled since the pool appeared.  Returns how many were written (0 for an unknown
 * pool or before the first sample). */
size_t stats_saturation_history(struct worker *w, const struct pool *p, uint8_t *out, size_t max);

/* Fills *out for pool p (of w); the pool need not have been sampled yet. */
void stats_saturation_of(struct worker *w, const struct pool *p, struct stats_saturation *out);

/* Pure: out = cur - old, bucket by bucket (a bucket that went backwards counts as 0).  This is
 * how a window's histogram is formed from the cumulative one and a snapshot. */
void stats_hist_window(const struct hist *cur, const struct hist *old, struct hist *out);

/* Pure: does a pool with `active` of `size` servers count as saturated at threshold `warn`
 * (a fraction; 0 turns the warning off)?  At or above the threshold counts. */
bool stats_over_threshold(int active, int size, double warn);

/* Forgets a database's snapshot and its pools' saturation windows; call before removing it
 * (pool_remove_database), so that a new database or pool at the same address does not inherit
 * them.  The caller that removes tells stats.c, rather than pool.c: the pools know nothing of
 * the figures kept about them. */
void stats_database_gone(struct worker *w, const struct database *db);
/* The same for one pool about to be removed alone (pool_idle_timeout). */
void stats_pool_gone(struct worker *w, const struct pool *p);

#endif
