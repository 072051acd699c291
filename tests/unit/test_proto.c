/* test_proto.c: unit tests for message building, startup parsing and the session-parameter cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"

#include <stdio.h>

static void test_error_response_layout(void **state)
{
	struct pktbuf pb = { 0 };
	proto_error(&pb, "FATAL", "28P01", "password authentication failed");
	assert_false(pb.failed);
	assert_int_equal(pb.data[0], 'E');
	uint32_t len = proto_get32(pb.data + 1);
	assert_int_equal(len + 1, pb.len);
	assert_string_equal(proto_error_field(pb.data + 5, len - 4, 'C'), "28P01");
	assert_string_equal(proto_error_field(pb.data + 5, len - 4, 'S'), "FATAL");
	assert_string_equal(proto_error_field(pb.data + 5, len - 4, 'M'), "password authentication failed");
	assert_string_equal(proto_error_field(pb.data + 5, len - 4, 'D'), "");
	pktbuf_free(&pb);
}

static void test_small_messages(void **state)
{
	struct pktbuf pb = { 0 };
	proto_ready(&pb, 'T');
	const uint8_t z[] = { 'Z', 0, 0, 0, 5, 'T' };
	assert_int_equal(pb.len, sizeof(z));
	assert_memory_equal(pb.data, z, sizeof(z));
	pktbuf_reset(&pb);
	proto_backend_key(&pb, 0x01020304, 0xa0b0c0d0);
	const uint8_t k[] = { 'K', 0, 0, 0, 12, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0 };
	assert_memory_equal(pb.data, k, sizeof(k));
	pktbuf_reset(&pb);
	proto_cancel_request(&pb, 7, 9);
	const uint8_t c[] = { 0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 0, 0, 0, 9 };
	assert_int_equal(pb.len, 16);
	assert_memory_equal(pb.data, c, sizeof(c));
	pktbuf_reset(&pb);
	proto_auth_request(&pb, 5, "salt", 4);
	const uint8_t r[] = { 'R', 0, 0, 0, 12, 0, 0, 0, 5, 's', 'a', 'l', 't' };
	assert_memory_equal(pb.data, r, sizeof(r));
	pktbuf_free(&pb);
}

static void test_startup_parse_ok(void **state)
{
	static const uint8_t body[] = "\x00\x03\x00\x00user\0alice\0database\0app\0application_name\0psql\0";
	struct startup st;
	char err[128];
	assert_int_equal(proto_parse_startup(body, sizeof(body), &st, err, sizeof(err)), 0);
	assert_int_equal(st.version, PROTO_V3);
	assert_int_equal(st.nparams, 3);
	assert_string_equal(st.key[0], "user");
	assert_string_equal(st.val[0], "alice");
	assert_string_equal(st.key[2], "application_name");
	assert_string_equal(st.val[2], "psql");
}

static void test_startup_parse_bad(void **state)
{
	struct startup st;
	char err[128];
	static const struct { const char *data; size_t len; } cases[] = {
		{ "\x00\x03", 2 },                                 /* no room for a version */
		{ "\x00\x03\x00\x00user\0alice\0", 14 },           /* no final terminator */
		{ "\x00\x03\x00\x00user\0alice", 13 },             /* value not terminated */
		{ "\x00\x03\x00\x00user\0", 9 },                   /* key without value */
		{ "\x00\x03\x00\x00\0x\0", 7 },                    /* bytes after the terminator */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(proto_parse_startup((const uint8_t *)cases[i].data, cases[i].len, &st, err,
						     sizeof(err)), -1);
}

static void test_startup_too_many_params(void **state)
{
	uint8_t body[4 + (PROTO_MAX_PARAMS + 1) * 6 + 1];
	size_t n = 0;
	memcpy(body, "\x00\x03\x00\x00", 4);
	n = 4;
	for (int i = 0; i <= PROTO_MAX_PARAMS; i++) {
		memcpy(body + n, "ab\0cd\0", 6);
		n += 6;
	}
	body[n++] = 0;
	struct startup st;
	char err[128];
	assert_int_equal(proto_parse_startup(body, n, &st, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "too many"));
}

static void test_quote_literal(void **state)
{
	char out[32];
	assert_true(proto_quote_literal("it's", out, sizeof(out)));
	assert_string_equal(out, "'it''s'");
	assert_false(proto_quote_literal("0123456789012345678901234567890123", out, sizeof(out)));
	/* a backslash must not escape the closing quote when standard_conforming_strings is off */
	assert_true(proto_quote_literal("\\'; drop", out, sizeof(out)));
	assert_string_equal(out, "E'\\\\''; drop'");
}

static void test_varcache_apply(void **state)
{
	static struct vtab t;
	struct varcache cl = { 0 }, sv = { 0 };
	struct pktbuf pb = { 0 };
	assert_int_equal(varcache_lookup("timezone"), VAR_TIMEZONE);
	assert_int_equal(varcache_lookup("DateStyle"), VAR_DATESTYLE);
	assert_int_equal(varcache_lookup("search_path"), -1);
	assert_true(varcache_set(&t, &cl, VAR_TIMEZONE, "UTC"));
	assert_true(varcache_set(&t, &sv, VAR_TIMEZONE, "UTC"));
	/* interned: one copy, shared */
	assert_ptr_equal(cl.val[VAR_TIMEZONE], sv.val[VAR_TIMEZONE]);
	assert_int_equal(t.count, 1);
	assert_false(varcache_apply(&cl, &sv, &pb));
	assert_int_equal(pb.len, 0);
	assert_true(varcache_set(&t, &cl, VAR_APPNAME, "o'brien"));
	assert_true(varcache_apply(&cl, &sv, &pb));
	assert_int_equal(pb.data[0], 'Q');
	assert_string_equal((const char *)pb.data + 5, "SET application_name='o''brien';");
	/* replacing a value drops the old one once nobody holds it */
	assert_true(varcache_set(&t, &cl, VAR_APPNAME, "x"));
	assert_int_equal(t.count, 2);
	assert_string_equal(varcache_get(&cl, VAR_APPNAME), "x");
	varcache_clear(&t, &cl);
	assert_int_equal(t.count, 1);
	varcache_clear(&t, &sv);
	assert_int_equal(t.count, 0);
	pktbuf_free(&pb);
}

/* Collects the settings proto_options_each finds as "name=value;" */
static int collect(void *arg, const char *name, const char *val)
{
	char *out = arg;
	if (!strcmp(name, "refuse_me"))
		return -1;
	size_t n = strlen(out);
	snprintf(out + n, 512 - n, "%s=%s;", name, val);
	return 0;
}

static void test_options_param(void **state)
{
	(void)state;
	static const struct { const char *in, *out; } ok[] = {
		{ "", "" },
		{ "  -c    datestyle=German,\\ YMD", "datestyle=German, YMD;" },
		{ "-c timezone=Europe/Lisbon  -c    datestyle=German,\\ YMD",
		  "timezone=Europe/Lisbon;datestyle=German, YMD;" },
		{ "-ctimezone=UTC -cdatestyle=ISO", "timezone=UTC;datestyle=ISO;" },
		{ "--timezone=UTC --date-style=ISO", "timezone=UTC;date_style=ISO;" },
		{ "-c t\\imezone=\\E\\u\\r\\o\\pe/Lisbon -c dat\\estyle\\=\\Ge\\rman,\\ YMD",
		  "timezone=Europe/Lisbon;datestyle=German, YMD;" },
		{ "-c a=b=c", "a=b=c;" },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char out[512] = "", err[256] = "";
		assert_int_equal(proto_options_each(ok[i].in, collect, out, err, sizeof(err)), 0);
		assert_string_equal(out, ok[i].out);
	}
	static const char *const bad[] = { "-d", "-c timezone", "-c", "timezone=UTC", "-c =x", "--" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char out[512] = "", err[256] = "";
		assert_int_equal(proto_options_each(bad[i], collect, out, err, sizeof(err)), -1);
		assert_string_equal(err, PROTO_OPTIONS_BAD);
	}
	/* the callback's refusal stops the walk */
	char out[512] = "", err[256] = "";
	assert_int_equal(proto_options_each("-c a=1 -c refuse_me=1 -c b=2", collect, out, err, sizeof(err)), -1);
	assert_string_equal(out, "a=1;");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_response_layout),
		cmocka_unit_test(test_small_messages),
		cmocka_unit_test(test_startup_parse_ok),
		cmocka_unit_test(test_startup_parse_bad),
		cmocka_unit_test(test_startup_too_many_params),
		cmocka_unit_test(test_quote_literal),
		cmocka_unit_test(test_varcache_apply),
		cmocka_unit_test(test_options_param),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
