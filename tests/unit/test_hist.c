/* test_hist.c: unit tests for the log histograms behind the wait/query/transaction percentiles. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hist.h"

static void test_buckets_cover_every_value(void **state)
{
	/* Every value lands in the bucket whose range holds it, across the whole span. */
	for (uint64_t v = 0; v < (1ull << 40); v = v < 64 ? v + 1 : v + v / 7 + 1) {
		uint32_t b = hist_bucket(v);
		assert_true(b < HIST_BUCKETS);
		assert_true(hist_bucket_low(b) <= v);
		if (b + 1 < HIST_BUCKETS)
			assert_true(v < hist_bucket_low(b + 1));
	}
	assert_int_equal(hist_bucket(UINT64_MAX), HIST_BUCKETS - 1);
}

static void test_small_values_exact(void **state)
{
	for (uint64_t v = 0; v < HIST_SUB; v++)
		assert_int_equal(hist_bucket(v), v);
}

static void test_quantiles_within_a_bucket(void **state)
{
	static struct hist h;
	for (int i = 1; i <= 1000; i++)
		hist_add(&h, (uint64_t)i);
	assert_int_equal(h.count, 1000);
	struct { double q; uint64_t exact; } cases[] = { { 0.5, 500 }, { 0.95, 950 }, { 0.99, 990 }, { 1.0, 1000 } };
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t got = hist_quantile(&h, cases[i].q);
		/* never understated, and at most one bucket (12.5 %) above */
		assert_true(got >= cases[i].exact);
		assert_true(got <= cases[i].exact + cases[i].exact / 8 + 1);
	}
}

static void test_empty_and_merge(void **state)
{
	static struct hist a, b;
	assert_int_equal(hist_quantile(&a, 0.99), 0);
	hist_add(&a, 3);
	hist_add(&b, 100000);
	hist_merge(&a, &b);
	assert_int_equal(a.count, 2);
	assert_int_equal(hist_quantile(&a, 0.5), 3);
	assert_true(hist_quantile(&a, 1.0) >= 100000);
}

/* The /metrics histogram: counts below power-of-two edges are exact, below any edge monotonic. */
static void test_counts_below(void **state)
{
	static struct hist h;
	for (uint64_t v = 0; v < 5000; v++)
		hist_add(&h, v);
	hist_add(&h, UINT64_MAX);
	const uint64_t edges[] = { 0, 1, 8, 16, 1000, 1024, 4096, 1ull << 40, UINT64_MAX };
	uint64_t out[9];
	hist_counts_below(&h, edges, 9, out);
	assert_int_equal(out[0], 0);
	assert_int_equal(out[1], 1);
	assert_int_equal(out[2], 8);
	assert_int_equal(out[3], 16);
	assert_true(out[4] <= 1000 && out[4] >= 1000 - 1000 / 8);  /* not an edge: buckets below */
	assert_int_equal(out[5], 1024);
	assert_int_equal(out[6], 4096);
	assert_int_equal(out[7], 5000);
	assert_int_equal(out[8], 5001);         /* the top bucket has no upper bound */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buckets_cover_every_value),
		cmocka_unit_test(test_small_values_exact),
		cmocka_unit_test(test_quantiles_within_a_bucket),
		cmocka_unit_test(test_empty_and_merge),
		cmocka_unit_test(test_counts_below),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
