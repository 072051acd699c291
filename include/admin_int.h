/* admin_int.h: what the admin console's files share (admin.c, admin_rows.c, admin_show.c,
 * admin_cmd.c): the command table's types, a running command, a console session, the reply
 * writers.  Private to those files. */
#ifndef PGMUX_ADMIN_INT_H
#define PGMUX_ADMIN_INT_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* The longest command text the console looks at. */
#define ADMIN_CMD_MAX 1024
/* Rows a listing that grows with the load (clients, servers, pools, databases, users) writes
 * per batch.  The next batch is made once the previous one has left, so a console connection
 * holds about one batch of reply however many rows there are. */
#define ADMIN_BATCH_ROWS 256
/* Prepared statements a console session may hold (drivers prepare after a few runs). */
#define ADMIN_MAX_STMTS 16
#define ADMIN_NAME_MAX 64

#define OID_INT8   20
#define OID_TEXT   25
#define OID_FLOAT8 701

struct admin_col {
	const char *name;
	uint32_t oid;
};

/* What a command accepts after its name. */
enum admin_arg { ARG_NONE, ARG_DB_OPT, ARG_DB, ARG_ID, ARG_SHUTDOWN, ARG_SET };

/* ADMIN_MORE: a listing stopped after a batch; it goes on once the reply has drained. */
enum admin_rc { ADMIN_OK, ADMIN_ERR, ADMIN_WAIT, ADMIN_MORE };

/* One running command and where its reply goes. */
struct admin_ctx {
	struct client *cl;
	struct worker *w;
	struct pktbuf *o;
	const struct admin_cmd *cmd;
	const char *arg;            /* text after the command name, trimmed; "" when none */
	struct database *db;        /* ARG_DB / ARG_DB_OPT: the database named, or NULL */
	bool describe;              /* simple protocol: RowDescription goes before the rows */
	bool simple;
	int ncol;                   /* columns written in the current row */
	uint64_t rows;
	/* A listing made in batches resumes where the last one stopped: after row key `after`
	 * of part `phase` (keys are listing-defined: object ids, positions).  It sets `more`
	 * when it stopped early. */
	int phase;
	uint64_t after;
	bool more;
	bool buffers;               /* SHOW SOCKETS: rows carry the buffer columns */
};

typedef enum admin_rc (*admin_fn)(struct admin_ctx *x);

/* One command.  The table of them (SHOW ones in admin_show.c, then control ones in
 * admin_cmd.c) drives dispatch, access checks, RowDescription and HELP. */
struct admin_cmd {
	const char *name;           /* words separated by single spaces, upper case */
	enum admin_arg arg;
	const char *args_help;
	bool admin_only;            /* false: stats_users may run it too */
	admin_fn run;
	const struct admin_col *cols;   /* NULL: no result set */
	int ncols;
	const char *help;
};

enum admin_wait_kind { WAIT_NONE, WAIT_PAUSE, WAIT_CLOSE };

struct admin_session {
	struct client *cl;
	struct event ev_wait;
	enum admin_wait_kind wait;
	struct database *wait_db;   /* NULL: every database */
	bool wait_simple;           /* ReadyForQuery follows the completion */
	const char *wait_tag;
	bool skip_to_sync;          /* extended protocol: after an error, until Sync */
	int shutdown_mode;          /* SHUTDOWN: the PGMUX_SHUTDOWN_* mode to start once the reply is out */
	struct {
		char name[ADMIN_NAME_MAX];
		char *text;             /* NULL: slot free */
	} stmt[ADMIN_MAX_STMTS];
	char *portal;               /* the unnamed portal's command text, or NULL */
	/* A listing in progress: messages after it wait until it is done. */
	struct {
		const struct admin_cmd *cmd;    /* NULL: none */
		bool simple;
		int phase;
		uint64_t after;
		uint64_t *order;                /* SHOW SATURATION: pool ids, most saturated first */
		size_t n_order;
	} stream;
	struct event ev_drain;      /* the socket can take more: the listing's next batch */
};

/* ---- the command table -------------------------------------------------------------------- */

/* The SHOW commands (admin_show.c) and the control commands (admin_cmd.c), in HELP order. */
extern const struct admin_cmd admin_show_cmds[];
extern const size_t admin_show_ncmds;
extern const struct admin_cmd admin_ctl_cmds[];
extern const size_t admin_ctl_ncmds;

/* The i-th command of the whole table (the SHOW commands first); NULL past the last. */
const struct admin_cmd *admin_cmd_nth(size_t i);

/* ---- the session (admin.c, admin_cmd.c) --------------------------------------------------- */

/* Runs every complete message in the console client's buffer, stopping at a command that
 * waits or a listing that goes on in batches, and sends the replies.  The client may be
 * closed on return. */
void admin_process(struct client *cl);

/* The session's ev_wait timer (a PAUSE or WAIT_CLOSE in progress): completes the command
 * once every pool it waits on is done, else polls again; arg is the admin_session. */
void admin_wait_poll(evutil_socket_t fd, short what, void *arg);

/* ---- the reply (admin_rows.c) ------------------------------------------------------------- */

/* RowDescription of cmd's columns (every column text format). */
void admin_row_description(struct pktbuf *o, const struct admin_cmd *cmd);

/* A DataRow of x->cmd's columns: begin, one admin_col_* per column, end (the columns not
 * written are NULL; more than x->cmd->ncols is logged and dropped). */
void admin_row_begin(struct admin_ctx *x);
void admin_col_bytes(struct admin_ctx *x, const char *s, size_t len);   /* s NULL: NULL */
void admin_col_str(struct admin_ctx *x, const char *s);                 /* s NULL: NULL */
void admin_col_null(struct admin_ctx *x);
void admin_col_int(struct admin_ctx *x, int64_t v);
void admin_col_uint(struct admin_ctx *x, uint64_t v);    /* capped at INT64_MAX (int8 columns) */
void admin_col_float(struct admin_ctx *x, double v);     /* three decimals */
void admin_row_end(struct admin_ctx *x);

/* A two-column (text, int8) row, for the key/value listings. */
void admin_row_kv(struct admin_ctx *x, const char *k, uint64_t v);

/* Queues an ErrorResponse (severity ERROR) with a printf-formatted message. */
void admin_error(struct admin_ctx *x, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Queues a CommandComplete with `tag`. */
void admin_command_complete(struct pktbuf *o, const char *tag);

/* ---- listings in batches (admin_rows.c) ---------------------------------------------------- */

/* Objects come and go between two batches, so a batch never keeps a pointer: a listing offers
 * every object under a key that never repeats (its id), the picker keeps the batch's worth of
 * smallest keys above the last one written, and those rows are written in key order.  Each
 * object present throughout appears exactly once; one batch costs a walk over the objects. */
struct pick {
	uint64_t key;
	void *obj;
};

struct picker {
	uint64_t after;
	size_t n;
	struct pick v[ADMIN_BATCH_ROWS];   /* a max-heap on key while offering */
};

/* Starts a batch after the last key x wrote. */
void admin_picker_init(struct picker *pk, const struct admin_ctx *x);

/* Offers obj under key: kept when it is among the batch's smallest keys above the last batch. */
void admin_pick(struct picker *pk, uint64_t key, void *obj);

/* qsort / bsearch order of struct pick: by key. */
int admin_pick_cmp(const void *a, const void *b);

/* Writes the picked objects in key order with row(); a full batch means there may be more
 * (x->more), and the next batch starts after the last key written. */
void admin_pick_rows(struct admin_ctx *x, struct picker *pk,
		     void (*row)(struct admin_ctx *x, void *obj));

/* For listings in several parts: the current part is done, the next starts with the next
 * batch (more stays set). */
void admin_next_phase(struct admin_ctx *x);

/* ---- the connections (admin_show.c, admin_cmd.c) ------------------------------------------ */

/* Calls fn for every client socket: those in the pools' lists, the consoles, and with `login`
 * those still logging in, in that order; stops at the first for which fn returns true and
 * returns it (NULL when none did).  fn must not free clients (client_close defers that). */
struct client *admin_each_client(struct worker *w, bool login,
				 bool (*fn)(struct client *cl, void *arg), void *arg);

#define N_SV_LISTS 5
/* Every server list of p, in SHOW SERVERS order. */
static inline void server_lists(struct pool *p, struct list *out[N_SV_LISTS])
{
	out[0] = &p->sv_active;
	out[1] = &p->sv_idle;
	out[2] = &p->sv_used;
	out[3] = &p->sv_tested;
	out[4] = &p->sv_login;
}

#define N_CL_LISTS 3
/* Every client list of p. */
static inline void client_lists(struct pool *p, struct list *out[N_CL_LISTS])
{
	out[0] = &p->cl_active;
	out[1] = &p->cl_waiting;
	out[2] = &p->cl_waiting_login;
}

#endif
