/* txtrack.h: what is in flight on a client's link: requests sent and answers owed, Sync/Flush, COPY both ways; the one "may this server go back?" predicate (pure). */
#ifndef PGMUX_TXTRACK_H
#define PGMUX_TXTRACK_H

#include <stdbool.h>
#include <stdint.h>

/* Pipelining past this many unanswered requests is refused: the count must never wrap. */
#define TXTRACK_MAX_PIPELINE (1u << 20)

struct txtrack {
	uint32_t expect_z;          /* ReadyForQuery still owed to the client */
	bool sync_pending;          /* extended-protocol messages sent since the last Sync */
	bool unnamed_pending;       /* the unnamed statement was parsed and not executed yet */
	/* COPY IN: PostgreSQL ignores Syncs until the copy ends, so the count is redone then */
	bool in_copy;               /* the server sent CopyIn/CopyBoth and has not ended it */
	bool copy_simple;           /* started by a simple Query (its ReadyForQuery follows) */
	bool copy_client_done;      /* the client sent CopyDone/CopyFail */
	bool copy_fixup;            /* the server ended the copy first: recount at CopyDone */
	char last_exec;             /* 'Q' or 'E': the last message that ran a statement */
	uint32_t copy_mark;         /* expect_z when the client ended the copy */
};

/* What a client message does to the tracker. */
enum txtrack_result {
	TXT_OK = 0,
	TXT_UNKNOWN,                /* not a frontend message type: the client is refused */
	TXT_OVERFLOW                /* more than TXTRACK_MAX_PIPELINE answers owed */
};

/* A client message forwarded on the link: type, and for a Parse whether it names the
 * unnamed statement.  Counts the answers it is owed. */
enum txtrack_result txtrack_client(struct txtrack *t, char type, bool unnamed_parse);

/* A CopyDone or CopyFail from a client without a server: PostgreSQL drops it; only a pending
 * recount is forgotten. */
void txtrack_stray_copy_end(struct txtrack *t);

/* A server message on the link (G, W, C, E matter). */
void txtrack_server(struct txtrack *t, char type);

/* A ReadyForQuery reached the client: true when it settled the last answer owed (a query, and
 * with no Sync pending, a transaction, ended: the caller counts them). */
bool txtrack_ready(struct txtrack *t);

/* Nothing owed either way: no request waits for its answer, no unsynced extended messages, no
 * COPY, no unnamed statement parsed but not yet run.  The half of "may this server go back?"
 * that is about requests; server.c adds the bytes still in flight and the server's state. */
bool txtrack_settled(const struct txtrack *t);

/* No request outstanding at all: the next one starts a query (for the statistics). */
static inline bool txtrack_quiet(const struct txtrack *t)
{
	return !t->expect_z && !t->sync_pending;
}

/* The exchange is over without its answers (a batch pgmux runs again elsewhere, a fan-out
 * moving to its next shard, a link let go before it ran anything): nothing is owed. */
void txtrack_reset(struct txtrack *t);

#endif
