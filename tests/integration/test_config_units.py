"""Time-valued keys take PostgreSQL's units (500ms, 5min) as well as plain seconds: read from the
file, set on the console, and acted on (a 500ms query_timeout ends a long query)."""

import time

import psycopg

from pgharness import timeout


def _config(admin):
    return {r[0]: r[1] for r in admin.execute("SHOW CONFIG").fetchall()}


@timeout(60)
def test_time_units_in_file_and_console(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "query_timeout": "500ms",
                          "client_login_timeout": "1min", "server_idle_timeout": "2h",
                          "server_check_delay": "1.5 s", "stats_period": "30"})
    with psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True) as admin:
        cfg = _config(admin)
        assert cfg["query_timeout"] == "0.5", cfg["query_timeout"]
        assert cfg["client_login_timeout"] == "60", cfg["client_login_timeout"]
        assert cfg["server_idle_timeout"] == "7200", cfg["server_idle_timeout"]
        assert cfg["server_check_delay"] == "1.5", cfg["server_check_delay"]
        assert cfg["stats_period"] == "30", cfg["stats_period"]
        # the console's SET takes the same units, and refuses an unknown one by name
        admin.execute("SET server_idle_timeout = '90s'")
        assert _config(admin)["server_idle_timeout"] == "90"
        try:
            admin.execute("SET server_idle_timeout = '5 sec'")
            raise AssertionError("SET accepted an unknown time unit")
        except psycopg.Error as e:
            assert "unknown time unit" in str(e), str(e)
        assert _config(admin)["server_idle_timeout"] == "90"

    # the 500ms query_timeout acts: a 5-second query is ended well before it finishes
    with px.connect(db) as c:
        t0 = time.monotonic()
        try:
            c.execute("SELECT pg_sleep(5)")
            raise AssertionError("a 5 s query outlived query_timeout = 500ms")
        except psycopg.Error as e:
            took = time.monotonic() - t0
            assert took < 4, (took, str(e))
            assert "query_timeout" in str(e) or "query timeout" in str(e), str(e)


@timeout(30)
def test_unknown_time_unit_refused_at_start(env):
    db = env.database()
    px = env.pgmux([db], {"query_timeout": "5 parsecs"}, start=False)
    px.start(wait=False)
    assert px.wait_exit(15) == 1
    text = px.output_text() + px.log_text()
    assert "query_timeout" in text and "unknown time unit" in text, text
