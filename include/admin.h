/* admin.h: the admin console: the virtual database "pgmux" (alias "pgbouncer"), SHOW and control commands. */
#ifndef PGMUX_ADMIN_H
#define PGMUX_ADMIN_H

#include <stdbool.h>

#include "model.h"

/* True for the console's database names. */
bool admin_is_console_db(const char *name);

/* A client authenticated against the console database: checks admin_users / stats_users
 * (others get 42501 and are closed), greets it and moves it to CL_ADMIN. */
void admin_client_ready(struct client *cl);

/* Bytes arrived from a console client: runs every complete command in its buffer. */
void admin_on_data(struct client *cl);

/* True when a console session holds db (a PAUSE or WAIT_CLOSE of it in progress): it must
 * not be freed meanwhile. */
bool admin_uses_database(struct worker *w, const struct database *db);

/* Frees console state of a closing client (no-op for others). */
void admin_client_gone(struct client *cl);

/* Installs the functions above as the worker's console handlers (w->console), so that the
 * core reaches the console through struct console_ops rather than by name.  Any time before
 * the worker runs; the table is static and lives as long as the program. */
void admin_register(struct worker *w);

#endif
