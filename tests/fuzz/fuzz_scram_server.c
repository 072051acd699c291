/* fuzz_scram_server.c: libFuzzer harness for pgmux's SCRAM server side: client-first and client-final messages from a client. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scram.h"
#include "fuzz_check.h"

/*
 * Input layout: byte 0 picks the mode and the output buffer size, byte 1 is a split point,
 * the rest is message data.
 *   mode 0, 3: rest[0..split) is the client-first-message, rest[split..) the client-final.
 *   mode 1:    a valid "n,," client-first-message, then all of rest as the client-final.
 *   mode 2:    a valid "y,," client-first-message, then all of rest as the client-final.
 *   mode 3 also marks the exchange doomed (an unknown user's): the final must then fail even
 *   with the right proof, which mode 0's seeds carry.
 * The server nonce is fixed (scram_server_first_with_nonce) so that the fuzzer, and the seed
 * corpus, can reproduce a matching nonce and a valid proof; scram_server_first() only adds a
 * random nonce in front of the same parser.
 * The secret is the RFC 7677 one: password "pencil", its salt, 4096 iterations.
 */
#define CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define VALID_FIRST_N "n,,n=user,r=" CLIENT_NONCE
#define VALID_FIRST_Y "y,,n=user,r=" CLIENT_NONCE

static struct scram_secret secret;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* base64 "W22ZaJ0SNY7soEsUEjb6gQ==" */
	static const uint8_t salt[] = { 0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
					0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81 };

	(void)argc;
	(void)argv;
	if (!scram_secret_from_password("pencil", salt, (int)sizeof(salt), 4096, &secret))
		abort();
	return 0;
}

/* A heap copy of exactly n bytes, so ASan catches a parser reading past a message's end. */
static char *dup_exact(const uint8_t *p, size_t n)
{
	char *c = malloc(n ? n : 1);

	if (c && n)
		memcpy(c, p, n);
	return c;
}

static bool nul_terminated(const char *s, size_t cap)
{
	return memchr(s, 0, cap) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct scram_server st;
	char err[256];
	size_t outlen, outcap, firstlen, finallen;
	const uint8_t *rest;
	size_t restlen;
	char *first, *final, *out;
	int mode, rc;

	if (size < 2)
		return 0;
	mode = data[0] & 3;
	/* Usually a roomy output buffer; with the top bit set a small one, to test the "does not
	 * fit" paths (exact size, so an overrun is caught). */
	outcap = (data[0] & 0x80) ? (size_t)((data[0] >> 2) & 0x1f) * 4 : 512;
	rest = data + 2;
	restlen = size - 2;

	if (mode == 1 || mode == 2) {
		const char *v = mode == 1 ? VALID_FIRST_N : VALID_FIRST_Y;

		firstlen = strlen(v);
		first = dup_exact((const uint8_t *)v, firstlen);
		finallen = restlen;
		final = dup_exact(rest, restlen);
	} else {
		firstlen = data[1] < restlen ? data[1] : restlen;
		first = dup_exact(rest, firstlen);
		finallen = restlen - firstlen;
		final = dup_exact(rest + firstlen, finallen);
	}
	out = malloc(outcap ? outcap : 1);
	if (!first || !final || !out)
		goto done;

	memset(&st, 0, sizeof(st));
	st.secret = secret;
	st.doomed = mode == 3;
	err[0] = '\0';
	outlen = (size_t)-1;
	rc = scram_server_first_with_nonce(&st, first, firstlen, SERVER_NONCE, out, outcap, &outlen,
					   err, sizeof(err));
	FUZZ_CHECK(nul_terminated(err, sizeof(err)));
	if (rc != 0) {
		FUZZ_CHECK(err[0] != '\0');
		FUZZ_CHECK(!st.done);
		/* A failed first message leaves the exchange unstarted: the final is out of order. */
		if (!st.server_first[0])
			FUZZ_CHECK(scram_server_final(&st, final, finallen, out, outcap, &outlen,
						      err, sizeof(err)) == -1);
		goto done;
	}
	FUZZ_CHECK(outlen < outcap && out[outlen] == '\0' && strlen(out) == outlen);
	FUZZ_CHECK(strncmp(out, "r=", 2) == 0);
	FUZZ_CHECK(strcmp(out, st.server_first) == 0);
	FUZZ_CHECK(nul_terminated(st.client_first_bare, sizeof(st.client_first_bare)));
	FUZZ_CHECK(nul_terminated(st.nonce, sizeof(st.nonce)));
	FUZZ_CHECK(st.gs2_flag == 'n' || st.gs2_flag == 'y');
	/* A second client-first-message must be refused. */
	FUZZ_CHECK(scram_server_first_with_nonce(&st, first, firstlen, SERVER_NONCE, out, outcap,
						 &outlen, err, sizeof(err)) == -1);

	err[0] = '\0';
	rc = scram_server_final(&st, final, finallen, out, outcap, &outlen, err, sizeof(err));
	FUZZ_CHECK(nul_terminated(err, sizeof(err)));
	if (rc == 0) {
		FUZZ_CHECK(!st.doomed);
		FUZZ_CHECK(st.done);
		FUZZ_CHECK(outlen == 46 && out[outlen] == '\0' && strncmp(out, "v=", 2) == 0);
		/* Nothing more is accepted once the exchange is done. */
		FUZZ_CHECK(scram_server_final(&st, final, finallen, out, outcap, &outlen,
					      err, sizeof(err)) == -1);
	} else {
		FUZZ_CHECK(err[0] != '\0');
		FUZZ_CHECK(!st.done);
	}
done:
	free(first);
	free(final);
	free(out);
	return 0;
}
