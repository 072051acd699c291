/* shardhash_cli.c: prints the shard of each key read from stdin, for comparing with PostgreSQL. */
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L /* getline, when built outside automake's -D_GNU_SOURCE */
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardhash.h"

/*
 * One key per line, answered by one line with its remainder:
 *   int8 N <value>          int4 N <value>          int2 N <value>
 *   text N <bytes to the end of the line>
 *   texthex N <hex digits>  (text whose bytes could not sit on one line, e.g. with a newline)
 *   uuid N <uuid in any form uuid_in accepts>
 * N is the modulus.  A bad line stops the run with exit status 2, so that a caller comparing
 * answers line by line cannot get them out of step.
 */

_Noreturn static void die(unsigned long lineno, const char *why)
{
	fflush(stdout);
	fprintf(stderr, "shardhash_cli: line %lu: %s\n", lineno, why);
	exit(2);
}

static int parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Decodes hex in place; returns the byte count or -1. */
static long unhex(char *s, size_t len)
{
	if (len % 2)
		return -1;
	for (size_t i = 0; i < len; i += 2) {
		int hi = hexval(s[i]), lo = hexval(s[i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		s[i / 2] = (char)(hi << 4 | lo);
	}
	return (long)(len / 2);
}

int main(void)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	unsigned long lineno = 0;

	while ((n = getline(&line, &cap, stdin)) >= 0) {
		lineno++;
		size_t len = (size_t)n;
		if (len && line[len - 1] == '\n')
			line[--len] = '\0';

		/* "<type> <modulus> <key>": the key is everything after the second space, verbatim */
		char *sp1 = memchr(line, ' ', len);
		char *sp2 = sp1 ? memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - line)) : NULL;
		if (!sp2)
			die(lineno, "expected \"<type> <modulus> <key>\"");
		*sp1 = *sp2 = '\0';
		const char *type = line;
		char *key = sp2 + 1;
		size_t keylen = len - (size_t)(key - line);
		int64_t mod, v;
		if (parse_int(sp1 + 1, 1, UINT32_MAX, &mod))
			die(lineno, "bad modulus");
		uint32_t nshards = (uint32_t)mod, r;

		if (!strcmp(type, "int8")) {
			if (parse_int(key, INT64_MIN, INT64_MAX, &v))
				die(lineno, "bad int8");
			r = shardhash_int8_shard(v, nshards);
		} else if (!strcmp(type, "int4")) {
			if (parse_int(key, INT32_MIN, INT32_MAX, &v))
				die(lineno, "bad int4");
			r = shardhash_int4_shard((int32_t)v, nshards);
		} else if (!strcmp(type, "int2")) {
			if (parse_int(key, INT16_MIN, INT16_MAX, &v))
				die(lineno, "bad int2");
			r = shardhash_shard(shardhash_combine(shardhash_int2((int16_t)v)), nshards);
		} else if (!strcmp(type, "text")) {
			r = shardhash_text_shard(key, keylen, nshards);
		} else if (!strcmp(type, "texthex")) {
			long bytes = unhex(key, keylen);
			if (bytes < 0)
				die(lineno, "bad hex");
			r = shardhash_text_shard(key, (size_t)bytes, nshards);
		} else if (!strcmp(type, "uuid")) {
			uint8_t u[16];
			if (shardhash_parse_uuid(key, keylen, u))
				die(lineno, "bad uuid");
			r = shardhash_uuid_shard(u, nshards);
		} else {
			die(lineno, "unknown type (int8, int4, int2, text, texthex, uuid)");
		}
		printf("%" PRIu32 "\n", r);
	}
	free(line);
	if (ferror(stdin))
		die(lineno, "read error");
	return fflush(stdout) ? 1 : 0;
}
