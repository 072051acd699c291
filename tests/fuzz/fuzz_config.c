/* fuzz_config.c: libFuzzer harness for the ini configuration parser (config_load), fed from a memfd. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "fuzz_check.h"

static int memfd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* config_load warns through log.c; keep the fuzzer's output readable. */
	log_open(NULL, false, NULL, NULL, true);
	memfd = memfd_create("pgmux-fuzz-config", MFD_CLOEXEC);
	if (memfd < 0) {
		perror("memfd_create");
		abort();
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	return 0;
}

static void show_key(const char *name, const char *def, bool changeable, void *arg)
{
	const struct config *cf = arg;
	char buf[256];

	(void)def;
	(void)changeable;
	FUZZ_CHECK(config_value_text(cf, name, buf, sizeof(buf)));
	FUZZ_CHECK(memchr(buf, 0, sizeof(buf)) != NULL);
}

static void check_snapshot(struct config *cf)
{
	config_each_key(show_key, cf);
	for (const struct cfg_db *db = cf->dbs; db; db = db->next) {
		struct cfg_db *copy = config_db_dup(db);

		FUZZ_CHECK(db->name != NULL && db->conninfo != NULL);
		FUZZ_CHECK(config_find_db(cf, db->name) != NULL);
		if (copy) {
			FUZZ_CHECK(config_db_equal(db, copy));
			config_db_free(copy);
		}
	}
	for (const struct cfg_user *u = cf->users; u; u = u->next) {
		FUZZ_CHECK(u->name != NULL);
		FUZZ_CHECK(config_find_user(cf, u->name) != NULL);
	}
	(void)config_find_db(cf, "no such database");
	(void)config_list_has(cf->admin_users, "postgres");
	(void)config_list_has(cf->stats_users, "");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cf = (struct config *)1;
	char err[512];

	if (ftruncate(memfd, 0) != 0 || (size && pwrite(memfd, data, size, 0) != (ssize_t)size))
		abort();
	err[0] = '\0';
	if (config_load(path, &cf, err, sizeof(err)) == 0) {
		FUZZ_CHECK(cf != NULL && cf != (struct config *)1);
		check_snapshot(cf);
		config_free(cf);
	} else {
		FUZZ_CHECK(cf == NULL);
		FUZZ_CHECK(memchr(err, 0, sizeof(err)) != NULL && err[0] != '\0');
	}
	return 0;
}
