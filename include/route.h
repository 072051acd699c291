/* route.h: read/write routing over a [database X] section's backends: health, choice per transaction. */
#ifndef PGMUX_ROUTE_H
#define PGMUX_ROUTE_H

/* What the daemon and the console ask of routing; the engine reaches it through the hooks
 * route_register installs (worker->router), declared in route_int.h. */
#include "route_types.h"

/* Compiles write_functions again when the setting changed (console SET). */
void route_write_funcs_update(struct worker *w);

/* Builds or updates clusters from the current config (start and reload); starts monitors. */
void route_apply_config(struct worker *w);

/* Installs routing's hooks for the engine (worker->router, struct router_ops). */
void route_register(struct worker *w);

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
