/* pqev.h: a libpq connection's socket and a timer on the worker's event loop (the monitor and auth_query drive libpq's async API with it). */
#ifndef PGMUX_PQEV_H
#define PGMUX_PQEV_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <libpq-fe.h>

struct pqev {
	struct event_base *base;
	event_callback_fn on_io;
	void *arg;
	struct event ev_io, ev_timer;
	bool io_added;
};

/* Sets up p: on_io runs when the socket is ready, on_timer when the timer fires, both with arg.
 * Registers nothing yet. */
void pqev_init(struct pqev *p, struct event_base *base, event_callback_fn on_io,
	       event_callback_fn on_timer, void *arg);

/* (Re)arms the timer to fire once in usec microseconds. */
void pqev_timer(struct pqev *p, uint64_t usec);

/* Stops the timer. */
void pqev_timer_off(struct pqev *p);

/* Waits for `what` (EV_READ / EV_WRITE, EV_PERSIST) on conn's current socket.  libpq may change
 * sockets while it connects (the next address), so every wait registers afresh.  A connection
 * without a socket registers nothing. */
void pqev_wait(struct pqev *p, PGconn *conn, short what);

/* Stops waiting on the socket (before PQfinish closes it). */
void pqev_io_off(struct pqev *p);

/* Starts a non-blocking connection with conninfo, which it scrubs (it may hold a password) and
 * frees.  Returns 0 with *conn set and a wait for writability registered, or -1: *conn is then
 * NULL (out of memory) or a failed connection whose PQerrorMessage says why; the caller
 * PQfinishes it either way. */
int pqev_connect(struct pqev *p, char *conninfo, PGconn **conn);

/* One step of the connection's login (PQconnectPoll) after its socket was ready: 1 when it is
 * made (the socket wait is off), 0 while it goes on (the next wait is registered), -1 when it
 * failed (PQerrorMessage says why). */
int pqev_connect_poll(struct pqev *p, PGconn *conn);

/* After a socket event `what` of a connection with a query in flight: when it was writable,
 * sends more of the query, and once all is sent waits for the answer (readable, persistent).
 * -1 when the send failed (PQerrorMessage says why), else 0. */
int pqev_flush(struct pqev *p, PGconn *conn, short what);

/* Stops both the socket wait and the timer. */
void pqev_stop(struct pqev *p);

#endif
