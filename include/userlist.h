/* userlist.h: the auth_file (PgBouncer userlist.txt format): user names and their secrets. */
#ifndef PGMUX_USERLIST_H
#define PGMUX_USERLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct scram_secret;

enum secret_kind { SECRET_NONE = 0, SECRET_PLAIN, SECRET_MD5, SECRET_SCRAM };

/* Longest user name and secret accepted, in bytes after unquoting; longer entries are refused
 * with file:line.  PostgreSQL names stop at 63 bytes.  A secret may be a long plaintext password
 * or token, so the limit is PgBouncer's: its MAX_PASSWORD buffer is 65531 bytes with the
 * terminator, so 65530 bytes of secret. */
#define USERLIST_MAX_USER 256
#define USERLIST_MAX_SECRET 65530
/* Largest auth_file read, so a wrong path (a log, a device) cannot eat memory. */
#define USERLIST_MAX_FILE (64 * 1024 * 1024)
/* Most SCRAM verifiers one list caches for plaintext secrets (about 150 bytes each); users
 * beyond that still log in, each paying one PBKDF2 per login. */
#define USERLIST_MAX_CACHED_VERIFIERS 16384

struct userlist;

/* Parses a userlist file: one `"user" "secret"` pair per line, with "" inside quotes standing
 * for one quote character, and lines starting with ';' or '#' (or blank) ignored.  Extra fields
 * after the secret are ignored, as PgBouncer does.  Returns 0 and a new list in *out, or -1
 * with "file:line: reason" in err.  Secrets are never written to err. */
int userlist_load(const char *path, struct userlist **out, char *err, size_t errlen);

/* Same, from a NUL-terminated buffer (name is used in messages only). */
int userlist_parse(const char *name, const char *text, struct userlist **out, char *err, size_t errlen);

/* The secret for `user`, or NULL.  The list owns the string. */
const char *userlist_get(const struct userlist *ul, const char *user);

/* Fills *out with the SCRAM verifier for `user`'s plaintext secret under this salt and
 * iteration count.  The PBKDF2 runs on the first call for a user; the verifier is then kept in
 * the list (wiped when the list is freed, so a reload, which builds a new list, never serves a
 * stale one), up to USERLIST_MAX_CACHED_VERIFIERS users.  A call with another salt or count
 * derives afresh and replaces the cached one.  Returns false when the user is unknown, the
 * secret is not plaintext or is empty (an empty password never authenticates), or the
 * derivation fails. */
bool userlist_plain_verifier(struct userlist *ul, const char *user, const uint8_t *salt,
			     int salt_len, int iterations, struct scram_secret *out);

/* True when `secret` is the empty password for `user`: "" itself, or the md5 secret of "" for
 * this user.  PostgreSQL never stores one (CREATE ROLE clears it), and pgmux refuses to log
 * anyone in with one under every auth_type that checks a password.  A SCRAM verifier of ""
 * is not detected: that would take a PBKDF2.  NULL is not empty (it is no secret at all). */
bool userlist_secret_empty(const char *secret, const char *user);

/* How many verifiers userlist_plain_verifier has cached in this list (for tests). */
size_t userlist_cached_verifiers(const struct userlist *ul);

size_t userlist_count(const struct userlist *ul);
void userlist_free(struct userlist *ul);

/* What kind of secret a stored string is: "md5" + 32 hex digits is SECRET_MD5, a string that
 * parses as "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>" is SECRET_SCRAM, anything
 * else (including "") is SECRET_PLAIN.  NULL is SECRET_NONE. */
enum secret_kind userlist_secret_kind(const char *secret);

#endif
