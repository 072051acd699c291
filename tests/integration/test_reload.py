"""SIGHUP reloads: a bigger pool takes effect under load; a broken file keeps the old config."""

import threading
import time

from pgharness import StatActivitySampler, TEST_USER, timeout


class Load:
    """n client threads running short transactions through pgmux until stopped."""

    def __init__(self, px, db, n, sql="SELECT pg_sleep(0.05)"):
        self.stop_ev = threading.Event()
        self.errors = []
        self.count = 0
        self.lock = threading.Lock()
        self.conns = [px.connect(db) for _ in range(n)]
        self.threads = [threading.Thread(target=self._run, args=(c, sql)) for c in self.conns]
        for t in self.threads:
            t.start()

    def _run(self, conn, sql):
        while not self.stop_ev.is_set():
            try:
                conn.execute(sql)
                with self.lock:
                    self.count += 1
            except Exception as e:  # noqa: BLE001
                self.errors.append(e)
                time.sleep(0.1)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(20)
        for c in self.conns:
            c.close()


@timeout(90)
def test_reload_pool_size(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "max_client_conn": 100})
    load = Load(px, db, 12)
    try:
        time.sleep(0.5)
        s1 = StatActivitySampler(env.pg, db, TEST_USER)
        time.sleep(2.5)
        s1.stop()
        before = load.count
        px.write_config(default_pool_size=5)
        px.reload(settle=0.5)
        s2 = StatActivitySampler(env.pg, db, TEST_USER)
        time.sleep(3)
        s2.stop()
        assert load.count > before, "no progress after the reload"
    finally:
        load.stop()
    assert not load.errors, f"client errors: {load.errors[:3]}"
    assert s1.max() == 2, f"pool_size 2: saw up to {s1.max()} servers"
    assert s2.max() == 5, f"after reload to pool_size 5: saw up to {s2.max()} servers " \
                          f"(samples {sorted(set(s2.values))})"
    assert load.count > 100


@timeout(60)
def test_bad_reload_keeps_old_config(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session", "default_pool_size": 4})

    def distinct_pids():
        a, b = px.connect(db), px.connect(db)
        pids = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in (a, b)}
        a.close()
        b.close()
        return len(pids)

    assert distinct_pids() == 2  # session mode: two clients, two servers
    good_ini = px.ini.read_text()
    # 1. garbage
    mark = px.log_mark()
    px.write_config(raw="this is [not an ini file\n\x01\x02 = = =\n[pgmux\nlisten_port = x\n")
    px.reload()
    assert px.alive(), "pgmux died on a garbage config"
    px.wait_log(r"error|fatal|invalid|syntax|fail", mark, timeout=5)
    with px.connect(db) as c:
        assert c.execute("SELECT 'still serving'").fetchone()[0] == "still serving"
    assert distinct_pids() == 2
    # 2. valid syntax, invalid value: nothing of it applies (pool_mode stays session)
    mark = px.log_mark()
    bad = good_ini.replace("pool_mode = session", "pool_mode = transaction")
    bad = bad.replace("default_pool_size = 4", "default_pool_size = 1\nmax_client_conn = lots")
    assert bad != good_ini
    px.write_config(raw=bad)
    px.reload()
    assert px.alive(), "pgmux died on an invalid value"
    px.wait_log(r"error|fatal|invalid|fail", mark, timeout=5)
    assert distinct_pids() == 2, "part of a rejected config was applied"
    # 3. a good config afterwards still reloads
    px.write_config(raw=good_ini.replace("pool_mode = session", "pool_mode = transaction")
                    .replace("default_pool_size = 4", "default_pool_size = 1"))
    px.reload()
    assert distinct_pids() == 1, "the good config after a bad one was not applied"
