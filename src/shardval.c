/* shardval.c: shard-key values as the server reads them: Bind parameters, integer and text hashes, SET pgmux.user_id values (pure). */
#include "shardval.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "proto.h"
#include "shardhash.h"
#include "sqlscan.h"

int shard_of_int(int64_t v, int n_shards)
{
	return (int)shardhash_int8_shard(v, (uint32_t)n_shards);
}

static bool parse_int64(const char *s, size_t n, int64_t *out)
{
	char buf[32];
	while (n && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (n == 0 || n >= sizeof(buf) || memchr(s, 0, n))
		return false;   /* a NUL would end the number early: "12\0x" is no integer */
	memcpy(buf, s, n);
	buf[n] = '\0';
	char *end;
	errno = 0;
	long long v = strtoll(buf, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

int shard_bind_param(const uint8_t *body, uint32_t blen, int n, const uint8_t **val,
		     uint32_t *len, int *fmt)
{
	const uint8_t *p = body, *end = body + blen;
	for (int i = 0; i < 2; i++) {   /* portal, statement */
		const uint8_t *z = memchr(p, 0, (size_t)(end - p));
		if (!z)
			return -1;
		p = z + 1;
	}
	if (end - p < 2)
		return -1;
	int nfmt = (p[0] << 8) | p[1];
	p += 2;
	if (end - p < 2 * nfmt + 2)
		return -1;
	const uint8_t *fmts = p;
	p += 2 * nfmt;
	int nparams = (p[0] << 8) | p[1];
	p += 2;
	if (n < 1 || n > nparams)
		return 0;
	/* No codes: all text; one code: all parameters; else one per parameter. */
	int k = nfmt == 1 ? 0 : n - 1;
	*fmt = nfmt == 0 || k >= nfmt ? 0 : (fmts[2 * k] << 8) | fmts[2 * k + 1];
	for (int i = 1; i <= n; i++) {
		if (end - p < 4)
			return -1;
		int32_t l = (int32_t)proto_get32(p);
		p += 4;
		if (l < -1 || end - p < l)
			return -1;   /* only -1 is NULL, as PostgreSQL reads a Bind */
		if (i < n) {
			if (l > 0)
				p += l;
			continue;
		}
		if (l < 0)
			return 0;
		*val = p;
		*len = (uint32_t)l;
		return 1;
	}
	return -1;
}

/* An int2/int4/int8 in text or binary format; false when it is none of them. */
static bool int_value(const uint8_t *p, uint32_t len, int fmt, int64_t *out)
{
	if (fmt == 0)
		return parse_int64((const char *)p, len, out);
	if (len == 2)
		*out = (int16_t)((p[0] << 8) | p[1]);
	else if (len == 4)
		*out = (int32_t)proto_get32(p);
	else if (len == 8)
		*out = (int64_t)(((uint64_t)proto_get32(p) << 32) | proto_get32(p + 4));
	else
		return false;
	return true;
}

int shard_bind_int(const uint8_t *body, uint32_t blen, int n, int64_t *out)
{
	const uint8_t *val;
	uint32_t len;
	int fmt;
	int rc = shard_bind_param(body, blen, n, &val, &len, &fmt);
	if (rc <= 0)
		return rc;
	return int_value(val, len, fmt, out) ? 1 : -1;
}

int shard_key_hash(int type, const uint8_t *val, uint32_t len, int fmt, uint64_t *hash)
{
	switch (type) {
	case SHARDKEY_TEXT:
		/* text's binary format is its bytes, the same as its text format */
		*hash = shardhash_combine(shardhash_text((const char *)val, len));
		return 0;
	case SHARDKEY_UUID: {
		uint8_t u[16];
		if (fmt == 0) {
			if (shardhash_parse_uuid((const char *)val, len, u) < 0)
				return -1;
		} else if (len == 16) {
			memcpy(u, val, 16);
		} else {
			return -1;
		}
		*hash = shardhash_combine(shardhash_uuid(u));
		return 0;
	}
	default: {
		int64_t v;
		if (!int_value(val, len, fmt, &v))
			return -1;
		*hash = shardhash_combine(shardhash_int8(v));
		return 0;
	}
	}
}

/* An integer key (a number literal, or a hint, which the scanner reads as numbers only) for
 * the column's type: a text column gets its digits, as PostgreSQL's int-to-text assignment
 * cast writes them (INSERT ... VALUES (42) stores '42'); a uuid column gets no integer. */
int shard_int_key_hash(int type, int64_t v, uint64_t *hash)
{
	if (type == SHARDKEY_INT) {
		*hash = shardhash_combine(shardhash_int8(v));
		return 0;
	}
	if (type != SHARDKEY_TEXT)
		return -1;
	char buf[24];
	int m = snprintf(buf, sizeof(buf), "%" PRId64, v);
	return shard_key_hash(type, (const uint8_t *)buf, (uint32_t)m, 0, hash);
}

const char *shard_key_type_name(int type)
{
	return type == SHARDKEY_TEXT ? "text" : type == SHARDKEY_UUID ? "uuid" : "integer";
}

bool shard_user_id_hash(int type, const char *value, bool truncated, uint64_t *hash,
			char *msg, size_t len, const char **sqlstate)
{
	if (!truncated &&
	    shard_key_hash(type, (const uint8_t *)value, (uint32_t)strlen(value), 0, hash) == 0)
		return true;
	if (type == SHARDKEY_UUID) {
		/* PostgreSQL's own words and code for a bad uuid */
		*sqlstate = "22P02";
		snprintf(msg, len, "invalid input syntax for type uuid: \"%.60s\" (pgmux.user_id)",
			 value);
	} else if (type == SHARDKEY_TEXT) {
		*sqlstate = "22023";
		snprintf(msg, len, "invalid value for parameter \"pgmux.user_id\": longer than %d "
			 "bytes, or a \\u escape or U&/B/X literal pgmux cannot decode (give the key "
			 "in the statement instead: WHERE key = '...')", SQLSCAN_SET_VALUE_MAX - 1);
	} else {
		*sqlstate = "22023";
		snprintf(msg, len, "invalid value for parameter \"pgmux.user_id\": \"%.60s\" "
			 "(expected an integer)", value);
	}
	return false;
}

