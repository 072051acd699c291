/* route.h: read/write routing over a [database X] section's backends: health, choice per transaction. */
#ifndef PGMUX_ROUTE_H
#define PGMUX_ROUTE_H

#include "model.h"

enum be_state { BE_UNKNOWN = 0, BE_UP, BE_DOWN };
enum be_role { ROLE_UNKNOWN = 0, ROLE_PRIMARY, ROLE_REPLICA };
/* What a client asked for with SET pgmux.role, or what a transaction was routed as. */
enum rt_pref { RT_AUTO = 0, RT_PRIMARY, RT_REPLICA };

struct monitor;
struct route_fanout;
struct sp_cache;
struct sp_client;

/* One server of a cluster: a primary or replica line, with what the monitor last saw. */
struct backend {
	struct cluster *cl;
	struct database *db;        /* its pools' database ("orders/replica0") */
	int index;                  /* in cl->be */
	int shard;
	bool cfg_replica;           /* configured as a replica */
	int weight;
	uint8_t state;              /* be_state */
	uint8_t seen_role;          /* be_role from pg_is_in_recovery() */
	uint64_t lsn;               /* primary: pg_current_wal_lsn; replica: replay LSN */
	int64_t lag_bytes, lag_ms;  /* -1 while unknown */
	uint64_t reads, writes, retries;
	uint64_t picks;             /* times chosen for a read: ties go to the fewest per weight */
	uint64_t state_since;
	struct monitor *mon;
	char last_error[160];
};

struct cluster {
	struct worker *w;
	struct database *front;     /* the name clients connect to */
	char *name;
	struct cfg_cluster cf;      /* scalar settings (strings not kept) */
	struct backend **be;
	int n_be;
	int n_shards;
	char *shard_key;            /* the key column when sharded, else NULL */
	uint64_t *shard_keyed;      /* per shard: transactions routed by a key or hint */
	int *primary;               /* per shard: index of the backend taking writes, -1: none */
	int *rd_idx;                /* replicas that may take reads, shard by shard */
	int *rd_start;              /* per shard: where its replicas start in rd_idx (n_shards + 1) */
	struct list sets;           /* route_set per user */
	struct sp_cache *sp_cache;  /* statements read for their shard keys (shardplan.c) */
	bool removed;
};

/* One user's pools over every backend of a cluster, indexed like cluster->be. */
struct route_set {
	struct list node;
	struct cluster *cl;
	struct user *user;
	char *user_name;
	struct pool **pools;
	int n;
	bool session;               /* session pooling: one route per session */
};

/* A client of a [database X] section: what routing keeps for it between messages.  Made when
 * it logs in (route_client_login, cl->rt), freed with the client; a plain [databases] client
 * has none.  Defined here, not in route_int.h, because the forwarding loops' inline tests below
 * read it.  The fields those tests read come first, to share their cache line. */
struct route_session {
	struct route_set *rs;               /* its user's pools over the section's backends */
	struct route_fanout *fo;            /* a read running on every shard in turn */
	uint8_t *retry;                     /* a read batch kept until its first answer */
	uint32_t retry_len;
	bool retry_sent;                    /* the saved batch has gone out whole */
	bool rt_prepare_only;               /* it only prepared: a Bind may move it to its shard */
	bool rt_routed;                     /* the message being read chose its link (unchecked) */
	uint8_t role_pref;                  /* SET pgmux.role */
	uint8_t rt_force;                   /* the next batch's route, for a retry */
	bool rt_primary;                    /* the current transaction must run on the primary */
	bool rt_write;                      /* ... and may write (read-your-writes asks its LSN) */
	bool rt_fake, rt_fake_err, rt_fake_end;   /* answering an extended batch locally */
	uint8_t rt_fake_tag;                /* its CommandComplete (route_pick.c, enum fake_tag) */
	bool deferred_failed;               /* that transaction hit an error pgmux gave */
	int16_t rt_be;                      /* backend of the current transaction, -1 none */
	int16_t rt_shard;                   /* its shard, -1 none */
	int16_t rt_avoid;                   /* backend that just lost this client's read, -1 none */
	uint16_t verdict_memo;              /* verdict cache slot of its last statement text */
	uint64_t ryw_lsn;                   /* its last commit's WAL position (read your writes) */
	struct server *ryw_server;          /* that position is being read there: reads wait */
	struct sp_client *sp;               /* statements it parsed, for their Binds' shard keys */
	uint8_t *deferred;                  /* a BEGIN not yet sent: its first statement routes */
	uint32_t deferred_len;
	bool has_user_id;                   /* SET pgmux.user_id */
	uint64_t user_id_hash;              /* its key's partition hash (shard_key_hash): the
					     * shard is this mod n_shards, whatever the key type */
	int32_t shard_pref;                 /* SET pgmux.shard, -1 none */
};


/* Compiles write_functions again when the setting changed (console SET). */
void route_write_funcs_update(struct worker *w);

/* Builds or updates clusters from the current config (start and reload); starts monitors. */
void route_apply_config(struct worker *w);
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
/* The loops test these inline before they call the hooks, so that a routed client whose
 * messages need nothing (no fan-out, no retry, no shard to keep) pays no call. */
static inline bool route_watches_client(const struct client *cl, char type)
{
	const struct route_session *rt = cl->rt;
	return rt->fo || rt->rt_prepare_only ||
	       (rt->rs->cl->n_shards > 1 && (type == 'Q' || type == 'P' || type == 'B' || rt->rt_routed));
}

/* Forgets the read kept for a retry (route_note_sent). */
void route_retry_drop(struct client *cl);

/* A read kept for a retry (route_pick) may run again only as a lone batch: anything sent after
 * its end cancels that.  Called for every message a routed client sends on its link. */
static inline void route_note_sent(struct client *cl, char type)
{
	struct route_session *rt = cl->rt;
	if (!rt->retry)
		return;
	if (rt->retry_sent)
		route_retry_drop(cl);
	else if (type == 'Q' || type == 'S')
		rt->retry_sent = true;
}

/* Whether a server message to the linked client cl goes through route_on_server_message:
 * false for a plain client (no session) or one with neither a fan-out nor a kept read. */
static inline bool route_watches_server(const struct client *cl)
{
	const struct route_session *rt = cl->rt;
	return rt && (rt->fo || rt->retry);
}

/* A server message to the linked client of a section: a fan-out merges its shards' answers
 * (HOOK_CONSUMED; HOOK_RELEASE when a shard is done: flush, release, then route_released);
 * a retryable read's first answers are watched (HOOK_WAIT for more bytes; HOOK_STOP when the
 * read went elsewhere).  HOOK_FORWARD: forward it as usual. */
PGMUX_MUST_CHECK enum hook_rc route_on_server_message(struct server *sv, char type, uint32_t len, bool whole);
/* The server messages of type that route_on_server_message needs whole in the buffer. */
static inline bool route_reads_whole(const struct client *cl, char type)
{
	return (type == 'E' || type == 'C' || type == 'T' || type == 't') && route_watches_server(cl);
}
/* cl's server went back to the pool after a HOOK_RELEASE: a fan-out runs on its next shard. */
void route_released(struct client *cl);
/* The server of a retryable read died before answering: true when the read was put back to
 * route again (the caller runs the client's loop), false when the client must be closed. */
bool route_retry_lost(struct client *cl);
/* Installs routing's hooks for the pool layer (worker->router). */
void route_register(struct worker *w);

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

/* Shutdown: monitors stop, clusters are freed. */
void route_shutdown(struct worker *w);

/* ---- rows for the console (SHOW BACKENDS, SHOW SHARDS), as stats_pool_row is for pools ---- */

/* One backend's SHOW BACKENDS figures.  The strings stay valid until the config changes. */
struct route_backend_row {
	const char *cluster;        /* the [database X] section's name */
	const char *name;           /* the backend's database ("orders/replica0") */
	int shard;
	const char *host;           /* "" when none is configured */
	int port;
	bool cfg_replica;           /* configured as a replica */
	bool is_primary;            /* its shard's primary now */
	int role;                   /* be_role it is routed as */
	int seen_role;              /* be_role the monitor saw */
	int state;                  /* be_state */
	int64_t lag_bytes, lag_ms;  /* -1 while unknown */
	int weight;
	/* summed over the pools of its users */
	int cl_active, cl_waiting, sv_active, sv_idle, sv_used;   /* sv_used counts sv_tested too */
	uint64_t reads, writes, retries;
	const char *last_error;
};

/* Fills *r for backend i (from 0) of a [database X] section's front database; false when db is
 * not such a front or i is past its last backend, so that a walk stops at the first false. */
bool route_backend_row(const struct database *front, int i, struct route_backend_row *r);

/* One shard's SHOW SHARDS figures: its backends' figures summed (an unsharded section has
 * only shard 0). */
struct route_shard_row {
	const char *cluster;
	int shard;
	const char *primary;        /* its primary's database, "" when none */
	int primary_state;          /* be_state of the primary; BE_DOWN when none */
	int backends, backends_up, replicas, replicas_up;
	int64_t max_lag_bytes;      /* of its replicas; 0 while none is known */
	uint64_t reads, writes;
	uint64_t keyed;             /* transactions routed here by a key or hint */
	char members[1024];         /* "name (primary, up), name (replica, down), ..." */
};

/* Fills *r for shard s (from 0) of a front database; false when db is not such a front or s
 * is past its last shard. */
bool route_shard_row(const struct database *front, int s, struct route_shard_row *r);

/* Text of a role / state for the console. */
const char *route_role_name(int role);
const char *route_state_name(int state);

#endif
