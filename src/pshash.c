/* pshash.c: the chained hash tables of statement tracking: FNV-1a, and doubling a table in place of its entries' own links. */
#include "pshash.h"

#include <stdlib.h>

uint32_t pshash_bytes(const void *p, size_t n)
{
	const uint8_t *s = p;
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 16777619u;
	return h;
}

void pshash_grow(void ***tabp, uint32_t *mask, size_t next_off, size_t hash_off)
{
	uint32_t n = (*mask + 1) * 2;
	void **tab = calloc(n, sizeof(*tab));
	if (!tab)
		return;
	for (uint32_t i = 0; i <= *mask; i++) {
		void *e = (*tabp)[i];
		while (e) {
			void *next = *(void **)((char *)e + next_off);
			uint32_t h = *(uint32_t *)((char *)e + hash_off);
			*(void **)((char *)e + next_off) = tab[h & (n - 1)];
			tab[h & (n - 1)] = e;
			e = next;
		}
	}
	free(*tabp);
	*tabp = tab;
	*mask = n - 1;
}
