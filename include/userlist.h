/* userlist.h: the auth_file (PgBouncer userlist.txt format): user names and their secrets. */
#ifndef PGMUX_USERLIST_H
#define PGMUX_USERLIST_H

#include <stddef.h>

enum secret_kind { SECRET_NONE = 0, SECRET_PLAIN, SECRET_MD5, SECRET_SCRAM };

/* Longest user name and secret accepted, in bytes after unquoting.  PostgreSQL names stop at 63
 * bytes and verifiers at about 200, so longer entries are mistakes, reported with file:line. */
#define USERLIST_MAX_USER 256
#define USERLIST_MAX_SECRET 1024
/* Largest auth_file read, so a wrong path (a log, a device) cannot eat memory. */
#define USERLIST_MAX_FILE (64 * 1024 * 1024)

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

size_t userlist_count(const struct userlist *ul);
void userlist_free(struct userlist *ul);

/* What kind of secret a stored string is: "md5" + 32 hex digits is SECRET_MD5, a string that
 * parses as "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>" is SECRET_SCRAM, anything
 * else (including "") is SECRET_PLAIN.  NULL is SECRET_NONE. */
enum secret_kind userlist_secret_kind(const char *secret);

#endif
