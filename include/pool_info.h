/* pool_info.h: what a pool is, read without changing anything: its effective settings, its server count, its servers' parameters. */
#ifndef PGMUX_POOL_INFO_H
#define PGMUX_POOL_INFO_H

#include <string.h>

#include "model.h"

/* These only read the object model and the config snapshot, so the layers below the pools'
 * machinery (statistics, statement tracking, shard keys, authentication) may ask them without
 * depending on pool.c, which links clients and servers.  The one-line ones are inline: pool.c
 * asks them on every acquire and release, where a call would cost more than they do. */

/* The settings follow PgBouncer's precedence: the [users] entry of the pool's user (the entry's
 * forced user, else the login user), then the [databases] entry, then the general key; limits
 * (max_*_connections) of 0 in an entry fall through to the general key, as PgBouncer reads them. */

/* Effective pool_mode: the [users] entry's, else the database entry's, else the general key. */
int pool_mode(const struct pool *p);

/* Effective pool_size: the [users] entry's, else the database entry's, else default_pool_size. */
static inline int pool_size(const struct pool *p)
{
	const struct cfg_user *u = p->user->cf;
	if (u && u->pool_size >= 0)
		return u->pool_size;
	return p->db->cf->pool_size >= 0 ? p->db->cf->pool_size : (int)p->w->cf->default_pool_size;
}

/* Effective min_pool_size: the database entry's, else the general key. */
static inline int pool_min_size(const struct pool *p)
{
	return p->db->cf->min_pool_size >= 0 ? p->db->cf->min_pool_size : (int)p->w->cf->min_pool_size;
}

/* Effective reserve_pool_size: the [users] entry's, else the database entry's, else the
 * general key. */
static inline int pool_reserve(const struct pool *p)
{
	const struct cfg_user *u = p->user->cf;
	if (u && u->reserve_pool_size >= 0)
		return u->reserve_pool_size;
	return p->db->cf->reserve_pool >= 0 ? p->db->cf->reserve_pool : (int)p->w->cf->reserve_pool_size;
}

/* Effective max_db_connections of db: the entry's when above 0, else the general key. */
static inline int pool_db_max_connections(const struct worker *w, const struct cfg_db *e)
{
	return e->max_db_connections > 0 ? e->max_db_connections : (int)w->cf->max_db_connections;
}

/* Effective max_db_client_connections of an entry: its own when above 0, else the general key. */
static inline int pool_db_max_clients(const struct worker *w, const struct cfg_db *e)
{
	return e && e->max_db_client_connections > 0 ? e->max_db_client_connections
						     : (int)w->cf->max_db_client_connections;
}

/* Effective max_user_connections / max_user_client_connections of a user's [users] entry (NULL:
 * none): its own when above 0, else the general key. */
static inline int pool_user_max_connections(const struct worker *w, const struct cfg_user *u)
{
	return u && u->max_user_connections > 0 ? u->max_user_connections
						: (int)w->cf->max_user_connections;
}

static inline int pool_user_max_clients(const struct worker *w, const struct cfg_user *u)
{
	return u && u->max_user_client_connections > 0 ? u->max_user_client_connections
						       : (int)w->cf->max_user_client_connections;
}

/* Servers of the pool in any state (login, idle, active, used, tested). */
static inline int pool_servers(const struct pool *p)
{
	return p->n_sv[SV_LOGIN] + p->n_sv[SV_IDLE] + p->n_sv[SV_ACTIVE] + p->n_sv[SV_USED] +
	       p->n_sv[SV_TESTED];
}

/* The user its servers log in as: the entry's forced user, else the pool's user. */
static inline const char *pool_server_user(const struct pool *p)
{
	return p->db->cf->user ? p->db->cf->user : p->user->name;
}

/* The database its servers connect to: the entry's dbname, else the name clients use. */
static inline const char *pool_server_dbname(const struct pool *p)
{
	return p->db->cf->dbname ? p->db->cf->dbname : p->db->name;
}

/* Effective server_lifetime (µs; 0: off): the database entry's, else the general key. */
static inline int64_t pool_server_lifetime(const struct pool *p)
{
	return p->db->cf->server_lifetime > 0 ? p->db->cf->server_lifetime
					      : p->w->cf->server_lifetime;
}

/* The text server_check_query runs: NULL when the key is empty (no checks), "" for PgBouncer's
 * "<empty>" (an empty Query, the cheapest round trip: no parse, no plan). */
static inline const char *pool_check_query(const struct config *cf)
{
	const char *q = cf->server_check_query;
	if (!q || !*q)
		return NULL;
	return strcmp(q, "<empty>") == 0 ? "" : q;
}

/* A pool's effective timeouts (µs; 0: off).  A [users] entry's value wins, then a database
 * entry's (query_wait_timeout, server_lifetime), then the general key; 0 in an entry means
 * unset, as in PgBouncer.  The janitor asks once per pool per sweep, never per message. */
struct pool_timeouts {
	int64_t query, query_wait, idle_transaction, transaction, client_idle, server_lifetime;
};
void pool_timeouts(const struct pool *p, struct pool_timeouts *t);

/* A ParameterStatus value the pool's servers greeted with (server_encoding, ...), or NULL. */
const char *pool_parameter(const struct pool *p, const char *name);

#endif
