/* shard.c: finds the shard a statement belongs to: hint comments, session keys, key values in the SQL and its Bind. */
#include "shard.h"

#include <ctype.h>
#include <errno.h>
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
	if (n == 0 || n >= sizeof(buf))
		return false;
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
			if (len < 4 || off + len + 1 > avail)
				return NULL;
			if (t == 'B')
				break;
			if (t != 'D' && t != 'H' && t != 'C')
				return NULL;
			off += len + 1;
		}
	}
	uint32_t len = proto_get32(msg + off + 1);
	if (off + len + 1 > avail || len < 4)
		return NULL;
	*blen = len - 4;
	return msg + off + PROTO_HDR;
}

int shard_bind_int(const uint8_t *body, uint32_t blen, int n, int64_t *out)
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
	int fmt = nfmt == 0 ? 0 : nfmt == 1 ? ((fmts[0] << 8) | fmts[1])
			     : n <= nfmt ? ((fmts[2 * (n - 1)] << 8) | fmts[2 * (n - 1) + 1]) : 0;
	for (int i = 1; i <= n; i++) {
		if (end - p < 4)
			return -1;
		int32_t len = (int32_t)proto_get32(p);
		p += 4;
		if (len >= 0 && end - p < len)
			return -1;
		if (i < n) {
			if (len > 0)
				p += len;
			continue;
		}
		if (len < 0)
			return 0;
		if (fmt == 0)
			return parse_int64((const char *)p, (size_t)len, out) ? 1 : -1;
		if (len == 2) {
			*out = (int16_t)((p[0] << 8) | p[1]);
		} else if (len == 4) {
			*out = (int32_t)proto_get32(p);
		} else if (len == 8) {
			*out = (int64_t)(((uint64_t)proto_get32(p) << 32) | proto_get32(p + 4));
		} else {
			return -1;
		}
		return 1;
	}
	return -1;
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
		if (t == 'E' || t == 'B' || len < 4)
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
	const uint8_t *bind = NULL;
	uint32_t blen = 0;
	bool bind_looked = false;
	int shard = SHARD_NONE;
	for (int i = 0; i < found; i++) {
		int64_t v;
		const struct sqlscan_key *k = &keys[i];
		if (k->kind == SQLSCAN_KEY_INT) {
			v = k->ival;
		} else if (k->kind == SQLSCAN_KEY_STRING) {
			char buf[32];
			int m = sqlscan_key_string(sql, k, buf, sizeof(buf));
			if (m < 0 || !parse_int64(buf, (size_t)m, &v))
				return SHARD_BAD;
		} else {
			if (!bind_looked) {
				bind = find_bind(type, msg, total, avail, &blen);
				bind_looked = true;
			}
			if (!bind) {
				if (type == 'P' && no_execute(msg, total, avail))
					return SHARD_PREPARE;   /* its Bind routes later */
				return SHARD_NONE;
			}
			int rc = shard_bind_int(bind, blen, k->param, &v);
			if (rc < 0)
				return SHARD_BAD;
			if (rc == 0)
				continue;
		}
		int s = shard_of_int(v, n);
		if (shard >= 0 && s != shard)
			return SHARD_MULTI;
		shard = s;
	}
	(void)cl;
	return shard;
}

int shard_for(struct client *cl, char type, const uint8_t *msg, uint32_t total, uint32_t avail,
	      const struct sqlscan_result *r, const char *sql, size_t len)
{
	const struct cluster *c = cl->rs->cl;
	int n = c->n_shards;
	if (r && r->hint_shard >= 0)
		return r->hint_shard < n ? r->hint_shard : SHARD_BAD;
	if (r && r->has_hint_user_id)
		return shard_of_int(r->hint_user_id, n);
	if (cl->shard_pref >= 0)
		return cl->shard_pref < n ? cl->shard_pref : SHARD_BAD;
	if (cl->has_user_id)
		return shard_of_int(cl->user_id, n);
	if (!r || !sql || !c->shard_key)
		return SHARD_NONE;
	int s = from_statement(cl, type, msg, total, avail, sql, len, c->shard_key, n);
	if (s == SHARD_NONE && type == 'P' && no_execute(msg, total, avail))
		return SHARD_PREPARE;
	return s;
}
