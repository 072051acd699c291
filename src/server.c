/* server.c: server connections: non-blocking connect, login as a PostgreSQL client, response tracking. */
#include "server.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <openssl/crypto.h>

#include "auth.h"
#include "client.h"
#include "log.h"
#include "worker.h"
#include "route_types.h"
#include "pool.h"
#include "prepared.h"
#include "pwcrypt.h"
#include "repl.h"
#include "sbuf.h"
#include "tls.h"
#include "txtrack.h"
#include "userlist.h"

enum login_step { LS_CONNECTING, LS_SSL_REPLY, LS_TLS, LS_AUTH, LS_CONNECT_QUERY };

struct server_login {
	struct scram_client scram;
	bool sasl_started, sasl_verified;   /* AuthenticationOk only counts after the server's proof */
	struct pktbuf params;      /* the ParameterStatus messages, for the pool's greeting */
	/* A copy of the plaintext secret for the SCRAM exchange (the userlist may be replaced by a
	 * reload meanwhile); on the heap, up to USERLIST_MAX_SECRET bytes, wiped when freed. */
	char *password;
};

/* A short connection that carries one CancelRequest to a server's postmaster. */
struct cancel_req {
	struct conn c;
	struct server *target;
};

const char *server_tag(const struct server *sv, char *buf, size_t len)
{
	snprintf(buf, len, "S-%llu %s/%s", (unsigned long long)sv->c.id, sv->pool->db->name,
		 sv->pool->user->name);
	return buf;
}

static struct list *server_list(struct server *sv, enum server_state st)
{
	struct pool *p = sv->pool;
	switch (st) {
	case SV_LOGIN: return &p->sv_login;
	case SV_IDLE: return &p->sv_idle;
	case SV_ACTIVE: return &p->sv_active;
	case SV_USED: return &p->sv_used;
	case SV_TESTED: return &p->sv_tested;
	default: return NULL;
	}
}

void server_set_state(struct server *sv, enum server_state st)
{
	if (sv->state == st)
		return;
	/* An idle server is one any client may take: nobody's, and nothing of pgmux's pending. */
	assert(st != SV_IDLE || (!sv->link && sv->tx == 'I' && !sv->internal_z && !sv->c.pkt_left));
	/* A server leaves SV_ACTIVE only unlinked (pool_release, close_internal unlink first). */
	assert(sv->state != SV_ACTIVE || st == SV_FREE || !sv->link);
	if (server_list(sv, sv->state)) {
		list_del(&sv->node);
		sv->pool->n_sv[sv->state]--;
	}
	sv->state = st;
	struct list *l = server_list(sv, st);
	if (l) {
		list_append(l, &sv->node);
		sv->pool->n_sv[st]++;
	}
	if (st == SV_ACTIVE && sv->pool->n_sv[SV_ACTIVE] > sv->pool->peak_active)
		sv->pool->peak_active = sv->pool->n_sv[SV_ACTIVE];
}

static void free_login(struct server *sv)
{
	if (!sv->login)
		return;
	pktbuf_free(&sv->login->params);
	if (sv->login->password) {
		OPENSSL_cleanse(sv->login->password, strlen(sv->login->password));
		free(sv->login->password);
	}
	OPENSSL_cleanse(sv->login, sizeof(*sv->login));
	free(sv->login);
	sv->login = NULL;
}

void server_free(struct server *sv)
{
	free_login(sv);
	ps_server_free(sv);
	varcache_clear(&sv->c.w->vars, &sv->vars);
	free(sv);
}

/* login_failed: a login that did not finish (the pool's retry wait starts); quiet: a failure
 * pool_server_failed reports once per pool, so each server's close is only a debug line. */
static void close_internal(struct server *sv, const char *reason, bool login_failed, bool quiet,
			   const char *sqlstate)
{
	struct pool *p = sv->pool;
	struct worker *w = p->w;
	char tag[256];
	if (sv->c.dead)
		return;
	/* A replication client's own server: its client goes with it (the pair is undone first,
	 * so the client's teardown does not come back here). */
	struct client *owner = sv->repl_for;
	sv->repl_for = NULL;
	if (owner && owner->repl_sv == sv)
		owner->repl_sv = NULL;
	unsigned long long age = (unsigned long long)((w->now > sv->connect_time ? w->now - sv->connect_time : 0) / 1000000u);
	if (login_failed && owner) {
		/* PgBouncer's words; the server's reason has its own line, the pool's other logins
		 * are not judged by it (a missing REPLICATION role fails only these). */
		log_warn("%s replication login failed: %s", server_tag(sv, tag, sizeof(tag)), reason);
		log_info("%s closing because: login failed (age=%llus)", tag, age);
	} else if (quiet) {
		log_debug("%s closing: %s", server_tag(sv, tag, sizeof(tag)), reason);
	} else {
		log_info("%s closing because: %s (age=%llus)", server_tag(sv, tag, sizeof(tag)), reason, age);
	}
	struct client *cl = sv->link;
	if (cl) {
		/* Part of a message of ours reached the client: pgmux's FATAL would complete it. */
		if (sv->c.pkt_left || (sv->c.in && sv->c.in->start != sv->c.in->scan))
			cl->c.torn = true;
		/* Part of one of the client's messages reached the server (the rest unsent, or still
		 * arriving): a Terminate would read as that message's rest (finding 13). */
		if (cl->c.pkt_left || (cl->c.in && cl->c.in->start != cl->c.in->scan))
			sv->c.torn = true;
		cl->link = NULL;
		sv->link = NULL;
		sbuf_link(&sv->c, NULL);
	}
	if (sv->state != SV_LOGIN && sv->c.fd >= 0 && !sv->c.out.len && !sv->c.torn) {
		proto_terminate(&sv->c.out);
		if (sbuf_send_out(&sv->c) < 0)
			log_debug("Terminate not delivered: the socket is gone");   /* closing anyway */
	}
	sbuf_close(&sv->c);
	server_set_state(sv, SV_FREE);
	p->db->n_servers--;
	p->user->n_servers--;
	w->n_servers--;
	free_login(sv);
	if (!sv->cancel_pending)
		worker_reap(w, &sv->c);
	if (sv->ryw_client)
		w->router->lsn_done(sv);
	if (cl && cl->rt && w->router->retry_lost(cl))
		client_on_data(cl);   /* its read goes to another backend */
	else if (cl)
		client_close(cl, "server conn crashed?", "08P01");
	else if (owner && login_failed)
		repl_login_failed(owner, reason, sqlstate);
	else if (owner)
		client_close(owner, "server conn crashed?", "08P01");
	if (login_failed && !sv->replication && pool_host_failed(p->db, sv->host_idx)) {
		/* pool_server_failed, which reports a pool's failures, is not reached while the list
		 * has entries left: say here which entry failed, as PgBouncer logs each attempt */
		log_warn("%s closing because: %s (host %s; trying the next entry)", tag, reason,
			 pool_host_name(p->db, sv->host_idx));
		pool_launch(p);   /* the next entry of the host list, at once */
	}
	else if (login_failed && !sv->replication)
		/* 08006 and no SQLSTATE: unreachable or timed out, not turned down (pool.h) */
		pool_server_failed(p, reason, sqlstate,
				   sqlstate && strcmp(sqlstate, "08006") != 0);
	else
		pool_launch(p);
	worker_check_shutdown(w);
}

void server_close(struct server *sv, const char *reason)
{
	close_internal(sv, reason, sv->state == SV_LOGIN, false, NULL);
}

static void login_failed(struct server *sv, const char *reason, const char *sqlstate)
{
	close_internal(sv, reason, true, true, sqlstate);
}

static int socket_for(const struct sockaddr_storage *a)
{
	int fd = socket(a->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd >= 0 && a->ss_family != AF_UNIX)
		sbuf_set_nodelay(fd);
	return fd;
}

static void arm_write(struct conn *c)
{
	if (!c->wr_on && event_add(&c->ev_write, NULL) == 0)
		c->wr_on = true;
}

static void on_free(struct conn *c)
{
	if (c->kind == CONN_SERVER)
		server_free(container_of(c, struct server, c));
	else
		free(container_of(c, struct cancel_req, c));
}

static const struct sbuf_ops server_ops = {
	.on_data = server_on_data,
	.on_fail = server_on_fail,
	.on_handshake = server_on_handshake,
	.on_writable = server_on_writable,
	.eof_reason = "server closed connection",
	.on_free = on_free,
};

void server_connect(struct pool *p, struct client *repl_for)
{
	struct worker *w = p->w;
	struct database *db = p->db;
	struct server *sv = calloc(1, sizeof(*sv));
	if (!sv)
		return;
	sv->login = calloc(1, sizeof(*sv->login));
	int fd = sv->login && db->addr_ok ? socket_for(&db->addr) : -1;
	if (fd < 0) {
		log_error("could not create a server socket: %s", strerror(errno));
		free(sv->login);
		free(sv);
		return;
	}
	sbuf_init(&sv->c, w, fd, CONN_SERVER, &server_ops);
	list_init(&sv->node);
	sv->pool = p;
	sv->state = SV_FREE;
	sv->tx = 'I';
	sv->connect_time = w->now;
	server_set_state(sv, SV_LOGIN);
	if (repl_for) {
		sv->repl_for = repl_for;
		sv->replication = true;
		repl_for->repl_sv = sv;
	}
	db->n_servers++;
	p->user->n_servers++;
	w->n_servers++;
	p->last_connect_time = sv->connect_time;
	/* The entry of a host list it goes to; the next connection may get another one. */
	sv->host_idx = db->host_cur;
	memcpy(&sv->addr, &db->addr, sizeof(sv->addr));
	sv->addrlen = db->addrlen;
	pool_host_taken(db);
	if (sv->addr.ss_family != AF_UNIX)
		sbuf_set_keepalive(fd, w->cf);

	sv->login_step = LS_CONNECTING;
	if (connect(fd, (struct sockaddr *)&sv->addr, sv->addrlen) < 0 && errno != EINPROGRESS) {
		char msg[300];
		snprintf(msg, sizeof(msg), "connect failed: %s", strerror(errno));
		login_failed(sv, msg, "08006");
		return;
	}
	arm_write(&sv->c);
}

static bool send_startup(struct server *sv)
{
	struct pool *p = sv->pool;
	const struct cfg_db *d = p->db->cf;
	struct pktbuf *o = &sv->c.out;
	pktbuf_begin(o, 0);
	pktbuf_put_u32(o, PROTO_V3);
	pktbuf_put_str(o, "user");
	pktbuf_put_str(o, pool_server_user(p));
	pktbuf_put_str(o, "database");
	pktbuf_put_str(o, pool_server_dbname(p));
	repl_put_startup(sv, o);
	const char *extra[][2] = { { "client_encoding", d->client_encoding }, { "datestyle", d->datestyle },
				   { "timezone", d->timezone }, { "application_name", d->application_name } };
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
		if (extra[i][1] && !repl_client_sets(sv, extra[i][0])) {
			pktbuf_put_str(o, extra[i][0]);
			pktbuf_put_str(o, extra[i][1]);
		}
	}
	pktbuf_put_u8(o, 0);
	pktbuf_end(o);
	sv->login_step = LS_AUTH;
	return sbuf_send_out(&sv->c) >= 0;
}

static void cancel_done(struct cancel_req *cr, const char *why)
{
	struct server *sv = cr->target;
	struct worker *w = cr->c.w;
	if (cr->c.dead)
		return;
	log_debug("cancel request finished: %s", why);
	sbuf_close(&cr->c);
	worker_reap(w, &cr->c);
	if (!sv)
		return;
	cr->target = NULL;
	if (--sv->cancel_pending)
		return;
	if (sv->c.dead)
		worker_reap(w, &sv->c);
	else if (sv->state == SV_USED && !sv->internal_z && !sv->link)
		pool_server_ready(sv);
}

/* "ip:port" of a socket's own end (local) or its peer; "" when unknown or not TCP. */
/* An address as PgBouncer writes it in its log: "host:port", "[v6]:port", or "unix:path". */
static const char *addr_text(const struct sockaddr_storage *a, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *in4 = (const struct sockaddr_in *)a;
		inet_ntop(AF_INET, &in4->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ntohs(in4->sin_port));
	} else if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ntohs(in6->sin6_port));
	} else if (a->ss_family == AF_UNIX) {
		snprintf(buf, len, "unix:%s", ((const struct sockaddr_un *)a)->sun_path);
	} else {
		snprintf(buf, len, "?");
	}
	return buf;
}

/* PgBouncer's line for a connected server socket, which scripts grep:
 * "db/user@host:port new connection to server (from local:port)"; the server's address is
 * the one connected to (a host list's entry, or the Unix socket's path). */
static void log_connected(struct server *sv)
{
	if (!sv->pool->w->cf->log_connections)
		return;
	char tag[256], peer[sizeof(((struct sockaddr_un *)0)->sun_path) + 16], local[128];
	struct sockaddr_storage me;
	socklen_t melen = sizeof(me);
	memset(&me, 0, sizeof(me));
	if (getsockname(sv->c.fd, (struct sockaddr *)&me, &melen) != 0)
		me.ss_family = AF_UNSPEC;
	log_info("%s@%s new connection to server (from %s)", server_tag(sv, tag, sizeof(tag)),
		 addr_text(&sv->addr, peer, sizeof(peer)), addr_text(&me, local, sizeof(local)));
}

bool server_on_writable(struct conn *c)
{
	if (c->kind == CONN_CANCEL) {
		sbuf_resume(c);   /* sent; the postmaster closes when done */
		return true;
	}
	struct server *sv = container_of(c, struct server, c);
	if (sv->state != SV_LOGIN || sv->login_step != LS_CONNECTING)
		return false;
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		char msg[300];
		snprintf(msg, sizeof(msg), "connect failed: %s", strerror(err));
		login_failed(sv, msg, "08006");
		return true;
	}
	log_connected(sv);
	/* As libpq: TLS is asked for over TCP unless sslmode is disable or allow. */
	enum tls_mode mode = tls_db_mode(sv->pool->db);
	if (mode >= TLS_PREFER && sv->addr.ss_family != AF_UNIX) {
		pktbuf_begin(&c->out, 0);
		pktbuf_put_u32(&c->out, PROTO_SSL_CODE);
		pktbuf_end(&c->out);
		sv->login_step = LS_SSL_REPLY;
		if (sbuf_send_out(c) < 0) {
			login_failed(sv, "could not send SSLRequest", "08006");
			return true;
		}
	} else if (!send_startup(sv)) {
		login_failed(sv, "could not send startup packet", "08006");
		return true;
	}
	sbuf_resume(c);
	return true;
}

/* The one-byte answer to SSLRequest. */
static void ssl_reply(struct server *sv)
{
	struct conn *c = &sv->c;
	struct iobuf *b = c->in;
	if (!b || b->end == b->scan)
		return;
	char r = (char)b->data[b->scan];
	enum tls_mode mode = tls_db_mode(sv->pool->db);
	if (r == 'S') {
		if (b->end - b->scan != 1) {
			/* Bytes before the handshake would be trusted as if encrypted (CVE-2021-23222). */
			login_failed(sv, "received unencrypted data after SSL response", "08P01");
			return;
		}
		sbuf_discard_in(c);
		char err[300];
		if (tls_client_start(c, sv->pool->db, pool_host_name(sv->pool->db, sv->host_idx), err,
				     sizeof(err)) < 0) {
			login_failed(sv, err, "08006");
			return;
		}
		sv->login_step = LS_TLS;
		c->handshaking = true;
		server_on_handshake(c);
		return;
	}
	if (r == 'N') {
		b->scan++;
		b->start = b->scan;
		if (mode >= TLS_REQUIRE) {
			login_failed(sv, "server does not support SSL, but SSL was required", "08001");
			return;
		}
		if (!send_startup(sv))
			login_failed(sv, "could not send startup packet", "08006");
		return;
	}
	login_failed(sv, "unexpected answer to SSLRequest", "08P01");
}

void server_on_handshake(struct conn *c)
{
	struct server *sv = container_of(c, struct server, c);
	if (c->wr_on) {
		event_del(&c->ev_write);
		c->wr_on = false;
	}
	char err[300];
	int r = tls_handshake(c, err, sizeof(err));
	if (r == 0)
		return;
	if (r < 0) {
		login_failed(sv, err, "08006");
		return;
	}
	c->handshaking = false;
	if (!send_startup(sv)) {
		login_failed(sv, "could not send startup packet", "08006");
		return;
	}
	sbuf_resume(c);
}

void server_on_fail(struct conn *c, const char *reason)
{
	if (c->kind == CONN_CANCEL) {
		cancel_done(container_of(c, struct cancel_req, c), reason);
		return;
	}
	struct server *sv = container_of(c, struct server, c);
	if (sv->state == SV_LOGIN) {
		char msg[300];
		snprintf(msg, sizeof(msg), "server login failed: %s", reason);
		login_failed(sv, msg, "08006");
	} else {
		server_close(sv, reason);
	}
}

void server_cancel(struct server *sv)
{
	struct worker *w = sv->pool->w;
	struct cancel_req *cr = calloc(1, sizeof(*cr));
	int fd = cr ? socket_for(&sv->addr) : -1;
	if (fd < 0) {
		free(cr);
		log_error("could not open a cancel connection: %s", strerror(errno));
		return;
	}
	sbuf_init(&cr->c, w, fd, CONN_CANCEL, &server_ops);
	cr->target = sv;
	sv->cancel_pending++;
	proto_cancel_request(&cr->c.out, sv->be_pid, sv->be_key);
	/* the host its backend is on, which with a host list may not be the current entry */
	if (connect(fd, (struct sockaddr *)&sv->addr, sv->addrlen) < 0 && errno != EINPROGRESS) {
		cancel_done(cr, strerror(errno));
		return;
	}
	arm_write(&cr->c);
}

bool server_send_internal(struct server *sv, const char *sql)
{
	proto_query(&sv->c.out, sql);
	sv->internal_z++;
	return sbuf_send_out(&sv->c) >= 0;
}

/* ---- login ---- */

static bool send_password_msg(struct server *sv, const void *data, size_t len)
{
	struct pktbuf *o = &sv->c.out;
	pktbuf_begin(o, 'p');
	pktbuf_put(o, data, len);
	pktbuf_end(o);
	return sbuf_send_out(&sv->c) >= 0;
}

static bool login_auth(struct server *sv, const uint8_t *body, uint32_t len)
{
	struct pool *p = sv->pool;
	struct server_login *lg = sv->login;
	if (len < 4) {
		login_failed(sv, "invalid authentication request from server", "08P01");
		return false;
	}
	uint32_t code = proto_get32(body);
	const char *secret = auth_server_secret(p);
	enum secret_kind kind = secret ? userlist_secret_kind(secret) : SECRET_NONE;
	const char *user = pool_server_user(p);
	char msg[200];

	switch (code) {
	case 0:
		if (lg->sasl_started && !lg->sasl_verified) {
			login_failed(sv, "server skipped the SCRAM server signature", "28000");
			return false;
		}
		return true;
	case 3:
		if (kind != SECRET_PLAIN) {
			login_failed(sv, "server asks for a cleartext password, but pgmux has none for this user",
				     "28P01");
			return false;
		}
		return send_password_msg(sv, secret, strlen(secret) + 1);
	case 5: {
		if (len < 8 || (kind != SECRET_PLAIN && kind != SECRET_MD5)) {
			login_failed(sv, "server asks for md5, but pgmux has no password or md5 secret for this user",
				     "28P01");
			return false;
		}
		char md5sec[PWCRYPT_MD5_LEN + 1], resp[PWCRYPT_MD5_LEN + 1];
		if (kind == SECRET_PLAIN) {
			pwcrypt_md5_secret(secret, user, md5sec);
			secret = md5sec;
		}
		pwcrypt_md5_response(secret, body + 4, resp);
		return send_password_msg(sv, resp, sizeof(resp));
	}
	case 10: {
		bool has_scram = false;
		const uint8_t *q = body + 4, *end = body + len;
		const char *mech;
		while ((mech = proto_get_str(&q, end)) && *mech)
			if (strcmp(mech, "SCRAM-SHA-256") == 0)
				has_scram = true;
		if (!has_scram) {
			login_failed(sv, "server offers no SASL mechanism pgmux supports", "28000");
			return false;
		}
		if (kind == SECRET_PLAIN) {
			/* Whole, never cut short: a truncated password would just fail the login. */
			if (!lg->password && !(lg->password = strdup(secret))) {
				login_failed(sv, "out of memory", "53200");
				return false;
			}
			lg->scram.password = lg->password;
		} else if (kind == SECRET_SCRAM && p->have_scram_keys) {
			struct scram_secret ss;
			if (!scram_parse_secret(secret, &ss)) {
				login_failed(sv, "invalid SCRAM secret in auth_file", "28000");
				return false;
			}
			lg->scram.have_keys = true;
			memcpy(lg->scram.client_key, p->scram_client_key, SCRAM_KEY_LEN);
			memcpy(lg->scram.server_key, ss.server_key, SCRAM_KEY_LEN);
			memcpy(lg->scram.key_salt, ss.salt, (size_t)ss.salt_len);
			lg->scram.key_salt_len = ss.salt_len;
			lg->scram.key_iterations = ss.iterations;
		} else {
			login_failed(sv, kind == SECRET_SCRAM
					 ? "wrong password type: SCRAM pass-through needs a client to log in with SCRAM first"
					 : "wrong password type: server asks for SCRAM, but pgmux has no password for this user",
				     "28P01");
			return false;
		}
		char out[256];
		size_t outlen;
		lg->sasl_started = true;
		if (scram_client_first(&lg->scram, out, sizeof(out), &outlen) < 0) {
			login_failed(sv, "SCRAM client-first failed", "28000");
			return false;
		}
		struct pktbuf *o = &sv->c.out;
		pktbuf_begin(o, 'p');
		pktbuf_put_str(o, "SCRAM-SHA-256");
		pktbuf_put_u32(o, (uint32_t)outlen);
		pktbuf_put(o, out, outlen);
		pktbuf_end(o);
		return sbuf_send_out(&sv->c) >= 0;
	}
	case 11: {
		char out[512], err[128];
		size_t outlen;
		if (scram_client_final(&lg->scram, (const char *)body + 4, len - 4, out, sizeof(out), &outlen,
				       err, sizeof(err)) < 0) {
			snprintf(msg, sizeof(msg), "SCRAM exchange with server failed: %s", err);
			login_failed(sv, msg, "28000");
			return false;
		}
		return send_password_msg(sv, out, outlen);
	}
	case 12: {
		char err[128];
		if (scram_client_verify(&lg->scram, (const char *)body + 4, len - 4, err, sizeof(err)) < 0) {
			snprintf(msg, sizeof(msg), "server's SCRAM signature is wrong: %s", err);
			login_failed(sv, msg, "28000");
			return false;
		}
		lg->sasl_verified = true;
		return true;
	}
	default:
		snprintf(msg, sizeof(msg), "server asks for unsupported authentication method %u", code);
		login_failed(sv, msg, "28000");
		return false;
	}
}

static void track_param(struct server *sv, const uint8_t *body, uint32_t len)
{
	const uint8_t *q = body, *end = body + len;
	const char *k = proto_get_str(&q, end);
	const char *v = k ? proto_get_str(&q, end) : NULL;
	if (!v)
		return;
	int id = varcache_lookup(k);
	if (id < 0)
		return;
	varcache_set(&sv->c.w->vars, &sv->vars, id, v);
	if (sv->link)
		varcache_set(&sv->c.w->vars, &sv->link->vars, id, v);
}

/* The SETs pgmux sent for the linked client (varcache_apply) succeeded.  PostgreSQL 14 and
 * later report a parameter only when its value changes, so one the server did not report
 * already had the value asked for, in the server's spelling: the client takes that spelling
 * ("ISO" becomes "ISO, MDY"), and the next link compares equal instead of sending the same
 * SET again. */
static void settle_client_vars(struct server *sv)
{
	struct client *cl = sv->link;
	char tag[256];
	for (int i = 0; i < VAR_COUNT; i++) {
		const char *want = varcache_get(&cl->vars, i), *have = varcache_get(&sv->vars, i);
		if (!want || !have || cl->vars.val[i] == sv->vars.val[i])
			continue;
		if (log_enabled(LOG_L_NOISE))
			log_noise("%s varcache_set_canonical: setting %s to its canonical version %s -> %s",
				  client_tag(cl, tag, sizeof(tag)), varcache_name(i), want, have);
		varcache_set(&sv->c.w->vars, &cl->vars, i, have);
	}
}

/* Logged once a server login completes, in PgBouncer's words with the local address the
 * connection came from (with a host list, which host answered shows in the tag). */
static void login_done(struct server *sv)
{
	struct pool *p = sv->pool;
	p->db->host_fails = 0;
	if (sv->repl_for) {
		/* Neither the pool's greeting nor connect_query: the session is the client's alone
		 * (a physical walsender runs no SQL). */
		if (log_enabled(LOG_L_DEBUG)) {
			char tag[256];
			log_debug("%s replication server login ok", server_tag(sv, tag, sizeof(tag)));
		}
		repl_server_ready(sv, &sv->login->params);
		free_login(sv);
		return;
	}
	if (!p->welcome_ok) {
		p->welcome = sv->login->params;
		memset(&sv->login->params, 0, sizeof(sv->login->params));
		for (int i = 0; i < VAR_COUNT; i++)
			if (sv->vars.val[i])
				varcache_set(&p->w->vars, &p->defaults, i, varcache_get(&sv->vars, i));
		p->welcome_ok = true;
	}
	free_login(sv);
	const char *cq = p->db->cf->connect_query;
	if (cq && *cq) {
		sv->login_step = LS_CONNECT_QUERY;
		if (!server_send_internal(sv, cq))
			login_failed(sv, "could not send connect_query", "08006");
		return;
	}
	if (log_enabled(LOG_L_DEBUG)) {
		char tag[256];
		log_debug("%s server login ok", server_tag(sv, tag, sizeof(tag)));
	}
	p->last_connect_failed = false;
	p->error_logged = false;
	pool_server_ready(sv);
}

/* Whole messages only: login traffic is small and must be read completely. */
static void login_loop(struct server *sv)
{
	struct conn *c = &sv->c;
	while (!c->dead && sv->state == SV_LOGIN && sv->login_step == LS_AUTH && c->in) {
		struct iobuf *b = c->in;
		uint32_t avail = b->end - b->scan;
		if (avail < PROTO_HDR)
			break;
		char type = (char)b->data[b->scan];
		uint32_t len = proto_get32(b->data + b->scan + 1);
		if (len < 4 || len + 1 > c->w->bufsize) {
			login_failed(sv, "invalid message from server during login", "08P01");
			return;
		}
		if (avail < len + 1)
			break;
		const uint8_t *body = b->data + b->scan + PROTO_HDR;
		uint32_t blen = len - 4;
		b->scan += len + 1;
		b->start = b->scan;
		switch (type) {
		case 'R':
			if (!login_auth(sv, body, blen))
				return;
			break;
		case 'S':
			track_param(sv, body, blen);
			pktbuf_put(&sv->login->params, body - PROTO_HDR, len + 1);
			break;
		case 'K':
			if (blen >= 8) {
				sv->be_pid = proto_get32(body);
				sv->be_key = proto_get32(body + 4);
			}
			break;
		case 'E': {
			char msg[300];
			const char *m = proto_error_field(body, blen, 'M');
			const char *code = proto_error_field(body, blen, 'C');
			/* A server's error without a message or a valid SQLSTATE is still an error: the
			 * client and the log get words for it. */
			bool code_ok = strlen(code) == 5 && strspn(code, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 5;
			if (*m) {
				/* PgBouncer's line, which operators grep for: the severity, then the
				 * server's words (the client gets the words alone). */
				const char *sev = proto_error_field(body, blen, 'S');
				char tag[256];
				log_warn("%s server login failed: %s %s", server_tag(sv, tag, sizeof(tag)),
					 *sev ? sev : "ERROR", m);
				snprintf(msg, sizeof(msg), "%s", m);
			} else
				snprintf(msg, sizeof(msg), "server refused the login with an error that has no "
					 "message (SQLSTATE %s)", code_ok ? code : "missing");
			/* Not quiet: PgBouncer logs the server's close with the server's words as the
			 * reason, and operators count those lines. */
			close_internal(sv, msg, true, false, code_ok ? code : "08P01");
			return;
		}
		case 'Z':
			sv->tx = blen ? (char)body[0] : 'I';
			if (sv->tx != 'I') {
				/* a fresh session is idle: anything else is a broken or hostile server,
				 * and must not be handed to a client */
				login_failed(sv, "server not idle after login", "08P01");
				return;
			}
			login_done(sv);
			break;
		case 'N':
		case 'v':
			break;
		default:
			login_failed(sv, "unexpected message from server during login", "08P01");
			return;
		}
	}
	if (!c->dead)
		sbuf_release_buf(c);
}

/* ---- after login ---- */

/* pgmux's own query finished (reset, check, SET, connect_query). */
static void internal_done(struct server *sv)
{
	if (sv->link) {
		settle_client_vars(sv);
		return;   /* SETs ahead of a client's query: its traffic follows */
	}
	if (sv->close_when_idle) {
		/* its last client left it in a state no other client may inherit */
		server_close(sv, "client disconnected mid-transaction or server marked for close");
		return;
	}
	if (sv->ryw_client)
		sv->c.w->router->lsn_done(sv);
	if (sv->cancel_pending) {
		server_set_state(sv, SV_USED);
		return;
	}
	if (sv->state == SV_TESTED) {
		sv->last_check = worker_now();
		server_set_state(sv, SV_IDLE);
		pool_serve_waiters(sv->pool);
	} else if (sv->state == SV_LOGIN) {
		char tag[256];
		if (log_enabled(LOG_L_DEBUG))
			log_debug("%s server login ok (connect_query done)", server_tag(sv, tag, sizeof(tag)));
		sv->pool->last_connect_failed = false;
		sv->pool->error_logged = false;
		pool_server_ready(sv);
	} else {
		pool_server_ready(sv);
	}
}

/* What a message pgmux swallowed asks of it, once the message is out of the buffer: acting
 * may hand the server on or close a client, which runs other loops over this very buffer. */
enum swallow_act {
	SW_NONE,
	SW_DONE,         /* pgmux's own query finished: internal_done */
	SW_CLOSE,        /* close the server (the reason is in msg) */
	SW_REFUSED,      /* the linked client's session parameter was refused (msg) */
};

/* Reads a message nobody else gets (pgmux's own queries, an idle server): records what it
 * says and returns what to do about it, touching nothing beyond the server's own fields. */
static enum swallow_act swallow(struct server *sv, char type, const uint8_t *body, uint32_t blen,
				char *msg, size_t msz)
{
	char tag[256];
	switch (type) {
	case 'S':
		track_param(sv, body, blen);
		return SW_NONE;
	case 'D':
		if (sv->ryw_client)
			sv->c.w->router->lsn_row(sv, body, blen);
		return SW_NONE;
	case 'E':
		if (sv->ryw_client) {
			log_warn("%s commit LSN query failed: %s", server_tag(sv, tag, sizeof(tag)),
				 proto_error_field(body, blen, 'M'));
		} else if (sv->internal_z && sv->link) {
			/* A client's session parameter the server refuses (a bad TimeZone, say): the
			 * client cannot run as it asked, so it gets the server's error. */
			snprintf(msg, msz, "invalid server parameter: %s", proto_error_field(body, blen, 'M'));
			return SW_REFUSED;
		} else if (sv->internal_z) {
			log_warn("%s pgmux's own query failed: %s", server_tag(sv, tag, sizeof(tag)),
				 proto_error_field(body, blen, 'M'));
		} else {
			log_warn("%s error from idle server: %s", server_tag(sv, tag, sizeof(tag)),
				 proto_error_field(body, blen, 'M'));
			snprintf(msg, msz, "server sent an error while idle");
			return SW_CLOSE;
		}
		return SW_NONE;
	case 'Z':
		if (!sv->internal_z)
			return SW_NONE;
		sv->tx = blen ? (char)body[0] : 'I';
		if (--sv->internal_z == 0 && sv->tx == 'I')
			return SW_DONE;
		if (sv->tx != 'I' && !sv->link) {
			/* Linked, 'T' is the BEGIN a routed client's transaction started with. */
			snprintf(msg, msz, "pgmux's own query left a transaction open");
			return SW_CLOSE;
		}
		return SW_NONE;
	default:
		return SW_NONE;
	}
}

/* The client owes nothing and is owed nothing (txtrack); bytes still on their way are
 * conn_drained's business: a release is owed until then. */
static inline bool client_settled(const struct client *cl)
{
	return txtrack_settled(&cl->tt);
}

/* No parsed byte of c waits to go to its peer: what went out ended at a message boundary. */
static bool conn_drained(const struct conn *c)
{
	return c->pkt_left == 0 && (!c->in || c->in->start == c->in->scan);
}

bool server_link_settled(const struct server *sv)
{
	const struct client *cl = sv->link;
	return cl && sv->tx == 'I' && client_settled(cl) && conn_drained(&cl->c) &&
	       conn_drained(&sv->c);
}

/* A release is due (transaction or statement mode, the server said it is idle): hands the
 * server back now if every byte of the exchange is out, else keeps it owed (ready_notified)
 * until the side still sending has drained (server_release_owed). */
static bool try_release(struct server *sv)
{
	struct client *cl = sv->link;
	sv->ready_notified = false;
	if (!cl || sv->c.dead)
		return false;
	if (!server_link_settled(sv)) {
		/* Only bytes still on their way: owed, released once they are out.  Otherwise more
		 * was asked meanwhile, and the next ReadyForQuery decides. */
		if (sv->tx == 'I' && client_settled(cl))
			sv->ready_notified = true;
		return false;
	}
	pool_release(sv, false);
	if (cl->rt)
		sv->c.w->router->released(cl);
	return true;
}

bool server_release_owed(struct server *sv)
{
	return sv->ready_notified && sv->link && try_release(sv);
}

/* Gathering a server message pgmux reads: 1 it is whole in the buffer, 0 wait for more (the
 * buffer has room for it now), -1 larger than pgmux reads (max_client_memory). */
static int server_need(struct server *sv, uint32_t need)
{
	struct iobuf *b = sv->c.in;
	if (b->end - b->scan >= need)
		return 1;
	struct worker *w = sv->c.w;
	if (need > w->bufsize && need > (uint64_t)w->cf->max_client_memory)
		return -1;
	return sbuf_reserve(&sv->c, need) ? 0 : -1;
}

/* Messages with a fixed length: anything else is a broken or hostile server. */
static bool bad_fixed_len(char type, uint32_t len)
{
	switch (type) {
	case 'Z': return len != 5;
	case '1': case '2': case '3': case 'n': case 'I': case 's': case 'c': return len != 4;
	case 'K': return len != 12;
	default: return false;
	}
}

/* Server messages pgmux reads while a client is linked (beyond Z and S, always read): what
 * statement tracking, a retry and a fan-out look at. */
static bool reads_type(const struct server *sv, const struct client *cl, char type)
{
	switch (type) {
	case 'Z': case 'S':
		return true;
	case 'C':
		return true;   /* a few bytes; its tag says DISCARD ALL, PREPARE, the row count */
	case 'E':
		return sv->ps_active || route_reads_whole(cl, type);
	case 'T': case 't': case 'D':
		return route_reads_whole(cl, type);
	default:
		return false;
	}
}

static void forward_loop(struct server *sv)
{
	struct conn *c = &sv->c;
	struct iobuf *b = c->in;
	bool release = false;
	/* everything before this call reached the client whole: what is parsed now is whole
	 * messages the client has none of */
	bool at_boundary = c->pkt_left == 0 && (!b || b->start == b->scan);

	while (b && b->scan < b->end && !c->dead) {
		if (c->pkt_left) {
			uint32_t n = b->end - b->scan;
			if (n > c->pkt_left)
				n = c->pkt_left;
			b->scan += n;
			c->pkt_left -= n;
			continue;
		}
		uint32_t avail = b->end - b->scan;
		if (avail < PROTO_HDR)
			break;
		const uint8_t *h = b->data + b->scan;
		char type = (char)h[0];
		uint32_t len = proto_get32(h + 1);
		if (len < 4 || len > 0x7fffffffu || bad_fixed_len(type, len)) {
			server_close(sv, "invalid message length from server");
			return;
		}
		struct client *cl = sv->link;
		bool whole = avail >= len + 1;
		if (sv->internal_z || !cl) {
			/* Nobody to forward to: read it whole, act on it, drop it. */
			int g = server_need(sv, len + 1);
			if (g < 0) {
				server_close(sv, "oversized message from server outside a client query");
				return;
			}
			if (g == 0)
				break;
			b = c->in;
			h = b->data + b->scan;
			char msg[300];
			enum swallow_act act = swallow(sv, type, h + PROTO_HDR, len - 4, msg, sizeof(msg));
			sbuf_drop(c, b->scan, len + 1);
			if (act == SW_NONE)
				continue;
			if (act == SW_CLOSE) {
				server_close(sv, msg);
				return;
			}
			if (act == SW_REFUSED) {
				/* The client's query follows the refused SET: the server cannot be handed
				 * on before it has answered, which it does to nobody (close_when_idle). */
				sv->close_when_idle = true;
				client_close(sv->link, msg, "22023");
				return;
			}
			/* Handing the server on runs the next client's loop, which may write into this
			 * buffer (pgmux's own answers): read the buffer afresh afterwards. */
			internal_done(sv);
			b = c->in;
			continue;
		}
		if (!whole && reads_type(sv, cl, type)) {
			int g = server_need(sv, len + 1);
			if (g == 0)
				break;
			b = c->in;
			h = b->data + b->scan;
			avail = b->end - b->scan;
			whole = g > 0;
			if (!whole && (type == 'Z' || type == 'S')) {
				server_close(sv, "oversized message from server");
				return;
			}
		}
		if (route_watches_server(cl)) {
			enum hook_rc r = sv->c.w->router->on_server_message(sv, type, len, whole);
			if (r != HOOK_FORWARD) {
				if (r == HOOK_STOP)
					return;
				if (r == HOOK_WAIT)
					break;
				if (r == HOOK_RELEASE) {
					release = true;
					goto flush;
				}
				b = c->in;
				continue;
			}
		}
		log_noise("S-%llu <- %c len %u expect_z %u", (unsigned long long)c->id, type, len, cl->tt.expect_z);
		if (sv->ps_active) {
			enum hook_rc r = ps_server_message(sv, type, h + PROTO_HDR, len - 4, whole);
			if (r == HOOK_STOP || c->dead)
				return;
			if (r == HOOK_WAIT)
				goto flush;
			if (r == HOOK_CONSUMED) {
				b = c->in;
				continue;
			}
		}
		switch (type) {
		case 'Z': {
			char tx = (char)h[PROTO_HDR];
			sv->tx = tx;
			if (txtrack_ready(&cl->tt)) {
				struct pool *p = sv->pool;
				uint64_t now = c->w->now;
				cl->last_active = now;
				p->query_time += now - cl->query_start;
				hist_add(&p->h_query, now - cl->query_start);
				if (tx == 'I' && !cl->tt.sync_pending) {
					p->xact_count++;
					p->xact_time += now - cl->xact_start;
					hist_add(&p->h_xact, now - cl->xact_start);
				}
			}
			b->scan += len + 1;
			if (client_settled(cl)) {
				/* a replication link is its client's for the whole session */
				int mode = sv->replication ? POOL_SESSION : pool_mode(sv->pool);
				if (mode == POOL_STATEMENT && tx != 'I') {
					sv->close_when_idle = true;
					/* The error takes the place of the BEGIN's answer (as PgBouncer does),
					 * when that answer is whole messages the client has none of yet. */
					if (at_boundary)
						b->start = b->scan;
					client_close(cl, "transaction blocks not allowed in statement pooling mode", "08P01");
					return;
				}
				if (tx == 'I' && mode != POOL_SESSION) {
					release = true;
					goto flush;
				}
			}
			continue;
		}
		case 'S':
			track_param(sv, h + PROTO_HDR, len - 4);
			break;
		case 'C':
			/* An SQL-level PREPARE leaves a statement on the server that no other client
			 * may see (PostgreSQL keys it by a name the client chose): once this client
			 * lets the server go, it is closed, not pooled.  The client's own later
			 * EXECUTE then fails plainly (26000), as PgBouncer's docs warn it may. */
			if (whole && len - 4 == 8 && memcmp(h + PROTO_HDR, "PREPARE", 8) == 0 &&
			    pool_mode(sv->pool) != POOL_SESSION && !sv->close_when_idle) {
				sv->close_when_idle = true;
				char tag[256];
				log_info("%s SQL PREPARE in %s pooling: closing this server once released",
					 server_tag(sv, tag, sizeof(tag)),
					 pool_mode(sv->pool) == POOL_STATEMENT ? "statement" : "transaction");
			}
			txtrack_server(&cl->tt, type);
			break;
		case 'G':
		case 'W':
		case 'E':
			txtrack_server(&cl->tt, type);
			break;
		default:
			break;
		}
		if (whole) {
			b->scan += len + 1;
		} else {
			b->scan = b->end;
			c->pkt_left = len + 1 - avail;
		}
	}
	if (sv->ps_active && sv->link && !c->dead && ps_emit(sv) == HOOK_STOP)
		return;
flush:
	if (c->dead)
		return;
	b = c->in;
	struct client *cl = sv->link;
	if (cl) {
		if (b) {
			sv->pool->bytes_sent += b->scan - b->start;
			if (!sbuf_flush(c)) {
				/* The client is full: release once it has drained (sbuf re-enters here). */
				if (release && !c->dead && sv->link == cl)
					sv->ready_notified = true;
				return;
			}
		}
		if ((release || sv->ready_notified) && sv->link == cl && !c->dead)
			try_release(sv);
	} else {
		sbuf_release_buf(c);
	}
}

void server_drain_unlinked(struct server *sv)
{
	if (!sv->c.dead && !sv->link && sbuf_unparsed(&sv->c))
		forward_loop(sv);
}

void server_on_data(struct conn *c)
{
	if (c->kind == CONN_CANCEL) {
		/* The postmaster sends nothing back; any byte or EOF means it is done. */
		struct cancel_req *cr = container_of(c, struct cancel_req, c);
		sbuf_discard_in(c);
		cancel_done(cr, "answered");
		return;
	}
	struct server *sv = container_of(c, struct server, c);
	if (c->dead)
		return;
	if (sv->state == SV_LOGIN && sv->login_step == LS_SSL_REPLY) {
		ssl_reply(sv);
		if (c->dead || sv->login_step != LS_AUTH)
			return;
	}
	if (sv->state == SV_LOGIN && sv->login_step == LS_AUTH) {
		login_loop(sv);
		if (c->dead || sv->state == SV_LOGIN)
			return;
	}
	forward_loop(sv);
}
