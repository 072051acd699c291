"""systemd supervision: the sd_notify messages a Type=notify unit relies on (READY=1 only once
the port accepts, RELOADING=1 then READY=1 around SIGHUP, STATUS= lines, STOPPING=1 on SIGTERM),
read from a notify socket the test binds, and `systemd-analyze verify` on etc/pgmux.service."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from pgharness import PGMUX_BIN, ROOT, Skip, timeout


def _built_with_systemd():
    # ldd names libsystemd when configure found it; without it the calls are no-ops and there
    # is nothing to listen for.
    out = subprocess.run(["ldd", PGMUX_BIN], capture_output=True, text=True).stdout
    return "libsystemd" in out


class NotifySocket:
    """A Unix datagram socket standing in for systemd's: each datagram is one message of
    newline-separated KEY=VALUE assignments."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)
        self.seen = []

    def recv(self, timeout):
        """The next message as a dict, or None after `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        msg = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.seen.append(msg)
        return msg

    def wait(self, key, timeout, on_each=None):
        """Messages until one has `key`; returns it.  on_each(msg) sees every message."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            msg = self.recv(max(left, 0.01)) if left > 0 else None
            if msg is None:
                raise AssertionError(f"no {key} within {timeout}s; got {self.seen}")
            if on_each:
                on_each(msg)
            if key in msg:
                return msg

    def close(self):
        self.sock.close()


def _accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@timeout(60)
def test_notify_lifecycle(env):
    if not _built_with_systemd():
        raise Skip(f"{PGMUX_BIN} was built without libsystemd (configure --without-systemd)")
    db = env.database()
    ns = NotifySocket(Path(env.dir) / "notify.sock")
    env.on_cleanup(ns.close)
    # stats_period short enough that the test also sees the periodic status refresh
    px = env.pgmux([db], {"pool_mode": "transaction"}, start=False,
                   env={"NOTIFY_SOCKET": ns.path})
    px.start(wait=False)

    # READY=1 comes only once the port accepts: checked the moment it arrives, and no
    # earlier message may claim readiness
    ready = ns.wait("READY", 30)
    assert ready["READY"] == "1"
    assert _accepts(px.port), "READY=1 arrived but the port does not accept connections"

    # STATUS= carries the counts; a client connecting changes them, and the refresh (the
    # one-second stats tick) reports it
    first = ns.wait("STATUS", 5)
    assert re.match(r"\d+ clients, \d+ servers", first["STATUS"]), first
    c = px.connect(db)
    assert c.execute("SELECT 1").fetchone()[0] == 1
    later = ns.wait("STATUS", 5)
    assert later["STATUS"].startswith("1 clients"), later

    # SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again
    px.signal(signal.SIGHUP)
    reloading = ns.wait("RELOADING", 10)
    assert reloading["RELOADING"] == "1"
    usec = int(reloading["MONOTONIC_USEC"])
    now = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
    assert 0 <= now - usec < 10e6, f"MONOTONIC_USEC {usec} is not CLOCK_MONOTONIC now ({now:.0f})"
    ns.wait("READY", 10)
    c.close()

    # SIGTERM: STOPPING=1, then the process ends (no clients left to wait for)
    px.signal(signal.SIGTERM)
    stopping = ns.wait("STOPPING", 10)
    assert stopping["STOPPING"] == "1"
    assert px.wait_exit(15) == 0, "pgmux did not exit 0 after SIGTERM"
    kinds = [k for m in ns.seen for k in m if k in ("READY", "RELOADING", "STOPPING")]
    assert kinds == ["READY", "RELOADING", "READY", "STOPPING"], kinds


@timeout(60)
def test_failed_reload_still_ready(env):
    """A reload that fails keeps the old configuration serving, so systemd must still hear
    READY=1 after RELOADING=1, or it would wait out its timeout and fail the unit."""
    if not _built_with_systemd():
        raise Skip(f"{PGMUX_BIN} was built without libsystemd")
    db = env.database()
    ns = NotifySocket(Path(env.dir) / "notify.sock")
    env.on_cleanup(ns.close)
    px = env.pgmux([db], {"pool_mode": "session"}, start=False, env={"NOTIFY_SOCKET": ns.path})
    px.start(wait=False)
    ns.wait("READY", 30)
    px.write_config(raw="[pgmux]\nlisten_port = not-a-number\n")
    px.signal(signal.SIGHUP)
    ns.wait("RELOADING", 10)
    ns.wait("READY", 10)
    assert _accepts(px.port)


@timeout(60)
def test_no_notify_socket(env):
    """Without NOTIFY_SOCKET (not under systemd) the calls do nothing and pgmux runs as ever."""
    os.environ.pop("NOTIFY_SOCKET", None)   # each test runs in its own process
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session"})
    with px.connect(db) as c:
        assert c.execute("SELECT 2").fetchone()[0] == 2
    px.reload(0.5)
    assert px.alive()


@timeout(60)
def test_unit_verifies(env):
    """etc/pgmux.service.in, made concrete, passes `systemd-analyze verify`."""
    sa = shutil.which("systemd-analyze")
    if not sa:
        raise Skip("systemd-analyze is not installed")
    unit = Path(env.dir) / "pgmux.service"
    text = (ROOT / "etc" / "pgmux.service.in").read_text()
    # the binary under test stands in for the installed one: verify checks ExecStart exists
    text = text.replace("@bindir@/pgmux", os.path.abspath(PGMUX_BIN))
    text = text.replace("@sysconfdir@", "/etc")
    assert not re.search(r"@[a-z]+@", text), "a placeholder is left in the unit"
    unit.write_text(text)
    # --man=no: the man pages Documentation= names are not installed on a build machine
    r = subprocess.run([sa, "verify", "--man=no", str(unit)], capture_output=True, text=True)
    # verify reports the units it pulls in too; only lines about this unit are ours
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "pgmux.service" in line]
    assert r.returncode == 0 and not ours, f"systemd-analyze verify:\n{r.stdout}{r.stderr}"
