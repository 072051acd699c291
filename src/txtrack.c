/* txtrack.c: the in-flight accounting of one client link, fed message by message; pure, so its rules are tested on message sequences alone (the per-message part is inline in txtrack.h). */
#include "txtrack.h"

void txtrack_stray_copy_end(struct txtrack *t)
{
	t->copy_fixup = false;
}

/* Out of line: it runs once per COPY. */
void txtrack_copy_ended(struct txtrack *t)
{
	t->in_copy = false;
	if (t->copy_client_done)
		t->expect_z = (t->copy_simple ? 1 : 0) + (t->expect_z - t->copy_mark);
	else
		t->copy_fixup = !t->copy_simple;
	t->copy_client_done = false;
}

void txtrack_reset(struct txtrack *t)
{
	t->expect_z = 0;
	t->sync_pending = false;
	t->unnamed_pending = false;
}
