/* test_config.c: cmocka tests for the config module: parsing, defaults, errors, lookups, SET. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "config.h"

#ifndef TEST_DATA_DIR
#error "TEST_DATA_DIR must name tests/unit/data"
#endif

#define DATA(name) TEST_DATA_DIR "/" name
#define SRCDIR TEST_DATA_DIR "/../../.."

/* Writes `text` to a new temporary .ini file; the caller unlinks and frees the path. */
static char *write_temp(const char *text)
{
	char *path = strdup("/tmp/pgmux_test_config_XXXXXX.ini");
	assert_non_null(path);
	int fd = mkstemps(path, 4);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	return path;
}

static struct config *load_ok(const char *path)
{
	struct config *cf = NULL;
	char err[1024];
	int rc = config_load(path, &cf, err, sizeof(err));
	if (rc != 0)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(cf);
	return cf;
}

static struct config *load_text_ok(const char *text)
{
	char *path = write_temp(text);
	struct config *cf = load_ok(path);
	unlink(path);
	free(path);
	return cf;
}

/* Loads a file that must fail, and checks the message starts with "path:line: " and then
 * says `reason` somewhere. */
static void expect_error(const char *path, int line, const char *reason)
{
	struct config *cf = (struct config *)1;
	char err[1024], prefix[1024];
	assert_int_equal(config_load(path, &cf, err, sizeof(err)), -1);
	assert_null(cf);
	snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line);
	if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, reason))
		print_error("got \"%s\"\nwant prefix \"%s\" and \"%s\"\n", err, prefix, reason);
	assert_memory_equal(err, prefix, strlen(prefix));
	assert_non_null(strstr(err, reason));
}

static void expect_text_error(const char *text, int line, const char *reason)
{
	char *path = write_temp(text);
	expect_error(path, line, reason);
	unlink(path);
	free(path);
}

static void assert_value(const struct config *cf, const char *key, const char *want)
{
	char buf[512];
	assert_true(config_value_text(cf, key, buf, sizeof(buf)));
	assert_string_equal(buf, want);
}

/* ---- a good file with every section ---------------------------------------------------- */

static void test_good_general(void **state)
{
	struct config *cf = load_ok(DATA("config_good.ini"));

	/* the path is made absolute */
	assert_non_null(cf->path);
	assert_int_equal(cf->path[0], '/');
	assert_non_null(strstr(cf->path, "config_good.ini"));

	/* one of each kind */
	assert_string_equal(cf->listen_addr, "127.0.0.1, ::1");          /* CF_STR */
	assert_int_equal(cf->listen_port, 7432);                         /* CF_INT */
	assert_int_equal(cf->unix_socket_mode, 0700);                    /* octal CF_INT */
	assert_int_equal(cf->auth_type, AUTH_SCRAM);                     /* CF_AUTH */
	assert_int_equal(cf->pool_mode, POOL_TRANSACTION);               /* CF_MODE */
	assert_int_equal(cf->reserve_pool_timeout, 500000);              /* CF_USEC */
	assert_int_equal(cf->server_lifetime, 1800LL * 1000000);
	assert_int_equal(cf->query_wait_timeout, 2250000);
	assert_false(cf->log_connections);                               /* CF_BOOL */
	assert_true(cf->syslog);
	assert_false(cf->tcp_keepalive);
	assert_int_equal(cf->pkt_buf, 8192);                             /* CF_SIZE */
	assert_int_equal(cf->max_packet_size, 1024 * 1024);

	/* ';' inside a value stays, an indented line is an ordinary line, keys ignore case */
	assert_string_equal(cf->server_reset_query, "DISCARD ALL; SELECT 1");
	assert_int_equal(cf->verbose, 2);
	assert_int_equal(cf->max_client_conn, 500);
	assert_string_equal(cf->stats_users, "monitor stats");

	/* untouched keys keep their defaults */
	assert_int_equal(cf->listen_backlog, 128);
	assert_string_equal(cf->server_check_query, "<empty>");
	config_free(cf);
}

static void test_good_databases(void **state)
{
	struct config *cf = load_ok(DATA("config_good.ini"));
	const struct cfg_db *db = config_find_db(cf, "orders");
	assert_non_null(db);
	assert_string_equal(db->name, "orders");
	assert_int_equal(db->line, 5);
	assert_string_equal(db->host, "10.0.0.5");
	assert_int_equal(db->port, 6543);
	assert_string_equal(db->dbname, "orders_prod");
	assert_string_equal(db->user, "app");
	assert_string_equal(db->password, "pa ss'wo'rd");
	assert_int_equal(db->pool_size, 50);
	assert_int_equal(db->min_pool_size, 5);
	assert_int_equal(db->reserve_pool, 3);
	assert_int_equal(db->max_db_connections, 80);
	assert_int_equal(db->pool_mode, POOL_TRANSACTION);
	assert_string_equal(db->connect_query, "SELECT 1");
	assert_string_equal(db->client_encoding, "UTF8");
	assert_string_equal(db->datestyle, "ISO");
	assert_string_equal(db->timezone, "UTC");
	assert_string_equal(db->application_name, "pgmux");
	assert_string_equal(db->sslmode, "verify-full");
	assert_string_equal(db->sslrootcert, "/etc/ssl/root.crt");
	assert_string_equal(db->sslcert, "/etc/ssl/c.crt");
	assert_string_equal(db->sslkey, "/etc/ssl/c.key");
	assert_null(db->auth_user);

	/* conninfo holds only libpq keywords, and libpq reads the password back intact */
	assert_null(strstr(db->conninfo, "pool_size"));
	assert_null(strstr(db->conninfo, "datestyle"));
	assert_non_null(strstr(db->conninfo, "connect_timeout='5'"));
	char *msg = NULL;
	PQconninfoOption *opts = PQconninfoParse(db->conninfo, &msg);
	assert_non_null(opts);
	int seen = 0;
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (strcmp(o->keyword, "password") == 0) {
			assert_string_equal(o->val, "pa ss'wo'rd");
			seen++;
		}
		if (strcmp(o->keyword, "sslmode") == 0) {
			assert_string_equal(o->val, "verify-full");
			seen++;
		}
	}
	assert_int_equal(seen, 2);
	PQconninfoFree(opts);

	/* unset values: -1 / NULL; port 5432; no host means unix_socket_dir, in conninfo too */
	db = config_find_db(cf, "local");
	assert_non_null(db);
	assert_null(db->host);
	assert_int_equal(db->port, 5432);
	assert_int_equal(db->pool_size, -1);
	assert_int_equal(db->min_pool_size, -1);
	assert_int_equal(db->reserve_pool, -1);
	assert_int_equal(db->max_db_connections, -1);
	assert_int_equal(db->pool_mode, -1);
	assert_null(db->sslmode);
	assert_string_equal(db->conninfo, "host='/var/run/pgmux' dbname='postgres' port='5432'");

	/* a libpq URI followed by pgmux keys */
	db = config_find_db(cf, "uri");
	assert_non_null(db);
	assert_string_equal(db->host, "db.example.com");
	assert_int_equal(db->port, 5433);
	assert_string_equal(db->user, "bob");
	assert_string_equal(db->dbname, "inventory");
	assert_string_equal(db->sslmode, "require");
	assert_int_equal(db->pool_size, 7);

	/* a quoted name, and reserve_pool_size as an alias of reserve_pool */
	db = config_find_db(cf, "odd name");
	assert_non_null(db);
	assert_string_equal(db->host, "/var/run/postgresql");
	assert_int_equal(db->reserve_pool, 2);

	/* file order */
	const char *order[] = { "orders", "local", "uri", "odd name", "*" };
	size_t i = 0;
	for (db = cf->dbs; db; db = db->next, i++) {
		assert_true(i < sizeof(order) / sizeof(order[0]));
		assert_string_equal(db->name, order[i]);
	}
	assert_int_equal(i, 5);
	config_free(cf);
}

static void test_good_users(void **state)
{
	struct config *cf = load_ok(DATA("config_good.ini"));
	const struct cfg_user *u = config_find_user(cf, "alice");
	assert_non_null(u);
	assert_int_equal(u->pool_mode, POOL_SESSION);
	assert_int_equal(u->max_user_connections, 10);
	assert_int_equal(u->line, 12);
	u = config_find_user(cf, "bob");
	assert_non_null(u);
	assert_int_equal(u->pool_mode, -1);
	assert_int_equal(u->max_user_connections, 0);
	assert_null(config_find_user(cf, "Alice"));   /* user names keep their case */
	assert_null(config_find_user(cf, "carol"));
	config_free(cf);
}

/* Timeouts of [users] and [databases] entries: seconds (fractions allowed) stored in µs; 0
 * when unset, meaning the general key applies. */
static void test_entry_timeouts(void **state)
{
	struct config *cf = load_text_ok(
		"[databases]\nd = host=x server_lifetime=60 query_wait_timeout=0.5\ne = host=y\n"
		"[users]\nu = query_timeout=1.5 query_wait_timeout=2 idle_transaction_timeout=3 "
		"transaction_timeout=4 client_idle_timeout=5\nv = pool_mode=session\n"
		"[pgmux]\nauth_file=u\ntransaction_timeout=7\npool_idle_timeout=8\n");
	const struct cfg_db *d = config_find_db(cf, "d"), *e = config_find_db(cf, "e");
	assert_int_equal(d->server_lifetime, 60000000);
	assert_int_equal(d->query_wait_timeout, 500000);
	assert_int_equal(e->server_lifetime, 0);
	assert_int_equal(e->query_wait_timeout, 0);
	assert_false(config_db_equal(d, e));
	const struct cfg_user *u = config_find_user(cf, "u"), *v = config_find_user(cf, "v");
	assert_int_equal(u->query_timeout, 1500000);
	assert_int_equal(u->query_wait_timeout, 2000000);
	assert_int_equal(u->idle_transaction_timeout, 3000000);
	assert_int_equal(u->transaction_timeout, 4000000);
	assert_int_equal(u->client_idle_timeout, 5000000);
	assert_int_equal(v->query_timeout, 0);
	assert_int_equal(v->transaction_timeout, 0);
	assert_int_equal(cf->transaction_timeout, 7000000);
	assert_int_equal(cf->pool_idle_timeout, 8000000);
	config_free(cf);
}

/* ---- defaults come from the table ------------------------------------------------------- */

struct each_state {
	const struct config *cf;
	int n;
};

static void check_default(const char *name, const char *def, bool changeable, void *arg)
{
	struct each_state *st = arg;
	char buf[512];
	assert_true(config_value_text(st->cf, name, buf, sizeof(buf)));
	if (strcmp(buf, def) != 0)
		print_error("%s: value \"%s\", table default \"%s\"\n", name, buf, def);
	assert_string_equal(buf, def);
	st->n++;
}

static void test_defaults(void **state)
{
	struct config *cf = load_text_ok("[pgmux]\n");
	struct each_state st = { cf, 0 };
	config_each_key(check_default, &st);
	assert_true(st.n > 50);

	assert_string_equal(cf->listen_addr, "");
	assert_int_equal(cf->listen_port, 6432);
	assert_string_equal(cf->unix_socket_dir, "/tmp");
	assert_int_equal(cf->unix_socket_mode, 0777);
	assert_int_equal(cf->auth_type, AUTH_MD5);
	assert_int_equal(cf->pool_mode, POOL_SESSION);
	assert_int_equal(cf->default_pool_size, 20);
	assert_int_equal(cf->reserve_pool_timeout, 5000000);
	assert_int_equal(cf->server_lifetime, 3600LL * 1000000);
	assert_int_equal(cf->query_timeout, 0);
	assert_true(cf->log_connections);
	assert_false(cf->server_reset_query_always);
	assert_int_equal(cf->pkt_buf, 4096);
	assert_int_equal(cf->max_packet_size, 2147483647);
	assert_string_equal(cf->server_reset_query, "DISCARD ALL");
	assert_string_equal(cf->syslog_ident, "pgmux");
	assert_true(cf->saturation_warn == 0.8);
	assert_int_equal(cf->saturation_warn_after, 60000000);
	assert_string_equal(cf->stats_listen, "");
	assert_null(cf->dbs);
	assert_null(cf->users);
	config_free(cf);
}

/* ---- value kinds, case by case ----------------------------------------------------------- */

static const struct kind_case {
	const char *key, *text, *shown;     /* shown: NULL means text must be refused */
} kind_cases[] = {
	{ "syslog", "1", "1" }, { "syslog", "0", "0" }, { "syslog", "on", "1" },
	{ "syslog", "OFF", "0" }, { "syslog", "true", "1" }, { "syslog", "False", "0" },
	{ "syslog", "yes", "1" }, { "syslog", "no", "0" }, { "syslog", "2", NULL },
	{ "syslog", "", NULL }, { "syslog", "y", NULL },
	{ "listen_port", "1", "1" }, { "listen_port", "65535", "65535" },
	{ "listen_port", "0", NULL }, { "listen_port", "65536", NULL },
	{ "listen_port", "-5", NULL }, { "listen_port", "64 32", NULL },
	{ "listen_port", "", NULL }, { "listen_port", "0x10", NULL },
	{ "default_pool_size", "0", "0" }, { "default_pool_size", "-1", NULL },
	{ "default_pool_size", "99999999999999999999", NULL },
	{ "max_client_conn", "0", NULL }, { "max_client_conn", "10000", "10000" },
	{ "unix_socket_mode", "0777", "0777" }, { "unix_socket_mode", "600", "0600" },
	{ "unix_socket_mode", "0", "0000" }, { "unix_socket_mode", "0999", NULL },
	{ "unix_socket_mode", "01777", NULL },
	{ "query_timeout", "0", "0" }, { "query_timeout", "5", "5" },
	{ "query_timeout", "0.5", "0.5" }, { "query_timeout", "2.250", "2.25" },
	{ "query_timeout", "5.", "5" }, { "query_timeout", ".5", "0.5" },
	{ "query_timeout", "0.000001", "0.000001" }, { "query_timeout", "0.0000004", "0" },
	{ "query_timeout", "-1", NULL }, { "query_timeout", "5s", "5" },
	{ "query_timeout", "500ms", "0.5" }, { "query_timeout", "1.5 s", "1.5" },
	{ "query_timeout", "5min", "300" }, { "query_timeout", "5 min", "300" },
	{ "query_timeout", "2h", "7200" }, { "query_timeout", "1d", "86400" },
	{ "query_timeout", "250us", "0.00025" }, { "query_timeout", "0.5ms", "0.0005" },
	{ "query_timeout", "1us", "0.000001" }, { "query_timeout", "0.4us", "0" },
	{ "query_timeout", "5sec", NULL }, { "query_timeout", "5S", NULL },
	{ "query_timeout", "ms", NULL }, { "query_timeout", "5 m", NULL },
	{ "query_timeout", "99999999999d", NULL }, { "query_timeout", "-5ms", NULL },
	{ "query_timeout", ".", NULL }, { "query_timeout", "", NULL },
	{ "query_timeout", "1e3", NULL },
	{ "pkt_buf", "512", "512" }, { "pkt_buf", "75", "75" }, { "pkt_buf", "0", NULL }, { "pkt_buf", "4kB", "4096" },
	{ "pkt_buf", "4 KB", "4096" }, { "pkt_buf", "1MB", "1048576" },
	{ "pkt_buf", "1M", "1048576" }, { "pkt_buf", "1tb", NULL }, { "pkt_buf", "kB", NULL },
	{ "max_packet_size", "1GB", "1073741824" }, { "max_packet_size", "2GB", NULL },
	{ "pool_mode", "session", "session" }, { "pool_mode", "Transaction", "transaction" },
	{ "pool_mode", "statement", "statement" }, { "pool_mode", "sessions", NULL },
	{ "auth_type", "trust", "trust" }, { "auth_type", "any", "any" },
	{ "auth_type", "plain", "plain" }, { "auth_type", "MD5", "md5" },
	{ "auth_type", "scram-sha-256", "scram-sha-256" }, { "auth_type", "hba", "hba" },
	{ "auth_type", "cert", "cert" }, { "auth_type", "pam", NULL }, { "auth_type", "scram", NULL },
	{ "syslog_facility", "local3", "local3" }, { "syslog_facility", "kern", NULL },
	{ "admin_users", "a, b", "a, b" }, { "logfile", "", "" },
	{ "saturation_warn", "0.8", "0.8" }, { "saturation_warn", "1", "1" },
	{ "saturation_warn", "0", "0" }, { "saturation_warn", ".5", "0.5" },
	{ "saturation_warn", "0.80", "0.8" }, { "saturation_warn", "1.0", "1" },
	{ "saturation_warn", "0.123456789", "0.123456789" }, { "saturation_warn", "1.01", NULL },
	{ "saturation_warn", "2", NULL }, { "saturation_warn", "-0.1", NULL },
	{ "saturation_warn", "80%", NULL }, { "saturation_warn", "8e-1", NULL },
	{ "saturation_warn", ".", NULL }, { "saturation_warn", "", NULL },
	{ "saturation_warn", "nan", NULL }, { "saturation_warn", "0x1", NULL },
	{ "saturation_warn_after", "1", "1" }, { "saturation_warn_after", "0.5", "0.5" },
	{ "saturation_warn_after", "-1", NULL },
	{ "stats_listen", "", "" }, { "stats_listen", "127.0.0.1:9127", "127.0.0.1:9127" },
	{ "stats_listen", "localhost:1", "localhost:1" }, { "stats_listen", "[::1]:9127", "[::1]:9127" },
	{ "stats_listen", "0.0.0.0:65535", "0.0.0.0:65535" },
	{ "stats_listen", "9127", NULL }, { "stats_listen", ":9127", NULL },
	{ "stats_listen", "host:", NULL }, { "stats_listen", "host:0", NULL },
	{ "stats_listen", "host:65536", NULL }, { "stats_listen", "::1:9127", NULL },
	{ "stats_listen", "[::1]9127", NULL }, { "stats_listen", "h ost:1", NULL },
	{ "stats_listen", "host:12ab", NULL },
};

static void test_value_kinds(void **state)
{
	for (size_t i = 0; i < sizeof(kind_cases) / sizeof(kind_cases[0]); i++) {
		const struct kind_case *c = &kind_cases[i];
		char text[512];
		snprintf(text, sizeof(text), "[pgmux]\nauth_file = u.txt\n%s = %s\n", c->key, c->text);
		char *path = write_temp(text);
		struct config *cf = NULL;
		char err[1024];
		int rc = config_load(path, &cf, err, sizeof(err));
		if ((rc == 0) != (c->shown != NULL))
			print_error("case %zu: %s = \"%s\": rc %d (%s)\n", i, c->key, c->text, rc,
				    rc ? err : "accepted");
		assert_int_equal(rc == 0, c->shown != NULL);
		if (rc == 0) {
			assert_value(cf, c->key, c->shown);
		} else {
			char prefix[1024];
			snprintf(prefix, sizeof(prefix), "%s:3: invalid value", path);
			assert_memory_equal(err, prefix, strlen(prefix));
		}
		config_free(cf);
		unlink(path);
		free(path);
	}
}

/* ---- bad files: "FILE:LINE: reason" ------------------------------------------------------ */

static void test_bad_files(void **state)
{
	expect_error(DATA("config_bad_key.ini"), 4, "unknown key \"listen_prot\"");
	expect_error(DATA("config_bad_int.ini"), 3, "expected an integer");
	expect_error(DATA("config_bad_bool.ini"), 5, "expected a boolean");
	expect_error(DATA("config_bad_mode.ini"), 3, "expected session, transaction or statement");
	expect_error(DATA("config_bad_section.ini"), 4, "unknown section [pgmux_extra]");
	expect_error(DATA("config_bad_libpq.ini"), 3, "invalid connection option \"sslmdoe\"");
	expect_error(DATA("config_bad_dupdb.ini"), 4, "database \"orders\" is already defined on line 3");
}

static const struct bad_case {
	const char *text;
	int line;
	const char *reason;
} bad_cases[] = {
	{ "[pgmux]\nauth_type = pam\n", 2, "auth_type pam is not supported by pgmux yet" },
	{ "[pgmux]\nauth_type = pam\n", 2, "not supported by pgmux yet" },
	{ "[database orders]\nreplica = host=a\n", 1, "no primary line" },
	{ "[database orders]\nprimary = host=a\nprimary = host=b\n", 3, "already has a primary" },
	{ "[database orders]\nprimary = host=a\nread_routing = maybe\n", 3, "expected on or off" },
	{ "[database orders]\nprimary = host=a\nmax_replica_lag = 12 parsecs\n", 3,
	  "invalid value \"12 parsecs\" for max_replica_lag" },
	{ "[database orders]\nprimary = host=a\nread_your_writes = yes\n", 3, "expected off or lsn" },
	{ "[database orders]\nprimary = host=a weight=2\n", 2, "weight applies only to replica" },
	{ "[database orders]\nprimary = host=a\ncolour = red\n", 3, "unknown key \"colour\"" },
	{ "[database orders]\nprimary = host=a\nshards = 2\n", 3, "shards must come before" },
	{ "[database u]\nshards = 2\nshard_key = id\nshard.0.primary = host=a\n", 1,
	  "shard 1 has no primary" },
	{ "[database u]\nshards = 2\nshard.0.primary = host=a\nshard.1.primary = host=b\n", 1,
	  "needs shard_key" },
	{ "[database u]\nshards = 2\nshard_key = id\nshard.0.primary = host=a\n"
	  "shard.1.primary = host=b\nshard.2.primary = host=c\n", 6, "out of range" },
	{ "[database orders]\nprimary = host=a\n[databases]\norders = host=b\n", 4,
	  "already defined on line 1" },
	{ "[database pgmux]\nprimary = host=a\n", 1, "reserved" },
	{ "[databases]\na = host=x weight=3\n", 2, "weight applies only to replica" },
	{ "[pgmux]\nwrite_functions = nextval, (\n", 2, "invalid write_functions" },
	{ "[peers]\n1 = host=/tmp/p1\n", 1, "[peers]" },
	{ "[pgmux]\n%include other.ini\n", 2, "%include is not supported" },
	{ "listen_port = 6432\n[pgmux]\n", 1, "before any section" },
	{ "[pgmux]\nlisten_port\n", 2, "syntax error" },
	{ "[pgmux\nlisten_port = 1\n", 1, "missing \"]\"" },
	{ "[databases]\na = host='x\n", 2, "unterminated quoted value for \"host\"" },
	{ "[databases]\na = host\n", 2, "missing \"=\" after \"host\"" },
	{ "[databases]\na = port=0\n", 2, "invalid port \"0\"" },
	{ "[databases]\na = port=99999\n", 2, "out of range" },
	{ "[databases]\na = pool_size=-1\n", 2, "invalid pool_size" },
	{ "[databases]\na = pool_mode=tx\n", 2, "invalid pool_mode" },
	{ "[databases]\na = sslmode=requir\n", 2, "invalid sslmode" },
	{ "[databases]\na = postgresql://h/db?pool_size=3\n", 2, "invalid URI query parameter" },
	{ "[databases]\npgbouncer = host=x\n", 2, "reserved for the admin console" },
	{ "[databases]\npgmux = host=x\n", 2, "reserved for the admin console" },
	{ "[databases]\n\"a = host=x\n", 2, "unterminated quoted name" },
	{ "[databases]\na = host=x\nb = host=y\n\na = host=z\n", 5, "already defined on line 2" },
	{ "[users]\nu = pool_mode=session\nu = pool_mode=statement\n", 3, "user \"u\" is already defined" },
	{ "[users]\nu = pool_size=5 colour=red\n", 2, "user \"u\": unknown key \"colour\"" },
	{ "[users]\nu = max_user_connections=x\n", 2, "invalid max_user_connections" },
	{ "[users]\nu = query_timeout=soon\n", 2, "invalid query_timeout" },
	{ "[databases]\na = server_lifetime=-1\n", 2, "invalid server_lifetime" },
	{ "[pgmux]\nserver_tls_sslmode = requir\n", 2, "server_tls_sslmode" },
	{ "[pgmux]\nserver_tls_protocols = tlsv9\n", 2, "server_tls_protocols" },
	{ "[pgmux]\nclient_tls_sslmode = verify-full\n", 2, "client_tls_sslmode" },
	{ "[pgmux]\nuser = nobody-here-xyz\n", 2, "cannot switch users" },
	{ "[pgmux]\nunix_socket_dir =\n", 2, "nowhere to listen" },
	{ "[pgmux]\nlisten_addr = \nunix_socket_dir = \n", 3, "nowhere to listen" },
	{ "[pgmux]\nreserve_pool_timeout = 1sec\n", 2, "unknown time unit" },
	{ "[pgmux]\npkt_buf = 0\n", 2, "out of range" },
	{ "[pgmux]\nno_such_key = 1\n", 2, "unknown key \"no_such_key\"" },
};

/* [database X] sections: the front entry, backend entries with their roles and the section's
 * pool settings, and the routing keys. */
static void test_clusters(void **state)
{
	(void)state;
	struct config *cf = load_text_ok(
		"[pgmux]\nmonitor_interval = 0.5\n"
		"[database orders]\n"
		"primary = host=10.0.0.1 port=5432 dbname=orders\n"
		"replica = host=10.0.0.2\n"
		"replica = host=10.0.0.3 weight=2 pool_size=7\n"
		"read_routing = off\nmax_replica_lag = 1MB\nread_your_writes = lsn\n"
		"replica_fallback = off\npool_size = 5\npool_mode = transaction\n"
		"[database lagms]\nprimary = host=a\nmax_replica_lag = 500ms\n"
		"[database users]\nshards = 2\nshard_key = users.user_id\nno_shard_key = all\n"
		"shard.0.primary = host=s0\nshard.0.replica = host=s0r\nshard.1.primary = host=s1\n");
	assert_int_equal(cf->monitor_interval, 500000);
	const struct cfg_cluster *c = config_find_cluster(cf, "orders");
	assert_non_null(c);
	assert_false(c->read_routing);
	assert_false(c->replica_fallback);
	assert_int_equal(c->max_lag_bytes, 1024 * 1024);
	assert_int_equal(c->max_lag_usec, -1);
	assert_int_equal(c->read_your_writes, RYW_LSN);
	assert_int_equal(c->n_shards, 1);
	const struct cfg_db *front = config_find_db(cf, "orders");
	assert_non_null(front);
	assert_string_equal(front->cluster, "orders");
	assert_int_equal(front->shard, -1);
	const struct cfg_db *p = config_find_db(cf, "orders/primary");
	assert_non_null(p);
	assert_int_equal(p->shard, 0);
	assert_int_equal(p->replica, -1);
	assert_int_equal(p->pool_size, 5);
	assert_int_equal(p->pool_mode, POOL_TRANSACTION);
	const struct cfg_db *r0 = config_find_db(cf, "orders/replica0");
	assert_non_null(r0);
	assert_int_equal(r0->replica, 0);
	assert_int_equal(r0->weight, -1);
	/* no dbname: the section's name, in the struct and for libpq */
	assert_string_equal(r0->dbname, "orders");
	assert_non_null(strstr(r0->conninfo, "dbname='orders'"));
	const struct cfg_db *r1 = config_find_db(cf, "orders/replica1");
	assert_non_null(r1);
	assert_int_equal(r1->weight, 2);
	assert_int_equal(r1->pool_size, 7);
	c = config_find_cluster(cf, "lagms");
	assert_int_equal(c->max_lag_usec, 500000);
	assert_int_equal(c->max_lag_bytes, -1);
	assert_true(c->read_routing);
	assert_true(c->replica_fallback);
	c = config_find_cluster(cf, "users");
	assert_int_equal(c->n_shards, 2);
	assert_string_equal(c->shard_key, "users.user_id");
	assert_int_equal(c->no_shard_key, NOSHARD_ALL);
	assert_non_null(config_find_db(cf, "users/0/primary"));
	assert_non_null(config_find_db(cf, "users/0/replica0"));
	assert_int_equal(config_find_db(cf, "users/1/primary")->shard, 1);
	assert_null(config_find_cluster(cf, "nope"));
	config_free(cf);
}

/* shard_key_type: int (the default) and SQL's names for it, text and varchar, uuid; anything
 * else stops the load at its line. */
static void test_shard_key_type(void **state)
{
	(void)state;
	static const struct { const char *value; int type; } cases[] = {
		{ "int", SHARDKEY_INT }, { "BIGINT", SHARDKEY_INT }, { "int8", SHARDKEY_INT },
		{ "int4", SHARDKEY_INT }, { "integer", SHARDKEY_INT }, { "smallint", SHARDKEY_INT },
		{ "text", SHARDKEY_TEXT }, { "varchar", SHARDKEY_TEXT }, { "uuid", SHARDKEY_UUID },
		{ "UUID", SHARDKEY_UUID },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[300];
		snprintf(text, sizeof(text), "[database u]\nshards = 2\nshard_key = id\n"
			 "shard_key_type = %s\nshard.0.primary = host=a\nshard.1.primary = host=b\n",
			 cases[i].value);
		struct config *cf = load_text_ok(text);
		assert_int_equal(config_find_cluster(cf, "u")->shard_key_type, cases[i].type);
		config_free(cf);
	}
	struct config *cf = load_text_ok("[database u]\nshards = 2\nshard_key = id\n"
					  "shard.0.primary = host=a\nshard.1.primary = host=b\n");
	assert_int_equal(config_find_cluster(cf, "u")->shard_key_type, SHARDKEY_INT);
	config_free(cf);
	expect_text_error("[database u]\nshards = 2\nshard_key = id\nshard_key_type = bogus\n"
			  "shard.0.primary = host=a\nshard.1.primary = host=b\n", 4,
			  "invalid value \"bogus\" for shard_key_type: expected int, text or uuid");
	expect_text_error("[database u]\nshards = 2\nshard_key = id\nshard_key_type = char\n", 4,
			  "shard_key_type");
}

static void test_bad_cases(void **state)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
		expect_text_error(bad_cases[i].text, bad_cases[i].line, bad_cases[i].reason);
}

static void test_open_error(void **state)
{
	struct config *cf = (struct config *)1;
	char err[1024];
	assert_int_equal(config_load("/nonexistent/pgmux.ini", &cf, err, sizeof(err)), -1);
	assert_null(cf);
	assert_string_equal(err, "/nonexistent/pgmux.ini: cannot open: No such file or directory");
}

static void test_long_lines(void **state)
{
	/* a long connection string fits ... */
	size_t n = 12000;
	char *text = malloc(n + 100);
	assert_non_null(text);
	int k = snprintf(text, n + 100, "[databases]\nbig = host=x application_name=");
	memset(text + k, 'a', n - k);
	strcpy(text + n, "\n");
	struct config *cf = load_text_ok(text);
	assert_int_equal(strlen(config_find_db(cf, "big")->application_name), n - k);
	config_free(cf);
	free(text);

	/* ... and one past inih's buffer is refused, not split in two */
	n = 40000;
	text = malloc(n + 100);
	assert_non_null(text);
	k = snprintf(text, n + 100, "[pgmux]\nlisten_port = 1\nlogfile = ");
	memset(text + k, 'a', n - k);
	strcpy(text + n, "\nlisten_port = 2\n");
	expect_text_error(text, 3, "line too long");
	free(text);
}

/* ---- PgBouncer compatibility ------------------------------------------------------------- */

/* Runs config_load with stderr (where log.c writes) sent to a file, and returns the output. */
static char *load_capturing_stderr(const char *path, struct config **cf, int *rc)
{
	char cap[] = "/tmp/pgmux_test_stderr_XXXXXX";
	int fd = mkstemp(cap);
	assert_true(fd >= 0);
	fflush(stderr);
	int saved = dup(2);
	assert_true(saved >= 0);
	assert_true(dup2(fd, 2) >= 0);
	char err[1024];
	*rc = config_load(path, cf, err, sizeof(err));
	fflush(stderr);
	assert_true(dup2(saved, 2) >= 0);
	close(saved);

	off_t len = lseek(fd, 0, SEEK_END);
	char *out = calloc(1, (size_t)len + 1);
	assert_non_null(out);
	assert_int_equal(pread(fd, out, (size_t)len, 0), len);
	close(fd);
	unlink(cap);
	return out;
}

static int count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static void test_pgbouncer_alias_and_warnings(void **state)
{
	struct config *cf = NULL;
	int rc;
	const char *path = DATA("config_pgbouncer.ini");
	char *out = load_capturing_stderr(path, &cf, &rc);
	assert_int_equal(rc, 0);
	assert_non_null(cf);

	/* [PgBouncer] is read as [pgmux] */
	assert_string_equal(cf->listen_addr, "127.0.0.1");
	assert_int_equal(cf->auth_type, AUTH_MD5);
	assert_string_equal(cf->auth_file, "userlist.txt");
	assert_non_null(config_find_db(cf, "postgres"));

	/* exactly one warning per PgBouncer-only key, naming file, line and key */
	char want[1024];
	snprintf(want, sizeof(want), "%s:10: PgBouncer key \"dns_max_ttl\" is not supported by "
		 "pgmux yet; ignored", path);
	assert_int_equal(count(out, want), 1);
	assert_int_equal(count(out, "\"dns_max_ttl\""), 1);
	assert_int_equal(count(out, "\"so_reuseport\""), 1);
	/* implemented now: no warning */
	assert_int_equal(count(out, "\"server_tls_sslmode\""), 0);
	free(out);
	config_free(cf);

	/* PgBouncer keys of [databases] and [users] entries pgmux implements: no warning */
	char *tpath = write_temp("[databases]\nd = host=x load_balance_hosts=disable\n"
				 "[users]\nu = pool_size=3 pool_mode=statement\n[pgmux]\nauth_file=u\n");
	out = load_capturing_stderr(tpath, &cf, &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(count(out, "\"load_balance_hosts\""), 0);
	assert_int_equal(count(out, "\"pool_size\""), 0);
	assert_int_equal(config_find_user(cf, "u")->pool_size, 3);
	assert_int_equal(config_find_user(cf, "u")->pool_mode, POOL_STATEMENT);
	assert_null(strstr(config_find_db(cf, "d")->conninfo, "server_lifetime"));
	free(out);
	config_free(cf);
	unlink(tpath);
	free(tpath);
}

/* The per-database and per-user limits: parsed where PgBouncer has them, -1 when unset. */
static void test_limit_keys(void **state)
{
	char err[512];
	struct config *cf = NULL;
	char *path = write_temp("[databases]\n"
				"a = host=x max_db_client_connections=5 reserve_pool=2 max_db_connections=3\n"
				"b = host=x reserve_pool_size=4\n"
				"[users]\n"
				"u = pool_size=1 reserve_pool_size=2 max_user_client_connections=3 "
				"max_user_connections=4\n"
				"v =\n"
				"[pgmux]\nmax_db_client_connections = 7\nmax_user_client_connections = 8\n");
	assert_int_equal(config_load(path, &cf, err, sizeof(err)), 0);
	const struct cfg_db *a = config_find_db(cf, "a"), *b = config_find_db(cf, "b");
	assert_int_equal(a->max_db_client_connections, 5);
	assert_int_equal(a->reserve_pool, 2);
	assert_int_equal(a->max_db_connections, 3);
	assert_int_equal(b->max_db_client_connections, -1);
	assert_int_equal(b->reserve_pool, 4);
	const struct cfg_user *u = config_find_user(cf, "u"), *v = config_find_user(cf, "v");
	assert_int_equal(u->pool_size, 1);
	assert_int_equal(u->reserve_pool_size, 2);
	assert_int_equal(u->max_user_client_connections, 3);
	assert_int_equal(u->max_user_connections, 4);
	assert_int_equal(v->pool_size, -1);
	assert_int_equal(v->reserve_pool_size, -1);
	assert_int_equal(v->max_user_client_connections, -1);
	assert_int_equal(cf->max_db_client_connections, 7);
	assert_int_equal(cf->max_user_client_connections, 8);
	/* both general keys change at run time (the console's SET) */
	assert_int_equal(config_set(cf, "max_db_client_connections", "2", err, sizeof(err)), 0);
	assert_int_equal(config_set(cf, "max_user_client_connections", "0", err, sizeof(err)), 0);
	assert_int_equal(cf->max_db_client_connections, 2);
	assert_int_equal(config_set(cf, "max_user_client_connections", "-1", err, sizeof(err)), -1);
	config_free(cf);
	unlink(path);
	free(path);
	/* a count is a non-negative number */
	path = write_temp("[users]\nu = pool_size=-1\n");
	assert_int_equal(config_load(path, &cf, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "pool_size"));
	unlink(path);
	free(path);
}

static void check_not_a_table_key(const char *name, void *arg)
{
	char buf[64];
	int *n = arg;
	assert_false(config_value_text(NULL, name, buf, sizeof(buf)));
	assert_true(config_key_unsupported(name));
	(*n)++;
}

static void test_unsupported_list_disjoint(void **state)
{
	int n = 0;
	config_each_unsupported_key(check_not_a_table_key, &n);
	assert_true(n > 5);
	assert_false(config_key_unsupported("listen_port"));
	assert_false(config_key_unsupported("stats_users"));
	assert_true(config_key_unsupported("DNS_MAX_TTL"));
}

static void test_sections_and_keys_ignore_case(void **state)
{
	struct config *cf = load_text_ok("[DATABASES]\nOrders = HOST=h Pool_Size=4\n"
					 "[ pgmux ]\nLISTEN_PORT = 7000\nauth_file=x\n");
	const struct cfg_db *db = config_find_db(cf, "Orders");
	assert_non_null(db);
	assert_int_equal(db->pool_size, 4);
	assert_string_equal(db->host, "h");
	assert_int_equal(cf->listen_port, 7000);
	/* database names keep their case: "orders" is another database */
	assert_null(config_find_db(cf, "orders"));
	config_free(cf);
}

static void test_known_sections_may_be_empty(void **state)
{
	struct config *cf = load_text_ok("; only headers\n[Users]\n[databases]\n[pgbouncer]\n"
					 "[pgmux]\nauth_file = a\n");
	assert_null(cf->dbs);
	config_free(cf);
}

/* ---- lookups ------------------------------------------------------------------------------ */

static void test_find_db_fallback(void **state)
{
	struct config *cf = load_ok(DATA("config_good.ini"));
	const struct cfg_db *star = config_find_db(cf, "*");
	assert_non_null(star);
	assert_string_equal(star->host, "fallback.example.com");
	assert_ptr_equal(config_find_db(cf, "no_such_db"), star);
	assert_ptr_equal(config_find_db(cf, "Orders"), star);
	assert_string_equal(config_find_db(cf, "orders")->name, "orders");
	config_free(cf);

	cf = load_text_ok("[databases]\nonly = host=x\n[pgmux]\nauth_file = a\n");
	assert_null(config_find_db(cf, "other"));
	assert_non_null(config_find_db(cf, "only"));
	config_free(cf);
}

static void test_list_has(void **state)
{
	static const struct {
		const char *list, *user;
		bool want;
	} cases[] = {
		{ "admin", "admin", true }, { "admin,root", "root", true },
		{ "admin, root", "root", true }, { "admin root", "root", true },
		{ " ,admin,, root ,", "root", true }, { "admin\troot", "root", true },
		{ "admin", "adm", false }, { "administrator", "admin", false },
		{ "Admin", "admin", false }, { "", "admin", false }, { NULL, "admin", false },
		{ "admin", "", false }, { "a,b", "a,b", false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(config_list_has(cases[i].list, cases[i].user), cases[i].want);
}

/* ---- SHOW CONFIG text and SET ----------------------------------------------------------- */

struct dump {
	const struct config *cf;
	FILE *out;
};

static void dump_key(const char *name, const char *def, bool changeable, void *arg)
{
	struct dump *d = arg;
	char buf[512];
	assert_true(config_value_text(d->cf, name, buf, sizeof(buf)));
	fprintf(d->out, "%s = %s\n", name, buf);
}

static void compare_key(const char *name, const char *def, bool changeable, void *arg)
{
	const struct config *const *pair = arg;
	char a[512], b[512];
	assert_true(config_value_text(pair[0], name, a, sizeof(a)));
	assert_true(config_value_text(pair[1], name, b, sizeof(b)));
	if (strcmp(a, b) != 0)
		print_error("%s: \"%s\" became \"%s\"\n", name, a, b);
	assert_string_equal(a, b);
}

/* Every value written back as SHOW CONFIG shows it reads in as the same value. */
static void test_value_text_round_trip(void **state)
{
	struct config *cf = load_ok(DATA("config_good.ini"));
	char *text = NULL;
	size_t len = 0;
	struct dump d = { cf, open_memstream(&text, &len) };
	assert_non_null(d.out);
	fputs("[pgmux]\n", d.out);
	config_each_key(dump_key, &d);
	assert_int_equal(fclose(d.out), 0);

	struct config *again = load_text_ok(text);
	const struct config *pair[2] = { cf, again };
	config_each_key(compare_key, (void *)pair);
	assert_int_equal(again->reserve_pool_timeout, cf->reserve_pool_timeout);
	assert_int_equal(again->unix_socket_mode, 0700);
	free(text);
	config_free(again);
	config_free(cf);

	char buf[8];
	assert_false(config_value_text(cf = load_text_ok("[pgmux]\nauth_file=a\n"), "nope", buf,
				       sizeof(buf)));
	assert_true(config_value_text(cf, "SERVER_RESET_QUERY", buf, sizeof(buf)));
	assert_string_equal(buf, "DISCARD");  /* truncated to the buffer, still terminated */
	config_free(cf);
}

static void test_set(void **state)
{
	struct config *cf = load_ok(DATA("config_good.ini"));
	char err[512];

	assert_int_equal(config_set(cf, "pool_mode", "statement", err, sizeof(err)), 0);
	assert_int_equal(cf->pool_mode, POOL_STATEMENT);
	assert_int_equal(config_set(cf, "query_timeout", "1.5", err, sizeof(err)), 0);
	assert_int_equal(cf->query_timeout, 1500000);
	assert_value(cf, "query_timeout", "1.5");
	assert_int_equal(config_set(cf, "Default_Pool_Size", "45", err, sizeof(err)), 0);
	assert_int_equal(cf->default_pool_size, 45);
	assert_int_equal(config_set(cf, "admin_users", "root,postgres", err, sizeof(err)), 0);
	assert_string_equal(cf->admin_users, "root,postgres");
	assert_int_equal(config_set(cf, "log_stats", "off", err, sizeof(err)), 0);
	assert_false(cf->log_stats);

	/* a bad value leaves the old one */
	assert_int_equal(config_set(cf, "default_pool_size", "lots", err, sizeof(err)), -1);
	assert_string_equal(err, "invalid value \"lots\" for default_pool_size: expected an integer");
	assert_int_equal(cf->default_pool_size, 45);
	assert_int_equal(config_set(cf, "auth_type", "ldap", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not supported by pgmux yet"));
	assert_int_equal(cf->auth_type, AUTH_SCRAM);

	/* keys that only a restart can change */
	assert_int_equal(config_set(cf, "listen_port", "7000", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "listen_port cannot be changed at run time"));
	assert_int_equal(cf->listen_port, 7432);
	assert_int_equal(config_set(cf, "pkt_buf", "8192", err, sizeof(err)), -1);
	assert_int_equal(config_set(cf, "unix_socket_dir", "/x", err, sizeof(err)), -1);
	assert_string_equal(cf->unix_socket_dir, "/var/run/pgmux");

	/* the saturation keys change at run time, the endpoint's address does not */
	assert_int_equal(config_set(cf, "saturation_warn", "0.95", err, sizeof(err)), 0);
	assert_true(cf->saturation_warn == 0.95);
	assert_value(cf, "saturation_warn", "0.95");
	assert_int_equal(config_set(cf, "saturation_warn", "1.5", err, sizeof(err)), -1);
	assert_string_equal(err, "invalid value \"1.5\" for saturation_warn: out of range (0 to 1)");
	assert_true(cf->saturation_warn == 0.95);
	assert_int_equal(config_set(cf, "saturation_warn_after", "1", err, sizeof(err)), 0);
	assert_int_equal(cf->saturation_warn_after, 1000000);
	assert_int_equal(config_set(cf, "stats_listen", "127.0.0.1:9127", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "stats_listen cannot be changed at run time"));

	/* unknown, and PgBouncer-only */
	assert_int_equal(config_set(cf, "bogus", "1", err, sizeof(err)), -1);
	assert_string_equal(err, "unknown key \"bogus\"");
	assert_int_equal(config_set(cf, "dns_max_ttl", "1", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not supported by pgmux yet"));
	config_free(cf);
}

static void check_changeable_matches_set(const char *name, const char *def, bool changeable,
					 void *arg)
{
	struct config *cf = arg;
	char err[512], cur[512];
	assert_true(config_value_text(cf, name, cur, sizeof(cur)));
	int rc = config_set(cf, name, cur, err, sizeof(err));
	assert_int_equal(rc == 0, changeable);
}

static void test_set_follows_table(void **state)
{
	struct config *cf = load_ok(DATA("config_good.ini"));
	config_each_key(check_changeable_matches_set, cf);
	config_free(cf);
}

/* ---- host:port (stats_listen) ----------------------------------------------------------- */

/* host lists (host=a,b,c) and load_balance_hosts: entries, refusals, the value read back */
static void test_host_lists(void **state)
{
	(void)state;
	char h[256];
	assert_int_equal(config_host_count(NULL), 1);
	assert_int_equal(config_host_count("db1"), 1);
	assert_int_equal(config_host_count("a, b ,c"), 3);
	assert_true(config_host_entry("a, b ,c", 1, h, sizeof(h)));
	assert_string_equal(h, "b");
	assert_true(config_host_entry("a, b ,c", 2, h, sizeof(h)));
	assert_string_equal(h, "c");
	assert_false(config_host_entry("a,b", 2, h, sizeof(h)));
	assert_false(config_host_entry("abcdef", 0, h, 4));   /* does not fit: refused, not cut */

	struct config *cf = load_text_ok("[pgmux]\n[databases]\n"
					 "rr = host=10.0.0.1,10.0.0.2\n"
					 "off = host=10.0.0.1,/var/run/postgresql load_balance_hosts=disable\n"
					 "on = host=h1,h2 load_balance_hosts=round-robin\n");
	assert_false(config_lbh_disable(config_find_db(cf, "rr")));
	assert_true(config_lbh_disable(config_find_db(cf, "off")));
	assert_false(config_lbh_disable(config_find_db(cf, "on")));
	config_free(cf);
	expect_text_error("[pgmux]\n[databases]\nx = host=a load_balance_hosts=always\n", 3,
			  "expected round-robin or disable");
	expect_text_error("[pgmux]\n[databases]\nx = host=a,,b\n", 3, "host entry 2 is empty");
	expect_text_error("[pgmux]\n[databases]\nx = host=a,\n", 3, "host entry 2 is empty");
	expect_text_error("[pgmux]\n[databases]\n"
			  "x = host=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17\n", 3, "at most 16 hosts");
}

static void test_parse_hostport(void **state)
{
	static const struct {
		const char *in, *host;
		int port;               /* 0: refused */
	} cases[] = {
		{ "127.0.0.1:9127", "127.0.0.1", 9127 }, { "localhost:1", "localhost", 1 },
		{ "[::1]:80", "::1", 80 }, { "[fe80::1%eth0]:443", "fe80::1%eth0", 443 },
		{ "a:65535", "a", 65535 }, { "a:65536", NULL, 0 }, { "a:0", NULL, 0 },
		{ "a:-1", NULL, 0 }, { "a", NULL, 0 }, { ":1", NULL, 0 }, { "[]:1", NULL, 0 },
		{ "[::1]", NULL, 0 }, { "::1:80", NULL, 0 }, { "a:1:", NULL, 0 }, { "", NULL, 0 },
		{ "a b:1", NULL, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char host[64] = "unchanged", why[256] = "";
		int port = -1;
		bool ok = config_parse_hostport(cases[i].in, host, sizeof(host), &port, why, sizeof(why));
		if (ok != (cases[i].port != 0))
			print_error("case %zu \"%s\": %s (%s)\n", i, cases[i].in, ok ? "accepted" : "refused",
				    why);
		assert_int_equal(ok, cases[i].port != 0);
		if (ok) {
			assert_string_equal(host, cases[i].host);
			assert_int_equal(port, cases[i].port);
		} else {
			assert_true(why[0] != '\0');
			assert_string_equal(host, "unchanged");
		}
	}
	/* a host that does not fit, and no room for a reason */
	char tiny[4];
	int port;
	assert_false(config_parse_hostport("abcd:1", tiny, sizeof(tiny), &port, NULL, 0));
	assert_true(config_parse_hostport("abc:1", tiny, sizeof(tiny), &port, NULL, 0));
	assert_string_equal(tiny, "abc");
}

/* ---- copies of entries -------------------------------------------------------------------- */

/* The one conninfo quoting: what it writes, libpq reads back as the same value. */
static void test_put_conninfo_pair(void **state)
{
	(void)state;
	static const char *const vals[] = { "plain", "it's", "back\\slash", "'\\'", "", "a b=c" };
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		char *s = NULL;
		size_t n = 0;
		FILE *out = open_memstream(&s, &n);
		assert_non_null(out);
		config_put_conninfo_pair(out, "password", vals[i]);
		assert_int_equal(fclose(out), 0);
		assert_int_equal(s[0], 'p');
		assert_int_equal(s[strlen(s) - 1], '\'');
		char *msg = NULL;
		PQconninfoOption *opts = PQconninfoParse(s, &msg);
		assert_non_null(opts);
		const char *got = NULL;
		for (PQconninfoOption *o = opts; o->keyword; o++)
			if (strcmp(o->keyword, "password") == 0)
				got = o->val;
		assert_non_null(got);
		assert_string_equal(got, vals[i]);
		PQconninfoFree(opts);
		free(s);
	}
}

static void test_db_dup_equal(void **state)
{
	struct config *cf = load_ok(DATA("config_good.ini"));
	const struct cfg_db *orders = config_find_db(cf, "orders");
	struct cfg_db *c = config_db_dup(orders);
	assert_non_null(c);
	assert_null(c->next);
	assert_ptr_not_equal(c->password, orders->password);
	assert_string_equal(c->password, orders->password);
	assert_string_equal(c->conninfo, orders->conninfo);
	assert_true(config_db_equal(c, orders));
	config_free(cf);   /* the copy outlives the snapshot */

	struct config *cf2 = load_text_ok("[databases]\norders = host=10.0.0.5 port=6543 "
					  "pool_size=51\n[pgmux]\nauth_file=a\n");
	assert_false(config_db_equal(c, config_find_db(cf2, "orders")));
	struct cfg_db *c2 = config_db_dup(config_find_db(cf2, "orders"));
	assert_true(config_db_equal(c2, config_find_db(cf2, "orders")));
	c2->pool_size = 50;
	assert_false(config_db_equal(c2, c));   /* other fields still differ */
	config_db_free(c2);
	config_db_free(c);
	config_db_free(NULL);
	config_free(cf2);
	config_free(NULL);
}

/* ---- the shipped sample and the man page ----------------------------------------------- */

static void test_sample_config_loads(void **state)
{
	struct config *cf = load_ok(SRCDIR "/etc/pgmux.ini");
	assert_string_equal(cf->listen_addr, "127.0.0.1");
	assert_int_equal(cf->listen_port, 6432);
	assert_string_equal(cf->auth_file, "etc/userlist.txt");
	assert_int_equal(cf->pool_mode, POOL_TRANSACTION);
	assert_non_null(cf->dbs);
	config_free(cf);
}

/* The topology samples: the launch (replicas), month 6 (2 shards) and month 12 (4 shards). */
static void test_topology_samples_load(void **state)
{
	(void)state;
	struct config *cf = load_ok(SRCDIR "/etc/pgmux-replicas.ini");
	const struct cfg_cluster *c = config_find_cluster(cf, "orders");
	assert_non_null(c);
	assert_int_equal(c->n_shards, 1);
	assert_non_null(config_find_db(cf, "orders/replica1"));
	assert_int_equal(config_find_db(cf, "orders/replica1")->weight, 2);
	config_free(cf);
	const char *files[] = { SRCDIR "/etc/pgmux-shards-2.ini", SRCDIR "/etc/pgmux-shards-4.ini" };
	for (int i = 0; i < 2; i++) {
		cf = load_ok(files[i]);
		c = config_find_cluster(cf, "users");
		assert_non_null(c);
		assert_int_equal(c->n_shards, 2 * (i + 1));
		assert_string_equal(c->shard_key, "user_id");
		for (int s = 0; s < c->n_shards; s++) {
			char name[64];
			snprintf(name, sizeof(name), "users/%d/replica1", s);
			assert_non_null(config_find_db(cf, name));
		}
		config_free(cf);
	}
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);
	assert_non_null(out);
	int ch;
	while ((ch = fgetc(f)) != EOF)
		fputc(ch, out);
	fclose(f);
	assert_int_equal(fclose(out), 0);
	return buf;
}

/* True when `word` occurs in `text` with no identifier character on either side; roff
 * escapes underscores nowhere, so the name appears as written. */
static bool has_word(const char *text, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = text; (p = strstr(p, word)); p++) {
		bool before = p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '_');
		bool after = isalnum((unsigned char)p[n]) || p[n] == '_';
		if (!before && !after)
			return true;
	}
	return false;
}

static void check_documented(const char *name, const char *def, bool changeable, void *arg)
{
	char want[256];
	snprintf(want, sizeof(want), "\n.B %s\n", name);
	if (!strstr(arg, want))
		print_error("man/pgmux.ini.5 does not document %s\n", name);
	assert_non_null(strstr(arg, want));
}

static void check_listed(const char *name, void *arg)
{
	if (!has_word(arg, name))
		print_error("man/pgmux.ini.5 does not list %s\n", name);
	assert_true(has_word(arg, name));
}

static void test_man_page_covers_table(void **state)
{
	char *man = read_file(SRCDIR "/man/pgmux.ini.5");
	config_each_key(check_documented, man);
	config_each_unsupported_key(check_listed, man);
	free(man);
}

/* ---- client TLS keys ------------------------------------------------------------------------ */

static void test_tls_protocols(void **state)
{
	enum { V10 = CONFIG_TLS_V1_0, V11 = CONFIG_TLS_V1_1, V12 = CONFIG_TLS_V1_2,
	       V13 = CONFIG_TLS_V1_3 };
	static const struct {
		const char *in;
		unsigned want;          /* 0: refused */
	} cases[] = {
		{ "secure", V12 | V13 }, { "default", V12 | V13 }, { "SECURE", V12 | V13 },
		{ "all", V10 | V11 | V12 | V13 }, { "legacy", V10 | V11 | V12 | V13 },
		{ "tlsv1.2", V12 }, { "tlsv1.3", V13 }, { "TLSv1.0", V10 }, { "tlsv1.1", V11 },
		{ "tlsv1.2,tlsv1.3", V12 | V13 }, { "tlsv1.1:tlsv1.3", V11 | V13 },
		{ " tlsv1.0 , tlsv1.2 ", V10 | V12 }, { "all,!tlsv1.0", V11 | V12 | V13 },
		{ "all !tlsv1.0 !tlsv1.1", V12 | V13 }, { "secure,!tlsv1.2", V13 },
		{ "", 0 }, { " , ", 0 }, { "tlsv1.4", 0 }, { "sslv3", 0 }, { "tls1.2", 0 },
		{ "!secure", 0 }, { "secure,!secure", 0 }, { "!", 0 }, { "tlsv1.2;tlsv1.3", 0 },
		{ "averyveryverylongprotocolname", 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned mask = 0xdead;
		char why[256] = "";
		bool ok = config_tls_protocols(cases[i].in, &mask, why, sizeof(why));
		if (ok != (cases[i].want != 0) || (ok && mask != cases[i].want))
			print_error("case %zu \"%s\": %s, mask %#x (%s)\n", i, cases[i].in,
				    ok ? "accepted" : "refused", mask, why);
		assert_int_equal(ok, cases[i].want != 0);
		if (ok) {
			assert_int_equal(mask, cases[i].want);
		} else {
			assert_int_equal(mask, 0xdead);
			assert_true(why[0] != '\0');
		}
	}
}

static void test_client_tls_keys(void **state)
{
	/* defaults as PgBouncer's; the files are only named here, tls.c reads them */
	struct config *cf = load_text_ok("[pgmux]\nauth_file = u\n");
	assert_string_equal(cf->client_tls_sslmode, "disable");
	assert_string_equal(cf->client_tls_protocols, "secure");
	assert_string_equal(cf->client_tls_ciphers, "default");
	assert_string_equal(cf->client_tls_ecdhcurve, "auto");
	assert_string_equal(cf->client_tls_dheparams, "auto");
	assert_string_equal(cf->client_tls_key_file, "");
	assert_false(config_key_unsupported("client_tls_sslmode"));
	config_free(cf);

	cf = load_text_ok("[pgbouncer]\nauth_file = u\nclient_tls_sslmode = Require\n"
			  "client_tls_key_file = /k.pem\nclient_tls_cert_file = /c.pem\n"
			  "client_tls_protocols = tlsv1.3\nclient_tls_ciphers = HIGH:!aNULL\n"
			  "client_tls13_ciphers = TLS_AES_256_GCM_SHA384\n"
			  "client_tls_ecdhcurve = prime256v1\nclient_tls_dheparams = none\n");
	assert_value(cf, "client_tls_sslmode", "Require");
	assert_value(cf, "client_tls_cert_file", "/c.pem");
	assert_value(cf, "client_tls_protocols", "tlsv1.3");
	assert_value(cf, "client_tls13_ciphers", "TLS_AES_256_GCM_SHA384");
	config_free(cf);
	cf = load_text_ok("[pgmux]\nauth_file = u\nclient_tls_sslmode = verify-full\n"
			  "client_tls_key_file = k\nclient_tls_cert_file = c\nclient_tls_ca_file = ca\n");
	config_free(cf);

	/* refused: a bad mode or list, and modes without what they need, at the mode's line */
	static const struct {
		const char *text;
		int line;
		const char *reason;
	} bad[] = {
		{ "[pgmux]\nclient_tls_sslmode = sometimes\n", 2, "expected disable, allow, prefer" },
		{ "[pgmux]\nclient_tls_sslmode =\n", 2, "invalid value \"\" for client_tls_sslmode" },
		{ "[pgmux]\nclient_tls_protocols = tlsv1.2,tlsv9\n", 2, "unknown TLS protocol \"tlsv9\"" },
		{ "[pgmux]\nclient_tls_dheparams = 4096\n", 2, "expected none, auto or legacy" },
		{ "[pgmux]\nclient_tls_key_file = k\nclient_tls_sslmode = prefer\n", 3,
		  "client_tls_sslmode = prefer needs client_tls_key_file and client_tls_cert_file" },
		{ "[pgmux]\nclient_tls_sslmode = allow\nclient_tls_cert_file = c\n", 2,
		  "needs client_tls_key_file and client_tls_cert_file" },
		{ "[pgmux]\nclient_tls_sslmode = verify-ca\nclient_tls_key_file = k\n"
		  "client_tls_cert_file = c\n", 2, "verify-ca needs client_tls_ca_file" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_text_error(bad[i].text, bad[i].line, bad[i].reason);

	/* SET checks single values; whole-context checks are tls.c's (console SET) */
	char err[512];
	cf = load_text_ok("[pgmux]\nauth_file = u\n");
	assert_int_equal(config_set(cf, "client_tls_protocols", "all,!tlsv1.0", err, sizeof(err)), 0);
	assert_int_equal(config_set(cf, "client_tls_protocols", "tlsv2", err, sizeof(err)), -1);
	assert_value(cf, "client_tls_protocols", "all,!tlsv1.0");
	assert_int_equal(config_set(cf, "client_tls_sslmode", "maybe", err, sizeof(err)), -1);
	assert_value(cf, "client_tls_sslmode", "disable");
	config_free(cf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_general),
		cmocka_unit_test(test_good_databases),
		cmocka_unit_test(test_good_users),
		cmocka_unit_test(test_entry_timeouts),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_value_kinds),
		cmocka_unit_test(test_bad_files),
		cmocka_unit_test(test_bad_cases),
		cmocka_unit_test(test_clusters),
		cmocka_unit_test(test_shard_key_type),
		cmocka_unit_test(test_topology_samples_load),
		cmocka_unit_test(test_open_error),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_pgbouncer_alias_and_warnings),
		cmocka_unit_test(test_limit_keys),
		cmocka_unit_test(test_unsupported_list_disjoint),
		cmocka_unit_test(test_sections_and_keys_ignore_case),
		cmocka_unit_test(test_known_sections_may_be_empty),
		cmocka_unit_test(test_find_db_fallback),
		cmocka_unit_test(test_list_has),
		cmocka_unit_test(test_value_text_round_trip),
		cmocka_unit_test(test_set),
		cmocka_unit_test(test_set_follows_table),
		cmocka_unit_test(test_parse_hostport),
		cmocka_unit_test(test_host_lists),
		cmocka_unit_test(test_db_dup_equal),
		cmocka_unit_test(test_put_conninfo_pair),
		cmocka_unit_test(test_sample_config_loads),
		cmocka_unit_test(test_man_page_covers_table),
		cmocka_unit_test(test_tls_protocols),
		cmocka_unit_test(test_client_tls_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
