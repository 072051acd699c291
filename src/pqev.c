/* pqev.c: a libpq connection's socket and a timer on the worker's event loop. */
#include "pqev.h"

#include <stdlib.h>
#include <string.h>

void pqev_init(struct pqev *p, struct event_base *base, event_callback_fn on_io,
	       event_callback_fn on_timer, void *arg)
{
	p->base = base;
	p->on_io = on_io;
	p->arg = arg;
	p->io_added = false;
	evtimer_assign(&p->ev_timer, base, on_timer, arg);
}

void pqev_timer(struct pqev *p, uint64_t usec)
{
	struct timeval tv = { (time_t)(usec / 1000000), (suseconds_t)(usec % 1000000) };
	evtimer_add(&p->ev_timer, &tv);
}

void pqev_timer_off(struct pqev *p)
{
	evtimer_del(&p->ev_timer);
}

void pqev_io_off(struct pqev *p)
{
	if (p->io_added) {
		event_del(&p->ev_io);
		p->io_added = false;
	}
}

void pqev_wait(struct pqev *p, PGconn *conn, short what)
{
	pqev_io_off(p);
	int fd = conn ? PQsocket(conn) : -1;
	if (fd < 0)
		return;
	event_assign(&p->ev_io, p->base, fd, what, p->on_io, p->arg);
	event_add(&p->ev_io, NULL);
	p->io_added = true;
}

void pqev_stop(struct pqev *p)
{
	pqev_io_off(p);
	pqev_timer_off(p);
}

int pqev_connect(struct pqev *p, char *conninfo, PGconn **conn)
{
	*conn = PQconnectStart(conninfo);
	explicit_bzero(conninfo, strlen(conninfo));
	free(conninfo);
	if (!*conn || PQstatus(*conn) == CONNECTION_BAD)
		return -1;
	PQsetnonblocking(*conn, 1);
	pqev_wait(p, *conn, EV_WRITE);
	return 0;
}

int pqev_connect_poll(struct pqev *p, PGconn *conn)
{
	switch (PQconnectPoll(conn)) {
	case PGRES_POLLING_READING:
		pqev_wait(p, conn, EV_READ);
		return 0;
	case PGRES_POLLING_WRITING:
		pqev_wait(p, conn, EV_WRITE);
		return 0;
	case PGRES_POLLING_OK:
		pqev_io_off(p);
		return 1;
	default:
		return -1;
	}
}

int pqev_flush(struct pqev *p, PGconn *conn, short what)
{
	if (!(what & EV_WRITE))
		return 0;
	int f = PQflush(conn);
	if (f < 0)
		return -1;
	if (f == 0)
		pqev_wait(p, conn, EV_READ | EV_PERSIST);
	return 0;
}
