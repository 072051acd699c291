"""PgBouncer drop-in behaviour: its long command-line options and -u, auth_file secrets as long
as PgBouncer's, and the console login of user pgbouncer by Unix-socket peer credentials."""

import os
import subprocess
import time

import psycopg

from pgharness import (IS_ROOT, SERVICE_USER, Skip, as_service_user, pg_bin, timeout, wait_for,
                       _service_ids)

LONG_SECRET = "a" * 65530   # PgBouncer's longest: MAX_PASSWORD (65531) less the terminator


def psql_unix(px, sql, user="pgbouncer", dbname="pgbouncer", as_service=False):
    """psql over pgmux's Unix socket, as root (pgmux's own uid in these tests) or as the
    service user (another uid).  -w: a password prompt would mean we were not let in."""
    cmd = [pg_bin("psql"), "-X", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-h", str(px.dir),
           "-p", str(px.port), "-U", user, "-d", dbname, "-c", sql]
    if as_service:
        cmd = as_service_user(cmd)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=30, env=dict(os.environ, PGCONNECT_TIMEOUT="10"))


def proc_uids(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    return []


@timeout(60)
def test_long_options(env):
    r = subprocess.run([os.environ.get("PGMUX_BIN", "src/pgmux"), "--version"],
                       stdout=subprocess.PIPE, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("pgmux "), r
    r = subprocess.run([os.environ.get("PGMUX_BIN", "src/pgmux"), "--help"],
                       stdout=subprocess.PIPE, text=True, timeout=10)
    assert r.returncode == 0 and "--user" in r.stdout and "--quiet" in r.stdout, r
    r = subprocess.run([os.environ.get("PGMUX_BIN", "src/pgmux"), "--no-such-option", "x.ini"],
                       stderr=subprocess.PIPE, text=True, timeout=10)
    assert r.returncode == 2, r
    # PgBouncer's suite starts the pooler exactly like this
    db = env.database()
    px = env.pgmux([db], args=("--quiet", "--verbose"))
    with px.connect(db) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    # --quiet: nothing on stderr/stdout, the log still gets written
    assert px.output_text().strip() == "", px.output_text()
    assert px.log_text()


@timeout(60)
def test_user_option_refused_without_root(env):
    if not IS_ROOT:
        raise Skip("needs root to run pgmux as another user")
    db = env.database()
    px = env.pgmux([db], start=False)
    os.chmod(px.ini, 0o644)
    r = subprocess.run(as_service_user([px.binary, "-u", "root", str(px.ini)]),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=10)
    assert r.returncode == 1, r
    assert "needs root" in r.stdout, r.stdout


@timeout(90)
def test_user_option_drops_privileges_and_peer_admin(env):
    """-u: pgmux binds as root, then runs as the service user; from then on the console's
    peer-credential admin is that user, and root (another uid now) is not let in by it."""
    if not IS_ROOT:
        raise Skip("needs root to run pgmux as another user")
    db = env.database()
    px = env.pgmux([db], {"admin_users": "", "stats_users": ""}, args=("--user", SERVICE_USER))
    uid, _ = _service_ids()
    assert proc_uids(px.proc.pid) == [uid] * 4, proc_uids(px.proc.pid)
    r = psql_unix(px, "SHOW VERSION", as_service=True)
    assert r.returncode == 0, r.stderr
    r = psql_unix(px, "RELOAD", as_service=True)
    assert r.returncode == 0, r.stderr
    r = psql_unix(px, "SHOW VERSION")   # root: not pgmux's uid any more
    assert r.returncode != 0
    with px.connect(db) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


@timeout(90)
def test_console_peer_admin(env):
    """User pgbouncer over the Unix socket from pgmux's own uid is an admin without a
    password; over TCP, from another uid, or under another name it is not."""
    db = env.database()
    # md5 everywhere: a login that skipped the peer check would have to know a password
    px = env.pgmux([db], {"auth_type": "md5", "admin_users": "", "stats_users": "watcher"},
                   users={"pgbouncer": "pgb-pw", "watcher": "w-pw", "nobody_special": "n-pw"})
    r = psql_unix(px, "SHOW VERSION")
    assert r.returncode == 0, r.stderr
    r = psql_unix(px, "RELOAD")            # a control command: only admins reach it
    assert r.returncode == 0, r.stderr
    r = psql_unix(px, "PAUSE " + db)
    assert r.returncode == 0, r.stderr
    r = psql_unix(px, "RESUME " + db)
    assert r.returncode == 0, r.stderr
    # the same uid under another name gets no password-free login
    r = psql_unix(px, "SHOW VERSION", user="nobody_special")
    assert r.returncode != 0 and "password" in r.stderr.lower(), r.stderr
    # TCP, even with the right password: authenticated, but not an admin (nor in stats_users)
    try:
        with psycopg.connect(px.dsn("pgbouncer", "pgbouncer", "pgb-pw"), autocommit=True,
                             connect_timeout=10) as c:
            c.execute("RELOAD")
        raise AssertionError("pgbouncer over TCP got into the console")
    except psycopg.Error as e:
        assert "not allowed" in str(e) or "permission denied" in str(e), e
    # TCP without a password: refused at authentication
    try:
        psycopg.connect(px.dsn("pgbouncer", "pgbouncer"), connect_timeout=10).close()
        raise AssertionError("pgbouncer over TCP without a password got in")
    except psycopg.OperationalError as e:
        assert "password" in str(e).lower(), e
    # a stats user may look but not control
    with psycopg.connect(px.dsn("pgbouncer", "watcher", "w-pw"), autocommit=True,
                         connect_timeout=10) as c:
        c.execute("SHOW VERSION")
        try:
            c.execute("RELOAD")
            raise AssertionError("a stats user ran RELOAD")
        except psycopg.errors.InsufficientPrivilege:
            pass
    if IS_ROOT:
        # another uid over the Unix socket: no password-free login
        r = psql_unix(px, "SHOW VERSION", as_service=True)
        assert r.returncode != 0 and "password" in r.stderr.lower(), r.stderr


@timeout(120)
def test_long_secret(env):
    """A 65530-byte password (PgBouncer's longest) works for the client's login (plain and
    md5) and for pgmux's SCRAM login to the server; one byte more fails as a wrong password."""
    db = env.database()
    user = env.role("longpw", LONG_SECRET, method="scram-sha-256")
    for auth_type in ("plain", "md5", "scram-sha-256"):
        px = env.pgmux([db], {"auth_type": auth_type, "pool_mode": "session"},
                       users={user: LONG_SECRET})
        with px.connect(db, user, LONG_SECRET) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == user
        try:
            px.connect(db, user, "X" + LONG_SECRET).close()
            raise AssertionError("a password one byte too long got in")
        except psycopg.OperationalError as e:
            assert "password authentication failed" in str(e) or "SASL authentication failed" in str(e), e
        px.stop()


@timeout(60)
def test_secret_too_long_refused(env):
    db = env.database()
    px = env.pgmux([db], users={"u1": "x", "toolong": "Q" * 65531}, start=False)
    px.start(wait=False)
    assert px.wait_exit(15) == 1
    text = px.output_text() + px.log_text()
    assert "secret longer than 65530 bytes" in text, text
    assert "QQQQQQQQ" not in text


@timeout(60)
def test_console_unknown_target_errors(env):
    """Unknown targets and a failed RELOAD answer with PgBouncer's texts (and, for the
    targets, its SQLSTATE 08P01), so scripts written against PgBouncer keep working."""
    db = env.database()
    px = env.pgmux([db])
    with psycopg.connect(px.dsn("pgbouncer", "postgres"), autocommit=True,
                         connect_timeout=10) as c:
        for sql, state, text in (("KILL dne", "08P01", "no such database: dne"),
                                 ("PAUSE dne", "08P01", "no such database: dne"),
                                 ("KILL_CLIENT 1000", "08P01", "client not found"),
                                 ("KILL_CLIENT not_an_id", "08P01",
                                  "invalid client pointer supplied")):
            try:
                c.execute(sql)
                raise AssertionError(f"{sql} succeeded")
            except psycopg.Error as e:
                assert e.sqlstate == state and text in str(e), (sql, e.sqlstate, str(e))
        good = px.ini.read_text()
        px.write_config(raw=good + "\nserver_lifetime = not_a_number\n")
        try:
            c.execute("RELOAD")
            raise AssertionError("RELOAD of a broken file succeeded")
        except psycopg.errors.ConfigFileError as e:
            assert "RELOAD failed, see logs for additional details" in str(e), e
            assert "server_lifetime" in str(e), e
        px.write_config(raw=good)
        c.execute("RELOAD")


@timeout(60)
def test_console_pgbouncer_listings(env):
    """Every SHOW that PgBouncer's console knows gets an answer: features pgmux lacks
    (peering, a DNS cache) as PgBouncer's columns with no rows."""
    db = env.database()
    px = env.pgmux([db])
    with px.connect(db) as app:
        app.execute("SELECT 1")
        with psycopg.connect(px.dsn("pgbouncer", "postgres"), autocommit=True,
                             connect_timeout=10) as c:
            empty = {"PEERS": ["peer_id", "host", "port", "pool_size"],
                     "PEER_POOLS": ["peer_id", "cl_active_cancel_req", "cl_waiting_cancel_req",
                                    "sv_active_cancel", "sv_login"],
                     "DNS_HOSTS": ["hostname", "ttl", "addrs"],
                     "DNS_ZONES": ["zonename", "serial", "count"]}
            for what, cols in empty.items():
                cur = c.execute(f"SHOW {what}")
                assert [d.name for d in cur.description] == cols, what
                assert cur.fetchall() == [], what
            socks = c.execute("SHOW SOCKETS")
            scols, srows = [d.name for d in socks.description], socks.fetchall()
            act = c.execute("SHOW ACTIVE_SOCKETS")
            assert [d.name for d in act.description] == scols
            assert len(act.fetchall()) == len(srows) >= 2   # the app and this console at least
