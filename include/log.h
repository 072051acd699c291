/* log.h: levelled logging to stderr, a logfile or syslog, with per-connection prefixes. */
#ifndef PGMUX_LOG_H
#define PGMUX_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_L_FATAL = 0, LOG_L_ERROR, LOG_L_WARN, LOG_L_INFO, LOG_L_DEBUG, LOG_L_NOISE };

extern int log_verbosity;   /* 0: info; 1: debug; 2+: noise (-v, verbose=) */

/* Opens `logfile` (may be NULL/empty) and/or syslog; stderr stays on unless `quiet`. */
int log_open(const char *logfile, bool use_syslog, const char *ident, const char *facility, bool quiet);
void log_close(void);
/* Reopens the logfile (after a reload or rotation). */
void log_reopen(void);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_enabled(lvl) ((lvl) <= LOG_L_INFO || (lvl) - LOG_L_INFO <= log_verbosity)
#define log_error(...) log_msg(LOG_L_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_L_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_L_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_L_DEBUG)) log_msg(LOG_L_DEBUG, __VA_ARGS__); } while (0)
#define log_noise(...) do { if (log_enabled(LOG_L_NOISE)) log_msg(LOG_L_NOISE, __VA_ARGS__); } while (0)

/* Pure: src as one log line into dst (dstlen bytes, NUL-terminated when dstlen > 0): newline
 * and carriage return written as \n and \r, a tab as a space, other control bytes as \xHH.
 * Returns the length of the whole result, as snprintf does.  Every log line goes through it. */
size_t log_sanitize(char *dst, size_t dstlen, const char *src);

/* Startup failures and broken invariants only. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
