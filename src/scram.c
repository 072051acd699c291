/* scram.c: SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it: verifiers, server side, client side. */
#include "scram.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "pwcrypt.h"

#define SECRET_PREFIX "SCRAM-SHA-256$"

/* base64 of a 32-byte key is 44 characters. */
#define KEY_B64_LEN 44

/* The AuthMessage joins client-first-bare, server-first and client-final-without-proof; each is
 * bounded by its buffer or SCRAM_MAX_MESSAGE, so this always fits. */
#define AUTH_MESSAGE_MAX (SCRAM_MAX_MESSAGE * 3 + 4)

struct attr {
	char name;
	const char *val;
	size_t len;
	size_t start;   /* offset of the attribute's letter in the message */
};

__attribute__((format(printf, 3, 4)))
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* RFC 5802 "printable": %x21-7E except ','.  Nonces go verbatim into the AuthMessage and into
 * our replies, so anything else is refused rather than passed along. */
static bool valid_nonce(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
			return false;
	return true;
}

/* Reads the "x=value" attribute at *pos and moves past it and its ','.  A trailing ',' with
 * nothing after it is malformed. */
static bool read_attr(const char *msg, size_t len, size_t *pos, struct attr *a)
{
	size_t p = *pos;
	const char *comma;

	if (p >= len || len - p < 2 || !is_alpha(msg[p]) || msg[p + 1] != '=')
		return false;
	a->name = msg[p];
	a->start = p;
	a->val = msg + p + 2;
	comma = memchr(a->val, ',', len - p - 2);
	a->len = comma ? (size_t)(comma - a->val) : len - p - 2;
	p += 2 + a->len;
	if (p < len) {
		p++;
		if (p == len)
			return false;
	}
	*pos = p;
	return true;
}

/* Peer messages arrive length-delimited, not NUL-terminated; an embedded NUL would truncate
 * them differently in different places, so it is refused outright. */
static bool check_message(const char *msg, size_t len, char *err, size_t errlen)
{
	if (!msg || len == 0) {
		set_err(err, errlen, "empty SCRAM message");
		return false;
	}
	if (len > SCRAM_MAX_MESSAGE) {
		set_err(err, errlen, "SCRAM message too long (%zu bytes)", len);
		return false;
	}
	if (memchr(msg, '\0', len)) {
		set_err(err, errlen, "SCRAM message contains a NUL byte");
		return false;
	}
	return true;
}

/* Writes the base64 of in[0..n) plus a NUL; returns its length, or -1 when out is too small. */
static int b64_encode(const uint8_t *in, size_t n, char *out, size_t outcap)
{
	size_t need = (n + 2) / 3 * 4;

	if (n > (size_t)INT_MAX / 2 || need + 1 > outcap)
		return -1;
	return EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Strict base64 decode into out; returns the decoded length or -1.  EVP_DecodeBlock skips
 * surrounding whitespace, accepts some junk, and counts '=' padding as zero bytes, so the input
 * is validated here first and the padding subtracted from its answer.
 */
static int b64_decode(const char *in, size_t n, uint8_t *out, size_t outcap)
{
	uint8_t tmp[128];
	size_t pad = 0, raw;
	int got;

	if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof(tmp))
		return -1;
	if (in[n - 1] == '=')
		pad = in[n - 2] == '=' ? 2 : 1;
	for (size_t i = 0; i < n - pad; i++)
		if (b64_value(in[i]) < 0)
			return -1;
	/* The bits under the padding must be zero, or two spellings would decode alike. */
	if (pad == 1 && (b64_value(in[n - 2]) & 0x03) != 0)
		return -1;
	if (pad == 2 && (b64_value(in[n - 3]) & 0x0f) != 0)
		return -1;
	raw = n / 4 * 3 - pad;
	if (raw > outcap)
		return -1;
	got = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
	if (got < 0 || (size_t)got != n / 4 * 3) {
		OPENSSL_cleanse(tmp, sizeof(tmp));
		return -1;
	}
	memcpy(out, tmp, raw);
	OPENSSL_cleanse(tmp, sizeof(tmp));
	return (int)raw;
}

/* Decimal digits only, no sign, within [1, max]. */
static bool parse_iterations(const char *s, size_t n, long long max, int *out)
{
	long long v = 0;

	if (n == 0 || n > 10)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > max)
		return false;
	*out = (int)v;
	return true;
}

static bool sha256(const uint8_t *in, size_t n, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int len = 0;

	return EVP_Digest(in, n, out, &len, EVP_sha256(), NULL) == 1 && len == SCRAM_KEY_LEN;
}

static bool hmac(const uint8_t *key, size_t keylen, const void *data, size_t n, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int len = 0;

	if (keylen > INT_MAX)
		return false;
	return HMAC(EVP_sha256(), key, (int)keylen, data, n, out, &len) && len == SCRAM_KEY_LEN;
}

/* SaltedPassword, then ClientKey and ServerKey from it. */
static bool derive_keys(const char *password, const uint8_t *salt, int salt_len, int iterations,
			uint8_t client_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
	uint8_t salted[SCRAM_KEY_LEN];
	size_t plen = strlen(password);
	bool ok;

	if (plen > INT_MAX)
		return false;
	ok = PKCS5_PBKDF2_HMAC(password, (int)plen, salt, salt_len, iterations, EVP_sha256(),
			       SCRAM_KEY_LEN, salted) == 1 &&
	     hmac(salted, sizeof(salted), "Client Key", 10, client_key) &&
	     hmac(salted, sizeof(salted), "Server Key", 10, server_key);
	OPENSSL_cleanse(salted, sizeof(salted));
	return ok;
}

static bool auth_message(char *buf, size_t cap, size_t *n, const char *first_bare, size_t fblen,
			 const char *server_first, size_t sflen, const char *final_wo_proof, size_t cflen)
{
	if (fblen + sflen + cflen + 2 > cap)
		return false;
	memcpy(buf, first_bare, fblen);
	buf[fblen] = ',';
	memcpy(buf + fblen + 1, server_first, sflen);
	buf[fblen + 1 + sflen] = ',';
	memcpy(buf + fblen + sflen + 2, final_wo_proof, cflen);
	*n = fblen + sflen + cflen + 2;
	return true;
}

/* Copies n bytes and a NUL into out; the caller's buffer is never overrun. */
static bool emit(const char *s, size_t n, char *out, size_t outcap, size_t *outlen)
{
	if (!out || n + 1 > outcap)
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	if (outlen)
		*outlen = n;
	return true;
}

static bool secret_usable(const struct scram_secret *s)
{
	return s->iterations >= 1 && s->salt_len >= 1 && s->salt_len <= SCRAM_MAX_SALT;
}

/* ---- Verifiers ---- */

/* Decodes the base64 field [p, end) into exactly `want` bytes (or 1..want when !exact). */
static int decode_field(const char *p, const char *end, uint8_t *out, size_t want, bool exact)
{
	int n = b64_decode(p, (size_t)(end - p), out, want);

	if (n < 1 || (exact && (size_t)n != want))
		return -1;
	return n;
}

bool scram_parse_secret(const char *text, struct scram_secret *out)
{
	struct scram_secret s;
	const char *p, *colon, *dollar, *colon2, *end;
	int n;

	if (!text || strncmp(text, SECRET_PREFIX, strlen(SECRET_PREFIX)) != 0)
		return false;
	memset(&s, 0, sizeof(s));
	p = text + strlen(SECRET_PREFIX);
	end = p + strlen(p);
	colon = strchr(p, ':');
	dollar = colon ? strchr(colon + 1, '$') : NULL;
	colon2 = dollar ? strchr(dollar + 1, ':') : NULL;
	if (!colon2)
		return false;
	/* Stored verifiers were made by PostgreSQL or an admin, not by a peer, so any positive int
	 * count is accepted here; rejecting one would make it look like a plaintext password. */
	if (!parse_iterations(p, (size_t)(colon - p), INT_MAX, &s.iterations))
		return false;
	n = decode_field(colon + 1, dollar, s.salt, SCRAM_MAX_SALT, false);
	if (n < 0)
		return false;
	s.salt_len = n;
	if (decode_field(dollar + 1, colon2, s.stored_key, SCRAM_KEY_LEN, true) < 0 ||
	    decode_field(colon2 + 1, end, s.server_key, SCRAM_KEY_LEN, true) < 0) {
		OPENSSL_cleanse(&s, sizeof(s));
		return false;
	}
	if (out)
		*out = s;
	OPENSSL_cleanse(&s, sizeof(s));
	return true;
}

bool scram_secret_from_password(const char *password, const uint8_t *salt, int salt_len,
				int iterations, struct scram_secret *out)
{
	uint8_t client_key[SCRAM_KEY_LEN];
	bool ok;

	if (!password || !salt || salt_len < 1 || salt_len > SCRAM_MAX_SALT ||
	    iterations < 1 || iterations > SCRAM_MAX_ITERATIONS)
		return false;
	memset(out, 0, sizeof(*out));
	ok = derive_keys(password, salt, salt_len, iterations, client_key, out->server_key) &&
	     sha256(client_key, sizeof(client_key), out->stored_key);
	OPENSSL_cleanse(client_key, sizeof(client_key));
	if (!ok) {
		OPENSSL_cleanse(out, sizeof(*out));
		return false;
	}
	out->iterations = iterations;
	memcpy(out->salt, salt, (size_t)salt_len);
	out->salt_len = salt_len;
	return true;
}

bool scram_format_secret(const struct scram_secret *s, char *out, size_t outcap)
{
	char salt[SCRAM_MAX_SALT / 3 * 4 + 8], stored[KEY_B64_LEN + 1], server[KEY_B64_LEN + 1];
	int n;

	if (!s || !out || !secret_usable(s))
		return false;
	if (b64_encode(s->salt, (size_t)s->salt_len, salt, sizeof(salt)) < 0 ||
	    b64_encode(s->stored_key, SCRAM_KEY_LEN, stored, sizeof(stored)) < 0 ||
	    b64_encode(s->server_key, SCRAM_KEY_LEN, server, sizeof(server)) < 0)
		return false;
	n = snprintf(out, outcap, SECRET_PREFIX "%d:%s$%s:%s", s->iterations, salt, stored, server);
	OPENSSL_cleanse(stored, sizeof(stored));
	OPENSSL_cleanse(server, sizeof(server));
	if (n < 0 || (size_t)n >= outcap) {
		if (outcap > 0)
			OPENSSL_cleanse(out, outcap);
		return false;
	}
	return true;
}

/* ---- Mock salts ---- */

/* pgmux is one thread, so the key needs no lock; it lives as long as the process. */
static uint8_t mock_key[SCRAM_MOCK_KEY_LEN];
static bool mock_key_ready;

bool scram_mock_salt(const uint8_t key[SCRAM_MOCK_KEY_LEN], const char *user,
		     uint8_t out[SCRAM_SALT_LEN])
{
	uint8_t digest[SCRAM_KEY_LEN];
	unsigned int len = 0;
	EVP_MD_CTX *ctx;
	bool ok;

	if (!key || !user || !out)
		return false;
	ctx = EVP_MD_CTX_new();
	/* The key has a fixed length, so key || user is unambiguous without a separator. */
	ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, key, SCRAM_MOCK_KEY_LEN) == 1 &&
	     EVP_DigestUpdate(ctx, user, strlen(user)) == 1 &&
	     EVP_DigestFinal_ex(ctx, digest, &len) == 1 && len == SCRAM_KEY_LEN;
	EVP_MD_CTX_free(ctx);
	if (ok)
		memcpy(out, digest, SCRAM_SALT_LEN);
	OPENSSL_cleanse(digest, sizeof(digest));
	return ok;
}

bool scram_mock_init(void)
{
	if (mock_key_ready)
		return true;
	if (RAND_bytes(mock_key, sizeof(mock_key)) != 1) {
		OPENSSL_cleanse(mock_key, sizeof(mock_key));
		return false;
	}
	mock_key_ready = true;
	return true;
}

bool scram_process_salt(const char *user, uint8_t out[SCRAM_SALT_LEN])
{
	return scram_mock_init() && scram_mock_salt(mock_key, user, out);
}

bool scram_mock_secret(const char *user, struct scram_secret *out)
{
	if (!out)
		return false;
	memset(out, 0, sizeof(*out));
	if (!scram_process_salt(user, out->salt))
		return false;
	out->salt_len = SCRAM_SALT_LEN;
	out->iterations = SCRAM_DEFAULT_ITERATIONS;
	/* Random keys: no proof can hash to an unknown random StoredKey, and the doomed flag
	 * fails the exchange even if one did.  Should the RNG fail, zero keys serve as well. */
	if (!pwcrypt_random(out->stored_key, SCRAM_KEY_LEN) ||
	    !pwcrypt_random(out->server_key, SCRAM_KEY_LEN)) {
		memset(out->stored_key, 0, SCRAM_KEY_LEN);
		memset(out->server_key, 0, SCRAM_KEY_LEN);
	}
	return true;
}

/* ---- Server side ---- */

static bool random_nonce(char *out, size_t outcap)
{
	uint8_t raw[SCRAM_NONCE_LEN];
	bool ok = pwcrypt_random(raw, sizeof(raw)) && b64_encode(raw, sizeof(raw), out, outcap) > 0;

	OPENSSL_cleanse(raw, sizeof(raw));
	return ok;
}

int scram_server_first_with_nonce(struct scram_server *st, const char *msg, size_t len,
				  const char *server_nonce, char *out, size_t outcap, size_t *outlen,
				  char *err, size_t errlen)
{
	char salt_b64[SCRAM_MAX_SALT / 3 * 4 + 8], reply[sizeof(st->server_first)];
	const char *bare;
	size_t barelen, pos = 0, snlen;
	struct attr user, nonce, ext;
	int n;

	if (st->server_first[0] || st->done) {
		set_err(err, errlen, "SCRAM exchange already started");
		return -1;
	}
	if (!secret_usable(&st->secret)) {
		set_err(err, errlen, "no usable SCRAM secret for this user");
		return -1;
	}
	if (!check_message(msg, len, err, errlen))
		return -1;

	/* gs2-header.  pgmux never advertises SCRAM-SHA-256-PLUS, so "p=" is a client breaking the
	 * protocol, while "y" (client could bind, thinks we cannot) is honest and accepted. */
	if (msg[0] == 'p') {
		set_err(err, errlen, "SCRAM channel binding is not supported");
		return -1;
	}
	if ((msg[0] != 'n' && msg[0] != 'y') || len < 3 || msg[1] != ',') {
		set_err(err, errlen, "malformed SCRAM message (bad GS2 header)");
		return -1;
	}
	if (msg[2] == 'a') {
		set_err(err, errlen, "SCRAM authorization identity is not supported");
		return -1;
	}
	if (msg[2] != ',') {
		set_err(err, errlen, "malformed SCRAM message (bad GS2 header)");
		return -1;
	}
	bare = msg + 3;
	barelen = len - 3;

	/* client-first-message-bare: n=<user>,r=<nonce>[,extensions].  The user name is ignored:
	 * PostgreSQL takes it from the startup packet, and libpq sends "n=". */
	if (barelen >= 2 && bare[0] == 'm' && bare[1] == '=') {
		set_err(err, errlen, "SCRAM mandatory extension is not supported");
		return -1;
	}
	if (!read_attr(bare, barelen, &pos, &user) || user.name != 'n') {
		set_err(err, errlen, "malformed SCRAM message (expected n= attribute)");
		return -1;
	}
	if (!read_attr(bare, barelen, &pos, &nonce) || nonce.name != 'r') {
		set_err(err, errlen, "malformed SCRAM message (expected r= attribute)");
		return -1;
	}
	if (!valid_nonce(nonce.val, nonce.len)) {
		set_err(err, errlen, "malformed SCRAM message (invalid client nonce)");
		return -1;
	}
	while (pos < barelen)
		if (!read_attr(bare, barelen, &pos, &ext)) {
			set_err(err, errlen, "malformed SCRAM message (bad attribute)");
			return -1;
		}

	snlen = server_nonce ? strlen(server_nonce) : 0;
	if (!valid_nonce(server_nonce, snlen)) {
		set_err(err, errlen, "invalid server nonce");
		return -1;
	}
	if (nonce.len + snlen + 1 > sizeof(st->nonce)) {
		set_err(err, errlen, "SCRAM client nonce too long");
		return -1;
	}
	if (barelen + 1 > sizeof(st->client_first_bare)) {
		set_err(err, errlen, "SCRAM client-first-message too long");
		return -1;
	}
	if (b64_encode(st->secret.salt, (size_t)st->secret.salt_len, salt_b64, sizeof(salt_b64)) < 0) {
		set_err(err, errlen, "cannot encode SCRAM salt");
		return -1;
	}
	n = snprintf(reply, sizeof(reply), "r=%.*s%s,s=%s,i=%d", (int)nonce.len, nonce.val,
		     server_nonce, salt_b64, st->secret.iterations);
	if (n < 0 || (size_t)n >= sizeof(reply) || !emit(reply, (size_t)n, out, outcap, outlen)) {
		set_err(err, errlen, "SCRAM server-first-message does not fit");
		return -1;
	}

	memcpy(st->client_first_bare, bare, barelen);
	st->client_first_bare[barelen] = '\0';
	memcpy(st->nonce, nonce.val, nonce.len);
	memcpy(st->nonce + nonce.len, server_nonce, snlen + 1);
	memcpy(st->server_first, reply, (size_t)n + 1);
	st->gs2_flag = msg[0];
	return 0;
}

int scram_server_first(struct scram_server *st, const char *msg, size_t len,
		       char *out, size_t outcap, size_t *outlen, char *err, size_t errlen)
{
	char server_nonce[SCRAM_NONCE_LEN / 3 * 4 + 1];

	if (!random_nonce(server_nonce, sizeof(server_nonce))) {
		set_err(err, errlen, "could not generate a SCRAM nonce");
		return -1;
	}
	return scram_server_first_with_nonce(st, msg, len, server_nonce, out, outcap, outlen, err, errlen);
}

int scram_server_final(struct scram_server *st, const char *msg, size_t len,
		       char *out, size_t outcap, size_t *outlen, char *err, size_t errlen)
{
	char auth[AUTH_MESSAGE_MAX], reply[2 + KEY_B64_LEN + 1];
	uint8_t proof[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], key[SCRAM_KEY_LEN], check[SCRAM_KEY_LEN];
	struct attr cb, nonce, a, p = { 0 };
	size_t pos = 0, amlen = 0;
	bool have_proof = false, ok;
	const char *want_cb;

	if (!st->server_first[0] || st->done) {
		set_err(err, errlen, "SCRAM client-final-message out of order");
		return -1;
	}
	if (!check_message(msg, len, err, errlen))
		return -1;

	/* c=<base64 gs2-header>,r=<nonce>[,extensions],p=<proof> */
	if (!read_attr(msg, len, &pos, &cb) || cb.name != 'c') {
		set_err(err, errlen, "malformed SCRAM message (expected c= attribute)");
		return -1;
	}
	/* The gs2 header echoed back must be the one the client began with: "n,," or "y,,". */
	want_cb = st->gs2_flag == 'y' ? "eSws" : "biws";
	if (cb.len != 4 || memcmp(cb.val, want_cb, 4) != 0) {
		set_err(err, errlen, "unexpected SCRAM channel-binding attribute");
		return -1;
	}
	if (!read_attr(msg, len, &pos, &nonce) || nonce.name != 'r') {
		set_err(err, errlen, "malformed SCRAM message (expected r= attribute)");
		return -1;
	}
	if (nonce.len != strlen(st->nonce) || memcmp(nonce.val, st->nonce, nonce.len) != 0) {
		set_err(err, errlen, "SCRAM nonce mismatch");
		return -1;
	}
	while (pos < len) {
		if (!read_attr(msg, len, &pos, &a)) {
			set_err(err, errlen, "malformed SCRAM message (bad attribute)");
			return -1;
		}
		if (a.name == 'p') {
			p = a;
			have_proof = true;
			break;
		}
	}
	if (!have_proof) {
		set_err(err, errlen, "malformed SCRAM message (missing proof)");
		return -1;
	}
	if (pos != len) {
		set_err(err, errlen, "malformed SCRAM message (proof is not last)");
		return -1;
	}
	if (b64_decode(p.val, p.len, proof, sizeof(proof)) != SCRAM_KEY_LEN) {
		set_err(err, errlen, "malformed SCRAM message (invalid proof)");
		return -1;
	}
	/* client-final-message-without-proof ends just before ",p=". */
	if (!auth_message(auth, sizeof(auth), &amlen, st->client_first_bare, strlen(st->client_first_bare),
			  st->server_first, strlen(st->server_first), msg, p.start - 1)) {
		set_err(err, errlen, "SCRAM message too long");
		return -1;
	}

	/* ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); it is right when its hash is
	 * the StoredKey.  The compare is constant-time so a forger learns nothing from timing. */
	ok = hmac(st->secret.stored_key, SCRAM_KEY_LEN, auth, amlen, sig);
	for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
		key[i] = proof[i] ^ sig[i];
	ok = ok && sha256(key, sizeof(key), check) &&
	     CRYPTO_memcmp(check, st->secret.stored_key, SCRAM_KEY_LEN) == 0;
	/* A doomed exchange did all of the above too, so it fails in the same time and with the
	 * same message as a wrong password. */
	ok = ok && !st->doomed;
	if (!ok) {
		set_err(err, errlen, "SCRAM authentication failed (invalid proof)");
		goto fail;
	}
	memcpy(reply, "v=", 2);
	if (!hmac(st->secret.server_key, SCRAM_KEY_LEN, auth, amlen, sig) ||
	    b64_encode(sig, sizeof(sig), reply + 2, sizeof(reply) - 2) != KEY_B64_LEN ||
	    !emit(reply, 2 + KEY_B64_LEN, out, outcap, outlen)) {
		set_err(err, errlen, "SCRAM server-final-message does not fit");
		ok = false;
		goto fail;
	}
	memcpy(st->client_key, key, SCRAM_KEY_LEN);
	st->done = true;
	ok = true;
fail:
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(proof, sizeof(proof));
	OPENSSL_cleanse(sig, sizeof(sig));
	OPENSSL_cleanse(auth, amlen);
	return ok ? 0 : -1;
}

/* ---- Client side ---- */

int scram_client_first_with_nonce(struct scram_client *st, const char *user, const char *nonce,
				  char *out, size_t outcap, size_t *outlen)
{
	char bare[sizeof(st->client_first_bare)], msg[sizeof(bare) + 3];
	size_t nlen = nonce ? strlen(nonce) : 0, b = 0;

	if (!valid_nonce(nonce, nlen) || nlen >= sizeof(st->client_nonce))
		return -1;
	/* saslname escaping: ',' and '=' would otherwise end or confuse the attribute. */
	memcpy(bare, "n=", 2);
	b = 2;
	for (const char *u = user ? user : ""; *u; u++) {
		const char *rep = *u == ',' ? "=2C" : *u == '=' ? "=3D" : NULL;
		size_t rlen = rep ? 3 : 1;

		if (b + rlen >= sizeof(bare))
			return -1;
		if (rep)
			memcpy(bare + b, rep, 3);
		else
			bare[b] = *u;
		b += rlen;
	}
	if (b + 3 + nlen >= sizeof(bare))
		return -1;
	memcpy(bare + b, ",r=", 3);
	memcpy(bare + b + 3, nonce, nlen);
	b += 3 + nlen;
	bare[b] = '\0';

	/* pgmux binds no channel as a client either, so the header is always "n,,". */
	memcpy(msg, "n,,", 3);
	memcpy(msg + 3, bare, b + 1);
	if (!emit(msg, b + 3, out, outcap, outlen))
		return -1;
	memcpy(st->client_nonce, nonce, nlen + 1);
	memcpy(st->client_first_bare, bare, b + 1);
	st->final_sent = false;
	return 0;
}

int scram_client_first(struct scram_client *st, char *out, size_t outcap, size_t *outlen)
{
	char nonce[SCRAM_NONCE_LEN / 3 * 4 + 1];

	if (!random_nonce(nonce, sizeof(nonce)))
		return -1;
	return scram_client_first_with_nonce(st, NULL, nonce, out, outcap, outlen);
}

int scram_client_final(struct scram_client *st, const char *server_first, size_t len,
		       char *out, size_t outcap, size_t *outlen, char *err, size_t errlen)
{
	char auth[AUTH_MESSAGE_MAX], reply[SCRAM_MAX_MESSAGE + 64];
	uint8_t salt[SCRAM_MAX_SALT], client_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
	uint8_t stored[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
	struct attr nonce, s, it, ext;
	size_t pos = 0, cn, amlen = 0, r;
	int salt_len, iterations, n;
	int rc = -1;

	if (!st->client_first_bare[0] || st->final_sent) {
		set_err(err, errlen, "SCRAM server-first-message out of order");
		return -1;
	}
	if (!check_message(server_first, len, err, errlen))
		return -1;

	/* server-first-message: r=<nonce>,s=<salt>,i=<iterations>[,extensions] */
	if (len >= 2 && server_first[0] == 'm' && server_first[1] == '=') {
		set_err(err, errlen, "SCRAM mandatory extension is not supported");
		return -1;
	}
	if (!read_attr(server_first, len, &pos, &nonce) || nonce.name != 'r') {
		set_err(err, errlen, "malformed SCRAM message (expected r= attribute)");
		return -1;
	}
	cn = strlen(st->client_nonce);
	if (!valid_nonce(nonce.val, nonce.len) || nonce.len <= cn ||
	    memcmp(nonce.val, st->client_nonce, cn) != 0) {
		set_err(err, errlen, "SCRAM nonce mismatch");
		return -1;
	}
	if (!read_attr(server_first, len, &pos, &s) || s.name != 's') {
		set_err(err, errlen, "malformed SCRAM message (expected s= attribute)");
		return -1;
	}
	salt_len = b64_decode(s.val, s.len, salt, sizeof(salt));
	if (salt_len < 1) {
		set_err(err, errlen, "malformed SCRAM message (invalid salt)");
		return -1;
	}
	if (!read_attr(server_first, len, &pos, &it) || it.name != 'i') {
		set_err(err, errlen, "malformed SCRAM message (expected i= attribute)");
		return -1;
	}
	/* With pass-through keys no PBKDF2 runs, so any count the keys were made with is fine
	 * (it is checked against key_iterations below); with a password the count is CPU time. */
	if (!parse_iterations(it.val, it.len, st->password ? SCRAM_MAX_ITERATIONS : INT_MAX, &iterations)) {
		set_err(err, errlen, "SCRAM iteration count out of range (1..%d)",
			st->password ? SCRAM_MAX_ITERATIONS : INT_MAX);
		return -1;
	}
	while (pos < len)
		if (!read_attr(server_first, len, &pos, &ext)) {
			set_err(err, errlen, "malformed SCRAM message (bad attribute)");
			return -1;
		}

	if (st->password) {
		if (!derive_keys(st->password, salt, salt_len, iterations, client_key, server_key)) {
			set_err(err, errlen, "SCRAM key derivation failed");
			goto out;
		}
	} else if (st->have_keys) {
		/* The keys are bound to the salt and count they were made with; a server holding a
		 * different verifier cannot be answered without the password. */
		if (st->key_salt_len != salt_len || st->key_iterations != iterations ||
		    memcmp(st->key_salt, salt, (size_t)salt_len) != 0) {
			set_err(err, errlen, "server's SCRAM salt or iteration count differs from the stored secret; "
				"SCRAM pass-through is impossible");
			return -1;
		}
		memcpy(client_key, st->client_key, SCRAM_KEY_LEN);
		memcpy(server_key, st->server_key, SCRAM_KEY_LEN);
	} else {
		set_err(err, errlen, "no password or SCRAM keys to log in with");
		return -1;
	}

	/* client-final-message-without-proof, then the proof after it in the same buffer. */
	n = snprintf(reply, sizeof(reply), "c=biws,r=%.*s", (int)nonce.len, nonce.val);
	if (n < 0 || (size_t)n >= sizeof(reply)) {
		set_err(err, errlen, "SCRAM message too long");
		goto out;
	}
	r = (size_t)n;
	if (!auth_message(auth, sizeof(auth), &amlen, st->client_first_bare, strlen(st->client_first_bare),
			  server_first, len, reply, r)) {
		set_err(err, errlen, "SCRAM message too long");
		goto out;
	}
	if (!sha256(client_key, sizeof(client_key), stored) ||
	    !hmac(stored, sizeof(stored), auth, amlen, sig)) {
		set_err(err, errlen, "SCRAM computation failed");
		goto out;
	}
	for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
		proof[i] = client_key[i] ^ sig[i];
	if (!hmac(server_key, sizeof(server_key), auth, amlen, st->expected_server_sig)) {
		set_err(err, errlen, "SCRAM computation failed");
		goto out;
	}
	if (r + 3 + KEY_B64_LEN + 1 > sizeof(reply)) {
		set_err(err, errlen, "SCRAM message too long");
		goto out;
	}
	memcpy(reply + r, ",p=", 3);
	r += 3;
	if (b64_encode(proof, sizeof(proof), reply + r, sizeof(reply) - r) != KEY_B64_LEN ||
	    !emit(reply, r + KEY_B64_LEN, out, outcap, outlen)) {
		set_err(err, errlen, "SCRAM client-final-message does not fit");
		goto out;
	}
	st->final_sent = true;
	rc = 0;
out:
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(server_key, sizeof(server_key));
	OPENSSL_cleanse(stored, sizeof(stored));
	OPENSSL_cleanse(sig, sizeof(sig));
	OPENSSL_cleanse(proof, sizeof(proof));
	OPENSSL_cleanse(auth, amlen);
	if (rc != 0)
		OPENSSL_cleanse(st->expected_server_sig, sizeof(st->expected_server_sig));
	return rc;
}

int scram_client_verify(struct scram_client *st, const char *server_final, size_t len,
			char *err, size_t errlen)
{
	uint8_t sig[SCRAM_KEY_LEN];
	struct attr v, ext;
	size_t pos = 0;

	if (!st->final_sent) {
		set_err(err, errlen, "SCRAM server-final-message out of order");
		return -1;
	}
	if (!check_message(server_final, len, err, errlen))
		return -1;
	if (!read_attr(server_final, len, &pos, &v) || (v.name != 'v' && v.name != 'e')) {
		set_err(err, errlen, "malformed SCRAM message (expected v= attribute)");
		return -1;
	}
	if (v.name == 'e') {
		/* The server's reason is echoed, but only printable ASCII and bounded, since it came
		 * off the network. */
		char reason[64];
		size_t n = 0;

		for (size_t i = 0; i < v.len && n + 1 < sizeof(reason); i++)
			reason[n++] = v.val[i] >= 0x20 && v.val[i] < 0x7f ? v.val[i] : '?';
		reason[n] = '\0';
		set_err(err, errlen, "server rejected SCRAM authentication: %s", reason);
		return -1;
	}
	while (pos < len)
		if (!read_attr(server_final, len, &pos, &ext)) {
			set_err(err, errlen, "malformed SCRAM message (bad attribute)");
			return -1;
		}
	if (b64_decode(v.val, v.len, sig, sizeof(sig)) != SCRAM_KEY_LEN) {
		set_err(err, errlen, "malformed SCRAM message (invalid server signature)");
		return -1;
	}
	if (CRYPTO_memcmp(sig, st->expected_server_sig, SCRAM_KEY_LEN) != 0) {
		set_err(err, errlen, "SCRAM server signature mismatch");
		return -1;
	}
	return 0;
}
