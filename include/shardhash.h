/* shardhash.h: the shard of a key, computed exactly as PostgreSQL's PARTITION BY HASH places it. */
#ifndef PGMUX_SHARDHASH_H
#define PGMUX_SHARDHASH_H

#include <stddef.h>
#include <stdint.h>

/* HASH_PARTITION_SEED in PostgreSQL (8816678312871386365 as a signed int8): every partition
 * hash is seeded with it, so a shard matches the partition only when we use it too. */
#define SHARDHASH_SEED UINT64_C(0x7A5B22367996DCFD)

/* hash_bytes_extended: Jenkins' lookup3 over bytes, 64-bit result, as on a little-endian
 * server (big-endian servers hash text and uuid keys differently; int keys are the same). */
uint64_t shardhash_bytes(const void *key, size_t len, uint64_t seed);

/* hash_bytes_uint32_extended: the same hash as of the 4 bytes of k, without storing them. */
uint64_t shardhash_uint32(uint32_t k, uint64_t seed);

/* hashint8extended(v, SHARDHASH_SEED).  int2 and int4 keys hash to the same value as the same
 * number in an int8, so shardhash_int4 / shardhash_int2 are only shortcuts. */
uint64_t shardhash_int8(int64_t v);

static inline uint64_t shardhash_int4(int32_t v)
{
	return shardhash_uint32((uint32_t)v, SHARDHASH_SEED);
}

static inline uint64_t shardhash_int2(int16_t v)
{
	return shardhash_uint32((uint32_t)(int32_t)v, SHARDHASH_SEED);
}

/* hashtextextended(s, SHARDHASH_SEED) for a deterministic collation (C, POSIX, libc, and
 * deterministic ICU ones): the bytes as the server stores them, i.e. in the server encoding.
 * Not for char(n), whose hash ignores trailing spaces. */
uint64_t shardhash_text(const char *s, size_t len);

/* uuid_hash_extended(u, SHARDHASH_SEED) of the 16 bytes in network order. */
uint64_t shardhash_uuid(const uint8_t uuid[16]);

/* uuid_in's syntax: 32 hex digits, either case, optionally a '-' after any group of four and
 * optionally inside {}; no spaces.  Returns 0, or -1 (out untouched) when s is not a uuid. */
int shardhash_parse_uuid(const char *s, size_t len, uint8_t out[16]);

/* compute_partition_hash_value for a one-column key: hash_combine64(0, h). */
static inline uint64_t shardhash_combine(uint64_t h)
{
	/* With a == 0 the shifts of a vanish and the xor is a plain assignment. */
	return h + UINT64_C(0x49a0f4dd15e5a8e3);
}

/* The remainder satisfies_hash_partition tests: unsigned 64-bit modulo.  A modulus of 0 is a
 * caller's bug; answer shard 0 rather than trap inside the proxy. */
static inline uint32_t shardhash_shard(uint64_t combined, uint32_t nshards)
{
	return nshards ? (uint32_t)(combined % nshards) : 0;
}

static inline uint32_t shardhash_int8_shard(int64_t v, uint32_t nshards)
{
	return shardhash_shard(shardhash_combine(shardhash_int8(v)), nshards);
}

static inline uint32_t shardhash_int4_shard(int32_t v, uint32_t nshards)
{
	return shardhash_shard(shardhash_combine(shardhash_int4(v)), nshards);
}

static inline uint32_t shardhash_text_shard(const char *s, size_t len, uint32_t nshards)
{
	return shardhash_shard(shardhash_combine(shardhash_text(s, len)), nshards);
}

static inline uint32_t shardhash_uuid_shard(const uint8_t uuid[16], uint32_t nshards)
{
	return shardhash_shard(shardhash_combine(shardhash_uuid(uuid)), nshards);
}

#endif
