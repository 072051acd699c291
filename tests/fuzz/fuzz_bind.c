/* fuzz_bind.c: libFuzzer harness for reading a shard key out of a client's Bind message. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "shard.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 1 << 16)
		return 0;
	/* The first byte picks the parameter; the rest is the Bind body. */
	int n = data[0] % 8;
	int64_t v = 0;
	int rc = shard_bind_int(data + 1, (uint32_t)(size - 1), n, &v);
	FUZZ_CHECK(rc >= -1 && rc <= 1);
	if (rc == 1) {
		int s = shard_of_int(v, 4);
		FUZZ_CHECK(s >= 0 && s < 4);
	}
	return 0;
}
