/* reshard.h: what the pgmux-reshard files share: the plan of one doubling, the steps, libpq helpers. */
#ifndef PGMUX_RESHARD_H
#define PGMUX_RESHARD_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

/* Caps on what the configurations and catalogs may hand us: every list is bounded. */
#define RESHARD_MAX_SHARDS 1024
#define RESHARD_MAX_TABLES 4096

/* The steps, in the order they run; each is recorded in the state file when finished. */
enum reshard_step {
	RS_PLAN = 0,        /* configs read and checked, catalogs read */
	RS_SCHEMA,          /* pg_dump --schema-only of each source into its new shards */
	RS_PUBLICATION,     /* helper table and one row-filtered publication per new shard */
	RS_SLOT,            /* one logical slot per new shard, on its source */
	RS_SUBSCRIPTION,    /* one subscription per new shard, copy_data = true */
	RS_SYNC,            /* every table of every subscription ready, lag small */
	RS_CUTOVER,         /* PAUSE, catch-up, sequences, new config, RELOAD, RESUME */
	RS_UNSUBSCRIBE,     /* subscriptions, slots and publications dropped */
	RS_CLEANUP,         /* moved rows deleted from the old shards, helper schema dropped */
	RS_NSTEPS
};

/* One shard of the old or the new configuration. */
struct reshard_shard {
	int index;
	char *conninfo;     /* libpq keywords; may hold a password: never print it */
	char *label;        /* host:port/dbname, for messages */
	int source;         /* new shards: the old shard their rows come from (index mod N) */
	PGconn *conn;       /* opened on first use by reshard_conn() */
};

struct reshard {
	/* options */
	const char *database, *config, *new_config, *console, *state_path, *pg_bindir, *user;
	bool dry_run, identity_full;
	bool allow_rls_bypass;          /* --allow-rls-bypass: go on when pgmux's users bypass RLS */
	long batch_rows, batch_sleep_ms, cutover_timeout_ms;
	int64_t max_lag_bytes;
	/* the plan */
	int n_old, n_new;               /* N and M: M a multiple of N, M > N */
	char *key;                      /* the key column's name (unquoted) */
	int key_type;                   /* SHARDKEY_* */
	const char *key_sqltype;        /* bigint, text or uuid: the helper table's key type */
	struct reshard_shard *old, *new; /* old[0..N-1]; new[0..M-1] (new[i] for i < N is old[i]) */
	bool new_aliased;               /* new[i < N] share old[i]'s strings */
	char **tables;                  /* sharded tables, quoted "schema"."name" */
	int n_tables;
	/* the keyless-read guard (reshard_rls.c): no_shard_key = all fans reads over every shard */
	bool guard_rls;                 /* either file has no_shard_key = all */
	char **db_users;                /* the server users of the section's backend lines */
	int n_db_users;
	bool db_users_unknown;          /* some line has no user=: clients log in as themselves */
	/* the state file */
	unsigned done;                  /* bit per enum reshard_step */
	int lock_fd;
};

extern volatile int reshard_interrupted;   /* SIGINT / SIGTERM seen */

/* reshard_pg.c */

/* The open connection to a shard (connecting on first use); NULL after printing why. */
PGconn *reshard_conn(struct reshard_shard *s);

/* Closes every shard connection the plan opened. */
void reshard_disconnect(struct reshard *rs);

/* Runs sql (with n text parameters) and returns its result when it succeeded (tuples or
 * command); NULL after printing the server's message with the shard's label. */
PGresult *reshard_query(struct reshard_shard *s, const char *sql, int n, const char *const *params);

/* As reshard_query for a command whose result is not needed; true when it succeeded. */
bool reshard_exec(struct reshard_shard *s, const char *sql, int n, const char *const *params);

/* The first column of the first row as a new string ("" for NULL), NULL on failure or no row. */
char *reshard_value(struct reshard_shard *s, const char *sql, int n, const char *const *params);

/* Whether sql (one row, one boolean column) answered true; -1 on failure. */
int reshard_bool(struct reshard_shard *s, const char *sql, int n, const char *const *params);

/* "host:port/dbname" of a conninfo, without any password; a new string or NULL. */
char *reshard_label(const char *conninfo);

/* conninfo without its password, as a new string (libpq quoting); *password gets a new copy
 * of the password or NULL.  For child programs: a password in argv shows in ps. */
char *reshard_conninfo_nopw(const char *conninfo, char **password);

/* A quoted SQL literal of text (PQescapeLiteral without a connection: standard strings). */
char *reshard_literal(const char *text);

/* The names of slot, publication and subscription for new shard j of M. */
void reshard_name(const struct reshard *rs, int j, char *out, size_t outlen);

/* The row filter of new shard j: key not null and in j's part of the hash space of M. */
char *reshard_filter(const struct reshard *rs, int j);

/* Reads the sharded tables of old shard 0 (every ordinary table with a column named like the
 * key) into rs->tables, checks the other old shards have the same, and prints the others. */
bool reshard_read_tables(struct reshard *rs);

/* Checks that each table's replica identity carries the key column (PostgreSQL requires it
 * of a row filter on a publication of UPDATE and DELETE); with identity_full, plans
 * REPLICA IDENTITY FULL for those that do not.  Prints each failure. */
bool reshard_check_identity(struct reshard *rs, bool apply);

/* Sends one console command; true when pgmux answered without an error (printed). */
bool reshard_console(PGconn *console, const char *cmd, bool quiet);

/* reshard_steps.c: each step is idempotent (it checks the catalogs before it creates), so a
 * crashed run starts the step again; with dry_run it prints what it would do. */
bool reshard_step_schema(struct reshard *rs);
bool reshard_step_publication(struct reshard *rs);
bool reshard_step_slot(struct reshard *rs);
bool reshard_step_subscription(struct reshard *rs);
bool reshard_step_sync(struct reshard *rs);
bool reshard_step_unsubscribe(struct reshard *rs);
bool reshard_step_cleanup(struct reshard *rs);

/* reshard_rls.c: between the cutover and the cleanup an old shard still holds the rows that
 * moved; a row-level security policy hides them from pgmux's users, so that a read fanned out
 * over every shard (no_shard_key = all) sees each row once.  Steps are idempotent. */

/* Before the cutover: the roles that read through pgmux must not bypass row-level security,
 * and the tool's own role must (the cleanup deletes the hidden rows).  Prints each failure;
 * false when the run must stop. */
bool reshard_rls_check(struct reshard *rs);

/* Under the cutover's PAUSE: on each old shard and moved table, records the table's RLS flags,
 * creates the policy that shows only the rows the shard keeps, and enables and forces RLS. */
bool reshard_rls_apply(struct reshard *rs);

/* Drops the policies of old shard i and restores each table's recorded RLS flags (nothing
 * when none were recorded): at the end of the cleanup, or when a cutover is abandoned. */
bool reshard_rls_remove(struct reshard *rs, int i);

/* reshard_cutover.c */

/* Whether two files hold the same bytes (false when either cannot be read). */
bool reshard_same_file_text(const char *a, const char *b);

/* The cutover under a console PAUSE; never leaves pgmux paused when it returns. */
bool reshard_step_cutover(struct reshard *rs);

/* Monotonic milliseconds, for progress lines and the pause. */
double reshard_now_ms(void);

/* Sleeps ms milliseconds unless interrupted. */
void reshard_sleep_ms(long ms);

#endif
