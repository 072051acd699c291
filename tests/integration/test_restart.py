"""PostgreSQL restarted under pgmux: clients see errors, then pgmux serves again."""

import time

import psycopg

from pgharness import timeout


def _restart(env, mode):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": mode, "default_pool_size": 3,
                          "server_login_retry": 1, "server_check_delay": 0})
    c = px.connect(db)
    start1 = c.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    # make sure there are idle servers in the pool as well
    for _ in range(3):
        with px.connect(db) as o:
            o.execute("SELECT 1")
    env.pg.restart(mode="fast")
    # the client whose server went away gets an error, not a hang or a wrong answer
    err = None
    try:
        c.execute("SELECT 1")
        if mode == "transaction":
            # in transaction mode the client had no server: a fresh one may serve it
            c.execute("SELECT 1")
    except psycopg.Error as e:
        err = e
    if mode == "session":
        assert err is not None, "session client did not notice the server restart"
    c.close()
    # pgmux serves again once PostgreSQL is back
    deadline = time.monotonic() + 30
    last = None
    while time.monotonic() < deadline:
        try:
            with px.connect(db, connect_timeout=5) as n:
                start2 = n.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
                break
        except psycopg.Error as e:
            last = e
            time.sleep(0.3)
    else:
        raise AssertionError(f"pgmux did not recover within 30s: {last!r}")
    assert start2 > start1
    # and keeps serving: fresh clients succeed at once
    for i in range(10):
        with px.connect(db) as n:
            assert n.execute("SELECT %s::int + 1", (i,)).fetchone()[0] == i + 1


@timeout(90)
def test_restart_session_mode(env):
    _restart(env, "session")


@timeout(90)
def test_restart_transaction_mode(env):
    _restart(env, "transaction")
