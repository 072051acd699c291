/* admin.c: the admin console: the virtual database "pgmux" (alias "pgbouncer") and its commands. */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "log.h"
#include "sbuf.h"

/* Console commands are short; a longer message is refused rather than buffered. */
#define ADMIN_MSG_MAX 8192

bool admin_is_console_db(const char *name)
{
	return strcmp(name, "pgmux") == 0 || strcmp(name, "pgbouncer") == 0;
}

void admin_client_ready(struct client *cl)
{
	struct worker *w = cl->c.w;
	bool admin = config_list_has(w->cf->admin_users, cl->user_name);
	bool stats = admin || config_list_has(w->cf->stats_users, cl->user_name);
	if (!stats) {
		client_close(cl, "not allowed", "42501");
		return;
	}
	cl->admin = admin;
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
}

static void send_row_description(struct pktbuf *o, int n, const char *const *names)
{
	pktbuf_begin(o, 'T');
	pktbuf_put_u16(o, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		pktbuf_put_str(o, names[i]);
		pktbuf_put_u32(o, 0);
		pktbuf_put_u16(o, 0);
		pktbuf_put_u32(o, 25);         /* text */
		pktbuf_put_u16(o, 0xffff);     /* -1: variable length */
		pktbuf_put_u32(o, 0xffffffff);
		pktbuf_put_u16(o, 0);
	}
	pktbuf_end(o);
}

static void send_data_row(struct pktbuf *o, int n, const char *const *vals)
{
	pktbuf_begin(o, 'D');
	pktbuf_put_u16(o, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		if (!vals[i]) {
			pktbuf_put_u32(o, 0xffffffff);
			continue;
		}
		size_t len = strlen(vals[i]);
		pktbuf_put_u32(o, (uint32_t)len);
		pktbuf_put(o, vals[i], len);
	}
	pktbuf_end(o);
}

static void command_complete(struct pktbuf *o, const char *tag)
{
	pktbuf_begin(o, 'C');
	pktbuf_put_str(o, tag);
	pktbuf_end(o);
}

static void run_command(struct client *cl, const char *sql)
{
	struct pktbuf *o = &cl->c.out;
	char cmd[256];
	size_t n = 0;
	while (*sql == ' ' || *sql == '\t' || *sql == '\n')
		sql++;
	while (sql[n] && sql[n] != ';' && n < sizeof(cmd) - 1) {
		cmd[n] = sql[n];
		n++;
	}
	while (n && (cmd[n - 1] == ' ' || cmd[n - 1] == '\n' || cmd[n - 1] == '\t'))
		n--;
	cmd[n] = 0;
	if (strcasecmp(cmd, "SHOW VERSION") == 0) {
		static const char *const cols[] = { "version" };
		const char *vals[] = { PGMUX_VERSION_STR };
		send_row_description(o, 1, cols);
		send_data_row(o, 1, vals);
		command_complete(o, "SHOW");
	} else if (!*cmd) {
		pktbuf_begin(o, 'I');
		pktbuf_end(o);
	} else {
		char msg[320];
		snprintf(msg, sizeof(msg), "invalid command: %s", cmd);
		proto_error(o, "ERROR", "42601", msg);
	}
}

void admin_on_data(struct client *cl)
{
	struct iobuf *b = cl->c.in;
	while (!cl->c.dead && b && b->end - b->scan >= PROTO_HDR) {
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
		if (type != 'Q') {
			client_close(cl, "the console speaks the simple query protocol only", "08P01");
			return;
		}
		if (!blen || body[blen - 1] != 0) {
			client_close(cl, "invalid query message", "08P01");
			return;
		}
		run_command(cl, (const char *)body);
		proto_ready(&cl->c.out, 'I');
	}
	if (cl->c.dead)
		return;
	if (cl->c.out.len && sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return;
	}
	if (b && b->start == b->end) {
		b->start = b->scan = b->end = 0;
		sbuf_release_buf(&cl->c);
	}
}

void admin_client_gone(struct client *cl)
{
	free(cl->console);
	cl->console = NULL;
}
