/* sqlscan_pgquery.c: checks sqlscan's verdicts on the corpus against PostgreSQL's own parser (libpg_query's JSON parse trees). */
/*
 * Build (Debian package libpg-query-dev):
 *   gcc -std=gnu11 -O2 -Wall -Wextra -Iinclude src/sqlscan.c tests/unit/sqlscan_pgquery.c \
 *       -lpg_query -o /tmp/sqlscan_pgquery
 * Run:
 *   /tmp/sqlscan_pgquery [corpus] [-- file ...]
 * The corpus (default tests/unit/data/sqlscan_corpus.txt) is checked strictly: a read verdict on
 * anything the parse tree does not show to be a read is a failure, and so is a disagreement on
 * the statement count or the transaction kind.  Files after "--" each hold one SQL string (a
 * fuzz corpus, say); for them only reads that the server's parser rejects are counted.
 * Exit status: 0 when there is no failure, 1 otherwise.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pg_query.h>

#include "sqlscan.h"

/* ---- a minimal JSON reader: enough for libpg_query's output -------------------------------- */

enum jt { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
	enum jt t;
	char *s;            /* J_STR: the string (escapes undone); J_NUM, J_BOOL: the text */
	size_t n;           /* J_ARR, J_OBJ: how many items */
	struct jv *items;
	char **keys;        /* J_OBJ */
};

static void die(const char *msg)
{
	fprintf(stderr, "sqlscan_pgquery: %s\n", msg);
	exit(2);
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		die("out of memory");
	return p;
}

static void skip_ws(const char **p)
{
	while (isspace((unsigned char)**p))
		(*p)++;
}

static char *parse_str(const char **p)
{
	size_t cap = 16, o = 0;
	char *s = xrealloc(NULL, cap);

	(*p)++; /* " */
	while (**p && **p != '"') {
		char c = *(*p)++;
		if (c == '\\') {
			c = *(*p)++;
			switch (c) {
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case 'r': c = '\r'; break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case 'u': {
				/* names and literals only matter as ASCII here */
				unsigned v = 0;
				for (int i = 0; i < 4 && isxdigit((unsigned char)**p); i++, (*p)++)
					v = v * 16 + (unsigned)(isdigit((unsigned char)**p) ? **p - '0' : (tolower((unsigned char)**p) - 'a' + 10));
				c = v < 0x80 ? (char)v : '?';
				break;
			}
			default: break;
			}
		}
		if (o + 1 >= cap)
			s = xrealloc(s, cap *= 2);
		s[o++] = c;
	}
	if (**p != '"')
		die("bad JSON string");
	(*p)++;
	s[o] = '\0';
	return s;
}

static void parse_value(const char **p, struct jv *v);

static void parse_container(const char **p, struct jv *v, bool obj)
{
	char close = obj ? '}' : ']';

	v->t = obj ? J_OBJ : J_ARR;
	v->n = 0;
	v->items = NULL;
	v->keys = NULL;
	(*p)++;
	skip_ws(p);
	if (**p == close) {
		(*p)++;
		return;
	}
	for (;;) {
		v->items = xrealloc(v->items, (v->n + 1) * sizeof(*v->items));
		if (obj) {
			v->keys = xrealloc(v->keys, (v->n + 1) * sizeof(*v->keys));
			skip_ws(p);
			if (**p != '"')
				die("bad JSON object key");
			v->keys[v->n] = parse_str(p);
			skip_ws(p);
			if (*(*p)++ != ':')
				die("bad JSON object");
		}
		parse_value(p, &v->items[v->n]);
		v->n++;
		skip_ws(p);
		if (**p == ',') {
			(*p)++;
			continue;
		}
		if (*(*p)++ != close)
			die("bad JSON container");
		return;
	}
}

static void parse_value(const char **p, struct jv *v)
{
	skip_ws(p);
	memset(v, 0, sizeof(*v));
	if (**p == '{' || **p == '[') {
		parse_container(p, v, **p == '{');
	} else if (**p == '"') {
		v->t = J_STR;
		v->s = parse_str(p);
	} else {
		const char *start = *p;
		while (**p && !strchr(",]} \t\r\n", **p))
			(*p)++;
		size_t n = (size_t)(*p - start);
		if (!n)
			die("bad JSON value");
		v->s = xrealloc(NULL, n + 1);
		memcpy(v->s, start, n);
		v->s[n] = '\0';
		v->t = !strcmp(v->s, "null") ? J_NULL : (!strcmp(v->s, "true") || !strcmp(v->s, "false")) ? J_BOOL : J_NUM;
	}
}

static void free_jv(struct jv *v)
{
	for (size_t i = 0; i < v->n; i++) {
		free_jv(&v->items[i]);
		if (v->keys)
			free(v->keys[i]);
	}
	free(v->items);
	free(v->keys);
	free(v->s);
}

static const struct jv *jget(const struct jv *v, const char *key)
{
	if (!v || v->t != J_OBJ)
		return NULL;
	for (size_t i = 0; i < v->n; i++)
		if (!strcmp(v->keys[i], key))
			return &v->items[i];
	return NULL;
}

/* Whether any object at or below v has the key. */
static bool has_key(const struct jv *v, const char *key)
{
	if (v->t != J_OBJ && v->t != J_ARR)
		return false;
	for (size_t i = 0; i < v->n; i++) {
		if (v->t == J_OBJ && !strcmp(v->keys[i], key))
			return true;
		if (has_key(&v->items[i], key))
			return true;
	}
	return false;
}

/* ---- the write-function list, matched independently of sqlscan ----------------------------- */

static char *patterns[64];
static int n_patterns;

static void load_patterns(void)
{
	char *list = strdup(sqlscan_default_write_functions);
	for (char *tok = strtok(list, ", "); tok && n_patterns < 64; tok = strtok(NULL, ", "))
		patterns[n_patterns++] = strdup(tok);
	free(list);
}

static bool glob(const char *p, const char *s)
{
	if (!*p)
		return !*s;
	if (*p == '*')
		return glob(p + 1, s) || (*s && glob(p, s + 1));
	return *s == *p && glob(p + 1, s + 1);
}

/* Any call at or below v of a function on the list (the tree has unquoted names folded). */
static const char *write_call(const struct jv *v)
{
	if (v->t != J_OBJ && v->t != J_ARR)
		return NULL;
	for (size_t i = 0; i < v->n; i++) {
		if (v->t == J_OBJ && !strcmp(v->keys[i], "FuncCall")) {
			const struct jv *names = jget(&v->items[i], "funcname");
			if (names && names->t == J_ARR && names->n) {
				const struct jv *sval = jget(jget(&names->items[names->n - 1], "String"), "sval");
				for (int k = 0; sval && k < n_patterns; k++)
					if (glob(patterns[k], sval->s))
						return sval->s;
			}
		}
		const char *w = write_call(&v->items[i]);
		if (w)
			return w;
	}
	return NULL;
}

/* ---- what the parse tree says ------------------------------------------------------------- */

/* NULL when the query (a SelectStmt) is a read by pgmux's rules; else why not. */
static const char *query_write(const struct jv *q)
{
	if (!jget(q, "SelectStmt"))
		return "not a SELECT";
	if (has_key(q, "lockingClause"))
		return "locking clause";
	if (has_key(q, "intoClause"))
		return "SELECT INTO";
	if (has_key(q, "InsertStmt") || has_key(q, "UpdateStmt") || has_key(q, "DeleteStmt") ||
	    has_key(q, "MergeStmt"))
		return "data-modifying CTE";
	if (write_call(q))
		return "write function";
	return NULL;
}

/* transaction_read_only in a list of DefElems: 1, 0, or -1 when absent (the last one wins). */
static int read_only_option(const struct jv *opts)
{
	int ro = -1;
	for (size_t i = 0; opts && opts->t == J_ARR && i < opts->n; i++) {
		const struct jv *d = jget(&opts->items[i], "DefElem");
		const struct jv *name = jget(d, "defname");
		if (!name || strcmp(name->s, "transaction_read_only"))
			continue;
		const struct jv *ival = jget(jget(jget(d, "arg"), "A_Const"), "ival");
		const struct jv *x = jget(ival, "ival");
		ro = x && strcmp(x->s, "0") ? 1 : 0;
	}
	return ro;
}

/* An EXPLAIN option's boolean as defGetBoolean reads it. */
static bool option_on(const struct jv *d)
{
	const struct jv *arg = jget(d, "arg");
	if (!arg)
		return true;
	const struct jv *str = jget(jget(arg, "String"), "sval");
	if (str)
		return !(!strcasecmp(str->s, "false") || !strcasecmp(str->s, "off"));
	const struct jv *in = jget(arg, "Integer");
	if (in) {
		const struct jv *x = jget(in, "ival");
		return x && strcmp(x->s, "0");
	}
	return true;
}

/* What pgmux's rules make of one statement: NULL for a read, else the reason; *tx its kind. */
static const char *stmt_write(const struct jv *stmt, int *tx)
{
	const struct jv *n;

	*tx = SQLSCAN_TX_NONE;
	if ((n = jget(stmt, "SelectStmt")))
		return query_write(stmt);
	if (jget(stmt, "VariableShowStmt"))
		return NULL;
	if ((n = jget(stmt, "ExplainStmt"))) {
		const struct jv *opts = jget(n, "options");
		for (size_t i = 0; opts && i < opts->n; i++) {
			const struct jv *d = jget(&opts->items[i], "DefElem");
			const struct jv *name = jget(d, "defname");
			if (name && !strcmp(name->s, "analyze") && option_on(d))
				return "EXPLAIN ANALYZE";
		}
		return query_write(jget(n, "query"));
	}
	if ((n = jget(stmt, "TransactionStmt"))) {
		const char *kind = jget(n, "kind")->s;
		if (!strcmp(kind, "TRANS_STMT_BEGIN") || !strcmp(kind, "TRANS_STMT_START")) {
			bool ro = read_only_option(jget(n, "options")) == 1;
			*tx = ro ? SQLSCAN_TX_BEGIN_RO : SQLSCAN_TX_BEGIN;
			return ro ? NULL : "read-write BEGIN";
		}
		if (!strcmp(kind, "TRANS_STMT_COMMIT") || !strcmp(kind, "TRANS_STMT_ROLLBACK")) {
			*tx = SQLSCAN_TX_END;
			return NULL;
		}
		if (!strcmp(kind, "TRANS_STMT_SAVEPOINT") || !strcmp(kind, "TRANS_STMT_RELEASE") ||
		    !strcmp(kind, "TRANS_STMT_ROLLBACK_TO"))
			return NULL;
		*tx = SQLSCAN_TX_END; /* PREPARE TRANSACTION, COMMIT / ROLLBACK PREPARED */
		return "two-phase commit";
	}
	if ((n = jget(stmt, "VariableSetStmt"))) {
		const struct jv *name = jget(n, "name");
		const struct jv *kind = jget(n, "kind");
		if (kind && !strcmp(kind->s, "VAR_SET_MULTI") && name && !strcmp(name->s, "TRANSACTION") &&
		    read_only_option(jget(n, "args")) == 1) {
			*tx = SQLSCAN_TX_SET_RO;
			return NULL;
		}
		return "SET";
	}
	return "other statement";
}

/* ---- the checks --------------------------------------------------------------------------- */

static struct sqlscan_funcs *wf;
static int failures, conservative, agree, rejected_reads;

/* Checks one SQL string; strict for corpus lines.  want is the corpus's verdict, or -1. */
static void check(const char *where, const char *sql, int want, bool strict)
{
	struct sqlscan_result r;
	sqlscan_classify(sql, strlen(sql), wf, &r);

	PgQueryParseResult pr = pg_query_parse(sql);
	if (pr.error) {
		if (r.verdict == SQLSCAN_READ) {
			rejected_reads++;
			if (strict) {
				failures++;
				printf("FAIL %s: sqlscan says read, the parser rejects it (%s): %s\n", where,
				       pr.error->message, sql);
			}
		} else {
			agree++;
		}
		pg_query_free_parse_result(pr);
		return;
	}

	struct jv root;
	const char *p = pr.parse_tree;
	parse_value(&p, &root);
	const struct jv *stmts = jget(&root, "stmts");
	size_t n = stmts ? stmts->n : 0;
	const char *why = n ? NULL : "no statement";
	int first_tx = SQLSCAN_TX_NONE;
	for (size_t i = 0; i < n; i++) {
		int tx;
		const char *w = stmt_write(jget(&stmts->items[i], "stmt"), &tx);
		if (i == 0)
			first_tx = tx;
		if (w && !why)
			why = w;
	}
	int tree = why ? SQLSCAN_WRITE : SQLSCAN_READ;

	if (r.verdict == SQLSCAN_READ && tree == SQLSCAN_WRITE) {
		failures += strict;
		printf("%s %s: sqlscan says read, the parse tree says write (%s): %s\n",
		       strict ? "FAIL" : "note", where, why, sql);
	} else if (r.verdict == SQLSCAN_WRITE && tree == SQLSCAN_READ) {
		conservative++;
		printf("conservative %s: sqlscan says write, the parse tree says read: %s\n", where, sql);
	} else {
		agree++;
	}
	if (strict && r.n_statements != n) {
		failures++;
		printf("FAIL %s: %u statements, the parser finds %zu: %s\n", where, r.n_statements, n, sql);
	}
	if (strict && n && r.tx != first_tx) {
		failures++;
		printf("FAIL %s: tx %d, the parse tree says %d: %s\n", where, r.tx, first_tx, sql);
	}
	if (strict && want >= 0 && want != r.verdict)
		printf("note %s: the corpus expects %s\n", where, want == SQLSCAN_READ ? "read" : "write");
	free_jv(&root);
	pg_query_free_parse_result(pr);
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0, got;
	char *s = xrealloc(NULL, cap);
	while ((got = fread(s + n, 1, cap - n - 1, f)) > 0) {
		n += got;
		if (cap - n < 2)
			s = xrealloc(s, cap *= 2);
	}
	fclose(f);
	s[n] = '\0'; /* a NUL inside ends the string for both parsers */
	return s;
}

int main(int argc, char **argv)
{
	const char *corpus = "tests/unit/data/sqlscan_corpus.txt";
	int files = argc;
	const char *err = NULL;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			files = i + 1;
			break;
		}
		corpus = argv[i];
	}
	load_patterns();
	wf = sqlscan_funcs_new(sqlscan_default_write_functions, &err);
	if (!wf)
		die(err ? err : "out of memory");

	FILE *f = fopen(corpus, "r");
	if (!f) {
		perror(corpus);
		return 2;
	}
	char line[8192], where[4200];
	int lineno = 0, lines = 0;
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		line[strcspn(line, "\r\n")] = '\0';
		char *tab = strchr(line, '\t');
		if (line[0] == '#' || !tab)
			continue;
		*tab = '\0';
		char *sql = tab + 1, *o = sql;
		for (char *q = sql; *q; q++) {
			if (q[0] == '\\' && q[1] == 'n') {
				*o++ = '\n';
				q++;
			} else {
				*o++ = *q;
			}
		}
		*o = '\0';
		snprintf(where, sizeof(where), "%s:%d", corpus, lineno);
		check(where, sql, !strcmp(line, "read") ? SQLSCAN_READ : SQLSCAN_WRITE, true);
		lines++;
	}
	fclose(f);
	printf("corpus: %d lines: %d agree with the parse tree, %d conservative writes, %d failures\n",
	       lines, agree, conservative, failures);

	if (files < argc) {
		int strict_failures = failures;
		agree = conservative = rejected_reads = 0;
		for (int i = files; i < argc; i++) {
			char *sql = read_file(argv[i]);
			if (!sql)
				continue;
			check(argv[i], sql, -1, false);
			free(sql);
		}
		printf("files: %d: %d agree, %d conservative writes, %d reads the parser rejects\n",
		       argc - files, agree, conservative, rejected_reads);
		failures = strict_failures;
	}
	sqlscan_funcs_free(wf);
	return failures ? 1 : 0;
}
