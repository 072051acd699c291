/* monitor.h: one libpq connection per backend that polls its role, WAL position and replay lag. */
#ifndef PGMUX_MONITOR_H
#define PGMUX_MONITOR_H

struct backend;
struct monitor;

/* Starts polling a backend now and then every monitor_interval; NULL when out of memory. */
struct monitor *monitor_start(struct backend *be);
/* Polls again at once (pgmux's own connect to it failed, say). */
void monitor_kick(struct monitor *m);
/* Closes the connection and frees the monitor. */
void monitor_stop(struct monitor *m);

#endif
