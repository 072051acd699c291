/* stats.c: per-database totals summed from pool counters, averages snapshotted each stats_period, and
 * per-pool saturation windows (peaks, percentile windows, the saturation warning) sampled each second. */
#include "stats.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sdnotify.h"
#include "worker.h"
#include "namehash.h"
#include "pool_info.h"

/* One-second samples of peak sv_active kept per pool: the "last minute". */
#define STATS_RING 60

const double stats_quantiles[STATS_NQ] = { 0.5, 0.95, 0.99 };

const struct stats_field_desc stats_fields[STATS_N] = {
#define STATS_DESC(id, member, name, total, avg, kind, prom, unit) [id] = { name, total, avg, kind, prom, unit },
	STATS_FIELDS(STATS_DESC)
#undef STATS_DESC
};

/* One database's snapshot; db NULL is the all-databases row. */
struct stats_entry {
	const struct database *db;
	struct stats prev, avg;
};

/* One pool's saturation windows (about 8 KB: two snapshots of its three histograms). */
struct sat_entry {
	const struct pool *p;
	int ring[STATS_RING];               /* peak sv_active of each of the last 60 seconds */
	uint8_t history[STATS_HISTORY];     /* peak saturation of each second, in percent (<= 255) */
	uint32_t n_history;                 /* seconds sampled, up to STATS_HISTORY */
	int period_peak_cur;                /* peak since the last stats_period boundary */
	int period_peak_prev;               /* peak of the complete period before */
	struct hist snap_prev[STATS_NH];    /* cumulative histograms at the previous boundary */
	struct hist snap_cur[STATS_NH];     /* cumulative histograms at the last boundary */
	bool over;                          /* the last sample was at or above saturation_warn */
	bool warned;                        /* the warning has been logged for this stretch */
	uint64_t over_since;                /* worker_now() of the first sample of the stretch */
};

struct stats_state {
	struct worker *w;
	struct event ev;
	uint64_t last;              /* worker_now() of the last snapshot */
	struct stats_entry *e;
	size_t n, cap;
	struct stats console_prev, console_avg;  /* the console's row */
	/* saturation: one entry per pool, in w->pools order while pools are only appended */
	struct event ev_sec;
	int ring_pos;               /* the ring slot the next sample writes */
	int history_pos;            /* the history slot the next sample writes */
	struct sat_entry **sat;
	size_t nsat, capsat;
};

void stats_add_pool(struct stats *s, const struct pool *p)
{
#define STATS_ADD(id, member, name, total, avg, kind, prom, unit) s->v[id] += p->member;
	STATS_FIELDS(STATS_ADD)
#undef STATS_ADD
}

static void add_pool_cb(void *p, void *out)
{
	stats_add_pool(out, p);
}

static void add_console(struct stats *s, const struct worker *w)
{
#define STATS_ADD_CONSOLE(id, member, name, total, avg, kind, prom, unit) s->v[id] += w->console_stats.member;
	STATS_FIELDS(STATS_ADD_CONSOLE)
#undef STATS_ADD_CONSOLE
}

void stats_total(struct worker *w, const struct database *db, struct stats *out)
{
	memset(out, 0, sizeof(*out));
	if (db) {
		/* its own pools only: a listing of every database stays linear in pools */
		if (db->pools)
			namehash_each(db->pools, add_pool_cb, out);
		return;
	}
	add_console(out, w);
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->pools)
		stats_add_pool(out, list_entry(it, struct pool, node));
}

static uint64_t delta(const struct stats *cur, const struct stats *old, int f)
{
	return cur->v[f] > old->v[f] ? cur->v[f] - old->v[f] : 0;
}

void stats_average(const struct stats *cur, const struct stats *old, uint64_t dur, struct stats *avg)
{
	memset(avg, 0, sizeof(*avg));
	if (!dur)
		return;
	uint64_t xacts = delta(cur, old, STAT_XACT_COUNT), queries = delta(cur, old, STAT_QUERY_COUNT);
	for (int f = 0; f < STATS_N; f++) {
		uint64_t d = delta(cur, old, f);
		switch (stats_fields[f].kind) {
		case STATS_AVG_RATE:
			/* d * 1e6 / dur without overflow for any realistic d */
			avg->v[f] = d / dur * 1000000u + d % dur * 1000000u / dur;
			break;
		case STATS_AVG_PER_XACT:
			avg->v[f] = xacts ? d / xacts : 0;
			break;
		case STATS_AVG_PER_QUERY:
			avg->v[f] = queries ? d / queries : 0;
			break;
		}
	}
}

static struct stats_entry *entry(struct stats_state *st, const struct database *db)
{
	for (size_t i = 0; i < st->n; i++)
		if (st->e[i].db == db)
			return &st->e[i];
	if (st->n == st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 16;
		struct stats_entry *e = realloc(st->e, cap * sizeof(*e));
		if (!e)
			return NULL;
		st->e = e;
		st->cap = cap;
	}
	struct stats_entry *e = &st->e[st->n++];
	memset(e, 0, sizeof(*e));
	e->db = db;
	return e;
}

/* ---- SHOW POOLS figures ---------------------------------------------------------------- */

static uint64_t oldest_wait(const struct pool *p, uint64_t now)
{
	uint64_t maxwait = 0;
	const struct list *firsts[] = { list_first(&p->cl_waiting), list_first(&p->cl_waiting_login) };
	for (int i = 0; i < 2; i++) {
		if (!firsts[i])
			continue;
		const struct client *c = list_entry(firsts[i], struct client, node);
		if (now > c->wait_start && now - c->wait_start > maxwait)
			maxwait = now - c->wait_start;
	}
	return maxwait;
}

void stats_pool_row(const struct pool *p, uint64_t now, struct stats_pool_row *r)
{
	memset(r, 0, sizeof(*r));
	const struct list *lists[] = { &p->sv_active, &p->sv_idle, &p->sv_used, &p->sv_tested,
				       &p->sv_login };
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		for (const struct list *it = lists[i]->next; it != lists[i]; it = it->next)
			if (list_entry(it, struct server, node)->cancel_pending)
				r->sv_being_canceled++;
	uint64_t maxwait = oldest_wait(p, now);
	r->cl_active = p->n_cl[CL_ACTIVE];
	r->cl_waiting = p->n_cl[CL_WAITING] + p->n_cl[CL_WAITING_LOGIN];
	r->sv_active = p->n_sv[SV_ACTIVE];
	r->sv_idle = p->n_sv[SV_IDLE];
	r->sv_used = p->n_sv[SV_USED];
	r->sv_tested = p->n_sv[SV_TESTED];
	r->sv_login = p->n_sv[SV_LOGIN];
	r->maxwait = (int64_t)(maxwait / 1000000u);
	r->maxwait_us = (int64_t)(maxwait % 1000000u);
	r->maxwait_total_us = maxwait;
	r->pool_size = pool_size(p);
	r->saturation = r->pool_size > 0 ? (double)r->sv_active / (double)r->pool_size : 0.0;
}

/* ---- saturation windows ------------------------------------------------------------------ */

static const struct hist *pool_hist(const struct pool *p, int k)
{
	return k == STATS_H_WAIT ? &p->h_wait : k == STATS_H_QUERY ? &p->h_query : &p->h_xact;
}

void stats_hist_window(const struct hist *cur, const struct hist *old, struct hist *out)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
		out->b[i] = cur->b[i] > old->b[i] ? cur->b[i] - old->b[i] : 0;
		n += out->b[i];
	}
	/* the count is the buckets' sum, so a quantile's rank always falls inside them */
	out->count = n;
}

bool stats_over_threshold(int active, int size, double warn)
{
	if (!(warn > 0.0) || size <= 0)
		return false;
	return (double)active >= warn * (double)size - 1e-9;
}

/* The entry of pool p; `hint` is where it should be when walking w->pools in order.  With
 * `create`, a missing one is made (NULL when out of memory). */
static struct sat_entry *sat_find(struct stats_state *st, const struct pool *p, size_t hint,
				  bool create)
{
	if (hint < st->nsat && st->sat[hint]->p == p)
		return st->sat[hint];
	for (size_t i = 0; i < st->nsat; i++)
		if (st->sat[i]->p == p)
			return st->sat[i];
	if (!create)
		return NULL;
	if (st->nsat == st->capsat) {
		size_t cap = st->capsat ? st->capsat * 2 : 16;
		struct sat_entry **v = realloc(st->sat, cap * sizeof(*v));
		if (!v)
			return NULL;
		st->sat = v;
		st->capsat = cap;
	}
	/* a new entry's snapshots are zero: its pool's histograms started at zero too */
	struct sat_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->p = p;
	st->sat[st->nsat++] = e;
	return e;
}

/* Forgets one pool's windows (namehash_each callback; arg is the stats state). */
static void pool_gone(void *val, void *arg)
{
	const struct pool *p = val;
	struct stats_state *st = arg;
	for (size_t i = 0; i < st->nsat; i++)
		if (st->sat[i]->p == p) {
			free(st->sat[i]);
			memmove(&st->sat[i], &st->sat[i + 1], (st->nsat - i - 1) * sizeof(st->sat[0]));
			st->nsat--;
			return;
		}
}

void stats_pool_gone(struct worker *w, const struct pool *p)
{
	if (w->stats && p)
		pool_gone((void *)p, w->stats);
}

void stats_database_gone(struct worker *w, const struct database *db)
{
	struct stats_state *st = w->stats;
	if (!st || !db)
		return;
	if (db->pools)
		namehash_each(db->pools, pool_gone, st);
	for (size_t i = 0; i < st->n; i++)
		if (st->e[i].db == db) {
			st->e[i] = st->e[--st->n];   /* entries are found by pointer: order is free */
			return;
		}
}

/* The saturation warning: one line when a pool has stayed at or above saturation_warn for
 * saturation_warn_after, one when it drops below again. */
static void check_warn(struct worker *w, struct sat_entry *e, const struct pool *p, int active,
		       uint64_t now)
{
	const struct config *cf = w->cf;
	int size = pool_size(p);
	if (stats_over_threshold(active, size, cf->saturation_warn)) {
		if (!e->over) {
			e->over = true;
			e->over_since = now;
		}
		uint64_t dur = now - e->over_since;
		if (!e->warned && dur >= (uint64_t)cf->saturation_warn_after) {
			e->warned = true;
			log_warn("pool %s/%s saturated: %d of %d servers active for %.0fs "
				 "(saturation_warn=%g)", p->db->name, p->user->name, active, size,
				 (double)dur / 1e6, cf->saturation_warn);
		}
		return;
	}
	if (e->warned)
		log_info("pool %s/%s no longer saturated: %d of %d servers active after %.0fs at or "
			 "above saturation_warn=%g", p->db->name, p->user->name, active, size,
			 (double)(now - e->over_since) / 1e6, cf->saturation_warn);
	e->over = false;
	e->warned = false;
}

/* Once a second: each pool's peak since the last sample goes into the ring (and the hot path's
 * peak_active restarts from the current count), and the warning is checked. */
static void sample(struct stats_state *st)
{
	struct worker *w = st->w;
	uint64_t now = worker_now();
	size_t i = 0;
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		struct sat_entry *e = sat_find(st, p, i++, true);
		if (!e)
			continue;
		int active = p->n_sv[SV_ACTIVE];
		int pk = p->peak_active > active ? p->peak_active : active;
		p->peak_active = active;
		e->ring[st->ring_pos] = pk;
		int size = pool_size(p);
		int pct = size > 0 ? (int)((int64_t)pk * 100 / size) : 0;
		e->history[st->history_pos] = (uint8_t)(pct > 255 ? 255 : pct);
		if (e->n_history < STATS_HISTORY)
			e->n_history++;
		if (pk > e->period_peak_cur)
			e->period_peak_cur = pk;
		check_warn(w, e, p, active, now);
	}
	st->ring_pos = (st->ring_pos + 1) % STATS_RING;
	st->history_pos = (st->history_pos + 1) % STATS_HISTORY;
}

/* At a stats_period boundary: the percentile window moves on by one period. */
static void rotate(struct stats_state *st)
{
	size_t i = 0;
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &st->w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		struct sat_entry *e = sat_find(st, p, i++, true);
		if (!e)
			continue;
		for (int k = 0; k < STATS_NH; k++) {
			e->snap_prev[k] = e->snap_cur[k];
			e->snap_cur[k] = *pool_hist(p, k);
		}
		int active = p->n_sv[SV_ACTIVE];
		e->period_peak_prev = e->period_peak_cur;
		e->period_peak_cur = p->peak_active > active ? p->peak_active : active;
	}
}

void stats_saturation_of(struct worker *w, const struct pool *p, struct stats_saturation *o)
{
	memset(o, 0, sizeof(*o));
	uint64_t now = worker_now();
	struct stats_state *st = w->stats;
	const struct sat_entry *e = st ? sat_find(st, p, SIZE_MAX, false) : NULL;
	o->pool = p;
	o->pool_size = pool_size(p);
	o->sv_active = p->n_sv[SV_ACTIVE];
	o->cl_waiting = p->n_cl[CL_WAITING] + p->n_cl[CL_WAITING_LOGIN];
	o->maxwait_us = oldest_wait(p, now);
	/* what happened since the last sample counts too */
	int live = p->peak_active > o->sv_active ? p->peak_active : o->sv_active;
	o->peak_1m = o->peak_period = live;
	if (e) {
		for (int i = 0; i < STATS_RING; i++)
			if (e->ring[i] > o->peak_1m)
				o->peak_1m = e->ring[i];
		if (e->period_peak_cur > o->peak_period)
			o->peak_period = e->period_peak_cur;
		if (e->period_peak_prev > o->peak_period)
			o->peak_period = e->period_peak_prev;
		if (e->over && now > e->over_since)
			o->saturated_us = now - e->over_since;
	}
	if (o->pool_size > 0) {
		o->saturation = (double)o->sv_active / o->pool_size;
		o->peak_saturation_1m = (double)o->peak_1m / o->pool_size;
	}
	o->headroom = o->pool_size - o->peak_1m;
	static const struct hist zero;
	struct hist win;
	for (int k = 0; k < STATS_NH; k++) {
		stats_hist_window(pool_hist(p, k), e ? &e->snap_prev[k] : &zero, &win);
		o->win_count[k] = win.count;
		for (int q = 0; q < STATS_NQ; q++)
			o->q[k][q] = hist_quantile(&win, stats_quantiles[q]);
	}
}

size_t stats_saturation_history(struct worker *w, const struct pool *p, uint8_t *out, size_t max)
{
	struct stats_state *st = w->stats;
	const struct sat_entry *e = st ? sat_find(st, p, SIZE_MAX, false) : NULL;
	if (!e)
		return 0;
	/* A pool made after the sampler started has its first sample in the slot history_pos had
	 * then; the slots of the seconds before it are zero and not reported. */
	size_t n = e->n_history < max ? e->n_history : max;
	for (size_t i = 0; i < n; i++)
		out[i] = e->history[(st->history_pos + STATS_HISTORY - n + i) % STATS_HISTORY];
	return n;
}

/* ---- the timers ---------------------------------------------------------------------------- */

static uint64_t period(const struct worker *w)
{
	int64_t p = w->cf->stats_period;
	return p >= 1000000 ? (uint64_t)p : 1000000u;   /* at least a second */
}

static void arm(struct stats_state *st)
{
	uint64_t p = period(st->w);
	struct timeval tv = { (time_t)(p / 1000000u), (suseconds_t)(p % 1000000u) };
	event_add(&st->ev, &tv);
}

/* Snapshots every database (and the total); with `average`, the period's averages too. */
static void snapshot(struct stats_state *st, bool average)
{
	struct worker *w = st->w;
	uint64_t now = worker_now(), dur = now - st->last;
	struct stats cur;
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->databases) {
		struct database *db = list_entry(it, struct database, node);
		struct stats_entry *e = entry(st, db);
		if (!e)
			continue;
		stats_total(w, db, &cur);
		if (average)
			stats_average(&cur, &e->prev, dur, &e->avg);
		e->prev = cur;
	}
	memset(&cur, 0, sizeof(cur));
	add_console(&cur, w);
	if (average)
		stats_average(&cur, &st->console_prev, dur, &st->console_avg);
	st->console_prev = cur;
	struct stats_entry *all = entry(st, NULL);
	if (all) {
		stats_total(w, NULL, &cur);
		if (average)
			stats_average(&cur, &all->prev, dur, &all->avg);
		all->prev = cur;
	}
	st->last = now;
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
	struct stats_state *st = arg;
	st->w->now = worker_now();
	snapshot(st, true);
	rotate(st);
	arm(st);
}

static void sec_tick(evutil_socket_t fd, short what, void *arg)
{
	struct stats_state *st = arg;
	st->w->now = worker_now();
	sample(st);
	/* systemd's status line, from this tick rather than per connection: at most one datagram a
	 * second, and none while the counts stand still (sdnotify_status drops repeats).  A console
	 * SHUTDOWN is noticed here too, within the second. */
	struct worker *w = st->w;
	if (w->shutdown)
		sdnotify_stopping();
	sdnotify_status("%d clients, %d servers%s%s", w->n_clients, w->n_servers,
			w->paused ? ", paused" : "", w->shutdown ? ", shutting down" : "");
}

void stats_start(struct worker *w)
{
	if (w->stats)
		return;
	struct stats_state *st = calloc(1, sizeof(*st));
	if (!st) {
		log_warn("stats: out of memory; averages stay at zero");
		return;
	}
	st->w = w;
	evtimer_assign(&st->ev, w->base, tick, st);
	event_assign(&st->ev_sec, w->base, -1, EV_PERSIST, sec_tick, st);
	w->stats = st;
	/* Databases that exist now start from their current totals, later ones from zero. */
	snapshot(st, false);
	arm(st);
	struct timeval sec = { 1, 0 };
	event_add(&st->ev_sec, &sec);
}

void stats_stop(struct worker *w)
{
	struct stats_state *st = w->stats;
	if (!st)
		return;
	event_del(&st->ev);
	event_del(&st->ev_sec);
	for (size_t i = 0; i < st->nsat; i++)
		free(st->sat[i]);
	free(st->sat);
	free(st->e);
	free(st);
	w->stats = NULL;
}

void stats_average_of(struct worker *w, const struct database *db, struct stats *avg)
{
	memset(avg, 0, sizeof(*avg));
	struct stats_state *st = w->stats;
	if (!st)
		return;
	for (size_t i = 0; i < st->n; i++)
		if (st->e[i].db == db) {
			*avg = st->e[i].avg;
			return;
		}
}

void stats_console(struct worker *w, struct stats *tot, struct stats *avg)
{
	memset(tot, 0, sizeof(*tot));
	add_console(tot, w);
	if (w->stats)
		*avg = w->stats->console_avg;
	else
		memset(avg, 0, sizeof(*avg));
}
