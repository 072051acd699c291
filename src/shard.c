/* shard.c: finds the shard a statement belongs to: hint comments, session keys, key values in the SQL and its Bind. */
#include "shard.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "shardhash.h"

/* Keys looked at per statement: a multi-row INSERT past this many is checked no further. */
#define SHARD_KEYS_MAX 64

/* The Bind body of the batch: the message itself, or the first Bind after a Parse. */
static const uint8_t *find_bind(char type, const uint8_t *msg, uint32_t total, uint32_t avail,
				uint32_t *blen)
{
	uint32_t off = 0;
	if (type != 'B') {
		off = total;
		for (;;) {
			if (off + PROTO_HDR > avail)
				return NULL;
			char t = (char)msg[off];
			uint32_t len = proto_get32(msg + off + 1);
			if (len < 4 || len > avail - off - 1)   /* not off + len + 1: it may wrap */
				return NULL;
			if (t == 'B')
				break;
			if (t != 'D' && t != 'H' && t != 'C')
				return NULL;
			off += len + 1;
		}
	}
	if (off + PROTO_HDR > avail)
		return NULL;
	uint32_t len = proto_get32(msg + off + 1);
	if (len < 4 || len > avail - off - 1)
		return NULL;
	*blen = len - 4;
	return msg + off + PROTO_HDR;
}

/* True when the messages after a Parse, up to a Sync or Flush, run nothing (no Bind or
 * Execute), all of them here. */
static bool prepare_only(const uint8_t *msg, uint32_t total, uint32_t avail)
{
	uint32_t off = total;
	while (off + PROTO_HDR <= avail) {
		char t = (char)msg[off];
		uint32_t len = proto_get32(msg + off + 1);
		if (t == 'S' || t == 'H')
			return true;
		if (t == 'E' || t == 'B' || len < 4 || len > avail - off - 1)
			return false;
		off += len + 1;
	}
	return false;
}

/* The shard a hint comment names: its shard=N, or its user_id=N's shard; -1 none, SHARD_BAD
 * for a value that is none. */
static int hint_shard(const struct sp_ctx *sp, const struct sqlscan_result *r)
{
	int n = sp->n_shards;
	if (r && r->hint_shard >= 0)
		return r->hint_shard < n ? r->hint_shard : SHARD_BAD;
	if (r && r->has_hint_user_id) {
		uint64_t h;
		if (shard_int_key_hash(sp->key_type, r->hint_user_id, &h) < 0)
			return SHARD_BAD;
		return (int)shardhash_shard(h, (uint32_t)n);
	}
	return -1;
}

/* The shard the session named with SET pgmux.shard / pgmux.user_id; -1 none. */
static int session_shard(const struct shard_ctx *ctx)
{
	int n = ctx->sp.n_shards;
	if (ctx->shard_pref >= 0)
		return ctx->shard_pref < n ? ctx->shard_pref : SHARD_BAD;
	if (ctx->has_user_id)
		return (int)shardhash_shard(ctx->user_id_hash, (uint32_t)n);
	return -1;
}

static int refuse_with(struct sp_eval *e, const char *why)
{
	e->refuse = true;
	memcpy(e->sqlstate, "0A000", 6);
	e->why = why;
	return SHARD_REFUSE;
}

int shard_for(const struct shard_ctx *ctx, char type, const uint8_t *msg, uint32_t total,
	      uint32_t avail, const struct sqlscan_result *r, struct sp_eval *e)
{
	memset(e, 0, sizeof(*e));
	e->shard = -1;
	if (avail < total) {
		e->refuse = true;
		memcpy(e->sqlstate, "54000", 6);
		e->why = "the statement is too large for pgmux to read its shard key (max_client_memory)";
		return SHARD_REFUSE;
	}
	if (type == 'Q') {
		shardplan_query(&ctx->sp, (const char *)msg + PROTO_HDR, total - PROTO_HDR, e);
	} else if (type == 'P') {
		uint32_t blen = 0;
		const uint8_t *bind = find_bind('P', msg, total, avail, &blen);
		shardplan_parse(&ctx->sp, msg, total, bind, blen, e);
		if (!bind && !e->refuse && prepare_only(msg, total, avail)) {
			/* Parse [Describe] Sync/Flush runs nothing: any shard prepares it, and its
			 * Bind finds its shard (asyncpg prepares so) */
			e->need_bind = true;
			e->shard = -1;
			e->bad = e->multi = false;
		}
	} else if (type == 'B') {
		shardplan_bind(&ctx->sp, msg + PROTO_HDR, total - PROTO_HDR, e);
	} else {
		return SHARD_NONE;
	}
	int hint = hint_shard(&ctx->sp, r), sess = session_shard(ctx);
	int claim = hint >= 0 ? hint : sess >= 0 ? sess : -1;
	if (e->refuse)
		return SHARD_REFUSE;
	if (e->bad)
		return SHARD_BAD;
	if (e->multi)
		return SHARD_MULTI;
	if (hint == SHARD_BAD || sess == SHARD_BAD)
		return SHARD_BAD;
	if (e->shard >= 0) {
		/* The statement's own key is the proof; a hint or session key may only agree. */
		if (hint >= 0 && hint != e->shard)
			return refuse_with(e, "the hint comment names another shard than the statement's "
					   "own shard key");
		if (sess >= 0 && sess != e->shard)
			return refuse_with(e, "SET pgmux.user_id / pgmux.shard names another shard than "
					   "the statement's own shard key");
		if ((e->nokey_read || e->nokey_write) && claim < 0)
			return refuse_with(e, "the statements mix ones with a shard key and ones without "
					   "(send them separately, or name the shard with SET pgmux.user_id)");
		return e->shard;
	}
	if (claim >= 0)
		return claim;
	if (e->need_bind)
		return SHARD_PREPARE;   /* keyed by $n: its Bind routes it */
	return SHARD_NONE;
}
