/* reshard_pg.c: pgmux-reshard's libpq side: connections, queries, names, row filters, catalogs. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "reshard.h"

volatile int reshard_interrupted;

double reshard_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

void reshard_sleep_ms(long ms)
{
	if (ms <= 0 || reshard_interrupted)
		return;
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !reshard_interrupted)
		;
}

char *reshard_label(const char *conninfo)
{
	char *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
	if (!opts) {
		PQfreemem(err);
		return strdup("(unreadable conninfo)");
	}
	const char *host = "", *port = "", *db = "";
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (!o->val)
			continue;
		if (!strcmp(o->keyword, "host"))
			host = o->val;
		else if (!strcmp(o->keyword, "port"))
			port = o->val;
		else if (!strcmp(o->keyword, "dbname"))
			db = o->val;
	}
	size_t n = strlen(host) + strlen(port) + strlen(db) + 4;
	char *out = malloc(n);
	if (out)
		snprintf(out, n, "%s:%s/%s", host, port, db);
	PQconninfoFree(opts);
	return out;
}

char *reshard_conninfo_nopw(const char *conninfo, char **password)
{
	char *err = NULL;
	*password = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
	if (!opts) {
		PQfreemem(err);
		return NULL;
	}
	size_t n = 1;
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (o->val)
			n += strlen(o->keyword) + 2 * strlen(o->val) + 5;
	char *out = malloc(n), *p = out;
	for (PQconninfoOption *o = opts; out && o->keyword; o++) {
		if (!o->val)
			continue;
		if (!strcmp(o->keyword, "password")) {
			free(*password);
			*password = strdup(o->val);
			continue;
		}
		p += sprintf(p, "%s%s='", p == out ? "" : " ", o->keyword);
		for (const char *v = o->val; *v; v++) {
			if (*v == '\'' || *v == '\\')
				*p++ = '\\';
			*p++ = *v;
		}
		*p++ = '\'';
		*p = 0;
	}
	if (out && p == out)
		*p = 0;
	PQconninfoFree(opts);
	return out;
}

PGconn *reshard_conn(struct reshard_shard *s)
{
	if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
		return s->conn;
	if (s->conn)
		PQfinish(s->conn);
	s->conn = PQconnectdb(s->conninfo);
	if (PQstatus(s->conn) != CONNECTION_OK) {
		/* libpq's message names host and port, never the password */
		fprintf(stderr, "pgmux-reshard: shard %d (%s): cannot connect: %s", s->index, s->label,
			PQerrorMessage(s->conn));
		PQfinish(s->conn);
		s->conn = NULL;
		return NULL;
	}
	/* our own statements must never wait behind the application's locks for ever; our
	 * commits flush the WAL (the cutover's marker: a walsender sends only flushed WAL, and
	 * with synchronous_commit off the WAL writer would make the PAUSE wait for it) */
	PGresult *r = PQexec(s->conn, "SET lock_timeout = '10s'; SET statement_timeout = 0; "
				    "SET client_min_messages = warning; SET synchronous_commit = on");
	PQclear(r);
	return s->conn;
}

void reshard_disconnect(struct reshard *rs)
{
	for (int i = 0; rs->new && i < rs->n_new; i++) {
		if (rs->new[i].conn && (i >= rs->n_old || !rs->old || rs->new[i].conn != rs->old[i].conn))
			PQfinish(rs->new[i].conn);
		rs->new[i].conn = NULL;
	}
	for (int i = 0; rs->old && i < rs->n_old; i++) {
		if (rs->old[i].conn)
			PQfinish(rs->old[i].conn);
		rs->old[i].conn = NULL;
	}
}

PGresult *reshard_query(struct reshard_shard *s, const char *sql, int n, const char *const *params)
{
	PGconn *c = reshard_conn(s);
	if (!c)
		return NULL;
	PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
		return r;
	fprintf(stderr, "pgmux-reshard: shard %d (%s): %s", s->index, s->label,
		PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r) : PQerrorMessage(c));
	PQclear(r);
	return NULL;
}

bool reshard_exec(struct reshard_shard *s, const char *sql, int n, const char *const *params)
{
	PGresult *r = reshard_query(s, sql, n, params);
	PQclear(r);
	return r != NULL;
}

char *reshard_value(struct reshard_shard *s, const char *sql, int n, const char *const *params)
{
	PGresult *r = reshard_query(s, sql, n, params);
	if (!r)
		return NULL;
	char *out = NULL;
	if (PQntuples(r) > 0 && PQnfields(r) > 0)
		out = strdup(PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
	PQclear(r);
	return out;
}

int reshard_bool(struct reshard_shard *s, const char *sql, int n, const char *const *params)
{
	char *v = reshard_value(s, sql, n, params);
	if (!v)
		return -1;
	int out = v[0] == 't';
	free(v);
	return out;
}

char *reshard_literal(const char *text)
{
	/* standard_conforming_strings is on in every supported server: double the quotes, and
	 * backslashes need no escape; E'' is not used */
	size_t n = strlen(text), q = 0;
	for (size_t i = 0; i < n; i++)
		q += text[i] == '\'';
	char *out = malloc(n + q + 3);
	if (!out)
		return NULL;
	char *p = out;
	*p++ = '\'';
	for (size_t i = 0; i < n; i++) {
		if (text[i] == '\'')
			*p++ = '\'';
		*p++ = text[i];
	}
	*p++ = '\'';
	*p = 0;
	return out;
}

void reshard_name(const struct reshard *rs, int j, char *out, size_t outlen)
{
	assert(j >= rs->n_old && j < rs->n_new);
	snprintf(out, outlen, "pgmux_reshard_%d_%d", rs->n_new, j);
}

/* The key column, quoted as an identifier (names come from the configuration, so quote). */
static char *quoted_key(const struct reshard *rs)
{
	size_t n = strlen(rs->key);
	char *out = malloc(2 * n + 3), *p = out;
	if (!out)
		return NULL;
	*p++ = '"';
	for (size_t i = 0; i < n; i++) {
		if (rs->key[i] == '"')
			*p++ = '"';
		*p++ = rs->key[i];
	}
	*p++ = '"';
	*p = 0;
	return out;
}

char *reshard_filter(const struct reshard *rs, int j)
{
	char *k = quoted_key(rs);
	if (!k)
		return NULL;
	/* the cast: an int4 key hashes as the int8 of the same value (PostgreSQL's integer hashes
	 * agree across widths), and satisfies_hash_partition wants the helper table's key type */
	size_t n = 2 * strlen(k) + 200;
	char *out = malloc(n);
	if (out)
		snprintf(out, n, "%s IS NOT NULL AND satisfies_hash_partition("
			 "'pgmux_reshard.keyspace'::regclass, %d, %d, %s::%s)",
			 k, rs->n_new, j, k, rs->key_sqltype);
	free(k);
	return out;
}

static const char TABLES_SQL[] =
	"SELECT format('%I.%I', n.nspname, c.relname), "
	"       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $1 "
	"               AND a.attnum > 0 AND NOT a.attisdropped), c.relkind = 'p' "
	"FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
	"WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
	"  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgmux_reshard') "
	"  AND n.nspname NOT LIKE 'pg\\_%' "
	"ORDER BY 1";

bool reshard_read_tables(struct reshard *rs)
{
	const char *p[1] = { rs->key };
	PGresult *r = reshard_query(&rs->old[0], TABLES_SQL, 1, p);
	if (!r)
		return false;
	int n = PQntuples(r);
	if (n > RESHARD_MAX_TABLES) {
		fprintf(stderr, "pgmux-reshard: shard 0 has %d tables, more than the %d this tool "
			"moves in one run\n", n, RESHARD_MAX_TABLES);
		PQclear(r);
		return false;
	}
	rs->tables = calloc((size_t)(n ? n : 1), sizeof(*rs->tables));
	if (!rs->tables) {
		PQclear(r);
		return false;
	}
	for (int i = 0; i < n; i++) {
		if (PQgetvalue(r, i, 1)[0] == 't' && PQgetvalue(r, i, 2)[0] == 't') {
			/* a publication filters a partitioned table's rows only through its root
			 * (publish_via_partition_root), and ctid names no row across partitions:
			 * neither is handled here, so refuse rather than move wrong */
			fprintf(stderr, "pgmux-reshard: %s is a partitioned table: this tool does not "
				"move partitioned tables\n", PQgetvalue(r, i, 0));
			PQclear(r);
			return false;
		}
		if (PQgetvalue(r, i, 1)[0] == 't') {
			if (!(rs->tables[rs->n_tables] = strdup(PQgetvalue(r, i, 0)))) {
				PQclear(r);
				return false;
			}
			rs->n_tables++;
		} else {
			printf("note: table %s has no column \"%s\": it stays where it is (not moved)\n",
			       PQgetvalue(r, i, 0), rs->key);
		}
	}
	PQclear(r);
	if (!rs->n_tables) {
		fprintf(stderr, "pgmux-reshard: shard 0 (%s) has no table with a column \"%s\": "
			"nothing to move\n", rs->old[0].label, rs->key);
		return false;
	}
	/* every old shard must hold the same sharded tables, or a move would lose some */
	for (int i = 1; i < rs->n_old; i++) {
		PGresult *o = reshard_query(&rs->old[i], TABLES_SQL, 1, p);
		if (!o)
			return false;
		int m = 0;
		bool same = true;
		for (int t = 0; t < PQntuples(o); t++) {
			if (PQgetvalue(o, t, 1)[0] != 't')
				continue;
			same &= m < rs->n_tables && !strcmp(rs->tables[m], PQgetvalue(o, t, 0));
			m++;
		}
		PQclear(o);
		if (!same || m != rs->n_tables) {
			fprintf(stderr, "pgmux-reshard: old shard %d (%s) does not hold the same tables "
				"with a column \"%s\" as shard 0: refusing (make the schemas agree first)\n",
				i, rs->old[i].label, rs->key);
			return false;
		}
	}
	return true;
}

/* Whether the replica identity of table carries the key: FULL does; DEFAULT when the
 * primary key has the column; INDEX when that index has it. */
static const char IDENT_SQL[] =
	"SELECT c.relreplident = 'f' OR EXISTS ("
	"  SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $2 "
	"  WHERE i.indrelid = c.oid AND a.attnum = ANY (i.indkey) "
	"    AND ((c.relreplident = 'd' AND i.indisprimary) OR "
	"         (c.relreplident = 'i' AND i.indisreplident))) "
	"FROM pg_class c WHERE c.oid = $1::regclass";

bool reshard_check_identity(struct reshard *rs, bool apply)
{
	bool ok = true;
	for (int i = 0; i < rs->n_old; i++) {
		for (int t = 0; t < rs->n_tables; t++) {
			const char *p[2] = { rs->tables[t], rs->key };
			int has = reshard_bool(&rs->old[i], IDENT_SQL, 2, p);
			if (has < 0)
				return false;
			if (has)
				continue;
			if (!rs->identity_full) {
				fprintf(stderr, "pgmux-reshard: table %s on old shard %d (%s): its replica "
					"identity lacks \"%s\"; a row-filtered publication of UPDATE and "
					"DELETE needs it (add the column to the primary key, or run with "
					"--replica-identity-full)\n", rs->tables[t], i, rs->old[i].label,
					rs->key);
				ok = false;
				continue;
			}
			size_t n = strlen(rs->tables[t]) + 64;
			char *sql = malloc(n);
			if (!sql)
				return false;
			snprintf(sql, n, "ALTER TABLE %s REPLICA IDENTITY FULL", rs->tables[t]);
			printf("%s shard %d: %s;\n", apply ? "run on" : "would run on", i, sql);
			if (apply && !reshard_exec(&rs->old[i], sql, 0, NULL))
				ok = false;
			free(sql);
		}
	}
	return ok;
}

bool reshard_console(PGconn *console, const char *cmd, bool quiet)
{
	PGresult *r = PQexec(console, cmd);
	ExecStatusType st = PQresultStatus(r);
	bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
	if (!ok && !quiet)
		fprintf(stderr, "pgmux-reshard: console %s: %s", cmd,
			PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r) : PQerrorMessage(console));
	PQclear(r);
	return ok;
}
