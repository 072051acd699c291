/* worker.h: the ground floor every connection stands on: the clock, deferred frees, the cancel-key table, the shutdown check, accept errors. */
#ifndef PGMUX_WORKER_H
#define PGMUX_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"

/* Monotonic clock in microseconds. */
uint64_t worker_now(void);

/* Checks whether a graceful shutdown can complete now (every client gone, or every server
 * released, as w->shutdown asks), and ends the loop if so. */
void worker_check_shutdown(struct worker *w);

/* Cancel-key table: the keys pgmux hands clients, and the client a key names. */
void worker_cancel_register(struct worker *w, struct client *cl);
void worker_cancel_unregister(struct worker *w, struct client *cl);
struct client *worker_cancel_find(struct worker *w, uint32_t pid, uint32_t key);

/* Queues a dead conn's memory for release (its owner's sbuf_ops.on_free) once the current
 * callbacks are done: nothing may touch a conn a callback up the stack still holds. */
void worker_reap(struct worker *w, struct conn *c);

/* Queues another object for release after the conns queued before it, which may still point
 * at it: `it` is embedded in the object, `free_fn` frees the object. */
void worker_defer_free(struct worker *w, struct reap_item *it, void (*free_fn)(struct reap_item *));

/* Spare blocks kept per free list (receive buffers, saved reads): a few absorb churn; beyond
 * that memory goes back, so idle clients cost none. */
#define WORKER_SPARE_BLOCKS 64

/* Sets up the deferred-free event on w->base and the free lists' bounds; 0 or -1. */
int worker_init_base(struct worker *w);

/* True for an accept() error that concerns only the connection being accepted (or none):
 * the listener goes on.  Any other error (EMFILE, ENFILE, ENOBUFS, ENOMEM...) pauses it.
 * Here rather than with the PostgreSQL listener because the metrics listener (prom.c) asks
 * too, and it stands below the daemon that starts it. */
bool worker_accept_transient(int err);

#endif
