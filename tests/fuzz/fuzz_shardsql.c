/* fuzz_shardsql.c: libFuzzer harness for the shard-key analysis (libpg_query parse trees) and the literal lexer on arbitrary SQL text. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shardsql.h"
#include "sqlmask.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 1 << 14)
		return 0;
	int key_type = data[0] % 3;
	size_t n = size - 1;
	char *sql = malloc(n + 1);
	if (!sql)
		return 0;
	memcpy(sql, data + 1, n);
	sql[n] = '\0';
	size_t len = strlen(sql);

	struct shsql_result r;
	if (shsql_analyze(sql, "user_id", key_type, &r) == 0) {
		for (uint32_t i = 0; i < r.n_stmts; i++) {
			const struct shsql_stmt *st = &r.st[i];
			FUZZ_CHECK(st->verdict <= SHSQL_REFUSE && st->kind <= SHSQL_WRITE);
			FUZZ_CHECK(st->verdict == SHSQL_KEYED || st->n_values == 0);
			FUZZ_CHECK(st->verdict != SHSQL_REFUSE || st->why);
			for (uint32_t j = 0; j < st->n_values; j++) {
				const struct shsql_value *v = &st->v[j];
				FUZZ_CHECK(v->src >= SHSQL_LIT_INT && v->src <= SHSQL_PARAM);
				FUZZ_CHECK(v->src != SHSQL_PARAM || v->param >= 1);
				FUZZ_CHECK(v->src != SHSQL_LIT_STR || (v->str && strlen(v->str) == v->str_len));
				FUZZ_CHECK(v->loc < (int32_t)len);
			}
		}
		shsql_free(&r);
	}

	struct sqlmask_lit lits[64];
	uint64_t h1, h2;
	int m = sqlmask_scan(sql, len, lits, 64, &h1);
	FUZZ_CHECK(m >= -1 && m <= 64);
	uint32_t prev = 0;
	for (int i = 0; i < m; i++) {
		FUZZ_CHECK(lits[i].off >= prev && lits[i].len > 0);
		FUZZ_CHECK((size_t)lits[i].off + lits[i].len <= len);
		prev = lits[i].off + lits[i].len;
		char buf[256];
		int k = sqlmask_string(sql, &lits[i], buf, sizeof(buf));
		FUZZ_CHECK(k <= (int)lits[i].len);
	}
	if (m >= 0) {
		FUZZ_CHECK(sqlmask_same(sql, lits, (uint32_t)len, sql, lits, (uint32_t)len, m));
		FUZZ_CHECK(sqlmask_scan(sql, len, lits, 64, &h2) == m && h1 == h2);
	}
	free(sql);
	return 0;
}
