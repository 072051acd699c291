/* pgmux.h: the daemon's own API (worker set-up, the loop, reload, listeners), for main.c and the console. */
#ifndef PGMUX_PGMUX_H
#define PGMUX_PGMUX_H

#include "model.h"
#include "worker.h"

/* Sets up the worker from a loaded config (listeners, signals, janitor); 0 or -1.  A bad
 * auth_hba_file or auth_ident_file fails it before the worker takes cf and ul: they are freed. */
int pgmux_worker_init(struct worker *w, struct config *cf, const char *cf_path, struct userlist *ul);
int pgmux_run(struct worker *w);
/* Re-reads the config file and applies it; keeps the old one on error (logged). 0 or -1. */
int pgmux_reload(struct worker *w);
/* Closes every listener and removes the Unix socket file (the daemon's last act). */
void pgmux_stop_listening(struct worker *w);
/* Starts a shutdown (PGMUX_SHUTDOWN_*): the graceful ones close the TCP listeners (the Unix
 * socket stays for the console; pool logins are refused) and end the loop once servers are
 * released / clients are gone; WAIT_FOR_SERVERS also closes clients waiting for a server.
 * Asking for another mode while one runs, or NOW, ends the loop at once. */
void pgmux_shutdown(struct worker *w, int mode);
/* SUSPEND / RESUME: stops (true) or restarts (false) accepting on every listener; connections
 * that arrive meanwhile wait in the kernel's backlog. */
void pgmux_hold_accepts(struct worker *w, bool hold);

#endif
