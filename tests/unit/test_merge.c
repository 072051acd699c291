/* test_merge.c: unit tests for the merge planner (mergeplan.c) and the merging of shard rows (merge.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "merge.h"
#include "mergeplan.h"

/* ---- the planner ---- */

static void plan_ok(const char *sql, struct mergeplan *mp)
{
	char why[300] = "";
	bool ok = mergeplan_build(sql, mp, why, sizeof(why));
	if (!ok)
		print_message("refused: %s: %s\n", sql, why);
	assert_true(ok);
}

static void plan_refused(const char *sql, const char *needle)
{
	struct mergeplan mp;
	char why[300] = "";
	print_message("%s\n", sql);
	assert_false(mergeplan_build(sql, &mp, why, sizeof(why)));
	if (!strstr(why, needle))
		print_message("why: %s\n", why);
	assert_non_null(strstr(why, needle));
	assert_null(mp.sql);
}

static void test_plan_order_limit(void **state)
{
	(void)state;
	struct mergeplan mp;
	plan_ok("SELECT id, name FROM t WHERE v > 3 ORDER BY name DESC NULLS LAST, 1 LIMIT 10 OFFSET 5", &mp);
	assert_string_equal(mp.sql, "SELECT id, name FROM t WHERE v > 3 ORDER BY name DESC NULLS LAST, 1 LIMIT 15");
	assert_int_equal(mp.n_cols, 2);
	assert_int_equal(mp.n_hidden, 0);
	assert_int_equal(mp.n_keys, 2);
	assert_int_equal(mp.keys[0].col, 1);
	assert_true(mp.keys[0].desc);
	assert_false(mp.keys[0].nulls_first);
	assert_int_equal(mp.keys[1].col, 0);
	assert_false(mp.keys[1].desc);
	assert_false(mp.keys[1].nulls_first);
	assert_true(mp.limit_pushed);
	assert_int_equal(mp.limit, 10);
	assert_int_equal(mp.offset, 5);
	mergeplan_free(&mp);

	/* a key the client does not select is a hidden trailing column */
	plan_ok("SELECT * FROM t ORDER BY created DESC OFFSET 3", &mp);
	assert_string_equal(mp.sql, "SELECT *, created FROM t ORDER BY created DESC");
	assert_true(mp.star);
	assert_int_equal(mp.n_hidden, 1);
	assert_true(mp.keys[0].desc);
	assert_true(mp.keys[0].nulls_first);   /* DESC: NULLS FIRST by default */
	assert_int_equal(mp.limit, -1);
	assert_int_equal(mp.offset, 3);
	mergeplan_free(&mp);

	plan_ok("SELECT v FROM t WHERE w = $3 ORDER BY v LIMIT $1 OFFSET $2", &mp);
	assert_string_equal(mp.sql, "SELECT v FROM t WHERE w = $3 ORDER BY v LIMIT ($1::int8 + $2::int8)");
	assert_int_equal(mp.limit_param, 1);
	assert_int_equal(mp.offset_param, 2);
	mergeplan_free(&mp);
	plan_ok("SELECT v FROM t ORDER BY v OFFSET $1", &mp);
	assert_string_equal(mp.sql, "SELECT v FROM t ORDER BY v OFFSET 0 * $1::int8");
	mergeplan_free(&mp);
	plan_ok("SELECT g, count(*) FROM t GROUP BY g LIMIT $2 OFFSET 4", &mp);
	assert_string_equal(mp.sql, "SELECT g, count(*) FROM t GROUP BY g OFFSET 0 * $2::int8");
	assert_int_equal(mp.offset, 4);
	mergeplan_free(&mp);

	plan_ok("SELECT name FROM t ORDER BY name COLLATE \"C\"", &mp);
	assert_int_equal(mp.n_hidden, 1);
	assert_true(mp.keys[0].collate_c);
	mergeplan_free(&mp);
}

static void test_plan_aggregates(void **state)
{
	(void)state;
	struct mergeplan mp;
	plan_ok("SELECT g, count(*), avg(v), min(v) FROM t GROUP BY g ORDER BY g LIMIT 3", &mp);
	assert_string_equal(mp.sql, "SELECT g, count(*), sum(v) AS avg, min(v), count(v) FROM t GROUP BY g ORDER BY g");
	assert_true(mp.aggregate);
	assert_false(mp.limit_pushed);
	assert_int_equal(mp.limit, 3);
	assert_int_equal(mp.cols[1].agg, MP_COUNT);
	assert_int_equal(mp.cols[2].agg, MP_AVG_SUM);
	assert_int_equal(mp.cols[2].avg_count, 4);
	assert_int_equal(mp.cols[4].agg, MP_AVG_COUNT);
	assert_true(mp.cols[4].hidden);
	mergeplan_free(&mp);

	/* a group key the client does not select still keys the merge */
	plan_ok("SELECT sum(v) FROM t GROUP BY g", &mp);
	assert_string_equal(mp.sql, "SELECT sum(v), g FROM t GROUP BY g");
	assert_int_equal(mp.n_hidden, 1);
	mergeplan_free(&mp);

	plan_ok("SELECT DISTINCT g FROM t ORDER BY g LIMIT 2", &mp);
	assert_true(mp.distinct);
	assert_false(mp.limit_pushed);
	mergeplan_free(&mp);
}

static void test_plan_refusals(void **state)
{
	(void)state;
	plan_refused("SELECT count(DISTINCT v) FROM t", "DISTINCT values");
	plan_refused("SELECT v, row_number() OVER () FROM t", "window function");
	plan_refused("SELECT DISTINCT ON (g) g, v FROM t", "DISTINCT ON");
	plan_refused("SELECT g, count(*) FROM t GROUP BY g HAVING count(*) > 1", "HAVING");
	plan_refused("SELECT string_agg(name, ',') FROM t", "a function other than");
	plan_refused("SELECT count(*) + 1 FROM t", "expression over an aggregate");
	plan_refused("SELECT lower(name) FROM t ORDER BY 1", "function other than");
	plan_refused("SELECT v + abs(v) FROM t ORDER BY 1", "function call");
	plan_refused("SELECT g, count(*) FROM t GROUP BY ROLLUP (g)", "ROLLUP");
	plan_refused("SELECT v FROM t ORDER BY v LIMIT 2 + 3", "LIMIT other than an integer");
	plan_refused("SELECT v FROM t ORDER BY v FETCH FIRST 3 ROWS WITH TIES", "WITH TIES");
	plan_refused("SELECT v FROM t ORDER BY v USING <", "USING");
	plan_refused("SELECT g FROM t GROUP BY g ORDER BY avg(v)", "avg");
	plan_refused("SELECT DISTINCT g, count(*) FROM t GROUP BY g", "DISTINCT with aggregates");
}

/* ---- values ---- */

static void check_add(const char *a, const char *b, const char *want)
{
	char out[128];
	assert_true(mergeval_dec_add(a, strlen(a), b, strlen(b), out, sizeof(out)));
	assert_string_equal(out, want);
}

static void test_dec_add(void **state)
{
	(void)state;
	check_add("1.5", "2.25", "3.75");
	check_add("-1.50", "1.5", "0.00");
	check_add("99999999999999999999", "1", "100000000000000000000");
	check_add("-5", "3", "-2");
	check_add("0.001", "-0.002", "-0.001");
	check_add("0", "0", "0");
	check_add("NaN", "1", "NaN");
	check_add("Infinity", "-Infinity", "NaN");
	check_add("-Infinity", "5", "-Infinity");
	char out[4];
	assert_false(mergeval_dec_add("12345", 5, "1", 1, out, sizeof(out)));
	assert_false(mergeval_dec_add("1e5", 3, "1", 1, out, sizeof(out)));
}

static void check_avg(const char *sum, const char *count, const char *want)
{
	char out[2100];
	assert_true(mergeval_dec_avg(sum, strlen(sum), count, strlen(count), out, sizeof(out)));
	assert_string_equal(out, want);
}

/* The expected texts are PostgreSQL 15's avg() over the same rows. */
static void test_dec_avg(void **state)
{
	(void)state;
	check_avg("3", "2", "1.5000000000000000");                 /* avg of 1, 2 */
	check_avg("10", "4", "2.5000000000000000");                /* 1..4 */
	check_avg("1", "1", "1.00000000000000000000");             /* SELECT avg(1) */
	check_avg("10", "3", "3.3333333333333333");
	check_avg("2", "3", "0.66666666666666666667");
	check_avg("1.50", "2", "0.75000000000000000000");
	check_avg("12345", "2", "6172.5000000000000000");
	check_avg("-7", "2", "-3.5000000000000000");
	check_avg("-2", "3", "-0.66666666666666666667");
	check_avg("0", "5", "0.00000000000000000000");
	check_avg("NaN", "5", "NaN");
}

static int cmpk(enum merge_kind k, const char *a, const char *b, bool *bad)
{
	struct merge_val x = { a, (int32_t)strlen(a) }, y = { b, (int32_t)strlen(b) };
	return mergeval_cmp(k, &x, &y, bad);
}

static void test_compare(void **state)
{
	(void)state;
	bool bad = false;
	assert_int_equal(cmpk(MK_INT, "-10", "9", &bad), -1);
	assert_int_equal(cmpk(MK_INT, "100", "99", &bad), 1);
	assert_int_equal(cmpk(MK_NUMERIC, "1.0", "1.00", &bad), 0);
	assert_int_equal(cmpk(MK_NUMERIC, "-0.5", "0.25", &bad), -1);
	assert_int_equal(cmpk(MK_NUMERIC, "-2", "-10", &bad), 1);
	assert_int_equal(cmpk(MK_NUMERIC, "NaN", "Infinity", &bad), 1);
	assert_int_equal(cmpk(MK_NUMERIC, "-Infinity", "-99999", &bad), -1);
	assert_int_equal(cmpk(MK_FLOAT, "NaN", "Infinity", &bad), 1);
	assert_int_equal(cmpk(MK_FLOAT, "-0", "0", &bad), 0);
	assert_int_equal(cmpk(MK_FLOAT, "1e-05", "0.001", &bad), -1);
	assert_int_equal(cmpk(MK_DATETIME, "10000-01-01", "9999-12-31", &bad), 1);
	assert_int_equal(cmpk(MK_DATETIME, "2024-01-01 10:00:00", "2024-01-01 10:00:00.5", &bad), -1);
	assert_int_equal(cmpk(MK_DATETIME, "infinity", "9999-12-31", &bad), 1);
	assert_int_equal(cmpk(MK_DATETIME, "-infinity", "0001-01-01", &bad), -1);
	assert_int_equal(cmpk(MK_TEXT, "ab", "abc", &bad), -1);
	assert_int_equal(cmpk(MK_BOOL, "f", "t", &bad), -1);
	assert_int_equal(cmpk(MK_BPCHAR, "a  ", "a", &bad), 0);
	assert_int_equal(cmpk(MK_BPCHAR, "a ", "a!", &bad), -1);
	assert_false(bad);
	cmpk(MK_DATETIME, "0044-03-15 BC", "2024-01-01", &bad);
	assert_true(bad);
	bad = false;
	cmpk(MK_DATETIME, "03/15/2024", "2024-01-01", &bad);
	assert_true(bad);
}

/* ---- a whole merge over hand-made protocol bodies ---- */

struct buf {
	uint8_t d[4096];
	uint32_t n;
};

static void put16(struct buf *b, uint16_t v)
{
	b->d[b->n++] = (uint8_t)(v >> 8);
	b->d[b->n++] = (uint8_t)v;
}

static void put32(struct buf *b, uint32_t v)
{
	put16(b, (uint16_t)(v >> 16));
	put16(b, (uint16_t)v);
}

static void desc(struct buf *b, int n, const char *const *names, const uint32_t *oids)
{
	b->n = 0;
	put16(b, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		memcpy(b->d + b->n, names[i], strlen(names[i]) + 1);
		b->n += (uint32_t)strlen(names[i]) + 1;
		put32(b, 0);
		put16(b, 0);
		put32(b, oids[i]);
		put16(b, 8);
		put32(b, 0xffffffffu);
		put16(b, 0);
	}
}

static void row(struct buf *b, int n, const char *const *vals)
{
	b->n = 0;
	put16(b, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		if (!vals[i]) {
			put32(b, 0xffffffffu);
			continue;
		}
		put32(b, (uint32_t)strlen(vals[i]));
		memcpy(b->d + b->n, vals[i], strlen(vals[i]));
		b->n += (uint32_t)strlen(vals[i]);
	}
}

static const char *cell(const struct merge_set *m, size_t r, int c, char *tmp)
{
	const struct merge_val *v = &m->rows[r][c];
	if (v->len < 0)
		return "NULL";
	memcpy(tmp, v->p, (size_t)v->len);
	tmp[v->len] = '\0';
	return tmp;
}

static void test_merge_grouped(void **state)
{
	(void)state;
	struct mergeplan mp;
	plan_ok("SELECT g, count(*), avg(v), max(v) FROM t GROUP BY g ORDER BY g DESC", &mp);
	static const char *const names[] = { "g", "count", "avg", "max", "count" };
	static const uint32_t oids[] = { 23, 20, 20, 23, 20 };
	struct buf b;
	desc(&b, 5, names, oids);
	struct merge_set m;
	assert_true(merge_init(&m, &mp, b.d, b.n, 1 << 20));
	static const char *const rows[][5] = {
		{ "1", "2", "3", "2", "2" },     /* shard 0: g=1 rows 1, 2 */
		{ NULL, "1", "5", "5", "1" },    /* shard 0: g NULL row 5 */
		{ "1", "1", "4", "4", "1" },     /* shard 1: g=1 row 4 */
		{ "2", "2", NULL, NULL, "0" },   /* shard 1: g=2 two NULL v */
	};
	for (int i = 0; i < 4; i++) {
		row(&b, 5, rows[i]);
		assert_true(merge_add_row(&m, b.d, b.n));
	}
	assert_true(merge_finish(&m));
	assert_int_equal(m.end - m.first, 3);
	char t[64];
	/* DESC: NULLS FIRST */
	assert_string_equal(cell(&m, 0, 0, t), "NULL");
	assert_string_equal(cell(&m, 0, 2, t), "5.0000000000000000");
	assert_string_equal(cell(&m, 1, 0, t), "2");
	assert_string_equal(cell(&m, 1, 1, t), "2");
	assert_string_equal(cell(&m, 1, 2, t), "NULL");
	assert_string_equal(cell(&m, 2, 0, t), "1");
	assert_string_equal(cell(&m, 2, 1, t), "3");
	assert_string_equal(cell(&m, 2, 2, t), "2.3333333333333333");
	assert_string_equal(cell(&m, 2, 3, t), "4");
	merge_free(&m);
	mergeplan_free(&mp);
}

static void test_merge_cap_and_types(void **state)
{
	(void)state;
	struct mergeplan mp;
	plan_ok("SELECT name FROM t ORDER BY name", &mp);
	static const char *const names[] = { "name" };
	static const uint32_t text_oid[] = { 25 };
	struct buf b;
	desc(&b, 1, names, text_oid);
	struct merge_set m;
	assert_false(merge_init(&m, &mp, b.d, b.n, 1 << 20));   /* text order needs COLLATE "C" */
	assert_string_equal(m.sqlstate, "0A000");
	assert_non_null(strstr(m.err, "COLLATE"));
	merge_free(&m);
	mergeplan_free(&mp);

	plan_ok("SELECT id FROM t ORDER BY id", &mp);
	static const uint32_t int_oid[] = { 23 };
	desc(&b, 1, names, int_oid);
	assert_true(merge_init(&m, &mp, b.d, b.n, 4096));
	static const char *const one[] = { "12345" };
	row(&b, 1, one);
	bool ok = true;
	for (int i = 0; i < 1000 && ok; i++)
		ok = merge_add_row(&m, b.d, b.n);
	assert_false(ok);
	assert_string_equal(m.sqlstate, "54000");
	assert_non_null(strstr(m.err, "max_client_memory"));
	merge_free(&m);
	mergeplan_free(&mp);

	plan_ok("SELECT sum(f) FROM t", &mp);
	static const uint32_t f8[] = { 701 };
	desc(&b, 1, names, f8);
	assert_false(merge_init(&m, &mp, b.d, b.n, 4096));
	assert_non_null(strstr(m.err, "float"));
	merge_free(&m);
	mergeplan_free(&mp);
}

static void check_bin(uint32_t oid, const char *text, const uint8_t *want, size_t n)
{
	struct pktbuf pb = { 0 };
	print_message("%u %s\n", oid, text);
	assert_true(mergeval_to_binary(oid, text, strlen(text), &pb));
	assert_int_equal(pb.len, n);
	assert_memory_equal(pb.data, want, n);
	pktbuf_free(&pb);
}

/* The expected bytes are PostgreSQL 15's send functions' (int4send, numeric_send, ...). */
static void test_binary(void **state)
{
	(void)state;
	check_bin(23, "-2", (const uint8_t[]){ 0xff, 0xff, 0xff, 0xfe }, 4);
	check_bin(20, "258", (const uint8_t[]){ 0, 0, 0, 0, 0, 0, 1, 2 }, 8);
	check_bin(1700, "12345.678", (const uint8_t[]){ 0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29,
							 0x1a, 0x7c }, 14);
	check_bin(1700, "0.00", (const uint8_t[]){ 0, 0, 0, 0, 0, 0, 0, 2 }, 8);
	check_bin(1700, "-0.0012", (const uint8_t[]){ 0, 1, 0xff, 0xff, 0x40, 0, 0, 4, 0, 12 }, 10);
	check_bin(1700, "100000000", (const uint8_t[]){ 0, 1, 0, 2, 0, 0, 0, 0, 0, 1 }, 10);
	check_bin(1700, "NaN", (const uint8_t[]){ 0, 0, 0, 0, 0xc0, 0, 0, 0 }, 8);
	check_bin(1082, "2000-01-02", (const uint8_t[]){ 0, 0, 0, 1 }, 4);
	check_bin(1082, "1999-12-31", (const uint8_t[]){ 0xff, 0xff, 0xff, 0xff }, 4);
	check_bin(1082, "infinity", (const uint8_t[]){ 0x7f, 0xff, 0xff, 0xff }, 4);
	check_bin(1114, "2000-01-01 00:00:01.5", (const uint8_t[]){ 0, 0, 0, 0, 0, 0x16, 0xe3, 0x60 }, 8);
	check_bin(16, "t", (const uint8_t[]){ 1 }, 1);
	check_bin(701, "-0", (const uint8_t[]){ 0x80, 0, 0, 0, 0, 0, 0, 0 }, 8);
	check_bin(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		  (const uint8_t[]){ 0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b,
				     0xb9, 0xbd, 0x38, 0x0a, 0x11 }, 16);
	struct pktbuf pb = { 0 };
	assert_false(mergeval_to_binary(1082, "0044-03-15 BC", 13, &pb));
	assert_false(mergeval_to_binary(1184, "2024-01-01 00:00:00+00", 22, &pb));
	pktbuf_free(&pb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plan_order_limit),
		cmocka_unit_test(test_plan_aggregates),
		cmocka_unit_test(test_plan_refusals),
		cmocka_unit_test(test_dec_add),
		cmocka_unit_test(test_dec_avg),
		cmocka_unit_test(test_compare),
		cmocka_unit_test(test_merge_grouped),
		cmocka_unit_test(test_merge_cap_and_types),
		cmocka_unit_test(test_binary),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
