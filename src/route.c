/* route.c: routing as the engine's plug-in: the hooks it installs (worker->router), a routed client's hooks into the forwarding loops, its session's lifetime, and start and end of routing as a whole. */
#include "route.h"

#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "route_int.h"
#include "server.h"
#include "shardplan.h"
#include "txtrack.h"

enum hook_rc route_on_message(struct client *cl, char type, const uint8_t *h, uint32_t total,
			      uint32_t avail)
{
	struct route_session *rt = cl->rt;
	if (rt->fo) {
		/* Behind a fan-out's batch: routed on its own once the fan-out is over, even in
		 * the moments between shards when nothing is owed (expect_z is 0). */
		if (rt->fo->sent >= rt->fo->cur_len)
			return HOOK_WAIT;
		rt->fo->sent += total;
	}
	if (rt->sw)
		return rt_split_on_message(cl, total);   /* a split write's step, or waits for it */
	if (rt->rt_prepare_only && type == 'B' && rt_bind_shard(cl, h, total, avail))
		return cl->c.dead ? HOOK_STOP : HOOK_CONSUMED;   /* unlinked: routes to its shard */
	bool routed = rt->rt_routed;
	rt->rt_routed = false;
	/* Every statement on a link bound to a shard (a transaction, a batch up to its Sync, a
	 * session) is checked against it, except the one that chose it and pgmux's own rewrite
	 * of a refused one. */
	if (!routed && !rt->fo && (type == 'Q' || type == 'P' || type == 'B') &&
	    rt->rs->cl->n_shards > 1 &&
	    (cl->link->tx != 'I' || !txtrack_quiet(&cl->tt) || rt->rs->session) &&
	    rt_check_shard(cl, type, h, total, avail)) {
		if (cl->c.dead)
			return HOOK_STOP;
		rt->rt_routed = true;   /* the rewrite goes out unchecked */
		return HOOK_CONSUMED;
	}
	route_note_sent(cl, type);
	return HOOK_FORWARD;
}

uint64_t route_client_bytes(const struct client *cl)
{
	const struct route_session *rt = cl->rt;
	if (!rt)
		return 0;
	return sizeof(*rt) + (uint64_t)rt->retry_len + rt->deferred_len + (rt->fo ? rt->fo->len : 0) +
	       (rt->fo && rt->fo->mg ? rt_merge_bytes(rt->fo->mg) : 0) + rt_split_bytes(cl) +
	       shardplan_client_bytes(rt->sp);
}

enum hook_rc route_on_server_message(struct server *sv, char type, uint32_t len, bool whole)
{
	struct client *cl = sv->link;
	struct route_session *rt = cl->rt;
	if (rt->sw)
		return rt_split_server(sv, type, len, whole);
	if (rt->fo) {
		if (!whole && (type == 'T' || type == 't')) {
			/* one RowDescription for every shard: it must be read to be dropped */
			server_close(sv, "oversized message from server");
			return HOOK_STOP;
		}
		enum hook_rc r = rt_fanout_message(sv, type, len, whole);
		if (r != HOOK_FORWARD)
			return r;
	}
	if (rt->retry)
		return rt_retry_check(sv);   /* the first answers to a read that may run elsewhere */
	return HOOK_FORWARD;
}

void route_released(struct client *cl)
{
	struct route_session *rt = cl->rt;
	if (rt->fo) {
		rt_fanout_next(cl);
	} else if (rt->sw) {
		rt_split_next(cl);
	} else if (rt->fo_resume) {
		/* Requests pipelined behind a fan-out waited (route_on_message): the client's loop
		 * stopped there, and nothing else would run it again before the client sends more. */
		rt->fo_resume = false;
		struct iobuf *b = cl->c.in;
		if (!cl->link && !cl->c.dead && b && b->scan < b->end)
			client_on_data(cl);
	}
}

/* ---- the pool layer's hooks ----------------------------------------------------------------- */

/* The BEGIN pgmux answered itself goes first on the server a transaction got; its answers
 * are pgmux's.  A link that only prepares keeps it back for the Bind's shard. */
static bool hook_linked(struct client *cl, struct server *sv)
{
	struct route_session *rt = cl->rt;
	if (!rt->deferred || rt->rt_prepare_only)
		return false;
	pktbuf_put(&sv->c.out, rt->deferred, rt->deferred_len);
	free(rt->deferred);
	rt->deferred = NULL;
	rt->deferred_len = 0;
	sv->internal_z++;
	return true;
}

static bool hook_backend_failed(struct database *db, const char *msg)
{
	if (!db->be)
		return false;
	route_backend_failed(db->be, msg);
	return true;
}

static bool hook_may_connect(const struct database *db)
{
	return !db->be || db->be->state != BE_DOWN;
}

static const struct router_ops router_ops = {
	.linked = hook_linked,
	.releasing = route_need_lsn,
	.backend_failed = hook_backend_failed,
	.may_connect = hook_may_connect,
	.login = route_client_login,
	.msg_need = route_msg_need,
	.pick = route_pick,
	.on_message = route_on_message,
	.retry_drop = route_retry_drop,
	.on_server_message = route_on_server_message,
	.released = route_released,
	.retry_lost = route_retry_lost,
	.lsn_row = route_lsn_row,
	.lsn_done = route_lsn_done,
	.client_bytes = route_client_bytes,
	.client_free = route_client_free,
	.session_free = route_session_free,
	.unpark = route_unpark,
};

void route_register(struct worker *w)
{
	w->router = &router_ops;
}

/* The write_functions list first: the clusters' statements are classified with it. */
void route_apply_config(struct worker *w)
{
	route_write_funcs_update(w);
	rt_clusters_apply(w);
	route_unpark(w);   /* clients a shard-count change took off a queue, unless paused */
}

void route_shutdown(struct worker *w)
{
	sqlscan_funcs_free(w->write_funcs);
	free(w->write_funcs_text);
	w->write_funcs = NULL;
	w->write_funcs_text = NULL;
	rt_verdicts_clear(w);
	rt_batches_free(w);
	rt_clusters_free(w);
}

void route_client_free(struct client *cl)
{
	struct route_session *rt = cl->rt;
	if (!rt)
		return;
	rt_fanout_free(cl);
	list_del(&rt->parked);
	rt_split_free(cl);
	if (rt->ryw_server) {
		rt->ryw_server->ryw_client = NULL;
		rt->ryw_server = NULL;
	}
	rt_retry_clear(cl);
	rt_clear_deferred(cl);
	shardplan_client_free(&rt->sp);
}

void route_session_free(struct client *cl)
{
	if (cl->rt)
		list_del(&cl->rt->parked);
	free(cl->rt);
	cl->rt = NULL;
}
