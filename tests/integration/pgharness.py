"""pgharness: runs real PostgreSQL servers and pgmux instances for the integration tests.

Run with Debian's /usr/bin/python3 (psycopg 3 and asyncpg are installed for it only).

Objects:
  PgServer   one PostgreSQL 15 server in a temporary directory (initdb --nosync, fsync=off),
             listening on a free loopback port and on a Unix socket in its own directory.
             Runs as the `postgres` system user when we are root.
  Cluster    the session-wide topology: a primary now; replicas (pg_basebackup -R) and shard
             primaries are started lazily by replica(i) / shard(i) the first time a test asks.
             Shared: tests must not stop or promote its servers (ensure_running() restarts
             stopped ones and resumes paused replay after every test).
  Topology   a private primary + streaming replicas in one test's directory (env.topology()),
             for tests that stop, pause or promote servers (failover); stopped when the test
             ends, or by the runner's next ensure_running() if the test was killed.
  Pgmux      one pgmux process with its own ini, auth_file, log and port.  PGMUX_BIN overrides
             the binary and PGMUX_SECTION the ini section, so the same tests can run against
             PgBouncer (PGMUX_BIN=/usr/sbin/pgbouncer PGMUX_SECTION=pgbouncer).
  TestEnv    what a test function receives: the cluster, a scratch directory, unique databases
             and roles, and pgmux instances that are stopped (and checked for sanitizer
             reports) when the test ends.

Replication helpers (PgServer): is_in_recovery(), promote(method='pg_ctl'|'sql'),
pause_replay() / resume_replay() / replay_paused_state(), wait_replay(primary),
lag_bytes(primary), wait_streaming(replica) (on the primary), follow(new_primary).
Routing ([database X] sections): Pgmux(sections={name: {key: value or [values]}}),
px.write_section(), px.show("BACKENDS"), env.backend_entry(), env.routing_section(),
env.replicas(n), env.topology(n_replicas), env.database(replicas=[...]).
Sharding: env.shard_topologies(n, n_replicas) (n private topologies started at once),
env.sharded_section(dbname, topologies, shard_key=..., **keys).

Server-side authentication: TCP logins are trusted, except for members of the roles
pw_password, pw_md5 and pw_scram, which must log in with cleartext, md5 or scram-sha-256.
create_role(..., method=...) adds a role to the right group, so a test can make pgmux answer
each kind of server authentication.
"""

import asyncio
import contextlib
import grp
import hashlib
import itertools
import json
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
PG_BINDIR = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))
PGMUX_BIN = os.environ.get("PGMUX_BIN") or str(ROOT / "src" / "pgmux")
PGMUX_SECTION = os.environ.get("PGMUX_SECTION") or (
    "pgbouncer" if os.path.basename(PGMUX_BIN) == "pgbouncer" else "pgmux")
IS_ROOT = os.geteuid() == 0
# PostgreSQL (and PgBouncer) refuse to run as root: run them as this user when we are root.
SERVICE_USER = os.environ.get("PGHARNESS_SERVICE_USER", "postgres")
TEST_USER = "app"  # the ordinary login role every test may use (trusted over TCP)

SANITIZER_PATTERNS = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
    r"SUMMARY: UndefinedBehaviorSanitizer|ThreadSanitizer")


# ----------------------------------------------------------------------------------------------
# small helpers

def pg_bin(name):
    return str(PG_BINDIR / name)


def _service_ids():
    pw = pwd.getpwnam(SERVICE_USER)
    return pw.pw_uid, pw.pw_gid


def as_service_user(cmd):
    """Prefixes cmd so that it runs as the service user when we are root (setpriv, no PAM,
    so our raised RLIMIT_NOFILE is inherited)."""
    if not IS_ROOT:
        return list(cmd)
    uid, gid = _service_ids()
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--"] + list(cmd)


def chown_service(path):
    if IS_ROOT:
        uid, gid = _service_ids()
        os.chown(path, uid, gid)


def raise_nofile():
    """preexec_fn: raises the soft RLIMIT_NOFILE to the hard limit (load tests need 2,000+ fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


raise_nofile()  # for this process too: tests open hundreds of client sockets

_used_ports = set()
_port_lock = threading.Lock()


def free_port():
    """A free TCP port on 127.0.0.1, below the kernel's ephemeral range so that outgoing
    connections (pgbench opens thousands) cannot take it between choice and bind."""
    import random
    lo, hi = 32768, 60999
    with contextlib.suppress(OSError, ValueError):
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    top = min(lo, 32768) - 1
    rng = random.Random(os.getpid() ^ time.time_ns())
    with _port_lock:
        for _ in range(500):
            port = rng.randint(15000, max(15001, top))
            if port in _used_ports:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                s.close()
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port found")


def wait_for(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns a true value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def tail(text, lines=60):
    parts = text.splitlines()
    return "\n".join(parts[-lines:])


def md5_secret(user, password):
    """The auth_file / pg_authid form of an md5 password."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def scram_secret(password, salt=None, iterations=4096):
    """A SCRAM-SHA-256 secret as PostgreSQL stores it (for auth_file entries)."""
    import base64
    import hmac
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value):
    return "'" + str(value).replace("'", "''") + "'"


def conninfo(**kw):
    """Builds a libpq conninfo string from keyword arguments (None values are left out)."""
    out = []
    for k, v in kw.items():
        if v is None:
            continue
        v = str(v)
        out.append(f"{k}='" + v.replace("\\", "\\\\").replace("'", "\\'") + "'")
    return " ".join(out)


# ----------------------------------------------------------------------------------------------
# PostgreSQL

HBA = """\
# pgharness: local sockets trusted; TCP trusted except for the password groups.
local   all          all                      trust
host    all          +pw_scram   127.0.0.1/32 scram-sha-256
host    all          +pw_md5     127.0.0.1/32 md5
host    all          +pw_password 127.0.0.1/32 password
host    all          all         127.0.0.1/32 trust
host    replication  all         127.0.0.1/32 trust
"""

PG_CONF = """
# pgharness settings
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockdir}'
max_connections = {max_connections}
superuser_reserved_connections = 3
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = logical
max_wal_senders = 16
max_replication_slots = 16
max_prepared_transactions = 64
max_worker_processes = 16
max_logical_replication_workers = 8
hot_standby = on
wal_keep_size = 256MB
checkpoint_timeout = 30min
max_wal_size = 2GB
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
log_connections = off
log_disconnections = off
logging_collector = off
dynamic_shared_memory_type = posix
max_locks_per_transaction = 128
"""


class PgServer:
    """One PostgreSQL server (a primary or a streaming replica) in basedir/name."""

    def __init__(self, basedir, name="primary", port=None, max_connections=600,
                 extra_conf=None):
        self.name = name
        self.dir = Path(basedir) / name
        self.datadir = self.dir / "data"
        self.sockdir = self.dir / "sock"
        self.logfile = self.dir / "postgres.log"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.max_connections = max_connections
        self.superuser = "postgres"
        self.is_replica = False
        # postgresql.conf lines written after PG_CONF (a dict, or text): later lines win
        self.extra_conf = extra_conf

    # -- lifecycle ------------------------------------------------------------------------------
    def _prepare_dirs(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.sockdir.mkdir(exist_ok=True)
        os.chmod(self.sockdir, 0o755)
        for p in (self.dir, self.sockdir):
            chown_service(p)
        self.logfile.touch()
        chown_service(self.logfile)

    def _run(self, cmd, check=True, timeout=120):
        r = subprocess.run(as_service_user(cmd), cwd=str(self.dir), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout,
                           preexec_fn=raise_nofile)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}")
        return r

    def _write_conf(self):
        extra = self.extra_conf or ""
        if isinstance(extra, dict):
            extra = "".join(f"{k} = {v}\n" for k, v in extra.items())
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write(PG_CONF.format(port=self.port, sockdir=self.sockdir,
                                   max_connections=self.max_connections))
            # a replica's walreceiver reports cluster_name as its application_name
            # (pg_stat_replication on the primary): see wait_streaming()
            f.write(f"cluster_name = {quote_literal(self.name)}\n")
            if extra:
                f.write("# extra settings\n" + extra + "\n")

    def save_meta(self):
        (self.dir / "meta.json").write_text(json.dumps(
            {"name": self.name, "port": self.port, "is_replica": self.is_replica,
             "max_connections": self.max_connections}))

    @classmethod
    def load(cls, basedir, name):
        """The server that an earlier process (another test) created in basedir/name, or None."""
        meta = Path(basedir) / name / "meta.json"
        if not meta.exists():
            return None
        m = json.loads(meta.read_text())
        srv = cls(basedir, m["name"], m["port"], m["max_connections"])
        srv.is_replica = m["is_replica"]
        return srv

    def init(self):
        """initdb (superuser `postgres`, trust) and configure; does not start."""
        self._prepare_dirs()
        self._run([pg_bin("initdb"), "--nosync", "-A", "trust", "-U", self.superuser,
                   "-E", "UTF8", "--locale=C", "-D", str(self.datadir)])
        self._write_conf()
        (self.datadir / "pg_hba.conf").write_text(HBA)
        chown_service(self.datadir / "pg_hba.conf")
        self.save_meta()
        return self

    def init_replica(self, primary):
        """pg_basebackup -R from primary (which must be running); does not start."""
        self._prepare_dirs()
        self._run([pg_bin("pg_basebackup"), "-h", primary.host, "-p", str(primary.port),
                   "-U", primary.superuser, "-D", str(self.datadir), "-R", "-X", "stream",
                   "--no-sync", "-c", "fast"])
        self._write_conf()  # later lines win: our port and socket directory
        self.is_replica = True
        self.save_meta()
        return self

    def start(self, timeout=60):
        self._run([pg_bin("pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                   "-w", "-t", str(timeout), "start"], timeout=timeout + 10)
        self.wait_ready()
        return self

    def stop(self, mode="fast", check=True):
        if not (self.datadir / "postmaster.pid").exists():
            return
        self._run([pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "60",
                   "stop"], check=check, timeout=90)

    def restart(self, mode="fast"):
        self._run([pg_bin("pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                   "-m", mode, "-w", "-t", "60", "restart"], timeout=90)
        self.wait_ready()

    def is_ready(self):
        r = subprocess.run([pg_bin("pg_isready"), "-q", "-h", str(self.sockdir),
                            "-p", str(self.port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        return r.returncode == 0

    def wait_ready(self, timeout=60):
        wait_for(self.is_ready, timeout, 0.1, f"PostgreSQL {self.name} to accept connections")

    def is_running(self):
        return (self.datadir / "postmaster.pid").exists()

    def log_text(self):
        with contextlib.suppress(OSError):
            return self.logfile.read_text(errors="replace")
        return ""

    # -- SQL --------------------------------------------------------------------------------------
    def dsn(self, dbname="postgres", user=None, tcp=False, **extra):
        host = self.host if tcp else str(self.sockdir)
        return conninfo(host=host, port=self.port, dbname=dbname,
                        user=user or self.superuser, **extra)

    def connect(self, dbname="postgres", user=None, tcp=False, autocommit=True, **kw):
        """A direct psycopg connection (Unix socket, superuser by default)."""
        return psycopg.connect(self.dsn(dbname, user, tcp), autocommit=autocommit,
                               connect_timeout=10, **kw)

    def sql(self, query, params=None, dbname="postgres", user=None):
        """Runs one statement on a fresh autocommit connection; returns all rows (or [])."""
        with self.connect(dbname, user) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def sql1(self, query, params=None, dbname="postgres", user=None):
        rows = self.sql(query, params, dbname, user)
        return rows[0][0] if rows else None

    def create_role(self, name, password=None, method=None, superuser=False, login=True,
                    replace=True):
        """Creates a role.  method (None = trusted over TCP) is one of 'password', 'md5',
        'scram-sha-256': the password is stored in that form (password_encryption) and the
        role must use that method over TCP."""
        group = {None: None, "trust": None, "password": "pw_password", "plain": "pw_password",
                 "md5": "pw_md5", "scram-sha-256": "pw_scram", "scram": "pw_scram"}[method]
        enc = "md5" if method == "md5" else "scram-sha-256"
        with self.connect() as conn:
            if replace:
                conn.execute(f"DROP ROLE IF EXISTS {quote_ident(name)}")
            conn.execute(f"SET password_encryption = {quote_literal(enc)}")
            opts = ["LOGIN" if login else "NOLOGIN"]
            if superuser:
                opts.append("SUPERUSER")
            if password is not None:
                opts.append(f"PASSWORD {quote_literal(password)}")
            conn.execute(f"CREATE ROLE {quote_ident(name)} {' '.join(opts)}")
            if group:
                conn.execute(f"GRANT {group} TO {quote_ident(name)}")
        return name

    def role_secret(self, name):
        """The stored password (md5... or SCRAM-SHA-256$...) of a role, as pg_authid has it."""
        return self.sql1("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,))

    def create_database(self, name, owner=None, template="template1"):
        owner = owner or TEST_USER
        with self.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {quote_ident(name)} OWNER {quote_ident(owner)} "
                         f"TEMPLATE {quote_ident(template)}")
        return name

    def backends(self, dbname, user=None):
        """Number of client backends connected to dbname (optionally as user)."""
        q = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
             "AND datname = %s")
        params = [dbname]
        if user:
            q += " AND usename = %s"
            params.append(user)
        return self.sql1(q, params)

    # -- replication ------------------------------------------------------------------------------
    def is_in_recovery(self):
        """pg_is_in_recovery(): True on a standby, False on a primary (or a promoted standby)."""
        return self.sql1("SELECT pg_is_in_recovery()")

    def current_lsn(self):
        """pg_current_wal_lsn() (a primary) as text, e.g. '0/3000148'."""
        return self.sql1("SELECT pg_current_wal_lsn()::text")

    def replay_lsn(self):
        """pg_last_wal_replay_lsn() (a standby) as text, or None."""
        return self.sql1("SELECT pg_last_wal_replay_lsn()::text")

    def sync_lsn(self):
        """An LSN that a standby has replayed only once everything committed on this primary
        so far is visible to it.  (pg_current_wal_lsn() alone can fall short: commits are
        asynchronous here, and the insert position can sit just past a page header.)  Writes
        one tiny transactional WAL message with a flushing commit, and returns its end LSN."""
        with self.connect() as conn:
            conn.execute("SET synchronous_commit = local")
            return conn.execute(
                "SELECT pg_logical_emit_message(true, 'pgharness', 'sync')::text"
            ).fetchone()[0]

    def replayed(self, lsn):
        """True when this standby has replayed WAL up to lsn (text or None: False)."""
        if lsn is None:
            return False
        return bool(self.sql1("SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)",
                              (lsn,)))

    def wait_replay(self, primary, timeout=30):
        """Waits until this standby has replayed everything primary had committed when called
        (its pg_last_wal_replay_lsn() passes the primary's WAL position).  Returns the LSN."""
        lsn = primary.sync_lsn()
        try:
            wait_for(lambda: self.replayed(lsn), timeout, 0.02)
        except TimeoutError:
            raise TimeoutError(
                f"{self.name} (port {self.port}) did not replay {primary.name} up to {lsn} "
                f"within {timeout}s: replayed {self.replay_lsn()}, replay "
                f"{self.replay_paused_state()}, replication state "
                f"{primary.replication_state(self)}") from None
        return lsn

    def lag_bytes(self, primary):
        """Bytes of WAL the primary has written that this standby has not replayed yet."""
        cur = primary.current_lsn()
        return self.sql1("SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())::bigint",
                         (cur,))

    def pause_replay(self, timeout=10):
        """pg_wal_replay_pause() on this standby; returns once nothing more is replayed (state
        'paused', or 'pause requested': the startup process checks before every record)."""
        self.sql("SELECT pg_wal_replay_pause()")
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: self.replay_paused_state() == "paused", min(timeout, 1), 0.02)
        return self

    def resume_replay(self):
        self.sql("SELECT pg_wal_replay_resume()")
        return self

    def replay_paused_state(self):
        """pg_get_wal_replay_pause_state(): 'not paused', 'pause requested', 'paused' (None when
        not a standby or not reachable)."""
        with contextlib.suppress(Exception):
            return self.sql1("SELECT CASE WHEN pg_is_in_recovery() "
                             "THEN pg_get_wal_replay_pause_state() END")
        return None

    def promote(self, method="pg_ctl", timeout=60):
        """Promotes this standby to a primary and waits until it accepts writes.  method:
        'pg_ctl' (pg_ctl promote -w) or 'sql' (SELECT pg_promote(true, timeout))."""
        if method == "pg_ctl":
            self._run([pg_bin("pg_ctl"), "-D", str(self.datadir), "-w", "-t", str(timeout),
                       "promote"], timeout=timeout + 10)
        elif method == "sql":
            if not self.sql1("SELECT pg_promote(true, %s)", (int(timeout),)):
                raise RuntimeError(f"pg_promote() on {self.name} did not finish in {timeout}s")
        else:
            raise ValueError(f"unknown promote method {method!r}")
        wait_for(lambda: not self.is_in_recovery(), timeout, 0.05, f"{self.name} to promote")
        self.is_replica = False
        self.save_meta()
        return self

    def follow(self, primary):
        """Points this standby's walreceiver at another primary (after a failover); replicas
        follow the new timeline (recovery_target_timeline = latest)."""
        ci = conninfo(host=primary.host, port=primary.port, user=primary.superuser,
                      application_name=self.name)
        with self.connect() as conn:
            conn.execute(f"ALTER SYSTEM SET primary_conninfo = {quote_literal(ci)}")
            conn.execute("SELECT pg_reload_conf()")
        return self

    def replication_state(self, replica):
        """pg_stat_replication.state on this primary for replica ('streaming', 'catchup', ...),
        or None when it is not connected."""
        name = replica if isinstance(replica, str) else replica.name
        rows = self.sql("SELECT state FROM pg_stat_replication WHERE application_name = %s",
                        (name,))
        return rows[0][0] if rows else None

    def wait_streaming(self, replica, timeout=30):
        """Waits until replica streams from this primary (pg_stat_replication: 'streaming')."""
        wait_for(lambda: self.replication_state(replica) == "streaming", timeout, 0.05,
                 f"{getattr(replica, 'name', replica)} to stream from {self.name}")
        return self


class Cluster:
    """The session-wide set of servers: the primary now, replicas and shards on demand.

    Servers live in basedir/NAME with a meta.json, so a replica or shard that one test started
    (tests run in forked processes) is found and reused by later tests, and stopped at the end
    by the runner."""

    def __init__(self, basedir):
        self.basedir = Path(basedir)
        self.basedir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.basedir, 0o755)
        self.primary = None

    def start(self):
        self.primary = PgServer(self.basedir, "primary").init().start()
        self._bootstrap(self.primary)
        return self

    @staticmethod
    def _bootstrap(server):
        with server.connect() as conn:
            for g in ("pw_password", "pw_md5", "pw_scram"):
                conn.execute(f"CREATE ROLE {g} NOLOGIN")
            conn.execute(f"CREATE ROLE {TEST_USER} LOGIN CREATEDB")

    def _get(self, name, create):
        srv = PgServer.load(self.basedir, name)
        if srv is None:
            srv = create()
        elif not srv.is_ready():
            srv.start()
        return srv

    def replica(self, i=0):
        """Streaming replica i of the primary (pg_basebackup -R, hot_standby), created on first
        use; it streams from the primary when this returns."""
        name = f"replica{i}"

        def create():
            srv = PgServer(self.basedir, name).init_replica(self.primary).start()
            self.primary.wait_streaming(srv)
            return srv
        return self._get(name, create)

    # Private servers (TestEnv.topology) live in a test's directory; each registers a marker
    # here so that one a test leaves running (killed on timeout) is stopped after it.
    def _private_dir(self):
        d = self.basedir / "_private"
        d.mkdir(exist_ok=True)
        return d

    def register_private(self, server):
        (self._private_dir() / f"{os.getpid()}_{server.port}").write_text(str(server.dir))

    def reap_private(self):
        """Stops (immediate) every private server still running; returns their names."""
        reaped = []
        d = self.basedir / "_private"
        if not d.is_dir():
            return reaped
        for marker in d.iterdir():
            with contextlib.suppress(Exception):
                path = Path(marker.read_text().strip())
                srv = PgServer.load(path.parent, path.name)
                if srv is not None and srv.is_running():
                    srv.stop(mode="immediate", check=False)
                    reaped.append(str(path))
            with contextlib.suppress(OSError):
                marker.unlink()
        return reaped

    def shard(self, i):
        """Shard primary i: shard 0 is the main primary, others are separate clusters with the
        same roles, created on first use."""
        if i == 0:
            return self.primary

        def create():
            srv = PgServer(self.basedir, f"shard{i}").init().start()
            self._bootstrap(srv)
            return srv
        return self._get(f"shard{i}", create)

    def servers(self):
        """Every server created so far (by this process or by any test)."""
        out = []
        for meta in sorted(self.basedir.glob("*/meta.json")):
            srv = PgServer.load(self.basedir, meta.parent.name)
            if srv:
                out.append(self.primary if srv.name == "primary" and self.primary else srv)
        return out

    def ensure_running(self):
        """Starts any server that a test left stopped, resumes WAL replay on a shared replica
        that a test left paused, and stops private servers a test left running; returns the
        names of the shared servers fixed."""
        fixed = []
        self.reap_private()
        for s in self.servers():
            if not s.is_ready():
                with contextlib.suppress(Exception):
                    s.stop(mode="immediate", check=False)
                s.start()
                fixed.append(s.name)
            if s.is_replica:
                with contextlib.suppress(Exception):
                    if s.replay_paused_state() in ("paused", "pause requested"):
                        s.resume_replay()
                        fixed.append(f"{s.name} (replay resumed)")
        return fixed

    def stop(self):
        self.reap_private()
        # replicas first, so they do not complain about a vanished primary
        for s in sorted(self.servers(), key=lambda s: not s.is_replica):
            with contextlib.suppress(Exception):
                s.stop(mode="immediate", check=False)


PRIVATE_PG_CONF = {
    # small and quick: a private topology is started per test
    "shared_buffers": "16MB",
    "wal_keep_size": "64MB",
    "max_wal_size": "256MB",
    "autovacuum": "off",
    # a standby retries a lost (or redirected, see follow()) primary quickly
    "wal_retrieve_retry_interval": "100ms",
    "wal_receiver_status_interval": "1s",
}


class Topology:
    """A private primary with n streaming replicas in dir (see TestEnv.topology): a test may
    stop, pause or promote them without disturbing the session-wide Cluster.

    .primary is the configured primary (what pgmux's `primary =` line points at), .replicas
    the standbys in order; after a failover use current_primary()."""

    def __init__(self, basedir, n_replicas=2, max_connections=100, extra_conf=None,
                 on_create=None):
        self.dir = Path(basedir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        conf = dict(PRIVATE_PG_CONF)
        conf.update(extra_conf or {})
        self.primary = PgServer(self.dir, "primary", max_connections=max_connections,
                                extra_conf=conf)
        self.replicas = [PgServer(self.dir, f"replica{i}", max_connections=max_connections,
                                  extra_conf=conf) for i in range(n_replicas)]
        self.on_create = on_create
        self.timings = {}

    @property
    def servers(self):
        return [self.primary] + self.replicas

    def start(self, timeout=60):
        t0 = time.monotonic()
        self.primary._prepare_dirs()
        if self.on_create:
            self.on_create(self.primary)
        self.primary.init().start(timeout)
        Cluster._bootstrap(self.primary)
        self.timings["primary"] = time.monotonic() - t0
        errors = []

        def make(r):
            try:
                r._prepare_dirs()
                if self.on_create:
                    self.on_create(r)
                r.init_replica(self.primary).start(timeout)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        threads = [threading.Thread(target=make, args=(r,)) for r in self.replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + 30)
        if errors:
            raise errors[0]
        for r in self.replicas:
            self.primary.wait_streaming(r, timeout)
        self.timings["total"] = time.monotonic() - t0
        return self

    def current_primary(self):
        """The running server that is not in recovery (the promoted one after a failover)."""
        for s in self.servers:
            if s.is_ready():
                with contextlib.suppress(Exception):
                    if not s.is_in_recovery():
                        return s
        return None

    def wait_replay(self, timeout=30, primary=None):
        """Waits until every running standby has replayed the primary's WAL."""
        primary = primary or self.current_primary() or self.primary
        for r in self.replicas:
            if r is not primary and r.is_ready():
                r.wait_replay(primary, timeout)

    def database(self, name, owner=None):
        """Creates database name on the (current) primary, waits for the standbys to have it."""
        primary = self.current_primary() or self.primary
        primary.create_database(name, owner)
        self.wait_replay(primary=primary)
        return name

    def stop(self, mode="immediate"):
        for s in reversed(self.servers):
            with contextlib.suppress(Exception):
                s.stop(mode=mode, check=False)

    def logs(self, lines=30):
        return "\n".join(f"--- {s.name} (port {s.port}) postgres.log, last {lines} lines ---\n"
                         + tail(s.log_text(), lines) for s in self.servers)


# ----------------------------------------------------------------------------------------------
# pgmux

def _ini_value(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


class Pgmux:
    """One pgmux (or PgBouncer) process.

    settings: general keys (dict); databases: {name: "host=... port=... dbname=..."};
    users: {name: secret} written to the auth_file; user_settings: the [users] section;
    sections: {name: {key: value}} rendered as [database NAME] sections after [databases]
    (a list value renders as repeated keys: {"replica": [a, b]} -> two `replica =` lines).
    """

    _ids = itertools.count(1)

    def __init__(self, workdir, databases, settings=None, users=None, user_settings=None,
                 binary=None, section=None, verbose=0, port=None, env=None, args=(),
                 sections=None):
        self.id = next(Pgmux._ids)
        self.dir = Path(workdir) / f"pgmux{self.id}"
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.binary = binary or PGMUX_BIN
        self.section = section or PGMUX_SECTION
        self.run_as_service = IS_ROOT and os.path.basename(self.binary) == "pgbouncer"
        if self.run_as_service:
            chown_service(self.dir)
        self.port = port or free_port()
        self.ini = self.dir / "pgmux.ini"
        self.auth_file = self.dir / "userlist.txt"
        self.logfile = self.dir / "pgmux.log"
        self.outfile = self.dir / "pgmux.out"
        self.pidfile = self.dir / "pgmux.pid"
        self.verbose = verbose
        self.env = env
        self.args = list(args)
        self.proc = None
        self.returncode = None
        self.signals_sent = []
        self.databases = dict(databases)
        self.users = dict(users or {})
        self.user_settings = dict(user_settings or {})
        self.sections = {k: dict(v) for k, v in (sections or {}).items()}
        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": str(self.dir),
            "auth_type": "trust",
            "auth_file": str(self.auth_file),
            "logfile": str(self.logfile),
            "pidfile": str(self.pidfile),
            "admin_users": "postgres",
            "stats_users": "postgres",
        }
        self.settings.update(settings or {})
        self.write_config()
        self.write_userlist()

    # -- files ----------------------------------------------------------------------------------
    def render_config(self, settings=None, databases=None, user_settings=None, sections=None):
        settings = self.settings if settings is None else settings
        databases = self.databases if databases is None else databases
        user_settings = self.user_settings if user_settings is None else user_settings
        sections = self.sections if sections is None else sections
        lines = [f"[{self.section}]"]
        lines += [f"{k} = {_ini_value(v)}" for k, v in settings.items() if v is not None]
        lines += ["", "[databases]"]
        lines += [f"{k} = {v}" for k, v in databases.items()]
        if user_settings:
            lines += ["", "[users]"]
            lines += [f"{k} = {v}" for k, v in user_settings.items()]
        for name, keys in sections.items():
            lines += ["", f"[database {name}]"]
            for k, v in keys.items():
                for one in (v if isinstance(v, (list, tuple)) else [v]):
                    if one is not None:
                        lines.append(f"{k} = {_ini_value(one)}")
        return "\n".join(lines) + "\n"

    def config_line(self, pattern):
        """The 1-based line number of the first ini line matching the regex pattern."""
        rx = re.compile(pattern)
        for i, line in enumerate(self.ini.read_text().splitlines(), 1):
            if rx.search(line):
                return i
        raise LookupError(f"no line matching {pattern!r} in {self.ini}")

    def _write(self, path, text):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        if self.run_as_service:
            chown_service(tmp)
        os.replace(tmp, path)

    def write_config(self, raw=None, **changes):
        """Rewrites the ini: raw text as given, or the current settings updated by changes
        (a value of None removes a key)."""
        if raw is None:
            for k, v in changes.items():
                if v is None:
                    self.settings.pop(k, None)
                else:
                    self.settings[k] = v
            raw = self.render_config()
        self._write(self.ini, raw)

    def write_section(self, name, **changes):
        """Updates [database name] (a value of None removes a key; the section is created when
        missing) and rewrites the ini."""
        keys = self.sections.setdefault(name, {})
        for k, v in changes.items():
            if v is None:
                keys.pop(k, None)
            else:
                keys[k] = v
        self._write(self.ini, self.render_config())

    def write_userlist(self, users=None):
        if users is not None:
            self.users = dict(users)
        text = "".join('"{}" "{}"\n'.format(u.replace('"', '""'), s.replace('"', '""'))
                       for u, s in self.users.items())
        self._write(self.auth_file, text)

    # -- process --------------------------------------------------------------------------------
    def command(self):
        cmd = [self.binary] + ["-v"] * self.verbose + self.args + [str(self.ini)]
        return as_service_user(cmd) if self.run_as_service else cmd

    def start(self, wait=True, timeout=30):
        env = dict(os.environ)
        # LeakSanitizer runs when pgmux exits gracefully (SIGINT); a leak fails the test
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        env.update(self.env or {})
        self.out = open(self.outfile, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, cwd=str(self.dir), env=env,
                                     preexec_fn=raise_nofile)
        self.returncode = None
        if wait:
            self.wait_listening(timeout)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_listening(self, timeout=30):
        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgmux exited with {self.proc.returncode} during startup:\n"
                                   + tail(self.log_text(), 40))
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            return False
        try:
            wait_for(up, timeout, 0.05, f"pgmux to listen on port {self.port}")
        except TimeoutError:
            raise TimeoutError(f"pgmux did not listen on {self.port} within {timeout}s:\n"
                               + tail(self.log_text(), 40)) from None

    def signal(self, sig):
        assert self.alive(), "pgmux is not running"
        self.signals_sent.append(sig)
        self.proc.send_signal(sig)

    def reload(self, settle=1.0):
        """SIGHUP, then waits `settle` seconds for the reload to take effect."""
        self.signal(signal.SIGHUP)
        time.sleep(settle)

    def wait_exit(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout)
            return self.returncode
        except subprocess.TimeoutExpired:
            return None

    def stop(self, graceful_timeout=5):
        """SIGINT, then SIGQUIT, then SIGKILL.  Returns a list of problems found (crash,
        sanitizer report, had to be killed); the caller decides whether they fail a test."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, graceful_timeout), (signal.SIGQUIT, 3),
                              (signal.SIGKILL, 10)):
                self.signals_sent.append(sig)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(sig)
                if self.wait_exit(wait) is not None:
                    break
            if signal.SIGKILL in self.signals_sent:
                problems.append(f"pgmux{self.id} ignored SIGINT and SIGQUIT; killed")
            elif signal.SIGQUIT in self.signals_sent:
                print(f"note: pgmux{self.id} did not exit within {graceful_timeout}s of SIGINT "
                      f"(a client still connected?); stopped with SIGQUIT")
        else:
            self.returncode = self.proc.returncode
        rc = self.proc.returncode
        self.returncode = rc
        if rc is not None and rc < 0 and -rc not in self.signals_sent:
            problems.append(f"pgmux{self.id} died of signal {-rc} ({signal.Signals(-rc).name})")
        with contextlib.suppress(Exception):
            self.out.close()
        report = self.sanitizer_report()
        if report:
            problems.append(f"pgmux{self.id} sanitizer report:\n{report}")
        return problems

    def sanitizer_report(self):
        text = self.output_text()
        m = SANITIZER_PATTERNS.search(text)
        if not m:
            return ""
        start = text.rfind("\n", 0, max(0, m.start() - 2000)) + 1
        return text[start:start + 8000]

    # -- logs -----------------------------------------------------------------------------------
    def output_text(self):
        with contextlib.suppress(OSError):
            return self.outfile.read_text(errors="replace")
        return ""

    def log_text(self):
        """The logfile followed by stdout/stderr (whichever the binary wrote)."""
        parts = []
        for p in (self.logfile, self.outfile):
            with contextlib.suppress(OSError):
                t = p.read_text(errors="replace")
                if t:
                    parts.append(t)
        return "\n".join(parts)

    def log_text_dedup(self):
        """The logfile, plus the stdout/stderr lines that are not in it (sanitizer reports)."""
        log, out = "", ""
        with contextlib.suppress(OSError):
            log = self.logfile.read_text(errors="replace")
        with contextlib.suppress(OSError):
            out = self.outfile.read_text(errors="replace")
        seen = set(log.splitlines())
        extra = [l for l in out.splitlines() if l not in seen]
        return log + ("\n--- stdout/stderr ---\n" + "\n".join(extra) if extra else "")

    def log_mark(self):
        """An offset into the logfile; pass it to log_since / wait_log."""
        with contextlib.suppress(OSError):
            return self.logfile.stat().st_size, self.outfile.stat().st_size
        return 0, 0

    def log_since(self, mark):
        out = []
        for p, off in zip((self.logfile, self.outfile), mark):
            with contextlib.suppress(OSError):
                with open(p, "rb") as f:
                    f.seek(off)
                    out.append(f.read().decode(errors="replace"))
        return "\n".join(out)

    def wait_log(self, pattern, mark=(0, 0), timeout=10):
        rx = re.compile(pattern, re.I)
        return wait_for(lambda: rx.search(self.log_since(mark)), timeout, 0.1,
                        f"log line matching {pattern!r}")

    # -- clients --------------------------------------------------------------------------------
    def dsn(self, dbname, user=TEST_USER, password=None, **extra):
        return conninfo(host="127.0.0.1", port=self.port, dbname=dbname, user=user,
                        password=password, **extra)

    def connect(self, dbname, user=TEST_USER, password=None, autocommit=True,
                prepare_threshold=None, connect_timeout=10, **kw):
        """A psycopg 3 connection through pgmux.  Autocommit, and no server-side prepared
        statements unless prepare_threshold is given (transaction pooling needs that unless the
        pooler tracks prepared statements)."""
        conn = psycopg.connect(self.dsn(dbname, user, password), autocommit=autocommit,
                               connect_timeout=connect_timeout, **kw)
        conn.prepare_threshold = prepare_threshold
        return conn

    def show(self, what, user="postgres"):
        """Runs "SHOW <what>" on the admin console (simple query protocol) and returns the
        rows as dicts (column order kept)."""
        admin_db = "pgbouncer" if self.section == "pgbouncer" else "pgmux"
        with psycopg.connect(self.dsn(admin_db, user), autocommit=True,
                             connect_timeout=10) as conn:
            cur = conn.execute(f"SHOW {what}")
            names = [d.name for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    async def aconnect(self, dbname, user=TEST_USER, password=None, **kw):
        """An asyncpg connection through pgmux."""
        import asyncpg
        kw.setdefault("timeout", 10)
        return await asyncpg.connect(host="127.0.0.1", port=self.port, database=dbname,
                                     user=user, password=password, ssl=False, **kw)

    def psql(self, dbname, sql, user=TEST_USER, password=None, check=True, timeout=60,
             args=()):
        """Runs psql -X -A -t through pgmux; returns CompletedProcess (text)."""
        env = dict(os.environ, PGCONNECT_TIMEOUT="10")
        if password is not None:
            env["PGPASSWORD"] = password
        cmd = [pg_bin("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
               "-p", str(self.port), "-U", user, "-d", dbname, *args, "-c", sql]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"psql failed ({r.returncode}): {r.stderr}")
        return r


def run_async(coro, timeout=60):
    """Runs a coroutine on a fresh event loop with an overall timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ----------------------------------------------------------------------------------------------
# per-test environment

class TestEnv:
    """Handed to every test function.  Everything it starts is stopped by cleanup()."""

    def __init__(self, cluster, workdir, name):
        self.cluster = cluster
        self.pg = cluster.primary
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.name = name
        self.short = re.sub(r"[^a-z0-9]+", "_", name.lower().replace("test_", ""))[:40]
        self.pgmuxes = []
        self.topologies = []
        self._seq = itertools.count(1)
        self._cleanups = []

    def database(self, suffix="", server=None, owner=None, replicas=()):
        """Creates a fresh database for this test (owned by `app`) and returns its name.
        replicas: standbys of server to wait for (until they have the database too)."""
        server = server or self.pg
        name = f"t_{self.short}{suffix}_{next(self._seq)}"
        server.create_database(name, owner=owner)
        for r in replicas:
            r.wait_replay(server)
        return name

    # -- replicas -------------------------------------------------------------------------------
    def replicas(self, n=2):
        """The session-wide cluster's first n streaming replicas of env.pg (created on first
        use, shared by every test): do not stop or promote them; a test that pauses replay
        must resume it (see pause_shared_replay).  Waits until each one streams: a test that
        restarted the primary (test_restart) leaves replicas that are still reconnecting."""
        reps = [self.cluster.replica(i) for i in range(n)]
        for r in reps:
            wait_for(lambda r=r: self.pg.replication_state(r) == "streaming", 20, 0.05,
                     f"{r.name} streaming from the primary")
        return reps

    def pause_shared_replay(self, replica):
        """Pauses WAL replay on a shared replica and resumes it when the test ends."""
        replica.pause_replay()
        self.on_cleanup(replica.resume_replay)
        return replica

    def topology(self, n_replicas=2, **kw):
        """A private primary + n_replicas streaming standbys in this test's directory (same
        roles as the shared cluster), stopped (immediate) when the test ends.  Returns a
        Topology (.primary, .replicas, .database(name), .wait_replay(), .timings)."""
        topo = Topology(self.dir / f"topo{next(self._seq)}", n_replicas,
                        on_create=self.cluster.register_private, **kw)
        self.topologies.append(topo)
        topo.start()
        print(f"private topology: primary {topo.primary.port}, replicas "
              f"{[r.port for r in topo.replicas]}, started in {topo.timings['total']:.2f}s")
        return topo

    def shard_topologies(self, n, n_replicas=1, **kw):
        """n private topologies (see topology()) started at the same time; a list of Topology.
        For sharding tests: one topology per shard."""
        topos = [Topology(self.dir / f"topo{next(self._seq)}", n_replicas,
                          on_create=self.cluster.register_private, **kw) for _ in range(n)]
        self.topologies.extend(topos)
        errors = []

        def start(t):
            try:
                t.start()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        threads = [threading.Thread(target=start, args=(t,)) for t in topos]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        if errors:
            raise errors[0]
        for i, t in enumerate(topos):
            print(f"private topology {i}: primary {t.primary.port}, replicas "
                  f"{[r.port for r in t.replicas]}, started in {t.timings['total']:.2f}s")
        return topos

    def sharded_section(self, dbname, topologies, shard_key="user_id", **keys):
        """A sharded [database X] section (for Pgmux(sections={X: ...})): shard_key, shards,
        then shard.N.primary / shard.N.replica lines for dbname on topologies[N]'s primary
        and replicas, then keys (no_shard_key, read_routing, ...)."""
        sec = {"shard_key": shard_key, "shards": len(topologies)}
        for i, t in enumerate(topologies):
            sec[f"shard.{i}.primary"] = self.backend_entry(t.primary, dbname)
            sec[f"shard.{i}.replica"] = [self.backend_entry(r, dbname) for r in t.replicas]
        sec.update(keys)
        return sec

    def backend_entry(self, server, dbname, **extra):
        """A primary/replica line for a [database X] section: server over TCP, as user
        postgres (the monitor logs in with it), with extra keys (weight=2, ...)."""
        parts = [f"host={server.host}", f"port={server.port}", f"dbname={dbname}",
                 "user=postgres"]
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def routing_section(self, dbname, primary=None, replicas=(), weights=None, **keys):
        """A [database X] section (for env.pgmux(sections={X: ...})): primary and replica
        lines for dbname, weights[i] (None: no weight key) on replica i, then keys."""
        primary = primary or self.pg
        weights = list(weights or [])
        sec = {"primary": self.backend_entry(primary, dbname), "replica": []}
        for i, r in enumerate(replicas):
            w = weights[i] if i < len(weights) else None
            extra = {"weight": w} if w is not None else {}
            sec["replica"].append(self.backend_entry(r, dbname, **extra))
        sec.update(keys)
        return sec

    def role(self, base, password=None, method=None, superuser=False, server=None):
        """Creates a fresh role (see PgServer.create_role) and returns its name."""
        server = server or self.pg
        name = f"{base}_{next(self._seq)}"
        return server.create_role(name, password, method, superuser=superuser)

    def db_entry(self, dbname, server=None, **extra):
        """A [databases] value pointing at server (TCP) / dbname, with extra keys."""
        server = server or self.pg
        parts = [f"host={server.host}", f"port={server.port}", f"dbname={dbname}"]
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def pgmux(self, databases, settings=None, users=None, start=True, **kw):
        """Starts a pgmux.  databases: a list of database names on the primary, or a dict
        {name: entry}.  users: {name: secret} for the auth_file ({app: ""} by default)."""
        if not isinstance(databases, dict):
            if isinstance(databases, str):
                databases = [databases]
            databases = {d: self.db_entry(d) for d in databases}
        if users is None:
            users = {TEST_USER: ""}
        users.setdefault("postgres", "")
        px = Pgmux(self.dir, databases, settings, users, **kw)
        self.pgmuxes.append(px)
        if start:
            px.start()
        return px

    def sql(self, dbname, query, params=None, server=None):
        """Runs one statement directly on the server (not through pgmux) as the test user."""
        return (server or self.pg).sql(query, params, dbname=dbname, user=TEST_USER)

    def sql1(self, dbname, query, params=None, server=None):
        rows = self.sql(dbname, query, params, server)
        return rows[0][0] if rows else None

    def on_cleanup(self, fn):
        self._cleanups.append(fn)

    def report_logs(self, lines=60):
        out = []
        for px in self.pgmuxes:
            out.append(f"--- pgmux{px.id} ({px.binary}, port {px.port}) log, last {lines} "
                       f"lines ---\n" + tail(px.log_text_dedup(), lines))
        for topo in self.topologies:
            out.append(topo.logs(20))
        return "\n".join(out)

    def cleanup(self):
        problems = []
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                problems.append(f"cleanup {fn!r} failed: {e!r}")
        for px in self.pgmuxes:
            problems += px.stop()
        # after pgmux: it would only log its backends' disappearance
        for topo in self.topologies:
            try:
                topo.stop()
            except Exception as e:  # noqa: BLE001
                problems.append(f"stopping private topology {topo.dir} failed: {e!r}")
        return problems


def sampler(fn, interval=0.05):
    """Starts a thread that calls fn() every interval seconds and records the results.
    Returns an object with .values, .max(), .stop()."""

    class S:
        def __init__(self):
            self.values = []
            self.errors = []
            self._stop = threading.Event()
            self.t = threading.Thread(target=self._run, daemon=True)
            self.t.start()

        def _run(self):
            while not self._stop.is_set():
                try:
                    self.values.append(fn())
                except Exception as e:  # noqa: BLE001
                    self.errors.append(e)
                self._stop.wait(interval)

        def stop(self):
            self._stop.set()
            self.t.join(10)
            return self

        def max(self):
            return max(self.values) if self.values else None

    return S()


class StatActivitySampler:
    """Samples pg_stat_activity for dbname/user over one persistent direct connection."""

    def __init__(self, server, dbname, user=TEST_USER, interval=0.05):
        self.conn = server.connect()
        self.q = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                  "AND datname = %s AND usename = %s")
        self.params = (dbname, user)
        self.lock = threading.Lock()
        self.s = sampler(self._one, interval)

    def _one(self):
        with self.lock:
            return self.conn.execute(self.q, self.params).fetchone()[0]

    def stop(self):
        self.s.stop()
        with contextlib.suppress(Exception):
            self.conn.close()
        if self.s.errors and not self.s.values:
            raise self.s.errors[0]
        return self

    @property
    def values(self):
        return self.s.values

    def max(self):
        return self.s.max()


# ----------------------------------------------------------------------------------------------
# test metadata

def timeout(seconds):
    """Decorator: the runner kills the test after `seconds` (default 60)."""
    def deco(fn):
        fn.timeout = seconds
        return fn
    return deco


class Skip(Exception):
    """Raise to skip a test (counted as skipped, not failed)."""


def new_session_dir():
    base = Path(os.environ.get("PGHARNESS_TMPDIR", tempfile.gettempdir()))
    d = Path(tempfile.mkdtemp(prefix="pgmux-it-", dir=base))
    os.chmod(d, 0o755)
    return d


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)
