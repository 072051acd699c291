/* mergeplan.h: how a keyless read that runs on every shard is rewritten for the shards and merged back (pure). */
#ifndef PGMUX_MERGEPLAN_H
#define PGMUX_MERGEPLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Caps on what one plan holds: the client writes the SQL, so every list is bounded. */
#define MP_MAX_COLS 256         /* output columns, hidden ones included */
#define MP_MAX_KEYS 32          /* ORDER BY keys */

/* What pgmux does with one column of the shards' rows. */
enum mp_agg {
	MP_PLAIN = 0,     /* a value of the row (a group key when the query aggregates) */
	MP_COUNT,         /* count(*) / count(x): the shards' counts are added */
	MP_SUM,           /* sum(x): the shards' sums are added, exactly */
	MP_MIN,
	MP_MAX,
	MP_AVG_SUM,       /* avg(x), sent to the shards as sum(x); finished with its count column */
	MP_AVG_COUNT      /* the hidden count(x) an avg(x) is divided by */
};

/* One column of the rewritten statement's explicit targets, or one pgmux appended. */
struct mp_col {
	uint8_t agg;            /* enum mp_agg */
	bool collate_c;         /* its expression (or an aggregate's argument) says COLLATE "C" or
				 * "POSIX": its text orders byte by byte */
	bool hidden;            /* appended by pgmux: stripped before the client sees the row */
	int16_t avg_count;      /* MP_AVG_SUM: index (in cols) of its MP_AVG_COUNT column */
};

/* An ORDER BY key: a column of the shards' rows. */
struct mp_key {
	int16_t col;            /* >= 0: index in cols (or, after a *, the visible position) */
	bool from_star;         /* col is a position in a target list with *: checked once the
				 * RowDescription says how many columns * gave */
	bool desc;
	bool nulls_first;       /* PostgreSQL's default: NULLS FIRST exactly when DESC */
	bool collate_c;         /* the key expression itself says COLLATE "C" */
};

struct mergeplan {
	char *sql;              /* the statement each shard runs (malloc'ed) */
	bool star;              /* the target list has a *: its width is known from the shards */
	uint16_t n_targets;     /* explicit targets before the hidden ones (without a *) */
	uint16_t n_cols;        /* explicit targets and hidden columns (without a *) */
	uint16_t n_hidden;      /* trailing columns pgmux added */
	struct mp_col cols[MP_MAX_COLS];   /* without a *: one per column; with one: the hidden
					    * ones at [0, n_hidden) */
	uint16_t n_keys;
	struct mp_key keys[MP_MAX_KEYS];
	bool aggregate;         /* rows are combined per group (aggregates or GROUP BY) */
	bool distinct;          /* rows equal in every column are merged */
	bool limit_pushed;      /* the shards run LIMIT offset+limit */
	int64_t limit;          /* -1: no LIMIT (or a parameter's) */
	int64_t offset;
	uint16_t limit_param;   /* LIMIT $n: n, read from the Bind; 0 none */
	uint16_t offset_param;  /* OFFSET $n */
};

/* Plans the merge of one SELECT text that shardsql found keyless on a single table.  Returns
 * true with *mp filled (free with mergeplan_free), or false with why (a NUL-terminated
 * message of at most why_cap bytes naming what pgmux cannot merge). */
bool mergeplan_build(const char *sql, struct mergeplan *mp, char *why, size_t why_cap);

/* Frees what mergeplan_build allocated (safe on a zeroed or already freed plan). */
void mergeplan_free(struct mergeplan *mp);

#endif
