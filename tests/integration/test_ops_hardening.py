"""Operational hardening (issue 11, defects 4 and 6, the console's reply cap, console access):
the Prometheus port under a connection flood and out of descriptors, the PostgreSQL listener
beyond max_client_conn + 16, autodb_idle_timeout, SHOW listings with 5,000 clients, and
control commands refused to everyone but admin_users."""

import os
import resource
import selectors
import socket
import struct
import time
import urllib.request

import psycopg

from pgharness import TEST_USER, free_port, timeout, wait_for
from rawpg import RawConn, data_row, parse_error, query, startup_packet

CONTROL = ["PAUSE", "RESUME", "KILL", "KILL_CLIENT 1", "RELOAD", "SET verbose = 1", "SHUTDOWN",
           "SUSPEND", "DISABLE {db}", "ENABLE {db}", "RECONNECT", "WAIT_CLOSE"]


def console(px, user="postgres"):
    return psycopg.connect(px.dsn("pgmux", user), autocommit=True, connect_timeout=10)


def rows(c, what):
    cur = c.execute(f"SHOW {what}")
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def scrape(port, timeout_s=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
        return r.status, r.read().decode()


def raise_own_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect_many(port, n, timeout_s=5):
    """n TCP connections that send nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        s.setblocking(False)
        socks.append(s)
    return socks


def closed_by_peer(socks, wait):
    """After `wait` seconds: the sockets the other side has closed (EOF or reset), with what
    each received before."""
    time.sleep(wait)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = {}
    for key, _ in sel.select(timeout=0):
        s = key.fileobj
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed[s] = data
                    break
                data += chunk
        except BlockingIOError:
            pass                    # data but no EOF yet: still open
        except ConnectionResetError:
            closed[s] = data
    sel.close()
    return closed


def close_all(socks):
    for s in socks:
        s.close()


@timeout(90)
def test_stats_port_flood(env):
    """200 connections to stats_listen: 64 are kept, the rest closed at accept, the kept ones
    time out after the read timeout, and PostgreSQL clients are served throughout."""
    db = env.database()
    mport = free_port()
    px = env.pgmux([db], {"stats_listen": f"127.0.0.1:{mport}"})
    mark = px.log_mark()
    socks = connect_many(mport, 200)
    t0 = time.monotonic()
    with px.connect(db) as c:
        assert c.execute("SELECT 'served'").fetchone()[0] == "served"
    assert time.monotonic() - t0 < 3, "a PostgreSQL client waited behind the stats flood"
    closed = closed_by_peer(socks, 1.0)
    kept = len(socks) - len(closed)
    assert 60 <= kept <= 64, f"{kept} stats connections kept open (the limit is 64)"
    assert all(v == b"" for v in closed.values()), "a refused stats connection got a reply"
    # a scrape has no room while the flood holds every slot ...
    try:
        scrape(mport, 2)
        raise AssertionError("a 65th connection was served")
    except OSError:
        pass
    # ... and the kept ones are closed by the 5 s read timeout, freeing the slots
    rest = [s for s in socks if s not in closed]
    assert len(closed_by_peer(rest, 5.5)) == len(rest), "idle stats connections outlived 5 s"
    assert scrape(mport)[0] == 200
    close_all(socks)
    refused_lines = {l for l in px.log_since(mark).splitlines() if "closed at accept" in l}
    assert 1 <= len(refused_lines) <= 3, refused_lines
    with px.connect(db) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    assert px.alive()


@timeout(90)
def test_accept_out_of_descriptors_does_not_spin(env):
    """With RLIMIT_NOFILE just above what pgmux holds, a flood of the stats port and a
    PostgreSQL client make accept fail with EMFILE: each listener rests 1 s per failure (one
    log line each), CPU stays low, and everything works again once descriptors free up."""
    db = env.database()
    mport = free_port()
    px = env.pgmux([db], {"stats_listen": f"127.0.0.1:{mport}", "pool_mode": "transaction",
                          "default_pool_size": 1, "min_pool_size": 1})
    with px.connect(db) as c:               # a server is logged in and idle
        c.execute("SELECT 1")
    pid = px.proc.pid
    wait_for(lambda: open_fds(pid) > 0, 5)
    limit = open_fds(pid) + 8
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
    mark = px.log_mark()
    cpu0 = cpu_seconds(pid)
    socks = connect_many(mport, 60)
    # a PostgreSQL client cannot get in while descriptors are out: its connect succeeds (the
    # kernel's backlog) but pgmux cannot accept it; it must not spin on it either
    pg = socket.create_connection(("127.0.0.1", px.port), timeout=5)
    time.sleep(3.5)
    cpu = cpu_seconds(pid) - cpu0
    log = px.log_since(mark).splitlines()
    # the log file and stdout both carry each line: a set counts it once
    accept_lines = sorted({l for l in log if "accept" in l})
    assert cpu < 1.0, f"pgmux used {cpu:.2f} s of CPU in 3.5 s while out of descriptors"
    assert len(accept_lines) <= 12, (len(accept_lines), accept_lines[:5])
    stats_lines = [l for l in accept_lines if "stats_listen: accept failed" in l]
    main_lines = [l for l in accept_lines if "accept failed" in l and "stats_listen" not in l]
    assert 1 <= len(stats_lines) <= 6 and 1 <= len(main_lines) <= 6, accept_lines
    assert "Too many open files" in stats_lines[0], stats_lines[0]
    # descriptors come back: the flood goes, the waiting PostgreSQL socket is accepted
    close_all(socks)
    pg.close()
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    def scraped():
        try:
            return scrape(mport, 2)[0] == 200
        except OSError:
            return False
    wait_for(scraped, 10, 0.2, "a scrape after the descriptors came back")
    with px.connect(db) as c:
        assert c.execute("SELECT 'back'").fetchone()[0] == "back"
    assert px.alive()


def read_refusal(s, deadline):
    """What a socket receives until EOF (bytes), or None when it stays open past deadline."""
    data = b""
    s.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data
            data += chunk
    except socket.timeout:
        return None
    except ConnectionResetError:
        return data


@timeout(60)
def test_raw_tcp_flood_beyond_max_client_conn(env):
    """max_client_conn = 10: of 40 silent sockets, 26 are held (10 + 16 of slack) and every
    other one gets FATAL 53300 at once and is closed, before sending anything."""
    db = env.database()
    px = env.pgmux([db], {"max_client_conn": 10, "client_login_timeout": 30})
    time.sleep(0.5)                 # the harness's readiness probe is gone
    socks = connect_many(px.port, 40)
    closed = closed_by_peer(socks, 1.0)
    assert len(closed) == 14, f"{40 - len(closed)} silent sockets held (want 10 + 16)"
    for data in closed.values():
        assert data[:1] == b"E", data
        (length,) = struct.unpack("!I", data[1:5])
        fields = parse_error(data[5:1 + length])
        assert fields["C"] == "53300" and fields["S"] == "FATAL", fields
        assert fields["M"] == "no more connections allowed (max_client_conn)", fields
    # one more is refused at once, before it sends anything
    t0 = time.monotonic()
    extra = socket.create_connection(("127.0.0.1", px.port), timeout=5)
    data = read_refusal(extra, t0 + 2)
    assert data is not None and data[:1] == b"E", data
    assert time.monotonic() - t0 < 1, "the refusal was not immediate"
    extra.close()
    # the held ones are still open (client_login_timeout is 30 s)
    held = [s for s in socks if s not in closed]
    assert not closed_by_peer(held, 0.2)
    # libpq without TLS reports the refusal; with sslmode=prefer, a libpq that has the fix for
    # CVE-2024-10977 does not trust an error that answers SSLRequest and reports only that
    try:
        psycopg.connect(px.dsn(db, sslmode="disable"), connect_timeout=5).close()
        raise AssertionError("a client got in beyond max_client_conn + 16")
    except psycopg.OperationalError as e:
        assert "no more connections allowed (max_client_conn)" in str(e), e
    try:
        psycopg.connect(px.dsn(db), connect_timeout=5).close()
        raise AssertionError("a client got in beyond max_client_conn + 16")
    except psycopg.OperationalError as e:
        assert "max_client_conn" in str(e) or "error response during SSL exchange" in str(e), e
    close_all(socks)
    def served():
        try:
            with px.connect(db, connect_timeout=2) as c:
                return c.execute("SELECT 7").fetchone()[0] == 7
        except psycopg.OperationalError:
            return False
    wait_for(served, 10, 0.2, "a client served after the flood left")
    assert px.alive()


@timeout(90)
def test_autodb_idle_timeout(env):
    """30 databases made from "*" go away once unused for autodb_idle_timeout (pools and all,
    from SHOW DATABASES, SHOW POOLS and SHOW STATS); one with a client stays, one paused
    stays until RESUME, and a removed name works again on the next login."""
    db = env.database()
    px = env.pgmux({"*": env.db_entry(db)},
                   {"pool_mode": "transaction", "autodb_idle_timeout": 2,
                    "server_idle_timeout": 1, "min_pool_size": 0})
    names = [f"auto_{i}" for i in range(30)]
    for n in names:
        with px.connect(n) as c:
            assert c.execute("SELECT current_database()").fetchone()[0] == db
    keeper = px.connect("auto_keep")
    keeper.execute("SELECT 1")
    with console(px) as cc:
        listed = {r["name"] for r in rows(cc, "DATABASES")}
        assert set(names) <= listed and "auto_keep" in listed
        assert set(names) <= {r["database"] for r in rows(cc, "POOLS")}
        cc.execute("PAUSE auto_paused")          # made by the console, kept while paused
    def gone():
        with console(px) as cc:
            dbs = {r["name"] for r in rows(cc, "DATABASES")}
            pools = {r["database"] for r in rows(cc, "POOLS")}
            stats = {r["database"] for r in rows(cc, "STATS")}
        return not (set(names) & (dbs | pools | stats)), dbs
    wait_for(lambda: gone()[0], 20, 0.5, "the unused auto databases to be removed")
    dbs = gone()[1]
    assert "auto_keep" in dbs, "a database with a connected client was removed"
    assert "auto_paused" in dbs, "a paused database was removed"
    assert "removed" in px.log_text() and "autodb_idle_timeout" in px.log_text()
    assert keeper.execute("SELECT 'kept'").fetchone()[0] == "kept"
    with console(px) as cc:
        cc.execute("RESUME auto_paused")
        lists = {r["list"]: r["items"] for r in rows(cc, "LISTS")}
    wait_for(lambda: "auto_paused" not in {r["name"] for r in px.show("DATABASES")}, 20, 0.5,
             "the resumed database to be removed")
    assert lists["databases"] <= 3, lists          # auto_keep, auto_paused (and "*" none)
    # a removed name is made again on the next login
    with px.connect(names[0]) as c:
        assert c.execute("SELECT 5").fetchone()[0] == 5
    assert names[0] in {r["name"] for r in px.show("DATABASES")}
    keeper.close()
    assert px.alive()


def login_many(port, dbname, n, batch=250):
    """n logged-in clients over raw sockets (startup packets sent a batch at a time)."""
    socks = []
    pkt = startup_packet({"user": TEST_USER, "database": dbname})
    for start in range(0, n, batch):
        group = []
        for _ in range(min(batch, n - start)):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(pkt)
            group.append(s)
        for s in group:
            buf = b""
            deadline = time.monotonic() + 20
            while True:
                # ReadyForQuery is the last message of the greeting
                i = 0
                done = False
                while i + 5 <= len(buf):
                    (length,) = struct.unpack("!I", buf[i + 1:i + 5])
                    if i + 1 + length > len(buf):
                        break
                    if buf[i:i + 1] == b"E":
                        raise AssertionError(parse_error(buf[i + 5:i + 1 + length]))
                    if buf[i:i + 1] == b"Z":
                        done = True
                    i += 1 + length
                if done:
                    break
                s.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = s.recv(65536)
                assert chunk, "pgmux closed a client during login"
                buf += chunk
        socks.extend(group)
    return socks


@timeout(180)
def test_show_listings_with_5000_clients(env):
    """With 5,000 clients connected, SHOW CLIENTS and SHOW SOCKETS return every row (simple
    and extended protocol), every SHOW works, and a console that does not read holds one
    batch of the reply, not all of it."""
    raise_own_nofile(12000)
    db = env.database()
    n = 5000
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "max_client_conn": n + 100})
    # psycopg waits with select(): its sockets must be opened before the 5,000 others
    cc = console(px)
    socks = login_many(px.port, db, n)
    ports = {s.getsockname()[1] for s in socks}
    clients = rows(cc, "CLIENTS")
    ours = [r for r in clients if r["port"] in ports]
    assert len(ours) == n, f"SHOW CLIENTS listed {len(ours)} of {n} clients"
    assert len({r["id"] for r in clients}) == len(clients), "a client listed twice"
    sockets = rows(cc, "SOCKETS")
    assert len([r for r in sockets if r["type"] == "C" and r["port"] in ports]) == n
    assert any(r["type"] == "S" for r in sockets)
    for r in sockets:
        assert r["recv_pos"] >= 0 and r["send_avail"] >= 0
    # every SHOW the console has
    for cmd in [r["command"] for r in rows(cc, "HELP") if r["access"] == "stats"]:
        cc.execute(cmd).fetchall()
    # the simple protocol (psql) gets the same
    out = px.psql("pgmux", "SHOW CLIENTS", user="postgres").stdout.splitlines()
    assert len(out) >= n + 1, len(out)

    # a console that sends SHOW CLIENTS and does not read: pgmux holds about one batch (the
    # kernel's socket buffers hold more), and the rest is made as the console reads
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", px.port))
    slow = RawConn(sock, 30).startup("pgmux", "postgres")
    # four listings: more than the kernel's buffers hold, so some are made after clients leave
    slow.send(query("SHOW CLIENTS") * 4 + query("SHOW VERSION"))
    time.sleep(1.0)
    slow_port = slow.sock.getsockname()[1]
    mine = [r for r in rows(cc, "SOCKETS") if r["type"] == "C" and r["port"] == slow_port]
    assert len(mine) == 1, mine
    assert mine[0]["send_avail"] < 256 * 1024, mine[0]
    # clients leave while the listings are being sent: those not listed yet are skipped, none
    # twice, and nothing freed is touched (the ASan build checks)
    close_all(socks[n // 2:])
    socks = socks[:n // 2]
    wait_for(lambda: sum(1 for r in rows(cc, "CLIENTS") if r["port"] in ports) == n // 2, 10)
    msgs = slow.read_until_ready(5, timeout=60)
    listings, current = [], []
    for t, b in msgs:
        if t == b"D":
            current.append(data_row(b))
        elif t == b"C":
            listings.append(current)
            current = []
    assert len(listings) == 5 and listings[4][0][0].startswith("pgmux"), len(listings)
    for listed in listings[:4]:
        ids = [r[-1] for r in listed]
        assert len(ids) == len(set(ids)), "a client listed twice"
        assert n // 2 <= len(ids) <= n + 2, len(ids)
    assert len(listings[3]) <= n // 2 + 2, [len(l) for l in listings]
    slow.close()
    cc.close()
    close_all(socks)
    assert px.alive()


@timeout(60)
def test_control_commands_admin_only(env):
    """Every control command is refused (42501) to stats_users, in the simple and the extended
    protocol, while SHOW works for them; users in neither list cannot log in; and a user taken
    off admin_users (RELOAD) or stats_users (SET) loses the rights in the session it has open."""
    db = env.database()
    px = env.pgmux([db], {"stats_users": "statsu", "admin_users": "postgres,admin2"},
                   users={TEST_USER: "", "statsu": "", "admin2": "", "nobody": ""})
    cmds = [c.format(db=db) for c in CONTROL]
    with console(px, "statsu") as c:
        assert rows(c, "POOLS") is not None and rows(c, "VERSION")
        for sql in cmds:
            try:
                c.execute(sql)
                raise AssertionError(f"stats user ran {sql}")
            except psycopg.Error as e:
                assert e.sqlstate == "42501", (sql, e)
    for sql in cmds:
        r = px.psql("pgmux", sql, user="statsu", check=False)
        assert r.returncode != 0 and "permission denied" in r.stderr, (sql, r.stderr)
    state = {r["key"]: r["value"] for r in px.show("STATE")}
    assert state["paused"] == "no" and state["shutting_down"] == "no", state
    assert all(r["paused"] == 0 and r["disabled"] == 0 for r in px.show("DATABASES"))
    try:
        console(px, "nobody").close()
        raise AssertionError("a user in neither list got into the console")
    except psycopg.OperationalError as e:
        assert "not allowed" in str(e) or getattr(e, "sqlstate", None) == "42501", e
    # rights follow the lists as they are now
    a2 = console(px, "admin2")
    s2 = console(px, "statsu")
    a2.execute("RECONNECT")                      # allowed while listed
    px.write_config(admin_users="postgres")
    with console(px) as cc:
        cc.execute("RELOAD")
        cc.execute("SET stats_users = ''")
    try:
        a2.execute("RECONNECT")
        raise AssertionError("a user taken off admin_users still ran RECONNECT")
    except psycopg.Error as e:
        assert e.sqlstate == "42501", e
    try:
        s2.execute("SHOW POOLS")
        raise AssertionError("a user taken off stats_users still ran SHOW")
    except psycopg.Error as e:
        assert e.sqlstate == "42501", e
    a2.close()
    s2.close()
    assert px.alive()


@timeout(90)
def test_autodb_churn(env):
    """Databases made from "*" are removed and made again while clients log in to them, run a
    query and leave, servers close on server_idle_timeout, and a console lists them in
    batches: nothing a removal frees is used afterwards (the ASan build checks), and every
    query gets its answer."""
    import random
    import threading
    db = env.database()
    px = env.pgmux({"*": env.db_entry(db)},
                   {"pool_mode": "transaction", "autodb_idle_timeout": 0.3,
                    "server_idle_timeout": 0.2, "max_client_conn": 200})
    stop = time.monotonic() + 6
    errors = []

    def client(seed):
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            name = f"churn_{rnd.randrange(12)}"
            try:
                with px.connect(name) as c:
                    v = rnd.randrange(1000)
                    assert c.execute("SELECT %s::int", (v,)).fetchone()[0] == v
                time.sleep(rnd.random() * 0.4)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
                return

    def lister():
        with console(px) as cc:
            while time.monotonic() < stop:
                for what in ("POOLS", "DATABASES", "STATS", "SATURATION", "SOCKETS"):
                    rows(cc, what)
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    threads.append(threading.Thread(target=lister))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert "removed" in px.log_text()
    wait_for(lambda: not [r for r in px.show("DATABASES") if r["name"].startswith("churn_")],
             10, 0.3, "every churn database to be removed")
    assert px.alive()
