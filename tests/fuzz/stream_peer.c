/* stream_peer.c: the fake PostgreSQL server, fake clients and script interpreter that the stream harnesses drive pgmux with. */
#include "stream_peer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "client.h"
#include "config.h"
#include "log.h"
#include "pgmux.h"
#include "route.h"

/* ---- limits: every input stays small and quick -------------------------------------------- */

#define MAX_CLIENTS     4           /* client slots a script addresses */
#define MAX_CANCELS     4           /* cancel-request sockets open at once */
#define MAX_SRV         64          /* fake server connections at once */
#define MAX_LISTEN      8
#define CLI_BUDGET      (1536u << 10) /* bytes the clients of one input may send */
#define SRV_BUDGET      (3u << 20)  /* bytes the fake server may answer with */
#define PUMP_ITERS      3000        /* loop turns of one pump */
#define INPUT_ITERS     30000       /* loop turns of one input's script */
/* Turns without a byte moved that end a pump.  One is enough in principle: a non-blocking
 * event_base_loop() runs until no callback is active, so pgmux is idle when it returns, and
 * only the peer's next move can wake it; the second is a margin. */
#define QUIET_TURNS     2
#define RECV_STEP       (256u << 10)

/* ---- failure reporting -------------------------------------------------------------------- */

static int debug_level(void)
{
	/* STREAM_DEBUG=1 traces the script and both sides' messages on stderr (for reproducers). */
	static int lvl = -1;
	if (lvl < 0) {
		const char *e = getenv("STREAM_DEBUG");
		lvl = e ? atoi(e) : 0;
	}
	return lvl;
}

#define TRACE(...) \
	do { \
		if (debug_level()) \
			fprintf(stderr, __VA_ARGS__); \
	} while (0)

/* Every finding in doc/reliability.md is fixed, so the steering around them is off unless
 * STREAM_KNOWN_BUGS=0 asks for it (to fuzz a binary from before the fixes). */
bool peer_known_bugs(void)
{
	const char *e = getenv("STREAM_KNOWN_BUGS");
	return !e || !*e || strcmp(e, "0") != 0;
}

/* STREAM_DEBUG=2: a message body too, printable bytes as they are, the rest as '.'. */
static void trace_text(const uint8_t *b, uint32_t n)
{
	fprintf(stderr, "      |");
	for (uint32_t i = 0; i < n && i < 160; i++)
		fputc(b[i] >= 32 && b[i] < 127 ? b[i] : '.', stderr);
	fprintf(stderr, "|\n");
}

/* An invariant broke: say which, and abort so that libFuzzer keeps the input. */
static void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "stream invariant failed: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* ---- growable byte buffers ------------------------------------------------------------------ */

struct bytes {
	uint8_t *p;
	size_t len, cap;
	size_t off;             /* consumed (in-buffers) or sent (out-buffers) */
};

static void b_room(struct bytes *b, size_t n)
{
	if (b->len + n <= b->cap)
		return;
	if (b->off && b->off == b->len) {
		b->off = b->len = 0;
		if (n <= b->cap)
			return;
	}
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + n)
		cap *= 2;
	uint8_t *q = realloc(b->p, cap);
	if (!q)
		fail("harness out of memory");
	b->p = q;
	b->cap = cap;
}

static void b_put(struct bytes *b, const void *d, size_t n)
{
	b_room(b, n);
	if (n)
		memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void b_u8(struct bytes *b, uint8_t v)
{
	b_put(b, &v, 1);
}

static void b_u16(struct bytes *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };
	b_put(b, x, 2);
}

static void b_u32(struct bytes *b, uint32_t v)
{
	uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
	b_put(b, x, 4);
}

static void b_str(struct bytes *b, const char *s)
{
	b_put(b, s, strlen(s) + 1);
}

static void b_fill(struct bytes *b, uint8_t c, size_t n)
{
	b_room(b, n);
	memset(b->p + b->len, c, n);
	b->len += n;
}

/* Starts a message of `type` (0: a startup-style packet, no type byte); returns where its
 * length goes, for b_end. */
static size_t b_begin(struct bytes *b, char type)
{
	if (type)
		b_u8(b, (uint8_t)type);
	size_t at = b->len;
	b_u32(b, 0);
	return at;
}

static void b_end(struct bytes *b, size_t at)
{
	uint32_t n = (uint32_t)(b->len - at);
	b->p[at] = (uint8_t)(n >> 24);
	b->p[at + 1] = (uint8_t)(n >> 16);
	b->p[at + 2] = (uint8_t)(n >> 8);
	b->p[at + 3] = (uint8_t)n;
}

static size_t b_avail(const struct bytes *b)
{
	return b->len - b->off;
}

static void b_consume(struct bytes *b, size_t n)
{
	b->off += n;
	if (b->off == b->len) {
		b->off = b->len = 0;
	} else if (b->off > (64u << 10) && b->off > b->len / 2) {
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
}

static void b_free(struct bytes *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* ---- the fake server's per-connection state ------------------------------------------------ */

struct stmt {
	struct stmt *next;
	char *name;
	char *text;
	size_t tlen;
	int nparams;
};

struct portal {
	struct portal *next;
	char *name;
	char *text;
	size_t tlen;
	long rows_left;         /* -1: not run yet */
};

enum { SRV_STARTUP, SRV_READY, SRV_CANCEL };

struct fsrv {
	int fd;
	int backend;            /* which listener accepted it */
	int serial;
	uint8_t phase;
	bool monitor;           /* pgmux's libpq monitor: always answered honestly, kept open */
	bool tx_user;           /* its user's statements must arrive renamed by pgmux */
	bool stall_rd, stall_wr;
	bool closing;           /* Terminate seen or a close asked: goes once its output is out */
	bool eof;
	bool last_h;            /* the last message was a Flush (the trace skips runs of them) */
	bool lost_parse;        /* a Parse or Close ended a COPY IN and was dropped: pgmux's
				 * statement tracking cannot know (no statement check on this
				 * connection) */
	bool suspect;           /* a message failed the deep check right after a client's cut */
	char tx;                /* I, T, E */
	bool explicit_tx;
	uint8_t copy;           /* 0, 1 (simple COPY IN), 2 (extended COPY IN) */
	bool skip;              /* after an extended-protocol error: ignore up to Sync */
	long copy_rows;
	char *copy_rest;        /* statements after a simple-query COPY, run once it ends */
	size_t copy_rest_len;
	uint32_t pid, key;
	struct bytes in, out;
	struct stmt *stmts[64];  /* by name hash: a server may hold thousands */
	struct portal *portals;
	char user[64];
};

/* ---- the fake clients --------------------------------------------------------------------- */

struct fcli {
	int fd;                 /* -1: slot free */
	int serial;             /* its token /\*c<serial>*\/ in every SQL text it sends */
	bool ssl_probe;         /* sent SSLRequest first: one 'N' byte comes before the rest */
	bool login_ok;          /* AuthenticationOk seen */
	bool ready;             /* first ReadyForQuery seen */
	bool eof;               /* pgmux closed it */
	bool stall_rd;
	bool garbled;           /* its stream stopped parsing (allowed only with a hostile server) */
	bool garbled_open;      /* ... without one: an error unless pgmux then closes the client */
	char garbled_why[96];
	bool raw, inner_bad;    /* it sent raw bytes / a framed message with a bad body */
	bool copy_used;         /* it took part in COPY: the Syncs PostgreSQL ignores skew counting */
	bool cut;               /* it went away mid-message */
	bool ext_open;          /* extended-protocol messages sent since its last Sync */
	bool misuse;            /* a Query or FunctionCall while ext_open: after an error PostgreSQL
				 * ignores it until a Sync, so its ReadyForQuery may never come */
	bool early;             /* sent messages behind its startup packet, before its login ended */
	bool have_key;
	uint32_t pid, key;
	uint32_t chunk;         /* bytes per write; 0: all at once */
	unsigned syncs;         /* Sync, Query and FunctionCall sent: ReadyForQuery owed */
	unsigned zs;            /* ReadyForQuery received */
	size_t pre;             /* untyped bytes (startup packet) at the front of out */
	int user, db;
	struct bytes out, in;
};

struct fcancel {
	int fd;
	struct bytes out;
};

struct peer {
	struct worker *w;
	struct peer_setup set;
	char dir[108];
	int lfd[MAX_LISTEN];
	int n_listen;
	struct fsrv *srv[MAX_SRV];
	int n_srv;
	int srv_serial;
	struct fcli cli[MAX_CLIENTS];
	int cli_serial;
	struct fcancel can[MAX_CANCELS];
	/* keys the fake server handed out, for checking pgmux's cancel requests */
	uint32_t keys[256][2];
	int n_keys;
	/* the fake server's behaviour, set by the script */
	int err_countdown;      /* >0: that many statements on, one fails */
	int rows;               /* rows a SELECT returns */
	size_t width;           /* padding bytes in each row */
	uint8_t login_mode;     /* how the next connection's login goes (one shot) */
	char learned[72];       /* a server-side statement name pgmux used (pgmux_<token>_<n>) */
	/* what this input did: it decides which invariants apply */
	bool srv_hostile;       /* the server broke the protocol (raw bytes, lies) */
	bool srv_cut;           /* a server connection went away with an answer half sent */
	bool cli_raw;           /* a client sent unframed bytes */
	bool cli_inner_bad;     /* a client sent a framed message whose body is malformed */
	bool cli_cut;           /* a client went away mid-message */
	bool pgmux_closed;      /* pgmux closed a client */
	bool teardown;          /* closing everything: the fake server drops what connects */
	size_t cli_bytes, srv_bytes;
	long turns;             /* loop turns this input */
	unsigned name_seq;      /* for unique statement names */
	/* statistics for the long run's report */
	struct bytes scratch;   /* where client messages are built (msg_start) */
	bool known_bugs;        /* peer_known_bugs(): no steering around known pgmux bugs */
	unsigned long long n_inputs;
	int sockets;            /* sockets open between inputs */
};

/* ---- the input reader ---------------------------------------------------------------------- */

struct rd {
	const uint8_t *p;
	size_t n, i;
};

static bool rd_more(const struct rd *r)
{
	return r->i < r->n;
}

static uint8_t rd_u8(struct rd *r)
{
	return r->i < r->n ? r->p[r->i++] : 0;
}

/* Up to n input bytes (fewer at the end). */
static const uint8_t *rd_bytes(struct rd *r, size_t *n)
{
	size_t k = r->n - r->i < *n ? r->n - r->i : *n;
	const uint8_t *s = r->p + r->i;
	r->i += k;
	*n = k;
	return s;
}

/* ---- SQL text helpers (the fake server's understanding of what it runs) ------------------- */

static const uint8_t *memmem_u8(const void *h, size_t hn, const char *needle)
{
	return memmem(h, hn, needle, strlen(needle));
}

/* Skips blanks and comments at the front of s[0..n). */
static size_t skip_blank(const char *s, size_t n, size_t i)
{
	for (;;) {
		while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
			i++;
		if (i + 1 < n && s[i] == '/' && s[i + 1] == '*') {
			const char *e = memmem(s + i + 2, n - i - 2, "*/", 2);
			i = e ? (size_t)(e - s) + 2 : n;
			continue;
		}
		if (i + 1 < n && s[i] == '-' && s[i + 1] == '-') {
			const char *e = memchr(s + i, '\n', n - i);
			i = e ? (size_t)(e - s) + 1 : n;
			continue;
		}
		return i;
	}
}

/* True when the word at s[i..n) is `kw` (case-insensitive) followed by a non-word byte. */
static bool word_is(const char *s, size_t n, size_t i, const char *kw)
{
	size_t k = strlen(kw);
	if (n - i < k || strncasecmp(s + i, kw, k) != 0)
		return false;
	return i + k == n || !((s[i + k] | 0x20) >= 'a' && (s[i + k] | 0x20) <= 'z') ||
	       s[i + k] == '_';
}

static size_t next_word(const char *s, size_t n, size_t i)
{
	while (i < n && (((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z') || s[i] == '_' ||
			 (s[i] >= '0' && s[i] <= '9')))
		i++;
	return skip_blank(s, n, i);
}

/* An identifier at s[i..n): folded to lower case unless quoted; returns the index after it. */
static size_t read_ident(const char *s, size_t n, size_t i, char *out, size_t cap)
{
	size_t k = 0;
	if (i < n && s[i] == '"') {
		for (i++; i < n; i++) {
			if (s[i] == '"' && i + 1 < n && s[i + 1] == '"')
				i++;
			else if (s[i] == '"') {
				i++;
				break;
			}
			if (k + 1 < cap)
				out[k++] = s[i];
		}
	} else {
		while (i < n && (((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z') || s[i] == '_' ||
				 s[i] == '$' || (s[i] >= '0' && s[i] <= '9'))) {
			if (k + 1 < cap)
				out[k++] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i]);
			i++;
		}
	}
	out[k] = 0;
	/* PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes. */
	if (k > 63)
		out[63] = 0;
	return i;
}

/* The end of the statement that starts at i: the next ';' outside quotes, comments and
 * dollar quotes (pgmux's own DO blocks are dollar-quoted). */
static size_t stmt_end(const char *s, size_t n, size_t i)
{
	while (i < n) {
		char c = s[i];
		if (c == ';')
			return i;
		if (c == '\'' || c == '"') {
			for (i++; i < n && s[i] != c; i++)
				;
			i++;
		} else if (c == '/' && i + 1 < n && s[i + 1] == '*') {
			const char *e = memmem(s + i + 2, n - i - 2, "*/", 2);
			i = e ? (size_t)(e - s) + 2 : n;
		} else if (c == '-' && i + 1 < n && s[i + 1] == '-') {
			const char *e = memchr(s + i, '\n', n - i);
			i = e ? (size_t)(e - s) + 1 : n;
		} else if (c == '$') {
			size_t j = i + 1;
			while (j < n && (((s[j] | 0x20) >= 'a' && (s[j] | 0x20) <= 'z') || s[j] == '_'))
				j++;
			if (j < n && s[j] == '$') {
				size_t tl = j - i + 1;
				const char *e = memmem(s + j + 1, n - j - 1, s + i, tl);
				i = e ? (size_t)(e - s) + tl : n;
			} else {
				i++;
			}
		} else {
			i++;
		}
	}
	return n;
}

/* Statements of the text, for the extended protocol's one-statement rule. */
static int count_stmts(const char *s, size_t n)
{
	int k = 0;
	for (size_t i = 0; i < n;) {
		size_t a = skip_blank(s, n, i);
		size_t e = stmt_end(s, n, a);
		if (e > a)
			k++;
		i = e + 1;
	}
	return k;
}

/* ---- the fake server: answering ------------------------------------------------------------ */

/* ErrorResponse whose message is head followed by mlen bytes of msg (NULs become blanks). */
static void srv_put_error2(struct peer *p, struct fsrv *s, const char *code, const char *head,
			   const char *msg, size_t mlen)
{
	struct bytes *o = &s->out;
	size_t at = b_begin(o, 'E');
	b_u8(o, 'S');
	b_str(o, "ERROR");
	b_u8(o, 'V');
	b_str(o, "ERROR");
	b_u8(o, 'C');
	b_str(o, code);
	b_u8(o, 'M');
	b_put(o, head, strlen(head));
	/* PostgreSQL echoes names and texts in its messages: a long one makes a long error.  One
	 * past the harnesses' max_client_memory (256kB) meets a known pgmux bug
	 * (doc/reliability.md, finding 9): kept below unless STREAM_KNOWN_BUGS is set. */
	if (!p->known_bugs && mlen > 200000)
		mlen = 200000;
	size_t from = o->len;
	b_put(o, msg, mlen);
	for (size_t i = from; i < o->len; i++)
		if (!o->p[i])
			o->p[i] = ' ';
	b_u8(o, 0);
	b_u8(o, 0);
	b_end(o, at);
	p->srv_bytes += mlen;
}

static void srv_put_error(struct peer *p, struct fsrv *s, const char *code, const char *msg, size_t mlen)
{
	srv_put_error2(p, s, code, "", msg, mlen);
}

static void __attribute__((format(printf, 5, 6)))
srv_error(struct peer *p, struct fsrv *s, bool extended, const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	srv_put_error(p, s, code, msg, strlen(msg));
	if (s->tx == 'T')
		s->tx = 'E';
	if (extended)
		s->skip = true;
}

static void srv_complete(struct fsrv *s, const char *tag)
{
	size_t at = b_begin(&s->out, 'C');
	b_str(&s->out, tag);
	b_end(&s->out, at);
}

static void srv_simple(struct fsrv *s, char type)
{
	size_t at = b_begin(&s->out, type);
	b_end(&s->out, at);
}

static void srv_ready(struct fsrv *s)
{
	size_t at = b_begin(&s->out, 'Z');
	b_u8(&s->out, (uint8_t)s->tx);
	b_end(&s->out, at);
}

static void srv_param(struct fsrv *s, const char *k, const char *v)
{
	size_t at = b_begin(&s->out, 'S');
	b_str(&s->out, k);
	b_str(&s->out, v);
	b_end(&s->out, at);
}

static void srv_rowdesc(struct fsrv *s, int ncol)
{
	static const char *const names[] = { "c", "lsn", "lag" };
	static const uint32_t types[] = { 25, 25, 20 };
	size_t at = b_begin(&s->out, 'T');
	b_u16(&s->out, (uint16_t)ncol);
	for (int i = 0; i < ncol; i++) {
		b_str(&s->out, ncol == 1 ? "c" : names[i]);
		b_u32(&s->out, 0);
		b_u16(&s->out, 0);
		b_u32(&s->out, ncol == 1 ? 25 : types[i]);
		b_u16(&s->out, 0xffff);
		b_u32(&s->out, 0xffffffff);
		b_u16(&s->out, 0);
	}
	b_end(&s->out, at);
}

/* The client tokens of a text, for the echo a row carries back. */
static void put_tokens(struct bytes *o, const char *t, size_t n)
{
	const char *q = t, *end = t + n;
	while ((q = memmem(q, (size_t)(end - q), "/*c", 3)) != NULL) {
		const char *d = q + 3;
		while (d < end && *d >= '0' && *d <= '9')
			d++;
		if (d > q + 3 && end - d >= 2 && d[0] == '*' && d[1] == '/') {
			b_put(o, q, (size_t)(d + 2 - q));
			q = d + 2;
		} else {
			q += 3;
		}
	}
}

/* One row: the tokens of the statement that made it, then the padding the script asked for. */
static void srv_datarow(struct peer *p, struct fsrv *s, const char *t, size_t n, size_t width)
{
	struct bytes *o = &s->out;
	size_t at = b_begin(o, 'D');
	b_u16(o, 1);
	size_t lat = o->len;
	b_u32(o, 0);
	b_put(o, "row:", 4);
	put_tokens(o, t, n);
	b_fill(o, 'x', width);
	uint32_t vl = (uint32_t)(o->len - lat - 4);
	o->p[lat] = (uint8_t)(vl >> 24);
	o->p[lat + 1] = (uint8_t)(vl >> 16);
	o->p[lat + 2] = (uint8_t)(vl >> 8);
	o->p[lat + 3] = (uint8_t)vl;
	b_end(o, at);
	p->srv_bytes += width + 16;
}

static void drop_portals(struct fsrv *s)
{
	while (s->portals) {
		struct portal *x = s->portals;
		s->portals = x->next;
		free(x->name);
		free(x->text);
		free(x);
	}
}

/* The transaction ended: its portals go (PostgreSQL keeps only WITH HOLD cursors), except the
 * one still running the COMMIT. */
static void drop_portals_except(struct fsrv *s, struct portal *keep)
{
	struct portal **pp = &s->portals;
	while (*pp) {
		struct portal *x = *pp;
		if (x == keep) {
			pp = &x->next;
			continue;
		}
		*pp = x->next;
		free(x->name);
		free(x->text);
		free(x);
	}
}

static void drop_stmts(struct fsrv *s)
{
	for (size_t i = 0; i < sizeof(s->stmts) / sizeof(s->stmts[0]); i++) {
		while (s->stmts[i]) {
			struct stmt *x = s->stmts[i];
			s->stmts[i] = x->next;
			free(x->name);
			free(x->text);
			free(x);
		}
	}
}

static struct stmt **stmt_bucket(struct fsrv *s, const char *name)
{
	uint32_t h = 2166136261u;
	for (const char *q = name; *q; q++)
		h = (h ^ (uint8_t)*q) * 16777619u;
	return &s->stmts[h % (sizeof(s->stmts) / sizeof(s->stmts[0]))];
}

static struct stmt **find_stmt(struct fsrv *s, const char *name)
{
	struct stmt **pp = stmt_bucket(s, name);
	while (*pp && strcmp((*pp)->name, name) != 0)
		pp = &(*pp)->next;
	return pp;
}

static struct portal **find_portal(struct fsrv *s, const char *name)
{
	struct portal **pp = &s->portals;
	while (*pp && strcmp((*pp)->name, name) != 0)
		pp = &(*pp)->next;
	return pp;
}

static char *dupn(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (!d)
		fail("harness out of memory");
	memcpy(d, s, n);
	d[n] = 0;
	return d;
}

static void add_stmt(struct fsrv *s, const char *name, const char *text, size_t tlen, int np)
{
	struct stmt **pp = find_stmt(s, name);
	if (*pp) {
		/* only the unnamed statement is replaced */
		free((*pp)->text);
		(*pp)->text = dupn(text, tlen);
		(*pp)->tlen = tlen;
		(*pp)->nparams = np;
		return;
	}
	struct stmt *x = calloc(1, sizeof(*x));
	if (!x)
		fail("harness out of memory");
	x->name = strdup(name);
	x->text = dupn(text, tlen);
	x->tlen = tlen;
	x->nparams = np;
	x->next = *pp;
	*pp = x;
}

static void del_stmt(struct fsrv *s, const char *name)
{
	struct stmt **pp = find_stmt(s, name);
	if (*pp) {
		struct stmt *x = *pp;
		*pp = x->next;
		free(x->name);
		free(x->text);
		free(x);
	}
}

enum sql_kind {
	K_EMPTY, K_BEGIN, K_COMMIT, K_ROLLBACK, K_DISCARD_ALL, K_DISCARD, K_DEALLOC, K_DEALLOC_ALL,
	K_PREPARE, K_EXECUTE, K_SET, K_RESET, K_COPY_IN, K_COPY_OUT, K_DO, K_WRITE, K_PROBE,
	K_LSN, K_SELECT, K_REFUSED, K_OTHER
};

static enum sql_kind classify(const char *t, size_t n, size_t *at)
{
	size_t i = skip_blank(t, n, 0);
	*at = i;
	if (i >= n)
		return K_EMPTY;
	if (word_is(t, n, i, "pgmux"))
		return K_REFUSED;   /* pgmux's "pgmux refused this message": a syntax error */
	if (word_is(t, n, i, "begin") || word_is(t, n, i, "start"))
		return K_BEGIN;
	if (word_is(t, n, i, "commit") || word_is(t, n, i, "end"))
		return K_COMMIT;
	if (word_is(t, n, i, "rollback") || word_is(t, n, i, "abort"))
		return K_ROLLBACK;
	if (word_is(t, n, i, "discard")) {
		size_t j = next_word(t, n, i);
		return word_is(t, n, j, "all") ? K_DISCARD_ALL : K_DISCARD;
	}
	if (word_is(t, n, i, "deallocate")) {
		size_t j = next_word(t, n, i);
		if (word_is(t, n, j, "prepare"))
			j = next_word(t, n, j);
		*at = j;
		return word_is(t, n, j, "all") ? K_DEALLOC_ALL : K_DEALLOC;
	}
	if (word_is(t, n, i, "prepare")) {
		*at = next_word(t, n, i);
		return K_PREPARE;
	}
	if (word_is(t, n, i, "execute")) {
		*at = next_word(t, n, i);
		return K_EXECUTE;
	}
	if (word_is(t, n, i, "set")) {
		*at = next_word(t, n, i);
		return K_SET;
	}
	if (word_is(t, n, i, "reset"))
		return K_RESET;
	if (word_is(t, n, i, "copy")) {
		if (memmem_u8(t, n, "STDIN") || memmem_u8(t, n, "stdin"))
			return K_COPY_IN;
		return K_COPY_OUT;
	}
	if (word_is(t, n, i, "do"))
		return K_DO;
	if (word_is(t, n, i, "insert") || word_is(t, n, i, "update") || word_is(t, n, i, "delete") ||
	    word_is(t, n, i, "create"))
		return K_WRITE;
	if (memmem_u8(t, n, "pg_is_in_recovery"))
		return K_PROBE;
	if (memmem_u8(t, n, "wal_insert_lsn") || memmem_u8(t, n, "wal_lsn"))
		return K_LSN;
	if (word_is(t, n, i, "select") || word_is(t, n, i, "values") || word_is(t, n, i, "with") ||
	    word_is(t, n, i, "show") || word_is(t, n, i, "table"))
		return K_SELECT;
	return K_OTHER;
}

/* Tags and whether the statement returns rows, for Describe. */
static bool returns_rows(const char *t, size_t n)
{
	size_t at;
	enum sql_kind k = classify(t, n, &at);
	return k == K_SELECT || k == K_PROBE || k == K_LSN;
}

/* The reported parameters a SET changes (PostgreSQL sends ParameterStatus for these). */
static const char *reported(const char *name)
{
	static const char *const list[] = { "application_name", "client_encoding", "DateStyle", "TimeZone",
					    "IntervalStyle", "standard_conforming_strings" };
	for (size_t i = 0; i < sizeof(list) / sizeof(list[0]); i++)
		if (strcasecmp(name, list[i]) == 0)
			return list[i];
	return NULL;
}

enum { RUN_OK, RUN_ERROR, RUN_COPY };

/* Runs one statement.  extended: from an Execute (no RowDescription; maxrows applies; errors
 * skip to Sync).  Returns RUN_OK, RUN_ERROR (error sent), or RUN_COPY (CopyInResponse sent). */
static int run_stmt(struct peer *p, struct fsrv *s, const char *t, size_t n, bool extended,
		    struct portal *po, uint32_t maxrows)
{
	size_t at;
	enum sql_kind k = classify(t, n, &at);
	const struct peer_backend *be = &p->set.backends[s->backend];
	char name[72];

	if (s->tx == 'E' && k != K_COMMIT && k != K_ROLLBACK) {
		srv_error(p, s, extended, "25P02", "current transaction is aborted, commands ignored until end of transaction block");
		return RUN_ERROR;
	}
	/* SETs are spared: pgmux replays a client's session parameters as SETs of its own, and
	 * one that fails hands the server on mid-answer (doc/reliability.md, finding 4; reproducer
	 * tests/fuzz/crashes/stream-set-error-rows-to-next-client).  Drop this exception once
	 * that is fixed. */
	if (!s->monitor && (k != K_SET || p->known_bugs) && p->err_countdown > 0 && --p->err_countdown == 0) {
		srv_error(p, s, extended, "57014", "canceling statement due to user request");
		return RUN_ERROR;
	}
	if (memmem_u8(t, n, "ERR") && k != K_DO) {
		/* the whole statement comes back in the message: a big text makes a big error */
		srv_put_error2(p, s, "42703", "column \"ERR\" does not exist: ", t, n);
		if (s->tx == 'T')
			s->tx = 'E';
		if (extended)
			s->skip = true;
		return RUN_ERROR;
	}
	switch (k) {
	case K_EMPTY:
		srv_simple(s, 'I');
		return RUN_OK;
	case K_REFUSED:
		srv_error(p, s, extended, "42601", "syntax error at or near \"pgmux\"");
		return RUN_ERROR;
	case K_BEGIN:
		if (s->explicit_tx)
			; /* PostgreSQL warns and goes on */
		s->explicit_tx = true;
		s->tx = 'T';
		srv_complete(s, "BEGIN");
		return RUN_OK;
	case K_COMMIT:
		srv_complete(s, s->tx == 'E' ? "ROLLBACK" : "COMMIT");
		s->tx = 'I';
		s->explicit_tx = false;
		drop_portals_except(s, po);
		return RUN_OK;
	case K_ROLLBACK:
		srv_complete(s, "ROLLBACK");
		s->tx = 'I';
		s->explicit_tx = false;
		drop_portals_except(s, po);
		return RUN_OK;
	case K_DISCARD_ALL:
		if (s->explicit_tx) {
			srv_error(p, s, extended, "25001", "DISCARD ALL cannot run inside a transaction block");
			return RUN_ERROR;
		}
		drop_stmts(s);
		drop_portals_except(s, po);
		srv_complete(s, "DISCARD ALL");
		return RUN_OK;
	case K_DISCARD:
		srv_complete(s, "DISCARD PLANS");
		return RUN_OK;
	case K_DEALLOC_ALL:
		drop_stmts(s);
		srv_complete(s, "DEALLOCATE ALL");
		return RUN_OK;
	case K_DEALLOC:
		read_ident(t, n, at, name, sizeof(name));
		if (!*find_stmt(s, name) || !*name) {
			srv_error(p, s, extended, "26000", "prepared statement \"%s\" does not exist", name);
			return RUN_ERROR;
		}
		del_stmt(s, name);
		srv_complete(s, "DEALLOCATE");
		return RUN_OK;
	case K_PREPARE: {
		size_t j = read_ident(t, n, at, name, sizeof(name));
		const char *as = memmem_u8(t + j, n - j, " AS ") ? (const char *)memmem_u8(t + j, n - j, " AS ")
		    : (const char *)memmem_u8(t + j, n - j, " as ");
		if (!*name || !as) {
			srv_error(p, s, extended, "42601", "syntax error at or near \"PREPARE\"");
			return RUN_ERROR;
		}
		if (*find_stmt(s, name)) {
			srv_error(p, s, extended, "42P05", "prepared statement \"%s\" already exists", name);
			return RUN_ERROR;
		}
		const char *body = as + 4;
		add_stmt(s, name, body, (size_t)(t + n - body), 0);
		srv_complete(s, "PREPARE");
		return RUN_OK;
	}
	case K_EXECUTE: {
		read_ident(t, n, at, name, sizeof(name));
		struct stmt *st = *find_stmt(s, name);
		if (!st || !*name) {
			srv_error(p, s, extended, "26000", "prepared statement \"%s\" does not exist", name);
			return RUN_ERROR;
		}
		if (!extended)
			srv_rowdesc(s, 1);
		int r = 0;
		for (; r < p->rows && p->srv_bytes < SRV_BUDGET; r++)
			srv_datarow(p, s, st->text, st->tlen, p->width);
		char tag[32];
		snprintf(tag, sizeof(tag), "SELECT %d", r);
		srv_complete(s, tag);
		return RUN_OK;
	}
	case K_SET: {
		char var[72], val[160];
		size_t j = at;
		if (word_is(t, n, j, "session") || word_is(t, n, j, "local"))
			j = next_word(t, n, j);
		j = read_ident(t, n, j, var, sizeof(var));
		j = skip_blank(t, n, j);
		if (j < n && t[j] == '=')
			j = skip_blank(t, n, j + 1);
		else if (word_is(t, n, j, "to"))
			j = next_word(t, n, j);
		size_t k2 = 0;
		if (j < n && t[j] == '\'') {
			for (j++; j < n && k2 + 1 < sizeof(val); j++) {
				if (t[j] == '\'' && j + 1 < n && t[j + 1] == '\'')
					j++;
				else if (t[j] == '\'')
					break;
				val[k2++] = t[j];
			}
		} else {
			while (j < n && k2 + 1 < sizeof(val) && t[j] != ' ' && t[j] != ';')
				val[k2++] = t[j++];
		}
		val[k2] = 0;
		if (!*var) {
			srv_error(p, s, extended, "42601", "syntax error at or near \"SET\"");
			return RUN_ERROR;
		}
		srv_complete(s, "SET");
		const char *r = reported(var);
		if (r)
			srv_param(s, r, val);
		return RUN_OK;
	}
	case K_RESET:
		srv_complete(s, "RESET");
		return RUN_OK;
	case K_COPY_IN: {
		size_t a = b_begin(&s->out, 'G');
		b_u8(&s->out, 0);
		b_u16(&s->out, 1);
		b_u16(&s->out, 0);
		b_end(&s->out, a);
		s->copy = extended ? 2 : 1;
		s->copy_rows = 0;
		return RUN_COPY;
	}
	case K_COPY_OUT: {
		size_t a = b_begin(&s->out, 'H');
		b_u8(&s->out, 0);
		b_u16(&s->out, 1);
		b_u16(&s->out, 0);
		b_end(&s->out, a);
		int r = 0;
		for (; r < p->rows && p->srv_bytes < SRV_BUDGET; r++) {
			a = b_begin(&s->out, 'd');
			put_tokens(&s->out, t, n);
			b_fill(&s->out, 'y', p->width);
			b_u8(&s->out, '\n');
			b_end(&s->out, a);
			p->srv_bytes += p->width + 8;
		}
		srv_simple(s, 'c');
		char tag[32];
		snprintf(tag, sizeof(tag), "COPY %d", r);
		srv_complete(s, tag);
		return RUN_OK;
	}
	case K_DO: {
		/* pgmux's own refusal: DO ... RAISE EXCEPTION USING ERRCODE = 'xxxxx', MESSAGE = '...' */
		const uint8_t *ec = memmem_u8(t, n, "ERRCODE = '");
		const uint8_t *ms = memmem_u8(t, n, "MESSAGE = '");
		if (ec && ms && (size_t)((const char *)ec - t) + 16 <= n) {
			char code[6];
			memcpy(code, ec + 11, 5);
			code[5] = 0;
			const char *m0 = (const char *)ms + 11;
			const char *m1 = memchr(m0, '\'', (size_t)(t + n - m0));
			srv_put_error(p, s, code, m0, m1 ? (size_t)(m1 - m0) : 0);
			if (s->tx == 'T')
				s->tx = 'E';
			if (extended)
				s->skip = true;
			return RUN_ERROR;
		}
		srv_complete(s, "DO");
		return RUN_OK;
	}
	case K_WRITE:
		if (be->replica) {
			srv_error(p, s, extended, "25006", "cannot execute INSERT in a read-only transaction");
			return RUN_ERROR;
		}
		srv_complete(s, "INSERT 0 1");
		return RUN_OK;
	case K_PROBE: {
		srv_rowdesc(s, 3);
		size_t a = b_begin(&s->out, 'D');
		b_u16(&s->out, 3);
		const char *v[3] = { be->replica ? "t" : "f", "0/3000060", be->replica ? "0" : "-1" };
		for (int i = 0; i < 3; i++) {
			b_u32(&s->out, (uint32_t)strlen(v[i]));
			b_put(&s->out, v[i], strlen(v[i]));
		}
		b_end(&s->out, a);
		srv_complete(s, "SELECT 1");
		return RUN_OK;
	}
	case K_LSN: {
		if (!extended)
			srv_rowdesc(s, 1);
		size_t a = b_begin(&s->out, 'D');
		b_u16(&s->out, 1);
		b_u32(&s->out, 9);
		b_put(&s->out, "0/3000060", 9);
		b_end(&s->out, a);
		srv_complete(s, "SELECT 1");
		return RUN_OK;
	}
	case K_SELECT:
	case K_OTHER:
	default: {
		if (k == K_OTHER) {
			srv_complete(s, "OK");
			return RUN_OK;
		}
		if (!extended)
			srv_rowdesc(s, 1);
		long total = po && po->rows_left >= 0 ? po->rows_left : p->rows;
		long sent = 0;
		while (sent < total && (!maxrows || sent < (long)maxrows) && p->srv_bytes < SRV_BUDGET) {
			srv_datarow(p, s, t, n, p->width);
			sent++;
		}
		if (po && maxrows && sent < total && p->srv_bytes < SRV_BUDGET) {
			po->rows_left = total - sent;
			srv_simple(s, 's');
			return RUN_OK;
		}
		if (po)
			po->rows_left = 0;
		char tag[32];
		snprintf(tag, sizeof(tag), "SELECT %ld", sent);
		srv_complete(s, tag);
		return RUN_OK;
	}
	}
}

/* ---- the fake server: what pgmux sends it ------------------------------------------------- */

/* Frontend message types a server may receive once logged in. */
static bool frontend_type(char t)
{
	return t && strchr("BCDEFHPQSXcdf", t) != NULL;
}

/* PostgreSQL's own caps on a frontend message's length field (postgres.c). */
static uint32_t frontend_max(char t)
{
	return strchr("CDEHSXcf", t) ? 10000 : 0x3fffffffu - 1;
}

/* Reads a NUL-terminated string from [*q, end); NULL when none ends there. */
static const char *take_str(const uint8_t **q, const uint8_t *end)
{
	const uint8_t *z = memchr(*q, 0, (size_t)(end - *q));
	if (!z)
		return NULL;
	const char *s = (const char *)*q;
	*q = z + 1;
	return s;
}

/* Why a frontend message's body is malformed, or NULL: what PostgreSQL would reject as a
 * protocol violation.  Every message the harness's clients build passes, so a failure means
 * pgmux rewrote, cut or spliced something. */
static const char *body_problem(char type, const uint8_t *b, uint32_t n)
{
	const uint8_t *q = b, *end = b + n;
	switch (type) {
	case 'Q':
		if (!n || memchr(b, 0, n) != b + n - 1)
			return "Query: not exactly one string";
		return NULL;
	case 'P': {
		if (!take_str(&q, end) || !take_str(&q, end) || end - q < 2)
			return "Parse: names";
		uint16_t k = get16(q);
		q += 2;
		if ((size_t)(end - q) != (size_t)k * 4)
			return "Parse: parameter types";
		return NULL;
	}
	case 'B': {
		if (!take_str(&q, end) || !take_str(&q, end) || end - q < 2)
			return "Bind: names";
		uint16_t k = get16(q);
		q += 2;
		if ((size_t)(end - q) < (size_t)k * 2 + 2)
			return "Bind: format codes";
		q += (size_t)k * 2;
		k = get16(q);
		q += 2;
		for (unsigned i = 0; i < k; i++) {
			if (end - q < 4)
				return "Bind: parameter length";
			uint32_t l = get32(q);
			q += 4;
			if (l == 0xffffffffu)
				continue;
			if ((size_t)(end - q) < l)
				return "Bind: parameter value";
			q += l;
		}
		if (end - q < 2)
			return "Bind: result formats";
		k = get16(q);
		q += 2;
		if ((size_t)(end - q) != (size_t)k * 2)
			return "Bind: result formats";
		return NULL;
	}
	case 'E':
		if (!take_str(&q, end) || end - q != 4)
			return "Execute";
		return NULL;
	case 'D':
	case 'C':
		if (n < 2 || (b[0] != 'S' && b[0] != 'P'))
			return "Describe/Close: kind";
		q++;
		if (!take_str(&q, end) || q != end)
			return "Describe/Close: name";
		return NULL;
	case 'S':
	case 'H':
	case 'X':
	case 'c':
		return n ? "empty message with a body" : NULL;
	case 'f':
		if (!take_str(&q, end) || q != end)
			return "CopyFail";
		return NULL;
	case 'F': {
		if (n < 6)
			return "FunctionCall";
		q += 4;
		uint16_t k = get16(q);
		q += 2;
		if ((size_t)(end - q) < (size_t)k * 2 + 2)
			return "FunctionCall: formats";
		q += (size_t)k * 2;
		k = get16(q);
		q += 2;
		for (unsigned i = 0; i < k; i++) {
			if (end - q < 4)
				return "FunctionCall: argument";
			uint32_t l = get32(q);
			q += 4;
			if (l == 0xffffffffu)
				continue;
			if ((size_t)(end - q) < l)
				return "FunctionCall: argument";
			q += l;
		}
		if (end - q != 2)
			return "FunctionCall: result format";
		return NULL;
	}
	default:
		return NULL;
	}
}

/* A name pgmux gives a statement on a server: pgmux_<20 digits>_<n>, or its refusal's. */
static bool pgmux_name(const char *s)
{
	if (strcmp(s, "pgmux_refused") == 0)
		return true;
	if (strncmp(s, "pgmux_", 6) != 0)
		return false;
	s += 6;
	int d = 0;
	while (*s >= '0' && *s <= '9')
		s++, d++;
	if (d != 20 || *s++ != '_' || !(*s >= '0' && *s <= '9'))
		return false;
	while (*s >= '0' && *s <= '9')
		s++;
	return *s == 0;
}

/* In transaction and statement pooling every statement name a server sees is pgmux's. */
static void check_stmt_name(struct peer *p, struct fsrv *s, const char *what, const char *name)
{
	if (!s->tx_user || !*name || p->cli_raw || p->cli_inner_bad)
		return;
	if (!pgmux_name(name))
		fail("S%d (user %s) got %s of statement \"%.80s\": pgmux did not rename it", s->serial,
		     s->user, what, name);
	if (strcmp(name, "pgmux_refused") != 0)
		snprintf(p->learned, sizeof(p->learned), "%s", name);
}

static void srv_fatal(struct fsrv *s, const char *code, const char *msg)
{
	size_t at = b_begin(&s->out, 'E');
	b_u8(&s->out, 'S');
	b_str(&s->out, "FATAL");
	b_u8(&s->out, 'C');
	b_str(&s->out, code);
	b_u8(&s->out, 'M');
	b_str(&s->out, msg);
	b_u8(&s->out, 0);
	b_end(&s->out, at);
	s->closing = true;
}

/* A simple Query: every statement in turn; an error ends the rest; then ReadyForQuery.  A
 * COPY IN keeps the rest for when the copy ends. */
static void run_simple(struct peer *p, struct fsrv *s, const char *t, size_t n)
{
	size_t i = 0;
	bool any = false;
	while (i < n) {
		size_t a = skip_blank(t, n, i);
		size_t e = stmt_end(t, n, a);
		if (e > a) {
			any = true;
			int r = run_stmt(p, s, t + a, e - a, false, NULL, 0);
			if (r == RUN_ERROR)
				break;
			if (r == RUN_COPY) {
				free(s->copy_rest);
				s->copy_rest = NULL;
				s->copy_rest_len = 0;
				if (e + 1 < n) {
					s->copy_rest = dupn(t + e + 1, n - e - 1);
					s->copy_rest_len = n - e - 1;
				}
				return;   /* the rest and ReadyForQuery follow the copy */
			}
		}
		i = e + 1;
	}
	if (!any)
		srv_simple(s, 'I');
	if (!s->explicit_tx) {
		/* the implicit transaction (with any extended messages before it) commits */
		s->tx = 'I';
		drop_portals(s);
	}
	srv_ready(s);
}

static void copy_finish(struct peer *p, struct fsrv *s)
{
	bool simple = s->copy == 1;
	s->copy = 0;
	if (!simple)
		return;
	char *rest = s->copy_rest;
	size_t rn = s->copy_rest_len;
	s->copy_rest = NULL;
	s->copy_rest_len = 0;
	if (rest && s->tx != 'E') {
		run_simple(p, s, rest, rn);
	} else {
		if (!s->explicit_tx)
			s->tx = 'I';
		srv_ready(s);
	}
	free(rest);
}

/* One whole message from pgmux on a logged-in connection. */
static void srv_message(struct peer *p, struct fsrv *s, char type, const uint8_t *b, uint32_t n)
{
	const uint8_t *q = b, *end = b + n;

	if (s->copy) {
		switch (type) {
		case 'd':
			s->copy_rows++;
			return;
		case 'c': {
			char tag[40];
			snprintf(tag, sizeof(tag), "COPY %ld", s->copy_rows);
			srv_complete(s, tag);
			copy_finish(p, s);
			return;
		}
		case 'f': {
			bool simple = s->copy == 1;
			srv_error(p, s, !simple, "57014", "COPY from stdin failed: %.200s",
				  n ? (const char *)b : "");
			free(s->copy_rest);
			s->copy_rest = NULL;
			s->copy = 0;
			if (simple) {
				if (!s->explicit_tx)
					s->tx = 'I';
				srv_ready(s);
			}
			return;
		}
		case 'H':
		case 'S':
			return;   /* PostgreSQL ignores them during COPY IN */
		case 'X':
			s->closing = true;
			return;
		default: {
			bool simple = s->copy == 1;
			if (type == 'P' || type == 'C')
				s->lost_parse = true;   /* a client's misuse: pgmux may count on it */
			srv_error(p, s, !simple, "08P01", "unexpected message type 0x%02X during COPY from stdin",
				  (unsigned)(uint8_t)type);
			free(s->copy_rest);
			s->copy_rest = NULL;
			s->copy = 0;
			if (simple) {
				if (!s->explicit_tx)
					s->tx = 'I';
				srv_ready(s);
			}
			return;
		}
		}
	}
	if (type == 'X') {
		s->closing = true;
		return;
	}
	if (debug_level() > 1 && strchr("PBDCE", type)) {
		/* the names, for following statement tracking */
		const uint8_t *nq = (type == 'D' || type == 'C') ? b + 1 : b;
		const char *n1 = take_str(&nq, end), *n2 = (type == 'P' || type == 'B') && n1 ? take_str(&nq, end) : NULL;
		fprintf(stderr, "    S%d %s %c %.40s%s%.40s\n", s->serial, s->skip ? "skips" : "runs", type,
			n1 ? n1 : "?", n2 ? " / " : "", n2 ? n2 : "");
	}
	if (s->skip && type != 'S')
		return;   /* after an error in an extended batch, up to its Sync */

	switch (type) {
	case 'Q':
		if (!n || b[n - 1]) {
			srv_fatal(s, "08P01", "invalid string in message");
			return;
		}
		del_stmt(s, "");   /* "a simple Query message also destroys the unnamed statement" */
		run_simple(p, s, (const char *)b, strnlen((const char *)b, n));
		return;
	case 'P': {
		const char *name = take_str(&q, end), *text = name ? take_str(&q, end) : NULL;
		if (!text || end - q < 2) {
			srv_fatal(s, "08P01", "invalid Parse message");
			return;
		}
		int np = get16(q);
		check_stmt_name(p, s, "Parse", name);
		size_t tl = strlen(text);
		size_t at;
		enum sql_kind k = classify(text, tl, &at);
		if (s->tx == 'E') {
			srv_error(p, s, true, "25P02", "current transaction is aborted, commands ignored until end of transaction block");
			return;
		}
		if (p->err_countdown > 0 && --p->err_countdown == 0) {
			srv_error(p, s, true, "57014", "canceling statement due to user request");
			return;
		}
		if (k == K_REFUSED) {
			srv_error(p, s, true, "42601", "syntax error at or near \"pgmux\"");
			return;
		}
		if (memmem_u8(text, tl, "ERR")) {
			srv_put_error2(p, s, "42703", "column \"ERR\" does not exist: ", text, tl);
			if (s->tx == 'T')
				s->tx = 'E';
			s->skip = true;
			return;
		}
		if (count_stmts(text, tl) > 1) {
			srv_error(p, s, true, "42601", "cannot insert multiple commands into a prepared statement");
			return;
		}
		if (*name && *find_stmt(s, name)) {
			/* Finding 10 (fixed) was a Close and Parse of pgmux's that the server skipped
			 * after an error leaving pgmux believing the statement gone; the server then
			 * answers 42P05 as PostgreSQL does.  Not checked where a client's message broke
			 * a COPY (lost_parse): a Close of pgmux's can be what the COPY swallowed. */
			if (s->tx_user && pgmux_name(name) && !p->srv_hostile && !p->cli_raw && !p->cli_inner_bad &&
			    p->known_bugs && !s->lost_parse)
				fail("S%d: pgmux parsed statement %s twice on one server", s->serial, name);
			srv_error(p, s, true, "42P05", "prepared statement \"%s\" already exists", name);
			return;
		}
		add_stmt(s, name, text, tl, np);
		srv_simple(s, '1');
		return;
	}
	case 'B': {
		const char *portal = take_str(&q, end), *name = portal ? take_str(&q, end) : NULL;
		if (!name || end - q < 2) {
			srv_fatal(s, "08P01", "invalid Bind message");
			return;
		}
		check_stmt_name(p, s, "Bind", name);
		/* the parameter count, read the way PostgreSQL does */
		uint16_t nf = get16(q);
		q += 2;
		int np = -1;
		if ((size_t)(end - q) >= (size_t)nf * 2 + 2)
			np = get16(q + (size_t)nf * 2);
		if (s->tx == 'E') {
			srv_error(p, s, true, "25P02", "current transaction is aborted, commands ignored until end of transaction block");
			return;
		}
		struct stmt *st = *find_stmt(s, name);
		if (!st) {
			if (s->tx_user && pgmux_name(name) && !p->srv_hostile && !p->cli_raw && !p->cli_inner_bad &&
			    !s->lost_parse)
				fail("S%d: pgmux bound statement %s that this server does not hold", s->serial, name);
			if (*name)
				srv_error(p, s, true, "26000", "prepared statement \"%s\" does not exist", name);
			else
				srv_error(p, s, true, "26000", "unnamed prepared statement does not exist");
			return;
		}
		if (np != st->nparams && st->nparams) {
			srv_error(p, s, true, "08P01", "bind message supplies %d parameters, but prepared statement \"%.100s\" requires %d",
				  np, name, st->nparams);
			return;
		}
		if (p->err_countdown > 0 && --p->err_countdown == 0) {
			srv_error(p, s, true, "57014", "canceling statement due to user request");
			return;
		}
		if (np > 0 && memmem_u8(st->text, st->tlen, "::int")) {
			/* PostgreSQL converts parameters at Bind: an overlong integer is an error that
			 * quotes the whole value (issue 11's defect 1 needs one over 16 KiB). */
			const uint8_t *v = q + (size_t)nf * 2 + 2;
			for (int i = 0; i < np && end - v >= 4; i++) {
				uint32_t l = get32(v);
				v += 4;
				if (l == 0xffffffffu)
					continue;
				if ((size_t)(end - v) < l)
					break;
				if (l > 10) {
					srv_put_error2(p, s, "22003", "value out of range for type integer: ",
						       (const char *)v, l);
					if (s->tx == 'T')
						s->tx = 'E';
					s->skip = true;
					return;
				}
				v += l;
			}
		}
		struct portal **pp = find_portal(s, portal);
		if (*pp && *portal) {
			/* the portal's name comes back in the error: 20,000 bytes of it, if so */
			srv_put_error2(p, s, "42P03", "cursor already exists: ", portal, strlen(portal));
			if (s->tx == 'T')
				s->tx = 'E';
			s->skip = true;
			return;
		}
		if (!*pp) {
			*pp = calloc(1, sizeof(**pp));
			if (!*pp)
				fail("harness out of memory");
			(*pp)->name = strdup(portal);
		} else {
			free((*pp)->text);
		}
		(*pp)->text = dupn(st->text, st->tlen);
		(*pp)->tlen = st->tlen;
		(*pp)->rows_left = -1;
		srv_simple(s, '2');
		return;
	}
	case 'D': {
		if (n < 2) {
			srv_fatal(s, "08P01", "invalid Describe message");
			return;
		}
		q++;
		const char *name = take_str(&q, end);
		if (!name) {
			srv_fatal(s, "08P01", "invalid Describe message");
			return;
		}
		if (b[0] == 'S') {
			check_stmt_name(p, s, "Describe", name);
			struct stmt *st = *find_stmt(s, name);
			if (!st) {
				if (s->tx_user && pgmux_name(name) && !p->srv_hostile && !p->cli_raw && !p->cli_inner_bad &&
				    !s->lost_parse)
					fail("S%d: pgmux described statement %s that this server does not hold", s->serial, name);
				srv_error(p, s, true, "26000", "prepared statement \"%.200s\" does not exist", name);
				return;
			}
			size_t at = b_begin(&s->out, 't');
			b_u16(&s->out, (uint16_t)st->nparams);
			for (int i = 0; i < st->nparams; i++)
				b_u32(&s->out, 23);
			b_end(&s->out, at);
			if (returns_rows(st->text, st->tlen))
				srv_rowdesc(s, 1);
			else
				srv_simple(s, 'n');
		} else {
			struct portal *po = *find_portal(s, name);
			if (!po) {
				srv_error(p, s, true, "34000", "portal \"%.200s\" does not exist", name);
				return;
			}
			if (returns_rows(po->text, po->tlen))
				srv_rowdesc(s, 1);
			else
				srv_simple(s, 'n');
		}
		return;
	}
	case 'E': {
		const char *portal = take_str(&q, end);
		if (!portal || end - q < 4) {
			srv_fatal(s, "08P01", "invalid Execute message");
			return;
		}
		uint32_t maxrows = get32(q);
		struct portal *po = *find_portal(s, portal);
		if (!po) {
			srv_error(p, s, true, "34000", "portal \"%.200s\" does not exist", portal);
			return;
		}
		if (po->rows_left == 0 && returns_rows(po->text, po->tlen)) {
			srv_complete(s, "SELECT 0");
			return;
		}
		run_stmt(p, s, po->text, po->tlen, true, po, maxrows);
		return;
	}
	case 'C': {
		if (n < 2) {
			srv_fatal(s, "08P01", "invalid Close message");
			return;
		}
		q++;
		const char *name = take_str(&q, end);
		if (!name) {
			srv_fatal(s, "08P01", "invalid Close message");
			return;
		}
		if (b[0] == 'S') {
			check_stmt_name(p, s, "Close", name);
			del_stmt(s, name);
		} else {
			struct portal **pp = find_portal(s, name);
			if (*pp) {
				struct portal *x = *pp;
				*pp = x->next;
				free(x->name);
				free(x->text);
				free(x);
			}
		}
		srv_simple(s, '3');
		return;
	}
	case 'S':
		s->skip = false;
		if (!s->explicit_tx) {
			s->tx = 'I';
			drop_portals(s);
		}
		srv_ready(s);
		return;
	case 'H':
		return;
	case 'F': {
		if (s->tx == 'E') {
			srv_error(p, s, false, "25P02", "current transaction is aborted, commands ignored until end of transaction block");
		} else {
			size_t at = b_begin(&s->out, 'V');
			b_u32(&s->out, 4);
			b_put(&s->out, "abcd", 4);
			b_end(&s->out, at);
		}
		if (!s->explicit_tx)
			s->tx = 'I';
		srv_ready(s);
		return;
	}
	case 'd':
	case 'c':
	case 'f':
		return;   /* outside COPY: PostgreSQL ignores them */
	default:
		return;
	}
}

/* Login modes the script may ask of the next connection. */
enum {
	LOGIN_OK, LOGIN_FATAL, LOGIN_CLEARTEXT, LOGIN_MD5, LOGIN_SASL, LOGIN_GARBAGE, LOGIN_CLOSE,
	LOGIN_NOTICE, LOGIN_NOKEY, LOGIN_SASLFINAL, LOGIN_BIGPARAM, LOGIN_INTX, LOGIN_LATEERROR,
	LOGIN_NEGOTIATE, N_LOGIN
};

static void srv_login(struct peer *p, struct fsrv *s, const char *user, const char *appname)
{
	uint8_t mode = s->monitor ? LOGIN_OK : p->login_mode;
	if (!s->monitor)
		p->login_mode = LOGIN_OK;   /* one connection's: monitors never take it */
	struct bytes *o = &s->out;
	size_t at;
	switch (mode) {
	case LOGIN_FATAL:
		srv_fatal(s, "53300", "sorry, too many clients already");
		return;
	case LOGIN_CLEARTEXT:
	case LOGIN_MD5:
	case LOGIN_SASL:
	case LOGIN_SASLFINAL:
		at = b_begin(o, 'R');
		b_u32(o, mode == LOGIN_CLEARTEXT ? 3 : mode == LOGIN_MD5 ? 5 : mode == LOGIN_SASL ? 10 : 12);
		if (mode == LOGIN_MD5)
			b_u32(o, 0x01020304);
		if (mode == LOGIN_SASL) {
			b_str(o, "SCRAM-SHA-256");
			b_u8(o, 0);
		}
		if (mode == LOGIN_SASLFINAL)
			b_put(o, "v=AAAA", 6);
		b_end(o, at);
		return;   /* pgmux has no password here: it gives up and closes */
	case LOGIN_GARBAGE:
		b_put(o, "Q\xff\xff\xff\xffgarbage", 12);
		p->srv_hostile = true;
		return;
	case LOGIN_CLOSE:
		s->closing = true;
		return;
	case LOGIN_BIGPARAM:
		at = b_begin(o, 'S');
		b_str(o, "application_name");
		b_fill(o, 'a', 20000);
		b_u8(o, 0);
		b_end(o, at);
		return;
	case LOGIN_NEGOTIATE:
		at = b_begin(o, 'v');
		b_u32(o, 0);
		b_u32(o, 0);
		b_end(o, at);
		break;
	default:
		break;
	}
	at = b_begin(o, 'R');
	b_u32(o, 0);
	b_end(o, at);
	if (mode == LOGIN_NOTICE) {
		at = b_begin(o, 'N');
		b_u8(o, 'S');
		b_str(o, "NOTICE");
		b_u8(o, 'M');
		b_str(o, "welcome");
		b_u8(o, 0);
		b_end(o, at);
		srv_param(s, "some_new_parameter", "x");
	}
	srv_param(s, "server_version", "16.0");
	srv_param(s, "server_encoding", "UTF8");
	srv_param(s, "client_encoding", "UTF8");
	srv_param(s, "DateStyle", "ISO, MDY");
	srv_param(s, "TimeZone", "UTC");
	srv_param(s, "IntervalStyle", "postgres");
	srv_param(s, "integer_datetimes", "on");
	srv_param(s, "standard_conforming_strings", "on");
	srv_param(s, "application_name", appname);
	srv_param(s, "session_authorization", user);
	if (mode == LOGIN_LATEERROR) {
		srv_fatal(s, "28000", "role is not permitted to log in");
		return;
	}
	if (mode != LOGIN_NOKEY) {
		s->pid = 4000 + (uint32_t)s->serial;
		s->key = (uint32_t)s->serial * 2654435761u + 17;
		at = b_begin(o, 'K');
		b_u32(o, s->pid);
		b_u32(o, s->key);
		b_end(o, at);
		if (p->n_keys < 256) {
			p->keys[p->n_keys][0] = s->pid;
			p->keys[p->n_keys][1] = s->key;
			p->n_keys++;
		}
	}
	s->tx = mode == LOGIN_INTX ? 'T' : 'I';
	if (mode == LOGIN_INTX)
		p->srv_hostile = true;   /* no real server is in a transaction at login */
	srv_ready(s);
	s->tx = 'I';
}

static bool is_session_user(const struct peer *p, const char *u)
{
	for (int i = 0; i < p->set.n_session_users; i++)
		if (strcmp(p->set.session_users[i], u) == 0)
			return true;
	return false;
}

/* The startup packet (or a cancel request) of a new connection. */
static void srv_startup(struct peer *p, struct fsrv *s)
{
	struct bytes *in = &s->in;
	while (s->phase == SRV_STARTUP && b_avail(in) >= 8) {
		const uint8_t *m = in->p + in->off;
		uint32_t len = get32(m);
		if (len < 8 || len > 10000)
			fail("S%d: startup packet of length %u from pgmux", s->serial, len);
		if (b_avail(in) < len)
			return;
		uint32_t code = get32(m + 4);
		if (code == 80877102) {
			if (len != 16)
				fail("S%d: cancel request of length %u", s->serial, len);
			uint32_t pid = get32(m + 8), key = get32(m + 12);
			bool known = false;
			for (int i = 0; i < p->n_keys; i++)
				known |= p->keys[i][0] == pid && p->keys[i][1] == key;
			if (!known && pid && !p->srv_hostile)
				fail("S%d: cancel request for pid %u key %u that no server gave", s->serial, pid, key);
			s->phase = SRV_CANCEL;
			s->closing = true;
			b_consume(in, len);
			return;
		}
		if (code == 80877103 || code == 80877104) {
			b_consume(in, len);
			b_u8(&s->out, 'N');
			continue;
		}
		if (code != 196608)
			fail("S%d: startup packet with protocol %u", s->serial, code);
		const uint8_t *q = m + 8, *end = m + len;
		const char *user = NULL, *app = "";
		for (;;) {
			const char *k = take_str(&q, end);
			if (!k)
				fail("S%d: startup packet without its final NUL", s->serial);
			if (!*k)
				break;
			const char *v = take_str(&q, end);
			if (!v)
				fail("S%d: startup parameter %s without a value", s->serial, k);
			if (strcmp(k, "user") == 0)
				user = v;
			else if (strcmp(k, "application_name") == 0)
				app = v;
		}
		if (q != end)
			fail("S%d: bytes after the startup packet's end", s->serial);
		if (!user)
			fail("S%d: startup packet without a user", s->serial);
		snprintf(s->user, sizeof(s->user), "%s", user);
		s->monitor = strcmp(app, "pgmux monitor") == 0;
		s->tx_user = !s->monitor && !is_session_user(p, user);
		s->phase = SRV_READY;
		srv_login(p, s, user, app);
		b_consume(in, len);
	}
}

/* Everything complete in the connection's input. */
static void srv_input(struct peer *p, struct fsrv *s)
{
	if (s->phase == SRV_STARTUP)
		srv_startup(p, s);
	struct bytes *in = &s->in;
	while (s->phase == SRV_READY && !s->closing && b_avail(in) >= 5) {
		const uint8_t *m = in->p + in->off;
		char type = (char)m[0];
		uint32_t len = get32(m + 1);
		if (!frontend_type(type) || len < 4 || len > frontend_max(type))
			fail("S%d: pgmux sent a malformed header: type 0x%02x length %u", s->serial,
			     (unsigned)(uint8_t)type, len);
		if (b_avail(in) < (size_t)len + 1)
			return;
		if (s->suspect)
			fail("S%d: a whole message followed one whose body was broken: pgmux spliced streams",
			     s->serial);
		if (!s->monitor && !p->cli_raw && !p->cli_inner_bad) {
			const char *why = body_problem(type, m + 5, len - 4);
			if (why) {
				/* pgmux cuts a message itself when it closes a client or a misbehaving
				 * server mid-message, and then sends Terminate (finding 13) */
				bool may_cut = p->cli_cut || p->srv_hostile || p->pgmux_closed;
				if (!may_cut || p->known_bugs) {
					fprintf(stderr, "the message:");
					for (uint32_t i = 0; i < len + 1 && i < 96; i++)
						fprintf(stderr, " %02x", m[i]);
					fprintf(stderr, "\n");
					fail("S%d: malformed %c message from pgmux (%s), length %u", s->serial, type, why, len);
				}
				/* A client went away mid-message, and pgmux ends the server's stream with
				 * its Terminate (known bug, doc/reliability.md, finding 13): the cut message
				 * is completed by those bytes.  Anything whole after it would be a real
				 * splice. */
				s->suspect = true;
				TRACE("  S%d: a cut message excused (%s)\n", s->serial, why);
				b_consume(in, (size_t)len + 1);
				continue;
			}
		}
		if (type != 'H' || !s->last_h)
			TRACE("  S%d <- %c len %u%s\n", s->serial, type, len, type == 'H' ? " (and more)" : "");
		if (debug_level() >= 2)
			trace_text(m + 5, len - 4);
		s->last_h = type == 'H';
		srv_message(p, s, type, m + 5, len - 4);
		b_consume(in, (size_t)len + 1);
	}
}

/* ---- the fake clients: what pgmux sends them ---------------------------------------------- */

static bool backend_type(char t)
{
	return t && strchr("RSKZENATDCI123ntsGHWdcVv", t) != NULL;
}

/* A client message stream cannot be parsed: fatal unless the server broke the protocol, or
 * pgmux closes the client right after (known pgmux bug, doc/reliability.md, finding 11: its
 * FATAL ErrorResponse can follow half a message; judged when the client ends, see
 * check_garbled).  With STREAM_KNOWN_BUGS, fatal at once. */
static void cli_garbled(struct peer *p, struct fcli *c, const char *why, char type, uint32_t len)
{
	c->garbled = true;
	if (p->srv_hostile || p->srv_cut)
		return;
	if (p->known_bugs)
		fail("C%d got a malformed stream from pgmux: %s (type 0x%02x length %u)", c->serial, why,
		     (unsigned)(uint8_t)type, len);
	c->garbled_open = true;
	snprintf(c->garbled_why, sizeof(c->garbled_why), "%s (type 0x%02x length %u)", why,
		 (unsigned)(uint8_t)type, len);
}

/* A garbled stream on a connection pgmux keeps open is no finding-11 close: fail. */
static void check_garbled(struct peer *p)
{
	for (int k = 0; k < MAX_CLIENTS; k++) {
		struct fcli *c = &p->cli[k];
		if (c->fd >= 0 && !c->eof && c->garbled_open)
			fail("C%d got a malformed stream from pgmux, which kept the connection: %s", c->serial,
			     c->garbled_why);
	}
}

/* Every /\*c<n>*\/ token in a message must be this client's own: another's means its answer
 * (or its statement) reached the wrong client. */
static void check_tokens(struct peer *p, struct fcli *c, const uint8_t *b, uint32_t n)
{
	if (p->srv_hostile)
		return;
	const uint8_t *q = b, *end = b + n;
	while ((q = memmem(q, (size_t)(end - q), "/*c", 3)) != NULL) {
		const uint8_t *d = q + 3;
		long v = 0;
		while (d < end && *d >= '0' && *d <= '9' && v < 1000000)
			v = v * 10 + (*d++ - '0');
		if (d > q + 3 && end - d >= 2 && d[0] == '*' && d[1] == '/' && v != c->serial)
			fail("C%d received an answer carrying client C%ld's token", c->serial, v);
		q += 3;
	}
}

static void cli_input(struct peer *p, struct fcli *c)
{
	struct bytes *in = &c->in;
	if (c->ssl_probe && b_avail(in)) {
		/* the one-byte answer to SSLRequest: over a Unix socket, always 'N' */
		c->ssl_probe = false;
		if (in->p[in->off] == 'N')
			b_consume(in, 1);
	}
	while (!c->garbled && b_avail(in) >= 5) {
		const uint8_t *m = in->p + in->off;
		char type = (char)m[0];
		uint32_t len = get32(m + 1);
		if (!backend_type(type) || len < 4 || len > (64u << 20)) {
			if (debug_level()) {
				/* what came before the bad header, and the header itself */
				size_t from = in->off > 48 ? in->off - 48 : 0;
				fprintf(stderr, "  C%d stream at the bad header (offset %zu):", c->serial, in->off - from);
				for (size_t i = from; i < in->off + 24 && i < in->len; i++)
					fprintf(stderr, " %02x", in->p[i]);
				fprintf(stderr, "\n");
			}
			cli_garbled(p, c, "bad header", type, len);
			break;
		}
		if ((type == 'Z' && len != 5) || (type == 'K' && len != 12) ||
		    (strchr("123nIsc", type) && len != 4) || (type == 'R' && len < 8)) {
			cli_garbled(p, c, "wrong length for its type", type, len);
			break;
		}
		if (b_avail(in) < (size_t)len + 1)
			return;
		const uint8_t *body = m + 5;
		uint32_t n = len - 4;
		TRACE("  C%d <- %c len %u\n", c->serial, type, len);
		if (debug_level() >= 2)
			trace_text(m + 5, len - 4);
		if (type == 'E' && debug_level()) {
			/* the message field, for reading traces */
			for (const uint8_t *q = body; q < body + n && *q; q += strnlen((const char *)q + 1, (size_t)(body + n - q - 1)) + 2)
				if (*q == 'M' || *q == 'C')
					fprintf(stderr, "      %c: %.200s\n", *q, (const char *)q + 1);
		}
		switch (type) {
		case 'R':
			if (get32(body) == 0)
				c->login_ok = true;
			break;
		case 'K':
			c->pid = get32(body);
			c->key = get32(body + 4);
			c->have_key = true;
			break;
		case 'Z':
			if (body[0] != 'I' && body[0] != 'T' && body[0] != 'E') {
				cli_garbled(p, c, "ReadyForQuery status", type, len);
				return;
			}
			if (!c->ready) {
				c->ready = true;   /* the login's */
				break;
			}
			c->zs++;
			if (c->zs > c->syncs && !p->srv_hostile && !c->raw && !c->inner_bad)
				fail("C%d got %u ReadyForQuery for %u Sync/Query/FunctionCall", c->serial, c->zs,
				     c->syncs);
			break;
		case 'D':
		case 'E':
		case 'N':
		case 'd':
			check_tokens(p, c, body, n);
			break;
		default:
			break;
		}
		b_consume(in, (size_t)len + 1);
	}
	if (c->garbled)
		in->off = in->len = 0;
}

/* ---- connections ---------------------------------------------------------------------------- */

static void srv_free(struct peer *p, int i)
{
	struct fsrv *s = p->srv[i];
	/* A connection cut with an answer half written leaves pgmux a partial message. */
	if (s->out.off && b_avail(&s->out) && !s->monitor)
		p->srv_cut = true;
	close(s->fd);
	b_free(&s->in);
	b_free(&s->out);
	drop_stmts(s);
	drop_portals(s);
	free(s->copy_rest);
	free(s);
	p->srv[i] = p->srv[--p->n_srv];
}

/* True when the bytes of c's stream that went out end inside a message. */
static bool sent_mid_message(const struct fcli *c)
{
	const struct bytes *o = &c->out;
	if (!o->off || o->off == o->len)
		return false;
	size_t pos = c->pre;    /* the startup packet (and SSLRequest) have no type byte */
	while (pos < o->off) {
		if (o->len - pos < 5)
			return true;
		pos += 1 + (size_t)get32(o->p + pos + 1);
	}
	return pos != o->off;
}

static void cli_close(struct peer *p, struct fcli *c)
{
	if (c->fd < 0)
		return;
	/* A client that leaves mid-message: pgmux ends the server's stream with a Terminate that
	 * completes the cut message (excused in srv_input).  pgmux may itself hold part of a
	 * message it had whole (known bug, doc/reliability.md, finding 13), so unless
	 * STREAM_KNOWN_BUGS any client that leaves counts. */
	if (!c->eof && (sent_mid_message(c) || !p->known_bugs))
		c->cut = p->cli_cut = true;
	close(c->fd);
	c->fd = -1;
	b_free(&c->out);
	b_free(&c->in);
}

static void accept_one(struct peer *p, int l)
{
	for (;;) {
		int fd = accept4(p->lfd[l], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		if (p->n_srv >= MAX_SRV) {
			close(fd);
			continue;
		}
		struct fsrv *s = calloc(1, sizeof(*s));
		if (!s)
			fail("harness out of memory");
		s->fd = fd;
		s->backend = l;
		s->serial = ++p->srv_serial;
		s->tx = 'I';
		p->srv[p->n_srv++] = s;
		TRACE("  S%d accepted on backend %d\n", s->serial, l);
	}
}

/* Reads what is there (bounded); 1 moved, 0 nothing, -1 EOF or error. */
static int recv_into(int fd, struct bytes *b, size_t max)
{
	size_t got = 0;
	while (got < max) {
		b_room(b, 65536);
		ssize_t n = recv(fd, b->p + b->len, b->cap - b->len, 0);
		if (n > 0) {
			b->len += (size_t)n;
			got += (size_t)n;
			if ((size_t)n < 65536)
				break;   /* drained: spare the EAGAIN */
			continue;
		}
		if (n == 0)
			return got ? 1 : -1;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		return -1;
	}
	return got ? 1 : 0;
}

/* Writes up to lim bytes of b; 1 moved, 0 blocked or nothing, -1 the peer is gone. */
static int send_from(int fd, struct bytes *b, size_t lim)
{
	size_t want = b_avail(b) < lim ? b_avail(b) : lim;
	if (!want)
		return 0;
	ssize_t n = send(fd, b->p + b->off, want, MSG_NOSIGNAL);
	if (n > 0) {
		b->off += (size_t)n;
		if (b->off == b->len)
			b->off = b->len = 0;
		return 1;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	return -1;
}

/* One turn of the peer's side: one poll() over every socket, then accept, read, answer and
 * write where it said so.  True when any byte moved. */
static bool step(struct peer *p)
{
	enum { N_FD = MAX_LISTEN + MAX_SRV + MAX_CLIENTS + MAX_CANCELS };
	struct pollfd pf[N_FD];
	int n = 0, i0_srv, i0_cli, i0_can;
	bool moved = false;

	for (int l = 0; l < p->n_listen; l++)
		pf[n++] = (struct pollfd){ .fd = p->lfd[l], .events = POLLIN };
	i0_srv = n;
	for (int i = 0; i < p->n_srv; i++) {
		struct fsrv *s = p->srv[i];
		short ev = 0;
		if (!s->stall_rd && !s->eof && !s->closing)
			ev |= POLLIN;
		if (b_avail(&s->out) && (!s->stall_wr || s->closing))
			ev |= POLLOUT;
		pf[n++] = (struct pollfd){ .fd = s->fd, .events = ev };
	}
	i0_cli = n;
	for (int k = 0; k < MAX_CLIENTS; k++) {
		struct fcli *c = &p->cli[k];
		short ev = 0;
		if (c->fd >= 0 && !c->eof) {
			if (!c->stall_rd)
				ev |= POLLIN;
			if (b_avail(&c->out))
				ev |= POLLOUT;
		}
		pf[n++] = (struct pollfd){ .fd = c->fd >= 0 && !c->eof ? c->fd : -1, .events = ev };
	}
	i0_can = n;
	for (int k = 0; k < MAX_CANCELS; k++)
		pf[n++] = (struct pollfd){ .fd = p->can[k].fd, .events = POLLIN | (b_avail(&p->can[k].out) ? POLLOUT : 0) };
	if (poll(pf, (nfds_t)n, 0) < 0 && errno != EINTR)
		fail("poll: %s", strerror(errno));

	/* Server connections first (the array is compacted as they close: walk it by index
	 * into the poll results taken above, from the end). */
	int n_srv = p->n_srv;
	for (int i = n_srv - 1; i >= 0; i--) {
		struct fsrv *s = p->srv[i];
		short re = pf[i0_srv + i].revents;
		if (p->teardown && !s->monitor && s->phase != SRV_STARTUP) {
			srv_free(p, i);
			moved = true;
			continue;
		}
		if (re & (POLLIN | POLLHUP | POLLERR)) {
			int r = recv_into(s->fd, &s->in, RECV_STEP);
			if (r > 0)
				moved = true;
			if (r < 0)
				s->eof = true;
		}
		if (b_avail(&s->in))
			srv_input(p, s);
		if (b_avail(&s->out) && (!s->stall_wr || s->closing)) {
			/* written at once when the answer is new; poll() says when a full socket drains */
			int r = send_from(s->fd, &s->out, SIZE_MAX);
			if (r > 0)
				moved = true;
			if (r < 0)
				s->eof = true;
		}
		if (s->eof || (s->closing && !b_avail(&s->out))) {
			TRACE("  S%d closed (%s)\n", s->serial, s->eof ? "by pgmux" : "by the server");
			srv_free(p, i);
			moved = true;
		}
	}
	for (int l = 0; l < p->n_listen; l++) {
		if (pf[l].revents & POLLIN) {
			accept_one(p, l);
			moved = true;
		}
	}
	for (int k = 0; k < MAX_CLIENTS; k++) {
		struct fcli *c = &p->cli[k];
		short re = pf[i0_cli + k].revents;
		if (c->fd < 0 || c->eof)
			continue;
		if (re & POLLOUT) {
			size_t lim = b_avail(&c->out);
			if (c->chunk && lim > c->chunk)
				lim = c->chunk > lim / 16 ? c->chunk : lim / 16;
			int r = send_from(c->fd, &c->out, lim);
			if (r > 0)
				moved = true;
			if (r < 0)
				c->out.off = c->out.len = 0;   /* pgmux hung up: the rest is lost */
			if (!b_avail(&c->out))
				c->pre = 0;
		}
		if (!c->stall_rd && (re & (POLLIN | POLLHUP | POLLERR))) {
			int r = recv_into(c->fd, &c->in, RECV_STEP);
			if (r > 0)
				moved = true;
			cli_input(p, c);
			if (r < 0) {
				c->eof = true;
				p->pgmux_closed = true;
				moved = true;
				TRACE("  C%d closed by pgmux\n", c->serial);
			}
		}
	}
	for (int k = 0; k < MAX_CANCELS; k++) {
		struct fcancel *x = &p->can[k];
		short re = pf[i0_can + k].revents;
		if (x->fd < 0)
			continue;
		if ((re & POLLOUT) && send_from(x->fd, &x->out, SIZE_MAX) > 0)
			moved = true;
		if (re & (POLLIN | POLLHUP | POLLERR)) {
			char junk[64];
			ssize_t k2 = recv(x->fd, junk, sizeof(junk), 0);
			if (k2 == 0 || (k2 < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
				close(x->fd);
				x->fd = -1;
				b_free(&x->out);
				moved = true;
			}
		}
	}
	return moved;
}

/* Runs pgmux's loop and the peer in turn until nothing moves for a few turns. */
static void pump(struct peer *p, long max_turns)
{
	int quiet = 0;
	for (long t = 0; t < max_turns && quiet < QUIET_TURNS; t++) {
		event_base_loop(p->w->base, EVLOOP_NONBLOCK);
		quiet = step(p) ? 0 : quiet + 1;
		p->turns++;
	}
}

/* ---- the script ------------------------------------------------------------------------------ */

/* Op codes: an op byte selects one by its value modulo N_OPS; the arguments follow.
 * tests/fuzz/make_stream_corpus.py writes seeds with the same numbers: change both together. */
enum {
	OP_OPEN, OP_QUERY, OP_PARSE, OP_BIND, OP_DESCRIBE, OP_EXECUTE, OP_CLOSE, OP_SYNC,
	OP_FLUSH, OP_COPYDATA, OP_COPYDONE, OP_COPYFAIL, OP_TERMINATE, OP_FUNCCALL, OP_RAW,
	OP_BADMSG, OP_CHUNK, OP_PUMP, OP_DISCONNECT, OP_CANCEL, OP_CLI_STALL, OP_SV_ERR,
	OP_SV_RAW, OP_SV_LIE, OP_SV_CLOSE, OP_SV_STALL, OP_SV_SIZE, OP_SV_LOGIN, OP_SV_ASYNC,
	OP_BATCH, OP_REPEAT, OP_SLEEP, N_OPS
};

static const size_t size_class[] = { 0, 1, 10, 100, 1000, 4000, 16379, 16384, 20000, 70000, 300000 };

static size_t pick_size(uint8_t b)
{
	return size_class[b % (sizeof(size_class) / sizeof(size_class[0]))];
}

/* Room in the input's byte budget for n more client bytes. */
static bool cli_budget(struct peer *p, size_t n)
{
	if (p->cli_bytes + n > CLI_BUDGET)
		return false;
	p->cli_bytes += n;
	return true;
}

/* Fuzzer-chosen bytes in a SQL text or name: no NUL (it would end the string) and no '*' (so
 * that only the harness writes client tokens). */
static void put_clean(struct bytes *o, const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		b_u8(o, s[i] == 0 ? ' ' : s[i] == '*' ? '+' : s[i]);
}

/* A statement name (with its NUL) by a one-byte choice. */
static void gen_name(struct peer *p, struct rd *r, struct bytes *o, bool portal)
{
	uint8_t b = rd_u8(r);
	char tmp[80];
	if (portal) {
		switch (b % 6) {
		case 0: case 1: b_u8(o, 0); return;
		case 2: b_str(o, "p1"); return;
		case 3: b_str(o, "p2"); return;
		case 4: b_fill(o, 'p', 20000); b_u8(o, 0); return;   /* issue 11, defect 1 */
		default: snprintf(tmp, sizeof(tmp), "portal_%u", ++p->name_seq); b_str(o, tmp); return;
		}
	}
	switch (b % 16) {
	case 0: b_u8(o, 0); return;
	case 1: b_str(o, "s1"); return;
	case 2: b_str(o, "s2"); return;
	case 3: b_str(o, "s3"); return;
	case 4: b_str(o, "S1"); return;
	case 5: b_str(o, "__asyncpg_stmt_1__"); return;
	case 6: b_fill(o, 'n', 63); b_u8(o, 0); return;
	case 7: b_fill(o, 'n', 63); b_str(o, "x"); return;    /* the same statement as case 6 */
	case 8: b_fill(o, 'q', 16000); b_u8(o, 0); return;
	case 9: snprintf(tmp, sizeof(tmp), "stmt_%u", ++p->name_seq); b_str(o, tmp); return;
	case 10:
		if (p->learned[0]) {
			b_str(o, p->learned);
			return;
		}
		b_str(o, "pgmux_1");
		return;
	case 11: b_str(o, "a\"b"); return;
	case 12: b_str(o, "pgmux_refused"); return;
	case 13: b_str(o, "_pg3_0"); return;
	case 14: b_fill(o, 'r', 20000); b_u8(o, 0); return;
	default: {
		size_t n = rd_u8(r) % 40;
		const uint8_t *s = rd_bytes(r, &n);
		put_clean(o, s, n);
		b_u8(o, 0);
		return;
	}
	}
}

/* The name gen_name would write as the text of a DEALLOCATE / PREPARE / EXECUTE. */
static void gen_ident(struct peer *p, struct rd *r, struct bytes *o)
{
	size_t from = o->len;
	gen_name(p, r, o, false);
	o->len--;   /* its NUL */
	if (o->len == from)
		b_put(o, "s1", 2);
}

/* A SQL text (without its NUL) by a one-byte choice; most end with the client's token. */
static void gen_text(struct peer *p, struct rd *r, struct fcli *c, struct bytes *o)
{
	uint8_t t = rd_u8(r);
	char tmp[96];
	size_t from = o->len;
	if (t & 64)
		b_put(o, " \n\t", 3);
	switch (t & 31) {
	case 0: b_put(o, "SELECT 1", 8); break;
	case 1: b_put(o, "SELECT $1::int", 14); break;
	case 2: b_put(o, "BEGIN", 5); break;
	case 3: b_put(o, "COMMIT", 6); break;
	case 4: b_put(o, "ROLLBACK", 8); break;
	case 5: b_put(o, "SELECT pg_sleep(0)", 18); break;
	case 6: b_put(o, "COPY t FROM STDIN", 17); c->copy_used = true; break;
	case 7: b_put(o, "COPY t TO STDOUT", 16); break;
	case 8: b_put(o, "DISCARD ALL", 11); break;
	case 9: b_put(o, "DEALLOCATE ", 11); gen_ident(p, r, o); break;
	case 10: b_put(o, "DEALLOCATE ALL", 14); break;
	case 11: snprintf(tmp, sizeof(tmp), "SET application_name = 'app%u'", rd_u8(r) % 4); b_put(o, tmp, strlen(tmp)); break;
	case 12: {
		const char *x = (rd_u8(r) & 1) ? "SET TimeZone = 'Europe/Paris'" : "SET DateStyle TO 'German'";
		b_put(o, x, strlen(x));
		break;
	}
	case 13: b_put(o, "SELECT ERR", 10); break;
	case 14: break;
	case 15: b_put(o, "PREPARE ", 8); gen_ident(p, r, o); b_put(o, " AS SELECT 1", 12); break;
	case 16: b_put(o, "EXECUTE ", 8); gen_ident(p, r, o); break;
	case 17: b_put(o, "INSERT INTO t VALUES (1)", 24); break;
	case 18: b_put(o, "SELECT 1; SELECT 2", 18); break;
	case 19: b_put(o, "RESET ALL", 9); break;
	case 20: {
		size_t n = rd_u8(r);
		const uint8_t *s = rd_bytes(r, &n);
		put_clean(o, s, n);
		break;
	}
	case 21: {
		size_t n = pick_size(rd_u8(r));
		b_put(o, "SELECT '", 8);
		b_fill(o, 'x', n);
		b_u8(o, '\'');
		break;
	}
	case 22: b_put(o, "DEALLOCATE ", 11); b_put(o, p->learned[0] ? p->learned : "pgmux_1", strlen(p->learned[0] ? p->learned : "pgmux_1")); break;
	case 23: snprintf(tmp, sizeof(tmp), "SELECT * FROM t WHERE user_id = %u", rd_u8(r)); b_put(o, tmp, strlen(tmp)); break;
	case 24: {
		static const char *const sets[] = { "SET pgmux.role = replica", "SET pgmux.role = primary",
						    "SET pgmux.role = auto", "SET pgmux.user_id = 7",
						    "SET pgmux.shard = 1", "RESET pgmux.user_id" };
		const char *x = sets[rd_u8(r) % 6];
		b_put(o, x, strlen(x));
		break;
	}
	case 25: b_put(o, "SELECT pg_advisory_lock(1)", 26); break;
	case 26: snprintf(tmp, sizeof(tmp), "UPDATE t SET x = 1 WHERE user_id = %u", rd_u8(r)); b_put(o, tmp, strlen(tmp)); break;
	case 27: b_put(o, "COMMIT; BEGIN", 13); break;
	case 28: b_put(o, "DO $$ BEGIN PERFORM 1; END $$", 29); break;
	case 29: b_put(o, "START TRANSACTION READ ONLY", 27); break;
	case 30: b_put(o, "SELECT nextval('s')", 19); break;
	default: b_put(o, "END", 3); break;
	}
	if (t & 128) {
		/* lower case: the keyword checks must not care */
		for (size_t i = from; i < o->len; i++)
			if (o->p[i] >= 'A' && o->p[i] <= 'Z')
				o->p[i] = (uint8_t)(o->p[i] + 32);
	}
	if (!(t & 32)) {
		snprintf(tmp, sizeof(tmp), " /*c%d*/", c->serial);
		b_put(o, tmp, strlen(tmp));
	}
}

/* Bind parameter values by a one-byte choice: a short number, NULL, or n bytes. */
static void gen_value(struct rd *r, struct bytes *o)
{
	uint8_t v = rd_u8(r);
	if (v % 8 == 0) {
		b_u32(o, 1);
		b_u8(o, (uint8_t)('0' + v / 8 % 10));
	} else if (v % 8 == 1) {
		b_u32(o, 0xffffffffu);
	} else {
		size_t n = pick_size(v / 8);
		b_u32(o, (uint32_t)n);
		b_fill(o, '7', n);
	}
}

/* Builds a message for client c into its own staging buffer, then queues it when the budget
 * allows. */
/* The buffer client messages are built in: one per peer, reused, since the ASan allocator
 * hands out fresh (page-faulting) memory for every new big buffer. */
static struct bytes *msg_start(struct peer *p)
{
	p->scratch.len = p->scratch.off = 0;
	return &p->scratch;
}

/* True when m holds a message longer than peer_setup.msg_max allows c to send. */
static bool too_long(const struct peer *p, const struct fcli *c, const struct bytes *m)
{
	if (!p->set.msg_max ||
	    (p->set.uncapped_db && strcmp(p->set.dbs[c->db], p->set.uncapped_db) == 0))
		return false;
	for (size_t i = 0; i + 5 <= m->len; i += 1 + get32(m->p + i + 1))
		if (get32(m->p + i + 1) + 1 > p->set.msg_max)
			return true;
	return false;
}

static void queue(struct peer *p, struct fcli *c, struct bytes *m)
{
	if (c->fd >= 0 && !c->eof && !too_long(p, c, m) && cli_budget(p, m->len)) {
		for (size_t i = 0; debug_level() && i + 5 <= m->len; i += 1 + get32(m->p + i + 1))
			TRACE("  C%d -> %c len %u\n", c->serial, m->p[i], get32(m->p + i + 1));
		b_put(&c->out, m->p, m->len);
		c->early |= !c->ready;
		/* what the client is now owed: a ReadyForQuery per Sync, Query and FunctionCall */
		for (size_t i = 0; i + 5 <= m->len; i += 1 + get32(m->p + i + 1)) {
			char t = (char)m->p[i];
			if (strchr("PBEDC", t))
				c->ext_open = true;
			else if ((t == 'Q' || t == 'F') && c->ext_open)
				c->misuse = true;
			if (t == 'Q' || t == 'F' || t == 'S')
				c->syncs++;
			if (t == 'S')
				c->ext_open = false;
			/* Known pgmux bug (doc/reliability.md, finding 5): a Terminate read together with
			 * a message pgmux refuses leaves the client paused and owed its answers. */
			if (t == 'X' && !p->known_bugs)
				c->misuse = true;
			/* Known pgmux bug (finding 14): a DEALLOCATE that pgmux prepares the statement
			 * for first can be lost in an aborted transaction. */
			if (t == 'Q' && !p->known_bugs) {
				size_t at = skip_blank((const char *)m->p + i + 5, get32(m->p + i + 1) - 4, 0);
				if (word_is((const char *)m->p + i + 5, get32(m->p + i + 1) - 4, at, "deallocate"))
					c->misuse = true;
			}
		}
	}
	m->len = m->off = 0;
}

static void open_client(struct peer *p, int k, uint8_t ub, uint8_t db, uint8_t flags);

/* The client slot an op names; opened with the defaults when it is free. */
static struct fcli *slot(struct peer *p, struct rd *r)
{
	int k = rd_u8(r) % MAX_CLIENTS;
	struct fcli *c = &p->cli[k];
	if (c->fd < 0)
		open_client(p, k, 0, 0, 0);
	return c;
}

static void msg_query(struct peer *p, struct fcli *c, struct rd *r)
{
	struct bytes *m = msg_start(p);
	size_t at = b_begin(m, 'Q');
	gen_text(p, r, c, m);
	b_u8(m, 0);
	b_end(m, at);
	queue(p, c, m);
}

static void msg_parse(struct peer *p, struct fcli *c, struct rd *r, bool unnamed)
{
	struct bytes *m = msg_start(p);
	size_t at = b_begin(m, 'P');
	if (unnamed)
		b_u8(m, 0);
	else
		gen_name(p, r, m, false);
	size_t text_at = m->len;
	gen_text(p, r, c, m);
	b_u8(m, 0);
	unsigned np = rd_u8(r) % 4;
	size_t kw;
	if (p->set.untyped_begin &&
	    classify((const char *)m->p + text_at, m->len - text_at - 1, &kw) == K_BEGIN)
		np = 0;   /* see peer_setup.untyped_begin */
	b_u16(m, (uint16_t)np);
	for (unsigned i = 0; i < np; i++)
		b_u32(m, 23);
	b_end(m, at);
	queue(p, c, m);
}

/* Keeps a Bind's names (written after the length at `at`) within peer_setup.bind_names_max:
 * a long portal name becomes "p1", then a long statement name "s1". */
static void cap_bind_names(struct peer *p, struct bytes *m, size_t at)
{
	size_t max = p->set.bind_names_max;
	if (!max || m->len - at - 4 <= max)
		return;
	const char *portal = (const char *)m->p + at + 4;
	size_t pl = strlen(portal);
	char *stmt = strdup(portal + pl + 1);
	if (!stmt)
		fail("harness out of memory");
	m->len = at + 4;
	b_str(m, "p1");
	b_str(m, strlen(stmt) + 3 <= max ? stmt : "s1");
	free(stmt);
}

static void msg_bind(struct peer *p, struct fcli *c, struct rd *r, bool unnamed)
{
	struct bytes *m = msg_start(p);
	size_t at = b_begin(m, 'B');
	gen_name(p, r, m, true);
	if (unnamed)
		b_u8(m, 0);
	else
		gen_name(p, r, m, false);
	cap_bind_names(p, m, at);
	unsigned np = rd_u8(r) % 4;
	b_u16(m, 1);
	b_u16(m, 0);
	b_u16(m, (uint16_t)np);
	for (unsigned i = 0; i < np; i++)
		gen_value(r, m);
	b_u16(m, 1);
	b_u16(m, 0);
	b_end(m, at);
	queue(p, c, m);
}

static void msg_named(struct peer *p, struct fcli *c, struct rd *r, char type, char kind_choice)
{
	struct bytes *m = msg_start(p);
	size_t at = b_begin(m, type);
	char kind = kind_choice ? kind_choice : (rd_u8(r) & 1) ? 'P' : 'S';
	b_u8(m, (uint8_t)kind);
	gen_name(p, r, m, kind == 'P');
	b_end(m, at);
	queue(p, c, m);
}

static void msg_execute(struct peer *p, struct fcli *c, struct rd *r, bool unnamed)
{
	struct bytes *m = msg_start(p);
	size_t at = b_begin(m, 'E');
	if (unnamed)
		b_u8(m, 0);
	else
		gen_name(p, r, m, true);
	uint8_t mr = unnamed ? 0 : rd_u8(r);
	b_u32(m, mr % 4 == 0 ? 0 : mr % 4);
	b_end(m, at);
	queue(p, c, m);
}

static void msg_empty(struct peer *p, struct fcli *c, char type, unsigned count)
{
	if (c->fd < 0 || c->eof || !cli_budget(p, (size_t)count * 5))
		return;
	TRACE("  C%d -> %c x %u\n", c->serial, type, count);
	c->early |= !c->ready;
	/* one message, then doubled: floods of a million Flushes are built in a few copies */
	struct bytes *o = &c->out;
	size_t from = o->len;
	b_room(o, (size_t)count * 5);
	size_t at = b_begin(o, type);
	b_end(o, at);
	for (size_t have = 1; have < count;) {
		size_t k = have <= count - have ? have : count - have;
		memcpy(o->p + o->len, o->p + from, k * 5);
		o->len += k * 5;
		have += k;
	}
	if (type == 'S') {
		c->syncs += count;
		c->ext_open = false;
	}
	if (type == 'X' && !p->known_bugs)
		c->misuse = true;   /* finding 5: see queue() */
}

static void msg_copydata(struct peer *p, struct fcli *c, size_t n)
{
	struct bytes *m = msg_start(p);
	size_t at = b_begin(m, 'd');
	b_fill(m, 'c', n);
	b_u8(m, '\n');
	b_end(m, at);
	c->copy_used = true;
	queue(p, c, m);
}

static void msg_copyfail(struct peer *p, struct fcli *c)
{
	struct bytes *m = msg_start(p);
	size_t at = b_begin(m, 'f');
	b_str(m, "client gave up");
	b_end(m, at);
	c->copy_used = true;
	queue(p, c, m);
}

static void msg_funccall(struct peer *p, struct fcli *c)
{
	/* Known pgmux deviation (doc/reliability.md, finding 2): the console answers a
	 * FunctionCall with an error and no ReadyForQuery, and skips on to the next Sync. */
	if (strcmp(p->set.dbs[c->db], "pgmux") == 0 && !p->known_bugs)
		c->misuse = true;
	struct bytes *m = msg_start(p);
	size_t at = b_begin(m, 'F');
	b_u32(m, 1598);   /* a function's oid */
	b_u16(m, 0);
	b_u16(m, 1);
	b_u32(m, 2);
	b_put(m, "42", 2);
	b_u16(m, 0);
	b_end(m, at);
	queue(p, c, m);
}

/* Well-known client sequences, for seeds that reach deep states in a few bytes. */
static void batch(struct peer *p, struct fcli *c, struct rd *r)
{
	uint8_t kind = rd_u8(r) % 10;
	size_t save;
	switch (kind) {
	case 0:     /* psql: one simple query */
		msg_query(p, c, r);
		return;
	case 1:     /* asyncpg prepare: Parse, Describe statement, Flush */
		save = r->i;
		msg_parse(p, c, r, false);
		{
			/* Describe the same name: read the name choice again */
			struct rd r2 = { r->p, r->n, save };
			msg_named(p, c, &r2, 'D', 'S');
		}
		msg_empty(p, c, 'H', 1);
		return;
	case 2:     /* asyncpg execute: Bind, Execute, Sync */
		msg_bind(p, c, r, false);
		msg_execute(p, c, r, true);
		msg_empty(p, c, 'S', 1);
		return;
	case 3:     /* psycopg: unnamed Parse, Bind, Describe portal, Execute, Sync */
		msg_parse(p, c, r, true);
		msg_bind(p, c, r, true);
		{
			struct bytes *m = msg_start(p);
			size_t at = b_begin(m, 'D');
			b_u8(m, 'P');
			b_u8(m, 0);
			b_end(m, at);
			queue(p, c, m);
		}
		msg_execute(p, c, r, true);
		msg_empty(p, c, 'S', 1);
		return;
	case 4:     /* a named statement end to end */
		save = r->i;
		msg_parse(p, c, r, false);
		{
			struct rd r2 = { r->p, r->n, save };
			struct bytes *m = msg_start(p);
			size_t at = b_begin(m, 'B');
			b_u8(m, 0);
			gen_name(p, &r2, m, false);
			b_u16(m, 0);
			b_u16(m, 0);
			b_u16(m, 0);
			b_end(m, at);
			queue(p, c, m);
		}
		msg_execute(p, c, r, true);
		msg_empty(p, c, 'S', 1);
		return;
	case 5:     /* COPY FROM STDIN, data, done */
	case 6:     /* ... or failed */
		{
			struct bytes *m = msg_start(p);
			size_t at = b_begin(m, 'Q');
			char tmp[64];
			snprintf(tmp, sizeof(tmp), "COPY t FROM STDIN /*c%d*/", c->serial);
			b_str(m, tmp);
			b_end(m, at);
			queue(p, c, m);
			msg_copydata(p, c, pick_size(rd_u8(r)));
			msg_copydata(p, c, 10);
			if (kind == 5)
				msg_empty(p, c, 'c', 1);
			else
				msg_copyfail(p, c);
		}
		return;
	case 7:     /* extended-protocol COPY: Parse/Bind/Execute, data, done, Sync */
		{
			struct bytes *m = msg_start(p);
			size_t at = b_begin(m, 'P');
			char tmp[64];
			b_u8(m, 0);
			snprintf(tmp, sizeof(tmp), "COPY t FROM STDIN /*c%d*/", c->serial);
			b_str(m, tmp);
			b_u16(m, 0);
			b_end(m, at);
			at = b_begin(m, 'B');
			b_u8(m, 0);
			b_u8(m, 0);
			b_u16(m, 0);
			b_u16(m, 0);
			b_u16(m, 0);
			b_end(m, at);
			at = b_begin(m, 'E');
			b_u8(m, 0);
			b_u32(m, 0);
			b_end(m, at);
			c->copy_used = true;
			queue(p, c, m);
			msg_copydata(p, c, pick_size(rd_u8(r)));
			msg_empty(p, c, 'c', 1);
			msg_empty(p, c, 'S', 1);
		}
		return;
	case 8:     /* Close statement, Sync */
		msg_named(p, c, r, 'C', 'S');
		msg_empty(p, c, 'S', 1);
		return;
	default:    /* issue 11, defect 1: a 20,000-byte portal name among named Parses */
		{
			struct bytes *m = msg_start(p);
			char tmp[64];
			size_t at = b_begin(m, 'P');
			b_u8(m, 0);
			snprintf(tmp, sizeof(tmp), "SELECT $1::int /*c%d*/", c->serial);
			b_str(m, tmp);
			b_u16(m, 0);
			b_end(m, at);
			at = b_begin(m, 'B');
			b_fill(m, 'p', 20000);
			b_u8(m, 0);
			b_u8(m, 0);
			cap_bind_names(p, m, at);
			b_u16(m, 0);
			b_u16(m, 1);
			size_t n = pick_size(rd_u8(r));
			b_u32(m, (uint32_t)n);
			b_fill(m, '5', n);
			b_u16(m, 0);
			b_end(m, at);
			at = b_begin(m, 'P');
			b_str(m, "s1");
			snprintf(tmp, sizeof(tmp), "SELECT 2 /*c%d*/", c->serial);
			b_str(m, tmp);
			b_u16(m, 0);
			b_end(m, at);
			queue(p, c, m);
			msg_empty(p, c, 'S', 1);
		}
		return;
	}
}

/* Before the script drops a client whose stream broke: pgmux must close it (finding 11). */
static void judge_garbled(struct peer *p, struct fcli *c)
{
	if (c->fd < 0 || c->eof || !c->garbled_open)
		return;
	pump(p, PUMP_ITERS);   /* it closes right after its FATAL */
	if (!c->eof)
		fail("C%d got a malformed stream from pgmux, which kept the connection: %s", c->serial,
		     c->garbled_why);
}

static void open_client(struct peer *p, int k, uint8_t ub, uint8_t db, uint8_t flags)
{
	struct fcli *c = &p->cli[k];
	judge_garbled(p, c);
	cli_close(p, c);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->serial = ++p->cli_serial;
	c->user = ub % p->set.n_users;
	c->db = db % p->set.n_dbs;
	int fd;
	if (flags & 1) {
		/* through pgmux's listener, as a real client */
		struct sockaddr_un un = { .sun_family = AF_UNIX };
		snprintf(un.sun_path, sizeof(un.sun_path), "%s", p->w->unix_path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&un, sizeof(un)) < 0) {
			if (fd >= 0)
				close(fd);
			c->eof = true;
			return;
		}
	} else {
		/* straight into client_accept: no listener in the way */
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
			fail("socketpair: %s", strerror(errno));
		struct sockaddr_un un = { .sun_family = AF_UNIX };
		client_accept(p->w, sv[1], (struct sockaddr *)&un, sizeof(sa_family_t));
		fd = sv[0];
	}
	c->fd = fd;
	if (flags & 2) {
		/* a small socket buffer: pgmux meets a full client sooner */
		int sz = 4096;
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	}
	struct bytes *o = &c->out;
	if (flags & 4) {
		/* SSLRequest first: over a Unix socket pgmux answers 'N' */
		b_u32(o, 8);
		b_u32(o, 80877103);
		c->ssl_probe = true;
	}
	size_t at = b_begin(o, 0);
	b_u32(o, (flags & 8) ? 196610 : 196608);   /* 3.2 makes pgmux negotiate down */
	b_str(o, "user");
	b_str(o, p->set.users[c->user]);
	b_str(o, "database");
	b_str(o, p->set.dbs[c->db]);
	if (flags & 16) {
		b_str(o, "application_name");
		b_str(o, "fuzz");
	}
	if (flags & 32) {
		b_str(o, "_pq_.fuzz_option");
		b_str(o, "1");
	}
	if (flags & 64) {
		b_str(o, "TimeZone");
		b_str(o, "Asia/Tokyo");
	}
	b_u8(o, 0);
	b_end(o, at);
	c->pre = o->len;
	c->chunk = (flags & 128) ? 3 : 0;
	TRACE("  C%d opens slot %d as %s/%s flags 0x%02x\n", c->serial, k, p->set.users[c->user],
	      p->set.dbs[c->db], flags);
}

static int live_srv(struct peer *p, uint8_t j)
{
	int idx[MAX_SRV], n = 0;
	for (int i = 0; i < p->n_srv; i++)
		if (!p->srv[i]->monitor && p->srv[i]->phase == SRV_READY)
			idx[n++] = i;
	return n ? idx[j % n] : -1;
}

static void op_sv_lie(struct peer *p, struct fsrv *s, uint8_t kind)
{
	struct bytes *o = &s->out;
	size_t at;
	p->srv_hostile = true;
	switch (kind % 10) {
	case 0: srv_ready(s); break;
	case 1: at = b_begin(o, 'Z'); b_u8(o, 'T'); b_end(o, at); break;
	case 2: srv_simple(s, '1'); break;
	case 3: srv_simple(s, '2'); break;
	case 4: srv_complete(s, "DISCARD ALL"); break;
	case 5:     /* an ErrorResponse without SQLSTATE (a PgBouncer CVE class) */
		at = b_begin(o, 'E');
		b_u8(o, 'S');
		b_str(o, "ERROR");
		b_u8(o, 0);
		b_end(o, at);
		break;
	case 6:     /* a huge error */
		at = b_begin(o, 'E');
		b_u8(o, 'S');
		b_str(o, "ERROR");
		b_u8(o, 'C');
		b_str(o, "XX000");
		b_u8(o, 'M');
		b_fill(o, 'e', 100000);
		b_u8(o, 0);
		b_u8(o, 0);
		b_end(o, at);
		break;
	case 7: at = b_begin(o, 'Z'); b_u8(o, 'X'); b_end(o, at); break;
	case 8: srv_simple(s, 'n'); break;
	default:    /* a ParameterStatus bigger than pgmux's buffer */
		at = b_begin(o, 'S');
		b_str(o, "application_name");
		b_fill(o, 'a', 40000);
		b_u8(o, 0);
		b_end(o, at);
		break;
	}
}

static void op_sv_async(struct fsrv *s, uint8_t kind)
{
	struct bytes *o = &s->out;
	size_t at;
	switch (kind % 3) {
	case 0:
		at = b_begin(o, 'N');
		b_u8(o, 'S');
		b_str(o, "NOTICE");
		b_u8(o, 'C');
		b_str(o, "00000");
		b_u8(o, 'M');
		b_str(o, "a notice");
		b_u8(o, 0);
		b_end(o, at);
		break;
	case 1:
		at = b_begin(o, 'A');
		b_u32(o, s->pid);
		b_str(o, "chan");
		b_str(o, "payload");
		b_end(o, at);
		break;
	default:
		srv_param(s, "application_name", "changed_by_server");
		break;
	}
}

/* One op of the script; returns false when the script should stop. */
static bool run_op(struct peer *p, struct rd *r, size_t *last_client_op, int depth)
{
	size_t at = r->i;
	static const char *const names[N_OPS] = {
		"OPEN", "QUERY", "PARSE", "BIND", "DESCRIBE", "EXECUTE", "CLOSE", "SYNC", "FLUSH",
		"COPYDATA", "COPYDONE", "COPYFAIL", "TERMINATE", "FUNCCALL", "RAW", "BADMSG", "CHUNK",
		"PUMP", "DISCONNECT", "CANCEL", "CLI_STALL", "SV_ERR", "SV_RAW", "SV_LIE", "SV_CLOSE",
		"SV_STALL", "SV_SIZE", "SV_LOGIN", "SV_ASYNC", "BATCH", "REPEAT", "SLEEP",
	};
	uint8_t op = rd_u8(r) % N_OPS;
	struct fcli *c;
	TRACE("op %s at %zu\n", names[op], at);
	switch (op) {
	case OP_OPEN: {
		int k = rd_u8(r) % MAX_CLIENTS;
		uint8_t u = rd_u8(r), d = rd_u8(r), f = rd_u8(r);
		open_client(p, k, u, d, f);
		return true;
	}
	case OP_QUERY: c = slot(p, r); msg_query(p, c, r); break;
	case OP_PARSE: c = slot(p, r); msg_parse(p, c, r, false); break;
	case OP_BIND: c = slot(p, r); msg_bind(p, c, r, false); break;
	case OP_DESCRIBE: c = slot(p, r); msg_named(p, c, r, 'D', 0); break;
	case OP_EXECUTE: c = slot(p, r); msg_execute(p, c, r, false); break;
	case OP_CLOSE: c = slot(p, r); msg_named(p, c, r, 'C', 0); break;
	case OP_SYNC: c = slot(p, r); msg_empty(p, c, 'S', 1); break;
	case OP_FLUSH: {
		c = slot(p, r);
		uint8_t b = rd_u8(r);
		msg_empty(p, c, 'H', b < 200 ? b + 1u : (b - 199u) * 1000u);
		break;
	}
	case OP_COPYDATA: c = slot(p, r); msg_copydata(p, c, pick_size(rd_u8(r))); break;
	case OP_COPYDONE: c = slot(p, r); c->copy_used = true; msg_empty(p, c, 'c', 1); break;
	case OP_COPYFAIL: c = slot(p, r); msg_copyfail(p, c); break;
	case OP_TERMINATE: c = slot(p, r); msg_empty(p, c, 'X', 1); break;
	case OP_FUNCCALL: c = slot(p, r); msg_funccall(p, c); break;
	case OP_RAW: {
		c = slot(p, r);
		size_t n = rd_u8(r);
		const uint8_t *s = rd_bytes(r, &n);
		if (c->fd >= 0 && !c->eof && cli_budget(p, n)) {
			b_put(&c->out, s, n);
			c->raw = p->cli_raw = true;
		}
		break;
	}
	case OP_BADMSG: {
		c = slot(p, r);
		static const char types[] = "PBDECQSHFdcfX";
		char type = types[rd_u8(r) % (sizeof(types) - 1)];
		size_t n = rd_u8(r) % 48;
		const uint8_t *s = rd_bytes(r, &n);
		struct bytes *m = msg_start(p);
		size_t a = b_begin(m, type);
		b_put(m, s, n);
		b_end(m, a);
		c->inner_bad = p->cli_inner_bad = true;
		queue(p, c, m);
		break;
	}
	case OP_CHUNK: {
		c = slot(p, r);
		static const uint32_t chunks[] = { 0, 1, 2, 3, 5, 7, 64, 1000, 4096, 16385 };
		c->chunk = chunks[rd_u8(r) % 10];
		return true;
	}
	case OP_PUMP:
		pump(p, PUMP_ITERS);
		return true;
	case OP_DISCONNECT: {
		int k = rd_u8(r) % MAX_CLIENTS;
		uint8_t how = rd_u8(r);
		c = &p->cli[k];
		if (c->fd < 0)
			return true;
		if (how & 1) {
			/* let pgmux read what was sent first */
			pump(p, 50);
		}
		TRACE("  C%d disconnects\n", c->serial);
		judge_garbled(p, c);
		cli_close(p, c);
		return true;
	}
	case OP_CANCEL: {
		c = slot(p, r);
		int k;
		for (k = 0; k < MAX_CANCELS && p->can[k].fd >= 0; k++)
			;
		if (k == MAX_CANCELS || !c->have_key)
			return true;
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
			fail("socketpair: %s", strerror(errno));
		struct sockaddr_un un = { .sun_family = AF_UNIX };
		client_accept(p->w, sv[1], (struct sockaddr *)&un, sizeof(sa_family_t));
		struct fcancel *x = &p->can[k];
		x->fd = sv[0];
		b_u32(&x->out, 16);
		b_u32(&x->out, 80877102);
		b_u32(&x->out, c->pid);
		b_u32(&x->out, c->key);
		return true;
	}
	case OP_CLI_STALL: c = slot(p, r); c->stall_rd = !c->stall_rd; return true;
	case OP_SV_ERR: p->err_countdown = 1 + rd_u8(r) % 8; return true;
	case OP_SV_RAW: {
		int j = live_srv(p, rd_u8(r));
		size_t n = rd_u8(r);
		const uint8_t *s = rd_bytes(r, &n);
		if (j >= 0) {
			struct bytes *o = &p->srv[j]->out;
			put_clean(o, s, n);
			p->srv_hostile = true;
		}
		return true;
	}
	case OP_SV_LIE: {
		int j = live_srv(p, rd_u8(r));
		uint8_t kind = rd_u8(r);
		if (j >= 0)
			op_sv_lie(p, p->srv[j], kind);
		return true;
	}
	case OP_SV_CLOSE: {
		int j = live_srv(p, rd_u8(r));
		if (j >= 0 && !p->set.no_server_cut) {
			struct fsrv *s = p->srv[j];
			send_from(s->fd, &s->out, SIZE_MAX);
			TRACE("  S%d closed by the script\n", s->serial);
			srv_free(p, j);
		}
		return true;
	}
	case OP_SV_STALL: {
		int j = live_srv(p, rd_u8(r));
		uint8_t what = rd_u8(r);
		if (j >= 0) {
			if (what & 1)
				p->srv[j]->stall_rd = !p->srv[j]->stall_rd;
			else
				p->srv[j]->stall_wr = !p->srv[j]->stall_wr;
		}
		return true;
	}
	case OP_SV_SIZE: {
		static const int rows[] = { 1, 0, 2, 10, 1000 };
		static const size_t widths[] = { 0, 100, 20000, 100000 };
		uint8_t b = rd_u8(r);
		p->rows = rows[b % 5];
		p->width = widths[(b / 5) % 4];
		return true;
	}
	case OP_SV_LOGIN: p->login_mode = rd_u8(r) % N_LOGIN; return true;
	case OP_SV_ASYNC: {
		int j = live_srv(p, rd_u8(r));
		uint8_t kind = rd_u8(r);
		if (j >= 0)
			op_sv_async(p->srv[j], kind);
		return true;
	}
	case OP_BATCH: c = slot(p, r); batch(p, c, r); break;
	case OP_REPEAT: {
		unsigned n = 1 + rd_u8(r);
		if (depth || *last_client_op == SIZE_MAX)
			return true;
		for (unsigned i = 0; i < n && p->cli_bytes < CLI_BUDGET; i++) {
			struct rd r2 = { r->p, r->n, *last_client_op };
			size_t dummy = SIZE_MAX;
			run_op(p, &r2, &dummy, depth + 1);
		}
		return true;
	}
	default:    /* OP_SLEEP: a few loop turns only, so pgmux sees a partial stream */
		pump(p, 1 + rd_u8(r) % 4);
		return true;
	}
	*last_client_op = at;
	return true;
}

/* ---- an input, start to end -------------------------------------------------------------- */

static bool backends_up(struct peer *p)
{
	struct list *it;
	for (it = p->w->databases.next; it != &p->w->databases; it = it->next) {
		struct database *db = list_entry(it, struct database, node);
		if (db->be && db->be->state != BE_UP)
			return false;
	}
	return true;
}

static bool clients_waiting(struct peer *p)
{
	struct list *it;
	for (it = p->w->pools.next; it != &p->w->pools; it = it->next) {
		struct pool *pl = list_entry(it, struct pool, node);
		if (pl->n_cl[CL_WAITING] || pl->n_cl[CL_WAITING_LOGIN])
			return true;
		struct list *ci;
		for (ci = pl->cl_active.next; ci != &pl->cl_active; ci = ci->next) {
			struct client *cl = list_entry(ci, struct client, node);
			if (cl->rt && (cl->rt->ryw_server || cl->rt->fo))
				return true;
		}
	}
	return false;
}

/* pgmux's view of its clients and servers, printed with a failure of check_answers. */
static void dump_worker(struct peer *p)
{
	struct list *it, *ci;
	for (it = p->w->pools.next; it != &p->w->pools; it = it->next) {
		struct pool *pl = list_entry(it, struct pool, node);
		struct list *lists[] = { &pl->cl_active, &pl->cl_waiting, &pl->cl_waiting_login };
		for (int l = 0; l < 3; l++) {
			for (ci = lists[l]->next; ci != lists[l]; ci = ci->next) {
				struct client *cl = list_entry(ci, struct client, node);
				struct iobuf *b = cl->c.in;
				fprintf(stderr, "  pgmux C-%llu %s/%s state %d link %s expect_z %u sync_pending %d "
					"in_copy %d unparsed %u pkt_left %u hold %d rd_on %d\n",
					(unsigned long long)cl->c.id, pl->db->name, pl->user->name, cl->state,
					cl->link ? "yes" : "no", cl->tt.expect_z, cl->tt.sync_pending, cl->tt.in_copy,
					b ? b->end - b->scan : 0, cl->c.pkt_left, cl->c.hold, cl->c.rd_on);
			}
		}
		struct list *sl[] = { &pl->sv_login, &pl->sv_idle, &pl->sv_active, &pl->sv_used, &pl->sv_tested };
		for (int l = 0; l < 5; l++) {
			for (ci = sl[l]->next; ci != sl[l]; ci = ci->next) {
				struct server *sv = list_entry(ci, struct server, node);
				struct iobuf *b = sv->c.in;
				fprintf(stderr, "  pgmux S-%llu %s/%s state %d tx %c internal_z %u link %s unparsed %u "
					"out %u wr_on %d rd_on %d\n",
					(unsigned long long)sv->c.id, pl->db->name, pl->user->name, sv->state, sv->tx,
					sv->internal_z, sv->link ? "yes" : "no", b ? b->end - b->scan : 0,
					sv->c.out.len, sv->c.wr_on, sv->c.rd_on);
			}
		}
	}
}

/* With an honest server, every well-behaved client that is still there got exactly one
 * ReadyForQuery for each Sync, Query and FunctionCall it sent. */
static void check_answers(struct peer *p)
{
	if (p->srv_hostile || p->srv_cut || clients_waiting(p))
		return;
	for (int k = 0; k < MAX_CLIENTS; k++) {
		struct fcli *c = &p->cli[k];
		if (c->fd < 0 || c->eof || !c->ready || c->raw || c->inner_bad || c->copy_used ||
		    c->garbled || c->stall_rd || b_avail(&c->out) || b_avail(&c->in))
			continue;
		/* Known pgmux bug (doc/reliability.md, finding 1): the console never reads messages
		 * that came in with the startup packet, so such a console client hangs. */
		if (c->early && strcmp(p->set.dbs[c->db], "pgmux") == 0 && !p->known_bugs)
			continue;
		if (p->set.answers_unchecked_db && strcmp(p->set.dbs[c->db], p->set.answers_unchecked_db) == 0)
			continue;
		if (c->zs != c->syncs && !c->misuse) {
			dump_worker(p);
			fail("C%d is owed %u ReadyForQuery but got %u, and nothing is moving", c->serial,
			     c->syncs, c->zs);
		}
	}
}

/* Sockets the process holds (libFuzzer's own descriptors, such as the symbolizer's pipes, come
 * and go; sockets are all the peer's and pgmux's). */
static int count_sockets(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char path[300], target[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(path, target, sizeof(target) - 1);
		if (k > 7 && memcmp(target, "socket:", 7) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* After every connection is gone, pgmux holds nothing for any of them. */
static void check_empty(struct peer *p)
{
	struct worker *w = p->w;
	if (w->n_clients || w->n_servers || w->n_login || w->n_admin)
		fail("after teardown: %d clients, %d servers, %d logging in, %d console", w->n_clients,
		     w->n_servers, w->n_login, w->n_admin);
	struct list *it;
	for (it = w->pools.next; it != &w->pools; it = it->next) {
		struct pool *pl = list_entry(it, struct pool, node);
		for (int i = 0; i < SV_FREE; i++)
			if (pl->n_sv[i])
				fail("after teardown: pool %s/%s counts %d servers in state %d", pl->db->name,
				     pl->user->name, pl->n_sv[i], i);
		for (int i = 0; i < CL_FREE; i++)
			if (pl->n_cl[i])
				fail("after teardown: pool %s/%s counts %d clients in state %d", pl->db->name,
				     pl->user->name, pl->n_cl[i], i);
	}
	if (w->n_buf_used || w->buf_grown)
		fail("after teardown: %d receive buffers in use, %llu bytes grown", w->n_buf_used,
		     (unsigned long long)w->buf_grown);
	size_t bytes;
	size_t n = peer_ps_cached(w, &bytes);
	if (n || bytes)
		fail("after teardown: %zu prepared statements (%zu bytes) still cached", n, bytes);
	for (uint32_t i = 0; i <= w->cancel_mask; i++)
		if (w->cancel_tab[i])
			fail("after teardown: a cancel key is still registered");
}

struct peer *peer_new(const struct peer_setup *set)
{
	struct peer *p = calloc(1, sizeof(*p));
	if (!p)
		fail("harness out of memory");
	p->set = *set;
	p->known_bugs = peer_known_bugs();
	snprintf(p->dir, sizeof(p->dir), "%s", set->dir);
	for (int k = 0; k < MAX_CLIENTS; k++)
		p->cli[k].fd = -1;
	for (int k = 0; k < MAX_CANCELS; k++)
		p->can[k].fd = -1;
	if (set->n_backends > MAX_LISTEN)
		fail("too many backends");
	for (int i = 0; i < set->n_backends; i++) {
		struct sockaddr_un un = { .sun_family = AF_UNIX };
		snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", set->dir, set->backends[i].port);
		unlink(un.sun_path);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(fd, 256) < 0)
			fail("fake server cannot listen on %s: %s", un.sun_path, strerror(errno));
		p->lfd[p->n_listen++] = fd;
	}
	p->rows = 1;
	return p;
}

void peer_attach(struct peer *p, struct worker *w)
{
	p->w = w;
	/* The monitors of a routed config log in and probe; wait until every backend is up. */
	for (int i = 0; i < 200 && !backends_up(p); i++) {
		pump(p, PUMP_ITERS);
		if (!backends_up(p))
			usleep(20000);
	}
	if (!backends_up(p))
		fail("the routed backends did not come up at start");
	pump(p, PUMP_ITERS);
	p->sockets = count_sockets();
}

/* ASan's live-heap figure, for STREAM_HEAP; weak, so that coverage builds without sanitizers
 * link (the figure is then not printed). */
extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void peer_run(struct peer *p, const uint8_t *data, size_t size)
{
	uint64_t t0 = now_us();
	p->n_inputs++;
	p->err_countdown = 0;
	p->rows = 1;
	p->width = 0;
	p->login_mode = LOGIN_OK;
	p->srv_hostile = p->srv_cut = p->cli_raw = p->cli_inner_bad = p->cli_cut = false;
	p->pgmux_closed = false;
	p->cli_bytes = p->srv_bytes = 0;
	p->turns = 0;
	p->n_keys = 0;
	p->learned[0] = 0;

	struct rd r = { data, size, 0 };
	size_t last = SIZE_MAX;
	while (rd_more(&r) && p->turns < INPUT_ITERS)
		run_op(p, &r, &last, 0);

	/* Everything sent and answered: clients read, the server reads and writes. */
	for (int k = 0; k < MAX_CLIENTS; k++)
		p->cli[k].stall_rd = false;
	for (int i = 0; i < p->n_srv; i++)
		p->srv[i]->stall_rd = p->srv[i]->stall_wr = false;
	pump(p, PUMP_ITERS);
	check_garbled(p);
	check_answers(p);

	/* Every client leaves, then every server connection goes. */
	for (int k = 0; k < MAX_CLIENTS; k++)
		cli_close(p, &p->cli[k]);
	for (int k = 0; k < MAX_CANCELS; k++) {
		if (p->can[k].fd >= 0)
			close(p->can[k].fd);
		p->can[k].fd = -1;
		b_free(&p->can[k].out);
	}
	pump(p, PUMP_ITERS);
	p->teardown = true;
	pump(p, PUMP_ITERS);
	int waits = 0;
	for (; waits < 100 && (!backends_up(p) || p->w->n_servers); waits++) {
		usleep(waits < 5 ? 0 : 10000);
		pump(p, PUMP_ITERS);
	}
	/* A client still counted waits for a server with its reading paused (a full buffer: its
	 * hang-up cannot be seen); the janitor ends it at client_login_timeout or
	 * query_wait_timeout (1 s in the harnesses' configurations). */
	for (int k = 0; k < 250 && p->w->n_clients; k++) {
		usleep(10000);
		pump(p, PUMP_ITERS);
	}
	uint64_t t1 = now_us();
	/* STREAM_SLOW=<ms> names the inputs that take longer (a tuning aid) */
	const char *slow = getenv("STREAM_SLOW");
	if (debug_level() || (slow && t1 - t0 > (uint64_t)atoi(slow) * 1000))
		fprintf(stderr, "input done: %llu us, %ld turns, %d waits, %zu client bytes, %zu server bytes\n",
			(unsigned long long)(t1 - t0), p->turns, waits, p->cli_bytes, p->srv_bytes);
	p->teardown = false;
	check_empty(p);
	/* STREAM_HEAP=<n>: the live heap after every n-th input's teardown (the run's RSS grows
	 * with the sanitizer's caches; this is what pgmux and the peer really hold) */
	const char *heap = getenv("STREAM_HEAP");
	if (heap && atoi(heap) > 0 && p->n_inputs % (unsigned)atoi(heap) == 0 &&
	    __sanitizer_get_current_allocated_bytes)
		fprintf(stderr, "heap after %llu inputs: %zu bytes live\n", p->n_inputs,
			__sanitizer_get_current_allocated_bytes());
	int socks = count_sockets();
	if (socks != p->sockets)
		fail("%d sockets open after the input, %d before: one leaked", socks, p->sockets);
}

struct peer *peer_start(struct worker *w, const char *ini, struct peer_setup *set)
{
	char tmpl[] = "/tmp/pgmux-stream-XXXXXX";
	char *dir = mkdtemp(tmpl);
	if (!dir)
		fail("mkdtemp: %s", strerror(errno));
	/* the config, with @DIR@ replaced by the directory of every socket */
	struct bytes cfg = { 0 };
	for (const char *q = ini; *q;) {
		const char *at = strstr(q, "@DIR@");
		size_t n = at ? (size_t)(at - q) : strlen(q);
		b_put(&cfg, q, n);
		if (!at)
			break;
		b_put(&cfg, dir, strlen(dir));
		q = at + 5;
	}
	char path[300];
	snprintf(path, sizeof(path), "%s/pgmux.ini", dir);
	FILE *f = fopen(path, "w");
	if (!f || fwrite(cfg.p, 1, cfg.len, f) != cfg.len || fclose(f) != 0)
		fail("cannot write %s", path);
	b_free(&cfg);

	/* Quiet logs: an input logs dozens of lines, and stderr is libFuzzer's report. */
	log_open(NULL, false, NULL, NULL, getenv("STREAM_DEBUG") == NULL);
	struct config *cf;
	char err[512];
	if (config_load(path, &cf, err, sizeof(err)) < 0)
		fail("config: %s", err);
	set->dir = strdup(dir);
	struct peer *p = peer_new(set);
	if (pgmux_worker_init(w, cf, path, NULL) < 0)
		fail("pgmux_worker_init failed");
	/* pgmux's signal events would take SIGINT and SIGTERM from libFuzzer (its reports and
	 * time limits); nothing signals pgmux in a fuzz run. */
	for (int i = 0; i < 5; i++)
		event_del(&w->ev_sig[i]);
	peer_attach(p, w);
	return p;
}
