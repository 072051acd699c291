"""Authentication hardening (issue 11, defects 5 and 7): an empty auth_file secret never logs
anyone in (plain, md5, scram-sha-256); SCRAM answers an unknown user like a known one (a stable
salt, 4096 iterations, a 28P01 at the proof); oversized SCRAM messages are refused cleanly.

The SCRAM exchanges run over a raw socket, so the test sees the salt and iteration count of
the server-first-message and can prove any password, "" included."""

import base64
import hashlib
import hmac
import os
import socket
import struct

from pgharness import md5_secret, run_async, scram_secret, timeout
from rawpg import RawConn, message, parse_error, startup_packet

CLIENT_NONCE = "fyko+d2lbbFgONRv9qkxdawL"


# ----------------------------------------------------------------------------------------------
# a raw login, step by step

def _cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def open_login(px, db, user):
    """Sends a startup packet; returns (conn, auth code, auth data) of the first answer."""
    c = RawConn.tcp(px.port, db, user, login=False, timeout=10)
    c.send(startup_packet({"user": user, "database": db}))
    t, b = c.read_msg()
    if t == b"E":
        raise AssertionError(f"login refused before authentication: {parse_error(b)}")
    assert t == b"R", f"expected an authentication request, got {t!r}"
    return c, struct.unpack("!I", b[:4])[0], b[4:]


def outcome(c):
    """After the last authentication message: 'ok' when the login completes (ReadyForQuery),
    or the ErrorResponse's fields, or 'closed' when the connection just ends."""
    try:
        while True:
            t, b = c.read_msg()
            if t == b"Z":
                return "ok"
            if t == b"E":
                return parse_error(b)
    except (EOFError, ConnectionResetError, BrokenPipeError):
        return "closed"


def sasl_initial(mech, data):
    return message(b"p", _cstr(mech) + struct.pack("!i", len(data)) + data)


def scram_attrs(text):
    return dict(part.split("=", 1) for part in text.split(","))


class Scram:
    """One raw SCRAM-SHA-256 login: start() sends the client-first and reads the server-first;
    finish(password) proves the password (any, "" too) and returns outcome()."""

    def __init__(self, px, db, user, nonce=CLIENT_NONCE):
        self.c, code, data = open_login(px, db, user)
        assert code == 10, f"expected AuthenticationSASL (10), got {code}"
        assert b"SCRAM-SHA-256\0" in data, data
        self.bare = f"n=,r={nonce}"
        self.nonce = nonce

    def start(self):
        self.c.send(sasl_initial("SCRAM-SHA-256", b"n,," + self.bare.encode()))
        t, b = self.c.read_msg()
        if t == b"E":
            raise AssertionError(f"client-first refused: {parse_error(b)}")
        code = struct.unpack("!I", b[:4])[0]
        assert t == b"R" and code == 11, f"expected AuthenticationSASLContinue, got {t!r} {code}"
        self.server_first = b[4:].decode()
        a = scram_attrs(self.server_first)
        assert a["r"].startswith(self.nonce) and len(a["r"]) > len(self.nonce), a
        self.salt = base64.b64decode(a["s"], validate=True)
        self.salt_b64 = a["s"]
        self.iterations = int(a["i"])
        self.combined_nonce = a["r"]
        return self

    def finish(self, password):
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), self.salt, self.iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={self.combined_nonce}"
        auth = f"{self.bare},{self.server_first},{without_proof}".encode()
        sig = hmac.new(stored_key, auth, hashlib.sha256).digest()
        proof = bytes(x ^ y for x, y in zip(client_key, sig))
        final = f"{without_proof},p={base64.b64encode(proof).decode()}"
        self.c.send(message(b"p", final.encode()))
        return outcome(self.c)

    def close(self):
        self.c.close()


def scram_login(px, db, user, password):
    s = Scram(px, db, user).start()
    try:
        return s.finish(password)
    finally:
        s.close()


def server_first_of(px, db, user):
    """(salt, iterations) of the server-first-message pgmux sends this user."""
    s = Scram(px, db, user).start()
    s.close()
    return s.salt, s.iterations


def plain_login(px, db, user, password):
    c, code, _ = open_login(px, db, user)
    try:
        assert code == 3, f"expected AuthenticationCleartextPassword (3), got {code}"
        c.send(message(b"p", _cstr(password)))
        return outcome(c)
    finally:
        c.close()


def md5_login(px, db, user, password):
    c, code, salt = open_login(px, db, user)
    try:
        assert code == 5, f"expected AuthenticationMD5Password (5), got {code}"
        inner = md5_secret(user, password)[3:]
        resp = "md5" + hashlib.md5(inner.encode() + salt[:4]).hexdigest()
        c.send(message(b"p", _cstr(resp)))
        return outcome(c)
    finally:
        c.close()


def assert_wrong_password(result, user):
    assert result != "ok", f"{user}: the login succeeded"
    assert isinstance(result, dict), f"{user}: no ErrorResponse, the connection just {result}"
    assert result.get("C") == "28P01", f"{user}: wrong SQLSTATE: {result}"
    # PgBouncer's words: "SASL authentication failed" after a SCRAM exchange, "password
    # authentication failed" after any other; the same whether or not the user exists
    assert result.get("M") in (f'password authentication failed for user "{user}"',
                               f'SASL authentication failed for user "{user}"'), result


def asyncpg_error(px, db, user, password):
    """Tries an asyncpg login; returns the exception, or None when it logged in."""
    async def go():
        try:
            conn = await px.aconnect(db, user, password)
        except Exception as e:  # noqa: BLE001
            return e
        await conn.close()
        return None
    return run_async(go(), 30)


def asyncpg_user(px, db, user, password):
    async def go():
        conn = await px.aconnect(db, user, password)
        try:
            return await conn.fetchval("SELECT session_user::text")
        finally:
            await conn.close()
    return run_async(go(), 30)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ----------------------------------------------------------------------------------------------
# defect 5: an empty secret never authenticates

@timeout(90)
def test_empty_secret_refused_every_auth_type(env):
    db = env.database()
    # trusted on the server: were pgmux to let the client in, the login would complete
    empty = env.role("ah_empty")
    good = env.role("ah_good")
    for auth_type, raw_login in (("scram-sha-256", scram_login), ("plain", plain_login),
                                 ("md5", md5_login)):
        px = env.pgmux([db], {"auth_type": auth_type}, users={empty: "", good: "Good-pw-5"})
        mark = px.log_mark()
        # the client proves the empty password correctly: still refused, as a wrong password
        assert_wrong_password(raw_login(px, db, empty, ""), empty)
        assert_wrong_password(raw_login(px, db, empty, "something"), empty)
        # asyncpg sends an empty password when given one
        err = asyncpg_error(px, db, empty, "")
        assert err is not None, f"{auth_type}: asyncpg logged in with an empty password"
        assert getattr(err, "sqlstate", None) == "28P01", f"{auth_type}: {err!r}"
        assert f'authentication failed for user "{empty}"' in str(err), repr(err)
        # the log says why (plain and md5 refuse "" before looking at the secret's kind)
        px.wait_log(r"password authentication failed: .*empty", mark)
        # a user with a real password is not affected
        assert raw_login(px, db, good, "Good-pw-5") == "ok", auth_type
        assert asyncpg_user(px, db, good, "Good-pw-5") == good
        assert "Good-pw-5" not in px.log_text(), f"{auth_type}: a password reached the log"
        px.stop()


@timeout(60)
def test_empty_md5_secret_refused(env):
    """The md5 secret of the empty password is an empty password too (PostgreSQL's CREATE ROLE
    clears both)."""
    db = env.database()
    user = env.role("ah_md5empty")
    px = env.pgmux([db], {"auth_type": "md5"}, users={user: md5_secret(user, "")})
    mark = px.log_mark()
    assert_wrong_password(md5_login(px, db, user, ""), user)
    px.wait_log(r"md5 secret is that of an empty password", mark)
    px.stop()
    px = env.pgmux([db], {"auth_type": "plain"}, users={user: md5_secret(user, "")})
    assert_wrong_password(plain_login(px, db, user, ""), user)


# ----------------------------------------------------------------------------------------------
# defect 7: SCRAM does not tell which users exist

@timeout(90)
def test_scram_unknown_user_looks_known(env):
    db = env.database()
    stored = env.role("ah_stored", "Stored-pw-7", method="scram-sha-256")
    plain = env.role("ah_plainpw", "Plain-pw-7", method="scram-sha-256")
    md5only = env.role("ah_md5only", "Md5-pw-7", method="md5")
    stored_secret = env.pg.role_secret(stored)
    users = {stored: stored_secret, plain: "Plain-pw-7", md5only: env.pg.role_secret(md5only)}
    px = env.pgmux([db], {"auth_type": "scram-sha-256"}, users=users)

    # an unknown user: the same salt and count on every try, shaped like a real verifier's
    ghost = "ah_nobody_here"
    s1, i1 = server_first_of(px, db, ghost)
    s2, i2 = server_first_of(px, db, ghost)
    assert (s1, i1) == (s2, i2), "an unknown user got a different salt on the second try"
    assert i1 == 4096 and len(s1) == 16, (i1, len(s1))
    # another unknown name gets another salt (not one constant salt for every stranger)
    s3, _ = server_first_of(px, db, ghost + "2")
    assert s3 != s1
    # the known users: a stored verifier shows its own salt, a plaintext secret a stable one
    ss, si = server_first_of(px, db, stored)
    assert base64.b64encode(ss).decode() in stored_secret and si == 4096
    p1, pi1 = server_first_of(px, db, plain)
    p2, pi2 = server_first_of(px, db, plain)
    assert (p1, pi1) == (p2, pi2) and pi1 == 4096 and len(p1) == 16
    # a user whose secret cannot do SCRAM (md5) is answered as an unknown user is
    m1, mi1 = server_first_of(px, db, md5only)
    m2, _ = server_first_of(px, db, md5only)
    assert m1 == m2 and mi1 == 4096 and len(m1) == 16

    # every failure is the same 28P01 at the proof, whatever the password
    for pw in ("Stored-pw-7", "", "guess"):
        assert_wrong_password(scram_login(px, db, ghost, pw), ghost)
    assert_wrong_password(scram_login(px, db, md5only, "Md5-pw-7"), md5only)
    assert_wrong_password(scram_login(px, db, stored, "wrong"), stored)
    assert_wrong_password(scram_login(px, db, plain, "wrong"), plain)

    # the known users log in, through the raw exchange and through libpq and asyncpg
    assert scram_login(px, db, stored, "Stored-pw-7") == "ok"
    assert scram_login(px, db, plain, "Plain-pw-7") == "ok"
    for user, pw in ((stored, "Stored-pw-7"), (plain, "Plain-pw-7")):
        with px.connect(db, user, pw) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == user
        assert asyncpg_user(px, db, user, pw) == user
    log = px.log_text()
    for pw in ("Stored-pw-7", "Plain-pw-7", "Md5-pw-7"):
        assert pw not in log, "a password reached the log"

    # the mock salt is keyed per process: another pgmux gives the same stranger another salt
    px2 = env.pgmux([db], {"auth_type": "scram-sha-256"}, users=users)
    o1, oi = server_first_of(px2, db, ghost)
    assert oi == 4096 and o1 != s1
    assert server_first_of(px2, db, ghost)[0] == o1


@timeout(90)
def test_scram_plaintext_secret_reload(env):
    """A plaintext secret's derived verifier is cached; a reload with a new password takes
    effect at once (the cache belongs to the old auth_file)."""
    db = env.database()
    user = env.role("ah_reload")   # trusted on the server
    px = env.pgmux([db], {"auth_type": "scram-sha-256"}, users={user: "First-pw-1"})
    salt_before = server_first_of(px, db, user)
    for _ in range(3):
        assert scram_login(px, db, user, "First-pw-1") == "ok"
    px.write_userlist({user: "Second-pw-2", "postgres": ""})
    px.reload()
    assert_wrong_password(scram_login(px, db, user, "First-pw-1"), user)
    assert scram_login(px, db, user, "Second-pw-2") == "ok"
    assert asyncpg_user(px, db, user, "Second-pw-2") == user
    # the salt depends on the name, not on the password: it did not move
    assert server_first_of(px, db, user) == salt_before


# ----------------------------------------------------------------------------------------------
# oversized and malformed SCRAM messages from a client

def sasl_attempt(px, db, user, payload):
    """Sends one SASLInitialResponse message (bytes, already framed); returns outcome()."""
    c, code, _ = open_login(px, db, user)
    try:
        assert code == 10
        try:
            c.send(payload)
        except (ConnectionResetError, BrokenPipeError):
            return "closed"
        return outcome(c)
    except socket.timeout:
        return "timeout"
    finally:
        c.close()


def assert_refused(result, states, what):
    assert result != "ok", f"{what}: accepted"
    assert result != "timeout", f"{what}: no answer"
    if isinstance(result, dict):
        assert result.get("C") in states, f"{what}: {result}"


@timeout(120)
def test_scram_oversized_client_first(env):
    db = env.database()
    user = env.role("ah_big", "Big-pw-1", method="scram-sha-256")
    px = env.pgmux([db], {"auth_type": "scram-sha-256"}, users={user: "Big-pw-1"})
    ghost = "ah_ghost"
    for who in (user, ghost):
        # a 100 kB client-first: refused on its length word, before it is read
        big = b"n,,n=,r=" + b"a" * 100_000
        assert_refused(sasl_attempt(px, db, who, sasl_initial("SCRAM-SHA-256", big)),
                       ("08P01",), "100 kB client-first")
        # a 5,000-byte nonce (inside the login message limit, over the SCRAM one)
        r = sasl_attempt(px, db, who, sasl_initial("SCRAM-SHA-256", b"n,,n=,r=" + b"b" * 5000))
        assert_refused(r, ("08P01",), "5000-byte nonce")
        assert isinstance(r, dict), r
        # a 200-byte nonce (under the SCRAM message limit, over the nonce buffer)
        r = sasl_attempt(px, db, who, sasl_initial("SCRAM-SHA-256", b"n,,n=,r=" + b"c" * 200))
        assert_refused(r, ("08P01",), "200-byte nonce")
        assert isinstance(r, dict), r
        # channel binding pgmux never offered, and a malformed GS2 header
        for cf in (b"p=tls-server-end-point,,n=,r=abc", b"p,,n=,r=abc", b"x,,n=,r=abc",
                   b"n,a=someone,n=,r=abc", b"n", b"n,,n=,r=ab\0c"):
            r = sasl_attempt(px, db, who, sasl_initial("SCRAM-SHA-256", cf))
            assert_refused(r, ("08P01", "28000"), repr(cf))
            assert isinstance(r, dict), (cf, r)
        # a mechanism pgmux did not offer
        r = sasl_attempt(px, db, who, sasl_initial("SCRAM-SHA-256-PLUS", b"p=tls-unique,,n=,r=abc"))
        assert_refused(r, ("28000", "08P01"), "SCRAM-SHA-256-PLUS")
        # a data length that disagrees with the message
        r = sasl_attempt(px, db, who, message(b"p", _cstr("SCRAM-SHA-256") + struct.pack("!i", 1 << 30)
                                               + b"n,,n=,r=abc"))
        assert_refused(r, ("08P01",), "lying SASL data length")
        # an oversized client-final after a good client-first
        s = Scram(px, db, who).start()
        try:
            s.c.send(message(b"p", b"c=biws,r=" + s.combined_nonce.encode() + b",p=" + b"A" * 6000))
            assert_refused(outcome(s.c), ("08P01", "28P01"), "oversized client-final")
        finally:
            s.close()

    # memory stays bounded under a flood of oversized first messages
    before = rss_kb(px.proc.pid)
    for i in range(200):
        sasl_attempt(px, db, ghost if i % 2 else user,
                     sasl_initial("SCRAM-SHA-256", b"n,,n=,r=" + os.urandom(8).hex().encode() * 12_500))
    grown = rss_kb(px.proc.pid) - before
    assert grown < 16 * 1024, f"pgmux grew by {grown} kB over 200 oversized client-firsts"

    # still alive and serving
    assert px.alive()
    assert scram_login(px, db, user, "Big-pw-1") == "ok"
    with px.connect(db, user, "Big-pw-1") as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


@timeout(60)
def test_scram_stored_secret_unaffected(env):
    """A verifier made outside PostgreSQL (other salt length, other count) keeps its own salt
    and count, and logs in."""
    db = env.database()
    user = env.role("ah_custom")   # trusted on the server: pgmux logs in by pass-through anyway
    secret = scram_secret("Custom-pw-3", salt=b"0123456789abcdefghij", iterations=5000)
    px = env.pgmux([db], {"auth_type": "scram-sha-256"}, users={user: secret})
    salt, it = server_first_of(px, db, user)
    assert salt == b"0123456789abcdefghij" and it == 5000
    assert scram_login(px, db, user, "Custom-pw-3") == "ok"
    assert_wrong_password(scram_login(px, db, user, "Custom-pw-4"), user)
