/* route_retry.c: reads kept to run again elsewhere, and read-your-writes' commit LSN. */
#include "route_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "pool.h"
#include "sbuf.h"
#include "server.h"
#include "txtrack.h"

/* ---- saved batches: a small free list, since reads on replicas keep one each ------------- */

/* Saved reads up to this size take a block of the worker's free list (retry_free). */
#define RETRY_BUF_SIZE 1024

uint8_t *rt_batch_alloc(struct worker *w, uint32_t n)
{
	if (n > RETRY_BUF_SIZE)
		return malloc(n);
	uint8_t *p = freelist_get(&w->retry_free);
	return p ? p : malloc(RETRY_BUF_SIZE);
}

void rt_batch_free(struct worker *w, uint8_t *p, uint32_t n)
{
	if (n > RETRY_BUF_SIZE)
		free(p);
	else if (p)
		freelist_put(&w->retry_free, p);
}

void rt_batches_free(struct worker *w)
{
	freelist_clear(&w->retry_free);
}

/* ---- after the answer -------------------------------------------------------------------- */

void route_retry_drop(struct client *cl)
{
	rt_retry_clear(cl);
}

void rt_retry_clear(struct client *cl)
{
	struct route_session *rt = cl->rt;
	if (rt->retry) {
		rt_batch_free(cl->c.w, rt->retry, rt->retry_len);
		rt->retry = NULL;
		rt->retry_len = 0;
	}
}

/* Puts the saved batch back in front of the client's unread bytes and forgets the server's
 * share of the exchange, so the batch is routed again. */
static bool requeue(struct client *cl)
{
	struct route_session *rt = cl->rt;
	uint8_t *data = rt->retry;
	uint32_t n = rt->retry_len;
	rt->retry = NULL;
	rt->retry_len = 0;
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
	rt_batch_free(cl->c.w, data, n);
	txtrack_reset(&cl->tt);
	return ok;
}

/* What may come before a statement's rows or its error: ParseComplete, BindComplete,
 * RowDescription, NoData, ParameterDescription, ParameterStatus, NoticeResponse. */
static inline bool result_header(char t)
{
	static const uint8_t header[128] = { ['1'] = 1, ['2'] = 1, ['T'] = 1, ['n'] = 1, ['t'] = 1,
					     ['S'] = 1, ['N'] = 1 };
	return (unsigned char)t < 128 && header[(unsigned char)t];
}

static bool retry_error(struct server *sv, uint32_t skip, const uint8_t *body, uint32_t blen);

/* A retryable read's first answers are at the server's parse position: looks past the
 * headers of its result (ParseComplete, BindComplete, RowDescription...) for an error.
 * HOOK_WAIT: more bytes needed; HOOK_STOP: the read went elsewhere (25006: to the primary;
 * the server shut down: anywhere); HOOK_FORWARD: it ran (the saved copy is dropped). */
enum hook_rc rt_retry_check(struct server *sv)
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
				return HOOK_STOP;
			rt_retry_clear(cl);
			return HOOK_FORWARD;
		}
		if (!result_header(t)) {
			rt_retry_clear(cl);
			return HOOK_FORWARD;
		}
		off += len + 1;
	}
	/* Incomplete: wait for more, unless the header part alone would not fit. */
	if (b->end - b->scan >= sv->c.w->bufsize - PROTO_HDR || sv->c.pkt_left) {
		rt_retry_clear(cl);
		return HOOK_FORWARD;
	}
	return HOOK_WAIT;
}

/* skip: bytes of result headers before the error, dropped with it. */
static bool retry_error(struct server *sv, uint32_t skip, const uint8_t *body, uint32_t blen)
{
	struct client *cl = sv->link;
	struct route_session *rt = cl->rt;
	const char *code = proto_error_field(body, blen, 'C');
	struct backend *be = sv->pool->db->be;
	if (!cl || !rt->rs || !be)
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
	rt->rt_force = RT_PRIMARY;
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
	struct route_session *rt = cl->rt;
	if (rt && rt->sw)
		return rt_split_lost(cl);   /* a write split over shards: its step */
	if (!rt || !rt->retry || cl->c.dead)
		return false;   /* a plain client, or no kept read */
	struct backend *be = rt->rt_be >= 0 && rt->rt_be < rt->rs->n ? rt->rs->cl->be[rt->rt_be] : NULL;
	if (!requeue(cl))
		return false;
	if (be) {
		be->retries++;
		rt->rt_avoid = (int16_t)be->index;
	}
	return true;
}

void route_need_lsn(struct server *sv)
{
	struct client *cl = sv->link;
	struct route_session *rt = cl->rt;
	if (!rt->rs || !rt->rt_write || sv->ryw_client || rt->ryw_server || sv->tx != 'I' ||
	    sv->c.dead || rt->rs->cl->cf.read_your_writes != RYW_LSN || !sv->pool->db->be ||
	    sv->pool->db->be->seen_role == ROLE_REPLICA)
		return;
	rt->rt_write = false;
	if (!server_send_internal(sv, "SELECT pg_current_wal_insert_lsn()::text"))
		return;
	sv->ryw_client = cl;
	rt->ryw_server = sv;
}

void route_lsn_done(struct server *sv)
{
	struct client *cl = sv->ryw_client;
	if (!cl)
		return;
	sv->ryw_client = NULL;
	cl->rt->ryw_server = NULL;
	if (!cl->c.dead && !cl->link && sbuf_unparsed(&cl->c))
		client_on_data(cl);
}

void route_lsn_row(struct server *sv, const uint8_t *body, uint32_t blen)
{
	struct client *cl = sv->ryw_client;
	struct route_session *rt = cl->rt;
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
		if (lsn > rt->ryw_lsn)
			rt->ryw_lsn = lsn;
	}
}
