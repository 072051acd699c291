/* sbuf.c: moves bytes: recv into the source's lazy buffer, send straight to the peer, pause on backpressure. */
#include "sbuf.h"

#include <assert.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "worker.h"
#include "tls.h"

static void sbuf_on_read(evutil_socket_t fd, short what, void *arg);
static void sbuf_on_write(evutil_socket_t fd, short what, void *arg);

void sbuf_init(struct conn *c, struct worker *w, int fd, int kind, const struct sbuf_ops *ops)
{
	assert(ops && ops->on_data && ops->on_fail);
	c->fd = fd;
	c->kind = (uint8_t)kind;
	c->ops = ops;
	c->w = w;
	c->id = ++w->next_id;
	event_assign(&c->ev_read, w->base, fd, EV_READ | EV_PERSIST, sbuf_on_read, c);
	event_assign(&c->ev_write, w->base, fd, EV_WRITE | EV_PERSIST, sbuf_on_write, c);
}

void sbuf_resume(struct conn *c)
{
	if (c->rd_on || c->hold || c->dead || c->fd < 0)
		return;
	if (event_add(&c->ev_read, NULL) == 0)
		c->rd_on = true;
	/* Decrypted bytes held by OpenSSL will not make the socket poll readable. */
	if (c->ssl && tls_pending(c))
		event_active(&c->ev_read, EV_READ, 0);
}

void sbuf_pause(struct conn *c)
{
	if (!c->rd_on)
		return;
	event_del(&c->ev_read);
	c->rd_on = false;
}

static void arm_write(struct conn *c)
{
	if (!c->wr_on && event_add(&c->ev_write, NULL) == 0)
		c->wr_on = true;
}

static void disarm_write(struct conn *c)
{
	if (c->wr_on) {
		event_del(&c->ev_write);
		c->wr_on = false;
	}
}

static struct iobuf *buf_get(struct worker *w)
{
	struct iobuf *b = freelist_get(&w->buf_free);
	if (!b && !(b = malloc(sizeof(*b) + w->bufsize)))
		return NULL;
	b->start = b->scan = b->end = 0;
	b->cap = w->bufsize;
	w->n_buf_used++;
	return b;
}

static void buf_put(struct worker *w, struct iobuf *b)
{
	w->n_buf_used--;
	if (b->cap != w->bufsize) {
		/* A buffer grown to gather one big message goes back to the system at once. */
		assert(b->cap > w->bufsize && w->buf_grown >= b->cap - w->bufsize);
		w->buf_grown -= b->cap - w->bufsize;
		free(b);
		return;
	}
	freelist_put(&w->buf_free, b);
}

/* Moves the unsent bytes [start, end) to the front of the buffer. */
static void compact(struct iobuf *b)
{
	if (b->start == 0)
		return;
	memmove(b->data, b->data + b->start, b->end - b->start);
	b->end -= b->start;
	b->scan -= b->start;
	b->start = 0;
}

/* Gives c a buffer of `cap` bytes holding what its current one holds (cursors kept relative
 * to start).  False when out of memory (the old buffer stays). */
static bool buf_resize(struct conn *c, uint32_t cap)
{
	struct worker *w = c->w;
	struct iobuf *old = c->in, *nb;
	uint32_t used = old->end - old->start;
	assert(cap >= used && cap >= w->bufsize);
	if (cap == w->bufsize) {
		if (!(nb = buf_get(w)))
			return false;
	} else {
		if (!(nb = malloc(sizeof(*nb) + cap)))
			return false;
		nb->cap = cap;
		w->n_buf_used++;
		w->buf_grown += cap - w->bufsize;
	}
	memcpy(nb->data, old->data + old->start, used);
	nb->start = 0;
	nb->scan = old->scan - old->start;
	nb->end = used;
	buf_put(w, old);
	c->in = nb;
	return true;
}

bool sbuf_reserve(struct conn *c, uint32_t need)
{
	struct worker *w = c->w;
	if (!c->in && !(c->in = buf_get(w)))
		return false;
	struct iobuf *b = c->in;
	if (b->cap - b->scan >= need)
		return true;
	uint64_t want = (uint64_t)(b->scan - b->start) + need;
	if (want > UINT32_MAX - sizeof(*b))
		return false;
	if (want <= b->cap) {
		compact(b);
	} else {
		/* Doubling bounds the copies of a message that arrives in many reads. */
		uint64_t cap = (uint64_t)b->cap * 2;
		if (cap < want)
			cap = want;
		if (cap > UINT32_MAX - sizeof(*b))
			cap = want;
		if (!buf_resize(c, (uint32_t)cap) && !buf_resize(c, (uint32_t)want))
			return false;
	}
	/* It may have stopped reading because the old buffer was full. */
	sbuf_resume(c);
	return true;
}

/* A grown buffer whose big message has gone out shrinks back to the standard size.  Only
 * where no caller holds a pointer into it (the top of a read callback). */
static void maybe_shrink(struct conn *c)
{
	struct iobuf *b = c->in;
	if (b && b->cap > c->w->bufsize && b->end - b->start <= c->w->bufsize / 2)
		buf_resize(c, c->w->bufsize);   /* out of memory: it simply stays big */
}

void sbuf_release_buf(struct conn *c)
{
	struct iobuf *b = c->in;
	/* Every loop ends here: the cursors must still be in order. */
	assert(!b || (b->start <= b->scan && b->scan <= b->end && b->end <= b->cap));
	if (!b || b->start != b->end)
		return;
	b->start = b->scan = b->end = 0;
	if (c->pkt_left == 0) {
		buf_put(c->w, b);
		c->in = NULL;
	}
}

void sbuf_discard_in(struct conn *c)
{
	if (c->in)
		c->in->start = c->in->scan = c->in->end;
	sbuf_release_buf(c);
}

/* Routes a conn whose socket failed to its owner's single teardown path. */
static void conn_fail(struct conn *c, const char *reason)
{
	if (!c->dead)
		c->ops->on_fail(c, reason);
}

static inline ssize_t conn_recv(struct conn *c, void *buf, size_t len)
{
	return c->ssl ? tls_recv(c, buf, len) : recv(c->fd, buf, len, 0);
}

static inline ssize_t conn_send(struct conn *c, const void *buf, size_t len)
{
	return c->ssl ? tls_send(c, buf, len) : send(c->fd, buf, len, MSG_NOSIGNAL);
}

static void conn_dispatch(struct conn *c)
{
	c->ops->on_data(c);
}

/* A TLS handshake in progress owns both events, whichever side pgmux plays. */
static void conn_handshake(struct conn *c)
{
	if (c->ops->on_handshake)
		c->ops->on_handshake(c);
}

static void sbuf_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct worker *w = c->w;

	w->now = worker_now();
	if (c->handshaking) {
		conn_handshake(c);
		return;
	}
	if (!c->in && !(c->in = buf_get(w))) {
		/* Reading on would spin on the same readable socket: give the connection up. */
		log_error("out of memory for a receive buffer");
		conn_fail(c, "out of memory for a receive buffer");
		return;
	}
	/* The top of a callback: nobody holds a pointer into the buffer, so it may move. */
	maybe_shrink(c);
	struct iobuf *b = c->in;
	if (b->end == b->cap)
		compact(b);
	if (b->end == b->cap) {
		/* Full of bytes the peer has not taken: wait for it to drain. */
		sbuf_pause(c);
		return;
	}
	ssize_t n = conn_recv(c, b->data + b->end, b->cap - b->end);
	if (n > 0) {
		b->end += (uint32_t)n;
		conn_dispatch(c);
		/* Decrypted bytes can wait inside OpenSSL while the socket polls quiet. */
		if (c->ssl && !c->dead && c->rd_on && tls_pending(c))
			event_active(&c->ev_read, EV_READ, 0);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		sbuf_release_buf(c);
		return;
	}
	if (n == 0)
		conn_fail(c, c->ops->eof_reason ? c->ops->eof_reason : "connection closed");
	else
		conn_fail(c, strerror(errno));
}

int sbuf_send_out(struct conn *c)
{
	struct pktbuf *o = &c->out;
	if (o->failed)
		return -1;
	while (o->sent < o->len) {
		ssize_t n = conn_send(c, o->data + o->sent, o->len - o->sent);
		if (n > 0) {
			o->sent += (uint32_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			arm_write(c);
			return 1;
		}
		return -1;
	}
	/* Generated messages are rare: give their memory back. */
	pktbuf_free(o);
	return 0;
}

bool sbuf_flush(struct conn *src)
{
	struct conn *dst = src->peer;
	struct iobuf *b = src->in;
	if (!dst || !b || b->scan == b->start)
		return true;
	if (dst->out.len && !dst->wr_on) {
		/* pgmux's own bytes for the peer go first; nobody else would send them now */
		int r = sbuf_send_out(dst);
		if (r < 0) {
			conn_fail(dst, "send failed");
			return false;
		}
	}
	if (dst->wr_on || dst->out.len) {
		sbuf_pause(src);
		return false;
	}
	for (;;) {
		ssize_t n = conn_send(dst, b->data + b->start, b->scan - b->start);
		if (n > 0) {
			b->start += (uint32_t)n;
			if (b->start < b->scan)
				continue;
			sbuf_release_buf(src);
			return true;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			arm_write(dst);
			sbuf_pause(src);
			return false;
		}
		conn_fail(dst, n < 0 ? strerror(errno) : "send failed");
		return false;
	}
}

static void sbuf_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	c->w->now = worker_now();
	if (c->handshaking) {
		conn_handshake(c);
		return;
	}
	if (c->out.len) {
		int r = sbuf_send_out(c);
		if (r < 0) {
			conn_fail(c, "send failed");
			return;
		}
		if (r > 0)
			return;
	}
	disarm_write(c);
	if (c->ops->on_writable && c->ops->on_writable(c))
		return;
	struct conn *src = c->peer;
	if (src && !src->dead) {
		if (!sbuf_flush(src))
			return;
		sbuf_resume(src);
		conn_dispatch(src);
	}
}

void sbuf_drop(struct conn *c, uint32_t at, uint32_t n)
{
	struct iobuf *b = c->in;
	/* Only whole messages are dropped: a shorter buffer here is a caller's bug. */
	assert(b && at >= b->start && at <= b->end && b->end - at >= n);
	memmove(b->data + at, b->data + at + n, b->end - at - n);
	b->end -= n;
}

/* Room for n more bytes in c->in, anywhere after scan: compacts, then grows. */
static bool make_room(struct conn *c, uint32_t n)
{
	struct iobuf *b = c->in;
	if ((uint64_t)b->end + n <= b->cap)
		return true;
	return sbuf_reserve(c, b->end - b->scan + n);
}

bool sbuf_insert(struct conn *c, const void *data, uint32_t n)
{
	struct worker *w = c->w;
	if (!c->in && !(c->in = buf_get(w)))
		return false;
	if (!make_room(c, n))
		return false;
	struct iobuf *b = c->in;
	memmove(b->data + b->scan + n, b->data + b->scan, b->end - b->scan);
	memcpy(b->data + b->scan, data, n);
	b->end += n;
	b->scan += n;
	return true;
}

bool sbuf_replace(struct conn *c, uint32_t oldn, const void *data, uint32_t newn)
{
	struct iobuf *b = c->in;
	/* Only whole messages are replaced: a shorter buffer here is a caller's bug. */
	assert(b && b->end - b->scan >= oldn);
	if (newn > oldn && !make_room(c, newn - oldn))
		return false;
	b = c->in;
	memmove(b->data + b->scan + newn, b->data + b->scan + oldn, b->end - b->scan - oldn);
	memcpy(b->data + b->scan, data, newn);
	b->end = b->end + newn - oldn;
	return true;
}

void sbuf_close(struct conn *c)
{
	sbuf_pause(c);
	disarm_write(c);
	tls_free(c);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	if (c->in) {
		c->in->start = c->in->end;
		c->pkt_left = 0;
		buf_put(c->w, c->in);
		c->in = NULL;
	}
	pktbuf_free(&c->out);
	c->dead = true;
}

void sbuf_link(struct conn *a, struct conn *b)
{
	if (a->peer && a->peer != b)
		a->peer->peer = NULL;
	a->peer = b;
	if (b)
		b->peer = a;
}

void sbuf_set_nodelay(int fd)
{
	int on = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

void sbuf_set_keepalive(int fd, const struct config *cf)
{
	int on = cf->tcp_keepalive ? 1 : 0;
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	if (!on)
		return;
	int v;
	if (cf->tcp_keepidle > 0 && (v = (int)cf->tcp_keepidle))
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof(v));
	if (cf->tcp_keepintvl > 0 && (v = (int)cf->tcp_keepintvl))
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof(v));
	if (cf->tcp_keepcnt > 0 && (v = (int)cf->tcp_keepcnt))
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof(v));
}

bool sbuf_peer_uid(int fd, uid_t *uid)
{
#ifdef SO_PEERCRED
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred))
		return false;
	*uid = cred.uid;
	return true;
#else
	gid_t gid;
	return getpeereid(fd, uid, &gid) == 0;
#endif
}
