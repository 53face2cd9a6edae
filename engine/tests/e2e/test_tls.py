"""End-to-end test of `wss://` with Python's `ssl` (OpenSSL) and `websockets`.

A TLS stack not written here (OpenSSL, through Python's `ssl`) talks to a
real `ringcast` process configured with a certificate generated for this
run (the `cryptography` package, a test CA and two leaf certificates):
connect over TLS 1.3 and 1.2, check the certificate and ALPN, subscribe and
receive an API publication, then replace the files and send SIGHUP: the
open connection keeps working and new ones see the new certificate; a
broken file on the next SIGHUP is logged naming the file and the
certificate stays. Last, a mismatched key stops the engine at startup with
the key and the file named.
Usage: test_tls.py <path to ringcast binary>
"""

import asyncio
import datetime
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import jwt
from e2e_common import command, free_port, recv_json
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

SECRET = "python-tls-secret-0123456789abcdef0123"
API_KEY = "python-tls-api-key-0123"

# Both listeners serve TLS: wss:// on the shards, https:// on the API.
CONFIG = """
version = 1
[server]
shards = 2
pin_cores = false
shutdown_grace_ms = 1000
[websocket]
listen = "127.0.0.1:{ws_port}"
[api]
listen = "127.0.0.1:{api_port}"
key = "{api_key}"
[auth]
jwt_secret = "{secret}"
[tls]
cert_file = "{cert}"
key_file = "{key}"
[[namespace]]
name = "news"
"""


def token(user):
    return jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")


def pem_key(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Pki:
    """A test CA that issues `localhost` certificates."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ringcast python test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.name = name
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def leaf(self):
        """Returns (cert PEM, key PEM, cert DER)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return (
            cert.public_bytes(serialization.Encoding.PEM),
            pem_key(key),
            cert.public_bytes(serialization.Encoding.DER),
        )


def write_replacing(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def install(paths, leaf):
    write_replacing(paths[0], leaf[0])
    write_replacing(paths[1], leaf[1])


def client_context(ca_path, max_version=None):
    ctx = ssl.create_default_context(cafile=ca_path)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def publish(api_port, channel, data, ctx):
    req = urllib.request.Request(
        f"https://localhost:{api_port}/api/publish",
        data=json.dumps({"channel": channel, "data": data}).encode(),
        method="POST",
    )
    req.add_header("Authorization", f"apikey {API_KEY}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
        assert resp.status == 200, resp.status


def open_wss(ws_port, ctx, user):
    return connect(
        f"wss://localhost:{ws_port}/connection/websocket?token={token(user)}",
        ssl=ctx,
        host="127.0.0.1",
        port=ws_port,
        server_hostname="localhost",
    )


def peer(ws):
    tls = ws.transport.get_extra_info("ssl_object")
    return tls.getpeercert(binary_form=True), tls.version(), tls.selected_alpn_protocol()


async def wait_for_certificate(ws_port, ctx, der, deadline_s=5):
    """Connects until the server presents `der` (SIGHUP is asynchronous)."""
    deadline = time.time() + deadline_s
    while True:
        async with open_wss(ws_port, ctx, "probe") as ws:
            await recv_json(ws)
            if peer(ws)[0] == der:
                return
        if time.time() > deadline:
            raise AssertionError("the new certificate never appeared")
        await asyncio.sleep(0.05)


def wait_for_log(log_path, text, deadline_s=5):
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            if text in f.read():
                return
        time.sleep(0.05)
    with open(log_path, encoding="utf-8", errors="replace") as f:
        raise AssertionError(f"log never said {text!r}:\n{f.read()}")


async def scenario(ws_port, api_port, proc, paths, ca_path, pki, first, log_path):
    ctx = client_context(ca_path)
    async with open_wss(ws_port, ctx, "alice") as old:
        hello = await recv_json(old)
        assert hello["connect"]["user"] == "alice", hello
        der, version, alpn = peer(old)
        assert der == first[2], "the configured certificate"
        assert version == "TLSv1.3", version
        assert alpn is None or alpn == "http/1.1", alpn
        reply = await command(old, {"id": 1, "method": "subscribe", "params": {"channel": "news:tls"}})
        assert "result" in reply, reply
        publish(api_port, "news:tls", {"n": 1}, ctx)
        push = await recv_json(old)
        assert push["push"]["data"] == {"n": 1}, push
        print("ok   wss round trip over TLS 1.3, published over https (OpenSSL client)")

        async with open_wss(ws_port, client_context(ca_path, ssl.TLSVersion.TLSv1_2), "tls12") as ws12:
            await recv_json(ws12)
            assert peer(ws12)[1] == "TLSv1.2", peer(ws12)[1]
        print("ok   a TLS 1.2 client connects too")

        second = pki.leaf()
        install(paths, second)
        proc.send_signal(signal.SIGHUP)
        await wait_for_certificate(ws_port, ctx, second[2])
        publish(api_port, "news:tls", {"n": 2}, ctx)
        push = await recv_json(old)
        assert push["push"]["data"] == {"n": 2}, push
        reply = await command(old, {"id": 2, "method": "subscribe", "params": {"channel": "news:more"}})
        assert "result" in reply, reply
        print("ok   SIGHUP: new connections see the new certificate, the open one keeps working")

        write_replacing(paths[0], b"this is not PEM\n")
        proc.send_signal(signal.SIGHUP)
        wait_for_log(log_path, "tls reload failed")
        wait_for_log(log_path, paths[0])
        async with open_wss(ws_port, ctx, "bob") as ws:
            await recv_json(ws)
            assert peer(ws)[0] == second[2], "the certificate from before the bad reload"
        publish(api_port, "news:tls", {"n": 3}, ctx)
        push = await recv_json(old)
        assert push["push"]["data"] == {"n": 3}, push
        print("ok   a bad file on SIGHUP is logged with its name and the certificate stays")


def start(binary, tmp, paths, log_path):
    ws_port, api_port = free_port(), free_port()
    config_path = os.path.join(tmp, "ringcast.toml")
    with open(config_path, "w") as f:
        f.write(
            CONFIG.format(
                ws_port=ws_port, api_port=api_port, api_key=API_KEY, secret=SECRET, cert=paths[0], key=paths[1]
            )
        )
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [binary, f"--config={config_path}", f"--server-data-dir={os.path.join(tmp, 'data')}"],
        env={**os.environ, "RINGCAST_LOG_LEVEL": "info"},
        stderr=log,
    )
    return proc, ws_port, api_port


def wait_ready(proc, api_port, ca_path):
    deadline = time.time() + 20
    ctx = client_context(ca_path)
    while True:
        try:
            urllib.request.urlopen(f"https://localhost:{api_port}/health", timeout=1, context=ctx).read()
            return
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("engine did not start")
            time.sleep(0.1)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def mismatched_key_stops_startup(binary, tmp, pki, paths):
    install(paths, pki.leaf())
    write_replacing(paths[1], pki.leaf()[1])
    log_path = os.path.join(tmp, "mismatch.log")
    proc, _, _ = start(binary, tmp, paths, log_path)
    try:
        code = proc.wait(timeout=20)
    finally:
        stop(proc)
    with open(log_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    assert code == 1, (code, text)
    expected = f"tls.key_file {paths[1]} does not match the certificate in tls.cert_file {paths[0]}"
    assert expected in text, text
    print("ok   a key that does not match the certificate stops startup, naming both files")


def main(binary):
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        pki = Pki()
        ca_path = os.path.join(tmp, "ca.pem")
        with open(ca_path, "wb") as f:
            f.write(pki.cert.public_bytes(serialization.Encoding.PEM))
        paths = (os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem"))
        first = pki.leaf()
        install(paths, first)
        log_path = os.path.join(tmp, "engine.log")
        proc, ws_port, api_port = start(binary, tmp, paths, log_path)
        try:
            wait_ready(proc, api_port, ca_path)
            asyncio.run(scenario(ws_port, api_port, proc, paths, ca_path, pki, first, log_path))
            passed += 1
        except Exception as err:  # report, then fail the run
            failed += 1
            print(f"FAIL tls scenario: {err!r}")
        finally:
            stop(proc)
        try:
            mismatched_key_stops_startup(binary, tmp, pki, paths)
            passed += 1
        except Exception as err:
            failed += 1
            print(f"FAIL mismatched key: {err!r}")
    print(f"python tls e2e: {passed} passed, {failed} failed")
    return failed == 0


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1]) else 1)
