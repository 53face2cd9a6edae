"""End-to-end test of IM direct conversations with the Python `websockets`
client (an independent WebSocket implementation) against a real `ringcast`
process with `[im] enabled`: a message reaches the sender's other device and
the peer, the peer's sync at connect shows the conversation and its unread
count, a read clears the badge on the reader's other device and gives the
sender a receipt, and a third user cannot read the conversation (123).
Usage: test_im_dm.py <path to ringcast binary>
"""

import asyncio
import os
import subprocess
import sys
import tempfile
import time

import jwt
from e2e_common import command, free_port, recv_json, wait_until_serving
from websockets.asyncio.client import connect

SECRET = "python-e2e-secret-0123456789abcdef0123"

CONFIG = """
version = 1
[server]
shards = 2
pin_cores = false
data_dir = "{data_dir}"
[websocket]
listen = "127.0.0.1:{ws_port}"
[api]
listen = "127.0.0.1:{api_port}"
key = "python-e2e-api-key-0123"
[auth]
jwt_secret = "{secret}"
[im]
enabled = true
{im_extra}
[log]
level = "warn"
"""


def token(user):
    return jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")


async def open_user(ws_url, user, query=""):
    """Connects as `user`; returns the socket and its IM sync message."""
    ws = await connect(f"{ws_url}?token={token(user)}{query}")
    hello = await recv_json(ws)
    assert hello["connect"]["user"] == user, hello
    sync = await recv_json(ws)
    assert "im_sync" in sync, sync
    return ws, sync["im_sync"]


async def scenario(ws_url):
    alice1, first = await open_user(ws_url, "alice")
    assert first["convs"] == [] and first["total_unread"] == 0, first
    alice2, _ = await open_user(ws_url, "alice")
    reply = await command(alice1, {"id": 1, "method": "msg_send", "params": {
        "to": "bob", "kind": "text", "data": {"text": "héllo"}, "client_msg_id": "py-1"}})
    sent = reply["result"]
    conv = sent["conv"]
    assert conv.startswith("dm:") and sent["offset"] == 1, reply
    push = (await recv_json(alice2))["push"]
    assert push["channel"] == conv and push["sender"] == "alice", push
    assert push["data"] == {"kind": "text", "data": {"text": "héllo"}}, push

    # Bob was offline: its first connection's sync shows the conversation.
    bob1, sync = await open_user(ws_url, "bob")
    assert sync["total_unread"] == 1, sync
    (view,) = sync["convs"]
    assert view["conv"] == conv and view["peer"] == "alice" and view["unread"] == 1, view
    bob2, _ = await open_user(ws_url, "bob")

    reply = await command(bob1, {"id": 1, "method": "read", "params": {"conv": conv, "offset": 1}})
    assert reply["result"] == {"conv": conv, "offset": 1, "unread": 0, "total_unread": 0}, reply
    assert await recv_json(bob2) == {"read": {"conv": conv, "offset": 1, "unread": 0, "total_unread": 0}}
    for ws in (alice1, alice2):
        assert await recv_json(ws) == {"receipt": {"conv": conv, "user": "bob", "read": 1}}

    carol, _ = await open_user(ws_url, "carol")
    reply = await command(carol, {"id": 1, "method": "history", "params": {"stream": conv}})
    assert reply["error"]["code"] == 123, reply
    reply = await command(bob2, {"id": 2, "method": "history", "params": {"stream": conv}})
    assert reply["result"]["publications"][0]["data"]["data"]["text"] == "héllo", reply
    for ws in (alice1, alice2, bob1, bob2, carol):
        await ws.close()


def main(binary):
    return run(binary, scenario, "IM direct conversations")


def run(binary, scenario_of, what, im_extra=""):
    """Runs `scenario_of(ws_url)` against a fresh `ringcast` with `[im] enabled`
    and the `[im]` lines `im_extra`."""
    with tempfile.TemporaryDirectory() as tmp:
        ws_port, api_port = free_port(), free_port()
        config_path = os.path.join(tmp, "ringcast.toml")
        with open(config_path, "w") as f:
            f.write(CONFIG.format(data_dir=os.path.join(tmp, "data"), ws_port=ws_port,
                                  api_port=api_port, secret=SECRET, im_extra=im_extra))
        proc = subprocess.Popen([binary, f"--config={config_path}"], stdout=subprocess.DEVNULL)
        try:
            wait_until_serving(proc, api_port)
            asyncio.run(asyncio.wait_for(scenario_of(f"ws://127.0.0.1:{ws_port}/connection/websocket"), 30))
            print(f"ok: {what} with the Python websockets client")
            return True
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1]) else 1)
