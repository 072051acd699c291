/* pwcrypt.c: PostgreSQL md5 password hashing, constant-time comparison and random bytes, on OpenSSL. */
#include "pwcrypt.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define MD5_HEX_LEN 32

static void to_hex(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0x0f];
	}
}

/*
 * The md5 functions cannot report failure through their signatures.  If the digest is
 * unavailable (a FIPS provider, say), a fixed or empty answer could be matched by a client that
 * sends the same thing, so the output is made unguessable instead: authentication then simply
 * fails.  Without even an RNG there is nothing safe left to do.
 */
static void unguessable_md5(char out[PWCRYPT_MD5_LEN + 1])
{
	uint8_t junk[MD5_HEX_LEN / 2];

	if (!pwcrypt_random(junk, sizeof(junk)))
		abort();
	memcpy(out, "md5", 3);
	to_hex(junk, sizeof(junk), out + 3);
	out[PWCRYPT_MD5_LEN] = '\0';
}

static bool md5_two(const void *a, size_t alen, const void *b, size_t blen, char out[PWCRYPT_MD5_LEN + 1])
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
		  EVP_DigestUpdate(ctx, a, alen) == 1 && EVP_DigestUpdate(ctx, b, blen) == 1 &&
		  EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == MD5_HEX_LEN / 2;

	EVP_MD_CTX_free(ctx);
	if (!ok)
		return false;
	memcpy(out, "md5", 3);
	to_hex(md, MD5_HEX_LEN / 2, out + 3);
	out[PWCRYPT_MD5_LEN] = '\0';
	OPENSSL_cleanse(md, sizeof(md));
	return true;
}

void pwcrypt_md5_secret(const char *password, const char *user, char out[PWCRYPT_MD5_LEN + 1])
{
	if (!md5_two(password, strlen(password), user, strlen(user), out))
		unguessable_md5(out);
}

void pwcrypt_md5_response(const char *md5_secret, const uint8_t salt[4], char out[PWCRYPT_MD5_LEN + 1])
{
	/* Only the hex part takes part; tolerate a secret without the prefix rather than read past
	 * a short string. */
	const char *hex = strncmp(md5_secret, "md5", 3) == 0 ? md5_secret + 3 : md5_secret;

	if (!md5_two(hex, strnlen(hex, MD5_HEX_LEN), salt, 4, out))
		unguessable_md5(out);
}

bool pwcrypt_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}

bool pwcrypt_str_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la != lb) {
		/* Spend about the same time as a real comparison, so a length mismatch is not
		 * distinguishable from a content mismatch by timing alone. */
		(void)CRYPTO_memcmp(b, b, lb);
		return false;
	}
	return CRYPTO_memcmp(a, b, la) == 0;
}

bool pwcrypt_random(void *buf, size_t n)
{
	uint8_t *p = buf;

	while (n > 0) {
		int chunk = n > INT_MAX ? INT_MAX : (int)n;

		if (RAND_bytes(p, chunk) != 1)
			return false;
		p += chunk;
		n -= (size_t)chunk;
	}
	return true;
}
