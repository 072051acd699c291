/* prom.c: the optional Prometheus endpoint (stats_listen): GET /metrics in the text exposition
 * format, and the status page (statuspage.c) at / and /status.json; served by a small HTTP/1.1
 * responder whose connections are bounded in number, size and time. */
#include "prom.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hist.h"
#include "log.h"
#include "route.h"
#include "statuspage.h"
#include "stats.h"
#include "worker.h"

/* The endpoint has no authentication, so whoever reaches it must not be able to take much:
 * a scrape is one small request answered on a connection that then closes. */
#define PROM_MAX_CONNS 64               /* open at once; more are closed at accept */
#define PROM_REQ_MAX 8192               /* the request line and headers */
#define PROM_READ_TIMEOUT_SEC 5         /* to send the whole request head */
#define PROM_WRITE_TIMEOUT_SEC 10       /* for the reply to make any progress */
#define PROM_LIFETIME_USEC 60000000u    /* a connection's whole life: a trickling reader ends */
#define PROM_LINGER_SEC 2               /* after the reply: what the client still sends is read */
#define PROM_LINGER_MAX 65536           /* ... up to this much, so that close sends no reset */
#define PROM_ACCEPT_BATCH 16            /* accepts per wakeup */
#define PROM_ACCEPT_PAUSE_SEC 1         /* out of descriptors: accepting stops this long */
#define PROM_REFUSED_LOG_USEC 10000000u /* connections over the cap: one log line per 10 s */
/* Scrapes within this long of a render share its body (referenced, not copied): a burst of
 * requests costs one render and one body, however many pools there are, rather than one of
 * each per request (a body is some 8 kB per pool). */
#define PROM_SHARE_USEC 1000000u
#define PROM_NDOCS 3                    /* /metrics, / and /status.json */

enum prom_conn_state { PC_READ, PC_WRITE, PC_LINGER };

/* One HTTP connection; its memory is bounded by PROM_REQ_MAX plus one reply. */
struct prom_conn {
	struct list node;
	struct prom *pr;
	int fd;
	enum prom_conn_state state;
	struct event ev_io;             /* read in PC_READ and PC_LINGER, write in PC_WRITE */
	struct event ev_timer;          /* the deadline of the current state */
	struct evbuffer *out;           /* the reply */
	size_t len;                     /* request bytes in req (PC_READ), or bytes drained */
	uint64_t born;                  /* worker_now() at accept */
	char req[PROM_REQ_MAX];
};

struct prom {
	struct worker *w;
	int lfd;
	struct event ev_listen;
	struct event ev_retry;          /* accepting resumes after an EMFILE pause */
	struct list conns;
	int n_conns;
	uint64_t refused;               /* closed over the cap since the last log line */
	uint64_t refused_logged;        /* worker_now() of that line */
	/* per document (docs[] below): the last render, which replies reference, and when */
	struct evbuffer *body[PROM_NDOCS];
	uint64_t body_at[PROM_NDOCS];
};

/* One endpoint per process, like the console: the figures it serves cover the whole pooler. */
static struct prom *prom_state;

/* ---- label values ---------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	size_t n;
	unsigned char lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;          /* no UTF-16 surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;          /* nothing past U+10FFFF */
	} else
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return n;
}

size_t prom_escape_label(char *dst, size_t dstlen, const char *src)
{
	size_t out = 0;
#define PUT(ch) do { if (out + 1 < dstlen) dst[out] = (char)(ch); out++; } while (0)
	const unsigned char *s = (const unsigned char *)src;
	while (*s) {
		size_t n = utf8_len(s);
		if (n == 0) {
			PUT(0xEF);
			PUT(0xBF);
			PUT(0xBD);
			s++;
		} else if (*s == '\\' || *s == '"') {
			PUT('\\');
			PUT(*s);
			s++;
		} else if (*s == '\n') {
			PUT('\\');
			PUT('n');
			s++;
		} else {
			for (size_t i = 0; i < n; i++)
				PUT(s[i]);
			s += n;
		}
	}
#undef PUT
	if (dstlen)
		dst[out < dstlen ? out : dstlen - 1] = '\0';
	return out;
}

/* ---- the metric families ----------------------------------------------------------------- */

/* Names follow Prometheus's rules, so that `promtool check metrics` passes: base units
 * (seconds, bytes) as the last word of the name, counters end in _total, histograms have
 * buckets, _sum and _count.  The console keeps PgBouncer's names and microseconds; the
 * README lists which console figure each family carries. */

/* A pool's labels and figures, gathered once per scrape. */
struct prom_pool {
	char *labels;               /* database="...",user="..." */
	const struct pool *p;
	struct stats_pool_row row;
	struct stats_saturation sat;
};

static char *escaped(const char *s)
{
	size_t n = prom_escape_label(NULL, 0, s) + 1;
	char *out = malloc(n);
	if (out)
		prom_escape_label(out, n, s);
	return out;
}

static char *pool_labels(const struct pool *p)
{
	char *db = escaped(p->db->name), *user = escaped(p->user->name), *out = NULL;
	if (db && user && asprintf(&out, "database=\"%s\",user=\"%s\"", db, user) < 0)
		out = NULL;
	free(db);
	free(user);
	return out;
}

static void family(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Microseconds as seconds, exactly (no float rounding: 1500000 is "1.500000"). */
static void put_seconds(struct evbuffer *b, uint64_t us)
{
	evbuffer_add_printf(b, "%" PRIu64 ".%06" PRIu64, us / 1000000u, us % 1000000u);
}

/* The SHOW POOLS columns /metrics shows in another form: maxwait and maxwait_us are the two
 * halves of one duration, which Prometheus wants as one figure in seconds. */
static bool pool_figure_is_maxwait(const char *member)
{
	return strcmp(member, "maxwait") == 0 || strcmp(member, "maxwait_us") == 0;
}

/* The SHOW SATURATION columns that SHOW POOLS lacks (the percentiles are further down). */
enum sat_gauge { SG_PEAK_1M, SG_PEAK_SAT_1M, SG_PEAK_PERIOD, SG_HEADROOM, SG_SATURATED_FOR, SG_N };

static const struct {
	const char *name, *help;
} sat_gauges[SG_N] = {
	[SG_PEAK_1M] = { "pgmux_saturation_peak_1m",
			 "Highest sv_active over the last minute (SHOW SATURATION peak_1m)." },
	[SG_PEAK_SAT_1M] = { "pgmux_saturation_peak_saturation_1m",
			     "peak_1m / pool_size (SHOW SATURATION peak_saturation_1m)." },
	[SG_PEAK_PERIOD] = { "pgmux_saturation_peak_period",
			     "Highest sv_active over the current and the previous stats_period "
			     "(SHOW SATURATION peak_period)." },
	[SG_HEADROOM] = { "pgmux_saturation_headroom",
			  "pool_size - peak_1m (SHOW SATURATION headroom)." },
	[SG_SATURATED_FOR] = { "pgmux_saturation_saturated_for_seconds",
			       "How long sv_active / pool_size has stayed at or above saturation_warn; "
			       "0 when below (SHOW SATURATION saturated_for)." },
};

static void sat_gauge_value(struct evbuffer *b, const struct stats_saturation *s, int g)
{
	switch (g) {
	case SG_PEAK_1M:
		evbuffer_add_printf(b, "%d", s->peak_1m);
		break;
	case SG_PEAK_SAT_1M:
		evbuffer_add_printf(b, "%.9g", s->peak_saturation_1m);
		break;
	case SG_PEAK_PERIOD:
		evbuffer_add_printf(b, "%d", s->peak_period);
		break;
	case SG_HEADROOM:
		evbuffer_add_printf(b, "%d", s->headroom);
		break;
	case SG_SATURATED_FOR:
		put_seconds(b, s->saturated_us);
		break;
	}
}

/* The three duration distributions, twice: SHOW SATURATION's windowed percentiles as one
 * gauge per console column (wait_p95_us is pgmux_saturation_wait_p95_seconds: a gauge may not
 * carry a quantile label, and these are no summary, having no cumulative _sum), and the
 * cumulative histograms as Prometheus histograms, from which PromQL forms quantiles over any
 * range. */
static const struct {
	const char *hist, *hist_help, *console, *what;
} durations[STATS_NH] = {
	[STATS_H_WAIT] = { "pgmux_wait_time_seconds",
			   "Client wait for a server, per acquisition (0 when one was free), since start.",
			   "wait", "client wait for a server" },
	[STATS_H_QUERY] = { "pgmux_query_time_seconds", "Query time per request batch, since start.",
			    "query", "query time per request batch" },
	[STATS_H_XACT] = { "pgmux_xact_time_seconds", "Transaction time, since start.",
			   "xact", "transaction time" },
};

/* Histogram bucket edges: powers of two microseconds, 16 µs (2^4) to about 33.6 s (2^25).
 * Each is an edge of pgmux's own buckets (hist.h), so every count is exact; 22 of them keep a
 * pool's three histograms under 80 lines, a size that stays sane with thousands of pools. */
#define PROM_LE_FIRST 4
#define PROM_LE_N 22

static void histogram(struct evbuffer *b, const char *name, const char *labels, const struct hist *h,
		      uint64_t sum_us)
{
	uint64_t edges[PROM_LE_N], below[PROM_LE_N];
	for (int e = 0; e < PROM_LE_N; e++)
		edges[e] = 1ull << (PROM_LE_FIRST + e);
	hist_counts_below(h, edges, PROM_LE_N, below);
	for (int e = 0; e < PROM_LE_N; e++) {
		evbuffer_add_printf(b, "%s_bucket{%s,le=\"", name, labels);
		put_seconds(b, edges[e]);
		evbuffer_add_printf(b, "\"} %" PRIu64 "\n", below[e]);
	}
	evbuffer_add_printf(b, "%s_bucket{%s,le=\"+Inf\"} %" PRIu64 "\n%s_sum{%s} ", name, labels,
			    h->count, name, labels);
	put_seconds(b, sum_us);
	evbuffer_add_printf(b, "\n%s_count{%s} %" PRIu64 "\n", name, labels, h->count);
}

static void pool_durations(struct evbuffer *b, const struct prom_pool *pp, size_t n)
{
	for (int k = 0; k < STATS_NH; k++)
		for (int q = 0; q < STATS_NQ; q++) {
			int pct = (int)(stats_quantiles[q] * 100 + 0.5);
			char name[64], help[192];
			snprintf(name, sizeof(name), "pgmux_saturation_%s_p%d_seconds", durations[k].console, pct);
			snprintf(help, sizeof(help), "SHOW SATURATION %s_p%d_us, in seconds: the %dth percentile "
				 "of %s over the current and the previous stats_period.", durations[k].console,
				 pct, pct, durations[k].what);
			family(b, name, "gauge", help);
			for (size_t j = 0; j < n; j++) {
				evbuffer_add_printf(b, "%s{%s} ", name, pp[j].labels);
				put_seconds(b, pp[j].sat.q[k][q]);
				evbuffer_add(b, "\n", 1);
			}
		}
	for (int k = 0; k < STATS_NH; k++) {
		family(b, durations[k].hist, "histogram", durations[k].hist_help);
		for (size_t j = 0; j < n; j++) {
			const struct pool *p = pp[j].p;
			const struct hist *h = k == STATS_H_WAIT ? &p->h_wait
					       : k == STATS_H_QUERY ? &p->h_query : &p->h_xact;
			uint64_t sum = k == STATS_H_WAIT ? p->wait_time
				       : k == STATS_H_QUERY ? p->query_time : p->xact_time;
			histogram(b, durations[k].hist, pp[j].labels, h, sum);
		}
	}
}

/* ---- backends of [database X] sections (SHOW BACKENDS) ---- */

/* One backend's figures and labels, gathered once per scrape. */
struct prom_backend {
	char *labels;               /* cluster="...",backend="...",shard="..." */
	struct route_backend_row r;
};

enum be_family { BF_UP, BF_PRIMARY, BF_LAG_BYTES, BF_LAG_SECONDS, BF_READS, BF_WRITES, BF_RETRIES, BF_N };

static const struct {
	const char *name, *type, *help;
} be_families[BF_N] = {
	[BF_UP] = { "pgmux_backend_up", "gauge",
		    "1 while the health monitor finds the backend up, 0 while down or not yet "
		    "checked (SHOW BACKENDS state)." },
	[BF_PRIMARY] = { "pgmux_backend_primary", "gauge",
			 "1 for the backend that takes its shard's writes now, else 0 (SHOW BACKENDS role)." },
	[BF_LAG_BYTES] = { "pgmux_backend_lag_bytes", "gauge",
			   "Replication lag behind the shard's primary in WAL bytes; absent while unknown "
			   "(SHOW BACKENDS lag_bytes)." },
	[BF_LAG_SECONDS] = { "pgmux_backend_lag_seconds", "gauge",
			     "Age of the last replayed transaction; 0 when caught up, absent while unknown "
			     "(SHOW BACKENDS lag_ms)." },
	[BF_READS] = { "pgmux_backend_reads_total", "counter",
		       "Transactions routed to the backend as reads (SHOW BACKENDS reads)." },
	[BF_WRITES] = { "pgmux_backend_writes_total", "counter",
			"Transactions routed to the backend as writes (SHOW BACKENDS writes)." },
	[BF_RETRIES] = { "pgmux_backend_retries_total", "counter",
			 "Reads retried elsewhere after this backend failed them (SHOW BACKENDS retries)." },
};

/* Writes one sample of family f for backend pb, or nothing when its value is unknown. */
static void be_sample(struct evbuffer *b, int f, const struct prom_backend *pb)
{
	const struct route_backend_row *r = &pb->r;
	if ((f == BF_LAG_BYTES && r->lag_bytes < 0) || (f == BF_LAG_SECONDS && r->lag_ms < 0))
		return;
	evbuffer_add_printf(b, "%s{%s} ", be_families[f].name, pb->labels);
	switch (f) {
	case BF_UP:
		evbuffer_add_printf(b, "%d", r->state == BE_UP);
		break;
	case BF_PRIMARY:
		evbuffer_add_printf(b, "%d", r->is_primary);
		break;
	case BF_LAG_BYTES:
		evbuffer_add_printf(b, "%" PRId64, r->lag_bytes);
		break;
	case BF_LAG_SECONDS:
		put_seconds(b, (uint64_t)r->lag_ms * 1000u);
		break;
	case BF_READS:
		evbuffer_add_printf(b, "%" PRIu64, r->reads);
		break;
	case BF_WRITES:
		evbuffer_add_printf(b, "%" PRIu64, r->writes);
		break;
	case BF_RETRIES:
		evbuffer_add_printf(b, "%" PRIu64, r->retries);
		break;
	}
	evbuffer_add(b, "\n", 1);
}

static char *backend_labels(const struct route_backend_row *r)
{
	char *cl = escaped(r->cluster), *name = escaped(r->name), *out = NULL;
	if (cl && name && asprintf(&out, "cluster=\"%s\",backend=\"%s\",shard=\"%d\"", cl, name,
				   r->shard) < 0)
		out = NULL;
	free(cl);
	free(name);
	return out;
}

/* Every backend of every [database X] section; false when out of memory. */
static bool backends(struct worker *w, struct evbuffer *b)
{
	size_t n = 0, cap = 0;
	struct prom_backend *pb = NULL;
	bool ok = true;
	struct list *it;
	for (it = w->databases.next; ok && it != &w->databases; it = it->next) {
		const struct database *db = list_entry(it, struct database, node);
		struct route_backend_row r;
		for (int i = 0; ok && route_backend_row(db, i, &r); i++) {
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 8;
				struct prom_backend *np = realloc(pb, nc * sizeof(*pb));
				if (!np) {
					ok = false;
					break;
				}
				pb = np;
				cap = nc;
			}
			pb[n].r = r;
			if (!(pb[n].labels = backend_labels(&r)))
				ok = false;
			n++;
		}
	}
	/* a pooler without [database X] sections says nothing about backends */
	for (int f = 0; ok && n && f < BF_N; f++) {
		family(b, be_families[f].name, be_families[f].type, be_families[f].help);
		for (size_t j = 0; j < n; j++)
			be_sample(b, f, &pb[j]);
	}
	for (size_t j = 0; j < n; j++)
		free(pb[j].labels);
	free(pb);
	return ok;
}

/* SHOW STATS totals, per database, in base units; false when out of memory. */
static bool db_totals(struct worker *w, struct evbuffer *b)
{
	size_t ndb = 0, d = 0;
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->databases)
		ndb++;
	struct { char *label; struct stats tot; } *dbs = ndb ? calloc(ndb, sizeof(*dbs)) : NULL;
	if (ndb && !dbs)
		return false;
	bool ok = true;
	list_for_each_safe(it, tmp, &w->databases) {
		if (d >= ndb)
			break;
		struct database *db = list_entry(it, struct database, node);
		if (!(dbs[d].label = escaped(db->name))) {
			ok = false;
			break;
		}
		stats_total(w, db, &dbs[d].tot);
		d++;
	}
	static const char *const unit_note[] = {
		[STATS_U_COUNT] = "", [STATS_U_BYTES] = "", [STATS_U_USEC] = ", in seconds",
	};
	for (int f = 0; ok && f < STATS_N; f++) {
		char name[96], help[160];
		snprintf(name, sizeof(name), "pgmux_stats_%s_total", stats_fields[f].prom_name);
		snprintf(help, sizeof(help), "SHOW STATS %s%s.", stats_fields[f].total_name,
			 unit_note[stats_fields[f].unit]);
		family(b, name, "counter", help);
		for (size_t j = 0; j < d; j++) {
			evbuffer_add_printf(b, "%s{database=\"%s\"} ", name, dbs[j].label);
			if (stats_fields[f].unit == STATS_U_USEC)
				put_seconds(b, dbs[j].tot.v[f]);
			else
				evbuffer_add_printf(b, "%" PRIu64, dbs[j].tot.v[f]);
			evbuffer_add(b, "\n", 1);
		}
	}
	for (size_t j = 0; j < d; j++)
		free(dbs[j].label);
	free(dbs);
	return ok;
}

/* The whole exposition; false when out of memory. */
static bool render(struct worker *w, struct evbuffer *b)
{
	size_t n = 0, i = 0;
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->pools)
		n++;
	struct prom_pool *pp = n ? calloc(n, sizeof(*pp)) : NULL;
	if (n && !pp)
		return false;
	bool ok = true;
	uint64_t now = worker_now();
	list_for_each_safe(it, tmp, &w->pools) {
		if (i >= n)
			break;
		struct pool *p = list_entry(it, struct pool, node);
		pp[i].p = p;
		if (!(pp[i].labels = pool_labels(p)))
			ok = false;
		stats_pool_row(p, now, &pp[i].row);
		stats_saturation_of(w, p, &pp[i].sat);
		i++;
	}
	if (!ok)
		goto out;

	family(b, "pgmux_info", "gauge", "pgmux's version, as a label; always 1.");
	evbuffer_add_printf(b, "pgmux_info{version=\"%s\"} 1\n", PACKAGE_VERSION);

	/* SHOW POOLS */
#define POOL_FAMILY(member, help_text) \
	if (!pool_figure_is_maxwait(#member)) { \
		family(b, "pgmux_pools_" #member, "gauge", "SHOW POOLS " #member ": " help_text "."); \
		for (size_t j = 0; j < i; j++) \
			evbuffer_add_printf(b, "pgmux_pools_" #member "{%s} %" PRId64 "\n", pp[j].labels, \
					    pp[j].row.member); \
	}
	POOL_FIGURES(POOL_FAMILY)
#undef POOL_FAMILY
	family(b, "pgmux_pools_maxwait_seconds", "gauge",
	       "SHOW POOLS maxwait + maxwait_us: how long the oldest waiting client has waited.");
	for (size_t j = 0; j < i; j++) {
		evbuffer_add_printf(b, "pgmux_pools_maxwait_seconds{%s} ", pp[j].labels);
		put_seconds(b, pp[j].row.maxwait_total_us);
		evbuffer_add(b, "\n", 1);
	}
	family(b, "pgmux_pools_pool_size", "gauge", "SHOW POOLS pool_size: the pool's server limit.");
	for (size_t j = 0; j < i; j++)
		evbuffer_add_printf(b, "pgmux_pools_pool_size{%s} %" PRId64 "\n", pp[j].labels,
				    pp[j].row.pool_size);
	family(b, "pgmux_pools_saturation", "gauge", "SHOW POOLS saturation: sv_active / pool_size.");
	for (size_t j = 0; j < i; j++)
		evbuffer_add_printf(b, "pgmux_pools_saturation{%s} %.9g\n", pp[j].labels,
				    pp[j].row.saturation);

	/* SHOW SATURATION */
	for (int g = 0; g < SG_N; g++) {
		family(b, sat_gauges[g].name, "gauge", sat_gauges[g].help);
		for (size_t j = 0; j < i; j++) {
			evbuffer_add_printf(b, "%s{%s} ", sat_gauges[g].name, pp[j].labels);
			sat_gauge_value(b, &pp[j].sat, g);
			evbuffer_add(b, "\n", 1);
		}
	}
	pool_durations(b, pp, i);

	ok = db_totals(w, b) && backends(w, b);
out:
	for (size_t j = 0; j < i; j++)
		free(pp[j].labels);
	free(pp);
	return ok;
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

static void conn_io(evutil_socket_t fd, short what, void *arg);

/* The one teardown path of a connection. */
static void conn_close(struct prom_conn *pc)
{
	event_del(&pc->ev_io);
	event_del(&pc->ev_timer);
	close(pc->fd);
	if (pc->out)
		evbuffer_free(pc->out);
	list_del(&pc->node);
	pc->pr->n_conns--;
	free(pc);
}

static void conn_timeout(evutil_socket_t fd, short what, void *arg)
{
	conn_close(arg);
}

/* Arms the deadline: timeout_sec from now, but never past the connection's lifetime. */
static void conn_deadline(struct prom_conn *pc, int timeout_sec)
{
	uint64_t now = worker_now(), end = pc->born + PROM_LIFETIME_USEC;
	uint64_t us = (uint64_t)timeout_sec * 1000000u;
	if (now + us > end)
		us = end > now ? end - now : 0;
	struct timeval tv = { (time_t)(us / 1000000u), (suseconds_t)(us % 1000000u) };
	evtimer_add(&pc->ev_timer, &tv);
}

/* Enters a state: the I/O event it waits for and its deadline. */
static void conn_state(struct prom_conn *pc, enum prom_conn_state st, int timeout_sec)
{
	/* a new connection's event was never assigned: deleting it makes libevent warn */
	if (event_initialized(&pc->ev_io))
		event_del(&pc->ev_io);
	pc->state = st;
	event_assign(&pc->ev_io, pc->pr->w->base, pc->fd, (st == PC_WRITE ? EV_WRITE : EV_READ) | EV_PERSIST,
		     conn_io, pc);
	event_add(&pc->ev_io, NULL);
	conn_deadline(pc, timeout_sec);
}

/* Sends what it can of the reply; once it is all out, the write side closes and what the
 * client still sends is read for a moment, so that the close cannot reset the reply away. */
static void conn_write(struct prom_conn *pc)
{
	while (evbuffer_get_length(pc->out)) {
		int n = evbuffer_write(pc->out, pc->fd);
		if (n > 0) {
			conn_deadline(pc, PROM_WRITE_TIMEOUT_SEC);   /* progress: slow is not dead */
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		conn_close(pc);
		return;
	}
	shutdown(pc->fd, SHUT_WR);
	pc->len = 0;
	conn_state(pc, PC_LINGER, PROM_LINGER_SEC);
}

/* Queues a complete reply (status line, headers, body unless head_only) and starts sending.
 * The body is moved into the reply, or referenced when shared (it must then stay unchanged). */
static void reply(struct prom_conn *pc, int code, const char *reason, const char *extra_headers,
		  const char *ctype, struct evbuffer *body, bool head_only, bool shared)
{
	evbuffer_add_printf(pc->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			    "Connection: close\r\n%s\r\n", code, reason, ctype,
			    evbuffer_get_length(body), extra_headers ? extra_headers : "");
	if (!head_only && shared)
		evbuffer_add_buffer_reference(pc->out, body);
	else if (!head_only)
		evbuffer_add_buffer(pc->out, body);
	conn_state(pc, PC_WRITE, PROM_WRITE_TIMEOUT_SEC);
	conn_write(pc);
}

static void reply_error(struct prom_conn *pc, int code, const char *reason, const char *detail,
			const char *extra_headers, bool head_only)
{
	struct evbuffer *b = evbuffer_new();
	if (!b) {
		conn_close(pc);
		return;
	}
	evbuffer_add_printf(b, "%d %s%s%s\n", code, reason, detail ? ": " : "", detail ? detail : "");
	reply(pc, code, reason, extra_headers, "text/plain; charset=utf-8", b, head_only, false);
	evbuffer_free(b);
}

/* The path of a request target: origin form ("/metrics?x=1") or absolute form
 * ("http://host:port/metrics"), without query or fragment.  Sets *len. */
static const char *target_path(const char *t, size_t tlen, size_t *len)
{
	const char *end = t + tlen;
	const char *scheme = memchr(t, ':', tlen);
	if (t < end && *t != '/' && scheme && end - scheme >= 3 && scheme[1] == '/' && scheme[2] == '/') {
		const char *slash = memchr(scheme + 3, '/', (size_t)(end - scheme - 3));
		t = slash ? slash : end;
	}
	size_t n = 0;
	while (t + n < end && t[n] != '?' && t[n] != '#')
		n++;
	*len = n;
	return t;
}

static bool token_is(const char *t, size_t n, const char *word)
{
	return n == strlen(word) && memcmp(t, word, n) == 0;
}


/* The documents served: the metrics, and the status page as HTML and as JSON. */
static const struct {
	const char *path, *type;
	bool (*render)(struct worker *w, struct evbuffer *b);
} docs[PROM_NDOCS] = {
	{ "/metrics", "text/plain; version=0.0.4; charset=utf-8", render },
	{ "/", "text/html; charset=utf-8", statuspage_html },
	{ "/status.json", "application/json", statuspage_json },
};

/* Document d as of now: its last render when that is recent enough, else a new one (the one it
 * replaces lives on in the replies that reference it), so that a burst of requests costs one
 * render however many pools there are.  NULL when out of memory. */
static struct evbuffer *shared_body(struct prom *pr, size_t d)
{
	uint64_t now = worker_now();
	if (pr->body[d] && now - pr->body_at[d] < PROM_SHARE_USEC)
		return pr->body[d];
	struct evbuffer *b = evbuffer_new();
	if (!b || !docs[d].render(pr->w, b)) {
		if (b)
			evbuffer_free(b);
		return NULL;
	}
	if (pr->body[d])
		evbuffer_free(pr->body[d]);
	pr->body[d] = b;
	pr->body_at[d] = now;
	return b;
}

/* The request head is complete in pc->req[0, head_len): answer it. */
static void handle_request(struct prom_conn *pc, size_t head_len)
{
	const char *line = pc->req;
	const char *eol = memchr(line, '\n', head_len);
	size_t n = (size_t)(eol - line);
	if (n && line[n - 1] == '\r')
		n--;
	/* METHOD SP target SP HTTP/1.x */
	const char *sp1 = memchr(line, ' ', n);
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line + n - sp1 - 1)) : NULL;
	bool ok = sp1 && sp2 && sp1 > line && sp2 > sp1 + 1;
	size_t mlen = ok ? (size_t)(sp1 - line) : 0;
	for (size_t i = 0; ok && i < mlen; i++)
		ok = line[i] >= 'A' && line[i] <= 'Z';
	if (ok) {
		size_t vlen = (size_t)(line + n - sp2 - 1);
		ok = vlen == 8 && memcmp(sp2 + 1, "HTTP/1.", 7) == 0 && sp2[8] >= '0' && sp2[8] <= '9';
	}
	if (!ok) {
		reply_error(pc, 400, "Bad Request", NULL, NULL, false);
		return;
	}
	bool head = token_is(line, mlen, "HEAD");
	size_t plen;
	const char *path = target_path(sp1 + 1, (size_t)(sp2 - sp1 - 1), &plen);
	size_t d = 0;
	while (d < sizeof(docs) / sizeof(docs[0]) && !token_is(path, plen, docs[d].path))
		d++;
	if (d == sizeof(docs) / sizeof(docs[0])) {
		reply_error(pc, 404, "Not Found", "pgmux serves /metrics, / and /status.json", NULL,
			    head);
		return;
	}
	if (!head && !token_is(line, mlen, "GET")) {
		reply_error(pc, 405, "Method Not Allowed", NULL, "Allow: GET, HEAD\r\n", false);
		return;
	}
	struct evbuffer *b = shared_body(pc->pr, d);
	if (!b) {
		reply_error(pc, 500, "Internal Server Error", "out of memory", NULL, head);
		return;
	}
	reply(pc, 200, "OK", NULL, docs[d].type, b, head, true);
}

/* Where the request head ends (after its blank line) in req[0, len), or 0 while incomplete. */
static size_t head_end(const char *req, size_t len, size_t from)
{
	for (size_t i = from > 3 ? from - 3 : 0; i < len; i++) {
		if (req[i] != '\n')
			continue;
		if (i + 1 < len && req[i + 1] == '\n')
			return i + 2;
		if (i + 2 < len && req[i + 1] == '\r' && req[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

static void conn_io(evutil_socket_t fd, short what, void *arg)
{
	struct prom_conn *pc = arg;
	pc->pr->w->now = worker_now();
	if (pc->state == PC_WRITE) {
		conn_write(pc);
		return;
	}
	char junk[4096];
	char *dst = pc->state == PC_READ ? pc->req + pc->len : junk;
	size_t room = pc->state == PC_READ ? sizeof(pc->req) - pc->len : sizeof(junk);
	ssize_t n = recv(fd, dst, room, 0);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(pc);
		return;
	}
	size_t before = pc->len;
	pc->len += (size_t)n;
	if (pc->state == PC_LINGER) {
		if (pc->len > PROM_LINGER_MAX)
			conn_close(pc);
		return;
	}
	size_t end = head_end(pc->req, pc->len, before);
	if (end)
		handle_request(pc, end);
	else if (pc->len == sizeof(pc->req))
		reply_error(pc, 431, "Request Header Fields Too Large", "the limit is 8192 bytes", NULL, false);
}

static void conn_new(struct prom *pr, int fd)
{
	struct prom_conn *pc = calloc(1, sizeof(*pc));
	if (!pc || !(pc->out = evbuffer_new())) {
		free(pc);
		close(fd);
		return;
	}
	pc->pr = pr;
	pc->fd = fd;
	pc->born = worker_now();
	list_append(&pr->conns, &pc->node);
	pr->n_conns++;
	evtimer_assign(&pc->ev_timer, pr->w->base, conn_timeout, pc);
	conn_state(pc, PC_READ, PROM_READ_TIMEOUT_SEC);
}

static void accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct prom *pr = arg;
	event_add(&pr->ev_listen, NULL);
}

static void note_refused(struct prom *pr, uint64_t now)
{
	pr->refused++;
	if (pr->refused_logged && now - pr->refused_logged < PROM_REFUSED_LOG_USEC)
		return;
	log_warn("stats_listen: %" PRIu64 " connection(s) closed at accept: %d are open, the limit",
		 pr->refused, PROM_MAX_CONNS);
	pr->refused = 0;
	pr->refused_logged = now;
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct prom *pr = arg;
	uint64_t now = pr->w->now = worker_now();
	for (int i = 0; i < PROM_ACCEPT_BATCH; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			int err = errno;
			if (err == EAGAIN || err == EWOULDBLOCK)
				return;
			if (worker_accept_transient(err))
				continue;
			/* The pending connection keeps the listener readable: polling it again at
			 * once would spin, so it rests a second, with one log line per rest. */
			log_warn("stats_listen: accept failed: %s; not accepting for %d s", strerror(err),
				 PROM_ACCEPT_PAUSE_SEC);
			event_del(&pr->ev_listen);
			struct timeval tv = { PROM_ACCEPT_PAUSE_SEC, 0 };
			evtimer_add(&pr->ev_retry, &tv);
			return;
		}
		if (pr->n_conns >= PROM_MAX_CONNS) {
			close(fd);
			note_refused(pr, now);
			continue;
		}
		conn_new(pr, fd);
	}
}

/* A listening socket on the first address of host:port that binds; -1 with *err set. */
static int listen_on(const char *host, int port, int backlog, int *err, const char **gai)
{
	struct addrinfo hints = { 0 }, *res, *ai;
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	*err = 0;
	*gai = NULL;
	int rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0) {
		*gai = gai_strerror(rc);
		return -1;
	}
	int fd = -1;
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			*err = errno;
			continue;
		}
		int on = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
			*err = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	return fd;
}

int prom_start(struct worker *w)
{
	const char *listen = w->cf->stats_listen;
	if (prom_state || !listen || !*listen)
		return 0;
	char host[256], why[256];
	int port;
	if (!config_parse_hostport(listen, host, sizeof(host), &port, why, sizeof(why))) {
		log_error("stats_listen = %s: %s", listen, why);
		return -1;
	}
	int err;
	const char *gai;
	int fd = listen_on(host, port, (int)w->cf->listen_backlog, &err, &gai);
	if (fd < 0) {
		log_error("stats_listen = %s: cannot listen there: %s", listen,
			  gai ? gai : err ? strerror(err) : "cannot resolve or bind the address");
		return -1;
	}
	struct prom *pr = calloc(1, sizeof(*pr));
	if (!pr) {
		close(fd);
		log_error("stats_listen: out of memory");
		return -1;
	}
	pr->w = w;
	pr->lfd = fd;
	list_init(&pr->conns);
	event_assign(&pr->ev_listen, w->base, fd, EV_READ | EV_PERSIST, on_accept, pr);
	evtimer_assign(&pr->ev_retry, w->base, accept_resume, pr);
	event_add(&pr->ev_listen, NULL);
	prom_state = pr;
	log_info("serving Prometheus metrics on http://%s/metrics", listen);
	return 0;
}

void prom_stop(struct worker *w)
{
	struct prom *pr = prom_state;
	if (!pr || pr->w != w)
		return;
	while (!list_empty(&pr->conns))
		conn_close(list_entry(pr->conns.next, struct prom_conn, node));
	event_del(&pr->ev_listen);
	event_del(&pr->ev_retry);
	close(pr->lfd);
	for (size_t d = 0; d < PROM_NDOCS; d++)
		if (pr->body[d])
			evbuffer_free(pr->body[d]);
	free(pr);
	prom_state = NULL;
}
