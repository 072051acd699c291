/* worker.c: the ground floor: the clock, deferred frees, the cancel-key table, the shutdown check and which accept() errors a listener rides out, knowing no connection type. */
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "pwcrypt.h"

uint64_t worker_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- cancel keys ---- */

static uint32_t cancel_hash(uint32_t pid, uint32_t key)
{
	uint64_t x = ((uint64_t)pid << 32 | key) * 0x9E3779B97F4A7C15ull;
	return (uint32_t)(x >> 32);
}

static void cancel_grow(struct worker *w)
{
	uint32_t n = (w->cancel_mask + 1) * 2;
	struct client **tab = calloc(n, sizeof(*tab));
	if (!tab)
		return;
	for (uint32_t i = 0; i <= w->cancel_mask; i++) {
		struct client *c = w->cancel_tab[i];
		while (c) {
			struct client *next = c->cancel_next;
			uint32_t h = cancel_hash(c->cancel_pid, c->cancel_key) & (n - 1);
			c->cancel_next = tab[h];
			tab[h] = c;
			c = next;
		}
	}
	free(w->cancel_tab);
	w->cancel_tab = tab;
	w->cancel_mask = n - 1;
}

void worker_cancel_register(struct worker *w, struct client *cl)
{
	if ((uint32_t)w->n_clients > w->cancel_mask)
		cancel_grow(w);
	do {
		uint32_t k[2];
		pwcrypt_random(k, sizeof(k));
		cl->cancel_pid = k[0] & 0x7fffffff;
		cl->cancel_key = k[1];
	} while (!cl->cancel_pid || worker_cancel_find(w, cl->cancel_pid, cl->cancel_key));
	uint32_t h = cancel_hash(cl->cancel_pid, cl->cancel_key) & w->cancel_mask;
	cl->cancel_next = w->cancel_tab[h];
	w->cancel_tab[h] = cl;
}

void worker_cancel_unregister(struct worker *w, struct client *cl)
{
	if (!cl->cancel_pid)
		return;
	struct client **pp = &w->cancel_tab[cancel_hash(cl->cancel_pid, cl->cancel_key) & w->cancel_mask];
	for (; *pp; pp = &(*pp)->cancel_next) {
		if (*pp == cl) {
			*pp = cl->cancel_next;
			break;
		}
	}
	cl->cancel_pid = 0;
}

struct client *worker_cancel_find(struct worker *w, uint32_t pid, uint32_t key)
{
	struct client *c = w->cancel_tab[cancel_hash(pid, key) & w->cancel_mask];
	for (; c; c = c->cancel_next)
		if (c->cancel_pid == pid && pwcrypt_equal(&c->cancel_key, &key, sizeof(key)))
			return c;
	return NULL;
}

/* ---- deferred frees ---- */

static void free_all(struct reap_item **head)
{
	while (*head) {
		struct reap_item *it = *head;
		*head = it->next;
		it->free_fn(it);
	}
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct worker *w = arg;
	/* conns first: a dead client or server may still point at a removed database's pools */
	free_all(&w->reap_head);
	free_all(&w->reap_late);
}

static void conn_free(struct reap_item *it)
{
	struct conn *c = container_of(it, struct conn, reap);
	c->ops->on_free(c);
}

void worker_reap(struct worker *w, struct conn *c)
{
	c->reap.free_fn = conn_free;
	c->reap.next = w->reap_head;
	w->reap_head = &c->reap;
	event_active(&w->ev_reap, EV_TIMEOUT, 0);
}

void worker_defer_free(struct worker *w, struct reap_item *it, void (*free_fn)(struct reap_item *))
{
	it->free_fn = free_fn;
	it->next = w->reap_late;
	w->reap_late = it;
	event_active(&w->ev_reap, EV_TIMEOUT, 0);
}

int worker_init_base(struct worker *w)
{
	w->buf_free.keep = WORKER_SPARE_BLOCKS;
	w->retry_free.keep = WORKER_SPARE_BLOCKS;
	return event_assign(&w->ev_reap, w->base, -1, 0, reap_cb, w);
}

/* ---- shutdown ---- */

void worker_check_shutdown(struct worker *w)
{
	if (!w->shutdown)
		return;
	bool done = false;
	if (w->shutdown == PGMUX_SHUTDOWN_NOW) {
		done = true;
	} else if (w->shutdown == PGMUX_SHUTDOWN_WAIT_CLIENTS) {
		/* Consoles do not hold the exit up: a monitoring session would do so forever.  Nor
		 * do connections still logging in: the Unix socket stays open for the console during
		 * the shutdown, and a peer that never finishes a login (one client_login_timeout
		 * after another) would otherwise hold the exit up for ever; pooled logins are
		 * refused by now anyway. */
		done = w->n_clients - w->n_admin - w->n_login <= 0;
	} else {
		done = true;
		struct list *it, *tmp;
		list_for_each_safe(it, tmp, &w->pools) {
			struct pool *p = list_entry(it, struct pool, node);
			if (p->n_sv[SV_ACTIVE] || p->n_sv[SV_USED])
				done = false;
		}
	}
	if (done)
		event_base_loopbreak(w->base);
}

/* ---- listeners ---- */

bool worker_accept_transient(int err)
{
	switch (err) {
	case EAGAIN:
#if EWOULDBLOCK != EAGAIN
	case EWOULDBLOCK:
#endif
	case EINTR:
	case ECONNABORTED:
	/* accept(2): Linux passes on pending network errors of the new socket; retry. */
	case EPROTO: case ENOPROTOOPT: case ENETDOWN: case ENETUNREACH: case EHOSTDOWN:
	case EHOSTUNREACH: case ENONET: case EOPNOTSUPP:
		return true;
	default:
		return false;
	}
}
