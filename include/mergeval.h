/* mergeval.h: one column value of a merged read, as PostgreSQL reads it: its order, exact decimal sums and avg, its binary form (pure). */
#ifndef PGMUX_MERGEVAL_H
#define PGMUX_MERGEVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* PostgreSQL's type OIDs (pg_type.dat) of the types pgmux merges. */
enum {
	MV_OID_BOOL = 16, MV_OID_CHAR = 18, MV_OID_NAME = 19, MV_OID_INT8 = 20, MV_OID_INT2 = 21,
	MV_OID_INT4 = 23, MV_OID_TEXT = 25, MV_OID_OID = 26, MV_OID_FLOAT4 = 700,
	MV_OID_FLOAT8 = 701, MV_OID_BPCHAR = 1042, MV_OID_VARCHAR = 1043, MV_OID_DATE = 1082,
	MV_OID_TIMESTAMP = 1114, MV_OID_NUMERIC = 1700, MV_OID_UUID = 2950
};

/* How pgmux reads a column's text to compare it. */
enum merge_kind {
	MK_NONE = 0,    /* a type pgmux does not compare: refused where it must */
	MK_INT,         /* int2, int4, int8, oid */
	MK_FLOAT,       /* float4, float8: NaN last, -0 = 0 */
	MK_NUMERIC,     /* decimal text; NaN largest, then Infinity */
	MK_BOOL,
	MK_DATETIME,    /* date, timestamp (ISO DateStyle, AD years; infinity) */
	MK_BYTES,       /* uuid, name, "char": byte order is PostgreSQL's order */
	MK_TEXT,        /* text, varchar: byte order only under COLLATE "C" */
	MK_BPCHAR       /* character(n): as text, trailing spaces not counted */
};

/* One value of a row: len < 0 is SQL NULL. */
struct merge_val {
	const char *p;
	int32_t len;
};

/* Whether pgmux can send a value of type oid in binary (mergeval_to_binary). */
bool mergeval_binary_ok(uint32_t oid);

/* The kind of a type OID. */
enum merge_kind mergeval_kind(uint32_t oid);

/* Compares two non-NULL text values of a kind as PostgreSQL orders them; *bad is set when a
 * value is one pgmux cannot order (a BC date, a non-ISO DateStyle, malformed). */
int mergeval_cmp(enum merge_kind k, const struct merge_val *a, const struct merge_val *b, bool *bad);

/* Adds two decimal texts exactly, into out (cap bytes).  False when either is not a decimal
 * pgmux reads or out is too small. */
bool mergeval_dec_add(const char *a, size_t alen, const char *b, size_t blen, char *out, size_t cap);

/* The binary form (PostgreSQL's send function) of a text value of type oid, appended to
 * pb without its length.  False when pgmux cannot convert it exactly. */
bool mergeval_to_binary(uint32_t oid, const char *p, size_t len, struct pktbuf *pb);

/* avg = sum / count with PostgreSQL's numeric division scale and rounding. */
bool mergeval_dec_avg(const char *sum, size_t slen, const char *count, size_t clen, char *out, size_t cap);

#endif
