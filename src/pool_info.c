/* pool_info.c: what a pool is, read without changing anything: its effective pool_mode and the
 * parameters its servers greeted with (the one-line facts are inline in pool_info.h).  Apart
 * from pool.c so that the layers below it can ask. */
#include "pool_info.h"

#include <string.h>

#include "config.h"
#include "proto.h"

int pool_mode(const struct pool *p)
{
	const struct cfg_user *u = p->user->cf;
	if (u && u->pool_mode >= 0)
		return u->pool_mode;
	if (p->db->cf->pool_mode >= 0)
		return p->db->cf->pool_mode;
	return p->w->cf->pool_mode;
}

static int64_t pick(int64_t user, int64_t db, int64_t general)
{
	return user > 0 ? user : db > 0 ? db : general;
}

void pool_timeouts(const struct pool *p, struct pool_timeouts *t)
{
	const struct config *cf = p->w->cf;
	const struct cfg_user *u = config_find_user(cf, p->user->name);
	const struct cfg_db *d = p->db->cf;
	static const struct cfg_user none;
	if (!u)
		u = &none;
	t->query = pick(u->query_timeout, 0, cf->query_timeout);
	t->query_wait = pick(u->query_wait_timeout, d->query_wait_timeout, cf->query_wait_timeout);
	t->idle_transaction = pick(u->idle_transaction_timeout, 0, cf->idle_transaction_timeout);
	t->transaction = pick(u->transaction_timeout, 0, cf->transaction_timeout);
	t->client_idle = pick(u->client_idle_timeout, 0, cf->client_idle_timeout);
	t->server_lifetime = pool_server_lifetime(p);
}

const char *pool_parameter(const struct pool *p, const char *name)
{
	const uint8_t *m = p->welcome.data, *end = m ? m + p->welcome.len : NULL;
	while (m && m + PROTO_HDR <= end) {
		uint32_t len = proto_get32(m + 1);
		if (len < 4 || len > (size_t)(end - m) - 1)
			break;
		const uint8_t *q = m + PROTO_HDR, *qend = m + 1 + len;
		const char *k = proto_get_str(&q, qend);
		const char *v = k ? proto_get_str(&q, qend) : NULL;
		if (k && v && strcmp(k, name) == 0)
			return v;
		m = qend;
	}
	return NULL;
}
