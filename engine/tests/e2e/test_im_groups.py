"""End-to-end test of group recall, edit and read receipts with the Python
`websockets` client (an independent WebSocket implementation) against a
real `ringcast` process with `[im] enabled`: a member's read reaches the
other members as a receipt, a recall within the window reaches every
member's connection and history shows the tombstone, an admin recalls a
plain member's message, a plain member may not (103), and a former
member's history is refused (123, `im.history_after_leave` off).
Usage: test_im_groups.py <path to ringcast binary>
"""

import sys

from e2e_common import command, recv_json
from test_im_dm import open_user, run


async def next_push(ws):
    message = await recv_json(ws)
    assert "push" in message, message
    return message["push"]


async def scenario(ws_url):
    owner, _ = await open_user(ws_url, "owner")
    ada, _ = await open_user(ws_url, "ada")
    bob1, _ = await open_user(ws_url, "bob")
    bob2, _ = await open_user(ws_url, "bob")
    reply = await command(owner, {"id": 1, "method": "group_create", "params": {
        "name": "py", "members": ["ada", "bob"]}})
    conv = reply["result"]["conv"]
    assert conv.startswith("grp:"), reply
    reply = await command(owner, {"id": 2, "method": "group_role", "params": {
        "conv": conv, "user": "ada", "role": "admin"}})
    assert reply["result"]["offset"] == 2, reply
    for ws in (ada, bob1, bob2):
        for _ in range(2):
            await next_push(ws)

    reply = await command(bob1, {"id": 3, "method": "msg_send", "params": {
        "conv": conv, "kind": "text", "data": {"text": "oops"}}})
    assert reply["result"]["offset"] == 3, reply
    for ws in (owner, ada, bob2):
        assert (await next_push(ws))["data"]["data"]["text"] == "oops"

    # ada's read: its receipt to the other members, at once.
    reply = await command(ada, {"id": 4, "method": "read", "params": {"conv": conv, "offset": 3}})
    assert reply["result"]["unread"] == 0, reply
    for ws in (owner, bob1, bob2):
        assert await recv_json(ws) == {"receipt": {"conv": conv, "user": "ada", "read": 3}}

    # bob recalls within the window: every member's connection is told.
    reply = await command(bob1, {"id": 5, "method": "recall", "params": {"conv": conv, "offset": 3}})
    assert reply["result"]["ref_offset"] == 3, reply
    for ws in (owner, ada, bob2):
        push = await next_push(ws)
        assert push["data"]["kind"] == "recall" and push["data"]["data"]["ref_offset"] == 3, push
    history = await command(ada, {"id": 6, "method": "history", "params": {"stream": conv}})
    assert history["result"]["publications"][2]["data"] == {"kind": "text", "state": "recalled"}, history

    # A plain member may not recall the owner's message; the admin may
    # recall a plain member's.
    reply = await command(owner, {"id": 7, "method": "msg_send", "params": {
        "conv": conv, "kind": "text", "data": {"text": "mine"}}})
    owner_offset = reply["result"]["offset"]
    reply = await command(bob2, {"id": 8, "method": "msg_send", "params": {
        "conv": conv, "kind": "text", "data": {"text": "bob's"}}})
    bob_offset = reply["result"]["offset"]
    reply = await command(bob1, {"id": 9, "method": "recall", "params": {"conv": conv, "offset": owner_offset}})
    assert reply["error"]["code"] == 103, reply
    reply = await command(ada, {"id": 10, "method": "recall", "params": {"conv": conv, "offset": bob_offset}})
    assert reply["result"]["ref_offset"] == bob_offset, reply

    # bob leaves: its history is refused from then on.
    reply = await command(bob1, {"id": 11, "method": "group_leave", "params": {"conv": conv}})
    assert "result" in reply, reply
    reply = await command(bob2, {"id": 12, "method": "history", "params": {"stream": conv}})
    assert reply["error"]["code"] == 123, reply
    for ws in (owner, ada, bob1, bob2):
        await ws.close()


def main(binary):
    return run(binary, scenario, "IM group recall and receipts")


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1]) else 1)
