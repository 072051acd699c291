/* shard.h: which shard of a sharded [database] a statement belongs to, from hints, session keys or its own key values. */
#ifndef PGMUX_SHARD_H
#define PGMUX_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sqlscan.h"

struct client;

enum {
	SHARD_NONE = -1,        /* nothing names a shard */
	SHARD_MULTI = -2,       /* the statement's keys point to several shards */
	SHARD_BAD = -3,         /* a key or hint that is not a valid value */
	SHARD_PREPARE = -4,     /* a Parse batch that runs nothing: any shard may prepare it */
};

/* The shard for a message at the start of a transaction (or inside one): msg holds `avail`
 * bytes starting with its header, total is its length.  r and sql describe its statement when
 * the caller could classify it (NULL otherwise).  Order: a hint comment, the session's SET
 * pgmux.shard / pgmux.user_id, then the key column's values in the statement, with $n taken
 * from the Bind that follows a Parse in the same batch (or from the Bind itself). */
int shard_for(struct client *cl, char type, const uint8_t *msg, uint32_t total, uint32_t avail,
	      const struct sqlscan_result *r, const char *sql, size_t len);

/* Parameter n (1-based) of a Bind message body (after the 5-byte header) as an integer, in
 * text or binary int2/int4/int8 format: 1 found, 0 NULL or no such parameter, -1 malformed or
 * not an integer.  Never reads past blen. */
int shard_bind_int(const uint8_t *body, uint32_t blen, int n, int64_t *out);

/* The shard of a key value (int2/int4/int8 keys: PostgreSQL's hash partitioning). */
int shard_of_int(int64_t v, int n_shards);

#endif
