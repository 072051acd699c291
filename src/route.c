/* route.c: read/write routing for [database X] sections: which backend serves each transaction. */
#include "route.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "log.h"
#include "monitor.h"
#include "pool.h"
#include "prepared.h"
#include "sbuf.h"
#include "server.h"
#include "shard.h"
#include "shardplan.h"
#include "sqlscan.h"
#include "txtrack.h"
#include "verdict.h"

/* A read batch longer than this is not kept for a retry. */
#define RETRY_MAX 8192

const char *route_role_name(int role)
{
	return role == ROLE_PRIMARY ? "primary" : role == ROLE_REPLICA ? "replica" : "unknown";
}

const char *route_state_name(int state)
{
	return state == BE_UP ? "up" : state == BE_DOWN ? "down" : "unknown";
}

/* ---- configuration ---------------------------------------------------------------------- */

static void verdicts_clear(struct worker *w);

/* Compiles write_functions when its text changed (start, reload, console SET). */
void route_write_funcs_update(struct worker *w)
{
	const char *want = w->cf->write_functions;
	if (w->write_funcs && w->write_funcs_text && strcmp(w->write_funcs_text, want) == 0)
		return;
	const char *err = NULL;
	struct sqlscan_funcs *f = sqlscan_funcs_new(want, &err);
	char *text = strdup(want);
	if (!f || !text) {
		log_warn("write_functions: %s; keeping the previous list", err ? err : "out of memory");
		sqlscan_funcs_free(f);
		free(text);
		return;
	}
	sqlscan_funcs_free(w->write_funcs);
	free(w->write_funcs_text);
	w->write_funcs = f;
	w->write_funcs_text = text;
	verdicts_clear(w);   /* verdicts made with the old list */
}

static inline const struct sqlscan_funcs *write_funcs(const struct worker *w)
{
	return w->write_funcs;
}

/* ---- verdicts ------------------------------------------------------------------------------ */

static void verdicts_clear(struct worker *w)
{
	verdict_free(w->verdicts);
	w->verdicts = NULL;
}

static inline void classify(struct worker *w, struct client *cl, char type, const char *sql,
			    size_t len, struct sqlscan_result *r)
{
	verdict_lookup(&w->verdicts, &cl->verdict_memo, type == 'Q', sql, len, write_funcs(w), r);
}

/* ---- saved batches: a small free list, since reads on replicas keep one each ------------- */

#define RETRY_BUF_SIZE 1024
#define RETRY_FREE_MAX 64

struct retry_buf {
	struct retry_buf *next;
	uint8_t data[RETRY_BUF_SIZE];
};

static uint8_t *batch_alloc(struct worker *w, uint32_t n)
{
	if (n > RETRY_BUF_SIZE)
		return malloc(n);
	struct retry_buf *rb = w->retry_free;
	if (rb) {
		w->retry_free = rb->next;
		w->n_retry_free--;
	} else if (!(rb = malloc(sizeof(*rb)))) {
		return NULL;
	}
	return rb->data;
}

static void batch_free(struct worker *w, uint8_t *p, uint32_t n)
{
	if (!p)
		return;
	if (n > RETRY_BUF_SIZE) {
		free(p);
		return;
	}
	struct retry_buf *rb = (struct retry_buf *)(p - offsetof(struct retry_buf, data));
	if (w->n_retry_free >= RETRY_FREE_MAX) {
		free(rb);
		return;
	}
	rb->next = w->retry_free;
	w->retry_free = rb;
	w->n_retry_free++;
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

struct route_set *route_set_get(struct database *front, const char *user)
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
	if (be->db && be->db->be == be)
		be->db->be = NULL;
	free(be);
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
			c->be[j]->mon = monitor_start(c->be[j]);
	for (struct list *it = c->sets.next; it != &c->sets; it = it->next)
		set_fill(list_entry(it, struct route_set, node));
	for (int s = 0; s < c->n_shards; s++)
		recompute(c, s);
	readable_update(c);
}

void route_apply_config(struct worker *w)
{
	route_write_funcs_update(w);
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

void route_shutdown(struct worker *w)
{
	struct list *it;
	sqlscan_funcs_free(w->write_funcs);
	free(w->write_funcs_text);
	w->write_funcs = NULL;
	w->write_funcs_text = NULL;
	verdicts_clear(w);
	while (w->retry_free) {
		struct retry_buf *rb = w->retry_free;
		w->retry_free = rb->next;
		free(rb);
	}
	w->n_retry_free = 0;
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
static int target(struct client *cl, int shard, bool write, int avoid)
{
	struct cluster *c = cl->rs->cl;
	if (!write) {
		int i = choose_replica(c, shard, cl->ryw_lsn, avoid);
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
				bool write = cl->rt_primary;
				if (!down && (!write || c->primary[shard] == i))
					continue;
				int t = target(cl, shard, write, -1);
				if (t < 0 || t == i || t >= rs->n)
					continue;
				client_move(cl, rs->pools[t]);
				pool_launch(rs->pools[t]);
				pool_serve_waiters(rs->pools[t]);
			}
		}
	}
}

void route_backend_update(struct backend *be)
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

void route_backend_down(struct backend *be, const char *msg)
{
	if (be->state != BE_DOWN)
		log_warn("backend %s is down: %s", be->db->name, msg);
	snprintf(be->last_error, sizeof(be->last_error), "%s", msg);
	be->state = BE_DOWN;
	be->lag_bytes = be->lag_ms = -1;
	route_backend_update(be);
}

void route_backend_failed(struct backend *be, const char *msg)
{
	route_backend_down(be, msg);
	monitor_kick(be->mon);   /* the monitor says when it is back */
}

struct pool *route_login_pool(struct route_set *rs)
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

/* ---- answering locally: SET pgmux.*, a deferred BEGIN ---------------------------------- */

static void put_complete(struct pktbuf *o, const char *tag)
{
	pktbuf_begin(o, 'C');
	pktbuf_put_str(o, tag);
	pktbuf_end(o);
}

static void put_simple(struct pktbuf *o, char type)
{
	pktbuf_begin(o, type);
	pktbuf_end(o);
}

/* Applies SET/RESET pgmux.*; false with msg and *state (SQLSTATE) filled for a bad value. */
static bool apply_set(struct client *cl, const struct sqlscan_result *r, char *msg, size_t len,
		      const char **state)
{
	switch (r->set) {
	case SQLSCAN_SET_ROLE:
		if (!strcasecmp(r->set_value, "primary"))
			cl->role_pref = RT_PRIMARY;
		else if (!strcasecmp(r->set_value, "replica"))
			cl->role_pref = RT_REPLICA;
		else if (!strcasecmp(r->set_value, "auto") || !strcasecmp(r->set_value, "default"))
			cl->role_pref = RT_AUTO;
		else {
			snprintf(msg, len, "invalid value for parameter \"pgmux.role\": \"%.60s\" "
				 "(expected primary, replica or auto)", r->set_value);
			return false;
		}
		return true;
	case SQLSCAN_RESET_ROLE:
		cl->role_pref = RT_AUTO;
		return true;
	case SQLSCAN_SET_USER_ID:
		/* Kept as the key's hash: text and uuid keys need no storage, and the shard
		 * follows the shard count of a reload. */
		if (!shard_user_id_hash(cl->rs->cl->cf.shard_key_type, r->set_value,
					r->set_value_bad, &cl->user_id_hash, msg, len, state))
			return false;
		cl->has_user_id = true;
		return true;
	case SQLSCAN_RESET_USER_ID:
		cl->has_user_id = false;
		return true;
	case SQLSCAN_SET_SHARD: {
		char *end;
		long v = strtol(r->set_value, &end, 10);
		int n = cl->rs->cl->n_shards;
		if (r->set_value_bad || end == r->set_value || *end || v < 0 || v >= n) {
			snprintf(msg, len, "invalid value for parameter \"pgmux.shard\": \"%.60s\" "
				 "(expected 0 to %d)", r->set_value, n - 1);
			return false;
		}
		cl->shard_pref = (int32_t)v;
		return true;
	}
	case SQLSCAN_RESET_SHARD:
		cl->shard_pref = -1;
		return true;
	default:
		return true;
	}
}

static bool is_reset(int set)
{
	return set == SQLSCAN_RESET_ROLE || set == SQLSCAN_RESET_USER_ID || set == SQLSCAN_RESET_SHARD;
}

/* Status letter for a ReadyForQuery pgmux writes itself. */
static char tx_status(const struct client *cl)
{
	return cl->deferred ? (cl->deferred_failed ? 'E' : 'T') : 'I';
}

enum fake_tag { FAKE_SET, FAKE_RESET, FAKE_BEGIN, FAKE_COMMIT, FAKE_ROLLBACK };
static const char *const fake_tags[] = { "SET", "RESET", "BEGIN", "COMMIT", "ROLLBACK" };

static void clear_deferred(struct client *cl);

/* Consumes the message at scan (whole in the buffer). */
/* The message at scan is answered by pgmux: it never goes to a server (the part not yet
 * received is read away as it comes). */
static void consume(struct client *cl, uint32_t total)
{
	client_drop_msg(cl, total);
}

static enum route_result reply_out(struct client *cl, uint32_t total)
{
	consume(cl, total);
	if (sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return ROUTE_CLOSED;
	}
	return ROUTE_DONE;
}

/* An extended batch pgmux answers itself (SET pgmux.*, a BEGIN it holds back, the COMMIT of
 * an empty transaction, or one it refused): each message answered until its Sync. */
static enum route_result fake_message(struct client *cl, char type, uint32_t total, uint32_t avail)
{
	struct pktbuf *o = &cl->c.out;
	(void)avail;   /* only the type matters: the message is dropped as it arrives */
	switch (type) {
	case 'B': put_simple(o, '2'); break;
	case 'D': put_simple(o, 'n'); break;
	case 'E':
		if (!cl->rt_fake_err)
			put_complete(o, fake_tags[cl->rt_fake_tag]);
		break;
	case 'C': put_simple(o, '3'); break;
	case 'H': break;
	case 'S':
		if (cl->rt_fake_end)
			clear_deferred(cl);
		cl->rt_fake = false;
		cl->rt_fake_err = false;
		cl->rt_fake_end = false;
		proto_ready(o, tx_status(cl));
		break;
	case 'P':
		put_simple(o, '1');
		break;
	default:
		client_close(cl, "unexpected message in an extended-protocol batch pgmux answers", "08P01");
		return ROUTE_CLOSED;
	}
	return reply_out(cl, total);
}

static enum route_result handle_set(struct client *cl, char type, const struct sqlscan_result *r,
				    uint32_t total)
{
	char msg[200];
	const char *state = "22023";
	bool ok = apply_set(cl, r, msg, sizeof(msg), &state);
	struct pktbuf *o = &cl->c.out;
	if (type == 'Q') {
		if (ok)
			put_complete(o, is_reset(r->set) ? "RESET" : "SET");
		else
			proto_error(o, "ERROR", state, msg);
		proto_ready(o, tx_status(cl));
	} else {
		/* Parse: the rest of the batch is answered as if it ran. */
		cl->rt_fake = true;
		cl->rt_fake_tag = is_reset(r->set) ? FAKE_RESET : FAKE_SET;
		cl->rt_fake_err = !ok;
		if (ok)
			put_simple(o, '1');
		else
			proto_error(o, "ERROR", state, msg);
	}
	return reply_out(cl, total);
}

/* An error for a batch pgmux will not run: a Query gets it with its ReadyForQuery; an
 * extended batch gets it now and the rest up to its Sync is answered by fake_message. */
static enum route_result refuse(struct client *cl, char type, uint32_t total, const char *sqlstate,
				const char *msg)
{
	struct pktbuf *o = &cl->c.out;
	proto_error(o, "ERROR", sqlstate, msg);
	if (cl->deferred)
		cl->deferred_failed = true;   /* as PostgreSQL: the block is aborted */
	if (type == 'Q') {
		proto_ready(o, tx_status(cl));
	} else if (type != 'S') {
		cl->rt_fake = true;
		cl->rt_fake_err = true;
	} else {
		proto_ready(o, tx_status(cl));
	}
	return reply_out(cl, total);
}

/* Why a statement of a sharded database found no single shard, and what to do about it. */
static void shard_message(const struct cluster *c, int why, bool write, const struct sp_eval *e,
			  char *msg, size_t len)
{
	const char *key = c->shard_key ? c->shard_key : "the shard key";
	char at[32] = "";
	if (e && e->pos > 0)
		snprintf(at, sizeof(at), " (statement %d)", e->pos);
	if (why == SHARD_REFUSE && e && e->why)
		snprintf(msg, len, "pgmux: cannot route by %s on sharded database \"%s\"%s: %s", key,
			 c->name, at, e->why);
	else if (why == SHARD_BAD && e && e->why)
		snprintf(msg, len, "pgmux: the value of shard key %s%s cannot be read as the server "
			 "will read it: %s", key, at, e->why);
	else if (why == SHARD_MULTI)
		snprintf(msg, len, "pgmux: this statement's %s values belong to several shards of "
			 "database \"%s\"; send one statement per shard (cross-shard statements are "
			 "not supported%s)", key, c->name,
			 c->cf.no_shard_key == NOSHARD_ALL && write ? "; only reads fan out" : "");
	else if (why == SHARD_BAD)
		snprintf(msg, len, "pgmux: the shard key value (%s, pgmux.user_id or pgmux.shard) "
			 "is not a valid %s key (text keys: at most 1 KiB as a literal) or shard "
			 "number for database \"%s\" (%d shards)", key,
			 shard_key_type_name(c->cf.shard_key_type), c->name, c->n_shards);
	else
		snprintf(msg, len, "pgmux: no shard key for sharded database \"%s\"%s: add "
			 "WHERE %s = <value>, a /* pgmux: user_id=<value> */ or /* pgmux: shard=<n> */ "
			 "comment, or run SET pgmux.user_id = <value> (or SET pgmux.shard = <n>) first",
			 c->name, c->cf.no_shard_key == NOSHARD_ALL && write
			 ? " (no_shard_key = all fans out reads only)" : "", key);
}

/* ---- reads on every shard (no_shard_key = all) ------------------------------------------- */

struct route_fanout {
	uint8_t *batch;             /* the client's batch, sent again to each shard */
	uint32_t len;
	int shard;                  /* the shard running it now */
	uint64_t rows;
	char verb[32];              /* the CommandComplete verb ("SELECT") */
	bool had_rows_tag;
	bool tag_done;              /* the summed CommandComplete is in place */
	bool advance;               /* the current shard finished: run on the next */
};

static void fanout_free(struct client *cl)
{
	if (cl->fo) {
		free(cl->fo->batch);
		free(cl->fo);
		cl->fo = NULL;
	}
}

/* Saves a read batch to run on each shard in turn: a Query, or a Parse ... Sync batch. */
static enum route_result fanout_start(struct client *cl, const uint8_t *h, uint32_t total,
				      uint32_t avail)
{
	uint32_t n = 0;
	if (h[0] == 'Q') {
		n = total;
	} else {
		uint32_t off = 0;
		while (off + PROTO_HDR <= avail) {
			char t = (char)h[off];
			uint32_t len = proto_get32(h + off + 1);
			if (len < 4 || len > avail - off - 1)   /* not off + len + 1: it may wrap */
				break;
			off += len + 1;
			if (t == 'S') {
				n = off;
				break;
			}
		}
		if (!n) {
			/* Its Sync is on the way: gather up to the end of the message in progress. */
			uint32_t want = off + PROTO_HDR <= avail ? off + proto_get32(h + off + 1) + 1
								 : off + PROTO_HDR;
			int g = want > off ? client_need(cl, want) : -1;
			if (g == 0)
				return ROUTE_WAIT;
		}
	}
	if (!n || n != avail || !txtrack_quiet(&cl->tt)) {
		char msg[300];
		snprintf(msg, sizeof(msg), "pgmux: a read that runs on every shard must come alone (not "
			 "pipelined with other requests) and fit max_client_memory (%lld bytes)",
			 (long long)cl->c.w->cf->max_client_memory);
		return refuse(cl, h[0], total, "0A000", msg);
	}
	/* A named Parse registers its name once (pgmux prepares it on the other shards itself):
	 * the later shards get the batch from its Bind on. */
	uint32_t skip = h[0] == 'P' && h[PROTO_HDR] != 0 ? total : 0;
	cl->fo = calloc(1, sizeof(*cl->fo));
	if (!cl->fo || !(cl->fo->batch = malloc(n - skip))) {
		fanout_free(cl);
		client_close(cl, "out of memory", "53200");
		return ROUTE_CLOSED;
	}
	cl->fo->len = n - skip;
	memcpy(cl->fo->batch, h + skip, n - skip);
	cl->fo->shard = 0;
	return ROUTE_GO;
}

int route_fanout_message(struct server *sv, char type, uint32_t len, bool whole)
{
	struct client *cl = sv->link;
	struct route_fanout *fo = cl->fo;
	struct cluster *c = cl->rs->cl;
	bool first = fo->shard == 0, last = fo->shard == c->n_shards - 1;
	struct iobuf *b = sv->c.in;
	switch (type) {
	case 'T': case '1': case '2': case 't': case 'n':
		if (first)
			return 0;
		assert(whole);   /* server.c gathers these (or closes on an oversized one) */
		sbuf_drop(&sv->c, b->scan, len + 1);
		return 1;
	case 'C': {
		if (fo->tag_done)
			return 0;
		if (!whole) {
			/* A tag larger than pgmux reads: no row count to add; never dropped half. */
			if (!last) {
				client_close(cl, "oversized command tag from a shard", "08P01");
				return -1;
			}
			return 0;
		}
		const char *tag = (const char *)b->data + b->scan + PROTO_HDR;
		const char *sp = memchr(tag, ' ', len - 4);
		if (sp && (size_t)(sp - tag) < sizeof(fo->verb)) {
			memcpy(fo->verb, tag, (size_t)(sp - tag));
			fo->verb[sp - tag] = '\0';
			fo->rows += strtoull(sp + 1, NULL, 10);
			fo->had_rows_tag = true;
		}
		if (!last) {
			sbuf_drop(&sv->c, b->scan, len + 1);
			return 1;
		}
		if (fo->had_rows_tag) {
			struct pktbuf pb = { 0 };
			char t[64];
			snprintf(t, sizeof(t), "%s %llu", fo->verb, (unsigned long long)fo->rows);
			pktbuf_begin(&pb, 'C');
			pktbuf_put_str(&pb, t);
			pktbuf_end(&pb);
			bool ok = !pb.failed && sbuf_replace(&sv->c, len + 1, pb.data, pb.len);
			pktbuf_free(&pb);
			fo->tag_done = true;
			return ok ? 1 : 0;
		}
		return 0;
	}
	case 'E':
		fanout_free(cl);   /* the error ends it: the client gets it and its ReadyForQuery */
		return 0;
	case 'Z': {
		if (last) {
			fanout_free(cl);
			return 0;
		}
		assert(whole);
		/* This shard is done: what it sent goes out, the server goes back, and the batch
		 * runs on the next shard (route_fanout_next, after the release). */
		sv->tx = (char)b->data[b->scan + PROTO_HDR];
		sbuf_drop(&sv->c, b->scan, len + 1);
		txtrack_reset(&cl->tt);
		fo->advance = true;
		return 2;
	}
	default:
		return 0;
	}
}

void route_fanout_next(struct client *cl)
{
	struct route_fanout *fo = cl->fo;
	if (!fo || !fo->advance || cl->link || cl->c.dead)
		return;
	fo->advance = false;
	fo->shard++;
	/* The same batch, back in front of the client's bytes, routes to the next shard. */
	if (!sbuf_insert(&cl->c, fo->batch, fo->len)) {
		fanout_free(cl);
		client_close(cl, "no room to run the read on the next shard", "53200");
		return;
	}
	cl->c.in->scan -= fo->len;
	client_on_data(cl);
}

/* The first word of a COMMIT-like statement, for the tag pgmux answers with. */
static const char *end_tag(const char *sql, size_t len)
{
	size_t i = 0;
	while (i < len && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r'))
		i++;
	return i < len && (sql[i] == 'r' || sql[i] == 'R' || sql[i] == 'a' || sql[i] == 'A')
	       ? "ROLLBACK" : "COMMIT";
}

static void clear_deferred(struct client *cl)
{
	free(cl->deferred);
	cl->deferred = NULL;
	cl->deferred_len = 0;
	cl->deferred_failed = false;
}

/* Holds a BEGIN back (as a simple Query, whatever protocol it came in) and answers it. */
static enum route_result defer_begin(struct client *cl, char type, uint32_t total,
				     const char *sql, size_t len)
{
	while (len && sql[len - 1] == '\0')
		len--;
	uint32_t n = (uint32_t)len + PROTO_HDR + 1;
	if (!(cl->deferred = malloc(n))) {
		client_close(cl, "out of memory", "53200");
		return ROUTE_CLOSED;
	}
	cl->deferred[0] = 'Q';
	proto_put32(cl->deferred + 1, n - 1);
	memcpy(cl->deferred + PROTO_HDR, sql, len);
	cl->deferred[n - 1] = 0;
	cl->deferred_len = n;
	cl->deferred_failed = false;
	if (type == 'Q') {
		put_complete(&cl->c.out, "BEGIN");
		proto_ready(&cl->c.out, 'T');
	} else {
		cl->rt_fake = true;
		cl->rt_fake_err = false;
		cl->rt_fake_tag = FAKE_BEGIN;
		put_simple(&cl->c.out, '1');
	}
	return reply_out(cl, total);
}

/* The end of a transaction that never reached a server: answered here. */
static enum route_result end_deferred(struct client *cl, char type, uint32_t total,
				      const char *sql, size_t len)
{
	bool rollback = cl->deferred_failed || !strcmp(end_tag(sql, len), "ROLLBACK");
	if (type == 'Q') {
		put_complete(&cl->c.out, rollback ? "ROLLBACK" : "COMMIT");
		clear_deferred(cl);
		proto_ready(&cl->c.out, 'I');
	} else {
		cl->rt_fake = true;
		cl->rt_fake_err = false;
		cl->rt_fake_end = true;
		cl->rt_fake_tag = rollback ? FAKE_ROLLBACK : FAKE_COMMIT;
		put_simple(&cl->c.out, '1');
	}
	return reply_out(cl, total);
}

/* ---- the choice --------------------------------------------------------------------------- */

/* The statement text of a message, when pgmux can see it whole. */
/* The SQL text of a Query or Parse (whole: avail >= total) or of the statement a Bind names
 * (its names within avail). */
static bool message_sql(struct client *cl, char type, const uint8_t *h, uint32_t total,
			uint32_t avail, const char **sql, size_t *len)
{
	const uint8_t *body = h + PROTO_HDR, *end = h + (avail < total ? avail : total);
	if (type != 'B' && avail < total)
		return false;
	if (type == 'Q') {
		*sql = (const char *)body;
		*len = total - PROTO_HDR;
		return true;
	}
	if (type == 'P') {
		/* mostly the unnamed statement: its name is the empty string */
		const uint8_t *q = body < end && body[0] == 0 ? body : memchr(body, 0, (size_t)(end - body));
		if (!q)
			return false;
		/* the text ends at its NUL, as a Query's does: the parameter types follow it */
		const uint8_t *z = memchr(q + 1, 0, (size_t)(end - q - 1));
		if (!z)
			return false;
		*sql = (const char *)q + 1;
		*len = (size_t)(z - q);
		return true;
	}
	if (type == 'B') {
		const uint8_t *portal_end = memchr(body, 0, (size_t)(end - body));
		if (!portal_end || portal_end + 1 >= end)
			return false;
		const char *name = (const char *)portal_end + 1;
		if (!memchr(name, 0, (size_t)(end - (const uint8_t *)name)))
			return false;
		uint32_t n;
		const char *q = *name ? ps_client_query(cl, name, &n) : NULL;
		if (q) {
			*sql = q;
			*len = n;
			return true;
		}
		/* the unnamed statement, or any when statement tracking is off: the text a sharded
		 * database's client parsed is remembered for its Binds */
		size_t sl;
		q = cl->rs && cl->rs->cl->n_shards > 1 ?
		    shardplan_bind_text(cl, body, (uint32_t)(end - body), &sl) : NULL;
		if (!q)
			return false;
		*sql = q;
		*len = sl;
		return true;
	}
	return false;
}

/* With read routing off only hints and SET/RESET pgmux.* matter: a statement with no comment
 * that does not start with SET or RESET need not be classified at all. */
static bool may_say_pgmux(const char *sql, size_t len)
{
	size_t i = 0;
	while (i < len && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r'))
		i++;
	if ((len - i >= 4 && !strncasecmp(sql + i, "set", 3)) ||
	    (len - i >= 6 && !strncasecmp(sql + i, "reset", 5)))
		return true;
	return memchr(sql + i, '/', len - i) != NULL;
}

/* A read batch that could run again elsewhere: a Query, or Parse (unnamed)/Bind/Describe/
 * Execute up to a Sync, whole in the buffer; a Bind may name a statement pgmux tracks, since
 * it prepares that on whichever server the batch lands. Returns its length, 0 when not. */
static uint32_t retry_span(struct client *cl, const uint8_t *h, uint32_t avail, char type)
{
	if (type == 'Q')
		return proto_get32(h + 1) + 1;
	uint32_t off = 0;
	while (off + PROTO_HDR <= avail) {
		char t = (char)h[off];
		uint32_t len = proto_get32(h + off + 1);
		if (len < 4 || len > avail - off - 1 || off + len + 1 > RETRY_MAX)
			return 0;
		const uint8_t *body = h + off + PROTO_HDR;
		if (t == 'P' && body[0] != 0)
			return 0;
		if (t == 'B') {
			uint32_t dummy;
			if (len < 6 || body[0] != 0)
				return 0;
			const char *stmt = (const char *)body + 1;
			if (*stmt && (!memchr(stmt, 0, len - 5) || !ps_client_query(cl, stmt, &dummy)))
				return 0;
		}
		if (t != 'P' && t != 'B' && t != 'D' && t != 'E' && t != 'S')
			return 0;
		off += len + 1;
		if (t == 'S')
			return off;
	}
	return 0;
}

/* shard_for on cl's message: the shard layer is handed the cluster's key and cache and the
 * session's SET pgmux.* choice, so that it reads neither struct cluster nor these fields.
 * Inline: it runs for every statement of a sharded database's transactions. */
static inline int msg_shard(struct client *cl, char type, const uint8_t *h, uint32_t total,
			    uint32_t avail, const struct sqlscan_result *r, struct sp_eval *e)
{
	struct cluster *c = cl->rs->cl;
	struct shard_ctx x = {
		.sp = { .cl = cl, .shard_key = c->shard_key, .key_type = c->cf.shard_key_type,
			.n_shards = c->n_shards, .cache = &c->sp_cache, .memory = client_memory },
		.shard_pref = cl->shard_pref, .has_user_id = cl->has_user_id,
		.user_id_hash = cl->user_id_hash,
	};
	return shard_for(&x, type, h, total, avail, r, e);
}

/* A Parse keyed by $n arrived without a Bind behind it in the buffer: true when the rest of
 * its batch is still arriving (gathered now), so routing waits for the Bind.  A Sync or Flush
 * first means the client waits for answers before it binds (asyncpg): route now. */
static bool bind_on_its_way(struct client *cl, const uint8_t *h, uint32_t avail)
{
	uint32_t off = proto_get32(h + 1) + 1;
	while (off + PROTO_HDR <= avail) {
		char t = (char)h[off];
		uint32_t len = proto_get32(h + off + 1);
		if (t == 'S' || t == 'H' || t == 'B' || len < 4 || len > avail - off - 1)
			return false;   /* decided, or malformed: the forwarding loop says so */
		off += len + 1;
	}
	uint32_t need = off + PROTO_HDR <= avail ? off + proto_get32(h + off + 1) + 1 : off + PROTO_HDR;
	return client_need(cl, need) == 0;
}

enum route_result route_pick(struct client *cl, char type, const uint8_t *h, uint32_t total,
			     uint32_t avail)
{
	struct route_set *rs = cl->rs;
	struct cluster *c = rs->cl;
	struct worker *w = c->w;
	if (cl->rt_fake)
		return fake_message(cl, type, total, avail);
	if (cl->ryw_server)
		return ROUTE_WAIT;   /* its last commit's LSN is on the way */

	int force = cl->rt_force;
	int avoid = cl->rt_avoid;
	bool again = force || avoid >= 0;   /* a batch that already ran once: no second retry */
	cl->rt_force = RT_AUTO;
	cl->rt_avoid = -1;

	struct sqlscan_result r;
	bool have = false;
	const char *sql = NULL;
	size_t len = 0;
	if (cl->fo) {
		force = RT_REPLICA;   /* the next shard of a fan-out read */
	} else if (!force && (type == 'Q' || type == 'P' || type == 'B')) {
		/* client.c gathered what route_msg_need asked for; less means too big to read */
		if (message_sql(cl, type, h, total, avail, &sql, &len) &&
		    (c->cf.read_routing || c->n_shards > 1 || may_say_pgmux(sql, len))) {
			classify(w, cl, type, sql, len, &r);
			have = true;
		}
	}
	if (have && r.set && type != 'B')
		return handle_set(cl, type, &r, total);

	bool write;
	if (force)
		write = force == RT_PRIMARY;
	else if (have && r.hint_role == SQLSCAN_ROLE_PRIMARY)
		write = true;
	else if (have && r.hint_role == SQLSCAN_ROLE_REPLICA)
		write = false;
	else if (cl->role_pref)
		write = cl->role_pref == RT_PRIMARY;
	else if (!c->cf.read_routing || !have)
		write = true;
	else if (rs->session)
		write = true;   /* a whole session: its first statement says little about the rest */
	else if (cl->deferred)
		write = r.tx != SQLSCAN_TX_SET_RO;   /* BEGIN; SET TRANSACTION READ ONLY */
	else
		write = !(r.verdict == SQLSCAN_READ || r.tx == SQLSCAN_TX_BEGIN_RO);

	bool plain_msg = type == 'Q' || type == 'P';
	if (have && plain_msg && cl->deferred && r.tx == SQLSCAN_TX_END && r.n_statements == 1)
		return end_deferred(cl, type, total, sql, len);   /* nothing ran anywhere */
	if (cl->deferred && cl->deferred_failed && (type == 'Q' || type == 'P' || type == 'B'))
		return refuse(cl, type, total, "25P02", "current transaction is aborted, commands "
			      "ignored until end of transaction block");
	if (have && plain_msg && !cl->deferred && r.tx == SQLSCAN_TX_BEGIN && r.n_statements == 1 &&
	    ((!r.hint_role && !cl->role_pref && c->cf.read_routing) || c->n_shards > 1) &&
	    r.hint_shard < 0 && !r.has_hint_user_id && !rs->session &&
	    pool_mode(cl->pool) == POOL_TRANSACTION) {
		/* A bare BEGIN says nothing yet: its first statement decides (SET TRANSACTION READ
		 * ONLY sends it to a replica; a shard key binds it to a shard). The BEGIN is
		 * replayed on the chosen server. */
		return defer_begin(cl, type, total, sql, len);
	}

	int shard = 0;
	if (c->n_shards > 1 && !cl->fo && avail < total && (type == 'Q' || type == 'P' || type == 'B')) {
		/* Its key cannot be read: never guess a shard. */
		char msg[200];
		snprintf(msg, sizeof(msg), "pgmux: a statement of %u bytes is too large to check for a "
			 "shard key (max_client_memory = %lld bytes)", total,
			 (long long)w->cf->max_client_memory);
		return refuse(cl, type, total, "54000", msg);
	}
	struct sp_eval se;
	memset(&se, 0, sizeof(se));
	bool stmt_msg = type == 'Q' || type == 'P' || type == 'B';
	if (c->n_shards > 1) {
		if (cl->fo) {
			shard = cl->fo->shard;   /* the next shard of a fan-out */
		} else if (stmt_msg) {
			shard = msg_shard(cl, type, h, total, avail, have ? &r : NULL, &se);
			if (shard == SHARD_PREPARE && type == 'P' && bind_on_its_way(cl, h, avail))
				return ROUTE_WAIT;   /* its key is in the Bind behind it */
		} else {
			/* Sync, Flush, Describe, Close, a stray message: nothing of a table runs */
			shard = type == 'F' ? SHARD_NONE : 0;
			se.utility = type != 'F';
		}
		cl->rt_prepare_only = shard == SHARD_PREPARE;
		if (shard == SHARD_PREPARE)
			shard = 0;   /* prepared only: its Bind finds the shard (route_bind_shard) */
		if (cl->fo) {
			/* the next shard of a fan-out */
		} else if (shard >= 0) {
			if (stmt_msg)
				c->shard_keyed[shard]++;
		} else if (shard == SHARD_NONE && se.utility) {
			shard = 0;   /* touches no table: any shard answers it */
		} else if (shard == SHARD_NONE && c->cf.no_shard_key == NOSHARD_ALL && !write &&
			   !cl->deferred && stmt_msg && se.fanout_ok) {
			enum route_result fr = fanout_start(cl, h, total, avail);
			if (fr != ROUTE_GO)
				return fr;
			shard = 0;
		} else if (shard == SHARD_NONE && c->cf.no_shard_key == NOSHARD_SHARD0) {
			shard = 0;
		} else {
			char msg[400];
			if (shard == SHARD_NONE && c->cf.no_shard_key == NOSHARD_ALL && !write && !se.nokey_write)
				snprintf(msg, sizeof(msg), "pgmux: a read without a shard key on sharded database "
					 "\"%s\" fans out only when the shards' rows together are its answer "
					 "(one table, no join, subquery, function, aggregate, DISTINCT, GROUP BY, "
					 "ORDER BY or LIMIT)", c->name);
			else
				shard_message(c, shard, write, &se, msg, sizeof(msg));
			char tag[256];
			log_debug("%s: %c message refused (shard code %d): %s",
				  client_tag(cl, tag, sizeof(tag)), type, shard, msg);
			return refuse(cl, type, total, se.refuse ? se.sqlstate : "0A000", msg);
		}
	}
	cl->rt_shard = (int16_t)shard;

	int t = target(cl, shard, write, avoid);
	if (t < 0 && !write) {
		/* replica_fallback = off and no replica qualifies */
		if (type == 'Q') {
			proto_error(&cl->c.out, "ERROR", "57P03",
				    "no replica can take this read (replica_fallback = off)");
			proto_ready(&cl->c.out, tx_status(cl));
			return reply_out(cl, total);
		}
		client_close(cl, "no replica can take this read (replica_fallback = off)", "57P03");
		return ROUTE_CLOSED;
	}
	if (t < 0)
		t = c->primary[shard] >= 0 ? c->primary[shard] : 0;   /* waits: no primary known */
	if (t < 0 || t >= rs->n) {
		client_close(cl, "no backend for this database", "08006");
		return ROUTE_CLOSED;
	}
	/* Read-your-writes needs the LSN after anything that may have written, not after a
	 * read that a hint or SET sent to the primary. */
	cl->rt_primary = write;
	cl->rt_write = write && !(have && !force && r.verdict == SQLSCAN_READ && r.tx != SQLSCAN_TX_BEGIN);
	cl->rt_be = (int16_t)t;
	if (write)
		c->be[t]->writes++;
	else
		c->be[t]->reads++;
	client_move(cl, rs->pools[t]);

	/* A read on a replica keeps its bytes until the first answer, to run again elsewhere
	 * if that replica refuses it (25006) or goes away first. */
	route_retry_clear(cl);
	if (!write && !again && !cl->fo && c->be[t]->cfg_replica == true && c->be[t]->seen_role == ROLE_REPLICA &&
	    txtrack_quiet(&cl->tt) && !cl->deferred) {
		uint32_t n = retry_span(cl, h, avail, type);
		if (n && n == avail && n <= RETRY_MAX && (cl->retry = batch_alloc(w, n))) {
			memcpy(cl->retry, h, n);
			cl->retry_len = n;
			cl->retry_sent = false;
		}
	}
	return ROUTE_GO;
}

uint32_t route_msg_need(const struct client *cl, char type, const uint8_t *h, uint32_t total,
			uint32_t avail)
{
	const struct cluster *c = cl->rs->cl;
	bool sharded = c->n_shards > 1;
	bool text = type == 'Q' || type == 'P';
	if (!cl->link) {
		if (cl->rt_fake || cl->ryw_server)
			return 0;   /* answered by type alone, or not routed yet */
		if (text)
			return total;
		if (type == 'B')
			return sharded ? total : proto_bind_need(h, total, avail, c->w->bufsize);
		return 0;
	}
	if (type == 'B' && cl->rt_prepare_only)
		return total;
	if (sharded && cl->link->tx != 'I' && (text || type == 'B'))
		return total;
	return 0;
}

uint64_t route_client_bytes(const struct client *cl)
{
	return (uint64_t)cl->retry_len + cl->deferred_len + (cl->fo ? cl->fo->len : 0) +
	       shardplan_client_bytes(cl);
}

/* ---- after the answer -------------------------------------------------------------------- */

void route_retry_clear(struct client *cl)
{
	if (cl->retry) {
		batch_free(cl->c.w, cl->retry, cl->retry_len);
		cl->retry = NULL;
		cl->retry_len = 0;
	}
}

/* Puts the saved batch back in front of the client's unread bytes and forgets the server's
 * share of the exchange, so the batch is routed again. */
static bool requeue(struct client *cl)
{
	uint8_t *data = cl->retry;
	uint32_t n = cl->retry_len;
	cl->retry = NULL;
	cl->retry_len = 0;
	/* Bytes of the batch the lost server never took are still parsed-but-unsent: the saved
	 * copy replaces them, or the next backend would get the batch twice. */
	struct iobuf *b = cl->c.in;
	if (b && b->scan > b->start) {
		sbuf_drop(&cl->c, b->start, b->scan - b->start);
		b->scan = b->start;
	}
	bool ok = sbuf_insert(&cl->c, data, n);
	if (ok)
		cl->c.in->scan -= n;
	batch_free(cl->c.w, data, n);
	txtrack_reset(&cl->tt);
	return ok;
}

static bool retry_error(struct server *sv, uint32_t skip, const uint8_t *body, uint32_t blen);

/* What may come before a statement's rows or its error: ParseComplete, BindComplete,
 * RowDescription, NoData, ParameterDescription, ParameterStatus, NoticeResponse. */
static inline bool result_header(char t)
{
	static const uint8_t header[128] = { ['1'] = 1, ['2'] = 1, ['T'] = 1, ['n'] = 1, ['t'] = 1,
					     ['S'] = 1, ['N'] = 1 };
	return (unsigned char)t < 128 && header[(unsigned char)t];
}

int route_retry_check(struct server *sv)
{
	struct client *cl = sv->link;
	const struct iobuf *b = sv->c.in;
	uint32_t off = b->scan;
	for (;;) {
		if (off + PROTO_HDR > b->end)
			break;
		char t = (char)b->data[off];
		uint32_t len = proto_get32(b->data + off + 1);
		if (len < 4 || len > b->end - off - 1)
			break;
		if (t == 'E') {
			if (retry_error(sv, off - b->scan, b->data + off + PROTO_HDR, len - 4))
				return 1;
			route_retry_clear(cl);
			return 0;
		}
		if (!result_header(t)) {
			route_retry_clear(cl);
			return 0;
		}
		off += len + 1;
	}
	/* Incomplete: wait for more, unless the header part alone would not fit. */
	if (b->end - b->scan >= sv->c.w->bufsize - PROTO_HDR || sv->c.pkt_left) {
		route_retry_clear(cl);
		return 0;
	}
	return -1;
}

/* skip: bytes of result headers before the error, dropped with it. */
static bool retry_error(struct server *sv, uint32_t skip, const uint8_t *body, uint32_t blen)
{
	struct client *cl = sv->link;
	const char *code = proto_error_field(body, blen, 'C');
	struct backend *be = sv->pool->db->be;
	if (!cl || !cl->rs || !be)
		return false;
	bool read_only = !strcmp(code, "25006");
	bool going = !strncmp(code, "57P0", 4);   /* admin shutdown, crash, cannot connect now */
	if (!read_only && !going)
		return false;
	if (going) {
		/* The server is leaving: the teardown re-routes the saved batch (route_retry_lost). */
		route_backend_failed(be, proto_error_field(body, blen, 'M'));
		server_close(sv, "server is shutting down");
		return true;
	}
	be->retries++;
	/* Its error is dropped; its ReadyForQuery is pgmux's to swallow. */
	struct iobuf *b = sv->c.in;
	sbuf_drop(&sv->c, b->scan, skip + blen + PROTO_HDR);
	sv->internal_z++;
	if (!requeue(cl)) {
		client_close(cl, "no room to retry the query on the primary", "53200");
		return true;
	}
	cl->rt_force = RT_PRIMARY;
	char tag[128];
	log_debug("%s: read-only error on a replica; retrying on the primary",
		  client_tag(cl, tag, sizeof(tag)));
	pool_release(sv, false);
	if (!cl->c.dead && !cl->link)
		client_on_data(cl);
	return true;
}

bool route_retry_lost(struct client *cl)
{
	if (!cl->retry || cl->c.dead)
		return false;
	struct backend *be = cl->rt_be >= 0 && cl->rt_be < cl->rs->n ? cl->rs->cl->be[cl->rt_be] : NULL;
	if (!requeue(cl))
		return false;
	if (be) {
		be->retries++;
		cl->rt_avoid = (int16_t)be->index;
	}
	return true;
}

void route_need_lsn(struct server *sv)
{
	struct client *cl = sv->link;
	if (!cl->rs || !cl->rt_write || sv->ryw_client || cl->ryw_server || sv->tx != 'I' ||
	    sv->c.dead || cl->rs->cl->cf.read_your_writes != RYW_LSN || !sv->pool->db->be ||
	    sv->pool->db->be->seen_role == ROLE_REPLICA)
		return;
	cl->rt_write = false;
	if (!server_send_internal(sv, "SELECT pg_current_wal_insert_lsn()::text"))
		return;
	sv->ryw_client = cl;
	cl->ryw_server = sv;
}

void route_lsn_done(struct server *sv)
{
	struct client *cl = sv->ryw_client;
	if (!cl)
		return;
	sv->ryw_client = NULL;
	cl->ryw_server = NULL;
	if (!cl->c.dead && !cl->link && sbuf_unparsed(&cl->c))
		client_on_data(cl);
}

void route_lsn_row(struct server *sv, const uint8_t *body, uint32_t blen)
{
	struct client *cl = sv->ryw_client;
	/* DataRow: int16 1, int32 len, text */
	if (!cl || blen < 6 || proto_get32(body + 2) > blen - 6)
		return;
	char txt[40];
	uint32_t n = proto_get32(body + 2);
	if (n >= sizeof(txt))
		return;
	memcpy(txt, body + 6, n);
	txt[n] = '\0';
	unsigned hi, lo;
	if (sscanf(txt, "%X/%X", &hi, &lo) == 2) {
		uint64_t lsn = ((uint64_t)hi << 32) | lo;
		if (lsn > cl->ryw_lsn)
			cl->ryw_lsn = lsn;
	}
}

void route_client_free(struct client *cl)
{
	fanout_free(cl);
	if (cl->ryw_server) {
		cl->ryw_server->ryw_client = NULL;
		cl->ryw_server = NULL;
	}
	route_retry_clear(cl);
	clear_deferred(cl);
	shardplan_client_free(cl);
}

/* ---- inside a transaction on one shard ------------------------------------------------- */

static void escape_into(char *out, size_t cap, const char *s)
{
	size_t o = 0;
	for (; *s && o + 2 < cap; s++) {
		if (*s == '\'')
			out[o++] = '\'';
		out[o++] = *s;
	}
	out[o] = '\0';
}

bool route_check_shard(struct client *cl, char type, const uint8_t *h, uint32_t total,
		       uint32_t avail)
{
	struct cluster *c = cl->rs->cl;
	if (cl->rt_shard < 0)
		return false;
	const char *sql;
	size_t len;
	if (avail < total) {
		/* Too large to read its key: the transaction cannot be kept on one shard safely. */
		char msg[200];
		snprintf(msg, sizeof(msg), "pgmux: a statement of %u bytes is too large to check for a "
			 "shard key (max_client_memory = %lld bytes)", total,
			 (long long)c->w->cf->max_client_memory);
		client_close(cl, msg, "54000");
		return true;
	}
	struct sqlscan_result r;
	bool have = message_sql(cl, type, h, total, avail, &sql, &len);
	if (have)
		classify(c->w, cl, type, sql, len, &r);
	struct sp_eval se;
	int s = msg_shard(cl, type, h, total, avail, have ? &r : NULL, &se);
	bool ok;
	if (s >= 0)
		ok = s == cl->rt_shard;
	else if (s == SHARD_PREPARE)
		ok = true;   /* keyed by $n: its Bind is checked */
	else if (s == SHARD_NONE)
		ok = se.no_table || (c->cf.no_shard_key == NOSHARD_SHARD0 && cl->rt_shard == 0);
	else
		ok = false;
	if (ok)
		return false;
	char msg[400], lit[900];
	if (s >= 0)
		snprintf(msg, sizeof(msg), "pgmux: this statement belongs to shard %d of database "
			 "\"%s\", but its transaction or batch runs on shard %d; statements of one "
			 "transaction, pipeline or query string must share a shard (ROLLBACK, then send "
			 "it on its own)", s, c->name, cl->rt_shard);
	else if (s == SHARD_NONE)
		snprintf(msg, sizeof(msg), "pgmux: a statement without a shard key inside a "
			 "transaction or batch on shard %d of database \"%s\" (add WHERE %s = <value>, "
			 "or SET pgmux.user_id first)", cl->rt_shard, c->name,
			 c->shard_key ? c->shard_key : "the key");
	else
		shard_message(c, s, true, &se, msg, sizeof(msg));
	escape_into(lit, sizeof(lit), msg);
	/* The server runs a statement that fails with this text, so its transaction is aborted
	 * exactly as an error of its own would leave it. */
	struct pktbuf pb = { 0 };
	if (type == 'Q') {
		char q[1100];
		snprintf(q, sizeof(q), "DO $pgmux$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', "
			 "MESSAGE = '%s'; END$pgmux$", lit);
		proto_query(&pb, q);
	} else if (type == 'B') {
		/* Bind: an unnamed Parse that fails takes its place; the server then skips the
		 * rest of the batch up to its Sync, as after any error. */
		char q[1100];
		snprintf(q, sizeof(q), "SELECT '%s'::int", lit);
		pktbuf_begin(&pb, 'P');
		pktbuf_put_u8(&pb, 0);
		pktbuf_put_str(&pb, q);
		pktbuf_put_u16(&pb, 0);
		pktbuf_end(&pb);
	} else {
		/* Parse: same name and parameter types; a query that fails while it is parsed. */
		const uint8_t *name_end = memchr(h + PROTO_HDR, 0, total - PROTO_HDR);
		const uint8_t *q_end = name_end ? memchr(name_end + 1, 0, (size_t)(h + total - name_end - 1)) : NULL;
		if (!q_end)
			return false;
		char q[1100];
		snprintf(q, sizeof(q), "SELECT '%s'::int", lit);
		pktbuf_begin(&pb, 'P');
		pktbuf_put(&pb, h + PROTO_HDR, (size_t)(name_end - (h + PROTO_HDR)) + 1);
		pktbuf_put_str(&pb, q);
		pktbuf_put(&pb, q_end + 1, (size_t)(h + total - q_end - 1));
		pktbuf_end(&pb);
	}
	bool done = pb.len && !pb.failed && sbuf_replace(&cl->c, total, pb.data, (uint32_t)pb.len);
	pktbuf_free(&pb);
	if (!done) {
		client_close(cl, msg, "0A000");
		return true;
	}
	char tag[128];
	log_debug("%s: statement refused on shard %d: %s", client_tag(cl, tag, sizeof(tag)),
		  cl->rt_shard, msg);
	return done;
}

bool route_bind_shard(struct client *cl, const uint8_t *h, uint32_t total, uint32_t avail)
{
	struct server *sv = cl->link;
	cl->rt_prepare_only = false;
	const char *sql;
	size_t len;
	if (sv && avail < total) {
		char msg[200];
		snprintf(msg, sizeof(msg), "pgmux: a Bind of %u bytes is too large to check for a shard "
			 "key (max_client_memory = %lld bytes)", total,
			 (long long)cl->c.w->cf->max_client_memory);
		client_close(cl, msg, "54000");
		return true;
	}
	if (!sv || !message_sql(cl, 'B', h, total, avail, &sql, &len))
		return false;
	struct sqlscan_result r;
	classify(cl->c.w, cl, 'B', sql, len, &r);
	struct sp_eval se;
	int s = msg_shard(cl, 'B', h, total, avail, &r, &se);
	/* Another shard, no key (the policy decides afresh), or a BEGIN still held back (it
	 * must go first, and the prepared-only link never saw it). */
	if ((s == cl->rt_shard && !cl->deferred) || cl->tt.expect_z || ps_pending(sv))
		return false;
	/* What the client sent before the Bind must be out, whole, before the server goes back. */
	if (!sbuf_flush(&cl->c)) {
		if (!cl->c.dead)
			client_close(cl, "pgmux: cannot move a Bind to its shard while earlier messages are "
				     "still being sent", "08P01");
		return true;
	}
	/* End the implicit transaction the Parse opened; its ReadyForQuery is pgmux's. */
	pktbuf_begin(&sv->c.out, 'S');
	pktbuf_end(&sv->c.out);
	sv->internal_z++;
	if (sbuf_send_out(&sv->c) < 0) {
		server_close(sv, "send failed");
		return true;
	}
	txtrack_reset(&cl->tt);
	pool_release(sv, false);
	return true;
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
