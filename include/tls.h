/* tls.h: TLS on server connections (OpenSSL), behind recv/send-shaped calls for sbuf. */
#ifndef PGMUX_TLS_H
#define PGMUX_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "pgmux.h"

enum tls_mode { TLS_DISABLE = 0, TLS_ALLOW, TLS_PREFER, TLS_REQUIRE, TLS_VERIFY_CA, TLS_VERIFY_FULL };

/* libpq's sslmode for a backend entry (NULL means libpq's default, prefer). */
enum tls_mode tls_mode_of(const char *sslmode);

/* Starts a client-side TLS session on c (already connected, SSLRequest answered 'S').
 * Returns 0, or -1 with err filled (context or certificate files unusable). */
int tls_client_start(struct conn *c, struct database *db, char *err, size_t errlen);

/* Drives the handshake.  Returns 1 when done, 0 when it needs the socket readable or writable
 * again (the events are armed), -1 on failure with err filled. */
int tls_handshake(struct conn *c, char *err, size_t errlen);

/* Like recv()/send(): bytes moved, 0 at a clean close (recv only), or -1 with errno set
 * (EAGAIN when TLS needs the socket again). */
ssize_t tls_recv(struct conn *c, void *buf, size_t len);
ssize_t tls_send(struct conn *c, const void *buf, size_t len);

/* True when decrypted bytes wait inside OpenSSL (the socket may not poll readable). */
bool tls_pending(const struct conn *c);

/* Frees the session (no close_notify round trip: the socket is closing). */
void tls_free(struct conn *c);

/* Frees a database's cached context. */
void tls_db_free(struct database *db);

#endif
