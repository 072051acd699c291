/* pshash.h: the chained hash tables of statement tracking (statements, a client's names, a server's statements): the byte hash and the doubling of a table; pure. */
#ifndef PGMUX_PSHASH_H
#define PGMUX_PSHASH_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a over n bytes at p. */
uint32_t pshash_bytes(const void *p, size_t n);

/* Doubles a table of (*mask + 1) chains whose entries hold their chain link at next_off and
 * their hash at hash_off, relinking every entry.  Out of memory leaves the table as it is
 * (longer chains, still correct). */
void pshash_grow(void ***tabp, uint32_t *mask, size_t next_off, size_t hash_off);

#endif
