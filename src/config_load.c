/* config_load.c: reads a PgBouncer-compatible ini file into a config snapshot: the general key
 * table (CONFIG_KEYS) and its values, the line reader and section dispatch, the whole-file
 * checks and access to the snapshot.  [databases]/[users] entries are in config_entries.c,
 * [database X] sections in config_cluster.c, the value parsers, cf_fail_at and cf_trim in
 * config_values.c.  config.h is the whole family's header (the snapshot's types and the API of
 * all four files), not this file's alone: the files below include it for the types. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "config_int.h"
#include "log.h"
#include "sqlscan.h"

/* inih's line buffer; a [databases] line with a long password and TLS paths must fit. */
#define CF_MAX_LINE 16384

/* ---- the general key table -------------------------------------------------------------- */

struct key_desc {
	const char *name;
	const char *def;
	enum cf_kind kind;
	bool changeable;
	size_t off;
};

#define CF_DESC(kind, name, def, chg) { #name, def, kind, chg, offsetof(struct config, name) },
static const struct key_desc key_table[] = { CONFIG_KEYS(CF_DESC) };
#undef CF_DESC
#define N_KEYS ARRAY_LEN(key_table)
_Static_assert(N_KEYS == CF_N_KEYS, "CF_N_KEYS counts CONFIG_KEYS");

/* Narrower limits than the kind's default (0 .. INT32_MAX), and notations, per key.  Ranges
 * follow what PgBouncer refuses or what cannot work (a port, a mode, a buffer too small to
 * hold a startup packet header and then some). */
static const struct key_rule {
	const char *name;
	int64_t min, max;
	bool octal;
	str_check_fn check;
} key_rules[] = {
	{ "listen_port",       1,   65535,     false, NULL },
	{ "unix_socket_mode",  0,   0777,      true,  NULL },
	{ "listen_backlog",    1,   INT32_MAX, false, NULL },
	{ "max_client_conn",   1,   INT32_MAX, false, NULL },
	/* any size PgBouncer takes (its tests use 75); pgmux's buffers never go below 16 kB */
	{ "pkt_buf",           1,   INT32_MAX, false, NULL },
	{ "max_packet_size",   1,   INT32_MAX, false, NULL },
	/* below 64 kB a client could not even send a long prepared-statement name */
	{ "max_client_memory", 65536, INT32_MAX, false, NULL },
	{ "max_prepared_statement_memory", 65536, INT64_MAX / 2, false, NULL },
	{ "syslog_facility",   0,   0,         false, cf_check_facility },
	{ "stats_listen",      0,   0,         false, cf_check_listen },
	{ "client_tls_sslmode", 0,  0,         false, cf_check_sslmode },
	{ "client_tls_protocols", 0, 0,        false, cf_check_tls_protocols },
	{ "client_tls_dheparams", 0, 0,        false, cf_check_dheparams },
	{ "server_tls_sslmode", 0,  0,         false, cf_check_sslmode },
	{ "server_tls_protocols", 0, 0,        false, cf_check_tls_protocols },
	{ "auth_dbname",       0,   0,         false, cf_check_auth_dbname },
	{ "auth_query",        0,   0,         false, cf_check_auth_query },
};

static const struct key_rule default_rule = { NULL, 0, INT32_MAX, false, NULL };

static const struct key_rule *rule_for(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(key_rules); i++)
		if (strcmp(key_rules[i].name, name) == 0)
			return &key_rules[i];
	return &default_rule;
}

static const struct key_desc *find_key(const char *name)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (strcasecmp(key_table[i].name, name) == 0)
			return &key_table[i];
	return NULL;
}

/* ---- PgBouncer keys that pgmux accepts but does not act on yet ------------------------- */

/* Most are harmless to ignore with a warning.  The few whose silent absence would weaken
 * security (TLS the admin asked for, dropping root) carry a check that refuses values pgmux
 * cannot honour; keep this list disjoint from CONFIG_KEYS (a unit test checks it). */
static const struct later_key {
	const char *name;
	str_check_fn check;
} later_keys[] = {
	{ "user", cf_only_current_user },
	{ "conffile", NULL },
	{ "service_name", NULL },
	{ "job_name", NULL },
	{ "unix_socket_group", NULL },
	{ "auth_ldap_options", NULL },
	{ "so_reuseport", NULL },
	{ "peer_id", NULL },
	{ "track_extra_parameters", NULL },
	{ "scram_iterations", NULL },
	{ "dns_max_ttl", NULL },
	{ "dns_nxdomain_ttl", NULL },
	{ "dns_zone_check_period", NULL },
	{ "resolv_conf", NULL },
	{ "tcp_defer_accept", NULL },
	{ "tcp_socket_buffer", NULL },
	{ "tcp_user_timeout", NULL },
};

static const struct later_key *find_later_key(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(later_keys); i++)
		if (strcasecmp(later_keys[i].name, name) == 0)
			return &later_keys[i];
	return NULL;
}

/* ---- general values: parse, store, format ----------------------------------------------- */

union cf_val {
	char *s;
	int64_t i;
	bool b;
	int e;
	double d;
};

/* Parses one general value; a string result is a new allocation the caller owns. */
static bool parse_value(const struct key_desc *k, const char *text, union cf_val *v, char *why,
			size_t whylen)
{
	const struct key_rule *r = rule_for(k->name);
	int e;
	switch (k->kind) {
	case CF_STR:
		if (r->check && !r->check(text, why, whylen))
			return false;
		if (!(v->s = strdup(text))) {
			snprintf(why, whylen, "out of memory");
			return false;
		}
		return true;
	case CF_INT:
		return cf_parse_int(text, r->octal, r->min, r->max, &v->i, why, whylen);
	case CF_BOOL:
		if (!cf_lookup_bool(text, &e)) {
			snprintf(why, whylen, "expected a boolean (0/1, on/off, true/false, yes/no)");
			return false;
		}
		v->b = e;
		return true;
	case CF_USEC:
		return cf_parse_usec(text, &v->i, why, whylen);
	case CF_SIZE:
		return cf_parse_size(text, r->min, r->max, &v->i, why, whylen);
	case CF_MODE:
		return cf_parse_mode(text, &v->e, why, whylen);
	case CF_AUTH:
		return cf_parse_auth(text, &v->e, why, whylen);
	case CF_REAL:
		return cf_parse_real(text, &v->d, why, whylen);
	}
	snprintf(why, whylen, "internal error: unknown kind");
	return false;
}

static void store_value(struct config *cf, const struct key_desc *k, union cf_val v)
{
	void *field = (char *)cf + k->off;
	switch (k->kind) {
	case CF_STR:
		free(*(char **)field);
		*(char **)field = v.s;
		break;
	case CF_INT:
	case CF_USEC:
	case CF_SIZE:
		*(int64_t *)field = v.i;
		break;
	case CF_BOOL:
		*(bool *)field = v.b;
		break;
	case CF_MODE:
	case CF_AUTH:
		*(int *)field = v.e;
		break;
	case CF_REAL:
		*(double *)field = v.d;
		break;
	}
}

static void format_value(const struct config *cf, const struct key_desc *k, char *buf, size_t len)
{
	const void *field = (const char *)cf + k->off;
	int64_t i;
	switch (k->kind) {
	case CF_STR:
		snprintf(buf, len, "%s", *(char *const *)field ? *(char *const *)field : "");
		return;
	case CF_INT:
		i = *(const int64_t *)field;
		if (rule_for(k->name)->octal)
			snprintf(buf, len, "%04" PRIo64, (uint64_t)i);
		else
			snprintf(buf, len, "%" PRId64, i);
		return;
	case CF_SIZE:
		snprintf(buf, len, "%" PRId64, *(const int64_t *)field);
		return;
	case CF_USEC: {
		i = *(const int64_t *)field;
		if (i % 1000000 == 0) {
			snprintf(buf, len, "%" PRId64, i / 1000000);
			return;
		}
		char frac[8];
		snprintf(frac, sizeof(frac), "%06" PRId64, i % 1000000);
		for (size_t n = strlen(frac); n > 0 && frac[n - 1] == '0'; n--)
			frac[n - 1] = '\0';
		snprintf(buf, len, "%" PRId64 ".%s", i / 1000000, frac);
		return;
	}
	case CF_BOOL:
		snprintf(buf, len, "%d", *(const bool *)field ? 1 : 0);
		return;
	case CF_MODE:
		snprintf(buf, len, "%s", config_pool_mode_name(*(const int *)field));
		return;
	case CF_AUTH:
		snprintf(buf, len, "%s", config_auth_type_name(*(const int *)field));
		return;
	case CF_REAL:
		/* 15 significant digits give back what was written ("0.8", not 0.80000000000000004) */
		snprintf(buf, len, "%.15g", *(const double *)field);
		return;
	}
}

/* ---- section names ---------------------------------------------------------------------- */

static const struct {
	const char *name;
	enum cf_section sec;
} section_names[] = {
	{ "pgmux", SEC_GENERAL },
	{ "pgbouncer", SEC_GENERAL },   /* so that an existing pgbouncer.ini runs unchanged */
	{ "databases", SEC_DATABASES },
	{ "users", SEC_USERS },
};

/* ---- reading lines: line numbers, section headers, directives --------------------------- */

/* Section headers are checked here rather than in the pair handler because inih reports no
 * event for a section without keys, and an unknown empty section must still be an error. */
static bool enter_section(struct cf_parse *ps, char *hdr)
{
	char *end = strchr(hdr, ']');
	if (!end) {
		cf_fail(ps, "missing \"]\" in section header");
		return false;
	}
	*end = '\0';
	char *name = cf_trim(hdr + 1);
	for (size_t i = 0; i < ARRAY_LEN(section_names); i++)
		if (strcasecmp(section_names[i].name, name) == 0) {
			ps->section = section_names[i].sec;
			return true;
		}
	if (strncasecmp(name, "database", 8) == 0 && isspace((unsigned char)name[8]))
		return cf_add_cluster(ps, cf_trim(name + 8));
	else if (strcasecmp(name, "peers") == 0)
		cf_fail(ps, "section [peers] (PgBouncer peering) is not supported by pgmux yet");
	else
		cf_fail(ps, "unknown section [%s] (expected [pgmux] or [pgbouncer], [databases], "
			"[users])", name);
	return false;
}

/* inih's reader: one line per call, so that inih's line count and ours agree; a line that
 * would not fit inih's buffer is an error rather than being split in two. */
static char *read_line(char *str, int num, void *arg)
{
	struct cf_parse *ps = arg;
	if (ps->failed)
		return NULL;
	errno = 0;
	ssize_t n = getline(&ps->buf, &ps->cap, ps->fp);
	if (n < 0) {
		if (ferror(ps->fp))
			cf_fail_at(ps, ps->line + 1, "read error: %s",
				   strerror(errno ? errno : EIO));
		return NULL;
	}
	ps->line++;
	if ((size_t)n + 1 > (size_t)num) {
		cf_fail(ps, "line too long (limit %d bytes)", num - 2);
		return NULL;
	}
	memcpy(str, ps->buf, (size_t)n + 1);

	char *p = ps->buf;
	if (ps->line == 1 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
		p += 3;
	while (isspace((unsigned char)*p))
		p++;
	if (*p == '[' && !enter_section(ps, p))
		return NULL;
	if (strncasecmp(p, "%include", 8) == 0) {
		cf_fail(ps, "%%include is not supported by pgmux yet");
		return NULL;
	}
	return str;
}

/* ---- [pgmux] / [pgbouncer] ---------------------------------------------------------------- */

static bool set_general(struct cf_parse *ps, const char *name, const char *value)
{
	char why[512];
	const struct key_desc *k = find_key(name);
	if (k) {
		union cf_val v;
		if (!parse_value(k, value, &v, why, sizeof(why))) {
			cf_fail(ps, "invalid value \"%s\" for %s: %s", value, k->name, why);
			return false;
		}
		store_value(ps->cf, k, v);
		ps->key_line[k - key_table] = ps->line;
		return true;
	}
	const struct later_key *lk = find_later_key(name);
	if (lk) {
		if (lk->check && !lk->check(value, why, sizeof(why))) {
			cf_fail(ps, "PgBouncer key \"%s\" = \"%s\": %s", lk->name, value, why);
			return false;
		}
		log_warn("%s:%d: PgBouncer key \"%s\" is not supported by pgmux yet; ignored",
			 ps->file, ps->line, lk->name);
		return true;
	}
	cf_fail(ps, "unknown key \"%s\"", name);
	return false;
}

/* ---- one pair, by section --------------------------------------------------------------- */

/* inih's handler: 1 to go on, 0 to stop at this line (the error is already recorded). */
static int on_pair(void *arg, const char *section, const char *name, const char *value)
{
	struct cf_parse *ps = arg;
	if (!value)
		value = "";
	switch (ps->section) {
	case SEC_GENERAL:
		return set_general(ps, name, value);
	case SEC_DATABASES:
		return cf_add_db(ps, name, value);
	case SEC_USERS:
		return cf_add_user(ps, name, value);
	case SEC_CLUSTER:
		return cf_cluster_pair(ps, name, value);
	case SEC_NONE:
		break;
	}
	cf_fail(ps, "\"%s\" comes before any section header", name);
	return 0;
}

/* ---- whole-file steps --------------------------------------------------------------------- */

static struct config *new_default_config(char *why, size_t whylen)
{
	struct config *cf = calloc(1, sizeof(*cf));
	if (!cf) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < N_KEYS; i++) {
		union cf_val v;
		char reason[256];
		if (!parse_value(&key_table[i], key_table[i].def, &v, reason, sizeof(reason))) {
			snprintf(why, whylen, "internal error: default of %s: %s", key_table[i].name,
				 reason);
			config_free(cf);
			return NULL;
		}
		store_value(cf, &key_table[i], v);
	}
	return cf;
}

static int key_line(const struct cf_parse *ps, const char *name)
{
	const struct key_desc *k = find_key(name);
	return k ? ps->key_line[k - key_table] : 0;
}

/* Checks that involve several keys, and fills in what depends on the whole file. */
static void finish(struct cf_parse *ps)
{
	struct config *cf = ps->cf;

	if (!*cf->listen_addr && !*cf->unix_socket_dir) {
		int a = key_line(ps, "listen_addr"), b = key_line(ps, "unix_socket_dir");
		cf_fail_at(ps, a > b ? a : b, "nowhere to listen: listen_addr and unix_socket_dir "
			   "are both empty");
		return;
	}

	/* An entry without a host means a Unix socket in unix_socket_dir, as in PgBouncer; say
	 * so in conninfo, or libpq would pick its own compiled-in directory. */
	const char *dir = cf->unix_socket_dir;
	for (struct cfg_db *db = cf->dbs; db; db = db->next) {
		if (db->host || !*dir || *dir == '@')
			continue;
		char *s = NULL;
		size_t n = 0;
		FILE *out = open_memstream(&s, &n);
		if (out) {
			config_put_conninfo_pair(out, "host", dir);
			fprintf(out, " %s", db->conninfo);
		}
		if (!out || fclose(out) != 0) {
			free(s);
			cf_fail_at(ps, db->line, "out of memory");
			return;
		}
		free(db->conninfo);
		db->conninfo = s;
	}

	cf_finish_clusters(ps);
	if (ps->failed)
		return;
	const char *wf_err = NULL;
	struct sqlscan_funcs *wf = sqlscan_funcs_new(cf->write_functions, &wf_err);
	if (!wf) {
		cf_fail_at(ps, key_line(ps, "write_functions"), "invalid write_functions: %s",
			   wf_err ? wf_err : "out of memory");
		return;
	}
	sqlscan_funcs_free(wf);

	/* What the files hold is for tls.c to judge when it builds the context; here only
	 * that a mode which turns TLS on has something to work with. */
	const char *mode = cf->client_tls_sslmode;
	if (strcasecmp(mode, "disable") != 0) {
		int at = key_line(ps, "client_tls_sslmode");
		if (!*cf->client_tls_key_file || !*cf->client_tls_cert_file) {
			cf_fail_at(ps, at, "client_tls_sslmode = %s needs client_tls_key_file and "
				   "client_tls_cert_file", mode);
			return;
		}
		if ((strcasecmp(mode, "verify-ca") == 0 || strcasecmp(mode, "verify-full") == 0) &&
		    !*cf->client_tls_ca_file) {
			cf_fail_at(ps, at, "client_tls_sslmode = %s needs client_tls_ca_file to "
				   "check client certificates against", mode);
			return;
		}
	}

	/* Without TLS and a CA to verify against, no certificate can name a user: nobody could
	 * log in.  (Below verify-ca the certificate is asked for, but optional: tls.c.) */
	if (cf->auth_type == AUTH_CERT && (!strcasecmp(mode, "disable") || !*cf->client_tls_ca_file))
		log_warn("%s: auth_type = cert without client TLS (client_tls_sslmode) and "
			 "client_tls_ca_file: no certificate can verify, so no user will be able to log in",
			 ps->file);
	if (cf->auth_type != AUTH_ANY && cf->auth_type != AUTH_CERT && !*cf->auth_file)
		log_warn("%s: auth_type %s without auth_file: no user will be able to log in",
			 ps->file, config_auth_type_name(cf->auth_type));
}

/* inih's options are process-wide; these are the ones pgmux's format needs. */
struct ini_opts {
	bool multiline, inline_comments, stop_on_first_error, use_stack, no_value, bom;
	int max_line;
};

static struct ini_opts ini_opts_swap(struct ini_opts want)
{
	struct ini_opts old = {
		ini_allow_multiline, ini_allow_inline_comments, ini_stop_on_first_error,
		ini_use_stack, ini_allow_no_value, ini_allow_bom, ini_max_line,
	};
	ini_allow_multiline = want.multiline;
	ini_allow_inline_comments = want.inline_comments;
	ini_stop_on_first_error = want.stop_on_first_error;
	ini_use_stack = want.use_stack;
	ini_allow_no_value = want.no_value;
	ini_allow_bom = want.bom;
	ini_max_line = want.max_line;
	return old;
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	struct cf_parse ps = { .file = path, .err = err, .errlen = errlen };
	char why[512];

	if (err && errlen)
		err[0] = '\0';
	*out = NULL;
	if (!(ps.cf = new_default_config(why, sizeof(why)))) {
		cf_fail_at(&ps, 0, "%s", why);
		return -1;
	}
	ps.db_tail = &ps.cf->dbs;
	ps.user_tail = &ps.cf->users;
	ps.cluster_tail = &ps.cf->clusters;
	if (!(ps.fp = fopen(path, "r"))) {
		cf_fail_at(&ps, 0, "cannot open: %s", strerror(errno));
		config_free(ps.cf);
		return -1;
	}

	/* PgBouncer's format: ';' and '#' start comments only at the start of a line, a value
	 * runs to the end of its line, and an indented line is a line like any other.  With
	 * use_stack, Debian's inih sizes its line buffer from max_line. */
	struct ini_opts old = ini_opts_swap((struct ini_opts){
		.multiline = false, .inline_comments = false, .stop_on_first_error = true,
		.use_stack = true, .no_value = false, .bom = true, .max_line = CF_MAX_LINE,
	});
	int rc = ini_parse_stream(read_line, &ps, on_pair, &ps);
	ini_opts_swap(old);

	fclose(ps.fp);
	free(ps.buf);
	if (rc > 0)
		cf_fail_at(&ps, rc, "syntax error: expected \"[section]\" or \"key = value\"");
	else if (rc < 0)
		cf_fail_at(&ps, 0, "cannot parse (inih error %d)", rc);
	if (!ps.failed)
		finish(&ps);
	if (!ps.failed && !(ps.cf->path = realpath(path, NULL)) && !(ps.cf->path = strdup(path)))
		cf_fail_at(&ps, 0, "out of memory");
	if (ps.failed) {
		config_free(ps.cf);
		return -1;
	}
	*out = ps.cf;
	return 0;
}

/* ---- snapshot access ---------------------------------------------------------------------- */

void config_free(struct config *cf)
{
	if (!cf)
		return;
	for (size_t i = 0; i < N_KEYS; i++)
		if (key_table[i].kind == CF_STR)
			free(*(char **)((char *)cf + key_table[i].off));
	for (struct cfg_db *db = cf->dbs, *next; db; db = next) {
		next = db->next;
		config_db_free(db);
	}
	for (struct cfg_user *u = cf->users, *next; u; u = next) {
		next = u->next;
		free(u->name);
		free(u);
	}
	for (struct cfg_cluster *c = cf->clusters, *next; c; c = next) {
		next = c->next;
		free(c->name);
		free(c->shard_key);
		free(c);
	}
	free(cf->path);
	free(cf);
}

const struct cfg_db *config_find_db(const struct config *cf, const char *name)
{
	const struct cfg_db *star = NULL;
	for (const struct cfg_db *db = cf->dbs; db; db = db->next) {
		if (strcmp(db->name, name) == 0)
			return db;
		if (!star && strcmp(db->name, "*") == 0)
			star = db;
	}
	return star;
}

const struct cfg_cluster *config_find_cluster(const struct config *cf, const char *name)
{
	for (const struct cfg_cluster *c = cf->clusters; c; c = c->next)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

const struct cfg_user *config_find_user(const struct config *cf, const char *name)
{
	for (const struct cfg_user *u = cf->users; u; u = u->next)
		if (strcmp(u->name, name) == 0)
			return u;
	return NULL;
}

bool config_list_has(const char *list, const char *user)
{
	if (!list || !user || !*user)
		return false;
	size_t ulen = strlen(user);
	for (const char *p = list; *p;) {
		p += strspn(p, ", \t");
		size_t n = strcspn(p, ", \t");
		if (n == ulen && memcmp(p, user, n) == 0)
			return true;
		p += n;
	}
	return false;
}

bool config_value_text(const struct config *cf, const char *key, char *buf, size_t len)
{
	const struct key_desc *k = find_key(key);
	if (!k || !buf || !len)
		return false;
	format_value(cf, k, buf, len);
	return true;
}

void config_each_key(void (*fn)(const char *name, const char *def, bool changeable, void *arg),
		     void *arg)
{
	for (size_t i = 0; i < N_KEYS; i++)
		fn(key_table[i].name, key_table[i].def, key_table[i].changeable, arg);
}

bool config_key_unsupported(const char *name)
{
	return find_later_key(name) != NULL;
}

void config_each_unsupported_key(void (*fn)(const char *name, void *arg), void *arg)
{
	for (size_t i = 0; i < ARRAY_LEN(later_keys); i++)
		fn(later_keys[i].name, arg);
}

int config_set(struct config *cf, const char *key, const char *value, char *err, size_t errlen)
{
	char why[512];
	const struct key_desc *k = find_key(key);
	if (!k) {
		snprintf(err, errlen, find_later_key(key)
			 ? "PgBouncer key \"%s\" is not supported by pgmux yet"
			 : "unknown key \"%s\"", key);
		return -1;
	}
	if (!k->changeable) {
		snprintf(err, errlen, "%s cannot be changed at run time; edit the file and restart",
			 k->name);
		return -1;
	}
	union cf_val v;
	if (!parse_value(k, value, &v, why, sizeof(why))) {
		snprintf(err, errlen, "invalid value \"%s\" for %s: %s", value, k->name, why);
		return -1;
	}
	store_value(cf, k, v);
	return 0;
}
