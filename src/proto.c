/* proto.c: builds the protocol messages pgmux sends itself and parses the few bodies it must read. */
#include "proto.h"

#include "log.h"

#include <ctype.h>
#include <stdbool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Generated messages are small; this caps a runaway (e.g. a huge error text) well below RAM. */
#define PKTBUF_MAX (1u << 20)

void pktbuf_free(struct pktbuf *pb)
{
	free(pb->data);
	memset(pb, 0, sizeof(*pb));
}

void pktbuf_reset(struct pktbuf *pb)
{
	pb->len = pb->sent = pb->msg_start = 0;
	pb->failed = false;
}

static bool pktbuf_reserve(struct pktbuf *pb, size_t more)
{
	if (pb->failed)
		return false;
	size_t need = (size_t)pb->len + more;
	if (need <= pb->cap)
		return true;
	if (need > PKTBUF_MAX) {
		pb->failed = true;
		return false;
	}
	size_t cap = pb->cap ? pb->cap : 256;
	while (cap < need)
		cap *= 2;
	uint8_t *d = realloc(pb->data, cap);
	if (!d) {
		pb->failed = true;
		return false;
	}
	pb->data = d;
	pb->cap = (uint32_t)cap;
	return true;
}

void pktbuf_put(struct pktbuf *pb, const void *data, size_t len)
{
	if (!pktbuf_reserve(pb, len))
		return;
	memcpy(pb->data + pb->len, data, len);
	pb->len += (uint32_t)len;
}

void pktbuf_put_u8(struct pktbuf *pb, uint8_t v)
{
	pktbuf_put(pb, &v, 1);
}

void pktbuf_put_u16(struct pktbuf *pb, uint16_t v)
{
	uint8_t b[2] = { v >> 8, v & 0xff };
	pktbuf_put(pb, b, 2);
}

void pktbuf_put_u32(struct pktbuf *pb, uint32_t v)
{
	uint8_t b[4];
	proto_put32(b, v);
	pktbuf_put(pb, b, 4);
}

void pktbuf_put_str(struct pktbuf *pb, const char *s)
{
	pktbuf_put(pb, s, strlen(s) + 1);
}

void pktbuf_begin(struct pktbuf *pb, char type)
{
	if (type)
		pktbuf_put_u8(pb, (uint8_t)type);
	pb->msg_start = pb->len;
	pktbuf_put_u32(pb, 0);
}

void pktbuf_end(struct pktbuf *pb)
{
	if (pb->failed)
		return;
	proto_put32(pb->data + pb->msg_start, pb->len - pb->msg_start);
}

static void proto_err_or_notice(struct pktbuf *pb, char type, const char *severity,
				const char *sqlstate, const char *msg, const char *detail)
{
	pktbuf_begin(pb, type);
	pktbuf_put_u8(pb, 'S');
	pktbuf_put_str(pb, severity);
	pktbuf_put_u8(pb, 'V');
	pktbuf_put_str(pb, severity);
	pktbuf_put_u8(pb, 'C');
	pktbuf_put_str(pb, sqlstate);
	pktbuf_put_u8(pb, 'M');
	pktbuf_put_str(pb, msg);
	if (detail) {
		pktbuf_put_u8(pb, 'D');
		pktbuf_put_str(pb, detail);
	}
	pktbuf_put_u8(pb, 0);
	pktbuf_end(pb);
}

void proto_error(struct pktbuf *pb, const char *severity, const char *sqlstate, const char *msg)
{
	proto_err_or_notice(pb, 'E', severity, sqlstate, msg, NULL);
}

void proto_error_detail(struct pktbuf *pb, const char *severity, const char *sqlstate, const char *msg,
			const char *detail)
{
	proto_err_or_notice(pb, 'E', severity, sqlstate, msg, detail);
}

void proto_notice(struct pktbuf *pb, const char *sqlstate, const char *msg)
{
	proto_err_or_notice(pb, 'N', "NOTICE", sqlstate, msg, NULL);
}

void proto_auth_request(struct pktbuf *pb, uint32_t code, const void *data, size_t len)
{
	pktbuf_begin(pb, 'R');
	pktbuf_put_u32(pb, code);
	if (len)
		pktbuf_put(pb, data, len);
	pktbuf_end(pb);
}

void proto_param_status(struct pktbuf *pb, const char *key, const char *val)
{
	pktbuf_begin(pb, 'S');
	pktbuf_put_str(pb, key);
	pktbuf_put_str(pb, val);
	pktbuf_end(pb);
}

void proto_backend_key(struct pktbuf *pb, uint32_t pid, uint32_t key)
{
	pktbuf_begin(pb, 'K');
	pktbuf_put_u32(pb, pid);
	pktbuf_put_u32(pb, key);
	pktbuf_end(pb);
}

void proto_ready(struct pktbuf *pb, char status)
{
	pktbuf_begin(pb, 'Z');
	pktbuf_put_u8(pb, (uint8_t)status);
	pktbuf_end(pb);
}

void proto_query(struct pktbuf *pb, const char *sql)
{
	pktbuf_begin(pb, 'Q');
	pktbuf_put_str(pb, sql);
	pktbuf_end(pb);
}

void proto_terminate(struct pktbuf *pb)
{
	pktbuf_begin(pb, 'X');
	pktbuf_end(pb);
}

void proto_cancel_request(struct pktbuf *pb, uint32_t pid, uint32_t key)
{
	pktbuf_begin(pb, 0);
	pktbuf_put_u32(pb, PROTO_CANCEL_CODE);
	pktbuf_put_u32(pb, pid);
	pktbuf_put_u32(pb, key);
	pktbuf_end(pb);
}

const char *proto_get_str(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *s = *p;
	const uint8_t *z = s < end ? memchr(s, 0, (size_t)(end - s)) : NULL;
	if (!z)
		return NULL;
	*p = z + 1;
	return (const char *)s;
}

int proto_parse_startup(const uint8_t *body, size_t len, struct startup *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (len < 4) {
		snprintf(err, errlen, "startup packet too short");
		return -1;
	}
	out->version = proto_get32(body);
	const uint8_t *p = body + 4, *end = body + len;
	for (;;) {
		if (p >= end) {
			snprintf(err, errlen, "startup packet is missing its terminator");
			return -1;
		}
		if (*p == 0 && p + 1 == end)
			return 0;
		const char *k = proto_get_str(&p, end);
		const char *v = k ? proto_get_str(&p, end) : NULL;
		if (!k || !v || !*k) {
			snprintf(err, errlen, "invalid startup packet layout");
			return -1;
		}
		if (out->nparams == PROTO_MAX_PARAMS) {
			snprintf(err, errlen, "too many startup parameters");
			return -1;
		}
		out->key[out->nparams] = k;
		out->val[out->nparams++] = v;
	}
}

static int options_setting(char *set, int (*fn)(void *, const char *, const char *), void *arg,
			   char *err, size_t errlen)
{
	char *eq = strchr(set, '=');
	if (!eq || eq == set) {
		snprintf(err, errlen, "%s", PROTO_OPTIONS_BAD);
		return -1;
	}
	*eq = 0;
	for (char *q = set; *q; q++)
		if (*q == '-')
			*q = '_';
	return fn(arg, set, eq + 1) < 0 ? -1 : 0;
}

int proto_options_each(const char *opts, int (*fn)(void *arg, const char *name, const char *val),
		       void *arg, char *err, size_t errlen)
{
	/* Words are unescaped into a copy: never longer than the text. */
	char *buf = malloc(strlen(opts) + 1);
	if (!buf) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	const char *p = opts;
	bool want_arg = false;   /* the word after a lone "-c" */
	int rc = 0;
	for (;;) {
		while (*p && isspace((unsigned char)*p))
			p++;
		if (!*p)
			break;
		char *word = buf;
		size_t n = 0;
		while (*p && !isspace((unsigned char)*p)) {
			if (*p == '\\' && p[1])
				p++;
			word[n++] = *p++;
		}
		word[n] = 0;
		if (want_arg) {
			want_arg = false;
			rc = options_setting(word, fn, arg, err, errlen);
		} else if (!strcmp(word, "-c")) {
			want_arg = true;
		} else if (!strncmp(word, "-c", 2) || !strncmp(word, "--", 2)) {
			rc = options_setting(word + 2, fn, arg, err, errlen);
		} else {
			snprintf(err, errlen, "%s", PROTO_OPTIONS_BAD);
			rc = -1;
		}
		if (rc < 0)
			break;
	}
	if (rc == 0 && want_arg) {
		snprintf(err, errlen, "%s", PROTO_OPTIONS_BAD);
		rc = -1;
	}
	free(buf);
	return rc;
}

const char *proto_error_field(const uint8_t *body, size_t len, char code)
{
	if (!body)
		return "";   /* a message too large to read: callers pass no body */
	const uint8_t *p = body, *end = body + len;
	while (p < end && *p) {
		char c = (char)*p++;
		const char *s = proto_get_str(&p, end);
		if (!s)
			break;
		if (c == code)
			return s;
	}
	return "";
}

bool proto_quote_literal(const char *val, char *out, size_t outlen)
{
	/* As PostgreSQL's quote_literal: with a backslash present, an E'' literal with backslashes
	 * doubled, so the text means the same whatever standard_conforming_strings says. */
	bool esc = strchr(val, '\\') != NULL;
	size_t o = 0;
	if (outlen < 4)
		return false;
	if (esc)
		out[o++] = 'E';
	out[o++] = '\'';
	for (const char *s = val; *s; s++) {
		if (o + 3 >= outlen)
			return false;
		if (*s == '\'' || *s == '\\')
			out[o++] = *s;
		out[o++] = *s;
	}
	out[o++] = '\'';
	out[o] = 0;
	return true;
}

static const char *const var_names[VAR_COUNT] = {
#define VAR_NAME(id, name) name,
	VAR_LIST(VAR_NAME)
#undef VAR_NAME
};

int varcache_lookup(const char *name)
{
	for (int i = 0; i < VAR_COUNT; i++)
		if (strcasecmp(var_names[i], name) == 0)
			return i;
	return -1;
}

const char *varcache_name(int id)
{
	return var_names[id];
}

static uint32_t vhash(const char *s, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)s[i]) * 16777619u;
	return h;
}

static void vstr_unref(struct vtab *t, struct vstr *v)
{
	if (!v || --v->refs)
		return;
	struct vstr **pp = &t->bucket[v->hash % VTAB_BUCKETS];
	while (*pp != v)
		pp = &(*pp)->next;
	*pp = v->next;
	t->count--;
	free(v);
}

bool varcache_set(struct vtab *t, struct varcache *vc, int id, const char *val)
{
	size_t n = strnlen(val, VAR_MAX_LEN);
	if (vc->val[id] && strncmp(vc->val[id]->s, val, n) == 0 && vc->val[id]->s[n] == 0)
		return true;
	uint32_t h = vhash(val, n);
	struct vstr *v = t->bucket[h % VTAB_BUCKETS];
	while (v && !(v->hash == h && strncmp(v->s, val, n) == 0 && v->s[n] == 0))
		v = v->next;
	if (!v) {
		v = malloc(sizeof(*v) + n + 1);
		if (!v)
			return false;
		memcpy(v->s, val, n);
		v->s[n] = 0;
		v->hash = h;
		v->refs = 0;
		v->next = t->bucket[h % VTAB_BUCKETS];
		t->bucket[h % VTAB_BUCKETS] = v;
		t->count++;
	}
	v->refs++;
	vstr_unref(t, vc->val[id]);
	vc->val[id] = v;
	return true;
}

void varcache_clear(struct vtab *t, struct varcache *vc)
{
	for (int i = 0; i < VAR_COUNT; i++) {
		vstr_unref(t, vc->val[i]);
		vc->val[i] = NULL;
	}
}

bool varcache_apply(const struct varcache *client, const struct varcache *server, struct pktbuf *pb)
{
	int i;
	for (i = 0; i < VAR_COUNT; i++)
		if (client->val[i] && client->val[i] != server->val[i])
			break;
	if (i == VAR_COUNT)
		return false;
	char sql[VAR_COUNT * (VAR_MAX_LEN * 2 + 64)];
	size_t n = 0;
	sql[0] = '\0';
	for (; i < VAR_COUNT; i++) {
		const struct vstr *want = client->val[i];
		if (!want || want == server->val[i])
			continue;
		char lit[VAR_MAX_LEN * 2 + 3];
		if (!proto_quote_literal(want->s, lit, sizeof(lit)))
			continue;
		int w = snprintf(sql + n, sizeof(sql) - n, "SET %s=%s;", var_names[i], lit);
		if (w < 0 || (size_t)w >= sizeof(sql) - n) {
			sql[n] = '\0';   /* cannot happen with VAR_MAX_LEN values; never send a cut SET */
			break;
		}
		n += (size_t)w;
	}
	/* No value could be quoted: there is nothing to send (and no query to swallow). */
	if (n == 0)
		return false;
	log_noise("varcache_apply: %s", sql);
	proto_query(pb, sql);
	return true;
}

uint32_t proto_bind_names_end(const uint8_t *m, uint32_t avail)
{
	if (avail <= PROTO_HDR)
		return 0;
	const uint8_t *p = m + PROTO_HDR, *end = m + avail;
	const uint8_t *z = memchr(p, 0, (size_t)(end - p));
	if (!z || z + 1 >= end)
		return 0;
	z = memchr(z + 1, 0, (size_t)(end - z - 1));
	return z ? (uint32_t)(z + 1 - m) : 0;
}

uint32_t proto_bind_need(const uint8_t *m, uint32_t total, uint32_t avail, uint32_t step)
{
	uint32_t e = proto_bind_names_end(m, avail < total ? avail : total);
	if (e)
		return e;
	if (avail >= total)
		return total;   /* malformed: whoever reads it says so */
	/* Names still coming: ask for twice as much each time, so long names cost few rescans. */
	uint64_t want = (uint64_t)avail * 2;
	if (want < (uint64_t)avail + step)
		want = (uint64_t)avail + step;
	return want < total ? (uint32_t)want : total;
}
