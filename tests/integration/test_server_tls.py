"""TLS between pgmux and its servers from PgBouncer's server_tls_* keys (mode, CA, pgmux's own
client certificate for PostgreSQL's cert authentication), servers closed when a RELOAD or SET
changes those settings and kept when it does not, and auth_type = cert for clients."""

import re
import shutil

import psycopg
import pytest

from pgharness import TEST_USER, chown_service, timeout
from test_client_tls import Pki, tls_settings

# PostgreSQL asks TLS of every TCP login, and pgmux's login (as TEST_USER) must prove itself
# with a certificate whose CN is that user.
TLS_HBA = """\
local      all  all               trust
hostssl    all  all  127.0.0.1/32 cert
hostnossl  all  all  127.0.0.1/32 reject
"""


def tls_server(env, pki):
    """A private PostgreSQL with ssl = on, pgmux-server's certificate (IP 127.0.0.1 and
    localhost in it) and pki's CA for client certificates; TCP logins need TLS + cert."""
    keydir = env.dir / "pgkeys"
    keydir.mkdir(exist_ok=True)
    chown_service(keydir)
    files = {}
    for name, src in (("server.crt", pki.server_crt), ("server.key", pki.server_key),
                      ("ca.crt", pki.ca_crt)):
        dst = keydir / name
        shutil.copy(src, dst)
        dst.chmod(0o600)
        chown_service(dst)   # PostgreSQL refuses a key that is not its own
        files[name] = str(dst)
    topo = env.topology(n_replicas=0, extra_conf={
        "ssl": "on", "ssl_cert_file": f"'{files['server.crt']}'",
        "ssl_key_file": f"'{files['server.key']}'", "ssl_ca_file": f"'{files['ca.crt']}'"})
    pg = topo.primary
    (pg.datadir / "pg_hba.conf").write_text(TLS_HBA)
    chown_service(pg.datadir / "pg_hba.conf")
    pg.sql("SELECT pg_reload_conf()")
    return topo


def server_tls_keys(pki, mode="verify-full", ca=None, **more):
    s = {"server_tls_sslmode": mode, "server_tls_ca_file": ca or pki.ca_crt,
         "server_tls_cert_file": pki.client_crt, "server_tls_key_file": pki.client_key}
    s.update(more)
    return s


def backend(conn):
    """(pid, ssl, client certificate DN) of the server session behind conn."""
    return conn.execute("SELECT pid, ssl, client_dn FROM pg_stat_ssl "
                        "WHERE pid = pg_backend_pid()").fetchone()


@timeout(120)
def test_server_tls_keys_and_reload(env):
    pki = Pki(env.dir)
    topo = tls_server(env, pki)
    db = topo.database("srvtls")
    # A server whose TLS fails counts as unreachable: as in PgBouncer, waiting clients wait for
    # the next try (server_login_retry) until query_wait_timeout, kept short here.
    px = env.pgmux({db: env.db_entry(db, server=topo.primary)},
                   {"pool_mode": "transaction", "query_wait_timeout": 3, **server_tls_keys(pki)})

    with px.connect(db) as c:
        pid, ssl, dn = backend(c)
        assert ssl is True
        assert dn == f"/CN={TEST_USER}", dn   # pgmux's server_tls_cert_file reached PostgreSQL

        # a RELOAD that changes nothing keeps the server
        mark = px.log_mark()
        px.reload()
        assert backend(c)[0] == pid
        assert "database configuration changed" not in px.log_since(mark)

        # server_tls_protocols changes: the server made under the old setting is closed
        px.write_config(query_wait_timeout=3, **server_tls_keys(pki), server_tls_protocols="tlsv1.3")
        mark = px.log_mark()
        px.reload()
        px.wait_log(rf"{db}.*closing because: database configuration changed", mark)
        pid2, ssl2, _ = backend(c)
        assert pid2 != pid and ssl2 is True
        assert c.pgconn.ssl_in_use is False   # the client's own leg stays plain

    # the wrong CA: the handshake fails, the log says why, the client gets an error
    px.write_config(query_wait_timeout=3, **server_tls_keys(pki, ca=pki.rogue_crt))
    mark = px.log_mark()
    px.reload()
    with pytest.raises(psycopg.OperationalError):
        with px.connect(db, connect_timeout=5) as c:
            c.execute("SELECT 1")
    px.wait_log(r"certificate verify failed", mark)

    # console SET back to the right CA: works again without a restart
    with psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True) as admin:
        admin.execute(f"SET server_tls_ca_file = '{pki.ca_crt}'")
        assert admin.execute("SHOW CONFIG").fetchall()
    with px.connect(db) as c:
        assert backend(c)[1] is True

    # disable: PostgreSQL rejects the plain login, and pgmux passes its words on
    with psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True) as admin:
        admin.execute("SET server_tls_sslmode = disable")
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry|rejects"):
        with px.connect(db, connect_timeout=5) as c:
            c.execute("SELECT 1")


@timeout(90)
def test_entry_sslmode_wins(env):
    """server_tls_sslmode is the default; an entry's own sslmode wins for that entry."""
    pki = Pki(env.dir)
    topo = tls_server(env, pki)
    db = topo.database("srvtls2")
    px = env.pgmux({"viaglobal": env.db_entry(db, server=topo.primary),
                    "plainentry": env.db_entry(db, server=topo.primary, sslmode="disable")},
                   server_tls_keys(pki, mode="require"))
    with px.connect("viaglobal") as c:
        assert backend(c)[1] is True
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry|rejects"):
        with px.connect("plainentry", connect_timeout=5) as c:
            c.execute("SELECT 1")


@timeout(90)
def test_bad_server_tls_values_refused(env):
    db = env.database()
    for key, value in (("server_tls_sslmode", "requir"), ("server_tls_protocols", "tlsv9")):
        px = env.pgmux([db], {key: value}, start=False)
        px.write_config()
        with pytest.raises(Exception):
            px.start(timeout=5)
        assert re.search(rf"invalid value.*{key}", px.log_text()), px.log_text()


@timeout(90)
def test_auth_type_cert(env):
    pki = Pki(env.dir)
    db = env.database()
    # cert, like trust, takes only users it knows (auth_file or auth_query), as PgBouncer
    px = env.pgmux([db], tls_settings(pki, "verify-full", auth_type="cert"),
                   users={"postgres": "", TEST_USER: ""})

    # the certificate's CN is TEST_USER: that user gets in, without a password
    with px.connect(db, sslmode="verify-full", sslrootcert=pki.ca_crt, sslcert=pki.client_crt,
                    sslkey=pki.client_key) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == TEST_USER

    # the same certificate for another user name: refused
    with pytest.raises(psycopg.OperationalError, match="certificate authentication failed"):
        psycopg.connect(px.dsn(db, "postgres", sslmode="verify-full", sslrootcert=pki.ca_crt,
                               sslcert=pki.client_crt, sslkey=pki.client_key),
                        connect_timeout=5).close()

    # a certificate from another CA, or none: the handshake already fails
    for extra in ({"sslcert": pki.rogue_crt, "sslkey": pki.rogue_key}, {}):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(px.dsn(db, sslmode="require", **extra), connect_timeout=5).close()


@timeout(60)
def test_client_tls_set_keeps_old_setup_until_consistent(env):
    """PgBouncer's console SET of client TLS keys: a key that does not match the current
    certificate is taken (with a notice), clients keep the old TLS setup until the
    certificate follows."""
    pki = Pki(env.dir)
    db = env.database()
    px = env.pgmux([db], tls_settings(pki, "require"))
    new_crt, new_key = pki.another_server_cert("server2", "pgmux-server-2")
    notices = []
    with psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True) as admin:
        admin.add_notice_handler(lambda d: notices.append(d.message_primary))
        admin.execute(f"SET client_tls_key_file = '{new_key}'")
        assert any("TLS settings could not be applied" in n for n in notices), notices
        with px.connect(db, sslmode="require") as c:     # old setup still serves
            assert c.pgconn.ssl_in_use
        admin.execute(f"SET client_tls_cert_file = '{new_crt}'")
    with px.connect(db, sslmode="verify-full", sslrootcert=pki.ca_crt) as c:
        assert c.pgconn.ssl_in_use
    assert "TLS setup failed" in px.log_text()


@timeout(120)
def test_monitor_uses_server_tls(env):
    """A [database X] section's monitor logs in through libpq: with server_tls_* and no ssl
    keys on the line, it must present pgmux's certificate too (the server demands it), or the
    backend would never be seen up."""
    pki = Pki(env.dir)
    topo = tls_server(env, pki)
    db = topo.database("srvtls3")
    pg = topo.primary
    px = env.pgmux({}, {"pool_mode": "transaction", "monitor_interval": 0.2,
                        **server_tls_keys(pki)},
                   sections={"routed": {"primary": f"host={pg.host} port={pg.port} dbname={db} "
                                                   f"user={TEST_USER}"}})

    def primary_state():
        rows = [r for r in px.show("BACKENDS") if r["database"] == "routed"]
        return rows[0]["state"] if rows else None
    from pgharness import wait_for
    wait_for(lambda: primary_state() == "up", 15, 0.2, "the TLS-only primary to be seen up")
    with px.connect("routed") as c:
        assert backend(c)[1] is True
    # and PostgreSQL saw the monitor's session over TLS with pgmux's certificate
    rows = pg.sql("SELECT s.ssl, s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a "
                  "USING (pid) WHERE a.application_name = 'pgmux monitor'")
    assert rows and all(r[0] is True and r[1] == f"/CN={TEST_USER}" for r in rows), rows
