/* config_values.c: text to value for the config family: the load's error and white-space
 * helpers, names of enumerated values (pool modes, auth types, booleans, syslog facilities,
 * sslmodes, TLS versions) and the parsers and checks that turn a written value into a number,
 * a set or a reason. */
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

#include "config_int.h"

/* ---- errors and white space, for every reader of the file ------------------------------ */

/* Here, below config_load.c and the entry and section readers that all report through them,
 * so that those readers depend on this file alone and never call back up into config_load.c. */

/* Keeps the first error only: later ones are usually its consequences. */
void cf_fail_at(struct cf_parse *ps, int line, const char *fmt, ...)
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

char *cf_trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* ---- names of enumerated values -------------------------------------------------------- */

static const struct name_val mode_names[] = {
	{ "session", POOL_SESSION }, { "transaction", POOL_TRANSACTION }, { "statement", POOL_STATEMENT },
};

static const struct name_val auth_names[] = {
	{ "trust", AUTH_TRUST }, { "any", AUTH_ANY }, { "plain", AUTH_PLAIN },
	{ "md5", AUTH_MD5 }, { "scram-sha-256", AUTH_SCRAM }, { "hba", AUTH_HBA }, { "cert", AUTH_CERT },
};

/* PgBouncer auth types that need machinery pgmux does not have yet (hba rules, client
 * certificates, PAM, LDAP); naming them gives a better message than "invalid value". */
static const char *const auth_later[] = { "pam", "ldap" };

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

bool cf_lookup_name(const struct name_val *tab, size_t n, const char *name, int *out)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(tab[i].name, name) == 0) {
			*out = tab[i].val;
			return true;
		}
	return false;
}

bool cf_lookup_bool(const char *name, int *out)
{
	return cf_lookup_name(bool_names, ARRAY_LEN(bool_names), name, out);
}

static const char *name_of(const struct name_val *tab, size_t n, int val)
{
	for (size_t i = 0; i < n; i++)
		if (tab[i].val == val)
			return tab[i].name;
	return "unknown";
}

bool cf_in_list(const char *const *list, size_t n, const char *s)
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

bool cf_check_facility(const char *value, char *why, size_t whylen)
{
	if (cf_in_list(facility_names, ARRAY_LEN(facility_names), value))
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
	if (!cf_parse_int(colon + 1, false, 1, 65535, &pv, pwhy, sizeof(pwhy))) {
		snprintf(why, whylen, "bad port: %s", pwhy);
		return false;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (int)pv;
	return true;
}

bool cf_check_listen(const char *value, char *why, size_t whylen)
{
	char host[256];
	int port;
	return !*value || config_parse_hostport(value, host, sizeof(host), &port, why, whylen);
}

bool config_is_console_name(const char *name)
{
	return strcmp(name, "pgbouncer") == 0 || strcmp(name, "pgmux") == 0;
}

bool cf_check_auth_dbname(const char *value, char *why, size_t whylen)
{
	if (!config_is_console_name(value))
		return true;
	snprintf(why, whylen, "cannot use the reserved \"%s\" database as an auth_dbname", value);
	return false;
}

/* The text goes to the server in a Parse with every lookup; one $1 parameter carries the user
 * name (never spliced into the text: see auth_query.c). */
bool cf_check_auth_query(const char *value, char *why, size_t whylen)
{
	if (strlen(value) <= 4096)
		return true;
	snprintf(why, whylen, "auth_query is longer than 4096 bytes");
	return false;
}

/* client_tls_sslmode and an entry's sslmode: libpq's names.  Empty is refused rather than read
 * as libpq's default (prefer), which would turn TLS on where the file seems to leave it off
 * (an entry's empty sslmode never gets here: it unsets the key). */
bool cf_check_sslmode(const char *value, char *why, size_t whylen)
{
	if (cf_in_list(sslmode_names, ARRAY_LEN(sslmode_names), value))
		return true;
	snprintf(why, whylen, "expected disable, allow, prefer, require, verify-ca or verify-full");
	return false;
}

int config_host_count(const char *hosts)
{
	int n = 1;
	for (const char *p = hosts; p && *p; p++)
		n += *p == ',';
	return n;
}

bool config_host_entry(const char *hosts, int idx, char *out, size_t outlen)
{
	const char *p = hosts ? hosts : "";
	for (int i = 0; i < idx; i++) {
		p = strchr(p, ',');
		if (!p)
			return false;
		p++;
	}
	const char *end = strchr(p, ',');
	if (!end)
		end = p + strlen(p);
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if ((size_t)(end - p) >= outlen)
		return false;
	memcpy(out, p, (size_t)(end - p));
	out[end - p] = 0;
	return true;
}

/* An entry's host: one name, address or socket directory, or a list of them (each entry
 * non-empty, at most CONFIG_MAX_HOSTS, each a length a host name can have). */
bool cf_check_hosts(const char *value, char *why, size_t whylen)
{
	int n = config_host_count(value);
	if (n > CONFIG_MAX_HOSTS) {
		snprintf(why, whylen, "at most %d hosts in a list", CONFIG_MAX_HOSTS);
		return false;
	}
	for (int i = 0; i < n; i++) {
		char h[256];
		if (!config_host_entry(value, i, h, sizeof(h))) {
			snprintf(why, whylen, "host entry %d is longer than 255 bytes", i + 1);
			return false;
		}
		if (!*h) {
			snprintf(why, whylen, "host entry %d is empty", i + 1);
			return false;
		}
	}
	return true;
}

bool cf_check_lbh(const char *value, char *why, size_t whylen)
{
	if (strcmp(value, "round-robin") == 0 || strcmp(value, "disable") == 0)
		return true;
	snprintf(why, whylen, "expected round-robin or disable");
	return false;
}

bool config_lbh_disable(const struct cfg_db *d)
{
	return d->load_balance_hosts && strcmp(d->load_balance_hosts, "disable") == 0;
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
		if (!cf_lookup_name(tls_protocol_names, ARRAY_LEN(tls_protocol_names), word,
				    &bits)) {
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

bool cf_check_tls_protocols(const char *value, char *why, size_t whylen)
{
	unsigned mask;
	return config_tls_protocols(value, &mask, why, whylen);
}

bool cf_check_dheparams(const char *value, char *why, size_t whylen)
{
	static const char *const names[] = { "none", "auto", "legacy" };
	if (cf_in_list(names, ARRAY_LEN(names), value))
		return true;
	snprintf(why, whylen, "expected none, auto or legacy");
	return false;
}

/* PgBouncer switches to this user when started as root; ignoring that would leave pgmux
 * running as root, so only a value naming the user we already run as is harmless. */
bool cf_only_current_user(const char *value, char *why, size_t whylen)
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
bool cf_parse_int(const char *s, bool octal, int64_t min, int64_t max, int64_t *out,
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

/* A time: a number with an optional fraction and an optional PostgreSQL time unit (us, ms, s,
 * min, h, d; "500ms", "1.5 s", "5min").  A bare number is seconds, as PgBouncer reads it.  Read
 * exactly (integers, no floating point) so that SHOW CONFIG gives back what was meant; digits
 * past the microsecond are rounded. */
bool cf_parse_usec(const char *s, int64_t *out, char *why, size_t whylen)
{
	static const struct { const char *unit; int64_t usec; } units[] = {
		{ "", 1000000 }, { "s", 1000000 }, { "us", 1 }, { "ms", 1000 },
		{ "min", 60 * 1000000LL }, { "h", 3600 * 1000000LL }, { "d", 86400 * 1000000LL },
	};
	size_t ni = strspn(s, "0123456789"), nf = 0;
	const char *frac = s + ni, *end = frac;
	if (*frac == '.') {
		frac++;
		nf = strspn(frac, "0123456789");
		end = frac + nf;
	}
	if (ni == 0 && nf == 0) {
		snprintf(why, whylen, "expected a time, such as 5 (seconds), 0.5, 500ms or 5min");
		return false;
	}
	while (*end == ' ')
		end++;
	int64_t unit = -1;
	for (size_t i = 0; i < ARRAY_LEN(units); i++)
		if (!strcmp(end, units[i].unit))
			unit = units[i].usec;
	if (unit < 0) {
		snprintf(why, whylen, "unknown time unit \"%s\" (valid: us, ms, s, min, h, d)", end);
		return false;
	}
	if (ni > 12) {
		snprintf(why, whylen, "too large");
		return false;
	}
	/* the number in millionths, times the unit in microseconds, over a million */
	int64_t whole = 0, millionths = 0;
	for (size_t i = 0; i < ni; i++)
		whole = whole * 10 + (s[i] - '0');
	for (size_t i = 0; i < 6; i++)
		millionths = millionths * 10 + (i < nf ? frac[i] - '0' : 0);
	if (nf > 6 && frac[6] >= '5')
		millionths++;
	__int128 v = ((__int128)whole * 1000000 + millionths) * unit;
	if (v / 1000000 > (__int128)INT64_MAX / 2) {
		snprintf(why, whylen, "too large");
		return false;
	}
	*out = (int64_t)(v / 1000000) + (v % 1000000 >= 500000);
	return true;
}

/* A fraction from 0 to 1 in plain decimal ("0.8", ".5", "1"): no sign, exponent or unit, so
 * that what SHOW CONFIG prints reads back the same. */
bool cf_parse_real(const char *s, double *out, char *why, size_t whylen)
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
bool cf_parse_size(const char *s, int64_t min, int64_t max, int64_t *out, char *why,
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

bool cf_parse_mode(const char *s, int *out, char *why, size_t whylen)
{
	if (cf_lookup_name(mode_names, ARRAY_LEN(mode_names), s, out))
		return true;
	snprintf(why, whylen, "expected session, transaction or statement");
	return false;
}

bool cf_parse_auth(const char *s, int *out, char *why, size_t whylen)
{
	if (cf_lookup_name(auth_names, ARRAY_LEN(auth_names), s, out))
		return true;
	if (cf_in_list(auth_later, ARRAY_LEN(auth_later), s))
		snprintf(why, whylen, "PgBouncer's auth_type %s is not supported by pgmux yet "
			 "(supported: trust, any, plain, md5, scram-sha-256, hba, cert)", s);
	else
		snprintf(why, whylen, "expected trust, any, plain, md5, scram-sha-256, hba or cert");
	return false;
}
