/* test_reshard.c: unit tests for pgmux-reshard's pure helpers: labels, literals, names, filters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "reshard.h"

static void test_label_hides_password(void **state)
{
	(void)state;
	char *l = reshard_label("host=10.0.0.1 port=5432 dbname=users user=admin password='s3cr et'");
	assert_string_equal(l, "10.0.0.1:5432/users");
	free(l);
	l = reshard_label("this is = not a conninfo '");
	assert_string_equal(l, "(unreadable conninfo)");
	free(l);
}

static void test_conninfo_without_password(void **state)
{
	(void)state;
	char *pw = NULL;
	char *c = reshard_conninfo_nopw("host=h port=5 dbname='a b' password='p\\'w' user=u", &pw);
	assert_string_equal(pw, "p'w");
	assert_null(strstr(c, "password"));
	assert_non_null(strstr(c, "dbname='a b'"));
	assert_non_null(strstr(c, "user='u'"));
	free(c);
	free(pw);
	c = reshard_conninfo_nopw("host=h", &pw);
	assert_null(pw);
	assert_string_equal(c, "host='h'");
	free(c);
}

static void test_literal_doubles_quotes(void **state)
{
	(void)state;
	char *l = reshard_literal("host=a password='x''y' dbname=b\\c");
	assert_string_equal(l, "'host=a password=''x''''y'' dbname=b\\c'");
	free(l);
	l = reshard_literal("");
	assert_string_equal(l, "''");
	free(l);
}

static void test_names_and_filters(void **state)
{
	(void)state;
	struct reshard rs = { .n_old = 2, .n_new = 4, .key = "user_id", .key_sqltype = "bigint" };
	char name[64];
	reshard_name(&rs, 3, name, sizeof(name));
	assert_string_equal(name, "pgmux_reshard_4_3");
	char *f = reshard_filter(&rs, 2);
	assert_string_equal(f, "\"user_id\" IS NOT NULL AND satisfies_hash_partition("
			    "'pgmux_reshard.keyspace'::regclass, 4, 2, \"user_id\"::bigint)");
	free(f);
	/* a key name with a quote stays one identifier */
	rs.key = "we\"ird";
	rs.key_sqltype = "text";
	f = reshard_filter(&rs, 3);
	assert_non_null(strstr(f, "\"we\"\"ird\"::text)"));
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_label_hides_password),
		cmocka_unit_test(test_conninfo_without_password),
		cmocka_unit_test(test_literal_doubles_quotes),
		cmocka_unit_test(test_names_and_filters),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
