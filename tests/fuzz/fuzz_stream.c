/* fuzz_stream.c: libFuzzer harness driving whole client and server message streams through pgmux's real worker (plain [databases] entries). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "pgmux.h"
#include "stream_peer.h"

/* The worker and the fake peer live for the whole run: libFuzzer gives no other place for
 * state between LLVMFuzzerInitialize and the inputs. */
static struct {
	struct worker w;
	struct peer *peer;
} H;

/* Pool modes come from the user name ([users] below), so one worker covers all three. */
static const char *const users[] = { "u0", "u1", "s0", "t0", "u0" };
/* "cq" (a connect_query) is configured but not offered: a client's first messages reaching
 * a server as its connect_query ends abort pgmux (doc/reliability.md, finding 3; reproducer
 * tests/fuzz/crashes/stream-connect-query-close-abort).  Put it back once that is fixed. */
static const char *const dbs[] = { "db", "one", "one", "db", "pgmux" };
static const char *const session_users[] = { "s0" };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char tmpl[] = "/tmp/pgmux-stream-XXXXXX";
	char *dir = mkdtemp(tmpl);
	if (!dir) {
		perror("mkdtemp");
		abort();
	}
	static struct peer_backend be[] = { { 7001, false } };
	char path[256];
	snprintf(path, sizeof(path), "%s/pgmux.ini", dir);
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		abort();
	}
	/* Small pools so clients share servers; small memory limits so they are hit; no waiting
	 * for a retry after a failed server login, so no input leaves the next one a pool that
	 * refuses (server_login_retry). */
	fprintf(f,
		"[pgmux]\n"
		"listen_addr =\n"
		"unix_socket_dir = %s\n"
		"listen_port = 7000\n"
		"auth_type = trust\n"
		"pool_mode = transaction\n"
		"default_pool_size = 2\n"
		"max_client_conn = 50\n"
		"max_prepared_statements = 4\n"
		"max_client_memory = 256kB\n"
		"max_prepared_statement_memory = 1MB\n"
		"server_login_retry = 0\n"
		"stats_users = u0\n"
		"log_connections = 0\n"
		"log_disconnections = 0\n"
		"stats_period = 3600\n"
		"\n[databases]\n"
		"db = host=%s port=7001 dbname=db\n"
		"one = host=%s port=7001 dbname=one pool_size=1\n"
		"cq = host=%s port=7001 dbname=cq pool_size=1 connect_query='SELECT 1'\n"
		"\n[users]\n"
		"s0 = pool_mode=session\n"
		"t0 = pool_mode=statement\n",
		dir, dir, dir, dir);
	fclose(f);

	/* Quiet logs: an input logs dozens of lines, and stderr is libFuzzer's report. */
	log_open(NULL, false, NULL, NULL, getenv("STREAM_DEBUG") == NULL);
	struct config *cf;
	char err[512];
	if (config_load(path, &cf, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_stream: %s\n", err);
		abort();
	}
	struct peer_setup set = {
		.dir = dir, .backends = be, .n_backends = 1,
		.users = users, .n_users = 5, .dbs = dbs, .n_dbs = 5,
		.session_users = session_users, .n_session_users = 1,
	};
	H.peer = peer_new(&set);
	if (pgmux_worker_init(&H.w, cf, path, NULL) < 0) {
		fprintf(stderr, "fuzz_stream: worker init failed\n");
		abort();
	}
	/* pgmux's signal events would take SIGINT/SIGTERM from libFuzzer (its -max_total_time and
	 * Ctrl-C reports); the fuzz run never signals pgmux. */
	for (int i = 0; i < 5; i++)
		event_del(&H.w.ev_sig[i]);
	peer_attach(H.peer, &H.w);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	peer_run(H.peer, data, size);
	return 0;
}
