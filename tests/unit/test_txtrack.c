/* test_txtrack.c: cmocka tests for the in-flight accounting: real drivers' message sequences, fed message by message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "txtrack.h"

/* A sequence: "c:X" a client message (c:p is an unnamed Parse), "s:X" a server message, "?1"
 * settled here, "?0" not settled here, "!U" the last client message was unknown. */
struct seq {
	const char *name;
	const char *steps;
};

static const struct seq seqs[] = {
	{ "simple query", "c:Q ?0 s:T s:D s:C s:Z ?1" },
	{ "asyncpg prepare, then execute",
	  "c:P c:D c:H ?0 s:1 s:t s:T ?0 c:B c:E c:S s:2 s:D s:C s:Z ?1" },
	{ "asyncpg without a statement cache: unnamed Parse, Sync, then Bind",
	  "c:p c:S s:1 s:Z ?0 c:B c:E c:S s:2 s:C s:Z ?1" },
	{ "psycopg pipeline: two statements, one Sync",
	  "c:P c:B c:D c:E c:P c:B c:D c:E ?0 c:S s:1 s:2 s:T s:C s:1 s:2 s:T s:C ?0 s:Z ?1" },
	{ "psycopg pipeline with a Sync per statement",
	  "c:P c:B c:E c:S c:P c:B c:E c:S s:1 s:2 s:C s:Z ?0 s:1 s:2 s:C s:Z ?1" },
	{ "COPY started by a simple Query", "c:Q s:G ?0 c:d c:d c:c ?0 s:C ?0 s:Z ?1" },
	{ "COPY started by the extended protocol, Sync sent before the data",
	  "c:P c:B c:E c:S s:1 s:2 s:G c:d c:c c:S ?0 s:C ?0 s:Z ?1" },
	{ "failed COPY (simple) with CopyData still coming",
	  "c:Q s:G c:d s:E s:Z ?1 c:d c:d c:c ?1" },
	{ "failed COPY (extended): the server ends it, the client ends it, then Syncs",
	  "c:P c:B c:E c:S s:1 s:2 s:G c:d s:E ?0 c:d c:c ?0 c:S ?0 s:Z ?1" },
	{ "CopyDone pipelined before the server's CopyInResponse",
	  "c:Q c:d c:c s:G s:C s:Z ?1" },
	{ "Flush flood behind a query", "c:Q c:H c:H c:H c:H c:H ?0 s:T s:D s:C s:Z ?1" },
	{ "error mid-pipeline: the rest is skipped to the Sync",
	  "c:P c:B c:E c:P c:B c:E c:S s:1 s:E ?0 s:Z ?1" },
	{ "two queries pipelined", "c:Q c:Q s:C s:Z ?0 s:C s:Z ?1" },
	{ "function call", "c:F s:V s:Z ?1" },
	{ "a Query settles unsynced extended messages (asyncpg)", "c:P c:D c:H c:Q s:1 s:t s:T ?0 s:C s:Z ?1" },
	/* Replication (CopyBoth, 'W'): the link must never look settled while the stream runs. */
	{ "START_REPLICATION streaming both ways", "c:Q s:W ?0 s:d s:d c:d s:d c:d c:d ?0" },
	{ "START_REPLICATION (physical): the client ends it, then the timeline result set",
	  "c:Q s:W s:d c:d ?0 c:c ?0 s:c ?0 s:T s:D s:C ?0 s:C ?0 s:Z ?1" },
	{ "START_REPLICATION: the server ends the stream first (end of timeline or endpos)",
	  "c:Q s:W s:d c:d s:c ?0 c:c ?0 s:C ?0 s:Z ?1" },
	{ "START_REPLICATION refused mid-stream, late CopyData from the client after it",
	  "c:Q s:W s:d ?0 s:E ?0 s:Z ?1 c:d c:c ?1" },
	{ "logical replication tablesync: SQL, a COPY out, then the stream",
	  "c:Q s:C s:Z ?1 c:Q s:H s:d s:d s:C s:Z ?1 c:Q s:W ?0 s:d c:d ?0" },
	{ "unknown message type", "c:z !U" },
};

static void run_seq(const struct seq *q)
{
	struct txtrack t;
	memset(&t, 0, sizeof(t));
	char buf[512];
	snprintf(buf, sizeof(buf), "%s", q->steps);
	enum txtrack_result last = TXT_OK;
	for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
		if (tok[0] == 'c') {
			char type = tok[2] == 'p' ? 'P' : tok[2];
			last = txtrack_client(&t, type, tok[2] == 'p');
		} else if (tok[0] == 's') {
			if (tok[2] == 'Z')
				txtrack_ready(&t);
			else
				txtrack_server(&t, tok[2]);
		} else if (tok[0] == '?') {
			bool want = tok[1] == '1';
			if (txtrack_settled(&t) != want) {
				print_error("%s: at \"%s\" settled is %d (expect_z %u sync %d copy %d unnamed %d)\n",
					    q->name, tok, !want, t.expect_z, t.sync_pending, t.in_copy,
					    t.unnamed_pending);
				fail();
			}
		} else if (tok[0] == '!') {
			assert_int_equal(last, TXT_UNKNOWN);
		}
	}
}

static void test_sequences(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++)
		run_seq(&seqs[i]);
}

static void test_overflow_and_reset(void **state)
{
	(void)state;
	struct txtrack t;
	memset(&t, 0, sizeof(t));
	enum txtrack_result r = TXT_OK;
	for (uint32_t i = 0; i <= TXTRACK_MAX_PIPELINE && r == TXT_OK; i++)
		r = txtrack_client(&t, 'S', false);
	assert_int_equal(r, TXT_OVERFLOW);
	txtrack_reset(&t);
	assert_true(txtrack_settled(&t));
	assert_true(txtrack_quiet(&t));
	/* a ReadyForQuery nobody waits for changes nothing */
	assert_false(txtrack_ready(&t));
	assert_int_equal(t.expect_z, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sequences),
		cmocka_unit_test(test_overflow_and_reset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
