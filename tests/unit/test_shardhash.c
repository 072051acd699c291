/* test_shardhash.c: unit tests for the shard hash against values taken from a real PostgreSQL 15. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "shardhash.h"

/* Every expected value below is PostgreSQL 15's own output (x86_64), e.g.
 * SELECT hashint8extended(k, 8816678312871386365), printed as unsigned. */

static void test_int8_known_vectors(void **state)
{
	(void)state;
	static const struct { int64_t k; uint64_t h; } v[] = {
		{ 1, UINT64_C(5968994663651403477) },
		{ 42, UINT64_C(7363975540656877951) },
		{ 0, UINT64_C(14043151463718383821) },
		{ -1, UINT64_C(13429671726050313922) },
		{ -2, UINT64_C(2147707635919668551) },
		{ -42, UINT64_C(6660635123915733087) },
		{ -1000000007, UINT64_C(5713592275209017950) },
		{ INT32_MAX, UINT64_C(12396478474604902556) },
		{ (int64_t)INT32_MAX + 1, UINT64_C(4938542303000433043) },
		{ INT32_MIN, UINT64_C(4938542303000433043) },
		{ (int64_t)INT32_MIN - 1, UINT64_C(12396478474604902556) },
		{ UINT32_MAX, UINT64_C(13429671726050313922) },
		{ (int64_t)UINT32_MAX + 1, UINT64_C(5968994663651403477) },
		{ -((int64_t)UINT32_MAX + 1), UINT64_C(14043151463718383821) },
		{ INT64_MIN, UINT64_C(12396478474604902556) },
		{ INT64_MAX, UINT64_C(4938542303000433043) },
		{ INT64_MIN + 1, UINT64_C(11201489031275878015) },
		{ INT64_C(1234567890123456789), UINT64_C(9341519631896389549) },
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		print_message("int8 %lld\n", (long long)v[i].k);
		assert_int_equal(shardhash_int8(v[i].k), v[i].h);
	}
}

static void test_int8_fold_collisions(void **state)
{
	(void)state;
	/* The fold to 32 bits makes these pairs collide in PostgreSQL too; we must not "fix" it. */
	assert_int_equal(shardhash_int8(INT64_MIN), shardhash_int8(INT32_MAX));
	assert_int_equal(shardhash_int8(INT64_MAX), shardhash_int8(INT32_MIN));
	assert_int_equal(shardhash_int8(INT64_C(1) << 32), shardhash_int8(1));
}

static void test_int4_int2_same_as_int8(void **state)
{
	(void)state;
	/* hashint4extended / hashint2extended agree with hashint8extended for the same number
	 * (checked in PostgreSQL for 0, +-1, int2 and int4 limits). */
	static const int32_t k4[] = { 0, 1, -1, 7, -7, 42, 32767, -32768, 65536, -65537,
				      INT32_MAX, INT32_MIN, INT32_MAX - 1, INT32_MIN + 1 };
	for (size_t i = 0; i < sizeof(k4) / sizeof(k4[0]); i++) {
		assert_int_equal(shardhash_int4(k4[i]), shardhash_int8(k4[i]));
		assert_int_equal(shardhash_int4_shard(k4[i], 5), shardhash_int8_shard(k4[i], 5));
	}
	for (int32_t v = INT16_MIN; v <= INT16_MAX; v++)
		assert_int_equal(shardhash_int2((int16_t)v), shardhash_int8(v));
}

static void test_modulus_5_remainders(void **state)
{
	(void)state;
	static const int64_t r0[] = { 1, 4, 5, 14, 19 }, r1[] = { 2, 3, 11, 17, 21 };
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(shardhash_int8_shard(r0[i], 5), 0);
		assert_int_equal(shardhash_int8_shard(r1[i], 5), 1);
		assert_int_equal(shardhash_shard(shardhash_combine(shardhash_int8(r0[i])), 5), 0);
	}
}

static void test_combine_and_shard(void **state)
{
	(void)state;
	/* hash_combine64(0, h) spelled out in full, to check the shortcut in the header. */
	uint64_t h = UINT64_C(5968994663651403477), a = 0;
	a ^= h + UINT64_C(0x49a0f4dd15e5a8e3) + (a << 54) + (a >> 7);
	assert_int_equal(shardhash_combine(h), a);
	/* wraps mod 2^64, and the modulo is unsigned */
	assert_int_equal(shardhash_combine(UINT64_MAX), UINT64_C(0x49a0f4dd15e5a8e2));
	assert_int_equal(shardhash_shard(UINT64_MAX, 10), 5);
	assert_int_equal(shardhash_shard(12345, 0), 0);
	assert_int_equal(shardhash_shard(12345, 1), 0);
	/* going from 2 to 4 shards splits each shard in two */
	for (int64_t k = -1000; k <= 1000; k++)
		assert_int_equal(shardhash_int8_shard(k, 4) % 2, shardhash_int8_shard(k, 2));
}

static void test_text_known_vectors(void **state)
{
	(void)state;
	/* lengths 0..25 and 43 cover the empty key, every tail length class and the edges of the
	 * 12-byte block loop (11/12/13, 23/24/25) */
	static const struct { const char *s; uint64_t h; } v[] = {
		{ "", UINT64_C(12746098489256034243) },
		{ "a", UINT64_C(11741518614589318779) },
		{ "abc", UINT64_C(3628778498291917250) },
		{ "abcd", UINT64_C(4029384952263848046) },
		{ "user_42", UINT64_C(9159221108102280157) },
		{ "hello world", UINT64_C(7664296498819024037) },
		{ "hello world!", UINT64_C(16560474544297895929) },
		{ "hello world!?", UINT64_C(6396072112462543210) },
		{ "abcdefghijklmnopqrstuvw", UINT64_C(11122101405006648449) },
		{ "abcdefghijklmnopqrstuvwx", UINT64_C(18435784971769275246) },
		{ "abcdefghijklmnopqrstuvwxy", UINT64_C(1383018584709609407) },
		{ "\xc5\xbc\xc3\xb3\xc5\x82\xc4\x87", UINT64_C(4204724177867222867) },	/* żółć */
		{ "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88",
		  UINT64_C(3781793241886115942) },					/* 日本語テキスト */
		{ "na\xc3\xafve caf\xc3\xa9 \xf0\x9f\x8e\x89", UINT64_C(5748046935363869419) }, /* naïve café 🎉 */
		{ "The quick brown fox jumps over the lazy dog", UINT64_C(5870222023910117606) },
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		print_message("text \"%s\"\n", v[i].s);
		assert_int_equal(shardhash_text(v[i].s, strlen(v[i].s)), v[i].h);
	}
	/* a NULL pointer is fine for an empty key */
	assert_int_equal(shardhash_text(NULL, 0), UINT64_C(12746098489256034243));
}

static void test_text_alignment_independent(void **state)
{
	(void)state;
	/* PostgreSQL takes an aligned and an unaligned path; both must give one answer. */
	static const char src[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	char buf[64];
	for (size_t len = 0; len <= 36; len++) {
		uint64_t want = shardhash_text(src, len);
		for (size_t off = 1; off < 8; off++) {
			memcpy(buf + off, src, len);
			assert_int_equal(shardhash_text(buf + off, len), want);
		}
	}
	assert_int_equal(shardhash_text(src, 24), UINT64_C(18435784971769275246));
}

static void test_bytes_seed_zero_and_uint32(void **state)
{
	(void)state;
	/* hashtextextended('abc', 0), and hashtext('abc') is its low 32 bits */
	assert_int_equal(shardhash_bytes("abc", 3, 0), UINT64_C(11698987603481062295));
	assert_int_equal((uint32_t)shardhash_bytes("abc", 3, 0), UINT32_C(3509578647));
	assert_int_equal(shardhash_bytes("abc", 3, 1), UINT64_C(2125675926272891485));
	/* hashint8extended(1, 0) */
	assert_int_equal(shardhash_uint32(1, 0), UINT64_C(14776145195350300486));
	/* the uint32 shortcut equals hashing its four little-endian bytes */
	static const uint32_t ks[] = { 0, 1, 42, 0x80000000u, 0xdeadbeefu, UINT32_MAX };
	for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) {
		uint8_t le[4] = { (uint8_t)ks[i], (uint8_t)(ks[i] >> 8), (uint8_t)(ks[i] >> 16),
				  (uint8_t)(ks[i] >> 24) };
		assert_int_equal(shardhash_uint32(ks[i], SHARDHASH_SEED),
				 shardhash_bytes(le, 4, SHARDHASH_SEED));
		assert_int_equal(shardhash_uint32(ks[i], 0), shardhash_bytes(le, 4, 0));
	}
}

static void test_uuid_known_vectors(void **state)
{
	(void)state;
	static const struct { const char *s; uint64_t h; } v[] = {
		{ "00000000-0000-0000-0000-000000000000", UINT64_C(13165661927312822978) },
		{ "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", UINT64_C(424513190990560493) },
		{ "ffffffff-ffff-ffff-ffff-ffffffffffff", UINT64_C(18297757609368245406) },
		{ "123e4567-e89b-12d3-a456-426614174000", UINT64_C(17194611381227408034) },
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		uint8_t u[16];
		print_message("uuid %s\n", v[i].s);
		assert_int_equal(shardhash_parse_uuid(v[i].s, strlen(v[i].s), u), 0);
		assert_int_equal(shardhash_uuid(u), v[i].h);
		assert_int_equal(shardhash_uuid_shard(u, 7), shardhash_combine(v[i].h) % 7);
	}
}

static void test_uuid_parse_forms(void **state)
{
	(void)state;
	static const uint8_t want[16] = { 0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8,
					  0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11 };
	/* the forms PostgreSQL's documentation lists for uuid input, all accepted by uuid_in */
	static const char *ok[] = {
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
		"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
		"a0eebc999c0b4ef8bb6d6bb9bd380a11",
		"a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
		"{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
		"{A0EEBC999C0B4EF8BB6D6BB9BD380A11}",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint8_t u[16];
		print_message("ok %s\n", ok[i]);
		assert_int_equal(shardhash_parse_uuid(ok[i], strlen(ok[i]), u), 0);
		assert_memory_equal(u, want, 16);
	}
	/* and what uuid_in rejects */
	static const char *bad[] = {
		"",
		"{}",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",		/* 31 digits */
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",	/* 33 digits */
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",	/* trailing hyphen */
		"-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",	/* leading hyphen */
		"a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",	/* two hyphens */
		"a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",	/* hyphen inside a group of four */
		"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",	/* unclosed brace */
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",	/* brace without its opening */
		" a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",	/* no spaces */
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ",
		"g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",		/* not hex */
		"0xeebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t u[16];
		memset(u, 0x5a, sizeof(u));
		print_message("bad \"%s\"\n", bad[i]);
		assert_int_equal(shardhash_parse_uuid(bad[i], strlen(bad[i]), u), -1);
		assert_int_equal(u[0], 0x5a);
	}
	/* len bounds the parse: no NUL needed, and nothing past len is read */
	uint8_t u[16];
	const char *s = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11trailing";
	assert_int_equal(shardhash_parse_uuid(s, 36, u), 0);
	assert_memory_equal(u, want, 16);
	assert_int_equal(shardhash_parse_uuid(s, 35, u), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_int8_known_vectors),
		cmocka_unit_test(test_int8_fold_collisions),
		cmocka_unit_test(test_int4_int2_same_as_int8),
		cmocka_unit_test(test_modulus_5_remainders),
		cmocka_unit_test(test_combine_and_shard),
		cmocka_unit_test(test_text_known_vectors),
		cmocka_unit_test(test_text_alignment_independent),
		cmocka_unit_test(test_bytes_seed_zero_and_uint32),
		cmocka_unit_test(test_uuid_known_vectors),
		cmocka_unit_test(test_uuid_parse_forms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
