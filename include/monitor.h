/* monitor.h: one libpq connection per backend that polls its role, WAL position and replay lag. */
#ifndef PGMUX_MONITOR_H
#define PGMUX_MONITOR_H

#include <stdbool.h>
#include <stdint.h>

struct database;
struct monitor;
struct worker;

/* What one probe of a backend saw, handed to the monitor's owner (routing), which alone keeps
 * the backend's state: the monitor knows only the database it connects to. */
struct monitor_news {
	bool up;                    /* the probe answered; else error says why */
	bool replica;               /* pg_is_in_recovery() */
	uint64_t lsn;               /* primary: pg_current_wal_lsn; replica: replay LSN; 0 unknown */
	int64_t lag_ms;             /* replica: age of its last replayed transaction; primary: 0 */
	const char *error;          /* !up: what failed, without libpq's trailing newline */
};

/* Where a monitor reports each probe's outcome; owner is what monitor_start was given. */
typedef void (*monitor_report_fn)(void *owner, const struct monitor_news *n);

/* Starts polling database db (a backend of a section) of worker w now and then every
 * monitor_interval, each outcome reported to report(owner, ...); NULL when out of memory. */
struct monitor *monitor_start(struct worker *w, struct database *db, monitor_report_fn report,
			      void *owner);
/* Polls again at once (pgmux's own connect to it failed, say). */
void monitor_kick(struct monitor *m);
/* Closes the connection and frees the monitor. */
void monitor_stop(struct monitor *m);

#endif
