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

/* The tracker's functions that run for every message are inline (the forwarding loops call
 * them per message; as calls they cost about 2.5% of a transaction's instructions); the rest
 * is in txtrack.c. */

/* A client message forwarded on the link: type, and for a Parse whether it names the
 * unnamed statement.  Counts the answers it is owed. */
static inline enum txtrack_result txtrack_client(struct txtrack *t, char type, bool unnamed_parse)
{
	switch (type) {
	case 'Q':
		/* A simple Query is a sync point of its own, even after unsynced extended messages
		 * (asyncpg sends Parse/Describe/Flush, then a Query). */
		t->expect_z++;
		t->sync_pending = false;
		t->unnamed_pending = false;
		t->last_exec = 'Q';
		t->copy_client_done = false;
		break;
	case 'F':
		t->expect_z++;
		break;
	case 'S':
		t->expect_z++;
		t->sync_pending = false;
		break;
	case 'E':
		t->sync_pending = true;
		t->unnamed_pending = false;
		t->last_exec = 'E';
		t->copy_client_done = false;
		break;
	case 'P':
		/* Drivers parse the unnamed statement, Sync, then Bind it (asyncpg without a
		 * statement cache): the server must stay until it has run. */
		if (unnamed_parse)
			t->unnamed_pending = true;
		t->sync_pending = true;
		break;
	case 'B': case 'D': case 'C':
		t->sync_pending = true;
		break;
	case 'c': case 'f':
		if (t->copy_fixup) {
			/* The server already ended the copy (an error) and ignored the Syncs sent during
			 * it: only a Sync from here on answers, and until it comes the server skips. */
			t->copy_fixup = false;
			t->expect_z = 0;
			t->sync_pending = true;
		} else {
			/* May come before the server's CopyInResponse when the client pipelines. */
			t->copy_client_done = true;
			t->copy_mark = t->expect_z;
		}
		break;
	case 'd': case 'H': case 'X':
		break;
	default:
		return TXT_UNKNOWN;
	}
	return t->expect_z > TXTRACK_MAX_PIPELINE ? TXT_OVERFLOW : TXT_OK;
}


/* A CopyDone or CopyFail from a client without a server: PostgreSQL drops it; only a pending
 * recount is forgotten. */
void txtrack_stray_copy_end(struct txtrack *t);

/* The server ended a COPY IN: recount the ReadyForQuery still owed, since PostgreSQL ignored
 * the Syncs that arrived during the copy. */
void txtrack_copy_ended(struct txtrack *t);

/* A server message on the link (G, W, C, E matter). */
static inline void txtrack_server(struct txtrack *t, char type)
{
	switch (type) {
	case 'G':
	case 'W':
		t->in_copy = true;
		t->copy_simple = t->last_exec == 'Q';
		break;
	case 'C':
	case 'E':
		if (t->in_copy)
			txtrack_copy_ended(t);
		break;
	default:
		break;
	}
}


/* A ReadyForQuery reached the client: true when it settled the last answer owed (a query, and
 * with no Sync pending, a transaction, ended: the caller counts them). */
static inline bool txtrack_ready(struct txtrack *t)
{
	return t->expect_z && --t->expect_z == 0;
}

/* Nothing owed either way: no request waits for its answer, no unsynced extended messages, no
 * COPY, no unnamed statement parsed but not yet run.  The half of "may this server go back?"
 * that is about requests; server.c adds the bytes still in flight and the server's state. */
static inline bool txtrack_settled(const struct txtrack *t)
{
	return t->expect_z == 0 && !t->sync_pending && !t->in_copy && !t->unnamed_pending;
}

/* No request outstanding at all: the next one starts a query (for the statistics). */
static inline bool txtrack_quiet(const struct txtrack *t)
{
	return !t->expect_z && !t->sync_pending;
}

/* The exchange is over without its answers (a batch pgmux runs again elsewhere, a fan-out
 * moving to its next shard, a link let go before it ran anything): nothing is owed. */
void txtrack_reset(struct txtrack *t);

#endif
