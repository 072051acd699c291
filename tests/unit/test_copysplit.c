/* test_copysplit.c: cmocka tests for splitting writes over shards: COPY data rows and keys (copysplit), INSERT rows and COPY options (splitsql). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copysplit.h"
#include "splitsql.h"

static struct copysplit_key key;

static void setup_cs(struct copysplit *cs, int format, char delim, const char *null, bool header,
		     int key_col)
{
	memset(cs, 0, sizeof(*cs));
	cs->format = format;
	cs->delim = delim;
	cs->quote = '"';
	cs->escape = '"';
	cs->null_str = null;
	cs->null_len = strlen(null);
	cs->header = header;
	cs->key_col = key_col;
	copysplit_init(cs);
}

/* Reads every piece of data (final); fills keys[] with each row's key text ("NULL" for null)
 * and returns the row count, or -1 when a piece is malformed. */
static int read_all(struct copysplit *cs, const char *data, size_t n, char keys[][64], int max)
{
	size_t off = 0;
	int rows = 0;
	while (off < n) {
		size_t used;
		const char *why;
		int rc = copysplit_next(cs, (const uint8_t *)data + off, n - off, true, &used, &key, &why);
		if (rc == COPYSPLIT_BAD)
			return -1;
		if (rc == COPYSPLIT_MORE)
			return -2;
		assert_true(used > 0 && used <= n - off);
		off += used;
		if (rc == COPYSPLIT_END)
			break;
		if (rc == COPYSPLIT_ROW && rows < max) {
			if (key.null)
				strcpy(keys[rows], "NULL");
			else {
				assert_true(key.len < 64);
				memcpy(keys[rows], key.val, key.len);
				keys[rows][key.len] = '\0';
			}
			rows++;
		}
	}
	return rows;
}

static void test_text(void **state)
{
	(void)state;
	struct copysplit cs;
	char keys[8][64];
	setup_cs(&cs, COPYSPLIT_TEXT, '\t', "\\N", false, 1);
	const char *d = "a\t1\tx\nb\\tc\t2\n\\N\t\\N\n\\x41\\101\t\\x4\\n\n";
	assert_int_equal(read_all(&cs, d, strlen(d), keys, 8), 4);
	assert_string_equal(keys[0], "1");
	assert_string_equal(keys[1], "2");
	assert_string_equal(keys[2], "NULL");
	assert_string_equal(keys[3], "\x04\n");
	/* a last line without its newline, and \r\n endings */
	setup_cs(&cs, COPYSPLIT_TEXT, '|', "", false, 0);
	d = "7|x\r\n|y\r\n9|z";
	assert_int_equal(read_all(&cs, d, strlen(d), keys, 8), 3);
	assert_string_equal(keys[0], "7");
	assert_string_equal(keys[1], "NULL");
	assert_string_equal(keys[2], "9");
	assert_int_equal(cs.eol_len, 2);
	/* the end marker; a header line */
	setup_cs(&cs, COPYSPLIT_TEXT, '\t', "\\N", true, 0);
	d = "user_id\tname\n5\tx\n\\.\n";
	assert_int_equal(read_all(&cs, d, strlen(d), keys, 8), 1);
	assert_true(cs.ended);
	/* malformed: a row without the key column, a trailing backslash, \. inside a line */
	setup_cs(&cs, COPYSPLIT_TEXT, '\t', "\\N", false, 2);
	assert_int_equal(read_all(&cs, "1\t2\n", 4, keys, 8), -1);
	setup_cs(&cs, COPYSPLIT_TEXT, '\t', "\\N", false, 0);
	assert_int_equal(read_all(&cs, "1\\", 2, keys, 8), -1);
	setup_cs(&cs, COPYSPLIT_TEXT, '\t', "\\N", false, 0);
	assert_int_equal(read_all(&cs, "1\\.x\n", 5, keys, 8), -1);
}

static void test_text_pieces(void **state)
{
	(void)state;
	/* a row is complete only with its line ending; '\r' waits to see whether '\n' follows */
	struct copysplit cs;
	size_t used;
	const char *why;
	setup_cs(&cs, COPYSPLIT_TEXT, '\t', "\\N", false, 0);
	assert_int_equal(copysplit_next(&cs, (const uint8_t *)"12\tab", 5, false, &used, &key, &why),
			 COPYSPLIT_MORE);
	assert_int_equal(copysplit_next(&cs, (const uint8_t *)"12\tab\r", 6, false, &used, &key, &why),
			 COPYSPLIT_MORE);
	assert_int_equal(copysplit_next(&cs, (const uint8_t *)"12\tab\r\n", 7, false, &used, &key, &why),
			 COPYSPLIT_ROW);
	assert_int_equal(used, 7);
	assert_int_equal(copysplit_next(&cs, (const uint8_t *)"12\\", 3, false, &used, &key, &why),
			 COPYSPLIT_MORE);
}

static void test_csv(void **state)
{
	(void)state;
	struct copysplit cs;
	char keys[8][64];
	setup_cs(&cs, COPYSPLIT_CSV, ',', "", true, 1);
	const char *d = "name,id\n\"a,\nb\",\"1\"\nx,\"\"\ny,\n\"q\"\"\",\"4\"\"2\"\n";
	assert_int_equal(read_all(&cs, d, strlen(d), keys, 8), 4);
	assert_string_equal(keys[0], "1");
	assert_string_equal(keys[1], "");       /* quoted empty: an empty string */
	assert_string_equal(keys[2], "NULL");   /* unquoted empty: NULL */
	assert_string_equal(keys[3], "4\"2");
	/* ESCAPE other than QUOTE; a quote in the middle of a field */
	setup_cs(&cs, COPYSPLIT_CSV, ';', "NULL", false, 0);
	cs.escape = '\\';
	d = "\"a\\\"b\";x\nab\"c;d\"e;y\nNULL;z\n";
	assert_int_equal(read_all(&cs, d, strlen(d), keys, 8), 3);
	assert_string_equal(keys[0], "a\"b");
	assert_string_equal(keys[1], "abc;de");
	assert_string_equal(keys[2], "NULL");
	/* unterminated quote at the end */
	setup_cs(&cs, COPYSPLIT_CSV, ',', "", false, 0);
	assert_int_equal(read_all(&cs, "\"abc\n", 5, keys, 8), -1);
	/* a quoted newline is no line end even when the bytes stop there */
	size_t used;
	const char *why;
	setup_cs(&cs, COPYSPLIT_CSV, ',', "", false, 0);
	assert_int_equal(copysplit_next(&cs, (const uint8_t *)"\"1\n", 3, false, &used, &key, &why),
			 COPYSPLIT_MORE);
	assert_int_equal(copysplit_next(&cs, (const uint8_t *)"\"1\"", 3, false, &used, &key, &why),
			 COPYSPLIT_MORE);
}

static size_t put32(uint8_t *p, int32_t v)
{
	p[0] = (uint8_t)((uint32_t)v >> 24);
	p[1] = (uint8_t)((uint32_t)v >> 16);
	p[2] = (uint8_t)((uint32_t)v >> 8);
	p[3] = (uint8_t)v;
	return 4;
}

static void test_binary(void **state)
{
	(void)state;
	uint8_t b[256];
	size_t n = 0;
	memcpy(b, "PGCOPY\n\377\r\n\0", 11);
	n = 11;
	n += put32(b + n, 0);
	n += put32(b + n, 3);   /* a 3-byte extension */
	memcpy(b + n, "abc", 3);
	n += 3;
	size_t hdr = n;
	b[n++] = 0; b[n++] = 2;   /* two fields: "xy", int4 7 */
	n += put32(b + n, 2);
	b[n++] = 'x'; b[n++] = 'y';
	n += put32(b + n, 4);
	n += put32(b + n, 7);
	size_t row = n - hdr;
	b[n++] = 0; b[n++] = 2;   /* NULL key */
	n += put32(b + n, 0);
	n += put32(b + n, -1);
	b[n++] = 0xff; b[n++] = 0xff;
	struct copysplit cs;
	size_t used;
	const char *why;
	setup_cs(&cs, COPYSPLIT_BINARY, 0, "", false, 1);
	assert_int_equal(copysplit_next(&cs, b, hdr - 1, false, &used, &key, &why), COPYSPLIT_MORE);
	assert_int_equal(copysplit_next(&cs, b, n, false, &used, &key, &why), COPYSPLIT_HEAD);
	assert_int_equal(used, hdr);
	for (size_t cut = 0; cut < row; cut++)
		assert_int_equal(copysplit_next(&cs, b + hdr, cut, false, &used, &key, &why), COPYSPLIT_MORE);
	assert_int_equal(copysplit_next(&cs, b + hdr, n - hdr, false, &used, &key, &why), COPYSPLIT_ROW);
	assert_int_equal(used, row);
	assert_int_equal(key.fmt, 1);
	assert_int_equal(key.len, 4);
	assert_false(key.null);
	assert_int_equal(key.val[3], 7);
	size_t off = hdr + row;
	assert_int_equal(copysplit_next(&cs, b + off, n - off, false, &used, &key, &why), COPYSPLIT_ROW);
	assert_true(key.null);
	off += used;
	assert_int_equal(copysplit_next(&cs, b + off, n - off, false, &used, &key, &why), COPYSPLIT_END);
	assert_int_equal(copysplit_next(&cs, b + off, n - off, false, &used, &key, &why), COPYSPLIT_BAD);
	/* no signature; too few fields; a truncated tuple at the end */
	setup_cs(&cs, COPYSPLIT_BINARY, 0, "", false, 1);
	assert_int_equal(copysplit_next(&cs, (const uint8_t *)"PGCOPX\n\377\r\n\0\0\0\0\0\0\0\0\0", 19,
					false, &used, &key, &why), COPYSPLIT_BAD);
	setup_cs(&cs, COPYSPLIT_BINARY, 0, "", false, 2);
	assert_int_equal(copysplit_next(&cs, b, n, false, &used, &key, &why), COPYSPLIT_HEAD);
	assert_int_equal(copysplit_next(&cs, b + hdr, n - hdr, false, &used, &key, &why), COPYSPLIT_BAD);
	setup_cs(&cs, COPYSPLIT_BINARY, 0, "", false, 0);
	assert_int_equal(copysplit_next(&cs, b, n, false, &used, &key, &why), COPYSPLIT_HEAD);
	assert_int_equal(copysplit_next(&cs, b + hdr, 5, true, &used, &key, &why), COPYSPLIT_BAD);
}

static void test_insert_rows(void **state)
{
	(void)state;
	struct splitsql_insert ins;
	const char *why;
	const char *sql = "INSERT INTO t (a, b) VALUES (1, '(,)'), /* ) */ (2, f(3, 4)) , (3,'x') "
			  "ON CONFLICT DO NOTHING;";
	assert_int_equal(splitsql_insert_rows(sql, strlen(sql), &ins, &why), 0);
	assert_int_equal(ins.n_rows, 3);
	assert_false(ins.returning);
	assert_memory_equal(sql + ins.row_start[1], "(2, f(3, 4))", 12);
	assert_int_equal(ins.row_end[1] - ins.row_start[1], 12);
	bool pick[3] = { true, false, true };
	char out[512];
	size_t n = splitsql_insert_build(sql, &ins, pick, out);
	assert_true(n <= strlen(sql) + 2);
	out[n] = '\0';
	assert_string_equal(out, "INSERT INTO t (a, b) VALUES (1, '(,)'),(3,'x') ON CONFLICT DO NOTHING;");
	splitsql_insert_free(&ins);

	sql = "insert into t (a) values(1),(2) returning a";
	assert_int_equal(splitsql_insert_rows(sql, strlen(sql), &ins, &why), 0);
	assert_true(ins.returning);
	assert_int_equal(ins.n_rows, 2);
	splitsql_insert_free(&ins);

	const char *no[] = { "SELECT 1", "INSERT INTO t (a) VALUES (1); INSERT INTO t (a) VALUES (2)",
			     "INSERT INTO t (a) SELECT 1", "INSERT INTO t (a) VALUES (1", "" };
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_int_equal(splitsql_insert_rows(no[i], strlen(no[i]), &ins, &why), 1);
}

static void test_copy_options(void **state)
{
	(void)state;
	struct splitsql_copy o;
	assert_int_equal(splitsql_copy("COPY t (name, user_id) FROM STDIN", "user_id", &o), 0);
	assert_null(o.why);
	assert_int_equal(o.format, SPLITSQL_TEXT);
	assert_int_equal(o.key_col, 1);
	assert_int_equal(o.n_cols, 2);
	assert_int_equal(o.delim, '\t');
	assert_string_equal(o.null_str, "\\N");
	assert_int_equal(splitsql_copy("COPY t (user_id) FROM STDIN WITH (FORMAT csv, HEADER, "
				       "DELIMITER ';', QUOTE '''', ESCAPE '\\', NULL 'x')", "user_id", &o), 0);
	assert_null(o.why);
	assert_int_equal(o.format, SPLITSQL_CSV);
	assert_true(o.header);
	assert_int_equal(o.delim, ';');
	assert_int_equal(o.quote, '\'');
	assert_int_equal(o.escape, '\\');
	assert_string_equal(o.null_str, "x");
	assert_int_equal(splitsql_copy("COPY t (user_id) FROM STDIN CSV HEADER", "user_id", &o), 0);
	assert_int_equal(o.format, SPLITSQL_CSV);
	assert_true(o.header);
	assert_int_equal(o.delim, ',');
	assert_int_equal(splitsql_copy("COPY t (a, user_id) FROM STDIN (FORMAT binary)", "user_id", &o), 0);
	assert_int_equal(o.format, SPLITSQL_BINARY);
	assert_null(o.why);
	/* no column list: the table's name, quoted, to ask the server for its columns */
	assert_int_equal(splitsql_copy("COPY t FROM STDIN", "user_id", &o), 0);
	assert_null(o.why);
	assert_int_equal(o.n_cols, 0);
	assert_string_equal(o.table, "\"t\"");
	assert_int_equal(splitsql_copy("COPY \"My\"\"S\".tab FROM STDIN (FORMAT csv)", "user_id", &o), 0);
	assert_string_equal(o.table, "\"My\"\"S\".\"tab\"");
	/* refused: no key, ENCODING, FORCE_NULL */
	assert_int_equal(splitsql_copy("COPY t (a) FROM STDIN", "user_id", &o), 0);
	assert_non_null(o.why);
	assert_int_equal(splitsql_copy("COPY t (user_id) FROM STDIN (ENCODING 'latin1')", "user_id", &o), 0);
	assert_non_null(o.why);
	assert_int_equal(splitsql_copy("COPY t (user_id) FROM STDIN (FORMAT csv, FORCE_NULL (user_id))",
				       "user_id", &o), 0);
	assert_non_null(o.why);
	/* not a COPY FROM STDIN */
	assert_int_equal(splitsql_copy("COPY t TO STDOUT", "user_id", &o), 1);
	assert_int_equal(splitsql_copy("COPY t (user_id) FROM '/tmp/x'", "user_id", &o), 1);
	assert_int_equal(splitsql_copy("SELECT 1", "user_id", &o), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text),
		cmocka_unit_test(test_text_pieces),
		cmocka_unit_test(test_csv),
		cmocka_unit_test(test_binary),
		cmocka_unit_test(test_insert_rows),
		cmocka_unit_test(test_copy_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
