/* admin.c: the admin console: the virtual database "pgmux" (alias "pgbouncer") and its commands. */
#include "admin.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "client.h"
#include "log.h"
#include "pool.h"
#include "route.h"
#include "sbuf.h"
#include "server.h"
#include "stats.h"
#include "tls.h"
#include "userlist.h"

/* Console commands are short; a longer message is refused rather than buffered. */
#define ADMIN_MSG_MAX 8192
/* The longest command text the console looks at. */
#define ADMIN_CMD_MAX 1024
/* How often a waiting PAUSE / WAIT_CLOSE checks whether it is done. */
#define ADMIN_WAIT_POLL_USEC 20000
/* Rows a listing that grows with the load (clients, servers, pools, databases, users) writes
 * per batch.  The next batch is made once the previous one has left, so a console connection
 * holds about one batch of reply however many rows there are. */
#define ADMIN_BATCH_ROWS 256
/* Prepared statements a console session may hold (drivers prepare after a few runs). */
#define ADMIN_MAX_STMTS 16
#define ADMIN_NAME_MAX 64

#define OID_INT8   20
#define OID_TEXT   25
#define OID_FLOAT8 701

struct admin_col {
	const char *name;
	uint32_t oid;
};

/* What a command accepts after its name. */
enum admin_arg { ARG_NONE, ARG_DB_OPT, ARG_DB, ARG_ID, ARG_SHUTDOWN, ARG_SET };

/* ADMIN_MORE: a listing stopped after a batch; it goes on once the reply has drained. */
enum admin_rc { ADMIN_OK, ADMIN_ERR, ADMIN_WAIT, ADMIN_MORE };

/* One running command and where its reply goes. */
struct admin_ctx {
	struct client *cl;
	struct worker *w;
	struct pktbuf *o;
	const struct admin_cmd *cmd;
	const char *arg;            /* text after the command name, trimmed; "" when none */
	struct database *db;        /* ARG_DB / ARG_DB_OPT: the database named, or NULL */
	bool describe;              /* simple protocol: RowDescription goes before the rows */
	bool simple;
	int ncol;                   /* columns written in the current row */
	uint64_t rows;
	/* A listing made in batches resumes where the last one stopped: after row key `after`
	 * of part `phase` (keys are listing-defined: object ids, positions).  It sets `more`
	 * when it stopped early. */
	int phase;
	uint64_t after;
	bool more;
	bool buffers;               /* SHOW SOCKETS: rows carry the buffer columns */
};

typedef enum admin_rc (*admin_fn)(struct admin_ctx *x);

/* The one table of commands: it drives dispatch, access checks, RowDescription and HELP. */
struct admin_cmd {
	const char *name;           /* words separated by single spaces, upper case */
	enum admin_arg arg;
	const char *args_help;
	bool admin_only;            /* false: stats_users may run it too */
	admin_fn run;
	const struct admin_col *cols;   /* NULL: no result set */
	int ncols;
	const char *help;
};

enum admin_wait_kind { WAIT_NONE, WAIT_PAUSE, WAIT_CLOSE };

struct admin_session {
	struct client *cl;
	struct event ev_wait;
	enum admin_wait_kind wait;
	struct database *wait_db;   /* NULL: every database */
	bool wait_simple;           /* ReadyForQuery follows the completion */
	const char *wait_tag;
	bool skip_to_sync;          /* extended protocol: after an error, until Sync */
	bool check_shutdown;        /* SHUTDOWN: check once the reply is out */
	struct {
		char name[ADMIN_NAME_MAX];
		char *text;             /* NULL: slot free */
	} stmt[ADMIN_MAX_STMTS];
	char *portal;               /* the unnamed portal's command text, or NULL */
	/* A listing in progress: messages after it wait until it is done. */
	struct {
		const struct admin_cmd *cmd;    /* NULL: none */
		bool simple;
		int phase;
		uint64_t after;
		uint64_t *order;                /* SHOW SATURATION: pool ids, most saturated first */
		size_t n_order;
	} stream;
	struct event ev_drain;      /* the socket can take more: the listing's next batch */
};

/* ---------------------------------------------------------------------------------------- */
/* result sets */

static void send_row_description(struct pktbuf *o, const struct admin_cmd *cmd)
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

static void row_begin(struct admin_ctx *x)
{
	pktbuf_begin(x->o, 'D');
	pktbuf_put_u16(x->o, (uint16_t)x->cmd->ncols);
	x->ncol = 0;
}

static void col_bytes(struct admin_ctx *x, const char *s, size_t len)
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

static void col_str(struct admin_ctx *x, const char *s)
{
	col_bytes(x, s, s ? strlen(s) : 0);
}

static void col_null(struct admin_ctx *x)
{
	col_bytes(x, NULL, 0);
}

static void col_int(struct admin_ctx *x, int64_t v)
{
	char b[24];
	int n = snprintf(b, sizeof(b), "%lld", (long long)v);
	col_bytes(x, b, (size_t)n);
}

static void col_uint(struct admin_ctx *x, uint64_t v)
{
	char b[24];
	if (v > INT64_MAX)
		v = INT64_MAX;   /* int8 columns */
	int n = snprintf(b, sizeof(b), "%llu", (unsigned long long)v);
	col_bytes(x, b, (size_t)n);
}

static void col_float(struct admin_ctx *x, double v)
{
	char b[32];
	int n = snprintf(b, sizeof(b), "%.3f", v);
	col_bytes(x, b, (size_t)n);
}

static void row_end(struct admin_ctx *x)
{
	while (x->ncol < x->cmd->ncols)
		col_null(x);
	pktbuf_end(x->o);
	x->rows++;
}

/* A two-column (text, int8) row, for the key/value listings. */
static void row_kv(struct admin_ctx *x, const char *k, uint64_t v)
{
	row_begin(x);
	col_str(x, k);
	col_uint(x, v);
	row_end(x);
}

/* ---------------------------------------------------------------------------------------- */
/* listings in batches */

/* Objects come and go between two batches, so a batch never keeps a pointer: a listing offers
 * every object under a key that never repeats (its id), the picker keeps the batch's worth of
 * smallest keys above the last one written, and those rows are written in key order.  Each
 * object present throughout appears exactly once; one batch costs a walk over the objects. */
struct pick {
	uint64_t key;
	void *obj;
};

struct picker {
	uint64_t after;
	size_t n;
	struct pick v[ADMIN_BATCH_ROWS];   /* a max-heap on key while offering */
};

static void picker_init(struct picker *pk, const struct admin_ctx *x)
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

static void pick(struct picker *pk, uint64_t key, void *obj)
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

static int pick_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct pick *)a)->key, y = ((const struct pick *)b)->key;
	return x < y ? -1 : x > y;
}

/* Writes the picked objects in key order; a full batch means there may be more. */
static void pick_rows(struct admin_ctx *x, struct picker *pk,
		      void (*row)(struct admin_ctx *x, void *obj))
{
	qsort(pk->v, pk->n, sizeof(pk->v[0]), pick_cmp);
	for (size_t i = 0; i < pk->n; i++)
		row(x, pk->v[i].obj);
	if (pk->n)
		x->after = pk->v[pk->n - 1].key;
	x->more = pk->n == ADMIN_BATCH_ROWS;
}

/* For listings in several parts: the current part is done, the next starts with the next
 * batch (more stays set). */
static void next_phase(struct admin_ctx *x)
{
	x->phase++;
	x->after = 0;
	x->more = true;
}

static void cmd_error(struct admin_ctx *x, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void cmd_error(struct admin_ctx *x, const char *sqlstate, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	proto_error(x->o, "ERROR", sqlstate, msg);
}

/* ---------------------------------------------------------------------------------------- */
/* helpers for the listings */

/* A monotonic pgmux time as a wall-clock timestamp, as PgBouncer prints them. */
static void fmt_time(char *buf, size_t len, uint64_t mono)
{
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	uint64_t now = pgmux_now();
	uint64_t age = now > mono ? now - mono : 0;
	time_t t = rt.tv_sec - (time_t)(age / 1000000u);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static void col_time(struct admin_ctx *x, uint64_t mono)
{
	char b[64];
	if (!mono) {
		col_null(x);
		return;
	}
	fmt_time(b, sizeof(b), mono);
	col_str(x, b);
}

/* Address and port of a socket's peer (or its own end); "unix" for Unix sockets. */
static void sock_addr(int fd, bool local, char *addr, size_t len, int *port)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int rc = fd < 0 ? -1 : local ? getsockname(fd, (struct sockaddr *)&ss, &sl)
				     : getpeername(fd, (struct sockaddr *)&ss, &sl);
	*port = 0;
	snprintf(addr, len, "%s", "");
	if (rc < 0)
		return;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)len);
		*port = ntohs(in->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)len);
		*port = ntohs(in6->sin6_port);
	} else if (ss.ss_family == AF_UNIX) {
		snprintf(addr, len, "%s", "unix");
	}
}

static void col_ptr(struct admin_ctx *x, const struct conn *c)
{
	char b[24];
	if (!c) {
		col_null(x);
		return;
	}
	/* PgBouncer prints the object's address; pgmux prints its id, which leaks no layout. */
	snprintf(b, sizeof(b), "0x%llx", (unsigned long long)c->id);
	col_str(x, b);
}

static void col_tls(struct admin_ctx *x, const struct conn *c)
{
	char b[160];
	col_str(x, tls_describe(c, b, sizeof(b)));
}

#define N_SV_LISTS 5
static void server_lists(struct pool *p, struct list *out[N_SV_LISTS])
{
	out[0] = &p->sv_active;
	out[1] = &p->sv_idle;
	out[2] = &p->sv_used;
	out[3] = &p->sv_tested;
	out[4] = &p->sv_login;
}

#define N_CL_LISTS 3
static void client_lists(struct pool *p, struct list *out[N_CL_LISTS])
{
	out[0] = &p->cl_active;
	out[1] = &p->cl_waiting;
	out[2] = &p->cl_waiting_login;
}

/* ---------------------------------------------------------------------------------------- */
/* SHOW commands */

static enum admin_rc show_version(struct admin_ctx *x)
{
	row_begin(x);
	col_str(x, PGMUX_VERSION_STR);
	row_end(x);
	return ADMIN_OK;
}

static enum admin_rc show_help(struct admin_ctx *x);
static size_t list_len(const struct list *l);

static void pool_row(struct admin_ctx *x, void *obj)
{
	struct pool *p = obj;
	struct stats_pool_row r;
	stats_pool_row(p, x->w->now, &r);
	row_begin(x);
	col_str(x, p->db->name);
	col_str(x, p->user->name);
#define POOL_FIGURE_COL(member, help) col_int(x, r.member);
	POOL_FIGURES(POOL_FIGURE_COL)
#undef POOL_FIGURE_COL
	col_str(x, config_pool_mode_name(pool_mode(p)));
	col_int(x, r.pool_size);
	col_float(x, r.saturation);
	row_end(x);
}

static enum admin_rc show_pools(struct admin_ctx *x)
{
	struct picker pk;
	picker_init(&pk, x);
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &x->w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		pick(&pk, p->id, p);
	}
	pick_rows(x, &pk, pool_row);
	return ADMIN_OK;
}

/* Read/write routing: each backend of every [database X] section, with what the monitor saw
 * and what was routed to it. */
static enum admin_rc show_backends(struct admin_ctx *x)
{
	struct list *it;
	for (it = x->w->databases.next; it != &x->w->databases; it = it->next) {
		const struct database *db = list_entry(it, struct database, node);
		struct route_backend_row b;
		for (int i = 0; route_backend_row(db, i, &b); i++) {
			row_begin(x);
			col_str(x, b.cluster);
			col_str(x, b.name);
			col_int(x, b.shard);
			col_str(x, b.host);
			col_int(x, b.port);
			col_str(x, b.cfg_replica ? "replica" : "primary");
			col_str(x, route_role_name(b.role));
			col_str(x, route_role_name(b.seen_role));
			col_str(x, route_state_name(b.state));
			col_int(x, b.lag_bytes);
			col_int(x, b.lag_ms);
			col_int(x, b.weight);
			col_int(x, b.cl_active);
			col_int(x, b.cl_waiting);
			col_int(x, b.sv_active);
			col_int(x, b.sv_idle);
			col_int(x, b.sv_used);
			col_int(x, (int64_t)b.reads);
			col_int(x, (int64_t)b.writes);
			col_int(x, (int64_t)b.retries);
			col_str(x, b.last_error);
			row_end(x);
		}
	}
	return ADMIN_OK;
}

/* Sharding: one row per shard of every [database X] section (an unsharded one is shard 0). */
static enum admin_rc show_shards(struct admin_ctx *x)
{
	struct list *it;
	for (it = x->w->databases.next; it != &x->w->databases; it = it->next) {
		const struct database *db = list_entry(it, struct database, node);
		struct route_shard_row r;
		for (int s = 0; route_shard_row(db, s, &r); s++) {
			row_begin(x);
			col_str(x, r.cluster);
			col_int(x, r.shard);
			col_str(x, r.primary);
			col_str(x, route_state_name(r.primary_state));
			col_int(x, r.backends);
			col_int(x, r.backends_up);
			col_int(x, r.replicas);
			col_int(x, r.replicas_up);
			col_int(x, r.max_lag_bytes);
			col_int(x, (int64_t)r.reads);
			col_int(x, (int64_t)r.writes);
			col_int(x, (int64_t)r.keyed);
			col_str(x, r.members);
			row_end(x);
		}
	}
	return ADMIN_OK;
}

/* Most saturated first: by saturation, then the last minute's peak, then waiting clients;
 * ties in name order so that the listing is stable. */
static int saturation_cmp(const void *a, const void *b)
{
	const struct stats_saturation *x = a, *y = b;
	if (x->saturation != y->saturation)
		return x->saturation > y->saturation ? -1 : 1;
	if (x->peak_saturation_1m != y->peak_saturation_1m)
		return x->peak_saturation_1m > y->peak_saturation_1m ? -1 : 1;
	if (x->cl_waiting != y->cl_waiting)
		return x->cl_waiting > y->cl_waiting ? -1 : 1;
	int c = strcmp(x->pool->db->name, y->pool->db->name);
	return c ? c : strcmp(x->pool->user->name, y->pool->user->name);
}

static void saturation_row(struct admin_ctx *x, const struct stats_saturation *s)
{
	row_begin(x);
	col_str(x, s->pool->db->name);
	col_str(x, s->pool->user->name);
	col_int(x, s->pool_size);
	col_int(x, s->sv_active);
	col_float(x, s->saturation);
	col_int(x, s->peak_1m);
	col_float(x, s->peak_saturation_1m);
	col_int(x, s->peak_period);
	col_int(x, s->cl_waiting);
	col_uint(x, s->maxwait_us);
	for (int k = 0; k < STATS_NH; k++)
		for (int q = 0; q < STATS_NQ; q++)
			col_uint(x, s->q[k][q]);
	col_int(x, s->headroom);
	col_uint(x, s->saturated_us / 1000000u);
	row_end(x);
}

/* The order is fixed once, at the first batch: the pool ids, most saturated first, kept in
 * the session (8 bytes a pool).  Each batch then finds its pools by id and writes their
 * figures as of now. */
static bool saturation_order(struct admin_ctx *x)
{
	struct admin_session *ss = x->cl->console;
	size_t n = list_len(&x->w->pools), i = 0;
	struct stats_saturation *rows = n ? calloc(n, sizeof(*rows)) : NULL;
	uint64_t *order = n ? malloc(n * sizeof(*order)) : NULL;
	if (n && (!rows || !order)) {
		free(rows);
		free(order);
		return false;
	}
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &x->w->pools)
		if (i < n)
			stats_saturation_of(x->w, list_entry(it, struct pool, node), &rows[i++]);
	qsort(rows, i, sizeof(*rows), saturation_cmp);
	for (size_t r = 0; r < i; r++)
		order[r] = rows[r].pool->id;
	free(rows);
	free(ss->stream.order);
	ss->stream.order = order;
	ss->stream.n_order = i;
	return true;
}

static enum admin_rc show_saturation(struct admin_ctx *x)
{
	struct admin_session *ss = x->cl->console;
	if (x->after == 0 && !saturation_order(x)) {
		cmd_error(x, "53200", "out of memory");
		return ADMIN_ERR;
	}
	/* this batch: positions [after, after + n) of the order, looked up by id */
	size_t from = (size_t)x->after, n = ss->stream.n_order - from;
	if (n > ADMIN_BATCH_ROWS)
		n = ADMIN_BATCH_ROWS;
	struct picker pk;                  /* reused as a sorted table: key id, obj rank */
	struct pool *found[ADMIN_BATCH_ROWS] = { 0 };
	for (size_t r = 0; r < n; r++)
		pk.v[r] = (struct pick){ ss->stream.order[from + r], (void *)(uintptr_t)r };
	qsort(pk.v, n, sizeof(pk.v[0]), pick_cmp);
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &x->w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		struct pick key = { p->id, NULL };
		struct pick *hit = n ? bsearch(&key, pk.v, n, sizeof(pk.v[0]), pick_cmp) : NULL;
		if (hit)
			found[(uintptr_t)hit->obj] = p;
	}
	for (size_t r = 0; r < n; r++) {
		if (!found[r])
			continue;          /* removed since the order was taken */
		struct stats_saturation sat;
		stats_saturation_of(x->w, found[r], &sat);
		saturation_row(x, &sat);
	}
	x->after = from + n;
	x->more = x->after < ss->stream.n_order;
	if (!x->more) {
		free(ss->stream.order);
		ss->stream.order = NULL;
		ss->stream.n_order = 0;
	}
	return ADMIN_OK;
}

enum stats_view { STATS_BOTH, STATS_TOTALS_ONLY, STATS_AVG_ONLY };

static void stats_row(struct admin_ctx *x, struct database *db, enum stats_view view)
{
	struct stats tot, avg;
	stats_total(x->w, db, &tot);
	stats_average_of(x->w, db, &avg);
	row_begin(x);
	col_str(x, db->name);
	if (view != STATS_AVG_ONLY)
		for (int f = 0; f < STATS_N; f++)
			col_uint(x, tot.v[f]);
	if (view != STATS_TOTALS_ONLY)
		for (int f = 0; f < STATS_N; f++)
			col_uint(x, avg.v[f]);
	row_end(x);
}

static void stats_row_both(struct admin_ctx *x, void *db)
{
	stats_row(x, db, STATS_BOTH);
}

static void stats_row_totals(struct admin_ctx *x, void *db)
{
	stats_row(x, db, STATS_TOTALS_ONLY);
}

static void stats_row_avg(struct admin_ctx *x, void *db)
{
	stats_row(x, db, STATS_AVG_ONLY);
}

static void stats_rows(struct admin_ctx *x, enum stats_view view)
{
	static void (*const row[])(struct admin_ctx *, void *) = {
		[STATS_BOTH] = stats_row_both,
		[STATS_TOTALS_ONLY] = stats_row_totals,
		[STATS_AVG_ONLY] = stats_row_avg,
	};
	struct picker pk;
	picker_init(&pk, x);
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &x->w->databases) {
		struct database *db = list_entry(it, struct database, node);
		pick(&pk, db->id, db);
	}
	/* stats_total walks every pool: a batch of databases costs that many walks */
	pick_rows(x, &pk, row[view]);
}

static enum admin_rc show_stats(struct admin_ctx *x)
{
	stats_rows(x, STATS_BOTH);
	return ADMIN_OK;
}

static enum admin_rc show_stats_totals(struct admin_ctx *x)
{
	stats_rows(x, STATS_TOTALS_ONLY);
	return ADMIN_OK;
}

static enum admin_rc show_stats_averages(struct admin_ctx *x)
{
	stats_rows(x, STATS_AVG_ONLY);
	return ADMIN_OK;
}

static enum admin_rc show_totals(struct admin_ctx *x)
{
	struct stats tot, avg;
	stats_total(x->w, NULL, &tot);
	stats_average_of(x->w, NULL, &avg);
	for (int f = 0; f < STATS_N; f++)
		row_kv(x, stats_fields[f].total_name, tot.v[f]);
	for (int f = 0; f < STATS_N; f++)
		row_kv(x, stats_fields[f].avg_name, avg.v[f]);
	return ADMIN_OK;
}

/* The columns SHOW CLIENTS and SHOW SERVERS share, up to `ptr`. */
static void conn_row_head(struct admin_ctx *x, const char *type, const char *user, const char *db,
			  const char *state, const struct conn *c)
{
	char addr[64], laddr[64];
	int port, lport;
	sock_addr(c->fd, false, addr, sizeof(addr), &port);
	sock_addr(c->fd, true, laddr, sizeof(laddr), &lport);
	col_str(x, type);
	col_str(x, user);
	col_str(x, db);
	col_str(x, state);
	col_str(x, addr);
	col_int(x, port);
	col_str(x, laddr);
	col_int(x, lport);
}

/* SHOW SOCKETS: where each socket's buffers stand (PgBouncer's columns, pgmux's buffers). */
static void buffer_cols(struct admin_ctx *x, const struct conn *c)
{
	const struct iobuf *b = c->in;
	col_uint(x, b ? b->end : 0);                    /* recv_pos: bytes received */
	col_uint(x, b ? b->scan : 0);                   /* pkt_pos: parsed up to here */
	col_uint(x, c->pkt_left);                       /* pkt_remain: of the message in transit */
	col_uint(x, b ? b->start : 0);                  /* send_pos: passed on up to here */
	col_uint(x, b ? b->scan - b->start : 0);        /* send_remain: parsed, not passed on */
	col_uint(x, b ? b->end - b->scan : 0);          /* pkt_avail: received, not parsed */
	col_uint(x, c->out.len - c->out.sent);          /* send_avail: pgmux's own bytes queued */
}

static void client_row(struct admin_ctx *x, void *obj)
{
	struct client *c = obj;
	uint64_t now = x->w->now;
	bool waiting = c->state == CL_WAITING || c->state == CL_WAITING_LOGIN;
	const char *state = c->state == CL_LOGIN ? "login" : waiting ? "waiting" : "active";
	uint64_t wait = waiting && now > c->wait_start ? now - c->wait_start : 0;
	row_begin(x);
	conn_row_head(x, "C", c->user_name, c->db_name, state, &c->c);
	col_time(x, c->connect_time);
	col_time(x, c->last_active);
	col_uint(x, wait / 1000000u);
	col_uint(x, wait % 1000000u);
	col_int(x, 0);                                          /* close_needed */
	col_ptr(x, &c->c);
	col_ptr(x, c->link ? &c->link->c : NULL);
	int pid = 0;
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	if (!strcmp(c->addr, "unix") && getsockopt(c->c.fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0)
		pid = cred.pid;
	col_int(x, pid);
	col_tls(x, &c->c);
	const char *app = varcache_get(&c->vars, VAR_APPNAME);
	col_str(x, app ? app : "");
	col_int(x, 0);                                          /* prepared_statements */
	col_uint(x, c->c.id);
	if (x->buffers)
		buffer_cols(x, &c->c);
	row_end(x);
}

/* Every client socket (logged in, or also logging in) into the picker. */
static void pick_clients(struct admin_ctx *x, struct picker *pk, bool login)
{
	struct list *it, *tmp, *c, *ct;
	list_for_each_safe(it, tmp, &x->w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		struct list *l[N_CL_LISTS];
		client_lists(p, l);
		for (int i = 0; i < N_CL_LISTS; i++)
			list_for_each_safe(c, ct, l[i])
				pick(pk, list_entry(c, struct client, node)->c.id, list_entry(c, struct client, node));
	}
	list_for_each_safe(c, ct, &x->w->cl_admin)
		pick(pk, list_entry(c, struct client, node)->c.id, list_entry(c, struct client, node));
	if (login)
		list_for_each_safe(c, ct, &x->w->cl_login)
			pick(pk, list_entry(c, struct client, node)->c.id, list_entry(c, struct client, node));
}

static enum admin_rc show_clients(struct admin_ctx *x)
{
	struct picker pk;
	picker_init(&pk, x);
	pick_clients(x, &pk, false);
	pick_rows(x, &pk, client_row);
	return ADMIN_OK;
}

static const char *server_state_name(const struct server *sv)
{
	if (sv->cancel_pending)
		return "being_canceled";
	switch (sv->state) {
	case SV_LOGIN: return "new";
	case SV_IDLE: return "idle";
	case SV_ACTIVE: return "active";
	case SV_USED: return "used";
	case SV_TESTED: return "tested";
	default: return "closing";
	}
}

static void server_row(struct admin_ctx *x, void *obj)
{
	struct server *sv = obj;
	struct pool *p = sv->pool;
	row_begin(x);
	conn_row_head(x, "S", pool_server_user(p), p->db->name, server_state_name(sv), &sv->c);
	col_time(x, sv->connect_time);
	col_time(x, sv->link ? sv->link_time : sv->last_used);
	col_int(x, 0);                  /* wait */
	col_int(x, 0);                  /* wait_us */
	col_int(x, sv->close_when_idle);
	col_ptr(x, &sv->c);
	col_ptr(x, sv->link ? &sv->link->c : NULL);
	col_uint(x, sv->be_pid);
	col_tls(x, &sv->c);
	const char *app = varcache_get(&sv->vars, VAR_APPNAME);
	col_str(x, app ? app : "");
	col_int(x, 0);                  /* prepared_statements */
	col_uint(x, sv->c.id);
	if (x->buffers)
		buffer_cols(x, &sv->c);
	row_end(x);
}

static void pick_servers(struct admin_ctx *x, struct picker *pk)
{
	struct list *it, *tmp, *s, *st;
	list_for_each_safe(it, tmp, &x->w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		struct list *l[N_SV_LISTS];
		server_lists(p, l);
		for (int i = 0; i < N_SV_LISTS; i++)
			list_for_each_safe(s, st, l[i])
				pick(pk, list_entry(s, struct server, node)->c.id, list_entry(s, struct server, node));
	}
}

static enum admin_rc show_servers(struct admin_ctx *x)
{
	struct picker pk;
	picker_init(&pk, x);
	pick_servers(x, &pk);
	pick_rows(x, &pk, server_row);
	return ADMIN_OK;
}

/* Clients (those logging in too), then servers. */
static enum admin_rc show_sockets(struct admin_ctx *x)
{
	struct picker pk;
	picker_init(&pk, x);
	x->buffers = true;
	if (x->phase == 0) {
		pick_clients(x, &pk, true);
		pick_rows(x, &pk, client_row);
		if (!x->more)
			next_phase(x);
		return ADMIN_OK;
	}
	pick_servers(x, &pk);
	pick_rows(x, &pk, server_row);
	return ADMIN_OK;
}

static void database_row(struct admin_ctx *x, const char *name, const struct cfg_db *e,
			 const struct database *db)
{
	const struct config *cf = x->w->cf;
	row_begin(x);
	col_str(x, name);
	col_str(x, e->host);
	col_int(x, e->port);
	col_str(x, e->dbname ? e->dbname : name);
	col_str(x, e->user);
	col_int(x, e->pool_size >= 0 ? e->pool_size : cf->default_pool_size);
	col_int(x, e->min_pool_size >= 0 ? e->min_pool_size : cf->min_pool_size);
	col_int(x, e->reserve_pool >= 0 ? e->reserve_pool : cf->reserve_pool_size);
	if (e->pool_mode >= 0)
		col_str(x, config_pool_mode_name(e->pool_mode));
	else
		col_null(x);
	col_int(x, e->max_db_connections >= 0 ? e->max_db_connections : cf->max_db_connections);
	col_int(x, db ? db->n_servers : 0);
	col_int(x, db && db->paused);
	col_int(x, db && db->disabled);
	row_end(x);
}

/* Parts of listings that follow a list in order (config entries, which change only on
 * RELOAD; users, which are only appended) are keyed by position: true when the row at
 * position *pos (counted here from 1) goes into this batch, which it then counts in *n.
 * Sets x->more when the batch is full. */
static bool in_batch(struct admin_ctx *x, uint64_t *pos, size_t *n)
{
	if (++*pos <= x->after || x->more)
		return false;
	if (*n == ADMIN_BATCH_ROWS) {
		x->more = true;
		return false;
	}
	x->after = *pos;
	++*n;
	return true;
}

static void wildcard_db_row(struct admin_ctx *x, void *obj)
{
	struct database *db = obj;
	database_row(x, db->name, db->cf, db);
}

/* The configured entries, then the databases made from the "*" entry. */
static enum admin_rc show_databases(struct admin_ctx *x)
{
	struct worker *w = x->w;
	if (x->phase == 0) {
		uint64_t pos = 0;
		size_t n = 0;
		bool known;
		for (const struct cfg_db *e = w->cf->dbs; e; e = e->next)
			if (strcmp(e->name, "*") != 0 && in_batch(x, &pos, &n))
				database_row(x, e->name, e, pool_lookup_database(w, e->name, &known));
		if (!x->more)
			next_phase(x);
		return ADMIN_OK;
	}
	struct picker pk;
	picker_init(&pk, x);
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->databases) {
		struct database *db = list_entry(it, struct database, node);
		if (db->from_wildcard && !db->removed)
			pick(&pk, db->id, db);
	}
	pick_rows(x, &pk, wildcard_db_row);
	return ADMIN_OK;
}

/* The [users] entries, then the other users that have pools. */
static enum admin_rc show_users(struct admin_ctx *x)
{
	struct worker *w = x->w;
	uint64_t pos = 0;
	size_t n = 0;
	if (x->phase == 0) {
		for (const struct cfg_user *u = w->cf->users; u; u = u->next) {
			if (!in_batch(x, &pos, &n))
				continue;
			row_begin(x);
			col_str(x, u->name);
			if (u->pool_mode >= 0)
				col_str(x, config_pool_mode_name(u->pool_mode));
			else
				col_null(x);
			row_end(x);
		}
		if (!x->more)
			next_phase(x);
		return ADMIN_OK;
	}
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->users) {
		struct user *u = list_entry(it, struct user, node);
		if (config_find_user(w->cf, u->name) || !in_batch(x, &pos, &n))
			continue;
		row_begin(x);
		col_str(x, u->name);
		col_null(x);
		row_end(x);
	}
	return ADMIN_OK;
}

static size_t list_len(const struct list *l)
{
	size_t n = 0;
	for (const struct list *it = l->next; it != l; it = it->next)
		n++;
	return n;
}

static enum admin_rc show_lists(struct admin_ctx *x)
{
	struct worker *w = x->w;
	size_t resolving = 0;
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->databases)
		resolving += list_entry(it, struct database, node)->resolving;
	row_kv(x, "databases", list_len(&w->databases));
	row_kv(x, "users", list_len(&w->users));
	row_kv(x, "pools", list_len(&w->pools));
	row_kv(x, "free_clients", 0);
	row_kv(x, "used_clients", (uint64_t)w->n_clients);
	row_kv(x, "login_clients", (uint64_t)w->n_login);
	row_kv(x, "free_servers", 0);
	row_kv(x, "used_servers", (uint64_t)w->n_servers);
	row_kv(x, "dns_names", 0);
	row_kv(x, "dns_zones", 0);
	row_kv(x, "dns_queries", resolving);
	row_kv(x, "dns_pending", resolving);
	return ADMIN_OK;
}

static void mem_row(struct admin_ctx *x, const char *name, uint64_t size, uint64_t used, uint64_t free_)
{
	row_begin(x);
	col_str(x, name);
	col_uint(x, size);
	col_uint(x, used);
	col_uint(x, free_);
	col_uint(x, size * (used + free_));
	row_end(x);
}

static enum admin_rc show_mem(struct admin_ctx *x)
{
	struct worker *w = x->w;
	mem_row(x, "iobuf", sizeof(struct iobuf) + w->bufsize, (uint64_t)w->n_buf_used, (uint64_t)w->n_buf_free);
	mem_row(x, "client", sizeof(struct client), (uint64_t)w->n_clients, 0);
	mem_row(x, "server", sizeof(struct server), (uint64_t)w->n_servers, 0);
	mem_row(x, "pool", sizeof(struct pool), list_len(&w->pools), 0);
	mem_row(x, "database", sizeof(struct database), list_len(&w->databases), 0);
	mem_row(x, "user", sizeof(struct user), list_len(&w->users), 0);
	mem_row(x, "var_value", sizeof(struct vstr) + 16, w->vars.count, 0);
	return ADMIN_OK;
}

static void row_kt(struct admin_ctx *x, const char *k, const char *v)
{
	row_begin(x);
	col_str(x, k);
	col_str(x, v);
	row_end(x);
}

static enum admin_rc show_state(struct admin_ctx *x)
{
	struct worker *w = x->w;
	row_kt(x, "active", w->paused ? "no" : "yes");
	row_kt(x, "paused", w->paused ? "yes" : "no");
	row_kt(x, "suspended", "no");
	row_kt(x, "shutting_down", w->shutdown ? "yes" : "no");
	return ADMIN_OK;
}

static void config_row(const char *name, const char *def, bool changeable, void *arg)
{
	struct admin_ctx *x = arg;
	char val[1024];
	if (!config_value_text(x->w->cf, name, val, sizeof(val)))
		val[0] = 0;
	row_begin(x);
	col_str(x, name);
	col_str(x, val);
	col_str(x, def);
	col_str(x, changeable ? "yes" : "no");
	row_end(x);
}

static enum admin_rc show_config(struct admin_ctx *x)
{
	config_each_key(config_row, x);
	return ADMIN_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* control commands */

/* True when every pool of db (NULL: all) satisfies the wait. */
static bool wait_done(struct worker *w, enum admin_wait_kind kind, const struct database *db)
{
	struct list *it, *tmp, *s, *st;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		if (db && !pool_db_match(db, p->db))
			continue;
		if (kind == WAIT_PAUSE) {
			if (p->n_sv[SV_ACTIVE] || p->n_sv[SV_USED] || p->n_sv[SV_TESTED])
				return false;
			continue;
		}
		struct list *l[N_SV_LISTS];
		server_lists(p, l);
		for (int i = 0; i < N_SV_LISTS; i++)
			list_for_each_safe(s, st, l[i])
				if (list_entry(s, struct server, node)->close_when_idle)
					return false;
	}
	return true;
}

/* Idle servers marked for close are closed now (a server that was logging in when marked
 * becomes idle without looking at the mark). */
static void close_marked_idle(struct worker *w, const struct database *db)
{
	struct list *it, *tmp, *s, *st;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		if (db && !pool_db_match(db, p->db))
			continue;
		list_for_each_safe(s, st, &p->sv_idle) {
			struct server *sv = list_entry(s, struct server, node);
			if (sv->close_when_idle)
				server_close(sv, "reconnect requested by admin");
		}
	}
}

static void admin_process(struct client *cl);

static void wait_poll(evutil_socket_t fd, short what, void *arg)
{
	struct admin_session *s = arg;
	struct client *cl = s->cl;
	struct worker *w = cl->c.w;
	w->now = pgmux_now();
	if (s->wait == WAIT_CLOSE)
		close_marked_idle(w, s->wait_db);
	if (!wait_done(w, s->wait, s->wait_db)) {
		struct timeval tv = { 0, ADMIN_WAIT_POLL_USEC };
		event_add(&s->ev_wait, &tv);
		return;
	}
	s->wait = WAIT_NONE;
	pktbuf_begin(&cl->c.out, 'C');
	pktbuf_put_str(&cl->c.out, s->wait_tag);
	pktbuf_end(&cl->c.out);
	if (s->wait_simple)
		proto_ready(&cl->c.out, 'I');
	/* Commands that arrived meanwhile run now; this also sends the reply. */
	admin_process(cl);
}

static enum admin_rc start_wait(struct admin_ctx *x, enum admin_wait_kind kind)
{
	struct admin_session *s = x->cl->console;
	if (kind == WAIT_CLOSE)
		close_marked_idle(x->w, x->db);
	if (wait_done(x->w, kind, x->db))
		return ADMIN_OK;
	s->wait = kind;
	s->wait_db = x->db;
	s->wait_simple = x->simple;
	s->wait_tag = x->cmd->name;
	struct timeval tv = { 0, ADMIN_WAIT_POLL_USEC };
	event_add(&s->ev_wait, &tv);
	return ADMIN_WAIT;
}


static enum admin_rc cmd_pause(struct admin_ctx *x)
{
	if (x->db) {
		if (x->w->paused || x->db->paused) {
			cmd_error(x, "55000", "database %s is already paused", x->db->name);
			return ADMIN_ERR;
		}
		x->db->paused = true;
		log_info("console: pausing database %s", x->db->name);
	} else {
		if (x->w->paused) {
			cmd_error(x, "55000", "pgmux is already paused");
			return ADMIN_ERR;
		}
		x->w->paused = true;
		log_info("console: pausing");
	}
	return start_wait(x, WAIT_PAUSE);
}

static enum admin_rc cmd_resume(struct admin_ctx *x)
{
	struct worker *w = x->w;
	if (x->db) {
		if (!x->db->paused) {
			cmd_error(x, "55000", "database %s is not paused", x->db->name);
			return ADMIN_ERR;
		}
		x->db->paused = false;
		log_info("console: resuming database %s", x->db->name);
	} else {
		if (w->shutdown) {
			cmd_error(x, "55000", "pgmux is shutting down");
			return ADMIN_ERR;
		}
		bool any = w->paused;
		struct list *it, *tmp;
		list_for_each_safe(it, tmp, &w->databases) {
			struct database *db = list_entry(it, struct database, node);
			any |= db->paused;
			db->paused = false;
		}
		if (!any) {
			cmd_error(x, "55000", "pgmux is not paused");
			return ADMIN_ERR;
		}
		w->paused = false;
		log_info("console: resuming");
	}
	pool_serve_all(w);
	return ADMIN_OK;
}

static enum admin_rc cmd_disable(struct admin_ctx *x)
{
	x->db->disabled = true;
	log_info("console: database %s disabled", x->db->name);
	return ADMIN_OK;
}

static enum admin_rc cmd_enable(struct admin_ctx *x)
{
	x->db->disabled = false;
	log_info("console: database %s enabled", x->db->name);
	return ADMIN_OK;
}

static enum admin_rc cmd_reconnect(struct admin_ctx *x)
{
	struct list *it, *tmp, *s, *st;
	list_for_each_safe(it, tmp, &x->w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		if (x->db && !pool_db_match(x->db, p->db))
			continue;
		struct list *l[N_SV_LISTS];
		server_lists(p, l);
		for (int i = 0; i < N_SV_LISTS; i++)
			list_for_each_safe(s, st, l[i])
				list_entry(s, struct server, node)->close_when_idle = true;
	}
	close_marked_idle(x->w, x->db);
	pool_serve_all(x->w);
	log_info("console: reconnecting %s", x->db ? x->db->name : "all databases");
	return ADMIN_OK;
}

static enum admin_rc cmd_wait_close(struct admin_ctx *x)
{
	return start_wait(x, WAIT_CLOSE);
}

/* A growable list of objects to close once the walk over the lists is over. */
struct victims {
	void **v;
	size_t n, cap;
};

static bool victims_add(struct victims *vs, void *obj)
{
	if (vs->n == vs->cap) {
		size_t cap = vs->cap ? vs->cap * 2 : 64;
		void **v = realloc(vs->v, cap * sizeof(*v));
		if (!v)
			return false;
		vs->v = v;
		vs->cap = cap;
	}
	vs->v[vs->n++] = obj;
	return true;
}

static enum admin_rc cmd_kill(struct admin_ctx *x)
{
	struct worker *w = x->w;
	struct victims cls = { 0 }, svs = { 0 };
	bool ok = true;
	struct list *it, *tmp, *e, *et;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		if (x->db && !pool_db_match(x->db, p->db))
			continue;
		struct list *sl[N_SV_LISTS], *cl[N_CL_LISTS];
		server_lists(p, sl);
		client_lists(p, cl);
		for (int i = 0; i < N_SV_LISTS; i++)
			list_for_each_safe(e, et, sl[i]) {
				struct server *sv = list_entry(e, struct server, node);
				sv->close_when_idle = true;   /* a released one is closed, not reused */
				ok &= victims_add(&svs, sv);
			}
		for (int i = 0; i < N_CL_LISTS; i++)
			list_for_each_safe(e, et, cl[i])
				ok &= victims_add(&cls, list_entry(e, struct client, node));
	}
	if (!ok) {
		free(cls.v);
		free(svs.v);
		cmd_error(x, "53200", "out of memory");
		return ADMIN_ERR;
	}
	/* PgBouncer's semantics: the database stays paused until RESUME. */
	if (x->db)
		x->db->paused = true;
	else
		w->paused = true;
	log_info("console: killing %zu client(s) and %zu server(s) of %s", cls.n, svs.n,
		 x->db ? x->db->name : "all databases");
	/* Memory stays valid until the reaper runs after this callback. */
	for (size_t i = 0; i < cls.n; i++) {
		struct client *c = cls.v[i];
		if (!c->c.dead)
			client_close(c, "database killed by admin (KILL)", "57P01");
	}
	for (size_t i = 0; i < svs.n; i++) {
		struct server *sv = svs.v[i];
		if (!sv->c.dead)
			server_close(sv, "database killed by admin (KILL)");
	}
	free(cls.v);
	free(svs.v);
	return ADMIN_OK;
}

static struct client *find_client(struct worker *w, uint64_t id)
{
	struct list *it, *tmp, *c, *ct;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		struct list *l[N_CL_LISTS];
		client_lists(p, l);
		for (int i = 0; i < N_CL_LISTS; i++)
			list_for_each_safe(c, ct, l[i])
				if (list_entry(c, struct client, node)->c.id == id)
					return list_entry(c, struct client, node);
	}
	list_for_each_safe(c, ct, &w->cl_admin)
		if (list_entry(c, struct client, node)->c.id == id)
			return list_entry(c, struct client, node);
	list_for_each_safe(c, ct, &w->cl_login)
		if (list_entry(c, struct client, node)->c.id == id)
			return list_entry(c, struct client, node);
	return NULL;
}

static enum admin_rc cmd_kill_client(struct admin_ctx *x)
{
	char *end;
	const char *a = x->arg;
	int base = 10;
	if (a[0] == '0' && (a[1] == 'x' || a[1] == 'X'))
		base = 16;   /* the ptr column's form */
	unsigned long long id = strtoull(a, &end, base);
	if (end == a || *end) {
		cmd_error(x, "42601", "KILL_CLIENT needs a client id (the id column of SHOW CLIENTS)");
		return ADMIN_ERR;
	}
	struct client *c = find_client(x->w, id);
	if (!c) {
		cmd_error(x, "42704", "no client with id %llu", id);
		return ADMIN_ERR;
	}
	if (c == x->cl) {
		cmd_error(x, "55000", "a console cannot kill its own connection; disconnect instead");
		return ADMIN_ERR;
	}
	if (c->link)
		c->link->close_when_idle = true;   /* its server goes too */
	log_info("console: killing client %llu", id);
	client_close(c, "killed by admin (KILL_CLIENT)", "57P01");
	return ADMIN_OK;
}

static enum admin_rc cmd_suspend(struct admin_ctx *x)
{
	cmd_error(x, "0A000", "SUSPEND is not supported: pgmux has no online restart; use PAUSE");
	return ADMIN_ERR;
}

static enum admin_rc cmd_reload(struct admin_ctx *x)
{
	struct worker *w = x->w;
	struct config *cf;
	char err[512];
	/* A dry run first, so that the error reaches the admin and not only the log. */
	if (config_load(w->cf_path, &cf, err, sizeof(err)) < 0) {
		cmd_error(x, "F0000", "reload failed, keeping the old configuration: %s", err);
		return ADMIN_ERR;
	}
	if (cf->auth_file && *cf->auth_file) {
		struct userlist *ul = NULL;
		if (userlist_load(cf->auth_file, &ul, err, sizeof(err)) < 0) {
			config_free(cf);
			cmd_error(x, "F0000", "reload failed, keeping the old configuration: %s", err);
			return ADMIN_ERR;
		}
		userlist_free(ul);
	}
	config_free(cf);
	log_info("console: RELOAD");
	if (pgmux_reload(w) < 0) {
		cmd_error(x, "F0000", "reload failed, keeping the old configuration (see the log)");
		return ADMIN_ERR;
	}
	return ADMIN_OK;
}

static enum admin_rc cmd_shutdown(struct admin_ctx *x)
{
	struct worker *w = x->w;
	const char *a = x->arg;
	if (!*a) {
		log_info("console: SHUTDOWN, exiting now");
		w->shutdown = PGMUX_SHUTDOWN_NOW;
	} else if (!strcasecmp(a, "WAIT_FOR_SERVERS")) {
		log_info("console: SHUTDOWN WAIT_FOR_SERVERS, shutting down once servers are released");
		pgmux_stop_listening(w);
		w->paused = true;
		w->shutdown = PGMUX_SHUTDOWN_WAIT_SERVERS;
	} else if (!strcasecmp(a, "WAIT_FOR_CLIENTS")) {
		log_info("console: SHUTDOWN WAIT_FOR_CLIENTS, shutting down once clients are gone");
		pgmux_stop_listening(w);
		w->shutdown = PGMUX_SHUTDOWN_WAIT_CLIENTS;
	} else {
		cmd_error(x, "42601", "SHUTDOWN takes WAIT_FOR_SERVERS, WAIT_FOR_CLIENTS or nothing");
		return ADMIN_ERR;
	}
	x->cl->console->check_shutdown = true;
	return ADMIN_OK;
}

/* SET key = value / SET key TO value; the value may be a 'quoted' literal. */
static enum admin_rc cmd_set(struct admin_ctx *x)
{
	char key[64], val[ADMIN_CMD_MAX + 1];
	const char *p = x->arg;
	size_t n = 0;
	while ((isalnum((unsigned char)*p) || *p == '_') && n < sizeof(key) - 1)
		key[n++] = (char)tolower((unsigned char)*p++);
	key[n] = 0;
	while (isspace((unsigned char)*p))
		p++;
	if (*p == '=')
		p++;
	else if (!strncasecmp(p, "TO", 2) && isspace((unsigned char)p[2]))
		p += 2;
	else
		n = 0;
	if (!n) {
		cmd_error(x, "42601", "syntax: SET key = value");
		return ADMIN_ERR;
	}
	while (isspace((unsigned char)*p))
		p++;
	size_t m = 0;
	if (*p == '\'') {
		p++;
		for (;;) {
			if (!*p) {
				cmd_error(x, "42601", "unterminated quoted value");
				return ADMIN_ERR;
			}
			if (*p == '\'' && p[1] != '\'')
				break;
			if (*p == '\'')
				p++;
			if (m >= sizeof(val) - 1) {
				cmd_error(x, "54000", "value too long");
				return ADMIN_ERR;
			}
			val[m++] = *p++;
		}
		p++;
		while (isspace((unsigned char)*p))
			p++;
		if (*p) {
			cmd_error(x, "42601", "unexpected text after the value: %.64s", p);
			return ADMIN_ERR;
		}
	} else {
		while (*p && m < sizeof(val) - 1)
			val[m++] = *p++;
	}
	val[m] = 0;
	char err[512];
	/* A TLS key is only set once a context with it loads; else the old value comes back
	 * (sized for a file path from the ini, which may be longer than a console command). */
	bool tls_key = !strncmp(key, "client_tls", 10);
	char old[8192] = "";
	if (tls_key)
		config_value_text(x->w->cf, key, old, sizeof(old));
	if (config_set(x->w->cf, key, val, err, sizeof(err)) < 0) {
		cmd_error(x, config_key_unsupported(key) ? "0A000" : "42704", "%s", err);
		return ADMIN_ERR;
	}
	if (tls_key && tls_server_reconfigure(x->w, err, sizeof(err)) < 0) {
		char ignored[64];
		config_set(x->w->cf, key, old, ignored, sizeof(ignored));
		cmd_error(x, "22023", "%s", err);
		return ADMIN_ERR;
	}
	if (!strcmp(key, "verbose") && x->w->cf->verbose > log_verbosity)
		log_verbosity = (int)x->w->cf->verbose;
	log_info("console: SET %s = '%s'", key, val);
	route_write_funcs_update(x->w);
	pool_serve_all(x->w);   /* a larger pool may serve waiters now */
	return ADMIN_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* the command table */

#define COLS(a) a, (int)(sizeof(a) / sizeof(a[0]))
#define T(name) { name, OID_TEXT }
#define I(name) { name, OID_INT8 }

static const struct admin_col cols_version[] = { T("version") };
static const struct admin_col cols_help[] = { T("command"), T("arguments"), T("access"), T("description") };
static const struct admin_col cols_pools[] = {
	T("database"), T("user"), I("cl_active"), I("cl_waiting"), I("cl_active_cancel_req"),
	I("cl_waiting_cancel_req"), I("sv_active"), I("sv_active_cancel"), I("sv_being_canceled"),
	I("sv_idle"), I("sv_used"), I("sv_tested"), I("sv_login"), I("maxwait"), I("maxwait_us"),
	T("pool_mode"),
	/* pgmux */
	I("pool_size"), { "saturation", OID_FLOAT8 },
};
#define STATS_TOTAL_COL(id, member, name, total, avg, kind) I(total),
#define STATS_AVG_COL(id, member, name, total, avg, kind) I(avg),
#define STATS_PLAIN_COL(id, member, name, total, avg, kind) I(name),
static const struct admin_col cols_stats[] = {
	T("database"), STATS_FIELDS(STATS_TOTAL_COL) STATS_FIELDS(STATS_AVG_COL)
};
static const struct admin_col cols_stats_plain[] = { T("database"), STATS_FIELDS(STATS_PLAIN_COL) };
static const struct admin_col cols_name_value[] = { T("name"), I("value") };
static const struct admin_col cols_conns[] = {
	T("type"), T("user"), T("database"), T("state"), T("addr"), I("port"), T("local_addr"),
	I("local_port"), T("connect_time"), T("request_time"), I("wait"), I("wait_us"),
	I("close_needed"), T("ptr"), T("link"), I("remote_pid"), T("tls"), T("application_name"),
	I("prepared_statements"), I("id"),
};
static const struct admin_col cols_sockets[] = {
	T("type"), T("user"), T("database"), T("state"), T("addr"), I("port"), T("local_addr"),
	I("local_port"), T("connect_time"), T("request_time"), I("wait"), I("wait_us"),
	I("close_needed"), T("ptr"), T("link"), I("remote_pid"), T("tls"), T("application_name"),
	I("prepared_statements"), I("id"),
	/* the buffers */
	I("recv_pos"), I("pkt_pos"), I("pkt_remain"), I("send_pos"), I("send_remain"), I("pkt_avail"),
	I("send_avail"),
};
static const struct admin_col cols_databases[] = {
	T("name"), T("host"), I("port"), T("database"), T("force_user"), I("pool_size"),
	I("min_pool_size"), I("reserve_pool"), T("pool_mode"), I("max_connections"),
	I("current_connections"), I("paused"), I("disabled"),
};
static const struct admin_col cols_users[] = { T("name"), T("pool_mode") };
static const struct admin_col cols_lists[] = { T("list"), I("items") };
static const struct admin_col cols_config[] = { T("key"), T("value"), T("default"), T("changeable") };
static const struct admin_col cols_mem[] = { T("name"), I("size"), I("used"), I("free"), I("memtotal") };
static const struct admin_col cols_state[] = { T("key"), T("value") };
#define F(name) { name, OID_FLOAT8 }
static const struct admin_col cols_saturation[] = {
	T("database"), T("user"), I("pool_size"), I("sv_active"), F("saturation"), I("peak_1m"),
	F("peak_saturation_1m"), I("peak_period"), I("cl_waiting"), I("maxwait_us"),
	I("wait_p50_us"), I("wait_p95_us"), I("wait_p99_us"),
	I("query_p50_us"), I("query_p95_us"), I("query_p99_us"),
	I("xact_p50_us"), I("xact_p95_us"), I("xact_p99_us"),
	I("headroom"), I("saturated_for"),
};

static const struct admin_col cols_backends[] = {
	T("database"), T("backend"), I("shard"), T("host"), I("port"), T("config_role"), T("role"),
	T("seen_role"), T("state"), I("lag_bytes"), I("lag_ms"), I("weight"), I("cl_active"),
	I("cl_waiting"), I("sv_active"), I("sv_idle"), I("sv_used"), I("reads"), I("writes"),
	I("retries"), T("last_error"),
};

static const struct admin_col cols_shards[] = {
	T("database"), I("shard"), T("primary"), T("primary_state"), I("backends"), I("backends_up"),
	I("replicas"), I("replicas_up"), I("max_lag_bytes"), I("reads"), I("writes"), I("keyed"),
	T("members"),
};

#define SHOW(name, fn, cols, help) { "SHOW " name, ARG_NONE, "", false, fn, COLS(cols), help }
#define CTRL(name, arg, args, fn, help) { name, arg, args, true, fn, NULL, 0, help }

static const struct admin_cmd admin_cmds[] = {
	SHOW("HELP", show_help, cols_help, "this list"),
	SHOW("VERSION", show_version, cols_version, "the pgmux version"),
	SHOW("POOLS", show_pools, cols_pools,
	     "one row per (database, user) pool: client and server counts, oldest wait, saturation"),
	SHOW("STATS", show_stats, cols_stats,
	     "per database: totals, and averages over the last stats_period (times in microseconds)"),
	SHOW("STATS_TOTALS", show_stats_totals, cols_stats_plain, "per database: the totals of SHOW STATS"),
	SHOW("STATS_AVERAGES", show_stats_averages, cols_stats_plain,
	     "per database: the averages of SHOW STATS"),
	SHOW("TOTALS", show_totals, cols_name_value, "SHOW STATS summed over all databases, one row per figure"),
	SHOW("CLIENTS", show_clients, cols_conns, "one row per client connection"),
	SHOW("SERVERS", show_servers, cols_conns, "one row per server connection"),
	SHOW("SOCKETS", show_sockets, cols_sockets,
	     "every client (logging in too) and server socket, with where its buffers stand"),
	SHOW("DATABASES", show_databases, cols_databases, "configured databases and their settings"),
	SHOW("USERS", show_users, cols_users, "known users and their pool_mode override"),
	SHOW("LISTS", show_lists, cols_lists, "counts of internal objects"),
	SHOW("CONFIG", show_config, cols_config, "every general setting: value, default, changeable at run time"),
	SHOW("MEM", show_mem, cols_mem, "memory held per object kind"),
	SHOW("STATE", show_state, cols_state, "whether pgmux is paused or shutting down"),
	SHOW("BACKENDS", show_backends, cols_backends,
	     "read/write routing: each backend's role, health, lag and routed reads and writes"),
	SHOW("SHARDS", show_shards, cols_shards,
	     "sharding: per shard, its backends, their health and lag, and what was routed to it"),
	SHOW("SATURATION", show_saturation, cols_saturation,
	     "per pool, most saturated first: sv_active / pool_size, peaks, waits, p50/p95/p99 of "
	     "wait, query and transaction time (microseconds), headroom"),
	CTRL("PAUSE", ARG_DB_OPT, "[db]", cmd_pause,
	     "hold new transactions; returns once every server is released"),
	CTRL("RESUME", ARG_DB_OPT, "[db]", cmd_resume, "undo PAUSE or KILL"),
	CTRL("DISABLE", ARG_DB, "db", cmd_disable, "refuse new client logins to db"),
	CTRL("ENABLE", ARG_DB, "db", cmd_enable, "undo DISABLE"),
	CTRL("RECONNECT", ARG_DB_OPT, "[db]", cmd_reconnect,
	     "close every server connection as soon as it is released"),
	CTRL("KILL", ARG_DB_OPT, "[db]", cmd_kill,
	     "drop every client and server connection now; pauses until RESUME"),
	CTRL("KILL_CLIENT", ARG_ID, "id", cmd_kill_client, "drop one client (id from SHOW CLIENTS) and its server"),
	CTRL("WAIT_CLOSE", ARG_DB_OPT, "[db]", cmd_wait_close,
	     "return once the servers marked by RECONNECT or RELOAD are closed"),
	CTRL("SUSPEND", ARG_NONE, "", cmd_suspend, "not supported (PgBouncer's online restart)"),
	CTRL("RELOAD", ARG_NONE, "", cmd_reload, "re-read the configuration file; reports errors"),
	CTRL("SHUTDOWN", ARG_SHUTDOWN, "[WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]", cmd_shutdown,
	     "exit now, or once servers are released / clients are gone"),
	CTRL("SET", ARG_SET, "key = value", cmd_set, "change a setting marked changeable in SHOW CONFIG"),
};
static const size_t admin_ncmds = sizeof(admin_cmds) / sizeof(admin_cmds[0]);

static enum admin_rc show_help(struct admin_ctx *x)
{
	char text[4096];
	size_t n = (size_t)snprintf(text, sizeof(text), "Console usage");
	for (size_t i = 0; i < admin_ncmds; i++) {
		const struct admin_cmd *c = &admin_cmds[i];
		if (n < sizeof(text))
			n += (size_t)snprintf(text + n, sizeof(text) - n, "\n\t%s%s%s", c->name,
					      *c->args_help ? " " : "", c->args_help);
		row_begin(x);
		col_str(x, c->name);
		col_str(x, c->args_help);
		col_str(x, c->admin_only ? "admin" : "stats");
		col_str(x, c->help);
		row_end(x);
	}
	proto_notice(x->o, "00000", text);
	return ADMIN_OK;
}


/* ---------------------------------------------------------------------------------------- */
/* parsing and dispatch */

/* Matches the words of `name` at the start of `in` (case-insensitive, any white space between
 * words, a word boundary after the last); *rest points after the match. */
static bool match_words(const char *name, const char *in, const char **rest)
{
	while (*name) {
		if (*name == ' ') {
			if (!isspace((unsigned char)*in))
				return false;
			while (isspace((unsigned char)*in))
				in++;
			name++;
			continue;
		}
		if (toupper((unsigned char)*in) != *name)
			return false;
		in++;
		name++;
	}
	if (*in && !isspace((unsigned char)*in))
		return false;
	while (isspace((unsigned char)*in))
		in++;
	*rest = in;
	return true;
}

/* Copies the command text, without surrounding space and one trailing ';', into buf.
 * Returns false (with an error queued) when it is too long or holds a second statement. */
static bool clean_command(struct admin_ctx *x, const char *sql, char *buf, size_t len)
{
	while (isspace((unsigned char)*sql))
		sql++;
	size_t n = strlen(sql);
	while (n && (isspace((unsigned char)sql[n - 1]) || sql[n - 1] == ';'))
		n--;
	if (n >= len) {
		cmd_error(x, "54000", "console command too long (over %zu bytes)", len - 1);
		return false;
	}
	memcpy(buf, sql, n);
	buf[n] = 0;
	/* a ';' outside quotes means two statements */
	bool q = false;
	for (size_t i = 0; i < n; i++) {
		if (buf[i] == '\'')
			q = !q;
		else if (buf[i] == ';' && !q) {
			cmd_error(x, "42601", "one console command per query, please");
			return false;
		}
	}
	return true;
}

static const struct admin_cmd *find_command(const char *text, const char **rest)
{
	for (size_t i = 0; i < admin_ncmds; i++)
		if (match_words(admin_cmds[i].name, text, rest))
			return &admin_cmds[i];
	return NULL;
}

static void unknown_command(struct admin_ctx *x, const char *text)
{
	if (!strncasecmp(text, "SHOW", 4) && (isspace((unsigned char)text[4]) || !text[4]))
		cmd_error(x, "42704", "unknown SHOW command: %.128s (see SHOW HELP)", text);
	else
		cmd_error(x, "42601", "invalid console command: %.128s (see SHOW HELP)", text);
}

/* A database name argument: an identifier, optionally "double quoted". */
static bool parse_db_name(const char *arg, char *out, size_t len)
{
	size_t n = 0;
	if (*arg == '"') {
		arg++;
		while (*arg && !(*arg == '"' && arg[1] != '"')) {
			if (*arg == '"')
				arg++;
			if (n >= len - 1)
				return false;
			out[n++] = *arg++;
		}
		if (*arg != '"' || arg[1])
			return false;
	} else {
		while (*arg && !isspace((unsigned char)*arg)) {
			if (n >= len - 1)
				return false;
			out[n++] = *arg++;
		}
		if (*arg)
			return false;
	}
	out[n] = 0;
	return n > 0;
}

/* Checks the arguments and access of x->cmd; false with an error queued. */
static bool check_command(struct admin_ctx *x)
{
	const struct admin_cmd *c = x->cmd;
	/* Against the lists as they are now, not as they were at login: a RELOAD or SET that
	 * takes a user off admin_users takes the control commands away at once. */
	const struct config *cf = x->w->cf;
	x->cl->admin = config_list_has(cf->admin_users, x->cl->user_name);
	if (!x->cl->admin && !config_list_has(cf->stats_users, x->cl->user_name)) {
		cmd_error(x, "42501", "permission denied: %s needs a user listed in admin_users or stats_users",
			  c->name);
		return false;
	}
	if (c->admin_only && !x->cl->admin) {
		cmd_error(x, "42501", "permission denied: %s needs a user listed in admin_users", c->name);
		return false;
	}
	switch (c->arg) {
	case ARG_NONE:
		if (*x->arg) {
			cmd_error(x, "42601", "%s takes no argument", c->name);
			return false;
		}
		return true;
	case ARG_DB_OPT:
		if (!*x->arg)
			return true;
		/* fall through */
	case ARG_DB: {
		char name[256];
		if (!parse_db_name(x->arg, name, sizeof(name))) {
			cmd_error(x, "42601", "%s needs one database name", c->name);
			return false;
		}
		x->db = pool_find_database(x->w, name);
		if (!x->db) {
			cmd_error(x, "3D000", "no such database: %s", name);
			return false;
		}
		return true;
	}
	case ARG_ID:
		if (!*x->arg) {
			cmd_error(x, "42601", "%s needs a client id", c->name);
			return false;
		}
		return true;
	case ARG_SHUTDOWN:
	case ARG_SET:
		return true;
	}
	return true;
}

static void command_complete(struct pktbuf *o, const char *tag)
{
	pktbuf_begin(o, 'C');
	pktbuf_put_str(o, tag);
	pktbuf_end(o);
}

/* After a command (or a listing's batch) ran: a listing that stopped early is kept in the
 * session to go on once the reply drains (ADMIN_MORE); anything else completes here. */
static enum admin_rc finish(struct admin_ctx *x, enum admin_rc rc)
{
	struct admin_session *s = x->cl->console;
	if (rc == ADMIN_OK && x->more) {
		s->stream.cmd = x->cmd;
		s->stream.simple = x->simple;
		s->stream.phase = x->phase;
		s->stream.after = x->after;
		return ADMIN_MORE;
	}
	s->stream.cmd = NULL;
	free(s->stream.order);
	s->stream.order = NULL;
	s->stream.n_order = 0;
	if (rc == ADMIN_OK)
		command_complete(x->o, x->cmd->cols ? "SHOW" : x->cmd->name);   /* as PgBouncer */
	return rc;
}

/* Runs one command text.  simple: a Query message (RowDescription is sent here). */
static enum admin_rc run_command(struct client *cl, const char *sql, bool simple)
{
	struct admin_ctx x = { .cl = cl, .w = cl->c.w, .o = &cl->c.out, .simple = simple,
			       .describe = simple };
	char text[ADMIN_CMD_MAX + 1];
	static const struct admin_cmd none = { "", ARG_NONE, "", false, NULL, NULL, 0, "" };
	x.cmd = &none;
	if (!clean_command(&x, sql, text, sizeof(text)))
		return ADMIN_ERR;
	if (!*text) {
		pktbuf_begin(x.o, 'I');
		pktbuf_end(x.o);
		return ADMIN_OK;
	}
	x.cmd = find_command(text, &x.arg);
	if (!x.cmd) {
		x.cmd = &none;
		unknown_command(&x, text);
		return ADMIN_ERR;
	}
	if (!check_command(&x))
		return ADMIN_ERR;
	if (x.cmd->cols && x.describe)
		send_row_description(x.o, x.cmd);
	return finish(&x, x.cmd->run(&x));
}

/* Describe of the unnamed statement or portal: the columns the command would return. */
static bool describe_command(struct client *cl, const char *sql, bool statement)
{
	struct admin_ctx x = { .cl = cl, .w = cl->c.w, .o = &cl->c.out };
	static const struct admin_cmd none = { "", ARG_NONE, "", false, NULL, NULL, 0, "" };
	char text[ADMIN_CMD_MAX + 1];
	x.cmd = &none;
	if (!clean_command(&x, sql, text, sizeof(text)))
		return false;
	const struct admin_cmd *c = *text ? find_command(text, &x.arg) : NULL;
	if (*text && !c) {
		unknown_command(&x, text);
		return false;
	}
	if (statement) {
		pktbuf_begin(x.o, 't');
		pktbuf_put_u16(x.o, 0);
		pktbuf_end(x.o);
	}
	if (c && c->cols) {
		send_row_description(x.o, c);
	} else {
		pktbuf_begin(x.o, 'n');
		pktbuf_end(x.o);
	}
	return true;
}

/* ---------------------------------------------------------------------------------------- */
/* messages */

static int stmt_find(const struct admin_session *s, const char *name)
{
	for (int i = 0; i < ADMIN_MAX_STMTS; i++)
		if (s->stmt[i].text && strcmp(s->stmt[i].name, name) == 0)
			return i;
	return -1;
}

static void stmt_drop(struct admin_session *s, int i)
{
	free(s->stmt[i].text);
	s->stmt[i].text = NULL;
}

/* Parse: a statement (named or not) without parameters. */
static bool on_parse(struct client *cl, const uint8_t *body, uint32_t blen)
{
	struct admin_session *s = cl->console;
	const uint8_t *p = body, *end = body + blen;
	const char *name = proto_get_str(&p, end);
	const char *query = name ? proto_get_str(&p, end) : NULL;
	if (!query || end - p < 2) {
		proto_error(&cl->c.out, "ERROR", "08P01", "invalid Parse message");
		return false;
	}
	uint16_t nparams = (uint16_t)(p[0] << 8 | p[1]);
	if (nparams) {
		proto_error(&cl->c.out, "ERROR", "0A000", "console commands take no parameters");
		return false;
	}
	size_t len = strlen(query);
	if (len > ADMIN_CMD_MAX) {
		proto_error(&cl->c.out, "ERROR", "54000", "console command too long");
		return false;
	}
	if (strlen(name) >= ADMIN_NAME_MAX) {
		proto_error(&cl->c.out, "ERROR", "42602", "statement name too long");
		return false;
	}
	int i = stmt_find(s, name);
	if (i >= 0 && *name) {
		proto_error(&cl->c.out, "ERROR", "42P05", "prepared statement already exists");
		return false;
	}
	if (i < 0)
		for (i = 0; i < ADMIN_MAX_STMTS && s->stmt[i].text; i++)
			;
	if (i >= ADMIN_MAX_STMTS) {
		proto_error(&cl->c.out, "ERROR", "53400", "too many prepared statements on the console");
		return false;
	}
	char *text = strdup(query);
	if (!text) {
		proto_error(&cl->c.out, "ERROR", "53200", "out of memory");
		return false;
	}
	stmt_drop(s, i);
	snprintf(s->stmt[i].name, sizeof(s->stmt[i].name), "%s", name);
	s->stmt[i].text = text;
	pktbuf_begin(&cl->c.out, '1');
	pktbuf_end(&cl->c.out);
	return true;
}

/* Bind: the unnamed portal, no parameters, text results. */
static bool on_bind(struct client *cl, const uint8_t *body, uint32_t blen)
{
	struct admin_session *s = cl->console;
	const uint8_t *p = body, *end = body + blen;
	const char *portal = proto_get_str(&p, end);
	const char *stmt = portal ? proto_get_str(&p, end) : NULL;
	if (!stmt || end - p < 2) {
		proto_error(&cl->c.out, "ERROR", "08P01", "invalid Bind message");
		return false;
	}
	uint16_t nfmt = (uint16_t)(p[0] << 8 | p[1]);
	p += 2;
	if ((size_t)(end - p) < (size_t)nfmt * 2 + 2) {
		proto_error(&cl->c.out, "ERROR", "08P01", "invalid Bind message");
		return false;
	}
	p += (size_t)nfmt * 2;
	uint16_t nparams = (uint16_t)(p[0] << 8 | p[1]);
	p += 2;
	if (nparams) {
		proto_error(&cl->c.out, "ERROR", "0A000", "console commands take no parameters");
		return false;
	}
	if (end - p < 2) {
		proto_error(&cl->c.out, "ERROR", "08P01", "invalid Bind message");
		return false;
	}
	uint16_t nres = (uint16_t)(p[0] << 8 | p[1]);
	p += 2;
	if ((size_t)(end - p) < (size_t)nres * 2) {
		proto_error(&cl->c.out, "ERROR", "08P01", "invalid Bind message");
		return false;
	}
	for (uint16_t i = 0; i < nres; i++)
		if (p[2 * i] || p[2 * i + 1]) {
			proto_error(&cl->c.out, "ERROR", "0A000", "the console returns text results only");
			return false;
		}
	if (*portal) {
		proto_error(&cl->c.out, "ERROR", "0A000", "the console supports the unnamed portal only");
		return false;
	}
	int i = stmt_find(s, stmt);
	if (i < 0) {
		proto_error(&cl->c.out, "ERROR", "26000", "prepared statement does not exist");
		return false;
	}
	char *text = strdup(s->stmt[i].text);
	if (!text) {
		proto_error(&cl->c.out, "ERROR", "53200", "out of memory");
		return false;
	}
	free(s->portal);
	s->portal = text;
	pktbuf_begin(&cl->c.out, '2');
	pktbuf_end(&cl->c.out);
	return true;
}

/* The command text a Describe / Close names, or NULL with an error queued. */
static const char *target_text(struct client *cl, const uint8_t *body, uint32_t blen, int *slot)
{
	struct admin_session *s = cl->console;
	*slot = -1;
	if (blen < 2 || (body[0] != 'S' && body[0] != 'P') || body[blen - 1] != 0) {
		proto_error(&cl->c.out, "ERROR", "08P01", "invalid Describe or Close message");
		return NULL;
	}
	const char *name = (const char *)body + 1;
	if (body[0] == 'S') {
		*slot = stmt_find(s, name);
		if (*slot < 0) {
			proto_error(&cl->c.out, "ERROR", "26000", "prepared statement does not exist");
			return NULL;
		}
		return s->stmt[*slot].text;
	}
	if (*name || !s->portal) {
		proto_error(&cl->c.out, "ERROR", "34000", "portal does not exist");
		return NULL;
	}
	return s->portal;
}

/* Handles one message; after an error in the extended protocol, messages up to Sync are skipped. */
static enum admin_rc on_message(struct client *cl, char type, const uint8_t *body, uint32_t blen)
{
	struct admin_session *s = cl->console;
	struct pktbuf *o = &cl->c.out;
	if (type == 'S') {
		s->skip_to_sync = false;
		proto_ready(o, 'I');
		return ADMIN_OK;
	}
	if (type == 'Q') {
		s->skip_to_sync = false;
		if (!blen || body[blen - 1] != 0 || memchr(body, 0, blen) != body + blen - 1) {
			proto_error(o, "ERROR", "08P01", "invalid Query message");
			proto_ready(o, 'I');
			return ADMIN_OK;
		}
		enum admin_rc rc = run_command(cl, (const char *)body, true);
		if (rc != ADMIN_WAIT && rc != ADMIN_MORE)
			proto_ready(o, 'I');   /* else when the wait or the listing is over */
		return rc;
	}
	if (s->skip_to_sync)
		return ADMIN_OK;
	bool ok = true;
	enum admin_rc rc = ADMIN_OK;
	switch (type) {
	case 'P':
		ok = on_parse(cl, body, blen);
		break;
	case 'B':
		ok = on_bind(cl, body, blen);
		break;
	case 'D': {
		int slot;
		const char *text = target_text(cl, body, blen, &slot);
		ok = text && describe_command(cl, text, body[0] == 'S');
		break;
	}
	case 'E': {
		const uint8_t *p = body, *end = body + blen;
		const char *portal = proto_get_str(&p, end);
		if (!portal || *portal || !s->portal) {
			proto_error(o, "ERROR", "34000", "portal does not exist");
			ok = false;
			break;
		}
		rc = run_command(cl, s->portal, false);
		ok = rc != ADMIN_ERR;
		break;
	}
	case 'C': {
		/* closing what does not exist is not an error */
		if (blen >= 2 && body[0] == 'S' && body[blen - 1] == 0) {
			int i = stmt_find(s, (const char *)body + 1);
			if (i >= 0)
				stmt_drop(s, i);
		} else if (blen >= 2 && body[0] == 'P' && body[1] == 0) {
			free(s->portal);
			s->portal = NULL;
		}
		pktbuf_begin(o, '3');
		pktbuf_end(o);
		break;
	}
	case 'H':
		break;
	default: {
		char msg[96];
		snprintf(msg, sizeof(msg), "unsupported message type '%c' on the console",
			 type >= 32 && type < 127 ? type : '?');
		proto_error(o, "ERROR", "08P01", msg);
		ok = false;
	}
	}
	if (!ok)
		s->skip_to_sync = true;
	return rc;
}

/* Runs every complete message in the buffer, stopping at a command that waits or a listing
 * that goes on in batches, and sends the replies.  The client may be closed on return. */
static void admin_process(struct client *cl)
{
	struct admin_session *s = cl->console;
	struct iobuf *b = cl->c.in;
	while (!cl->c.dead && s->wait == WAIT_NONE && !s->stream.cmd && b &&
	       b->end - b->scan >= PROTO_HDR) {
		char type = (char)b->data[b->scan];
		uint32_t len = proto_get32(b->data + b->scan + 1);
		if (len < 4 || len > ADMIN_MSG_MAX) {
			client_close(cl, "invalid console message", "08P01");
			return;
		}
		if (b->end - b->scan < len + 1)
			break;
		const uint8_t *body = b->data + b->scan + PROTO_HDR;
		uint32_t blen = len - 4;
		b->scan += len + 1;
		b->start = b->scan;
		if (type == 'X') {
			client_close(cl, "client close request", NULL);
			return;
		}
		on_message(cl, type, body, blen);
		if (cl->c.out.failed) {
			client_close(cl, "out of memory for a console reply", NULL);
			return;
		}
	}
	if (cl->c.dead)
		return;
	if (cl->c.out.len && sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return;
	}
	if (b && b->start == b->end) {
		b->start = b->scan = b->end = 0;
		sbuf_release_buf(&cl->c);
	}
	if (s->stream.cmd)
		event_add(&s->ev_drain, NULL);   /* the next batch once the socket takes more */
	else if (s->wait == WAIT_NONE)
		sbuf_resume(&cl->c);   /* reading stops when the buffer fills behind a held command */
	if (s->check_shutdown) {
		s->check_shutdown = false;
		pgmux_check_shutdown(cl->c.w);
	}
}

/* The socket can take more of a listing: what is left of the last batch goes, then the next
 * batch is made.  One batch per wakeup, so a long listing never holds up the loop. */
static void stream_next(evutil_socket_t fd, short what, void *arg)
{
	struct admin_session *s = arg;
	struct client *cl = s->cl;
	struct worker *w = cl->c.w;
	w->now = pgmux_now();
	if (!s->stream.cmd || cl->c.dead)
		return;
	if (cl->c.out.len) {
		int r = sbuf_send_out(&cl->c);
		if (r < 0) {
			client_close(cl, "send failed", NULL);
			return;
		}
		if (r > 0) {
			event_add(&s->ev_drain, NULL);
			return;
		}
	}
	struct admin_ctx x = { .cl = cl, .w = w, .o = &cl->c.out, .cmd = s->stream.cmd, .arg = "",
			       .simple = s->stream.simple, .phase = s->stream.phase,
			       .after = s->stream.after };
	enum admin_rc rc = finish(&x, x.cmd->run(&x));
	if (rc == ADMIN_ERR && !x.simple)
		s->skip_to_sync = true;
	else if (rc != ADMIN_MORE && x.simple)
		proto_ready(x.o, 'I');
	if (cl->c.out.failed) {
		client_close(cl, "out of memory for a console reply", NULL);
		return;
	}
	admin_process(cl);
}

/* ---------------------------------------------------------------------------------------- */
/* entry points */

bool admin_is_console_db(const char *name)
{
	return strcmp(name, "pgmux") == 0 || strcmp(name, "pgbouncer") == 0;
}

void admin_client_ready(struct client *cl)
{
	struct worker *w = cl->c.w;
	bool admin = config_list_has(w->cf->admin_users, cl->user_name);
	bool stats = admin || config_list_has(w->cf->stats_users, cl->user_name);
	if (!stats) {
		client_close(cl, "not allowed", "42501");
		return;
	}
	struct admin_session *s = calloc(1, sizeof(*s));
	if (!s) {
		client_close(cl, "out of memory", "53200");
		return;
	}
	s->cl = cl;
	evtimer_assign(&s->ev_wait, w->base, wait_poll, s);
	/* Beside the conn's own write event: this one is added only while a listing waits for
	 * the socket to drain, and its callback sends before it makes more. */
	event_assign(&s->ev_drain, w->base, cl->c.fd, EV_WRITE, stream_next, s);
	cl->console = s;
	cl->admin = admin;
	stats_start(w);
	struct pktbuf *o = &cl->c.out;
	proto_auth_request(o, 0, NULL, 0);
	proto_param_status(o, "server_version", "15.0 (" PGMUX_VERSION_STR ")");
	proto_param_status(o, "server_encoding", "UTF8");
	proto_param_status(o, "client_encoding", "UTF8");
	proto_param_status(o, "DateStyle", "ISO, MDY");
	proto_param_status(o, "integer_datetimes", "on");
	proto_param_status(o, "standard_conforming_strings", "on");
	proto_param_status(o, "application_name", "pgmux");
	proto_backend_key(o, 0, 0);
	proto_ready(o, 'I');
	client_set_state(cl, CL_ADMIN);
	if (sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return;
	}
	sbuf_resume(&cl->c);
}

void admin_on_data(struct client *cl)
{
	if (!cl->console)
		return;
	admin_process(cl);
}

bool admin_uses_database(struct worker *w, const struct database *db)
{
	struct list *it;
	for (it = w->cl_admin.next; it != &w->cl_admin; it = it->next) {
		const struct admin_session *s = list_entry(it, struct client, node)->console;
		if (s && s->wait != WAIT_NONE && s->wait_db == db)
			return true;
	}
	return false;
}

void admin_client_gone(struct client *cl)
{
	struct admin_session *s = cl->console;
	if (!s)
		return;
	event_del(&s->ev_wait);
	event_del(&s->ev_drain);
	for (int i = 0; i < ADMIN_MAX_STMTS; i++)
		stmt_drop(s, i);
	free(s->portal);
	free(s->stream.order);
	free(s);
	cl->console = NULL;
}
