/* test_namehash.c: unit tests for the name table behind database, user and pool lookups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "namehash.h"

static void test_siphash_reference_vectors(void **state)
{
	/* The reference implementation's vectors: key 00..0f, message 00..(len-1). */
	uint8_t key[16], msg[64];
	for (int i = 0; i < 16; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 64; i++)
		msg[i] = (uint8_t)i;
	assert_true(namehash_siphash(msg, 0, key) == 0x726fdb47dd0e0e31ull);
	assert_true(namehash_siphash(msg, 1, key) == 0x74f839c593dc67fdull);
	assert_true(namehash_siphash(msg, 8, key) == 0x93f5f5799a932462ull);
	assert_true(namehash_siphash(msg, 15, key) == 0xa129ca6149be45e5ull);
	assert_true(namehash_siphash(msg, 63, key) == 0x958a324ceb064572ull);
}

#define N 20000

static void test_put_get_del_many(void **state)
{
	struct namehash *h = namehash_new();
	assert_non_null(h);
	static char names[N][24];
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "db_%d", i);
		assert_null(namehash_get(h, names[i]));
		assert_true(namehash_put(h, names[i], &names[i]));
	}
	assert_int_equal(namehash_count(h), N);
	for (int i = 0; i < N; i++)
		assert_ptr_equal(namehash_get(h, names[i]), &names[i]);
	/* a lookup key need not be the stored pointer, only equal text */
	assert_ptr_equal(namehash_get(h, "db_1234"), &names[1234]);
	assert_null(namehash_get(h, "db_"));
	assert_null(namehash_get(h, "db_12345x"));
	/* remove the even ones: the odd ones stay reachable while the table shrinks */
	for (int i = 0; i < N; i += 2)
		assert_ptr_equal(namehash_del(h, names[i]), &names[i]);
	assert_int_equal(namehash_count(h), N / 2);
	assert_null(namehash_del(h, names[0]));
	for (int i = 0; i < N; i++)
		assert_ptr_equal(namehash_get(h, names[i]), i % 2 ? &names[i] : NULL);
	for (int i = 1; i < N; i += 2)
		assert_ptr_equal(namehash_del(h, names[i]), &names[i]);
	assert_int_equal(namehash_count(h), 0);
	/* usable again after emptying */
	assert_true(namehash_put(h, "", names[0]));
	assert_ptr_equal(namehash_get(h, ""), names[0]);
	namehash_free(h);
	namehash_free(NULL);
}

static void count_cb(void *val, void *arg)
{
	(*(size_t *)arg) += (size_t)(uintptr_t)val;
}

static void test_each(void **state)
{
	/* every entry is visited once: the values 1..100 sum to 5050 */
	static char names[100][8];
	struct namehash *h = namehash_new();
	for (int i = 0; i < 100; i++) {
		snprintf(names[i], sizeof(names[i]), "u%d", i);
		assert_true(namehash_put(h, names[i], (void *)(uintptr_t)(i + 1)));
	}
	size_t sum = 0;
	namehash_each(h, count_cb, &sum);
	assert_int_equal(sum, 5050);
	namehash_free(h);
}

static void test_similar_names(void **state)
{
	/* Names that differ only in case, length or a trailing byte are distinct. */
	static const char *names[] = { "app", "App", "APP", "app ", "ap", "appp", "app\x01",
				       "a much longer database name that spans several words" };
	size_t n = sizeof(names) / sizeof(names[0]);
	struct namehash *h = namehash_new();
	for (size_t i = 0; i < n; i++)
		assert_true(namehash_put(h, names[i], (void *)names[i]));
	for (size_t i = 0; i < n; i++)
		assert_ptr_equal(namehash_get(h, names[i]), names[i]);
	namehash_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_siphash_reference_vectors),
		cmocka_unit_test(test_put_get_del_many),
		cmocka_unit_test(test_similar_names),
		cmocka_unit_test(test_each),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
