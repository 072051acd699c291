/* route_pick.c: the choice for an unlinked client's message: what its statement asks (route_msg.c reads and answers it), the shard, the backend. */
#include "route_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "log.h"
#include "pool.h"
#include "prepared.h"
#include "sbuf.h"
#include "shard.h"
#include "shardplan.h"
#include "txtrack.h"
#include "verdict.h"

/* ---- the choice --------------------------------------------------------------------------- */

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

/* Whether the section's front database (or all of pgmux) is paused. */
static bool cluster_paused(const struct cluster *c)
{
	return c->w->paused || c->w->pausing ||
	       (c->front && (pool_db_paused(c->front) || c->front->pausing));
}

void route_unpark(struct worker *w)
{
	if (!w->rt_parked.next || list_empty(&w->rt_parked))
		return;
	/* take the whole list first: a client that finds its database still paused parks again */
	struct list todo;
	list_init(&todo);
	while (!list_empty(&w->rt_parked)) {
		struct list *it = list_first(&w->rt_parked);
		list_del(it);
		list_append(&todo, it);
	}
	while (!list_empty(&todo)) {
		struct list *it = list_first(&todo);
		list_del(it);
		struct route_session *rt = list_entry(it, struct route_session, parked);
		struct client *cl = rt->cl;
		assert(cl && cl->rt == rt);
		if (cluster_paused(rt->rs->cl)) {
			list_append(&w->rt_parked, it);
			continue;
		}
		if (!cl->c.dead && !cl->link && sbuf_unparsed(&cl->c))
			client_on_data(cl);
	}
}

enum hook_rc route_pick(struct client *cl, char type, const uint8_t *h, uint32_t total,
			     uint32_t avail)
{
	struct route_session *rt = cl->rt;
	struct route_set *rs = rt->rs;
	struct cluster *c = rs->cl;
	struct worker *w = c->w;
	if (rt->fo && rt->fo->advance)
		return HOOK_WAIT;   /* between a fan-out's shards: its batch goes first (rt_fanout_next) */
	if (rt->rt_fake)
		return rt_fake_message(cl, type, total, avail);
	if (rt->ryw_server)
		return HOOK_WAIT;   /* its last commit's LSN is on the way */
	if (rt->sw)
		return rt_split_pick(cl, type, h, total, avail);   /* a write split over shards */
	if (!rt->fo && cluster_paused(c)) {
		/* Paused: choose nothing yet.  A RELOAD under the PAUSE may change the shards
		 * (pgmux-reshard), and a shard chosen now would be the old configuration's: the
		 * message would wait in that shard's pool and run there after the RESUME. */
		if (!w->rt_parked.next)
			list_init(&w->rt_parked);
		if (list_empty(&rt->parked)) {
			rt->cl = cl;
			cl->wait_start = w->now;   /* query_wait_timeout runs from here (janitor.c) */
			list_append(&w->rt_parked, &rt->parked);
		}
		return HOOK_WAIT;
	}

	int force = rt->rt_force;
	int avoid = rt->rt_avoid;
	bool again = force || avoid >= 0;   /* a batch that already ran once: no second retry */
	rt->rt_force = RT_AUTO;
	rt->rt_avoid = -1;

	struct sqlscan_result r;
	bool have = false;
	const char *sql = NULL;
	size_t len = 0;
	if (rt->fo) {
		force = RT_REPLICA;   /* the next shard of a fan-out read */
	} else if (!force && (type == 'Q' || type == 'P' || type == 'B')) {
		/* client.c gathered what route_msg_need asked for; less means too big to read */
		if (rt_message_sql(cl, type, h, total, avail, &sql, &len) &&
		    (c->cf.read_routing || c->n_shards > 1 || may_say_pgmux(sql, len))) {
			rt_classify(w, cl, type, sql, len, &r);
			have = true;
		}
	}
	if (have && r.set && type != 'B')
		return rt_handle_set(cl, type, &r, total);

	bool write;
	if (force)
		write = force == RT_PRIMARY;
	else if (have && r.hint_role == SQLSCAN_ROLE_PRIMARY)
		write = true;
	else if (have && r.hint_role == SQLSCAN_ROLE_REPLICA)
		write = false;
	else if (rt->role_pref)
		write = rt->role_pref == RT_PRIMARY;
	else if (!c->cf.read_routing || !have)
		write = true;
	else if (rs->session)
		write = true;   /* a whole session: its first statement says little about the rest */
	else if (rt->deferred)
		write = r.tx != SQLSCAN_TX_SET_RO;   /* BEGIN; SET TRANSACTION READ ONLY */
	else
		write = !(r.verdict == SQLSCAN_READ || r.tx == SQLSCAN_TX_BEGIN_RO);

	bool plain_msg = type == 'Q' || type == 'P';
	if (have && plain_msg && rt->deferred && r.tx == SQLSCAN_TX_END && r.n_statements == 1)
		return rt_end_deferred(cl, type, total, sql, len);   /* nothing ran anywhere */
	if (rt->deferred && rt->deferred_failed && (type == 'Q' || type == 'P' || type == 'B'))
		return rt_refuse(cl, type, total, "25P02", "current transaction is aborted, commands "
			      "ignored until end of transaction block");
	if (have && plain_msg && !rt->deferred && r.tx == SQLSCAN_TX_BEGIN && r.n_statements == 1 &&
	    ((!r.hint_role && !rt->role_pref && c->cf.read_routing) || c->n_shards > 1) &&
	    r.hint_shard < 0 && !r.has_hint_user_id && !rs->session &&
	    pool_mode(cl->pool) == POOL_TRANSACTION) {
		/* A bare BEGIN says nothing yet: its first statement decides (SET TRANSACTION READ
		 * ONLY sends it to a replica; a shard key binds it to a shard). The BEGIN is
		 * replayed on the chosen server. */
		return rt_defer_begin(cl, type, total, sql, len);
	}

	int shard = 0;
	if (c->n_shards > 1 && !rt->fo && avail < total && (type == 'Q' || type == 'P' || type == 'B')) {
		/* Its key cannot be read: never guess a shard. */
		char msg[200];
		snprintf(msg, sizeof(msg), "pgmux: a statement of %u bytes is too large to check for a "
			 "shard key (max_client_memory = %lld bytes)", total,
			 (long long)w->cf->max_client_memory);
		return rt_refuse(cl, type, total, "54000", msg);
	}
	struct sp_eval se;
	memset(&se, 0, sizeof(se));
	bool stmt_msg = type == 'Q' || type == 'P' || type == 'B';
	if (c->n_shards > 1) {
		if (rt->fo) {
			shard = rt->fo->shard;   /* the next shard of a fan-out */
		} else if (stmt_msg) {
			shard = rt_shard_for(cl, type, h, total, avail, have ? &r : NULL, &se);
			if (shard == SHARD_PREPARE && type == 'P' && bind_on_its_way(cl, h, avail))
				return HOOK_WAIT;   /* its key is in the Bind behind it */
			if ((shard == SHARD_MULTI || shard == SHARD_REFUSE) && type == 'Q' && have &&
			    avail == total) {
				/* an INSERT whose rows span shards, a COPY FROM STDIN: split */
				enum hook_rc sr = rt_split_start(cl, shard, sql, len, total);
				if (sr != HOOK_FORWARD)
					return sr;
			}
		} else {
			/* Sync, Flush, Describe, Close, a stray message: nothing of a table runs */
			shard = type == 'F' ? SHARD_NONE : 0;
			se.utility = type != 'F';
		}
		rt->rt_prepare_only = shard == SHARD_PREPARE;
		if (shard == SHARD_PREPARE)
			shard = 0;   /* prepared only: its Bind finds the shard (rt_bind_shard) */
		if (rt->fo) {
			/* the next shard of a fan-out */
		} else if (shard >= 0) {
			if (stmt_msg)
				c->shard_keyed[shard]++;
		} else if (shard == SHARD_NONE && se.utility) {
			shard = 0;   /* touches no table: any shard answers it */
		} else if (shard == SHARD_NONE && c->cf.no_shard_key == NOSHARD_ALL && !write &&
			   !rt->deferred && stmt_msg && se.fanout_ok) {
			enum hook_rc fr = rt_fanout_start(cl, h, total, avail);
			if (fr != HOOK_FORWARD)
				return fr;
			shard = 0;
		} else if (shard == SHARD_NONE && c->cf.no_shard_key == NOSHARD_ALL && !write &&
			   !rt->deferred && stmt_msg && se.merge_ok) {
			return rt_merge_start(cl, h, total, avail);   /* rows pgmux combines */
		} else if (shard == SHARD_NONE && c->cf.no_shard_key == NOSHARD_SHARD0) {
			shard = 0;
		} else {
			char msg[400];
			if (shard == SHARD_NONE && c->cf.no_shard_key == NOSHARD_ALL && !write && !se.nokey_write)
				snprintf(msg, sizeof(msg), "pgmux: a read without a shard key on sharded database "
					 "\"%s\" runs on every shard only when it reads one table (no join, "
					 "subquery, WITH, UNION or FOR UPDATE), outside a transaction block",
					 c->name);
			else
				rt_shard_message(c, shard, write, &se, msg, sizeof(msg));
			char tag[256];
			log_debug("%s: %c message refused (shard code %d): %s",
				  client_tag(cl, tag, sizeof(tag)), type, shard, msg);
			return rt_refuse(cl, type, total, se.refuse ? se.sqlstate : "0A000", msg);
		}
	}
	rt->rt_shard = (int16_t)shard;

	int t = rt_target(cl, shard, write, avoid);
	if (t < 0 && !write) {
		/* replica_fallback = off and no replica qualifies */
		if (type == 'Q') {
			proto_error(&cl->c.out, "ERROR", "57P03",
				    "no replica can take this read (replica_fallback = off)");
			proto_ready(&cl->c.out, rt_tx_status(cl));
			return rt_reply_out(cl, total);
		}
		client_close(cl, "no replica can take this read (replica_fallback = off)", "57P03");
		return HOOK_STOP;
	}
	if (t < 0)
		t = c->primary[shard] >= 0 ? c->primary[shard] : 0;   /* waits: no primary known */
	if (t < 0 || t >= rs->n) {
		client_close(cl, "no backend for this database", "08006");
		return HOOK_STOP;
	}
	/* Read-your-writes needs the LSN after anything that may have written, not after a
	 * read that a hint or SET sent to the primary. */
	rt->rt_primary = write;
	rt->rt_write = write && !(have && !force && r.verdict == SQLSCAN_READ && r.tx != SQLSCAN_TX_BEGIN);
	rt->rt_be = (int16_t)t;
	if (write)
		c->be[t]->writes++;
	else
		c->be[t]->reads++;
	client_move(cl, rs->pools[t]);

	/* A read on a replica keeps its bytes until the first answer, to run again elsewhere
	 * if that replica refuses it (25006) or goes away first. */
	rt_retry_clear(cl);
	if (!write && !again && !rt->fo && c->be[t]->cfg_replica == true && c->be[t]->seen_role == ROLE_REPLICA &&
	    txtrack_quiet(&cl->tt) && !rt->deferred) {
		uint32_t n = retry_span(cl, h, avail, type);
		if (n && n == avail && n <= RETRY_MAX && (rt->retry = rt_batch_alloc(w, n))) {
			memcpy(rt->retry, h, n);
			rt->retry_len = n;
			rt->retry_sent = false;
		}
	}
	rt->rt_routed = true;   /* this message chose the link: it is not checked against it */
	return HOOK_FORWARD;
}

uint32_t route_msg_need(const struct client *cl, char type, const uint8_t *h, uint32_t total,
			uint32_t avail)
{
	const struct route_session *rt = cl->rt;
	const struct cluster *c = rt->rs->cl;
	bool sharded = c->n_shards > 1;
	bool text = type == 'Q' || type == 'P';
	if (!cl->link) {
		if (rt->split_copy_in && (type == 'd' || type == 'f'))
			return total;   /* COPY data pgmux splits over shards */
		if (rt->rt_fake || rt->ryw_server)
			return 0;   /* answered by type alone, or not routed yet */
		if (text)
			return total;
		if (type == 'B')
			return sharded ? total : proto_bind_need(h, total, avail, c->w->bufsize);
		return 0;
	}
	if (type == 'B' && rt->rt_prepare_only)
		return total;
	if (sharded && cl->link->tx != 'I' && (text || type == 'B'))
		return total;
	return 0;
}
