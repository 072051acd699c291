/* repl.c: replication connections (physical and logical): one server per client, opened with the client's own startup parameters, linked until either side leaves, then closed; never pooled. */
#include "repl.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "log.h"
#include "pool.h"
#include "sbuf.h"
#include "server.h"
#include "worker.h"

/*
 * Why a server of its own: a walsender's session is the replication stream (its slot, its
 * snapshot, the CopyBoth exchange), and PostgreSQL refuses much of what reusing one would take.
 * So the pair lives and dies together, as in PgBouncer since 1.23.  The server still counts in
 * its pool's limits, so replication cannot exceed what the database was sized for.
 */

int repl_parse_value(const char *val)
{
	static const char *const yes[] = { "true", "on", "yes", "1" };
	static const char *const no[] = { "false", "off", "no", "0" };
	if (strcmp(val, "database") == 0)
		return REPL_LOGICAL;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(val, yes[i]) == 0)
			return REPL_PHYSICAL;
		if (strcasecmp(val, no[i]) == 0)
			return REPL_NONE;
	}
	return -1;
}

bool repl_keep_param(struct client *cl, const char *key, const char *val)
{
	pktbuf_put_str(&cl->repl_params, key);
	pktbuf_put_str(&cl->repl_params, val);
	return !cl->repl_params.failed;
}

void repl_client_ready(struct client *cl)
{
	/* as any client waiting for its first server, but never failed fast: its own server is
	 * tried whatever the pool's last login did */
	pool_wait_login(cl);
}

/* The oldest replication client of p that has no server yet, or NULL. */
static struct client *next_waiter(struct pool *p)
{
	struct list *it, *nx;
	list_for_each_safe(it, nx, &p->cl_waiting_login) {
		struct client *cl = list_entry(it, struct client, node);
		/* Not one that is closing: closing its logging-in server below launches again while
		 * it is still on this list, and a server opened for it would outlive it. */
		if (cl->replication && !cl->repl_sv && !cl->repl_leaving && !cl->c.dead)
			return cl;
	}
	return NULL;
}

void repl_launch(struct pool *p)
{
	/* Opening or evicting closes things, whose teardown calls back here: the outer call
	 * does the work, and walks the list afresh each round, since clients may be gone. */
	if (p->repl_busy) {
		p->repl_again = true;
		return;
	}
	p->repl_busy = true;
	do {
		p->repl_again = false;
		struct client *cl;
		while ((cl = next_waiter(p))) {
			if (!pool_may_open(p) && (!pool_evict_idle(p) || !pool_may_open(p)))
				break;
			server_connect(p, cl);
			if (!cl->c.dead && !cl->repl_sv)
				break;   /* no memory or no socket: the next try is the janitor's */
		}
	} while (p->repl_again);
	p->repl_busy = false;
}

void repl_put_startup(const struct server *sv, struct pktbuf *o)
{
	const struct client *cl = sv->repl_for;
	if (!cl)
		return;
	pktbuf_put_str(o, "replication");
	pktbuf_put_str(o, cl->replication == REPL_LOGICAL ? "database" : "true");
	if (cl->repl_params.len)
		pktbuf_put(o, cl->repl_params.data, cl->repl_params.len);
}

bool repl_client_sets(const struct server *sv, const char *key)
{
	const struct client *cl = sv->repl_for;
	if (!cl || !cl->repl_params.len)
		return false;
	const uint8_t *q = cl->repl_params.data, *end = q + cl->repl_params.len;
	const char *k;
	while ((k = proto_get_str(&q, end))) {
		if (strcasecmp(k, key) == 0)
			return true;
		if (!proto_get_str(&q, end))
			break;
	}
	return false;
}

void repl_server_ready(struct server *sv, const struct pktbuf *params)
{
	struct client *cl = sv->repl_for;
	struct pool *p = sv->pool;
	uint64_t now = p->w->now;
	cl->repl_sv = NULL;
	server_set_state(sv, SV_ACTIVE);
	sv->link = cl;
	cl->link = sv;
	sbuf_link(&cl->c, &sv->c);
	sv->link_time = now;
	sv->ps_active = false;   /* a walsender speaks simple Query and COPY only */
	uint64_t waited = now > cl->wait_start ? now - cl->wait_start : 0;
	p->wait_time += waited;
	hist_add(&p->h_wait, waited);
	/* The greeting is the server's own: its parameters reflect the client's startup packet
	 * (application_name, options), which the pool's shared greeting would not. */
	struct pktbuf *o = &cl->c.out;
	if (params->len)
		pktbuf_put(o, params->data, params->len);
	worker_cancel_register(p->w, cl);
	proto_backend_key(o, cl->cancel_pid, cl->cancel_key);
	proto_ready(o, 'I');
	client_set_state(cl, CL_ACTIVE);
	cl->c.hold = false;
	cl->last_active = now;
	if (o->failed || sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return;
	}
	sbuf_resume(&cl->c);
	if (sbuf_unparsed(&cl->c))
		client_on_data(cl);
}

void repl_login_failed(struct client *cl, const char *reason, const char *sqlstate)
{
	/* PgBouncer's words ("login failed"); the server's own reason in the DETAIL. */
	client_close_detail(cl, "login failed", sqlstate ? sqlstate : "08P01", reason);
}

void repl_client_gone(struct client *cl)
{
	struct server *sv = cl->link ? cl->link : cl->repl_sv;
	cl->repl_sv = NULL;
	cl->repl_leaving = true;   /* server_close below calls repl_launch: never pick cl again */
	if (!sv)
		return;
	sv->repl_for = NULL;
	if (cl->link == sv) {
		cl->link = NULL;
		sv->link = NULL;
		sbuf_link(&sv->c, NULL);
	}
	if (!sv->c.dead)
		server_close(sv, sv->state == SV_LOGIN ? "replication client left during login"
						       : "replication client disconnected");
}
