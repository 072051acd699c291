"""Read/write routing to streaming replicas ([database X] sections): reads spread over the
replicas, writes and ordinary transactions on the primary, BEGIN READ ONLY on a replica, hint
comments and SET pgmux.role, read_routing = off, the 25006 retry, SHOW BACKENDS, replica lag,
a replica going down, read-your-writes, and config errors.

Which server answered is told by inet_server_port(): every server listens on its own port of
127.0.0.1.  psycopg 3 sends a statement without parameters with the simple query protocol;
q_ext() forces the extended one (binary results), as parameters do."""

import threading
import time

import psycopg
from psycopg import pq

from pgharness import PGMUX_SECTION, TEST_USER, Skip, timeout, wait_for

BACKENDS_COLUMNS = ["database", "backend", "shard", "host", "port", "config_role", "role", "seen_role",
                    "state", "lag_bytes", "lag_ms", "weight", "cl_active", "cl_waiting",
                    "sv_active", "sv_idle", "sv_used", "reads", "writes", "retries",
                    "last_error"]
PORT = "SELECT inet_server_port()"


# ----------------------------------------------------------------------------------------------
# helpers (test_failover.py uses them too)

def q_simple(conn, sql):
    """First column of the first row, simple query protocol (psycopg, no parameters)."""
    return conn.execute(sql).fetchone()[0]


def q_ext(conn, sql, params=None):
    """First column of the first row, extended query protocol (Parse/Bind/Execute)."""
    if params:
        return conn.execute(sql, params).fetchone()[0]
    return conn.execute(sql, binary=True).fetchone()[0]


def q_ext_with(*params):
    """q_ext with these parameters (parameters force the extended protocol anyway)."""
    def q_ext_params(conn, sql):
        return q_ext(conn, sql, params)
    return q_ext_params


def q_exec(conn, sql):
    """The first value of the last result, through libpq's PQexec (simple protocol)."""
    res = conn.pgconn.exec_(sql.encode())
    if res.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        raise psycopg.Error(f"{sql!r} failed: {res.error_message.decode(errors='replace')}")
    if res.status == pq.ExecStatus.COMMAND_OK:
        return res.command_status.decode()
    v = res.get_value(0, 0)
    return None if v is None else v.decode()


def num(v):
    """A console value as a number (the console may send text); None stays None."""
    if v is None or v == "":
        return None
    f = float(v)
    return int(f) if f == int(f) else f


def backends(px, db):
    """SHOW BACKENDS rows of database db, keyed by role name: primary, replica0, ..."""
    out = {}
    for r in px.show("BACKENDS"):
        if r["database"] == db:
            out[str(r["backend"]).rsplit("/", 1)[-1]] = r
    return out


def brief(rows):
    keys = ("port", "role", "seen_role", "state", "lag_bytes", "reads", "writes", "retries",
            "last_error")
    return {n: {k: r.get(k) for k in keys} for n, r in rows.items()}


def wait_backends(px, db, pred, timeout=10, what="SHOW BACKENDS condition"):
    """Polls SHOW BACKENDS until pred(rows by role name) is true; returns the rows."""
    last = {}

    def check():
        last["rows"] = backends(px, db)
        return last["rows"] if pred(last["rows"]) else None
    try:
        return wait_for(check, timeout, 0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; SHOW BACKENDS: "
                             f"{brief(last.get('rows', {}))}") from None


def wait_ready(px, db, n_replicas, timeout=10):
    """Until the monitor has seen every backend up, in its configured role."""
    def ok(rows):
        want = ["primary"] + [f"replica{i}" for i in range(n_replicas)]
        if sorted(rows) != sorted(want):
            return False
        return all(r["state"] == "up" and r["seen_role"] == r["config_role"]
                   for r in rows.values())
    return wait_backends(px, db, ok, timeout, f"{db}: primary and {n_replicas} replicas up")


def need_routing():
    if PGMUX_SECTION == "pgbouncer":
        raise Skip("PgBouncer has no [database X] sections (read/write routing)")


def routed(env, db, primary, replicas, settings=None, weights=None, **keys):
    """A pgmux with one [database db] section; waits until its monitor saw every backend."""
    need_routing()
    keys.setdefault("pool_mode", "transaction")
    keys.setdefault("pool_size", 4)
    sets = {"monitor_interval": 0.2, "max_client_conn": 200}
    sets.update(settings or {})
    px = env.pgmux({}, sets, sections={
        db: env.routing_section(db, primary, replicas, weights=weights, **keys)})
    wait_ready(px, db, len(replicas))
    return px


def shared_setup(env, n=2):
    """Shared replicas and a fresh database that they have replayed."""
    need_routing()
    reps = env.replicas(n)
    db = env.database(replicas=reps)
    return reps, db


def ddl(env, db, primary, replicas, *statements):
    """Runs statements directly on primary (as the test user), waits for the replicas."""
    for s in statements:
        env.sql(db, s, server=primary)
    for r in replicas:
        r.wait_replay(primary)


def read_load(px, db, nthreads, iterations, queries, barrier_timeout=10):
    """nthreads clients run every query of queries (list of (fn, sql)) iterations times at
    once; returns (list of (query, value), list of errors)."""
    conns = [px.connect(db) for _ in range(nthreads)]
    results, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(nthreads)

    def worker(conn):
        try:
            barrier.wait(barrier_timeout)
            for _ in range(iterations):
                for fn, sql in queries:
                    v = fn(conn, sql)
                    with lock:
                        results.append((sql, v))
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(e)
    threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in conns:
        c.close()
    return results, errors


# ----------------------------------------------------------------------------------------------
# harness

@timeout(60)
def test_harness_replicas(env):
    """No pgmux: the shared replicas stream and replay, pause/resume work, a private topology
    starts quickly, promotes and can be followed."""
    t0 = time.monotonic()
    reps = env.replicas(2)
    print(f"shared replicas ready in {time.monotonic() - t0:.2f}s")
    for r in reps:
        assert r.is_in_recovery(), f"{r.name} is not a standby"
        assert r.sql1("SHOW hot_standby") == "on"
        assert env.pg.replication_state(r) == "streaming", env.pg.sql(
            "SELECT application_name, state FROM pg_stat_replication")
    assert not env.pg.is_in_recovery()
    db = env.database(replicas=reps)
    for r in reps:
        assert r.sql1("SELECT count(*) FROM pg_database WHERE datname = %s", (db,)) == 1
    ddl(env, db, env.pg, reps, "CREATE TABLE t (x int)", "INSERT INTO t VALUES (1)")
    for r in reps:
        assert env.sql1(db, "SELECT count(*) FROM t", server=r) == 1
        # a standby refuses writes with SQLSTATE 25006
        try:
            env.sql(db, "INSERT INTO t VALUES (2)", server=r)
            raise AssertionError("a standby accepted an INSERT")
        except psycopg.Error as e:
            assert e.sqlstate == "25006", e

    # pause / resume on a shared replica (resumed by cleanup even if this fails)
    env.pause_shared_replay(reps[0])
    assert reps[0].replay_paused_state() == "paused"
    env.sql(db, "INSERT INTO t SELECT g FROM generate_series(1, 20000) g")  # ~1 MB of WAL
    reps[1].wait_replay(env.pg)
    assert env.sql1(db, "SELECT count(*) FROM t", server=reps[1]) == 20001
    time.sleep(0.3)
    assert env.sql1(db, "SELECT count(*) FROM t", server=reps[0]) == 1, "replayed while paused"
    lag = reps[0].lag_bytes(env.pg)
    assert lag > 500_000, f"paused replica lags only {lag} bytes"
    try:
        reps[0].wait_replay(env.pg, timeout=0.5)
        raise AssertionError("wait_replay returned on a paused replica")
    except TimeoutError as e:
        assert "paused" in str(e), e
    reps[0].resume_replay()
    reps[0].wait_replay(env.pg)
    assert env.sql1(db, "SELECT count(*) FROM t", server=reps[0]) == 20001
    assert reps[0].replay_paused_state() == "not paused"

    # a private topology: start, roles, promote, follow
    topo = env.topology(n_replicas=2)
    assert topo.timings["total"] < 15, topo.timings
    p, r0, r1 = topo.primary, topo.replicas[0], topo.replicas[1]
    assert len({p.port, r0.port, r1.port, env.pg.port}) == 4
    assert p.sql1("SELECT count(*) FROM pg_roles WHERE rolname IN "
                  "('app', 'pw_password', 'pw_md5', 'pw_scram')") == 4
    pdb = topo.database("orders", owner=TEST_USER)
    env.sql(pdb, "CREATE TABLE t (x int)", server=p)
    env.sql(pdb, "INSERT INTO t VALUES (1)", server=p)
    topo.wait_replay()
    for r in topo.replicas:
        assert r.is_in_recovery() and env.sql1(pdb, "SELECT count(*) FROM t", server=r) == 1
    t0 = time.monotonic()
    p.stop(mode="immediate")
    r0.promote(method="sql")
    promote_s = time.monotonic() - t0
    assert not r0.is_in_recovery() and r1.is_in_recovery()
    assert topo.current_primary() is r0
    env.sql(pdb, "INSERT INTO t VALUES (2)", server=r0)
    r1.follow(r0)
    r0.wait_streaming(r1, timeout=20)
    r1.wait_replay(r0)
    assert env.sql1(pdb, "SELECT count(*) FROM t", server=r1) == 2
    print(f"private topology: {topo.timings}; stop + promote {promote_s:.2f}s")


# ----------------------------------------------------------------------------------------------
# routing

@timeout(60)
def test_reads_spread_writes_primary(env):
    reps, db = shared_setup(env)
    ddl(env, db, env.pg, reps,
        "CREATE TABLE t (id serial PRIMARY KEY, v int)", "CREATE SEQUENCE s",
        "INSERT INTO t (v) VALUES (0)",
        "CREATE VIEW whereami AS SELECT inet_server_port() AS port")
    px = routed(env, db, env.pg, reps)
    rports = {r.port for r in reps}
    names = {env.pg.port: "primary", reps[0].port: "replica0", reps[1].port: "replica1"}

    # concurrent reads, both protocols: only the replicas answer, both of them
    reads = [
        (q_simple, "SELECT inet_server_port() FROM pg_sleep(0.005)"),
        (q_ext, PORT),
        (q_ext_with(0), "SELECT inet_server_port() + %s::int"),
        (q_exec, PORT),
        (q_simple, "SELECT pg_is_in_recovery()"),
        (q_ext, "SELECT pg_is_in_recovery()"),
        (q_simple, "SHOW port"),
        (q_ext, "VALUES (inet_server_port())"),
        (q_simple, "TABLE whereami"),
    ]
    results, errors = read_load(px, db, 4, 15, reads)
    assert not errors, f"read errors: {errors[:3]}"
    ports = [int(v) for sql, v in results if "recovery" not in sql]
    assert len(ports) == 4 * 15 * (len(reads) - 2)
    seen = {names.get(p, p): ports.count(p) for p in set(ports)}
    assert set(ports) <= rports, f"reads answered by {seen} (primary is {env.pg.port})"
    assert set(ports) == rports, f"reads did not spread over both replicas: {seen}"
    rec = [v for sql, v in results if "recovery" in sql]
    assert all(v in (True, "t") for v in rec), f"pg_is_in_recovery() through pgmux: {set(rec)}"
    for _ in range(4):  # psql: simple protocol, a new client each time
        out = px.psql(db, PORT).stdout.strip()
        assert int(out) in rports, f"psql read answered by port {out}"

    # writes, and statements that must run on the primary
    c = px.connect(db)
    writes = [
        (q_simple, "INSERT INTO t (v) VALUES (1) RETURNING inet_server_port()"),
        (q_ext_with(2), "INSERT INTO t (v) VALUES (%s) RETURNING inet_server_port()"),
        (q_simple, "SELECT inet_server_port() FROM (SELECT nextval('s')) x"),
        (q_ext, "SELECT inet_server_port() FROM (SELECT nextval('s')) x"),
        (q_simple, "SELECT inet_server_port() FROM (SELECT setval('s', 100)) x"),
        (q_simple, "SELECT inet_server_port() FROM t WHERE id = 1 FOR UPDATE"),
        (q_ext, "SELECT inet_server_port() FROM t WHERE id = 1 FOR UPDATE"),
        (q_simple, "SELECT inet_server_port() FROM t WHERE id = 1 FOR SHARE"),
        (q_simple, "WITH u AS (UPDATE t SET v = v + 1 WHERE id = 1 RETURNING id) "
                   "SELECT inet_server_port() FROM u"),
        (q_ext, "WITH u AS (UPDATE t SET v = v + 1 WHERE id = 1 RETURNING id) "
                "SELECT inet_server_port() FROM u"),
        (q_exec, "UPDATE t SET v = 0 WHERE id = 1; SELECT inet_server_port()"),
        (q_simple, "SELECT inet_server_port(); INSERT INTO t (v) VALUES (3)"),
    ]
    for fn, sql in writes:
        try:
            port = int(fn(c, sql))
        except psycopg.Error as e:
            raise AssertionError(f"{sql!r} failed (sent to a replica?): {e}") from None
        assert port == env.pg.port, f"{sql!r} ran on {names.get(port, port)}"
    # an ordinary transaction: every statement on the primary (simple and extended)
    for _ in range(2):
        with c.transaction():
            inside = [q_simple(c, PORT), q_ext(c, PORT), q_ext(c, "SELECT %s::int + 0", (1,)),
                      q_simple(c, "SELECT pg_is_in_recovery()")]
        assert inside[:2] == [env.pg.port] * 2 and inside[3] is False, \
            f"BEGIN ... COMMIT ran on {inside}"
    c.execute("BEGIN")
    inside = [q_simple(c, PORT), q_ext(c, PORT)]
    c.execute("COMMIT")
    assert inside == [env.pg.port] * 2, f"explicit BEGIN: ran on {inside}"
    assert env.sql1(db, "SELECT count(*) FROM t", server=env.pg) == 4
    c.close()

    # nothing was misrouted and rescued by the 25006 retry; the counters moved
    rows = backends(px, db)
    assert all(num(r["retries"]) == 0 for r in rows.values()), \
        f"a write went to a replica first: {brief(rows)}"
    # at least the 9 data-changing statements above (locking reads may count either way)
    assert num(rows["primary"]["writes"]) >= 9, brief(rows)
    assert num(rows["replica0"]["reads"]) > 0 and num(rows["replica1"]["reads"]) > 0, brief(rows)


@timeout(60)
def test_read_only_transaction_on_replica(env):
    reps, db = shared_setup(env)
    ddl(env, db, env.pg, reps, "CREATE TABLE t (x int)", "INSERT INTO t VALUES (1)")
    px = routed(env, db, env.pg, reps)
    rports = {r.port for r in reps}
    c = px.connect(db)
    for begin in ("BEGIN READ ONLY", "START TRANSACTION READ ONLY", "begin read only",
                  "BEGIN TRANSACTION READ ONLY"):
        for _ in range(3):
            c.execute(begin)
            seen = [q_simple(c, PORT), q_ext(c, PORT),
                    q_ext(c, "SELECT %s::int * 0 + inet_server_port()", (7,))]
            assert q_simple(c, "SELECT count(*) FROM t") == 1
            seen.append(q_simple(c, PORT))
            pids = {q_simple(c, "SELECT pg_backend_pid()"), q_ext(c, "SELECT pg_backend_pid()")}
            rec = q_simple(c, "SELECT pg_is_in_recovery()")
            c.execute("COMMIT")
            assert len(set(seen)) == 1 and seen[0] in rports, \
                f"{begin}: statements ran on {seen} (replicas {rports})"
            assert len(pids) == 1, f"{begin}: one transaction on backends {pids}"
            assert rec is True
    # psycopg's own read-only transactions (BEGIN READ ONLY, sent by the driver)
    ro = px.connect(db, autocommit=False)
    ro.read_only = True
    for _ in range(3):
        seen = {q_simple(ro, PORT), q_ext(ro, PORT)}
        ro.commit()
        assert len(seen) == 1 and seen <= rports, f"read_only transaction ran on {seen}"
    ro.close()
    # a read-write transaction right after still goes to the primary
    with c.transaction():
        assert q_simple(c, PORT) == env.pg.port
    c.close()


@timeout(60)
def test_hint_comments(env):
    reps, db = shared_setup(env)
    px = routed(env, db, env.pg, reps)
    rports = {r.port for r in reps}
    c = px.connect(db)
    for _ in range(5):
        for fn in (q_simple, q_ext, q_exec):
            p = int(fn(c, "/* pgmux: role=primary */ SELECT inet_server_port()"))
            assert p == env.pg.port, f"role=primary hint ({fn.__name__}) ran on port {p}"
            p = int(fn(c, "/* pgmux: role=replica */ SELECT inet_server_port()"))
            assert p in rports, f"role=replica hint ({fn.__name__}) ran on port {p}"
            # no hint: a replica; the hints do not stick to the session
            p = int(fn(c, PORT))
            assert p in rports, f"plain read after a hint ({fn.__name__}) ran on port {p}"
    assert int(px.psql(db, "/* pgmux: role=primary */ SELECT inet_server_port()")
               .stdout) == env.pg.port
    c.close()


def _pgmux_role_activity(servers, db):
    """Backends of db on servers whose last statement mentions pgmux.role (a forwarded SET)."""
    found = []
    for s in servers:
        found += s.sql("SELECT inet_server_port(), query FROM pg_stat_activity WHERE "
                       "datname = %s AND pid <> pg_backend_pid() AND query ILIKE "
                       "'%%pgmux.role%%'", (db,))
    return found


@timeout(60)
def test_set_role(env):
    """SET pgmux.role = primary | replica | auto for the session; pgmux answers the SET itself
    (simple protocol here), no server ever sees it."""
    reps, db = shared_setup(env)
    ddl(env, db, env.pg, reps, "CREATE TABLE t (x int)")
    # one server per backend: a forwarded SET would stay visible on it
    px = routed(env, db, env.pg, reps, pool_size=1)
    rports = {r.port for r in reps}
    c = px.connect(db)
    assert q_simple(c, PORT) in rports

    assert q_exec(c, "SET pgmux.role = 'primary'") == "SET"
    for _ in range(5):
        for fn in (q_simple, q_ext, q_exec):
            p = int(fn(c, PORT))
            assert p == env.pg.port, f"after SET pgmux.role = 'primary' ({fn.__name__}): {p}"
    other = px.connect(db)  # the setting is per client
    assert q_simple(other, PORT) in rports, "SET pgmux.role leaked to another client"
    other.close()

    assert q_exec(c, "SET pgmux.role = 'replica'") == "SET"
    for _ in range(5):
        p = int(q_ext(c, PORT))
        assert p in rports, f"after SET pgmux.role = 'replica': {p}"

    assert q_exec(c, "SET pgmux.role = 'auto'") == "SET"
    for _ in range(5):
        p = q_simple(c, PORT)
        assert p in rports, f"after SET pgmux.role = 'auto', a read ran on {p}"
        p = q_simple(c, "INSERT INTO t VALUES (1) RETURNING inet_server_port()")
        assert p == env.pg.port, f"after SET pgmux.role = 'auto', a write ran on {p}"

    # nobody forwarded the SET: no server backend ran it, and no server has the GUC set
    assert not _pgmux_role_activity([env.pg] + reps, db)
    for _ in range(3):
        v = q_simple(c, "/* pgmux: role=primary */ SELECT current_setting('pgmux.role', true)")
        assert v in (None, ""), f"the primary's backend has pgmux.role = {v!r}: SET forwarded"
        v = q_simple(c, "/* pgmux: role=replica */ SELECT current_setting('pgmux.role', true)")
        assert v in (None, ""), f"a replica's backend has pgmux.role = {v!r}: SET forwarded"
    c.close()


@timeout(60)
def test_set_role_extended_protocol(env):
    """The same SET sent with the extended protocol (as JDBC and friends do): answered by pgmux
    (ParseComplete/BindComplete/CommandComplete "SET"), never forwarded."""
    reps, db = shared_setup(env)
    px = routed(env, db, env.pg, reps, pool_size=1)
    rports = {r.port for r in reps}
    c = px.connect(db)
    cur = c.execute("SET pgmux.role = 'primary'", binary=True)
    assert cur.statusmessage == "SET", cur.statusmessage
    assert {q_ext(c, PORT) for _ in range(3)} == {env.pg.port}
    assert not _pgmux_role_activity([env.pg] + reps, db)
    c.execute("SET pgmux.role = 'auto'", binary=True)
    assert {q_ext(c, PORT) for _ in range(3)} <= rports
    v = q_simple(c, "/* pgmux: role=primary */ SELECT current_setting('pgmux.role', true)")
    assert v in (None, ""), f"pgmux.role = {v!r} on the primary's backend: SET forwarded"
    c.close()


@timeout(60)
def test_read_routing_off(env):
    reps, db = shared_setup(env)
    px = routed(env, db, env.pg, reps, read_routing="off")
    results, errors = read_load(px, db, 3, 10, [(q_simple, PORT), (q_ext, PORT),
                                                (q_simple, "SELECT pg_is_in_recovery()")])
    assert not errors, errors[:3]
    vals = {v for sql, v in results}
    assert vals == {env.pg.port, False}, f"read_routing = off: answered by {vals}"
    c = px.connect(db)
    c.execute("BEGIN READ ONLY")
    p = q_simple(c, PORT)
    c.execute("COMMIT")
    assert p == env.pg.port, f"read_routing = off: BEGIN READ ONLY ran on {p}"
    c.close()
    rows = backends(px, db)
    assert all(num(rows[f"replica{i}"]["reads"]) == 0 for i in range(2)) and \
        num(rows["primary"]["reads"]) + num(rows["primary"]["writes"]) > 0, brief(rows)


@timeout(60)
def test_read_only_violation_retried_on_primary(env):
    """SELECT of a VOLATILE function that writes looks like a read: the replica refuses it
    (25006) and pgmux runs it on the primary (single autocommit simple-protocol statement)."""
    reps, db = shared_setup(env)
    ddl(env, db, env.pg, reps, "CREATE TABLE t (x int)",
        "CREATE FUNCTION w() RETURNS int LANGUAGE sql AS "
        "'INSERT INTO t VALUES (1) RETURNING 1'")
    px = routed(env, db, env.pg, reps)
    c = px.connect(db)
    assert q_simple(c, "SELECT w()") == 1
    assert int(q_exec(c, "SELECT w()")) == 1
    assert px.psql(db, "SELECT w()").stdout.strip() == "1"
    assert env.sql1(db, "SELECT count(*) FROM t", server=env.pg) == 3
    # the connection is still in a sane state, and reads still go to replicas
    assert q_simple(c, PORT) in {r.port for r in reps}
    c.close()
    rows = backends(px, db)
    assert sum(num(r["retries"]) for r in rows.values()) >= 3, brief(rows)


@timeout(60)
def test_show_backends(env):
    reps, db = shared_setup(env)
    ddl(env, db, env.pg, reps, "CREATE TABLE t (x int)")
    px = routed(env, db, env.pg, reps, weights=[None, 2])
    rows = px.show("BACKENDS")
    assert rows and list(rows[0]) == BACKENDS_COLUMNS, \
        f"SHOW BACKENDS columns: {list(rows[0]) if rows else None}"
    mine = [r for r in rows if r["database"] == db]
    assert sorted(r["backend"] for r in mine) == [f"{db}/primary", f"{db}/replica0",
                                                  f"{db}/replica1"], mine
    by = backends(px, db)
    want = {"primary": (env.pg, "primary"), "replica0": (reps[0], "replica"),
            "replica1": (reps[1], "replica")}
    for name, (srv, role) in want.items():
        r = by[name]
        assert r["host"] == "127.0.0.1" and num(r["port"]) == srv.port, r
        assert (r["config_role"], r["role"], r["seen_role"], r["state"]) == \
            (role, role, role, "up"), r
        for k in ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "reads",
                  "writes", "retries"):
            assert num(r[k]) is not None and num(r[k]) >= 0, (k, r)
        assert not r["last_error"], r
    assert num(by["replica1"]["weight"]) == 2 and num(by["replica0"]["weight"]) == 1, brief(by)
    for name in ("replica0", "replica1"):
        lag = num(by[name]["lag_bytes"])
        assert lag is not None and 0 <= lag < 16 << 20, by[name]

    before = backends(px, db)
    c = px.connect(db)
    nreads, nwrites = 12, 5
    for i in range(nreads):
        (q_simple if i % 2 else q_ext)(c, PORT)
    for i in range(nwrites):
        c.execute("INSERT INTO t VALUES (%s)", (i,))
    after = backends(px, db)
    d_reads = sum(num(after[n]["reads"]) - num(before[n]["reads"])
                  for n in ("replica0", "replica1"))
    d_writes = num(after["primary"]["writes"]) - num(before["primary"]["writes"])
    assert d_reads >= nreads, f"replica reads went up by {d_reads}: {brief(after)}"
    assert d_writes >= nwrites, f"primary writes went up by {d_writes}: {brief(after)}"
    used = [n for n in ("replica0", "replica1")
            if num(after[n]["reads"]) > num(before[n]["reads"])]
    for n in used + ["primary"]:
        r = after[n]
        assert num(r["sv_idle"]) + num(r["sv_used"]) + num(r["sv_active"]) >= 1, r
    # SHOW POOLS: one row per backend pool, named like the backend
    pools = {r["database"] for r in px.show("POOLS") if r["user"] == TEST_USER}
    assert f"{db}/primary" in pools and any(f"{db}/{n}" in pools for n in used), pools
    c.close()


@timeout(60)
def test_lagging_replica_gets_no_reads(env):
    need_routing()
    topo = env.topology(2)
    p, r0, r1 = topo.primary, topo.replicas[0], topo.replicas[1]
    db = topo.database("orders", owner=TEST_USER)
    ddl(env, db, p, topo.replicas, "CREATE TABLE big (x int, pad text)")
    limit = 128 * 1024
    px = routed(env, db, p, topo.replicas, max_replica_lag="128kB")
    rports = {r0.port, r1.port}
    first = {v for _, v in read_load(px, db, 3, 10, [(q_simple, PORT)])[0]}
    assert first <= rports, f"reads before the pause answered by {first}"

    r0.pause_replay()
    env.sql(db, "INSERT INTO big SELECT g, repeat('x', 1000) FROM generate_series(1, 3000) g",
            server=p)  # ~3.5 MB of WAL
    t_write = time.monotonic()
    assert r0.lag_bytes(p) > limit, "the pause did not hold back replica0"
    r1.wait_replay(p)
    wait_backends(px, db, lambda b: num(b["replica0"]["lag_bytes"]) is not None and
                  num(b["replica0"]["lag_bytes"]) > limit and
                  num(b["replica1"]["lag_bytes"]) is not None and
                  num(b["replica1"]["lag_bytes"]) <= limit,
                  timeout=3, what=f"replica0 lag_bytes > {limit} and replica1 caught up")
    print(f"lag seen in SHOW BACKENDS {time.monotonic() - t_write:.2f}s after the write")
    results, errors = read_load(px, db, 3, 15, [(q_simple, PORT), (q_ext, PORT)])
    assert not errors, errors[:3]
    ports = [v for _, v in results]
    assert r0.port not in ports, \
        f"replica0 is {num(backends(px, db)['replica0']['lag_bytes'])} bytes behind (limit " \
        f"{limit}) but served {ports.count(r0.port)} of {len(ports)} reads"
    assert set(ports) == {r1.port}, f"reads answered by {set(ports)} (replica1 {r1.port})"

    r0.resume_replay()
    r0.wait_replay(p)
    wait_backends(px, db, lambda b: num(b["replica0"]["lag_bytes"]) is not None and
                  num(b["replica0"]["lag_bytes"]) <= limit, timeout=3,
                  what="replica0 back under the lag limit")
    seen = set()
    deadline = time.monotonic() + 5
    while r0.port not in seen and time.monotonic() < deadline:
        results, errors = read_load(px, db, 3, 5, [(q_simple, PORT)])
        assert not errors, errors[:3]
        seen |= {v for _, v in results}
    assert seen <= rports and r0.port in seen, \
        f"after catching up replica0 gets no reads: {seen}; {brief(backends(px, db))}"


@timeout(60)
def test_replica_down_no_client_errors(env):
    need_routing()
    topo = env.topology(2)
    p, r0, r1 = topo.primary, topo.replicas[0], topo.replicas[1]
    db = topo.database("orders", owner=TEST_USER)
    interval = 0.5
    px = routed(env, db, p, topo.replicas, settings={"monitor_interval": interval})
    names = {p.port: "primary", r0.port: "replica0", r1.port: "replica1"}

    stop = threading.Event()
    lock = threading.Lock()
    log, errors = [], []  # (time, thread, port) / (time, thread, error)

    def client(i):
        conn = px.connect(db)
        fn = q_simple if i % 2 else q_ext
        while not stop.is_set():
            try:
                port = fn(conn, PORT)
                with lock:
                    log.append((time.monotonic(), i, port))
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append((time.monotonic(), i, e))
                if conn.closed or conn.broken:
                    conn = px.connect(db)
            time.sleep(0.005)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: r0.port in {x[2] for x in log}, 5, 0.05, "reads on replica0")
        t_stop = time.monotonic()
        r0.stop(mode="fast")
        t_stopped = time.monotonic()
        rows = wait_backends(px, db, lambda b: b["replica0"]["state"] == "down",
                             timeout=2 * interval + 2, what="replica0 marked down")
        t_down = time.monotonic() - t_stopped
        time.sleep(2 * interval + 1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    quiet_from = t_stopped + 2 * interval + 0.5
    late = [x for x in log if x[0] > quiet_from]
    late_ports = {names.get(x[2], x[2]) for x in late}
    err_text = [f"t{e[0] - t_stop:+.2f}s thread {e[1]}: {getattr(e[2], 'sqlstate', None)} "
                f"{e[2]}" for e in errors[:5]]
    print(f"replica0 stop took {t_stopped - t_stop:.2f}s, marked down {t_down:.2f}s later; "
          f"{len(log)} reads, {len(errors)} errors; after {quiet_from - t_stop:.1f}s: "
          f"{late_ports}")
    assert not errors, f"{len(errors)} client errors while replica0 went down: {err_text}"
    assert t_down <= 2 * interval + 1.0, f"replica0 marked down only after {t_down:.2f}s"
    reads_at_down = num(rows["replica0"]["reads"])
    rows = backends(px, db)  # a few monitor rounds later
    assert rows["replica0"]["state"] == "down", brief(rows)
    assert num(rows["replica0"]["reads"]) == reads_at_down, \
        f"reads were routed to replica0 after it was marked down: {brief(rows)}"
    assert rows["replica0"]["last_error"], f"no last_error for a down backend: {rows['replica0']}"
    assert rows["replica1"]["state"] == "up" and rows["primary"]["state"] == "up", brief(rows)
    assert late, "no reads completed after replica0 went down"
    assert r0.port not in {x[2] for x in log if x[0] > t_stopped + 0.5}
    assert {x[1] for x in late} == {0, 1, 2, 3}, "a client thread made no progress"
    assert {x[2] for x in late} <= {r1.port, p.port}, late_ports


@timeout(60)
def test_read_your_writes(env):
    """read_your_writes = lsn: with replay paused on both replicas, a client always reads its
    own committed writes (from the primary), other clients keep reading from the replicas;
    with read_your_writes = off the same reads go to the (stale) replicas."""
    need_routing()
    topo = env.topology(2)
    p = topo.primary
    rports = {r.port for r in topo.replicas}
    db = topo.database("orders", owner=TEST_USER)
    ddl(env, db, p, topo.replicas, "CREATE TABLE t (id int PRIMARY KEY)")
    # two front names for the same database: orders (lsn) and orders_off (off)
    common = {"pool_mode": "transaction", "pool_size": 4, "max_replica_lag": "1GB"}
    px = env.pgmux({}, {"monitor_interval": 0.2}, sections={
        db: env.routing_section(db, p, topo.replicas, read_your_writes="lsn", **common),
        "orders_off": env.routing_section(db, p, topo.replicas, read_your_writes="off",
                                          **common)})
    wait_ready(px, db, 2)
    wait_ready(px, "orders_off", 2)
    for r in topo.replicas:
        r.pause_replay()

    def write_then_read(conn, i):
        if i % 2:
            conn.execute("INSERT INTO t VALUES (%s)", (i,))
            return conn.execute("SELECT count(*), inet_server_port() FROM t WHERE id = %s",
                                (i,)).fetchone()
        conn.execute(f"INSERT INTO t VALUES ({i})")
        return conn.execute(f"SELECT count(*), inet_server_port() FROM t WHERE id = {i}"
                            ).fetchone()

    c = px.connect(db)
    bystander = px.connect(db)
    missed = []
    for i in range(50):
        n, port = write_then_read(c, i)
        if n != 1:
            missed.append((i, port))
    assert not missed, f"read_your_writes = lsn: {len(missed)} of 50 reads missed the " \
                       f"client's own write (id, port): {missed[:5]}"
    # a client that wrote nothing still reads from the (paused) replicas
    for _ in range(3):
        assert q_simple(bystander, PORT) in rports, \
            "read_your_writes = lsn sent the reads of a client without writes to the primary"

    off = px.connect("orders_off")
    ports, seen = [], 0
    for i in range(1000, 1020):
        n, port = write_then_read(off, i)
        ports.append(port)
        seen += n
    print(f"read_your_writes = off: {seen} of 20 reads saw their write")
    assert set(ports) <= rports, f"read_your_writes = off: reads went to {set(ports)}"
    assert seen == 0, "read_your_writes = off read from replicas whose replay is paused, " \
                      f"yet saw {seen} of 20 fresh writes"

    # once the replicas replay past the client's commit, its reads go back to them
    for r in topo.replicas:
        r.resume_replay()
        r.wait_replay(p)
    wait_for(lambda: q_simple(c, PORT) in rports, 5, 0.1,
             "the writing client's reads to return to the replicas after they caught up")
    assert c.execute("SELECT count(*) FROM t WHERE id < 1000").fetchone()[0] == 50
    for conn in (c, bystander, off):
        conn.close()


@timeout(60)
def test_bad_routing_config(env):
    """Invalid [database X] values stop startup with file:line and the key."""
    need_routing()
    db = "orders"
    cases = [
        ({"read_routing": "maybe"}, r"^read_routing = maybe$", "read_routing"),
        ({"max_replica_lag": "12 parsecs"}, r"^max_replica_lag = 12 parsecs$",
         "max_replica_lag"),
        ({"read_your_writes": "sometimes"}, r"^read_your_writes = sometimes$",
         "read_your_writes"),
        ({"replica_fallback": "perhaps"}, r"^replica_fallback = perhaps$", "replica_fallback"),
    ]
    for keys, line_rx, key in cases:
        sec = env.routing_section(db, env.pg, [env.pg], **keys)
        px = env.pgmux({}, {}, sections={db: sec}, start=False)
        line = px.config_line(line_rx)
        px.start(wait=False)
        rc = px.wait_exit(10)
        log = px.log_text()
        assert rc is not None, f"pgmux kept running with {keys}"
        assert rc != 0, f"pgmux exited 0 with {keys}"
        assert f"{px.ini}:{line}" in log or f"pgmux.ini:{line}:" in log, \
            f"{keys}: the error does not name {px.ini.name}:{line}:\n{log[-2000:]}"
        assert key in log, f"{keys}: the error does not name {key}:\n{log[-2000:]}"


@timeout(60)
def test_unresolvable_replica_host(env):
    """A replica whose host name does not resolve is marked down by the monitor (which looks
    names up with pgmux's own resolver, not libpq's blocking one), and reads keep going to the
    replica that works, with no client errors."""
    reps, db = shared_setup(env, 2)
    p, r0 = env.pg, reps[0]
    sec = env.routing_section(db, p, [r0], read_routing="on", pool_mode="transaction")
    bad = env.backend_entry(r0, db).replace(f"host={r0.host}", "host=no-such-replica.invalid")
    sec["replica"].append(bad)
    px = env.pgmux({}, {"monitor_interval": 0.2}, sections={db: sec})

    def settled(rows):
        return (sorted(rows) == ["primary", "replica0", "replica1"]
                and rows["primary"]["state"] == "up" and rows["replica0"]["state"] == "up"
                and rows["replica1"]["state"] == "down")
    rows = wait_backends(px, db, settled, 15, "replica1 (bad host) down, the rest up")
    assert "no-such-replica.invalid" in str(rows["replica1"]["last_error"]), brief(rows)
    conn = px.connect(db)
    ports = {q_simple(conn, PORT) for _ in range(20)} | {q_ext(conn, PORT) for _ in range(20)}
    conn.close()
    assert ports == {r0.port}, f"reads went to {ports}, want only replica0 ({r0.port})"
    rows = backends(px, db)
    assert num(rows["replica1"]["reads"]) == 0, brief(rows)
    assert rows["replica1"]["state"] == "down", brief(rows)
