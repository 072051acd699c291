/* auth.c: authenticates clients (trust, any, plain, md5, scram-sha-256) against the auth_file's secrets, or those auth_query finds. */
#include "auth.h"

#include <arpa/inet.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "auth_query.h"
#include "client.h"
#include "hba.h"
#include "log.h"
#include "pool_info.h"
#include "pwcrypt.h"
#include "sbuf.h"
#include "tls.h"
#include "userlist.h"

enum auth_step { AUTH_WAIT_LOOKUP, AUTH_WAIT_PLAIN, AUTH_WAIT_MD5, AUTH_WAIT_SASL_INIT, AUTH_WAIT_SASL_RESP };

struct client_auth {
	enum auth_step step;
	uint8_t salt[4];
	/* Set when no password can succeed (unknown user, empty or unusable secret): the exchange
	 * still runs to its end and fails as a wrong password does, so a client cannot tell these
	 * cases apart, and the log gets this reason.  A static string, never a secret. */
	const char *doomed;
	bool stored_scram;      /* verified against a stored SCRAM secret (pass-through possible) */
	struct aq_req *aq;      /* the auth_query lookup under way, or NULL */
	char *found_secret;     /* what auth_query found for a user the auth_file lacks, or NULL */
	bool found_null;        /* ...and its secret column was NULL (found_secret matches nothing) */
	struct scram_server scram;
};

/* Reasons for the log; the client only ever sees the wrong-password error. */
static const char WHY_UNKNOWN[] = "user not found in auth_file";
static const char WHY_EMPTY[] = "the auth_file's secret for this user is empty (an empty password never authenticates)";
static const char WHY_EMPTY_MD5[] = "the auth_file's md5 secret is that of an empty password (an empty password never authenticates)";
static const char WHY_MD5_FOR_SCRAM[] = "the auth_file holds an md5 secret, which cannot check a SCRAM login";
static const char WHY_NULL_SECRET[] = "auth_query found no usable secret (no password, or VALID UNTIL has passed)";

/* What auth_query's row says when its secret column is NULL: a secret no password matches. */
static const char NULL_SECRET[] = "md5";

static void auth_proceed(struct client *cl, const char *secret);

void auth_free(struct client *cl)
{
	if (cl->auth) {
		auth_query_cancel(cl->auth->aq);
		if (cl->auth->found_secret) {
			OPENSSL_cleanse(cl->auth->found_secret, strlen(cl->auth->found_secret));
			free(cl->auth->found_secret);
		}
		/* Holds derived keys: wipe before returning the memory. */
		OPENSSL_cleanse(cl->auth, sizeof(*cl->auth));
		free(cl->auth);
		cl->auth = NULL;
	}
}

static const char *user_secret(struct client *cl)
{
	struct worker *w = cl->c.w;
	if (cl->auth && cl->auth->found_secret)
		return cl->auth->found_secret;
	return w->ul ? userlist_get(w->ul, cl->user_name) : NULL;
}

/* Why no password can log this user in with this secret, or NULL when one can. */
static const char *secret_unusable(const char *secret, const char *user)
{
	if (!secret)
		return WHY_UNKNOWN;
	if (secret == NULL_SECRET)
		return WHY_NULL_SECRET;
	if (userlist_secret_empty(secret, user))
		return *secret ? WHY_EMPTY_MD5 : WHY_EMPTY;
	return NULL;
}

/* Every failed password check ends here, with one text and SQLSTATE whatever the reason:
 * PgBouncer's words, "SASL authentication failed" after a SCRAM exchange and "password
 * authentication failed" after any other, then the user, as PostgreSQL names it. */
static void auth_fail(struct client *cl, const char *why)
{
	char msg[320];
	if (why) {
		char tag[256];
		/* A secret that can never work is the admin's to fix, so it is a warning. */
		if (why == WHY_EMPTY || why == WHY_EMPTY_MD5 || why == WHY_MD5_FOR_SCRAM)
			log_warn("%s password authentication failed: %s", client_tag(cl, tag, sizeof(tag)), why);
		else
			log_info("%s password authentication failed: %s", client_tag(cl, tag, sizeof(tag)), why);
	}
	bool sasl = cl->auth && (cl->auth->step == AUTH_WAIT_SASL_INIT || cl->auth->step == AUTH_WAIT_SASL_RESP);
	snprintf(msg, sizeof(msg), "%s authentication failed for user \"%s\"", sasl ? "SASL" : "password",
		 cl->user_name);
	client_close(cl, msg, "28P01");
}

static bool send_request(struct client *cl, uint32_t code, const void *data, size_t len)
{
	proto_auth_request(&cl->c.out, code, data, len);
	if (sbuf_send_out(&cl->c) < 0) {
		client_close(cl, "send failed during login", NULL);
		return false;
	}
	return true;
}

/*
 * Picks the verifier for a SCRAM login.  What a client sees in the server-first-message must
 * not tell which users exist: a stored verifier shows its own salt and count, and every other
 * case shows the process salt for the user name (a keyed hash, stable across tries) with 4096
 * iterations.  A plaintext secret gets a verifier made with that salt, derived once and cached
 * in the userlist; a user who cannot log in gets a mock verifier, with no PBKDF2 at all, and
 * fails at the proof like a wrong password (PostgreSQL's mock authentication does the same).
 */
static bool start_scram(struct client *cl, const char *secret)
{
	struct client_auth *a = cl->auth;
	struct worker *w = cl->c.w;
	enum secret_kind kind = secret ? userlist_secret_kind(secret) : SECRET_NONE;
	bool ok = false;

	if (!a->doomed && kind == SECRET_MD5)
		a->doomed = WHY_MD5_FOR_SCRAM;
	if (!a->doomed && kind == SECRET_SCRAM) {
		a->stored_scram = ok = scram_parse_secret(secret, &a->scram.secret);
	} else if (!a->doomed && kind == SECRET_PLAIN) {
		uint8_t salt[SCRAM_SALT_LEN];
		ok = scram_process_salt(cl->user_name, salt) &&
		     userlist_plain_verifier(w->ul, cl->user_name, salt, sizeof(salt),
					     SCRAM_DEFAULT_ITERATIONS, &a->scram.secret);
	} else {
		if (!a->doomed)
			a->doomed = WHY_UNKNOWN;
		a->scram.doomed = true;
		ok = scram_mock_secret(cl->user_name, &a->scram.secret);
	}
	if (!ok) {
		client_close(cl, "could not prepare SCRAM authentication", "XX000");
		return false;
	}
	a->step = AUTH_WAIT_SASL_INIT;
	static const char mech[] = "SCRAM-SHA-256\0";
	return send_request(cl, 10, mech, sizeof(mech));
}

/* auth_query's answer for a user the auth_file lacks. */
static void on_lookup(struct client *cl, enum aq_status st, const char *secret, const char *msg,
		      const char *sqlstate)
{
	struct client_auth *a = cl->auth;
	char tag[256];
	a->aq = NULL;
	if (st == AQ_FAILED) {
		client_close(cl, msg, sqlstate);
		return;
	}
	if (st == AQ_NO_USER) {
		/* PgBouncer has no mock login here either: the client is told. */
		log_info("%s no such user: %s", client_tag(cl, tag, sizeof(tag)), cl->user_name);
		client_close(cl, "no such user", "28000");
		return;
	}
	a->found_null = !secret;
	if (!(a->found_secret = strdup(secret ? secret : NULL_SECRET))) {
		client_close(cl, "out of memory", "53200");
		return;
	}
	auth_proceed(cl, secret ? a->found_secret : NULL_SECRET);
}

void auth_start(struct client *cl)
{
	struct worker *w = cl->c.w;
	int type = w->cf->auth_type;
	const char *secret = user_secret(cl);

	if (type == AUTH_ANY) {
		client_auth_ok(cl);
		return;
	}
	cl->auth = calloc(1, sizeof(*cl->auth));
	if (!cl->auth) {
		client_close(cl, "out of memory", "53200");
		return;
	}
	if (!secret) {
		/* Not in the auth_file: auth_query may know the user (PgBouncer asks it whatever
		 * the auth_type, trust included). */
		cl->auth->step = AUTH_WAIT_LOOKUP;
		int r = auth_query_begin(cl, on_lookup, &cl->auth->aq);
		if (r != 0)
			return;
	}
	auth_proceed(cl, secret);
}

/* The OS user on the other end of a Unix socket, in buf; false when it cannot be told. */
static bool peer_os_user(const struct client *cl, char *buf, size_t len)
{
	uid_t uid;
	if (!sbuf_peer_uid(cl->c.fd, &uid))
		return false;
	struct passwd pw, *res = NULL;
	char tmp[4096];
	if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) != 0 || !res)
		return false;
	if (strlen(pw.pw_name) >= len)
		return false;
	strcpy(buf, pw.pw_name);
	return true;
}

/* PgBouncer's peer method: the OS user of the Unix socket's other end is the user, or one a
 * map allows to be it. */
static void login_peer(struct client *cl, bool known, const char *map)
{
	char tag[256], os[256];
	struct worker *w = cl->c.w;
	bool ok = strcmp(cl->addr, "unix") == 0 && known && peer_os_user(cl, os, sizeof(os));
	if (ok && map) {
		ok = ident_match(w->ident, map, os, cl->user_name);
		if (!ok)
			log_info("%s ident map %s cannot be matched", client_tag(cl, tag, sizeof(tag)), map);
	} else if (ok) {
		ok = strcmp(os, cl->user_name) == 0;
	}
	if (!ok) {
		client_close(cl, "unix socket login rejected", "28000");
		return;
	}
	client_auth_ok(cl);
}

/* PgBouncer's cert method: a client certificate that verified against client_tls_ca_file,
 * whose common name is the user, or one a map allows to be it. */
static void login_cert(struct client *cl, bool known, const char *map)
{
	char tag[256], cn[HBA_MAX_NAME + 2];
	struct worker *w = cl->c.w;
	const char *why = NULL;
	if (!cl->c.ssl)
		why = "TLS connection required";
	else if (!tls_peer_has_cert(&cl->c))
		why = "TLS client certificate required";
	else if (!tls_peer_cn(&cl->c, cn, sizeof(cn)))
		why = "TLS client certificate did not verify or has no usable common name";
	else if (!known)
		why = "no such user";
	else if (map && !ident_match(w->ident, map, cn, cl->user_name))
		why = "ident map does not have a match";
	else if (!map && strcmp(cn, cl->user_name) != 0)
		why = "TLS certificate name mismatch";
	if (why) {
		if (map && strncmp(why, "ident map", 9) == 0)
			log_info("%s ident map: %s does not have a match", client_tag(cl, tag, sizeof(tag)), map);
		else
			log_info("%s %s", client_tag(cl, tag, sizeof(tag)), why);
		client_close(cl, "certificate authentication failed", "28000");
		return;
	}
	client_auth_ok(cl);
}

/* auth_type hba: the method of the first rule that matches the client; -1 when the client was
 * closed (no rule, reject), else an AUTH_* type, or AUTH_HBA when peer or cert took over. */
static int hba_method(struct client *cl, bool known)
{
	struct worker *w = cl->c.w;
	/* replication: such a client matches only rules for the keyword "replication" (never
	 * "all" or a name), as in PostgreSQL and PgBouncer; without it a rule refusing
	 * replication was skipped and a broader trust rule let the walsender through. */
	struct hba_peer p = { .tls = cl->c.ssl != NULL, .db = cl->db_name, .user = cl->user_name,
			      .replication = cl->replication != REPL_NONE };
	if (strcmp(cl->addr, "unix") == 0)
		p.is_unix = true;
	else if (inet_pton(AF_INET, cl->addr, p.addr) == 1)
		p.family = AF_INET;
	else if (inet_pton(AF_INET6, cl->addr, p.addr) == 1)
		p.family = AF_INET6;
	struct hba_rule_info r;
	char tag[256];
	if (!w->hba)   /* auth_type set to hba from the console: the file comes with a RELOAD */
		log_warn("%s auth_type is hba but no auth_hba_file is loaded (RELOAD reads it)",
			 client_tag(cl, tag, sizeof(tag)));
	if (!hba_eval(w->hba, &p, &r)) {
		client_close(cl, "no authentication method is found", "28000");
		return -1;
	}
	log_debug("%s HBA line %d matched: %s", client_tag(cl, tag, sizeof(tag)), r.line,
		  hba_method_name(r.method));
	switch (r.method) {
	case HBA_TRUST: return AUTH_TRUST;
	case HBA_MD5: return AUTH_MD5;
	case HBA_PASSWORD: return AUTH_PLAIN;
	case HBA_SCRAM: return AUTH_SCRAM;
	case HBA_PEER:
		login_peer(cl, known, r.map);
		return AUTH_HBA;
	case HBA_CERT:
		login_cert(cl, known, r.map);
		return AUTH_HBA;
	case HBA_REJECT:
		break;
	}
	client_close(cl, "login rejected", "28000");
	return -1;
}

/* The exchange itself, once the secret (or its absence) is known. */
static void auth_proceed(struct client *cl, const char *secret)
{
	struct worker *w = cl->c.w;
	int type = w->cf->auth_type;
	/* with no auth_file at all, trust lets anyone in; the other methods need a known user */
	bool known = secret || (!w->ul && !cl->auth->found_secret);

	if (type == AUTH_HBA && ((type = hba_method(cl, known)) < 0 || type == AUTH_HBA))
		return;
	if (type == AUTH_CERT) {
		login_cert(cl, known, NULL);
		return;
	}

	if (type == AUTH_TRUST) {
		/* With no auth_file at all, anyone may log in as anyone, as in PgBouncer. */
		if (known) {
			client_auth_ok(cl);
			return;
		}
		char tag[256];
		log_info("%s no such user: %s", client_tag(cl, tag, sizeof(tag)), cl->user_name);
		client_close(cl, "\"trust\" authentication failed", "28000");
		return;
	}
	cl->auth->doomed = secret_unusable(secret, cl->user_name);
	enum secret_kind kind = secret ? userlist_secret_kind(secret) : SECRET_NONE;
	if (type == AUTH_ANY) {   /* an hba rule cannot say any; kept for completeness */
		client_auth_ok(cl);
	} else if (type == AUTH_PLAIN) {
		cl->auth->step = AUTH_WAIT_PLAIN;
		send_request(cl, 3, NULL, 0);
	} else if (type == AUTH_MD5 && kind != SECRET_SCRAM) {
		cl->auth->step = AUTH_WAIT_MD5;
		pwcrypt_random(cl->auth->salt, 4);
		send_request(cl, 5, cl->auth->salt, 4);
	} else {
		/* scram-sha-256, or md5 with a SCRAM secret (md5 cannot be checked against it). */
		start_scram(cl, secret);
	}
}

static bool check_plain(struct client *cl, const char *pw)
{
	const char *secret = user_secret(cl);
	if (!secret || cl->auth->doomed)
		return false;
	/* PostgreSQL refuses an empty password from a client outright ("empty password returned
	 * by client"); here it fails as any wrong password does. */
	if (!*pw)
		return false;
	switch (userlist_secret_kind(secret)) {
	case SECRET_PLAIN:
		return *secret && pwcrypt_str_equal(secret, pw);
	case SECRET_MD5: {
		char h[PWCRYPT_MD5_LEN + 1];
		pwcrypt_md5_secret(pw, cl->user_name, h);
		return pwcrypt_str_equal(secret, h);
	}
	case SECRET_SCRAM: {
		struct scram_secret want, got;
		bool ok = scram_parse_secret(secret, &want) &&
			  scram_secret_from_password(pw, want.salt, want.salt_len, want.iterations, &got) &&
			  (pwcrypt_equal(want.stored_key, got.stored_key, SCRAM_KEY_LEN) &
			   pwcrypt_equal(want.server_key, got.server_key, SCRAM_KEY_LEN));
		OPENSSL_cleanse(&want, sizeof(want));
		OPENSSL_cleanse(&got, sizeof(got));
		return ok;
	}
	default:
		return false;
	}
}

static bool check_md5(struct client *cl, const char *resp)
{
	const char *secret = user_secret(cl);
	if (!secret || cl->auth->doomed)
		return false;
	char md5sec[PWCRYPT_MD5_LEN + 1], want[PWCRYPT_MD5_LEN + 1];
	if (userlist_secret_kind(secret) == SECRET_PLAIN) {
		if (!*secret)
			return false;
		pwcrypt_md5_secret(secret, cl->user_name, md5sec);
		secret = md5sec;
	}
	pwcrypt_md5_response(secret, cl->auth->salt, want);
	bool ok = pwcrypt_str_equal(want, resp);
	OPENSSL_cleanse(md5sec, sizeof(md5sec));
	OPENSSL_cleanse(want, sizeof(want));
	return ok;
}

bool auth_on_message(struct client *cl, char type, const uint8_t *body, uint32_t len)
{
	struct client_auth *a = cl->auth;
	if (type != 'p') {
		client_close(cl, "expected a password message during authentication", "08P01");
		return false;
	}
	const uint8_t *p = body, *end = body + len;
	switch (a->step) {
	case AUTH_WAIT_LOOKUP:
		/* Nothing was asked of the client yet. */
		client_close(cl, "unexpected message during authentication", "08P01");
		return false;
	case AUTH_WAIT_PLAIN:
	case AUTH_WAIT_MD5: {
		const char *pw = proto_get_str(&p, end);
		if (!pw) {
			client_close(cl, "invalid password message", "08P01");
			return false;
		}
		bool ok = a->step == AUTH_WAIT_PLAIN ? check_plain(cl, pw) : check_md5(cl, pw);
		if (!ok) {
			auth_fail(cl, a->doomed ? a->doomed : (!*pw ? "empty password sent by client" : NULL));
			return false;
		}
		client_auth_ok(cl);
		return !cl->c.dead;
	}
	case AUTH_WAIT_SASL_INIT: {
		const char *mech = proto_get_str(&p, end);
		if (!mech || end - p < 4) {
			client_close(cl, "invalid SASL initial response", "08P01");
			return false;
		}
		if (strcmp(mech, "SCRAM-SHA-256") != 0) {
			client_close(cl, "unsupported SASL mechanism", "28000");
			return false;
		}
		int32_t dlen = (int32_t)proto_get32(p);
		p += 4;
		if (dlen < 0 || dlen > end - p) {
			client_close(cl, "invalid SASL initial response length", "08P01");
			return false;
		}
		char out[512], err[128];
		size_t outlen;
		if (scram_server_first(&a->scram, (const char *)p, (size_t)dlen, out, sizeof(out), &outlen,
				       err, sizeof(err)) < 0) {
			client_close(cl, err, "08P01");
			return false;
		}
		a->step = AUTH_WAIT_SASL_RESP;
		return send_request(cl, 11, out, outlen);
	}
	case AUTH_WAIT_SASL_RESP: {
		char out[512], err[128];
		size_t outlen;
		/* A doomed exchange fails inside scram_server_final, after the same work as a wrong
		 * proof; the check of a->doomed here is a second lock on the same door. */
		if (scram_server_final(&a->scram, (const char *)body, len, out, sizeof(out), &outlen,
				       err, sizeof(err)) < 0 || a->doomed) {
			auth_fail(cl, a->doomed ? a->doomed : err);
			return false;
		}
		if (!send_request(cl, 12, out, outlen))
			return false;
		a->scram.done = true;
		client_auth_ok(cl);
		return !cl->c.dead;
	}
	}
	return false;
}

void auth_export_keys(struct client *cl, struct pool *p)
{
	/* The ClientKey from a verified proof lets the pool log in to the server by pass-through.
	 * The latest login wins (a rotated password takes over), and only a key made for the
	 * user the pool logs in as is any use. */
	if (cl->auth && cl->auth->scram.done && cl->auth->stored_scram &&
	    strcmp(pool_server_user(p), cl->user_name) == 0) {
		memcpy(p->scram_client_key, cl->auth->scram.client_key, SCRAM_KEY_LEN);
		p->have_scram_keys = true;
	}
	/* A secret auth_query found logs the pool in as that user (the latest login's wins). */
	if (cl->auth && cl->auth->found_secret && !cl->auth->found_null &&
	    strcmp(pool_server_user(p), cl->user_name) == 0) {
		char *copy = strdup(cl->auth->found_secret);
		if (copy) {
			if (p->auth_secret) {
				OPENSSL_cleanse(p->auth_secret, strlen(p->auth_secret));
				free(p->auth_secret);
			}
			p->auth_secret = copy;
		}
	}
}

const char *auth_server_secret(struct pool *p)
{
	struct worker *w = p->w;
	if (p->db->cf->password)
		return p->db->cf->password;
	const char *s = w->ul ? userlist_get(w->ul, pool_server_user(p)) : NULL;
	return s ? s : p->auth_secret;
}
