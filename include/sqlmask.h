/* sqlmask.h: finds the literals of a SQL text exactly where PostgreSQL's lexer does, so that texts differing only in literals share one shape. */
#ifndef PGMUX_SQLMASK_H
#define PGMUX_SQLMASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Literal classes: the shape keeps the class, drops the value. */
enum sqlmask_cls {
	SQLMASK_INT = 'I',      /* digits only */
	SQLMASK_NUM = 'N',      /* digits with a point or an exponent */
	SQLMASK_STR = 'S',      /* '...' (standard_conforming_strings on), N'...' */
	SQLMASK_ESTR = 'E',     /* E'...' with backslash escapes */
	SQLMASK_DOLLAR = 'D',   /* $tag$...$tag$ */
	SQLMASK_BITS = 'B'      /* B'...' or X'...' */
};

struct sqlmask_lit {
	uint32_t off;           /* first byte of the token (its quote or prefix letter) */
	uint32_t len;           /* bytes of the whole token */
	uint8_t cls;            /* sqlmask_cls */
	uint8_t prefix;         /* bytes before the opening quote (E, N, B, X) or the $tag$ length */
};

/*
 * Lexes sql[0..len) (stopping at a NUL) as PostgreSQL 15 does with standard_conforming_strings
 * on, and stores up to max literal tokens in lits.  Returns how many literals the text has, or
 * -1 when the text uses something whose literal boundaries pgmux does not follow (an
 * unterminated quote, comment or dollar quote, a string continued on a later line, U&''
 * strings, more than max literals).  *hash is a hash of the shape: the text with each literal
 * replaced by its class.  Never allocates.
 */
int sqlmask_scan(const char *sql, size_t len, struct sqlmask_lit *lits, int max, uint64_t *hash);

/* True when text a (with its literals la[0..n)) and text b (lb[0..n)) have the same shape:
 * equal bytes outside their literals and literals of the same classes in the same order. */
bool sqlmask_same(const char *a, const struct sqlmask_lit *la, uint32_t alen, const char *b,
		  const struct sqlmask_lit *lb, uint32_t blen, int n);

/* The value of a string literal (SQLMASK_STR, SQLMASK_ESTR, SQLMASK_DOLLAR) of sql: quotes
 * removed, '' undoubled, E'' escapes applied.  Writes at most cap bytes to out and returns the
 * length, or -1 when it does not fit or uses an escape whose bytes depend on the server's
 * encoding (\u, \U, or an octal or hex escape above 0x7f). */
int sqlmask_string(const char *sql, const struct sqlmask_lit *lit, char *out, size_t cap);

#endif
