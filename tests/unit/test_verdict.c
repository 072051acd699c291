/* test_verdict.c: unit tests for the verdict caches: every answer must equal sqlscan_classify's, digit variants and slot reuse included. */
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
#include "verdict.h"

/* ---- helpers ---------------------------------------------------------------------------- */

/* One cache, filled with one write_functions list, as a worker holds it. */
struct ctx {
	struct verdict_cache *vc;
	struct sqlscan_funcs *wf;
	uint16_t memo;          /* one client's memo, kept across calls */
	int checks, failed;
};

static void ctx_init(struct ctx *c, const char *list)
{
	memset(c, 0, sizeof(*c));
	if (list) {
		const char *err = NULL;
		c->wf = sqlscan_funcs_new(list, &err);
		assert_non_null(c->wf);
		assert_null(err);
	}
}

static void ctx_done(struct ctx *c)
{
	verdict_free(c->vc);
	sqlscan_funcs_free(c->wf);
	c->vc = NULL;
	c->wf = NULL;
	assert_int_equal(c->failed, 0);
}

static bool same_result(const struct sqlscan_result *a, const struct sqlscan_result *b)
{
	return a->verdict == b->verdict && a->hint_role == b->hint_role && a->tx == b->tx &&
	       a->set == b->set && a->n_statements == b->n_statements &&
	       a->has_hint_user_id == b->has_hint_user_id && a->hint_user_id == b->hint_user_id &&
	       a->hint_shard == b->hint_shard &&
	       strncmp(a->set_value, b->set_value, SQLSCAN_SET_VALUE_MAX) == 0 &&
	       a->set_value_bad == b->set_value_bad && a->lex_error == b->lex_error;
}

static void print_text(const char *sql, size_t len)
{
	char buf[256];
	size_t o = 0;
	for (size_t i = 0; i < len && o + 5 < sizeof(buf); i++) {
		unsigned char ch = (unsigned char)sql[i];
		if (ch >= 0x20 && ch < 0x7f)
			buf[o++] = (char)ch;
		else
			o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\\x%02x", ch);
	}
	buf[o] = '\0';
	print_error("  text (%zu bytes): %s%s\n", len, buf, o + 5 >= sizeof(buf) ? "..." : "");
}

static void print_result(const char *who, const struct sqlscan_result *r)
{
	print_error("  %s: verdict %d role %d tx %d set %d n %d uid %d/%lld shard %d value \"%.*s\" bad %d lexerr %d\n",
		    who, r->verdict, r->hint_role, r->tx, r->set, r->n_statements, r->has_hint_user_id,
		    (long long)r->hint_user_id, r->hint_shard, SQLSCAN_SET_VALUE_MAX, r->set_value,
		    r->set_value_bad, r->lex_error);
}

/*
 * Classifies sql[0..len) through the cache (last: a memo, or NULL for the exact cache) and
 * directly, from an exactly-sized heap copy so that ASan sees any read past len; counts a
 * mismatch.  The direct result goes to *out when out is not NULL.
 */
static bool check(struct ctx *c, uint16_t *last, const char *sql, size_t len, struct sqlscan_result *out)
{
	char *copy = malloc(len ? len : 1);
	assert_non_null(copy);
	memcpy(copy, sql, len);
	struct sqlscan_result want, got;
	memset(&got, 0xA5, sizeof(got)); /* no field may be left as it was */
	sqlscan_classify(copy, len, c->wf, &want);
	verdict_classify(&c->vc, last, copy, len, c->wf, &got);
	free(copy);
	c->checks++;
	if (out)
		*out = want;
	if (same_result(&got, &want))
		return true;
	c->failed++;
	print_error("verdict_classify differs from sqlscan_classify (%s):\n", last ? "shape" : "exact");
	print_text(sql, len);
	print_result("sqlscan", &want);
	print_result("verdict", &got);
	return false;
}

/* Both caches, each twice (a miss, then a hit), with the context's memo. */
static void check_both(struct ctx *c, const char *sql, size_t len, struct sqlscan_result *out)
{
	check(c, &c->memo, sql, len, out);
	check(c, &c->memo, sql, len, NULL);
	check(c, NULL, sql, len, NULL);
	check(c, NULL, sql, len, NULL);
}

static void check_str(struct ctx *c, const char *sql, struct sqlscan_result *out)
{
	check_both(c, sql, strlen(sql), out);
}

/* Digit maps for the variants of a text. */
enum { V_PLUS1, V_NINE, V_NINE_MINUS, V_ZERO, V_BY_POS, V_COUNT };

/* dst = src with its digits changed by map kind; returns whether any byte changed. */
static bool vary(const char *src, size_t len, int kind, char *dst)
{
	bool changed = false;
	for (size_t i = 0; i < len; i++) {
		char ch = src[i];
		if (ch >= '0' && ch <= '9') {
			int d = ch - '0';
			switch (kind) {
			case V_PLUS1: d = (d + 1) % 10; break;
			case V_NINE: d = 9; break;
			case V_NINE_MINUS: d = 9 - d; break;
			case V_ZERO: d = 0; break;
			default: d = (int)((d + 3 + i) % 10); break;
			}
			changed |= ch != (char)('0' + d);
			ch = (char)('0' + d);
		}
		dst[i] = ch;
	}
	return changed;
}

/* The text, then each of its digit variants, through the same cache and memo: a shape the text
 * stored answers its variants.  Returns how many variants differed from the text. */
static int check_variants(struct ctx *c, const char *sql, size_t len)
{
	char *v = malloc(len ? len : 1);
	int n = 0;
	assert_non_null(v);
	check_both(c, sql, len, NULL);
	for (int k = 0; k < V_COUNT; k++) {
		if (!vary(sql, len, k, v))
			continue;
		n++;
		check_both(c, v, len, NULL);
		/* the original again, after its variant took the memo */
		check(c, &c->memo, sql, len, NULL);
	}
	free(v);
	return n;
}

/* ---- the corpus ------------------------------------------------------------------------- */

struct corpus {
	char **sql;
	int n;
};

static void load_corpus(struct corpus *cp)
{
	char path[4096], line[8192];
	FILE *f = open_corpus(path, sizeof(path));
	if (!f)
		fail_msg("cannot open the corpus %s (set SQLSCAN_CORPUS or srcdir)", path);
	cp->sql = NULL;
	cp->n = 0;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		char *tab = strchr(line, '\t');
		if (!tab)
			continue; /* test_sqlscan reports malformed lines */
		unescape_newlines(tab + 1);
		char **grown = realloc(cp->sql, (size_t)(cp->n + 1) * sizeof(*grown));
		assert_non_null(grown);
		cp->sql = grown;
		cp->sql[cp->n] = strdup(tab + 1);
		assert_non_null(cp->sql[cp->n]);
		cp->n++;
	}
	fclose(f);
	assert_true(cp->n >= 170);
}

static void free_corpus(struct corpus *cp)
{
	for (int i = 0; i < cp->n; i++)
		free(cp->sql[i]);
	free(cp->sql);
}

static void corpus_with(const struct corpus *cp, const char *list, const char *name)
{
	struct ctx c;
	int variants = 0;
	ctx_init(&c, list);
	/* two passes through one long-lived cache: the second meets slots the first filled */
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < cp->n; i++)
			variants += check_variants(&c, cp->sql[i], strlen(cp->sql[i]));
	print_message("corpus, write_functions %s: %d statements, %d digit variants, %d checks, %d failed\n",
		      name, cp->n, variants / 2, c.checks, c.failed);
	assert_true(variants > 100);
	ctx_done(&c);
}

static void test_corpus(void **state)
{
	(void)state;
	struct corpus cp;
	load_corpus(&cp);
	corpus_with(&cp, sqlscan_default_write_functions, "default");
	corpus_with(&cp, NULL, "NULL");
	corpus_with(&cp, "f1, nextval", "\"f1, nextval\"");
	corpus_with(&cp, "", "\"\"");
	free_corpus(&cp);
}

/* ---- digit-sensitive rules -------------------------------------------------------------- */

/* a and b, same length, through one cache and memo, in both orders: returns the direct results. */
static void pair(struct ctx *c, const char *a, const char *b, struct sqlscan_result *ra,
		 struct sqlscan_result *rb)
{
	assert_int_equal(strlen(a), strlen(b));
	check_str(c, a, ra);
	check_str(c, b, rb);
	check_str(c, a, NULL);
	check_str(c, b, NULL);
}

static void test_explain_options(void **state)
{
	(void)state;
	struct ctx c;
	struct sqlscan_result a, b;
	ctx_init(&c, sqlscan_default_write_functions);

	/* ANALYZE 0 is off: the query is not run */
	pair(&c, "EXPLAIN (ANALYZE 0) SELECT 1", "EXPLAIN (ANALYZE 1) SELECT 1", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_READ);
	assert_int_equal(b.verdict, SQLSCAN_WRITE);
	pair(&c, "EXPLAIN (ANALYZE 1) SELECT 2", "EXPLAIN (ANALYZE 0) SELECT 2", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_WRITE);
	assert_int_equal(b.verdict, SQLSCAN_READ);
	pair(&c, "EXPLAIN (ANALYZE 0) DELETE FROM t WHERE id = 1",
	     "EXPLAIN (ANALYZE 1) DELETE FROM t WHERE id = 1", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_WRITE);
	assert_int_equal(b.verdict, SQLSCAN_WRITE);
	pair(&c, "EXPLAIN (ANALYZE 0, VERBOSE 1) SELECT 10", "EXPLAIN (ANALYZE 5, VERBOSE 0) SELECT 10",
	     &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_READ);
	assert_int_equal(b.verdict, SQLSCAN_WRITE);
	/* after a SELECT, in a second statement */
	pair(&c, "SELECT 1; EXPLAIN (ANALYZE 0) SELECT 1", "SELECT 1; EXPLAIN (ANALYZE 1) SELECT 1", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_READ);
	assert_int_equal(b.verdict, SQLSCAN_WRITE);
	assert_int_equal(a.n_statements, 2);
	ctx_done(&c);
}

static void test_hint_digits(void **state)
{
	(void)state;
	struct ctx c;
	struct sqlscan_result a, b;
	ctx_init(&c, sqlscan_default_write_functions);

	pair(&c, "/* pgmux: shard=1 */ SELECT 1", "/* pgmux: shard=2 */ SELECT 1", &a, &b);
	assert_int_equal(a.hint_shard, 1);
	assert_int_equal(b.hint_shard, 2);
	/* INT32_MAX, and the out-of-range number of the same length */
	pair(&c, "SELECT 1 /* pgmux: shard=2147483647 */", "SELECT 1 /* pgmux: shard=2147483648 */", &a, &b);
	assert_int_equal(a.hint_shard, 2147483647);
	assert_int_equal(b.hint_shard, -1);
	pair(&c, "SELECT 7 /* pgmux: shard=9999999999 */", "SELECT 7 /* pgmux: shard=1000000000 */", &a, &b);
	assert_int_equal(a.hint_shard, -1);
	assert_int_equal(b.hint_shard, 1000000000);
	pair(&c, "/* pgmux: user_id=9223372036854775807 */ SELECT 1",
	     "/* pgmux: user_id=9223372036854775808 */ SELECT 1", &a, &b);
	assert_true(a.has_hint_user_id);
	assert_true(a.hint_user_id == INT64_MAX);
	assert_false(b.has_hint_user_id);
	pair(&c, "/* pgmux: user_id=12 */ SELECT * FROM t WHERE a = 3",
	     "/* pgmux: user_id=34 */ SELECT * FROM t WHERE a = 3", &a, &b);
	assert_true(a.hint_user_id == 12);
	assert_true(b.hint_user_id == 34);
	/* a hint in a second statement, after a plain SELECT */
	pair(&c, "SELECT 1; /* pgmux: shard=3 */ SELECT 2", "SELECT 1; /* pgmux: shard=4 */ SELECT 2", &a, &b);
	assert_int_equal(a.hint_shard, 3);
	assert_int_equal(b.hint_shard, 4);
	/* a line comment is no hint, but it holds a '-': the digits around it vary freely */
	check_variants(&c, "SELECT 1 -- pgmux: shard=1\n, 2", strlen("SELECT 1 -- pgmux: shard=1\n, 2"));
	ctx_done(&c);
}

static void test_set_digits(void **state)
{
	(void)state;
	struct ctx c;
	struct sqlscan_result a, b;
	ctx_init(&c, sqlscan_default_write_functions);

	pair(&c, "SET pgmux.shard = 1", "SET pgmux.shard = 2", &a, &b);
	assert_int_equal(a.set, SQLSCAN_SET_SHARD);
	assert_string_equal(a.set_value, "1");
	assert_string_equal(b.set_value, "2");
	pair(&c, "SET pgmux.user_id = 42", "SET pgmux.user_id = 90", &a, &b);
	assert_string_equal(a.set_value, "42");
	assert_string_equal(b.set_value, "90");
	pair(&c, "SET pgmux.user_id = '1'", "SET pgmux.user_id = '5'", &a, &b);
	assert_string_equal(b.set_value, "5");
	pair(&c, "SET pgmux.shard TO 0", "SET pgmux.shard TO 8", &a, &b);
	assert_string_equal(a.set_value, "0");
	assert_string_equal(b.set_value, "8");
	/* a value that is too long is cut and flagged; the digits kept still differ */
	char l1[96], l2[96];
	int n1 = snprintf(l1, sizeof(l1), "SET pgmux.user_id = ");
	memset(l1 + n1, '1', 70);
	l1[n1 + 70] = '\0';
	memcpy(l2, l1, sizeof(l1));
	memset(l2 + n1, '2', 70);
	pair(&c, l1, l2, &a, &b);
	assert_true(a.set_value_bad);
	assert_int_equal(a.set_value[0], '1');
	assert_int_equal(b.set_value[0], '2');
	/* SET of something else, and a SELECT that mentions the setting */
	check_variants(&c, "SET work_mem = 64", strlen("SET work_mem = 64"));
	check_variants(&c, "SELECT 'SET pgmux.shard = 1'", strlen("SELECT 'SET pgmux.shard = 1'"));
	ctx_done(&c);
}

static void test_dollar_tags(void **state)
{
	(void)state;
	struct ctx c;
	struct sqlscan_result a, b;
	ctx_init(&c, sqlscan_default_write_functions);

	/* $a1$ ... $a2$ does not close: the text does not lex */
	pair(&c, "SELECT $a1$ x $a1$", "SELECT $a1$ x $a2$", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_READ);
	assert_false(a.lex_error);
	assert_int_equal(b.verdict, SQLSCAN_WRITE);
	assert_true(b.lex_error);
	pair(&c, "SELECT $a1$ $a2$ ; DELETE FROM t $a1$", "SELECT $a1$ $a1$ ; DELETE FROM t $a1$", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_READ);
	assert_int_equal(a.n_statements, 1);
	assert_true(b.lex_error);
	/* $1 is a parameter, $1$ is not a tag */
	pair(&c, "SELECT $1, $2", "SELECT $3, $4", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_READ);
	assert_int_equal(b.verdict, SQLSCAN_READ);
	check_variants(&c, "SELECT $t1$ 1 $t1$, $2", strlen("SELECT $t1$ 1 $t1$, $2"));
	check_variants(&c, "SELECT $$1$$ INTO t9", strlen("SELECT $$1$$ INTO t9"));
	ctx_done(&c);
}

static void test_second_statement(void **state)
{
	(void)state;
	struct ctx c;
	struct sqlscan_result a, b;
	ctx_init(&c, sqlscan_default_write_functions);

	pair(&c, "SELECT 1; DELETE FROM t WHERE id = 1", "SELECT 2; DELETE FROM t WHERE id = 3", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_WRITE);
	assert_int_equal(a.n_statements, 2);
	assert_int_equal(b.verdict, SQLSCAN_WRITE);
	pair(&c, "SELECT 1; SELECT 2", "SELECT 3; SELECT 4", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_READ);
	assert_int_equal(b.n_statements, 2);
	pair(&c, "SELECT 1; SET pgmux.shard = 1", "SELECT 1; SET pgmux.shard = 2", &a, &b);
	assert_int_equal(a.set, SQLSCAN_SET_NONE);
	assert_int_equal(a.n_statements, 2);
	check_variants(&c, "SELECT 1;", strlen("SELECT 1;"));
	check_variants(&c, "SELECT 1;;;", strlen("SELECT 1;;;"));
	check_variants(&c, "SELECT (1; 2)", strlen("SELECT (1; 2)"));
	ctx_done(&c);
}

static void test_write_function_digits(void **state)
{
	(void)state;
	struct ctx c;
	struct sqlscan_result a, b;

	/* a name with a digit: shapes are off, and f1( differs from f2( */
	ctx_init(&c, "f1");
	pair(&c, "SELECT f1(1)", "SELECT f2(1)", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_WRITE);
	assert_int_equal(b.verdict, SQLSCAN_READ);
	pair(&c, "SELECT f2(1)", "SELECT f1(1)", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_READ);
	assert_int_equal(b.verdict, SQLSCAN_WRITE);
	pair(&c, "SELECT \"f1\"(0) FROM t", "SELECT \"f9\"(0) FROM t", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_WRITE);
	assert_int_equal(b.verdict, SQLSCAN_READ);
	pair(&c, "SELECT s.f1(x)", "SELECT s.f0(x)", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_WRITE);
	assert_int_equal(b.verdict, SQLSCAN_READ);
	ctx_done(&c);

	/* a glob with a digit */
	ctx_init(&c, "nextval, lo_*7");
	pair(&c, "SELECT lo_x7(1), 2", "SELECT lo_x8(1), 2", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_WRITE);
	assert_int_equal(b.verdict, SQLSCAN_READ);
	ctx_done(&c);

	/* no digit in the list: a digit in a name matches only '*', whatever its value */
	ctx_init(&c, sqlscan_default_write_functions);
	pair(&c, "SELECT f1(1)", "SELECT f2(1)", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_READ);
	assert_int_equal(b.verdict, SQLSCAN_READ);
	pair(&c, "SELECT lo_1(2)", "SELECT lo_9(2)", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_WRITE);
	assert_int_equal(b.verdict, SQLSCAN_WRITE);
	pair(&c, "SELECT pg_advisory1lock(3)", "SELECT pg_advisory2lock(3)", &a, &b);
	assert_int_equal(a.verdict, SQLSCAN_WRITE);
	assert_int_equal(b.verdict, SQLSCAN_WRITE);
	ctx_done(&c);
}

static void test_numbers_and_names(void **state)
{
	(void)state;
	static const char *texts[] = {
		"SELECT 1e5", "SELECT 1.5", "SELECT .5, 5., 1..2", "SELECT 1e+5, 2E9, 3e",
		"SELECT 0x1F, 0o17, 0b101, 1_000_000", "SELECT 1INTO t", "SELECT 1e5INTO t",
		"SELECT 1eINTO", "SELECT t.1update", "SELECT \"c1\", \"2x\" FROM \"t3\"",
		"SELECT \"a\"\"1\"(2)", "SELECT U&\"\\0064elete\"", "SELECT E'\\134', E'\\x41', B'101', X'1F'",
		"SELECT 'it''s 1', '\\'' , 2", "SELECT 1 FOR UPDATE", "SELECT 2 FOR KEY SHARE",
		"SELECT 3 FROM t FOR SHARE", "SELECT a1, b22, c333 FROM t4 WHERE x5 = 66",
		"SELECT nextval('s1')", "SELECT setval('s', 1)", "SELECT 1 AS update_count",
		"SELECT ((1)", "SELECT (1))", "SELECT 'unterminated 1", "SELECT \"open 2",
		"SELECT 12345678901234567890123456789",
	};
	struct ctx c;
	ctx_init(&c, sqlscan_default_write_functions);
	int variants = 0;
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		variants += check_variants(&c, texts[i], strlen(texts[i]));
	assert_true(variants > 50);
	struct sqlscan_result r;
	check_str(&c, "SELECT 1INTO t", &r);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	check_str(&c, "SELECT 1 FOR UPDATE", &r);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	check_str(&c, "SELECT 'unterminated 1", &r);
	assert_true(r.lex_error);
	ctx_done(&c);
}

static void test_nul_bytes(void **state)
{
	(void)state;
#define T(lit) { lit, sizeof(lit) - 1 }
	static const struct { const char *s; size_t n; } texts[] = {
		T("SELECT 1\0; DELETE FROM t"),
		T("SELECT 1\0"),
		T("SELECT 1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"),
		T("SELECT 1\0 INTO x"),
		T("SELECT 1 INTO x\0"),
		T("SELECT 123456789\0" "123456789 INTO t"),
		T("SELECT 'a\0' 1"),
		T("\0SELECT 1"),
		T("SELECT\0 1"),
		T("SELECT 1 /* \0 */"),
		T("SELECT 1 /* \0 */ 2 INTO t"),
	};
#undef T
	struct ctx c;
	struct sqlscan_result a, b;
	ctx_init(&c, sqlscan_default_write_functions);
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		assert_true(check_variants(&c, texts[i].s, texts[i].n) > 0);

	/* the same bytes but for a NUL where a space was: the NUL ends the text */
	check_both(&c, "SELECT 1 INTO x", 15, &a);
	check_both(&c, "SELECT 1\0INTO x", 15, &b);
	assert_int_equal(a.verdict, SQLSCAN_WRITE);
	assert_int_equal(b.verdict, SQLSCAN_READ);
	check_both(&c, "SELECT 2\0INTO x", 15, &b);
	check_both(&c, "SELECT 3 INTO x", 15, &a);
	assert_int_equal(a.verdict, SQLSCAN_WRITE);
	assert_int_equal(b.verdict, SQLSCAN_READ);
	/* a shape is zero-padded: a text that ends in NULs is still another length */
	check_both(&c, "SELECT 12345678", 15, &a);
	check_both(&c, "SELECT 12345678\0", 16, &b);
	check_both(&c, "SELECT 1234567\0\0", 16, &b);
	assert_int_equal(b.n_statements, 1);
	ctx_done(&c);
}

/* Texts of every length from 7 to 80 with "INTO" (a write) or "ONTO" (a read) at every word
 * position among digits: the compare must see every byte, whichever 16-byte block or tail it
 * falls in, also when the memo points at the other text's slot. */
static void test_lengths_and_tails(void **state)
{
	(void)state;
	struct ctx c;
	char a[96], b[96];
	int pairs = 0;
	ctx_init(&c, sqlscan_default_write_functions);

	/* short texts, which may not even hold SELECT */
	const char *full = "SELECT 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5";
	for (size_t len = 1; len <= strlen(full); len++)
		check_variants(&c, full, len);

	for (size_t len = 11; len <= 80; len++) {
		for (size_t q = 6; q + 5 <= len; q++) {
			/* "SELECT 1 2 3 ..." with " INTO" / " ONTO" at q (and a space after it when it fits) */
			memcpy(a, "SELECT", 6);
			for (size_t i = 6; i < len; i++)
				a[i] = (i & 1) ? '0' + (char)(i % 10) : ' ';
			memcpy(a + q, " INTO", 5);
			if (q + 5 < len)
				a[q + 5] = ' ';
			memcpy(b, a, len);
			b[q + 1] = 'O';
			struct sqlscan_result ra, rb;
			check(&c, &c.memo, a, len, &ra);
			check(&c, &c.memo, b, len, &rb);
			check(&c, &c.memo, a, len, NULL);
			check(&c, &c.memo, b, len, NULL);
			assert_int_equal(ra.verdict, SQLSCAN_WRITE);
			assert_int_equal(rb.verdict, SQLSCAN_READ);
			/* and their digit variants, after the originals stored their shapes */
			char va[96], vb[96];
			for (int k = 0; k < V_COUNT; k++) {
				vary(a, len, k, va);
				vary(b, len, k, vb);
				check(&c, &c.memo, va, len, NULL);
				check(&c, &c.memo, vb, len, NULL);
				check(&c, NULL, va, len, NULL);
				check(&c, NULL, vb, len, NULL);
			}
			/* one differing byte anywhere else: a digit turned into a letter */
			for (size_t i = 7; i < len; i += 2) {
				if (a[i] < '0' || a[i] > '9')
					continue;
				memcpy(va, a, len);
				va[i] = 'x';
				check(&c, &c.memo, a, len, NULL);
				check(&c, &c.memo, va, len, NULL);
			}
			pairs++;
		}
	}
	print_message("%d INTO/ONTO pairs, %d checks\n", pairs, c.checks);
	assert_true(pairs > 2000);
	ctx_done(&c);
}

/* Build "SELECT 1 2 ... " of exactly len bytes ending in " INTO"/" ONTO" (len >= 12). */
static char *long_select(size_t len, bool into)
{
	char *s = malloc(len);
	assert_non_null(s);
	memcpy(s, "SELECT", 6);
	for (size_t i = 6; i < len; i++)
		s[i] = (i & 1) ? '0' + (char)(i % 10) : ' ';
	memcpy(s + len - 5, into ? " INTO" : " ONTO", 5);
	return s;
}

static void test_max_length(void **state)
{
	(void)state;
	struct ctx c;
	ctx_init(&c, sqlscan_default_write_functions);

	for (size_t len = VERDICT_TEXT_MAX - 17; len <= VERDICT_TEXT_MAX + 17; len++) {
		char *a = long_select(len, true), *b = long_select(len, false);
		struct sqlscan_result ra, rb;
		check_variants(&c, a, len);
		check_variants(&c, b, len);
		check(&c, &c.memo, a, len, &ra);
		check(&c, &c.memo, b, len, &rb);
		assert_int_equal(ra.verdict, SQLSCAN_WRITE);
		assert_int_equal(rb.verdict, SQLSCAN_READ);
		free(a);
		free(b);
	}

	/* 512 bytes are cached (the memo names a slot), 513 are classified each time (the memo
	 * stays as it was) */
	char *s = long_select(VERDICT_TEXT_MAX, false);
	uint16_t memo = 0;
	assert_true(check(&c, &memo, s, VERDICT_TEXT_MAX, NULL));
	assert_true(memo >= 1 && memo <= 256);
	free(s);
	s = long_select(VERDICT_TEXT_MAX + 1, false);
	memo = 0;
	assert_true(check(&c, &memo, s, VERDICT_TEXT_MAX + 1, NULL));
	assert_int_equal(memo, 0);
	memo = 7;
	assert_true(check(&c, &memo, s, VERDICT_TEXT_MAX + 1, NULL));
	assert_int_equal(memo, 7);
	free(s);
	/* an empty text is no statement */
	struct sqlscan_result r;
	memo = 0;
	assert_true(check(&c, &memo, "", 0, &r));
	assert_int_equal(r.n_statements, 0);
	assert_int_equal(memo, 0);
	ctx_done(&c);
}

static void test_select_word(void **state)
{
	(void)state;
	static const char *texts[] = {
		"   SELECT 1", "\t\n\r\v\fSELECT 1 INTO t2", "\n\nselect 42 FROM t", "SeLeCt 3",
		"SELECTx 1", "select_1", "SELECT1", "SELECT2 INTO t", "SELECT$1", "SELECT(1)", "SELECT*",
		"SELECT'1'", "SELECT\"1\"", "SELECT\xc3\xa9 1", "SELEC 1", "SELECT", " SELECT",
		"(SELECT 1)", "((SELECT 1)) INTO t", "VALUES (1), (2)", "TABLE t1", "WITH a AS (SELECT 1) SELECT 2",
		"WITH a AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT 2",
		"DELETE FROM t WHERE id = 1", "UPDATE t SET a = 1", "INSERT INTO t VALUES (1)",
		"SHOW x1", "BEGIN READ ONLY; SELECT 1", "COMMIT; SELECT 2", "VACUUM t1",
		"DO 1", "CALL p1(2)", "FETCH 10 FROM c1", "PREPARE p1 AS SELECT 1",
	};
	struct ctx c;
	struct sqlscan_result r;
	ctx_init(&c, sqlscan_default_write_functions);
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		check_variants(&c, texts[i], strlen(texts[i]));
	check_str(&c, "SELECT1", &r);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	check_str(&c, "select_1", &r);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	check_str(&c, "\t\n\r\v\fSELECT 1 INTO t2", &r);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	check_str(&c, "BEGIN READ ONLY; SELECT 1", &r);
	assert_int_equal(r.tx, SQLSCAN_TX_BEGIN_RO);
	ctx_done(&c);
}

/*
 * Whether an answer came from the cache shows when the cache is asked with another
 * write_functions list than it was filled with (which real callers never do): with no list
 * nextval() is a read, with the default one a write.  So: a stored SELECT shape answers its
 * digit variants; what may not be stored as a shape never does; the exact cache answers only
 * the very same bytes.
 */
static void probe(const char *sql, bool shape_kept)
{
	const char *err = NULL;
	struct sqlscan_funcs *wf = sqlscan_funcs_new(sqlscan_default_write_functions, &err);
	assert_non_null(wf);
	struct verdict_cache *vc = NULL;
	uint16_t memo = 0;
	struct sqlscan_result r, direct;
	size_t len = strlen(sql);
	char *v = malloc(len);
	assert_non_null(v);
	print_message("%s\n", sql);

	/* filled with no list: a read */
	verdict_classify(&vc, &memo, sql, len, NULL, &r);
	sqlscan_classify(sql, len, NULL, &direct);
	assert_true(same_result(&r, &direct));
	assert_int_equal(r.verdict, SQLSCAN_READ);
	verdict_classify(&vc, NULL, sql, len, NULL, &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	/* the exact cache gives the same bytes back as stored */
	verdict_classify(&vc, NULL, sql, len, wf, &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);

	int variants = 0;
	for (int k = 0; k < V_COUNT; k++) {
		if (!vary(sql, len, k, v))
			continue;
		variants++;
		/* a digit variant, asked with the default list: through a fresh memo and the old one */
		sqlscan_classify(v, len, wf, &direct);
		assert_int_equal(direct.verdict, SQLSCAN_WRITE);
		uint16_t fresh = 0;
		verdict_classify(&vc, &fresh, v, len, wf, &r);
		assert_int_equal(r.verdict, shape_kept ? SQLSCAN_READ : SQLSCAN_WRITE);
		verdict_classify(&vc, &memo, v, len, wf, &r);
		assert_int_equal(r.verdict, shape_kept ? SQLSCAN_READ : SQLSCAN_WRITE);
		/* the exact cache does not fold digits */
		verdict_classify(&vc, NULL, v, len, wf, &r);
		assert_int_equal(r.verdict, SQLSCAN_WRITE);
	}
	assert_true(variants >= 3);

	free(v);
	verdict_free(vc);
	sqlscan_funcs_free(wf);
}

static void test_what_is_stored(void **state)
{
	(void)state;
	/* single SELECTs with no '-', '/' or '$' are stored as shapes */
	probe("SELECT nextval('s1')", true);
	probe("  \n SELECT nextval(1), 22 FROM t3", true);
	probe("select nextval(1)", true);
	probe("SELECT(nextval(1))", true);
	probe("SELECT nextval(1);", true);
	/* anything else is not */
	probe("VALUES (nextval(1))", false);
	probe("(SELECT nextval(1))", false);
	probe("WITH a AS (SELECT 1) SELECT nextval(1)", false);
	probe("SELECT nextval(1); SELECT 2", false);
	probe("SELECT nextval(1) - 2", false);
	probe("SELECT nextval(1) / 2", false);
	probe("SELECT nextval($1), 2", false);
	probe("SELECT nextval(1) -- c", false);
	probe("/* c */ SELECT nextval(1)", false);
	probe("/* pgmux: shard=1 */ SELECT nextval(1)", false);
}

/* ---- the memo ---------------------------------------------------------------------------- */

static void test_memo_other_slot(void **state)
{
	(void)state;
	struct ctx c;
	ctx_init(&c, sqlscan_default_write_functions);

	/* fill many slots */
	char sql[64];
	for (int i = 0; i < 600; i++) {
		int n = i % 3 ? snprintf(sql, sizeof(sql), "SELECT %d FROM t%d", i, i % 7)
			      : snprintf(sql, sizeof(sql), "SELECT %d INTO t%d", i, i % 7);
		check(&c, &c.memo, sql, (size_t)n, NULL);
	}
	/* then a memo naming every slot in turn, each holding some other text (or none) */
	for (uint16_t m = 1; m <= 256; m++) {
		uint16_t memo = m;
		check(&c, &memo, "SELECT 5 INTO t1", 16, NULL);
		memo = m;
		check(&c, &memo, "SELECT 5 FROM t1", 16, NULL);
		memo = m;
		check(&c, &memo, "SELECT 55 FROM t1", 17, NULL);
		memo = m;
		check(&c, &memo, "DELETE FROM t WHERE a = 1", 25, NULL);
	}
	/* a memo from one text, used for another of the same length and shape but not verdict */
	uint16_t memo = 0;
	struct sqlscan_result r;
	check(&c, &memo, "SELECT 1 FROM x", 15, &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	check(&c, &memo, "SELECT 1 INTO x", 15, &r);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	check(&c, &memo, "SELECT 2 FROM x", 15, &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	ctx_done(&c);
}

/* A text and its prefixes, with one memo: a stored longer text must not answer a shorter one
 * whose bytes it starts with, nor the other way round. */
static void test_memo_prefix(void **state)
{
	(void)state;
	struct ctx c;
	ctx_init(&c, sqlscan_default_write_functions);
	for (size_t total = 24; total <= 100; total += 19) {
		char *full = long_select(total, true);
		for (size_t k = 8; k < total - 5; k++) {
			struct sqlscan_result rf, rp;
			check(&c, &c.memo, full, total, &rf);
			check(&c, &c.memo, full, k, &rp);
			check(&c, &c.memo, full, total, NULL);
			check(&c, &c.memo, full, k, NULL);
			assert_int_equal(rf.verdict, SQLSCAN_WRITE);
			assert_int_equal(rp.verdict, SQLSCAN_READ);
		}
		free(full);
	}
	ctx_done(&c);
}

static void test_memo_alternating(void **state)
{
	(void)state;
	struct ctx c;
	char a[64], b[64];
	ctx_init(&c, sqlscan_default_write_functions);
	for (int i = 0; i < 200; i++) {
		/* the same length, the same digits, another verdict */
		int na = snprintf(a, sizeof(a), "SELECT %03d FROM t%d", i, i % 10);
		int nb = snprintf(b, sizeof(b), "SELECT %03d INTO t%d", i, i % 10);
		struct sqlscan_result ra, rb;
		check(&c, &c.memo, a, (size_t)na, &ra);
		check(&c, &c.memo, b, (size_t)nb, &rb);
		assert_int_equal(ra.verdict, SQLSCAN_READ);
		assert_int_equal(rb.verdict, SQLSCAN_WRITE);
		/* and a hint or SET between them, which is never stored */
		char h[64];
		int nh = snprintf(h, sizeof(h), "/* pgmux: shard=%d */ SELECT %d", i, i);
		check(&c, &c.memo, h, (size_t)nh, &ra);
		assert_int_equal(ra.hint_shard, i);
		nh = snprintf(h, sizeof(h), "SET pgmux.shard = %d", i);
		check(&c, &c.memo, h, (size_t)nh, &ra);
		assert_int_equal(atoi(ra.set_value), i);
	}
	ctx_done(&c);
}

static void test_free_and_recreate(void **state)
{
	(void)state;
	struct ctx c;
	struct sqlscan_result r;
	ctx_init(&c, sqlscan_default_write_functions);
	check_str(&c, "SELECT nextval('a1')", &r);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	check_str(&c, "SELECT 1 FROM t", &r);
	assert_non_null(c.vc);
	assert_int_not_equal(c.memo, 0);

	/* a new list: the caller frees the cache; the client's memo outlives it */
	verdict_free(c.vc);
	c.vc = NULL;
	sqlscan_funcs_free(c.wf);
	c.wf = NULL;
	check_str(&c, "SELECT nextval('a1')", &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	check_str(&c, "SELECT 2 FROM t", &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	check_variants(&c, "SELECT nextval('a9') INTO b", strlen("SELECT nextval('a9') INTO b"));

	/* and once more, now to a list with a digit in it (shapes off: the memo is left alone) */
	verdict_free(c.vc);
	c.vc = NULL;
	const char *err = NULL;
	c.wf = sqlscan_funcs_new("f1, nextval", &err);
	assert_non_null(c.wf);
	uint16_t memo = 0;
	check(&c, &memo, "SELECT f1(2)", 12, &r);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	check(&c, &memo, "SELECT f2(2)", 12, &r);
	assert_int_equal(r.verdict, SQLSCAN_READ);
	assert_int_equal(memo, 0);
	check_str(&c, "SELECT nextval('a1')", &r);
	assert_int_equal(r.verdict, SQLSCAN_WRITE);
	verdict_free(NULL);
	ctx_done(&c);
}

/* Many texts of many lengths through one cache: slots are taken over by texts of other lengths
 * (their buffers grow and shrink), and every answer stays right. */
static void test_churn(void **state)
{
	(void)state;
	struct ctx c;
	char sql[VERDICT_TEXT_MAX + 1];
	uint32_t x = 12345;
	ctx_init(&c, sqlscan_default_write_functions);
	static const char *words[] = { " 1", " 23", " a", " INTO", " FROM", " t9", ",", " (", ")",
				       " nextval(", " 'x1'", " 4.5", " e7", " ;", " FOR UPDATE" };
	for (int i = 0; i < 20000; i++) {
		size_t n = 0;
		memcpy(sql, "SELECT", 6);
		n = 6;
		x = x * 1103515245u + 12345u;
		size_t want = 8 + (x >> 8) % (i % 10 == 0 ? VERDICT_TEXT_MAX : 64);
		while (n < want) {
			x = x * 1103515245u + 12345u;
			const char *w = words[(x >> 16) % (sizeof(words) / sizeof(words[0]))];
			size_t wl = strlen(w);
			if (n + wl > VERDICT_TEXT_MAX)
				break;
			memcpy(sql + n, w, wl);
			n += wl;
		}
		check(&c, &c.memo, sql, n, NULL);
		if (i % 4 == 0)
			check(&c, NULL, sql, n, NULL);
		char v[VERDICT_TEXT_MAX + 1];
		vary(sql, n, V_BY_POS, v);
		check(&c, &c.memo, v, n, NULL);
	}
	print_message("churn: %d checks\n", c.checks);
	ctx_done(&c);
}

/* ---- verdict_fold_digits ---------------------------------------------------------------- */

static void test_fold_digits(void **state)
{
	(void)state;
	const char in[] = "a1b23/:09\0x\xb0\xb9\xff 7";
	char out[sizeof(in)];
	memset(out, '#', sizeof(out));
	verdict_fold_digits(in, sizeof(in) - 1, out);
	assert_memory_equal(out, "a0b00/:00\0x\xb0\xb9\xff 0", sizeof(in) - 1);
	assert_int_equal(out[sizeof(in) - 1], '#'); /* nothing past len */

	char all[256], folded[256];
	for (int i = 0; i < 256; i++)
		all[i] = (char)i;
	verdict_fold_digits(all, sizeof(all), folded);
	for (int i = 0; i < 256; i++)
		assert_int_equal((unsigned char)folded[i], i >= '0' && i <= '9' ? '0' : i);
	verdict_fold_digits("9", 0, out); /* len 0 writes nothing */
	assert_int_equal(out[0], 'a');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_corpus),
		cmocka_unit_test(test_explain_options),
		cmocka_unit_test(test_hint_digits),
		cmocka_unit_test(test_set_digits),
		cmocka_unit_test(test_dollar_tags),
		cmocka_unit_test(test_second_statement),
		cmocka_unit_test(test_write_function_digits),
		cmocka_unit_test(test_numbers_and_names),
		cmocka_unit_test(test_nul_bytes),
		cmocka_unit_test(test_lengths_and_tails),
		cmocka_unit_test(test_max_length),
		cmocka_unit_test(test_select_word),
		cmocka_unit_test(test_what_is_stored),
		cmocka_unit_test(test_memo_other_slot),
		cmocka_unit_test(test_memo_prefix),
		cmocka_unit_test(test_memo_alternating),
		cmocka_unit_test(test_free_and_recreate),
		cmocka_unit_test(test_churn),
		cmocka_unit_test(test_fold_digits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
