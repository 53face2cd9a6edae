"""End-to-end test of typing and blocks with the Python `websockets` client
(an independent WebSocket implementation) against a real `ringcast` process
with `[im] enabled`: typing reaches the peer's devices and not the typist's
other connection, a repeat within the interval is dropped, and typing leaves
no entry; a block refuses DMs both ways with 120 naming who blocked, the
blocker's other device hears of it, and an unblock restores DMs.
Usage: test_im_signals.py <path to ringcast binary>
"""

import asyncio
import sys

from e2e_common import command, recv_json
from test_im_dm import open_user, run


async def nothing_waiting(ws, id):
    """Only the pong is waiting: no push, no event."""
    reply = await command(ws, {"id": id, "method": "ping"})
    assert reply == {"id": id, "result": {}}, reply


async def scenario(ws_url):
    alice1, _ = await open_user(ws_url, "alice")
    alice2, _ = await open_user(ws_url, "alice")
    bob1, _ = await open_user(ws_url, "bob")
    bob2, _ = await open_user(ws_url, "bob")
    reply = await command(alice1, {"id": 1, "method": "msg_send", "params": {
        "to": "bob", "kind": "text", "data": {"text": "hi"}}})
    conv = reply["result"]["conv"]
    for ws in (alice2, bob1, bob2):
        assert "push" in await recv_json(ws)
    history = await command(bob1, {"id": 2, "method": "history", "params": {"stream": conv}})

    typing = {"conv": conv, "state": "typing"}
    reply = await command(alice1, {"id": 3, "method": "typing", "params": typing})
    assert reply == {"id": 3, "result": {}}, reply
    for ws in (bob1, bob2):
        assert await recv_json(ws) == {"typing": {"conv": conv, "user": "alice", "state": "typing"}}
    await nothing_waiting(alice2, 4)
    # Within the interval (a minute here) a repeat is dropped.
    await command(alice1, {"id": 5, "method": "typing", "params": typing})
    await nothing_waiting(bob1, 6)
    again = await command(bob1, {"id": 7, "method": "history", "params": {"stream": conv}})
    assert again["result"] == history["result"], "typing is never stored"

    reply = await command(bob1, {"id": 8, "method": "block", "params": {"user": "alice"}})
    assert reply["result"] == {"user": "alice", "blocked": True, "changed": True}, reply
    assert await recv_json(bob2) == {"block": {"user": "alice", "blocked": True}}
    for ws, to in ((alice1, "bob"), (bob2, "alice")):
        reply = await command(ws, {"id": 9, "method": "msg_send", "params": {
            "to": to, "kind": "text", "data": {"text": "x"}}})
        assert reply["error"]["code"] == 120, reply
        assert reply["error"]["message"].startswith("bob blocked alice"), reply
    reply = await command(bob1, {"id": 10, "method": "unblock", "params": {"user": "alice"}})
    assert reply["result"]["blocked"] is False, reply
    assert await recv_json(bob2) == {"block": {"user": "alice", "blocked": False}}
    reply = await command(alice1, {"id": 11, "method": "msg_send", "params": {
        "to": "bob", "kind": "text", "data": {"text": "back"}}})
    assert reply["result"]["offset"] == 2, reply
    for ws in (alice1, alice2, bob1, bob2):
        await ws.close()


def main(binary):
    return run(binary, scenario, "IM typing and blocks", "typing_interval_ms = 60000")


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1]) else 1)
