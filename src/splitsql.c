/* splitsql.c: the pieces of a statement that pgmux splits over shards: an INSERT's VALUES rows as byte ranges of its text, a COPY FROM STDIN's columns and options (libpg_query). */
#include "splitsql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

typedef PgQuery__Node Node;

static bool is_comment(const PgQuery__ScanToken *t)
{
	return t->token == PG_QUERY__TOKEN__SQL_COMMENT || t->token == PG_QUERY__TOKEN__C_COMMENT;
}

void splitsql_insert_free(struct splitsql_insert *ins)
{
	free(ins->row_start);
	free(ins->row_end);
	ins->row_start = ins->row_end = NULL;
	ins->n_rows = 0;
}

/* Walks the tokens: INSERT first, the first VALUES outside parentheses, then "( ... )" rows
 * separated by commas; what follows is the tail, which may hold a ';' only as its last
 * token.  Token offsets are the scanner's, so literals, quoted names and comments that hold
 * parentheses or commas cannot mislead it. */
static int cut_rows(const char *sql, PgQuery__ScanResult *sr, struct splitsql_insert *out,
		    const char **why)
{
	size_t n = sr->n_tokens;
	size_t i = 0;
	while (i < n && is_comment(sr->tokens[i]))
		i++;
	if (i == n || sr->tokens[i]->token != PG_QUERY__TOKEN__INSERT) {
		*why = "not an INSERT";
		return 1;
	}
	int depth = 0;
	for (; i < n; i++) {
		const PgQuery__ScanToken *t = sr->tokens[i];
		if (t->token == PG_QUERY__TOKEN__ASCII_40)
			depth++;
		else if (t->token == PG_QUERY__TOKEN__ASCII_41)
			depth--;
		else if (depth == 0 && t->token == PG_QUERY__TOKEN__VALUES)
			break;
	}
	if (i == n) {
		*why = "an INSERT without VALUES";
		return 1;
	}
	out->head_end = (uint32_t)sr->tokens[i]->end;
	uint32_t cap = 16;
	out->row_start = malloc(cap * sizeof(uint32_t));
	out->row_end = malloc(cap * sizeof(uint32_t));
	if (!out->row_start || !out->row_end)
		return -1;
	i++;
	for (;;) {
		while (i < n && is_comment(sr->tokens[i]))
			i++;
		if (i == n || sr->tokens[i]->token != PG_QUERY__TOKEN__ASCII_40) {
			*why = "VALUES rows pgmux cannot cut apart";
			return 1;
		}
		if (out->n_rows == SPLITSQL_ROWS_MAX) {
			*why = "too many VALUES rows";
			return 1;
		}
		if (out->n_rows == cap) {
			cap *= 2;
			uint32_t *a = realloc(out->row_start, cap * sizeof(uint32_t));
			if (a)
				out->row_start = a;
			uint32_t *b = a ? realloc(out->row_end, cap * sizeof(uint32_t)) : NULL;
			if (b)
				out->row_end = b;
			if (!a || !b)
				return -1;
		}
		out->row_start[out->n_rows] = (uint32_t)sr->tokens[i]->start;
		depth = 0;
		for (; i < n; i++) {
			int tk = sr->tokens[i]->token;
			if (tk == PG_QUERY__TOKEN__ASCII_40)
				depth++;
			else if (tk == PG_QUERY__TOKEN__ASCII_41 && --depth == 0)
				break;
		}
		if (i == n) {
			*why = "an unbalanced VALUES row";
			return 1;
		}
		out->row_end[out->n_rows++] = (uint32_t)sr->tokens[i]->end;
		i++;
		while (i < n && is_comment(sr->tokens[i]))
			i++;
		if (i < n && sr->tokens[i]->token == PG_QUERY__TOKEN__ASCII_44) {
			i++;
			continue;
		}
		break;
	}
	out->tail_start = i < n ? (uint32_t)sr->tokens[i]->start : out->len;
	/* The tail: a RETURNING is noted; a ';' must end the text (one statement only). */
	depth = 0;
	for (; i < n; i++) {
		const PgQuery__ScanToken *t = sr->tokens[i];
		if (is_comment(t))
			continue;
		if (t->token == PG_QUERY__TOKEN__ASCII_40)
			depth++;
		else if (t->token == PG_QUERY__TOKEN__ASCII_41)
			depth--;
		else if (depth == 0 && t->token == PG_QUERY__TOKEN__RETURNING)
			out->returning = true;
		else if (depth == 0 && t->token == PG_QUERY__TOKEN__ASCII_59) {
			for (size_t j = i + 1; j < n; j++) {
				if (!is_comment(sr->tokens[j]) && sr->tokens[j]->token != PG_QUERY__TOKEN__ASCII_59) {
					*why = "more than one statement in the query string";
					return 1;
				}
			}
			break;
		}
	}
	(void)sql;
	return 0;
}

int splitsql_insert_rows(const char *sql, size_t len, struct splitsql_insert *out, const char **why)
{
	memset(out, 0, sizeof(*out));
	*why = NULL;
	if (len != strlen(sql) || len > UINT32_MAX / 2) {
		*why = "a text with a NUL byte or too long";
		return 1;
	}
	out->len = (uint32_t)len;
	PgQueryScanResult res = pg_query_scan(sql);
	if (res.error) {
		pg_query_free_scan_result(res);
		*why = "a text PostgreSQL's scanner refuses";
		return 1;
	}
	PgQuery__ScanResult *sr = pg_query__scan_result__unpack(NULL, res.pbuf.len,
								  (const uint8_t *)res.pbuf.data);
	pg_query_free_scan_result(res);
	if (!sr)
		return -1;
	int rc = cut_rows(sql, sr, out, why);
	pg_query__scan_result__free_unpacked(sr, NULL);
	if (rc != 0)
		splitsql_insert_free(out);
	return rc;
}

size_t splitsql_insert_build(const char *sql, const struct splitsql_insert *ins, const bool *pick,
			     char *out)
{
	size_t o = 0;
	memcpy(out, sql, ins->head_end);
	o = ins->head_end;
	bool first = true;
	for (uint32_t i = 0; i < ins->n_rows; i++) {
		if (!pick[i])
			continue;
		/* " " before the first row, "," before the others: each row's own bytes are at
		 * least that much shorter than what the whole text spent on it */
		out[o++] = first ? ' ' : ',';
		first = false;
		uint32_t n = ins->row_end[i] - ins->row_start[i];
		memcpy(out + o, sql + ins->row_start[i], n);
		o += n;
	}
	out[o++] = ' ';
	memcpy(out + o, sql + ins->tail_start, ins->len - ins->tail_start);
	o += ins->len - ins->tail_start;
	return o;
}

/* ---- COPY FROM STDIN ----------------------------------------------------------------------- */

/* A DefElem's value as text: a string, an identifier (csv), or a boolean / integer spelled
 * out; NULL when there is none. */
static const char *opt_text(const PgQuery__DefElem *d, char *buf, size_t cap)
{
	const Node *a = d->arg;
	if (!a)
		return NULL;
	switch (a->node_case) {
	case PG_QUERY__NODE__NODE_STRING:
		return a->string->sval;
	case PG_QUERY__NODE__NODE_BOOLEAN:
		return a->boolean->boolval ? "true" : "false";
	case PG_QUERY__NODE__NODE_INTEGER:
		snprintf(buf, cap, "%d", a->integer->ival);
		return buf;
	default:
		return NULL;
	}
}

static bool truthy(const char *v)
{
	return !v || !strcasecmp(v, "true") || !strcasecmp(v, "on") || !strcasecmp(v, "1") ||
	       !strcasecmp(v, "match");
}

/* name as a quoted identifier ("a""b") appended at out[*o]; false when it does not fit. */
static bool put_ident(const char *name, char *out, size_t cap, size_t *o)
{
	if (*o + 1 >= cap)
		return false;
	out[(*o)++] = '"';
	for (; *name; name++) {
		if (*o + 3 >= cap)
			return false;
		if (*name == '"')
			out[(*o)++] = '"';
		out[(*o)++] = *name;
	}
	out[(*o)++] = '"';
	out[*o] = '\0';
	return true;
}

static bool quote_table(const PgQuery__RangeVar *r, char *out, size_t cap)
{
	size_t o = 0;
	out[0] = '\0';
	if (r->catalogname && r->catalogname[0] &&
	    (!put_ident(r->catalogname, out, cap, &o) || o + 1 >= cap || !(out[o++] = '.')))
		return false;
	if (r->schemaname && r->schemaname[0] &&
	    (!put_ident(r->schemaname, out, cap, &o) || o + 1 >= cap || !(out[o++] = '.')))
		return false;
	return put_ident(r->relname, out, cap, &o);
}

static void read_copy(const PgQuery__CopyStmt *s, const char *key, struct splitsql_copy *o)
{
	const char *delim = NULL, *quote = NULL, *escape = NULL, *null = NULL;
	char buf[32];
	o->format = SPLITSQL_TEXT;
	for (size_t i = 0; i < s->n_options; i++) {
		const Node *n = s->options[i];
		if (n->node_case != PG_QUERY__NODE__NODE_DEF_ELEM) {
			o->why = "a COPY option pgmux does not know";
			return;
		}
		const PgQuery__DefElem *d = n->def_elem;
		const char *v = opt_text(d, buf, sizeof(buf));
		if (!strcmp(d->defname, "format")) {
			if (v && !strcasecmp(v, "csv"))
				o->format = SPLITSQL_CSV;
			else if (v && !strcasecmp(v, "binary"))
				o->format = SPLITSQL_BINARY;
			else if (v && !strcasecmp(v, "text"))
				o->format = SPLITSQL_TEXT;
			else {
				o->why = "an unknown COPY format";
				return;
			}
		} else if (!strcmp(d->defname, "delimiter")) {
			delim = v;
		} else if (!strcmp(d->defname, "quote")) {
			quote = v;
		} else if (!strcmp(d->defname, "escape")) {
			escape = v;
		} else if (!strcmp(d->defname, "null")) {
			null = v;
		} else if (!strcmp(d->defname, "header")) {
			o->header = truthy(v);
		} else if (!strcmp(d->defname, "freeze")) {
			/* the server's business: each shard's rows are frozen or not alike */
		} else {
			/* ENCODING changes how key bytes read; FORCE_NULL / FORCE_NOT_NULL how NULLs
			 * do; anything newer is unknown here */
			o->why = "a COPY option that changes how pgmux would read the key (ENCODING, "
				 "FORCE_NULL, FORCE_NOT_NULL, ...)";
			return;
		}
	}
	if ((delim && strlen(delim) != 1) || (quote && strlen(quote) != 1) ||
	    (escape && strlen(escape) != 1)) {
		o->why = "a COPY DELIMITER, QUOTE or ESCAPE that is not one byte";
		return;
	}
	o->delim = delim ? delim[0] : o->format == SPLITSQL_CSV ? ',' : '\t';
	o->quote = quote ? quote[0] : '"';
	o->escape = escape ? escape[0] : o->quote;
	if (!null)
		null = o->format == SPLITSQL_CSV ? "" : "\\N";
	if (strlen(null) >= sizeof(o->null_str)) {
		o->why = "a COPY NULL string longer than 63 bytes";
		return;
	}
	strcpy(o->null_str, null);
	o->null_len = (uint32_t)strlen(null);
	if (o->delim == '\n' || o->delim == '\r' || o->delim == '\\' || o->quote == o->delim ||
	    (o->format == SPLITSQL_CSV && (o->quote == '\n' || o->quote == '\r'))) {
		o->why = "a COPY DELIMITER or QUOTE the server refuses";
		return;
	}
	if (o->format == SPLITSQL_BINARY && o->header) {
		o->why = "COPY BINARY with HEADER";
		return;
	}
	if (!s->n_attlist) {
		/* the table's own columns: pgmux asks the server for them */
		o->key_col = -1;
		if (!quote_table(s->relation, o->table, sizeof(o->table)))
			o->why = "a COPY whose table name is too long";
		return;
	}
	o->n_cols = (uint32_t)s->n_attlist;
	o->key_col = -1;
	for (size_t i = 0; i < s->n_attlist; i++) {
		const Node *c = s->attlist[i];
		if (c->node_case == PG_QUERY__NODE__NODE_STRING && !strcmp(c->string->sval, key)) {
			if (o->key_col >= 0) {
				o->why = "a COPY column list that names the shard key twice";
				return;
			}
			o->key_col = (int)i;
		}
	}
	if (o->key_col < 0)
		o->why = "a COPY whose column list lacks the shard key";
}

int splitsql_copy(const char *sql, const char *key, struct splitsql_copy *out)
{
	memset(out, 0, sizeof(*out));
	PgQueryProtobufParseResult pr = pg_query_parse_protobuf(sql);
	if (pr.error) {
		pg_query_free_protobuf_parse_result(pr);
		return 1;
	}
	PgQuery__ParseResult *tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
								       (const uint8_t *)pr.parse_tree.data);
	pg_query_free_protobuf_parse_result(pr);
	if (!tree)
		return -1;
	int rc = 1;
	if (tree->n_stmts == 1 && tree->stmts[0]->stmt &&
	    tree->stmts[0]->stmt->node_case == PG_QUERY__NODE__NODE_COPY_STMT) {
		const PgQuery__CopyStmt *s = tree->stmts[0]->stmt->copy_stmt;
		if (s->is_from && !s->is_program && (!s->filename || !s->filename[0]) && s->relation) {
			rc = 0;
			read_copy(s, key, out);
		}
	}
	pg_query__parse_result__free_unpacked(tree, NULL);
	return rc;
}
