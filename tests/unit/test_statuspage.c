/* test_statuspage.c: unit tests for escaping what clients name: the status page's HTML and JSON, and log lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "log.h"
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

static void test_log_sanitize(void **state)
{
	char buf[128];
	/* a client's name cannot start a line that reads like pgmux's */
	size_t n = log_sanitize(buf, sizeof(buf), "evil\n2026-12-01 00:00:00.000 [1] LOG forged");
	assert_string_equal(buf, "evil\\n2026-12-01 00:00:00.000 [1] LOG forged");
	assert_int_equal(n, strlen(buf));
	log_sanitize(buf, sizeof(buf), "a\rb\tc\x01" "d\x7f");
	assert_string_equal(buf, "a\\rb c\\x01d\\x7f");
	/* UTF-8 and ordinary text pass unchanged */
	log_sanitize(buf, sizeof(buf), "caf\xc3\xa9 ok");
	assert_string_equal(buf, "caf\xc3\xa9 ok");
	/* cut short like snprintf */
	assert_int_equal(log_sanitize(buf, 4, "\n\n\n"), 6);
	assert_string_equal(buf, "\\n\\");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_log_sanitize),
		cmocka_unit_test(test_html_escape),
		cmocka_unit_test(test_json_escape),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
