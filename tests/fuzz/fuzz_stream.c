/* fuzz_stream.c: libFuzzer harness driving whole client and server message streams through pgmux's real worker (plain [databases] entries). */
#include <stddef.h>
#include <stdint.h>

#include "pgmux.h"
#include "stream_peer.h"

/* The worker and the fake peer live for the whole run: libFuzzer gives no other place for
 * state between LLVMFuzzerInitialize and the inputs. */
static struct {
	struct worker w;
	struct peer *peer;
} H;

/* Small pools so clients share servers; a small max_prepared_statements so servers evict;
 * small memory limits so they are hit; no wait after a failed server login
 * (server_login_retry), so that no input leaves the next one a pool that refuses.  Pool
 * modes come from the user ([users]), so one worker covers all three. */
static const char ini[] =
	"[pgmux]\n"
	"listen_addr =\n"
	"unix_socket_dir = @DIR@\n"
	"listen_port = 7000\n"
	"auth_type = trust\n"
	"pool_mode = transaction\n"
	"default_pool_size = 2\n"
	"max_client_conn = 50\n"
	"max_prepared_statements = 4\n"
	"max_client_memory = 256kB\n"
	"max_prepared_statement_memory = 1MB\n"
	"server_login_retry = 0\n"
	/* a client left waiting for a server whose receive buffer is full cannot be seen hanging
	 * up (reading is paused); as in PgBouncer it waits out client_login_timeout or
	 * query_wait_timeout, which the teardown then waits for (kept short here) */
	"client_login_timeout = 1\n"
	"query_wait_timeout = 1\n"
	"stats_users = u0\n"
	"log_connections = 0\n"
	"log_disconnections = 0\n"
	"stats_period = 3600\n"
	"\n[databases]\n"
	"db = host=@DIR@ port=7001 dbname=db\n"
	"one = host=@DIR@ port=7001 dbname=one pool_size=1\n"
	"cq = host=@DIR@ port=7001 dbname=cq pool_size=1 connect_query='SELECT 1'\n"
	"\n[users]\n"
	"s0 = pool_mode=session\n"
	"t0 = pool_mode=statement\n";

static const struct peer_backend backends[] = { { 7001, false } };
static const char *const users[] = { "u0", "u1", "s0", "t0", "u0" };
/* "cq" (a connect_query) is offered only with STREAM_KNOWN_BUGS: a client's first messages
 * reaching a server as its connect_query ends abort pgmux (doc/reliability.md, finding 3;
 * reproducer tests/fuzz/crashes/stream-connect-query-close-abort).  Offer it always once
 * that is fixed. */
static const char *const dbs[] = { "db", "one", "one", "db", "pgmux" };
static const char *const dbs_known_bugs[] = { "db", "one", "cq", "db", "pgmux" };
static const char *const session_users[] = { "s0" };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	struct peer_setup set = {
		.backends = backends, .n_backends = 1,
		.users = users, .n_users = 5, .dbs = peer_known_bugs() ? dbs_known_bugs : dbs, .n_dbs = 5,
		.session_users = session_users, .n_session_users = 1,
	};
	H.peer = peer_start(&H.w, ini, &set);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	peer_run(H.peer, data, size);
	return 0;
}
