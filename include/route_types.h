/* route_types.h: routing's objects (backends, clusters, a client's route session) and the inline tests the forwarding loops make on a session before they call routing's hooks. */
#ifndef PGMUX_ROUTE_TYPES_H
#define PGMUX_ROUTE_TYPES_H

/* The engine (client.c, server.c) includes this, not route.h: it reaches routing only through
 * worker->router (struct router_ops), so that routing sits above the engine as a plug-in. */
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
	bool fo_merge;                      /* ... whose rows pgmux merges (route_merge.c) */
	bool fo_resume;                     /* a fan-out ended: read on once its server is back */
	struct database *span_db;           /* the front database whose n_spanning counts this
					     * client's fan-out or split write, NULL when none */
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
	struct client *cl;                  /* its client, set when it parks */
	struct list parked;                 /* in w->rt_parked while its message waits for the end
					     * of a PAUSE (route_pick.c); else a lone node */
	struct route_split *sw;             /* a write split over shards (route_split.c) */
	bool split_copy_in;                 /* ... that reads the client's COPY data now */
};

/* The forwarding loops test these inline before they call routing's hooks (worker->router),
 * so that a routed client whose messages need nothing (no fan-out, no retry, no shard to keep)
 * pays no call.  route_watches_client: a linked client's message of type goes to on_message
 * (cl->rt set). */
static inline bool route_watches_client(const struct client *cl, char type)
{
	const struct route_session *rt = cl->rt;
	return rt->fo || rt->sw || rt->rt_prepare_only ||
	       (rt->rs->cl->n_shards > 1 && (type == 'Q' || type == 'P' || type == 'B' || rt->rt_routed));
}

/* A read kept for a retry (route_pick) may run again only as a lone batch: anything sent after
 * its end cancels that.  Called for every message a routed client sends on its link. */
static inline void route_note_sent(struct client *cl, char type)
{
	struct route_session *rt = cl->rt;
	if (!rt->retry)
		return;
	if (rt->retry_sent)
		cl->c.w->router->retry_drop(cl);
	else if (type == 'Q' || type == 'S')
		rt->retry_sent = true;
}

/* Whether a server message to the linked client cl goes through route_on_server_message:
 * false for a plain client (no session) or one with no fan-out, kept read or split write. */
static inline bool route_watches_server(const struct client *cl)
{
	const struct route_session *rt = cl->rt;
	return rt && (rt->fo || rt->retry || rt->sw);
}

/* An unlinked client whose COPY data pgmux reads itself (a COPY split over shards): its
 * CopyData, CopyDone and CopyFail go to routing instead of being dropped. */
static inline bool route_takes_copy(const struct client *cl)
{
	return cl->rt && cl->rt->split_copy_in;
}

/* The server messages of type that route_on_server_message needs whole in the buffer. */
static inline bool route_reads_whole(const struct client *cl, char type)
{
	return ((type == 'E' || type == 'C' || type == 'T' || type == 't' ||
		 ((type == 'Z' || type == 'D') && cl->rt && cl->rt->sw)) && route_watches_server(cl)) ||
	       (type == 'D' && cl->rt && cl->rt->fo_merge);   /* a merged read keeps its rows */
}

#endif
