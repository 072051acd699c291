/* client.c: one client socket: startup packet, then the forwarding loop that tracks transactions. */
#include "client.h"

#include <errno.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"
#include "worker.h"
#include "route_types.h"
#include "pool.h"
#include "prepared.h"
#include "pwcrypt.h"
#include "repl.h"
#include "sbuf.h"
#include "server.h"
#include "tls.h"
#include "txtrack.h"
#include "userlist.h"

/* Password and SASL messages are small, except a plaintext password, which may be as long as
 * the longest auth_file secret (a token, say).  Room for one byte more than that, so a password
 * just over the limit fails as a wrong password; anything bigger is an attack or a bug. */
#define LOGIN_MSG_MAX (USERLIST_MAX_SECRET + 64)

const char *client_tag(const struct client *cl, char *buf, size_t len)
{
	snprintf(buf, len, "C-%llu %s/%s@%s", (unsigned long long)cl->c.id,
		 cl->db_name ? cl->db_name : "(nodb)", cl->user_name ? cl->user_name : "(nouser)", cl->addr);
	return buf;
}

static struct list *client_list(struct client *cl, enum client_state st)
{
	switch (st) {
	case CL_LOGIN: return &cl->c.w->cl_login;
	case CL_ADMIN: return &cl->c.w->cl_admin;
	case CL_WAITING_LOGIN: return &cl->pool->cl_waiting_login;
	case CL_ACTIVE: return &cl->pool->cl_active;
	case CL_WAITING: return &cl->pool->cl_waiting;
	default: return NULL;
	}
}

void client_set_state(struct client *cl, enum client_state st)
{
	if (cl->state == st)
		return;
	if (client_list(cl, cl->state)) {
		list_del(&cl->node);
		if (cl->state == CL_LOGIN)
			cl->c.w->n_login--;
		else if (cl->state == CL_ADMIN)
			cl->c.w->n_admin--;
		else
			cl->pool->n_cl[cl->state]--;
		if (cl->state == CL_WAITING_LOGIN && cl->replication)
			cl->pool->n_repl_wait--;
	}
	cl->state = st;
	struct list *l = client_list(cl, st);
	if (l) {
		list_append(l, &cl->node);
		if (st == CL_LOGIN)
			cl->c.w->n_login++;
		else if (st == CL_ADMIN)
			cl->c.w->n_admin++;
		else
			cl->pool->n_cl[st]++;
		if (st == CL_WAITING_LOGIN && cl->replication)
			cl->pool->n_repl_wait++;
	}
}

void client_move(struct client *cl, struct pool *p)
{
	struct pool *old = cl->pool;
	if (old == p)
		return;
	struct list *l = client_list(cl, cl->state);
	bool repl_wait = cl->state == CL_WAITING_LOGIN && cl->replication;
	if (l) {
		list_del(&cl->node);
		old->n_cl[cl->state]--;
		old->n_repl_wait -= repl_wait;
	}
	cl->pool = p;
	if ((l = client_list(cl, cl->state))) {
		list_append(l, &cl->node);
		p->n_cl[cl->state]++;
		p->n_repl_wait += repl_wait;
	}
}

void client_send_error(struct client *cl, const char *severity, const char *sqlstate, const char *msg)
{
	proto_error(&cl->c.out, severity, sqlstate, msg);
	if (sbuf_send_out(&cl->c) < 0)
		pktbuf_free(&cl->c.out);
}

/* ---- max_db_client_connections, max_user_client_connections ---- */

/* Counts a client that has just authenticated against its database (or the console, which
 * counts as one database) and against its login user, and refuses it with PgBouncer's text
 * when either is over its limit.  An admin_users member on the console is counted but never
 * refused, as in PgBouncer.  Counting starts after authentication, so that a client who cannot
 * log in never takes anyone's place.  False when the client was refused (and is closed). */
static bool count_login(struct client *cl, struct database *db, bool console)
{
	struct worker *w = cl->c.w;
	bool exempt = console && (cl->peer_admin || config_list_has(w->cf->admin_users, cl->user_name));
	int n_db, max_db;
	if (console) {
		cl->counted_console = true;
		n_db = ++w->n_console_clients;
		max_db = (int)w->cf->max_db_client_connections;
	} else {
		cl->counted_db = db;
		n_db = ++db->n_clients;
		max_db = pool_db_max_clients(w, db->cf);
	}
	/* auth_type = any: the entry's forced user is the one logged in, as PgBouncer counts it */
	const char *name = w->cf->auth_type == AUTH_ANY && db && db->cf->user ? db->cf->user
									   : cl->user_name;
	struct user *u = pool_find_user(w, name);
	if (!u) {
		client_close(cl, "out of memory", "53200");
		return false;
	}
	cl->counted_user = u;
	u->n_clients++;
	if (exempt)
		return true;
	if (max_db > 0 && n_db > max_db) {
		client_close(cl, "client connections exceeded (max_db_client_connections)", "08P01");
		return false;
	}
	int max_user = pool_user_max_clients(w, u->cf);
	if (max_user > 0 && u->n_clients > max_user) {
		client_close(cl, "client connections exceeded (max_user_client_connections)", "08P01");
		return false;
	}
	return true;
}

static void uncount_login(struct client *cl)
{
	if (cl->counted_db)
		cl->counted_db->n_clients--;
	if (cl->counted_user)
		cl->counted_user->n_clients--;
	if (cl->counted_console)
		cl->c.w->n_console_clients--;
	cl->counted_db = NULL;
	cl->counted_user = NULL;
	cl->counted_console = false;
}

void client_close(struct client *cl, const char *reason, const char *sqlstate)
{
	client_close_detail(cl, reason, sqlstate, NULL);
}

void client_close_detail(struct client *cl, const char *reason, const char *sqlstate, const char *detail)
{
	struct worker *w = cl->c.w;
	char tag[256];
	if (cl->c.dead)
		return;
	/* PgBouncer's form: the connection's age in seconds follows the reason. */
	unsigned long long age = (unsigned long long)((worker_now() - cl->connect_time) / 1000000u);
	/* The log line first: whoever reads the log once the client has its FATAL finds it. */
	if (sqlstate) {
		log_info("%s closing because: %s (age=%llus)", client_tag(cl, tag, sizeof(tag)), reason, age);
		/* Best effort: the socket may already be gone; a FATAL is the last word either way.
		 * Mid-handshake there is no channel for it: plaintext would break the TLS stream; nor
		 * while a server's message to the client is half sent: it would land inside it. */
		const struct server *lsv = cl->link;
		bool boundary = !cl->c.torn &&
				(!lsv || (lsv->c.pkt_left == 0 &&
					  (!lsv->c.in || lsv->c.in->start == lsv->c.in->scan)));
		if (!cl->c.handshaking && boundary) {
			proto_error_detail(&cl->c.out, "FATAL", sqlstate, reason, detail);
			if (sbuf_send_out(&cl->c) < 0)
				log_debug("FATAL not delivered: the socket is gone");   /* closing anyway */
		}
	} else if (w->cf->log_disconnections && cl->state != CL_LOGIN) {
		log_info("%s closing because: %s (age=%llus)", client_tag(cl, tag, sizeof(tag)), reason, age);
	} else {
		log_debug("%s closing because: %s (age=%llus)", client_tag(cl, tag, sizeof(tag)), reason, age);
	}
	if (cl->replication) {
		/* Its own server goes with it, never back to a pool. */
		repl_client_gone(cl);
	}
	struct server *sv = cl->link;
	if (sv) {
		/* Bytes the client sent but the server never got would leave it mid-message. */
		bool clean = sv->tx == 'I' && txtrack_quiet(&cl->tt) &&
			     sbuf_empty(&cl->c) && cl->c.pkt_left == 0 && !cl->tt.in_copy &&
			     !sv->internal_z;
		if (!clean)
			sv->close_when_idle = true;
		/* A message it sent only in part: pgmux must not end it with a Terminate of its own,
		 * which the server would read as the rest of that message. */
		if (cl->c.pkt_left || (cl->c.in && cl->c.in->start != cl->c.in->scan))
			sv->c.torn = true;
	}
	worker_cancel_unregister(w, cl);
	uncount_login(cl);
	if (cl->rt)
		w->router->client_free(cl);
	sbuf_close(&cl->c);
	if (sv)
		pool_release(sv, true);
	client_set_state(cl, CL_FREE);
	auth_free(cl);
	if (w->console)
		w->console->gone(cl);
	w->n_clients--;
	worker_reap(w, &cl->c);
	worker_check_shutdown(w);
}

static void on_data(struct conn *c)
{
	client_on_data(container_of(c, struct client, c));
}

static void on_fail(struct conn *c, const char *reason)
{
	client_close(container_of(c, struct client, c), reason, NULL);
}

static void on_handshake(struct conn *c)
{
	client_on_handshake(container_of(c, struct client, c));
}

/* The reaper's half of client_close: the memory, once no callback holds the client. */
static void on_free(struct conn *c)
{
	struct client *cl = container_of(c, struct client, c);
	varcache_clear(&c->w->vars, &cl->vars);
	ps_client_free(cl);
	if (cl->rt)
		c->w->router->session_free(cl);
	free(cl->user_name);
	free(cl->db_name);
	pktbuf_free(&cl->repl_params);
	free(cl);
}

static const struct sbuf_ops client_ops = {
	.on_data = on_data,
	.on_fail = on_fail,
	.on_handshake = on_handshake,
	.eof_reason = "client closed connection",
	.on_free = on_free,
};

void client_accept(struct worker *w, int fd, const struct sockaddr *sa, socklen_t salen)
{
	struct client *cl = calloc(1, sizeof(*cl));
	if (!cl) {
		close(fd);
		return;
	}
	sbuf_init(&cl->c, w, fd, CONN_CLIENT, &client_ops);
	list_init(&cl->node);
	cl->state = CL_FREE;
	cl->connect_time = cl->last_active = worker_now();
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, cl->addr, sizeof(cl->addr));
		sbuf_set_nodelay(fd);
		sbuf_set_keepalive(fd, w->cf);
	} else if (sa->sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, cl->addr, sizeof(cl->addr));
		sbuf_set_nodelay(fd);
		sbuf_set_keepalive(fd, w->cf);
	} else {
		snprintf(cl->addr, sizeof(cl->addr), "unix");
	}
	w->n_clients++;
	client_set_state(cl, CL_LOGIN);
	sbuf_resume(&cl->c);
}

/* Startup parameters PostgreSQL clients send that pgmux understands without a server. */
struct options_ctx {
	struct client *cl;
	char *err;
	size_t errlen;
	bool ignore_rest;       /* "options" is in ignore_startup_parameters */
};

/* One setting of the options parameter: a tracked parameter is taken as if sent on its own;
 * one in ignore_startup_parameters (or any, when "options" is) is dropped; else refused. */
static int options_setting(void *arg, const char *name, const char *val)
{
	struct options_ctx *o = arg;
	struct client *cl = o->cl;
	int var = varcache_lookup(name);
	if (var >= 0) {
		if (strlen(val) >= VAR_MAX_LEN) {
			snprintf(o->err, o->errlen, "startup parameter %s is too long", name);
			return -1;
		}
		if (!varcache_set(&cl->c.w->vars, &cl->vars, var, val)) {
			snprintf(o->err, o->errlen, "out of memory");
			return -1;
		}
		return 0;
	}
	if (o->ignore_rest || config_list_has(cl->c.w->cf->ignore_startup_parameters, name))
		return 0;
	snprintf(o->err, o->errlen, "unsupported startup parameter in options: %.64s", name);
	return -1;
}

static bool startup_param_ok(struct client *cl, const char *key, const char *val, char *err, size_t errlen)
{
	if (strcmp(key, "options") == 0) {
		struct options_ctx o = { cl, err, errlen,
			config_list_has(cl->c.w->cf->ignore_startup_parameters, "options") };
		if (proto_options_each(val, options_setting, &o, err, errlen) == 0)
			return true;
		/* With "options" ignored, what cannot be parsed is dropped like the rest. */
		return o.ignore_rest && strcmp(err, PROTO_OPTIONS_BAD) == 0;
	}
	int var = varcache_lookup(key);
	if (var >= 0) {
		if (strlen(val) >= VAR_MAX_LEN) {
			snprintf(err, errlen, "startup parameter %s is too long", key);
			return false;
		}
		return varcache_set(&cl->c.w->vars, &cl->vars, var, val);
	}
	if (config_list_has(cl->c.w->cf->ignore_startup_parameters, key))
		return true;
	snprintf(err, errlen, "unsupported startup parameter: %s", key);
	return false;
}

/* A replication client's parameter: PostgreSQL itself judges it, on the client's own server
 * (options, application_name, ...); pgmux also notes the ones it tracks, for SHOW CLIENTS. */
static bool repl_startup_param(struct client *cl, const char *key, const char *val, char *err,
			       size_t errlen)
{
	int var = varcache_lookup(key);
	if (var >= 0 && strlen(val) < VAR_MAX_LEN)
		(void)varcache_set(&cl->c.w->vars, &cl->vars, var, val);
	if (!repl_keep_param(cl, key, val)) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	return true;
}

/* False when the client was closed (its socket failed). */
static bool send_single_byte(struct client *cl, char b)
{
	pktbuf_put_u8(&cl->c.out, (uint8_t)b);
	if (sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return false;
	}
	return true;
}

static void handle_cancel(struct client *cl, const uint8_t *body)
{
	uint32_t pid = proto_get32(body + 4), key = proto_get32(body + 8);
	struct client *target = worker_cancel_find(cl->c.w, pid, key);
	if (target && target->link && !target->link->c.dead)
		server_cancel(target->link);
	else
		log_debug("cancel request for unknown or idle client");
	/* A cancel connection gets no answer; it just ends, as with PostgreSQL. */
	cl->c.hold = true;
	client_close(cl, "cancel request", NULL);
}

/* PgBouncer's rule: TLS is for TCP; over a Unix socket SSLRequest gets 'N' and no mode
 * requires it (the socket file's permissions are what guard it). */
static bool client_is_unix(const struct client *cl)
{
	return strcmp(cl->addr, "unix") == 0;
}

/*
 * PgBouncer's rule for the console: user "pgbouncer" connecting over the Unix socket from the
 * OS user pgmux runs as gets in as an admin without a password (whoever can act as that OS
 * user can read the auth_file and signal the process anyway).  The kernel's peer credentials
 * say who is on the other end; TCP has no such proof, so it never takes this path, and neither
 * does any other user name, any other uid, or a peer whose credentials cannot be read.
 */
static bool console_peer_is_self(const struct client *cl)
{
	uid_t uid;
	return client_is_unix(cl) && strcmp(cl->user_name, "pgbouncer") == 0 &&
	       sbuf_peer_uid(cl->c.fd, &uid) && uid == geteuid();
}

void client_on_handshake(struct client *cl)
{
	struct conn *c = &cl->c;
	char err[300], tag[256];
	if (c->wr_on) {
		event_del(&c->ev_write);
		c->wr_on = false;
	}
	int r = tls_handshake(c, err, sizeof(err));
	if (r == 0)
		return;
	if (r < 0) {
		/* The client gets no ErrorResponse (no channel for one), so the log says why. */
		log_info("%s %s", client_tag(cl, tag, sizeof(tag)), err);
		client_close(cl, "TLS handshake failed", NULL);
		return;
	}
	c->handshaking = false;
	if (log_enabled(LOG_L_DEBUG)) {
		char desc[160];
		log_debug("%s TLS established: %s", client_tag(cl, tag, sizeof(tag)),
			  tls_describe(c, desc, sizeof(desc)));
	}
	sbuf_resume(c);
	/* The StartupMessage may have come in the handshake's last read: decrypted, it waits
	 * inside OpenSSL where the socket's readiness cannot show it. */
	if (c->rd_on && tls_pending(c))
		event_active(&c->ev_read, EV_READ, 0);
}

/* Answers an SSLRequest with 'S' and starts the handshake.  Returns false when the client is
 * gone. */
static bool start_tls(struct client *cl)
{
	struct conn *c = &cl->c;
	char err[300];
	/* Bytes after the SSLRequest were sent before the client could see our answer, yet they
	 * would be read as if they had come through TLS (CVE-2021-23214). */
	if (sbuf_unparsed(c)) {
		client_close(cl, "received unencrypted data after SSL request", "08P01");
		return false;
	}
	pktbuf_put_u8(&c->out, 'S');
	if (sbuf_send_out(c) != 0) {
		client_close(cl, "could not answer SSLRequest", NULL);
		return false;
	}
	sbuf_discard_in(c);
	if (tls_server_start(c, c->w->tls_srv, err, sizeof(err)) < 0) {
		char tag[256];
		log_error("%s %s", client_tag(cl, tag, sizeof(tag)), err);
		client_close(cl, "cannot start TLS", NULL);
		return false;
	}
	c->handshaking = true;
	client_on_handshake(cl);
	return !c->dead;
}

/* Returns false when the client is gone. */
static bool handle_startup(struct client *cl)
{
	struct worker *w = cl->c.w;
	struct iobuf *b = cl->c.in;
	uint32_t avail = b->end - b->scan;
	if (avail < 8)
		return true;
	uint32_t len = proto_get32(b->data + b->scan);
	if (len < 8 || len > PROTO_MAX_STARTUP) {
		client_close(cl, "invalid startup packet length", "08P01");
		return false;
	}
	if (avail < len)
		return true;
	const uint8_t *body = b->data + b->scan + 4;
	uint32_t code = proto_get32(body);
	b->scan += len;
	b->start = b->scan;

	if (code == PROTO_SSL_CODE || code == PROTO_GSSENC_CODE) {
		if (len != 8) {
			client_close(cl, "invalid SSL/GSS request", "08P01");
			return false;
		}
		if (code == PROTO_SSL_CODE && cl->c.ssl) {
			client_close(cl, "SSL request inside an SSL connection", "08P01");
			return false;
		}
		if (code == PROTO_SSL_CODE && w->tls_srv && !client_is_unix(cl))
			return start_tls(cl);
		return send_single_byte(cl, 'N');
	}
	if (code == PROTO_CANCEL_CODE) {
		if (len != 16) {
			client_close(cl, "invalid cancel request", "08P01");
			return false;
		}
		handle_cancel(cl, body);
		return false;
	}
	/* A cancel needs no TLS (libpq sends it in the clear); a login does from require up. */
	if (!cl->c.ssl && tls_server_mode(w->tls_srv) >= TLS_REQUIRE && !client_is_unix(cl)) {
		client_close(cl, "SSL required", "28000");
		return false;
	}
	if (code >> 16 != 3) {
		char msg[128];
		snprintf(msg, sizeof(msg), "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0",
			 code >> 16, code & 0xffff);
		client_close(cl, msg, "0A000");
		return false;
	}
	struct startup st;
	char err[256];
	/* Copy out: the parse points into the buffer, which the next read may move. */
	uint8_t *copy = malloc(len - 4);
	if (!copy) {
		client_close(cl, "out of memory", "53200");
		return false;
	}
	memcpy(copy, body, len - 4);
	if (proto_parse_startup(copy, len - 4, &st, err, sizeof(err)) < 0) {
		free(copy);
		client_close(cl, err, "08P01");
		return false;
	}
	const char *user = NULL, *db = NULL;
	bool ok = true;
	int n_unknown_proto = 0;
	/* First: a replication client's other parameters all go to its own server. */
	for (int i = 0; i < st.nparams && ok; i++) {
		if (strcmp(st.key[i], "replication") != 0)
			continue;
		int kind = repl_parse_value(st.val[i]);
		if (kind < 0) {
			snprintf(err, sizeof(err), "invalid value for parameter \"replication\": \"%.64s\"",
				 st.val[i]);
			ok = false;
		} else {
			cl->replication = (uint8_t)kind;
		}
	}
	for (int i = 0; i < st.nparams && ok; i++) {
		if (strcmp(st.key[i], "user") == 0)
			user = st.val[i];
		else if (strcmp(st.key[i], "database") == 0)
			db = st.val[i];
		else if (strncmp(st.key[i], "_pq_.", 5) == 0)
			n_unknown_proto++;
		else if (strcmp(st.key[i], "replication") == 0)
			continue;
		else if (cl->replication)
			ok = repl_startup_param(cl, st.key[i], st.val[i], err, sizeof(err));
		else
			ok = startup_param_ok(cl, st.key[i], st.val[i], err, sizeof(err));
	}
	if (ok && (!user || !*user)) {
		snprintf(err, sizeof(err), "no PostgreSQL user name specified in startup packet");
		ok = false;
	}
	if (ok && (strlen(user) > 255 || (db && strlen(db) > 255))) {
		snprintf(err, sizeof(err), "user or database name too long");
		ok = false;
	}
	if (ok) {
		cl->user_name = strdup(user);
		cl->db_name = strdup(db && *db ? db : user);
	}
	if (ok && ((code & 0xffff) != 0 || n_unknown_proto)) {
		/* Newer minor versions and _pq_ options: say what we speak, as PostgreSQL does. */
		struct pktbuf *o = &cl->c.out;
		pktbuf_begin(o, 'v');
		pktbuf_put_u32(o, 0);
		pktbuf_put_u32(o, (uint32_t)n_unknown_proto);
		for (int i = 0; i < st.nparams; i++)
			if (strncmp(st.key[i], "_pq_.", 5) == 0)
				pktbuf_put_str(o, st.key[i]);
		pktbuf_end(o);
	}
	free(copy);
	if (!ok) {
		client_close(cl, err, "08P01");
		return false;
	}
	if (!cl->user_name || !cl->db_name) {
		client_close(cl, "out of memory", "53200");
		return false;
	}
	if (w->n_clients > w->cf->max_client_conn) {
		client_close(cl, "no more connections allowed (max_client_conn)", "53300");
		return false;
	}
	/* An unknown database is refused only after authentication, as PgBouncer does: a client
	 * without the password cannot learn which names exist. */
	bool console = w->console && w->console->is_console_db(cl->db_name);
	/* During a graceful shutdown the console stays reachable (over the Unix socket, the one
	 * listener left open); pooled logins are refused in PgBouncer's words. */
	if (w->shutdown && !console) {
		client_close(cl, "pooler is shutting down", "57P01");
		return false;
	}
	if (w->cf->log_connections) {
		char tag[256], desc[160];
		log_info("%s login attempt: tls=%s", client_tag(cl, tag, sizeof(tag)),
			 cl->c.ssl ? tls_describe(&cl->c, desc, sizeof(desc)) : "no");
	}
	if (console && console_peer_is_self(cl)) {
		char tag[256];
		cl->peer_admin = true;
		log_debug("%s console admin by peer credentials (same uid as pgmux)", client_tag(cl, tag, sizeof(tag)));
		client_auth_ok(cl);
		return !cl->c.dead;
	}
	auth_start(cl);
	return !cl->c.dead;
}

static void login_loop(struct client *cl)
{
	while (!cl->c.dead && cl->state == CL_LOGIN && cl->c.in) {
		struct iobuf *b = cl->c.in;
		if (!cl->auth) {
			uint32_t before = b->scan;
			if (!handle_startup(cl) || cl->c.in != b || b->scan == before)
				break;
			continue;
		}
		uint32_t avail = b->end - b->scan;
		if (avail < PROTO_HDR)
			break;
		char type = (char)b->data[b->scan];
		uint32_t len = proto_get32(b->data + b->scan + 1);
		if (len < 4 || len > LOGIN_MSG_MAX) {
			client_close(cl, "invalid packet during login", "08P01");
			return;
		}
		if (avail < len + 1) {
			/* A message bigger than the receive buffer grows it (within max_client_memory);
			 * otherwise it could never arrive whole and the login would hang. */
			if (len + 1 > b->cap - b->scan && client_need(cl, len + 1) < 0) {
				client_close(cl, "out of memory during login", "53200");
				return;
			}
			break;
		}
		const uint8_t *body = b->data + b->scan + PROTO_HDR;
		b->scan += len + 1;
		b->start = b->scan;
		if (!auth_on_message(cl, type, body, len - 4))
			return;
	}
	if (!cl->c.dead)
		sbuf_release_buf(&cl->c);
}

void client_auth_ok(struct client *cl)
{
	struct worker *w = cl->c.w;
	if (w->console && w->console->is_console_db(cl->db_name)) {
		if (cl->replication) {
			client_close(cl, "replication connections are not supported on the console", "0A000");
			return;
		}
		auth_free(cl);
		if (count_login(cl, NULL, true))
			w->console->ready(cl);
		return;
	}
	struct database *db = pool_find_database(w, cl->db_name);
	if (!db) {
		char msg[300];
		snprintf(msg, sizeof(msg), "no such database: %s", cl->db_name);
		client_close(cl, msg, "3D000");
		return;
	}
	if (db->disabled) {
		/* PgBouncer's words, which clients and scripts match */
		char msg[300];
		snprintf(msg, sizeof(msg), "database \"%s\" is disabled", db->name);
		client_close(cl, msg, "57P03");
		return;
	}
	if (!count_login(cl, db, false))
		return;
	struct pool *p = NULL;
	if (db->cluster && cl->replication) {
		/* A routed name has no one server to stream from: name a backend entry instead. */
		client_close(cl, "replication connections are not supported on a routed database",
			     "0A000");
		return;
	}
	if (db->cluster) {
		p = w->router->login(cl, db);
		if (p)   /* a cancel may reach it on any backend's pool */
			for (int i = 0; i < cl->rt->rs->n; i++)
				auth_export_keys(cl, cl->rt->rs->pools[i]);
	} else {
		/* the pool is (database, server user): the entry's forced user, as in PgBouncer */
		p = pool_get(w, db, db->cf->user ? db->cf->user : cl->user_name);
	}
	if (!p) {
		client_close(cl, "out of memory", "53200");
		return;
	}
	cl->pool = p;
	p->client_login_count++;
	auth_export_keys(cl, p);
	auth_free(cl);
	proto_auth_request(&cl->c.out, 0, NULL, 0);
	if (cl->replication)
		repl_client_ready(cl);
	else
		pool_client_ready(cl);
}

void client_send_welcome(struct client *cl)
{
	struct pool *p = cl->pool;
	struct pktbuf *o = &cl->c.out;
	/* The pool's greeting, with the client's own values for the parameters it chose. */
	const uint8_t *m = p->welcome.data, *end = m + p->welcome.len;
	while (m && m + PROTO_HDR <= end) {
		uint32_t len = proto_get32(m + 1);
		const uint8_t *q = m + PROTO_HDR, *qend = m + 1 + len;
		const char *k = proto_get_str(&q, qend);
		const char *v = k ? proto_get_str(&q, qend) : NULL;
		if (k && v) {
			int id = varcache_lookup(k);
			if (id >= 0 && cl->vars.val[id])
				v = varcache_get(&cl->vars, id);
			else if (id >= 0)
				varcache_set(&cl->c.w->vars, &cl->vars, id, v);
			proto_param_status(o, k, v);
		}
		m = qend;
	}
	for (int i = 0; i < VAR_COUNT; i++)
		if (!cl->vars.val[i] && p->defaults.val[i])
			varcache_set(&cl->c.w->vars, &cl->vars, i, varcache_get(&p->defaults, i));
	worker_cancel_register(cl->c.w, cl);
	proto_backend_key(o, cl->cancel_pid, cl->cancel_key);
	/* login_notify_message: after the login and before the first ReadyForQuery, where psql
	 * and libpq show it as a notice of the connection. */
	if (*cl->c.w->cf->login_notify_message)
		proto_notice(o, "00000", cl->c.w->cf->login_notify_message);
	proto_ready(o, 'I');
	client_set_state(cl, CL_ACTIVE);
	cl->c.hold = false;
	cl->last_active = worker_now();
	if (sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return;
	}
	sbuf_resume(&cl->c);
	if (sbuf_unparsed(&cl->c))
		client_on_data(cl);
}

void client_linked(struct client *cl)
{
	cl->c.hold = false;
	sbuf_resume(&cl->c);
	client_on_data(cl);
}


/* Bytes routing holds for cl: none for a plain client, which pays no call. */
static uint64_t route_bytes(const struct client *cl)
{
	return cl->rt ? cl->c.w->router->client_bytes(cl) : 0;
}

uint64_t client_memory(const struct client *cl)
{
	return sbuf_extra(&cl->c) + ps_client_bytes(cl) + route_bytes(cl);
}

int client_need(struct client *cl, uint32_t need)
{
	struct conn *c = &cl->c;
	struct iobuf *b = c->in;
	if (b && b->end - b->scan >= need)
		return 1;
	struct worker *w = c->w;
	/* The standard buffer is every client's; growing past it counts against its limit. */
	if (need > w->bufsize &&
	    (uint64_t)need + ps_client_bytes(cl) + route_bytes(cl) > (uint64_t)w->cf->max_client_memory)
		return -1;
	if (!sbuf_reserve(c, need)) {
		char tag[256];
		log_warn("%s out of memory for a %u-byte message", client_tag(cl, tag, sizeof(tag)), need);
		return -1;
	}
	return 0;
}

void client_drop_msg(struct client *cl, uint32_t total)
{
	struct conn *c = &cl->c;
	struct iobuf *b = c->in;
	uint32_t avail = b->end - b->scan;
	if (avail >= total) {
		b->scan += total;
		b->start = b->scan;
	} else {
		/* The rest is read away as it arrives. */
		b->start = b->scan = b->end;
		c->pkt_left = total - avail;
		cl->discarding = true;
	}
}

/* What routing and statement tracking must read of the message at the parse position before
 * they act on it: the rule that every message pgmux reads is whole (or its head is, for a
 * Bind whose names are all that matter) lives here. */
static uint32_t msg_need(struct client *cl, char type, const uint8_t *h, uint32_t total,
			 uint32_t avail)
{
	uint32_t need = cl->rt ? cl->c.w->router->msg_need(cl, type, h, total, avail) : 0;
	if (cl->link && cl->link->ps_active) {
		uint32_t n = ps_msg_need(cl, type, h, total, avail);
		if (n > need)
			need = n;
	}
	return need;
}

/* Gathers what msg_need asks for: 1 ready, 0 wait for more bytes (the loop returns), -1 too
 * big to hold (the readers stream it or refuse it).  A message already whole needs nothing
 * more, which is almost every message: that case costs one comparison. */
static inline int gather(struct client *cl, char type, uint32_t total)
{
	struct iobuf *b = cl->c.in;
	uint32_t avail = b->end - b->scan;
	if (avail >= total)
		return 1;
	uint32_t need = msg_need(cl, type, b->data + b->scan, total, avail);
	return need <= avail ? 1 : client_need(cl, need);
}

/* Requests that start a query when nothing was outstanding. */
static inline bool starts_query(char type)
{
	switch (type) {
	case 'Q': case 'F': case 'S': case 'E': case 'P': case 'B': case 'D': case 'C':
		return true;
	default:
		return false;
	}
}

/* The first request after a quiet spell starts a query; on an idle server, a transaction.
 * Queries are counted here, one per request the client sends after its last answer, as
 * PgBouncer counts them: a Parse+Sync and the Bind..Sync after it are two. */
static void note_query_start(struct client *cl)
{
	if (txtrack_quiet(&cl->tt)) {
		cl->query_start = cl->c.w->now;
		cl->pool->query_count++;
		if (cl->link && cl->link->tx == 'I')
			cl->xact_start = cl->query_start;
	}
}

/* Messages that ask nothing of a server: from a client without one, they are dropped
 * rather than pin a server (PostgreSQL ignores stray copy messages outside COPY). */
static bool needs_no_server(char type)
{
	return type == 'H' || type == 'd' || type == 'c' || type == 'f';
}

/* Forwarding: walks the message headers the client sent and keeps the in-flight counts that
 * decide when its server can go back to the pool. */
static void forward_loop(struct client *cl)
{
	struct conn *c = &cl->c;
	struct iobuf *b = c->in;
	const struct config *cf = c->w->cf;

	while (b && b->scan < b->end) {
		if (c->pkt_left) {
			uint32_t n = b->end - b->scan;
			if (n > c->pkt_left)
				n = c->pkt_left;
			if (cl->ps_tok_scan && !cl->discarding && !ps_scan_stream(cl, b->data + b->scan, n)) {
				client_close(cl, "pgmux's own prepared statements cannot be used from SQL",
					     "42501");
				return;
			}
			b->scan += n;
			c->pkt_left -= n;
			if (!c->pkt_left)
				cl->ps_tok_scan = false;
			if (cl->discarding) {
				b->start = b->scan;
				cl->discarding = c->pkt_left > 0;
			}
			continue;
		}
		uint32_t avail = b->end - b->scan;
		if (avail < PROTO_HDR)
			break;
		const uint8_t *h = b->data + b->scan;
		char type = (char)h[0];
		uint32_t len = proto_get32(h + 1);
		/* A Close or Describe of a named statement beyond PostgreSQL's small-message limit
		 * (a long name) may be one statement tracking renames: it is checked again below,
		 * where it would reach the server as it is. */
		bool renamable = (type == 'C' || type == 'D') && cl->pool && ps_enabled(cl->pool);
		if (len < 4 || (len > proto_max_msg_len(type) && !renamable)) {
			/* PostgreSQL would drop the connection for it: refusing it here keeps the
			 * server connection, which other clients share, alive. */
			client_close(cl, "invalid message length", "08P01");
			return;
		}
		if ((int64_t)len > cf->max_packet_size) {
			client_close(cl, "max_packet_size exceeded", "08P01");
			return;
		}
		uint32_t total = len + 1;
		if (!cl->link) {
			if (type == 'X') {
				client_close(cl, "client close request", NULL);
				return;
			}
			if (needs_no_server(type) && b->start == b->scan && !route_takes_copy(cl)) {
				if (type == 'c' || type == 'f')
					txtrack_stray_copy_end(&cl->tt);
				client_drop_msg(cl, total);
				continue;
			}
			if (cl->rt) {
				int g = gather(cl, type, total);
				b = c->in;   /* gathering may have moved the buffer */
				if (g == 0 || c->dead)
					break;
				b = c->in;
				h = b->data + b->scan;
				avail = b->end - b->scan;
				enum hook_rc r = c->w->router->pick(cl, type, h, total, avail);
				if (r == HOOK_WAIT || r == HOOK_STOP || c->dead)
					return;
				if (r == HOOK_CONSUMED) {
					b = c->in;
					continue;
				}
			}
			if (cl->replication) {
				/* Its own server went away: no other may stand in for it. */
				client_close(cl, "replication connection lost its server", "08006");
				return;
			}
			uint64_t now = c->w->now;
			cl->last_active = now;
			cl->wait_start = now;
			pool_acquire(cl);
			if (c->dead || !cl->link)
				return;   /* queued: client_linked() resumes this loop */
		}
		if (cl->link->ps_active || cl->rt) {
			int g = gather(cl, type, total);
			b = c->in;
			if (g == 0 || c->dead)
				break;
			b = c->in;
			h = b->data + b->scan;
			avail = b->end - b->scan;
		}
		log_noise("C-%llu -> %c len %u expect_z %u", (unsigned long long)c->id, type, len, cl->tt.expect_z);
		if (cl->rt) {
			if (route_watches_client(cl, type)) {
				enum hook_rc r = c->w->router->on_message(cl, type, h, total, avail);
				if (r != HOOK_FORWARD) {
					if (r == HOOK_STOP || c->dead)
						return;
					if (r == HOOK_WAIT)
						break;
					b = c->in;
					continue;   /* moved to another link, or rewritten: read it again */
				}
			} else {
				route_note_sent(cl, type);
			}
		}
		if (cl->link->ps_active && type != 'X') {
			enum hook_rc r = ps_client_message(cl, type, total, avail);
			if (r == HOOK_STOP || c->dead)
				return;
			if (r == HOOK_WAIT)
				break;
			if (r == HOOK_CONSUMED) {
				/* answered or rewritten by pgmux: the server still answers in its place (a
				 * refused Query with an error and its ReadyForQuery) */
				if (starts_query(type)) {
					note_query_start(cl);
					txtrack_client(&cl->tt, type == 'Q' ? 'Q' : 'B', false);
				}
				b = c->in;
				continue;
			}
			/* A DEALLOCATE may have been renamed in place: read its header again. */
			b = c->in;
			h = b->data + b->scan;
			avail = b->end - b->scan;
			total = proto_get32(h + 1) + 1;
		}
		if (__builtin_expect(len > proto_max_msg_len(type), 0)) {
			client_close(cl, "invalid message length", "08P01");   /* not renamed after all */
			return;
		}
		if (type == 'X') {
			/* Forward what came before; the Terminate itself is pgmux's to consume, so a
			 * session-mode server goes back to the pool clean. */
			if (!sbuf_flush(c))
				return;
			if (avail >= total)
				b->start = b->scan = b->scan + total;
			client_close(cl, "client close request", NULL);
			return;
		}
		if (starts_query(type))
			note_query_start(cl);
		enum txtrack_result tr = txtrack_client(&cl->tt, type,
							type == 'P' && avail > PROTO_HDR && h[PROTO_HDR] == 0);
		if (tr != TXT_OK) {
			client_close(cl, tr == TXT_UNKNOWN ? "unknown message type from client"
							   : "too many pipelined requests", "08P01");
			return;
		}
		if (avail >= total) {
			b->scan += total;
		} else {
			b->scan = b->end;
			c->pkt_left = total - avail;
		}
	}
	struct server *sv = cl->link;
	if (sv && sv->ps_active) {
		/* pgmux's own bytes for the server go first; its own answers due now go out too. */
		if (sv->c.out.len && sbuf_send_out(&sv->c) < 0) {
			server_close(sv, "send failed");
			return;
		}
		if (ps_emit(sv) == HOOK_STOP || c->dead)
			return;
		if (!sbuf_empty(&sv->c) && !sbuf_flush(&sv->c) && (c->dead || sv->c.dead))
			return;
		b = c->in;
	}
	sv = cl->link;
	if (!sv) {
		sbuf_release_buf(c);
		return;
	}
	if (b) {
		cl->pool->bytes_recv += b->scan - b->start;
		if (!sbuf_flush(c) || c->dead || cl->link != sv)
			return;
	}
	/* Its server may have been owed a release until these bytes were all out. */
	if (sv->ready_notified)
		server_release_owed(sv);
}

void client_on_data(struct client *cl)
{
	if (cl->c.dead)
		return;
	if (cl->state == CL_LOGIN) {
		login_loop(cl);
		return;
	}
	if (cl->state == CL_ADMIN) {
		cl->c.w->console->on_data(cl);
		return;
	}
	if (cl->state != CL_ACTIVE)
		return;
	forward_loop(cl);
}
