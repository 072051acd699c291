/* main.c: command line, daemonizing, pidfile, then the worker's loop. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "hba.h"
#include "log.h"
#include "pgmux.h"
#include "tls.h"
#include "userlist.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: pgmux [OPTION]... CONFIG.ini\n"
		   "  -d, --daemon     run in the background (needs logfile or syslog)\n"
		   "  -v, --verbose    more verbose logging (repeat for more)\n"
		   "  -q, --quiet      no log output on stderr\n"
		   "  -u, --user=USER  switch to USER after binding the listening sockets (root only)\n"
		   "  -t, --check      check the configuration and the files it names, then exit\n"
		   "  -V, --version    print the version and exit\n"
		   "  -h, --help       print this help and exit\n");
}

/* PgBouncer's long options, so that an existing service file or script starts pgmux unchanged. */
static const struct option long_opts[] = {
	{ "daemon", no_argument, NULL, 'd' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "user", required_argument, NULL, 'u' },
	{ "check", no_argument, NULL, 't' },
	{ "version", no_argument, NULL, 'V' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Longest -u argument: system user names are far shorter; this only bounds what we copy. */
#define MAX_RUN_USER 256

/*
 * Becomes `user` for good: supplementary groups, then the group, then the user (in that order,
 * since each step needs the privilege the next one drops).  Then checks that root cannot be
 * regained, so a half-done switch never goes unnoticed.  Returns 0, or -1 with the reason logged.
 */
static int drop_privileges(const char *user)
{
	errno = 0;
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		log_error("-u: unknown user \"%s\"%s%s", user, errno ? ": " : "", errno ? strerror(errno) : "");
		return -1;
	}
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	if (initgroups(user, gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
		log_error("-u: cannot switch to user \"%s\": %s", user, strerror(errno));
		return -1;
	}
	if (uid != 0 && (setuid(0) == 0 || geteuid() == 0)) {
		log_error("-u: switched to user \"%s\" but root could be regained", user);
		return -1;
	}
	log_info("running as user %s (uid %ld)", user, (long)uid);
	return 0;
}
static int pidfile_claim(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f) {
		long pid = 0;
		if (fscanf(f, "%ld", &pid) == 1 && pid > 0 && kill((pid_t)pid, 0) == 0) {
			fclose(f);
			fprintf(stderr, "pidfile %s names a running process (%ld)\n", path, pid);
			return -1;
		}
		fclose(f);
	}
	f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "cannot write pidfile %s: %s\n", path, strerror(errno));
		return -1;
	}
	fprintf(f, "%d\n", (int)getpid());
	fclose(f);
	return 0;
}

static void daemonize(void)
{
	pid_t pid = fork();
	if (pid < 0)
		fatal("fork failed: %s", strerror(errno));
	if (pid > 0)
		_exit(0);
	setsid();
	pid = fork();
	if (pid < 0)
		fatal("fork failed: %s", strerror(errno));
	if (pid > 0)
		_exit(0);
	int fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

static void raise_nofile(int64_t want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (int64_t)rl.rlim_cur < want)
		log_warn("file descriptor limit %llu is below what max_client_conn and the pools may need (%lld)",
			 (unsigned long long)rl.rlim_cur, (long long)want);
}

/* A file a check finds unusable: one "CONFIG: key: reason" line on stderr; returns 1. */
static int check_file(const char *path, const char *key, const char *file, int mode)
{
	if (!file || !*file || access(file, mode) == 0)
		return 0;
	fprintf(stderr, "%s: %s: cannot %s %s: %s\n", path, key, mode == W_OK ? "write" : "read",
		file, strerror(errno));
	return 1;
}

/* Where a file pgmux will create must be writable: the file itself when it exists, else its
 * directory. */
static int check_writable(const char *path, const char *key, const char *file)
{
	if (!file || !*file || access(file, F_OK) == 0)
		return check_file(path, key, file, W_OK);
	char dir[4096];
	const char *slash = strrchr(file, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash == file ? 1 : slash - file), file);
	return check_file(path, key, dir, W_OK);
}

/*
 * --check: what a start would refuse, found without starting (nothing is bound, logged to a
 * file or written): the file's syntax and values (config_load, which also parses every
 * connection string through libpq), the auth_file, the client TLS key, certificate and CA (built
 * into a context as RELOAD would), the server_tls_* files and each database's TLS files, and
 * where the logfile and pidfile go.  Prints every problem as "file:line: reason" or
 * "file: key: reason" on stderr and returns the exit code: 0 when pgmux would start with this
 * file, 1 when not.
 */
static int check_config(const char *path)
{
	struct config *cf;
	char err[512];
	if (config_load(path, &cf, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	int bad = 0;
	struct userlist *ul = NULL;
	if (*cf->auth_file && userlist_load(cf->auth_file, &ul, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: auth_file: %s\n", path, err);
		bad++;
	}
	userlist_free(ul);
	struct tls_server *ts = NULL;
	if (tls_server_new(cf, &ts, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		bad++;
	}
	tls_server_free(ts);
	/* the hba rules and ident maps are parsed as a start would parse them */
	if (cf->auth_type == AUTH_HBA || *cf->auth_hba_file) {
		struct hba *hba = NULL;
		if (!*cf->auth_hba_file) {
			fprintf(stderr, "%s: auth_type = hba needs auth_hba_file\n", path);
			bad++;
		} else if (hba_load(cf->auth_hba_file, &hba, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s: auth_hba_file: %s\n", path, err);
			bad++;
		}
		hba_free(hba);
	}
	if (*cf->auth_ident_file) {
		struct ident *ident = NULL;
		if (ident_load(cf->auth_ident_file, &ident, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s: auth_ident_file: %s\n", path, err);
			bad++;
		}
		ident_free(ident);
	}
	bad += check_file(path, "server_tls_ca_file", cf->server_tls_ca_file, R_OK);
	bad += check_file(path, "server_tls_cert_file", cf->server_tls_cert_file, R_OK);
	bad += check_file(path, "server_tls_key_file", cf->server_tls_key_file, R_OK);
	for (const struct cfg_db *db = cf->dbs; db; db = db->next) {
		char key[300];
		snprintf(key, sizeof(key), "database %s", db->name);
		bad += check_file(path, key, db->sslrootcert, R_OK);
		bad += check_file(path, key, db->sslcert, R_OK);
		bad += check_file(path, key, db->sslkey, R_OK);
	}
	bad += check_writable(path, "logfile", cf->logfile);
	bad += check_writable(path, "pidfile", cf->pidfile);
	config_free(cf);
	if (bad)
		return 1;
	printf("%s: configuration is valid\n", path);
	return 0;
}

int main(int argc, char **argv)
{
	bool check_only = false;
	bool daemon_mode = false, quiet = false;
	const char *run_user = NULL;
	int opt;
	while ((opt = getopt_long(argc, argv, "dvqu:tVh", long_opts, NULL)) != -1) {
		switch (opt) {
		case 'd': daemon_mode = true; break;
		case 'v': log_verbosity++; break;
		case 'q': quiet = true; break;
		case 'u': run_user = optarg; break;
		case 't': check_only = true; break;
		case 'V': printf("%s\n", PGMUX_VERSION_STR); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	if (check_only)
		return check_config(argv[optind]);
	/* Only root can change its user; say so before anything else happens, rather than fail
	 * after the sockets are bound. */
	if (run_user && (!*run_user || strlen(run_user) > MAX_RUN_USER)) {
		fprintf(stderr, "pgmux: -u needs a user name (at most %d bytes)\n", MAX_RUN_USER);
		return 2;
	}
	if (run_user && geteuid() != 0) {
		fprintf(stderr, "pgmux: -u/--user needs root: pgmux runs as uid %ld and cannot switch users\n",
			(long)geteuid());
		return 1;
	}
	const char *path = argv[optind];
	struct config *cf;
	char err[512];
	if (config_load(path, &cf, err, sizeof(err)) < 0) {
		fprintf(stderr, "pgmux: %s\n", err);
		return 1;
	}
	if (cf->verbose > log_verbosity)
		log_verbosity = (int)cf->verbose;
	if (daemon_mode && !(cf->logfile && *cf->logfile) && !cf->syslog) {
		fprintf(stderr, "pgmux: -d needs logfile or syslog in the configuration\n");
		config_free(cf);
		return 1;
	}
	if (log_open(cf->logfile, cf->syslog, cf->syslog_ident, cf->syslog_facility, quiet || daemon_mode) < 0) {
		fprintf(stderr, "pgmux: cannot open logfile %s: %s\n", cf->logfile, strerror(errno));
		config_free(cf);
		return 1;
	}
	struct userlist *ul = NULL;
	if (cf->auth_file && *cf->auth_file && userlist_load(cf->auth_file, &ul, err, sizeof(err)) < 0) {
		fprintf(stderr, "pgmux: %s\n", err);
		log_error("%s", err);
		config_free(cf);   /* not a leak that matters, but the sanitizers count it */
		return 1;
	}
	if (daemon_mode)
		daemonize();
	if (cf->pidfile && *cf->pidfile && pidfile_claim(cf->pidfile) < 0) {
		userlist_free(ul);
		config_free(cf);
		return 1;
	}
	char *pidfile = cf->pidfile && *cf->pidfile ? strdup(cf->pidfile) : NULL;
	raise_nofile(cf->max_client_conn + 2 * cf->default_pool_size + 64);

	static struct worker w;
	if (pgmux_worker_init(&w, cf, path, ul) < 0) {
		log_error("startup failed");
		if (pidfile)
			unlink(pidfile);
		free(pidfile);
		return 1;
	}
	/* After binding, so a privileged port or socket directory still works, and before the
	 * loop runs, so no client is ever served as root. */
	if (run_user && drop_privileges(run_user) < 0) {
		if (pidfile)
			unlink(pidfile);
		free(pidfile);
		return 1;
	}
	int rc = pgmux_run(&w);
	if (pidfile)
		unlink(pidfile);
	free(pidfile);
	log_close();
	return rc;
}
