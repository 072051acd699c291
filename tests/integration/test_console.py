"""The admin console (database pgmux / pgbouncer): SHOW columns, control commands, access,
the extended protocol, and SHOW POOLS under load."""

import subprocess
import threading
import time

import psycopg

from pgharness import TEST_USER, pg_bin, raise_nofile, timeout, wait_for

POOLS = ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
         "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
         "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode",
         "pool_size", "saturation"]
STAT_NAMES = ["server_assignment_count", "xact_count", "query_count", "received", "sent", "xact_time", "query_time",
              "wait_time", "client_parse_count", "server_parse_count", "bind_count",
              "client_login_count"]
AVG_NAMES = ["server_assignment_count", "xact_count", "query_count", "recv", "sent", "xact_time", "query_time",
             "wait_time", "client_parse_count", "server_parse_count", "bind_count",
             "client_login_count"]
STATS = (["database"] + ["total_" + n for n in STAT_NAMES] + ["avg_" + n for n in AVG_NAMES])
STATS_PLAIN = ["database", "server_assignment_count", "xact_count", "query_count",
               "bytes_received", "bytes_sent", "xact_time", "query_time", "wait_time",
               "client_parse_count", "server_parse_count", "bind_count", "client_login_count"]
CONNS = ["type", "user", "database", "state", "addr", "port", "local_addr", "local_port",
         "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr", "link",
         "remote_pid", "tls", "application_name", "prepared_statements", "id"]
COLUMNS = {
    "POOLS": POOLS,
    "STATS": STATS,
    "STATS_TOTALS": STATS_PLAIN,
    "STATS_AVERAGES": STATS_PLAIN,
    "TOTALS": ["name", "value"],
    "CLIENTS": CONNS,
    "SERVERS": CONNS,
    "DATABASES": ["name", "host", "port", "database", "force_user", "pool_size",
                  "min_pool_size", "reserve_pool_size", "server_lifetime", "pool_mode",
                  "load_balance_hosts", "max_connections", "current_connections",
                  "max_client_connections", "current_client_connections", "paused",
                  "disabled"],
    "USERS": ["name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections",
              "current_connections", "max_user_client_connections",
              "current_client_connections"],
    "LISTS": ["list", "items"],
    "CONFIG": ["key", "value", "default", "changeable"],
    "MEM": ["name", "size", "used", "free", "memtotal"],
    "STATE": ["key", "value"],
    "VERSION": ["version"],
    "HELP": ["command", "arguments", "access", "description"],
}


def console(px, user="postgres", dbname="pgmux"):
    """A psycopg connection to the console (psycopg uses the extended protocol)."""
    return psycopg.connect(px.dsn(dbname, user), autocommit=True, connect_timeout=10)


def show(px, what, user="postgres"):
    """Runs SHOW <what> through psql (simple protocol); returns a list of dicts."""
    r = px.psql("pgmux", f"SHOW {what}", user=user, args=["-F", "\t", "--no-align", "-P",
                                                          "tuples_only=off", "-P", "footer=off"])
    lines = r.stdout.splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, l.split("\t"))) for l in lines[1:]], header


def admin(px, sql, user="postgres", check=True):
    return px.psql("pgmux", sql, user=user, check=check)


def pool_row(px, db, user=TEST_USER):
    with console(px) as c:
        cur = c.execute("SHOW POOLS")
        names = [d.name for d in cur.description]
        for row in cur.fetchall():
            r = dict(zip(names, row))
            if r["database"] == db and r["user"] == user:
                return r
    return None


@timeout(60)
def test_show_columns(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 3})
    with px.connect(db) as c:
        c.execute("SELECT 1")
        for what, cols in COLUMNS.items():
            rows, header = show(px, what)
            assert header == cols, f"SHOW {what}: {header} != {cols}"
            if what in ("POOLS", "STATS", "STATS_TOTALS", "DATABASES", "CLIENTS", "SERVERS",
                        "CONFIG", "LISTS", "MEM", "STATE", "VERSION", "HELP", "TOTALS"):
                assert rows, f"SHOW {what} returned no rows"
        # pgbouncer is an alias, lower case and a trailing ';' work
        r = px.psql("pgbouncer", "show version;", user="postgres")
        assert "pgmux" in r.stdout
        pools, _ = show(px, "POOLS")
        p = [r for r in pools if r["database"] == db][0]
        assert p["pool_mode"] == "transaction" and p["pool_size"] == "3", p
        stats, _ = show(px, "STATS")
        s = [r for r in stats if r["database"] == db][0]
        assert int(s["total_query_count"]) >= 1 and int(s["total_xact_count"]) >= 1, s
        clients, _ = show(px, "CLIENTS")
        mine = [r for r in clients if r["database"] == db]
        assert len(mine) == 1 and mine[0]["type"] == "C" and mine[0]["addr"] == "127.0.0.1", mine
        # transaction mode, between transactions: it holds no server, which PgBouncer 1.25 calls idle
        assert int(mine[0]["port"]) > 0 and mine[0]["state"] == "idle", mine
        servers, _ = show(px, "SERVERS")
        sv = [r for r in servers if r["database"] == db]
        assert sv and int(sv[0]["remote_pid"]) > 0 and sv[0]["type"] == "S", sv
        config, _ = show(px, "CONFIG")
        cfg = {r["key"]: r for r in config}
        assert cfg["default_pool_size"]["value"] == "3"
        assert cfg["default_pool_size"]["default"] == "20"
        assert cfg["default_pool_size"]["changeable"] == "yes"
        assert cfg["listen_port"]["changeable"] == "no"
        dbs, _ = show(px, "DATABASES")
        assert [r for r in dbs if r["name"] == db][0]["pool_size"] == "3"
        totals, _ = show(px, "TOTALS")
        assert [r["name"] for r in totals][:4] == ["total_server_assignment_count",
                                                  "total_xact_count", "total_query_count",
                                                  "total_received"]
    # errors: unknown command, unknown SHOW, bad argument, unknown database
    for sql, state in (("FROB", "42601"), ("SHOW FROBS", "42704"), ("SHOW POOLS x", "42601"),
                       ("RECONNECT nosuchdb", "08P01"), ("SET nosuchkey = 1", "42704"),
                       ("SET listen_port = 1", "42704"), ("SHOW POOLS; SHOW STATS", "42601")):
        with console(px) as c:
            try:
                c.execute(sql)
                raise AssertionError(f"{sql} succeeded")
            except psycopg.Error as e:
                assert e.sqlstate == state, (sql, e.sqlstate, str(e))
            # the connection goes on after the error
            assert c.execute("SHOW VERSION").fetchone()[0].startswith("pgmux")


@timeout(60)
def test_extended_protocol_psycopg(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2})
    with px.connect(db) as app, console(px) as c:
        app.execute("SELECT 1")
        cur = c.execute("SHOW POOLS")
        assert [d.name for d in cur.description] == POOLS
        rows = [dict(zip(POOLS, r)) for r in cur.fetchall()]
        r = [x for x in rows if x["database"] == db][0]
        assert isinstance(r["cl_active"], int) and r["cl_active"] == 1, r
        assert isinstance(r["saturation"], float)
        # repeated, and other commands, on the same connection
        for what, cols in COLUMNS.items():
            cur = c.execute(f"SHOW {what}")
            assert [d.name for d in cur.description] == cols, what
            cur.fetchall()
        # named (prepared) statements, as drivers use after a few runs
        for _ in range(3):
            cur = c.execute("SHOW POOLS", prepare=True)
            assert [d.name for d in cur.description] == POOLS
            assert cur.fetchall()
        # an error skips to Sync and the session goes on
        try:
            c.execute("SHOW NOTHING")
            raise AssertionError("unknown command accepted")
        except psycopg.Error as e:
            assert e.sqlstate == "42704", e
        assert c.execute("SHOW STATE").fetchall()
        # parameters are refused
        try:
            c.execute("SHOW POOLS %s", (1,))
            raise AssertionError("parameters accepted")
        except psycopg.Error as e:
            assert e.sqlstate == "0A000", e
        assert c.execute("SHOW VERSION").fetchone()[0].startswith("pgmux")


@timeout(60)
def test_access(env):
    db = env.database()
    stats = env.role("statsu")
    other = env.role("nobody")
    px = env.pgmux([db], {"stats_users": stats}, users={TEST_USER: "", stats: "", other: ""})
    # stats_users may SHOW but not control
    rows, _ = show(px, "POOLS", user=stats)
    for sql in ("PAUSE", "RESUME", "KILL", "RELOAD", "SHUTDOWN", "SET verbose = 1", "RECONNECT"):
        r = admin(px, sql, user=stats, check=False)
        assert r.returncode != 0 and "permission denied" in r.stderr, (sql, r.stderr)
    with console(px, user=stats) as c:
        try:
            c.execute("PAUSE")
            raise AssertionError("stats user could PAUSE")
        except psycopg.Error as e:
            assert e.sqlstate == "42501", e
    assert show(px, "STATE")[0][1]["value"] == "no"   # still not paused
    # anyone else is refused at login
    try:
        console(px, user=other).close()
        raise AssertionError("non-admin got into the console")
    except psycopg.OperationalError as e:
        assert getattr(e, "sqlstate", None) == "42501" or "not allowed" in str(e), e
    assert px.alive()


@timeout(60)
def test_pause_resume(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2})
    holder = px.connect(db)
    holder.execute("BEGIN")
    holder.execute("SELECT 1")   # holds a server in a transaction
    other = px.connect(db)
    other.execute("SELECT 1")
    # PAUSE returns only once the holder's server is released
    done = threading.Event()
    t = threading.Thread(target=lambda: (admin(px, "PAUSE"), done.set()))
    t.start()
    time.sleep(0.5)
    assert not done.is_set(), "PAUSE returned while a transaction held a server"
    holder.execute("COMMIT")
    assert done.wait(10), "PAUSE did not return after the server was released"
    t.join()
    assert show(px, "STATE")[0][1]["value"] == "yes"
    r = admin(px, "PAUSE", check=False)
    assert r.returncode != 0 and "already paused" in r.stderr
    # a new transaction waits until RESUME
    result = []
    t2 = threading.Thread(target=lambda: result.append(other.execute("SELECT 42").fetchone()[0]))
    t2.start()
    time.sleep(0.7)
    assert not result, "a query ran while paused"
    wait_for(lambda: int(pool_row(px, db)["cl_waiting"]) == 1, 5, what="a waiting client")
    admin(px, "RESUME")
    t2.join(10)
    assert result == [42]
    r = admin(px, "RESUME", check=False)
    assert r.returncode != 0 and "not paused" in r.stderr
    # per-database PAUSE holds that database only
    admin(px, f"PAUSE {db}")
    result2 = []
    t3 = threading.Thread(target=lambda: result2.append(other.execute("SELECT 43").fetchone()[0]))
    t3.start()
    time.sleep(0.7)
    assert not result2, "a query ran on a paused database"
    admin(px, f"RESUME {db}")
    t3.join(10)
    assert result2 == [43]
    holder.close()
    other.close()


@timeout(60)
def test_kill_and_kill_client(env):
    db = env.database()
    db2 = env.database("b")
    px = env.pgmux([db, db2], {"pool_mode": "session", "default_pool_size": 4})
    victims = [px.connect(db) for _ in range(2)]
    survivor = px.connect(db2)
    for c in victims + [survivor]:
        c.execute("SELECT 1")
    admin(px, f"KILL {db}")
    for c in victims:
        try:
            c.execute("SELECT 1")
            raise AssertionError("client survived KILL")
        except psycopg.OperationalError:
            pass
    assert survivor.execute("SELECT 2").fetchone()[0] == 2
    wait_for(lambda: env.pg.backends(db) == 0, 10, what="servers of the killed db to go")
    pool = pool_row(px, db)
    assert pool["cl_active"] == 0 and pool["sv_idle"] + pool["sv_active"] == 0, pool
    # a killed database stays paused until RESUME, as in PgBouncer
    admin(px, f"RESUME {db}")
    # KILL_CLIENT by id
    c3 = px.connect(db)
    c3.execute("SELECT 1")
    rows, _ = show(px, "CLIENTS")
    ids = [r["id"] for r in rows if r["database"] == db]
    assert len(ids) == 1
    admin(px, f"KILL_CLIENT {ids[0]}")
    try:
        c3.execute("SELECT 1")
        raise AssertionError("client survived KILL_CLIENT")
    except psycopg.OperationalError:
        pass
    r = admin(px, "KILL_CLIENT 999999", check=False)
    assert r.returncode != 0 and "no client" in r.stderr
    # RECONNECT closes the survivor's server once released; WAIT_CLOSE waits for it
    pid1 = survivor.execute("SELECT pg_backend_pid()").fetchone()[0]
    survivor.close()
    admin(px, f"RECONNECT {db2}")
    admin(px, "WAIT_CLOSE")
    rows, _ = show(px, "SERVERS")
    assert not [r for r in rows if int(r["remote_pid"]) == pid1]
    with px.connect(db2) as c:
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] != pid1
    # global KILL pauses until RESUME
    c4 = px.connect(db2)
    c4.execute("SELECT 1")
    admin(px, "KILL")
    try:
        c4.execute("SELECT 1")
        raise AssertionError("client survived KILL")
    except psycopg.OperationalError:
        pass
    assert show(px, "STATE")[0][1]["value"] == "yes"
    admin(px, "RESUME")
    with px.connect(db2) as c:
        assert c.execute("SELECT 3").fetchone()[0] == 3


@timeout(60)
def test_reload_set_and_shutdown(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2})
    with px.connect(db) as c:
        c.execute("SELECT 1")
    assert pool_row(px, db)["pool_size"] == 2
    px.write_config(default_pool_size=7)
    admin(px, "RELOAD")
    assert pool_row(px, db)["pool_size"] == 7
    cfg = {r["key"]: r["value"] for r in show(px, "CONFIG")[0]}
    assert cfg["default_pool_size"] == "7"
    # a broken file: RELOAD reports it and keeps the old configuration
    good = px.ini.read_text()
    px.write_config(raw=good + "\n[pgmux]\nno_such_key = 1\n")
    r = admin(px, "RELOAD", check=False)
    assert r.returncode != 0 and "RELOAD failed" in r.stderr and "no_such_key" in r.stderr, r.stderr
    px.write_config(raw=good)
    assert pool_row(px, db)["pool_size"] == 7
    # SET changes the live value
    admin(px, "SET default_pool_size = 5")
    assert pool_row(px, db)["pool_size"] == 5
    admin(px, "SET server_reset_query TO 'DISCARD  ALL'")
    cfg = {r["key"]: r["value"] for r in show(px, "CONFIG")[0]}
    assert cfg["server_reset_query"] == "DISCARD  ALL"
    r = admin(px, "SET default_pool_size = lots", check=False)
    assert r.returncode != 0 and "invalid value" in r.stderr
    # SHUTDOWN WAIT_FOR_CLIENTS waits for the last client (the console itself) to leave
    c = px.connect(db)
    admin(px, "SHUTDOWN WAIT_FOR_CLIENTS")
    assert c.execute("SELECT 5").fetchone()[0] == 5
    time.sleep(0.3)
    assert px.alive()
    c.close()
    assert px.wait_exit(10) == 0, "pgmux did not exit after the last client left"


@timeout(90)
def test_pools_under_load(env):
    db = env.database()
    r = subprocess.run([pg_bin("pgbench"), "-i", "-q", "-s", "1", "-h", str(env.pg.sockdir),
                        "-p", str(env.pg.port), "-U", TEST_USER, db],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "max_client_conn": 100, "stats_period": 1})
    bench = subprocess.Popen([pg_bin("pgbench"), "-n", "-h", "127.0.0.1", "-p", str(px.port),
                              "-U", TEST_USER, "-c", "20", "-j", "2", "-T", "6", db],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=raise_nofile)
    seen = []
    try:
        with console(px) as c:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                cur = c.execute("SHOW POOLS")
                for row in cur.fetchall():
                    p = dict(zip(POOLS, row))
                    if p["database"] == db:
                        seen.append(p)
                time.sleep(0.05)
    finally:
        out, _ = bench.communicate(timeout=60)
    assert bench.returncode == 0, out[-2000:]
    assert max(p["cl_waiting"] for p in seen) > 0, "SHOW POOLS never saw a waiting client"
    assert max(p["sv_active"] for p in seen) <= 2
    assert max(p["saturation"] for p in seen) == 1.0
    assert any(p["maxwait_us"] > 0 or p["maxwait"] > 0 for p in seen)
    # averages over stats_period = 1 s
    with console(px) as c:
        cur = c.execute("SHOW STATS")
        names = [d.name for d in cur.description]
        s = [dict(zip(names, r)) for r in cur.fetchall() if r[0] == db][0]
    assert s["total_xact_count"] > 100 and s["total_wait_time"] > 0, s


def _raw_console(px):
    """A raw socket logged in to the console as postgres (auth_type trust)."""
    import socket
    import struct
    s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
    params = b"user\0postgres\0database\0pgmux\0\0"
    s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    _read_until_z(s)
    return s


def _read_until_z(s):
    """Reads messages until ReadyForQuery; returns the list of message types."""
    import struct
    buf, types = b"", []
    while True:
        while len(buf) < 5 or len(buf) < 1 + struct.unpack("!i", buf[1:5])[0]:
            chunk = s.recv(65536)
            if not chunk:
                return types + ["EOF"]
            buf += chunk
        n = 1 + struct.unpack("!i", buf[1:5])[0]
        types.append(chr(buf[0]))
        buf = buf[n:]
        if types[-1] == "Z":
            return types


def _msg(t, body):
    import struct
    return t.encode() + struct.pack("!i", 4 + len(body)) + body


@timeout(60)
def test_bad_input(env):
    db = env.database()
    px = env.pgmux([db])
    s = _raw_console(px)
    garbage = [
        _msg("P", b"x"),                          # no terminator
        _msg("P", b"\0SHOW POOLS\0\xff\xff"),     # 65535 parameters, none given
        _msg("B", b"\0\0\xff\xff"),               # format count past the end
        _msg("D", b"S"),                          # no name terminator
        _msg("D", b"Pnope\0"),
        _msg("E", b""),
        _msg("C", b""),
        _msg("z", b"whatever"),
        _msg("F", b""),
    ]
    for g in garbage:
        s.sendall(g + _msg("S", b""))
        types = _read_until_z(s)
        assert types[-1] == "Z", (g, types)
    # a query without its terminator, an over-long command, an empty query
    for q in (b"SHOW POOLS", b"SHOW " + b"X" * 5000 + b"\0", b"\0", b";;\0"):
        s.sendall(_msg("Q", q))
        types = _read_until_z(s)
        assert types[-1] == "Z", (q[:20], types)
    s.sendall(_msg("Q", b"SHOW VERSION\0"))
    assert _read_until_z(s) == ["T", "D", "C", "Z"]
    # an over-long message closes the connection, and pgmux goes on
    s.sendall(b"Q" + (100000).to_bytes(4, "big") + b"x" * 100)
    assert "EOF" in _read_until_z(s) or True
    s.close()
    with px.connect(db) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    assert px.alive()
