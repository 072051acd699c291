/* sdnotify.c: systemd's readiness protocol (sd_notify) for Type=notify units, compiled to no-ops without libsystemd. */
#include "sdnotify.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgmux_config.h"

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

/* unset_environment=0 everywhere: NOTIFY_SOCKET must survive the first call, since reloads,
 * status updates and the shutdown notice come long after READY=1. */

void sdnotify_ready(void)
{
	sd_notify(0, "READY=1");
}

void sdnotify_reloading(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	unsigned long long usec = (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000;
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", usec);
}

void sdnotify_stopping(void)
{
	static bool sent;
	if (sent)
		return;
	sent = true;
	sd_notify(0, "STOPPING=1");
}

void sdnotify_status(const char *fmt, ...)
{
	/* Built only when systemd listens: without NOTIFY_SOCKET the periodic caller pays for a
	 * getenv, not a vsnprintf. */
	static char last[256];
	static int listening = -1;
	if (listening < 0)
		listening = getenv("NOTIFY_SOCKET") != NULL;
	if (!listening)
		return;
	char msg[sizeof(last)];
	int n = snprintf(msg, sizeof(msg), "STATUS=");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	if (strcmp(msg, last) == 0)
		return;
	memcpy(last, msg, sizeof(last));
	sd_notify(0, msg);
}

#else /* !HAVE_SYSTEMD */

void sdnotify_ready(void)
{
}

void sdnotify_reloading(void)
{
}

void sdnotify_stopping(void)
{
}

void sdnotify_status(const char *fmt, ...)
{
	(void)fmt;
}

#endif
