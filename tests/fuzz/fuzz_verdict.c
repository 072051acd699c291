/* fuzz_verdict.c: libFuzzer harness for the verdict caches: every answer, for the input and for a copy with its digits remapped, must equal sqlscan_classify's. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlscan.h"
#include "verdict.h"
#include "fuzz_check.h"

static struct sqlscan_funcs *default_funcs(void)
{
	static struct sqlscan_funcs *wf;
	if (!wf) {
		const char *err = NULL;
		wf = sqlscan_funcs_new(sqlscan_default_write_functions, &err);
		FUZZ_CHECK(wf != NULL && err == NULL);
	}
	return wf;
}

/* Kept across inputs, as a worker keeps its cache and a client its memo. */
static struct verdict_cache *cache;
static uint16_t memo;

static void print_result(const char *who, const struct sqlscan_result *r)
{
	fprintf(stderr, "%s: verdict %d role %d tx %d set %d n %d uid %d/%lld shard %d value \"%.*s\" bad %d lexerr %d\n",
		who, r->verdict, r->hint_role, r->tx, r->set, r->n_statements, r->has_hint_user_id,
		(long long)r->hint_user_id, r->hint_shard, SQLSCAN_SET_VALUE_MAX, r->set_value,
		r->set_value_bad, r->lex_error);
}

/* verdict_classify through the cache (last: the memo, or NULL for the exact cache) against
 * sqlscan_classify, field by field. */
static void check(const char *sql, size_t len, uint16_t *last)
{
	const struct sqlscan_funcs *wf = default_funcs();
	struct sqlscan_result want, got;

	memset(&got, 0xA5, sizeof(got));
	sqlscan_classify(sql, len, wf, &want);
	verdict_classify(&cache, last, sql, len, wf, &got);
	bool same = got.verdict == want.verdict && got.hint_role == want.hint_role &&
		    got.tx == want.tx && got.set == want.set && got.n_statements == want.n_statements &&
		    got.has_hint_user_id == want.has_hint_user_id &&
		    got.hint_user_id == want.hint_user_id && got.hint_shard == want.hint_shard &&
		    strncmp(got.set_value, want.set_value, SQLSCAN_SET_VALUE_MAX) == 0 &&
		    got.set_value_bad == want.set_value_bad && got.lex_error == want.lex_error;
	if (!same) {
		fprintf(stderr, "verdict_classify (%s cache) differs on %zu bytes:\n", last ? "shape" : "exact", len);
		print_result("sqlscan", &want);
		print_result("verdict", &got);
	}
	FUZZ_CHECK(same);
}

/* The text through both caches, then a copy with its digits remapped (which folds to the same
 * shape, so a shape the text stored answers it). */
static void round_trip(const char *sql, size_t len, const uint8_t map[10])
{
	check(sql, len, &memo);
	check(sql, len, &memo);
	check(sql, len, NULL);
	check(sql, len, NULL);

	char *v = malloc(len ? len : 1);
	if (!v)
		return;
	for (size_t i = 0; i < len; i++)
		v[i] = (unsigned)(sql[i] - '0') < 10 ? (char)('0' + map[sql[i] - '0']) : sql[i];
	check(v, len, &memo);
	check(v, len, &memo);
	check(v, len, NULL);
	/* the text again, now that the memo names the copy's slot */
	check(sql, len, &memo);
	free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *sql = (const char *)data;
	uint8_t map[10];

	/* the digit map, from the first byte: d -> (mul * d + add) % 10, mul 0 folding every digit
	 * into one, 1, 3, 7 and 9 permuting them */
	static const uint8_t muls[5] = { 0, 1, 3, 7, 9 };
	unsigned b = size ? data[0] : 0;
	unsigned mul = muls[(b >> 4) % 5], add = b % 10;
	if (mul == 1 && add == 0)
		add = 1; /* not the identity */
	for (unsigned d = 0; d < 10; d++)
		map[d] = (uint8_t)((mul * d + add) % 10);

	round_trip(sql, size, map);
	/* longer texts are not cached: their first VERDICT_TEXT_MAX bytes are */
	if (size > VERDICT_TEXT_MAX)
		round_trip(sql, VERDICT_TEXT_MAX, map);
	return 0;
}
