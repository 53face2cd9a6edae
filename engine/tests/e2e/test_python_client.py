"""End-to-end test of the release binary with the Python `websockets` client.

An independent WebSocket implementation talks to a real `ringcast` process:
connect with a JWT, subscribe, receive a publication made over the HTTP API,
send to a user, get refused with the right codes, and see a graceful 1001 on
SIGTERM. Usage: test_python_client.py <path to ringcast binary>
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import jwt
from e2e_common import command, free_port, recv_json, wait_until_serving
import websockets
from websockets.asyncio.client import connect

SECRET = "python-e2e-secret-0123456789abcdef0123"
API_KEY = "python-e2e-api-key-0123"

CONFIG = """
version = 1
[server]
shards = 2
pin_cores = false
shutdown_grace_ms = 2000
[websocket]
listen = "127.0.0.1:{ws_port}"
{websocket_extra}
[api]
listen = "127.0.0.1:{api_port}"
key = "{api_key}"
[auth]
jwt_secret = "{secret}"
[[namespace]]
name = "news"
[[namespace]]
name = "chat"
publish = "subscribers"
"""


def token(user, ttl=3600):
    return jwt.encode({"sub": user, "exp": int(time.time()) + ttl}, SECRET, algorithm="HS256")


def api(port, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data else "GET")
    req.add_header("Authorization", f"apikey {API_KEY}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


RESULTS = []


def check(name, into=RESULTS):
    def wrap(fn):
        into.append((name, fn))
        return fn
    return wrap


@check("connect, subscribe, receive an API publication")
async def t_publish(ws_url, api_port, _proc):
    async with connect(f"{ws_url}?token={token('alice')}") as a, connect(f"{ws_url}?token={token('bob')}") as b:
        for ws, user in ((a, "alice"), (b, "bob")):
            hello = await recv_json(ws)
            assert hello["connect"]["user"] == user, hello
            reply = await command(ws, {"id": 1, "method": "subscribe", "params": {"channel": "news:py"}})
            assert "result" in reply, reply
        status, body = api(api_port, "/api/publish", {"channel": "news:py", "data": {"n": [1, 2.5, "x"]}})
        assert status == 200, body
        for ws in (a, b):
            push = await recv_json(ws)
            assert push["push"]["data"] == {"n": [1, 2.5, "x"]}, push
            assert push["push"]["id"] == body["id"], (push, body)


@check("send to a user reaches both devices")
async def t_send(ws_url, api_port, _proc):
    async with connect(f"{ws_url}?token={token('carol')}") as d1, connect(f"{ws_url}?token={token('carol')}") as d2, connect(
        f"{ws_url}?token={token('dave')}"
    ) as dave:
        for ws in (d1, d2, dave):
            await recv_json(ws)
        reply = await command(dave, {"id": 1, "method": "send", "params": {"user": "carol", "data": "hi carol"}})
        assert "result" in reply, reply
        for ws in (d1, d2):
            push = await recv_json(ws)
            assert push["push"]["data"] == "hi carol" and push["push"]["sender"] == "dave", push


@check("bad token is refused with 401")
async def t_bad_token(ws_url, _api_port, _proc):
    bad = jwt.encode({"sub": "eve", "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256")
    try:
        async with connect(f"{ws_url}?token={bad}"):
            raise AssertionError("connected with a forged token")
    except websockets.exceptions.InvalidStatus as err:
        assert err.response.status_code == 401, err
        assert b"token_invalid" in err.response.body, err.response.body


@check("binary frame on the JSON subprotocol closes with 1003")
async def t_violation(ws_url, _api_port, _proc):
    async with connect(f"{ws_url}?token={token('frank')}") as ws:
        await recv_json(ws)
        await ws.send(b"\x00\x01")
        try:
            await asyncio.wait_for(ws.recv(), timeout=5)
            raise AssertionError("expected a close")
        except websockets.exceptions.ConnectionClosedError as err:
            assert err.rcvd.code == 1003, err


@check("a new device replays its inbox with device_start=oldest, then pages it back by time")
async def t_history_by_time(ws_url, api_port, _proc):
    # A user of its own: the data directory outlives a run.
    user = f"hana-{time.time_ns()}"
    for n in range(9):
        status, body = api(api_port, "/api/send", {"user": user, "data": {"n": n}})
        assert status == 200, body
        time.sleep(0.002)  # each send a millisecond of its own
    async with connect(f"{ws_url}?token={token(user)}&device=py-new&device_start=oldest") as ws:
        await recv_json(ws)  # connect
        replayed = []
        while True:
            message = await recv_json(ws)
            if "push" not in message:
                break
            replayed.append((message["push"]["offset"], message["push"]["time"]))
        assert message["id"] == 0 and message["result"]["recovery"]["replayed"] == 9, message
        assert [offset for offset, _ in replayed] == list(range(1, 10)), replayed
        times = [t for _, t in replayed]
        assert times == sorted(times), replayed
        # Backward from the time of offset 8, four at a time, each next page
        # below the last offset seen: offsets 7 down to 1, once each.
        params = {"stream": f"user:{user}", "before_time": times[7], "limit": 4}
        seen, next_id = [], 10
        while True:
            reply = await command(ws, {"id": next_id, "method": "history", "params": params})
            next_id += 1
            page = [p["offset"] for p in reply["result"]["publications"]]
            if not page:
                break
            seen += page
            params = {**params, "before": page[-1]}
        assert seen == [7, 6, 5, 4, 3, 2, 1], seen
        reply = await command(ws, {"id": 99, "method": "history", "params": {"stream": f"user:{user}", "from_time": 5, "before_time": 5}})
        assert reply["error"]["code"] == 107, reply


@check("SIGTERM closes clients with 1001 and exits 0")
async def t_shutdown(ws_url, _api_port, proc):
    async with connect(f"{ws_url}?token={token('gina')}") as ws:
        await recv_json(ws)
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(ws.recv(), timeout=5)
            raise AssertionError("expected a close")
        except websockets.exceptions.ConnectionClosedOK as err:
            assert err.rcvd.code == 1001, err
    assert proc.wait(timeout=10) == 0, proc.returncode


async def main(binary, checks=RESULTS, websocket_extra="", label="python e2e"):
    """Starts `binary` with the test config (plus `websocket_extra` lines in
    its [websocket] table) and runs `checks`; True when all pass."""
    ws_port, api_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config_path = os.path.join(tmp, "ringcast.toml")
        with open(config_path, "w") as f:
            f.write(
                CONFIG.format(
                    ws_port=ws_port, api_port=api_port, api_key=API_KEY, secret=SECRET, websocket_extra=websocket_extra
                )
            )
        proc = subprocess.Popen([binary, f"--config={config_path}"], env={**os.environ, "RINGCAST_LOG_LEVEL": "warn"})
        try:
            wait_until_serving(proc, api_port)
            ws_url = f"ws://127.0.0.1:{ws_port}/connection/websocket"
            passed = failed = 0
            for name, fn in checks:
                try:
                    await fn(ws_url, api_port, proc)
                    passed += 1
                    print(f"ok   {name}")
                except Exception as err:  # report every failure, then fail the run
                    failed += 1
                    print(f"FAIL {name}: {err!r}")
            print(f"{label}: {passed} passed, {failed} failed")
            return failed == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main(sys.argv[1])) else 1)
