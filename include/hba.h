/* hba.h: PgBouncer's auth_hba_file and auth_ident_file (pg_hba.conf and pg_ident.conf's grammar, the subset PgBouncer reads): parsing and rule matching, pure. */
#ifndef PGMUX_HBA_H
#define PGMUX_HBA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits on what an operator's file may hold (a file over them is refused, never cut). */
#define HBA_MAX_FILE  (1 << 20)     /* bytes */
#define HBA_MAX_NAME  256           /* bytes of one database, user or map name */

enum hba_method { HBA_TRUST, HBA_REJECT, HBA_MD5, HBA_PASSWORD, HBA_SCRAM, HBA_PEER, HBA_CERT };

struct hba;     /* a parsed auth_hba_file */
struct ident;   /* a parsed auth_ident_file */

/* Who is logging in, as rule matching sees it. */
struct hba_peer {
	bool is_unix;               /* over the Unix socket (rules "local") */
	bool tls;                   /* over TLS (hostssl / hostnossl) */
	bool replication;           /* a replication connection (database "replication") */
	int family;                 /* AF_INET or AF_INET6 when not is_unix */
	uint8_t addr[16];           /* the address, 4 or 16 bytes in network order */
	const char *db, *user;
};

/* The rule that decides a login. */
struct hba_rule_info {
	enum hba_method method;
	const char *map;            /* map=NAME option, or NULL */
	int line;                   /* in the file */
};

/* Parses the text of an hba file (len bytes, NUL bytes refused).  Lines: TYPE DATABASE USER
 * [ADDRESS [MASK]] METHOD [map=NAME]; TYPE local, host, hostssl or hostnossl; DATABASE and USER
 * comma lists of names, double-quoted names ("" for a quote; a quoted all is a name) and the
 * keywords all, sameuser (database) and replication (database); ADDRESS all, a CIDR address or
 * an address and a mask; METHOD trust, reject, md5, password, scram-sha-256, peer or cert.
 * Returns 0 with *out set, or -1 with "line N: reason" in err. */
int hba_parse(const char *text, size_t len, struct hba **out, char *err, size_t errlen);

/* Reads and parses a file (at most HBA_MAX_FILE bytes); errors name the file. */
int hba_load(const char *path, struct hba **out, char *err, size_t errlen);

void hba_free(struct hba *h);

/* The number of rules. */
int hba_count(const struct hba *h);

/* The first rule that matches p; false when none does (the login is refused). */
bool hba_eval(const struct hba *h, const struct hba_peer *p, struct hba_rule_info *out);

/* Parses an ident file: MAPNAME SYSTEM-USERNAME PG-USERNAME per line, the names quoted as in
 * the hba file; an unquoted PG-USERNAME all stands for any user. */
int ident_parse(const char *text, size_t len, struct ident **out, char *err, size_t errlen);
int ident_load(const char *path, struct ident **out, char *err, size_t errlen);
void ident_free(struct ident *id);

/* True when map allows system user sys to log in as pg_user.  id may be NULL (no file: no
 * map matches). */
bool ident_match(const struct ident *id, const char *map, const char *sys, const char *pg_user);

/* The method's name as written in the file. */
const char *hba_method_name(enum hba_method m);

#endif
