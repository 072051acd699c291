/* test_shard.c: cmocka tests for shard keys taken from Bind parameters and their shard numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "shard.h"

/* A Bind body: portal "", statement "s1", the format codes, then the parameters. */
static size_t bind_body(uint8_t *out, int nfmt, const int16_t *fmts, int nparams,
			const int32_t *lens, const uint8_t *const *vals)
{
	size_t o = 0;
	out[o++] = 0;
	memcpy(out + o, "s1", 3);
	o += 3;
	out[o++] = (uint8_t)(nfmt >> 8);
	out[o++] = (uint8_t)nfmt;
	for (int i = 0; i < nfmt; i++) {
		out[o++] = (uint8_t)(fmts[i] >> 8);
		out[o++] = (uint8_t)fmts[i];
	}
	out[o++] = (uint8_t)(nparams >> 8);
	out[o++] = (uint8_t)nparams;
	for (int i = 0; i < nparams; i++) {
		uint32_t l = (uint32_t)lens[i];
		out[o++] = (uint8_t)(l >> 24);
		out[o++] = (uint8_t)(l >> 16);
		out[o++] = (uint8_t)(l >> 8);
		out[o++] = (uint8_t)l;
		if (lens[i] > 0) {
			memcpy(out + o, vals[i], (size_t)lens[i]);
			o += (size_t)lens[i];
		}
	}
	out[o++] = 0;   /* result formats */
	out[o++] = 0;
	return o;
}

static void test_text_params(void **state)
{
	(void)state;
	uint8_t buf[256];
	const uint8_t *vals[] = { (const uint8_t *)"abc", (const uint8_t *)"-42", (const uint8_t *)"9223372036854775807" };
	int32_t lens[] = { 3, 3, 19 };
	size_t n = bind_body(buf, 0, NULL, 3, lens, vals);
	int64_t v = 0;
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 1, &v), -1);   /* not a number */
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 2, &v), 1);
	assert_int_equal(v, -42);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 3, &v), 1);
	assert_true(v == INT64_MAX);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 4, &v), 0);    /* no such parameter */
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 0, &v), 0);
	/* cut short anywhere: malformed or absent, never a read past the end */
	for (size_t cut = 0; cut < n - 2; cut++) {
		int rc = shard_bind_int(buf, (uint32_t)cut, 3, &v);
		assert_true(rc == -1 || rc == 0);
	}
}

static void test_binary_params(void **state)
{
	(void)state;
	uint8_t buf[256];
	const uint8_t i2[] = { 0xff, 0xfe }, i4[] = { 0, 0, 1, 0 },
		      i8[] = { 0x80, 0, 0, 0, 0, 0, 0, 0 }, odd[] = { 1, 2, 3 };
	const uint8_t *vals[] = { i2, i4, i8, odd, NULL };
	int32_t lens[] = { 2, 4, 8, 3, -1 };
	int16_t fmts[] = { 1 };
	size_t n = bind_body(buf, 1, fmts, 5, lens, vals);
	int64_t v = 0;
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 1, &v), 1);
	assert_int_equal(v, -2);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 2, &v), 1);
	assert_int_equal(v, 256);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 3, &v), 1);
	assert_true(v == INT64_MIN);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 4, &v), -1);   /* 3 bytes: no int type */
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 5, &v), 0);    /* NULL */
	/* per-parameter formats: text then binary */
	int16_t mixed[] = { 0, 1 };
	const uint8_t *v2[] = { (const uint8_t *)"7", i4 };
	int32_t l2[] = { 1, 4 };
	n = bind_body(buf, 2, mixed, 2, l2, v2);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 1, &v), 1);
	assert_int_equal(v, 7);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 2, &v), 1);
	assert_int_equal(v, 256);
}

/* PostgreSQL's PARTITION BY HASH with modulus 5 (the vectors). */
static void test_shard_of_int(void **state)
{
	(void)state;
	const int64_t r0[] = { 1, 4, 5, 14, 19 }, r1[] = { 2, 3, 11, 17, 21 };
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(shard_of_int(r0[i], 5), 0);
		assert_int_equal(shard_of_int(r1[i], 5), 1);
	}
	/* 2 -> 4 shards splits each shard in two: hash mod 4 refines hash mod 2 */
	for (int64_t k = -1000; k < 1000; k++)
		assert_int_equal(shard_of_int(k, 4) % 2, shard_of_int(k, 2));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text_params),
		cmocka_unit_test(test_binary_params),
		cmocka_unit_test(test_shard_of_int),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
