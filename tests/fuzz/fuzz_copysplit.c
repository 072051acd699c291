/* fuzz_copysplit.c: libFuzzer harness for splitting writes over shards: COPY data (text, CSV, binary) cut into rows in arbitrary pieces, and INSERT texts cut into VALUES rows. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "copysplit.h"
#include "splitsql.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct copysplit_key key;

/* Reads the stream as rows, with the bytes arriving in pieces of `step` (as CopyData may cut
 * them); returns the row count, or -1 when it is malformed.  Each row must be found at the
 * same place whatever the pieces. */
static long read_rows(struct copysplit *cs, const uint8_t *p, size_t n, size_t step, size_t *ends,
		      size_t max_ends)
{
	size_t off = 0, have = step < n ? step : n;
	long rows = 0;
	for (;;) {
		bool final = have == n;
		size_t used = 0;
		const char *why = NULL;
		int rc = copysplit_next(cs, p + off, have - off, final, &used, &key, &why);
		if (rc == COPYSPLIT_BAD) {
			FUZZ_CHECK(why != NULL);
			return -1;
		}
		if (rc == COPYSPLIT_MORE) {
			if (final)
				return rows;
			have = have + step < n ? have + step : n;
			continue;
		}
		FUZZ_CHECK(used > 0 && used <= have - off);
		FUZZ_CHECK(key.len <= COPYSPLIT_KEY_MAX);
		off += used;
		if (rc == COPYSPLIT_ROW) {
			if ((size_t)rows < max_ends)
				ends[rows] = off;
			rows++;
		}
		if (rc == COPYSPLIT_END || off == n)
			return rows;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4 || size > 1 << 14)
		return 0;
	struct copysplit cs = { 0 };
	cs.format = data[0] % 3;
	cs.delim = (data[1] & 1) ? ',' : '\t';
	cs.quote = '"';
	cs.escape = (data[1] & 2) ? '\\' : '"';
	cs.null_str = (data[1] & 4) ? "" : "\\N";
	cs.null_len = strlen(cs.null_str);
	cs.header = (data[1] & 8) && cs.format != COPYSPLIT_BINARY;
	cs.key_col = data[2] % 4;
	size_t step = (size_t)(data[3] % 64) + 1;
	const uint8_t *p = data + 4;
	size_t n = size - 4;

	/* whole, then in pieces: the same rows at the same places, or malformed both times */
	size_t e1[64], e2[64];
	struct copysplit a = cs, b = cs;
	copysplit_init(&a);
	copysplit_init(&b);
	long r1 = read_rows(&a, p, n, n, e1, 64);
	long r2 = read_rows(&b, p, n, step, e2, 64);
	FUZZ_CHECK(r1 == r2);
	for (long i = 0; i < r1 && i < 64; i++)
		FUZZ_CHECK(e1[i] == e2[i]);

	/* the same bytes as SQL: an INSERT's rows, and a COPY statement's options */
	char *sql = malloc(n + 1);
	if (!sql)
		return 0;
	memcpy(sql, p, n);
	sql[n] = '\0';
	size_t len = strlen(sql);
	struct splitsql_insert ins;
	const char *why;
	if (splitsql_insert_rows(sql, len, &ins, &why) == 0) {
		FUZZ_CHECK(ins.head_end <= len && ins.tail_start <= len && ins.n_rows > 0);
		uint32_t prev = ins.head_end;
		bool *pick = calloc(ins.n_rows, sizeof(bool));
		char *out = malloc(len + 3);
		for (uint32_t i = 0; i < ins.n_rows; i++) {
			FUZZ_CHECK(ins.row_start[i] >= prev && ins.row_end[i] > ins.row_start[i]);
			FUZZ_CHECK(sql[ins.row_start[i]] == '(' && sql[ins.row_end[i] - 1] == ')');
			prev = ins.row_end[i];
			if (pick)
				pick[i] = (i & 1) == 0;
		}
		FUZZ_CHECK(prev <= ins.tail_start);
		if (pick && out)
			FUZZ_CHECK(splitsql_insert_build(sql, &ins, pick, out) <= len + 2);
		free(pick);
		free(out);
		splitsql_insert_free(&ins);
	}
	struct splitsql_copy o;
	if (splitsql_copy(sql, "user_id", &o) == 0 && !o.why)
		FUZZ_CHECK(o.key_col >= 0 && (uint32_t)o.key_col < o.n_cols && o.null_len < sizeof(o.null_str));
	free(sql);
	return 0;
}
