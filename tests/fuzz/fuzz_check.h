/* fuzz_check.h: a tiny invariant check for the libFuzzer harnesses (abort so the fuzzer reports it). */
#ifndef PGMUX_FUZZ_CHECK_H
#define PGMUX_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

#endif
