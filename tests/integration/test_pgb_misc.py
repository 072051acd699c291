"""PgBouncer 1.25's startup, shutdown, signal and console details, as its documentation gives
them: SIGINT / SIGTERM / SHUTDOWN modes and a second signal, SIGUSR2 and RESUME during a
shutdown, SUSPEND, the options startup parameter, login_notify_message, query_wait_notify,
server_fast_close, server_lifetime = 0, the SHOW STATS counters and SHOW CLIENTS states."""

import contextlib
import re
import socket
import signal
import subprocess
import threading
import time

import psycopg

from pgharness import TEST_USER, free_port, pg_bin, timeout, wait_for


def unix_conn(px, dbname, user=TEST_USER, **kw):
    return psycopg.connect(host=str(px.dir), port=px.port, dbname=dbname, user=user,
                           autocommit=True, connect_timeout=10, **kw)


def console(px, unix=False):
    if unix:
        return unix_conn(px, "pgbouncer", "postgres")
    return psycopg.connect(px.dsn("pgbouncer", "postgres"), autocommit=True, connect_timeout=10)


def refused(fn):
    try:
        fn().close()
    except psycopg.OperationalError as e:
        return str(e)
    raise AssertionError("connection was accepted")


@timeout(60)
def test_sigint_waits_for_servers_then_second_exits(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session"})
    c = px.connect(db)
    assert c.execute("SELECT 1").fetchone()[0] == 1
    px.signal(signal.SIGINT)
    px.wait_log("got SIGINT, shutting down")
    # the session's server stays linked: the client goes on
    assert c.execute("SELECT 2").fetchone()[0] == 2
    assert px.alive()
    # TCP is closed; the Unix socket stays for the console, pooled logins are refused there
    assert "refused" in refused(lambda: px.connect(db)).lower()
    with console(px, unix=True) as a:
        assert a.execute("SHOW STATE").fetchall()
    assert "pooler is shutting down" in refused(lambda: unix_conn(px, db))
    # a second SIGINT exits at once
    px.signal(signal.SIGINT)
    assert px.wait_exit(5) is not None, "second SIGINT did not exit"
    assert "got SIGINT while shutting down, fast exit" in px.log_text()
    try:
        c.execute("SELECT 3")
        raise AssertionError("connection survived the exit")
    except psycopg.OperationalError:
        pass


@timeout(60)
def test_sigterm_waits_for_clients_and_refuses_resume(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction"})
    c = px.connect(db)
    c.execute("SELECT 1")
    with console(px, unix=True) as a:
        px.signal(signal.SIGTERM)
        px.wait_log("got SIGTERM, shutting down")
        px.signal(signal.SIGUSR2)
        px.wait_log("got SIGUSR2 while shutting down, ignoring")
        try:
            a.execute("RESUME")
            raise AssertionError("RESUME during shutdown succeeded")
        except psycopg.Error as e:
            assert e.sqlstate == "08P01" and "pooler is shutting down" in str(e), e
        # transaction mode: the client still gets servers, the process waits for it
        assert c.execute("SELECT 5").fetchone()[0] == 5
        time.sleep(0.5)
        assert px.alive()
        c.close()
        # a console left open does not hold the exit up
        assert px.wait_exit(10) == 0, "pgmux did not exit after the last client left"


@timeout(60)
def test_shutdown_wait_for_servers_closes_waiters(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 1})
    intx = px.connect(db)
    idle = px.connect(db)
    waiter = px.connect(db)
    intx.execute("BEGIN")
    intx.execute("SELECT 1")
    out = {}

    def wait_for_server():
        try:
            out["v"] = waiter.execute("SELECT 1").fetchone()
        except psycopg.Error as e:
            out["v"] = e
    t = threading.Thread(target=wait_for_server)
    t.start()
    wait_for(lambda: any(r["state"] == "waiting" for r in px.show("CLIENTS")), 10, 0.1,
             "a waiting client")
    with console(px) as a:
        a.execute("SHUTDOWN WAIT_FOR_SERVERS")
    t.join(10)
    assert isinstance(out.get("v"), psycopg.OperationalError), out
    # the open transaction finishes; a new one is refused
    assert intx.execute("SELECT 2").fetchone()[0] == 2
    try:
        idle.execute("SELECT 1")
        raise AssertionError("a new transaction got a server during WAIT_FOR_SERVERS")
    except psycopg.OperationalError:
        pass
    assert "closing because: server shutting down" in px.log_text()
    intx.execute("COMMIT")
    assert px.wait_exit(10) == 0, "pgmux did not exit once its servers were released"


@timeout(60)
def test_suspend_holds_new_connections_until_resume(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction"})
    with console(px) as a:
        a.execute("SUSPEND")
        out = {}

        def connect():
            t0 = time.monotonic()
            with px.connect(db) as c:
                out["v"] = c.execute("SELECT 7").fetchone()[0]
            out["t"] = time.monotonic() - t0
        t = threading.Thread(target=connect)
        t.start()
        time.sleep(1)
        assert "v" not in out, "a connection was served while suspended"
        a.execute("RESUME")
        t.join(10)
    assert out.get("v") == 7 and out["t"] >= 0.9, out


@timeout(60)
def test_options_startup_parameter(env):
    db = env.database()
    px = env.pgmux([db], {"ignore_startup_parameters": "extra_float_digits"})

    def val(sql, options):
        with px.connect(db, options=options) as c:
            return c.execute(sql).fetchone()[0]
    assert val("SHOW DateStyle", "  -c    datestyle=German,\\ YMD") == "German, YMD"
    assert val("SHOW TimeZone", "-ctimezone=Europe/Lisbon --datestyle=ISO") == "Europe/Lisbon"
    assert val("SHOW TimeZone", "-c t\\imezone=\\E\\u\\r\\o\\pe/Lisbon") == "Europe/Lisbon"
    assert val("SHOW extra_float_digits", "-c extra_float_digits=2") == "1"
    for bad in ("-d", "-c timezone"):
        msg = refused(lambda: px.connect(db, options=bad))
        assert "only '-c config=val' and '--config=val' are allowed" in msg, msg
    msg = refused(lambda: px.connect(db, options="-c enable_seqscan=off"))
    assert "unsupported startup parameter in options: enable_seqscan" in msg, msg
    with console(px) as a:
        a.execute("SET ignore_startup_parameters = options")
    assert val("SHOW enable_seqscan", "-c enable_seqscan=off") == "on"
    assert val("SHOW TimeZone", "-c enable_seqscan=off -ctimezone=Europe/Rome") == "Europe/Rome"


@timeout(60)
def test_login_notify_and_query_wait_notify(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 1,
                          "login_notify_message": "welcome to pgmux", "query_wait_notify": 1})
    notices = []
    holder = px.connect(db)
    c = px.connect(db)
    c.add_notice_handler(lambda d: notices.append(d.message_primary))
    holder.execute("BEGIN")
    holder.execute("SELECT 1")
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", c.execute("SELECT 3").fetchone()[0]))
    t.start()
    time.sleep(2)
    holder.execute("COMMIT")
    t.join(10)
    assert out.get("v") == 3
    assert notices == ["No server connection available in postgres backend, client being queued"], notices
    # a short wait gets no notice
    assert c.execute("SELECT 4").fetchone()[0] == 4
    assert len(notices) == 1
    # the login notice arrives before the first ReadyForQuery: psql shows it (as PgBouncer's
    # own test reads it)
    r = subprocess.run([pg_bin("psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(px.port),
                        "-U", TEST_USER, "-d", db, "-c", "SELECT 1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "1", r
    assert r.stderr == "NOTICE:  welcome to pgmux\n", r.stderr
    holder.close()
    c.close()


@timeout(60)
def test_server_fast_close_and_lifetime_zero(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session", "server_fast_close": 1})
    c = px.connect(db)
    c.execute("SELECT 1")
    with console(px) as a:
        a.execute(f"RECONNECT {db}")
    px.wait_log("closing because: database configuration changed")
    try:
        c.execute("SELECT 1")
        raise AssertionError("the session outlived RECONNECT under server_fast_close")
    except psycopg.OperationalError:
        pass
    # server_lifetime = 0: each server is used once
    with console(px) as a:
        a.execute("SET server_lifetime = 0")
    pids = set()
    for _ in range(3):
        with px.connect(db) as c:
            pids.add(c.execute("SELECT pg_backend_pid()").fetchone()[0])
    assert len(pids) == 3, pids


@timeout(60)
def test_console_counters_states_and_ids(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session", "server_lifetime": 0})
    for _ in range(3):
        with px.connect(db) as c:
            c.execute("SELECT 1")
    row = next(r for r in px.show("STATS") if r["database"] == db)
    assert row["total_server_assignment_count"] == 3, row
    assert row["total_client_login_count"] == 3, row
    tot = next(r for r in px.show("STATS_TOTALS") if r["database"] == db)
    assert tot["server_assignment_count"] == 3 and tot["client_login_count"] == 3, tot
    # the console's own row (PgBouncer's name for it), counted in TOTALS
    cons = next(r for r in px.show("STATS") if r["database"] == "pgbouncer")
    assert cons["total_client_login_count"] >= 2 and cons["total_query_count"] >= 2, cons
    totals = {r["name"]: r["value"] for r in px.show("TOTALS")}
    assert totals["total_server_assignment_count"] == 3, totals
    assert totals["total_client_login_count"] >= 3 + 3, totals
    # states: idle without a server, active with one
    c = px.connect(db)
    states = [r["state"] for r in px.show("CLIENTS") if r["database"] == db]
    assert states == ["idle"], states
    c.execute("SELECT 1")
    states = [r["state"] for r in px.show("CLIENTS") if r["database"] == db]
    assert states == ["active"], states
    # ids: clients and servers draw from one sequence of their own (databases and pools take
    # none of it), so the first three client/server pairs, with nothing else connecting
    # meanwhile, were numbered consecutively
    cid = next(r["id"] for r in px.show("CLIENTS") if r["database"] == db)
    sid = next(r["id"] for r in px.show("SERVERS") if r["database"] == db)
    assert sid > cid, (cid, sid)
    ids = [int(m) for m in re.findall(r"[CS]-(\d+) " + re.escape(db) + r"/\S+ "
                                      r"(?:login attempt|new connection to server)", px.log_text_dedup())]
    assert ids[:6] == list(range(ids[0], ids[0] + 6)), ids
    c.close()
    # DISABLE: PgBouncer's words
    with console(px) as a:
        a.execute(f"DISABLE {db}")
        msg = refused(lambda: px.connect(db))
        assert f'database "{db}" is disabled' in msg, msg
        a.execute(f"ENABLE {db}")
    px.connect(db).close()


@timeout(60)
def test_host_list(env):
    """host=a,b: new server connections take the hosts in turn; a host that cannot be reached
    is skipped for the same waiting client (127.0.0.3 has nothing on the port)."""
    db = env.database()
    good = env.pg.host
    px = env.pgmux({db: f"host=127.0.0.3,{good} port={env.pg.port} dbname={db}"},
                   {"pool_mode": "session", "server_login_retry": 5})
    conns = [px.connect(db) for _ in range(3)]
    for c in conns:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    log = px.log_text_dedup()
    # every session got a server from the good host (the bad one is tried, then skipped)
    n = log.count("new connection to server (from 127.0.0.1:")
    assert n == 3, (n, log)
    assert "Connection refused" in log
    for c in conns:
        c.close()


@timeout(60)
def test_unreachable_server_keeps_clients_waiting(env):
    """Nothing listens on the server's port: the client is not refused at once (PgBouncer
    keeps it waiting through server_login_retry) and gets query_wait_timeout in the end."""
    db = env.database()
    dead = free_port()
    px = env.pgmux({db: f"host=127.0.0.1 port={dead} dbname={db}"},
                   {"server_login_retry": 1, "query_wait_timeout": 3})
    t0 = time.monotonic()
    msg = refused(lambda: px.connect(db, connect_timeout=20))
    took = time.monotonic() - t0
    assert "query_wait_timeout" in msg and took >= 2.5, (msg, took)
    # the server comes back while a client waits (a forwarder to PostgreSQL appears on the
    # port after a second): the waiting client is served.  It connects once server_login_retry
    # has passed since the last failed try: within it, PgBouncer's documented rule refuses a
    # new client at once.
    time.sleep(1.5)
    stop = threading.Event()

    def forward():
        time.sleep(1)
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", dead))
        ls.listen(8)
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                a, _ = ls.accept()
            except socket.timeout:
                continue
            b = socket.create_connection((env.pg.host, env.pg.port))
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=pipe, args=(x, y), daemon=True).start()
        ls.close()

    def pipe(x, y):
        try:
            while (d := x.recv(65536)):
                y.sendall(d)
        except OSError:
            pass
        for z in (x, y):
            with contextlib.suppress(OSError):
                z.shutdown(socket.SHUT_RDWR)

    t = threading.Thread(target=forward, daemon=True)
    t.start()
    try:
        with px.connect(db, connect_timeout=20) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        stop.set()
        t.join(5)
