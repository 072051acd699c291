/* shardval.h: shard-key values as the server reads them: Bind parameters, integer, text and uuid key hashes, SET pgmux.user_id values (pure). */
#ifndef PGMUX_SHARDVAL_H
#define PGMUX_SHARDVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Apart from shard.h because both shard.c and shardplan.c below it read values with these,
 * and the fuzzers and tools link them alone. */

/* Parameter n (1-based) of a Bind message body (after the 5-byte header): *val and *len give
 * its bytes (pointing into body) and *fmt its format code (0 text, 1 binary).  1 found, 0 NULL
 * or no such parameter, -1 malformed.  Never reads past blen. */
int shard_bind_param(const uint8_t *body, uint32_t blen, int n, const uint8_t **val,
		     uint32_t *len, int *fmt);

/* Parameter n of a Bind body as an integer, in text or binary int2/int4/int8 format: 1 found,
 * 0 NULL or no such parameter, -1 malformed or not an integer. */
int shard_bind_int(const uint8_t *body, uint32_t blen, int n, int64_t *out);

/* The partition hash (shardhash_combine applied) of one key value of type `type` (SHARDKEY_*)
 * given as len bytes in format fmt (0 text, 1 binary): int as digits or int2/int4/int8, text
 * as its bytes in either format, uuid as uuid_in's syntax or 16 bytes.  0, or -1 when the
 * bytes are not a value of that type.  The shard is shardhash_shard(*hash, n_shards). */
int shard_key_hash(int type, const uint8_t *val, uint32_t len, int fmt, uint64_t *hash);

/* SET pgmux.user_id = value for a key of type `type`: true with *hash set (shard_key_hash of
 * the text form); false with msg and *sqlstate (static) filled.  truncated: the scanner could
 * not keep the whole value (sqlscan's set_value_bad). */
bool shard_user_id_hash(int type, const char *value, bool truncated, uint64_t *hash,
			char *msg, size_t len, const char **sqlstate);

/* "integer", "text" or "uuid": the key type's name for messages. */
const char *shard_key_type_name(int type);

/* An integer key (a literal or hint) for a key column of type `type`: a text column gets its
 * digits, as an assignment cast stores them; a uuid column none (-1). */
int shard_int_key_hash(int type, int64_t v, uint64_t *hash);

/* The shard of a key value (int2/int4/int8 keys: PostgreSQL's hash partitioning). */
int shard_of_int(int64_t v, int n_shards);

#endif
