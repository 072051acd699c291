/* tls.c: TLS with OpenSSL: per-database contexts for servers, one context for clients, non-blocking handshake and I/O. */
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"

enum tls_mode tls_mode_of(const char *m)
{
	if (!m || !*m || strcasecmp(m, "prefer") == 0)
		return TLS_PREFER;
	if (strcasecmp(m, "disable") == 0)
		return TLS_DISABLE;
	if (strcasecmp(m, "allow") == 0)
		return TLS_ALLOW;
	if (strcasecmp(m, "require") == 0)
		return TLS_REQUIRE;
	if (strcasecmp(m, "verify-ca") == 0)
		return TLS_VERIFY_CA;
	return TLS_VERIFY_FULL;
}

static void ssl_err(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "";
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s%s%s", what, *buf ? ": " : "", buf);
	ERR_clear_error();
}

/* What one database's servers are connected with: the entry's libpq keywords where it has
 * them, else the general server_tls_* keys (PgBouncer's only way to say it). */
struct db_tls {
	enum tls_mode mode;
	const char *ca, *cert, *key, *protocols, *ciphers, *tls13;
};

static const char *pick(const char *entry, const char *general)
{
	return entry && *entry ? entry : general ? general : "";
}

static struct db_tls db_tls_of(const struct config *cf, const struct cfg_db *d)
{
	struct db_tls t;
	t.mode = tls_mode_of(pick(d->sslmode, cf ? cf->server_tls_sslmode : NULL));
	t.ca = pick(d->sslrootcert, cf ? cf->server_tls_ca_file : NULL);
	t.cert = pick(d->sslcert, cf ? cf->server_tls_cert_file : NULL);
	/* libpq reads the key from the certificate's file when only sslcert is given */
	t.key = d->sslcert && *d->sslcert ? pick(d->sslkey, d->sslcert)
					  : pick(d->sslkey, cf ? cf->server_tls_key_file : NULL);
	t.protocols = cf ? cf->server_tls_protocols : "secure";
	t.ciphers = cf ? cf->server_tls_ciphers : "";
	t.tls13 = cf ? cf->server_tls13_ciphers : "";
	return t;
}

enum tls_mode tls_db_mode(const struct database *db)
{
	return db_tls_of(db->w ? db->w->cf : NULL, db->cf).mode;
}

char *tls_db_signature(const struct config *cf, const struct cfg_db *d)
{
	struct db_tls t = db_tls_of(cf, d);
	char *s = NULL;
	/* '\n' cannot occur in an ini value, so the fields cannot run into one another */
	if (asprintf(&s, "%d\n%s\n%s\n%s\n%s\n%s\n%s", (int)t.mode, t.ca, t.cert, t.key, t.protocols,
		     t.ciphers, t.tls13) < 0)
		return NULL;
	return s;
}

static int no_passphrase(char *buf, int size, int rwflag, void *arg);
static int proto_version(unsigned bit);
static bool set_protocols(SSL_CTX *ctx, unsigned mask);
static const char *cipher_list(const char *v);
static bool set_tls13_ciphers(SSL_CTX *ctx, const char *v);

/* One context per database: certificate files are read once, not per connection. */
static SSL_CTX *db_ctx(struct database *db, char *err, size_t errlen)
{
	if (db->ssl_ctx)
		return db->ssl_ctx;
	struct db_tls t = db_tls_of(db->w ? db->w->cf : NULL, db->cf);
	char what[PATH_MAX + 64];
	unsigned protos;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		ssl_err(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	if (!config_tls_protocols(t.protocols, &protos, what, sizeof(what)) ||
	    !set_protocols(ctx, protos)) {
		snprintf(what, sizeof(what), "server_tls_protocols \"%s\": invalid", t.protocols);
		goto fail;
	}
	const char *ciphers = cipher_list(t.ciphers);
	if (ciphers && SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		snprintf(what, sizeof(what), "server_tls_ciphers \"%s\": no usable cipher", ciphers);
		goto fail;
	}
	if (*t.tls13 && !set_tls13_ciphers(ctx, t.tls13)) {
		snprintf(what, sizeof(what), "server_tls13_ciphers \"%s\": failed to set the TLSv1.3 "
			 "cipher suites", t.tls13);
		goto fail;
	}
	if (t.mode >= TLS_VERIFY_CA) {
		int ok = *t.ca && strcmp(t.ca, "system") != 0 ? SSL_CTX_load_verify_locations(ctx, t.ca, NULL)
							       : SSL_CTX_set_default_verify_paths(ctx);
		if (ok != 1) {
			snprintf(what, sizeof(what), "cannot load the CA file \"%s\" (sslrootcert or "
				 "server_tls_ca_file)", t.ca);
			goto fail;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	if (*t.cert) {
		if (SSL_CTX_use_certificate_chain_file(ctx, t.cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, *t.key ? t.key : t.cert, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(ctx) != 1) {
			snprintf(what, sizeof(what), "cannot load the client certificate \"%s\" and key "
				 "\"%s\" (sslcert/sslkey or server_tls_cert_file/server_tls_key_file)",
				 t.cert, *t.key ? t.key : t.cert);
			goto fail;
		}
	}
	db->ssl_ctx = ctx;
	return ctx;
fail:
	ssl_err(err, errlen, what);
	SSL_CTX_free(ctx);
	return NULL;
}

void tls_db_free(struct database *db)
{
	SSL_CTX_free(db->ssl_ctx);
	db->ssl_ctx = NULL;
}

int tls_client_start(struct conn *c, struct database *db, const char *host, char *err, size_t errlen)
{
	ERR_clear_error();
	SSL_CTX *ctx = db_ctx(db, err, errlen);
	if (!ctx)
		return -1;
	SSL *ssl = SSL_new(ctx);
	if (!ssl || SSL_set_fd(ssl, c->fd) != 1) {
		ssl_err(err, errlen, "cannot create a TLS session");
		SSL_free(ssl);
		return -1;
	}
	if (host && *host && host[0] != '/') {
		/* As libpq: an address is checked against the certificate's IP entries and sent
		 * as no server name; a name goes to SNI and is checked against its DNS names. */
		unsigned char a[16];
		bool ip = inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
		if (!ip)
			SSL_set_tlsext_host_name(ssl, host);
		if (tls_db_mode(db) == TLS_VERIFY_FULL) {
			X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
			if ((ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host) : SSL_set1_host(ssl, host)) != 1) {
				ssl_err(err, errlen, "cannot set the host name to verify");
				SSL_free(ssl);
				return -1;
			}
		}
	}
	SSL_set_connect_state(ssl);
	c->ssl = ssl;
	return 0;
}

/* ---- pgmux as the TLS server ------------------------------------------------------------- */

struct tls_server {
	SSL_CTX *ctx;
	enum tls_mode mode;
};

/* Keys are read once at start or reload, when nobody can type a passphrase: an encrypted key
 * must fail to load rather than make OpenSSL prompt on a terminal and stall the loop. */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	(void)buf, (void)size, (void)rwflag, (void)arg;
	return -1;
}

static int proto_version(unsigned bit)
{
	switch (bit) {
	case CONFIG_TLS_V1_0: return TLS1_VERSION;
	case CONFIG_TLS_V1_1: return TLS1_1_VERSION;
	case CONFIG_TLS_V1_2: return TLS1_2_VERSION;
	default: return TLS1_3_VERSION;
	}
}

/* OpenSSL takes a range; versions missing inside it ("tlsv1.1,tlsv1.3") are switched off. */
static bool set_protocols(SSL_CTX *ctx, unsigned mask)
{
	static const struct { unsigned bit; uint64_t op; } hole[] = {
		{ CONFIG_TLS_V1_0, SSL_OP_NO_TLSv1 }, { CONFIG_TLS_V1_1, SSL_OP_NO_TLSv1_1 },
		{ CONFIG_TLS_V1_2, SSL_OP_NO_TLSv1_2 }, { CONFIG_TLS_V1_3, SSL_OP_NO_TLSv1_3 },
	};
	unsigned lo = mask & -mask, hi = lo;
	while (mask & ~(hi | (hi - 1)))
		hi <<= 1;
	if (SSL_CTX_set_min_proto_version(ctx, proto_version(lo)) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, proto_version(hi)) != 1)
		return false;
	for (size_t i = 0; i < sizeof(hole) / sizeof(hole[0]); i++)
		if (hole[i].bit > lo && hole[i].bit < hi && !(mask & hole[i].bit))
			SSL_CTX_set_options(ctx, hole[i].op);
	return true;
}

/* PgBouncer's shortcuts; anything else is an OpenSSL cipher string.  NULL: OpenSSL's (and the
 * system's openssl.cnf) defaults. */
static const char *cipher_list(const char *v)
{
	static const struct { const char *name, *list; } tab[] = {
		{ "default", NULL }, { "secure", NULL }, { "fast", NULL }, { "normal", NULL },
		{ "compat", "HIGH:!aNULL" }, { "legacy", "HIGH:!aNULL" },
		{ "all", "ALL:!aNULL:!eNULL" }, { "insecure", "ALL:!aNULL:!eNULL" },
	};
	if (!*v)
		return NULL;
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strcasecmp(v, tab[i].name) == 0)
			return tab[i].list;
	return v;
}

/* PgBouncer's examples separate with commas, OpenSSL wants colons. */
static bool set_tls13_ciphers(SSL_CTX *ctx, const char *v)
{
	char list[512];
	if (strlen(v) >= sizeof(list))
		return false;
	snprintf(list, sizeof(list), "%s", v);
	for (char *p = list; *p; p++)
		if (*p == ',' || *p == ' ')
			*p = ':';
	return SSL_CTX_set_ciphersuites(ctx, list) == 1;
}

static SSL_CTX *server_ctx(const struct config *cf, enum tls_mode mode, char *err, size_t errlen)
{
	char what[PATH_MAX + 64];
	unsigned protos;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		ssl_err(err, errlen, "client TLS: cannot create a TLS context");
		return NULL;
	}
	/* As PostgreSQL's own server: no compression, renegotiation, session cache or tickets
	 * (libpq resumes no sessions, and tickets would cost a write per handshake). */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
			    SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	/* Idle clients are most clients: their TLS read/write buffers go back while idle. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
			 SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);

	if (!config_tls_protocols(cf->client_tls_protocols, &protos, err, errlen) ||
	    !set_protocols(ctx, protos)) {
		snprintf(what, sizeof(what), "client_tls_protocols \"%s\": invalid", cf->client_tls_protocols);
		goto fail;
	}
	const char *ciphers = cipher_list(cf->client_tls_ciphers);
	if (ciphers && SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		snprintf(what, sizeof(what), "client_tls_ciphers \"%s\": no usable cipher", ciphers);
		goto fail;
	}
	if (*cf->client_tls13_ciphers && !set_tls13_ciphers(ctx, cf->client_tls13_ciphers)) {
		snprintf(what, sizeof(what), "client_tls13_ciphers \"%s\": failed to set the TLSv1.3 "
			 "cipher suites", cf->client_tls13_ciphers);
		goto fail;
	}
	/* "none" cannot switch ECDHE off under TLS 1.3, which needs a group: OpenSSL's
	 * default groups stay, as with "auto". */
	const char *curve = cf->client_tls_ecdhcurve;
	if (*curve && strcasecmp(curve, "auto") != 0 && strcasecmp(curve, "none") != 0 &&
	    SSL_CTX_set1_groups_list(ctx, curve) != 1) {
		snprintf(what, sizeof(what), "client_tls_ecdhcurve \"%s\": unknown curve", curve);
		goto fail;
	}
	/* OpenSSL 3 refuses 1024-bit groups at its default security level, so "legacy" gets the
	 * same automatic, key-sized group as "auto". */
	SSL_CTX_set_dh_auto(ctx, strcasecmp(cf->client_tls_dheparams, "none") != 0);

	if (SSL_CTX_use_certificate_chain_file(ctx, cf->client_tls_cert_file) != 1) {
		snprintf(what, sizeof(what), "client_tls_cert_file \"%s\": cannot load the certificate",
			 cf->client_tls_cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, cf->client_tls_key_file, SSL_FILETYPE_PEM) != 1) {
		snprintf(what, sizeof(what), "client_tls_key_file \"%s\": cannot use the private key "
			 "(it must be PEM, without a passphrase, and match client_tls_cert_file)",
			 cf->client_tls_key_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(what, sizeof(what), "client_tls_key_file \"%s\" does not match "
			 "client_tls_cert_file \"%s\"", cf->client_tls_key_file, cf->client_tls_cert_file);
		goto fail;
	}
	if (mode >= TLS_VERIFY_CA || *cf->client_tls_ca_file) {
		const char *ca = cf->client_tls_ca_file;
		STACK_OF(X509_NAME) *names = *ca ? SSL_load_client_CA_file(ca) : NULL;
		if (!names || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
			sk_X509_NAME_pop_free(names, X509_NAME_free);
			snprintf(what, sizeof(what), "client_tls_ca_file \"%s\": cannot load CA certificates", ca);
			goto fail;
		}
		/* Tells clients which CAs to pick a certificate for; the context owns the list. */
		SSL_CTX_set_client_CA_list(ctx, names);
		/* Below verify-ca a certificate is asked for but not required: cert logins
		 * (auth_type cert, hba's cert) need one; a client that sends one that does not
		 * verify is refused at the handshake, as PostgreSQL does with ssl_ca_file set. */
		SSL_CTX_set_verify(ctx, mode >= TLS_VERIFY_CA ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
							      : SSL_VERIFY_PEER, NULL);
		static const unsigned char sid[] = "pgmux";
		SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
	} else {
		/* PgBouncer: below verify-ca a client certificate is not even asked for. */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	return ctx;

fail:
	if (ERR_peek_error() || !*err) {
		ssl_err(err, errlen, what);
	} else {
		char why[256];
		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "%s: %s", what, why);
	}
	SSL_CTX_free(ctx);
	return NULL;
}

int tls_server_new(const struct config *cf, struct tls_server **out, char *err, size_t errlen)
{
	if (err && errlen)
		*err = '\0';
	enum tls_mode mode = tls_mode_of(cf->client_tls_sslmode);
	if (mode == TLS_DISABLE) {
		*out = NULL;
		return 0;
	}
	/* config_load checks this too; a console SET skips config_load. */
	if (!*cf->client_tls_key_file || !*cf->client_tls_cert_file) {
		snprintf(err, errlen, "client_tls_sslmode = %s needs client_tls_key_file and "
			 "client_tls_cert_file", cf->client_tls_sslmode);
		return -1;
	}
	if (mode >= TLS_VERIFY_CA && !*cf->client_tls_ca_file) {
		snprintf(err, errlen, "client_tls_sslmode = %s needs client_tls_ca_file",
			 cf->client_tls_sslmode);
		return -1;
	}
	struct tls_server *ts = calloc(1, sizeof(*ts));
	if (!ts) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	ERR_clear_error();
	if (!(ts->ctx = server_ctx(cf, mode, err, errlen))) {
		free(ts);
		return -1;
	}
	ts->mode = mode;
	*out = ts;
	return 0;
}

void tls_server_free(struct tls_server *ts)
{
	if (!ts)
		return;
	SSL_CTX_free(ts->ctx);
	free(ts);
}

int tls_server_reconfigure(struct worker *w, char *err, size_t errlen)
{
	struct tls_server *ts;
	if (tls_server_new(w->cf, &ts, err, errlen) < 0)
		return -1;
	tls_server_free(w->tls_srv);
	w->tls_srv = ts;
	return 0;
}

enum tls_mode tls_server_mode(const struct tls_server *ts)
{
	return ts ? ts->mode : TLS_DISABLE;
}

int tls_server_start(struct conn *c, const struct tls_server *ts, char *err, size_t errlen)
{
	SSL *ssl = SSL_new(ts->ctx);
	if (!ssl || SSL_set_fd(ssl, c->fd) != 1) {
		ssl_err(err, errlen, "cannot create a TLS session");
		SSL_free(ssl);
		return -1;
	}
	SSL_set_accept_state(ssl);
	c->ssl = ssl;
	return 0;
}

/* The key exchange as PgBouncer names it: ECDH=<curve> or DH=<bits>. */
static void describe_kx(SSL *ssl, char *buf, size_t len)
{
	int nid = SSL_get_negotiated_group(ssl);
	if (nid >= NID_ffdhe2048 && nid <= NID_ffdhe8192) {
		snprintf(buf, len, "/DH=%s", OBJ_nid2sn(nid));
		return;
	}
	if (nid > 0 && !(nid & TLSEXT_nid_unknown) && OBJ_nid2sn(nid)) {
		snprintf(buf, len, "/ECDH=%s", OBJ_nid2sn(nid));
		return;
	}
	EVP_PKEY *pk = NULL;
	if ((SSL_is_server(ssl) ? SSL_get_tmp_key(ssl, &pk) : SSL_get_peer_tmp_key(ssl, &pk)) && pk) {
		if (EVP_PKEY_is_a(pk, "DH"))
			snprintf(buf, len, "/DH=%d", EVP_PKEY_get_bits(pk));
		EVP_PKEY_free(pk);
	}
}

const char *tls_describe(const struct conn *c, char *buf, size_t len)
{
	if (!len)
		return buf;
	*buf = '\0';
	if (!c->ssl || c->handshaking)
		return buf;
	char kx[64] = "";
	describe_kx(c->ssl, kx, sizeof(kx));
	snprintf(buf, len, "%s/%s%s", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl), kx);
	return buf;
}

/* ---- both sides ---------------------------------------------------------------------------- */

static void want(struct conn *c, int e)
{
	if (e == SSL_ERROR_WANT_WRITE) {
		if (!c->wr_on && event_add(&c->ev_write, NULL) == 0)
			c->wr_on = true;
	} else if (!c->rd_on && !c->hold && event_add(&c->ev_read, NULL) == 0) {
		c->rd_on = true;
	}
}

int tls_handshake(struct conn *c, char *err, size_t errlen)
{
	ERR_clear_error();
	errno = 0;
	int r = SSL_do_handshake(c->ssl);
	if (r == 1)
		return 1;
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		want(c, e);
		return 0;
	}
	long vr = SSL_get_verify_result(c->ssl);
	if (vr != X509_V_OK)
		/* OpenSSL's own words first: PgBouncer logs them, and admins grep for them */
		snprintf(err, errlen, "TLS handshake failed: certificate verify failed: %s",
			 X509_verify_cert_error_string(vr));
	else if (e == SSL_ERROR_SYSCALL && !ERR_peek_error())
		snprintf(err, errlen, "TLS handshake failed: %s",
			 errno ? strerror(errno) : "the peer closed the connection");
	else
		ssl_err(err, errlen, "TLS handshake failed");
	return -1;
}

ssize_t tls_recv(struct conn *c, void *buf, size_t len)
{
	ERR_clear_error();
	int n = SSL_read(c->ssl, buf, (int)(len > 0x40000000 ? 0x40000000 : len));
	if (n > 0)
		return n;
	int e = SSL_get_error(c->ssl, n);
	switch (e) {
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		want(c, e);
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_SYSCALL:
		if (!errno)
			return 0;   /* EOF without close_notify */
		return -1;
	default:
		ERR_clear_error();
		errno = EPROTO;
		return -1;
	}
}

ssize_t tls_send(struct conn *c, const void *buf, size_t len)
{
	ERR_clear_error();
	int n = SSL_write(c->ssl, buf, (int)(len > 0x40000000 ? 0x40000000 : len));
	if (n > 0)
		return n;
	int e = SSL_get_error(c->ssl, n);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		if (e == SSL_ERROR_WANT_READ)
			want(c, e);
		errno = EAGAIN;
		return -1;
	}
	ERR_clear_error();
	if (e != SSL_ERROR_SYSCALL || !errno)
		errno = EPIPE;
	return -1;
}

bool tls_pending(const struct conn *c)
{
	return c->ssl && SSL_pending(c->ssl) > 0;
}

void tls_free(struct conn *c)
{
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
}

bool tls_peer_has_cert(const struct conn *c)
{
	if (!c->ssl || c->handshaking)
		return false;
	X509 *x = SSL_get1_peer_certificate(c->ssl);
	if (!x)
		return false;
	X509_free(x);
	return true;
}

bool tls_peer_cn(const struct conn *c, char *buf, size_t len)
{
	if (!len)
		return false;
	*buf = '\0';
	if (!c->ssl || c->handshaking || SSL_get_verify_result(c->ssl) != X509_V_OK)
		return false;
	X509 *peer = SSL_get1_peer_certificate(c->ssl);
	if (!peer)
		return false;
	bool ok = false;
	X509_NAME *subj = X509_get_subject_name(peer);
	int at = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
	/* a second CN would make "which one is the user" a guess */
	if (at >= 0 && X509_NAME_get_index_by_NID(subj, NID_commonName, at) < 0) {
		ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, at));
		unsigned char *u = NULL;
		int n = v ? ASN1_STRING_to_UTF8(&u, v) : -1;
		if (n > 0 && (size_t)n < len && memchr(u, 0, (size_t)n) == NULL) {
			memcpy(buf, u, (size_t)n);
			buf[n] = '\0';
			ok = true;
		}
		OPENSSL_free(u);
	}
	X509_free(peer);
	return ok;
}
