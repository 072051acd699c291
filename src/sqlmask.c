/* sqlmask.c: a literal-exact SQL lexer: where each literal starts and ends, as PostgreSQL's scan.l decides it. */
#include "sqlmask.h"

#include <string.h>

/* PostgreSQL's {space}: [ \t\n\r\f] (a vertical tab is not white space in PG 15). */
static inline bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

static inline bool ident_start(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static inline bool ident_cont(unsigned char c)
{
	return ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

static inline bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* FNV-1a over the shape, fed in pieces. */
static inline uint64_t mix(uint64_t h, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
	return h;
}

/* After a closing quote: PostgreSQL continues a string literal with the next quote when only
 * white space with a newline (and -- comments) lies between.  True when that happens. */
static bool continues(const char *s, size_t i, size_t n)
{
	bool newline = false;
	while (i < n) {
		char c = s[i];
		if (c == '\n' || c == '\r') {
			newline = true;
			i++;
		} else if (is_space(c)) {
			i++;
		} else if (c == '-' && i + 1 < n && s[i + 1] == '-') {
			while (i < n && s[i] != '\n' && s[i] != '\r')
				i++;
		} else {
			return newline && c == '\'';
		}
	}
	return false;
}

/* End of a quoted body starting after its opening quote at i: '' doubles a quote; with
 * backslash escapes, a backslash takes the next byte.  The index after the closing quote, or
 * 0 when unterminated. */
static size_t quoted_end(const char *s, size_t i, size_t n, bool backslash)
{
	while (i < n) {
		char c = s[i];
		if (backslash && c == '\\') {
			i += 2;
			continue;
		}
		if (c == '\'') {
			if (i + 1 < n && s[i + 1] == '\'') {
				i += 2;
				continue;
			}
			return i + 1;
		}
		i++;
	}
	return 0;
}

/* A bit or hex string body: no escapes at all. */
static size_t plain_end(const char *s, size_t i, size_t n)
{
	while (i < n && s[i] != '\'')
		i++;
	return i < n ? i + 1 : 0;
}

/* Length of a dollar-quote delimiter "$tag$" at i, or 0 when i does not start one. */
static size_t dollar_tag(const char *s, size_t i, size_t n)
{
	size_t j = i + 1;
	if (j < n && s[j] == '$')
		return 2;
	if (j >= n || !ident_start((unsigned char)s[j]))
		return 0;
	while (j < n && ident_cont((unsigned char)s[j]) && s[j] != '$')
		j++;
	return j < n && s[j] == '$' ? j - i + 1 : 0;
}

int sqlmask_scan(const char *sql, size_t len, struct sqlmask_lit *lits, int max, uint64_t *hash)
{
	const char *nul = memchr(sql, 0, len);
	size_t n = nul ? (size_t)(nul - sql) : len;
	uint64_t h = 1469598103934665603ull;
	size_t seg = 0;   /* start of the bytes not yet fed to the hash */
	int count = 0;
	size_t i = 0;
	while (i < n) {
		char c = sql[i];
		size_t start = i, end = 0;
		uint8_t cls = 0, prefix = 0;
		if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
			while (i < n && sql[i] != '\n' && sql[i] != '\r')
				i++;
			continue;
		}
		if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
			int depth = 1;
			i += 2;
			while (i < n && depth) {
				if (sql[i] == '/' && i + 1 < n && sql[i + 1] == '*') {
					depth++;
					i += 2;
				} else if (sql[i] == '*' && i + 1 < n && sql[i + 1] == '/') {
					depth--;
					i += 2;
				} else {
					i++;
				}
			}
			if (depth)
				return -1;
			continue;
		}
		if (c == '"') {
			/* a quoted identifier: "" doubles a quote; part of the shape */
			size_t j = i + 1;
			for (;;) {
				while (j < n && sql[j] != '"')
					j++;
				if (j >= n)
					return -1;
				if (j + 1 < n && sql[j + 1] == '"') {
					j += 2;
					continue;
				}
				break;
			}
			i = j + 1;
			continue;
		}
		if (c == '\'') {
			end = quoted_end(sql, i + 1, n, false);
			cls = SQLMASK_STR;
		} else if (ident_start((unsigned char)c)) {
			char u = (char)(c & ~0x20);
			bool quote_next = i + 1 < n && sql[i + 1] == '\'';
			if (quote_next && u == 'E') {
				end = quoted_end(sql, i + 2, n, true);
				cls = SQLMASK_ESTR;
				prefix = 1;
			} else if (quote_next && u == 'N') {
				end = quoted_end(sql, i + 2, n, false);
				cls = SQLMASK_STR;
				prefix = 1;
			} else if (quote_next && (u == 'B' || u == 'X')) {
				end = plain_end(sql, i + 2, n);
				cls = SQLMASK_BITS;
				prefix = 1;
			} else if (u == 'U' && i + 2 < n && sql[i + 1] == '&' &&
				   (sql[i + 2] == '\'' || sql[i + 2] == '"')) {
				return -1;   /* Unicode escapes and UESCAPE: not followed here */
			} else {
				while (i < n && ident_cont((unsigned char)sql[i]))
					i++;
				continue;
			}
		} else if (c == '$') {
			size_t t = dollar_tag(sql, i, n);
			if (!t) {
				/* $n parameter, or a lone $: part of the shape */
				i++;
				while (i < n && is_digit(sql[i]))
					i++;
				continue;
			}
			const char *close = NULL;
			for (size_t j = i + t; j + t <= n; j++) {
				if (sql[j] == '$' && memcmp(sql + j, sql + i, t) == 0) {
					close = sql + j;
					break;
				}
			}
			if (!close)
				return -1;
			end = (size_t)(close - sql) + t;
			cls = SQLMASK_DOLLAR;
			prefix = (uint8_t)(t > 255 ? 255 : t);
			if (t > 255)
				return -1;
		} else if (is_digit(c) || (c == '.' && i + 1 < n && is_digit(sql[i + 1]))) {
			size_t j = i;
			bool frac = false;
			while (j < n && is_digit(sql[j]))
				j++;
			/* "1..10": the integer ends before the first point */
			if (j < n && sql[j] == '.' && !(j + 1 < n && sql[j + 1] == '.')) {
				frac = true;
				j++;
				while (j < n && is_digit(sql[j]))
					j++;
			}
			if (j < n && (sql[j] == 'e' || sql[j] == 'E')) {
				size_t k = j + 1;
				if (k < n && (sql[k] == '+' || sql[k] == '-'))
					k++;
				if (k < n && is_digit(sql[k])) {
					frac = true;
					j = k;
					while (j < n && is_digit(sql[j]))
						j++;
				}
			}
			end = j;
			cls = frac ? SQLMASK_NUM : SQLMASK_INT;
		} else {
			i++;
			continue;
		}
		if (!end)
			return -1;   /* unterminated */
		if ((cls == SQLMASK_STR || cls == SQLMASK_ESTR || cls == SQLMASK_BITS) &&
		    continues(sql, end, n))
			return -1;
		if (count >= max)
			return -1;
		lits[count].off = (uint32_t)start;
		lits[count].len = (uint32_t)(end - start);
		lits[count].cls = cls;
		lits[count].prefix = prefix;
		count++;
		h = mix(h, sql + seg, start - seg);
		char mark[2] = { 0, (char)cls };
		h = mix(h, mark, 2);
		seg = end;
		i = end;
	}
	h = mix(h, sql + seg, n - seg);
	*hash = h;
	return count;
}

bool sqlmask_same(const char *a, const struct sqlmask_lit *la, uint32_t alen, const char *b,
		  const struct sqlmask_lit *lb, uint32_t blen, int n)
{
	uint32_t pa = 0, pb = 0;
	for (int i = 0; i < n; i++) {
		uint32_t sa = la[i].off - pa, sb = lb[i].off - pb;
		if (sa != sb || la[i].cls != lb[i].cls || memcmp(a + pa, b + pb, sa) != 0)
			return false;
		pa = la[i].off + la[i].len;
		pb = lb[i].off + lb[i].len;
	}
	return alen - pa == blen - pb && memcmp(a + pa, b + pb, alen - pa) == 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)(c | 0x20);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int sqlmask_string(const char *sql, const struct sqlmask_lit *lit, char *out, size_t cap)
{
	const char *p = sql + lit->off, *end = sql + lit->off + lit->len;
	size_t o = 0;
	if (lit->cls == SQLMASK_DOLLAR) {
		size_t body = lit->len - 2u * lit->prefix;
		if (body > cap)
			return -1;
		memcpy(out, p + lit->prefix, body);
		return (int)body;
	}
	if (lit->cls != SQLMASK_STR && lit->cls != SQLMASK_ESTR)
		return -1;
	bool esc = lit->cls == SQLMASK_ESTR;
	p += lit->prefix + 1;   /* prefix letter, opening quote */
	end -= 1;               /* closing quote */
	while (p < end) {
		unsigned char ch = (unsigned char)*p;
		if (ch == '\'') {
			p += 2;   /* '' inside the body */
		} else if (esc && ch == '\\') {
			p++;
			char e = *p++;
			switch (e) {
			case 'b': ch = '\b'; break;
			case 'f': ch = '\f'; break;
			case 'n': ch = '\n'; break;
			case 'r': ch = '\r'; break;
			case 't': ch = '\t'; break;
			case 'x': {
				int v = hexval(p < end ? *p : 0);
				if (v < 0) {
					ch = 'x';   /* "\x" without a hex digit is just x */
					break;
				}
				p++;
				int v2 = p < end ? hexval(*p) : -1;
				if (v2 >= 0) {
					v = v * 16 + v2;
					p++;
				}
				if (v == 0 || v > 0x7f)
					return -1;   /* a NUL is refused by PostgreSQL; high bytes need the encoding */
				ch = (unsigned char)v;
				break;
			}
			case 'u': case 'U':
				return -1;
			default:
				if (e >= '0' && e <= '7') {
					int v = e - '0';
					for (int k = 0; k < 2 && p < end && *p >= '0' && *p <= '7'; k++)
						v = v * 8 + (*p++ - '0');
					if (v == 0 || v > 0x7f)
						return -1;
					ch = (unsigned char)v;
				} else {
					ch = (unsigned char)e;
				}
				break;
			}
			if (o >= cap)
				return -1;
			out[o++] = (char)ch;
			continue;
		} else {
			p++;
		}
		if (o >= cap)
			return -1;
		out[o++] = (char)ch;
	}
	return (int)o;
}
