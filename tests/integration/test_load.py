"""Load: pgbench -S with 2,000 clients in transaction mode onto a pool of 300.  No transaction
may fail and PostgreSQL must never see more than 300 connections from pgmux."""

import os
import time

from pgharness import StatActivitySampler, TEST_USER, timeout
from test_pgbench import pgbench, pgbench_init

CLIENTS = int(os.environ.get("PGMUX_LOAD_CLIENTS", "2000"))
POOL = int(os.environ.get("PGMUX_LOAD_POOL", "300"))
SECONDS = int(os.environ.get("PGMUX_LOAD_SECONDS", "30"))


@timeout(SECONDS + 180)
def test_load_2000_clients_pool_300(env):
    db = env.database()
    pgbench_init(env, db, scale=2)
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": POOL,
                          "max_client_conn": CLIENTS + 100, "listen_backlog": 4096,
                          "log_connections": 0, "log_disconnections": 0})
    sampler = StatActivitySampler(env.pg, db, TEST_USER, interval=0.1)
    t0 = time.monotonic()
    try:
        rc, out, processed, failed = pgbench(px, db, "-S", "-c", str(CLIENTS), "-j", "2",
                                             "-T", str(SECONDS), timeout=SECONDS + 150)
    finally:
        sampler.stop()
    elapsed = time.monotonic() - t0
    peak = sampler.max()
    print(f"pgbench took {elapsed:.0f}s, peak server connections {peak}, "
          f"{len(sampler.values)} samples")
    assert rc == 0, f"pgbench exited {rc}:\n{out[-3000:]}"
    assert failed == 0, f"{failed} failed transactions:\n{out[-3000:]}"
    assert "aborted" not in out.lower(), out[-3000:]
    assert processed >= CLIENTS, f"only {processed} transactions for {CLIENTS} clients"
    assert len(sampler.values) >= SECONDS, "the sampler did not run during the load"
    assert peak <= POOL, f"PostgreSQL saw {peak} connections from pgmux (pool {POOL})"
    assert peak >= min(POOL, 20), f"the pool never grew beyond {peak} under load"
    m = __import__("re").search(r"number of clients: (\d+)", out)
    assert m and int(m.group(1)) == CLIENTS, out[-2000:]
