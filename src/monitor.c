/* monitor.c: polls each backend over libpq (async, on the event loop) for role, WAL LSN and replay lag. */
#include "monitor.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "config.h"
#include "log.h"
#include "worker.h"
#include "pool.h"
#include "pqev.h"

enum mon_phase { MON_IDLE, MON_CONNECTING, MON_QUERY };

struct monitor {
	struct worker *w;
	struct database *db;        /* the backend it polls */
	monitor_report_fn report;   /* where each probe's outcome goes (routing) */
	void *owner;
	PGconn *conn;
	struct pqev ev;             /* its libpq socket and its probe timer */
	uint8_t phase;
	uint64_t probe_start;
	bool dns_wait;              /* a lookup of the backend's host name is under way */
	bool dns_failed;            /* the last one failed: kicks wait for the next interval */
};

/* One query for both roles, so a promoted replica needs no other probe. */
static const char probe_sql[] =
	"SELECT pg_is_in_recovery(), "
	"(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
	"ELSE pg_current_wal_lsn() END)::text, "
	"COALESCE((extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::int8, -1)";

static void on_io(evutil_socket_t fd, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);

static uint64_t interval(const struct monitor *m)
{
	int64_t v = m->w->cf->monitor_interval;
	return v > 0 ? (uint64_t)v : 1000000;
}

/* A probe that takes longer than this counts as a failure: a hung server is a down server. */
static uint64_t probe_timeout(const struct monitor *m)
{
	uint64_t t = 2 * interval(m);
	return t < 2000000 ? 2000000 : t;
}

static void drop_conn(struct monitor *m)
{
	pqev_io_off(&m->ev);
	if (m->conn)
		PQfinish(m->conn);
	m->conn = NULL;
	m->phase = MON_IDLE;
}

static void probe_failed(struct monitor *m, const char *why)
{
	char msg[160];   /* as long as routing keeps (struct backend's last_error) */
	snprintf(msg, sizeof(msg), "%s", why && *why ? why : "unknown error");
	/* libpq's messages end in a newline; the log line should not. */
	size_t n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	drop_conn(m);
	struct monitor_news news = { .up = false, .error = msg };
	m->report(m->owner, &news);
}

static bool parse_lsn(const char *s, uint64_t *out)
{
	unsigned int hi, lo;
	if (!s || sscanf(s, "%X/%X", &hi, &lo) != 2)
		return false;
	*out = ((uint64_t)hi << 32) | lo;
	return true;
}

static void probe_result(struct monitor *m, PGresult *res)
{
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 3) {
		probe_failed(m, PQresultErrorMessage(res));
		return;
	}
	bool recovery = PQgetvalue(res, 0, 0)[0] == 't';
	uint64_t lsn = 0;
	if (!PQgetisnull(res, 0, 1))
		parse_lsn(PQgetvalue(res, 0, 1), &lsn);
	int64_t age_ms = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	struct monitor_news n = { .up = true, .replica = recovery, .lsn = lsn,
				  .lag_ms = recovery ? age_ms : 0 };
	m->report(m->owner, &n);
}

/* One more " key='value'" pair for a conninfo string. */
static void put_pair(FILE *out, const char *key, const char *val)
{
	fputc(' ', out);
	config_put_conninfo_pair(out, key, val);
}

/* Connection string: the entry's own, plus the monitor's credentials where it names none. */
static char *monitor_conninfo(const struct monitor *m)
{
	const struct database *db = m->db;
	const struct cfg_db *e = db->cf;
	const struct config *cf = m->w->cf;
	char *s = NULL;
	size_t n = 0;
	FILE *out = open_memstream(&s, &n);
	if (!out)
		return NULL;
	fputs(e->conninfo ? e->conninfo : "", out);
	if (!e->user && *cf->monitor_user)
		put_pair(out, "user", cf->monitor_user);
	if (!e->password && *cf->monitor_password)
		put_pair(out, "password", cf->monitor_password);
	if (!e->application_name)
		fputs(" application_name='pgmux monitor'", out);
	/* The servers' TLS settings where the entry has none (server_tls_*): the monitor's login,
	 * password included, is protected as the servers' are. */
	if (!e->sslmode)
		put_pair(out, "sslmode", cf->server_tls_sslmode);
	if (!e->sslrootcert && *cf->server_tls_ca_file)
		put_pair(out, "sslrootcert", cf->server_tls_ca_file);
	if (!e->sslcert && *cf->server_tls_cert_file) {
		put_pair(out, "sslcert", cf->server_tls_cert_file);
		put_pair(out, "sslkey", cf->server_tls_key_file);
	}
	/* A name libpq would resolve with a blocking lookup: use the address pgmux resolved. */
	char ip[INET6_ADDRSTRLEN];
	if (db->addr_ok && e->host && e->host[0] != '/') {
		const void *a = NULL;
		if (db->addr.ss_family == AF_INET)
			a = &((const struct sockaddr_in *)&db->addr)->sin_addr;
		else if (db->addr.ss_family == AF_INET6)
			a = &((const struct sockaddr_in6 *)&db->addr)->sin6_addr;
		if (a && inet_ntop(db->addr.ss_family, a, ip, sizeof(ip)))
			put_pair(out, "hostaddr", ip);
	}
	if (fclose(out) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

static void send_probe(struct monitor *m)
{
	if (!PQsendQuery(m->conn, probe_sql)) {
		probe_failed(m, PQerrorMessage(m->conn));
		return;
	}
	m->phase = MON_QUERY;
	int f = PQflush(m->conn);
	if (f < 0) {
		probe_failed(m, PQerrorMessage(m->conn));
		return;
	}
	pqev_wait(&m->ev, m->conn, (short)(EV_READ | EV_PERSIST | (f ? EV_WRITE : 0)));
}

static void start_probe(struct monitor *m)
{
	m->probe_start = worker_now();
	if (m->conn && PQstatus(m->conn) == CONNECTION_OK) {
		send_probe(m);
		return;
	}
	drop_conn(m);
	/* libpq would look a host name up with a blocking call inside PQconnectPoll, stalling every
	 * client of this worker: pgmux's own resolver (evdns) answers first, and the conninfo then
	 * carries the address (monitor_conninfo). */
	struct database *db = m->db;
	if (!db->addr_ok) {
		if (!m->dns_wait)
			pool_resolve(db, m->w);
		if (db->resolving) {
			m->dns_wait = true;   /* look again soon, without starting another lookup */
			pqev_timer(&m->ev, 50000);
			return;
		}
		m->dns_wait = false;
		if (!db->addr_ok) {
			char msg[300];
			snprintf(msg, sizeof(msg), "could not resolve host \"%s\"",
				 db->cf->host ? db->cf->host : "");
			/* A failed lookup also fails the pools, which kick the monitor: without this
			 * the kick would look the name up again at once, round after round. */
			m->dns_failed = true;
			probe_failed(m, msg);
			return;
		}
	}
	m->dns_wait = false;
	m->dns_failed = false;
	char *ci = monitor_conninfo(m);
	if (!ci) {
		probe_failed(m, "out of memory");
		return;
	}
	if (pqev_connect(&m->ev, ci, &m->conn) < 0) {
		probe_failed(m, m->conn ? PQerrorMessage(m->conn) : "out of memory");
		return;
	}
	m->phase = MON_CONNECTING;
}

static void on_connect_io(struct monitor *m)
{
	int rc = pqev_connect_poll(&m->ev, m->conn);
	if (rc > 0)
		send_probe(m);
	else if (rc < 0)
		probe_failed(m, PQerrorMessage(m->conn));
}

static void on_query_io(struct monitor *m, short what)
{
	if (pqev_flush(&m->ev, m->conn, what) < 0) {
		probe_failed(m, PQerrorMessage(m->conn));
		return;
	}
	if (!(what & EV_READ))
		return;
	if (!PQconsumeInput(m->conn)) {
		probe_failed(m, PQerrorMessage(m->conn));
		return;
	}
	PGresult *res, *first = NULL;
	while (!PQisBusy(m->conn) && (res = PQgetResult(m->conn))) {
		if (!first)
			first = res;
		else
			PQclear(res);
	}
	if (PQisBusy(m->conn)) {
		if (first)
			PQclear(first);   /* cannot happen with one statement; be safe */
		return;
	}
	if (!first) {
		probe_failed(m, "no result");
		return;
	}
	m->phase = MON_IDLE;
	pqev_io_off(&m->ev);
	probe_result(m, first);
	PQclear(first);
	/* Between probes the socket is watched for EOF, so a server that stops is seen at
	 * once, not at the next tick. */
	if (m->conn)
		pqev_wait(&m->ev, m->conn, EV_READ | EV_PERSIST);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	struct monitor *m = arg;
	m->w->now = worker_now();
	if (m->phase == MON_CONNECTING) {
		on_connect_io(m);
	} else if (m->phase == MON_QUERY) {
		on_query_io(m, what);
	} else if (m->conn) {
		/* Idle: anything readable is a notice or the end (the server shut down). */
		if (!PQconsumeInput(m->conn) || PQstatus(m->conn) != CONNECTION_OK) {
			probe_failed(m, PQerrorMessage(m->conn));
			return;
		}
		PGresult *res;
		while (!PQisBusy(m->conn) && (res = PQgetResult(m->conn)))
			PQclear(res);
	}
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct monitor *m = arg;
	uint64_t now = worker_now();
	m->w->now = now;
	pqev_timer(&m->ev, interval(m));
	if (m->phase == MON_IDLE)
		start_probe(m);
	else if (now - m->probe_start > probe_timeout(m))
		probe_failed(m, m->phase == MON_CONNECTING ? "monitor connect timed out"
							   : "monitor query timed out");
}

struct monitor *monitor_start(struct worker *w, struct database *db, monitor_report_fn report,
			      void *owner)
{
	struct monitor *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->w = w;
	m->db = db;
	m->report = report;
	m->owner = owner;
	pqev_init(&m->ev, w->base, on_io, on_timer, m);
	pqev_timer(&m->ev, 0);
	return m;
}

void monitor_kick(struct monitor *m)
{
	if (m && m->phase == MON_IDLE && !m->dns_failed) {
		pqev_timer_off(&m->ev);
		pqev_timer(&m->ev, 0);
	}
}

void monitor_stop(struct monitor *m)
{
	if (!m)
		return;
	drop_conn(m);
	pqev_timer_off(&m->ev);
	free(m);
}
