/* auth_query.h: looks up the secret of a user the auth_file lacks with auth_query, as auth_user on the auth database, without blocking the event loop. */
#ifndef PGMUX_AUTH_QUERY_H
#define PGMUX_AUTH_QUERY_H

#include "model.h"

enum aq_status {
	AQ_FOUND,       /* a row: secret is the user's (NULL in the row: a secret nothing matches) */
	AQ_NO_USER,     /* no row */
	AQ_FAILED,      /* the lookup could not be made: msg and sqlstate are for the client */
};

/* The outcome of one lookup.  secret and msg live only during the call; the client may be
 * closed by it (the module does not touch cl afterwards). */
typedef void (*aq_done_fn)(struct client *cl, enum aq_status st, const char *secret,
			   const char *msg, const char *sqlstate);

struct aq_req;

/* Starts the lookup of cl->user_name where PgBouncer would: an auth_user applies to the
 * client's database (its entry's auth_user, else the general one) and the database is known
 * (the console counts, a name no entry matches does not).  Returns 1 when the lookup is under
 * way (done is called later, exactly once, unless auth_query_cancel comes first; *req is the
 * handle), 0 when no auth_user applies (the caller goes on as if the user were unknown), -1
 * when the client was closed (a configuration error: the log says which, the client gets
 * "bouncer config error" as from PgBouncer). */
int auth_query_begin(struct client *cl, aq_done_fn done, struct aq_req **req);

/* The client no longer wants the answer (it closed): done will not be called.  NULL is
 * allowed. */
void auth_query_cancel(struct aq_req *req);

/* Closes every auth_query connection of the worker (at exit). */
void auth_query_shutdown(struct worker *w);

#endif
