/* test_shardsql.c: cmocka tests for the shard-key analysis (shardsql) and the literal lexer (sqlmask). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardsql.h"
#include "sqlmask.h"

enum { K = SHSQL_KEYED, N = SHSQL_NOKEY, R = SHSQL_REFUSE };

/* One statement's expected reading: verdict, and for keyed ones the integer values (or, for
 * text keys, the strings) it must find, in order; "$n" stands for a parameter. */
struct want {
	const char *sql;
	int key_type;           /* 0 int, 1 text, 2 uuid */
	int verdict;
	const char *values;     /* comma-separated: "5,-7,$1" or text values; NULL: none */
};

static const struct want cases[] = {
	/* keys that count */
	{ "SELECT * FROM accounts WHERE user_id = 5", 0, K, "5" },
	{ "SELECT * FROM accounts WHERE 5 = user_id AND name = 'x'", 0, K, "5" },
	{ "SELECT * FROM accounts a WHERE a.user_id = -7", 0, K, "-7" },
	{ "SELECT * FROM public.accounts WHERE public.accounts.user_id = 9", 0, K, "9" },
	{ "SELECT * FROM accounts WHERE user_id = '60'", 0, K, "60" },
	{ "SELECT * FROM accounts WHERE user_id = 60::int8", 0, K, "60" },
	{ "SELECT * FROM accounts WHERE user_id = 3000000000", 0, K, "3000000000" },
	{ "SELECT * FROM accounts WHERE user_id IN (1, 2, 3)", 0, K, "1,2,3" },
	{ "SELECT * FROM accounts WHERE user_id = 1 OR user_id = 2", 0, K, "1,2" },
	{ "SELECT * FROM accounts WHERE user_id = $1::bigint AND x = $2", 0, K, "$1" },
	{ "UPDATE accounts SET v = 1 WHERE user_id = 4", 0, K, "4" },
	{ "DELETE FROM accounts WHERE user_id = $1", 0, K, "$1" },
	{ "INSERT INTO accounts (v, user_id) VALUES (1, 6), (2, '7')", 0, K, "6,7" },
	{ "INSERT INTO accounts (user_id, v) VALUES (6, 1) ON CONFLICT (user_id) DO UPDATE SET v = 2", 0, K, "6" },
	{ "SELECT * FROM t WHERE user_id = 'alice'", 1, K, "alice" },
	{ "SELECT * FROM t WHERE user_id = E'a\\tb'", 1, K, "a\tb" },
	{ "SELECT * FROM t WHERE user_id = $$x'y$$", 1, K, "x'y" },
	{ "SELECT * FROM t WHERE user_id = 'bob'::text", 1, K, "bob" },
	{ "INSERT INTO t (user_id) VALUES (42)", 1, K, "42" },
	/* keys that do not restrict the rows: no key */
	{ "SELECT * FROM accounts WHERE NOT (user_id = 6)", 0, N, NULL },
	{ "SELECT * FROM accounts WHERE (user_id = 6) IS NOT TRUE", 0, N, NULL },
	{ "SELECT * FROM accounts WHERE CASE WHEN v = 1 THEN true ELSE user_id = 6 END", 0, N, NULL },
	{ "SELECT user_id = 6 FROM accounts", 0, N, NULL },
	{ "SELECT * FROM accounts ORDER BY user_id = 6", 0, N, NULL },
	{ "SELECT * FROM accounts WHERE v IN (SELECT v FROM b WHERE user_id = 6)", 0, N, NULL },
	{ "SELECT * FROM accounts WHERE user_id = 6 AND EXISTS (SELECT 1)", 0, N, NULL },
	{ "WITH c AS (SELECT 1) SELECT * FROM accounts WHERE user_id = 5", 0, N, NULL },
	{ "SELECT * FROM accounts a LEFT JOIN b ON a.user_id = 6", 0, N, NULL },
	{ "SELECT * FROM accounts WHERE user_id = 6 UNION SELECT * FROM accounts", 0, N, NULL },
	{ "SELECT * FROM accounts WHERE user_id = 6 -- the user's row\n OR v = 'x'", 0, N, NULL },
	{ "SELECT * FROM accounts WHERE user_id = 6 OR v = 2", 0, N, NULL },
	/* casts and operators that change the value */
	{ "SELECT * FROM accounts WHERE user_id = 14::bit(3)::int", 0, N, NULL },
	{ "SELECT * FROM accounts WHERE user_id = '60'::varchar(1)::bigint", 0, N, NULL },
	{ "SELECT * FROM accounts WHERE user_id = 16777221::float4::bigint", 0, N, NULL },
	{ "SELECT * FROM accounts WHERE user_id = 3::bool::int", 0, N, NULL },
	{ "SELECT * FROM accounts WHERE user_id = 1 OPERATOR(pg_catalog.+) 2", 0, N, NULL },
	{ "SELECT * FROM accounts WHERE user_id = 6.0", 0, N, NULL },
	{ "SELECT * FROM t WHERE user_id = 'aaa '::char(4)", 1, N, NULL },
	{ "SELECT * FROM t WHERE user_id = 'aaaz'::varchar(3)", 1, N, NULL },
	{ "SELECT * FROM t WHERE user_id = '2'::numeric(5,2)", 1, N, NULL },
	/* writes that would put or move a row on the wrong shard */
	{ "UPDATE accounts SET user_id = user_id + 95 WHERE user_id = 6", 0, R, NULL },
	{ "UPDATE accounts SET (user_id, v) = (7, 1) WHERE user_id = 6", 0, R, NULL },
	{ "INSERT INTO accounts (user_id, v) VALUES (6, 1) ON CONFLICT (user_id) DO UPDATE SET user_id = 12", 0, R, NULL },
	{ "INSERT INTO accounts (user_id, v) SELECT user_id + 95, v FROM accounts WHERE user_id = 6", 0, R, NULL },
	{ "INSERT INTO accounts VALUES (6, 1)", 0, R, NULL },
	{ "INSERT INTO accounts (user_id) VALUES (16777221::float4::bigint)", 0, R, NULL },
	{ "INSERT INTO accounts (user_id) VALUES (NULL)", 0, R, NULL },
	{ "COPY accounts FROM STDIN", 0, R, NULL },
	/* no table or no key */
	{ "SET search_path = public", 0, N, NULL },
	{ "SELECT 1", 0, N, NULL },
	{ "INSERT INTO log (msg) VALUES ('x')", 0, N, NULL },
	{ "UPDATE accounts SET v = 1", 0, N, NULL },
};

/* The values of statement st as a comma-separated string. */
static void values_of(const struct shsql_stmt *st, char *out, size_t cap)
{
	size_t o = 0;
	out[0] = '\0';
	for (uint32_t j = 0; j < st->n_values && o < cap; j++) {
		const struct shsql_value *v = &st->v[j];
		int n;
		if (v->src == SHSQL_PARAM)
			n = snprintf(out + o, cap - o, "%s$%u", j ? "," : "", v->param);
		else if (v->src == SHSQL_LIT_INT)
			n = snprintf(out + o, cap - o, "%s%lld", j ? "," : "", (long long)v->ival);
		else
			n = snprintf(out + o, cap - o, "%s%s", j ? "," : "", v->str);
		o += (size_t)n;
	}
}

static void test_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct want *w = &cases[i];
		struct shsql_result r;
		assert_int_equal(shsql_analyze(w->sql, "user_id", w->key_type, &r), 0);
		if (r.parse_error || r.n_stmts != 1 || r.st[0].verdict != w->verdict) {
			print_error("case %zu: %s: parse_error %d, %u statements, verdict %d (want %d)\n", i,
				    w->sql, r.parse_error, r.n_stmts, r.n_stmts ? r.st[0].verdict : -1,
				    w->verdict);
			fail();
		}
		if (w->values) {
			char got[256];
			values_of(&r.st[0], got, sizeof(got));
			if (strcmp(got, w->values) != 0) {
				print_error("case %zu: %s: values \"%s\", want \"%s\"\n", i, w->sql, got, w->values);
				fail();
			}
		}
		shsql_free(&r);
	}
}

static void test_statements_and_errors(void **state)
{
	(void)state;
	struct shsql_result r;
	assert_int_equal(shsql_analyze("SET x = 1; SELECT * FROM a WHERE user_id = 2; COMMIT",
				       "user_id", 0, &r), 0);
	assert_int_equal(r.n_stmts, 3);
	assert_int_equal(r.st[0].kind, SHSQL_UTILITY);
	assert_int_equal(r.st[1].verdict, SHSQL_KEYED);
	assert_true(r.st[2].tx_control);
	shsql_free(&r);
	assert_int_equal(shsql_analyze("SELEC 1", "user_id", 0, &r), 0);
	assert_true(r.parse_error);
	assert_true(r.error_loc > 0);
	shsql_free(&r);
	/* the literal's location is its first digit, after a unary minus */
	assert_int_equal(shsql_analyze("SELECT * FROM a WHERE user_id = - 5", "user_id", 0, &r), 0);
	assert_true(r.st[0].v[0].negated);
	assert_int_equal(r.st[0].v[0].loc, 34);
	shsql_free(&r);
	/* fan-out: only plain single-table reads */
	assert_int_equal(shsql_analyze("SELECT v FROM a WHERE n = 1", "user_id", 0, &r), 0);
	assert_true(r.st[0].fanout_ok);
	shsql_free(&r);
	assert_int_equal(shsql_analyze("SELECT count(*) FROM a", "user_id", 0, &r), 0);
	assert_false(r.st[0].fanout_ok);
	shsql_free(&r);
	assert_int_equal(shsql_analyze("SELECT v FROM a ORDER BY v", "user_id", 0, &r), 0);
	assert_false(r.st[0].fanout_ok);
	shsql_free(&r);
}

/* ---- sqlmask ---- */

static int scan(const char *sql, struct sqlmask_lit *lits, uint64_t *h)
{
	return sqlmask_scan(sql, strlen(sql), lits, 16, h);
}

static void test_mask_literals(void **state)
{
	(void)state;
	struct sqlmask_lit l[16];
	uint64_t h;
	const char *q = "SELECT 'a''b', E'c\\'d', $t$e'f$t$, 12, 1.5e3, x'0F', \"id\"\"x\" -- 'no\n/* 'no' */";
	assert_int_equal(scan(q, l, &h), 6);
	assert_int_equal(l[0].cls, SQLMASK_STR);
	assert_int_equal(l[1].cls, SQLMASK_ESTR);
	assert_int_equal(l[2].cls, SQLMASK_DOLLAR);
	assert_int_equal(l[3].cls, SQLMASK_INT);
	assert_int_equal(l[4].cls, SQLMASK_NUM);
	assert_int_equal(l[5].cls, SQLMASK_BITS);
	char buf[32];
	assert_int_equal(sqlmask_string(q, &l[0], buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "a'b", 3);
	assert_int_equal(sqlmask_string(q, &l[1], buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "c'd", 3);
	assert_int_equal(sqlmask_string(q, &l[2], buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "e'f", 3);
	/* what the lexer does not follow */
	assert_int_equal(scan("SELECT 'a'\n'b'", l, &h), -1);          /* continued string */
	assert_int_equal(scan("SELECT U&'\\0041'", l, &h), -1);
	assert_int_equal(scan("SELECT 'open", l, &h), -1);
	assert_int_equal(scan("SELECT /* open", l, &h), -1);
	assert_int_equal(scan("SELECT $q$ open", l, &h), -1);
	/* "1..10": an integer, then two points */
	assert_int_equal(scan("SELECT 1..10", l, &h), 2);
	assert_int_equal(l[0].cls, SQLMASK_INT);
	assert_int_equal(l[0].len, 1);
	/* identifiers may hold $ and digits; $1 is a parameter, not a literal */
	assert_int_equal(scan("SELECT a$b$c, $1 FROM t1", l, &h), 0);
	/* E'\\u' escapes depend on the encoding */
	assert_int_equal(scan("SELECT E'\\u00e9'", l, &h), 1);
	assert_int_equal(sqlmask_string("SELECT E'\\u00e9'", &l[0], buf, sizeof(buf)), -1);
}

static void test_mask_shapes(void **state)
{
	(void)state;
	struct sqlmask_lit a[16], b[16];
	uint64_t ha, hb;
	const char *x = "SELECT * FROM t WHERE user_id = 5 AND s = 'x'";
	const char *y = "SELECT * FROM t WHERE user_id = 123456 AND s = 'longer text'";
	const char *z = "SELECT * FROM t WHERE user_id = '5' AND s = 'x'";
	const char *w = "SELECT * FROM t WHERE user_id = 5 OR s = 'x'";
	int na = scan(x, a, &ha), nb = scan(y, b, &hb);
	assert_int_equal(na, 2);
	assert_int_equal(nb, 2);
	assert_true(ha == hb);
	assert_true(sqlmask_same(x, a, (uint32_t)strlen(x), y, b, (uint32_t)strlen(y), 2));
	nb = scan(z, b, &hb);
	assert_false(ha == hb && sqlmask_same(x, a, (uint32_t)strlen(x), z, b, (uint32_t)strlen(z), 2));
	nb = scan(w, b, &hb);
	assert_false(sqlmask_same(x, a, (uint32_t)strlen(x), w, b, (uint32_t)strlen(w), nb));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_statements_and_errors),
		cmocka_unit_test(test_mask_literals),
		cmocka_unit_test(test_mask_shapes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
