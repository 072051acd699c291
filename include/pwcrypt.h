/* pwcrypt.h: PostgreSQL md5 password hashing and constant-time comparison, on OpenSSL. */
#ifndef PGMUX_PWCRYPT_H
#define PGMUX_PWCRYPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PWCRYPT_MD5_LEN 35   /* "md5" + 32 hex digits, without the NUL */

/* out = "md5" + hex(md5(password || user)): the form pg_authid and userlist.txt store. */
void pwcrypt_md5_secret(const char *password, const char *user, char out[PWCRYPT_MD5_LEN + 1]);

/* The answer to AuthenticationMD5Password: "md5" + hex(md5(hex-part-of-secret || salt)),
 * where `secret` is an md5 secret as above. */
void pwcrypt_md5_response(const char *md5_secret, const uint8_t salt[4], char out[PWCRYPT_MD5_LEN + 1]);

/* Constant-time equality of two buffers of length n. */
bool pwcrypt_equal(const void *a, const void *b, size_t n);

/* Constant-time equality of two strings (length differences are still reported, but the
 * contents are compared without early exit). */
bool pwcrypt_str_equal(const char *a, const char *b);

/* Fills buf with n cryptographically random bytes; false when the RNG fails. */
bool pwcrypt_random(void *buf, size_t n);

#endif
