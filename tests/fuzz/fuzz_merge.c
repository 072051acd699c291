/* fuzz_merge.c: libFuzzer harness for the merge planner (arbitrary SQL) and the merging of shard rows (arbitrary values and protocol bodies). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "merge.h"
#include "mergeplan.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Mode 0: plan a SQL text; whatever is planned is internally consistent. */
static void fuzz_plan(const char *sql)
{
	struct mergeplan mp;
	char why[300];
	if (!mergeplan_build(sql, &mp, why, sizeof(why))) {
		FUZZ_CHECK(mp.sql == NULL && why[0]);
		return;
	}
	FUZZ_CHECK(mp.sql && mp.n_cols <= MP_MAX_COLS && mp.n_keys <= MP_MAX_KEYS);
	FUZZ_CHECK(mp.star || mp.n_hidden <= mp.n_cols);
	for (uint16_t i = 0; i < mp.n_cols && !mp.star; i++)
		FUZZ_CHECK(mp.cols[i].agg != MP_AVG_SUM ||
			   (mp.cols[i].avg_count > i && mp.cols[i].avg_count < mp.n_cols));
	for (uint16_t i = 0; i < mp.n_keys; i++)
		FUZZ_CHECK(mp.keys[i].col >= 0 && (mp.star || mp.keys[i].col < mp.n_cols));
	FUZZ_CHECK(!mp.limit_pushed || (!mp.aggregate && !mp.distinct));
	mergeplan_free(&mp);
}

/* Mode 1: two values compared under every kind (antisymmetric), added and divided. */
static void fuzz_values(const char *a, const char *b)
{
	struct merge_val x = { a, (int32_t)strlen(a) }, y = { b, (int32_t)strlen(b) };
	for (int k = MK_INT; k <= MK_BPCHAR; k++) {
		bool bad1 = false, bad2 = false;
		int c1 = mergeval_cmp((enum merge_kind)k, &x, &y, &bad1);
		int c2 = mergeval_cmp((enum merge_kind)k, &y, &x, &bad2);
		FUZZ_CHECK(c1 >= -1 && c1 <= 1);
		FUZZ_CHECK(bad1 || bad2 || c1 == -c2);
	}
	char out[5000];
	if (mergeval_dec_add(a, strlen(a), b, strlen(b), out, sizeof(out))) {
		struct merge_val s = { out, (int32_t)strlen(out) };
		bool bad = false;
		mergeval_cmp(MK_NUMERIC, &s, &x, &bad);
		FUZZ_CHECK(!bad);
	}
	if (mergeval_dec_avg(a, strlen(a), b, strlen(b), out, sizeof(out)))
		FUZZ_CHECK(strlen(out) < sizeof(out));
	static const uint32_t oids[] = { 16, 18, 19, 20, 21, 23, 25, 26, 700, 701, 1042, 1043, 1082,
					 1114, 1700, 2950 };
	for (size_t i = 0; i < sizeof(oids) / sizeof(oids[0]); i++) {
		struct pktbuf pb = { 0 };
		mergeval_to_binary(oids[i], a, strlen(a), &pb);
		pktbuf_free(&pb);
	}
}

/* Mode 2: a plan from the text before the first NUL, then a RowDescription and DataRows cut
 * from the bytes after it. */
static void fuzz_rows(const uint8_t *d, size_t n)
{
	const uint8_t *z = memchr(d, 0, n);
	if (!z)
		return;
	struct mergeplan mp;
	char why[300];
	if (!mergeplan_build((const char *)d, &mp, why, sizeof(why)))
		return;
	const uint8_t *p = z + 1, *end = d + n;
	if (end - p < 2) {
		mergeplan_free(&mp);
		return;
	}
	uint32_t dl = (uint32_t)(p[0] << 8 | p[1]) % 512;
	p += 2;
	if ((size_t)(end - p) < dl) {
		mergeplan_free(&mp);
		return;
	}
	struct merge_set m;
	uint16_t all_binary = 1;
	if (merge_init(&m, &mp, p, dl, 1 << 16) &&
	    merge_set_formats(&m, &all_binary, (uint16_t)(d[0] & 1))) {
		const uint8_t *desc = p;
		p += dl;
		while (end - p >= 2) {
			uint32_t rl = (uint32_t)(p[0] << 8 | p[1]) % 1024;
			p += 2;
			if ((size_t)(end - p) < rl)
				break;
			if (!merge_add_row(&m, p, rl))
				break;
			p += rl;
		}
		if (merge_finish(&m)) {
			FUZZ_CHECK(m.first <= m.end && m.end <= m.nrows);
			struct pktbuf pb = { 0 };
			merge_put_desc(&m, desc, dl, &pb);
			for (size_t i = m.first; i < m.end; i++)
				merge_put_row(&m, i, &pb);
			pktbuf_free(&pb);
		}
	}
	merge_free(&m);
	mergeplan_free(&mp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 1 << 14)
		return 0;
	int mode = data[0] % 3;
	if (mode == 2) {
		fuzz_rows(data + 1, size - 1);
		return 0;
	}
	char *s = malloc(size);
	if (!s)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	if (mode == 0) {
		fuzz_plan(s);
	} else {
		char *sep = strchr(s, '|');
		if (sep) {
			*sep = '\0';
			fuzz_values(s, sep + 1);
		}
	}
	free(s);
	return 0;
}
