/* shardsql.c: reads statements with PostgreSQL's own grammar (libpg_query) and says which shard-key values their rows provably have. */
#include "shardsql.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

typedef PgQuery__Node Node;

/* Statements of one text, values of one statement: more is refused rather than read. */
#define SHSQL_STMTS_MAX 64
#define SHSQL_VALUES_MAX 100000

/* ---- the result ------------------------------------------------------------------------- */

void shsql_free(struct shsql_result *r)
{
	for (uint32_t i = 0; r->st && i < r->n_stmts; i++) {
		for (uint32_t j = 0; j < r->st[i].n_values; j++)
			free(r->st[i].v[j].str);
		free(r->st[i].v);
	}
	free(r->st);
	memset(r, 0, sizeof(*r));
}

/* What reading one statement needs. */
struct ctx {
	const char *sql;
	size_t sql_len;
	const char *key;
	int key_type;               /* 0 integer, 1 text, 2 uuid (config.h's SHARDKEY_*) */
	struct shsql_stmt *st;
	uint32_t cap;               /* of st->v */
	bool oom;
	uint16_t max_param;
};

static bool add_value(struct ctx *x, const struct shsql_value *v)
{
	struct shsql_stmt *st = x->st;
	if (st->n_values >= SHSQL_VALUES_MAX)
		return false;
	if (st->n_values == x->cap) {
		uint32_t cap = x->cap ? x->cap * 2 : 4;
		struct shsql_value *nv = realloc(st->v, cap * sizeof(*nv));
		if (!nv) {
			x->oom = true;
			return false;
		}
		st->v = nv;
		x->cap = cap;
	}
	st->v[st->n_values++] = *v;
	return true;
}

/* Drops the values gathered for the current statement (it turned out not to be keyed). */
static void drop_values(struct shsql_stmt *st)
{
	for (uint32_t j = 0; j < st->n_values; j++)
		free(st->v[j].str);
	st->n_values = 0;
}

/* ---- walking the tree -------------------------------------------------------------------- */

/* What a statement holds besides its own clauses: anything here reads or writes other rows
 * than the ones its WHERE clause names, or runs a query of its own. */
struct scan {
	bool sublink;               /* a subquery in an expression (EXISTS, IN (SELECT), ...) */
	bool subselect;             /* a subquery, function or sample in FROM */
	bool join;
	bool cte;
	bool funcs;                 /* a function call anywhere (could be an aggregate) */
	bool current_of;
	uint16_t max_param;
};

/* Visits every message under m (all set fields, every list item, the active member of each
 * oneof), noting the node kinds struct scan asks about.  Generic through protobuf-c's
 * descriptors, so no node type of PostgreSQL's grammar is ever missed. */
static void scan_msg(const ProtobufCMessage *m, struct scan *s, int depth)
{
	if (!m || depth > 1000)
		return;
	const ProtobufCMessageDescriptor *d = m->descriptor;
	if (d == &pg_query__node__descriptor) {
		const Node *n = (const Node *)m;
		switch (n->node_case) {
		case PG_QUERY__NODE__NODE_SUB_LINK: s->sublink = true; break;
		case PG_QUERY__NODE__NODE_RANGE_SUBSELECT:
		case PG_QUERY__NODE__NODE_RANGE_FUNCTION:
		case PG_QUERY__NODE__NODE_RANGE_TABLE_SAMPLE:
		case PG_QUERY__NODE__NODE_RANGE_TABLE_FUNC: s->subselect = true; break;
		case PG_QUERY__NODE__NODE_JOIN_EXPR: s->join = true; break;
		case PG_QUERY__NODE__NODE_WITH_CLAUSE:
		case PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR: s->cte = true; break;
		case PG_QUERY__NODE__NODE_FUNC_CALL: s->funcs = true; break;
		case PG_QUERY__NODE__NODE_CURRENT_OF_EXPR: s->current_of = true; break;
		case PG_QUERY__NODE__NODE_PARAM_REF:
			if (n->param_ref->number > s->max_param && n->param_ref->number <= UINT16_MAX)
				s->max_param = (uint16_t)n->param_ref->number;
			break;
		default: break;
		}
	} else if (d == &pg_query__with_clause__descriptor) {
		s->cte = true;
	}
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		const char *base = (const char *)m;
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
			if (which != f->id)
				continue;
		}
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t cnt = *(const size_t *)(base + f->quantifier_offset);
			ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + f->offset);
			for (size_t k = 0; k < cnt; k++)
				scan_msg(arr[k], s, depth + 1);
		} else {
			scan_msg(*(const ProtobufCMessage *const *)(base + f->offset), s, depth + 1);
		}
	}
}

static void scan_node(const void *m, struct scan *s)
{
	scan_msg((const ProtobufCMessage *)m, s, 0);
}

/* ---- constants ----------------------------------------------------------------------------- */

/* The last name of a (possibly schema-qualified) type, when it is pg_catalog's or unqualified. */
static const char *type_base_name(const PgQuery__TypeName *t)
{
	if (!t || t->n_names == 0 || t->n_names > 2 || t->setof || t->pct_type ||
	    t->n_typmods || t->n_array_bounds)
		return NULL;
	const Node *last = t->names[t->n_names - 1];
	if (last->node_case != PG_QUERY__NODE__NODE_STRING)
		return NULL;
	if (t->n_names == 2) {
		const Node *sch = t->names[0];
		if (sch->node_case != PG_QUERY__NODE__NODE_STRING || strcmp(sch->string->sval, "pg_catalog") != 0)
			return NULL;
	}
	return last->string->sval;
}

/* The casts that keep a key's value: to an integer type for integer keys, to text or an
 * unbounded varchar for text keys, to uuid for uuid keys.  Typmods (varchar(3), char(4),
 * numeric(5,2)), arrays and every other type change or may change the value. */
static int cast_type(const struct ctx *x, const PgQuery__TypeName *t)
{
	const char *n = type_base_name(t);
	if (!n)
		return -1;
	if (x->key_type == 0) {
		/* the grammar maps smallint/integer/bigint/int to these */
		if (!strcmp(n, "int2"))
			return SHSQL_T_INT2;
		if (!strcmp(n, "int4"))
			return SHSQL_T_INT4;
		if (!strcmp(n, "int8"))
			return SHSQL_T_INT8;
		return -1;
	}
	if (x->key_type == 1) {
		if (!strcmp(n, "text") || !strcmp(n, "varchar"))
			return SHSQL_T_TEXT;
		return -1;
	}
	return !strcmp(n, "uuid") ? SHSQL_T_UUID : -1;
}

/* PostgreSQL's int8in: optional blanks, an optional sign, digits, optional blanks. */
static bool parse_int8(const char *s, int64_t *out)
{
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v')
		s++;
	bool neg = false;
	if (*s == '+' || *s == '-')
		neg = *s++ == '-';
	if (!isdigit((unsigned char)*s))
		return false;
	uint64_t v = 0;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > ((uint64_t)INT64_MAX + 1 - d) / 10)
			return false;
		v = v * 10 + d;
	}
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v')
		s++;
	if (*s)
		return false;
	if (!neg && v > (uint64_t)INT64_MAX)
		return false;
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

static bool fits(int type, int64_t v)
{
	if (type == SHSQL_T_INT2)
		return v >= INT16_MIN && v <= INT16_MAX;
	if (type == SHSQL_T_INT4)
		return v >= INT32_MIN && v <= INT32_MAX;
	return true;
}

/* Where the literal of an A_Const starts: PostgreSQL moves a negated constant's location to
 * its minus sign.  -1 when the digits do not follow the minus directly (blanks aside). */
static int32_t literal_loc(const struct ctx *x, int32_t loc, bool *negated)
{
	*negated = false;
	if (loc < 0 || (size_t)loc >= x->sql_len)
		return -1;
	if (x->sql[loc] != '-')
		return loc;
	*negated = true;
	size_t i = (size_t)loc + 1;
	while (i < x->sql_len && (x->sql[i] == ' ' || x->sql[i] == '\t' || x->sql[i] == '\n' ||
				  x->sql[i] == '\r'))
		i++;
	return i < x->sql_len && (isdigit((unsigned char)x->sql[i]) || x->sql[i] == '.') ? (int32_t)i : -1;
}

/*
 * A constant that stands for a key value: a literal or $n, bare or with one value-keeping
 * cast.  Fills *v and returns true; false when n is anything else or its value is not one
 * PostgreSQL would compare as that key (NULL, a fraction, out of range, not a number).
 */
static bool key_constant(struct ctx *x, const Node *n, struct shsql_value *v)
{
	memset(v, 0, sizeof(*v));
	int cast = SHSQL_T_NONE;
	if (n->node_case == PG_QUERY__NODE__NODE_TYPE_CAST) {
		cast = cast_type(x, n->type_cast->type_name);
		if (cast < 0 || !n->type_cast->arg)
			return false;
		n = n->type_cast->arg;
	}
	v->cast = (uint8_t)cast;
	if (n->node_case == PG_QUERY__NODE__NODE_PARAM_REF) {
		int num = n->param_ref->number;
		if (num < 1 || num > UINT16_MAX)
			return false;
		v->src = SHSQL_PARAM;
		v->param = (uint16_t)num;
		v->loc = n->param_ref->location;
		return true;
	}
	if (n->node_case != PG_QUERY__NODE__NODE_A_CONST || n->a_const->isnull)
		return false;
	const PgQuery__AConst *c = n->a_const;
	v->loc = literal_loc(x, c->location, &v->negated);
	switch (c->val_case) {
	case PG_QUERY__A__CONST__VAL_IVAL:
		/* a text key: an integer is stored as its digits (a uuid key: no value) */
		if (x->key_type == 2 || cast == SHSQL_T_TEXT)
			return false;
		v->src = SHSQL_LIT_INT;
		v->ival = c->ival ? c->ival->ival : 0;
		return fits(cast, v->ival);
	case PG_QUERY__A__CONST__VAL_FVAL: {
		/* Integers past int4 arrive as Float; fractions and exponents are no integer key. */
		if (x->key_type == 2 || cast == SHSQL_T_TEXT || !c->fval || !c->fval->fval)
			return false;
		const char *s = c->fval->fval;
		for (const char *p = *s == '-' ? s + 1 : s; *p; p++)
			if (!isdigit((unsigned char)*p))
				return false;
		v->src = SHSQL_LIT_INT;
		return parse_int8(s, &v->ival) && fits(cast, v->ival);
	}
	case PG_QUERY__A__CONST__VAL_SVAL: {
		const char *s = c->sval && c->sval->sval ? c->sval->sval : "";
		if (v->negated)
			return false;
		if (x->key_type == 0) {
			/* '60' or '60'::int8: the column's input function reads it */
			v->src = SHSQL_LIT_INT;
			return parse_int8(s, &v->ival) && fits(cast, v->ival);
		}
		v->src = SHSQL_LIT_STR;
		v->str_len = (uint32_t)strlen(s);
		if (!(v->str = strdup(s))) {
			x->oom = true;
			return false;
		}
		return true;
	}
	default:
		return false;
	}
}

/* ---- the key in WHERE -------------------------------------------------------------------- */

static const char *string_of(const Node *n)
{
	return n && n->node_case == PG_QUERY__NODE__NODE_STRING && n->string->sval ? n->string->sval : NULL;
}

/* A column reference to the key of relation rel (named plainly, by the table's name or alias,
 * or schema.table). */
static bool is_key_column(const struct ctx *x, const Node *n, const PgQuery__RangeVar *rel)
{
	if (!n || n->node_case != PG_QUERY__NODE__NODE_COLUMN_REF)
		return false;
	const PgQuery__ColumnRef *c = n->column_ref;
	if (c->n_fields < 1 || c->n_fields > 3)
		return false;
	const char *col = string_of(c->fields[c->n_fields - 1]);
	if (!col || strcmp(col, x->key) != 0)
		return false;
	if (c->n_fields == 1)
		return true;
	const char *tab = string_of(c->fields[c->n_fields - 2]);
	if (!tab || !rel)
		return false;
	const char *alias = rel->alias && rel->alias->aliasname ? rel->alias->aliasname : NULL;
	if (c->n_fields == 2)
		return alias ? strcmp(tab, alias) == 0 : strcmp(tab, rel->relname) == 0;
	const char *sch = string_of(c->fields[0]);
	return !alias && sch && rel->schemaname && strcmp(sch, rel->schemaname) == 0 &&
	       strcmp(tab, rel->relname) == 0;
}

static bool is_op(const PgQuery__AExpr *e, const char *op)
{
	return e->n_name == 1 && string_of(e->name[0]) && strcmp(string_of(e->name[0]), op) == 0;
}

/* One top-level conjunct: "key = c", "c = key" or "key IN (c, ...)" adds its values (all or
 * none); anything else adds nothing.  Returns true when it added values. */
static bool conjunct_keys(struct ctx *x, const Node *n, const PgQuery__RangeVar *rel)
{
	if (n->node_case != PG_QUERY__NODE__NODE_A_EXPR)
		return false;
	const PgQuery__AExpr *e = n->a_expr;
	struct shsql_value v;
	if (e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP && is_op(e, "=") && e->lexpr && e->rexpr) {
		const Node *c = is_key_column(x, e->lexpr, rel) ? e->rexpr
			      : is_key_column(x, e->rexpr, rel) ? e->lexpr : NULL;
		if (!c || !key_constant(x, c, &v))
			return false;
		if (!add_value(x, &v)) {
			free(v.str);
			return false;
		}
		return true;
	}
	if (e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_IN && is_op(e, "=") &&
	    is_key_column(x, e->lexpr, rel) && e->rexpr &&
	    e->rexpr->node_case == PG_QUERY__NODE__NODE_LIST) {
		const PgQuery__List *l = e->rexpr->list;
		uint32_t before = x->st->n_values;
		for (size_t i = 0; i < l->n_items; i++) {
			if (!key_constant(x, l->items[i], &v) || !add_value(x, &v)) {
				free(v.str);
				/* one unprovable member: the list names rows of unknown keys */
				while (x->st->n_values > before)
					free(x->st->v[--x->st->n_values].str);
				return false;
			}
		}
		return l->n_items > 0;
	}
	return false;
}

/* An OR whose every branch is a key equality or key IN list ("key = 1 OR key = 2") names
 * exactly the union of their values; any other branch could match rows of any key. */
static bool or_keys(struct ctx *x, const Node *n, const PgQuery__RangeVar *rel, int depth)
{
	if (depth > 100 || n->node_case != PG_QUERY__NODE__NODE_BOOL_EXPR ||
	    n->bool_expr->boolop != PG_QUERY__BOOL_EXPR_TYPE__OR_EXPR)
		return false;
	uint32_t before = x->st->n_values;
	for (size_t i = 0; i < n->bool_expr->n_args; i++) {
		const Node *a = n->bool_expr->args[i];
		if (!or_keys(x, a, rel, depth + 1) && !conjunct_keys(x, a, rel)) {
			while (x->st->n_values > before)
				free(x->st->v[--x->st->n_values].str);
			return false;
		}
	}
	return n->bool_expr->n_args > 0;
}

/* Collects key values from the top-level AND conjuncts of a WHERE clause.  Rows must meet
 * every conjunct, so one keyed conjunct bounds them; all keyed conjuncts are kept and must
 * agree on a shard. */
static void where_keys(struct ctx *x, const Node *w, const PgQuery__RangeVar *rel, int depth)
{
	if (!w || depth > 100)
		return;
	if (w->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR &&
	    w->bool_expr->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR) {
		for (size_t i = 0; i < w->bool_expr->n_args; i++)
			where_keys(x, w->bool_expr->args[i], rel, depth + 1);
		return;
	}
	if (!conjunct_keys(x, w, rel))
		or_keys(x, w, rel, depth + 1);
}

/* ---- statements ---------------------------------------------------------------------------- */

static void set_nokey(struct shsql_stmt *st, uint8_t kind, const char *why)
{
	drop_values(st);
	st->kind = kind;
	st->verdict = SHSQL_NOKEY;
	st->why = why;
}

static void set_refuse(struct shsql_stmt *st, uint8_t kind, const char *why)
{
	drop_values(st);
	st->kind = kind;
	st->verdict = SHSQL_REFUSE;
	st->why = why;
}

/* Rows with keys pgmux cannot see: refused, hint or no hint (a hint does not know the row's
 * key either, and a row must never sit on another shard than its key's). */
static void set_hidden(struct shsql_stmt *st, const char *why)
{
	set_refuse(st, SHSQL_WRITE, why);
}

static void keyed_or_nokey(struct shsql_stmt *st, uint8_t kind, const char *why_none)
{
	st->kind = kind;
	if (st->n_values) {
		st->verdict = SHSQL_KEYED;
		st->why = NULL;
	} else {
		set_nokey(st, kind, why_none);
	}
}

static bool is_data_modifying_cte(const PgQuery__WithClause *w)
{
	for (size_t i = 0; w && i < w->n_ctes; i++) {
		const Node *c = w->ctes[i];
		if (c->node_case != PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR || !c->common_table_expr->ctequery)
			return true;
		switch (c->common_table_expr->ctequery->node_case) {
		case PG_QUERY__NODE__NODE_SELECT_STMT:
			if (c->common_table_expr->ctequery->select_stmt->into_clause)
				return true;
			break;
		default:
			return true;   /* INSERT / UPDATE / DELETE ... RETURNING inside WITH */
		}
	}
	return false;
}

static void analyze_select(struct ctx *x, const PgQuery__SelectStmt *s)
{
	struct shsql_stmt *st = x->st;
	struct scan sc = { 0 };
	scan_node(s, &sc);
	if (s->into_clause) {
		set_nokey(st, SHSQL_WRITE, "SELECT INTO creates a table from rows of one shard");
		return;
	}
	if (s->with_clause && is_data_modifying_cte(s->with_clause)) {
		set_nokey(st, SHSQL_WRITE, "a data-modifying WITH query cannot be checked for its key");
		return;
	}
	if (s->op != PG_QUERY__SET_OPERATION__SETOP_NONE) {
		set_nokey(st, SHSQL_READ, "a UNION, INTERSECT or EXCEPT reads rows of any key");
		return;
	}
	if (s->n_values_lists || s->n_from_clause == 0) {
		/* VALUES, or SELECT without FROM: no table, unless a subquery or a function (which
		 * may read one, or answer per server) is in it */
		if (sc.sublink || sc.cte) {
			set_nokey(st, SHSQL_READ, "a subquery reads rows of any key");
		} else if (sc.funcs) {
			/* SELECT now(), nextval(..): no table of its own, but a function may read one */
			set_nokey(st, SHSQL_READ, "a function may read rows of any key");
			st->no_table = true;
		} else {
			st->kind = SHSQL_UTILITY, st->verdict = SHSQL_NOKEY, st->why = "no table";
			st->no_table = true;
		}
		return;
	}
	const Node *from = s->from_clause[0];
	if (s->n_from_clause != 1 || from->node_case != PG_QUERY__NODE__NODE_RANGE_VAR || sc.join ||
	    sc.subselect || sc.sublink || sc.cte) {
		set_nokey(st, SHSQL_READ, "a join, subquery or WITH query reads rows of any key");
		return;
	}
	where_keys(x, s->where_clause, from->range_var, 0);
	keyed_or_nokey(st, SHSQL_READ, "no key = constant in the WHERE clause's top-level AND");
	/* Each shard's rows, concatenated, answer it exactly only when nothing combines rows. */
	st->fanout_ok = st->verdict == SHSQL_NOKEY && !sc.funcs && !s->n_distinct_clause &&
			!s->n_group_clause && !s->having_clause && !s->n_window_clause &&
			!s->n_sort_clause && !s->limit_count && !s->limit_offset && !s->n_locking_clause;
	/* Otherwise mergeplan.c decides whether pgmux can combine the shards' rows itself. */
	st->merge_ok = st->verdict == SHSQL_NOKEY && !s->n_locking_clause;
}

static bool targets_assign_key(const struct ctx *x, Node *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const Node *t = list[i];
		if (t->node_case == PG_QUERY__NODE__NODE_RES_TARGET && t->res_target->name &&
		    strcmp(t->res_target->name, x->key) == 0)
			return true;
	}
	return false;
}

static void analyze_insert(struct ctx *x, const PgQuery__InsertStmt *s)
{
	struct shsql_stmt *st = x->st;
	struct scan sc = { 0 };
	scan_node(s, &sc);
	if (s->with_clause || sc.cte) {
		set_hidden(st, "INSERT with a WITH query: its rows' keys cannot be checked");
		return;
	}
	if (s->on_conflict_clause &&
	    s->on_conflict_clause->action == PG_QUERY__ON_CONFLICT_ACTION__ONCONFLICT_UPDATE &&
	    targets_assign_key(x, s->on_conflict_clause->target_list, s->on_conflict_clause->n_target_list)) {
		set_refuse(st, SHSQL_WRITE, "ON CONFLICT DO UPDATE that changes the shard key (a row "
			   "cannot move between shards)");
		return;
	}
	int key_col = -1;
	for (size_t i = 0; i < s->n_cols; i++) {
		const Node *c = s->cols[i];
		if (c->node_case != PG_QUERY__NODE__NODE_RES_TARGET || !c->res_target->name)
			continue;
		if (strcmp(c->res_target->name, x->key) == 0) {
			if (key_col >= 0 || c->res_target->n_indirection) {
				set_refuse(st, SHSQL_WRITE, "INSERT that names the shard key twice or a part of it");
				return;
			}
			key_col = (int)i;
		}
	}
	if (s->n_cols == 0) {
		set_hidden(st, "INSERT without a column list: name the columns so that pgmux can read "
			   "the shard key");
		return;
	}
	if (key_col < 0) {
		/* no key column: a table that is not sharded by it, as far as pgmux can tell */
		set_nokey(st, SHSQL_WRITE, "INSERT without the shard key in its column list");
		return;
	}
	const Node *sel = s->select_stmt;
	const PgQuery__SelectStmt *v = sel && sel->node_case == PG_QUERY__NODE__NODE_SELECT_STMT ? sel->select_stmt : NULL;
	if (!v || !v->n_values_lists || v->n_from_clause || v->where_clause || v->with_clause ||
	    v->op != PG_QUERY__SET_OPERATION__SETOP_NONE || v->n_sort_clause || v->limit_count ||
	    v->limit_offset) {
		set_hidden(st, "INSERT ... SELECT: its rows' keys come from a query");
		return;
	}
	if (sc.sublink) {
		set_hidden(st, "INSERT with a subquery");
		return;
	}
	for (size_t r = 0; r < v->n_values_lists; r++) {
		const Node *row = v->values_lists[r];
		if (row->node_case != PG_QUERY__NODE__NODE_LIST || row->list->n_items != s->n_cols) {
			set_refuse(st, SHSQL_WRITE, "INSERT whose VALUES rows do not match its column list");
			return;
		}
		struct shsql_value val;
		if (!key_constant(x, row->list->items[key_col], &val)) {
			set_refuse(st, SHSQL_WRITE, "INSERT whose shard key value is not a constant pgmux "
				   "can read (a literal or $n, with at most one cast that keeps its value)");
			return;
		}
		if (!add_value(x, &val)) {
			free(val.str);
			set_refuse(st, SHSQL_WRITE, "INSERT with too many rows to check");
			return;
		}
	}
	st->kind = SHSQL_WRITE;
	st->verdict = SHSQL_KEYED;
	st->insert = true;
}

static void analyze_update(struct ctx *x, const PgQuery__UpdateStmt *s)
{
	struct shsql_stmt *st = x->st;
	if (targets_assign_key(x, s->target_list, s->n_target_list)) {
		set_refuse(st, SHSQL_WRITE, "UPDATE that changes the shard key (a row cannot move "
			   "between shards)");
		return;
	}
	struct scan sc = { 0 };
	scan_node(s, &sc);
	if (s->n_from_clause || s->with_clause || sc.sublink || sc.cte || sc.subselect || sc.join ||
	    sc.current_of) {
		set_nokey(st, SHSQL_WRITE, "UPDATE with FROM, WITH, a subquery or WHERE CURRENT OF");
		return;
	}
	where_keys(x, s->where_clause, s->relation, 0);
	keyed_or_nokey(st, SHSQL_WRITE, "no key = constant in the WHERE clause's top-level AND");
}

static void analyze_delete(struct ctx *x, const PgQuery__DeleteStmt *s)
{
	struct shsql_stmt *st = x->st;
	struct scan sc = { 0 };
	scan_node(s, &sc);
	if (s->n_using_clause || s->with_clause || sc.sublink || sc.cte || sc.subselect || sc.join ||
	    sc.current_of) {
		set_nokey(st, SHSQL_WRITE, "DELETE with USING, WITH, a subquery or WHERE CURRENT OF");
		return;
	}
	where_keys(x, s->where_clause, s->relation, 0);
	keyed_or_nokey(st, SHSQL_WRITE, "no key = constant in the WHERE clause's top-level AND");
}

static void analyze_node(struct ctx *x, const Node *n, int depth);

static void analyze_explain(struct ctx *x, const PgQuery__ExplainStmt *e, int depth)
{
	bool analyze = false;
	for (size_t i = 0; i < e->n_options; i++) {
		const Node *o = e->options[i];
		if (o->node_case == PG_QUERY__NODE__NODE_DEF_ELEM && o->def_elem->defname &&
		    strcmp(o->def_elem->defname, "analyze") == 0) {
			/* EXPLAIN (ANALYZE false) plans only; any other value runs the statement */
			const Node *a = o->def_elem->arg;
			analyze = !(a && a->node_case == PG_QUERY__NODE__NODE_STRING && a->string->sval &&
				    (!strcmp(a->string->sval, "false") || !strcmp(a->string->sval, "off") ||
				     !strcmp(a->string->sval, "0")));
			if (a && a->node_case == PG_QUERY__NODE__NODE_BOOLEAN)
				analyze = a->boolean->boolval;
			if (a && a->node_case == PG_QUERY__NODE__NODE_INTEGER)
				analyze = a->integer->ival != 0;
		}
	}
	if (!e->query) {
		x->st->kind = SHSQL_UTILITY;
		x->st->verdict = SHSQL_NOKEY;
		return;
	}
	analyze_node(x, e->query, depth + 1);
	if (!analyze && x->st->kind == SHSQL_WRITE && x->st->verdict == SHSQL_REFUSE)
		x->st->verdict = SHSQL_NOKEY;   /* only planned: nothing is written */
	if (!analyze)
		x->st->kind = x->st->kind == SHSQL_UTILITY ? SHSQL_UTILITY : SHSQL_READ;
	x->st->fanout_ok = false;
	x->st->merge_ok = false;
}

static void analyze_node(struct ctx *x, const Node *n, int depth)
{
	struct shsql_stmt *st = x->st;
	if (!n || depth > 4) {
		set_nokey(st, SHSQL_WRITE, "unknown statement");
		return;
	}
	switch (n->node_case) {
	case PG_QUERY__NODE__NODE_SELECT_STMT:
		analyze_select(x, n->select_stmt);
		break;
	case PG_QUERY__NODE__NODE_INSERT_STMT:
		analyze_insert(x, n->insert_stmt);
		break;
	case PG_QUERY__NODE__NODE_UPDATE_STMT:
		analyze_update(x, n->update_stmt);
		break;
	case PG_QUERY__NODE__NODE_DELETE_STMT:
		analyze_delete(x, n->delete_stmt);
		break;
	case PG_QUERY__NODE__NODE_EXPLAIN_STMT:
		analyze_explain(x, n->explain_stmt, depth);
		break;
	case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
		/* the cursor's rows are its query's */
		analyze_node(x, n->declare_cursor_stmt->query, depth + 1);
		st->fanout_ok = false;
		st->merge_ok = false;
		break;
	case PG_QUERY__NODE__NODE_TRANSACTION_STMT:
		st->tx_control = true;
		/* fall through */
	case PG_QUERY__NODE__NODE_VARIABLE_SET_STMT:
	case PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT:
	case PG_QUERY__NODE__NODE_DISCARD_STMT:
	case PG_QUERY__NODE__NODE_DEALLOCATE_STMT:
	case PG_QUERY__NODE__NODE_PREPARE_STMT:
	case PG_QUERY__NODE__NODE_LISTEN_STMT:
	case PG_QUERY__NODE__NODE_UNLISTEN_STMT:
	case PG_QUERY__NODE__NODE_NOTIFY_STMT:
	case PG_QUERY__NODE__NODE_FETCH_STMT:
	case PG_QUERY__NODE__NODE_CLOSE_PORTAL_STMT:
	case PG_QUERY__NODE__NODE_CHECK_POINT_STMT:
		st->kind = SHSQL_UTILITY;
		st->verdict = SHSQL_NOKEY;
		st->why = "no table";
		st->no_table = true;
		break;
	case PG_QUERY__NODE__NODE_COPY_STMT:
		if (n->copy_stmt->is_from)
			set_hidden(st, "COPY FROM into a sharded database: its rows' keys are not read "
				   "(load each shard directly)");
		else
			set_nokey(st, SHSQL_READ, "COPY TO reads rows of any key");
		break;
	case PG_QUERY__NODE__NODE_EXECUTE_STMT:
		set_nokey(st, SHSQL_WRITE, "EXECUTE of an SQL-level prepared statement: its key is "
			  "not visible");
		break;
	case PG_QUERY__NODE__NODE_MERGE_STMT:
		set_hidden(st, "MERGE cannot be checked for its rows' keys");
		break;
	case PG_QUERY__NODE__NODE_DO_STMT:
	case PG_QUERY__NODE__NODE_CALL_STMT:
		set_nokey(st, SHSQL_WRITE, "DO and CALL run code whose rows' keys are not visible");
		break;
	case PG_QUERY__NODE__NODE_CREATE_TABLE_AS_STMT:
		set_nokey(st, SHSQL_WRITE, "CREATE TABLE AS creates a table from rows of one shard");
		break;
	default:
		/* DDL, TRUNCATE, VACUUM, GRANT, LOCK ...: no key; the policy, a hint or a session key
		 * decide, as for any statement without one */
		set_nokey(st, SHSQL_WRITE, "a statement without a shard key");
		break;
	}
}

int shsql_analyze(const char *sql, const char *key, int key_type, struct shsql_result *r)
{
	memset(r, 0, sizeof(*r));
	PgQueryProtobufParseResult pr = pg_query_parse_protobuf(sql);
	if (pr.error) {
		r->parse_error = true;
		snprintf(r->message, sizeof(r->message), "%s", pr.error->message ? pr.error->message : "syntax error");
		r->error_loc = pr.error->cursorpos;
		pg_query_free_protobuf_parse_result(pr);
		return 0;
	}
	PgQuery__ParseResult *tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
								       (const uint8_t *)pr.parse_tree.data);
	pg_query_free_protobuf_parse_result(pr);
	if (!tree)
		return -1;
	int rc = 0;
	uint32_t n = (uint32_t)tree->n_stmts;
	if (n > SHSQL_STMTS_MAX) {
		r->parse_error = true;
		snprintf(r->message, sizeof(r->message), "more than %d statements in one query string",
			 SHSQL_STMTS_MAX);
		goto out;
	}
	if (n && !(r->st = calloc(n, sizeof(*r->st)))) {
		rc = -1;
		goto out;
	}
	r->n_stmts = n;
	for (uint32_t i = 0; i < n; i++) {
		struct ctx x = { .sql = sql, .sql_len = strlen(sql), .key = key, .key_type = key_type,
				 .st = &r->st[i] };
		const PgQuery__RawStmt *rs = tree->stmts[i];
		r->st[i].loc = rs->stmt_location;
		analyze_node(&x, rs->stmt, 0);
		struct scan sc = { 0 };
		scan_node(rs, &sc);
		if (sc.max_param > r->max_param)
			r->max_param = sc.max_param;
		if (x.oom) {
			rc = -1;
			break;
		}
	}
out:
	pg_query__parse_result__free_unpacked(tree, NULL);
	if (rc < 0)
		shsql_free(r);
	return rc;
}
