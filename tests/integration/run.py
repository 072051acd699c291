#!/usr/bin/python3
"""Integration test runner for pgmux: starts one PostgreSQL cluster for the run, then runs every
test_* function of tests/integration/test_*.py in a forked child with its own timeout.

Usage: /usr/bin/python3 tests/integration/run.py [-v] [-x] [--list] [--keep] [-k PATTERN] [NAME...]
  NAME / -k PATTERN select tests whose "module.function" contains the text.
  -v shows every test's output, -x stops at the first failure, --keep keeps the temp dir.
Environment: PGMUX_BIN, PGMUX_SECTION (see pgharness.py), PGMUX_TEST_SKIP (comma-separated
names to skip), PGMUX_TEST_TIMEOUT_SCALE (multiplies every timeout).

The last line of output is "N passed, N failed" (", N skipped" when some were skipped); the exit
code is 1 when anything failed.
"""

import argparse
import importlib
import inspect
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pgharness  # noqa: E402

DEFAULT_TIMEOUT = 60


def discover(selectors):
    tests, broken = [], []
    for path in sorted(HERE.glob("test_*.py")):
        modname = path.stem
        try:
            mod = importlib.import_module(modname)
        except Exception:  # noqa: BLE001
            broken.append((modname, traceback.format_exc()))
            continue
        funcs = [f for n, f in vars(mod).items()
                 if n.startswith("test_") and inspect.isfunction(f) and f.__module__ == modname]
        funcs.sort(key=lambda f: f.__code__.co_firstlineno)
        for f in funcs:
            name = f"{modname}.{f.__name__}"
            if selectors and not any(s in name for s in selectors):
                continue
            tests.append((name, f))
    return tests, broken


def kill_daemons(testdir):
    """Kills pgmux processes that a test daemonized (-d: a new session, so killpg misses them)
    and left running: found through their pidfiles, checked against /proc cmdline."""
    for pidfile in testdir.glob("pgmux*/pgmux.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if str(pidfile.parent) in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def run_child(func, name, cluster, testdir, resfile, outfile):
    """In the forked child: run one test and write its result; never returns."""
    os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    fd = os.open(outfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    status, detail = "PASS", ""
    env = None
    try:
        env = pgharness.TestEnv(cluster, testdir, name.split(".")[-1])
        func(env)
    except pgharness.Skip as e:
        status, detail = "SKIP", str(e)
    except BaseException:  # noqa: BLE001
        status, detail = "FAIL", traceback.format_exc()
        if env is not None:
            detail += "\n" + env.report_logs()
    if env is not None:
        try:
            problems = env.cleanup()
        except BaseException:  # noqa: BLE001
            problems = ["cleanup raised:\n" + traceback.format_exc()]
        if problems:
            if status != "FAIL":
                status = "FAIL"
                detail += env.report_logs()
            detail += "\n" + "\n".join(problems)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(resfile, "w") as f:
        json.dump({"status": status, "detail": detail}, f)
    os._exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("-k", action="append", default=[])
    ap.add_argument("-v", action="store_true")
    ap.add_argument("-x", action="store_true")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    tests, broken = discover(args.names + args.k)
    skips = {s.strip() for s in os.environ.get("PGMUX_TEST_SKIP", "").split(",") if s.strip()}
    scale = float(os.environ.get("PGMUX_TEST_TIMEOUT_SCALE", "1"))
    if args.list:
        for name, f in tests:
            print(f"{name} (timeout {getattr(f, 'timeout', DEFAULT_TIMEOUT)}s)")
        return 0

    passed = failed = skipped = 0
    for modname, tb in broken:
        print(f"FAIL {modname} (import error)\n{tb}", flush=True)
        failed += 1
    if not tests:
        print("no tests selected")
        print(f"{passed} passed, {failed} failed")
        return 1

    binary = pgharness.PGMUX_BIN
    print(f"pgmux integration tests: {len(tests)} tests, binary {binary} "
          f"[{pgharness.PGMUX_SECTION}]", flush=True)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"ERROR: {binary} is not an executable (build it first, or set PGMUX_BIN)")
        print(f"0 passed, {len(tests) + failed} failed")
        return 1

    session = pgharness.new_session_dir()
    cluster = pgharness.Cluster(session / "servers")
    state = {"child": None}

    def shutdown(signum, frame):
        if state["child"]:
            try:
                os.killpg(state["child"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for d in (session / "tests").glob("*"):
            kill_daemons(d)
        cluster.stop()
        if not args.keep:
            pgharness.remove_tree(session)
        print(f"\ninterrupted\n{passed} passed, {failed + 1} failed", flush=True)
        os._exit(130)

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)

    t_run = time.monotonic()
    try:
        t0 = time.monotonic()
        try:
            cluster.start()
        except Exception:  # noqa: BLE001
            print("ERROR: could not start PostgreSQL:\n" + traceback.format_exc())
            if cluster.primary:
                print(pgharness.tail(cluster.primary.log_text(), 40))
            print(f"0 passed, {len(tests) + failed} failed")
            return 1
        print(f"PostgreSQL {cluster.primary.sql1('SHOW server_version')} on 127.0.0.1:"
              f"{cluster.primary.port} started in {time.monotonic() - t0:.1f}s "
              f"({session})", flush=True)

        for i, (name, func) in enumerate(tests):
            short = name.split(".")[-1]
            if name in skips or short in skips:
                print(f"SKIP {name} (PGMUX_TEST_SKIP)", flush=True)
                skipped += 1
                continue
            limit = getattr(func, "timeout", DEFAULT_TIMEOUT) * scale
            testdir = session / "tests" / f"{i:03d}_{short}"
            testdir.mkdir(parents=True, exist_ok=True)
            resfile, outfile = testdir / "result.json", testdir / "output.txt"
            t0 = time.monotonic()
            pid = os.fork()
            if pid == 0:
                try:
                    run_child(func, name, cluster, testdir, resfile, outfile)
                finally:
                    os._exit(3)
            state["child"] = pid
            status, detail = None, ""
            while True:
                wpid, wstatus = os.waitpid(pid, os.WNOHANG)
                if wpid:
                    break
                if time.monotonic() - t0 > limit:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    os.waitpid(pid, 0)
                    status, detail = "FAIL", f"TIMEOUT: killed after {limit:.0f}s"
                    break
                time.sleep(0.05)
            # Whatever the test did, nothing it started may outlive it.
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            kill_daemons(testdir)
            state["child"] = None
            if status is None:
                try:
                    res = json.loads(resfile.read_text())
                    status, detail = res["status"], res["detail"]
                except Exception:  # noqa: BLE001
                    status, detail = "FAIL", f"test process died (wait status {wstatus})"
            elapsed = time.monotonic() - t0
            output = ""
            try:
                output = outfile.read_text(errors="replace")
            except OSError:
                pass
            if status == "FAIL" and "TIMEOUT" in detail:
                # the child could not dump logs itself: show what pgmux wrote
                for log in sorted(testdir.glob("pgmux*/pgmux.log")) + \
                        sorted(testdir.glob("pgmux*/pgmux.out")):
                    detail += f"\n--- {log.relative_to(testdir)} (last 40 lines) ---\n"
                    detail += pgharness.tail(log.read_text(errors="replace"), 40)
            label = f"{status} {name} ({elapsed:.1f}s)"
            if status == "PASS":
                passed += 1
                print(label, flush=True)
            elif status == "SKIP":
                skipped += 1
                print(f"{label}: {detail}", flush=True)
            else:
                failed += 1
                print(label, flush=True)
                if output.strip():
                    print("    --- test output ---")
                    print(_indent(pgharness.tail(output, 80)))
                print(_indent(detail.rstrip()), flush=True)
            if args.v and status != "FAIL" and output.strip():
                print(_indent(output.rstrip()), flush=True)
            fixed = cluster.ensure_running()
            if fixed:
                print(f"    (restarted PostgreSQL {', '.join(fixed)} after {name})", flush=True)
            if args.x and status == "FAIL":
                break
    finally:
        if state["child"] is None:
            cluster.stop()
            if args.keep:
                print(f"kept {session}")
            else:
                pgharness.remove_tree(session)

    print(f"integration tests took {time.monotonic() - t_run:.0f}s", flush=True)
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line, flush=True)
    return 1 if failed else 0


def _indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
