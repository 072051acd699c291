/* repl.h: replication connections: a client that asks for replication gets a server of its own, opened with its startup parameters, linked for its whole session and closed when it leaves. */
#ifndef PGMUX_REPL_H
#define PGMUX_REPL_H

#include "model.h"

/* The startup parameter's value: REPL_LOGICAL for "database", REPL_PHYSICAL for a true boolean
 * (true/on/yes/1, any case), REPL_NONE for a false one, -1 for anything else.  Pure. */
int repl_parse_value(const char *val);

/* Keeps one of the client's startup parameters for its server's startup packet.  False when
 * memory ran out.  The caller has capped the packet (PROTO_MAX_STARTUP). */
bool repl_keep_param(struct client *cl, const char *key, const char *val);

/* A replication client authenticated (AuthenticationOk is queued): it waits, without a greeting,
 * until a server of its own has logged in (repl_launch opens it as the pool's limits allow). */
void repl_client_ready(struct client *cl);

/* Opens a server for each replication client of p still without one, oldest first, as far as
 * pool_size, max_db_connections and max_user_connections allow; an idle pooled server is
 * closed ("evicted") to make room, as PgBouncer does.  Safe to call from any callback. */
void repl_launch(struct pool *p);

/* The startup packet of a replication client's server: "replication" and the client's own
 * parameters (application_name, options, ...), after user and database. */
void repl_put_startup(const struct server *sv, struct pktbuf *o);

/* True when the client the server is for gave `key` itself (the database entry's default for
 * it is then left out of the startup packet). */
bool repl_client_sets(const struct server *sv, const char *key);

/* The server of a replication client logged in: the two are linked for good and the client is
 * greeted with the server's own ParameterStatus messages (`params`), pgmux's cancel key and
 * ReadyForQuery.  May close either (a failed send). */
void repl_server_ready(struct server *sv, const struct pktbuf *params);

/* The server a replication client waited for failed before it was linked: the client gets a
 * FATAL "login failed", the reason as its DETAIL (with the server's SQLSTATE if it gave one), and is closed. */
void repl_login_failed(struct client *cl, const char *reason, const char *sqlstate);

/* A replication client closes: its server, logging in or linked, is closed with it (never
 * pooled: it holds the client's replication session). */
void repl_client_gone(struct client *cl);

#endif
