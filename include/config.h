/* config.h: the configuration snapshot (general keys, databases, users) that one ini file yields. */
#ifndef PGMUX_CONFIG_H
#define PGMUX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum pool_mode { POOL_SESSION = 0, POOL_TRANSACTION, POOL_STATEMENT };
enum auth_type { AUTH_TRUST = 0, AUTH_ANY, AUTH_PLAIN, AUTH_MD5, AUTH_SCRAM, AUTH_HBA, AUTH_CERT };

/* Value kinds of general keys.  CF_USEC values are written in seconds (fractions allowed, as
 * PgBouncer reads them) and stored in microseconds.  CF_SIZE accepts a plain byte count or
 * kB/MB/GB suffixes.  CF_MODE and CF_AUTH are the pool_mode / auth_type enums above.
 * CF_REAL is a fraction from 0 to 1 written in decimal ("0.8"), stored as a double.
 * CF_STR fields of a loaded snapshot are never NULL ("" when unset).  unix_socket_mode is
 * written, and shown, in octal as in PgBouncer. */
enum cf_kind { CF_STR, CF_INT, CF_BOOL, CF_USEC, CF_SIZE, CF_MODE, CF_AUTH, CF_REAL };

/* Functions whose call makes a statement a write (read routing); '*' is a glob. */
#define CONFIG_WRITE_FUNCTIONS \
	"nextval, setval, lastval, currval, pg_advisory*lock*, pg_try_advisory*lock*, " \
	"pg_notify, set_config, txid_current, txid_current_if_assigned, pg_current_xact_id, " \
	"pg_current_xact_id_if_assigned, lo_*"

/* PgBouncer 1.25's default auth_query: the user's secret, NULL once VALID UNTIL has passed
 * (which no password matches), and no row for a role that may not log in. */
#define CONFIG_AUTH_QUERY \
	"SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END " \
	"FROM pg_authid WHERE rolname=$1 AND rolcanlogin"

/* The one table of general keys: X(kind, name, default-as-written, changeable-at-runtime).
 * It drives the struct below, parsing, defaults, validation, SHOW CONFIG and the man page. */
#define CONFIG_KEYS(X) \
	X(CF_STR,  listen_addr,               "",            false) \
	X(CF_INT,  listen_port,               "6432",        false) \
	X(CF_STR,  unix_socket_dir,           "/tmp",        false) \
	X(CF_INT,  unix_socket_mode,          "0777",        false) \
	X(CF_INT,  listen_backlog,            "128",         false) \
	X(CF_AUTH, auth_type,                 "md5",         true)  \
	X(CF_STR,  auth_file,                 "",            true)  \
	X(CF_STR,  auth_user,                 "",            true)  \
	X(CF_STR,  auth_query,                CONFIG_AUTH_QUERY, true) \
	X(CF_STR,  auth_dbname,               "",            true)  \
	X(CF_STR,  auth_hba_file,             "",            true)  \
	X(CF_STR,  auth_ident_file,           "",            true)  \
	X(CF_MODE, pool_mode,                 "session",     true)  \
	X(CF_INT,  default_pool_size,         "20",          true)  \
	X(CF_INT,  min_pool_size,             "0",           true)  \
	X(CF_INT,  reserve_pool_size,         "0",           true)  \
	X(CF_USEC, reserve_pool_timeout,      "5",           true)  \
	X(CF_INT,  max_client_conn,           "100",         true)  \
	X(CF_INT,  max_db_connections,        "0",           true)  \
	X(CF_INT,  max_user_connections,      "0",           true)  \
	X(CF_INT,  max_db_client_connections, "0",           true)  \
	X(CF_INT,  max_user_client_connections, "0",         true)  \
	X(CF_STR,  server_reset_query,        "DISCARD ALL", true)  \
	X(CF_BOOL, server_reset_query_always, "0",           true)  \
	X(CF_STR,  server_check_query,        "<empty>",     true)  \
	X(CF_USEC, server_check_delay,        "30",          true)  \
	X(CF_USEC, server_lifetime,           "3600",        true)  \
	X(CF_USEC, server_idle_timeout,       "600",         true)  \
	X(CF_USEC, server_connect_timeout,    "15",          true)  \
	X(CF_USEC, server_login_retry,        "15",          true)  \
	X(CF_USEC, query_timeout,             "0",           true)  \
	X(CF_USEC, query_wait_timeout,        "120",         true)  \
	X(CF_USEC, cancel_wait_timeout,       "10",          true)  \
	X(CF_USEC, client_idle_timeout,       "0",           true)  \
	X(CF_USEC, client_login_timeout,      "60",          true)  \
	X(CF_USEC, idle_transaction_timeout,  "0",           true)  \
	X(CF_USEC, transaction_timeout,       "0",           true)  \
	X(CF_USEC, pool_idle_timeout,         "0",           true)  \
	X(CF_USEC, suspend_timeout,           "10",          true)  \
	X(CF_STR,  ignore_startup_parameters, "",            true)  \
	X(CF_STR,  logfile,                   "",            true)  \
	X(CF_STR,  pidfile,                   "",            false) \
	X(CF_BOOL, syslog,                    "0",           true)  \
	X(CF_STR,  syslog_ident,              "pgmux",       true)  \
	X(CF_STR,  syslog_facility,           "daemon",      true)  \
	X(CF_INT,  verbose,                   "0",           true)  \
	X(CF_BOOL, log_connections,           "1",           true)  \
	X(CF_BOOL, log_disconnections,        "1",           true)  \
	X(CF_BOOL, log_pooler_errors,         "1",           true)  \
	X(CF_BOOL, log_stats,                 "1",           true)  \
	X(CF_BOOL, tcp_keepalive,             "1",           true)  \
	X(CF_INT,  tcp_keepidle,              "0",           true)  \
	X(CF_INT,  tcp_keepintvl,             "0",           true)  \
	X(CF_INT,  tcp_keepcnt,               "0",           true)  \
	X(CF_SIZE, max_packet_size,           "2147483647",  true)  \
	X(CF_SIZE, pkt_buf,                   "4096",        false) \
	X(CF_INT,  sbuf_loopcnt,              "5",           true)  \
	X(CF_STR,  client_tls_sslmode,        "disable",     true)  \
	X(CF_STR,  client_tls_key_file,       "",            true)  \
	X(CF_STR,  client_tls_cert_file,      "",            true)  \
	X(CF_STR,  client_tls_ca_file,        "",            true)  \
	X(CF_STR,  client_tls_protocols,      "secure",      true)  \
	X(CF_STR,  client_tls_ciphers,        "default",     true)  \
	X(CF_STR,  client_tls13_ciphers,      "",            true)  \
	X(CF_STR,  client_tls_ecdhcurve,      "auto",        true)  \
	X(CF_STR,  client_tls_dheparams,      "auto",        true)  \
	X(CF_STR,  server_tls_sslmode,        "prefer",      true)  \
	X(CF_STR,  server_tls_ca_file,        "",            true)  \
	X(CF_STR,  server_tls_key_file,       "",            true)  \
	X(CF_STR,  server_tls_cert_file,      "",            true)  \
	X(CF_STR,  server_tls_protocols,      "secure",      true)  \
	X(CF_STR,  server_tls_ciphers,        "default",     true)  \
	X(CF_STR,  server_tls13_ciphers,      "",            true)  \
	X(CF_USEC, stats_period,              "60",          true)  \
	X(CF_REAL, saturation_warn,           "0.8",         true)  \
	X(CF_USEC, saturation_warn_after,     "60",          true)  \
	X(CF_STR,  stats_listen,              "",            false) \
	X(CF_STR,  admin_users,               "",            true)  \
	X(CF_STR,  stats_users,               "",            true)  \
	X(CF_BOOL, application_name_add_host, "0",           true)  \
	X(CF_BOOL, server_round_robin,        "0",           true)  \
	X(CF_BOOL, server_fast_close,         "0",           true)  \
	X(CF_USEC, query_wait_notify,         "5",           true)  \
	X(CF_STR,  login_notify_message,      "",            true)  \
	X(CF_BOOL, disable_pqexec,            "0",           false) \
	X(CF_INT,  max_prepared_statements,   "200",         true)  \
	X(CF_SIZE, max_client_memory,         "16777216",        true)  \
	X(CF_SIZE, max_prepared_statement_memory, "268435456",   true)  \
	X(CF_USEC, autodb_idle_timeout,       "3600",        true)  \
	X(CF_USEC, monitor_interval,          "1",           true)  \
	X(CF_STR,  monitor_user,              "",            true)  \
	X(CF_STR,  monitor_password,          "",            true)  \
	X(CF_STR,  write_functions,           CONFIG_WRITE_FUNCTIONS, true)

#define CF_CTYPE_CF_STR  char *
#define CF_CTYPE_CF_INT  int64_t
#define CF_CTYPE_CF_BOOL bool
#define CF_CTYPE_CF_USEC int64_t
#define CF_CTYPE_CF_SIZE int64_t
#define CF_CTYPE_CF_MODE int
#define CF_CTYPE_CF_AUTH int
#define CF_CTYPE_CF_REAL double

/* One [databases] line (or "*" fallback).  Integers are -1 when the entry does not set them,
 * meaning "use the general default".  Strings are NULL when unset. */
struct cfg_db {
	char *name;             /* name clients connect to; "*" for the fallback */
	char *host;             /* NULL or "/dir": Unix socket; else a name or address */
	int port;               /* 5432 when unset */
	char *dbname;           /* NULL: same as the name the client asked for */
	char *user;             /* forced server user, or NULL */
	char *password;         /* password for the forced or connecting user, or NULL */
	char *auth_user;        /* looks up users the auth_file lacks (auth_query), or NULL */
	char *auth_query;       /* this database's auth_query, or NULL: the general one */
	char *auth_dbname;      /* the entry whose server runs auth_query, or NULL */
	char *connect_query;
	char *client_encoding, *datestyle, *timezone, *application_name;
	char *sslmode;          /* libpq sslmode (NULL = "prefer" as libpq does; "disable" skips) */
	char *sslrootcert, *sslcert, *sslkey;
	/* host may be a comma-separated list (PgBouncer's host=a,b,c, at most CONFIG_MAX_HOSTS):
	 * "round-robin" (NULL: the default) gives each new server connection the next entry;
	 * "disable" keeps one entry until connecting to it fails */
	char *load_balance_hosts;
	char *conninfo;         /* the libpq keywords of the entry, as "k='v' ..." (for libpq users);
				 * always names the port, and the host (unix_socket_dir when the
				 * entry names none, as PgBouncer connects there) */
	int pool_size, min_pool_size, reserve_pool, max_db_connections, pool_mode;
	int max_db_client_connections;
	/* [database X] sections: the front entry (name X, shard -1) and one entry per backend,
	 * named "X/primary", "X/replica0" ... or "X/1/primary" when sharded (shard >= 0). */
	char *cluster;          /* the section's name, or NULL for a [databases] line */
	int shard;              /* -1: not a backend */
	int replica;            /* -1: the primary line; else the replica's number in its shard */
	int weight;             /* replica weight; -1 when unset (1) */
	int line;               /* line in the ini file, for messages */
	/* Timeouts of this database (µs); 0: unset, the general key applies (as in PgBouncer). */
	int64_t server_lifetime, query_wait_timeout;
	struct cfg_db *next;
};

enum { RYW_OFF = 0, RYW_LSN };
enum { NOSHARD_ERROR = 0, NOSHARD_SHARD0, NOSHARD_ALL };
enum { SHARDKEY_INT = 0, SHARDKEY_TEXT, SHARDKEY_UUID };

/* One [database X] section: read routing (and sharding) over the backends named above. */
struct cfg_cluster {
	char *name;
	bool read_routing;          /* on by default */
	bool replica_fallback;      /* reads go to the primary when no replica qualifies */
	int64_t max_lag_bytes;      /* -1: no byte limit */
	int64_t max_lag_usec;       /* -1: no time limit */
	int read_your_writes;       /* RYW_* */
	int n_shards;
	char *shard_key;            /* NULL unless sharded */
	int no_shard_key;           /* NOSHARD_* */
	int shard_key_type;         /* SHARDKEY_*: how key values are read and hashed */
	int pool_size, min_pool_size, reserve_pool, max_db_connections, pool_mode; /* -1: unset */
	int line;
	struct cfg_cluster *next;
};

/* One [users] line.  Integers are -1 when the line does not set them. */
struct cfg_user {
	char *name;
	int pool_mode;
	/* limits and pool sizes: the pool's user (the entry's forced user, else the login user)
	 * for the server-side ones, the login user for max_user_client_connections */
	int max_user_connections, max_user_client_connections, pool_size, reserve_pool_size;
	/* Timeouts of this user's clients (µs); 0: unset, the database's or general key applies. */
	int64_t query_timeout, query_wait_timeout, idle_transaction_timeout, transaction_timeout,
		client_idle_timeout;
	int line;
	struct cfg_user *next;
};

struct config {
#define CF_FIELD(kind, name, def, chg) CF_CTYPE_##kind name;
	CONFIG_KEYS(CF_FIELD)
#undef CF_FIELD
	char *path;                 /* absolute path of the file that was read */
	struct cfg_db *dbs;         /* in file order */
	struct cfg_user *users;     /* in file order */
	struct cfg_cluster *clusters; /* [database X] sections, in file order */
};

/* Reads and validates `path`.  On success returns a new snapshot in *out and 0.  On failure
 * returns -1 and writes "file:line: reason" into err.  PgBouncer keys pgmux does not implement
 * are accepted with one warning each through log_warn(); unknown keys are an error.  It sets
 * inih's process-wide options while it runs, so call it from one thread at a time. */
int config_load(const char *path, struct config **out, char *err, size_t errlen);

/* Frees a snapshot and everything it owns.  NULL is allowed. */
void config_free(struct config *cf);

/* The entry for `name`: an exact match, else the "*" entry, else NULL. */
const struct cfg_db *config_find_db(const struct config *cf, const char *name);

/* Entries in a host list (host=a,b,c): at most this many. */
#define CONFIG_MAX_HOSTS 16

/* The number of entries in a comma-separated host list (1 for a plain host or NULL). */
int config_host_count(const char *hosts);

/* Copies entry `idx` of a host list into out (trimmed of blanks); false when there is no such
 * entry or it does not fit. */
bool config_host_entry(const char *hosts, int idx, char *out, size_t outlen);

/* True when an entry's load_balance_hosts is "disable" (keep one host until it fails). */
bool config_lbh_disable(const struct cfg_db *d);

/* The [database X] section named `name`, or NULL. */
const struct cfg_cluster *config_find_cluster(const struct config *cf, const char *name);

/* The [users] entry for `name`, or NULL. */
const struct cfg_user *config_find_user(const struct config *cf, const char *name);

/* True when `user` appears in a comma/space separated list such as admin_users. */
bool config_list_has(const char *list, const char *user);

/* Writes a key's current value as text (for SHOW CONFIG); returns false for unknown keys. */
bool config_value_text(const struct config *cf, const char *key, char *buf, size_t len);

/* TLS protocol versions, as a set (client_tls_protocols). */
enum {
	CONFIG_TLS_V1_0 = 1 << 0,
	CONFIG_TLS_V1_1 = 1 << 1,
	CONFIG_TLS_V1_2 = 1 << 2,
	CONFIG_TLS_V1_3 = 1 << 3,
};

/* Parses a protocol list as PgBouncer writes it: tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3 and the
 * shortcuts secure and default (1.2 and 1.3), all and legacy (all four), separated by commas,
 * colons or spaces, case-insensitive; "!name" takes versions out again.  On success stores the
 * set (never empty) in *mask and returns true; else false with a reason in why. */
bool config_tls_protocols(const char *text, unsigned *mask, char *why, size_t whylen);

/* Splits "host:port" (or "[v6addr]:port") as stats_listen takes it: host is copied without
 * brackets into host[hostlen], the port (1..65535) into *port.  False, with a reason in why
 * when why is not NULL, for anything else (an empty host, no port, a host too long). */
bool config_parse_hostport(const char *s, char *host, size_t hostlen, int *port, char *why,
			   size_t whylen);

/* Walks the key table: calls fn(name, default, changeable, arg) for each general key. */
void config_each_key(void (*fn)(const char *name, const char *def, bool changeable, void *arg),
		     void *arg);

/* Sets one changeable general key on a snapshot, validating it; 0 or -1 with err filled. */
int config_set(struct config *cf, const char *key, const char *value, char *err, size_t errlen);

const char *config_pool_mode_name(int mode);
const char *config_auth_type_name(int type);

/* True when `name` is a database the console answers ("pgbouncer", "pgmux"): such a name
 * can never be an auth_dbname. */
bool config_is_console_name(const char *name);

/* True for a PgBouncer general key that pgmux does not implement yet: a file may name it (one
 * warning, no effect; refused only where ignoring it would weaken security, such as
 * user = someone-else), but config_set refuses it. */
bool config_key_unsupported(const char *name);

/* Walks those PgBouncer-only general keys: calls fn(name, arg) for each. */
void config_each_unsupported_key(void (*fn)(const char *name, void *arg), void *arg);

/* A deep copy of one [databases] entry with next = NULL, owned by the caller (free it with
 * config_db_free), or NULL when out of memory. */
struct cfg_db *config_db_dup(const struct cfg_db *db);

/* Frees one entry made by config_db_dup (not the rest of its list).  NULL is allowed. */
void config_db_free(struct cfg_db *db);

/* True when two entries connect the same way and have the same pool settings (names and
 * line numbers are not compared), so a reload can keep the pools of an unchanged entry. */
bool config_db_equal(const struct cfg_db *a, const struct cfg_db *b);

/* Writes one libpq pair, key='value', to out with libpq's quoting (a backslash before ' and
 * \), so that any value reads back as itself; no space before or after.  The one place that
 * quotes conninfo values: entries, cluster backends and the monitor's credentials use it. */
void config_put_conninfo_pair(FILE *out, const char *key, const char *val);

#endif
