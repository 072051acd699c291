/* stream_peek.c: prepared.c compiled with one read-only accessor, so the stream harnesses can check that the shared statement cache empties. */

/* prepared.c keeps its statement table private.  Including it here (in place of linking it)
 * lets the harness read the table's size without a test hook in pgmux's own code; the stream
 * harnesses link this file instead of src/prepared.c. */
#include "../../src/prepared.c"

#include "stream_peer.h"

size_t peer_ps_cached(const struct worker *w, size_t *bytes)
{
	*bytes = w->ps ? w->ps->bytes : 0;
	return w->ps ? w->ps->n : 0;
}
