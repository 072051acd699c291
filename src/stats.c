/* stats.c: per-database totals summed from pool counters, and averages snapshotted each stats_period. */
#include "stats.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

const struct stats_field_desc stats_fields[STATS_N] = {
#define STATS_DESC(id, member, name, total, avg, kind) [id] = { name, total, avg, kind },
	STATS_FIELDS(STATS_DESC)
#undef STATS_DESC
};

/* One database's snapshot; db NULL is the all-databases row. */
struct stats_entry {
	const struct database *db;
	struct stats prev, avg;
};

struct stats_state {
	struct worker *w;
	struct event ev;
	uint64_t last;              /* pgmux_now() of the last snapshot */
	struct stats_entry *e;
	size_t n, cap;
};

void stats_add_pool(struct stats *s, const struct pool *p)
{
#define STATS_ADD(id, member, name, total, avg, kind) s->v[id] += p->member;
	STATS_FIELDS(STATS_ADD)
#undef STATS_ADD
}

void stats_total(struct worker *w, const struct database *db, struct stats *out)
{
	memset(out, 0, sizeof(*out));
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		if (!db || p->db == db)
			stats_add_pool(out, p);
	}
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
	uint64_t now = pgmux_now(), dur = now - st->last;
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
	snapshot(st, true);
	arm(st);
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
	w->stats = st;
	/* Databases that exist now start from their current totals, later ones from zero. */
	snapshot(st, false);
	arm(st);
}

void stats_stop(struct worker *w)
{
	struct stats_state *st = w->stats;
	if (!st)
		return;
	event_del(&st->ev);
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
