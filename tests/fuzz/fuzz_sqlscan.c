/* fuzz_sqlscan.c: libFuzzer harness for sqlscan: the classifier, the shard-key finder and the write_functions parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sqlscan.h"
#include "fuzz_check.h"

static struct sqlscan_funcs *default_funcs(void)
{
	static struct sqlscan_funcs *wf;
	if (!wf) {
		const char *err = NULL;
		wf = sqlscan_funcs_new(sqlscan_default_write_functions, &err);
		FUZZ_CHECK(wf != NULL && err == NULL);
	}
	return wf;
}

static void check_result(const struct sqlscan_result *r, size_t size)
{
	FUZZ_CHECK(r->verdict == SQLSCAN_READ || r->verdict == SQLSCAN_WRITE);
	FUZZ_CHECK(r->hint_role <= SQLSCAN_ROLE_AUTO);
	FUZZ_CHECK(r->tx <= SQLSCAN_TX_END);
	FUZZ_CHECK(r->set <= SQLSCAN_RESET_SHARD);
	FUZZ_CHECK(memchr(r->set_value, 0, sizeof(r->set_value)) != NULL);
	FUZZ_CHECK(r->set == SQLSCAN_SET_NONE || r->n_statements == 1);
	FUZZ_CHECK(r->set != SQLSCAN_SET_NONE || (r->set_value[0] == '\0' && !r->set_value_bad));
	FUZZ_CHECK(r->hint_shard >= -1);
	FUZZ_CHECK(r->has_hint_user_id || r->hint_user_id == 0);
	FUZZ_CHECK(r->n_statements <= size);
	/* nothing can be a read with no statement in it, or when it does not lex */
	FUZZ_CHECK(r->verdict == SQLSCAN_WRITE || (r->n_statements > 0 && !r->lex_error));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *sql = (const char *)data;
	struct sqlscan_funcs *wf = default_funcs();
	struct sqlscan_result r, r2;

	sqlscan_classify(sql, size, wf, &r);
	check_result(&r, size);

	/* no write function can only turn writes into reads */
	sqlscan_classify(sql, size, NULL, &r2);
	check_result(&r2, size);
	FUZZ_CHECK(r2.verdict == SQLSCAN_READ || r.verdict == SQLSCAN_WRITE);
	FUZZ_CHECK(r2.n_statements == r.n_statements && r2.tx == r.tx && r2.set == r.set);
	FUZZ_CHECK(r2.hint_role == r.hint_role && r2.hint_shard == r.hint_shard);

	/* a prefix never reads past its own end (ASan would see it: libFuzzer's buffer is exact) */
	if (size > 1) {
		sqlscan_classify(sql, size / 2, wf, &r2);
		check_result(&r2, size / 2);
	}

	struct sqlscan_key keys[8];
	int n = sqlscan_keys(sql, size, "user_id", keys, 8);
	FUZZ_CHECK(n >= -1);
	/* both scan the same tokens, so they agree on whether the input lexes */
	FUZZ_CHECK((n == -1) == r.lex_error);
	for (int i = 0; i < n && i < 8; i++) {
		const struct sqlscan_key *k = &keys[i];
		switch (k->kind) {
		case SQLSCAN_KEY_INT:
			break;
		case SQLSCAN_KEY_PARAM:
			FUZZ_CHECK(k->param >= 1);
			break;
		case SQLSCAN_KEY_STRING: {
			FUZZ_CHECK((size_t)k->str_off + k->str_len <= size);
			FUZZ_CHECK(k->str_off > 0 && (data[k->str_off - 1] == '\'' || data[k->str_off - 1] == '$'));
			char buf[64];
			int len = sqlscan_key_string(sql, k, buf, sizeof(buf));
			FUZZ_CHECK(len >= -1 && len < (int)sizeof(buf));
			FUZZ_CHECK(len < 0 || (size_t)len <= k->str_len);
			break;
		}
		default:
			FUZZ_CHECK(!"bad key kind");
		}
	}
	/* the count does not depend on the room for keys */
	FUZZ_CHECK(sqlscan_keys(sql, size, "user_id", NULL, 0) == n);
	FUZZ_CHECK(sqlscan_keys(sql, size, "t.user_id", keys, 1) == n);

	/* the same bytes as a write_functions list */
	char *list = malloc(size + 1);
	if (list) {
		memcpy(list, data, size);
		list[size] = '\0';
		const char *err = NULL;
		struct sqlscan_funcs *f = sqlscan_funcs_new(list, &err);
		if (f) {
			FUZZ_CHECK(err == NULL);
			sqlscan_classify(sql, size, f, &r2);
			check_result(&r2, size);
			sqlscan_funcs_free(f);
		}
		free(list);
	}
	return 0;
}
