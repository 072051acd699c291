"""Parameter tracking in transaction mode: clients that share one server each keep their own
application_name, DateStyle, TimeZone (from the startup packet and from SET)."""

import os

from pgharness import timeout


def _show(c):
    row = c.execute("SELECT current_setting('application_name'), current_setting('DateStyle'), "
                    "current_setting('TimeZone'), pg_backend_pid()").fetchone()
    return row[:3], row[3]


@timeout(60)
def test_params_tracked_per_client(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 1})

    def connect(app, tz):
        # TimeZone goes in the startup packet through libpq's PGTZ
        old = os.environ.get("PGTZ")
        os.environ["PGTZ"] = tz
        try:
            return px.connect(db, application_name=app)
        finally:
            if old is None:
                del os.environ["PGTZ"]
            else:
                os.environ["PGTZ"] = old

    a = connect("client_a", "Asia/Tokyo")
    b = connect("client_b", "America/New_York")
    # DateStyle set with SET after login
    a.execute("SET DateStyle = 'SQL, DMY'")
    b.execute("SET DateStyle = 'German'")
    want_a = ("client_a", "SQL, DMY", "Asia/Tokyo")
    want_b = ("client_b", "German, DMY", "America/New_York")
    pids = set()
    for _ in range(3):
        va, pa = _show(a)
        vb, pb = _show(b)
        assert va == want_a, f"client A sees {va}"
        assert vb == want_b, f"client B sees {vb}"
        pids |= {pa, pb}
    assert len(pids) == 1, f"pool of 1 used {len(pids)} servers"
    # the values really apply to queries, not just to SHOW
    assert a.execute("SELECT to_char(timestamptz '2024-01-01 00:00:00+00', 'HH24')"
                     ).fetchone()[0] == "09"
    assert b.execute("SELECT to_char(timestamptz '2024-01-01 00:00:00+00', 'HH24')"
                     ).fetchone()[0] == "19"
    assert a.execute("SELECT date '2024-03-01'::text").fetchone()[0] == "01/03/2024"
    assert b.execute("SELECT date '2024-03-01'::text").fetchone()[0] == "01.03.2024"
    # a later SET is tracked too, and application_name SET by the client wins
    a.execute("SET TimeZone = 'Europe/Paris'")
    b.execute("SET application_name = 'client_b2'")
    assert _show(b)[0] == ("client_b2", "German, DMY", "America/New_York")
    assert _show(a)[0] == ("client_a", "SQL, DMY", "Europe/Paris")
    assert _show(b)[0] == ("client_b2", "German, DMY", "America/New_York")
    # the libpq side saw the ParameterStatus messages for its own values
    assert a.info.parameter_status("TimeZone") == "Europe/Paris"
    assert b.info.parameter_status("application_name") == "client_b2"
    # a third client with defaults does not inherit anybody's values
    with px.connect(db) as c:
        vals, pid = _show(c)
        assert pid in pids
        assert vals[0] == "" and vals[1] == "ISO, MDY", vals
        assert vals[2] == env.pg.sql1("SHOW TimeZone"), vals
    a.close()
    b.close()


@timeout(60)
def test_params_across_pool_of_two(env):
    """Many clients with distinct application_names over two servers, interleaved."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2})
    conns = [px.connect(db, application_name=f"app{i}") for i in range(8)]
    for i, c in enumerate(conns):
        c.execute(f"SET TimeZone = 'UTC{'+' if i % 2 else '-'}{i}'")
    for _ in range(3):
        for i, c in enumerate(conns):
            app, tz = c.execute("SELECT current_setting('application_name'), "
                                "current_setting('TimeZone')").fetchone()
            assert app == f"app{i}", (i, app)
            assert tz == f"UTC{'+' if i % 2 else '-'}{i}", (i, tz)
    servers = env.pg.sql1("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                          "AND backend_type = 'client backend'", (db,))
    assert servers <= 2
    for c in conns:
        c.close()
