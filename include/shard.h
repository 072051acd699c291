/* shard.h: which shard of a sharded [database] a statement belongs to: hint comments, session keys and the statement's own keys combined. */
#ifndef PGMUX_SHARD_H
#define PGMUX_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shardplan.h"
#include "shardval.h"
#include "sqlscan.h"

enum {
	SHARD_NONE = -1,        /* nothing names a shard */
	SHARD_MULTI = -2,       /* the statement's keys point to several shards */
	SHARD_BAD = -3,         /* a key or hint that is not a valid value */
	SHARD_PREPARE = -4,     /* a Parse batch that runs nothing: any shard may prepare it */
	SHARD_REFUSE = -5,      /* never routed by key: the sp_eval says why */
};

/* Longest text key taken from a string literal (bytes after unescaping); longer is SHARD_BAD.
 * $n parameters have no limit: they are hashed where they lie. */
#define SHARD_TEXT_LITERAL_MAX 1024

/* What shard_for reads a message against: the database and client (shardplan.h), and the
 * session's own choice of shard.  route_shard.c (rt_shard_for) fills one per
 * message. */
struct shard_ctx {
	struct sp_ctx sp;
	int32_t shard_pref;         /* SET pgmux.shard; -1: none */
	bool has_user_id;           /* SET pgmux.user_id was given: */
	uint64_t user_id_hash;      /* its key's partition hash (shard_key_hash) */
};

/* The shard for a message at the start of a transaction (or inside one): msg holds `avail`
 * bytes starting with its header, total is its length.  r is the classifier's reading of its
 * text (hint comments), NULL when there is none.  The statement's own keys (PostgreSQL's parse
 * of it, shardplan.c) decide; a hint comment or the session's SET pgmux.shard / pgmux.user_id
 * only place statements without a key, and refuse (SHARD_REFUSE) when they contradict it.
 * e gets the details: why a refusal, whether the statements touch no table (utility), whether
 * a keyless read may fan out.  Keys are read as ctx->sp.key_type (the cluster's shard_key_type). */
int shard_for(const struct shard_ctx *ctx, char type, const uint8_t *msg, uint32_t total,
	      uint32_t avail, const struct sqlscan_result *r, struct sp_eval *e);

#endif
