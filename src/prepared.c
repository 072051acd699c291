/* prepared.c: named prepared statements across pooled servers: name mapping, per-server LRU, response matching. */
#include "prepared.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#include "client.h"
#include "log.h"
#include "pool_info.h"
#include "pshash.h"
#include "pstext.h"
#include "sbuf.h"
#include "server.h"

/* A statement as PostgreSQL sees it: query text plus parameter types.  Shared by every
 * client that prepared the same thing; on a server it is named "pgmux_<token>_<id>". */
struct ps_stmt {
	struct ps_stmt *next;
	uint64_t id;
	uint32_t hash, refs;
	uint32_t gen;              /* bumped when its result type changed under it (0A000) */
	uint32_t len;              /* of body: query\0, int16 n, int32 oids[n] */
	uint8_t sname_len;
	char sname[48];            /* its name on the servers, made once: every Bind carries it */
	uint8_t body[];
};

struct ps_global {
	struct ps_stmt **tab;
	uint32_t mask, n;
	uint64_t next_id;
	size_t bytes;
	/* Server-side names are "pgmux_<token>_<id>": the token is random per process, so
	 * another client cannot guess a name, and SQL naming it can be refused (check_text). */
	char token[PS_TOKEN_LEN + 1];
};

/* A client's name for a statement. */
struct ps_cname {
	struct ps_cname *next;
	struct ps_stmt *st;
	uint32_t hash;
	uint32_t gen;              /* st->gen when the client prepared it */
	uint32_t seq;              /* when it was made (ps_cmap.seq): a pipelined DEALLOCATE ALL
				    * drops only the names made before it was sent */
	bool doomed;               /* a DEALLOCATE of it is on its way: a Parse of the same name
				    * behind it replaces it, as it would in PostgreSQL */
	char name[];
};

struct ps_cmap {
	struct ps_cname **tab;
	uint32_t mask, n;
	uint64_t bytes;            /* names and the texts they reference: max_client_memory */
	uint32_t seq;              /* names made so far */
	uint32_t doom_upto;        /* a DEALLOCATE ALL / DISCARD ALL is on its way: names made
				    * before this (seq <) are doomed too */
};

/* PostgreSQL keys prepared statements by the first NAMEDATALEN - 1 bytes of their name (a
 * longer name is the same statement as its prefix); pgmux compares names the same way. */
#define PS_NAME_MAX 63

/* What one client name costs, for max_client_memory: its entry, the name and the text. */
static uint64_t cname_cost(size_t name_len, const struct ps_stmt *st)
{
	return sizeof(struct ps_cname) + name_len + 1 + sizeof(*st) + st->len;
}

/* A statement a server holds, in its LRU. */
struct ps_sent {
	struct ps_sent *next;
	struct list lru;
	struct ps_stmt *st;
	uint32_t hash;             /* ptr_hash(st), for pshash_grow */
	bool stale;                /* its plan went bad: close and parse again before use */
	bool confirmed;            /* its ParseComplete came back */
	uint32_t block;            /* the sync block its Parse went in */
	uint32_t gen;              /* st->gen it was parsed at */
};

/* What a request sent to the server (or answered by pgmux) expects back. */
enum ps_kind {
	PSR_PARSE, PSR_PARSE_HIDDEN, PSR_PARSE_SYNTH,
	PSR_CLOSE, PSR_CLOSE_HIDDEN, PSR_CLOSE_SYNTH,
	PSR_ERROR_VIA_SERVER,
	PSR_BIND, PSR_DESCRIBE, PSR_EXECUTE, PSR_SYNC, PSR_QUERY, PSR_FUNC
};

struct ps_req {
	uint8_t kind;
	bool failed;               /* QUERY: an error came back */
	bool skipped;              /* sent while the server skips to the next Sync after an error:
				    * no answer will come for it */
	bool hide_prepare;         /* QUERY: pgmux's own PREPARE leads it; its tag is not the
				    * client's (a DEALLOCATE of a statement the server lacks) */
	uint32_t drop_upto;        /* QUERY: the names made before it was sent have seq <
				    * drop_upto; a DEALLOCATE or DISCARD ALL in it that runs drops
				    * only those.  The four flags and this keep the request 32
				    * bytes: one is written per message. */
	struct ps_stmt *st;        /* PARSE*, BIND: the statement (a reference) */
	char *err;                 /* ERROR_SYNTH: "SQLSTATE message" */
	char *cname;               /* PARSE, PARSE_SYNTH: the client's name, dropped if skipped;
				    * QUERY: the name its DEALLOCATE drops once it has run */
};

/* Bounded like the client's own pipeline. */
#define PS_FIFO_MAX (1u << 20)
_Static_assert(sizeof(struct ps_req) == 32 || sizeof(void *) != 8, "a request stays 32 bytes");

struct ps_server {
	struct ps_sent **tab;
	uint32_t mask, n;
	struct list lru;           /* head: least recently used */
	struct ps_req *q;
	uint32_t qhead, qn, qcap;
	uint32_t block;            /* counts the client's Sync/Query: the current sync block */
	bool skipping;             /* the server had an error and skips until a Sync not yet sent */
};

bool ps_enabled(const struct pool *p)
{
	return p->w->cf->max_prepared_statements > 0 && pool_mode(p) != POOL_SESSION;
}

/* ---- the global statement table ---- */

static struct ps_global *global(struct worker *w)
{
	if (!w->ps) {
		w->ps = calloc(1, sizeof(*w->ps));
		if (w->ps) {
			w->ps->mask = 255;
			w->ps->tab = calloc(256, sizeof(*w->ps->tab));
			uint8_t rnd[PS_TOKEN_LEN];
			if (!w->ps->tab || RAND_bytes(rnd, sizeof(rnd)) != 1) {
				free(w->ps->tab);
				free(w->ps);
				w->ps = NULL;
				return NULL;
			}
			for (int i = 0; i < PS_TOKEN_LEN; i++)
				w->ps->token[i] = (char)('0' + rnd[i] % 10);
			/* The first digit is never 0, so the token never looks like a short number. */
			if (w->ps->token[0] == '0')
				w->ps->token[0] = '7';
			w->ps->token[PS_TOKEN_LEN] = '\0';
		}
	}
	return w->ps;
}

static struct ps_stmt *stmt_intern(struct worker *w, const uint8_t *body, uint32_t len)
{
	struct ps_global *g = global(w);
	if (!g)
		return NULL;
	uint32_t h = pshash_bytes(body, len);
	for (struct ps_stmt *s = g->tab[h & g->mask]; s; s = s->next)
		if (s->hash == h && s->len == len && memcmp(s->body, body, len) == 0)
			return s;
	if (g->bytes + sizeof(struct ps_stmt) + len > (uint64_t)w->cf->max_prepared_statement_memory) {
		log_warn("prepared statement cache is full (max_prepared_statement_memory = %lld bytes)",
			 (long long)w->cf->max_prepared_statement_memory);
		return NULL;
	}
	struct ps_stmt *s = malloc(sizeof(*s) + len);
	if (!s)
		return NULL;
	s->id = ++g->next_id;
	s->sname_len = (uint8_t)snprintf(s->sname, sizeof(s->sname), "pgmux_%s_%llu", g->token,
					 (unsigned long long)s->id);
	s->hash = h;
	s->refs = 0;
	s->gen = 0;
	s->len = len;
	memcpy(s->body, body, len);
	if (g->n > g->mask)
		pshash_grow((void ***)&g->tab, &g->mask, offsetof(struct ps_stmt, next), offsetof(struct ps_stmt, hash));
	s->next = g->tab[h & g->mask];
	g->tab[h & g->mask] = s;
	g->n++;
	g->bytes += sizeof(*s) + len;
	return s;
}

static void stmt_ref(struct ps_stmt *s)
{
	s->refs++;
}

static void stmt_unref(struct worker *w, struct ps_stmt *s)
{
	if (!s || --s->refs)
		return;
	struct ps_global *g = w->ps;
	struct ps_stmt **pp = &g->tab[s->hash & g->mask];
	while (*pp != s)
		pp = &(*pp)->next;
	*pp = s->next;
	g->n--;
	g->bytes -= sizeof(*s) + s->len;
	free(s);
}

/* Fits PS_NAME_MAX: "pgmux_" + 20 + "_" + at most 20 digits. */
#define PS_SNAME_LEN 64

static void server_name(struct worker *w, const struct ps_stmt *s, char *buf, size_t len)
{
	(void)w;
	assert(len > s->sname_len);
	memcpy(buf, s->sname, (size_t)s->sname_len + 1);
}

/* ---- a client's names ---- */

static struct ps_cname *cname_find(struct client *cl, const char *name, uint32_t h)
{
	if (!cl->ps)
		return NULL;
	for (struct ps_cname *e = cl->ps->tab[h & cl->ps->mask]; e; e = e->next)
		if (e->hash == h && strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

/* key is a name already cut to PS_NAME_MAX (name_key). */
static bool cname_add(struct client *cl, const char *name, uint32_t h, struct ps_stmt *st)
{
	if (!cl->ps) {
		cl->ps = calloc(1, sizeof(*cl->ps));
		if (!cl->ps)
			return false;
		cl->ps->mask = 15;
		cl->ps->tab = calloc(16, sizeof(*cl->ps->tab));
		if (!cl->ps->tab) {
			free(cl->ps);
			cl->ps = NULL;
			return false;
		}
	}
	size_t n = strlen(name);
	struct ps_cname *e = malloc(sizeof(*e) + n + 1);
	if (!e)
		return false;
	memcpy(e->name, name, n + 1);
	e->hash = h;
	e->st = st;
	e->gen = st->gen;
	e->seq = ++cl->ps->seq;
	e->doomed = false;
	stmt_ref(st);
	if (cl->ps->n > cl->ps->mask)
		pshash_grow((void ***)&cl->ps->tab, &cl->ps->mask, offsetof(struct ps_cname, next),
			 offsetof(struct ps_cname, hash));
	e->next = cl->ps->tab[h & cl->ps->mask];
	cl->ps->tab[h & cl->ps->mask] = e;
	cl->ps->n++;
	cl->ps->bytes += cname_cost(n, st);
	return true;
}

static void cname_del(struct client *cl, const char *name, uint32_t h)
{
	if (!cl->ps)
		return;
	struct ps_cname **pp = &cl->ps->tab[h & cl->ps->mask];
	for (; *pp; pp = &(*pp)->next) {
		struct ps_cname *e = *pp;
		if (e->hash == h && strcmp(e->name, name) == 0) {
			*pp = e->next;
			assert(cl->ps->bytes >= cname_cost(strlen(e->name), e->st));
			cl->ps->bytes -= cname_cost(strlen(e->name), e->st);
			stmt_unref(cl->c.w, e->st);
			free(e);
			cl->ps->n--;
			return;
		}
	}
}

/* Drops the names made up to seq (a DEALLOCATE ALL / DISCARD ALL that ran; names made
 * after it was sent stay). */
static void cmap_clear_upto(struct client *cl, uint32_t seq)
{
	if (!cl->ps)
		return;
	for (uint32_t i = 0; i <= cl->ps->mask; i++) {
		struct ps_cname *e = cl->ps->tab[i], *next;
		for (; e; e = next) {
			next = e->next;
			if (e->seq <= seq)
				cname_del(cl, e->name, e->hash);
		}
	}
}

static void cmap_clear(struct client *cl)
{
	if (!cl->ps)
		return;
	for (uint32_t i = 0; i <= cl->ps->mask; i++) {
		struct ps_cname *e = cl->ps->tab[i];
		while (e) {
			struct ps_cname *next = e->next;
			stmt_unref(cl->c.w, e->st);
			free(e);
			e = next;
		}
	}
	free(cl->ps->tab);
	free(cl->ps);
	cl->ps = NULL;
}

void ps_client_free(struct client *cl)
{
	cmap_clear(cl);
}

/* ---- a server's statements and requests ---- */

static struct ps_server *sps(struct server *sv)
{
	if (!sv->ps) {
		sv->ps = calloc(1, sizeof(*sv->ps));
		if (!sv->ps)
			return NULL;
		sv->ps->mask = 31;
		sv->ps->tab = calloc(32, sizeof(*sv->ps->tab));
		list_init(&sv->ps->lru);
		if (!sv->ps->tab) {
			free(sv->ps);
			sv->ps = NULL;
		}
	}
	return sv->ps;
}

static uint32_t ptr_hash(const struct ps_stmt *st)
{
	return (uint32_t)(st->id * 2654435761u);
}

static struct ps_sent *sent_find(struct ps_server *ps, const struct ps_stmt *st)
{
	for (struct ps_sent *e = ps->tab[ptr_hash(st) & ps->mask]; e; e = e->next)
		if (e->st == st)
			return e;
	return NULL;
}

static void sent_del(struct worker *w, struct ps_server *ps, struct ps_sent *e)
{
	struct ps_sent **pp = &ps->tab[e->hash & ps->mask];
	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	list_del(&e->lru);
	stmt_unref(w, e->st);
	free(e);
	ps->n--;
}

static bool sent_add(struct ps_server *ps, struct ps_stmt *st)
{
	struct ps_sent *e = calloc(1, sizeof(*e));
	if (!e)
		return false;
	e->st = st;
	e->block = ps->block;
	e->gen = st->gen;
	stmt_ref(st);
	e->hash = ptr_hash(st);
	if (ps->n + 1 > ps->mask * 2)
		pshash_grow((void ***)&ps->tab, &ps->mask, offsetof(struct ps_sent, next),
			 offsetof(struct ps_sent, hash));
	e->next = ps->tab[e->hash & ps->mask];
	ps->tab[e->hash & ps->mask] = e;
	list_append(&ps->lru, &e->lru);
	ps->n++;
	return true;
}

static struct ps_req *push(struct ps_server *ps, uint8_t kind, struct ps_stmt *st)
{
	if (ps->qn == ps->qcap) {
		if (ps->qcap >= PS_FIFO_MAX)
			return NULL;
		uint32_t cap = ps->qcap ? ps->qcap * 2 : 16;
		struct ps_req *q = malloc(cap * sizeof(*q));
		if (!q)
			return NULL;
		for (uint32_t i = 0; i < ps->qn; i++)
			q[i] = ps->q[(ps->qhead + i) & (ps->qcap - 1)];
		free(ps->q);
		ps->q = q;
		ps->qcap = cap;
		ps->qhead = 0;
	}
	struct ps_req *r = &ps->q[(ps->qhead + ps->qn++) & (ps->qcap - 1)];  /* qcap: a power of 2 */
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	/* PostgreSQL ignores everything up to a Sync after an extended-protocol error, a Query or
	 * FunctionCall too (postgres.c: only Sync clears ignore_till_sync). */
	if (__builtin_expect(ps->skipping, 0)) {
		r->skipped = kind != PSR_SYNC;
		ps->skipping = kind != PSR_SYNC;
	}
	r->st = st;
	if (st)
		stmt_ref(st);
	return r;
}

static struct ps_req *head(struct ps_server *ps)
{
	return ps && ps->qn ? &ps->q[ps->qhead] : NULL;
}

static void pop(struct worker *w, struct ps_server *ps)
{
	struct ps_req *r = &ps->q[ps->qhead];
	stmt_unref(w, r->st);
	free(r->err);
	free(r->cname);
	ps->qhead = (ps->qhead + 1) & (ps->qcap - 1);
	ps->qn--;
}

bool ps_pending(const struct server *sv)
{
	return sv->ps && sv->ps->qn;
}

void ps_unlink(struct server *sv)
{
	struct worker *w = sv->c.w;
	while (sv->ps && sv->ps->qn)
		pop(w, sv->ps);
	sv->ps_active = false;
}

void ps_server_forget(struct server *sv)
{
	struct ps_server *ps = sv->ps;
	while (ps && !list_empty(&ps->lru))
		sent_del(sv->c.w, ps, list_entry(ps->lru.next, struct ps_sent, lru));
}

void ps_server_free(struct server *sv)
{
	if (!sv->ps)
		return;
	ps_unlink(sv);
	ps_server_forget(sv);
	free(sv->ps->tab);
	free(sv->ps->q);
	free(sv->ps);
	sv->ps = NULL;
}

/* ---- writing to the server ---- */

static void put_parse(struct worker *w, struct pktbuf *o, const struct ps_stmt *st)
{
	char name[PS_SNAME_LEN];
	server_name(w, st, name, sizeof(name));
	pktbuf_begin(o, 'P');
	pktbuf_put_str(o, name);
	pktbuf_put(o, st->body, st->len);
	pktbuf_end(o);
}

static void put_close(struct worker *w, struct pktbuf *o, const struct ps_stmt *st)
{
	char name[PS_SNAME_LEN];
	server_name(w, st, name, sizeof(name));
	pktbuf_begin(o, 'C');
	pktbuf_put_u8(o, 'S');
	pktbuf_put_str(o, name);
	pktbuf_end(o);
}

/* The server surely holds the statement as it is now: its Parse came back, or it went in this
 * very sync block (so an error that skips it also skips its users), and no result-type change
 * happened since. */
static bool sent_usable(const struct ps_server *ps, const struct ps_sent *e)
{
	return e && !e->stale && e->gen == e->st->gen && (e->confirmed || e->block == ps->block);
}

/* Makes room in the server's LRU, closing what falls out. */
static bool make_room(struct server *sv, struct ps_server *ps)
{
	int64_t max = sv->c.w->cf->max_prepared_statements;
	while ((int64_t)ps->n >= max && !list_empty(&ps->lru)) {
		struct ps_sent *old = list_entry(ps->lru.next, struct ps_sent, lru);
		put_close(sv->c.w, &sv->c.out, old->st);
		if (!push(ps, PSR_CLOSE_HIDDEN, old->st))   /* st: see close_queued */
			return false;
		sent_del(sv->c.w, ps, old);
	}
	return true;
}

/* Sees that the server holds st, injecting a Parse (answer swallowed) if it does not. */
static bool ensure_on_server(struct server *sv, struct ps_stmt *st)
{
	struct ps_server *ps = sps(sv);
	if (!ps)
		return false;
	struct ps_sent *e = sent_find(ps, st);
	if (sent_usable(ps, e)) {
		list_del(&e->lru);
		list_append(&ps->lru, &e->lru);
		return true;
	}
	if (e) {
		/* Closing a statement the server may not have is no error, so this is safe either way. */
		put_close(sv->c.w, &sv->c.out, st);
		if (!push(ps, PSR_CLOSE_HIDDEN, NULL))
			return false;
		sent_del(sv->c.w, ps, e);
	}
	if (!make_room(sv, ps))
		return false;
	put_parse(sv->c.w, &sv->c.out, st);
	sv->pool->server_parse_count++;
	return push(ps, PSR_PARSE_HIDDEN, st) && sent_add(ps, st);
}

/* ---- client side ---- */

/* Copies a client's statement name as PostgreSQL keys it (its first PS_NAME_MAX bytes) into
 * key (PS_NAME_MAX + 1 bytes) and returns its hash. */
static uint32_t name_key(const char *name, char *key)
{
	size_t n = strnlen(name, PS_NAME_MAX);
	memcpy(key, name, n);
	key[n] = '\0';
	return pshash_bytes(key, n);
}

uint64_t ps_client_bytes(const struct client *cl)
{
	return cl->ps ? cl->ps->bytes + (uint64_t)(cl->ps->mask + 1) * sizeof(*cl->ps->tab) : 0;
}

/* True when `text` (n bytes) names one of pgmux's own server-side statements: it holds the
 * process's token.  memchr for the token's first digit runs 16 bytes at a time and stops
 * only at that digit, so a query costs a few instructions unless it is full of numbers. */
static bool names_pgmux_stmt(struct worker *w, const uint8_t *text, size_t n)
{
	if (!w->ps || n < PS_TOKEN_LEN)
		return false;
	const char *tok = w->ps->token;
	const uint8_t *p = text, *last = text + n - PS_TOKEN_LEN;
	while (p <= last && (p = memchr(p, tok[0], (size_t)(last - p) + 1))) {
		if (memcmp(p + 1, tok + 1, PS_TOKEN_LEN - 1) == 0)
			return true;
		p++;
	}
	return false;
}

/* pgmux refuses a message with an error of its own.  It has the server refuse a Parse in its
 * place, so that the server skips to the next Sync and aborts a transaction exactly as it would
 * for its own error; the server's error text is then replaced by pgmux's.  Everything the
 * client sent before must already be flushed (flush_first). */
static enum hook_rc synth_error(struct client *cl, struct ps_server *ps, const char *code, const char *msg)
{
	struct server *sv = cl->link;
	struct ps_req *r = push(ps, PSR_ERROR_VIA_SERVER, NULL);
	if (!r || !(r->err = malloc(strlen(code) + strlen(msg) + 2))) {
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	sprintf(r->err, "%s %s", code, msg);
	struct pktbuf *o = &sv->c.out;
	pktbuf_begin(o, 'P');
	pktbuf_put_str(o, "pgmux_refused");
	pktbuf_put_str(o, "pgmux refused this message");   /* a syntax error, by design */
	pktbuf_put_u16(o, 0);
	pktbuf_end(o);
	return HOOK_CONSUMED;
}

/* The simple-protocol form of synth_error: a Query that raises pgmux's error on the server
 * (SQLSTATE and text exactly pgmux's), answered with ErrorResponse and ReadyForQuery as the
 * client's own Query would be, and aborting a transaction the same way.  The caller counts
 * the ReadyForQuery the client is owed (client.c: a consumed 'Q'). */
static enum hook_rc synth_query_error(struct client *cl, struct ps_server *ps, const char *code,
					const char *msg)
{
	struct server *sv = cl->link;
	char text[300], q[512];
	size_t n = 0;
	for (const char *m = msg; *m && n < sizeof(text) - 1; m++)
		text[n++] = *m == '\'' || *m == '\\' || *m == '$' ? ' ' : *m;
	text[n] = '\0';
	snprintf(q, sizeof(q), "DO $pgmux$BEGIN RAISE EXCEPTION USING ERRCODE = '%.5s', "
		 "MESSAGE = '%s'; END$pgmux$", code, text);
	if (!push(ps, PSR_QUERY, NULL)) {
		client_close(cl, "too many pipelined requests", "08P01");
		return HOOK_STOP;
	}
	ps->block++;
	proto_query(&sv->c.out, q);
	return HOOK_CONSUMED;
}

/* Everything the client sent before the message at scan must reach the server before pgmux's
 * own bytes do: pgmux's pending bytes go first, then the client's.  HOOK_WAIT when the server
 * cannot take them now (its write event resumes the client). */
static enum hook_rc flush_first(struct client *cl)
{
	struct server *sv = cl->link;
	if (sv->c.out.len && !sv->c.wr_on && sbuf_send_out(&sv->c) < 0) {
		server_close(sv, "send failed");
		return HOOK_STOP;
	}
	if (!sbuf_flush(&cl->c))
		return cl->c.dead ? HOOK_STOP : HOOK_WAIT;
	return HOOK_FORWARD;
}

/* Drops the message at scan (whole) from the client's buffer. */
static void drop_msg(struct client *cl, uint32_t total)
{
	sbuf_drop(&cl->c, cl->c.in->scan, total);
}

/* Drops the message at scan, reading away what has not arrived yet.  Everything before it
 * must already be on its way to the server (start == scan). */
static void discard_rest(struct client *cl, uint32_t total, uint32_t avail)
{
	struct iobuf *b = cl->c.in;
	if (avail >= total) {
		drop_msg(cl, total);
		return;
	}
	b->end = b->scan;
	cl->c.pkt_left = total - avail;
	cl->discarding = true;
}


/* Refuses the message at scan with pgmux's own error (see synth_error), dropping its bytes,
 * including those still to come. */
static enum hook_rc refuse_msg(struct client *cl, struct ps_server *ps, uint32_t total,
				 uint32_t avail, const char *code, const char *msg)
{
	char type = (char)cl->c.in->data[cl->c.in->scan];
	enum hook_rc fr = flush_first(cl);
	if (fr != HOOK_FORWARD)
		return fr;
	discard_rest(cl, total, avail);
	if (type == 'Q')
		return synth_query_error(cl, ps, code, msg);
	return synth_error(cl, ps, code, msg);
}

/* The 54000 a message gets when pgmux must read it whole but it exceeds what the client may
 * hold. */
static enum hook_rc refuse_big(struct client *cl, struct ps_server *ps, uint32_t total,
				 uint32_t avail, const char *what)
{
	char msg[200];
	snprintf(msg, sizeof(msg), "%s of %u bytes is too large for pgmux to read (max_client_memory "
		 "= %lld bytes)", what, total, (long long)cl->c.w->cf->max_client_memory);
	return refuse_msg(cl, ps, total, avail, "54000", msg);
}

static const char refuse_own_name[] =
	"pgmux's own prepared statements cannot be used from SQL";

uint32_t ps_msg_need(const struct client *cl, char type, const uint8_t *m, uint32_t total,
		     uint32_t avail)
{
	uint32_t bufsize = cl->c.w->bufsize;
	switch (type) {
	case 'P':
		if (avail <= PROTO_HDR)
			return total < PROTO_HDR + 1 ? total : PROTO_HDR + 1;
		/* named: the whole message is interned; unnamed: only a short DEALLOCATE */
		return m[PROTO_HDR] ? total : (total < PS_DEALLOC_MAX ? total : PS_DEALLOC_MAX);
	case 'Q':
		return total < PS_DEALLOC_MAX ? total : PS_DEALLOC_MAX;
	case 'B':
		return proto_bind_need(m, total, avail, bufsize);
	case 'D':
	case 'C':
		return total;
	default:
		return 0;
	}
}

/* A simple Query or Parse text that pgmux forwards: refused when it names pgmux's own
 * statements (whole), or scanned on as the rest streams through (too big to hold). */
static enum hook_rc check_text(struct client *cl, struct ps_server *ps, char type, uint32_t total,
				 uint32_t avail)
{
	struct worker *w = cl->c.w;
	if (!w->ps)
		return HOOK_FORWARD;   /* no statement of pgmux's exists anywhere yet */
	const uint8_t *m = cl->c.in->data + cl->c.in->scan;
	uint32_t n = avail < total ? avail : total;
	if (names_pgmux_stmt(w, m + PROTO_HDR, n - PROTO_HDR)) {
		char tag[256];
		log_warn("%s refused SQL naming pgmux's own prepared statements",
			 client_tag(cl, tag, sizeof(tag)));
		return refuse_msg(cl, ps, total, avail, "42501", refuse_own_name);
	}
	if (avail < total) {
		/* Keep the tail: the token may straddle the next read. */
		uint32_t keep = n - PROTO_HDR < PS_TOKEN_LEN - 1 ? n - PROTO_HDR : PS_TOKEN_LEN - 1;
		memcpy(cl->ps_tok_tail, m + n - keep, keep);
		cl->ps_tok_keep = (uint8_t)keep;
		cl->ps_tok_scan = true;
	}
	(void)type;
	return HOOK_FORWARD;
}

bool ps_scan_stream(struct client *cl, const uint8_t *p, uint32_t n)
{
	struct worker *w = cl->c.w;
	if (!w->ps || !n)
		return true;
	/* The seam: the kept tail followed by this chunk's first bytes. */
	uint8_t seam[2 * PS_TOKEN_LEN];
	uint32_t k = cl->ps_tok_keep, head = n < PS_TOKEN_LEN - 1 ? n : PS_TOKEN_LEN - 1;
	memcpy(seam, cl->ps_tok_tail, k);
	memcpy(seam + k, p, head);
	if (names_pgmux_stmt(w, seam, k + head) || names_pgmux_stmt(w, p, n))
		return false;
	/* The new tail: the last PS_TOKEN_LEN - 1 bytes of seam + chunk. */
	if (n >= PS_TOKEN_LEN - 1) {
		memcpy(cl->ps_tok_tail, p + n - (PS_TOKEN_LEN - 1), PS_TOKEN_LEN - 1);
		cl->ps_tok_keep = PS_TOKEN_LEN - 1;
	} else {
		uint32_t all = k + n, keep = all < PS_TOKEN_LEN - 1 ? all : PS_TOKEN_LEN - 1;
		uint8_t tmp[2 * PS_TOKEN_LEN];
		memcpy(tmp, cl->ps_tok_tail, k);
		memcpy(tmp + k, p, n);
		memcpy(cl->ps_tok_tail, tmp + all - keep, keep);
		cl->ps_tok_keep = (uint8_t)keep;
	}
	return true;
}

static enum hook_rc client_parse(struct client *cl, struct ps_server *ps, uint32_t total, uint32_t avail)
{
	enum hook_rc fr;
	struct conn *c = &cl->c;
	struct server *sv = cl->link;
	const uint8_t *m = c->in->data + c->in->scan;
	if (!m[PROTO_HDR]) {
		/* The unnamed statement goes through as it is. */
		if (!push(ps, PSR_PARSE, NULL))
			goto oom;
		return HOOK_FORWARD;
	}
	if (avail < total)
		return refuse_big(cl, ps, total, avail, "a prepared statement");
	const uint8_t *nul = memchr(m + PROTO_HDR, 0, total - PROTO_HDR);
	const uint8_t *body = nul ? nul + 1 : NULL;
	if (!body || !memchr(body, 0, (size_t)(m + total - body)) || m + total - body < 3) {
		client_close(cl, "invalid Parse message", "08P01");
		return HOOK_STOP;
	}
	char name[PS_NAME_MAX + 1];
	uint32_t h = name_key((const char *)m + PROTO_HDR, name);
	struct ps_cname *dup = cname_find(cl, name, h);
	if (dup && (dup->doomed || dup->seq < cl->ps->doom_upto)) {
		cname_del(cl, name, h);   /* dropped by a DEALLOCATE ahead of this Parse */
		dup = NULL;
	}
	if (dup) {
		char msg[300];
		snprintf(msg, sizeof(msg), "prepared statement \"%s\" already exists", name);
		log_info("C-%llu prepared statement '%s' was already prepared", (unsigned long long)c->id,
			 pstext_printable(name));   /* PgBouncer's words; the client gets PostgreSQL's */
		return refuse_msg(cl, ps, total, avail, "42P05", msg);
	}
	if (cl->ps && cl->ps->n >= PS_CLIENT_MAX) {
		char msg[128];
		snprintf(msg, sizeof(msg), "too many prepared statements for one client (max %d)", PS_CLIENT_MAX);
		return refuse_msg(cl, ps, total, avail, "54000", msg);
	}
	uint32_t blen = (uint32_t)(m + total - body);
	uint64_t cost = sizeof(struct ps_cname) + strlen(name) + 1 + sizeof(struct ps_stmt) + blen;
	if (client_memory(cl) + cost > (uint64_t)c->w->cf->max_client_memory) {
		char msg[200];
		snprintf(msg, sizeof(msg), "prepared statements of this connection would exceed "
			 "max_client_memory (%lld bytes); deallocate some first",
			 (long long)c->w->cf->max_client_memory);
		return refuse_msg(cl, ps, total, avail, "54000", msg);
	}
	if (names_pgmux_stmt(c->w, body, blen))
		return refuse_msg(cl, ps, total, avail, "42501", refuse_own_name);
	/* Everything before this message must reach the server before pgmux's own bytes. */
	if ((fr = flush_first(cl)) != HOOK_FORWARD)
		return fr;
	m = c->in->data + c->in->scan;
	body = m + total - blen;
	struct ps_stmt *st = stmt_intern(c->w, body, blen);
	if (!st || !cname_add(cl, name, h, st)) {
		if (st && !st->refs) {
			st->refs = 1;   /* nobody took it: let the table forget it */
			stmt_unref(c->w, st);
		}
		drop_msg(cl, total);
		char msg[160];
		snprintf(msg, sizeof(msg), "out of memory for prepared statements%s",
			 st ? "" : " (max_prepared_statement_memory)");
		return synth_error(cl, ps, "53200", msg);
	}
	cl->pool->client_parse_count++;
	/* The request keeps its own copy of the name: the one in the message is dropped. */
	char *nm = strdup(name);
	if (!nm)
		goto oom;
	drop_msg(cl, total);
	struct ps_sent *e = sent_find(ps, st);
	struct ps_req *r;
	if (sent_usable(ps, e)) {
		list_del(&e->lru);
		list_append(&ps->lru, &e->lru);
		if (!(r = push(ps, PSR_PARSE_SYNTH, NULL))) {
			free(nm);
			goto oom;
		}
		r->cname = nm;
		return HOOK_CONSUMED;
	}
	/* The client's own Parse, renamed: its ParseComplete goes to the client. */
	if (e) {
		put_close(c->w, &sv->c.out, st);
		if (!push(ps, PSR_CLOSE_HIDDEN, NULL)) {
			free(nm);
			goto oom;
		}
		sent_del(c->w, ps, e);
	}
	if (!make_room(sv, ps)) {
		free(nm);
		goto oom;
	}
	put_parse(c->w, &sv->c.out, st);
	sv->pool->server_parse_count++;
	if (!(r = push(ps, PSR_PARSE, st))) {
		free(nm);
		goto oom;
	}
	r->cname = nm;
	if (!sent_add(ps, st))
		goto oom;
	return HOOK_CONSUMED;
oom:
	client_close(cl, "out of memory", "53200");
	return HOOK_STOP;
}

/* Bind and Describe('S') name a statement: map the name, make sure the server has it.  A
 * Bind's parameters are never needed: only its names (ps_msg_need), so a Bind of any size
 * streams through after its renamed head. */
static enum hook_rc client_uses_stmt(struct client *cl, struct ps_server *ps, char type,
				       uint32_t total, uint32_t avail)
{
	enum hook_rc fr;
	struct conn *c = &cl->c;
	struct server *sv = cl->link;
	const uint8_t *m = c->in->data + c->in->scan;
	uint32_t have = avail < total ? avail : total;
	const uint8_t *p = m + PROTO_HDR, *end = m + have;
	const char *portal = NULL;
	if (type == 'B') {
		portal = proto_get_str(&p, end);
		const uint8_t *q = p;
		if (!portal || !proto_get_str(&q, end)) {
			if (avail < total)
				return refuse_big(cl, ps, total, avail, "a Bind whose names are");
			client_close(cl, "invalid Bind message", "08P01");
			return HOOK_STOP;
		}
	} else {
		if (avail < total)
			return refuse_big(cl, ps, total, avail, "a Describe message");
		if (p >= end) {
			client_close(cl, "invalid Describe message", "08P01");
			return HOOK_STOP;
		}
		if (*p != 'S') {
			if (!push(ps, PSR_DESCRIBE, NULL))
				goto oom;
			return HOOK_FORWARD;
		}
		p++;
	}
	const char *name = proto_get_str(&p, end);
	if (!name) {
		client_close(cl, "invalid Describe message", "08P01");
		return HOOK_STOP;
	}
	if (!*name) {
		/* bind_count is PgBouncer's: Binds of named statements only */
		if (!push(ps, type == 'B' ? PSR_BIND : PSR_DESCRIBE, NULL))
			goto oom;
		return HOOK_FORWARD;
	}
	uint32_t prefix = (uint32_t)(p - m);
	char key[PS_NAME_MAX + 1];
	struct ps_cname *cn = cname_find(cl, key, name_key(name, key));
	/* A use of a doomed name (a DEALLOCATE of it on its way ahead) is not refused here: that
	 * DEALLOCATE may yet fail (an aborted transaction), and then the name stays.  The server's
	 * copy is untrusted, so it is prepared again first and the use runs. */
	if (!cn) {
		char msg[300];
		snprintf(msg, sizeof(msg), "prepared statement \"%s\" does not exist", key);
		return refuse_msg(cl, ps, total, avail, "26000", msg);
	}
	if (type == 'B' && cn->gen != cn->st->gen) {
		/* Prepared before its result type changed: PostgreSQL refuses it until re-prepared. */
		return refuse_msg(cl, ps, total, avail, "0A000", "cached plan must not change result type");
	}
	struct ps_stmt *st = cn->st;
	struct ps_sent *e = sent_find(ps, st);
	if (sent_usable(ps, e)) {
		list_del(&e->lru);
		list_append(&ps->lru, &e->lru);
	} else {
		/* pgmux's Parse must reach the server after everything the client sent before. */
		if ((fr = flush_first(cl)) != HOOK_FORWARD)
			return fr;
		if (!ensure_on_server(sv, st))
			goto oom;
	}
	const char *sname = st->sname;
	uint32_t newlen = total - 1 - (uint32_t)strlen(name) + st->sname_len;
	struct pktbuf hb = { 0 };
	pktbuf_put_u8(&hb, (uint8_t)type);
	pktbuf_put_u32(&hb, newlen);
	if (type == 'B')
		pktbuf_put_str(&hb, portal);
	else
		pktbuf_put_u8(&hb, 'S');
	pktbuf_put_str(&hb, sname);
	if (hb.failed) {
		pktbuf_free(&hb);
		goto oom;
	}
	/* Renamed in place when the whole message is here: it leaves in the same send as its
	 * neighbours.  (sbuf_replace may move the buffer: nothing below reads m, portal or
	 * name.) */
	bool inplace = avail >= total && sbuf_replace(c, prefix, hb.data, hb.len);
	if (!inplace && (fr = flush_first(cl)) != HOOK_FORWARD) {
		pktbuf_free(&hb);
		return fr;
	}
	if (!push(ps, type == 'B' ? PSR_BIND : PSR_DESCRIBE, type == 'B' ? st : NULL)) {
		pktbuf_free(&hb);
		goto oom;
	}
	if (type == 'B')
		cl->pool->bind_count++;
	if (inplace) {
		c->in->scan += newlen + 1;
		pktbuf_free(&hb);
		return HOOK_CONSUMED;
	}
	/* A message too big to hold: the renamed head goes through pgmux's own buffer and the
	 * client's remaining bytes follow it unchanged. */
	pktbuf_put(&sv->c.out, hb.data, hb.len);
	pktbuf_free(&hb);
	sbuf_drop(c, c->in->scan, prefix);
	uint32_t rest = total - prefix, left = avail - prefix;
	if (left >= rest) {
		c->in->scan += rest;
	} else {
		c->in->scan += left;
		c->pkt_left = rest - left;
	}
	return HOOK_CONSUMED;
oom:
	client_close(cl, "out of memory", "53200");
	return HOOK_STOP;
}

static enum hook_rc client_close_msg(struct client *cl, struct ps_server *ps, uint32_t total, uint32_t avail)
{
	if (avail < total)
		return refuse_big(cl, ps, total, avail, "a Close message");
	const uint8_t *m = cl->c.in->data + cl->c.in->scan;
	const uint8_t *p = m + PROTO_HDR + 1, *end = m + total;
	const char *name = total > PROTO_HDR ? proto_get_str(&p, end) : NULL;
	if (total <= PROTO_HDR || !name) {
		client_close(cl, "invalid Close message", "08P01");
		return HOOK_STOP;
	}
	if (m[PROTO_HDR] != 'S' || !*name) {
		if (!push(ps, PSR_CLOSE, NULL))
			goto oom;
		return HOOK_FORWARD;
	}
	/* The server keeps it cached for others; the client's name goes. */
	char key[PS_NAME_MAX + 1];
	cname_del(cl, key, name_key(name, key));
	drop_msg(cl, total);
	if (!push(ps, PSR_CLOSE_SYNTH, NULL))
		goto oom;
	return HOOK_CONSUMED;
oom:
	client_close(cl, "out of memory", "53200");
	return HOOK_STOP;
}

/* "DEALLOCATE name" of one of the client's names, as a simple Query or an unnamed Parse (how
 * psycopg 3.1 evicts its cache): the server knows the statement by pgmux's name, so the text
 * is renamed in place after making sure the server holds it; the server's copy is then gone.
 * HOOK_FORWARD when the message is not such a DEALLOCATE or was renamed (it is then read and
 * forwarded as usual; *hide_prepare, when set, says the Query now starts with pgmux's own
 * PREPARE, whose answer the client must not see; *drop_name, when set, is the client's name
 * to forget once the Query has run, unless a Parse behind it made it anew); HOOK_WAIT /
 * HOOK_STOP from the flush. */
static enum hook_rc client_deallocate(struct client *cl, struct ps_server *ps, char type,
					uint32_t total, uint32_t avail, bool *hide_prepare,
					char **drop_name)
{
	if (avail < total || total > PS_DEALLOC_MAX)
		return HOOK_FORWARD;
	const uint8_t *m = cl->c.in->data + cl->c.in->scan;
	const char *q = (const char *)m + PROTO_HDR;
	const uint8_t *tail = NULL;
	if (type == 'P') {
		if (*q)
			return HOOK_FORWARD;   /* only the unnamed statement carries such utility text */
		q++;
		if ((q[0] | 0x20) != 'd' && q[0] != ' ' && q[0] != '\n' && q[0] != '\t')
			return HOOK_FORWARD;   /* the common case, decided without scanning the text */
		const uint8_t *qe = memchr(q, 0, (size_t)(m + total - (const uint8_t *)q));
		if (!qe)
			return HOOK_FORWARD;
		tail = qe + 1;
	} else if (((q[0] | 0x20) != 'd' && q[0] != ' ' && q[0] != '\n' && q[0] != '\t') ||
		   !memchr(q, 0, total - PROTO_HDR)) {
		return HOOK_FORWARD;
	}
	char name[256];
	if (!pstext_dealloc_name(q, name, sizeof(name)))
		return HOOK_FORWARD;
	char key[PS_NAME_MAX + 1];
	uint32_t h = name_key(name, key);
	struct ps_cname *cn = cname_find(cl, key, h);
	if (!cn)
		return HOOK_FORWARD;
	enum hook_rc fr = flush_first(cl);
	if (fr != HOOK_FORWARD)
		return fr;
	struct ps_stmt *st = cn->st;
	char sql[2 * PS_SNAME_LEN + 64];
	char sn[PS_SNAME_LEN];
	server_name(cl->c.w, st, sn, sizeof(sn));
	struct ps_sent *held = sent_find(ps, st);
	bool hidden = false;
	if (type == 'Q' && !sent_usable(ps, held)) {
		/* The server lacks it, so nothing there needs dropping; but the answer must still be
		 * PostgreSQL's: success in a live transaction, 25P02 in an aborted one.  Preparing it
		 * first would not do: in an aborted transaction that Parse fails and PostgreSQL skips
		 * to a Sync, swallowing this Query too (reliability.md, finding 14).  A throwaway
		 * statement made and dropped by the Query itself behaves as the client's would. */
		snprintf(sql, sizeof(sql), "PREPARE %s_d AS SELECT 1; DEALLOCATE %s_d", sn, sn);
		hidden = true;
	} else {
		if (!ensure_on_server(cl->link, st)) {
			client_close(cl, "out of memory", "53200");
			return HOOK_STOP;
		}
		snprintf(sql, sizeof(sql), "DEALLOCATE %s", sn);
	}
	struct pktbuf pb = { 0 };
	if (type == 'P') {
		pktbuf_begin(&pb, 'P');
		pktbuf_put_str(&pb, "");
		pktbuf_put_str(&pb, sql);
		pktbuf_put(&pb, tail, (size_t)(m + total - tail));
		pktbuf_end(&pb);
	} else {
		proto_query(&pb, sql);
	}
	bool ok = !pb.failed && sbuf_replace(&cl->c, total, pb.data, pb.len);
	pktbuf_free(&pb);
	if (!ok) {
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	*hide_prepare = hidden;
	/* Gone from the server once it runs: never trusted again, so the next use closes (no
	 * error if absent) and parses afresh. */
	struct ps_sent *e = sent_find(ps, st);
	if (e)
		e->stale = true;
	/* A Query's DEALLOCATE may fail (an aborted transaction): the client's name then stays,
	 * as in PostgreSQL, so it goes only when the server's CommandComplete says it ran. */
	if (type == 'Q' && cn->doomed)
		return HOOK_FORWARD;   /* an earlier DEALLOCATE of it, still on its way, drops it */
	if (type == 'Q' && (*drop_name = strdup(key)) != NULL) {
		/* one copy per name in flight (doomed), so a pipeline of DEALLOCATEs holds no more
		 * than the client's names */
		cn->doomed = true;
		return HOOK_FORWARD;
	}
	cname_del(cl, key, h);
	return HOOK_FORWARD;
}

enum hook_rc ps_client_message(struct client *cl, char type, uint32_t total, uint32_t avail)
{
	struct server *sv = cl->link;
	struct ps_server *ps = sps(sv);
	if (!ps) {
		client_close(cl, "out of memory", "53200");
		return HOOK_STOP;
	}
	struct ps_req *r;
	enum hook_rc pr;
	bool hide = false, maybe_d;
	char *drop_name = NULL;
	switch (type) {
	case 'P':
		if (!cl->c.in->data[cl->c.in->scan + PROTO_HDR] &&
		    (pr = check_text(cl, ps, type, total, avail)) != HOOK_FORWARD)
			return pr;
		if ((pr = client_deallocate(cl, ps, 'P', total, avail, &hide, &drop_name)) != HOOK_FORWARD)
			return pr;
		return client_parse(cl, ps, total, avail);
	case 'B':
	case 'D':
		return client_uses_stmt(cl, ps, type, total, avail);
	case 'C':
		return client_close_msg(cl, ps, total, avail);
	case 'E':
		r = push(ps, PSR_EXECUTE, NULL);
		break;
	case 'S':
		r = push(ps, PSR_SYNC, NULL);
		ps->block++;
		break;
	case 'Q':
		if ((pr = check_text(cl, ps, type, total, avail)) != HOOK_FORWARD)
			return pr;
		/* DEALLOCATE, DISCARD and what may precede them (blanks, comments) are told from
		 * every other Query by the text's first byte, before any scanning */
		maybe_d = avail > PROTO_HDR &&
			  pstext_may_deallocate(cl->c.in->data[cl->c.in->scan + PROTO_HDR]);
		if (maybe_d &&
		    (pr = client_deallocate(cl, ps, 'Q', total, avail, &hide, &drop_name)) != HOOK_FORWARD)
			return pr;
		r = push(ps, PSR_QUERY, NULL);
		if (!r) {
			free(drop_name);
			break;
		}
		/* The names made before this Query: those a DEALLOCATE in it drops, should it run
		 * (names made behind it survive, as in PostgreSQL). */
		r->drop_upto = (cl->ps ? cl->ps->seq : 0) + 1;
		if (maybe_d) {
			r->hide_prepare = hide;
			r->cname = drop_name;   /* forgotten at its CommandComplete */
			if (!hide && avail >= total && total <= PS_DEALLOC_MAX &&
			    pstext_query_drops_all((const char *)cl->c.in->data + cl->c.in->scan +
						   PROTO_HDR, total - PROTO_HDR)) {
				/* The server's copies are trusted no more: a use pipelined behind it
				 * closes and parses first, so it never names a statement this drops;
				 * a Parse behind it may reuse a name it drops (doom_upto). */
				if (cl->ps)
					cl->ps->doom_upto = r->drop_upto;
				for (struct list *i = ps->lru.next; i != &ps->lru; i = i->next)
					list_entry(i, struct ps_sent, lru)->stale = true;
			}
		}
		ps->block++;
		break;
	case 'F':
		r = push(ps, PSR_FUNC, NULL);
		break;
	default:
		return HOOK_FORWARD;
	}
	if (!r) {
		client_close(cl, "too many pipelined requests", "08P01");
		return HOOK_STOP;
	}
	return HOOK_FORWARD;
}

/* ---- server side ---- */

/* The client name a DEALLOCATE Query r drops (r->cname), if it is still the one made before r
 * was sent (a Parse behind it may have made the name anew); its key and hash are left in key
 * and *h. */
static struct ps_cname *dealloc_target(struct client *cl, const struct ps_req *r, char *key,
				       uint32_t *h)
{
	*h = name_key(r->cname, key);
	struct ps_cname *cn = cl ? cname_find(cl, key, *h) : NULL;
	return cn && cn->seq < r->drop_upto ? cn : NULL;
}

/* A Query is over (answered or skipped): the names a DEALLOCATE in it was to drop are doomed
 * no more (it ran and dropped them, or it did not run and they stay). */
static void query_done(struct server *sv, const struct ps_req *r)
{
	struct client *cl = sv->link;
	if (!cl || !cl->ps)
		return;
	if (cl->ps->doom_upto == r->drop_upto)
		cl->ps->doom_upto = 0;
	char key[PS_NAME_MAX + 1];
	uint32_t h;
	struct ps_cname *cn = r->cname ? dealloc_target(cl, r, key, &h) : NULL;
	if (cn)
		cn->doomed = false;
}

/* The head request was skipped or failed: a Parse of it leaves no statement behind, on the
 * server or in the client's names, as in PostgreSQL. */
static void drop_head(struct server *sv, struct ps_server *ps)
{
	struct ps_req *r = head(ps);
	if ((r->kind == PSR_PARSE_HIDDEN || r->kind == PSR_PARSE) && r->st) {
		/* This Parse left nothing, but an earlier one of the same statement may have, when
		 * the Close pgmux sent before it was skipped too: the server may or may not hold
		 * it, so its next use closes it first (stale) rather than parse it blind. */
		struct ps_sent *e = sent_find(ps, r->st);
		if (e)
			e->stale = true;
	}
	/* A skipped eviction Close leaves the statement on the server, unknown to pgmux: it is
	 * known again as stale, so that its next Parse is preceded by a Close, not refused 42P05. */
	if (r->kind == PSR_CLOSE_HIDDEN && r->st && !sent_find(ps, r->st) && sent_add(ps, r->st))
		sent_find(ps, r->st)->stale = true;
	if (r->kind == PSR_QUERY)
		query_done(sv, r);
	/* a skipped Parse leaves no name; a skipped DEALLOCATE (a Query's cname) keeps it */
	if (r->cname && sv->link && r->kind != PSR_QUERY)
		cname_del(sv->link, r->cname, name_key(r->cname, (char[PS_NAME_MAX + 1]){ 0 }));
	pop(sv->c.w, ps);
}

enum hook_rc ps_emit(struct server *sv)
{
	struct ps_server *ps = sv->ps;
	struct ps_req *r;
	/* pgmux's answers go between the server's messages, never inside one it is streaming */
	if (sv->c.pkt_left)
		return HOOK_FORWARD;
	while ((r = head(ps)) && (r->kind == PSR_PARSE_SYNTH || r->kind == PSR_CLOSE_SYNTH)) {
		if (r->skipped) {
			drop_head(sv, ps);   /* the server skipped it: no answer of pgmux's either */
			continue;
		}
		uint8_t msg[5];
		uint32_t n = 5;
		msg[0] = r->kind == PSR_PARSE_SYNTH ? '1' : '3';
		proto_put32(msg + 1, 4);
		if (!sbuf_insert(&sv->c, msg, n)) {
			if (!sbuf_flush(&sv->c) || !sbuf_insert(&sv->c, msg, n))
				return sv->c.dead ? HOOK_STOP : HOOK_WAIT;
		}
		pop(sv->c.w, ps);
	}
	return HOOK_FORWARD;
}

/* An error ends the server's work up to the next Sync: what was queued behind it never ran. */
static void error_skip(struct server *sv, struct ps_server *ps, const uint8_t *body, uint32_t blen)
{
	struct ps_req *r = head(ps);
	if (r && r->kind == PSR_BIND && r->st &&
	    strcmp(proto_error_field(body, blen, 'C'), "0A000") == 0 &&
	    strstr(proto_error_field(body, blen, 'M'), "cached plan must not change result type")) {
		struct ps_sent *e = sent_find(ps, r->st);
		if (e) {
			/* The first server to notice bumps the statement: every client that prepared it
			 * before gets this error too, as from its own statement in PostgreSQL. */
			if (e->gen == r->st->gen)
				r->st->gen++;
			e->stale = true;
		}
	}
	while ((r = head(ps)) && r->kind != PSR_SYNC)
		drop_head(sv, ps);
	/* No Sync sent yet: what the client sends until it is skipped too (push marks it). */
	if (!r)
		ps->skipping = true;
}

/* The server's ErrorResponse at scan (body, blen: whole) ends its work up to the Sync as any
 * error does, and pgmux's own error (pb, freed here) goes to the client in its place. */
static enum hook_rc replace_error(struct server *sv, struct ps_server *ps, const uint8_t *body,
				  uint32_t blen, struct pktbuf *pb)
{
	error_skip(sv, ps, body, blen);
	bool ok = !pb->failed && sbuf_replace(&sv->c, PROTO_HDR + blen, pb->data, pb->len);
	pktbuf_free(pb);
	return ok ? HOOK_CONSUMED : HOOK_FORWARD;
}

static bool tag_is(const uint8_t *body, uint32_t blen, const char *tag)
{
	size_t n = strlen(tag) + 1;
	return blen >= n && memcmp(body, tag, n) == 0;
}

/* An eviction (make_room) forgets a statement when it sends the Close; a Parse of it still in
 * flight must not bring it back when its ParseComplete arrives: the Close behind it runs. */
static bool close_queued(const struct ps_server *ps, const struct ps_stmt *st)
{
	for (uint32_t i = 1; i < ps->qn; i++) {
		const struct ps_req *q = &ps->q[(ps->qhead + i) & (ps->qcap - 1)];
		if (q->kind == PSR_CLOSE_HIDDEN && q->st == st)
			return true;
	}
	return false;
}

/* The body of ps_server_message and ps_server_note.  Two exported entries share it so that each
 * has one caller: the forwarding loop's (server.c) stays inlined into that loop under LTO,
 * which a second caller of the same function had stopped (4% more instructions per
 * transaction in cgbench, on every pool). */
static inline __attribute__((always_inline)) enum hook_rc
server_message(struct server *sv, char type, const uint8_t *body, uint32_t blen, bool whole)
{
	struct ps_server *ps = sv->ps;
	if (!ps || type == 'S' || type == 'N' || type == 'A')
		return HOOK_FORWARD;
	struct ps_req *r = head(ps);
	if (r && (r->kind == PSR_PARSE_SYNTH || r->kind == PSR_CLOSE_SYNTH)) {
		enum hook_rc e = ps_emit(sv);
		return e == HOOK_FORWARD ? HOOK_CONSUMED : e;
	}
	if (!r)
		return HOOK_FORWARD;
	switch (type) {
	case '1':
		if ((r->kind == PSR_PARSE_HIDDEN || r->kind == PSR_PARSE) && r->st) {
			struct ps_sent *e = sent_find(ps, r->st);
			if (!e && !close_queued(ps, r->st) && sent_add(ps, r->st))
				e = sent_find(ps, r->st);   /* forgotten meanwhile (DISCARD ALL) but parsed after */
			if (e)
				e->confirmed = true;
		}
		if (r->kind == PSR_PARSE_HIDDEN) {
			pop(sv->c.w, ps);
			sbuf_drop(&sv->c, sv->c.in->scan, PROTO_HDR + blen);
			return HOOK_CONSUMED;
		}
		if (r->kind == PSR_PARSE)
			pop(sv->c.w, ps);
		break;
	case '2':
		if (r->kind == PSR_BIND)
			pop(sv->c.w, ps);
		break;
	case '3':
		if (r->kind == PSR_CLOSE_HIDDEN) {
			pop(sv->c.w, ps);
			sbuf_drop(&sv->c, sv->c.in->scan, PROTO_HDR + blen);
			return HOOK_CONSUMED;
		}
		if (r->kind == PSR_CLOSE)
			pop(sv->c.w, ps);
		break;
	case 'T':
	case 'n':
		if (r->kind == PSR_DESCRIBE)
			pop(sv->c.w, ps);
		break;
	case 'C':
		/* DISCARD ALL / DEALLOCATE ALL that ran, by whatever protocol: the server's statements
		 * are gone, and so are the client's names, as in PostgreSQL. */
		if (whole && blen && (body[0] == 'D') &&
		    (tag_is(body, blen, "DISCARD ALL") || tag_is(body, blen, "DEALLOCATE ALL"))) {
			ps_server_forget(sv);
			/* names the client made since sending it (pipelined) survive */
			if (sv->link && r->kind == PSR_QUERY)
				cmap_clear_upto(sv->link, r->drop_upto - 1);
			else if (sv->link)
				cmap_clear(sv->link);
		}
		if (r->kind == PSR_QUERY && r->cname && whole && tag_is(body, blen, "DEALLOCATE")) {
			/* the client's DEALLOCATE ran: its name goes now, unless a Parse behind it
			 * made the name anew */
			char key[PS_NAME_MAX + 1];
			uint32_t h;
			if (dealloc_target(sv->link, r, key, &h))
				cname_del(sv->link, key, h);
			free(r->cname);
			r->cname = NULL;
		}
		if (r->kind == PSR_QUERY && r->hide_prepare) {
			/* pgmux's throwaway PREPARE ahead of the client's DEALLOCATE */
			r->hide_prepare = false;
			if (whole && tag_is(body, blen, "PREPARE")) {
				sbuf_drop(&sv->c, sv->c.in->scan, PROTO_HDR + blen);
				return HOOK_CONSUMED;
			}
		}
		if (r->kind == PSR_EXECUTE)
			pop(sv->c.w, ps);
		break;
	case 'I':
	case 's':
		if (r->kind == PSR_EXECUTE)
			pop(sv->c.w, ps);
		break;
	case 'E':
		if (!whole) {
			/* Larger than pgmux reads (it echoes a huge value): its fields are not needed,
			 * except to replace pgmux's own refusal, which is always small. */
			if (r->kind == PSR_ERROR_VIA_SERVER) {
				server_close(sv, "oversized error from server where pgmux expected its own");
				return HOOK_STOP;
			}
			body = NULL;
			blen = 0;
		}
		if (r->kind == PSR_ERROR_VIA_SERVER) {
			/* The refused Parse: pgmux's error goes out in place of the server's. */
			struct pktbuf pb = { 0 };
			const char *sp = strchr(r->err, ' ');
			char code[6] = "XX000";
			if (sp && sp - r->err == 5)
				memcpy(code, r->err, 5);
			proto_error(&pb, "ERROR", code, sp ? sp + 1 : r->err);
			pop(sv->c.w, ps);
			return replace_error(sv, ps, body, blen, &pb);
		}
		if (r->kind == PSR_QUERY || r->kind == PSR_FUNC) {
			r->failed = true;
			break;
		}
		if ((r->kind == PSR_BIND || r->kind == PSR_DESCRIBE) && body &&
		    strcmp(proto_error_field(body, blen, 'C'), "26000") == 0 &&
		    names_pgmux_stmt(sv->c.w, body, blen)) {
			/* pgmux's statement was dropped ahead of this use by SQL pgmux did not see as a
			 * DEALLOCATE ALL (in a multi-statement Query, say): the error must not show the
			 * client pgmux's own name.  PostgreSQL's words, without the name. */
			struct pktbuf pb = { 0 };
			proto_error(&pb, "ERROR", "26000", "prepared statement does not exist (dropped by "
				    "a DEALLOCATE or DISCARD ahead of this use)");
			return replace_error(sv, ps, body, blen, &pb);
		}
		error_skip(sv, ps, body, blen);
		break;
	case 'Z':
		/* requests the server skipped after an error get no answer: this ReadyForQuery
		 * ends them */
		while ((r = head(ps)) && r->skipped)
			drop_head(sv, ps);
		if (r && r->kind == PSR_QUERY)
			query_done(sv, r);
		if (r && (r->kind == PSR_SYNC || r->kind == PSR_QUERY || r->kind == PSR_FUNC))
			pop(sv->c.w, ps);
		break;
	default:
		break;
	}
	return HOOK_FORWARD;
}

enum hook_rc ps_server_message(struct server *sv, char type, const uint8_t *body, uint32_t blen,
				 bool whole)
{
	return server_message(sv, type, body, blen, whole);
}

enum hook_rc ps_server_note(struct server *sv, char type, const uint8_t *body, uint32_t blen)
{
	return server_message(sv, type, body, blen, true);
}

const char *ps_client_query(struct client *cl, const char *name, uint32_t *len)
{
	if (!cl->ps)
		return NULL;
	char key[PS_NAME_MAX + 1];
	struct ps_cname *n = cname_find(cl, key, name_key(name, key));
	if (!n)
		return NULL;
	*len = (uint32_t)strlen((const char *)n->st->body);
	return (const char *)n->st->body;
}
