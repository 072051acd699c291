/* reshard_rls.c: pgmux-reshard's guard for keyless reads: RLS on the old shards, cutover to cleanup. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reshard.h"

/* The names of the policies this tool creates; the cleanup drops exactly these. */
#define KEEP_POLICY "pgmux_reshard_keep"
#define OWNER_POLICY "pgmux_reshard_owner"

/* Each moved table's RLS flags before the cutover, on its old shard: the cleanup restores them
 * from here.  It lives in the helper schema, so it goes with it, and is written in the same
 * transaction as the policy, so a crash leaves either both or neither. */
static const char SAVED_TABLE[] =
	"CREATE TABLE IF NOT EXISTS pgmux_reshard.rls_saved (tbl text PRIMARY KEY, "
	"rowsec bool NOT NULL, forcerowsec bool NOT NULL)";

/* First writer wins: a rerun after the flags changed must not record the changed ones. */
static const char SAVE_SQL[] =
	"INSERT INTO pgmux_reshard.rls_saved SELECT $1::text, relrowsecurity, relforcerowsecurity "
	"FROM pg_class WHERE oid = $1::regclass ON CONFLICT (tbl) DO NOTHING";

/* What apply needs to know of one table: the original flags, the owner (quoted), whether the
 * policies exist and whether RLS is on and forced now. */
static const char STATE_SQL[] =
	"SELECT s.rowsec, s.forcerowsec, format('%I', pg_get_userbyid(c.relowner)), "
	"       EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = '"
	KEEP_POLICY "'), "
	"       EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = '"
	OWNER_POLICY "'), "
	"       c.relrowsecurity AND c.relforcerowsecurity "
	"FROM pgmux_reshard.rls_saved s JOIN pg_class c ON c.oid = $1::text::regclass WHERE s.tbl = $1";

static bool is_true(const PGresult *r, int row, int col)
{
	return !strcmp(PQgetvalue(r, row, col), "t");
}

/* The rows old shard i keeps: not those any of its new shards took (the complement of the
 * publications' row filters, so exactly what the cleanup leaves; rows with a NULL key stay). */
static char *keep_filter(const struct reshard *rs, int i)
{
	size_t n = 16, off;
	for (int j = rs->n_old; j < rs->n_new; j++)
		if (rs->new[j].source == i) {
			char *f = reshard_filter(rs, j);
			if (!f)
				return NULL;
			n += strlen(f) + 8;
			free(f);
		}
	char *out = malloc(n);
	if (!out)
		return NULL;
	off = (size_t)snprintf(out, n, "NOT (");
	int k = 0;
	for (int j = rs->n_old; j < rs->n_new; j++) {
		if (rs->new[j].source != i)
			continue;
		char *f = reshard_filter(rs, j);
		if (!f) {
			free(out);
			return NULL;
		}
		off += (size_t)snprintf(out + off, n - off, "%s(%s)", k++ ? " OR " : "", f);
		free(f);
	}
	off += (size_t)snprintf(out + off, n - off, ")");
	/* sized above; M > N gives every old shard at least one new shard */
	assert(off < n && k > 0);
	return out;
}

/* Runs sql on old shard s, or prints it under --dry-run. */
static bool run(struct reshard *rs, struct reshard_shard *s, const char *sql)
{
	if (rs->dry_run) {
		printf("  on old shard %d (%s): %s;\n", s->index, s->label, sql);
		return true;
	}
	return reshard_exec(s, sql, 0, NULL);
}

/* Ends the transaction on s: COMMIT when ok, else ROLLBACK (its failure then is moot). */
static bool finish(struct reshard_shard *s, bool ok)
{
	if (ok)
		return reshard_exec(s, "COMMIT", 0, NULL);
	PGconn *c = reshard_conn(s);
	if (c)
		PQclear(PQexec(c, "ROLLBACK"));
	return false;
}

/* The roles among rs->db_users (or, when they are unknown, every LOGIN role) that bypass RLS
 * on old shard s, as "a, b" in a new string ("" when none); NULL on failure. */
static char *bypassing_roles(struct reshard *rs, struct reshard_shard *s)
{
	if (rs->db_users_unknown)
		return reshard_value(s, "SELECT coalesce(string_agg(rolname, ', ' ORDER BY rolname), '') "
				     "FROM pg_roles WHERE rolcanlogin AND (rolsuper OR rolbypassrls)",
				     0, NULL);
	size_t n = 1, off = 0;
	for (int u = 0; u < rs->n_db_users; u++)
		n += strlen(rs->db_users[u]) + 2;
	char *out = malloc(n);
	if (!out)
		return NULL;
	out[0] = 0;
	for (int u = 0; u < rs->n_db_users; u++) {
		const char *p[1] = { rs->db_users[u] };
		int b = reshard_bool(s, "SELECT coalesce((SELECT rolsuper OR rolbypassrls FROM pg_roles "
				     "WHERE rolname = $1), false)", 1, p);
		if (b < 0) {
			free(out);
			return NULL;
		}
		if (b)
			off += (size_t)snprintf(out + off, n - off, "%s%s", off ? ", " : "", p[0]);
	}
	return out;
}

bool reshard_rls_check(struct reshard *rs)
{
	bool ok = true;
	for (int i = 0; i < rs->n_old; i++) {
		struct reshard_shard *s = &rs->old[i];
		int me = reshard_bool(s, "SELECT rolsuper OR rolbypassrls FROM pg_roles "
				      "WHERE rolname = current_user", 0, NULL);
		if (me < 0)
			return false;
		if (!me) {
			/* forced RLS would hide the moved rows from the cleanup's deletes too */
			fprintf(stderr, "pgmux-reshard: old shard %d (%s): with no_shard_key = all the "
				"cleanup must see the rows the policy hides: connect as a superuser or a "
				"BYPASSRLS role (--user)\n", i, s->label);
			ok = false;
		}
		for (int t = 0; ok && t < rs->n_tables; t++) {
			/* enabling RLS would bring such dormant policies to life */
			const char *p[1] = { rs->tables[t] };
			int dormant = reshard_bool(s,
				"SELECT NOT c.relrowsecurity AND EXISTS (SELECT 1 FROM pg_policy p "
				"WHERE p.polrelid = c.oid AND p.polname NOT IN ('" KEEP_POLICY "', '"
				OWNER_POLICY "')) FROM pg_class c WHERE c.oid = $1::regclass", 1, p);
			if (dormant < 0)
				return false;
			if (dormant) {
				fprintf(stderr, "pgmux-reshard: old shard %d: %s has row-level security "
					"policies but RLS disabled; the move enables RLS (no_shard_key = all), "
					"which would apply them: drop them or enable RLS first\n", i,
					rs->tables[t]);
				ok = false;
			}
		}
		char *who = ok ? bypassing_roles(rs, s) : NULL;
		if (ok && !who)
			return false;
		if (who && who[0]) {
			bool stop = !rs->db_users_unknown && !rs->allow_rls_bypass;
			fprintf(stderr, "pgmux-reshard: %s: old shard %d (%s): %s (%s) bypass row-level "
				"security (superuser or BYPASSRLS): between the cutover and the cleanup a "
				"read fanned out over every shard (no_shard_key = all) by %s would count "
				"the moved rows twice%s\n", stop ? "refused" : "warning", i, s->label,
				rs->db_users_unknown ? "these LOGIN roles" : "pgmux's server users", who,
				rs->db_users_unknown ? "a client pgmux logs in as one of them" : "them",
				stop ? " (--allow-rls-bypass goes on anyway)" : "");
			ok = !stop;
		}
		free(who);
	}
	return ok;
}

/* Applies the guard to one table of old shard i, in one transaction. */
static bool apply_table(struct reshard *rs, struct reshard_shard *s, const char *table,
			const char *keep)
{
	const char *p[1] = { table };
	size_t n = strlen(table) + strlen(keep) + 256;
	char *sql = malloc(n);
	if (!sql)
		return false;
	if (rs->dry_run) {
		printf("  on old shard %d (%s): record %s's relrowsecurity and relforcerowsecurity; "
		       "CREATE POLICY " KEEP_POLICY " ON %s AS (RESTRICTIVE if RLS was on, else "
		       "PERMISSIVE) USING (%s) (and, if RLS was on but not forced, CREATE POLICY "
		       OWNER_POLICY " ... TO its owner USING (true)); ALTER TABLE %s ENABLE ROW LEVEL "
		       "SECURITY, FORCE ROW LEVEL SECURITY;\n", s->index, s->label, table, table, keep,
		       table);
		free(sql);
		return true;
	}
	char lt[64];
	snprintf(lt, sizeof(lt), "SET LOCAL lock_timeout = %ld", rs->cutover_timeout_ms);
	bool ok = reshard_exec(s, "BEGIN", 0, NULL) && reshard_exec(s, lt, 0, NULL) &&
		  reshard_exec(s, SAVE_SQL, 1, p);
	PGresult *r = ok ? reshard_query(s, STATE_SQL, 1, p) : NULL;
	ok = r && PQntuples(r) == 1;
	if (ok) {
		bool had_rls = is_true(r, 0, 0), had_force = is_true(r, 0, 1);
		if (!is_true(r, 0, 3)) {
			/* on top of the table's own policies (ANDed), or the only one */
			snprintf(sql, n, "CREATE POLICY " KEEP_POLICY " ON %s AS %s USING (%s)", table,
				 had_rls ? "RESTRICTIVE" : "PERMISSIVE", keep);
			ok = reshard_exec(s, sql, 0, NULL);
		}
		if (ok && had_rls && !had_force && !is_true(r, 0, 4)) {
			/* the owner was exempt and FORCE ends that: give it back every row (still
			 * ANDed with the restrictive policy above) */
			snprintf(sql, n, "CREATE POLICY " OWNER_POLICY " ON %s AS PERMISSIVE TO %s "
				 "USING (true) WITH CHECK (true)", table, PQgetvalue(r, 0, 2));
			ok = reshard_exec(s, sql, 0, NULL);
		}
		if (ok && !is_true(r, 0, 5)) {
			snprintf(sql, n, "ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL "
				 "SECURITY", table);
			ok = reshard_exec(s, sql, 0, NULL);
		}
	}
	PQclear(r);
	free(sql);
	return finish(s, ok);
}

bool reshard_rls_apply(struct reshard *rs)
{
	for (int i = 0; i < rs->n_old; i++) {
		struct reshard_shard *s = &rs->old[i];
		char *keep = keep_filter(rs, i);
		bool ok = keep && run(rs, s, SAVED_TABLE);
		for (int t = 0; ok && t < rs->n_tables; t++)
			ok = apply_table(rs, s, rs->tables[t], keep);
		free(keep);
		if (!ok)
			return false;
		if (!rs->dry_run)
			printf("cutover: old shard %d (%s): row-level security shows only the rows it "
			       "keeps (%d tables)\n", i, s->label, rs->n_tables);
	}
	return true;
}

bool reshard_rls_remove(struct reshard *rs, int i)
{
	struct reshard_shard *s = &rs->old[i];
	if (rs->dry_run) {
		if (rs->guard_rls)
			printf("  on old shard %d (%s), each table: DROP POLICY " KEEP_POLICY " and "
			       OWNER_POLICY "; ALTER TABLE restoring its recorded ROW LEVEL SECURITY "
			       "flags (one transaction);\n", i, s->label);
		return true;
	}
	const char *reg[1] = { "pgmux_reshard.rls_saved" };
	int e = reshard_bool(s, "SELECT to_regclass($1) IS NOT NULL", 1, reg);
	if (e <= 0)
		return e == 0;
	int restored = 0;
	for (int t = 0; t < rs->n_tables; t++) {
		const char *table = rs->tables[t];
		const char *p[1] = { table };
		PGresult *r = reshard_query(s, "SELECT rowsec, forcerowsec FROM pgmux_reshard.rls_saved "
					    "WHERE tbl = $1", 1, p);
		if (!r)
			return false;
		if (PQntuples(r) != 1) {
			PQclear(r);
			continue;
		}
		bool rowsec = is_true(r, 0, 0), force = is_true(r, 0, 1);
		PQclear(r);
		char sql[3][64 + 2 * 300];
		if (strlen(table) > 300)
			return false;
		snprintf(sql[0], sizeof(sql[0]), "DROP POLICY IF EXISTS " KEEP_POLICY " ON %s", table);
		snprintf(sql[1], sizeof(sql[1]), "DROP POLICY IF EXISTS " OWNER_POLICY " ON %s", table);
		snprintf(sql[2], sizeof(sql[2]), "ALTER TABLE %s %s ROW LEVEL SECURITY, %s ROW LEVEL "
			 "SECURITY", table, rowsec ? "ENABLE" : "DISABLE", force ? "FORCE" : "NO FORCE");
		char lt[64];
		snprintf(lt, sizeof(lt), "SET LOCAL lock_timeout = %ld", rs->cutover_timeout_ms);
		/* one transaction: between a dropped policy and the restored flags RLS would deny
		 * every row to the application */
		bool ok = reshard_exec(s, "BEGIN", 0, NULL) && reshard_exec(s, lt, 0, NULL) &&
			  reshard_exec(s, sql[2], 0, NULL) && reshard_exec(s, sql[0], 0, NULL) &&
			  reshard_exec(s, sql[1], 0, NULL) &&
			  reshard_exec(s, "DELETE FROM pgmux_reshard.rls_saved WHERE tbl = $1", 1, p);
		if (!finish(s, ok))
			return false;
		restored++;
	}
	if (restored)
		printf("old shard %d (%s): row-level security policies dropped, flags restored on %d "
		       "tables\n", i, s->label, restored);
	return true;
}
