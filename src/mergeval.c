/* mergeval.c: one column value of a merged read, as PostgreSQL reads it: its order, exact decimal sums and avg, its binary form (pure). */
#include "mergeval.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEC_MAX 2000   /* digits of a decimal pgmux adds: beyond, it refuses */

enum merge_kind mergeval_kind(uint32_t oid)
{
	switch (oid) {
	case MV_OID_INT2: case MV_OID_INT4: case MV_OID_INT8: case MV_OID_OID: return MK_INT;
	case MV_OID_FLOAT4: case MV_OID_FLOAT8: return MK_FLOAT;
	case MV_OID_NUMERIC: return MK_NUMERIC;
	case MV_OID_BOOL: return MK_BOOL;
	case MV_OID_DATE: case MV_OID_TIMESTAMP: return MK_DATETIME;
	case MV_OID_UUID: case MV_OID_NAME: return MK_BYTES;
	/* "char" is not here: a byte of 0x80 and above is printed as an octal escape (\302),
	 * whose text sorts before the letters that the byte itself sorts after. */
	case MV_OID_TEXT: case MV_OID_VARCHAR: return MK_TEXT;
	case MV_OID_BPCHAR: return MK_BPCHAR;
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

bool mergeval_dec_add(const char *a, size_t alen, const char *b, size_t blen, char *out, size_t cap)
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

bool mergeval_dec_avg(const char *sum, size_t slen, const char *count, size_t clen, char *out, size_t cap)
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

int mergeval_cmp(enum merge_kind k, const struct merge_val *a, const struct merge_val *b, bool *bad)
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

bool mergeval_binary_ok(uint32_t oid)
{
	switch (oid) {
	case MV_OID_INT2: case MV_OID_INT4: case MV_OID_INT8: case MV_OID_OID: case MV_OID_BOOL: case MV_OID_TEXT:
	case MV_OID_VARCHAR: case MV_OID_BPCHAR: case MV_OID_NAME: case MV_OID_CHAR: case MV_OID_FLOAT4:
	case MV_OID_FLOAT8: case MV_OID_NUMERIC: case MV_OID_UUID: case MV_OID_DATE: case MV_OID_TIMESTAMP:
		return true;
	default:
		return false;
	}
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

bool mergeval_to_binary(uint32_t oid, const char *p, size_t len, struct pktbuf *pb)
{
	int64_t v;
	switch (oid) {
	case MV_OID_INT2:
		if (!parse_i64(p, len, &v) || v < INT16_MIN || v > INT16_MAX)
			return false;
		put_be(pb, (uint64_t)v, 2);
		return true;
	case MV_OID_INT4:
		if (!parse_i64(p, len, &v) || v < INT32_MIN || v > INT32_MAX)
			return false;
		put_be(pb, (uint64_t)v, 4);
		return true;
	case MV_OID_OID:
		if (!parse_i64(p, len, &v) || v < 0 || v > UINT32_MAX)
			return false;
		put_be(pb, (uint64_t)v, 4);
		return true;
	case MV_OID_INT8:
		if (!parse_i64(p, len, &v))
			return false;
		put_be(pb, (uint64_t)v, 8);
		return true;
	case MV_OID_BOOL:
		if (len != 1 || (p[0] != 't' && p[0] != 'f'))
			return false;
		pktbuf_put_u8(pb, p[0] == 't');
		return true;
	case MV_OID_TEXT: case MV_OID_VARCHAR: case MV_OID_BPCHAR: case MV_OID_NAME: case MV_OID_CHAR:
		if (len)
			pktbuf_put(pb, p, len);   /* their binary form is their text */
		return true;
	case MV_OID_FLOAT4: case MV_OID_FLOAT8: {
		/* exact: the server printed the shortest text that reads back to the same value
		 * (extra_float_digits 1, the default) */
		char buf[64];
		if (!len || len >= sizeof(buf))
			return false;
		memcpy(buf, p, len);
		buf[len] = '\0';
		char *end;
		if (oid == MV_OID_FLOAT4) {
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
	case MV_OID_NUMERIC:
		return numeric_binary(p, len, pb);
	case MV_OID_UUID: {
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
	case MV_OID_DATE: case MV_OID_TIMESTAMP: {
		bool date = oid == MV_OID_DATE;
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
			if (days < INT32_MIN || days > INT32_MAX)
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
		/* years past PostgreSQL's range (294276 AD) would overflow: never sent */
		if (days > 106751991 || days < -106751991)
			return false;
		int64_t t = ((days * 24 + hh) * 60 + mi) * 60 + ss, out;
		if (__builtin_mul_overflow(t, 1000000, &out) || __builtin_add_overflow(out, us, &out))
			return false;
		put_be(pb, (uint64_t)out, 8);
		return true;
	}
	default:
		return false;
	}
}
