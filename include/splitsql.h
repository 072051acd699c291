/* splitsql.h: the pieces of a statement that pgmux splits over shards: an INSERT's VALUES rows as byte ranges of its text, a COPY FROM STDIN's columns and options (libpg_query). */
#ifndef PGMUX_SPLITSQL_H
#define PGMUX_SPLITSQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A spanning INSERT is cut into at most this many rows (more is refused: 54000). */
#define SPLITSQL_ROWS_MAX 100000

/* One INSERT ... VALUES (...), (...) [tail] as byte ranges of its text. */
struct splitsql_insert {
	uint32_t head_end;      /* [0, head_end): everything up to and including VALUES */
	uint32_t tail_start;    /* [tail_start, len): what follows the last row (ON CONFLICT, ;) */
	uint32_t len;
	uint32_t n_rows;
	uint32_t *row_start;    /* row i is [row_start[i], row_end[i]): "(" ... ")" */
	uint32_t *row_end;
	bool returning;         /* a RETURNING clause follows the rows */
};

/*
 * Cuts sql (NUL-terminated, len bytes) into its head, VALUES rows and tail with PostgreSQL's
 * own scanner.  The text must be exactly one INSERT (an optional ';' and comments after it).
 * 0 on success (free with splitsql_insert_free), 1 when the text is not such an INSERT
 * (*why says why, static), -1 out of memory.
 */
int splitsql_insert_rows(const char *sql, size_t len, struct splitsql_insert *out, const char **why);
void splitsql_insert_free(struct splitsql_insert *ins);

/*
 * The text for one shard: the head, the rows whose pick[i] is true joined by commas, the tail,
 * into out (at most ins->len bytes are written, since only rows are left out); its length.
 */
size_t splitsql_insert_build(const char *sql, const struct splitsql_insert *ins, const bool *pick,
			     char *out);

enum splitsql_format { SPLITSQL_TEXT = 0, SPLITSQL_CSV, SPLITSQL_BINARY };

/* A COPY ... FROM STDIN: what its rows look like and where the key is. */
struct splitsql_copy {
	int format;             /* splitsql_format */
	char delim, quote, escape;
	bool header;            /* the first line names the columns (text, CSV) */
	char null_str[64];      /* the NULL marker (NUL-terminated; text "\\N", CSV "") */
	uint32_t null_len;
	int key_col;            /* the key's position in the column list (-1: no list) */
	uint32_t n_cols;        /* the column list's length (0: no list, the table's columns) */
	char table[300];        /* no column list: the table as a quoted name ("s"."t") */
	const char *why;        /* set: a COPY FROM STDIN pgmux cannot split, and why (static) */
};

/*
 * Reads sql (NUL-terminated): 0 when it is exactly one COPY table FROM STDIN (out filled; when
 * pgmux cannot split it out->why says why), 1 when it is something else, -1 out of memory.
 * key is the shard-key column; a column list must name it.  Without a column list, n_cols is 0
 * and table holds the table's name, quoted, for pgmux to ask the server for its columns.
 */
int splitsql_copy(const char *sql, const char *key, struct splitsql_copy *out);

#endif
