"""Helpers shared by the Python end-to-end tests (imported from the
script's own directory, which Python puts first on sys.path)."""

import asyncio
import json
import socket


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=5))


async def command(ws, msg):
    """Sends a command and returns its reply, skipping pushes that come first."""
    await ws.send(json.dumps(msg))
    while True:
        reply = await recv_json(ws)
        if "push" not in reply:
            assert reply["id"] == msg["id"], reply
            return reply


def wait_until_serving(proc, api_port, timeout_s=20):
    """Waits for the engine's API to answer /health; fails if the process
    exits first or the time runs out."""
    import time
    import urllib.request

    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{api_port}/health", timeout=1).read()
            return
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("engine did not start")
            time.sleep(0.05)
