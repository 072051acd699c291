/* route_merge.c: keyless reads whose shards' answers pgmux merges (ORDER BY, LIMIT/OFFSET, aggregates, GROUP BY, DISTINCT). */
#include "route_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "merge.h"
#include "mergeplan.h"
#include "sbuf.h"
#include "server.h"
#include "txtrack.h"

/*
 * Design: the shards run one after another over the client's one link, as the plain fan-out
 * does (route_shard.c), and pgmux keeps their rows until the last shard has answered; then it
 * merges them (merge.c) and sends one RowDescription, the rows, one CommandComplete.  Holding
 * one server per shard at once would need the pool layer to link a client to several servers,
 * which it does not; keeping the rows is bounded instead: by LIMIT offset+limit pushed to each
 * shard where that is exact, and always by max_client_memory, above which the read is refused
 * with 54000.
 */

struct route_merge {
	struct mergeplan plan;
	struct merge_set set;
	bool have_desc;
	uint8_t *desc;              /* the first shard's RowDescription body */
	uint32_t desc_len;
	bool failed;                /* pgmux refuses the answer: the rest is dropped */
	char sqlstate[6];
	char err[300];
};

void rt_merge_free(struct route_merge *mg)
{
	merge_free(&mg->set);
	mergeplan_free(&mg->plan);
	free(mg->desc);
	free(mg);
}

enum hook_rc rt_merge_start(struct client *cl, const uint8_t *h, uint32_t total, uint32_t avail)
{
	struct route_session *rt = cl->rt;
	struct cluster *c = rt->rs->cl;
	char msg[400], tag[256];
	if (h[0] != 'Q') {
		snprintf(msg, sizeof(msg), "pgmux: a read without a shard key on sharded database \"%s\" "
			 "whose shards' answers must be merged (ORDER BY, LIMIT, aggregates, GROUP BY, "
			 "DISTINCT) runs only as a simple Query, not through the extended protocol",
			 c->name);
		log_debug("%s: merged read refused: %s", client_tag(cl, tag, sizeof(tag)), msg);
		return rt_refuse(cl, h[0], total, "0A000", msg);
	}
	if (total != avail || !txtrack_quiet(&cl->tt)) {
		snprintf(msg, sizeof(msg), "pgmux: a read that runs on every shard must come alone (not "
			 "pipelined with other requests) and fit max_client_memory (%lld bytes)",
			 (long long)cl->c.w->cf->max_client_memory);
		log_debug("%s: merged read refused: %s", client_tag(cl, tag, sizeof(tag)), msg);
		return rt_refuse(cl, 'Q', total, "0A000", msg);
	}
	struct route_merge *mg = calloc(1, sizeof(*mg));
	char *sql = malloc(total - PROTO_HDR + 1);
	if (!mg || !sql) {
		free(mg);
		free(sql);
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	memcpy(sql, h + PROTO_HDR, total - PROTO_HDR);
	sql[total - PROTO_HDR] = '\0';
	bool ok = mergeplan_build(sql, &mg->plan, msg, sizeof(msg));
	free(sql);
	if (!ok) {
		free(mg);
		log_info("%s: merged read refused: %s", client_tag(cl, tag, sizeof(tag)), msg);
		return rt_refuse(cl, 'Q', total, "0A000", msg);
	}
	struct pktbuf pb = { 0 };
	proto_query(&pb, mg->plan.sql);
	struct route_fanout *fo = calloc(1, sizeof(*fo));
	if (pb.failed || !fo || pb.len > UINT32_MAX) {
		pktbuf_free(&pb);
		free(fo);
		rt_merge_free(mg);
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	fo->batch = pb.data;   /* the pktbuf's bytes become the fan-out's batch */
	fo->len = (uint32_t)pb.len;
	fo->mg = mg;
	rt->fo = fo;
	rt->fo_merge = true;
	log_debug("%s: merged read on every shard: %s", client_tag(cl, tag, sizeof(tag)), mg->plan.sql);
	/* The rewritten Query takes the client's place and is routed again, to shard 0. */
	if (!sbuf_replace(&cl->c, total, fo->batch, fo->len)) {
		rt_fanout_free(cl);
		client_close(cl, "no room for the rewritten read", "53200");
		return HOOK_STOP;
	}
	return HOOK_CONSUMED;
}

static void mg_fail(struct route_merge *mg, const char *sqlstate, const char *err)
{
	if (mg->failed)
		return;
	mg->failed = true;
	snprintf(mg->sqlstate, sizeof(mg->sqlstate), "%s", sqlstate);
	snprintf(mg->err, sizeof(mg->err), "%s", err);
}

/* The merged answer (or pgmux's error), in front of the last ReadyForQuery. */
static enum hook_rc mg_answer(struct server *sv, struct client *cl, struct route_merge *mg)
{
	struct pktbuf pb = { 0 };
	if (!mg->failed && !mg->have_desc)
		mg_fail(mg, "08P01", "pgmux: a merged read got no RowDescription from its shards");
	if (!mg->failed && !merge_finish(&mg->set))
		mg_fail(mg, mg->set.sqlstate, mg->set.err);
	if (mg->failed) {
		char tag[256];
		log_info("%s: merged read failed: %s", client_tag(cl, tag, sizeof(tag)), mg->err);
		proto_error(&pb, "ERROR", mg->sqlstate, mg->err);
	} else {
		merge_put_desc(&mg->set, mg->desc, mg->desc_len, &pb);
		for (size_t i = mg->set.first; i < mg->set.end; i++)
			merge_put_row(&mg->set, i, &pb);
		char t[48];
		snprintf(t, sizeof(t), "SELECT %llu", (unsigned long long)(mg->set.end - mg->set.first));
		pktbuf_begin(&pb, 'C');
		pktbuf_put_str(&pb, t);
		pktbuf_end(&pb);
	}
	bool ok = !pb.failed && pb.len <= UINT32_MAX && sbuf_insert(&sv->c, pb.data, (uint32_t)pb.len);
	pktbuf_free(&pb);
	rt_fanout_free(cl);   /* the ReadyForQuery, read again, goes on as any other */
	if (!ok) {
		client_close(cl, "pgmux: no room for a merged answer", "53200");
		return HOOK_STOP;
	}
	return HOOK_CONSUMED;
}

enum hook_rc rt_merge_message(struct server *sv, char type, uint32_t len, bool whole)
{
	struct client *cl = sv->link;
	struct route_session *rt = cl->rt;
	struct route_fanout *fo = rt->fo;
	struct route_merge *mg = fo->mg;
	struct cluster *c = rt->rs->cl;
	struct iobuf *b = sv->c.in;
	bool last = fo->shard == c->n_shards - 1;
	if (!whole && (type == 'D' || type == 'T' || type == 'C' || type == 'I')) {
		/* Too large to keep, and never half forwarded: this read cannot be answered. */
		char msg[200];
		snprintf(msg, sizeof(msg), "pgmux: a row of %u bytes from a shard exceeds what a merged "
			 "read may hold (max_client_memory = %lld bytes)", len + 1,
			 (long long)cl->c.w->cf->max_client_memory);
		server_close(sv, "a merged read's row exceeds max_client_memory");
		client_close(cl, msg, "54000");
		return HOOK_STOP;
	}
	const uint8_t *body = b->data + b->scan + PROTO_HDR;
	switch (type) {
	case 'T':
		if (mg->failed) {
			/* dropped */
		} else if (!mg->have_desc) {
			mg->desc = malloc(len - 4 ? len - 4 : 1);
			if (!mg->desc) {
				mg_fail(mg, "53200", "pgmux: out of memory");
			} else {
				memcpy(mg->desc, body, len - 4);
				mg->desc_len = len - 4;
				mg->have_desc = true;
				if (!merge_init(&mg->set, &mg->plan, body, len - 4,
						(uint64_t)cl->c.w->cf->max_client_memory))
					mg_fail(mg, mg->set.sqlstate, mg->set.err);
			}
		} else if (!merge_same_desc(mg->desc, mg->desc_len, body, len - 4)) {
			mg_fail(mg, "0A000", "pgmux: the shards describe this read's columns differently "
				"(a table whose columns differ between shards)");
		}
		sbuf_drop(&sv->c, b->scan, len + 1);
		return HOOK_CONSUMED;
	case 'D':
		if (!mg->failed && (!mg->have_desc || !merge_add_row(&mg->set, body, len - 4)))
			mg_fail(mg, mg->have_desc ? mg->set.sqlstate : "08P01",
				mg->have_desc ? mg->set.err : "pgmux: a DataRow before its RowDescription");
		sbuf_drop(&sv->c, b->scan, len + 1);
		return HOOK_CONSUMED;
	case 'C': case 'I':
		sbuf_drop(&sv->c, b->scan, len + 1);
		return HOOK_CONSUMED;
	case 'E':
		rt_fanout_free(cl);   /* the shard's error ends it: the client gets it and its Z */
		return HOOK_FORWARD;
	case 'Z':
		if (last || mg->failed)
			return mg_answer(sv, cl, mg);
		/* This shard is done: the server goes back, the rewritten Query runs on the next. */
		sv->tx = (char)b->data[b->scan + PROTO_HDR];
		sbuf_drop(&sv->c, b->scan, len + 1);
		txtrack_reset(&cl->tt);
		fo->advance = true;
		return HOOK_RELEASE;
	default:
		return HOOK_FORWARD;   /* notices, parameter status */
	}
}
