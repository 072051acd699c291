/* test_pwcrypt.c: cmocka tests for md5 secrets and responses, constant-time compares and random bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pwcrypt.h"

/* Expected values come from Python's hashlib and agree with PostgreSQL's own md5 verifiers. */
static const struct {
	const char *password, *user, *secret;
	uint8_t salt[4];
	const char *response;
} md5_cases[] = {
	{ "secret", "postgres", "md553f48b7c4b76a86ce72276c5755f217d",
	  { 1, 2, 3, 4 }, "md5bb41a296aab6baccb36ff243a562abff" },
	{ "secret", "postgres", "md553f48b7c4b76a86ce72276c5755f217d",
	  { 0xff, 0x00, 0x80, 0x7f }, "md5af5825a82e8a131090770b6d3ea127f9" },
	{ "pencil", "user", "md520c46e3762c864548e296b33c3406aa9",
	  { 1, 2, 3, 4 }, "md54376eb6913b38f9aaff38dc7cf19ca76" },
	{ "pencil", "user", "md520c46e3762c864548e296b33c3406aa9",
	  { 0xff, 0x00, 0x80, 0x7f }, "md5ff36538ed97e0250df3906bef88c533b" },
	/* Written by PostgreSQL 15 itself for CREATE ROLE bob PASSWORD 'secret' with md5. */
	{ "secret", "bob", "md521f3163f8f86fa10bdefbfbd502a8f06",
	  { 1, 2, 3, 4 }, "md5f21dfe33ff3a9e03dbc3e008251fe5cc" },
	/* Empty password and user: md5("") itself. */
	{ "", "", "md5d41d8cd98f00b204e9800998ecf8427e",
	  { 1, 2, 3, 4 }, "md5ada29999d4c1ee52a9d35ac6fe6129e8" },
};

static void test_md5_secret(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(md5_cases) / sizeof(md5_cases[0]); i++) {
		char out[PWCRYPT_MD5_LEN + 1];

		memset(out, 'X', sizeof(out));
		pwcrypt_md5_secret(md5_cases[i].password, md5_cases[i].user, out);
		assert_int_equal(strlen(out), PWCRYPT_MD5_LEN);
		assert_string_equal(out, md5_cases[i].secret);
	}
}

static void test_md5_response(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(md5_cases) / sizeof(md5_cases[0]); i++) {
		char out[PWCRYPT_MD5_LEN + 1];

		pwcrypt_md5_response(md5_cases[i].secret, md5_cases[i].salt, out);
		assert_string_equal(out, md5_cases[i].response);
	}
}

/* The client side composes both steps; a server-side check must reach the same string. */
static void test_md5_round_trip(void **state)
{
	const uint8_t salt[4] = { 0xde, 0xad, 0xbe, 0xef };
	char secret[PWCRYPT_MD5_LEN + 1], a[PWCRYPT_MD5_LEN + 1], b[PWCRYPT_MD5_LEN + 1];
	const uint8_t other_salt[4] = { 0xde, 0xad, 0xbe, 0xee };

	(void)state;
	pwcrypt_md5_secret("hunter2", "alice", secret);
	pwcrypt_md5_response(secret, salt, a);
	pwcrypt_md5_response(secret, salt, b);
	assert_true(pwcrypt_str_equal(a, b));
	pwcrypt_md5_response(secret, other_salt, b);
	assert_false(pwcrypt_str_equal(a, b));
	/* The user name is part of the secret. */
	pwcrypt_md5_secret("hunter2", "bob", b);
	assert_false(pwcrypt_str_equal(secret, b));
}

static void test_equal(void **state)
{
	(void)state;
	assert_true(pwcrypt_equal("abcd", "abcd", 4));
	assert_false(pwcrypt_equal("abcd", "abce", 4));
	assert_false(pwcrypt_equal("Xbcd", "abcd", 4));
	assert_true(pwcrypt_equal("abcd", "abXX", 2));
	assert_true(pwcrypt_equal("", "", 0));

	assert_true(pwcrypt_str_equal("", ""));
	assert_true(pwcrypt_str_equal("md5abc", "md5abc"));
	assert_false(pwcrypt_str_equal("md5abc", "md5abd"));
	assert_false(pwcrypt_str_equal("md5abc", "md5ab"));
	assert_false(pwcrypt_str_equal("md5ab", "md5abc"));
	assert_false(pwcrypt_str_equal("", "x"));
	assert_false(pwcrypt_str_equal("x", ""));
}

static void test_random(void **state)
{
	uint8_t a[64], b[64];

	(void)state;
	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	assert_true(pwcrypt_random(a, sizeof(a)));
	assert_true(pwcrypt_random(b, sizeof(b)));
	/* 512 random bits colliding, or staying all zero, means the RNG is not random. */
	assert_memory_not_equal(a, b, sizeof(a));
	memset(b, 0, sizeof(b));
	assert_memory_not_equal(a, b, sizeof(a));
	assert_true(pwcrypt_random(a, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_md5_secret),
		cmocka_unit_test(test_md5_response),
		cmocka_unit_test(test_md5_round_trip),
		cmocka_unit_test(test_equal),
		cmocka_unit_test(test_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
