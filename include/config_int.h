/* config_int.h: what the config_*.c files share while reading one file (parse state, errors, value
 * parsers, entry builders); private to them, never included elsewhere. */
#ifndef PGMUX_CONFIG_INT_H
#define PGMUX_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* How many general keys CONFIG_KEYS defines (config_load.c checks it against its key table). */
#define CF_COUNT_KEY(kind, name, def, chg) +1
enum { CF_N_KEYS = 0 CONFIG_KEYS(CF_COUNT_KEY) };
#undef CF_COUNT_KEY

/* A check on a string value: true when it is acceptable, else false with a reason in why. */
typedef bool (*str_check_fn)(const char *value, char *why, size_t whylen);

/* ---- parse state (config_load.c) and errors (config_values.c) --------------------------- */

enum cf_section { SEC_NONE, SEC_GENERAL, SEC_DATABASES, SEC_USERS, SEC_CLUSTER };

/* One config_load under way: the snapshot being filled, where the reader is, the first error. */
struct cf_parse {
	const char *file;       /* as the caller named it, for messages */
	struct config *cf;
	FILE *fp;
	char *buf;              /* getline's buffer */
	size_t cap;
	int line;               /* the line inih is working on: the reader counts */
	enum cf_section section;
	int key_line[CF_N_KEYS]; /* where each general key was last set; 0: default */
	struct cfg_db **db_tail;
	struct cfg_user **user_tail;
	struct cfg_cluster **cluster_tail;
	struct cfg_cluster *cluster;    /* the [database X] section being read */
	char *err;
	size_t errlen;
	bool failed;
};

/* Records "file:line: reason" (or "file: reason" when line is 0) and marks the load failed.
 * Keeps the first error only: later ones are usually its consequences. */
void cf_fail_at(struct cf_parse *ps, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* cf_fail_at on the line being read. */
#define cf_fail(ps, ...) cf_fail_at((ps), (ps)->line, __VA_ARGS__)

/* Strips white space from both ends of s in place; returns the first non-space character. */
char *cf_trim(char *s);

/* ---- names and value parsers (config_values.c) ------------------------------------------ */

struct name_val {
	const char *name;
	int val;
};

/* Finds name (case-insensitive) in tab[n]: true with its value in *out, else false. */
bool cf_lookup_name(const struct name_val *tab, size_t n, const char *name, int *out);

/* A boolean as PgBouncer writes it (1/0, on/off, true/false, yes/no): true with 1 or 0 in *out,
 * false for anything else. */
bool cf_lookup_bool(const char *name, int *out);

/* True when s is one of list[n], case-insensitive. */
bool cf_in_list(const char *const *list, size_t n, const char *s);

/* The string checks of general keys (str_check_fn): true for a value pgmux can honour, else
 * false with a reason in why.  facility: a syslog facility log.c knows; listen: empty or
 * host:port; sslmode: a libpq sslmode name; tls_protocols: a list config_tls_protocols takes;
 * dheparams: none, auto or legacy. */
bool cf_check_facility(const char *value, char *why, size_t whylen);
bool cf_check_listen(const char *value, char *why, size_t whylen);
bool cf_check_sslmode(const char *value, char *why, size_t whylen);
bool cf_check_hosts(const char *value, char *why, size_t whylen);
bool cf_check_lbh(const char *value, char *why, size_t whylen);
bool cf_check_tls_protocols(const char *value, char *why, size_t whylen);
bool cf_check_dheparams(const char *value, char *why, size_t whylen);

/* auth_dbname: not a console database name (PgBouncer refuses it too). */
bool cf_check_auth_dbname(const char *value, char *why, size_t whylen);
/* auth_query: at most 4 kB (it is sent with every lookup). */
bool cf_check_auth_query(const char *value, char *why, size_t whylen);

/* Checks of PgBouncer keys pgmux ignores, for the values whose silent absence would weaken
 * security.  only_current_user: empty or the name of the user pgmux runs as. */
bool cf_only_current_user(const char *value, char *why, size_t whylen);

/* A decimal (or, with octal, octal) integer within min..max into *out; else false with why. */
bool cf_parse_int(const char *s, bool octal, int64_t min, int64_t max, int64_t *out,
		  char *why, size_t whylen);

/* A time into microseconds: seconds with an optional fraction ("5", "0.5"), or a number with a
 * PostgreSQL time unit ("500ms", "5min"; us ms s min h d); else false with why. */
bool cf_parse_usec(const char *s, int64_t *out, char *why, size_t whylen);

/* A plain decimal fraction from 0 to 1 ("0.8", ".5", "1"); else false with why. */
bool cf_parse_real(const char *s, double *out, char *why, size_t whylen);

/* Bytes with an optional kB/MB/GB unit (powers of 1024), within min..max; else false with why. */
bool cf_parse_size(const char *s, int64_t min, int64_t max, int64_t *out, char *why,
		   size_t whylen);

/* A pool_mode name into enum pool_mode; else false with why. */
bool cf_parse_mode(const char *s, int *out, char *why, size_t whylen);

/* An auth_type name into enum auth_type; else false with why (naming the PgBouncer types pgmux
 * does not support yet as such). */
bool cf_parse_auth(const char *s, int *out, char *why, size_t whylen);

/* ---- [databases] and [users] entries (config_entries.c) --------------------------------- */

/* An entry or section name as written, bare or as a "quoted ""SQL"" identifier": a new string
 * the caller frees, or NULL with why filled (or, out of memory, why untouched). */
char *cf_entry_name(const char *raw, char *why, size_t whylen);

/* True for the names the admin console answers on, which no entry may take. */
bool cf_reserved_db_name(const char *name);

/* A new entry named name (taken over, freed on failure), every int field -1, linked at the end
 * of the snapshot's list so that config_free owns it whatever happens next.  NULL, with the
 * error recorded, when the name is taken or memory runs out. */
struct cfg_db *cf_new_db_entry(struct cf_parse *ps, char *name);

/* Applies an entry's value (an optional libpq URI, then key=value pairs) to db and builds its
 * conninfo, which libpq must accept.  False with the error recorded. */
bool cf_parse_db_value(struct cf_parse *ps, struct cfg_db *db, const char *value);

/* One line of [databases] / [users]: name = key=value ...  False with the error recorded. */
bool cf_add_db(struct cf_parse *ps, const char *rawname, const char *value);
bool cf_add_user(struct cf_parse *ps, const char *rawname, const char *value);

/* ---- [database X] sections (config_cluster.c) ------------------------------------------- */

/* Opens a [database X] section: its cfg_cluster with the defaults and the front entry clients
 * connect to; later pairs go to cf_cluster_pair.  False with the error recorded. */
bool cf_add_cluster(struct cf_parse *ps, const char *rawname);

/* One key = value of the open [database X] section.  False with the error recorded. */
bool cf_cluster_pair(struct cf_parse *ps, const char *key, const char *value);

/* Once the whole file is read: every shard of every section has a primary, backends are in
 * range, and section pool settings reach the backends that do not set their own.  Records the
 * first error. */
void cf_finish_clusters(struct cf_parse *ps);

#endif
