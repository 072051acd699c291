"""Pool saturation: SHOW SATURATION and the saturation warning under pgbench load, and the
Prometheus endpoint (stats_listen): its figures against SHOW POOLS / SHOW STATS, bad requests,
and that it is off by default."""

import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg

from pgharness import TEST_USER, free_port, pg_bin, raise_nofile, timeout, wait_for

SATURATION = ["database", "user", "pool_size", "sv_active", "saturation", "peak_1m",
              "peak_saturation_1m", "peak_period", "cl_waiting", "maxwait_us",
              "wait_p50_us", "wait_p95_us", "wait_p99_us",
              "query_p50_us", "query_p95_us", "query_p99_us",
              "xact_p50_us", "xact_p95_us", "xact_p99_us", "headroom", "saturated_for"]


def console(px):
    return psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True, connect_timeout=10)


def rows(c, what):
    cur = c.execute(f"SHOW {what}")
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def pgbench_init(env, db):
    r = subprocess.run([pg_bin("pgbench"), "-i", "-q", "-s", "1", "-h", str(env.pg.sockdir),
                        "-p", str(env.pg.port), "-U", TEST_USER, db],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert r.returncode == 0, r.stdout


def scrape(port, path="/metrics", method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers, r.read().decode()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse_metrics(text):
    """Parses the text exposition format line by line, checking it as it goes: every sample
    belongs to a family announced by # HELP and # TYPE, and families are not interleaved.
    Returns ({name: type}, [(name, {label: value}, float)])."""
    types, samples, seen_done, current = {}, [], set(), None
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line, "blank line in the exposition"
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in seen_done and name not in types, f"family {name} twice"
            if current:
                seen_done.add(current)
            current = name
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name == current, line
            assert typ in ("gauge", "counter", "summary", "histogram", "untyped"), line
            types[name] = typ
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, f"bad sample line: {line!r}"
        name, labels_text, value = m.groups()
        family = current
        assert name == family or (types[family] in ("summary", "histogram")
                                  and name in (family + "_sum", family + "_count")) \
            or (types[family] == "histogram" and name == family + "_bucket"), \
            f"{name} outside its family {family}"
        labels = {}
        if labels_text:
            pos = 0
            while pos < len(labels_text):
                lm = LABEL.match(labels_text, pos)
                assert lm, f"bad labels: {labels_text!r}"
                labels[lm.group(1)] = re.sub(r'\\(.)', lambda x: {"n": "\n"}.get(x.group(1), x.group(1)),
                                             lm.group(2))
                pos = lm.end()
        samples.append((name, labels, float(value)))
    return types, samples


def metric(samples, name, **labels):
    got = [v for n, l, v in samples if n == name and all(l.get(k) == v2 for k, v2 in labels.items())]
    assert len(got) == 1, f"{name} {labels}: {got}"
    return got[0]


def listening_ports(pid):
    """TCP ports a process listens on, from /proc (no ss/netstat needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink() if hasattr(fd, "readlink") else Path(str(fd)).resolve()
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", str(target))
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for l in lines:
            f = l.split()
            if f[3] == "0A" and f[9] in inodes:   # LISTEN
                ports.add(int(f[1].split(":")[1], 16))
    return ports


@timeout(120)
def test_saturation_under_load(env):
    db = env.database()
    idle_db = env.database("_idle")
    pgbench_init(env, db)
    mport = free_port()
    px = env.pgmux([db, idle_db], {"pool_mode": "transaction", "default_pool_size": 5,
                                   "max_client_conn": 200, "saturation_warn_after": 1,
                                   "stats_listen": f"127.0.0.1:{mport}"})
    with px.connect(idle_db) as c:      # a second, idle pool: it must sort after the busy one
        c.execute("SELECT 1")
    mark = px.log_mark()
    bench = subprocess.Popen([pg_bin("pgbench"), "-n", "-S", "-h", "127.0.0.1", "-p", str(px.port),
                              "-U", TEST_USER, "-c", "50", "-j", "2", "-T", "8", db],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=raise_nofile)
    pools, sats, loaded_metrics = [], [], None
    try:
        with console(px) as c:
            deadline = time.monotonic() + 7
            while time.monotonic() < deadline:
                pools += [p for p in rows(c, "POOLS") if p["database"] == db]
                sat = rows(c, "SATURATION")
                assert list(sat[0].keys()) == SATURATION
                mine = [s for s in sat if s["database"] == db]
                if not mine:            # pgbench has not connected yet
                    time.sleep(0.1)
                    continue
                mine = mine[0]
                sats.append(mine)
                if mine["saturation"] == 1.0 and mine["cl_waiting"] > 0:
                    assert sat[0]["database"] == db, "the saturated pool is not listed first"
                    if loaded_metrics is None and mine["wait_p95_us"] > 0:
                        # the scrape comes a moment after the console row: keep
                        # the first one that also caught the pool full (a
                        # server can be between transactions at that instant)
                        text = scrape(mport)[2]
                        _, samples = parse_metrics(text)
                        if metric(samples, "pgmux_pools_saturation", database=db) == 1.0:
                            loaded_metrics = text
                time.sleep(0.1)
    finally:
        out, _ = bench.communicate(timeout=60)
    assert bench.returncode == 0, out[-2000:]

    assert max(p["cl_waiting"] for p in pools) > 0, "SHOW POOLS never saw a waiting client"
    full = [s for s in sats if s["saturation"] == 1.0]
    assert full, f"SHOW SATURATION never reported 1.0: {[s['saturation'] for s in sats]}"
    assert any(s["wait_p95_us"] > 0 and s["wait_p99_us"] >= s["wait_p95_us"] >= s["wait_p50_us"]
               for s in full), full[-1]
    last = full[-1]
    assert last["pool_size"] == 5 and last["sv_active"] == 5, last
    assert last["peak_1m"] == 5 and last["peak_period"] == 5 and last["headroom"] == 0, last
    assert last["peak_saturation_1m"] == 1.0, last
    assert last["query_p50_us"] > 0 and last["xact_p99_us"] > 0, last
    assert max(s["saturated_for"] for s in sats) >= 1

    # the warning, once, and then the recovery line
    px.wait_log(rf"WARNING.*pool {db}/{TEST_USER} saturated: 5 of 5 servers active for \d+s "
                r"\(saturation_warn=0\.8\)", mark, timeout=5)
    px.wait_log(rf"pool {db}/{TEST_USER} no longer saturated", mark, timeout=10)
    logfile_only = px.log_since((mark[0], 1 << 62))   # the same lines also go to stderr
    assert len(re.findall(rf"pool {db}/{TEST_USER} saturated:", logfile_only)) == 1

    # the load is gone: saturation falls to 0; the last minute still remembers the peak
    def idle():
        with console(px) as c:
            s = [r for r in rows(c, "SATURATION") if r["database"] == db][0]
        return s if s["saturation"] == 0 and s["sv_active"] == 0 else None
    s = wait_for(idle, 10, 0.2, "saturation to fall to 0")
    assert s["peak_1m"] == 5 and s["headroom"] == 0 and s["saturated_for"] == 0, s
    assert s["cl_waiting"] == 0 and s["maxwait_us"] == 0, s

    # /metrics during the load agreed: the summary's quantiles were non-zero
    assert loaded_metrics, "never scraped /metrics while the pool was saturated"
    _, samples = parse_metrics(loaded_metrics)
    assert metric(samples, "pgmux_saturation_wait_p95_seconds", database=db) > 0
    assert metric(samples, "pgmux_pools_saturation", database=db) == 1.0


@timeout(60)
def test_metrics_endpoint(env):
    db = env.database()
    mport = free_port()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 4,
                          "stats_listen": f"127.0.0.1:{mport}"})
    assert listening_ports(px.proc.pid) == {px.port, mport}
    c = px.connect(db)
    for _ in range(5):
        c.execute("SELECT 1")
    with px.connect(db) as c2:
        c2.execute("SELECT pg_sleep(0.01)")
    # at rest (both clients idle between transactions): compare with the console
    status, headers, text = scrape(mport)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    with console(px) as cc:
        pool = [p for p in rows(cc, "POOLS") if p["database"] == db][0]
        stats = [s for s in rows(cc, "STATS") if s["database"] == db][0]
        sat = [s for s in rows(cc, "SATURATION") if s["database"] == db][0]
    types, samples = parse_metrics(text)
    lab = {"database": db, "user": TEST_USER}
    for col in ("cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
                "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used",
                "sv_tested", "sv_login", "pool_size"):
        assert types[f"pgmux_pools_{col}"] == "gauge"
        assert metric(samples, f"pgmux_pools_{col}", **lab) == pool[col], col
    assert metric(samples, "pgmux_pools_maxwait_seconds", **lab) == pool["maxwait"] + pool["maxwait_us"] / 1e6
    assert metric(samples, "pgmux_pools_saturation", **lab) == pool["saturation"]
    assert pool["cl_active"] == 1 and pool["pool_size"] == 4 and pool["sv_idle"] >= 1, pool
    for col in ("peak_1m", "peak_period", "headroom"):
        assert metric(samples, f"pgmux_saturation_{col}", **lab) == sat[col], col
    for key in ("wait", "query", "xact"):
        for p in ("50", "95", "99"):        # the console's percentiles, in seconds
            fam = f"pgmux_saturation_{key}_p{p}_seconds"
            assert types[fam] == "gauge"
            assert metric(samples, fam, **lab) == sat[f"{key}_p{p}_us"] / 1e6
        assert types[f"pgmux_{key}_time_seconds"] == "histogram"
    assert metric(samples, "pgmux_query_time_seconds_count", **lab) >= 6
    assert metric(samples, "pgmux_query_time_seconds_sum", **lab) == stats["total_query_time"] / 1e6
    assert metric(samples, "pgmux_xact_time_seconds_count", **lab) == stats["total_xact_count"]
    for col, total, scale in (("xact_count", "total_xact_count", 1),
                              ("query_count", "total_query_count", 1),
                              ("received_bytes", "total_received", 1),
                              ("sent_bytes", "total_sent", 1),
                              ("xact_time_seconds", "total_xact_time", 1e6),
                              ("query_time_seconds", "total_query_time", 1e6),
                              ("wait_time_seconds", "total_wait_time", 1e6),
                              ("bind_count", "total_bind_count", 1)):
        assert types[f"pgmux_stats_{col}_total"] == "counter"
        assert metric(samples, f"pgmux_stats_{col}_total", database=db) == stats[total] / scale, col
    assert [l for n, l, v in samples if n == "pgmux_stats_xact_count_total"] == [{"database": db}]
    c.close()

    # HEAD, other paths, other methods
    assert scrape(mport, method="HEAD")[0] == 200
    for path, method, code in (("/x", "GET", 404), ("/metricsx", "GET", 404),
                               ("/metrics", "POST", 405), ("/metrics", "DELETE", 405)):
        try:
            scrape(mport, path, method)
            raise AssertionError(f"{method} {path} succeeded")
        except urllib.error.HTTPError as e:
            assert e.code == code, (method, path, e.code)
    assert scrape(mport, "/metrics?x=1")[0] == 200

    # garbage, a request that never ends, and an oversized header: pgmux goes on
    bad = socket.create_connection(("127.0.0.1", mport), timeout=10)
    bad.sendall(b"\x00\xff\xfe garbage \r\n\x16\x03\x01\r\n\r\n")
    try:
        reply = bad.recv(4096)
        assert reply == b"" or reply.startswith(b"HTTP/1."), reply
    except ConnectionResetError:
        pass
    bad.close()
    slow = socket.create_connection(("127.0.0.1", mport), timeout=10)
    slow.sendall(b"GET /metr")
    big = socket.create_connection(("127.0.0.1", mport), timeout=10)
    big.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    try:
        reply = big.recv(4096)
        assert reply == b"" or not reply.startswith(b"HTTP/1.1 200"), reply[:100]
    except ConnectionResetError:
        pass
    big.close()
    with px.connect(db) as c:
        assert c.execute("SELECT 41 + 1").fetchone()[0] == 42
    assert scrape(mport)[0] == 200          # while the slow one still hangs
    slow.close()
    assert px.alive()

    # not changeable at run time
    with console(px) as cc:
        try:
            cc.execute(f"SET stats_listen = '127.0.0.1:{free_port()}'")
            raise AssertionError("SET stats_listen succeeded")
        except psycopg.Error as e:
            assert "cannot be changed at run time" in str(e)
        cfg = {r["key"]: r for r in rows(cc, "CONFIG")}
    assert cfg["stats_listen"]["value"] == f"127.0.0.1:{mport}" and cfg["stats_listen"]["changeable"] == "no"


@timeout(60)
def test_metrics_off_by_default(env):
    db = env.database()
    px = env.pgmux([db])
    with console(px) as c:
        cfg = {r["key"]: r for r in rows(c, "CONFIG")}
    assert cfg["stats_listen"]["value"] == "" and cfg["stats_listen"]["default"] == ""
    assert cfg["saturation_warn"]["value"] == "0.8" and cfg["saturation_warn_after"]["value"] == "60"
    assert listening_ports(px.proc.pid) == {px.port}


@timeout(60)
def test_metrics_bad_address(env):
    """A stats_listen that cannot be bound stops startup with a clear message."""
    db = env.database()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        # main.c's startup-failure path does not free its pidfile copy: a leak report there
        # is not this test's business
        px = env.pgmux([db], {"stats_listen": f"127.0.0.1:{port}"}, start=False,
                       env={"ASAN_OPTIONS": "detect_leaks=0"})
        px.start(wait=False)
        rc = px.wait_exit(15)
        assert rc is not None and rc != 0, rc
        assert re.search(rf"stats_listen = 127\.0\.0\.1:{port}: cannot listen there: .*in use",
                         px.log_text()), px.log_text()
    finally:
        taken.close()
