"""Failover: the primary of a [database X] section dies, a replica is promoted, and writes
follow it without a reload; writes issued while no primary is known wait for one
(query_wait_timeout) instead of failing.  Each test has a private topology."""

import threading
import time

import psycopg

from pgharness import TEST_USER, timeout
from test_routing import (PORT, backends, brief, need_routing, q_ext, q_simple, routed,
                          wait_backends)

INTERVAL = 0.5


def setup(env):
    need_routing()
    topo = env.topology(2)
    db = topo.database("orders", owner=TEST_USER)
    env.sql(db, "CREATE TABLE t (id serial PRIMARY KEY, port int)", server=topo.primary)
    topo.wait_replay()
    px = routed(env, db, topo.primary, topo.replicas,
                settings={"monitor_interval": INTERVAL, "query_wait_timeout": 20})
    return topo, db, px


INSERT = "INSERT INTO t (port) VALUES (inet_server_port()) RETURNING port"


@timeout(60)
def test_failover_to_promoted_replica(env):
    topo, db, px = setup(env)
    p, r0, r1 = topo.primary, topo.replicas[0], topo.replicas[1]
    c = px.connect(db)
    assert q_simple(c, INSERT) == p.port
    assert q_ext(c, INSERT) == p.port

    p.stop(mode="immediate")
    t0 = time.monotonic()
    r0.promote(method="sql")  # SELECT pg_promote()
    t_promoted = time.monotonic()
    print(f"promotion took {t_promoted - t0:.2f}s")

    # retry until the first write through pgmux succeeds (pgmux may also just hold it)
    errors, port = [], None
    deadline = t_promoted + 15
    while time.monotonic() < deadline:
        try:
            if c.closed or c.broken:
                c = px.connect(db)
            port = q_simple(c, INSERT)
            break
        except psycopg.Error as e:
            errors.append(f"+{time.monotonic() - t_promoted:.2f}s {e.sqlstate} {e}".strip())
            time.sleep(0.05)
    took = time.monotonic() - t_promoted
    print(f"first write through pgmux {took:.2f}s after the promotion; {len(errors)} failed "
          f"attempts before: {errors[:3]}")
    assert port is not None, f"no write succeeded within 15s of the promotion: {errors[-3:]}; " \
                             f"{brief(backends(px, db))}"
    assert port == r0.port, f"the write ran on port {port}, not the promoted {r0.port}"
    limit = 3 * INTERVAL + 2
    assert took < limit, f"writes followed the promotion only after {took:.2f}s (< {limit}s)"
    assert q_ext(c, INSERT) == r0.port
    assert env.sql1(db, "SELECT count(*) FROM t WHERE port = %s", (r0.port,), server=r0) == 2

    rows = wait_backends_failover(px, db)
    assert rows["primary"]["config_role"] == "primary" and rows["primary"]["state"] == "down", \
        brief(rows)
    r = rows["replica0"]
    assert (r["config_role"], r["role"], r["seen_role"], r["state"]) == \
        ("replica", "primary", "primary", "up"), r
    assert rows["replica1"]["role"] == "replica", brief(rows)
    assert not px.signals_sent, "the test reloaded pgmux"
    # reads still work (replica1 still replays the old timeline; replica0 or it answers)
    assert q_simple(c, PORT) in {r0.port, r1.port}
    c.close()


def wait_backends_failover(px, db, timeout=3 * INTERVAL + 2):
    return wait_backends(px, db, lambda b: b["primary"]["state"] == "down" and
                         b["replica0"]["role"] == "primary", timeout,
                         "old primary down and replica0 primary in SHOW BACKENDS")


@timeout(60)
def test_writes_wait_for_a_primary(env):
    topo, db, px = setup(env)
    p, r0 = topo.primary, topo.replicas[0]
    conns = [px.connect(db) for _ in range(2)]
    for c in conns:  # the pool holds server connections to the old primary
        assert q_simple(c, INSERT) == p.port
    results = {}

    def writer(i):
        t = time.monotonic()
        try:
            fn = q_simple if i == 0 else q_ext
            results[i] = ("ok", fn(conns[i], INSERT), time.monotonic() - t)
        except Exception as e:  # noqa: BLE001
            results[i] = ("error", f"{getattr(e, 'sqlstate', '')} {e}", time.monotonic() - t)

    p.stop(mode="immediate")
    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    early = dict(results)
    t0 = time.monotonic()
    r0.promote()
    t_promoted = time.monotonic()
    for t in threads:
        t.join(25)
    done = time.monotonic()
    print(f"promotion took {t_promoted - t0:.2f}s; writers: {results}; the last finished "
          f"{done - t_promoted:.2f}s after the promotion")
    assert not early, f"writes finished while no primary existed: {early}"
    assert len(results) == 2, f"writers still blocked 25s after the promotion: {results}"
    for i, (status, value, _) in results.items():
        assert status == "ok", f"writer {i} failed instead of waiting for a primary: {value}"
        assert value == r0.port, f"writer {i} wrote on port {value}, not the promoted {r0.port}"
    limit = 3 * INTERVAL + 2
    assert done - t_promoted < limit, \
        f"the waiting writes finished {done - t_promoted:.2f}s after the promotion (< {limit}s)"
    assert env.sql1(db, "SELECT count(*) FROM t WHERE port = %s", (r0.port,), server=r0) == 2
    for c in conns:
        c.close()
