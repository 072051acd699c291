/* sqlscan.h: a fast SQL lexer that tells reads from writes, reads pgmux hints and finds shard keys. */
#ifndef PGMUX_SQLSCAN_H
#define PGMUX_SQLSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sqlscan_verdict { SQLSCAN_WRITE = 0, SQLSCAN_READ = 1 };

enum sqlscan_role { SQLSCAN_ROLE_NONE = 0, SQLSCAN_ROLE_PRIMARY, SQLSCAN_ROLE_REPLICA, SQLSCAN_ROLE_AUTO };

enum sqlscan_tx {
	SQLSCAN_TX_NONE = 0,
	SQLSCAN_TX_BEGIN,       /* BEGIN / START TRANSACTION, read-write or unspecified */
	SQLSCAN_TX_BEGIN_RO,    /* BEGIN / START TRANSACTION ... READ ONLY */
	SQLSCAN_TX_SET_RO,      /* SET TRANSACTION READ ONLY (possibly with other modes) */
	SQLSCAN_TX_END          /* COMMIT, END, ROLLBACK, ABORT (not ROLLBACK TO SAVEPOINT),
				 * PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED */
};

enum sqlscan_set {
	SQLSCAN_SET_NONE = 0,
	SQLSCAN_SET_ROLE, SQLSCAN_SET_USER_ID, SQLSCAN_SET_SHARD,
	SQLSCAN_RESET_ROLE, SQLSCAN_RESET_USER_ID, SQLSCAN_RESET_SHARD
};

/* A compiled write_functions list. */
struct sqlscan_funcs;

/* Compiles a list of function names separated by commas and/or white space, matched
 * case-insensitively; '*' matches any run of characters ("pg_advisory*lock*", "lo_*").  A
 * schema-qualified name keeps only its last component.  An empty list is valid (no function
 * is a write).  Returns NULL on bad input with *err (when err is not NULL) set to a static
 * message, or NULL with *err NULL when out of memory.  The caller frees the result. */
struct sqlscan_funcs *sqlscan_funcs_new(const char *list, const char **err);
void sqlscan_funcs_free(struct sqlscan_funcs *f);
/* Whether a name in the list holds a digit (then verdicts can depend on a text's digits). */
bool sqlscan_funcs_digits(const struct sqlscan_funcs *f);

/* The default write_functions setting. */
extern const char sqlscan_default_write_functions[];

#define SQLSCAN_SET_VALUE_MAX 64

struct sqlscan_result {
	uint8_t verdict;        /* sqlscan_verdict of the whole string */
	uint8_t hint_role;      /* sqlscan_role from a hint comment */
	uint8_t tx;             /* sqlscan_tx of the first statement */
	uint8_t set;            /* sqlscan_set: non-zero only when the whole string is exactly one
				 * SET/RESET of pgmux.role, pgmux.user_id or pgmux.shard */
	uint16_t n_statements;  /* non-empty statements, saturating */
	bool has_hint_user_id;
	int64_t hint_user_id;   /* from a hint comment, when has_hint_user_id */
	int32_t hint_shard;     /* from a hint comment, -1 when none */
	char set_value[SQLSCAN_SET_VALUE_MAX]; /* SET pgmux.x = value: the value, unquoted and
						* NUL-terminated; "" for RESET */
	bool set_value_bad;     /* the value does not fit set_value, or is a list */
	bool lex_error;         /* unterminated quote, comment or dollar quote (verdict is write) */
};

/* Classifies sql[0..len): it need not be NUL-terminated, and a NUL before len ends it.  wf may
 * be NULL (no function is a write function).  Never reads past len, never allocates. */
void sqlscan_classify(const char *sql, size_t len, const struct sqlscan_funcs *wf,
		      struct sqlscan_result *r);

enum sqlscan_keykind { SQLSCAN_KEY_INT = 1, SQLSCAN_KEY_PARAM, SQLSCAN_KEY_STRING };

struct sqlscan_key {
	uint8_t kind;           /* sqlscan_keykind */
	int64_t ival;           /* SQLSCAN_KEY_INT */
	uint16_t param;         /* SQLSCAN_KEY_PARAM: $n, 1-based */
	uint32_t str_off, str_len; /* SQLSCAN_KEY_STRING: the literal's body in sql, quotes excluded */
	bool needs_unescape;    /* SQLSCAN_KEY_STRING: the body has '' doubling or E'' escapes */
	bool e_string;          /* SQLSCAN_KEY_STRING: an E'' literal (backslash escapes) */
};

/* Finds the values that the statements in sql[0..len) give the shard-key column `column`
 * ("user_id", or "users.user_id", of which only the last component is matched): equality with
 * a literal or $n (either side, casts allowed), IN lists of such values, and INSERT column
 * lists matched to their VALUES rows.  Stores at most max keys in keys[]; returns how many it
 * found (possibly more than max), or -1 when sql does not lex (an unterminated quote, comment
 * or dollar quote).  Never allocates. */
int sqlscan_keys(const char *sql, size_t len, const char *column, struct sqlscan_key *keys, int max);

/* Copies the body of a SQLSCAN_KEY_STRING key into buf (size > 0), undoing '' doubling and,
 * for E'' literals, backslash escapes.  Returns the length, or -1 when it does not fit. */
int sqlscan_key_string(const char *sql, const struct sqlscan_key *key, char *buf, size_t size);

#endif
