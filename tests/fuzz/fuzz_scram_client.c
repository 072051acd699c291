/* fuzz_scram_client.c: libFuzzer harness for pgmux's SCRAM client side: server-first and server-final messages from a server. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "scram.h"
#include "fuzz_check.h"

/*
 * Input layout: byte 0 picks the mode, byte 1 is a split point, the rest is message data:
 * rest[0..split) is the server-first-message, rest[split..) the server-final-message.
 *   mode bit 0 clear: pass-through keys (have_keys) for the RFC 7677 salt and 4096 iterations,
 *                     so no PBKDF2 runs per input;
 *   mode bit 0 set:   password "pencil"; inputs asking for more than MAX_FUZZ_ITERATIONS are
 *                     skipped, since each iteration is real CPU time, not a bug.
 *   mode bit 1 set:   a small output buffer, for the "does not fit" paths.
 * The client-first-message uses a fixed nonce (scram_client_first_with_nonce) so that server
 * messages in the corpus can match it; scram_client_first() only adds a random nonce.
 */
#define CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define ITERATIONS 4096
#define MAX_FUZZ_ITERATIONS 64

static const uint8_t salt[] = { 0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
				0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81 };
static uint8_t client_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	uint8_t salted[SCRAM_KEY_LEN];
	unsigned int len = 0;
	char out[256];
	size_t outlen;
	struct scram_client cl;

	(void)argc;
	(void)argv;
	if (PKCS5_PBKDF2_HMAC("pencil", 6, salt, sizeof(salt), ITERATIONS, EVP_sha256(),
			      sizeof(salted), salted) != 1 ||
	    !HMAC(EVP_sha256(), salted, sizeof(salted), (const uint8_t *)"Client Key", 10, client_key, &len) ||
	    !HMAC(EVP_sha256(), salted, sizeof(salted), (const uint8_t *)"Server Key", 10, server_key, &len))
		abort();
	/* The random-nonce entry point, once, so it is known to work in this build. */
	memset(&cl, 0, sizeof(cl));
	if (scram_client_first(&cl, out, sizeof(out), &outlen) != 0 || strncmp(out, "n,,n=,r=", 8) != 0)
		abort();
	return 0;
}

static char *dup_exact(const uint8_t *p, size_t n)
{
	char *c = malloc(n ? n : 1);

	if (c && n)
		memcpy(c, p, n);
	return c;
}

/* The i= value of a server-first-message as scram.c reads it (third attribute), or 0. */
static long long requested_iterations(const uint8_t *m, size_t n)
{
	size_t field = 0, i = 0;
	long long v = 0;

	while (i < n && field < 2) {
		if (m[i++] == ',')
			field++;
	}
	if (field < 2 || i + 2 > n || m[i] != 'i' || m[i + 1] != '=')
		return 0;
	for (i += 2; i < n && m[i] >= '0' && m[i] <= '9' && v < 1000000000000LL; i++)
		v = v * 10 + (m[i] - '0');
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct scram_client cl;
	char first_out[256], err[256];
	size_t outlen, outcap, firstlen, finallen, restlen;
	const uint8_t *rest;
	char *sfirst = NULL, *sfinal = NULL, *out = NULL;
	int rc;

	if (size < 2)
		return 0;
	rest = data + 2;
	restlen = size - 2;
	firstlen = data[1] < restlen ? data[1] : restlen;
	finallen = restlen - firstlen;
	if ((data[0] & 1) && requested_iterations(rest, firstlen) > MAX_FUZZ_ITERATIONS)
		return 0;
	outcap = (data[0] & 2) ? (size_t)(data[0] >> 2) * 2 : SCRAM_MAX_MESSAGE + 64;

	memset(&cl, 0, sizeof(cl));
	if (data[0] & 1) {
		cl.password = "pencil";
	} else {
		cl.have_keys = true;
		memcpy(cl.client_key, client_key, SCRAM_KEY_LEN);
		memcpy(cl.server_key, server_key, SCRAM_KEY_LEN);
		memcpy(cl.key_salt, salt, sizeof(salt));
		cl.key_salt_len = (int)sizeof(salt);
		cl.key_iterations = ITERATIONS;
	}
	if (scram_client_first_with_nonce(&cl, "user", CLIENT_NONCE, first_out, sizeof(first_out), &outlen) != 0)
		abort();

	sfirst = dup_exact(rest, firstlen);
	sfinal = dup_exact(rest + firstlen, finallen);
	out = malloc(outcap ? outcap : 1);
	if (!sfirst || !sfinal || !out)
		goto done;

	/* Before the client-final-message, any server-final is out of order. */
	FUZZ_CHECK(scram_client_verify(&cl, sfinal, finallen, err, sizeof(err)) == -1);

	err[0] = '\0';
	outlen = (size_t)-1;
	rc = scram_client_final(&cl, sfirst, firstlen, out, outcap, &outlen, err, sizeof(err));
	FUZZ_CHECK(memchr(err, 0, sizeof(err)) != NULL);
	if (rc != 0) {
		FUZZ_CHECK(err[0] != '\0');
		FUZZ_CHECK(!cl.final_sent);
		FUZZ_CHECK(scram_client_verify(&cl, sfinal, finallen, err, sizeof(err)) == -1);
		goto done;
	}
	FUZZ_CHECK(cl.final_sent);
	FUZZ_CHECK(outlen < outcap && out[outlen] == '\0' && strlen(out) == outlen);
	FUZZ_CHECK(strncmp(out, "c=biws,r=" CLIENT_NONCE, 9 + strlen(CLIENT_NONCE)) == 0);
	FUZZ_CHECK(outlen > 47 && strncmp(out + outlen - 47, ",p=", 3) == 0);
	/* A second server-first-message is out of order. */
	FUZZ_CHECK(scram_client_final(&cl, sfirst, firstlen, out, outcap, &outlen, err, sizeof(err)) == -1);

	err[0] = '\0';
	rc = scram_client_verify(&cl, sfinal, finallen, err, sizeof(err));
	FUZZ_CHECK(memchr(err, 0, sizeof(err)) != NULL);
	if (rc == 0)
		FUZZ_CHECK(finallen >= 46 && sfinal[0] == 'v' && sfinal[1] == '=');
	else
		FUZZ_CHECK(err[0] != '\0');
done:
	free(sfirst);
	free(sfinal);
	free(out);
	return 0;
}
