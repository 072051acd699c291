/* txtrack.c: the in-flight accounting of one client link, fed message by message; pure, so its rules are tested on message sequences alone. */
#include "txtrack.h"

enum txtrack_result txtrack_client(struct txtrack *t, char type, bool unnamed_parse)
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

void txtrack_stray_copy_end(struct txtrack *t)
{
	t->copy_fixup = false;
}

/* The server ended a COPY IN: recount the ReadyForQuery still owed, since PostgreSQL ignored
 * the Syncs that arrived during the copy. */
static void copy_ended(struct txtrack *t)
{
	t->in_copy = false;
	if (t->copy_client_done)
		t->expect_z = (t->copy_simple ? 1 : 0) + (t->expect_z - t->copy_mark);
	else
		t->copy_fixup = !t->copy_simple;
	t->copy_client_done = false;
}

void txtrack_server(struct txtrack *t, char type)
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
			copy_ended(t);
		break;
	default:
		break;
	}
}

bool txtrack_ready(struct txtrack *t)
{
	return t->expect_z && --t->expect_z == 0;
}

bool txtrack_settled(const struct txtrack *t)
{
	return t->expect_z == 0 && !t->sync_pending && !t->in_copy && !t->unnamed_pending;
}

void txtrack_reset(struct txtrack *t)
{
	t->expect_z = 0;
	t->sync_pending = false;
	t->unnamed_pending = false;
}
