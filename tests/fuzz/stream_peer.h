/* stream_peer.h: the fake PostgreSQL server, fake clients and script interpreter that the stream harnesses drive pgmux with. */
#ifndef PGMUX_STREAM_PEER_H
#define PGMUX_STREAM_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;

/* One socket the fake server listens on, <dir>/.s.PGSQL.<port>: one backend line of the config. */
struct peer_backend {
	int port;
	bool replica;       /* a standby: the monitor's probe says so, and writes get 25006 */
};

/* What a harness tells the peer about the configuration it wrote. */
struct peer_setup {
	const char *dir;                    /* the temporary directory of every socket */
	const struct peer_backend *backends;
	int n_backends;
	const char *const *users;           /* names a fake client may log in as */
	int n_users;
	const char *const *dbs;             /* database names a fake client may ask for */
	int n_dbs;
	/* Users whose pool mode is session: their statement names reach the server unchanged.
	 * Every other user's named statements must arrive renamed pgmux_<token>_<n>. */
	const char *const *session_users;
	int n_session_users;
	/* Longest portal plus statement name a Bind may carry; 0: no limit.  (The routed harness
	 * keeps below a known pgmux bug: doc/reliability.md, finding 6.) */
	size_t bind_names_max;
	/* Longest message a client of any database but `uncapped_db` sends (longer ones are not
	 * sent); 0: no limit.  (The routed harness: finding 6 again, two big messages in a row.) */
	size_t msg_max;
	const char *uncapped_db;
	/* A database whose clients' ReadyForQuery count is not checked (NULL: none).  (The
	 * routed harness's sharded database: doc/reliability.md, finding 7.) */
	const char *answers_unchecked_db;
	/* Parse a BEGIN without parameter types.  (The routed harness: a typed one is re-sent as
	 * a malformed Query, doc/reliability.md, finding 8.) */
	bool untyped_begin;
	/* The script does not cut server connections.  (The routed harness: a read whose server
	 * is gone before pgmux could send it runs twice when retried, doc/reliability.md,
	 * finding 12.) */
	bool no_server_cut;
};

struct peer;

/* Opens the fake server's listeners; aborts when it cannot (the harness cannot run). */
struct peer *peer_new(const struct peer_setup *s);
/* Hands the peer the worker it drives, then runs the loop until it is quiet (the routed
 * harness's monitors log in and probe here). */
void peer_attach(struct peer *p, struct worker *w);
/* One input: runs its script, then closes every connection and checks what must hold after. */
void peer_run(struct peer *p, const uint8_t *data, size_t size);

/* True when STREAM_KNOWN_BUGS is set: the harnesses then stop steering around the pgmux bugs
 * listed in doc/reliability.md, so that the reproducers in tests/fuzz/crashes/ fail (and show
 * a fix, once they pass). */
bool peer_known_bugs(void);

/* Writes the config `ini` into a new temporary directory (every "@DIR@" in it becomes that
 * directory), starts the worker on it with the peer's listeners, and waits until it is
 * quiet.  set->dir is filled in.  Aborts when anything fails. */
struct peer *peer_start(struct worker *w, const char *ini, struct peer_setup *set);

/* stream_peek.c: statements in pgmux's shared cache (and their bytes). */
size_t peer_ps_cached(const struct worker *w, size_t *bytes);

#endif
