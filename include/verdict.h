/* verdict.h: per-worker caches of the classifier's verdicts, so that repeated statements skip the lexer. */
#ifndef PGMUX_VERDICT_H
#define PGMUX_VERDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sqlscan.h"

/* Texts longer than this are classified every time. */
#define VERDICT_TEXT_MAX 512

struct verdict_cache;

/*
 * Classifies sql[0..len) as sqlscan_classify(sql, len, wf, r) would, through *vc (created on
 * first use; on no memory the text is simply classified).  last is NULL for a Parse text, and
 * for a simple Query text the caller's memo of the slot it used last (0 at first).  Two caches:
 *  - exact texts, for Parse messages: drivers send the same "... WHERE id = $1" again and again;
 *  - shapes, for simple-protocol Query texts, which carry their literals: a single SELECT with
 *    no comment, '-' or '$' in it is kept with its digits folded to '0', and a text that folds
 *    to the same bytes takes its verdict.  Within such a statement no classifier rule looks at
 *    a digit's value (hints, EXPLAIN options and SET values are the rules that do, and each
 *    needs a comment, another first word or a second statement); a write_functions name with
 *    a digit would, so then shapes are off.
 * wf must be the list the cache was filled with: the caller frees the cache when it changes.
 */
void verdict_classify(struct verdict_cache **vc, uint16_t *last, const char *sql, size_t len,
		      const struct sqlscan_funcs *wf, struct sqlscan_result *r);

/* The same, with a memo for either kind of text: simple says which cache (shapes for a Query
 * text, exact for a Parse text); *memo (0 at first) is the caller's, e.g. one per client. */
void verdict_lookup(struct verdict_cache **vc, uint16_t *memo, bool simple, const char *sql,
		    size_t len, const struct sqlscan_funcs *wf, struct sqlscan_result *r);

void verdict_free(struct verdict_cache *vc);

/* For tests: copies sql[0..len) with every ASCII digit turned into '0' (the shape key). */
void verdict_fold_digits(const char *sql, size_t len, char *out);

#endif
