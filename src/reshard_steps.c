/* reshard_steps.c: pgmux-reshard's steps before and after the cutover, each safe to run again. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "reshard.h"

/* Runs sql on shard s, or prints it under --dry-run.  Statements built here hold only names
 * this tool made and quoted identifiers and literals. */
static bool run_sql(struct reshard *rs, struct reshard_shard *s, const char *sql)
{
	if (rs->dry_run) {
		printf("  on %s shard %d (%s): %s;\n", s->index < rs->n_old ? "old" : "new", s->index,
		       s->label, sql);
		return true;
	}
	return reshard_exec(s, sql, 0, NULL);
}

/* Whether a row exists for `sql` with one parameter; -1 on failure. */
static int exists1(struct reshard_shard *s, const char *sql, const char *param)
{
	const char *p[1] = { param };
	return reshard_bool(s, sql, 1, p);
}

/* ---- schema --------------------------------------------------------------------------------- */

static const char *tool(const struct reshard *rs, const char *name, char *buf, size_t len)
{
	if (!rs->pg_bindir)
		return name;
	snprintf(buf, len, "%s/%s", rs->pg_bindir, name);
	return buf;
}

/* Runs argv with stdin and stdout as given, the password (if any) in PGPASSWORD: never in
 * argv, where ps shows it.  The child's pid, or -1. */
static pid_t spawn(const char *const *argv, int in, int out, const char *password, int close1,
		   int close2)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	if (in >= 0)
		dup2(in, 0);
	if (out >= 0)
		dup2(out, 1);
	if (close1 >= 0)
		close(close1);
	if (close2 >= 0)
		close(close2);
	if (password)
		setenv("PGPASSWORD", password, 1);
	execvp(argv[0], (char *const *)argv);
	fprintf(stderr, "pgmux-reshard: cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* pg_dump --schema-only of src | psql --single-transaction into dst, without a shell (so that
 * no conninfo is ever parsed by one).  The helper schema and publications stay behind. */
static bool copy_schema(struct reshard *rs, struct reshard_shard *src, struct reshard_shard *dst)
{
	char dump[4096], psql[4096];
	char *spw = NULL, *dpw = NULL;
	char *sci = reshard_conninfo_nopw(src->conninfo, &spw);
	char *dci = reshard_conninfo_nopw(dst->conninfo, &dpw);
	const char *dump_argv[] = { tool(rs, "pg_dump", dump, sizeof(dump)), "--schema-only",
		"--no-publications", "--no-subscriptions", "--exclude-schema=pgmux_reshard",
		"-d", sci, NULL };
	const char *psql_argv[] = { tool(rs, "psql", psql, sizeof(psql)), "-X", "-q", "-v",
		"ON_ERROR_STOP=1", "--single-transaction", "-d", dci, "-f", "-", NULL };
	int fds[2] = { -1, -1 };
	/* the dump's own SELECTs (set_config) would print rows: psql's stdout goes nowhere,
	 * errors still reach stderr */
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	bool ok = sci && dci && null >= 0 && pipe(fds) == 0;
	pid_t a = -1, b = -1;
	if (ok) {
		a = spawn(dump_argv, -1, fds[1], spw, fds[0], fds[1]);
		b = a < 0 ? -1 : spawn(psql_argv, fds[0], null, dpw, fds[0], fds[1]);
	}
	if (fds[0] >= 0) {
		close(fds[0]);
		close(fds[1]);
	}
	if (null >= 0)
		close(null);
	int sa = 1, sb = 1;
	if (a > 0)
		waitpid(a, &sa, 0);
	if (b > 0)
		waitpid(b, &sb, 0);
	ok = ok && a > 0 && b > 0 && WIFEXITED(sa) && WEXITSTATUS(sa) == 0 && WIFEXITED(sb) &&
	     WEXITSTATUS(sb) == 0;
	if (!ok)
		fprintf(stderr, "pgmux-reshard: copying the schema of shard %d (%s) into shard %d (%s) "
			"failed (pg_dump status %d, psql status %d); nothing was committed\n",
			src->index, src->label, dst->index, dst->label,
			WIFEXITED(sa) ? WEXITSTATUS(sa) : -1, WIFEXITED(sb) ? WEXITSTATUS(sb) : -1);
	free(sci);
	free(dci);
	free(spw);
	free(dpw);
	return ok;
}

bool reshard_step_schema(struct reshard *rs)
{
	for (int j = rs->n_old; j < rs->n_new; j++) {
		struct reshard_shard *dst = &rs->new[j], *src = &rs->old[rs->new[j].source];
		if (rs->dry_run) {
			printf("  pg_dump --schema-only (no publications, subscriptions or pgmux_reshard) "
			       "of old shard %d (%s) | psql --single-transaction into new shard %d (%s)\n",
			       src->index, src->label, j, dst->label);
			continue;
		}
		int have = 0;
		for (int t = 0; t < rs->n_tables; t++) {
			int e = exists1(dst, "SELECT to_regclass($1) IS NOT NULL", rs->tables[t]);
			if (e < 0)
				return false;
			have += e;
		}
		if (have == rs->n_tables) {
			printf("schema: new shard %d (%s) already has the %d tables\n", j, dst->label, have);
			continue;
		}
		if (have) {
			fprintf(stderr, "pgmux-reshard: new shard %d (%s) has %d of the %d sharded tables: "
				"refusing to copy a schema over a partial one (drop them, or create the "
				"rest by hand)\n", j, dst->label, have, rs->n_tables);
			return false;
		}
		printf("schema: copying old shard %d (%s) into new shard %d (%s)\n", src->index,
		       src->label, j, dst->label);
		fflush(stdout);
		if (!copy_schema(rs, src, dst))
			return false;
	}
	return true;
}

/* ---- publications, slots, subscriptions ------------------------------------------------------ */

/* One row whose counter the cutover bumps on each old shard: replication applies commits in
 * order, so a new shard that shows the bumped value has applied every commit before it. */
static const char MARKER_TABLE[] =
	"CREATE TABLE IF NOT EXISTS pgmux_reshard.marker (id int PRIMARY KEY, n bigint NOT NULL)";

bool reshard_step_publication(struct reshard *rs)
{
	char sql[512];
	for (int i = 0; i < rs->n_old; i++) {
		struct reshard_shard *s = &rs->old[i];
		if (!run_sql(rs, s, "CREATE SCHEMA IF NOT EXISTS pgmux_reshard"))
			return false;
		snprintf(sql, sizeof(sql), "CREATE TABLE IF NOT EXISTS pgmux_reshard.keyspace (k %s) "
			 "PARTITION BY HASH (k)", rs->key_sqltype);
		if (!run_sql(rs, s, sql) || !run_sql(rs, s, MARKER_TABLE) ||
		    !run_sql(rs, s, "INSERT INTO pgmux_reshard.marker VALUES (0, 0) "
			     "ON CONFLICT DO NOTHING"))
			return false;
	}
	if (rs->identity_full && !reshard_check_identity(rs, !rs->dry_run))
		return false;
	for (int j = rs->n_old; j < rs->n_new; j++) {
		struct reshard_shard *src = &rs->old[rs->new[j].source];
		char name[64];
		reshard_name(rs, j, name, sizeof(name));
		if (!rs->dry_run) {
			int e = exists1(src, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
					name);
			if (e < 0)
				return false;
			if (e) {
				printf("publication: %s exists on old shard %d\n", name, src->index);
				continue;
			}
		}
		char *filter = reshard_filter(rs, j);
		size_t n = 128;
		for (int t = 0; t < rs->n_tables; t++)
			n += strlen(rs->tables[t]) + strlen(filter) + 16;
		char *create = malloc(n);
		if (!filter || !create) {
			free(filter);
			free(create);
			return false;
		}
		/* the marker table goes whole: the cutover's proof of catch-up */
		int off = snprintf(create, n, "CREATE PUBLICATION %s FOR TABLE pgmux_reshard.marker", name);
		for (int t = 0; t < rs->n_tables; t++)
			off += snprintf(create + off, n - (size_t)off, ", %s WHERE (%s)", rs->tables[t],
					filter);
		assert((size_t)off < n);
		bool ok = run_sql(rs, src, create);
		free(create);
		free(filter);
		if (!ok)
			return false;
		if (!rs->dry_run)
			printf("publication: %s created on old shard %d (%s)\n", name, src->index, src->label);
	}
	return true;
}

bool reshard_step_slot(struct reshard *rs)
{
	for (int j = rs->n_old; j < rs->n_new; j++) {
		struct reshard_shard *src = &rs->old[rs->new[j].source];
		char name[64], sql[160];
		reshard_name(rs, j, name, sizeof(name));
		/* the slot first, on the source: CREATE SUBSCRIPTION making it would hang when
		 * source and subscriber share a cluster */
		snprintf(sql, sizeof(sql), "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')",
			 name);
		if (!rs->dry_run) {
			int e = exists1(src, "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE "
					"slot_name = $1)", name);
			if (e < 0)
				return false;
			if (e) {
				printf("slot: %s exists on old shard %d\n", name, src->index);
				continue;
			}
		}
		if (!run_sql(rs, src, sql))
			return false;
		if (!rs->dry_run)
			printf("slot: %s created on old shard %d (%s)\n", name, src->index, src->label);
	}
	return true;
}

static const char SUB_EXISTS[] =
	"SELECT EXISTS (SELECT 1 FROM pg_subscription WHERE subname = $1 AND subdbid = "
	"(SELECT oid FROM pg_database WHERE datname = current_database()))";

bool reshard_step_subscription(struct reshard *rs)
{
	for (int j = rs->n_old; j < rs->n_new; j++) {
		struct reshard_shard *dst = &rs->new[j], *src = &rs->old[rs->new[j].source];
		char name[64];
		reshard_name(rs, j, name, sizeof(name));
		if (rs->dry_run) {
			printf("  on new shard %d (%s): CREATE SCHEMA IF NOT EXISTS pgmux_reshard; %s;\n", j,
			       dst->label, MARKER_TABLE);
			printf("  on new shard %d (%s): CREATE SUBSCRIPTION %s CONNECTION '<old shard %d's "
			       "conninfo>' PUBLICATION %s WITH (create_slot = false, slot_name = '%s', "
			       "copy_data = true, synchronous_commit = 'on');\n", j, dst->label, name,
			       src->index, name, name);
			continue;
		}
		int e = exists1(dst, SUB_EXISTS, name);
		if (e < 0)
			return false;
		if (e) {
			printf("subscription: %s exists on new shard %d\n", name, j);
			continue;
		}
		if (!reshard_exec(dst, "CREATE SCHEMA IF NOT EXISTS pgmux_reshard", 0, NULL) ||
		    !reshard_exec(dst, MARKER_TABLE, 0, NULL))
			return false;
		char *lit = reshard_literal(src->conninfo);
		size_t n = (lit ? strlen(lit) : 0) + 400;
		char *sql = malloc(n);
		if (!lit || !sql) {
			free(lit);
			free(sql);
			return false;
		}
		/* synchronous_commit on: the subscriber confirms positions as it applies them, so the
		 * cutover's catch-up check is not held up by asynchronous commits */
		snprintf(sql, n, "CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION %s WITH "
			 "(create_slot = false, slot_name = '%s', copy_data = true, "
			 "synchronous_commit = 'on')", name, lit, name, name);
		bool ok = reshard_exec(dst, sql, 0, NULL);
		free(sql);
		free(lit);
		if (!ok)
			return false;
		printf("subscription: %s created on new shard %d (%s), from old shard %d\n", name, j,
		       dst->label, src->index);
	}
	return true;
}

/* ---- sync ------------------------------------------------------------------------------------- */

static const char SYNC_SQL[] =
	"SELECT count(*) FILTER (WHERE r.srsubstate = 'r'), count(*), "
	"  (SELECT coalesce(sum(tuples_processed), 0) FROM pg_stat_progress_copy "
	"   WHERE datname = current_database()) "
	"FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
	"WHERE s.subname = $1";

static const char LAG_SQL[] =
	"SELECT coalesce(pg_current_wal_lsn() - confirmed_flush_lsn, -1)::bigint "
	"FROM pg_replication_slots WHERE slot_name = $1";

bool reshard_step_sync(struct reshard *rs)
{
	if (rs->dry_run) {
		printf("  wait until every table of each subscription is ready (pg_subscription_rel "
		       "srsubstate 'r') and each slot lags under %lld bytes; a progress line a second\n",
		       (long long)rs->max_lag_bytes);
		return true;
	}
	double start = reshard_now_ms();
	for (;;) {
		bool all = true;
		printf("sync %.0fs:", (reshard_now_ms() - start) / 1000.0);
		for (int j = rs->n_old; j < rs->n_new; j++) {
			char name[64];
			reshard_name(rs, j, name, sizeof(name));
			const char *p[1] = { name };
			PGresult *r = reshard_query(&rs->new[j], SYNC_SQL, 1, p);
			if (!r)
				return false;
			long ready = atol(PQgetvalue(r, 0, 0)), total = atol(PQgetvalue(r, 0, 1));
			long long copying = atoll(PQgetvalue(r, 0, 2));
			PQclear(r);
			char *lag = reshard_value(&rs->old[rs->new[j].source], LAG_SQL, 1, p);
			if (!lag)
				return false;
			long long lagb = lag[0] ? atoll(lag) : -1;
			free(lag);
			printf(" [shard %d <- %d: tables %ld/%ld ready, %lld rows in copy, lag %lld B]", j,
			       rs->new[j].source, ready, total, copying, lagb);
			if (total == 0 || ready < total || lagb < 0 || lagb > rs->max_lag_bytes)
				all = false;
		}
		printf("\n");
		fflush(stdout);
		if (all)
			return true;
		if (reshard_interrupted)
			return false;
		reshard_sleep_ms(1000);
	}
}

/* ---- after the cutover -------------------------------------------------------------------- */

bool reshard_step_unsubscribe(struct reshard *rs)
{
	for (int j = rs->n_old; j < rs->n_new; j++) {
		struct reshard_shard *dst = &rs->new[j], *src = &rs->old[rs->new[j].source];
		char name[64], sql[200];
		reshard_name(rs, j, name, sizeof(name));
		int e = rs->dry_run ? 1 : exists1(dst, SUB_EXISTS, name);
		if (e < 0)
			return false;
		if (e) {
			/* the slot is the source's: detach it first, so that DROP SUBSCRIPTION does
			 * not try to reach it (it would hang within one cluster) */
			snprintf(sql, sizeof(sql), "ALTER SUBSCRIPTION %s DISABLE", name);
			if (!run_sql(rs, dst, sql))
				return false;
			snprintf(sql, sizeof(sql), "ALTER SUBSCRIPTION %s SET (slot_name = NONE)", name);
			if (!run_sql(rs, dst, sql))
				return false;
			snprintf(sql, sizeof(sql), "DROP SUBSCRIPTION %s", name);
			if (!run_sql(rs, dst, sql))
				return false;
		}
		if (!rs->dry_run) {
			/* the walsender leaves once the subscription's worker has; wait for that */
			double t0 = reshard_now_ms();
			for (;;) {
				int active = exists1(src, "SELECT EXISTS (SELECT 1 FROM pg_replication_slots "
						     "WHERE slot_name = $1 AND active)", name);
				if (active < 0)
					return false;
				if (!active)
					break;
				if (reshard_now_ms() - t0 > 60000 || reshard_interrupted) {
					fprintf(stderr, "pgmux-reshard: slot %s on old shard %d stays active "
						"a minute after its subscription was dropped\n", name, src->index);
					return false;
				}
				reshard_sleep_ms(50);
			}
			e = exists1(src, "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE "
				    "slot_name = $1)", name);
			if (e < 0)
				return false;
		}
		snprintf(sql, sizeof(sql), "SELECT pg_drop_replication_slot('%s')", name);
		if (e && !run_sql(rs, src, sql))
			return false;
		snprintf(sql, sizeof(sql), "DROP PUBLICATION IF EXISTS %s", name);
		if (!run_sql(rs, src, sql) ||
		    !run_sql(rs, dst, "DROP SCHEMA IF EXISTS pgmux_reshard CASCADE"))
			return false;
		if (!rs->dry_run)
			printf("unsubscribe: %s dropped (subscription on shard %d, slot and publication "
			       "on shard %d)\n", name, j, src->index);
	}
	return true;
}

/* Deletes from old shard i the rows of table that moved, n rows at a time; the count. */
static long long delete_moved(struct reshard *rs, int i, const char *table)
{
	/* the rows some new shard j = i + kN took (exactly those its publication copied) */
	size_t n = 512 + 2 * strlen(table);
	int parts = 0;
	for (int j = rs->n_old; j < rs->n_new; j++)
		if (rs->new[j].source == i) {
			char *f = reshard_filter(rs, j);
			if (!f)
				return -1;
			n += strlen(f) + 8;
			free(f);
			parts++;
		}
	char *sql = malloc(n);
	if (!sql)
		return -1;
	int off = snprintf(sql, n, "DELETE FROM %s WHERE ctid IN (SELECT ctid FROM %s WHERE ",
			   table, table);
	int k = 0;
	for (int j = rs->n_old; j < rs->n_new; j++) {
		if (rs->new[j].source != i)
			continue;
		char *f = reshard_filter(rs, j);
		off += snprintf(sql + off, n - (size_t)off, "%s(%s)", k++ ? " OR " : "", f);
		free(f);
	}
	off += snprintf(sql + off, n - (size_t)off, " LIMIT %ld)", rs->batch_rows);
	assert((size_t)off < n && k == parts);
	if (rs->dry_run) {
		printf("  on old shard %d (%s), until it deletes no row, %ld ms apart: %s;\n", i,
		       rs->old[i].label, rs->batch_sleep_ms, sql);
		free(sql);
		return 0;
	}
	long long total = 0;
	double last = reshard_now_ms();
	PGconn *c = reshard_conn(&rs->old[i]);
	for (;;) {
		PGresult *r = c ? PQexec(c, sql) : NULL;
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
			bool fk = state && !strcmp(state, "23503");
			if (fk)
				printf("cleanup: old shard %d %s: moved rows of another table still refer "
				       "to some (foreign key): again after the other tables\n", i, table);
			else if (c)
				fprintf(stderr, "pgmux-reshard: old shard %d (%s): %s", i, rs->old[i].label,
					PQerrorMessage(c));
			PQclear(r);
			free(sql);
			return fk ? -2 : -1;
		}
		long long got = atoll(PQcmdTuples(r));
		PQclear(r);
		total += got;
		if (reshard_now_ms() - last >= 1000) {
			printf("cleanup: old shard %d %s: %lld rows deleted so far\n", i, table, total);
			fflush(stdout);
			last = reshard_now_ms();
		}
		if (got < rs->batch_rows || reshard_interrupted)
			break;
		reshard_sleep_ms(rs->batch_sleep_ms);
	}
	free(sql);
	return reshard_interrupted ? -1 : total;
}

bool reshard_step_cleanup(struct reshard *rs)
{
	char sql[256];
	for (int i = 0; i < rs->n_old; i++) {
		struct reshard_shard *s = &rs->old[i];
		/* a run restarted after the helper schema went has nothing left to do here */
		if (!rs->dry_run) {
			int e = exists1(s, "SELECT to_regclass($1) IS NOT NULL", "pgmux_reshard.keyspace");
			if (e < 0)
				return false;
			if (!e) {
				printf("cleanup: old shard %d already clean\n", i);
				continue;
			}
		}
		/* tables in passes: one whose rows moved rows of another still refer to (a foreign
		 * key) waits for the next pass; a pass that finishes none is stuck */
		bool *left = calloc((size_t)rs->n_tables, sizeof(*left));
		if (!left)
			return false;
		int n_left = rs->n_tables;
		for (int t = 0; t < rs->n_tables; t++)
			left[t] = true;
		while (n_left > 0) {
			int before = n_left;
			for (int t = 0; t < rs->n_tables; t++) {
				if (!left[t])
					continue;
				long long n = delete_moved(rs, i, rs->tables[t]);
				if (n == -2)
					continue;
				if (n < 0) {
					free(left);
					return false;
				}
				left[t] = false;
				n_left--;
				if (!rs->dry_run)
					printf("cleanup: old shard %d (%s) %s: %lld moved rows deleted\n", i,
					       s->label, rs->tables[t], n);
			}
			if (n_left == before) {
				fprintf(stderr, "pgmux-reshard: old shard %d (%s): foreign keys among the "
					"moved tables keep the cleanup from finishing\n", i, s->label);
				free(left);
				return false;
			}
		}
		free(left);
		/* the moved rows are gone: the policy hides nothing now; then the helper schema
		 * (which holds the recorded flags) */
		if (!reshard_rls_remove(rs, i))
			return false;
		snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS pgmux_reshard CASCADE");
		if (!run_sql(rs, s, sql))
			return false;
	}
	return true;
}
