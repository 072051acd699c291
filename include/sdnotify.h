/* sdnotify.h: tells systemd (Type=notify) where pgmux stands: ready, reloading, stopping, and a status line. */
#ifndef PGMUX_SDNOTIFY_H
#define PGMUX_SDNOTIFY_H

/*
 * Every call is a no-op when pgmux was built without libsystemd (configure --without-systemd)
 * or when NOTIFY_SOCKET is not set (not started by systemd as Type=notify), and none of them
 * can fail in a way the caller has to handle: a lost notification is systemd's to time out on.
 */

/* READY=1: the listeners are up and accepting; also ends a reload started by
 * sdnotify_reloading().  Call after every successful start and after every reload. */
void sdnotify_ready(void);

/* RELOADING=1 with MONOTONIC_USEC= (systemd 253+ matches the reload with it; older versions
 * ignore the field): a reload has begun; sdnotify_ready() must follow, whether it worked or
 * not, or systemd keeps the unit "reloading" until its timeout. */
void sdnotify_reloading(void);

/* STOPPING=1: shutdown has begun (listeners closed, draining).  Sent once per process; later
 * calls do nothing, so every shutdown path may call it. */
void sdnotify_stopping(void);

/* STATUS=<printf text>: the one-line status `systemctl status` shows.  Sent only when the text
 * differs from the last one sent, so a periodic caller costs one datagram per change. */
void sdnotify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
