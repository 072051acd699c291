/* admin.c: the admin console: the virtual database "pgmux" (alias "pgbouncer"): its sessions,
 * the messages they send, command parsing, access rights and dispatch through the command
 * table.  The commands themselves are in admin_show.c (SHOW) and admin_cmd.c (control). */
#include "admin.h"
#include "admin_int.h"

#include <ctype.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "config.h"
#include "pool.h"
#include "sbuf.h"
#include "stats.h"
#include "worker.h"

/* Console commands are short; a longer message is refused rather than buffered. */
#define ADMIN_MSG_MAX 8192

/* ---------------------------------------------------------------------------------------- */
/* the command table */

/* What a command context names before its command is known (errors of parsing). */
static const struct admin_cmd none = { "", ARG_NONE, "", false, NULL, NULL, 0, "" };

const struct admin_cmd *admin_cmd_nth(size_t i)
{
	if (i < admin_show_ncmds)
		return &admin_show_cmds[i];
	i -= admin_show_ncmds;
	return i < admin_ctl_ncmds ? &admin_ctl_cmds[i] : NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* parsing and dispatch */

/* Matches the words of `name` at the start of `in` (case-insensitive, any white space between
 * words, a word boundary after the last); *rest points after the match. */
static bool match_words(const char *name, const char *in, const char **rest)
{
	while (*name) {
		if (*name == ' ') {
			if (!isspace((unsigned char)*in))
				return false;
			while (isspace((unsigned char)*in))
				in++;
			name++;
			continue;
		}
		if (toupper((unsigned char)*in) != *name)
			return false;
		in++;
		name++;
	}
	if (*in && !isspace((unsigned char)*in))
		return false;
	while (isspace((unsigned char)*in))
		in++;
	*rest = in;
	return true;
}

/* Copies the command text, without surrounding space and one trailing ';', into buf.
 * Returns false (with an error queued) when it is too long or holds a second statement. */
static bool clean_command(struct admin_ctx *x, const char *sql, char *buf, size_t len)
{
	while (isspace((unsigned char)*sql))
		sql++;
	size_t n = strlen(sql);
	while (n && (isspace((unsigned char)sql[n - 1]) || sql[n - 1] == ';'))
		n--;
	if (n >= len) {
		admin_error(x, "54000", "console command too long (over %zu bytes)", len - 1);
		return false;
	}
	memcpy(buf, sql, n);
	buf[n] = 0;
	/* a ';' outside quotes means two statements */
	bool q = false;
	for (size_t i = 0; i < n; i++) {
		if (buf[i] == '\'')
			q = !q;
		else if (buf[i] == ';' && !q) {
			admin_error(x, "42601", "one console command per query, please");
			return false;
		}
	}
	return true;
}

static const struct admin_cmd *find_command(const char *text, const char **rest)
{
	const struct admin_cmd *c;
	for (size_t i = 0; (c = admin_cmd_nth(i)); i++)
		if (match_words(c->name, text, rest))
			return c;
	return NULL;
}

static void unknown_command(struct admin_ctx *x, const char *text)
{
	if (!strncasecmp(text, "SHOW", 4) && (isspace((unsigned char)text[4]) || !text[4]))
		admin_error(x, "42704", "unknown SHOW command: %.128s (see SHOW HELP)", text);
	else
		admin_error(x, "42601", "invalid console command: %.128s (see SHOW HELP)", text);
}

/* A database name argument: an identifier, optionally "double quoted". */
static bool parse_db_name(const char *arg, char *out, size_t len)
{
	size_t n = 0;
	if (*arg == '"') {
		arg++;
		while (*arg && !(*arg == '"' && arg[1] != '"')) {
			if (*arg == '"')
				arg++;
			if (n >= len - 1)
				return false;
			out[n++] = *arg++;
		}
		if (*arg != '"' || arg[1])
			return false;
	} else {
		while (*arg && !isspace((unsigned char)*arg)) {
			if (n >= len - 1)
				return false;
			out[n++] = *arg++;
		}
		if (*arg)
			return false;
	}
	out[n] = 0;
	return n > 0;
}

/* Checks the arguments and access of x->cmd; false with an error queued. */
static bool check_command(struct admin_ctx *x)
{
	const struct admin_cmd *c = x->cmd;
	/* Against the lists as they are now, not as they were at login: a RELOAD or SET that
	 * takes a user off admin_users takes the control commands away at once. */
	const struct config *cf = x->w->cf;
	x->cl->admin = x->cl->peer_admin || config_list_has(cf->admin_users, x->cl->user_name);
	if (!x->cl->admin && !config_list_has(cf->stats_users, x->cl->user_name)) {
		admin_error(x, "42501", "permission denied: %s needs a user listed in admin_users or stats_users",
			    c->name);
		return false;
	}
	if (c->admin_only && !x->cl->admin) {
		admin_error(x, "42501", "permission denied: %s needs a user listed in admin_users", c->name);
		return false;
	}
	switch (c->arg) {
	case ARG_NONE:
		if (*x->arg) {
			admin_error(x, "42601", "%s takes no argument", c->name);
			return false;
		}
		return true;
	case ARG_DB_OPT:
		if (!*x->arg)
			return true;
		/* fall through */
	case ARG_DB: {
		char name[256];
		if (!parse_db_name(x->arg, name, sizeof(name))) {
			admin_error(x, "42601", "%s needs one database name", c->name);
			return false;
		}
		x->db = pool_find_database(x->w, name);
		if (!x->db) {
			/* PgBouncer's text and SQLSTATE (08P01: it answers every console error so), for
			 * scripts written against it. */
			admin_error(x, "08P01", "no such database: %s", name);
			return false;
		}
		return true;
	}
	case ARG_ID:
		if (!*x->arg) {
			admin_error(x, "42601", "%s needs a client id", c->name);
			return false;
		}
		return true;
	case ARG_SHUTDOWN:
	case ARG_SET:
		return true;
	}
	return true;
}

/* After a command (or a listing's batch) ran: a listing that stopped early is kept in the
 * session to go on once the reply drains (ADMIN_MORE); anything else completes here. */
static enum admin_rc finish(struct admin_ctx *x, enum admin_rc rc)
{
	struct admin_session *s = x->cl->console;
	if (rc == ADMIN_OK && x->more) {
		s->stream.cmd = x->cmd;
		s->stream.simple = x->simple;
		s->stream.phase = x->phase;
		s->stream.after = x->after;
		return ADMIN_MORE;
	}
	s->stream.cmd = NULL;
	free(s->stream.order);
	s->stream.order = NULL;
	s->stream.n_order = 0;
	if (rc == ADMIN_OK)
		admin_command_complete(x->o, x->cmd->cols ? "SHOW" : x->cmd->name);   /* as PgBouncer */
	return rc;
}

/* Runs one command text.  simple: a Query message (RowDescription is sent here). */
static enum admin_rc run_command(struct client *cl, const char *sql, bool simple)
{
	struct admin_ctx x = { .cl = cl, .w = cl->c.w, .o = &cl->c.out, .simple = simple,
			       .describe = simple };
	char text[ADMIN_CMD_MAX + 1];
	x.cmd = &none;
	if (!clean_command(&x, sql, text, sizeof(text)))
		return ADMIN_ERR;
	if (!*text) {
		pktbuf_begin(x.o, 'I');
		pktbuf_end(x.o);
		return ADMIN_OK;
	}
	x.cmd = find_command(text, &x.arg);
	if (!x.cmd) {
		x.cmd = &none;
		unknown_command(&x, text);
		return ADMIN_ERR;
	}
	if (!check_command(&x))
		return ADMIN_ERR;
	if (x.cmd->cols && x.describe)
		admin_row_description(x.o, x.cmd);
	return finish(&x, x.cmd->run(&x));
}

/* Describe of the unnamed statement or portal: the columns the command would return. */
static bool describe_command(struct client *cl, const char *sql, bool statement)
{
	struct admin_ctx x = { .cl = cl, .w = cl->c.w, .o = &cl->c.out };
	char text[ADMIN_CMD_MAX + 1];
	x.cmd = &none;
	if (!clean_command(&x, sql, text, sizeof(text)))
		return false;
	const struct admin_cmd *c = *text ? find_command(text, &x.arg) : NULL;
	if (*text && !c) {
		unknown_command(&x, text);
		return false;
	}
	if (statement) {
		pktbuf_begin(x.o, 't');
		pktbuf_put_u16(x.o, 0);
		pktbuf_end(x.o);
	}
	if (c && c->cols) {
		admin_row_description(x.o, c);
	} else {
		pktbuf_begin(x.o, 'n');
		pktbuf_end(x.o);
	}
	return true;
}

/* ---------------------------------------------------------------------------------------- */
/* messages */

static int stmt_find(const struct admin_session *s, const char *name)
{
	for (int i = 0; i < ADMIN_MAX_STMTS; i++)
		if (s->stmt[i].text && strcmp(s->stmt[i].name, name) == 0)
			return i;
	return -1;
}

static void stmt_drop(struct admin_session *s, int i)
{
	free(s->stmt[i].text);
	s->stmt[i].text = NULL;
}

/* Parse: a statement (named or not) without parameters. */
static bool on_parse(struct client *cl, const uint8_t *body, uint32_t blen)
{
	struct admin_session *s = cl->console;
	const uint8_t *p = body, *end = body + blen;
	const char *name = proto_get_str(&p, end);
	const char *query = name ? proto_get_str(&p, end) : NULL;
	if (!query || end - p < 2) {
		proto_error(&cl->c.out, "ERROR", "08P01", "invalid Parse message");
		return false;
	}
	uint16_t nparams = (uint16_t)(p[0] << 8 | p[1]);
	if (nparams) {
		proto_error(&cl->c.out, "ERROR", "0A000", "console commands take no parameters");
		return false;
	}
	size_t len = strlen(query);
	if (len > ADMIN_CMD_MAX) {
		proto_error(&cl->c.out, "ERROR", "54000", "console command too long");
		return false;
	}
	if (strlen(name) >= ADMIN_NAME_MAX) {
		proto_error(&cl->c.out, "ERROR", "42602", "statement name too long");
		return false;
	}
	int i = stmt_find(s, name);
	if (i >= 0 && *name) {
		proto_error(&cl->c.out, "ERROR", "42P05", "prepared statement already exists");
		return false;
	}
	if (i < 0)
		for (i = 0; i < ADMIN_MAX_STMTS && s->stmt[i].text; i++)
			;
	if (i >= ADMIN_MAX_STMTS) {
		proto_error(&cl->c.out, "ERROR", "53400", "too many prepared statements on the console");
		return false;
	}
	char *text = strdup(query);
	if (!text) {
		proto_error(&cl->c.out, "ERROR", "53200", "out of memory");
		return false;
	}
	stmt_drop(s, i);
	snprintf(s->stmt[i].name, sizeof(s->stmt[i].name), "%s", name);
	s->stmt[i].text = text;
	pktbuf_begin(&cl->c.out, '1');
	pktbuf_end(&cl->c.out);
	return true;
}

/* Bind: the unnamed portal, no parameters, text results. */
static bool on_bind(struct client *cl, const uint8_t *body, uint32_t blen)
{
	struct admin_session *s = cl->console;
	const uint8_t *p = body, *end = body + blen;
	const char *portal = proto_get_str(&p, end);
	const char *stmt = portal ? proto_get_str(&p, end) : NULL;
	if (!stmt || end - p < 2) {
		proto_error(&cl->c.out, "ERROR", "08P01", "invalid Bind message");
		return false;
	}
	uint16_t nfmt = (uint16_t)(p[0] << 8 | p[1]);
	p += 2;
	if ((size_t)(end - p) < (size_t)nfmt * 2 + 2) {
		proto_error(&cl->c.out, "ERROR", "08P01", "invalid Bind message");
		return false;
	}
	p += (size_t)nfmt * 2;
	uint16_t nparams = (uint16_t)(p[0] << 8 | p[1]);
	p += 2;
	if (nparams) {
		proto_error(&cl->c.out, "ERROR", "0A000", "console commands take no parameters");
		return false;
	}
	if (end - p < 2) {
		proto_error(&cl->c.out, "ERROR", "08P01", "invalid Bind message");
		return false;
	}
	uint16_t nres = (uint16_t)(p[0] << 8 | p[1]);
	p += 2;
	if ((size_t)(end - p) < (size_t)nres * 2) {
		proto_error(&cl->c.out, "ERROR", "08P01", "invalid Bind message");
		return false;
	}
	for (uint16_t i = 0; i < nres; i++)
		if (p[2 * i] || p[2 * i + 1]) {
			proto_error(&cl->c.out, "ERROR", "0A000", "the console returns text results only");
			return false;
		}
	if (*portal) {
		proto_error(&cl->c.out, "ERROR", "0A000", "the console supports the unnamed portal only");
		return false;
	}
	int i = stmt_find(s, stmt);
	if (i < 0) {
		proto_error(&cl->c.out, "ERROR", "26000", "prepared statement does not exist");
		return false;
	}
	char *text = strdup(s->stmt[i].text);
	if (!text) {
		proto_error(&cl->c.out, "ERROR", "53200", "out of memory");
		return false;
	}
	free(s->portal);
	s->portal = text;
	pktbuf_begin(&cl->c.out, '2');
	pktbuf_end(&cl->c.out);
	return true;
}

/* The command text a Describe / Close names, or NULL with an error queued. */
static const char *target_text(struct client *cl, const uint8_t *body, uint32_t blen, int *slot)
{
	struct admin_session *s = cl->console;
	*slot = -1;
	if (blen < 2 || (body[0] != 'S' && body[0] != 'P') || body[blen - 1] != 0) {
		proto_error(&cl->c.out, "ERROR", "08P01", "invalid Describe or Close message");
		return NULL;
	}
	const char *name = (const char *)body + 1;
	if (body[0] == 'S') {
		*slot = stmt_find(s, name);
		if (*slot < 0) {
			proto_error(&cl->c.out, "ERROR", "26000", "prepared statement does not exist");
			return NULL;
		}
		return s->stmt[*slot].text;
	}
	if (*name || !s->portal) {
		proto_error(&cl->c.out, "ERROR", "34000", "portal does not exist");
		return NULL;
	}
	return s->portal;
}

/* Handles one message; after an error in the extended protocol, messages up to Sync are skipped. */
static enum admin_rc on_message(struct client *cl, char type, const uint8_t *body, uint32_t blen)
{
	struct admin_session *s = cl->console;
	struct pktbuf *o = &cl->c.out;
	if (type == 'S') {
		s->skip_to_sync = false;
		proto_ready(o, 'I');
		return ADMIN_OK;
	}
	if (type == 'Q') {
		s->skip_to_sync = false;
		cl->c.w->console_stats.query_count++;   /* each console command: a query, a transaction */
		cl->c.w->console_stats.xact_count++;
		if (!blen || body[blen - 1] != 0 || memchr(body, 0, blen) != body + blen - 1) {
			proto_error(o, "ERROR", "08P01", "invalid Query message");
			proto_ready(o, 'I');
			return ADMIN_OK;
		}
		enum admin_rc rc = run_command(cl, (const char *)body, true);
		if (rc != ADMIN_WAIT && rc != ADMIN_MORE)
			proto_ready(o, 'I');   /* else when the wait or the listing is over */
		return rc;
	}
	if (s->skip_to_sync)
		return ADMIN_OK;
	bool ok = true;
	enum admin_rc rc = ADMIN_OK;
	switch (type) {
	case 'P':
		ok = on_parse(cl, body, blen);
		break;
	case 'B':
		ok = on_bind(cl, body, blen);
		break;
	case 'D': {
		int slot;
		const char *text = target_text(cl, body, blen, &slot);
		ok = text && describe_command(cl, text, body[0] == 'S');
		break;
	}
	case 'E': {
		const uint8_t *p = body, *end = body + blen;
		const char *portal = proto_get_str(&p, end);
		if (!portal || *portal || !s->portal) {
			proto_error(o, "ERROR", "34000", "portal does not exist");
			ok = false;
			break;
		}
		rc = run_command(cl, s->portal, false);
		ok = rc != ADMIN_ERR;
		break;
	}
	case 'C': {
		/* closing what does not exist is not an error */
		if (blen >= 2 && body[0] == 'S' && body[blen - 1] == 0) {
			int i = stmt_find(s, (const char *)body + 1);
			if (i >= 0)
				stmt_drop(s, i);
		} else if (blen >= 2 && body[0] == 'P' && body[1] == 0) {
			free(s->portal);
			s->portal = NULL;
		}
		pktbuf_begin(o, '3');
		pktbuf_end(o);
		break;
	}
	case 'H':
		break;
	case 'F':
		/* A FunctionCall is answered like a Query: error, then ReadyForQuery, no skipping. */
		proto_error(o, "ERROR", "0A000", "function calls are not supported on the console");
		proto_ready(o, 'I');
		return ADMIN_OK;
	default: {
		char msg[96];
		snprintf(msg, sizeof(msg), "unsupported message type '%c' on the console",
			 type >= 32 && type < 127 ? type : '?');
		proto_error(o, "ERROR", "08P01", msg);
		ok = false;
	}
	}
	if (!ok)
		s->skip_to_sync = true;
	return rc;
}

void admin_process(struct client *cl)
{
	struct admin_session *s = cl->console;
	struct iobuf *b = cl->c.in;
	while (!cl->c.dead && s->wait == WAIT_NONE && !s->stream.cmd && b &&
	       b->end - b->scan >= PROTO_HDR) {
		char type = (char)b->data[b->scan];
		uint32_t len = proto_get32(b->data + b->scan + 1);
		if (len < 4 || len > ADMIN_MSG_MAX) {
			client_close(cl, "invalid console message", "08P01");
			return;
		}
		if (b->end - b->scan < len + 1)
			break;
		const uint8_t *body = b->data + b->scan + PROTO_HDR;
		uint32_t blen = len - 4;
		b->scan += len + 1;
		b->start = b->scan;
		if (type == 'X') {
			client_close(cl, "client close request", NULL);
			return;
		}
		on_message(cl, type, body, blen);
		if (cl->c.out.failed) {
			client_close(cl, "out of memory for a console reply", NULL);
			return;
		}
	}
	if (cl->c.dead)
		return;
	if (cl->c.out.len && sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return;
	}
	sbuf_release_buf(&cl->c);
	if (s->stream.cmd)
		event_add(&s->ev_drain, NULL);   /* the next batch once the socket takes more */
	else if (s->wait == WAIT_NONE)
		sbuf_resume(&cl->c);   /* reading stops when the buffer fills behind a held command */
	if (s->shutdown_mode) {
		int mode = s->shutdown_mode;
		s->shutdown_mode = 0;
		if (cl->c.w->daemon)
			cl->c.w->daemon->shutdown(cl->c.w, mode);
	}
}

/* The socket can take more of a listing: what is left of the last batch goes, then the next
 * batch is made.  One batch per wakeup, so a long listing never holds up the loop. */
static void stream_next(evutil_socket_t fd, short what, void *arg)
{
	struct admin_session *s = arg;
	struct client *cl = s->cl;
	struct worker *w = cl->c.w;
	w->now = worker_now();
	if (!s->stream.cmd || cl->c.dead)
		return;
	if (cl->c.out.len) {
		int r = sbuf_send_out(&cl->c);
		if (r < 0) {
			client_close(cl, "send failed", NULL);
			return;
		}
		if (r > 0) {
			event_add(&s->ev_drain, NULL);
			return;
		}
	}
	struct admin_ctx x = { .cl = cl, .w = w, .o = &cl->c.out, .cmd = s->stream.cmd, .arg = "",
			       .simple = s->stream.simple, .phase = s->stream.phase,
			       .after = s->stream.after };
	enum admin_rc rc = finish(&x, x.cmd->run(&x));
	if (rc == ADMIN_ERR && !x.simple)
		s->skip_to_sync = true;
	else if (rc != ADMIN_MORE && x.simple)
		proto_ready(x.o, 'I');
	if (cl->c.out.failed) {
		client_close(cl, "out of memory for a console reply", NULL);
		return;
	}
	admin_process(cl);
}

/* ---------------------------------------------------------------------------------------- */
/* entry points */

bool admin_is_console_db(const char *name)
{
	return strcmp(name, "pgmux") == 0 || strcmp(name, "pgbouncer") == 0;
}

void admin_client_ready(struct client *cl)
{
	struct worker *w = cl->c.w;
	bool admin = cl->peer_admin || config_list_has(w->cf->admin_users, cl->user_name);
	bool stats = admin || config_list_has(w->cf->stats_users, cl->user_name);
	if (!stats) {
		client_close(cl, "not allowed", "42501");
		return;
	}
	struct admin_session *s = calloc(1, sizeof(*s));
	if (!s) {
		client_close(cl, "out of memory", "53200");
		return;
	}
	s->cl = cl;
	w->console_stats.client_login_count++;
	evtimer_assign(&s->ev_wait, w->base, admin_wait_poll, s);
	/* Beside the conn's own write event: this one is added only while a listing waits for
	 * the socket to drain, and its callback sends before it makes more. */
	event_assign(&s->ev_drain, w->base, cl->c.fd, EV_WRITE, stream_next, s);
	cl->console = s;
	cl->admin = admin;
	stats_start(w);
	struct pktbuf *o = &cl->c.out;
	proto_auth_request(o, 0, NULL, 0);
	proto_param_status(o, "server_version", "15.0 (" PGMUX_VERSION_STR ")");
	proto_param_status(o, "server_encoding", "UTF8");
	proto_param_status(o, "client_encoding", "UTF8");
	proto_param_status(o, "DateStyle", "ISO, MDY");
	proto_param_status(o, "integer_datetimes", "on");
	proto_param_status(o, "standard_conforming_strings", "on");
	proto_param_status(o, "application_name", "pgmux");
	proto_backend_key(o, 0, 0);
	proto_ready(o, 'I');
	client_set_state(cl, CL_ADMIN);
	if (sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return;
	}
	sbuf_resume(&cl->c);
	/* Queries sent together with the login are already here: no read event will come. */
	if (sbuf_unparsed(&cl->c))
		admin_process(cl);
}

void admin_on_data(struct client *cl)
{
	if (!cl->console)
		return;
	admin_process(cl);
}

bool admin_uses_database(struct worker *w, const struct database *db)
{
	struct list *it;
	for (it = w->cl_admin.next; it != &w->cl_admin; it = it->next) {
		const struct admin_session *s = list_entry(it, struct client, node)->console;
		if (s && s->wait != WAIT_NONE && s->wait_db == db)
			return true;
	}
	return false;
}

void admin_client_gone(struct client *cl)
{
	struct admin_session *s = cl->console;
	if (!s)
		return;
	event_del(&s->ev_wait);
	event_del(&s->ev_drain);
	for (int i = 0; i < ADMIN_MAX_STMTS; i++)
		stmt_drop(s, i);
	free(s->portal);
	free(s->stream.order);
	free(s);
	cl->console = NULL;
}

static const struct console_ops admin_console_ops = {
	.is_console_db = admin_is_console_db,
	.ready = admin_client_ready,
	.on_data = admin_on_data,
	.gone = admin_client_gone,
	.uses_database = admin_uses_database,
};

void admin_register(struct worker *w)
{
	w->console = &admin_console_ops;
}
