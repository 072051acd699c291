/* fuzz_userlist.c: libFuzzer harness for the auth_file (userlist.txt) parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "userlist.h"
#include "fuzz_check.h"

static void lookup(const struct userlist *ul, const char *user)
{
	const char *secret = userlist_get(ul, user);

	if (secret) {
		FUZZ_CHECK(strlen(secret) <= USERLIST_MAX_SECRET);
		FUZZ_CHECK(userlist_secret_kind(secret) != SECRET_NONE);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct userlist *ul = (struct userlist *)1;
	char err[256], name[16];
	char *text = malloc(size + 1);
	size_t n;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	err[0] = '\0';
	if (userlist_parse("fuzz", text, &ul, err, sizeof(err)) == 0) {
		FUZZ_CHECK(ul != NULL && ul != (struct userlist *)1);
		FUZZ_CHECK(userlist_count(ul) <= size);
		lookup(ul, "postgres");
		lookup(ul, "");
		lookup(ul, "quo\"ted");
		/* The text after a leading quote, up to the next quote: often the first user. */
		if (size > 1 && text[0] == '"') {
			const char *q = strchr(text + 1, '"');

			n = q ? (size_t)(q - text - 1) : 0;
			if (n < sizeof(name)) {
				memcpy(name, text + 1, n);
				name[n] = '\0';
				lookup(ul, name);
			}
		}
		userlist_free(ul);
	} else {
		FUZZ_CHECK(ul == NULL);
		FUZZ_CHECK(memchr(err, 0, sizeof(err)) != NULL && err[0] != '\0');
		FUZZ_CHECK(strncmp(err, "fuzz:", 5) == 0);
	}
	/* The accessors take NULL, as the header promises. */
	FUZZ_CHECK(userlist_get(NULL, "x") == NULL && userlist_count(NULL) == 0);
	free(text);
	return 0;
}
