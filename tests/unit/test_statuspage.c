/* test_statuspage.c: unit tests for the status page's escaping (names on the page can come from clients). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "statuspage.h"

static void test_html_escape(void **state)
{
	char buf[256];
	assert_int_equal(statuspage_html_escape(buf, sizeof(buf), "plain_db-1"), 10);
	assert_string_equal(buf, "plain_db-1");
	statuspage_html_escape(buf, sizeof(buf), "<script>\"a\" & 'b'</script>");
	assert_string_equal(buf, "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;");
	/* cut short like snprintf: the full length is returned, the text stays terminated */
	size_t n = statuspage_html_escape(buf, 6, "a<b");
	assert_int_equal(n, 6);
	assert_string_equal(buf, "a&lt;");
	assert_int_equal(statuspage_html_escape(buf, 0, "<"), 4);
	/* bytes that are not ASCII pass through (the page is UTF-8) */
	statuspage_html_escape(buf, sizeof(buf), "caf\xc3\xa9");
	assert_string_equal(buf, "caf\xc3\xa9");
}

static void test_json_escape(void **state)
{
	char buf[256];
	statuspage_json_escape(buf, sizeof(buf), "a\"b\\c\nd\te\x01");
	assert_string_equal(buf, "a\\\"b\\\\c\\nd\\u0009e\\u0001");
	/* invalid UTF-8 becomes U+FFFD, valid multibyte text stays */
	statuspage_json_escape(buf, sizeof(buf), "x\xff" "y\xc3\xa9");
	assert_string_equal(buf, "x\xef\xbf\xbdy\xc3\xa9");
	/* a lone continuation byte and a truncated sequence */
	statuspage_json_escape(buf, sizeof(buf), "\x80\xe2\x82");
	assert_string_equal(buf, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	size_t n = statuspage_json_escape(buf, 4, "\x01\x02");
	assert_int_equal(n, 12);
	assert_string_equal(buf, "\\u0");
	assert_int_equal(statuspage_json_escape(buf, sizeof(buf), ""), 0);
	assert_string_equal(buf, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_html_escape),
		cmocka_unit_test(test_json_escape),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
