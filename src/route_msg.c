/* route_msg.c: a routed client's messages as routing reads and answers them: their SQL, its classification (write_functions, the verdict cache), and what pgmux answers itself (SET pgmux.*, a held-back BEGIN, a refusal). */
#include "route_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "log.h"
#include "prepared.h"
#include "sbuf.h"
#include "shard.h"
#include "shardplan.h"
#include "verdict.h"

/* Compiles write_functions when its text changed (start, reload, console SET). */
void route_write_funcs_update(struct worker *w)
{
	const char *want = w->cf->write_functions;
	if (w->write_funcs && w->write_funcs_text && strcmp(w->write_funcs_text, want) == 0)
		return;
	const char *err = NULL;
	struct sqlscan_funcs *f = sqlscan_funcs_new(want, &err);
	char *text = strdup(want);
	if (!f || !text) {
		log_warn("write_functions: %s; keeping the previous list", err ? err : "out of memory");
		sqlscan_funcs_free(f);
		free(text);
		return;
	}
	sqlscan_funcs_free(w->write_funcs);
	free(w->write_funcs_text);
	w->write_funcs = f;
	w->write_funcs_text = text;
	rt_verdicts_clear(w);   /* verdicts made with the old list */
}

/* ---- verdicts ------------------------------------------------------------------------------ */

void rt_verdicts_clear(struct worker *w)
{
	verdict_free(w->verdicts);
	w->verdicts = NULL;
}

/* ---- answering locally: SET pgmux.*, a deferred BEGIN ---------------------------------- */

static void put_complete(struct pktbuf *o, const char *tag)
{
	pktbuf_begin(o, 'C');
	pktbuf_put_str(o, tag);
	pktbuf_end(o);
}

static void put_simple(struct pktbuf *o, char type)
{
	pktbuf_begin(o, type);
	pktbuf_end(o);
}

/* Applies SET/RESET pgmux.*; false with msg and *state (SQLSTATE) filled for a bad value. */
static bool apply_set(struct client *cl, const struct sqlscan_result *r, char *msg, size_t len,
		      const char **state)
{
	struct route_session *rt = cl->rt;
	switch (r->set) {
	case SQLSCAN_SET_ROLE:
		if (!strcasecmp(r->set_value, "primary"))
			rt->role_pref = RT_PRIMARY;
		else if (!strcasecmp(r->set_value, "replica"))
			rt->role_pref = RT_REPLICA;
		else if (!strcasecmp(r->set_value, "auto") || !strcasecmp(r->set_value, "default"))
			rt->role_pref = RT_AUTO;
		else {
			snprintf(msg, len, "invalid value for parameter \"pgmux.role\": \"%.60s\" "
				 "(expected primary, replica or auto)", r->set_value);
			return false;
		}
		return true;
	case SQLSCAN_RESET_ROLE:
		rt->role_pref = RT_AUTO;
		return true;
	case SQLSCAN_SET_USER_ID:
		/* Kept as the key's hash: text and uuid keys need no storage, and the shard
		 * follows the shard count of a reload. */
		if (!shard_user_id_hash(rt->rs->cl->cf.shard_key_type, r->set_value,
					r->set_value_bad, &rt->user_id_hash, msg, len, state))
			return false;
		rt->has_user_id = true;
		return true;
	case SQLSCAN_RESET_USER_ID:
		rt->has_user_id = false;
		return true;
	case SQLSCAN_SET_SHARD: {
		char *end;
		long v = strtol(r->set_value, &end, 10);
		int n = rt->rs->cl->n_shards;
		if (r->set_value_bad || end == r->set_value || *end || v < 0 || v >= n) {
			snprintf(msg, len, "invalid value for parameter \"pgmux.shard\": \"%.60s\" "
				 "(expected 0 to %d)", r->set_value, n - 1);
			return false;
		}
		rt->shard_pref = (int32_t)v;
		return true;
	}
	case SQLSCAN_RESET_SHARD:
		rt->shard_pref = -1;
		return true;
	default:
		return true;
	}
}

static bool is_reset(int set)
{
	return set == SQLSCAN_RESET_ROLE || set == SQLSCAN_RESET_USER_ID || set == SQLSCAN_RESET_SHARD;
}

/* Status letter for a ReadyForQuery pgmux writes itself. */
char rt_tx_status(const struct client *cl)
{
	const struct route_session *rt = cl->rt;
	return rt->deferred ? (rt->deferred_failed ? 'E' : 'T') : 'I';
}

enum fake_tag { FAKE_SET, FAKE_RESET, FAKE_BEGIN, FAKE_COMMIT, FAKE_ROLLBACK };

static const char *const fake_tags[] = { "SET", "RESET", "BEGIN", "COMMIT", "ROLLBACK" };

/* Consumes the message at scan (whole in the buffer). */
/* The message at scan is answered by pgmux: it never goes to a server (the part not yet
 * received is read away as it comes). */
static void consume(struct client *cl, uint32_t total)
{
	client_drop_msg(cl, total);
}

enum hook_rc rt_reply_out(struct client *cl, uint32_t total)
{
	consume(cl, total);
	if (sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return HOOK_STOP;
	}
	return HOOK_CONSUMED;
}

/* An extended batch pgmux answers itself (SET pgmux.*, a BEGIN it holds back, the COMMIT of
 * an empty transaction, or one it refused): each message answered until its Sync. */
enum hook_rc rt_fake_message(struct client *cl, char type, uint32_t total, uint32_t avail)
{
	struct route_session *rt = cl->rt;
	struct pktbuf *o = &cl->c.out;
	(void)avail;   /* only the type matters: the message is dropped as it arrives */
	if (rt->rt_fake_err && type != 'S') {
		/* After an error PostgreSQL answers nothing up to the Sync: every message, a Query
		 * or FunctionCall too, is skipped in silence. */
		return rt_reply_out(cl, total);
	}
	switch (type) {
	case 'B': put_simple(o, '2'); break;
	case 'D': put_simple(o, 'n'); break;
	case 'E':
		put_complete(o, fake_tags[rt->rt_fake_tag]);
		break;
	case 'C': put_simple(o, '3'); break;
	case 'H': break;
	case 'S':
		if (rt->rt_fake_end)
			rt_clear_deferred(cl);
		rt->rt_fake = false;
		rt->rt_fake_err = false;
		rt->rt_fake_end = false;
		proto_ready(o, rt_tx_status(cl));
		break;
	case 'P':
		put_simple(o, '1');
		break;
	default:
		client_close(cl, "unexpected message in an extended-protocol batch pgmux answers", "08P01");
		return HOOK_STOP;
	}
	return rt_reply_out(cl, total);
}

enum hook_rc rt_handle_set(struct client *cl, char type, const struct sqlscan_result *r,
				    uint32_t total)
{
	struct route_session *rt = cl->rt;
	char msg[200];
	const char *state = "22023";
	bool ok = apply_set(cl, r, msg, sizeof(msg), &state);
	struct pktbuf *o = &cl->c.out;
	if (type == 'Q') {
		if (ok)
			put_complete(o, is_reset(r->set) ? "RESET" : "SET");
		else
			proto_error(o, "ERROR", state, msg);
		proto_ready(o, rt_tx_status(cl));
	} else {
		/* Parse: the rest of the batch is answered as if it ran. */
		rt->rt_fake = true;
		rt->rt_fake_tag = is_reset(r->set) ? FAKE_RESET : FAKE_SET;
		rt->rt_fake_err = !ok;
		if (ok)
			put_simple(o, '1');
		else
			proto_error(o, "ERROR", state, msg);
	}
	return rt_reply_out(cl, total);
}

/* An error for a batch pgmux will not run: a Query or FunctionCall gets it with its
 * ReadyForQuery; an extended batch gets it now and the rest up to its Sync is answered by
 * rt_fake_message. */
enum hook_rc rt_refuse(struct client *cl, char type, uint32_t total, const char *sqlstate,
				const char *msg)
{
	struct route_session *rt = cl->rt;
	struct pktbuf *o = &cl->c.out;
	proto_error(o, "ERROR", sqlstate, msg);
	if (rt->deferred)
		rt->deferred_failed = true;   /* as PostgreSQL: the block is aborted */
	if (type == 'Q' || type == 'F' || type == 'S') {
		/* a Query or FunctionCall is answered whole; so is a lone Sync */
		proto_ready(o, rt_tx_status(cl));
	} else {
		rt->rt_fake = true;
		rt->rt_fake_err = true;
	}
	return rt_reply_out(cl, total);
}

/* Why a statement of a sharded database found no single shard, and what to do about it. */
void rt_shard_message(const struct cluster *c, int why, bool write, const struct sp_eval *e,
			  char *msg, size_t len)
{
	const char *key = c->shard_key ? c->shard_key : "the shard key";
	char at[32] = "";
	if (e && e->pos > 0)
		snprintf(at, sizeof(at), " (statement %d)", e->pos);
	if (why == SHARD_REFUSE && e && e->why)
		snprintf(msg, len, "pgmux: cannot route by %s on sharded database \"%s\"%s: %s", key,
			 c->name, at, e->why);
	else if (why == SHARD_BAD && e && e->why)
		snprintf(msg, len, "pgmux: the value of shard key %s%s cannot be read as the server "
			 "will read it: %s", key, at, e->why);
	else if (why == SHARD_MULTI)
		snprintf(msg, len, "pgmux: this statement's %s values belong to several shards of "
			 "database \"%s\"; send one statement per shard (cross-shard statements are "
			 "not supported%s)", key, c->name,
			 c->cf.no_shard_key == NOSHARD_ALL && write ? "; only reads fan out" : "");
	else if (why == SHARD_BAD)
		snprintf(msg, len, "pgmux: the shard key value (%s, pgmux.user_id or pgmux.shard) "
			 "is not a valid %s key (text keys: at most 1 KiB as a literal) or shard "
			 "number for database \"%s\" (%d shards)", key,
			 shard_key_type_name(c->cf.shard_key_type), c->name, c->n_shards);
	else
		snprintf(msg, len, "pgmux: no shard key for sharded database \"%s\"%s: add "
			 "WHERE %s = <value>, a /* pgmux: user_id=<value> */ or /* pgmux: shard=<n> */ "
			 "comment, or run SET pgmux.user_id = <value> (or SET pgmux.shard = <n>) first",
			 c->name, c->cf.no_shard_key == NOSHARD_ALL && write
			 ? " (no_shard_key = all fans out reads only)" : "", key);
}

/* The first word of a COMMIT-like statement, for the tag pgmux answers with. */
static const char *end_tag(const char *sql, size_t len)
{
	size_t i = 0;
	while (i < len && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r'))
		i++;
	return i < len && (sql[i] == 'r' || sql[i] == 'R' || sql[i] == 'a' || sql[i] == 'A')
	       ? "ROLLBACK" : "COMMIT";
}

void rt_clear_deferred(struct client *cl)
{
	struct route_session *rt = cl->rt;
	free(rt->deferred);
	rt->deferred = NULL;
	rt->deferred_len = 0;
	rt->deferred_failed = false;
}

/* Holds a BEGIN back (as a simple Query, whatever protocol it came in) and answers it. */
enum hook_rc rt_defer_begin(struct client *cl, char type, uint32_t total,
				     const char *sql, size_t len)
{
	struct route_session *rt = cl->rt;
	while (len && sql[len - 1] == '\0')
		len--;
	uint32_t n = (uint32_t)len + PROTO_HDR + 1;
	if (!(rt->deferred = malloc(n))) {
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	rt->deferred[0] = 'Q';
	proto_put32(rt->deferred + 1, n - 1);
	memcpy(rt->deferred + PROTO_HDR, sql, len);
	rt->deferred[n - 1] = 0;
	rt->deferred_len = n;
	rt->deferred_failed = false;
	if (type == 'Q') {
		put_complete(&cl->c.out, "BEGIN");
		proto_ready(&cl->c.out, 'T');
	} else {
		rt->rt_fake = true;
		rt->rt_fake_err = false;
		rt->rt_fake_tag = FAKE_BEGIN;
		put_simple(&cl->c.out, '1');
	}
	return rt_reply_out(cl, total);
}

/* The end of a transaction that never reached a server: answered here. */
enum hook_rc rt_end_deferred(struct client *cl, char type, uint32_t total,
				      const char *sql, size_t len)
{
	struct route_session *rt = cl->rt;
	bool rollback = rt->deferred_failed || !strcmp(end_tag(sql, len), "ROLLBACK");
	if (type == 'Q') {
		put_complete(&cl->c.out, rollback ? "ROLLBACK" : "COMMIT");
		rt_clear_deferred(cl);
		proto_ready(&cl->c.out, 'I');
	} else {
		rt->rt_fake = true;
		rt->rt_fake_err = false;
		rt->rt_fake_end = true;
		rt->rt_fake_tag = rollback ? FAKE_ROLLBACK : FAKE_COMMIT;
		put_simple(&cl->c.out, '1');
	}
	return rt_reply_out(cl, total);
}

/* ---- the SQL of a message ---------------------------------------------------------------- */

/* The statement text of a message, when pgmux can see it whole. */
/* The SQL text of a Query or Parse (whole: avail >= total) or of the statement a Bind names
 * (its names within avail). */
bool rt_message_sql(struct client *cl, char type, const uint8_t *h, uint32_t total,
			uint32_t avail, const char **sql, size_t *len)
{
	struct route_session *rt = cl->rt;
	const uint8_t *body = h + PROTO_HDR, *end = h + (avail < total ? avail : total);
	if (type != 'B' && avail < total)
		return false;
	if (type == 'Q') {
		*sql = (const char *)body;
		*len = total - PROTO_HDR;
		return true;
	}
	if (type == 'P') {
		/* mostly the unnamed statement: its name is the empty string */
		const uint8_t *q = body < end && body[0] == 0 ? body : memchr(body, 0, (size_t)(end - body));
		if (!q)
			return false;
		/* the text ends at its NUL, as a Query's does: the parameter types follow it */
		const uint8_t *z = memchr(q + 1, 0, (size_t)(end - q - 1));
		if (!z)
			return false;
		*sql = (const char *)q + 1;
		*len = (size_t)(z - q);
		return true;
	}
	if (type == 'B') {
		const uint8_t *portal_end = memchr(body, 0, (size_t)(end - body));
		if (!portal_end || portal_end + 1 >= end)
			return false;
		const char *name = (const char *)portal_end + 1;
		if (!memchr(name, 0, (size_t)(end - (const uint8_t *)name)))
			return false;
		uint32_t n;
		const char *q = *name ? ps_client_query(cl, name, &n) : NULL;
		if (q) {
			*sql = q;
			*len = n;
			return true;
		}
		/* the unnamed statement, or any when statement tracking is off: the text a sharded
		 * database's client parsed is remembered for its Binds */
		size_t sl;
		q = rt->rs && rt->rs->cl->n_shards > 1 ?
		    shardplan_bind_text(rt->sp, body, (uint32_t)(end - body), &sl) : NULL;
		if (!q)
			return false;
		*sql = q;
		*len = sl;
		return true;
	}
	return false;
}
