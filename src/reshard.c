/* reshard.c: pgmux-reshard's command line, plan, state file and step driver (see pgmux-reshard(1)). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "pgmux_config.h"
#include "reshard.h"

static const char *const STEP_NAMES[RS_NSTEPS] = {
	"plan", "schema", "publication", "slot", "subscription", "sync", "cutover", "unsubscribe",
	"cleanup",
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: pgmux-reshard --database NAME --config LIVE.ini --new-config NEW.ini\n"
		"                     --console CONNINFO [OPTION]... [STEP]...\n"
		"  moves a sharded database from N to M shards (M a multiple of N) under live traffic\n"
		"  --database NAME         the [database NAME] section to reshard\n"
		"  --config FILE           the configuration pgmux runs with (replaced at the cutover)\n"
		"  --new-config FILE       the same with M shards; shards below N must be unchanged\n"
		"  --console CONNINFO      libpq conninfo of pgmux's console (dbname=pgbouncer ...)\n"
		"  --state FILE            progress file (default NEW.ini.reshard-state)\n"
		"  --dry-run               print the plan and the SQL; change nothing\n"
		"  --batch-rows N          cleanup deletes N rows per statement (default 1000)\n"
		"  --batch-sleep-ms N      and sleeps N ms between statements (default 100)\n"
		"  --cutover-timeout-ms N  longest wait for the catch-up under PAUSE (default 5000)\n"
		"  --max-lag BYTES         lag under which sync ends and the cutover may start (default 1048576)\n"
		"  --user USER             connect to the shards as USER (password: PGPASSWORD or .pgpass)\n"
		"  --pg-bindir DIR         where pg_dump and psql are (default: PATH)\n"
		"  --replica-identity-full set REPLICA IDENTITY FULL on tables whose identity lacks the key\n"
		"  --allow-rls-bypass      go on when pgmux's server users bypass row-level security\n"
		"  steps, in order: plan schema publication slot subscription sync cutover unsubscribe\n"
		"  cleanup (default: every one not yet done)\n");
}

static void on_signal(int sig)
{
	(void)sig;
	reshard_interrupted = 1;
}

/* ---- the state file --------------------------------------------------------------------------- */

/* Takes the state file's lock, so that two runs never overlap; false after printing why. */
static bool state_lock(struct reshard *rs)
{
	char path[4096];
	if ((size_t)snprintf(path, sizeof(path), "%s.lock", rs->state_path) >= sizeof(path))
		return false;
	rs->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (rs->lock_fd < 0) {
		fprintf(stderr, "pgmux-reshard: %s: %s\n", path, strerror(errno));
		return false;
	}
	if (flock(rs->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		fprintf(stderr, "pgmux-reshard: another pgmux-reshard holds %s: refusing to run "
			"beside it\n", path);
		return false;
	}
	return true;
}

/* Reads the finished steps and which reshard they belong to (rs->state_db, _from, _to). */
static bool state_load(struct reshard *rs, char *db, size_t dblen, int *from, int *to)
{
	*from = *to = -1;
	db[0] = 0;
	FILE *f = fopen(rs->state_path, "r");
	if (!f) {
		if (errno == ENOENT)
			return true;
		fprintf(stderr, "pgmux-reshard: %s: %s\n", rs->state_path, strerror(errno));
		return false;
	}
	char line[512];
	bool ok = true;
	while (ok && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		if (!line[0] || line[0] == '#')
			continue;
		if (!strncmp(line, "database=", 9)) {
			snprintf(db, dblen, "%s", line + 9);
		} else if (!strncmp(line, "from=", 5)) {
			*from = atoi(line + 5);
		} else if (!strncmp(line, "to=", 3)) {
			*to = atoi(line + 3);
		} else if (!strncmp(line, "done=", 5)) {
			int s;
			for (s = 0; s < RS_NSTEPS && strcmp(STEP_NAMES[s], line + 5); s++)
				;
			if (s < RS_NSTEPS)
				rs->done |= 1u << s;
			else
				ok = false;
		} else {
			ok = false;
		}
	}
	fclose(f);
	if (!ok)
		fprintf(stderr, "pgmux-reshard: %s: not a pgmux-reshard state file\n", rs->state_path);
	return ok;
}

/* Records the finished steps: write, fsync, rename, so that a crash leaves the old or the
 * new file, never half of one. */
static bool state_save(const struct reshard *rs)
{
	char tmp[4096];
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", rs->state_path) >= sizeof(tmp))
		return false;
	FILE *f = fopen(tmp, "w");
	if (!f) {
		fprintf(stderr, "pgmux-reshard: %s: %s\n", tmp, strerror(errno));
		return false;
	}
	fprintf(f, "# pgmux-reshard state: the steps done; do not edit\ndatabase=%s\nfrom=%d\nto=%d\n",
		rs->database, rs->n_old, rs->n_new);
	for (int s = 0; s < RS_NSTEPS; s++)
		if (rs->done & (1u << s))
			fprintf(f, "done=%s\n", STEP_NAMES[s]);
	bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
	ok &= fclose(f) == 0;
	if (!ok || rename(tmp, rs->state_path) < 0) {
		fprintf(stderr, "pgmux-reshard: writing %s: %s\n", rs->state_path, strerror(errno));
		return false;
	}
	return true;
}

/* ---- the plan ----------------------------------------------------------------------------- */

/* Frees what the plan holds (the connections go with reshard_disconnect). */
static void plan_free(struct reshard *rs)
{
	for (int i = 0; rs->old && i < rs->n_old; i++) {
		free(rs->old[i].conninfo);
		free(rs->old[i].label);
	}
	for (int j = rs->new_aliased ? rs->n_old : 0; rs->new && j < rs->n_new; j++) {
		free(rs->new[j].conninfo);
		free(rs->new[j].label);
	}
	free(rs->old);
	free(rs->new);
	for (int t = 0; t < rs->n_tables; t++)
		free(rs->tables[t]);
	free(rs->tables);
	free(rs->key);
	for (int u = 0; u < rs->n_db_users; u++)
		free(rs->db_users[u]);
	free(rs->db_users);
	rs->db_users = NULL;
	rs->n_db_users = 0;
	rs->old = rs->new = NULL;
	rs->tables = NULL;
	rs->key = NULL;
}

/* conninfo of a backend entry, with --user and the section's name as the default dbname. */
static char *shard_conninfo(const struct reshard *rs, const struct cfg_db *d)
{
	size_t n = strlen(d->conninfo) + 2 * strlen(rs->database) +
		   (rs->user ? 2 * strlen(rs->user) : 0) + 40;
	char *out = malloc(n), *p;
	if (!out)
		return NULL;
	p = out + snprintf(out, n, "%s", d->conninfo);
	/* libpq takes the last of a repeated keyword; values are quoted by its rules */
	const char *extra[2][2] = { { "dbname", d->dbname ? NULL : rs->database },
				    { "user", rs->user } };
	for (int k = 0; k < 2; k++) {
		const char *v = extra[k][1];
		if (!v)
			continue;
		p += sprintf(p, " %s='", extra[k][0]);
		for (; *v; v++) {
			if (*v == '\'' || *v == '\\')
				*p++ = '\\';
			*p++ = *v;
		}
		*p++ = '\'';
		*p = 0;
	}
	return out;
}

/* The primaries of cluster `name` in cf, shard by shard, into a new array of n. */
static struct reshard_shard *read_shards(const struct reshard *rs, const struct config *cf,
					 int n, const char *file)
{
	struct reshard_shard *out = calloc((size_t)n, sizeof(*out));
	if (!out)
		return NULL;
	for (const struct cfg_db *d = cf->dbs; d; d = d->next) {
		if (!d->cluster || strcmp(d->cluster, rs->database) || d->shard < 0 || d->replica >= 0 ||
		    d->shard >= n)
			continue;
		struct reshard_shard *s = &out[d->shard];
		s->index = d->shard;
		s->source = d->shard % rs->n_old;
		free(s->conninfo);   /* a repeated line: the last one counts, as in pgmux */
		free(s->label);
		s->label = NULL;
		if (!(s->conninfo = shard_conninfo(rs, d)) || !(s->label = reshard_label(s->conninfo)))
			goto fail;
	}
	for (int i = 0; i < n; i++)
		if (!out[i].conninfo) {
			fprintf(stderr, "pgmux-reshard: %s: [database %s] has no shard.%d.primary\n",
				file, rs->database, i);
			goto fail;
		}
	return out;
fail:
	for (int i = 0; i < n; i++) {
		free(out[i].conninfo);
		free(out[i].label);
	}
	free(out);
	return NULL;
}

static bool same_text(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

/* The server users pgmux logs in as for the section's backends in either file, into
 * rs->db_users; a line without user= (the client's own name goes through) sets
 * rs->db_users_unknown. */
static bool collect_users(struct reshard *rs, const struct config *a, const struct config *b)
{
	const struct config *cfs[2] = { a, b };
	for (int f = 0; f < 2; f++)
		for (const struct cfg_db *d = cfs[f]->dbs; d; d = d->next) {
			if (!d->cluster || strcmp(d->cluster, rs->database) || d->shard < 0)
				continue;
			if (!d->user) {
				rs->db_users_unknown = true;
				continue;
			}
			bool seen = false;
			for (int u = 0; u < rs->n_db_users && !seen; u++)
				seen = !strcmp(rs->db_users[u], d->user);
			if (seen)
				continue;
			/* bounded: one per backend line, and those are capped by the shard count */
			char **grown = realloc(rs->db_users, (size_t)(rs->n_db_users + 1) * sizeof(*grown));
			if (!grown)
				return false;
			rs->db_users = grown;
			if (!(rs->db_users[rs->n_db_users] = strdup(d->user)))
				return false;
			rs->n_db_users++;
		}
	return true;
}

/* Reads both configurations and checks that NEW doubles (or multiplies) LIVE. */
static bool plan_configs(struct reshard *rs)
{
	struct config *a = NULL, *b = NULL;
	char err[1024], old_path[4096];
	bool ok = false;
	/* after the cutover's switch the live file is the new one: the old shards are then read
	 * from the copy the cutover kept */
	snprintf(old_path, sizeof(old_path), "%s", rs->config);
	if (reshard_same_file_text(rs->config, rs->new_config)) {
		snprintf(old_path, sizeof(old_path), "%s.pre-reshard", rs->config);
		if (access(old_path, R_OK) != 0) {
			fprintf(stderr, "pgmux-reshard: %s and %s are the same, and %s is missing: "
				"nothing to reshard\n", rs->config, rs->new_config, old_path);
			return false;
		}
		printf("note: %s is already the new configuration: the old shards are read from %s\n",
		       rs->config, old_path);
	}
	if (config_load(old_path, &a, err, sizeof(err)) < 0) {
		fprintf(stderr, "pgmux-reshard: %s\n", err);
		return false;
	}
	if (config_load(rs->new_config, &b, err, sizeof(err)) < 0) {
		fprintf(stderr, "pgmux-reshard: %s\n", err);
		goto out;
	}
	const struct cfg_cluster *ca = config_find_cluster(a, rs->database);
	const struct cfg_cluster *cb = config_find_cluster(b, rs->database);
	if (!ca || !cb || !ca->shard_key || !cb->shard_key) {
		fprintf(stderr, "pgmux-reshard: [database %s] must be a sharded section (shard_key) in "
			"both %s and %s\n", rs->database, rs->config, rs->new_config);
		goto out;
	}
	if (strcmp(ca->shard_key, cb->shard_key) || ca->shard_key_type != cb->shard_key_type) {
		fprintf(stderr, "pgmux-reshard: shard_key and shard_key_type must not change in a "
			"reshard (%s: %s, %s: %s)\n", rs->config, ca->shard_key, rs->new_config,
			cb->shard_key);
		goto out;
	}
	rs->n_old = ca->n_shards;
	rs->n_new = cb->n_shards;
	if (rs->n_new <= rs->n_old || rs->n_new % rs->n_old || rs->n_new > RESHARD_MAX_SHARDS) {
		fprintf(stderr, "pgmux-reshard: %d -> %d shards: the new count must be a multiple of "
			"the old one, larger, and at most %d (hash modulo N splits each shard only so)\n",
			rs->n_old, rs->n_new, RESHARD_MAX_SHARDS);
		goto out;
	}
	/* a read fanned out over every shard would see the moved rows twice between the cutover
	 * and the cleanup: row-level security hides them on the old shards (reshard_rls.c) */
	rs->guard_rls = ca->no_shard_key == NOSHARD_ALL || cb->no_shard_key == NOSHARD_ALL;
	if (rs->guard_rls && !collect_users(rs, a, b))
		goto out;
	const char *dot = strrchr(ca->shard_key, '.');
	rs->key = strdup(dot ? dot + 1 : ca->shard_key);
	rs->key_type = ca->shard_key_type;
	rs->key_sqltype = rs->key_type == SHARDKEY_TEXT ? "text" :
			  rs->key_type == SHARDKEY_UUID ? "uuid" : "bigint";
	if (!rs->key || !(rs->old = read_shards(rs, a, rs->n_old, rs->config)) ||
	    !(rs->new = read_shards(rs, b, rs->n_new, rs->new_config)))
		goto out;
	/* shard i < N keeps its rows and its place: it must be the very same database */
	for (int i = 0; i < rs->n_old; i++) {
		const struct cfg_db *x = NULL, *y = NULL;
		for (const struct cfg_db *d = a->dbs; d; d = d->next)
			if (d->cluster && !strcmp(d->cluster, rs->database) && d->shard == i && d->replica < 0)
				x = d;
		for (const struct cfg_db *d = b->dbs; d; d = d->next)
			if (d->cluster && !strcmp(d->cluster, rs->database) && d->shard == i && d->replica < 0)
				y = d;
		if (!x || !y || !same_text(x->host, y->host) || x->port != y->port ||
		    !same_text(x->dbname, y->dbname)) {
			fprintf(stderr, "pgmux-reshard: shard.%d.primary differs between %s (%s) and %s "
				"(%s): the first %d shards must stay where they are\n", i, rs->config,
				rs->old[i].label, rs->new_config, rs->new[i].label, rs->n_old);
			goto out;
		}
	}
	/* new shards below N are the old ones: one connection each */
	for (int i = 0; i < rs->n_old; i++) {
		free(rs->new[i].conninfo);
		free(rs->new[i].label);
		rs->new[i] = rs->old[i];
	}
	rs->new_aliased = true;
	for (int j = rs->n_old; j < rs->n_new; j++)
		for (int k = 0; k < j; k++)
			if (!strcmp(rs->new[j].label, rs->new[k].label)) {
				fprintf(stderr, "pgmux-reshard: new shards %d and %d are the same database "
					"(%s)\n", k, j, rs->new[j].label);
				goto out;
			}
	ok = true;
out:
	config_free(a);
	config_free(b);
	return ok;
}

/* Reads what the plan needs from the servers and prints it. */
static bool plan_print(struct reshard *rs)
{
	for (int i = 0; i < rs->n_old; i++) {
		char *wl = reshard_value(&rs->old[i], "SELECT current_setting('wal_level')", 0, NULL);
		if (!wl)
			return false;
		bool logical = !strcmp(wl, "logical");
		free(wl);
		if (!logical) {
			fprintf(stderr, "pgmux-reshard: old shard %d (%s) has wal_level below logical: "
				"set wal_level = logical and restart it first\n", i, rs->old[i].label);
			return false;
		}
	}
	for (int j = rs->n_old; j < rs->n_new; j++)
		if (!reshard_conn(&rs->new[j]))
			return false;
	if (!reshard_read_tables(rs))
		return false;
	if (!reshard_check_identity(rs, false))
		return false;
	/* once the cutover is done the policies are in place: nothing left to decide */
	if (rs->guard_rls && !(rs->done & (1u << RS_CUTOVER)) && !reshard_rls_check(rs))
		return false;
	printf("plan: [database %s] from %d to %d shards by %s (%s)\n", rs->database, rs->n_old,
	       rs->n_new, rs->key, rs->key_sqltype);
	if (rs->guard_rls)
		printf("plan: no_shard_key = all: from the cutover to the cleanup a row-level security "
		       "policy on each old shard hides the rows that moved\n");
	printf("plan: tables moved:");
	for (int t = 0; t < rs->n_tables; t++)
		printf(" %s", rs->tables[t]);
	printf("\n");
	for (int j = rs->n_old; j < rs->n_new; j++) {
		char *f = reshard_filter(rs, j);
		char name[64];
		reshard_name(rs, j, name, sizeof(name));
		printf("plan: new shard %d (%s) <- old shard %d (%s): rows where %s; publication, slot "
		       "and subscription %s\n", j, rs->new[j].label, rs->new[j].source,
		       rs->old[rs->new[j].source].label, f ? f : "?", name);
		free(f);
	}
	return true;
}

/* ---- the driver ----------------------------------------------------------------------------- */

static bool run_step(struct reshard *rs, int s)
{
	switch (s) {
	case RS_PLAN:
		return true;   /* plan_print ran before any step */
	case RS_SCHEMA:
		return reshard_step_schema(rs);
	case RS_PUBLICATION:
		return reshard_step_publication(rs);
	case RS_SLOT:
		return reshard_step_slot(rs);
	case RS_SUBSCRIPTION:
		return reshard_step_subscription(rs);
	case RS_SYNC:
		return reshard_step_sync(rs);
	case RS_CUTOVER:
		return reshard_step_cutover(rs);
	case RS_UNSUBSCRIBE:
		return reshard_step_unsubscribe(rs);
	case RS_CLEANUP:
		return reshard_step_cleanup(rs);
	default:
		return false;
	}
}

static bool number_arg(const char *text, long lo, long hi, long *out, const char *opt)
{
	char *end;
	errno = 0;
	long v = strtol(text, &end, 10);
	if (errno || end == text || *end || v < lo || v > hi) {
		fprintf(stderr, "pgmux-reshard: %s wants a number from %ld to %ld\n", opt, lo, hi);
		return false;
	}
	*out = v;
	return true;
}

int main(int argc, char **argv)
{
	struct reshard rs = { .batch_rows = 1000, .batch_sleep_ms = 100, .cutover_timeout_ms = 5000,
			      .max_lag_bytes = 1 << 20, .lock_fd = -1 };
	static const struct option opts[] = {
		{ "database", required_argument, NULL, 'd' }, { "config", required_argument, NULL, 'c' },
		{ "new-config", required_argument, NULL, 'n' }, { "console", required_argument, NULL, 'C' },
		{ "state", required_argument, NULL, 's' }, { "dry-run", no_argument, NULL, 'D' },
		{ "batch-rows", required_argument, NULL, 'b' },
		{ "batch-sleep-ms", required_argument, NULL, 'B' },
		{ "cutover-timeout-ms", required_argument, NULL, 'T' },
		{ "max-lag", required_argument, NULL, 'L' }, { "user", required_argument, NULL, 'U' },
		{ "pg-bindir", required_argument, NULL, 'P' },
		{ "replica-identity-full", no_argument, NULL, 'F' },
		{ "allow-rls-bypass", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' }, { "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int o;
	long v;
	while ((o = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		switch (o) {
		case 'd': rs.database = optarg; break;
		case 'c': rs.config = optarg; break;
		case 'n': rs.new_config = optarg; break;
		case 'C': rs.console = optarg; break;
		case 's': rs.state_path = optarg; break;
		case 'D': rs.dry_run = true; break;
		case 'U': rs.user = optarg; break;
		case 'P': rs.pg_bindir = optarg; break;
		case 'F': rs.identity_full = true; break;
		case 'R': rs.allow_rls_bypass = true; break;
		case 'b':
			if (!number_arg(optarg, 1, 1000000, &rs.batch_rows, "--batch-rows"))
				return 2;
			break;
		case 'B':
			if (!number_arg(optarg, 0, 600000, &rs.batch_sleep_ms, "--batch-sleep-ms"))
				return 2;
			break;
		case 'T':
			if (!number_arg(optarg, 10, 3600000, &rs.cutover_timeout_ms, "--cutover-timeout-ms"))
				return 2;
			break;
		case 'L':
			if (!number_arg(optarg, 0, 1L << 40, &v, "--max-lag"))
				return 2;
			rs.max_lag_bytes = v;
			break;
		case 'V': printf("pgmux-reshard %s\n", PACKAGE_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!rs.database || !rs.config || !rs.new_config) {
		usage(stderr);
		return 2;
	}
	unsigned want = 0;
	for (int i = optind; i < argc; i++) {
		int s;
		for (s = 0; s < RS_NSTEPS && strcmp(STEP_NAMES[s], argv[i]); s++)
			;
		if (s == RS_NSTEPS) {
			fprintf(stderr, "pgmux-reshard: no step named \"%s\"\n", argv[i]);
			return 2;
		}
		want |= 1u << s;
	}
	if (!want)
		want = (1u << RS_NSTEPS) - 1;
	if (!rs.console && !rs.dry_run && (want & (1u << RS_CUTOVER))) {
		fprintf(stderr, "pgmux-reshard: the cutover needs --console\n");
		return 2;
	}
	char state_buf[4096];
	if (!rs.state_path) {
		snprintf(state_buf, sizeof(state_buf), "%s.reshard-state", rs.new_config);
		rs.state_path = state_buf;
	}
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);

	char sdb[512];
	int sfrom = -1, sto = -1, rc = 1;
	if (!rs.dry_run) {
		if (!state_lock(&rs) || !state_load(&rs, sdb, sizeof(sdb), &sfrom, &sto))
			goto out;
		/* before the configs: once finished, the live one is the new one */
		if (rs.done & (1u << RS_CLEANUP)) {
			fprintf(stderr, "pgmux-reshard: the reshard of %s from %d to %d shards finished "
				"(%s): refusing to run it again\n", sdb, sfrom, sto, rs.state_path);
			goto out;
		}
	}
	if (!plan_configs(&rs))
		goto out;
	if (!rs.dry_run && sfrom >= 0 &&
	    (strcmp(sdb, rs.database) || sfrom != rs.n_old || sto != rs.n_new)) {
		fprintf(stderr, "pgmux-reshard: %s records the reshard of %s from %d to %d shards, not "
			"of %s from %d to %d: refusing (use another --state)\n", rs.state_path, sdb,
			sfrom, sto, rs.database, rs.n_old, rs.n_new);
		goto out;
	}
	rc = 0;
	if (!plan_print(&rs)) {
		rc = 1;
		goto out;
	}
	for (int s = 0; s < RS_NSTEPS; s++) {
		if (!(want & (1u << s)))
			continue;
		if (!rs.dry_run && (rs.done & (1u << s))) {
			printf("step %s: done in an earlier run\n", STEP_NAMES[s]);
			continue;
		}
		unsigned before = (1u << s) - 1;
		if (!rs.dry_run && (rs.done & before) != before) {
			int m;
			for (m = 0; rs.done & (1u << m); m++)
				;
			fprintf(stderr, "pgmux-reshard: step %s needs step %s done first\n",
				STEP_NAMES[s], STEP_NAMES[m]);
			rc = 1;
			break;
		}
		printf("step %s%s\n", STEP_NAMES[s], rs.dry_run ? " (dry run: nothing changes)" : "");
		if (reshard_interrupted || !run_step(&rs, s)) {
			fprintf(stderr, "pgmux-reshard: step %s failed%s; run again to resume from it\n",
				STEP_NAMES[s], reshard_interrupted ? " (interrupted)" : "");
			rc = 1;
			break;
		}
		if (!rs.dry_run) {
			rs.done |= 1u << s;
			if (!state_save(&rs)) {
				rc = 1;
				break;
			}
		}
	}
	if (!rc && !rs.dry_run && (rs.done & (1u << RS_CLEANUP)))
		printf("done: [database %s] runs on %d shards; the old shards hold only their own "
		       "rows\n", rs.database, rs.n_new);
out:
	reshard_disconnect(&rs);
	plan_free(&rs);
	if (rs.lock_fd >= 0)
		close(rs.lock_fd);
	return rc;
}
