/* hba.c: PgBouncer's auth_hba_file and auth_ident_file: parsing and rule matching, pure (no connection, no event loop). */
#include "hba.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* One name of a list: quoted names are never keywords. */
struct name {
	char *s;
	bool quoted;
};

struct names {
	struct name *v;
	int n;
};

enum conn_type { CT_LOCAL, CT_HOST, CT_HOSTSSL, CT_HOSTNOSSL };

struct rule {
	int line;
	enum conn_type type;
	struct names db, user;
	bool addr_all;
	int family;
	uint8_t addr[16], mask[16];
	enum hba_method method;
	char *map;
};

struct hba {
	struct rule *v;
	int n, cap;
};

struct ident_entry {
	char *map, *sys, *pg;
	bool pg_all;
};

struct ident {
	struct ident_entry *v;
	int n, cap;
};

static const char *const method_names[] = {
	[HBA_TRUST] = "trust", [HBA_REJECT] = "reject", [HBA_MD5] = "md5",
	[HBA_PASSWORD] = "password", [HBA_SCRAM] = "scram-sha-256", [HBA_PEER] = "peer",
	[HBA_CERT] = "cert",
};

const char *hba_method_name(enum hba_method m)
{
	return (unsigned)m < sizeof(method_names) / sizeof(method_names[0]) ? method_names[m] : "?";
}

/* ---- the line reader ------------------------------------------------------------------- */

struct lexer {
	const char *p, *end;        /* the rest of the current line */
	int line;
	char *err;
	size_t errlen;
};

static bool fail(struct lexer *lx, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(lx->err, lx->errlen, "line %d: %s", lx->line, msg);
	return false;
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

static void skip_ws(struct lexer *lx)
{
	while (lx->p < lx->end && is_ws(*lx->p))
		lx->p++;
}

/* True when the line has no more fields (its end, or a comment). */
static bool at_end(struct lexer *lx)
{
	skip_ws(lx);
	return lx->p >= lx->end || *lx->p == '#';
}

static void names_free(struct names *n)
{
	for (int i = 0; i < n->n; i++)
		free(n->v[i].s);
	free(n->v);
	n->v = NULL;
	n->n = 0;
}

/* One name: "quoted" (a doubled quote is a quote) or bare up to a blank, a comma or '#'. */
static bool read_name(struct lexer *lx, struct name *out)
{
	char buf[HBA_MAX_NAME + 1];
	size_t n = 0;
	out->quoted = false;
	if (lx->p < lx->end && *lx->p == '"') {
		out->quoted = true;
		lx->p++;
		for (;;) {
			if (lx->p >= lx->end)
				return fail(lx, "unterminated quoted name");
			char c = *lx->p++;
			if (c == '"') {
				if (lx->p < lx->end && *lx->p == '"')
					lx->p++;
				else
					break;
			}
			if (n == HBA_MAX_NAME)
				return fail(lx, "a name is longer than %d bytes", HBA_MAX_NAME);
			buf[n++] = c;
		}
	} else {
		while (lx->p < lx->end && !is_ws(*lx->p) && *lx->p != ',' && *lx->p != '#') {
			if (*lx->p == '"')
				return fail(lx, "a quote inside a name");
			if (n == HBA_MAX_NAME)
				return fail(lx, "a name is longer than %d bytes", HBA_MAX_NAME);
			buf[n++] = *lx->p++;
		}
		if (!n)
			return fail(lx, "an empty name");
	}
	buf[n] = '\0';
	if (!(out->s = strdup(buf)))
		return fail(lx, "out of memory");
	return true;
}

/* A field: one name, or a comma list of them (blanks around the commas allowed). */
static bool read_list(struct lexer *lx, struct names *out, const char *what)
{
	if (at_end(lx))
		return fail(lx, "%s missing", what);
	for (;;) {
		if (out->n >= 10000)
			return fail(lx, "too many names in one %s list", what);
		struct name *v = realloc(out->v, (size_t)(out->n + 1) * sizeof(*v));
		if (!v)
			return fail(lx, "out of memory");
		out->v = v;
		if (!read_name(lx, &out->v[out->n]))
			return false;
		out->n++;
		skip_ws(lx);
		if (lx->p < lx->end && *lx->p == ',') {
			lx->p++;
			skip_ws(lx);
			if (at_end(lx))
				return fail(lx, "a %s list ends with a comma", what);
			continue;
		}
		return true;
	}
}

/* A bare word (a type, an address, a method, an option). */
static bool read_word(struct lexer *lx, char *buf, size_t len, const char *what)
{
	if (at_end(lx))
		return fail(lx, "%s missing", what);
	size_t n = 0;
	while (lx->p < lx->end && !is_ws(*lx->p) && *lx->p != '#') {
		if (n + 1 >= len)
			return fail(lx, "%s is too long", what);
		buf[n++] = *lx->p++;
	}
	buf[n] = '\0';
	return true;
}

/* ---- addresses --------------------------------------------------------------------------- */

static bool parse_ip(const char *s, int *family, uint8_t addr[16])
{
	memset(addr, 0, 16);
	if (inet_pton(AF_INET, s, addr) == 1) {
		*family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, s, addr) == 1) {
		*family = AF_INET6;
		return true;
	}
	return false;
}

static void prefix_mask(uint8_t mask[16], int bits)
{
	memset(mask, 0, 16);
	for (int i = 0; i < 16 && bits > 0; i++, bits -= 8)
		mask[i] = bits >= 8 ? 0xff : (uint8_t)(0xff << (8 - bits));
}

static bool read_address(struct lexer *lx, struct rule *r)
{
	char word[128];
	if (!read_word(lx, word, sizeof(word), "address"))
		return false;
	if (strcmp(word, "all") == 0) {
		r->addr_all = true;
		return true;
	}
	char *slash = strchr(word, '/');
	if (slash) {
		*slash = '\0';
		char *end;
		errno = 0;
		long bits = strtol(slash + 1, &end, 10);
		if (!parse_ip(word, &r->family, r->addr))
			return fail(lx, "invalid address \"%s\" (host names, samehost and samenet are not supported)", word);
		int max = r->family == AF_INET ? 32 : 128;
		if (end == slash + 1 || *end || errno || bits < 0 || bits > max)
			return fail(lx, "invalid prefix length \"%s\"", slash + 1);
		prefix_mask(r->mask, (int)bits);
	} else {
		if (!parse_ip(word, &r->family, r->addr))
			return fail(lx, "invalid address \"%s\" (host names, samehost and samenet are not supported)", word);
		int fam;
		if (!read_word(lx, word, sizeof(word), "netmask"))
			return false;
		if (!parse_ip(word, &fam, r->mask) || fam != r->family)
			return fail(lx, "invalid netmask \"%s\"", word);
	}
	for (int i = 0; i < 16; i++)
		r->addr[i] &= r->mask[i];
	return true;
}

/* ---- rules -------------------------------------------------------------------------------- */

static void rule_free(struct rule *r)
{
	names_free(&r->db);
	names_free(&r->user);
	free(r->map);
}

static bool check_names(struct lexer *lx, const struct names *n, const char *what)
{
	for (int i = 0; i < n->n; i++) {
		const struct name *m = &n->v[i];
		if (!m->quoted && (m->s[0] == '@' || m->s[0] == '+' || m->s[0] == '/'))
			return fail(lx, "%s \"%s\": include files, groups and regular expressions are not "
				    "supported", what, m->s);
	}
	return true;
}

static bool parse_rule(struct lexer *lx, struct rule *r)
{
	char word[128];
	if (!read_word(lx, word, sizeof(word), "connection type"))
		return false;
	if (strcmp(word, "local") == 0)
		r->type = CT_LOCAL;
	else if (strcmp(word, "host") == 0)
		r->type = CT_HOST;
	else if (strcmp(word, "hostssl") == 0)
		r->type = CT_HOSTSSL;
	else if (strcmp(word, "hostnossl") == 0)
		r->type = CT_HOSTNOSSL;
	else
		return fail(lx, "invalid connection type \"%s\"", word);
	if (!read_list(lx, &r->db, "database") || !check_names(lx, &r->db, "database") ||
	    !read_list(lx, &r->user, "user") || !check_names(lx, &r->user, "user"))
		return false;
	if (r->type != CT_LOCAL && !read_address(lx, r))
		return false;
	if (!read_word(lx, word, sizeof(word), "authentication method"))
		return false;
	bool found = false;
	for (size_t i = 0; i < sizeof(method_names) / sizeof(method_names[0]); i++)
		if (strcmp(word, method_names[i]) == 0) {
			r->method = (enum hba_method)i;
			found = true;
		}
	if (!found)
		return fail(lx, "invalid or unsupported authentication method \"%s\"", word);
	if (r->method == HBA_PEER && r->type != CT_LOCAL)
		return fail(lx, "peer is only for local connections");
	if (r->method == HBA_CERT && r->type == CT_LOCAL)
		return fail(lx, "cert is not for local connections");
	while (!at_end(lx)) {
		/* An option pgmux does not know might tighten the rule (clientcert=...): refused,
		 * never dropped. */
		if (!read_word(lx, word, sizeof(word), "option"))
			return false;
		if (strncmp(word, "map=", 4) != 0 || !word[4])
			return fail(lx, "unsupported option \"%s\" (only map=NAME)", word);
		if (r->method != HBA_PEER && r->method != HBA_CERT)
			return fail(lx, "map= is only for peer and cert");
		free(r->map);
		if (!(r->map = strdup(word + 4)))
			return fail(lx, "out of memory");
	}
	return true;
}

/* Calls each(lx, arg) for each line with a field; the lexer holds the line. */
static int each_line(const char *text, size_t len, char *err, size_t errlen,
		     bool (*each)(struct lexer *lx, void *arg), void *arg)
{
	if (memchr(text, '\0', len)) {
		snprintf(err, errlen, "the file holds a NUL byte");
		return -1;
	}
	struct lexer lx = { .err = err, .errlen = errlen };
	const char *p = text, *end = text + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		lx.line++;
		lx.p = p;
		lx.end = le;
		if (!at_end(&lx) && !each(&lx, arg))
			return -1;
		p = nl ? nl + 1 : end;
	}
	return 0;
}

static bool add_rule(struct lexer *lx, void *arg)
{
	struct hba *h = arg;
	if (h->n == h->cap) {
		int cap = h->cap ? h->cap * 2 : 16;
		struct rule *v = realloc(h->v, (size_t)cap * sizeof(*v));
		if (!v)
			return fail(lx, "out of memory");
		h->v = v;
		h->cap = cap;
	}
	struct rule *r = &h->v[h->n];
	memset(r, 0, sizeof(*r));
	r->line = lx->line;
	if (!parse_rule(lx, r)) {
		rule_free(r);
		return false;
	}
	h->n++;
	return true;
}

int hba_parse(const char *text, size_t len, struct hba **out, char *err, size_t errlen)
{
	struct hba *h = calloc(1, sizeof(*h));
	*out = NULL;
	if (!h) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (each_line(text, len, err, errlen, add_rule, h) < 0) {
		hba_free(h);
		return -1;
	}
	*out = h;
	return 0;
}

void hba_free(struct hba *h)
{
	if (!h)
		return;
	for (int i = 0; i < h->n; i++)
		rule_free(&h->v[i]);
	free(h->v);
	free(h);
}

int hba_count(const struct hba *h)
{
	return h ? h->n : 0;
}

static bool db_matches(const struct names *n, const struct hba_peer *p)
{
	for (int i = 0; i < n->n; i++) {
		const struct name *m = &n->v[i];
		if (!m->quoted && strcmp(m->s, "replication") == 0) {
			if (p->replication)
				return true;
			continue;
		}
		if (p->replication)   /* only the keyword admits a replication connection */
			continue;
		if (!m->quoted && strcmp(m->s, "all") == 0)
			return true;
		if (!m->quoted && strcmp(m->s, "sameuser") == 0) {
			if (strcmp(p->db, p->user) == 0)
				return true;
			continue;
		}
		if (strcmp(m->s, p->db) == 0)
			return true;
	}
	return false;
}

static bool user_matches(const struct names *n, const char *user)
{
	for (int i = 0; i < n->n; i++) {
		const struct name *m = &n->v[i];
		if ((!m->quoted && strcmp(m->s, "all") == 0) || strcmp(m->s, user) == 0)
			return true;
	}
	return false;
}

static bool addr_matches(const struct rule *r, const struct hba_peer *p)
{
	if (r->addr_all)
		return true;
	if (r->family != p->family)
		return false;
	int n = r->family == AF_INET ? 4 : 16;
	for (int i = 0; i < n; i++)
		if ((p->addr[i] & r->mask[i]) != r->addr[i])
			return false;
	return true;
}

bool hba_eval(const struct hba *h, const struct hba_peer *p, struct hba_rule_info *out)
{
	for (int i = 0; h && i < h->n; i++) {
		const struct rule *r = &h->v[i];
		if (r->type == CT_LOCAL ? !p->is_unix : p->is_unix)
			continue;
		if ((r->type == CT_HOSTSSL && !p->tls) || (r->type == CT_HOSTNOSSL && p->tls))
			continue;
		if (r->type != CT_LOCAL && !addr_matches(r, p))
			continue;
		if (!db_matches(&r->db, p) || !user_matches(&r->user, p->user))
			continue;
		out->method = r->method;
		out->map = r->map;
		out->line = r->line;
		return true;
	}
	return false;
}

/* ---- ident maps --------------------------------------------------------------------------- */

static bool add_ident(struct lexer *lx, void *arg)
{
	struct ident *id = arg;
	struct name f[3] = { 0 };
	const char *what[3] = { "map name", "system user name", "database user name" };
	for (int i = 0; i < 3; i++) {
		bool ok = at_end(lx) ? fail(lx, "%s missing", what[i]) : read_name(lx, &f[i]);
		if (!ok) {
			for (int j = 0; j <= i; j++)
				free(f[j].s);
			return false;
		}
	}
	if (!at_end(lx)) {
		for (int j = 0; j < 3; j++)
			free(f[j].s);
		return fail(lx, "more than three fields");
	}
	if (id->n == id->cap) {
		int cap = id->cap ? id->cap * 2 : 16;
		struct ident_entry *v = realloc(id->v, (size_t)cap * sizeof(*v));
		if (!v) {
			for (int j = 0; j < 3; j++)
				free(f[j].s);
			return fail(lx, "out of memory");
		}
		id->v = v;
		id->cap = cap;
	}
	struct ident_entry *e = &id->v[id->n++];
	e->map = f[0].s;
	e->sys = f[1].s;
	e->pg = f[2].s;
	e->pg_all = !f[2].quoted && strcmp(f[2].s, "all") == 0;
	return true;
}

int ident_parse(const char *text, size_t len, struct ident **out, char *err, size_t errlen)
{
	struct ident *id = calloc(1, sizeof(*id));
	*out = NULL;
	if (!id) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (each_line(text, len, err, errlen, add_ident, id) < 0) {
		ident_free(id);
		return -1;
	}
	*out = id;
	return 0;
}

void ident_free(struct ident *id)
{
	if (!id)
		return;
	for (int i = 0; i < id->n; i++) {
		free(id->v[i].map);
		free(id->v[i].sys);
		free(id->v[i].pg);
	}
	free(id->v);
	free(id);
}

bool ident_match(const struct ident *id, const char *map, const char *sys, const char *pg_user)
{
	for (int i = 0; id && map && i < id->n; i++) {
		const struct ident_entry *e = &id->v[i];
		if (strcmp(e->map, map) == 0 && strcmp(e->sys, sys) == 0 &&
		    (e->pg_all || strcmp(e->pg, pg_user) == 0))
			return true;
	}
	return false;
}

/* ---- files -------------------------------------------------------------------------------- */

static int read_file(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	char *buf = malloc(HBA_MAX_FILE + 1);
	size_t n = buf ? fread(buf, 1, HBA_MAX_FILE + 1, f) : 0;
	bool bad = ferror(f);
	fclose(f);
	if (!buf || bad) {
		free(buf);
		snprintf(err, errlen, "%s: %s", path, buf ? "read error" : "out of memory");
		return -1;
	}
	if (n > HBA_MAX_FILE) {
		free(buf);
		snprintf(err, errlen, "%s: larger than %d bytes", path, HBA_MAX_FILE);
		return -1;
	}
	*text = buf;
	*len = n;
	return 0;
}

int hba_load(const char *path, struct hba **out, char *err, size_t errlen)
{
	char *text, why[300];
	size_t len;
	*out = NULL;
	if (read_file(path, &text, &len, err, errlen) < 0)
		return -1;
	int rc = hba_parse(text, len, out, why, sizeof(why));
	free(text);
	if (rc < 0)
		snprintf(err, errlen, "%s: %s", path, why);
	return rc;
}

int ident_load(const char *path, struct ident **out, char *err, size_t errlen)
{
	char *text, why[300];
	size_t len;
	*out = NULL;
	if (read_file(path, &text, &len, err, errlen) < 0)
		return -1;
	int rc = ident_parse(text, len, out, why, sizeof(why));
	free(text);
	if (rc < 0)
		snprintf(err, errlen, "%s: %s", path, why);
	return rc;
}
