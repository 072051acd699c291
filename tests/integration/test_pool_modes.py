"""Pool modes: session keeps one backend per client, transaction shares a few servers among many
clients, statement refuses explicit transactions."""

import threading

import psycopg

from pgharness import StatActivitySampler, TEST_USER, timeout, wait_for


@timeout(60)
def test_session_mode_keeps_backend(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session", "default_pool_size": 5})
    a, b = px.connect(db), px.connect(db)
    pids_a = set()
    for i in range(5):
        with a.transaction():
            pids_a.add(a.execute("SELECT pg_backend_pid()").fetchone()[0])
            assert a.execute("SELECT %s::int * 2", (i,)).fetchone()[0] == i * 2
    pid_b = b.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert len(pids_a) == 1, f"session mode changed backend: {pids_a}"
    assert pid_b not in pids_a, "two session clients share one backend"
    # the backend is a real PostgreSQL backend of this database
    assert env.pg.sql1("SELECT datname FROM pg_stat_activity WHERE pid = %s",
                       (pids_a.pop(),)) == db
    a.close()
    b.close()


@timeout(60)
def test_session_mode_reuses_server_after_disconnect(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session", "default_pool_size": 2})
    def settled():
        # the server the last client left has finished its reset (server_reset_query) and is
        # idle in the pool.  Without this wait the next client can arrive while the reset is
        # still running; pgmux then rightly opens a second server for it (the pool allows 2),
        # and whichever is ready first serves it: the test would count 2 backends by chance
        # (it once did in a clean clone).
        rows = [r for r in px.show("POOLS") if r["database"] == db]
        return rows and rows[0]["cl_active"] == 0 and rows[0]["cl_waiting"] == 0 and \
            rows[0]["sv_active"] == 0 and rows[0]["sv_idle"] == 1
    pids = []
    for _ in range(4):
        with px.connect(db) as c:
            pids.append(c.execute("SELECT pg_backend_pid()").fetchone()[0])
        wait_for(settled, 5, 0.02, "the server back idle in the pool")
    # one client at a time: the server a client leaves is pooled and handed to the next one
    assert len(set(pids)) == 1, f"a new server for every session: {pids}"
    # a backend of the setup's own connections may still be exiting: PostgreSQL ends them
    # after the client has gone
    try:
        wait_for(lambda: env.pg.backends(db, TEST_USER) == 1, 5, 0.05, "one server backend")
    except AssertionError:
        raise AssertionError(
            f"{env.pg.backends(db, TEST_USER)} server backends, not 1; pgmux's servers: "
            f"{[r for r in px.show('SERVERS') if r['database'] == db]}; PostgreSQL's: "
            f"{env.pg.sql('SELECT pid, state, backend_start, query FROM pg_stat_activity WHERE datname = %s', (db,))}"
        ) from None


@timeout(60)
def test_session_mode_resets_reused_server(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session", "default_pool_size": 1})
    with px.connect(db) as a:
        pid_a = a.execute("SELECT pg_backend_pid()").fetchone()[0]
        default_work_mem = a.execute("SHOW work_mem").fetchone()[0]
        a.execute("SET work_mem = '7MB'")
        a.execute("CREATE TEMP TABLE scratch (x int)")
        assert a.execute("SHOW work_mem").fetchone()[0] == "7MB"
    # pool of 1: the next client gets the same server, after server_reset_query (DISCARD ALL)
    def next_client():
        with px.connect(db) as c:
            return (c.execute("SELECT pg_backend_pid()").fetchone()[0],
                    c.execute("SHOW work_mem").fetchone()[0],
                    c.execute("SELECT count(*) FROM pg_class WHERE relname = 'scratch' "
                              "AND relpersistence = 't'").fetchone()[0])
    pid_c, work_mem, temp_tables = next_client()
    assert pid_c == pid_a, "the only server was not reused"
    assert work_mem == default_work_mem, f"session state leaked: work_mem={work_mem}"
    assert temp_tables == 0, "temp table leaked into the next session"


@timeout(90)
def test_transaction_mode_shares_servers(env):
    db = env.database()
    pool = 3
    nclients = 20
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": pool,
                          "max_client_conn": 100})
    env.sql(db, "CREATE TABLE hits (client int, n int, pid int)")
    conns = [px.connect(db) for _ in range(nclients)]
    sampler = StatActivitySampler(env.pg, db, TEST_USER)
    barrier = threading.Barrier(nclients)
    errors = []
    pids_by_client = [set() for _ in range(nclients)]

    def worker(i):
        try:
            conn = conns[i]
            barrier.wait(10)
            for n in range(10):
                with conn.transaction():
                    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                    conn.execute("INSERT INTO hits VALUES (%s, %s, %s)", (i, n, pid))
                    conn.execute("SELECT pg_sleep(0.005)")
                pids_by_client[i].add(pid)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(nclients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # all clients were connected at the same time
    assert env.pg.backends(db, TEST_USER) <= pool
    sampler.stop()
    for c in conns:
        c.close()
    assert not errors, f"client errors: {errors[:3]}"
    rows = env.sql(db, "SELECT count(*), count(DISTINCT client), count(DISTINCT pid) FROM hits")[0]
    assert rows[0] == nclients * 10 and rows[1] == nclients, rows
    all_pids = set().union(*pids_by_client)
    assert 1 <= len(all_pids) <= pool, f"{len(all_pids)} server backends for pool {pool}"
    assert rows[2] == len(all_pids)
    assert nclients > len(all_pids)
    # most clients were served by more than one backend: transactions really moved around
    assert sum(1 for s in pids_by_client if len(s) > 1) >= nclients // 2, pids_by_client
    assert sampler.max() is not None and sampler.max() <= pool, sampler.values
    assert sampler.max() >= 2, f"pool never grew past {sampler.max()} under load"


@timeout(60)
def test_statement_mode(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "statement", "default_pool_size": 2})
    with px.connect(db) as c:
        # single statements (simple and extended protocol) work
        assert c.execute("SELECT 1 + 1").fetchone()[0] == 2
        assert c.execute("SELECT %s::text || 'b'", ("a",)).fetchone()[0] == "ab"
        # a multi-statement simple query is one implicit transaction: allowed
        cur = c.execute("SELECT 10; SELECT 20")
        first = cur.fetchone()[0]
        assert cur.nextset() and cur.fetchone()[0] == 20 and first == 10
    # an explicit transaction block is refused with an error
    c = px.connect(db)
    err = None
    try:
        c.execute("BEGIN")
        c.execute("SELECT 1")
        c.execute("COMMIT")
    except psycopg.Error as e:
        err = e
    finally:
        c.close()
    assert err is not None, "statement mode accepted BEGIN ... COMMIT"
    assert "transaction" in str(err).lower(), f"unclear error: {err}"
    # the pool still serves other clients afterwards, and nothing is left in a transaction
    with px.connect(db) as c:
        assert c.execute("SELECT 42").fetchone()[0] == 42
    assert env.pg.sql1("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                       "state LIKE 'idle in transaction%%'", (db,)) == 0
