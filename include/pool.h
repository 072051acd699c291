/* pool.h: databases, users and (database, user) pools: limits, the wait queue, linking. */
#ifndef PGMUX_POOL_H
#define PGMUX_POOL_H

#include "model.h"
#include "pool_info.h"   /* effective settings and other read-only facts of a pool */

/* Lookups by name go through hash tables (namehash.h): a login costs the same with one
 * database or thousands made from the "*" entry. */

/* An existing database object by name, without making one; *known tells whether the name
 * was found at all (it may be found but removed, which returns NULL). */
struct database *pool_lookup_database(struct worker *w, const char *name, bool *known);
/* The database clients name, made from the config on first use; NULL when unknown. */
struct database *pool_find_database(struct worker *w, const char *name);
/* The user object for name (pools' users and logged-in clients' names), created on first use;
 * NULL on allocation failure. */
struct user *pool_find_user(struct worker *w, const char *name);
/* The user object for name if there is one, without making it. */
struct user *pool_lookup_user(struct worker *w, const char *name);
/* The pool for (db, user), created on first use; NULL on allocation failure.  A client's pool
 * is keyed by the entry's forced user when it has one, else by the login user (PgBouncer's). */
struct pool *pool_get(struct worker *w, struct database *db, const char *user);

/* autodb_idle_timeout: true when db may go now: made from the "*" entry, no client or server
 * in any of its pools, and nothing else holding it (an address lookup, a console PAUSE,
 * DISABLE or WAIT_CLOSE, routing).  How long it has been unused is the caller's business. */
bool pool_database_removable(struct worker *w, const struct database *db);
/* Takes a removable db and its pools out of every lookup and listing at once; their memory is
 * freed by the reaper (pool_free_database) after this callback.  The caller has had stats.c
 * forget them first (stats_database_gone). */
void pool_remove_database(struct worker *w, struct database *db);
/* The reaper's half of the removal: frees db and its pools. */
void pool_free_database(struct database *db);

/* True when db is `target` or one of the backends behind it (a [database] section's name):
 * console commands that name a database reach its backends' pools too. */
bool pool_db_match(const struct database *target, const struct database *db);
/* Paused by the console: itself, or the name in front of it. */
bool pool_db_paused(const struct database *db);

/* A logged-in client needs the greeting: now if known, else after a server logs in. */
void pool_client_ready(struct client *cl);

/* Puts cl (authenticated, cl->pool set) in its pool's list of clients waiting for a first
 * server, after flushing what it has been sent, and launches a server for it; closes it when
 * the flush fails. */
void pool_wait_login(struct client *cl);
/* A client needs a server for its next transaction: links one now or queues the client. */
void pool_acquire(struct client *cl);
/* The client's transaction (or session) is over: the server goes back or is reset/closed. */
void pool_release(struct server *sv, bool client_gone);
/* Runs one statement of pgmux's own (sql) on an idle server of p, as a server check runs:
 * the server is kept from clients until its answer, which nobody gets (errors are logged).
 * false when no server is idle now (nothing was sent). */
bool pool_run_internal(struct pool *p, const char *sql);
/* The same, now or as soon as a server of p is idle (one is opened when p has none): for
 * statements that must run even when every server is busy, such as the COMMIT / ROLLBACK
 * PREPARED of a split write whose client left.  Runs before waiting clients are served.
 * false when out of memory or POOL_INTERNAL_Q_MAX are queued (nothing queued then). */
bool pool_run_internal_later(struct pool *p, const char *sql);
#define POOL_INTERNAL_Q_MAX 1024

/* A server finished login / a login or connect failed.  refused: the server (or pgmux's own
 * login logic) turned the login down, and the clients waiting for this pool get the error now;
 * otherwise the server could not be reached or timed out, and they keep waiting for the retry
 * after server_login_retry (until query_timeout, query_wait_timeout or client_login_timeout),
 * as in PgBouncer.  Either way, new clients fail at once during the retry wait. */
void pool_server_ready(struct server *sv);
void pool_server_failed(struct pool *p, const char *msg, const char *sqlstate, bool refused);

/* pool_idle_timeout: true when p may be freed now: no client or server, not of a routed
 * section, no min_pool_size to keep, no console PAUSE of its database, no address lookup.
 * pool_remove takes it out of every lookup and listing; the reaper frees it after this
 * callback.  The caller has had stats.c forget it first (stats_pool_gone). */
bool pool_removable(const struct pool *p);
void pool_remove(struct pool *p);

/* True when one more server may be opened for p now: pool_size, max_db_connections and
 * max_user_connections allow it and no server_login_retry wait is on. */
bool pool_may_open(struct pool *p);
/* Makes room for a replication client's server: closes one idle server ("evicted") of p, or
 * when max_db_connections or max_user_connections is what is full, of another pool of the
 * same database or user.  False when there is no idle server to close. */
bool pool_evict_idle(struct pool *p);

/* Opens connections while waiters outnumber logins and the limits allow (replication clients'
 * own servers first, repl.c). */
void pool_launch(struct pool *p);
/* Opens one more server while the pool is below min_pool_size and pool_size, within its
 * limits (never by eviction), when it has a client or its entry forces the user. */
void pool_grow_min(struct pool *p);
/* Makes the pools of the entries that force a user and want min_pool_size > 0, so that the
 * janitor keeps them filled before any client comes (at start and after a reload). */
void pool_open_forced_pools(struct worker *w);
/* Gives idle servers to waiters, oldest first. */
void pool_serve_waiters(struct pool *p);

/* Every pool: open what waiters need, hand idle servers to them (after RESUME, a reload, SET). */
void pool_serve_all(struct worker *w);
/* query_wait_notify: clients waiting for a server that long get one NoticeResponse saying
 * they are queued (once per wait). */
void pool_notify_waiters(struct worker *w, uint64_t now);
/* server_fast_close: session-mode clients whose server is marked for close (RECONNECT, a
 * RELOAD that changed the database) are disconnected between transactions instead of at the
 * end of the session; no effect in the other modes, which release servers anyway. */
void pool_fast_close(struct worker *w);
/* Applies a new config: updates databases, drops removed ones. */
void pool_apply_config(struct worker *w);

/* Resolves a database's address (evdns for names); calls pool_launch on its pools when done.
 * With a host list (host=a,b,c) it is the address of the entry new connections use now. */
void pool_resolve(struct database *db, struct worker *w);

/* True when p's database has the address of the host entry new connections use; else its
 * lookup is started (the pools are launched when it ends) and false. */
bool pool_addr_ready(struct pool *p);

/* A new server took the current host entry: with load_balance_hosts round-robin, the next
 * connection gets the next entry. */
void pool_host_taken(struct database *db);

/* Connecting to host entry idx failed (lookup, connect or login): with a host list, new
 * connections move to the next entry, and true while not every entry has failed in a row
 * (the caller tries again at once rather than failing the pool's waiters). */
bool pool_host_failed(struct database *db, int idx);

/* The name of host entry idx (for TLS's server name), or the entry's host. */
const char *pool_host_name(const struct database *db, int idx);

#endif
