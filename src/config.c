/* config.c: reads a PgBouncer-compatible ini file into a config snapshot, driven by CONFIG_KEYS. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>
#include <libpq-fe.h>

#include "log.h"
#include "sqlscan.h"

/* inih's line buffer; a [databases] line with a long password and TLS paths must fit. */
#define CF_MAX_LINE 16384

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

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

typedef bool (*str_check_fn)(const char *value, char *why, size_t whylen);

static bool check_facility(const char *value, char *why, size_t whylen);
static bool check_listen(const char *value, char *why, size_t whylen);
static bool check_sslmode(const char *value, char *why, size_t whylen);
static bool check_tls_protocols(const char *value, char *why, size_t whylen);
static bool check_dheparams(const char *value, char *why, size_t whylen);
static bool parse_int(const char *s, bool octal, int64_t min, int64_t max, int64_t *out,
		      char *why, size_t whylen);

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
	{ "pkt_buf",           512, INT32_MAX, false, NULL },
	{ "max_packet_size",   1,   INT32_MAX, false, NULL },
	/* below 64 kB a client could not even send a long prepared-statement name */
	{ "max_client_memory", 65536, INT32_MAX, false, NULL },
	{ "max_prepared_statement_memory", 65536, INT64_MAX / 2, false, NULL },
	{ "syslog_facility",   0,   0,         false, check_facility },
	{ "stats_listen",      0,   0,         false, check_listen },
	{ "client_tls_sslmode", 0,  0,         false, check_sslmode },
	{ "client_tls_protocols", 0, 0,        false, check_tls_protocols },
	{ "client_tls_dheparams", 0, 0,        false, check_dheparams },
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

static bool only_disable(const char *value, char *why, size_t whylen);
static bool only_current_user(const char *value, char *why, size_t whylen);

/* Most are harmless to ignore with a warning.  The few whose silent absence would weaken
 * security (TLS the admin asked for, dropping root) carry a check that refuses values pgmux
 * cannot honour; keep this list disjoint from CONFIG_KEYS (a unit test checks it). */
static const struct later_key {
	const char *name;
	str_check_fn check;
} later_keys[] = {
	{ "user", only_current_user },
	{ "conffile", NULL },
	{ "service_name", NULL },
	{ "job_name", NULL },
	{ "unix_socket_group", NULL },
	{ "auth_hba_file", NULL },
	{ "auth_ident_file", NULL },
	{ "auth_user", NULL },
	{ "auth_query", NULL },
	{ "auth_dbname", NULL },
	{ "auth_ldap_options", NULL },
	{ "so_reuseport", NULL },
	{ "peer_id", NULL },
	{ "track_extra_parameters", NULL },
	{ "scram_iterations", NULL },
	{ "max_db_client_connections", NULL },
	{ "max_user_client_connections", NULL },
	{ "server_fast_close", NULL },
	{ "pool_idle_timeout", NULL },
	{ "transaction_timeout", NULL },
	{ "query_wait_notify", NULL },
	{ "login_notify_message", NULL },
	{ "dns_max_ttl", NULL },
	{ "dns_nxdomain_ttl", NULL },
	{ "dns_zone_check_period", NULL },
	{ "resolv_conf", NULL },
	{ "tcp_defer_accept", NULL },
	{ "tcp_socket_buffer", NULL },
	{ "tcp_user_timeout", NULL },
	{ "server_tls_sslmode", only_disable },
	{ "server_tls_ca_file", NULL },
	{ "server_tls_key_file", NULL },
	{ "server_tls_cert_file", NULL },
	{ "server_tls_protocols", NULL },
	{ "server_tls_ciphers", NULL },
	{ "server_tls13_ciphers", NULL },
};

static const struct later_key *find_later_key(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(later_keys); i++)
		if (strcasecmp(later_keys[i].name, name) == 0)
			return &later_keys[i];
	return NULL;
}

/* ---- names of enumerated values -------------------------------------------------------- */

struct name_val {
	const char *name;
	int val;
};

static const struct name_val mode_names[] = {
	{ "session", POOL_SESSION }, { "transaction", POOL_TRANSACTION }, { "statement", POOL_STATEMENT },
};

static const struct name_val auth_names[] = {
	{ "trust", AUTH_TRUST }, { "any", AUTH_ANY }, { "plain", AUTH_PLAIN },
	{ "md5", AUTH_MD5 }, { "scram-sha-256", AUTH_SCRAM },
};

/* PgBouncer auth types that need machinery pgmux does not have yet (hba rules, client
 * certificates, PAM, LDAP); naming them gives a better message than "invalid value". */
static const char *const auth_later[] = { "hba", "cert", "pam", "ldap" };

static const struct name_val bool_names[] = {
	{ "1", 1 }, { "0", 0 }, { "on", 1 }, { "off", 0 },
	{ "true", 1 }, { "false", 0 }, { "yes", 1 }, { "no", 0 },
};

/* The facilities log.c knows; anything else would silently become "daemon". */
static const char *const facility_names[] = {
	"auth", "authpriv", "daemon", "user",
	"local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
};

static const char *const sslmode_names[] = {
	"disable", "allow", "prefer", "require", "verify-ca", "verify-full",
};

static bool lookup_name(const struct name_val *tab, size_t n, const char *name, int *out)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(tab[i].name, name) == 0) {
			*out = tab[i].val;
			return true;
		}
	return false;
}

static const char *name_of(const struct name_val *tab, size_t n, int val)
{
	for (size_t i = 0; i < n; i++)
		if (tab[i].val == val)
			return tab[i].name;
	return "unknown";
}

static bool in_list(const char *const *list, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(list[i], s) == 0)
			return true;
	return false;
}

const char *config_pool_mode_name(int mode)
{
	return name_of(mode_names, ARRAY_LEN(mode_names), mode);
}

const char *config_auth_type_name(int type)
{
	return name_of(auth_names, ARRAY_LEN(auth_names), type);
}

/* ---- value parsers (text to value, or a reason) ----------------------------------------- */

static bool check_facility(const char *value, char *why, size_t whylen)
{
	if (in_list(facility_names, ARRAY_LEN(facility_names), value))
		return true;
	snprintf(why, whylen, "expected auth, authpriv, daemon, user or local0..local7");
	return false;
}

bool config_parse_hostport(const char *s, char *host, size_t hostlen, int *port, char *why,
			   size_t whylen)
{
	char dummy[1];
	if (!why) {
		why = dummy;
		whylen = sizeof(dummy);
	}
	const char *h = s, *colon;
	size_t hl;
	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':') {
			snprintf(why, whylen, "expected host:port or [address]:port, such as 127.0.0.1:9127");
			return false;
		}
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || memchr(s, ':', (size_t)(colon - s))) {
			snprintf(why, whylen, colon ? "an IPv6 address needs brackets: [address]:port"
				 : "expected host:port, such as 127.0.0.1:9127");
			return false;
		}
		hl = (size_t)(colon - s);
	}
	if (hl == 0) {
		snprintf(why, whylen, "expected host:port with a host, such as 127.0.0.1:9127 "
			 "(0.0.0.0 for every address)");
		return false;
	}
	if (hl >= hostlen) {
		snprintf(why, whylen, "host name too long");
		return false;
	}
	for (size_t i = 0; i < hl; i++)
		if (isspace((unsigned char)h[i]) || h[i] == '[' || h[i] == ']') {
			snprintf(why, whylen, "invalid character in the host");
			return false;
		}
	int64_t pv;
	char pwhy[128];
	if (!parse_int(colon + 1, false, 1, 65535, &pv, pwhy, sizeof(pwhy))) {
		snprintf(why, whylen, "bad port: %s", pwhy);
		return false;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (int)pv;
	return true;
}

static bool check_listen(const char *value, char *why, size_t whylen)
{
	char host[256];
	int port;
	return !*value || config_parse_hostport(value, host, sizeof(host), &port, why, whylen);
}

static bool only_disable(const char *value, char *why, size_t whylen)
{
	if (!*value || strcasecmp(value, "disable") == 0)
		return true;
	snprintf(why, whylen, "pgmux cannot do what it asks yet, and ignoring it would drop TLS; "
		 "remove it or set it to \"disable\"");
	return false;
}

/* client_tls_sslmode and an entry's sslmode: libpq's names.  Empty is refused rather than read
 * as libpq's default (prefer), which would turn TLS on where the file seems to leave it off
 * (an entry's empty sslmode never gets here: it unsets the key). */
static bool check_sslmode(const char *value, char *why, size_t whylen)
{
	if (in_list(sslmode_names, ARRAY_LEN(sslmode_names), value))
		return true;
	snprintf(why, whylen, "expected disable, allow, prefer, require, verify-ca or verify-full");
	return false;
}

static const struct name_val tls_protocol_names[] = {
	{ "tlsv1.0", CONFIG_TLS_V1_0 }, { "tlsv1.1", CONFIG_TLS_V1_1 },
	{ "tlsv1.2", CONFIG_TLS_V1_2 }, { "tlsv1.3", CONFIG_TLS_V1_3 },
	{ "secure", CONFIG_TLS_V1_2 | CONFIG_TLS_V1_3 }, { "default", CONFIG_TLS_V1_2 | CONFIG_TLS_V1_3 },
	{ "all", CONFIG_TLS_V1_0 | CONFIG_TLS_V1_1 | CONFIG_TLS_V1_2 | CONFIG_TLS_V1_3 },
	{ "legacy", CONFIG_TLS_V1_0 | CONFIG_TLS_V1_1 | CONFIG_TLS_V1_2 | CONFIG_TLS_V1_3 },
};

bool config_tls_protocols(const char *text, unsigned *mask, char *why, size_t whylen)
{
	unsigned set = 0;
	for (const char *p = text;;) {
		p += strspn(p, ", :\t");
		size_t n = strcspn(p, ", :\t");
		if (n == 0)
			break;
		bool neg = *p == '!';
		char word[16];
		int bits;
		if (n - neg >= sizeof(word)) {
			snprintf(why, whylen, "unknown TLS protocol \"%.*s\" (expected tlsv1.0, tlsv1.1, "
				 "tlsv1.2, tlsv1.3, secure, all)", (int)(n > 32 ? 32 : n), p);
			return false;
		}
		memcpy(word, p + neg, n - neg);
		word[n - neg] = '\0';
		if (!lookup_name(tls_protocol_names, ARRAY_LEN(tls_protocol_names), word, &bits)) {
			snprintf(why, whylen, "unknown TLS protocol \"%s\" (expected tlsv1.0, tlsv1.1, "
				 "tlsv1.2, tlsv1.3, secure, all)", word);
			return false;
		}
		set = neg ? set & ~(unsigned)bits : set | (unsigned)bits;
		p += n;
	}
	if (!set) {
		snprintf(why, whylen, "no TLS protocol version left (try secure)");
		return false;
	}
	*mask = set;
	return true;
}

static bool check_tls_protocols(const char *value, char *why, size_t whylen)
{
	unsigned mask;
	return config_tls_protocols(value, &mask, why, whylen);
}

static bool check_dheparams(const char *value, char *why, size_t whylen)
{
	static const char *const names[] = { "none", "auto", "legacy" };
	if (in_list(names, ARRAY_LEN(names), value))
		return true;
	snprintf(why, whylen, "expected none, auto or legacy");
	return false;
}

/* PgBouncer switches to this user when started as root; ignoring that would leave pgmux
 * running as root, so only a value naming the user we already run as is harmless. */
static bool only_current_user(const char *value, char *why, size_t whylen)
{
	if (!*value)
		return true;
	struct passwd *pw = getpwuid(geteuid());
	if (pw && strcmp(pw->pw_name, value) == 0)
		return true;
	snprintf(why, whylen, "pgmux cannot switch users yet; start it as \"%s\" instead", value);
	return false;
}

/* Integers as PgBouncer writes them; octal for file modes. */
static bool parse_int(const char *s, bool octal, int64_t min, int64_t max, int64_t *out,
		      char *why, size_t whylen)
{
	const char *digits = octal ? "01234567" : "0123456789";
	const char *p = s;
	if (*p == '-' && !octal)
		p++;
	if (!*p || strspn(p, digits) != strlen(p)) {
		snprintf(why, whylen, octal ? "expected an octal number such as 0777" : "expected an integer");
		return false;
	}
	errno = 0;
	long long v = strtoll(s, NULL, octal ? 8 : 10);
	if (errno == ERANGE || v < min || v > max) {
		if (octal)
			snprintf(why, whylen, "out of range (0%" PRIo64 " to 0%" PRIo64 ")",
				 (uint64_t)min, (uint64_t)max);
		else
			snprintf(why, whylen, "out of range (%" PRId64 " to %" PRId64 ")", min, max);
		return false;
	}
	*out = v;
	return true;
}

/* Seconds with an optional fraction ("5", "0.5"), read exactly so that SHOW CONFIG gives back
 * what was written; digits past the microsecond are rounded. */
static bool parse_usec(const char *s, int64_t *out, char *why, size_t whylen)
{
	size_t ni = strspn(s, "0123456789"), nf = 0;
	const char *frac = s + ni, *end = frac;
	if (*frac == '.') {
		frac++;
		nf = strspn(frac, "0123456789");
		end = frac + nf;
	}
	if (*end != '\0' || (ni == 0 && nf == 0)) {
		snprintf(why, whylen, "expected seconds, such as 5 or 0.5");
		return false;
	}
	if (ni > 12) {
		snprintf(why, whylen, "too large");
		return false;
	}
	int64_t sec = 0, us = 0;
	for (size_t i = 0; i < ni; i++)
		sec = sec * 10 + (s[i] - '0');
	for (size_t i = 0; i < 6; i++)
		us = us * 10 + (i < nf ? frac[i] - '0' : 0);
	if (nf > 6 && frac[6] >= '5')
		us++;
	*out = sec * 1000000 + us;
	return true;
}

/* A fraction from 0 to 1 in plain decimal ("0.8", ".5", "1"): no sign, exponent or unit, so
 * that what SHOW CONFIG prints reads back the same. */
static bool parse_real(const char *s, double *out, char *why, size_t whylen)
{
	size_t ni = strspn(s, "0123456789"), nf = 0;
	const char *end = s + ni;
	if (*end == '.') {
		nf = strspn(end + 1, "0123456789");
		end += 1 + nf;
	}
	if (*end != '\0' || (ni == 0 && nf == 0) || ni > 12 || nf > 12) {
		snprintf(why, whylen, "expected a fraction from 0 to 1, such as 0.8");
		return false;
	}
	double v = strtod(s, NULL);
	if (!(v >= 0.0 && v <= 1.0)) {
		snprintf(why, whylen, "out of range (0 to 1)");
		return false;
	}
	*out = v;
	return true;
}

/* A byte count with an optional PostgreSQL-style unit (kB, MB, GB: powers of 1024). */
static bool parse_size(const char *s, int64_t min, int64_t max, int64_t *out, char *why,
		       size_t whylen)
{
	static const struct { const char *unit; int shift; } units[] = {
		{ "", 0 }, { "b", 0 }, { "k", 10 }, { "kb", 10 }, { "m", 20 }, { "mb", 20 },
		{ "g", 30 }, { "gb", 30 },
	};
	size_t nd = strspn(s, "0123456789");
	const char *u = s + nd;
	while (*u == ' ' || *u == '\t')
		u++;
	int shift = -1;
	for (size_t i = 0; i < ARRAY_LEN(units); i++)
		if (strcasecmp(units[i].unit, u) == 0)
			shift = units[i].shift;
	if (nd == 0 || shift < 0) {
		snprintf(why, whylen, "expected a size in bytes, optionally with kB, MB or GB");
		return false;
	}
	errno = 0;
	long long v = strtoll(s, NULL, 10);
	if (errno == ERANGE || v > (max >> shift) || (v << shift) < min) {
		snprintf(why, whylen, "out of range (%" PRId64 " to %" PRId64 " bytes)", min, max);
		return false;
	}
	*out = (int64_t)v << shift;
	return true;
}

static bool parse_mode(const char *s, int *out, char *why, size_t whylen)
{
	if (lookup_name(mode_names, ARRAY_LEN(mode_names), s, out))
		return true;
	snprintf(why, whylen, "expected session, transaction or statement");
	return false;
}

static bool parse_auth(const char *s, int *out, char *why, size_t whylen)
{
	if (lookup_name(auth_names, ARRAY_LEN(auth_names), s, out))
		return true;
	if (in_list(auth_later, ARRAY_LEN(auth_later), s))
		snprintf(why, whylen, "PgBouncer's auth_type %s is not supported by pgmux yet "
			 "(supported: trust, any, plain, md5, scram-sha-256)", s);
	else
		snprintf(why, whylen, "expected trust, any, plain, md5 or scram-sha-256");
	return false;
}

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
		return parse_int(text, r->octal, r->min, r->max, &v->i, why, whylen);
	case CF_BOOL:
		if (!lookup_name(bool_names, ARRAY_LEN(bool_names), text, &e)) {
			snprintf(why, whylen, "expected a boolean (0/1, on/off, true/false, yes/no)");
			return false;
		}
		v->b = e;
		return true;
	case CF_USEC:
		return parse_usec(text, &v->i, why, whylen);
	case CF_SIZE:
		return parse_size(text, r->min, r->max, &v->i, why, whylen);
	case CF_MODE:
		return parse_mode(text, &v->e, why, whylen);
	case CF_AUTH:
		return parse_auth(text, &v->e, why, whylen);
	case CF_REAL:
		return parse_real(text, &v->d, why, whylen);
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

/* ---- parse state, errors ---------------------------------------------------------------- */

enum section { SEC_NONE, SEC_GENERAL, SEC_DATABASES, SEC_USERS, SEC_CLUSTER };

static const struct {
	const char *name;
	enum section sec;
} section_names[] = {
	{ "pgmux", SEC_GENERAL },
	{ "pgbouncer", SEC_GENERAL },   /* so that an existing pgbouncer.ini runs unchanged */
	{ "databases", SEC_DATABASES },
	{ "users", SEC_USERS },
};

struct parse {
	const char *file;       /* as the caller named it, for messages */
	struct config *cf;
	FILE *fp;
	char *buf;              /* getline's buffer */
	size_t cap;
	int line;               /* the line inih is working on: the reader counts */
	enum section section;
	int key_line[N_KEYS];   /* where each general key was last set; 0: default */
	struct cfg_db **db_tail;
	struct cfg_user **user_tail;
	struct cfg_cluster **cluster_tail;
	struct cfg_cluster *cluster;    /* the [database X] section being read */
	char *err;
	size_t errlen;
	bool failed;
};

static void fail_at(struct parse *ps, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Keeps the first error only: later ones are usually its consequences. */
static void fail_at(struct parse *ps, int line, const char *fmt, ...)
{
	if (ps->failed)
		return;
	ps->failed = true;
	char why[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (!ps->err || !ps->errlen)
		return;
	if (line > 0)
		snprintf(ps->err, ps->errlen, "%s:%d: %s", ps->file, line, why);
	else
		snprintf(ps->err, ps->errlen, "%s: %s", ps->file, why);
}

#define fail(ps, ...) fail_at((ps), (ps)->line, __VA_ARGS__)

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* ---- reading lines: line numbers, section headers, directives --------------------------- */

static bool add_cluster(struct parse *ps, const char *rawname);

/* Section headers are checked here rather than in the pair handler because inih reports no
 * event for a section without keys, and an unknown empty section must still be an error. */
static bool enter_section(struct parse *ps, char *hdr)
{
	char *end = strchr(hdr, ']');
	if (!end) {
		fail(ps, "missing \"]\" in section header");
		return false;
	}
	*end = '\0';
	char *name = trim(hdr + 1);
	for (size_t i = 0; i < ARRAY_LEN(section_names); i++)
		if (strcasecmp(section_names[i].name, name) == 0) {
			ps->section = section_names[i].sec;
			return true;
		}
	if (strncasecmp(name, "database", 8) == 0 && isspace((unsigned char)name[8]))
		return add_cluster(ps, trim(name + 8));
	else if (strcasecmp(name, "peers") == 0)
		fail(ps, "section [peers] (PgBouncer peering) is not supported by pgmux yet");
	else
		fail(ps, "unknown section [%s] (expected [pgmux] or [pgbouncer], [databases], "
		     "[users])", name);
	return false;
}

/* inih's reader: one line per call, so that inih's line count and ours agree; a line that
 * would not fit inih's buffer is an error rather than being split in two. */
static char *read_line(char *str, int num, void *arg)
{
	struct parse *ps = arg;
	if (ps->failed)
		return NULL;
	errno = 0;
	ssize_t n = getline(&ps->buf, &ps->cap, ps->fp);
	if (n < 0) {
		if (ferror(ps->fp))
			fail_at(ps, ps->line + 1, "read error: %s", strerror(errno ? errno : EIO));
		return NULL;
	}
	ps->line++;
	if ((size_t)n + 1 > (size_t)num) {
		fail(ps, "line too long (limit %d bytes)", num - 2);
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
		fail(ps, "%%include is not supported by pgmux yet");
		return NULL;
	}
	return str;
}

/* ---- [pgmux] / [pgbouncer] ---------------------------------------------------------------- */

static bool set_general(struct parse *ps, const char *name, const char *value)
{
	char why[512];
	const struct key_desc *k = find_key(name);
	if (k) {
		union cf_val v;
		if (!parse_value(k, value, &v, why, sizeof(why))) {
			fail(ps, "invalid value \"%s\" for %s: %s", value, k->name, why);
			return false;
		}
		store_value(ps->cf, k, v);
		ps->key_line[k - key_table] = ps->line;
		return true;
	}
	const struct later_key *lk = find_later_key(name);
	if (lk) {
		if (lk->check && !lk->check(value, why, sizeof(why))) {
			fail(ps, "PgBouncer key \"%s\" = \"%s\": %s", lk->name, value, why);
			return false;
		}
		log_warn("%s:%d: PgBouncer key \"%s\" is not supported by pgmux yet; ignored",
			 ps->file, ps->line, lk->name);
		return true;
	}
	fail(ps, "unknown key \"%s\"", name);
	return false;
}

/* ---- [databases] and [users] entries ---------------------------------------------------- */

/* How a connection-string key of an entry is handled. */
enum ekind {
	EK_STR,     /* a string field; empty means unset */
	EK_PORT,    /* 1..65535 */
	EK_COUNT,   /* a non-negative int field */
	EK_MODE,    /* a pool_mode field */
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
	{ "host",               EK_STR,   DBF(host),               true,  NULL },
	{ "port",               EK_PORT,  DBF(port),               true,  NULL },
	{ "dbname",             EK_STR,   DBF(dbname),             true,  NULL },
	{ "user",               EK_STR,   DBF(user),               true,  NULL },
	{ "password",           EK_STR,   DBF(password),           true,  NULL },
	{ "application_name",   EK_STR,   DBF(application_name),   true,  NULL },
	{ "sslmode",            EK_STR,   DBF(sslmode),            true,  check_sslmode },
	{ "sslrootcert",        EK_STR,   DBF(sslrootcert),        true,  NULL },
	{ "sslcert",            EK_STR,   DBF(sslcert),            true,  NULL },
	{ "sslkey",             EK_STR,   DBF(sslkey),             true,  NULL },
	{ "auth_user",          EK_STR,   DBF(auth_user),          false, NULL },
	{ "connect_query",      EK_STR,   DBF(connect_query),      false, NULL },
	{ "client_encoding",    EK_STR,   DBF(client_encoding),    false, NULL },
	{ "datestyle",          EK_STR,   DBF(datestyle),          false, NULL },
	{ "timezone",           EK_STR,   DBF(timezone),           false, NULL },
	{ "pool_size",          EK_COUNT, DBF(pool_size),          false, NULL },
	{ "min_pool_size",      EK_COUNT, DBF(min_pool_size),      false, NULL },
	{ "reserve_pool",       EK_COUNT, DBF(reserve_pool),       false, NULL },
	{ "reserve_pool_size",  EK_COUNT, DBF(reserve_pool),       false, NULL },
	{ "max_db_connections", EK_COUNT, DBF(max_db_connections), false, NULL },
	{ "pool_mode",          EK_MODE,  DBF(pool_mode),          false, NULL },
	{ "weight",             EK_COUNT, DBF(weight),             false, NULL },
	{ "auth_dbname",               EK_LATER, 0, false, NULL },
	{ "auth_query",                EK_LATER, 0, false, NULL },
	{ "load_balance_hosts",        EK_LATER, 0, false, NULL },
	{ "max_db_client_connections", EK_LATER, 0, false, NULL },
	{ "server_lifetime",           EK_LATER, 0, false, NULL },
	{ "query_wait_timeout",        EK_LATER, 0, false, NULL },
};
#undef DBF

#define USF(f) offsetof(struct cfg_user, f)
static const struct entry_key user_keys[] = {
	{ "pool_mode",                   EK_MODE,  USF(pool_mode),            false, NULL },
	{ "max_user_connections",        EK_COUNT, USF(max_user_connections), false, NULL },
	{ "pool_size",                   EK_LATER, 0, false, NULL },
	{ "reserve_pool_size",           EK_LATER, 0, false, NULL },
	{ "query_timeout",               EK_LATER, 0, false, NULL },
	{ "query_wait_timeout",          EK_LATER, 0, false, NULL },
	{ "idle_transaction_timeout",    EK_LATER, 0, false, NULL },
	{ "transaction_timeout",         EK_LATER, 0, false, NULL },
	{ "client_idle_timeout",         EK_LATER, 0, false, NULL },
	{ "max_user_client_connections", EK_LATER, 0, false, NULL },
};
#undef USF

/* The string fields of a cfg_db, so that copying, freeing and comparing stay in step. */
static const size_t db_str_fields[] = {
	offsetof(struct cfg_db, name), offsetof(struct cfg_db, host),
	offsetof(struct cfg_db, dbname), offsetof(struct cfg_db, user),
	offsetof(struct cfg_db, password), offsetof(struct cfg_db, auth_user),
	offsetof(struct cfg_db, connect_query), offsetof(struct cfg_db, client_encoding),
	offsetof(struct cfg_db, datestyle), offsetof(struct cfg_db, timezone),
	offsetof(struct cfg_db, application_name), offsetof(struct cfg_db, sslmode),
	offsetof(struct cfg_db, sslrootcert), offsetof(struct cfg_db, sslcert),
	offsetof(struct cfg_db, sslkey), offsetof(struct cfg_db, conninfo),
	offsetof(struct cfg_db, cluster),
};

static const size_t db_int_fields[] = {
	offsetof(struct cfg_db, port), offsetof(struct cfg_db, pool_size),
	offsetof(struct cfg_db, min_pool_size), offsetof(struct cfg_db, reserve_pool),
	offsetof(struct cfg_db, max_db_connections), offsetof(struct cfg_db, pool_mode),
	offsetof(struct cfg_db, shard), offsetof(struct cfg_db, replica),
	offsetof(struct cfg_db, weight),
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
static char *entry_name(const char *raw, char *why, size_t whylen)
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
static bool entry_pair(struct parse *ps, const struct entry_key *tab, size_t ntab, void *obj,
		       const char *what, const char *ename, const char *key, const char *val,
		       struct kvlist *libpq)
{
	char why[512];
	const struct entry_key *ek = find_entry_key(tab, ntab, key);
	if (!ek) {
		if (libpq) {
			if (!kv_set(libpq, key, val)) {
				fail(ps, "out of memory");
				return false;
			}
			return true;
		}
		fail(ps, "%s \"%s\": unknown key \"%s\"", what, ename, key);
		return false;
	}
	void *field = (char *)obj + ek->off;
	int64_t n;
	switch (ek->kind) {
	case EK_STR:
		if (ek->check && *val && !ek->check(val, why, sizeof(why))) {
			fail(ps, "%s \"%s\": invalid %s \"%s\": %s", what, ename, key, val, why);
			return false;
		}
		free(*(char **)field);
		*(char **)field = NULL;
		if (!*val)
			break;
		if (!(*(char **)field = strdup(val))) {
			fail(ps, "out of memory");
			return false;
		}
		break;
	case EK_PORT:
	case EK_COUNT:
		if (!parse_int(val, false, ek->kind == EK_PORT ? 1 : 0,
			       ek->kind == EK_PORT ? 65535 : INT32_MAX, &n, why, sizeof(why))) {
			fail(ps, "%s \"%s\": invalid %s \"%s\": %s", what, ename, key, val, why);
			return false;
		}
		*(int *)field = (int)n;
		break;
	case EK_MODE:
		if (!parse_mode(val, (int *)field, why, sizeof(why))) {
			fail(ps, "%s \"%s\": invalid %s \"%s\": %s", what, ename, key, val, why);
			return false;
		}
		break;
	case EK_LATER:
		log_warn("%s:%d: PgBouncer %s key \"%s\" is not supported by pgmux yet; ignored",
			 ps->file, ps->line, what, key);
		return true;
	}
	if (ek->libpq && !*val)
		kv_del(libpq, key);     /* an empty value unsets, here as in the struct */
	else if (ek->libpq && !kv_set(libpq, key, val)) {
		fail(ps, "out of memory");
		return false;
	}
	return true;
}

static bool is_uri(const char *s)
{
	return strncasecmp(s, "postgresql://", 13) == 0 || strncasecmp(s, "postgres://", 11) == 0;
}

/* A libpq URI as the first word of an entry stands for the keywords it encodes. */
static bool db_uri(struct parse *ps, struct cfg_db *db, const char **pp, struct kvlist *libpq)
{
	const char *p = *pp;
	while (isspace((unsigned char)*p))
		p++;
	size_t n = strcspn(p, " \t\r\n\f\v");
	char *uri = strndup(p, n);
	if (!uri) {
		fail(ps, "out of memory");
		return false;
	}
	char *msg = NULL;
	PQconninfoOption *opts = PQconninfoParse(uri, &msg);
	free(uri);
	if (!opts) {
		fail(ps, "database \"%s\": %s", db->name, msg ? trim(msg) : "out of memory");
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

static bool parse_db_value(struct parse *ps, struct cfg_db *db, const char *value)
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
			fail(ps, "database \"%s\": %s", db->name, why);
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
			fail(ps, "out of memory");
			ok = false;
		}
	}
	if (ok && !(db->conninfo = build_conninfo(&libpq))) {
		fail(ps, "out of memory");
		ok = false;
	}
	/* libpq has the last word on its own keywords, so a typo gets libpq's message. */
	if (ok) {
		char *msg = NULL;
		PQconninfoOption *opts = PQconninfoParse(db->conninfo, &msg);
		if (!opts) {
			fail(ps, "database \"%s\": %s", db->name, msg ? trim(msg) : "out of memory");
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

/* A new entry linked into the list (so config_free owns it whatever happens next); takes
 * name.  NULL, with the error recorded, for a name already taken. */
static struct cfg_db *new_db_entry(struct parse *ps, char *name)
{
	for (const struct cfg_db *d = ps->cf->dbs; d; d = d->next)
		if (strcmp(d->name, name) == 0) {
			fail(ps, "database \"%s\" is already defined on line %d", name, d->line);
			free(name);
			return NULL;
		}
	struct cfg_db *db = calloc(1, sizeof(*db));
	if (!db) {
		free(name);
		fail(ps, "out of memory");
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

static bool add_db(struct parse *ps, const char *rawname, const char *value)
{
	char why[512];
	char *name = entry_name(rawname, why, sizeof(why));
	if (!name) {
		fail(ps, "database name: %s", why);
		return false;
	}
	if (in_list(reserved_db_names, ARRAY_LEN(reserved_db_names), name)) {
		fail(ps, "database name \"%s\" is reserved for the admin console", name);
		free(name);
		return false;
	}
	struct cfg_db *db = new_db_entry(ps, name);
	if (!db || !parse_db_value(ps, db, value))
		return false;
	if (db->weight >= 0) {
		fail(ps, "database \"%s\": weight applies only to replica lines of a [database %s] "
		     "section", db->name, db->name);
		return false;
	}
	return true;
}

static bool add_user(struct parse *ps, const char *rawname, const char *value)
{
	char why[512];
	char *name = entry_name(rawname, why, sizeof(why));
	if (!name) {
		fail(ps, "user name: %s", why);
		return false;
	}
	for (const struct cfg_user *u = ps->cf->users; u; u = u->next)
		if (strcmp(u->name, name) == 0) {
			fail(ps, "user \"%s\" is already defined on line %d", name, u->line);
			free(name);
			return false;
		}
	struct cfg_user *u = calloc(1, sizeof(*u));
	if (!u) {
		free(name);
		fail(ps, "out of memory");
		return false;
	}
	u->name = name;
	u->line = ps->line;
	u->pool_mode = -1;
	u->max_user_connections = -1;
	*ps->user_tail = u;
	ps->user_tail = &u->next;

	const char *p = value;
	for (;;) {
		char *key, *val;
		int r = next_pair(&p, &key, &val, why, sizeof(why));
		if (r == 0)
			return true;
		if (r < 0) {
			fail(ps, "user \"%s\": %s", u->name, why);
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

/* ---- [database X] sections: primary, replicas, shards ----------------------------------- */

static bool add_cluster(struct parse *ps, const char *rawname)
{
	char why[512];
	char *name = entry_name(rawname, why, sizeof(why));
	if (!name) {
		fail(ps, "[database] section name: %s", why);
		return false;
	}
	if (in_list(reserved_db_names, ARRAY_LEN(reserved_db_names), name) || strchr(name, '/')) {
		fail(ps, "database name \"%s\" is reserved or contains \"/\"", name);
		free(name);
		return false;
	}
	struct cfg_cluster *c = calloc(1, sizeof(*c));
	char *front_name = strdup(name);
	if (!c || !front_name) {
		free(c);
		free(name);
		free(front_name);
		fail(ps, "out of memory");
		return false;
	}
	c->name = name;
	c->line = ps->line;
	c->read_routing = true;
	c->replica_fallback = true;
	c->max_lag_bytes = c->max_lag_usec = -1;
	c->pool_size = c->min_pool_size = c->reserve_pool = c->max_db_connections = -1;
	c->pool_mode = -1;
	*ps->cluster_tail = c;
	ps->cluster_tail = &c->next;
	ps->cluster = c;
	ps->section = SEC_CLUSTER;
	/* The name clients connect to: an entry with no server of its own. */
	struct cfg_db *front = new_db_entry(ps, front_name);
	if (!front || !(front->cluster = strdup(name))) {
		fail(ps, "out of memory");
		return false;
	}
	return true;
}

/* "shard.N.primary" / "shard.N.replica" -> N and the role word; -1 when not that form. */
static int shard_key_form(const char *key, const char **role)
{
	if (strncasecmp(key, "shard.", 6) != 0 || !isdigit((unsigned char)key[6]))
		return -1;
	char *end;
	long n = strtol(key + 6, &end, 10);
	if (*end != '.' || n > 4096)
		return -1;
	*role = end + 1;
	return (int)n;
}

static bool add_backend(struct parse *ps, struct cfg_cluster *c, int shard, bool replica,
			bool sharded_form, const char *value)
{
	int n_rep = 0;
	for (const struct cfg_db *d = ps->cf->dbs; d; d = d->next) {
		if (!d->cluster || strcmp(d->cluster, c->name) != 0 || d->shard != shard)
			continue;
		if (!replica && d->replica < 0) {
			fail(ps, "[database %s]: shard %d already has a primary (line %d)", c->name,
			     shard, d->line);
			return false;
		}
		if (d->replica >= 0)
			n_rep++;
	}
	char name[300], role[32];
	if (replica)
		snprintf(role, sizeof(role), "replica%d", n_rep);
	else
		snprintf(role, sizeof(role), "primary");
	if (sharded_form)
		snprintf(name, sizeof(name), "%s/%d/%s", c->name, shard, role);
	else
		snprintf(name, sizeof(name), "%s/%s", c->name, role);
	char *copy = strdup(name);
	if (!copy) {
		fail(ps, "out of memory");
		return false;
	}
	struct cfg_db *db = new_db_entry(ps, copy);
	if (!db || !parse_db_value(ps, db, value))
		return false;
	if (!(db->cluster = strdup(c->name))) {
		fail(ps, "out of memory");
		return false;
	}
	db->shard = shard;
	db->replica = replica ? n_rep : -1;
	if (!db->dbname) {
		/* The entry's name is not a database: connect to the section's name instead. */
		char *ci = NULL;
		size_t cilen = 0;
		FILE *out = open_memstream(&ci, &cilen);
		if (out) {
			fputs(db->conninfo, out);
			fputc(' ', out);
			config_put_conninfo_pair(out, "dbname", c->name);
		}
		if (!out || fclose(out) != 0 || !(db->dbname = strdup(c->name))) {
			free(ci);
			fail(ps, "out of memory");
			return false;
		}
		free(db->conninfo);
		db->conninfo = ci;
	}
	if (!replica && db->weight >= 0) {
		fail(ps, "[database %s]: weight applies only to replica lines", c->name);
		return false;
	}
	return true;
}

/* max_replica_lag: bytes (1MB, 65536) or a time (500ms, 2s, 1min). */
static bool parse_lag(const char *v, struct cfg_cluster *c, char *why, size_t whylen)
{
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (end == v || errno || x < 0) {
		snprintf(why, whylen, "expected a size (64kB, 1MB) or a time (500ms, 2s)");
		return false;
	}
	while (isspace((unsigned char)*end))
		end++;
	static const struct { const char *u; double usec; } times[] = {
		{ "us", 1 }, { "ms", 1e3 }, { "s", 1e6 }, { "min", 60e6 },
	};
	for (size_t i = 0; i < ARRAY_LEN(times); i++)
		if (strcasecmp(end, times[i].u) == 0) {
			c->max_lag_usec = (int64_t)(x * times[i].usec);
			c->max_lag_bytes = -1;
			return true;
		}
	int64_t n;
	if (!parse_size(v, 0, INT64_MAX, &n, why, whylen)) {
		snprintf(why, whylen, "expected a size (64kB, 1MB) or a time (500ms, 2s)");
		return false;
	}
	c->max_lag_bytes = n;
	c->max_lag_usec = -1;
	return true;
}

static bool cluster_pair(struct parse *ps, const char *key, const char *value)
{
	struct cfg_cluster *c = ps->cluster;
	char why[512];
	const char *role;
	int shard = shard_key_form(key, &role);
	bool sharded_form = shard >= 0;
	int64_t n;
	int b;
	if (shard >= 0 || !strcasecmp(key, "primary") || !strcasecmp(key, "replica")) {
		if (shard < 0) {
			role = key;
			if (c->n_shards > 1 || c->shard_key) {
				fail(ps, "[database %s] is sharded: write shard.N.%s", c->name, key);
				return false;
			}
			c->n_shards = -1;   /* plain form: no shard.N lines may follow */
			shard = 0;
		} else if (c->n_shards == -1) {
			fail(ps, "[database %s]: shard.N lines cannot follow plain primary/replica lines",
			     c->name);
			return false;
		}
		if (strcasecmp(role, "primary") && strcasecmp(role, "replica")) {
			fail(ps, "unknown key \"%s\" in [database %s]", key, c->name);
			return false;
		}
		return add_backend(ps, c, shard, !strcasecmp(role, "replica"), sharded_form, value);
	}
	if (!strcasecmp(key, "read_routing") || !strcasecmp(key, "replica_fallback")) {
		if (!lookup_name(bool_names, ARRAY_LEN(bool_names), value, &b)) {
			fail(ps, "invalid value \"%s\" for %s: expected on or off", value, key);
			return false;
		}
		if (!strcasecmp(key, "read_routing"))
			c->read_routing = b;
		else
			c->replica_fallback = b;
	} else if (!strcasecmp(key, "max_replica_lag")) {
		if (!parse_lag(value, c, why, sizeof(why))) {
			fail(ps, "invalid value \"%s\" for max_replica_lag: %s", value, why);
			return false;
		}
	} else if (!strcasecmp(key, "read_your_writes")) {
		if (!strcasecmp(value, "off") || !strcasecmp(value, "0"))
			c->read_your_writes = RYW_OFF;
		else if (!strcasecmp(value, "lsn"))
			c->read_your_writes = RYW_LSN;
		else {
			fail(ps, "invalid value \"%s\" for read_your_writes: expected off or lsn", value);
			return false;
		}
	} else if (!strcasecmp(key, "shards")) {
		if (!parse_int(value, false, 1, 4096, &n, why, sizeof(why))) {
			fail(ps, "invalid value \"%s\" for shards: %s", value, why);
			return false;
		}
		if (c->n_shards == -1) {
			fail(ps, "[database %s]: shards must come before the backend lines", c->name);
			return false;
		}
		c->n_shards = (int)n;
	} else if (!strcasecmp(key, "shard_key")) {
		free(c->shard_key);
		if (!*value || !(c->shard_key = strdup(value))) {
			fail(ps, *value ? "out of memory" : "shard_key needs a column name");
			return false;
		}
	} else if (!strcasecmp(key, "no_shard_key")) {
		static const struct name_val names[] = {
			{ "error", NOSHARD_ERROR }, { "shard0", NOSHARD_SHARD0 }, { "all", NOSHARD_ALL },
		};
		if (!lookup_name(names, ARRAY_LEN(names), value, &c->no_shard_key)) {
			fail(ps, "invalid value \"%s\" for no_shard_key: expected error, shard0 or all",
			     value);
			return false;
		}
	} else if (!strcasecmp(key, "shard_key_type")) {
		/* The hash depends on the column's type: the SQL names that alias it are taken. */
		static const struct name_val names[] = {
			{ "int", SHARDKEY_INT }, { "integer", SHARDKEY_INT }, { "bigint", SHARDKEY_INT },
			{ "smallint", SHARDKEY_INT }, { "int2", SHARDKEY_INT }, { "int4", SHARDKEY_INT },
			{ "int8", SHARDKEY_INT }, { "text", SHARDKEY_TEXT }, { "varchar", SHARDKEY_TEXT },
			{ "uuid", SHARDKEY_UUID },
		};
		if (!lookup_name(names, ARRAY_LEN(names), value, &c->shard_key_type)) {
			fail(ps, "invalid value \"%s\" for shard_key_type: expected int, text or uuid",
			     value);
			return false;
		}
	} else if (!strcasecmp(key, "pool_mode")) {
		if (!parse_mode(value, &c->pool_mode, why, sizeof(why))) {
			fail(ps, "invalid value \"%s\" for pool_mode: %s", value, why);
			return false;
		}
	} else {
		static const struct { const char *k; size_t off; } ints[] = {
			{ "pool_size", offsetof(struct cfg_cluster, pool_size) },
			{ "min_pool_size", offsetof(struct cfg_cluster, min_pool_size) },
			{ "reserve_pool", offsetof(struct cfg_cluster, reserve_pool) },
			{ "reserve_pool_size", offsetof(struct cfg_cluster, reserve_pool) },
			{ "max_db_connections", offsetof(struct cfg_cluster, max_db_connections) },
		};
		for (size_t i = 0; i < ARRAY_LEN(ints); i++) {
			if (strcasecmp(key, ints[i].k) != 0)
				continue;
			if (!parse_int(value, false, 0, INT32_MAX, &n, why, sizeof(why))) {
				fail(ps, "invalid value \"%s\" for %s: %s", value, key, why);
				return false;
			}
			*(int *)((char *)c + ints[i].off) = (int)n;
			return true;
		}
		fail(ps, "unknown key \"%s\" in [database %s] (expected primary, replica, "
		     "read_routing, max_replica_lag, read_your_writes, replica_fallback, shards, "
		     "shard_key, shard_key_type, no_shard_key, shard.N.primary, shard.N.replica or a "
		     "pool setting)",
		     key, c->name);
		return false;
	}
	return true;
}

/* Whole-section checks, once the file is read: every shard has its primary, and the
 * section's pool settings reach the backends that do not set their own. */
static void finish_clusters(struct parse *ps)
{
	for (struct cfg_cluster *c = ps->cf->clusters; c; c = c->next) {
		if (c->n_shards <= 0)
			c->n_shards = 1;
		if (c->n_shards > 1 && !c->shard_key) {
			fail_at(ps, c->line, "[database %s]: shards = %d needs shard_key", c->name,
				c->n_shards);
			return;
		}
		for (int s = 0; s < c->n_shards; s++) {
			bool primary = false;
			for (const struct cfg_db *d = ps->cf->dbs; d; d = d->next)
				if (d->cluster && !strcmp(d->cluster, c->name) && d->shard == s &&
				    d->replica < 0)
					primary = true;
			if (!primary) {
				fail_at(ps, c->line, c->n_shards > 1 ? "[database %s]: shard %d has no "
					"primary (shard.%d.primary = ...)" : "[database %s]: no primary "
					"line%.0d%.0d", c->name, s, s);
				return;
			}
		}
		for (struct cfg_db *d = ps->cf->dbs; d; d = d->next) {
			if (!d->cluster || strcmp(d->cluster, c->name) != 0 || d->shard < 0)
				continue;
			if (d->shard >= c->n_shards) {
				fail_at(ps, d->line, "[database %s]: shard %d is out of range (shards = %d)",
					c->name, d->shard, c->n_shards);
				return;
			}
			if (d->pool_size < 0)
				d->pool_size = c->pool_size;
			if (d->min_pool_size < 0)
				d->min_pool_size = c->min_pool_size;
			if (d->reserve_pool < 0)
				d->reserve_pool = c->reserve_pool;
			if (d->max_db_connections < 0)
				d->max_db_connections = c->max_db_connections;
			if (d->pool_mode < 0)
				d->pool_mode = c->pool_mode;
		}
	}
}

/* inih's handler: 1 to go on, 0 to stop at this line (the error is already recorded). */
static int on_pair(void *arg, const char *section, const char *name, const char *value)
{
	struct parse *ps = arg;
	if (!value)
		value = "";
	switch (ps->section) {
	case SEC_GENERAL:
		return set_general(ps, name, value);
	case SEC_DATABASES:
		return add_db(ps, name, value);
	case SEC_USERS:
		return add_user(ps, name, value);
	case SEC_CLUSTER:
		return cluster_pair(ps, name, value);
	case SEC_NONE:
		break;
	}
	fail(ps, "\"%s\" comes before any section header", name);
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

static int key_line(const struct parse *ps, const char *name)
{
	const struct key_desc *k = find_key(name);
	return k ? ps->key_line[k - key_table] : 0;
}

/* Checks that involve several keys, and fills in what depends on the whole file. */
static void finish(struct parse *ps)
{
	struct config *cf = ps->cf;

	if (!*cf->listen_addr && !*cf->unix_socket_dir) {
		int a = key_line(ps, "listen_addr"), b = key_line(ps, "unix_socket_dir");
		fail_at(ps, a > b ? a : b, "nowhere to listen: listen_addr and unix_socket_dir are "
			"both empty");
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
			fail_at(ps, db->line, "out of memory");
			return;
		}
		free(db->conninfo);
		db->conninfo = s;
	}

	finish_clusters(ps);
	if (ps->failed)
		return;
	const char *wf_err = NULL;
	struct sqlscan_funcs *wf = sqlscan_funcs_new(cf->write_functions, &wf_err);
	if (!wf) {
		fail_at(ps, key_line(ps, "write_functions"), "invalid write_functions: %s",
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
			fail_at(ps, at, "client_tls_sslmode = %s needs client_tls_key_file and "
				"client_tls_cert_file", mode);
			return;
		}
		if ((strcasecmp(mode, "verify-ca") == 0 || strcasecmp(mode, "verify-full") == 0) &&
		    !*cf->client_tls_ca_file) {
			fail_at(ps, at, "client_tls_sslmode = %s needs client_tls_ca_file to check "
				"client certificates against", mode);
			return;
		}
	}

	if (cf->auth_type != AUTH_ANY && !*cf->auth_file)
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
	struct parse ps = { .file = path, .err = err, .errlen = errlen };
	char why[512];

	if (err && errlen)
		err[0] = '\0';
	*out = NULL;
	if (!(ps.cf = new_default_config(why, sizeof(why)))) {
		fail_at(&ps, 0, "%s", why);
		return -1;
	}
	ps.db_tail = &ps.cf->dbs;
	ps.user_tail = &ps.cf->users;
	ps.cluster_tail = &ps.cf->clusters;
	if (!(ps.fp = fopen(path, "r"))) {
		fail_at(&ps, 0, "cannot open: %s", strerror(errno));
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
		fail_at(&ps, rc, "syntax error: expected \"[section]\" or \"key = value\"");
	else if (rc < 0)
		fail_at(&ps, 0, "cannot parse (inih error %d)", rc);
	if (!ps.failed)
		finish(&ps);
	if (!ps.failed && !(ps.cf->path = realpath(path, NULL)) && !(ps.cf->path = strdup(path)))
		fail_at(&ps, 0, "out of memory");
	if (ps.failed) {
		config_free(ps.cf);
		return -1;
	}
	*out = ps.cf;
	return 0;
}

/* ---- snapshot access ---------------------------------------------------------------------- */

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
	return true;
}

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
