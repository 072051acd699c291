/* bench_sqlscan.c: measures sqlscan_classify and sqlscan_keys in ns per statement over the SQL corpus. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strdup, CLOCK_THREAD_CPUTIME_ID under -std=c11 */
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sqlscan.h"

#define MAX_STMTS 4096

struct stmt {
	char *sql;
	size_t len;
};

static struct stmt stmts[MAX_STMTS];
static int n_stmts;
static volatile uint64_t sink; /* keeps the calls from being optimised away */

/* CPU time of this thread, not wall time: on a shared machine, time spent descheduled would
 * otherwise count as ours. */
static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The corpus format of tests/unit/data/sqlscan_corpus.txt: EXPECTED<TAB>SQL, "\n" for newlines. */
static int load(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[8192];

	if (!f) {
		perror(path);
		return -1;
	}
	while (fgets(line, sizeof(line), f) && n_stmts < MAX_STMTS) {
		line[strcspn(line, "\r\n")] = '\0';
		char *tab = strchr(line, '\t');
		if (line[0] == '#' || !tab)
			continue;
		char *sql = strdup(tab + 1), *o = sql;
		if (!sql)
			return -1;
		for (char *p = sql; *p; p++) {
			if (p[0] == '\\' && p[1] == 'n') {
				*o++ = '\n';
				p++;
			} else {
				*o++ = *p;
			}
		}
		*o = '\0';
		stmts[n_stmts].sql = sql;
		stmts[n_stmts].len = (size_t)(o - sql);
		n_stmts++;
	}
	fclose(f);
	return n_stmts > 0 ? 0 : -1;
}

enum which { CLASSIFY, KEYS };

#define ROUNDS 9

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* ns/statement over whole passes of v[0..n) for about `seconds` in all: the median of ROUNDS
 * rounds, which shrugs off the rounds that another process's cache traffic slowed down. */
static double run(enum which w, const struct stmt *v, int n, const struct sqlscan_funcs *wf,
		  double seconds, long *calls)
{
	struct sqlscan_result r;
	struct sqlscan_key keys[8];
	uint64_t acc = 0;
	double per[ROUNDS];

	*calls = 0;
	for (int round = 0; round < ROUNDS; round++) {
		long done = 0;
		double start = now_ns(), end = start + seconds * 1e9 / ROUNDS, t;
		do {
			for (int pass = 0; pass < 16; pass++) {
				for (int i = 0; i < n; i++) {
					if (w == CLASSIFY) {
						sqlscan_classify(v[i].sql, v[i].len, wf, &r);
						acc += r.verdict + r.n_statements;
					} else {
						acc += (uint64_t)sqlscan_keys(v[i].sql, v[i].len, "user_id", keys, 8);
					}
				}
				done += n;
			}
			t = now_ns();
		} while (t < end);
		per[round] = (t - start) / (double)done;
		*calls += done;
	}
	sink = acc;
	qsort(per, ROUNDS, sizeof(per[0]), cmp_double);
	return per[ROUNDS / 2];
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "tests/unit/data/sqlscan_corpus.txt";
	double seconds = argc > 2 ? atof(argv[2]) : 1.0;
	const char *err = NULL;
	long calls;

	if (load(path) < 0) {
		fprintf(stderr, "bench_sqlscan: cannot load a corpus from %s\n", path);
		return 1;
	}
	struct sqlscan_funcs *wf = sqlscan_funcs_new(sqlscan_default_write_functions, &err);
	if (!wf) {
		fprintf(stderr, "bench_sqlscan: write_functions: %s\n", err ? err : "out of memory");
		return 1;
	}
	size_t bytes = 0;
	for (int i = 0; i < n_stmts; i++)
		bytes += stmts[i].len;

	/* warm the caches and the branch predictors */
	run(CLASSIFY, stmts, n_stmts, wf, 0.1, &calls);

	double c = run(CLASSIFY, stmts, n_stmts, wf, seconds, &calls);
	printf("sqlscan_classify: %d statements, %.1f ns/statement (%ld calls, %.0f MB/s, CPU time, median of %d rounds)\n", n_stmts, c,
	       calls, (double)bytes / n_stmts / c * 1e3, ROUNDS);
	double k = run(KEYS, stmts, n_stmts, wf, seconds, &calls);
	printf("sqlscan_keys: %d statements, %.1f ns/statement (%ld calls, column user_id)\n", n_stmts, k,
	       calls);

	/* the typical point queries an OLTP client sends, on their own: pgbench -S's, simple and
	 * extended protocol, and a sharded one */
	static struct stmt points[] = {
		{ "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", 0 },
		{ "SELECT abalance FROM pgbench_accounts WHERE aid = $1;", 0 },
		{ "SELECT abalance FROM pgbench_accounts WHERE user_id = 42", 0 },
		{ "SELECT id, name, email FROM users WHERE user_id = $1", 0 },
	};
	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		points[i].len = strlen(points[i].sql);
		c = run(CLASSIFY, &points[i], 1, wf, seconds / 4, &calls);
		k = run(KEYS, &points[i], 1, wf, seconds / 4, &calls);
		printf("%s (%zu bytes): sqlscan_classify %.1f ns, sqlscan_keys %.1f ns\n", points[i].sql,
		       points[i].len, c, k);
	}

	sqlscan_funcs_free(wf);
	for (int i = 0; i < n_stmts; i++)
		free(stmts[i].sql);
	return 0;
}
