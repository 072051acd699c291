/* shardplan.c: the shard of a Query, Parse or Bind: PostgreSQL's parse (shardsql) once per statement shape, key values read from literals and parameters as the server will read them. */
#include "shardplan.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "list.h"
#include "log.h"
#include "model.h"
#include "pool_info.h"
#include "shardhash.h"
#include "shardsql.h"
#include "shardval.h"
#include "sqlmask.h"

/* Texts longer than this are parsed every time rather than kept. */
#define SP_TEXT_MAX (64u << 10)
/* Literals a cached shape may have. */
#define SP_LITS_MAX 4096
/* The cache: at most this many texts and bytes per sharded database. */
#define SP_CACHE_ENTRIES 8192
#define SP_CACHE_BYTES (32u << 20)
/* Remembered statements per client (its Parse names): more than PostgreSQL users make. */
#define SP_CLIENT_STMTS 20000
/* PostgreSQL keys statement names by their first NAMEDATALEN - 1 bytes. */
#define SP_NAME_MAX 63

/* Type OIDs a parameter may be declared with (pg_type.dat). */
enum { OID_BOOL = 16, OID_NAME = 19, OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23, OID_TEXT = 25,
       OID_UNKNOWN = 705, OID_BPCHAR = 1042, OID_VARCHAR = 1043, OID_UUID = 2950 };

/* One key value of a template statement. */
struct sp_val {
	uint8_t src;            /* SHSQL_LIT_INT / SHSQL_LIT_STR / SHSQL_PARAM */
	uint8_t cast;           /* shsql_type */
	bool negated;
	bool resolved;          /* hash (or bad) known from the template's own text */
	bool ascii;             /* a resolved text value without high bytes */
	uint16_t param;
	int32_t lit;            /* a shape template's literal index for this value, else -1 */
	uint64_t hash;
	const char *bad;        /* resolved: why the value is no key pgmux can read */
};

struct sp_st {
	uint8_t kind, verdict;
	bool fanout_ok, merge_ok, insert, no_table;
	const char *why;
	uint32_t n;
	struct sp_val *v;
};

/* An analyzed text.  Shape templates stand for every text with the same literals' places and
 * classes (sqlmask), exact ones for their own bytes only (Parse texts, and Query texts whose
 * literals the lexer could not map to the parse). */
struct sp_tmpl {
	struct sp_tmpl *hnext;
	struct list lru;
	uint64_t hash;
	bool shape;
	bool cached;            /* in the cache's table (else freed at its last reference) */
	uint32_t refs;
	char *text;
	uint32_t len;
	int n_lits;
	struct sqlmask_lit *lits;
	bool parse_error;       /* PostgreSQL refuses the text: nothing of it runs anywhere */
	uint32_t n_st;
	struct sp_st *st;
	size_t bytes;
};

struct sp_cache {
	struct sp_tmpl **tab;
	uint32_t mask, n;
	size_t bytes;
	struct list lru;        /* head: least recently used */
	char *key;              /* the key column and type the templates were read for */
	int key_type;
};

/* A client's statement name and what it parsed. */
struct sp_named {
	struct sp_named *next;
	uint32_t hash;
	struct sp_tmpl *t;
	uint16_t n_oids;
	uint32_t *oids;
	char name[];
};

struct sp_client {
	struct sp_named **tab;
	uint32_t mask, n;
	uint64_t bytes;
};

/* ---- hashing and decoding values ---------------------------------------------------------- */

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
	const uint8_t *s = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 1099511628211ull;
	return h;
}

static bool all_ascii(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] & 0x80)
			return false;
	return true;
}

/* PostgreSQL's int8in on n bytes (blanks, a sign, digits, blanks; nothing else). */
static bool int8_text(const char *s, size_t n, int64_t *out)
{
	size_t i = 0;
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' || s[i] == '\v'))
		i++;
	bool neg = false;
	if (i < n && (s[i] == '+' || s[i] == '-'))
		neg = s[i++] == '-';
	if (i >= n || !isdigit((unsigned char)s[i]))
		return false;
	uint64_t v = 0;
	for (; i < n && isdigit((unsigned char)s[i]); i++) {
		unsigned d = (unsigned)(s[i] - '0');
		if (v > ((uint64_t)INT64_MAX + 1 - d) / 10)
			return false;
		v = v * 10 + d;
	}
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' || s[i] == '\v'))
		i++;
	if (i != n || (!neg && v > (uint64_t)INT64_MAX))
		return false;
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

static bool in_range(int type, int64_t v)
{
	if (type == SHSQL_T_INT2)
		return v >= INT16_MIN && v <= INT16_MAX;
	if (type == SHSQL_T_INT4)
		return v >= INT32_MIN && v <= INT32_MAX;
	return true;
}

static uint64_t int_hash(int64_t v)
{
	return shardhash_combine(shardhash_int8(v));
}

/* A text or uuid value's hash: 0, or -1 when it is no value of that type. */
static int str_hash(int key_type, const char *s, size_t n, uint64_t *h)
{
	return shard_key_hash(key_type, (const uint8_t *)s, (uint32_t)n, 0, h);
}

/* ---- templates ------------------------------------------------------------------------------ */

static void tmpl_free(struct sp_tmpl *t)
{
	for (uint32_t i = 0; i < t->n_st; i++)
		free(t->st[i].v);
	free(t->st);
	free(t->lits);
	free(t->text);
	free(t);
}

static void tmpl_unref(struct sp_tmpl *t)
{
	if (t && --t->refs == 0 && !t->cached)
		tmpl_free(t);
}

/* A literal value of the template's own text, resolved now (exact templates). */
static void resolve(struct sp_val *v, const struct shsql_value *a, int key_type)
{
	v->resolved = true;
	if (a->src == SHSQL_LIT_INT) {
		if (key_type == SHARDKEY_INT) {
			v->hash = int_hash(a->ival);
		} else if (key_type == SHARDKEY_TEXT) {
			/* an integer assigned to a text column is stored as its digits */
			char buf[24];
			int n = snprintf(buf, sizeof(buf), "%lld", (long long)a->ival);
			str_hash(key_type, buf, (size_t)n, &v->hash);
		} else {
			v->bad = "an integer literal for a uuid key";
		}
		return;
	}
	v->ascii = all_ascii(a->str, a->str_len);
	if (str_hash(key_type, a->str, a->str_len, &v->hash) < 0)
		v->bad = "a key literal that is no valid uuid";
}

/* The value of literal i of text, as the key type reads it: 0, or -1 (no such value). */
static int lit_hash(const char *text, const struct sqlmask_lit *l, int key_type, bool negated,
		    int cast, uint64_t *h, bool *ascii)
{
	*ascii = true;
	if (key_type == SHARDKEY_INT) {
		int64_t v;
		if (l->cls == SQLMASK_INT) {
			if (!int8_text(text + l->off, l->len, &v))
				return -1;
			if (negated)
				v = -v;
		} else {
			char buf[64];
			int n = sqlmask_string(text, l, buf, sizeof(buf));
			if (negated || n < 0 || !int8_text(buf, (size_t)n, &v))
				return -1;
		}
		if (!in_range(cast, v))
			return -1;
		*h = int_hash(v);
		return 0;
	}
	if (l->cls == SQLMASK_INT && key_type == SHARDKEY_TEXT) {
		int64_t v;
		char buf[24];
		if (!int8_text(text + l->off, l->len, &v))
			return -1;
		int n = snprintf(buf, sizeof(buf), "%lld", (long long)(negated ? -v : v));
		return str_hash(key_type, buf, (size_t)n, h);
	}
	if (l->cls != SQLMASK_STR && l->cls != SQLMASK_ESTR && l->cls != SQLMASK_DOLLAR)
		return -1;
	char stack[256];
	char *buf = l->len <= sizeof(stack) ? stack : malloc(l->len);
	if (!buf)
		return -1;
	int n = sqlmask_string(text, l, buf, l->len);
	int rc = -1;
	if (n >= 0) {
		*ascii = all_ascii(buf, (size_t)n);
		rc = str_hash(key_type, buf, (size_t)n, h);
	}
	if (buf != stack)
		free(buf);
	return rc;
}

/*
 * Builds a template from the parse of text.  With lits (a shape candidate), every literal
 * value must sit at one of the lexer's literals and decode there to what the parse says;
 * otherwise the template is exact only (*shape_ok false).
 */
static struct sp_tmpl *tmpl_build(const char *text, uint32_t len, const struct shsql_result *r,
				  const struct sqlmask_lit *lits, int n_lits, int key_type,
				  bool *shape_ok)
{
	struct sp_tmpl *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->len = len;
	t->text = malloc(len + 1);
	t->n_lits = n_lits > 0 ? n_lits : 0;
	if (!t->text || (t->n_lits && !(t->lits = malloc((size_t)n_lits * sizeof(*lits)))))
		goto oom;
	memcpy(t->text, text, len);
	t->text[len] = '\0';
	if (t->n_lits)
		memcpy(t->lits, lits, (size_t)n_lits * sizeof(*lits));
	t->bytes = sizeof(*t) + len + 1 + (size_t)t->n_lits * sizeof(*lits);
	t->parse_error = r->parse_error;
	*shape_ok = lits != NULL && !r->parse_error;
	if (r->n_stmts && !(t->st = calloc(r->n_stmts, sizeof(*t->st))))
		goto oom;
	t->n_st = r->n_stmts;
	t->bytes += r->n_stmts * sizeof(*t->st);
	for (uint32_t i = 0; i < r->n_stmts; i++) {
		const struct shsql_stmt *a = &r->st[i];
		struct sp_st *s = &t->st[i];
		s->kind = a->kind;
		s->verdict = a->verdict;
		s->fanout_ok = a->fanout_ok;
		s->merge_ok = a->merge_ok;
		s->insert = a->insert;
		s->no_table = a->no_table;
		s->why = a->why;
		s->n = a->n_values;
		if (!s->n)
			continue;
		if (!(s->v = calloc(s->n, sizeof(*s->v))))
			goto oom;
		t->bytes += s->n * sizeof(*s->v);
		for (uint32_t j = 0; j < s->n; j++) {
			const struct shsql_value *av = &a->v[j];
			struct sp_val *v = &s->v[j];
			v->src = av->src;
			v->cast = av->cast;
			v->negated = av->negated;
			v->param = av->param;
			v->lit = -1;
			if (av->src == SHSQL_PARAM)
				continue;
			resolve(v, av, key_type);
			if (!*shape_ok)
				continue;
			/* the lexer's literal at the parse's location, decoding to the same value */
			int k = -1;
			for (int m = 0; m < n_lits; m++)
				if ((int32_t)lits[m].off == av->loc) {
					k = m;
					break;
				}
			uint64_t h;
			bool ascii;
			if (k < 0 || v->bad ||
			    lit_hash(text, &lits[k], key_type, av->negated, av->cast, &h, &ascii) < 0 ||
			    h != v->hash) {
				*shape_ok = false;
				continue;
			}
			v->lit = k;
		}
	}
	t->shape = *shape_ok;
	return t;
oom:
	tmpl_free(t);
	return NULL;
}

/* ---- the cache ----------------------------------------------------------------------------- */

static struct sp_cache *cache_of(const struct sp_ctx *ctx)
{
	struct sp_cache *sc = *ctx->cache;
	if (sc && (strcmp(sc->key, ctx->shard_key) != 0 || sc->key_type != ctx->key_type)) {
		shardplan_cache_free(sc);   /* a reload changed the key: every reading is stale */
		sc = *ctx->cache = NULL;
	}
	if (sc)
		return sc;
	sc = calloc(1, sizeof(*sc));
	if (!sc || !(sc->tab = calloc(1024, sizeof(*sc->tab))) || !(sc->key = strdup(ctx->shard_key))) {
		if (sc)
			free(sc->tab);
		free(sc);
		return NULL;
	}
	sc->mask = 1023;
	sc->key_type = ctx->key_type;
	list_init(&sc->lru);
	*ctx->cache = sc;
	return sc;
}

static void cache_unlink(struct sp_cache *sc, struct sp_tmpl *t)
{
	struct sp_tmpl **pp = &sc->tab[t->hash & sc->mask];
	while (*pp != t)
		pp = &(*pp)->hnext;
	*pp = t->hnext;
	list_del(&t->lru);
	sc->n--;
	sc->bytes -= t->bytes;
	t->cached = false;
	if (t->refs == 0)
		tmpl_free(t);
}

void shardplan_cache_free(struct sp_cache *sc)
{
	if (!sc)
		return;
	while (!list_empty(&sc->lru))
		cache_unlink(sc, list_entry(sc->lru.next, struct sp_tmpl, lru));
	free(sc->tab);
	free(sc->key);
	free(sc);
}

static void cache_add(struct sp_cache *sc, struct sp_tmpl *t)
{
	while ((sc->n >= SP_CACHE_ENTRIES || sc->bytes + t->bytes > SP_CACHE_BYTES) && !list_empty(&sc->lru))
		cache_unlink(sc, list_entry(sc->lru.next, struct sp_tmpl, lru));
	if (sc->n > sc->mask && sc->mask < (1u << 20)) {
		uint32_t n = (sc->mask + 1) * 2;
		struct sp_tmpl **tab = calloc(n, sizeof(*tab));
		if (tab) {
			for (uint32_t i = 0; i <= sc->mask; i++) {
				struct sp_tmpl *e = sc->tab[i];
				while (e) {
					struct sp_tmpl *next = e->hnext;
					e->hnext = tab[e->hash & (n - 1)];
					tab[e->hash & (n - 1)] = e;
					e = next;
				}
			}
			free(sc->tab);
			sc->tab = tab;
			sc->mask = n - 1;
		}
	}
	t->hnext = sc->tab[t->hash & sc->mask];
	sc->tab[t->hash & sc->mask] = t;
	list_append(&sc->lru, &t->lru);
	sc->n++;
	sc->bytes += t->bytes;
	t->cached = true;
}

static void touch(struct sp_cache *sc, struct sp_tmpl *t)
{
	list_del(&t->lru);
	list_append(&sc->lru, &t->lru);
}

static struct sp_tmpl *find_exact(struct sp_cache *sc, uint64_t h, const char *sql, size_t len)
{
	for (struct sp_tmpl *t = sc->tab[h & sc->mask]; t; t = t->hnext)
		if (t->hash == h && !t->shape && t->len == len && memcmp(t->text, sql, len) == 0)
			return t;
	return NULL;
}

static struct sp_tmpl *find_shape(struct sp_cache *sc, uint64_t h, const char *sql, size_t len,
				  const struct sqlmask_lit *lits, int n)
{
	for (struct sp_tmpl *t = sc->tab[h & sc->mask]; t; t = t->hnext)
		if (t->hash == h && t->shape && t->n_lits == n &&
		    sqlmask_same(t->text, t->lits, t->len, sql, lits, (uint32_t)len, n))
			return t;
	return NULL;
}

/* Parses text (len bytes, no NUL inside) for the cluster's key. */
static struct sp_tmpl *analyze(const struct sp_ctx *ctx, const char *sql, size_t len,
			       const struct sqlmask_lit *lits, int n_lits, bool *shape_ok)
{
	char *z = malloc(len + 1);
	if (!z)
		return NULL;
	memcpy(z, sql, len);
	z[len] = '\0';
	struct shsql_result r;
	struct sp_tmpl *t = NULL;
	if (shsql_analyze(z, ctx->shard_key, ctx->key_type, &r) == 0) {
		t = tmpl_build(z, (uint32_t)len, &r, lits, n_lits, ctx->key_type, shape_ok);
		shsql_free(&r);
	}
	free(z);
	return t;
}

/*
 * The template for a text: a Query text by shape (lits/n_lits from sqlmask, n_lits < 0 when
 * its literals could not be followed), a Parse text exactly.  With a reference taken; NULL
 * when out of memory.
 */
static struct sp_tmpl *tmpl_get(const struct sp_ctx *ctx, const char *sql, size_t len, bool query,
				const struct sqlmask_lit *lits, int n_lits, uint64_t shape_hash)
{
	struct sp_cache *sc = cache_of(ctx);
	uint64_t xh = fnv(sql, len, 0xcbf29ce484222325ull) ^ 0x5bd1e995u;
	struct sp_tmpl *t = NULL;
	if (sc && query && n_lits >= 0)
		t = find_shape(sc, shape_hash, sql, len, lits, n_lits);
	if (!t && sc)
		t = find_exact(sc, xh, sql, len);
	if (t) {
		touch(sc, t);
		t->refs++;
		return t;
	}
	bool shape_ok = false;
	t = analyze(ctx, sql, len, query && n_lits >= 0 ? lits : NULL, n_lits, &shape_ok);
	if (!t)
		return NULL;
	t->refs = 1;
	if (sc && len <= SP_TEXT_MAX) {
		t->hash = shape_ok ? shape_hash : xh;
		cache_add(sc, t);
	}
	return t;
}

/* ---- evaluating ---------------------------------------------------------------------------- */

/* The client's encodings, for text keys with high bytes: PostgreSQL converts the client's
 * bytes to the server's before hashing, so pgmux hashes them as they are only when both
 * encodings are the same. */
bool shardplan_same_encoding(struct client *cl)
{
	const char *ce = varcache_get(&cl->vars, VAR_CLIENT_ENCODING);
	const char *se = cl->pool ? pool_parameter(cl->pool, "server_encoding") : NULL;
	if (!ce || !se)
		return false;
	char a[32], b[32];
	size_t na = 0, nb = 0;
	for (; *ce && na < sizeof(a) - 1; ce++)
		if (isalnum((unsigned char)*ce))
			a[na++] = (char)tolower((unsigned char)*ce);
	for (; *se && nb < sizeof(b) - 1; se++)
		if (isalnum((unsigned char)*se))
			b[nb++] = (char)tolower((unsigned char)*se);
	a[na] = b[nb] = '\0';
	return na && strcmp(a, b) == 0;
}

static void set_refuse(struct sp_eval *e, const char *state, const char *why, int pos)
{
	if (e->refuse)
		return;
	e->refuse = true;
	snprintf(e->sqlstate, sizeof(e->sqlstate), "%s", state);
	e->why = why;
	e->pos = pos;
}

static void set_bad(struct sp_eval *e, const char *why, int pos)
{
	if (!e->bad) {
		e->bad = true;
		e->why = why;
		e->pos = pos;
	}
}

/* One key value's shard into e. */
static void add_shard(struct sp_eval *e, int s)
{
	if (e->shard < 0)
		e->shard = s;
	else if (e->shard != s)
		e->multi = true;
}

/* A $n key value from a Bind, decoded by its type: the Parse's declared type, else the
 * cast's, else the column's.  0 with *h; 1 for NULL (it matches no row); -1 with *why. */
static int param_hash(const struct sp_ctx *ctx, const struct sp_val *v, const uint32_t *oids,
		      uint16_t n_oids, const uint8_t *bind, uint32_t blen, uint64_t *h, const char **why)
{
	int key_type = ctx->key_type;
	const uint8_t *val;
	uint32_t len;
	int fmt;
	int rc = shard_bind_param(bind, blen, v->param, &val, &len, &fmt);
	if (rc < 0) {
		*why = "a Bind message pgmux cannot read";
		return -1;
	}
	if (rc == 0)
		return 1;
	uint32_t decl = v->param <= n_oids ? oids[v->param - 1] : 0;
	if (decl == OID_UNKNOWN)
		decl = 0;
	bool textual = decl == OID_TEXT || decl == OID_VARCHAR;
	if (key_type == SHARDKEY_INT) {
		int64_t x;
		int want = 0;   /* the binary width the type has, 0: any integer width */
		if (decl == OID_INT2 || decl == OID_INT4 || decl == OID_INT8)
			want = decl == OID_INT2 ? 2 : decl == OID_INT4 ? 4 : 8;
		else if (decl == 0 && v->cast)
			want = v->cast == SHSQL_T_INT2 ? 2 : v->cast == SHSQL_T_INT4 ? 4 : 8;
		else if (decl && !textual) {
			*why = "an integer key sent as a parameter of another type (it is converted on "
			       "the server: declare it int2, int4 or int8)";
			return -1;
		}
		if (fmt == 0 || textual) {
			if (!int8_text((const char *)val, len, &x)) {
				*why = "a key parameter that is no integer";
				return -1;
			}
		} else if (fmt == 1 && (want == 0 ? (len == 2 || len == 4 || len == 8) : len == (uint32_t)want)) {
			if (len == 2)
				x = (int16_t)((val[0] << 8) | val[1]);
			else if (len == 4)
				x = (int32_t)proto_get32(val);
			else
				x = (int64_t)(((uint64_t)proto_get32(val) << 32) | proto_get32(val + 4));
		} else {
			*why = "a binary key parameter whose length is not its integer type's";
			return -1;
		}
		if (!in_range(v->cast, x) || (want == 2 && !in_range(SHSQL_T_INT2, x)) ||
		    (want == 4 && !in_range(SHSQL_T_INT4, x))) {
			*why = "a key parameter out of its type's range";
			return -1;
		}
		*h = int_hash(x);
		return 0;
	}
	if (key_type == SHARDKEY_TEXT) {
		if (decl && !textual) {
			*why = "a text key sent as a parameter of another type";
			return -1;
		}
		if (!all_ascii((const char *)val, len) && !shardplan_same_encoding(ctx->cl)) {
			*why = "a text key with non-ASCII bytes while client_encoding differs from "
			       "server_encoding";
			return -1;
		}
		return str_hash(key_type, (const char *)val, len, h) < 0 ? (*why = "bad text key", -1) : 0;
	}
	/* uuid: its own type, or text that uuid_in reads */
	if (decl && decl != OID_UUID && !textual) {
		*why = "a uuid key sent as a parameter of another type";
		return -1;
	}
	if (shard_key_hash(key_type, val, len, textual ? 0 : fmt, h) < 0) {
		*why = "a key parameter that is no uuid";
		return -1;
	}
	return 0;
}

/*
 * Evaluates template t for this text (its literals at lits, when t is a shape) and this
 * Bind (NULL: none yet), for the client's cluster.
 */
static void eval_rows(const struct sp_ctx *ctx, const struct sp_tmpl *t, const char *text,
		      const struct sqlmask_lit *lits, const uint32_t *oids, uint16_t n_oids,
		      const uint8_t *bind, uint32_t blen, struct sp_eval *e, int *vshard,
		      uint32_t vcap)
{
	int key_type = ctx->key_type;
	uint32_t n = (uint32_t)ctx->n_shards;
	memset(e, 0, sizeof(*e));
	e->shard = -1;
	e->utility = true;
	e->no_table = true;
	if (t->parse_error)
		return;   /* PostgreSQL refuses it wherever it goes: it runs nowhere */
	e->fanout_ok = t->n_st == 1 && t->st[0].fanout_ok;
	e->merge_ok = t->n_st == 1 && t->st[0].merge_ok;
	for (uint32_t i = 0; i < t->n_st; i++) {
		const struct sp_st *s = &t->st[i];
		int pos = (int)i + 1;
		if (s->verdict == SHSQL_REFUSE) {
			set_refuse(e, "0A000", s->why, pos);
			break;
		}
		if (s->kind != SHSQL_UTILITY)
			e->utility = false;
		if (!s->no_table)
			e->no_table = false;
		if (s->verdict == SHSQL_NOKEY) {
			if (s->no_table)
				continue;   /* runs where its batch does */
			if (s->kind == SHSQL_READ)
				e->nokey_read = true;
			else if (s->kind == SHSQL_WRITE)
				e->nokey_write = true;
			continue;
		}
		e->keyed = true;
		for (uint32_t j = 0; j < s->n; j++) {
			const struct sp_val *v = &s->v[j];
			uint64_t h;
			bool ascii = true;
			const char *why = NULL;
			int rc;
			if (v->src == SHSQL_PARAM) {
				if (!bind) {
					e->need_bind = true;
					continue;
				}
				rc = param_hash(ctx, v, oids, n_oids, bind, blen, &h, &why);
			} else if (v->lit >= 0 && t->shape) {
				rc = lit_hash(text, &lits[v->lit], key_type, v->negated, v->cast, &h, &ascii);
				why = "a key literal that is no value of the key's type";
			} else {
				rc = v->bad ? -1 : 0;
				h = v->hash;
				ascii = v->ascii;
				why = v->bad;
			}
			if (rc < 0) {
				set_bad(e, why, pos);
				continue;
			}
			if (rc == 1) {
				/* NULL matches no row; an INSERT would place one, so it is refused */
				if (s->insert)
					set_refuse(e, "0A000", "an INSERT with a NULL shard key", pos);
				continue;
			}
			if (!ascii && !shardplan_same_encoding(ctx->cl)) {
				set_bad(e, "a text key with non-ASCII bytes while client_encoding differs "
					"from server_encoding", pos);
				continue;
			}
			add_shard(e, (int)shardhash_shard(h, n));
			if (vshard && t->n_st == 1 && j < vcap)
				vshard[j] = (int)shardhash_shard(h, n);
		}
	}
}

static void eval(const struct sp_ctx *ctx, const struct sp_tmpl *t, const char *text,
		 const struct sqlmask_lit *lits, const uint32_t *oids, uint16_t n_oids,
		 const uint8_t *bind, uint32_t blen, struct sp_eval *e)
{
	eval_rows(ctx, t, text, lits, oids, n_oids, bind, blen, e, NULL, 0);
}

/* With standard_conforming_strings off, PostgreSQL reads backslashes in '' strings as
 * escapes; pgmux's parse and lexer read them as characters.  Such a text is refused rather
 * than read differently. */
static bool scs_off_backslash(struct client *cl, const char *sql, size_t len)
{
	const char *scs = varcache_get(&cl->vars, VAR_STD_STRINGS);
	return scs && strcasecmp(scs, "off") == 0 && memchr(sql, '\\', len);
}

static const char refuse_scs[] =
	"standard_conforming_strings is off and the statement has a backslash: pgmux would read "
	"its strings differently from the server";

static void query_eval(const struct sp_ctx *ctx, const char *sql, size_t len, struct sp_eval *e,
		       int *vshard, uint32_t vcap);

void shardplan_query(const struct sp_ctx *ctx, const char *sql, size_t len, struct sp_eval *e)
{
	query_eval(ctx, sql, len, e, NULL, 0);
}

void shardplan_query_rows(const struct sp_ctx *ctx, const char *sql, size_t len, struct sp_eval *e,
			  int *vshard, uint32_t vcap)
{
	for (uint32_t i = 0; i < vcap; i++)
		vshard[i] = -1;
	query_eval(ctx, sql, len, e, vshard, vcap);
}

static void query_eval(const struct sp_ctx *ctx, const char *sql, size_t len, struct sp_eval *e,
		       int *vshard, uint32_t vcap)
{
	const char *nul = memchr(sql, 0, len);
	if (nul)
		len = (size_t)(nul - sql);
	memset(e, 0, sizeof(*e));
	e->shard = -1;
	if (scs_off_backslash(ctx->cl, sql, len)) {
		set_refuse(e, "0A000", refuse_scs, 0);
		return;
	}
	struct sqlmask_lit stack[64], *lits = stack;
	uint64_t shape = 0;
	int n = sqlmask_scan(sql, len, lits, 64, &shape);
	if (n < 0 && len > 64) {
		/* more literals than the stack holds, or a construct the lexer does not follow */
		lits = malloc(SP_LITS_MAX * sizeof(*lits));
		if (lits)
			n = sqlmask_scan(sql, len, lits, SP_LITS_MAX, &shape);
		else
			lits = stack;
	}
	struct sp_tmpl *t = tmpl_get(ctx, sql, len, true, lits, n, shape);
	if (!t)
		set_refuse(e, "53200", "out of memory reading the statement's shard key", 0);
	else
		eval_rows(ctx, t, sql, lits, NULL, 0, NULL, 0, e, vshard, vcap);
	tmpl_unref(t);
	if (lits != stack)
		free(lits);
}

/* ---- a client's statements ----------------------------------------------------------------- */

static uint32_t name_hash(const char *s)
{
	return (uint32_t)fnv(s, strlen(s), 0xcbf29ce484222325ull);
}

static struct sp_named **named_slot(struct sp_client *sp, const char *name, uint32_t h)
{
	struct sp_named **pp = &sp->tab[h & sp->mask];
	while (*pp && ((*pp)->hash != h || strcmp((*pp)->name, name) != 0))
		pp = &(*pp)->next;
	return pp;
}

static void named_free(struct sp_client *sp, struct sp_named *e)
{
	sp->bytes -= sizeof(*e) + strlen(e->name) + 1 + e->n_oids * sizeof(uint32_t);
	tmpl_unref(e->t);
	free(e->oids);
	free(e);
	sp->n--;
}

void shardplan_forget(struct sp_client *sp, const char *name)
{
	if (!sp)
		return;
	if (!name) {
		for (uint32_t i = 0; i <= sp->mask; i++) {
			while (sp->tab[i]) {
				struct sp_named *e = sp->tab[i];
				sp->tab[i] = e->next;
				named_free(sp, e);
			}
		}
		return;
	}
	char key[SP_NAME_MAX + 1];
	snprintf(key, sizeof(key), "%s", name);
	struct sp_named **pp = named_slot(sp, key, name_hash(key));
	if (*pp) {
		struct sp_named *e = *pp;
		*pp = e->next;
		named_free(sp, e);
	}
}

void shardplan_client_free(struct sp_client **stmts)
{
	struct sp_client *sp = *stmts;
	if (!sp)
		return;
	shardplan_forget(sp, NULL);
	free(sp->tab);
	free(sp);
	*stmts = NULL;
}

uint64_t shardplan_client_bytes(const struct sp_client *sp)
{
	return sp ? sp->bytes + (uint64_t)(sp->mask + 1) * sizeof(*sp->tab) : 0;
}

/* Remembers name -> (t, oids); false when out of room (the name is then simply unknown). */
static bool remember(const struct sp_ctx *ctx, const char *name, struct sp_tmpl *t,
		     const uint8_t *oidp, uint16_t n_oids)
{
	struct client *cl = ctx->cl;
	struct sp_client *sp = *ctx->stmts;
	if (!sp) {
		if (!(sp = calloc(1, sizeof(*sp))) || !(sp->tab = calloc(16, sizeof(*sp->tab)))) {
			free(sp);
			return false;
		}
		sp->mask = 15;
		*ctx->stmts = sp;
	}
	char key[SP_NAME_MAX + 1];
	snprintf(key, sizeof(key), "%s", name);
	uint32_t h = name_hash(key);
	struct sp_named **pp = named_slot(sp, key, h);
	if (*pp) {
		struct sp_named *old = *pp;
		/* the unnamed statement parsed again with the same text and types: keep it */
		if (old->t == t && old->n_oids == n_oids) {
			uint16_t i = 0;
			while (i < n_oids && old->oids[i] == proto_get32(oidp + 4 * i))
				i++;
			if (i == n_oids)
				return true;
		}
		*pp = old->next;
		named_free(sp, old);
	}
	size_t nl = strlen(key);
	uint64_t cost = sizeof(struct sp_named) + nl + 1 + n_oids * sizeof(uint32_t);
	if (sp->n >= SP_CLIENT_STMTS ||
	    ctx->memory(cl) + cost > (uint64_t)cl->c.w->cf->max_client_memory)
		return false;
	struct sp_named *e = calloc(1, sizeof(*e) + nl + 1);
	if (!e || (n_oids && !(e->oids = malloc(n_oids * sizeof(uint32_t))))) {
		free(e);
		return false;
	}
	memcpy(e->name, key, nl + 1);
	for (uint16_t i = 0; i < n_oids; i++)
		e->oids[i] = proto_get32(oidp + 4 * i);
	e->n_oids = n_oids;
	e->hash = h;
	e->t = t;
	t->refs++;
	if (sp->n > sp->mask * 2) {
		uint32_t n = (sp->mask + 1) * 2;
		struct sp_named **tab = calloc(n, sizeof(*tab));
		if (tab) {
			for (uint32_t i = 0; i <= sp->mask; i++) {
				struct sp_named *x = sp->tab[i];
				while (x) {
					struct sp_named *next = x->next;
					x->next = tab[x->hash & (n - 1)];
					tab[x->hash & (n - 1)] = x;
					x = next;
				}
			}
			free(sp->tab);
			sp->tab = tab;
			sp->mask = n - 1;
		}
	}
	pp = &sp->tab[h & sp->mask];
	e->next = *pp;
	*pp = e;
	sp->n++;
	sp->bytes += sizeof(*e) + nl + 1 + n_oids * sizeof(uint32_t);
	return true;
}

void shardplan_parse(const struct sp_ctx *ctx, const uint8_t *m, uint32_t total,
		     const uint8_t *bind, uint32_t blen, struct sp_eval *e)
{
	memset(e, 0, sizeof(*e));
	e->shard = -1;
	const uint8_t *p = m + PROTO_HDR, *end = m + total;
	const uint8_t *z = memchr(p, 0, (size_t)(end - p));
	const uint8_t *q = z ? z + 1 : NULL;
	const uint8_t *qz = q && q < end ? memchr(q, 0, (size_t)(end - q)) : NULL;
	if (!qz || end - qz < 3) {
		set_refuse(e, "08P01", "invalid Parse message", 0);
		return;
	}
	const char *name = (const char *)p, *sql = (const char *)q;
	size_t len = (size_t)(qz - q);
	uint16_t n_oids = (uint16_t)((qz[1] << 8) | qz[2]);
	const uint8_t *oidp = qz + 3;
	if ((size_t)(end - oidp) < (size_t)n_oids * 4) {
		set_refuse(e, "08P01", "invalid Parse message", 0);
		return;
	}
	if (scs_off_backslash(ctx->cl, sql, len)) {
		shardplan_forget(*ctx->stmts, name);
		set_refuse(e, "0A000", refuse_scs, 0);
		return;
	}
	struct sp_tmpl *t = tmpl_get(ctx, sql, len, false, NULL, -1, 0);
	if (!t) {
		set_refuse(e, "53200", "out of memory reading the statement's shard key", 0);
		return;
	}
	uint32_t oids[64];
	uint16_t k = n_oids < 64 ? n_oids : 64;
	for (uint16_t i = 0; i < k; i++)
		oids[i] = proto_get32(oidp + 4 * i);
	eval(ctx, t, sql, NULL, oids, k, bind, blen, e);
	if (!remember(ctx, name, t, oidp, n_oids) && !e->refuse)
		log_debug("shardplan: statement \"%.40s\" not remembered (out of room)", name);
	tmpl_unref(t);
}

void shardplan_bind(const struct sp_ctx *ctx, const uint8_t *body, uint32_t blen,
		    struct sp_eval *e)
{
	memset(e, 0, sizeof(*e));
	e->shard = -1;
	const uint8_t *end = body + blen;
	const uint8_t *z = memchr(body, 0, blen);
	const uint8_t *stmt = z ? z + 1 : NULL;
	if (!stmt || stmt >= end || !memchr(stmt, 0, (size_t)(end - stmt))) {
		set_refuse(e, "08P01", "invalid Bind message", 0);
		return;
	}
	char key[SP_NAME_MAX + 1];
	snprintf(key, sizeof(key), "%s", (const char *)stmt);
	struct sp_client *sp = *ctx->stmts;
	struct sp_named **pp = sp ? named_slot(sp, key, name_hash(key)) : NULL;
	if (!pp || !*pp) {
		set_refuse(e, "0A000", "a Bind of a statement pgmux did not see parsed: its shard key "
			   "cannot be read", 0);
		return;
	}
	const struct sp_named *s = *pp;
	eval(ctx, s->t, s->t->text, NULL, s->oids, s->n_oids, body, blen, e);
}

const char *shardplan_bind_text(struct sp_client *sp, const uint8_t *body, uint32_t blen, size_t *len)
{
	const uint8_t *end = body + blen;
	const uint8_t *z = memchr(body, 0, blen);
	const uint8_t *stmt = z ? z + 1 : NULL;
	if (!sp || !stmt || stmt >= end || !memchr(stmt, 0, (size_t)(end - stmt)))
		return NULL;
	char key[SP_NAME_MAX + 1];
	snprintf(key, sizeof(key), "%s", (const char *)stmt);
	struct sp_named **pp = named_slot(sp, key, name_hash(key));
	if (!*pp)
		return NULL;
	*len = (*pp)->t->len;
	return (*pp)->t->text;
}
