/* pstext.c: the SQL texts statement tracking recognises (DEALLOCATE name, DEALLOCATE ALL, DISCARD ALL); pure, unit-tested on texts alone. */
#include "pstext.h"

#include <string.h>
#include <strings.h>

/* Skips blanks, semicolons and comments (both kinds) from p; returns where text resumes. */
static const char *skip_noise(const char *p, const char *end)
{
	while (p < end) {
		if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ';') {
			p++;
		} else if (p + 1 < end && p[0] == '-' && p[1] == '-') {
			while (p < end && *p != '\n')
				p++;
		} else if (p + 1 < end && p[0] == '/' && p[1] == '*') {
			const char *q = p + 2;
			while (q + 1 < end && !(q[0] == '*' && q[1] == '/'))
				q++;
			if (q + 1 >= end)
				return p;   /* unterminated: not noise */
			p = q + 2;
		} else {
			break;
		}
	}
	return p;
}

/* Matches the word w (lower case) at *p, case-insensitively, followed by a non-identifier
 * byte; advances *p past it. */
static bool word_at(const char **p, const char *end, const char *w)
{
	size_t n = strlen(w);
	if ((size_t)(end - *p) < n || strncasecmp(*p, w, n) != 0)
		return false;
	const char *q = *p + n;
	if (q < end && ((*q | 0x20) >= 'a' && (*q | 0x20) <= 'z'))
		return false;
	if (q < end && ((*q >= '0' && *q <= '9') || *q == '_' || *q == '$'))
		return false;
	*p = q;
	return true;
}

bool pstext_dealloc_name(const char *q, char *name, size_t cap)
{
	size_t n = 0;
	while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
		q++;
	if (strncasecmp(q, "DEALLOCATE", 10) != 0 || (q[10] != ' ' && q[10] != '\t'))
		return false;
	q += 10;
	while (*q == ' ' || *q == '\t')
		q++;
	if (strncasecmp(q, "PREPARE", 7) == 0 && (q[7] == ' ' || q[7] == '\t')) {
		q += 7;
		while (*q == ' ' || *q == '\t')
			q++;
	}
	if (*q == '"') {
		for (q++; *q && n < cap - 1; q++) {
			if (*q == '"' && q[1] == '"')
				q++;
			else if (*q == '"')
				break;
			name[n++] = *q;
		}
		if (*q != '"')
			return false;
		q++;
	} else {
		while ((*q == '_' || (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
			(*q >= '0' && *q <= '9') || *q == '$') && n < cap - 1)
			name[n++] = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q), q++;
	}
	name[n] = 0;
	while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r' || *q == ';')
		q++;
	return n && !*q && strcasecmp(name, "all") != 0;
}

bool pstext_drops_all(const char *q, const char *end)
{
	q = skip_noise(q, end);
	if (q == end || ((*q | 0x20) != 'd'))
		return false;   /* the common case, decided on one byte */
	if (word_at(&q, end, "deallocate")) {
		q = skip_noise(q, end);
		if (word_at(&q, end, "prepare"))
			q = skip_noise(q, end);
	} else if (!word_at(&q, end, "discard")) {
		return false;
	} else {
		q = skip_noise(q, end);
	}
	return word_at(&q, end, "all") && skip_noise(q, end) == end;
}

bool pstext_query_drops_all(const char *text, size_t n)
{
	if (n == 0 || text[n - 1] != '\0')
		return false;
	return pstext_drops_all(text, text + n - 1);
}

char *pstext_printable(char *s)
{
	for (char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			*p = '?';
	return s;
}
