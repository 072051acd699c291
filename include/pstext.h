/* pstext.h: the few SQL texts statement tracking must recognise (DEALLOCATE name, DEALLOCATE ALL, DISCARD ALL), read as PostgreSQL's grammar reads them; pure. */
#ifndef PGMUX_PSTEXT_H
#define PGMUX_PSTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when a text starting with byte c may be a DEALLOCATE or DISCARD: its first letter, a
 * blank or the start of a comment.  Every other Query is told apart on this one byte. */
static inline bool pstext_may_deallocate(uint8_t c)
{
	return (c | 0x20) == 'd' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '-' ||
	       c == '/';
}

/* q (NUL-terminated) is exactly "DEALLOCATE [PREPARE] name" (blanks around, a trailing
 * semicolon allowed): the name, folded to lower case unless quoted ("" inside quotes is one
 * quote), goes to name (cap bytes, cut there) and true is returned.  False for anything else,
 * for an empty name and for ALL. */
bool pstext_dealloc_name(const char *q, char *name, size_t cap);

/* [q, end) is exactly one DEALLOCATE [PREPARE] ALL or DISCARD ALL, with blanks, semicolons and
 * comments (-- and unnested slash-star) around and between its words. */
bool pstext_drops_all(const char *q, const char *end);

/* The text of a Query message (n bytes, its terminating NUL included) is exactly one
 * DEALLOCATE [PREPARE] ALL or DISCARD ALL, as pstext_drops_all reads it.  Such a Query drops
 * every statement of the session when it runs, so a message pipelined behind it must not be
 * renamed to one it drops.  False when the text does not end at its NUL. */
bool pstext_query_drops_all(const char *text, size_t n);

/* Replaces, in place, every byte of s that is not printable ASCII with '?', so that a name a
 * client chose cannot forge or break a log line; returns s. */
char *pstext_printable(char *s);

#endif
