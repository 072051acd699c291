/* merge.h: merges the shards' rows of a keyless read as PostgreSQL would have answered it on one database (pure). */
#ifndef PGMUX_MERGE_H
#define PGMUX_MERGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mergeplan.h"
#include "mergeval.h"
#include "proto.h"

struct merge_col {
	uint8_t kind;           /* enum merge_kind */
	uint8_t agg;            /* enum mp_agg */
	bool collate_c;
	bool hidden;
	bool int8_sum;          /* a sum PostgreSQL types bigint (sum of int2/int4): range-checked */
	int16_t avg_count;      /* MP_AVG_SUM: the column of its count */
	bool binary;            /* the client asked for this column in binary */
	uint32_t oid;           /* its type, as the client sees it */
};

struct merge_key {
	uint16_t col;
	bool desc, nulls_first;
};

struct merge_chunk;

/* The rows of every shard, and what merging them needs. */
struct merge_set {
	uint16_t ncols;                 /* columns of each shard row */
	uint16_t nvis;                  /* the client's columns (the first nvis) */
	bool aggregate, distinct;
	int64_t limit, offset;
	struct merge_col col[MP_MAX_COLS];
	uint16_t nkeys;
	struct merge_key key[MP_MAX_KEYS];
	struct merge_val **rows;        /* each an array of ncols values */
	size_t nrows, cap;
	size_t first, end;              /* merge_finish: the answer is rows[first, end) */
	struct merge_chunk *chunks;     /* the bytes the values point into */
	uint64_t bytes, max_bytes;      /* held, and the cap (max_client_memory) */
	char sqlstate[6];
	char err[256];                  /* why a call returned false */
};

/* Reads a shard's RowDescription body against the plan: column types pgmux can merge,
 * text format.  max_bytes caps the rows held.  False with m->err / m->sqlstate set. */
bool merge_init(struct merge_set *m, const struct mergeplan *mp, const uint8_t *body, uint32_t len,
		uint64_t max_bytes);

/* The client's result formats (a Bind's codes: none, one for all, or one per column): the
 * rows go out in them, converted from the shards' text.  False with m->err set when their
 * number does not fit the columns or a binary column's type is one pgmux cannot send. */
/* Whether the set orders or takes min/max of text by its bytes (text, varchar, bpchar, name):
 * bytes in the client's encoding, which the shards answer in, order as the server's only when
 * the two encodings are the same. */
bool merge_orders_text(const struct merge_set *m);

bool merge_set_formats(struct merge_set *m, const uint16_t *codes, uint16_t n);

/* True when a later shard's RowDescription body describes the same columns as the first's. */
bool merge_same_desc(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen);

/* Keeps one DataRow body.  False (54000 above the cap, 08P01 malformed) with m->err set. */
bool merge_add_row(struct merge_set *m, const uint8_t *body, uint32_t len);

/* Groups, de-duplicates, sorts and cuts to OFFSET/LIMIT. False with m->err set. */
bool merge_finish(struct merge_set *m);

/* Appends the client's RowDescription (hidden columns dropped, avg columns numeric) from
 * the first shard's body. */
void merge_put_desc(const struct merge_set *m, const uint8_t *body, uint32_t len, struct pktbuf *pb);

/* Appends DataRow i of the answer (first <= i < end). */
void merge_put_row(const struct merge_set *m, size_t i, struct pktbuf *pb);

void merge_free(struct merge_set *m);

#endif
