/* prepared.h: protocol-level named prepared statements in transaction and statement pooling. */
#ifndef PGMUX_PREPARED_H
#define PGMUX_PREPARED_H

#include <stdbool.h>
#include <stdint.h>

#include "pgmux.h"

/* Results of the hooks below, for the forwarding loops. */
enum ps_result {
	PS_FORWARD,     /* pass the message on unchanged */
	PS_CONSUMED,    /* pgmux handled it (dropped or rewritten); re-read at scan */
	PS_WAIT,        /* need more bytes, or earlier bytes must reach the server first */
	PS_CLOSED       /* the client or server was closed */
};

/* Per-client statement names are capped; so is the memory of all statements together. */
#define PS_CLIENT_MAX 10000
#define PS_GLOBAL_MAX_BYTES (256u << 20)

/* True when a pool tracks statements (max_prepared_statements > 0, not session mode). */
bool ps_enabled(const struct pool *p);

/* A client message while linked to a tracking server: type, full length (header
 * included) and the bytes of it available at c->in->scan. */
enum ps_result ps_client_message(struct client *cl, char type, uint32_t total, uint32_t avail);

/* A server message (whole for the types it reads) for a tracking link. */
enum ps_result ps_server_message(struct server *sv, char type, const uint8_t *body, uint32_t blen);

/* Splices pgmux's own answers that are due now into the server's stream. */
enum ps_result ps_emit(struct server *sv);

/* True when the server still owes answers on the current link. */
bool ps_pending(const struct server *sv);
/* Forgets the link's in-flight requests (release or teardown). */
void ps_unlink(struct server *sv);
/* The server's statements are gone (DISCARD ALL ran as the reset query). */
void ps_server_forget(struct server *sv);

/* The query text of a client's named statement (for routing a Bind), or NULL. */
const char *ps_client_query(struct client *cl, const char *name, uint32_t *len);

void ps_client_free(struct client *cl);
void ps_server_free(struct server *sv);

#endif
