"""Process control: pidfile, SIGINT lets running queries finish, SIGQUIT exits at once, -d
daemonizes."""

import os
import signal
import threading
import time

import psycopg

from pgharness import Pgmux, timeout, wait_for


@timeout(60)
def test_pidfile_and_sigint_graceful(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2})
    assert int(px.pidfile.read_text().strip()) == px.proc.pid
    c = px.connect(db)
    out = {}

    def slow():
        try:
            out["v"] = c.execute("SELECT pg_sleep(1.5), 'finished'").fetchone()[1]
        except Exception as e:  # noqa: BLE001
            out["v"] = e
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    px.signal(signal.SIGINT)
    t.join(10)
    assert out.get("v") == "finished", f"SIGINT broke a running query: {out.get('v')!r}"
    c.close()
    rc = px.wait_exit(10)
    assert rc is not None, "pgmux still running 10s after SIGINT with no clients left"
    assert rc == 0, f"exit status {rc} after SIGINT"
    assert not px.pidfile.exists(), "pidfile left behind"


@timeout(60)
def test_sigquit_immediate(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session"})
    c = px.connect(db)
    assert c.execute("SELECT 1").fetchone()[0] == 1
    px.signal(signal.SIGQUIT)
    t0 = time.monotonic()
    assert px.wait_exit(5) is not None, "pgmux still running 5s after SIGQUIT"
    assert time.monotonic() - t0 < 3
    try:
        c.execute("SELECT 1")
        raise AssertionError("connection still works after SIGQUIT")
    except psycopg.OperationalError:
        pass
    c.close()


@timeout(60)
def test_daemonize(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session"}, start=False, args=["-d"])

    def kill_daemon():
        if px.pidfile.exists():
            try:
                os.kill(int(px.pidfile.read_text().strip()), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass
    env.on_cleanup(kill_daemon)
    px.start(wait=False)
    rc = px.wait_exit(15)
    assert rc == 0, f"pgmux -d: foreground process exited with {rc}"
    pid = wait_for(lambda: px.pidfile.exists() and px.pidfile.read_text().strip(), 10,
                   what="pidfile")
    pid = int(pid)
    assert pid != px.proc.pid
    os.kill(pid, 0)
    with px.connect(db) as c:
        assert c.execute("SELECT 'daemon'").fetchone()[0] == "daemon"
    os.kill(pid, signal.SIGINT)

    def gone():
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True
    wait_for(gone, 10, what="daemon to exit after SIGINT")
