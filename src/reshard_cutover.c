/* reshard_cutover.c: pgmux-reshard's cutover: PAUSE, catch-up, sequences, new config, RELOAD, RESUME. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reshard.h"

/* A configuration file is small; anything larger than this is not one. */
#define CONFIG_MAX_BYTES (16 << 20)

/* The whole file in a new buffer (*len its size); NULL after printing why. */
static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "pgmux-reshard: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	char *buf = malloc(CONFIG_MAX_BYTES + 1);
	size_t n = buf ? fread(buf, 1, CONFIG_MAX_BYTES + 1, f) : 0;
	bool err = ferror(f);
	fclose(f);
	if (!buf || err || n > CONFIG_MAX_BYTES) {
		fprintf(stderr, "pgmux-reshard: %s: unreadable or over %d bytes\n", path, CONFIG_MAX_BYTES);
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

bool reshard_same_file_text(const char *a, const char *b)
{
	size_t la, lb;
	char *x = slurp(a, &la);
	char *y = x ? slurp(b, &lb) : NULL;
	bool same = x && y && la == lb && !memcmp(x, y, la);
	free(x);
	free(y);
	return same;
}

/* Writes data to path through a temporary file, fsync and rename, keeping path's mode. */
static bool replace_file(const char *path, const char *data, size_t len)
{
	char tmp[4096];
	struct stat st;
	mode_t mode = stat(path, &st) == 0 ? st.st_mode & 07777 : 0644;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.reshard-tmp", path) >= sizeof(tmp))
		return false;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0) {
		fprintf(stderr, "pgmux-reshard: %s: %s\n", tmp, strerror(errno));
		return false;
	}
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fprintf(stderr, "pgmux-reshard: writing %s: %s\n", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
			return false;
		}
		off += (size_t)w;
	}
	if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
		fprintf(stderr, "pgmux-reshard: installing %s: %s\n", path, strerror(errno));
		unlink(tmp);
		return false;
	}
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	return true;
}

/* Puts the new configuration in place of the live one (the live one kept as LIVE.pre-reshard,
 * once); true when the live file now holds the new text. */
static bool install_config(struct reshard *rs)
{
	size_t nl, ll;
	char *neu = slurp(rs->new_config, &nl);
	char *live = neu ? slurp(rs->config, &ll) : NULL;
	bool ok = false;
	if (neu && live) {
		if (nl == ll && !memcmp(neu, live, nl)) {
			ok = true;   /* a restarted run: already in place */
		} else {
			char bak[4096];
			struct stat st;
			snprintf(bak, sizeof(bak), "%s.pre-reshard", rs->config);
			ok = (stat(bak, &st) == 0 || replace_file(bak, live, ll)) &&
			     replace_file(rs->config, neu, nl);
			if (ok)
				printf("cutover: %s installed as %s (the old one kept as %s)\n",
				       rs->new_config, rs->config, bak);
		}
	}
	free(neu);
	free(live);
	return ok;
}

/* Puts the old configuration back from LIVE.pre-reshard (a failed RELOAD). */
static void restore_config(struct reshard *rs)
{
	char bak[4096];
	size_t len;
	snprintf(bak, sizeof(bak), "%s.pre-reshard", rs->config);
	char *old = slurp(bak, &len);
	if (old && replace_file(rs->config, old, len))
		printf("cutover: %s restored from %s\n", rs->config, bak);
	free(old);
}

/* Waits until every new shard has applied every commit its old shard made before this call
 * (made after PAUSE returned): the marker row's counter goes up on each old shard, and
 * replication applies commits in their order, so a new shard showing the new value has
 * applied all before it.  (The slot's confirmed_flush_lsn is no such proof: the subscriber
 * may report positions it has not applied yet.) */
static bool wait_caught_up(struct reshard *rs)
{
	char **mark = calloc((size_t)rs->n_old, sizeof(*mark));
	if (!mark)
		return false;
	bool ok = true;
	for (int i = 0; ok && i < rs->n_old; i++)
		ok = (mark[i] = reshard_value(&rs->old[i], "UPDATE pgmux_reshard.marker SET n = n + 1 "
					      "WHERE id = 0 RETURNING n::text", 0, NULL)) && mark[i][0];
	double t0 = reshard_now_ms();
	for (int j = rs->n_old; ok && j < rs->n_new; j++) {
		const char *p[1] = { mark[rs->new[j].source] };
		for (;;) {
			int done = reshard_bool(&rs->new[j], "SELECT coalesce(bool_and(n >= $1::bigint), false) "
						"FROM pgmux_reshard.marker WHERE id = 0", 1, p);
			if (done < 0) {
				ok = false;
				break;
			}
			if (done)
				break;
			if (reshard_now_ms() - t0 > (double)rs->cutover_timeout_ms || reshard_interrupted) {
				fprintf(stderr, "pgmux-reshard: new shard %d did not apply old shard %d's "
					"writes within %ld ms\n", j, rs->new[j].source,
					rs->cutover_timeout_ms);
				ok = false;
				break;
			}
			reshard_sleep_ms(10);
		}
	}
	for (int i = 0; i < rs->n_old; i++)
		free(mark[i]);
	free(mark);
	if (ok)
		printf("cutover: new shards caught up in %.1f ms\n", reshard_now_ms() - t0);
	return ok;
}

/* Logical replication leaves sequences behind: each new shard's sequences continue from its
 * source's value (never moving one backwards on a rerun). */
static bool copy_sequences(struct reshard *rs)
{
	for (int i = 0; i < rs->n_old; i++) {
		PGresult *r = reshard_query(&rs->old[i],
			"SELECT format('%I.%I', schemaname, sequencename), last_value::text "
			"FROM pg_sequences WHERE last_value IS NOT NULL "
			"AND schemaname <> 'pgmux_reshard'", 0, NULL);
		if (!r)
			return false;
		for (int j = rs->n_old; j < rs->n_new; j++) {
			if (rs->new[j].source != i)
				continue;
			for (int k = 0; k < PQntuples(r); k++) {
				const char *p[2] = { PQgetvalue(r, k, 0), PQgetvalue(r, k, 1) };
				if (!reshard_exec(&rs->new[j],
						  "SELECT setval(s, greatest($2::bigint, "
						  "coalesce(pg_sequence_last_value(s), $2::bigint))) "
						  "FROM to_regclass($1) s WHERE s IS NOT NULL", 2, p)) {
					PQclear(r);
					return false;
				}
			}
		}
		PQclear(r);
	}
	return true;
}

/* Whether pgmux's SHOW SHARDS lists rs->n_new shards for the database. */
static bool shards_listed(struct reshard *rs, PGconn *console)
{
	PGresult *r = PQexec(console, "SHOW SHARDS");
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "pgmux-reshard: console SHOW SHARDS: %s", PQresultErrorMessage(r));
		PQclear(r);
		return false;
	}
	int seen = 0, maxs = -1;
	for (int k = 0; k < PQntuples(r); k++) {
		if (strcmp(PQgetvalue(r, k, 0), rs->database) != 0)
			continue;
		int s = atoi(PQgetvalue(r, k, 1));
		seen++;
		maxs = s > maxs ? s : maxs;
	}
	PQclear(r);
	if (seen != rs->n_new || maxs != rs->n_new - 1) {
		fprintf(stderr, "pgmux-reshard: after RELOAD pgmux lists %d shards for %s, not %d\n",
			seen, rs->database, rs->n_new);
		return false;
	}
	return true;
}

bool reshard_step_cutover(struct reshard *rs)
{
	char cmd[300];
	if (rs->dry_run) {
		printf("  console: PAUSE %s\n"
		       "  on each old shard: UPDATE pgmux_reshard.marker SET n = n + 1; wait (every 10 "
		       "ms, at most %ld ms) until each new shard shows the new value\n"
		       "  on each new shard: setval of every sequence to its source's value\n",
		       rs->database, rs->cutover_timeout_ms);
		if (rs->guard_rls)
			(void)reshard_rls_apply(rs);
		printf("  install %s as %s (the old one kept as %s.pre-reshard)\n"
		       "  console: RELOAD; SHOW SHARDS must list %d shards for %s\n"
		       "  console: RESUME %s (also after any failure)\n", rs->new_config, rs->config,
		       rs->config, rs->n_new, rs->database, rs->database);
		return true;
	}
	PGconn *console = PQconnectdb(rs->console);
	if (PQstatus(console) != CONNECTION_OK) {
		fprintf(stderr, "pgmux-reshard: cannot connect to pgmux's console: %s",
			PQerrorMessage(console));
		PQfinish(console);
		return false;
	}
	/* everything the pause needs is opened before it starts */
	for (int j = 0; j < rs->n_new; j++)
		if (!reshard_conn(j < rs->n_old ? &rs->old[j] : &rs->new[j])) {
			PQfinish(console);
			return false;
		}
	double t0 = reshard_now_ms();
	snprintf(cmd, sizeof(cmd), "PAUSE %s", rs->database);
	if (!reshard_console(console, cmd, true)) {
		/* a run that crashed under the pause left it on: carry on with it */
		if (!strstr(PQerrorMessage(console), "already paused")) {
			fprintf(stderr, "pgmux-reshard: console %s: %s", cmd, PQerrorMessage(console));
			PQfinish(console);
			return false;
		}
		printf("cutover: %s was paused already (an earlier run stopped under it)\n",
		       rs->database);
	}
	double paused = reshard_now_ms();
	printf("cutover: PAUSE %s returned after %.1f ms\n", rs->database, paused - t0);
	bool ok = wait_caught_up(rs) && copy_sequences(rs);
	/* last before the switch: hide from the application what the old shards hand over */
	ok = ok && (!rs->guard_rls || reshard_rls_apply(rs));
	bool installed = ok && install_config(rs);
	bool reloaded = false;
	if (installed) {
		reloaded = reshard_console(console, "RELOAD", false) && shards_listed(rs, console);
		if (!reloaded) {
			restore_config(rs);
			(void)reshard_console(console, "RELOAD", false);
		}
	}
	if (!reloaded && rs->guard_rls) {
		/* back on N shards the old ones keep every row again: the policies must go before
		 * the RESUME, or reads would miss rows; if that fails pgmux stays paused */
		bool removed = true;
		for (int i = 0; i < rs->n_old; i++)
			removed &= reshard_rls_remove(rs, i);
		if (!removed) {
			fprintf(stderr, "pgmux-reshard: cutover abandoned, but the row-level security "
				"policies could not be removed from every old shard: %s stays PAUSED "
				"(reads would miss rows); run again, or drop the policies %s by hand and "
				"RESUME\n", rs->database, "pgmux_reshard_keep/_owner");
			PQfinish(console);
			return false;
		}
	}
	snprintf(cmd, sizeof(cmd), "RESUME %s", rs->database);
	bool resumed = reshard_console(console, cmd, false);
	double t1 = reshard_now_ms();
	PQfinish(console);
	if (!resumed)
		fprintf(stderr, "pgmux-reshard: RESUME %s failed: resume it by hand on the console\n",
			rs->database);
	if (!reloaded) {
		fprintf(stderr, "pgmux-reshard: cutover abandoned; pgmux runs on the old configuration "
			"with %d shards (paused %.1f ms); run again to retry\n", rs->n_old, t1 - t0);
		return false;
	}
	printf("cutover: pgmux now routes %s over %d shards\n", rs->database, rs->n_new);
	printf("pause: %.1f ms (PAUSE sent to RESUME answered)\n", t1 - t0);
	return resumed;
}
