"""pgmux --check CONFIG (-t): validates a configuration and the files it names without starting,
as `nginx -t` does: exit 0 and one line when pgmux would start with it, else exit 1 with each
problem as "file:line: reason" or "file: key: reason", and nothing bound either way."""

import os
import shutil
import tempfile
from pathlib import Path
import socket
import subprocess

from pgharness import free_port, timeout


def _check(path, flag="--check"):
    r = subprocess.run([os.environ.get("PGMUX_BIN", "src/pgmux"), flag, str(path)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
    return r.returncode, r.stdout, r.stderr


def _port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@timeout(60)
def test_check_valid_config(env):
    tmp_path = Path(tempfile.mkdtemp(prefix="pgmux-check-"))
    env.on_cleanup(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    port = free_port()
    users = tmp_path / "users.txt"
    users.write_text('"alice" "secret"\n')
    ini = tmp_path / "ok.ini"
    ini.write_text(f"[pgmux]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
                   f"unix_socket_dir = {tmp_path}\nauth_type = md5\nauth_file = {users}\n"
                   f"logfile = {tmp_path}/pgmux.log\nquery_timeout = 30s\n"
                   "[databases]\napp = host=127.0.0.1 port=5432 dbname=app\n")
    for flag in ("--check", "-t"):
        rc, out, err = _check(ini, flag)
        assert rc == 0, (rc, out, err)
        assert out.strip() == f"{ini}: configuration is valid", out
    # nothing was started: the port is free, no log file, no socket
    assert _port_free(port)
    assert not (tmp_path / "pgmux.log").exists()
    assert not (tmp_path / f".s.PGSQL.{port}").exists()


@timeout(60)
def test_check_reports_each_problem(env):
    tmp_path = Path(tempfile.mkdtemp(prefix="pgmux-check-"))
    env.on_cleanup(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    ini = tmp_path / "bad.ini"
    ini.write_text("[pgmux]\nauth_type = md5\nquery_timeout = 5 parsecs\n")
    rc, out, err = _check(ini)
    assert rc == 1 and out == "", (rc, out, err)
    assert f"{ini}:3: invalid value" in err and "query_timeout" in err, err

    # a bad connection string: refused by libpq's parser, with its line
    ini.write_text("[pgmux]\nauth_type = trust\n[databases]\napp = host=x nosuchkeyword=1\n")
    rc, out, err = _check(ini)
    assert rc == 1 and f"{ini}:4:" in err, (rc, err)

    # files it names: every problem is reported, not only the first
    ini.write_text("[pgmux]\nauth_type = md5\n"
                   f"auth_file = {tmp_path}/missing-users.txt\n"
                   "client_tls_sslmode = require\n"
                   f"client_tls_key_file = {tmp_path}/no.key\n"
                   f"client_tls_cert_file = {tmp_path}/no.crt\n"
                   "logfile = /nonexistent-dir/pgmux.log\n"
                   "[databases]\n"
                   f"app = host=127.0.0.1 sslmode=verify-ca sslrootcert={tmp_path}/no-root.crt\n")
    rc, out, err = _check(ini)
    assert rc == 1, (rc, err)
    lines = err.strip().splitlines()
    assert any("auth_file" in l and "missing-users.txt" in l for l in lines), err
    assert any("client_tls" in l and "no." in l for l in lines), err
    assert any("database app" in l and "no-root.crt" in l for l in lines), err
    assert any("logfile" in l and "/nonexistent-dir" in l for l in lines), err

    # a bad auth_file line gives its own file and line
    users = tmp_path / "users.txt"
    users.write_text('"alice" "topsecretA"\n"bob" "topsecretB\n')
    ini.write_text(f"[pgmux]\nauth_type = md5\nauth_file = {users}\n[databases]\napp = host=x\n")
    rc, out, err = _check(ini)
    assert rc == 1 and f"{users}:2" in err and "unterminated" in err, (rc, err)
    assert "topsecret" not in err, err   # never a secret


@timeout(30)
def test_check_hba_file(env):
    tmp_path = Path(tempfile.mkdtemp(prefix="pgmux-check-"))
    env.on_cleanup(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    hba = tmp_path / "hba.conf"
    hba.write_text("local all all trust\nhost all all 10.0.0.0/33 md5\n")
    ini = tmp_path / "hba.ini"
    ini.write_text(f"[pgmux]\nauth_type = hba\nauth_hba_file = {hba}\n[databases]\napp = host=x\n")
    rc, out, err = _check(ini)
    assert rc == 1 and "auth_hba_file" in err and "line 2" in err, (rc, err)
    hba.write_text("local all all trust\nhost all all 10.0.0.0/8 md5\n")
    rc, out, err = _check(ini)
    assert rc == 0, (rc, err)


@timeout(30)
def test_check_missing_file(env):
    tmp_path = Path(tempfile.mkdtemp(prefix="pgmux-check-"))
    env.on_cleanup(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    rc, out, err = _check(tmp_path / "nope.ini")
    assert rc == 1 and "nope.ini" in err, (rc, err)
