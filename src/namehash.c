/* namehash.c: a chained hash table from names to objects (databases, users, pools), SipHash-keyed. */
#include "namehash.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pwcrypt.h"

struct nh_entry {
	struct nh_entry *next;
	uint64_t hash;
	const char *key;
	void *val;
};

struct namehash {
	struct nh_entry **bucket;
	size_t mask;                /* buckets - 1; buckets is a power of two */
	size_t count;
};

/* Small: most tables (a database's pools by user) hold one or two names. */
#define NH_MIN_BUCKETS 4

/* ---- SipHash-2-4 ------------------------------------------------------------------------- */

static inline uint64_t rotl(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

static inline uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

#define SIPROUND do { \
	v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32); \
	v2 += v3; v3 = rotl(v3, 16); v3 ^= v2; \
	v0 += v3; v3 = rotl(v3, 21); v3 ^= v0; \
	v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32); \
} while (0)

uint64_t namehash_siphash(const void *data, size_t len, const uint8_t key[16])
{
	const uint8_t *in = data;
	uint64_t k0 = le64(key), k1 = le64(key + 8);
	uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
	uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
	size_t whole = len - len % 8;
	for (size_t i = 0; i < whole; i += 8) {
		uint64_t m = le64(in + i);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	uint64_t b = (uint64_t)len << 56;
	for (size_t i = 0; i < len % 8; i++)
		b |= (uint64_t)in[whole + i] << (8 * i);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* One key for the process, drawn on first use. */
static const uint8_t *secret(void)
{
	static uint8_t key[16];
	static bool ready;
	if (!ready) {
		if (!pwcrypt_random(key, sizeof(key))) {
			/* Still varies between runs; only the flooding defence weakens. */
			uint64_t a = (uint64_t)time(NULL), b = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull;
			memcpy(key, &a, 8);
			memcpy(key + 8, &b, 8);
		}
		ready = true;
	}
	return key;
}

static uint64_t hash_of(const char *key)
{
	return namehash_siphash(key, strlen(key), secret());
}

/* ---- the table ----------------------------------------------------------------------------- */

struct namehash *namehash_new(void)
{
	struct namehash *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->bucket = calloc(NH_MIN_BUCKETS, sizeof(*h->bucket));
	if (!h->bucket) {
		free(h);
		return NULL;
	}
	h->mask = NH_MIN_BUCKETS - 1;
	return h;
}

void namehash_free(struct namehash *h)
{
	if (!h)
		return;
	for (size_t i = 0; i <= h->mask; i++) {
		struct nh_entry *e = h->bucket[i];
		while (e) {
			struct nh_entry *next = e->next;
			free(e);
			e = next;
		}
	}
	free(h->bucket);
	free(h);
}

/* Moves every entry into a table of n buckets; keeps the old one when out of memory (a long
 * chain is slower, never wrong). */
static void rehash(struct namehash *h, size_t n)
{
	struct nh_entry **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i <= h->mask; i++) {
		struct nh_entry *e = h->bucket[i];
		while (e) {
			struct nh_entry *next = e->next;
			size_t j = (size_t)e->hash & (n - 1);
			e->next = b[j];
			b[j] = e;
			e = next;
		}
	}
	free(h->bucket);
	h->bucket = b;
	h->mask = n - 1;
}

void *namehash_get(const struct namehash *h, const char *key)
{
	uint64_t hv = hash_of(key);
	for (struct nh_entry *e = h->bucket[hv & h->mask]; e; e = e->next)
		if (e->hash == hv && strcmp(e->key, key) == 0)
			return e->val;
	return NULL;
}

bool namehash_put(struct namehash *h, const char *key, void *val)
{
	struct nh_entry *e = malloc(sizeof(*e));
	if (!e)
		return false;
	e->hash = hash_of(key);
	e->key = key;
	e->val = val;
	size_t i = (size_t)e->hash & h->mask;
	e->next = h->bucket[i];
	h->bucket[i] = e;
	if (++h->count > h->mask + 1)
		rehash(h, (h->mask + 1) * 2);
	return true;
}

void *namehash_del(struct namehash *h, const char *key)
{
	uint64_t hv = hash_of(key);
	for (struct nh_entry **pp = &h->bucket[hv & h->mask]; *pp; pp = &(*pp)->next) {
		struct nh_entry *e = *pp;
		if (e->hash != hv || strcmp(e->key, key) != 0)
			continue;
		void *val = e->val;
		*pp = e->next;
		free(e);
		/* Shrinks once a quarter full, so that a burst of names gives its memory back. */
		if (--h->count < (h->mask + 1) / 4 && h->mask + 1 > NH_MIN_BUCKETS)
			rehash(h, (h->mask + 1) / 2);
		return val;
	}
	return NULL;
}

void namehash_each(const struct namehash *h, void (*fn)(void *val, void *arg), void *arg)
{
	for (size_t i = 0; i <= h->mask; i++)
		for (struct nh_entry *e = h->bucket[i]; e; e = e->next)
			fn(e->val, arg);
}

size_t namehash_count(const struct namehash *h)
{
	return h->count;
}
