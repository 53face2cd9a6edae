"""End-to-end test of the connect proxy with the Python `websockets` client.

A cookie-session app in front of a real `ringcast` process: a backend (a
stdlib HTTP server in this process, recording every call) names the user
from the `sid` cookie, denies an unknown session, or disconnects a banned
one. An independent client must be able to read the denial's close code
(4403) and the backend's message as the reason, as a browser would.
Usage: test_connect_proxy.py <path to ringcast binary>
"""

import asyncio
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading

from e2e_common import free_port, recv_json, wait_until_serving
import websockets
from websockets.asyncio.client import connect

CONFIG = """
version = 1
[server]
shards = 2
pin_cores = false
shutdown_grace_ms = 2000
[websocket]
listen = "127.0.0.1:{ws_port}"
connect_proxy = "app"
connect_proxy_mode = "replace_token"
[api]
listen = "127.0.0.1:{api_port}"
key = "python-e2e-api-key-0123"
[auth]
jwt_secret = "python-e2e-secret-0123456789abcdef0123"
[[proxy]]
name = "app"
url = "http://127.0.0.1:{backend_port}/connect"
timeout_ms = 2000
"""

CALLS = []

SESSIONS = {
    "py-alice": {"result": {"user": "alice", "info": {"plan": "pro"}}},
    "py-banned": {"disconnect": {"code": 4567, "reason": "banned"}},
}


class Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        CALLS.append(body)
        answer = SESSIONS.get(
            body["cookies"].get("sid"),
            {"error": {"code": 401, "message": "session unknown: log in again"}},
        )
        out = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *_args):
        pass


async def expect_close(url, cookie):
    """Connects with `cookie`; the upgrade must succeed and the server close
    at once. Returns (code, reason) as the client read them."""
    async with connect(url, additional_headers={"Cookie": cookie}) as ws:
        try:
            await asyncio.wait_for(ws.recv(), timeout=5)
            raise AssertionError("expected a close")
        except websockets.exceptions.ConnectionClosed as err:
            return err.rcvd.code, err.rcvd.reason


async def checks(ws_url):
    async with connect(ws_url, additional_headers={"Cookie": "sid=py-alice; theme=dark"}) as ws:
        hello = await recv_json(ws)
        assert hello["connect"]["user"] == "alice", hello
    call = CALLS[-1]
    assert call["cookies"] == {"sid": "py-alice", "theme": "dark"}, call
    assert call["user"] == "" and call["transport"] == "websocket", call
    print("ok   a cookie session names the user")

    code, reason = await expect_close(ws_url, "sid=stolen")
    assert (code, reason) == (4403, "session unknown: log in again"), (code, reason)
    print("ok   a denial is readable: 4403 and the backend's message")

    code, reason = await expect_close(ws_url, "sid=py-banned")
    assert (code, reason) == (4567, "banned"), (code, reason)
    print("ok   a backend disconnect is readable: its own code and reason")


def main(binary):
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    ws_port, api_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config_path = os.path.join(tmp, "ringcast.toml")
        with open(config_path, "w") as f:
            f.write(CONFIG.format(ws_port=ws_port, api_port=api_port, backend_port=backend.server_address[1]))
        env = {**os.environ, "RINGCAST_LOG_LEVEL": "warn", "RINGCAST_SERVER_DATA_DIR": os.path.join(tmp, "data")}
        proc = subprocess.Popen([binary, f"--config={config_path}"], env=env)
        try:
            wait_until_serving(proc, api_port)
            asyncio.run(checks(f"ws://127.0.0.1:{ws_port}/connection/websocket"))
            print("connect proxy e2e: passed")
            return True
        finally:
            proc.kill()
            proc.wait()
            backend.shutdown()


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1]) else 1)
