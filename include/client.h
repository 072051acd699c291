/* client.h: client connections: accept, startup, the message loop, teardown. */
#ifndef PGMUX_CLIENT_H
#define PGMUX_CLIENT_H

#include "pgmux.h"

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

/* Log prefix "C-<id> db/user@addr". */
const char *client_tag(const struct client *cl, char *buf, size_t len);

#endif
