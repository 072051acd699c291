/* model.h: the object model (worker, database, pool, client, server) that every module shares; types only. */
#ifndef PGMUX_MODEL_H
#define PGMUX_MODEL_H

#include "pgmux_config.h"

#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "config.h"
#include "freelist.h"
#include "hist.h"
#include "list.h"
#include "proto.h"
#include "scram.h"
#include "stats_fields.h"
#include "txtrack.h"

#define PGMUX_VERSION_STR "pgmux " PACKAGE_VERSION

struct worker;
struct pool;
struct client;
struct route_session;
struct server;
struct admin_session;
struct stats_state;
struct ps_cmap;
struct ps_server;
struct ps_global;
struct cluster;
struct backend;
struct route_set;
struct route_fanout;
struct sp_client;
struct retry_buf;
struct verdict_cache;
struct sqlscan_funcs;
struct tls_server;
struct namehash;
struct aq_state;
struct hba;
struct ident;

/* A receive buffer, taken from the worker's free list only while it holds bytes.
 * Bytes [start, scan) are parsed and ready to go to the peer; [scan, end) await parsing. */
struct iobuf {
	uint32_t start, scan, end;
	uint32_t cap;               /* bytes in data: the worker's bufsize, or more while a
				     * message pgmux must read whole is gathered (sbuf_reserve) */
	uint8_t data[];
};

enum conn_kind { CONN_CLIENT, CONN_SERVER, CONN_CANCEL };

struct conn;

/* An object waiting to be freed once the current callbacks are done (worker_reap). */
struct reap_item {
	struct reap_item *next;
	void (*free_fn)(struct reap_item *it);
};

/* What the socket layer (sbuf) hands a conn's owner: the owner sets the table at sbuf_init,
 * so sbuf never knows clients from servers. */
struct sbuf_ops {
	/* bytes arrived, or the peer drained what this conn had for it */
	void (*on_data)(struct conn *c);
	/* the socket failed or closed: the owner's one teardown path */
	void (*on_fail)(struct conn *c, const char *reason);
	/* either event while a TLS handshake runs */
	void (*on_handshake)(struct conn *c);
	/* writable with nothing of pgmux's own left to send: true when the owner consumed the
	 * event (a finished connect); NULL when the owner never needs it */
	bool (*on_writable)(struct conn *c);
	/* words for a closed socket ("client closed connection") */
	const char *eof_reason;
	/* frees the owner's object once the worker reaps the conn */
	void (*on_free)(struct conn *c);
};

/* On calls whose result says the connection is gone or its bytes did not go: ignoring it is
 * how a loop walks a freed buffer, so the compiler refuses to let it be ignored. */
#define PGMUX_MUST_CHECK __attribute__((warn_unused_result))

/* What a hook of the forwarding loops (routing, prepared statements) did with the message at
 * the parse position: one answer for both directions and both hooks. */
enum hook_rc {
	HOOK_FORWARD = 0,   /* nothing: the message goes on as it is */
	HOOK_CONSUMED,      /* answered, dropped or rewritten by the hook: read again at scan */
	HOOK_WAIT,          /* more bytes needed, or earlier bytes must drain first: stop reading */
	HOOK_STOP,          /* the connection closed or changed hands: the loop returns at once */
	HOOK_RELEASE,       /* server side: this exchange is over: flush, then release the server */
};

/* The socket half shared by clients and servers: events, buffers, peer. */
struct conn {
	int fd;
	uint8_t kind;
	const struct sbuf_ops *ops;
	bool rd_on;             /* ev_read is added */
	bool wr_on;             /* ev_write is added */
	bool dead;              /* torn down; memory is freed after the current callback */
	bool hold;              /* do not read: waiting for a server, or the peer is full */
	bool handshaking;       /* TLS handshake in progress: events go to the owner, not to I/O */
	bool torn;              /* got only part of a message from its peer, which went away:
				 * no message of pgmux's may follow (it would read as the rest) */
	struct event ev_read, ev_write;
	struct iobuf *in;
	struct pktbuf out;      /* pgmux's own messages for this socket; sent before forwarded data */
	struct conn *peer;      /* linked conn whose `in` bytes are sent to this one */
	uint32_t pkt_left;      /* body bytes of the current message still to stream through */
	uint64_t id;
	struct worker *w;
	struct reap_item reap;
	struct ssl_st *ssl;     /* TLS session, or NULL for plain TCP/Unix */
};

/* A replication connection (the startup parameter "replication"): none, physical (true/on/yes/1),
 * logical (database).  Such a client gets a server of its own for its whole session (repl.c). */
enum repl_kind { REPL_NONE = 0, REPL_PHYSICAL, REPL_LOGICAL };

enum client_state { CL_LOGIN, CL_WAITING_LOGIN, CL_ACTIVE, CL_WAITING, CL_ADMIN, CL_FREE };
enum server_state { SV_LOGIN, SV_IDLE, SV_ACTIVE, SV_USED, SV_TESTED, SV_FREE };

struct database {
	struct list node;           /* in w->databases */
	struct reap_item reap;      /* once removed: freed after the conns that point at it */
	struct worker *w;
	char *name;
	uint64_t id;                /* unique, increasing: the console's listing order */
	struct namehash *pools;     /* its pools by user name */
	uint64_t last_used;         /* last looked up by name or seen in use (autodb_idle_timeout) */
	struct cfg_db *cf;          /* owned copy of the entry that made it */
	bool from_wildcard;         /* made from the "*" entry */
	bool removed;               /* gone from the config; pools drain */
	/* resolved server address: of host entry host_cur when host is a list */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	bool addr_ok;
	bool resolving;
	uint64_t resolved_at;
	/* host=a,b,c (pool.c): every entry's address once resolved; the entry new connections
	 * use; how many entries failed in a row (a full round fails the pool's waiters) */
	struct db_host *hosts;
	int n_hosts, host_cur, host_fails, resolving_idx;
	struct ssl_ctx_st *ssl_ctx;  /* TLS context for its servers, made on first use */
	char *tls_sig;              /* its servers' TLS settings (tls_db_signature), to see a change */
	int n_servers;              /* across its pools, for max_db_connections */
	int n_clients;              /* logged-in clients, for max_db_client_connections */
	bool paused;                /* console PAUSE db / KILL db: no new server links until RESUME */
	bool pausing;               /* PAUSE db while statements that span shards run: new
				     * statements wait unrouted; paused once n_spanning is 0 */
	int n_spanning;             /* a sharded section's clients with a statement running over
				     * several shards in turn (a fan-out read, a split write) */
	bool disabled;              /* console DISABLE db: new client logins are refused */
	struct cluster *cluster;    /* a [database X] section's front name: routed, no servers */
	struct backend *be;         /* one server of such a section (route.h) */
	struct database *front;     /* and then that section's front name (set by route.c) */
};

/* One entry of a database's host list. */
struct db_host {
	char name[256];
	struct sockaddr_storage addr;
	socklen_t addrlen;
	bool ok;
};

/* A user name that pools log in as, or that clients logged in with. */
struct user {
	struct list node;
	char *name;
	const struct cfg_user *cf;  /* its [users] entry in w->cf, or NULL (pool_apply_config
				     * points it into each new snapshot) */
	int n_servers;              /* servers of its pools, for max_user_connections */
	int n_clients;              /* clients logged in as it, for max_user_client_connections */
};

struct pool {
	struct list node;
	struct worker *w;
	uint64_t id;                /* unique, increasing: the console's listing order */
	struct database *db;
	struct user *user;
	struct reap_item reap;      /* once removed (pool_idle_timeout): freed after its conns */
	uint64_t last_used;         /* last seen with a client or server (pool_idle_timeout) */
	struct list sv_login, sv_idle, sv_active, sv_used, sv_tested;
	struct list cl_active, cl_waiting, cl_waiting_login;
	int n_sv[SV_FREE];
	int n_cl[CL_FREE];
	/* what a new client is greeted with: the first server's ParameterStatus set */
	struct pktbuf welcome;
	struct varcache defaults;
	bool welcome_ok;
	/* server login trouble */
	bool last_connect_failed;
	uint64_t last_connect_time;
	char last_error[256];
	bool error_logged;
	/* SCRAM pass-through: a client's proof gives the ClientKey the server login needs */
	bool have_scram_keys;
	uint8_t scram_client_key[SCRAM_KEY_LEN];
	/* the secret auth_query found for the pool's user (auth.c), for server logins; or NULL */
	char *auth_secret;
	/* statements of pgmux's own waiting for an idle server (pool_run_internal_later) */
	struct pool_stmt *internal_q;
	int n_internal_q;
	/* counters: one uint64_t per STATS_FIELDS row (xact_count, query_count, bytes_recv...) */
#define POOL_COUNTER(id, member, name, total, avg, kind, prom, unit) uint64_t member;
	STATS_FIELDS(POOL_COUNTER)
#undef POOL_COUNTER
	/* distributions for the saturation figures (µs) */
	struct hist h_wait, h_query, h_xact;
	int peak_active;            /* highest sv_active since the stats timer last took it */
	int n_repl_wait;            /* replication clients in cl_waiting_login: they wait for a
				     * server of their own, never for a pooled one (repl.c) */
	bool repl_busy;             /* repl_launch is running: a nested call only asks again */
	bool repl_again;
};

struct client {
	struct conn c;
	struct list node;
	enum client_state state;
	struct pool *pool;
	struct server *link;
	struct varcache vars;
	uint32_t cancel_pid, cancel_key;
	struct client *cancel_next;
	char *user_name, *db_name;          /* from the startup packet */
	struct client_auth *auth;           /* login-time state only */
	/* what it counts against once logged in (max_db/user_client_connections), NULL: nothing;
	 * counted_console: the console's count (w->n_console_clients) */
	struct database *counted_db;
	struct user *counted_user;
	bool counted_console;
	struct txtrack tt;                  /* what is in flight on its link (txtrack.c) */
	bool discarding;                    /* pkt_left bytes are dropped, not forwarded */
	bool wait_notified;                 /* got the query_wait_notify notice for this wait */
	bool admin;                         /* may run console control commands (admin_users) */
	bool peer_admin;                    /* console user pgbouncer over the Unix socket from
					     * pgmux's own uid: an admin without a password */
	struct admin_session *console;      /* console state, for CL_ADMIN clients */
	struct ps_cmap *ps;                 /* its named prepared statements, or NULL */
	/* read/write routing (route.h): the session of a client of a [database X] section, NULL
	 * for a plain [databases] entry, so that the engine pays one pointer test for routing */
	struct route_session *rt;
	/* A Query or Parse text too big to hold streams on: the last bytes seen, so that pgmux's
	 * statement-name token is found across reads (prepared.c, ps_scan_stream). */
	bool ps_tok_scan;
	uint8_t ps_tok_keep;
	uint8_t ps_tok_tail[19];
	uint64_t connect_time, wait_start, last_active, xact_start, query_start;
	char addr[48];
	/* replication (repl.c): the kind asked for, the startup parameters its own server is
	 * opened with, and that server while it logs in (then it is the link) */
	uint8_t replication;                /* enum repl_kind */
	struct pktbuf repl_params;          /* key NUL value NUL ..., capped by the startup packet */
	struct server *repl_sv;
	bool repl_leaving;                  /* client_close has begun: no server is opened for it */
};

struct server {
	struct conn c;
	struct list node;
	enum server_state state;
	struct pool *pool;
	struct client *link;
	struct varcache vars;
	uint32_t be_pid, be_key;
	char tx;                            /* last ReadyForQuery status: I, T, E */
	uint8_t login_step;
	uint16_t internal_z;                /* ReadyForQuery owed for pgmux's own queries: swallow */
	bool close_when_idle;
	bool ready_notified;
	uint16_t cancel_pending;            /* cancels in flight against it; not reusable until 0 */
	struct server_login *login;         /* login-time state only */
	struct ps_server *ps;               /* statements it holds, requests in flight */
	bool ps_active;                     /* this link tracks prepared statements */
	struct client *ryw_client;          /* its commit-LSN query answers to this client */
	/* A replication client's own server: opened for it, linked to it alone, closed with it;
	 * never idle, never handed to anyone else.  Cleared only when one of the pair closes. */
	struct client *repl_for;
	bool replication;                   /* opened for a replication client (kept after the
					     * pair is undone: it is closed, never pooled) */
	int host_idx;                       /* the database's host entry it connected to */
	struct sockaddr_storage addr;       /* that entry's address: cancels go there too */
	socklen_t addrlen;
	uint64_t connect_time, last_used, last_check, link_time;
};

/* The console database's handlers, installed by the layer above the core (admin_register):
 * the core asks is_console_db at login and hands such a client over instead of pooling it. */
struct console_ops {
	bool (*is_console_db)(const char *db);      /* a database name the console answers */
	void (*ready)(struct client *cl);           /* a client authenticated against it */
	void (*on_data)(struct client *cl);         /* bytes arrived from a console client */
	void (*gone)(struct client *cl);            /* any closing client: frees console state */
	/* a console session holds db (a PAUSE or WAIT_CLOSE of it): it must not be freed yet */
	bool (*uses_database)(struct worker *w, const struct database *db);
};

/* Routing's hooks into the engine, installed by route_register: the engine reaches routing
 * only through them, and calls them only for clients of a [database X] section (cl->rt set;
 * login: a client of a section's front database), so that a plain client pays one pointer test
 * and routing sits above the engine as a plug-in.  Each hook's contract is its route_* function's
 * (route_int.h); the inline tests that decide whether to call them are in route_types.h. */
struct router_ops {
	/* cl was just linked to sv: pgmux's own bytes that must go first (a BEGIN it held back)
	 * are added to sv's out buffer, their ReadyForQuery counted in internal_z; true if any */
	bool (*linked)(struct client *cl, struct server *sv);
	/* sv is about to go back to the pool while its client stays (not a client leaving) */
	void (*releasing)(struct server *sv);
	/* a server of db (a backend of a section) could not connect: true when routing took the
	 * failure (the backend is down and its waiters go elsewhere) */
	bool (*backend_failed)(struct database *db, const char *msg);
	/* new servers may be opened to db (a backend of a section): false while it is down */
	bool (*may_connect)(const struct database *db);

	/* cl logged in to front, a section's front database: makes cl->rt; its first pool, NULL
	 * when out of memory (route_client_login) */
	struct pool *(*login)(struct client *cl, struct database *front);
	/* how much of a client message routing needs in the buffer (route_msg_need) */
	uint32_t (*msg_need)(const struct client *cl, char type, const uint8_t *h, uint32_t total,
			     uint32_t avail);
	/* an unlinked client's first message of a transaction: its route (route_pick) */
	enum hook_rc (*pick)(struct client *cl, char type, const uint8_t *h, uint32_t total,
			     uint32_t avail);
	/* a linked client's message that route_watches_client picked (route_on_message) */
	enum hook_rc (*on_message)(struct client *cl, char type, const uint8_t *h, uint32_t total,
				   uint32_t avail);
	/* the read kept for a retry may no longer run again (route_retry_drop) */
	void (*retry_drop)(struct client *cl);
	/* a server message that route_watches_server picked (route_on_server_message) */
	enum hook_rc (*on_server_message)(struct server *sv, char type, uint32_t len, bool whole);
	/* the server went back to the pool after a HOOK_RELEASE (route_released) */
	void (*released)(struct client *cl);
	/* the server of cl died: true when its kept read routes again (route_retry_lost) */
	bool (*retry_lost)(struct client *cl);
	/* a DataRow / the end of the commit-LSN query of sv (sv->ryw_client set: route_lsn_row,
	 * route_lsn_done) */
	void (*lsn_row)(struct server *sv, const uint8_t *body, uint32_t blen);
	void (*lsn_done)(struct server *sv);
	/* bytes routing holds for cl (route_client_bytes) */
	uint64_t (*client_bytes)(const struct client *cl);
	/* cl closes: its batches go (route_client_free); cl is reaped: cl->rt goes
	 * (route_session_free) */
	void (*client_free)(struct client *cl);
	void (*session_free)(struct client *cl);
	/* a PAUSE may have ended: clients that held their message back pick now (route_unpark) */
	void (*unpark)(struct worker *w);
};

/* The daemon's own actions that the console may ask for, installed by pgmux.c: the console
 * sits below the daemon and reaches it only through these. */
struct daemon_ops {
	/* reread the configuration file and apply it; <0 when it failed and nothing changed */
	int (*reload)(struct worker *w);
	/* start a shutdown of the given PGMUX_SHUTDOWN_* mode (pgmux_shutdown) */
	void (*shutdown)(struct worker *w, int mode);
	/* stop (true) or restart (false) accepting new connections (pgmux_hold_accepts) */
	void (*hold_accepts)(struct worker *w, bool hold);
};

/* The console's own traffic counters, one member per STATS_FIELDS row as in struct pool:
 * PgBouncer lists its console as database "pgbouncer" in SHOW STATS and counts it in TOTALS. */
struct console_counters {
#define CONSOLE_COUNTER(id, member, name, total, avg, kind, prom, unit) uint64_t member;
	STATS_FIELDS(CONSOLE_COUNTER)
#undef CONSOLE_COUNTER
};

/* The event loop and every piece of hot-path state; one per thread. */
struct worker {
	struct event_base *base;
	struct evdns_base *dns;
	struct config *cf;
	struct userlist *ul;
	struct hba *hba;                    /* auth_hba_file, when auth_type = hba (hba.c) */
	struct ident *ident;                /* auth_ident_file, or NULL */
	char *cf_path;
	struct list databases, users, pools;
	struct namehash *db_names;          /* databases by name */
	struct namehash *user_names;        /* users by name */

	struct list cl_login;
	int n_login;
	struct list cl_admin;               /* console clients (database pgmux / pgbouncer) */
	int n_admin;
	int n_console_clients;              /* logged in to the console, for max_db_client_connections */
	const struct console_ops *console;  /* the console's handlers, NULL: none registered */
	const struct router_ops *router;    /* routing's hooks (route_register) */
	struct list rt_parked;              /* routed clients whose next message waits for a
					     * PAUSE to end before it picks a shard (route_pick.c) */
	const struct daemon_ops *daemon;    /* the daemon's actions (set by pgmux.c before the
					     * first client) */
	int n_clients;
	int n_servers;
	uint64_t next_id;                   /* connection ids, one sequence for clients and servers
					     * as PgBouncer numbers its sockets */
	uint64_t next_obj_id;               /* database and pool ids (listing order) */
	uint64_t now;                       /* worker_now() at the start of the current callback */
	struct vtab vars;                   /* interned session-parameter values */
	struct ps_global *ps;               /* prepared statements by text, for all clients */
	/* cancel keys -> clients */
	struct client **cancel_tab;
	uint32_t cancel_mask;
	/* buffers */
	uint32_t bufsize;
	struct freelist buf_free;            /* spare receive buffers of bufsize (sbuf.c) */
	int n_buf_used;
	uint64_t buf_grown;                 /* bytes of receive buffers beyond bufsize, all conns */
	/* deferred frees */
	struct reap_item *reap_head;        /* dead conns, freed after the current callbacks */
	struct reap_item *reap_late;        /* then other objects they may still point at */
	struct event ev_reap;
	/* listeners */
	int lfd[16];
	struct event lev[16];
	int n_listen;
	bool listening;
	char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct event ev_janitor;
	struct event ev_accept_retry;       /* listeners come back after EMFILE */
	struct event ev_sig[5];
	int shutdown;                       /* 0, or one of PGMUX_SHUTDOWN_* */
	bool paused;
	bool pausing;                       /* PAUSE while statements span shards (database.pausing) */
	bool suspended;                     /* console SUSPEND: paused, accepts held, until RESUME */
	bool accepts_held;                  /* listeners out of the loop (pgmux_hold_accepts) */
	struct tls_server *tls_srv;         /* TLS for clients (tls.c), NULL when client_tls_sslmode = disable */
	struct stats_state *stats;          /* stats_period snapshots (stats.c), or NULL */
	struct console_counters console_stats;  /* console logins and commands (admin.c) */
	struct sqlscan_funcs *write_funcs;  /* write_functions, compiled (route.c) */
	char *write_funcs_text;             /* the text it was compiled from */
	struct freelist retry_free;         /* spare buffers for reads kept for a retry (route_retry.c) */
	struct verdict_cache *verdicts;     /* classified statement texts (route.c) */
	struct aq_state *aq;                /* auth_query's connections (auth_query.c), or NULL */
};

enum { PGMUX_SHUTDOWN_WAIT_SERVERS = 1, PGMUX_SHUTDOWN_WAIT_CLIENTS, PGMUX_SHUTDOWN_NOW };

#endif
