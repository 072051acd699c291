"""Hostile-client attacks on the drop-in features (auth_query, replication, options, limits,
status page)."""

import socket
import struct
import threading
import time

import rawpg
from pgharness import TEST_USER, timeout, wait_for


def _raw(px, db, user, extra=None, timeout_s=10):
    s = socket.create_connection(("127.0.0.1", px.port), timeout=timeout_s)
    s.sendall(rawpg.startup_packet(dict({"user": user, "database": db}, **(extra or {}))))
    return s


def _read_all(s, t=5.0):
    s.settimeout(t)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except (socket.timeout, ConnectionResetError):
        pass
    return out


def _aq_setup(env, settings=None):
    db = env.database()
    checker = env.role("aq_check", "Check-pw1", method="scram-sha-256", superuser=True)
    s = {"auth_type": "md5", "auth_user": checker}
    s.update(settings or {})
    px = env.pgmux({db: env.db_entry(db)}, s, users={checker: "Check-pw1"})
    return db, checker, px


@timeout(90)
def test_aq_many_unknown_users_vanish(env):
    db, _, px = _aq_setup(env)
    socks = []
    for i in range(60):
        name = ("u%d" % i) + ("x" * (i * 50))
        socks.append(_raw(px, db, name))
    # half vanish at once, mid-lookup; others send junk before being asked anything
    for i, s in enumerate(socks):
        if i % 3 == 0:
            s.close()
        elif i % 3 == 1:
            s.sendall(rawpg.message(b"p", b"junk\0"))
    for i, s in enumerate(socks):
        if i % 3:
            _read_all(s, 3)
            s.close()
    # invalid UTF-8 and odd bytes in the name
    for name in (b"\xff\xfe", b"a'b\"c\\", b"\x01\x02"):
        s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
        body = struct.pack("!I", rawpg.PROTOCOL_V3) + b"user\0" + name + b"\0database\0" + db.encode() + b"\0\0"
        s.sendall(struct.pack("!I", len(body) + 4) + body)
        print(name, _read_all(s, 3)[:200])
        s.close()
    assert px.alive()
    log = px.log_text()
    assert "Check-pw1" not in log


@timeout(60)
def test_repl_leaves_in_login(env):
    """A replication client that hangs up while its own server is still logging in: closing
    that server launched again (repl_launch) while the client was still on the waiting list
    without a server, so a new server was opened for the dying client and kept a pointer to it
    (heap-use-after-free in repl_put_startup once the client was freed)."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction"})
    for kind in ("database", "true") * 5:
        s = _raw(px, db, "postgres", {"replication": kind})
        s.close()
    time.sleep(1.0)
    assert px.alive()
    with px.connect(db) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    # no server is left over for a client that is gone
    wait_for(lambda: env.pg.sql1("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE backend_type = 'walsender'") == 0, 10,
             what="walsenders gone")


@timeout(90)
def test_repl_hostile(env):
    """Hostile replication clients (vanishing, flooding before the link, to the console, odd
    values, junk mid-stream then vanishing): pgmux stays up, no client ever gets a walsender,
    and the counts go back to zero."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2, "max_db_connections": 2})
    # 1. replication client that vanishes at once, many times
    for kind in ("database", "true"):
        for _ in range(5):
            s = _raw(px, db, "postgres", {"replication": kind})
            s.close()
    # 2. replication client that sends a flood before being linked, then vanishes
    for _ in range(3):
        s = _raw(px, db, "postgres", {"replication": "database"})
        try:
            s.sendall(rawpg.query("IDENTIFY_SYSTEM") * 2000)
        except OSError:
            pass
        s.close()
    # 3. replication to the console, with bad values, with options
    for extra in ({"replication": "database"}, {"replication": "maybe"},
                  {"replication": "true", "options": "-c wal_sender_timeout=0 --x=\\"},
                  {"replication": "database", "application_name": "a" * 5000}):
        for d in (db, "pgmux"):
            s = _raw(px, d, "postgres", extra)
            print(extra.get("replication"), d, _read_all(s, 2)[:150])
            s.close()
    # 4. physical streaming; the client sends junk CopyData and a Query, then vanishes mid-stream
    c = rawpg.RawConn.tcp(px.port, db, "postgres", extra={"replication": "true"}, timeout=10)
    msgs = c.query("IDENTIFY_SYSTEM")
    pos = rawpg.rows(msgs)[0][2]
    pos = pos.decode() if isinstance(pos, bytes) else pos
    c.send(rawpg.query(f"START_REPLICATION {pos}"))
    t, _ = c.read_msg(timeout=10)
    assert t == b"W", t
    c.send(rawpg.copy_data(b"r" + b"\0" * 10) + rawpg.message(b"Q", b"SELECT 1\0"))
    c.sock.close()
    time.sleep(1.0)
    # normal clients still work, and never see a walsender
    for _ in range(6):
        with px.connect(db) as cc:
            assert cc.execute("SELECT 1").fetchone()[0] == 1
            bt = cc.execute("SELECT backend_type FROM pg_stat_activity "
                            "WHERE pid = pg_backend_pid()").fetchone()[0]
            assert bt == "client backend", bt
    assert px.alive()
    dbs = [r for r in px.show("DATABASES") if r["name"] == db]
    print(dbs)
    assert dbs[0]["current_client_connections"] == 0, dbs
    users = [r for r in px.show("USERS") if r["name"] in ("postgres", TEST_USER)]
    print(users)
    for u in users:   # the console client asking counts as postgres
        assert u["current_client_connections"] == (1 if u["name"] == "postgres" else 0), users


@timeout(90)
def test_aq_retired_queue(env):
    """A lookup queued on the idle auth_query connection (its send waits for a zero timer),
    then, in the same turn of the event loop, a RELOAD that changes the connection's settings
    (auth_user's password in the auth_file) and another unknown user's login: conn_for retired
    the idle connection and freed it with the first lookup still queued, so that client hung,
    and its hang-up read the freed connection (heap-use-after-free in auth_query_cancel)."""
    import signal
    import psycopg
    db = env.database()
    checker = env.role("aq_check", "Check-pw1", method="scram-sha-256", superuser=True)
    known = env.role("aq_known", "Known-pw1", method="scram-sha-256")
    px = env.pgmux({db: env.db_entry(db)}, {"auth_type": "md5", "auth_user": checker,
                                            "admin_users": "adm"},
                   users={checker: "Check-pw1", "adm": "Adm-pw1"})
    # one lookup: the auth_query connection now exists and is idle
    with px.connect(db, known, "Known-pw1") as c:
        c.execute("SELECT 1")
    adm = psycopg.connect(px.dsn("pgmux", "adm", "Adm-pw1"), autocommit=True)
    a = socket.create_connection(("127.0.0.1", px.port), timeout=10)
    b = socket.create_connection(("127.0.0.1", px.port), timeout=10)
    time.sleep(0.3)   # both accepted, waiting for their startup packets
    px.users[checker] = "Check-pw2"   # the connection's settings change on RELOAD
    px.write_userlist()
    px.signal(signal.SIGSTOP)
    try:
        a.sendall(rawpg.startup_packet({"user": "nobody_a", "database": db}))
        time.sleep(0.05)
        adm.pgconn.send_query(b"RELOAD")
        adm.pgconn.flush()
        time.sleep(0.05)
        b.sendall(rawpg.startup_packet({"user": "nobody_b", "database": db}))
        time.sleep(0.05)
    finally:
        px.signal(signal.SIGCONT)
    # a's lookup must still be answered (here: the auth_user cannot log in any more)
    got = _read_all(a, 5)
    a.close()
    b.close()
    adm.close()
    time.sleep(0.5)
    assert px.alive()
    assert got.startswith(b"E"), got


@timeout(120)
def test_repl_console_cmds(env):
    """Replication clients waiting for a slot or streaming while the console runs RECONNECT,
    KILL, PAUSE/RESUME, SUSPEND/RESUME, DISABLE/ENABLE: pgmux stays up and counts return to 0."""
    import psycopg
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session", "default_pool_size": 1, "max_db_connections": 1,
                          "query_wait_timeout": 0})
    held = px.connect(db)
    held.execute("SELECT 1")
    # waits for a slot (the one server is held), then vanishes
    w = _raw(px, db, "postgres", {"replication": "true"})
    time.sleep(0.5)
    w.close()
    time.sleep(0.3)
    held.close()
    time.sleep(0.3)
    # streaming one
    c = rawpg.RawConn.tcp(px.port, db, "postgres", extra={"replication": "true"}, timeout=10)
    pos = rawpg.rows(c.query("IDENTIFY_SYSTEM"))[0][2]
    pos = pos.decode() if isinstance(pos, bytes) else pos
    c.send(rawpg.query(f"START_REPLICATION {pos}"))
    assert c.read_msg(timeout=10)[0] == b"W"
    adm = psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True)
    for cmd in ("RECONNECT " + db, "SHOW CLIENTS", "SHOW SERVERS", "SHOW POOLS",
                "SUSPEND", "SHOW SERVERS"):
        try:
            adm.execute(cmd)
        except psycopg.Error as e:
            print(cmd, e)
    # RESUME from a new console connection would be refused during SUSPEND? use the same one
    try:
        adm.execute("RESUME")
    except psycopg.Error as e:
        print("RESUME", e)
    c.send(rawpg.copy_data(b"r" + b"\0" * 33))
    time.sleep(0.3)
    try:
        adm.execute("KILL " + db)
    except psycopg.Error as e:
        print("KILL", e)
    try:
        adm.execute("RESUME " + db)
    except psycopg.Error as e:
        print("RESUME db", e)
    adm.close()
    c.sock.close()
    time.sleep(1.0)
    assert px.alive()
    with px.connect(db) as cc:
        assert cc.execute("SELECT 1").fetchone()[0] == 1
    dbs = [r for r in px.show("DATABASES") if r["name"] == db]
    assert dbs[0]["current_client_connections"] == 0, dbs
    wait_for(lambda: env.pg.sql1("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE backend_type = 'walsender'") == 0, 10,
             what="walsenders gone")


@timeout(90)
def test_status_names_from_clients(env):
    """Auto-database names come from the startup packet: the status page, /status.json and
    /metrics escape them (HTML, JSON, Prometheus labels), whatever bytes they hold."""
    import json
    import urllib.request
    from pgharness import free_port
    db = env.database()
    mport = free_port()
    entry = env.db_entry(db).replace(f"dbname={db}", "")
    px = env.pgmux({"*": entry + f" dbname={db}"}, {"stats_listen": f"127.0.0.1:{mport}",
                                                     "auth_type": "trust"})
    evil = [b"<script>alert(1)</script>", b'a"b\\c\nd', b"\x01\x7f\xff\xfe&amp;", b"x" * 300,
            "\u00e9\u20ac".encode()]
    for name in evil:
        s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
        body = (struct.pack("!I", rawpg.PROTOCOL_V3) + b"user\0" + TEST_USER.encode() +
                b"\0database\0" + name + b"\0\0")
        s.sendall(struct.pack("!I", len(body) + 4) + body)
        _read_all(s, 1)
        s.close()
    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}{path}", timeout=10) as r:
            return r.read()
    time.sleep(1.2)
    html = get("/")
    assert b"<script>alert" not in html
    js = json.loads(get("/status.json").decode("utf-8"))
    metrics = get("/metrics").decode("utf-8")
    for line in metrics.splitlines():
        if line.startswith("#") or not line:
            continue
        assert line.startswith("pgmux_"), line   # a newline in a name never starts a line
    assert px.alive()
    print(len(html), len(js), len(metrics))


@timeout(120)
def test_aq_unauth_autodbs(env):
    """With auth_query, no auth_dbname and a "*" entry, the lookup runs in the database the
    client names, so an unknown client made a database object for every name it tried, kept
    for autodb_idle_timeout (an hour by default): memory grew with every guess, without a
    password.  Databases no login ever got a pool for go at the janitor's next sweep."""
    import psycopg
    db = env.database()
    checker = env.role("aq_check", "Check-pw1", method="scram-sha-256", superuser=True)
    entry = env.db_entry(db).replace(f"dbname={db}", "")
    px = env.pgmux({"*": entry, db: env.db_entry(db)},
                   {"auth_type": "md5", "auth_user": checker, "admin_users": "adm"},
                   users={checker: "Check-pw1", "adm": "Adm-pw1"})
    for i in range(300):
        s = _raw(px, f"guess_{i}", "nobody")
        _read_all(s, 0.5 if i < 3 else 0.05)
        s.close()
    def n_dbs():
        with psycopg.connect(px.dsn("pgmux", "adm", "Adm-pw1"), autocommit=True) as a:
            return sum(1 for r in a.execute("SHOW DATABASES").fetchall()
                       if str(r[0]).startswith("guess_"))
    wait_for(lambda: n_dbs() == 0, 10, 0.5, "guessed databases gone")
    # a real user in a wildcard database still logs in (its database made again at login)
    u = env.role("aq_real", "Real-pw1", method="scram-sha-256")
    with px.connect(db, u, "Real-pw1") as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    assert px.alive()


@timeout(90)
def test_hba_replication_keyword(env):
    """auth_type = hba: as in PostgreSQL and PgBouncer, a replication connection matches only
    rules whose database is the keyword "replication", and "all" or a database name never
    matches it.  pgmux never told the rules that a client asked for replication, so a rule
    refusing replication was skipped and "all ... trust" let a replication client in."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session"}, users={TEST_USER: "", "postgres": ""},
                   start=False)
    hba = px.dir / "hba.conf"
    hba.write_text("host replication all 127.0.0.1/32 reject\n"
                   "host all all 127.0.0.1/32 trust\n")
    px.write_config(auth_type="hba", auth_hba_file=str(hba))
    px.start()
    # an ordinary login is trusted
    with px.connect(db, "postgres") as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    # a replication login meets the replication rule first: rejected
    for kind in ("true", "database"):
        s = _raw(px, db, "postgres", {"replication": kind})
        got = _read_all(s, 3)
        s.close()
        assert got.startswith(b"E") and b"login rejected" in got, (kind, got)
    assert env.pg.sql1("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'") == 0
    # the other way round: only replication is trusted, everything else rejected
    hba.write_text("host replication postgres 127.0.0.1/32 trust\n"
                   "host all all 127.0.0.1/32 reject\n")
    px.reload()
    s = _raw(px, db, "postgres", {"replication": "true"})
    got = _read_all(s, 2)
    s.close()
    assert got.startswith(b"R\0\0\0\x08\0\0\0\0"), got
    s = _raw(px, db, "postgres")
    got = _read_all(s, 2)
    s.close()
    assert b"login rejected" in got, got


@timeout(120)
def test_aq_odd_answers(env):
    """auth_query answers of every odd shape (malformed SCRAM and md5 secrets, NULLs, extra rows,
    empty strings, a NUL-free 1000-byte secret) reach the secret parsers safely: the login fails
    (or works for a good secret), pgmux stays up, nothing of the secret is logged."""
    import psycopg
    db = env.database()
    checker = env.role("aq_check", "Check-pw1", method="scram-sha-256", superuser=True)
    good = env.pg.role_secret(checker)
    q = ("SELECT u, s FROM (VALUES "
         "('s1', 'SCRAM-SHA-256$'), ('s2', 'SCRAM-SHA-256$4096:'), "
         "('s3', 'SCRAM-SHA-256$4096:AAAA$BBBB:CCCC'), ('s4', 'SCRAM-SHA-256$0:c2FsdA==$a:b'), "
         "('s5', 'SCRAM-SHA-256$99999999999999999999:c2FsdA==$YQ==:Yg=='), "
         "('m1', 'md5'), ('m2', 'md5zz'), ('m3', 'md5' || repeat('g', 32)), ('e1', ''), "
         "('n1', NULL), ('l1', repeat('x', 1000)), ('dup', 'a'), ('dup', 'b'), "
         f"('good', '{good}')"
         ") v(u, s) WHERE u = $1 UNION ALL SELECT NULL, 'x' WHERE $1 = 'nullname'")
    px = env.pgmux({db: env.db_entry(db)},
                   {"auth_type": "scram-sha-256", "auth_user": checker, "auth_query": q},
                   users={checker: "Check-pw1"})
    for auth in ("scram-sha-256", "md5", "plain"):
        px.write_config(auth_type=auth)
        px.reload(0.5)
        for u in ("s1", "s2", "s3", "s4", "s5", "m1", "m2", "m3", "e1", "n1", "l1", "dup",
                  "nullname", "good"):
            for pw in ("x", "Check-pw1", ""):
                try:
                    with psycopg.connect(px.dsn(db, u, pw), connect_timeout=10) as c:
                        ok = True
                except psycopg.Error:
                    ok = False
                assert not ok or (u == "good" and pw == "Check-pw1"), (auth, u, pw)
    assert px.alive()
    log = px.log_text()
    assert "c2FsdA" not in log and good not in log and "x" * 200 not in log


@timeout(120)
def test_options_fuzz(env):
    """The options startup parameter with random mixes of -c, --, backslashes, quotes, '=' and
    long words: every login either works or is refused with an error, never a crash; a value
    with quotes reaches the server as data (no injection into pgmux's SET)."""
    import random
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "ignore_startup_parameters": "extra_float_digits"})
    rnd = random.Random(1234)
    atoms = ["-c", "--", "-c ", "\\", "\\ ", "=", " ", "application_name", "application-name",
             "TimeZone", "DateStyle", "client_encoding", "'", "\"", ";", "x" * 70, "y" * 300,
             "extra_float_digits", "search_path", "\\\\", "-", "\t", "é"]
    for _ in range(300):
        opts = "".join(rnd.choice(atoms) for _ in range(rnd.randint(1, 12)))
        s = _raw(px, db, TEST_USER, {"options": opts})
        got = _read_all(s, 0.3)
        s.close()
        assert got[:1] in (b"R", b"E"), (opts, got[:80])
    evil = "x'; SELECT pg_sleep(0); SET application_name='pwned"
    c = rawpg.RawConn.tcp(px.port, db, TEST_USER,
                          extra={"options": "-c application_name=" + evil.replace(" ", "\\ ")})
    got = rawpg.rows(c.query("SHOW application_name"))[0][0]
    got = got.decode() if isinstance(got, bytes) else got
    assert got == evil, got
    c.close()
    assert px.alive()


@timeout(120)
def test_aq_backend_killed_mid_lookup(env):
    """A slow lookup (the query sleeps) with many unknown clients queued behind it, some of
    which hang up, then the lookup's backend is terminated: every queued client gets an error,
    later lookups work on a fresh connection, pgmux stays up."""
    db = env.database()
    checker = env.role("aq_check", "Check-pw1", method="scram-sha-256", superuser=True)
    u = env.role("aq_real", "Real-pw1", method="scram-sha-256")
    env.pg.sql("CREATE FUNCTION slow_auth(u text) RETURNS TABLE(n text, p text) AS $$ BEGIN "
               "IF u LIKE 'slow%' THEN PERFORM pg_sleep(3); END IF; RETURN QUERY "
               "SELECT rolname::text, rolpassword::text FROM pg_authid WHERE rolname::text = u; "
               "END $$ LANGUAGE plpgsql", dbname=db)
    q = "SELECT * FROM slow_auth($1)"
    px = env.pgmux({db: env.db_entry(db)}, {"auth_type": "scram-sha-256", "auth_user": checker,
                                            "auth_query": q},
                   users={checker: "Check-pw1"})
    socks = [_raw(px, db, f"slow_{i}") for i in range(20)]
    time.sleep(0.5)
    for s in socks[::2]:
        s.close()
    env.pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
               "WHERE application_name = 'pgmux auth_query'")
    for s in socks[1::2]:
        got = _read_all(s, 5)
        s.close()
        assert got.startswith(b"E"), got
    # (a lookup queued just as the server closes the idle lookup connection is
    # test_aq_idle_conn_closed_by_server's: here the terminated backend is let go first)
    wait_for(lambda: env.pg.sql1("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE application_name = 'pgmux auth_query'") == 0, 10,
             what="lookup backend gone")
    time.sleep(0.3)
    with px.connect(db, u, "Real-pw1") as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    assert px.alive()


@timeout(90)
def test_repl_and_pool_login_denied(env):
    """The server refuses the pool's credentials (28P01) while ordinary and replication
    clients wait together, some of them hanging up: each gets an error, nothing is left
    counted, pgmux stays up."""
    import psycopg
    db = env.database()
    r = env.role("denied", "Right-pw1", method="scram-sha-256")
    px = env.pgmux([db], {"pool_mode": "transaction", "auth_type": "plain", "admin_users": "adm"},
                   users={r: "Wrong-pw1", "adm": "Adm-pw1"})
    socks = []
    for i in range(12):
        extra = {"replication": "true" if i % 3 == 0 else "database"} if i % 2 else {}
        s = _raw(px, db, r, extra)
        s.sendall(rawpg.message(b"p", b"Wrong-pw1\0"))
        socks.append(s)
    for s in socks[::4]:
        s.close()
    for i, s in enumerate(socks):
        if i % 4:
            got = _read_all(s, 3)
            assert b"E" in got, got
            s.close()
    time.sleep(0.5)
    assert px.alive()
    with psycopg.connect(px.dsn("pgmux", "adm", "Adm-pw1"), autocommit=True) as a:
        cur = a.execute("SHOW USERS")
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, x)) for x in cur.fetchall()]
    mine = [x for x in rows if x["name"] == r]
    assert not mine or mine[0]["current_client_connections"] == 0, mine


@timeout(90)
def test_shutdown_not_held_by_logins(env):
    """SIGTERM (WAIT_FOR_CLIENTS) waits for clients, but a connection that has not logged in
    (no startup packet, or a password never sent) is not a client to wait for: the Unix socket
    stays open for the console during the shutdown, so anyone able to reach it could otherwise
    hold the exit up for ever, one half-open login after another (client_login_timeout each)."""
    import signal
    db = env.database()
    px = env.pgmux([db], {"client_login_timeout": 60})
    path = str(px.dir / f".s.PGSQL.{px.port}")
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(path)
    time.sleep(0.3)
    px.signal(signal.SIGTERM)
    px.wait_log("got SIGTERM, shutting down")
    # another one during the shutdown, over the Unix socket that stays open
    late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        late.connect(path)
    except OSError:
        pass   # already gone: nothing held the exit up
    rc = px.wait_exit(10)
    idle.close()
    late.close()
    assert rc is not None, "pgmux still running 10 s after SIGTERM, held by logins"



@timeout(120)
def test_limits_counts_under_churn(env):
    """max_user_client_connections / max_db_client_connections with auth_query users logging in
    and vanishing at every step (mid-lookup, mid-password, waiting for a server, linked): the
    counts go back to 0 and the limit still admits exactly its number afterwards."""
    import psycopg
    db = env.database()
    checker = env.role("aq_check", "Check-pw1", method="md5", superuser=True)
    u = env.role("lim_u", "Lim-pw1", method="md5")
    px = env.pgmux({db: env.db_entry(db)},
                   {"auth_type": "md5", "auth_user": checker, "admin_users": "adm",
                    "max_user_client_connections": 3, "max_db_client_connections": 4,
                    "default_pool_size": 1, "pool_mode": "session"},
                   users={checker: "Check-pw1", "adm": "Adm-pw1"})
    held = []
    for round_ in range(3):
        socks = []
        for i in range(10):
            socks.append(_raw(px, db, u))
        for i, s in enumerate(socks):
            if i % 3 == 0:
                s.close()   # mid-lookup or mid-password
        for i, s in enumerate(socks):
            if i % 3:
                s.close()
        conns = []
        for i in range(5):
            try:
                conns.append(psycopg.connect(px.dsn(db, u, "Lim-pw1"), connect_timeout=5,
                                             autocommit=True))
            except psycopg.Error:
                pass
        assert len(conns) == 3, (round_, len(conns))
        for c in conns:
            c.close()
        time.sleep(0.3)
    with psycopg.connect(px.dsn("pgmux", "adm", "Adm-pw1"), autocommit=True) as a:
        cur = a.execute("SHOW USERS")
        names = [d.name for d in cur.description]
        rows = {r[0]: dict(zip(names, r)) for r in cur.fetchall()}
        cur = a.execute("SHOW DATABASES")
        names = [d.name for d in cur.description]
        dbs = {r[0]: dict(zip(names, r)) for r in cur.fetchall()}
    assert rows[u]["current_client_connections"] == 0, rows[u]
    assert dbs[db]["current_client_connections"] == 0, dbs[db]
    assert px.alive()


@timeout(90)
def test_aq_idle_conn_closed_by_server(env):
    """The server closes the idle lookup connection (pg_terminate_backend here; a restart or
    idle_session_timeout alike) just as an unknown user's lookup is queued on it, in the same
    turn of the event loop: nothing had been sent yet, so the lookup goes to a fresh connection
    instead of failing the login with "server closed the connection unexpectedly"."""
    import signal
    import psycopg
    db = env.database()
    checker = env.role("aq_check", "Check-pw1", method="scram-sha-256", superuser=True)
    u = env.role("aq_real", "Real-pw1", method="md5")
    px = env.pgmux({db: env.db_entry(db)}, {"auth_type": "md5", "auth_user": checker},
                   users={checker: "Check-pw1"})
    with px.connect(db, u, "Real-pw1") as c:   # the lookup connection is now idle
        c.execute("SELECT 1")
    pid = env.pg.sql1("SELECT pid FROM pg_stat_activity WHERE application_name = 'pgmux auth_query'")
    s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
    time.sleep(0.3)   # accepted, waiting for its startup packet
    px.signal(signal.SIGSTOP)
    try:
        s.sendall(rawpg.startup_packet({"user": u, "database": db}))
        time.sleep(0.1)
        env.pg.sql("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: env.pg.sql1("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                     (pid,)) == 0, 10, what="lookup backend gone")
    finally:
        px.signal(signal.SIGCONT)
    s.settimeout(10)
    t = s.recv(1)
    s.close()
    assert t == b"R", t   # asked for a password: the lookup found the user
    with px.connect(db, u, "Real-pw1") as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    assert px.alive()


@timeout(150)
def test_aq_lookup_uses_server_tls(env):
    """server_tls_* protect every login pgmux makes to a server: the auth_query lookup's too
    (it carries auth_user's password).  It went out with libpq's default sslmode (prefer) and
    no certificate, so a man in the middle could downgrade it to plaintext and ask for a
    cleartext password; against a server that demands TLS and a certificate it failed."""
    from test_client_tls import Pki
    from test_server_tls import server_tls_keys, tls_server
    pki = Pki(env.dir)
    topo = tls_server(env, pki)
    db = topo.database("aqtls")
    # auth_user is TEST_USER, whose certificate pgmux holds (server_tls_cert_file); the query
    # needs no privilege
    q = "SELECT u, s FROM (VALUES ('aq_tls_u', 'md5' || repeat('a', 32))) v(u, s) WHERE u = $1"
    px = env.pgmux({db: env.db_entry(db, server=topo.primary)},
                   {"auth_type": "md5", "auth_user": TEST_USER, "auth_query": q,
                    **server_tls_keys(pki)})
    s = _raw(px, db, "aq_tls_u")
    got = _read_all(s, 5)
    s.close()
    # found: pgmux asks for the md5 password (AuthenticationMD5Password)
    assert got[:9].startswith(b"R\0\0\0\x0c\0\0\0\x05"), got
    assert "server login failed" not in px.log_text()


@timeout(90)
def test_aq_host_list_entry(env):
    """An auth database entry with a host list (host=a,b): the lookup connection named every
    host but one resolved address (hostaddr), which libpq refuses ("could not match 1 host
    addresses to 2 host names"), so every auth_query login failed on such an entry."""
    db = env.database()
    checker = env.role("aq_check", "Check-pw1", method="scram-sha-256", superuser=True)
    u = env.role("aq_real", "Real-pw1", method="scram-sha-256")
    entry = f"host=127.0.0.1,localhost port={env.pg.port} dbname={db}"
    px = env.pgmux({db: entry}, {"auth_type": "scram-sha-256", "auth_user": checker},
                   users={checker: "Check-pw1"})
    for _ in range(3):   # round-robin: each entry of the list in turn
        with px.connect(db, u, "Real-pw1") as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    assert "server login failed" not in px.log_text()


@timeout(60)
def test_log_injection_by_names(env):
    """A user or database name with a newline cannot write a line of its own into pgmux's log
    (operators' alerts grep it): every control byte is escaped."""
    db = env.database()
    px = env.pgmux([db])
    forged = "2026-12-01 00:00:00.000 [1] LOG forged line from a client"
    for user, dbname in ((f"u\n{forged}", db), (TEST_USER, f"d\r\n{forged}")):
        try:
            c = rawpg.RawConn.tcp(px.port, dbname, user)
            c.close()
        except Exception:
            pass   # refused or not: only the log matters here
    wait_for(lambda: "forged line" in px.log_text(), 10, 0.05, "the attempt in the log")
    for line in px.log_text().splitlines():
        assert not line.startswith("2026-12-01 00:00:00.000"), line
    assert "u\\n2026-12-01 00:00:00.000 [1] LOG forged" in px.log_text()
