/* fuzz_bind.c: libFuzzer harness for reading a shard key out of a client's Bind message, for every key type. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "shardval.h"
#include "shardhash.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 1 << 16)
		return 0;
	/* The first byte picks the parameter; the rest is the Bind body, in an exactly-sized copy
	 * so that ASan sees any read past its end. */
	int n = data[0] % 8;
	uint32_t blen = (uint32_t)(size - 1);
	uint8_t *body = malloc(blen ? blen : 1);
	if (!body)
		return 0;
	memcpy(body, data + 1, blen);

	int64_t v = 0;
	int rc = shard_bind_int(body, blen, n, &v);
	FUZZ_CHECK(rc >= -1 && rc <= 1);
	if (rc == 1) {
		int s = shard_of_int(v, 4);
		FUZZ_CHECK(s >= 0 && s < 4);
	}

	const uint8_t *val = NULL;
	uint32_t len = 0;
	int fmt = -1;
	int pr = shard_bind_param(body, blen, n, &val, &len, &fmt);
	FUZZ_CHECK(pr >= -1 && pr <= 1);
	/* an integer can only be read from a parameter that is there */
	FUZZ_CHECK(rc != 1 || pr == 1);
	if (pr == 1) {
		FUZZ_CHECK(val >= body && len <= blen && (size_t)(val - body) + len <= blen);
		for (int type = SHARDKEY_INT; type <= SHARDKEY_UUID; type++) {
			uint64_t h = 0;
			int kr = shard_key_hash(type, val, len, fmt, &h);
			FUZZ_CHECK(kr == 0 || kr == -1);
			if (kr == 0)
				FUZZ_CHECK(shardhash_shard(h, 4) < 4);
			/* an integer key read both ways lands on the same shard */
			if (type == SHARDKEY_INT && rc == 1)
				FUZZ_CHECK(kr == 0 && (int)shardhash_shard(h, 4) == shard_of_int(v, 4));
		}
	}
	free(body);
	return 0;
}
