/* prepared.h: protocol-level named prepared statements in transaction and statement pooling. */
#ifndef PGMUX_PREPARED_H
#define PGMUX_PREPARED_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"

/* Per-client statement names are capped in number; their bytes count towards
 * max_client_memory, and all statement texts together towards
 * max_prepared_statement_memory. */
#define PS_CLIENT_MAX 10000

/* Digits of the random per-process token in pgmux's server-side statement names. */
#define PS_TOKEN_LEN 20

/* A simple Query or unnamed Parse up to this size is read for "DEALLOCATE name". */
#define PS_DEALLOC_MAX 1024

/* True when a pool tracks statements (max_prepared_statements > 0, not session mode). */
bool ps_enabled(const struct pool *p);

/* How many bytes of the client message at m (total bytes, avail of them in the buffer)
 * statement tracking must read before it acts: 0 for none, total for the messages it reads
 * whole (named Parse, Describe, Close), the head up to the statement name for a Bind. */
uint32_t ps_msg_need(const struct client *cl, char type, const uint8_t *m, uint32_t total,
		     uint32_t avail);

/* A client message while linked to a tracking server: type, full length (header included)
 * and the bytes of it available at c->in->scan.  The caller has gathered ps_msg_need() bytes
 * of it, unless the message was larger than max_client_memory allows; then pgmux refuses it
 * (54000) or streams it on, as it needs.  Simple Queries and Parse texts that name pgmux's own
 * server-side statements are refused (42501). */
PGMUX_MUST_CHECK enum hook_rc ps_client_message(struct client *cl, char type, uint32_t total, uint32_t avail);

/* A Query or Parse text too big to hold streams through: its next `n` bytes.  False when
 * they name pgmux's own statements (the caller closes the client: the server has part of
 * the message). */
bool ps_scan_stream(struct client *cl, const uint8_t *p, uint32_t n);

/* Bytes of the client's statement names and the texts they reference (max_client_memory). */
uint64_t ps_client_bytes(const struct client *cl);

/* A server message for a tracking link; whole when body holds all blen bytes (the types it
 * reads always are, up to max_client_memory; an ErrorResponse or CommandComplete beyond that
 * is handled without its fields). */
PGMUX_MUST_CHECK enum hook_rc ps_server_message(struct server *sv, char type, const uint8_t *body, uint32_t blen,
				 bool whole);
/* The same for a whole server message that routing reads for itself and may drop (a fan-out's
 * later shards): statement tracking matches it to its request.  Routing calls this one, the
 * forwarding loop ps_server_message, so that the loop's call stays inlined. */
PGMUX_MUST_CHECK enum hook_rc ps_server_note(struct server *sv, char type, const uint8_t *body, uint32_t blen);

/* Splices pgmux's own answers that are due now into the server's stream. */
PGMUX_MUST_CHECK enum hook_rc ps_emit(struct server *sv);

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
