"""rawpg: a minimal PostgreSQL v3 wire-protocol client for tests that need byte-level control
(pipelining, bare Flush messages, extended-protocol COPY, slow readers, odd startup packets).

Every read has a deadline, so a pooler that never answers shows up as a socket.timeout
(a test failure), never as a hang.  Only trust authentication is supported.
"""

import fcntl
import socket
import struct
import termios
import time

PROTOCOL_V3 = 196608


class ServerError(Exception):
    """An ErrorResponse: .fields maps field codes ('S', 'C', 'M', ...) to text."""

    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('C', '?????')}: {fields.get('M', '')}")

    @property
    def sqlstate(self):
        return self.fields.get("C")


# ----------------------------------------------------------------------------------------------
# message builders (frontend)

def message(kind, body=b""):
    """One frontend message: a type byte, then an int32 length that counts itself."""
    return kind + struct.pack("!I", len(body) + 4) + body


def _cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def startup_packet(params):
    body = struct.pack("!I", PROTOCOL_V3)
    for k, v in params.items():
        body += _cstr(k) + _cstr(v)
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def query(sql):
    return message(b"Q", _cstr(sql))


def parse(sql, name=""):
    return message(b"P", _cstr(name) + _cstr(sql) + struct.pack("!H", 0))


def bind(portal="", statement=""):
    # no parameter formats, no parameters, no result formats
    return message(b"B", _cstr(portal) + _cstr(statement) + struct.pack("!HHH", 0, 0, 0))


def execute(portal="", max_rows=0):
    return message(b"E", _cstr(portal) + struct.pack("!I", max_rows))


def describe_portal(portal=""):
    return message(b"D", b"P" + _cstr(portal))


def copy_data(data):
    return message(b"d", data)


SYNC = message(b"S")
FLUSH = message(b"H")
COPY_DONE = message(b"c")
TERMINATE = message(b"X")


# ----------------------------------------------------------------------------------------------
# message decoding (backend)

def parse_error(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


def data_row(body, raw=False):
    """The columns of a DataRow as str (bytes when raw; None for NULL)."""
    n = struct.unpack("!H", body[:2])[0]
    pos, out = 2, []
    for _ in range(n):
        ln = struct.unpack("!i", body[pos:pos + 4])[0]
        pos += 4
        if ln < 0:
            out.append(None)
        else:
            v = body[pos:pos + ln]
            out.append(v if raw else v.decode(errors="replace"))
            pos += ln
    return tuple(out)


def rows(msgs):
    """Every DataRow among msgs, decoded."""
    return [data_row(b) for t, b in msgs if t == b"D"]


def types(msgs):
    return "".join(t.decode() for t, _ in msgs)


def errors(msgs):
    return [parse_error(b) for t, b in msgs if t == b"E"]


# ----------------------------------------------------------------------------------------------
# connection

class RawConn:
    """One raw client connection (TCP or Unix socket)."""

    def __init__(self, sock, timeout=5.0):
        self.sock = sock
        self.timeout = timeout
        self.buf = bytearray()
        self.nread = 0          # bytes received from the socket so far
        self.params = {}        # ParameterStatus values from the greeting
        self.backend_key = None

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def tcp(cls, port, dbname, user, host="127.0.0.1", timeout=5.0, extra=None, login=True):
        s = socket.create_connection((host, port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = cls(s, timeout)
        if login:
            c.startup(dbname, user, extra)
        return c

    @classmethod
    def unix(cls, path, dbname, user, timeout=5.0, extra=None, login=True):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(str(path))
        c = cls(s, timeout)
        if login:
            c.startup(dbname, user, extra)
        return c

    def startup(self, dbname, user, extra=None):
        params = {"user": user, "database": dbname}
        params.update(extra or {})
        self.sock.sendall(startup_packet(params))
        for t, b in self.read_until_ready():
            if t == b"R":
                code = struct.unpack("!I", b[:4])[0]
                if code != 0:
                    raise RuntimeError(f"rawpg supports trust auth only (got auth code {code})")
            elif t == b"S":
                k, v = b.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
            elif t == b"K":
                self.backend_key = struct.unpack("!II", b[:8])
            elif t == b"E":
                raise ServerError(parse_error(b))
        return self

    # -- low level ------------------------------------------------------------------------------
    def send(self, data):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("rawpg: read timed out")
            self.sock.settimeout(left)
            d = self.sock.recv(65536)
            if not d:
                raise EOFError("rawpg: connection closed by peer")
            self.nread += len(d)
            self.buf += d

    def read_msg(self, timeout=None):
        """The next backend message as (type, body); socket.timeout / EOFError otherwise."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._fill(5, deadline)
        kind = bytes(self.buf[:1])
        ln = struct.unpack("!I", self.buf[1:5])[0]
        self._fill(1 + ln, deadline)
        body = bytes(self.buf[5:1 + ln])
        del self.buf[:1 + ln]
        return kind, body

    def read_until_ready(self, count=1, timeout=None):
        """Messages up to and including the count-th ReadyForQuery, within one deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        msgs = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("rawpg: read timed out")
            t, b = self.read_msg(left)
            msgs.append((t, b))
            if t == b"Z":
                count -= 1
                if count == 0:
                    return msgs

    def read_until(self, kind, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        msgs = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("rawpg: read timed out")
            t, b = self.read_msg(left)
            msgs.append((t, b))
            if t == kind:
                return msgs

    def read_raw(self, timeout, stop=None):
        """Every byte that arrives within timeout seconds (or until stop(bytes) is true or the
        peer closes); for checking what a client was sent, message boundaries or not."""
        deadline = time.monotonic() + timeout
        out = bytearray(self.buf)
        self.buf.clear()
        while not (stop and stop(bytes(out))):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            self.nread += len(d)
            out += d
        return bytes(out)

    def inq(self):
        """Bytes waiting in the socket's receive queue (FIONREAD)."""
        buf = fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return struct.unpack("i", buf)[0]

    def recv_some(self, n):
        """Receives up to n bytes into the message buffer (one recv, current timeout)."""
        self.sock.settimeout(self.timeout)
        d = self.sock.recv(n)
        if not d:
            raise EOFError("rawpg: connection closed by peer")
        self.nread += len(d)
        self.buf += d
        return len(d)

    # -- high level -----------------------------------------------------------------------------
    def query(self, sql, timeout=None):
        """Runs a simple query; returns its messages up to ReadyForQuery."""
        self.send(query(sql))
        return self.read_until_ready(timeout=timeout)

    def query_rows(self, sql, timeout=None):
        msgs = self.query(sql, timeout)
        errs = errors(msgs)
        if errs:
            raise ServerError(errs[0])
        return rows(msgs)

    def close(self, terminate=False):
        try:
            if terminate:
                self.sock.settimeout(1)
                self.sock.sendall(TERMINATE)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
