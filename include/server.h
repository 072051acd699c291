/* server.h: server connections: non-blocking connect, login as a client, forwarding, teardown. */
#ifndef PGMUX_SERVER_H
#define PGMUX_SERVER_H

#include "model.h"

/* Opens a new server connection for the pool (the database address must be resolved).  With
 * `repl_for`, the server is that replication client's own (repl.h): it logs in with the
 * client's startup parameters and is linked to it alone.  A connect that fails at once closes
 * it (and then that client) before this returns. */
void server_connect(struct pool *p, struct client *repl_for);

/* sbuf hooks: bytes arrived; the socket failed; the socket became writable (returns true
 * when it consumed the event, e.g. a finished connect). */
void server_on_data(struct conn *c);
void server_on_fail(struct conn *c, const char *reason);
bool server_on_writable(struct conn *c);
/* A read or write event during the TLS handshake. */
void server_on_handshake(struct conn *c);

/* The only state change: moves the server between its pool's lists and keeps the counts. */
void server_set_state(struct server *sv, enum server_state st);

/* Sends a query of pgmux's own whose whole response is swallowed (reset, check, SET). */
PGMUX_MUST_CHECK bool server_send_internal(struct server *sv, const char *sql);

/* Handles bytes a just-released server still holds (late NOTICEs, notifications): they are
 * read and dropped, never handed to the next client. */
void server_drain_unlinked(struct server *sv);

/* The one test of "this server may go back to the pool" (transaction and statement mode):
 * the client owes nothing and is owed nothing, every byte it sent has reached the server and
 * ended there at a message boundary, and the server is idle. */
bool server_link_settled(const struct server *sv);

/* The client of a link that owed a release has drained its bytes to the server: hands the
 * server back when server_link_settled() now holds.  True when it was released. */
bool server_release_owed(struct server *sv);

/* The one teardown path; a linked client is closed with an error too. */
void server_close(struct server *sv, const char *reason);

/* Sends a CancelRequest for the server's backend on a new connection. */
void server_cancel(struct server *sv);

const char *server_tag(const struct server *sv, char *buf, size_t len);

/* Frees a reaped server. */
void server_free(struct server *sv);

#endif
