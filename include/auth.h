/* auth.h: client authentication (trust, any, plain, md5, scram-sha-256) against the auth_file. */
#ifndef PGMUX_AUTH_H
#define PGMUX_AUTH_H

#include "model.h"

/* Begins authenticating a client whose startup packet was accepted: either sends a request
 * for a password or calls client_auth_ok() at once. */
void auth_start(struct client *cl);

/* Handles one message from a client during login ('p' only; anything else is a protocol error).
 * Returns false when the client was closed. */
bool auth_on_message(struct client *cl, char type, const uint8_t *body, uint32_t len);

/* Copies a verified SCRAM ClientKey into the pool, for pass-through server logins. */
void auth_export_keys(struct client *cl, struct pool *p);

/* Frees login-time state. */
void auth_free(struct client *cl);

/* The password pgmux should use to log in to the server for this pool's user, or NULL. */
const char *auth_server_secret(struct pool *p);

#endif
