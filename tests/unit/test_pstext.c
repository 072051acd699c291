/* test_pstext.c: cmocka tests for pstext.c: which texts are one DEALLOCATE name, DEALLOCATE ALL or DISCARD ALL, as PostgreSQL reads them. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "pstext.h"

static bool drops(const char *t)
{
	return pstext_drops_all(t, t + strlen(t));
}

static void test_drops_all(void **state)
{
	(void)state;
	static const char *const yes[] = {
		"DEALLOCATE ALL", "deallocate all", "DISCARD ALL", "discard all;", "  DISCARD\tALL ;; ",
		"DEALLOCATE PREPARE ALL", "DEALLOCATE /* c */ ALL", "-- why\nDISCARD ALL",
		"/* a */ DEALLOCATE ALL /* b */", "DEALLOCATE ALL -- trailing",
	};
	static const char *const no[] = {
		"", "SELECT 1", "DEALLOCATE s1", "DEALLOCATE ALLx", "DEALLOCATEALL", "DISCARD PLANS",
		"DISCARD ALL; SELECT 1", "DEALLOCATE ALL x", "DISCARD_ALL", "/* unterminated DISCARD ALL",
		"DEALLOCATE PREPARE", "DISCARD", "DEALLOCATE ALL1", "DEALLOCATE ALL$",
		"'DISCARD ALL'", "DELETE FROM t",
	};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		assert_true(drops(yes[i]));
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_false(drops(no[i]));
	/* the length bounds the text: a NUL-free window is read only within it */
	const char *t = "DISCARD ALL and more";
	assert_true(pstext_drops_all(t, t + 11));
	assert_false(pstext_drops_all(t, t + 10));
	/* a Query's text: its NUL counted, and required where the length ends */
	assert_true(pstext_query_drops_all("DISCARD ALL", 12));
	assert_false(pstext_query_drops_all("DISCARD ALL", 11));
	assert_false(pstext_query_drops_all("", 0));
	assert_false(pstext_query_drops_all("DISCARD ALL\0x", 14));
}

static void test_dealloc_name(void **state)
{
	(void)state;
	char name[64];
	assert_true(pstext_dealloc_name("DEALLOCATE s1", name, sizeof(name)));
	assert_string_equal(name, "s1");
	assert_true(pstext_dealloc_name("  deallocate PREPARE MyStmt ;", name, sizeof(name)));
	assert_string_equal(name, "mystmt");          /* folded, as an unquoted identifier */
	assert_true(pstext_dealloc_name("DEALLOCATE \"My\"\"S\"", name, sizeof(name)));
	assert_string_equal(name, "My\"S");           /* quoted: kept, "" is one quote */
	assert_false(pstext_dealloc_name("DEALLOCATE ALL", name, sizeof(name)));
	assert_false(pstext_dealloc_name("DEALLOCATE", name, sizeof(name)));
	assert_false(pstext_dealloc_name("DEALLOCATE s1 s2", name, sizeof(name)));
	assert_false(pstext_dealloc_name("DEALLOCATE \"open", name, sizeof(name)));
	assert_false(pstext_dealloc_name("SELECT 1", name, sizeof(name)));
	/* a name longer than cap is not taken (no client name is that long): never written past
	 * cap, and refused rather than cut to another name */
	char small[4];
	assert_false(pstext_dealloc_name("DEALLOCATE abcdefgh", small, sizeof(small)));
	assert_true(strlen(small) < sizeof(small));
}

static void test_may_deallocate(void **state)
{
	(void)state;
	const char *yes = "dD \t\n\r-/";
	for (const char *c = yes; *c; c++)
		assert_true(pstext_may_deallocate((uint8_t)*c));
	const char *no = "SsIiUuBbCc(0'\"";
	for (const char *c = no; *c; c++)
		assert_false(pstext_may_deallocate((uint8_t)*c));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_drops_all),
		cmocka_unit_test(test_dealloc_name),
		cmocka_unit_test(test_may_deallocate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
