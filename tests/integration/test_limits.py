"""max_client_conn and query_wait_timeout."""

import time

import psycopg

from pgharness import run_async, timeout


@timeout(60)
def test_max_client_conn(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "max_client_conn": 4})
    conns = [px.connect(db) for _ in range(4)]
    for i, c in enumerate(conns):
        assert c.execute("SELECT %s::int", (i,)).fetchone()[0] == i

    async def fifth():
        try:
            conn = await px.aconnect(db)
        except Exception as e:  # noqa: BLE001
            return e
        await conn.close()
        return None
    err = run_async(fifth(), 30)
    assert err is not None, "a 5th client got in with max_client_conn = 4"
    assert "no more connections allowed (max_client_conn)" in str(err), repr(err)
    assert getattr(err, "sqlstate", None) == "53300", \
        f"wrong SQLSTATE {getattr(err, 'sqlstate', None)!r} (want 53300): {err!r}"
    # psycopg/libpq sees the same refusal
    try:
        psycopg.connect(px.dsn(db), connect_timeout=10).close()
        raise AssertionError("libpq client got in over max_client_conn")
    except psycopg.OperationalError as e:
        assert "max_client_conn" in str(e)
    # the existing clients are unaffected, and a slot frees when one leaves
    assert conns[0].execute("SELECT 'ok'").fetchone()[0] == "ok"
    conns.pop().close()
    time.sleep(0.2)
    with px.connect(db) as c:
        assert c.execute("SELECT 'in'").fetchone()[0] == "in"
    for c in conns:
        c.close()


@timeout(60)
def test_query_wait_timeout(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 1,
                          "query_wait_timeout": 2})
    holder = px.connect(db)
    holder.execute("BEGIN")
    holder.execute("SELECT 1")  # now holds the only server
    waiter = px.connect(db)
    t0 = time.monotonic()
    err = None
    try:
        waiter.execute("SELECT 'should not run'")
    except psycopg.Error as e:
        err = e
    elapsed = time.monotonic() - t0
    assert err is not None, "query ran although the only server was busy"
    assert "query_wait_timeout" in str(err), repr(err)
    assert 1.5 <= elapsed <= 6, f"query_wait_timeout = 2 fired after {elapsed:.1f}s"
    # the holder is unaffected and, once it commits, others are served again
    assert holder.execute("SELECT 'holder'").fetchone()[0] == "holder"
    holder.execute("COMMIT")
    with px.connect(db) as c:
        assert c.execute("SELECT 'next'").fetchone()[0] == "next"
    holder.close()
    waiter.close()
