/* statuspage.c: the live status page on stats_listen, in the spirit of HAProxy's stats page:
 * GET / (HTML with inline CSS and SVG, no script) and GET /status.json, built from the same
 * figures as SHOW POOLS, SHOW SATURATION, SHOW BACKENDS and SHOW SHARDS. */
#include "statuspage.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "pool_info.h"
#include "prom.h"
#include "route.h"
#include "route_types.h"
#include "stats.h"
#include "worker.h"

/* Longest name shown: database and user names are at most 63 bytes in PostgreSQL; longer ones
 * (an auto-database from a hostile startup packet) are cut, never allowed to grow the page. */
#define NAME_MAX_SHOWN 128
#define ESC_MAX (NAME_MAX_SHOWN * 6 + 16)

/* Seconds per point of the HTML chart (the JSON has every second). */
#define CHART_STEP 5

/* A string literal into an evbuffer, its length counted by the compiler. */
#define ADD_LIT(b, lit) evbuffer_add((b), (lit), sizeof(lit) - 1)

size_t statuspage_html_escape(char *dst, size_t dstlen, const char *src)
{
	size_t n = 0;
	for (const char *s = src; *s; s++) {
		const char *rep = NULL;
		switch (*s) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '"': rep = "&quot;"; break;
		case '\'': rep = "&#39;"; break;
		default: break;
		}
		char one[2] = { *s, 0 };
		for (const char *r = rep ? rep : one; *r; r++, n++)
			if (n + 1 < dstlen)
				dst[n] = *r;
	}
	if (dstlen)
		dst[n < dstlen ? n : dstlen - 1] = 0;
	return n;
}

size_t statuspage_json_escape(char *dst, size_t dstlen, const char *src)
{
	/* prom_escape_label already escapes backslash, quote and newline the way JSON does, and
	 * replaces invalid UTF-8; what remains is the other control characters. */
	size_t need = prom_escape_label(NULL, 0, src) + 1;
	char *tmp = malloc(need);
	if (!tmp) {
		if (dstlen)
			dst[0] = 0;
		return 0;
	}
	prom_escape_label(tmp, need, src);
	size_t n = 0;
	for (const unsigned char *s = (const unsigned char *)tmp; *s; s++) {
		char rep[8];
		if (*s < 0x20)
			snprintf(rep, sizeof(rep), "\\u%04x", *s);
		else
			rep[0] = (char)*s, rep[1] = 0;
		for (const char *r = rep; *r; r++, n++)
			if (n + 1 < dstlen)
				dst[n] = *r;
	}
	free(tmp);
	if (dstlen)
		dst[n < dstlen ? n : dstlen - 1] = 0;
	return n;
}

/* A name cut to NAME_MAX_SHOWN bytes (at a UTF-8 character boundary) and escaped. */
static const char *esc(char *buf, const char *name, bool json)
{
	char cut[NAME_MAX_SHOWN + 1];
	size_t len = strlen(name);
	if (len > NAME_MAX_SHOWN) {
		len = NAME_MAX_SHOWN;
		while (len > 0 && ((unsigned char)name[len] & 0xC0) == 0x80)
			len--;
	}
	memcpy(cut, name, len);
	cut[len] = 0;
	if (json)
		statuspage_json_escape(buf, ESC_MAX, cut);
	else
		statuspage_html_escape(buf, ESC_MAX, cut);
	return buf;
}

/* One pool's figures, gathered once for both renderings. */
struct pool_view {
	const struct pool *p;
	struct stats_pool_row row;
	struct stats_saturation sat;
};

static int by_saturation(const void *a, const void *b)
{
	const struct pool_view *x = a, *y = b;
	if (x->sat.saturation != y->sat.saturation)
		return x->sat.saturation < y->sat.saturation ? 1 : -1;
	if (x->row.cl_waiting != y->row.cl_waiting)
		return x->row.cl_waiting < y->row.cl_waiting ? 1 : -1;
	return x->p->id < y->p->id ? -1 : x->p->id > y->p->id;
}

/* Every pool's figures, most saturated first; NULL when out of memory (or no pool: *n = 0). */
static struct pool_view *gather(struct worker *w, size_t *n)
{
	size_t cap = 0;
	struct list *it;
	for (it = w->pools.next; it != &w->pools; it = it->next)
		cap++;
	*n = 0;
	if (!cap)
		return NULL;
	struct pool_view *v = calloc(cap, sizeof(*v));
	if (!v)
		return NULL;
	uint64_t now = worker_now();
	for (it = w->pools.next; it != &w->pools && *n < cap; it = it->next) {
		struct pool_view *pv = &v[(*n)++];
		pv->p = list_entry(it, struct pool, node);
		stats_pool_row(pv->p, now, &pv->row);
		stats_saturation_of(w, pv->p, &pv->sat);
	}
	qsort(v, *n, sizeof(*v), by_saturation);
	return v;
}

static double sec(uint64_t us)
{
	return (double)us / 1e6;
}

/* ---- HTML ------------------------------------------------------------------------------------ */

static const char css[] =
	"body{font:13px/1.4 system-ui,sans-serif;margin:1em;color:#222}"
	"h1{font-size:18px;margin:0 0 .3em}h2{font-size:15px;margin:1.2em 0 .3em}"
	"table{border-collapse:collapse}th,td{padding:2px 6px;border-bottom:1px solid #ddd;"
	"text-align:right;white-space:nowrap}th{background:#eee}td.l,th.l{text-align:left}"
	".bar{position:relative;width:160px;height:12px;background:#e8e8e8}"
	".fill{position:absolute;left:0;top:0;bottom:0;background:#4a4}"
	".warn .fill{background:#e90}.full .fill{background:#d33}"
	".mark{position:absolute;top:-2px;bottom:-2px;width:2px;background:#000}"
	".up{color:#070}.down{color:#c00;font-weight:bold}.unknown{color:#888}"
	"small{color:#666}";

static void html_bar(struct evbuffer *b, double sat, double warn)
{
	double pct = sat * 100;
	const char *cls = sat >= 1.0 ? "full" : (warn > 0 && sat >= warn ? "warn" : "ok");
	evbuffer_add_printf(b, "<div class=\"bar %s\" title=\"%.0f%%\"><div class=\"fill\" "
			    "style=\"width:%.0f%%\"></div>", cls, pct, pct > 100 ? 100 : pct);
	if (warn > 0 && warn <= 1)
		evbuffer_add_printf(b, "<div class=\"mark\" style=\"left:%.0f%%\"></div>", warn * 100);
	ADD_LIT(b, "</div>");
}

/* The last 15 minutes as a line over a 0..100% frame, the warning level dashed. */
static void html_chart(struct evbuffer *b, struct worker *w, const struct pool *p, double warn)
{
	uint8_t h[STATS_HISTORY];
	size_t n = stats_saturation_history(w, p, h, STATS_HISTORY);
	evbuffer_add_printf(b, "<svg width=\"180\" height=\"30\" viewBox=\"0 0 %d 100\" "
			    "preserveAspectRatio=\"none\"><rect width=\"%d\" height=\"100\" "
			    "fill=\"#f4f4f4\"/>", STATS_HISTORY, STATS_HISTORY);
	if (warn > 0 && warn <= 1)
		evbuffer_add_printf(b, "<line x1=\"0\" x2=\"%d\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"#e90\" "
				    "stroke-dasharray=\"20,15\" vector-effect=\"non-scaling-stroke\"/>",
				    STATS_HISTORY, 100 - warn * 100, 100 - warn * 100);
	if (n) {
		ADD_LIT(b, "<polyline fill=\"none\" stroke=\"#36c\" "
			   "vector-effect=\"non-scaling-stroke\" points=\"");
		/* one point per CHART_STEP seconds, the peak of those seconds, so that a page of
		 * many pools stays small; the newest second is at the right edge */
		size_t x0 = STATS_HISTORY - n;
		for (size_t i = 0; i < n; i += CHART_STEP) {
			int peak = 0;
			for (size_t j = i; j < i + CHART_STEP && j < n; j++)
				if (h[j] > peak)
					peak = h[j];
			evbuffer_add_printf(b, "%zu,%d ", x0 + i, 100 - (peak > 100 ? 100 : peak));
		}
		ADD_LIT(b, "\"/>");
	}
	ADD_LIT(b, "</svg>");
}

static void html_pools(struct evbuffer *b, struct worker *w, struct pool_view *v, size_t n)
{
	double warn = w->cf->saturation_warn;
	char e1[ESC_MAX], e2[ESC_MAX];
	evbuffer_add_printf(b, "<h2>Pools</h2><table><tr><th class=\"l\">database</th>"
			    "<th class=\"l\">user</th><th class=\"l\">mode</th><th>saturation "
			    "<small>(mark: saturation_warn %.0f%%)</small></th><th>active/size</th>"
			    "<th>peak 1m</th><th>clients active</th><th>waiting</th>"
			    "<th>oldest wait</th><th>wait p50/p95/p99 (ms)</th>"
			    "<th>servers idle/used/tested/login</th><th>last 15 min</th>"
			    "<th>saturated for</th></tr>", warn * 100);
	size_t shown = n < STATUSPAGE_MAX_POOLS ? n : STATUSPAGE_MAX_POOLS;
	for (size_t i = 0; i < shown; i++) {
		const struct pool_view *pv = &v[i];
		const struct stats_saturation *s = &pv->sat;
		evbuffer_add_printf(b, "<tr><td class=\"l\">%s</td><td class=\"l\">%s</td>"
				    "<td class=\"l\">%s</td><td>",
				    esc(e1, pv->p->db->name, false), esc(e2, pv->p->user->name, false),
				    config_pool_mode_name(pool_mode(pv->p)));
		html_bar(b, s->saturation, warn);
		evbuffer_add_printf(b, "</td><td>%d/%d</td><td>%d</td><td>%" PRId64 "</td>"
				    "<td>%" PRId64 "</td><td>%.3fs</td><td>%.1f / %.1f / %.1f</td>"
				    "<td>%" PRId64 "/%" PRId64 "/%" PRId64 "/%" PRId64 "</td><td>",
				    s->sv_active, s->pool_size, s->peak_1m, pv->row.cl_active,
				    pv->row.cl_waiting, sec(s->maxwait_us),
				    s->q[STATS_H_WAIT][0] / 1e3, s->q[STATS_H_WAIT][1] / 1e3,
				    s->q[STATS_H_WAIT][2] / 1e3, pv->row.sv_idle, pv->row.sv_used,
				    pv->row.sv_tested, pv->row.sv_login);
		html_chart(b, w, pv->p, warn);
		if (s->saturated_us)
			evbuffer_add_printf(b, "</td><td>%.0fs</td></tr>", sec(s->saturated_us));
		else
			ADD_LIT(b, "</td><td>-</td></tr>");
	}
	ADD_LIT(b, "</table>");
	if (n > shown)
		evbuffer_add_printf(b, "<p><small>%zu more pools, less saturated: SHOW SATURATION on "
				    "the console lists them all.</small></p>", n - shown);
	if (!n)
		evbuffer_add_printf(b, "<p><small>No pools yet: a pool appears with its first "
				    "client.</small></p>");
}

static const char *state_class(int state)
{
	return state == BE_UP ? "up" : state == BE_DOWN ? "down" : "unknown";
}

static void html_routing(struct evbuffer *b, struct worker *w)
{
	char e1[ESC_MAX], e2[ESC_MAX], e3[ESC_MAX], e4[ESC_MAX];
	bool any = false;
	struct list *it;
	for (it = w->databases.next; it != &w->databases; it = it->next) {
		const struct database *db = list_entry(it, struct database, node);
		struct route_backend_row r;
		for (int i = 0; route_backend_row(db, i, &r); i++) {
			if (!any)
				ADD_LIT(b, "<h2>Backends of routed databases</h2><table><tr>"
					     "<th class=\"l\">database</th><th class=\"l\">backend</th>"
					     "<th>shard</th><th class=\"l\">host</th><th class=\"l\">role</th>"
					     "<th class=\"l\">health</th><th>lag bytes</th><th>lag ms</th>"
					     "<th>weight</th><th>clients</th><th>servers active</th>"
					     "<th>reads</th><th>writes</th><th class=\"l\">last error</th></tr>");
			any = true;
			evbuffer_add_printf(b, "<tr><td class=\"l\">%s</td><td class=\"l\">%s</td>"
					    "<td>%d</td><td class=\"l\">%s:%d</td><td class=\"l\">%s</td>"
					    "<td class=\"l %s\">%s</td><td>%" PRId64 "</td><td>%" PRId64
					    "</td><td>%d</td><td>%d</td><td>%d</td><td>%" PRIu64 "</td>"
					    "<td>%" PRIu64 "</td><td class=\"l\">%s</td></tr>",
					    esc(e1, r.cluster, false), esc(e2, r.name, false), r.shard,
					    esc(e3, r.host, false), r.port, route_role_name(r.role),
					    state_class(r.state), route_state_name(r.state), r.lag_bytes,
					    r.lag_ms, r.weight, r.cl_active + r.cl_waiting, r.sv_active,
					    r.reads, r.writes, esc(e4, r.last_error ? r.last_error : "", false));
		}
	}
	if (any)
		ADD_LIT(b, "</table>");
	any = false;
	for (it = w->databases.next; it != &w->databases; it = it->next) {
		const struct database *db = list_entry(it, struct database, node);
		struct route_shard_row r;
		for (int s = 0; route_shard_row(db, s, &r); s++) {
			if (!any)
				ADD_LIT(b, "<h2>Shards</h2><table><tr><th class=\"l\">database</th>"
					     "<th>shard</th><th class=\"l\">primary</th><th class=\"l\">"
					     "primary health</th><th>backends up</th><th>replicas up</th>"
					     "<th>max lag bytes</th><th>reads</th><th>writes</th>"
					     "<th>keyed</th></tr>");
			any = true;
			evbuffer_add_printf(b, "<tr><td class=\"l\">%s</td><td>%d</td><td class=\"l\">%s"
					    "</td><td class=\"l %s\">%s</td><td>%d/%d</td><td>%d/%d</td>"
					    "<td>%" PRId64 "</td><td>%" PRIu64 "</td><td>%" PRIu64 "</td>"
					    "<td>%" PRIu64 "</td></tr>",
					    esc(e1, r.cluster, false), r.shard, esc(e2, r.primary, false),
					    state_class(r.primary_state), route_state_name(r.primary_state),
					    r.backends_up, r.backends, r.replicas_up, r.replicas,
					    r.max_lag_bytes, r.reads, r.writes, r.keyed);
		}
	}
	if (any)
		ADD_LIT(b, "</table>");
}

bool statuspage_html(struct worker *w, struct evbuffer *b)
{
	size_t n;
	struct pool_view *v = gather(w, &n);
	if (!v && n)
		return false;
	int waiting = 0;
	for (size_t i = 0; i < n; i++)
		waiting += (int)v[i].row.cl_waiting;
	char when[64];
	time_t t = time(NULL);
	struct tm tm;
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&t, &tm));
	evbuffer_add_printf(b, "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
			    "<meta http-equiv=\"refresh\" content=\"5\"><title>pgmux status</title>"
			    "<style>%s</style></head><body><h1>%s</h1><p>%s &middot; %d clients "
			    "(%d waiting for a server) &middot; %d server connections &middot; "
			    "%zu pools%s%s &middot; <a href=\"/status.json\">status.json</a> &middot; "
			    "<a href=\"/metrics\">metrics</a></p>",
			    css, PGMUX_VERSION_STR, when, w->n_clients, waiting, w->n_servers, n,
			    w->paused ? " &middot; <b>PAUSED</b>" : "",
			    w->shutdown ? " &middot; <b>SHUTTING DOWN</b>" : "");
	html_pools(b, w, v, n);
	html_routing(b, w);
	evbuffer_add_printf(b, "<p><small>Refreshes every 5 s. Saturation is sv_active / pool_size; "
			    "the chart shows each second's peak over the last 15 minutes.</small></p>"
			    "</body></html>\n");
	free(v);
	return true;
}

/* ---- JSON ------------------------------------------------------------------------------------ */

static void json_pool(struct evbuffer *b, struct worker *w, const struct pool_view *pv)
{
	char e1[ESC_MAX], e2[ESC_MAX];
	const struct stats_saturation *s = &pv->sat;
	evbuffer_add_printf(b, "{\"database\":\"%s\",\"user\":\"%s\",\"pool_mode\":\"%s\","
			    "\"pool_size\":%d,\"sv_active\":%d,\"sv_idle\":%" PRId64 ",\"sv_used\":%"
			    PRId64 ",\"sv_tested\":%" PRId64 ",\"sv_login\":%" PRId64 ","
			    "\"cl_active\":%" PRId64 ",\"cl_waiting\":%" PRId64 ",\"saturation\":%.4f,"
			    "\"peak_1m\":%d,\"peak_period\":%d,\"headroom\":%d,"
			    "\"saturated_seconds\":%.3f,\"maxwait_seconds\":%.6f",
			    esc(e1, pv->p->db->name, true), esc(e2, pv->p->user->name, true),
			    config_pool_mode_name(pool_mode(pv->p)), s->pool_size, s->sv_active,
			    pv->row.sv_idle, pv->row.sv_used, pv->row.sv_tested, pv->row.sv_login,
			    pv->row.cl_active, pv->row.cl_waiting, s->saturation, s->peak_1m,
			    s->peak_period, s->headroom, sec(s->saturated_us), sec(s->maxwait_us));
	static const char *const kind[STATS_NH] = { "wait", "query", "xact" };
	static const char *const q[STATS_NQ] = { "p50", "p95", "p99" };
	for (int k = 0; k < STATS_NH; k++)
		for (int i = 0; i < STATS_NQ; i++)
			evbuffer_add_printf(b, ",\"%s_%s_seconds\":%.6f", kind[k], q[i], sec(s->q[k][i]));
	uint8_t h[STATS_HISTORY];
	size_t n = stats_saturation_history(w, pv->p, h, STATS_HISTORY);
	ADD_LIT(b, ",\"saturation_history\":[");
	for (size_t i = 0; i < n; i++)
		evbuffer_add_printf(b, i ? ",%u" : "%u", h[i]);
	ADD_LIT(b, "]}");
}

bool statuspage_json(struct worker *w, struct evbuffer *b)
{
	size_t n;
	struct pool_view *v = gather(w, &n);
	if (!v && n)
		return false;
	char e1[ESC_MAX], e2[ESC_MAX], e3[ESC_MAX];
	evbuffer_add_printf(b, "{\"version\":\"%s\",\"time\":%lld,\"clients\":%d,\"servers\":%d,"
			    "\"paused\":%s,\"shutting_down\":%s,\"saturation_warn\":%g,"
			    "\"history_seconds\":%d,\"pools_total\":%zu,\"pools_omitted\":%zu,"
			    "\"pools\":[",
			    PGMUX_VERSION_STR, (long long)time(NULL), w->n_clients, w->n_servers,
			    w->paused ? "true" : "false", w->shutdown ? "true" : "false",
			    w->cf->saturation_warn, STATS_HISTORY, n,
			    n > STATUSPAGE_MAX_POOLS ? n - STATUSPAGE_MAX_POOLS : 0);
	size_t shown = n < STATUSPAGE_MAX_POOLS ? n : STATUSPAGE_MAX_POOLS;
	for (size_t i = 0; i < shown; i++) {
		if (i)
			ADD_LIT(b, ",");
		json_pool(b, w, &v[i]);
	}
	ADD_LIT(b, "],\"backends\":[");
	bool first = true;
	struct list *it;
	for (it = w->databases.next; it != &w->databases; it = it->next) {
		const struct database *db = list_entry(it, struct database, node);
		struct route_backend_row r;
		for (int i = 0; route_backend_row(db, i, &r); i++) {
			evbuffer_add_printf(b, "%s{\"database\":\"%s\",\"backend\":\"%s\",\"shard\":%d,"
					    "\"host\":\"%s\",\"port\":%d,\"role\":\"%s\",\"health\":\"%s\","
					    "\"lag_bytes\":%" PRId64 ",\"lag_ms\":%" PRId64 ",\"weight\":%d,"
					    "\"cl_active\":%d,\"cl_waiting\":%d,\"sv_active\":%d,"
					    "\"reads\":%" PRIu64 ",\"writes\":%" PRIu64 ",\"retries\":%"
					    PRIu64 "}",
					    first ? "" : ",", esc(e1, r.cluster, true), esc(e2, r.name, true),
					    r.shard, esc(e3, r.host, true), r.port, route_role_name(r.role),
					    route_state_name(r.state), r.lag_bytes, r.lag_ms, r.weight,
					    r.cl_active, r.cl_waiting, r.sv_active, r.reads, r.writes,
					    r.retries);
			first = false;
		}
	}
	ADD_LIT(b, "],\"shards\":[");
	first = true;
	for (it = w->databases.next; it != &w->databases; it = it->next) {
		const struct database *db = list_entry(it, struct database, node);
		struct route_shard_row r;
		for (int s = 0; route_shard_row(db, s, &r); s++) {
			evbuffer_add_printf(b, "%s{\"database\":\"%s\",\"shard\":%d,\"primary\":\"%s\","
					    "\"primary_health\":\"%s\",\"backends\":%d,\"backends_up\":%d,"
					    "\"replicas\":%d,\"replicas_up\":%d,\"max_lag_bytes\":%" PRId64
					    ",\"reads\":%" PRIu64 ",\"writes\":%" PRIu64 ",\"keyed\":%" PRIu64
					    "}",
					    first ? "" : ",", esc(e1, r.cluster, true), r.shard,
					    esc(e2, r.primary, true), route_state_name(r.primary_state),
					    r.backends, r.backends_up, r.replicas, r.replicas_up,
					    r.max_lag_bytes, r.reads, r.writes, r.keyed);
			first = false;
		}
	}
	ADD_LIT(b, "]}\n");
	free(v);
	return true;
}
