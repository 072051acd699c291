/* corpus.h: finds and reads tests/unit/data/sqlscan_corpus.txt for the classifier's unit tests. */
#ifndef PGMUX_TEST_CORPUS_H
#define PGMUX_TEST_CORPUS_H

#include <stdio.h>
#include <stdlib.h>

/* SQLSCAN_CORPUS names another file; automake runs tests from the build directory and
 * exports srcdir; TEST_DATA_DIR is the source tree's data directory. */
static FILE *open_corpus(char *path, size_t size)
{
	const char *env = getenv("SQLSCAN_CORPUS");
	if (env && *env) {
		snprintf(path, size, "%s", env);
		return fopen(path, "r");
	}
	const char *srcdir = getenv("srcdir");
	snprintf(path, size, "%s/tests/unit/data/sqlscan_corpus.txt", srcdir && *srcdir ? srcdir : ".");
	FILE *f = fopen(path, "r");
#ifdef TEST_DATA_DIR
	if (!f) {
		snprintf(path, size, "%s/sqlscan_corpus.txt", TEST_DATA_DIR);
		f = fopen(path, "r");
	}
#endif
	return f;
}

/* The two characters \n become a newline; nothing else is escaped. */
static void unescape_newlines(char *s)
{
	char *o = s;
	for (char *p = s; *p; p++) {
		if (p[0] == '\\' && p[1] == 'n') {
			*o++ = '\n';
			p++;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
}

#endif
