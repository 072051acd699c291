/* test_hba.c: the auth_hba_file / auth_ident_file parser and rule matching (hba.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "hba.h"

static const char RULES[] =
	"# TYPE DATABASE USER ADDRESS METHOD\n"
	" \t \n"
	"\t\t# an indented comment\n"
	"local   dbp        all                         peer map=m1\n"
	"local   all        userp                       password\n"
	"local   all        all                         md5\n"
	"hostssl all        all   10.0.0.0/8            cert\n"
	"hostnossl all      all   11.0.0.0/8            md5\n"
	"host    all        all   127.0.0.0 255.255.255.0 password\n"
	"host    tmp1,all   user1,user2 , user3  16.0.0.0/8 md5   # trailing comment\n"
	"host    \"all\"      \"all\"  19.0.0.0/8           cert\n"
	"host    \"q1\"\"q2\"   \"a , b\" 19.0.0.0/8          trust\n"
	"host    mdb        muser 128.0.0.0/9           trust\n"
	"host    mdb        muser 128.0.0.0/1           reject\n"
	"host    mdb        muser ff20::/12             md5\n"
	"host    mdb        muser ::1/128               trust\n"
	"host    sameuser   all   all                   scram-sha-256\n"
	"host    replication,db2 admin ::1/128          trust\n";

static struct hba *load_rules(void)
{
	struct hba *h;
	char err[256];
	int rc = hba_parse(RULES, strlen(RULES), &h, err, sizeof(err));
	if (rc != 0)
		print_error("%s\n", err);
	assert_int_equal(rc, 0);
	return h;
}

/* The method for a login, "none" when no rule matches. */
static const char *eval(const struct hba *h, const char *addr, bool tls, bool repl,
			const char *db, const char *user)
{
	struct hba_peer p = { .tls = tls, .replication = repl, .db = db, .user = user };
	if (strcmp(addr, "unix") == 0) {
		p.is_unix = true;
	} else if (inet_pton(AF_INET, addr, p.addr) == 1) {
		p.family = AF_INET;
	} else {
		assert_int_equal(inet_pton(AF_INET6, addr, p.addr), 1);
		p.family = AF_INET6;
	}
	struct hba_rule_info r;
	return hba_eval(h, &p, &r) ? hba_method_name(r.method) : "none";
}

static void test_local_rules(void **state)
{
	(void)state;
	struct hba *h = load_rules();
	assert_int_equal(hba_count(h), 15);
	assert_string_equal(eval(h, "unix", false, false, "dbp", "x"), "peer");
	assert_string_equal(eval(h, "unix", false, false, "db", "userp"), "password");
	assert_string_equal(eval(h, "unix", false, false, "db", "x"), "md5");
	struct hba_peer p = { .is_unix = true, .db = "dbp", .user = "x" };
	struct hba_rule_info r;
	assert_true(hba_eval(h, &p, &r));
	assert_string_equal(r.map, "m1");
	assert_int_equal(r.line, 4);
	hba_free(h);
}

static void test_host_types_and_masks(void **state)
{
	(void)state;
	struct hba *h = load_rules();
	assert_string_equal(eval(h, "10.1.1.1", true, false, "db", "u"), "cert");
	assert_string_equal(eval(h, "10.1.1.1", false, false, "db", "u"), "none");
	assert_string_equal(eval(h, "11.1.1.1", false, false, "db", "u"), "md5");
	assert_string_equal(eval(h, "11.1.1.1", true, false, "db", "u"), "none");
	assert_string_equal(eval(h, "127.0.0.3", true, false, "db", "u"), "password");
	assert_string_equal(eval(h, "127.0.1.4", false, false, "db", "u"), "none");
	/* lists with blanks around the commas */
	assert_string_equal(eval(h, "16.0.0.1", false, false, "db2", "user3"), "md5");
	assert_string_equal(eval(h, "16.0.0.1", false, false, "db2", "user4"), "none");
	/* first match wins: /9 before /1 */
	assert_string_equal(eval(h, "128.1.1.1", false, false, "mdb", "muser"), "trust");
	assert_string_equal(eval(h, "254.1.1.1", false, false, "mdb", "muser"), "reject");
	assert_string_equal(eval(h, "ff22:3::1", false, false, "mdb", "muser"), "md5");
	assert_string_equal(eval(h, "::1", false, false, "mdb", "muser"), "trust");
	assert_string_equal(eval(h, "::2", false, false, "mdb", "muser"), "none");
	hba_free(h);
}

static void test_quoting_and_keywords(void **state)
{
	(void)state;
	struct hba *h = load_rules();
	/* a quoted all is a name, not the keyword */
	assert_string_equal(eval(h, "19.0.0.2", false, false, "db", "u"), "none");
	assert_string_equal(eval(h, "19.0.0.2", false, false, "all", "all"), "cert");
	assert_string_equal(eval(h, "19.0.0.2", false, false, "q1\"q2", "a , b"), "trust");
	/* sameuser */
	assert_string_equal(eval(h, "1.2.3.4", false, false, "bob", "bob"), "scram-sha-256");
	assert_string_equal(eval(h, "1.2.3.4", false, false, "bob", "eve"), "none");
	/* replication only through the keyword; all does not admit it */
	assert_string_equal(eval(h, "::1", false, true, "whatever", "admin"), "trust");
	assert_string_equal(eval(h, "::1", false, false, "replication", "admin"), "none");
	assert_string_equal(eval(h, "::1", false, false, "db2", "admin"), "trust");
	assert_string_equal(eval(h, "unix", false, true, "db", "userp"), "none");
	hba_free(h);
}

static void expect_error(const char *text, const char *want)
{
	struct hba *h = (struct hba *)1;
	char err[256] = "";
	assert_int_equal(hba_parse(text, strlen(text), &h, err, sizeof(err)), -1);
	assert_null(h);
	if (!strstr(err, want))
		print_error("error \"%s\" lacks \"%s\"\n", err, want);
	assert_non_null(strstr(err, want));
}

static void test_errors(void **state)
{
	(void)state;
	expect_error("local all all\n", "line 1: authentication method missing");
	expect_error("\nlocal all all ldap\n", "line 2: invalid or unsupported authentication method");
	expect_error("host all all example.com md5\n", "invalid address");
	expect_error("host all all 10.0.0.0/33 md5\n", "invalid prefix length");
	expect_error("host all all 10.0.0.0 ffff::0 md5\n", "invalid netmask");
	expect_error("host all all 10.0.0.0/8 md5 clientcert=verify-full\n", "unsupported option");
	expect_error("host all all 10.0.0.0/8 md5 map=x\n", "map= is only for peer and cert");
	expect_error("host all all 10.0.0.0/8 peer\n", "peer is only for local");
	expect_error("local all all cert\n", "cert is not for local");
	expect_error("local \"all all md5\n", "unterminated quoted name");
	expect_error("local all all,\n", "ends with a comma");
	expect_error("local @file all md5\n", "include files");
	expect_error("local all +grp md5\n", "groups");
	expect_error("peer all all md5\n", "invalid connection type");
	{
		static const char NUL_TEXT[] = "local all all md5\0x\n";
		struct hba *h;
		char err[256];
		assert_int_equal(hba_parse(NUL_TEXT, sizeof(NUL_TEXT) - 1, &h, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "NUL"));
	}
	char big[400];
	memset(big, 'a', sizeof(big));
	memcpy(big, "local ", 6);
	strcpy(big + 350, " all md5\n");
	expect_error(big, "longer than");
}

static void test_ident(void **state)
{
	(void)state;
	static const char IDENT[] =
		"# MAPNAME SYSTEM-USERNAME PG-USERNAME\n"
		"test   pgbouncer.acme.org  someuser\n"
		"test   pgbouncer.acme.org  anotheruser\n"
		"test2  \"bouncer\"           all\n"
		"test2  pgbouncer.acme.org  \"all\"\n";
	struct ident *id;
	char err[256];
	assert_int_equal(ident_parse(IDENT, strlen(IDENT), &id, err, sizeof(err)), 0);
	assert_true(ident_match(id, "test", "pgbouncer.acme.org", "someuser"));
	assert_true(ident_match(id, "test", "pgbouncer.acme.org", "anotheruser"));
	assert_false(ident_match(id, "test", "pgbouncer.acme.org", "bouncer"));
	assert_true(ident_match(id, "test2", "bouncer", "anyone"));
	/* a quoted all is a user named all */
	assert_false(ident_match(id, "test2", "pgbouncer.acme.org", "someuser"));
	assert_true(ident_match(id, "test2", "pgbouncer.acme.org", "all"));
	assert_false(ident_match(id, "nomap", "bouncer", "x"));
	assert_false(ident_match(NULL, "test", "pgbouncer.acme.org", "someuser"));
	ident_free(id);
	static const char BAD[] = "m sys\n";
	assert_int_equal(ident_parse(BAD, strlen(BAD), &id, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "line 1: database user name missing"));
	static const char BAD2[] = "m sys pg extra\n";
	assert_int_equal(ident_parse(BAD2, strlen(BAD2), &id, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "more than three fields"));
}

/* Every prefix of every rule line either parses or fails with a line number: never a crash
 * (ASan watches the reads). */
static void test_truncations(void **state)
{
	(void)state;
	size_t n = strlen(RULES);
	for (size_t i = 0; i <= n; i++) {
		struct hba *h;
		char err[256];
		if (hba_parse(RULES, i, &h, err, sizeof(err)) == 0)
			hba_free(h);
		else
			assert_non_null(strstr(err, "line "));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_local_rules),
		cmocka_unit_test(test_host_types_and_masks),
		cmocka_unit_test(test_quoting_and_keywords),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_ident),
		cmocka_unit_test(test_truncations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
