/* prep_libpq: named prepared statements through pgmux with libpq, for test_prepared_clients.py.
 *
 * Usage: prep_libpq CONNINFO NCONNS ITERATIONS
 *
 * Opens NCONNS connections at once (so that, through a small transaction pool, most of them
 * wait for a server), then:
 *   1. PQprepare()s three statements on every connection (the same names on all of them; two
 *      texts shared by all, one text per connection), checks that preparing a name twice gives
 *      SQLSTATE 42P05 and leaves the connection usable;
 *   2. ITERATIONS rounds of PQexecPrepared() on every connection in turn, results checked;
 *   3. pipeline mode: on every connection first, PQsendPrepare + several PQsendQueryPrepared +
 *      PQpipelineSync (block 1), a block with a division by zero between two good statements
 *      (block 2: the statement after the error must come back PGRES_PIPELINE_ABORTED), and a
 *      good block (block 3); only then are the results read, connection by connection, and
 *      checked result by result.
 * Prints "OK <checks>" and exits 0, or prints what went wrong and exits 1.  alarm() bounds the
 * whole run (20 s), so a pooler that never answers ends it with "FAIL timed out ..." and the
 * last answer received, instead of hanging the test.
 */
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long checks;
static char stage[160] = "start";   /* what we are waiting for, for the alarm message */

static void on_alarm(int sig)
{
	(void)sig;
	char msg[256];
	int n = snprintf(msg, sizeof(msg), "FAIL timed out waiting for the pooler; last answer received: %s\n", stage);
	if (write(1, msg, (size_t)n) < 0)
		_exit(3);
	_exit(3);
}

#define STAGE(...) snprintf(stage, sizeof(stage), __VA_ARGS__)

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("FAIL ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
	fflush(stdout);
	exit(1);
}

static const char *state(const PGresult *r)
{
	const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	return s ? s : "-";
}

static void expect_status(PGresult *r, ExecStatusType want, int conn, const char *what)
{
	STAGE("conn %d %s", conn, what);
	if (!r)
		die("conn %d %s: no result (want %s)", conn, what, PQresStatus(want));
	if (PQresultStatus(r) != want)
		die("conn %d %s: status %s sqlstate %s (%s), want %s", conn, what,
		    PQresStatus(PQresultStatus(r)), state(r), PQresultErrorMessage(r), PQresStatus(want));
	checks++;
}

static void expect_value(PGresult *r, const char *want, int conn, const char *what)
{
	expect_status(r, PGRES_TUPLES_OK, conn, what);
	if (PQntuples(r) != 1 || PQnfields(r) != 1)
		die("conn %d %s: %d rows x %d columns, want 1 x 1", conn, what, PQntuples(r), PQnfields(r));
	if (strcmp(PQgetvalue(r, 0, 0), want) != 0)
		die("conn %d %s: got '%s', want '%s'", conn, what, PQgetvalue(r, 0, 0), want);
	checks++;
}

/* In pipeline mode every query's results end with a NULL. */
static void expect_null(PGconn *c, int conn, const char *what)
{
	PGresult *r = PQgetResult(c);
	if (r)
		die("conn %d %s: extra result %s (%s)", conn, what, PQresStatus(PQresultStatus(r)),
		    PQresultErrorMessage(r));
}

static PGresult *exec_prepared(PGconn *c, const char *name, int n, const char *a, const char *b)
{
	const char *vals[2] = { a, b };
	return PQexecPrepared(c, name, n, vals, NULL, NULL, 0);
}

static void send_prepared(PGconn *c, int conn, const char *name, int n, const char *a, const char *b)
{
	const char *vals[2] = { a, b };
	if (!PQsendQueryPrepared(c, name, n, vals, NULL, NULL, 0))
		die("conn %d PQsendQueryPrepared(%s): %s", conn, name, PQerrorMessage(c));
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s CONNINFO NCONNS ITERATIONS\n", argv[0]);
		return 2;
	}
	signal(SIGALRM, on_alarm);
	alarm(20);
	setvbuf(stdout, NULL, _IOLBF, 0);
	int n = atoi(argv[2]), iters = atoi(argv[3]);
	PGconn **cs = calloc((size_t)n, sizeof(*cs));
	char a[64], b[64], want[128], sql[256], what[64];

	for (int i = 0; i < n; i++) {
		cs[i] = PQconnectdb(argv[1]);
		if (PQstatus(cs[i]) != CONNECTION_OK)
			die("conn %d connect: %s", i, PQerrorMessage(cs[i]));
	}
	printf("connected %d\n", n);

	/* 1. prepare */
	for (int i = 0; i < n; i++) {
		PGresult *r = PQprepare(cs[i], "add", "SELECT $1::int + $2::int", 2, NULL);
		expect_status(r, PGRES_COMMAND_OK, i, "PQprepare add");
		PQclear(r);
		r = PQprepare(cs[i], "cat", "SELECT $1::text || '-' || $2::text", 2, NULL);
		expect_status(r, PGRES_COMMAND_OK, i, "PQprepare cat");
		PQclear(r);
		snprintf(sql, sizeof(sql), "SELECT $1::bigint * %d /* conn %d */", i + 1, i);
		r = PQprepare(cs[i], "own", sql, 1, NULL);
		expect_status(r, PGRES_COMMAND_OK, i, "PQprepare own");
		PQclear(r);
		/* the same name again: 42P05, and the connection goes on */
		r = PQprepare(cs[i], "add", "SELECT 1", 0, NULL);
		expect_status(r, PGRES_FATAL_ERROR, i, "PQprepare add twice");
		if (strcmp(state(r), "42P05") != 0)
			die("conn %d PQprepare add twice: sqlstate %s (%s), want 42P05", i, state(r),
			    PQresultErrorMessage(r));
		PQclear(r);
		if (PQstatus(cs[i]) != CONNECTION_OK)
			die("conn %d: connection lost after 42P05", i);
	}
	printf("prepared\n");

	/* 2. PQexecPrepared, round robin over the connections */
	for (int it = 0; it < iters; it++) {
		for (int i = 0; i < n; i++) {
			snprintf(a, sizeof(a), "%d", i);
			snprintf(b, sizeof(b), "%d", it * 1000);
			snprintf(want, sizeof(want), "%d", i + it * 1000);
			PGresult *r = exec_prepared(cs[i], "add", 2, a, b);
			expect_value(r, want, i, "exec add");
			PQclear(r);
			snprintf(a, sizeof(a), "c%d", i);
			snprintf(b, sizeof(b), "i%d", it);
			snprintf(want, sizeof(want), "c%d-i%d", i, it);
			r = exec_prepared(cs[i], "cat", 2, a, b);
			expect_value(r, want, i, "exec cat");
			PQclear(r);
			snprintf(a, sizeof(a), "%d", it + 7);
			snprintf(want, sizeof(want), "%d", (it + 7) * (i + 1));
			r = exec_prepared(cs[i], "own", 1, a, NULL);
			expect_value(r, want, i, "exec own");
			PQclear(r);
		}
	}
	printf("executed\n");

	/* 3. pipelines: send on every connection, then read */
	for (int i = 0; i < n; i++) {
		PGconn *c = cs[i];
		if (!PQenterPipelineMode(c))
			die("conn %d PQenterPipelineMode: %s", i, PQerrorMessage(c));
		/* block 1: a new statement prepared inside the pipeline, then used */
		if (!PQsendPrepare(c, "pl", "SELECT $1::int * 2 + $2::int", 2, NULL))
			die("conn %d PQsendPrepare: %s", i, PQerrorMessage(c));
		for (int k = 0; k < 5; k++) {
			snprintf(a, sizeof(a), "%d", k);
			snprintf(b, sizeof(b), "%d", i);
			send_prepared(c, i, "add", 2, a, b);
		}
		snprintf(a, sizeof(a), "%d", i);
		send_prepared(c, i, "pl", 2, a, "1");
		send_prepared(c, i, "own", 1, "3", NULL);
		if (!PQpipelineSync(c))
			die("conn %d PQpipelineSync 1: %s", i, PQerrorMessage(c));
		/* block 2: good, division by zero, good (aborted) */
		send_prepared(c, i, "add", 2, "40", "2");
		const char *zero[1] = { "0" };
		if (!PQsendQueryParams(c, "SELECT 1 / $1::int", 1, NULL, zero, NULL, NULL, 0))
			die("conn %d PQsendQueryParams: %s", i, PQerrorMessage(c));
		send_prepared(c, i, "cat", 2, "never", "run");
		if (!PQpipelineSync(c))
			die("conn %d PQpipelineSync 2: %s", i, PQerrorMessage(c));
		/* block 3: the pipeline works again */
		snprintf(a, sizeof(a), "%d", i);
		send_prepared(c, i, "cat", 2, "after", a);
		send_prepared(c, i, "pl", 2, "10", "0");
		if (!PQpipelineSync(c))
			die("conn %d PQpipelineSync 3: %s", i, PQerrorMessage(c));
	}
	printf("pipelines sent\n");
	for (int i = 0; i < n; i++) {
		PGconn *c = cs[i];
		PGresult *r = PQgetResult(c);
		expect_status(r, PGRES_COMMAND_OK, i, "pipeline PQsendPrepare");
		PQclear(r);
		expect_null(c, i, "pipeline PQsendPrepare");
		for (int k = 0; k < 5; k++) {
			snprintf(want, sizeof(want), "%d", k + i);
			snprintf(what, sizeof(what), "pipeline add #%d", k);
			r = PQgetResult(c);
			expect_value(r, want, i, what);
			PQclear(r);
			expect_null(c, i, what);
		}
		snprintf(want, sizeof(want), "%d", i * 2 + 1);
		r = PQgetResult(c);
		expect_value(r, want, i, "pipeline pl");
		PQclear(r);
		expect_null(c, i, "pipeline pl");
		snprintf(want, sizeof(want), "%d", 3 * (i + 1));
		r = PQgetResult(c);
		expect_value(r, want, i, "pipeline own");
		PQclear(r);
		expect_null(c, i, "pipeline own");
		r = PQgetResult(c);
		expect_status(r, PGRES_PIPELINE_SYNC, i, "pipeline sync 1");
		PQclear(r);

		r = PQgetResult(c);
		expect_value(r, "42", i, "pipeline block 2 add");
		PQclear(r);
		expect_null(c, i, "pipeline block 2 add");
		r = PQgetResult(c);
		expect_status(r, PGRES_FATAL_ERROR, i, "pipeline division by zero");
		if (strcmp(state(r), "22012") != 0)
			die("conn %d division by zero: sqlstate %s, want 22012", i, state(r));
		PQclear(r);
		expect_null(c, i, "pipeline division by zero");
		r = PQgetResult(c);
		expect_status(r, PGRES_PIPELINE_ABORTED, i, "pipeline statement after the error");
		PQclear(r);
		expect_null(c, i, "pipeline statement after the error");
		r = PQgetResult(c);
		expect_status(r, PGRES_PIPELINE_SYNC, i, "pipeline sync 2");
		PQclear(r);

		snprintf(want, sizeof(want), "after-%d", i);
		r = PQgetResult(c);
		expect_value(r, want, i, "pipeline block 3 cat");
		PQclear(r);
		expect_null(c, i, "pipeline block 3 cat");
		r = PQgetResult(c);
		expect_value(r, "20", i, "pipeline block 3 pl");
		PQclear(r);
		expect_null(c, i, "pipeline block 3 pl");
		r = PQgetResult(c);
		expect_status(r, PGRES_PIPELINE_SYNC, i, "pipeline sync 3");
		PQclear(r);
		if (!PQexitPipelineMode(c))
			die("conn %d PQexitPipelineMode: %s", i, PQerrorMessage(c));
	}
	printf("pipelines read\n");

	/* the statement prepared inside the pipeline stays usable outside it */
	for (int i = 0; i < n; i++) {
		snprintf(a, sizeof(a), "%d", i);
		snprintf(want, sizeof(want), "%d", i * 2 + 5);
		PGresult *r = exec_prepared(cs[i], "pl", 2, a, "5");
		expect_value(r, want, i, "exec pl after the pipeline");
		PQclear(r);
		PQfinish(cs[i]);
	}
	free(cs);
	printf("OK %ld\n", checks);
	return 0;
}
