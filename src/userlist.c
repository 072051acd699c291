/* userlist.c: parses the auth_file (PgBouncer userlist.txt format) into a hash table of user secrets. */
#include "userlist.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "pwcrypt.h"
#include "scram.h"

struct entry {
	char *user;      /* one allocation: user NUL secret NUL */
	char *secret;
	size_t alloc;
	uint64_t hash;
	struct scram_secret *verifier;   /* derived from a plaintext secret on first SCRAM login */
};

struct userlist {
	struct entry *slots;   /* open addressing, linear probing; empty slots have user == NULL */
	size_t cap;            /* a power of two, kept at least twice count */
	size_t count;
	size_t n_verifiers;    /* entries with a cached verifier */
};

/* One parse in progress: where we are, and where to report errors. */
struct parser {
	const char *name;
	const char *p, *end;
	int line;
	char *err;
	size_t errlen;
};

__attribute__((format(printf, 2, 3)))
static void parse_error(struct parser *ps, const char *fmt, ...)
{
	char reason[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (ps->err && ps->errlen)
		snprintf(ps->err, ps->errlen, "%s:%d: %s", ps->name, ps->line, reason);
}

/* FNV-1a: the file is the admin's, so there is no one to flood the table with collisions. */
static uint64_t hash_name(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* Entries are only replaced while parsing, before any verifier exists, so the list's
 * n_verifiers needs no update here. */
static void free_entry(struct entry *e)
{
	if (e->verifier) {
		OPENSSL_cleanse(e->verifier, sizeof(*e->verifier));
		free(e->verifier);
		e->verifier = NULL;
	}
	if (!e->user)
		return;
	OPENSSL_cleanse(e->user, e->alloc);
	free(e->user);
	e->user = e->secret = NULL;
}

void userlist_free(struct userlist *ul)
{
	if (!ul)
		return;
	for (size_t i = 0; i < ul->cap; i++)
		free_entry(&ul->slots[i]);
	free(ul->slots);
	free(ul);
}

static struct entry *find_slot(struct entry *slots, size_t cap, const char *user, uint64_t h)
{
	size_t i = (size_t)h & (cap - 1);

	while (slots[i].user && (slots[i].hash != h || strcmp(slots[i].user, user) != 0))
		i = (i + 1) & (cap - 1);
	return &slots[i];
}

static bool grow(struct userlist *ul)
{
	size_t ncap = ul->cap ? ul->cap * 2 : 16;
	struct entry *ns = calloc(ncap, sizeof(*ns));

	if (!ns)
		return false;
	for (size_t i = 0; i < ul->cap; i++)
		if (ul->slots[i].user)
			*find_slot(ns, ncap, ul->slots[i].user, ul->slots[i].hash) = ul->slots[i];
	free(ul->slots);
	ul->slots = ns;
	ul->cap = ncap;
	return true;
}

/* Adds or replaces: a later line for the same user wins, as in PgBouncer. */
static bool insert(struct userlist *ul, const char *user, size_t ulen, const char *secret, size_t slen)
{
	struct entry *e;
	uint64_t h;
	char *mem;

	if ((ul->count + 1) * 2 > ul->cap && !grow(ul))
		return false;
	mem = malloc(ulen + slen + 2);
	if (!mem)
		return false;
	memcpy(mem, user, ulen);
	mem[ulen] = '\0';
	memcpy(mem + ulen + 1, secret, slen);
	mem[ulen + 1 + slen] = '\0';
	h = hash_name(mem);
	e = find_slot(ul->slots, ul->cap, mem, h);
	if (e->user)
		free_entry(e);
	else
		ul->count++;
	e->user = mem;
	e->secret = mem + ulen + 1;
	e->alloc = ulen + slen + 2;
	e->hash = h;
	e->verifier = NULL;
	return true;
}

static bool at_eol(const struct parser *ps)
{
	return ps->p >= ps->end || *ps->p == '\n';
}

/* Spaces, tabs and the '\r' of CRLF files. */
static void skip_blanks(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\r'))
		ps->p++;
}

/* Reads a "quoted" token at ps->p into buf (NUL-terminated); "" inside stands for one '"'.
 * `what` names the token in errors; its contents never appear in them. */
static bool read_quoted(struct parser *ps, const char *what, char *buf, size_t max, size_t *outlen)
{
	size_t n = 0;

	ps->p++;   /* the opening quote */
	for (;;) {
		char c;

		if (at_eol(ps)) {
			parse_error(ps, "unterminated quoted %s", what);
			return false;
		}
		c = *ps->p++;
		if (c == '"') {
			if (ps->p < ps->end && *ps->p == '"')
				ps->p++;
			else
				break;
		}
		if (n >= max) {
			parse_error(ps, "%s longer than %zu bytes", what, max);
			return false;
		}
		buf[n++] = c;
	}
	buf[n] = '\0';
	*outlen = n;
	return true;
}

static void next_line(struct parser *ps)
{
	const char *nl = memchr(ps->p, '\n', (size_t)(ps->end - ps->p));

	ps->p = nl ? nl + 1 : ps->end;
	ps->line++;
}

static int parse_buffer(const char *name, const char *text, size_t len, struct userlist **out,
			char *err, size_t errlen)
{
	struct parser ps = { .name = name ? name : "<userlist>", .p = text, .end = text + len,
			     .line = 1, .err = err, .errlen = errlen };
	char user[USERLIST_MAX_USER + 1];
	size_t ulen = 0, slen = 0;
	struct userlist *ul;
	int rc = -1;

	*out = NULL;
	/* On the heap: 64 kB is too much to put on the stack. */
	char *secret = malloc(USERLIST_MAX_SECRET + 1);
	ul = calloc(1, sizeof(*ul));
	if (!secret || !ul || !grow(ul)) {
		parse_error(&ps, "out of memory");
		free(secret);
		free(ul);
		return -1;
	}
	/* Editors on Windows like to start files with a UTF-8 byte order mark. */
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		ps.p += 3;

	while (ps.p < ps.end) {
		skip_blanks(&ps);
		if (at_eol(&ps) || *ps.p == ';' || *ps.p == '#') {
			next_line(&ps);
			continue;
		}
		if (*ps.p != '"') {
			parse_error(&ps, "expected a quoted user name");
			goto done;
		}
		if (!read_quoted(&ps, "user name", user, USERLIST_MAX_USER, &ulen))
			goto done;
		if (ulen == 0) {
			parse_error(&ps, "empty user name");
			goto done;
		}
		if (!at_eol(&ps) && *ps.p != ' ' && *ps.p != '\t' && *ps.p != '\r') {
			parse_error(&ps, "expected a blank after the user name");
			goto done;
		}
		skip_blanks(&ps);
		if (at_eol(&ps)) {
			parse_error(&ps, "missing secret");
			goto done;
		}
		if (*ps.p != '"') {
			parse_error(&ps, "expected a quoted secret");
			goto done;
		}
		if (!read_quoted(&ps, "secret", secret, USERLIST_MAX_SECRET, &slen))
			goto done;
		/* Anything after the secret is ignored, as PgBouncer does. */
		if (!insert(ul, user, ulen, secret, slen)) {
			parse_error(&ps, "out of memory");
			goto done;
		}
		next_line(&ps);
	}
	*out = ul;
	ul = NULL;
	rc = 0;
done:
	OPENSSL_cleanse(secret, USERLIST_MAX_SECRET + 1);
	free(secret);
	userlist_free(ul);
	return rc;
}

int userlist_parse(const char *name, const char *text, struct userlist **out, char *err, size_t errlen)
{
	return parse_buffer(name, text, strlen(text), out, err, errlen);
}

__attribute__((format(printf, 3, 4)))
static void file_error(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int userlist_load(const char *path, struct userlist **out, char *err, size_t errlen)
{
	struct stat stbuf;
	char *buf = NULL;
	size_t size, got = 0;
	const char *nul;
	int fd, rc = -1;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		file_error(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &stbuf) != 0) {
		file_error(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
		goto done;
	}
	/* A FIFO or device would block the reader or never end. */
	if (!S_ISREG(stbuf.st_mode)) {
		file_error(err, errlen, "%s: not a regular file", path);
		goto done;
	}
	if (stbuf.st_size > USERLIST_MAX_FILE) {
		file_error(err, errlen, "%s: file larger than %d bytes", path, USERLIST_MAX_FILE);
		goto done;
	}
	size = (size_t)stbuf.st_size;
	buf = malloc(size + 1);
	if (!buf) {
		file_error(err, errlen, "%s: out of memory", path);
		goto done;
	}
	while (got < size) {
		ssize_t r = read(fd, buf + got, size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			file_error(err, errlen, "%s: read error: %s", path, strerror(errno));
			goto done;
		}
		if (r == 0)
			break;   /* truncated under us: parse what there is */
		got += (size_t)r;
	}
	buf[got] = '\0';
	/* A NUL would silently cut a name or secret short. */
	nul = memchr(buf, '\0', got);
	if (nul) {
		int line = 1;

		for (const char *q = buf; q < nul; q++)
			line += *q == '\n';
		file_error(err, errlen, "%s:%d: NUL byte in file", path, line);
		goto done;
	}
	rc = parse_buffer(path, buf, got, out, err, errlen);
done:
	if (buf) {
		OPENSSL_cleanse(buf, got);
		free(buf);
	}
	close(fd);
	return rc;
}

const char *userlist_get(const struct userlist *ul, const char *user)
{
	const struct entry *e;

	if (!ul || !user || ul->count == 0)
		return NULL;
	e = find_slot(ul->slots, ul->cap, user, hash_name(user));
	return e->user ? e->secret : NULL;
}

bool userlist_plain_verifier(struct userlist *ul, const char *user, const uint8_t *salt,
			     int salt_len, int iterations, struct scram_secret *out)
{
	struct entry *e;

	if (!ul || !user || !out || ul->count == 0)
		return false;
	e = find_slot(ul->slots, ul->cap, user, hash_name(user));
	if (!e->user || userlist_secret_empty(e->secret, user) ||
	    userlist_secret_kind(e->secret) != SECRET_PLAIN)
		return false;
	if (e->verifier && e->verifier->iterations == iterations && e->verifier->salt_len == salt_len &&
	    salt_len >= 0 && memcmp(e->verifier->salt, salt, (size_t)salt_len) == 0) {
		*out = *e->verifier;
		return true;
	}
	if (!scram_secret_from_password(e->secret, salt, salt_len, iterations, out))
		return false;
	if (!e->verifier && ul->n_verifiers < USERLIST_MAX_CACHED_VERIFIERS) {
		e->verifier = malloc(sizeof(*e->verifier));
		if (e->verifier)
			ul->n_verifiers++;
	}
	/* No room (or no memory): the login still works, it just is not cached. */
	if (e->verifier)
		*e->verifier = *out;
	return true;
}

bool userlist_secret_empty(const char *secret, const char *user)
{
	char empty[PWCRYPT_MD5_LEN + 1];
	bool eq;

	if (!secret)
		return false;
	if (!*secret)
		return true;
	if (!user || userlist_secret_kind(secret) != SECRET_MD5)
		return false;
	pwcrypt_md5_secret("", user, empty);
	eq = pwcrypt_str_equal(secret, empty);
	OPENSSL_cleanse(empty, sizeof(empty));
	return eq;
}

size_t userlist_cached_verifiers(const struct userlist *ul)
{
	return ul ? ul->n_verifiers : 0;
}

size_t userlist_count(const struct userlist *ul)
{
	return ul ? ul->count : 0;
}

enum secret_kind userlist_secret_kind(const char *secret)
{
	if (!secret)
		return SECRET_NONE;
	/* Lower-case hex only, as PostgreSQL writes and checks it. */
	if (strlen(secret) == 35 && strncmp(secret, "md5", 3) == 0 &&
	    strspn(secret + 3, "0123456789abcdef") == 32)
		return SECRET_MD5;
	if (scram_parse_secret(secret, NULL))
		return SECRET_SCRAM;
	return SECRET_PLAIN;
}
