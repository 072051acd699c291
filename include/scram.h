/* scram.h: SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, server side and client side. */
#ifndef PGMUX_SCRAM_H
#define PGMUX_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_KEY_LEN 32
#define SCRAM_MAX_SALT 64
/* The salt length of the verifiers PostgreSQL makes (SCRAM_DEFAULT_SALT_LEN there), and so of
 * the ones pgmux makes and of its mock salts: all salts a client sees have this length. */
#define SCRAM_SALT_LEN 16
#define SCRAM_NONCE_LEN 18           /* random bytes; base64 on the wire */
#define SCRAM_DEFAULT_ITERATIONS 4096
/* The most PBKDF2 iterations pgmux will compute for a count it did not choose (a server's
 * server-first-message).  pgmux runs logins on its one event loop, and PBKDF2-HMAC-SHA256 does
 * one to a few million iterations a second on one core (10 million took 8.8 s on a CI core), so
 * this bounds the stall a hostile server can cause to about a second per login, while staying
 * above every count an honest server uses (PostgreSQL's default is 4096; OWASP's 2023 advice
 * for PBKDF2-HMAC-SHA256 is 600,000). */
#define SCRAM_MAX_ITERATIONS 1000000
/* Length of the per-process key behind mock salts. */
#define SCRAM_MOCK_KEY_LEN 32
/* Longest SCRAM message accepted from a peer; real ones are under 300 bytes. */
#define SCRAM_MAX_MESSAGE 1024
/* Room for any verifier scram_format_secret writes, NUL included. */
#define SCRAM_SECRET_MAXLEN 256

/* A stored verifier: "SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>". */
struct scram_secret {
	int iterations;
	uint8_t salt[SCRAM_MAX_SALT];
	int salt_len;
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
};

/* Parses a verifier string; false when it is not a valid SCRAM-SHA-256 secret. */
bool scram_parse_secret(const char *text, struct scram_secret *out);

/* Derives a verifier from a plaintext password with the given salt and iteration count.  The
 * password is used as bytes (SASLprep is the identity for ASCII passwords). */
bool scram_secret_from_password(const char *password, const uint8_t *salt, int salt_len,
				int iterations, struct scram_secret *out);

/* Writes the verifier string for `s` (the inverse of scram_parse_secret) into out; false when it
 * does not fit or `s` is not a usable secret.  SCRAM_SECRET_MAXLEN bytes always suffice. */
bool scram_format_secret(const struct scram_secret *s, char *out, size_t outcap);

/* The salt for `user` under the mock key `key`: the first SCRAM_SALT_LEN bytes of
 * SHA-256(key || user), as PostgreSQL's scram_mock_salt does with its cluster nonce.  The same
 * inputs always give the same salt; a different user or key gives an unrelated one.  False only
 * when the hash cannot be computed. */
bool scram_mock_salt(const uint8_t key[SCRAM_MOCK_KEY_LEN], const char *user,
		     uint8_t out[SCRAM_SALT_LEN]);

/* Makes this process's mock key (SCRAM_MOCK_KEY_LEN bytes from RAND_bytes) unless it exists;
 * the key never changes afterwards, so every salt scram_process_salt gives is stable for the
 * life of the process.  Returns false when the RNG fails (then call again later). */
bool scram_mock_init(void);

/* scram_mock_salt with this process's key (made by scram_mock_init on first use): the salt
 * pgmux shows for a user without a stored SCRAM verifier, identical on every try for the same
 * name.  False when the key cannot be made. */
bool scram_process_salt(const char *user, uint8_t out[SCRAM_SALT_LEN]);

/* Fills `out` with a verifier for a login that must fail (unknown user, empty or unusable
 * secret): the process salt for `user`, SCRAM_DEFAULT_ITERATIONS, and keys that match no proof.
 * No PBKDF2 is computed.  Use it with scram_server.doomed set.  False when no salt can be made. */
bool scram_mock_secret(const char *user, struct scram_secret *out);

/* Server side: pgmux authenticating a client.  Zero-initialise, then set `secret` (and `doomed`
 * for a mock exchange). */
struct scram_server {
	struct scram_secret secret;
	/* The exchange runs exactly as for a real user, and scram_server_final fails at the proof
	 * whatever the client sends: so an unknown user looks like a wrong password. */
	bool doomed;
	char client_first_bare[512];
	char server_first[512];
	char nonce[128];              /* client nonce + server nonce, as sent */
	uint8_t client_key[SCRAM_KEY_LEN];  /* recovered from a valid proof, for pass-through */
	bool done;
	char gs2_flag;                /* 'n' or 'y' from the client-first-message; c= must match it */
};

/* Handles the SASLInitialResponse data (client-first-message, e.g. "n,,n=,r=<nonce>") and writes
 * the server-first-message into out.  Channel binding ("p=") is refused; "y"/"n" flags are
 * accepted.  Returns 0, or -1 for a malformed message (err says why). */
int scram_server_first(struct scram_server *st, const char *msg, size_t len,
		       char *out, size_t outcap, size_t *outlen, char *err, size_t errlen);

/* scram_server_first with a caller-chosen server nonce part (printable, no ','), for tests that
 * replay fixed vectors.  Production code must use scram_server_first's random nonce. */
int scram_server_first_with_nonce(struct scram_server *st, const char *msg, size_t len,
				  const char *server_nonce, char *out, size_t outcap, size_t *outlen,
				  char *err, size_t errlen);

/* Handles the SASLResponse data (client-final-message), checks the nonce, the channel binding
 * echo and the proof in constant time.  On success writes the server-final-message ("v=...")
 * into out, fills st->client_key, and returns 0.  Returns -1 for a bad proof or malformed
 * message, and always for a doomed exchange (after the same work as a real proof check). */
int scram_server_final(struct scram_server *st, const char *msg, size_t len,
		       char *out, size_t outcap, size_t *outlen, char *err, size_t errlen);

/* Client side: pgmux logging in to PostgreSQL.  Zero-initialise, then set either `password`
 * or (`have_keys`, client_key, server_key) for pass-through of a client's SCRAM login. */
struct scram_client {
	const char *password;
	bool have_keys;
	uint8_t client_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	/* When have_keys is set, the salt and iterations the keys belong to; the server must offer
	 * the same, or the login cannot be done (returns -1). */
	uint8_t key_salt[SCRAM_MAX_SALT];
	int key_salt_len;
	int key_iterations;
	char client_nonce[64];
	char client_first_bare[256];
	uint8_t expected_server_sig[SCRAM_KEY_LEN];
	bool final_sent;              /* expected_server_sig is valid only once this is set */
};

/* Writes the SASLInitialResponse data ("n,,n=,r=<nonce>") into out; 0 or -1. */
int scram_client_first(struct scram_client *st, char *out, size_t outcap, size_t *outlen);

/* scram_client_first with a caller-chosen nonce (printable, no ',', under 64 bytes) and user name
 * (NULL or "" sends "n=", as libpq does), for tests that replay fixed vectors. */
int scram_client_first_with_nonce(struct scram_client *st, const char *user, const char *nonce,
				  char *out, size_t outcap, size_t *outlen);

/* Takes the server-first-message and writes the client-final-message (with proof); 0 or -1.
 * A salt longer than SCRAM_MAX_SALT, a message longer than SCRAM_MAX_MESSAGE, or (with a
 * password) an iteration count above SCRAM_MAX_ITERATIONS is refused before any PBKDF2.  With
 * pass-through keys no PBKDF2 runs, and any count equal to key_iterations is accepted. */
int scram_client_final(struct scram_client *st, const char *server_first, size_t len,
		       char *out, size_t outcap, size_t *outlen, char *err, size_t errlen);

/* Checks the server-final-message's signature in constant time; 0 when it is right. */
int scram_client_verify(struct scram_client *st, const char *server_final, size_t len,
			char *err, size_t errlen);

#endif
