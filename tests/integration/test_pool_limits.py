"""Per-database and per-user limits and pool sizes, as PgBouncer documents them (config.md):
max_db_client_connections, max_user_client_connections, [users] pool_size / reserve_pool_size /
pool_mode, max_db_connections / max_user_connections with eviction, min_pool_size, the pool key
(the entry's forced user), the precedence [users] > [databases] > general key, and the SHOW
DATABASES / SHOW USERS columns that show them."""

import threading
import time

import psycopg

from pgharness import run_async, timeout, wait_for


def refused(px, db, user, password=None):
    """The error a login gets, or None when it got in (the connection is closed again).  Through
    asyncpg, whose errors carry the server's SQLSTATE (libpq's login failures do not)."""
    async def attempt():
        try:
            conn = await px.aconnect(db, user, password)
        except Exception as e:  # noqa: BLE001
            return e
        await conn.close()
        return None
    return run_async(attempt(), 30)


def row(rows, key, value):
    return [r for r in rows if r[key] == value][0]


@timeout(60)
def test_max_db_client_connections(env):
    """An entry's max_db_client_connections, and the general key for the others (0 in an entry
    falls through to it); refusals carry PgBouncer's text and 08P01; closing frees a place;
    SHOW DATABASES counts logged-in clients."""
    db = env.database()
    px = env.pgmux({"lim": env.db_entry(db, max_db_client_connections=2),
                    "zero": env.db_entry(db, max_db_client_connections=0),
                    "free": env.db_entry(db)}, {"pool_mode": "transaction"})
    conns = [px.connect("lim") for _ in range(2)]
    dbs = px.show("DATABASES")
    lim = row(dbs, "name", "lim")
    assert (lim["current_client_connections"], lim["max_client_connections"]) == (2, 2), lim
    assert row(dbs, "name", "free")["max_client_connections"] == 0
    for _ in range(2):   # the refused one is not counted
        err = refused(px, "lim", "app")
        assert err is not None and \
            "client connections exceeded (max_db_client_connections)" in str(err), repr(err)
        assert err.sqlstate == "08P01", err.sqlstate
    assert row(px.show("DATABASES"), "name", "lim")["current_client_connections"] == 2
    # the others are unaffected
    with px.connect("free") as c, px.connect("free") as c2, px.connect("free") as c3:
        assert c.execute("SELECT 1").fetchone()[0] == 1
        assert c2.execute("SELECT 2").fetchone()[0] == 2 and c3
    conns.pop().close()
    wait_for(lambda: row(px.show("DATABASES"), "name", "lim")["current_client_connections"] == 1,
             5)
    with px.connect("lim") as c:
        assert c.execute("SELECT 'in'").fetchone()[0] == "in"
    # the general key: every database without its own limit (an entry's 0 included)
    px.psql("pgmux", "SET max_db_client_connections = 1", user="postgres")
    keep = px.connect("zero")
    err = refused(px, "zero", "app")
    assert err is not None and "max_db_client_connections" in str(err), repr(err)
    assert row(px.show("DATABASES"), "name", "zero")["max_client_connections"] == 1
    # the entry's own limit still wins over the general one
    assert row(px.show("DATABASES"), "name", "lim")["max_client_connections"] == 2
    keep.close()
    for c in conns:
        c.close()


@timeout(60)
def test_max_db_client_connections_console(env):
    """The console counts as one database (listed as pgbouncer): an admin_users member is
    counted but never refused there, a stats_users member is refused."""
    db = env.database()
    px = env.pgmux([db], {"max_db_client_connections": 1, "stats_users": "app"})
    stats = psycopg.connect(px.dsn("pgmux", "app"), autocommit=True, connect_timeout=10)
    err = refused(px, "pgbouncer", "app")
    assert err is not None and \
        "client connections exceeded (max_db_client_connections)" in str(err), repr(err)
    # postgres is an admin: it gets in over the limit, and sees itself and the other counted
    con = row(px.show("DATABASES"), "name", "pgbouncer")
    assert con["current_client_connections"] == 2 and con["max_client_connections"] == 1, con
    stats.close()


@timeout(60)
def test_max_user_client_connections(env):
    """[users] max_user_client_connections overrides the general key; the count is per login
    user across databases and the console; SHOW USERS shows it; an admin on the console is
    never refused."""
    db = env.database()
    other = env.role("lim_other")
    px = env.pgmux({db: env.db_entry(db), "second": env.db_entry(db)},
                   {"pool_mode": "transaction", "stats_users": "app,postgres"},
                   users={"app": "", other: "", "postgres": ""},
                   user_settings={"app": "max_user_client_connections=2"})
    a = px.connect(db)
    b = px.connect("second")
    app = row(px.show("USERS"), "name", "app")
    assert (app["current_client_connections"], app["max_user_client_connections"]) == (2, 2), app
    err = refused(px, db, "app")
    assert err is not None and "client connections exceeded (max_user_client_connections)" \
        in str(err), repr(err)
    assert err.sqlstate == "08P01"
    err = refused(px, "pgmux", "app")   # the console counts too
    assert err is not None and "max_user_client_connections" in str(err), repr(err)
    b.close()
    wait_for(lambda: row(px.show("USERS"), "name", "app")["current_client_connections"] == 1, 5)
    with px.connect(db) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "app"
    # the general key for users without their own
    px.psql("pgmux", "SET max_user_client_connections = 1", user="postgres")
    with px.connect(db, other):
        err = refused(px, db, other)
        assert err is not None and "max_user_client_connections" in str(err), repr(err)
        assert row(px.show("USERS"), "name", other)["max_user_client_connections"] == 1
    assert row(px.show("USERS"), "name", "app")["max_user_client_connections"] == 2
    # postgres is an admin: the console lets it in whatever the count
    with psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True, connect_timeout=10):
        assert row(px.show("USERS"), "name", "postgres")["current_client_connections"] == 2
    a.close()


@timeout(60)
def test_client_count_after_failed_login(env):
    """A client whose server login fails, or who cannot authenticate, leaves no count behind;
    an unknown user never shows in SHOW USERS."""
    db = env.database()
    px = env.pgmux({"nodb": env.db_entry("no_such_database_here"), db: env.db_entry(db)},
                   users={"app": "", "postgres": ""}, user_settings={"app": "pool_size=3"})
    err = refused(px, "nodb", "app")
    assert err is not None and "no_such_database_here" in str(err), repr(err)
    assert row(px.show("USERS"), "name", "app")["current_client_connections"] == 0
    assert row(px.show("DATABASES"), "name", "nodb")["current_client_connections"] == 0
    err = refused(px, db, "nobody_here")
    assert err is not None and "authentication failed" in str(err), repr(err)
    assert not [u for u in px.show("USERS") if u["name"] == "nobody_here"]


@timeout(90)
def test_pool_size_precedence_and_forced_user(env):
    """pool_size and pool_mode of [users] apply to the pool's user: the login user, or the
    entry's forced user, in which case every client shares the forced user's one pool."""
    db = env.database()
    forced = env.role("lim_forced")
    px = env.pgmux({"plain": env.db_entry(db, pool_size=3),
                    "forced": env.db_entry(db, user=forced, pool_size=3)},
                   {"pool_mode": "transaction"},
                   users={"app": "", "postgres": "", forced: ""},
                   user_settings={"app": "pool_size=1 pool_mode=session"})

    def sleepers(dbname, n):
        ts = [threading.Thread(target=lambda: px.connect(dbname).execute(
            "SELECT pg_sleep(1)").connection.close()) for _ in range(n)]
        for t in ts:
            t.start()
        return ts

    ts = sleepers("plain", 3)
    wait_for(lambda: [r for r in px.show("POOLS") if r["database"] == "plain"
                      and r["cl_waiting"] == 2], 5, 0.05, "two clients waiting")
    p = row(px.show("POOLS"), "database", "plain")
    assert p["user"] == "app" and p["pool_size"] == 1 and p["pool_mode"] == "session", p
    assert env.pg.backends(db, "app") == 1
    for t in ts:
        t.join()
    # the forced user's pool: app's settings do not apply, the entry's do
    ts = sleepers("forced", 3)
    wait_for(lambda: env.pg.backends(db, forced) == 3, 5, 0.05, "3 servers for the forced user")
    pools = [r for r in px.show("POOLS") if r["database"] == "forced"]
    assert len(pools) == 1 and pools[0]["user"] == forced, pools
    assert pools[0]["pool_size"] == 3 and pools[0]["pool_mode"] == "transaction", pools
    for t in ts:
        t.join()


@timeout(60)
def test_min_pool_size_forced_user(env):
    """min_pool_size of an entry that forces a user is filled before any client comes; without
    a forced user a pool is kept at its minimum only while it has a client."""
    db = env.database()
    forced = env.role("lim_minp")
    px = env.pgmux({"forced": env.db_entry(db, user=forced, min_pool_size=2),
                    "plain": env.db_entry(db, min_pool_size=2)},
                   {"pool_mode": "transaction", "server_login_retry": 1},
                   users={"app": "", "postgres": "", forced: ""})
    wait_for(lambda: env.pg.backends(db, forced) == 2, 10, 0.1, "2 servers for the forced pool")
    time.sleep(0.5)
    assert env.pg.backends(db, "app") == 0
    with px.connect("plain") as c:
        c.execute("SELECT 1")
        wait_for(lambda: env.pg.backends(db, "app") == 2, 10, 0.1, "min_pool_size while in use")
    assert env.pg.backends(db, forced) == 2


@timeout(60)
def test_max_db_connections_evicts_idle_server(env):
    """At max_db_connections, a pool whose client waits gets room by closing the idle server
    of another pool of the database ("evicted"), as PgBouncer does; min_pool_size never
    evicts."""
    db = env.database()
    other = env.role("lim_evict")
    px = env.pgmux({db: env.db_entry(db, max_db_connections=1)},
                   {"pool_mode": "transaction", "server_idle_timeout": 600},
                   users={"app": "", "postgres": "", other: ""})
    with px.connect(db) as c:
        c.execute("SELECT 1")   # app's pool now holds the database's only server, idle
    mark = px.log_mark()
    with px.connect(db, other) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == other
    px.wait_log(r"closing because: evicted", mark)
    assert env.pg.backends(db, "app") == 0
    dbs = px.show("DATABASES")
    assert row(dbs, "name", db)["max_connections"] == 1


@timeout(60)
def test_reserve_pool_logged(env):
    """A reserve server opens once a client has waited reserve_pool_timeout, with PgBouncer's
    log line; [users] reserve_pool_size overrides the database's."""
    db = env.database()
    px = env.pgmux({db: env.db_entry(db, pool_size=1, reserve_pool_size=0)},
                   {"pool_mode": "transaction", "reserve_pool_timeout": 0.5},
                   user_settings={"app": "reserve_pool_size=1"})
    mark = px.log_mark()

    def sleep1():
        with px.connect(db) as c:
            c.execute("SELECT pg_sleep(2)")
    ts = [threading.Thread(target=sleep1) for _ in range(2)]
    for t in ts:
        t.start()
    px.wait_log(r"taking connection from reserve_pool", mark, 5)
    wait_for(lambda: env.pg.backends(db, "app") == 2, 5)
    for t in ts:
        t.join()
    users = px.show("USERS")
    app = row(users, "name", "app")
    assert (app["pool_size"], app["reserve_pool_size"]) == ("", "1"), app


@timeout(60)
def test_users_settings_follow_reload(env):
    """A reload that changes or drops a [users] line reaches the pools already made (the
    users keep a pointer into the new configuration, not the freed one)."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 4},
                   user_settings={"app": "pool_size=2 max_user_client_connections=5"})
    with px.connect(db) as c:
        c.execute("SELECT 1")
        assert row(px.show("POOLS"), "database", db)["pool_size"] == 2
        px.user_settings["app"] = "pool_size=3 pool_mode=session"
        px.write_config()
        px.reload()
        p = row(px.show("POOLS"), "database", db)
        assert p["pool_size"] == 3 and p["pool_mode"] == "session", p
        app = row(px.show("USERS"), "name", "app")
        assert app["max_user_client_connections"] == 0 and app["pool_size"] == "3", app
        del px.user_settings["app"]
        px.write_config()
        px.reload()
        p = row(px.show("POOLS"), "database", db)
        assert p["pool_size"] == 4 and p["pool_mode"] == "transaction", p
        # still counted, now as a user without a [users] line
        assert row(px.show("USERS"), "name", "app")["current_client_connections"] == 1
        assert c.execute("SELECT 'still'").fetchone()[0] == "still"
