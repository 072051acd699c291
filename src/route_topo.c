/* route_topo.c: clusters and their backends: configuration, health from the monitor, the backend a transaction gets, rows for the console. */
#include "route_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "monitor.h"
#include "pool.h"
#include "shardplan.h"

const char *route_role_name(int role)
{
	return role == ROLE_PRIMARY ? "primary" : role == ROLE_REPLICA ? "replica" : "unknown";
}

const char *route_state_name(int state)
{
	return state == BE_UP ? "up" : state == BE_DOWN ? "down" : "unknown";
}

static void set_fill(struct route_set *rs)
{
	struct cluster *c = rs->cl;
	struct pool **p = realloc(rs->pools, sizeof(*p) * (size_t)(c->n_be ? c->n_be : 1));
	if (!p)
		return;
	rs->pools = p;
	rs->session = false;
	int n = 0;
	for (int i = 0; i < c->n_be; i++) {
		p[i] = pool_get(c->w, c->be[i]->db, rs->user_name);
		if (!p[i])
			break;
		rs->session |= pool_mode(p[i]) == POOL_SESSION;
		n++;
	}
	rs->n = n;
}

/* The set of pools for (front database, user), made on first use; NULL when out of memory or
 * when not every backend has its pool. */
static struct route_set *route_set_get(struct database *front, const char *user)
{
	struct cluster *c = front->cluster;
	struct list *it;
	for (it = c->sets.next; it != &c->sets; it = it->next) {
		struct route_set *rs = list_entry(it, struct route_set, node);
		if (strcmp(rs->user_name, user) == 0)
			return rs->n == c->n_be ? rs : NULL;
	}
	struct route_set *rs = calloc(1, sizeof(*rs));
	if (!rs || !(rs->user_name = strdup(user))) {
		free(rs);
		return NULL;
	}
	rs->cl = c;
	list_append(&c->sets, &rs->node);
	set_fill(rs);
	return rs->n == c->n_be ? rs : NULL;
}

static void recompute(struct cluster *c, int shard);
static void readable_update(struct cluster *c);
static void backend_news(void *owner, const struct monitor_news *n);

static struct cluster *cluster_new(struct worker *w, struct database *front)
{
	struct cluster *c = calloc(1, sizeof(*c));
	if (!c || !(c->name = strdup(front->name))) {
		free(c);
		return NULL;
	}
	c->w = w;
	c->front = front;
	list_init(&c->sets);
	front->cluster = c;
	return c;
}

static void backend_free(struct backend *be)
{
	monitor_stop(be->mon);
	if (be->db && be->db->be == be) {
		be->db->be = NULL;
		be->db->front = NULL;
	}
	free(be);
}

/* The shard count changes (a reshard's RELOAD): clients queued on a backend's pool chose it
 * by the old count.  They leave the queue and wait with the parked ones (route_pick.c), to
 * choose again by the new count when route_unpark runs (now, or at the end of a PAUSE).  A
 * fan-out in progress keeps its course. */
static void park_waiters(struct cluster *c)
{
	struct worker *w = c->w;
	if (!w->rt_parked.next)
		list_init(&w->rt_parked);
	for (struct list *it = c->sets.next; it != &c->sets; it = it->next) {
		struct route_set *rs = list_entry(it, struct route_set, node);
		for (int i = 0; i < rs->n; i++) {
			struct list *ci, *tmp;
			list_for_each_safe(ci, tmp, &rs->pools[i]->cl_waiting) {
				struct client *cl = list_entry(ci, struct client, node);
				struct route_session *rt = cl->rt;
				if (!rt || rt->fo || cl->link || !list_empty(&rt->parked))
					continue;
				client_set_state(cl, CL_ACTIVE);
				rt->cl = cl;
				list_append(&w->rt_parked, &rt->parked);
			}
		}
	}
}

static void cluster_apply(struct worker *w, const struct cfg_cluster *cc)
{
	struct database *front = pool_find_database(w, cc->name);
	if (!front)
		return;
	struct cluster *c = front->cluster ? front->cluster : cluster_new(w, front);
	if (!c)
		return;
	c->cf = *cc;
	c->cf.name = NULL;
	c->cf.shard_key = NULL;
	free(c->shard_key);
	c->shard_key = cc->shard_key ? strdup(cc->shard_key) : NULL;
	c->cf.next = NULL;
	c->removed = false;
	int n = 0;
	for (const struct cfg_db *e = w->cf->dbs; e; e = e->next)
		if (e->cluster && e->shard >= 0 && !strcmp(e->cluster, cc->name))
			n++;
	struct backend **be = calloc((size_t)(n ? n : 1), sizeof(*be));
	int *prim = calloc((size_t)cc->n_shards, sizeof(*prim));
	int *rd_idx = calloc((size_t)(n ? n : 1), sizeof(*rd_idx));
	int *rd_start = calloc((size_t)cc->n_shards + 1, sizeof(*rd_start));
	if (!be || !prim || !rd_idx || !rd_start) {
		free(be);
		free(prim);
		free(rd_idx);
		free(rd_start);
		log_error("[database %s]: out of memory", cc->name);
		return;
	}
	if (c->n_shards && c->n_shards != cc->n_shards)
		park_waiters(c);
	int i = 0;
	for (const struct cfg_db *e = w->cf->dbs; e; e = e->next) {
		if (!e->cluster || e->shard < 0 || strcmp(e->cluster, cc->name) != 0)
			continue;
		struct database *db = pool_find_database(w, e->name);
		if (!db)
			continue;
		struct backend *b = db->be;
		if (!b) {
			if (!(b = calloc(1, sizeof(*b))))
				continue;
			b->db = db;
			b->lag_bytes = b->lag_ms = -1;
			db->be = b;
		}
		b->cl = c;
		db->front = front;
		b->index = i;
		b->shard = e->shard;
		b->cfg_replica = e->replica >= 0;
		b->weight = e->weight >= 0 ? e->weight : 1;
		be[i++] = b;
	}
	/* Backends that left the section: their databases are removed by the pool layer. */
	for (int j = 0; j < c->n_be; j++) {
		bool kept = false;
		for (int k = 0; k < i; k++)
			kept |= be[k] == c->be[j];
		if (!kept)
			backend_free(c->be[j]);
	}
	uint64_t *keyed = calloc((size_t)cc->n_shards, sizeof(*keyed));
	if (keyed && c->shard_keyed)
		memcpy(keyed, c->shard_keyed, sizeof(*keyed) * (size_t)(c->n_shards < cc->n_shards ? c->n_shards : cc->n_shards));
	free(c->shard_keyed);
	c->shard_keyed = keyed;
	free(c->be);
	free(c->primary);
	free(c->rd_idx);
	free(c->rd_start);
	c->be = be;
	c->n_be = i;
	c->primary = prim;
	c->rd_idx = rd_idx;
	c->rd_start = rd_start;
	c->n_shards = cc->n_shards;
	for (int s = 0; s < c->n_shards; s++)
		c->primary[s] = -1;
	for (int j = 0; j < c->n_be; j++)
		if (!c->be[j]->mon)
			c->be[j]->mon = monitor_start(w, c->be[j]->db, backend_news, c->be[j]);
	for (struct list *it = c->sets.next; it != &c->sets; it = it->next)
		set_fill(list_entry(it, struct route_set, node));
	for (int s = 0; s < c->n_shards; s++)
		recompute(c, s);
	readable_update(c);
}

void rt_clusters_apply(struct worker *w)
{
	for (const struct cfg_cluster *cc = w->cf->clusters; cc; cc = cc->next)
		cluster_apply(w, cc);
	struct list *it;
	for (it = w->databases.next; it != &w->databases; it = it->next) {
		struct database *db = list_entry(it, struct database, node);
		struct cluster *c = db->cluster;
		if (!c || c->removed || config_find_cluster(w->cf, c->name))
			continue;
		/* Section gone: its clients keep their pools until they leave; no more probes. */
		c->removed = true;
		for (int j = 0; j < c->n_be; j++) {
			monitor_stop(c->be[j]->mon);
			c->be[j]->mon = NULL;
		}
	}
}

void rt_clusters_free(struct worker *w)
{
	struct list *it;
	for (it = w->databases.next; it != &w->databases; it = it->next) {
		struct database *db = list_entry(it, struct database, node);
		struct cluster *c = db->cluster;
		if (!c)
			continue;
		for (int j = 0; j < c->n_be; j++)
			backend_free(c->be[j]);
		while (!list_empty(&c->sets)) {
			struct route_set *rs = list_entry(c->sets.next, struct route_set, node);
			list_del(&rs->node);
			free(rs->pools);
			free(rs->user_name);
			free(rs);
		}
		free(c->be);
		free(c->primary);
		free(c->rd_idx);
		free(c->rd_start);
		free(c->shard_key);
		free(c->shard_keyed);
		shardplan_cache_free(c->sp_cache);
		free(c->name);
		free(c);
		db->cluster = NULL;
	}
}

/* ---- choosing a backend ----------------------------------------------------------------- */

/* Transactions running or queued on a backend, over every user's pool of it. */
static int load_of(const struct cluster *c, int i)
{
	int n = 0;
	for (struct list *it = c->sets.next; it != &c->sets; it = it->next) {
		const struct route_set *rs = list_entry(it, struct route_set, node);
		if (i < rs->n)
			n += rs->pools[i]->n_sv[SV_ACTIVE] + rs->pools[i]->n_cl[CL_WAITING];
	}
	return n;
}

/* A replica that may take reads, before read-your-writes narrows the choice. */
static bool replica_ok(const struct cluster *c, const struct backend *b)
{
	if (b->state != BE_UP || b->seen_role != ROLE_REPLICA || b->weight <= 0)
		return false;
	if (c->cf.max_lag_bytes >= 0 && b->lag_bytes > c->cf.max_lag_bytes)
		return false;
	return !(c->cf.max_lag_usec >= 0 && b->lag_ms >= 0 && b->lag_ms * 1000 > c->cf.max_lag_usec);
}

/* The replicas that may take reads, per shard: the choice runs for every read, while health
 * and lag change only when the monitor reports, so the list is made then. */
static void readable_update(struct cluster *c)
{
	int k = 0;
	for (int s = 0; s < c->n_shards; s++) {
		c->rd_start[s] = k;
		for (int i = 0; i < c->n_be; i++)
			if (c->be[i]->shard == s && replica_ok(c, c->be[i]))
				c->rd_idx[k++] = i;
	}
	c->rd_start[c->n_shards] = k;
}

/* Weighted least-outstanding: the lowest load / weight; ties (an idle cluster) go to the
 * replica picked least often for its weight, so reads spread in proportion to the weights. */
static int choose_replica(struct cluster *c, int shard, uint64_t need_lsn, int avoid)
{
	int best = -1;
	uint64_t best_load = 0, best_w = 1, best_picks = 0;
	for (int k = c->rd_start[shard], end = c->rd_start[shard + 1]; k < end; k++) {
		int i = c->rd_idx[k];
		struct backend *b = c->be[i];
		if (i == avoid || b->lsn < need_lsn)
			continue;
		uint64_t load = (uint64_t)load_of(c, i), w = (uint64_t)b->weight;
		if (best >= 0) {
			uint64_t l = load * best_w, r = best_load * w;
			if (l > r || (l == r && b->picks * best_w >= best_picks * w))
				continue;
		}
		best = i;
		best_load = load;
		best_w = w;
		best_picks = b->picks;
	}
	if (best >= 0)
		c->be[best]->picks++;
	return best;
}

/* The backend taking writes: sticky while it stays up as a primary, so a returning old
 * primary does not split the writes. */
static void recompute(struct cluster *c, int shard)
{
	int cur = c->primary[shard];
	if (cur >= 0) {
		const struct backend *b = c->be[cur];
		if (b->state != BE_DOWN && b->seen_role != ROLE_REPLICA)
			return;
	}
	int pick = -1;
	/* The configured primary first, unless seen otherwise; then any server that says it
	 * is a primary (a promoted replica). */
	for (int i = 0; i < c->n_be && pick < 0; i++) {
		const struct backend *b = c->be[i];
		if (b->shard == shard && !b->cfg_replica && b->state != BE_DOWN &&
		    b->seen_role != ROLE_REPLICA)
			pick = i;
	}
	for (int i = 0; i < c->n_be && pick < 0; i++) {
		const struct backend *b = c->be[i];
		if (b->shard == shard && b->state == BE_UP && b->seen_role == ROLE_PRIMARY)
			pick = i;
	}
	if (pick != cur) {
		if (pick >= 0)
			log_info("[database %s] shard %d: writes go to %s", c->name, shard,
				 c->be[pick]->db->name);
		else
			log_warn("[database %s] shard %d: no primary available; writes wait", c->name,
				 shard);
	}
	c->primary[shard] = pick;
}

/* Where a client's transaction goes now: a backend index, or -1 to wait for a primary. */
int rt_target(struct client *cl, int shard, bool write, int avoid)
{
	struct route_session *rt = cl->rt;
	struct cluster *c = rt->rs->cl;
	if (!write) {
		int i = choose_replica(c, shard, rt->ryw_lsn, avoid);
		if (i >= 0 || !c->cf.replica_fallback)
			return i;
	}
	return c->primary[shard];
}

/* Clients queued on a backend that cannot serve them any more go where they would go now. */
static void reroute_waiters(struct cluster *c, int shard)
{
	for (int i = 0; i < c->n_be; i++) {
		const struct backend *b = c->be[i];
		if (b->shard != shard)
			continue;
		bool down = b->state == BE_DOWN;
		for (struct list *it = c->sets.next; it != &c->sets; it = it->next) {
			struct route_set *rs = list_entry(it, struct route_set, node);
			if (i >= rs->n)
				continue;
			struct pool *p = rs->pools[i];
			struct list *ci, *tmp;
			list_for_each_safe(ci, tmp, &p->cl_waiting) {
				struct client *cl = list_entry(ci, struct client, node);
				bool write = cl->rt->rt_primary;
				if (!down && (!write || c->primary[shard] == i))
					continue;
				int t = rt_target(cl, shard, write, -1);
				if (t < 0 || t == i || t >= rs->n)
					continue;
				client_move(cl, rs->pools[t]);
				pool_launch(rs->pools[t]);
				pool_serve_waiters(rs->pools[t]);
			}
		}
	}
}

/* A backend's state, role or lag changed (the monitor's news, or pgmux's own failed connect):
 * its shard's primary and readable replicas are worked out again. */
static void route_backend_update(struct backend *be)
{
	struct cluster *c = be->cl;
	int shard = be->shard;
	be->state_since = c->w->now;
	recompute(c, shard);
	/* Replica lag against the primary's last known position. */
	int pi = c->primary[shard];
	const struct backend *pb = pi >= 0 ? c->be[pi] : NULL;
	for (int i = 0; i < c->n_be; i++) {
		struct backend *b = c->be[i];
		if (b->shard != shard || b == pb)
			continue;
		if (b->state != BE_UP || b->seen_role != ROLE_REPLICA) {
			b->lag_bytes = b->state == BE_UP ? 0 : -1;
			continue;
		}
		if (!pb || pb->state != BE_UP || pb->seen_role != ROLE_PRIMARY)
			b->lag_bytes = -1;
		else
			b->lag_bytes = pb->lsn > b->lsn ? (int64_t)(pb->lsn - b->lsn) : 0;
		if (b->lag_bytes == 0)
			b->lag_ms = 0;
	}
	if (pb) {
		((struct backend *)pb)->lag_bytes = 0;
		((struct backend *)pb)->lag_ms = 0;
	}
	readable_update(c);
	if (be->state == BE_UP) {
		/* Back: a fresh connect, not the old server_login_retry wait. */
		for (struct list *it = c->sets.next; it != &c->sets; it = it->next) {
			struct route_set *rs = list_entry(it, struct route_set, node);
			if (be->index < rs->n) {
				rs->pools[be->index]->last_connect_failed = false;
				pool_launch(rs->pools[be->index]);
			}
		}
	}
	reroute_waiters(c, shard);
}

/* A probe or pgmux's own connect failed: the backend gets no new transactions. */
static void route_backend_down(struct backend *be, const char *msg)
{
	if (be->state != BE_DOWN)
		log_warn("backend %s is down: %s", be->db->name, msg);
	snprintf(be->last_error, sizeof(be->last_error), "%s", msg);
	be->state = BE_DOWN;
	be->lag_bytes = be->lag_ms = -1;
	route_backend_update(be);
}

/* The monitor's report of one probe of backend owner: down (route_backend_down), or up with
 * its role, WAL position and lag (route_backend_update). */
static void backend_news(void *owner, const struct monitor_news *n)
{
	struct backend *be = owner;
	if (!n->up) {
		route_backend_down(be, n->error);
		return;
	}
	uint8_t role = n->replica ? ROLE_REPLICA : ROLE_PRIMARY;
	if (be->state != BE_UP || be->seen_role != role)
		log_info("backend %s is up as %s", be->db->name, route_role_name(role));
	be->state = BE_UP;
	be->seen_role = role;
	be->lsn = n->lsn;
	be->lag_ms = n->lag_ms;
	be->last_error[0] = '\0';
	route_backend_update(be);
}

void route_backend_failed(struct backend *be, const char *msg)
{
	route_backend_down(be, msg);
	monitor_kick(be->mon);   /* the monitor says when it is back */
}

/* The pool a new client of a routed database starts in (for its greeting): its first shard's
 * primary when that pool has a greeting, else any pool with one on a backend not down. */
static struct pool *route_login_pool(struct route_set *rs)
{
	struct cluster *c = rs->cl;
	int p = c->primary[0];
	if (p >= 0 && p < rs->n && rs->pools[p]->welcome_ok)
		return rs->pools[p];
	for (int i = 0; i < rs->n; i++)
		if (rs->pools[i]->welcome_ok && c->be[i]->state != BE_DOWN)
			return rs->pools[i];
	if (p >= 0 && p < rs->n)
		return rs->pools[p];
	for (int i = 0; i < rs->n; i++)
		if (c->be[i]->state != BE_DOWN)
			return rs->pools[i];
	return rs->pools[0];
}

struct pool *route_client_login(struct client *cl, struct database *front)
{
	struct route_set *rs = route_set_get(front, cl->user_name);
	if (!rs)
		return NULL;
	struct route_session *rt = calloc(1, sizeof(*rt));
	if (!rt)
		return NULL;
	rt->rs = rs;
	rt->rt_be = rt->rt_avoid = rt->rt_shard = -1;
	rt->shard_pref = -1;
	list_init(&rt->parked);
	cl->rt = rt;
	return route_login_pool(rs);
}

/* ---- rows for the console ------------------------------------------------------------------- */

bool route_backend_row(const struct database *front, int i, struct route_backend_row *r)
{
	const struct cluster *c = front->cluster;
	if (!c || i < 0 || i >= c->n_be)
		return false;
	const struct backend *b = c->be[i];
	memset(r, 0, sizeof(*r));
	for (const struct list *si = c->sets.next; si != &c->sets; si = si->next) {
		const struct route_set *rs = list_entry(si, struct route_set, node);
		if (i >= rs->n)
			continue;
		const struct pool *p = rs->pools[i];
		r->cl_active += p->n_cl[CL_ACTIVE];
		r->cl_waiting += p->n_cl[CL_WAITING];
		r->sv_active += p->n_sv[SV_ACTIVE];
		r->sv_idle += p->n_sv[SV_IDLE];
		r->sv_used += p->n_sv[SV_USED] + p->n_sv[SV_TESTED];
	}
	r->cluster = c->name;
	r->name = b->db->name;
	r->shard = b->shard;
	r->host = b->db->cf->host ? b->db->cf->host : "";
	r->port = b->db->cf->port;
	r->cfg_replica = b->cfg_replica;
	r->is_primary = c->primary[b->shard] == i;
	r->role = r->is_primary ? ROLE_PRIMARY
		  : b->seen_role != ROLE_UNKNOWN ? b->seen_role
		  : b->cfg_replica ? ROLE_REPLICA : ROLE_PRIMARY;
	r->seen_role = b->seen_role;
	r->state = b->state;
	r->lag_bytes = b->lag_bytes;
	r->lag_ms = b->lag_ms;
	r->weight = b->weight;
	r->reads = b->reads;
	r->writes = b->writes;
	r->retries = b->retries;
	r->last_error = b->last_error;
	return true;
}

bool route_shard_row(const struct database *front, int s, struct route_shard_row *r)
{
	const struct cluster *c = front->cluster;
	if (!c || s < 0 || s >= c->n_shards)
		return false;
	memset(r, 0, sizeof(*r));
	r->cluster = c->name;
	r->shard = s;
	size_t used = 0;
	struct route_backend_row b;
	for (int i = 0; route_backend_row(front, i, &b); i++) {
		if (b.shard != s)
			continue;
		r->backends++;
		r->backends_up += b.state == BE_UP;
		if (!b.is_primary) {
			r->replicas++;
			r->replicas_up += b.state == BE_UP;
			if (b.lag_bytes > r->max_lag_bytes)
				r->max_lag_bytes = b.lag_bytes;
		}
		r->reads += b.reads;
		r->writes += b.writes;
		int n = snprintf(r->members + used, sizeof(r->members) - used, "%s%s (%s, %s)",
				 used ? ", " : "", b.name, b.is_primary ? "primary" : "replica",
				 route_state_name(b.state));
		if (n > 0 && (size_t)n < sizeof(r->members) - used)
			used += (size_t)n;
	}
	int p = c->primary[s];
	r->primary = p >= 0 ? c->be[p]->db->name : "";
	r->primary_state = p >= 0 ? c->be[p]->state : BE_DOWN;
	r->keyed = c->shard_keyed ? c->shard_keyed[s] : 0;
	return true;
}
