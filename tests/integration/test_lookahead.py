"""Messages pgmux reads ahead of the one it routes (the rest of an extended-protocol batch:
the Bind after a Parse, up to the Sync) with lengths near 2^32: the lookahead must not wrap
its offset around, which would spin the worker forever or read outside the buffer.  Each
test sends such a batch, then checks that another client still gets answers."""

import struct
import time

import rawpg
from pgharness import TEST_USER, timeout
from test_routing import PORT, q_simple, shared_setup
from test_sharding import sharded_env

HUGE = (0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFF0, 0x80000000)


def bad_message(kind, length):
    return kind + struct.pack("!I", length) + b"\0" * 16


def still_serves(px, db, sql):
    """A fresh client gets an answer within a few seconds: the worker is not stuck."""
    t0 = time.monotonic()
    conn = px.connect(db)
    try:
        conn.execute(sql).fetchall()
    finally:
        conn.close()
    assert time.monotonic() - t0 < 5, "pgmux answered, but only after a long stall"


def send_and_drop(px, db, batch):
    with rawpg.RawConn.tcp(px.port, db, TEST_USER, timeout=3) as rc:
        rc.send(batch)
        try:
            rc.read_raw(1)   # an error or nothing; the connection may be closed
        except OSError:
            pass


@timeout(60)
def test_routed_read_with_wrapping_length(env):
    reps, db = shared_setup(env, 1)
    sec = env.routing_section(db, env.pg, reps, read_routing="on", pool_mode="transaction")
    px = env.pgmux({}, {"monitor_interval": 0.2}, sections={db: sec})
    conn = px.connect(db)
    q_simple(conn, PORT)   # the pool is up
    for n in HUGE:
        # a read (it would be kept for a retry), then a Describe whose length wraps
        send_and_drop(px, db, rawpg.parse("SELECT 1") + bad_message(b"D", n))
        assert q_simple(conn, "SELECT 41 + 1") == 42
        still_serves(px, db, "SELECT 1")
    conn.close()
    assert px.alive(), "pgmux exited"


@timeout(120)
def test_sharded_bind_with_wrapping_length(env):
    px, shards = sharded_env(env, 2, shard_key_type="text")
    conn = px.connect("users")
    conn.execute("SET pgmux.shard = 0")
    conn.execute("SELECT count(*) FROM accounts").fetchall()
    sql = "SELECT name FROM accounts WHERE user_id = $1"
    for n in HUGE:
        send_and_drop(px, "users", rawpg.parse(sql) + bad_message(b"B", n))
        send_and_drop(px, "users", rawpg.parse(sql) + bad_message(b"D", n))
        assert conn.execute("SELECT 42").fetchone()[0] == 42
    conn.close()
    assert px.alive(), "pgmux exited"
