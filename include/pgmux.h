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
void pgmux_stop_listening(struct worker *w);

#endif
