#!/usr/bin/env python3
# make_corpus.py: writes the seed corpora in tests/fuzz/corpus/ (rerun after changing a harness's input layout).
import base64
import hashlib
import hmac
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(HERE, "corpus")

# RFC 7677's example: password "pencil", these nonces, this salt, 4096 iterations.  The
# harnesses use the same constants.
PASSWORD = b"pencil"
CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SALT_B64 = "W22ZaJ0SNY7soEsUEjb6gQ=="
ITERATIONS = 4096


def hm(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    ck = hm(salted, b"Client Key")
    return ck, hashlib.sha256(ck).digest(), hm(salted, b"Server Key")


def exchange(gs2, user, cnonce, salt_b64=SALT_B64, iterations=ITERATIONS):
    """Returns (client-first, server-first, client-final, server-final) of a valid login."""
    bare = f"n={user},r={cnonce}"
    first = f"{gs2},,{bare}"
    sfirst = f"r={cnonce}{SERVER_NONCE},s={salt_b64},i={iterations}"
    cb = base64.b64encode(f"{gs2},,".encode()).decode()
    final_wo = f"c={cb},r={cnonce}{SERVER_NONCE}"
    auth = f"{bare},{sfirst},{final_wo}".encode()
    ck, stored, sk = keys(PASSWORD, base64.b64decode(salt_b64), iterations)
    proof = bytes(a ^ b for a, b in zip(ck, hm(stored, auth)))
    cfinal = f"{final_wo},p={base64.b64encode(proof).decode()}"
    sfinal = f"v={base64.b64encode(hm(sk, auth)).decode()}"
    return first.encode(), sfirst.encode(), cfinal.encode(), sfinal.encode()


def verifier(password, salt, iterations):
    _, stored, sk = keys(password, salt, iterations)
    b = lambda x: base64.b64encode(x).decode()
    return f"SCRAM-SHA-256${iterations}:{b(salt)}${b(stored)}:{b(sk)}".encode()


def write(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def from_file(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return f.read()


def main():
    # fuzz_startup: startup packet bodies (after the length word) and ErrorResponse bodies.
    def startup(version, *pairs):
        body = struct.pack(">I", version)
        for s in pairs:
            body += s.encode() + b"\0"
        return body + b"\0"

    write("startup", "psql", startup(196608, "user", "postgres", "database", "app",
                                      "application_name", "psql", "client_encoding", "UTF8"))
    write("startup", "minimal", startup(196608, "user", "u"))
    write("startup", "ssl_request", struct.pack(">I", 80877103))
    write("startup", "cancel", struct.pack(">III", 80877102, 4242, 0xdeadbeef))
    write("startup", "error_response",
          b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"u\"\0"
          b"Fauth.c\0L326\0Rauth_failed\0\0")

    # fuzz_scram_server: byte 0 mode, byte 1 split, then messages.
    first, _, cfinal, _ = exchange("n", "user", CLIENT_NONCE)
    write("scram_server", "split_valid", bytes([0, len(first)]) + first + cfinal)
    write("scram_server", "fixed_first_n", bytes([1, 0]) + cfinal)
    _, _, cfinal_y, _ = exchange("y", "user", CLIENT_NONCE)
    write("scram_server", "fixed_first_y", bytes([2, 0]) + cfinal_y)
    first, _, cfinal, _ = exchange("n", "", "abc")
    write("scram_server", "libpq_style", bytes([0, len(first)]) + first + cfinal)
    write("scram_server", "first_only", bytes([0, 255]) + b"n,,n=,r=abc")

    # fuzz_scram_client: byte 0 mode (bit 0: password), byte 1 split, then server messages.
    _, sfirst, _, sfinal = exchange("n", "user", CLIENT_NONCE)
    write("scram_client", "keys_valid", bytes([0, len(sfirst)]) + sfirst + sfinal)
    write("scram_client", "server_error", bytes([0, len(sfirst)]) + sfirst + b"e=invalid-proof")
    _, sfirst16, _, sfinal16 = exchange("n", "user", CLIENT_NONCE, "c2FsdA==", 16)
    # Password mode runs PBKDF2 per input, so its seed asks for few iterations (the harness
    # skips counts above MAX_FUZZ_ITERATIONS).
    write("scram_client", "password_cheap", bytes([1, len(sfirst16)]) + sfirst16 + sfinal16)

    # fuzz_userlist and fuzz_secret.
    scram = verifier(PASSWORD, base64.b64decode(SALT_B64), ITERATIONS)
    write("userlist", "good", from_file("tests/unit/data/userlist_good.txt"))
    write("userlist", "sample", from_file("etc/userlist.txt"))
    write("userlist", "one_line", b'"postgres" "' + scram + b'"\n')
    write("userlist", "quoted", b'"a""b" "c""d" extra\r\n; comment\n"e" ""\n')
    write("secret", "scram", scram)
    write("secret", "scram_long_salt", verifier(b"x", bytes(range(48)), 1))
    write("secret", "md5", b"md56a422f785c9e20873908ce25d1736ae2")
    write("secret", "plain", b"pencil")

    # fuzz_config.
    write("config", "small", b"[databases]\napp = host=127.0.0.1 port=5432 dbname=app pool_size=5\n"
                             b"* = host=/tmp\n\n[users]\nbob = pool_mode=transaction\n\n"
                             b"[pgmux]\nlisten_port = 6432\nauth_type = trust\n"
                             b"server_lifetime = 1.5\npkt_buf = 8kB\n")
    write("config", "good", from_file("tests/unit/data/config_good.ini"))
    write("config", "pgbouncer", from_file("tests/unit/data/config_pgbouncer.ini"))
    write("config", "uri", b"[databases]\nx = postgresql://u@h:5433/d?sslmode=require pool_size=7\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
