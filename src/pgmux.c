/* pgmux.c: the worker: event loop set-up, listeners, signals, reload, shutdown, cancel keys, reaping. */
#include "pgmux.h"

#include <errno.h>
#include <event2/dns.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "auth_query.h"
#include "hba.h"
#include "client.h"
#include "janitor.h"
#include "log.h"
#include "worker.h"
#include "pool.h"
#include "route.h"
#include "sdnotify.h"
#include "prepared.h"
#include "pwcrypt.h"
#include "sbuf.h"
#include "prom.h"
#include "stats.h"
#include "server.h"
#include "tls.h"
#include "userlist.h"

/* ---- listeners ---- */

/* Sockets the PostgreSQL listener holds beyond max_client_conn: cancel requests and logins
 * still arrive when every client slot is taken. */
#define ACCEPT_SLACK 16

/* A socket over the limit gets its refusal at once, before any startup packet: a fresh
 * socket's send buffer takes the few bytes whole, so a plain non-blocking send does. */
static void refuse_socket(int fd)
{
	struct pktbuf pb = { 0 };
	proto_error(&pb, "FATAL", "53300", "no more connections allowed (max_client_conn)");
	if (!pb.failed)
		(void)!send(fd, pb.data, pb.len, MSG_NOSIGNAL | MSG_DONTWAIT);
	pktbuf_free(&pb);
	/* What already arrived (a startup packet) is read first: closing over unread bytes
	 * sends a reset, which may discard the error before the client reads it. */
	char junk[4096];
	for (int i = 0; i < 4 && recv(fd, junk, sizeof(junk), MSG_DONTWAIT) > 0; i++)
		;
	close(fd);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct worker *w = arg;
	w->now = worker_now();
	/* A bounded batch per wakeup keeps one busy listener from starving the rest. */
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			int err = errno;
			if (err == EAGAIN || err == EWOULDBLOCK)
				return;
			if (worker_accept_transient(err))
				continue;
			/* Out of descriptors or memory (or worse): the pending connection keeps the
			 * listener readable, so stop polling it for a second instead of spinning,
			 * with one log line per pause. */
			log_warn("accept failed: %s; not accepting for 1 s", strerror(err));
			for (int k = 0; k < w->n_listen; k++)
				event_del(&w->lev[k]);
			struct timeval tv = { 1, 0 };
			event_add(&w->ev_accept_retry, &tv);
			return;
		}
		if ((int64_t)w->n_clients >= w->cf->max_client_conn + ACCEPT_SLACK) {
			refuse_socket(fd);
			continue;
		}
		client_accept(w, fd, (struct sockaddr *)&ss, len);
	}
}

static void accept_retry(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	if (w->accepts_held)
		return;   /* SUSPEND: RESUME adds them back */
	for (int k = 0; k < w->n_listen; k++)
		event_add(&w->lev[k], NULL);
}

static int add_listener(struct worker *w, int fd)
{
	if (w->n_listen >= (int)(sizeof(w->lfd) / sizeof(w->lfd[0]))) {
		close(fd);
		return -1;
	}
	int i = w->n_listen++;
	w->lfd[i] = fd;
	event_assign(&w->lev[i], w->base, fd, EV_READ | EV_PERSIST, on_accept, w);
	event_add(&w->lev[i], NULL);
	return 0;
}

static int listen_tcp(struct worker *w, const char *host, int port)
{
	struct addrinfo hints = { 0 }, *res, *ai;
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	int rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, portstr, &hints, &res);
	if (rc != 0) {
		log_error("listen_addr %s: %s", host, gai_strerror(rc));
		return -1;
	}
	int ok = 0;
	for (ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		int on = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, (int)w->cf->listen_backlog) < 0) {
			log_error("could not listen on %s:%d: %s", host, port, strerror(errno));
			close(fd);
			continue;
		}
		if (add_listener(w, fd) == 0)
			ok++;
	}
	freeaddrinfo(res);
	return ok ? 0 : -1;
}

static int listen_unix(struct worker *w, const char *dir, int port)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	int n = snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", dir, port);
	if (n < 0 || (size_t)n >= sizeof(un.sun_path)) {
		log_error("unix_socket_dir is too long");
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* A stale socket file from a crashed run: remove it only if nobody answers on it. */
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0) {
		if (connect(probe, (struct sockaddr *)&un, sizeof(un)) == 0) {
			log_error("%s is in use by another process", un.sun_path);
			close(probe);
			close(fd);
			return -1;
		}
		close(probe);
	}
	unlink(un.sun_path);
	if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(fd, (int)w->cf->listen_backlog) < 0) {
		log_error("could not listen on %s: %s", un.sun_path, strerror(errno));
		close(fd);
		return -1;
	}
	chmod(un.sun_path, (mode_t)w->cf->unix_socket_mode);
	snprintf(w->unix_path, sizeof(w->unix_path), "%s", un.sun_path);
	return add_listener(w, fd);
}

static int start_listening(struct worker *w)
{
	const struct config *cf = w->cf;
	char *addrs = strdup(cf->listen_addr ? cf->listen_addr : "");
	int rc = 0;
	for (char *save = NULL, *tok = strtok_r(addrs, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
		if (listen_tcp(w, tok, (int)cf->listen_port) < 0)
			rc = -1;
	free(addrs);
	if (cf->unix_socket_dir && *cf->unix_socket_dir && listen_unix(w, cf->unix_socket_dir, (int)cf->listen_port) < 0)
		rc = -1;
	if (rc == 0 && w->n_listen == 0) {
		log_error("nothing to listen on: set listen_addr or unix_socket_dir");
		rc = -1;
	}
	w->listening = rc == 0;
	return rc;
}

void pgmux_stop_listening(struct worker *w)
{
	for (int i = 0; i < w->n_listen; i++) {
		event_del(&w->lev[i]);
		close(w->lfd[i]);
	}
	w->n_listen = 0;
	w->listening = false;
	evtimer_del(&w->ev_accept_retry);
	if (w->unix_path[0]) {
		unlink(w->unix_path);
		w->unix_path[0] = 0;
	}
}

static bool is_unix_listener(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	return getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_UNIX;
}

/* Closes the TCP listeners and keeps the Unix socket: during a graceful shutdown an operator
 * on the machine can still reach the console, while the network sees the port closed (so a
 * load balancer or a second instance on the same port takes the new clients). */
static void stop_tcp_listening(struct worker *w)
{
	int kept = 0;
	evtimer_del(&w->ev_accept_retry);
	for (int i = 0; i < w->n_listen; i++) {
		event_del(&w->lev[i]);
		if (!is_unix_listener(w->lfd[i])) {
			close(w->lfd[i]);
			continue;
		}
		/* An added event may not move in memory: the kept one is assigned afresh. */
		w->lfd[kept] = w->lfd[i];
		kept++;
	}
	w->n_listen = kept;
	for (int i = 0; i < kept; i++) {
		event_assign(&w->lev[i], w->base, w->lfd[i], EV_READ | EV_PERSIST, on_accept, w);
		if (!w->accepts_held)
			event_add(&w->lev[i], NULL);
	}
	w->listening = false;
}

/* Clients waiting for a server get none during SHUTDOWN WAIT_FOR_SERVERS: they are told so
 * now rather than left hanging until the process exits under them. */
static void close_waiting_clients(struct worker *w)
{
	struct list *it, *tmp, *c, *ct;
	list_for_each_safe(it, tmp, &w->pools) {
		struct pool *p = list_entry(it, struct pool, node);
		list_for_each_safe(c, ct, &p->cl_waiting)
			client_close(list_entry(c, struct client, node), "server shutting down", "57P01");
		list_for_each_safe(c, ct, &p->cl_waiting_login)
			client_close(list_entry(c, struct client, node), "server shutting down", "57P01");
	}
}

void pgmux_hold_accepts(struct worker *w, bool hold)
{
	if (w->accepts_held == hold)
		return;
	w->accepts_held = hold;
	for (int i = 0; i < w->n_listen; i++) {
		if (hold)
			event_del(&w->lev[i]);
		else
			event_add(&w->lev[i], NULL);
	}
	if (hold)
		evtimer_del(&w->ev_accept_retry);
}

void pgmux_shutdown(struct worker *w, int mode)
{
	if (mode == PGMUX_SHUTDOWN_NOW || w->shutdown == PGMUX_SHUTDOWN_NOW) {
		w->shutdown = PGMUX_SHUTDOWN_NOW;
		event_base_loopbreak(w->base);
		return;
	}
	w->shutdown = mode;
	w->suspended = false;
	pgmux_hold_accepts(w, false);   /* the console must stay reachable */
	stop_tcp_listening(w);
	if (mode == PGMUX_SHUTDOWN_WAIT_SERVERS) {
		/* No server is handed out again; what is linked finishes its transaction. */
		w->paused = true;
		close_waiting_clients(w);
	}
	worker_check_shutdown(w);
}

/* ---- reload ---- */

/* auth_hba_file (read when auth_type = hba, as PgBouncer does) and auth_ident_file; 0 or -1
 * with the reason in err. */
static int load_hba_files(const struct config *cf, struct hba **hba, struct ident **ident,
			  char *err, size_t errlen)
{
	*hba = NULL;
	*ident = NULL;
	if (cf->auth_type == AUTH_HBA) {
		if (!*cf->auth_hba_file) {
			snprintf(err, errlen, "auth_type = hba needs auth_hba_file");
			return -1;
		}
		if (hba_load(cf->auth_hba_file, hba, err, errlen) < 0)
			return -1;
	}
	if (*cf->auth_ident_file && ident_load(cf->auth_ident_file, ident, err, errlen) < 0) {
		hba_free(*hba);
		*hba = NULL;
		return -1;
	}
	return 0;
}

static void swap_hba_files(struct worker *w, struct hba *hba, struct ident *ident)
{
	hba_free(w->hba);
	ident_free(w->ident);
	w->hba = hba;
	w->ident = ident;
}

/* The reload proper; pgmux_reload brackets it for systemd. */
static int reload_config(struct worker *w)
{
	struct config *cf;
	char err[512];
	if (config_load(w->cf_path, &cf, err, sizeof(err)) < 0) {
		log_error("reload failed, keeping the old configuration: %s", err);
		return -1;
	}
	struct userlist *ul = NULL;
	if (cf->auth_file && *cf->auth_file && userlist_load(cf->auth_file, &ul, err, sizeof(err)) < 0) {
		log_error("reload failed, keeping the old configuration: %s", err);
		config_free(cf);
		return -1;
	}
	/* Built before anything is swapped, so a bad certificate leaves the whole old config;
	 * the files are read again even when their names did not change (rotation). */
	struct hba *hba;
	struct ident *ident;
	if (load_hba_files(cf, &hba, &ident, err, sizeof(err)) < 0) {
		log_error("reload failed, keeping the old configuration: %s", err);
		if (ul)
			userlist_free(ul);
		config_free(cf);
		return -1;
	}
	struct tls_server *ts = NULL;
	if (tls_server_new(cf, &ts, err, sizeof(err)) < 0) {
		log_error("TLS setup failed: reload failed, keeping the old configuration: %s", err);
		if (ul)
			userlist_free(ul);
		hba_free(hba);
		ident_free(ident);
		config_free(cf);
		return -1;
	}
	swap_hba_files(w, hba, ident);
	tls_server_free(w->tls_srv);
	w->tls_srv = ts;
	struct config *old = w->cf;
	if (!((old->listen_addr == NULL && cf->listen_addr == NULL) ||
	      (old->listen_addr && cf->listen_addr && strcmp(old->listen_addr, cf->listen_addr) == 0)) ||
	    old->listen_port != cf->listen_port)
		log_warn("listen_addr/listen_port changes need a restart; keeping the old listeners");
	w->cf = cf;
	if (w->ul)
		userlist_free(w->ul);
	w->ul = ul;
	log_verbosity = (int)cf->verbose > log_verbosity ? (int)cf->verbose : log_verbosity;
	log_reopen();
	pool_apply_config(w);
	route_apply_config(w);
	config_free(old);
	log_info("configuration reloaded from %s", w->cf_path);
	return 0;
}

int pgmux_reload(struct worker *w)
{
	/* SIGHUP and the console's RELOAD both come here; systemd hears of both, and READY=1
	 * follows even a failed reload, since the old configuration goes on serving. */
	sdnotify_reloading();
	int rc = reload_config(w);
	sdnotify_ready();
	return rc;
}

/* ---- signals ---- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct worker *w = arg;
	w->now = worker_now();
	switch (sig) {
	case SIGHUP:
		log_info("got SIGHUP, reloading");
		pgmux_reload(w);
		break;
	case SIGINT:
	case SIGTERM: {
		const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
		/* A second one while a shutdown is under way is the operator losing patience:
		 * PgBouncer's rule, an immediate exit. */
		if (w->shutdown) {
			log_info("got %s while shutting down, fast exit", name);
			pgmux_shutdown(w, PGMUX_SHUTDOWN_NOW);
		} else if (sig == SIGINT) {
			log_info("got SIGINT, shutting down, waiting for all servers connections to be released");
			pgmux_shutdown(w, PGMUX_SHUTDOWN_WAIT_SERVERS);
		} else {
			log_info("got SIGTERM, shutting down, waiting for all clients disconnect");
			pgmux_shutdown(w, PGMUX_SHUTDOWN_WAIT_CLIENTS);
		}
		break;
	}
	case SIGQUIT:
		log_info("got SIGQUIT, fast exit");
		pgmux_shutdown(w, PGMUX_SHUTDOWN_NOW);
		break;
	case SIGUSR1:
		log_info("got SIGUSR1, pausing");
		w->paused = true;
		break;
	case SIGUSR2:
		if (w->shutdown) {
			log_info("got SIGUSR2 while shutting down, ignoring");
			break;
		}
		log_info("got SIGUSR2, resuming");
		w->paused = false;
		w->suspended = false;
		pgmux_hold_accepts(w, false);
		pool_serve_all(w);
		break;
	}
	if (w->shutdown)
		sdnotify_stopping();
	worker_check_shutdown(w);
}

int pgmux_worker_init(struct worker *w, struct config *cf, const char *cf_path, struct userlist *ul)
{
	char herr[512];
	if (load_hba_files(cf, &w->hba, &w->ident, herr, sizeof(herr)) < 0) {
		fprintf(stderr, "pgmux: %s\n", herr);
		log_error("%s", herr);
		/* nothing holds them yet: the caller only exits */
		if (ul)
			userlist_free(ul);
		config_free(cf);
		return -1;
	}
	struct event_config *ec = event_config_new();
	event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
	w->base = event_base_new_with_config(ec);
	event_config_free(ec);
	if (!w->base)
		return -1;
	w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (!w->dns)
		w->dns = evdns_base_new(w->base, 0);
	if (w->dns)
		evdns_base_load_hosts(w->dns, NULL);
	w->cf = cf;
	w->ul = ul;
	w->cf_path = realpath(cf_path, NULL);
	if (!w->cf_path)
		w->cf_path = strdup(cf_path);
	list_init(&w->databases);
	list_init(&w->users);
	list_init(&w->pools);
	list_init(&w->rt_parked);
	list_init(&w->cl_login);
	list_init(&w->cl_admin);
	w->bufsize = cf->pkt_buf > SBUF_MIN_SIZE ? (uint32_t)cf->pkt_buf : SBUF_MIN_SIZE;
	w->cancel_mask = 1023;
	w->cancel_tab = calloc(w->cancel_mask + 1, sizeof(*w->cancel_tab));
	if (!w->cancel_tab)
		return -1;
	char err[512];
	if (tls_server_new(cf, &w->tls_srv, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return -1;
	}
	worker_init_base(w);
	evtimer_assign(&w->ev_accept_retry, w->base, accept_retry, w);
	signal(SIGPIPE, SIG_IGN);
	int sigs[] = { SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1 };
	for (int i = 0; i < 5; i++) {
		evsignal_assign(&w->ev_sig[i], w->base, sigs[i], on_signal, w);
		evsignal_add(&w->ev_sig[i], NULL);
	}
	static struct event ev_usr2;
	evsignal_assign(&ev_usr2, w->base, SIGUSR2, on_signal, w);
	evsignal_add(&ev_usr2, NULL);
	static const struct daemon_ops daemon_ops = {
		.reload = pgmux_reload, .shutdown = pgmux_shutdown,
		.hold_accepts = pgmux_hold_accepts,
	};
	w->daemon = &daemon_ops;
	admin_register(w);   /* before the listeners: the first login may be a console's */
	route_register(w);
	if (start_listening(w) < 0)
		return -1;
	pool_open_forced_pools(w);   /* min_pool_size of forced-user entries: filled from the start */
	janitor_start(w);
	route_apply_config(w);
	stats_start(w);
	if (prom_start(w) < 0)
		return -1;
	return 0;
}

int pgmux_run(struct worker *w)
{
	log_info("pgmux %s listening; %d listener(s)", PACKAGE_VERSION, w->n_listen);
	sdnotify_ready();   /* the listeners accept from here on (pgmux_worker_init bound them) */
	event_base_dispatch(w->base);
	sdnotify_stopping();
	stats_stop(w);
	prom_stop(w);
	route_shutdown(w);
	auth_query_shutdown(w);
	swap_hba_files(w, NULL, NULL);
	pgmux_stop_listening(w);
	freelist_clear(&w->buf_free);
	tls_server_free(w->tls_srv);
	w->tls_srv = NULL;
	log_info("shutdown complete");
	return 0;
}
