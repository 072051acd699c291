/* shardplan.h: the shard a statement or batch belongs to, from PostgreSQL's parse of it (shardsql), cached by statement shape, with values read from literals and Bind parameters. */
#ifndef PGMUX_SHARDPLAN_H
#define PGMUX_SHARDPLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct client;
struct sp_cache;
struct sp_client;

/* The sharded database a client's message is read for.  route_shard.c (rt_shard_for) fills one per
 * message from its cluster, so that this file and shard.c depend on none of routing's objects. */
struct sp_ctx {
	struct client *cl;          /* the sender: its encodings, its pool */
	struct sp_client **stmts;   /* where the sender's remembered statements are kept (its
				     * routing session's; made on first use) */
	const char *shard_key;      /* the key column */
	int key_type;               /* SHARDKEY_*: how key values are read and hashed */
	int n_shards;
	struct sp_cache **cache;    /* where the cluster keeps its analyzed texts (made on first use,
				     * made anew when shard_key or key_type changed) */
	/* what the client holds in all (client_memory), asked only when a statement is to be
	 * remembered: that must stay within max_client_memory.  A function, not a figure, so that
	 * the messages that remember nothing do not pay for adding it up. */
	uint64_t (*memory)(const struct client *cl);
};

/* What the statements of one message (a Query, or a Parse or Bind with its batch) say. */
struct sp_eval {
	int shard;              /* >= 0: the shard every keyed statement names; -1: none keyed */
	bool refuse;            /* never routed: why, at statement `pos` (1-based, 0 unknown) */
	bool bad;               /* a key value pgmux cannot read as the server will (why says) */
	bool multi;             /* keyed statements (or values) on several shards */
	bool need_bind;         /* keyed by $n but no Bind to read them from yet */
	bool nokey_read;        /* a statement that reads rows without a provable key */
	bool nokey_write;       /* ... or may write them */
	bool fanout_ok;         /* one statement, a plain read whose shards' rows concatenate */
	bool merge_ok;          /* one statement, a keyless one-table read pgmux may merge */
	bool utility;           /* every statement touches no table (SET, SHOW, BEGIN ...) */
	bool no_table;          /* every statement names no table (utility, or SELECT f()) */
	bool keyed;             /* at least one statement is keyed */
	const char *why;
	char sqlstate[6];
	int pos;
};

/* Frees a cluster's cache (reload, shutdown). */
void shardplan_cache_free(struct sp_cache *sc);

/* A client's remembered statements (*stmts, as in sp_ctx) go (it leaves); *stmts becomes NULL. */
void shardplan_client_free(struct sp_client **stmts);
/* Bytes pgmux keeps for a client's remembered statements sp (max_client_memory); NULL: 0. */
uint64_t shardplan_client_bytes(const struct sp_client *sp);

/* Whether the client's client_encoding is its pool's server_encoding (names compared without
 * case and punctuation); false when either is unknown. */
bool shardplan_same_encoding(struct client *cl);

/*
 * A simple Query's text sql[0..len): every statement is read (through the cache of shapes:
 * texts that differ only in their literals are parsed once) and its key values decoded.
 */
void shardplan_query(const struct sp_ctx *ctx, const char *sql, size_t len, struct sp_eval *e);

/*
 * shardplan_query for a single statement whose key values are to be placed one by one (an
 * INSERT's VALUES rows, which pgmux splits over shards): vshard[i] gets the shard of key value
 * i (vcap entries; -1 where a value placed nothing, is unreadable or when the text is not one
 * statement).  e is as shardplan_query leaves it.
 */
void shardplan_query_rows(const struct sp_ctx *ctx, const char *sql, size_t len, struct sp_eval *e,
			  int *vshard, uint32_t vcap);
/*
 * A Parse message m (total bytes, whole) and, when the same batch holds one, the first Bind
 * after it (bind: its body, blen bytes; NULL when none).  The statement is remembered under
 * its name for later Binds (the unnamed one until the next unnamed Parse).
 */
void shardplan_parse(const struct sp_ctx *ctx, const uint8_t *m, uint32_t total,
		     const uint8_t *bind, uint32_t blen, struct sp_eval *e);

/* A Bind body of a statement remembered from its Parse; a statement pgmux never saw is
 * refused (its key cannot be read). */
void shardplan_bind(const struct sp_ctx *ctx, const uint8_t *body, uint32_t blen,
		    struct sp_eval *e);

/* The text of the statement a Bind body names, as remembered (in sp) from its Parse, or NULL. */
const char *shardplan_bind_text(struct sp_client *sp, const uint8_t *body, uint32_t blen, size_t *len);

/* Close of statement `name` in a client's remembered statements sp (NULL: none), DEALLOCATE /
 * DISCARD ALL (name NULL: all of them). */
void shardplan_forget(struct sp_client *sp, const char *name);

#endif
