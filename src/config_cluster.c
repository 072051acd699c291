/* config_cluster.c: the [database X] section grammar: primary and replica lines, shard.N lines,
 * routing and sharding keys, and the checks that need the whole section. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_int.h"

/* ---- [database X] sections: primary, replicas, shards ----------------------------------- */

bool cf_add_cluster(struct cf_parse *ps, const char *rawname)
{
	char why[512];
	char *name = cf_entry_name(rawname, why, sizeof(why));
	if (!name) {
		cf_fail(ps, "[database] section name: %s", why);
		return false;
	}
	if (cf_reserved_db_name(name) || strchr(name, '/')) {
		cf_fail(ps, "database name \"%s\" is reserved or contains \"/\"", name);
		free(name);
		return false;
	}
	struct cfg_cluster *c = calloc(1, sizeof(*c));
	char *front_name = strdup(name);
	if (!c || !front_name) {
		free(c);
		free(name);
		free(front_name);
		cf_fail(ps, "out of memory");
		return false;
	}
	c->name = name;
	c->line = ps->line;
	c->read_routing = true;
	c->replica_fallback = true;
	c->max_lag_bytes = c->max_lag_usec = -1;
	c->pool_size = c->min_pool_size = c->reserve_pool = c->max_db_connections = -1;
	c->pool_mode = -1;
	*ps->cluster_tail = c;
	ps->cluster_tail = &c->next;
	ps->cluster = c;
	ps->section = SEC_CLUSTER;
	/* The name clients connect to: an entry with no server of its own. */
	struct cfg_db *front = cf_new_db_entry(ps, front_name);
	if (!front || !(front->cluster = strdup(name))) {
		cf_fail(ps, "out of memory");
		return false;
	}
	return true;
}

/* "shard.N.primary" / "shard.N.replica" -> N and the role word; -1 when not that form. */
static int shard_key_form(const char *key, const char **role)
{
	if (strncasecmp(key, "shard.", 6) != 0 || !isdigit((unsigned char)key[6]))
		return -1;
	char *end;
	long n = strtol(key + 6, &end, 10);
	if (*end != '.' || n > 4096)
		return -1;
	*role = end + 1;
	return (int)n;
}

static bool add_backend(struct cf_parse *ps, struct cfg_cluster *c, int shard, bool replica,
			bool sharded_form, const char *value)
{
	int n_rep = 0;
	for (const struct cfg_db *d = ps->cf->dbs; d; d = d->next) {
		if (!d->cluster || strcmp(d->cluster, c->name) != 0 || d->shard != shard)
			continue;
		if (!replica && d->replica < 0) {
			cf_fail(ps, "[database %s]: shard %d already has a primary (line %d)",
				c->name, shard, d->line);
			return false;
		}
		if (d->replica >= 0)
			n_rep++;
	}
	char name[300], role[32];
	if (replica)
		snprintf(role, sizeof(role), "replica%d", n_rep);
	else
		snprintf(role, sizeof(role), "primary");
	if (sharded_form)
		snprintf(name, sizeof(name), "%s/%d/%s", c->name, shard, role);
	else
		snprintf(name, sizeof(name), "%s/%s", c->name, role);
	char *copy = strdup(name);
	if (!copy) {
		cf_fail(ps, "out of memory");
		return false;
	}
	struct cfg_db *db = cf_new_db_entry(ps, copy);
	if (!db || !cf_parse_db_value(ps, db, value))
		return false;
	if (!(db->cluster = strdup(c->name))) {
		cf_fail(ps, "out of memory");
		return false;
	}
	db->shard = shard;
	db->replica = replica ? n_rep : -1;
	if (!db->dbname) {
		/* The entry's name is not a database: connect to the section's name instead. */
		char *ci = NULL;
		size_t cilen = 0;
		FILE *out = open_memstream(&ci, &cilen);
		if (out) {
			fputs(db->conninfo, out);
			fputc(' ', out);
			config_put_conninfo_pair(out, "dbname", c->name);
		}
		if (!out || fclose(out) != 0 || !(db->dbname = strdup(c->name))) {
			free(ci);
			cf_fail(ps, "out of memory");
			return false;
		}
		free(db->conninfo);
		db->conninfo = ci;
	}
	if (!replica && db->weight >= 0) {
		cf_fail(ps, "[database %s]: weight applies only to replica lines", c->name);
		return false;
	}
	return true;
}

/* max_replica_lag: bytes (1MB, 65536) or a time (500ms, 2s, 1min). */
static bool parse_lag(const char *v, struct cfg_cluster *c, char *why, size_t whylen)
{
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (end == v || errno || x < 0) {
		snprintf(why, whylen, "expected a size (64kB, 1MB) or a time (500ms, 2s)");
		return false;
	}
	while (isspace((unsigned char)*end))
		end++;
	static const struct { const char *u; double usec; } times[] = {
		{ "us", 1 }, { "ms", 1e3 }, { "s", 1e6 }, { "min", 60e6 },
	};
	for (size_t i = 0; i < ARRAY_LEN(times); i++)
		if (strcasecmp(end, times[i].u) == 0) {
			c->max_lag_usec = (int64_t)(x * times[i].usec);
			c->max_lag_bytes = -1;
			return true;
		}
	int64_t n;
	if (!cf_parse_size(v, 0, INT64_MAX, &n, why, whylen)) {
		snprintf(why, whylen, "expected a size (64kB, 1MB) or a time (500ms, 2s)");
		return false;
	}
	c->max_lag_bytes = n;
	c->max_lag_usec = -1;
	return true;
}

bool cf_cluster_pair(struct cf_parse *ps, const char *key, const char *value)
{
	struct cfg_cluster *c = ps->cluster;
	char why[512];
	const char *role;
	int shard = shard_key_form(key, &role);
	bool sharded_form = shard >= 0;
	int64_t n;
	int b;
	if (shard >= 0 || !strcasecmp(key, "primary") || !strcasecmp(key, "replica")) {
		if (shard < 0) {
			role = key;
			if (c->n_shards > 1 || c->shard_key) {
				cf_fail(ps, "[database %s] is sharded: write shard.N.%s", c->name, key);
				return false;
			}
			c->n_shards = -1;   /* plain form: no shard.N lines may follow */
			shard = 0;
		} else if (c->n_shards == -1) {
			cf_fail(ps, "[database %s]: shard.N lines cannot follow plain primary/replica lines",
				c->name);
			return false;
		}
		if (strcasecmp(role, "primary") && strcasecmp(role, "replica")) {
			cf_fail(ps, "unknown key \"%s\" in [database %s]", key, c->name);
			return false;
		}
		return add_backend(ps, c, shard, !strcasecmp(role, "replica"), sharded_form, value);
	}
	if (!strcasecmp(key, "read_routing") || !strcasecmp(key, "replica_fallback")) {
		if (!cf_lookup_bool(value, &b)) {
			cf_fail(ps, "invalid value \"%s\" for %s: expected on or off", value, key);
			return false;
		}
		if (!strcasecmp(key, "read_routing"))
			c->read_routing = b;
		else
			c->replica_fallback = b;
	} else if (!strcasecmp(key, "max_replica_lag")) {
		if (!parse_lag(value, c, why, sizeof(why))) {
			cf_fail(ps, "invalid value \"%s\" for max_replica_lag: %s", value, why);
			return false;
		}
	} else if (!strcasecmp(key, "read_your_writes")) {
		if (!strcasecmp(value, "off") || !strcasecmp(value, "0"))
			c->read_your_writes = RYW_OFF;
		else if (!strcasecmp(value, "lsn"))
			c->read_your_writes = RYW_LSN;
		else {
			cf_fail(ps, "invalid value \"%s\" for read_your_writes: expected off or lsn", value);
			return false;
		}
	} else if (!strcasecmp(key, "shards")) {
		if (!cf_parse_int(value, false, 1, 4096, &n, why, sizeof(why))) {
			cf_fail(ps, "invalid value \"%s\" for shards: %s", value, why);
			return false;
		}
		if (c->n_shards == -1) {
			cf_fail(ps, "[database %s]: shards must come before the backend lines", c->name);
			return false;
		}
		c->n_shards = (int)n;
	} else if (!strcasecmp(key, "shard_key")) {
		free(c->shard_key);
		if (!*value || !(c->shard_key = strdup(value))) {
			cf_fail(ps, *value ? "out of memory" : "shard_key needs a column name");
			return false;
		}
	} else if (!strcasecmp(key, "no_shard_key")) {
		static const struct name_val names[] = {
			{ "error", NOSHARD_ERROR }, { "shard0", NOSHARD_SHARD0 }, { "all", NOSHARD_ALL },
		};
		if (!cf_lookup_name(names, ARRAY_LEN(names), value, &c->no_shard_key)) {
			cf_fail(ps, "invalid value \"%s\" for no_shard_key: expected error, shard0 or all",
				value);
			return false;
		}
	} else if (!strcasecmp(key, "shard_key_type")) {
		/* The hash depends on the column's type: the SQL names that alias it are taken. */
		static const struct name_val names[] = {
			{ "int", SHARDKEY_INT }, { "integer", SHARDKEY_INT }, { "bigint", SHARDKEY_INT },
			{ "smallint", SHARDKEY_INT }, { "int2", SHARDKEY_INT }, { "int4", SHARDKEY_INT },
			{ "int8", SHARDKEY_INT }, { "text", SHARDKEY_TEXT }, { "varchar", SHARDKEY_TEXT },
			{ "uuid", SHARDKEY_UUID },
		};
		if (!cf_lookup_name(names, ARRAY_LEN(names), value, &c->shard_key_type)) {
			cf_fail(ps, "invalid value \"%s\" for shard_key_type: expected int, text or uuid",
				value);
			return false;
		}
	} else if (!strcasecmp(key, "max_db_client_connections")) {
		/* clients count against the name they connect to: the section's front entry */
		struct cfg_db *front = NULL;
		for (struct cfg_db *d = ps->cf->dbs; d; d = d->next)
			if (d->cluster && !strcmp(d->cluster, c->name) && d->shard < 0)
				front = d;
		if (!cf_parse_int(value, false, 0, INT32_MAX, &n, why, sizeof(why))) {
			cf_fail(ps, "invalid value \"%s\" for %s: %s", value, key, why);
			return false;
		}
		if (front)
			front->max_db_client_connections = (int)n;
	} else if (!strcasecmp(key, "pool_mode")) {
		if (!cf_parse_mode(value, &c->pool_mode, why, sizeof(why))) {
			cf_fail(ps, "invalid value \"%s\" for pool_mode: %s", value, why);
			return false;
		}
	} else {
		static const struct { const char *k; size_t off; } ints[] = {
			{ "pool_size", offsetof(struct cfg_cluster, pool_size) },
			{ "min_pool_size", offsetof(struct cfg_cluster, min_pool_size) },
			{ "reserve_pool", offsetof(struct cfg_cluster, reserve_pool) },
			{ "reserve_pool_size", offsetof(struct cfg_cluster, reserve_pool) },
			{ "max_db_connections", offsetof(struct cfg_cluster, max_db_connections) },
		};
		for (size_t i = 0; i < ARRAY_LEN(ints); i++) {
			if (strcasecmp(key, ints[i].k) != 0)
				continue;
			if (!cf_parse_int(value, false, 0, INT32_MAX, &n, why, sizeof(why))) {
				cf_fail(ps, "invalid value \"%s\" for %s: %s", value, key, why);
				return false;
			}
			*(int *)((char *)c + ints[i].off) = (int)n;
			return true;
		}
		cf_fail(ps, "unknown key \"%s\" in [database %s] (expected primary, replica, "
			"read_routing, max_replica_lag, read_your_writes, replica_fallback, "
			"shards, shard_key, shard_key_type, no_shard_key, shard.N.primary, "
			"shard.N.replica or a pool setting)",
			key, c->name);
		return false;
	}
	return true;
}

/* Whole-section checks, once the file is read: every shard has its primary, and the
 * section's pool settings reach the backends that do not set their own. */
void cf_finish_clusters(struct cf_parse *ps)
{
	for (struct cfg_cluster *c = ps->cf->clusters; c; c = c->next) {
		if (c->n_shards <= 0)
			c->n_shards = 1;
		if (c->n_shards > 1 && !c->shard_key) {
			cf_fail_at(ps, c->line, "[database %s]: shards = %d needs shard_key",
				   c->name, c->n_shards);
			return;
		}
		for (int s = 0; s < c->n_shards; s++) {
			bool primary = false;
			for (const struct cfg_db *d = ps->cf->dbs; d; d = d->next)
				if (d->cluster && !strcmp(d->cluster, c->name) && d->shard == s &&
				    d->replica < 0)
					primary = true;
			if (!primary) {
				cf_fail_at(ps, c->line, c->n_shards > 1 ? "[database %s]: shard %d has no "
					   "primary (shard.%d.primary = ...)" : "[database %s]: no primary "
					   "line%.0d%.0d", c->name, s, s);
				return;
			}
		}
		for (struct cfg_db *d = ps->cf->dbs; d; d = d->next) {
			if (!d->cluster || strcmp(d->cluster, c->name) != 0 || d->shard < 0)
				continue;
			if (d->shard >= c->n_shards) {
				cf_fail_at(ps, d->line, "[database %s]: shard %d is out of range (shards = %d)",
					   c->name, d->shard, c->n_shards);
				return;
			}
			if (d->pool_size < 0)
				d->pool_size = c->pool_size;
			if (d->min_pool_size < 0)
				d->min_pool_size = c->min_pool_size;
			if (d->reserve_pool < 0)
				d->reserve_pool = c->reserve_pool;
			if (d->max_db_connections < 0)
				d->max_db_connections = c->max_db_connections;
			if (d->pool_mode < 0)
				d->pool_mode = c->pool_mode;
		}
	}
}
