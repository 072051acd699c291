"""Protocol-level prepared statements (named Parse/Bind) in transaction mode.

Without tracking (max_prepared_statements = 0, PgBouncer's default) a client that meets a server
where its statement is missing, or taken, must get a prompt error and keep a usable connection.
With tracking (max_prepared_statements > 0) named statements must just work: psycopg's prepared
queries, asyncpg's statement cache and pgbench -M prepared, with clients moving between servers.
"""

import os
import time

import psycopg

from pgharness import Skip, run_async, timeout
from test_pgbench import pgbench, pgbench_init

# Tracking is not implemented yet (README, "Not yet"): the tracked tests are skipped unless
# PGMUX_TEST_PREPARED=1.  Turn the default to "1" when it lands.
TRACKED = os.environ.get("PGMUX_TEST_PREPARED", "1") == "1"


def _need_tracking():
    if not TRACKED:
        raise Skip("prepared statements in transaction mode not implemented yet "
                   "(PGMUX_TEST_PREPARED=1 runs it)")


@timeout(60)
def test_prepared_untracked_gives_errors_not_hangs(env):
    db = env.database()
    # tracking off, as in PgBouncer before 1.21 (PgBouncer 1.18 does not know the key)
    extra = {} if os.environ.get("PGMUX_SECTION") == "pgbouncer" else {"max_prepared_statements": 0}
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 1, **extra})
    a = px.connect(db, prepare_threshold=0)   # psycopg names its statements _pg3_0, _pg3_1 ...
    b = px.connect(db, prepare_threshold=0)
    assert a.execute("SELECT %s::int + 1", (1,)).fetchone()[0] == 2
    # b's first statement has the same name as a's, on the same (only) server
    t0 = time.monotonic()
    try:
        b.execute("SELECT %s::int * 3", (3,))
        raise AssertionError("duplicate statement name on a shared server went unnoticed")
    except psycopg.errors.DuplicatePreparedStatement as e:
        assert e.sqlstate == "42P05"
    assert time.monotonic() - t0 < 5
    # both clients keep working with unnamed statements
    b.prepare_threshold = None
    assert b.execute("SELECT %s::int * 3", (3,)).fetchone()[0] == 9
    a.prepare_threshold = None
    assert a.execute("SELECT 'a ok'").fetchone()[0] == "a ok"
    a.close()
    b.close()


class Blocker:
    """A client that holds one server in an open transaction every other round, so that the
    other clients' next statements run on a different server than the one they prepared on."""

    def __init__(self, px, db):
        self.conn = px.connect(db)
        self.busy = False

    def toggle(self):
        if self.busy:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("BEGIN")
            self.conn.execute("SELECT 1")
        self.busy = not self.busy

    def close(self):
        self.conn.close()


@timeout(60)
def test_prepared_tracked_psycopg(env):
    _need_tracking()
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "max_prepared_statements": 100})
    blocker = Blocker(px, db)
    conns = [px.connect(db, prepare_threshold=0) for _ in range(4)]
    pids = [set() for _ in conns]
    for round_ in range(6):
        blocker.toggle()
        for i, c in enumerate(conns):
            v, pid = c.execute("SELECT %s::int * 10 + %s::int, pg_backend_pid()",
                               (i, round_)).fetchone()
            assert v == i * 10 + round_
            pids[i].add(pid)
            assert c.execute("SELECT %s::text || '-' || %s::text", (f"c{i}", round_)
                             ).fetchone()[0] == f"c{i}-{round_}"
    assert all(len(p) == 2 for p in pids), f"clients did not move between servers: {pids}"
    blocker.close()
    for c in conns:
        c.close()


@timeout(60)
def test_prepared_tracked_asyncpg(env):
    _need_tracking()
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "max_prepared_statements": 100})
    blocker = Blocker(px, db)

    async def go():
        conns = [await px.aconnect(db) for _ in range(4)]  # default statement cache
        try:
            out, pids = [], [set() for _ in conns]
            for r in range(6):
                blocker.toggle()
                for i, c in enumerate(conns):
                    v, pid = await c.fetchrow("SELECT $1::int * 100 + $2::int, "
                                              "pg_backend_pid()", i, r)
                    out.append(v)
                    pids[i].add(pid)
                    stmt = await c.prepare("SELECT $1::text || 'x'")
                    out.append(await stmt.fetchval(str(i)))
            return out, pids
        finally:
            for c in conns:
                await c.close()
    out, pids = run_async(go(), 50)
    blocker.close()
    want = []
    for r in range(6):
        for i in range(4):
            want += [i * 100 + r, f"{i}x"]
    assert out == want
    assert all(len(p) == 2 for p in pids), f"clients did not move between servers: {pids}"


@timeout(120)
def test_prepared_tracked_pgbench(env):
    _need_tracking()
    db = env.database()
    pgbench_init(env, db)
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "max_prepared_statements": 100, "max_client_conn": 100})
    # One client per thread: pgbench prepares with the blocking PQprepare(), so two clients of
    # one thread, one waiting for a server the other holds, would deadlock pgbench itself
    # (it does so with PgBouncer too).
    rc, out, processed, failed = pgbench(px, db, "-M", "prepared", "-c", "6", "-j", "6",
                                         "-t", "200", timeout=40)
    assert rc == 0 and failed == 0 and processed == 1200, out[-3000:]
    assert env.sql1(db, "SELECT count(*) FROM pgbench_history") == 1200
