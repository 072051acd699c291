"""Query cancellation through pgmux: the right query is cancelled, quickly, and the connection
keeps working."""

import threading
import time

import psycopg

from pgharness import timeout


def _cancel(env, mode):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": mode, "default_pool_size": 4})
    victim = px.connect(db)
    bystander = px.connect(db)
    victim_pid = victim.execute("SELECT pg_backend_pid()").fetchone()[0]
    out = {}

    def bystander_query():
        t0 = time.monotonic()
        try:
            out["bystander"] = bystander.execute("SELECT pg_sleep(1.5), 'done'").fetchone()[1]
        except Exception as e:  # noqa: BLE001
            out["bystander"] = e
        out["bystander_s"] = time.monotonic() - t0

    def cancel_soon():
        time.sleep(0.7)
        victim.cancel()

    tb = threading.Thread(target=bystander_query)
    tc = threading.Thread(target=cancel_soon)
    tb.start()
    tc.start()
    t0 = time.monotonic()
    err = None
    try:
        victim.execute("SELECT pg_sleep(30)")
    except psycopg.errors.QueryCanceled as e:
        err = e
    elapsed = time.monotonic() - t0
    tc.join()
    tb.join(10)
    assert err is not None, "pg_sleep(30) was not cancelled"
    assert err.sqlstate == "57014"
    assert elapsed < 5, f"cancel took {elapsed:.1f}s"
    # the other client's query was not cancelled
    assert out.get("bystander") == "done", out
    assert out["bystander_s"] >= 1.4
    # the cancelled connection still works (and the server is not stuck in a transaction)
    assert victim.execute("SELECT 40 + 2").fetchone()[0] == 42
    with victim.transaction():
        assert victim.execute("SELECT 'tx ok'").fetchone()[0] == "tx ok"
    if mode == "session":
        assert victim.execute("SELECT pg_backend_pid()").fetchone()[0] == victim_pid
    assert env.pg.sql1("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                       "query LIKE 'SELECT pg_sleep(30)%%' AND state = 'active'", (db,)) == 0
    victim.close()
    bystander.close()


@timeout(60)
def test_cancel_session_mode(env):
    _cancel(env, "session")


@timeout(60)
def test_cancel_transaction_mode(env):
    _cancel(env, "transaction")


@timeout(60)
def test_cancel_inside_transaction(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2})
    c = px.connect(db)
    c.execute("BEGIN")
    c.execute("CREATE TEMP TABLE x (a int)")
    threading.Timer(0.5, c.cancel).start()
    t0 = time.monotonic()
    try:
        c.execute("SELECT pg_sleep(30)")
        raise AssertionError("not cancelled")
    except psycopg.errors.QueryCanceled:
        pass
    assert time.monotonic() - t0 < 5
    try:
        c.execute("SELECT 1")
        raise AssertionError("aborted transaction accepted a query")
    except psycopg.errors.InFailedSqlTransaction:
        pass
    c.execute("ROLLBACK")
    assert c.execute("SELECT 7").fetchone()[0] == 7
    c.close()
