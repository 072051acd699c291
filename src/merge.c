/* merge.c: merges the shards' rows of a keyless read as PostgreSQL would have answered it on one database (pure). */
#include "merge.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A block of bytes the kept values point into; freed together. */
struct merge_chunk {
	struct merge_chunk *next;
	char data[];
};

/* PostgreSQL's type OIDs (pg_type.dat). */
enum {
	OID_BOOL = 16, OID_CHAR = 18, OID_NAME = 19, OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23,
	OID_TEXT = 25, OID_OID = 26, OID_FLOAT4 = 700, OID_FLOAT8 = 701, OID_BPCHAR = 1042,
	OID_VARCHAR = 1043, OID_DATE = 1082, OID_TIMESTAMP = 1114, OID_NUMERIC = 1700, OID_UUID = 2950
};

#define DEC_MAX 2000   /* digits of a decimal pgmux adds: beyond, it refuses */

enum merge_kind merge_kind_of(uint32_t oid)
{
	switch (oid) {
	case OID_INT2: case OID_INT4: case OID_INT8: case OID_OID: return MK_INT;
	case OID_FLOAT4: case OID_FLOAT8: return MK_FLOAT;
	case OID_NUMERIC: return MK_NUMERIC;
	case OID_BOOL: return MK_BOOL;
	case OID_DATE: case OID_TIMESTAMP: return MK_DATETIME;
	case OID_UUID: case OID_NAME: case OID_CHAR: return MK_BYTES;
	case OID_TEXT: case OID_VARCHAR: return MK_TEXT;
	case OID_BPCHAR: return MK_BPCHAR;
	default: return MK_NONE;
	}
}

/* ---- decimals ------------------------------------------------------------------------------ */

enum { DEC_NUM, DEC_NAN, DEC_PINF, DEC_NINF };

struct dec {
	int special;
	bool neg;
	const char *ip, *fp;   /* integer digits (leading zeros stripped), fraction digits */
	size_t il, fl;
};

static bool dec_parse(const char *s, size_t n, struct dec *d)
{
	memset(d, 0, sizeof(*d));
	if (n == 3 && !memcmp(s, "NaN", 3))
		return d->special = DEC_NAN, true;
	if (n == 8 && !memcmp(s, "Infinity", 8))
		return d->special = DEC_PINF, true;
	if (n == 9 && !memcmp(s, "-Infinity", 9))
		return d->special = DEC_NINF, true;
	size_t i = 0;
	if (i < n && s[i] == '-')
		d->neg = true, i++;
	size_t st = i;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	if (i == st)
		return false;
	d->ip = s + st;
	d->il = i - st;
	while (d->il && d->ip[0] == '0')
		d->ip++, d->il--;
	if (i < n && s[i] == '.') {
		i++;
		d->fp = s + i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		d->fl = (size_t)(s + i - d->fp);
	}
	return i == n && d->il <= DEC_MAX && d->fl <= DEC_MAX;
}

static bool dec_is_zero(const struct dec *d)
{
	if (d->il)
		return false;
	for (size_t i = 0; i < d->fl; i++)
		if (d->fp[i] != '0')
			return false;
	return true;
}

/* Compares magnitudes. */
static int dec_cmp_abs(const struct dec *a, const struct dec *b)
{
	if (a->il != b->il)
		return a->il < b->il ? -1 : 1;
	int c = memcmp(a->ip, b->ip, a->il);
	if (c)
		return c < 0 ? -1 : 1;
	size_t n = a->fl > b->fl ? a->fl : b->fl;
	for (size_t i = 0; i < n; i++) {
		char x = i < a->fl ? a->fp[i] : '0', y = i < b->fl ? b->fp[i] : '0';
		if (x != y)
			return x < y ? -1 : 1;
	}
	return 0;
}

static int dec_cmp(const struct dec *a, const struct dec *b)
{
	/* PostgreSQL: -Infinity < numbers < Infinity < NaN, and NaN = NaN. */
	static const int rank[] = { [DEC_NINF] = 0, [DEC_NUM] = 1, [DEC_PINF] = 2, [DEC_NAN] = 3 };
	if (a->special != DEC_NUM || b->special != DEC_NUM) {
		int x = rank[a->special], y = rank[b->special];
		return x < y ? -1 : x > y;
	}
	bool za = dec_is_zero(a), zb = dec_is_zero(b);
	bool na = a->neg && !za, nb = b->neg && !zb;
	if (na != nb)
		return na ? -1 : 1;
	int c = dec_cmp_abs(a, b);
	return na ? -c : c;
}

/* Digit i (0 = the last fraction digit of scale sc) of d's magnitude. */
static int dec_digit(const struct dec *d, size_t sc, size_t i)
{
	if (i < sc) {
		size_t fi = sc - 1 - i;
		return fi < d->fl ? d->fp[fi] - '0' : 0;
	}
	size_t ii = i - sc;
	return ii < d->il ? d->ip[d->il - 1 - ii] - '0' : 0;
}

/* Writes a magnitude (digits least significant first, n of them, sc after the point). */
static bool dec_write(const int *dg, size_t n, size_t sc, bool neg, char *out, size_t cap)
{
	size_t top = n;
	while (top > sc + 1 && dg[top - 1] == 0)
		top--;
	if (top < sc + 1)
		top = sc + 1;
	bool zero = true;
	for (size_t i = 0; i < n; i++)
		zero = zero && dg[i] == 0;
	size_t need = top + (sc ? 1 : 0) + (neg && !zero ? 1 : 0) + 1;
	if (need > cap)
		return false;
	size_t o = 0;
	if (neg && !zero)
		out[o++] = '-';
	for (size_t i = top; i-- > 0;) {
		out[o++] = (char)('0' + (i < n ? dg[i] : 0));
		if (i == sc && sc)
			out[o++] = '.';
	}
	out[o] = '\0';
	return true;
}

bool merge_dec_add(const char *a, size_t alen, const char *b, size_t blen, char *out, size_t cap)
{
	struct dec x, y;
	if (!dec_parse(a, alen, &x) || !dec_parse(b, blen, &y))
		return false;
	if (x.special != DEC_NUM || y.special != DEC_NUM) {
		const char *r;
		if (x.special == DEC_NAN || y.special == DEC_NAN ||
		    (x.special == DEC_PINF && y.special == DEC_NINF) ||
		    (x.special == DEC_NINF && y.special == DEC_PINF))
			r = "NaN";
		else
			r = (x.special == DEC_PINF || y.special == DEC_PINF) ? "Infinity" : "-Infinity";
		if (strlen(r) + 1 > cap)
			return false;
		strcpy(out, r);
		return true;
	}
	/* The sum's scale is the larger one, as PostgreSQL's numeric addition keeps it. */
	size_t sc = x.fl > y.fl ? x.fl : y.fl;
	size_t n = sc + (x.il > y.il ? x.il : y.il) + 1;
	int *dg = calloc(n, sizeof(int));
	if (!dg)
		return false;
	bool neg;
	if (x.neg == y.neg) {
		int carry = 0;
		for (size_t i = 0; i < n; i++) {
			int v = dec_digit(&x, sc, i) + dec_digit(&y, sc, i) + carry;
			dg[i] = v % 10;
			carry = v / 10;
		}
		neg = x.neg;
	} else {
		const struct dec *big = &x, *small = &y;
		if (dec_cmp_abs(&x, &y) < 0)
			big = &y, small = &x;
		int borrow = 0;
		for (size_t i = 0; i < n; i++) {
			int v = dec_digit(big, sc, i) - dec_digit(small, sc, i) - borrow;
			borrow = v < 0;
			dg[i] = v < 0 ? v + 10 : v;
		}
		neg = big->neg;
	}
	bool ok = dec_write(dg, n, sc, neg, out, cap);
	free(dg);
	return ok;
}

/* The weight (in base-10000 digits, as PostgreSQL stores numerics) and first base-10000
 * digit of a decimal; 0, 0 for zero. */
static void dec_weight(const struct dec *d, int *weight, int *first)
{
	*weight = 0;
	*first = 0;
	if (d->il) {
		size_t lead = (d->il - 1) % 4 + 1;
		int v = 0;
		for (size_t i = 0; i < lead; i++)
			v = v * 10 + (d->ip[i] - '0');
		*weight = (int)((d->il - 1) / 4);
		*first = v;
		return;
	}
	for (size_t j = 0; j * 4 < d->fl; j++) {
		int v = 0;
		for (size_t i = 0; i < 4; i++)
			v = v * 10 + (j * 4 + i < d->fl ? d->fp[j * 4 + i] - '0' : 0);
		if (v) {
			*weight = -(int)(j + 1);
			*first = v;
			return;
		}
	}
}

bool merge_dec_avg(const char *sum, size_t slen, const char *count, size_t clen, char *out, size_t cap)
{
	struct dec s, c;
	if (!dec_parse(sum, slen, &s) || !dec_parse(count, clen, &c) || c.special != DEC_NUM ||
	    c.neg || c.fl || !c.il || c.il > 19)
		return false;
	char cbuf[24];
	memcpy(cbuf, c.ip, c.il);
	cbuf[c.il] = '\0';
	errno = 0;
	unsigned long long n = strtoull(cbuf, NULL, 10);
	if (errno || n == 0)
		return false;
	if (s.special != DEC_NUM) {
		const char *r = s.special == DEC_NAN ? "NaN" : s.special == DEC_PINF ? "Infinity" : "-Infinity";
		if (strlen(r) + 1 > cap)
			return false;
		strcpy(out, r);
		return true;
	}
	/* select_div_scale (numeric.c): at least 16 significant digits, at least the inputs'
	 * display scales, at most 1000. */
	int w1, f1, w2, f2;
	dec_weight(&s, &w1, &f1);
	dec_weight(&c, &w2, &f2);
	int qweight = w1 - w2;
	if (f1 <= f2)
		qweight--;
	int rscale = 16 - qweight * 4;
	if (rscale < (int)s.fl)
		rscale = (int)s.fl;
	if (rscale < 0)
		rscale = 0;
	if (rscale > 1000)
		rscale = 1000;
	/* |sum| * 10^(rscale - scale) / n, by long division, rounded half away from zero as
	 * div_var rounds. */
	size_t nd = s.il + (size_t)rscale;   /* numerator digits, most significant first */
	int *q = calloc(nd + 1, sizeof(int));
	if (!q)
		return false;
	unsigned __int128 rem = 0;
	for (size_t i = 0; i < nd; i++) {
		int d;
		if (i < s.il)
			d = s.ip[i] - '0';
		else
			d = i - s.il < s.fl ? s.fp[i - s.il] - '0' : 0;
		rem = rem * 10 + (unsigned)d;
		q[nd - 1 - i] = (int)(rem / n);   /* stored least significant first */
		rem %= n;
	}
	if (rem * 2 >= n) {
		size_t i = 0;
		while (i <= nd && ++q[i] == 10)
			q[i++] = 0;
	}
	bool ok = dec_write(q, nd + 1, (size_t)rscale, s.neg, out, cap);
	free(q);
	return ok;
}

/* ---- comparing values ---------------------------------------------------------------------- */

static bool to_cstr(const struct merge_val *v, char *buf, size_t cap)
{
	if (v->len < 0 || (size_t)v->len >= cap)
		return false;
	memcpy(buf, v->p, (size_t)v->len);
	buf[v->len] = '\0';
	return true;
}

static int cmp_bytes(const struct merge_val *a, const struct merge_val *b)
{
	size_t n = (size_t)(a->len < b->len ? a->len : b->len);
	int c = memcmp(a->p, b->p, n);
	if (c)
		return c < 0 ? -1 : 1;
	return a->len < b->len ? -1 : a->len > b->len;
}

/* ISO date or timestamp text: -1 -infinity, 1 infinity, 0 a date with *ylen year digits. */
static int dt_shape(const struct merge_val *v, size_t *ylen, bool *bad)
{
	if (v->len == 8 && !memcmp(v->p, "infinity", 8))
		return 1;
	if (v->len == 9 && !memcmp(v->p, "-infinity", 9))
		return -1;
	size_t i = 0;
	while (i < (size_t)v->len && v->p[i] >= '0' && v->p[i] <= '9')
		i++;
	if (i < 4 || i >= (size_t)v->len || v->p[i] != '-' ||
	    (v->len >= 3 && !memcmp(v->p + v->len - 3, " BC", 3)))
		*bad = true;   /* not ISO DateStyle, or before Christ: byte order is not time order */
	*ylen = i;
	return 0;
}

int merge_cmp(enum merge_kind k, const struct merge_val *a, const struct merge_val *b, bool *bad)
{
	char x[64], y[64];
	switch (k) {
	case MK_INT: {
		if (!to_cstr(a, x, sizeof(x)) || !to_cstr(b, y, sizeof(y))) {
			*bad = true;
			return 0;
		}
		long long p = strtoll(x, NULL, 10), q = strtoll(y, NULL, 10);
		return p < q ? -1 : p > q;
	}
	case MK_FLOAT: {
		if (!to_cstr(a, x, sizeof(x)) || !to_cstr(b, y, sizeof(y))) {
			*bad = true;
			return 0;
		}
		double p = strtod(x, NULL), q = strtod(y, NULL);
		if (isnan(p) || isnan(q))
			return isnan(p) && isnan(q) ? 0 : isnan(p) ? 1 : -1;
		return p < q ? -1 : p > q;
	}
	case MK_NUMERIC: {
		struct dec p, q;
		if (!dec_parse(a->p, (size_t)a->len, &p) || !dec_parse(b->p, (size_t)b->len, &q)) {
			*bad = true;
			return 0;
		}
		return dec_cmp(&p, &q);
	}
	case MK_BOOL:
		return cmp_bytes(a, b);   /* "f" < "t" */
	case MK_DATETIME: {
		size_t ya = 0, yb = 0;
		int sa = dt_shape(a, &ya, bad), sb = dt_shape(b, &yb, bad);
		if (sa || sb)
			return sa < sb ? -1 : sa > sb;
		if (ya != yb)
			return ya < yb ? -1 : 1;
		return cmp_bytes(a, b);
	}
	case MK_BYTES:
	case MK_TEXT:
		return cmp_bytes(a, b);
	case MK_BPCHAR: {
		/* PostgreSQL's bpchar comparisons ignore trailing spaces */
		struct merge_val x2 = *a, y2 = *b;
		while (x2.len > 0 && x2.p[x2.len - 1] == ' ')
			x2.len--;
		while (y2.len > 0 && y2.p[y2.len - 1] == ' ')
			y2.len--;
		return cmp_bytes(&x2, &y2);
	}
	default:
		*bad = true;
		return 0;
	}
}

/* ---- the set of rows ------------------------------------------------------------------------ */

static bool fail(struct merge_set *m, const char *state, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static bool fail(struct merge_set *m, const char *state, const char *fmt, ...)
{
	va_list ap;
	snprintf(m->sqlstate, sizeof(m->sqlstate), "%s", state);
	va_start(ap, fmt);
	vsnprintf(m->err, sizeof(m->err), fmt, ap);
	va_end(ap);
	return false;
}

/* Walks a RowDescription body: field i's name and fixed part (18 bytes after the name). */
static const uint8_t *desc_field(const uint8_t *body, uint32_t len, uint16_t i, const uint8_t **fixed)
{
	if (len < 2)
		return NULL;
	uint16_t n = (uint16_t)(body[0] << 8 | body[1]);
	if (i >= n)
		return NULL;
	uint32_t off = 2;
	for (uint16_t k = 0;; k++) {
		const uint8_t *nul = off < len ? memchr(body + off, 0, len - off) : NULL;
		if (!nul || (uint32_t)(nul - body) + 1 + 18 > len)
			return NULL;
		if (k == i) {
			*fixed = nul + 1;
			return body + off;
		}
		off = (uint32_t)(nul - body) + 1 + 18;
	}
}

bool merge_same_desc(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen)
{
	if (alen < 2 || blen < 2 || a[0] != b[0] || a[1] != b[1])
		return false;
	uint16_t n = (uint16_t)(a[0] << 8 | a[1]);
	for (uint16_t i = 0; i < n; i++) {
		const uint8_t *fa, *fb;
		if (!desc_field(a, alen, i, &fa) || !desc_field(b, blen, i, &fb))
			return false;
		/* type OID, size, typmod, format: offsets 6..17 of the fixed part */
		if (memcmp(fa + 6, fb + 6, 12))
			return false;
	}
	return true;
}

static bool orderable(const struct merge_col *c, bool collate_c)
{
	if (c->kind == MK_NONE)
		return false;
	return (c->kind != MK_TEXT && c->kind != MK_BPCHAR) || collate_c || c->collate_c;
}

bool merge_init(struct merge_set *m, const struct mergeplan *mp, const uint8_t *body, uint32_t len,
		uint64_t max_bytes)
{
	memset(m, 0, sizeof(*m));
	m->max_bytes = max_bytes;
	m->aggregate = mp->aggregate;
	m->distinct = mp->distinct;
	m->limit = mp->limit;
	m->offset = mp->offset;
	if (len < 2)
		return fail(m, "08P01", "%s", "pgmux: a malformed RowDescription from a shard");
	uint16_t n = (uint16_t)(body[0] << 8 | body[1]);
	uint16_t expect = mp->star ? n : mp->n_cols;
	if (n != expect || n > MP_MAX_COLS || n < mp->n_hidden)
		return fail(m, "08P01", "%s", "pgmux: a shard's RowDescription does not have the "
			    "columns pgmux asked for");
	m->ncols = n;
	m->nvis = (uint16_t)(n - mp->n_hidden);
	uint16_t base = mp->star ? m->nvis : 0;   /* where mp->cols[0] is among the columns */
	for (uint16_t i = 0; i < n; i++) {
		const uint8_t *fx;
		if (!desc_field(body, len, i, &fx))
			return fail(m, "08P01", "%s", "pgmux: a malformed RowDescription from a shard");
		uint32_t oid = proto_get32(fx + 6);
		uint16_t fmt = (uint16_t)(fx[16] << 8 | fx[17]);
		struct merge_col *c = &m->col[i];
		c->avg_count = -1;
		if (i >= base) {
			const struct mp_col *pc = &mp->cols[i - base];
			c->agg = pc->agg;
			c->collate_c = pc->collate_c;
			c->hidden = pc->hidden;
			c->avg_count = pc->avg_count >= 0 ? (int16_t)(pc->avg_count + base) : -1;
		}
		if (fmt != 0)
			return fail(m, "0A000", "%s", "pgmux cannot merge the shards' answers in binary "
				    "format");
		c->kind = (uint8_t)merge_kind_of(oid);
		c->oid = c->agg == MP_AVG_SUM ? OID_NUMERIC : oid;
		char tn[32];
		snprintf(tn, sizeof(tn), "%u", oid);
		switch (c->agg) {
		case MP_COUNT: case MP_AVG_COUNT:
			if (oid != OID_INT8)
				return fail(m, "0A000", "pgmux cannot merge a count of type OID %s", tn);
			break;
		case MP_SUM: case MP_AVG_SUM:
			if (oid != OID_INT8 && oid != OID_NUMERIC)
				return fail(m, "0A000", "pgmux cannot merge sum() or avg() of this type "
					    "(result type OID %s): only integer and numeric columns are "
					    "added exactly (a float sum depends on the order of its terms)", tn);
			c->int8_sum = oid == OID_INT8 && c->agg == MP_SUM;
			break;
		case MP_MIN: case MP_MAX:
			if (!orderable(c, false))
				return fail(m, "0A000", "pgmux cannot merge min() or max() of this type (OID "
					    "%s); text needs COLLATE \"C\" in the aggregate's argument", tn);
			break;
		default:
			if ((m->aggregate || m->distinct) && (c->kind == MK_NONE || c->kind == MK_FLOAT))
				return fail(m, "0A000", "pgmux cannot group or de-duplicate the shards' rows "
					    "on a column of this type (OID %s)", tn);
			break;
		}
	}
	for (uint16_t i = 0; i < mp->n_keys; i++) {
		const struct mp_key *k = &mp->keys[i];
		int col = k->col;
		if (mp->star && !k->from_star)
			col += base;
		if (col < 0 || col >= n || (k->from_star && col >= m->nvis))
			return fail(m, "42P10", "%s", "pgmux: an ORDER BY position is not in the select list");
		if (!orderable(&m->col[col], k->collate_c)) {
			char tn[32];
			const uint8_t *fx;
			desc_field(body, len, (uint16_t)col, &fx);
			snprintf(tn, sizeof(tn), "%u", proto_get32(fx + 6));
			return fail(m, "0A000", "pgmux cannot merge ORDER BY on a column of this type "
				    "(OID %s): text orders byte by byte only under COLLATE \"C\"; write "
				    "ORDER BY <column> COLLATE \"C\"", tn);
		}
		m->key[m->nkeys].col = (uint16_t)col;
		m->key[m->nkeys].desc = k->desc;
		m->key[m->nkeys].nulls_first = k->nulls_first;
		m->nkeys++;
	}
	return true;
}

/* Room for n bytes the set keeps, counted against the cap. */
static char *keep(struct merge_set *m, size_t n)
{
	if (m->bytes + n + sizeof(struct merge_chunk) > m->max_bytes)
		return NULL;
	struct merge_chunk *ch = malloc(sizeof(*ch) + n);
	if (!ch)
		return NULL;
	ch->next = m->chunks;
	m->chunks = ch;
	m->bytes += n + sizeof(*ch);
	return ch->data;
}

static bool too_big(struct merge_set *m)
{
	char cap[32];
	snprintf(cap, sizeof(cap), "%llu", (unsigned long long)m->max_bytes);
	return fail(m, "54000", "pgmux: the rows of a read merged over every shard exceed "
		    "max_client_memory (%s bytes); add a LIMIT, or a shard key", cap);
}

bool merge_add_row(struct merge_set *m, const uint8_t *body, uint32_t len)
{
	if (len < 2 || (uint16_t)(body[0] << 8 | body[1]) != m->ncols)
		return fail(m, "08P01", "%s", "pgmux: a malformed DataRow from a shard");
	if (m->nrows == m->cap) {
		size_t nc = m->cap ? m->cap * 2 : 64;
		if (m->bytes + (nc - m->cap) * sizeof(*m->rows) > m->max_bytes)
			return too_big(m);
		struct merge_val **r = realloc(m->rows, nc * sizeof(*r));
		if (!r)
			return too_big(m);
		m->bytes += (nc - m->cap) * sizeof(*r);
		m->rows = r;
		m->cap = nc;
	}
	size_t vsz = m->ncols * sizeof(struct merge_val);
	char *mem = keep(m, vsz + len);
	if (!mem)
		return too_big(m);
	struct merge_val *v = (struct merge_val *)(void *)mem;
	char *data = mem + vsz;
	memcpy(data, body, len);
	uint32_t off = 2;
	for (uint16_t i = 0; i < m->ncols; i++) {
		if (off + 4 > len)
			return fail(m, "08P01", "%s", "pgmux: a malformed DataRow from a shard");
		int32_t l = (int32_t)proto_get32((const uint8_t *)data + off);
		off += 4;
		if (l >= 0 && (uint32_t)l > len - off)
			return fail(m, "08P01", "%s", "pgmux: a malformed DataRow from a shard");
		v[i].p = data + off;
		v[i].len = l < 0 ? -1 : l;
		if (l > 0)
			off += (uint32_t)l;
	}
	m->rows[m->nrows++] = v;
	return true;
}

/* ---- merging -------------------------------------------------------------------------------- */

struct sort_ctx {
	struct merge_set *m;
	int mode;    /* 0: ORDER BY keys; 1: group keys (plain columns); 2: every column */
	bool bad;
};

static int cmp_col(struct sort_ctx *x, uint16_t c, const struct merge_val *a, const struct merge_val *b,
		   bool desc, bool nulls_first)
{
	if (a->len < 0 || b->len < 0) {
		if (a->len < 0 && b->len < 0)
			return 0;
		return (a->len < 0) == nulls_first ? -1 : 1;
	}
	int r = merge_cmp((enum merge_kind)x->m->col[c].kind, a, b, &x->bad);
	return desc ? -r : r;
}

static int row_cmp(const void *pa, const void *pb, void *arg)
{
	struct sort_ctx *x = arg;
	const struct merge_val *a = *(struct merge_val *const *)pa, *b = *(struct merge_val *const *)pb;
	struct merge_set *m = x->m;
	if (x->mode == 0) {
		for (uint16_t i = 0; i < m->nkeys; i++) {
			const struct merge_key *k = &m->key[i];
			int r = cmp_col(x, k->col, &a[k->col], &b[k->col], k->desc, k->nulls_first);
			if (r)
				return r;
		}
		return 0;
	}
	for (uint16_t c = 0; c < m->ncols; c++) {
		if (x->mode == 1 && m->col[c].agg != MP_PLAIN)
			continue;
		int r = cmp_col(x, c, &a[c], &b[c], false, false);
		if (r)
			return r;
	}
	return 0;
}

/* Replaces value *v by a copy of text s (kept in the set). */
static bool set_text(struct merge_set *m, struct merge_val *v, const char *s)
{
	size_t n = strlen(s);
	char *p = keep(m, n ? n : 1);
	if (!p)
		return too_big(m);
	memcpy(p, s, n);
	v->p = p;
	v->len = (int32_t)n;
	return true;
}

/* Folds row b's aggregates into row a (same group). */
static bool fold(struct merge_set *m, struct sort_ctx *x, struct merge_val *a, const struct merge_val *b)
{
	for (uint16_t c = 0; c < m->ncols; c++) {
		struct merge_col *col = &m->col[c];
		if (col->agg == MP_PLAIN || b[c].len < 0)
			continue;
		if (a[c].len < 0) {
			a[c] = b[c];
			continue;
		}
		switch (col->agg) {
		case MP_COUNT: case MP_SUM: case MP_AVG_SUM: case MP_AVG_COUNT: {
			size_t cap = (size_t)a[c].len + (size_t)b[c].len + 4;
			char *out = malloc(cap);
			if (!out)
				return too_big(m);
			bool ok = merge_dec_add(a[c].p, (size_t)a[c].len, b[c].p, (size_t)b[c].len, out, cap);
			ok = ok && set_text(m, &a[c], out);
			free(out);
			if (!ok)
				return m->err[0] ? false : fail(m, "0A000", "%s", "pgmux cannot add these sums exactly");
			break;
		}
		case MP_MIN: case MP_MAX: {
			int r = merge_cmp((enum merge_kind)col->kind, &b[c], &a[c], &x->bad);
			if ((col->agg == MP_MIN && r < 0) || (col->agg == MP_MAX && r > 0))
				a[c] = b[c];
			break;
		}
		default:
			break;
		}
	}
	return true;
}

/* The finished values of a group: avg divided out, bigint sums checked. */
static bool finish_row(struct merge_set *m, struct merge_val *r)
{
	for (uint16_t c = 0; c < m->nvis; c++) {
		struct merge_col *col = &m->col[c];
		if (col->agg == MP_AVG_SUM) {
			const struct merge_val *cnt = &r[col->avg_count];
			if (r[c].len < 0 || cnt->len < 0 || (cnt->len == 1 && cnt->p[0] == '0')) {
				r[c].len = -1;
				continue;
			}
			size_t cap = (size_t)r[c].len + 1100;
			char *out = malloc(cap);
			if (!out)
				return too_big(m);
			bool ok = merge_dec_avg(r[c].p, (size_t)r[c].len, cnt->p, (size_t)cnt->len, out, cap);
			ok = ok && set_text(m, &r[c], out);
			free(out);
			if (!ok)
				return m->err[0] ? false : fail(m, "0A000", "%s", "pgmux cannot divide this avg exactly");
		} else if (col->int8_sum && r[c].len >= 0) {
			struct merge_val lo = { "-9223372036854775808", 20 }, hi = { "9223372036854775807", 19 };
			bool bad = false;
			if (merge_cmp(MK_NUMERIC, &r[c], &lo, &bad) < 0 || merge_cmp(MK_NUMERIC, &r[c], &hi, &bad) > 0)
				return fail(m, "22003", "%s", "bigint out of range");
		}
	}
	return true;
}

bool merge_finish(struct merge_set *m)
{
	struct sort_ctx x = { .m = m };
	m->err[0] = '\0';
	if (m->aggregate || m->distinct) {
		/* Equal rows (in the group columns, or in all) side by side, then one of each. */
		x.mode = m->aggregate ? 1 : 2;
		if (m->nrows > 1)
			qsort_r(m->rows, m->nrows, sizeof(*m->rows), row_cmp, &x);
		size_t out = 0;
		for (size_t i = 0; i < m->nrows; i++) {
			if (out && row_cmp(&m->rows[out - 1], &m->rows[i], &x) == 0) {
				if (m->aggregate && !fold(m, &x, m->rows[out - 1], m->rows[i]))
					return false;
				continue;
			}
			m->rows[out++] = m->rows[i];
		}
		m->nrows = out;
		if (m->aggregate)
			for (size_t i = 0; i < m->nrows; i++)
				if (!finish_row(m, m->rows[i]))
					return false;
	}
	if (m->nkeys && m->nrows > 1) {
		x.mode = 0;
		qsort_r(m->rows, m->nrows, sizeof(*m->rows), row_cmp, &x);
	}
	if (x.bad)
		return fail(m, "0A000", "%s", "pgmux cannot order these values as PostgreSQL does (a "
			    "date before Christ, a DateStyle other than ISO, or a malformed value)");
	m->first = (uint64_t)m->offset < m->nrows ? (size_t)m->offset : m->nrows;
	m->end = m->nrows;
	if (m->limit >= 0 && (uint64_t)m->limit < m->end - m->first)
		m->end = m->first + (size_t)m->limit;
	/* Every value the client gets in binary converts exactly, or none goes out. */
	struct pktbuf scratch = { 0 };
	for (size_t i = m->first; i < m->end; i++) {
		for (uint16_t c = 0; c < m->nvis; c++) {
			const struct merge_val *v = &m->rows[i][c];
			if (!m->col[c].binary || v->len < 0)
				continue;
			pktbuf_reset(&scratch);
			if (!merge_text_to_binary(m->col[c].oid, v->p, (size_t)v->len, &scratch)) {
				pktbuf_free(&scratch);
				return fail(m, "0A000", "pgmux cannot send a value of type OID %u in binary "
					    "exactly (a date before Christ, or a DateStyle other than ISO)",
					    m->col[c].oid);
			}
		}
	}
	pktbuf_free(&scratch);
	return true;
}

static bool binary_ok(uint32_t oid)
{
	switch (oid) {
	case OID_INT2: case OID_INT4: case OID_INT8: case OID_OID: case OID_BOOL: case OID_TEXT:
	case OID_VARCHAR: case OID_BPCHAR: case OID_NAME: case OID_CHAR: case OID_FLOAT4:
	case OID_FLOAT8: case OID_NUMERIC: case OID_UUID: case OID_DATE: case OID_TIMESTAMP:
		return true;
	default:
		return false;
	}
}

bool merge_set_formats(struct merge_set *m, const uint16_t *codes, uint16_t n)
{
	if (n > 1 && n != m->nvis)
		return fail(m, "08P01", "bind message has %u result formats but query has %u columns",
			    n, m->nvis);
	for (uint16_t c = 0; c < m->nvis; c++) {
		uint16_t f = n == 0 ? 0 : n == 1 ? codes[0] : codes[c];
		if (f > 1)
			return fail(m, "22023", "unsupported format code: %u", f);
		m->col[c].binary = f == 1;
		bool can = !f || binary_ok(m->col[c].oid);
		if (!can)
			return fail(m, "0A000", "pgmux cannot send type OID %u in binary for a merged read "
				    "(ask for text results)", m->col[c].oid);
	}
	return true;
}

/* ---- binary forms ----------------------------------------------------------------------------- */

static void put_be(struct pktbuf *pb, uint64_t v, int bytes)
{
	for (int i = bytes - 1; i >= 0; i--)
		pktbuf_put_u8(pb, (uint8_t)(v >> (8 * i)));
}

static bool parse_i64(const char *p, size_t len, int64_t *v)
{
	char buf[32];
	if (!len || len >= sizeof(buf))
		return false;
	memcpy(buf, p, len);
	buf[len] = '\0';
	char *end;
	errno = 0;
	long long x = strtoll(buf, &end, 10);
	if (errno || *end)
		return false;
	*v = x;
	return true;
}

/* Days from 1970-01-01 of a proleptic Gregorian date (any year). */
static int64_t days_from_civil(int64_t y, int64_t mo, int64_t d)
{
	y -= mo <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* "YYYY-MM-DD" (4 or more year digits, AD) at the start of p: days since 2000-01-01. */
static bool parse_date(const char *p, size_t len, int64_t *days, size_t *used)
{
	size_t i = 0;
	int64_t y = 0;
	while (i < len && p[i] >= '0' && p[i] <= '9' && i < 9)
		y = y * 10 + (p[i++] - '0');
	if (i < 4 || i + 6 > len || p[i] != '-' || p[i + 3] != '-')
		return false;
	const char *q = p + i + 1;
	if (q[0] < '0' || q[0] > '9' || q[1] < '0' || q[1] > '9' || q[3] < '0' || q[3] > '9' ||
	    q[4] < '0' || q[4] > '9')
		return false;
	int64_t mo = (q[0] - '0') * 10 + (q[1] - '0'), d = (q[3] - '0') * 10 + (q[4] - '0');
	if (mo < 1 || mo > 12 || d < 1 || d > 31)
		return false;
	*days = days_from_civil(y, mo, d) - 10957;   /* 2000-01-01 is day 10957 after 1970 */
	*used = i + 6;
	return true;
}

static bool numeric_binary(const char *p, size_t len, struct pktbuf *pb)
{
	struct dec d;
	if (!dec_parse(p, len, &d))
		return false;
	if (d.special != DEC_NUM) {
		static const uint16_t sign[] = { [DEC_NAN] = 0xC000, [DEC_PINF] = 0xD000, [DEC_NINF] = 0xF000 };
		put_be(pb, 0, 2);
		put_be(pb, 0, 2);
		put_be(pb, sign[d.special], 2);
		put_be(pb, 0, 2);
		return true;
	}
	if (d.fl > 16383)
		return false;
	/* base-10000 digits aligned at the point: integer groups from the right, fraction
	 * groups from the left */
	size_t ig = (d.il + 3) / 4, fg = (d.fl + 3) / 4;
	uint16_t *g = calloc(ig + fg + 1, sizeof(*g));
	if (!g)
		return false;
	for (size_t k = 0; k < ig; k++) {
		int v = 0;
		for (size_t j = 0; j < 4; j++) {
			size_t pos = k * 4 + j;   /* digit index in a left-padded integer part */
			size_t pad = ig * 4 - d.il;
			v = v * 10 + (pos >= pad ? d.ip[pos - pad] - '0' : 0);
		}
		g[k] = (uint16_t)v;
	}
	for (size_t k = 0; k < fg; k++) {
		int v = 0;
		for (size_t j = 0; j < 4; j++) {
			size_t pos = k * 4 + j;
			v = v * 10 + (pos < d.fl ? d.fp[pos] - '0' : 0);
		}
		g[ig + k] = (uint16_t)v;
	}
	/* PostgreSQL stores (and sends) numerics without leading or trailing zero digits */
	size_t first = 0, n = ig + fg;
	int weight = (int)ig - 1;
	while (first < n && g[first] == 0)
		first++, weight--;
	while (n > first && g[n - 1] == 0)
		n--;
	bool zero = n == first;
	put_be(pb, zero ? 0 : n - first, 2);
	put_be(pb, zero ? 0 : (uint16_t)(int16_t)weight, 2);
	put_be(pb, d.neg && !zero ? 0x4000 : 0, 2);
	put_be(pb, d.fl, 2);
	for (size_t k = first; k < n; k++)
		put_be(pb, g[k], 2);
	free(g);
	return true;
}

bool merge_text_to_binary(uint32_t oid, const char *p, size_t len, struct pktbuf *pb)
{
	int64_t v;
	switch (oid) {
	case OID_INT2:
		if (!parse_i64(p, len, &v) || v < INT16_MIN || v > INT16_MAX)
			return false;
		put_be(pb, (uint64_t)v, 2);
		return true;
	case OID_INT4:
		if (!parse_i64(p, len, &v) || v < INT32_MIN || v > INT32_MAX)
			return false;
		put_be(pb, (uint64_t)v, 4);
		return true;
	case OID_OID:
		if (!parse_i64(p, len, &v) || v < 0 || v > UINT32_MAX)
			return false;
		put_be(pb, (uint64_t)v, 4);
		return true;
	case OID_INT8:
		if (!parse_i64(p, len, &v))
			return false;
		put_be(pb, (uint64_t)v, 8);
		return true;
	case OID_BOOL:
		if (len != 1 || (p[0] != 't' && p[0] != 'f'))
			return false;
		pktbuf_put_u8(pb, p[0] == 't');
		return true;
	case OID_TEXT: case OID_VARCHAR: case OID_BPCHAR: case OID_NAME: case OID_CHAR:
		if (len)
			pktbuf_put(pb, p, len);   /* their binary form is their text */
		return true;
	case OID_FLOAT4: case OID_FLOAT8: {
		/* exact: the server printed the shortest text that reads back to the same value
		 * (extra_float_digits 1, the default) */
		char buf[64];
		if (!len || len >= sizeof(buf))
			return false;
		memcpy(buf, p, len);
		buf[len] = '\0';
		char *end;
		if (oid == OID_FLOAT4) {
			float f = strtof(buf, &end);
			uint32_t u;
			memcpy(&u, &f, 4);
			put_be(pb, u, 4);
		} else {
			double f = strtod(buf, &end);
			uint64_t u;
			memcpy(&u, &f, 8);
			put_be(pb, u, 8);
		}
		return *end == '\0';
	}
	case OID_NUMERIC:
		return numeric_binary(p, len, pb);
	case OID_UUID: {
		uint8_t out[16];
		size_t k = 0;
		for (size_t i = 0; i < len; i++) {
			if (p[i] == '-')
				continue;
			char c = p[i];
			int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
				c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
			if (x < 0 || k >= 32)
				return false;
			if (k % 2 == 0)
				out[k / 2] = (uint8_t)(x << 4);
			else
				out[k / 2] |= (uint8_t)x;
			k++;
		}
		if (k != 32)
			return false;
		pktbuf_put(pb, out, 16);
		return true;
	}
	case OID_DATE: case OID_TIMESTAMP: {
		bool date = oid == OID_DATE;
		if (len == 8 && !memcmp(p, "infinity", 8)) {
			put_be(pb, date ? (uint64_t)INT32_MAX : (uint64_t)INT64_MAX, date ? 4 : 8);
			return true;
		}
		if (len == 9 && !memcmp(p, "-infinity", 9)) {
			put_be(pb, date ? (uint64_t)(uint32_t)INT32_MIN : (uint64_t)INT64_MIN, date ? 4 : 8);
			return true;
		}
		int64_t days;
		size_t used;
		if (!parse_date(p, len, &days, &used))
			return false;
		if (date) {
			if (used != len)
				return false;
			put_be(pb, (uint64_t)(int32_t)days, 4);
			return true;
		}
		/* " HH:MM:SS[.ffffff]" */
		const char *q = p + used;
		size_t rest = len - used;
		if (rest < 9 || q[0] != ' ' || q[3] != ':' || q[6] != ':')
			return false;
		for (int k = 1; k <= 8; k++)
			if (k != 3 && k != 6 && (q[k] < '0' || q[k] > '9'))
				return false;
		int hh = (q[1] - '0') * 10 + (q[2] - '0'), mi = (q[4] - '0') * 10 + (q[5] - '0');
		int ss = (q[7] - '0') * 10 + (q[8] - '0');
		int64_t us = 0;
		size_t i = 9;
		if (i < rest && q[i] == '.') {
			int digits = 0;
			for (i++; i < rest && q[i] >= '0' && q[i] <= '9'; i++, digits++)
				if (digits < 6)
					us = us * 10 + (q[i] - '0');
			if (digits == 0 || digits > 6)
				return false;
			for (; digits < 6; digits++)
				us *= 10;
		}
		if (i != rest || hh > 24 || mi > 59 || ss > 60)
			return false;
		int64_t t = ((days * 24 + hh) * 60 + mi) * 60 + ss;
		put_be(pb, (uint64_t)(t * 1000000 + us), 8);
		return true;
	}
	default:
		return false;
	}
}

void merge_put_desc(const struct merge_set *m, const uint8_t *body, uint32_t len, struct pktbuf *pb)
{
	pktbuf_begin(pb, 'T');
	pktbuf_put_u16(pb, m->nvis);
	for (uint16_t i = 0; i < m->nvis; i++) {
		const uint8_t *fx;
		const uint8_t *name = desc_field(body, len, i, &fx);
		assert(name);   /* merge_init read every field */
		pktbuf_put(pb, name, (size_t)(fx - name));
		if (m->col[i].agg == MP_AVG_SUM) {
			/* avg() is numeric for every type pgmux merges it for */
			pktbuf_put(pb, fx, 6);
			pktbuf_put_u32(pb, OID_NUMERIC);
			pktbuf_put_u16(pb, 0xffff);
			pktbuf_put_u32(pb, 0xffffffffu);
		} else {
			pktbuf_put(pb, fx, 16);
		}
		pktbuf_put_u16(pb, m->col[i].binary ? 1 : 0);
	}
	pktbuf_end(pb);
}

void merge_put_row(const struct merge_set *m, size_t i, struct pktbuf *pb)
{
	assert(i >= m->first && i < m->end);
	const struct merge_val *r = m->rows[i];
	pktbuf_begin(pb, 'D');
	pktbuf_put_u16(pb, m->nvis);
	for (uint16_t c = 0; c < m->nvis; c++) {
		if (r[c].len >= 0 && m->col[c].binary) {
			/* the length goes in front once the value is written */
			uint32_t at = pb->len;
			pktbuf_put_u32(pb, 0);
			bool ok = merge_text_to_binary(m->col[c].oid, r[c].p, (size_t)r[c].len, pb);
			assert(ok);   /* merge_finish converted every value once */
			(void)ok;
			if (!pb->failed) {
				uint32_t n = pb->len - at - 4;
				pb->data[at] = (uint8_t)(n >> 24);
				pb->data[at + 1] = (uint8_t)(n >> 16);
				pb->data[at + 2] = (uint8_t)(n >> 8);
				pb->data[at + 3] = (uint8_t)n;
			}
			continue;
		}
		pktbuf_put_u32(pb, (uint32_t)r[c].len);
		if (r[c].len > 0)
			pktbuf_put(pb, r[c].p, (size_t)r[c].len);
	}
	pktbuf_end(pb);
}

void merge_free(struct merge_set *m)
{
	while (m->chunks) {
		struct merge_chunk *n = m->chunks->next;
		free(m->chunks);
		m->chunks = n;
	}
	free(m->rows);
	m->rows = NULL;
	m->nrows = m->cap = 0;
}
