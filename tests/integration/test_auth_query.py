"""auth_user / auth_query / auth_dbname, to PgBouncer's documentation: a user the auth_file lacks
is looked up on the server (as auth_user, with a parameterised query that never blocks other
clients); the secret found checks the client and logs pgmux in to the server.  Also PgBouncer's
login error words: no such user, "trust" authentication failed, SASL authentication failed,
bouncer config error, and an unknown database refused only after authentication."""

import threading
import time

import psycopg

from pgharness import md5_secret, run_async, timeout


def login_error(px, db, user, password=None):
    """The psycopg error of a login through pgmux (None when it succeeds)."""
    try:
        with px.connect(db, user, password) as c:
            c.execute("SELECT 1")
    except psycopg.OperationalError as e:
        return e
    return None


def sqlstate(px, db, user, password=None):
    """The SQLSTATE of a failed login, through asyncpg (libpq's connect errors carry none)."""
    async def go():
        try:
            conn = await px.aconnect(db, user, password)
        except Exception as e:  # noqa: BLE001
            return getattr(e, "sqlstate", repr(e))
        await conn.close()
        return None
    return run_async(go(), 30)


def setup(env, settings=None, auth_method="scram-sha-256", entry_extra=None):
    """A database, an auth_user that reads pg_authid (must give its password to the server: it
    is in the scram group), and a pgmux whose auth_file holds only that auth_user."""
    db = env.database()
    checker = env.role("aq_check", "Check-pw1", method=auth_method, superuser=True)
    entries = {db: env.db_entry(db, **(entry_extra or {}))}
    s = {"auth_type": "md5", "auth_user": checker}
    s.update(settings or {})
    px = env.pgmux(entries, s, users={checker: "Check-pw1"})
    return db, checker, px


@timeout(90)
def test_auth_query_scram_and_md5_users(env):
    db, _, px = setup(env)
    # a SCRAM user (server wants SCRAM): client SCRAM against the looked-up secret, then the
    # server login by pass-through of the client's key
    su = env.role("aq_scram", "Scram-pw1", method="scram-sha-256")
    with px.connect(db, su, "Scram-pw1") as c:
        assert c.execute("SELECT current_user").fetchone()[0] == su
    # asyncpg too
    async def go():
        conn = await px.aconnect(db, su, "Scram-pw1")
        try:
            return await conn.fetchval("SELECT session_user::text")
        finally:
            await conn.close()
    assert run_async(go(), 30) == su
    err = login_error(px, db, su, "Scram-pw2")
    assert err is not None and "SASL authentication failed" in str(err), err
    assert sqlstate(px, db, su, "Scram-pw2") == "28P01"
    # an md5 user (server wants md5): md5 exchange, then the server login with the md5 hash
    mu = env.role("aq_md5", "Md5-pw1", method="md5")
    assert env.pg.role_secret(mu) == md5_secret(mu, "Md5-pw1")
    with px.connect(db, mu, "Md5-pw1") as c:
        assert c.execute("SELECT current_user").fetchone()[0] == mu
    err = login_error(px, db, mu, "Md5-pw2")
    assert err is not None and "password authentication failed" in str(err), err
    assert sqlstate(px, db, mu, "Md5-pw2") == "28P01"
    # a role the query does not find: PgBouncer's words
    err = login_error(px, db, "aq_nobody", "x")
    assert err is not None and "no such user" in str(err), err
    log = px.log_text()
    assert "closing because: no such user (age=" in log, log[-2000:]
    # never a secret in the log
    assert "SCRAM-SHA-256$" not in log and md5_secret(mu, "Md5-pw1") not in log


@timeout(90)
def test_auth_query_sees_changes_at_once(env):
    """The query runs at each login: VALID UNTIL in the past, or a new password, counts at once."""
    db, _, px = setup(env)
    u = env.role("aq_valid", "Valid-pw1", method="scram-sha-256")
    with px.connect(db, u, "Valid-pw1") as c:
        c.execute("SELECT 1")
    env.pg.sql(f"ALTER ROLE {u} VALID UNTIL '1999-01-01'")
    err = login_error(px, db, u, "Valid-pw1")
    assert err is not None and "authentication failed" in str(err), err
    env.pg.sql(f"ALTER ROLE {u} VALID UNTIL 'infinity'")
    with px.connect(db, u, "Valid-pw1") as c:
        c.execute("SELECT 1")
    env.pg.sql(f"ALTER ROLE {u} PASSWORD 'Valid-pw2'")
    assert login_error(px, db, u, "Valid-pw1") is not None
    with px.connect(db, u, "Valid-pw2") as c:
        c.execute("SELECT 1")


@timeout(90)
def test_auth_query_name_is_a_parameter(env):
    """A user name that would change the statement if it were spliced into the SQL finds
    nothing: the name travels as $1.  With a query that compares the name as text, a quote in
    it cannot close the literal."""
    db, _, px = setup(env, {"auth_query": "SELECT rolname::text, rolpassword FROM pg_authid "
                                          "WHERE rolname::text = $1"})
    su = env.role("aq_inj", "Inj-pw1", method="scram-sha-256")
    for evil in ("x' OR rolname <> '", "x'; DROP TABLE t; --", su + "'--", "$1", "\\' OR 1=1 --"):
        err = login_error(px, db, evil, "Inj-pw1")
        assert err is not None and "no such user" in str(err), (evil, err)
    assert "auth_query failed" not in px.log_text()
    with px.connect(db, su, "Inj-pw1") as c:
        c.execute("SELECT 1")


@timeout(90)
def test_auth_query_does_not_block_other_clients(env):
    """While a lookup takes a second, a client from the auth_file logs in and gets answers."""
    db, checker, px = setup(env, {"auth_query": "SELECT rolname, rolpassword FROM pg_authid, "
                                                "pg_sleep(1.5) WHERE rolname = $1"})
    su = env.role("aq_slow", "Slow-pw1", method="scram-sha-256")
    done = {}

    def slow():
        t0 = time.monotonic()
        with px.connect(db, su, "Slow-pw1") as c:
            c.execute("SELECT 1")
        done["slow"] = time.monotonic() - t0
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)   # the lookup is under way
    t0 = time.monotonic()
    with px.connect(db, checker, "Check-pw1") as c:
        for _ in range(20):
            assert c.execute("SELECT 1").fetchone()[0] == 1
    fast = time.monotonic() - t0
    t.join(30)
    assert done.get("slow", 0) >= 1.4, done
    assert fast < 1.0, f"a client of the auth_file waited {fast:.2f}s behind a lookup"


@timeout(90)
def test_auth_dbname_and_config_errors(env):
    """auth_dbname names the entry whose server runs the query; per database keys override the
    general ones; a missing, reserved or disabled authentication database is refused with
    PgBouncer's words."""
    db = env.database()
    checker = env.role("aq_check", "Check-pw1", method="scram-sha-256", superuser=True)
    su = env.role("aq_db", "Db-pw1", method="scram-sha-256")
    entries = {
        db: env.db_entry(db),
        "authsrc": env.db_entry("postgres", auth_user=checker),
        "viaauth": env.db_entry(db, auth_user=checker, auth_dbname="authsrc"),
        "missing": env.db_entry(db, auth_user=checker, auth_dbname="nosuch_authdb"),
        "reserved": env.db_entry(db, auth_user=checker, auth_dbname="pgbouncer"),
        "badquery": env.db_entry(db, auth_user=checker,
                                 auth_query="'SELECT usename, passwd FROM not_pg_shadow WHERE usename = $1'"),
    }
    px = env.pgmux(entries, {"auth_type": "md5"}, users={checker: "Check-pw1", "postgres": "Adm-pw1"})
    # no auth_user for db itself: an unknown user fails as any wrong password does
    err = login_error(px, db, su, "Db-pw1")
    assert err is not None and "password authentication failed" in str(err), err
    with px.connect("viaauth", su, "Db-pw1") as c:
        assert c.execute("SELECT current_user").fetchone()[0] == su
    err = login_error(px, "missing", su, "Db-pw1")
    assert err is not None and "bouncer config error" in str(err), err
    assert 'authentication database "nosuch_authdb" is not configured' in px.log_text()
    err = login_error(px, "reserved", su, "Db-pw1")
    assert err is not None and "bouncer config error" in str(err), err
    assert 'cannot use the reserved "pgbouncer" database as an auth_dbname' in px.log_text()
    err = login_error(px, "badquery", su, "Db-pw1")
    assert err is not None and "bouncer config error" in str(err), err
    assert '"not_pg_shadow" does not exist' in px.log_text()
    px.psql("pgbouncer", "DISABLE authsrc", user="postgres", password="Adm-pw1")
    err = login_error(px, "viaauth", su, "Db-pw1")
    assert err is not None and 'authentication database "authsrc" is disabled' in str(err), err
    # the general auth_dbname may not be a console name either: the file is refused
    px.write_config(auth_dbname="pgbouncer")
    r = px.psql("pgbouncer", "RELOAD", user="postgres", password="Adm-pw1", check=False)
    assert r.returncode != 0
    assert 'cannot use the reserved "pgbouncer" database as an auth_dbname' in px.log_text()


@timeout(90)
def test_login_error_words(env):
    """PgBouncer's words for failed logins, which operators grep for."""
    db = env.database()
    u = env.role("aq_words", "Words-pw1", method="scram-sha-256")
    px = env.pgmux([db], {"auth_type": "trust"}, users={u: "Words-pw1"})
    err = login_error(px, db, "aq_nosuch")
    assert err is not None and '"trust" authentication failed' in str(err), err
    assert sqlstate(px, db, "aq_nosuch") == "28000"
    # an unknown database is named only after the password checked out
    px.write_config(auth_type="scram-sha-256")
    px.reload()
    err = login_error(px, "aq_nosuchdb", u, "wrong")
    assert err is not None and "SASL authentication failed" in str(err), err
    err = login_error(px, "aq_nosuchdb", u, "Words-pw1")
    assert err is not None and "no such database: aq_nosuchdb" in str(err), err
    assert sqlstate(px, "aq_nosuchdb", u, "Words-pw1") == "3D000"
    log = px.log_text()
    assert 'closing because: "trust" authentication failed (age=' in log
    assert "closing because: no such database: aq_nosuchdb (age=" in log


@timeout(90)
def test_auth_query_server_login_failure_reaches_client(env):
    """The auth database's server refuses the connection: the client gets the server's words
    and the log PgBouncer's line."""
    db = env.database()
    checker = env.role("aq_check", "Check-pw1", method="scram-sha-256", superuser=True)
    entries = {"ghost": env.db_entry("aq_no_such_server_db", auth_user=checker)}
    px = env.pgmux(entries, {"auth_type": "md5"}, users={checker: "Check-pw1"})
    err = login_error(px, "ghost", "aq_someone", "x")
    assert err is not None and 'database "aq_no_such_server_db" does not exist' in str(err), err
    assert 'server login failed: FATAL database "aq_no_such_server_db" does not exist' in px.log_text()
    del db


@timeout(90)
def test_server_refusal_fails_waiting_clients(env):
    """A server that refuses the pool's credentials fails the pool's waiting clients at once with
    its words, even while another server of the pool is busy (PgBouncer's fast closure), rather
    than after query_wait_timeout."""
    db = env.database()
    u = env.role("aq_rot", "Rot-pw1", method="scram-sha-256")
    px = env.pgmux([db], {"auth_type": "plain", "pool_mode": "transaction",
                          "default_pool_size": 1, "query_wait_timeout": 60},
                   users={u: "Rot-pw1", "postgres": "Adm-pw1"})
    holder = psycopg.connect(px.dsn(db, u, "Rot-pw1"), autocommit=False)
    holder.execute("SELECT 1")   # holds the pool's one server in a transaction
    env.pg.sql(f"ALTER ROLE {u} PASSWORD 'Rot-pw2'")
    results = {}

    def waiter(i):
        t0 = time.monotonic()
        try:
            with psycopg.connect(px.dsn(db, u, "Rot-pw1"), autocommit=True, connect_timeout=30) as c:
                c.execute("SELECT 1")
            results[i] = ("ok", time.monotonic() - t0)
        except psycopg.OperationalError as e:
            results[i] = (str(e), time.monotonic() - t0)
    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)   # all three wait for the busy server
    px.psql("pgbouncer", "SET default_pool_size = 2", user="postgres", password="Adm-pw1")
    for t in threads:
        t.join(40)
    holder.rollback()
    holder.close()
    assert len(results) == 3, results
    for msg, took in results.values():
        assert "password authentication failed" in msg, results
        assert took < 10, results
    assert "server login failed: FATAL password authentication failed" in px.log_text()
