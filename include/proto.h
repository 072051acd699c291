/* proto.h: PostgreSQL v3 wire-protocol framing: building pgmux's own messages and parsing the few it reads. */
#ifndef PGMUX_PROTO_H
#define PGMUX_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_V3           196608     /* 3.0 */
#define PROTO_CANCEL_CODE  80877102
#define PROTO_SSL_CODE     80877103
#define PROTO_GSSENC_CODE  80877104
#define PROTO_MAX_STARTUP  10000      /* PostgreSQL's own cap on a startup packet */
#define PROTO_HDR          5          /* type byte + int32 length */

static inline uint32_t proto_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void proto_put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* A growable byte buffer for messages pgmux writes itself (never for forwarded traffic).
 * Owner: the connection it is queued on.  `sent` counts bytes already written to the socket. */
struct pktbuf {
	uint8_t *data;
	uint32_t len, cap, sent;
	uint32_t msg_start;      /* offset of the message being built */
	bool failed;             /* allocation failed or a length cap was hit */
};

void pktbuf_free(struct pktbuf *pb);
void pktbuf_reset(struct pktbuf *pb);
void pktbuf_put(struct pktbuf *pb, const void *data, size_t len);
void pktbuf_put_u8(struct pktbuf *pb, uint8_t v);
void pktbuf_put_u16(struct pktbuf *pb, uint16_t v);
void pktbuf_put_u32(struct pktbuf *pb, uint32_t v);
void pktbuf_put_str(struct pktbuf *pb, const char *s);      /* with its NUL */
/* Starts a message of `type` (0 for the untyped startup/cancel packets); end fills the length. */
void pktbuf_begin(struct pktbuf *pb, char type);
void pktbuf_end(struct pktbuf *pb);

/* Whole messages. */
void proto_error(struct pktbuf *pb, const char *severity, const char *sqlstate, const char *msg);
/* The same with a DETAIL field (NULL: none). */
void proto_error_detail(struct pktbuf *pb, const char *severity, const char *sqlstate, const char *msg,
			const char *detail);
void proto_notice(struct pktbuf *pb, const char *sqlstate, const char *msg);
void proto_auth_request(struct pktbuf *pb, uint32_t code, const void *data, size_t len);
void proto_param_status(struct pktbuf *pb, const char *key, const char *val);
void proto_backend_key(struct pktbuf *pb, uint32_t pid, uint32_t key);
void proto_ready(struct pktbuf *pb, char status);
void proto_query(struct pktbuf *pb, const char *sql);
void proto_terminate(struct pktbuf *pb);
void proto_cancel_request(struct pktbuf *pb, uint32_t pid, uint32_t key);

/* A parsed StartupMessage: pointers into the caller's buffer, which must outlive it. */
#define PROTO_MAX_PARAMS 64
struct startup {
	uint32_t version;
	int nparams;
	const char *key[PROTO_MAX_PARAMS];
	const char *val[PROTO_MAX_PARAMS];
};

/* Parses the body of a startup packet (after the length word: version + key/value pairs).
 * The body must end in the terminating NUL.  Returns 0, or -1 with err describing the fault. */
int proto_parse_startup(const uint8_t *body, size_t len, struct startup *out, char *err, size_t errlen);

/* The error text for an `options` startup parameter that is not a list of settings
 * (PgBouncer's words: clients and scripts match them). */
#define PROTO_OPTIONS_BAD "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"

/* Walks the `options` startup parameter as PostgreSQL splits it (whitespace separates words,
 * a backslash takes the next character literally) and calls fn for each setting written
 * "-c name=value", "-cname=value" or "--name=value" ('-' in a name reads as '_').  Returns 0;
 * -1 when the text holds anything else (err is PROTO_OPTIONS_BAD), or when fn returned < 0
 * (fn wrote err), or out of memory. */
int proto_options_each(const char *opts, int (*fn)(void *arg, const char *name, const char *val),
		       void *arg, char *err, size_t errlen);

/* Reads a NUL-terminated string from [*p, end); NULL when there is no terminator. */
const char *proto_get_str(const uint8_t **p, const uint8_t *end);

/* Finds field `code` (e.g. 'C' for SQLSTATE, 'M' for message) of an ErrorResponse/NoticeResponse
 * body; returns "" when absent, or when body is NULL (a message too large to read). */
const char *proto_error_field(const uint8_t *body, size_t len, char code);

/* Escapes `val` as an SQL string literal into out ('...' with quotes doubled); false if too long. */
bool proto_quote_literal(const char *val, char *out, size_t outlen);

/* The longest frontend message of a type that PostgreSQL accepts (its length field): 10000
 * for the small control messages, just under 1 GB for Query, Parse, Bind, FunctionCall,
 * CopyData and the password/SASL messages (postgres.c, PQ_*_MESSAGE_LIMIT). */
static inline uint32_t proto_max_msg_len(char type)
{
	switch (type) {
	case 'C': case 'D': case 'E': case 'H': case 'S': case 'X': case 'c': case 'f':
		return 10000;
	default:
		return 0x3fffffffu - 1;
	}
}

/* Bind messages (m: the header, then avail bytes of it).  The offset just past the statement
 * name's NUL, or 0 while the portal and statement names are not both within avail. */
uint32_t proto_bind_names_end(const uint8_t *m, uint32_t avail);
/* How much of a Bind of `total` bytes to hold to read its names: their end when they are in
 * the avail bytes; otherwise more (doubling, at least `step` more), at most total. */
uint32_t proto_bind_need(const uint8_t *m, uint32_t total, uint32_t avail, uint32_t step);

/* The session parameters pgmux keeps in step between a client and the servers it borrows. */
#define VAR_LIST(X) \
	X(VAR_CLIENT_ENCODING, "client_encoding") \
	X(VAR_DATESTYLE, "DateStyle") \
	X(VAR_TIMEZONE, "TimeZone") \
	X(VAR_INTERVALSTYLE, "IntervalStyle") \
	X(VAR_STD_STRINGS, "standard_conforming_strings") \
	X(VAR_APPNAME, "application_name")
enum var_id {
#define VAR_ENUM(id, name) id,
	VAR_LIST(VAR_ENUM)
#undef VAR_ENUM
	VAR_COUNT
};
#define VAR_MAX_LEN 128

/* Values are interned in a per-worker table, so that comparing a client's parameters with a
 * server's (on every link in transaction mode) is six pointer compares, and ten thousand
 * clients with the same TimeZone hold one copy of it. */
struct vstr {
	struct vstr *next;
	uint32_t refs, hash;
	char s[];
};

#define VTAB_BUCKETS 256
struct vtab {
	struct vstr *bucket[VTAB_BUCKETS];
	size_t count;
};

/* One interned value per tracked parameter; NULL means unknown. */
struct varcache {
	struct vstr *val[VAR_COUNT];
};

/* Index of a tracked parameter (case-insensitive), or -1. */
int varcache_lookup(const char *name);
const char *varcache_name(int id);
/* Sets a value (capped at VAR_MAX_LEN); false on allocation failure. */
bool varcache_set(struct vtab *t, struct varcache *vc, int id, const char *val);
/* The value as text, or NULL. */
static inline const char *varcache_get(const struct varcache *vc, int id)
{
	return vc->val[id] ? vc->val[id]->s : NULL;
}
void varcache_clear(struct vtab *t, struct varcache *vc);
/* Writes into pb one simple Query that makes `server` match `client` ("SET a='x';SET b='y';");
 * returns false (writing nothing) when they already match.  Unknown client values are skipped. */
bool varcache_apply(const struct varcache *client, const struct varcache *server, struct pktbuf *pb);

#endif
