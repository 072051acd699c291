"""auth_type = hba (auth_hba_file, auth_ident_file) and auth_type = cert, to PgBouncer's
documentation: the first matching rule's method decides (trust, reject, md5, password,
scram-sha-256, peer, cert); peer and cert may go through a map; PgBouncer's words on refusal."""

import getpass

import psycopg

from pgharness import TEST_USER, conninfo, timeout
from test_client_tls import Pki


def login_error(dsn):
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as c:
            c.execute("SELECT 1")
    except psycopg.OperationalError as e:
        return e
    return None


def tcp(px, db, user, password=None, **extra):
    return px.dsn(db, user, password, **extra)


def unix(px, db, user):
    return conninfo(host=str(px.dir), port=px.port, dbname=db, user=user)


def hba_pgmux(env, rules, users, ident=None, settings=None, dbs=None):
    """A pgmux with auth_type = hba reading `rules` (and `ident`), written in its directory."""
    db = env.database()
    dbs = dbs or [db]
    px = env.pgmux(dbs, settings, users=users, start=False)
    hba = px.dir / "hba.conf"
    hba.write_text(rules.format(db=db))
    px.write_config(auth_type="hba", auth_hba_file=str(hba))
    if ident is not None:
        idf = px.dir / "ident.conf"
        idf.write_text(ident)
        px.write_config(auth_ident_file=str(idf))
    px.start()
    return px, db, hba


@timeout(90)
def test_hba_methods(env):
    ut, ur, us, um = (env.role(n) for n in ("hba_trust", "hba_reject", "hba_scram", "hba_md5"))
    rules = ("# TYPE DATABASE USER ADDRESS METHOD\n"
             f"host {{db}} {ut} 127.0.0.1/32 trust\n"
             f"host {{db}} {ur} 127.0.0.1 255.255.255.255 reject\n"
             f"host \"{{db}}\" {um} all md5\n"
             f"host all {us},{um} 127.0.0.0/8 scram-sha-256\n")
    px, db, _ = hba_pgmux(env, rules, {ut: "", ur: "Rej-pw1", us: "Scram-pw1", um: "Md5-pw1"})
    with psycopg.connect(tcp(px, db, ut), autocommit=True) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == ut
    err = login_error(tcp(px, db, ur, "Rej-pw1"))
    assert err is not None and "login rejected" in str(err), err
    with psycopg.connect(tcp(px, db, us, "Scram-pw1"), autocommit=True) as c:
        c.execute("SELECT 1")
    err = login_error(tcp(px, db, us, "Scram-pw2"))
    assert err is not None and "SASL authentication failed" in str(err), err
    with psycopg.connect(tcp(px, db, um, "Md5-pw1"), autocommit=True) as c:
        c.execute("SELECT 1")
    err = login_error(tcp(px, db, um, "Md5-pw2"))
    assert err is not None and "password authentication failed" in str(err), err
    # no rule for this user, nor for the Unix socket
    err = login_error(tcp(px, db, TEST_USER))
    assert err is not None and "no authentication method is found" in str(err), err
    err = login_error(unix(px, db, ut))
    assert err is not None and "no authentication method is found" in str(err), err
    log = px.log_text()
    assert "closing because: login rejected (age=" in log
    assert "Rej-pw1" not in log and "Scram-pw1" not in log


@timeout(90)
def test_hba_peer_with_map(env):
    me = getpass.getuser()
    p1, p2 = env.role("hba_peer1"), env.role("hba_peer2")
    rules = "local all all peer map=mymap\n"
    ident = f"mymap {me} {p1}\nmymap \"{me}\" \"{p2}\"\n"
    px, db, _ = hba_pgmux(env, rules, {p1: "", p2: "", TEST_USER: ""}, ident=ident)
    for u in (p1, p2):
        with psycopg.connect(unix(px, db, u), autocommit=True) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == u
    err = login_error(unix(px, db, TEST_USER))
    assert err is not None and "unix socket login rejected" in str(err), err
    assert "ident map mymap cannot be matched" in px.log_text()
    # the map's all admits any known user; an unknown one is still refused
    (px.dir / "ident.conf").write_text(f"mymap {me} all\n")
    px.reload()
    with psycopg.connect(unix(px, db, TEST_USER), autocommit=True) as c:
        c.execute("SELECT 1")
    err = login_error(unix(px, db, "hba_nosuchuser"))
    assert err is not None and "unix socket login rejected" in str(err), err
    # over TCP there is no peer
    err = login_error(tcp(px, db, TEST_USER))
    assert err is not None and "no authentication method is found" in str(err), err


@timeout(120)
def test_hba_cert_and_auth_type_cert(env):
    pki = Pki(env.dir)
    other = env.role("hba_other")
    tls = {"client_tls_sslmode": "require", "client_tls_key_file": pki.server_key,
           "client_tls_cert_file": pki.server_crt, "client_tls_ca_file": pki.ca_crt}
    db2 = env.database("_mapped")
    rules = ("hostssl {db} all 127.0.0.1/32 cert\n"
             f"hostssl {db2} all 127.0.0.1/32 cert map=m\n")
    ident = f"m {TEST_USER} {other}\n"
    px, db, _ = hba_pgmux(env, rules, {TEST_USER: "", other: ""}, ident=ident,
                          settings=tls, dbs=None)
    px.databases[db2] = env.db_entry(db2)
    px.write_config()
    px.reload()
    cert = {"sslmode": "require", "sslcert": pki.client_crt, "sslkey": pki.client_key}
    # the certificate's CN is the user
    with psycopg.connect(tcp(px, db, TEST_USER, **cert), autocommit=True) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == TEST_USER
    err = login_error(tcp(px, db, other, **cert))
    assert err is not None and "certificate authentication failed" in str(err), err
    assert "TLS certificate name mismatch" in px.log_text()
    # no certificate
    err = login_error(tcp(px, db, TEST_USER, sslmode="require"))
    assert err is not None and "certificate authentication failed" in str(err), err
    assert "TLS client certificate required" in px.log_text()
    # one from another CA never gets past the handshake
    err = login_error(tcp(px, db, TEST_USER, sslmode="require", sslcert=pki.rogue_crt,
                          sslkey=pki.rogue_key))
    assert err is not None
    # through the map: CN app may be hba_other, not app
    with psycopg.connect(tcp(px, db2, other, **cert), autocommit=True) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == other
    err = login_error(tcp(px, db2, TEST_USER, **cert))
    assert err is not None and "certificate authentication failed" in str(err), err
    assert "ident map: m does not have a match" in px.log_text()

    # auth_type = cert: every login by certificate
    px.write_config(auth_type="cert")
    px.reload()
    with psycopg.connect(tcp(px, db, TEST_USER, **cert), autocommit=True) as c:
        c.execute("SELECT 1")
    err = login_error(tcp(px, db, other, **cert))
    assert err is not None and "certificate authentication failed" in str(err), err


@timeout(90)
def test_hba_file_errors(env):
    """A bad rule is refused with its file and line: at start-up pgmux does not start, on a
    reload the old rules stay."""
    px, db, hba = hba_pgmux(env, "host {db} all 127.0.0.1/32 trust\n", {TEST_USER: ""})
    with psycopg.connect(tcp(px, db, TEST_USER), autocommit=True) as c:
        c.execute("SELECT 1")
    hba.write_text("host all all 127.0.0.1/32 md5 clientcert=verify-full\n")
    mark = px.log_mark()
    px.reload()
    px.wait_log(r"reload failed.*hba\.conf: line 1: unsupported option", mark)
    with psycopg.connect(tcp(px, db, TEST_USER), autocommit=True) as c:
        c.execute("SELECT 1")
    px.stop()
    hba.write_text("host all all example.org md5\n")
    px2 = env.pgmux([db], users={TEST_USER: ""}, start=False)
    px2.write_config(auth_type="hba", auth_hba_file=str(hba))
    try:
        px2.start()
        raise AssertionError("pgmux started with a bad auth_hba_file")
    except Exception as e:  # noqa: BLE001
        assert "invalid address" in (str(e) + px2.output_text() + px2.log_text()), e
