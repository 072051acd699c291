/* auth_query.c: looks up the secret of a user the auth_file lacks with auth_query, as auth_user on the auth database, over libpq's async API on the event loop. */
#include "auth_query.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "client.h"
#include "config.h"
#include "log.h"
#include "pool.h"
#include "pqev.h"
#include "userlist.h"
#include "worker.h"

/*
 * One libpq connection per (auth database, auth_user, connection string) serves the lookups of
 * every client that needs it, one query at a time, in arrival order.  The user name travels as
 * the query's one parameter ($1) in the extended protocol: it is never put into the SQL text,
 * so no name a client sends can change the statement (PgBouncer's CVE-2025-12819 was such an
 * injection).  Nothing else is sent on the connection (no SET of the client's parameters), so
 * an unauthenticated client cannot steer the query through its session settings either.
 * An idle connection closes after server_idle_timeout.
 */

enum aqc_phase { AQC_RESOLVE, AQC_CONNECTING, AQC_IDLE, AQC_BUSY };

struct aq_state {
	struct list conns;
};

struct aq_conn {
	struct list node;           /* in w->aq->conns */
	struct worker *w;
	char *dbname, *user;        /* the auth database's entry name, auth_user */
	char *conninfo;             /* holds the auth_user's password: wiped before it is freed */
	PGconn *pg;
	struct pqev ev;             /* its libpq socket and its timer */
	bool retired;               /* the configuration changed: no new lookups, close when idle */
	bool dns_started;           /* this connection asked evdns for the host */
	enum aqc_phase phase;
	PGresult *res;              /* the in-flight query's first result, kept until the end of it
				     * (an error comes before the ReadyForQuery that ends it) */
	struct list queue;          /* aq_req; the first is in flight while AQC_BUSY */
};

struct aq_req {
	struct list node;           /* in its conn's queue */
	struct client *cl;          /* NULL once cancelled */
	aq_done_fn done;
	char *query;
	struct aq_conn *conn;
};

static void on_io(evutil_socket_t fd, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);
static void conn_start(struct aq_conn *c);

static void req_free(struct aq_req *r)
{
	free(r->query);
	free(r);
}

static void conn_free(struct aq_conn *c)
{
	pqev_io_off(&c->ev);
	if (c->res)
		PQclear(c->res);
	pqev_timer_off(&c->ev);
	if (c->pg)
		PQfinish(c->pg);
	list_del(&c->node);
	if (c->conninfo) {
		explicit_bzero(c->conninfo, strlen(c->conninfo));
		free(c->conninfo);
	}
	free(c->dbname);
	free(c->user);
	free(c);
}

/* Hands the first request its outcome and takes it off the queue; the callback may close
 * the client (which cancels nothing: the request is no longer queued). */
static void finish_first(struct aq_conn *c, enum aq_status st, const char *secret, const char *msg,
			 const char *sqlstate)
{
	struct aq_req *r = list_entry(list_first(&c->queue), struct aq_req, node);
	list_del(&r->node);
	list_init(&r->node);
	r->conn = NULL;
	if (r->cl)
		r->done(r->cl, st, secret, msg, sqlstate);
	req_free(r);
}

/*
 * The connection failed: every waiting client gets the server's words, as PgBouncer passes a
 * failed server login on to the clients waiting for it.  libpq's text reads "connection to
 * server at ... failed: FATAL:  database "x" does not exist"; the client gets the part after
 * the severity, the log the whole of it.
 */
static void conn_failed(struct aq_conn *c, const char *why)
{
	char full[400], msg[300];
	snprintf(full, sizeof(full), "%s", why && *why ? why : "unknown error");
	size_t n = strlen(full);
	while (n && (full[n - 1] == '\n' || full[n - 1] == ' '))
		full[--n] = '\0';
	const char *sev = strstr(full, "FATAL:  ");
	const char *sqlstate = "08006";
	if (sev) {
		snprintf(msg, sizeof(msg), "%s", sev + 8);
		char *nl = strchr(msg, '\n');
		if (nl)
			*nl = '\0';
		log_warn("auth_query %s/%s: server login failed: FATAL %s", c->dbname, c->user, msg);
		sqlstate = "08P01";
	} else {
		snprintf(msg, sizeof(msg), "%s", full);
		log_warn("auth_query %s/%s: server login failed: %s", c->dbname, c->user, full);
	}
	pqev_io_off(&c->ev);
	if (c->res)
		PQclear(c->res);
	c->res = NULL;
	if (c->pg)
		PQfinish(c->pg);
	c->pg = NULL;
	while (!list_empty(&c->queue))
		finish_first(c, AQ_FAILED, NULL, msg, sqlstate);
	conn_free(c);
}

static void send_next(struct aq_conn *c)
{
	while (!list_empty(&c->queue)) {
		struct aq_req *r = list_entry(list_first(&c->queue), struct aq_req, node);
		if (!r->cl) {   /* cancelled while it waited */
			list_del(&r->node);
			req_free(r);
			continue;
		}
		const char *param = r->cl->user_name;
		if (!PQsendQueryParams(c->pg, r->query, 1, NULL, &param, NULL, NULL, 0)) {
			conn_failed(c, PQerrorMessage(c->pg));
			return;
		}
		c->phase = AQC_BUSY;
		int f = PQflush(c->pg);
		if (f < 0) {
			conn_failed(c, PQerrorMessage(c->pg));
			return;
		}
		pqev_timer_off(&c->ev);
		pqev_wait(&c->ev, c->pg, (short)(EV_READ | EV_PERSIST | (f ? EV_WRITE : 0)));
		return;
	}
	c->phase = AQC_IDLE;
	if (c->retired) {
		conn_free(c);
		return;
	}
	/* Idle: watched for EOF, closed after server_idle_timeout. */
	pqev_wait(&c->ev, c->pg, EV_READ | EV_PERSIST);
	int64_t idle = c->w->cf->server_idle_timeout;
	pqev_timer(&c->ev, idle > 0 ? (uint64_t)idle : 600000000ULL);
}

/* One result of the query: the first row's second column is the secret. */
static void query_result(struct aq_conn *c, PGresult *res)
{
	struct aq_req *r = list_entry(list_first(&c->queue), struct aq_req, node);
	char tag[256];
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		char m[300];
		snprintf(m, sizeof(m), "%s", PQresultErrorMessage(res));
		size_t n = strlen(m);
		while (n && (m[n - 1] == '\n' || m[n - 1] == ' '))
			m[--n] = '\0';
		if (r->cl)
			log_error("%s auth_query failed on %s as %s: %s", client_tag(r->cl, tag, sizeof(tag)),
				  c->dbname, c->user, m);
		finish_first(c, AQ_FAILED, NULL, "bouncer config error", "08P01");
		return;
	}
	if (PQnfields(res) != 2) {
		if (r->cl)
			log_error("%s auth_query must return 2 columns (name, secret), not %d",
				  client_tag(r->cl, tag, sizeof(tag)), PQnfields(res));
		finish_first(c, AQ_FAILED, NULL, "bouncer config error", "08P01");
		return;
	}
	if (PQntuples(res) < 1) {
		finish_first(c, AQ_NO_USER, NULL, NULL, NULL);
		return;
	}
	if (PQgetisnull(res, 0, 0)) {
		if (r->cl)
			log_error("%s auth_query returned a NULL user name", client_tag(r->cl, tag, sizeof(tag)));
		finish_first(c, AQ_FAILED, NULL, "bouncer config error", "08P01");
		return;
	}
	const char *secret = PQgetisnull(res, 0, 1) ? NULL : PQgetvalue(res, 0, 1);
	if (secret && strlen(secret) > USERLIST_MAX_SECRET) {
		if (r->cl)
			log_error("%s auth_query returned a secret over %d bytes",
				  client_tag(r->cl, tag, sizeof(tag)), USERLIST_MAX_SECRET);
		finish_first(c, AQ_FAILED, NULL, "bouncer config error", "08P01");
		return;
	}
	finish_first(c, AQ_FOUND, secret, NULL, NULL);
}

static void on_query_io(struct aq_conn *c, short what)
{
	if (pqev_flush(&c->ev, c->pg, what) < 0) {
		conn_failed(c, PQerrorMessage(c->pg));
		return;
	}
	if (!(what & EV_READ))
		return;
	if (c->phase == AQC_IDLE) {
		/* Nothing was asked, yet the server spoke: it is closing the connection (a restart,
		 * idle_session_timeout, pg_terminate_backend: libpq reads the FATAL as a notice and
		 * sees the end only on a later read), or sent a rare notice.  The connection is not
		 * trusted with another lookup.  Lookups queued meanwhile (their send waits for the
		 * zero timer, which may run before that later read) were never sent: they go to a
		 * fresh connection instead of failing their logins with the old one's end, and c is
		 * never freed under them. */
		pqev_io_off(&c->ev);
		if (list_empty(&c->queue)) {
			conn_free(c);
			return;
		}
		pqev_timer_off(&c->ev);
		PQfinish(c->pg);
		c->pg = NULL;
		c->dns_started = false;
		c->phase = AQC_RESOLVE;   /* on_timer: conn_start, then send_next */
		pqev_timer(&c->ev, 0);
		return;
	}
	bool ok = PQconsumeInput(c->pg) != 0;
	if (!ok) {
		conn_failed(c, PQerrorMessage(c->pg));
		return;
	}
	PGresult *res;
	while (!PQisBusy(c->pg) && (res = PQgetResult(c->pg))) {
		if (!c->res)
			c->res = res;
		else
			PQclear(res);
	}
	if (PQisBusy(c->pg))
		return;
	PGresult *first = c->res;
	c->res = NULL;
	if (!first) {
		conn_failed(c, "no result from auth_query");
		return;
	}
	query_result(c, first);
	/* Wipe the secret libpq holds before the memory goes back. */
	if (PQntuples(first) > 0 && PQnfields(first) == 2 && !PQgetisnull(first, 0, 1))
		explicit_bzero(PQgetvalue(first, 0, 1), (size_t)PQgetlength(first, 0, 1));
	PQclear(first);
	send_next(c);
}

static void on_connect_io(struct aq_conn *c)
{
	int rc = pqev_connect_poll(&c->ev, c->pg);
	if (rc > 0)
		send_next(c);
	else if (rc < 0)
		conn_failed(c, PQerrorMessage(c->pg));
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	struct aq_conn *c = arg;
	c->w->now = worker_now();
	if (c->phase == AQC_CONNECTING)
		on_connect_io(c);
	else
		on_query_io(c, what);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct aq_conn *c = arg;
	c->w->now = worker_now();
	if (c->phase == AQC_RESOLVE)
		conn_start(c);
	else if (c->phase == AQC_IDLE && !list_empty(&c->queue))
		send_next(c);   /* a lookup queued on an idle connection */
	else if (c->phase == AQC_IDLE)
		conn_free(c);   /* idle past server_idle_timeout */
}

/* A host name libpq would resolve with a blocking call: pgmux's resolver (evdns) answers
 * first and the connection string gets the address as hostaddr. */
static bool needs_dns(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return host && host[0] != '/' && inet_pton(AF_INET, host, buf) != 1 &&
	       inet_pton(AF_INET6, host, buf) != 1;
}

/* The connection string: the auth database's entry, then the auth_user and its password. */
static char *make_conninfo(struct worker *w, const struct database *db, const char *user)
{
	const struct cfg_db *e = db->cf;
	char *s = NULL;
	size_t n = 0;
	FILE *out = open_memstream(&s, &n);
	if (!out)
		return NULL;
	fputs(e->conninfo ? e->conninfo : "", out);
	if (!e->dbname) {   /* a "*" entry: the database of the name asked for */
		fputc(' ', out);
		config_put_conninfo_pair(out, "dbname", db->name);
	}
	fputc(' ', out);
	config_put_conninfo_pair(out, "user", user);
	/* The auth_file's password for auth_user, else the entry's when it is for that user.  A
	 * stored md5 or SCRAM secret cannot log libpq in, and must not reach a server that asks
	 * for a cleartext password: none is given, and the server's refusal is logged. */
	const char *pw = w->ul ? userlist_get(w->ul, user) : NULL;
	if (!pw && e->password && e->user && strcmp(e->user, user) == 0)
		pw = e->password;
	if (pw && userlist_secret_kind(pw) != SECRET_PLAIN)
		pw = NULL;
	fputc(' ', out);
	config_put_conninfo_pair(out, "password", pw ? pw : "");
	fputs(" application_name='pgmux auth_query'", out);
	/* The servers' TLS settings where the entry has none (server_tls_*), as the servers' own
	 * logins and the monitor's get them: without them this login, auth_user's password
	 * included, went out with libpq's default (prefer), which anyone on the path can turn
	 * down to plaintext and answer with a cleartext password request. */
	const struct config *cf = w->cf;
	if (!e->sslmode) {
		fputc(' ', out);
		config_put_conninfo_pair(out, "sslmode", cf->server_tls_sslmode);
	}
	if (!e->sslrootcert && *cf->server_tls_ca_file) {
		fputc(' ', out);
		config_put_conninfo_pair(out, "sslrootcert", cf->server_tls_ca_file);
	}
	if (!e->sslcert && *cf->server_tls_cert_file) {
		fputc(' ', out);
		config_put_conninfo_pair(out, "sslcert", cf->server_tls_cert_file);
		fputc(' ', out);
		config_put_conninfo_pair(out, "sslkey", cf->server_tls_key_file);
	}
	/* A host list (host=a,b): the entry new server connections go to now, by name, as the
	 * servers' logins do; one hostaddr beside the whole list is refused by libpq ("could
	 * not match 2 host names to 1 hostaddr values"), which failed every lookup.  A later
	 * key overrides the entry's own. */
	const char *host = e->host;
	if (host && strchr(host, ',') && db->hosts) {
		host = pool_host_name(db, db->host_cur);
		fputc(' ', out);
		config_put_conninfo_pair(out, "host", host);
	}
	char ip[INET6_ADDRSTRLEN];
	if (db->addr_ok && needs_dns(host)) {
		const void *a = NULL;
		if (db->addr.ss_family == AF_INET)
			a = &((const struct sockaddr_in *)&db->addr)->sin_addr;
		else if (db->addr.ss_family == AF_INET6)
			a = &((const struct sockaddr_in6 *)&db->addr)->sin6_addr;
		if (a && inet_ntop(db->addr.ss_family, a, ip, sizeof(ip))) {
			fputc(' ', out);
			config_put_conninfo_pair(out, "hostaddr", ip);
		}
	}
	if (fclose(out) != 0) {
		if (s) {
			explicit_bzero(s, strlen(s));
			free(s);
		}
		return NULL;
	}
	return s;
}

/* Resolves the auth database's host if it must, then starts the connection. */
static void conn_start(struct aq_conn *c)
{
	struct database *db = pool_find_database(c->w, c->dbname);
	if (!db) {
		conn_failed(c, "the authentication database is gone");
		return;
	}
	if (needs_dns(db->cf->host) && !db->addr_ok) {
		if (!db->resolving && !c->dns_started) {
			c->dns_started = true;
			pool_resolve(db, c->w);
		}
		if (db->resolving) {
			c->phase = AQC_RESOLVE;
			pqev_timer(&c->ev, 50000);
			return;
		}
		if (!db->addr_ok) {
			char msg[300];
			snprintf(msg, sizeof(msg), "could not resolve host \"%s\"", db->cf->host);
			conn_failed(c, msg);
			return;
		}
	}
	char *ci = make_conninfo(c->w, db, c->user);
	if (!ci) {
		conn_failed(c, "out of memory");
		return;
	}
	if (pqev_connect(&c->ev, ci, &c->pg) < 0) {
		conn_failed(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
		return;
	}
	c->phase = AQC_CONNECTING;
}

/* The connection for (dbname, user), made when there is none or the old one's settings
 * changed (a reload); NULL when out of memory. */
static struct aq_conn *conn_for(struct worker *w, const char *dbname, const char *user,
				const char *conninfo_now)
{
	if (!w->aq) {
		if (!(w->aq = calloc(1, sizeof(*w->aq))))
			return NULL;
		list_init(&w->aq->conns);
	}
	struct list *it, *tmp;
	list_for_each_safe(it, tmp, &w->aq->conns) {
		struct aq_conn *c = list_entry(it, struct aq_conn, node);
		if (c->retired || strcmp(c->dbname, dbname) != 0 || strcmp(c->user, user) != 0)
			continue;
		if (strcmp(c->conninfo, conninfo_now) == 0)
			return c;
		c->retired = true;
		/* Idle with lookups queued (their send waits for the zero timer): those requests
		 * point at c, so it stays until send_next has answered them and frees it. */
		if (c->phase == AQC_IDLE && list_empty(&c->queue))
			conn_free(c);
	}
	struct aq_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->w = w;
	c->dbname = strdup(dbname);
	c->user = strdup(user);
	c->conninfo = strdup(conninfo_now);
	list_init(&c->queue);
	list_append(&w->aq->conns, &c->node);
	pqev_init(&c->ev, w->base, on_io, on_timer, c);
	if (!c->dbname || !c->user || !c->conninfo) {
		conn_free(c);
		return NULL;
	}
	c->phase = AQC_RESOLVE;
	return c;
}

/* PgBouncer's words for a login its configuration cannot serve; the log says why. */
static void config_error(struct client *cl, const char *why)
{
	char tag[256];
	log_error("%s %s", client_tag(cl, tag, sizeof(tag)), why);
	client_close(cl, "bouncer config error", "08P01");
}

int auth_query_begin(struct client *cl, aq_done_fn done, struct aq_req **req)
{
	struct worker *w = cl->c.w;
	const struct config *cf = w->cf;
	bool console = w->console && w->console->is_console_db(cl->db_name);
	const struct cfg_db *e = console ? NULL : config_find_db(cf, cl->db_name);
	char why[300];
	*req = NULL;
	if (!console && !e)
		return 0;   /* no such database: no lookup, the login fails as an unknown user's */
	const char *user = e && e->auth_user ? e->auth_user : cf->auth_user;
	if (!user || !*user)
		return 0;
	const char *query = e && e->auth_query ? e->auth_query : cf->auth_query;
	const char *authdb = e && e->auth_dbname ? e->auth_dbname : (*cf->auth_dbname ? cf->auth_dbname : NULL);
	if (!authdb)
		authdb = cl->db_name;
	if (config_is_console_name(authdb) || (w->console && w->console->is_console_db(authdb))) {
		snprintf(why, sizeof(why), "cannot use the reserved \"%s\" database as an auth_dbname", authdb);
		config_error(cl, why);
		return -1;
	}
	struct database *db = pool_find_database(w, authdb);
	if (!db) {
		snprintf(why, sizeof(why), "authentication database \"%s\" is not configured.", authdb);
		config_error(cl, why);
		return -1;
	}
	if (db->disabled) {
		snprintf(why, sizeof(why), "authentication database \"%s\" is disabled", authdb);
		client_close(cl, why, "57P03");
		return -1;
	}
	if (db->cluster) {
		snprintf(why, sizeof(why), "authentication database \"%s\" is a [database] section; "
			 "auth_dbname must name a [databases] entry", authdb);
		config_error(cl, why);
		return -1;
	}
	/* The settings the connection would be made with now, to reuse one made with the same. */
	char *ci = make_conninfo(w, db, user);
	struct aq_conn *c = ci ? conn_for(w, authdb, user, ci) : NULL;
	if (ci) {
		explicit_bzero(ci, strlen(ci));
		free(ci);
	}
	struct aq_req *r = c ? calloc(1, sizeof(*r)) : NULL;
	if (r)
		r->query = strdup(query);
	if (!r || !r->query) {
		if (r)
			req_free(r);
		client_close(cl, "out of memory", "53200");
		return -1;
	}
	r->cl = cl;
	r->done = done;
	r->conn = c;
	bool first = list_empty(&c->queue);
	list_append(&c->queue, &r->node);
	*req = r;
	char tag[256];
	log_debug("%s auth_query on %s as %s", client_tag(cl, tag, sizeof(tag)), authdb, user);
	/* Never started from here: a failure would call done before the caller holds *req. */
	if (first && (c->phase == AQC_IDLE || (c->phase == AQC_RESOLVE && !c->dns_started)))
		pqev_timer(&c->ev, 0);
	return 1;
}

void auth_query_cancel(struct aq_req *req)
{
	if (!req)
		return;
	req->cl = NULL;
	/* Queued behind others: dropped now; in flight: dropped when its answer comes. */
	struct aq_conn *c = req->conn;
	if (c && !(c->phase == AQC_BUSY && list_first(&c->queue) == &req->node)) {
		list_del(&req->node);
		req_free(req);
	}
}

void auth_query_shutdown(struct worker *w)
{
	if (!w->aq)
		return;
	while (!list_empty(&w->aq->conns)) {
		struct aq_conn *c = list_entry(list_first(&w->aq->conns), struct aq_conn, node);
		/* Waiting clients are told, so none keeps a handle on a freed request. */
		while (!list_empty(&c->queue))
			finish_first(c, AQ_FAILED, NULL, "pgmux is shutting down", "57P01");
		conn_free(c);
	}
	free(w->aq);
	w->aq = NULL;
}
