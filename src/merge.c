/* merge.c: merges the shards' rows of a keyless read as PostgreSQL would have answered it on one database (pure). */
#include "merge.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A block of bytes the kept values point into; freed together. */
struct merge_chunk {
	struct merge_chunk *next;
	char data[];
};
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
		/* an avg is ordered as the numeric it becomes, not as its sum's type */
		c->kind = (uint8_t)mergeval_kind(c->agg == MP_AVG_SUM ? MV_OID_NUMERIC : oid);
		c->oid = c->agg == MP_AVG_SUM ? MV_OID_NUMERIC : oid;
		char tn[32];
		snprintf(tn, sizeof(tn), "%u", oid);
		switch (c->agg) {
		case MP_COUNT: case MP_AVG_COUNT:
			if (oid != MV_OID_INT8)
				return fail(m, "0A000", "pgmux cannot merge a count of type OID %s", tn);
			break;
		case MP_SUM: case MP_AVG_SUM:
			if (oid != MV_OID_INT8 && oid != MV_OID_NUMERIC)
				return fail(m, "0A000", "pgmux cannot merge sum() or avg() of this type "
					    "(result type OID %s): only integer and numeric columns are "
					    "added exactly (a float sum depends on the order of its terms)", tn);
			c->int8_sum = oid == MV_OID_INT8 && c->agg == MP_SUM;
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

static bool text_kind(const struct merge_col *c)
{
	return c->kind == MK_TEXT || c->kind == MK_BPCHAR || c->oid == MV_OID_NAME;
}

bool merge_orders_text(const struct merge_set *m)
{
	for (uint16_t i = 0; i < m->nkeys; i++)
		if (text_kind(&m->col[m->key[i].col]))
			return true;
	for (uint16_t i = 0; i < m->ncols; i++)
		if ((m->col[i].agg == MP_MIN || m->col[i].agg == MP_MAX) && text_kind(&m->col[i]))
			return true;
	return false;
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
	int r = mergeval_cmp((enum merge_kind)x->m->col[c].kind, a, b, &x->bad);
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
			bool ok = mergeval_dec_add(a[c].p, (size_t)a[c].len, b[c].p, (size_t)b[c].len, out, cap);
			ok = ok && set_text(m, &a[c], out);
			free(out);
			if (!ok)
				return m->err[0] ? false : fail(m, "0A000", "%s", "pgmux cannot add these sums exactly");
			break;
		}
		case MP_MIN: case MP_MAX: {
			int r = mergeval_cmp((enum merge_kind)col->kind, &b[c], &a[c], &x->bad);
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
			bool ok = mergeval_dec_avg(r[c].p, (size_t)r[c].len, cnt->p, (size_t)cnt->len, out, cap);
			ok = ok && set_text(m, &r[c], out);
			free(out);
			if (!ok)
				return m->err[0] ? false : fail(m, "0A000", "%s", "pgmux cannot divide this avg exactly");
		} else if (col->int8_sum && r[c].len >= 0) {
			struct merge_val lo = { "-9223372036854775808", 20 }, hi = { "9223372036854775807", 19 };
			bool bad = false;
			if (mergeval_cmp(MK_NUMERIC, &r[c], &lo, &bad) < 0 || mergeval_cmp(MK_NUMERIC, &r[c], &hi, &bad) > 0)
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
			if (!mergeval_to_binary(m->col[c].oid, v->p, (size_t)v->len, &scratch)) {
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
		bool can = !f || mergeval_binary_ok(m->col[c].oid);
		if (!can)
			return fail(m, "0A000", "pgmux cannot send type OID %u in binary for a merged read "
				    "(ask for text results)", m->col[c].oid);
	}
	return true;
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
			pktbuf_put_u32(pb, MV_OID_NUMERIC);
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
			bool ok = mergeval_to_binary(m->col[c].oid, r[c].p, (size_t)r[c].len, pb);
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
