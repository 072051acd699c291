"""pgharness: runs real PostgreSQL servers and pgmux instances for the integration tests.

Run with Debian's /usr/bin/python3 (psycopg 3 and asyncpg are installed for it only).

Objects:
  PgServer   one PostgreSQL 15 server in a temporary directory (initdb --nosync, fsync=off),
             listening on a free loopback port and on a Unix socket in its own directory.
             Runs as the `postgres` system user when we are root.
  Cluster    the session-wide topology: a primary now; replicas (pg_basebackup -R) and shard
             primaries are started lazily by replica(i) / shard(i) the first time a test asks.
  Pgmux      one pgmux process with its own ini, auth_file, log and port.  PGMUX_BIN overrides
             the binary and PGMUX_SECTION the ini section, so the same tests can run against
             PgBouncer (PGMUX_BIN=/usr/sbin/pgbouncer PGMUX_SECTION=pgbouncer).
  TestEnv    what a test function receives: the cluster, a scratch directory, unique databases
             and roles, and pgmux instances that are stopped (and checked for sanitizer
             reports) when the test ends.

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
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
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

    def __init__(self, basedir, name="primary", port=None, max_connections=600):
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
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write(PG_CONF.format(port=self.port, sockdir=self.sockdir,
                                   max_connections=self.max_connections))

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
        """Streaming replica i of the primary (pg_basebackup -R), created on first use."""
        name = f"replica{i}"
        return self._get(name, lambda: PgServer(self.basedir, name)
                         .init_replica(self.primary).start())

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
        """Starts any server that a test left stopped; returns the names restarted."""
        fixed = []
        for s in self.servers():
            if not s.is_ready():
                with contextlib.suppress(Exception):
                    s.stop(mode="immediate", check=False)
                s.start()
                fixed.append(s.name)
        return fixed

    def stop(self):
        # replicas first, so they do not complain about a vanished primary
        for s in sorted(self.servers(), key=lambda s: not s.is_replica):
            with contextlib.suppress(Exception):
                s.stop(mode="immediate", check=False)


# ----------------------------------------------------------------------------------------------
# pgmux

def _ini_value(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


class Pgmux:
    """One pgmux (or PgBouncer) process.

    settings: general keys (dict); databases: {name: "host=... port=... dbname=..."};
    users: {name: secret} written to the auth_file; user_settings: the [users] section.
    """

    _ids = itertools.count(1)

    def __init__(self, workdir, databases, settings=None, users=None, user_settings=None,
                 binary=None, section=None, verbose=0, port=None, env=None, args=()):
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
    def render_config(self, settings=None, databases=None, user_settings=None):
        settings = self.settings if settings is None else settings
        databases = self.databases if databases is None else databases
        user_settings = self.user_settings if user_settings is None else user_settings
        lines = [f"[{self.section}]"]
        lines += [f"{k} = {_ini_value(v)}" for k, v in settings.items() if v is not None]
        lines += ["", "[databases]"]
        lines += [f"{k} = {v}" for k, v in databases.items()]
        if user_settings:
            lines += ["", "[users]"]
            lines += [f"{k} = {v}" for k, v in user_settings.items()]
        return "\n".join(lines) + "\n"

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
        self._seq = itertools.count(1)
        self._cleanups = []

    def database(self, suffix="", server=None, owner=None):
        """Creates a fresh database for this test (owned by `app`) and returns its name."""
        server = server or self.pg
        name = f"t_{self.short}{suffix}_{next(self._seq)}"
        return server.create_database(name, owner=owner)

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
