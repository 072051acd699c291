/* admin_cmd.c: the console's control commands (PAUSE, RESUME, KILL, RELOAD, SET, SHUTDOWN...),
 * the waits of PAUSE and WAIT_CLOSE, and their part of the command table. */
#include "admin_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "config.h"
#include "log.h"
#include "pool.h"
#include "route.h"
#include "server.h"
#include "tls.h"
#include "userlist.h"
#include "worker.h"

/* How often a waiting PAUSE / WAIT_CLOSE checks whether it is done. */
#define ADMIN_WAIT_POLL_USEC 20000

/* ---------------------------------------------------------------------------------------- */
/* control commands */

/*
 * A PAUSE of a sharded section (or of all) that found statements running over several shards
 * in turn (database.n_spanning) started as `pausing`: new statements wait unrouted while those
 * finish, since stopping one between two shards would strand it (its next shard's server is
 * not given out while paused) or, with a RELOAD under the PAUSE, run its rest on other shards.
 * Once none is left the PAUSE takes effect.  False while any is left.
 */
static bool pause_promote(struct worker *w, const struct database *db)
{
	struct list *it, *tmp;
	int left = 0;
	list_for_each_safe(it, tmp, &w->databases) {
		struct database *d = list_entry(it, struct database, node);
		if (!db || d == db)
			left += d->n_spanning;
	}
	if (left)
		return false;
	if (db && db->pausing) {
		struct database *d = (struct database *)db;
		d->pausing = false;
		d->paused = true;
	} else if (!db && w->pausing) {
		w->pausing = false;
		w->paused = true;
	}
	return true;
}

/* True when every pool of db (NULL: all) satisfies the wait. */
static bool wait_done(struct worker *w, enum admin_wait_kind kind, const struct database *db)
{
	struct list *it, *tmp, *s, *st;
	if (kind == WAIT_PAUSE && !pause_promote(w, db))
		return false;
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

void admin_wait_poll(evutil_socket_t fd, short what, void *arg)
{
	struct admin_session *s = arg;
	struct client *cl = s->cl;
	struct worker *w = cl->c.w;
	w->now = worker_now();
	if (s->wait == WAIT_CLOSE)
		close_marked_idle(w, s->wait_db);
	if (s->wait == WAIT_PAUSE && !(s->wait_db ? s->wait_db->paused || s->wait_db->pausing
						   : w->paused || w->pausing)) {
		/* A RESUME from another console came first: this PAUSE never took effect, and
		 * saying it did would let a caller (pgmux-reshard's cutover) act on a live pool. */
		s->wait = WAIT_NONE;
		proto_error(&cl->c.out, "ERROR", "55000", "PAUSE ended by a RESUME before it took effect");
		if (s->wait_simple)
			proto_ready(&cl->c.out, 'I');
		admin_process(cl);
		return;
	}
	if (!wait_done(w, s->wait, s->wait_db)) {
		struct timeval tv = { 0, ADMIN_WAIT_POLL_USEC };
		event_add(&s->ev_wait, &tv);
		return;
	}
	s->wait = WAIT_NONE;
	admin_command_complete(&cl->c.out, s->wait_tag);
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
		if (x->w->paused || x->w->pausing || x->db->paused || x->db->pausing) {
			admin_error(x, "55000", "database %s is already paused", x->db->name);
			return ADMIN_ERR;
		}
		x->db->pausing = true;   /* paused once its spanning statements are done */
		log_info("console: pausing database %s", x->db->name);
	} else {
		if (x->w->paused || x->w->pausing) {
			admin_error(x, "55000", "pgmux is already paused");
			return ADMIN_ERR;
		}
		x->w->pausing = true;
		log_info("console: pausing");
	}
	return start_wait(x, WAIT_PAUSE);
}

static enum admin_rc cmd_resume(struct admin_ctx *x)
{
	struct worker *w = x->w;
	if (x->db) {
		if (!x->db->paused && !x->db->pausing) {
			admin_error(x, "55000", "database %s is not paused", x->db->name);
			return ADMIN_ERR;
		}
		x->db->paused = x->db->pausing = false;
		log_info("console: resuming database %s", x->db->name);
	} else {
		if (w->shutdown) {
			/* PgBouncer's text and SQLSTATE: scripts match them */
			admin_error(x, "08P01", "pooler is shutting down");
			return ADMIN_ERR;
		}
		bool any = w->paused || w->pausing;
		struct list *it, *tmp;
		list_for_each_safe(it, tmp, &w->databases) {
			struct database *db = list_entry(it, struct database, node);
			any |= db->paused || db->pausing;
			db->paused = db->pausing = false;
		}
		if (!any) {
			admin_error(x, "55000", "pgmux is not paused");
			return ADMIN_ERR;
		}
		w->paused = w->pausing = false;
		if (w->suspended && w->daemon)
			w->daemon->hold_accepts(w, false);
		w->suspended = false;
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
	pool_fast_close(x->w);
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
		admin_error(x, "53200", "out of memory");
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

static bool client_has_id(struct client *cl, void *id)
{
	return cl->c.id == *(const uint64_t *)id;
}

static enum admin_rc cmd_kill_client(struct admin_ctx *x)
{
	char *end;
	const char *a = x->arg;
	int base = 10;
	if (a[0] == '0' && (a[1] == 'x' || a[1] == 'X'))
		base = 16;   /* the ptr column's form */
	unsigned long long id = strtoull(a, &end, base);
	/* An unknown target is answered with PgBouncer's texts and SQLSTATE (08P01). */
	if (end == a || *end) {
		admin_error(x, "08P01", "invalid client pointer supplied: KILL_CLIENT needs a client id (the id column of SHOW CLIENTS)");
		return ADMIN_ERR;
	}
	uint64_t want = id;
	struct client *c = admin_each_client(x->w, true, client_has_id, &want);
	if (!c) {
		admin_error(x, "08P01", "client not found: no client with id %llu", id);
		return ADMIN_ERR;
	}
	if (c == x->cl) {
		admin_error(x, "55000", "a console cannot kill its own connection; disconnect instead");
		return ADMIN_ERR;
	}
	if (c->link)
		c->link->close_when_idle = true;   /* its server goes too */
	log_info("console: killing client %llu", id);
	client_close(c, "killed by admin (KILL_CLIENT)", "57P01");
	return ADMIN_OK;
}

/* pgmux has no online restart to hand sockets over to, so SUSPEND keeps only the part that
 * stands on its own: no new transaction gets a server and no new connection is accepted until
 * RESUME.  pgmux never holds bytes back in its buffers, so there is nothing to flush first and
 * the command returns at once; transactions under way go on. */
static enum admin_rc cmd_suspend(struct admin_ctx *x)
{
	struct worker *w = x->w;
	if (w->shutdown) {
		admin_error(x, "08P01", "pooler is shutting down");
		return ADMIN_ERR;
	}
	if (w->paused || w->suspended) {
		admin_error(x, "55000", "already suspended/paused");
		return ADMIN_ERR;
	}
	log_info("SUSPEND command issued");
	w->suspended = true;
	w->paused = true;
	if (w->daemon)
		w->daemon->hold_accepts(w, true);
	return ADMIN_OK;
}

/* PgBouncer's words first (scripts match them), then pgmux's reason. */
#define RELOAD_FAILED "RELOAD failed, see logs for additional details; the old configuration stays: "

static enum admin_rc cmd_reload(struct admin_ctx *x)
{
	struct worker *w = x->w;
	struct config *cf;
	char err[512];
	/* A dry run first, so that the error reaches the admin and not only the log. */
	if (config_load(w->cf_path, &cf, err, sizeof(err)) < 0) {
		/* The words say "see logs": the log has the reason too. */
		log_error("console: RELOAD failed, keeping the old configuration: %s", err);
		admin_error(x, "F0000", RELOAD_FAILED "%s", err);
		return ADMIN_ERR;
	}
	if (cf->auth_file && *cf->auth_file) {
		struct userlist *ul = NULL;
		if (userlist_load(cf->auth_file, &ul, err, sizeof(err)) < 0) {
			config_free(cf);
			log_error("console: RELOAD failed, keeping the old configuration: %s", err);
			admin_error(x, "F0000", RELOAD_FAILED "%s", err);
			return ADMIN_ERR;
		}
		userlist_free(ul);
	}
	config_free(cf);
	log_info("console: RELOAD");
	if (!w->daemon || w->daemon->reload(w) < 0) {
		admin_error(x, "F0000", RELOAD_FAILED "see the log");
		return ADMIN_ERR;
	}
	return ADMIN_OK;
}

static enum admin_rc cmd_shutdown(struct admin_ctx *x)
{
	const char *a = x->arg;
	int mode;
	if (!*a) {
		log_info("SHUTDOWN command issued");
		mode = PGMUX_SHUTDOWN_NOW;
	} else if (!strcasecmp(a, "WAIT_FOR_SERVERS")) {
		log_info("SHUTDOWN WAIT_FOR_SERVERS command issued");
		mode = PGMUX_SHUTDOWN_WAIT_SERVERS;
	} else if (!strcasecmp(a, "WAIT_FOR_CLIENTS")) {
		log_info("SHUTDOWN WAIT_FOR_CLIENTS command issued");
		mode = PGMUX_SHUTDOWN_WAIT_CLIENTS;
	} else {
		admin_error(x, "42601", "SHUTDOWN takes WAIT_FOR_SERVERS, WAIT_FOR_CLIENTS or nothing");
		return ADMIN_ERR;
	}
	/* Applied once the reply is on its way (check_shutdown): SHUTDOWN's own console gets
	 * its CommandComplete before the loop ends. */
	x->cl->console->shutdown_mode = mode;
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
		admin_error(x, "42601", "syntax: SET key = value");
		return ADMIN_ERR;
	}
	while (isspace((unsigned char)*p))
		p++;
	size_t m = 0;
	if (*p == '\'') {
		p++;
		for (;;) {
			if (!*p) {
				admin_error(x, "42601", "unterminated quoted value");
				return ADMIN_ERR;
			}
			if (*p == '\'' && p[1] != '\'')
				break;
			if (*p == '\'')
				p++;
			if (m >= sizeof(val) - 1) {
				admin_error(x, "54000", "value too long");
				return ADMIN_ERR;
			}
			val[m++] = *p++;
		}
		p++;
		while (isspace((unsigned char)*p))
			p++;
		if (*p) {
			admin_error(x, "42601", "unexpected text after the value: %.64s", p);
			return ADMIN_ERR;
		}
	} else {
		while (*p && m < sizeof(val) - 1)
			val[m++] = *p++;
	}
	val[m] = 0;
	char err[512];
	if (config_set(x->w->cf, key, val, err, sizeof(err)) < 0) {
		admin_error(x, config_key_unsupported(key) ? "0A000" : "42704", "%s", err);
		return ADMIN_ERR;
	}
	/* As PgBouncer: the value is taken even when TLS cannot be built from it yet (a new key
	 * before its certificate); clients keep the last working TLS setup, and the admin
	 * hears why in a notice and the log. */
	if (!strncasecmp(key, "client_tls", 10) && tls_server_reconfigure(x->w, err, sizeof(err)) < 0) {
		log_error("TLS setup failed: %s; clients keep the previous TLS settings", err);
		char note[600];
		snprintf(note, sizeof(note), "TLS settings could not be applied, still using the old "
			 "configuration: %s", err);
		proto_notice(x->o, "01000", note);
	}
	/* Servers connected under other TLS settings are closed as they come free. */
	if (!strncasecmp(key, "server_tls", 10))
		pool_apply_config(x->w);
	if (!strcmp(key, "verbose") && x->w->cf->verbose > log_verbosity)
		log_verbosity = (int)x->w->cf->verbose;
	log_info("console: SET %s = '%s'", key, val);
	route_write_funcs_update(x->w);
	pool_serve_all(x->w);   /* a larger pool may serve waiters now */
	return ADMIN_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* the control commands' part of the command table */

#define CTRL(name, arg, args, fn, help) { name, arg, args, true, fn, NULL, 0, help }

const struct admin_cmd admin_ctl_cmds[] = {
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
	CTRL("SUSPEND", ARG_NONE, "", cmd_suspend,
	     "hold new transactions and new connections until RESUME (no online restart)"),
	CTRL("RELOAD", ARG_NONE, "", cmd_reload, "re-read the configuration file; reports errors"),
	CTRL("SHUTDOWN", ARG_SHUTDOWN, "[WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]", cmd_shutdown,
	     "exit now, or once servers are released / clients are gone"),
	CTRL("SET", ARG_SET, "key = value", cmd_set, "change a setting marked changeable in SHOW CONFIG"),
};
const size_t admin_ctl_ncmds = sizeof(admin_ctl_cmds) / sizeof(admin_ctl_cmds[0]);
