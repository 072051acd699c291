/* shardsql.h: which shard-key values a statement's rows provably have, read from PostgreSQL's own grammar (libpg_query). */
#ifndef PGMUX_SHARDSQL_H
#define PGMUX_SHARDSQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a statement does to table rows. */
enum shsql_kind {
	SHSQL_UTILITY = 0,  /* touches no table rows: SET, SHOW, BEGIN, COMMIT, SELECT 1 ... */
	SHSQL_READ,         /* reads table rows only */
	SHSQL_WRITE         /* may write table rows (INSERT, UPDATE, DELETE, SELECT INTO ...) */
};

/* What pgmux may do with it on a sharded database. */
enum shsql_verdict {
	SHSQL_KEYED = 0,    /* every row it reads or writes has one of the values listed */
	SHSQL_NOKEY,        /* no provable key: the no_shard_key policy, a hint or session key decide */
	SHSQL_REFUSE        /* never routed by key: why says so (a key update, rows of unprovable keys) */
};

/* Where a key value comes from. */
enum shsql_src {
	SHSQL_LIT_INT = 1,  /* an integer literal (ival), possibly negated */
	SHSQL_LIT_STR,      /* a string literal (str: its value as PostgreSQL parsed it) */
	SHSQL_PARAM         /* $n: its value comes with the Bind */
};

/* The type a constant is cast to, or that PostgreSQL gives a $n from that cast. */
enum shsql_type {
	SHSQL_T_NONE = 0,   /* no cast: the column's type decides */
	SHSQL_T_INT2, SHSQL_T_INT4, SHSQL_T_INT8,
	SHSQL_T_TEXT,       /* text, varchar without a length */
	SHSQL_T_UUID
};

struct shsql_value {
	uint8_t src;            /* shsql_src */
	uint8_t cast;           /* shsql_type */
	bool negated;           /* an integer literal with a unary minus before it */
	uint16_t param;         /* SHSQL_PARAM: n of $n */
	int32_t loc;            /* byte offset of the literal's first character (after any minus) */
	int64_t ival;           /* SHSQL_LIT_INT: the value, minus applied */
	char *str;              /* SHSQL_LIT_STR: the value, NUL-terminated (owned by the result) */
	uint32_t str_len;
};

struct shsql_stmt {
	uint8_t kind;           /* shsql_kind */
	uint8_t verdict;        /* shsql_verdict */
	bool fanout_ok;         /* a plain single-table read: its shards' rows, concatenated, are
				 * exactly its answer (no join, aggregate, order, limit, distinct) */
	bool merge_ok;          /* a keyless read of one table (no join, subquery, WITH, FOR
				 * UPDATE) whose shards' rows pgmux may combine (mergeplan.c) */
	bool tx_control;        /* BEGIN, COMMIT, ROLLBACK, SAVEPOINT ... */
	bool insert;            /* an INSERT: a NULL key would place a row, so it is refused */
	bool no_table;          /* names no table (SET, SHOW, BEGIN, SELECT now() ...): inside a
				 * transaction or batch it runs on that shard like a utility */
	int32_t loc;            /* where the statement starts in the text */
	const char *why;        /* SHSQL_REFUSE (and SHSQL_NOKEY, for messages): a static reason */
	uint32_t n_values;      /* SHSQL_KEYED: all these values must belong to one shard */
	struct shsql_value *v;
};

struct shsql_result {
	bool parse_error;       /* PostgreSQL's grammar refuses the text: message holds its words */
	char message[160];
	int32_t error_loc;      /* 1-based cursor position of a parse error, 0 when none */
	uint32_t n_stmts;
	struct shsql_stmt *st;
	uint16_t max_param;     /* the highest $n anywhere in the text */
};

/*
 * Reads sql (NUL-terminated; standard_conforming_strings on) with PostgreSQL 15's grammar and
 * says, per statement, which values of shard-key column `key` its rows provably have.  A key
 * counts only from a top-level AND conjunct "key = constant" (or "key IN (constants)") of the
 * WHERE clause of a single-table SELECT, UPDATE or DELETE with no subquery, CTE, join or set
 * operation anywhere, or from the key's position in an INSERT column list whose VALUES rows
 * are constants.  A constant is a literal or $n, bare or with one cast to an integer type
 * (integer keys), text or varchar (text keys) or uuid; anything else (nested casts, typmods,
 * operators, functions) is no key.  An UPDATE or ON CONFLICT DO UPDATE that assigns the key,
 * an INSERT whose key cannot be proven, SELECT INTO, MERGE, COPY FROM, DO and CALL are
 * SHSQL_REFUSE.  key_type: 0 integer, 1 text, 2 uuid (config.h's SHARDKEY_*).  Returns 0
 * (a text PostgreSQL's grammar refuses sets parse_error), or -1 when out of memory.  Free the
 * result with shsql_free.
 */
int shsql_analyze(const char *sql, const char *key, int key_type, struct shsql_result *r);

void shsql_free(struct shsql_result *r);

#endif
