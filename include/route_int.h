/* route_int.h: what the route_*.c files share among themselves; nothing outside routing includes it. */
#ifndef PGMUX_ROUTE_INT_H
#define PGMUX_ROUTE_INT_H

#include "route.h"
#include "sqlscan.h"

struct sp_eval;

/* A read batch longer than this is not kept for a retry. */
#define RETRY_MAX 8192

/* A read running on every shard in turn (no_shard_key = all): the batch and its merge. */
struct route_fanout {
	uint8_t *batch;             /* the client's batch, sent again to each shard */
	uint32_t len;
	int shard;                  /* the shard running it now */
	uint64_t rows;
	char verb[32];              /* the CommandComplete verb ("SELECT") */
	bool had_rows_tag;
	bool tag_done;              /* the summed CommandComplete is in place */
	bool advance;               /* the current shard finished: run on the next */
};

/* ---- route_topo.c: clusters, backends, health, the backend a transaction gets ---- */

/* Where a client's transaction on shard goes now: a backend index (write: the primary; read:
 * the least loaded replica that qualifies, the primary when replica_fallback allows), or -1
 * to wait for a primary.  avoid: a backend index not to take (-1: none). */
int rt_target(struct client *cl, int shard, bool write, int avoid);

/* ---- route_pick.c: classifying statements, answering locally, the choice ---- */

/* The write_functions list the classifier uses now. */
const struct sqlscan_funcs *rt_write_funcs(const struct worker *w);
/* Forgets every cached verdict (write_functions changed, or shutdown). */
void rt_verdicts_clear(struct worker *w);
/* Classifies one statement text (len bytes) through the worker's verdict cache. */
void rt_classify(struct worker *w, struct client *cl, char type, const char *sql, size_t len,
		 struct sqlscan_result *r);
/* The SQL text a Query, Parse or Bind (of a statement pgmux knows) runs: false when it
 * cannot be read (a Query or Parse not whole, a Bind of an unknown statement). */
bool rt_message_sql(struct client *cl, char type, const uint8_t *h, uint32_t total,
		    uint32_t avail, const char **sql, size_t *len);
/* An error for a batch pgmux will not run: a Query or FunctionCall (or a lone Sync) gets it
 * with its ReadyForQuery; an extended batch gets it now, and the rest up to its Sync is answered locally.  The message
 * at scan is consumed.  HOOK_CONSUMED, or HOOK_STOP when the client could not be written. */
enum hook_rc rt_refuse(struct client *cl, char type, uint32_t total, const char *sqlstate,
		       const char *msg);
/* Why a statement of a sharded database found no single shard (shard_for's code why), and
 * what to do about it, into msg. */
void rt_shard_message(const struct cluster *c, int why, bool write, const struct sp_eval *e,
		      char *msg, size_t len);
/* Drops the BEGIN pgmux held back for the client, if any. */
void rt_clear_deferred(struct client *cl);

/* ---- route_retry.c: saved reads, retries, read-your-writes ---- */

/* Room for a saved batch of n bytes (small ones from the worker's free list); NULL: none. */
uint8_t *rt_batch_alloc(struct worker *w, uint32_t n);
/* Gives back what rt_batch_alloc gave for n bytes; NULL is fine. */
void rt_batch_free(struct worker *w, uint8_t *p, uint32_t n);
/* Frees the worker's free list (shutdown). */
void rt_batches_free(struct worker *w);
/* Forgets the client's saved read. */
void rt_retry_clear(struct client *cl);
/* A retryable read's first answers are at the server's parse position: looks past the
 * headers of its result for an error.  HOOK_WAIT: more bytes needed; HOOK_STOP: the read
 * went elsewhere (25006: to the primary; the server shut down: anywhere); HOOK_FORWARD: it
 * ran (the saved copy is dropped). */
enum hook_rc rt_retry_check(struct server *sv);

/* ---- route_shard.c: fan-out reads, the shard of a bound link ---- */

/* Saves a read batch (a Query, or Parse ... Sync, alone and whole) to run on each shard in
 * turn, starting with shard 0: HOOK_FORWARD; HOOK_WAIT for the rest of the batch; a batch
 * that does not come alone is refused (rt_refuse's result). */
enum hook_rc rt_fanout_start(struct client *cl, const uint8_t *h, uint32_t total, uint32_t avail);
/* Drops the client's fan-out, if any. */
void rt_fanout_free(struct client *cl);
/* A server answer while the client's read fans out: merges the shards' results into one
 * (one RowDescription, every shard's rows, the summed CommandComplete).  HOOK_CONSUMED: read
 * on; HOOK_RELEASE: this shard is done (flush, release, then rt_fanout_next); HOOK_STOP: the
 * client was closed; HOOK_FORWARD: forward it. */
enum hook_rc rt_fanout_message(struct server *sv, char type, uint32_t len, bool whole);
/* After that release: the same batch goes to the next shard. */
void rt_fanout_next(struct client *cl);
/* shard_for (shard.h) on cl's message: the shard layer is handed the cluster's key and cache
 * and the session's SET pgmux.* choice, so that it reads neither struct cluster nor client. */
int rt_shard_for(struct client *cl, char type, const uint8_t *h, uint32_t total, uint32_t avail,
		 const struct sqlscan_result *r, struct sp_eval *e);
/* A statement on a link bound to a shard: when its key points to another shard, it is
 * replaced by one that fails with a clear error (so the server's transaction fails as
 * PostgreSQL's would).  True when replaced, or when the client was closed. */
bool rt_check_shard(struct client *cl, char type, const uint8_t *h, uint32_t total,
		    uint32_t avail);
/* A Bind on a link that only prepared so far (asyncpg: Parse, Describe, Flush, then Bind):
 * when its key belongs to another shard, the server's implicit transaction is ended with a
 * Sync of pgmux's own and the link let go, so the Bind routes afresh.  True when let go (or
 * the client was closed). */
bool rt_bind_shard(struct client *cl, const uint8_t *h, uint32_t total, uint32_t avail);

#endif
