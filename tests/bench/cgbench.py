#!/usr/bin/python3
"""cgbench: pgmux's instructions per transaction under callgrind, and a budget check on them.

Purpose: a deterministic figure for "did this change make the data path dearer?".  Wall-clock
benchmarks on a shared 2-core machine cannot resolve 5%; callgrind counts the instructions the
pgmux process executes, which do not depend on load.

Method (the one doc/benchmarks.md used by hand, made repeatable):
  * a PostgreSQL 15 primary on loopback (pgbench -i -s 1), and two streaming replicas when a
    routing configuration is selected (tests/bench/routebench.py's Topology, as user postgres
    when we are root);
  * one pgmux per configuration, started as
        valgrind --tool=callgrind --instr-atstart=no pgmux pgmux.ini
    so that start-up and the warm-up run uninstrumented (and about 10x faster);
  * per case: a pgbench warm-up (fills the pool and pgmux's caches), then
    `callgrind_control -i on` and `-z`, the measured `pgbench -n -S -M MODE -c N -t T
    --random-seed 1`, `callgrind_control --dump`, `-i off`;
  * the figure is the dump's Ir (instructions of the pgmux process, libc and libevent
    included) less the inclusive Ir of pgmux's wall-clock timer callbacks (janitor sweep,
    stats ticks, the replica monitor's probes: work per second, not per transaction, that
    would otherwise make the count depend on how fast valgrind ran), divided by N * T.  The
    raw figure (timers included) is printed too.  pgbench's connects and disconnects are in
    the count (amortised over T transactions per client).

Configurations: {plain [databases] entry, [database bench] read_routing = off (primary and
two replicas listed), read_routing = on} x {simple, extended, prepared} x {1 client, 50
clients (-j2)}, named like "routing_on/extended/c50".  Pool size 20, transaction mode.

Budget: tests/bench/cg_budget.json holds, per configuration, the figure measured when the
budget was last set.  --check exits 1 when a configuration exceeds its budget by more than
the tolerance (5%, the file's "tolerance"), printing every ratio.  Counts depend on the
compiler, libc, libevent and OpenSSL builds: set the budget on the machine image CI runs on
(--update-budget) and say why in the commit.

Stability: within one pgmux process, repeated runs agree to 0.05% (1 client) and 0.25% (50
clients).  Between two
pgmux processes the 1-client figures agree to about 0.3%, the 50-client ones to about 0.5%
(0.55% the most seen):
libc's vector string functions (strncasecmp, strcmp, memchr on the query and statement texts)
take a different number of instructions for a different address alignment, and where malloc
puts a string depends on what was allocated around it; with 50 clients, how many transactions
one wakeup serves varies too.  pgmux runs with GLIBC_TUNABLES mmap_threshold=16384 and
top_pad=0 (its 16 KiB I/O buffers are then mmap'd, always at the same page offset), which
removed the largest such effect (0.5%, routing_off simple); its code paths are unchanged.
Whole run: 18 configurations in about 90 s on the 2-core machine.

Usage (from the source tree; as root the servers, pgmux and valgrind run as user postgres):
  /usr/bin/python3 tests/bench/cgbench.py [--pgmux src/pgmux] [--configs all|LIST]
      [--repeat N] [--processes N] [--tx1 3000] [--tx50 240] [--json FILE]
      [--check] [--update-budget] [--budget FILE] [--keep]
  --configs: "all" (the 18 above, the default) or a comma list of names or globs
             (routing_on/*/c1).
  --repeat N: measure each case N times in a row in the same pgmux and print the spread.
  --processes N: start each configuration's pgmux N times; the figure is the median of all
             runs (--update-budget --processes 2 is how the budget is set).
  --check: compare with the budget file (scripts/test.sh runs this on every configuration).

Exit status: 0 ok; 1 a configuration over budget (--check); 2 a run failed or the setup did;
3 valgrind or callgrind_control is missing.  Needs valgrind, postgresql-15, postgresql-contrib.
"""
import argparse
import fnmatch
import glob
import json
import os
import re
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
sys.path.insert(0, HERE)
import routebench as rb  # noqa: E402  (Runner, Topology, free_port, tail)

PGBIN = rb.PGBIN
BUDGET = os.path.join(HERE, "cg_budget.json")
TOLERANCE = 0.05
VARIANTS = ("plain", "routing_off", "routing_on", "sharded")
MODES = ("simple", "extended", "prepared")
CLIENTS = (1, 50)
ALL = [f"{v}/{m}/c{c}" for v in VARIANTS for m in MODES for c in CLIENTS]
# pgmux's callbacks that run on timers (per second, not per transaction); their inclusive cost
# is taken out of the figure.  Static names: checked against the binary's symbols at start.
TIMER_FUNCS = ("janitor_cb", "tick", "sec_tick", "on_timer", "on_io", "accept_retry", "wait_poll")
POOL_SIZE = 20
# pgmux's I/O buffers (16 KiB + a header) are malloc'd once and then recycled; where malloc put
# them depends on what else was allocated around them (the replica monitor's libpq results,
# timing-dependent), and libc's vector string functions (strncasecmp on the Query text) cost a
# different number of instructions for a different address alignment: 0.5% between two pgmux
# processes (routing_off/simple/c1, 4031 or 4050).  With these tunables allocations from 16 KiB
# up are mmap'd (page-aligned, the same offset every time; top_pad=0 so that the heap's top
# does not serve them first).  pgmux's code is unchanged, and the configurations without the
# effect did not move (plain/simple/c1: 3531 with and without).
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=16384:glibc.malloc.top_pad=0"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---- callgrind dumps ----------------------------------------------------------------------

def parse_dump(path, timer_funcs):
    """(total Ir, Ir inclusive of calls into timer_funcs from outside them) of one dump."""
    names = {}
    positions = 1
    ir_col = 0
    total = None
    timers = 0
    fn = None
    cfn = None
    after_calls = False

    def name_of(rest):
        # "(12) name" defines id 12, "(12)" refers to it, "name" is uncompressed
        rest = rest.strip()
        if rest.startswith("("):
            k, _, nm = rest.partition(")")
            nm = nm.strip()
            if nm:
                names[k] = nm
            return names.get(k, k)
        return rest

    with open(path, errors="replace") as f:
        for line in f:
            if after_calls:
                after_calls = False
                parts = line.split()
                if (cfn in timer_funcs and fn not in timer_funcs
                        and len(parts) > positions + ir_col):
                    timers += int(parts[positions + ir_col])
                continue
            if line.startswith("fn="):
                fn = name_of(line[3:])
            elif line.startswith("cfn="):
                cfn = name_of(line[4:])
            elif line.startswith("calls="):
                after_calls = True
            elif line.startswith("positions:"):
                positions = len(line.split()[1:])
            elif line.startswith("events:"):
                ir_col = line.split()[1:].index("Ir")
            elif line.startswith("totals:") or (total is None and line.startswith("summary:")):
                total = int(line.split()[1 + ir_col])
    if total is None:
        raise RuntimeError(f"{path}: no totals line")
    return total, timers


class Callgrind:
    """pgmux under valgrind --tool=callgrind, driven with callgrind_control."""

    def __init__(self, runner, root, name, binary, ini):
        self.r, self.name = runner, name
        self.out = os.path.join(root, f"callgrind.{name}")
        self.logfile = os.path.join(root, f"valgrind-{name}.log")
        self.argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                     f"--callgrind-out-file={self.out}", f"--log-file={self.logfile}",
                     binary, ini]
        self.proc = None

    def start(self, port, pgmux_log):
        self.stderr = open(self.logfile + ".stderr", "w")
        env = dict(os.environ)
        if MALLOC_TUNABLES:
            env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
        self.proc = self.r.popen(self.argv, stdout=subprocess.DEVNULL, stderr=self.stderr, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgmux ({self.name}) under valgrind exited at start with code "
                                   f"{self.proc.returncode}: {rb.tail(self.logfile)}"
                                   f"{rb.tail(pgmux_log)}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"pgmux ({self.name}) under valgrind did not listen on {port}")

    def control(self, *args):
        out = self.r.run(["callgrind_control", *args, str(self.proc.pid)],
                         capture_output=True, text=True, timeout=120)
        if out.returncode != 0 or "Error" in out.stdout:
            raise RuntimeError(f"callgrind_control {' '.join(args)}: "
                               f"{(out.stdout + out.stderr).strip()[-300:]}")
        return out.stdout

    def dumps(self):
        return set(glob.glob(glob.escape(self.out) + ".*"))

    def measure(self, run):
        """Instrumentation on, counters zeroed, run(), dump, instrumentation off: the dump's path."""
        self.control("-i", "on")
        self.control("-z")
        before = self.dumps()
        try:
            res = run()
        finally:
            self.control("--dump=cgbench")
            self.control("-i", "off")
        new = sorted(self.dumps() - before, key=lambda p: int(p.rsplit(".", 1)[1]))
        if not new:
            raise RuntimeError("callgrind wrote no dump")
        return res, new[-1]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.stderr.close()


# ---- configurations ----------------------------------------------------------------------

def write_ini(runner, root, name, port, topo):
    p = topo.primary
    users = runner.write(os.path.join(root, "userlist.txt"), '"postgres" ""\n')
    logfile = os.path.join(root, f"pgmux-{name}.log")
    if name == "plain":
        dbs, sections = f"bench = host=127.0.0.1 port={p.port} dbname=bench user=postgres\n", ""
    elif name == "sharded":
        # two shards on the primary (bench and its copy bench2), keyed by pgbench's aid: every
        # statement is read for its key (shardsql/shardplan), the cost sharding adds
        sections = ("[database bench]\nshards = 2\nshard_key = aid\nno_shard_key = shard0\n"
                    f"shard.0.primary = host=127.0.0.1 port={p.port} dbname=bench user=postgres\n"
                    f"shard.1.primary = host=127.0.0.1 port={p.port} dbname=bench2 user=postgres\n"
                    f"read_your_writes = off\npool_size = {POOL_SIZE}\n")
        dbs = ""
    else:
        routing = "on" if name == "routing_on" else "off"
        sections = ("[database bench]\n"
                    f"primary = host=127.0.0.1 port={p.port} dbname=bench user=postgres\n" +
                    "".join(f"replica = host=127.0.0.1 port={r.port} dbname=bench user=postgres\n"
                            for r in topo.replicas) +
                    f"read_routing = {routing}\nread_your_writes = off\npool_size = {POOL_SIZE}\n")
        dbs = ""
    ini = runner.write(os.path.join(root, f"pgmux-{name}.ini"),
                       "[pgmux]\n"
                       f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
                       f"auth_type = trust\nauth_file = {users}\npool_mode = transaction\n"
                       f"default_pool_size = {POOL_SIZE}\nmax_client_conn = 200\n"
                       f"logfile = {logfile}\nadmin_users = postgres\n"
                       + ("monitor_interval = 1\n" if sections else "") +
                       "\n[databases]\n" + dbs + "\n" + sections)
    return ini, logfile


def pgbench(runner, port, mode, clients, tx, timeout):
    argv = [f"{PGBIN}/pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-n", "-S",
            "-M", mode, "-c", str(clients), "-j", str(min(2, clients)), "-t", str(tx),
            "--random-seed", "1", "bench"]
    out = runner.run(argv, capture_output=True, text=True, timeout=timeout)
    text = out.stdout + out.stderr
    done = re.search(r"actually processed: (\d+)", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    if out.returncode != 0 or not done:
        raise RuntimeError(f"pgbench -M {mode} -c {clients} -t {tx} failed: "
                           + " | ".join(text.strip().splitlines()[-3:]))
    n = int(done.group(1))
    if n != clients * tx or (failed and int(failed.group(1))):
        raise RuntimeError(f"pgbench -M {mode} -c {clients}: {n} of {clients * tx} transactions, "
                           f"{failed.group(1) if failed else '?'} failed")
    return n


def select(spec):
    if spec == "all":
        return list(ALL)
    out = []
    for pat in (x.strip() for x in spec.split(",") if x.strip()):
        hit = [c for c in ALL if fnmatch.fnmatchcase(c, pat)]
        if not hit:
            print(f"cgbench: no configuration matches {pat!r}; known: {', '.join(ALL)}",
                  file=sys.stderr)
            sys.exit(2)
        out += [c for c in hit if c not in out]
    return out


def check_symbols(binary):
    """Which TIMER_FUNCS the binary has (a missing one is only reported)."""
    try:
        nm = subprocess.run(["nm", binary], capture_output=True, text=True).stdout
    except OSError:
        return set(TIMER_FUNCS)
    have = {ln.split()[-1] for ln in nm.splitlines() if len(ln.split()) == 3}
    missing = [f for f in TIMER_FUNCS if f not in have]
    if missing:
        log(f"cgbench: note: {binary} has no symbol {', '.join(missing)}")
    return set(TIMER_FUNCS)


def environment(binary):
    """What the counts depend on besides pgmux's code: compiler, the shared libraries that run
    per transaction, valgrind (its CPUID decides which libc string functions run)."""
    env = {}
    try:
        cmt = subprocess.run(["readelf", "-p", ".comment", binary], capture_output=True,
                             text=True).stdout
        m = re.search(r"(GCC: .*|clang version .*)", cmt)
        env["compiler"] = m.group(1).strip() if m else "?"
    except OSError:
        env["compiler"] = "?"
    env["glibc"] = os.confstr("CS_GNU_LIBC_VERSION") or "?"
    try:
        ldd = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    except OSError:
        ldd = ""
    for lib in ("libevent", "libssl", "libpq"):
        m = re.search(rf"^\s*({lib}[^ ]*) => (\S+)", ldd, re.M)
        env[lib] = os.path.basename(os.path.realpath(m.group(2))) if m else "?"
    try:
        env["valgrind"] = subprocess.run(["valgrind", "--version"], capture_output=True,
                                         text=True).stdout.strip()
    except OSError:
        env["valgrind"] = "?"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
        env["cpu"] = "avx2" if "avx2" in flags else "no avx2"
    except OSError:
        env["cpu"] = "?"
    return env


# ---- running ------------------------------------------------------------------------------

def run_all(args, configs, binary):
    runner = rb.Runner()
    root = tempfile.mkdtemp(prefix="cgbench-")
    os.chmod(root, 0o755)
    runner.chown(root)
    timer_funcs = check_symbols(binary)
    # pgmux runs as the postgres user when we are root, and a checkout under a private
    # directory (mktemp -d is 0700) is out of its reach: run a copy from the open temp dir
    local = os.path.join(root, "pgmux")
    shutil.copy2(binary, local)
    binary = local
    variants = [v for v in VARIANTS if any(c.startswith(v + "/") for c in configs)]
    n_rep = 2 if any(v.startswith("routing") for v in variants) else 0
    topo = rb.Topology(runner, root, n_rep, 1, 120)
    results = {}
    try:
        t0 = time.time()
        topo.start()
        if "sharded" in variants:
            topo.primary.psql("CREATE DATABASE bench2 TEMPLATE bench")
        log(f"cgbench: PostgreSQL ready ({n_rep} replicas) in {time.time() - t0:.0f}s")
        for v, proc_no in ((v, k) for k in range(args.processes) for v in variants):
            port = rb.free_port()
            ini, pgmux_log = write_ini(runner, root, v, port, topo)
            cg = Callgrind(runner, root, f"{v}.p{proc_no}", binary, ini)
            try:
                cg.start(port, pgmux_log)
                if v == "sharded":
                    wait_backends_up(runner, port, 2)
                elif v != "plain":
                    wait_backends_up(runner, port, 1 + len(topo.replicas))
                for c in (c for c in configs if c.startswith(v + "/")):
                    _, mode, nc = c.split("/")
                    nc = int(nc[1:])
                    tx = args.tx1 if nc == 1 else args.tx50
                    runs = results.setdefault(c, [])
                    try:
                        t1 = time.time()
                        pgbench(runner, port, mode, nc, args.warmup, 600)
                        for i in range(args.repeat):
                            t2 = time.time()
                            n, dump = cg.measure(lambda: pgbench(runner, port, mode, nc, tx, 900))
                            total, timers = parse_dump(dump, timer_funcs)
                            if not args.keep:
                                os.unlink(dump)
                            runs.append({"process": proc_no, "tx": n, "ir": total, "timer_ir": timers,
                                         "ir_per_tx": (total - timers) / n,
                                         "raw_ir_per_tx": total / n, "seconds": time.time() - t2})
                            log(f"  {c:26} pgmux {proc_no} run {i}: {(total - timers) / n:9.1f} Ir/tx "
                                f"(raw {total / n:.1f}, timers {timers / n:.1f}) "
                                f"{n} tx in {time.time() - t2:.1f}s")
                        log(f"  {c:26} {time.time() - t1:.0f}s with warm-up")
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        log(f"  {c}: FAILED: {e}")
                        runs.append({"error": str(e)})
                        if not cg.alive():
                            raise RuntimeError(f"pgmux ({v}) died: {rb.tail(pgmux_log)}")
            except RuntimeError as e:
                log(f"cgbench: {v}: {e}")
                for c in configs:
                    if c.startswith(v + "/") and not any("error" in r for r in results.get(c, [])):
                        results.setdefault(c, []).append({"error": str(e)})
            finally:
                cg.stop()
    finally:
        topo.stop()
        if args.keep:
            log(f"cgbench: kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return results


def wait_backends_up(runner, port, n, timeout=60):
    """Until the admin console's SHOW BACKENDS lists n backends, all up (the monitor's first
    probes are done): the warm-up then starts from the same state every time."""
    import csv
    deadline = time.time() + timeout
    while True:
        out = runner.run([f"{PGBIN}/psql", "-X", "--csv", "-h", "127.0.0.1", "-p", str(port),
                          "-U", "postgres", "-d", "pgmux", "-c", "SHOW BACKENDS"],
                         capture_output=True, text=True, timeout=60)
        rows = list(csv.DictReader(out.stdout.splitlines())) if out.returncode == 0 else []
        if len(rows) >= n and all(r.get("state") == "up" for r in rows):
            return
        if time.time() > deadline:
            raise RuntimeError(f"backends not up in pgmux after {timeout}s: {out.stdout.strip()} "
                               f"{out.stderr.strip()}")
        time.sleep(0.2)


def summary(runs):
    ok = [r for r in runs if "error" not in r]
    if not ok or len(ok) != len(runs):
        return None
    vals = [r["ir_per_tx"] for r in ok]
    med = statistics.median(vals)
    return {"ir_per_tx": med, "raw_ir_per_tx": statistics.median(r["raw_ir_per_tx"] for r in ok),
            "timer_ir_per_tx": statistics.median(r["timer_ir"] / r["tx"] for r in ok),
            "spread": (max(vals) - min(vals)) / med if med else 0.0, "runs": runs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pgmux", default=os.path.join(TOP, "src", "pgmux"), help="pgmux binary")
    ap.add_argument("--configs", default="all", help='"all" or a comma list of names or globs '
                    '(routing_on/*/c1)')
    ap.add_argument("--repeat", type=int, default=1, help="measured runs per case, one after "
                    "the other in the same pgmux process")
    ap.add_argument("--processes", type=int, default=1, help="start each configuration's pgmux "
                    "this many times (one after the other); the figure is the median of all runs")
    ap.add_argument("--tx1", type=int, help="transactions of the 1-client cases (default 3000, "
                    "with --check the budget file's)")
    ap.add_argument("--tx50", type=int, help="transactions per client with 50 clients (default "
                    "240, with --check the budget file's)")
    ap.add_argument("--warmup", type=int, default=100, help="warm-up transactions per client")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--budget", default=BUDGET, help="budget file (default tests/bench/cg_budget.json)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a configuration exceeds its "
                    "budget by more than the tolerance")
    ap.add_argument("--update-budget", action="store_true",
                    help="write the measured figures into the budget file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, dumps)")
    args = ap.parse_args()
    configs = select(args.configs)
    binary = os.path.abspath(args.pgmux)
    if not os.access(binary, os.X_OK):
        ap.error(f"{binary} is not an executable; build it first (bash scripts/build.sh)")
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            print(f"cgbench: {tool} not found (Debian package valgrind)", file=sys.stderr)
            return 3
    budget = {}
    if args.check or args.update_budget:
        try:
            with open(args.budget) as f:
                bfile = json.load(f)
        except FileNotFoundError:
            if args.check:
                print(f"cgbench: no budget file {args.budget}", file=sys.stderr)
                return 2
            bfile = {}
        budget = bfile.get("budget", {})
        tol = float(bfile.get("tolerance", TOLERANCE))
    else:
        bfile, tol = {}, TOLERANCE
    # connects are amortised over the transactions: a budget holds only at its own counts
    if args.check:
        for k, dflt in (("tx1", 3000), ("tx50", 240)):
            if getattr(args, k) is None:
                setattr(args, k, int(bfile.get(k, dflt)))
            elif getattr(args, k) != bfile.get(k, dflt):
                print(f"cgbench: note: --{k} {getattr(args, k)} differs from the budget's "
                      f"{bfile.get(k, dflt)}: ratios are not comparable", file=sys.stderr)
    args.tx1 = args.tx1 or 3000
    args.tx50 = args.tx50 or 240

    def on_signal(sig, frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    env = environment(binary)
    if args.check and bfile.get("environment") and bfile["environment"] != env:
        diff = [f"{k}: {bfile['environment'].get(k)} -> {v}" for k, v in env.items()
                if bfile["environment"].get(k) != v]
        print("cgbench: note: the budget was set with another toolchain or library build "
              f"({'; '.join(diff)}); counts may differ for that reason alone", file=sys.stderr)
    t0 = time.time()
    try:
        results = run_all(args, configs, binary)
    except KeyboardInterrupt:
        log("cgbench: interrupted")
        return 130
    except (RuntimeError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        print(f"cgbench: setup failed: {e}", file=sys.stderr)
        return 2
    elapsed = time.time() - t0

    print(f"\n== instructions per transaction (callgrind), {os.path.relpath(binary, os.getcwd())}, "
          f"pgbench -S, 1 client x {args.tx1} tx, 50 clients x {args.tx50} tx")
    head = f"{'configuration':26} {'Ir/tx':>9} {'raw Ir/tx':>10} {'timers':>7}"
    several = args.repeat * args.processes > 1
    if several:
        head += f" {'spread':>7}"
    if args.check:
        head += f" {'budget':>9} {'ratio':>7}"
    print(head)
    failed = over = False
    report = {"kind": "cgbench", "pgmux": binary, "environment": env, "tx1": args.tx1, "tx50": args.tx50,
              "repeat": args.repeat, "processes": args.processes, "seconds": round(elapsed, 1), "configs": {}}
    for c in configs:
        s = summary(results.get(c, []))
        if s is None:
            err = next((r["error"] for r in results.get(c, []) if "error" in r), "not run")
            print(f"{c:26} FAILED: {err}")
            report["configs"][c] = {"error": err}
            failed = True
            continue
        report["configs"][c] = s
        line = f"{c:26} {s['ir_per_tx']:9.1f} {s['raw_ir_per_tx']:10.1f} {s['timer_ir_per_tx']:7.1f}"
        if several:
            line += f" {100 * s['spread']:6.2f}%"
        if args.check:
            b = budget.get(c)
            if b is None:
                line += f" {'n/a':>9} {'':>7}  (no budget)"
            else:
                ratio = s["ir_per_tx"] / b
                s["budget"], s["ratio"] = b, ratio
                line += f" {b:9.1f} {ratio:7.3f}"
                if ratio > 1 + tol:
                    line += f"  OVER BUDGET (> {1 + tol:.2f})"
                    over = True
                elif ratio < 1 - tol:
                    line += "  (well under budget: consider --update-budget)"
        print(line)
    if several:
        spreads = [report["configs"][c]["spread"] for c in configs if "spread" in report["configs"][c]]
        if spreads:
            print(f"spread between the {args.repeat * args.processes} runs of a case "
                  f"({args.processes} pgmux processes x {args.repeat}), (max-min)/median: "
                  f"largest {100 * max(spreads):.2f}%, median {100 * statistics.median(spreads):.2f}%")
    print(f"cgbench: {len(configs)} configurations in {elapsed:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.update_budget and not failed:
        bfile.setdefault("comment", "instructions per transaction of pgmux under callgrind "
                         "(tests/bench/cgbench.py); --check fails above budget * (1 + tolerance)")
        bfile["tolerance"] = tol
        bfile["tx1"], bfile["tx50"] = args.tx1, args.tx50
        bfile["environment"] = env
        if binary.startswith(TOP + os.sep):
            # the source the binary was built from, as far as git can tell
            rev = subprocess.run(["git", "-C", TOP, "describe", "--always", "--dirty"],
                                 capture_output=True, text=True).stdout.strip()
            bfile["pgmux_source"] = rev or "?"
        bfile["set_with"] = (f"cgbench.py --update-budget --processes {args.processes} "
                             f"--repeat {args.repeat}")
        b = bfile.setdefault("budget", {})
        for c in configs:
            b[c] = round(report["configs"][c]["ir_per_tx"])
        bfile["budget"] = {c: b[c] for c in ALL if c in b}
        with open(args.budget, "w") as f:
            json.dump(bfile, f, indent=1)
            f.write("\n")
        print(f"cgbench: wrote {len(configs)} budgets to {args.budget}")
    if failed:
        return 2
    if over:
        print(f"cgbench: over budget: a configuration costs more than {100 * tol:.0f}% over "
              f"{args.budget}; if the cost is wanted, rerun with "
              "--update-budget and explain it in the commit")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
