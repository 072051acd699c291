/* shardhash.c: PostgreSQL's partition hash (lookup3, seeded) for int, text and uuid shard keys. */
#include <string.h>

#include "shardhash.h"

/*
 * Byte order.  PostgreSQL's hash_bytes has a little-endian and a big-endian variant that give
 * different values for the same bytes.  We always compute the little-endian one, because the
 * servers we route to (x86_64, arm64) are little-endian.  The words are assembled from bytes
 * explicitly, so the result does not depend on the byte order of the host running pgmux, and
 * there is nothing to check at build time; compilers turn load_le32 into one load on x86.
 */

static inline uint32_t rotl32(uint32_t x, unsigned k)
{
	return (x << k) | (x >> (32 - k));
}

static inline uint32_t load_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* lookup3's reversible mix of three words: must be bit-for-bit PostgreSQL's mix(). */
#define SH_MIX(a, b, c) do { \
	a -= c; a ^= rotl32(c, 4); c += b; \
	b -= a; b ^= rotl32(a, 6); a += c; \
	c -= b; c ^= rotl32(b, 8); b += a; \
	a -= c; a ^= rotl32(c, 16); c += b; \
	b -= a; b ^= rotl32(a, 19); a += c; \
	c -= b; c ^= rotl32(b, 4); b += a; \
} while (0)

/* lookup3's final avalanche into b and c: must be bit-for-bit PostgreSQL's final(). */
#define SH_FINAL(a, b, c) do { \
	c ^= b; c -= rotl32(b, 14); \
	a ^= c; a -= rotl32(c, 11); \
	b ^= a; b -= rotl32(a, 25); \
	c ^= b; c -= rotl32(b, 16); \
	a ^= c; a -= rotl32(c, 4); \
	b ^= a; b -= rotl32(a, 14); \
	c ^= b; c -= rotl32(b, 24); \
} while (0)

/* Initial state for a key of len bytes; PostgreSQL's keylen is an int, so only the low 32 bits
 * of the length can matter. */
#define SH_INIT(len) (0x9e3779b9u + (uint32_t)(len) + 3923095u)

/* A non-zero seed is hashed as if it were a 12-byte block (high word, low word, zero) ahead of
 * the key; a zero seed skips that block, so seed 0 matches the unseeded 32-bit hash. */
#define SH_SEED(a, b, c, seed) do { \
	if (seed) { \
		a += (uint32_t)((seed) >> 32); \
		b += (uint32_t)(seed); \
		SH_MIX(a, b, c); \
	} \
} while (0)

uint64_t shardhash_bytes(const void *key, size_t len, uint64_t seed)
{
	const uint8_t *k = key;
	uint32_t a, b, c;

	a = b = c = SH_INIT(len);
	SH_SEED(a, b, c, seed);

	/* ">= 12", not "> 12" as in Bob Jenkins' original: PostgreSQL mixes a full last block here
	 * and then runs final() over an empty tail, so a 12-byte key gets two rounds. */
	while (len >= 12) {
		a += load_le32(k);
		b += load_le32(k + 4);
		c += load_le32(k + 8);
		SH_MIX(a, b, c);
		k += 12;
		len -= 12;
	}

	/* The 0..11 tail bytes fill a, then b, then c from its second byte up (lookup3 keeps c's
	 * low byte for the length, though PostgreSQL puts the length in the initial state).  A
	 * zeroed copy gives the same sums as PostgreSQL's fall-through switch, without reading past
	 * the key. */
	uint8_t tail[12] = { 0 };
	if (len)
		memcpy(tail, k, len);
	a += load_le32(tail);
	b += load_le32(tail + 4);
	c += load_le32(tail + 8) << 8;

	SH_FINAL(a, b, c);
	return (uint64_t)b << 32 | c;
}

uint64_t shardhash_uint32(uint32_t k, uint64_t seed)
{
	uint32_t a, b, c;

	a = b = c = SH_INIT(sizeof(uint32_t));
	SH_SEED(a, b, c, seed);
	a += k;
	SH_FINAL(a, b, c);
	return (uint64_t)b << 32 | c;
}

uint64_t shardhash_int8(int64_t v)
{
	/* Fold to 32 bits so that an int8 holding an int4's value hashes like that int4: for
	 * -2^31 <= v < 2^31 the high word is all sign bits and the xor leaves the low word as is. */
	uint32_t lo = (uint32_t)(uint64_t)v;
	uint32_t hi = (uint32_t)((uint64_t)v >> 32);

	lo ^= v >= 0 ? hi : ~hi;
	return shardhash_uint32(lo, SHARDHASH_SEED);
}

uint64_t shardhash_text(const char *s, size_t len)
{
	return shardhash_bytes(s, len, SHARDHASH_SEED);
}

uint64_t shardhash_uuid(const uint8_t uuid[16])
{
	return shardhash_bytes(uuid, 16, SHARDHASH_SEED);
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int shardhash_parse_uuid(const char *s, size_t len, uint8_t out[16])
{
	uint8_t buf[16];
	size_t i = 0;
	int braces = len > 0 && s[0] == '{';

	if (braces)
		i++;
	for (int n = 0; n < 16; n++) {
		if (len - i < 2)
			return -1;
		int hi = hexval(s[i]), lo = hexval(s[i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		buf[n] = (uint8_t)(hi << 4 | lo);
		i += 2;
		/* uuid_in takes one hyphen after any group of four digits, not only 8-4-4-4-12, but
		 * never a trailing one. */
		if ((n & 1) && n < 15 && i < len && s[i] == '-')
			i++;
	}
	if (braces) {
		if (i >= len || s[i] != '}')
			return -1;
		i++;
	}
	if (i != len)
		return -1;
	memcpy(out, buf, sizeof(buf));
	return 0;
}
