/* route_int.h: what the route_*.c files share among themselves; nothing outside routing includes it. */
#ifndef PGMUX_ROUTE_INT_H
#define PGMUX_ROUTE_INT_H

#include "route.h"
#include "sqlscan.h"
#include "verdict.h"

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
	uint32_t cur_len;           /* the batch's bytes on the current shard (a named Parse goes
				     * to the first only) */
	uint32_t sent;              /* ... of which went out: anything after them waits */
	struct route_merge *mg;     /* the rows pgmux merges (route_merge.c), or NULL: concatenated */
};

/* ---- the hooks route_register installs in worker->router (model.h, struct router_ops),
 * through which the engine reaches routing for a client with a session (cl->rt) ---- */

/* A client of a [database X] section (front) logged in as its user: its routing session is
 * made (cl->rt, over the user's set of pools) and the pool it starts in is returned, for its
 * greeting.  NULL when out of memory; cl->rt is then NULL too. */
struct pool *route_client_login(struct client *cl, struct database *front);

/* An unlinked client's first message of a transaction is at c->in->scan (total bytes, avail
 * of them in the buffer): chooses the backend and moves the client to its pool (HOOK_FORWARD),
 * or needs more bytes (HOOK_WAIT), or answered it itself (HOOK_CONSUMED: read on), or closed. */
PGMUX_MUST_CHECK enum hook_rc route_pick(struct client *cl, char type, const uint8_t *h, uint32_t total,
			     uint32_t avail);

/* pgmux's own connection to a backend failed: down until the monitor sees it again. */
void route_backend_failed(struct backend *be, const char *msg);

/* A write transaction finished on a primary and its client wants read-your-writes: pgmux
 * asks the server for its WAL insert LSN before it goes back to the pool, and the client's
 * next route waits for the answer (route_lsn_row, then route_lsn_done). */
void route_need_lsn(struct server *sv);
/* A DataRow of that query (text LSN); called by the server's swallow path. */
void route_lsn_row(struct server *sv, const uint8_t *body, uint32_t blen);
/* The query finished, failed or its server died: the client routes again. */
void route_lsn_done(struct server *sv);

/* The routing hooks of the forwarding loops, for clients of a section (cl->rt):
 * route_on_message sees a linked client's message at the parse position, whole as
 * route_msg_need asked: a request behind a fan-out waits (HOOK_WAIT), a Bind that belongs to
 * another shard than the link's moves (HOOK_CONSUMED, unlinked), a statement that does not
 * belong to the link's shard is rewritten into one that fails (HOOK_CONSUMED: read it again,
 * it goes unchecked); else HOOK_FORWARD.  route_pick is the same hook for an unlinked client. */
PGMUX_MUST_CHECK enum hook_rc route_on_message(struct client *cl, char type, const uint8_t *h, uint32_t total,
			      uint32_t avail);
/* Forgets the read kept for a retry (route_note_sent). */
void route_retry_drop(struct client *cl);

/* A server message to the linked client of a section: a fan-out merges its shards' answers
 * (HOOK_CONSUMED; HOOK_RELEASE when a shard is done: flush, release, then route_released);
 * a retryable read's first answers are watched (HOOK_WAIT for more bytes; HOOK_STOP when the
 * read went elsewhere).  HOOK_FORWARD: forward it as usual. */
PGMUX_MUST_CHECK enum hook_rc route_on_server_message(struct server *sv, char type, uint32_t len, bool whole);
/* cl's server went back to the pool after a HOOK_RELEASE: a fan-out runs on its next shard. */
void route_released(struct client *cl);
/* The server of a retryable read died before answering: true when the read was put back to
 * route again (the caller runs the client's loop), false when the client must be closed. */
bool route_retry_lost(struct client *cl);

/* How much of the client message at h (total bytes, avail here) routing reads before it acts:
 * a Query or Parse whole, a Bind whole on a sharded database or up to its statement name
 * otherwise; 0 for the rest.  client.c gathers it (bounded by max_client_memory); a message
 * that was too big reaches route_pick / the shard check with avail < total and is routed
 * without being read (read routing: to the primary) or refused (sharding: 54000). */
uint32_t route_msg_need(const struct client *cl, char type, const uint8_t *h, uint32_t total,
			uint32_t avail);

/* Bytes routing holds for the client (its session, retry copy, held-back BEGIN, fan-out batch,
 * remembered statements); 0 for a plain client. */
uint64_t route_client_bytes(const struct client *cl);

/* A client leaves (client_close): its saved batches go and the server reading its commit LSN
 * forgets it.  cl->rt itself stays until route_session_free, since the closed client may still
 * be looked at until it is reaped.  Nothing for a plain client. */
void route_client_free(struct client *cl);
/* The client's memory goes (the reaper): its routing session is freed; NULL is fine. */
void route_session_free(struct client *cl);

/* Clients that held their next message back while their database was paused pick a route
 * now, unless it is still paused (route_pick.c; called whenever pools may serve again). */
void route_unpark(struct worker *w);

/* ---- route_topo.c: clusters, backends, health, the backend a transaction gets ---- */

/* Builds or updates clusters from the current config, starts their monitors, and stops those
 * of sections that left it (route_apply_config's part that is routing's topology). */
void rt_clusters_apply(struct worker *w);
/* Frees every cluster, its backends (and their monitors) and route sets (route_shutdown). */
void rt_clusters_free(struct worker *w);

/* Where a client's transaction on shard goes now: a backend index (write: the primary; read:
 * the least loaded replica that qualifies, the primary when replica_fallback allows), or -1
 * to wait for a primary.  avoid: a backend index not to take (-1: none). */
int rt_target(struct client *cl, int shard, bool write, int avoid);

/* ---- route_msg.c: a message's SQL and its classification, answering locally ---- */

/* The write_functions list the classifier uses now. */
static inline const struct sqlscan_funcs *rt_write_funcs(const struct worker *w)
{
	return w->write_funcs;
}
/* Forgets every cached verdict (write_functions changed, or shutdown). */
void rt_verdicts_clear(struct worker *w);
/* Classifies one statement text (len bytes) through the worker's verdict cache.  Inline: it
 * runs for every routed statement. */
static inline void rt_classify(struct worker *w, struct client *cl, char type, const char *sql,
			       size_t len, struct sqlscan_result *r)
{
	verdict_lookup(&w->verdicts, &cl->rt->verdict_memo, type == 'Q', sql, len, rt_write_funcs(w), r);
}
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
/* Status letter (I, T, E) for a ReadyForQuery pgmux writes itself: T while a held-back
 * BEGIN stands, E once that transaction hit an error pgmux gave. */
char rt_tx_status(const struct client *cl);
/* The message at scan (total bytes) was answered by pgmux: it is consumed and the answer
 * sent.  HOOK_CONSUMED, or HOOK_STOP when the client could not be written (closed). */
enum hook_rc rt_reply_out(struct client *cl, uint32_t total);
/* A message of an extended batch pgmux answers itself (rt_fake set: SET pgmux.*, a held-back
 * BEGIN, the end of an empty transaction, a refusal) until its Sync: rt_reply_out's result,
 * or HOOK_STOP when a message that cannot be in such a batch closed the client. */
enum hook_rc rt_fake_message(struct client *cl, char type, uint32_t total, uint32_t avail);
/* SET / RESET pgmux.* (r says which and its value) in a Query or a Parse: applied to the
 * session and answered (an invalid value with an error; a Parse's batch then answered by
 * rt_fake_message).  rt_reply_out's result. */
enum hook_rc rt_handle_set(struct client *cl, char type, const struct sqlscan_result *r,
			   uint32_t total);
/* A BEGIN (sql, len bytes) in a Query or Parse is held back, to go out with the transaction's
 * first statement once that chose its backend, and answered here.  rt_reply_out's result, or
 * HOOK_STOP when out of memory closed the client. */
enum hook_rc rt_defer_begin(struct client *cl, char type, uint32_t total, const char *sql,
			    size_t len);
/* The COMMIT or ROLLBACK (sql) of a transaction whose BEGIN was held back and that ran
 * nothing: answered here (ROLLBACK after an error pgmux gave).  rt_reply_out's result. */
enum hook_rc rt_end_deferred(struct client *cl, char type, uint32_t total, const char *sql,
			     size_t len);

/* ---- route_pick.c: the choice ---- */

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
/* The client starts a statement that runs over several shards in turn (a fan-out read or a
 * split write): its section's front database counts it, and a PAUSE of the section waits for
 * it (admin_cmd.c) instead of stopping it between two shards, where a RELOAD under the PAUSE
 * (pgmux-reshard) would change the shards under it.  Counted once however often called. */
void rt_span_begin(struct client *cl);
/* ... and ends it, once neither a fan-out nor a split write is left (a no-op otherwise). */
void rt_span_end(struct client *cl);
/* A server answer while the client's read fans out: merges the shards' results into one
 * (one RowDescription, every shard's rows, the summed CommandComplete).  HOOK_CONSUMED: read
 * on; HOOK_RELEASE: this shard is done (flush, release, then rt_fanout_next); HOOK_STOP: the
 * client was closed; HOOK_FORWARD: forward it. */
enum hook_rc rt_fanout_message(struct server *sv, char type, uint32_t len, bool whole);
/* Shows statement tracking (prepared.c) a server answer that routing will drop or replace, so
 * that its requests are matched and the server goes back owing nothing: HOOK_FORWARD (go
 * on), HOOK_CONSUMED (it dropped the message itself), HOOK_STOP (the server was closed). */
enum hook_rc rt_ps_note(struct server *sv, char type, uint32_t len);
/* After that release: the same batch goes to the next shard. */
void rt_fanout_next(struct client *cl);

/* ---- route_merge.c: keyless reads whose shards' answers pgmux merges ---- */

/* A keyless one-table read that needs its shards' rows combined (ORDER BY, LIMIT, aggregates,
 * GROUP BY, DISTINCT): planned (mergeplan.c), its rewritten Query put in place of the
 * client's and run on each shard in turn as a fan-out whose rows are kept.  HOOK_CONSUMED
 * (the rewritten message is read again, or a refusal was answered), HOOK_STOP. */
enum hook_rc rt_merge_start(struct client *cl, const uint8_t *h, uint32_t total, uint32_t avail);
/* A server answer while a merged read runs (rt_fanout_message's contract): rows are kept,
 * and after the last shard the merged answer goes out before its ReadyForQuery. */
enum hook_rc rt_merge_message(struct server *sv, char type, uint32_t len, bool whole);
/* The bytes a merge holds (its rows, within max_client_memory), for client_memory. */
uint64_t rt_merge_bytes(const struct route_merge *mg);
/* Frees a fan-out's merge state. */
void rt_merge_free(struct route_merge *mg);
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

/* ---- route_split.c: writes that span shards (two-phase commit, one shard at a time) ---- */

/* A Query (total bytes, whole) that shard_for placed on several shards (why SHARD_MULTI: an
 * INSERT's VALUES rows) or refused (SHARD_REFUSE: a COPY FROM STDIN), sql its text: split over
 * the shards when it may be (HOOK_CONSUMED: its first step or pgmux's CopyInResponse is under
 * way), refused when it is such a statement but may not be split here (rt_refuse's result),
 * HOOK_FORWARD when it is no such statement (the caller refuses it as before); HOOK_STOP when
 * the client was closed. */
enum hook_rc rt_split_start(struct client *cl, int why, const char *sql, size_t len, uint32_t total);
/* An unlinked client's message while a split write runs: COPY data (read into the shards'
 * buffers), or pgmux's next step (routed to its shard's primary: HOOK_FORWARD); the client's
 * own next request waits (HOOK_WAIT). */
enum hook_rc rt_split_pick(struct client *cl, char type, const uint8_t *h, uint32_t total,
			   uint32_t avail);
/* A linked client's message while a split write runs: a step's message goes out
 * (HOOK_FORWARD), the client's own waits for the answer (HOOK_WAIT). */
enum hook_rc rt_split_on_message(struct client *cl, uint32_t total);
/* A server's answer to a step: kept from the client (HOOK_CONSUMED), the step's end releases
 * the server (HOOK_RELEASE, then rt_split_next). */
enum hook_rc rt_split_server(struct server *sv, char type, uint32_t len, bool whole);
/* The server running a step was lost (route_retry_lost): a COMMIT / ROLLBACK PREPARED runs
 * again on a fresh server (at most SPLIT_RESOLVE_TRIES times), a lost PREPARE step fails the
 * write (everything prepared is rolled back).  true: the client goes on (client_on_data). */
bool rt_split_lost(struct client *cl);
/* After that release: the next step (next shard, COMMIT / ROLLBACK PREPARED), or the answer. */
void rt_split_next(struct client *cl);
/* The client leaves: its split write's buffers go; prepared transactions it leaves behind are
 * logged with their gids and the decision made. */
void rt_split_free(struct client *cl);
/* Bytes a split write holds for the client (max_client_memory). */
uint64_t rt_split_bytes(const struct client *cl);

#endif
