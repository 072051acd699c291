"""Prepared statements where PgBouncer's suite found pgmux different: an eviction inside a
pipeline (the evicted statement must not come back as if the server still had it, and a
skipped eviction Close must not leave a statement pgmux forgot), statement names longer than
PostgreSQL's small-message limit in Describe, total_bind_count (named statements only) and
the log line for a reused name."""

import psycopg
from psycopg import pq

from pgharness import timeout


def _pgmux(env, db, mps=1, **extra):
    settings = {"pool_mode": "transaction", "default_pool_size": 1,
                "max_prepared_statements": mps}
    settings.update(extra)
    return env.pgmux([db], settings)


def results(pg, n):
    """The next n results of a pipeline (None separators skipped) as statuses."""
    out = []
    while len(out) < n:
        r = pg.get_result()
        if r is not None:
            out.append(r)
    return out


@timeout(60)
def test_pipelined_eviction_keeps_statements_usable(env):
    """max_prepared_statements = 1 and several statements prepared in one pipeline: each
    evicts the one before while its Parse is still in flight; every one must still run."""
    db = env.database()
    px = _pgmux(env, db)
    with px.connect(db, prepare_threshold=5) as conn:
        # psycopg's pipeline, as PgBouncer's test_evict_statement_cache_pipeline_failure
        with conn.pipeline() as p:
            curs = [conn.cursor() for _ in range(2)]
            curs[0].execute("SELECT 1", prepare=True)
            curs[1].execute("bad query", prepare=True)
            try:
                p.sync()
                raise AssertionError("bad query did not fail")
            except psycopg.errors.SyntaxError:
                pass
            assert curs[0].fetchall() == [(1,)]
            curs[0].execute("SELECT 1", prepare=True)
            p.sync()
            assert curs[0].fetchall() == [(1,)]

        # libpq: three statements in one block, each evicting the one before, then all used
        pg = conn.pgconn
        pg.enter_pipeline_mode()
        for i in range(3):
            pg.send_prepare(f"s{i}".encode(), f"SELECT {i}".encode())
        pg.pipeline_sync()
        rs = results(pg, 4)
        assert [r.status for r in rs[:3]] == [pq.ExecStatus.COMMAND_OK] * 3
        assert rs[3].status == pq.ExecStatus.PIPELINE_SYNC
        for i in range(3):
            pg.send_query_prepared(f"s{i}".encode(), [])
        pg.pipeline_sync()
        rs = results(pg, 4)
        assert [r.status for r in rs[:3]] == [pq.ExecStatus.TUPLES_OK] * 3, \
            [r.error_message for r in rs[:3]]
        assert [r.get_value(0, 0) for r in rs[:3]] == [b"0", b"1", b"2"]
        pg.exit_pipeline_mode()


@timeout(60)
def test_skipped_eviction_close(env):
    """An error ahead of an eviction in the same block skips pgmux's Close: the statement
    stays on the server, and its next use must neither fail with 42P05 nor run stale."""
    db = env.database()
    px = _pgmux(env, db)
    with px.connect(db) as conn:
        pg = conn.pgconn
        assert pg.prepare(b"a", b"SELECT 'a'").status == pq.ExecStatus.COMMAND_OK
        pg.enter_pipeline_mode()
        pg.send_query_params(b"SELECT 1/0", None)
        pg.send_prepare(b"b", b"SELECT 'b'")     # evicts a: that Close is skipped
        pg.pipeline_sync()
        rs = results(pg, 3)
        assert rs[0].status == pq.ExecStatus.FATAL_ERROR
        assert rs[1].status == pq.ExecStatus.PIPELINE_ABORTED
        assert rs[2].status == pq.ExecStatus.PIPELINE_SYNC
        pg.exit_pipeline_mode()
        r = pg.exec_prepared(b"a", [])
        assert r.status == pq.ExecStatus.TUPLES_OK, r.error_message
        assert r.get_value(0, 0) == b"a"
        # b's Parse was skipped: like PostgreSQL, the name does not exist, and can be made
        assert pg.exec_prepared(b"b", []).status == pq.ExecStatus.FATAL_ERROR
        assert pg.prepare(b"b", b"SELECT 'b'").status == pq.ExecStatus.COMMAND_OK
        assert pg.exec_prepared(b"b", []).get_value(0, 0) == b"b"
        assert pg.exec_prepared(b"a", []).get_value(0, 0) == b"a"


@timeout(60)
def test_statement_name_longer_than_small_message_limit(env):
    """PostgreSQL refuses a Describe over 10000 bytes; pgmux renames a named statement's, so a
    16 kB name works as PostgreSQL's 63-byte prefix, while a Describe that would reach the
    server as it is (a portal's) is still refused."""
    db = env.database()
    px = _pgmux(env, db, mps=100)
    name = b"a" * 16384
    with px.connect(db) as conn:
        pg = conn.pgconn
        assert pg.prepare(name, b"SELECT $1::text").status == pq.ExecStatus.COMMAND_OK
        r = pg.describe_prepared(name)
        assert r.status == pq.ExecStatus.COMMAND_OK, r.error_message
        assert r.nparams == 1
        r = pg.exec_prepared(name, [b"abc"])
        assert r.status == pq.ExecStatus.TUPLES_OK and r.get_value(0, 0) == b"abc"
        # the 63-byte prefix is the same statement, as in PostgreSQL
        assert pg.exec_prepared(b"a" * 63, [b"x"]).get_value(0, 0) == b"x"
        assert conn.execute("SELECT 'still here'").fetchone()[0] == "still here"
    with px.connect(db) as conn:
        r = conn.pgconn.describe_portal(b"p" * 16384)
        assert r.status == pq.ExecStatus.FATAL_ERROR
    with px.connect(db) as conn:   # the server connection survived for the next client
        assert conn.execute("SELECT 2").fetchone()[0] == 2


@timeout(60)
def test_bind_count_counts_named_statements(env):
    db = env.database()
    px = _pgmux(env, db, mps=10)

    def binds():
        row = next(r for r in px.show("STATS") if r["database"] == db)
        return row["total_bind_count"]
    with px.connect(db, prepare_threshold=5) as conn:
        for _ in range(3):
            conn.execute("SELECT %s::int", (1,))          # unnamed: not counted
        before = binds()
        assert before == 0, before
        for _ in range(4):
            conn.execute("SELECT %s::int", (2,), prepare=True)
    n = binds()
    assert n == 4, n


@timeout(60)
def test_reused_name_logged_and_refused(env):
    db = env.database()
    px = _pgmux(env, db, mps=10)
    with px.connect(db) as conn:
        pg = conn.pgconn
        assert pg.prepare(b"test", b"SELECT 1").status == pq.ExecStatus.COMMAND_OK
        r = pg.prepare(b"test", b"SELECT 1")
        assert r.status == pq.ExecStatus.FATAL_ERROR
        assert r.error_field(pq.DiagnosticField.SQLSTATE) == b"42P05"
        px.wait_log(r"prepared statement 'test' was already prepared")
        # a name that would break the log line is written printable
        assert pg.prepare(b"x\nFAKE y", b"SELECT 1").status == pq.ExecStatus.COMMAND_OK
        assert pg.prepare(b"x\nFAKE y", b"SELECT 1").status == pq.ExecStatus.FATAL_ERROR
        px.wait_log(r"prepared statement 'x\?FAKE y' was already prepared")
        assert conn.execute("SELECT 3").fetchone()[0] == 3
