/* admin_show.c: the console's SHOW commands: one handler per listing, their columns, and
 * their part of the command table. */
#include "admin_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "config.h"
#include "pool.h"
#include "route.h"
#include "stats.h"
#include "tls.h"
#include "worker.h"

/* ---------------------------------------------------------------------------------------- */
/* helpers for the listings */

/* A monotonic pgmux time as a wall-clock timestamp, as PgBouncer prints them. */
static void fmt_time(char *buf, size_t len, uint64_t mono)
{
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	uint64_t now = worker_now();
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
		admin_col_null(x);
		return;
	}
	fmt_time(b, sizeof(b), mono);
	admin_col_str(x, b);
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
		admin_col_null(x);
		return;
	}
	/* PgBouncer prints the object's address; pgmux prints its id, which leaks no layout. */
	snprintf(b, sizeof(b), "0x%llx", (unsigned long long)c->id);
	admin_col_str(x, b);
}

static void col_tls(struct admin_ctx *x, const struct conn *c)
{
	char b[160];
	admin_col_str(x, tls_describe(c, b, sizeof(b)));
}

static size_t list_len(const struct list *l)
{
	size_t n = 0;
	for (const struct list *it = l->next; it != l; it = it->next)
		n++;
	return n;
}

/* ---------------------------------------------------------------------------------------- */
/* SHOW commands */

static enum admin_rc show_version(struct admin_ctx *x)
{
	admin_row_begin(x);
	admin_col_str(x, PGMUX_VERSION_STR);
	admin_row_end(x);
	return ADMIN_OK;
}

static void pool_row(struct admin_ctx *x, void *obj)
{
	struct pool *p = obj;
	struct stats_pool_row r;
	stats_pool_row(p, x->w->now, &r);
	admin_row_begin(x);
	admin_col_str(x, p->db->name);
	admin_col_str(x, p->user->name);
#define POOL_FIGURE_COL(member, help) admin_col_int(x, r.member);
	POOL_FIGURES(POOL_FIGURE_COL)
#undef POOL_FIGURE_COL
	admin_col_str(x, config_pool_mode_name(pool_mode(p)));
	admin_col_int(x, r.pool_size);
	admin_col_float(x, r.saturation);
	admin_row_end(x);
}

static enum admin_rc show_pools(struct admin_ctx *x)
{
	struct picker pk;
	admin_picker_init(&pk, x);
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &x->w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		admin_pick(&pk, p->id, p);
	}
	admin_pick_rows(x, &pk, pool_row);
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
			admin_row_begin(x);
			admin_col_str(x, b.cluster);
			admin_col_str(x, b.name);
			admin_col_int(x, b.shard);
			admin_col_str(x, b.host);
			admin_col_int(x, b.port);
			admin_col_str(x, b.cfg_replica ? "replica" : "primary");
			admin_col_str(x, route_role_name(b.role));
			admin_col_str(x, route_role_name(b.seen_role));
			admin_col_str(x, route_state_name(b.state));
			admin_col_int(x, b.lag_bytes);
			admin_col_int(x, b.lag_ms);
			admin_col_int(x, b.weight);
			admin_col_int(x, b.cl_active);
			admin_col_int(x, b.cl_waiting);
			admin_col_int(x, b.sv_active);
			admin_col_int(x, b.sv_idle);
			admin_col_int(x, b.sv_used);
			admin_col_int(x, (int64_t)b.reads);
			admin_col_int(x, (int64_t)b.writes);
			admin_col_int(x, (int64_t)b.retries);
			admin_col_str(x, b.last_error);
			admin_row_end(x);
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
			admin_row_begin(x);
			admin_col_str(x, r.cluster);
			admin_col_int(x, r.shard);
			admin_col_str(x, r.primary);
			admin_col_str(x, route_state_name(r.primary_state));
			admin_col_int(x, r.backends);
			admin_col_int(x, r.backends_up);
			admin_col_int(x, r.replicas);
			admin_col_int(x, r.replicas_up);
			admin_col_int(x, r.max_lag_bytes);
			admin_col_int(x, (int64_t)r.reads);
			admin_col_int(x, (int64_t)r.writes);
			admin_col_int(x, (int64_t)r.keyed);
			admin_col_str(x, r.members);
			admin_row_end(x);
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
	admin_row_begin(x);
	admin_col_str(x, s->pool->db->name);
	admin_col_str(x, s->pool->user->name);
	admin_col_int(x, s->pool_size);
	admin_col_int(x, s->sv_active);
	admin_col_float(x, s->saturation);
	admin_col_int(x, s->peak_1m);
	admin_col_float(x, s->peak_saturation_1m);
	admin_col_int(x, s->peak_period);
	admin_col_int(x, s->cl_waiting);
	admin_col_uint(x, s->maxwait_us);
	for (int k = 0; k < STATS_NH; k++)
		for (int q = 0; q < STATS_NQ; q++)
			admin_col_uint(x, s->q[k][q]);
	admin_col_int(x, s->headroom);
	admin_col_uint(x, s->saturated_us / 1000000u);
	admin_row_end(x);
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
		admin_error(x, "53200", "out of memory");
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
	qsort(pk.v, n, sizeof(pk.v[0]), admin_pick_cmp);
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &x->w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		struct pick key = { p->id, NULL };
		struct pick *hit = n ? bsearch(&key, pk.v, n, sizeof(pk.v[0]), admin_pick_cmp) : NULL;
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

/* db NULL: the console's row, under PgBouncer's name for it. */
static void stats_row(struct admin_ctx *x, struct database *db, enum stats_view view)
{
	struct stats tot, avg;
	if (db) {
		stats_total(x->w, db, &tot);
		stats_average_of(x->w, db, &avg);
	} else {
		stats_console(x->w, &tot, &avg);
	}
	admin_row_begin(x);
	admin_col_str(x, db ? db->name : "pgbouncer");
	if (view != STATS_AVG_ONLY)
		for (int f = 0; f < STATS_N; f++)
			admin_col_uint(x, tot.v[f]);
	if (view != STATS_TOTALS_ONLY)
		for (int f = 0; f < STATS_N; f++)
			admin_col_uint(x, avg.v[f]);
	admin_row_end(x);
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
	if (!x->after)
		row[view](x, NULL);   /* the console's row, once, ahead of the first batch */
	admin_picker_init(&pk, x);
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &x->w->databases) {
		struct database *db = list_entry(it, struct database, node);
		admin_pick(&pk, db->id, db);
	}
	/* stats_total walks every pool: a batch of databases costs that many walks */
	admin_pick_rows(x, &pk, row[view]);
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
		admin_row_kv(x, stats_fields[f].total_name, tot.v[f]);
	for (int f = 0; f < STATS_N; f++)
		admin_row_kv(x, stats_fields[f].avg_name, avg.v[f]);
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
	admin_col_str(x, type);
	admin_col_str(x, user);
	admin_col_str(x, db);
	admin_col_str(x, state);
	admin_col_str(x, addr);
	admin_col_int(x, port);
	admin_col_str(x, laddr);
	admin_col_int(x, lport);
}

/* SHOW SOCKETS: where each socket's buffers stand (PgBouncer's columns, pgmux's buffers). */
static void buffer_cols(struct admin_ctx *x, const struct conn *c)
{
	const struct iobuf *b = c->in;
	admin_col_uint(x, b ? b->end : 0);                    /* recv_pos: bytes received */
	admin_col_uint(x, b ? b->scan : 0);                   /* pkt_pos: parsed up to here */
	admin_col_uint(x, c->pkt_left);                       /* pkt_remain: of the message in transit */
	admin_col_uint(x, b ? b->start : 0);                  /* send_pos: passed on up to here */
	admin_col_uint(x, b ? b->scan - b->start : 0);        /* send_remain: parsed, not passed on */
	admin_col_uint(x, b ? b->end - b->scan : 0);          /* pkt_avail: received, not parsed */
	admin_col_uint(x, c->out.len - c->out.sent);          /* send_avail: pgmux's own bytes queued */
}

static void client_row(struct admin_ctx *x, void *obj)
{
	struct client *c = obj;
	uint64_t now = x->w->now;
	bool waiting = c->state == CL_WAITING || c->state == CL_WAITING_LOGIN;
	/* PgBouncer 1.25's words: "active" holds a server, "idle" holds none and wants none. */
	const char *state = c->state == CL_LOGIN ? "login" : waiting ? "waiting" :
			    c->link ? "active" : "idle";
	uint64_t wait = waiting && now > c->wait_start ? now - c->wait_start : 0;
	admin_row_begin(x);
	conn_row_head(x, "C", c->user_name, c->db_name, state, &c->c);
	col_time(x, c->connect_time);
	col_time(x, c->last_active);
	admin_col_uint(x, wait / 1000000u);
	admin_col_uint(x, wait % 1000000u);
	admin_col_int(x, 0);                                          /* close_needed */
	col_ptr(x, &c->c);
	col_ptr(x, c->link ? &c->link->c : NULL);
	int pid = 0;
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	if (!strcmp(c->addr, "unix") && getsockopt(c->c.fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0)
		pid = cred.pid;
	admin_col_int(x, pid);
	col_tls(x, &c->c);
	const char *app = varcache_get(&c->vars, VAR_APPNAME);
	admin_col_str(x, app ? app : "");
	admin_col_int(x, 0);                                          /* prepared_statements */
	admin_col_uint(x, c->c.id);
	if (x->buffers)
		buffer_cols(x, &c->c);
	admin_row_end(x);
}

struct client *admin_each_client(struct worker *w, bool login,
				 bool (*fn)(struct client *cl, void *arg), void *arg)
{
	struct list *it, *tmp, *c, *ct;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		struct list *l[N_CL_LISTS];
		client_lists(p, l);
		for (int i = 0; i < N_CL_LISTS; i++)
			list_for_each_safe(c, ct, l[i])
				if (fn(list_entry(c, struct client, node), arg))
					return list_entry(c, struct client, node);
	}
	list_for_each_safe(c, ct, &w->cl_admin)
		if (fn(list_entry(c, struct client, node), arg))
			return list_entry(c, struct client, node);
	if (login)
		list_for_each_safe(c, ct, &w->cl_login)
			if (fn(list_entry(c, struct client, node), arg))
				return list_entry(c, struct client, node);
	return NULL;
}

static bool pick_client(struct client *cl, void *pk)
{
	admin_pick(pk, cl->c.id, cl);
	return false;
}

/* Every client socket (logged in, or also logging in) into the picker. */
static void pick_clients(struct admin_ctx *x, struct picker *pk, bool login)
{
	admin_each_client(x->w, login, pick_client, pk);
}

static enum admin_rc show_clients(struct admin_ctx *x)
{
	struct picker pk;
	admin_picker_init(&pk, x);
	pick_clients(x, &pk, false);
	admin_pick_rows(x, &pk, client_row);
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
	admin_row_begin(x);
	conn_row_head(x, "S", pool_server_user(p), p->db->name, server_state_name(sv), &sv->c);
	col_time(x, sv->connect_time);
	col_time(x, sv->link ? sv->link_time : sv->last_used);
	admin_col_int(x, 0);                  /* wait */
	admin_col_int(x, 0);                  /* wait_us */
	admin_col_int(x, sv->close_when_idle);
	col_ptr(x, &sv->c);
	col_ptr(x, sv->link ? &sv->link->c : NULL);
	admin_col_uint(x, sv->be_pid);
	col_tls(x, &sv->c);
	const char *app = varcache_get(&sv->vars, VAR_APPNAME);
	admin_col_str(x, app ? app : "");
	admin_col_int(x, 0);                  /* prepared_statements */
	admin_col_uint(x, sv->c.id);
	if (x->buffers)
		buffer_cols(x, &sv->c);
	admin_row_end(x);
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
				admin_pick(pk, list_entry(s, struct server, node)->c.id, list_entry(s, struct server, node));
	}
}

static enum admin_rc show_servers(struct admin_ctx *x)
{
	struct picker pk;
	admin_picker_init(&pk, x);
	pick_servers(x, &pk);
	admin_pick_rows(x, &pk, server_row);
	return ADMIN_OK;
}

/* Clients (those logging in too), then servers. */
static enum admin_rc show_sockets(struct admin_ctx *x)
{
	struct picker pk;
	admin_picker_init(&pk, x);
	x->buffers = true;
	if (x->phase == 0) {
		pick_clients(x, &pk, true);
		admin_pick_rows(x, &pk, client_row);
		if (!x->more)
			admin_next_phase(x);
		return ADMIN_OK;
	}
	pick_servers(x, &pk);
	admin_pick_rows(x, &pk, server_row);
	return ADMIN_OK;
}

static void database_row(struct admin_ctx *x, const char *name, const struct cfg_db *e,
			 const struct database *db)
{
	const struct config *cf = x->w->cf;
	admin_row_begin(x);
	admin_col_str(x, name);
	admin_col_str(x, e->host);
	admin_col_int(x, e->port);
	admin_col_str(x, e->dbname ? e->dbname : name);
	admin_col_str(x, e->user);
	admin_col_int(x, e->pool_size >= 0 ? e->pool_size : cf->default_pool_size);
	admin_col_int(x, e->min_pool_size >= 0 ? e->min_pool_size : cf->min_pool_size);
	admin_col_int(x, e->reserve_pool >= 0 ? e->reserve_pool : cf->reserve_pool_size);
	admin_col_int(x, cf->server_lifetime / 1000000);
	if (e->pool_mode >= 0)
		admin_col_str(x, config_pool_mode_name(e->pool_mode));
	else
		admin_col_null(x);
	admin_col_str(x, config_lbh_disable(e) ? "disable" : "round-robin");
	admin_col_int(x, pool_db_max_connections(x->w, e));
	admin_col_int(x, db ? db->n_servers : 0);
	admin_col_int(x, pool_db_max_clients(x->w, e));
	admin_col_int(x, db ? db->n_clients : 0);
	admin_col_int(x, db && db->paused);
	admin_col_int(x, db && db->disabled);
	admin_row_end(x);
}

/* The console, as PgBouncer lists its admin database: both of its names count as this one. */
static void console_db_row(struct admin_ctx *x)
{
	const struct config *cf = x->w->cf;
	admin_row_begin(x);
	admin_col_str(x, "pgbouncer");
	admin_col_null(x);
	admin_col_int(x, cf->listen_port);
	admin_col_str(x, "pgbouncer");
	admin_col_str(x, "pgbouncer");
	admin_col_int(x, 2);
	admin_col_int(x, 0);
	admin_col_int(x, 0);
	admin_col_int(x, cf->server_lifetime / 1000000);
	admin_col_str(x, config_pool_mode_name(POOL_STATEMENT));
	admin_col_null(x);
	admin_col_int(x, cf->max_db_connections);
	admin_col_int(x, 0);
	admin_col_int(x, cf->max_db_client_connections);
	admin_col_int(x, x->w->n_console_clients);
	admin_col_int(x, 0);
	admin_col_int(x, 0);
	admin_row_end(x);
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
		if (in_batch(x, &pos, &n))
			console_db_row(x);
		for (const struct cfg_db *e = w->cf->dbs; e; e = e->next)
			if (strcmp(e->name, "*") != 0 && in_batch(x, &pos, &n))
				database_row(x, e->name, e, pool_lookup_database(w, e->name, &known));
		if (!x->more)
			admin_next_phase(x);
		return ADMIN_OK;
	}
	struct picker pk;
	admin_picker_init(&pk, x);
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->databases) {
		struct database *db = list_entry(it, struct database, node);
		if (db->from_wildcard && !db->removed)
			admin_pick(&pk, db->id, db);
	}
	admin_pick_rows(x, &pk, wildcard_db_row);
	return ADMIN_OK;
}

/* An optional count as text, "" when unset (PgBouncer's SHOW USERS pool sizes). */
static void col_opt_int(struct admin_ctx *x, int v)
{
	char b[16] = "";
	if (v >= 0)
		snprintf(b, sizeof(b), "%d", v);
	admin_col_str(x, b);
}

static void user_row(struct admin_ctx *x, const char *name, const struct cfg_user *e,
		     const struct user *u)
{
	admin_row_begin(x);
	admin_col_str(x, name);
	col_opt_int(x, e ? e->pool_size : -1);
	col_opt_int(x, e ? e->reserve_pool_size : -1);
	if (e && e->pool_mode >= 0)
		admin_col_str(x, config_pool_mode_name(e->pool_mode));
	else
		admin_col_null(x);
	admin_col_int(x, pool_user_max_connections(x->w, e));
	admin_col_int(x, u ? u->n_servers : 0);
	admin_col_int(x, pool_user_max_clients(x->w, e));
	admin_col_int(x, u ? u->n_clients : 0);
	admin_row_end(x);
}

/* The [users] entries, then the other users that have pools or logged-in clients. */
static enum admin_rc show_users(struct admin_ctx *x)
{
	struct worker *w = x->w;
	uint64_t pos = 0;
	size_t n = 0;
	if (x->phase == 0) {
		for (const struct cfg_user *e = w->cf->users; e; e = e->next)
			if (in_batch(x, &pos, &n))
				user_row(x, e->name, e, pool_lookup_user(w, e->name));
		if (!x->more)
			admin_next_phase(x);
		return ADMIN_OK;
	}
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->users) {
		struct user *u = list_entry(it, struct user, node);
		if (u->cf || !in_batch(x, &pos, &n))
			continue;
		user_row(x, u->name, NULL, u);
	}
	return ADMIN_OK;
}

static enum admin_rc show_lists(struct admin_ctx *x)
{
	struct worker *w = x->w;
	size_t resolving = 0;
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->databases)
		resolving += list_entry(it, struct database, node)->resolving;
	admin_row_kv(x, "databases", list_len(&w->databases));
	admin_row_kv(x, "users", list_len(&w->users));
	admin_row_kv(x, "pools", list_len(&w->pools));
	admin_row_kv(x, "free_clients", 0);
	admin_row_kv(x, "used_clients", (uint64_t)w->n_clients);
	admin_row_kv(x, "login_clients", (uint64_t)w->n_login);
	admin_row_kv(x, "free_servers", 0);
	admin_row_kv(x, "used_servers", (uint64_t)w->n_servers);
	admin_row_kv(x, "dns_names", 0);
	admin_row_kv(x, "dns_zones", 0);
	admin_row_kv(x, "dns_queries", resolving);
	admin_row_kv(x, "dns_pending", resolving);
	return ADMIN_OK;
}

static void mem_row(struct admin_ctx *x, const char *name, uint64_t size, uint64_t used, uint64_t free_)
{
	admin_row_begin(x);
	admin_col_str(x, name);
	admin_col_uint(x, size);
	admin_col_uint(x, used);
	admin_col_uint(x, free_);
	admin_col_uint(x, size * (used + free_));
	admin_row_end(x);
}

static enum admin_rc show_mem(struct admin_ctx *x)
{
	struct worker *w = x->w;
	mem_row(x, "iobuf", sizeof(struct iobuf) + w->bufsize, (uint64_t)w->n_buf_used, (uint64_t)w->buf_free.n);
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
	admin_row_begin(x);
	admin_col_str(x, k);
	admin_col_str(x, v);
	admin_row_end(x);
}

/* PgBouncer's listings of features pgmux does not have (peering, its own DNS cache): the
 * header with PgBouncer's columns and no rows, which is the truth, so monitoring that asks for
 * them gets an answer instead of an error. */
static enum admin_rc show_none(struct admin_ctx *x)
{
	(void)x;
	return ADMIN_OK;
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
	admin_row_begin(x);
	admin_col_str(x, name);
	admin_col_str(x, val);
	admin_col_str(x, def);
	admin_col_str(x, changeable ? "yes" : "no");
	admin_row_end(x);
}

static enum admin_rc show_config(struct admin_ctx *x)
{
	config_each_key(config_row, x);
	return ADMIN_OK;
}

static enum admin_rc show_help(struct admin_ctx *x)
{
	char text[4096];
	size_t n = (size_t)snprintf(text, sizeof(text), "Console usage");
	const struct admin_cmd *c;
	for (size_t i = 0; (c = admin_cmd_nth(i)); i++) {
		if (n < sizeof(text))
			n += (size_t)snprintf(text + n, sizeof(text) - n, "\n\t%s%s%s", c->name,
					      *c->args_help ? " " : "", c->args_help);
		admin_row_begin(x);
		admin_col_str(x, c->name);
		admin_col_str(x, c->args_help);
		admin_col_str(x, c->admin_only ? "admin" : "stats");
		admin_col_str(x, c->help);
		admin_row_end(x);
	}
	proto_notice(x->o, "00000", text);
	return ADMIN_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* the SHOW commands */

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
#define STATS_TOTAL_COL(id, member, name, total, avg, kind, prom, unit) I(total),
#define STATS_AVG_COL(id, member, name, total, avg, kind, prom, unit) I(avg),
#define STATS_PLAIN_COL(id, member, name, total, avg, kind, prom, unit) I(name),
static const struct admin_col cols_stats[] = {
	T("database"), STATS_FIELDS(STATS_TOTAL_COL) STATS_FIELDS(STATS_AVG_COL)
};
static const struct admin_col cols_stats_plain[] = { T("database"), STATS_FIELDS(STATS_PLAIN_COL) };
static const struct admin_col cols_name_value[] = { T("name"), I("value") };
/* The columns of SHOW CLIENTS and SHOW SERVERS; SHOW SOCKETS adds the buffers. */
#define CONN_COLS \
	T("type"), T("user"), T("database"), T("state"), T("addr"), I("port"), T("local_addr"), \
	I("local_port"), T("connect_time"), T("request_time"), I("wait"), I("wait_us"), \
	I("close_needed"), T("ptr"), T("link"), I("remote_pid"), T("tls"), T("application_name"), \
	I("prepared_statements"), I("id")
static const struct admin_col cols_conns[] = { CONN_COLS };
static const struct admin_col cols_sockets[] = {
	CONN_COLS,
	/* the buffers */
	I("recv_pos"), I("pkt_pos"), I("pkt_remain"), I("send_pos"), I("send_remain"), I("pkt_avail"),
	I("send_avail"),
};
static const struct admin_col cols_databases[] = {
	T("name"), T("host"), I("port"), T("database"), T("force_user"), I("pool_size"),
	I("min_pool_size"), I("reserve_pool_size"), I("server_lifetime"), T("pool_mode"),
	T("load_balance_hosts"), I("max_connections"), I("current_connections"),
	I("max_client_connections"), I("current_client_connections"), I("paused"), I("disabled"),
};
static const struct admin_col cols_users[] = {
	T("name"), T("pool_size"), T("reserve_pool_size"), T("pool_mode"), I("max_user_connections"),
	I("current_connections"), I("max_user_client_connections"), I("current_client_connections"),
};
static const struct admin_col cols_peers[] = { I("peer_id"), T("host"), I("port"), I("pool_size") };
static const struct admin_col cols_peer_pools[] = { I("peer_id"), I("cl_active_cancel_req"),
	I("cl_waiting_cancel_req"), I("sv_active_cancel"), I("sv_login") };
static const struct admin_col cols_dns_hosts[] = { T("hostname"), I("ttl"), T("addrs") };
static const struct admin_col cols_dns_zones[] = { T("zonename"), I("serial"), I("count") };
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

const struct admin_cmd admin_show_cmds[] = {
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
	/* pgmux keeps no separate "active" socket list: the same rows as SOCKETS */
	SHOW("ACTIVE_SOCKETS", show_sockets, cols_sockets, "the same as SHOW SOCKETS"),
	SHOW("DATABASES", show_databases, cols_databases, "configured databases and their settings"),
	SHOW("USERS", show_users, cols_users,
	     "known users: their [users] settings, limits, and server and client counts"),
	SHOW("LISTS", show_lists, cols_lists, "counts of internal objects"),
	SHOW("CONFIG", show_config, cols_config, "every general setting: value, default, changeable at run time"),
	SHOW("MEM", show_mem, cols_mem, "memory held per object kind"),
	SHOW("STATE", show_state, cols_state, "whether pgmux is paused or shutting down"),
	SHOW("PEERS", show_none, cols_peers, "PgBouncer's peering: pgmux has none, so no rows"),
	SHOW("PEER_POOLS", show_none, cols_peer_pools, "PgBouncer's peering: pgmux has none, so no rows"),
	SHOW("DNS_HOSTS", show_none, cols_dns_hosts, "PgBouncer's DNS cache: pgmux keeps none, so no rows"),
	SHOW("DNS_ZONES", show_none, cols_dns_zones, "PgBouncer's DNS zones: pgmux keeps none, so no rows"),
	SHOW("BACKENDS", show_backends, cols_backends,
	     "read/write routing: each backend's role, health, lag and routed reads and writes"),
	SHOW("SHARDS", show_shards, cols_shards,
	     "sharding: per shard, its backends, their health and lag, and what was routed to it"),
	SHOW("SATURATION", show_saturation, cols_saturation,
	     "per pool, most saturated first: sv_active / pool_size, peaks, waits, p50/p95/p99 of "
	     "wait, query and transaction time (microseconds), headroom"),
};
const size_t admin_show_ncmds = sizeof(admin_show_cmds) / sizeof(admin_show_cmds[0]);
