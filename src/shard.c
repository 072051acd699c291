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

/* True when the messages after a Parse, up to a Sync or Flush, run nothing (no Bind or
 * Execute), all of them here. */
static bool prepare_only(const uint8_t *msg, uint32_t total, uint32_t avail)
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

/* The shard a hint comment names: its shard=N, or its user_id=N's shard; -1 none, SHARD_BAD
 * for a value that is none. */
static int hint_shard(const struct cluster *c, const struct sqlscan_result *r)
{
	int n = c->n_shards;
	if (r && r->hint_shard >= 0)
		return r->hint_shard < n ? r->hint_shard : SHARD_BAD;
	if (r && r->has_hint_user_id) {
		uint64_t h;
		if (int_key_hash(c->cf.shard_key_type, r->hint_user_id, &h) < 0)
			return SHARD_BAD;
		return (int)shardhash_shard(h, (uint32_t)n);
	}
	return -1;
}

/* The shard the session named with SET pgmux.shard / pgmux.user_id; -1 none. */
static int session_shard(const struct client *cl)
{
	int n = cl->rs->cl->n_shards;
	if (cl->shard_pref >= 0)
		return cl->shard_pref < n ? cl->shard_pref : SHARD_BAD;
	if (cl->has_user_id)
		return (int)shardhash_shard(cl->user_id_hash, (uint32_t)n);
	return -1;
}

static int refuse_with(struct sp_eval *e, const char *why)
{
	e->refuse = true;
	memcpy(e->sqlstate, "0A000", 6);
	e->why = why;
	return SHARD_REFUSE;
}

int shard_for(struct client *cl, char type, const uint8_t *msg, uint32_t total, uint32_t avail,
	      const struct sqlscan_result *r, struct sp_eval *e)
{
	const struct cluster *c = cl->rs->cl;
	memset(e, 0, sizeof(*e));
	e->shard = -1;
	if (avail < total) {
		e->refuse = true;
		memcpy(e->sqlstate, "54000", 6);
		e->why = "the statement is too large for pgmux to read its shard key (max_client_memory)";
		return SHARD_REFUSE;
	}
	if (type == 'Q') {
		shardplan_query(cl, (const char *)msg + PROTO_HDR, total - PROTO_HDR, e);
	} else if (type == 'P') {
		uint32_t blen = 0;
		const uint8_t *bind = find_bind('P', msg, total, avail, &blen);
		shardplan_parse(cl, msg, total, bind, blen, e);
		if (!bind && !e->refuse && prepare_only(msg, total, avail)) {
			/* Parse [Describe] Sync/Flush runs nothing: any shard prepares it, and its
			 * Bind finds its shard (asyncpg prepares so) */
			e->need_bind = true;
			e->shard = -1;
			e->bad = e->multi = false;
		}
	} else if (type == 'B') {
		shardplan_bind(cl, msg + PROTO_HDR, total - PROTO_HDR, e);
	} else {
		return SHARD_NONE;
	}
	int hint = hint_shard(c, r), sess = session_shard(cl);
	int claim = hint >= 0 ? hint : sess >= 0 ? sess : -1;
	if (e->refuse)
		return SHARD_REFUSE;
	if (e->bad)
		return SHARD_BAD;
	if (e->multi)
		return SHARD_MULTI;
	if (hint == SHARD_BAD || sess == SHARD_BAD)
		return SHARD_BAD;
	if (e->shard >= 0) {
		/* The statement's own key is the proof; a hint or session key may only agree. */
		if (hint >= 0 && hint != e->shard)
			return refuse_with(e, "the hint comment names another shard than the statement's "
					   "own shard key");
		if (sess >= 0 && sess != e->shard)
			return refuse_with(e, "SET pgmux.user_id / pgmux.shard names another shard than "
					   "the statement's own shard key");
		if ((e->nokey_read || e->nokey_write) && claim < 0)
			return refuse_with(e, "the statements mix ones with a shard key and ones without "
					   "(send them separately, or name the shard with SET pgmux.user_id)");
		return e->shard;
	}
	if (claim >= 0)
		return claim;
	if (e->need_bind)
		return SHARD_PREPARE;   /* keyed by $n: its Bind routes it */
	return SHARD_NONE;
}
