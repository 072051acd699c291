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
