/* config_entries.c: [databases] and [users] entries: their keys, PgBouncer's key=value syntax and
 * libpq URIs, the conninfo each entry connects with (libpq's quoting lives here, once), and
 * copying and comparing entries for reload. */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>

#include "config_int.h"
#include "log.h"

/* ---- [databases] and [users] entries ---------------------------------------------------- */

/* How a connection-string key of an entry is handled. */
enum ekind {
	EK_STR,     /* a string field; empty means unset */
	EK_PORT,    /* 1..65535 */
	EK_COUNT,   /* a non-negative int field */
	EK_MODE,    /* a pool_mode field */
	EK_USEC,    /* an int64_t field in µs, written in seconds (fractions allowed) */
	EK_LATER,   /* PgBouncer has it, pgmux not yet: one warning */
};

struct entry_key {
	const char *name;
	enum ekind kind;
	size_t off;
	bool libpq;             /* also a libpq keyword: goes into conninfo */
	str_check_fn check;
};

#define DBF(f) offsetof(struct cfg_db, f)
static const struct entry_key db_keys[] = {
	{ "host",               EK_STR,   DBF(host),               true,  cf_check_hosts },
	{ "port",               EK_PORT,  DBF(port),               true,  NULL },
	{ "dbname",             EK_STR,   DBF(dbname),             true,  NULL },
	{ "user",               EK_STR,   DBF(user),               true,  NULL },
	{ "password",           EK_STR,   DBF(password),           true,  NULL },
	{ "application_name",   EK_STR,   DBF(application_name),   true,  NULL },
	{ "sslmode",            EK_STR,   DBF(sslmode),            true,  cf_check_sslmode },
	{ "sslrootcert",        EK_STR,   DBF(sslrootcert),        true,  NULL },
	{ "sslcert",            EK_STR,   DBF(sslcert),            true,  NULL },
	{ "sslkey",             EK_STR,   DBF(sslkey),             true,  NULL },
	{ "auth_user",          EK_STR,   DBF(auth_user),          false, NULL },
	{ "auth_query",         EK_STR,   DBF(auth_query),         false, cf_check_auth_query },
	{ "auth_dbname",        EK_STR,   DBF(auth_dbname),        false, NULL },
	{ "connect_query",      EK_STR,   DBF(connect_query),      false, NULL },
	{ "client_encoding",    EK_STR,   DBF(client_encoding),    false, NULL },
	{ "datestyle",          EK_STR,   DBF(datestyle),          false, NULL },
	{ "timezone",           EK_STR,   DBF(timezone),           false, NULL },
	{ "pool_size",          EK_COUNT, DBF(pool_size),          false, NULL },
	{ "min_pool_size",      EK_COUNT, DBF(min_pool_size),      false, NULL },
	{ "reserve_pool",       EK_COUNT, DBF(reserve_pool),       false, NULL },
	{ "reserve_pool_size",  EK_COUNT, DBF(reserve_pool),       false, NULL },
	{ "max_db_connections", EK_COUNT, DBF(max_db_connections), false, NULL },
	{ "max_db_client_connections", EK_COUNT, DBF(max_db_client_connections), false, NULL },
	{ "pool_mode",          EK_MODE,  DBF(pool_mode),          false, NULL },
	{ "weight",             EK_COUNT, DBF(weight),             false, NULL },
	{ "load_balance_hosts", EK_STR,   DBF(load_balance_hosts), false, cf_check_lbh },
	{ "server_lifetime",           EK_USEC,  DBF(server_lifetime),    false, NULL },
	{ "query_wait_timeout",        EK_USEC,  DBF(query_wait_timeout), false, NULL },
};
#undef DBF

#define USF(f) offsetof(struct cfg_user, f)
static const struct entry_key user_keys[] = {
	{ "pool_mode",                   EK_MODE,  USF(pool_mode),            false, NULL },
	{ "max_user_connections",        EK_COUNT, USF(max_user_connections), false, NULL },
	{ "max_user_client_connections", EK_COUNT, USF(max_user_client_connections), false, NULL },
	{ "pool_size",                   EK_COUNT, USF(pool_size),            false, NULL },
	{ "reserve_pool_size",           EK_COUNT, USF(reserve_pool_size),    false, NULL },
	{ "query_timeout",               EK_USEC,  USF(query_timeout),            false, NULL },
	{ "query_wait_timeout",          EK_USEC,  USF(query_wait_timeout),       false, NULL },
	{ "idle_transaction_timeout",    EK_USEC,  USF(idle_transaction_timeout), false, NULL },
	{ "transaction_timeout",         EK_USEC,  USF(transaction_timeout),      false, NULL },
	{ "client_idle_timeout",         EK_USEC,  USF(client_idle_timeout),      false, NULL },
};
#undef USF

/* The string fields of a cfg_db, so that copying, freeing and comparing stay in step. */
static const size_t db_str_fields[] = {
	offsetof(struct cfg_db, name), offsetof(struct cfg_db, host),
	offsetof(struct cfg_db, dbname), offsetof(struct cfg_db, user),
	offsetof(struct cfg_db, password), offsetof(struct cfg_db, auth_user),
	offsetof(struct cfg_db, auth_query), offsetof(struct cfg_db, auth_dbname),
	offsetof(struct cfg_db, connect_query), offsetof(struct cfg_db, client_encoding),
	offsetof(struct cfg_db, datestyle), offsetof(struct cfg_db, timezone),
	offsetof(struct cfg_db, application_name), offsetof(struct cfg_db, sslmode),
	offsetof(struct cfg_db, sslrootcert), offsetof(struct cfg_db, sslcert),
	offsetof(struct cfg_db, sslkey), offsetof(struct cfg_db, conninfo),
	offsetof(struct cfg_db, load_balance_hosts),
	offsetof(struct cfg_db, cluster),
};

static const size_t db_int_fields[] = {
	offsetof(struct cfg_db, port), offsetof(struct cfg_db, pool_size),
	offsetof(struct cfg_db, min_pool_size), offsetof(struct cfg_db, reserve_pool),
	offsetof(struct cfg_db, max_db_connections), offsetof(struct cfg_db, pool_mode),
	offsetof(struct cfg_db, shard), offsetof(struct cfg_db, replica),
	offsetof(struct cfg_db, weight), offsetof(struct cfg_db, max_db_client_connections),
};

#define DB_STR(db, off) (*(char **)((char *)(db) + (off)))
#define DB_INT(db, off) (*(int *)((char *)(db) + (off)))

/* libpq keywords of one entry, in file order; a repeated keyword keeps its first place and
 * its last value, as libpq itself would read the line. */
struct kvlist {
	struct kv {
		char *key, *val;
	} *v;
	size_t n, cap;
};

static void kv_free(struct kvlist *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].key);
		free(l->v[i].val);
	}
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

static bool kv_set(struct kvlist *l, const char *key, const char *val)
{
	char *v = strdup(val);
	if (!v)
		return false;
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].key, key) == 0) {
			free(l->v[i].val);
			l->v[i].val = v;
			return true;
		}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		struct kv *nv = realloc(l->v, cap * sizeof(*nv));
		if (!nv) {
			free(v);
			return false;
		}
		l->v = nv;
		l->cap = cap;
	}
	if (!(l->v[l->n].key = strdup(key))) {
		free(v);
		return false;
	}
	l->v[l->n++].val = v;
	return true;
}

static void kv_del(struct kvlist *l, const char *key)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].key, key) == 0) {
			free(l->v[i].key);
			free(l->v[i].val);
			memmove(&l->v[i], &l->v[i + 1], (l->n - i - 1) * sizeof(l->v[0]));
			l->n--;
			return;
		}
}

void config_put_conninfo_pair(FILE *out, const char *key, const char *val)
{
	fprintf(out, "%s='", key);
	for (const char *p = val; *p; p++) {
		if (*p == '\'' || *p == '\\')
			fputc('\\', out);
		fputc(*p, out);
	}
	fputc('\'', out);
}

static char *build_conninfo(const struct kvlist *l)
{
	char *s = NULL;
	size_t n = 0;
	FILE *out = open_memstream(&s, &n);
	if (!out)
		return NULL;
	for (size_t i = 0; i < l->n; i++) {
		if (i)
			fputc(' ', out);
		config_put_conninfo_pair(out, l->v[i].key, l->v[i].val);
	}
	if (fclose(out) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

/* Entry names may be written as SQL identifiers, "like ""this""", for characters that a bare
 * ini key cannot carry; returns a new string or NULL with why filled. */
char *cf_entry_name(const char *raw, char *why, size_t whylen)
{
	size_t n = strlen(raw);
	if (n == 0) {
		snprintf(why, whylen, "empty name");
		return NULL;
	}
	if (raw[0] != '"')
		return strdup(raw);
	char *out = malloc(n), *o = out;
	if (!out)
		return NULL;
	const char *p = raw + 1;
	for (;;) {
		if (!*p) {
			snprintf(why, whylen, "unterminated quoted name %s", raw);
			free(out);
			return NULL;
		}
		if (*p == '"') {
			if (p[1] != '"')
				break;
			p++;
		}
		*o++ = *p++;
	}
	*o = '\0';
	if (p[1] != '\0' || o == out) {
		snprintf(why, whylen, o == out ? "empty name" : "text after quoted name %s", raw);
		free(out);
		return NULL;
	}
	return out;
}

/* Splits one pair off PgBouncer's "key=value key2='quoted value'" syntax.  Inside quotes, ''
 * (PgBouncer) and \' (libpq) both mean a quote, and \\ a backslash; other backslashes stay,
 * so a value means the same to both.  Returns 1 with a pair (caller frees both), 0 at the end,
 * -1 with why filled. */
static int next_pair(const char **pp, char **key, char **val, char *why, size_t whylen)
{
	const char *p = *pp;
	while (isspace((unsigned char)*p))
		p++;
	if (!*p)
		return 0;
	size_t kn = strcspn(p, "= \t\r\n\f\v");
	if (kn == 0) {
		snprintf(why, whylen, "expected key=value, found \"=\"");
		return -1;
	}
	const char *k = p;
	p += kn;
	while (isspace((unsigned char)*p))
		p++;
	if (*p != '=') {
		snprintf(why, whylen, "missing \"=\" after \"%.*s\"", (int)kn, k);
		return -1;
	}
	p++;
	while (isspace((unsigned char)*p))
		p++;
	char *v = malloc(strlen(p) + 1), *o = v;
	if (!v) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	if (*p == '\'') {
		for (p++;; p++) {
			if (!*p) {
				snprintf(why, whylen, "unterminated quoted value for \"%.*s\"", (int)kn, k);
				free(v);
				return -1;
			}
			if (*p == '\\' && (p[1] == '\'' || p[1] == '\\'))
				p++;
			else if (*p == '\'' && p[1] == '\'')
				p++;
			else if (*p == '\'')
				break;
			*o++ = *p;
		}
		p++;
	} else {
		while (*p && !isspace((unsigned char)*p))
			*o++ = *p++;
	}
	*o = '\0';
	if (!(*key = strndup(k, kn))) {
		free(v);
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	for (char *c = *key; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	*val = v;
	*pp = p;
	return 1;
}

static const struct entry_key *find_entry_key(const struct entry_key *tab, size_t n,
					      const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(tab[i].name, name) == 0)
			return &tab[i];
	return NULL;
}

/* Applies one key of a [databases] or [users] entry to obj.  Keys not in tab go to libpq's
 * list when there is one (databases), and are an error otherwise (users). */
static bool entry_pair(struct cf_parse *ps, const struct entry_key *tab, size_t ntab, void *obj,
		       const char *what, const char *ename, const char *key, const char *val,
		       struct kvlist *libpq)
{
	char why[512];
	const struct entry_key *ek = find_entry_key(tab, ntab, key);
	if (!ek) {
		if (libpq) {
			if (!kv_set(libpq, key, val)) {
				cf_fail(ps, "out of memory");
				return false;
			}
			return true;
		}
		cf_fail(ps, "%s \"%s\": unknown key \"%s\"", what, ename, key);
		return false;
	}
	void *field = (char *)obj + ek->off;
	int64_t n;
	switch (ek->kind) {
	case EK_STR:
		if (ek->check && *val && !ek->check(val, why, sizeof(why))) {
			cf_fail(ps, "%s \"%s\": invalid %s \"%s\": %s", what, ename, key, val, why);
			return false;
		}
		free(*(char **)field);
		*(char **)field = NULL;
		if (!*val)
			break;
		if (!(*(char **)field = strdup(val))) {
			cf_fail(ps, "out of memory");
			return false;
		}
		break;
	case EK_PORT:
	case EK_COUNT:
		if (!cf_parse_int(val, false, ek->kind == EK_PORT ? 1 : 0,
				  ek->kind == EK_PORT ? 65535 : INT32_MAX, &n, why, sizeof(why))) {
			cf_fail(ps, "%s \"%s\": invalid %s \"%s\": %s", what, ename, key, val, why);
			return false;
		}
		*(int *)field = (int)n;
		break;
	case EK_MODE:
		if (!cf_parse_mode(val, (int *)field, why, sizeof(why))) {
			cf_fail(ps, "%s \"%s\": invalid %s \"%s\": %s", what, ename, key, val, why);
			return false;
		}
		break;
	case EK_USEC:
		if (!cf_parse_usec(val, &n, why, sizeof(why))) {
			cf_fail(ps, "%s \"%s\": invalid %s \"%s\": %s", what, ename, key, val, why);
			return false;
		}
		*(int64_t *)field = n;
		break;
	case EK_LATER:
		log_warn("%s:%d: PgBouncer %s key \"%s\" is not supported by pgmux yet; ignored",
			 ps->file, ps->line, what, key);
		return true;
	}
	if (ek->libpq && !*val)
		kv_del(libpq, key);     /* an empty value unsets, here as in the struct */
	else if (ek->libpq && !kv_set(libpq, key, val)) {
		cf_fail(ps, "out of memory");
		return false;
	}
	return true;
}

static bool is_uri(const char *s)
{
	return strncasecmp(s, "postgresql://", 13) == 0 || strncasecmp(s, "postgres://", 11) == 0;
}

/* A libpq URI as the first word of an entry stands for the keywords it encodes. */
static bool db_uri(struct cf_parse *ps, struct cfg_db *db, const char **pp, struct kvlist *libpq)
{
	const char *p = *pp;
	while (isspace((unsigned char)*p))
		p++;
	size_t n = strcspn(p, " \t\r\n\f\v");
	char *uri = strndup(p, n);
	if (!uri) {
		cf_fail(ps, "out of memory");
		return false;
	}
	char *msg = NULL;
	PQconninfoOption *opts = PQconninfoParse(uri, &msg);
	free(uri);
	if (!opts) {
		cf_fail(ps, "database \"%s\": %s", db->name, msg ? cf_trim(msg) : "out of memory");
		PQfreemem(msg);
		return false;
	}
	bool ok = true;
	for (PQconninfoOption *o = opts; ok && o->keyword; o++)
		if (o->val)
			ok = entry_pair(ps, db_keys, ARRAY_LEN(db_keys), db, "database", db->name,
					o->keyword, o->val, libpq);
	PQconninfoFree(opts);
	*pp = p + n;
	return ok;
}

bool cf_parse_db_value(struct cf_parse *ps, struct cfg_db *db, const char *value)
{
	struct kvlist libpq = { 0 };
	char why[512];
	const char *p = value;
	bool ok = true;
	while (isspace((unsigned char)*p))
		p++;
	if (is_uri(p))
		ok = db_uri(ps, db, &p, &libpq);
	while (ok) {
		char *key, *val;
		int r = next_pair(&p, &key, &val, why, sizeof(why));
		if (r == 0)
			break;
		if (r < 0) {
			cf_fail(ps, "database \"%s\": %s", db->name, why);
			ok = false;
			break;
		}
		ok = entry_pair(ps, db_keys, ARRAY_LEN(db_keys), db, "database", db->name, key, val,
				&libpq);
		free(key);
		free(val);
	}
	if (ok && db->port < 0) {
		db->port = 5432;
		char port[8];
		snprintf(port, sizeof(port), "%d", db->port);
		if (!kv_set(&libpq, "port", port)) {
			cf_fail(ps, "out of memory");
			ok = false;
		}
	}
	if (ok && !(db->conninfo = build_conninfo(&libpq))) {
		cf_fail(ps, "out of memory");
		ok = false;
	}
	/* libpq has the last word on its own keywords, so a typo gets libpq's message. */
	if (ok) {
		char *msg = NULL;
		PQconninfoOption *opts = PQconninfoParse(db->conninfo, &msg);
		if (!opts) {
			cf_fail(ps, "database \"%s\": %s", db->name, msg ? cf_trim(msg) : "out of memory");
			ok = false;
		}
		PQconninfoFree(opts);
		PQfreemem(msg);
	}
	kv_free(&libpq);
	return ok;
}

/* The console answers on these names; an entry would hide it. */
static const char *const reserved_db_names[] = { "pgmux", "pgbouncer" };

bool cf_reserved_db_name(const char *name)
{
	return cf_in_list(reserved_db_names, ARRAY_LEN(reserved_db_names), name);
}

/* A new entry linked into the list (so config_free owns it whatever happens next); takes
 * name.  NULL, with the error recorded, for a name already taken. */
struct cfg_db *cf_new_db_entry(struct cf_parse *ps, char *name)
{
	for (const struct cfg_db *d = ps->cf->dbs; d; d = d->next)
		if (strcmp(d->name, name) == 0) {
			cf_fail(ps, "database \"%s\" is already defined on line %d", name, d->line);
			free(name);
			return NULL;
		}
	struct cfg_db *db = calloc(1, sizeof(*db));
	if (!db) {
		free(name);
		cf_fail(ps, "out of memory");
		return NULL;
	}
	db->name = name;
	db->line = ps->line;
	for (size_t i = 0; i < ARRAY_LEN(db_int_fields); i++)
		DB_INT(db, db_int_fields[i]) = -1;
	*ps->db_tail = db;
	ps->db_tail = &db->next;
	return db;
}

bool cf_add_db(struct cf_parse *ps, const char *rawname, const char *value)
{
	char why[512];
	char *name = cf_entry_name(rawname, why, sizeof(why));
	if (!name) {
		cf_fail(ps, "database name: %s", why);
		return false;
	}
	if (cf_reserved_db_name(name)) {
		cf_fail(ps, "database name \"%s\" is reserved for the admin console", name);
		free(name);
		return false;
	}
	struct cfg_db *db = cf_new_db_entry(ps, name);
	if (!db || !cf_parse_db_value(ps, db, value))
		return false;
	if (db->weight >= 0) {
		cf_fail(ps, "database \"%s\": weight applies only to replica lines of a "
			"[database %s] section", db->name, db->name);
		return false;
	}
	return true;
}

bool cf_add_user(struct cf_parse *ps, const char *rawname, const char *value)
{
	char why[512];
	char *name = cf_entry_name(rawname, why, sizeof(why));
	if (!name) {
		cf_fail(ps, "user name: %s", why);
		return false;
	}
	for (const struct cfg_user *u = ps->cf->users; u; u = u->next)
		if (strcmp(u->name, name) == 0) {
			cf_fail(ps, "user \"%s\" is already defined on line %d", name, u->line);
			free(name);
			return false;
		}
	struct cfg_user *u = calloc(1, sizeof(*u));
	if (!u) {
		free(name);
		cf_fail(ps, "out of memory");
		return false;
	}
	u->name = name;
	u->line = ps->line;
	u->pool_mode = u->max_user_connections = u->max_user_client_connections = -1;
	u->pool_size = u->reserve_pool_size = -1;
	*ps->user_tail = u;
	ps->user_tail = &u->next;

	const char *p = value;
	for (;;) {
		char *key, *val;
		int r = next_pair(&p, &key, &val, why, sizeof(why));
		if (r == 0)
			return true;
		if (r < 0) {
			cf_fail(ps, "user \"%s\": %s", u->name, why);
			return false;
		}
		bool ok = entry_pair(ps, user_keys, ARRAY_LEN(user_keys), u, "user", u->name, key,
				     val, NULL);
		free(key);
		free(val);
		if (!ok)
			return false;
	}
}

/* ---- copies of entries ------------------------------------------------------------------ */

void config_db_free(struct cfg_db *db)
{
	if (!db)
		return;
	for (size_t i = 0; i < ARRAY_LEN(db_str_fields); i++)
		free(DB_STR(db, db_str_fields[i]));
	free(db);
}

struct cfg_db *config_db_dup(const struct cfg_db *db)
{
	struct cfg_db *c = malloc(sizeof(*c));
	if (!c)
		return NULL;
	*c = *db;
	c->next = NULL;
	bool ok = true;
	for (size_t i = 0; i < ARRAY_LEN(db_str_fields); i++) {
		const char *s = DB_STR(db, db_str_fields[i]);
		DB_STR(c, db_str_fields[i]) = s && ok ? strdup(s) : NULL;
		if (s && !DB_STR(c, db_str_fields[i]))
			ok = false;
	}
	if (!ok) {
		config_db_free(c);
		return NULL;
	}
	return c;
}

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

bool config_db_equal(const struct cfg_db *a, const struct cfg_db *b)
{
	for (size_t i = 0; i < ARRAY_LEN(db_str_fields); i++)
		if (db_str_fields[i] != offsetof(struct cfg_db, name) &&
		    !same_str(DB_STR(a, db_str_fields[i]), DB_STR(b, db_str_fields[i])))
			return false;
	for (size_t i = 0; i < ARRAY_LEN(db_int_fields); i++)
		if (DB_INT(a, db_int_fields[i]) != DB_INT(b, db_int_fields[i]))
			return false;
	return a->server_lifetime == b->server_lifetime &&
	       a->query_wait_timeout == b->query_wait_timeout;
}
