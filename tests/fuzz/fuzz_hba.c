/* fuzz_hba.c: libFuzzer harness for the auth_hba_file and auth_ident_file parsers and rule matching (hba.c). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>

#include "hba.h"
#include "fuzz_check.h"

/* Matches a few peers against parsed rules: whatever the file, a match names a method the
 * parser knows and a line inside the file. */
static void eval_some(const struct hba *h, size_t size)
{
	static const char *const names[] = { "all", "db", "user", "replication", "\"q\"", "" };
	struct hba_peer p;
	for (int i = 0; i < 24; i++) {
		memset(&p, 0, sizeof(p));
		p.is_unix = i % 3 == 0;
		p.tls = i & 1;
		p.replication = i % 5 == 0;
		p.family = i & 2 ? AF_INET6 : AF_INET;
		for (int b = 0; b < 16; b++)
			p.addr[b] = (uint8_t)(i * 37 + b * 11);
		p.db = names[i % 6];
		p.user = names[(i / 6) % 6];
		struct hba_rule_info r;
		if (hba_eval(h, &p, &r)) {
			FUZZ_CHECK(r.line >= 1 && (size_t)r.line <= size + 1);
			FUZZ_CHECK(strcmp(hba_method_name(r.method), "?") != 0);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	struct hba *h = (struct hba *)1;
	err[0] = '\0';
	if (hba_parse((const char *)data, size, &h, err, sizeof(err)) == 0) {
		FUZZ_CHECK(h != NULL && h != (struct hba *)1);
		FUZZ_CHECK((size_t)hba_count(h) <= size);
		eval_some(h, size);
		hba_free(h);
	} else {
		FUZZ_CHECK(h == NULL);
		FUZZ_CHECK(memchr(err, 0, sizeof(err)) != NULL);
		FUZZ_CHECK(strncmp(err, "line ", 5) == 0 || strstr(err, "NUL") != NULL ||
			   strstr(err, "memory") != NULL);
	}
	struct ident *id = (struct ident *)1;
	if (ident_parse((const char *)data, size, &id, err, sizeof(err)) == 0) {
		FUZZ_CHECK(id != NULL && id != (struct ident *)1);
		(void)ident_match(id, "m", "all", "all");
		(void)ident_match(id, "map", "user", "db");
		ident_free(id);
	} else {
		FUZZ_CHECK(id == NULL);
	}
	return 0;
}
