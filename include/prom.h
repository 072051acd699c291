/* prom.h: the optional Prometheus endpoint (stats_listen): GET /metrics in the text exposition format. */
#ifndef PGMUX_PROM_H
#define PGMUX_PROM_H

#include <stddef.h>

#include "model.h"

/* Starts the endpoint on the worker's event loop when stats_listen is set ("host:port"); a
 * no-op returning 0 when it is empty or already running.  Returns -1, with the reason logged,
 * when the address cannot be bound.  One endpoint per process; it reports worker w. */
int prom_start(struct worker *w);

/* Closes the endpoint and its connections (at exit); a no-op when it is not running. */
void prom_stop(struct worker *w);

/* Pure: writes src as a label value of the exposition format into dst (dstlen bytes, always
 * NUL-terminated when dstlen > 0): backslash, double quote and newline are escaped, and bytes
 * that are not valid UTF-8 become U+FFFD.  Returns the length of the whole escaped text, so
 * a result >= dstlen means it was cut short (as snprintf does). */
size_t prom_escape_label(char *dst, size_t dstlen, const char *src);

#endif
