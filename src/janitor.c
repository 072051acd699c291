/* janitor.c: a periodic sweep: timeouts, server lifetimes and checks, retries and minimum pool sizes. */
#include "janitor.h"

#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "txtrack.h"
#include "worker.h"
#include "pool.h"
#include "pool_info.h"
#include "route_types.h"
#include "server.h"
#include "stats.h"

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
	janitor_run(arg);
}

void janitor_start(struct worker *w)
{
	struct timeval tv = { 0, JANITOR_PERIOD_USEC };
	event_assign(&w->ev_janitor, w->base, -1, EV_PERSIST, janitor_cb, w);
	event_add(&w->ev_janitor, &tv);
}

/* Victims are gathered first and acted on after: closing one object can move others between
 * lists (a released server serves a waiter), which would derail a list walk.  Memory stays
 * valid until the reaper runs after this callback. */
struct victims {
	void **v;
	const char **why;
	size_t n, cap;
};

static void add(struct victims *vs, void *obj, const char *why)
{
	if (vs->n == vs->cap) {
		size_t cap = vs->cap ? vs->cap * 2 : 64;
		void **v = realloc(vs->v, cap * sizeof(*v));
		const char **y = realloc(vs->why, cap * sizeof(*y));
		if (v)
			vs->v = v;
		if (y)
			vs->why = y;
		if (!v || !y)
			return;
		vs->cap = cap;
	}
	vs->v[vs->n] = obj;
	vs->why[vs->n++] = why;
}

static bool over(uint64_t now, uint64_t since, int64_t limit)
{
	return limit > 0 && now > since && now - since >= (uint64_t)limit;
}

/* The timeouts of a linked client (PgBouncer checks them on its server): a query running too
 * long, a transaction open too long, a transaction left idle too long; first match wins. */
static const char *linked_timeout(const struct client *c, const struct pool_timeouts *t,
				  uint64_t now)
{
	bool busy = !txtrack_quiet(&c->tt);
	if (busy && over(now, c->query_start, t->query))
		return "query timeout";
	if (c->link->tx == 'I')
		return NULL;
	if (!busy && over(now, c->last_active, t->idle_transaction))
		return "idle transaction timeout";
	if (over(now, c->xact_start, t->transaction))
		return "transaction timeout";
	return NULL;
}

/* A routed client holding its message back until a PAUSE ends (route_pick.c): it waits, as a
 * queued client does, though it is on no pool's wait queue yet. */
static bool parked(const struct client *c)
{
	return c->rt && !list_empty(&c->rt->parked);
}

static void sweep_clients(struct worker *w, uint64_t now, struct victims *cl)
{
	const struct config *cf = w->cf;
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->cl_login) {
		struct client *c = list_entry(it, struct client, node);
		if (over(now, c->connect_time, cf->client_login_timeout))
			add(cl, c, "client_login_timeout");
	}
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		if (!p->n_cl[CL_ACTIVE] && !p->n_cl[CL_WAITING] && !p->n_cl[CL_WAITING_LOGIN])
			continue;
		struct pool_timeouts t;
		pool_timeouts(p, &t);
		struct list *c2, *t2;
		/* A waiting client's query has started too: query_timeout covers the wait as well
		 * (PgBouncer's "query_timeout" for a client that never got a server). */
		list_for_each_safe(c2, t2, &p->cl_waiting) {
			struct client *c = list_entry(c2, struct client, node);
			if (over(now, c->wait_start, t.query))
				add(cl, c, "query_timeout");
			else if (over(now, c->wait_start, t.query_wait))
				add(cl, c, "query_wait_timeout");
		}
		list_for_each_safe(c2, t2, &p->cl_waiting_login) {
			struct client *c = list_entry(c2, struct client, node);
			if (over(now, c->connect_time, cf->client_login_timeout))
				add(cl, c, "client_login_timeout (server down)");
			else if (over(now, c->wait_start, t.query))
				add(cl, c, "query_timeout");
			else if (over(now, c->wait_start, t.query_wait))
				add(cl, c, "query_wait_timeout");
		}
		if (t.client_idle <= 0 && t.idle_transaction <= 0 && t.query <= 0 && t.transaction <= 0)
			continue;
		list_for_each_safe(c2, t2, &p->cl_active) {
			struct client *c = list_entry(c2, struct client, node);
			if (parked(c))
				continue;   /* not idle: waiting (below) */
			if (!c->link || (txtrack_quiet(&c->tt) && c->link->tx == 'I')) {
				/* unlinked, or a session-mode client with nothing in flight */
				if (over(now, c->last_active, t.client_idle))
					add(cl, c, "client_idle_timeout");
			} else {
				const char *why = linked_timeout(c, &t, now);
				if (why)
					add(cl, c, why);
			}
		}
	}
	/* parked clients: the waiting clients' timeouts, from the moment they parked */
	if (!w->rt_parked.next)
		return;
	list_for_each_safe(it, tmp, &w->rt_parked) {
		struct route_session *rt = list_entry(it, struct route_session, parked);
		struct client *c = rt->cl;
		struct pool_timeouts t;
		pool_timeouts(c->pool, &t);
		if (over(now, c->wait_start, t.query))
			add(cl, c, "query_timeout");
		else if (over(now, c->wait_start, t.query_wait))
			add(cl, c, "query_wait_timeout");
	}
}

static void sweep_servers(struct worker *w, uint64_t now, struct victims *sv, struct victims *check)
{
	const struct config *cf = w->cf;
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		struct list *s, *st;
		list_for_each_safe(s, st, &p->sv_login) {
			struct server *x = list_entry(s, struct server, node);
			if (over(now, x->connect_time, cf->server_connect_timeout))
				add(sv, x, "connect timeout");
		}
		if (list_empty(&p->sv_idle))
			continue;
		int64_t lifetime = pool_server_lifetime(p);
		int total = pool_servers(p);
		int excess = total - (pool_size(p) + pool_reserve(p));
		int above_min = total - pool_min_size(p);
		/* Oldest-used first: the list head has been idle longest. */
		list_for_each_safe(s, st, &p->sv_idle) {
			struct server *x = list_entry(s, struct server, node);
			if (excess > 0) {
				add(sv, x, "pool size reduced");
				excess--;
				above_min--;
			} else if (over(now, x->connect_time, lifetime) && above_min > 0) {
				add(sv, x, "server lifetime over");
				above_min--;
			} else if (over(now, x->last_used, cf->server_idle_timeout) && above_min > 0) {
				add(sv, x, "server idle timeout");
				above_min--;
			} else if (pool_check_query(cf) &&
				   over(now, x->last_check, cf->server_check_delay) &&
				   over(now, x->last_used, cf->server_check_delay)) {
				add(check, x, NULL);
			}
		}
	}
}

/* pool_idle_timeout: a pool that has had no client and no server for that long is freed (its
 * database stays); it comes back on the next login.  Pools that keep min_pool_size servers,
 * and those of routed sections, stay. */
static void sweep_pools(struct worker *w, uint64_t now)
{
	int64_t limit = w->cf->pool_idle_timeout;
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		if (p->n_cl[CL_ACTIVE] || p->n_cl[CL_WAITING] || p->n_cl[CL_WAITING_LOGIN] ||
		    pool_servers(p)) {
			p->last_used = now;
			continue;
		}
		if (limit > 0 && over(now, p->last_used, limit) && pool_removable(p)) {
			log_info("cleaning up idle pool %s/%s: no clients or servers for %llus "
				 "(pool_idle_timeout)", p->db->name, p->user->name,
				 (unsigned long long)((now - p->last_used) / 1000000));
			stats_pool_gone(w, p);
			pool_remove(p);
		}
	}
}

/* autodb_idle_timeout: a database made from the "*" entry whose pools have had no client and no
 * server for that long is removed with its pools.  Each sweep marks the databases it sees in
 * use, and each lookup by name (a login) marks its database too, so a client that comes and
 * goes between two sweeps still counts.  A removed database is freed after the current
 * callback, behind any dead client or server that still points at it. */
static void sweep_autodbs(struct worker *w, uint64_t now)
{
	int64_t limit = w->cf->autodb_idle_timeout;   /* 0: kept, unless no login ever got in */
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		if (p->n_cl[CL_ACTIVE] || p->n_cl[CL_WAITING] || p->n_cl[CL_WAITING_LOGIN] ||
		    pool_servers(p))
			p->db->last_used = now;
	}
	size_t n = 0;
	list_for_each_safe(it, tmp, &w->databases) {
		struct database *db = list_entry(it, struct database, node);
		/* One no login ever got a pool in (made before authentication, for an auth_query
		 * lookup in the database the client named) goes at once: else a client without a
		 * password could make one per name it tries, each kept for autodb_idle_timeout. */
		bool never_logged_in = !db->pools;
		if (db->from_wildcard && (never_logged_in || over(now, db->last_used, limit)) &&
		    pool_database_removable(w, db)) {
			log_debug("database %s removed: unused for autodb_idle_timeout", db->name);
			stats_database_gone(w, db);
			pool_remove_database(w, db);
			n++;
		}
	}
	if (n)
		log_info("autodb_idle_timeout: removed %zu unused database(s) made from the \"*\" entry", n);
}

static void grow_pools(struct worker *w)
{
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		pool_launch(p);
		pool_grow_min(p);
	}
}

void janitor_run(struct worker *w)
{
	uint64_t now = w->now = worker_now();
	struct victims cl = { 0 }, sv = { 0 }, check = { 0 };
	sweep_autodbs(w, now);
	sweep_pools(w, now);
	sweep_clients(w, now, &cl);
	sweep_servers(w, now, &sv, &check);
	for (size_t i = 0; i < cl.n; i++) {
		struct client *c = cl.v[i];
		if (c->c.dead)
			continue;
		/* Closing an earlier victim may have served this one meanwhile. */
		if ((strcmp(cl.why[i], "query_wait_timeout") == 0 ||
		     strcmp(cl.why[i], "query_timeout") == 0) && c->state != CL_WAITING &&
		    c->state != CL_WAITING_LOGIN && !parked(c))
			continue;
		if (c->link && c->link->state == SV_ACTIVE && c->tt.expect_z) {
			/* A query over its time: the server is mid-query and cannot be reused. */
			c->link->close_when_idle = true;
		}
		client_close(c, cl.why[i], "08P01");
	}
	for (size_t i = 0; i < sv.n; i++) {
		struct server *s = sv.v[i];
		if (!s->c.dead && (s->state == SV_IDLE || s->state == SV_LOGIN))
			server_close(s, sv.why[i]);
	}
	for (size_t i = 0; i < check.n; i++) {
		struct server *s = check.v[i];
		if (s->c.dead || s->state != SV_IDLE)
			continue;
		server_set_state(s, SV_TESTED);
		if (!server_send_internal(s, pool_check_query(w->cf)))
			server_close(s, "server check query failed");
	}
	free(cl.v);
	free(cl.why);
	free(sv.v);
	free(sv.why);
	free(check.v);
	free(check.why);
	pool_notify_waiters(w, now);
	pool_fast_close(w);
	grow_pools(w);
	worker_check_shutdown(w);
}
