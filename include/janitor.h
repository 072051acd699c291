/* janitor.h: the periodic sweep that enforces timeouts, lifetimes and minimum pool sizes. */
#ifndef PGMUX_JANITOR_H
#define PGMUX_JANITOR_H

#include "model.h"

#define JANITOR_PERIOD_USEC 200000

void janitor_start(struct worker *w);
void janitor_run(struct worker *w);

#endif
