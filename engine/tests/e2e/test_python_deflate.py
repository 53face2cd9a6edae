"""permessage-deflate (RFC 7692) against the Python `websockets` client,
which offers the extension by default and compresses what it sends.

The engine runs with `websocket.compression = true`. Checks: the extension
is negotiated with both no-context-takeover parameters; compressed commands
are inflated and answered; pushes (compressed above the threshold) arrive
and inflate to what was published; a client that declines compression gets
the same pushes; a zip bomb (50 MB of zeros, about 50 KB on the wire, under
the 64 KiB frame limit) is closed with 1009 because it inflates past
`message_bytes_max`. Usage: test_python_deflate.py <path to ringcast binary>
"""

import asyncio
import sys

import websockets
from websockets.asyncio.client import connect

from test_python_client import api, check, command, main, recv_json, token

CHECKS = []


def negotiated(ws):
    return ws.response.headers.get("Sec-WebSocket-Extensions", "")


CHAT = [{"user": f"user{i}", "text": f"hello from the chat room, message {i}"} for i in range(20)]


@check("deflate is negotiated; compressed commands and pushes round-trip", CHECKS)
async def t_round_trip(ws_url, api_port, _proc):
    async with connect(f"{ws_url}?token={token('dee')}") as ws, connect(
        f"{ws_url}?token={token('plain')}", compression=None
    ) as plain:
        answer = negotiated(ws)
        assert answer.startswith("permessage-deflate"), answer
        assert "server_no_context_takeover" in answer and "client_no_context_takeover" in answer, answer
        assert [type(e).__name__ for e in ws.protocol.extensions] == ["PerMessageDeflate"], ws.protocol.extensions
        assert negotiated(plain) == "", negotiated(plain)
        for client in (ws, plain):
            await recv_json(client)
            reply = await command(client, {"id": 1, "method": "subscribe", "params": {"channel": "news:z"}})
            assert "result" in reply, reply
        status, body = api(api_port, "/api/publish", {"channel": "news:z", "data": CHAT})
        assert status == 200, body
        for client in (ws, plain):
            push = await recv_json(client)
            assert push["push"]["data"] == CHAT, push
        # A short push (under compression_min_bytes) arrives too.
        status, body = api(api_port, "/api/publish", {"channel": "news:z", "data": "hi"})
        assert status == 200, body
        for client in (ws, plain):
            push = await recv_json(client)
            assert push["push"]["data"] == "hi", push
        # A user-to-user send from the compressing client reaches the other.
        reply = await command(ws, {"id": 2, "method": "send", "params": {"user": "plain", "data": CHAT}})
        assert "result" in reply, reply
        push = await recv_json(plain)
        assert push["push"]["data"] == CHAT, push


@check("a zip bomb closes with 1009", CHECKS)
async def t_zip_bomb(ws_url, _api_port, _proc):
    async with connect(f"{ws_url}?token={token('bomber')}") as ws:
        await recv_json(ws)
        await ws.send(b"\0" * 50_000_000)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), timeout=5)
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1009, closed


if __name__ == "__main__":
    ok = asyncio.run(main(sys.argv[1], CHECKS, "compression = true", "python deflate e2e"))
    sys.exit(0 if ok else 1)
