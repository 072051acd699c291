"""Prometheus: /metrics against promtool's rules (`promtool check metrics`) on a real scrape of a
routed pgmux, a real Prometheus scraping pgmux and answering PromQL for the saturation series,
the alerting rules in deploy/prometheus (`promtool check rules`, `promtool test rules`) and the
Grafana dashboard in deploy/grafana (valid JSON; every expr names metrics pgmux exports).
promtool and prometheus come from Debian's `prometheus` package (scripts/deps.sh installs it);
without it these tests skip."""

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg

from pgharness import PGMUX_SECTION, TEST_USER, Skip, free_port, timeout, wait_for
from test_saturation import metric, parse_metrics, scrape

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "pgmux-rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "pgmux-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "pgmux.json"

# Families /metrics once had, renamed for Prometheus's naming rules (README lists old -> new):
# none may come back.
OLD_NAMES = ["pgmux_pools_maxwait", "pgmux_pools_maxwait_us", "pgmux_wait_time_microseconds",
             "pgmux_query_time_microseconds", "pgmux_xact_time_microseconds",
             "pgmux_stats_bytes_received_total", "pgmux_stats_bytes_sent_total",
             "pgmux_stats_xact_time_total", "pgmux_stats_query_time_total",
             "pgmux_stats_wait_time_total"]


def tool(name):
    path = shutil.which(name)
    if not path:
        raise Skip(f"{name} is not installed (apt-get install prometheus; scripts/deps.sh does)")
    return path


def need_pgmux():
    if PGMUX_SECTION == "pgbouncer":
        raise Skip("PgBouncer has no stats_listen endpoint")


def promtool(*args, stdin=None):
    r = subprocess.run([tool("promtool"), *args], input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60, cwd=RULES.parent)
    return r.returncode, r.stdout


def routed_pgmux(env, settings=None, pool_size=4):
    """A pgmux with a plain database and a [database X] section over the shared replicas,
    serving /metrics; returns (px, plain db, routed db, metrics port) once every backend is up."""
    need_pgmux()
    reps = env.replicas(2)
    plain = env.database("_plain")
    routed = env.database("_routed", replicas=reps)
    mport = free_port()
    sets = {"pool_mode": "transaction", "default_pool_size": pool_size, "monitor_interval": 0.2,
            "max_client_conn": 200, "stats_listen": f"127.0.0.1:{mport}"}
    sets.update(settings or {})
    px = env.pgmux([plain], sets, sections={
        routed: env.routing_section(routed, env.pg, reps, pool_size=pool_size,
                                    pool_mode="transaction")})

    def all_up():
        rows = [r for r in px.show("BACKENDS") if r["database"] == routed]
        return len(rows) == 3 and all(r["state"] == "up" and r["lag_bytes"] not in (None, "-1", -1)
                                      for r in rows)
    wait_for(all_up, 20, 0.1, "the routed database's three backends up")
    return px, plain, routed, mport


def families(text):
    types, samples = parse_metrics(text)
    return types, samples


def metric_names_in(expr):
    """The pgmux_* metric names a PromQL expression (or rule) uses."""
    return set(re.findall(r"\bpgmux_[a-zA-Z0-9_]+", expr))


def exported(types):
    """Every series name the families produce: a histogram's _bucket/_sum/_count."""
    names = set()
    for name, typ in types.items():
        names.add(name)
        if typ == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


@timeout(120)
def test_metrics_pass_promtool(env):
    """A real scrape, with traffic on a plain and a routed database, passes promtool's
    checks; the histograms add up; the backends' health and lag are there; old names are gone;
    the dashboard and the rules name only metrics this scrape has."""
    px, plain, routed, mport = routed_pgmux(env)
    with px.connect(plain) as c:
        for _ in range(20):
            c.execute("SELECT 1")
        c.execute("SELECT pg_sleep(0.02)")
    with px.connect(routed) as c:
        for _ in range(10):
            c.execute("SELECT 1")
        c.execute("CREATE TEMP TABLE x (i int)")      # a write: the primary's pool
    status, _, text = scrape(mport)
    assert status == 200
    rc, out = promtool("check", "metrics", stdin=text)
    assert rc == 0 and not out.strip(), f"promtool check metrics:\n{out}"

    types, samples = families(text)
    assert not set(OLD_NAMES) & set(types), set(OLD_NAMES) & set(types)
    for fam in ("pgmux_wait_time_seconds", "pgmux_query_time_seconds", "pgmux_xact_time_seconds"):
        assert types[fam] == "histogram", fam
    lab = {"database": plain, "user": TEST_USER}
    with psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True) as cc:
        cur = cc.execute("SHOW STATS")
        names = [d.name for d in cur.description]
        stats = [dict(zip(names, r)) for r in cur.fetchall() if r[0] == plain][0]
    # the histograms: cumulative buckets that end at _count, sums in seconds
    for fam in ("pgmux_wait_time_seconds", "pgmux_query_time_seconds", "pgmux_xact_time_seconds"):
        buckets = [(float(l["le"]), v) for n, l, v in samples
                   if n == fam + "_bucket" and l["database"] == plain]
        assert buckets == sorted(buckets) and buckets[-1][0] == float("inf"), buckets
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{fam} buckets not cumulative: {counts}"
        assert counts[-1] == metric(samples, fam + "_count", **lab) > 0, fam
    assert metric(samples, "pgmux_query_time_seconds_count", **lab) >= 21
    assert metric(samples, "pgmux_xact_time_seconds_count", **lab) == stats["total_xact_count"]
    assert abs(metric(samples, "pgmux_query_time_seconds_sum", **lab)
               - stats["total_query_time"] / 1e6) < 1e-6
    assert metric(samples, "pgmux_stats_query_time_seconds_total", database=plain) == \
        stats["total_query_time"] / 1e6
    assert metric(samples, "pgmux_stats_received_bytes_total", database=plain) == stats["total_received"]
    # the pg_sleep(0.02) query lies above the 16.384 ms edge, the 20 SELECT 1s mostly below 33 ms
    slow = [v for n, l, v in samples if n == "pgmux_query_time_seconds_bucket"
            and l["database"] == plain and l["le"] == "0.016384"][0]
    assert slow < metric(samples, "pgmux_query_time_seconds_count", **lab)
    assert metric(samples, "pgmux_pools_maxwait_seconds", **lab) == 0

    # the routed database's backends: up, one primary, lag known
    be = {l["backend"]: l for n, l, v in samples if n == "pgmux_backend_up"}
    assert set(be) == {f"{routed}/primary", f"{routed}/replica0", f"{routed}/replica1"}, be
    for name in be:
        assert be[name]["cluster"] == routed and be[name]["shard"] == "0"
        assert metric(samples, "pgmux_backend_up", backend=name) == 1
        assert metric(samples, "pgmux_backend_primary", backend=name) == (name.endswith("/primary"))
        assert 0 <= metric(samples, "pgmux_backend_lag_bytes", backend=name) < 16 << 20
        assert metric(samples, "pgmux_backend_lag_seconds", backend=name) >= 0
    assert metric(samples, "pgmux_backend_writes_total", backend=f"{routed}/primary") >= 1
    assert sum(metric(samples, "pgmux_backend_reads_total", backend=f"{routed}/replica{i}")
               for i in (0, 1)) >= 10

    # the dashboard and the rules ask only for what is exported
    names = exported(types)
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    assert len(exprs) >= 10, exprs
    for e in exprs:
        used = metric_names_in(e)
        assert used, f"dashboard expr names no pgmux metric: {e}"
        assert used <= names, f"dashboard expr {e!r} names {used - names}, not exported"
    rules = RULES.read_text()
    used = metric_names_in(rules)
    assert used and used <= names, f"pgmux-rules.yml names {used - names}, not exported"

    # scrapes within a second share one render: a burst of them costs one
    t0 = time.monotonic()
    first = scrape(mport)[2]
    with px.connect(plain) as c:
        c.execute("SELECT 1")
    second = scrape(mport)[2]
    if time.monotonic() - t0 < 0.9:
        assert second == first, "a scrape within a second of the last rendered again"
    time.sleep(1.1)
    third = scrape(mport)[2]
    _, samples3 = parse_metrics(third)
    assert metric(samples3, "pgmux_stats_query_count_total", database=plain) > \
        metric(samples, "pgmux_stats_query_count_total", database=plain)


@timeout(60)
def test_alert_rules(env):
    """pgmux-rules.yml is valid, and each alert fires on the synthetic series of its test."""
    rc, out = promtool("check", "rules", str(RULES))
    assert rc == 0 and "SUCCESS" in out, out
    rc, out = promtool("test", "rules", str(RULES_TEST))
    assert rc == 0 and "SUCCESS" in out, out
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.M))
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert alerts == {"PgmuxPoolSaturated", "PgmuxPoolExhausted", "PgmuxClientsWaiting",
                      "PgmuxBackendDown", "PgmuxReplicaLag"}, alerts
    assert alerts <= tested, f"alerts without a test: {alerts - tested}"


def api(port, path, **params):
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read().decode())
    assert body["status"] == "success", body
    return body["data"]


@timeout(120)
def test_prometheus_scrapes_pgmux(env):
    """A real Prometheus (1 s scrape interval, the rules loaded) scrapes a pgmux whose pool is
    full, and PromQL through /api/v1/query returns the saturation series at 1."""
    prometheus = tool("prometheus")
    px, plain, routed, mport = routed_pgmux(env, pool_size=2)
    pdir = env.dir / "prometheus"
    (pdir / "data").mkdir(parents=True)
    shutil.copy(RULES, pdir / "pgmux-rules.yml")
    (pdir / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files: [pgmux-rules.yml]\n"
        "scrape_configs:\n  - job_name: pgmux\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{mport}']\n")
    pport = free_port()
    log = open(pdir / "prometheus.log", "w")
    proc = subprocess.Popen([prometheus, f"--config.file={pdir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={pdir / 'data'}",
                             f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=log, stderr=subprocess.STDOUT)

    def stop():
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()
    env.on_cleanup(stop)

    # hold both servers of the plain pool with two sleeping clients, a third one waiting
    stop_load = threading.Event()
    errors = []

    def sleeper():
        try:
            with px.connect(plain) as c:
                while not stop_load.is_set():
                    c.execute("SELECT pg_sleep(0.5)")
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    load = [threading.Thread(target=sleeper, daemon=True) for _ in range(3)]
    for t in load:
        t.start()
    try:
        def ready():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{pport}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                assert proc.poll() is None, (pdir / "prometheus.log").read_text()[-3000:]
                return False
        wait_for(ready, 30, 0.2, "Prometheus ready")

        def saturated():
            data = api(pport, "/api/v1/query",
                       query=f'pgmux_pools_saturation{{job="pgmux",database="{plain}"}}')
            return data["result"] if data["result"] and data["result"][0]["value"][1] == "1" else None
        res = wait_for(saturated, 30, 0.5, "Prometheus to hold the saturation series at 1")
        assert res[0]["metric"]["user"] == TEST_USER and res[0]["metric"]["instance"] == f"127.0.0.1:{mport}"

        # the scrape is healthy, histograms answer histogram_quantile, the backends are up
        targets = api(pport, "/api/v1/targets")["activeTargets"]
        assert [t["health"] for t in targets] == ["up"], targets
        def quantile():
            r = api(pport, "/api/v1/query", query='histogram_quantile(0.9, sum by (le) '
                    f'(rate(pgmux_query_time_seconds_bucket{{database="{plain}"}}[5s])))')["result"]
            return r and r[0]["value"][1] not in ("NaN", "0") and float(r[0]["value"][1])
        q = wait_for(quantile, 20, 0.5, "histogram_quantile over the query time")
        assert 0.25 < q < 2.2, q        # pg_sleep(0.5): the 0.524288 s bucket
        up = api(pport, "/api/v1/query", query="sum(pgmux_backend_up)")["result"]
        assert up and up[0]["value"][1] == "3", up
        # the rules loaded and evaluate without error
        def evaluated():
            groups = api(pport, "/api/v1/rules")["groups"]
            assert [g["name"] for g in groups] == ["pgmux"], groups
            health = [r["health"] for r in groups[0]["rules"]]
            assert "err" not in health, groups[0]["rules"]
            return len(health) == 5 and all(h == "ok" for h in health)
        wait_for(evaluated, 10, 0.5, "the rules to evaluate")
    finally:
        stop_load.set()
        for t in load:
            t.join(5)
    assert not errors, errors
    assert px.alive()


@timeout(90)
def test_sharded_backend_metrics(env):
    """A sharded [database X] section: every backend has its shard label, each shard its one
    primary, a replica's lag is there, and a replica nobody answers for reads pgmux_backend_up 0
    (what PgmuxBackendDown alerts on) while promtool still accepts the exposition."""
    need_pgmux()
    reps = env.replicas(1)
    db0 = env.database("_s0", replicas=reps)
    db1 = env.database("_s1")
    front = f"{db0}_front"
    dead = free_port()          # nothing listens there: the monitor finds it down
    mport = free_port()
    px = env.pgmux({}, {"monitor_interval": 0.2, "stats_listen": f"127.0.0.1:{mport}"}, sections={
        front: {"shard_key": "user_id", "shards": 2,
                "shard.0.primary": env.backend_entry(env.pg, db0),
                "shard.0.replica": [env.backend_entry(reps[0], db0)],
                "shard.1.primary": env.backend_entry(env.pg, db1),
                "shard.1.replica": [f"host=127.0.0.1 port={dead} dbname={db1} user=postgres"]}})

    def settled():
        # the console and the scrape, agreeing (a scrape may reuse a body up to 1 s old)
        names = {r["backend"]: r for r in px.show("BACKENDS") if r["database"] == front}
        _, samples = parse_metrics(scrape(mport)[2])
        up = {l["backend"]: (l["shard"], v) for n, l, v in samples if n == "pgmux_backend_up"}
        lag = {l["backend"] for n, l, v in samples if n == "pgmux_backend_lag_bytes"}
        if len(up) != 4 or sum(v for _, v in up.values()) != 3 or f"{front}/0/replica0" not in lag:
            return None
        if set(names) != set(up) or any((v == 1) != (names[n]["state"] == "up")
                                        for n, (_, v) in up.items()):
            return None
        return up, samples
    up, samples = wait_for(settled, 20, 0.2, "three backends up and the dead replica down")
    by_shard = {}
    for name, (shard, v) in up.items():
        by_shard.setdefault(shard, []).append(name)
    assert sorted(by_shard) == ["0", "1"] and all(len(v) == 2 for v in by_shard.values()), by_shard
    for shard in ("0", "1"):
        primaries = [n for n in by_shard[shard] if metric(samples, "pgmux_backend_primary", backend=n) == 1]
        assert len(primaries) == 1, (shard, primaries)
    down = [n for n, (s, v) in up.items() if v == 0]
    assert down == [f"{front}/1/replica0"], up
    assert not [l for n, l, v in samples if n == "pgmux_backend_lag_seconds" and l["backend"] == down[0]], \
        "a backend never reached has no lag figure"
    rc, out = promtool("check", "metrics", stdin=scrape(mport)[2])
    assert rc == 0 and not out.strip(), out
