/* fuzz_startup.c: libFuzzer harness for proto's parsers of client bytes: startup packet bodies, ErrorResponse fields, strings. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "fuzz_check.h"

/* True when the NUL-terminated string s lies wholly inside [lo, hi). */
static int str_inside(const char *s, const uint8_t *lo, const uint8_t *hi)
{
	const uint8_t *p = (const uint8_t *)s;

	if (p < lo || p >= hi)
		return 0;
	return memchr(p, 0, (size_t)(hi - p)) != NULL;
}

static void fuzz_parse_startup(const uint8_t *buf, size_t size)
{
	struct startup st;
	char err[128];

	err[0] = '\0';
	if (proto_parse_startup(buf, size, &st, err, sizeof(err)) == 0) {
		FUZZ_CHECK(size >= 5 && buf[size - 1] == 0);
		FUZZ_CHECK(st.version == proto_get32(buf));
		FUZZ_CHECK(st.nparams >= 0 && st.nparams <= PROTO_MAX_PARAMS);
		for (int i = 0; i < st.nparams; i++) {
			FUZZ_CHECK(str_inside(st.key[i], buf + 4, buf + size));
			FUZZ_CHECK(str_inside(st.val[i], buf + 4, buf + size));
			FUZZ_CHECK(st.key[i][0] != '\0');
		}
	} else {
		FUZZ_CHECK(memchr(err, 0, sizeof(err)) != NULL && err[0] != '\0');
	}
}

static void fuzz_error_field(const uint8_t *buf, size_t size)
{
	static const char codes[] = { 'S', 'V', 'C', 'M', 'D', 'H', 'P', 'W', 0 };

	for (size_t i = 0; i < sizeof(codes); i++) {
		const char *s = proto_error_field(buf, size, codes[i]);

		FUZZ_CHECK(s != NULL);
		if (*s)
			FUZZ_CHECK(str_inside(s, buf, buf + size));
	}
	if (size > 0) {
		const char *s = proto_error_field(buf, size, (char)buf[0]);

		FUZZ_CHECK(s != NULL);
		if (*s)
			FUZZ_CHECK(str_inside(s, buf, buf + size));
	}
}

static void fuzz_get_str(const uint8_t *buf, size_t size)
{
	const uint8_t *p = buf, *end = buf + size;
	const char *s;

	while ((s = proto_get_str(&p, end)) != NULL) {
		FUZZ_CHECK(str_inside(s, buf, end));
		FUZZ_CHECK(p == (const uint8_t *)s + strlen(s) + 1);
		FUZZ_CHECK(p <= end);
	}
	FUZZ_CHECK(p <= end);
	/* An empty range yields NULL and leaves the cursor alone. */
	p = end;
	FUZZ_CHECK(proto_get_str(&p, end) == NULL && p == end);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy, so ASan sees any read past the end of the packet. */
	uint8_t *buf = malloc(size ? size : 1);

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	fuzz_parse_startup(buf, size);
	fuzz_error_field(buf, size);
	fuzz_get_str(buf, size);
	free(buf);
	return 0;
}
