/* admin_rows.c: the console's replies: RowDescription, DataRows column by column, errors,
 * CommandComplete, and the picker that cuts a long listing into batches. */
#include "admin_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proto.h"

/* ---------------------------------------------------------------------------------------- */
/* result sets */

void admin_row_description(struct pktbuf *o, const struct admin_cmd *cmd)
{
	pktbuf_begin(o, 'T');
	pktbuf_put_u16(o, (uint16_t)cmd->ncols);
	for (int i = 0; i < cmd->ncols; i++) {
		pktbuf_put_str(o, cmd->cols[i].name);
		pktbuf_put_u32(o, 0);
		pktbuf_put_u16(o, 0);
		pktbuf_put_u32(o, cmd->cols[i].oid);
		pktbuf_put_u16(o, cmd->cols[i].oid == OID_TEXT ? 0xffff : 8);
		pktbuf_put_u32(o, 0xffffffff);
		pktbuf_put_u16(o, 0);
	}
	pktbuf_end(o);
}

void admin_row_begin(struct admin_ctx *x)
{
	pktbuf_begin(x->o, 'D');
	pktbuf_put_u16(x->o, (uint16_t)x->cmd->ncols);
	x->ncol = 0;
}

void admin_col_bytes(struct admin_ctx *x, const char *s, size_t len)
{
	if (x->ncol >= x->cmd->ncols) {
		log_error("console: %s wrote more than %d columns", x->cmd->name, x->cmd->ncols);
		return;
	}
	x->ncol++;
	if (!s) {
		pktbuf_put_u32(x->o, 0xffffffff);
		return;
	}
	pktbuf_put_u32(x->o, (uint32_t)len);
	pktbuf_put(x->o, s, len);
}

void admin_col_str(struct admin_ctx *x, const char *s)
{
	admin_col_bytes(x, s, s ? strlen(s) : 0);
}

void admin_col_null(struct admin_ctx *x)
{
	admin_col_bytes(x, NULL, 0);
}

void admin_col_int(struct admin_ctx *x, int64_t v)
{
	char b[24];
	int n = snprintf(b, sizeof(b), "%lld", (long long)v);
	admin_col_bytes(x, b, (size_t)n);
}

void admin_col_uint(struct admin_ctx *x, uint64_t v)
{
	char b[24];
	if (v > INT64_MAX)
		v = INT64_MAX;   /* int8 columns */
	int n = snprintf(b, sizeof(b), "%llu", (unsigned long long)v);
	admin_col_bytes(x, b, (size_t)n);
}

void admin_col_float(struct admin_ctx *x, double v)
{
	char b[32];
	int n = snprintf(b, sizeof(b), "%.3f", v);
	admin_col_bytes(x, b, (size_t)n);
}

void admin_row_end(struct admin_ctx *x)
{
	while (x->ncol < x->cmd->ncols)
		admin_col_null(x);
	pktbuf_end(x->o);
	x->rows++;
}

void admin_row_kv(struct admin_ctx *x, const char *k, uint64_t v)
{
	admin_row_begin(x);
	admin_col_str(x, k);
	admin_col_uint(x, v);
	admin_row_end(x);
}

void admin_error(struct admin_ctx *x, const char *sqlstate, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	proto_error(x->o, "ERROR", sqlstate, msg);
}

void admin_command_complete(struct pktbuf *o, const char *tag)
{
	pktbuf_begin(o, 'C');
	pktbuf_put_str(o, tag);
	pktbuf_end(o);
}

/* ---------------------------------------------------------------------------------------- */
/* listings in batches */

void admin_picker_init(struct picker *pk, const struct admin_ctx *x)
{
	pk->after = x->after;
	pk->n = 0;
}

static void pick_swap(struct pick *a, struct pick *b)
{
	struct pick t = *a;
	*a = *b;
	*b = t;
}

void admin_pick(struct picker *pk, uint64_t key, void *obj)
{
	if (key <= pk->after)
		return;
	size_t i;
	if (pk->n < ADMIN_BATCH_ROWS) {
		i = pk->n++;
		pk->v[i] = (struct pick){ key, obj };
		while (i && pk->v[(i - 1) / 2].key < pk->v[i].key) {
			pick_swap(&pk->v[(i - 1) / 2], &pk->v[i]);
			i = (i - 1) / 2;
		}
		return;
	}
	if (key >= pk->v[0].key)
		return;
	pk->v[0] = (struct pick){ key, obj };
	for (i = 0;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < pk->n && pk->v[l].key > pk->v[m].key)
			m = l;
		if (r < pk->n && pk->v[r].key > pk->v[m].key)
			m = r;
		if (m == i)
			break;
		pick_swap(&pk->v[i], &pk->v[m]);
		i = m;
	}
}

int admin_pick_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct pick *)a)->key, y = ((const struct pick *)b)->key;
	return x < y ? -1 : x > y;
}

void admin_pick_rows(struct admin_ctx *x, struct picker *pk,
		     void (*row)(struct admin_ctx *x, void *obj))
{
	qsort(pk->v, pk->n, sizeof(pk->v[0]), admin_pick_cmp);
	for (size_t i = 0; i < pk->n; i++)
		row(x, pk->v[i].obj);
	if (pk->n)
		x->after = pk->v[pk->n - 1].key;
	x->more = pk->n == ADMIN_BATCH_ROWS;
}

void admin_next_phase(struct admin_ctx *x)
{
	x->phase++;
	x->after = 0;
	x->more = true;
}
