/* route_split.c: writes that span shards: a multi-row INSERT or a COPY FROM STDIN split per shard and committed on all of them with two-phase commit, one shard at a time over the client's link. */
#include "route_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "copysplit.h"
#include "log.h"
#include "pool.h"
#include "pool_info.h"
#include "prepared.h"
#include "sbuf.h"
#include "shard.h"
#include "shardhash.h"
#include "shardplan.h"
#include "splitsql.h"
#include "txtrack.h"

/* A COMMIT / ROLLBACK PREPARED whose server is lost runs again on a fresh one, this often. */
#define SPLIT_RESOLVE_TRIES 3

/* A saved ErrorResponse body longer than this is cut (its fields are read, not forwarded). */
#define SPLIT_ERR_MAX 4096

enum split_phase {
	SP_DESCRIBE = 1,    /* a COPY without a column list: its table's columns are asked for */
	SP_COPY_IN,     /* the client streams COPY data; rows go to their shards' buffers */
	SP_PREPARE,         /* each shard with rows runs BEGIN; its rows; PREPARE TRANSACTION */
	SP_COMMIT,          /* every shard prepared: COMMIT PREPARED on each */
	SP_ROLLBACK         /* one failed: ROLLBACK PREPARED on each that prepared */
};

struct split_shard {
	uint8_t *data;          /* COPY: its rows, until its step takes them */
	size_t len, cap;
	uint64_t rows;
	bool prepared;          /* its PREPARE TRANSACTION succeeded: it must be resolved */
	uint8_t tries;          /* COMMIT / ROLLBACK PREPARED runs lost with their server */
	char gid[80];
};

struct route_split {
	int phase;
	bool copy;
	bool returning;         /* an INSERT ... RETURNING: each shard's rows go to the client */
	bool sent_desc;         /* ... under the first shard's RowDescription */
	bool failed;            /* a step failed: everything prepared is rolled back */
	bool step_err;          /* the current step saw an ErrorResponse */
	int n;                  /* shards */
	int cur;                /* the shard the current step runs on, -1 before the first */
	uint32_t inject_left;   /* bytes of the step in the client's input not yet forwarded */
	uint64_t total;         /* rows written, for the command tag */
	uint64_t seq;           /* this statement's number in its gids */
	uint8_t *err;           /* the first error: its ErrorResponse body */
	uint32_t err_len;
	size_t bytes;           /* what the buffers below hold (max_client_memory) */
	char *sql;              /* the client's statement (NUL-terminated) */
	/* INSERT: its rows and the shard of each; a shard's text is built when its step goes */
	struct splitsql_insert ins;
	int *vs;
	/* COPY (sql is sent again to each shard) */
	struct splitsql_copy opts;
	struct copysplit cs;
	uint8_t *pend;          /* stream bytes not yet cut into rows */
	size_t pend_len, pend_cap, pend_tried;
	uint8_t *head;          /* the header line or binary signature each shard's data starts with */
	size_t head_len;
	uint64_t row_no;
	struct copysplit_key key;
	struct split_shard sh[];
};

/* Unique across this process's life and recognisable: pgmux_<pid>_<start>_<seq>_<shard>. */
static uint64_t split_seq;
static long split_epoch;

/* ---- the state's lifetime -------------------------------------------------------------------- */

static void split_free(struct route_split *sw)
{
	if (!sw)
		return;
	for (int i = 0; i < sw->n; i++)
		free(sw->sh[i].data);
	free(sw->err);
	free(sw->sql);
	splitsql_insert_free(&sw->ins);
	free(sw->vs);
	free(sw->pend);
	free(sw->head);
	free(sw);
}

void rt_split_free(struct client *cl)
{
	struct route_session *rt = cl->rt;
	struct route_split *sw = rt->sw;
	if (!sw)
		return;
	/* A client that leaves between the phases leaves prepared transactions: each is resolved
	 * as decided (COMMIT only once every shard had prepared) on an idle server of its shard;
	 * what cannot be is logged for the operator (pg_prepared_xacts). */
	struct cluster *c = rt->rs->cl;
	bool commit = sw->phase == SP_COMMIT;
	for (int i = 0; i < sw->n; i++) {
		const struct split_shard *s = &sw->sh[i];
		bool in_flight = sw->phase == SP_PREPARE && i == sw->cur && !s->prepared;
		if (in_flight)
			log_warn("split write %llu: client left while '%s' was being prepared on shard %d: "
				 "if it shows in pg_prepared_xacts, ROLLBACK PREPARED it",
				 (unsigned long long)sw->seq, s->gid, i);
		if (!s->prepared)
			continue;
		int t = i < c->n_shards ? c->primary[i] : -1;
		char q[160];
		snprintf(q, sizeof(q), "%s PREPARED '%s'", commit ? "COMMIT" : "ROLLBACK", s->gid);
		if (t >= 0 && t < rt->rs->n && rt->rs->pools[t] &&
		    pool_run_internal_later(rt->rs->pools[t], q))
			log_info("split write %llu: client left; %s on shard %d (now, or once one of its "
				 "servers is idle)", (unsigned long long)sw->seq, q, i);
		else
			log_warn("split write %llu: client left; prepared transaction '%s' on shard %d stays "
				 "until resolved (decision: %s)", (unsigned long long)sw->seq, s->gid, i, q);
	}
	split_free(sw);
	rt->sw = NULL;
	rt->split_copy_in = false;
	rt_span_end(cl);
}

uint64_t rt_split_bytes(const struct client *cl)
{
	const struct route_split *sw = cl->rt->sw;
	return sw ? sizeof(*sw) + (uint64_t)sw->n * sizeof(sw->sh[0]) + sw->bytes + sw->pend_cap : 0;
}

static struct route_split *split_new(struct client *cl, int n)
{
	struct route_split *sw = calloc(1, sizeof(*sw) + (size_t)n * sizeof(sw->sh[0]));
	if (!sw)
		return NULL;
	sw->n = n;
	sw->cur = -1;
	if (!split_epoch)
		split_epoch = (long)time(NULL);
	sw->seq = __atomic_add_fetch(&split_seq, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < n; i++)
		snprintf(sw->sh[i].gid, sizeof(sw->sh[i].gid), "pgmux_%ld_%ld_%llu_%d", (long)getpid(),
			 split_epoch, (unsigned long long)sw->seq, i);
	cl->rt->sw = sw;
	rt_span_begin(cl);
	return sw;
}

static bool append(struct split_shard *s, const void *p, size_t n)
{
	if (s->cap - s->len < n) {
		size_t cap = s->cap ? s->cap : 4096;
		while (cap - s->len < n)
			cap *= 2;
		uint8_t *d = realloc(s->data, cap);
		if (!d)
			return false;
		s->data = d;
		s->cap = cap;
	}
	memcpy(s->data + s->len, p, n);
	s->len += n;
	return true;
}

/* ---- answering the client ------------------------------------------------------------------ */

/* The statement is over: its answer (the summed tag, or the first error) and ReadyForQuery go
 * to the client, the state goes, and what the client sent meanwhile is read. */
static void split_answer(struct client *cl)
{
	struct route_session *rt = cl->rt;
	struct route_split *sw = rt->sw;
	struct pktbuf *o = &cl->c.out;
	char tag[256];
	if (sw->failed && sw->err) {
		pktbuf_begin(o, 'E');
		pktbuf_put(o, sw->err, sw->err_len);
		pktbuf_end(o);
	} else if (sw->failed) {
		proto_error(o, "ERROR", "XX000", "pgmux: a write that spans shards failed");
	} else {
		char t[64];
		snprintf(t, sizeof(t), sw->copy ? "COPY %llu" : "INSERT 0 %llu", (unsigned long long)sw->total);
		pktbuf_begin(o, 'C');
		pktbuf_put_str(o, t);
		pktbuf_end(o);
	}
	proto_ready(o, 'I');
	log_debug("%s: split write %llu %s", client_tag(cl, tag, sizeof(tag)),
		  (unsigned long long)sw->seq, sw->failed ? "failed, rolled back" : "committed");
	split_free(sw);
	rt->sw = NULL;
	rt->split_copy_in = false;
	rt_span_end(cl);
	if (sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return;
	}
}

/* An error of pgmux's own that the client gets in place of the statement's answer: the write
 * fails, and whatever had prepared is rolled back. */
static void split_fail_local(struct client *cl, const char *sqlstate, const char *msg)
{
	struct route_split *sw = cl->rt->sw;
	struct pktbuf pb = { 0 };
	proto_error(&pb, "ERROR", sqlstate, msg);
	free(sw->err);
	sw->err = NULL;
	if (!pb.failed && pb.len > PROTO_HDR && (sw->err = malloc(pb.len - PROTO_HDR))) {
		memcpy(sw->err, pb.data + PROTO_HDR, pb.len - PROTO_HDR);
		sw->err_len = pb.len - PROTO_HDR;
	}
	pktbuf_free(&pb);
	sw->failed = true;
	char tag[256];
	log_info("%s: split write %llu refused: %s", client_tag(cl, tag, sizeof(tag)),
		 (unsigned long long)sw->seq, msg);
}

/* ---- the steps ----------------------------------------------------------------------------- */

/* The next step's bytes, put in front of the client's input: they route to shard sw->cur
 * (rt_split_pick) and go out as if the client had sent them. */
static bool inject(struct client *cl, struct pktbuf *pb, uint32_t replace)
{
	struct route_split *sw = cl->rt->sw;
	bool ok = !pb->failed;
	if (ok && replace)
		ok = sbuf_replace(&cl->c, replace, pb->data, pb->len);
	else if (ok) {
		ok = sbuf_insert(&cl->c, pb->data, pb->len);
		if (ok)
			cl->c.in->scan -= pb->len;
	}
	if (ok)
		sw->inject_left = pb->len;
	pktbuf_free(pb);
	return ok;
}

/* The step for shard i in the current phase, as client messages. */
static void build_step(struct route_split *sw, int i, struct pktbuf *pb)
{
	struct split_shard *s = &sw->sh[i];
	char q[200];
	if (sw->phase == SP_COMMIT || sw->phase == SP_ROLLBACK) {
		snprintf(q, sizeof(q), "%s PREPARED '%s'", sw->phase == SP_COMMIT ? "COMMIT" : "ROLLBACK",
			 s->gid);
		proto_query(pb, q);
		return;
	}
	/* "\n;" ends a trailing -- comment of the client's text before pgmux's own statement. */
	snprintf(q, sizeof(q), "\n;PREPARE TRANSACTION '%s'", s->gid);
	pktbuf_begin(pb, 'Q');
	pktbuf_put(pb, "BEGIN;\n", 7);
	if (sw->copy) {
		pktbuf_put(pb, sw->sql, strlen(sw->sql));
	} else {
		/* this shard's rows only: never longer than the client's text plus two blanks */
		bool *pick = malloc(sw->ins.n_rows * sizeof(bool));
		char *text = malloc((size_t)sw->ins.len + 2);
		if (pick && text) {
			for (uint32_t r = 0; r < sw->ins.n_rows; r++)
				pick[r] = sw->vs[r] == i;
			size_t n = splitsql_insert_build(sw->sql, &sw->ins, pick, text);
			assert(n <= (size_t)sw->ins.len + 2);
			pktbuf_put(pb, text, n);
		} else {
			pb->failed = true;
		}
		free(pick);
		free(text);
	}
	pktbuf_put_str(pb, q);
	pktbuf_end(pb);
	if (!sw->copy)
		return;
	pktbuf_begin(pb, 'd');
	if (sw->head_len)
		pktbuf_put(pb, sw->head, sw->head_len);
	pktbuf_put(pb, s->data, s->len);
	if (sw->opts.format == SPLITSQL_BINARY)
		pktbuf_put(pb, copysplit_bin_trailer, 2);
	pktbuf_end(pb);
	pktbuf_begin(pb, 'c');
	pktbuf_end(pb);
}

/* Moves to the next step: the next shard of this phase, the next phase, or the answer.
 * replace: the client message at scan (this many bytes) that the step takes the place of;
 * 0 to insert it in front.  false: nothing left to run (answered, or the client closed). */
static bool split_advance(struct client *cl, uint32_t replace)
{
	struct route_split *sw = cl->rt->sw;
	for (;;) {
		int i = sw->cur + 1;
		for (; i < sw->n; i++) {
			const struct split_shard *s = &sw->sh[i];
			if (sw->phase == SP_PREPARE ? s->rows > 0 : s->prepared)
				break;
		}
		if (i < sw->n && !(sw->phase == SP_PREPARE && sw->failed)) {
			sw->cur = i;
			struct pktbuf pb = { 0 };
			build_step(sw, i, &pb);
			if (!inject(cl, &pb, replace)) {
				client_close(cl, "out of memory running a write that spans shards", "53200");
				return false;
			}
			if (sw->phase == SP_PREPARE && sw->sh[i].data) {
				/* its rows are in the step now */
				struct split_shard *sh = &sw->sh[i];
				sw->bytes -= sh->cap;
				free(sh->data);
				sh->data = NULL;
				sh->len = sh->cap = 0;
			}
			return true;
		}
		if (sw->phase == SP_PREPARE) {
			sw->phase = sw->failed ? SP_ROLLBACK : SP_COMMIT;
			sw->cur = -1;
			char tag[256];
			log_info("%s: split write %llu: decision %s (gids pgmux_%ld_%ld_%llu_<shard>)",
				 client_tag(cl, tag, sizeof(tag)), (unsigned long long)sw->seq,
				 sw->failed ? "rollback" : "commit", (long)getpid(), split_epoch,
				 (unsigned long long)sw->seq);
			continue;
		}
		if (replace && rt_reply_out(cl, replace) == HOOK_STOP)
			return false;
		split_answer(cl);
		return false;
	}
}

/* ---- starting ------------------------------------------------------------------------------- */

/* Refuses what a spanning write may not be: inside a transaction block, pipelined, session
 * pooling.  NULL when it may run. */
static const char *split_context_refusal(struct client *cl, uint32_t total, uint32_t avail)
{
	struct route_session *rt = cl->rt;
	if (rt->deferred)
		return "pgmux: a write whose rows belong to several shards runs only outside a "
		       "transaction block (in autocommit), where pgmux commits it on every shard with "
		       "two-phase commit; inside BEGIN ... COMMIT send one statement per shard";
	if (rt->rs->session)
		return "pgmux: a write whose rows belong to several shards is not split in session "
		       "pooling; send one statement per shard";
	if (avail != total || !txtrack_quiet(&cl->tt))
		return "pgmux: a write whose rows belong to several shards must come alone (not "
		       "pipelined with other requests) and fit max_client_memory";
	return NULL;
}

static struct sp_ctx split_sp_ctx(struct client *cl)
{
	struct route_session *rt = cl->rt;
	struct cluster *c = rt->rs->cl;
	struct sp_ctx x = { .cl = cl, .stmts = &rt->sp, .shard_key = c->shard_key,
			    .key_type = c->cf.shard_key_type, .n_shards = c->n_shards,
			    .cache = &c->sp_cache, .memory = client_memory };
	return x;
}

static enum hook_rc start_insert(struct client *cl, uint32_t total, const char *sql, size_t len)
{
	struct route_session *rt = cl->rt;
	struct cluster *c = rt->rs->cl;
	struct splitsql_insert ins;
	const char *why;
	int rc = splitsql_insert_rows(sql, len, &ins, &why);
	if (rc < 0) {
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	if (rc > 0)
		return HOOK_FORWARD;   /* not a plain INSERT ... VALUES: refused as before */
	const char *ctxwhy = split_context_refusal(cl, total, total);
	if (ctxwhy) {
		splitsql_insert_free(&ins);
		return rt_refuse(cl, 'Q', total, "0A000", ctxwhy);
	}
	int *vs = malloc(ins.n_rows * sizeof(int));
	char *text = malloc(len + 1);
	struct route_split *sw = vs && text ? split_new(cl, c->n_shards) : NULL;
	if (!sw) {
		free(vs);
		free(text);
		splitsql_insert_free(&ins);
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	memcpy(text, sql, len);
	text[len] = '\0';
	sw->sql = text;
	sw->ins = ins;
	sw->vs = vs;
	sw->bytes += len + 1 + (size_t)ins.n_rows * (2 * sizeof(uint32_t) + sizeof(int));
	struct sp_ctx x = split_sp_ctx(cl);
	struct sp_eval e;
	shardplan_query_rows(&x, sql, len, &e, vs, ins.n_rows);
	bool ok = !e.refuse && !e.bad && !e.need_bind;
	for (uint32_t i = 0; ok && i < ins.n_rows; i++) {
		ok = vs[i] >= 0 && vs[i] < c->n_shards;
		if (ok)
			sw->sh[vs[i]].rows++;
	}
	if (!ok) {
		rt_split_free(cl);
		return HOOK_FORWARD;   /* rows pgmux cannot place one by one: refused as before */
	}
	char tag[256];
	log_info("%s: INSERT split over shards as split write %llu", client_tag(cl, tag, sizeof(tag)),
		 (unsigned long long)sw->seq);
	sw->returning = sw->ins.returning;
	sw->phase = SP_PREPARE;
	return split_advance(cl, total) ? HOOK_CONSUMED : (cl->c.dead ? HOOK_STOP : HOOK_CONSUMED);
}

/* pgmux answers the COPY itself (CopyInResponse): the rows come to it first.  total: the
 * client message this answers (consumed), 0 when none. */
static enum hook_rc copy_in_response(struct client *cl, uint32_t total)
{
	struct route_session *rt = cl->rt;
	struct route_split *sw = rt->sw;
	sw->phase = SP_COPY_IN;
	sw->cur = -1;
	sw->cs.key_col = sw->opts.key_col;
	rt->split_copy_in = true;
	struct pktbuf *o = &cl->c.out;
	pktbuf_begin(o, 'G');
	pktbuf_put_u8(o, sw->opts.format == SPLITSQL_BINARY ? 1 : 0);
	pktbuf_put_u16(o, (uint16_t)sw->opts.n_cols);
	for (uint32_t i = 0; i < sw->opts.n_cols; i++)
		pktbuf_put_u16(o, sw->opts.format == SPLITSQL_BINARY ? 1 : 0);
	pktbuf_end(o);
	if (total)
		return rt_reply_out(cl, total);
	if (sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed", NULL);
		return HOOK_STOP;
	}
	return HOOK_CONSUMED;
}

static enum hook_rc start_copy(struct client *cl, uint32_t total, const char *sql, size_t len)
{
	struct route_session *rt = cl->rt;
	struct cluster *c = rt->rs->cl;
	char *text = malloc(len + 1);
	if (!text) {
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	memcpy(text, sql, len);
	text[len] = '\0';
	struct splitsql_copy opts;
	int rc = splitsql_copy(text, c->shard_key ? c->shard_key : "", &opts);
	if (rc != 0) {
		free(text);
		if (rc < 0) {
			client_close(cl, "out of memory", "53200");
			return HOOK_STOP;
		}
		return HOOK_FORWARD;
	}
	char msg[400];
	const char *ctxwhy = split_context_refusal(cl, total, total);
	if (opts.why || ctxwhy) {
		free(text);
		if (!ctxwhy)
			snprintf(msg, sizeof(msg), "pgmux: cannot split COPY FROM STDIN over the shards of "
				 "database \"%s\": %s", c->name, opts.why);
		return rt_refuse(cl, 'Q', total, "0A000", ctxwhy ? ctxwhy : msg);
	}
	struct route_split *sw = split_new(cl, c->n_shards);
	if (!sw) {
		free(text);
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	sw->copy = true;
	sw->sql = text;
	sw->bytes += len + 1;
	sw->opts = opts;
	sw->cs.format = opts.format;
	sw->cs.delim = opts.delim;
	sw->cs.quote = opts.quote;
	sw->cs.escape = opts.escape;
	sw->cs.null_str = sw->opts.null_str;
	sw->cs.null_len = opts.null_len;
	sw->cs.header = opts.header;
	sw->cs.key_col = opts.key_col;
	copysplit_init(&sw->cs);
	char tag[256];
	log_info("%s: COPY FROM STDIN split over shards as split write %llu",
		 client_tag(cl, tag, sizeof(tag)), (unsigned long long)sw->seq);
	if (!opts.n_cols) {
		/* No column list: the table's columns, in order, as COPY takes them (generated
		 * ones left out), from shard 0; the COPY is answered once they are known. */
		char q[1000];
		char lit[700];
		size_t o = 0;
		for (const char *p = opts.table; *p && o + 2 < sizeof(lit); p++) {
			if (*p == '\'')
				lit[o++] = '\'';
			lit[o++] = *p;
		}
		lit[o] = '\0';
		snprintf(q, sizeof(q), "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = "
			 "'%s'::pg_catalog.regclass AND attnum > 0 AND NOT attisdropped AND "
			 "attgenerated = '' ORDER BY attnum", lit);
		sw->phase = SP_DESCRIBE;
		sw->cur = 0;
		struct pktbuf pb = { 0 };
		proto_query(&pb, q);
		if (!inject(cl, &pb, total)) {
			client_close(cl, "out of memory", "53200");
			return HOOK_STOP;
		}
		return HOOK_CONSUMED;
	}
	return copy_in_response(cl, total);
}

enum hook_rc rt_split_start(struct client *cl, int why, const char *sql, size_t len, uint32_t total)
{
	/* a Query's text ends at its NUL (rt_message_sql counts it); one inside is refused */
	const char *nul = memchr(sql, 0, len);
	if (!nul || (size_t)(nul - sql) != len - 1)
		return HOOK_FORWARD;
	len--;
	if (why == SHARD_MULTI)
		return start_insert(cl, total, sql, len);
	return start_copy(cl, total, sql, len);
}

/* ---- COPY data from the client ------------------------------------------------------------- */

/* A COPY that cannot be split as sent: the client gets the error at once (as from a server
 * whose COPY failed), and its remaining CopyData is dropped as for any failed COPY. */
static enum hook_rc copy_abort(struct client *cl, uint32_t total, const char *sqlstate,
			       const char *msg)
{
	split_fail_local(cl, sqlstate, msg);
	struct route_split *sw = cl->rt->sw;
	sw->phase = SP_ROLLBACK;   /* nothing prepared: straight to the answer */
	sw->cur = sw->n;
	split_answer(cl);
	if (cl->c.dead)
		return HOOK_STOP;
	/* the message that failed it is dropped; later CopyData too (client.c) */
	return rt_reply_out(cl, total);
}

/* Cuts the buffered stream into rows and files each with its shard. */
static enum hook_rc copy_rows(struct client *cl, uint32_t total, bool final)
{
	struct route_session *rt = cl->rt;
	struct route_split *sw = rt->sw;
	struct cluster *c = rt->rs->cl;
	if (!final && sw->pend_len < 2 * sw->pend_tried)
		return HOOK_FORWARD;   /* a long row arriving in pieces: read again when it doubled */
	size_t off = 0;
	char msg[300];
	while (!(sw->cs.ended && sw->pend_len == 0)) {
		size_t used;
		const char *why;
		int rc = copysplit_next(&sw->cs, sw->pend + off, sw->pend_len - off, final, &used,
					&sw->key, &why);
		if (rc == COPYSPLIT_MORE) {
			if (final && off < sw->pend_len)
				return copy_abort(cl, total, "22P04", "pgmux: COPY data ends in the middle of a row");
			break;
		}
		if (rc == COPYSPLIT_BAD) {
			snprintf(msg, sizeof(msg), "pgmux: COPY data pgmux cannot read (row %llu): %s; "
				 "nothing was written", (unsigned long long)sw->row_no + 1, why);
			return copy_abort(cl, total, "22P04", msg);
		}
		if (rc == COPYSPLIT_END) {
			off += used;
			off = sw->pend_len;   /* PostgreSQL reads nothing after the end marker */
			break;
		}
		if (rc == COPYSPLIT_HEAD) {
			free(sw->head);
			if (!(sw->head = malloc(used))) {
				client_close(cl, "out of memory", "53200");
				return HOOK_STOP;
			}
			memcpy(sw->head, sw->pend + off, used);
			sw->head_len = used;
			sw->bytes += used;
			off += used;
			continue;
		}
		sw->row_no++;
		uint64_t h;
		if (sw->key.null) {
			snprintf(msg, sizeof(msg), "pgmux: row %llu of COPY data has a NULL shard key %s; "
				 "nothing was written", (unsigned long long)sw->row_no, c->shard_key);
			return copy_abort(cl, total, "22P04", msg);
		}
		if (shard_key_hash(c->cf.shard_key_type, sw->key.val, sw->key.len, sw->key.fmt, &h) < 0) {
			snprintf(msg, sizeof(msg), "pgmux: row %llu of COPY data has a shard key that is no "
				 "%s value pgmux can read; nothing was written", (unsigned long long)sw->row_no,
				 shard_key_type_name(c->cf.shard_key_type));
			return copy_abort(cl, total, "22P04", msg);
		}
		if (c->cf.shard_key_type == SHARDKEY_TEXT && sw->key.fmt == 0) {
			for (uint32_t i = 0; i < sw->key.len; i++) {
				if (sw->key.val[i] & 0x80) {
					/* the server may convert it: pgmux would hash other bytes */
					const char *ce = varcache_get(&cl->vars, VAR_CLIENT_ENCODING);
					const char *se = pool_parameter(cl->pool, "server_encoding");
					if (!ce || !se || strcasecmp(ce, se) != 0) {
						return copy_abort(cl, total, "22P04", "pgmux: a text shard key "
								  "with non-ASCII bytes in COPY data while "
								  "client_encoding differs from server_encoding");
					}
					break;
				}
			}
		}
		struct split_shard *s = &sw->sh[shardhash_shard(h, (uint32_t)sw->n)];
		size_t before = s->cap;
		bool ok = append(s, sw->pend + off, used);
		const uint8_t last = sw->pend[off + used - 1];
		if (ok && sw->opts.format != SPLITSQL_BINARY && last != '\n' && last != '\r')
			ok = append(s, sw->cs.eol_len ? sw->cs.eol : "\n", sw->cs.eol_len ? sw->cs.eol_len : 1);
		if (!ok) {
			client_close(cl, "out of memory", "53200");
			return HOOK_STOP;
		}
		sw->bytes += s->cap - before;
		s->rows++;
		off += used;
	}
	if (off && off < sw->pend_len)   /* pend is NULL until a CopyData had bytes */
		memmove(sw->pend, sw->pend + off, sw->pend_len - off);
	sw->pend_len -= off;
	sw->pend_tried = sw->pend_len;
	uint64_t limit = (uint64_t)c->w->cf->max_client_memory;
	if (sw->bytes + sw->pend_len > limit) {
		snprintf(msg, sizeof(msg), "pgmux: a COPY split over shards is held in memory until it "
			 "ends, and this one exceeds max_client_memory (%llu bytes); send it in parts",
			 (unsigned long long)limit);
		return copy_abort(cl, total, "54000", msg);
	}
	return HOOK_FORWARD;
}

static enum hook_rc copy_message(struct client *cl, char type, const uint8_t *h, uint32_t total,
				 uint32_t avail)
{
	struct route_split *sw = cl->rt->sw;
	struct cluster *c = cl->rt->rs->cl;
	char msg[300];
	switch (type) {
	case 'd': {
		uint64_t limit = (uint64_t)c->w->cf->max_client_memory;
		if (avail < total || sw->bytes + sw->pend_len + total > limit) {
			snprintf(msg, sizeof(msg), "pgmux: a COPY split over shards is held in memory until "
				 "it ends, and this one exceeds max_client_memory (%llu bytes); send it in "
				 "parts", (unsigned long long)limit);
			return copy_abort(cl, total, "54000", msg);
		}
		uint32_t n = total - PROTO_HDR;
		if (sw->pend_cap - sw->pend_len < n) {
			size_t cap = sw->pend_cap ? sw->pend_cap : 8192;
			while (cap - sw->pend_len < n)
				cap *= 2;
			uint8_t *p = realloc(sw->pend, cap);
			if (!p) {
				client_close(cl, "out of memory", "53200");
				return HOOK_STOP;
			}
			sw->pend = p;
			sw->pend_cap = cap;
		}
		if (n)   /* an empty CopyData first: pend is still NULL */
			memcpy(sw->pend + sw->pend_len, h + PROTO_HDR, n);
		sw->pend_len += n;
		enum hook_rc r = copy_rows(cl, total, false);
		if (r != HOOK_FORWARD)
			return r;
		return rt_reply_out(cl, total);
	}
	case 'c': {
		enum hook_rc r = copy_rows(cl, total, true);
		if (r != HOOK_FORWARD)
			return r;
		cl->rt->split_copy_in = false;
		free(sw->pend);
		sw->pend = NULL;
		sw->pend_len = sw->pend_cap = 0;
		sw->phase = SP_PREPARE;
		split_advance(cl, total);
		return cl->c.dead ? HOOK_STOP : HOOK_CONSUMED;
	}
	case 'f': {
		const char *why = total > PROTO_HDR && avail == total && memchr(h + PROTO_HDR, 0, total - PROTO_HDR)
				  ? (const char *)h + PROTO_HDR : "";
		snprintf(msg, sizeof(msg), "COPY from stdin failed: %s", why);
		return copy_abort(cl, total, "57014", msg);
	}
	case 'H':
	case 'S':
		return rt_reply_out(cl, total);   /* PostgreSQL ignores them during COPY IN */
	default:
		client_close(cl, "unexpected message type during COPY from stdin", "08P01");
		return HOOK_STOP;
	}
}

/* ---- the hooks ------------------------------------------------------------------------------- */

enum hook_rc rt_split_pick(struct client *cl, char type, const uint8_t *h, uint32_t total,
			   uint32_t avail)
{
	struct route_session *rt = cl->rt;
	struct route_split *sw = rt->sw;
	if (sw->phase == SP_COPY_IN)
		return copy_message(cl, type, h, total, avail);
	if (!sw->inject_left || sw->cur < 0)
		return HOOK_WAIT;   /* the client's own next request waits for the answer */
	/* A step of pgmux's: to the primary of its shard, unchecked. */
	struct route_set *rs = rt->rs;
	struct cluster *c = rs->cl;
	int t = rt_target(cl, sw->cur, true, -1);
	if (t < 0)
		t = c->primary[sw->cur] >= 0 ? c->primary[sw->cur] : 0;
	if (t < 0 || t >= rs->n) {
		client_close(cl, "no backend for this database", "08006");
		return HOOK_STOP;
	}
	rt->rt_shard = (int16_t)sw->cur;
	rt->rt_be = (int16_t)t;
	rt->rt_primary = true;
	rt->rt_write = false;   /* its commit is a COMMIT PREPARED of pgmux's, not the client's */
	rt->rt_prepare_only = false;
	c->be[t]->writes++;
	client_move(cl, rs->pools[t]);
	rt->rt_routed = true;
	return HOOK_FORWARD;
}

enum hook_rc rt_split_on_message(struct client *cl, uint32_t total)
{
	struct route_split *sw = cl->rt->sw;
	if (sw->inject_left < total)
		return HOOK_WAIT;   /* the client's own: after the answer */
	sw->inject_left -= total;
	cl->rt->rt_routed = false;
	return HOOK_FORWARD;
}

/* A server's answer to a step: read, never forwarded.  Errors are kept for the client. */
enum hook_rc rt_split_server(struct server *sv, char type, uint32_t len, bool whole)
{
	struct client *cl = sv->link;
	struct route_split *sw = cl->rt->sw;
	struct iobuf *b = sv->c.in;
	if (!whole)
		return HOOK_FORWARD;   /* only a notice can be this long: the client may have it */
	const uint8_t *body = b->data + b->scan + PROTO_HDR;
	uint32_t blen = len - 4;
	char tag[256];
	switch (type) {
	case 'E': {
		const char *m = proto_error_field(body, blen, 'M');
		const char *code = proto_error_field(body, blen, 'C');
		if (code && !strcmp(code, "42704") &&
		    (sw->phase == SP_ROLLBACK || (sw->phase == SP_COMMIT && sw->sh[sw->cur].tries))) {
			/* a gid whose PREPARE never ran (its server was lost first), or whose COMMIT
			 * PREPARED went through before its server was lost: nothing left to do */
			log_info("%s: split write %llu: no prepared transaction '%s' (left) on shard %d",
				 client_tag(cl, tag, sizeof(tag)), (unsigned long long)sw->seq,
				 sw->sh[sw->cur].gid, sw->cur);
			break;
		}
		log_warn("%s: split write %llu, shard %d (%s): %s", client_tag(cl, tag, sizeof(tag)),
			 (unsigned long long)sw->seq, sw->cur, sw->sh[sw->cur].gid, m ? m : "error");
		sw->step_err = true;
		if ((sw->phase == SP_PREPARE || sw->phase == SP_DESCRIBE) && !sw->failed) {
			sw->failed = true;
			if (code && !strcmp(code, "55000") && m && strstr(m, "prepared transactions are disabled")) {
				char msg[400];
				snprintf(msg, sizeof(msg), "pgmux: a write whose rows belong to several shards "
					 "needs max_prepared_transactions > 0 on every shard, and shard %d of "
					 "database \"%s\" has prepared transactions disabled; nothing was "
					 "written", sw->cur, cl->rt->rs->cl->name);
				split_fail_local(cl, "55000", msg);
			} else if (blen <= SPLIT_ERR_MAX && (sw->err = malloc(blen))) {
				memcpy(sw->err, body, blen);
				sw->err_len = blen;
			} else {
				/* too long to keep whole: its code and message are what the client needs */
				char msg[1024];
				snprintf(msg, sizeof(msg), "%s", m ? m : "error on a shard");
				split_fail_local(cl, code && strlen(code) == 5 ? code : "XX000", msg);
			}
		}
		break;
	}
	case 'T':
		/* RETURNING: one RowDescription (the first shard's), then every shard's rows; a
		 * later shard's error follows them, as a statement that fails midway does */
		if (sw->phase == SP_PREPARE && sw->returning && !sw->sent_desc) {
			sw->sent_desc = true;
			return HOOK_FORWARD;
		}
		break;
	case 'D':
		if (sw->phase == SP_PREPARE && sw->returning)
			return HOOK_FORWARD;
		if (sw->phase == SP_DESCRIBE && blen >= 6 && body[0] == 0 && body[1] == 1) {
			uint32_t n = ((uint32_t)body[2] << 24) | ((uint32_t)body[3] << 16) |
				     ((uint32_t)body[4] << 8) | body[5];
			const char *key = cl->rt->rs->cl->shard_key;
			if (n != UINT32_MAX && n <= blen - 6 && key && strlen(key) == n &&
			    !memcmp(body + 6, key, n))
				sw->opts.key_col = (int)sw->opts.n_cols;
			if (sw->opts.n_cols < 1600)   /* PostgreSQL's MaxHeapAttributeNumber */
				sw->opts.n_cols++;
		}
		break;
	case 'C':
		if (sw->phase == SP_PREPARE && blen > 1) {
			const char *t = (const char *)body;
			const char *sp = memrchr(t, ' ', blen - 1);
			if ((!strncmp(t, "INSERT ", 7) || !strncmp(t, "COPY ", 5)) && sp)
				sw->total += strtoull(sp + 1, NULL, 10);
		}
		break;
	case 'Z': {
		char tx = blen ? (char)body[0] : 'I';
		sbuf_drop(&sv->c, b->scan, len + 1);
		txtrack_reset(&cl->tt);
		/* the step's requests were all answered here, none by statement tracking */
		ps_unlink(sv);
		struct split_shard *s = &sw->sh[sw->cur];
		if (sw->phase == SP_DESCRIBE) {
			/* nothing to log: the table's columns were read (or its error kept) */
		} else if (sw->phase == SP_PREPARE) {
			if (!sw->step_err) {
				s->prepared = true;
				log_info("%s: split write %llu: prepared '%s' on shard %d",
					 client_tag(cl, tag, sizeof(tag)), (unsigned long long)sw->seq, s->gid, sw->cur);
			}
		} else {
			if (sw->step_err)
				log_error("%s: split write %llu: %s PREPARED '%s' failed on shard %d: resolve it by "
					  "hand (pg_prepared_xacts)", client_tag(cl, tag, sizeof(tag)),
					  (unsigned long long)sw->seq, sw->phase == SP_COMMIT ? "COMMIT" : "ROLLBACK",
					  s->gid, sw->cur);
			else
				log_info("%s: split write %llu: %s '%s' on shard %d",
					 client_tag(cl, tag, sizeof(tag)), (unsigned long long)sw->seq,
					 sw->phase == SP_COMMIT ? "committed" : "rolled back", s->gid, sw->cur);
			s->prepared = false;
		}
		sw->step_err = false;
		/* A server left inside a failed transaction is closed, not pooled: that rolls it
		 * back.  Either way it goes, and route_released runs the next step. */
		sv->tx = 'I';
		if (tx != 'I')
			sv->close_when_idle = true;
		return HOOK_RELEASE;
	}
	default:
		break;
	}
	sbuf_drop(&sv->c, b->scan, len + 1);
	return HOOK_CONSUMED;
}

bool rt_split_lost(struct client *cl)
{
	struct route_split *sw = cl->rt->sw;
	if (cl->c.dead || sw->cur < 0 || sw->cur >= sw->n || sw->phase == SP_COPY_IN)
		return false;
	if (sw->phase == SP_DESCRIBE)
		return false;   /* nothing prepared: the client goes as with any lost server */
	/* What of the step the lost server never took goes: the step runs again, or not at all. */
	struct iobuf *b = cl->c.in;
	if (b && b->scan > b->start) {
		sbuf_drop(&cl->c, b->start, b->scan - b->start);
		b->scan = b->start;
	}
	if (b && sw->inject_left) {
		assert(b->end - b->scan >= sw->inject_left);
		sbuf_drop(&cl->c, b->scan, sw->inject_left);
	}
	sw->inject_left = 0;
	cl->c.pkt_left = 0;
	txtrack_reset(&cl->tt);
	struct split_shard *s = &sw->sh[sw->cur];
	char tag[256];
	client_tag(cl, tag, sizeof(tag));
	if (sw->phase == SP_PREPARE) {
		/* Its PREPARE may have run before the connection went: rolled back with the rest
		 * (a ROLLBACK PREPARED of a gid that never prepared fails harmlessly). */
		char msg[300];
		snprintf(msg, sizeof(msg), "pgmux: the connection to shard %d was lost during a write "
			 "whose rows belong to several shards; it was rolled back on every shard", sw->cur);
		log_warn("%s: split write %llu: server of shard %d lost before '%s' was prepared",
			 tag, (unsigned long long)sw->seq, sw->cur, s->gid);
		split_fail_local(cl, "08006", msg);
		s->prepared = true;
	} else if (++s->tries <= SPLIT_RESOLVE_TRIES) {
		/* the decision stands: the same COMMIT / ROLLBACK PREPARED on a fresh server */
		log_warn("%s: split write %llu: server of shard %d lost during %s PREPARED '%s'; "
			 "running it again on another connection", tag, (unsigned long long)sw->seq,
			 sw->cur, sw->phase == SP_COMMIT ? "COMMIT" : "ROLLBACK", s->gid);
		sw->cur--;
	} else {
		log_error("%s: split write %llu: %s PREPARED '%s' on shard %d failed %d times: resolve "
			  "it by hand (pg_prepared_xacts)", tag, (unsigned long long)sw->seq,
			  sw->phase == SP_COMMIT ? "COMMIT" : "ROLLBACK", s->gid, sw->cur, s->tries);
		s->prepared = false;
	}
	sw->step_err = false;
	split_advance(cl, 0);
	return !cl->c.dead;
}

/* The table's columns are known (or its error): the COPY is answered, or refused. */
static void describe_done(struct client *cl)
{
	struct route_split *sw = cl->rt->sw;
	struct cluster *c = cl->rt->rs->cl;
	if (!sw->failed && sw->opts.key_col < 0) {
		char msg[700];
		snprintf(msg, sizeof(msg), "pgmux: cannot split COPY FROM STDIN over the shards of "
			 "database \"%s\": table %s has no column %s", c->name, sw->opts.table,
			 c->shard_key ? c->shard_key : "(no shard key)");
		split_fail_local(cl, "0A000", msg);
	}
	if (sw->failed) {
		sw->phase = SP_ROLLBACK;
		sw->cur = sw->n;
		split_answer(cl);
	} else if (copy_in_response(cl, 0) == HOOK_STOP) {
		return;
	}
	if (!cl->c.dead)
		client_on_data(cl);
}

void rt_split_next(struct client *cl)
{
	struct route_split *sw = cl->rt->sw;
	if (!sw || cl->link || cl->c.dead || sw->phase == SP_COPY_IN)
		return;
	if (sw->phase == SP_DESCRIBE) {
		describe_done(cl);
		return;
	}
	if (split_advance(cl, 0) || !cl->c.dead)
		client_on_data(cl);
}
