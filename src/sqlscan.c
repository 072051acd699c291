/* sqlscan.c: a hand-written SQL lexer that classifies statements as reads or writes, reads pgmux hints and finds shard keys. */
#include "sqlscan.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

const char sqlscan_default_write_functions[] =
	"nextval, setval, lastval, currval, pg_advisory*lock*, pg_try_advisory*lock*, pg_notify, "
	"set_config, txid_current, txid_current_if_assigned, pg_current_xact_id, "
	"pg_current_xact_id_if_assigned, lo_*";

/* PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes, so longer names can never match. */
#define NAME_MAX_LEN 63

/* ---- characters ------------------------------------------------------------------------- */

/* What a byte can start, in the low five bits of its cclass entry: the lexers dispatch every
 * token with one switch on it.  S_PREFIX marks the letters that may prefix a quote (E'', B'',
 * X'', N'', U&'' and U&""), so that other words skip those checks; S_DASH and S_SLASH may start
 * comments. */
enum {
	S_OTHER, S_SPACE, S_IDENT, S_PREFIX, S_DIGIT, S_QUOTE, S_DQUOTE, S_DOLLAR, S_DOT,
	S_LPAREN, S_RPAREN, S_LBRACKET, S_RBRACKET, S_COMMA, S_SEMI, S_COLON, S_DASH, S_SLASH,
	S_OP, S_NUL, S_MASK = 31
};

/* Flags above the start class: identifiers go on with letters, '_', digits, '$' and any byte
 * >= 0x80; C_OP marks PostgreSQL's operator characters ~!@#^&|`?+-*%<>=/ */
enum { C_IDCONT = 32, C_DIGIT = 64, C_OP = 128 };

#define C_WORD (S_IDENT | C_IDCONT)
#define C_PFX (S_PREFIX | C_IDCONT)

/* Character classes, as PostgreSQL's lexer sees them: one table lookup per byte in the hot loops. */
static const uint8_t cclass[256] = {
	['\t'] = S_SPACE, ['\n'] = S_SPACE, ['\v'] = S_SPACE, ['\f'] = S_SPACE, ['\r'] = S_SPACE,
	[' '] = S_SPACE, ['\0'] = S_NUL,
	['a'] = C_WORD, ['b'] = C_PFX, ['c' ... 'd'] = C_WORD, ['e'] = C_PFX,
	['f' ... 'm'] = C_WORD, ['n'] = C_PFX, ['o' ... 't'] = C_WORD, ['u'] = C_PFX,
	['v' ... 'w'] = C_WORD, ['x'] = C_PFX, ['y' ... 'z'] = C_WORD,
	['A'] = C_WORD, ['B'] = C_PFX, ['C' ... 'D'] = C_WORD, ['E'] = C_PFX,
	['F' ... 'M'] = C_WORD, ['N'] = C_PFX, ['O' ... 'T'] = C_WORD, ['U'] = C_PFX,
	['V' ... 'W'] = C_WORD, ['X'] = C_PFX, ['Y' ... 'Z'] = C_WORD,
	['_'] = C_WORD, [0x80 ... 0xff] = C_WORD,
	['0' ... '9'] = S_DIGIT | C_IDCONT | C_DIGIT,
	['$'] = S_DOLLAR | C_IDCONT,
	['\''] = S_QUOTE, ['"'] = S_DQUOTE, ['.'] = S_DOT,
	['('] = S_LPAREN, [')'] = S_RPAREN, ['['] = S_LBRACKET, [']'] = S_RBRACKET,
	[','] = S_COMMA, [';'] = S_SEMI, [':'] = S_COLON,
	['-'] = S_DASH | C_OP, ['/'] = S_SLASH | C_OP,
	['~'] = S_OP | C_OP, ['!'] = S_OP | C_OP, ['@'] = S_OP | C_OP, ['#'] = S_OP | C_OP,
	['^'] = S_OP | C_OP, ['&'] = S_OP | C_OP, ['|'] = S_OP | C_OP, ['`'] = S_OP | C_OP,
	['?'] = S_OP | C_OP, ['+'] = S_OP | C_OP, ['*'] = S_OP | C_OP, ['%'] = S_OP | C_OP,
	['<'] = S_OP | C_OP, ['>'] = S_OP | C_OP, ['='] = S_OP | C_OP,
};

static inline unsigned start_class(unsigned char c)
{
	return cclass[c] & S_MASK;
}

/* \t \n \v \f \r and ' ' */
static inline bool is_space(unsigned char c)
{
	return start_class(c) == S_SPACE;
}

static inline bool is_digit(unsigned char c)
{
	return cclass[c] & C_DIGIT;
}

/* a letter, '_' or any byte >= 0x80 */
static inline bool is_ident_start(unsigned char c)
{
	return start_class(c) - S_IDENT <= S_PREFIX - S_IDENT;
}

static inline bool is_ident_cont(unsigned char c)
{
	return cclass[c] & C_IDCONT;
}

static inline bool is_op_char(unsigned char c)
{
	return cclass[c] & C_OP;
}

static inline unsigned char fold(unsigned char c)
{
	/* Only ASCII folds, as in PostgreSQL's downcase_identifier for multibyte encodings. */
	return (unsigned)(c - 'A') < 26 ? (unsigned char)(c + 32) : c;
}

/* Case-insensitive comparison of n bytes of p with the lowercase literal lit. */
static bool ieq(const unsigned char *p, size_t n, const char *lit)
{
	for (size_t i = 0; i < n; i++)
		if (fold(p[i]) != (unsigned char)lit[i] || !lit[i])
			return false;
	return lit[n] == '\0';
}

/* Whether the n bytes at p spell w, a lowercase word of n letters (2 to 8), in any case: two
 * overlapping loads, folded with | 0x20, which makes a lowercase letter only of that letter in
 * either case. */
static inline bool word_is(const unsigned char *p, size_t n, const char *w)
{
	if (n >= 4) {
		uint32_t a, b, x, y;
		memcpy(&a, p, 4);
		memcpy(&b, p + n - 4, 4);
		memcpy(&x, w, 4);
		memcpy(&y, w + n - 4, 4);
		return ((a | 0x20202020u) == x) & ((b | 0x20202020u) == y);
	}
	uint16_t a, b, x, y;
	memcpy(&a, p, 2);
	memcpy(&b, p + n - 2, 2);
	memcpy(&x, w, 2);
	memcpy(&y, w + n - 2, 2);
	return ((a | 0x2020u) == x) & ((b | 0x2020u) == y);
}

/* ---- keywords --------------------------------------------------------------------------- */

enum kw {
	KW_NONE,
	KW_ABORT, KW_ANALYSE, KW_ANALYZE, KW_AND, KW_AS, KW_AT, KW_ATOMIC, KW_BEGIN, KW_BETWEEN,
	KW_BIT, KW_BY, KW_CASE, KW_CHAIN, KW_CHAR, KW_CHARACTER, KW_COMMIT, KW_COMMITTED,
	KW_CREATE, KW_DEFAULT, KW_DEFERRABLE, KW_DELETE, KW_DOUBLE, KW_ELSE, KW_END, KW_EXPLAIN,
	KW_FOR, KW_HAVING, KW_ILIKE, KW_IN, KW_INSERT, KW_INTO, KW_IS, KW_ISNULL, KW_ISOLATION,
	KW_KEY, KW_LEVEL, KW_LIKE, KW_LOCAL, KW_MERGE, KW_NATIONAL, KW_NO, KW_NOT, KW_NOTNULL,
	KW_ON, KW_ONLY, KW_OR, KW_OVERRIDING, KW_PRECISION, KW_PREPARE, KW_PREPARED, KW_READ,
	KW_RELEASE, KW_REPEATABLE, KW_RESET, KW_RETURNING, KW_ROLLBACK, KW_SAVEPOINT, KW_SELECT,
	KW_SERIALIZABLE, KW_SESSION, KW_SET, KW_SHARE, KW_SHOW, KW_SIMILAR, KW_START, KW_TABLE,
	KW_THEN, KW_TIME, KW_TIMESTAMP, KW_TO, KW_TRANSACTION, KW_UNCOMMITTED, KW_UPDATE, KW_USING,
	KW_VALUES, KW_VARYING, KW_VERBOSE, KW_WHEN, KW_WHERE, KW_WITH, KW_WITHOUT, KW_WORK,
	KW_WRITE, KW_ZONE
};

struct kwent {
	char name[13];
	uint8_t id;
};

/* One table per length, each sorted, so a lookup compares a handful of words at most. */
static const struct kwent kw2[] = {
	{ "as", KW_AS }, { "at", KW_AT }, { "by", KW_BY }, { "in", KW_IN }, { "is", KW_IS },
	{ "no", KW_NO }, { "on", KW_ON }, { "or", KW_OR }, { "to", KW_TO },
};
static const struct kwent kw3[] = {
	{ "and", KW_AND }, { "bit", KW_BIT }, { "end", KW_END }, { "for", KW_FOR },
	{ "key", KW_KEY }, { "not", KW_NOT }, { "set", KW_SET },
};
static const struct kwent kw4[] = {
	{ "case", KW_CASE }, { "char", KW_CHAR }, { "else", KW_ELSE }, { "into", KW_INTO },
	{ "like", KW_LIKE }, { "only", KW_ONLY }, { "read", KW_READ }, { "show", KW_SHOW },
	{ "then", KW_THEN }, { "time", KW_TIME }, { "when", KW_WHEN }, { "with", KW_WITH },
	{ "work", KW_WORK }, { "zone", KW_ZONE },
};
static const struct kwent kw5[] = {
	{ "abort", KW_ABORT }, { "begin", KW_BEGIN }, { "chain", KW_CHAIN }, { "ilike", KW_ILIKE },
	{ "level", KW_LEVEL }, { "local", KW_LOCAL }, { "merge", KW_MERGE }, { "reset", KW_RESET },
	{ "share", KW_SHARE }, { "start", KW_START }, { "table", KW_TABLE }, { "using", KW_USING },
	{ "where", KW_WHERE }, { "write", KW_WRITE },
};
static const struct kwent kw6[] = {
	{ "atomic", KW_ATOMIC }, { "commit", KW_COMMIT }, { "create", KW_CREATE },
	{ "delete", KW_DELETE }, { "double", KW_DOUBLE }, { "having", KW_HAVING },
	{ "insert", KW_INSERT }, { "isnull", KW_ISNULL }, { "select", KW_SELECT },
	{ "update", KW_UPDATE }, { "values", KW_VALUES },
};
static const struct kwent kw7[] = {
	{ "analyse", KW_ANALYSE }, { "analyze", KW_ANALYZE }, { "between", KW_BETWEEN },
	{ "default", KW_DEFAULT }, { "explain", KW_EXPLAIN }, { "notnull", KW_NOTNULL },
	{ "prepare", KW_PREPARE }, { "release", KW_RELEASE }, { "session", KW_SESSION },
	{ "similar", KW_SIMILAR }, { "varying", KW_VARYING }, { "verbose", KW_VERBOSE },
	{ "without", KW_WITHOUT },
};
static const struct kwent kw8[] = {
	{ "national", KW_NATIONAL }, { "prepared", KW_PREPARED }, { "rollback", KW_ROLLBACK },
};
static const struct kwent kw9[] = {
	{ "character", KW_CHARACTER }, { "committed", KW_COMMITTED }, { "isolation", KW_ISOLATION },
	{ "precision", KW_PRECISION }, { "savepoint", KW_SAVEPOINT }, { "timestamp", KW_TIMESTAMP },
};
static const struct kwent kw10[] = {
	{ "deferrable", KW_DEFERRABLE }, { "overriding", KW_OVERRIDING },
	{ "repeatable", KW_REPEATABLE }, { "returning", KW_RETURNING },
};
static const struct kwent kw11[] = {
	{ "transaction", KW_TRANSACTION }, { "uncommitted", KW_UNCOMMITTED },
};
static const struct kwent kw12[] = {
	{ "serializable", KW_SERIALIZABLE },
};

#define KWTAB(t) { t, sizeof(t) / sizeof(t[0]) }
static const struct {
	const struct kwent *e;
	uint8_t n;
} kwtab[13] = {
	[2] = KWTAB(kw2), [3] = KWTAB(kw3), [4] = KWTAB(kw4), [5] = KWTAB(kw5), [6] = KWTAB(kw6),
	[7] = KWTAB(kw7), [8] = KWTAB(kw8), [9] = KWTAB(kw9), [10] = KWTAB(kw10),
	[11] = KWTAB(kw11), [12] = KWTAB(kw12),
};

static int kw_lookup(const unsigned char *p, size_t n)
{
	if (n < 2 || n > 12)
		return KW_NONE;
	unsigned char c0 = fold(p[0]);
	const struct kwent *e = kwtab[n].e;
	for (unsigned i = 0; i < kwtab[n].n; i++) {
		unsigned char k0 = (unsigned char)e[i].name[0];
		if (k0 < c0)
			continue;
		if (k0 > c0)
			break;
		size_t j = 1;
		while (j < n && fold(p[j]) == (unsigned char)e[i].name[j])
			j++;
		if (j == n)
			return e[i].id;
	}
	return KW_NONE;
}

/* ---- the lexer -------------------------------------------------------------------------- */

enum tk {
	TK_EOF, TK_ERR, TK_IDENT, TK_QIDENT, TK_STRING, TK_NUMBER, TK_PARAM, TK_OP,
	TK_LPAREN, TK_RPAREN, TK_LBRACKET, TK_RBRACKET, TK_COMMA, TK_SEMI, TK_DOT, TK_COLON,
	TK_CAST, TK_OTHER
};

/* The kinds of string literal, which differ in how their bodies are escaped. */
enum sk { SK_PLAIN, SK_E, SK_UNICODE, SK_BITS, SK_DOLLAR };

struct tok {
	uint8_t kind;
	uint8_t sk;     /* TK_STRING: enum sk */
	bool esc;       /* TK_STRING, TK_QIDENT: doubled quotes or backslash escapes in the body */
	bool bsq;       /* TK_STRING: a backslash right before a quote (see lex_plain_string) */
	bool nonint;    /* TK_NUMBER: has a fraction or an exponent */
	size_t pos, len; /* TK_STRING, TK_QIDENT: the body, quotes excluded */
};

/*
 * A NUL before len ends the string.  Rather than look for one up front, which would cost every
 * call a pass over the string, the scanners stop at a NUL (S_NUL) and cut n there: that NUL is
 * the first, as every byte before it was scanned.  Only the scans that run on to a closing quote
 * or a comment's end without looking at each byte's class call find_nul() first.
 */
struct lexer {
	const unsigned char *s;
	size_t n, pos;
	struct sqlscan_result *hints; /* where hint comments go; NULL to ignore them */
	bool err;
	bool cut;       /* n is at the first NUL, or there is none */
};

static void find_nul(struct lexer *L)
{
	if (!L->cut) {
		const unsigned char *nul = L->n ? memchr(L->s, '\0', L->n) : NULL;
		if (nul)
			L->n = (size_t)(nul - L->s);
		L->cut = true;
	}
}

/* A NUL at i ends the string. */
static inline void cut_at(struct lexer *L, size_t i)
{
	L->n = i;
	L->cut = true;
}

static void hint_comment(struct sqlscan_result *r, const unsigned char *p, size_t n);

/* End of the block comment that opens at i (nesting as PostgreSQL does), or 0 if unterminated. */
static size_t comment_end(const unsigned char *s, size_t n, size_t i)
{
	size_t depth = 1;

	i += 2;
	while (i + 1 < n) {
		if (s[i] == '*' && s[i + 1] == '/') {
			i += 2;
			if (--depth == 0)
				return i;
		} else if (s[i] == '/' && s[i + 1] == '*') {
			i += 2;
			depth++;
		} else {
			i++;
		}
	}
	return 0;
}

/*
 * A '' string without backslash escapes.  We lex as with standard_conforming_strings on (the
 * default since 9.1).  With it off, a quote after an odd run of backslashes does not end the
 * string, so the server could see code where we see string; t->bsq lets the classifier refuse
 * to call such a statement a read rather than guess which setting the session has.
 */
static size_t lex_plain_string(const unsigned char *s, size_t n, size_t i, struct tok *t)
{
	size_t body = i;

	for (;;) {
		const unsigned char *q = memchr(s + i, '\'', n - i);
		if (!q)
			return 0;
		size_t j = (size_t)(q - s);
		if (j > body && s[j - 1] == '\\') {
			size_t k = j - 1;
			while (k > body && s[k - 1] == '\\')
				k--;
			if ((j - k) & 1)
				t->bsq = true;
		}
		if (j + 1 < n && s[j + 1] == '\'') {
			t->esc = true;
			i = j + 2;
			continue;
		}
		return j + 1;
	}
}

static size_t lex_e_string(const unsigned char *s, size_t n, size_t i, struct tok *t)
{
	for (; i < n; i++) {
		if (s[i] == '\\') {
			t->esc = true;
			i++;
		} else if (s[i] == '\'') {
			if (i + 1 < n && s[i + 1] == '\'') {
				t->esc = true;
				i++;
			} else {
				return i + 1;
			}
		}
	}
	return 0;
}

/* A string that opens at body - 1 (the quote); sets the token and returns the end, 0 if none. */
static size_t lex_string(const unsigned char *s, size_t n, size_t body, uint8_t sk, struct tok *t)
{
	size_t end = sk == SK_E ? lex_e_string(s, n, body, t) : lex_plain_string(s, n, body, t);
	if (sk != SK_PLAIN)
		t->bsq = false;
	t->kind = TK_STRING;
	t->sk = sk;
	t->pos = body;
	t->len = end ? end - body - 1 : 0;
	return end;
}

static size_t lex_qident(const unsigned char *s, size_t n, size_t body, struct tok *t)
{
	size_t i = body;

	for (;;) {
		const unsigned char *q = memchr(s + i, '"', n - i);
		if (!q)
			return 0;
		size_t j = (size_t)(q - s);
		if (j + 1 < n && s[j + 1] == '"') {
			t->esc = true;
			i = j + 2;
			continue;
		}
		if (j == body)
			return 0; /* "" is an error in PostgreSQL: zero-length delimited identifier */
		t->kind = TK_QIDENT;
		t->pos = body;
		t->len = j - body;
		return j + 1;
	}
}

static inline bool is_dolq_cont(unsigned char c)
{
	return is_ident_start(c) || is_digit(c);
}

/* $tag$...$tag$ opening at i; returns the end, 0 when unterminated, 1 when it is no dollar quote. */
static size_t lex_dollar(const unsigned char *s, size_t n, size_t i, struct tok *t)
{
	size_t j = i + 1;

	if (j < n && is_ident_start(s[j]))
		while (j < n && is_dolq_cont(s[j]))
			j++;
	if (j >= n || s[j] != '$')
		return 1;
	size_t dlen = j - i + 1, body = j + 1, k = body;
	for (;;) {
		const unsigned char *q = memchr(s + k, '$', n - k);
		if (!q)
			return 0;
		k = (size_t)(q - s);
		if (n - k >= dlen && memcmp(s + k, s + i, dlen) == 0)
			break;
		k++;
	}
	t->kind = TK_STRING;
	t->sk = SK_DOLLAR;
	t->pos = body;
	t->len = k - body;
	return k + dlen;
}

/* Whether the S_PREFIX letter at i starts a string or quoted identifier rather than a word. */
static inline bool quote_prefix(const unsigned char *s, size_t n, size_t i)
{
	if (i + 1 >= n)
		return false;
	unsigned char lc = s[i] | 0x20;
	if (s[i + 1] == '\'')
		return lc != 'u';
	return lc == 'u' && s[i + 1] == '&' && i + 2 < n && (s[i + 2] == '\'' || s[i + 2] == '"');
}

/* The end of the identifier characters from p, e at most: unrolled, as words are most of a
 * query's bytes. */
static inline const unsigned char *word_end(const unsigned char *p, const unsigned char *e)
{
	for (; (size_t)(e - p) >= 8; p += 8) {
		if (!is_ident_cont(p[0]))
			return p;
		if (!is_ident_cont(p[1]))
			return p + 1;
		if (!is_ident_cont(p[2]))
			return p + 2;
		if (!is_ident_cont(p[3]))
			return p + 3;
		if (!is_ident_cont(p[4]))
			return p + 4;
		if (!is_ident_cont(p[5]))
			return p + 5;
		if (!is_ident_cont(p[6]))
			return p + 6;
		if (!is_ident_cont(p[7]))
			return p + 7;
	}
	while (p < e && is_ident_cont(*p))
		p++;
	return p;
}

static inline size_t ident_end(const unsigned char *s, size_t n, size_t i)
{
	return (size_t)(word_end(s + i, s + n) - s);
}

static inline size_t digits_end(const unsigned char *s, size_t n, size_t i)
{
	while (i < n && is_digit(s[i]))
		i++;
	return i;
}

/* The end of the number that starts at i (a digit, or '.' before a digit); *nonint when it has
 * a fraction or an exponent. */
static size_t number_end(const unsigned char *s, size_t n, size_t i, bool *nonint)
{
	size_t end = digits_end(s, n, i);

	/* "1..2" is 1 followed by "..", as in PostgreSQL */
	if (end < n && s[end] == '.' && !(end + 1 < n && s[end + 1] == '.')) {
		*nonint = true;
		end = digits_end(s, n, end + 1);
	}
	if (end < n && (s[end] | 0x20) == 'e') {
		size_t k = end + 1;
		if (k < n && (s[k] == '+' || s[k] == '-'))
			k++;
		if (k < n && is_digit(s[k])) {
			*nonint = true;
			end = digits_end(s, n, k);
		}
	}
	return end;
}

/* number_end(), with the common case of plain digits inline. */
static inline size_t number_end_fast(const unsigned char *s, size_t n, size_t i, bool *nonint)
{
	size_t end = digits_end(s, n, i);

	if (end < n && (s[end] == '.' || (s[end] | 0x20) == 'e'))
		return number_end(s, n, i, nonint);
	return end;
}

/* The end of the operator that starts at i.  An operator stops where a comment starts, and loses
 * trailing + and - unless it has a character that SQL operators lack: so "=-5" is "=", "-", "5". */
static size_t op_end(const unsigned char *s, size_t n, size_t i)
{
	size_t end = i + 1;

	while (end < n && is_op_char(s[end]) &&
	       !(end + 1 < n && ((s[end] == '-' && s[end + 1] == '-') ||
				 (s[end] == '/' && s[end + 1] == '*'))))
		end++;
	if (end - i > 1 && (s[end - 1] == '+' || s[end - 1] == '-')) {
		for (size_t k = i; k < end - 1; k++)
			if (strchr("~!@#^&|`?%", s[k]))
				return end;
		while (end - i > 1 && (s[end - 1] == '+' || s[end - 1] == '-'))
			end--;
	}
	return end;
}

/* The end of the "--" comment at i. */
static inline size_t line_comment_end(struct lexer *L, size_t i)
{
	const unsigned char *s = L->s;
	size_t n = L->n;

	for (i += 2; i < n && s[i] != '\n' && s[i] != '\r'; i++) {
		if (!s[i]) {
			cut_at(L, i);
			break;
		}
	}
	return i;
}

/* The end of the block comment at i, handing its body to the hint reader; 0 if unterminated. */
static size_t block_comment(struct lexer *L, size_t i)
{
	find_nul(L);
	size_t end = comment_end(L->s, L->n, i);

	if (end && L->hints)
		hint_comment(L->hints, L->s + i + 2, end - i - 4);
	return end;
}

/* The token at L->pos into t; spaces and comments before it are skipped. */
static void lex(struct lexer *L, struct tok *t)
{
	const unsigned char *s = L->s;
	size_t n = L->n, i = L->pos, end;

	t->esc = t->bsq = t->nonint = false;
	t->sk = SK_PLAIN;
	if (L->err)
		goto error;
again:
	if (i >= n) {
		t->kind = TK_EOF;
		t->pos = n;
		t->len = 0;
		L->pos = n;
		return;
	}
	/* Strings and quoted identifiers set their own pos and len (the body); the rest are [i, end). */
	unsigned char c = s[i];
	t->pos = i;
	end = i + 1;
	switch (start_class(c)) {
	case S_SPACE:
		i++;
		goto again;
	case S_PREFIX:
		if (quote_prefix(s, n, i)) {
			find_nul(L);
			n = L->n;
			switch (c | 0x20) {
			case 'e':
				end = lex_string(s, n, i + 2, SK_E, t);
				break;
			case 'b':
			case 'x':
				end = lex_string(s, n, i + 2, SK_BITS, t);
				break;
			case 'n':
				end = lex_string(s, n, i + 2, SK_PLAIN, t);
				break;
			default: /* u& */
				end = s[i + 2] == '\'' ? lex_string(s, n, i + 3, SK_UNICODE, t)
						       : lex_qident(s, n, i + 3, t);
				break;
			}
			goto done;
		}
		/* fall through */
	case S_IDENT:
		end = ident_end(s, n, i + 1);
		t->kind = TK_IDENT;
		break;
	case S_LPAREN:
		t->kind = TK_LPAREN;
		break;
	case S_RPAREN:
		t->kind = TK_RPAREN;
		break;
	case S_LBRACKET:
		t->kind = TK_LBRACKET;
		break;
	case S_RBRACKET:
		t->kind = TK_RBRACKET;
		break;
	case S_COMMA:
		t->kind = TK_COMMA;
		break;
	case S_SEMI:
		t->kind = TK_SEMI;
		break;
	case S_COLON:
		if (i + 1 < n && s[i + 1] == ':') {
			t->kind = TK_CAST;
			end = i + 2;
		} else {
			t->kind = TK_COLON;
		}
		break;
	case S_QUOTE:
		find_nul(L);
		end = lex_string(s, L->n, i + 1, SK_PLAIN, t);
		goto done;
	case S_DQUOTE:
		find_nul(L);
		end = lex_qident(s, L->n, i + 1, t);
		goto done;
	case S_DOLLAR:
		if (i + 1 < n && is_digit(s[i + 1])) {
			end = digits_end(s, n, i + 1);
			t->kind = TK_PARAM;
			break;
		}
		find_nul(L);
		end = lex_dollar(s, L->n, i, t);
		if (end != 1)
			goto done;
		/* a lone '$': the server's syntax error, not ours */
		t->kind = TK_OTHER;
		end = i + 1;
		break;
	case S_DOT:
		if (!(i + 1 < n && is_digit(s[i + 1]))) {
			t->kind = TK_DOT;
			break;
		}
		/* fall through - ".5" is a number */
	case S_DIGIT:
		end = number_end(s, n, i, &t->nonint);
		t->kind = TK_NUMBER;
		break;
	case S_DASH:
		if (i + 1 < n && s[i + 1] == '-') {
			i = line_comment_end(L, i);
			n = L->n;
			goto again;
		}
		goto op;
	case S_SLASH:
		if (i + 1 < n && s[i + 1] == '*') {
			i = block_comment(L, i);
			if (!i)
				goto error;
			n = L->n;
			goto again;
		}
		/* fall through */
	case S_OP:
op:
		end = op_end(s, n, i);
		t->kind = TK_OP;
		break;
	case S_NUL:
		cut_at(L, i);
		n = i;
		goto again;
	default:
		t->kind = TK_OTHER;
		break;
	}
	t->len = end - i;
done:
	if (!end)
		goto error;
	L->pos = end;
	return;

error:
	L->err = true;
	L->pos = L->n;
	t->kind = TK_ERR;
	t->pos = L->n;
	t->len = 0;
}

static inline int kwof(const struct lexer *L, const struct tok *t)
{
	return t->kind == TK_IDENT ? kw_lookup(L->s + t->pos, t->len) : KW_NONE;
}

static inline bool is_op1(const struct lexer *L, const struct tok *t, char c)
{
	return t->kind == TK_OP && t->len == 1 && L->s[t->pos] == c;
}

/* An identifier that is `name` (lowercase): unquoted in any case, or quoted exactly. */
static bool name_is(const struct lexer *L, const struct tok *t, const char *name)
{
	size_t n = strlen(name);
	if (t->len != n)
		return false;
	if (t->kind == TK_IDENT)
		return ieq(L->s + t->pos, n, name);
	return t->kind == TK_QIDENT && memcmp(L->s + t->pos, name, n) == 0;
}

static bool parse_int64(const unsigned char *p, size_t n, bool neg, int64_t *out)
{
	uint64_t v = 0;

	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(p[i]))
			return false;
		unsigned d = p[i] - '0';
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (neg) {
		if (v > (uint64_t)INT64_MAX + 1)
			return false;
		*out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	} else {
		if (v > (uint64_t)INT64_MAX)
			return false;
		*out = (int64_t)v;
	}
	return true;
}

/* ---- hint comments ---------------------------------------------------------------------- */

static void hint_pair(struct sqlscan_result *r, const unsigned char *k, size_t kn,
		      const unsigned char *v, size_t vn)
{
	if (vn >= 2 && (v[0] == '\'' || v[0] == '"') && v[vn - 1] == v[0]) {
		v++;
		vn -= 2;
	}
	if (ieq(k, kn, "role")) {
		if (r->hint_role != SQLSCAN_ROLE_NONE)
			return;
		if (ieq(v, vn, "primary"))
			r->hint_role = SQLSCAN_ROLE_PRIMARY;
		else if (ieq(v, vn, "replica"))
			r->hint_role = SQLSCAN_ROLE_REPLICA;
		else if (ieq(v, vn, "auto"))
			r->hint_role = SQLSCAN_ROLE_AUTO;
	} else if (ieq(k, kn, "user_id")) {
		bool neg = vn > 0 && v[0] == '-';
		size_t skip = vn > 0 && (v[0] == '-' || v[0] == '+');
		int64_t x;
		if (!r->has_hint_user_id && parse_int64(v + skip, vn - skip, neg, &x)) {
			r->has_hint_user_id = true;
			r->hint_user_id = x;
		}
	} else if (ieq(k, kn, "shard")) {
		int64_t x;
		if (r->hint_shard < 0 && parse_int64(v, vn, false, &x) && x <= INT32_MAX)
			r->hint_shard = (int32_t)x;
	}
}

/* The body of a block comment: "pgmux: key=value, key=value ..." sets hints; anything else is
 * an ordinary comment.  Unknown keys and bad values are ignored, so that a typo in one pair
 * does not cost the others. */
static void hint_comment(struct sqlscan_result *r, const unsigned char *p, size_t n)
{
	size_t i = 0;

	while (i < n && is_space(p[i]))
		i++;
	if (n - i < 6 || !ieq(p + i, 5, "pgmux"))
		return;
	i += 5;
	while (i < n && is_space(p[i]))
		i++;
	if (i >= n || p[i] != ':')
		return;
	i++;
	for (;;) {
		while (i < n && (is_space(p[i]) || p[i] == ','))
			i++;
		if (i >= n)
			return;
		size_t k = i;
		while (i < n && is_ident_cont(p[i]))
			i++;
		size_t kn = i - k;
		if (kn == 0) {
			i++;
			continue;
		}
		while (i < n && is_space(p[i]))
			i++;
		if (i >= n || p[i] != '=')
			continue;
		i++;
		while (i < n && is_space(p[i]))
			i++;
		size_t v = i;
		while (i < n && !is_space(p[i]) && p[i] != ',')
			i++;
		hint_pair(r, p + k, kn, p + v, i - v);
	}
}

/* ---- write functions -------------------------------------------------------------------- */

struct pat {
	uint16_t off, len;
};

struct sqlscan_funcs {
	size_t n;
	bool any_first;         /* some pattern starts with '*' */
	uint8_t first[32];      /* bitmap of the (folded) first characters of the patterns */
	struct pat *pat;
	char *text;             /* the patterns, lowercase, back to back */
};

static inline bool list_sep(unsigned char c)
{
	return c == ',' || is_space(c);
}

struct sqlscan_funcs *sqlscan_funcs_new(const char *list, const char **err)
{
	const unsigned char *s = (const unsigned char *)(list ? list : "");
	size_t count = 0, chars = 0;

	if (err)
		*err = NULL;
	/* First pass: validate, and size the allocation. */
	for (size_t i = 0; s[i];) {
		if (list_sep(s[i])) {
			i++;
			continue;
		}
		size_t last = i;
		for (; s[i] && !list_sep(s[i]); i++) {
			if (s[i] == '.') {
				last = i + 1;
			} else if (!is_ident_cont(s[i]) && s[i] != '*') {
				if (err)
					*err = "a function name may hold only letters, digits, _, $, * "
					       "and a schema prefix";
				return NULL;
			}
		}
		size_t len = i - last;
		if (len == 0) {
			if (err)
				*err = "empty function name after a schema prefix";
			return NULL;
		}
		if (is_digit(s[last]) || s[last] == '$') {
			if (err)
				*err = "a function name cannot start with a digit or $";
			return NULL;
		}
		if (len > NAME_MAX_LEN) {
			if (err)
				*err = "function name longer than 63 bytes";
			return NULL;
		}
		count++;
		chars += len;
	}

	/* Offsets are 16 bits: with names of at most 63 bytes that is over a thousand names, and a
	 * longer list is certainly a mistake. */
	if (chars > UINT16_MAX) {
		if (err)
			*err = "write_functions list too long";
		return NULL;
	}
	struct sqlscan_funcs *f = calloc(1, sizeof(*f) + count * sizeof(struct pat) + chars + 1);
	if (!f)
		return NULL;
	f->pat = (struct pat *)(f + 1);
	f->text = (char *)(f->pat + count);
	size_t o = 0;
	for (size_t i = 0; s[i];) {
		if (list_sep(s[i])) {
			i++;
			continue;
		}
		size_t last = i;
		for (; s[i] && !list_sep(s[i]); i++)
			if (s[i] == '.')
				last = i + 1;
		struct pat *p = &f->pat[f->n++];
		p->off = (uint16_t)o;
		p->len = (uint16_t)(i - last);
		for (size_t k = last; k < i; k++)
			f->text[o++] = (char)fold(s[k]);
		unsigned char c0 = (unsigned char)f->text[p->off];
		if (c0 == '*')
			f->any_first = true;
		else
			f->first[c0 >> 3] |= (uint8_t)(1u << (c0 & 7));
	}
	return f;
}

void sqlscan_funcs_free(struct sqlscan_funcs *f)
{
	free(f);
}

bool sqlscan_funcs_digits(const struct sqlscan_funcs *f)
{
	return f && strpbrk(f->text, "0123456789") != NULL;
}

/* Glob match of a name against a pattern ('*' = any run), folding the name when unquoted. */
static bool glob(const char *p, size_t pn, const unsigned char *s, size_t sn, bool fold_name)
{
	size_t pi = 0, si = 0, star = SIZE_MAX, mark = 0;

	while (si < sn) {
		unsigned char c = fold_name ? fold(s[si]) : s[si];
		if (pi < pn && p[pi] == '*') {
			star = pi++;
			mark = si;
		} else if (pi < pn && (unsigned char)p[pi] == c) {
			pi++;
			si++;
		} else if (star != SIZE_MAX) {
			pi = star + 1;
			si = ++mark;
		} else {
			return false;
		}
	}
	while (pi < pn && p[pi] == '*')
		pi++;
	return pi == pn;
}

/* Whether the identifier name[0..n), followed by '(', calls a function on the list; a quoted
 * one is the body between the quotes, with doubled quotes when esc. */
static bool is_write_func(const struct sqlscan_funcs *wf, const unsigned char *name, size_t n,
			  bool quoted, bool esc)
{
	unsigned char buf[NAME_MAX_LEN];

	if (!wf->n || !n)
		return false;
	if (quoted && esc) {
		/* "a""b" names a"b */
		size_t o = 0;
		for (size_t i = 0; i < n && o < sizeof(buf); i++) {
			buf[o++] = name[i];
			if (name[i] == '"')
				i++;
		}
		name = buf;
		n = o;
	}
	if (n > NAME_MAX_LEN)
		n = NAME_MAX_LEN;
	unsigned char c0 = quoted ? name[0] : fold(name[0]);
	if (!wf->any_first && !(wf->first[c0 >> 3] & (1u << (c0 & 7))))
		return false;
	for (size_t i = 0; i < wf->n; i++)
		if (glob(wf->text + wf->pat[i].off, wf->pat[i].len, name, n, !quoted))
			return true;
	return false;
}

/* ---- statement classification ----------------------------------------------------------- */

struct cls {
	struct lexer L;
	const struct sqlscan_funcs *wf;
	struct sqlscan_result *r;
};

struct stmt {
	bool read;
	uint8_t tx;
	uint8_t set;
};

static inline bool at_end(const struct tok *t)
{
	return t->kind == TK_SEMI || t->kind == TK_EOF || t->kind == TK_ERR;
}

/* Consumes the statement from t (not yet counted) to its end: a ';' outside parentheses.  Every
 * write goes through here, so it skips words, numbers and punctuation itself; lex() takes the
 * strings, quoted identifiers and dollar quotes, and reports errors. */
static void skip_from(struct cls *C, struct tok *t, int depth)
{
	struct lexer *L = &C->L;

	switch (t->kind) {
	case TK_EOF:
	case TK_ERR:
		return;
	case TK_SEMI:
		if (depth <= 0)
			return;
		break;
	case TK_LPAREN:
		depth++;
		break;
	case TK_RPAREN:
		depth--;
		break;
	default:
		break;
	}
	const unsigned char *s = L->s, *p = s + L->pos, *e = s + L->n;
	for (;;) {
		if (p >= e) {
			t->kind = TK_EOF;
			t->pos = L->n;
			t->len = 0;
			L->pos = L->n;
			return;
		}
		switch (start_class(*p)) {
		case S_SPACE:
			p++;
			continue;
		case S_PREFIX:
			if (quote_prefix(s, L->n, (size_t)(p - s)))
				break;
			/* fall through */
		case S_IDENT:
			p = word_end(p + 1, e);
			continue;
		case S_DOT:
			if (!(p + 1 < e && is_digit(p[1]))) {
				p++;
				continue;
			}
			/* fall through - ".5" is a number, and ".5.E1" not ".5E1" */
		case S_DIGIT: {
			/* not word_end(): "1$a$" is 1 and a dollar quote */
			bool nonint;
			p = s + number_end_fast(s, L->n, (size_t)(p - s), &nonint);
			continue;
		}
		case S_DOLLAR:
			if (!(p + 1 < e && is_digit(p[1])))
				break;
			p = s + digits_end(s, L->n, (size_t)(p - s) + 1);
			continue;
		case S_LPAREN:
			depth++;
			p++;
			continue;
		case S_RPAREN:
			depth--;
			p++;
			continue;
		case S_SEMI:
			if (depth <= 0) {
				t->kind = TK_SEMI;
				t->pos = (size_t)(p - s);
				t->len = 1;
				L->pos = t->pos + 1;
				return;
			}
			p++;
			continue;
		case S_DASH:
			if (p + 1 < e && p[1] == '-') {
				p = s + line_comment_end(L, (size_t)(p - s));
				e = s + L->n;
				continue;
			}
			p++;
			continue;
		case S_SLASH:
			if (p + 1 < e && p[1] == '*') {
				size_t end = block_comment(L, (size_t)(p - s));
				if (!end)
					break; /* unterminated: lex() reports it */
				p = s + end;
				e = s + L->n;
				continue;
			}
			p++;
			continue;
		case S_NUL:
			cut_at(L, (size_t)(p - s));
			e = p;
			continue;
		case S_QUOTE:
		case S_DQUOTE:
			break;
		default:
			p++;
			continue;
		}
		/* a string, quoted identifier or dollar quote, or a lone '$' */
		L->pos = (size_t)(p - s);
		lex(L, t);
		if (t->kind == TK_ERR)
			return;
		p = s + L->pos;
		e = s + L->n;
	}
}

static void skip_after(struct cls *C, struct tok *t, int depth)
{
	lex(&C->L, t);
	skip_from(C, t, depth);
}

/* CREATE FUNCTION ... BEGIN ATOMIC ...; ...; END holds semicolons that do not end it; track
 * BEGIN ATOMIC ... END (and CASE ... END inside it) as psql does, so the statement count is
 * right.  The verdict does not depend on it: CREATE is a write either way. */
static void skip_create(struct cls *C, struct tok *t)
{
	int depth = 0, atomic = 0;

	for (;; lex(&C->L, t)) {
		switch (t->kind) {
		case TK_EOF:
		case TK_ERR:
			return;
		case TK_SEMI:
			if (depth <= 0 && atomic <= 0)
				return;
			break;
		case TK_LPAREN:
			depth++;
			break;
		case TK_RPAREN:
			depth--;
			break;
		case TK_IDENT:
			if (t->len < 3 || t->len > 6)
				break;
			switch (kwof(&C->L, t)) {
			case KW_BEGIN: {
				size_t save = C->L.pos;
				struct tok u;
				lex(&C->L, &u);
				if (kwof(&C->L, &u) == KW_ATOMIC)
					atomic++;
				else
					C->L.pos = save;
				break;
			}
			case KW_CASE:
				if (atomic > 0)
					atomic++;
				break;
			case KW_END:
				if (atomic > 0)
					atomic--;
				break;
			default:
				break;
			}
			break;
		default:
			break;
		}
	}
}

static bool is_query_kw(int k)
{
	return k == KW_SELECT || k == KW_WITH || k == KW_VALUES || k == KW_TABLE;
}

/* Whether t starts a query: SELECT, WITH, VALUES, TABLE, or any of them in parentheses. */
static bool starts_query(struct cls *C, const struct tok *t)
{
	if (t->kind == TK_IDENT)
		return is_query_kw(kwof(&C->L, t));
	if (t->kind != TK_LPAREN)
		return false;
	size_t save = C->L.pos;
	struct tok u;
	do
		lex(&C->L, &u);
	while (u.kind == TK_LPAREN);
	C->L.pos = save;
	return is_query_kw(kwof(&C->L, &u));
}

/* The few keywords scan_read acts on. */
static int read_kw(const unsigned char *p, size_t n)
{
	switch (n) {
	case 3:
		switch (fold(p[0])) {
		case 'f': return ieq(p, 3, "for") ? KW_FOR : KW_NONE;
		case 'k': return ieq(p, 3, "key") ? KW_KEY : KW_NONE;
		}
		break;
	case 4:
		if (ieq(p, 4, "into"))
			return KW_INTO;
		break;
	case 5:
		switch (fold(p[0])) {
		case 'm': return ieq(p, 5, "merge") ? KW_MERGE : KW_NONE;
		case 's': return ieq(p, 5, "share") ? KW_SHARE : KW_NONE;
		}
		break;
	case 6:
		switch (fold(p[0])) {
		case 'd': return ieq(p, 6, "delete") ? KW_DELETE : KW_NONE;
		case 'i': return ieq(p, 6, "insert") ? KW_INSERT : KW_NONE;
		case 'u': return ieq(p, 6, "update") ? KW_UPDATE : KW_NONE;
		}
		break;
	}
	return KW_NONE;
}

/* What scan_read remembers of the previous token. */
enum { P_OTHER, P_DOT, P_WORD, P_QUOTED };

#define LETTER(c) (1u << ((c) - 'a'))

/* By length (modulo 8), the first letters of read_kw's words: one test rejects most words. */
static const uint32_t read_kw_first[8] = {
	[3] = LETTER('f') | LETTER('k'),
	[4] = LETTER('i'),
	[5] = LETTER('m') | LETTER('s'),
	[6] = LETTER('d') | LETTER('i') | LETTER('u'),
};

static inline int read_kw_fast(const unsigned char *p, size_t n)
{
	/* (c | 0x20) - 'a' is a letter's index in either case; other bytes, and lengths past 7,
	 * may alias a candidate, which only costs read_kw's exact test */
	if (!((read_kw_first[n & 7] >> (((p[0] | 0x20) - 'a') & 31)) & 1))
		return KW_NONE;
	return read_kw(p, n);
}

/* Whether the word kw (from read_kw) makes a query a write, after a token of kind prev and
 * keyword pkw. */
static inline bool read_kw_writes(int kw, int prev, int pkw)
{
	switch (kw) {
	case KW_INSERT:
	case KW_UPDATE:
	case KW_DELETE:
	case KW_MERGE:
		return prev != P_DOT; /* t.update is a column */
	case KW_INTO:
		return true;
	case KW_SHARE:
		return pkw == KW_FOR || pkw == KW_KEY;
	case KW_KEY:
		return pkw == KW_FOR;
	default:
		return false;
	}
}

/*
 * The rest of a query from t (its first token: a query keyword or '(') to the end of the
 * statement: true when it stays a read.  A write is any INSERT/UPDATE/DELETE/MERGE word (a
 * data-modifying CTE, or FOR [NO KEY] UPDATE), FOR [KEY] SHARE, INTO (SELECT INTO; INSERT INTO
 * and MERGE INTO are writes anyway), a call to a write function, or unbalanced parentheses.
 * Words are matched wherever they are, which can only err towards write: a column named
 * "update" must be qualified to stay a read.
 *
 * This runs once per routed query, so it scans bytes itself rather than calling lex() per token:
 * the rules above need only the previous token's kind and, for an identifier, its name.
 * Strings, quoted identifiers and dollar quotes, rarer and with more to get right, still go
 * through lex().
 */
static bool scan_read(struct cls *C, struct tok *t)
{
	struct lexer *L = &C->L;
	const unsigned char *s = L->s, *p = s + L->pos, *e = s + L->n, *start;
	int depth = 0, kw, pkw = KW_NONE;
	/* The previous token's kind, and where its name starts when it was an identifier: a word
	 * runs on from there, and a quoted identifier's body is qlen long. */
	int prev = P_OTHER;
	const unsigned char *name = NULL;
	size_t qlen = 0;
	bool qesc = false;

	if (t->kind == TK_LPAREN) {
		depth = 1;
	} else {
		prev = P_WORD; /* SELECT, WITH, VALUES or TABLE */
		name = s + t->pos;
	}
	for (;;) {
		if (p >= e) {
			t->kind = TK_EOF;
			t->pos = L->n;
			t->len = 0;
			L->pos = L->n;
			return depth == 0;
		}
		unsigned cl = start_class(*p);
		if (cl == S_SPACE) {
			p++;
			continue;
		}
		if (cl == S_IDENT) {
word:
			start = p;
			p = word_end(p + 1, e);
			kw = read_kw_fast(start, (size_t)(p - start));
			if (kw && read_kw_writes(kw, prev, pkw))
				goto write;
			name = start;
			prev = P_WORD;
			pkw = kw;
			/* words are mostly followed by one space and another word */
			if (p < e && *p == ' ') {
				p++;
				if (p < e && start_class(*p) == S_IDENT)
					goto word;
			}
			continue;
		}
		switch (cl) {
		case S_PREFIX:
			if (!quote_prefix(s, L->n, (size_t)(p - s)))
				goto word;
			goto lexed;
		case S_DOT:
			if (!(p + 1 < e && is_digit(p[1]))) {
				p++;
				prev = P_DOT;
				pkw = KW_NONE;
				continue;
			}
			/* fall through - ".5" is a number */
		case S_DIGIT: {
			bool nonint;
			p = s + number_end_fast(s, L->n, (size_t)(p - s), &nonint);
			break;
		}
		case S_DOLLAR:
			if (!(p + 1 < e && is_digit(p[1])))
				goto lexed; /* a dollar quote, or a lone '$' */
			for (p += 2; p < e && is_digit(*p); p++)
				;
			break;
		case S_LPAREN:
			p++;
			depth++;
			if (prev >= P_WORD && C->wf) {
				bool quoted = prev == P_QUOTED;
				size_t n = quoted ? qlen : (size_t)(word_end(name + 1, e) - name);
				if (is_write_func(C->wf, name, n, quoted, qesc))
					goto write;
			}
			break;
		case S_RPAREN:
			p++;
			if (--depth < 0)
				goto write;
			break;
		case S_SEMI:
			if (depth <= 0) {
				t->kind = TK_SEMI;
				t->pos = (size_t)(p - s);
				t->len = 1;
				L->pos = t->pos + 1;
				return depth == 0;
			}
			p++;
			break;
		case S_DASH:
			if (p + 1 < e && p[1] == '-') {
				p = s + line_comment_end(L, (size_t)(p - s));
				e = s + L->n;
				continue;
			}
			p++;
			break;
		case S_SLASH:
			if (p + 1 < e && p[1] == '*') {
				size_t end = block_comment(L, (size_t)(p - s));
				if (!end)
					goto lexed; /* unterminated: lex() reports it */
				p = s + end;
				e = s + L->n;
				continue;
			}
			p++;
			break;
		case S_QUOTE:
		case S_DQUOTE:
			goto lexed;
		case S_NUL:
			cut_at(L, (size_t)(p - s));
			e = p;
			continue;
		default:
			/* An operator character, or punctuation that no rule looks at.  Operators are
			 * taken a character at a time: where a run of them splits makes no difference
			 * here. */
			p++;
			break;
		}
		/* any token that is not a word or a dot */
		prev = P_OTHER;
		pkw = KW_NONE;
		continue;
lexed:
		L->pos = (size_t)(p - s);
		lex(L, t);
		p = s + L->pos;
		e = s + L->n;
		prev = P_OTHER;
		pkw = KW_NONE;
		switch (t->kind) {
		case TK_ERR:
			return false;
		case TK_STRING:
			if (t->bsq)
				goto write;
			break;
		case TK_QIDENT:
			prev = P_QUOTED;
			name = s + t->pos;
			qlen = t->len;
			qesc = t->esc;
			break;
		default:
			break;
		}
	}
write:
	L->pos = (size_t)(p - s);
	skip_after(C, t, depth);
	return false;
}

/*
 * A transaction_mode_list from t to the end of the statement: 1 when it asks for READ ONLY (and
 * not also READ WRITE), 0 for a valid list without it, -1 when t does not start one (t is then
 * the token that did not fit, not yet consumed).
 */
static int tx_modes(struct cls *C, struct tok *t)
{
	struct lexer *L = &C->L;
	bool ro = false, rw = false, after_comma = false;

	for (;;) {
		if (at_end(t))
			return t->kind == TK_ERR || after_comma ? -1 : ro && !rw;
		switch (kwof(L, t)) {
		case KW_ISOLATION:
			lex(L, t);
			if (kwof(L, t) != KW_LEVEL)
				return -1;
			lex(L, t);
			switch (kwof(L, t)) {
			case KW_SERIALIZABLE:
				break;
			case KW_REPEATABLE:
				lex(L, t);
				if (kwof(L, t) != KW_READ)
					return -1;
				break;
			case KW_READ:
				lex(L, t);
				if (kwof(L, t) != KW_COMMITTED && kwof(L, t) != KW_UNCOMMITTED)
					return -1;
				break;
			default:
				return -1;
			}
			break;
		case KW_READ:
			lex(L, t);
			if (kwof(L, t) == KW_ONLY)
				ro = true;
			else if (kwof(L, t) == KW_WRITE)
				rw = true;
			else
				return -1;
			break;
		case KW_NOT:
			lex(L, t);
			if (kwof(L, t) != KW_DEFERRABLE)
				return -1;
			break;
		case KW_DEFERRABLE:
			break;
		default:
			return -1;
		}
		lex(L, t);
		after_comma = t->kind == TK_COMMA;
		if (after_comma)
			lex(L, t);
	}
}

static bool is_false_value(const struct lexer *L, const struct tok *t)
{
	if (t->kind == TK_IDENT || (t->kind == TK_STRING && t->sk == SK_PLAIN))
		return ieq(L->s + t->pos, t->len, "false") || ieq(L->s + t->pos, t->len, "off");
	return t->kind == TK_NUMBER && t->len == 1 && L->s[t->pos] == '0';
}

/* EXPLAIN [ANALYZE] [VERBOSE] query, or EXPLAIN (option [value], ...) query: a read when it
 * does not ANALYZE (which runs the query) and the query is a read. */
static bool explain(struct cls *C, struct tok *t)
{
	struct lexer *L = &C->L;
	bool analyze = false;
	int depth = 0;

	lex(L, t);
	if (t->kind == TK_LPAREN && !starts_query(C, t)) {
		depth = 1;
		for (;;) {
			lex(L, t);
			if (t->kind != TK_IDENT && t->kind != TK_QIDENT)
				goto write;
			int k = kwof(L, t);
			bool is_analyze = k == KW_ANALYZE || k == KW_ANALYSE ||
					  (t->kind == TK_QIDENT && (name_is(L, t, "analyze") ||
								    name_is(L, t, "analyse")));
			bool on = true;
			lex(L, t);
			if (t->kind != TK_COMMA && t->kind != TK_RPAREN) {
				if (is_op1(L, t, '-') || is_op1(L, t, '+'))
					lex(L, t);
				if (at_end(t) || t->kind == TK_LPAREN)
					goto write;
				on = !is_false_value(L, t);
				lex(L, t);
			}
			/* The server lets the last ANALYZE win; any one that is on is enough for us. */
			if (is_analyze)
				analyze = analyze || on;
			if (t->kind == TK_RPAREN)
				break;
			if (t->kind != TK_COMMA)
				goto write;
		}
		depth = 0;
		lex(L, t);
	} else {
		int k = kwof(L, t);
		if (k == KW_ANALYZE || k == KW_ANALYSE) {
			analyze = true;
			lex(L, t);
			k = kwof(L, t);
		}
		if (k == KW_VERBOSE)
			lex(L, t);
	}
	if (!analyze && starts_query(C, t))
		return scan_read(C, t);
write:
	skip_from(C, t, depth);
	return false;
}

/* pgmux.role / pgmux.user_id / pgmux.shard from t: 1, 2, 3 with t just past it, or 0. */
static int pgmux_name(struct cls *C, struct tok *t)
{
	struct lexer *L = &C->L;

	if (!name_is(L, t, "pgmux"))
		return 0;
	lex(L, t);
	if (t->kind != TK_DOT)
		return 0;
	lex(L, t);
	int which = name_is(L, t, "role") ? 1 : name_is(L, t, "user_id") ? 2 : name_is(L, t, "shard") ? 3 : 0;
	if (which)
		lex(L, t);
	return which;
}

static const uint8_t set_kinds[4] = { 0, SQLSCAN_SET_ROLE, SQLSCAN_SET_USER_ID, SQLSCAN_SET_SHARD };
static const uint8_t reset_kinds[4] = { 0, SQLSCAN_RESET_ROLE, SQLSCAN_RESET_USER_ID, SQLSCAN_RESET_SHARD };

struct outbuf {
	char *p;
	size_t o, cap;
	bool overflow;
};

static void out_c(struct outbuf *b, char c)
{
	if (b->o + 1 < b->cap)
		b->p[b->o++] = c;
	else
		b->overflow = true;
}

static char e_escape(unsigned char c)
{
	switch (c) {
	case 'b': return '\b';
	case 'f': return '\f';
	case 'n': return '\n';
	case 'r': return '\r';
	case 't': return '\t';
	default: return (char)c;
	}
}

/* The value of SET pgmux.x = value into r->set_value; false when t is not a value. */
static bool set_value(struct cls *C, struct tok *t)
{
	struct lexer *L = &C->L;
	struct outbuf b = { C->r->set_value, 0, sizeof(C->r->set_value), false };
	const unsigned char *p;

	if (is_op1(L, t, '-') || is_op1(L, t, '+')) {
		out_c(&b, (char)L->s[t->pos]);
		lex(L, t);
		if (t->kind != TK_NUMBER)
			return false;
	}
	p = L->s + t->pos;
	switch (t->kind) {
	case TK_STRING: {
		/* Decoded exactly as a key literal in a statement is (sqlscan_key_string), so that
		 * SET pgmux.user_id = E'\x41' and WHERE key = E'\x41' name the same key; U&'', B''
		 * and X'' values, and \u escapes, whose bytes pgmux cannot tell, are bad. */
		if (t->sk == SK_UNICODE || t->sk == SK_BITS) {
			b.overflow = true;
			break;
		}
		if (t->sk == SK_E) {
			struct sqlscan_key k = { .kind = SQLSCAN_KEY_STRING, .str_off = (uint32_t)t->pos,
						 .str_len = (uint32_t)t->len, .needs_unescape = true,
						 .e_string = true };
			int n = sqlscan_key_string((const char *)L->s, &k, b.p, b.cap);
			if (n < 0)
				b.overflow = true;
			else
				b.o = (size_t)n;
			break;
		}
		for (size_t i = 0; i < t->len; i++) {
			out_c(&b, (char)p[i]);
			if (p[i] == '\'' && t->sk != SK_DOLLAR)
				i++;
		}
		break;
	}
	case TK_QIDENT:
		for (size_t i = 0; i < t->len; i++) {
			out_c(&b, (char)p[i]);
			if (p[i] == '"')
				i++;
		}
		break;
	case TK_IDENT:
		for (size_t i = 0; i < t->len; i++)
			out_c(&b, (char)fold(p[i]));
		break;
	case TK_NUMBER:
		for (size_t i = 0; i < t->len; i++)
			out_c(&b, (char)p[i]);
		break;
	default:
		return false;
	}
	b.p[b.o] = '\0';
	C->r->set_value_bad = b.overflow;
	return true;
}

/* SET [LOCAL|SESSION] TRANSACTION modes, or SET pgmux.x {=|TO} value|DEFAULT; else a write. */
static void set_stmt(struct cls *C, struct tok *t, struct stmt *st)
{
	struct lexer *L = &C->L;

	lex(L, t);
	int k = kwof(L, t);
	if (k == KW_LOCAL || k == KW_SESSION) {
		lex(L, t);
		k = kwof(L, t);
	}
	if (k == KW_TRANSACTION) {
		lex(L, t);
		int m = tx_modes(C, t);
		if (m == 1) {
			st->tx = SQLSCAN_TX_SET_RO;
			st->read = true;
		} else if (m < 0) {
			skip_from(C, t, 0);
		}
		return;
	}
	int which = pgmux_name(C, t);
	if (!which || !(is_op1(L, t, '=') || kwof(L, t) == KW_TO))
		goto other;
	lex(L, t);
	if (kwof(L, t) == KW_DEFAULT) {
		lex(L, t);
		if (!at_end(t) || t->kind == TK_ERR)
			goto other;
		st->set = reset_kinds[which];
		return;
	}
	if (!set_value(C, t))
		goto other;
	lex(L, t);
	if (t->kind == TK_COMMA) {
		/* a list: the server would take it, but no pgmux setting is a list */
		C->r->set_value_bad = true;
		skip_from(C, t, 0);
		if (t->kind == TK_ERR)
			return;
	} else if (!at_end(t) || t->kind == TK_ERR) {
		goto other;
	}
	st->set = set_kinds[which];
	return;
other:
	skip_from(C, t, 0);
}

static void reset_stmt(struct cls *C, struct tok *t, struct stmt *st)
{
	lex(&C->L, t);
	int which = pgmux_name(C, t);
	if (which && at_end(t) && t->kind != TK_ERR)
		st->set = reset_kinds[which];
	else
		skip_from(C, t, 0);
}

/* COMMIT, END, ABORT, ROLLBACK [WORK|TRANSACTION] [AND [NO] CHAIN], ROLLBACK ... TO savepoint,
 * COMMIT/ROLLBACK PREPARED 'gid'. */
static void end_stmt(struct cls *C, struct tok *t, struct stmt *st, int first)
{
	struct lexer *L = &C->L;

	st->tx = SQLSCAN_TX_END;
	lex(L, t);
	int k = kwof(L, t);
	if (k == KW_PREPARED && (first == KW_COMMIT || first == KW_ROLLBACK)) {
		/* only the primary can finish a prepared transaction */
		skip_after(C, t, 0);
		return;
	}
	if (k == KW_WORK || k == KW_TRANSACTION) {
		lex(L, t);
		k = kwof(L, t);
	}
	if (k == KW_TO && first == KW_ROLLBACK) {
		st->tx = SQLSCAN_TX_NONE;
		skip_after(C, t, 0);
		st->read = t->kind != TK_ERR;
		return;
	}
	if (k == KW_AND) {
		lex(L, t);
		if (kwof(L, t) == KW_NO)
			lex(L, t);
		if (kwof(L, t) != KW_CHAIN)
			goto other;
		lex(L, t);
	}
	if (at_end(t) && t->kind != TK_ERR) {
		st->read = true; /* neutral: it does not make the string a write */
		return;
	}
other:
	skip_from(C, t, 0);
}

/* One statement from its first token t; leaves t at its end (';', EOF or error). */
static void statement(struct cls *C, struct tok *t, struct stmt *st)
{
	struct lexer *L = &C->L;

	st->read = false;
	st->tx = SQLSCAN_TX_NONE;
	st->set = SQLSCAN_SET_NONE;
	if (t->kind == TK_LPAREN) {
		if (starts_query(C, t))
			st->read = scan_read(C, t);
		else
			skip_from(C, t, 0);
		return;
	}
	/* SELECT first, being most of the traffic */
	int k = t->kind == TK_IDENT && t->len == 6 && word_is(L->s + t->pos, 6, "select") ? KW_SELECT
											: kwof(L, t);
	switch (k) {
	case KW_SELECT:
	case KW_WITH:
	case KW_VALUES:
	case KW_TABLE:
		st->read = scan_read(C, t);
		return;
	case KW_SHOW:
		skip_after(C, t, 0);
		st->read = t->kind != TK_ERR;
		return;
	case KW_EXPLAIN:
		st->read = explain(C, t);
		return;
	case KW_BEGIN:
		lex(L, t);
		k = kwof(L, t);
		if (k == KW_WORK || k == KW_TRANSACTION)
			lex(L, t);
		break;
	case KW_START:
		lex(L, t);
		if (kwof(L, t) != KW_TRANSACTION) {
			skip_from(C, t, 0);
			return;
		}
		lex(L, t);
		break;
	case KW_COMMIT:
	case KW_END:
	case KW_ABORT:
	case KW_ROLLBACK:
		end_stmt(C, t, st, k);
		return;
	case KW_SAVEPOINT:
	case KW_RELEASE:
		skip_after(C, t, 0);
		st->read = t->kind != TK_ERR;
		return;
	case KW_PREPARE:
		lex(L, t);
		if (kwof(L, t) == KW_TRANSACTION)
			st->tx = SQLSCAN_TX_END;
		skip_from(C, t, 0);
		return;
	case KW_SET:
		set_stmt(C, t, st);
		return;
	case KW_RESET:
		reset_stmt(C, t, st);
		return;
	case KW_CREATE:
		skip_create(C, t);
		return;
	default:
		skip_after(C, t, 0);
		return;
	}
	/* BEGIN / START TRANSACTION: t is the first mode, if any. */
	int m = tx_modes(C, t);
	st->tx = m == 1 ? SQLSCAN_TX_BEGIN_RO : SQLSCAN_TX_BEGIN;
	st->read = m == 1;
	if (m < 0)
		skip_from(C, t, 0);
}

/* lex() for the common case of a statement that starts with SELECT: false, having consumed
 * nothing, for anything else. */
static inline bool lex_select(struct lexer *L, struct tok *t)
{
	const unsigned char *s = L->s;
	size_t n = L->n, i = L->pos;

	while (i < n && is_space(s[i]))
		i++;
	if (n - i < 6 || !word_is(s + i, 6, "select") || (n - i > 6 && is_ident_cont(s[i + 6])))
		return false;
	t->kind = TK_IDENT;
	t->sk = SK_PLAIN;
	t->esc = t->bsq = t->nonint = false;
	t->pos = i;
	t->len = 6;
	L->pos = i + 6;
	return true;
}

void sqlscan_classify(const char *sql, size_t len, const struct sqlscan_funcs *wf,
		      struct sqlscan_result *r)
{
	memset(r, 0, sizeof(*r));
	r->verdict = SQLSCAN_WRITE;
	r->hint_shard = -1;
	if (!sql)
		return;

	struct cls C = { { (const unsigned char *)sql, len, 0, r, false, false }, wf, r };
	struct tok t;
	struct stmt st;
	unsigned n = 0;
	bool all_read = true;
	uint8_t set = SQLSCAN_SET_NONE;

	for (;;) {
		if (!lex_select(&C.L, &t))
			lex(&C.L, &t);
		if (t.kind == TK_SEMI)
			continue;
		if (t.kind == TK_EOF || t.kind == TK_ERR)
			break;
		statement(&C, &t, &st);
		if (n == 0)
			r->tx = st.tx;
		if (n < UINT16_MAX)
			n++;
		all_read = all_read && st.read;
		set = st.set;
		if (t.kind != TK_SEMI || C.L.pos >= C.L.n)
			break; /* the end (lex() would find nothing more after that ';') */
	}
	r->lex_error = C.L.err;
	r->n_statements = (uint16_t)n;
	r->verdict = n > 0 && all_read && !C.L.err ? SQLSCAN_READ : SQLSCAN_WRITE;
	if (n == 1 && set && !C.L.err) {
		r->set = set;
	} else {
		r->set_value[0] = '\0';
		r->set_value_bad = false;
	}
}

/* ---- shard keys ------------------------------------------------------------------------- */

struct keyscan {
	struct lexer L;
	const unsigned char *col;
	size_t clen;
	struct sqlscan_key *keys;
	int max, n;
};

static bool is_col(const struct keyscan *K, const struct tok *t)
{
	if (t->len != K->clen)
		return false;
	const unsigned char *p = K->L.s + t->pos;
	if (t->kind == TK_IDENT) {
		for (size_t i = 0; i < t->len; i++)
			if (fold(p[i]) != fold(K->col[i]))
				return false;
		return true;
	}
	return t->kind == TK_QIDENT && !t->esc && memcmp(p, K->col, t->len) == 0;
}

static void add_key(struct keyscan *K, const struct sqlscan_key *k)
{
	if (K->n < K->max)
		K->keys[K->n] = *k;
	if (K->n < INT_MAX)
		K->n++;
}

/* A type name after '::' from t; leaves t after it.  Enough of the grammar for the types a key
 * is cast to, including the multi-word ones. */
static bool type_name(struct keyscan *K, struct tok *t)
{
	struct lexer *L = &K->L;

	if (t->kind != TK_IDENT && t->kind != TK_QIDENT)
		return false;
	int k = kwof(L, t);
	lex(L, t);
	while (t->kind == TK_DOT) {
		lex(L, t);
		if (t->kind != TK_IDENT && t->kind != TK_QIDENT)
			return false;
		k = kwof(L, t);
		lex(L, t);
	}
	switch (k) {
	case KW_DOUBLE:
		if (kwof(L, t) == KW_PRECISION)
			lex(L, t);
		break;
	case KW_NATIONAL:
		if (kwof(L, t) == KW_CHARACTER || kwof(L, t) == KW_CHAR)
			lex(L, t);
		/* fall through */
	case KW_CHARACTER:
	case KW_CHAR:
	case KW_BIT:
		if (kwof(L, t) == KW_VARYING)
			lex(L, t);
		break;
	default:
		break;
	}
	if (t->kind == TK_LPAREN) {
		int depth = 1;
		while (depth > 0) {
			lex(L, t);
			if (at_end(t))
				return false;
			depth += t->kind == TK_LPAREN ? 1 : t->kind == TK_RPAREN ? -1 : 0;
		}
		lex(L, t);
	}
	if ((k == KW_TIME || k == KW_TIMESTAMP) &&
	    (kwof(L, t) == KW_WITH || kwof(L, t) == KW_WITHOUT)) {
		lex(L, t);
		if (kwof(L, t) != KW_TIME)
			return false;
		lex(L, t);
		if (kwof(L, t) != KW_ZONE)
			return false;
		lex(L, t);
	}
	while (t->kind == TK_LBRACKET) {
		lex(L, t);
		if (t->kind == TK_NUMBER)
			lex(L, t);
		if (t->kind != TK_RBRACKET)
			return false;
		lex(L, t);
	}
	return true;
}

/* A key value from t: [+-]integer, a string literal or $n, each with optional ::casts.
 * Leaves t at the token after it. */
static bool key_value(struct keyscan *K, struct tok *t, struct sqlscan_key *k)
{
	struct lexer *L = &K->L;
	const unsigned char *s = L->s;
	int sign = 0;

	memset(k, 0, sizeof(*k));
	if (is_op1(L, t, '-') || is_op1(L, t, '+')) {
		sign = s[t->pos] == '-' ? -1 : 1;
		lex(L, t);
	}
	switch (t->kind) {
	case TK_NUMBER:
		if (t->nonint || !parse_int64(s + t->pos, t->len, sign < 0, &k->ival))
			return false;
		k->kind = SQLSCAN_KEY_INT;
		break;
	case TK_PARAM: {
		int64_t v;
		if (sign || !parse_int64(s + t->pos + 1, t->len - 1, false, &v) || v < 1 || v > UINT16_MAX)
			return false;
		k->kind = SQLSCAN_KEY_PARAM;
		k->param = (uint16_t)v;
		break;
	}
	case TK_STRING:
		if (sign || (t->sk != SK_PLAIN && t->sk != SK_E && t->sk != SK_DOLLAR))
			return false;
		if (t->pos > UINT32_MAX || t->len > UINT32_MAX - t->pos)
			return false;
		k->kind = SQLSCAN_KEY_STRING;
		k->str_off = (uint32_t)t->pos;
		k->str_len = (uint32_t)t->len;
		k->needs_unescape = t->esc;
		k->e_string = t->sk == SK_E;
		break;
	default:
		return false;
	}
	lex(L, t);
	while (t->kind == TK_CAST) {
		lex(L, t);
		if (!type_name(K, t))
			return false;
	}
	return true;
}

/* Whether the word p[0..n) binds tighter than '=' after a value: IS, ISNULL, NOTNULL, IN,
 * BETWEEN, LIKE, ILIKE, SIMILAR, NOT or AT. */
static bool binds_value(const unsigned char *p, size_t n)
{
	switch (n) {
	case 2:
		return word_is(p, 2, "is") || word_is(p, 2, "in") || word_is(p, 2, "at");
	case 3:
		return word_is(p, 3, "not");
	case 4:
		return word_is(p, 4, "like");
	case 5:
		return word_is(p, 5, "ilike");
	case 6:
		return word_is(p, 6, "isnull");
	case 7:
		return word_is(p, 7, "notnull") || word_is(p, 7, "between") ||
		       word_is(p, 7, "similar");
	default:
		return false;
	}
}

/* Whether t can follow "col = value" without binding tighter than '=' (which would make the
 * value part of a larger expression, e.g. "col = 1 + 2" or "col = 1 IS TRUE"). */
static bool ends_value(const struct lexer *L, const struct tok *t)
{
	switch (t->kind) {
	case TK_EOF:
	case TK_SEMI:
	case TK_RPAREN:
	case TK_COMMA:
		return true;
	case TK_IDENT:
		return !binds_value(L->s + t->pos, t->len);
	default:
		return false;
	}
}

/* Whether t ends an operand, so that a '-' or '+' after it is binary, not a sign. */
static bool ends_operand(const struct lexer *L, const struct tok *t)
{
	switch (t->kind) {
	case TK_QIDENT: case TK_NUMBER: case TK_STRING: case TK_PARAM: case TK_RPAREN: case TK_RBRACKET:
		return true;
	case TK_IDENT:
		switch (kwof(L, t)) {
		case KW_AND: case KW_OR: case KW_NOT: case KW_WHERE: case KW_ON: case KW_WHEN:
		case KW_THEN: case KW_ELSE: case KW_SELECT: case KW_SET: case KW_HAVING:
		case KW_RETURNING: case KW_BY: case KW_USING: case KW_CASE: case KW_IS: case KW_IN:
		case KW_BETWEEN: case KW_LIKE: case KW_ILIKE: case KW_SIMILAR: case KW_AS:
		case KW_VALUES:
			return false;
		default:
			return true;
		}
	default:
		return false;
	}
}

/*
 * The common "col = 42" and "col = $1" (then the end, ';', ')', ',' or a word), from i just
 * after the column, without lex(): true with the key in k when the text is plainly one of them.
 * False does not mean there is no key, only that col_site must look the long way: the rules are
 * key_value's and ends_value's, and anything unusual (casts, signs, comments, other white
 * space) is left to them.
 */
static bool simple_eq(const struct keyscan *K, size_t i, struct sqlscan_key *k)
{
	const unsigned char *s = K->L.s;
	size_t n = K->L.n, v, end, j;
	bool nonint = false;
	int64_t x;

	while (i < n && s[i] == ' ')
		i++;
	if (!(i + 1 < n && s[i] == '=' && !is_op_char(s[i + 1])))
		return false;
	for (i++; i < n && s[i] == ' '; i++)
		;
	if (i >= n)
		return false;
	if (s[i] == '$') {
		v = i + 1;
		end = digits_end(s, n, v);
	} else {
		v = i;
		end = is_digit(s[i]) ? number_end_fast(s, n, i, &nonint) : i;
	}
	if (end == v || nonint)
		return false;
	for (j = end; j < n && s[j] == ' '; j++)
		;
	if (j < n && s[j] != ';' && s[j] != ')' && s[j] != ',') {
		if (start_class(s[j]) != S_IDENT &&
		    !(start_class(s[j]) == S_PREFIX && !quote_prefix(s, n, j)))
			return false;
		if (binds_value(s + j, ident_end(s, n, j + 1) - j))
			return false;
	}
	if (!parse_int64(s + v, end - v, false, &x))
		return false;
	memset(k, 0, sizeof(*k));
	if (v == i) {
		k->kind = SQLSCAN_KEY_INT;
		k->ival = x;
	} else {
		if (x < 1 || x > UINT16_MAX)
			return false;
		k->kind = SQLSCAN_KEY_PARAM;
		k->param = (uint16_t)x;
	}
	return true;
}

/* The column just lexed (its chain started after `before`): col = value, or col IN (values);
 * not col.x, where it is a qualifier itself. */
static void col_site(struct keyscan *K, const struct tok *before)
{
	struct lexer *L = &K->L;
	struct sqlscan_key k;
	struct tok t;
	size_t save = L->pos;

	if (before->kind == TK_OP || before->kind == TK_CAST ||
	    (before->kind == TK_IDENT && before->len == 3 && word_is(L->s + before->pos, 3, "not")))
		return;
	if (simple_eq(K, save, &k)) {
		add_key(K, &k);
		return;
	}
	lex(L, &t);
	if (is_op1(L, &t, '=')) {
		lex(L, &t);
		if (key_value(K, &t, &k) && ends_value(L, &t))
			add_key(K, &k);
	} else if (kwof(L, &t) == KW_IN) {
		lex(L, &t);
		if (t.kind == TK_LPAREN) {
			int start = K->n;
			for (;;) {
				lex(L, &t);
				if (!key_value(K, &t, &k) || (t.kind != TK_COMMA && t.kind != TK_RPAREN)) {
					K->n = start; /* a list with an expression in it gives nothing */
					break;
				}
				add_key(K, &k);
				if (t.kind == TK_RPAREN)
					break;
			}
		}
	}
	L->pos = save;
}

/* value = [qualifier.]col, with the value starting at t (after a token that is no operator). */
static void reverse_site(struct keyscan *K, const struct tok *t)
{
	struct lexer *L = &K->L;
	struct sqlscan_key k;
	struct tok u = *t, last;
	size_t save = L->pos;

	if (!key_value(K, &u, &k) || !is_op1(L, &u, '='))
		goto out;
	lex(L, &u);
	if (u.kind != TK_IDENT && u.kind != TK_QIDENT)
		goto out;
	last = u;
	lex(L, &u);
	while (u.kind == TK_DOT) {
		lex(L, &u);
		if (u.kind != TK_IDENT && u.kind != TK_QIDENT)
			goto out;
		last = u;
		lex(L, &u);
	}
	if (is_col(K, &last) && ends_value(L, &u))
		add_key(K, &k);
out:
	L->pos = save;
}

/* INSERT INTO t [AS a] (cols) [OVERRIDING ... VALUE] VALUES (row), ...: the key column's value
 * in every row where it is a plain value. */
static void insert_site(struct keyscan *K)
{
	struct lexer *L = &K->L;
	struct tok t;
	struct sqlscan_key k;
	size_t save = L->pos;
	int idx = -1, i = 0;

	lex(L, &t);
	if (kwof(L, &t) != KW_INTO)
		goto out;
	do {
		lex(L, &t);
		if (t.kind != TK_IDENT && t.kind != TK_QIDENT)
			goto out;
		lex(L, &t);
	} while (t.kind == TK_DOT);
	if (kwof(L, &t) == KW_AS) {
		lex(L, &t);
		lex(L, &t);
	}
	if (t.kind != TK_LPAREN)
		goto out;
	for (;; i++) {
		lex(L, &t);
		if (is_col(K, &t)) {
			lex(L, &t);
			if (idx < 0 && (t.kind == TK_COMMA || t.kind == TK_RPAREN))
				idx = i;
		}
		while (t.kind != TK_COMMA && t.kind != TK_RPAREN) {
			if (at_end(&t) || t.kind == TK_LPAREN)
				goto out;
			lex(L, &t);
		}
		if (t.kind == TK_RPAREN)
			break;
	}
	if (idx < 0)
		goto out;
	lex(L, &t);
	if (kwof(L, &t) == KW_OVERRIDING) {
		lex(L, &t);
		lex(L, &t);
		lex(L, &t);
	}
	if (kwof(L, &t) != KW_VALUES)
		goto out;
	do {
		lex(L, &t);
		if (t.kind != TK_LPAREN)
			goto out;
		lex(L, &t);
		for (int c = 0;; c++) {
			if (c == idx) {
				struct tok u = t;
				size_t p = L->pos;
				if (key_value(K, &u, &k) && (u.kind == TK_COMMA || u.kind == TK_RPAREN)) {
					add_key(K, &k);
					t = u;
				} else {
					L->pos = p;
				}
			}
			int depth = 0;
			while (depth > 0 || (t.kind != TK_COMMA && t.kind != TK_RPAREN)) {
				if (t.kind == TK_EOF || t.kind == TK_ERR)
					goto out;
				depth += t.kind == TK_LPAREN ? 1 : t.kind == TK_RPAREN ? -1 : 0;
				lex(L, &t);
			}
			if (t.kind == TK_RPAREN)
				break;
			lex(L, &t);
		}
		lex(L, &t);
	} while (t.kind == TK_COMMA);
out:
	L->pos = save;
}

/* Whether the word at p, as long as the column name, is the column. */
static inline bool col_word(const struct keyscan *K, const unsigned char *p)
{
	for (size_t i = 0; i < K->clen; i++)
		if (fold(p[i]) != fold(K->col[i]))
			return false;
	return true;
}

/* A token that the key rules look at, after the token p1 and with `before` the token before
 * p1's chain of qualified names; L->pos is after it. */
static void key_token(struct keyscan *K, const struct tok *t, const struct tok *p1, const struct tok *before)
{
	struct lexer *L = &K->L;

	switch (t->kind) {
	case TK_IDENT:
	case TK_QIDENT:
		if (is_col(K, t)) {
			col_site(K, p1->kind != TK_DOT ? p1 : before);
		} else if (t->kind == TK_IDENT && t->len == 6 && p1->kind != TK_DOT &&
			   word_is(L->s + t->pos, 6, "insert")) {
			insert_site(K);
		}
		break;
	case TK_NUMBER:
	case TK_STRING:
	case TK_PARAM:
		/* not after an operator (x + 1 = col), nor a string continued from the previous
		 * line ('a'\n'b' is one literal) */
		if (p1->kind != TK_OP && p1->kind != TK_CAST && p1->kind != TK_DOT &&
		    !(t->kind == TK_STRING && p1->kind == TK_STRING))
			reverse_site(K, t);
		break;
	case TK_OP:
		if ((is_op1(L, t, '-') || is_op1(L, t, '+')) && !ends_operand(L, p1) &&
		    p1->kind != TK_OP && p1->kind != TK_CAST)
			reverse_site(K, t);
		break;
	default:
		break;
	}
}

int sqlscan_keys(const char *sql, size_t len, const char *column, struct sqlscan_key *keys, int max)
{
	if (!sql)
		return 0;
	const char *col = column ? column : "";
	const char *dot = strrchr(col, '.');
	if (dot)
		col = dot + 1;

	struct keyscan K = {
		{ (const unsigned char *)sql, len, 0, NULL, false, false },
		(const unsigned char *)col, strlen(col), keys, keys ? (max > 0 ? max : 0) : 0, 0
	};
	struct lexer *L = &K.L;
	struct tok t;

	if (K.clen == 0) {
		/* no key to find, but errors to report */
		do
			lex(L, &t);
		while (t.kind != TK_EOF && t.kind != TK_ERR);
		return L->err ? -1 : 0;
	}

	/*
	 * As sqlscan_classify, this is on the hot path, so it scans the common tokens (words,
	 * punctuation, operators, and numbers where no rule looks at them) itself and hands the
	 * rest to lex() and key_token().  p1 is the previous token; before, the token before the
	 * chain of qualified names that ends at p1 (col_site looks at it).
	 */
	const unsigned char *s = L->s, *p = s, *e = s + L->n;
	struct tok p1 = { .kind = TK_EOF }, before = { .kind = TK_EOF };

	for (;;) {
		if (p >= e)
			break;
		const unsigned char *start = p;
		uint8_t kind;
		switch (start_class(*p)) {
		case S_SPACE:
			p++;
			continue;
		case S_PREFIX:
			if (quote_prefix(s, L->n, (size_t)(p - s)))
				goto lexed;
			/* fall through */
		case S_IDENT:
word:
			p = word_end(p + 1, e);
			if (p1.kind != TK_DOT)
				before = p1;
			if ((size_t)(p - start) == K.clen && col_word(&K, start)) {
				L->pos = (size_t)(p - s);
				col_site(&K, &before);
				e = s + L->n;
			} else if (p - start == 6 && p1.kind != TK_DOT && word_is(start, 6, "insert")) {
				L->pos = (size_t)(p - s);
				insert_site(&K);
				e = s + L->n;
			}
			p1.kind = TK_IDENT;
			p1.pos = (size_t)(start - s);
			p1.len = (size_t)(p - start);
			/* words are mostly followed by one space and another word */
			if (p < e && *p == ' ') {
				p++;
				if (p < e && start_class(*p) == S_IDENT) {
					start = p;
					goto word;
				}
			}
			continue;
		case S_DOT:
			if (!(p + 1 < e && is_digit(p[1]))) {
				p++;
				kind = TK_DOT;
				break;
			}
			/* fall through - ".5" is a number */
		case S_DIGIT: {
			if (p1.kind != TK_OP && p1.kind != TK_CAST && p1.kind != TK_DOT)
				goto lexed; /* maybe "value = col" */
			bool nonint;
			p = s + number_end_fast(s, L->n, (size_t)(p - s), &nonint);
			kind = TK_NUMBER;
			break;
		}
		case S_DOLLAR:
			if (!(p + 1 < e && is_digit(p[1])) ||
			    (p1.kind != TK_OP && p1.kind != TK_CAST && p1.kind != TK_DOT))
				goto lexed;
			p = s + digits_end(s, L->n, (size_t)(p - s) + 1);
			kind = TK_PARAM;
			break;
		case S_LPAREN:
			p++;
			kind = TK_LPAREN;
			break;
		case S_RPAREN:
			p++;
			kind = TK_RPAREN;
			break;
		case S_LBRACKET:
			p++;
			kind = TK_LBRACKET;
			break;
		case S_RBRACKET:
			p++;
			kind = TK_RBRACKET;
			break;
		case S_COMMA:
			p++;
			kind = TK_COMMA;
			break;
		case S_SEMI:
			p++;
			kind = TK_SEMI;
			break;
		case S_COLON:
			if (p + 1 < e && p[1] == ':') {
				p += 2;
				kind = TK_CAST;
			} else {
				p++;
				kind = TK_COLON;
			}
			break;
		case S_DASH:
			if (p + 1 < e && p[1] == '-') {
				p = s + line_comment_end(L, (size_t)(p - s));
				e = s + L->n;
				continue;
			}
			goto op;
		case S_SLASH:
			if (p + 1 < e && p[1] == '*') {
				size_t end = block_comment(L, (size_t)(p - s));
				if (!end)
					goto lexed; /* unterminated: lex() reports it */
				p = s + end;
				e = s + L->n;
				continue;
			}
			/* fall through */
		case S_OP:
op:
			p = s + op_end(s, L->n, (size_t)(p - s));
			if (p - start == 1 && (*start == '-' || *start == '+'))
				goto slow; /* maybe the sign of "-1 = col" */
			kind = TK_OP;
			break;
		case S_NUL:
			cut_at(L, (size_t)(p - s));
			e = p;
			continue;
		case S_QUOTE:
		case S_DQUOTE:
			goto lexed;
		default:
			p++;
			kind = TK_OTHER;
			break;
		}
		p1.kind = kind;
		p1.pos = (size_t)(start - s);
		p1.len = (size_t)(p - start);
		continue;
lexed:
		L->pos = (size_t)(p - s);
		lex(L, &t);
		if (t.kind == TK_EOF || t.kind == TK_ERR)
			break;
		goto token;
slow:
		t = (struct tok){ .kind = TK_OP, .pos = (size_t)(start - s), .len = 1 };
		L->pos = (size_t)(p - s);
token:
		key_token(&K, &t, &p1, &before);
		if (p1.kind != TK_DOT && (t.kind == TK_IDENT || t.kind == TK_QIDENT))
			before = p1;
		p1 = t;
		p = s + L->pos;
		e = s + L->n;
	}
	return L->err ? -1 : K.n;
}

static inline int xdigit(unsigned char c)
{
	if (is_digit(c))
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int sqlscan_key_string(const char *sql, const struct sqlscan_key *key, char *buf, size_t size)
{
	const unsigned char *p = (const unsigned char *)sql + key->str_off;
	size_t n = key->str_len, o = 0;

	if (!size)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned c = p[i];
		if (key->e_string && c == '\\' && i + 1 < n) {
			c = p[++i];
			if (c >= '0' && c <= '7') {
				/* \o, \oo, \ooo */
				c -= '0';
				for (int d = 0; d < 2 && i + 1 < n && p[i + 1] >= '0' && p[i + 1] <= '7'; d++)
					c = c * 8 + (p[++i] - '0');
				c &= 0xff;
			} else if (c == 'x' && i + 1 < n && xdigit(p[i + 1]) >= 0) {
				/* \xh, \xhh */
				c = (unsigned)xdigit(p[++i]);
				if (i + 1 < n && xdigit(p[i + 1]) >= 0)
					c = c * 16 + (unsigned)xdigit(p[++i]);
			} else if (c == 'u' || c == 'U') {
				/* Unicode escapes depend on the server encoding: better no key than a
				 * wrong one. */
				return -1;
			} else {
				c = (unsigned char)e_escape((unsigned char)c);
			}
		} else if (c == '\'' && key->needs_unescape) {
			i++; /* '' */
		}
		if (o + 1 >= size)
			return -1;
		buf[o++] = (char)c;
	}
	buf[o] = '\0';
	return (int)o;
}
