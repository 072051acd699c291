/* test_freelist.c: cmocka tests for freelist.h: spares are reused last-in first-out, bounded by keep, and cleared. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "freelist.h"

static void test_reuse_and_bound(void **state)
{
	(void)state;
	struct freelist f = { .keep = 2 };
	assert_null(freelist_get(&f));
	void *a = malloc(64), *b = malloc(64), *c = malloc(64);
	freelist_put(&f, a);
	freelist_put(&f, b);
	freelist_put(&f, c);          /* over keep: freed, not held */
	assert_int_equal(f.n, 2);
	assert_ptr_equal(freelist_get(&f), b);
	assert_ptr_equal(freelist_get(&f), a);
	assert_null(freelist_get(&f));
	assert_int_equal(f.n, 0);
	free(a);
	free(b);
}

static void test_keep_zero_holds_nothing(void **state)
{
	(void)state;
	struct freelist f = { .keep = 0 };
	freelist_put(&f, malloc(16));
	assert_int_equal(f.n, 0);
	assert_null(f.head);
}

static void test_clear(void **state)
{
	(void)state;
	struct freelist f = { .keep = 8 };
	for (int i = 0; i < 5; i++)
		freelist_put(&f, malloc(32));
	assert_int_equal(f.n, 5);
	freelist_clear(&f);
	assert_int_equal(f.n, 0);
	assert_null(f.head);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reuse_and_bound),
		cmocka_unit_test(test_keep_zero_holds_nothing),
		cmocka_unit_test(test_clear),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
