/* pool.c: databases, users and (database, user) pools: limits, the FIFO wait queue and linking. */
#include "pool.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "client.h"
#include "log.h"
#include "worker.h"
#include "namehash.h"
#include "sbuf.h"
#include "prepared.h"
#include "server.h"
#include "tls.h"

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The name tables are made on first use; NULL when out of memory. */
static struct namehash *table(struct namehash **slot)
{
	if (!*slot)
		*slot = namehash_new();
	return *slot;
}

struct database *pool_lookup_database(struct worker *w, const char *name, bool *known)
{
	struct database *db = w->db_names ? namehash_get(w->db_names, name) : NULL;
	*known = db != NULL;
	return db && !db->removed ? db : NULL;
}

struct database *pool_find_database(struct worker *w, const char *name)
{
	bool known;
	struct database *found = pool_lookup_database(w, name, &known);
	if (found)
		found->last_used = worker_now();   /* a login, or the console naming it */
	if (known)
		return found;
	const struct cfg_db *e = config_find_db(w->cf, name);
	if (!e || !table(&w->db_names))
		return NULL;
	struct database *db = calloc(1, sizeof(*db));
	if (!db)
		return NULL;
	db->name = strdup(name);
	db->w = w;
	db->id = ++w->next_id;
	db->last_used = worker_now();
	db->cf = config_db_dup(e);
	db->from_wildcard = strcmp(e->name, "*") == 0 && strcmp(name, "*") != 0;
	if (!db->name || !db->cf || !namehash_put(w->db_names, db->name, db)) {
		free(db->name);
		config_db_free(db->cf);
		free(db);
		return NULL;
	}
	list_append(&w->databases, &db->node);
	if (db->from_wildcard)
		log_info("registered new auto-database: %s", db->name);   /* PgBouncer's words */
	return db;
}

static struct user *find_user(struct worker *w, const char *name)
{
	if (!table(&w->user_names))
		return NULL;
	struct user *u = namehash_get(w->user_names, name);
	if (u)
		return u;
	u = calloc(1, sizeof(*u));
	if (!u || !(u->name = strdup(name)) || !namehash_put(w->user_names, u->name, u)) {
		if (u)
			free(u->name);
		free(u);
		return NULL;
	}
	list_append(&w->users, &u->node);
	return u;
}

struct pool *pool_get(struct worker *w, struct database *db, const char *user)
{
	struct pool *p = db->pools ? namehash_get(db->pools, user) : NULL;
	if (p)
		return p;
	struct user *u = table(&db->pools) ? find_user(w, user) : NULL;
	p = u ? calloc(1, sizeof(*p)) : NULL;
	if (!p)
		return NULL;
	p->w = w;
	p->id = ++w->next_id;
	p->db = db;
	p->user = u;
	list_init(&p->sv_login);
	list_init(&p->sv_idle);
	list_init(&p->sv_active);
	list_init(&p->sv_used);
	list_init(&p->sv_tested);
	list_init(&p->cl_active);
	list_init(&p->cl_waiting);
	list_init(&p->cl_waiting_login);
	/* keyed by the user object's name, which lives as long as the worker */
	if (!namehash_put(db->pools, u->name, p)) {
		free(p);
		return NULL;
	}
	list_append(&w->pools, &p->node);
	return p;
}

/* ---- removing databases (autodb_idle_timeout) ---- */

static void pool_unused(void *val, void *arg)
{
	const struct pool *p = val;
	if (p->n_cl[CL_ACTIVE] || p->n_cl[CL_WAITING] || p->n_cl[CL_WAITING_LOGIN] || pool_servers(p))
		*(bool *)arg = false;
}

bool pool_database_removable(struct worker *w, const struct database *db)
{
	/* Routed names and backends are the route layer's; a paused or disabled one would come
	 * back without its console state; an address lookup in flight holds the pointer. */
	if (!db->from_wildcard || db->cluster || db->be || db->paused || db->disabled ||
	    db->resolving || db->n_servers || (w->console && w->console->uses_database(w, db)))
		return false;
	bool unused = true;
	if (db->pools)
		namehash_each(db->pools, pool_unused, &unused);
	return unused;
}

static void pool_unlink(void *val, void *arg)
{
	struct pool *p = val;
	list_del(&p->node);
}

static void free_database(struct reap_item *it);

void pool_remove_database(struct worker *w, struct database *db)
{
	namehash_del(w->db_names, db->name);
	list_del(&db->node);
	if (db->pools)
		namehash_each(db->pools, pool_unlink, NULL);
	/* Clients and servers closed earlier in this callback may still point at its pools until
	 * the reaper frees them; the database goes after them. */
	worker_defer_free(w, &db->reap, free_database);
}

/* Pools are keyed by their user's name, which outlives them: freeing one leaves the table
 * walkable. */
static void pool_free(void *val, void *arg)
{
	struct pool *p = val;
	pktbuf_free(&p->welcome);
	varcache_clear(&((struct worker *)arg)->vars, &p->defaults);
	if (p->auth_secret) {
		explicit_bzero(p->auth_secret, strlen(p->auth_secret));
		free(p->auth_secret);
	}
	free(p);
}

static void free_database(struct reap_item *it)
{
	pool_free_database(container_of(it, struct database, reap));
}

void pool_free_database(struct database *db)
{
	if (db->pools)
		namehash_each(db->pools, pool_free, db->w);
	namehash_free(db->pools);
	tls_db_free(db);
	config_db_free(db->cf);
	free(db->name);
	free(db);
}

bool pool_db_match(const struct database *target, const struct database *db)
{
	return db == target || (db->front && db->front == target);
}

bool pool_db_paused(const struct database *db)
{
	return db->paused || (db->front && db->front->paused);
}

static int max_db_conns(const struct pool *p)
{
	return p->db->cf->max_db_connections >= 0 ? p->db->cf->max_db_connections
						   : (int)p->w->cf->max_db_connections;
}

static int max_user_conns(const struct pool *p)
{
	const struct cfg_user *u = config_find_user(p->w->cf, p->user->name);
	if (u && u->max_user_connections >= 0)
		return u->max_user_connections;
	return (int)p->w->cf->max_user_connections;
}

static bool login_retry_wait(const struct pool *p)
{
	return p->last_connect_failed &&
	       p->w->now - p->last_connect_time < (uint64_t)p->w->cf->server_login_retry;
}

static bool can_open(const struct pool *p, bool reserve)
{
	int limit = pool_size(p) + (reserve ? pool_reserve(p) : 0);
	if (pool_servers(p) >= limit)
		return false;
	int maxdb = max_db_conns(p), maxuser = max_user_conns(p);
	if (maxdb > 0 && p->db->n_servers >= maxdb)
		return false;
	if (maxuser > 0 && p->user->n_servers >= maxuser)
		return false;
	return !login_retry_wait(p);
}

/* Servers that will be idle within a round trip: logging in, being checked, or finishing
 * pgmux's own query after a release (the reset a session ends with).  A waiting client is
 * better served by one of those than by a new connection, and counting them keeps the number
 * of server connections independent of how fast the reset answers. */
static int soon_idle(struct pool *p)
{
	int n = p->n_sv[SV_LOGIN] + p->n_sv[SV_TESTED];
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &p->sv_used) {
		const struct server *sv = list_entry(it, struct server, node);
		if (sv->internal_z && !sv->close_when_idle && !sv->cancel_pending && !sv->link)
			n++;
	}
	return n;
}

void pool_launch(struct pool *p)
{
	struct worker *w = p->w;
	if (p->db->removed || w->shutdown == PGMUX_SHUTDOWN_NOW || w->paused || pool_db_paused(p->db))
		return;
	if (p->db->be && !w->router->may_connect(p->db))
		return;   /* a backend that is down: the monitor says when it is back */
	int want = p->n_cl[CL_WAITING];
	if (p->n_cl[CL_WAITING_LOGIN] && !want)
		want = 1;
	int pending = soon_idle(p);
	if (want <= pending)
		return;
	if (!p->db->addr_ok) {
		pool_resolve(p->db, w);
		return;
	}
	/* The reserve opens only for a client that has waited reserve_pool_timeout. */
	bool reserve = false;
	struct list *first = list_first(&p->cl_waiting);
	if (first && pool_reserve(p) > 0) {
		struct client *cl = list_entry(first, struct client, node);
		reserve = worker_now() - cl->wait_start >= (uint64_t)w->cf->reserve_pool_timeout;
	}
	while (want > pending && can_open(p, reserve)) {
		int before = pool_servers(p);
		server_connect(p);
		if (pool_servers(p) == before)
			break;
		pending++;
	}
}

static void link_pair(struct client *cl, struct server *sv)
{
	struct pool *p = cl->pool;
	uint64_t now = p->w->now;
	server_set_state(sv, SV_ACTIVE);
	sv->link = cl;
	cl->link = sv;
	sbuf_link(&cl->c, &sv->c);
	sv->link_time = now;
	sv->ps_active = ps_enabled(p);
	/* Every acquisition counts, the immediate ones as 0 µs: the percentiles then say how
	 * often clients wait at all. */
	uint64_t waited = cl->state == CL_WAITING && now > cl->wait_start ? now - cl->wait_start : 0;
	p->wait_time += waited;
	hist_add(&p->h_wait, waited);
	if (cl->state == CL_WAITING)
		client_set_state(cl, CL_ACTIVE);
	bool internal = varcache_apply(&cl->vars, &sv->vars, &sv->c.out);
	if (internal)
		sv->internal_z++;
	if (cl->rt && p->w->router->linked(cl, sv))
		internal = true;
	if (internal && sbuf_send_out(&sv->c) < 0)
		server_close(sv, "send failed");
}

static struct server *take_idle(struct pool *p)
{
	if (list_empty(&p->sv_idle))
		return NULL;
	/* LIFO keeps few servers hot; round robin spreads load when asked to. */
	struct list *it = p->w->cf->server_round_robin ? p->sv_idle.next : p->sv_idle.prev;
	return list_entry(it, struct server, node);
}

static void fail_fast(struct client *cl)
{
	char msg[400];
	snprintf(msg, sizeof(msg), "server login has been failing, try again later (server_login_retry)%s%s",
		 cl->pool->last_error[0] ? ": " : "", cl->pool->last_error);
	client_close(cl, msg, "08P01");
}

void pool_client_ready(struct client *cl)
{
	struct pool *p = cl->pool;
	if (p->welcome_ok) {
		client_send_welcome(cl);
		return;
	}
	if (login_retry_wait(p) && pool_servers(p) == 0) {
		fail_fast(cl);
		return;
	}
	if (sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return;
	}
	/* Reading stays on while it waits: no epoll_ctl per wait, and a hang-up is noticed.
	 * Anything it sends meanwhile stays buffered until it has a server. */
	client_set_state(cl, CL_WAITING_LOGIN);
	cl->wait_start = p->w->now;
	pool_launch(p);
}

void pool_acquire(struct client *cl)
{
	struct pool *p = cl->pool;
	struct worker *w = cl->c.w;
	struct server *sv = (w->paused || pool_db_paused(p->db)) ? NULL : take_idle(p);
	if (sv && list_empty(&p->cl_waiting)) {
		link_pair(cl, sv);
		return;
	}
	if (login_retry_wait(p) && pool_servers(p) == 0) {
		fail_fast(cl);
		return;
	}
	client_set_state(cl, CL_WAITING);
	pool_launch(p);
	pool_serve_waiters(p);
}

void pool_grow_min(struct pool *p)
{
	struct worker *w = p->w;
	if (w->shutdown || p->db->removed || !p->db->addr_ok)
		return;
	if (pool_servers(p) < pool_min_size(p) && can_open(p, false))
		server_connect(p);
}

void pool_serve_waiters(struct pool *p)
{
	struct worker *w = p->w;
	while (!w->paused && !pool_db_paused(p->db) && !list_empty(&p->cl_waiting)) {
		struct server *sv = take_idle(p);
		if (!sv)
			break;
		struct client *cl = list_entry(p->cl_waiting.next, struct client, node);
		link_pair(cl, sv);
		if (!sv->c.dead)
			client_linked(cl);
		else
			client_close(cl, "server conn crashed?", "08P01");
	}
}

void pool_release(struct server *sv, bool client_gone)
{
	struct pool *p = sv->pool;
	struct worker *w = p->w;
	struct client *cl = sv->link;
	uint64_t now = w->now;

	if (cl && cl->rt && !client_gone)
		w->router->releasing(sv);   /* read your writes: the commit LSN, asked before release */
	if (cl) {
		cl->link = NULL;
		sv->link = NULL;
		sbuf_link(&sv->c, NULL);
	}
	if (sv->c.dead)
		return;
	/* Scrub what belonged to the old client: a reply it never took (it left), a release it
	 * was still owed, a read paused because it was full. */
	sv->ready_notified = false;
	if (ps_pending(sv))
		sv->close_when_idle = true;   /* answers still owed: cannot be handed on */
	ps_unlink(sv);
	struct iobuf *sb = sv->c.in;
	if (sv->c.pkt_left)
		sv->close_when_idle = true;   /* mid-message: the stream cannot be resynced */
	else if (sb && sb->start != sb->scan)
		sb->start = sb->scan;
	sbuf_resume(&sv->c);
	server_drain_unlinked(sv);
	if (sv->c.dead || sv->link)
		return;   /* gone, or its own query finished meanwhile and it was handed on */
	const struct config *cf = w->cf;
	const char *why = NULL;
	if (sv->close_when_idle)
		why = "client disconnected mid-transaction or server marked for close";
	else if (sv->tx != 'I')
		why = "server not idle at release";
	else if (p->db->removed)
		why = "database removed";
	else if (cf->server_lifetime > 0 && now - sv->connect_time > (uint64_t)cf->server_lifetime)
		why = "server lifetime over";
	else if (pool_servers(p) > pool_size(p) + pool_reserve(p))
		why = "pool shrank";
	if (why) {
		server_close(sv, why);
		pool_launch(p);
		return;
	}
	if (sv->internal_z) {
		/* pgmux's own query is still answering: it finishes into the pool (internal_done). */
		server_set_state(sv, SV_USED);
		return;
	}
	bool reset = (cf->server_reset_query_always || (client_gone && pool_mode(p) == POOL_SESSION)) &&
		     cf->server_reset_query && *cf->server_reset_query;
	if (reset) {
		server_set_state(sv, SV_USED);
		/* DISCARD ALL / DEALLOCATE ALL drop the server's prepared statements. */
		ps_server_forget(sv);
		if (!server_send_internal(sv, cf->server_reset_query))
			server_close(sv, "reset query failed");
		return;
	}
	if (sv->cancel_pending) {
		server_set_state(sv, SV_USED);
		return;
	}
	server_set_state(sv, SV_IDLE);
	sv->last_used = now;
	pool_serve_waiters(p);
	if (cl && !client_gone && !cl->c.dead && sbuf_unparsed(&cl->c))
		client_on_data(cl);
	worker_check_shutdown(w);
}

void pool_server_ready(struct server *sv)
{
	struct pool *p = sv->pool;
	server_set_state(sv, SV_IDLE);
	sv->last_used = sv->last_check = p->w->now;
	while (p->welcome_ok && !list_empty(&p->cl_waiting_login)) {
		struct client *cl = list_entry(p->cl_waiting_login.next, struct client, node);
		client_send_welcome(cl);
	}
	pool_serve_waiters(p);
	worker_check_shutdown(p->w);
}

void pool_server_failed(struct pool *p, const char *msg, const char *sqlstate)
{
	p->last_connect_failed = true;
	p->last_connect_time = p->w->now;
	if (!p->error_logged || strcmp(p->last_error, msg) != 0) {
		log_warn("pool %s/%s: server login failed: %s", p->db->name, p->user->name, msg);
		p->error_logged = true;
	}
	snprintf(p->last_error, sizeof(p->last_error), "%s", msg);
	/* A routed backend that cannot be reached is down: its waiters go elsewhere. Errors
	 * from a server that answered (auth, no such database) still reach the clients. */
	if (p->db->be && (!sqlstate || !strncmp(sqlstate, "08", 2) || !strncmp(sqlstate, "57P", 3)) &&
	    p->w->router->backend_failed(p->db, msg)) {
		p->last_connect_failed = false;
		return;
	}
	/* The server refused the pool's credentials (class 28) or its database (3D000): no new
	 * server can log in until someone changes something, so every waiting client hears the
	 * server's words now, even while other servers of the pool still run (PgBouncer kills the
	 * pool's waiting logins the same way), instead of waiting out query_wait_timeout. */
	bool refused = sqlstate && (!strncmp(sqlstate, "28", 2) || !strcmp(sqlstate, "3D000"));
	if (pool_servers(p) > 0 && !refused)
		return;
	while (!list_empty(&p->cl_waiting_login)) {
		struct client *cl = list_entry(p->cl_waiting_login.next, struct client, node);
		client_close(cl, msg, sqlstate ? sqlstate : "08P01");
	}
	while (!list_empty(&p->cl_waiting)) {
		struct client *cl = list_entry(p->cl_waiting.next, struct client, node);
		if (refused)
			client_close(cl, msg, sqlstate);
		else
			fail_fast(cl);
	}
}

static void launch_db_pools(struct worker *w, struct database *db)
{
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		if (p->db == db)
			pool_launch(p);
	}
}

static void resolved(int err, struct evutil_addrinfo *res, void *arg)
{
	struct database *db = arg;
	struct worker *w = db->w;
	w->now = worker_now();
	db->resolving = false;
	if (err || !res) {
		char msg[300];
		snprintf(msg, sizeof(msg), "could not resolve host \"%s\": %s", db->cf->host,
			 evutil_gai_strerror(err));
		struct list *it, *tmp;
		list_for_each_safe(it, tmp, &w->pools) {
			struct pool *p = list_entry(it, struct pool, node);
			if (p->db == db)
				pool_server_failed(p, msg, "08006");
		}
		return;
	}
	memcpy(&db->addr, res->ai_addr, res->ai_addrlen);
	db->addrlen = (socklen_t)res->ai_addrlen;
	((struct sockaddr_in *)&db->addr)->sin_port = htons((uint16_t)db->cf->port);
	db->addr_ok = true;
	db->resolved_at = w->now;
	evutil_freeaddrinfo(res);
	launch_db_pools(w, db);
}

/* As in PgBouncer, an entry without a host means the socket in unix_socket_dir; with that
 * empty, Debian's PostgreSQL directory if present, else the historical /tmp. */
static const char *default_socket_dir(const struct config *cf)
{
	struct stat st;
	if (cf->unix_socket_dir && *cf->unix_socket_dir)
		return cf->unix_socket_dir;
	return stat("/var/run/postgresql", &st) == 0 ? "/var/run/postgresql" : "/tmp";
}

void pool_resolve(struct database *db, struct worker *w)
{
	const char *host = db->cf->host;
	db->w = w;
	if (db->addr_ok || db->resolving)
		return;
	memset(&db->addr, 0, sizeof(db->addr));
	if (!host || !*host || host[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)&db->addr;
		un->sun_family = AF_UNIX;
		int n = snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d",
				 host && *host ? host : default_socket_dir(w->cf), db->cf->port);
		if (n < 0 || (size_t)n >= sizeof(un->sun_path)) {
			log_error("database %s: unix socket path too long", db->name);
			return;
		}
		db->addrlen = sizeof(*un);
		db->addr_ok = true;
	} else {
		struct sockaddr_in *in4 = (struct sockaddr_in *)&db->addr;
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&db->addr;
		if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
			in4->sin_family = AF_INET;
			in4->sin_port = htons((uint16_t)db->cf->port);
			db->addrlen = sizeof(*in4);
			db->addr_ok = true;
		} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
			in6->sin6_family = AF_INET6;
			in6->sin6_port = htons((uint16_t)db->cf->port);
			db->addrlen = sizeof(*in6);
			db->addr_ok = true;
		} else {
			struct evutil_addrinfo hints = { 0 };
			hints.ai_family = AF_UNSPEC;
			hints.ai_socktype = SOCK_STREAM;
			db->resolving = true;
			/* The callback may run before this returns (cached or immediate failure). */
			evdns_getaddrinfo(w->dns, host, NULL, &hints, resolved, db);
			return;
		}
	}
	launch_db_pools(w, db);
}

static void mark_servers_for_close(struct worker *w, struct database *db)
{
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		if (p->db != db)
			continue;
		struct list *lists[] = { &p->sv_login, &p->sv_idle, &p->sv_active, &p->sv_used, &p->sv_tested };
		for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
			struct list *s, *stmp;
			list_for_each_safe(s, stmp, lists[i]) {
				struct server *sv = list_entry(s, struct server, node);
				if (sv->state == SV_IDLE)
					server_close(sv, "database configuration changed");
				else
					sv->close_when_idle = true;
			}
		}
	}
}

void pool_apply_config(struct worker *w)
{
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->databases) {
		struct database *db = list_entry(it, struct database, node);
		const struct cfg_db *e = config_find_db(w->cf, db->name);
		if (e && db->from_wildcard != (strcmp(e->name, "*") == 0))
			e = NULL;   /* switched between explicit and wildcard: treat as new */
		if (!e) {
			if (!db->removed)
				log_info("database %s removed from the configuration", db->name);
			db->removed = true;
			mark_servers_for_close(w, db);
			continue;
		}
		struct cfg_db *copy = config_db_dup(e);
		if (!copy)
			continue;
		bool moved = !str_eq(copy->host, db->cf->host) || copy->port != db->cf->port ||
			     !str_eq(copy->dbname, db->cf->dbname) || !str_eq(copy->user, db->cf->user) ||
			     !str_eq(copy->password, db->cf->password) || !str_eq(copy->sslmode, db->cf->sslmode);
		config_db_free(db->cf);
		db->cf = copy;
		tls_db_free(db);   /* certificate files may have changed: reload on next use */
		db->removed = false;
		if (moved) {
			db->addr_ok = false;
			mark_servers_for_close(w, db);
		}
		/* A changed entry deserves a fresh try, not the old login_retry wait. */
		struct list *pi, *pt;
		list_for_each_safe(pi, pt, &w->pools) {
			struct pool *p = list_entry(pi, struct pool, node);
			if (p->db == db)
				p->last_connect_failed = false;
		}
	}
	pool_serve_all(w);
}

void pool_serve_all(struct worker *w)
{
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		pool_launch(p);
		pool_serve_waiters(p);
	}
}
