/* freelist.h: a bounded stack of spare blocks of one size (receive buffers, saved reads): churn reuses memory, and beyond `keep` spares it goes back to the system. */
#ifndef PGMUX_FREELIST_H
#define PGMUX_FREELIST_H

#include <stdlib.h>

struct freelist {
	void *head;                 /* a spare's first bytes hold the next spare */
	int n;                      /* spares held */
	int keep;                   /* at most this many */
};

/* A spare block, or NULL when none is held (the caller allocates one). */
static inline void *freelist_get(struct freelist *f)
{
	void **p = (void **)f->head;
	if (!p)
		return NULL;
	f->head = *p;
	f->n--;
	return p;
}

/* Takes back a block from freelist_get or malloc (of the list's size, at least a pointer
 * big): held as a spare, or freed when keep are held already. */
static inline void freelist_put(struct freelist *f, void *block)
{
	if (f->n >= f->keep) {
		free(block);
		return;
	}
	*(void **)block = f->head;
	f->head = block;
	f->n++;
}

/* Frees every spare (shutdown). */
static inline void freelist_clear(struct freelist *f)
{
	void *p;
	while ((p = freelist_get(f)))
		free(p);
}

#endif
