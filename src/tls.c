/* tls.c: TLS for server connections with OpenSSL: per-database contexts, non-blocking handshake and I/O. */
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
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

/* One context per database: certificate files are read once, not per connection. */
static SSL_CTX *db_ctx(struct database *db, char *err, size_t errlen)
{
	if (db->ssl_ctx)
		return db->ssl_ctx;
	const struct cfg_db *d = db->cf;
	enum tls_mode mode = tls_mode_of(d->sslmode);
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		ssl_err(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (mode >= TLS_VERIFY_CA) {
		const char *ca = d->sslrootcert;
		int ok = ca && *ca && strcmp(ca, "system") != 0 ? SSL_CTX_load_verify_locations(ctx, ca, NULL)
								 : SSL_CTX_set_default_verify_paths(ctx);
		if (ok != 1) {
			ssl_err(err, errlen, "cannot load sslrootcert");
			SSL_CTX_free(ctx);
			return NULL;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	if (d->sslcert && *d->sslcert) {
		if (SSL_CTX_use_certificate_chain_file(ctx, d->sslcert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, d->sslkey && *d->sslkey ? d->sslkey : d->sslcert,
						SSL_FILETYPE_PEM) != 1) {
			ssl_err(err, errlen, "cannot load sslcert/sslkey");
			SSL_CTX_free(ctx);
			return NULL;
		}
	}
	db->ssl_ctx = ctx;
	return ctx;
}

void tls_db_free(struct database *db)
{
	SSL_CTX_free(db->ssl_ctx);
	db->ssl_ctx = NULL;
}

int tls_client_start(struct conn *c, struct database *db, char *err, size_t errlen)
{
	SSL_CTX *ctx = db_ctx(db, err, errlen);
	if (!ctx)
		return -1;
	SSL *ssl = SSL_new(ctx);
	if (!ssl || SSL_set_fd(ssl, c->fd) != 1) {
		ssl_err(err, errlen, "cannot create a TLS session");
		SSL_free(ssl);
		return -1;
	}
	const char *host = db->cf->host;
	if (host && *host && host[0] != '/') {
		SSL_set_tlsext_host_name(ssl, host);
		if (tls_mode_of(db->cf->sslmode) == TLS_VERIFY_FULL)
			SSL_set1_host(ssl, host);
	}
	SSL_set_connect_state(ssl);
	c->ssl = ssl;
	return 0;
}

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
		snprintf(err, errlen, "TLS certificate verification failed: %s", X509_verify_cert_error_string(vr));
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
