/* fuzz_secret.c: libFuzzer harness for stored-secret parsing: SCRAM verifiers, secret kinds, md5 responses. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pwcrypt.h"
#include "scram.h"
#include "userlist.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct scram_secret s, again;
	char text_out[SCRAM_SECRET_MAXLEN], md5[PWCRYPT_MD5_LEN + 1];
	static const uint8_t md5_salt[4] = { 1, 2, 3, 4 };
	char *text = malloc(size + 1);
	enum secret_kind kind;
	bool ok;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	memset(&s, 0xa5, sizeof(s));
	ok = scram_parse_secret(text, &s);
	FUZZ_CHECK(ok == scram_parse_secret(text, NULL));
	kind = userlist_secret_kind(text);
	FUZZ_CHECK(kind != SECRET_NONE);
	if (ok) {
		FUZZ_CHECK(kind == SECRET_SCRAM);
		FUZZ_CHECK(s.iterations >= 1);
		FUZZ_CHECK(s.salt_len >= 1 && s.salt_len <= SCRAM_MAX_SALT);
		/* Formatting and parsing again gives the same secret. */
		FUZZ_CHECK(scram_format_secret(&s, text_out, sizeof(text_out)));
		FUZZ_CHECK(strlen(text_out) < sizeof(text_out));
		memset(&again, 0, sizeof(again));
		FUZZ_CHECK(scram_parse_secret(text_out, &again));
		FUZZ_CHECK(again.iterations == s.iterations && again.salt_len == s.salt_len);
		FUZZ_CHECK(memcmp(again.salt, s.salt, (size_t)s.salt_len) == 0);
		FUZZ_CHECK(memcmp(again.stored_key, s.stored_key, SCRAM_KEY_LEN) == 0);
		FUZZ_CHECK(memcmp(again.server_key, s.server_key, SCRAM_KEY_LEN) == 0);
		FUZZ_CHECK(userlist_secret_kind(text_out) == SECRET_SCRAM);
	} else {
		FUZZ_CHECK(kind != SECRET_SCRAM);
	}
	if (kind == SECRET_MD5) {
		FUZZ_CHECK(strlen(text) == PWCRYPT_MD5_LEN);
		pwcrypt_md5_response(text, md5_salt, md5);
		FUZZ_CHECK(strlen(md5) == PWCRYPT_MD5_LEN && strncmp(md5, "md5", 3) == 0);
	}
	/* The constant-time string compare against itself and a neighbour. */
	FUZZ_CHECK(pwcrypt_str_equal(text, text));
	if (size > 0)
		FUZZ_CHECK(!pwcrypt_str_equal(text, text + 1) || strcmp(text, text + 1) == 0);
	free(text);
	return 0;
}
