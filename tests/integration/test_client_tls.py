"""TLS between clients and pgmux (client_tls_*): libpq, psql, asyncpg and pgbench over TLS, each
client_tls_sslmode's rules, client certificates, bad files at start and on reload, and clients
that misbehave before or during the handshake without disturbing anyone else."""

import contextlib
import os
import re
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import psycopg

import rawpg
from pgharness import TEST_USER, pg_bin, raise_nofile, run_async, timeout, wait_for

SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSSENC_REQUEST = struct.pack("!II", 8, 80877104)


# ----------------------------------------------------------------------------------------------
# a throwaway PKI: a CA, pgmux's certificate, a client certificate, and a stranger's CA

class Pki:
    def __init__(self, base):
        self.dir = Path(base) / "pki"
        self.dir.mkdir(exist_ok=True)
        self.ca_crt, self.ca_key = self._ca("ca", "pgmux test CA")
        self.server_crt, self.server_key = self._leaf("server", "pgmux-server", self.ca_crt,
                                                      self.ca_key, server=True)
        self.client_crt, self.client_key = self._leaf("client", TEST_USER, self.ca_crt,
                                                      self.ca_key)
        rogue_crt, rogue_key = self._ca("rogue", "someone else's CA")
        self.rogue_crt, self.rogue_key = self._leaf("rogue_client", TEST_USER, rogue_crt,
                                                    rogue_key)

    def _run(self, *args):
        r = subprocess.run(["openssl", *args], cwd=self.dir, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        assert r.returncode == 0, f"openssl {' '.join(args)}:\n{r.stdout}"

    def _key(self, name):
        self._run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-out", f"{name}.key")
        os.chmod(self.dir / f"{name}.key", 0o600)  # libpq refuses a key others can read
        return str(self.dir / f"{name}.key")

    def _ca(self, name, cn):
        key = self._key(name)
        self._run("req", "-x509", "-new", "-key", key, "-subj", f"/CN={cn}", "-days", "2",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", f"{name}.crt")
        return str(self.dir / f"{name}.crt"), key

    def _leaf(self, name, cn, ca_crt, ca_key, server=False):
        key = self._key(name)
        self._run("req", "-new", "-key", key, "-subj", f"/CN={cn}", "-out", f"{name}.csr")
        ext = self.dir / f"{name}.ext"
        ext.write_text("basicConstraints=CA:FALSE\n" + (
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
            if server else "extendedKeyUsage=clientAuth\n"))
        self._run("x509", "-req", "-in", f"{name}.csr", "-CA", ca_crt, "-CAkey", ca_key,
                  "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", f"{name}.crt")
        return str(self.dir / f"{name}.crt"), key

    def another_server_cert(self, name, cn):
        """A second certificate for pgmux from the same CA (for rotation on reload)."""
        return self._leaf(name, cn, self.ca_crt, self.ca_key, server=True)


def tls_settings(pki, mode, **more):
    s = {"client_tls_sslmode": mode, "client_tls_key_file": pki.server_key,
         "client_tls_cert_file": pki.server_crt}
    if mode in ("verify-ca", "verify-full"):
        s["client_tls_ca_file"] = pki.ca_crt
    s.update(more)
    return s


# ----------------------------------------------------------------------------------------------
# raw clients

def raw_socket(px, timeout=5):
    s = socket.create_connection(("127.0.0.1", px.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            break
        out += d
    return out


def wait_closed(s, timeout=5):
    """Reads (and drops) whatever comes until the peer closes; True when it did in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if not s.recv(65536):
                return True
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            return True
    return False


def tls_context(pki, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca_crt)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def raw_tls(px, pki, cert=None, key=None, timeout=5):
    """SSLRequest, 'S', then a verified handshake: the TLS socket (server name 127.0.0.1)."""
    s = raw_socket(px, timeout)
    s.sendall(SSL_REQUEST)
    assert s.recv(1) == b"S", "SSLRequest was not answered with S"
    return tls_context(pki, cert, key).wrap_socket(s, server_hostname="127.0.0.1")


def error_fields(kind, body):
    assert kind == b"E", f"expected an ErrorResponse, got {kind!r} {body[:80]!r}"
    return rawpg.parse_error(body)


def login_attempts(px):
    return len(re.findall(r"login attempt", px.log_text()))


def check_rows(conn):
    assert conn.execute("SELECT g FROM generate_series(1, 3) g").fetchall() == [(1,), (2,), (3,)]


async def asyncpg_fetch(px, db, ssl_ctx, user=TEST_USER):
    import asyncpg
    conn = await asyncpg.connect(host="127.0.0.1", port=px.port, database=db, user=user,
                                 ssl=ssl_ctx, timeout=10)
    try:
        sslobj = conn._transport.get_extra_info("ssl_object")
        rows = await conn.fetch("SELECT g FROM generate_series(1, 3) g")
        return [r[0] for r in rows], sslobj.version() if sslobj else None
    finally:
        await conn.close()


# ----------------------------------------------------------------------------------------------
# tests

@timeout(90)
def test_tls_require_libpq_psql_and_console(env):
    pki = Pki(env.dir)
    db = env.database()
    px = env.pgmux([db], tls_settings(pki, "require"))

    # libpq: require, then verify-full against our CA (127.0.0.1 is in the certificate)
    with px.connect(db, sslmode="require") as c:
        assert c.pgconn.ssl_in_use, "libpq reports no TLS"
        check_rows(c)
    with px.connect(db, sslmode="verify-full", sslrootcert=pki.ca_crt) as c:
        assert c.pgconn.ssl_in_use
        check_rows(c)

    # psql: \conninfo tells the TLS protocol in use
    r = px.psql(f"dbname={db} sslmode=require", "SELECT 'psql over tls'",
                args=("-c", r"\conninfo"))
    assert "SSL connection (protocol: TLSv1." in r.stdout, r.stdout
    assert "psql over tls" in r.stdout, r.stdout

    # the console over TLS; SHOW CLIENTS fills PgBouncer's tls column (a Unix socket
    # client, which no mode requires TLS of, shows it empty)
    plain = psycopg.connect(host=str(px.dir), port=px.port, dbname=db, user=TEST_USER,
                            autocommit=True, application_name="plain_unix")
    tls = px.connect(db, sslmode="require", application_name="tls_tcp")
    try:
        assert not plain.pgconn.ssl_in_use
        check_rows(plain)
        with psycopg.connect(px.dsn("pgmux", "postgres", sslmode="require"),
                             autocommit=True) as admin:
            assert admin.pgconn.ssl_in_use
            cur = admin.execute("SHOW CLIENTS")
            names = [d.name for d in cur.description]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
        by_app = {r["application_name"]: r for r in rows}
        print(rows)
        assert re.fullmatch(r"TLSv1\.[23]/[A-Z0-9_-]+/ECDH=[A-Za-z0-9]+",
                            by_app["tls_tcp"]["tls"]), by_app["tls_tcp"]["tls"]
        assert by_app["plain_unix"]["tls"] == ""
    finally:
        plain.close()
        tls.close()


@timeout(60)
def test_tls_asyncpg(env):
    pki = Pki(env.dir)
    db = env.database()
    px = env.pgmux([db], tls_settings(pki, "require"))
    ctx = tls_context(pki)   # verifies pgmux's certificate and host name
    rows, version = run_async(asyncpg_fetch(px, db, ctx), 30)
    assert rows == [1, 2, 3]
    assert version in ("TLSv1.2", "TLSv1.3"), version


@timeout(60)
def test_tls_require_rejects_plain(env):
    pki = Pki(env.dir)
    db = env.database()
    px = env.pgmux([db], tls_settings(pki, "require"))

    # asyncpg without TLS: the SQLSTATE and PgBouncer's text
    async def plain():
        import asyncpg
        try:
            conn = await asyncpg.connect(host="127.0.0.1", port=px.port, database=db,
                                         user=TEST_USER, ssl=False, timeout=10)
        except Exception as e:  # noqa: BLE001
            return e
        await conn.close()
        return None
    err = run_async(plain(), 30)
    assert err is not None, "a plain client logged in under client_tls_sslmode = require"
    assert getattr(err, "sqlstate", None) == "28000", f"{err!r}"
    assert "SSL required" in str(err), f"{err!r}"

    # libpq with sslmode=disable
    try:
        px.connect(db, sslmode="disable").close()
        raise AssertionError("sslmode=disable logged in under require")
    except psycopg.OperationalError as e:
        assert "SSL required" in str(e), str(e)

    # raw: a StartupMessage in the clear gets the FATAL and a close; GSSENCRequest still 'N'
    with rawpg.RawConn.tcp(px.port, db, TEST_USER, login=False) as rc:
        rc.send(GSSENC_REQUEST)
        assert rc.read_raw(2, stop=lambda b: len(b) >= 1) == b"N"
        rc.send(rawpg.startup_packet({"user": TEST_USER, "database": db}))
        f = error_fields(*rc.read_msg())
        assert f["C"] == "28000" and f["M"] == "SSL required" and f["S"] == "FATAL", f
        assert wait_closed(rc.sock), "connection left open after SSL required"

    # a cancel request needs no TLS (libpq sends it in the clear): no error, just a close
    with rawpg.RawConn.tcp(px.port, db, TEST_USER, login=False) as rc:
        rc.send(struct.pack("!IIII", 16, 80877102, 1234, 5678))
        assert rc.read_raw(2) == b""

    # Unix sockets: SSLRequest gets 'N' and a plain login works (PgBouncer's rule)
    with rawpg.RawConn.unix(px.dir / f".s.PGSQL.{px.port}", db, TEST_USER, login=False) as rc:
        rc.send(SSL_REQUEST)
        assert rc.read_raw(2, stop=lambda b: len(b) >= 1) == b"N"
        rc.startup(db, TEST_USER)
        assert rawpg.rows(rc.query("SELECT 7")) == [("7",)]

    # TLS still works for everybody else
    with px.connect(db, sslmode="require") as c:
        check_rows(c)
    assert "closing because: SSL required" in px.log_text()


@timeout(90)
def test_tls_prefer_and_allow_accept_both(env):
    pki = Pki(env.dir)
    db = env.database()
    for mode in ("prefer", "allow"):
        px = env.pgmux([db], tls_settings(pki, mode))
        with px.connect(db, sslmode="disable") as c:
            assert not c.pgconn.ssl_in_use
            check_rows(c)
        with px.connect(db, sslmode="require") as c:
            assert c.pgconn.ssl_in_use, mode
            check_rows(c)
        with px.connect(db) as c:  # libpq's default, prefer: takes TLS when offered
            assert c.pgconn.ssl_in_use, mode
        with rawpg.RawConn.tcp(px.port, db, TEST_USER, login=False) as rc:
            rc.send(GSSENC_REQUEST)
            assert rc.read_raw(2, stop=lambda b: len(b) >= 1) == b"N"
        # a client certificate is neither asked for nor needed below verify-ca
        with raw_tls(px, pki) as s:
            rc = rawpg.RawConn(s)
            rc.startup(db, TEST_USER)
            assert rawpg.rows(rc.query("SELECT 1")) == [("1",)]
        px.stop()

    # disable (the default): SSLRequest is declined and libpq carries on in the clear
    px = env.pgmux([db])
    with px.connect(db) as c:
        assert not c.pgconn.ssl_in_use
    try:
        px.connect(db, sslmode="require").close()
        raise AssertionError("sslmode=require got TLS with client_tls_sslmode = disable")
    except psycopg.OperationalError as e:
        assert "does not support SSL" in str(e), str(e)


@timeout(90)
def test_tls_verify_full_client_certificates(env):
    pki = Pki(env.dir)
    db = env.database()
    px = env.pgmux([db], tls_settings(pki, "verify-full"))

    # no client certificate: the handshake fails, and the log says why
    mark = px.log_mark()
    try:
        px.connect(db, sslmode="require").close()
        raise AssertionError("a client without a certificate got in under verify-full")
    except psycopg.OperationalError:
        pass
    px.wait_log(r"TLS handshake failed: .*(peer did not return a certificate|certificate)",
                mark)

    # a certificate from another CA: refused
    mark = px.log_mark()
    try:
        px.connect(db, sslmode="require", sslcert=pki.rogue_crt, sslkey=pki.rogue_key).close()
        raise AssertionError("a certificate from an unknown CA was accepted")
    except psycopg.OperationalError:
        pass
    px.wait_log(r"TLS (certificate verification|handshake) failed", mark)

    # a certificate from client_tls_ca_file: in, with libpq and asyncpg
    with px.connect(db, sslmode="verify-full", sslrootcert=pki.ca_crt, sslcert=pki.client_crt,
                    sslkey=pki.client_key) as c:
        assert c.pgconn.ssl_in_use
        check_rows(c)
    rows, _ = run_async(asyncpg_fetch(px, db, tls_context(pki, pki.client_crt,
                                                          pki.client_key)), 30)
    assert rows == [1, 2, 3]
    # and plain TCP is still refused
    try:
        px.connect(db, sslmode="disable").close()
        raise AssertionError("plain login under verify-full")
    except psycopg.OperationalError as e:
        assert "SSL required" in str(e)

    # verify-ca: the same CA check
    px2 = env.pgmux([db], tls_settings(pki, "verify-ca"))
    with px2.connect(db, sslmode="require", sslcert=pki.client_crt, sslkey=pki.client_key) as c:
        check_rows(c)
    try:
        px2.connect(db, sslmode="require").close()
        raise AssertionError("a client without a certificate got in under verify-ca")
    except psycopg.OperationalError:
        pass


@timeout(90)
def test_tls_bad_files_at_start_and_reload(env):
    pki = Pki(env.dir)
    db = env.database()

    # start: a missing certificate file stops pgmux with a clear log line
    missing = str(env.dir / "no-such-dir" / "server.crt")
    px = env.pgmux([db], tls_settings(pki, "require", client_tls_cert_file=missing),
                   start=False)
    px.start(wait=False)
    assert px.wait_exit(15) == 1, "pgmux started with a missing client_tls_cert_file"
    log = px.log_text()
    assert re.search(r'client_tls_cert_file "' + re.escape(missing) +
                     r'": cannot load the certificate: .*No such file', log), log
    assert "BEGIN PRIVATE KEY" not in log

    # start: a key that does not belong to the certificate
    px = env.pgmux([db], tls_settings(pki, "require", client_tls_key_file=pki.client_key),
                   start=False)
    px.start(wait=False)
    assert px.wait_exit(15) == 1
    assert "client_tls_key_file" in px.log_text() and "mismatch" in px.log_text()

    # start: a mode that needs files it was not given is a config error with file:line
    px = env.pgmux([db], {"client_tls_sslmode": "require"}, start=False)
    px.start(wait=False)
    assert px.wait_exit(15) == 1
    line = px.config_line(r"^client_tls_sslmode")
    assert re.search(rf"pgmux\.ini:{line}: client_tls_sslmode = require needs "
                     r"client_tls_key_file and client_tls_cert_file", px.log_text()), \
        px.log_text()
    px = env.pgmux([db], {"client_tls_sslmode": "sometimes"}, start=False)
    px.start(wait=False)
    assert px.wait_exit(15) == 1
    assert 'invalid value "sometimes" for client_tls_sslmode' in px.log_text()

    # reload: a bad file keeps the old context (TLS goes on working), with the reason logged
    px = env.pgmux([db], tls_settings(pki, "require"))
    with raw_tls(px, pki) as s:
        cn = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
    assert cn == "pgmux-server"
    mark = px.log_mark()
    px.write_config(client_tls_cert_file=missing)
    px.reload()
    px.wait_log(r"reload failed, keeping the old configuration: client_tls_cert_file", mark)
    with px.connect(db, sslmode="require") as c:
        check_rows(c)
    # the console's RELOAD says it failed too
    with psycopg.connect(px.dsn("pgmux", "postgres", sslmode="require"),
                         autocommit=True) as admin:
        try:
            admin.execute("RELOAD")
            raise AssertionError("RELOAD with a missing certificate succeeded")
        except psycopg.Error as e:
            assert "RELOAD failed" in str(e)
        # SET of a TLS key, as in PgBouncer: the value is taken, but a TLS setup that cannot
        # be built from it is not used; a notice (and the log) says why, and clients keep
        # the previous setup until a SET makes a working one
        notices = []
        admin.add_notice_handler(lambda d: notices.append(d.message_primary))
        admin.execute("SET client_tls_ciphers = 'NO-SUCH-CIPHER'")
        assert any("client_tls_ciphers" in n and "could not be applied" in n for n in notices), notices
        cfg = {r[0]: r[1] for r in admin.execute("SHOW CONFIG").fetchall()}
        assert cfg["client_tls_ciphers"] == "NO-SUCH-CIPHER"
        with px.connect(db, sslmode="require") as c:
            check_rows(c)
        admin.execute("SET client_tls_ciphers = 'default'")

    # reload with a new certificate: new connections get it (rotation), old ones carry on
    old_conn = px.connect(db, sslmode="require")
    crt2, key2 = pki.another_server_cert("server2", "pgmux-server-2")
    px.write_config(client_tls_cert_file=crt2, client_tls_key_file=key2)
    mark = px.log_mark()
    px.reload()
    px.wait_log(r"configuration reloaded", mark)
    with raw_tls(px, pki) as s:
        cn = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
    assert cn == "pgmux-server-2"
    check_rows(old_conn)
    old_conn.close()
    # and back to disable on reload: SSLRequest gets 'N' again
    px.write_config(client_tls_sslmode="disable")
    px.reload()
    with rawpg.RawConn.tcp(px.port, db, TEST_USER, login=False) as rc:
        rc.send(SSL_REQUEST)
        assert rc.read_raw(2, stop=lambda b: len(b) >= 1) == b"N"


@timeout(120)
def test_tls_pgbench_select_only(env):
    pki = Pki(env.dir)
    db = env.database()
    r = subprocess.run([pg_bin("pgbench"), "-i", "-q", "-s", "1", "-h", str(env.pg.sockdir),
                        "-p", str(env.pg.port), "-U", TEST_USER, db],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    px = env.pgmux([db], tls_settings(pki, "require", pool_mode="transaction",
                                      default_pool_size=4))
    cmd = [pg_bin("pgbench"), "-n", "-S", "-c", "10", "-j", "2", "-T", "4",
           "-h", "127.0.0.1", "-p", str(px.port), "-U", TEST_USER, db]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=60, preexec_fn=raise_nofile,
                       env=dict(os.environ, PGSSLMODE="require", PGSSLROOTCERT=pki.ca_crt))
    print(r.stdout)
    assert r.returncode == 0, r.stdout[-3000:]
    processed = int(re.search(r"actually processed: (\d+)", r.stdout).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    assert processed > 100, r.stdout
    assert failed is None or int(failed.group(1)) == 0, r.stdout
    assert "error" not in r.stdout.lower(), r.stdout
    assert len(re.findall(r"login attempt: tls=TLSv1\.[23]/", px.log_text())) >= 10


@timeout(90)
def test_tls_garbage_and_stalled_handshakes(env):
    pki = Pki(env.dir)
    db = env.database()
    px = env.pgmux([db], tls_settings(pki, "require", client_login_timeout=2))
    good = px.connect(db, sslmode="require")
    check_rows(good)

    # garbage instead of a ClientHello: dropped at once, with the reason in the log
    mark = px.log_mark()
    g = raw_socket(px)
    g.sendall(SSL_REQUEST)
    assert g.recv(1) == b"S"
    g.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(3000))
    assert wait_closed(g, 5), "garbage handshake was not dropped"
    g.close()
    px.wait_log(r"TLS handshake failed: ", mark)

    # stalled handshakes: one says nothing after 'S', one stops halfway through a ClientHello
    stalled = []
    s = raw_socket(px)
    s.sendall(SSL_REQUEST)
    assert s.recv(1) == b"S"
    stalled.append(s)
    s = raw_socket(px)
    s.sendall(SSL_REQUEST)
    assert s.recv(1) == b"S"
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")   # a record header, then silence
    stalled.append(s)

    # meanwhile everybody else is served at once
    t0 = time.monotonic()
    for _ in range(5):
        with px.connect(db, sslmode="require") as c:
            check_rows(c)
        check_rows(good)
    assert time.monotonic() - t0 < 5, "other clients were held up by stalled handshakes"

    # client_login_timeout ends the stalled ones
    for s in stalled:
        assert wait_closed(s, 6), "a stalled handshake outlived client_login_timeout"
        s.close()
    assert "client_login_timeout" in px.log_text()
    check_rows(good)
    good.close()


@timeout(60)
def test_tls_buffer_stuffing_rejected(env):
    pki = Pki(env.dir)
    db = env.database()
    for mode in ("require", "prefer"):
        px = env.pgmux([db], tls_settings(pki, mode))
        before = login_attempts(px)
        startup = rawpg.startup_packet({"user": TEST_USER, "database": db})

        # SSLRequest and a plaintext StartupMessage in one write, before reading the 'S':
        # the plaintext must not be taken as if it had come through TLS
        s = raw_socket(px)
        s.sendall(SSL_REQUEST + startup + rawpg.query("SELECT 'stuffed'"))
        first = recv_exact(s, 1)
        assert first != b"S", f"{mode}: pgmux answered S with plaintext queued behind it"
        rest = b""
        with contextlib.suppress(OSError):
            s.settimeout(5)
            rest = recv_exact(s, 4)
        if first == b"E":
            ln = struct.unpack("!I", rest)[0]
            f = rawpg.parse_error(recv_exact(s, ln - 4))
            assert f["C"] == "08P01", f
            assert "unencrypted data after SSL request" in f["M"], f
        assert wait_closed(s, 5)
        s.close()

        # plaintext after the 'S' instead of a ClientHello: no login either
        s = raw_socket(px)
        s.sendall(SSL_REQUEST)
        assert s.recv(1) == b"S"
        s.sendall(startup)
        assert wait_closed(s, 5), f"{mode}: plaintext after S was not dropped"
        s.close()

        # a second SSLRequest inside TLS is a protocol violation
        with raw_tls(px, pki) as t:
            t.sendall(SSL_REQUEST)
            rc = rawpg.RawConn(t)
            f = error_fields(*rc.read_msg())
            assert f["C"] == "08P01", f

        assert login_attempts(px) == before, f"{mode}: a stuffed client got to log in"
        assert "received unencrypted data after SSL request" in px.log_text()
        # and the pooler is fine
        with px.connect(db, sslmode="require") as c:
            check_rows(c)
        px.stop()
