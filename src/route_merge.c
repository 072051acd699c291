/* route_merge.c: keyless reads whose shards' answers pgmux merges (ORDER BY, LIMIT/OFFSET, aggregates, GROUP BY, DISTINCT). */
#include "route_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "merge.h"
#include "mergeplan.h"
#include "sbuf.h"
#include "server.h"
#include "shardplan.h"
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
	bool emit_desc;             /* the client asked for a RowDescription (Query, Describe) */
	uint16_t n_res;             /* the client's result format codes (its Bind's) */
	uint16_t res[MP_MAX_COLS];
	bool failed;                /* pgmux refuses the answer: the rest is dropped */
	char sqlstate[6];
	char err[300];
};

uint64_t rt_merge_bytes(const struct route_merge *mg)
{
	return sizeof(*mg) + mg->desc_len + mg->set.bytes;
}

void rt_merge_free(struct route_merge *mg)
{
	merge_free(&mg->set);
	mergeplan_free(&mg->plan);
	free(mg->desc);
	free(mg);
}

/* An extended batch pgmux merges: Parse of the unnamed statement, Bind of it to the unnamed
 * portal, Describe of that portal (optional), Execute of all its rows, Sync; nothing else. */
struct xbatch {
	const uint8_t *parse, *bind;    /* whole messages, header included */
	uint32_t parse_len, bind_len;
	bool describe;
	uint32_t len;                   /* the batch's bytes, up to its Sync */
};

static const char *read_batch(const uint8_t *h, uint32_t avail, struct xbatch *xb)
{
	static const char order[] = "PBDES";
	memset(xb, 0, sizeof(*xb));
	uint32_t off = 0;
	int at = 0;
	while (off + PROTO_HDR <= avail) {
		char t = (char)h[off];
		uint32_t len = proto_get32(h + off + 1);
		if (len < 4)
			return "a malformed batch";
		if (len > avail - off - 1)
			break;   /* still arriving */
		const uint8_t *m = h + off, *body = m + PROTO_HDR;
		uint32_t blen = len - 4;
		while (order[at] && order[at] != t)
			at++;
		if (!order[at] || (t != 'D' && at != (int)(strchr(order, t) - order)))
			return "a batch other than Parse, Bind, Describe, Execute, Sync of one statement";
		switch (t) {
		case 'P':
			if (blen < 1 || body[0] != 0)
				return "a named prepared statement";
			xb->parse = m;
			xb->parse_len = len + 1;
			break;
		case 'B':
			if (blen < 2 || body[0] != 0 || body[1] != 0)
				return "a named portal or prepared statement";
			xb->bind = m;
			xb->bind_len = len + 1;
			break;
		case 'D':
			if (blen != 2 || body[0] != 'P' || body[1] != 0)
				return "a Describe other than of the unnamed portal";
			xb->describe = true;
			break;
		case 'E':
			if (blen != 5 || body[0] != 0 || proto_get32(body + 1) != 0)
				return "an Execute with a row limit (a portal fetched in parts)";
			break;
		default:
			break;
		}
		at++;
		off += len + 1;
		if (t == 'S') {
			xb->len = off;
			return xb->parse && xb->bind ? NULL : "a batch without its Parse and Bind";
		}
	}
	return "a batch that does not end with its Sync";
}

/* Bind's layout: where its parameter values and result formats are. */
struct bind_view {
	const uint8_t *body;
	uint32_t len;
	uint16_t nfmt, nparams, nres;
	uint32_t fmt_off, params_off, res_off;
};

static bool bind_read(const uint8_t *m, uint32_t total, struct bind_view *v)
{
	v->body = m + PROTO_HDR;
	v->len = total - PROTO_HDR;
	uint32_t off = 2;   /* unnamed portal and statement: two NULs */
	if (off + 2 > v->len)
		return false;
	v->nfmt = (uint16_t)(v->body[off] << 8 | v->body[off + 1]);
	v->fmt_off = off + 2;
	off = v->fmt_off + 2u * v->nfmt;
	if (off + 2 > v->len)
		return false;
	v->nparams = (uint16_t)(v->body[off] << 8 | v->body[off + 1]);
	off += 2;
	v->params_off = off;
	for (uint16_t i = 0; i < v->nparams; i++) {
		if (off + 4 > v->len)
			return false;
		int32_t l = (int32_t)proto_get32(v->body + off);
		off += 4;
		if (l > 0) {
			if ((uint32_t)l > v->len - off)
				return false;
			off += (uint32_t)l;
		}
	}
	if (off + 2 > v->len)
		return false;
	v->res_off = off;
	v->nres = (uint16_t)(v->body[off] << 8 | v->body[off + 1]);
	return off + 2 + 2u * v->nres == v->len;
}

/* The value of LIMIT/OFFSET $n from the Bind: text, or binary of a declared int2/4/8.
 * False when pgmux cannot read it as the server would. */
static bool bind_int(const struct bind_view *v, const uint8_t *parse, uint32_t parse_len, uint16_t n,
		     int64_t *out, bool *isnull)
{
	if (n == 0 || n > v->nparams)
		return false;
	uint32_t off = v->params_off;
	for (uint16_t i = 1; i < n; i++) {
		int32_t l = (int32_t)proto_get32(v->body + off);
		off += 4 + (l > 0 ? (uint32_t)l : 0);
	}
	int32_t l = (int32_t)proto_get32(v->body + off);
	const uint8_t *p = v->body + off + 4;
	*isnull = l < 0;
	if (l < 0)
		return true;
	uint16_t fmt = v->nfmt == 0 ? 0 : v->nfmt == 1 ? (uint16_t)(v->body[v->fmt_off] << 8 | v->body[v->fmt_off + 1])
		: (uint16_t)(v->body[v->fmt_off + 2u * (n - 1)] << 8 | v->body[v->fmt_off + 2u * (n - 1) + 1]);
	if (fmt == 0) {
		char buf[32];
		if (l == 0 || l >= (int32_t)sizeof(buf))
			return false;
		memcpy(buf, p, (size_t)l);
		buf[l] = '\0';
		char *end;
		errno = 0;
		long long x = strtoll(buf, &end, 10);
		while (*end == ' ')
			end++;
		if (errno || *end || end == buf)
			return false;
		*out = x;
		return true;
	}
	/* binary: the declared type says the width */
	const uint8_t *body = parse + PROTO_HDR, *end = parse + parse_len;
	const uint8_t *q = memchr(body + 1, 0, (size_t)(end - body - 1));   /* the SQL's NUL */
	if (!q || q + 3 > end)
		return false;
	uint16_t nt = (uint16_t)(q[1] << 8 | q[2]);
	uint32_t oid = n <= nt && q + 3 + 4u * n <= end ? proto_get32(q + 3 + 4u * (n - 1)) : 0;
	if (oid == 20 && l == 8)
		*out = (int64_t)((uint64_t)proto_get32(p) << 32 | proto_get32(p + 4));
	else if (oid == 23 && l == 4)
		*out = (int32_t)proto_get32(p);
	else if (oid == 21 && l == 2)
		*out = (int16_t)(p[0] << 8 | p[1]);
	else
		return false;
	return true;
}

/* The batch each shard runs: the Parse with the rewritten SQL, the Bind asking text for every
 * column, a Describe of the portal (pgmux needs the column types), Execute, Sync. */
static bool build_batch(struct pktbuf *pb, const struct xbatch *xb, const struct bind_view *bv,
			const char *sql)
{
	const uint8_t *body = xb->parse + PROTO_HDR, *end = xb->parse + xb->parse_len;
	const uint8_t *q = memchr(body + 1, 0, (size_t)(end - body - 1));
	if (!q)
		return false;
	pktbuf_begin(pb, 'P');
	pktbuf_put_u8(pb, 0);
	pktbuf_put_str(pb, sql);
	pktbuf_put(pb, q + 1, (size_t)(end - q - 1));   /* the parameter types, as the client gave */
	pktbuf_end(pb);
	pktbuf_begin(pb, 'B');
	pktbuf_put(pb, bv->body, bv->res_off);
	pktbuf_put_u16(pb, 0);   /* every column in text */
	pktbuf_end(pb);
	pktbuf_begin(pb, 'D');
	pktbuf_put_u8(pb, 'P');
	pktbuf_put_u8(pb, 0);
	pktbuf_end(pb);
	pktbuf_begin(pb, 'E');
	pktbuf_put_u8(pb, 0);
	pktbuf_put_u32(pb, 0);
	pktbuf_end(pb);
	pktbuf_begin(pb, 'S');
	pktbuf_end(pb);
	return !pb->failed;
}

static enum hook_rc refuse_merge(struct client *cl, char type, uint32_t total, const char *state,
				 const char *msg)
{
	char tag[256];
	log_info("%s: merged read refused: %s", client_tag(cl, tag, sizeof(tag)), msg);
	return rt_refuse(cl, type, total, state, msg);
}

enum hook_rc rt_merge_start(struct client *cl, const uint8_t *h, uint32_t total, uint32_t avail)
{
	struct route_session *rt = cl->rt;
	struct cluster *c = rt->rs->cl;
	char msg[400], tag[256];
	char type = (char)h[0];
	struct xbatch xb = { 0 };
	struct bind_view bv = { 0 };
	uint32_t span = total;
	if (type == 'P') {
		const char *bad = read_batch(h, avail, &xb);
		if (bad && !strcmp(bad, "a batch that does not end with its Sync")) {
			/* Its Sync may be on the way: gather up to the end of the message in progress,
			 * as the plain fan-out does. */
			uint32_t off = 0;
			while (off + PROTO_HDR <= avail && proto_get32(h + off + 1) >= 4 &&
			       proto_get32(h + off + 1) <= avail - off - 1)
				off += proto_get32(h + off + 1) + 1;
			uint32_t want = off + PROTO_HDR <= avail ? off + proto_get32(h + off + 1) + 1
								 : off + PROTO_HDR;
			if (client_need(cl, want) == 0)
				return HOOK_WAIT;
		}
		if (bad) {
			snprintf(msg, sizeof(msg), "pgmux: a read without a shard key on sharded database "
				 "\"%s\" whose shards' answers must be merged (ORDER BY, LIMIT, aggregates, "
				 "GROUP BY, DISTINCT) runs as a simple Query or as one unnamed Parse, Bind, "
				 "Describe, Execute, Sync batch; this is %s", c->name, bad);
			return refuse_merge(cl, type, total, "0A000", msg);
		}
		span = xb.len;
		if (!bind_read(xb.bind, xb.bind_len, &bv))
			return refuse_merge(cl, type, total, "08P01", "pgmux: a malformed Bind");
		if (bv.nres > MP_MAX_COLS)
			return refuse_merge(cl, type, total, "0A000", "pgmux cannot merge a read with more "
					    "than 256 result format codes");
	} else if (type != 'Q') {
		snprintf(msg, sizeof(msg), "pgmux: a read without a shard key on sharded database \"%s\" "
			 "whose shards' answers must be merged (ORDER BY, LIMIT, aggregates, GROUP BY, "
			 "DISTINCT) runs as a simple Query or as one unnamed Parse, Bind, Describe, "
			 "Execute, Sync batch, not as a Bind of a prepared statement", c->name);
		return refuse_merge(cl, type, total, "0A000", msg);
	}
	if (span > avail || !txtrack_quiet(&cl->tt)) {
		snprintf(msg, sizeof(msg), "pgmux: a read that runs on every shard must start a "
			 "pipeline (not follow requests still unanswered) and fit max_client_memory "
			 "(%lld bytes)", (long long)cl->c.w->cf->max_client_memory);
		return refuse_merge(cl, type, total, "0A000", msg);
	}
	const char *text;
	size_t text_len;
	if (!rt_message_sql(cl, type, h, total, avail, &text, &text_len))
		return refuse_merge(cl, type, total, "08P01", "pgmux: a malformed statement");
	struct route_merge *mg = calloc(1, sizeof(*mg));
	char *sql = malloc(text_len + 1);
	if (!mg || !sql) {
		free(mg);
		free(sql);
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	memcpy(sql, text, text_len);
	sql[text_len] = '\0';
	bool ok = mergeplan_build(sql, &mg->plan, msg, sizeof(msg));
	free(sql);
	if (!ok) {
		free(mg);
		return refuse_merge(cl, type, total, "0A000", msg);
	}
	struct mergeplan *mp = &mg->plan;
	mg->emit_desc = type == 'Q' || xb.describe;
	/* The shards answer in text; the client's formats are applied to the merged rows. */
	mg->n_res = bv.nres;
	for (uint16_t i = 0; i < bv.nres; i++)
		mg->res[i] = (uint16_t)(bv.body[bv.res_off + 2 + 2u * i] << 8 | bv.body[bv.res_off + 3 + 2u * i]);
	/* LIMIT $n / OFFSET $n: their values, from the Bind, as the server reads them. */
	const char *perr = NULL, *pstate = "0A000";
	if ((mp->limit_param || mp->offset_param) && type == 'Q') {
		perr = "there is no parameter $1 in a simple Query", pstate = "42P02";
	} else if (mp->limit_param || mp->offset_param) {
		int64_t v;
		bool isnull;
		if (mp->limit_param) {
			if (!bind_int(&bv, xb.parse, xb.parse_len, mp->limit_param, &v, &isnull))
				perr = "pgmux cannot read the LIMIT parameter (send it as text or as a "
				       "declared int2, int4 or int8)";
			else if (!isnull && v < 0)
				perr = "LIMIT must not be negative", pstate = "2201W";
			else
				mp->limit = isnull ? -1 : v;
		}
		if (!perr && mp->offset_param) {
			if (!bind_int(&bv, xb.parse, xb.parse_len, mp->offset_param, &v, &isnull))
				perr = "pgmux cannot read the OFFSET parameter (send it as text or as a "
				       "declared int2, int4 or int8)";
			else if (!isnull && v < 0)
				perr = "OFFSET must not be negative", pstate = "2201X";
			else
				mp->offset = isnull ? 0 : v;
		}
	}
	if (perr) {
		rt_merge_free(mg);
		return refuse_merge(cl, type, total, pstate, perr);
	}
	struct pktbuf pb = { 0 };
	if (type == 'Q')
		proto_query(&pb, mp->sql);
	else if (!build_batch(&pb, &xb, &bv, mp->sql))
		pb.failed = true;
	struct route_fanout *fo = calloc(1, sizeof(*fo));
	if (pb.failed || !fo || pb.len > UINT32_MAX) {
		pktbuf_free(&pb);
		free(fo);
		rt_merge_free(mg);
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	fo->batch = pb.data;   /* the pktbuf's bytes become the fan-out's batch */
	fo->len = fo->cur_len = (uint32_t)pb.len;
	fo->mg = mg;
	rt->fo = fo;
	rt->fo_merge = true;
	rt_span_begin(cl);
	log_debug("%s: merged read on every shard: %s", client_tag(cl, tag, sizeof(tag)), mp->sql);
	/* The rewritten request takes the client's place and is routed again, to shard 0. */
	if (!sbuf_replace(&cl->c, span, fo->batch, fo->len)) {
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
		if (mg->emit_desc)
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
	if (type != 'E' && type != 'N' && type != 'S' && type != 'A' &&
	    !(fo->shard == 0 && (type == '1' || type == '2' || type == 't' || type == 'n')) &&
	    !(type == 'Z' && (last || mg->failed))) {
		/* A message pgmux keeps or drops: statement tracking matches it to its request
		 * first (what goes on to the client, it sees in the forwarding loop). */
		enum hook_rc pr = rt_ps_note(sv, type, len);
		if (pr != HOOK_FORWARD)
			return pr;
		b = sv->c.in;
		body = b->data + b->scan + PROTO_HDR;
	}
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
						(uint64_t)cl->c.w->cf->max_client_memory) ||
				    !merge_set_formats(&mg->set, mg->res, mg->n_res))
					mg_fail(mg, mg->set.sqlstate, mg->set.err);
				else if (merge_orders_text(&mg->set) && !shardplan_same_encoding(cl))
					mg_fail(mg, "0A000", "pgmux cannot order text across shards while "
						"client_encoding differs from server_encoding: the shards "
						"send the client's encoding, whose byte order is not the "
						"server's");
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
	case '1': case '2': case 't': case 'n':
		if (fo->shard == 0)
			return HOOK_FORWARD;   /* once, from the first shard */
		sbuf_drop(&sv->c, b->scan, len + 1);
		return HOOK_CONSUMED;
	case 's':
		mg_fail(mg, "08P01", "pgmux: a shard suspended a merged read's portal");
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
