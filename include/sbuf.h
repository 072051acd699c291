/* sbuf.h: socket I/O for one connection: lazy receive buffers, forwarding to the peer, backpressure. */
#ifndef PGMUX_SBUF_H
#define PGMUX_SBUF_H

#include "model.h"

/* Minimum receive buffer: a startup packet (10000 bytes) must fit whole. */
#define SBUF_MIN_SIZE 16384

/* Prepares c's events for fd, with its owner's callbacks; nothing is added to the loop until
 * sbuf_resume(). */
void sbuf_init(struct conn *c, struct worker *w, int fd, int kind, const struct sbuf_ops *ops);

/* Starts (or restarts) reading unless the conn is held or dead.  Cheap when already on. */
void sbuf_resume(struct conn *c);
/* Stops reading. */
void sbuf_pause(struct conn *c);

/* Queues nothing: tries to send c->out now.  Returns 0 when all of it went, 1 when the rest
 * waits for a write event, -1 when the socket failed (the caller tears down). */
PGMUX_MUST_CHECK int sbuf_send_out(struct conn *c);

/* Sends src->in's parsed bytes to src->peer.  Returns true when nothing is left pending; false
 * when the peer is full (src stops reading until the peer drains) or failed (the peer is torn
 * down through its owner's on_fail). */
PGMUX_MUST_CHECK bool sbuf_flush(struct conn *src);

/* Makes room for `need` bytes from c->in->scan on (compacting, then growing the buffer past
 * the worker's bufsize), so that a message pgmux must read whole can arrive whole.  Every
 * pointer into c->in is stale afterwards.  The caller bounds `need` (max_client_memory);
 * false when out of memory.  A grown buffer goes back to the standard size once it holds
 * little again. */
PGMUX_MUST_CHECK bool sbuf_reserve(struct conn *c, uint32_t need);

/* Bytes c's receive buffer holds beyond the worker's standard size (0 for most conns). */
static inline uint32_t sbuf_extra(const struct conn *c)
{
	return c->in && c->in->cap > c->w->bufsize ? c->in->cap - c->w->bufsize : 0;
}

/* Removes n bytes at offset `at` of c->in (a message pgmux swallows). */
void sbuf_drop(struct conn *c, uint32_t at, uint32_t n);

/* Puts n bytes into c->in at the parse position, as if they had been received and parsed
 * (pgmux's own replies spliced into a server's stream).  The buffer may move or grow (stale
 * pointers); false when out of memory. */
PGMUX_MUST_CHECK bool sbuf_insert(struct conn *c, const void *data, uint32_t n);

/* Replaces the first oldn bytes at the parse position of c->in with data (a message renamed
 * in place, so it still goes out in the same send); those bytes must all be in the buffer.
 * The buffer may move or grow (stale pointers); false when out of memory. */
PGMUX_MUST_CHECK bool sbuf_replace(struct conn *c, uint32_t oldn, const void *data, uint32_t newn);

/* Bytes in c->in not yet parsed. */
static inline uint32_t sbuf_unparsed(const struct conn *c)
{
	return c->in ? c->in->end - c->in->scan : 0;
}

/* True when c->in holds nothing at all. */
static inline bool sbuf_empty(const struct conn *c)
{
	return !c->in || c->in->start == c->in->end;
}

/* When every byte of c->in has gone (start == end): its cursors go back to 0, and the buffer
 * to the free list unless a message is still streaming through (pkt_left).  Cheap: every loop
 * ends with it. */
void sbuf_release_buf(struct conn *c);
/* Drops whatever c->in holds (bytes that must not be read: after an SSL answer, a cancel). */
void sbuf_discard_in(struct conn *c);

/* Closes the socket and drops events and buffers; the object itself stays with the caller. */
void sbuf_close(struct conn *c);

/* Links two conns both ways (or unlinks when b is NULL). */
void sbuf_link(struct conn *a, struct conn *b);

void sbuf_set_nodelay(int fd);

/* The uid of the process on the other end of Unix socket fd (SO_PEERCRED, or getpeereid where
 * that is missing) into *uid: true; false when it cannot be told (not a Unix socket, or the
 * call failed), which callers treat as "not that user". */
bool sbuf_peer_uid(int fd, uid_t *uid);
void sbuf_set_keepalive(int fd, const struct config *cf);

#endif
