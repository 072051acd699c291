/* test_scram.c: cmocka tests for SCRAM-SHA-256: RFC 7677 vectors, PostgreSQL verifiers, round trips, mock salts, bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "scram.h"

/* RFC 7677 section 3. */
#define RFC_CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_NONCE RFC_CLIENT_NONCE RFC_SERVER_NONCE
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CLIENT_NONCE
#define RFC_SERVER_FIRST "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
/* The verifier for "pencil" with the RFC's salt, and its ClientKey (both from Python's
 * hashlib.pbkdf2_hmac + hmac). */
#define RFC_VERIFIER "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
static const uint8_t rfc_client_key[SCRAM_KEY_LEN] = {
	0xa6, 0x0f, 0xc9, 0x23, 0xd6, 0x7e, 0x86, 0x44, 0xa9, 0x2d, 0x16, 0xb9, 0x6e, 0xda, 0x5e, 0xf4,
	0x65, 0x6b, 0x0c, 0x72, 0x5c, 0x48, 0x43, 0x74, 0xbe, 0x25, 0x53, 0x55, 0x76, 0x99, 0x6e, 0x8b,
};

/* Made by PostgreSQL 15 for CREATE ROLE alice PASSWORD 'correct horse'. */
#define PG_VERIFIER "SCRAM-SHA-256$4096:7t+Kps6m6PA+Lpa4OJ8v1A==$5aK65TzaT39RB1OjgUkMFjsUJzjfORxN+GXVnXRtYnA=:llI7UYsyuyjOsqKdCdtvXaEfI5jtnDPWnvHRIcc9eAk="
#define PG_PASSWORD "correct horse"

#define BUF 1024

static void load_secret(struct scram_secret *s, const char *text)
{
	assert_true(scram_parse_secret(text, s));
}

/* ---- verifiers ---- */

static void test_parse_pg_secret(void **state)
{
	struct scram_secret s, d;
	char out[SCRAM_SECRET_MAXLEN];
	static const uint8_t salt[16] = { 0xee, 0xdf, 0x8a, 0xa6, 0xce, 0xa6, 0xe8, 0xf0,
					  0x3e, 0x2e, 0x96, 0xb8, 0x38, 0x9f, 0x2f, 0xd4 };

	(void)state;
	load_secret(&s, PG_VERIFIER);
	assert_int_equal(s.iterations, 4096);
	assert_int_equal(s.salt_len, 16);
	assert_memory_equal(s.salt, salt, sizeof(salt));

	/* Deriving from the password gives exactly what PostgreSQL stored. */
	assert_true(scram_secret_from_password(PG_PASSWORD, s.salt, s.salt_len, s.iterations, &d));
	assert_int_equal(d.iterations, s.iterations);
	assert_int_equal(d.salt_len, s.salt_len);
	assert_memory_equal(d.salt, s.salt, (size_t)s.salt_len);
	assert_memory_equal(d.stored_key, s.stored_key, SCRAM_KEY_LEN);
	assert_memory_equal(d.server_key, s.server_key, SCRAM_KEY_LEN);

	assert_true(scram_format_secret(&d, out, sizeof(out)));
	assert_string_equal(out, PG_VERIFIER);
	/* One character off gives unrelated keys. */
	assert_true(scram_secret_from_password("correct horsf", s.salt, s.salt_len, s.iterations, &d));
	assert_memory_not_equal(d.stored_key, s.stored_key, SCRAM_KEY_LEN);
	assert_memory_not_equal(d.server_key, s.server_key, SCRAM_KEY_LEN);
}

static void test_rfc_secret(void **state)
{
	struct scram_secret s;
	uint8_t salt[16];
	char out[SCRAM_SECRET_MAXLEN];

	(void)state;
	assert_int_equal(EVP_DecodeBlock(salt, (const unsigned char *)"W22ZaJ0SNY7soEsUEjb6gQ==", 24), 18);
	assert_true(scram_secret_from_password("pencil", salt, 16, 4096, &s));
	assert_true(scram_format_secret(&s, out, sizeof(out)));
	assert_string_equal(out, RFC_VERIFIER);
	/* Too small an output buffer is refused, not overrun. */
	assert_false(scram_format_secret(&s, out, 40));
	/* Iteration and salt limits. */
	assert_false(scram_secret_from_password("pencil", salt, 16, 0, &s));
	assert_false(scram_secret_from_password("pencil", salt, 16, SCRAM_MAX_ITERATIONS + 1, &s));
	assert_false(scram_secret_from_password("pencil", salt, 0, 4096, &s));
	assert_false(scram_secret_from_password("pencil", salt, SCRAM_MAX_SALT + 1, 4096, &s));
}

static void test_parse_secret_bad(void **state)
{
	static const char *const bad[] = {
		"",
		"md553f48b7c4b76a86ce72276c5755f217d",
		"SCRAM-SHA-256",
		"SCRAM-SHA-256$",
		"scram-sha-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		/* iterations */
		"SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$+4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$40x6:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$99999999999:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4294967296:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		/* salt */
		"SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6g!==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096: W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		/* 66-byte salt: longer than SCRAM_MAX_SALT */
		"SCRAM-SHA-256$4096:QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		/* keys of the wrong length, bad characters, or missing */
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4g==:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=:",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU= ",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==",
		"SCRAM-SHA-256$4096",
		/* non-zero bits under the padding: a second spelling of the same salt */
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gR==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	};
	struct scram_secret s;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (scram_parse_secret(bad[i], &s))
			fail_msg("accepted bad verifier #%zu: %s", i, bad[i]);
	}
	assert_false(scram_parse_secret(NULL, &s));
	/* A large but valid stored count is not mistaken for garbage. */
	assert_true(scram_parse_secret("SCRAM-SHA-256$20000000:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=", &s));
	assert_int_equal(s.iterations, 20000000);
	/* The largest salt, SCRAM_MAX_SALT bytes, is accepted and formats back identically. */
	{
		static const char max_salt[] = "SCRAM-SHA-256$1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
		char out[SCRAM_SECRET_MAXLEN];

		assert_true(scram_parse_secret(max_salt, &s));
		assert_int_equal(s.salt_len, SCRAM_MAX_SALT);
		assert_int_equal(s.salt[63], 63);
		assert_true(scram_format_secret(&s, out, sizeof(out)));
		assert_string_equal(out, max_salt);
	}
	/* out may be NULL when only validity matters. */
	assert_true(scram_parse_secret(RFC_VERIFIER, NULL));
}

/* ---- RFC 7677 vector ---- */

static void test_rfc7677_server(void **state)
{
	struct scram_server sv;
	char out[BUF], err[256];
	size_t outlen = 0;

	(void)state;
	memset(&sv, 0, sizeof(sv));
	load_secret(&sv.secret, RFC_VERIFIER);
	/* The RFC's client names the user; pgmux accepts any n= and ignores it. */
	assert_int_equal(scram_server_first_with_nonce(&sv, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST),
						       RFC_SERVER_NONCE, out, sizeof(out), &outlen,
						       err, sizeof(err)), 0);
	assert_string_equal(out, RFC_SERVER_FIRST);
	assert_int_equal(outlen, strlen(RFC_SERVER_FIRST));
	assert_int_equal(scram_server_final(&sv, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL),
					    out, sizeof(out), &outlen, err, sizeof(err)), 0);
	assert_string_equal(out, RFC_SERVER_FINAL);
	assert_int_equal(outlen, strlen(RFC_SERVER_FINAL));
	assert_true(sv.done);
	assert_memory_equal(sv.client_key, rfc_client_key, SCRAM_KEY_LEN);
	/* A second final on a finished exchange is refused. */
	assert_int_equal(scram_server_final(&sv, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL),
					    out, sizeof(out), &outlen, err, sizeof(err)), -1);
}

static void rfc_client_run(struct scram_client *cl)
{
	char out[BUF], err[256];
	size_t outlen = 0;

	assert_int_equal(scram_client_first_with_nonce(cl, "user", RFC_CLIENT_NONCE, out, sizeof(out), &outlen), 0);
	assert_string_equal(out, RFC_CLIENT_FIRST);
	assert_int_equal(outlen, strlen(RFC_CLIENT_FIRST));
	err[0] = '\0';
	if (scram_client_final(cl, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out, sizeof(out),
			       &outlen, err, sizeof(err)) != 0)
		fail_msg("client_final: %s", err);
	assert_string_equal(out, RFC_CLIENT_FINAL);
	assert_int_equal(outlen, strlen(RFC_CLIENT_FINAL));
	assert_int_equal(scram_client_verify(cl, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err, sizeof(err)), 0);
}

static void test_rfc7677_client_password(void **state)
{
	struct scram_client cl;

	(void)state;
	memset(&cl, 0, sizeof(cl));
	cl.password = "pencil";
	rfc_client_run(&cl);
}

static void test_rfc7677_client_keys(void **state)
{
	struct scram_client cl;
	struct scram_secret s;

	(void)state;
	load_secret(&s, RFC_VERIFIER);
	memset(&cl, 0, sizeof(cl));
	cl.have_keys = true;
	memcpy(cl.client_key, rfc_client_key, SCRAM_KEY_LEN);
	memcpy(cl.server_key, s.server_key, SCRAM_KEY_LEN);
	memcpy(cl.key_salt, s.salt, (size_t)s.salt_len);
	cl.key_salt_len = s.salt_len;
	cl.key_iterations = s.iterations;
	rfc_client_run(&cl);
}

/* ---- round trips ---- */

/* Runs a whole exchange between the two sides; returns 0 when both accept. */
static int exchange(struct scram_server *sv, struct scram_client *cl, char *err, size_t errlen)
{
	char a[BUF], b[BUF];
	size_t alen, blen;

	if (scram_client_first(cl, a, sizeof(a), &alen) != 0) {
		snprintf(err, errlen, "client_first failed");
		return -1;
	}
	assert_int_equal(alen, strlen(a));
	if (scram_server_first(sv, a, alen, b, sizeof(b), &blen, err, errlen) != 0)
		return -1;
	if (scram_client_final(cl, b, blen, a, sizeof(a), &alen, err, errlen) != 0)
		return -2;
	if (scram_server_final(sv, a, alen, b, sizeof(b), &blen, err, errlen) != 0)
		return -3;
	if (scram_client_verify(cl, b, blen, err, errlen) != 0)
		return -4;
	return 0;
}

static void make_secret(struct scram_secret *s, const char *password, int iterations)
{
	uint8_t salt[16];

	for (size_t i = 0; i < sizeof(salt); i++)
		salt[i] = (uint8_t)(i * 37 + 11);
	assert_true(scram_secret_from_password(password, salt, sizeof(salt), iterations, s));
}

static void test_round_trip_password(void **state)
{
	struct scram_server sv;
	struct scram_client cl;
	char err[256] = "";
	int rc;

	(void)state;
	memset(&sv, 0, sizeof(sv));
	memset(&cl, 0, sizeof(cl));
	make_secret(&sv.secret, "s3cr3t, with = signs", 4096);
	cl.password = "s3cr3t, with = signs";
	rc = exchange(&sv, &cl, err, sizeof(err));
	if (rc != 0)
		fail_msg("exchange failed at %d: %s", rc, err);
	assert_true(sv.done);
	/* libpq-style client-first: empty user, random 24-character nonce. */
	assert_int_equal(strncmp(cl.client_first_bare, "n=,r=", 5), 0);
	assert_int_equal(strlen(cl.client_nonce), 24);
	assert_int_equal(strlen(sv.nonce), 48);
	assert_int_equal(strncmp(sv.nonce, cl.client_nonce, 24), 0);
}

static void test_wrong_password(void **state)
{
	struct scram_server sv;
	struct scram_client cl;
	char err[256] = "";

	(void)state;
	memset(&sv, 0, sizeof(sv));
	memset(&cl, 0, sizeof(cl));
	make_secret(&sv.secret, "right", 4096);
	cl.password = "wrong";
	assert_int_equal(exchange(&sv, &cl, err, sizeof(err)), -3);
	assert_non_null(strstr(err, "invalid proof"));
	assert_false(sv.done);
	assert_null(strstr(err, "wrong"));
	assert_null(strstr(err, "right"));
}

static void fill_keys_from(struct scram_client *cl, const struct scram_server *sv)
{
	cl->have_keys = true;
	memcpy(cl->client_key, sv->client_key, SCRAM_KEY_LEN);
	memcpy(cl->server_key, sv->secret.server_key, SCRAM_KEY_LEN);
	memcpy(cl->key_salt, sv->secret.salt, (size_t)sv->secret.salt_len);
	cl->key_salt_len = sv->secret.salt_len;
	cl->key_iterations = sv->secret.iterations;
}

/* An application logs in to pgmux with its password; pgmux then logs in to PostgreSQL (which
 * holds the same verifier) with only the recovered ClientKey. */
static void test_passthrough_round_trip(void **state)
{
	struct scram_server front, back;
	struct scram_client app, pgmux;
	char err[256] = "";
	int rc;

	(void)state;
	memset(&front, 0, sizeof(front));
	memset(&back, 0, sizeof(back));
	memset(&app, 0, sizeof(app));
	memset(&pgmux, 0, sizeof(pgmux));
	load_secret(&front.secret, PG_VERIFIER);
	load_secret(&back.secret, PG_VERIFIER);
	app.password = PG_PASSWORD;
	rc = exchange(&front, &app, err, sizeof(err));
	if (rc != 0)
		fail_msg("front exchange failed at %d: %s", rc, err);

	fill_keys_from(&pgmux, &front);
	rc = exchange(&back, &pgmux, err, sizeof(err));
	if (rc != 0)
		fail_msg("pass-through exchange failed at %d: %s", rc, err);
	assert_true(back.done);
	assert_memory_equal(back.client_key, front.client_key, SCRAM_KEY_LEN);
}

static void test_passthrough_mismatch(void **state)
{
	struct scram_server front, back;
	struct scram_client app, pgmux;
	char err[256] = "";

	(void)state;
	memset(&front, 0, sizeof(front));
	memset(&app, 0, sizeof(app));
	load_secret(&front.secret, PG_VERIFIER);
	app.password = PG_PASSWORD;
	assert_int_equal(exchange(&front, &app, err, sizeof(err)), 0);

	/* Same password, different salt on the server: the keys cannot be used. */
	memset(&back, 0, sizeof(back));
	memset(&pgmux, 0, sizeof(pgmux));
	make_secret(&back.secret, PG_PASSWORD, 4096);
	fill_keys_from(&pgmux, &front);
	assert_int_equal(exchange(&back, &pgmux, err, sizeof(err)), -2);
	assert_non_null(strstr(err, "pass-through"));

	/* Same salt, different iteration count. */
	memset(&back, 0, sizeof(back));
	memset(&pgmux, 0, sizeof(pgmux));
	assert_true(scram_secret_from_password(PG_PASSWORD, front.secret.salt, front.secret.salt_len,
					       4097, &back.secret));
	fill_keys_from(&pgmux, &front);
	assert_int_equal(exchange(&back, &pgmux, err, sizeof(err)), -2);

	/* Keys for the right salt but a wrong ClientKey: the server rejects the proof. */
	memset(&back, 0, sizeof(back));
	memset(&pgmux, 0, sizeof(pgmux));
	load_secret(&back.secret, PG_VERIFIER);
	fill_keys_from(&pgmux, &front);
	pgmux.client_key[0] ^= 1;
	assert_int_equal(exchange(&back, &pgmux, err, sizeof(err)), -3);

	/* Neither a password nor keys. */
	memset(&back, 0, sizeof(back));
	memset(&pgmux, 0, sizeof(pgmux));
	load_secret(&back.secret, PG_VERIFIER);
	assert_int_equal(exchange(&back, &pgmux, err, sizeof(err)), -2);
}

/* A server that answers with the wrong key fails the client's check of v=. */
static void test_client_detects_fake_server(void **state)
{
	struct scram_server sv;
	struct scram_client cl;
	char err[256] = "";

	(void)state;
	memset(&sv, 0, sizeof(sv));
	memset(&cl, 0, sizeof(cl));
	make_secret(&sv.secret, "pw", 4096);
	/* The impostor knows StoredKey (it can check proofs) but not ServerKey. */
	sv.secret.server_key[5] ^= 0x40;
	cl.password = "pw";
	assert_int_equal(exchange(&sv, &cl, err, sizeof(err)), -4);
	assert_non_null(strstr(err, "signature"));
}

/* ---- the "y" flag ---- */

/* Builds a client-final for `cbind` by hand, with the proof computed from the ClientKey. */
static void hand_final(const char *first_bare, const char *server_first, const char *cbind,
		       const char *nonce, const uint8_t ck[SCRAM_KEY_LEN], char *out, size_t outcap)
{
	char am[BUF * 3], wo[BUF / 2];
	uint8_t stored[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
	unsigned int n = 0;
	char b64[48];

	snprintf(wo, sizeof(wo), "c=%s,r=%s", cbind, nonce);
	snprintf(am, sizeof(am), "%s,%s,%s", first_bare, server_first, wo);
	assert_int_equal(EVP_Digest(ck, SCRAM_KEY_LEN, stored, &n, EVP_sha256(), NULL), 1);
	assert_non_null(HMAC(EVP_sha256(), stored, SCRAM_KEY_LEN, (const unsigned char *)am, strlen(am), sig, &n));
	for (int i = 0; i < SCRAM_KEY_LEN; i++)
		proof[i] = ck[i] ^ sig[i];
	EVP_EncodeBlock((unsigned char *)b64, proof, SCRAM_KEY_LEN);
	snprintf(out, outcap, "%s,p=%s", wo, b64);
}

static void y_flag_case(const char *first, const char *cbind, int expect)
{
	struct scram_server sv;
	char out[BUF], fin[BUF], err[256];
	size_t outlen;

	memset(&sv, 0, sizeof(sv));
	load_secret(&sv.secret, RFC_VERIFIER);
	assert_int_equal(scram_server_first_with_nonce(&sv, first, strlen(first), RFC_SERVER_NONCE,
						       out, sizeof(out), &outlen, err, sizeof(err)), 0);
	hand_final(sv.client_first_bare, sv.server_first, cbind, RFC_NONCE, rfc_client_key, fin, sizeof(fin));
	assert_int_equal(scram_server_final(&sv, fin, strlen(fin), out, sizeof(out), &outlen, err, sizeof(err)), expect);
}

static void test_y_flag(void **state)
{
	(void)state;
	y_flag_case("y,,n=,r=" RFC_CLIENT_NONCE, "eSws", 0);
	y_flag_case("n,,n=,r=" RFC_CLIENT_NONCE, "biws", 0);
	/* The echoed header must be the one the client started with. */
	y_flag_case("y,,n=,r=" RFC_CLIENT_NONCE, "biws", -1);
	y_flag_case("n,,n=,r=" RFC_CLIENT_NONCE, "eSws", -1);
	/* Channel-binding data we never agreed to. */
	y_flag_case("n,,n=,r=" RFC_CLIENT_NONCE, "cCx0bHMtc2VydmVyLWVuZC1wb2ludCws", -1);
	/* Hand-made proof for the RFC's own message matches the RFC too. */
	y_flag_case(RFC_CLIENT_FIRST, "biws", 0);
}

/* ---- malformed input, server side ---- */

static void test_server_first_malformed(void **state)
{
	static const char *const bad[] = {
		"",
		"n",
		"n,",
		"n,,",
		"p=tls-server-end-point,,n=,r=abc",
		"x,,n=,r=abc",
		"N,,n=,r=abc",
		"n,a=bob,n=,r=abc",
		"n,x,n=,r=abc",
		"n,,r=abc",                     /* missing n= */
		"n,,n=",                        /* missing r= */
		"n,,n=,",                       /* trailing comma */
		"n,,n=,r=",                     /* empty nonce */
		"n,,n=,r=ab c",                 /* space in nonce */
		"n,,n=,r=ab\tc",                /* control char in nonce */
		"n,,n=,r=ab\x80" "c",           /* non-ASCII in nonce */
		"n,,n=,r=abc,",                 /* trailing comma */
		"n,,n=,r=abc,x",                /* extension without '=' */
		"n,,n=,r=abc,,x=1",             /* empty attribute */
		"n,,m=ext,n=,r=abc",            /* mandatory extension */
		"n,,n=,s=abc",                  /* wrong attribute */
		"n,,n=,r",                      /* truncated */
		"n,,n=,r=0123456789012345678901234567890123456789012345678901234567890123456789"
		"0123456789012345678901234567890123456789", /* nonce too long */
	};
	struct scram_server sv;
	char out[BUF], err[256];
	size_t outlen;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&sv, 0, sizeof(sv));
		load_secret(&sv.secret, RFC_VERIFIER);
		err[0] = '\0';
		if (scram_server_first(&sv, bad[i], strlen(bad[i]), out, sizeof(out), &outlen, err, sizeof(err)) != -1)
			fail_msg("accepted bad client-first #%zu: %s", i, bad[i]);
		assert_true(err[0] != '\0');
		assert_int_equal(sv.server_first[0], '\0');
	}

	/* Specific reasons for the cases a log reader cares about. */
	memset(&sv, 0, sizeof(sv));
	load_secret(&sv.secret, RFC_VERIFIER);
	assert_int_equal(scram_server_first(&sv, "p=tls-unique,,n=,r=abc", 22, out, sizeof(out), &outlen,
					    err, sizeof(err)), -1);
	assert_non_null(strstr(err, "channel binding"));

	/* An embedded NUL. */
	assert_int_equal(scram_server_first(&sv, "n,,n=,r=ab\0cd", 13, out, sizeof(out), &outlen,
					    err, sizeof(err)), -1);
	assert_non_null(strstr(err, "NUL"));

	/* Over the message limit. */
	{
		static char big[SCRAM_MAX_MESSAGE + 10];

		memset(big, 'a', sizeof(big) - 1);
		memcpy(big, "n,,n=", 5);
		assert_int_equal(scram_server_first(&sv, big, strlen(big), out, sizeof(out), &outlen,
						    err, sizeof(err)), -1);
	}

	/* No secret set. */
	memset(&sv, 0, sizeof(sv));
	assert_int_equal(scram_server_first(&sv, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out, sizeof(out),
					    &outlen, err, sizeof(err)), -1);

	/* Extensions after the nonce are ignored; any n= is accepted. */
	memset(&sv, 0, sizeof(sv));
	load_secret(&sv.secret, RFC_VERIFIER);
	assert_int_equal(scram_server_first(&sv, "n,,n=some=2Cone,r=abc,x=ext", 27, out, sizeof(out), &outlen,
					    err, sizeof(err)), 0);
	assert_int_equal(strncmp(out, "r=abc", 5), 0);
	/* The length given counts, not a NUL: the tail here is not part of the message. */
	memset(&sv, 0, sizeof(sv));
	load_secret(&sv.secret, RFC_VERIFIER);
	assert_int_equal(scram_server_first_with_nonce(&sv, RFC_CLIENT_FIRST "XYZ", strlen(RFC_CLIENT_FIRST),
						       RFC_SERVER_NONCE, out, sizeof(out), &outlen,
						       err, sizeof(err)), 0);
	assert_string_equal(out, RFC_SERVER_FIRST);
	/* A second client-first is refused. */
	assert_int_equal(scram_server_first(&sv, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out, sizeof(out),
					    &outlen, err, sizeof(err)), -1);
}

static void test_server_first_small_out(void **state)
{
	struct scram_server sv;
	char out[BUF], err[256];
	size_t outlen = 12345;

	(void)state;
	memset(&sv, 0, sizeof(sv));
	load_secret(&sv.secret, RFC_VERIFIER);
	memset(out, 'Z', sizeof(out));
	/* Exactly one byte short of the message and its NUL. */
	assert_int_equal(scram_server_first_with_nonce(&sv, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST),
						       RFC_SERVER_NONCE, out, strlen(RFC_SERVER_FIRST), &outlen,
						       err, sizeof(err)), -1);
	assert_int_equal(out[strlen(RFC_SERVER_FIRST)], 'Z');
	assert_int_equal(sv.server_first[0], '\0');
	/* Exactly enough. */
	assert_int_equal(scram_server_first_with_nonce(&sv, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST),
						       RFC_SERVER_NONCE, out, strlen(RFC_SERVER_FIRST) + 1, &outlen,
						       err, sizeof(err)), 0);
	assert_string_equal(out, RFC_SERVER_FIRST);
	/* Server-final needs 47 bytes; 46 is refused without writing past it. */
	memset(out, 'Z', sizeof(out));
	assert_int_equal(scram_server_final(&sv, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out, 46, &outlen,
					    err, sizeof(err)), -1);
	assert_int_equal(out[46], 'Z');
	assert_false(sv.done);
}

static void test_server_final_malformed(void **state)
{
#define P ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	static const char *const bad[] = {
		"",
		"c=biws",
		"c=biws,",
		"c=biws,r=" RFC_NONCE,                          /* no proof */
		"c=biws,r=" RFC_NONCE ",",
		"c=biws,r=" RFC_NONCE ",p=",
		"c=biws,r=" RFC_NONCE ",p",
		"r=" RFC_NONCE P,                               /* missing c= */
		"c=biws" P,                                     /* missing r= */
		"c=eSws,r=" RFC_NONCE P,                        /* flag was n */
		"c=,r=" RFC_NONCE P,
		"c=biws,r=" RFC_CLIENT_NONCE P,                 /* only the client's half */
		"c=biws,r=" RFC_NONCE "x" P,                    /* nonce too long */
		"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1" P, /* nonce differs */
		"c=biws,r=" RFC_NONCE P ",x=trailing",           /* proof not last */
		"c=biws,r=" RFC_NONCE P ",",
		"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",   /* bad base64 length */
		"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndV!=",  /* bad base64 char */
		"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7An",      /* short proof */
		"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQAAAA=", /* long proof */
		"c=biws,r=" RFC_NONCE ",p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",  /* wrong proof */
		"c=biws,r=" RFC_NONCE ",p= HzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"c=biws,r=" RFC_NONCE ",x=ext" ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", /* ext changes AuthMessage */
		"c=biws,,r=" RFC_NONCE P,
		"C=biws,r=" RFC_NONCE P,
		"c=biws,r=" RFC_NONCE ",p=" RFC_NONCE,
	};
	struct scram_server sv;
	char out[BUF], err[256];
	size_t outlen;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&sv, 0, sizeof(sv));
		load_secret(&sv.secret, RFC_VERIFIER);
		assert_int_equal(scram_server_first_with_nonce(&sv, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST),
							       RFC_SERVER_NONCE, out, sizeof(out), &outlen,
							       err, sizeof(err)), 0);
		err[0] = '\0';
		if (scram_server_final(&sv, bad[i], strlen(bad[i]), out, sizeof(out), &outlen, err, sizeof(err)) != -1)
			fail_msg("accepted bad client-final #%zu: %s", i, bad[i]);
		assert_true(err[0] != '\0');
		assert_false(sv.done);
		/* Nothing is recovered from a failed proof. */
		for (int k = 0; k < SCRAM_KEY_LEN; k++)
			assert_int_equal(sv.client_key[k], 0);
	}
	/* Truncations of the good message, every one of them. */
	for (size_t n = 0; n < strlen(RFC_CLIENT_FINAL); n++) {
		memset(&sv, 0, sizeof(sv));
		load_secret(&sv.secret, RFC_VERIFIER);
		assert_int_equal(scram_server_first_with_nonce(&sv, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST),
							       RFC_SERVER_NONCE, out, sizeof(out), &outlen,
							       err, sizeof(err)), 0);
		if (scram_server_final(&sv, RFC_CLIENT_FINAL, n, out, sizeof(out), &outlen, err, sizeof(err)) != -1)
			fail_msg("accepted client-final truncated to %zu bytes", n);
	}
	/* Final before first. */
	memset(&sv, 0, sizeof(sv));
	load_secret(&sv.secret, RFC_VERIFIER);
	assert_int_equal(scram_server_final(&sv, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out, sizeof(out),
					    &outlen, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "out of order"));
#undef P
}

/* ---- malformed input, client side ---- */

static void test_client_final_malformed(void **state)
{
	static const char *const bad[] = {
		"",
		"r=" RFC_CLIENT_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",           /* no server nonce part */
		"r=xOprNGfwEbeRWgbNEkqO" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", /* not our nonce */
		"r=rOprNGfwEbeRWgbNEkq,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",           /* shorter than ours */
		"r=" RFC_NONCE " ,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",                 /* space in nonce */
		"r=" RFC_NONCE ",i=4096",                                             /* missing s= */
		"r=" RFC_NONCE ",s=,i=4096",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096",                  /* bad base64 */
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6g===,i=4096",
		"r=" RFC_NONCE ",s=W22Z aJ0SNY7soEsUEjb6gQ=,i=4096",
		"r=" RFC_NONCE ",s=QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB,i=4096", /* 66-byte salt */
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==",                         /* missing i= */
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=10000001",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096x",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,",
		"r=" RFC_NONCE ",i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ==",                  /* wrong order */
		"m=ext,r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"e=other-error",
		"r=" RFC_NONCE,
		"r=",
	};
	struct scram_client cl;
	char out[BUF], err[256];
	size_t outlen;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&cl, 0, sizeof(cl));
		cl.password = "pencil";
		assert_int_equal(scram_client_first_with_nonce(&cl, NULL, RFC_CLIENT_NONCE, out, sizeof(out), &outlen), 0);
		assert_string_equal(out, "n,,n=,r=" RFC_CLIENT_NONCE);
		err[0] = '\0';
		if (scram_client_final(&cl, bad[i], strlen(bad[i]), out, sizeof(out), &outlen, err, sizeof(err)) != -1)
			fail_msg("accepted bad server-first #%zu: %s", i, bad[i]);
		assert_true(err[0] != '\0');
		/* No signature to check against after a failure. */
		assert_int_equal(scram_client_verify(&cl, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err, sizeof(err)), -1);
	}
	/* Truncations of a good server-first. */
	for (size_t n = 0; n < strlen(RFC_SERVER_FIRST); n++) {
		memset(&cl, 0, sizeof(cl));
		cl.password = "pencil";
		assert_int_equal(scram_client_first_with_nonce(&cl, "user", RFC_CLIENT_NONCE, out, sizeof(out), &outlen), 0);
		/* Cutting inside the salt or count can leave a valid but different message; it
		 * must then at least not reproduce the RFC's proof. */
		if (scram_client_final(&cl, RFC_SERVER_FIRST, n, out, sizeof(out), &outlen, err, sizeof(err)) == 0)
			assert_string_not_equal(out, RFC_CLIENT_FINAL);
	}
	/* Server-first before client-first. */
	memset(&cl, 0, sizeof(cl));
	cl.password = "pencil";
	assert_int_equal(scram_client_final(&cl, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out, sizeof(out),
					    &outlen, err, sizeof(err)), -1);
	/* Output too small for the client-final: refused, not overrun. */
	memset(&cl, 0, sizeof(cl));
	cl.password = "pencil";
	assert_int_equal(scram_client_first_with_nonce(&cl, "user", RFC_CLIENT_NONCE, out, sizeof(out), &outlen), 0);
	memset(out, 'Z', sizeof(out));
	assert_int_equal(scram_client_final(&cl, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out,
					    strlen(RFC_CLIENT_FINAL), &outlen, err, sizeof(err)), -1);
	assert_int_equal(out[strlen(RFC_CLIENT_FINAL)], 'Z');
	/* Server extensions after i= are allowed. */
	memset(&cl, 0, sizeof(cl));
	cl.password = "pencil";
	assert_int_equal(scram_client_first_with_nonce(&cl, "user", RFC_CLIENT_NONCE, out, sizeof(out), &outlen), 0);
	assert_int_equal(scram_client_final(&cl, RFC_SERVER_FIRST ",x=y", strlen(RFC_SERVER_FIRST ",x=y"), out,
					    sizeof(out), &outlen, err, sizeof(err)), 0);
}

static void test_client_first(void **state)
{
	struct scram_client cl;
	char out[BUF];
	size_t outlen;

	(void)state;
	memset(&cl, 0, sizeof(cl));
	assert_int_equal(scram_client_first(&cl, out, sizeof(out), &outlen), 0);
	assert_int_equal(outlen, 8 + 24);
	assert_int_equal(strncmp(out, "n,,n=,r=", 8), 0);
	assert_string_equal(out + 8, cl.client_nonce);
	assert_string_equal(out + 3, cl.client_first_bare);
	/* Too small: refused. */
	memset(&cl, 0, sizeof(cl));
	assert_int_equal(scram_client_first(&cl, out, 32, &outlen), -1);
	/* Bad test nonces. */
	assert_int_equal(scram_client_first_with_nonce(&cl, NULL, "", out, sizeof(out), &outlen), -1);
	assert_int_equal(scram_client_first_with_nonce(&cl, NULL, "a,b", out, sizeof(out), &outlen), -1);
	assert_int_equal(scram_client_first_with_nonce(&cl, NULL, NULL, out, sizeof(out), &outlen), -1);
	assert_int_equal(scram_client_first_with_nonce(&cl, NULL,
		"0123456789012345678901234567890123456789012345678901234567890123", out, sizeof(out), &outlen), -1);
	/* saslname escaping. */
	assert_int_equal(scram_client_first_with_nonce(&cl, "a,b=c", "xyz", out, sizeof(out), &outlen), 0);
	assert_string_equal(out, "n,,n=a=2Cb=3Dc,r=xyz");
}

static void test_client_verify_bad(void **state)
{
	static const char *const bad[] = {
		"",
		"v=",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",
		"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=AAAA",
		"x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
		"e=invalid-proof",
		"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
	};
	struct scram_client cl;
	char out[BUF], err[256];
	size_t outlen;

	(void)state;
	memset(&cl, 0, sizeof(cl));
	cl.password = "pencil";
	/* Before the final is sent there is nothing to verify, even an all-zero signature. */
	assert_int_equal(scram_client_verify(&cl, "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 46, err, sizeof(err)), -1);
	assert_int_equal(scram_client_first_with_nonce(&cl, "user", RFC_CLIENT_NONCE, out, sizeof(out), &outlen), 0);
	assert_int_equal(scram_client_final(&cl, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out, sizeof(out),
					    &outlen, err, sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (scram_client_verify(&cl, bad[i], strlen(bad[i]), err, sizeof(err)) != -1)
			fail_msg("accepted bad server-final #%zu: %s", i, bad[i]);
		assert_true(err[0] != '\0');
	}
	assert_int_equal(scram_client_verify(&cl, "e=invalid-proof", 15, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "invalid-proof"));
	/* Control characters from the server are not copied into our messages. */
	assert_int_equal(scram_client_verify(&cl, "e=bad\x1b[31m", 10, err, sizeof(err)), -1);
	assert_null(strchr(err, '\x1b'));
	/* And the right one still passes after all that. */
	assert_int_equal(scram_client_verify(&cl, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err, sizeof(err)), 0);
	assert_int_equal(scram_client_verify(&cl, RFC_SERVER_FINAL ",x=ext", strlen(RFC_SERVER_FINAL ",x=ext"),
					     err, sizeof(err)), 0);
}

/* ---- mock salts and doomed exchanges ---- */

/* The salt as base64 in a server-first-message "r=...,s=<salt>,i=<n>". */
static void salt_of(const char *server_first, char *out, size_t cap)
{
	const char *s = strstr(server_first, ",s="), *e;

	assert_non_null(s);
	s += 3;
	e = strchr(s, ',');
	assert_non_null(e);
	assert_true((size_t)(e - s) < cap);
	memcpy(out, s, (size_t)(e - s));
	out[e - s] = '\0';
}

static void test_mock_salt(void **state)
{
	uint8_t k1[SCRAM_MOCK_KEY_LEN], k2[SCRAM_MOCK_KEY_LEN];
	uint8_t a[SCRAM_SALT_LEN], b[SCRAM_SALT_LEN], c[SCRAM_SALT_LEN], want[SCRAM_KEY_LEN];
	uint8_t in[SCRAM_MOCK_KEY_LEN + 5];
	unsigned int len = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(k1); i++) {
		k1[i] = (uint8_t)i;
		k2[i] = (uint8_t)i;
	}
	k2[31] ^= 1;

	/* Deterministic: the same key and name give the same salt. */
	assert_true(scram_mock_salt(k1, "alice", a));
	assert_true(scram_mock_salt(k1, "alice", b));
	assert_memory_equal(a, b, SCRAM_SALT_LEN);
	/* It is SHA-256(key || name) cut to the salt length. */
	memcpy(in, k1, sizeof(k1));
	memcpy(in + sizeof(k1), "alice", 5);
	assert_int_equal(EVP_Digest(in, sizeof(in), want, &len, EVP_sha256(), NULL), 1);
	assert_memory_equal(a, want, SCRAM_SALT_LEN);
	/* Another name gives another salt, a prefix too. */
	assert_true(scram_mock_salt(k1, "alicf", c));
	assert_memory_not_equal(a, c, SCRAM_SALT_LEN);
	assert_true(scram_mock_salt(k1, "alic", c));
	assert_memory_not_equal(a, c, SCRAM_SALT_LEN);
	assert_true(scram_mock_salt(k1, "", c));
	assert_memory_not_equal(a, c, SCRAM_SALT_LEN);
	/* Another process key (one bit) gives another salt for the same name. */
	assert_true(scram_mock_salt(k2, "alice", c));
	assert_memory_not_equal(a, c, SCRAM_SALT_LEN);
	assert_false(scram_mock_salt(k1, NULL, c));

	/* This process's salt: stable across calls, per name, and not the test key's. */
	assert_true(scram_mock_init());
	assert_true(scram_process_salt("alice", b));
	assert_true(scram_mock_init());   /* a second init keeps the key */
	assert_true(scram_process_salt("alice", c));
	assert_memory_equal(b, c, SCRAM_SALT_LEN);
	assert_memory_not_equal(a, b, SCRAM_SALT_LEN);
	assert_true(scram_process_salt("bob", c));
	assert_memory_not_equal(b, c, SCRAM_SALT_LEN);
}

/* A mock verifier answers server-first like a real one: the process salt for the name, the
 * length a real salt has, 4096 iterations; the same on every try. */
static void test_mock_secret_server_first(void **state)
{
	struct scram_secret m1, m2, other;
	struct scram_server sv;
	uint8_t salt[SCRAM_SALT_LEN];
	char out1[BUF], out2[BUF], s1[64], s2[64], err[256];
	size_t outlen;

	(void)state;
	assert_true(scram_mock_secret("nobody", &m1));
	assert_true(scram_mock_secret("nobody", &m2));
	assert_true(scram_mock_secret("somebody", &other));
	assert_int_equal(m1.iterations, SCRAM_DEFAULT_ITERATIONS);
	assert_int_equal(m1.salt_len, SCRAM_SALT_LEN);
	assert_true(scram_process_salt("nobody", salt));
	assert_memory_equal(m1.salt, salt, SCRAM_SALT_LEN);
	assert_memory_equal(m1.salt, m2.salt, SCRAM_SALT_LEN);
	assert_memory_not_equal(m1.salt, other.salt, SCRAM_SALT_LEN);

	memset(&sv, 0, sizeof(sv));
	sv.secret = m1;
	sv.doomed = true;
	assert_int_equal(scram_server_first(&sv, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out1, sizeof(out1),
					    &outlen, err, sizeof(err)), 0);
	memset(&sv, 0, sizeof(sv));
	sv.secret = m2;
	sv.doomed = true;
	assert_int_equal(scram_server_first(&sv, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out2, sizeof(out2),
					    &outlen, err, sizeof(err)), 0);
	salt_of(out1, s1, sizeof(s1));
	salt_of(out2, s2, sizeof(s2));
	assert_string_equal(s1, s2);
	assert_int_equal(strlen(s1), 24);   /* 16 bytes, like a PostgreSQL verifier's salt */
	assert_non_null(strstr(out1, ",i=4096"));
}

/* A doomed exchange fails at the proof with the wrong-password error, even when the client
 * proves the password the verifier was made from: here "", the empty password. */
static void test_doomed_fails_at_proof(void **state)
{
	struct scram_server sv;
	struct scram_client cl;
	char err[256] = "", err2[256] = "";

	(void)state;
	/* Without doomed, a verifier of "" would accept "" (what pgmux used to do). */
	memset(&sv, 0, sizeof(sv));
	memset(&cl, 0, sizeof(cl));
	make_secret(&sv.secret, "", 4096);
	cl.password = "";
	assert_int_equal(exchange(&sv, &cl, err, sizeof(err)), 0);

	memset(&sv, 0, sizeof(sv));
	memset(&cl, 0, sizeof(cl));
	make_secret(&sv.secret, "", 4096);
	sv.doomed = true;
	cl.password = "";
	assert_int_equal(exchange(&sv, &cl, err, sizeof(err)), -3);
	assert_false(sv.done);

	/* The same error text as a wrong password against a real verifier. */
	memset(&sv, 0, sizeof(sv));
	memset(&cl, 0, sizeof(cl));
	make_secret(&sv.secret, "right", 4096);
	cl.password = "wrong";
	assert_int_equal(exchange(&sv, &cl, err2, sizeof(err2)), -3);
	assert_string_equal(err, err2);

	/* And a mock verifier with any password. */
	memset(&sv, 0, sizeof(sv));
	memset(&cl, 0, sizeof(cl));
	assert_true(scram_mock_secret("nobody", &sv.secret));
	sv.doomed = true;
	cl.password = "anything";
	assert_int_equal(exchange(&sv, &cl, err, sizeof(err)), -3);
	assert_string_equal(err, err2);
}

/* A fresh client (password, or the RFC keys made with key_iterations when password is NULL)
 * that has sent its client-first; then scram_client_final on "r=<nonce>,s=<salt>,i=<iter>". */
static int client_final_with(const char *password, int key_iterations, const char *salt,
			     const char *iter, char *err, size_t errlen)
{
	struct scram_client cl;
	struct scram_secret s;
	char out[BUF], msg[BUF];
	size_t outlen;

	memset(&cl, 0, sizeof(cl));
	if (password) {
		cl.password = password;
	} else {
		load_secret(&s, RFC_VERIFIER);
		cl.have_keys = true;
		memcpy(cl.client_key, rfc_client_key, SCRAM_KEY_LEN);
		memcpy(cl.server_key, s.server_key, SCRAM_KEY_LEN);
		memcpy(cl.key_salt, s.salt, (size_t)s.salt_len);
		cl.key_salt_len = s.salt_len;
		cl.key_iterations = key_iterations;
	}
	assert_int_equal(scram_client_first_with_nonce(&cl, NULL, RFC_CLIENT_NONCE, out, sizeof(out), &outlen), 0);
	snprintf(msg, sizeof(msg), "r=%s,s=%s,i=%s", RFC_NONCE, salt, iter);
	return scram_client_final(&cl, msg, strlen(msg), out, sizeof(out), &outlen, err, errlen);
}

/* The client side bounds what a server can make it compute. */
static void test_client_bounds(void **state)
{
	struct scram_client cl;
	char out[BUF], err[256], msg[SCRAM_MAX_MESSAGE + 64], iter[32], salt[200];
	size_t outlen;

	(void)state;
	/* With a password, a count over SCRAM_MAX_ITERATIONS is refused before any PBKDF2. */
	snprintf(iter, sizeof(iter), "%d", SCRAM_MAX_ITERATIONS + 1);
	assert_int_equal(client_final_with("pencil", 0, "W22ZaJ0SNY7soEsUEjb6gQ==", iter, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "iteration count"));
	assert_int_equal(client_final_with("pencil", 0, "W22ZaJ0SNY7soEsUEjb6gQ==", "2147483647", err, sizeof(err)), -1);
	assert_int_equal(client_final_with("pencil", 0, "W22ZaJ0SNY7soEsUEjb6gQ==", "4096", err, sizeof(err)), 0);

	/* With pass-through keys nothing is derived: a large count the keys were made with is
	 * accepted, any other count is not. */
	assert_int_equal(client_final_with(NULL, 20000000, "W22ZaJ0SNY7soEsUEjb6gQ==", "20000000", err, sizeof(err)), 0);
	assert_int_equal(client_final_with(NULL, 20000000, "W22ZaJ0SNY7soEsUEjb6gQ==", "20000001", err, sizeof(err)), -1);
	assert_int_equal(client_final_with(NULL, 4096, "W22ZaJ0SNY7soEsUEjb6gQ==", "99999999999", err, sizeof(err)), -1);

	/* A salt over SCRAM_MAX_SALT bytes. */
	memset(salt, 'A', 172);
	salt[172] = '\0';   /* 129 bytes decoded */
	assert_int_equal(client_final_with("pencil", 0, salt, "4096", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "salt"));
	memset(salt, 'A', 88);
	salt[88] = '\0';    /* 66 bytes decoded */
	assert_int_equal(client_final_with("pencil", 0, salt, "4096", err, sizeof(err)), -1);

	/* A server nonce that makes the message longer than SCRAM_MAX_MESSAGE. */
	memset(&cl, 0, sizeof(cl));
	cl.password = "pencil";
	assert_int_equal(scram_client_first_with_nonce(&cl, NULL, RFC_CLIENT_NONCE, out, sizeof(out), &outlen), 0);
	memset(msg, 'x', sizeof(msg));
	memcpy(msg, "r=" RFC_CLIENT_NONCE, strlen("r=" RFC_CLIENT_NONCE));
	assert_int_equal(scram_client_final(&cl, msg, SCRAM_MAX_MESSAGE + 1, out, sizeof(out), &outlen, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "too long"));
}

/* err may be NULL or tiny without harm. */
static void test_err_buffers(void **state)
{
	struct scram_server sv;
	char out[BUF], err[4];
	size_t outlen;

	(void)state;
	memset(&sv, 0, sizeof(sv));
	load_secret(&sv.secret, RFC_VERIFIER);
	assert_int_equal(scram_server_first(&sv, "garbage", 7, out, sizeof(out), &outlen, NULL, 0), -1);
	assert_int_equal(scram_server_first(&sv, "garbage", 7, out, sizeof(out), &outlen, err, sizeof(err)), -1);
	assert_int_equal(strlen(err), 3);
	assert_int_equal(scram_server_first(&sv, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out, sizeof(out),
					    NULL, NULL, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_pg_secret),
		cmocka_unit_test(test_rfc_secret),
		cmocka_unit_test(test_parse_secret_bad),
		cmocka_unit_test(test_rfc7677_server),
		cmocka_unit_test(test_rfc7677_client_password),
		cmocka_unit_test(test_rfc7677_client_keys),
		cmocka_unit_test(test_round_trip_password),
		cmocka_unit_test(test_wrong_password),
		cmocka_unit_test(test_passthrough_round_trip),
		cmocka_unit_test(test_passthrough_mismatch),
		cmocka_unit_test(test_client_detects_fake_server),
		cmocka_unit_test(test_y_flag),
		cmocka_unit_test(test_server_first_malformed),
		cmocka_unit_test(test_server_first_small_out),
		cmocka_unit_test(test_server_final_malformed),
		cmocka_unit_test(test_client_final_malformed),
		cmocka_unit_test(test_client_first),
		cmocka_unit_test(test_client_verify_bad),
		cmocka_unit_test(test_err_buffers),
		cmocka_unit_test(test_mock_salt),
		cmocka_unit_test(test_mock_secret_server_first),
		cmocka_unit_test(test_doomed_fails_at_proof),
		cmocka_unit_test(test_client_bounds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
