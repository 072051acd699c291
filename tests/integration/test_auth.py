"""Client authentication against an auth_file (trust, plain, md5, scram-sha-256), and pgmux's own
login to servers that demand cleartext, md5 or SCRAM passwords."""

from pgharness import md5_secret, run_async, timeout


def connect_error(px, db, user, password=None):
    """Tries an asyncpg login through pgmux; returns the exception (None on success)."""
    async def go():
        try:
            conn = await px.aconnect(db, user, password)
        except Exception as e:  # noqa: BLE001
            return e
        await conn.close()
        return None
    return run_async(go(), 30)


def login_ok(px, db, user, password=None):
    """Logs in with psycopg (libpq) and with asyncpg; returns current_user from both."""
    with px.connect(db, user, password) as c:
        u1 = c.execute("SELECT current_user").fetchone()[0]

    async def go():
        conn = await px.aconnect(db, user, password)
        try:
            return await conn.fetchval("SELECT session_user::text")
        finally:
            await conn.close()
    u2 = run_async(go(), 30)
    return u1, u2


def assert_auth_failed(err):
    assert err is not None, "login with a wrong password succeeded"
    msg = str(err).lower()
    assert "password authentication failed" in msg or "authentication failed" in msg, \
        f"unexpected error text: {err!r}"
    assert getattr(err, "sqlstate", None) == "28P01", \
        f"wrong SQLSTATE {getattr(err, 'sqlstate', None)!r} (want 28P01): {err!r}"


@timeout(60)
def test_auth_trust(env):
    db = env.database()
    user = env.role("au_trust")
    px = env.pgmux([db], {"auth_type": "trust"}, users={user: ""})
    assert login_ok(px, db, user) == (user, user)
    # a wrong password does not matter with trust
    with px.connect(db, user, "whatever") as c:
        assert c.execute("SELECT current_database()").fetchone()[0] == db


@timeout(60)
def test_auth_plain(env):
    db = env.database()
    user = env.role("au_plain", "Plain-pw1", method="password")  # server wants cleartext
    px = env.pgmux([db], {"auth_type": "plain"}, users={user: "Plain-pw1"})
    assert login_ok(px, db, user, "Plain-pw1") == (user, user)
    assert_auth_failed(connect_error(px, db, user, "wrong-pw"))


@timeout(60)
def test_auth_md5(env):
    db = env.database()
    user = env.role("au_md5", "Md5-pw1", method="md5")  # server wants md5, stores md5
    secret = md5_secret(user, "Md5-pw1")
    assert env.pg.role_secret(user) == secret
    # the auth_file holds only the md5 hash: pgmux must log in to the server with it
    px = env.pgmux([db], {"auth_type": "md5"}, users={user: secret})
    assert login_ok(px, db, user, "Md5-pw1") == (user, user)
    assert_auth_failed(connect_error(px, db, user, "Md5-pw2"))
    with px.connect(db, user, "Md5-pw1") as c:
        assert c.execute("SELECT 6 * 7").fetchone()[0] == 42


@timeout(60)
def test_auth_scram_secret_passthrough(env):
    db = env.database()
    user = env.role("au_scram", "Scram-pw1", method="scram-sha-256")
    secret = env.pg.role_secret(user)
    assert secret.startswith("SCRAM-SHA-256$")
    # the auth_file holds the server's SCRAM secret: the server login reuses the client's proof
    px = env.pgmux([db], {"auth_type": "scram-sha-256"}, users={user: secret})
    assert login_ok(px, db, user, "Scram-pw1") == (user, user)
    assert_auth_failed(connect_error(px, db, user, "Scram-pw2"))


@timeout(60)
def test_auth_scram_plaintext_userlist(env):
    db = env.database()
    user = env.role("au_scram", "Scram-pw2", method="scram-sha-256")
    px = env.pgmux([db], {"auth_type": "scram-sha-256"}, users={user: "Scram-pw2"})
    assert login_ok(px, db, user, "Scram-pw2") == (user, user)
    assert_auth_failed(connect_error(px, db, user, "nope"))


@timeout(60)
def test_auth_md5_plaintext_userlist(env):
    db = env.database()
    user = env.role("au_md5p", "Md5-pw9", method="md5")
    px = env.pgmux([db], {"auth_type": "md5"}, users={user: "Md5-pw9"})
    assert login_ok(px, db, user, "Md5-pw9") == (user, user)
    assert_auth_failed(connect_error(px, db, user, "md5-pw9"))


@timeout(60)
def test_auth_unknown_user(env):
    db = env.database()
    user = env.role("au_known", "pw-known", method="md5")
    px = env.pgmux([db], {"auth_type": "md5"}, users={user: "pw-known"})
    err = connect_error(px, db, "nobody_here", "pw-known")
    assert err is not None, "a user missing from the auth_file logged in"
    assert getattr(err, "sqlstate", None) in ("28P01", "28000"), \
        f"wrong SQLSTATE {getattr(err, 'sqlstate', None)!r}: {err!r}"
    assert login_ok(px, db, user, "pw-known") == (user, user)


@timeout(60)
def test_unknown_database(env):
    db = env.database()
    px = env.pgmux([db], {"auth_type": "trust"})
    err = connect_error(px, "no_such_db", "app")
    assert err is not None, "connected to a database that is not configured"
    assert "no_such_db" in str(err), f"error does not name the database: {err!r}"
    assert getattr(err, "sqlstate", None) == "3D000", \
        f"wrong SQLSTATE {getattr(err, 'sqlstate', None)!r} (want 3D000): {err!r}"
    with px.connect(db) as c:
        assert c.execute("SELECT current_database()").fetchone()[0] == db
