"""pgbench through pgmux: extended protocol in transaction mode, prepared in session mode; every
transaction must succeed and every write must land."""

import re
import subprocess

from pgharness import TEST_USER, pg_bin, raise_nofile, timeout


def pgbench_init(env, db, scale=1):
    r = subprocess.run([pg_bin("pgbench"), "-i", "-q", "-s", str(scale), "-h", str(env.pg.sockdir),
                        "-p", str(env.pg.port), "-U", TEST_USER, db],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert r.returncode == 0, r.stdout


def pgbench(px, db, *args, timeout=120):
    """Runs pgbench through pgmux; returns (returncode, output, processed, failed)."""
    cmd = [pg_bin("pgbench"), "-n", "-h", "127.0.0.1", "-p", str(px.port), "-U", TEST_USER,
           *args, db]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, preexec_fn=raise_nofile)
    out = r.stdout
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    processed = int(m.group(1)) if m else None
    m = re.search(r"number of failed transactions: (\d+)", out)
    failed = int(m.group(1)) if m else None
    print(out)
    return r.returncode, out, processed, failed


def _check(rc, out, processed, failed):
    assert rc == 0, f"pgbench exited {rc}:\n{out[-3000:]}"
    assert processed and processed > 0, out[-3000:]
    assert failed == 0, f"{failed} failed transactions:\n{out[-3000:]}"
    assert "aborted" not in out.lower(), out[-3000:]


@timeout(120)
def test_pgbench_extended_transaction_mode(env):
    db = env.database()
    pgbench_init(env, db)
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 4,
                          "max_client_conn": 100})
    rc, out, processed, failed = pgbench(px, db, "-M", "extended", "-c", "16", "-j", "2",
                                         "-T", "6")
    _check(rc, out, processed, failed)
    # tpcb-like: each transaction inserts exactly one pgbench_history row and moves money
    # between accounts, tellers and branches consistently
    hist = env.sql1(db, "SELECT count(*) FROM pgbench_history")
    assert hist == processed, f"{hist} history rows for {processed} transactions"
    sums = env.sql(db, "SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
                       "(SELECT sum(tbalance) FROM pgbench_tellers), "
                       "(SELECT sum(bbalance) FROM pgbench_branches), "
                       "(SELECT sum(delta) FROM pgbench_history)")[0]
    assert len(set(sums)) == 1, f"balances disagree: {sums}"
    assert env.pg.backends(db, TEST_USER) <= 4


@timeout(120)
def test_pgbench_select_only_simple_transaction_mode(env):
    db = env.database()
    pgbench_init(env, db)
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "max_client_conn": 100})
    rc, out, processed, failed = pgbench(px, db, "-S", "-M", "simple", "-c", "20", "-j", "2",
                                         "-t", "200")
    _check(rc, out, processed, failed)
    assert processed == 20 * 200


@timeout(120)
def test_pgbench_prepared_session_mode(env):
    db = env.database()
    pgbench_init(env, db)
    px = env.pgmux([db], {"pool_mode": "session", "default_pool_size": 8})
    rc, out, processed, failed = pgbench(px, db, "-M", "prepared", "-c", "8", "-j", "2",
                                         "-t", "300")
    _check(rc, out, processed, failed)
    assert processed == 8 * 300
    assert env.sql1(db, "SELECT count(*) FROM pgbench_history") == 8 * 300
