"""Replication connections and host lists, to PgBouncer's documentation (1.23+ replication,
1.25 load_balance_hosts), through real clients: psycopg with replication=true/database,
pg_basebackup, pg_receivewal, pg_recvlogical; and host=a,b,c with load_balance_hosts."""

import os
import re
import signal
import subprocess
import threading
import time

import psycopg
import psycopg.errors

from pgharness import pg_bin, timeout, wait_for


def log_since(px, mark):
    """pgmux's log file from mark on (its stdout repeats the same lines)."""
    with open(px.logfile, "rb") as f:
        f.seek(mark[0])
        return f.read().decode(errors="replace")


def walsenders(pg, appname):
    """Live walsender backends on pg with this application_name."""
    return pg.sql1("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' "
                   "AND application_name = %s", (appname,))


def repl_connect(px, dbname, kind, user="postgres", **kw):
    """A psycopg connection through pgmux with the replication startup parameter.  A walsender
    takes the simple query protocol only: nothing may be prepared."""
    conn = psycopg.connect(px.dsn(dbname, user), autocommit=True, connect_timeout=10,
                           replication=kind, **kw)
    conn.prepare_threshold = None
    return conn


def text(v):
    return v.decode() if isinstance(v, (bytes, bytearray, memoryview)) else str(v)


@timeout(60)
def test_physical_repl(env):
    """replication=true: the client's own walsender, opened with its startup parameters;
    replication commands and SHOW work, SQL is refused by PostgreSQL itself; the walsender is
    gone as soon as the client is, and a normal client of the same pool never gets it."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction"})
    with repl_connect(px, db, "true", application_name="repl_phys",
                      options="-c enable_seqscan=off") as rc:
        row = rc.execute("IDENTIFY_SYSTEM").fetchone()
        sysid = env.pg.sql1("SELECT system_identifier::text FROM pg_control_system()")
        assert text(row[0]) == sysid, (row, sysid)
        assert text(rc.execute("SHOW application_name").fetchone()[0]) == "repl_phys"
        assert text(rc.execute("SHOW enable_seqscan").fetchone()[0]) == "off"
        try:
            rc.execute("SELECT 1")
            raise AssertionError("SQL ran on a physical walsender")
        except psycopg.errors.FeatureNotSupported as e:
            assert "WAL sender for physical replication" in str(e), e
        assert walsenders(env.pg, "repl_phys") == 1
        with px.connect(db, user="postgres") as nc:
            kind = nc.execute("SELECT backend_type FROM pg_stat_activity "
                              "WHERE pid = pg_backend_pid()").fetchone()[0]
            assert kind == "client backend", kind
        # the link survives the normal client's coming and going
        assert rc.execute("IDENTIFY_SYSTEM").fetchone()[0] == row[0]
    wait_for(lambda: walsenders(env.pg, "repl_phys") == 0, 10, 0.05, "walsender gone")
    servers = px.show("SERVERS")
    assert all(s["state"] != "active" for s in servers), servers


@timeout(60)
def test_logical_repl_backend(env):
    """replication=database in transaction pooling: every statement of the client runs on its
    one walsender (the pid never changes), which no normal client ever sees."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction"})
    with repl_connect(px, db, "database", application_name="repl_log",
                      options="-c enable_seqscan=off") as rc:
        pid = rc.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert text(rc.execute("SHOW enable_seqscan").fetchone()[0]) == "off"
        rc.execute("IDENTIFY_SYSTEM")
        normal_pids = set()
        for _ in range(5):
            with px.connect(db, user="postgres") as nc:
                normal_pids.add(nc.execute("SELECT pg_backend_pid()").fetchone()[0])
            assert rc.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        assert pid not in normal_pids, (pid, normal_pids)
        assert env.pg.sql1("SELECT backend_type FROM pg_stat_activity WHERE pid = %s",
                           (pid,)) == "walsender"
    wait_for(lambda: env.pg.sql1("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                 (pid,)) == 0, 10, 0.05, "walsender gone")


@timeout(90)
def test_repl_pool_limits(env):
    """A replication server counts in pool_size: with the pool full of idle pooled servers one
    is evicted for it; with the pool full of replication clients the next one waits its turn."""
    db = env.database()
    px = env.pgmux({db: env.db_entry(db, pool_size=1)})
    with px.connect(db, user="postgres") as nc:
        nc.execute("SELECT 1")
    assert len(px.show("SERVERS")) == 1
    mark = px.log_mark()
    first = repl_connect(px, db, "database", application_name="repl_a")
    assert "closing because: evicted" in log_since(px, mark), log_since(px, mark)
    got = {}

    def second():
        t0 = time.monotonic()
        with repl_connect(px, db, "database", application_name="repl_b") as c:
            c.execute("IDENTIFY_SYSTEM")
            got["waited"] = time.monotonic() - t0

    t = threading.Thread(target=second)
    t.start()
    time.sleep(1.0)
    assert "waited" not in got, "a second replication client got past pool_size=1"
    pools = [p for p in px.show("POOLS") if p["database"] == db]
    assert pools and pools[0]["cl_waiting"] == 1, pools
    first.close()
    t.join(15)
    assert got.get("waited", 0) >= 0.9, got
    wait_for(lambda: walsenders(env.pg, "repl_b") == 0, 10, 0.05, "walsender gone")
    # and a normal client still gets the pool once replication has left
    with px.connect(db, user="postgres") as nc:
        assert nc.execute("SELECT 1").fetchone()[0] == 1


@timeout(60)
def test_repl_login_refused(env):
    """A role without REPLICATION: the server refuses the walsender; that client gets
    PgBouncer's 'login failed' (the server's reason as DETAIL), and the pool's normal clients
    are not made to wait for server_login_retry."""
    db = env.database()
    px = env.pgmux([db], {"server_login_retry": 30})
    mark = px.log_mark()
    try:
        repl_connect(px, db, "database", user="app").close()
        raise AssertionError("a role without REPLICATION got a walsender")
    except psycopg.OperationalError as e:
        assert "login failed" in str(e), e
        assert "replication" in str(e), e
    log = log_since(px, mark)
    assert len(re.findall(r"closing because: login failed \(age=", log)) == 2, log
    assert "must be superuser or replication role" in log, log
    with px.connect(db) as nc:
        assert nc.execute("SELECT 1").fetchone()[0] == 1


@timeout(60)
def test_replication_refusals(env):
    """A replication value PostgreSQL would refuse, and replication on the console."""
    db = env.database()
    px = env.pgmux([db])
    for kind, words in (("maybe", "invalid value for parameter"), ("1", None)):
        try:
            with repl_connect(px, db, kind, application_name="repl_x") as c:
                c.execute("IDENTIFY_SYSTEM")
            assert words is None, kind
        except psycopg.OperationalError as e:
            assert words and words in str(e), (kind, e)
    try:
        repl_connect(px, "pgmux", "database").close()
        raise AssertionError("replication on the console")
    except psycopg.OperationalError as e:
        assert "not supported on the console" in str(e), e
    # replication=false is a normal connection, pooled as usual
    with repl_connect(px, db, "false") as c:
        assert c.execute("SELECT backend_type FROM pg_stat_activity "
                         "WHERE pid = pg_backend_pid()").fetchone()[0] == "client backend"


@timeout(180)
def test_repl_tools(env):
    """pg_basebackup, pg_receivewal and pg_recvlogical stream through pgmux (CopyBoth both
    ways); a streaming client killed mid-stream takes its walsender with it."""
    topo = env.topology(n_replicas=0, extra_conf={"wal_level": "logical"})
    pg = topo.primary
    pg.create_database("repl_src")
    pg.sql("CREATE TABLE t(a int)", dbname="repl_src")
    entry = f"host={pg.host} port={pg.port}"
    px = env.pgmux({"repl_src": f"{entry} dbname=repl_src",
                    "replication": f"{entry} dbname=replication"})
    base = f"host=127.0.0.1 port={px.port} user=postgres"
    envv = dict(os.environ, PGCONNECT_TIMEOUT="10")

    dump = env.dir / "basebackup"
    r = subprocess.run([pg_bin("pg_basebackup"), "--dbname", base, "--checkpoint=fast",
                        "--pgdata", str(dump), "-X", "stream"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=120, env=envv)
    assert r.returncode == 0, r.stdout
    assert (dump / "PG_VERSION").exists()

    pg.sql("SELECT pg_create_physical_replication_slot('px_phys')")
    waldir = env.dir / "wal"
    waldir.mkdir()
    p = subprocess.Popen([pg_bin("pg_receivewal"), "--dbname", base, "--slot=px_phys",
                          "--directory", str(waldir)], env=envv)

    def wal_written():
        # the stream starts at a segment boundary: only new WAL makes the walsender send
        pg.sql("INSERT INTO t SELECT generate_series(1, 100)", dbname="repl_src")
        return any(waldir.iterdir())
    wait_for(wal_written, 15, 0.2, "pg_receivewal writing")
    p.send_signal(signal.SIGINT)
    assert p.wait(10) == 0
    wait_for(lambda: not pg.sql1("SELECT active FROM pg_replication_slots "
                                 "WHERE slot_name = 'px_phys'"), 10, 0.05, "slot released")

    pg.sql("SELECT pg_create_logical_replication_slot('px_log', 'test_decoding')",
           dbname="repl_src")
    p = subprocess.Popen([pg_bin("pg_recvlogical"), "--dbname", f"{base} dbname=repl_src",
                          "--slot=px_log", "--file=-", "--no-loop", "--start"],
                         stdout=subprocess.PIPE, env=envv)
    try:
        wait_for(lambda: pg.sql1("SELECT active FROM pg_replication_slots "
                                 "WHERE slot_name = 'px_log'"), 15, 0.05, "recvlogical streaming")
        pg.sql("INSERT INTO t VALUES (42)", dbname="repl_src")
        assert p.stdout.readline().startswith(b"BEGIN ")
        assert b"INSERT: a[integer]:42" in p.stdout.readline()
        assert p.stdout.readline().startswith(b"COMMIT ")
    finally:
        p.kill()   # mid-stream, no goodbye
        p.communicate(timeout=5)
    wait_for(lambda: not pg.sql1("SELECT active FROM pg_replication_slots "
                                 "WHERE slot_name = 'px_log'"), 10, 0.05,
             "walsender closed with its client")
    pg.sql("SELECT pg_drop_replication_slot('px_log')")
    pg.sql("SELECT pg_drop_replication_slot('px_phys')")


def new_conn_lines(text):
    return re.findall(r"@(\S+) new connection to server \(from ", text)


def two_at_once(px, db):
    def one():
        with px.connect(db, user="postgres") as c:
            c.execute("SELECT pg_sleep(0.5)")
    ts = [threading.Thread(target=one) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)


@timeout(60)
def test_host_list_modes(env):
    """host=a,b: round-robin (the default) gives each new server connection the next entry;
    disable keeps the first until it fails.  The entries: TCP and the server's Unix socket."""
    db = env.database()
    hosts = f"127.0.0.1,{env.pg.sockdir}"
    px = env.pgmux({db: f"host={hosts} port={env.pg.port} dbname={db}",
                    "lb_off": f"host={hosts} port={env.pg.port} dbname={db} "
                              f"load_balance_hosts=disable"})
    mark = px.log_mark()
    two_at_once(px, db)
    used = new_conn_lines(log_since(px, mark))
    assert len(used) == 2 and used[0].startswith("127.0.0.1:") and used[1].startswith("unix:"), used
    mark = px.log_mark()
    two_at_once(px, "lb_off")
    used = new_conn_lines(log_since(px, mark))
    assert len(used) == 2 and all(u.startswith("127.0.0.1:") for u in used), used
    # a cancel reaches the backend on whichever entry its server went to
    for _ in range(2):
        with px.connect(db, user="postgres") as c:
            threading.Timer(0.5, c.cancel).start()
            try:
                c.execute("SELECT pg_sleep(20)")
                raise AssertionError("not cancelled")
            except psycopg.errors.QueryCanceled:
                pass


@timeout(60)
def test_host_list_failover(env):
    """disable with a first entry that does not resolve: one failed lookup, then every
    connection goes to the next entry, and no client sees the failure."""
    db = env.database()
    px = env.pgmux({db: f"host=no-such-host.invalid,127.0.0.1 port={env.pg.port} dbname={db} "
                        f"load_balance_hosts=disable"})
    mark = px.log_mark()
    two_at_once(px, db)
    log = log_since(px, mark)
    assert len(re.findall(r"closing because: server DNS lookup failed", log)) == 1, log
    used = new_conn_lines(log)
    assert len(used) == 2 and all(u.startswith("127.0.0.1:") for u in used), log


@timeout(60)
def test_lbh_show_reload(env):
    """SHOW DATABASES shows load_balance_hosts; RELOAD changes it; a bad value or an empty host
    entry is refused with the file's line."""
    db = env.database()
    entry = f"host=127.0.0.1,{env.pg.sockdir} port={env.pg.port} dbname={db}"
    px = env.pgmux({db: entry + " load_balance_hosts=disable"})

    def lbh():
        return [r for r in px.show("DATABASES") if r["name"] == db][0]["load_balance_hosts"]
    assert lbh() == "disable"
    px.databases[db] = entry + " load_balance_hosts=round-robin"
    px.write_config()
    px.reload()
    assert lbh() == "round-robin"
    with px.connect(db) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    for bad, words in ((entry + " load_balance_hosts=sometimes", "expected round-robin or disable"),
                       (f"host=127.0.0.1,,x port={env.pg.port} dbname={db}", "is empty")):
        px2 = env.pgmux({db: bad}, start=False)
        r = subprocess.run(px2.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=10)
        assert r.returncode != 0 and words in r.stdout, r.stdout
