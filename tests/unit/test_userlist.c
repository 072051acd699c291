/* test_userlist.c: cmocka tests for the auth_file parser: syntax, errors with file:line, lookups, secret kinds, empty secrets, cached verifiers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "scram.h"
#include "userlist.h"

#ifndef TEST_DATA_DIR
#define TEST_DATA_DIR "tests/unit/data"
#endif

#define PG_VERIFIER "SCRAM-SHA-256$4096:7t+Kps6m6PA+Lpa4OJ8v1A==$5aK65TzaT39RB1OjgUkMFjsUJzjfORxN+GXVnXRtYnA=:llI7UYsyuyjOsqKdCdtvXaEfI5jtnDPWnvHRIcc9eAk="

/* Secrets in the malformed inputs below carry this marker; no error message may contain it. */
#define MARK "TOPSECRET"

static void check_good(const struct userlist *ul)
{
	assert_int_equal(userlist_count(ul), 6);
	assert_string_equal(userlist_get(ul, "postgres"), "secret");
	assert_string_equal(userlist_get(ul, "alice"), PG_VERIFIER);
	assert_string_equal(userlist_get(ul, "bob"), "md521f3163f8f86fa10bdefbfbd502a8f06");
	assert_string_equal(userlist_get(ul, "quo\"ted"), "pa\"ss\" word");
	assert_string_equal(userlist_get(ul, "empty"), "");
	assert_string_equal(userlist_get(ul, "with space"), "a b c");
	assert_null(userlist_get(ul, "nobody"));
	assert_null(userlist_get(ul, "Postgres"));
	assert_null(userlist_get(ul, "post"));
	assert_null(userlist_get(ul, ""));
	assert_null(userlist_get(ul, NULL));

	assert_int_equal(userlist_secret_kind(userlist_get(ul, "postgres")), SECRET_PLAIN);
	assert_int_equal(userlist_secret_kind(userlist_get(ul, "alice")), SECRET_SCRAM);
	assert_int_equal(userlist_secret_kind(userlist_get(ul, "bob")), SECRET_MD5);
	assert_int_equal(userlist_secret_kind(userlist_get(ul, "empty")), SECRET_PLAIN);
	assert_int_equal(userlist_secret_kind(userlist_get(ul, "nobody")), SECRET_NONE);
}

static void test_load_good_file(void **state)
{
	struct userlist *ul = NULL;
	char err[512] = "";

	(void)state;
	if (userlist_load(TEST_DATA_DIR "/userlist_good.txt", &ul, err, sizeof(err)) != 0)
		fail_msg("load failed: %s", err);
	check_good(ul);
	userlist_free(ul);
}

static void test_parse_good_string(void **state)
{
	/* The same content as the data file, but with CRLF line ends and no final newline. */
	static const char text[] =
		"; pgmux test auth_file\r\n"
		"# both comment styles\r\n"
		"\r\n"
		"\"postgres\" \"secret\"\r\n"
		"\t\"alice\"   \"" PG_VERIFIER "\"\r\n"
		"\"bob\" \"md521f3163f8f86fa10bdefbfbd502a8f06\"\r\n"
		"\"quo\"\"ted\" \"pa\"\"ss\"\" word\"  trailing fields \"are\" ignored\r\n"
		"  ; indented comment\r\n"
		"   \t  \r\n"
		"\"empty\" \"\"\r\n"
		"\"with space\"\t\"a b c\"";
	struct userlist *ul = NULL;
	char err[512] = "";

	(void)state;
	if (userlist_parse("mem", text, &ul, err, sizeof(err)) != 0)
		fail_msg("parse failed: %s", err);
	check_good(ul);
	userlist_free(ul);
}

static void test_empty_and_comments_only(void **state)
{
	static const char *const texts[] = { "", "\n\n", "; only\n# comments\n", "   \t\n\r\n", "\xef\xbb\xbf" };
	struct userlist *ul;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		ul = NULL;
		assert_int_equal(userlist_parse("t", texts[i], &ul, err, sizeof(err)), 0);
		assert_non_null(ul);
		assert_int_equal(userlist_count(ul), 0);
		assert_null(userlist_get(ul, "postgres"));
		userlist_free(ul);
	}
	userlist_free(NULL);
	assert_int_equal(userlist_count(NULL), 0);
	assert_null(userlist_get(NULL, "x"));
}

static void test_bom_and_duplicates(void **state)
{
	struct userlist *ul = NULL;
	char err[256] = "";

	(void)state;
	/* A UTF-8 byte order mark before the first line is not part of the user name. */
	assert_int_equal(userlist_parse("t", "\xef\xbb\xbf\"a\" \"1\"\n\"b\" \"2\"\n\"a\" \"3\"\n", &ul,
					err, sizeof(err)), 0);
	assert_int_equal(userlist_count(ul), 2);
	/* The later line wins, as in PgBouncer. */
	assert_string_equal(userlist_get(ul, "a"), "3");
	assert_string_equal(userlist_get(ul, "b"), "2");
	userlist_free(ul);
}

static const struct {
	const char *text;
	const char *expect;   /* err must start with this */
	const char *reason;   /* and contain this */
} bad_cases[] = {
	{ "postgres \"" MARK "\"\n", "t:1: ", "quoted user name" },
	{ "\"a\" \"1\"\n\n; c\ncarol \"" MARK "\"\n", "t:4: ", "quoted user name" },
	{ "\"a\" \"1\"\n'b' '" MARK "'\n", "t:2: ", "quoted user name" },
	{ "\"a\" " MARK "\n", "t:1: ", "quoted secret" },
	{ "\"a\" '" MARK "'\n", "t:1: ", "quoted secret" },
	{ "\"a\"\n", "t:1: ", "missing secret" },
	{ "\"a\"   \t\r\n", "t:1: ", "missing secret" },
	{ "\"a\"", "t:1: ", "missing secret" },
	{ "\"a\" \"1\"\n\"b\" \"" MARK "\n\"c\" \"2\"\n", "t:2: ", "unterminated quoted secret" },
	{ "\"a\" \"1\"\n\"b\" \"" MARK, "t:2: ", "unterminated quoted secret" },
	{ "\"a\" \"1\"\n\"b\" \"" MARK "\"\"\n", "t:2: ", "unterminated quoted secret" },
	{ "\n\n\"b \"" MARK "\"\n", "t:3: ", "" },
	{ "\"bob", "t:1: ", "unterminated quoted user name" },
	{ "\"bob\n\" \"" MARK "\"\n", "t:1: ", "unterminated quoted user name" },
	{ "\"\" \"" MARK "\"\n", "t:1: ", "empty user name" },
	{ "\"a\"\"" MARK "\"\n", "t:1: ", "" },
	{ "\"a\"x \"" MARK "\"\n", "t:1: ", "blank after the user name" },
	{ "\"a\";\"" MARK "\"\n", "t:1: ", "blank after the user name" },
};

static void test_malformed(void **state)
{
	struct userlist *ul;
	char err[512];

	(void)state;
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		ul = (struct userlist *)&ul;   /* must be reset to NULL on failure */
		err[0] = '\0';
		if (userlist_parse("t", bad_cases[i].text, &ul, err, sizeof(err)) != -1)
			fail_msg("accepted bad case #%zu", i);
		assert_null(ul);
		if (strncmp(err, bad_cases[i].expect, strlen(bad_cases[i].expect)) != 0 ||
		    !strstr(err, bad_cases[i].reason))
			fail_msg("case #%zu: got \"%s\", want \"%s...%s\"", i, err, bad_cases[i].expect,
				 bad_cases[i].reason);
		if (strstr(err, MARK))
			fail_msg("case #%zu: secret leaked into the error: %s", i, err);
	}
}

static void test_length_limits(void **state)
{
	/* static: two secrets' worth (128 kB) is too much for the stack. */
	static char user[USERLIST_MAX_USER + 2], secret[USERLIST_MAX_SECRET + 2];
	static char text[USERLIST_MAX_USER + USERLIST_MAX_SECRET + 64];
	char err[512];
	struct userlist *ul = NULL;

	(void)state;
	memset(user, 'u', sizeof(user));
	memset(secret, 'S', sizeof(secret));

	/* Exactly at the limits: accepted. */
	user[USERLIST_MAX_USER] = '\0';
	secret[USERLIST_MAX_SECRET] = '\0';
	snprintf(text, sizeof(text), "; c\n\"%s\" \"%s\"\n", user, secret);
	assert_int_equal(userlist_parse("t", text, &ul, err, sizeof(err)), 0);
	assert_string_equal(userlist_get(ul, user), secret);
	userlist_free(ul);

	/* A quote pair counts as one byte toward the limit. */
	memcpy(user + USERLIST_MAX_USER - 1, "\"\"", 3);
	snprintf(text, sizeof(text), "\"%s\" \"x\"\n", user);
	assert_int_equal(userlist_parse("t", text, &ul, err, sizeof(err)), 0);
	assert_int_equal(userlist_count(ul), 1);
	userlist_free(ul);

	/* One byte over: refused with the line and the limit, and no secret in the message. */
	memset(user, 'u', sizeof(user));
	user[USERLIST_MAX_USER + 1] = '\0';
	snprintf(text, sizeof(text), "; c\n\"%s\" \"x\"\n", user);
	assert_int_equal(userlist_parse("t", text, &ul, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "t:2: user name longer than 256 bytes"));

	secret[USERLIST_MAX_SECRET] = 'S';
	secret[USERLIST_MAX_SECRET + 1] = '\0';
	snprintf(text, sizeof(text), "\"a\" \"b\"\n\n\"u\" \"%s\"\n", secret);
	assert_int_equal(userlist_parse("t", text, &ul, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "t:3: secret longer than 65530 bytes"));
	assert_null(strstr(err, "SSSS"));
}

static void test_load_errors(void **state)
{
	struct userlist *ul;
	char err[512];

	(void)state;
	ul = (struct userlist *)&ul;
	assert_int_equal(userlist_load(TEST_DATA_DIR "/userlist_bad_line5.txt", &ul, err, sizeof(err)), -1);
	assert_null(ul);
	assert_string_equal(err, TEST_DATA_DIR "/userlist_bad_line5.txt:5: expected a quoted user name");

	assert_int_equal(userlist_load(TEST_DATA_DIR "/userlist_bad_unterminated.txt", &ul, err, sizeof(err)), -1);
	assert_string_equal(err, TEST_DATA_DIR "/userlist_bad_unterminated.txt:2: unterminated quoted secret");
	assert_null(strstr(err, MARK));

	assert_int_equal(userlist_load(TEST_DATA_DIR "/no_such_userlist.txt", &ul, err, sizeof(err)), -1);
	assert_null(ul);
	assert_non_null(strstr(err, TEST_DATA_DIR "/no_such_userlist.txt: cannot open: "));
	assert_non_null(strstr(err, "No such file"));

	/* A directory is not an auth_file. */
	assert_int_equal(userlist_load(TEST_DATA_DIR, &ul, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a regular file"));

	/* err may be NULL. */
	assert_int_equal(userlist_load(TEST_DATA_DIR "/no_such_userlist.txt", &ul, NULL, 0), -1);
}

/* A NUL byte would cut a secret short without anyone noticing; it is refused with its line. */
static void test_load_nul_byte(void **state)
{
	static const char content[] = "\"a\" \"1\"\n\"b\" \"" MARK "\0tail\"\n";
	char path[] = "/tmp/pgmux_userlist_XXXXXX";
	struct userlist *ul = NULL;
	char err[512];
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, sizeof(content) - 1), (ssize_t)(sizeof(content) - 1));
	close(fd);
	assert_int_equal(userlist_load(path, &ul, err, sizeof(err)), -1);
	unlink(path);
	assert_null(ul);
	assert_non_null(strstr(err, ":2: NUL byte"));
	assert_null(strstr(err, MARK));
}

static void test_many_users(void **state)
{
	const int n = 20000;
	size_t cap = (size_t)n * 40 + 16, len = 0;
	char *text = malloc(cap), name[32], want[32];
	struct userlist *ul = NULL;
	char err[256];

	(void)state;
	assert_non_null(text);
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, cap - len, "\"user%d\" \"pw%d\"\n", i, i * 7);
	assert_int_equal(userlist_parse("big", text, &ul, err, sizeof(err)), 0);
	free(text);
	assert_int_equal(userlist_count(ul), (size_t)n);
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "user%d", i);
		snprintf(want, sizeof(want), "pw%d", i * 7);
		assert_string_equal(userlist_get(ul, name), want);
	}
	assert_null(userlist_get(ul, "user20000"));
	assert_null(userlist_get(ul, "user-1"));
	userlist_free(ul);
}

static void test_secret_kind(void **state)
{
	static const struct {
		const char *secret;
		enum secret_kind kind;
	} cases[] = {
		{ "", SECRET_PLAIN },
		{ "password", SECRET_PLAIN },
		{ "md5", SECRET_PLAIN },
		{ "md521f3163f8f86fa10bdefbfbd502a8f06", SECRET_MD5 },
		{ "md553f48b7c4b76a86ce72276c5755f217d", SECRET_MD5 },
		{ "md521F3163F8F86FA10BDEFBFBD502A8F06", SECRET_PLAIN },   /* PostgreSQL writes lower case */
		{ "MD521f3163f8f86fa10bdefbfbd502a8f06", SECRET_PLAIN },
		{ "md521f3163f8f86fa10bdefbfbd502a8f0", SECRET_PLAIN },    /* 31 digits */
		{ "md521f3163f8f86fa10bdefbfbd502a8f066", SECRET_PLAIN },  /* 33 digits */
		{ "md521f3163f8f86fa10bdefbfbd502a8f0g", SECRET_PLAIN },
		{ " md521f3163f8f86fa10bdefbfbd502a8f06", SECRET_PLAIN },
		{ PG_VERIFIER, SECRET_SCRAM },
		{ "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		  SECRET_SCRAM },
		{ "SCRAM-SHA-256$4096:7t+Kps6m6PA+Lpa4OJ8v1A==$5aK65TzaT39RB1OjgUkMFjsUJzjfORxN+GXVnXRtYnA=", SECRET_PLAIN },
		{ "SCRAM-SHA-256$0:7t+Kps6m6PA+Lpa4OJ8v1A==$5aK65TzaT39RB1OjgUkMFjsUJzjfORxN+GXVnXRtYnA=:llI7UYsyuyjOsqKdCdtvXaEfI5jtnDPWnvHRIcc9eAk=",
		  SECRET_PLAIN },
		{ "SCRAM-SHA-256$", SECRET_PLAIN },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (userlist_secret_kind(cases[i].secret) != cases[i].kind)
			fail_msg("case #%zu (%s): got %d, want %d", i, cases[i].secret,
				 userlist_secret_kind(cases[i].secret), cases[i].kind);
	assert_int_equal(userlist_secret_kind(NULL), SECRET_NONE);
}

/* An empty password, as "" or as its md5 secret for this user, never authenticates. */
static void test_secret_empty(void **state)
{
	(void)state;
	assert_true(userlist_secret_empty("", "bob"));
	assert_true(userlist_secret_empty("", NULL));
	/* md5("" || "bob"): only for bob, not for another user */
	assert_true(userlist_secret_empty("md59f9d51bc70ef21ca5c14f307980a29d8", "bob"));
	assert_false(userlist_secret_empty("md59f9d51bc70ef21ca5c14f307980a29d8", "carol"));
	assert_true(userlist_secret_empty("md5a9a0198010a6073db96434f6cc5f22a8", "carol"));
	/* md5("x" || "bob") */
	assert_false(userlist_secret_empty("md531987a5dbc9922cd211fc93523ffd523", "bob"));
	assert_false(userlist_secret_empty("x", "bob"));
	assert_false(userlist_secret_empty(" ", "bob"));
	assert_false(userlist_secret_empty(PG_VERIFIER, "bob"));
	/* No secret at all is "unknown user", not "empty". */
	assert_false(userlist_secret_empty(NULL, "bob"));
}

/* Plaintext secrets get a SCRAM verifier derived once per list and salt; empty, md5, SCRAM and
 * missing secrets get none. */
static void test_plain_verifier_cache(void **state)
{
	static const char text[] =
		"\"alice\" \"correct horse\"\n"
		"\"empty\" \"\"\n"
		"\"bob\" \"md521f3163f8f86fa10bdefbfbd502a8f06\"\n"
		"\"carol\" \"" PG_VERIFIER "\"\n";
	struct userlist *ul = NULL;
	struct scram_secret a, b, want;
	uint8_t salt[SCRAM_SALT_LEN], salt2[SCRAM_SALT_LEN];
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(salt); i++) {
		salt[i] = (uint8_t)i;
		salt2[i] = (uint8_t)(i + 1);
	}
	assert_int_equal(userlist_parse("t", text, &ul, err, sizeof(err)), 0);
	assert_int_equal(userlist_cached_verifiers(ul), 0);

	assert_true(userlist_plain_verifier(ul, "alice", salt, sizeof(salt), 4096, &a));
	assert_true(scram_secret_from_password("correct horse", salt, sizeof(salt), 4096, &want));
	assert_memory_equal(&a, &want, sizeof(want));
	assert_int_equal(userlist_cached_verifiers(ul), 1);
	/* Served from the cache: the same verifier, still one entry. */
	assert_true(userlist_plain_verifier(ul, "alice", salt, sizeof(salt), 4096, &b));
	assert_memory_equal(&a, &b, sizeof(a));
	assert_int_equal(userlist_cached_verifiers(ul), 1);
	/* Another salt or count is derived afresh and replaces the cached one. */
	assert_true(userlist_plain_verifier(ul, "alice", salt2, sizeof(salt2), 4096, &b));
	assert_memory_not_equal(a.stored_key, b.stored_key, SCRAM_KEY_LEN);
	assert_memory_equal(b.salt, salt2, sizeof(salt2));
	assert_true(userlist_plain_verifier(ul, "alice", salt, sizeof(salt), 2048, &b));
	assert_int_equal(b.iterations, 2048);
	assert_int_equal(userlist_cached_verifiers(ul), 1);

	/* No verifier for these. */
	assert_false(userlist_plain_verifier(ul, "empty", salt, sizeof(salt), 4096, &b));
	assert_false(userlist_plain_verifier(ul, "bob", salt, sizeof(salt), 4096, &b));
	assert_false(userlist_plain_verifier(ul, "carol", salt, sizeof(salt), 4096, &b));
	assert_false(userlist_plain_verifier(ul, "nobody", salt, sizeof(salt), 4096, &b));
	assert_false(userlist_plain_verifier(NULL, "alice", salt, sizeof(salt), 4096, &b));
	assert_int_equal(userlist_cached_verifiers(ul), 1);
	userlist_free(ul);

	/* A new list (a reload) starts with an empty cache. */
	assert_int_equal(userlist_parse("t", text, &ul, err, sizeof(err)), 0);
	assert_int_equal(userlist_cached_verifiers(ul), 0);
	userlist_free(ul);
}

/* The cache stops growing at USERLIST_MAX_CACHED_VERIFIERS; users past it still get one. */
static void test_plain_verifier_cap(void **state)
{
	size_t n = USERLIST_MAX_CACHED_VERIFIERS + 10, cap = n * 24 + 1, len = 0;
	char *text = malloc(cap), name[32], err[256];
	struct userlist *ul = NULL;
	struct scram_secret v;
	uint8_t salt[SCRAM_SALT_LEN] = { 1 };

	(void)state;
	assert_non_null(text);
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, cap - len, "\"u%zu\" \"pw%zu\"\n", i, i);
	assert_int_equal(userlist_parse("t", text, &ul, err, sizeof(err)), 0);
	free(text);
	/* One iteration: this tests the bookkeeping, not PBKDF2. */
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "u%zu", i);
		assert_true(userlist_plain_verifier(ul, name, salt, sizeof(salt), 1, &v));
	}
	assert_int_equal(userlist_cached_verifiers(ul), USERLIST_MAX_CACHED_VERIFIERS);
	userlist_free(ul);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_good_file),
		cmocka_unit_test(test_parse_good_string),
		cmocka_unit_test(test_empty_and_comments_only),
		cmocka_unit_test(test_bom_and_duplicates),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_length_limits),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_load_nul_byte),
		cmocka_unit_test(test_many_users),
		cmocka_unit_test(test_secret_kind),
		cmocka_unit_test(test_secret_empty),
		cmocka_unit_test(test_plain_verifier_cache),
		cmocka_unit_test(test_plain_verifier_cap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
