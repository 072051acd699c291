/* mergeplan.c: how a keyless read that runs on every shard is rewritten for the shards and merged back (pure). */
#include "mergeplan.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

typedef PgQuery__Node Node;

/* ---- small tree helpers ------------------------------------------------------------------ */

/* A deep copy of a node, through protobuf's own encoding: the copy is freed with the tree it
 * is linked into.  NULL when out of memory. */
static Node *copy_node(const Node *n)
{
	size_t len = pg_query__node__get_packed_size(n);
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return NULL;
	pg_query__node__pack(n, buf);
	Node *c = pg_query__node__unpack(NULL, len, buf);
	free(buf);
	return c;
}

static Node *new_int_const(int64_t v)
{
	Node *n = malloc(sizeof(*n));
	PgQuery__AConst *a = malloc(sizeof(*a));
	if (!n || !a) {
		free(n);
		free(a);
		return NULL;
	}
	pg_query__node__init(n);
	pg_query__a__const__init(a);
	a->location = -1;
	n->node_case = PG_QUERY__NODE__NODE_A_CONST;
	n->a_const = a;
	if (v <= INT32_MAX) {
		PgQuery__Integer *i = malloc(sizeof(*i));
		if (!i)
			goto fail;
		pg_query__integer__init(i);
		i->ival = (int32_t)v;
		a->val_case = PG_QUERY__A__CONST__VAL_IVAL;
		a->ival = i;
	} else {
		/* Beyond int4, PostgreSQL's grammar reads the literal as a Float node (numeric). */
		PgQuery__Float *f = malloc(sizeof(*f));
		char *s = malloc(24);
		if (!f || !s) {
			free(f);
			free(s);
			goto fail;
		}
		pg_query__float__init(f);
		snprintf(s, 24, "%lld", (long long)v);
		f->fval = s;
		a->val_case = PG_QUERY__A__CONST__VAL_FVAL;
		a->fval = f;
	}
	return n;
fail:
	pg_query__node__free_unpacked(n, NULL);
	return NULL;
}

/* Appends a target to the statement's list (the list is the tree's: freed with it). */
static bool append_target(PgQuery__SelectStmt *s, Node *val)
{
	Node *n = malloc(sizeof(*n));
	PgQuery__ResTarget *rt = malloc(sizeof(*rt));
	Node **list = realloc(s->target_list, (s->n_target_list + 1) * sizeof(*list));
	if (list)
		s->target_list = list;
	if (!n || !rt || !list || !val) {
		free(n);
		free(rt);
		if (val)
			pg_query__node__free_unpacked(val, NULL);
		return false;
	}
	pg_query__node__init(n);
	pg_query__res_target__init(rt);
	rt->val = val;
	rt->location = -1;
	n->node_case = PG_QUERY__NODE__NODE_RES_TARGET;
	n->res_target = rt;
	list[s->n_target_list++] = n;
	return true;
}

/* Whether m (any message of the tree) holds a node of kind k anywhere below it. */
static bool holds(const ProtobufCMessage *m, PgQuery__Node__NodeCase k, int depth)
{
	if (!m || depth > 1000)
		return depth > 1000;
	const ProtobufCMessageDescriptor *d = m->descriptor;
	if (d == &pg_query__node__descriptor && ((const Node *)m)->node_case == k)
		return true;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		const char *base = (const char *)m;
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(base + f->quantifier_offset) != f->id)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t cnt = *(const size_t *)(base + f->quantifier_offset);
			ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + f->offset);
			for (size_t j = 0; j < cnt; j++)
				if (holds(arr[j], k, depth + 1))
					return true;
		} else if (holds(*(const ProtobufCMessage *const *)(base + f->offset), k, depth + 1)) {
			return true;
		}
	}
	return false;
}

static bool holds_func(const Node *n)
{
	return holds(&n->base, PG_QUERY__NODE__NODE_FUNC_CALL, 0) ||
	       holds(&n->base, PG_QUERY__NODE__NODE_GROUPING_FUNC, 0);
}

static const char *str_of(const Node *n)
{
	return n && n->node_case == PG_QUERY__NODE__NODE_STRING && n->string ? n->string->sval : NULL;
}

/* COLLATE "C" or "POSIX" (optionally pg_catalog.): the collations whose order is the bytes'. */
static bool is_collate_c(const Node *n)
{
	if (!n || n->node_case != PG_QUERY__NODE__NODE_COLLATE_CLAUSE)
		return false;
	const PgQuery__CollateClause *c = n->collate_clause;
	if (c->n_collname < 1 || c->n_collname > 2)
		return false;
	if (c->n_collname == 2 && (!str_of(c->collname[0]) || strcmp(str_of(c->collname[0]), "pg_catalog")))
		return false;
	const char *name = str_of(c->collname[c->n_collname - 1]);
	return name && (!strcmp(name, "C") || !strcmp(name, "POSIX"));
}

/* The aggregate a top-level function call is, MP_PLAIN when it is none pgmux merges; *bad
 * says why it is refused when it is a call pgmux cannot merge. */
static int agg_of(const Node *n, const char **bad)
{
	*bad = NULL;
	if (!n || n->node_case != PG_QUERY__NODE__NODE_FUNC_CALL)
		return MP_PLAIN;
	const PgQuery__FuncCall *f = n->func_call;
	const char *name = f->n_funcname ? str_of(f->funcname[f->n_funcname - 1]) : NULL;
	if (f->n_funcname == 2 && (!str_of(f->funcname[0]) || strcmp(str_of(f->funcname[0]), "pg_catalog")))
		name = NULL;
	if (f->over) {
		*bad = "a window function";
		return -1;
	}
	if (!name || f->n_funcname > 2) {
		*bad = "a function other than count, sum, min, max or avg (pgmux cannot tell an "
		       "aggregate from a plain function)";
		return -1;
	}
	int agg = !strcmp(name, "count") ? MP_COUNT : !strcmp(name, "sum") ? MP_SUM :
		  !strcmp(name, "min") ? MP_MIN : !strcmp(name, "max") ? MP_MAX :
		  !strcmp(name, "avg") ? MP_AVG_SUM : -1;
	if (agg < 0) {
		*bad = "a function other than count, sum, min, max or avg (pgmux cannot tell an "
		       "aggregate from a plain function)";
		return -1;
	}
	if (f->over) {
		*bad = "a window function";
		return -1;
	}
	if (f->agg_distinct) {
		*bad = "an aggregate over DISTINCT values (count(DISTINCT x) and the like)";
		return -1;
	}
	if (f->agg_filter || f->n_agg_order || f->agg_within_group || f->func_variadic) {
		*bad = "an aggregate with FILTER, ORDER BY, WITHIN GROUP or VARIADIC";
		return -1;
	}
	if (f->agg_star ? (agg != MP_COUNT || f->n_args) : f->n_args != 1) {
		*bad = "an aggregate with other than one argument";
		return -1;
	}
	if (f->n_args && holds_func(f->args[0])) {
		*bad = "a function call inside an aggregate's argument";
		return -1;
	}
	return agg;
}

/* The name PostgreSQL gives a target's column, or NULL when it is "?column?"-like. */
static const char *target_name(const PgQuery__ResTarget *t)
{
	if (t->name && t->name[0])   /* protobuf-c gives "" for no alias */
		return t->name;
	const Node *v = t->val;
	if (v && v->node_case == PG_QUERY__NODE__NODE_COLUMN_REF && v->column_ref->n_fields)
		return str_of(v->column_ref->fields[v->column_ref->n_fields - 1]);
	if (v && v->node_case == PG_QUERY__NODE__NODE_FUNC_CALL && v->func_call->n_funcname)
		return str_of(v->func_call->funcname[v->func_call->n_funcname - 1]);
	return NULL;
}

/* Whether two column references name the same column the same way. */
static bool same_colref(const Node *a, const Node *b)
{
	if (!a || !b || a->node_case != PG_QUERY__NODE__NODE_COLUMN_REF ||
	    b->node_case != PG_QUERY__NODE__NODE_COLUMN_REF ||
	    a->column_ref->n_fields != b->column_ref->n_fields)
		return false;
	for (size_t i = 0; i < a->column_ref->n_fields; i++) {
		const char *x = str_of(a->column_ref->fields[i]), *y = str_of(b->column_ref->fields[i]);
		if (!x || !y || strcmp(x, y))
			return false;
	}
	return true;
}

/* An integer constant (ORDER BY 2, LIMIT 10): true with *v. */
static bool int_const(const Node *n, int64_t *v)
{
	if (!n || n->node_case != PG_QUERY__NODE__NODE_A_CONST || n->a_const->isnull)
		return false;
	if (n->a_const->val_case == PG_QUERY__A__CONST__VAL_IVAL) {
		*v = n->a_const->ival->ival;
		return true;
	}
	if (n->a_const->val_case == PG_QUERY__A__CONST__VAL_FVAL && n->a_const->fval->fval) {
		const char *s = n->a_const->fval->fval;
		char *end;
		errno = 0;
		long long x = strtoll(s, &end, 10);
		if (errno || *end || end == s)
			return false;
		*v = x;
		return true;
	}
	return false;
}

static bool is_null_const(const Node *n)
{
	return n && n->node_case == PG_QUERY__NODE__NODE_A_CONST && n->a_const->isnull;
}

/* ---- the plan ------------------------------------------------------------------------------ */

struct pctx {
	struct mergeplan *mp;
	PgQuery__SelectStmt *s;
	char *why;
	size_t why_cap;
};

static bool refuse(struct pctx *x, const char *what)
{
	snprintf(x->why, x->why_cap, "pgmux cannot merge the shards' answers to this read: %s is "
		 "not supported on a sharded database without a shard key", what);
	return false;
}

/* Describes a target expression as a column: its aggregate, its collation. */
static bool describe_col(struct pctx *x, const Node *v, struct mp_col *c)
{
	const char *bad;
	int agg = agg_of(v, &bad);
	if (agg < 0)
		return refuse(x, bad);
	memset(c, 0, sizeof(*c));
	c->avg_count = -1;
	c->agg = (uint8_t)agg;
	if (agg == MP_PLAIN) {
		if (v && holds_func(v))
			return refuse(x, "a function call or an expression over an aggregate in the "
				      "select list or ORDER BY (pgmux cannot tell an aggregate from a "
				      "plain function)");
		c->collate_c = is_collate_c(v);
	} else {
		x->mp->aggregate = true;
		c->collate_c = v->func_call->n_args && is_collate_c(v->func_call->args[0]);
	}
	return true;
}

/* Appends a hidden column with a copy of expression e; returns its index in cols, -1 on
 * refusal. */
static int add_hidden(struct pctx *x, const Node *e)
{
	struct mergeplan *mp = x->mp;
	int idx = mp->star ? mp->n_hidden : mp->n_cols;
	if (idx >= MP_MAX_COLS) {
		refuse(x, "a select list of more than 256 columns");
		return -1;
	}
	struct mp_col c;
	if (!describe_col(x, e, &c))
		return -1;
	if (c.agg == MP_AVG_SUM) {
		refuse(x, "ORDER BY avg(...) that is not in the select list");
		return -1;
	}
	if (mp->star && c.agg != MP_PLAIN) {
		refuse(x, "an aggregate with * in the select list");
		return -1;
	}
	c.hidden = true;
	if (!append_target(x->s, copy_node(e))) {
		refuse(x, "a statement too large for pgmux's memory");
		return -1;
	}
	mp->cols[idx] = c;
	mp->n_hidden++;
	if (!mp->star)
		mp->n_cols++;
	return idx;
}

/* The explicit target (0-based) an ORDER BY name stands for, PostgreSQL's way: an output
 * column's name first.  -1 none, -2 more than one. */
static int output_named(const PgQuery__SelectStmt *s, uint16_t n_targets, const Node *e)
{
	if (!e || e->node_case != PG_QUERY__NODE__NODE_COLUMN_REF || e->column_ref->n_fields != 1)
		return -1;
	const char *name = str_of(e->column_ref->fields[0]);
	if (!name)
		return -1;
	int found = -1;
	for (uint16_t i = 0; i < n_targets; i++) {
		const char *tn = target_name(s->target_list[i]->res_target);
		if (tn && !strcmp(tn, name)) {
			if (found >= 0)
				return -2;
			found = i;
		}
	}
	return found;
}

static bool plan_targets(struct pctx *x)
{
	struct mergeplan *mp = x->mp;
	PgQuery__SelectStmt *s = x->s;
	if (s->n_target_list > MP_MAX_COLS / 2)
		return refuse(x, "a select list of more than 128 columns");
	for (size_t i = 0; i < s->n_target_list; i++) {
		const Node *t = s->target_list[i];
		if (t->node_case != PG_QUERY__NODE__NODE_RES_TARGET || !t->res_target->val)
			return refuse(x, "this select list");
		const Node *v = t->res_target->val;
		if (v->node_case == PG_QUERY__NODE__NODE_COLUMN_REF &&
		    holds(&v->base, PG_QUERY__NODE__NODE_A_STAR, 0))
			mp->star = true;
	}
	if (mp->star && s->n_target_list != 1)
		return refuse(x, "* beside other columns in the select list");
	if (mp->star)
		return true;
	mp->n_targets = mp->n_cols = (uint16_t)s->n_target_list;
	for (uint16_t i = 0; i < mp->n_targets; i++)
		if (!describe_col(x, s->target_list[i]->res_target->val, &mp->cols[i]))
			return false;
	return true;
}

/* avg(x) runs as sum(x) on the shards, with a hidden count(x) to divide by. */
static bool rewrite_avgs(struct pctx *x)
{
	struct mergeplan *mp = x->mp;
	uint16_t n = mp->n_cols;
	for (uint16_t i = 0; i < n; i++) {
		if (mp->cols[i].agg != MP_AVG_SUM)
			continue;
		PgQuery__ResTarget *rt = x->s->target_list[i]->res_target;
		PgQuery__FuncCall *f = rt->val->func_call;
		/* The count's expression: the same argument under count(). */
		Node *cnt = copy_node(rt->val);
		if (!cnt)
			return refuse(x, "a statement too large for pgmux's memory");
		PgQuery__FuncCall *cf = cnt->func_call;
		char *cname = strdup("count"), *sname = strdup("sum");
		bool named = rt->name && rt->name[0];   /* protobuf-c gives "" for no alias */
		char *alias = named ? NULL : strdup("avg");
		if (!cname || !sname || (!named && !alias)) {
			free(cname);
			free(sname);
			free(alias);
			pg_query__node__free_unpacked(cnt, NULL);
			return refuse(x, "a statement too large for pgmux's memory");
		}
		PgQuery__String *cs = cf->funcname[cf->n_funcname - 1]->string;
		free(cs->sval);
		cs->sval = cname;
		PgQuery__String *ss = f->funcname[f->n_funcname - 1]->string;
		free(ss->sval);
		ss->sval = sname;
		if (alias)
			rt->name = alias;   /* the client's column is still called "avg" */
		if (mp->n_cols >= MP_MAX_COLS) {
			pg_query__node__free_unpacked(cnt, NULL);
			return refuse(x, "a select list of more than 256 columns");
		}
		if (!append_target(x->s, cnt))
			return refuse(x, "a statement too large for pgmux's memory");
		uint16_t k = mp->n_cols++;
		mp->n_hidden++;
		memset(&mp->cols[k], 0, sizeof(mp->cols[k]));
		mp->cols[k].agg = MP_AVG_COUNT;
		mp->cols[k].hidden = true;
		mp->cols[k].avg_count = -1;
		mp->cols[i].avg_count = (int16_t)k;
	}
	return true;
}

static bool plan_group(struct pctx *x)
{
	struct mergeplan *mp = x->mp;
	PgQuery__SelectStmt *s = x->s;
	if (!s->n_group_clause)
		return true;
	if (s->group_distinct)
		return refuse(x, "GROUP BY DISTINCT");
	if (mp->star)
		return refuse(x, "GROUP BY with * in the select list");
	mp->aggregate = true;
	size_t ng = s->n_group_clause;
	for (size_t i = 0; i < ng; i++) {
		const Node *g = s->group_clause[i];
		if (g->node_case == PG_QUERY__NODE__NODE_GROUPING_SET)
			return refuse(x, "GROUPING SETS, ROLLUP or CUBE");
		if (holds_func(g))
			return refuse(x, "a function call in GROUP BY");
		int64_t pos;
		if (int_const(g, &pos)) {
			if (pos < 1 || pos > mp->n_targets)
				return refuse(x, "a GROUP BY position outside the select list");
			if (mp->cols[pos - 1].agg != MP_PLAIN)
				return refuse(x, "GROUP BY an aggregate");
			continue;
		}
		bool found = false;
		for (uint16_t j = 0; j < mp->n_targets && !found; j++)
			found = mp->cols[j].agg == MP_PLAIN && same_colref(g, s->target_list[j]->res_target->val);
		/* A group expression the client does not select still keys the merge: the shards
		 * return it in a hidden column (the target list reads it as GROUP BY does, from
		 * the table). */
		if (!found && add_hidden(x, g) < 0)
			return false;
	}
	return true;
}

static bool plan_order(struct pctx *x)
{
	struct mergeplan *mp = x->mp;
	PgQuery__SelectStmt *s = x->s;
	if (s->n_sort_clause > MP_MAX_KEYS)
		return refuse(x, "ORDER BY with more than 32 keys");
	for (size_t i = 0; i < s->n_sort_clause; i++) {
		const Node *n = s->sort_clause[i];
		if (n->node_case != PG_QUERY__NODE__NODE_SORT_BY)
			return refuse(x, "this ORDER BY");
		const PgQuery__SortBy *sb = n->sort_by;
		if (sb->sortby_dir == PG_QUERY__SORT_BY_DIR__SORTBY_USING || sb->n_use_op)
			return refuse(x, "ORDER BY ... USING");
		struct mp_key *k = &mp->keys[mp->n_keys];
		memset(k, 0, sizeof(*k));
		k->desc = sb->sortby_dir == PG_QUERY__SORT_BY_DIR__SORTBY_DESC;
		k->nulls_first = sb->sortby_nulls == PG_QUERY__SORT_BY_NULLS__SORTBY_NULLS_FIRST ||
				 (k->desc && sb->sortby_nulls != PG_QUERY__SORT_BY_NULLS__SORTBY_NULLS_LAST);
		int64_t pos;
		int named;
		if (int_const(sb->node, &pos)) {
			if (pos < 1 || (!mp->star && pos > mp->n_targets))
				return refuse(x, "an ORDER BY position outside the select list");
			if (pos > MP_MAX_COLS)
				return refuse(x, "an ORDER BY position beyond column 256");
			k->col = (int16_t)(pos - 1);
			k->from_star = mp->star;
		} else if (!mp->star && (named = output_named(s, mp->n_targets, sb->node)) != -1) {
			if (named == -2)
				return refuse(x, "an ORDER BY name that more than one output column has");
			k->col = (int16_t)named;
		} else {
			/* An expression, or a table column the client does not select: the shards
			 * return it in a hidden column. */
			if (mp->distinct)
				return refuse(x, "SELECT DISTINCT ordered by an expression that is not an "
					      "output column");
			int h = add_hidden(x, sb->node);
			if (h < 0)
				return false;
			k->col = (int16_t)h;
		}
		k->collate_c = is_collate_c(sb->node);
		mp->n_keys++;
	}
	return true;
}

static int param_of(const Node *n)
{
	return n && n->node_case == PG_QUERY__NODE__NODE_PARAM_REF && n->param_ref->number > 0 &&
	       n->param_ref->number <= UINT16_MAX ? n->param_ref->number : 0;
}

/* The LIMIT expression of "SELECT 1 LIMIT <expr>", parsed by PostgreSQL's grammar: the
 * rewritten LIMIT and OFFSET are written as text and read back as nodes. */
static Node *parse_limit_expr(const char *expr)
{
	char sql[160];
	snprintf(sql, sizeof(sql), "SELECT 1 LIMIT %s", expr);
	PgQueryProtobufParseResult pr = pg_query_parse_protobuf(sql);
	if (pr.error) {
		pg_query_free_protobuf_parse_result(pr);
		return NULL;
	}
	PgQuery__ParseResult *t = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
								 (const uint8_t *)pr.parse_tree.data);
	pg_query_free_protobuf_parse_result(pr);
	Node *n = NULL;
	if (t && t->n_stmts == 1 && t->stmts[0]->stmt &&
	    t->stmts[0]->stmt->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) {
		n = t->stmts[0]->stmt->select_stmt->limit_count;
		t->stmts[0]->stmt->select_stmt->limit_count = NULL;
	}
	if (t)
		pg_query__parse_result__free_unpacked(t, NULL);
	return n;
}

static bool plan_limit(struct pctx *x)
{
	struct mergeplan *mp = x->mp;
	PgQuery__SelectStmt *s = x->s;
	mp->limit = -1;
	if (s->limit_option == PG_QUERY__LIMIT_OPTION__LIMIT_OPTION_WITH_TIES)
		return refuse(x, "FETCH ... WITH TIES");
	int64_t v;
	if (s->limit_count && !is_null_const(s->limit_count)) {
		if (int_const(s->limit_count, &v)) {
			if (v < 0)
				return refuse(x, "a negative LIMIT");
			mp->limit = v;
		} else if (!(mp->limit_param = (uint16_t)param_of(s->limit_count))) {
			return refuse(x, "a LIMIT other than an integer constant or a $n parameter");
		}
	}
	if (s->limit_offset && !is_null_const(s->limit_offset)) {
		if (int_const(s->limit_offset, &v)) {
			if (v < 0)
				return refuse(x, "a negative OFFSET");
			mp->offset = v;
		} else if (!(mp->offset_param = (uint16_t)param_of(s->limit_offset))) {
			return refuse(x, "an OFFSET other than an integer constant or a $n parameter");
		}
	}
	if (s->limit_offset) {
		pg_query__node__free_unpacked(s->limit_offset, NULL);
		s->limit_offset = NULL;
	}
	if (s->limit_count) {
		pg_query__node__free_unpacked(s->limit_count, NULL);
		s->limit_count = NULL;
	}
	s->limit_option = PG_QUERY__LIMIT_OPTION__LIMIT_OPTION_DEFAULT;
	/* Without combining rows, a shard's rows past offset+limit (in the query's order) can
	 * never be among the answer's: each shard runs LIMIT offset+limit, no OFFSET.  Rows that
	 * are combined (groups, DISTINCT) are cut only once merged. */
	bool has_limit = mp->limit >= 0 || mp->limit_param;
	char lim[32] = "", off[32] = "", expr[96];
	if (mp->limit_param)
		snprintf(lim, sizeof(lim), "$%u::int8", mp->limit_param);
	else if (mp->limit >= 0)
		snprintf(lim, sizeof(lim), "%lld", (long long)mp->limit);
	if (mp->offset_param)
		snprintf(off, sizeof(off), "$%u::int8", mp->offset_param);
	else if (mp->offset)
		snprintf(off, sizeof(off), "%lld", (long long)mp->offset);
	if (has_limit && !mp->aggregate && !mp->distinct) {
		if (!mp->limit_param && !mp->offset_param) {
			if (mp->limit > INT64_MAX - mp->offset)
				return refuse(x, "LIMIT plus OFFSET beyond bigint");
			s->limit_count = new_int_const(mp->limit + mp->offset);
		} else {
			snprintf(expr, sizeof(expr), "%s%s%s", lim, off[0] ? " + " : "", off);
			s->limit_count = parse_limit_expr(expr);
		}
		if (!s->limit_count)
			return refuse(x, "a statement too large for pgmux's memory");
		s->limit_option = PG_QUERY__LIMIT_OPTION__LIMIT_OPTION_COUNT;
		mp->limit_pushed = true;
	} else if (mp->limit_param || mp->offset_param) {
		/* Applied by pgmux, but the parameters stay in the statement (OFFSET 0 * ...), so
		 * that the server still infers their types from them. */
		snprintf(expr, sizeof(expr), "0 * (%s%s%s)", mp->limit_param ? lim : "",
			 mp->limit_param && mp->offset_param ? " + " : "",
			 mp->offset_param ? off : "");
		if (!(s->limit_offset = parse_limit_expr(expr)))
			return refuse(x, "a statement too large for pgmux's memory");
	}
	return true;
}

bool mergeplan_build(const char *sql, struct mergeplan *mp, char *why, size_t why_cap)
{
	memset(mp, 0, sizeof(*mp));
	mp->limit = -1;
	struct pctx x = { .mp = mp, .why = why, .why_cap = why_cap };
	PgQueryProtobufParseResult pr = pg_query_parse_protobuf(sql);
	if (pr.error) {
		pg_query_free_protobuf_parse_result(pr);
		return refuse(&x, "a statement pgmux cannot parse");
	}
	PgQuery__ParseResult *tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
								    (const uint8_t *)pr.parse_tree.data);
	pg_query_free_protobuf_parse_result(pr);
	if (!tree)
		return refuse(&x, "a statement too large for pgmux's memory");
	bool ok = false;
	if (tree->n_stmts != 1 || !tree->stmts[0]->stmt ||
	    tree->stmts[0]->stmt->node_case != PG_QUERY__NODE__NODE_SELECT_STMT) {
		refuse(&x, "anything but one SELECT");
		goto out;
	}
	PgQuery__SelectStmt *s = x.s = tree->stmts[0]->stmt->select_stmt;
	if (s->op != PG_QUERY__SET_OPERATION__SETOP_NONE || s->n_values_lists || s->into_clause ||
	    s->with_clause || s->n_from_clause != 1) {
		refuse(&x, "a UNION, VALUES, WITH, SELECT INTO or more than one table");
		goto out;
	}
	if (s->n_locking_clause) {
		refuse(&x, "FOR UPDATE / FOR SHARE");
		goto out;
	}
	if (s->n_window_clause || holds(&s->base, PG_QUERY__NODE__NODE_WINDOW_DEF, 0)) {
		refuse(&x, "a window function");
		goto out;
	}
	if (s->having_clause) {
		refuse(&x, "HAVING");
		goto out;
	}
	if (s->n_distinct_clause) {
		if (s->n_distinct_clause != 1 || s->distinct_clause[0]->node_case != PG_QUERY__NODE__NODE__NOT_SET) {
			refuse(&x, "DISTINCT ON");
			goto out;
		}
		mp->distinct = true;
	}
	if (!plan_targets(&x) || !plan_group(&x) || !rewrite_avgs(&x) || !plan_order(&x) ||
	    !plan_limit(&x))
		goto out;
	if (mp->distinct && mp->aggregate) {
		refuse(&x, "SELECT DISTINCT with aggregates or GROUP BY");
		goto out;
	}
	/* The rewritten statement, in PostgreSQL's own words. */
	PgQueryProtobuf pb;
	pb.len = pg_query__parse_result__get_packed_size(tree);
	pb.data = malloc(pb.len ? pb.len : 1);
	if (!pb.data) {
		refuse(&x, "a statement too large for pgmux's memory");
		goto out;
	}
	pg_query__parse_result__pack(tree, (uint8_t *)pb.data);
	PgQueryDeparseResult dr = pg_query_deparse_protobuf(pb);
	free(pb.data);
	if (dr.error || !dr.query) {
		refuse(&x, "a statement pgmux cannot rewrite");
		pg_query_free_deparse_result(dr);
		goto out;
	}
	mp->sql = strdup(dr.query);
	pg_query_free_deparse_result(dr);
	ok = mp->sql != NULL;
	if (!ok)
		refuse(&x, "a statement too large for pgmux's memory");
out:
	pg_query__parse_result__free_unpacked(tree, NULL);
	if (!ok)
		mergeplan_free(mp);
	return ok;
}

void mergeplan_free(struct mergeplan *mp)
{
	free(mp->sql);
	mp->sql = NULL;
}
