/* verdict.c: per-worker caches of classifier verdicts: exact Parse texts, and simple-protocol SELECTs up to their digits. */
#include "verdict.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__SSE2__) && defined(__x86_64__)
#include <emmintrin.h>
#endif

#define SLOTS 256

struct slot {
	uint64_t hash;
	uint32_t len;               /* 0: empty */
	char *text;                 /* exact: the text; shape: folded, zero-padded to 16 bytes */
	struct sqlscan_result r;
};

struct verdict_cache {
	bool shapes;                /* off when a write_functions name has a digit */
	struct slot exact[SLOTS];
	struct slot shape[SLOTS];
};

static inline uint64_t mix(uint64_t h, uint64_t v)
{
	h = (h ^ v) * 0xff51afd7ed558ccdull;
	return h ^ (h >> 32);
}

static inline uint64_t finish(uint64_t h)
{
	h *= 0xc4ceb9fe1a85ec53ull;
	return h ^ (h >> 29);
}

static uint64_t exact_hash(const char *s, size_t n)
{
	uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, s + i, 8);
		h = mix(h, v);
	}
	uint64_t t = 0;
	memcpy(&t, s + i, n - i);
	return finish(h ^ t);
}

/* ---- shapes: texts with their digits folded to '0' --------------------------------------- */

void verdict_fold_digits(const char *sql, size_t len, char *out)
{
	for (size_t i = 0; i < len; i++)
		out[i] = (unsigned)(sql[i] - '0') < 10 ? '0' : sql[i];
}

#if defined(__SSE2__) && defined(__x86_64__)
/* Sixteen bytes at a time: a digit d becomes d - (d - '0'). */
static inline __m128i fold16(__m128i v)
{
	const __m128i d = _mm_sub_epi8(v, _mm_set1_epi8('0'));
	const __m128i is_digit = _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d);
	return _mm_sub_epi8(v, _mm_and_si128(d, is_digit));
}

static inline __m128i load16(const void *p)
{
	return _mm_loadu_si128((const __m128i *)p);
}

/* The folded block that ends the text when it has 16 bytes or more (it overlaps bytes already
 * seen, which is harmless for both the hash and the compare); a zero-padded copy otherwise. */
static inline __m128i tail16(const char *s, size_t n, size_t i)
{
	if (n >= 16)
		return fold16(load16(s + n - 16));
	unsigned char b[16] = { 0 };
	memcpy(b, s + i, n - i);
	return fold16(load16(b));
}

static inline uint64_t mix16(uint64_t h, __m128i v)
{
	h = mix(h, (uint64_t)_mm_cvtsi128_si64(v));
	return mix(h, (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(v, v)));
}

static uint64_t shape_hash(const char *s, size_t n)
{
	uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
	size_t i = 0;
	for (; i + 16 <= n; i += 16)
		h = mix16(h, fold16(load16(s + i)));
	if (i < n)
		h = mix16(h, tail16(s, n, i));
	return finish(h);
}

/* Whether s[0..n) folds to the stored shape (folded, zero-padded to a multiple of 16). */
static bool shape_equal(const char *stored, const char *s, size_t n)
{
	size_t i = 0;
	for (; i + 16 <= n; i += 16)
		if (_mm_movemask_epi8(_mm_cmpeq_epi8(fold16(load16(s + i)), load16(stored + i))) != 0xffff)
			return false;
	if (i < n && _mm_movemask_epi8(_mm_cmpeq_epi8(tail16(s, n, i),
						       load16(stored + (n >= 16 ? n - 16 : 0)))) != 0xffff)
		return false;
	return true;
}
#else
static uint64_t shape_hash(const char *s, size_t n)
{
	char b[VERDICT_TEXT_MAX];
	verdict_fold_digits(s, n, b);
	return exact_hash(b, n);
}

static bool shape_equal(const char *stored, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (stored[i] != ((unsigned)(s[i] - '0') < 10 ? '0' : s[i]))
			return false;
	return true;
}
#endif

/* The shape rules (verdict.h): one SELECT, no hint or SET, nothing in the text that a digit's
 * value could change the meaning of. */
static bool shape_storable(const char *sql, size_t len, const struct sqlscan_result *r)
{
	if (r->n_statements != 1 || r->lex_error || r->set || r->hint_role || r->hint_shard >= 0 ||
	    r->has_hint_user_id)
		return false;
	size_t i = 0;
	while (i < len && (sql[i] == ' ' || (unsigned)(sql[i] - '\t') <= '\r' - '\t'))
		i++;
	if (len - i < 6 || strncasecmp(sql + i, "select", 6) != 0)
		return false;
	if (len - i > 6) {
		unsigned char c = (unsigned char)sql[i + 6];
		if (c >= 0x80 || c == '_' || (unsigned)((c | 0x20) - 'a') < 26 || (unsigned)(c - '0') < 10)
			return false;
	}
	return !memchr(sql, '-', len) && !memchr(sql, '/', len) && !memchr(sql, '$', len);
}

/* Takes slot s for a text of len bytes: its buffer (len rounded up to 16 bytes, which the
 * shape compare reads whole), or NULL on no memory (the slot then stays as it was). */
static char *slot_take(struct slot *s, uint64_t h, size_t len, const struct sqlscan_result *r)
{
	size_t cap = (len + 15) / 16 * 16;
	char *buf = s->len && (s->len + 15) / 16 * 16 == cap ? s->text : realloc(s->text, cap);
	if (!buf)
		return NULL;
	memset(buf + cap - 16, 0, 16);
	s->text = buf;
	s->len = (uint32_t)len;
	s->hash = h;
	s->r = *r;
	return buf;
}

/* A memo holds the slot a client used last, plus one; MEMO_EXACT marks the exact cache's. */
#define MEMO_EXACT 0x8000u

void verdict_lookup(struct verdict_cache **vc, uint16_t *memo, bool simple, const char *sql,
		    size_t len, const struct sqlscan_funcs *wf, struct sqlscan_result *r)
{
	struct verdict_cache *c = *vc;
	if (len == 0 || len > VERDICT_TEXT_MAX) {
		sqlscan_classify(sql, len, wf, r);
		return;
	}
	if (!c) {
		if (!(c = *vc = calloc(1, sizeof(*c)))) {
			sqlscan_classify(sql, len, wf, r);
			return;
		}
		c->shapes = !sqlscan_funcs_digits(wf);
	}
	/* A client mostly sends what it sent last time: that slot is tried before hashing. */
	unsigned m = *memo;
	struct slot *s;
	uint64_t h;
	char *buf;
	if (simple) {
		if (!c->shapes) {
			sqlscan_classify(sql, len, wf, r);
			return;
		}
		s = m && !(m & MEMO_EXACT) ? &c->shape[m - 1] : NULL;
		if (s && s->len == len && shape_equal(s->text, sql, len)) {
			*r = s->r;
			return;
		}
		h = shape_hash(sql, len);
		s = &c->shape[h & (SLOTS - 1)];
		*memo = (uint16_t)((h & (SLOTS - 1)) + 1);
		if (s->len == len && s->hash == h && shape_equal(s->text, sql, len)) {
			*r = s->r;
			return;
		}
		sqlscan_classify(sql, len, wf, r);
		if (shape_storable(sql, len, r) && (buf = slot_take(s, h, len, r)))
			verdict_fold_digits(sql, len, buf);
		return;
	}
	s = m & MEMO_EXACT ? &c->exact[(m & ~MEMO_EXACT) - 1] : NULL;
	if (s && s->len == len && memcmp(s->text, sql, len) == 0) {
		*r = s->r;
		return;
	}
	h = exact_hash(sql, len);
	s = &c->exact[h & (SLOTS - 1)];
	*memo = (uint16_t)(MEMO_EXACT | ((h & (SLOTS - 1)) + 1));
	if (s->len == len && s->hash == h && memcmp(s->text, sql, len) == 0) {
		*r = s->r;
		return;
	}
	sqlscan_classify(sql, len, wf, r);
	if ((buf = slot_take(s, h, len, r)))
		memcpy(buf, sql, len);
}

void verdict_classify(struct verdict_cache **vc, uint16_t *last, const char *sql, size_t len,
		      const struct sqlscan_funcs *wf, struct sqlscan_result *r)
{
	uint16_t none = 0;
	verdict_lookup(vc, last ? last : &none, last != NULL, sql, len, wf, r);
}

void verdict_free(struct verdict_cache *vc)
{
	if (!vc)
		return;
	for (int i = 0; i < SLOTS; i++) {
		free(vc->exact[i].text);
		free(vc->shape[i].text);
	}
	free(vc);
}
