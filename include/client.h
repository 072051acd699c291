/* client.h: client connections: accept, startup, the message loop, teardown. */
#ifndef PGMUX_CLIENT_H
#define PGMUX_CLIENT_H

#include "model.h"

/* Takes ownership of an accepted socket. */
void client_accept(struct worker *w, int fd, const struct sockaddr *sa, socklen_t salen);

/* Called by sbuf when bytes arrived (or the peer drained): runs login or forwarding. */
void client_on_data(struct client *cl);

/* Called by sbuf for either socket event while the client's TLS handshake runs. */
void client_on_handshake(struct client *cl);

/* The only state change: moves the client between its lists and keeps the counts. */
void client_set_state(struct client *cl, enum client_state st);
/* Moves a client without a server to another pool (routing), keeping its state. */
void client_move(struct client *cl, struct pool *p);

/* Authentication succeeded: hands the client to its pool (welcome now, or after a server login). */
void client_auth_ok(struct client *cl);

/* Sends AuthenticationOk's followers: ParameterStatus, BackendKeyData, ReadyForQuery. */
void client_send_welcome(struct client *cl);

/* A server was linked: forward what the client has buffered. */
void client_linked(struct client *cl);

/* Queues an ErrorResponse for the client (not closing it). */
void client_send_error(struct client *cl, const char *severity, const char *sqlstate, const char *msg);

/* The one teardown path.  With a sqlstate, a FATAL ErrorResponse carrying `reason` goes first.
 * The linked server, if any, goes back to its pool or is closed.  Memory is freed later. */
void client_close(struct client *cl, const char *reason, const char *sqlstate);
/* client_close whose FATAL also carries a DETAIL (the log line gives the reason alone). */
void client_close_detail(struct client *cl, const char *reason, const char *sqlstate, const char *detail);

/* What pgmux holds on the client's behalf beyond its standard receive buffer: a grown
 * buffer, prepared-statement names and texts, routing copies.  Capped by max_client_memory. */
uint64_t client_memory(const struct client *cl);

/* Gathering: the first `need` bytes of the message at c->in->scan must be in the buffer
 * before pgmux acts on it.  1: they are; 0: not yet, the buffer has been made big enough
 * (pointers into it are stale) and reading goes on: the caller returns and is called again;
 * -1: more than max_client_memory allows, the caller streams the message on untouched or
 * refuses it (54000). */
PGMUX_MUST_CHECK int client_need(struct client *cl, uint32_t need);

/* Drops the message at c->in->scan (total bytes, possibly not all received yet) together
 * with the bytes parsed before it: it is answered or refused by pgmux, never forwarded. */
void client_drop_msg(struct client *cl, uint32_t total);

/* Log prefix "C-<id> db/user@addr". */
const char *client_tag(const struct client *cl, char *buf, size_t len);

#endif
