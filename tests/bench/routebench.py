#!/usr/bin/python3
"""routebench: what read/write routing (and, later, sharding) costs pgmux.

Purpose: the project's own benchmark for the [database X] features.  It starts a throwaway
topology on loopback (a PostgreSQL 15 primary and two streaming replicas), runs several pgmux
instances that differ in one setting only, and drives them in turn with pgbench, alternating
the order of the sides each round (A B, B A, ...) so that machine drift cancels out in the
ratios.  pgmux's CPU is read from /proc (user and system ticks of its whole process tree)
before and after each pgbench run, the way ../shared/bench/proxybench measures it.

Comparisons (--compare, default "routing,ryw"):
  routing   pgbench -S (select-only) through: a plain [databases] entry for the primary (no
            routing, the PgBouncer-style baseline), [database bench] with read_routing = off,
            and [database bench] with read_routing = on (reads go to the two replicas).
            Target: routing on/off user_us_per_tx <= 1.10.
  ryw       a write workload through [database bench] with read_routing = on and
            read_your_writes = off vs lsn; lsn costs one extra round trip (the primary's WAL
            position) per write transaction.  Workloads: pgbench -N (simple-update: a
            BEGIN ... END block, so everything goes to the primary) and "write-read", a custom
            script of an autocommit UPDATE followed by a SELECT of the same row (the read that
            read-your-writes must send to a caught-up replica or to the primary).  Run with 1
            client (the extra round trip shows in the latency) and 50 (the cost under load).
  sharding  pgbench custom script "SELECT ... FROM users WHERE user_id = :id" through a plain
            [databases] entry for one unsharded database vs [database users] with shards = 2
            and shard_key = user_id (two databases on the primary, each holding its half of
            the rows, split with PostgreSQL's hash partitioning).  Not run by default.

Figures per side: tps, lat_ms (pgbench average latency), cpu_us_per_tx (pgmux user+sys CPU
per pgbench transaction), user_us_per_tx, sys_us_per_tx; ratios B/A are medians of the
per-round ratios.  "routed" lines give where the measured statements went (deltas of the
admin console's SHOW BACKENDS reads/writes).  After the comparisons it runs the SQL
classifier micro-benchmark tests/bench/bench_sqlscan if it is built.

CPU per transaction depends on load (the more transactions per wakeup, the less event-loop
work each), and routing on serves fewer transactions here because the replicas share the
machine's cores.  --rate N runs every side at pgbench -R N, and --rate auto at 80% of the
slowest side's warm-up throughput, so that the sides are compared at the same load.

Usage (from the source tree; as root the servers and pgmux run as user postgres):
  /usr/bin/python3 tests/bench/routebench.py [--pgmux src/pgmux] [--compare routing,ryw]
      [--clients 50] [--rate TPS|auto] [--seconds 10] [--rounds 3] [--modes simple,extended]
      [--write-modes simple] [--write-workloads simple-update,write-read] [--ryw-clients 1,50]
      [--pool-size 20] [--scale 10] [--json FILE] [--keep] [--strict]

Exit status: 0 when every run worked, 1 when a run failed, 2 with --strict when a target was
missed.  Needs the Debian packages postgresql-15 and postgresql-contrib (pgbench).
"""
import argparse
import json
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
TCK = os.sysconf("SC_CLK_TCK")
USER_TARGET = 1.10   # read_routing on/off user_us_per_tx


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port(taken=set()):
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p not in taken:
            taken.add(p)
            return p


# ---- processes ----------------------------------------------------------------------------

class Runner:
    """Runs commands as user postgres (or $BENCH_USER) when we are root: PostgreSQL refuses root."""

    def __init__(self):
        self.uid = self.gid = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam(os.environ.get("BENCH_USER", "postgres"))
            self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def _pre(self):
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        if self.uid is not None:
            os.setgroups([])
            os.setgid(self.gid)
            os.setuid(self.uid)
        os.setsid()   # Ctrl-C on the terminal reaches only us; we stop the children ourselves

    def chown(self, path):
        if self.uid is not None:
            os.chown(path, self.uid, self.gid)

    def popen(self, argv, **kw):
        return subprocess.Popen(argv, preexec_fn=self._pre, **kw)

    def run(self, argv, **kw):
        return subprocess.run(argv, preexec_fn=self._pre, **kw)

    def write(self, path, text):
        with open(path, "w") as f:
            f.write(text)
        self.chown(path)
        return path


def tree_pids(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_ticks(root):
    """(user, system) clock ticks of a process tree (all threads of each process)."""
    user = system = 0
    for p in tree_pids(root):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return user, system


# ---- PostgreSQL ---------------------------------------------------------------------------

class Server:
    """One PostgreSQL instance: the primary (initdb) or a streaming replica (pg_basebackup)."""

    def __init__(self, runner, root, name):
        self.r, self.name, self.port = runner, name, free_port()
        self.dir = os.path.join(root, name)
        self.logfile = os.path.join(root, name + ".log")
        self.sockdir = root
        self.started = False

    def psql(self, sql, db="postgres", check=True):
        out = self.r.run([f"{PGBIN}/psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                          "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
                          "-c", sql], capture_output=True, text=True)
        if check and out.returncode != 0:
            raise RuntimeError(f"{self.name}: psql {sql!r} failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def init_primary(self, max_conn):
        self.r.run([f"{PGBIN}/initdb", "--nosync", "-D", self.dir, "-A", "trust", "-U", "postgres"],
                   check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.dir, "postgresql.conf"), "a") as f:
            f.write("\n# routebench\n"
                    f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{self.sockdir}'\n"
                    f"max_connections = {max_conn}\nshared_buffers = 128MB\n"
                    # fsync off makes a commit's WAL flush cheap, while synchronous_commit on
                    # keeps the flush (and so the send to the replicas) at commit time instead
                    # of up to wal_writer_delay later: read-your-writes sees realistic lag.
                    "fsync = off\nsynchronous_commit = on\nfull_page_writes = off\n"
                    "wal_level = replica\nmax_wal_senders = 10\nhot_standby = on\n"
                    "wal_writer_delay = 10ms\nautovacuum = off\n"
                    "checkpoint_timeout = 30min\nmax_wal_size = 4GB\n")
        self.set_port()

    def init_replica(self, primary):
        self.r.run([f"{PGBIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port),
                    "-U", "postgres", "-D", self.dir, "-R", "-X", "stream", "-c", "fast"],
                   check=True, stdout=subprocess.DEVNULL)
        self.set_port()

    def set_port(self):
        with open(os.path.join(self.dir, "postgresql.conf"), "a") as f:
            f.write(f"port = {self.port}\n")

    def start(self):
        self.r.run([f"{PGBIN}/pg_ctl", "-D", self.dir, "-l", self.logfile, "-w", "-t", "60", "start"],
                   check=True, stdout=subprocess.DEVNULL)
        self.started = True

    def stop(self):
        if self.started:
            self.r.run([f"{PGBIN}/pg_ctl", "-D", self.dir, "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.started = False


class Topology:
    def __init__(self, runner, root, n_replicas, scale, max_conn):
        self.r, self.root, self.scale = runner, root, scale
        self.primary = Server(runner, root, "primary")
        self.replicas = [Server(runner, root, f"replica{i}") for i in range(n_replicas)]
        self.max_conn = max_conn

    def start(self):
        p = self.primary
        log(f"routebench: primary on port {p.port} in {self.root}")
        p.init_primary(self.max_conn)
        p.start()
        p.psql("CREATE DATABASE bench")
        log(f"routebench: pgbench -i -s {self.scale}")
        self.r.run([f"{PGBIN}/pgbench", "-h", "127.0.0.1", "-p", str(p.port), "-U", "postgres",
                    "-i", "-s", str(self.scale), "-q", "bench"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p.psql("CHECKPOINT")
        for rep in self.replicas:
            log(f"routebench: {rep.name} on port {rep.port} (pg_basebackup)")
            rep.init_replica(p)
            rep.start()
        self.wait_replay()

    def wait_replay(self, timeout=120):
        """Until every replica has replayed the primary's current WAL position."""
        lsn = self.primary.psql("SELECT pg_current_wal_lsn()")
        deadline = time.time() + timeout
        for rep in self.replicas:
            while True:
                ok = rep.psql(f"SELECT coalesce(pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn, false)",
                              check=False)
                if ok == "t":
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"{rep.name} did not replay up to {lsn} in {timeout}s")
                time.sleep(0.1)

    def stop(self):
        for s in self.replicas + [self.primary]:
            s.stop()


# ---- pgmux --------------------------------------------------------------------------------

class Pgmux:
    """One pgmux process with its own ini file: the [pgmux] section plus the given database text."""

    def __init__(self, runner, root, name, binary, databases, sections, args):
        self.r, self.name, self.port = runner, name, free_port()
        self.ini = os.path.join(root, f"pgmux-{name}.ini")
        self.logfile = os.path.join(root, f"pgmux-{name}.log")
        users = os.path.join(root, "userlist.txt")
        runner.write(users, '"postgres" ""\n')
        runner.write(self.ini,
                     "[pgmux]\n"
                     f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
                     f"auth_type = trust\nauth_file = {users}\npool_mode = transaction\n"
                     f"default_pool_size = {args.pool_size}\n"
                     f"max_client_conn = {max(2000, args.max_clients + 100)}\n"
                     f"logfile = {self.logfile}\nadmin_users = postgres\n"
                     # the replica monitor's poll (1 s is the default; written out only where
                     # there is a [database X] section, so that the plain baseline also runs
                     # on a pgmux that predates routing)
                     + ("monitor_interval = 1\n" if sections else "") +
                     "\n[databases]\n" + databases + "\n" + sections)
        self.argv = [binary, self.ini]
        self.proc = None

    def start(self):
        self.stderr = open(self.logfile + ".stderr", "w")
        self.proc = self.r.popen(self.argv, stdout=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgmux ({self.name}) exited at start with code "
                                   f"{self.proc.returncode}: {tail(self.logfile + '.stderr')}"
                                   f"{tail(self.logfile)}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"pgmux ({self.name}) did not listen on {self.port}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def admin(self, command):
        """An admin console SHOW as a list of dicts; [] when it fails."""
        out = self.r.run([f"{PGBIN}/psql", "-X", "--csv", "-h", "127.0.0.1", "-p", str(self.port),
                          "-U", "postgres", "-d", "pgmux", "-c", command],
                         capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return []
        import csv
        rows = list(csv.reader(out.stdout.splitlines()))
        return [dict(zip(rows[0], r)) for r in rows[1:]] if rows else []

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)   # exit at once
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.stderr.close()


def tail(path, n=5):
    try:
        with open(path) as f:
            lines = f.read().strip().splitlines()[-n:]
        return (" | ".join(lines) + " ") if lines else ""
    except OSError:
        return ""


# ---- pgbench ------------------------------------------------------------------------------

def rate_arg(v):
    if v == "auto" or (v.isdigit() and int(v) >= 0):
        return v
    raise argparse.ArgumentTypeError("expected a transaction rate or 'auto'")


def pgbench(runner, port, dbname, workload, mode, clients, args, seconds, rate=0):
    jobs = max(1, min(args.jobs, clients))
    argv = [f"{PGBIN}/pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-n",
            "-M", mode, "-c", str(clients), "-j", str(jobs), "-T", str(seconds)]
    if rate:
        argv += ["-R", str(rate)]
    argv += workload["argv"] + [dbname]
    try:
        out = runner.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": ["pgbench timed out"]}
    text = out.stdout + out.stderr
    tx = re.search(r"actually processed: (\d+)", text)
    tps = re.search(r"tps = ([\d.]+)", text)
    lat = re.search(r"latency average = ([\d.]+) ms", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    if out.returncode != 0 or not tx or not tps:
        return {"ok": False, "error": text.strip().splitlines()[-3:]}
    res = {"ok": True, "tx": int(tx.group(1)), "tps": float(tps.group(1)),
           "lat_ms": float(lat.group(1)) if lat else None,
           "failed": int(failed.group(1)) if failed else 0}
    if "-r" in workload["argv"]:
        # "statement latencies in milliseconds ...:" then "   0.123   0  UPDATE ..." lines
        stm, on = [], False
        for line in text.splitlines():
            if line.startswith("statement latencies"):
                on = True
                continue
            m = re.match(r"^\s+([\d.]+)\s+(?:\d+\s+)?(\S.*)$", line) if on else None
            if m:
                if not m.group(2).startswith("\\"):
                    stm.append([m.group(2)[:60], float(m.group(1))])
            elif on:
                on = False
        res["statements_ms"] = stm
    return res


# ---- comparisons --------------------------------------------------------------------------

def backend_lines(topo, dbname="bench"):
    p = topo.primary
    lines = f"primary = host=127.0.0.1 port={p.port} dbname={dbname} user=postgres\n"
    for rep in topo.replicas:
        lines += f"replica = host=127.0.0.1 port={rep.port} dbname={dbname} user=postgres\n"
    return lines


def cluster_section(topo, args, routing, ryw):
    return ("[database bench]\n" + backend_lines(topo) +
            f"read_routing = {routing}\nread_your_writes = {ryw}\npool_size = {args.pool_size}\n")


def comparison_routing(topo, args, root, runner):
    plain = f"bench = host=127.0.0.1 port={topo.primary.port} dbname=bench user=postgres\n"
    return {
        "name": "routing",
        "title": "read_routing: pgbench -S (select-only)",
        "dbname": "bench",
        "variants": [
            {"name": "plain", "databases": plain, "sections": ""},
            {"name": "routing_off", "databases": "", "sections": cluster_section(topo, args, "off", "off")},
            {"name": "routing_on", "databases": "", "sections": cluster_section(topo, args, "on", "off")},
        ],
        "workloads": [{"name": "select-only", "argv": ["-S"], "modes": args.modes,
                       "clients": [args.clients]}],
        "ratios": [("routing_on", "routing_off", "read_routing on/off", USER_TARGET),
                   ("routing_off", "plain", "read_routing off/plain [databases]", None),
                   ("routing_on", "plain", "read_routing on/plain [databases]", None)],
    }


def comparison_ryw(topo, args, root, runner):
    script = runner.write(os.path.join(root, "write-read.sql"),
                          f"\\set aid random(1, {100000 * args.scale})\n"
                          "\\set delta random(-5000, 5000)\n"
                          "UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n"
                          "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n")
    known = {
        "simple-update": {"name": "simple-update", "argv": ["-N", "-r"]},
        "tpcb-like": {"name": "tpcb-like", "argv": ["-b", "tpcb-like", "-r"]},
        "write-read": {"name": "write-read", "argv": ["-f", script, "-r"]},
    }
    workloads = []
    for w in args.write_workloads:
        if w not in known:
            raise SystemExit(f"unknown write workload {w!r}; expected one of {', '.join(known)}")
        workloads.append(dict(known[w], modes=args.write_modes, clients=args.ryw_clients))
    return {
        "name": "ryw",
        "title": "read_your_writes (read_routing = on): write workloads",
        "dbname": "bench",
        "variants": [
            {"name": "ryw_off", "databases": "", "sections": cluster_section(topo, args, "on", "off")},
            {"name": "ryw_lsn", "databases": "", "sections": cluster_section(topo, args, "on", "lsn")},
        ],
        "workloads": workloads,
        "ratios": [("ryw_lsn", "ryw_off", "read_your_writes lsn/off", None)],
        "extra_latency": ("ryw_lsn", "ryw_off"),
    }


def comparison_sharding(topo, args, root, runner):
    """Two shard databases on the primary, each with the rows PostgreSQL's hash partitioning
    (modulus 2) puts in its remainder, vs one database with all rows."""
    p = topo.primary
    n_users = 100000 * args.scale
    p.psql("CREATE DATABASE users_all")
    p.psql("CREATE TABLE users (user_id int PRIMARY KEY, name text, balance int)", db="users_all")
    p.psql(f"INSERT INTO users SELECT g, 'user ' || g, 0 FROM generate_series(1, {n_users}) g",
           db="users_all")
    for s in range(2):
        db = f"users_s{s}"
        p.psql(f"CREATE DATABASE {db}")
        p.psql("CREATE TABLE users_split (user_id int, name text, balance int) "
               "PARTITION BY HASH (user_id); "
               f"CREATE TABLE users_part PARTITION OF users_split FOR VALUES WITH (MODULUS 2, REMAINDER {s}); "
               "CREATE TABLE users_other PARTITION OF users_split "
               f"FOR VALUES WITH (MODULUS 2, REMAINDER {1 - s})", db=db)
        p.psql(f"INSERT INTO users_split SELECT g, 'user ' || g, 0 FROM generate_series(1, {n_users}) g; "
               "CREATE TABLE users AS SELECT * FROM users_part; "
               "ALTER TABLE users ADD PRIMARY KEY (user_id); DROP TABLE users_split", db=db)
        p.psql("VACUUM ANALYZE users", db=db)
    p.psql("VACUUM ANALYZE users", db="users_all")
    script = runner.write(os.path.join(root, "shard-select.sql"),
                          f"\\set id random(1, {n_users})\n"
                          "SELECT user_id, name, balance FROM users WHERE user_id = :id;\n")
    plain = f"users = host=127.0.0.1 port={p.port} dbname=users_all user=postgres\n"
    sharded = ("[database users]\nshards = 2\nshard_key = user_id\n"
               f"shard.0.primary = host=127.0.0.1 port={p.port} dbname=users_s0 user=postgres\n"
               f"shard.1.primary = host=127.0.0.1 port={p.port} dbname=users_s1 user=postgres\n"
               f"pool_size = {args.pool_size}\n")
    return {
        "name": "sharding",
        "title": "sharding: SELECT ... WHERE user_id = :id, 2 shards vs one database",
        "dbname": "users",
        "variants": [
            {"name": "unsharded", "databases": plain, "sections": ""},
            {"name": "sharded_2", "databases": "", "sections": sharded},
        ],
        "workloads": [{"name": "select-by-key", "argv": ["-f", script], "modes": args.modes,
                       "clients": [args.clients]}],
        "ratios": [("sharded_2", "unsharded", "sharding 2 shards/unsharded", None)],
    }


COMPARISONS = {"routing": comparison_routing, "ryw": comparison_ryw, "sharding": comparison_sharding}
FIGS = ("tps", "lat_ms", "cpu_us_per_tx", "user_us_per_tx", "sys_us_per_tx")


def backend_counts(px):
    rows = px.admin("SHOW BACKENDS")
    return {r.get("backend", "?"): {"reads": int(r.get("reads") or 0), "writes": int(r.get("writes") or 0)}
            for r in rows}


def run_comparison(comp, topo, args, root, runner, binary):
    log(f"\nroutebench: {comp['title']}")
    procs, dead = [], {}
    results = []
    try:
        for v in comp["variants"]:
            px = Pgmux(runner, root, v["name"], binary, v["databases"], v["sections"], args)
            try:
                px.start()
                procs.append(px)
            except RuntimeError as e:   # measure the other sides anyway
                log(f"  {e}")
                dead[v["name"]] = str(e)
                px.stop()
        if not procs:
            raise RuntimeError("; ".join(dead.values()))
        cases = [(wl, mode, nc) for wl in comp["workloads"] for nc in wl["clients"] for mode in wl["modes"]]
        for wl, mode, nc in cases:
            rate = 0 if args.rate == "auto" else int(args.rate)
            warm_tps = []
            if args.warmup > 0:
                for px in procs:
                    res = pgbench(runner, px.port, comp["dbname"], wl, mode, nc, args, args.warmup)
                    if not res["ok"]:
                        log(f"  warm-up {px.name} {mode} FAILED: {res['error']}")
                    else:
                        warm_tps.append(res["tps"])
            if args.rate == "auto" and warm_tps:
                # every side at 80% of what the slowest side managed in its warm-up
                rate = int(0.8 * min(warm_tps))
                log(f"  {wl['name']} {mode} c={nc}: pgbench -R {rate} on every side")
            rows = {v["name"]: [] for v in comp["variants"]}
            for name, why in dead.items():
                rows[name] = [{"ok": False, "error": [why]}]
            before = {px.name: backend_counts(px) for px in procs}
            for rnd in range(args.rounds):
                order = procs if rnd % 2 == 0 else list(reversed(procs))
                for px in order:
                    if comp["name"] == "ryw":
                        topo.wait_replay()   # each side starts with caught-up replicas
                    if not px.alive():
                        res = {"ok": False, "error": [f"pgmux exited: {tail(px.logfile)}"]}
                    else:
                        u0, s0 = cpu_ticks(px.proc.pid)
                        res = pgbench(runner, px.port, comp["dbname"], wl, mode, nc, args,
                                      args.seconds, rate)
                        u1, s1 = cpu_ticks(px.proc.pid)
                        if res["ok"] and res["tx"]:
                            per = 1e6 / TCK / res["tx"]
                            res["user_us_per_tx"] = (u1 - u0) * per
                            res["sys_us_per_tx"] = (s1 - s0) * per
                            res["cpu_us_per_tx"] = res["user_us_per_tx"] + res["sys_us_per_tx"]
                    rows[px.name].append(res)
                    log(f"  {wl['name']:13} {mode:8} c={nc:<4} round {rnd} {px.name:12} "
                        + (f"tps={res['tps']:.0f} lat={res['lat_ms']:.3f}ms "
                           f"cpu/tx={res.get('cpu_us_per_tx', 0):.2f}us "
                           f"(user {res.get('user_us_per_tx', 0):.2f}, sys {res.get('sys_us_per_tx', 0):.2f})"
                           + (f" failed={res['failed']}" if res["failed"] else "")
                           if res["ok"] else f"FAILED {res['error']}"))
            results.append(summarise(comp, wl["name"], mode, nc, rows))
            results[-1]["rate"] = rate
            # where the measured rounds' statements went (SHOW BACKENDS reads/writes deltas)
            results[-1]["routed"] = routed = {}
            for px in procs:
                after = backend_counts(px) if px.alive() else {}
                routed[px.name] = {
                    be: {k: n[k] - before[px.name].get(be, {}).get(k, 0) for k in ("reads", "writes")}
                    for be, n in after.items()}
    finally:
        for px in procs:
            px.stop()
    return {"name": comp["name"], "title": comp["title"], "results": results}


def median_ratio(a, b, key):
    pairs = [(x[key], y[key]) for x, y in zip(a, b)
             if x["ok"] and y["ok"] and x.get(key) is not None and y.get(key)]
    return statistics.median(x / y for x, y in pairs) if pairs else None


def summarise(comp, workload, mode, clients, rows):
    out = {"workload": workload, "mode": mode, "clients": clients,
           "case": f"{workload}, {mode}, c={clients}", "sides": {}, "ratios": []}
    for name, runs in rows.items():
        ok = [r for r in runs if r["ok"]]
        if not runs or len(ok) != len(runs):
            out["sides"][name] = {"ok": False,
                                  "error": next((r["error"] for r in runs if not r["ok"]), "no runs")}
            continue
        side = {"ok": True, "failed": sum(r["failed"] for r in ok), "runs": runs}
        for k in FIGS:
            vals = [r[k] for r in ok if r.get(k) is not None]
            side[k] = statistics.median(vals) if vals else None
        stm = [r["statements_ms"] for r in ok if r.get("statements_ms")]
        if stm:
            side["statements_ms"] = [[s[0], statistics.median(run[i][1] for run in stm if i < len(run))]
                                     for i, s in enumerate(stm[0])]
        out["sides"][name] = side
    for b, a, label, target in comp["ratios"]:
        sa, sb = out["sides"].get(a, {}), out["sides"].get(b, {})
        if not (sa.get("ok") and sb.get("ok")):
            out["ratios"].append({"label": label, "b": b, "a": a, "ok": False, "target": target})
            continue
        r = {"label": label, "b": b, "a": a, "ok": True, "target": target}
        for k in ("tps", "lat_ms", "cpu_us_per_tx", "user_us_per_tx"):
            r[k] = median_ratio(rows[b], rows[a], k)
        if target is not None and r["user_us_per_tx"] is not None:
            r["met"] = r["user_us_per_tx"] <= target
        out["ratios"].append(r)
    if comp.get("extra_latency"):
        b, a = comp["extra_latency"]
        sa, sb = out["sides"].get(a, {}), out["sides"].get(b, {})
        if sa.get("ok") and sb.get("ok"):
            pairs = [x["lat_ms"] - y["lat_ms"] for x, y in zip(rows[b], rows[a])
                     if x.get("lat_ms") is not None and y.get("lat_ms") is not None]
            if pairs:
                out["extra_latency_ms"] = statistics.median(pairs)
    return out


# ---- output -------------------------------------------------------------------------------

def fmt(v, f):
    return "n/a" if v is None else format(v, f)


def print_comparison(c):
    print(f"\n== {c['title']}")
    print(f"{'workload':14} {'mode':9} {'clients':>7} {'side':12} {'tps':>9} {'lat_ms':>8} {'cpu_us/tx':>10} "
          f"{'user_us/tx':>10} {'sys_us/tx':>10} {'failed':>6}")
    for r in c["results"]:
        for name, s in r["sides"].items():
            if not s["ok"]:
                print(f"{r['workload']:14} {r['mode']:9} {r['clients']:>7} {name:12} FAILED: {' / '.join(s['error'])}")
                continue
            print(f"{r['workload']:14} {r['mode']:9} {r['clients']:>7} {name:12} {fmt(s['tps'], '.0f'):>9} "
                  f"{fmt(s['lat_ms'], '.3f'):>8} {fmt(s['cpu_us_per_tx'], '.2f'):>10} "
                  f"{fmt(s['user_us_per_tx'], '.2f'):>10} {fmt(s['sys_us_per_tx'], '.2f'):>10} "
                  f"{s['failed']:>6}")
    if any(s.get("statements_ms") for r in c["results"] for s in r["sides"].values()):
        print("per-statement latency (ms, pgbench -r, median of rounds):")
        for r in c["results"]:
            for name, s in r["sides"].items():
                for text, ms in s.get("statements_ms", []):
                    print(f"  {r['workload']:14} {r['mode']:9} {r['clients']:>4} {name:12} {ms:8.3f}  {text}")
    for r in c["results"]:
        for name, bk in r.get("routed", {}).items():
            if bk:
                print(f"routed [{r['case']}] {name}: " +
                      ", ".join(f"{k} reads={v['reads']} writes={v['writes']}" for k, v in bk.items()))
    for r in c["results"]:
        for q in r["ratios"]:
            head = f"{q['label']} [{r['case']}{', -R ' + str(r['rate']) if r.get('rate') else ''}]"
            if not q["ok"]:
                print(f"{head}: n/a (a side failed)")
                continue
            line = (f"{head}: user_us_per_tx ratio {fmt(q['user_us_per_tx'], '.3f')}, "
                    f"cpu_us_per_tx {fmt(q['cpu_us_per_tx'], '.3f')}, tps {fmt(q['tps'], '.3f')}, "
                    f"latency {fmt(q['lat_ms'], '.3f')}")
            if q["target"] is not None:
                line += (f" (target user_us_per_tx <= {q['target']:.2f}: "
                         f"{'met' if q.get('met') else 'MISSED'})")
            print(line)
        if "extra_latency_ms" in r:
            print(f"read_your_writes lsn extra latency per transaction [{r['case']}]: "
                  f"{r['extra_latency_ms'] * 1000:+.1f} us")


def run_sqlscan_bench(args):
    exe = os.path.join(TOP, "tests", "bench", "bench_sqlscan")
    corpus = os.path.join(TOP, "tests", "unit", "data", "sqlscan_corpus.txt")
    print("\n== SQL classifier micro-benchmark (tests/bench/bench_sqlscan)")
    if not os.access(exe, os.X_OK):
        print(f"skipped: {os.path.relpath(exe, TOP)} is not built (make tests/bench/bench_sqlscan)")
        return {"skipped": "not built"}
    if not os.path.exists(corpus):
        print(f"skipped: corpus {os.path.relpath(corpus, TOP)} is missing")
        return {"skipped": "no corpus"}
    try:
        out = subprocess.run([exe, corpus], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        print("bench_sqlscan timed out after 600 s")
        return {"error": "timeout"}
    text = (out.stdout + out.stderr).rstrip()
    print(text)
    if out.returncode != 0:
        print(f"bench_sqlscan exited with {out.returncode}")
    return {"rc": out.returncode, "output": text}


# ---- main ---------------------------------------------------------------------------------

def csv_list(s):
    return [x.strip() for x in s.split(",") if x.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pgmux", default=os.path.join(TOP, "src", "pgmux"), help="pgmux binary")
    ap.add_argument("--compare", type=csv_list, default=["routing", "ryw"],
                    help="comma list of: " + ", ".join(COMPARISONS))
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=2, help="pgbench threads")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", default="0", type=rate_arg,
                    help="pgbench -R: the same transaction rate on every side, so that CPU per "
                         "transaction is compared at equal load; 'auto': 80%% of the slowest "
                         "side's warm-up throughput; 0: as fast as possible")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of uncounted pgbench per side")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", type=csv_list, default=["simple", "extended"],
                    help="pgbench -M modes for read workloads")
    ap.add_argument("--ryw-clients", type=lambda v: [int(x) for x in csv_list(v)], default=[1, 50],
                    help="pgbench clients for the write workloads: 1 shows the extra round trip "
                         "in the latency, 50 the cost under load")
    ap.add_argument("--write-modes", type=csv_list, default=["simple"],
                    help="pgbench -M modes for write workloads")
    ap.add_argument("--write-workloads", type=csv_list, default=["simple-update", "write-read"],
                    help="simple-update (pgbench -N), tpcb-like, write-read")
    ap.add_argument("--pool-size", type=int, default=20)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--no-sqlscan", action="store_true", help="skip the classifier micro-benchmark")
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs, data)")
    ap.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    args = ap.parse_args()
    for c in args.compare:
        if c not in COMPARISONS:
            ap.error(f"unknown comparison {c!r}")
    binary = os.path.abspath(args.pgmux)
    if not os.access(binary, os.X_OK):
        ap.error(f"{binary} is not an executable; build it first (bash scripts/build.sh)")

    # SIGTERM/SIGHUP unwind like Ctrl-C, so that the finally below stops everything.
    def on_signal(sig, frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    runner = Runner()
    root = tempfile.mkdtemp(prefix="routebench-")
    os.chmod(root, 0o755)
    runner.chown(root)
    args.max_clients = max([args.clients] + args.ryw_clients)
    max_conn = 60 + 4 * args.pool_size * 3 + args.max_clients
    topo = Topology(runner, root, 2, args.scale, max_conn)
    report = {"kind": "routebench", "pgmux": binary, "clients": args.clients, "seconds": args.seconds,
              "rounds": args.rounds, "pool_size": args.pool_size, "scale": args.scale,
              "comparisons": []}
    ok, interrupted = True, False
    try:
        topo.start()
        for name in args.compare:
            try:
                comp = COMPARISONS[name](topo, args, root, runner)
                res = run_comparison(comp, topo, args, root, runner, binary)
            except (RuntimeError, subprocess.CalledProcessError) as e:
                log(f"routebench: {name}: {e}")
                res = {"name": name, "title": name, "error": str(e), "results": []}
            report["comparisons"].append(res)
            if "error" in res:
                print(f"\n== {res['title']}\nFAILED: {res['error']}")
                ok = False
            else:
                print_comparison(res)
            sys.stdout.flush()
    except KeyboardInterrupt:
        log("routebench: interrupted; cleaning up")
        ok, interrupted = False, True
    finally:
        topo.stop()
        if args.keep:
            log(f"routebench: kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if interrupted:
        return 130
    if not args.no_sqlscan:
        report["sqlscan"] = run_sqlscan_bench(args)

    print("\n== summary")
    missed = False
    for c in report["comparisons"]:
        for r in c.get("results", []):
            for q in r["ratios"]:
                ok = ok and q["ok"] and all(s["ok"] for s in r["sides"].values())
                if q["target"] is None:
                    continue
                if not q["ok"]:
                    print(f"{q['label']} [{r['case']}] user_us_per_tx ratio: n/a")
                    missed = True
                    continue
                print(f"{q['label']} [{r['case']}] user_us_per_tx ratio: "
                      f"{q['user_us_per_tx']:.2f} (target <= {q['target']:.2f})"
                      f"{'' if q['met'] else '  MISSED'}")
                missed = missed or not q["met"]
            if "extra_latency_ms" in r:
                q = next(iter(r["ratios"]), {})
                print(f"read_your_writes lsn/off [{r['case']}]: "
                      f"latency {r['extra_latency_ms'] * 1000:+.1f} us per tx, "
                      f"tps ratio {fmt(q.get('tps'), '.3f')}, "
                      f"user_us_per_tx ratio {fmt(q.get('user_us_per_tx'), '.3f')}, "
                      f"cpu_us_per_tx ratio {fmt(q.get('cpu_us_per_tx'), '.3f')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if not ok:
        return 1
    return 2 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
