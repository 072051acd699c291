/* statuspage.h: the live status page on stats_listen (GET / as HTML, GET /status.json). */
#ifndef PGMUX_STATUSPAGE_H
#define PGMUX_STATUSPAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "model.h"

struct evbuffer;

/* Pools shown, the most saturated first; the rest are only counted, so that one response stays
 * under about a megabyte however many pools there are (the endpoint has no authentication and
 * serves up to 64 connections at once). */
#define STATUSPAGE_MAX_POOLS 200

/* Writes the status page of w into b as one HTML document: a line per pool (saturation bar
 * against saturation_warn, clients, servers by state, wait percentiles, the last 15 minutes
 * of saturation as an inline SVG chart), then the backends and shards of routed databases.
 * It refreshes itself every 5 seconds and loads nothing else (no script, no external file).
 * Every name is HTML-escaped: database and user names can come from clients.  Returns false
 * when out of memory (b then holds part of the page). */
bool statuspage_html(struct worker *w, struct evbuffer *b);

/* The same figures as one JSON object for scripts: version, totals, "pools" (the first
 * STATUSPAGE_MAX_POOLS by saturation, each with "saturation_history", one percentage per
 * second, oldest first; "pools_total" and "pools_omitted" count them all), "backends" and
 * "shards".
 * Times are in seconds.  Strings are JSON-escaped, invalid UTF-8 replaced by U+FFFD.
 * Returns false when out of memory. */
bool statuspage_json(struct worker *w, struct evbuffer *b);

/* Pure: writes src HTML-escaped (& < > " ') into dst (dstlen bytes, NUL-terminated when
 * dstlen > 0).  Returns the length of the whole escaped text, as snprintf does. */
size_t statuspage_html_escape(char *dst, size_t dstlen, const char *src);

/* Pure: writes src as the inside of a JSON string into dst (dstlen bytes, NUL-terminated when
 * dstlen > 0): quote, backslash and control characters escaped, invalid UTF-8 replaced by
 * U+FFFD.  Returns the length of the whole escaped text, as snprintf does. */
size_t statuspage_json_escape(char *dst, size_t dstlen, const char *src);

#endif
