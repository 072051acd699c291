/* test_stats.c: unit tests for the pure parts of stats and /metrics: averages, percentile windows, the saturation threshold, label escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "prom.h"
#include "stats.h"

/* ---- the percentile window: cumulative minus snapshot ---------------------------------- */

static void test_window_is_cumulative_minus_snapshot(void **state)
{
	static struct hist old, cur, win;
	/* before the snapshot: 1000 fast waits */
	for (int i = 0; i < 1000; i++)
		hist_add(&cur, 5);
	old = cur;
	/* in the window: 100 slow ones only */
	for (int i = 0; i < 100; i++)
		hist_add(&cur, 20000);
	stats_hist_window(&cur, &old, &win);
	assert_int_equal(win.count, 100);
	/* the old fast events no longer pull the median down */
	uint64_t p50 = hist_quantile(&win, 0.5);
	assert_true(p50 >= 20000 && p50 <= 20000 + 20000 / 8 + 1);
	/* over everything the median is the fast value */
	assert_int_equal(hist_quantile(&cur, 0.5), 5);
}

static void test_window_empty_and_backwards(void **state)
{
	static struct hist a, b, win;
	stats_hist_window(&a, &a, &win);
	assert_int_equal(win.count, 0);
	assert_int_equal(hist_quantile(&win, 0.99), 0);
	/* a snapshot ahead of the current histogram (cannot happen, must not wrap) */
	hist_add(&b, 7);
	hist_add(&b, 7);
	hist_add(&a, 7);
	hist_add(&a, 300);
	stats_hist_window(&a, &b, &win);
	assert_int_equal(win.count, 1);
	assert_int_equal(win.b[hist_bucket(7)], 0);
	assert_true(hist_quantile(&win, 0.5) >= 300);
}

static void test_window_with_zero_snapshot_is_everything(void **state)
{
	static struct hist zero, cur, win;
	for (uint64_t v = 0; v < 5000; v += 7)
		hist_add(&cur, v);
	stats_hist_window(&cur, &zero, &win);
	assert_memory_equal(&win, &cur, sizeof(cur));
	for (double q = 0.1; q <= 1.0; q += 0.1)
		assert_int_equal(hist_quantile(&win, q), hist_quantile(&cur, q));
}

/* ---- the saturation threshold ------------------------------------------------------------- */

static const struct {
	int active, size;
	double warn;
	bool over;
} threshold_cases[] = {
	{ 4, 5, 0.8, true },     /* at the threshold counts */
	{ 3, 5, 0.8, false },
	{ 5, 5, 0.8, true },
	{ 6, 5, 0.8, true },     /* reserve pool in use */
	{ 240, 300, 0.8, true }, /* the plan's alert */
	{ 239, 300, 0.8, false },
	{ 5, 5, 1.0, true },
	{ 4, 5, 1.0, false },
	{ 0, 5, 0.0, false },    /* 0 turns the warning off */
	{ 5, 5, 0.0, false },
	{ 0, 0, 0.8, false },    /* no pool size, no saturation */
	{ 1, 10, 0.1, true },
	{ 0, 10, 0.1, false },
	{ 7, 10, 0.7, true },    /* a product that binary fractions may round */
};

static void test_over_threshold(void **state)
{
	for (size_t i = 0; i < sizeof(threshold_cases) / sizeof(threshold_cases[0]); i++) {
		bool got = stats_over_threshold(threshold_cases[i].active, threshold_cases[i].size,
						threshold_cases[i].warn);
		if (got != threshold_cases[i].over)
			print_error("case %zu: %d of %d at %g\n", i, threshold_cases[i].active,
				    threshold_cases[i].size, threshold_cases[i].warn);
		assert_int_equal(got, threshold_cases[i].over);
	}
}

/* ---- averages (the stats_period arithmetic) ------------------------------------------------ */

static void test_average(void **state)
{
	struct stats old = { { 0 } }, cur = { { 0 } }, avg;
	cur.v[STAT_XACT_COUNT] = 100;
	cur.v[STAT_QUERY_COUNT] = 300;
	cur.v[STAT_XACT_TIME] = 100 * 250;
	cur.v[STAT_QUERY_TIME] = 300 * 80;
	cur.v[STAT_BYTES_RECV] = 5000000;
	stats_average(&cur, &old, 2000000, &avg);
	assert_int_equal(avg.v[STAT_XACT_COUNT], 50);
	assert_int_equal(avg.v[STAT_QUERY_COUNT], 150);
	assert_int_equal(avg.v[STAT_XACT_TIME], 250);
	assert_int_equal(avg.v[STAT_QUERY_TIME], 80);
	assert_int_equal(avg.v[STAT_BYTES_RECV], 2500000);
	stats_average(&cur, &old, 0, &avg);
	assert_int_equal(avg.v[STAT_XACT_COUNT], 0);
	/* counters that went backwards count as zero */
	stats_average(&old, &cur, 1000000, &avg);
	assert_int_equal(avg.v[STAT_XACT_COUNT], 0);
	assert_int_equal(avg.v[STAT_XACT_TIME], 0);
}

/* ---- label escaping ---------------------------------------------------------------------- */

static const struct {
	const char *in, *out;
} escape_cases[] = {
	{ "", "" },
	{ "orders", "orders" },
	{ "a\"b", "a\\\"b" },
	{ "a\\b", "a\\\\b" },
	{ "line\nbreak", "line\\nbreak" },
	{ "tab\there", "tab\there" },                 /* only \, " and newline are escaped */
	{ "caf\xc3\xa9", "caf\xc3\xa9" },              /* valid UTF-8 stays */
	{ "\xe2\x82\xac\xf0\x9f\x98\x80", "\xe2\x82\xac\xf0\x9f\x98\x80" },
	{ "bad\xff", "bad\xef\xbf\xbd" },              /* invalid bytes become U+FFFD */
	{ "\xc3", "\xef\xbf\xbd" },                    /* truncated sequence */
	{ "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd" },    /* overlong */
	{ "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },   /* surrogate */
	{ "\xf4\x90\x80\x80x", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdx" },
	{ "}\",x=\"y", "}\\\",x=\\\"y" },             /* cannot break out of the label */
};

static void test_escape_label(void **state)
{
	for (size_t i = 0; i < sizeof(escape_cases) / sizeof(escape_cases[0]); i++) {
		char buf[128];
		size_t n = prom_escape_label(buf, sizeof(buf), escape_cases[i].in);
		if (strcmp(buf, escape_cases[i].out) != 0)
			print_error("case %zu: got \"%s\"\n", i, buf);
		assert_string_equal(buf, escape_cases[i].out);
		assert_int_equal(n, strlen(escape_cases[i].out));
		/* the length alone, without a buffer */
		assert_int_equal(prom_escape_label(NULL, 0, escape_cases[i].in), n);
	}
}

static void test_escape_label_truncates(void **state)
{
	char buf[4];
	assert_int_equal(prom_escape_label(buf, sizeof(buf), "a\"bcdef"), 8);
	assert_string_equal(buf, "a\\\"");
	char one[1] = { 'x' };
	assert_int_equal(prom_escape_label(one, sizeof(one), "abc"), 3);
	assert_int_equal(one[0], '\0');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_window_is_cumulative_minus_snapshot),
		cmocka_unit_test(test_window_empty_and_backwards),
		cmocka_unit_test(test_window_with_zero_snapshot_is_everything),
		cmocka_unit_test(test_over_threshold),
		cmocka_unit_test(test_average),
		cmocka_unit_test(test_escape_label),
		cmocka_unit_test(test_escape_label_truncates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
