/* namehash.h: a table from names (NUL-terminated strings) to objects, keyed with a per-process secret. */
#ifndef PGMUX_NAMEHASH_H
#define PGMUX_NAMEHASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Database and user names come from clients (through the "*" entry or auth_type = any), so
 * the hash is SipHash-2-4 under a random key: nobody can choose names that share a bucket.
 * The table holds pointers: keys and values stay owned by the caller, and a key must stay
 * valid and unchanged while its entry is in the table (it is usually the object's own name). */
struct namehash;

/* An empty table; NULL when out of memory. */
struct namehash *namehash_new(void);

/* Frees the table (not the keys or values); NULL is a no-op. */
void namehash_free(struct namehash *h);

/* The value stored under key, or NULL. */
void *namehash_get(const struct namehash *h, const char *key);

/* Stores val (not NULL) under key, which must not be in the table yet.  False when out of
 * memory (the table is unchanged). */
bool namehash_put(struct namehash *h, const char *key, void *val);

/* Removes key; returns its value, or NULL when it was not there. */
void *namehash_del(struct namehash *h, const char *key);

/* Calls fn(value, arg) for every entry, in no particular order; fn must not change the table. */
void namehash_each(const struct namehash *h, void (*fn)(void *val, void *arg), void *arg);

/* Entries in the table. */
size_t namehash_count(const struct namehash *h);

/* Pure: SipHash-2-4 of len bytes under a 16-byte key (exposed for its test vectors). */
uint64_t namehash_siphash(const void *data, size_t len, const uint8_t key[16]);

#endif
