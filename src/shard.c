/* shard.c: finds the shard a statement belongs to: hint comments, session keys, key values in the SQL and its Bind. */
#include "shard.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgmux.h"
#include "prepared.h"
#include "route.h"
#include "shardhash.h"

/* Keys looked at per statement: a multi-row INSERT past this many is checked no further. */
#define SHARD_KEYS_MAX 64

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

/* The Bind body of the batch: the message itself, or the first Bind after a Parse. */
static const uint8_t *find_bind(char type, const uint8_t *msg, uint32_t total, uint32_t avail,
				uint32_t *blen)
{
	uint32_t off = 0;
	if (type != 'B') {
		off = total;
		for (;;) {
			if (off + PROTO_HDR > avail)
				return NULL;
			char t = (char)msg[off];
			uint32_t len = proto_get32(msg + off + 1);
			if (len < 4 || len > avail - off - 1)   /* not off + len + 1: it may wrap */
				return NULL;
			if (t == 'B')
				break;
			if (t != 'D' && t != 'H' && t != 'C')
				return NULL;
			off += len + 1;
		}
	}
	if (off + PROTO_HDR > avail)
		return NULL;
	uint32_t len = proto_get32(msg + off + 1);
	if (len < 4 || len > avail - off - 1)
		return NULL;
	*blen = len - 4;
	return msg + off + PROTO_HDR;
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
static int int_key_hash(int type, int64_t v, uint64_t *hash)
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

/* True when a Parse's batch runs nothing up to its Sync or Flush: prepare/describe only, so
 * any shard may take it. */
static bool no_execute(const uint8_t *msg, uint32_t total, uint32_t avail)
{
	uint32_t off = total;
	while (off + PROTO_HDR <= avail) {
		char t = (char)msg[off];
		uint32_t len = proto_get32(msg + off + 1);
		if (t == 'S' || t == 'H')
			return true;
		if (t == 'E' || t == 'B' || len < 4 || len > avail - off - 1)
			return false;
		off += len + 1;
	}
	return false;
}

/* How often the word OR appears outside quotes (roughly: a quote toggles). */
static int count_or(const char *sql, size_t len)
{
	int n = 0;
	bool quoted = false;
	for (size_t i = 0; i + 1 < len; i++) {
		char ch = sql[i];
		if (ch == '\'' || ch == '"') {
			quoted = !quoted;
			continue;
		}
		if (quoted || (ch | 0x20) != 'o' || (sql[i + 1] | 0x20) != 'r')
			continue;
		bool left = i == 0 || !(isalnum((unsigned char)sql[i - 1]) || sql[i - 1] == '_' ||
					sql[i - 1] == '$');
		bool right = i + 2 >= len || !(isalnum((unsigned char)sql[i + 2]) || sql[i + 2] == '_' ||
					      sql[i + 2] == '$');
		if (left && right)
			n++;
	}
	return n;
}

/* A string literal key: its value after unescaping, read as the column's type.  Literals
 * over SHARD_TEXT_LITERAL_MAX bytes, and E'\\u' escapes (their bytes depend on the server
 * encoding), are refused rather than guessed. */
static int literal_key_hash(int type, const char *sql, const struct sqlscan_key *k, uint64_t *h)
{
	char buf[SHARD_TEXT_LITERAL_MAX + 1];
	int m = sqlscan_key_string(sql, k, buf, sizeof(buf));
	if (m < 0)
		return -1;
	return shard_key_hash(type, (const uint8_t *)buf, (uint32_t)m, 0, h);
}

/* What reading a statement's keys needs: the key type, the SQL, and the batch whose Bind
 * holds the $n values (looked for once, on the first $n). */
struct keyctx {
	int type;                   /* SHARDKEY_* */
	const char *sql;
	char msg_type;
	const uint8_t *msg;
	uint32_t total, avail;
	const uint8_t *bind;
	uint32_t blen;
	bool bind_looked;
};

/* A $n key from the batch's Bind: 1 with *h set, 0 for NULL (it matches no row), or SHARD_*
 * (SHARD_BAD for a bad value; SHARD_PREPARE / SHARD_NONE when the batch has no Bind). */
static int param_key_hash(struct keyctx *x, int param, uint64_t *h)
{
	if (!x->bind_looked) {
		x->bind = find_bind(x->msg_type, x->msg, x->total, x->avail, &x->blen);
		x->bind_looked = true;
	}
	if (!x->bind) {
		if (x->msg_type == 'P' && no_execute(x->msg, x->total, x->avail))
			return SHARD_PREPARE;   /* its Bind routes later */
		return SHARD_NONE;
	}
	const uint8_t *val;
	uint32_t len;
	int fmt;
	int rc = shard_bind_param(x->bind, x->blen, param, &val, &len, &fmt);
	if (rc < 0 || (rc > 0 && shard_key_hash(x->type, val, len, fmt, h) < 0))
		return SHARD_BAD;
	return rc;
}

/* One key's hash: 1 with *h set, 0 to skip it, or a SHARD_* code for the statement. */
static int key_hash(struct keyctx *x, const struct sqlscan_key *k, uint64_t *h)
{
	switch (k->kind) {
	case SQLSCAN_KEY_INT:
		return int_key_hash(x->type, k->ival, h) < 0 ? SHARD_BAD : 1;
	case SQLSCAN_KEY_STRING:
		return literal_key_hash(x->type, x->sql, k, h) < 0 ? SHARD_BAD : 1;
	default:
		return param_key_hash(x, k->param, h);
	}
}

static int from_statement(struct client *cl, char type, const uint8_t *msg, uint32_t total,
			  uint32_t avail, const char *sql, size_t len, const char *column, int n)
{
	struct sqlscan_key keys[SHARD_KEYS_MAX];
	int found = sqlscan_keys(sql, len, column, keys, SHARD_KEYS_MAX);
	if (found <= 0)
		return SHARD_NONE;
	if (found > SHARD_KEYS_MAX)
		return SHARD_MULTI;   /* the keys past the limit could be anywhere */
	/* "key = 1 OR other = 2" may match rows on every shard.  Without boolean analysis: the
	 * keys pin the statement down only when there are enough of them for every OR branch
	 * ("key = 1 OR key = 2"); otherwise it counts as having no key. */
	int n_or = count_or(sql, len);
	if (n_or && found < n_or + 1)
		return SHARD_NONE;
	struct keyctx x = { .type = cl->rs->cl->cf.shard_key_type, .sql = sql, .msg_type = type,
			    .msg = msg, .total = total, .avail = avail };
	int shard = SHARD_NONE;
	for (int i = 0; i < found; i++) {
		uint64_t h;
		int rc = key_hash(&x, &keys[i], &h);
		if (rc < 0)
			return rc;
		if (rc == 0)
			continue;
		int s = (int)shardhash_shard(h, (uint32_t)n);
		if (shard >= 0 && s != shard)
			return SHARD_MULTI;
		shard = s;
	}
	return shard;
}

int shard_for(struct client *cl, char type, const uint8_t *msg, uint32_t total, uint32_t avail,
	      const struct sqlscan_result *r, const char *sql, size_t len)
{
	const struct cluster *c = cl->rs->cl;
	int n = c->n_shards;
	if (r && r->hint_shard >= 0)
		return r->hint_shard < n ? r->hint_shard : SHARD_BAD;
	if (r && r->has_hint_user_id) {
		uint64_t h;
		if (int_key_hash(c->cf.shard_key_type, r->hint_user_id, &h) < 0)
			return SHARD_BAD;
		return (int)shardhash_shard(h, (uint32_t)n);
	}
	if (cl->shard_pref >= 0)
		return cl->shard_pref < n ? cl->shard_pref : SHARD_BAD;
	if (cl->has_user_id)
		return (int)shardhash_shard(cl->user_id_hash, (uint32_t)n);
	if (!r || !sql || !c->shard_key)
		return SHARD_NONE;
	int s = from_statement(cl, type, msg, total, avail, sql, len, c->shard_key, n);
	if (s == SHARD_NONE && type == 'P' && no_execute(msg, total, avail))
		return SHARD_PREPARE;
	return s;
}
