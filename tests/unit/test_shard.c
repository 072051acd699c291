/* test_shard.c: cmocka tests for shard keys taken from Bind parameters and their shard numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "route.h"
#include "shard.h"
#include "shardhash.h"
#include "shardplan.h"

/* A Bind body: portal "", statement "s1", the format codes, then the parameters. */
static size_t bind_body(uint8_t *out, int nfmt, const int16_t *fmts, int nparams,
			const int32_t *lens, const uint8_t *const *vals)
{
	size_t o = 0;
	out[o++] = 0;
	memcpy(out + o, "s1", 3);
	o += 3;
	out[o++] = (uint8_t)(nfmt >> 8);
	out[o++] = (uint8_t)nfmt;
	for (int i = 0; i < nfmt; i++) {
		out[o++] = (uint8_t)(fmts[i] >> 8);
		out[o++] = (uint8_t)fmts[i];
	}
	out[o++] = (uint8_t)(nparams >> 8);
	out[o++] = (uint8_t)nparams;
	for (int i = 0; i < nparams; i++) {
		uint32_t l = (uint32_t)lens[i];
		out[o++] = (uint8_t)(l >> 24);
		out[o++] = (uint8_t)(l >> 16);
		out[o++] = (uint8_t)(l >> 8);
		out[o++] = (uint8_t)l;
		if (lens[i] > 0) {
			memcpy(out + o, vals[i], (size_t)lens[i]);
			o += (size_t)lens[i];
		}
	}
	out[o++] = 0;   /* result formats */
	out[o++] = 0;
	return o;
}

static void test_text_params(void **state)
{
	(void)state;
	uint8_t buf[256];
	const uint8_t *vals[] = { (const uint8_t *)"abc", (const uint8_t *)"-42", (const uint8_t *)"9223372036854775807" };
	int32_t lens[] = { 3, 3, 19 };
	size_t n = bind_body(buf, 0, NULL, 3, lens, vals);
	int64_t v = 0;
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 1, &v), -1);   /* not a number */
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 2, &v), 1);
	assert_int_equal(v, -42);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 3, &v), 1);
	assert_true(v == INT64_MAX);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 4, &v), 0);    /* no such parameter */
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 0, &v), 0);
	/* cut short anywhere: malformed or absent, never a read past the end */
	for (size_t cut = 0; cut < n - 2; cut++) {
		int rc = shard_bind_int(buf, (uint32_t)cut, 3, &v);
		assert_true(rc == -1 || rc == 0);
	}
}

static void test_binary_params(void **state)
{
	(void)state;
	uint8_t buf[256];
	const uint8_t i2[] = { 0xff, 0xfe }, i4[] = { 0, 0, 1, 0 },
		      i8[] = { 0x80, 0, 0, 0, 0, 0, 0, 0 }, odd[] = { 1, 2, 3 };
	const uint8_t *vals[] = { i2, i4, i8, odd, NULL };
	int32_t lens[] = { 2, 4, 8, 3, -1 };
	int16_t fmts[] = { 1 };
	size_t n = bind_body(buf, 1, fmts, 5, lens, vals);
	int64_t v = 0;
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 1, &v), 1);
	assert_int_equal(v, -2);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 2, &v), 1);
	assert_int_equal(v, 256);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 3, &v), 1);
	assert_true(v == INT64_MIN);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 4, &v), -1);   /* 3 bytes: no int type */
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 5, &v), 0);    /* NULL */
	/* per-parameter formats: text then binary */
	int16_t mixed[] = { 0, 1 };
	const uint8_t *v2[] = { (const uint8_t *)"7", i4 };
	int32_t l2[] = { 1, 4 };
	n = bind_body(buf, 2, mixed, 2, l2, v2);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 1, &v), 1);
	assert_int_equal(v, 7);
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 2, &v), 1);
	assert_int_equal(v, 256);
}

/* PostgreSQL's PARTITION BY HASH with modulus 5 (the vectors). */
static void test_shard_of_int(void **state)
{
	(void)state;
	const int64_t r0[] = { 1, 4, 5, 14, 19 }, r1[] = { 2, 3, 11, 17, 21 };
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(shard_of_int(r0[i], 5), 0);
		assert_int_equal(shard_of_int(r1[i], 5), 1);
	}
	/* 2 -> 4 shards splits each shard in two: hash mod 4 refines hash mod 2 */
	for (int64_t k = -1000; k < 1000; k++)
		assert_int_equal(shard_of_int(k, 4) % 2, shard_of_int(k, 2));
}

/* shard_bind_param: the bytes and format of each parameter, as they lie in the body. */
static void test_bind_param(void **state)
{
	(void)state;
	uint8_t buf[256];
	const uint8_t u[16] = { 0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b,
				0xb9, 0xbd, 0x38, 0x0a, 0x11 };
	const uint8_t *vals[] = { (const uint8_t *)"abc", u, NULL, (const uint8_t *)"" };
	int32_t lens[] = { 3, 16, -1, 0 };
	int16_t fmts[] = { 0, 1, 1, 0 };
	size_t n = bind_body(buf, 4, fmts, 4, lens, vals);
	const uint8_t *val;
	uint32_t len;
	int fmt;
	assert_int_equal(shard_bind_param(buf, (uint32_t)n, 1, &val, &len, &fmt), 1);
	assert_int_equal(len, 3);
	assert_int_equal(fmt, 0);
	assert_memory_equal(val, "abc", 3);
	assert_int_equal(shard_bind_param(buf, (uint32_t)n, 2, &val, &len, &fmt), 1);
	assert_int_equal(len, 16);
	assert_int_equal(fmt, 1);
	assert_memory_equal(val, u, 16);
	assert_int_equal(shard_bind_param(buf, (uint32_t)n, 3, &val, &len, &fmt), 0);   /* NULL */
	assert_int_equal(shard_bind_param(buf, (uint32_t)n, 4, &val, &len, &fmt), 1);   /* '' */
	assert_int_equal(len, 0);
	for (int k = -1; k <= 0; k++)
		assert_int_equal(shard_bind_param(buf, (uint32_t)n, k, &val, &len, &fmt), 0);
	assert_int_equal(shard_bind_param(buf, (uint32_t)n, 5, &val, &len, &fmt), 0);
	/* one format code applies to every parameter */
	int16_t bin[] = { 1 };
	n = bind_body(buf, 1, bin, 4, lens, vals);
	assert_int_equal(shard_bind_param(buf, (uint32_t)n, 4, &val, &len, &fmt), 1);
	assert_int_equal(fmt, 1);
}

/* Malformed Binds from the network: never a read past the end, never a value made up. */
static void test_bind_param_malformed(void **state)
{
	(void)state;
	uint8_t buf[256];
	const uint8_t *vals[] = { (const uint8_t *)"abcd", (const uint8_t *)"xyz" };
	int32_t lens[] = { 4, 3 };
	int16_t fmts[] = { 0, 1 };
	size_t n = bind_body(buf, 2, fmts, 2, lens, vals);
	const uint8_t *val;
	uint32_t len;
	int fmt;
	/* cut short anywhere, in a buffer of exactly that size (ASan sees any overread): a
	 * parameter is found only when it lies whole before the cut */
	const size_t ends[] = { 12 + 4 + 4, 12 + 8 + 4 + 3 };
	for (size_t cut = 0; cut < n; cut++) {
		uint8_t *b = malloc(cut ? cut : 1);
		assert_non_null(b);
		memcpy(b, buf, cut);
		for (int k = 1; k <= 2; k++) {
			int rc = shard_bind_param(b, (uint32_t)cut, k, &val, &len, &fmt);
			if (cut < ends[k - 1]) {
				assert_int_equal(rc, -1);
			} else {
				assert_int_equal(rc, 1);
				assert_true(val + len <= b + cut);
			}
		}
		free(b);
	}
	/* a length past the end of the message */
	uint8_t bad[256];
	memcpy(bad, buf, n);
	size_t len_at = 1 + 3 + 2 + 4 + 2;   /* portal, statement, formats, parameter count */
	bad[len_at + 3] = 200;
	assert_int_equal(shard_bind_param(bad, (uint32_t)n, 1, &val, &len, &fmt), -1);
	assert_int_equal(shard_bind_param(bad, (uint32_t)n, 2, &val, &len, &fmt), -1);
	/* a negative length other than -1 (NULL) */
	memcpy(bad, buf, n);
	memset(bad + len_at, 0xff, 4);
	bad[len_at + 3] = 0xfe;
	assert_int_equal(shard_bind_param(bad, (uint32_t)n, 1, &val, &len, &fmt), -1);
	/* a parameter count larger than what follows */
	memcpy(bad, buf, n);
	bad[len_at - 1] = 9;
	assert_int_equal(shard_bind_param(bad, (uint32_t)n, 2, &val, &len, &fmt), 1);
	assert_int_equal(shard_bind_param(bad, (uint32_t)n, 9, &val, &len, &fmt), -1);
	/* more format codes than the body holds; no NUL after the portal name */
	memcpy(bad, buf, n);
	bad[5] = 0x7f;
	assert_int_equal(shard_bind_param(bad, (uint32_t)n, 1, &val, &len, &fmt), -1);
	memset(bad, 'x', n);
	assert_int_equal(shard_bind_param(bad, (uint32_t)n, 1, &val, &len, &fmt), -1);
	assert_int_equal(shard_bind_param(buf, 0, 1, &val, &len, &fmt), -1);
	/* an integer key with a NUL inside is not an integer */
	const uint8_t *v2[] = { (const uint8_t *)"12\0x" };
	int32_t l2[] = { 4 };
	n = bind_body(buf, 0, NULL, 1, l2, v2);
	int64_t v;
	assert_int_equal(shard_bind_int(buf, (uint32_t)n, 1, &v), -1);
}

static uint64_t text_hash(const char *s)
{
	return shardhash_combine(shardhash_text(s, strlen(s)));
}

/* shard_key_hash: each key type in text and binary format. */
static void test_key_hash(void **state)
{
	(void)state;
	uint64_t h;
	const char *us = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
	uint8_t u[16];
	assert_int_equal(shardhash_parse_uuid(us, strlen(us), u), 0);
	uint64_t uh = shardhash_combine(shardhash_uuid(u));

	assert_int_equal(shard_key_hash(SHARDKEY_TEXT, (const uint8_t *)"abc", 3, 0, &h), 0);
	assert_true(h == text_hash("abc"));
	assert_int_equal(shard_key_hash(SHARDKEY_TEXT, (const uint8_t *)"abc", 3, 1, &h), 0);
	assert_true(h == text_hash("abc"));
	assert_int_equal(shard_key_hash(SHARDKEY_TEXT, (const uint8_t *)"", 0, 0, &h), 0);
	assert_true(h == text_hash(""));
	assert_int_equal(shard_key_hash(SHARDKEY_UUID, (const uint8_t *)us, 36, 0, &h), 0);
	assert_true(h == uh);
	const char *braces = "{A0EEBC999C0B4EF8BB6D6BB9BD380A11}";
	assert_int_equal(shard_key_hash(SHARDKEY_UUID, (const uint8_t *)braces, 34, 0, &h), 0);
	assert_true(h == uh);
	assert_int_equal(shard_key_hash(SHARDKEY_UUID, u, 16, 1, &h), 0);
	assert_true(h == uh);
	assert_int_equal(shard_key_hash(SHARDKEY_UUID, u, 15, 1, &h), -1);
	assert_int_equal(shard_key_hash(SHARDKEY_UUID, (const uint8_t *)"not-a-uuid", 10, 0, &h), -1);
	assert_int_equal(shard_key_hash(SHARDKEY_UUID, (const uint8_t *)us, 35, 0, &h), -1);
	assert_int_equal(shard_key_hash(SHARDKEY_INT, (const uint8_t *)"42", 2, 0, &h), 0);
	assert_true(h == shardhash_combine(shardhash_int8(42)));
	assert_int_equal(shard_key_hash(SHARDKEY_INT, (const uint8_t *)"4x", 2, 0, &h), -1);
	assert_int_equal(shard_key_hash(SHARDKEY_INT, u, 3, 1, &h), -1);
	assert_string_equal(shard_key_type_name(SHARDKEY_UUID), "uuid");
}

/* SET pgmux.user_id values: the hash, or PostgreSQL-like errors. */
static void test_user_id_hash(void **state)
{
	(void)state;
	uint64_t h = 0;
	char msg[200];
	const char *st = NULL;
	assert_true(shard_user_id_hash(SHARDKEY_TEXT, "alice", false, &h, msg, sizeof(msg), &st));
	assert_true(h == text_hash("alice"));
	assert_true(shard_user_id_hash(SHARDKEY_INT, "-7", false, &h, msg, sizeof(msg), &st));
	assert_true(h == shardhash_combine(shardhash_int8(-7)));
	assert_false(shard_user_id_hash(SHARDKEY_UUID, "nope", false, &h, msg, sizeof(msg), &st));
	assert_string_equal(st, "22P02");
	assert_non_null(strstr(msg, "invalid input syntax for type uuid: \"nope\""));
	assert_false(shard_user_id_hash(SHARDKEY_TEXT, "x", true, &h, msg, sizeof(msg), &st));
	assert_string_equal(st, "22023");
	assert_false(shard_user_id_hash(SHARDKEY_INT, "abc", false, &h, msg, sizeof(msg), &st));
	assert_string_equal(st, "22023");
	assert_non_null(strstr(msg, "expected an integer"));
}

/* A client of a 4-shard cluster keyed by user_id of the given type, with no session key, as
 * route.c hands it to shard_for. */
struct fake {
	struct shard_ctx x;
	struct sp_cache *cache;
	struct client cl;
	struct route_session rt;    /* its remembered statements, counted by client_memory */
	struct worker w;
	struct config cf;
};

static void fake_free(struct fake *f)
{
	shardplan_client_free(&f->rt.sp);
	shardplan_cache_free(f->cache);
	f->cache = NULL;
}

static void fake_init(struct fake *f, int type)
{
	memset(f, 0, sizeof(*f));
	f->x.sp.cl = &f->cl;
	f->x.sp.stmts = &f->rt.sp;
	f->cl.rt = &f->rt;
	route_register(&f->w);   /* client_memory asks routing for the session's bytes */
	f->x.sp.n_shards = 4;
	f->x.sp.shard_key = "user_id";
	f->x.sp.key_type = type;
	f->x.sp.cache = &f->cache;
	f->x.sp.memory = client_memory;
	f->x.shard_pref = -1;
	f->cf.max_client_memory = 1 << 20;
	f->w.cf = &f->cf;
	f->w.bufsize = 16384;
	f->cl.c.w = &f->w;
}

/* The shard of a simple Query. */
static int query_shard(struct fake *f, const char *sql)
{
	struct sqlscan_result r;
	struct sp_eval e;
	sqlscan_classify(sql, strlen(sql), NULL, &r);
	size_t n = strlen(sql) + 1 + PROTO_HDR;
	uint8_t *m = malloc(n);
	m[0] = 'Q';
	proto_put32(m + 1, (uint32_t)n - 1);
	memcpy(m + PROTO_HDR, sql, strlen(sql) + 1);
	int s = shard_for(&f->x, 'Q', m, (uint32_t)n, (uint32_t)n, &r, &e);
	free(m);
	return s;
}

static int text_shard(const char *s)
{
	return (int)shardhash_text_shard(s, strlen(s), 4);
}

static int uuid_shard(const char *s)
{
	uint8_t u[16];
	assert_int_equal(shardhash_parse_uuid(s, strlen(s), u), 0);
	return (int)shardhash_uuid_shard(u, 4);
}

/* Two text keys on different shards, and two on the same one. */
static void text_pairs(const char **split, const char **same)
{
	static char a[16], b[16], c[16];
	int i = 0;
	snprintf(a, sizeof(a), "k%d", i);
	for (i = 1;; i++) {
		snprintf(b, sizeof(b), "k%d", i);
		if (text_shard(b) != text_shard(a))
			break;
	}
	for (i = 1;; i++) {
		snprintf(c, sizeof(c), "k%d", i);
		if (text_shard(c) == text_shard(a) && strcmp(c, a))
			break;
	}
	split[0] = same[0] = a;
	split[1] = b;
	same[1] = c;
}

static void test_text_routing(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, SHARDKEY_TEXT);
	char sql[3000];
	assert_int_equal(query_shard(&f, "SELECT * FROM t WHERE user_id = 'alice'"), text_shard("alice"));
	assert_int_equal(query_shard(&f, "SELECT * FROM t WHERE user_id = 'it''s'"), text_shard("it's"));
	assert_int_equal(query_shard(&f, "SELECT * FROM t WHERE user_id = E'a\\tb'"), text_shard("a\tb"));
	assert_int_equal(query_shard(&f, "SELECT * FROM t WHERE user_id = $$x'y$$"), text_shard("x'y"));
	assert_int_equal(query_shard(&f, "SELECT * FROM t WHERE user_id = 'bob'::text"), text_shard("bob"));
	assert_int_equal(query_shard(&f, "INSERT INTO t (n, user_id) VALUES (1, 'zed')"), text_shard("zed"));
	/* an integer literal is hashed as its digits (an assignment cast stores them so) */
	assert_int_equal(query_shard(&f, "INSERT INTO t (user_id) VALUES (42)"), text_shard("42"));
	assert_int_equal(query_shard(&f, "/* pgmux: user_id=42 */ SELECT 1"), text_shard("42"));
	/* unicode escapes depend on the encodings, unknown here: refused */
	assert_int_equal(query_shard(&f, "SELECT * FROM t WHERE user_id = E'\\u00e9'"), SHARD_BAD);
	/* long keys are read whole */
	char key[2000];
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	snprintf(sql, sizeof(sql), "SELECT 1 FROM t WHERE user_id = '%s'", key);
	assert_int_equal(query_shard(&f, sql), text_shard(key));
	/* several keys: all on one shard, or refused */
	const char *split[2], *same[2];
	text_pairs(split, same);
	snprintf(sql, sizeof(sql), "SELECT 1 FROM t WHERE user_id IN ('%s', '%s')", split[0], split[1]);
	assert_int_equal(query_shard(&f, sql), SHARD_MULTI);
	snprintf(sql, sizeof(sql), "SELECT 1 FROM t WHERE user_id IN ('%s', '%s')", same[0], same[1]);
	assert_int_equal(query_shard(&f, sql), text_shard(same[0]));
	snprintf(sql, sizeof(sql), "INSERT INTO t (user_id) VALUES ('%s'), ('%s')", split[0], split[1]);
	assert_int_equal(query_shard(&f, sql), SHARD_MULTI);
	snprintf(sql, sizeof(sql), "INSERT INTO t (user_id) VALUES ('%s'), ('%s')", same[0], same[1]);
	assert_int_equal(query_shard(&f, sql), text_shard(same[0]));
	/* the session's key, as SET pgmux.user_id stores it */
	const char *st;
	char msg[200];
	assert_int_equal(query_shard(&f, "SELECT 1"), SHARD_NONE);
	assert_true(shard_user_id_hash(SHARDKEY_TEXT, "carol", false, &f.x.user_id_hash, msg,
				       sizeof(msg), &st));
	f.x.has_user_id = true;
	assert_int_equal(query_shard(&f, "SELECT 1"), text_shard("carol"));
	fake_free(&f);
}

static void test_uuid_routing(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, SHARDKEY_UUID);
	const char *u = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
	char sql[300];
	snprintf(sql, sizeof(sql), "SELECT 1 FROM t WHERE user_id = '%s'", u);
	assert_int_equal(query_shard(&f, sql), uuid_shard(u));
	snprintf(sql, sizeof(sql), "SELECT 1 FROM t WHERE user_id = '%s'::uuid", u);
	assert_int_equal(query_shard(&f, sql), uuid_shard(u));
	assert_int_equal(query_shard(&f, "SELECT 1 FROM t WHERE user_id = "
				     "'{A0EEBC999C0B4EF8BB6D6BB9BD380A11}'"), uuid_shard(u));
	assert_int_equal(query_shard(&f, "SELECT 1 FROM t WHERE user_id = 'not-a-uuid'"), SHARD_BAD);
	/* uuid = 42 has no operator: no key (the server says so) */
	assert_int_equal(query_shard(&f, "SELECT 1 FROM t WHERE user_id = 42"), SHARD_NONE);
	assert_int_equal(query_shard(&f, "/* pgmux: user_id=42 */ SELECT 1"), SHARD_BAD);
	assert_int_equal(query_shard(&f, "/* pgmux: shard=3 */ SELECT 1"), 3);
	fake_free(&f);
}

/* Appends one protocol message: type, length, body. */
static size_t put_msg(uint8_t *out, size_t o, char type, const uint8_t *body, size_t n)
{
	out[o++] = (uint8_t)type;
	uint32_t l = (uint32_t)n + 4;
	out[o++] = (uint8_t)(l >> 24);
	out[o++] = (uint8_t)(l >> 16);
	out[o++] = (uint8_t)(l >> 8);
	out[o++] = (uint8_t)l;
	if (n)
		memcpy(out + o, body, n);
	return o + n;
}

/* The shard of a Parse, Bind(one parameter), Execute, Sync batch. */
static int batch_shard(struct fake *f, const char *sql, int16_t format, int32_t plen,
		       const uint8_t *pval)
{
	uint8_t parse[300], bind[300], batch[700];
	size_t pn = 0;
	parse[pn++] = 0;
	memcpy(parse + pn, sql, strlen(sql) + 1);
	pn += strlen(sql) + 1;
	parse[pn++] = 0;
	parse[pn++] = 0;
	int16_t fmts[] = { format };
	const uint8_t *vals[] = { pval };
	int32_t lens[] = { plen };
	size_t bn = bind_body(bind, 1, fmts, 1, lens, vals);
	size_t o = put_msg(batch, 0, 'P', parse, pn);
	uint32_t total = (uint32_t)o;
	o = put_msg(batch, o, 'B', bind, bn);
	o = put_msg(batch, o, 'E', (const uint8_t *)"\0\0\0\0", 5);
	o = put_msg(batch, o, 'S', NULL, 0);
	struct sqlscan_result r;
	struct sp_eval e;
	sqlscan_classify(sql, strlen(sql), NULL, &r);
	return shard_for(&f->x, 'P', batch, total, (uint32_t)o, &r, &e);
}

static void test_param_routing(void **state)
{
	(void)state;
	struct fake f;
	const char *q = "SELECT 1 FROM t WHERE user_id = $1";
	fake_init(&f, SHARDKEY_TEXT);
	assert_int_equal(batch_shard(&f, q, 0, 5, (const uint8_t *)"alice"), text_shard("alice"));
	assert_int_equal(batch_shard(&f, q, 1, 5, (const uint8_t *)"alice"), text_shard("alice"));
	assert_int_equal(batch_shard(&f, q, 0, -1, NULL), SHARD_NONE);   /* NULL: no row, no key */

	fake_free(&f);
	fake_init(&f, SHARDKEY_UUID);
	const char *us = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
	uint8_t u[16];
	assert_int_equal(shardhash_parse_uuid(us, strlen(us), u), 0);
	assert_int_equal(batch_shard(&f, q, 0, 36, (const uint8_t *)us), uuid_shard(us));
	assert_int_equal(batch_shard(&f, q, 1, 16, u), uuid_shard(us));
	assert_int_equal(batch_shard(&f, q, 1, 15, u), SHARD_BAD);
	assert_int_equal(batch_shard(&f, q, 0, 5, (const uint8_t *)"alice"), SHARD_BAD);

	fake_free(&f);
	fake_init(&f, SHARDKEY_INT);
	const uint8_t i8[] = { 0, 0, 0, 0, 0, 0, 0, 42 };
	assert_int_equal(batch_shard(&f, q, 1, 8, i8), shard_of_int(42, 4));
	assert_int_equal(batch_shard(&f, q, 0, 2, (const uint8_t *)"42"), shard_of_int(42, 4));
	assert_int_equal(batch_shard(&f, q, 0, 5, (const uint8_t *)"alice"), SHARD_BAD);
	fake_free(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text_params),
		cmocka_unit_test(test_binary_params),
		cmocka_unit_test(test_shard_of_int),
		cmocka_unit_test(test_bind_param),
		cmocka_unit_test(test_bind_param_malformed),
		cmocka_unit_test(test_key_hash),
		cmocka_unit_test(test_user_id_hash),
		cmocka_unit_test(test_text_routing),
		cmocka_unit_test(test_uuid_routing),
		cmocka_unit_test(test_param_routing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
