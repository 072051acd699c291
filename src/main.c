/* main.c: command line, daemonizing, pidfile, then the worker's loop. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "pgmux.h"
#include "userlist.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: pgmux [-d] [-v] [-q] [-V] [-h] CONFIG.ini\n"
		   "  -d  run in the background (needs logfile or syslog)\n"
		   "  -v  more verbose logging (repeat for more)\n"
		   "  -q  no log output on stderr\n"
		   "  -V  print the version and exit\n");
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

int main(int argc, char **argv)
{
	bool daemon_mode = false, quiet = false;
	int opt;
	while ((opt = getopt(argc, argv, "dvqVh")) != -1) {
		switch (opt) {
		case 'd': daemon_mode = true; break;
		case 'v': log_verbosity++; break;
		case 'q': quiet = true; break;
		case 'V': printf("%s\n", PGMUX_VERSION_STR); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
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
		return 1;
	}
	if (log_open(cf->logfile, cf->syslog, cf->syslog_ident, cf->syslog_facility, quiet || daemon_mode) < 0) {
		fprintf(stderr, "pgmux: cannot open logfile %s: %s\n", cf->logfile, strerror(errno));
		return 1;
	}
	struct userlist *ul = NULL;
	if (cf->auth_file && *cf->auth_file && userlist_load(cf->auth_file, &ul, err, sizeof(err)) < 0) {
		fprintf(stderr, "pgmux: %s\n", err);
		log_error("%s", err);
		return 1;
	}
	if (daemon_mode)
		daemonize();
	if (cf->pidfile && *cf->pidfile && pidfile_claim(cf->pidfile) < 0)
		return 1;
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
	int rc = pgmux_run(&w);
	if (pidfile)
		unlink(pidfile);
	free(pidfile);
	log_close();
	return rc;
}
