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
#include "repl.h"
#include "server.h"
#include "tls.h"
#include "txtrack.h"

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
	db->id = ++w->next_obj_id;
	db->last_used = worker_now();
	db->cf = config_db_dup(e);
	db->n_hosts = 1;
	db->from_wildcard = strcmp(e->name, "*") == 0 && strcmp(name, "*") != 0;
	db->tls_sig = tls_db_signature(w->cf, e);
	if (!db->name || !db->cf || !db->tls_sig || !namehash_put(w->db_names, db->name, db)) {
		free(db->name);
		free(db->tls_sig);
		config_db_free(db->cf);
		free(db);
		return NULL;
	}
	list_append(&w->databases, &db->node);
	if (db->from_wildcard)
		log_info("registered new auto-database: %s", db->name);   /* PgBouncer's words */
	return db;
}

struct user *pool_lookup_user(struct worker *w, const char *name)
{
	return w->user_names ? namehash_get(w->user_names, name) : NULL;
}

struct user *pool_find_user(struct worker *w, const char *name)
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
	u->cf = config_find_user(w->cf, name);
	list_append(&w->users, &u->node);
	return u;
}

struct pool *pool_get(struct worker *w, struct database *db, const char *user)
{
	struct pool *p = db->pools ? namehash_get(db->pools, user) : NULL;
	if (p)
		return p;
	struct user *u = table(&db->pools) ? pool_find_user(w, user) : NULL;
	p = u ? calloc(1, sizeof(*p)) : NULL;
	if (!p)
		return NULL;
	p->w = w;
	p->id = ++w->next_obj_id;
	p->db = db;
	p->user = u;
	p->last_used = w->now;
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
	    db->resolving || db->n_servers || db->n_clients ||
	    (w->console && w->console->uses_database(w, db)))
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

static void free_pool(struct reap_item *it);

bool pool_removable(const struct pool *p)
{
	const struct database *db = p->db;
	const struct worker *w = p->w;
	if (p->n_cl[CL_ACTIVE] || p->n_cl[CL_WAITING] || p->n_cl[CL_WAITING_LOGIN] || pool_servers(p))
		return false;
	/* Routed sections hold their backends' pools in their route sets; a paused database
	 * would lose its console state with them. */
	if (db->cluster || db->be || db->front || pool_db_paused(db) || db->resolving ||
	    pool_min_size(p) > 0)
		return false;
	return !(w->console && w->console->uses_database((struct worker *)w, db));
}

void pool_remove(struct pool *p)
{
	namehash_del(p->db->pools, p->user->name);
	list_del(&p->node);
	/* Clients and servers closed earlier in this callback may still point at it. */
	worker_defer_free(p->w, &p->reap, free_pool);
}

/* A statement of pgmux's own that waits for an idle server (pool_run_internal_later). */
struct pool_stmt {
	struct pool_stmt *next;
	char sql[];
};

/* Pools are keyed by their user's name, which outlives them: freeing one leaves the table
 * walkable. */
static void pool_free(void *val, void *arg)
{
	struct pool *p = val;
	while (p->internal_q) {
		struct pool_stmt *q = p->internal_q;
		p->internal_q = q->next;
		log_warn("a pool was removed before it could run \"%s\"", q->sql);
		free(q);
	}
	pktbuf_free(&p->welcome);
	varcache_clear(&((struct worker *)arg)->vars, &p->defaults);
	if (p->auth_secret) {
		explicit_bzero(p->auth_secret, strlen(p->auth_secret));
		free(p->auth_secret);
	}
	free(p);
}

static void free_pool(struct reap_item *it)
{
	struct pool *p = container_of(it, struct pool, reap);
	pool_free(p, p->w);
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
	free(db->tls_sig);
	config_db_free(db->cf);
	free(db->hosts);
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

static bool login_retry_wait(const struct pool *p)
{
	return p->last_connect_failed &&
	       p->w->now - p->last_connect_time < (uint64_t)p->w->cf->server_login_retry;
}

static bool db_full(const struct pool *p)
{
	int max = pool_db_max_connections(p->w, p->db->cf);
	return max > 0 && p->db->n_servers >= max;
}

static bool user_full(const struct pool *p)
{
	int max = pool_user_max_connections(p->w, p->user->cf);
	return max > 0 && p->user->n_servers >= max;
}

/* max_db_connections / max_user_connections are full and p has clients waiting: PgBouncer
 * closes the idle server that has been unused longest in another pool of the same database
 * (by_db) or user, so that the waiting pool may open one.  True when one was closed. */
static bool evict(struct pool *p, bool by_db)
{
	struct server *victim = NULL;
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &p->w->pools) {
		struct pool *q = list_entry(it, struct pool, node);
		if (q == p || (by_db ? q->db != p->db : q->user != p->user) || list_empty(&q->sv_idle))
			continue;
		/* the head of sv_idle has been idle longest */
		struct server *sv = list_entry(q->sv_idle.next, struct server, node);
		if (!victim || sv->last_used < victim->last_used)
			victim = sv;
	}
	if (!victim)
		return false;
	server_close(victim, "evicted");
	return true;
}

/* Whether p may open one more server now: within pool_size (plus the reserve when `reserve`),
 * max_db_connections and max_user_connections, and not waiting out server_login_retry.  With
 * `may_evict` (clients are waiting), a full database or user gets room by eviction. */
static bool can_open(struct pool *p, bool reserve, bool may_evict)
{
	int limit = pool_size(p) + (reserve ? pool_reserve(p) : 0);
	if (pool_servers(p) >= limit || login_retry_wait(p))
		return false;
	if (db_full(p) && !(may_evict && evict(p, true) && !db_full(p)))
		return false;
	return !user_full(p) || (may_evict && evict(p, false) && !user_full(p));
}

bool pool_may_open(struct pool *p)
{
	return can_open(p, false, false);
}

/* The first idle server of q, or NULL. */
static struct server *first_idle(struct pool *q)
{
	return list_empty(&q->sv_idle) ? NULL : list_entry(q->sv_idle.next, struct server, node);
}

bool pool_evict_idle(struct pool *p)
{
	struct server *sv = NULL;
	if (pool_servers(p) >= pool_size(p)) {
		sv = first_idle(p);
	} else {
		bool dbf = db_full(p), userf = user_full(p);
		struct list *it, *nx;
		list_for_each_safe(it, nx, &p->w->pools) {
			struct pool *q = list_entry(it, struct pool, node);
			if ((dbf && q->db == p->db) || (userf && q->user == p->user))
				if ((sv = first_idle(q)))
					break;
		}
	}
	if (!sv)
		return false;
	server_close(sv, "evicted");
	return true;
}

/* Servers that will be idle within a round trip: logging in, being checked, or finishing
 * pgmux's own query after a release (the reset a session ends with).  A waiting client is
 * better served by one of those than by a new connection, and counting them keeps the number
 * of server connections independent of how fast the reset answers. */
static int soon_idle(struct pool *p)
{
	int n = p->n_sv[SV_TESTED];
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &p->sv_login) {
		const struct server *sv = list_entry(it, struct server, node);
		if (!sv->replication)   /* a replication client's own: never anyone else's */
			n++;
	}
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
	if (p->n_repl_wait) {
		if (!pool_addr_ready(p))
			return;
		repl_launch(p);
		if (p->db->removed)
			return;
	}
	int want = p->n_cl[CL_WAITING];
	if (p->n_cl[CL_WAITING_LOGIN] > p->n_repl_wait && !want)
		want = 1;
	int pending = soon_idle(p);
	if (want <= pending)
		return;
	if (!pool_addr_ready(p))
		return;
	/* The reserve opens only for a client that has waited reserve_pool_timeout (0: never). */
	struct client *first = list_empty(&p->cl_waiting) ? NULL
			     : list_entry(p->cl_waiting.next, struct client, node);
	bool reserve = first && pool_reserve(p) > 0 && w->cf->reserve_pool_timeout > 0 &&
		       worker_now() - first->wait_start >= (uint64_t)w->cf->reserve_pool_timeout;
	while (want > pending && can_open(p, reserve, true)) {
		/* round-robin over a host list: the next entry may still need its lookup */
		if (!pool_addr_ready(p))
			break;
		int before = pool_servers(p);
		if (first && before >= pool_size(p)) {   /* a reserve server: PgBouncer's line */
			char tag[256];
			log_warn("%s taking connection from reserve_pool", client_tag(first, tag, sizeof(tag)));
		}
		server_connect(p, NULL);
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
	p->server_assignment_count++;
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

/* server_check_query before reuse, as PgBouncer does it: a server that has served a client
 * since its last check and has sat idle longer than server_check_delay (0: at all) runs the
 * check first.  A fresh server, or one just reset, counts as checked. */
static bool needs_check(const struct pool *p, const struct server *sv)
{
	const struct config *cf = p->w->cf;
	bool due;
	if (cf->server_check_delay <= 0) {
		due = sv->last_used > sv->last_check;
	} else {
		uint64_t now = p->w->now, delay = (uint64_t)cf->server_check_delay;
		due = now - sv->last_used >= delay && now - sv->last_check >= delay;
	}
	/* the text is looked at only when a check is due: a busy pool pays two compares */
	return due && pool_check_query(cf);
}

/* An idle server fit to serve now, or NULL: one that needs its check starts it (SV_TESTED,
 * counted as soon idle, so no new connection opens for the wait), and the waiter gets it, or
 * whichever server is ready first, when the check answers. */
static struct server *take_ready(struct pool *p)
{
	struct server *sv;
	while ((sv = take_idle(p)) && needs_check(p, sv)) {
		server_set_state(sv, SV_TESTED);
		if (server_send_internal(sv, pool_check_query(p->w->cf)))
			return NULL;
		server_close(sv, "server check query failed");
	}
	return sv;
}

/* Runs the queued statements of pgmux's own while servers are idle, oldest first. */
static void run_internal_q(struct pool *p)
{
	while (p->internal_q && !list_empty(&p->sv_idle)) {
		struct pool_stmt *q = p->internal_q;
		p->internal_q = q->next;
		p->n_internal_q--;
		if (!pool_run_internal(p, q->sql))
			log_warn("pool %s/%s: could not run \"%s\"", p->db->name, p->user->name, q->sql);
		free(q);
	}
}

bool pool_run_internal_later(struct pool *p, const char *sql)
{
	if (!p->internal_q && pool_run_internal(p, sql))
		return true;
	size_t n = strlen(sql) + 1;
	struct pool_stmt *q = p->n_internal_q < POOL_INTERNAL_Q_MAX ? malloc(sizeof(*q) + n) : NULL;
	if (!q)
		return false;
	memcpy(q->sql, sql, n);
	q->next = NULL;
	struct pool_stmt **tail = &p->internal_q;
	while (*tail)
		tail = &(*tail)->next;
	*tail = q;
	p->n_internal_q++;
	/* no server at all: open one for it (a busy one comes back by itself) */
	if (!pool_servers(p) && can_open(p, false, false) && pool_addr_ready(p))
		server_connect(p, NULL);
	return true;
}

bool pool_run_internal(struct pool *p, const char *sql)
{
	struct server *sv = take_idle(p);
	if (!sv)
		return false;
	/* as a server check runs: SV_TESTED keeps it from clients until the answer, then it is
	 * idle again (internal_done) */
	server_set_state(sv, SV_TESTED);
	if (server_send_internal(sv, sql))
		return true;
	server_close(sv, "send failed");
	return false;
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
	pool_wait_login(cl);
}

void pool_wait_login(struct client *cl)
{
	struct pool *p = cl->pool;
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
	struct server *sv = w->paused || pool_db_paused(p->db) || !list_empty(&p->cl_waiting)
			    ? NULL : take_ready(p);
	if (sv) {
		link_pair(cl, sv);
		return;
	}
	if (w->shutdown == PGMUX_SHUTDOWN_WAIT_SERVERS) {
		/* SHUTDOWN WAIT_FOR_SERVERS: no new transaction starts; waiting would only end
		 * when the process exits under the client. */
		client_close(cl, "server shutting down", "57P01");
		return;
	}
	if (login_retry_wait(p) && pool_servers(p) == 0) {
		fail_fast(cl);
		return;
	}
	client_set_state(cl, CL_WAITING);
	cl->wait_notified = false;
	pool_launch(p);
	pool_serve_waiters(p);
}

void pool_grow_min(struct pool *p)
{
	struct worker *w = p->w;
	if (w->shutdown || w->paused || p->db->removed || pool_db_paused(p->db))
		return;
	int cur = pool_servers(p);
	if (cur >= pool_min_size(p) || cur >= pool_size(p))
		return;
	/* As PgBouncer: only for a pool in use, or one whose entry forces the user. */
	if (!p->n_cl[CL_ACTIVE] && !p->n_cl[CL_WAITING] && !p->n_cl[CL_WAITING_LOGIN] &&
	    !p->db->cf->user)
		return;
	if (p->db->be && !w->router->may_connect(p->db))
		return;
	/* never by eviction: a minimum is not worth another pool's server */
	if (can_open(p, false, false) && pool_addr_ready(p))
		server_connect(p, NULL);
}

void pool_open_forced_pools(struct worker *w)
{
	for (const struct cfg_db *e = w->cf->dbs; e; e = e->next) {
		if (!e->user || strcmp(e->name, "*") == 0 || e->cluster ||
		    (e->min_pool_size >= 0 ? e->min_pool_size : w->cf->min_pool_size) <= 0)
			continue;
		struct database *db = pool_find_database(w, e->name);
		if (db && !db->cluster)
			pool_get(w, db, e->user);
	}
}

void pool_serve_waiters(struct pool *p)
{
	struct worker *w = p->w;
	if (p->internal_q)
		run_internal_q(p);
	while (!w->paused && !pool_db_paused(p->db) && !list_empty(&p->cl_waiting)) {
		struct server *sv = take_ready(p);
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
	else if (now - sv->connect_time >= (uint64_t)pool_server_lifetime(p))
		why = "server lifetime over";   /* 0: every server is used once (PgBouncer's rule) */
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
	/* Each greeting may run that client's traffic, which may close others: look afresh. */
	while (p->welcome_ok && p->n_cl[CL_WAITING_LOGIN] > p->n_repl_wait) {
		struct client *cl = NULL;
		struct list *it, *nx;
		list_for_each_safe(it, nx, &p->cl_waiting_login) {
			struct client *c = list_entry(it, struct client, node);
			if (!c->replication) {   /* those wait for a server of their own */
				cl = c;
				break;
			}
		}
		if (!cl)
			break;
		client_send_welcome(cl);
	}
	pool_serve_waiters(p);
	worker_check_shutdown(p->w);
}

void pool_server_failed(struct pool *p, const char *msg, const char *sqlstate, bool refused)
{
	p->last_connect_failed = true;
	p->last_connect_time = p->w->now;
	if (!p->error_logged || strcmp(p->last_error, msg) != 0) {
		log_warn("pool %s/%s: server %s failed: %s", p->db->name, p->user->name,
			 refused ? "login" : "connect", msg);
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
	/* No server answered (unreachable, timed out), or it is shutting down or starting up
	 * (57P01-57P03): as in PgBouncer, the clients keep waiting while pgmux retries every
	 * server_login_retry, so that a server restart costs them a delay rather than an error;
	 * query_wait_timeout and client_login_timeout bound the wait.  Any other error the server
	 * sent (a bad password, no such database) will not go away by waiting: it reaches the
	 * waiting clients now.  (New clients of a pool with no server fail at once until the next
	 * try either way: pool_client_ready.)  A refusal of the pool's
	 * credentials (class 28) or its database (3D000) reaches them even while other servers of
	 * the pool still run (PgBouncer kills the pool's waiting logins the same way). */
	bool answered = refused && strncmp(sqlstate, "57P", 3) != 0;
	bool denied = sqlstate && (!strncmp(sqlstate, "28", 2) || !strcmp(sqlstate, "3D000"));
	if (!answered || (pool_servers(p) > 0 && !denied))
		return;
	while (!list_empty(&p->cl_waiting_login)) {
		struct client *cl = list_entry(p->cl_waiting_login.next, struct client, node);
		client_close(cl, msg, sqlstate ? sqlstate : "08P01");
	}
	while (!list_empty(&p->cl_waiting)) {
		struct client *cl = list_entry(p->cl_waiting.next, struct client, node);
		if (refused || denied)
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

/* As in PgBouncer, an entry without a host means the socket in unix_socket_dir; with that
 * empty, Debian's PostgreSQL directory if present, else the historical /tmp. */
static const char *default_socket_dir(const struct config *cf)
{
	struct stat st;
	if (cf->unix_socket_dir && *cf->unix_socket_dir)
		return cf->unix_socket_dir;
	return stat("/var/run/postgresql", &st) == 0 ? "/var/run/postgresql" : "/tmp";
}

/* (Re)reads the entry's host list: one entry for a plain host (or none: the Unix socket).
 * Addresses are looked up again as they are needed. */
static bool hosts_build(struct database *db)
{
	int n = config_host_count(db->cf->host);
	struct db_host *h = calloc((size_t)n, sizeof(*h));
	if (!h)
		return false;
	for (int i = 0; i < n; i++)
		if (!config_host_entry(db->cf->host, i, h[i].name, sizeof(h[i].name)))
			h[i].name[0] = 0;   /* refused by the config check: never reached */
	free(db->hosts);
	db->hosts = h;
	db->n_hosts = n;
	db->host_cur = db->host_fails = 0;
	db->addr_ok = false;
	return true;
}

/* Fills entry i's address when no lookup is needed (a socket directory, a numeric address). */
static bool host_fill_now(struct database *db, struct db_host *h)
{
	const char *host = h->name;
	memset(&h->addr, 0, sizeof(h->addr));
	if (!*host || host[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)&h->addr;
		un->sun_family = AF_UNIX;
		int n = snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d",
				 *host ? host : default_socket_dir(db->w->cf), db->cf->port);
		if (n < 0 || (size_t)n >= sizeof(un->sun_path)) {
			log_error("database %s: unix socket path too long", db->name);
			return false;
		}
		h->addrlen = sizeof(*un);
		return h->ok = true;
	}
	struct sockaddr_in *in4 = (struct sockaddr_in *)&h->addr;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&h->addr;
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)db->cf->port);
		h->addrlen = sizeof(*in4);
		return h->ok = true;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)db->cf->port);
		h->addrlen = sizeof(*in6);
		return h->ok = true;
	}
	return false;
}

/* Makes entry idx the one new connections use: true when its address is known (now). */
static bool host_select(struct database *db, int idx)
{
	db->host_cur = idx;
	struct db_host *h = &db->hosts[idx];
	if (!h->ok && !host_fill_now(db, h)) {
		db->addr_ok = false;
		return false;
	}
	memcpy(&db->addr, &h->addr, sizeof(db->addr));
	db->addrlen = h->addrlen;
	db->addr_ok = true;
	db->resolved_at = worker_now();
	return true;
}

static void resolved(int err, struct evutil_addrinfo *res, void *arg)
{
	struct database *db = arg;
	struct worker *w = db->w;
	w->now = worker_now();
	db->resolving = false;
	int idx = db->resolving_idx;
	if (idx >= db->n_hosts || !db->hosts) {
		/* a reload changed the list meanwhile: start over with the new one */
		if (res)
			evutil_freeaddrinfo(res);
		if (hosts_build(db))
			launch_db_pools(w, db);
		return;
	}
	struct db_host *h = &db->hosts[idx];
	if (err || !res) {
		char msg[300];
		snprintf(msg, sizeof(msg), "could not resolve host \"%s\": %s", h->name,
			 evutil_gai_strerror(err));
		/* PgBouncer's words, which log watchers match. */
		log_warn("database %s host %s: closing because: server DNS lookup failed: %s", db->name,
			 h->name, evutil_gai_strerror(err));
		if (pool_host_failed(db, idx)) {
			launch_db_pools(w, db);   /* the next entry of the list */
			return;
		}
		struct list *it, *tmp;
		list_for_each_safe(it, tmp, &w->pools) {
			struct pool *p = list_entry(it, struct pool, node);
			if (p->db == db)
				pool_server_failed(p, msg, "08006", false);
		}
		return;
	}
	memcpy(&h->addr, res->ai_addr, res->ai_addrlen);
	h->addrlen = (socklen_t)res->ai_addrlen;
	((struct sockaddr_in *)&h->addr)->sin_port = htons((uint16_t)db->cf->port);
	h->ok = true;
	evutil_freeaddrinfo(res);
	if (idx == db->host_cur)
		host_select(db, idx);
	launch_db_pools(w, db);
}

/* Starts the lookup of the current entry's name (its end launches the pools). */
static void lookup_start(struct database *db, struct worker *w)
{
	if (db->resolving)
		return;
	struct evutil_addrinfo hints = { 0 };
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	db->resolving = true;
	db->resolving_idx = db->host_cur;
	/* The callback may run before this returns (cached or immediate failure). */
	evdns_getaddrinfo(w->dns, db->hosts[db->host_cur].name, NULL, &hints, resolved, db);
}

void pool_resolve(struct database *db, struct worker *w)
{
	db->w = w;
	if (db->addr_ok || db->resolving)
		return;
	if (!db->hosts && !hosts_build(db))
		return;
	if (host_select(db, db->host_cur))
		launch_db_pools(w, db);
	else if (db->hosts[db->host_cur].name[0] && db->hosts[db->host_cur].name[0] != '/')
		lookup_start(db, w);
}

bool pool_addr_ready(struct pool *p)
{
	struct database *db = p->db;
	if (db->addr_ok)
		return true;
	db->w = p->w;
	if (db->resolving || (!db->hosts && !hosts_build(db)))
		return false;
	if (host_select(db, db->host_cur))
		return true;
	if (db->hosts[db->host_cur].name[0] && db->hosts[db->host_cur].name[0] != '/')
		lookup_start(db, p->w);
	return false;
}

void pool_host_taken(struct database *db)
{
	/* round-robin: the next connection gets the next entry */
	if (db->n_hosts > 1 && db->hosts && !config_lbh_disable(db->cf))
		host_select(db, (db->host_cur + 1) % db->n_hosts);
}

bool pool_host_failed(struct database *db, int idx)
{
	if (db->n_hosts <= 1 || !db->hosts || idx >= db->n_hosts)
		return false;
	if (db->host_cur == idx)
		host_select(db, (idx + 1) % db->n_hosts);
	if (++db->host_fails < db->n_hosts)
		return true;
	db->host_fails = 0;   /* every entry failed: the pool's login failure rules apply */
	return false;
}

const char *pool_host_name(const struct database *db, int idx)
{
	if (db->hosts && idx >= 0 && idx < db->n_hosts)
		return db->hosts[idx].name;
	return db->cf->host;
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
	/* users point at their entries in the new snapshot (the old one is freed after this) */
	list_for_each_safe(it, tmp, &w->users) {
		struct user *u = list_entry(it, struct user, node);
		u->cf = config_find_user(w->cf, u->name);
	}
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
		/* Servers made under other TLS settings (server_tls_* or the entry's ssl keys) go, as
		 * in PgBouncer; unchanged settings keep them even though the files are read again. */
		char *sig = tls_db_signature(w->cf, copy);
		bool tls_changed = !sig || !db->tls_sig || strcmp(sig, db->tls_sig) != 0;
		free(db->tls_sig);
		db->tls_sig = sig;
		config_db_free(db->cf);
		db->cf = copy;
		tls_db_free(db);   /* certificate files may have changed: reload on next use */
		db->removed = false;
		if (moved) {
			db->addr_ok = false;
			if (!db->resolving)
				hosts_build(db);   /* else after the lookup in flight (resolved) */
			else
				db->n_hosts = 0;
		}
		if (moved || tls_changed)
			mark_servers_for_close(w, db);
		/* A changed entry deserves a fresh try, not the old login_retry wait. */
		struct list *pi, *pt;
		list_for_each_safe(pi, pt, &w->pools) {
			struct pool *p = list_entry(pi, struct pool, node);
			if (p->db == db)
				p->last_connect_failed = false;
		}
	}
	pool_open_forced_pools(w);
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
	if (w->router && w->router->unpark)
		w->router->unpark(w);
}

/* The text is PgBouncer's (clients and their log scrapers match it); it names no database. */
#define WAIT_NOTICE "No server connection available in postgres backend, client being queued"

void pool_notify_waiters(struct worker *w, uint64_t now)
{
	int64_t after = w->cf->query_wait_notify;
	if (after <= 0)
		return;
	struct list *it, *tmp, *c, *ct;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		list_for_each_safe(c, ct, &p->cl_waiting) {
			struct client *cl = list_entry(c, struct client, node);
			if (cl->wait_notified || now < cl->wait_start ||
			    now - cl->wait_start < (uint64_t)after || cl->c.torn)
				continue;
			/* Unlinked and between messages: a notice of pgmux's own may go in. */
			cl->wait_notified = true;
			proto_notice(&cl->c.out, "00000", WAIT_NOTICE);
			if (sbuf_send_out(&cl->c) < 0)
				client_close(cl, "send failed", NULL);
		}
	}
}

void pool_fast_close(struct worker *w)
{
	if (!w->cf->server_fast_close)
		return;
	struct list *it, *tmp, *c, *ct;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		if (pool_mode(p) != POOL_SESSION)
			continue;   /* the others release at the end of each transaction anyway */
		list_for_each_safe(c, ct, &p->cl_active) {
			struct client *cl = list_entry(c, struct client, node);
			struct server *sv = cl->link;
			/* Only between transactions, with nothing in flight either way. */
			if (!sv || !sv->close_when_idle || sv->tx != 'I' || !txtrack_quiet(&cl->tt) ||
			    !sbuf_empty(&cl->c) || cl->c.pkt_left || sv->internal_z)
				continue;
			client_close(cl, "database configuration changed", "08P01");
		}
	}
}
