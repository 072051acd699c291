/* log.c: levelled logging to stderr, a logfile or syslog. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

int log_verbosity;

static FILE *log_file;
static char *log_path;
static bool log_syslog;
static bool log_quiet;

static const char *const level_names[] = { "FATAL", "ERROR", "WARNING", "LOG", "DEBUG", "NOISE" };
static const int level_syslog[] = { LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG };

static int facility_code(const char *name)
{
	static const struct { const char *n; int c; } map[] = {
		{ "auth", LOG_AUTH }, { "authpriv", LOG_AUTHPRIV }, { "daemon", LOG_DAEMON },
		{ "user", LOG_USER }, { "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 },
		{ "local2", LOG_LOCAL2 }, { "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 },
		{ "local5", LOG_LOCAL5 }, { "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
	};
	for (size_t i = 0; name && i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(map[i].n, name) == 0)
			return map[i].c;
	return LOG_DAEMON;
}

int log_open(const char *logfile, bool use_syslog, const char *ident, const char *facility, bool quiet)
{
	log_close();
	log_quiet = quiet;
	if (logfile && *logfile) {
		log_file = fopen(logfile, "a");
		if (!log_file)
			return -1;
		setvbuf(log_file, NULL, _IOLBF, 0);
		log_path = strdup(logfile);
	}
	if (use_syslog) {
		openlog(ident && *ident ? ident : "pgmux", LOG_PID, facility_code(facility));
		log_syslog = true;
	}
	return 0;
}

void log_close(void)
{
	if (log_file)
		fclose(log_file);
	log_file = NULL;
	free(log_path);
	log_path = NULL;
	if (log_syslog)
		closelog();
	log_syslog = false;
}

void log_reopen(void)
{
	if (!log_path)
		return;
	FILE *f = fopen(log_path, "a");
	if (!f)
		return;
	setvbuf(f, NULL, _IOLBF, 0);
	fclose(log_file);
	log_file = f;
}

size_t log_sanitize(char *dst, size_t dstlen, const char *src)
{
	size_t n = 0;
	for (const unsigned char *s = (const unsigned char *)src; *s; s++) {
		char rep[5];
		if (*s == '\n')
			memcpy(rep, "\\n", 3);
		else if (*s == '\r')
			memcpy(rep, "\\r", 3);
		else if (*s == '\t')
			memcpy(rep, " ", 2);
		else if (*s < 0x20 || *s == 0x7f)
			snprintf(rep, sizeof(rep), "\\x%02x", *s);
		else
			rep[0] = (char)*s, rep[1] = 0;
		for (const char *r = rep; *r; r++, n++)
			if (n + 1 < dstlen)
				dst[n] = *r;
	}
	if (dstlen)
		dst[n < dstlen ? n : dstlen - 1] = '\0';
	return n;
}

static void log_vwrite(int level, const char *fmt, va_list ap)
{
	char raw[2048], msg[sizeof(raw) * 4];
	int saved = errno;
	vsnprintf(raw, sizeof(raw), fmt, ap);
	/* One event, one line: a name a client chose (a user, a database, an application_name)
	 * or a server's multi-line error must not be able to start a line of its own that reads
	 * like pgmux's (log injection). */
	log_sanitize(msg, sizeof(msg), raw);

	char stamp[64];
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	localtime_r(&tv.tv_sec, &tm);
	size_t n = strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(stamp + n, sizeof(stamp) - n, ".%03d", (int)(tv.tv_usec / 1000));

	if (!log_quiet)
		fprintf(stderr, "%s [%d] %s %s\n", stamp, (int)getpid(), level_names[level], msg);
	if (log_file)
		fprintf(log_file, "%s [%d] %s %s\n", stamp, (int)getpid(), level_names[level], msg);
	if (log_syslog)
		syslog(level_syslog[level], "%s %s", level_names[level], msg);
	errno = saved;
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(LOG_L_FATAL, fmt, ap);
	va_end(ap);
	exit(1);
}
