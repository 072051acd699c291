/* test_sqlscan.c: unit tests for the SQL classifier: the read/write corpus, hints, SET pgmux.*, transactions and shard keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sqlscan.h"
#include "corpus.h"

static struct sqlscan_funcs *default_wf(void)
{
	const char *err = NULL;
	struct sqlscan_funcs *wf = sqlscan_funcs_new(sqlscan_default_write_functions, &err);
	assert_non_null(wf);
	assert_null(err);
	return wf;
}

/* Classifies s from an exactly-sized heap copy without a NUL, so that ASan sees any read past len. */
static void classify(const char *s, const struct sqlscan_funcs *wf, struct sqlscan_result *r)
{
	size_t n = strlen(s);
	char *copy = malloc(n ? n : 1);
	assert_non_null(copy);
	memcpy(copy, s, n);
	sqlscan_classify(copy, n, wf, r);
	free(copy);
}

static struct sqlscan_result R(const char *s)
{
	static struct sqlscan_funcs *wf;
	struct sqlscan_result r;
	if (!wf)
		wf = default_wf(); /* kept for the whole run */
	classify(s, wf, &r);
	return r;
}

/* ---- the corpus ------------------------------------------------------------------------- */

static void test_corpus(void **state)
{
	(void)state;
	char path[4096], line[8192];
	FILE *f = open_corpus(path, sizeof(path));
	if (!f)
		fail_msg("cannot open the corpus %s (set SQLSCAN_CORPUS or srcdir)", path);
	struct sqlscan_funcs *wf = default_wf();
	int lineno = 0, cases = 0, reads = 0, failed = 0;

	while (fgets(line, sizeof(line), f)) {
		lineno++;
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		char *tab = strchr(line, '\t');
		if (!tab) {
			print_error("%s:%d: no tab in line\n", path, lineno);
			failed++;
			continue;
		}
		*tab = '\0';
		char *sql = tab + 1;
		int want;
		if (strcmp(line, "read") == 0) {
			want = SQLSCAN_READ;
		} else if (strcmp(line, "write") == 0) {
			want = SQLSCAN_WRITE;
		} else {
			print_error("%s:%d: expected read or write, not \"%s\"\n", path, lineno, line);
			failed++;
			continue;
		}
		unescape_newlines(sql);
		struct sqlscan_result r, r2;
		classify(sql, wf, &r);
		cases++;
		reads += want == SQLSCAN_READ;
		if (r.verdict != want) {
			print_error("%s:%d: want %s, got %s: %s\n", path, lineno,
				    want == SQLSCAN_READ ? "read" : "write",
				    r.verdict == SQLSCAN_READ ? "read" : "write", sql);
			failed++;
		}
		/* a trailing NUL inside len ends the string and changes nothing */
		sqlscan_classify(sql, strlen(sql) + 1, wf, &r2);
		if (r2.verdict != r.verdict || r2.n_statements != r.n_statements || r2.tx != r.tx) {
			print_error("%s:%d: differs with a trailing NUL: %s\n", path, lineno, sql);
			failed++;
		}
		/* the key finder must cope with everything the classifier does */
		struct sqlscan_key keys[4];
		int nk = sqlscan_keys(sql, strlen(sql), "user_id", keys, 4);
		if (nk < -1 || (nk == -1) != r.lex_error) {
			print_error("%s:%d: sqlscan_keys gave %d, lex_error %d: %s\n", path, lineno, nk,
				    r.lex_error, sql);
			failed++;
		}
	}
	fclose(f);
	sqlscan_funcs_free(wf);
	print_message("corpus %s: %d cases (%d read, %d write), %d failed\n", path, cases, reads,
		      cases - reads, failed);
	assert_true(cases >= 170);
	assert_int_equal(failed, 0);
}

/* ---- hints ------------------------------------------------------------------------------ */

static void test_hints(void **state)
{
	(void)state;
	struct sqlscan_result r;

	r = R("SELECT 1");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_NONE);
	assert_false(r.has_hint_user_id);
	assert_int_equal(r.hint_shard, -1);

	r = R("/* pgmux: role=primary */ SELECT 1");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_PRIMARY);
	assert_int_equal(r.verdict, SQLSCAN_READ); /* the caller applies the hint */

	r = R("SELECT 1 /* pgmux: role=replica */");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_REPLICA);

	r = R("/*pgmux:role=auto*/ UPDATE t SET a = 1");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_AUTO);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);

	r = R("/* PGMUX : ROLE = Replica */ SELECT 1");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_REPLICA);

	r = R("SELECT * FROM t /* pgmux: user_id=42 */ WHERE a = 1");
	assert_true(r.has_hint_user_id);
	assert_int_equal(r.hint_user_id, 42);

	r = R("/* pgmux: user_id=-9223372036854775808 */ SELECT 1");
	assert_true(r.has_hint_user_id);
	assert_true(r.hint_user_id == INT64_MIN);

	r = R("/* pgmux: user_id=9223372036854775807 */ SELECT 1");
	assert_true(r.hint_user_id == INT64_MAX);

	r = R("/* pgmux: user_id=9223372036854775808 */ SELECT 1"); /* out of range: ignored */
	assert_false(r.has_hint_user_id);

	r = R("/* pgmux: shard=1 */ SELECT 1");
	assert_int_equal(r.hint_shard, 1);

	r = R("/* pgmux: shard=-1 */ SELECT 1");
	assert_int_equal(r.hint_shard, -1);

	r = R("/* pgmux: role=replica, user_id=42 */ SELECT 1");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_REPLICA);
	assert_int_equal(r.hint_user_id, 42);

	r = R("/* pgmux: role=primary user_id=7 shard=3 */ SELECT 1");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_PRIMARY);
	assert_int_equal(r.hint_user_id, 7);
	assert_int_equal(r.hint_shard, 3);

	/* the first hint of each kind wins, across comments and within one */
	r = R("/* pgmux: role=replica */ SELECT 1 /* pgmux: role=primary, shard=2 */");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_REPLICA);
	assert_int_equal(r.hint_shard, 2);
	r = R("/* pgmux: user_id=1, user_id=2 */ SELECT 1");
	assert_int_equal(r.hint_user_id, 1);

	/* unknown keys and bad values are skipped, the rest still counts */
	r = R("/* pgmux: colour=blue, role=bogus, role=replica, user_id=x1 */ SELECT 1");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_REPLICA);
	assert_false(r.has_hint_user_id);

	/* hints between statements count too */
	r = R("SELECT 1; /* pgmux: shard=5 */ SELECT 2");
	assert_int_equal(r.hint_shard, 5);
	assert_int_equal(r.n_statements, 2);

	/* not hints: other comments, strings, line comments, quoted identifiers */
	r = R("/* note: pgmux: role=primary */ SELECT 1");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_NONE);
	r = R("SELECT '/* pgmux: role=primary */'");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_NONE);
	r = R("-- pgmux: role=primary\nSELECT 1");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_NONE);
	r = R("SELECT $$ /* pgmux: user_id=1 */ $$");
	assert_false(r.has_hint_user_id);
	r = R("/* pgmuxy: role=primary */ SELECT 1");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_NONE);
	r = R("/* pgmux role=primary */ SELECT 1");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_NONE);

	/* a hint before an unterminated string still counts; the verdict is write */
	r = R("/* pgmux: role=replica */ SELECT 'oops");
	assert_int_equal(r.hint_role, SQLSCAN_ROLE_REPLICA);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	assert_true(r.lex_error);
}

/* ---- SET / RESET pgmux.* ---------------------------------------------------------------- */

static void expect_set(const char *sql, int kind, const char *value, bool bad)
{
	struct sqlscan_result r = R(sql);
	print_message("%s\n", sql);
	assert_int_equal(r.set, kind);
	assert_string_equal(r.set_value, value);
	assert_int_equal(r.set_value_bad, bad);
}

static void test_set_reset(void **state)
{
	(void)state;
	expect_set("SET pgmux.role = 'replica'", SQLSCAN_SET_ROLE, "replica", false);
	expect_set("SET pgmux.role TO primary", SQLSCAN_SET_ROLE, "primary", false);
	expect_set("SET SESSION pgmux.role = 'auto'", SQLSCAN_SET_ROLE, "auto", false);
	expect_set("set PGMUX.ROLE='replica';", SQLSCAN_SET_ROLE, "replica", false);
	expect_set("SET LOCAL pgmux.role = replica", SQLSCAN_SET_ROLE, "replica", false);
	expect_set("SET pgmux.role TO Primary", SQLSCAN_SET_ROLE, "primary", false);
	expect_set("SET pgmux.role = \"Replica\"", SQLSCAN_SET_ROLE, "Replica", false);
	expect_set("SET \"pgmux\".\"role\" = 'replica'", SQLSCAN_SET_ROLE, "replica", false);
	expect_set("SET pgmux.user_id = 42", SQLSCAN_SET_USER_ID, "42", false);
	expect_set("SET pgmux.user_id = '42'", SQLSCAN_SET_USER_ID, "42", false);
	expect_set("SET pgmux.user_id = -42", SQLSCAN_SET_USER_ID, "-42", false);
	/* decoded as PostgreSQL does, like a key literal: \2 is octal, \x41 is hex, \q is q */
	expect_set("SET pgmux.user_id = E'4\\2'", SQLSCAN_SET_USER_ID, "4\002", false);
	expect_set("SET pgmux.user_id = E'\\x41\\q'", SQLSCAN_SET_USER_ID, "Aq", false);
	expect_set("SET pgmux.user_id = E'it''s'", SQLSCAN_SET_USER_ID, "it's", false);
	expect_set("SET pgmux.user_id = E'\\u0041'", SQLSCAN_SET_USER_ID, "", true);
	expect_set("SET pgmux.user_id = B'101'", SQLSCAN_SET_USER_ID, "", true);
	expect_set("SET pgmux.user_id = 'it''s'", SQLSCAN_SET_USER_ID, "it's", false);
	expect_set("SET pgmux.user_id = $$7$$", SQLSCAN_SET_USER_ID, "7", false);
	expect_set("SET pgmux.shard = 1", SQLSCAN_SET_SHARD, "1", false);
	expect_set("  /* c */ SET pgmux.shard = 1 ; -- trailing\n ;", SQLSCAN_SET_SHARD, "1", false);
	expect_set("RESET pgmux.user_id", SQLSCAN_RESET_USER_ID, "", false);
	expect_set("RESET pgmux.role;", SQLSCAN_RESET_ROLE, "", false);
	expect_set("reset PGMUX.Shard", SQLSCAN_RESET_SHARD, "", false);
	expect_set("SET pgmux.role TO DEFAULT", SQLSCAN_RESET_ROLE, "", false);
	expect_set("SET pgmux.shard = default", SQLSCAN_RESET_SHARD, "", false);
	expect_set("SET pgmux.role = 'default'", SQLSCAN_SET_ROLE, "default", false);

	/* values that do not fit, or lists */
	expect_set("SET pgmux.role = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'",
		   SQLSCAN_SET_ROLE, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true);
	expect_set("SET pgmux.user_id = 1, 2", SQLSCAN_SET_USER_ID, "1", true);

	/* not ours, or not alone */
	expect_set("SET pgmux.role = 'replica'; SELECT 1", SQLSCAN_SET_NONE, "", false);
	expect_set("SELECT 1; SET pgmux.role = 'replica'", SQLSCAN_SET_NONE, "", false);
	expect_set("SET pgmux.colour = 'blue'", SQLSCAN_SET_NONE, "", false);
	expect_set("SET search_path = x", SQLSCAN_SET_NONE, "", false);
	expect_set("SET pgmux.role", SQLSCAN_SET_NONE, "", false);
	expect_set("SET pgmux.role = ", SQLSCAN_SET_NONE, "", false);
	expect_set("SET pgmux.role = 'replica' junk", SQLSCAN_SET_NONE, "", false);
	expect_set("SET pgmux.role = 'replica", SQLSCAN_SET_NONE, "", false);
	expect_set("RESET pgmux.role x", SQLSCAN_SET_NONE, "", false);
	expect_set("RESET ALL", SQLSCAN_SET_NONE, "", false);
	expect_set("SET 'pgmux.role' = 'x'", SQLSCAN_SET_NONE, "", false);
	expect_set("SELECT 'SET pgmux.role = 1'", SQLSCAN_SET_NONE, "", false);
}

/* ---- transactions and statement counts -------------------------------------------------- */

static void expect_tx(const char *sql, int tx, int verdict)
{
	struct sqlscan_result r = R(sql);
	print_message("%s\n", sql);
	assert_int_equal(r.tx, tx);
	assert_int_equal(r.verdict, verdict);
}

static void test_tx(void **state)
{
	(void)state;
	expect_tx("BEGIN", SQLSCAN_TX_BEGIN, SQLSCAN_WRITE);
	expect_tx("begin;", SQLSCAN_TX_BEGIN, SQLSCAN_WRITE);
	expect_tx("BEGIN READ WRITE", SQLSCAN_TX_BEGIN, SQLSCAN_WRITE);
	expect_tx("BEGIN ISOLATION LEVEL SERIALIZABLE", SQLSCAN_TX_BEGIN, SQLSCAN_WRITE);
	expect_tx("BEGIN ISOLATION LEVEL READ COMMITTED", SQLSCAN_TX_BEGIN, SQLSCAN_WRITE);
	expect_tx("START TRANSACTION", SQLSCAN_TX_BEGIN, SQLSCAN_WRITE);
	expect_tx("BEGIN READ ONLY, READ WRITE", SQLSCAN_TX_BEGIN, SQLSCAN_WRITE);
	expect_tx("BEGIN nonsense", SQLSCAN_TX_BEGIN, SQLSCAN_WRITE);
	expect_tx("BEGIN READ ONLY", SQLSCAN_TX_BEGIN_RO, SQLSCAN_READ);
	expect_tx("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", SQLSCAN_TX_BEGIN_RO, SQLSCAN_READ);
	expect_tx("START TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY", SQLSCAN_TX_BEGIN_RO, SQLSCAN_READ);
	expect_tx("START TRANSACTION READ ONLY, DEFERRABLE", SQLSCAN_TX_BEGIN_RO, SQLSCAN_READ);
	expect_tx("BEGIN READ ONLY; SELECT 1; COMMIT", SQLSCAN_TX_BEGIN_RO, SQLSCAN_READ);
	expect_tx("BEGIN READ ONLY; UPDATE t SET a = 1; COMMIT", SQLSCAN_TX_BEGIN_RO, SQLSCAN_WRITE);
	expect_tx("BEGIN; SELECT 1", SQLSCAN_TX_BEGIN, SQLSCAN_WRITE);
	expect_tx("SET TRANSACTION READ ONLY", SQLSCAN_TX_SET_RO, SQLSCAN_READ);
	expect_tx("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE", SQLSCAN_TX_SET_RO, SQLSCAN_READ);
	expect_tx("SET TRANSACTION READ WRITE", SQLSCAN_TX_NONE, SQLSCAN_WRITE);
	expect_tx("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", SQLSCAN_TX_NONE, SQLSCAN_WRITE);
	expect_tx("COMMIT", SQLSCAN_TX_END, SQLSCAN_READ);
	expect_tx("commit work", SQLSCAN_TX_END, SQLSCAN_READ);
	expect_tx("COMMIT AND CHAIN", SQLSCAN_TX_END, SQLSCAN_READ);
	expect_tx("END", SQLSCAN_TX_END, SQLSCAN_READ);
	expect_tx("ROLLBACK", SQLSCAN_TX_END, SQLSCAN_READ);
	expect_tx("ROLLBACK TRANSACTION AND NO CHAIN", SQLSCAN_TX_END, SQLSCAN_READ);
	expect_tx("ABORT", SQLSCAN_TX_END, SQLSCAN_READ);
	expect_tx("COMMIT; SELECT 1", SQLSCAN_TX_END, SQLSCAN_READ);
	expect_tx("ROLLBACK TO SAVEPOINT a", SQLSCAN_TX_NONE, SQLSCAN_READ);
	expect_tx("ROLLBACK WORK TO a", SQLSCAN_TX_NONE, SQLSCAN_READ);
	expect_tx("SAVEPOINT a", SQLSCAN_TX_NONE, SQLSCAN_READ);
	expect_tx("RELEASE SAVEPOINT a", SQLSCAN_TX_NONE, SQLSCAN_READ);
	expect_tx("PREPARE TRANSACTION 'x'", SQLSCAN_TX_END, SQLSCAN_WRITE);
	expect_tx("COMMIT PREPARED 'x'", SQLSCAN_TX_END, SQLSCAN_WRITE);
	expect_tx("ROLLBACK PREPARED 'x'", SQLSCAN_TX_END, SQLSCAN_WRITE);
	expect_tx("PREPARE p AS SELECT 1", SQLSCAN_TX_NONE, SQLSCAN_WRITE);
	expect_tx("SELECT 1; COMMIT", SQLSCAN_TX_NONE, SQLSCAN_READ);
	expect_tx("\"BEGIN\"", SQLSCAN_TX_NONE, SQLSCAN_WRITE);
}

static void test_n_statements(void **state)
{
	(void)state;
	static const struct { const char *sql; int n; } v[] = {
		{ "", 0 }, { "  ", 0 }, { ";", 0 }, { ";;  ;", 0 }, { "-- x", 0 }, { "/* x */ ;", 0 },
		{ "SELECT 1", 1 }, { "SELECT 1;", 1 }, { ";SELECT 1;;", 1 }, { "SELECT 1; -- x", 1 },
		{ "SELECT 1; SELECT 2", 2 }, { "SELECT 1;;SELECT 2;", 2 }, { "a;b;c", 3 },
		{ "SELECT ';'; SELECT \";\"", 2 }, { "SELECT $$;$$; SELECT 1", 2 },
		{ "SELECT (1;2)", 1 }, { "SELECT 1 /* ; */", 1 },
		{ "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SELECT 3", 2 },
		{ "CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END", 1 },
		{ "DO $$ BEGIN NULL; END $$; SELECT 1", 2 },
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct sqlscan_result r = R(v[i].sql);
		print_message("%s\n", v[i].sql);
		assert_int_equal(r.n_statements, v[i].n);
		if (v[i].n == 0)
			assert_int_equal(r.verdict, SQLSCAN_WRITE);
	}
}

static void test_lengths(void **state)
{
	(void)state;
	struct sqlscan_funcs *wf = default_wf();
	struct sqlscan_result r;

	/* len cuts the string: only "SELECT 1" is seen */
	const char *s = "SELECT 1; DELETE FROM t";
	sqlscan_classify(s, 8, wf, &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	assert_int_equal(r.n_statements, 1);
	/* a NUL ends it too, wherever it is */
	sqlscan_classify("SELECT 1\0; DELETE FROM t", 24, wf, &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	sqlscan_classify("SELECT\0; DELETE FROM t", 22, wf, &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	assert_int_equal(r.n_statements, 1);
	sqlscan_classify("SELECT a\0 INTO b", 15, wf, &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	sqlscan_classify("SELECT 1 -- x\0\nDELETE FROM t", 28, wf, &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	assert_int_equal(r.n_statements, 1);
	/* ".5.E1" is .5 then .E1, not a number with an exponent, so no dollar quote opens at "$t$" */
	sqlscan_classify("VACUUM x .5.E1$t$", 17, wf, &r);
	assert_false(r.lex_error);
	assert_int_equal(r.n_statements, 1);
	sqlscan_classify("SELECT x .5.E1$t$", 17, wf, &r);
	assert_false(r.lex_error);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	/* ... so a string, quoted name or comment with a NUL in it is unterminated */
	sqlscan_classify("SELECT 'a\0'", 12, wf, &r);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	assert_true(r.lex_error);
	sqlscan_classify("SELECT \"a\0\"", 12, wf, &r);
	assert_true(r.lex_error);
	sqlscan_classify("SELECT 1 /* \0 */", 17, wf, &r);
	assert_true(r.lex_error);
	sqlscan_classify("SELECT $$\0$$", 13, wf, &r);
	assert_true(r.lex_error);
	/* cut in the middle of a string: unterminated */
	sqlscan_classify("SELECT 'abc'", 10, wf, &r);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	assert_true(r.lex_error);
	sqlscan_classify("", 0, wf, &r);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	assert_int_equal(r.n_statements, 0);
	assert_int_equal(r.hint_shard, -1);
	/* no write functions: nextval is just a function */
	sqlscan_classify("SELECT nextval('s')", 19, NULL, &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	sqlscan_funcs_free(wf);
}

/* ---- write_functions -------------------------------------------------------------------- */

static int verdict_with(const char *list, const char *sql)
{
	const char *err = NULL;
	struct sqlscan_funcs *wf = sqlscan_funcs_new(list, &err);
	struct sqlscan_result r;
	assert_non_null(wf);
	classify(sql, wf, &r);
	sqlscan_funcs_free(wf);
	return r.verdict;
}

static void test_funcs(void **state)
{
	(void)state;
	const char *err;

	/* globs */
	assert_int_equal(verdict_with("pg_advisory*lock*", "SELECT pg_advisory_lock(1)"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("pg_advisory*lock*", "SELECT pg_advisory_unlock_all()"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("pg_advisory*lock*", "SELECT pg_advisory_xact_lock_shared(1)"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("pg_advisory*lock*", "SELECT pg_advisorylock(1)"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("pg_advisory*lock*", "SELECT pg_advisory(1)"), SQLSCAN_READ);
	assert_int_equal(verdict_with("lo_*", "SELECT lo_(1)"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("lo_*", "SELECT lower('A')"), SQLSCAN_READ);
	assert_int_equal(verdict_with("*_write", "SELECT app.do_write(1)"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("*_write", "SELECT do_writer(1)"), SQLSCAN_READ);
	assert_int_equal(verdict_with("a*b*c", "SELECT aXbYbZc(1)"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("a*b*c", "SELECT aXbYcZ(1)"), SQLSCAN_READ);
	assert_int_equal(verdict_with("*", "SELECT f(1)"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("**x**", "SELECT x(1)"), SQLSCAN_WRITE);
	/* case: the list folds, unquoted names fold, quoted names match exactly */
	assert_int_equal(verdict_with("MyFunc", "SELECT myfunc(1)"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("myfunc", "SELECT MYFUNC(1)"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("myfunc", "SELECT \"myfunc\"(1)"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("myfunc", "SELECT \"MyFunc\"(1)"), SQLSCAN_READ);
	/* separators, schema prefixes, $ inside names */
	assert_int_equal(verdict_with(" a ,b\tc,,\nd ", "SELECT c(1)"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("myschema.f", "SELECT other.f(1)"), SQLSCAN_WRITE);
	assert_int_equal(verdict_with("f$1", "SELECT f$1(1)"), SQLSCAN_WRITE);
	/* empty lists are valid and match nothing */
	assert_int_equal(verdict_with("", "SELECT nextval('s')"), SQLSCAN_READ);
	assert_int_equal(verdict_with(" , ", "SELECT nextval('s')"), SQLSCAN_READ);
	struct sqlscan_funcs *wf = sqlscan_funcs_new(NULL, &err);
	assert_non_null(wf);
	sqlscan_funcs_free(wf);
	sqlscan_funcs_free(NULL);

	/* errors */
	static const char *bad[] = {
		"nextval()", "my\"f", "a-b", "'x'", "a;b", "1abc", "$x", "schema.", "f(",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = NULL;
		print_message("bad list: %s\n", bad[i]);
		assert_null(sqlscan_funcs_new(bad[i], &err));
		assert_non_null(err);
	}
	assert_null(sqlscan_funcs_new("a b c(", NULL)); /* err may be NULL */

	/* the default covers every function named in the design */
	static const char *writes[] = {
		"nextval", "setval", "lastval", "currval", "pg_advisory_lock", "pg_advisory_lock_shared",
		"pg_advisory_unlock", "pg_advisory_unlock_all", "pg_advisory_xact_lock",
		"pg_try_advisory_lock", "pg_try_advisory_xact_lock_shared", "pg_notify", "set_config",
		"txid_current", "txid_current_if_assigned", "pg_current_xact_id",
		"pg_current_xact_id_if_assigned", "lo_import", "lo_export", "lo_create", "lo_unlink",
		"lo_put", "lo_from_bytea",
	};
	for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++) {
		char sql[128];
		snprintf(sql, sizeof(sql), "SELECT %s(1)", writes[i]);
		print_message("%s\n", sql);
		assert_int_equal(R(sql).verdict, SQLSCAN_WRITE);
	}
}

/* ---- shard keys ------------------------------------------------------------------------- */

#define MAXK 8

static int K(const char *sql, const char *col, struct sqlscan_key *keys)
{
	size_t n = strlen(sql);
	char *copy = malloc(n ? n : 1);
	assert_non_null(copy);
	memcpy(copy, sql, n);
	int got = sqlscan_keys(copy, n, col, keys, MAXK);
	free(copy);
	print_message("%s -> %d\n", sql, got);
	return got;
}

static void expect_ints(const char *sql, const char *col, int n, const int64_t *want)
{
	struct sqlscan_key k[MAXK];
	assert_int_equal(K(sql, col, k), n);
	for (int i = 0; i < n && i < MAXK; i++) {
		assert_int_equal(k[i].kind, SQLSCAN_KEY_INT);
		assert_true(k[i].ival == want[i]);
	}
}

#define INTS(sql, ...) do { \
		static const int64_t w_[] = { __VA_ARGS__ }; \
		expect_ints(sql, "user_id", (int)(sizeof(w_) / sizeof(w_[0])), w_); \
	} while (0)
#define NONE(sql) assert_int_equal(K(sql, "user_id", k), 0)

static void test_keys_literals(void **state)
{
	(void)state;
	struct sqlscan_key k[MAXK];

	INTS("SELECT * FROM users WHERE user_id = 42", 42);
	INTS("SELECT * FROM users WHERE USER_ID=42;", 42);
	INTS("SELECT * FROM users u WHERE u.user_id = 42", 42);
	INTS("SELECT * FROM users WHERE public.users.user_id = 42", 42);
	INTS("SELECT * FROM users WHERE \"users\".\"user_id\" = 42", 42);
	INTS("SELECT * FROM users WHERE 42 = user_id", 42);
	INTS("SELECT * FROM users WHERE 42 = u.user_id AND x = 1", 42);
	INTS("SELECT * FROM users WHERE user_id = -5", -5);
	INTS("SELECT * FROM users WHERE user_id=-5", -5);
	INTS("SELECT * FROM users WHERE user_id = - 5", -5);
	INTS("SELECT * FROM users WHERE user_id = +5", 5);
	INTS("SELECT * FROM users WHERE -5 = user_id", -5);
	INTS("SELECT * FROM users WHERE user_id = 42::bigint", 42);
	INTS("SELECT * FROM users WHERE user_id = 42::pg_catalog.int8 ORDER BY 1", 42);
	INTS("SELECT * FROM users WHERE user_id = 42::numeric(20,0)", 42);
	INTS("SELECT * FROM users WHERE user_id = 42::double precision", 42);
	INTS("SELECT * FROM users WHERE 42::int8 = user_id", 42);
	INTS("SELECT * FROM users WHERE user_id = -9223372036854775808", INT64_MIN);
	INTS("SELECT * FROM users WHERE user_id = 9223372036854775807", INT64_MAX);
	INTS("SELECT * FROM t WHERE a = 1 AND user_id = 2 AND b = 3", 2);
	INTS("SELECT * FROM t WHERE (user_id = 2)", 2);
	INTS("SELECT * FROM t WHERE user_id = 1 OR user_id = 2", 1, 2);
	INTS("SELECT * FROM t WHERE id IN (SELECT id FROM s WHERE s.user_id = 7)", 7);
	INTS("SELECT * FROM a JOIN b ON b.user_id = 3 WHERE a.user_id = 3", 3, 3);
	INTS("UPDATE t SET name = 'x' WHERE user_id = 9", 9);
	INTS("DELETE FROM t WHERE user_id = 9 RETURNING *", 9);
	INTS("SELECT * FROM t WHERE user_id = 1; SELECT * FROM t WHERE user_id = 2", 1, 2);
	INTS("SELECT * FROM t WHERE user_id = 1 -- user_id = 2\n", 1);
	INTS("SELECT * FROM t WHERE user_id = 007", 7);
	INTS("SELECT * FROM t WHERE user_id = 42 and a = 1", 42);
	INTS("SELECT * FROM t WHERE user_id = 42/* c */AND a = 1", 42);
	INTS("SELECT * FROM t WHERE user_id\t=\n42", 42);
	INTS("SELECT * FROM t WHERE (user_id = 42)", 42);
	NONE("SELECT * FROM t WHERE user_id = 42 BETWEEN a AND b");
	NONE("SELECT * FROM t WHERE user_id = 42 notnull");
	NONE("SELECT * FROM t WHERE user_id = 42 LIKE '4%'");
	NONE("SELECT * FROM t WHERE user_id = 42 AT TIME ZONE 'UTC'");
	NONE("SELECT * FROM t WHERE user_id =~ 42");
	/* a NUL ends the string */
	assert_int_equal(sqlscan_keys("SELECT * FROM t WHERE user_id = 4\0" "2", 35, "user_id", k, MAXK), 1);
	assert_int_equal(k[0].ival, 4);
	/* table-qualified column names match the last component */
	expect_ints("SELECT * FROM t WHERE user_id = 5", "users.user_id", 1, (const int64_t[]){ 5 });
	expect_ints("SELECT * FROM t WHERE x.UserId = 5", "userid", 1, (const int64_t[]){ 5 });

	/* only plain equality with a literal */
	NONE("SELECT * FROM t WHERE user_id > 5");
	NONE("SELECT * FROM t WHERE user_id >= 5");
	NONE("SELECT * FROM t WHERE user_id <> 5");
	NONE("SELECT * FROM t WHERE user_id = other_id");
	NONE("SELECT * FROM t WHERE user_id = 1 + 2");
	NONE("SELECT * FROM t WHERE user_id = 2 * 3");
	NONE("SELECT * FROM t WHERE user_id = 1.5");
	NONE("SELECT * FROM t WHERE user_id = 1e3");
	NONE("SELECT * FROM t WHERE user_id = f(1)");
	NONE("SELECT * FROM t WHERE user_id = (SELECT 1)");
	NONE("SELECT * FROM t WHERE user_id = 99999999999999999999");
	NONE("SELECT * FROM t WHERE user_id + 1 = 5");
	NONE("SELECT * FROM t WHERE 1 + user_id = 5");
	NONE("SELECT * FROM t WHERE 5 = user_id + 1");
	NONE("SELECT * FROM t WHERE 10 - 5 = user_id");
	NONE("SELECT * FROM t WHERE NOT user_id = 5");
	NONE("SELECT * FROM t WHERE user_id = 5 IS NOT TRUE");
	NONE("SELECT * FROM t WHERE user_id::text = '5'");
	NONE("SELECT * FROM t WHERE user_id.x = 5");
	NONE("SELECT * FROM t WHERE other_user_id = 5");
	NONE("SELECT * FROM t WHERE user_idx = 5");
	NONE("SELECT * FROM t WHERE \"User_Id\" = 5");
	NONE("SELECT * FROM t WHERE user_id = -$1");
	NONE("SELECT * FROM t WHERE user_id = B'101'");
	NONE("SELECT * FROM t");
	NONE("");
	/* in strings, comments, quoted identifiers and dollar quotes: nothing */
	NONE("SELECT 'user_id = 5' FROM t");
	NONE("SELECT 1 /* user_id = 5 */");
	NONE("SELECT 1 -- user_id = 5");
	NONE("SELECT $$ user_id = 5 $$");
	NONE("SELECT \"user_id = 5\" FROM t");
	/* unscannable */
	assert_int_equal(K("SELECT * FROM t WHERE user_id = 5 AND name = 'x", "user_id", k), -1);
	assert_int_equal(K("SELECT * FROM t WHERE user_id = 5 /* x", "user_id", k), -1);
	assert_int_equal(K("SELECT $q$ user_id = 5", "user_id", k), -1);
	assert_int_equal(K("SELECT \"x", "user_id", k), -1);
}

static void test_keys_params_strings(void **state)
{
	(void)state;
	struct sqlscan_key k[MAXK];
	char buf[64];
	const char *sql;

	assert_int_equal(K("SELECT * FROM t WHERE user_id = $1", "user_id", k), 1);
	assert_int_equal(k[0].kind, SQLSCAN_KEY_PARAM);
	assert_int_equal(k[0].param, 1);
	assert_int_equal(K("SELECT * FROM t WHERE $12 = t.user_id", "user_id", k), 1);
	assert_int_equal(k[0].param, 12);
	assert_int_equal(K("SELECT * FROM t WHERE user_id = $3::bigint", "user_id", k), 1);
	assert_int_equal(k[0].param, 3);
	NONE("SELECT * FROM t WHERE user_id = $0");
	NONE("SELECT * FROM t WHERE user_id = $65536");
	assert_int_equal(K("SELECT * FROM t WHERE user_id = $65535 AND a = 1", "user_id", k), 1);
	assert_int_equal(k[0].param, 65535);
	assert_int_equal(K("SELECT * FROM t WHERE user_id\n=\t$2", "user_id", k), 1);
	assert_int_equal(k[0].param, 2);
	NONE("SELECT * FROM t WHERE user_id = $1 IS NULL");
	NONE("SELECT * FROM t WHERE user_id = $1 || 'x'");

	sql = "SELECT * FROM t WHERE user_id = '42'";
	assert_int_equal(K(sql, "user_id", k), 1);
	assert_int_equal(k[0].kind, SQLSCAN_KEY_STRING);
	assert_false(k[0].needs_unescape);
	assert_int_equal(k[0].str_len, 2);
	assert_memory_equal(sql + k[0].str_off, "42", 2);
	assert_int_equal(sqlscan_key_string(sql, &k[0], buf, sizeof(buf)), 2);
	assert_string_equal(buf, "42");

	sql = "SELECT * FROM t WHERE user_id = 'it''s'::text";
	assert_int_equal(K(sql, "user_id", k), 1);
	assert_true(k[0].needs_unescape);
	assert_false(k[0].e_string);
	assert_int_equal(sqlscan_key_string(sql, &k[0], buf, sizeof(buf)), 4);
	assert_string_equal(buf, "it's");

	sql = "SELECT * FROM t WHERE user_id = E'a\\'b\\n\\101\\x42'";
	assert_int_equal(K(sql, "user_id", k), 1);
	assert_true(k[0].needs_unescape);
	assert_true(k[0].e_string);
	assert_int_equal(sqlscan_key_string(sql, &k[0], buf, sizeof(buf)), 6);
	assert_string_equal(buf, "a'b\nAB");
	assert_int_equal(sqlscan_key_string(sql, &k[0], buf, 3), -1);

	sql = "SELECT * FROM t WHERE user_id = E'\\u0041'";
	assert_int_equal(K(sql, "user_id", k), 1);
	assert_int_equal(sqlscan_key_string(sql, &k[0], buf, sizeof(buf)), -1);

	sql = "SELECT * FROM t WHERE user_id = $$4'2$$";
	assert_int_equal(K(sql, "user_id", k), 1);
	assert_false(k[0].needs_unescape);
	assert_int_equal(sqlscan_key_string(sql, &k[0], buf, sizeof(buf)), 3);
	assert_string_equal(buf, "4'2");

	sql = "SELECT * FROM t WHERE 'abc' = user_id";
	assert_int_equal(K(sql, "user_id", k), 1);
	assert_int_equal(k[0].kind, SQLSCAN_KEY_STRING);
	assert_memory_equal(sql + k[0].str_off, "abc", 3);

	/* a string continued on the next line is one literal we do not assemble */
	NONE("SELECT * FROM t WHERE user_id = 'a'\n'b'");
	NONE("SELECT * FROM t WHERE 'a'\n'b' = user_id");
}

static void test_keys_in(void **state)
{
	(void)state;
	struct sqlscan_key k[MAXK];

	INTS("SELECT * FROM t WHERE user_id IN (5)", 5);
	INTS("SELECT * FROM t WHERE t.user_id IN (-5::int)", -5);
	INTS("SELECT * FROM t WHERE user_id IN (1, 2, 3)", 1, 2, 3);
	assert_int_equal(K("SELECT * FROM t WHERE user_id IN ($1, '7')", "user_id", k), 2);
	assert_int_equal(k[0].kind, SQLSCAN_KEY_PARAM);
	assert_int_equal(k[1].kind, SQLSCAN_KEY_STRING);
	NONE("SELECT * FROM t WHERE user_id IN (SELECT id FROM s)");
	NONE("SELECT * FROM t WHERE user_id IN (1, 2 + 3)");
	NONE("SELECT * FROM t WHERE user_id NOT IN (1)");
	NONE("SELECT * FROM t WHERE NOT user_id IN (1)");
	NONE("SELECT * FROM t WHERE user_id IN ()");
	/* more keys than room: all counted, the first max stored */
	struct sqlscan_key two[2];
	const char *sql = "SELECT * FROM t WHERE user_id IN (1, 2, 3, 4)";
	assert_int_equal(sqlscan_keys(sql, strlen(sql), "user_id", two, 2), 4);
	assert_true(two[0].ival == 1 && two[1].ival == 2);
	assert_int_equal(sqlscan_keys(sql, strlen(sql), "user_id", NULL, 0), 4);
}

static void test_keys_insert(void **state)
{
	(void)state;
	struct sqlscan_key k[MAXK];

	INTS("INSERT INTO t (user_id, name) VALUES (42, 'x')", 42);
	INTS("INSERT INTO t (name, user_id) VALUES ('x', 42)", 42);
	INTS("INSERT INTO public.t (a, b, user_id) VALUES (1, 2, 3), (4, 5, 6), (7, 8, -9)", 3, 6, -9);
	INTS("insert into t as x (USER_ID) values (1) on conflict (user_id) do nothing", 1);
	INTS("INSERT INTO t (a, user_id) VALUES ((1 + 2), 5), (f(1, 2), 6)", 5, 6);
	INTS("INSERT INTO t (a, user_id) VALUES (1, 2 + 3), (4, 5)", 5);
	INTS("INSERT INTO t (a, user_id) VALUES (1, DEFAULT), (4, 5::bigint)", 5);
	INTS("INSERT INTO t (user_id) OVERRIDING SYSTEM VALUE VALUES (8)", 8);
	INTS("WITH x AS (INSERT INTO t (user_id) VALUES (3) RETURNING *) SELECT * FROM x", 3);
	INTS("INSERT INTO t (user_id, a) SELECT user_id, a FROM s WHERE user_id = 4", 4);
	assert_int_equal(K("INSERT INTO t (name, user_id) VALUES ($1, $2), ($3, $4)", "user_id", k), 2);
	assert_int_equal(k[0].kind, SQLSCAN_KEY_PARAM);
	assert_int_equal(k[0].param, 2);
	assert_int_equal(k[1].param, 4);
	assert_int_equal(K("INSERT INTO t (\"user_id\") VALUES ('42')", "user_id", k), 1);
	assert_int_equal(k[0].kind, SQLSCAN_KEY_STRING);
	NONE("INSERT INTO t VALUES (1, 2)");
	NONE("INSERT INTO t (a, b) VALUES (1, 2)");
	NONE("INSERT INTO t (user_id_x) VALUES (1)");
	NONE("INSERT INTO t DEFAULT VALUES");
	NONE("INSERT INTO t (a, user_id) VALUES (1, (SELECT 2))");
	NONE("INSERT INTO t (a, user_id) SELECT 1, 2");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_corpus),
		cmocka_unit_test(test_hints),
		cmocka_unit_test(test_set_reset),
		cmocka_unit_test(test_tx),
		cmocka_unit_test(test_n_statements),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_funcs),
		cmocka_unit_test(test_keys_literals),
		cmocka_unit_test(test_keys_params_strings),
		cmocka_unit_test(test_keys_in),
		cmocka_unit_test(test_keys_insert),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
