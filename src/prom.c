/* prom.c: the optional Prometheus endpoint (stats_listen): GET /metrics in the text exposition format, over evhttp. */
#include "prom.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <errno.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool.h"
#include "stats.h"

/* A scrape is one small request: anything bigger, or slower, is dropped by evhttp. */
#define PROM_TIMEOUT_SEC 10
#define PROM_MAX_HEADERS 8192
#define PROM_MAX_BODY 4096

struct prom {
	struct worker *w;
	struct evhttp *http;
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

/* A pool's labels and figures, gathered once per scrape. */
struct prom_pool {
	char *labels;               /* database="...",user="..." */
	const struct pool *p;
	struct stats_pool_row row;
	struct stats_saturation sat;
};

static char *pool_labels(const struct pool *p)
{
	size_t dn = prom_escape_label(NULL, 0, p->db->name) + 1;
	size_t un = prom_escape_label(NULL, 0, p->user->name) + 1;
	char *db = malloc(dn), *user = malloc(un), *out = NULL;
	if (db && user) {
		prom_escape_label(db, dn, p->db->name);
		prom_escape_label(user, un, p->user->name);
		if (asprintf(&out, "database=\"%s\",user=\"%s\"", db, user) < 0)
			out = NULL;
	}
	free(db);
	free(user);
	return out;
}

static void family(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The SHOW SATURATION columns that SHOW POOLS lacks (the percentiles are the summaries below). */
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
		evbuffer_add_printf(b, "%" PRIu64, s->saturated_us / 1000000u);
		break;
	}
}

static const struct {
	const char *name, *help;
} summaries[STATS_NH] = {
	[STATS_H_WAIT] = { "pgmux_wait_time_microseconds",
			   "Client wait for a server, per acquisition (0 when one was free); quantiles over "
			   "the current and the previous stats_period, _sum and _count since start." },
	[STATS_H_QUERY] = { "pgmux_query_time_microseconds",
			    "Query time per request batch; quantiles over the current and the previous "
			    "stats_period, _sum and _count since start." },
	[STATS_H_XACT] = { "pgmux_xact_time_microseconds",
			   "Transaction time; quantiles over the current and the previous stats_period, "
			   "_sum and _count since start." },
};

static void summary_sum_count(const struct pool *p, int k, uint64_t *sum, uint64_t *count)
{
	switch (k) {
	case STATS_H_WAIT:
		*sum = p->wait_time;
		*count = p->h_wait.count;
		break;
	case STATS_H_QUERY:
		*sum = p->query_time;
		*count = p->h_query.count;
		break;
	default:
		*sum = p->xact_time;
		*count = p->h_xact.count;
		break;
	}
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
	uint64_t now = pgmux_now();
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
	family(b, "pgmux_pools_" #member, "gauge", "SHOW POOLS " #member ": " help_text "."); \
	for (size_t j = 0; j < i; j++) \
		evbuffer_add_printf(b, "pgmux_pools_" #member "{%s} %" PRId64 "\n", pp[j].labels, \
				    pp[j].row.member);
	POOL_FIGURES(POOL_FAMILY)
#undef POOL_FAMILY
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
	for (int k = 0; k < STATS_NH; k++) {
		const char *name = summaries[k].name;
		family(b, name, "summary", summaries[k].help);
		for (size_t j = 0; j < i; j++) {
			for (int q = 0; q < STATS_NQ; q++)
				evbuffer_add_printf(b, "%s{%s,quantile=\"%g\"} %" PRIu64 "\n", name,
						    pp[j].labels, stats_quantiles[q], pp[j].sat.q[k][q]);
			uint64_t sum, count;
			summary_sum_count(pp[j].p, k, &sum, &count);
			evbuffer_add_printf(b, "%s_sum{%s} %" PRIu64 "\n%s_count{%s} %" PRIu64 "\n",
					    name, pp[j].labels, sum, name, pp[j].labels, count);
		}
	}

	/* SHOW STATS totals, per database */
	size_t ndb = 0, d = 0;
	list_for_each_safe(it, tmp, &w->databases)
		ndb++;
	struct { char *label; struct stats tot; } *dbs = ndb ? calloc(ndb, sizeof(*dbs)) : NULL;
	if (ndb && !dbs) {
		ok = false;
		goto out;
	}
	list_for_each_safe(it, tmp, &w->databases) {
		if (d >= ndb)
			break;
		struct database *db = list_entry(it, struct database, node);
		size_t len = prom_escape_label(NULL, 0, db->name) + 1;
		if (!(dbs[d].label = malloc(len))) {
			ok = false;
			break;
		}
		prom_escape_label(dbs[d].label, len, db->name);
		stats_total(w, db, &dbs[d].tot);
		d++;
	}
	if (ok)
		for (int f = 0; f < STATS_N; f++) {
			char name[96], help[160];
			snprintf(name, sizeof(name), "pgmux_stats_%s_total", stats_fields[f].name);
			snprintf(help, sizeof(help), "SHOW STATS %s%s.", stats_fields[f].total_name,
				 strstr(stats_fields[f].name, "_time") ? " (microseconds)" : "");
			family(b, name, "counter", help);
			for (size_t j = 0; j < d; j++)
				evbuffer_add_printf(b, "%s{database=\"%s\"} %" PRIu64 "\n", name,
						    dbs[j].label, dbs[j].tot.v[f]);
		}
	for (size_t j = 0; j < d; j++)
		free(dbs[j].label);
	free(dbs);
out:
	for (size_t j = 0; j < i; j++)
		free(pp[j].labels);
	free(pp);
	return ok;
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

static void on_request(struct evhttp_request *req, void *arg)
{
	struct prom *pr = arg;
	struct worker *w = pr->w;
	w->now = pgmux_now();
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (!path || strcmp(path, "/metrics") != 0) {
		evhttp_send_error(req, HTTP_NOTFOUND, "Not Found: pgmux serves /metrics only");
		return;
	}
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		evhttp_send_error(req, 405, "Method Not Allowed");
		return;
	}
	struct evbuffer *b = evbuffer_new();
	if (!b || !render(w, b)) {
		if (b)
			evbuffer_free(b);
		evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; version=0.0.4; charset=utf-8");
	/* evhttp queues the reply in the connection's buffer: a slow reader never blocks the loop,
	 * and the connection timeout drops one that stops reading. */
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
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
	struct prom *pr = calloc(1, sizeof(*pr));
	if (!pr || !(pr->http = evhttp_new(w->base))) {
		free(pr);
		log_error("stats_listen: out of memory");
		return -1;
	}
	pr->w = w;
	evhttp_set_timeout(pr->http, PROM_TIMEOUT_SEC);
	evhttp_set_max_headers_size(pr->http, PROM_MAX_HEADERS);
	evhttp_set_max_body_size(pr->http, PROM_MAX_BODY);
	/* every method reaches on_request, which answers 405 to all but GET and HEAD */
	evhttp_set_allowed_methods(pr->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
				   EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
				   EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(pr->http, on_request, pr);
	if (!evhttp_bind_socket_with_handle(pr->http, host, (ev_uint16_t)port)) {
		int err = errno;
		log_error("stats_listen = %s: cannot listen there: %s", listen,
			  err ? strerror(err) : "cannot resolve or bind the address");
		evhttp_free(pr->http);
		free(pr);
		return -1;
	}
	prom_state = pr;
	log_info("serving Prometheus metrics on http://%s/metrics", listen);
	return 0;
}

void prom_stop(struct worker *w)
{
	struct prom *pr = prom_state;
	if (!pr || pr->w != w)
		return;
	evhttp_free(pr->http);
	free(pr);
	prom_state = NULL;
}
