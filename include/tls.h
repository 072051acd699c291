/* tls.h: TLS (OpenSSL) on server connections and on client connections, behind recv/send-shaped calls for sbuf. */
#ifndef PGMUX_TLS_H
#define PGMUX_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "model.h"

enum tls_mode { TLS_DISABLE = 0, TLS_ALLOW, TLS_PREFER, TLS_REQUIRE, TLS_VERIFY_CA, TLS_VERIFY_FULL };

/* libpq's sslmode for a backend entry (NULL means libpq's default, prefer). */
enum tls_mode tls_mode_of(const char *sslmode);

/* The sslmode a database's servers are connected with: its entry's sslmode, else the general
 * server_tls_sslmode. */
enum tls_mode tls_db_mode(const struct database *db);

/* Every setting that decides how the servers of entry d (under cf) are connected with TLS, as
 * one malloc'd string (NULL when out of memory): when it changes on RELOAD or SET, the servers
 * made with the old settings are closed. */
char *tls_db_signature(const struct config *cf, const struct cfg_db *d);

/* Starts a client-side TLS session on c (already connected, SSLRequest answered 'S'); `host`
 * (the host entry connected to, NULL or a socket directory for none) is the name sent and, for
 * verify-full, checked.  Returns 0, or -1 with err filled (context or certificate files
 * unusable). */
int tls_client_start(struct conn *c, struct database *db, const char *host, char *err, size_t errlen);

/* ---- pgmux as the TLS server, for its clients (client_tls_* keys) ---- */

struct tls_server;

/* Builds what client TLS needs from cf's client_tls_* keys, reading the key, certificate and
 * CA files now.  *out is the new state (the caller owns it), or NULL when client_tls_sslmode
 * is disable.  Returns 0, or -1 with err naming the key and file at fault (never key
 * material) and *out untouched. */
int tls_server_new(const struct config *cf, struct tls_server **out, char *err, size_t errlen);

/* Frees the state.  Sessions already made from it keep working (OpenSSL counts references). */
void tls_server_free(struct tls_server *ts);

/* Rebuilds w->tls_srv from w->cf (console SET); on failure w keeps its old state.  0 or -1. */
int tls_server_reconfigure(struct worker *w, char *err, size_t errlen);

/* The mode new clients get: TLS_DISABLE for NULL. */
enum tls_mode tls_server_mode(const struct tls_server *ts);

/* Starts the server side of a handshake on c, whose SSLRequest was just answered 'S'.
 * Returns 0, or -1 with err filled. */
int tls_server_start(struct conn *c, const struct tls_server *ts, char *err, size_t errlen);

/* PgBouncer's description of a session ("TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519") in buf,
 * or "" for a plain connection or one still in its handshake.  Returns buf. */
const char *tls_describe(const struct conn *c, char *buf, size_t len);

/* The Common Name of the certificate a TLS client presented and the handshake verified against
 * client_tls_ca_file, into buf (NUL-terminated): true; false when there is none, it did not
 * verify, the subject has more than one CN (which one names the user would be a guess), or the
 * name does not fit or holds a NUL byte (which could pass for a shorter name). */
bool tls_peer_cn(const struct conn *c, char *buf, size_t len);

/* True when the client sent a certificate at all. */
bool tls_peer_has_cert(const struct conn *c);

/* ---- both sides ---- */

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
