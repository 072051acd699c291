/* copysplit.h: reads COPY FROM STDIN data (text, CSV, binary) one row at a time: where each row ends and its shard key's value (pure). */
#ifndef PGMUX_COPYSPLIT_H
#define PGMUX_COPYSPLIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A key value longer than this (after unescaping) is refused. */
#define COPYSPLIT_KEY_MAX 4096

enum copysplit_format { COPYSPLIT_TEXT = 0, COPYSPLIT_CSV, COPYSPLIT_BINARY };

/* The format and options of one COPY, and where the reader stands. */
struct copysplit {
	int format;             /* copysplit_format */
	char delim, quote, escape;
	const char *null_str;   /* the NULL marker; null_len bytes (CSV and text) */
	size_t null_len;
	bool header;            /* text/CSV: the first line is a header */
	int key_col;            /* 0-based field holding the shard key */
	/* the reader's state */
	bool started;           /* the header (line, or binary signature) was read */
	bool ended;             /* the end marker (\. or the binary trailer) was read */
	char eol[2];            /* the first row's line ending (text/CSV), to end a last row */
	uint8_t eol_len;
};

enum copysplit_rc {
	COPYSPLIT_BAD = -1,     /* malformed: *why says how (static) */
	COPYSPLIT_MORE = 0,     /* the row is not complete in these bytes */
	COPYSPLIT_ROW = 1,      /* a data row of *used bytes; the key is in k */
	COPYSPLIT_HEAD = 2,     /* the header (line or binary signature) of *used bytes */
	COPYSPLIT_END = 3       /* the end marker (*used bytes); nothing after it is read */
};

/* A row's key field. */
struct copysplit_key {
	bool null;
	int fmt;                /* 0 text form, 1 binary form */
	uint32_t len;
	uint8_t val[COPYSPLIT_KEY_MAX];
};

/* Sets up a reader (cs's option fields filled by the caller; the state is cleared). */
void copysplit_init(struct copysplit *cs);

/*
 * Reads the next piece of the stream at p (n bytes).  final: no more bytes will come (the
 * client sent CopyDone), so a last line may lack its line ending.  ROW and HEAD give *used,
 * the bytes the piece takes (a row's line ending included); a ROW's key goes to k.  Never reads
 * past n.  *why is set for BAD.
 */
int copysplit_next(struct copysplit *cs, const uint8_t *p, size_t n, bool final, size_t *used,
		   struct copysplit_key *k, const char **why);

/* The 2-byte trailer a binary stream ends with, and the signature's fixed part. */
extern const uint8_t copysplit_bin_trailer[2];

#endif
