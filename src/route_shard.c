/* route_shard.c: reads fanned out over every shard, and the shard a bound link keeps to. */
#include "route_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "pool.h"
#include "prepared.h"
#include "sbuf.h"
#include "server.h"
#include "shard.h"
#include "txtrack.h"

/* ---- reads on every shard (no_shard_key = all) ------------------------------------------- */

void rt_span_begin(struct client *cl)
{
	struct route_session *rt = cl->rt;
	if (!rt->span_db && (rt->span_db = rt->rs->cl->front))
		rt->span_db->n_spanning++;
}

void rt_span_end(struct client *cl)
{
	struct route_session *rt = cl->rt;
	if (!rt->span_db || rt->fo || rt->sw)
		return;
	assert(rt->span_db->n_spanning > 0);
	rt->span_db->n_spanning--;
	rt->span_db = NULL;
}

void rt_fanout_free(struct client *cl)
{
	struct route_session *rt = cl->rt;
	if (rt->fo) {
		if (rt->fo->mg)
			rt_merge_free(rt->fo->mg);
		rt->fo_merge = false;
		rt->fo_resume = true;   /* requests pipelined behind it route once it is released */
		free(rt->fo->batch);
		free(rt->fo);
		rt->fo = NULL;
		rt_span_end(cl);
	}
}

enum hook_rc rt_ps_note(struct server *sv, char type, uint32_t len)
{
	if (!sv->ps_active)
		return HOOK_FORWARD;
	const uint8_t *body = sv->c.in->data + sv->c.in->scan + PROTO_HDR;
	return ps_server_note(sv, type, body, len - 4);
}

/* Drops a whole server message that the client must not see, after statement tracking has
 * matched it to its request: HOOK_CONSUMED, or ps_server_message's HOOK_STOP. */
static enum hook_rc drop_noted(struct server *sv, char type, uint32_t len)
{
	enum hook_rc r = rt_ps_note(sv, type, len);
	if (r == HOOK_STOP || r == HOOK_CONSUMED)
		return r;   /* closed, or statement tracking dropped it itself */
	sbuf_drop(&sv->c, sv->c.in->scan, len + 1);
	return HOOK_CONSUMED;
}

/* Saves a read batch to run on each shard in turn: a Query, or a Parse ... Sync batch. */
enum hook_rc rt_fanout_start(struct client *cl, const uint8_t *h, uint32_t total,
				      uint32_t avail)
{
	struct route_session *rt = cl->rt;
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
				return HOOK_WAIT;
		}
	}
	/* Requests pipelined behind it wait until it has run on every shard (route_on_message),
	 * then route on their own; requests before it must have been answered. */
	if (!n || !txtrack_quiet(&cl->tt)) {
		char msg[300];
		snprintf(msg, sizeof(msg), "pgmux: a read that runs on every shard must start a "
			 "pipeline (not follow requests still unanswered) and fit max_client_memory "
			 "(%lld bytes)", (long long)cl->c.w->cf->max_client_memory);
		return rt_refuse(cl, h[0], total, "0A000", msg);
	}
	/* A named Parse registers its name once (pgmux prepares it on the other shards itself):
	 * the later shards get the batch from its Bind on. */
	uint32_t skip = h[0] == 'P' && h[PROTO_HDR] != 0 ? total : 0;
	rt->fo = calloc(1, sizeof(*rt->fo));
	if (!rt->fo || !(rt->fo->batch = malloc(n - skip))) {
		rt_fanout_free(cl);
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	rt_span_begin(cl);
	rt->fo->len = n - skip;
	rt->fo->cur_len = n;
	memcpy(rt->fo->batch, h + skip, n - skip);
	rt->fo->shard = 0;
	return HOOK_FORWARD;
}

/* A server answer while the client's read fans out over every shard: merges the results
 * into one (one RowDescription, every shard's rows, the summed CommandComplete). */
enum hook_rc rt_fanout_message(struct server *sv, char type, uint32_t len, bool whole)
{
	struct client *cl = sv->link;
	struct route_session *rt = cl->rt;
	struct route_fanout *fo = rt->fo;
	struct cluster *c = rt->rs->cl;
	bool first = fo->shard == 0, last = fo->shard == c->n_shards - 1;
	struct iobuf *b = sv->c.in;
	if (fo->mg)
		return rt_merge_message(sv, type, len, whole);
	switch (type) {
	case 'T': case '1': case '2': case 't': case 'n':
		if (first)
			return HOOK_FORWARD;
		assert(whole);   /* route_on_server_message closes on an oversized one */
		return drop_noted(sv, type, len);
	case 'C': {
		if (fo->tag_done)
			return HOOK_FORWARD;
		if (!whole) {
			/* A tag larger than pgmux reads: no row count to add; never dropped half. */
			if (!last) {
				client_close(cl, "oversized command tag from a shard", "08P01");
				return HOOK_STOP;
			}
			return HOOK_FORWARD;
		}
		const char *tag = (const char *)b->data + b->scan + PROTO_HDR;
		const char *sp = memchr(tag, ' ', len - 4);
		if (sp && (size_t)(sp - tag) < sizeof(fo->verb)) {
			memcpy(fo->verb, tag, (size_t)(sp - tag));
			fo->verb[sp - tag] = '\0';
			fo->rows += strtoull(sp + 1, NULL, 10);
			fo->had_rows_tag = true;
		}
		if (!last)
			return drop_noted(sv, type, len);
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
			return ok ? HOOK_CONSUMED : HOOK_FORWARD;
		}
		return HOOK_FORWARD;
	}
	case 'E':
		rt_fanout_free(cl);   /* the error ends it: the client gets it and its ReadyForQuery */
		return HOOK_FORWARD;
	case 'Z': {
		if (last) {
			rt_fanout_free(cl);
			return HOOK_FORWARD;
		}
		assert(whole);
		/* This shard is done: what it sent goes out, the server goes back, and the batch
		 * runs on the next shard (fanout_next, after the release).  Statement tracking
		 * sees the ReadyForQuery, so that the server goes back owing nothing. */
		sv->tx = (char)b->data[b->scan + PROTO_HDR];
		enum hook_rc pr = drop_noted(sv, type, len);
		if (pr == HOOK_STOP)
			return pr;
		txtrack_reset(&cl->tt);
		fo->advance = true;
		return HOOK_RELEASE;
	}
	default:
		return HOOK_FORWARD;
	}
}

void rt_fanout_next(struct client *cl)
{
	struct route_fanout *fo = cl->rt->fo;
	if (!fo || !fo->advance || cl->link || cl->c.dead)
		return;
	fo->advance = false;
	fo->shard++;
	fo->cur_len = fo->len;
	fo->sent = 0;
	/* The same batch, back in front of the client's bytes, routes to the next shard. */
	if (!sbuf_insert(&cl->c, fo->batch, fo->len)) {
		rt_fanout_free(cl);
		client_close(cl, "no room to run the read on the next shard", "53200");
		return;
	}
	cl->c.in->scan -= fo->len;
	client_on_data(cl);
}

/* ---- inside a transaction on one shard ------------------------------------------------- */

int rt_shard_for(struct client *cl, char type, const uint8_t *h, uint32_t total, uint32_t avail,
		 const struct sqlscan_result *r, struct sp_eval *e)
{
	struct route_session *rt = cl->rt;
	struct cluster *c = rt->rs->cl;
	struct shard_ctx x = {
		.sp = { .cl = cl, .stmts = &rt->sp, .shard_key = c->shard_key, .key_type = c->cf.shard_key_type,
			.n_shards = c->n_shards, .cache = &c->sp_cache, .memory = client_memory },
		.shard_pref = rt->shard_pref, .has_user_id = rt->has_user_id,
		.user_id_hash = rt->user_id_hash,
	};
	return shard_for(&x, type, h, total, avail, r, e);
}

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

bool rt_check_shard(struct client *cl, char type, const uint8_t *h, uint32_t total,
		       uint32_t avail)
{
	struct route_session *rt = cl->rt;
	struct cluster *c = rt->rs->cl;
	if (rt->rt_shard < 0)
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
	bool have = rt_message_sql(cl, type, h, total, avail, &sql, &len);
	if (have)
		rt_classify(c->w, cl, type, sql, len, &r);
	struct sp_eval se;
	int s = rt_shard_for(cl, type, h, total, avail, have ? &r : NULL, &se);
	bool ok;
	if (s >= 0)
		ok = s == rt->rt_shard;
	else if (s == SHARD_PREPARE)
		ok = true;   /* keyed by $n: its Bind is checked */
	else if (s == SHARD_NONE)
		ok = se.no_table || (c->cf.no_shard_key == NOSHARD_SHARD0 && rt->rt_shard == 0);
	else
		ok = false;
	if (ok)
		return false;
	char msg[400], lit[900];
	if (s >= 0)
		snprintf(msg, sizeof(msg), "pgmux: this statement belongs to shard %d of database "
			 "\"%s\", but its transaction or batch runs on shard %d; statements of one "
			 "transaction, pipeline or query string must share a shard (ROLLBACK, then send "
			 "it on its own)", s, c->name, rt->rt_shard);
	else if (s == SHARD_NONE)
		snprintf(msg, sizeof(msg), "pgmux: a statement without a shard key inside a "
			 "transaction or batch on shard %d of database \"%s\" (add WHERE %s = <value>, "
			 "or SET pgmux.user_id first)", rt->rt_shard, c->name,
			 c->shard_key ? c->shard_key : "the key");
	else
		rt_shard_message(c, s, true, &se, msg, sizeof(msg));
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
		  rt->rt_shard, msg);
	return done;
}

bool rt_bind_shard(struct client *cl, const uint8_t *h, uint32_t total, uint32_t avail)
{
	struct route_session *rt = cl->rt;
	struct server *sv = cl->link;
	rt->rt_prepare_only = false;
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
	if (!sv || !rt_message_sql(cl, 'B', h, total, avail, &sql, &len))
		return false;
	struct sqlscan_result r;
	rt_classify(cl->c.w, cl, 'B', sql, len, &r);
	struct sp_eval se;
	int s = rt_shard_for(cl, 'B', h, total, avail, &r, &se);
	/* Another shard, no key (the policy decides afresh), or a BEGIN still held back (it
	 * must go first, and the prepared-only link never saw it). */
	if ((s == rt->rt_shard && !rt->deferred) || cl->tt.expect_z || ps_pending(sv))
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
