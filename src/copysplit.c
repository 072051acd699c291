/* copysplit.c: reads COPY FROM STDIN data (text, CSV, binary) one row at a time: where each row ends and its shard key's value (pure). */
#include "copysplit.h"

#include <assert.h>
#include <string.h>

const uint8_t copysplit_bin_trailer[2] = { 0xff, 0xff };

/* PostgreSQL's binary COPY signature: "PGCOPY\n\377\r\n\0". */
static const uint8_t bin_sig[11] = { 'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0 };

/* A binary header extension longer than this is refused (PostgreSQL defines none). */
#define BIN_EXT_MAX (1u << 20)

void copysplit_init(struct copysplit *cs)
{
	cs->started = false;
	cs->ended = false;
	cs->eol_len = 0;
}

static uint32_t get32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A text-format field's value as PostgreSQL's CopyReadAttributesText decodes it:
 * \b \f \n \r \t \v, octal \ooo, hex \xhh, any other \c as c.  false when too long. */
static bool text_unescape(const uint8_t *s, size_t n, struct copysplit_key *k)
{
	uint32_t o = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];
		if (c == '\\' && i + 1 < n) {
			c = s[++i];
			if (c >= '0' && c <= '7') {
				int v = c - '0';
				for (int d = 0; d < 2 && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '7'; d++)
					v = v * 8 + (s[++i] - '0');
				c = (uint8_t)(v & 0xff);
			} else if (c == 'x' && i + 1 < n && hexval(s[i + 1]) >= 0) {
				int v = hexval(s[++i]);
				if (i + 1 < n && hexval(s[i + 1]) >= 0)
					v = v * 16 + hexval(s[++i]);
				c = (uint8_t)v;
			} else {
				switch (c) {
				case 'b': c = '\b'; break;
				case 'f': c = '\f'; break;
				case 'n': c = '\n'; break;
				case 'r': c = '\r'; break;
				case 't': c = '\t'; break;
				case 'v': c = '\v'; break;
				default: break;
				}
			}
		}
		if (o == COPYSPLIT_KEY_MAX)
			return false;
		k->val[o++] = c;
	}
	k->len = o;
	return true;
}

/* The line ending at p[i] ('\n', '\r' or "\r\n"): its length, 0 when a '\r' may yet be
 * followed by '\n' in bytes not here. */
static size_t eol_at(const uint8_t *p, size_t n, size_t i, bool final)
{
	if (p[i] == '\n')
		return 1;
	if (i + 1 < n)
		return p[i + 1] == '\n' ? 2 : 1;
	return final ? 1 : 0;
}

/* "\." alone on a line: the end of the data (text and CSV). */
static int end_marker(const uint8_t *p, size_t n, bool final, size_t *used)
{
	if (n < 2 || p[0] != '\\' || p[1] != '.')
		return -1;
	if (n == 2)
		return final ? (*used = 2, COPYSPLIT_END) : COPYSPLIT_MORE;
	if (p[2] != '\n' && p[2] != '\r')
		return -1;
	size_t e = eol_at(p, n, 2, final);
	if (!e)
		return COPYSPLIT_MORE;
	*used = 2 + e;
	return COPYSPLIT_END;
}

static void note_eol(struct copysplit *cs, const uint8_t *p, size_t e)
{
	if (!cs->eol_len && e) {
		memcpy(cs->eol, p, e);
		cs->eol_len = (uint8_t)e;
	}
}

/* One text-format line.  want_key: read field key_col into k. */
static int text_row(struct copysplit *cs, const uint8_t *p, size_t n, bool final, size_t *used,
		    struct copysplit_key *k, bool want_key, const char **why)
{
	size_t i = 0, fs = 0;
	int field = 0;
	bool got_key = false;
	for (;;) {
		bool at_end = i == n;
		if (at_end && !final)
			return COPYSPLIT_MORE;
		uint8_t c = at_end ? '\n' : p[i];
		if (!at_end && c == '\\') {
			if (i + 1 >= n) {
				if (!final)
					return COPYSPLIT_MORE;
				*why = "COPY data ends with a backslash";
				return COPYSPLIT_BAD;
			}
			if (p[i + 1] == '.') {
				*why = "an end-of-data marker (\\.) inside a line of COPY data";
				return COPYSPLIT_BAD;
			}
			i += 2;
			continue;
		}
		if (at_end || c == (uint8_t)cs->delim || c == '\n' || c == '\r') {
			if (want_key && field == cs->key_col) {
				got_key = true;
				if ((size_t)(i - fs) == cs->null_len && !memcmp(p + fs, cs->null_str, cs->null_len)) {
					k->null = true;
					k->len = 0;
				} else {
					k->null = false;
					if (!text_unescape(p + fs, i - fs, k)) {
						*why = "a shard key value longer than 4096 bytes in COPY data";
						return COPYSPLIT_BAD;
					}
				}
				k->fmt = 0;
			}
			field++;
			if (!at_end && c == (uint8_t)cs->delim) {
				fs = ++i;
				continue;
			}
			size_t e = 0;
			if (!at_end && !(e = eol_at(p, n, i, final)))
				return COPYSPLIT_MORE;
			note_eol(cs, p + i, e);
			*used = i + e;
			break;
		}
		i++;
	}
	if (want_key && !got_key) {
		*why = "a row of COPY data without the shard key's column";
		return COPYSPLIT_BAD;
	}
	return COPYSPLIT_ROW;
}

/* One CSV line, quotes (and newlines inside them) as PostgreSQL's CSV reader takes them. */
/* One byte of a CSV key field; past COPYSPLIT_KEY_MAX the field only counts as too long. */
static void key_put(struct copysplit_key *k, uint32_t *o, uint8_t c, bool *too_long)
{
	if (*o == COPYSPLIT_KEY_MAX)
		*too_long = true;
	else
		k->val[(*o)++] = c;
}

static int csv_row(struct copysplit *cs, const uint8_t *p, size_t n, bool final, size_t *used,
		   struct copysplit_key *k, bool want_key, const char **why)
{
	const uint8_t q = (uint8_t)cs->quote, esc = (uint8_t)cs->escape, d = (uint8_t)cs->delim;
	size_t i = 0, fs = 0;
	int field = 0;
	bool got_key = false, in_quote = false, saw_quote = false;
	uint32_t o = 0;
	bool too_long = false;
	for (;;) {
		bool at_end = i == n;
		if (at_end && (!final || in_quote)) {
			if (!final)
				return COPYSPLIT_MORE;
			*why = "CSV data ends inside a quoted field";
			return COPYSPLIT_BAD;
		}
		uint8_t c = at_end ? '\n' : p[i];
		bool keyf = want_key && field == cs->key_col;
		if (in_quote) {
			if (c == esc && esc != q && i + 1 < n && p[i + 1] == q) {
				c = q;
				i++;
			} else if (c == esc && i + 1 >= n && !final) {
				return COPYSPLIT_MORE;   /* an escape, or a doubled quote, may follow */
			} else if (c == q && esc == q && i + 1 < n && p[i + 1] == q) {
				i++;   /* "" inside quotes: one quote */
			} else if (c == q) {
				in_quote = false;
				i++;
				continue;
			}
			if (keyf)
				key_put(k, &o, c, &too_long);
			i++;
			continue;
		}
		if (at_end || c == d || c == '\n' || c == '\r') {
			if (keyf) {
				got_key = true;
				k->fmt = 0;
				k->null = !saw_quote && (size_t)(i - fs) == cs->null_len &&
					  !memcmp(p + fs, cs->null_str, cs->null_len);
				k->len = k->null ? 0 : o;
				if (too_long) {
					*why = "a shard key value longer than 4096 bytes in COPY data";
					return COPYSPLIT_BAD;
				}
			}
			field++;
			o = 0;
			saw_quote = false;
			if (!at_end && c == d) {
				fs = ++i;
				continue;
			}
			size_t e = 0;
			if (!at_end && !(e = eol_at(p, n, i, final)))
				return COPYSPLIT_MORE;
			note_eol(cs, p + i, e);
			*used = i + e;
			break;
		}
		if (c == q) {
			in_quote = saw_quote = true;
			i++;
			continue;
		}
		if (keyf)
			key_put(k, &o, c, &too_long);
		i++;
	}
	if (want_key && !got_key) {
		*why = "a row of COPY data without the shard key's column";
		return COPYSPLIT_BAD;
	}
	return COPYSPLIT_ROW;
}

static int bin_next(struct copysplit *cs, const uint8_t *p, size_t n, bool final, size_t *used,
		    struct copysplit_key *k, const char **why)
{
	if (!cs->started) {
		if (n < 19)
			goto more;
		if (memcmp(p, bin_sig, sizeof(bin_sig)) != 0) {
			*why = "binary COPY data without PostgreSQL's signature";
			return COPYSPLIT_BAD;
		}
		uint32_t flags = get32(p + 11), ext = get32(p + 15);
		if (flags & (1u << 16)) {
			*why = "binary COPY data with OIDs";
			return COPYSPLIT_BAD;
		}
		if (ext > BIN_EXT_MAX) {
			*why = "a binary COPY header extension longer than 1 MiB";
			return COPYSPLIT_BAD;
		}
		if (n - 19 < ext)
			goto more;
		cs->started = true;
		*used = 19 + ext;
		return COPYSPLIT_HEAD;
	}
	if (n < 2)
		goto more;
	int16_t nf = (int16_t)((p[0] << 8) | p[1]);
	if (nf == -1) {
		*used = 2;
		return COPYSPLIT_END;
	}
	if (nf <= cs->key_col) {
		*why = "a binary COPY tuple without the shard key's column";
		return COPYSPLIT_BAD;
	}
	size_t i = 2;
	for (int f = 0; f < nf; f++) {
		if (n - i < 4)
			goto more;
		int32_t len = (int32_t)get32(p + i);
		i += 4;
		if (len < -1) {
			*why = "a negative field length in binary COPY data";
			return COPYSPLIT_BAD;
		}
		if (f == cs->key_col) {
			k->fmt = 1;
			k->null = len == -1;
			k->len = 0;
			if (len > COPYSPLIT_KEY_MAX) {
				*why = "a shard key value longer than 4096 bytes in COPY data";
				return COPYSPLIT_BAD;
			}
		}
		if (len <= 0)
			continue;
		if (n - i < (size_t)len)
			goto more;
		if (f == cs->key_col) {
			memcpy(k->val, p + i, (size_t)len);
			k->len = (uint32_t)len;
		}
		i += (size_t)len;
	}
	*used = i;
	return COPYSPLIT_ROW;
more:
	if (final) {
		*why = "binary COPY data that ends inside a tuple";
		return COPYSPLIT_BAD;
	}
	return COPYSPLIT_MORE;
}

int copysplit_next(struct copysplit *cs, const uint8_t *p, size_t n, bool final, size_t *used,
		   struct copysplit_key *k, const char **why)
{
	assert(cs->key_col >= 0);
	*used = 0;
	*why = NULL;
	if (cs->ended) {
		*why = "COPY data after its end marker";
		return COPYSPLIT_BAD;
	}
	if (cs->format == COPYSPLIT_BINARY) {
		int rc = bin_next(cs, p, n, final, used, k, why);
		if (rc == COPYSPLIT_END)
			cs->ended = true;
		return rc;
	}
	if (n == 0)
		return COPYSPLIT_MORE;
	int m = end_marker(p, n, final, used);
	if (m >= 0) {
		if (m == COPYSPLIT_END)
			cs->ended = true;
		return m;
	}
	bool head = cs->header && !cs->started;
	int rc = cs->format == COPYSPLIT_CSV ? csv_row(cs, p, n, final, used, k, !head, why)
					     : text_row(cs, p, n, final, used, k, !head, why);
	if (rc == COPYSPLIT_ROW && head) {
		cs->started = true;
		return COPYSPLIT_HEAD;
	}
	return rc;
}
